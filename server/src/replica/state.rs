//! The replica's content and how a stream update changes it: plain synchronous code.
//!
//! Invariants: entries are applied with [`Catalog::apply`], the state machine's own apply, at
//! the index the server applied them at, so content and per-table indexes equal the server's
//! at the same position; an update that does not continue the replica's position changes
//! nothing past the last entry that did (the caller then asks for a snapshot); a snapshot
//! that cannot be decoded leaves the replica as it was.

use crate::catalog::{Catalog, SnapshotDecodeError};

use super::wire::{Change, Position, Update};

/// A stream update ready to apply (a snapshot is decoded before the replica is locked).
#[derive(Debug)]
pub(crate) enum Prepared {
    /// Replace everything.
    Snapshot {
        catalog: Catalog,
        position: Option<Position>,
    },
    /// Apply these in order.
    Changes(Vec<Change>),
    /// The server has applied less than we have.
    Behind,
}

/// Decodes an update; the catalog decoding is the costly part, so it runs unlocked.
pub(crate) fn prepare(update: Update) -> Result<Prepared, SnapshotDecodeError> {
    Ok(match update {
        Update::Snapshot { position, catalog } => Prepared::Snapshot {
            catalog: Catalog::decode_snapshot(catalog.as_bytes())?,
            position,
        },
        Update::Changes { entries } => Prepared::Changes(entries),
        Update::Behind { .. } => Prepared::Behind,
    })
}

/// What applying an update did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The replica moved (or was replaced), or nothing was new.
    Current,
    /// The server is behind this replica: nothing applied.
    Behind,
    /// An entry did not follow the replica's position: applied up to it, then stopped.
    Gap,
}

/// The replica: a catalog and the server log position it reflects.
#[derive(Debug, Default)]
pub(crate) struct ReplicaState {
    pub(crate) catalog: Catalog,
    pub(crate) position: Option<Position>,
}

impl ReplicaState {
    /// The last applied log index (0 before the first snapshot).
    pub(crate) fn applied_index(&self) -> u64 {
        self.position.map_or(0, |p| p.index)
    }

    /// Applies one prepared update.
    pub(crate) fn apply(&mut self, update: Prepared) -> Applied {
        match update {
            Prepared::Snapshot { catalog, position } => {
                self.catalog = catalog;
                self.position = position;
                Applied::Current
            }
            Prepared::Behind => Applied::Behind,
            Prepared::Changes(entries) => {
                for change in entries {
                    if change.position.index != self.applied_index() + 1 || self.position.is_none()
                    {
                        return Applied::Gap;
                    }
                    if let Some(command) = &change.command {
                        // The result is the server's too: a rejection changed nothing there.
                        let _ = self.catalog.apply(change.position.index, command);
                    }
                    self.position = Some(change.position);
                }
                Applied::Current
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::command::{Command, Deregistration, Registration};
    use crate::catalog::model::NodeService;

    fn pos(index: u64) -> Position {
        Position {
            index,
            term: 1,
            leader: 7,
        }
    }

    fn register(node: &str, service: Option<&str>) -> Command {
        let mut r = Registration {
            node: node.into(),
            address: "10.0.0.1".into(),
            service: service.map(|s| NodeService {
                service: s.into(),
                port: 80,
                ..NodeService::default()
            }),
            ..Registration::default()
        };
        r.normalize();
        Command::Register(r)
    }

    fn change(index: u64, command: Option<Command>) -> Change {
        Change {
            position: pos(index),
            command,
        }
    }

    #[test]
    fn replays_to_the_same_catalog_as_the_state_machine() {
        let commands = [
            (2, Some(register("a", Some("web")))),
            (3, None),
            (4, Some(register("b", None))),
            // Rejected by the state machine (no such node): changes nothing on either side.
            (
                5,
                Some(Command::Deregister(Deregistration {
                    node: "zz".into(),
                    service_id: "web".into(),
                    ..Deregistration::default()
                })),
            ),
            (6, Some(register("a", Some("api")))),
        ];
        let mut server = Catalog::new();
        for (i, c) in &commands {
            if let Some(c) = c {
                server.apply(*i, c);
            }
        }

        // From a snapshot taken at 3, then the rest as changes.
        let mut at3 = Catalog::new();
        at3.apply(2, commands[0].1.as_ref().unwrap());
        let mut replica = ReplicaState::default();
        let snap = Update::Snapshot {
            position: Some(pos(3)),
            catalog: String::from_utf8(at3.encode_snapshot()).unwrap(),
        };
        assert_eq!(replica.apply(prepare(snap).unwrap()), Applied::Current);
        let rest = commands[2..]
            .iter()
            .map(|(i, c)| change(*i, c.clone()))
            .collect();
        assert_eq!(replica.apply(Prepared::Changes(rest)), Applied::Current);
        assert_eq!(replica.catalog, server, "same content");
        assert_eq!(replica.catalog.indexes(), server.indexes(), "same indexes");
        assert_eq!(replica.applied_index(), 6);
    }

    #[test]
    fn gaps_stop_and_bad_snapshots_change_nothing() {
        let mut replica = ReplicaState {
            catalog: Catalog::new(),
            position: Some(pos(10)),
        };
        let out = replica.apply(Prepared::Changes(vec![
            change(11, Some(register("a", None))),
            change(13, Some(register("b", None))),
        ]));
        assert_eq!(out, Applied::Gap);
        assert_eq!(replica.applied_index(), 11, "applied up to the gap");
        assert!(replica.catalog.node("a").is_some() && replica.catalog.node("b").is_none());

        // A fresh replica cannot take changes: it needs a snapshot first.
        let mut fresh = ReplicaState::default();
        assert_eq!(
            fresh.apply(Prepared::Changes(vec![change(1, None)])),
            Applied::Gap
        );
        assert!(
            prepare(Update::Snapshot {
                position: Some(pos(3)),
                catalog: "{\"v\":99}".into(),
            })
            .is_err()
        );
        assert_eq!(replica.apply(Prepared::Behind), Applied::Behind);
        assert_eq!(replica.applied_index(), 11);
    }
}
