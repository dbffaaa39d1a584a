//! A gossip node for tests: bound on 127.0.0.1 port 0 (UDP and TCP on one port), started with
//! the LAN timings, plus condition waits with generous deadlines.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use muster::gossip::{self, GossipConfig, GossipHandle, GossipId, Timing};
use muster::node::{MemberStatus, Members, NodeIdentity};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A shared test key (32 bytes, base64 of what `muster keygen` prints is irrelevant here).
pub const KEY: &[u8] = b"muster-gossip-test-key-32-bytes!";

/// How a test node is started.
#[derive(Debug, Clone)]
pub struct Opts {
    pub key: Option<Vec<u8>>,
    pub port: u16,
    pub server: bool,
    pub timing: Timing,
    pub snapshot: Option<std::path::PathBuf>,
    pub rejoin_after_leave: bool,
    pub retry_join: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            key: None,
            port: 0,
            server: false,
            timing: Timing::lan(),
            snapshot: None,
            rejoin_after_leave: false,
            retry_join: Vec::new(),
        }
    }
}

/// One running gossip instance.
pub struct Node {
    pub name: String,
    pub addr: SocketAddr,
    pub handle: GossipHandle,
    pub members: Members,
    _stop: CancellationToken,
}

fn bind(port: u16) -> (std::net::UdpSocket, std::net::TcpListener) {
    for _ in 0..16 {
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
        if let Ok(tcp) = std::net::TcpListener::bind(udp.local_addr().unwrap()) {
            return (udp, tcp);
        }
    }
    panic!("no free port pair");
}

impl Node {
    /// Starts a node named `name`.
    pub fn start(name: &str, opts: Opts) -> Node {
        let (udp, tcp) = bind(opts.port);
        let addr = udp.local_addr().unwrap();
        let identity = NodeIdentity {
            name: name.to_owned(),
            id: uuid::Uuid::new_v4().hyphenated().to_string(),
            datacenter: "dc1".to_owned(),
            advertise_addr: addr.ip(),
            server: opts.server,
            bootstrap_expect: if opts.server { 3 } else { 0 },
            serf_lan_port: addr.port(),
            server_port: opts.server.then_some(8300),
        };
        let members = Members::new(vec![muster::runtime::self_member(&identity, false)]);
        let cfg = GossipConfig {
            identity: GossipId::from_node(
                &identity,
                false,
                "0.1.0:test".to_owned(),
                gossip::initial_bump(),
            ),
            key: opts.key.clone(),
            secondary_keys: Vec::new(),
            keyring_file: None,
            verify_incoming: true,
            verify_outgoing: true,
            retry_join: opts.retry_join.clone(),
            retry_interval: Duration::from_secs(1),
            retry_max: 0,
            rejoin_after_leave: opts.rejoin_after_leave,
            reconnect_timeout: Duration::from_secs(3600),
            tombstone_timeout: Duration::from_secs(3600),
            snapshot: opts.snapshot.clone(),
            timing: opts.timing,
        };
        let stop = CancellationToken::new();
        let handle = gossip::start(cfg, udp, tcp, members.clone(), stop.clone()).unwrap();
        Node {
            name: name.to_owned(),
            addr,
            handle,
            members,
            _stop: stop,
        }
    }

    /// The status of `name` in this node's member list.
    pub fn status(&self, name: &str) -> Option<MemberStatus> {
        self.members
            .current()
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.status)
    }

    /// Names of the members with `status`.
    pub fn with_status(&self, status: MemberStatus) -> Vec<String> {
        let mut names: Vec<String> = self
            .members
            .current()
            .iter()
            .filter(|m| m.status == status)
            .map(|m| m.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Joins through `other`.
    pub async fn join(&self, other: &Node) -> usize {
        self.handle
            .join(vec![other.addr.to_string()])
            .await
            .unwrap_or_else(|e| panic!("{} cannot join {}: {e}", self.name, other.name))
    }
}

/// Polls `f` every 20 ms until it holds; panics after `limit`. Returns the time it took.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `names.len()` nodes and joins each to the first; waits until all see all alive.
pub async fn cluster(names: &[&str], opts: Opts) -> Vec<Node> {
    let nodes: Vec<Node> = names.iter().map(|n| Node::start(n, opts.clone())).collect();
    for n in &nodes[1..] {
        n.join(&nodes[0]).await;
    }
    let mut all: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    all.sort();
    wait_for(
        "every node sees every node alive",
        Duration::from_secs(20),
        || {
            let ok = nodes
                .iter()
                .all(|n| n.with_status(MemberStatus::Alive) == all);
            async move { ok }
        },
    )
    .await;
    nodes
}
