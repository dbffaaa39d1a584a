//! Client agents: the catalog replica and the server list it streams from.
//!
//! A client agent holds no Raft state; its catalog handle is a
//! [`muster_server::CatalogReplica`] that streams from one server at a time. The servers are
//! the alive members of this datacenter that gossip as `role=consul` with a `port` tag (their
//! RPC port), exactly what Consul clients route RPCs to. The list follows the member list
//! until shutdown; the replica keeps the last list after that.

use muster_server::{CatalogReplica, ReplicaConfig, ServerHandle};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::node::{Member, MemberStatus, Members};

/// The RPC addresses (`ip:port`) of the alive servers of `datacenter`, sorted.
pub fn server_addrs(members: &[Member], datacenter: &str) -> Vec<String> {
    let mut addrs: Vec<String> = members
        .iter()
        .filter(|m| m.status == MemberStatus::Alive)
        .filter(|m| m.tags.get("role").is_some_and(|r| r == "consul"))
        .filter(|m| {
            m.tags
                .get("dc")
                .is_some_and(|dc| dc.eq_ignore_ascii_case(datacenter))
        })
        .filter_map(|m| {
            let port: u16 = m.tags.get("port")?.parse().ok()?;
            Some(std::net::SocketAddr::new(m.addr, port).to_string())
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// Starts the replica of a client agent. Its server list is empty until
/// [`follow_servers`] feeds it from the member list.
pub fn start(
    datacenter: &str,
    rpc_tls: Option<muster_server::RpcTls>,
    shutdown: CancellationToken,
) -> Result<(ServerHandle, watch::Sender<Vec<String>>), String> {
    let (tx, rx) = watch::channel(Vec::new());
    let mut config = ReplicaConfig::new(datacenter);
    config.rpc_tls = rpc_tls;
    let handle = CatalogReplica::start(config, rx, shutdown)
        .map_err(|e| format!("cannot start the catalog replica: {e}"))?;
    Ok((handle, tx))
}

/// Keeps `servers` equal to the member list's servers until `shutdown`.
pub async fn follow_servers(
    members: Members,
    datacenter: String,
    servers: watch::Sender<Vec<String>>,
    shutdown: CancellationToken,
) {
    let mut changes = members.subscribe();
    loop {
        let list = server_addrs(&changes.borrow_and_update(), &datacenter);
        servers.send_if_modified(|current| {
            let changed = *current != list;
            if changed {
                tracing::debug!(servers = ?list, "catalog servers changed");
                *current = list;
            }
            changed
        });
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn member(name: &str, ip: &str, tags: &[(&str, &str)], status: MemberStatus) -> Member {
        Member {
            name: name.into(),
            addr: ip.parse().unwrap(),
            port: 8301,
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            status,
        }
    }

    #[test]
    fn servers_are_alive_consul_members_of_this_dc_with_a_port() {
        let server = [("role", "consul"), ("dc", "dc1"), ("port", "8300")];
        let members = vec![
            member("s2", "10.0.0.12", &server, MemberStatus::Alive),
            member("s1", "10.0.0.11", &server, MemberStatus::Alive),
            member("s3", "10.0.0.13", &server, MemberStatus::Failed),
            member("s4", "10.0.0.14", &server, MemberStatus::Left),
            member(
                "c1",
                "10.0.0.21",
                &[("role", "node"), ("dc", "dc1")],
                MemberStatus::Alive,
            ),
            member(
                "other-dc",
                "10.0.1.1",
                &[("role", "consul"), ("dc", "dc2"), ("port", "8300")],
                MemberStatus::Alive,
            ),
            member(
                "no-port",
                "10.0.0.15",
                &[("role", "consul"), ("dc", "dc1")],
                MemberStatus::Alive,
            ),
            member(
                "v6",
                "fd00::1",
                &[("role", "consul"), ("dc", "DC1"), ("port", "9300")],
                MemberStatus::Alive,
            ),
        ];
        assert_eq!(
            server_addrs(&members, "dc1"),
            ["10.0.0.11:8300", "10.0.0.12:8300", "[fd00::1]:9300"]
        );
    }

    #[tokio::test]
    async fn follows_member_changes_until_shutdown() {
        let server = [("role", "consul"), ("dc", "dc1"), ("port", "8300")];
        let members = Members::new(vec![]);
        let (tx, mut rx) = watch::channel(Vec::new());
        let stop = CancellationToken::new();
        let task = tokio::spawn(follow_servers(
            members.clone(),
            "dc1".into(),
            tx,
            stop.clone(),
        ));
        members.set(vec![member(
            "s1",
            "10.0.0.11",
            &server,
            MemberStatus::Alive,
        )]);
        let list = rx.wait_for(|l| !l.is_empty()).await.unwrap().clone();
        assert_eq!(list, ["10.0.0.11:8300"]);
        members.set(vec![member(
            "s1",
            "10.0.0.11",
            &server,
            MemberStatus::Failed,
        )]);
        rx.wait_for(Vec::is_empty).await.unwrap();
        stop.cancel();
        task.await.unwrap();
    }
}
