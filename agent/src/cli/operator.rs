//! `muster operator raft list-peers|remove-peer`: thin clients of
//! `/v1/operator/raft/configuration` and `DELETE /v1/operator/raft/peer`, with Consul's flags,
//! output and messages.

use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::encode;
use super::output::columnize;
use super::{HttpFlags, Io, client_or_report};

/// `muster operator ...`.
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Raft operations.
    #[command(subcommand)]
    Raft(RaftCommand),
}

/// `muster operator raft ...`.
#[derive(Debug, Subcommand)]
pub enum RaftCommand {
    /// Displays the current Raft peer configuration.
    ListPeers(ListPeersArgs),
    /// Removes a server from the Raft configuration.
    RemovePeer(RemovePeerArgs),
}

/// `muster operator raft list-peers`.
#[derive(Debug, Args)]
pub struct ListPeersArgs {
    /// Answer from any server's local state, even without a leader.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub stale: bool,
    /// How to reach the agent.
    #[command(flatten)]
    pub http: HttpFlags,
}

/// `muster operator raft remove-peer`.
#[derive(Debug, Args)]
pub struct RemovePeerArgs {
    /// The peer's server RPC address (`ip:port`).
    #[arg(long, value_name = "ADDR")]
    pub address: Option<String>,
    /// The peer's server ID (its node ID).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// How to reach the agent.
    #[command(flatten)]
    pub http: HttpFlags,
}

/// Runs an operator command; returns the exit code.
pub(super) async fn run(command: OperatorCommand, io: &mut Io<'_>) -> i32 {
    match command {
        OperatorCommand::Raft(RaftCommand::ListPeers(a)) => list_peers(&a, io).await,
        OperatorCommand::Raft(RaftCommand::RemovePeer(a)) => remove_peer(&a, io).await,
    }
}

async fn list_peers(a: &ListPeersArgs, io: &mut Io<'_>) -> i32 {
    let Some(client) = client_or_report(&a.http, io) else {
        return 1;
    };
    let path = if a.stale {
        "/v1/operator/raft/configuration?stale"
    } else {
        "/v1/operator/raft/configuration"
    };
    match client.get_json(path).await {
        Ok(v) => {
            io.out(&peers_table(&v));
            0
        }
        Err(e) => {
            io.err(&format!(
                "Error getting peers: Failed to retrieve raft configuration: {e}"
            ));
            1
        }
    }
}

async fn remove_peer(a: &RemovePeerArgs, io: &mut Io<'_>) -> i32 {
    let address = a.address.as_deref().filter(|s| !s.is_empty());
    let id = a.id.as_deref().filter(|s| !s.is_empty());
    let query = match (address, id) {
        (None, None) => {
            io.err("Error removing peer: an address or id is required for the peer to remove");
            return 1;
        }
        (Some(_), Some(_)) => {
            io.err("Error removing peer: cannot give both an address and id");
            return 1;
        }
        (Some(addr), None) => format!("address={}", encode(addr)),
        (None, Some(id)) => format!("id={}", encode(id)),
    };
    let Some(client) = client_or_report(&a.http, io) else {
        return 1;
    };
    match client
        .delete(&format!("/v1/operator/raft/peer?{query}"))
        .await
    {
        Ok(()) => {
            match (address, id) {
                (Some(addr), _) => io.out(&format!("Removed peer with address {addr:?}")),
                (_, Some(id)) => io.out(&format!("Removed peer with id {id:?}")),
                (None, None) => {}
            }
            0
        }
        Err(e) => {
            io.err(&format!("Error removing peer: {e}"));
            1
        }
    }
}

/// Consul's `list-peers` table: `Node ID Address State Voter RaftProtocol Commit Index
/// Trails Leader By`, where the last two come from each server's `LastIndex` and the
/// leader's.
pub fn peers_table(v: &Value) -> String {
    let servers = v["Servers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let text = |s: &Value, k: &str| s[k].as_str().unwrap_or_default().to_owned();
    let last = |s: &Value| s["LastIndex"].as_u64().unwrap_or(0);
    let leader_last = servers
        .iter()
        .find(|s| s["Leader"] == true)
        .map(last)
        .unwrap_or(0);
    let mut rows = vec![
        [
            "Node",
            "ID",
            "Address",
            "State",
            "Voter",
            "RaftProtocol",
            "Commit Index",
            "Trails Leader By",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for s in servers {
        let leader = s["Leader"] == true;
        let protocol = match text(s, "ProtocolVersion") {
            p if p.is_empty() => "<=1".to_owned(),
            p => p,
        };
        let trails = leader_last.saturating_sub(last(s));
        let trails = if leader {
            "-".to_owned()
        } else if trails == 1 {
            "1 commit".to_owned()
        } else {
            format!("{trails} commits")
        };
        rows.push(vec![
            text(s, "Node"),
            text(s, "ID"),
            text(s, "Address"),
            if leader { "leader" } else { "follower" }.to_owned(),
            (s["Voter"] == true).to_string(),
            protocol,
            last(s).to_string(),
            trails,
        ]);
    }
    columnize(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_table_looks_like_consuls() {
        let v = serde_json::json!({"Servers": [
            {"ID": "8eb7b3b5-1574-156e-3696-8a93822473d3", "Node": "srv1",
             "Address": "10.10.20.91:8300", "Leader": true, "ProtocolVersion": "3",
             "Voter": true, "LastIndex": 108},
            {"ID": "ae3a20d8-5196-003d-f192-54724f85fe2b", "Node": "srv3",
             "Address": "10.10.20.93:8300", "Leader": false, "ProtocolVersion": "3",
             "Voter": true, "LastIndex": 108},
            {"ID": "3ef46df0-53a8-d226-f026-1da7d77b9a35", "Node": "srv2",
             "Address": "10.10.20.92:8300", "Leader": false, "ProtocolVersion": "3",
             "Voter": false, "LastIndex": 107}
        ], "Index": 1});
        let want = "\
Node  ID                                    Address           State     Voter  RaftProtocol  Commit Index  Trails Leader By
srv1  8eb7b3b5-1574-156e-3696-8a93822473d3  10.10.20.91:8300  leader    true   3             108           -
srv3  ae3a20d8-5196-003d-f192-54724f85fe2b  10.10.20.93:8300  follower  true   3             108           0 commits
srv2  3ef46df0-53a8-d226-f026-1da7d77b9a35  10.10.20.92:8300  follower  false  3             107           1 commit";
        assert_eq!(peers_table(&v), want);
        let empty = peers_table(&serde_json::json!({"Servers": [], "Index": 0}));
        assert!(empty.starts_with("Node  ID  Address  State  Voter  RaftProtocol"));
    }
}
