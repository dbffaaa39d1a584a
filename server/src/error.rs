//! `ServerError`: every failure the server's handle reports, with predicates the agent maps to
//! HTTP status codes in one place (400 for [`ServerError::is_validation`], 500 with
//! `No cluster leader` for [`ServerError::is_no_leader`], ...).

use crate::catalog::command::ValidationError;
use crate::storage::StoreError;

/// A failure of a catalog server operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The command is invalid (HTTP 400).
    #[error("{0}")]
    Validation(ValidationError),
    /// No leader could be reached within `rpc_hold_timeout` (Consul's text).
    #[error("No cluster leader")]
    NoLeader,
    /// A leader-only operation was called on a follower.
    #[error("this server is not the leader (leader: {})", leader.as_deref().unwrap_or("unknown"))]
    NotLeader {
        /// The leader's RPC address, if known.
        leader: Option<String>,
    },
    /// The leader accepted the write but it did not commit within `rpc_hold_timeout`.
    #[error("timed out waiting for the write to commit")]
    Timeout,
    /// Forwarding to the leader failed.
    #[error("rpc error making call: {0}")]
    Rpc(String),
    /// The store could not be opened, or its content cannot be read.
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// Raft stopped on a storage failure; the process should exit and restart.
    #[error("raft stopped on a fatal error: {0}")]
    Fatal(String),
    /// The data directory's filesystem is short of space: the write was not proposed.
    #[error("Disk full: {free} bytes free in {path}, catalog writes need {reserve}")]
    DiskFull {
        /// The directory of the Raft store.
        path: String,
        /// Bytes available.
        free: u64,
        /// Bytes a write needs available (`ServerConfig::min_free_disk`).
        reserve: u64,
    },
    /// The server is shutting down.
    #[error("server is shutting down")]
    ShuttingDown,
    /// The configuration is invalid.
    #[error("invalid server configuration: {0}")]
    Config(String),
    /// A cluster membership change failed.
    #[error("cluster membership change failed: {0}")]
    Membership(String),
    /// A client agent's replica knows no reachable server (Consul's text; HTTP 500).
    #[error("No known Consul servers")]
    NoServers,
    /// A server-only operation (bootstrap, Raft membership) was called on a client agent's
    /// replica.
    #[error("this agent is not a server")]
    NotServer,
}

impl ServerError {
    /// The request was invalid (HTTP 400).
    pub fn is_validation(&self) -> bool {
        matches!(self, ServerError::Validation(_))
    }

    /// The leader refused a write for lack of disk space.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, ServerError::DiskFull { .. })
    }

    /// No leader is reachable (`No cluster leader`).
    pub fn is_no_leader(&self) -> bool {
        matches!(self, ServerError::NoLeader)
    }

    /// This server is not the leader (for leader-only operations).
    pub fn is_not_leader(&self) -> bool {
        matches!(self, ServerError::NotLeader { .. })
    }

    /// A client agent knows no reachable server (`No known Consul servers`).
    pub fn is_no_servers(&self) -> bool {
        matches!(self, ServerError::NoServers)
    }

    /// A server-only operation was called on a client agent's replica.
    pub fn is_not_server(&self) -> bool {
        matches!(self, ServerError::NotServer)
    }

    /// The server is stopping.
    pub fn is_shutting_down(&self) -> bool {
        matches!(self, ServerError::ShuttingDown)
    }

    /// Storage is broken (open failed, or Raft stopped on a storage error).
    pub fn is_storage(&self) -> bool {
        matches!(self, ServerError::Storage(_) | ServerError::Fatal(_))
    }

    /// The write may or may not have been applied (timeout or transport failure).
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, ServerError::Timeout | ServerError::Rpc(_))
    }
}
