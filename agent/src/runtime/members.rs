//! This agent as a gossip member, with Consul's serf tags, and the conversion of the member
//! list into what the leader's reconciliation reads.
//!
//! Until gossip lands, the member list holds only this agent; the tags are already the ones
//! Consul gossips (`role`, `dc`, `id`, `vsn`, `vsn_min`, `vsn_max`, `build`, and on servers
//! `port`, `raft_vsn`, `bootstrap`/`expect`), so `muster members` and `/v1/agent/members`
//! look like Consul's and the gossip work only adds the other members.

use std::collections::BTreeMap;

use muster_server::{Member as ReconcileMember, MemberRole, MemberStatus as ReconcileStatus};

use crate::node::{Member, MemberStatus, NodeIdentity};

/// The serf protocol version we report (Consul's current `vsn`).
pub const PROTOCOL_VERSION: u8 = 2;
/// The oldest protocol version understood.
pub const PROTOCOL_MIN: u8 = 2;
/// The newest protocol version understood.
pub const PROTOCOL_MAX: u8 = 3;
/// The Raft protocol version reported by servers.
pub const RAFT_PROTOCOL: u8 = 3;

/// The build revision: `MUSTER_GIT_REVISION` at compile time, else `dev`.
pub fn revision() -> &'static str {
    option_env!("MUSTER_GIT_REVISION").unwrap_or("dev")
}

/// The `build` tag: `<version>:<revision>`.
pub fn build_tag() -> String {
    format!("{}:{}", env!("CARGO_PKG_VERSION"), revision())
}

/// Consul's serf tags for this agent.
pub fn self_tags(node: &NodeIdentity, bootstrap: bool) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        tags.insert(k.to_owned(), v);
    };
    put(
        "role",
        if node.server { "consul" } else { "node" }.to_owned(),
    );
    put("dc", node.datacenter.clone());
    put("id", node.id.clone());
    put("vsn", PROTOCOL_VERSION.to_string());
    put("vsn_min", PROTOCOL_MIN.to_string());
    put("vsn_max", PROTOCOL_MAX.to_string());
    put("build", build_tag());
    if node.server {
        if let Some(port) = node.server_port {
            put("port", port.to_string());
        }
        put("raft_vsn", RAFT_PROTOCOL.to_string());
        if bootstrap {
            put("bootstrap", "1".to_owned());
        }
        if node.bootstrap_expect > 0 {
            put("expect", node.bootstrap_expect.to_string());
        }
    }
    tags
}

/// This agent as an alive member.
pub fn self_member(node: &NodeIdentity, bootstrap: bool) -> Member {
    Member {
        name: node.name.clone(),
        addr: node.advertise_addr,
        port: node.serf_lan_port,
        tags: self_tags(node, bootstrap),
        status: MemberStatus::Alive,
    }
}

/// The members as the leader's reconciliation sees them. Members with status `none`
/// (not yet known) are left out; a server whose `port` tag is missing or unreadable is
/// treated as a client, since nobody could reach its RPC port anyway.
pub fn to_reconcile(members: &[Member]) -> Vec<ReconcileMember> {
    members
        .iter()
        .filter_map(|m| {
            let status = match m.status {
                MemberStatus::None => return None,
                MemberStatus::Alive => ReconcileStatus::Alive,
                MemberStatus::Leaving => ReconcileStatus::Leaving,
                MemberStatus::Left => ReconcileStatus::Left,
                MemberStatus::Failed => ReconcileStatus::Failed,
            };
            let role = match (
                m.tags.get("role").map(String::as_str),
                m.tags.get("port").and_then(|p| p.parse::<u16>().ok()),
            ) {
                (Some("consul"), Some(rpc_port)) => MemberRole::Server { rpc_port },
                _ => MemberRole::Client,
            };
            Some(ReconcileMember {
                name: m.name.clone(),
                id: m.tags.get("id").cloned().unwrap_or_default(),
                address: m.addr.to_string(),
                status,
                role,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(server: bool) -> NodeIdentity {
        NodeIdentity {
            name: "db1".into(),
            id: "40e4a748-2192-161a-0510-9bf59fe950b5".into(),
            datacenter: "dc1".into(),
            advertise_addr: "10.0.0.11".parse().unwrap(),
            server,
            bootstrap_expect: if server { 3 } else { 0 },
            serf_lan_port: 8301,
            server_port: server.then_some(8300),
        }
    }

    #[test]
    fn server_tags_follow_consul() {
        let tags = self_tags(&node(true), false);
        let get = |k: &str| tags.get(k).map(String::as_str);
        assert_eq!(get("role"), Some("consul"));
        assert_eq!(get("dc"), Some("dc1"));
        assert_eq!(get("id"), Some("40e4a748-2192-161a-0510-9bf59fe950b5"));
        assert_eq!(get("vsn"), Some("2"));
        assert_eq!(get("vsn_min"), Some("2"));
        assert_eq!(get("vsn_max"), Some("3"));
        assert_eq!(get("port"), Some("8300"));
        assert_eq!(get("raft_vsn"), Some("3"));
        assert_eq!(get("expect"), Some("3"));
        assert_eq!(get("bootstrap"), None);
        let build = get("build").unwrap();
        assert!(build.starts_with(&format!("{}:", env!("CARGO_PKG_VERSION"))));
        let tags = self_tags(&node(true), true);
        assert_eq!(tags.get("bootstrap").map(String::as_str), Some("1"));
    }

    #[test]
    fn client_tags_have_no_server_keys() {
        let tags = self_tags(&node(false), false);
        assert_eq!(tags["role"], "node");
        for k in ["port", "raft_vsn", "bootstrap", "expect"] {
            assert!(!tags.contains_key(k), "{k}");
        }
    }

    #[test]
    fn reconcile_view_of_members() {
        let server = self_member(&node(true), false);
        let mut client = self_member(&node(false), false);
        client.name = "app".into();
        client.status = MemberStatus::Failed;
        let mut unknown = client.clone();
        unknown.name = "ghost".into();
        unknown.status = MemberStatus::None;
        let mut left = server.clone();
        left.name = "db2".into();
        left.status = MemberStatus::Left;
        left.tags.remove("port");
        let out = to_reconcile(&[server, client, unknown, left]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].name, "db1");
        assert_eq!(out[0].address, "10.0.0.11");
        assert_eq!(out[0].id, "40e4a748-2192-161a-0510-9bf59fe950b5");
        assert_eq!(out[0].status, ReconcileStatus::Alive);
        assert_eq!(out[0].role, MemberRole::Server { rpc_port: 8300 });
        assert_eq!(out[1].status, ReconcileStatus::Failed);
        assert_eq!(out[1].role, MemberRole::Client);
        assert_eq!(out[2].status, ReconcileStatus::Left);
        assert_eq!(out[2].role, MemberRole::Client, "no port tag");
    }
}
