//! LAN gossip: who is in the cluster, alive, failed or left (SWIM through foca, over UDP on
//! the serf LAN port, with TCP push/pull on the same port).
//!
//! Layout:
//! - [`identity`]: the member identity foca carries, and Consul's serf tags from it;
//! - [`seal`]: the packet envelope (AES-GCM with the `encrypt` key, or plain);
//! - [`wire`]: leave intents (custom broadcasts) and the push/pull state;
//! - [`view`]: the Consul-shaped member list built from foca's notifications;
//! - [`health`]: Lifeguard (suspicion that shrinks with independent confirmations, local
//!   health awareness), which foca lacks;
//! - [`net`]: push/pull frames over TCP and join address parsing;
//! - this module: the gossip task and its handle.
//!
//! One task owns `Foca` with an `AccumulatingRuntime`. It runs on a dedicated OS thread with
//! a current-thread tokio runtime, so a busy main runtime can never delay a probe and make
//! this node look dead. Its inputs come through one bounded channel (datagrams from the UDP
//! reader, push/pull states, commands from the handle); its timers live in one ordered map
//! inside the task (fired in deadline order, none lost). After every foca call the runtime
//! is drained: datagrams are sealed and sent, timers scheduled, notifications applied to the
//! [`view::MemberView`], which is published into [`Members`] when it changes.
//!
//! Invariants: every loop turn is short (no await on I/O inside the task: sends are
//! `try_send_to`, TCP work runs in spawned tasks); everything is bounded (input channel,
//! frames, concurrent push/pull connections, intents); a node that left never processes
//! gossip again (so foca cannot revive it); packets that fail to open never reach foca and
//! are counted in [`crate::node::GossipStats`].

pub mod health;
pub mod identity;
pub mod keyring;
pub mod net;
pub mod seal;
pub mod view;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, Member, OwnedNotification, PostcardCodec, Timer};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use identity::{GossipId, initial_bump};

use crate::node::{MemberRequest, MemberStatus, Members};
use health::{Awareness, Bounds, Suspicions};
use keyring::KeyringOp;
use seal::{Channel, Sealer};
use view::MemberView;
use wire::{Accusation, Intent, IntentHandler, IntentKind, IntentQueue, Item, State};

/// Largest datagram on the wire (memberlist's UDP budget); foca's own limit is this minus
/// the envelope.
pub const MAX_DATAGRAM: usize = 1400;
/// Bound on the task's input channel; datagrams beyond it are dropped (UDP semantics).
const INPUT_QUEUE: usize = 1024;
/// Concurrent push/pull connections served.
const MAX_PUSH_PULL_CONNS: usize = 16;
/// How often the task reaps, writes the snapshot and re-sends a pending leave intent.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(200);
/// Members a joiner greets directly, beyond the addresses it joined through.
const GREET_ON_JOIN: usize = 512;
/// At most one key-mismatch warning per this interval (per agent).
const KEY_WARNING_EVERY: Duration = Duration::from_secs(10);
/// Bound on waiting for the gossip thread to end.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long confirmations of a suspicion we do not hold ourselves are remembered.
const KEEP_ACCUSATIONS: Duration = Duration::from_secs(60);

/// Failure detection timings (see `docs/gossip.md` for the choice against Consul's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Time between probes of one random member.
    pub probe_period: Duration,
    /// Time to wait for a direct ack before asking others to probe (indirect probes).
    pub probe_rtt: Duration,
    /// Members asked to probe indirectly.
    pub indirect_probes: usize,
    /// Shortest suspicion before a suspect is declared down.
    pub suspicion_min: Duration,
    /// Suspicion multiplier: `mult × log10(n) × probe_period`, at least `suspicion_min`:
    /// the suspicion once enough other members confirm it (Lifeguard's minimum).
    pub suspicion_mult: u32,
    /// A suspicion nobody else confirms lasts this many times the minimum (Lifeguard's
    /// maximum; memberlist's `SuspicionMaxTimeoutMult`, 6).
    pub suspicion_max_mult: u32,
    /// Independent confirmations that bring a suspicion down to the minimum (at most
    /// `n − 2`; memberlist: `SuspicionMult − 2`, 2).
    pub suspicion_confirmations: u32,
    /// Ceiling of the local health score (memberlist's `AwarenessMaxMultiplier`, 8).
    pub awareness_max: u32,
    /// How many times each member sends each update it learns: `mult × ⌈log10(n + 1)⌉`
    /// (memberlist's `RetransmitMult`, which is 4; see [`Timing::max_transmissions`]).
    pub retransmit_mult: u32,
    /// Periodic gossip to a few members.
    pub gossip_interval: Duration,
    /// Periodic TCP full-state exchange with one random member.
    pub push_pull_interval: Duration,
    /// How long a graceful leave lets its intent spread before foca's own leave.
    pub leave_drain: Duration,
    /// How often foca announces itself to two members it holds as down: a member that is
    /// back (a healed partition) learns it was declared down, rejoins with a new identity,
    /// and both sides see each other alive again (foca's LAN default is 65 s).
    pub down_announce_interval: Duration,
}

impl Timing {
    /// The LAN defaults: detection in about 1.5 s on a small cluster.
    pub const fn lan() -> Timing {
        Timing {
            probe_period: Duration::from_millis(400),
            probe_rtt: Duration::from_millis(200),
            indirect_probes: 3,
            suspicion_min: Duration::from_millis(700),
            suspicion_mult: 2,
            suspicion_max_mult: 6,
            suspicion_confirmations: 2,
            awareness_max: 8,
            retransmit_mult: 6,
            gossip_interval: Duration::from_millis(200),
            push_pull_interval: Duration::from_secs(30),
            leave_drain: Duration::from_secs(1),
            down_announce_interval: Duration::from_secs(2),
        }
    }

    /// The suspicion time for a cluster of `n` members.
    pub fn suspicion(&self, n: u32) -> Duration {
        let scaled = self
            .probe_period
            .mul_f64(f64::from(self.suspicion_mult) * f64::from(n.max(1)).log10());
        scaled.max(self.suspicion_min)
    }

    /// Lifeguard's suspicion bounds for a cluster of `n` members.
    pub fn bounds(&self, n: u32) -> Bounds {
        let min = self.suspicion(n);
        Bounds {
            min,
            max: min * self.suspicion_max_mult.max(1),
            k: self.suspicion_confirmations.min(n.saturating_sub(2)),
        }
    }

    /// Sends per update for a cluster of `n` members. Higher than memberlist's 4 × ⌈log10⌉:
    /// during a join storm the cluster is small when the first updates are queued, and a
    /// member that misses one hears of it only from the next push/pull, 30 s later.
    pub fn max_transmissions(&self, n: u32) -> u8 {
        let log = f64::from(n.saturating_add(1)).log10().ceil();
        let tx = (f64::from(self.retransmit_mult) * log).clamp(1.0, f64::from(u8::MAX));
        // In range by the clamp.
        tx as u8
    }
}

/// What the gossip task needs (built by the runtime from the configuration).
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// This agent's identity (see [`GossipId::from_node`]).
    pub identity: GossipId,
    /// The primary gossip key (the keyring file's first key, else `encrypt`).
    pub key: Option<Vec<u8>>,
    /// The keyring's other keys (a rotation in progress).
    pub secondary_keys: Vec<Vec<u8>>,
    /// Where keyring changes are saved (`data_dir/serf/local.keyring`).
    pub keyring_file: Option<PathBuf>,
    /// `encrypt_verify_incoming`.
    pub verify_incoming: bool,
    /// `encrypt_verify_outgoing`.
    pub verify_outgoing: bool,
    /// `retry_join` (with `start_join` and `-join`).
    pub retry_join: Vec<String>,
    /// Time between join attempts.
    pub retry_interval: Duration,
    /// Join attempts before giving up (0: until joined).
    pub retry_max: u32,
    /// Rejoin the snapshot's peers after a graceful leave.
    pub rejoin_after_leave: bool,
    /// How long failed members are listed.
    pub reconnect_timeout: Duration,
    /// How long left members are listed.
    pub tombstone_timeout: Duration,
    /// Where the known peers are kept for an automatic rejoin (`data_dir/serf/local.snapshot`).
    pub snapshot: Option<PathBuf>,
    /// Failure detection timings.
    pub timing: Timing,
}

/// Why a join failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// No address could be contacted; one message per address.
    #[error("{}", .0.join("; "))]
    NoneContacted(Vec<String>),
    /// Gossip has stopped.
    #[error("gossip is not running")]
    Stopped,
}

/// Commands from the handle.
enum Command {
    Join(Vec<String>, oneshot::Sender<Result<usize, JoinError>>),
    Leave(oneshot::Sender<()>),
    ForceLeave(String, bool, oneshot::Sender<Result<(), String>>),
    /// Test hook: drop incoming datagrams (a one-way partition).
    DropIncoming(bool),
}

/// Everything the task reacts to.
enum Input {
    Data(Vec<u8>),
    /// A peer's state from push/pull (either side); `reply` wants ours (server side).
    Remote(State, Option<oneshot::Sender<Vec<u8>>>),
    /// Announce to an address learned by a join.
    Announce(SocketAddr),
    Cmd(Command),
}

/// The handle to a running gossip task.
#[derive(Debug, Clone)]
pub struct GossipHandle {
    tx: mpsc::Sender<Input>,
    done: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    stop: CancellationToken,
    local: SocketAddr,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Input")
    }
}

impl GossipHandle {
    /// The bound gossip address (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Joins the cluster through `addrs` (push/pull with each, then an announce). Returns
    /// how many addresses answered; fails only when none did (Consul's `join`).
    pub async fn join(&self, addrs: Vec<String>) -> Result<usize, JoinError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Input::Cmd(Command::Join(addrs, reply)))
            .await
            .map_err(|_| JoinError::Stopped)?;
        rx.await.map_err(|_| JoinError::Stopped)?
    }

    /// Leaves gracefully: the others list this agent as `left`. Returns once the leave
    /// was sent (after the bounded drain), or at once if gossip has stopped.
    pub async fn leave(&self) {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Input::Cmd(Command::Leave(reply)))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Moves a failed member to `left` (or forgets it with `prune`), everywhere.
    pub async fn force_leave(&self, node: &str, prune: bool) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Input::Cmd(Command::ForceLeave(
                node.to_owned(),
                prune,
                reply,
            )))
            .await
            .map_err(|_| "gossip is not running".to_owned())?;
        rx.await.map_err(|_| "gossip is not running".to_owned())?
    }

    /// For tests and diagnostics: drop every incoming datagram (TCP push/pull still works),
    /// as a one-way network partition would.
    pub async fn drop_incoming(&self, on: bool) {
        let _ = self.tx.send(Input::Cmd(Command::DropIncoming(on))).await;
    }

    /// Stops gossip without leaving (as a crash looks to the others) and waits (bounded)
    /// for the gossip thread to end.
    pub async fn stop(&self) {
        self.stop.cancel();
        let handle = self.done.lock().take();
        if let Some(h) = handle {
            let wait = tokio::task::spawn_blocking(move || h.join());
            if tokio::time::timeout(STOP_GRACE, wait).await.is_err() {
                tracing::warn!("the gossip thread did not stop within {STOP_GRACE:?}");
            }
        }
    }
}

/// Starts gossip on the bound `udp` socket and `tcp` listener (same port), publishing the
/// member list into `members` and answering its join/force-leave requests. Runs until
/// `shutdown` is cancelled or [`GossipHandle::stop`].
pub fn start(
    cfg: GossipConfig,
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    members: Members,
    shutdown: CancellationToken,
) -> std::io::Result<GossipHandle> {
    udp.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    let local = udp.local_addr()?;
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    let (req_tx, req_rx) = mpsc::channel(16);
    members.attach(req_tx);
    let stop = shutdown.child_token();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("gossip")
        .build()?;
    let task_tx = tx.clone();
    let task_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("gossip".to_owned())
        .spawn(move || {
            rt.block_on(async move {
                let udp = match UdpSocket::from_std(udp) {
                    Ok(s) => Arc::new(s),
                    Err(e) => return tracing::error!(error = %e, "gossip: UDP socket unusable"),
                };
                let tcp = match TcpListener::from_std(tcp) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!(error = %e, "gossip: TCP listener unusable"),
                };
                let task = GossipTask::new(cfg, udp, members, task_tx, task_stop);
                task.run(rx, req_rx, tcp).await;
            });
        })?;
    Ok(GossipHandle {
        tx,
        done: Arc::new(Mutex::new(Some(thread))),
        stop,
        local,
    })
}

type FocaT = Foca<GossipId, PostcardCodec, StdRng, IntentHandler>;

/// A graceful leave in progress.
struct Leaving {
    until: Instant,
    replies: Vec<oneshot::Sender<()>>,
}

struct GossipTask {
    cfg: GossipConfig,
    foca: FocaT,
    rt: AccumulatingRuntime<GossipId>,
    intents: IntentQueue,
    view: MemberView,
    members: Members,
    sealer: Arc<Sealer>,
    udp: Arc<UdpSocket>,
    tx: mpsc::Sender<Input>,
    stop: CancellationToken,
    timers: BTreeMap<(Instant, u64), Timer<GossipId>>,
    timer_seq: u64,
    suspicions: Suspicions,
    awareness: Awareness,
    /// A probe of ours failed since the last probe cycle started.
    probe_failed: bool,
    /// Our incarnation as last seen in what we sent (a rise is a refutation).
    incarnation: Option<u16>,
    cluster_size: u32,
    leaving: Option<Leaving>,
    left: bool,
    drop_incoming: bool,
    last_key_warning: Arc<Mutex<Option<Instant>>>,
    snapshot_peers: Vec<SocketAddr>,
    keyring_lock: Arc<tokio::sync::Mutex<()>>,
}

fn foca_config(timing: &Timing, n: u32, overhead: usize) -> foca::Config {
    let mut c = foca::Config::new_lan(NonZeroU32::new(n.max(1)).expect("n >= 1"));
    c.probe_period = timing.probe_period;
    c.probe_rtt = timing.probe_rtt;
    c.num_indirect_probes = NonZeroUsize::new(timing.indirect_probes.max(1)).expect("max(1)");
    // The gossip task holds foca's suspicion timers and fires them between the bounds'
    // min and max (`health`); foca's own value is only what it schedules them with.
    c.suspect_to_down_after = timing.bounds(n).max;
    c.max_transmissions = NonZeroU8::new(timing.max_transmissions(n)).expect("at least 1");
    c.max_packet_size = NonZeroUsize::new(MAX_DATAGRAM - overhead).expect("positive");
    if let Some(g) = &mut c.periodic_gossip {
        g.frequency = timing.gossip_interval;
    }
    if let Some(a) = &mut c.periodic_announce_to_down_members {
        a.frequency = timing.down_announce_interval;
    }
    c
}

impl GossipTask {
    fn new(
        cfg: GossipConfig,
        udp: Arc<UdpSocket>,
        members: Members,
        tx: mpsc::Sender<Input>,
        stop: CancellationToken,
    ) -> GossipTask {
        let keys: Vec<Vec<u8>> = cfg.key.iter().chain(&cfg.secondary_keys).cloned().collect();
        let sealer = Arc::new(Sealer::with_keyring(
            &keys,
            cfg.verify_incoming,
            cfg.verify_outgoing,
        ));
        let intents = IntentQueue::default();
        let foca = Foca::with_custom_broadcast(
            cfg.identity.clone(),
            foca_config(&cfg.timing, 1, seal::OVERHEAD),
            rand::make_rng::<StdRng>(),
            PostcardCodec,
            IntentHandler::new(intents.clone()),
        );
        let view = MemberView::new(cfg.identity.clone(), Instant::now());
        members
            .stats()
            .encrypted
            .store(sealer.seals(), Ordering::Relaxed);
        GossipTask {
            foca,
            rt: AccumulatingRuntime::new(),
            intents,
            view,
            members,
            sealer,
            udp,
            tx,
            stop,
            timers: BTreeMap::new(),
            timer_seq: 0,
            suspicions: Suspicions::default(),
            awareness: Awareness::new(cfg.timing.awareness_max),
            probe_failed: false,
            incarnation: None,
            cluster_size: 1,
            leaving: None,
            left: false,
            drop_incoming: false,
            last_key_warning: Arc::new(Mutex::new(None)),
            snapshot_peers: Vec::new(),
            keyring_lock: Arc::new(tokio::sync::Mutex::new(())),
            cfg,
        }
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Input>,
        mut requests: mpsc::Receiver<MemberRequest>,
        tcp: TcpListener,
    ) {
        tokio::spawn(udp_reader(
            self.udp.clone(),
            self.sealer.clone(),
            self.tx.clone(),
            self.members.clone(),
            self.last_key_warning.clone(),
            self.stop.clone(),
        ));
        tokio::spawn(push_pull_server(
            tcp,
            self.keyring_changer(),
            self.sealer.clone(),
            self.tx.clone(),
            self.members.clone(),
            self.last_key_warning.clone(),
            self.stop.clone(),
        ));
        self.publish();
        self.start_joining();
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING_EVERY);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut push_pull = tokio::time::interval_at(
            Instant::now() + self.cfg.timing.push_pull_interval,
            self.cfg.timing.push_pull_interval,
        );
        push_pull.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_timer = self.timers.keys().next().map(|(at, _)| *at);
            let next_suspicion = self.suspicions.next_deadline(&self.bounds());
            let next_timer = match (next_timer, next_suspicion) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                _ = sleep_until(next_timer) => self.fire_timers(),
                input = rx.recv() => match input {
                    Some(input) => self.handle(input),
                    None => break,
                },
                Some(req) = requests.recv() => self.handle_request(req),
                _ = housekeeping.tick() => self.housekeeping(),
                _ = push_pull.tick() => self.start_push_pull(),
            }
            self.drain();
        }
        tracing::debug!("gossip stopped");
    }

    /// Fires every due timer, oldest first (foca needs them all, in order).
    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            if self.left {
                continue;
            }
            let probe_cycle = matches!(timer, Timer::ProbeRandomMember(_));
            if probe_cycle {
                // foca reports the previous probe's failure while it starts the next one.
                self.probe_failed = false;
            }
            if let Err(e) = self.foca.handle_timer(timer, &mut self.rt) {
                tracing::debug!(error = %e, "gossip timer");
            }
            self.drain();
            if probe_cycle && !self.probe_failed {
                self.awareness.probe_succeeded();
            }
        }
        // Suspicions that ran out (enough confirmations, or none and the maximum passed).
        for timer in self.suspicions.due(now, &self.bounds()) {
            if self.left {
                break;
            }
            if let Timer::ChangeSuspectToDown {
                member_id,
                incarnation,
                ..
            } = &timer
            {
                // foca sends `TurnUndead` to the member whenever the timer's member still
                // exists, even when it refuted the suspicion meanwhile (foca 2.0), which
                // makes a healthy member think it was declared down and rejoin. Only a
                // suspicion that still stands goes back to foca.
                let stands = self.foca.iter_membership_state().any(|m| {
                    m.id() == member_id
                        && m.state() == foca::State::Suspect
                        && m.incarnation() == *incarnation
                });
                tracing::debug!(
                    member = %member_id.name,
                    confirmations = self.suspicions.confirmations(&member_id.name),
                    refuted = !stands,
                    "gossip: suspicion ran out"
                );
                if !stands {
                    continue;
                }
            }
            if let Err(e) = self.foca.handle_timer(timer, &mut self.rt) {
                tracing::debug!(error = %e, "gossip suspicion timer");
            }
            self.drain();
        }
    }

    /// Lifeguard's suspicion bounds for the current cluster size.
    fn bounds(&self) -> Bounds {
        self.cfg.timing.bounds(self.cluster_size)
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Data(data) => {
                if self.left || self.drop_incoming {
                    return;
                }
                if let Err(e) = self.foca.handle_data(&data, &mut self.rt) {
                    tracing::trace!(error = %e, "gossip datagram refused");
                }
            }
            Input::Remote(state, reply) => {
                if let Some(reply) = reply {
                    let _ = reply.send(self.local_state().encode());
                }
                if !self.left {
                    self.apply_remote(state);
                }
            }
            Input::Announce(addr) => {
                if !self.left && addr != self.view.me().addr {
                    let dst = GossipId {
                        addr,
                        name: "(join)".to_owned(),
                        bump: 0,
                        ..self.view.me().clone()
                    };
                    if let Err(e) = self.foca.announce(dst, &mut self.rt) {
                        tracing::debug!(error = %e, %addr, "gossip announce");
                    }
                }
            }
            Input::Cmd(cmd) => self.command(cmd),
        }
    }

    fn keyring_changer(&self) -> KeyringChanger {
        KeyringChanger {
            sealer: self.sealer.clone(),
            file: self.cfg.keyring_file.clone(),
            lock: self.keyring_lock.clone(),
        }
    }

    fn handle_request(&mut self, req: MemberRequest) {
        match req {
            MemberRequest::Join { addrs, reply } => {
                let (tx, rx) = oneshot::channel();
                self.command(Command::Join(addrs, tx));
                tokio::spawn(async move {
                    let out = match rx.await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => Err(JoinError::Stopped.to_string()),
                    };
                    let _ = reply.send(out);
                });
            }
            MemberRequest::Keyring { op, reply } => {
                // Every alive member but us, by its gossip address; we apply it locally.
                let me = self.cfg.identity.name.clone();
                let peers: Vec<(String, SocketAddr)> = self
                    .view
                    .members()
                    .into_iter()
                    .filter(|m| m.name != me && m.status == MemberStatus::Alive)
                    .map(|m| (m.name, SocketAddr::new(m.addr, m.port)))
                    .collect();
                let (changer, sealer) = (self.keyring_changer(), self.sealer.clone());
                tokio::spawn(async move {
                    let _ = reply.send(keyring_everywhere(op, me, peers, changer, sealer).await);
                });
            }
            MemberRequest::ForceLeave { node, prune, reply } => {
                let (tx, rx) = oneshot::channel();
                self.command(Command::ForceLeave(node, prune, tx));
                tokio::spawn(async move {
                    let out = rx
                        .await
                        .unwrap_or_else(|_| Err("gossip is not running".to_owned()));
                    let _ = reply.send(out);
                });
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Join(addrs, reply) => {
                if self.left {
                    let _ = reply.send(Err(JoinError::NoneContacted(vec![
                        "this agent has left the cluster".to_owned(),
                    ])));
                    return;
                }
                let state = self.local_state().encode();
                let (sealer, tx) = (self.sealer.clone(), self.tx.clone());
                tokio::spawn(async move {
                    let _ = reply.send(join(addrs, state, sealer, tx).await);
                });
            }
            Command::Leave(reply) => self.leave(reply),
            Command::ForceLeave(node, prune, reply) => {
                let out = match self.view.force_leave_intent(&node, prune) {
                    Ok(intent) => {
                        tracing::info!(node, prune, "force-leave");
                        self.broadcast_intent(&intent);
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                };
                let _ = reply.send(out);
            }
            Command::DropIncoming(on) => self.drop_incoming = on,
        }
    }

    /// Applies an intent here and spreads it.
    fn broadcast_intent(&mut self, intent: &Intent) {
        if let Err(e) = self.foca.add_broadcast(&intent.encode()) {
            tracing::warn!(error = %e, "gossip: cannot queue a leave intent");
        }
        if let Err(e) = self.foca.broadcast(&mut self.rt) {
            tracing::debug!(error = %e, "gossip broadcast");
        }
        // add_broadcast runs our own handler, which queued it for the view (drained below).
    }

    fn leave(&mut self, reply: oneshot::Sender<()>) {
        if self.left {
            let _ = reply.send(());
            return;
        }
        if let Some(l) = &mut self.leaving {
            l.replies.push(reply);
            return;
        }
        let me = self.view.me().clone();
        tracing::info!(node = %me.name, "gossip: leaving the cluster");
        self.broadcast_intent(&Intent {
            kind: IntentKind::Leave,
            name: me.name.clone(),
            bump: me.bump,
        });
        self.view.set_me(me, MemberStatus::Leaving, Instant::now());
        self.publish();
        // Alone, there is nobody to tell: finish at once.
        let drain = if self.foca.num_members() == 0 {
            Duration::ZERO
        } else {
            self.cfg.timing.leave_drain
        };
        self.leaving = Some(Leaving {
            until: Instant::now() + drain,
            replies: vec![reply],
        });
        self.housekeeping();
    }

    fn finish_leave(&mut self) {
        let Some(leaving) = self.leaving.take() else {
            return;
        };
        // Left from here on: foca's own "we are down now" notification is expected.
        self.left = true;
        if let Err(e) = self.foca.leave_cluster(&mut self.rt) {
            tracing::warn!(error = %e, "gossip: leave");
        }
        self.drain();
        let me = self.view.me().clone();
        self.view.set_me(me, MemberStatus::Left, Instant::now());
        self.publish();
        self.write_snapshot(true);
        tracing::info!("gossip: left the cluster");
        for r in leaving.replies {
            let _ = r.send(());
        }
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        if let Some(l) = &self.leaving {
            if now >= l.until {
                self.finish_leave();
            } else if let Err(e) = self.foca.broadcast(&mut self.rt) {
                // Re-send the intent to a few more members while the drain lasts.
                tracing::debug!(error = %e, "gossip broadcast");
            }
        }
        if self
            .view
            .reap(now, self.cfg.reconnect_timeout, self.cfg.tombstone_timeout)
        {
            self.publish();
        }
        self.suspicions.forget_older_than(now, KEEP_ACCUSATIONS);
        self.members
            .stats()
            .health_score
            .store(u64::from(self.awareness.score()), Ordering::Relaxed);
    }

    /// Our full state for push/pull: foca's members, ourselves, and the intents.
    fn local_state(&self) -> State {
        let mut members: Vec<Member<GossipId>> =
            self.foca.iter_membership_state().cloned().collect();
        if !self.left {
            members.push(Member::alive(self.foca.identity().clone()));
        }
        State {
            members,
            intents: self.view.intents(),
        }
    }

    fn apply_remote(&mut self, state: State) {
        let now = Instant::now();
        let me = self.foca.identity().clone();
        let mut changed = false;
        for intent in &state.intents {
            changed |= self.view.intent(intent, now);
        }
        // Down members foca never knew raise no notification; list them as Consul would.
        for m in &state.members {
            if m.state() == foca::State::Down
                && self.view.status(&m.id().name).is_none()
                && m.id().name != me.name
            {
                changed |= self.view.down(m.id(), now);
            }
        }
        let updates = state.members.into_iter().filter(|m| m.id() != &me);
        if let Err(e) = self.foca.apply_many(updates, true, &mut self.rt) {
            tracing::debug!(error = %e, "gossip: push/pull state");
        }
        if changed {
            self.publish();
        }
    }

    /// A periodic push/pull with one random alive member.
    fn start_push_pull(&mut self) {
        if self.left {
            return;
        }
        let peers: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        if peers.is_empty() {
            return;
        }
        let peer = peers[rand::random_range(0..peers.len())];
        let state = self.local_state().encode();
        let (sealer, tx) = (self.sealer.clone(), self.tx.clone());
        tokio::spawn(async move {
            match net::exchange(peer, &sealer, &state).await {
                Ok(reply) => match State::decode(&reply) {
                    Ok(remote) => {
                        let _ = tx.send(Input::Remote(remote, None)).await;
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "push/pull"),
                },
                Err(e) => tracing::debug!(%peer, error = %e, "push/pull"),
            }
        });
    }

    /// The join loop: `retry_join` plus the snapshot's peers, every `retry_interval` until a
    /// member is seen or `retry_max` attempts failed.
    fn start_joining(&mut self) {
        let mut targets = self.cfg.retry_join.clone();
        if let Some(path) = &self.cfg.snapshot {
            match read_snapshot(path) {
                Ok(Some(snap)) if snap.left && !self.cfg.rejoin_after_leave => {
                    tracing::info!(
                        "gossip: not rejoining the snapshot's peers: this agent left gracefully \
                         (set rejoin_after_leave to rejoin)"
                    );
                }
                Ok(Some(snap)) => {
                    targets.extend(snap.peers.iter().map(ToString::to_string));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "gossip snapshot"),
            }
        }
        if targets.is_empty() {
            return;
        }
        let (tx, stop, members, me) = (
            self.tx.clone(),
            self.stop.clone(),
            self.members.clone(),
            self.cfg.identity.name.clone(),
        );
        let (interval, max) = (self.cfg.retry_interval, self.cfg.retry_max);
        tokio::spawn(async move {
            let joined = || {
                members
                    .current()
                    .iter()
                    .any(|m| m.name != me && m.status == MemberStatus::Alive)
            };
            let mut attempt = 0u32;
            loop {
                if joined() {
                    return;
                }
                attempt += 1;
                let (reply, rx) = oneshot::channel();
                if tx
                    .send(Input::Cmd(Command::Join(targets.clone(), reply)))
                    .await
                    .is_err()
                {
                    return;
                }
                match rx.await {
                    Ok(Ok(n)) => {
                        tracing::info!(contacted = n, "gossip: join completed");
                        return;
                    }
                    Ok(Err(e)) => tracing::warn!(attempt, error = %e, "gossip: join failed"),
                    Err(_) => return,
                }
                if max > 0 && attempt >= max {
                    tracing::error!(attempts = attempt, "gossip: max join retry exhausted");
                    return;
                }
                // Between attempts, announce cheaply and often: a peer that comes up
                // later is found within a second, not a whole retry_interval.
                let until = Instant::now() + interval;
                while Instant::now() < until {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1).min(interval)) => {}
                    }
                    if joined() {
                        return;
                    }
                    for t in &targets {
                        if let Ok(addrs) = net::resolve(t).await {
                            for a in addrs {
                                let _ = tx.try_send(Input::Announce(a));
                            }
                        }
                    }
                }
            }
        });
    }

    /// Drains foca's runtime: sends, timers, notifications, then queued intents and
    /// accusations; our own new suspicions are accused (broadcast) and drained again.
    fn drain(&mut self) {
        loop {
            while let Some((dst, data)) = self.rt.to_send() {
                let packet = self.sealer.seal(Channel::Udp, &data);
                if let Err(e) = self.udp.try_send_to(&packet, dst.addr) {
                    tracing::trace!(error = %e, dst = %dst.addr, "gossip send");
                }
            }
            let now = Instant::now();
            let mut accuse = Vec::new();
            while let Some((after, timer)) = self.rt.to_schedule() {
                let after = match &timer {
                    Timer::ChangeSuspectToDown { .. } => {
                        if let Some(a) = self.suspicion_started(timer, now) {
                            accuse.push(a);
                        }
                        continue;
                    }
                    // Local health awareness: an unhealthy agent probes more slowly and
                    // waits longer for acks.
                    Timer::ProbeRandomMember(_) | Timer::SendIndirectProbe { .. } => {
                        self.awareness.scale(after)
                    }
                    _ => after,
                };
                self.timer_seq += 1;
                self.timers.insert((now + after, self.timer_seq), timer);
            }
            let mut changed = false;
            while let Some(n) = self.rt.to_notify() {
                changed |= self.notify(n, now);
            }
            let items: Vec<Item> = self.intents.lock().drain(..).collect();
            for item in &items {
                match item {
                    Item::Intent(i) => changed |= self.view.intent(i, now),
                    Item::Accusation(a) => {
                        self.suspicions.confirm(a, &self.view.me().name, now);
                    }
                }
            }
            if changed {
                self.publish();
                self.resize();
            }
            if accuse.is_empty() {
                break;
            }
            for a in &accuse {
                if let Err(e) = self.foca.add_broadcast(&a.encode()) {
                    tracing::debug!(error = %e, "gossip: cannot queue an accusation");
                }
            }
            if let Err(e) = self.foca.broadcast(&mut self.rt) {
                tracing::debug!(error = %e, "gossip broadcast");
            }
        }
    }

    /// foca suspects a member (our probe of it failed): hold its timer (see [`health`]);
    /// the accusation to spread when this is a new suspicion of ours.
    fn suspicion_started(&mut self, timer: Timer<GossipId>, now: Instant) -> Option<Accusation> {
        let Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        } = &timer
        else {
            return None;
        };
        let accusation = Accusation {
            name: member_id.name.clone(),
            bump: member_id.bump,
            incarnation: *incarnation,
            accuser: self.view.me().name.clone(),
        };
        if !self.suspicions.start(timer, now) {
            return None;
        }
        self.members
            .stats()
            .suspicions
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(member = %accusation.name, incarnation = accusation.incarnation, "gossip: suspect");
        Some(accusation)
    }

    fn notify(&mut self, n: OwnedNotification<GossipId>, now: Instant) -> bool {
        match n {
            OwnedNotification::MemberUp(id) => {
                tracing::info!(member = %id.name, addr = %id.addr, "gossip: member alive");
                self.view.up(&id, now)
            }
            OwnedNotification::MemberDown(id) => {
                let changed = self.view.down(&id, now);
                if changed {
                    let status = self.view.status(&id.name).map_or("down", |s| s.as_str());
                    tracing::info!(member = %id.name, addr = %id.addr, status, "gossip: member down");
                }
                changed
            }
            OwnedNotification::Rename(old, new) => {
                tracing::info!(member = %new.name, old = old.bump, new = new.bump, "gossip: member restarted");
                self.view.up(&new, now)
            }
            OwnedNotification::Rejoin(id) => {
                tracing::warn!(
                    "gossip: this agent was declared down; rejoined with a new identity"
                );
                self.view.set_me(id, MemberStatus::Alive, now)
            }
            OwnedNotification::Defunct => {
                if !self.left && self.leaving.is_none() {
                    tracing::warn!("gossip: this agent was declared down by the cluster");
                }
                false
            }
            OwnedNotification::Active => {
                tracing::debug!("gossip: connected to the cluster");
                false
            }
            OwnedNotification::Idle => {
                tracing::debug!("gossip: no other member reachable");
                false
            }
            OwnedNotification::ProbeFailed(_, id) => {
                tracing::debug!(member = %id.name, "gossip: probe failed");
                self.probe_failed = true;
                self.awareness.probe_failed();
                self.members
                    .stats()
                    .probes_failed
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
            OwnedNotification::DataSent(header) => {
                // foca raises its incarnation only to refute a suspicion about us.
                let now_at = header.src_incarnation;
                if let Some(before) = self.incarnation
                    && now_at > before
                {
                    tracing::debug!(
                        incarnation = now_at,
                        "gossip: refuted a suspicion about this agent"
                    );
                    self.awareness.refuted();
                    self.members.stats().refuted.fetch_add(1, Ordering::Relaxed);
                }
                self.incarnation = Some(now_at);
                false
            }
            OwnedNotification::DataReceived(_) => false,
        }
    }

    /// Re-tunes foca when the cluster size changes (suspicion and retransmits grow with it).
    fn resize(&mut self) {
        let n = u32::try_from(self.foca.num_members() + 1).unwrap_or(u32::MAX);
        if n == self.cluster_size {
            return;
        }
        self.cluster_size = n;
        let cfg = foca_config(&self.cfg.timing, n, seal::OVERHEAD);
        if let Err(e) = self.foca.set_config(cfg) {
            tracing::warn!(error = %e, "gossip: cannot apply the config for {n} members");
        }
    }

    fn publish(&mut self) {
        self.members.set(self.view.members());
        if !self.left && self.leaving.is_none() {
            self.write_snapshot(false);
        }
    }

    /// Keeps the alive peers in the snapshot file (only rewritten when they change).
    fn write_snapshot(&mut self, left: bool) {
        let Some(path) = &self.cfg.snapshot else {
            return;
        };
        let mut peers = self.view.peer_addrs();
        peers.sort();
        // An agent alone (just started, not joined yet) keeps its previous peers.
        if !left && (peers.is_empty() || peers == self.snapshot_peers) {
            return;
        }
        if left {
            peers = self.snapshot_peers.clone();
        } else {
            self.snapshot_peers = peers.clone();
        }
        if let Err(e) = write_snapshot_file(path, &peers, left) {
            tracing::warn!(path = %path.display(), error = %e, "gossip: cannot write the snapshot");
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Logs a key mismatch at most once per [`KEY_WARNING_EVERY`].
fn warn_key(last: &Mutex<Option<Instant>>, from: SocketAddr, e: &seal::OpenError) {
    let now = Instant::now();
    let mut last = last.lock();
    if last.is_none_or(|t| now.duration_since(t) >= KEY_WARNING_EVERY) {
        *last = Some(now);
        tracing::warn!(
            "gossip packet from {from} {e}; check that every agent has the same encrypt key \
             (further mismatches are counted in /v1/agent/self Stats.serf_lan)"
        );
    }
}

fn count_open_error(members: &Members, e: &seal::OpenError) {
    let stats = members.stats();
    if e.is_key_mismatch() {
        stats.dropped_key.fetch_add(1, Ordering::Relaxed);
    } else {
        stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
    }
}

async fn udp_reader(
    udp: Arc<UdpSocket>,
    sealer: Arc<Sealer>,
    tx: mpsc::Sender<Input>,
    members: Members,
    last_warn: Arc<Mutex<Option<Instant>>>,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM * 2];
    loop {
        let (n, from) = tokio::select! {
            _ = stop.cancelled() => return,
            r = udp.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors surface here on some systems; they are not fatal.
                    tracing::trace!(error = %e, "gossip recv");
                    continue;
                }
            },
        };
        match sealer.open(Channel::Udp, &mut buf[..n]) {
            Ok(payload) => {
                if tx.try_send(Input::Data(payload.to_vec())).is_err() {
                    members
                        .stats()
                        .dropped_queue
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                count_open_error(&members, &e);
                if e.is_key_mismatch() {
                    warn_key(&last_warn, from, &e);
                }
            }
        }
    }
}

/// Applies keyring operations to this agent: one at a time, saved before they take effect.
#[derive(Clone)]
struct KeyringChanger {
    sealer: Arc<Sealer>,
    file: Option<PathBuf>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl KeyringChanger {
    async fn apply(&self, op: &KeyringOp) -> Result<Vec<Vec<u8>>, String> {
        let _one_at_a_time = self.lock.lock().await;
        let next = keyring::apply(&self.sealer.keyring(), op)?;
        if *op != KeyringOp::List {
            if let Some(file) = self.file.clone() {
                let keys = next.clone();
                // A blocking fsync, off the gossip thread's runtime.
                tokio::task::spawn_blocking(move || keyring::save(&file, &keys))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("cannot save the keyring: {e}"))?;
            }
            self.sealer.set_keyring(&next);
            tracing::info!(keys = next.len(), "gossip keyring changed");
        }
        Ok(next)
    }
}

/// Runs `op` here and on every peer at once; one answer per member, this agent first.
async fn keyring_everywhere(
    op: KeyringOp,
    me: String,
    peers: Vec<(String, SocketAddr)>,
    changer: KeyringChanger,
    sealer: Arc<Sealer>,
) -> keyring::KeyringAnswers {
    let mut out = vec![(me, changer.apply(&op).await)];
    let request = keyring::encode_request(&op);
    let asks = peers.into_iter().map(|(name, addr)| {
        let (sealer, request) = (sealer.clone(), request.clone());
        async move {
            let answer = match net::exchange(addr, &sealer, &request).await {
                Ok(reply) => keyring::decode_reply(&reply),
                Err(e) => Err(e.to_string()),
            };
            (name, answer)
        }
    });
    out.extend(futures::future::join_all(asks).await);
    out
}

async fn push_pull_server(
    listener: TcpListener,
    changer: KeyringChanger,
    sealer: Arc<Sealer>,
    tx: mpsc::Sender<Input>,
    members: Members,
    last_warn: Arc<Mutex<Option<Instant>>>,
    stop: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(MAX_PUSH_PULL_CONNS));
    loop {
        let (mut stream, from) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "gossip accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            continue;
        };
        let (sealer, tx, members, last_warn, changer) = (
            sealer.clone(),
            tx.clone(),
            members.clone(),
            last_warn.clone(),
            changer.clone(),
        );
        tokio::spawn(async move {
            let _permit = permit;
            let work = async {
                let payload = match net::read_frame(&mut stream, &sealer).await {
                    Ok(p) => p,
                    Err(net::ExchangeError::Open(e)) => {
                        count_open_error(&members, &e);
                        if e.is_key_mismatch() {
                            warn_key(&last_warn, from, &e);
                        }
                        return;
                    }
                    Err(e) => return tracing::debug!(%from, error = %e, "push/pull"),
                };
                // A keyring operation from a member (it holds one of our keys: the frame
                // opened), answered with our keyring after it.
                if payload.first() == Some(&keyring::REQUEST_TAG) {
                    let result = match keyring::decode_request(&payload) {
                        Ok(op) => changer.apply(&op).await,
                        Err(e) => Err(e),
                    };
                    let reply = keyring::encode_reply(&result);
                    if let Err(e) = net::write_frame(&mut stream, &sealer, &reply).await {
                        tracing::debug!(%from, error = %e, "keyring reply");
                    }
                    return;
                }
                let remote = match State::decode(&payload) {
                    Ok(s) => s,
                    Err(e) => return tracing::debug!(%from, error = %e, "push/pull"),
                };
                let (reply, rx) = oneshot::channel();
                if tx.send(Input::Remote(remote, Some(reply))).await.is_err() {
                    return;
                }
                if let Ok(ours) = rx.await
                    && let Err(e) = net::write_frame(&mut stream, &sealer, &ours).await
                {
                    tracing::debug!(%from, error = %e, "push/pull reply");
                }
            };
            let _ = tokio::time::timeout(net::EXCHANGE_TIMEOUT, work).await;
        });
    }
}

/// Contacts every address: push/pull (full state both ways), then a UDP announce.
async fn join(
    addrs: Vec<String>,
    state: Vec<u8>,
    sealer: Arc<Sealer>,
    tx: mpsc::Sender<Input>,
) -> Result<usize, JoinError> {
    let mut contacted = 0;
    let mut errors = Vec::new();
    let mut seeds = BTreeSet::new();
    let mut learned = BTreeSet::new();
    for addr in &addrs {
        let resolved = match net::resolve(addr).await {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("Error joining address '{addr}': {e}"));
                continue;
            }
        };
        let mut ok = false;
        let mut last_error = String::new();
        for sa in resolved {
            match net::exchange(sa, &sealer, &state).await {
                Ok(reply) => match State::decode(&reply) {
                    Ok(remote) => {
                        learned.extend(
                            remote
                                .members
                                .iter()
                                .filter(|m| m.state() != foca::State::Down)
                                .map(|m| m.id().addr),
                        );
                        let _ = tx.send(Input::Remote(remote, None)).await;
                        let _ = tx.send(Input::Announce(sa)).await;
                        seeds.insert(sa);
                        ok = true;
                        break;
                    }
                    Err(e) => last_error = e.to_string(),
                },
                Err(e) => last_error = e.to_string(),
            }
        }
        if ok {
            contacted += 1;
        } else {
            errors.push(format!("Error joining address '{addr}': {last_error}"));
        }
    }
    if contacted == 0 && !addrs.is_empty() {
        return Err(JoinError::NoneContacted(errors));
    }
    // Greet every member the seeds listed: each adds us at once (a message from an unknown
    // sender makes it a member in foca), instead of waiting for the seeds' updates to reach
    // it; a member the updates miss would otherwise not hear of us until the next push/pull
    // or our probe, up to n × probe period later.
    for addr in learned.difference(&seeds).take(GREET_ON_JOIN) {
        let _ = tx.send(Input::Announce(*addr)).await;
    }
    for e in &errors {
        tracing::warn!("gossip: {e}");
    }
    Ok(contacted)
}

/// A parsed snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Alive peers when it was written.
    pub peers: Vec<SocketAddr>,
    /// Whether the agent left gracefully afterwards.
    pub left: bool,
}

const SNAPSHOT_HEADER: &str = "# muster serf snapshot v1";

/// Reads a snapshot (`None` when there is none). Unknown lines are ignored (newer versions).
pub fn read_snapshot(path: &std::path::Path) -> std::io::Result<Option<Snapshot>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut snap = Snapshot {
        peers: Vec::new(),
        left: false,
    };
    for line in text.lines().take(10_000) {
        match line.split_once(' ') {
            Some(("alive", addr)) => {
                if let Ok(a) = addr.trim().parse() {
                    snap.peers.push(a);
                }
            }
            _ if line.trim() == "leave" => snap.left = true,
            _ => {}
        }
    }
    Ok(Some(snap))
}

fn write_snapshot_file(
    path: &std::path::Path,
    peers: &[SocketAddr],
    left: bool,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = format!("{SNAPSHOT_HEADER}\n");
    for p in peers {
        text.push_str(&format!("alive {p}\n"));
    }
    if left {
        text.push_str("leave\n");
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lan_timing_detects_within_budget_and_scales() {
        let t = Timing::lan();
        assert_eq!(t.suspicion(3), Duration::from_millis(700));
        assert_eq!(t.suspicion(5), Duration::from_millis(700));
        assert!(t.suspicion(100) > Duration::from_millis(1500));
        let c = foca_config(&t, 5, seal::OVERHEAD);
        assert_eq!(c.max_packet_size.get(), MAX_DATAGRAM - seal::OVERHEAD);
        assert_eq!(c.probe_period, Duration::from_millis(400));
        // A confirmed suspicion: probe + one period to suspect + the minimum stays under
        // 1.5 s; a lone one waits six times the minimum for a refutation.
        let b = t.bounds(5);
        assert_eq!((b.min, b.k), (Duration::from_millis(700), 2));
        assert!(c.probe_period * 2 + b.min <= Duration::from_millis(1500));
        assert_eq!(c.suspect_to_down_after, b.max);
        assert_eq!(b.max, Duration::from_millis(4200));
        // Expected confirmations are capped by the members that can give them.
        assert_eq!(t.bounds(3).k, 1);
        assert_eq!(t.bounds(2).k, 0);
        assert_eq!(t.bounds(2).timeout(0), t.bounds(2).min);
        // Retransmits: 6 × ⌈log10(n + 1)⌉, never 0, capped at u8.
        assert_eq!(c.max_transmissions.get(), 6);
        assert_eq!(t.max_transmissions(50), 12);
        assert_eq!(t.max_transmissions(1000), 24);
        let quiet = Timing {
            retransmit_mult: 0,
            ..t
        };
        assert_eq!(quiet.max_transmissions(3), 1);
        let loud = Timing {
            retransmit_mult: 1000,
            ..t
        };
        assert_eq!(loud.max_transmissions(3), u8::MAX);
    }

    #[test]
    fn snapshot_round_trip_and_leave_marker() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serf/local.snapshot");
        assert_eq!(read_snapshot(&path).unwrap(), None);
        let peers: Vec<SocketAddr> = vec!["10.0.0.1:8301".parse().unwrap()];
        write_snapshot_file(&path, &peers, false).unwrap();
        let snap = read_snapshot(&path).unwrap().unwrap();
        assert_eq!(snap.peers, peers);
        assert!(!snap.left);
        write_snapshot_file(&path, &peers, true).unwrap();
        assert!(read_snapshot(&path).unwrap().unwrap().left);
        std::fs::write(&path, "# v9\nfuture line\nalive 10.0.0.2:1\n").unwrap();
        let snap = read_snapshot(&path).unwrap().unwrap();
        assert_eq!(snap.peers, ["10.0.0.2:1".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn fuzz_corpus_and_regressions_of_gossip_decoders() {
        let sealer = Sealer::new(Some(b"0123456789abcdef0123456789abcdef"), true, true);
        for (_, data) in crate::fuzz_inputs("gossip_packet") {
            for channel in [Channel::Udp, Channel::Tcp] {
                let mut packet = data.clone();
                let _ = sealer.open(channel, &mut packet);
            }
            let _ = State::decode(&data);
            let _ = Intent::decode(&data);
            let _ = GossipId::decode(&data);
            let _ = keyring::decode_request(&data);
            let _ = keyring::decode_reply(&data);
        }
    }
}
