//! The member list as Consul shows it, built from foca's notifications and leave intents.
//!
//! foca knows identities that are up or down; Consul users see one entry per node name with
//! a status: alive, leaving, left or failed. [`MemberView`] keeps one record per name, for the
//! newest identity (largest `bump`) seen under it:
//! - up → alive (a restarted node, with a larger bump, replaces its old record);
//! - down → `left` when a leave intent for that identity arrived, else `failed`;
//! - a leave intent on an alive member → `leaving` (then `left` once foca says down);
//! - force-leave moves a failed member to `left`; prune forgets it;
//! - failed records are reaped after `reconnect_timeout`, left ones after the tombstone time.
//!
//! Invariants: plain synchronous code over data (the caller passes `now`); the own record is
//! always present; news about an older identity of a name never overrides a newer one.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use super::identity::GossipId;
use super::wire::{Intent, IntentKind};
use crate::node::{Member, MemberStatus};

/// Most remembered intents about members that we have not seen (yet).
const MAX_PENDING_INTENTS: usize = 4096;

#[derive(Debug, Clone)]
struct Record {
    id: GossipId,
    status: MemberStatus,
    since: Instant,
}

/// Why a force-leave was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForceLeaveError {
    /// No member by that name.
    #[error("agent: No node found with name '{0}'")]
    NotFound(String),
    /// The member is this agent.
    #[error("cannot force-leave this agent itself; use leave")]
    IsSelf,
}

/// The member list of one agent.
#[derive(Debug)]
pub struct MemberView {
    me: String,
    records: BTreeMap<String, Record>,
    /// Leave intents by name (the largest bump wins), kept so a down notification or an
    /// intent that arrives first still ends as `left`.
    intents: HashMap<String, (u64, IntentKind)>,
}

impl MemberView {
    /// A view holding only this agent, alive.
    pub fn new(me: GossipId, now: Instant) -> Self {
        let mut records = BTreeMap::new();
        let name = me.name.clone();
        records.insert(
            name.clone(),
            Record {
                id: me,
                status: MemberStatus::Alive,
                since: now,
            },
        );
        MemberView {
            me: name,
            records,
            intents: HashMap::new(),
        }
    }

    /// This agent's current identity.
    pub fn me(&self) -> &GossipId {
        &self.records[&self.me].id
    }

    /// Replaces this agent's identity (after foca renewed it) and sets its status.
    pub fn set_me(&mut self, id: GossipId, status: MemberStatus, now: Instant) -> bool {
        let rec = self.records.get_mut(&self.me).expect("own record");
        let changed = rec.id != id || rec.status != status;
        rec.id = id;
        rec.status = status;
        if changed {
            rec.since = now;
        }
        changed
    }

    /// The status of `name`, if known.
    pub fn status(&self, name: &str) -> Option<MemberStatus> {
        self.records.get(name).map(|r| r.status)
    }

    /// Members other than this agent that are alive or leaving.
    pub fn live_peers(&self) -> usize {
        self.records
            .values()
            .filter(|r| r.id.name != self.me)
            .filter(|r| matches!(r.status, MemberStatus::Alive | MemberStatus::Leaving))
            .count()
    }

    /// foca says `id` is up. Returns whether the view changed.
    pub fn up(&mut self, id: &GossipId, now: Instant) -> bool {
        if id.name == self.me {
            return false;
        }
        if let Some(rec) = self.records.get_mut(&id.name) {
            if rec.id.bump > id.bump {
                return false;
            }
            // A leave intent for this very identity that arrived first makes it `leaving`.
            let status = match self.intents.get(&id.name) {
                Some(&(bump, IntentKind::Leave)) if bump == id.bump => MemberStatus::Leaving,
                _ => MemberStatus::Alive,
            };
            let changed = rec.id != *id || rec.status != status;
            if changed {
                *rec = Record {
                    id: id.clone(),
                    status,
                    since: now,
                };
            }
            return changed;
        }
        self.records.insert(
            id.name.clone(),
            Record {
                id: id.clone(),
                status: MemberStatus::Alive,
                since: now,
            },
        );
        true
    }

    /// foca says `id` is down. Returns whether the view changed.
    pub fn down(&mut self, id: &GossipId, now: Instant) -> bool {
        if id.name == self.me {
            return false;
        }
        let status = if self.intent_covers(&id.name, id.bump) {
            MemberStatus::Left
        } else {
            MemberStatus::Failed
        };
        match self.records.get_mut(&id.name) {
            Some(rec) if rec.id.bump > id.bump => false,
            Some(rec) => {
                // A member that left stays left: foca's later "down" changes nothing.
                if rec.status == MemberStatus::Left && rec.id.bump == id.bump {
                    return false;
                }
                let changed = rec.status != status || rec.id != *id;
                if changed {
                    *rec = Record {
                        id: id.clone(),
                        status,
                        since: now,
                    };
                }
                changed
            }
            None => {
                // Down members we never saw up (learned through push/pull) are listed too,
                // as Consul lists failed and left members it learns about.
                self.records.insert(
                    id.name.clone(),
                    Record {
                        id: id.clone(),
                        status,
                        since: now,
                    },
                );
                true
            }
        }
    }

    fn intent_covers(&self, name: &str, bump: u64) -> bool {
        matches!(self.intents.get(name), Some(&(b, _)) if b >= bump)
    }

    /// A leave intent arrived. Returns whether the view changed.
    pub fn intent(&mut self, intent: &Intent, now: Instant) -> bool {
        if intent.name == self.me {
            // Someone forced us out, or our own leave echoed back: foca's refutation (we
            // are alive and talking) is what counts; the view keeps our own status.
            return false;
        }
        let known = self.intents.get(&intent.name).map(|&(b, _)| b);
        // A force-leave only concerns a member that is down now: remembering it for an
        // alive one would turn its next crash into `left`.
        let down_now = self
            .records
            .get(&intent.name)
            .is_none_or(|r| !matches!(r.status, MemberStatus::Alive | MemberStatus::Leaving));
        let remember = intent.kind == IntentKind::Leave || down_now;
        if remember && known.is_none_or(|b| b <= intent.bump) {
            if self.intents.len() >= MAX_PENDING_INTENTS && known.is_none() {
                // Bounded: forget intents about names that have no record any more.
                let records = &self.records;
                self.intents.retain(|name, _| records.contains_key(name));
            }
            if self.intents.len() < MAX_PENDING_INTENTS || known.is_some() {
                self.intents
                    .insert(intent.name.clone(), (intent.bump, intent.kind));
            }
        }
        let Some(rec) = self.records.get_mut(&intent.name) else {
            return false;
        };
        if rec.id.bump > intent.bump {
            return false;
        }
        let next = match (intent.kind, rec.status) {
            (IntentKind::Prune, MemberStatus::Failed | MemberStatus::Left) => {
                self.records.remove(&intent.name);
                return true;
            }
            (IntentKind::Leave, MemberStatus::Alive) => MemberStatus::Leaving,
            // An alive member cannot be forced out: it would refute at once (as in serf).
            (IntentKind::ForceLeave | IntentKind::Prune, _)
                if rec.status != MemberStatus::Failed =>
            {
                return false;
            }
            (_, MemberStatus::Failed) => MemberStatus::Left,
            _ => return false,
        };
        rec.status = next;
        rec.since = now;
        true
    }

    /// The intent a force-leave of `name` broadcasts, after checking the member exists.
    pub fn force_leave_intent(&self, name: &str, prune: bool) -> Result<Intent, ForceLeaveError> {
        if name == self.me {
            return Err(ForceLeaveError::IsSelf);
        }
        let rec = self
            .records
            .get(name)
            .ok_or_else(|| ForceLeaveError::NotFound(name.to_owned()))?;
        Ok(Intent {
            kind: if prune {
                IntentKind::Prune
            } else {
                IntentKind::ForceLeave
            },
            name: name.to_owned(),
            bump: rec.id.bump,
        })
    }

    /// Every intent known, for push/pull.
    pub fn intents(&self) -> Vec<Intent> {
        self.intents
            .iter()
            .map(|(name, &(bump, kind))| Intent {
                kind,
                name: name.clone(),
                bump,
            })
            .collect()
    }

    /// Drops failed members older than `reconnect` and left ones older than `tombstone`.
    /// Returns whether anything was dropped.
    pub fn reap(&mut self, now: Instant, reconnect: Duration, tombstone: Duration) -> bool {
        let me = self.me.clone();
        let before = self.records.len();
        self.records.retain(|name, r| {
            *name == me
                || match r.status {
                    MemberStatus::Failed => now.duration_since(r.since) < reconnect,
                    MemberStatus::Left => now.duration_since(r.since) < tombstone,
                    _ => true,
                }
        });
        let records = &self.records;
        self.intents.retain(|name, _| records.contains_key(name));
        self.records.len() != before
    }

    /// The members, sorted by name, as the rest of the agent reads them.
    pub fn members(&self) -> Vec<Member> {
        self.records
            .values()
            .map(|r| Member {
                name: r.id.name.clone(),
                addr: r.id.addr.ip(),
                port: r.id.addr.port(),
                tags: r.id.tags(),
                status: r.status,
            })
            .collect()
    }

    /// Gossip addresses of alive members other than this agent (for snapshots and push/pull).
    pub fn peer_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.records
            .values()
            .filter(|r| r.id.name != self.me && r.status == MemberStatus::Alive)
            .map(|r| r.id.addr)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, bump: u64) -> GossipId {
        GossipId {
            addr: "127.0.0.1:8301".parse().unwrap(),
            name: name.into(),
            bump,
            node_id: format!("{name}-id"),
            datacenter: "dc1".into(),
            server: false,
            rpc_port: 0,
            expect: 0,
            bootstrap: false,
            build: "0.1.0:dev".into(),
            extra: vec![],
        }
    }

    fn status(v: &MemberView, name: &str) -> Option<MemberStatus> {
        v.status(name)
    }

    fn intent(kind: IntentKind, name: &str, bump: u64) -> Intent {
        Intent {
            kind,
            name: name.into(),
            bump,
        }
    }

    #[test]
    fn crash_is_failed_and_restart_is_alive_again() {
        let t = Instant::now();
        let mut v = MemberView::new(id("me", 1), t);
        assert!(v.up(&id("a", 10), t));
        assert_eq!(v.live_peers(), 1);
        assert!(v.down(&id("a", 10), t));
        assert_eq!(status(&v, "a"), Some(MemberStatus::Failed));
        // The restarted node (larger bump) is alive; stale news about the old one is ignored.
        assert!(v.up(&id("a", 20), t));
        assert_eq!(status(&v, "a"), Some(MemberStatus::Alive));
        assert!(!v.down(&id("a", 10), t));
        assert!(!v.up(&id("a", 10), t));
        assert_eq!(status(&v, "a"), Some(MemberStatus::Alive));
        // foca never reports ourselves, and the view ignores it if it did.
        assert!(!v.down(&id("me", 1), t));
        assert_eq!(status(&v, "me"), Some(MemberStatus::Alive));
    }

    #[test]
    fn graceful_leave_is_left_in_either_order() {
        let t = Instant::now();
        let mut v = MemberView::new(id("me", 1), t);
        v.up(&id("a", 10), t);
        assert!(v.intent(&intent(IntentKind::Leave, "a", 10), t));
        assert_eq!(status(&v, "a"), Some(MemberStatus::Leaving));
        assert!(v.down(&id("a", 10), t));
        assert_eq!(status(&v, "a"), Some(MemberStatus::Left));
        // Down first, intent second (the intent was delayed): still left.
        v.up(&id("b", 5), t);
        v.down(&id("b", 5), t);
        assert_eq!(status(&v, "b"), Some(MemberStatus::Failed));
        assert!(v.intent(&intent(IntentKind::Leave, "b", 5), t));
        assert_eq!(status(&v, "b"), Some(MemberStatus::Left));
        // An intent about an older identity does not touch the restarted node.
        v.up(&id("b", 6), t);
        assert!(!v.intent(&intent(IntentKind::Leave, "b", 5), t));
        assert_eq!(status(&v, "b"), Some(MemberStatus::Alive));
        assert!(v.down(&id("b", 6), t));
        assert_eq!(status(&v, "b"), Some(MemberStatus::Failed));
    }

    #[test]
    fn force_leave_moves_failed_to_left_and_prune_forgets() {
        let t = Instant::now();
        let mut v = MemberView::new(id("me", 1), t);
        v.up(&id("a", 10), t);
        v.up(&id("b", 10), t);
        // Alive members are not forced out.
        let i = v.force_leave_intent("a", false).unwrap();
        assert!(!v.intent(&i, t));
        assert_eq!(status(&v, "a"), Some(MemberStatus::Alive));
        v.down(&id("a", 10), t);
        let i = v.force_leave_intent("a", false).unwrap();
        assert_eq!(i.bump, 10);
        assert!(v.intent(&i, t));
        assert_eq!(status(&v, "a"), Some(MemberStatus::Left));
        v.down(&id("b", 10), t);
        let p = v.force_leave_intent("b", true).unwrap();
        assert!(v.intent(&p, t));
        assert_eq!(status(&v, "b"), None);
        assert_eq!(
            v.force_leave_intent("zzz", false),
            Err(ForceLeaveError::NotFound("zzz".into()))
        );
        assert_eq!(
            v.force_leave_intent("me", false),
            Err(ForceLeaveError::IsSelf)
        );
    }

    #[test]
    fn reaping_follows_reconnect_and_tombstone_times() {
        let t = Instant::now();
        let mut v = MemberView::new(id("me", 1), t);
        v.up(&id("failed", 1), t);
        v.down(&id("failed", 1), t);
        v.up(&id("left", 1), t);
        v.intent(&intent(IntentKind::Leave, "left", 1), t);
        v.down(&id("left", 1), t);
        v.up(&id("alive", 1), t);
        let (reconnect, tombstone) = (Duration::from_secs(100), Duration::from_secs(10));
        assert!(!v.reap(t + Duration::from_secs(5), reconnect, tombstone));
        assert!(v.reap(t + Duration::from_secs(11), reconnect, tombstone));
        assert_eq!(status(&v, "left"), None);
        assert_eq!(status(&v, "failed"), Some(MemberStatus::Failed));
        assert!(v.reap(t + Duration::from_secs(101), reconnect, tombstone));
        let names: Vec<_> = v.members().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["alive", "me"]);
    }

    #[test]
    fn members_carry_consul_tags_and_addresses() {
        let t = Instant::now();
        let mut me = id("me", 1);
        me.server = true;
        me.rpc_port = 8300;
        me.addr = "10.0.0.1:8301".parse().unwrap();
        let v = MemberView::new(me, t);
        let m = &v.members()[0];
        assert_eq!(m.addr.to_string(), "10.0.0.1");
        assert_eq!(m.port, 8301);
        assert_eq!(m.tags["role"], "consul");
        assert_eq!(m.tags["port"], "8300");
        assert_eq!(m.status, MemberStatus::Alive);
    }
}
