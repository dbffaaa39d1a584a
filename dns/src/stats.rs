//! Query statistics: relaxed atomic counters, sharded per UDP thread so the hot path never
//! bounces a cache line between cores; readers sum the shards into a [`DnsStatsSnapshot`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// What a query asked for, as counted in the statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum QueryKind {
    /// `*.service.<domain>` and RFC 2782 names.
    Service,
    /// `*.node.<domain>`.
    Node,
    /// `*.addr.<domain>`.
    Addr,
    /// Other zone names: apex, empty non-terminals, unknown forms.
    Zone,
    /// Reverse lookups answered from the catalog.
    Ptr,
    /// Names outside the zone (forwarded or answered from the cache).
    Forward,
    /// Refused, malformed or unsupported queries.
    Other,
}

const KINDS: [QueryKind; 7] = [
    QueryKind::Service,
    QueryKind::Node,
    QueryKind::Addr,
    QueryKind::Zone,
    QueryKind::Ptr,
    QueryKind::Forward,
    QueryKind::Other,
];
const RCODES: usize = 24;

/// One shard of counters, aligned to keep shards on separate cache lines.
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct Counters {
    udp: AtomicU64,
    tcp: AtomicU64,
    fast_path: AtomicU64,
    general_path: AtomicU64,
    kinds: [AtomicU64; KINDS.len()],
    rcodes: [AtomicU64; RCODES],
    truncated: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    cache_stale: AtomicU64,
    cache_evictions: AtomicU64,
    coalesced: AtomicU64,
    shed: AtomicU64,
    stale_catalog: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Counts one answered query.
    pub(crate) fn answered(
        &self,
        tcp: bool,
        fast: bool,
        kind: QueryKind,
        rcode: u16,
        truncated: bool,
    ) {
        bump(if tcp { &self.tcp } else { &self.udp });
        bump(if fast {
            &self.fast_path
        } else {
            &self.general_path
        });
        bump(
            &self.kinds[KINDS
                .iter()
                .position(|k| *k == kind)
                .unwrap_or(KINDS.len() - 1)],
        );
        bump(&self.rcodes[usize::from(rcode).min(RCODES - 1)]);
        if truncated {
            bump(&self.truncated);
        }
    }

    pub(crate) fn cache_hit(&self) {
        bump(&self.cache_hits);
    }

    pub(crate) fn cache_miss(&self) {
        bump(&self.cache_misses);
    }

    pub(crate) fn cache_stale(&self) {
        bump(&self.cache_stale);
    }

    pub(crate) fn evicted(&self, n: usize) {
        self.cache_evictions.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn coalesced(&self) {
        bump(&self.coalesced);
    }

    pub(crate) fn shed(&self) {
        bump(&self.shed);
    }

    /// Counts a zone answer given from a replica more than 5 s behind (Consul's
    /// `stale_queries`) or refused as too stale.
    pub(crate) fn stale_catalog(&self) {
        bump(&self.stale_catalog);
    }
}

/// Counters for one upstream resolver.
#[derive(Default, Debug)]
pub(crate) struct UpstreamCounters {
    pub(crate) queries: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) bad_rcode: AtomicU64,
    pub(crate) tcp_retries: AtomicU64,
}

/// All statistics of a server.
pub(crate) struct Stats {
    shards: Box<[Counters]>,
    /// Zone indexes built (one per published catalog or config change).
    pub(crate) zone_builds: AtomicU64,
    upstreams: Mutex<HashMap<SocketAddr, Arc<UpstreamCounters>>>,
}

impl Stats {
    /// `shards` shards; the last one is shared by the asynchronous paths.
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1)).map(|_| Counters::default()).collect(),
            zone_builds: AtomicU64::new(0),
            upstreams: Mutex::default(),
        }
    }

    /// The shard for UDP thread `i`.
    pub(crate) fn shard(&self, i: usize) -> &Counters {
        &self.shards[i % self.shards.len()]
    }

    /// The shard of the asynchronous (TCP and general) paths.
    pub(crate) fn shared(&self) -> &Counters {
        &self.shards[self.shards.len() - 1]
    }

    /// Counters of `addr`, created on first use.
    pub(crate) fn upstream(&self, addr: SocketAddr) -> Arc<UpstreamCounters> {
        self.upstreams.lock().entry(addr).or_default().clone()
    }

    /// Sums every shard.
    pub(crate) fn snapshot(&self, cache_entries: usize, cache_bytes: usize) -> DnsStatsSnapshot {
        let sum = |f: &dyn Fn(&Counters) -> &AtomicU64| {
            self.shards
                .iter()
                .map(|c| f(c).load(Ordering::Relaxed))
                .sum::<u64>()
        };
        let mut upstreams: Vec<UpstreamStats> = self
            .upstreams
            .lock()
            .iter()
            .map(|(addr, c)| UpstreamStats {
                addr: *addr,
                queries: c.queries.load(Ordering::Relaxed),
                timeouts: c.timeouts.load(Ordering::Relaxed),
                errors: c.errors.load(Ordering::Relaxed),
                bad_rcode: c.bad_rcode.load(Ordering::Relaxed),
                tcp_retries: c.tcp_retries.load(Ordering::Relaxed),
            })
            .collect();
        upstreams.sort_by_key(|u| u.addr);
        DnsStatsSnapshot {
            udp_queries: sum(&|c| &c.udp),
            tcp_queries: sum(&|c| &c.tcp),
            fast_path: sum(&|c| &c.fast_path),
            general_path: sum(&|c| &c.general_path),
            by_kind: KINDS
                .iter()
                .enumerate()
                .map(|(i, k)| (*k, sum(&|c| &c.kinds[i])))
                .filter(|(_, n)| *n > 0)
                .collect(),
            by_rcode: (0..RCODES)
                .map(|i| (i as u16, sum(&|c| &c.rcodes[i])))
                .filter(|(_, n)| *n > 0)
                .collect(),
            truncated: sum(&|c| &c.truncated),
            cache_hits: sum(&|c| &c.cache_hits),
            cache_misses: sum(&|c| &c.cache_misses),
            cache_stale_served: sum(&|c| &c.cache_stale),
            cache_evictions: sum(&|c| &c.cache_evictions),
            cache_entries,
            cache_bytes,
            coalesced: sum(&|c| &c.coalesced),
            shed: sum(&|c| &c.shed),
            stale_catalog: sum(&|c| &c.stale_catalog),
            zone_builds: self.zone_builds.load(Ordering::Relaxed),
            upstreams,
        }
    }
}

/// A point-in-time copy of the server's counters, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DnsStatsSnapshot {
    /// Queries answered over UDP.
    pub udp_queries: u64,
    /// Queries answered over TCP.
    pub tcp_queries: u64,
    /// Queries answered by the synchronous fast path.
    pub fast_path: u64,
    /// Queries answered by the general (asynchronous) path.
    pub general_path: u64,
    /// Answered queries by kind (kinds never seen are omitted).
    pub by_kind: Vec<(QueryKind, u64)>,
    /// Answered queries by response code (codes never sent are omitted).
    pub by_rcode: Vec<(u16, u64)>,
    /// UDP responses sent with TC set.
    pub truncated: u64,
    /// Forwarded names answered from the cache.
    pub cache_hits: u64,
    /// Forwarded names not fresh in the cache.
    pub cache_misses: u64,
    /// Stale answers served because every upstream failed.
    pub cache_stale_served: u64,
    /// Entries evicted to stay within the cache bounds.
    pub cache_evictions: u64,
    /// Entries in the cache now.
    pub cache_entries: usize,
    /// Bytes held by the cache now.
    pub cache_bytes: usize,
    /// Queries that waited for an identical upstream query instead of sending their own.
    pub coalesced: u64,
    /// Queries answered SERVFAIL because too many were in flight.
    pub shed: u64,
    /// Zone queries answered from a replica more than 5 s behind the leader, or refused
    /// (SERVFAIL) because it was staler than `max_stale`.
    pub stale_catalog: u64,
    /// Times the catalog was indexed (each publication or config change, once).
    pub zone_builds: u64,
    /// Per-upstream counters.
    pub upstreams: Vec<UpstreamStats>,
}

impl DnsStatsSnapshot {
    /// Answered queries of `kind`.
    pub fn kind(&self, kind: QueryKind) -> u64 {
        self.by_kind
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }

    /// Responses sent with `rcode`.
    pub fn rcode(&self, rcode: u16) -> u64 {
        self.by_rcode
            .iter()
            .find(|(r, _)| *r == rcode)
            .map_or(0, |(_, n)| *n)
    }
}

/// Counters for one upstream resolver.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpstreamStats {
    /// The upstream's address.
    pub addr: SocketAddr,
    /// Attempts sent to it.
    pub queries: u64,
    /// Attempts that timed out.
    pub timeouts: u64,
    /// Attempts that failed with a network error or an unusable reply.
    pub errors: u64,
    /// Replies with an rcode other than NOERROR or NXDOMAIN.
    pub bad_rcode: u64,
    /// Truncated UDP replies retried over TCP.
    pub tcp_retries: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_sum_up() {
        let stats = Stats::new(3);
        stats
            .shard(0)
            .answered(false, true, QueryKind::Service, 0, false);
        stats
            .shard(1)
            .answered(false, true, QueryKind::Service, 3, true);
        stats
            .shared()
            .answered(true, false, QueryKind::Forward, 2, false);
        stats
            .upstream("127.0.0.1:53".parse().unwrap())
            .queries
            .fetch_add(2, Ordering::Relaxed);
        let snap = stats.snapshot(0, 0);
        assert_eq!((snap.udp_queries, snap.tcp_queries), (2, 1));
        assert_eq!((snap.fast_path, snap.general_path), (2, 1));
        assert_eq!(snap.kind(QueryKind::Service), 2);
        assert_eq!(snap.rcode(3), 1);
        assert_eq!(snap.truncated, 1);
        assert_eq!(snap.upstreams[0].queries, 2);
    }
}
