//! The forwarder's answer cache: upstream responses kept as wire bytes.
//!
//! A [`CachedResponse`] is the upstream message with its OPT record removed, its question
//! lower-cased and the offset of every TTL field recorded, so a hit is a copy plus a few
//! patches (ID, flags, the client's question bytes for 0x20 case, decremented TTLs, our
//! OPT record). Rules (RFC 2308, RFC 8767):
//! - positive answers live for the smallest TTL in the answer section, capped by
//!   `max_positive_ttl`;
//! - NXDOMAIN and NODATA live for min(SOA TTL, SOA MINIMUM), capped by `max_negative_ttl`,
//!   and only when the authority section has an SOA;
//! - everything else (SERVFAIL, REFUSED, referrals) is never cached;
//! - an expired entry may still be served, with TTL 30, for `serve_stale` after expiry
//!   when every upstream fails.
//!
//! The cache is sharded; each shard is a `HashMap` from key to a slot in a `Vec`, so
//! eviction can sample random slots (approximate LRU, Redis-style) in O(1). Both the entry
//! count and the bytes held are bounded. Locks are held only for short synchronous work,
//! never across an await.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::RngExt;
use tokio::time::Instant;

use crate::config::{CacheConfig, ttl_secs};
use crate::error::rcode;
use crate::wire::{HEADER_LEN, OPT_LEN, OptOut, Query, response_flags, walk_response};

/// TTL of answers served stale (RFC 8767 recommends 30 seconds).
pub(crate) const STALE_TTL: u32 = 30;
const SHARDS: usize = 16;
/// Bookkeeping bytes counted per entry on top of its key and wire bytes.
const ENTRY_OVERHEAD: usize = 128;
/// Random slots compared per eviction.
const EVICTION_SAMPLES: usize = 5;

/// An upstream response ready to be served many times.
#[derive(Debug)]
pub(crate) struct CachedResponse {
    /// The message without OPT; ID zeroed, question lower-cased.
    wire: Box<[u8]>,
    /// (offset of a TTL field, the TTL to count down from).
    ttls: Box<[(u16, u32)]>,
    rcode: u16,
    question_end: u16,
    additional_start: u16,
    counts: [u16; 3],
    stored: Instant,
    /// Seconds the entry is fresh; `None` when it must not be cached.
    lifetime: Option<u32>,
}

/// The freshness of a cached response at some instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Freshness {
    Fresh,
    /// Expired but inside the serve-stale window.
    Stale,
    Dead,
}

impl CachedResponse {
    /// Prepares an upstream response for serving and caching. `None` when it is malformed.
    pub(crate) fn from_upstream(msg: &[u8], limits: &CacheConfig, now: Instant) -> Option<Self> {
        let layout = walk_response(msg)?;
        let flags = u16::from_be_bytes([msg[2], msg[3]]);
        let rcode = flags & 0xF;
        let negative =
            rcode == rcode::NXDOMAIN || (rcode == rcode::NOERROR && layout.counts[0] == 0);
        let lifetime = match rcode {
            rcode::NOERROR if !negative => layout.min_answer_ttl.map(|ttl| {
                // A CNAME chain ending in NODATA also carries an SOA: take the smaller.
                let ttl = layout.negative_ttl.map_or(ttl, |neg| ttl.min(neg));
                ttl.min(ttl_secs(limits.max_positive_ttl))
            }),
            rcode::NOERROR | rcode::NXDOMAIN => layout
                .negative_ttl
                .map(|ttl| ttl.min(ttl_secs(limits.max_negative_ttl))),
            _ => None,
        };
        // No record outlives its entry's reason to be cached: for negative answers every TTL
        // (the SOA's included, RFC 2308 §5) is capped at the negative TTL.
        let cap = match (negative, lifetime) {
            (true, Some(neg)) => neg,
            (true, None) => ttl_secs(limits.max_negative_ttl),
            (false, _) => ttl_secs(limits.max_positive_ttl),
        };
        // Drop the OPT record: OPT is per hop and never cached (RFC 6891).
        let mut wire = Vec::with_capacity(msg.len());
        let (additional_count, cut) = match layout.opt {
            Some((start, end)) => {
                wire.extend_from_slice(&msg[..start]);
                wire.extend_from_slice(&msg[end..]);
                (layout.counts[2], Some((start, end - start)))
            }
            None => {
                wire.extend_from_slice(msg);
                (layout.counts[2], None)
            }
        };
        wire[0..2].copy_from_slice(&[0, 0]);
        wire[10..12].copy_from_slice(&additional_count.to_be_bytes());
        // The name only: QTYPE and QCLASS are binary and must not be touched.
        for b in &mut wire[HEADER_LEN..layout.question_end - 4] {
            b.make_ascii_lowercase();
        }
        let shift = |off: usize| match cut {
            Some((start, len)) if off > start => off - len,
            _ => off,
        };
        let ttls = layout
            .ttl_offsets
            .iter()
            .map(|&off| {
                let off = shift(usize::from(off));
                let ttl =
                    u32::from_be_bytes([wire[off], wire[off + 1], wire[off + 2], wire[off + 3]]);
                (off as u16, ttl.min(cap))
            })
            .collect();
        Some(Self {
            wire: wire.into_boxed_slice(),
            ttls,
            rcode,
            question_end: layout.question_end as u16,
            additional_start: shift(layout.additional_start) as u16,
            counts: layout.counts,
            stored: now,
            lifetime,
        })
    }

    /// The response code.
    pub(crate) fn rcode(&self) -> u16 {
        self.rcode
    }

    /// Whether the response may be cached at all (TTL 0 means "do not cache", so such
    /// answers are not kept even for serve-stale).
    pub(crate) fn cacheable(&self) -> bool {
        self.lifetime.is_some_and(|l| l > 0)
    }

    /// Freshness at `now` with a serve-stale window of `stale_window`.
    pub(crate) fn freshness(&self, now: Instant, stale_window: Duration) -> Freshness {
        let Some(lifetime) = self.lifetime else {
            return Freshness::Dead;
        };
        let age = now.saturating_duration_since(self.stored);
        let lifetime = Duration::from_secs(u64::from(lifetime));
        if age < lifetime {
            Freshness::Fresh
        } else if age < lifetime + stale_window {
            Freshness::Stale
        } else {
            Freshness::Dead
        }
    }

    fn memory(&self, key_len: usize) -> usize {
        key_len + self.wire.len() + self.ttls.len() * 8 + ENTRY_OVERHEAD
    }

    /// Writes the response to `q` into `out`: the client's ID, flags and question bytes,
    /// TTLs counted down to `now` (or [`STALE_TTL`] when `stale`), and an OPT record if the
    /// client sent one. If it exceeds `limit`, the additional section goes first; if it
    /// still does not fit, only the question is sent, with TC. Returns whether TC was set.
    pub(crate) fn write(
        &self,
        q: &Query,
        now: Instant,
        stale: bool,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> bool {
        out.clear();
        out.extend_from_slice(&self.wire);
        let qname = q.name.wire();
        // Same length as the stored name: the key is the lower-cased question.
        out[HEADER_LEN..HEADER_LEN + qname.len()].copy_from_slice(qname);
        let elapsed = ttl_secs(now.saturating_duration_since(self.stored));
        for &(off, ttl) in self.ttls.iter() {
            let ttl = if stale {
                STALE_TTL
            } else {
                ttl.saturating_sub(elapsed)
            };
            let off = usize::from(off);
            out[off..off + 4].copy_from_slice(&ttl.to_be_bytes());
        }
        let opt = OptOut::for_request(q.edns, self.rcode);
        let reserve = if opt.is_some() { OPT_LEN } else { 0 };
        let mut truncated = false;
        let mut counts = self.counts;
        if out.len() + reserve > limit {
            out.truncate(usize::from(self.additional_start));
            counts[2] = 0;
            if out.len() + reserve > limit {
                out.truncate(usize::from(self.question_end));
                counts = [0, 0, 0];
                truncated = true;
            }
        }
        let flags = response_flags(q.flags, false, truncated, true, self.rcode);
        out[0..2].copy_from_slice(&q.id.to_be_bytes());
        out[2..4].copy_from_slice(&flags.to_be_bytes());
        out[6..8].copy_from_slice(&counts[0].to_be_bytes());
        out[8..10].copy_from_slice(&counts[1].to_be_bytes());
        out[10..12].copy_from_slice(&(counts[2] + u16::from(opt.is_some())).to_be_bytes());
        if let Some(opt) = opt {
            opt.write(out);
        }
        truncated
    }
}

struct Slot {
    key: Box<[u8]>,
    value: Arc<CachedResponse>,
    last_used: u64,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<[u8]>, usize>,
    slots: Vec<Slot>,
    bytes: usize,
    tick: u64,
}

impl Shard {
    fn remove_slot(&mut self, i: usize) {
        let slot = self.slots.swap_remove(i);
        self.bytes -= slot.value.memory(slot.key.len());
        self.map.remove(&slot.key);
        if let Some(moved) = self.slots.get(i) {
            // The last slot moved into `i`.
            if let Some(idx) = self.map.get_mut(&moved.key) {
                *idx = i;
            }
        }
    }
}

/// What a lookup found.
pub(crate) enum Lookup<R> {
    Fresh(R),
    /// Expired but servable if the upstreams fail.
    Stale(Arc<CachedResponse>),
    Miss,
}

/// The sharded response cache.
pub(crate) struct Cache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl Default for Cache {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Cache {
    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Looks `key` up; for a fresh entry runs `serve` on it under the shard lock (a copy
    /// of a few hundred bytes, cheaper than reference counting on the hot path).
    pub(crate) fn lookup<R>(
        &self,
        key: &[u8],
        now: Instant,
        stale_window: Duration,
        serve: impl FnOnce(&Arc<CachedResponse>) -> R,
    ) -> Lookup<R> {
        let mut shard = self.shard(key).lock();
        let Some(&i) = shard.map.get(key) else {
            return Lookup::Miss;
        };
        shard.tick += 1;
        let tick = shard.tick;
        let slot = &mut shard.slots[i];
        match slot.value.freshness(now, stale_window) {
            Freshness::Fresh => {
                slot.last_used = tick;
                Lookup::Fresh(serve(&slot.value))
            }
            Freshness::Stale => Lookup::Stale(slot.value.clone()),
            Freshness::Dead => {
                shard.remove_slot(i);
                Lookup::Miss
            }
        }
    }

    /// Stores a cacheable response, evicting as needed to stay within `limits`.
    pub(crate) fn insert(
        &self,
        key: &[u8],
        value: Arc<CachedResponse>,
        limits: &CacheConfig,
    ) -> usize {
        if !value.cacheable() {
            return 0;
        }
        let max_entries = limits.max_entries.div_ceil(SHARDS).max(1);
        let max_bytes = limits.max_bytes.div_ceil(SHARDS).max(1);
        let size = value.memory(key.len());
        if size > max_bytes {
            return 0;
        }
        let mut shard = self.shard(key).lock();
        shard.tick += 1;
        let tick = shard.tick;
        // Where the entry just stored sits; eviction never picks it.
        let mut fresh = if let Some(&i) = shard.map.get(key) {
            let old = shard.slots[i].value.memory(key.len());
            shard.bytes = shard.bytes - old + size;
            let slot = &mut shard.slots[i];
            slot.value = value;
            slot.last_used = tick;
            i
        } else {
            shard.bytes += size;
            let key: Box<[u8]> = key.into();
            let i = shard.slots.len();
            shard.map.insert(key.clone(), i);
            shard.slots.push(Slot {
                key,
                value,
                last_used: tick,
            });
            i
        };
        let mut evicted = 0;
        let mut rng = rand::rng();
        // Evict the least recently used of a few random other slots until within bounds.
        // The loop ends: every turn removes one of a finite number of slots, and the fresh
        // entry alone fits both bounds (`size <= max_bytes`, `max_entries >= 1`).
        while (shard.slots.len() > max_entries || shard.bytes > max_bytes) && shard.slots.len() > 1
        {
            let others = shard.slots.len() - 1;
            let victim = (0..EVICTION_SAMPLES.min(others))
                .map(|_| {
                    let r = rng.random_range(0..others);
                    if r >= fresh { r + 1 } else { r }
                })
                .min_by_key(|&i| shard.slots[i].last_used)
                .unwrap_or(usize::from(fresh == 0));
            let last = shard.slots.len() - 1;
            shard.remove_slot(victim);
            if fresh == last {
                // `swap_remove` moved the fresh entry into the victim's place.
                fresh = victim;
            }
            evicted += 1;
        }
        evicted
    }

    /// Number of entries (all shards).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().slots.len()).sum()
    }

    /// Bytes held (all shards).
    pub(crate) fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().bytes).sum()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::{Parse, parse_fast};
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as HQuery, ResponseCode};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    /// An upstream reply for `name` A: one answer (NOERROR without `soa`), or the SOA.
    pub(crate) fn upstream(
        name: &str,
        ttl: u32,
        rcode: ResponseCode,
        soa: Option<(u32, u32)>,
    ) -> Vec<u8> {
        let mut m = Message::new(99, MessageType::Response, OpCode::Query);
        m.metadata.response_code = rcode;
        let n = Name::from_ascii(name).unwrap();
        m.add_query(HQuery::query(n.clone(), RecordType::A));
        if rcode == ResponseCode::NoError && soa.is_none() {
            m.add_answer(Record::from_rdata(
                n.clone(),
                ttl,
                RData::A(A::new(192, 0, 2, 1)),
            ));
        }
        if let Some((soa_ttl, minimum)) = soa {
            let zone = Name::from_ascii("example.test.").unwrap();
            m.add_authority(Record::from_rdata(
                zone.clone(),
                soa_ttl,
                RData::SOA(SOA::new(zone.clone(), zone, 1, 2, 3, 4, minimum)),
            ));
        }
        m.set_edns(Edns::new());
        m.to_vec().unwrap()
    }

    /// A parsed query for `name` A (RD set).
    pub(crate) fn query(name: &str, edns: bool) -> Query {
        let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
        m.add_query(HQuery::query(
            Name::from_ascii(name).unwrap(),
            RecordType::A,
        ));
        if edns {
            m.set_edns(Edns::new());
        }
        let mut q = Query::empty();
        assert_eq!(parse_fast(&m.to_vec().unwrap(), &mut q), Parse::Query);
        q
    }

    fn decode(out: &[u8]) -> Message {
        Message::from_vec(out).unwrap()
    }

    #[test]
    fn serves_with_decremented_ttl_and_client_case() {
        let t0 = Instant::now();
        let limits = CacheConfig::default();
        let r = CachedResponse::from_upstream(
            &upstream("www.example.test.", 300, ResponseCode::NoError, None),
            &limits,
            t0,
        )
        .unwrap();
        assert_eq!(r.lifetime, Some(300));
        let q = query("WwW.Example.TEST.", false);
        let mut out = Vec::new();
        assert!(!r.write(&q, t0 + Duration::from_secs(100), false, 512, &mut out));
        let m = decode(&out);
        assert_eq!(m.metadata.id, 0x4242);
        assert!(m.metadata.recursion_available && !m.metadata.authoritative);
        assert_eq!(m.queries[0].name().to_ascii(), "WwW.Example.TEST.");
        assert_eq!(m.answers[0].ttl, 200);
        assert!(m.edns.is_none(), "upstream OPT stripped, client sent none");
        assert_eq!(
            r.freshness(t0 + Duration::from_secs(299), Duration::ZERO),
            Freshness::Fresh
        );
        assert_eq!(
            r.freshness(t0 + Duration::from_secs(300), Duration::from_secs(10)),
            Freshness::Stale
        );
        assert_eq!(
            r.freshness(t0 + Duration::from_secs(310), Duration::from_secs(10)),
            Freshness::Dead
        );
        // Stale answers get a short TTL; an EDNS client gets our OPT.
        let q = query("www.example.test.", true);
        r.write(&q, t0 + Duration::from_secs(1000), true, 512, &mut out);
        let m = decode(&out);
        assert_eq!(m.answers[0].ttl, STALE_TTL);
        assert!(m.edns.is_some());
    }

    #[test]
    fn negative_answers_need_an_soa_and_use_its_minimum() {
        let t0 = Instant::now();
        let limits = CacheConfig::default();
        let nx = CachedResponse::from_upstream(
            &upstream(
                "nx.example.test.",
                0,
                ResponseCode::NXDomain,
                Some((900, 60)),
            ),
            &limits,
            t0,
        )
        .unwrap();
        assert_eq!(nx.lifetime, Some(60));
        assert_eq!(nx.rcode(), rcode::NXDOMAIN);
        let nodata = CachedResponse::from_upstream(
            &upstream(
                "nd.example.test.",
                0,
                ResponseCode::NoError,
                Some((30, 600)),
            ),
            &limits,
            t0,
        )
        .unwrap();
        assert_eq!(nodata.lifetime, Some(30));
        let bare = CachedResponse::from_upstream(
            &upstream("nx.example.test.", 0, ResponseCode::NXDomain, None),
            &limits,
            t0,
        )
        .unwrap();
        assert!(!bare.cacheable(), "no SOA, no negative caching");
        let fail = CachedResponse::from_upstream(
            &upstream("x.example.test.", 0, ResponseCode::ServFail, None),
            &limits,
            t0,
        )
        .unwrap();
        assert!(!fail.cacheable());
        let mut capped = limits;
        capped.max_negative_ttl = Duration::from_secs(5);
        let nx = CachedResponse::from_upstream(
            &upstream(
                "nx.example.test.",
                0,
                ResponseCode::NXDomain,
                Some((900, 60)),
            ),
            &capped,
            t0,
        )
        .unwrap();
        assert_eq!(nx.lifetime, Some(5));
        let mut out = Vec::new();
        nx.write(
            &query("nx.example.test.", false),
            t0 + Duration::from_secs(2),
            false,
            512,
            &mut out,
        );
        let m = decode(&out);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(
            m.authorities[0].ttl, 3,
            "SOA TTL capped to 5 and counted down"
        );
    }

    #[test]
    fn positive_ttl_is_capped() {
        let limits = CacheConfig {
            max_positive_ttl: Duration::from_secs(10),
            ..CacheConfig::default()
        };
        let r = CachedResponse::from_upstream(
            &upstream("a.example.test.", 3600, ResponseCode::NoError, None),
            &limits,
            Instant::now(),
        )
        .unwrap();
        assert_eq!(r.lifetime, Some(10));
    }

    #[test]
    fn oversized_responses_are_truncated_to_the_question() {
        let t0 = Instant::now();
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        let n = Name::from_ascii("big.example.test.").unwrap();
        m.add_query(HQuery::query(n.clone(), RecordType::A));
        for i in 0..60u8 {
            m.add_answer(Record::from_rdata(
                n.clone(),
                60,
                RData::A(A::new(10, 0, 0, i)),
            ));
        }
        let r = CachedResponse::from_upstream(&m.to_vec().unwrap(), &CacheConfig::default(), t0)
            .unwrap();
        let mut out = Vec::new();
        assert!(r.write(&query("big.example.test.", false), t0, false, 512, &mut out));
        let m = decode(&out);
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty());
        assert!(!r.write(
            &query("big.example.test.", false),
            t0,
            false,
            65_535,
            &mut out
        ));
        assert_eq!(decode(&out).answers.len(), 60);
    }

    /// Caches an upstream answer for `name` (A, TTL 60) as received at `t0`, under the key
    /// `name`; returns what was stored.
    pub(crate) fn store(
        cache: &Cache,
        name: &str,
        limits: &CacheConfig,
        t0: Instant,
    ) -> Arc<CachedResponse> {
        let r = CachedResponse::from_upstream(
            &upstream(name, 60, ResponseCode::NoError, None),
            limits,
            t0,
        )
        .unwrap();
        let r = Arc::new(r);
        cache.insert(name.as_bytes(), Arc::clone(&r), limits);
        r
    }

    #[test]
    fn lookup_insert_and_eviction_bound() {
        let cache = Cache::default();
        let limits = CacheConfig {
            max_entries: 64,
            ..CacheConfig::default()
        };
        let t0 = Instant::now();
        for i in 0..1000 {
            let name = format!("n{i}.example.test.");
            store(&cache, &name, &limits, t0);
        }
        assert!(cache.len() <= 64 + SHARDS, "bounded: {}", cache.len());
        assert!(cache.len() >= 32, "but not emptied: {}", cache.len());
        let key = b"n999.example.test.";
        assert!(matches!(
            cache.lookup(key, t0, Duration::ZERO, |_| ()),
            Lookup::Fresh(())
        ));
        assert!(matches!(
            cache.lookup(
                key,
                t0 + Duration::from_secs(61),
                Duration::from_secs(60),
                |_| ()
            ),
            Lookup::Stale(_)
        ));
        assert!(matches!(
            cache.lookup(
                key,
                t0 + Duration::from_secs(200),
                Duration::from_secs(60),
                |_| ()
            ),
            Lookup::Miss
        ));
        assert!(
            matches!(cache.lookup(key, t0, Duration::ZERO, |_| ()), Lookup::Miss),
            "dead entries are removed"
        );
    }

    #[test]
    fn the_entry_just_stored_is_never_the_one_evicted() {
        // One entry per shard: every insert into a full shard must evict the other entry,
        // never the new one (a random sample could pick only the new slot).
        let cache = Cache::default();
        let limits = CacheConfig {
            max_entries: SHARDS,
            ..CacheConfig::default()
        };
        let t0 = Instant::now();
        for i in 0..2000 {
            let name = format!("e{i}.example.test.");
            store(&cache, &name, &limits, t0);
            assert!(
                matches!(
                    cache.lookup(name.as_bytes(), t0, Duration::ZERO, |_| ()),
                    Lookup::Fresh(())
                ),
                "{name} was evicted by its own insert"
            );
            assert!(cache.len() <= SHARDS, "bounded: {}", cache.len());
        }
    }

    #[test]
    fn byte_bound_holds() {
        let cache = Cache::default();
        let limits = CacheConfig {
            max_bytes: 16 * 1024,
            ..CacheConfig::default()
        };
        let t0 = Instant::now();
        for i in 0..500 {
            let name = format!("host-{i}.example.test.");
            store(&cache, &name, &limits, t0);
        }
        assert!(
            cache.bytes() <= 16 * 1024 + SHARDS * 512,
            "{}",
            cache.bytes()
        );
    }
}
