//! muster-server: the Raft-replicated service catalog.
//!
//! Layout:
//! - [`catalog`]: the data model (`Node`, `NodeService`, `HealthCheck`, `HealthStatus`) with
//!   Consul's JSON shapes, the versioned [`Command`]s, the pure state machine
//!   ([`Catalog::apply`]), the read queries and leader reconciliation. Plain synchronous code.
//! - [`storage`]: the redb file (log, Raft metadata, snapshots) behind one storage thread.
//! - `raft` (private; every openraft type lives there): the openraft glue, the HTTP RPC
//!   network and router, and [`CatalogServer`] / [`ServerHandle`].
//! - `replica` (private): a client agent's in-memory replica of the catalog, streamed from
//!   the servers, behind the same [`ServerHandle`] ([`CatalogReplica::start`]).
//! - [`ServerConfig`], [`ServerError`].
//!
//! The crate binds no ports and reads no files of its own choosing: the agent passes the data
//! directory, serves [`ServerHandle::rpc_router`] on the server port, and cancels a token to
//! shut down.

pub mod catalog;
mod config;
mod error;
mod raft;
mod replica;
pub mod storage;
mod watch;

pub use catalog::command::{
    ApplyError, Command, CommandResult, Deregistration, MAX_CHECKS, Registration, ValidationError,
};
pub use catalog::model::{
    CheckDefinition, HealthCheck, HealthStatus, Index, Node, NodeService, ServiceAddress, Weights,
};
pub use catalog::query::{
    CheckServiceNode, CheckState, NodeMetaFilter, NodeServiceList, NodeServices, ServiceFilter,
    ServiceInstance, ServiceNode, aggregate_health,
};
pub use catalog::reconcile::{Member, MemberRole, MemberStatus, ReconcileContext, reconcile};
pub use catalog::{Catalog, Table, TableIndexes};
pub use config::{RpcTls, ServerConfig, raft_id_from_node_id};
pub use error::ServerError;
pub use raft::{
    CatalogServer, Consistency, PeerStatus, RaftConfiguration, RaftRole, RaftServerState,
    RaftStatus, ReadMeta, ServerHandle, ServerInfo, ServerNode, WriteOutcome, error_chain,
};
pub use replica::{CatalogReplica, ReplicaConfig};
pub use storage::StoreError;
