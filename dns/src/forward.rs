//! Forwarding names outside the zone to the recursors, through the cache.
//!
//! What is hickory's and what is ours. Every upstream exchange goes through
//! hickory-resolver's networking layer (`hickory_resolver::net`, i.e. hickory-net): a
//! `UdpClientStream` per UDP attempt and a `TcpClientStream` exchange per TCP attempt.
//! They bind a fresh UDP socket on a random source port for every query, pick a random ID
//! (over TCP the multiplexer's own), match the reply's source, ID and question, and keep
//! the reply's raw bytes (`DnsResponse::into_buffer`), which our cache stores.
//! Everything above one exchange stays ours, because hickory's higher layers do not fit
//! (checked in hickory-resolver 0.26.3): its `Resolver` and `NameServerPool` reorder
//! upstreams by measured latency and query several at once, rebuild responses (losing the
//! upstream's exact flags, authority SOA and additional data) and cache on their own
//! terms; a `NameServer` passes every reply through `DnsError::from_response`, which turns
//! NXDOMAIN, NODATA and error rcodes into errors and drops the reply's bytes that our
//! negative cache and failover need, and it keeps pooled connections we do not want.
//! Consul's semantics need ordered failover (next upstream on timeout, network error or
//! any rcode other than NOERROR/NXDOMAIN), the upstream's rcode and sections verbatim,
//! and the wire bytes with TTL offsets for our cache; the TC→TCP retry stays ours so that
//! it is one more step of the same attempt.
//!
//! Rules:
//! - one attempt per upstream, each bounded by `recursor_timeout`; a truncated UDP reply
//!   is retried over TCP on the same upstream (its own `recursor_timeout`);
//! - each UDP attempt sends one datagram (no retransmission inside an attempt) from a
//!   fresh socket on a random source port with a random ID; only a reply from the
//!   upstream's address with that ID and our exact question is accepted (anti-spoofing);
//!   the receive buffer is our advertised EDNS size (1232), so an upstream that ignores it
//!   and sends a larger datagram fails the attempt;
//! - identical concurrent misses are coalesced into one exchange; the number of
//!   exchanges in flight is bounded by `max_inflight`, beyond it queries are shed;
//! - when every upstream fails, an expired answer within the serve-stale window is served
//!   (TTL 30), else SERVFAIL;
//! - RD=0 queries are answered from the cache only, otherwise REFUSED (RFC 1034 §4.3.1:
//!   recursion is optional; this is our choice, Consul ignores RD).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{
    DnsRequest, DnsRequestOptions, Edns, Message, MessageType, OpCode, Query as HQuery,
};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::tcp::TcpClientStream;
use hickory_resolver::net::udp::UdpClientStream;
use hickory_resolver::net::xfer::{DnsHandle, DnsRequestSender, FirstAnswer};
use parking_lot::Mutex;
use rand::RngExt;
use rand::seq::SliceRandom;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

use crate::cache::{Cache, CachedResponse, Lookup};
use crate::config::{DnsConfig, RecursorStrategy};
use crate::error::{DnsError, rcode};
use crate::stats::{Stats, UpstreamCounters};
use crate::wire::{HEADER_LEN, Query, skip_name};

/// The UDP payload size we advertise upstream (DNS flag day 2020: no IP fragments).
const UPSTREAM_PAYLOAD: u16 = 1232;

/// Why forwarding failed; cloned to every coalesced waiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    AllFailed(usize),
    Overloaded,
}

impl From<Failure> for DnsError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::AllFailed(n) => DnsError::UpstreamsFailed(n),
            Failure::Overloaded => DnsError::Overloaded,
        }
    }
}

type Outcome = Result<Arc<CachedResponse>, Failure>;

/// Where coalesced waiters wait for the exchange in flight for a cache key.
type Waiters = watch::Receiver<Option<Outcome>>;

/// A forwarded answer.
pub(crate) enum Resolved {
    /// From the cache or a fresh exchange.
    Fresh(Arc<CachedResponse>),
    /// An expired answer served because every upstream failed.
    Stale(Arc<CachedResponse>),
}

/// The forwarder: cache, in-flight exchanges and upstream bookkeeping.
#[derive(Default)]
pub(crate) struct Forwarder {
    pub(crate) cache: Cache,
    inflight: Mutex<HashMap<Box<[u8]>, Waiters>>,
    exchanges: AtomicUsize,
}

/// Removes an in-flight entry when the exchange ends, however it ends.
struct InflightGuard<'a> {
    forwarder: &'a Forwarder,
    key: &'a [u8],
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.forwarder.inflight.lock().remove(self.key);
    }
}

/// Counts an exchange in flight while it lives.
struct ExchangeSlot<'a>(&'a AtomicUsize);

impl Drop for ExchangeSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Forwarder {
    /// Answers `q` (whose cache key is `key`) from the cache or the `recursors`.
    pub(crate) async fn resolve(
        &self,
        q: &Query,
        key: &[u8],
        cfg: &DnsConfig,
        recursors: &[SocketAddr],
        stats: &Stats,
    ) -> Result<Resolved, DnsError> {
        let counters = stats.shared();
        let stale = match self
            .cache
            .lookup(key, Instant::now(), cfg.cache.serve_stale, Arc::clone)
        {
            Lookup::Fresh(hit) => {
                counters.cache_hit();
                return Ok(Resolved::Fresh(hit));
            }
            Lookup::Stale(r) => Some(r),
            Lookup::Miss => None,
        };
        counters.cache_miss();
        if !q.rd() {
            return Err(DnsError::NotCached);
        }
        let outcome = self.coalesced(q, key, cfg, recursors, stats).await;
        match (outcome, stale) {
            (Ok(r), _) => Ok(Resolved::Fresh(r)),
            (Err(_), Some(r)) => {
                counters.cache_stale();
                Ok(Resolved::Stale(r))
            }
            (Err(f), None) => Err(f.into()),
        }
    }

    async fn coalesced(
        &self,
        q: &Query,
        key: &[u8],
        cfg: &DnsConfig,
        recursors: &[SocketAddr],
        stats: &Stats,
    ) -> Outcome {
        let leader = {
            let mut inflight = self.inflight.lock();
            match inflight.get(key) {
                Some(rx) => Err(rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    inflight.insert(key.into(), rx);
                    Ok(tx)
                }
            }
        };
        let tx = match leader {
            Ok(tx) => tx,
            Err(mut rx) => {
                stats.shared().coalesced();
                // The leader always publishes before its guard removes the entry; a closed
                // channel means it was cancelled (shutdown).
                return match rx.wait_for(Option::is_some).await {
                    Ok(outcome) => outcome.clone().unwrap_or(Err(Failure::AllFailed(0))),
                    Err(_) => Err(Failure::AllFailed(0)),
                };
            }
        };
        let _guard = InflightGuard {
            forwarder: self,
            key,
        };
        // An identical query may have stored its answer after this one's cache lookup: an
        // in-flight entry is removed only once its answer is in the cache, so looking again
        // now, as the leader, misses nothing.
        if let Lookup::Fresh(hit) =
            self.cache
                .lookup(key, Instant::now(), cfg.cache.serve_stale, Arc::clone)
        {
            stats.shared().coalesced();
            let outcome = Ok(hit);
            tx.send_replace(Some(outcome.clone()));
            return outcome;
        }
        let outcome = self.exchange(q, cfg, recursors, stats).await;
        if let Ok(r) = &outcome {
            let evicted = self.cache.insert(key, r.clone(), &cfg.cache);
            stats.shared().evicted(evicted);
        }
        tx.send_replace(Some(outcome.clone()));
        outcome
    }

    /// Tries the recursors in order (or a random permutation) until one gives NOERROR or
    /// NXDOMAIN.
    async fn exchange(
        &self,
        q: &Query,
        cfg: &DnsConfig,
        recursors: &[SocketAddr],
        stats: &Stats,
    ) -> Outcome {
        if self.exchanges.fetch_add(1, Ordering::Relaxed) >= cfg.max_inflight {
            self.exchanges.fetch_sub(1, Ordering::Relaxed);
            stats.shared().shed();
            return Err(Failure::Overloaded);
        }
        let _slot = ExchangeSlot(&self.exchanges);
        let mut order: Vec<SocketAddr> = recursors.to_vec();
        if cfg.recursor_strategy == RecursorStrategy::Random {
            order.shuffle(&mut rand::rng());
        }
        let Some(request) = UpstreamRequest::new(q) else {
            return Err(Failure::AllFailed(0));
        };
        for addr in &order {
            let counters = stats.upstream(*addr);
            counters.queries.fetch_add(1, Ordering::Relaxed);
            match attempt(&request, *addr, cfg.recursor_timeout, &counters).await {
                Ok(reply) => {
                    let code = u16::from(reply[3] & 0xF);
                    if code != rcode::NOERROR && code != rcode::NXDOMAIN {
                        counters.bad_rcode.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(upstream = %addr, rcode = code, "upstream answered with an error rcode, trying the next");
                        continue;
                    }
                    match CachedResponse::from_upstream(&reply, &cfg.cache, Instant::now()) {
                        Some(r) => return Ok(Arc::new(r)),
                        None => {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(AttemptError::Timeout) => {
                    counters.timeouts.fetch_add(1, Ordering::Relaxed);
                }
                Err(AttemptError::Net(e)) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(upstream = %addr, error = %e, "upstream attempt failed");
                }
                Err(AttemptError::Mismatch) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(upstream = %addr, "upstream reply did not answer our question");
                }
            }
        }
        tracing::debug!(upstreams = order.len(), "all upstream resolvers failed");
        Err(Failure::AllFailed(order.len()))
    }
}

enum AttemptError {
    Timeout,
    Net(NetError),
    /// The reply did not answer our question.
    Mismatch,
}

impl From<NetError> for AttemptError {
    fn from(e: NetError) -> Self {
        // hickory-net maps `io::ErrorKind::TimedOut` (TCP connect) to `Timeout` too.
        match e {
            NetError::Timeout => Self::Timeout,
            e => Self::Net(e),
        }
    }
}

/// The request sent upstream: RD=1, the lower-cased question, EDNS(0) with a 1232-byte
/// payload and no DO bit (we do not serve DNSSEC data). Each attempt gets a fresh random ID.
struct UpstreamRequest {
    message: Message,
    /// The question section (name, type, class) a reply must echo.
    question: Vec<u8>,
}

impl UpstreamRequest {
    fn new(q: &Query) -> Option<Self> {
        let name = Name::read(&mut BinDecoder::new(q.name.lower())).ok()?;
        let mut m = Message::new(0, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        let mut hq = HQuery::query(name, RecordType::from(q.qtype));
        hq.set_query_class(DNSClass::from(q.qclass));
        m.add_query(hq);
        let mut edns = Edns::new();
        edns.set_max_payload(UPSTREAM_PAYLOAD);
        m.set_edns(edns);
        let bytes = m.to_vec().ok()?;
        let end = skip_name(&bytes, HEADER_LEN)? + 4;
        let question = bytes.get(HEADER_LEN..end)?.to_vec();
        Some(Self {
            message: m,
            question,
        })
    }

    /// The request for one attempt, with a fresh random ID. (Over TCP, hickory's
    /// multiplexer replaces the ID with its own random one.)
    fn dns_request(&self) -> DnsRequest {
        let mut m = self.message.clone();
        m.metadata.id = rand::rng().random();
        // Case randomisation stays off: some upstreams do not echo 0x20 case and we must
        // not fail over because of it; the random port and ID are our spoofing defence.
        DnsRequest::new(m, DnsRequestOptions::default())
    }

    /// Whether `reply` answers this request: QR set, one question equal to ours (names
    /// compared case-insensitively). hickory-net has already matched the ID (and, over
    /// UDP, the source address and question) and decoded the message; over TCP its
    /// multiplexer matches the ID only, so the question check here is what guards it.
    fn accepts(&self, reply: &[u8]) -> bool {
        reply.len() >= HEADER_LEN
            && reply[2] & 0x80 != 0
            && reply[4..6] == [0, 1]
            && reply
                .get(HEADER_LEN..HEADER_LEN + self.question.len())
                .is_some_and(|q| q.eq_ignore_ascii_case(&self.question))
    }
}

fn truncated(reply: &[u8]) -> bool {
    reply[2] & 0x02 != 0
}

/// One attempt against one upstream: UDP, then TCP if the UDP reply was truncated.
async fn attempt(
    req: &UpstreamRequest,
    addr: SocketAddr,
    limit: Duration,
    counters: &UpstreamCounters,
) -> Result<Vec<u8>, AttemptError> {
    let reply = timeout(limit, udp_exchange(req, addr, limit))
        .await
        .map_err(|_| AttemptError::Timeout)??;
    if !truncated(&reply) {
        return Ok(reply);
    }
    counters.tcp_retries.fetch_add(1, Ordering::Relaxed);
    timeout(limit, tcp_exchange(req, addr, limit))
        .await
        .map_err(|_| AttemptError::Timeout)?
}

/// One UDP exchange through hickory-net's `UdpClientStream`: it binds a fresh socket on a
/// random source port for every request, sends one datagram (`with_max_retries(1)`: no
/// retransmission inside an attempt, so one attempt is one query upstream) and accepts
/// only a reply from `addr` with our ID and question. The reply's raw bytes are kept.
async fn udp_exchange(
    req: &UpstreamRequest,
    addr: SocketAddr,
    limit: Duration,
) -> Result<Vec<u8>, AttemptError> {
    let mut stream = UdpClientStream::builder(addr, TokioRuntimeProvider::default())
        .with_timeout(Some(limit))
        .with_max_retries(1)
        .build();
    let reply = stream
        .send_message(req.dns_request())
        .first_answer()
        .await?
        .into_buffer();
    if req.accepts(&reply) {
        Ok(reply)
    } else {
        Err(AttemptError::Mismatch)
    }
}

/// One TCP exchange through hickory-net's `TcpClientStream` (a `DnsExchange` over a
/// `DnsMultiplexer`, one connection per exchange). Its background task lives in the
/// runtime provider's task set, which is dropped (and the task aborted, closing the
/// connection) when this attempt ends, however it ends.
async fn tcp_exchange(
    req: &UpstreamRequest,
    addr: SocketAddr,
    limit: Duration,
) -> Result<Vec<u8>, AttemptError> {
    let provider = TokioRuntimeProvider::default();
    let exchange = TcpClientStream::exchange(addr, None, limit, Some(1), provider.clone()).await?;
    let reply = exchange
        .send(req.dns_request())
        .first_answer()
        .await?
        .into_buffer();
    if req.accepts(&reply) {
        Ok(reply)
    } else {
        Err(AttemptError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::{query, store};

    #[tokio::test]
    async fn a_miss_that_finds_the_answer_stored_meanwhile_does_not_go_upstream() {
        // The race: this query missed the cache, then an identical query's exchange stored
        // its answer and ended before this one looked for an exchange in flight.
        let fwd = Forwarder::default();
        let cfg = DnsConfig::default();
        let stats = Stats::new(1);
        let name = "late.example.test.";
        let key = name.as_bytes();
        let stored = store(&fwd.cache, name, &cfg.cache, Instant::now());
        // Nothing listens there: asking it would fail.
        let dead = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let got = fwd
            .coalesced(&query(name, false), key, &cfg, &[dead], &stats)
            .await
            .expect("answered from the cache");
        assert!(Arc::ptr_eq(&got, &stored));
        assert_eq!(stats.upstream(dead).queries.load(Ordering::Relaxed), 0);
        assert!(fwd.inflight.lock().is_empty());
    }
}
