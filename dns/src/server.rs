//! The DNS server: listeners, the synchronous fast path and the asynchronous general path.
//!
//! Layout:
//! - one OS thread per UDP socket (SO_REUSEPORT fan-out, one per core) runs a blocking
//!   receive loop (the `udp` module: batches of datagrams in, batches of answers out, one
//!   system call each) with reused buffers and answers in place: parse the header and single
//!   question minimally, answer zone names from the prepared [`Zone`], serve fresh cache
//!   hits for other names; nothing is allocated in steady state and no task is spawned;
//! - everything else (cache misses, unusual or malformed messages) goes to the general
//!   path on a tokio task, bounded by `max_inflight` (beyond it: SERVFAIL at once);
//! - TCP is served by hickory-server's `Server` (accept, framing, idle timeout
//!   [`TCP_IDLE`]) with our request handler (the `tcp` module), which answers through the
//!   same fast path and falls back to the general path inline; at most
//!   [`MAX_TCP_CONNECTIONS`] TCP queries are answered at once.
//!
//! Both paths share `answer_local` and the answer builders, so a query gets the same
//! answer whichever path and transport it takes (tested in `tests/dns`). The prepared zone
//! is rebuilt when the catalog view's version, its snapshot or the config changes; readers
//! load it through an `ArcSwap` and never wait for a rebuild except the one that does it.
//! UDP does not go through hickory-server: its task per datagram and full message decode
//! and encode cannot meet the CPU budget that the fast path meets.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hickory_proto::op::{Message, OpCode};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::answer::{Scratch, answer_ptr, answer_zone};
use crate::cache::Lookup;
use crate::catalog::{CatalogView, DnsCatalog};
use crate::config::DnsConfig;
use crate::error::DnsError;
use crate::forward::{Forwarder, Resolved};
use crate::name::{QName, ZoneName};
use crate::socket::DnsListeners;
use crate::stats::{Counters, DnsStatsSnapshot, QueryKind, Stats};
use crate::wire::{
    Edns, OptOut, Parse, Query, Transport, parse_fast, request_header, response_flags, rtype,
    skip_name, write_bare_response,
};
use crate::zone::{Zone, ip_from_arpa};

mod tcp;
mod udp;

/// Most TCP queries answered at once. hickory-server answers one query at a time per
/// connection, so this is also the most connections being served; a query beyond it gets
/// SERVFAIL at once. (Idle connections are not counted: hickory accepts every connection
/// and closes it after [`TCP_IDLE`] without a query.)
pub const MAX_TCP_CONNECTIONS: usize = 256;
/// A TCP connection that sends no query for this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// With `allow_stale = false`, the most the replica may lag its last leader contact.
pub const STRICT_MAX_STALE: Duration = Duration::from_secs(1);
/// How often a blocked UDP thread wakes up to check for shutdown.
const UDP_POLL: Duration = Duration::from_millis(200);
/// Replicas further behind than this are counted as stale (Consul's `stale_queries`).
const STALE_COUNTER_THRESHOLD: Duration = Duration::from_secs(5);
/// Bounded wait for tasks and threads at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Stats shards: one per UDP thread (modulo) plus the shared one.
const STAT_SHARDS: usize = 17;

/// The zone prepared for one (catalog, config) pair.
struct Prepared {
    zone: Zone,
    catalog: Arc<DnsCatalog>,
    catalog_version: Option<u64>,
    config_gen: u64,
    config: Arc<DnsConfig>,
    max_staleness: Duration,
}

/// The DNS server. Cheap to clone; every clone is the same server.
#[derive(Clone)]
pub struct DnsServer {
    inner: Arc<Inner>,
}

struct Inner {
    config: ArcSwap<DnsConfig>,
    config_gen: AtomicU64,
    view: Arc<dyn CatalogView>,
    prepared: ArcSwap<Prepared>,
    rebuild: Mutex<()>,
    forwarder: Forwarder,
    stats: Stats,
    general_active: AtomicUsize,
    local_addrs: ArcSwap<Vec<SocketAddr>>,
    loop_warned: AtomicBool,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("config", &self.inner.config.load())
            .finish_non_exhaustive()
    }
}

/// What the fast path did with a message.
enum Fast {
    /// The response is in the context's output buffer.
    Reply,
    /// The general path must handle it.
    General,
    /// No response at all.
    Drop,
}

/// What the shared synchronous step left to do.
enum Local {
    Done,
    Forward,
}

/// Per-thread (or per-connection) reusable state of the fast path.
struct FastCtx {
    q: Query,
    out: Vec<u8>,
    scratch: Scratch,
    key: [u8; 260],
    shard: usize,
}

impl FastCtx {
    fn new(shard: usize) -> Self {
        Self {
            q: Query::empty(),
            out: Vec::with_capacity(65_535),
            scratch: Scratch::new(),
            key: [0; 260],
            shard,
        }
    }
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

fn kind_of(name: ZoneName) -> QueryKind {
    match name {
        ZoneName::Service { .. } => QueryKind::Service,
        ZoneName::Node { .. } => QueryKind::Node,
        ZoneName::Addr { .. } => QueryKind::Addr,
        ZoneName::Apex | ZoneName::EmptyNonTerminal | ZoneName::Invalid => QueryKind::Zone,
    }
}

/// Writes an error response to `q`: header, question, OPT; the rcode comes from the
/// error's single mapping ([`DnsError::rcode`]).
fn write_error(q: &Query, err: &DnsError, ra: bool, out: &mut Vec<u8>) -> u16 {
    let code = err.rcode();
    let flags = response_flags(q.flags, false, false, ra, code);
    let mut question = [0u8; 259];
    let name = q.name.wire();
    question[..name.len()].copy_from_slice(name);
    question[name.len()..name.len() + 2].copy_from_slice(&q.qtype.to_be_bytes());
    question[name.len() + 2..name.len() + 4].copy_from_slice(&q.qclass.to_be_bytes());
    write_bare_response(
        out,
        q.id,
        flags,
        Some(&question[..name.len() + 4]),
        OptOut::for_request(q.edns, code),
    );
    code
}

/// The raw question section of a single-question message, if it can be delimited.
fn raw_question(msg: &[u8]) -> Option<&[u8]> {
    if msg.get(4..6)? != [0, 1] {
        return None;
    }
    let end = skip_name(msg, 12)? + 4;
    msg.get(12..end)
}

impl DnsServer {
    /// A server answering from `view` with `config` (validated first).
    pub fn new(config: DnsConfig, view: Arc<dyn CatalogView>) -> Result<Self, DnsError> {
        config.validate()?;
        let config = Arc::new(config);
        let prepared = prepare(view.as_ref(), config.clone(), 0);
        Ok(Self {
            inner: Arc::new(Inner {
                config: ArcSwap::new(config),
                config_gen: AtomicU64::new(0),
                view,
                prepared: ArcSwap::from_pointee(prepared),
                rebuild: Mutex::new(()),
                forwarder: Forwarder::default(),
                stats: Stats::new(STAT_SHARDS),
                general_active: AtomicUsize::new(0),
                local_addrs: ArcSwap::from_pointee(Vec::new()),
                loop_warned: AtomicBool::new(false),
            }),
        })
    }

    /// Replaces the configuration at runtime (SIGHUP reload). An invalid configuration is
    /// rejected and the current one stays. The cache is kept.
    pub fn set_config(&self, config: DnsConfig) -> Result<(), DnsError> {
        config.validate()?;
        self.inner.config.store(Arc::new(config));
        // Bumped after the store: a reader that sees the new generation sees the new config.
        self.inner.config_gen.fetch_add(1, Ordering::Release);
        self.inner.loop_warned.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<DnsConfig> {
        self.inner.config.load_full()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DnsStatsSnapshot {
        let cache = &self.inner.forwarder.cache;
        self.inner.stats.snapshot(cache.len(), cache.bytes())
    }

    /// Serves DNS on `listeners` until `shutdown` is cancelled, then stops accepting,
    /// lets running queries finish (bounded) and returns. Must be called inside a tokio
    /// runtime; each UDP socket gets its own OS thread.
    pub async fn run(
        &self,
        listeners: DnsListeners,
        shutdown: CancellationToken,
    ) -> Result<(), DnsError> {
        // Our threads and tasks watch a child token that is also cancelled when this
        // future is dropped, so nothing outlives `run` even if the caller never cancels.
        let shutdown = shutdown.child_token();
        let _stop_on_drop = shutdown.clone().drop_guard();
        // Our own addresses, so that recursors pointing back at us can be skipped.
        let DnsListeners { udp, tcp } = listeners;
        let mut local = Vec::with_capacity(udp.len() + 1);
        for socket in &udp {
            local.push(socket.local_addr()?);
        }
        local.push(tcp.local_addr()?);
        self.inner.local_addrs.store(Arc::new(local));

        let rt = Handle::current();
        let tracker = TaskTracker::new();
        let mut threads = Vec::with_capacity(udp.len());
        for (i, socket) in udp.into_iter().enumerate() {
            // Blocking with a timeout: the thread sleeps in the kernel until a datagram
            // arrives and still sees the shutdown token within UDP_POLL.
            socket.set_nonblocking(false)?;
            socket.set_read_timeout(Some(UDP_POLL))?;
            let (inner, rt, tracker, shutdown) = (
                self.inner.clone(),
                rt.clone(),
                tracker.clone(),
                shutdown.clone(),
            );
            let thread = std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || {
                    udp::udp_loop(&inner, Arc::new(socket), i, &rt, &tracker, &shutdown);
                })?;
            threads.push(thread);
        }
        if let Some(published) = self.inner.view.subscribe() {
            tracker.spawn(reindex_on_publish(
                self.inner.clone(),
                published,
                shutdown.clone(),
            ));
        }
        tcp.set_nonblocking(true)?;
        let tcp = TcpListener::from_std(tcp)?;
        let mut tcp_server = hickory_server::Server::new(tcp::TcpHandler::new(self.inner.clone()));
        tcp_server.register_listener(tcp, TCP_IDLE, tcp::TCP_RESPONSE_BUFFER);
        let tcp_running = tokio::select! {
            biased;
            () = shutdown.cancelled() => true,
            stopped = tcp_server.block_until_done() => {
                // Only an unrecoverable listener error ends it early; UDP keeps serving.
                if let Err(e) = stopped {
                    tracing::error!(error = %e, "DNS TCP server stopped");
                }
                shutdown.cancelled().await;
                false
            }
        };
        // hickory stops accepting and closes its connections when its own token is
        // cancelled (a TCP query in flight is abandoned).
        tcp_server.shutdown_token().cancel();
        let tcp_stopped = !tcp_running
            || timeout(SHUTDOWN_GRACE, tcp_server.block_until_done())
                .await
                .is_ok();

        // The UDP threads notice the token within UDP_POLL; running general-path tasks
        // finish within their own bounds.
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        tracker.close();
        let drained = timeout(SHUTDOWN_GRACE, async {
            let _ = joined.await;
            tracker.wait().await;
        })
        .await;
        if drained.is_err() || !tcp_stopped {
            tracing::warn!("DNS server: some queries were still running at shutdown");
        }
        Ok(())
    }

    /// Answers one message as the fast path would (from a loopback client) (`None` when it would defer to the
    /// general path or drop the message). For tests that compare the two paths
    /// (feature `testing`).
    #[cfg(feature = "testing")]
    pub fn answer_fast_for_test(&self, msg: &[u8], tcp: bool, seed: u64) -> Option<Vec<u8>> {
        let mut ctx = FastCtx::new(0);
        ctx.scratch = Scratch::seeded(seed);
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        match self.inner.fast_path(msg, transport, TEST_CLIENT, &mut ctx) {
            Fast::Reply => Some(ctx.out),
            Fast::General | Fast::Drop => None,
        }
    }

    /// Answers one message on the general path (full hickory-proto decode). For tests that
    /// compare the two paths (feature `testing`).
    #[cfg(feature = "testing")]
    pub async fn answer_general_for_test(
        &self,
        msg: &[u8],
        tcp: bool,
        seed: u64,
    ) -> Option<Vec<u8>> {
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        self.inner
            .general(msg, transport, TEST_CLIENT, Scratch::seeded(seed))
            .await
    }
}

/// The client address of the `*_for_test` entry points.
#[cfg(feature = "testing")]
const TEST_CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Indexes the view's current catalog for `config`.
fn prepare(view: &dyn CatalogView, config: Arc<DnsConfig>, config_gen: u64) -> Prepared {
    // Read the version before the snapshot: a publish in between makes the version stale,
    // which only causes one extra rebuild.
    let catalog_version = view.version();
    let catalog = view.snapshot();
    let zone = Zone::build(&catalog, &config);
    let max_staleness = if config.allow_stale {
        config.max_stale
    } else {
        STRICT_MAX_STALE
    };
    Prepared {
        zone,
        catalog,
        catalog_version,
        config_gen,
        config,
        max_staleness,
    }
}

impl Inner {
    /// Whether `p` was built from the current config and catalog. With a versioned view
    /// this is two atomic loads; otherwise a snapshot pointer comparison.
    fn is_current(&self, p: &Prepared) -> bool {
        p.config_gen == self.config_gen.load(Ordering::Acquire)
            && match self.view.version() {
                Some(v) => p.catalog_version == Some(v),
                None => Arc::ptr_eq(&p.catalog, &self.view.snapshot()),
            }
    }

    /// The prepared zone for the current catalog and config, rebuilt if either changed.
    fn prepared(&self) -> arc_swap::Guard<Arc<Prepared>> {
        let current = self.prepared.load();
        if self.is_current(&current) {
            return current;
        }
        drop(current);
        // One rebuild at a time; whoever waited re-checks and usually finds it done.
        let _rebuilding = self.rebuild.lock();
        let current = self.prepared.load();
        if self.is_current(&current) {
            return current;
        }
        let config_gen = self.config_gen.load(Ordering::Acquire);
        let fresh = prepare(self.view.as_ref(), self.config.load_full(), config_gen);
        self.stats.zone_builds.fetch_add(1, Ordering::Relaxed);
        self.prepared.store(Arc::new(fresh));
        self.prepared.load()
    }

    /// Whether the catalog is too stale to answer from.
    fn catalog_stale(&self, p: &Prepared, counters: &Counters) -> bool {
        let Some(contact) = self.view.last_contact() else {
            counters.stale_catalog();
            return true;
        };
        let age = Instant::now().saturating_duration_since(contact);
        if age > STALE_COUNTER_THRESHOLD {
            counters.stale_catalog();
        }
        age > p.max_staleness
    }

    /// The recursors minus our own listening addresses (loop protection).
    fn recursors(&self, config: &DnsConfig) -> Vec<SocketAddr> {
        let local = self.local_addrs.load();
        let is_own = |r: &SocketAddr| {
            local.iter().any(|l| {
                *l == *r
                    || (l.ip().is_unspecified()
                        && l.port() == r.port()
                        && (r.ip().is_loopback() || r.ip().is_unspecified()))
            })
        };
        let kept: Vec<SocketAddr> = config
            .recursors
            .iter()
            .copied()
            .filter(|r| !is_own(r))
            .collect();
        if kept.len() != config.recursors.len() && !self.loop_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(recursors = ?config.recursors, "ignoring recursors that point at this DNS server (forwarding loop)");
        }
        kept
    }

    /// The synchronous step shared by both paths: zone names, catalog PTRs, refusals.
    #[allow(clippy::too_many_arguments)]
    fn answer_local(
        &self,
        p: &Prepared,
        q: &Query,
        transport: Transport,
        fast: bool,
        scratch: &mut Scratch,
        out: &mut Vec<u8>,
        counters: &Counters,
    ) -> Local {
        let zone = &p.zone;
        // A client outside `recursor_allow` is answered as if there were no recursors.
        let ra = zone.recursion_available && q.may_recurse;
        let tcp = transport == Transport::Tcp;
        // CHAOS and other classes: we serve IN only, and never forward them.
        if q.qclass != rtype::CLASS_IN {
            let code = write_error(q, &DnsError::Refused("only class IN is served"), ra, out);
            counters.answered(tcp, fast, QueryKind::Other, code, false);
            return Local::Done;
        }
        // Zone names are always answered here, whatever the type: never forwarded (#6183).
        if let Some(parsed) = zone.labels.parse(&q.name, q.qtype) {
            let stale = self.catalog_stale(p, counters);
            let a = answer_zone(
                zone,
                q,
                parsed.name,
                parsed.domain_label,
                transport,
                unix_now(),
                stale,
                scratch,
                out,
            );
            counters.answered(tcp, fast, kind_of(parsed.name), a.rcode, a.truncated);
            return Local::Done;
        }
        if matches!(q.qtype, rtype::AXFR | rtype::IXFR) {
            let code = write_error(q, &DnsError::NotImplemented("zone transfer"), ra, out);
            counters.answered(tcp, fast, QueryKind::Other, code, false);
            return Local::Done;
        }
        // Reverse names: catalog addresses first (nodes, then service addresses), then
        // the recursors like any other name.
        let count = q.name.label_count();
        if count >= 2 && q.name.label(count - 1) == b"arpa" {
            let ip = ip_from_arpa((0..count).map(|i| q.name.label(i)));
            if let Some(targets) = ip.and_then(|ip| zone.ptr.get(&ip)) {
                if self.catalog_stale(p, counters) {
                    let code = write_error(q, &DnsError::Stale, ra, out);
                    counters.answered(tcp, fast, QueryKind::Ptr, code, false);
                } else {
                    let a = answer_ptr(zone, q, targets, transport, out);
                    counters.answered(tcp, fast, QueryKind::Ptr, a.rcode, a.truncated);
                }
                return Local::Done;
            }
            if !ra {
                // Consul ≥ 1.19: unknown reverse names are NXDOMAIN without recursors.
                let code = write_error(q, &DnsError::NameNotFound, ra, out);
                counters.answered(tcp, fast, QueryKind::Ptr, code, false);
                return Local::Done;
            }
            return Local::Forward;
        }
        if !ra {
            let why = if zone.recursion_available {
                "recursion not allowed for this client"
            } else {
                "no recursors configured"
            };
            let code = write_error(q, &DnsError::Refused(why), ra, out);
            counters.answered(tcp, fast, QueryKind::Other, code, false);
            return Local::Done;
        }
        Local::Forward
    }

    /// The fast path: synchronous, allocation-free, no task.
    fn fast_path(
        &self,
        msg: &[u8],
        transport: Transport,
        client: IpAddr,
        ctx: &mut FastCtx,
    ) -> Fast {
        match parse_fast(msg, &mut ctx.q) {
            Parse::Drop => return Fast::Drop,
            Parse::General => return Fast::General,
            Parse::Query => {}
        }
        let counters = match transport {
            Transport::Udp => self.stats.shard(ctx.shard % (STAT_SHARDS - 1)),
            Transport::Tcp => self.stats.shared(),
        };
        // The guard keeps this zone alive for the query even if a rebuild swaps it.
        let p = self.prepared();
        let FastCtx {
            q,
            out,
            scratch,
            key,
            ..
        } = ctx;
        q.may_recurse = p.config.recursor_allow.allows(client);
        match self.answer_local(&p, q, transport, true, scratch, out, counters) {
            Local::Done => Fast::Reply,
            Local::Forward => {
                // Only a fresh hit is served here; misses and stale entries need the
                // upstreams, which means waiting: the general path.
                let now = Instant::now();
                let limit = q.size_limit(transport);
                let key = q.cache_key(key);
                let served =
                    self.forwarder
                        .cache
                        .lookup(key, now, p.config.cache.serve_stale, |r| {
                            (r.rcode(), r.write(q, now, false, limit, out))
                        });
                match served {
                    Lookup::Fresh((code, truncated)) => {
                        counters.cache_hit();
                        counters.answered(
                            transport == Transport::Tcp,
                            true,
                            QueryKind::Forward,
                            code,
                            truncated,
                        );
                        Fast::Reply
                    }
                    Lookup::Stale(_) | Lookup::Miss => Fast::General,
                }
            }
        }
    }

    /// The general path: full decode with hickory-proto, then the shared step, then the
    /// forwarder. Returns the response to send, if any.
    async fn general(
        &self,
        msg: &[u8],
        transport: Transport,
        client: IpAddr,
        mut scratch: Scratch,
    ) -> Option<Vec<u8>> {
        let counters = self.stats.shared();
        let tcp = transport == Transport::Tcp;
        let (id, flags) = request_header(msg)?;
        let p = self.prepared();
        let may_recurse = p.config.recursor_allow.allows(client);
        let ra = p.zone.recursion_available && may_recurse;
        let mut out = Vec::new();
        let bare =
            |out: &mut Vec<u8>, err: DnsError, question: Option<&[u8]>, edns: Option<Edns>| {
                let code = err.rcode();
                write_bare_response(
                    out,
                    id,
                    response_flags(flags, false, false, ra, code),
                    question,
                    OptOut::for_request(edns, code),
                );
                counters.answered(tcp, false, QueryKind::Other, code, false);
            };
        // Anything that fails a full decode is FORMERR (its header parsed, or we would not
        // be here).
        let Ok(m) = Message::from_vec(msg) else {
            bare(
                &mut out,
                DnsError::Malformed("undecodable message"),
                None,
                None,
            );
            return Some(out);
        };
        let edns = m.edns.as_ref().map(|e| Edns {
            payload: e.max_payload(),
            version: e.version(),
            dnssec_ok: e.flags().dnssec_ok,
        });
        let question = raw_question(msg).filter(|_| m.queries.len() == 1);
        if m.metadata.op_code != OpCode::Query {
            bare(&mut out, DnsError::NotImplemented("opcode"), question, edns);
            return Some(out);
        }
        if m.queries.len() != 1 {
            bare(
                &mut out,
                DnsError::Malformed("exactly one question is required"),
                None,
                edns,
            );
            return Some(out);
        }
        if let Some(e) = edns.filter(|e| e.version > 0) {
            // BADVERS: the OPT record carries the upper rcode bits and our version (0).
            bare(
                &mut out,
                DnsError::BadVersion(e.version),
                question,
                Some(Edns { version: 0, ..e }),
            );
            return Some(out);
        }
        // Rebuild the question from hickory's decode (not from our fast parser), so the
        // two paths are independent and tests comparing them mean something.
        let hq = &m.queries[0];
        let mut wire = Vec::with_capacity(256);
        for label in hq.name().iter() {
            wire.push(label.len() as u8);
            wire.extend_from_slice(label);
        }
        wire.push(0);
        let Ok((name, _)) = QName::read(&wire, 0) else {
            bare(&mut out, DnsError::Malformed("question name"), None, edns);
            return Some(out);
        };
        let q = Query {
            id,
            flags,
            name,
            qtype: u16::from(hq.query_type()),
            qclass: u16::from(hq.query_class()),
            edns,
            may_recurse,
        };
        match self.answer_local(&p, &q, transport, false, &mut scratch, &mut out, counters) {
            Local::Done => Some(out),
            Local::Forward => {
                // No arc-swap guard may live across the upstream wait.
                let config = p.config.clone();
                drop(p);
                let recursors = self.recursors(&config);
                let mut key = [0u8; 260];
                let key = q.cache_key(&mut key);
                let limit = q.size_limit(transport);
                let (code, truncated) = match self
                    .forwarder
                    .resolve(&q, key, &config, &recursors, &self.stats)
                    .await
                {
                    Ok(Resolved::Fresh(r)) => (
                        r.rcode(),
                        r.write(&q, Instant::now(), false, limit, &mut out),
                    ),
                    Ok(Resolved::Stale(r)) => (
                        r.rcode(),
                        r.write(&q, Instant::now(), true, limit, &mut out),
                    ),
                    Err(e) => (write_error(&q, &e, true, &mut out), false),
                };
                counters.answered(tcp, false, QueryKind::Forward, code, truncated);
                Some(out)
            }
        }
    }

    /// Hands a message to the general path on a task, or sheds it with SERVFAIL when
    /// `max_inflight` tasks are already running.
    fn spawn_general(
        self: &Arc<Self>,
        msg: &[u8],
        peer: SocketAddr,
        socket: &Arc<UdpSocket>,
        rt: &Handle,
        tracker: &TaskTracker,
    ) {
        // Shed instead of queueing: a late answer is worth less than a quick SERVFAIL
        // (Consul #1535: queues that grow without bound make every query late).
        let config = self.config.load();
        let max = config.max_inflight;
        let ra = !config.recursors.is_empty() && config.recursor_allow.allows(peer.ip());
        if self.general_active.fetch_add(1, Ordering::Relaxed) >= max {
            self.general_active.fetch_sub(1, Ordering::Relaxed);
            let counters = self.stats.shared();
            counters.shed();
            if let Some((id, flags)) = request_header(msg) {
                let mut out = Vec::with_capacity(512);
                let code = DnsError::Overloaded.rcode();
                write_bare_response(
                    &mut out,
                    id,
                    response_flags(flags, false, false, ra, code),
                    raw_question(msg),
                    None,
                );
                counters.answered(false, false, QueryKind::Other, code, false);
                let _ = socket.send_to(&out, peer);
            }
            return;
        }
        let (inner, socket, msg) = (self.clone(), socket.clone(), msg.to_vec());
        tracker.spawn_on(
            async move {
                if let Some(out) = inner
                    .general(&msg, Transport::Udp, peer.ip(), Scratch::new())
                    .await
                {
                    // UDP sends do not block for long; the socket is in blocking mode
                    // because its receive loop is a plain thread.
                    let _ = socket.send_to(&out, peer);
                }
                inner.general_active.fetch_sub(1, Ordering::Relaxed);
            },
            rt,
        );
    }
}

/// Indexes each published catalog as soon as it is published (on a blocking thread: a
/// large catalog takes milliseconds), so no query pays for it.
async fn reindex_on_publish(
    inner: Arc<Inner>,
    mut published: tokio::sync::watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    // Publications made before we subscribed count as changes too.
    published.mark_changed();
    while let Some(Ok(())) = shutdown.run_until_cancelled(published.changed()).await {
        let inner = inner.clone();
        // The guard is dropped on the blocking thread; only the rebuild matters here.
        let _ = tokio::task::spawn_blocking(move || drop(inner.prepared())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::rcode;

    #[test]
    fn error_responses_echo_the_question_and_edns() {
        let mut q = Query::empty();
        let msg = {
            let mut m = Message::new(5, hickory_proto::op::MessageType::Query, OpCode::Query);
            m.add_query(hickory_proto::op::Query::query(
                hickory_proto::rr::Name::from_ascii("Example.COM.").unwrap(),
                hickory_proto::rr::RecordType::A,
            ));
            m.set_edns(hickory_proto::op::Edns::new());
            m.to_vec().unwrap()
        };
        assert_eq!(parse_fast(&msg, &mut q), Parse::Query);
        let mut out = Vec::new();
        assert_eq!(
            write_error(&q, &DnsError::Refused("x"), false, &mut out),
            rcode::REFUSED
        );
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 5);
        assert_eq!(m.queries[0].name().to_ascii(), "Example.COM.");
        assert!(m.edns.is_some());
        assert_eq!(raw_question(&msg).map(<[u8]>::len), Some(13 + 4));
    }
}
