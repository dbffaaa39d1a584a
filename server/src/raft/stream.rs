//! The server side of the replica stream: a bounded ring of the entries the state machine
//! applied last, and the long-poll handler that answers a client agent's "changes after my
//! position" from it (or with a snapshot when the ring no longer reaches back that far).
//!
//! Invariants:
//! - the ring holds every applied entry in `(floor, last]`, contiguous, at most
//!   [`RING_CAPACITY`] of them, and `last` is the state machine's `last_applied`: both change
//!   under the state-machine lock, so a reply's entries and snapshot are consistent;
//! - a reply carries at most [`MAX_BATCH`] entries; a long poll waits at most
//!   [`MAX_STREAM_WAIT`] (or less, as the client asks) and wakes as soon as anything applies;
//! - the client's position must match the ring by index *and* leader, otherwise it gets a
//!   snapshot (another cluster, a wiped server, or a client too far behind).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::LogId;
use super::rpc::ForwardError;
use super::server::{Inner, ServerHandle};
use crate::catalog::command::Command;
use crate::replica::wire::{Change, Position, StreamReply, StreamRequest, Update, WireServer};

/// Entries kept for replicas to catch up from without a snapshot.
pub(crate) const RING_CAPACITY: usize = 4096;
/// Most entries in one reply.
pub(crate) const MAX_BATCH: usize = 1024;
/// Longest long poll, whatever the client asks.
pub(crate) const MAX_STREAM_WAIT: Duration = Duration::from_secs(30);

impl From<LogId> for Position {
    fn from(l: LogId) -> Position {
        Position {
            index: l.index,
            term: l.leader_id.term,
            leader: l.leader_id.node_id,
        }
    }
}

/// The last applied entries.
pub(crate) struct ChangeRing {
    /// The entry just before the first one held (`None`: the start of the log).
    floor: Option<LogId>,
    entries: VecDeque<(LogId, Option<Command>)>,
    capacity: usize,
}

/// Where a client stands against the ring.
#[derive(Debug, PartialEq)]
pub(crate) enum Since {
    /// At the last applied entry: nothing to send yet.
    UpToDate,
    /// Past the last applied entry.
    Ahead,
    /// The entries after the client's position (at most the limit).
    Entries(Vec<Change>),
    /// Not in the ring: the client needs a snapshot.
    Gone,
}

impl ChangeRing {
    /// An empty ring whose entries will start after `floor`.
    pub(crate) fn new(floor: Option<LogId>, capacity: usize) -> ChangeRing {
        ChangeRing {
            floor,
            entries: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// The last applied entry.
    pub(crate) fn last(&self) -> Option<LogId> {
        self.entries.back().map(|(l, _)| *l).or(self.floor)
    }

    /// Records an applied entry, dropping the oldest beyond capacity.
    pub(crate) fn push(&mut self, log_id: LogId, command: Option<Command>) {
        let next = self.last().map_or(0, |l| l.index + 1);
        if log_id.index != next {
            // Not contiguous (never expected): serve nothing from before this entry.
            self.reset(Some(log_id));
            return;
        }
        if self.entries.len() >= self.capacity
            && let Some((oldest, _)) = self.entries.pop_front()
        {
            self.floor = Some(oldest);
        }
        self.entries.push_back((log_id, command));
    }

    /// Forgets every entry: the state was replaced by a snapshot applied up to `floor`.
    pub(crate) fn reset(&mut self, floor: Option<LogId>) {
        self.entries.clear();
        self.floor = floor;
    }

    /// What a client at `after` needs.
    pub(crate) fn since(&self, after: Option<Position>, limit: usize) -> Since {
        let last = self.last();
        if after == last.map(Position::from) {
            return Since::UpToDate;
        }
        let Some(after) = after else {
            return Since::Gone;
        };
        if last.is_none_or(|l| l.index < after.index) {
            return Since::Ahead;
        }
        let start = if self.floor.map(Position::from) == Some(after) {
            0
        } else {
            let Some((first, _)) = self.entries.front() else {
                return Since::Gone;
            };
            let Some(offset) = after.index.checked_sub(first.index) else {
                return Since::Gone;
            };
            let offset = usize::try_from(offset).unwrap_or(usize::MAX);
            match self.entries.get(offset) {
                Some((l, _)) if Position::from(*l) == after => offset + 1,
                _ => return Since::Gone,
            }
        };
        Since::Entries(
            self.entries
                .iter()
                .skip(start)
                .take(limit.max(1))
                .map(|(l, c)| Change {
                    position: Position::from(*l),
                    command: c.clone(),
                })
                .collect(),
        )
    }
}

/// What one look at the state machine decided.
enum Step {
    Snapshot(crate::catalog::Catalog, Option<LogId>),
    Send(Vec<Change>),
    Wait { ahead: bool, applied: Option<LogId> },
}

/// Answers one stream request, long-polling while there is nothing new.
pub(crate) async fn serve(
    inner: &Arc<Inner>,
    req: StreamRequest,
) -> Result<StreamReply, ForwardError> {
    if !req.datacenter.is_empty() && !req.datacenter.eq_ignore_ascii_case(inner.datacenter()) {
        return Err(ForwardError::Validation(format!(
            "this server is in datacenter {:?}, not {:?}",
            inner.datacenter(),
            req.datacenter
        )));
    }
    let shared = inner.shared();
    let wait = Duration::from_millis(req.wait_ms).min(MAX_STREAM_WAIT);
    let deadline = Instant::now() + wait;
    let mut applied_rx = shared.applied.subscribe();
    loop {
        if inner.stopping().is_cancelled() {
            return Err(ForwardError::ShuttingDown);
        }
        // Mark the current value seen *before* reading the state: an apply after the read
        // then always wakes the wait below.
        applied_rx.borrow_and_update();
        let step = {
            let st = shared.state.read();
            match st.ring.since(req.after, MAX_BATCH) {
                Since::Gone => Step::Snapshot(st.catalog.without_acl(), st.ring.last()),
                Since::Entries(entries) => Step::Send(entries),
                Since::UpToDate => Step::Wait {
                    ahead: false,
                    applied: st.ring.last(),
                },
                Since::Ahead => Step::Wait {
                    ahead: true,
                    applied: st.ring.last(),
                },
            }
        };
        let update = match step {
            // Encoded outside the lock: the clone is the consistent point-in-time copy.
            Step::Snapshot(catalog, position) => Update::Snapshot {
                position: position.map(Position::from),
                catalog: String::from_utf8_lossy(&catalog.encode_snapshot()).into_owned(),
            },
            Step::Send(entries) => Update::Changes { entries },
            Step::Wait { ahead, applied } => {
                tokio::select! {
                    _ = inner.stopping().cancelled() => return Err(ForwardError::ShuttingDown),
                    changed = applied_rx.changed() => {
                        if changed.is_err() {
                            return Err(ForwardError::ShuttingDown);
                        }
                        continue;
                    }
                    _ = tokio::time::sleep_until(deadline) => {}
                }
                if ahead {
                    Update::Behind {
                        applied: applied.map(Position::from),
                    }
                } else {
                    Update::Changes { entries: vec![] }
                }
            }
        };
        return Ok(reply(inner, update));
    }
}

/// Wraps an update with this server's view of the cluster.
fn reply(inner: &Arc<Inner>, update: Update) -> StreamReply {
    let status = ServerHandle::from_inner(inner.clone()).status();
    StreamReply {
        leader_id: status.leader_id,
        leader_addr: status.leader_addr,
        servers: status
            .servers
            .into_iter()
            .map(|s| WireServer {
                id: s.id,
                name: s.name,
                rpc_addr: s.rpc_addr,
                voter: s.voter,
            })
            .collect(),
        last_contact_ms: u64::try_from(status.last_contact.as_millis()).unwrap_or(u64::MAX),
        update,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::command::Registration;
    use openraft::CommittedLeaderId;

    fn lid(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn cmd(node: &str) -> Option<Command> {
        Some(Command::Register(Registration {
            node: node.into(),
            address: "10.0.0.1".into(),
            ..Registration::default()
        }))
    }

    fn indexes(s: Since) -> Vec<u64> {
        match s {
            Since::Entries(e) => e.iter().map(|c| c.position.index).collect(),
            other => panic!("expected entries, got {other:?}"),
        }
    }

    #[test]
    fn serves_entries_after_a_known_position_and_snapshots_otherwise() {
        let mut ring = ChangeRing::new(None, 3);
        assert_eq!(ring.since(None, 10), Since::UpToDate, "both empty");
        ring.push(lid(1, 1), None);
        ring.push(lid(1, 2), cmd("a"));
        ring.push(lid(1, 3), cmd("b"));
        assert_eq!(
            ring.since(None, 10),
            Since::Gone,
            "a new client needs a snapshot"
        );
        assert_eq!(indexes(ring.since(Some(lid(1, 1).into()), 10)), [2, 3]);
        assert_eq!(indexes(ring.since(Some(lid(1, 1).into()), 1)), [2]);
        assert_eq!(ring.since(Some(lid(1, 3).into()), 10), Since::UpToDate);
        assert_eq!(ring.since(Some(lid(1, 4).into()), 10), Since::Ahead);
        // Same index, another leader: another history.
        assert_eq!(ring.since(Some(lid(2, 2).into()), 10), Since::Gone);

        // Capacity 3: pushing a fourth drops entry 1, which becomes the floor.
        ring.push(lid(2, 4), cmd("c"));
        assert_eq!(indexes(ring.since(Some(lid(1, 1).into()), 10)), [2, 3, 4]);
        ring.push(lid(2, 5), cmd("d"));
        assert_eq!(
            ring.since(Some(lid(1, 1).into()), 10),
            Since::Gone,
            "fell off"
        );
        assert_eq!(indexes(ring.since(Some(lid(1, 2).into()), 10)), [3, 4, 5]);
        assert_eq!(ring.last(), Some(lid(2, 5)));
    }

    #[test]
    fn reset_and_gaps_start_over_from_the_new_floor() {
        let mut ring = ChangeRing::new(Some(lid(1, 10)), 8);
        assert_eq!(ring.since(Some(lid(1, 10).into()), 10), Since::UpToDate);
        assert_eq!(ring.since(Some(lid(1, 9).into()), 10), Since::Gone);
        ring.push(lid(1, 11), cmd("a"));
        assert_eq!(indexes(ring.since(Some(lid(1, 10).into()), 10)), [11]);
        ring.reset(Some(lid(3, 40)));
        assert_eq!(ring.since(Some(lid(1, 11).into()), 10), Since::Gone);
        assert_eq!(ring.since(Some(lid(3, 40).into()), 10), Since::UpToDate);
        // A gap (never expected) forgets everything before the new entry.
        ring.push(lid(3, 45), cmd("b"));
        assert_eq!(ring.last(), Some(lid(3, 45)));
        assert_eq!(ring.since(Some(lid(3, 40).into()), 10), Since::Gone);
    }
}
