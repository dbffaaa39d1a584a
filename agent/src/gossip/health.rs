//! Lifeguard (Dadgar et al., 2018; memberlist's `awareness.go` and `suspicion.go`) on top of
//! foca, which has neither part:
//!
//! - **Dynamic suspicion.** foca declares a suspect down after one fixed time. Here the
//!   gossip task holds foca's `ChangeSuspectToDown` timers itself and fires each at
//!   `started + timeout(c)`, where `c` is the number of *other* members that independently
//!   failed to probe the same identity at the same incarnation ([`Accusation`]s, spread as
//!   custom broadcasts): `max` with no confirmation, shrinking logarithmically to `min` at
//!   `k` confirmations (memberlist's formula). A lone suspicion, which is what packet loss or
//!   one slow member produces, waits long enough for the suspect to refute it; a real death,
//!   which every member's probes confirm, still ends after about `min`.
//! - **Local health awareness.** A score from 0 to `max` that rises when this agent's own
//!   probes get no answer or when it has to refute a suspicion about itself, and falls with
//!   every probe that succeeds. The probe period and the wait for a direct ack are scaled by
//!   `score + 1`: an agent that is itself the problem (starved CPU, a lossy link) probes
//!   more slowly and waits longer before suspecting others, instead of accusing healthy
//!   members. Reported as Consul's `health_score` in `/v1/agent/self` `Stats.serf_lan`.
//!
//! Everything here is plain state driven by the gossip task (no I/O, no clock of its own).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use foca::Timer;
use tokio::time::Instant;

use super::identity::GossipId;
use super::wire::Accusation;

/// Memberlist's awareness: 0 is healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Awareness {
    score: u32,
    max: u32,
}

impl Awareness {
    /// A healthy score with the ceiling `max` (memberlist: 8).
    pub const fn new(max: u32) -> Awareness {
        Awareness { score: 0, max }
    }

    /// The current score (`health_score`).
    pub fn score(&self) -> u32 {
        self.score
    }

    /// A probe of ours got no ack, directly or indirectly.
    pub fn probe_failed(&mut self) {
        self.score = (self.score + 1).min(self.max);
    }

    /// We had to refute a suspicion about ourselves.
    pub fn refuted(&mut self) {
        self.score = (self.score + 1).min(self.max);
    }

    /// A probe of ours completed.
    pub fn probe_succeeded(&mut self) {
        self.score = self.score.saturating_sub(1);
    }

    /// `d` scaled for the current health (`d × (score + 1)`).
    pub fn scale(&self, d: Duration) -> Duration {
        d * (self.score + 1)
    }
}

/// Suspicion bounds for one cluster size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The time with `k` confirmations (and the floor).
    pub min: Duration,
    /// The time with no confirmation.
    pub max: Duration,
    /// Confirmations expected from a real failure.
    pub k: u32,
}

impl Bounds {
    /// memberlist's `remainingSuspicionTime` before subtracting the elapsed time:
    /// `max − (max − min) × ln(c + 1) / ln(k + 1)`, at least `min`; `min` when `k` is 0.
    pub fn timeout(&self, confirmations: u32) -> Duration {
        if self.k == 0 {
            return self.min;
        }
        let frac = f64::from(confirmations + 1).ln() / f64::from(self.k + 1).ln();
        let span = self.max.saturating_sub(self.min).as_secs_f64();
        let t = self.max.as_secs_f64() - frac * span;
        Duration::from_secs_f64(t.max(self.min.as_secs_f64()))
    }
}

/// Which suspicion an accusation or a timer belongs to: member name, identity bump,
/// incarnation.
type Key = (String, u64, u16);

#[derive(Debug)]
struct Suspicion {
    /// When our own timer started (our first failed probe of this incarnation).
    started: Option<Instant>,
    /// foca's timer, handed back when the suspicion runs out.
    timer: Option<Timer<GossipId>>,
    /// Others who failed to probe it (never us).
    accusers: BTreeSet<String>,
    /// When this entry was first seen (for forgetting stale accusations).
    seen: Instant,
}

impl Suspicion {
    /// When our held timer runs out with the confirmations so far (`None`: no timer held).
    fn deadline(&self, bounds: &Bounds) -> Option<Instant> {
        self.timer.as_ref()?;
        Some(self.started? + bounds.timeout(self.accusers.len() as u32))
    }
}

/// The suspicions this agent holds or has heard confirmations for.
#[derive(Debug, Default)]
pub struct Suspicions {
    by_key: BTreeMap<Key, Suspicion>,
}

/// At most this many suspicions are tracked (a flood of accusations cannot grow memory).
const MAX_TRACKED: usize = 4096;

impl Suspicions {
    /// foca wants `member` at `incarnation` declared down unless it refutes: hold the
    /// timer until the suspicion runs out. Returns true when this starts a new suspicion of
    /// ours (then we accuse it).
    pub fn start(&mut self, timer: Timer<GossipId>, now: Instant) -> bool {
        let Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        } = &timer
        else {
            return false;
        };
        let key = (member_id.name.clone(), member_id.bump, *incarnation);
        let Some(s) = self.entry(key, now) else {
            return false;
        };
        let new = s.started.is_none();
        if new {
            s.started = Some(now);
        }
        // A later timer for the same incarnation (foca probed it again) replaces the held
        // one; the start stays the first.
        s.timer = Some(timer);
        new
    }

    /// Another member confirms a suspicion.
    pub fn confirm(&mut self, a: &Accusation, me: &str, now: Instant) {
        if a.accuser == me || a.name == me {
            return;
        }
        let key = (a.name.clone(), a.bump, a.incarnation);
        if let Some(s) = self.entry(key, now) {
            s.accusers.insert(a.accuser.clone());
        }
    }

    /// The entry of `key`, made when missing; `None` when [`MAX_TRACKED`] are held already.
    fn entry(&mut self, key: Key, now: Instant) -> Option<&mut Suspicion> {
        if !self.by_key.contains_key(&key) && self.by_key.len() >= MAX_TRACKED {
            return None;
        }
        Some(self.by_key.entry(key).or_insert_with(|| Suspicion {
            started: None,
            timer: None,
            accusers: BTreeSet::new(),
            seen: now,
        }))
    }

    /// When the earliest held timer is due.
    pub fn next_deadline(&self, bounds: &Bounds) -> Option<Instant> {
        self.by_key
            .values()
            .filter_map(|s| s.deadline(bounds))
            .min()
    }

    /// The timers that are due, removed. The caller checks that each suspicion still stands
    /// (a refutation raised the incarnation) before it hands the timer to foca.
    pub fn due(&mut self, now: Instant, bounds: &Bounds) -> Vec<Timer<GossipId>> {
        let mut out = Vec::new();
        for s in self.by_key.values_mut() {
            if s.deadline(bounds).is_some_and(|at| now >= at) {
                out.extend(s.timer.take());
            }
        }
        out
    }

    /// Forgets entries with no held timer that are older than `keep`.
    pub fn forget_older_than(&mut self, now: Instant, keep: Duration) {
        self.by_key
            .retain(|_, s| s.timer.is_some() || now.saturating_duration_since(s.seen) < keep);
    }

    /// Confirmations held for `name` (any identity or incarnation), for tests and logs.
    pub fn confirmations(&self, name: &str) -> usize {
        self.by_key
            .iter()
            .filter(|((n, _, _), _)| n == name)
            .map(|(_, s)| s.accusers.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> GossipId {
        GossipId {
            name: name.into(),
            bump: 9,
            ..crate::gossip::identity::tests::sample()
        }
    }

    fn timer(name: &str, incarnation: u16) -> Timer<GossipId> {
        Timer::ChangeSuspectToDown {
            member_id: id(name),
            incarnation,
            token: 0,
        }
    }

    fn accuse(name: &str, incarnation: u16, by: &str) -> Accusation {
        Accusation {
            name: name.into(),
            bump: 9,
            incarnation,
            accuser: by.into(),
        }
    }

    const B: Bounds = Bounds {
        min: Duration::from_millis(700),
        max: Duration::from_millis(4200),
        k: 2,
    };

    #[test]
    fn the_timeout_shrinks_from_max_to_min_with_confirmations() {
        assert_eq!(B.timeout(0), B.max);
        let one = B.timeout(1);
        assert!(one < B.max && one > B.min, "{one:?}");
        // memberlist: 4.2 − 3.5 × ln 2 / ln 3 ≈ 1.99 s.
        assert!((one.as_secs_f64() - 1.992).abs() < 0.01, "{one:?}");
        assert_eq!(B.timeout(2), B.min);
        assert_eq!(B.timeout(7), B.min);
        let none = Bounds { k: 0, ..B };
        assert_eq!(none.timeout(0), B.min);
    }

    #[test]
    fn a_lone_suspicion_waits_for_max_and_confirmations_bring_it_forward() {
        let t0 = Instant::now();
        let mut s = Suspicions::default();
        assert!(s.start(timer("x", 3), t0));
        // Our own accusation echoed back and one about ourselves count for nothing.
        s.confirm(&accuse("x", 3, "me"), "me", t0);
        s.confirm(&accuse("me", 0, "y"), "me", t0);
        assert_eq!(s.next_deadline(&B), Some(t0 + B.max));
        assert!(s.due(t0 + B.timeout(1), &B).is_empty());
        // One other member confirms: due at timeout(1); a confirmation of another
        // incarnation (already refuted) does not count.
        s.confirm(&accuse("x", 2, "y"), "me", t0);
        s.confirm(&accuse("x", 3, "y"), "me", t0);
        s.confirm(&accuse("x", 3, "y"), "me", t0);
        assert_eq!(s.next_deadline(&B), Some(t0 + B.timeout(1)));
        s.confirm(&accuse("x", 3, "z"), "me", t0);
        assert_eq!(s.next_deadline(&B), Some(t0 + B.min));
        let fired = s.due(t0 + B.min, &B);
        assert_eq!(fired, vec![timer("x", 3)]);
        assert_eq!(s.next_deadline(&B), None);
        assert!(s.due(t0 + B.max, &B).is_empty());
    }

    #[test]
    fn confirmations_heard_before_our_own_suspicion_count() {
        let t0 = Instant::now();
        let mut s = Suspicions::default();
        s.confirm(&accuse("x", 0, "y"), "me", t0);
        s.confirm(&accuse("x", 0, "z"), "me", t0);
        assert_eq!(s.next_deadline(&B), None);
        let t1 = t0 + Duration::from_millis(300);
        assert!(s.start(timer("x", 0), t1));
        // A second failed probe of the same incarnation keeps the first start.
        assert!(!s.start(timer("x", 0), t1 + Duration::from_millis(400)));
        assert_eq!(s.next_deadline(&B), Some(t1 + B.min));
        assert_eq!(s.confirmations("x"), 2);
    }

    #[test]
    fn stale_entries_are_forgotten_and_tracking_is_bounded() {
        let t0 = Instant::now();
        let mut s = Suspicions::default();
        for i in 0..(MAX_TRACKED + 10) {
            s.confirm(&accuse(&format!("m{i}"), 0, "y"), "me", t0);
        }
        assert_eq!(s.by_key.len(), MAX_TRACKED);
        s.forget_older_than(t0 + Duration::from_secs(61), Duration::from_secs(60));
        assert!(s.by_key.is_empty());
        assert!(s.start(timer("x", 1), t0));
        s.forget_older_than(t0 + Duration::from_secs(61), Duration::from_secs(60));
        assert_eq!(s.by_key.len(), 1, "a held timer is never dropped");
    }

    #[test]
    fn awareness_scales_probes_and_recovers() {
        let mut a = Awareness::new(8);
        let p = Duration::from_millis(400);
        assert_eq!(a.scale(p), p);
        a.probe_failed();
        a.refuted();
        assert_eq!(a.score(), 2);
        assert_eq!(a.scale(p), p * 3);
        for _ in 0..20 {
            a.probe_failed();
        }
        assert_eq!(a.score(), 8);
        for _ in 0..20 {
            a.probe_succeeded();
        }
        assert_eq!(a.score(), 0);
    }
}
