//! The catalog replica of a client agent: [`CatalogReplica::start`] gives a
//! [`crate::ServerHandle`] with the same reads, writes and waits as a server's, backed by an
//! in-memory copy of the catalog streamed from one server at a time.
//!
//! Layout:
//! - `wire`: the stream protocol's types (`POST /rpc/v1/stream` on the server RPC port);
//! - `state`: the replica's content and how an update changes it (plain synchronous code);
//! - `handle`: the streaming task and the reads/writes behind the handle.
//!
//! Protocol: the client sends its position (the last applied log entry, by index and leader)
//! and a long-poll bound; the server answers with the entries applied after it, from a ring
//! of the last 4096 applied entries kept by its state machine (at most 1024 per reply), or
//! with a snapshot of its catalog when the position is unknown to it (new client, too old,
//! another cluster), or with "behind" when it has applied less than the client. The client
//! applies entries with the state machine's own apply, so its content and indexes equal the
//! server's at the same position.
//!
//! Invariants:
//! - one task owns the stream and is the only writer of the replica; readers take a short
//!   read lock, never across an `.await`;
//! - stale reads and DNS answer from memory, with or without a reachable server; default and
//!   `?consistent` reads first get the leader's read index (the read-index RPC, following the
//!   leader redirect) and wait until the replica has applied it, so the reported consistency
//!   is true; writes go to the leader over the write-forward RPC, retried across servers and
//!   elections for at most `rpc_hold_timeout`;
//! - every wait, body and queue is bounded; shutdown is idempotent and bounded.

mod handle;
mod state;
pub(crate) mod wire;

pub(crate) use handle::ReplicaHandle;
pub use handle::{CatalogReplica, ReplicaConfig};
