//! [`CatalogReplica::start`]: the streaming task that keeps a client agent's replica current,
//! and [`ReplicaHandle`], the reads, writes and waits behind a replica's `ServerHandle`.
//!
//! Server choice: the task streams from one server of the list it is given (a `watch` of
//! `ip:port` RPC addresses, fed from gossip by the agent), starting at a random one so
//! clients spread out. It stays there while exchanges succeed, and moves to the next one when
//! an exchange fails, when the server says it is behind the replica, or when the server has
//! reported no leader for [`LEADERLESS_SWITCH`] replies in a row. After a full round of
//! failures it backs off (up to [`MAX_BACKOFF`]). It resumes from its position on whatever
//! server it reaches, so a reconnect costs no snapshot unless the server's ring no longer
//! reaches back that far.
//!
//! When the server it streams from says it is the leader and another server is listed, the
//! task moves to the next one: the leader has every write to do, and a replica fed by a
//! follower keeps streaming while the leader dies and the others elect a new one. (A
//! follower a little behind the replica just holds the long poll until it catches up.) After
//! a switch for want of a leader it stays wherever it lands for [`STAY_AFTER_LEADERLESS`],
//! so a partition that leaves only the leader reachable cannot make it go round in circles.
//!
//! Under a stream of writes every long poll would come back with one change, and each
//! exchange (an HTTP request on both sides) cost more than applying the change. After a
//! reply that carried changes the task therefore waits [`REPOLL_GAP`] before asking again,
//! so the next reply carries everything in between: a replica trails a busy leader by at
//! most that much more. A write made through this agent cuts the wait short (it waits for
//! its own entry, read-your-writes), and an idle replica still gets each change at once.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::state::{Applied, ReplicaState, prepare};
use super::wire::{PATH_STREAM, StreamReply, StreamRequest, WireServer};
use crate::catalog::command::Command;
use crate::catalog::model::Index;
use crate::catalog::{Catalog, Table, TableIndexes};
use crate::config::RpcTls;
use crate::error::ServerError;
use crate::raft::{
    AclResolve, Consistency, ForwardError, ForwardWrite, PATH_ACL_RESOLVE, PATH_ACL_STATE,
    PATH_READ_INDEX, PATH_WRITE, PostError, RaftRole, RaftStatus, ReadMeta, Reply, RpcClient,
    ServerHandle, ServerInfo, WriteOutcome, encode_request, error_chain,
};
use crate::watch::TableWatches;

/// Largest stream reply accepted (a snapshot of a big catalog is the largest).
const MAX_STREAM_BODY: usize = 64 * 1024 * 1024;
/// Time allowed for a stream reply beyond its long poll.
const STREAM_MARGIN: Duration = Duration::from_secs(5);
/// Replies without a leader after which the task tries another server.
const LEADERLESS_SWITCH: u32 = 3;
/// How long the task does not move off the leader after a switch for want of a leader.
const STAY_AFTER_LEADERLESS: Duration = Duration::from_secs(60);
/// Longest pause between rounds of failed attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// First pause after a round of failures.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Pause between RPC attempts while no leader answers.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Pause after a reply with changes before the next poll, so that changes arriving
/// meanwhile share one exchange.
pub(crate) const REPOLL_GAP: Duration = Duration::from_millis(10);
/// How long a write waits for its own entry to reach the replica (read-your-writes here).
const WRITE_VISIBLE_WAIT: Duration = Duration::from_secs(2);
/// Bound on shutdown's wait for the streaming task.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Bound on establishing a connection to a server (a dead host must not eat the whole
/// `rpc_hold_timeout` of a write).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound on one write or read-index attempt; the next attempt may go to another server.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// The client for server RPCs: the servers' own client, with bounded connects and keepalive
/// so a dead peer's pooled connection fails.
fn replica_http_client(tls: Option<&RpcTls>) -> Result<RpcClient, String> {
    crate::raft::http_client_with(tls, |b| {
        b.tcp_keepalive(Duration::from_secs(10))
            .connect_timeout(CONNECT_TIMEOUT)
    })
}

/// Settings of a client agent's replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// This agent's datacenter: written on registrations that name none, and servers of
    /// another datacenter refuse to stream.
    pub datacenter: String,
    /// How long a write or a default/consistent read waits for a leader (Consul's
    /// `rpc_hold_timeout`).
    pub rpc_hold_timeout: Duration,
    /// Long-poll bound of one stream request: with nothing new, the server answers after this
    /// long, which refreshes the replica's contact time (`X-Consul-LastContact`, DNS
    /// `max_stale`).
    pub poll_wait: Duration,
    /// TLS for the RPCs to servers (`https://` with the agent's certificate); `None`: plain
    /// HTTP.
    pub rpc_tls: Option<RpcTls>,
}

impl ReplicaConfig {
    /// Defaults for a LAN: `rpc_hold_timeout` 7 s (Consul's), a 1 s long poll.
    pub fn new(datacenter: impl Into<String>) -> ReplicaConfig {
        ReplicaConfig {
            datacenter: datacenter.into(),
            rpc_hold_timeout: Duration::from_secs(7),
            poll_wait: Duration::from_secs(1),
            rpc_tls: None,
        }
    }
}

/// Entry point of a client agent's replica.
pub struct CatalogReplica;

impl CatalogReplica {
    /// Starts streaming from the servers in `servers` (RPC addresses, `ip:port`; the list may
    /// be empty and change at any time). Nothing is bound. The replica stops when `shutdown`
    /// is cancelled or on [`ServerHandle::shutdown`].
    pub fn start(
        config: ReplicaConfig,
        servers: watch::Receiver<Vec<String>>,
        shutdown: CancellationToken,
    ) -> Result<ServerHandle, ServerError> {
        if config.rpc_hold_timeout.is_zero() || config.poll_wait.is_zero() {
            return Err(ServerError::Config(
                "rpc_hold_timeout and poll_wait must be positive".into(),
            ));
        }
        let client = replica_http_client(config.rpc_tls.as_ref()).map_err(ServerError::Config)?;
        let state = ReplicaState::default();
        let shared = Arc::new(Shared {
            watches: TableWatches::new(state.catalog.indexes()),
            state: RwLock::new(state),
            applied: watch::Sender::new(0),
            leader: watch::Sender::new(None),
            leadership: watch::Sender::new(false),
            link: Mutex::new(Link::default()),
            servers: servers.clone(),
            client,
            stop: shutdown.child_token(),
            task: tokio::sync::Mutex::new(None),
            started: Instant::now(),
            eager: tokio::sync::Notify::new(),
            config,
        });
        let task = tokio::spawn(stream_task(shared.clone(), servers));
        // Not contended yet: the handle is not out.
        if let Ok(mut slot) = shared.task.try_lock() {
            *slot = Some(task);
        }
        Ok(ServerHandle::from_replica(ReplicaHandle { shared }))
    }
}

/// What the task last learned from a server.
#[derive(Debug, Default)]
struct Link {
    /// Whether the last exchange with a server succeeded.
    connected: bool,
    leader_id: Option<u64>,
    leader_addr: Option<String>,
    servers: Vec<WireServer>,
    /// When the replica was last known current: a reply's arrival minus the server's own
    /// time since it heard from the leader.
    contact: Option<Instant>,
}

struct Shared {
    config: ReplicaConfig,
    /// Written only by the streaming task, in short sections.
    state: RwLock<ReplicaState>,
    watches: TableWatches,
    /// The replica's applied log index, published after each update.
    applied: watch::Sender<u64>,
    /// The leader's Raft id as last reported (for `wait_for_leader`).
    leader: watch::Sender<Option<u64>>,
    /// Always false: a replica never leads. Kept so receivers stay open.
    leadership: watch::Sender<bool>,
    link: Mutex<Link>,
    servers: watch::Receiver<Vec<String>>,
    client: RpcClient,
    stop: CancellationToken,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    started: Instant,
    /// Woken by a local write waiting for its entry: ends a [`REPOLL_GAP`] at once.
    eager: tokio::sync::Notify,
}

/// The replica behind a client agent's `ServerHandle`. Cheap to clone.
#[derive(Clone)]
pub(crate) struct ReplicaHandle {
    shared: Arc<Shared>,
}

/// A failed RPC attempt.
enum Attempt {
    /// The server could not be reached at all.
    Unreachable(String),
    /// Reached, but the exchange failed (the request may have been handled).
    Transport(String),
    /// No answer in time (the request may have been handled).
    TimedOut(String),
    /// The server answered with an error.
    Remote(ForwardError),
}

impl From<PostError> for Attempt {
    fn from(e: PostError) -> Attempt {
        match e {
            PostError::Connect { .. } => Attempt::Unreachable(e.to_string()),
            other => Attempt::Transport(other.to_string()),
        }
    }
}

impl Shared {
    fn ensure_open(&self) -> Result<(), ServerError> {
        if self.stop.is_cancelled() {
            return Err(ServerError::ShuttingDown);
        }
        Ok(())
    }

    /// POSTs one request to `addr`, reading at most [`MAX_STREAM_BODY`] bytes of reply.
    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, Attempt> {
        let body = encode_request(addr, body)?;
        let mut resp = self
            .client
            .client
            .post(self.client.url(addr, path))
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                let text = error_chain(&e);
                if e.is_connect() {
                    Attempt::Unreachable(format!("cannot connect to {addr}: {text}"))
                } else if e.is_timeout() {
                    Attempt::TimedOut(format!("request to {addr} timed out: {text}"))
                } else {
                    Attempt::Transport(format!("request to {addr} failed: {text}"))
                }
            })?;
        let status = resp.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            Attempt::Transport(format!("reading the reply of {addr}: {}", error_chain(&e)))
        })? {
            if bytes.len() + chunk.len() > MAX_STREAM_BODY {
                return Err(Attempt::Transport(format!(
                    "the reply of {addr} exceeds {MAX_STREAM_BODY} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            return Err(Attempt::Transport(format!(
                "{addr} answered HTTP {status}: {text}"
            )));
        }
        let reply: Reply<Result<T, ForwardError>> = serde_json::from_slice(&bytes)
            .map_err(|e| Attempt::Transport(format!("cannot decode the reply of {addr}: {e}")))?;
        reply.result.map_err(Attempt::Remote)
    }

    /// Sends a request to the leader: first to the leader the stream reported, else to the
    /// servers in turn, following "not leader" redirects, retrying across elections until
    /// `deadline`. `NoServers` when no server is known or none could be reached.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        deadline: Instant,
    ) -> Result<T, ServerError> {
        let mut target = self.link.lock().leader_addr.clone();
        let mut turn = rand::random::<u32>() as usize;
        let mut reached = false;
        let mut unreachable: Vec<String> = Vec::new();
        let mut last_error: Option<ServerError> = None;
        loop {
            self.ensure_open()?;
            let servers = self.servers.borrow().clone();
            let addr = match target.take() {
                Some(addr) => addr,
                None if servers.is_empty() => return Err(ServerError::NoServers),
                None => {
                    turn = turn.wrapping_add(1);
                    servers[turn % servers.len()].clone()
                }
            };
            let budget = deadline
                .saturating_duration_since(Instant::now())
                .min(ATTEMPT_TIMEOUT);
            let attempt = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Err(ServerError::ShuttingDown),
                a = self.post::<B, T>(&addr, path, body, budget) => a,
            };
            match attempt {
                Ok(value) => return Ok(value),
                Err(Attempt::Remote(ForwardError::NotLeader {
                    leader: Some(leader),
                })) if leader != addr => {
                    // Straight to the leader, without a pause.
                    reached = true;
                    target = Some(leader);
                    continue;
                }
                Err(Attempt::Remote(e)) if e.is_retryable() => {
                    reached = true;
                    last_error = Some(e.into_server_error());
                }
                Err(Attempt::Remote(e)) => return Err(e.into_server_error()),
                Err(Attempt::Unreachable(e)) => {
                    tracing::debug!(error = %e, "server unreachable");
                    if !unreachable.contains(&addr) {
                        unreachable.push(addr);
                    }
                    // Every known server refused the connection: say so at once, as Consul
                    // does when it has no server to talk to.
                    if !reached && servers.iter().all(|s| unreachable.contains(s)) {
                        return Err(ServerError::NoServers);
                    }
                }
                Err(Attempt::Transport(e)) => {
                    tracing::debug!(error = %e, "RPC to a server failed");
                    reached = true;
                    last_error = Some(ServerError::Rpc(e));
                }
                Err(Attempt::TimedOut(e)) => {
                    tracing::debug!(error = %e, "RPC to a server timed out");
                    reached = true;
                    // A write may have committed (indeterminate); a read just had no leader.
                    last_error = Some(if path == PATH_WRITE {
                        ServerError::Timeout
                    } else {
                        ServerError::NoLeader
                    });
                }
            }
            let until = (Instant::now() + RETRY_PAUSE).min(deadline);
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = self.stop.cancelled() => return Err(ServerError::ShuttingDown),
            }
            if Instant::now() >= deadline {
                return Err(match last_error {
                    _ if !reached => ServerError::NoServers,
                    Some(e @ (ServerError::Rpc(_) | ServerError::Timeout)) => e,
                    _ => ServerError::NoLeader,
                });
            }
        }
    }

    /// Waits until the replica has applied `index` (bounded by `deadline`).
    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), ServerError> {
        let mut rx = self.applied.subscribe();
        self.eager.notify_one();
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => Err(ServerError::ShuttingDown),
            r = tokio::time::timeout_at(deadline, rx.wait_for(|a| *a >= index)) => match r {
                Ok(Ok(_)) => Ok(()),
                // The stream did not bring the entry in time: as a server's follower does.
                Ok(Err(_)) | Err(_) => Err(ServerError::NoLeader),
            },
        }
    }

    fn meta(&self, consistency: Consistency) -> ReadMeta {
        let link = self.link.lock();
        ReadMeta {
            known_leader: link.connected && link.leader_id.is_some(),
            last_contact: link
                .contact
                .map_or_else(|| self.started.elapsed(), |c| c.elapsed()),
            consistency,
        }
    }

    /// Takes in one stream reply from `addr`; returns what it did.
    fn absorb(&self, addr: &str, reply: StreamReply, received: Instant) -> Absorbed {
        let StreamReply {
            leader_id,
            leader_addr,
            servers,
            last_contact_ms,
            update,
        } = reply;
        let prepared = match prepare(update) {
            Ok(p) => p,
            Err(e) => return Absorbed::Broken(format!("snapshot from {addr}: {e}")),
        };
        let (applied, indexes, index) = {
            let mut st = self.state.write();
            let applied = st.apply(prepared);
            (applied, st.catalog.indexes(), st.applied_index())
        };
        // Wake waiters after the lock is released, so they see the new state.
        self.watches.publish(indexes);
        self.applied
            .send_if_modified(|a| std::mem::replace(a, index) != index);
        self.leader
            .send_if_modified(|l| std::mem::replace(l, leader_id) != leader_id);
        {
            let mut link = self.link.lock();
            link.connected = true;
            link.leader_id = leader_id;
            link.leader_addr = leader_addr;
            link.servers = servers;
            if leader_id.is_some() {
                let lag = Duration::from_millis(last_contact_ms);
                let at = received.checked_sub(lag).unwrap_or(received);
                link.contact = Some(link.contact.map_or(at, |c| c.max(at)));
            }
        }
        match applied {
            Applied::Current if leader_id.is_some() => Absorbed::Current,
            Applied::Current => Absorbed::Leaderless,
            Applied::Behind => Absorbed::Behind,
            Applied::Gap => Absorbed::Broken(format!("{addr} sent entries that do not follow")),
        }
    }

    fn disconnected(&self) {
        self.link.lock().connected = false;
    }

    /// Forgets the position: the next request asks for a snapshot.
    fn resync(&self) {
        self.state.write().position = None;
    }
}

/// What a reply did to the replica.
enum Absorbed {
    /// Applied; the server knows a leader.
    Current,
    /// Applied; the server knows no leader.
    Leaderless,
    /// The server has applied less than the replica.
    Behind,
    /// Unusable (bad snapshot, entries with a gap).
    Broken(String),
}

/// Which server to stream from.
#[derive(Debug)]
struct Rotation {
    current: Option<String>,
    next: usize,
}

impl Rotation {
    /// The current server while it is listed, else the next one in turn.
    fn pick(&mut self, servers: &[String]) -> Option<String> {
        if servers.is_empty() {
            return None;
        }
        if let Some(c) = &self.current
            && servers.contains(c)
        {
            return Some(c.clone());
        }
        let addr = servers[self.next % servers.len()].clone();
        self.next = self.next.wrapping_add(1);
        self.current = Some(addr.clone());
        Some(addr)
    }

    /// Moves on at the next pick.
    fn skip(&mut self) {
        self.current = None;
    }

    /// Moves from `leader` to the listed server after it, when there is another one.
    /// Returns whether it moved.
    fn leave(&mut self, leader: &str, servers: &[String]) -> bool {
        let Some(at) = servers.iter().position(|s| s == leader) else {
            return false;
        };
        if servers.len() < 2 {
            return false;
        }
        self.current = Some(servers[(at + 1) % servers.len()].clone());
        true
    }
}

/// Exponential backoff after `rounds` full rounds of failures.
fn backoff(rounds: u32) -> Duration {
    MIN_BACKOFF
        .saturating_mul(1 << rounds.min(8))
        .min(MAX_BACKOFF)
}

/// The streaming task: the only writer of the replica.
async fn stream_task(shared: Arc<Shared>, mut servers: watch::Receiver<Vec<String>>) {
    let mut rotation = Rotation {
        current: None,
        next: rand::random::<u32>() as usize,
    };
    let mut failures = 0usize;
    let mut rounds = 0u32;
    let mut behind = 0usize;
    let mut leaderless = 0u32;
    let mut leaderless_switch: Option<Instant> = None;
    let mut last_warning: Option<Instant> = None;
    loop {
        if shared.stop.is_cancelled() {
            break;
        }
        let list = servers.borrow_and_update().clone();
        let Some(addr) = rotation.pick(&list) else {
            shared.disconnected();
            tokio::select! {
                biased;
                _ = shared.stop.cancelled() => break,
                changed = servers.changed() => if changed.is_err() {
                    // Nobody will ever tell us of a server: wait for shutdown.
                    shared.stop.cancelled().await;
                    break;
                },
            }
            continue;
        };
        let request = StreamRequest {
            after: shared.state.read().position,
            wait_ms: u64::try_from(shared.config.poll_wait.as_millis()).unwrap_or(u64::MAX),
            datacenter: shared.config.datacenter.clone(),
        };
        let timeout = shared.config.poll_wait + STREAM_MARGIN;
        let result = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => break,
            r = shared.post::<_, StreamReply>(&addr, PATH_STREAM, &request, timeout) => r,
        };
        let carried = matches!(&result, Ok(reply) if reply.update.carries_changes());
        let problem = match result {
            Ok(reply) => match shared.absorb(&addr, reply, Instant::now()) {
                Absorbed::Current => {
                    (failures, rounds, behind, leaderless) = (0, 0, 0, 0);
                    let on_leader =
                        shared.link.lock().leader_addr.as_deref() == Some(addr.as_str());
                    if on_leader
                        && leaderless_switch.is_none_or(|t| t.elapsed() >= STAY_AFTER_LEADERLESS)
                        && rotation.leave(&addr, &list)
                    {
                        tracing::debug!(leader = %addr, "catalog replica: moving to a follower");
                    }
                    if carried {
                        tokio::select! {
                            biased;
                            _ = shared.stop.cancelled() => break,
                            _ = shared.eager.notified() => {}
                            _ = tokio::time::sleep(REPOLL_GAP) => {}
                        }
                    }
                    continue;
                }
                Absorbed::Leaderless => {
                    (failures, rounds, behind) = (0, 0, 0);
                    leaderless += 1;
                    if leaderless >= LEADERLESS_SWITCH && list.len() > 1 {
                        // Perhaps only this server is cut off: try another.
                        leaderless = 0;
                        leaderless_switch = Some(Instant::now());
                        rotation.skip();
                    }
                    continue;
                }
                Absorbed::Behind => {
                    behind += 1;
                    rotation.skip();
                    if behind > list.len() {
                        // Every server is behind us: their log was reset; start over.
                        tracing::warn!(
                            "every server has applied less than this replica; taking a snapshot"
                        );
                        shared.resync();
                        behind = 0;
                    }
                    format!("{addr} is behind this replica")
                }
                Absorbed::Broken(e) => {
                    shared.resync();
                    rotation.skip();
                    e
                }
            },
            Err(Attempt::Remote(e)) => {
                rotation.skip();
                format!("{addr} refused to stream: {}", e.into_server_error())
            }
            Err(Attempt::Unreachable(e) | Attempt::Transport(e) | Attempt::TimedOut(e)) => {
                rotation.skip();
                e
            }
        };
        shared.disconnected();
        failures += 1;
        let now = Instant::now();
        if last_warning.is_none_or(|t| now - t >= Duration::from_secs(30)) {
            tracing::warn!(error = %problem, "catalog replica: streaming from a server failed; trying another");
            last_warning = Some(now);
        } else {
            tracing::debug!(error = %problem, "catalog replica: streaming failed");
        }
        if failures >= list.len().max(1) {
            // A full round failed: back off before the next one.
            failures = 0;
            let pause = backoff(rounds);
            rounds = rounds.saturating_add(1);
            tokio::select! {
                biased;
                _ = shared.stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
    shared.disconnected();
}

impl ReplicaHandle {
    /// Writes through the leader (see the module docs), then waits briefly until the replica
    /// has the entry, so this agent reads its own writes.
    pub(crate) async fn write(&self, mut command: Command) -> Result<WriteOutcome, ServerError> {
        let shared = &self.shared;
        shared.ensure_open()?;
        command.normalize();
        if let Command::Register(r) = &mut command
            && r.datacenter.is_empty()
        {
            r.datacenter = shared.config.datacenter.clone();
        }
        command.validate().map_err(ServerError::Validation)?;
        let deadline = Instant::now() + shared.config.rpc_hold_timeout;
        let outcome: WriteOutcome = shared
            .call(PATH_WRITE, &ForwardWrite { command }, deadline)
            .await?;
        let visible_by = deadline.min(Instant::now() + WRITE_VISIBLE_WAIT);
        if shared
            .wait_applied(outcome.index, visible_by)
            .await
            .is_err()
        {
            tracing::debug!(
                index = outcome.index,
                "the replica did not catch up with a write in time"
            );
        }
        Ok(outcome)
    }

    /// Asks a server for a token's rules (replicas hold no ACL state).
    pub(crate) async fn resolve_acl_token(
        &self,
        secret: &str,
    ) -> Result<Option<crate::catalog::acl::ResolvedToken>, ServerError> {
        let shared = &self.shared;
        shared.ensure_open()?;
        let deadline = Instant::now() + shared.config.rpc_hold_timeout;
        let request = AclResolve {
            secret: secret.to_owned(),
        };
        shared.call(PATH_ACL_RESOLVE, &request, deadline).await
    }

    /// Asks a server for the ACL state.
    pub(crate) async fn acl_state(&self) -> Result<crate::catalog::acl::AclState, ServerError> {
        let shared = &self.shared;
        shared.ensure_open()?;
        let deadline = Instant::now() + shared.config.rpc_hold_timeout;
        let mut state: crate::catalog::acl::AclState =
            shared.call(PATH_ACL_STATE, &(), deadline).await?;
        // The secret index is not on the wire.
        state.reindex();
        Ok(state)
    }

    /// Reads the replica at `consistency` (see the module docs).
    pub(crate) async fn read<R>(
        &self,
        consistency: Consistency,
        f: impl FnOnce(&Catalog) -> R,
    ) -> Result<(R, ReadMeta), ServerError> {
        let shared = &self.shared;
        shared.ensure_open()?;
        if consistency != Consistency::Stale {
            if consistency == Consistency::Default {
                let link = shared.link.lock();
                // As a server's default read: no known leader fails at once.
                if link.connected && link.leader_id.is_none() {
                    return Err(ServerError::NoLeader);
                }
            }
            let deadline = Instant::now() + shared.config.rpc_hold_timeout;
            let index: u64 = shared.call(PATH_READ_INDEX, &(), deadline).await?;
            shared.wait_applied(index, deadline).await?;
        }
        let mut meta = shared.meta(consistency);
        if consistency != Consistency::Stale {
            // The leader just vouched for this state: as fresh as a read on the leader.
            meta.known_leader = true;
            meta.last_contact = Duration::ZERO;
        }
        let value = {
            let st = shared.state.read();
            f(&st.catalog)
        };
        Ok((value, meta))
    }

    pub(crate) fn indexes(&self) -> TableIndexes {
        self.shared.state.read().catalog.indexes()
    }

    pub(crate) async fn wait_for_change(
        &self,
        tables: &[Table],
        index: Index,
        deadline: Instant,
    ) -> Index {
        self.shared
            .watches
            .wait_for_change(tables, index, deadline, &self.shared.stop)
            .await
    }

    pub(crate) fn leadership(&self) -> watch::Receiver<bool> {
        self.shared.leadership.subscribe()
    }

    pub(crate) async fn wait_for_leader(&self, deadline: Instant) -> Option<u64> {
        let mut rx = self.shared.leader.subscribe();
        match tokio::time::timeout_at(deadline, rx.wait_for(Option::is_some)).await {
            Ok(Ok(id)) => *id,
            _ => None,
        }
    }

    /// The leader's RPC address, while a server is reachable.
    pub(crate) fn leader_addr(&self) -> Option<String> {
        let link = self.shared.link.lock();
        if link.connected {
            link.leader_addr.clone()
        } else {
            None
        }
    }

    pub(crate) fn status(&self) -> RaftStatus {
        let shared = &self.shared;
        let position = shared.state.read().position;
        let meta = shared.meta(Consistency::Stale);
        let link = shared.link.lock();
        let applied = position.map(|p| p.index);
        RaftStatus {
            node_id: 0,
            role: RaftRole::Learner,
            term: position.map_or(0, |p| p.term),
            last_log_index: applied,
            commit_index: applied,
            applied_index: applied,
            snapshot_index: None,
            leader_id: link.leader_id.filter(|_| link.connected),
            leader_addr: link.leader_addr.clone().filter(|_| link.connected),
            servers: link
                .servers
                .iter()
                .map(|s| ServerInfo {
                    id: s.id,
                    name: s.name.clone(),
                    rpc_addr: s.rpc_addr.clone(),
                    voter: s.voter,
                    leader: link.leader_id == Some(s.id),
                })
                .collect(),
            last_contact: meta.last_contact,
            fatal: None,
        }
    }

    /// Stops the streaming task (bounded, idempotent); blocking queries wake up.
    pub(crate) async fn shutdown(&self) {
        self.shared.stop.cancel();
        let task = self.shared.task.lock().await.take();
        if let Some(task) = task
            && tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err()
        {
            tracing::warn!("the catalog replica did not stop within {SHUTDOWN_GRACE:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    /// A rotation whose first pick is server `next` of the list.
    fn starting_at(next: usize) -> Rotation {
        Rotation {
            current: None,
            next,
        }
    }

    #[test]
    fn rotation_keeps_a_listed_server_and_moves_on_when_told() {
        let mut r = starting_at(1);
        assert_eq!(r.pick(&[]), None);
        let three = list(&["a", "b", "c"]);
        assert_eq!(r.pick(&three).as_deref(), Some("b"));
        assert_eq!(r.pick(&three).as_deref(), Some("b"), "sticky");
        r.skip();
        assert_eq!(r.pick(&three).as_deref(), Some("c"));
        // The current server left the list: the next one in turn.
        assert_eq!(r.pick(&list(&["a", "b"])).as_deref(), Some("b"));
    }

    #[test]
    fn rotation_leaves_the_leader_for_the_next_listed_server() {
        let mut r = starting_at(2);
        let three = list(&["a", "b", "c"]);
        assert_eq!(r.pick(&three).as_deref(), Some("c"));
        assert!(r.leave("c", &three));
        assert_eq!(
            r.pick(&three).as_deref(),
            Some("a"),
            "wraps around, then sticks"
        );
        assert_eq!(r.pick(&three).as_deref(), Some("a"));
        // Alone, or not listed: stays.
        assert!(!r.leave("a", &list(&["a"])));
        assert!(!r.leave("x", &three));
        assert_eq!(r.pick(&three).as_deref(), Some("a"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), MIN_BACKOFF);
        assert_eq!(backoff(1), MIN_BACKOFF * 2);
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
