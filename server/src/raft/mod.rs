//! The Raft layer: every openraft type of the crate lives under this module, so moving to
//! openraft 0.10 touches only here.
//!
//! Layout:
//! - `store`: the openraft log store and state machine over [`crate::storage`] (redb);
//! - `network`: outbound Raft RPCs over HTTP (one shared `reqwest::Client`);
//! - `rpc`: the inbound axum router (Raft RPCs, forwarded writes, read-index, replica stream);
//! - `stream`: the ring of recently applied entries and the replica stream's long poll;
//! - `server`: [`CatalogServer::start`] and the [`ServerHandle`] the agent uses;
//! - `disk`: the free-space guard that refuses writes before a full disk can fail them.
//!
//! Wire invariants: log entries, snapshot metadata and RPC bodies are JSON; every RPC body is
//! wrapped in a versioned envelope (`{"v":1,...}`), and commands carry their own version.

// openraft's error types are large by design (its own examples allow this lint too); they are
// returned on cold paths only.
#![allow(clippy::result_large_err)]

mod channel;
mod disk;
mod network;
mod rpc;
mod server;
mod store;
mod stream;

use std::io::Cursor;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::catalog::Catalog;
use crate::catalog::command::{Command, CommandResult};
use crate::watch::TableWatches;

// What the client side of the replica (`crate::replica`) needs to speak the RPC protocol.
pub use network::error_chain;
pub(crate) use network::{
    PATH_ACL_RESOLVE, PATH_ACL_STATE, PATH_READ_INDEX, PATH_WRITE, PostError, Reply, RpcClient,
    encode_request, http_client_with,
};
pub(crate) use rpc::{AclResolve, ForwardError, ForwardWrite};

pub use server::{
    CatalogServer, Consistency, PeerStatus, RaftConfiguration, RaftRole, RaftServerState,
    RaftStatus, ReadMeta, ServerHandle, ServerInfo, WriteOutcome,
};

/// A Raft server as recorded in the cluster membership.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerNode {
    /// Node name.
    pub name: String,
    /// Address of its RPC router (`ip:port`).
    pub rpc_addr: String,
}

openraft::declare_raft_types!(
    /// The openraft type configuration of the catalog.
    pub(crate) TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = ServerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

type NodeId = u64;
type LogId = openraft::LogId<NodeId>;
type Vote = openraft::Vote<NodeId>;
type Entry = openraft::Entry<TypeConfig>;
type StoredMembership = openraft::StoredMembership<NodeId, ServerNode>;
type SnapshotMeta = openraft::SnapshotMeta<NodeId, ServerNode>;
type StorageError = openraft::StorageError<NodeId>;
type Raft = openraft::Raft<TypeConfig>;

/// The state machine's data: the catalog plus what openraft needs to know was applied. One lock,
/// so a snapshot copies a consistent (catalog, last applied) pair.
pub(crate) struct SmState {
    catalog: Catalog,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    /// The last applied entries, for replica streams; always ends at `last_applied`.
    ring: stream::ChangeRing,
}

/// State shared by the state machine (the only writer), the handle and the RPC router.
pub(crate) struct Shared {
    /// Held only for short synchronous sections, never across an `.await`.
    state: RwLock<SmState>,
    watches: TableWatches,
    /// When a leader last reached this node (append or snapshot RPC).
    last_leader_contact: Mutex<Option<Instant>>,
    /// The last committed index this node persisted.
    committed_index: Mutex<Option<u64>>,
    /// The last applied index, published after each applied batch or installed snapshot
    /// (wakes replica long polls, also for entries that do not touch the catalog).
    applied: tokio::sync::watch::Sender<u64>,
    /// How much of the log is on disk (see [`Durable`]).
    durable: tokio::sync::watch::Sender<Durable>,
}

/// How much of this node's log is known to be on disk.
///
/// A leader tells openraft that its own appends are flushed as soon as they are queued, so
/// that replication to the followers overlaps its `fdatasync` (openraft 0.9 waits for the
/// flush before it replicates). Durability is then enforced where it matters: such an entry
/// is applied (and so acknowledged to a client or visible to a read) only after its sync, and
/// the commit index sent to followers never passes an entry still waiting for its sync here.
/// An entry therefore becomes visible anywhere only once it is on disk on a majority, as if
/// the leader had waited. Followers acknowledge only synced entries, as before.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Durable {
    /// The last entry covered by a completed sync.
    through: Option<LogId>,
    /// The last entry reported flushed before its sync.
    early: Option<LogId>,
    /// A sync failed: entries reported early will never be synced.
    failed: bool,
}

impl Durable {
    /// Whether `id` was reported flushed early and is not known to be on disk yet.
    fn pending(&self, id: LogId) -> bool {
        self.through < Some(id) && Some(id) <= self.early
    }

    /// The commit index followers may learn: never past an entry still pending here.
    pub(crate) fn clamp_commit(&self, committed: Option<LogId>) -> Option<LogId> {
        if self.early > self.through && committed > self.through {
            self.through
        } else {
            committed
        }
    }
}

impl Shared {
    fn new(state: SmState, durable: Durable) -> Arc<Self> {
        let watches = TableWatches::new(state.catalog.indexes());
        let applied = tokio::sync::watch::Sender::new(state.last_applied.map_or(0, |l| l.index));
        Arc::new(Shared {
            state: RwLock::new(state),
            watches,
            last_leader_contact: Mutex::new(None),
            committed_index: Mutex::new(None),
            applied,
            durable: tokio::sync::watch::Sender::new(durable),
        })
    }
}

/// JSON encoding for everything stored or sent.
fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(value)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}
