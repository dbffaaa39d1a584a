//! `muster agent`: start-up, the runtime task, reload, leave and shutdown.
//!
//! [`Agent::start`] brings an agent up from a loaded configuration, in this order: data dir,
//! node ID and pid file; every listener bound (HTTP, DNS, server RPC; nothing serves yet); the
//! catalog server (Raft) and its RPC router, or on a client agent the catalog replica
//! streamed from the servers in the member list; the member list, written by gossip (its own
//! thread, on the serf LAN port), and the leader's reconcile loop; local state (services, checks, anti-entropy); DNS
//! with its catalog publisher; the HTTP API. [`Agent::run`] is the runtime task: it owns the
//! configuration swaps, reloads (SIGHUP, `PUT /v1/agent/reload`), graceful leaves and
//! shutdown. [`run_agent_command`] is the binary's `muster agent`: logging, banner, the
//! `==> muster ready:` line, signals.
//!
//! Invariants:
//! - one task (the one running [`Agent::run`]) changes process-wide state; the API asks it
//!   through `AgentControl`;
//! - shutdown is ordered and bounded ([`SHUTDOWN_GRACE`] per stage; Raft has its own bound):
//!   stop accepting HTTP and DNS, stop checks and anti-entropy, leave if asked, drain HTTP and
//!   DNS, shut Raft down, remove the pid file; a second SIGINT/SIGTERM exits at once;
//! - a reload either applies as a whole or not at all (the old configuration stays and the
//!   error is logged and returned).

pub mod cluster;
mod dns;
mod identity;
mod leader;
mod listeners;
pub mod logging;
mod members;
mod replica;
pub mod rpc;
pub mod syslog;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use muster_dns::{DnsCatalog, DnsServer, SharedCatalog};
use muster_server::{CatalogServer, ReconcileContext, ServerConfig, ServerHandle};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use dns::{build_dns_catalog, dns_config};
pub use identity::{NODE_ID_FILE, advertise_addr, load_or_create_node_id};
pub use leader::RECONCILE_INTERVAL;
pub use listeners::BoundAddrs;
pub use logging::LogHandle;
pub use members::{
    PROTOCOL_MAX, PROTOCOL_MIN, PROTOCOL_VERSION, RAFT_PROTOCOL, build_tag, revision, self_member,
    self_tags,
};

use crate::config::{self, AgentArgs, DevDataDir, LoadedConfig, RuntimeConfig};
use crate::http::{self, HttpContext};
use crate::local::LocalState;
use crate::node::{AgentControl, ControlRequest, MemberStatus, Members, NodeIdentity};

/// Bound on each shutdown stage (HTTP/DNS drain, local state, server RPC).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Bound on the catalog writes of a graceful leave.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the runtime checks that Raft has not stopped on a fatal error.
const WATCHDOG_EVERY: Duration = Duration::from_secs(5);

/// A start-up failure, with a message that names what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

/// How an in-process agent is run.
#[derive(Debug, Default)]
pub struct AgentOptions {
    /// The logging handle, so reloads can change the level (`None` when the caller owns
    /// logging, as tests do).
    pub log: Option<LogHandle>,
}

/// How the runtime stops: leave first when `leave`, answer `reply` once the leave is done,
/// exit with `code`.
struct Stop {
    leave: bool,
    reply: Option<oneshot::Sender<()>>,
    code: i32,
}

impl Stop {
    fn new(leave: bool, code: i32) -> Stop {
        Stop {
            leave,
            reply: None,
            code,
        }
    }
}

/// A started agent. Everything serves; [`Agent::run`] drives it until shutdown.
pub struct Agent {
    args: AgentArgs,
    config: Arc<ArcSwap<RuntimeConfig>>,
    node: NodeIdentity,
    bootstrap: bool,
    addrs: BoundAddrs,
    members: Members,
    gossip: Option<crate::gossip::GossipHandle>,
    control: AgentControl,
    control_rx: mpsc::Receiver<ControlRequest>,
    catalog: Option<ServerHandle>,
    local: LocalState,
    dns: Option<DnsServer>,
    log: Option<LogHandle>,
    reconcile_ctx: ReconcileContext,
    /// HTTP, DNS, the DNS publisher and the leader loop.
    front: CancellationToken,
    front_tasks: TaskTracker,
    /// Local state (checks, anti-entropy).
    local_stop: CancellationToken,
    /// Raft and its RPC listener.
    server_stop: CancellationToken,
    server_tasks: TaskTracker,
    fatal_tx: mpsc::Sender<String>,
    fatal_rx: mpsc::Receiver<String>,
    pid_file: Option<identity::PidFile>,
    dev_dir: Option<DevDataDir>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("node", &self.node)
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

/// What is torn down if start-up fails half-way.
struct Partial {
    front: CancellationToken,
    local_stop: CancellationToken,
    server_stop: CancellationToken,
    catalog: Option<ServerHandle>,
}

impl Partial {
    async fn abort(self, error: String) -> StartError {
        self.front.cancel();
        self.local_stop.cancel();
        if let Some(c) = &self.catalog {
            c.shutdown().await;
        }
        self.server_stop.cancel();
        StartError(error)
    }
}

/// The Raft timings for `performance.raft_multiplier`: the server crate's LAN defaults are
/// taken as Consul's default multiplier (5) and scaled linearly, with floors that keep a
/// loaded 2-core machine from electing spuriously. Multiplier 1 is the fastest, 10 the most
/// tolerant (as in Consul).
pub fn raft_timings(multiplier: u32, base: &ServerConfig) -> (Duration, Duration, Duration) {
    let m = multiplier.clamp(1, 10);
    let scale = |d: Duration| d * m / 5;
    let heartbeat = scale(base.heartbeat_interval).max(Duration::from_millis(50));
    let election_min = scale(base.election_timeout_min).max(Duration::from_millis(150));
    let election_max =
        scale(base.election_timeout_max).max(election_min + Duration::from_millis(100));
    (heartbeat, election_min, election_max)
}

impl Agent {
    /// Starts an agent from a loaded configuration (see the module docs for the order).
    /// `args` are kept for reloads, which re-read the same sources.
    pub async fn start(
        args: AgentArgs,
        loaded: LoadedConfig,
        options: AgentOptions,
    ) -> Result<Agent, StartError> {
        let mut cfg = loaded.runtime;
        let dev_dir = DevDataDir::attach(&mut cfg)
            .map_err(|e| StartError(format!("cannot create the dev mode data dir: {e}")))?;
        identity::ensure_data_dir(&cfg.data_dir).map_err(StartError)?;
        let node_id = load_or_create_node_id(&cfg.data_dir, cfg.node_id).map_err(StartError)?;
        let pid_file = cfg
            .pid_file
            .as_deref()
            .map(identity::PidFile::write)
            .transpose()
            .map_err(StartError)?;
        if let Some(p) = &pid_file {
            tracing::debug!(pid_file = %p.path().display(), "wrote the pid file");
        }
        let advertise = advertise_addr(
            cfg.bind_addr,
            cfg.gossip.advertise_addr,
            identity::host_ipv4_addrs,
        )
        .map_err(StartError)?;

        let (listeners, addrs) = listeners::bind_all(&cfg).await.map_err(StartError)?;
        let node = NodeIdentity {
            name: cfg.node_name.clone(),
            id: node_id.hyphenated().to_string(),
            datacenter: cfg.datacenter.clone(),
            advertise_addr: advertise,
            server: cfg.server.enabled,
            bootstrap_expect: cfg.server.bootstrap_expect,
            serf_lan_port: addrs.serf.map_or(cfg.gossip.bind.port(), |a| a.port()),
            server_port: addrs.server.map(|a| a.port()),
        };
        let bootstrap = cfg.server.enabled && cfg.server.bootstrap;
        let partial = Partial {
            front: CancellationToken::new(),
            local_stop: CancellationToken::new(),
            server_stop: CancellationToken::new(),
            catalog: None,
        };
        let front_tasks = TaskTracker::new();
        let server_tasks = TaskTracker::new();
        let (fatal_tx, fatal_rx) = mpsc::channel(8);

        // --- the catalog server ---------------------------------------------------------------
        let mut replica_servers = None;
        let (partial, catalog) = match listeners.server {
            Some(rpc_listener) => {
                match start_server(
                    &cfg,
                    &node,
                    bootstrap,
                    rpc_listener,
                    &partial,
                    &server_tasks,
                    &fatal_tx,
                )
                .await
                {
                    Ok(handle) => (
                        Partial {
                            catalog: Some(handle.clone()),
                            ..partial
                        },
                        Some(handle),
                    ),
                    Err(e) => return Err(partial.abort(e).await),
                }
            }
            // A client agent: an in-memory replica streamed from the servers gossip finds.
            None => match outgoing_rpc_tls(&cfg)
                .and_then(|tls| replica::start(&node.datacenter, tls, partial.server_stop.clone()))
            {
                Ok((handle, servers)) => {
                    replica_servers = Some(servers);
                    (
                        Partial {
                            catalog: Some(handle.clone()),
                            ..partial
                        },
                        Some(handle),
                    )
                }
                Err(e) => return Err(partial.abort(e).await),
            },
        };

        // --- membership and leader duties -------------------------------------------------------
        let members = Members::new(vec![self_member(&node, bootstrap)]);
        // Gossip runs on its own thread; it stops with the server stage (after a leave).
        let gossip = match listeners.serf {
            Some((udp, tcp)) => {
                let gcfg = match gossip_config(&cfg, &node, bootstrap) {
                    Ok(g) => g,
                    Err(e) => return Err(partial.abort(e).await),
                };
                match crate::gossip::start(
                    gcfg,
                    udp,
                    tcp,
                    members.clone(),
                    partial.server_stop.child_token(),
                ) {
                    Ok(g) => Some(g),
                    Err(e) => {
                        let msg = format!("cannot start gossip: {e}");
                        return Err(partial.abort(msg).await);
                    }
                }
            }
            None => None,
        };
        let reconcile_ctx = ReconcileContext {
            datacenter: node.datacenter.clone(),
            self_name: node.name.clone(),
        };
        if let Some(servers) = replica_servers {
            front_tasks.spawn(replica::follow_servers(
                members.clone(),
                node.datacenter.clone(),
                servers,
                partial.front.clone(),
            ));
        }
        if let Some(c) = catalog.as_ref().filter(|c| !c.is_replica()) {
            let acl = &cfg.acl;
            let initial_management = acl
                .enabled
                .then(|| acl.tokens.initial_management.clone())
                .flatten();
            front_tasks.spawn(leader::run(
                c.clone(),
                members.clone(),
                reconcile_ctx.clone(),
                initial_management,
                partial.front.clone(),
            ));
            // Raft cluster formation (bootstrap_expect) and the leader's server membership.
            let settings = cluster::ClusterSettings::new(
                node.datacenter.clone(),
                c.node_id(),
                cfg.server.bootstrap_expect,
            );
            front_tasks.spawn(cluster::run(
                c.clone(),
                members.clone(),
                settings,
                partial.front.clone(),
            ));
        }

        // --- local state ------------------------------------------------------------------------
        let local =
            match LocalState::start(&cfg, &node, catalog.clone(), partial.local_stop.clone()).await
            {
                Ok(local) => local,
                Err(e) => {
                    let msg = format!("cannot start local state: {e:#}");
                    return Err(partial.abort(msg).await);
                }
            };

        // --- DNS ---------------------------------------------------------------------------------
        let dns = if listeners.dns.is_empty() {
            None
        } else {
            let shared = Arc::new(SharedCatalog::new(DnsCatalog {
                datacenter: cfg.datacenter.clone(),
                ..DnsCatalog::default()
            }));
            let server = match DnsServer::new(dns_config(&cfg.dns, &cfg.datacenter), shared.clone())
            {
                Ok(s) => s,
                Err(e) => return Err(partial.abort(format!("dns_config: {e}")).await),
            };
            if let Some(c) = &catalog {
                let acl = cfg.acl.enabled.then(|| {
                    let tokens = &cfg.acl.tokens;
                    let secret = tokens.dns.clone().or_else(|| tokens.default.clone());
                    let resolver = crate::acl::Resolver::new(
                        cfg.acl.clone(),
                        &cfg.datacenter,
                        &node.name,
                        Some(c.clone()),
                    );
                    (resolver, secret)
                });
                front_tasks.spawn(dns::publish(
                    c.clone(),
                    shared,
                    cfg.datacenter.clone(),
                    acl,
                    partial.front.clone(),
                ));
            }
            for (l, addr) in listeners.dns.into_iter().zip(&addrs.dns) {
                let (server, stop, fatal, addr) = (
                    server.clone(),
                    partial.front.clone(),
                    fatal_tx.clone(),
                    *addr,
                );
                front_tasks.spawn(async move {
                    if let Err(e) = server.run(l, stop).await {
                        let _ = fatal.try_send(format!("DNS server on {addr} failed: {e}"));
                    }
                });
            }
            Some(server)
        };

        // --- HTTP --------------------------------------------------------------------------------
        let config = Arc::new(ArcSwap::from_pointee(cfg));
        let (control, control_rx) = AgentControl::channel();
        let https = if listeners.https.is_empty() {
            None
        } else {
            let cfg = config.load();
            match crate::tls::server_config(&cfg.tls.https) {
                Ok(c) => Some(http::HttpsSettings {
                    acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(c)),
                    handshake_timeout: cfg.tls.https_handshake_timeout,
                }),
                Err(e) => return Err(partial.abort(format!("tls.https: {e}")).await),
            }
        };
        let plain = listeners
            .http
            .into_iter()
            .zip(&addrs.http)
            .map(|(l, a)| (l, a, None));
        let tls =
            (listeners.https.into_iter().zip(&addrs.https)).map(|(l, a)| (l, a, https.clone()));
        for (l, addr, tls) in plain.chain(tls) {
            let ctx = HttpContext {
                node: node.clone(),
                config: config.clone(),
                local: local.clone(),
                catalog: catalog.clone(),
                members: members.clone(),
                control: control.clone(),
                shutdown: partial.front.clone(),
            };
            let (fatal, addr) = (fatal_tx.clone(), *addr);
            let api = if tls.is_some() {
                "HTTPS API"
            } else {
                "HTTP API"
            };
            front_tasks.spawn(async move {
                if let Err(e) = http::serve(l, ctx, tls).await {
                    let _ = fatal.try_send(format!("{api} on {addr} failed: {e}"));
                }
            });
        }

        tracing::info!(
            node = %node.name,
            id = %node.id,
            datacenter = %node.datacenter,
            server = node.server,
            http = ?addrs.http,
            https = ?addrs.https,
            dns = ?addrs.dns,
            rpc = ?addrs.server,
            "agent started"
        );
        Ok(Agent {
            args,
            config,
            node,
            bootstrap,
            addrs,
            members,
            gossip,
            control,
            control_rx,
            catalog,
            local,
            dns,
            log: options.log,
            reconcile_ctx,
            front: partial.front,
            front_tasks,
            local_stop: partial.local_stop,
            server_stop: partial.server_stop,
            server_tasks,
            fatal_tx,
            fatal_rx,
            pid_file,
            dev_dir,
        })
    }

    /// The addresses bound.
    pub fn addrs(&self) -> &BoundAddrs {
        &self.addrs
    }

    /// This agent's identity.
    pub fn node(&self) -> &NodeIdentity {
        &self.node
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<RuntimeConfig> {
        self.config.load_full()
    }

    /// A handle for reload and leave requests (as the HTTP API sends them).
    pub fn control(&self) -> AgentControl {
        self.control.clone()
    }

    /// The member list.
    pub fn members(&self) -> Members {
        self.members.clone()
    }

    /// The catalog: the Raft server on servers, the streamed replica on client agents.
    pub fn catalog(&self) -> Option<&ServerHandle> {
        self.catalog.as_ref()
    }

    /// Consul's start-up banner for this agent.
    pub fn banner(&self) -> Vec<String> {
        banner(&self.config.load(), &self.node, self.bootstrap, &self.addrs)
    }

    /// The runtime task: serves control requests, reloads and (with `signals`) SIGHUP,
    /// SIGINT and SIGTERM, until `stop` is cancelled, a leave is requested, a signal says to
    /// stop or a component fails; then shuts down in order. Returns the process exit code:
    /// 0 after a clean shutdown, 1 when a component failed or a second signal cut the
    /// shutdown short.
    pub async fn run(mut self, stop: CancellationToken, signals: bool) -> i32 {
        let mut signals = if signals {
            match Signals::new() {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(error = %e, "cannot install signal handlers");
                    None
                }
            }
        } else {
            None
        };
        let mut watchdog = tokio::time::interval(WATCHDOG_EVERY);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reason = loop {
            tokio::select! {
                _ = stop.cancelled() => break Stop::new(false, 0),
                sig = next_signal(&mut signals) => {
                    let cfg = self.config.load();
                    match sig {
                        Signal::Hangup => {
                            tracing::info!("caught SIGHUP, reloading the configuration");
                            if let Err(e) = self.reload().await {
                                tracing::error!(error = %e, "reload failed; the previous configuration stays in force");
                            }
                        }
                        sig => {
                            let leave = leave_on_signal(sig, &cfg);
                            tracing::info!(signal = sig.name(), leave, "caught signal, shutting down");
                            break Stop::new(leave, 0);
                        }
                    }
                }
                request = self.control_rx.recv() => match request {
                    Some(ControlRequest::Reload(reply)) => {
                        let result = self.reload().await;
                        if let Err(e) = &result {
                            tracing::error!(error = %e, "reload failed; the previous configuration stays in force");
                        }
                        let _ = reply.send(result);
                    }
                    Some(ControlRequest::Leave(reply)) => {
                        tracing::info!("graceful leave requested through the API");
                        break Stop { leave: true, reply: Some(reply), code: 0 };
                    }
                    // We hold a sender ourselves, so the channel cannot close.
                    None => {}
                },
                failure = self.fatal_rx.recv() => {
                    let failure = failure.unwrap_or_else(|| "a component stopped".to_owned());
                    tracing::error!(error = %failure, "shutting down after a component failure");
                    break Stop::new(false, 1);
                }
                _ = watchdog.tick() => {
                    if let Some(fatal) = self.catalog.as_ref().and_then(|c| c.status().fatal) {
                        tracing::error!(error = %fatal, "raft stopped on a fatal error; shutting down");
                        break Stop::new(false, 1);
                    }
                }
            }
        };
        let Stop { leave, reply, code } = reason;
        let second_stop_signal = async {
            loop {
                match next_signal(&mut signals).await {
                    Signal::Hangup => tracing::info!("ignoring SIGHUP: shutting down"),
                    sig => return sig,
                }
            }
        };
        tokio::select! {
            code2 = self.shutdown(leave, reply) => code.max(code2),
            sig = second_stop_signal => {
                tracing::error!(signal = sig.name(), "second signal: exiting without finishing the shutdown");
                1
            }
        }
    }

    /// Re-reads the configuration from the same sources and applies what can change at
    /// runtime: services and checks, check settings, node metadata, DNS settings and
    /// recursors, the log level, renewed TLS certificate and key files. Anything else is
    /// reported as needing a restart.
    async fn reload(&mut self) -> Result<(), String> {
        let loaded = config::load(&self.args).map_err(|e| e.to_string())?;
        loaded.log();
        let mut new = loaded.runtime;
        if new.needs_dev_data_dir()
            && let Some(dir) = &self.dev_dir
        {
            new.data_dir = dir.path().to_owned();
        }
        let old = self.config.load_full();
        let dns_cfg = dns_config(&new.dns, &new.datacenter);
        dns_cfg.validate().map_err(|e| format!("dns_config: {e}"))?;
        self.local
            .reload(&new)
            .await
            .map_err(|e| format!("cannot apply the services and checks: {e:#}"))?;
        for key in restart_needed(&old, &new) {
            tracing::warn!(
                key,
                "changed in the configuration; restart the agent to apply it"
            );
        }
        // Renewed certificate and key files (same paths) take effect now.
        crate::tls::reload_certificates();
        let level = new.logging.level;
        self.config.store(Arc::new(new));
        if let Some(dns) = &self.dns
            && let Err(e) = dns.set_config(dns_cfg)
        {
            // Validated above; only reachable if the server's own checks differ.
            tracing::error!(error = %e, "the DNS server refused the new dns_config");
        }
        if let Some(log) = &self.log {
            log.set_level(level);
        }
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// A graceful leave: this member becomes `left`, and a leader writes the result
    /// (reconcile for the others, its own node deregistered). Bounded by [`LEAVE_TIMEOUT`].
    async fn leave(&self) {
        let mut list = (*self.members.current()).clone();
        for m in &mut list {
            if m.name == self.node.name {
                m.status = MemberStatus::Left;
            }
        }
        self.members.set(list.clone());
        // A client agent has nothing to write: the leader deregisters it once gossip tells.
        let Some(catalog) = self.catalog.as_ref().filter(|c| !c.is_replica()) else {
            tracing::info!("graceful leave complete");
            return;
        };
        let mut deregistered = false;
        if catalog.is_leader() {
            let work = async {
                leader::reconcile_once(catalog, &list, &self.reconcile_ctx).await?;
                leader::deregister_self(catalog, &self.reconcile_ctx).await
            };
            match tokio::time::timeout(LEAVE_TIMEOUT, work).await {
                Ok(Ok(())) => deregistered = true,
                Ok(Err(e)) => tracing::warn!(error = %e, "graceful leave: deregistration failed"),
                Err(_) => tracing::warn!("graceful leave: deregistration timed out"),
            }
        } else {
            // A follower's node is removed by the leader once gossip tells it about the leave.
            tracing::info!("graceful leave: the leader deregisters this node");
        }
        // Leave the Raft configuration too (Consul: a leaving server is removed so the quorum
        // shrinks with it); a single server keeps its state and can start again alone.
        match tokio::time::timeout(LEAVE_TIMEOUT, cluster::leave_raft(catalog)).await {
            Ok(Ok(true)) => {
                tracing::info!(
                    deregistered,
                    "graceful leave complete: removed from the raft configuration"
                );
            }
            Ok(Ok(false)) if deregistered => {
                tracing::info!("graceful leave complete: this node is deregistered");
            }
            Ok(Ok(false)) => tracing::info!("graceful leave complete"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "graceful leave: removal from the raft configuration failed");
            }
            Err(_) => {
                tracing::warn!("graceful leave: removal from the raft configuration timed out");
            }
        }
    }

    /// The ordered shutdown; returns the exit code (1 when a stage did not finish in time).
    async fn shutdown(self, leave: bool, reply: Option<oneshot::Sender<()>>) -> i32 {
        let mut code = 0;
        // Stop accepting HTTP and DNS, and stop the loops that write to the catalog.
        self.front.cancel();
        // Stop checks and anti-entropy before a leave, so nothing re-registers this node.
        self.local_stop.cancel();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.local.stopped())
            .await
            .is_err()
        {
            tracing::warn!("local state did not stop within {SHUTDOWN_GRACE:?}");
            code = 1;
        }
        if leave {
            self.leave().await;
            // Serf's leave comes last, as in Consul: the others then list this agent `left`.
            if let Some(g) = &self.gossip {
                g.leave().await;
            }
        }
        if let Some(reply) = reply {
            let _ = reply.send(());
        }
        self.front_tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.front_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("HTTP and DNS did not drain within {SHUTDOWN_GRACE:?}");
            code = 1;
        }
        if let Some(catalog) = &self.catalog {
            catalog.shutdown().await;
        }
        self.server_stop.cancel();
        if let Some(g) = &self.gossip {
            g.stop().await;
        }
        self.server_tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.server_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("the server RPC listener did not stop within {SHUTDOWN_GRACE:?}");
            code = 1;
        }
        drop(self.fatal_tx);
        drop(self.pid_file);
        drop(self.dev_dir);
        tracing::info!("shutdown complete");
        code
    }
}

/// How long left members stay listed (serf's `TombstoneTimeout`).
pub const TOMBSTONE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The gossip settings from the configuration (snapshot in `<data_dir>/serf/local.snapshot`).
/// The keyring comes from `<data_dir>/serf/local.keyring` when it exists (it holds the
/// rotations made since `encrypt` was written, so it wins, as in Consul); otherwise it is
/// created from `encrypt`. A keyring file that cannot be read stops the agent.
fn gossip_config(
    cfg: &RuntimeConfig,
    node: &NodeIdentity,
    bootstrap: bool,
) -> Result<crate::gossip::GossipConfig, String> {
    use crate::gossip::keyring;
    let g = &cfg.gossip;
    let encrypt = g.encrypt_key.as_ref().map(|k| k.as_bytes().to_vec());
    let keyring_file = cfg.data_dir.join("serf").join("local.keyring");
    let keys = match keyring::load(&keyring_file)? {
        Some(keys) => {
            if let Some(e) = &encrypt
                && !keys.contains(e)
            {
                tracing::warn!(
                    file = %keyring_file.display(),
                    "the encrypt key is not in the keyring file, which wins (as in Consul); \
                     remove the file to start over from encrypt"
                );
            }
            keys
        }
        None => {
            let keys: Vec<Vec<u8>> = encrypt.into_iter().collect();
            if !keys.is_empty() {
                keyring::save(&keyring_file, &keys).map_err(|e| {
                    format!("cannot write the keyring {}: {e}", keyring_file.display())
                })?;
            }
            keys
        }
    };
    let (key, secondary_keys) = match keys.split_first() {
        Some((first, rest)) => (Some(first.clone()), rest.to_vec()),
        None => (None, Vec::new()),
    };
    Ok(crate::gossip::GossipConfig {
        identity: crate::gossip::GossipId::from_node(
            node,
            bootstrap,
            build_tag(),
            crate::gossip::initial_bump(),
        ),
        key,
        secondary_keys,
        keyring_file: Some(keyring_file),
        verify_incoming: g.encrypt_verify_incoming,
        verify_outgoing: g.encrypt_verify_outgoing,
        retry_join: g.retry_join.clone(),
        retry_interval: g.retry_interval,
        retry_max: g.retry_max,
        rejoin_after_leave: g.rejoin_after_leave,
        reconnect_timeout: g.reconnect_timeout,
        tombstone_timeout: TOMBSTONE_TIMEOUT,
        snapshot: Some(cfg.data_dir.join("serf").join("local.snapshot")),
        timing: crate::gossip::Timing::lan(),
    })
}

/// Starts the catalog server on `<data_dir>/raft`, serves its RPC router and bootstraps it
/// when the configuration says so.
async fn start_server(
    cfg: &RuntimeConfig,
    node: &NodeIdentity,
    bootstrap: bool,
    rpc_listener: tokio::net::TcpListener,
    partial: &Partial,
    tasks: &TaskTracker,
    fatal: &mpsc::Sender<String>,
) -> Result<ServerHandle, String> {
    let raft_id = muster_server::raft_id_from_node_id(&node.id)
        .ok_or_else(|| format!("node ID {} is not a UUID", node.id))?;
    let rpc_port = node.server_port.unwrap_or(cfg.server.rpc_addr.port());
    let mut server_cfg = ServerConfig::new(
        raft_id,
        node.name.clone(),
        std::net::SocketAddr::new(node.advertise_addr, rpc_port).to_string(),
        node.datacenter.clone(),
    );
    server_cfg.rpc_tls = outgoing_rpc_tls(cfg)?;
    let listener_tls = rpc_listener_tls(cfg)?;
    let (hb, emin, emax) = raft_timings(cfg.server.raft_multiplier, &server_cfg);
    server_cfg.heartbeat_interval = hb;
    server_cfg.election_timeout_min = emin;
    server_cfg.election_timeout_max = emax;
    let raft_dir: PathBuf = cfg.data_dir.join("raft");
    std::fs::create_dir_all(&raft_dir)
        .map_err(|e| format!("cannot create {}: {e}", raft_dir.display()))?;
    let handle = CatalogServer::start(server_cfg, &raft_dir, partial.server_stop.clone())
        .await
        .map_err(|e| {
            format!(
                "cannot start the catalog server in {}: {e}",
                raft_dir.display()
            )
        })?;

    let router = handle.rpc_router();
    let stop = partial.server_stop.clone();
    let fatal = fatal.clone();
    let handshake_timeout = cfg.tls.rpc_handshake_timeout;
    tasks.spawn(async move {
        let served = rpc::serve(rpc_listener, router, listener_tls, handshake_timeout, stop).await;
        if let Err(e) = served {
            let _ = fatal.try_send(format!("server RPC listener failed: {e}"));
        }
    });

    if bootstrap {
        match handle.bootstrap_single().await {
            Ok(true) => tracing::info!("bootstrapped a single-server cluster"),
            Ok(false) => tracing::info!("raft state found; not bootstrapping again"),
            Err(e) => {
                handle.shutdown().await;
                return Err(format!("cannot bootstrap the cluster: {e}"));
            }
        }
    } else if cfg.server.bootstrap_expect > 1 {
        let initialized = handle.is_initialized().await.unwrap_or(false);
        if initialized {
            tracing::info!("raft state found; this server rejoins its cluster");
        } else {
            tracing::info!(
                expect = cfg.server.bootstrap_expect,
                "bootstrap_expect: this server waits for {} servers found through gossip \
                 before the first election",
                cfg.server.bootstrap_expect
            );
        }
    } else if !handle.is_initialized().await.unwrap_or(false) {
        tracing::warn!(
            "server without bootstrap or bootstrap_expect: it waits to be added to an existing \
             cluster by its leader, once gossip has joined them"
        );
    }
    Ok(handle)
}

/// TLS for every RPC this agent makes to servers, when `tls.internal_rpc.verify_outgoing`
/// (or `verify_server_hostname`) asks for it: the CA as the only root, this agent's
/// certificate, and the server's certificate checked for `server.<dc>.<domain>` with
/// `verify_server_hostname`, else for the chain only.
fn outgoing_rpc_tls(cfg: &RuntimeConfig) -> Result<Option<muster_server::RpcTls>, String> {
    let rpc = &cfg.tls.internal_rpc;
    if !rpc.verify_outgoing {
        return Ok(None);
    }
    let identity = if cfg.tls.verify_server_hostname {
        crate::tls::ServerIdentity::Name(cfg.tls.server_name.clone())
    } else {
        crate::tls::ServerIdentity::ChainOnly
    };
    let config = crate::tls::client_config(rpc, identity)
        .map_err(|e| format!("tls.internal_rpc (outgoing): {e}"))?;
    Ok(Some(muster_server::RpcTls(Arc::new(config))))
}

/// TLS on the server RPC port, when `tls.internal_rpc` has a certificate and key.
fn rpc_listener_tls(cfg: &RuntimeConfig) -> Result<Option<rpc::RpcTlsListener>, String> {
    let rpc = &cfg.tls.internal_rpc;
    if !rpc.has_cert() {
        return Ok(None);
    }
    let config = crate::tls::server_config(rpc)
        .map_err(|e| format!("tls.internal_rpc (server RPC port): {e}"))?;
    Ok(Some(rpc::RpcTlsListener {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        verify_incoming: rpc.verify_incoming,
    }))
}

/// The settings a reload cannot change, by key, when they differ.
fn restart_needed(old: &RuntimeConfig, new: &RuntimeConfig) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |changed: bool, key: &'static str| {
        if changed {
            keys.push(key);
        }
    };
    check(old.node_name != new.node_name, "node_name");
    check(old.node_id != new.node_id, "node_id");
    check(old.datacenter != new.datacenter, "datacenter");
    check(old.data_dir != new.data_dir, "data_dir");
    check(old.bind_addr != new.bind_addr, "bind_addr");
    check(old.client_addrs != new.client_addrs, "client_addr");
    check(old.ports != new.ports, "ports");
    check(old.server != new.server, "server");
    check(old.gossip != new.gossip, "gossip settings");
    check(old.http != new.http, "http settings");
    check(old.dns.addrs != new.dns.addrs, "addresses.dns");
    check(old.tls != new.tls, "tls");
    check(old.logging.json != new.logging.json, "log_json");
    check(old.logging.syslog != new.logging.syslog, "enable_syslog");
    check(
        old.logging.syslog_facility != new.logging.syslog_facility,
        "syslog_facility",
    );
    check(old.pid_file != new.pid_file, "pid_file");
    keys
}

/// Consul's start-up banner.
pub fn banner(
    cfg: &RuntimeConfig,
    node: &NodeIdentity,
    bootstrap: bool,
    addrs: &BoundAddrs,
) -> Vec<String> {
    let port = |v: Option<u16>| v.map_or_else(|| "-1".to_owned(), |p| p.to_string());
    let http = addrs.http.first().map(|a| a.port());
    let dns = addrs.dns.first().map(|a| a.port());
    let clients = cfg
        .client_addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let segment = if node.server { "<all>" } else { "" };
    let line = |key: &str, value: String| format!("{key:>18}: {value}");
    vec![
        line("Version", format!("'{}'", env!("CARGO_PKG_VERSION"))),
        line("Node ID", format!("'{}'", node.id)),
        line("Node name", format!("'{}'", node.name)),
        line(
            "Datacenter",
            format!("'{}' (Segment: '{segment}')", node.datacenter),
        ),
        line(
            "Server",
            format!("{} (Bootstrap: {bootstrap})", node.server),
        ),
        line(
            "Client Addr",
            format!(
                "[{clients}] (HTTP: {}, HTTPS: {}, gRPC: -1, DNS: {})",
                port(http),
                port(addrs.https.first().map(|a| a.port())),
                port(dns)
            ),
        ),
        line(
            "Cluster Addr",
            format!(
                "{} (LAN: {}, WAN: {})",
                node.advertise_addr,
                node.serf_lan_port,
                port(cfg.ports.serf_wan)
            ),
        ),
        // Consul prints whether gossip is encrypted (a key is set and outgoing is sealed).
        line(
            "Encrypt",
            format!(
                "Gossip: {}, TLS-Outgoing: {}, TLS-Incoming: {}, Auto-Encrypt-TLS: false",
                cfg.gossip.encrypt_key.is_some() && cfg.gossip.encrypt_verify_outgoing,
                cfg.tls.internal_rpc.verify_outgoing,
                cfg.tls.internal_rpc.verify_incoming
            ),
        ),
    ]
}

/// The signals the runtime reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: reload.
    Hangup,
    /// SIGINT: shut down (leave unless `skip_leave_on_interrupt`).
    Interrupt,
    /// SIGTERM: shut down (leave when `leave_on_terminate`).
    Terminate,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Hangup => "SIGHUP",
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }
}

/// Whether a shutdown signal does a graceful leave first (Consul's rules; servers default to
/// not leaving on either, so a plain stop never shrinks the Raft quorum).
pub fn leave_on_signal(signal: Signal, cfg: &RuntimeConfig) -> bool {
    match signal {
        Signal::Interrupt => !cfg.skip_leave_on_interrupt,
        Signal::Terminate => cfg.leave_on_terminate,
        Signal::Hangup => false,
    }
}

struct Signals {
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }
}

async fn next_signal(signals: &mut Option<Signals>) -> Signal {
    let Some(s) = signals else {
        return std::future::pending().await;
    };
    tokio::select! {
        Some(()) = s.hup.recv() => Signal::Hangup,
        Some(()) = s.int.recv() => Signal::Interrupt,
        Some(()) = s.term.recv() => Signal::Terminate,
        else => std::future::pending().await,
    }
}

/// `muster agent`: load the configuration, set up logging, start, print the banner and the
/// ready line, and run until a signal or a leave. Returns the exit code (1 on any start-up
/// error, printed on stderr).
pub async fn run_agent_command(args: AgentArgs) -> i32 {
    let loaded = match config::load(&args) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("==> {e}");
            return 1;
        }
    };
    let log = match logging::init(&loaded.runtime.logging, &config::system_hostname()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("==> {e}");
            return 1;
        }
    };
    loaded.log();
    println!("==> Starting Muster agent...");
    let agent = match Agent::start(args, loaded, AgentOptions { log: Some(log) }).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "agent failed to start");
            eprintln!("==> Error starting agent: {e}");
            return 1;
        }
    };
    let mut out = std::io::stdout().lock();
    for line in agent.banner() {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "{}", agent.addrs().ready_line());
    let _ = out.flush();
    drop(out);
    agent.run(CancellationToken::new(), true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> RuntimeConfig {
        let args = AgentArgs::parse_consul_style(args).unwrap();
        config::load_with_hostname(&args, "testhost")
            .unwrap()
            .runtime
    }

    #[test]
    fn leave_follows_the_signal_and_the_role() {
        let dir = tempfile::tempdir().unwrap();
        let data = format!("-data-dir={}", dir.path().display());
        let client = load(&[&data]);
        assert!(leave_on_signal(Signal::Interrupt, &client));
        assert!(leave_on_signal(Signal::Terminate, &client));
        let server = load(&[&data, "-server"]);
        assert!(!leave_on_signal(Signal::Interrupt, &server));
        assert!(!leave_on_signal(Signal::Terminate, &server));
        assert!(!leave_on_signal(Signal::Hangup, &server));
    }

    #[test]
    fn raft_timings_scale_with_the_multiplier() {
        let base = ServerConfig::new(1, "n", "127.0.0.1:8300", "dc1");
        let (hb, emin, emax) = raft_timings(5, &base);
        assert_eq!(
            (hb, emin, emax),
            (
                base.heartbeat_interval,
                base.election_timeout_min,
                base.election_timeout_max
            ),
            "the default multiplier keeps the server's defaults"
        );
        let (hb10, emin10, emax10) = raft_timings(10, &base);
        assert_eq!(hb10, base.heartbeat_interval * 2);
        assert_eq!(emin10, base.election_timeout_min * 2);
        assert_eq!(emax10, base.election_timeout_max * 2);
        for m in 0..=12 {
            let (hb, emin, emax) = raft_timings(m, &base);
            let mut c = base.clone();
            c.heartbeat_interval = hb;
            c.election_timeout_min = emin;
            c.election_timeout_max = emax;
            c.validate()
                .unwrap_or_else(|e| panic!("multiplier {m}: {e}"));
            assert!(hb >= Duration::from_millis(50));
        }
    }

    #[test]
    fn reload_reports_settings_that_need_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let data = format!("-data-dir={}", dir.path().display());
        let a = load(&[&data, "-log-level=info"]);
        let b = load(&[&data, "-log-level=debug", "-recursor=1.1.1.1"]);
        assert!(
            restart_needed(&a, &b).is_empty(),
            "log level and recursors reload"
        );
        let c = load(&[&data, "-http-port=9500", "-node=other"]);
        let keys = restart_needed(&a, &c);
        assert!(
            keys.contains(&"ports") && keys.contains(&"node_name"),
            "{keys:?}"
        );
    }

    #[test]
    fn banner_has_consuls_shape() {
        let dir = tempfile::tempdir().unwrap();
        let data = format!("-data-dir={}", dir.path().display());
        let cfg = load(&[&data, "-server", "-bootstrap", "-bind=127.0.0.1"]);
        let node = NodeIdentity {
            name: "db1".into(),
            id: "40e4a748-2192-161a-0510-9bf59fe950b5".into(),
            datacenter: "dc1".into(),
            advertise_addr: "127.0.0.1".parse().unwrap(),
            server: true,
            bootstrap_expect: 0,
            serf_lan_port: 8301,
            server_port: Some(8300),
        };
        let addrs = BoundAddrs {
            http: vec!["127.0.0.1:8500".parse().unwrap()],
            https: vec![],
            dns: vec![],
            server: Some("127.0.0.1:8300".parse().unwrap()),
            serf: Some("127.0.0.1:8301".parse().unwrap()),
        };
        let lines = banner(&cfg, &node, true, &addrs);
        assert_eq!(
            lines[0],
            format!("           Version: '{}'", env!("CARGO_PKG_VERSION"))
        );
        assert!(
            lines
                .contains(&"           Node ID: '40e4a748-2192-161a-0510-9bf59fe950b5'".to_owned())
        );
        assert!(lines.contains(&"         Node name: 'db1'".to_owned()));
        assert!(lines.contains(&"        Datacenter: 'dc1' (Segment: '<all>')".to_owned()));
        assert!(lines.contains(&"            Server: true (Bootstrap: true)".to_owned()));
        assert!(
            lines.contains(
                &"       Client Addr: [127.0.0.1] (HTTP: 8500, HTTPS: -1, gRPC: -1, DNS: -1)"
                    .to_owned()
            )
        );
        assert!(lines.contains(&"      Cluster Addr: 127.0.0.1 (LAN: 8301, WAN: 8302)".to_owned()));
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("           Encrypt: Gossip: false,"))
        );
        // With a key, gossip is sealed and the banner says so.
        let key = "-encrypt=ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8fX5/gIGCg4Q=";
        let cfg = load(&[&data, "-server", "-bootstrap", "-bind=127.0.0.1", key]);
        let lines = banner(&cfg, &node, true, &addrs);
        assert!(
            lines.contains(
                &"           Encrypt: Gossip: true, TLS-Outgoing: false, TLS-Incoming: false, \
                  Auto-Encrypt-TLS: false"
                    .to_owned()
            ),
            "{lines:?}"
        );
    }

    /// Sends one DNS query over UDP; returns (rcode, answer count).
    async fn dns_query(addr: std::net::SocketAddr, name: &str, qtype: u16) -> (u8, u16) {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.trim_end_matches('.').split('.') {
            q.push(u8::try_from(label.len()).unwrap());
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        sock.send_to(&q, addr).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
            .await
            .expect("a DNS answer within 5 s")
            .unwrap();
        assert!(n >= 12);
        (buf[3] & 0x0f, u16::from_be_bytes([buf[6], buf[7]]))
    }

    async fn wait_for<F: Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !f().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn agent_args(dir: &std::path::Path, extra: &[&str]) -> AgentArgs {
        let mut args = vec![
            format!("-data-dir={}", dir.join("data").display()),
            format!("-config-dir={}", dir.join("conf").display()),
            "-bind=127.0.0.1".to_owned(),
            "-http-port=0".to_owned(),
            "-dns-port=0".to_owned(),
            "-server-port=0".to_owned(),
            "-serf-lan-port=0".to_owned(),
            "-node=node-a".to_owned(),
            format!("-pid-file={}", dir.join("muster.pid").display()),
        ];
        // An extra flag replaces the default of the same name (clap refuses repeats).
        let name = |f: &str| f.split('=').next().unwrap_or(f).to_owned();
        args.retain(|a| !extra.iter().any(|e| name(e) == name(a)));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        std::fs::create_dir_all(dir.join("conf")).unwrap();
        AgentArgs::parse_consul_style(args).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_agent_serves_dns_reloads_and_shuts_down() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        std::fs::write(
            dir.path().join("conf/dns.json"),
            r#"{"dns_config": {"node_ttl": "1s"}}"#,
        )
        .unwrap();
        let args = agent_args(dir.path(), &["-server", "-bootstrap"]);
        let loaded = config::load_with_hostname(&args, "h").unwrap();
        let agent = Agent::start(args, loaded, AgentOptions::default())
            .await
            .unwrap();
        let addrs = agent.addrs().clone();
        assert!(addrs.http[0].port() != 0 && addrs.dns[0].port() != 0);
        assert!(addrs.server.is_some_and(|a| a.port() != 0));
        let node_id = std::fs::read_to_string(dir.path().join("data").join(NODE_ID_FILE)).unwrap();
        assert_eq!(agent.node().id, node_id);
        assert!(dir.path().join("muster.pid").exists());
        let members = agent.members().current();
        assert_eq!(members.len(), 1);
        assert_eq!(
            members[0].tags["port"],
            addrs.server.unwrap().port().to_string()
        );

        // The leader registers its own node with the consul service; DNS follows.
        let dns = addrs.dns[0];
        wait_for("consul.service.consul", || async move {
            dns_query(dns, "consul.service.consul", 1).await == (0, 1)
        })
        .await;
        // A service written to the catalog shows up in DNS.
        let catalog = agent.catalog().unwrap().clone();
        let mut reg = muster_server::Registration {
            node: "node-a".into(),
            address: "127.0.0.1".into(),
            skip_node_update: true,
            service: Some(muster_server::NodeService {
                service: "web".into(),
                port: 8080,
                ..Default::default()
            }),
            ..Default::default()
        };
        reg.normalize();
        catalog
            .write(muster_server::Command::Register(reg))
            .await
            .unwrap();
        wait_for("web.service.consul", || async move {
            dns_query(dns, "web.service.consul", 1).await == (0, 1)
        })
        .await;
        assert_eq!(
            dns_query(dns, "nope.service.consul", 1).await.0,
            3,
            "NXDOMAIN"
        );

        // A reload applies a DNS change; a broken file leaves the old configuration.
        let control = agent.control();
        let stop = CancellationToken::new();
        let running = tokio::spawn(agent.run(stop.clone(), false));
        std::fs::write(
            dir.path().join("conf/dns.json"),
            r#"{"dns_config": {"node_ttl": "7s", "only_passing": true}}"#,
        )
        .unwrap();
        control.reload().await.unwrap();
        std::fs::write(dir.path().join("conf/broken.json"), r#"{"no_such_key": 1}"#).unwrap();
        let err = control.reload().await.unwrap_err();
        assert!(err.contains("no_such_key"), "{err}");

        stop.cancel();
        let code = tokio::time::timeout(Duration::from_secs(30), running)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code, 0);
        assert!(!dir.path().join("muster.pid").exists(), "pid file removed");
        // The listeners are closed.
        assert!(tokio::net::TcpStream::connect(addrs.http[0]).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reload_results_are_visible_to_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let args = agent_args(dir.path(), &["-server", "-bootstrap", "-dns-port=-1"]);
        let loaded = config::load_with_hostname(&args, "h").unwrap();
        let mut agent = Agent::start(args, loaded, AgentOptions::default())
            .await
            .unwrap();
        assert!(agent.addrs().dns.is_empty(), "DNS disabled");
        assert!(!agent.config().dns.only_passing);
        std::fs::write(
            dir.path().join("conf/dns.json"),
            r#"{"dns_config": {"only_passing": true}, "node_meta": {"rack": "r1"}}"#,
        )
        .unwrap();
        agent.reload().await.unwrap();
        assert!(agent.config().dns.only_passing);
        assert_eq!(agent.config().node_meta["rack"], "r1");
        std::fs::write(dir.path().join("conf/dns.json"), "{ not json").unwrap();
        assert!(agent.reload().await.is_err());
        assert!(
            agent.config().dns.only_passing,
            "the old configuration stays"
        );
        assert_eq!(agent.shutdown(false, None).await, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leave_through_the_control_channel_deregisters_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let args = agent_args(dir.path(), &["-server", "-bootstrap", "-dns-port=-1"]);
        let loaded = config::load_with_hostname(&args, "h").unwrap();
        let agent = Agent::start(args, loaded, AgentOptions::default())
            .await
            .unwrap();
        let catalog = agent.catalog().unwrap().clone();
        let registered = || {
            let catalog = catalog.clone();
            async move {
                catalog
                    .read(muster_server::Consistency::Stale, |c| {
                        c.node("node-a").is_some()
                    })
                    .await
                    .map(|(b, _)| b)
                    .unwrap_or(false)
            }
        };
        wait_for("the node registered by the leader", registered).await;
        let control = agent.control();
        let members = agent.members();
        let running = tokio::spawn(agent.run(CancellationToken::new(), false));
        tokio::time::timeout(Duration::from_secs(30), control.leave())
            .await
            .expect("the leave is answered");
        assert_eq!(members.current()[0].status, MemberStatus::Left);
        let code = tokio::time::timeout(Duration::from_secs(30), running)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code, 0);
        // The node was deregistered before Raft stopped: reopen the store and look.
        let reopened = CatalogServer::start(
            ServerConfig::new(1, "node-a", "127.0.0.1:1", "dc1"),
            &dir.path().join("data/raft"),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        let present = reopened
            .read(muster_server::Consistency::Stale, |c| {
                c.node("node-a").is_some()
            })
            .await
            .unwrap()
            .0;
        assert!(!present, "the leaving leader deregistered its node");
        reopened.shutdown().await;
    }

    /// A plain HTTP/1.1 GET; returns (status, headers and body as text).
    async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut text))
            .await
            .expect("an HTTP answer within 30 s")
            .unwrap();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, text)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_agent_reads_and_syncs_through_its_servers() {
        let server_dir = tempfile::tempdir().unwrap();
        let args = agent_args(
            server_dir.path(),
            &["-server", "-bootstrap", "-dns-port=-1"],
        );
        let loaded = config::load_with_hostname(&args, "h").unwrap();
        let server = Agent::start(args, loaded, AgentOptions::default())
            .await
            .unwrap();

        let client_dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(client_dir.path().join("conf")).unwrap();
        std::fs::write(
            client_dir.path().join("conf/web.json"),
            r#"{"service": {"name": "web", "port": 8080}}"#,
        )
        .unwrap();
        let args = agent_args(client_dir.path(), &["-node=node-b"]);
        let loaded = config::load_with_hostname(&args, "h").unwrap();
        let client = Agent::start(args, loaded, AgentOptions::default())
            .await
            .unwrap();
        let server_serf = server.addrs().serf.expect("the server gossips");
        assert!(client.catalog().is_some_and(ServerHandle::is_replica));
        assert!(client.addrs().server.is_none());
        assert_eq!(client.members().current()[0].tags["role"], "node");
        let (dns, http) = (client.addrs().dns[0], client.addrs().http[0]);

        // No server known yet: names in the zone are SERVFAIL (never heard from a leader, not
        // a made-up NXDOMAIN) and catalog reads say so, as Consul does.
        assert_eq!(dns_query(dns, "web.service.consul", 1).await.0, 2);
        let (status, text) = http_get(http, "/v1/catalog/nodes").await;
        assert_eq!(status, 500, "{text}");
        assert!(text.ends_with("No known Consul servers"), "{text}");

        // The client joins the server through gossip; the server's member (role consul,
        // its RPC port tag) becomes the replica's server.
        let joined = client
            .members()
            .join(vec![server_serf.to_string()])
            .await
            .unwrap();
        assert_eq!(joined, 1);

        // Anti-entropy brings the client's config-file service to the catalog through the
        // server, and the client's DNS and HTTP answer from its replica.
        let catalog = server.catalog().unwrap().clone();
        wait_for("node-b's web service in the catalog", || {
            let catalog = catalog.clone();
            async move {
                catalog
                    .read(muster_server::Consistency::Stale, |c| {
                        c.service("node-b", "web").is_some()
                    })
                    .await
                    .is_ok_and(|(found, _)| found)
            }
        })
        .await;
        wait_for("web.service.consul on the client", || async move {
            dns_query(dns, "web.service.consul", 1).await == (0, 1)
        })
        .await;
        assert_eq!(dns_query(dns, "node-a.node.consul", 1).await, (0, 1));
        let (status, text) = http_get(http, "/v1/catalog/service/web").await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("\"Node\":\"node-b\""), "{text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("x-consul-knownleader: true"),
            "{text}"
        );
        let (status, text) = http_get(http, "/v1/catalog/nodes?stale").await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("node-a") && text.contains("node-b"), "{text}");

        // The server goes away: DNS and stale reads keep answering from the replica
        // (max_stale defaults to ten years), default reads say there is no server.
        assert_eq!(server.shutdown(false, None).await, 0);
        wait_for("default reads to fail without a server", || async move {
            let (status, text) = http_get(http, "/v1/catalog/nodes").await;
            status == 500 && text.ends_with("No known Consul servers")
        })
        .await;
        assert_eq!(dns_query(dns, "web.service.consul", 1).await, (0, 1));
        let (status, text) = http_get(http, "/v1/catalog/service/web?stale").await;
        assert_eq!(status, 200, "{text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("x-consul-knownleader: false"),
            "{text}"
        );
        assert_eq!(client.shutdown(false, None).await, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn start_up_errors_name_what_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let flag = format!("-http-port={port}");
        let args = agent_args(dir.path(), &["-server", "-bootstrap", &flag]);
        let loaded = config::load_with_hostname(&args, "h").unwrap();
        let err = Agent::start(args, loaded, AgentOptions::default())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );

        std::fs::write(dir.path().join("data").join(NODE_ID_FILE), "garbage").unwrap();
        let args = agent_args(dir.path(), &["-server", "-bootstrap"]);
        let loaded = config::load_with_hostname(&args, "h").unwrap();
        let err = Agent::start(args, loaded, AgentOptions::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("node-id"), "{err}");
    }
}
