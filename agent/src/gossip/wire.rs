//! What muster adds on top of foca's own messages: leave intents (custom broadcasts) and the
//! push/pull state exchanged over TCP.
//!
//! - An [`Intent`] says "member `name` with identity `bump` left" (a graceful leave, sent
//!   before foca's own leave) or "was forced out" (`force-leave`). foca only knows "down", so
//!   this is what lets every member tell `left` from `failed`. Intents ride foca's custom
//!   broadcasts; [`IntentHandler`] dedups them (so each is re-gossiped a bounded number of
//!   times) and queues the new ones for the gossip task.
//! - An [`Accusation`] says "`accuser` failed to probe member `name` (identity `bump`) at
//!   incarnation `incarnation`": Lifeguard's independent confirmations of a suspicion
//!   (foca's suspect updates do not say who suspects). Also a custom broadcast; see
//!   [`super::health`] for what they do.
//! - A push/pull [`State`] is foca's full membership state plus the known intents.
//!
//! Both are versioned: a leading version byte, fields in a fixed order, and whatever a newer
//! version appends is ignored. Unknown intent kinds are ignored too (not an error, so one
//! unknown item never spoils the rest of a packet).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use bytes::{Buf, BufMut};
use foca::{BroadcastHandler, Codec, Invalidates, Member, PostcardCodec};
use parking_lot::Mutex;

use super::identity::GossipId;

/// Version of intents and push/pull states written by this build.
pub const WIRE_VERSION: u8 = 1;
/// Most intents remembered for dedup (older ones are forgotten first).
const MAX_SEEN: usize = 4096;
/// Most members in a push/pull state (anything beyond is refused).
pub const MAX_STATE_MEMBERS: usize = 16 * 1024;

/// Why an intent is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntentKind {
    /// The member leaves gracefully.
    Leave = 1,
    /// An operator forced a failed member out (`force-leave`).
    ForceLeave = 2,
    /// `force-leave -prune`: forget the member entirely.
    Prune = 3,
}

/// A leave intent about one identity of a member.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Intent {
    /// What happened.
    pub kind: IntentKind,
    /// The member's name.
    pub name: String,
    /// The identity's bump it applies to (a later incarnation of the node is unaffected).
    pub bump: u64,
}

impl Intent {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.name.len());
        out.push(WIRE_VERSION);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.bump.to_be_bytes());
        put_name(&mut out, &self.name);
        out
    }

    /// Decodes [`Intent::encode`]'s output; `None` for anything not understood.
    pub fn decode(mut b: &[u8]) -> Option<Intent> {
        if b.len() < 11 || b.get_u8() == 0 {
            return None;
        }
        let kind = match b.get_u8() {
            1 => IntentKind::Leave,
            2 => IntentKind::ForceLeave,
            3 => IntentKind::Prune,
            _ => return None,
        };
        let bump = b.get_u64();
        let name = take_name(&mut b)?;
        Some(Intent { kind, name, bump })
    }
}

/// Appends a name: one length byte, then at most 255 bytes of it.
fn put_name(out: &mut Vec<u8>, name: &str) {
    let b = &name.as_bytes()[..name.len().min(255)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

/// Takes a [`put_name`] name off the front of `b`; `None` when cut short, not UTF-8 or empty.
fn take_name(b: &mut &[u8]) -> Option<String> {
    let len = usize::from(*b.first()?);
    let name = std::str::from_utf8(b.get(1..1 + len)?).ok()?.to_owned();
    b.advance(1 + len);
    (!name.is_empty()).then_some(name)
}

/// The kind byte of an [`Accusation`] (after the version byte, where an intent has its kind).
const ACCUSATION_KIND: u8 = 16;

/// "`accuser` probed member `name` (identity `bump`) at `incarnation` and got no answer,
/// directly or through others."
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Accusation {
    /// The suspected member's name.
    pub name: String,
    /// The suspected identity's bump.
    pub bump: u64,
    /// The suspected incarnation (a refutation raises it, which ends the suspicion).
    pub incarnation: u16,
    /// Who failed to reach it.
    pub accuser: String,
}

impl Accusation {
    /// The wire form: version, kind, bump, incarnation, name, accuser (each name ≤ 255 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(14 + self.name.len() + self.accuser.len());
        out.push(WIRE_VERSION);
        out.push(ACCUSATION_KIND);
        out.extend_from_slice(&self.bump.to_be_bytes());
        out.extend_from_slice(&self.incarnation.to_be_bytes());
        put_name(&mut out, &self.name);
        put_name(&mut out, &self.accuser);
        out
    }

    /// Decodes [`Accusation::encode`]'s output; `None` for anything else.
    pub fn decode(mut b: &[u8]) -> Option<Accusation> {
        if b.len() < 14 || b.get_u8() == 0 || b.get_u8() != ACCUSATION_KIND {
            return None;
        }
        let bump = b.get_u64();
        let incarnation = b.get_u16();
        let name = take_name(&mut b)?;
        let accuser = take_name(&mut b)?;
        Some(Accusation {
            name,
            bump,
            incarnation,
            accuser,
        })
    }
}

/// One custom broadcast item.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Item {
    /// A leave intent.
    Intent(Intent),
    /// A suspicion's confirmation.
    Accusation(Accusation),
}

impl Item {
    fn decode(b: &[u8]) -> Option<Item> {
        if b.get(1) == Some(&ACCUSATION_KIND) {
            Accusation::decode(b).map(Item::Accusation)
        } else {
            Intent::decode(b).map(Item::Intent)
        }
    }
}

/// foca's broadcast key: one item invalidates only an identical one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentKey(Item);

impl Invalidates for IntentKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

/// Never returned: undecodable items are ignored instead (see the module docs).
#[derive(Debug, thiserror::Error)]
#[error("intent error")]
pub struct IntentError;

/// The queue of items (intents and accusations) that foca received and the gossip task has
/// not handled yet.
pub type IntentQueue = Arc<Mutex<VecDeque<Item>>>;

/// foca's custom-broadcast handler for intents and accusations.
#[derive(Debug)]
pub struct IntentHandler {
    seen: HashSet<Item>,
    order: VecDeque<Item>,
    queue: IntentQueue,
}

impl IntentHandler {
    /// A handler that pushes new items onto `queue`.
    pub fn new(queue: IntentQueue) -> Self {
        IntentHandler {
            seen: HashSet::new(),
            order: VecDeque::new(),
            queue,
        }
    }

    /// Records `item`; true when it was not known yet.
    fn remember(&mut self, item: &Item) -> bool {
        if !self.seen.insert(item.clone()) {
            return false;
        }
        self.order.push_back(item.clone());
        if self.order.len() > MAX_SEEN
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

impl BroadcastHandler<GossipId> for IntentHandler {
    type Key = IntentKey;
    type Error = IntentError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&GossipId>,
    ) -> Result<Option<IntentKey>, IntentError> {
        let Some(item) = Item::decode(data) else {
            return Ok(None);
        };
        if !self.remember(&item) {
            return Ok(None);
        }
        let mut q = self.queue.lock();
        // Bounded: the task drains it after every foca call, so this only trims a flood.
        if q.len() < MAX_SEEN {
            q.push_back(item.clone());
        }
        Ok(Some(IntentKey(item)))
    }
}

/// A push/pull payload: foca's full membership state and the intents we know.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    /// foca's members, down ones included.
    pub members: Vec<Member<GossipId>>,
    /// Leave intents, so a member that missed them still tells left from failed.
    pub intents: Vec<Intent>,
}

/// Why a push/pull payload was refused.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Truncated, too many members, or an undecodable member.
    #[error("malformed push/pull state: {0}")]
    Malformed(String),
}

impl State {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.members.len() * 96);
        out.push(WIRE_VERSION);
        out.put_u32(self.members.len() as u32);
        let mut codec = PostcardCodec;
        for m in &self.members {
            let mut buf = Vec::new();
            if codec.encode_member(m, &mut buf).is_ok() {
                out.put_u32(buf.len() as u32);
                out.extend_from_slice(&buf);
            } else {
                // Cannot happen for our identities; keep the count honest anyway.
                out.put_u32(0);
            }
        }
        out.put_u32(self.intents.len() as u32);
        for i in &self.intents {
            let b = i.encode();
            out.put_u16(b.len() as u16);
            out.extend_from_slice(&b);
        }
        out
    }

    /// Decodes [`State::encode`]'s output from any version ≥ 1.
    pub fn decode(mut b: &[u8]) -> Result<State, StateError> {
        let bad = |what: &str| StateError::Malformed(what.to_owned());
        if b.remaining() < 5 || b.get_u8() == 0 {
            return Err(bad("header"));
        }
        let n = b.get_u32() as usize;
        if n > MAX_STATE_MEMBERS {
            return Err(bad("too many members"));
        }
        let mut codec = PostcardCodec;
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            if b.remaining() < 4 {
                return Err(bad("truncated member"));
            }
            let len = b.get_u32() as usize;
            if len == 0 {
                continue;
            }
            let Some(mut item) = b.get(..len) else {
                return Err(bad("truncated member"));
            };
            let m = codec
                .decode_member(&mut item)
                .map_err(|e| StateError::Malformed(format!("member: {e}")))?;
            members.push(m);
            b.advance(len);
        }
        let mut intents = Vec::new();
        if b.remaining() >= 4 {
            let k = b.get_u32() as usize;
            for _ in 0..k.min(MAX_SEEN) {
                if b.remaining() < 2 {
                    return Err(bad("truncated intent"));
                }
                let len = usize::from(b.get_u16());
                let Some(item) = b.get(..len) else {
                    return Err(bad("truncated intent"));
                };
                if let Some(i) = Intent::decode(item) {
                    intents.push(i);
                }
                b.advance(len);
            }
        }
        Ok(State { members, intents })
    }
}

#[cfg(test)]
mod tests {
    use foca::State as FocaState;

    use super::*;

    fn id(name: &str, port: u16) -> GossipId {
        GossipId {
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            name: name.into(),
            bump: 5,
            node_id: "id".into(),
            datacenter: "dc1".into(),
            server: false,
            rpc_port: 0,
            expect: 0,
            bootstrap: false,
            build: "b".into(),
            extra: vec![],
        }
    }

    #[test]
    fn intents_round_trip_and_unknown_kinds_are_ignored() {
        for kind in [IntentKind::Leave, IntentKind::ForceLeave, IntentKind::Prune] {
            let i = Intent {
                kind,
                name: "web-1".into(),
                bump: 42,
            };
            assert_eq!(Intent::decode(&i.encode()), Some(i));
        }
        let mut b = Intent {
            kind: IntentKind::Leave,
            name: "x".into(),
            bump: 1,
        }
        .encode();
        b[1] = 9;
        assert_eq!(Intent::decode(&b), None);
        // A newer version with appended bytes still decodes.
        b[1] = 1;
        b[0] = 3;
        b.extend_from_slice(b"future");
        assert_eq!(Intent::decode(&b).unwrap().name, "x");
        assert_eq!(Intent::decode(&b[..5]), None);
    }

    #[test]
    fn the_handler_queues_each_intent_once() {
        let q = IntentQueue::default();
        let mut h = IntentHandler::new(q.clone());
        let i = Intent {
            kind: IntentKind::Leave,
            name: "a".into(),
            bump: 1,
        };
        assert!(h.receive_item(&i.encode(), None).unwrap().is_some());
        assert!(h.receive_item(&i.encode(), None).unwrap().is_none());
        assert!(
            h.receive_item(b"\x01\x09garbage!!!", None)
                .unwrap()
                .is_none()
        );
        let a = Accusation {
            name: "b".into(),
            bump: 7,
            incarnation: 3,
            accuser: "c".into(),
        };
        assert!(h.receive_item(&a.encode(), None).unwrap().is_some());
        assert!(h.receive_item(&a.encode(), None).unwrap().is_none());
        let q = q.lock();
        assert_eq!(q.len(), 2);
        assert_eq!(q[1], Item::Accusation(a));
    }

    #[test]
    fn accusations_round_trip_and_are_not_intents() {
        let a = Accusation {
            name: "db-1".into(),
            bump: u64::MAX - 1,
            incarnation: 65_000,
            accuser: "web-2".into(),
        };
        let b = a.encode();
        assert_eq!(Accusation::decode(&b), Some(a.clone()));
        // An older agent's intent decoder ignores them (unknown kind), so they are never
        // taken for a leave.
        assert_eq!(Intent::decode(&b), None);
        assert_eq!(Item::decode(&b), Some(Item::Accusation(a)));
        for cut in 0..b.len() {
            assert_eq!(Accusation::decode(&b[..cut]), None, "cut at {cut}");
        }
        let intent = Intent {
            kind: IntentKind::Prune,
            name: "x".into(),
            bump: 2,
        };
        assert_eq!(Accusation::decode(&intent.encode()), None);
        assert_eq!(Item::decode(&intent.encode()), Some(Item::Intent(intent)));
    }

    #[test]
    fn state_round_trip_and_tolerance() {
        let state = State {
            members: vec![
                Member::new(id("a", 1), 3, FocaState::Alive),
                Member::new(id("b", 2), 0, FocaState::Down),
            ],
            intents: vec![Intent {
                kind: IntentKind::Leave,
                name: "b".into(),
                bump: 5,
            }],
        };
        let mut bytes = state.encode();
        assert_eq!(State::decode(&bytes).unwrap(), state);
        bytes.extend_from_slice(b"appended by a newer version");
        assert_eq!(State::decode(&bytes).unwrap(), state);
        let cut = &state.encode()[..20];
        assert!(State::decode(cut).is_err());
        assert!(State::decode(b"").is_err());
        let mut huge = vec![1];
        huge.extend_from_slice(&(MAX_STATE_MEMBERS as u32 + 1).to_be_bytes());
        assert!(State::decode(&huge).is_err());
    }
}
