//! [`CatalogServer::start`] and the [`ServerHandle`]: writes (proposed locally or forwarded to
//! the leader), reads at the three consistency levels, blocking-query waits, cluster bootstrap
//! and membership, status, and shutdown. On a client agent the same handle fronts the catalog
//! replica (`crate::replica`): reads, writes, waits, status and shutdown go there, and the
//! server-only calls (bootstrap, Raft membership) fail with [`ServerError::NotServer`].
//!
//! Invariants:
//! - every wait is bounded: writes, `?consistent` reads and default reads on a follower retry
//!   across elections for at most `rpc_hold_timeout`, then fail with `No cluster leader`; a
//!   default read with no known leader fails at once;
//! - a read's [`ReadMeta::consistency`] is the level actually provided: default reads are only
//!   answered by the leader or through it (read-index), never from an unconfirmed replica;
//! - a follower forwards a write to the leader once per attempt; the leader applies forwarded
//!   writes locally only, so forwarding never loops;
//! - the catalog lock is only taken in short synchronous sections, never across an `.await`;
//! - shutdown (on the token or [`ServerHandle::shutdown`]) is idempotent and bounded: Raft is
//!   stopped first, then the storage thread is joined.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::{ChangeMembers, ServerState};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::channel::ChannelError;
use super::network::{
    Network, PATH_READ_INDEX, PATH_WRITE, PeerAddrs, PostError, RpcClient, decode_reply,
    encode_request, http_client, post,
};
use super::rpc::{ForwardError, ForwardWrite, ReadIndexReply};
use super::store::{self};
use super::{NodeId, Raft, ServerNode, Shared};
use crate::catalog::command::{Command, CommandResult};
use crate::catalog::model::Index;
use crate::catalog::{Catalog, Table, TableIndexes};
use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::replica::ReplicaHandle;
use crate::storage::Storage;

mod batch;
mod membership;

pub(crate) use membership::remove_forwarded;
pub use membership::{PeerStatus, RaftConfiguration, RaftServerState};

/// How long shutdown waits for Raft and then for the storage thread.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause between attempts while no leader is reachable.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest single call to the leader inside a write's or read's hold time.
const FORWARD_ATTEMPT: Duration = Duration::from_secs(2);

/// Entry point of the catalog server.
pub struct CatalogServer;

/// The result of a committed write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOutcome {
    /// Raft index of the entry.
    pub index: Index,
    /// What applying it did (a rejection leaves the catalog unchanged).
    pub result: CommandResult,
}

/// Read consistency (Consul's `?stale`, default, `?consistent`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Leader-served (Consul's default): the leader answers from its state (confirming its
    /// leadership first once its lease lapsed); a follower first confirms the read through the
    /// leader (read-index), then reads its caught-up replica. No known leader: `NoLeader`.
    #[default]
    Default,
    /// Confirm leadership with a quorum, then read at or after the leader's commit point.
    Consistent,
    /// Local state, whatever its age.
    Stale,
}

/// Metadata of a read, for `X-Consul-KnownLeader` and `X-Consul-LastContact`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadMeta {
    /// Whether this server knows a leader.
    pub known_leader: bool,
    /// Time since this server last heard from the leader; zero on the leader. When it has
    /// never heard from one, the time since start.
    pub last_contact: Duration,
    /// The consistency actually provided.
    pub consistency: Consistency,
}

/// A server's Raft role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RaftRole {
    /// Leader.
    Leader,
    /// Follower.
    Follower,
    /// Campaigning.
    Candidate,
    /// Non-voting member (or not yet part of a cluster).
    Learner,
    /// Stopping.
    Shutdown,
}

/// One server of the Raft configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServerInfo {
    /// Raft node id.
    pub id: u64,
    /// Node name.
    pub name: String,
    /// RPC address.
    pub rpc_addr: String,
    /// Voter (else learner).
    pub voter: bool,
    /// Current leader.
    pub leader: bool,
}

/// A summary of Raft state for `/v1/agent/self`, `/v1/status/*` and operator endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RaftStatus {
    /// This server's Raft id.
    pub node_id: u64,
    /// Its role.
    pub role: RaftRole,
    /// Current term.
    pub term: u64,
    /// Last log index.
    pub last_log_index: Option<u64>,
    /// Last index this server knows to be committed.
    pub commit_index: Option<u64>,
    /// Last index applied to the catalog.
    pub applied_index: Option<u64>,
    /// Last index covered by the latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Leader's id, if known.
    pub leader_id: Option<u64>,
    /// Leader's RPC address, if known.
    pub leader_addr: Option<String>,
    /// The Raft configuration (voters and learners).
    pub servers: Vec<ServerInfo>,
    /// Time since the leader was last heard from (zero on the leader).
    pub last_contact: Duration,
    /// Set once Raft has stopped on a fatal error (the process should exit and restart).
    pub fatal: Option<String>,
}

/// Who leads, as this server sees it.
enum Leader {
    Me,
    Other(String),
    Unknown,
}

/// The server's internals, shared by handles and the RPC router.
pub(crate) struct Inner {
    config: ServerConfig,
    raft: Raft,
    shared: Arc<Shared>,
    client: RpcClient,
    /// Connections for writes forwarded to the leader.
    forwarding: super::channel::Pool,
    /// Peer addresses from gossip (they win over the membership's; see `network`).
    peers: Arc<PeerAddrs>,
    storage: parking_lot::Mutex<Option<Storage>>,
    /// Cancelled when shutdown begins: wakes blocking queries and retry loops.
    stop: CancellationToken,
    shutdown_done: tokio::sync::Mutex<bool>,
    started: Instant,
    leadership: watch::Receiver<bool>,
    /// Writes on the leader go through it (group commit; see `batch`).
    batcher: batch::Batcher,
    /// Refuses writes while the data directory is short of space.
    disk: super::disk::DiskGuard,
}

/// A handle to the catalog: a running catalog server, or a client agent's replica of it
/// ([`crate::CatalogReplica`]). Both answer the same reads, writes and waits; Raft
/// membership and bootstrap are server-only ([`ServerError::NotServer`] on a replica).
/// Cheap to clone.
#[derive(Clone)]
pub struct ServerHandle {
    role: Role,
}

/// What a handle drives.
#[derive(Clone)]
enum Role {
    /// A Raft server in this process.
    Server(Arc<Inner>),
    /// A client agent's replica, streamed from the servers.
    Replica(ReplicaHandle),
}

fn fatal(f: Fatal<NodeId>) -> ServerError {
    match f {
        Fatal::Stopped => ServerError::ShuttingDown,
        other => ServerError::Fatal(other.to_string()),
    }
}

fn client_write_error(e: RaftError<NodeId, ClientWriteError<NodeId, ServerNode>>) -> ServerError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ServerError::NotLeader {
            leader: f.leader_node.map(|n| n.rpc_addr),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ServerError::Membership(e.to_string())
        }
        RaftError::Fatal(f) => fatal(f),
    }
}

impl CatalogServer {
    /// Opens `<data_dir>/raft.redb`, restores the catalog from its snapshot and log, and starts
    /// Raft. Nothing is bound: serve [`ServerHandle::rpc_router`] on the server port. The server
    /// shuts down when `shutdown` is cancelled (or on [`ServerHandle::shutdown`]).
    pub async fn start(
        config: ServerConfig,
        data_dir: &Path,
        shutdown: CancellationToken,
    ) -> Result<ServerHandle, ServerError> {
        config.validate().map_err(ServerError::Config)?;
        let raft_config = openraft::Config {
            cluster_name: config.datacenter.clone(),
            heartbeat_interval: millis(config.heartbeat_interval),
            election_timeout_min: millis(config.election_timeout_min),
            election_timeout_max: millis(config.election_timeout_max),
            install_snapshot_timeout: millis(config.install_snapshot_timeout),
            max_payload_entries: config.max_append_entries,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_threshold),
            max_in_snapshot_log_to_keep: config.trailing_logs,
            // Chunks travel as JSON arrays (about 4 bytes per byte): keep them well under the
            // router's body limit.
            snapshot_max_chunk_size: 1024 * 1024,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| ServerError::Config(e.to_string()))?;
        let client = http_client(config.rpc_tls.as_ref()).map_err(ServerError::Config)?;

        let (storage, log_store, state_machine, shared) =
            store::open(data_dir, config.node_id).await?;
        let peers = Arc::new(PeerAddrs::default());
        let network = Network {
            client: client.clone(),
            peers: peers.clone(),
            durable: shared.durable.subscribe(),
        };
        let raft = match Raft::new(
            config.node_id,
            Arc::new(raft_config),
            network,
            log_store,
            state_machine,
        )
        .await
        {
            Ok(raft) => raft,
            Err(e) => {
                storage.close(SHUTDOWN_GRACE).await;
                return Err(fatal(e));
            }
        };

        let stop = CancellationToken::new();
        let leadership = spawn_leadership_watch(&raft, stop.clone());
        let batcher = batch::Batcher::start(raft.clone(), config.rpc_hold_timeout, stop.clone());
        let disk = super::disk::DiskGuard::new(data_dir, config.min_free_disk);
        let inner = Arc::new(Inner {
            disk,
            config,
            raft,
            shared,
            client,
            forwarding: super::channel::Pool::default(),
            peers,
            storage: parking_lot::Mutex::new(Some(storage)),
            stop,
            shutdown_done: tokio::sync::Mutex::new(false),
            started: Instant::now(),
            leadership,
            batcher,
        });
        spawn_shutdown_watch(Arc::downgrade(&inner), shutdown);
        Ok(ServerHandle::from_inner(inner))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Mirrors "am I the leader" into a watch channel for the agent's leader-only loops.
fn spawn_leadership_watch(raft: &Raft, stop: CancellationToken) -> watch::Receiver<bool> {
    let mut metrics = raft.metrics();
    let (tx, rx) = watch::channel(metrics.borrow().state == ServerState::Leader);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                changed = metrics.changed() => if changed.is_err() { break },
            }
            let leader = metrics.borrow_and_update().state == ServerState::Leader;
            tx.send_if_modified(|v| std::mem::replace(v, leader) != leader);
        }
        tx.send_replace(false);
    });
    rx
}

/// Shuts the server down when the caller's token fires. Holds only a weak reference, so
/// dropping every handle does not keep the internals alive through this task.
fn spawn_shutdown_watch(inner: Weak<Inner>, shutdown: CancellationToken) {
    let stop = match inner.upgrade() {
        Some(i) => i.stop.clone(),
        None => return,
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {
                if let Some(inner) = inner.upgrade() {
                    ServerHandle::from_inner(inner).shutdown().await;
                }
            }
            _ = stop.cancelled() => {}
        }
    });
}

impl Inner {
    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    pub(crate) fn touch_leader_contact(&self) {
        *self.shared.last_leader_contact.lock() = Some(Instant::now());
    }

    /// The state shared with the state machine (for the replica stream).
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Cancelled when shutdown begins.
    pub(crate) fn stopping(&self) -> &CancellationToken {
        &self.stop
    }

    pub(crate) fn datacenter(&self) -> &str {
        &self.config.datacenter
    }

    fn self_node(&self) -> ServerNode {
        ServerNode {
            name: self.config.node_name.clone(),
            rpc_addr: self.config.rpc_addr.clone(),
        }
    }

    fn leader(&self) -> Leader {
        let m = self.raft.metrics();
        let m = m.borrow();
        match m.current_leader {
            // openraft restores a restarted leader as leader before any voter has answered;
            // like Consul, it is not reported as leader until a quorum has acknowledged it.
            Some(id)
                if id == self.config.node_id
                    && m.state == ServerState::Leader
                    && m.millis_since_quorum_ack.is_some() =>
            {
                Leader::Me
            }
            Some(id) if id == self.config.node_id => Leader::Unknown,
            Some(id) => match m.membership_config.membership().get_node(&id) {
                Some(node) => Leader::Other(self.peers.resolve(id, &node.rpc_addr)),
                None => Leader::Unknown,
            },
            None => Leader::Unknown,
        }
    }

    /// The ACL state of this server.
    pub(crate) fn acl_state(&self) -> Result<crate::catalog::acl::AclState, ServerError> {
        self.ensure_open()?;
        Ok(self.shared.state.read().catalog.acl().clone())
    }

    /// Token resolution from this server's state.
    pub(crate) fn acl_resolve(
        &self,
        secret: &str,
    ) -> Result<Option<crate::catalog::acl::ResolvedToken>, ServerError> {
        self.ensure_open()?;
        Ok(self.shared.state.read().catalog.acl().resolve(secret))
    }

    fn ensure_open(&self) -> Result<(), ServerError> {
        if self.stop.is_cancelled() {
            return Err(ServerError::ShuttingDown);
        }
        Ok(())
    }

    /// Waits a little before the next attempt; false once the deadline or shutdown is reached.
    async fn pause(&self, deadline: Instant) -> bool {
        let until = (Instant::now() + RETRY_PAUSE).min(deadline);
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = self.stop.cancelled() => return false,
        }
        Instant::now() < deadline
    }

    /// Proposes on this server, which must be the leader. The linkage of checks to services is
    /// pre-checked against the leader's state, so a doomed command is not logged.
    /// Proposes a command that passed [`Command::validate_sized`] (`size` bytes).
    async fn write_local(
        &self,
        command: Command,
        size: usize,
        deadline: Instant,
    ) -> Result<WriteOutcome, ServerError> {
        {
            let st = self.shared.state.read();
            command
                .validate_state(&st.catalog)
                .map_err(ServerError::Validation)?;
        }
        self.disk.check()?;
        self.batcher.write(command, size, deadline).await
    }

    /// A write forwarded by a follower: validated again and applied here, never re-forwarded.
    pub(crate) async fn write_forwarded(
        &self,
        command: Command,
    ) -> Result<WriteOutcome, ServerError> {
        self.ensure_open()?;
        let size = command.validate_sized().map_err(ServerError::Validation)?;
        match self.leader() {
            Leader::Me => {
                let deadline = Instant::now() + self.config.rpc_hold_timeout;
                self.write_local(command, size, deadline).await
            }
            Leader::Other(addr) => Err(ServerError::NotLeader { leader: Some(addr) }),
            Leader::Unknown => Err(ServerError::NoLeader),
        }
    }

    /// Runs `local` when this server leads, or posts `request` to the leader's `path`; retried
    /// across elections and leader changes until `deadline`. A local "not/no leader" and a
    /// retryable remote error try again; any other error is the answer at once. At the
    /// deadline the answer is the last RPC failure, or `No cluster leader`.
    async fn on_leader<T, R, F, Fut>(
        &self,
        path: &str,
        request: &R,
        deadline: Instant,
        mut local: F,
    ) -> Result<T, ServerError>
    where
        T: DeserializeOwned,
        R: Serialize,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ServerError>>,
    {
        let mut last_error: ServerError;
        loop {
            self.ensure_open()?;
            match self.leader() {
                Leader::Me => match local().await {
                    Err(e @ (ServerError::NotLeader { .. } | ServerError::NoLeader)) => {
                        last_error = e;
                    }
                    done => return done,
                },
                Leader::Other(addr) => {
                    // One attempt never takes the whole hold time: a leader that went away
                    // (a partition) must leave time to notice it and report no leader.
                    let budget = deadline
                        .saturating_duration_since(Instant::now())
                        .min(FORWARD_ATTEMPT);
                    let reply: Result<Result<T, ForwardError>, PostError> =
                        match encode_request(&addr, request) {
                            Ok(body) => self.forward(&addr, path, body, budget).await,
                            Err(e) => Err(e),
                        };
                    match reply {
                        Ok(Ok(value)) => return Ok(value),
                        Ok(Err(e)) if e.is_retryable() => last_error = e.into_server_error(),
                        Ok(Err(e)) => return Err(e.into_server_error()),
                        Err(e) => {
                            tracing::debug!(error = %e, path, "call to the leader failed");
                            last_error = ServerError::Rpc(e.to_string());
                        }
                    }
                }
                Leader::Unknown => last_error = ServerError::NoLeader,
            }
            if !self.pause(deadline).await {
                self.ensure_open()?;
                // Consul's answer when this server has lost its leader by now (cut off from
                // the majority); the RPC failure only when a leader is known but failed us.
                return Err(match (last_error, self.leader()) {
                    (e @ ServerError::Rpc(_), Leader::Other(_)) => e,
                    _ => ServerError::NoLeader,
                });
            }
        }
    }

    /// One call to the leader: writes over a pooled forwarding channel when the leader has
    /// one (see `raft::channel`), anything else (and writes to older leaders) over HTTP.
    async fn forward<T: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        budget: Duration,
    ) -> Result<T, PostError> {
        if path == PATH_WRITE && !self.forwarding.is_legacy(addr) {
            let deadline = Instant::now() + budget;
            match self
                .forwarding
                .call(&self.client, addr, &body, deadline)
                .await
            {
                Ok(reply) => return decode_reply(addr, &reply),
                Err(ChannelError::Unsupported) => {}
                Err(ChannelError::Failed(e) | ChannelError::Unreachable(e)) => return Err(e),
                Err(ChannelError::Broken(reason)) => {
                    return Err(PostError::Channel {
                        addr: addr.to_string(),
                        reason,
                    });
                }
            }
        }
        post(&self.client, addr, path, body, budget).await
    }

    /// Leader side of a follower's consistent read: confirm leadership with a quorum and return
    /// the index the follower must have applied.
    pub(crate) async fn leader_read_index(&self) -> Result<u64, ServerError> {
        self.ensure_open()?;
        let budget = self.config.rpc_hold_timeout;
        match tokio::time::timeout(budget, self.raft.get_read_log_id()).await {
            Err(_) => Err(ServerError::NoLeader),
            Ok(Ok((read_log_id, _))) => Ok(read_log_id.map(|l| l.index).unwrap_or(0)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(ServerError::NotLeader {
                    leader: f.leader_node.map(|n| n.rpc_addr),
                })
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
                Err(ServerError::NoLeader)
            }
            Ok(Err(RaftError::Fatal(f))) => Err(fatal(f)),
        }
    }

    /// Makes the next local read linearizable, on the leader or through it.
    async fn linearize(&self) -> Result<(), ServerError> {
        let deadline = Instant::now() + self.config.rpc_hold_timeout;
        loop {
            self.ensure_open()?;
            match self.leader() {
                Leader::Me => {
                    let res =
                        tokio::time::timeout_at(deadline, self.raft.ensure_linearizable()).await;
                    match res {
                        Err(_) => return Err(ServerError::NoLeader),
                        Ok(Ok(_)) => return Ok(()),
                        Ok(Err(RaftError::Fatal(f))) => return Err(fatal(f)),
                        // Lost leadership or quorum: retry against whoever leads next.
                        Ok(Err(RaftError::APIError(_))) => {}
                    }
                }
                Leader::Other(addr) => {
                    // One attempt never takes the whole hold time: a leader that went away
                    // (a partition) must leave time to notice it and report no leader.
                    let budget = deadline
                        .saturating_duration_since(Instant::now())
                        .min(FORWARD_ATTEMPT);
                    let reply: Result<ReadIndexReply, PostError> = match encode_request(&addr, &())
                    {
                        Ok(body) => post(&self.client, &addr, PATH_READ_INDEX, body, budget).await,
                        Err(e) => Err(e),
                    };
                    match reply {
                        Ok(Ok(index)) => return self.wait_applied(index, deadline).await,
                        Ok(Err(e)) if e.is_retryable() => {}
                        Ok(Err(e)) => return Err(e.into_server_error()),
                        Err(e) => tracing::debug!(error = %e, "read-index call to leader failed"),
                    }
                }
                Leader::Unknown => {}
            }
            if !self.pause(deadline).await {
                self.ensure_open()?;
                return Err(ServerError::NoLeader);
            }
        }
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), ServerError> {
        let budget = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(budget))
            .applied_index_at_least(Some(index), "consistent read")
            .await
            .map(|_| ())
            .map_err(|e| match e {
                openraft::metrics::WaitError::Timeout(..) => ServerError::NoLeader,
                openraft::metrics::WaitError::ShuttingDown => ServerError::ShuttingDown,
            })
    }

    fn read_meta(&self, consistency: Consistency) -> (ReadMeta, bool) {
        let m = self.raft.metrics();
        let m = m.borrow();
        let is_leader = m.state == ServerState::Leader;
        // Consul's leader lease: a leader that heard from a quorum within the minimum election
        // timeout cannot have been replaced yet.
        let lease_valid = is_leader
            && m.millis_since_quorum_ack
                .is_some_and(|ms| ms < millis(self.config.election_timeout_min));
        let last_contact = if is_leader {
            Duration::ZERO
        } else {
            match *self.shared.last_leader_contact.lock() {
                Some(t) => t.elapsed(),
                None => self.started.elapsed(),
            }
        };
        let meta = ReadMeta {
            known_leader: m.current_leader.is_some()
                && (!is_leader || m.millis_since_quorum_ack.is_some()),
            last_contact,
            consistency,
        };
        (meta, is_leader && !lease_valid)
    }
}

impl ServerHandle {
    pub(crate) fn from_inner(inner: Arc<Inner>) -> ServerHandle {
        ServerHandle {
            role: Role::Server(inner),
        }
    }

    pub(crate) fn from_replica(replica: ReplicaHandle) -> ServerHandle {
        ServerHandle {
            role: Role::Replica(replica),
        }
    }

    /// The server's internals; [`ServerError::NotServer`] on a replica.
    fn server(&self) -> Result<&Arc<Inner>, ServerError> {
        match &self.role {
            Role::Server(inner) => Ok(inner),
            Role::Replica(_) => Err(ServerError::NotServer),
        }
    }

    /// Whether this handle is a client agent's replica rather than a Raft server.
    pub fn is_replica(&self) -> bool {
        matches!(self.role, Role::Replica(_))
    }

    /// This server's Raft id (0 on a replica, which has none).
    pub fn node_id(&self) -> u64 {
        self.server().map_or(0, |inner| inner.config.node_id)
    }

    /// The config the server runs with (`None` on a replica).
    pub fn config(&self) -> Option<&ServerConfig> {
        self.server().ok().map(|inner| &inner.config)
    }

    /// The inbound RPC router (Raft, forwarded writes, read-index, the replica stream) to serve
    /// on the server port. A replica serves nothing: its router is empty.
    pub fn rpc_router(&self) -> axum::Router {
        match &self.role {
            Role::Server(inner) => super::rpc::router(inner.clone()),
            Role::Replica(_) => axum::Router::new(),
        }
    }

    /// Whether this server has Raft state (a bootstrapped or joined cluster).
    pub async fn is_initialized(&self) -> Result<bool, ServerError> {
        self.server()?.raft.is_initialized().await.map_err(fatal)
    }

    /// `bootstrap_expect = 1` / dev mode: form a cluster of this server alone. Idempotent: a
    /// server that already has Raft state is left as it is. Returns whether it bootstrapped.
    pub async fn bootstrap_single(&self) -> Result<bool, ServerError> {
        let inner = self.server()?;
        let me = BTreeMap::from([(inner.config.node_id, inner.self_node())]);
        self.bootstrap(me).await
    }

    /// Forms a cluster of these servers (all voters; must include this one). Call it on one
    /// server once `bootstrap_expect` servers are known; "already initialized" is not an
    /// error. Returns whether this call bootstrapped.
    pub async fn bootstrap(&self, members: BTreeMap<u64, ServerNode>) -> Result<bool, ServerError> {
        let inner = self.server()?;
        inner.ensure_open()?;
        if self.is_initialized().await? {
            return Ok(false);
        }
        match inner.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(RaftError::APIError(InitializeError::NotInMembers(e))) => {
                Err(ServerError::Membership(e.to_string()))
            }
            Err(RaftError::Fatal(f)) => Err(fatal(f)),
        }
    }

    fn ensure_leader(&self) -> Result<(), ServerError> {
        match self.server()?.leader() {
            Leader::Me => Ok(()),
            Leader::Other(addr) => Err(ServerError::NotLeader { leader: Some(addr) }),
            Leader::Unknown => Err(ServerError::NoLeader),
        }
    }

    /// Adds a server as a voter (leader only): as a learner first, waiting until it has caught
    /// up, then promoted through a joint-consensus membership change.
    pub async fn add_voter(&self, id: u64, node: ServerNode) -> Result<(), ServerError> {
        let inner = self.server()?;
        inner.ensure_open()?;
        self.ensure_leader()?;
        inner
            .raft
            .add_learner(id, node, true)
            .await
            .map_err(client_write_error)?;
        inner
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(client_write_error)?;
        Ok(())
    }

    /// Removes a server (voter or learner) from the Raft configuration (leader only); a server
    /// that is not a member is a no-op. A membership change already in flight is waited out
    /// for up to `rpc_hold_timeout`.
    pub async fn remove_server(&self, id: u64) -> Result<(), ServerError> {
        let inner = self.server()?;
        inner
            .remove_member(id, Instant::now() + inner.config.rpc_hold_timeout)
            .await
    }

    /// Validates and commits a command: proposed here on the leader, forwarded to the leader's
    /// RPC port on a follower, retried across elections for up to `rpc_hold_timeout`. Register
    /// and deregister are idempotent, so a retry after an indeterminate failure is safe.
    pub async fn write(&self, mut command: Command) -> Result<WriteOutcome, ServerError> {
        let inner = match &self.role {
            Role::Server(inner) => inner,
            Role::Replica(replica) => return replica.write(command).await,
        };
        command.normalize();
        if let Command::Register(r) = &mut command
            && r.datacenter.is_empty()
        {
            r.datacenter = inner.config.datacenter.clone();
        }
        let size = command.validate_sized().map_err(ServerError::Validation)?;
        let deadline = Instant::now() + inner.config.rpc_hold_timeout;
        let forwarded = ForwardWrite { command };
        inner
            .on_leader(PATH_WRITE, &forwarded, deadline, || {
                inner.write_local(forwarded.command.clone(), size, deadline)
            })
            .await
    }

    /// Runs `f` over the catalog at the requested consistency. `f` runs under a short read
    /// lock: copy what you need out of it. Default and consistent reads fail with
    /// [`ServerError::NoLeader`] when no leader confirms them (a default read with no known
    /// leader fails at once); stale reads always answer.
    pub async fn read<R>(
        &self,
        consistency: Consistency,
        f: impl FnOnce(&Catalog) -> R,
    ) -> Result<(R, ReadMeta), ServerError> {
        let inner = match &self.role {
            Role::Server(inner) => inner,
            Role::Replica(replica) => return replica.read(consistency, f).await,
        };
        inner.ensure_open()?;
        match consistency {
            Consistency::Stale => {}
            Consistency::Consistent => inner.linearize().await?,
            Consistency::Default => match inner.leader() {
                // On a leader whose lease lapsed, confirm leadership before answering.
                Leader::Me => {
                    if inner.read_meta(consistency).1 {
                        inner.linearize().await?;
                    }
                }
                // A follower's replica may lag: the leader's read index makes the local read
                // as fresh as the leader's state, so the `leader` label stays true.
                Leader::Other(_) => inner.linearize().await?,
                // Consul answers `No cluster leader` at once; a blocking query must not wait
                // on a replica nobody is updating.
                Leader::Unknown => return Err(ServerError::NoLeader),
            },
        }
        let (meta, _) = inner.read_meta(consistency);
        let value = {
            let st = inner.shared.state.read();
            f(&st.catalog)
        };
        Ok((value, meta))
    }

    /// The current per-table indexes of the local catalog.
    pub fn indexes(&self) -> TableIndexes {
        match &self.role {
            Role::Server(inner) => inner.shared.state.read().catalog.indexes(),
            Role::Replica(replica) => replica.indexes(),
        }
    }

    /// Blocking-query wait: returns when any of `tables` moves past `index`, at `deadline`, or
    /// at shutdown; returns the max index of `tables` then.
    pub async fn wait_for_change(
        &self,
        tables: &[Table],
        index: Index,
        deadline: Instant,
    ) -> Index {
        match &self.role {
            Role::Server(inner) => {
                inner
                    .shared
                    .watches
                    .wait_for_change(tables, index, deadline, &inner.stop)
                    .await
            }
            Role::Replica(replica) => replica.wait_for_change(tables, index, deadline).await,
        }
    }

    /// Whether this server is the leader right now.
    pub fn is_leader(&self) -> bool {
        match &self.role {
            Role::Server(inner) => *inner.leadership.borrow(),
            Role::Replica(_) => false,
        }
    }

    /// Follows leadership changes (true while this server leads), e.g. to run the leader-only
    /// reconcile loop. Always false on a replica.
    pub fn leadership(&self) -> watch::Receiver<bool> {
        match &self.role {
            Role::Server(inner) => inner.leadership.clone(),
            Role::Replica(replica) => replica.leadership(),
        }
    }

    /// Waits until some leader is known, up to `deadline`; returns its id.
    pub async fn wait_for_leader(&self, deadline: Instant) -> Option<u64> {
        let inner = match &self.role {
            Role::Server(inner) => inner,
            Role::Replica(replica) => return replica.wait_for_leader(deadline).await,
        };
        let mut metrics = inner.raft.metrics();
        let found =
            tokio::time::timeout_at(deadline, metrics.wait_for(|m| m.current_leader.is_some()))
                .await;
        match found {
            Ok(Ok(m)) => m.current_leader,
            _ => None,
        }
    }

    /// The rules of the token whose secret is `secret` (`None`: no such token). Servers
    /// answer from their own state; a client agent's replica asks a server, since replicas
    /// hold no ACL state.
    pub async fn resolve_acl_token(
        &self,
        secret: &str,
    ) -> Result<Option<crate::catalog::acl::ResolvedToken>, ServerError> {
        match &self.role {
            Role::Server(inner) => inner.acl_resolve(secret),
            Role::Replica(replica) => replica.resolve_acl_token(secret).await,
        }
    }

    /// The ACL tokens and policies (a server's own; a client agent asks a server). For the
    /// `/v1/acl/*` reads, after the caller's token was authorized.
    pub async fn acl_state(&self) -> Result<crate::catalog::acl::AclState, ServerError> {
        match &self.role {
            Role::Server(inner) => inner.acl_state(),
            Role::Replica(replica) => replica.acl_state().await,
        }
    }

    /// The leader's RPC address (`/v1/status/leader`), if known.
    pub fn leader_addr(&self) -> Option<String> {
        let inner = match &self.role {
            Role::Server(inner) => inner,
            Role::Replica(replica) => return replica.leader_addr(),
        };
        match inner.leader() {
            Leader::Me => Some(inner.config.rpc_addr.clone()),
            Leader::Other(addr) => Some(addr),
            Leader::Unknown => None,
        }
    }

    /// RPC addresses of the voters (`/v1/status/peers`).
    pub fn voter_addrs(&self) -> Vec<String> {
        self.status()
            .servers
            .into_iter()
            .filter(|s| s.voter)
            .map(|s| s.rpc_addr)
            .collect()
    }

    /// A snapshot of Raft state (on a replica: what the servers last told it, with role
    /// [`RaftRole::Learner`] and node id 0).
    pub fn status(&self) -> RaftStatus {
        let inner = match &self.role {
            Role::Server(inner) => inner,
            Role::Replica(replica) => return replica.status(),
        };
        let (meta, _) = inner.read_meta(Consistency::Stale);
        let m = inner.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let servers = membership
            .nodes()
            .map(|(id, node)| ServerInfo {
                id: *id,
                name: node.name.clone(),
                rpc_addr: node.rpc_addr.clone(),
                voter: voters.contains(id),
                leader: m.current_leader == Some(*id),
            })
            .collect();
        let leader_addr = m
            .current_leader
            .and_then(|id| membership.get_node(&id))
            .map(|n| n.rpc_addr.clone());
        RaftStatus {
            node_id: inner.config.node_id,
            role: match m.state {
                ServerState::Leader => RaftRole::Leader,
                ServerState::Follower => RaftRole::Follower,
                ServerState::Candidate => RaftRole::Candidate,
                ServerState::Learner => RaftRole::Learner,
                ServerState::Shutdown => RaftRole::Shutdown,
            },
            term: m.current_term,
            last_log_index: m.last_log_index,
            commit_index: *inner.shared.committed_index.lock(),
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            leader_id: m.current_leader,
            leader_addr,
            servers,
            last_contact: meta.last_contact,
            fatal: m.running_state.as_ref().err().map(ToString::to_string),
        }
    }

    /// Stops Raft and closes the store (bounded, idempotent). Blocking queries wake up.
    pub async fn shutdown(&self) {
        let inner = match &self.role {
            Role::Server(inner) => inner,
            Role::Replica(replica) => return replica.shutdown().await,
        };
        let mut done = inner.shutdown_done.lock().await;
        if *done {
            return;
        }
        inner.stop.cancel();
        if tokio::time::timeout(SHUTDOWN_GRACE, inner.raft.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("raft did not stop within {SHUTDOWN_GRACE:?}");
        }
        let storage = inner.storage.lock().take();
        if let Some(storage) = storage
            && !storage.close(SHUTDOWN_GRACE).await
        {
            tracing::warn!("storage thread did not stop within {SHUTDOWN_GRACE:?}");
        }
        *done = true;
    }
}
