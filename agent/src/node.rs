//! Who this agent is and who it knows.
//!
//! Three small shared types that the runtime owns and the HTTP API reads:
//! - [`NodeIdentity`]: fixed for the life of the process (name, UUID, datacenter, role, ports);
//! - [`Members`]: the gossip member list as a `watch` channel, written by the gossip task
//!   ([`crate::gossip`]), plus the request channel through which the API asks gossip to join
//!   or force members out, and gossip's packet counters;
//! - [`AgentControl`]: the channel through which the API asks the runtime for a reload or a
//!   graceful leave, so that only the runtime task ever changes process-wide state.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot, watch};

/// The identity of this agent, fixed at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// Node name (`node_name`), unique in the datacenter.
    pub name: String,
    /// Node UUID, persisted in `<data_dir>/node-id`.
    pub id: String,
    /// Datacenter (`datacenter`).
    pub datacenter: String,
    /// The address other nodes and the catalog know this node by.
    pub advertise_addr: IpAddr,
    /// Whether this agent is a Raft server.
    pub server: bool,
    /// `bootstrap_expect` (0 on clients).
    pub bootstrap_expect: u32,
    /// The bound LAN gossip port (Consul's `Port` in member listings).
    pub serf_lan_port: u16,
    /// The bound server RPC port (servers only).
    pub server_port: Option<u16>,
}

/// Serf member status, with Consul's integer codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberStatus {
    /// Unknown.
    None = 0,
    /// Alive and reachable.
    Alive = 1,
    /// Leaving gracefully.
    Leaving = 2,
    /// Left gracefully.
    Left = 3,
    /// Failed (unreachable).
    Failed = 4,
}

impl MemberStatus {
    /// The word `muster members` prints (`alive`, `leaving`, `left`, `failed`, `none`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Alive => "alive",
            Self::Leaving => "leaving",
            Self::Left => "left",
            Self::Failed => "failed",
        }
    }
}

/// One gossip member, with Consul's serf tags (`role`, `dc`, `id`, `vsn`, `build`, `port`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Node name.
    pub name: String,
    /// Gossip address.
    pub addr: IpAddr,
    /// Gossip port.
    pub port: u16,
    /// Serf tags as Consul sets them (`role` is `consul` on servers and `node` on clients).
    pub tags: BTreeMap<String, String>,
    /// Current status.
    pub status: MemberStatus,
}

/// The member list: one writer (the gossip task), any number of readers; plus the way to
/// ask gossip to join or force out members, and gossip's packet counters.
#[derive(Debug, Clone)]
pub struct Members {
    tx: Arc<watch::Sender<Arc<Vec<Member>>>>,
    requests: Arc<OnceLock<mpsc::Sender<MemberRequest>>>,
    stats: Arc<GossipStats>,
}

/// What the API asks of gossip.
#[derive(Debug)]
pub enum MemberRequest {
    /// Join through these addresses; the reply is how many answered, or why none did.
    Join {
        /// Addresses as `muster join` takes them (`ip`, `ip:port`, hostnames, `[v6]:port`).
        addrs: Vec<String>,
        /// The outcome.
        reply: oneshot::Sender<Result<usize, String>>,
    },
    /// A keyring operation on every alive member (this agent included); the reply has one
    /// answer per member.
    Keyring {
        /// The operation.
        op: crate::gossip::keyring::KeyringOp,
        /// Each member's name and its keyring after the operation, or why it refused.
        reply: oneshot::Sender<crate::gossip::keyring::KeyringAnswers>,
    },
    /// Move a failed member to `left` (`prune`: forget it).
    ForceLeave {
        /// The member's name.
        node: String,
        /// Forget the member entirely.
        prune: bool,
        /// The outcome.
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// Gossip's counters (Consul shows similar ones under `Stats.serf_lan` in `/v1/agent/self`).
#[derive(Debug, Default)]
pub struct GossipStats {
    /// Whether outgoing gossip is encrypted.
    pub encrypted: AtomicBool,
    /// Packets dropped because they did not open with our key (or were plain while
    /// encryption is required).
    pub dropped_key: AtomicU64,
    /// Packets dropped as malformed envelopes.
    pub dropped_malformed: AtomicU64,
    /// Datagrams dropped because the gossip task was behind.
    pub dropped_queue: AtomicU64,
    /// Lifeguard's local health score (0 healthy, up to 8), Consul's `health_score`.
    pub health_score: AtomicU64,
    /// Our probes that got no ack, directly or indirectly.
    pub probes_failed: AtomicU64,
    /// Suspicions this agent started (each also accused to the others).
    pub suspicions: AtomicU64,
    /// Suspicions about this agent that it refuted.
    pub refuted: AtomicU64,
}

impl Members {
    /// A list holding the given members.
    pub fn new(initial: Vec<Member>) -> Self {
        let (tx, _) = watch::channel(Arc::new(initial));
        Self {
            tx: Arc::new(tx),
            requests: Arc::new(OnceLock::new()),
            stats: Arc::new(GossipStats::default()),
        }
    }

    /// Connects the request channel of the gossip task (once; later calls are ignored).
    pub fn attach(&self, requests: mpsc::Sender<MemberRequest>) {
        let _ = self.requests.set(requests);
    }

    /// Gossip's counters.
    pub fn stats(&self) -> &GossipStats {
        &self.stats
    }

    /// Asks gossip to join through `addrs`; returns how many addresses answered.
    pub async fn join(&self, addrs: Vec<String>) -> Result<usize, String> {
        let (reply, rx) = oneshot::channel();
        self.request(MemberRequest::Join { addrs, reply }).await?;
        rx.await.map_err(|_| NO_GOSSIP.to_owned())?
    }

    /// Asks gossip to move the failed member `node` to `left` (or to forget it).
    pub async fn force_leave(&self, node: &str, prune: bool) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        let node = node.to_owned();
        self.request(MemberRequest::ForceLeave { node, prune, reply })
            .await?;
        rx.await.map_err(|_| NO_GOSSIP.to_owned())?
    }

    /// Runs a keyring operation on every alive member; one answer per member.
    pub async fn keyring(
        &self,
        op: crate::gossip::keyring::KeyringOp,
    ) -> Result<crate::gossip::keyring::KeyringAnswers, String> {
        let (reply, rx) = oneshot::channel();
        self.request(MemberRequest::Keyring { op, reply }).await?;
        rx.await.map_err(|_| NO_GOSSIP.to_owned())
    }

    async fn request(&self, req: MemberRequest) -> Result<(), String> {
        let tx = self.requests.get().ok_or_else(|| NO_GOSSIP.to_owned())?;
        tx.send(req).await.map_err(|_| NO_GOSSIP.to_owned())
    }

    /// The current members (cheap: one `Arc` clone).
    pub fn current(&self) -> Arc<Vec<Member>> {
        self.tx.borrow().clone()
    }

    /// Replaces the list and wakes every subscriber.
    pub fn set(&self, members: Vec<Member>) {
        self.tx.send_replace(Arc::new(members));
    }

    /// A receiver that sees every change (for the leader's reconcile loop).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Vec<Member>>> {
        self.tx.subscribe()
    }
}

/// The error when gossip is not running (yet, or any more).
const NO_GOSSIP: &str = "gossip is not running";

/// What the API can ask of the runtime.
#[derive(Debug)]
pub enum ControlRequest {
    /// Re-read the configuration sources (`PUT /v1/agent/reload`, SIGHUP). The reply carries
    /// the error text when the new configuration is rejected (the old one stays in force).
    Reload(oneshot::Sender<Result<(), String>>),
    /// Leave gracefully and shut down (`PUT /v1/agent/leave`). The reply is sent once the
    /// leave has been carried out, before the process exits.
    Leave(oneshot::Sender<()>),
}

/// Cloneable handle for sending [`ControlRequest`]s to the runtime.
#[derive(Debug, Clone)]
pub struct AgentControl {
    tx: mpsc::Sender<ControlRequest>,
}

impl AgentControl {
    /// A handle and the receiver the runtime task owns. The channel is small and bounded:
    /// reloads and leaves are rare, and a caller that finds it full just waits.
    pub fn channel() -> (Self, mpsc::Receiver<ControlRequest>) {
        let (tx, rx) = mpsc::channel(8);
        (Self { tx }, rx)
    }

    /// Asks for a reload and waits for its outcome.
    pub async fn reload(&self) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(ControlRequest::Reload(reply))
            .await
            .map_err(|_| "agent is shutting down".to_owned())?;
        rx.await.map_err(|_| "agent is shutting down".to_owned())?
    }

    /// Asks for a graceful leave and waits until it is done (or the runtime is gone).
    pub async fn leave(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(ControlRequest::Leave(reply)).await.is_ok() {
            let _ = rx.await;
        }
    }
}
