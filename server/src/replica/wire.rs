//! The replica stream's wire types (JSON inside the versioned RPC envelope of
//! `crate::raft`): a client asks for the changes after its [`Position`]; a server answers with
//! the entries after it, a whole catalog snapshot, or "I am behind you".
//!
//! Invariants: a [`Position`] names one applied log entry by index *and* the leader that wrote
//! it, so a position from another cluster (or a log that was rewritten) never matches and gets
//! a snapshot instead of wrong deltas; [`Update::Changes`] entries are contiguous and start
//! right after the requested position; unknown fields are ignored (newer peers may add some).

use serde::{Deserialize, Serialize};

use crate::catalog::command::Command;

/// Path of the stream endpoint on the server RPC port.
pub(crate) const PATH_STREAM: &str = "/rpc/v1/stream";

/// One applied log entry: its index and the leader (term and node) that wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Position {
    pub(crate) index: u64,
    pub(crate) term: u64,
    pub(crate) leader: u64,
}

/// "Send me what was applied after `after`", waiting up to `wait_ms` when nothing is new.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StreamRequest {
    /// The client's last applied entry; `None` asks for a snapshot.
    pub(crate) after: Option<Position>,
    /// Long-poll bound in milliseconds (the server caps it).
    pub(crate) wait_ms: u64,
    /// The client's datacenter; a server of another one refuses.
    pub(crate) datacenter: String,
}

/// One entry after the client's position. `command` is `None` for entries that do not touch
/// the catalog (Raft's blank and membership entries); they still move the position, so read
/// indexes that point at them are reached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Change {
    pub(crate) position: Position,
    pub(crate) command: Option<Command>,
}

/// What the client should do with its replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Update {
    /// Replace the replica: the catalog snapshot encoding, as applied up to `position`.
    Snapshot {
        position: Option<Position>,
        catalog: String,
    },
    /// Apply these entries in order (empty when the long poll ended with nothing new).
    Changes { entries: Vec<Change> },
    /// The server has applied less than the client (it lags, or its log was reset).
    Behind { applied: Option<Position> },
}

impl Update {
    /// Whether it moves the replica (a snapshot, or at least one entry).
    pub(crate) fn carries_changes(&self) -> bool {
        match self {
            Update::Changes { entries } => !entries.is_empty(),
            Update::Snapshot { .. } => true,
            Update::Behind { .. } => false,
        }
    }
}

/// A member of the Raft configuration, as the server sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireServer {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) rpc_addr: String,
    pub(crate) voter: bool,
}

/// The answer, with the server's view of the cluster at that moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct StreamReply {
    pub(crate) leader_id: Option<u64>,
    pub(crate) leader_addr: Option<String>,
    pub(crate) servers: Vec<WireServer>,
    /// Time since the server last heard from the leader (0 on the leader).
    pub(crate) last_contact_ms: u64,
    pub(crate) update: Update,
}
