//! `ServerConfig`: the small typed config the agent hands to the catalog server.
//!
//! The agent owns the config file format and builds this from it; the defaults suit a LAN.
//! Invariant: [`ServerConfig::validate`] accepts only settings Raft can run with (election
//! timeouts above the heartbeat, a snapshot install timeout of at least 10 s, ...).

use std::sync::Arc;
use std::time::Duration;

/// TLS for outgoing server RPCs: the rustls client config the agent built from
/// `tls.internal_rpc` (the CA as the only root, the agent's certificate, the server-name
/// policy). With it every RPC goes to `https://`; without it, `http://`.
#[derive(Clone)]
pub struct RpcTls(pub Arc<rustls::ClientConfig>);

impl PartialEq for RpcTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for RpcTls {}

impl std::fmt::Debug for RpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RpcTls(..)")
    }
}

/// Settings of one catalog server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Raft node id; see [`raft_id_from_node_id`].
    pub node_id: u64,
    /// This node's name (reported in the Raft configuration).
    pub node_name: String,
    /// Address other servers reach this server's RPC router at (`ip:port`).
    pub rpc_addr: String,
    /// Datacenter; written on registrations that do not name one.
    pub datacenter: String,
    /// Leader heartbeat period.
    pub heartbeat_interval: Duration,
    /// Lower bound of the election timeout. openraft adds a leader lease of
    /// `election_timeout_max` before a follower of a live leader may campaign, so a follower
    /// starts an election `election_timeout_max + rand(min, max)` after the leader went silent.
    pub election_timeout_min: Duration,
    /// Upper bound of the election timeout (also the leader lease, see above).
    pub election_timeout_max: Duration,
    /// Timeout of one snapshot chunk transfer (openraft's default of 200 ms loops forever on
    /// large snapshots).
    pub install_snapshot_timeout: Duration,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_threshold: u64,
    /// Log entries kept after a snapshot, so lagging followers catch up without one.
    pub trailing_logs: u64,
    /// Most entries per append RPC (Consul: 64).
    pub max_append_entries: u64,
    /// How long a write or consistent read waits for a leader (Consul's `rpc_hold_timeout`).
    pub rpc_hold_timeout: Duration,
    /// Bytes that must stay free on the data directory's filesystem for a leader to take a
    /// write (0: no check). Below it writes fail with `DiskFull` and are not proposed.
    pub min_free_disk: u64,
    /// TLS for RPCs to other servers (raft, forwarded writes and reads); `None`: plain HTTP.
    pub rpc_tls: Option<RpcTls>,
}

impl ServerConfig {
    /// A config with LAN defaults for the given identity.
    pub fn new(
        node_id: u64,
        node_name: impl Into<String>,
        rpc_addr: impl Into<String>,
        datacenter: impl Into<String>,
    ) -> Self {
        ServerConfig {
            node_id,
            node_name: node_name.into(),
            rpc_addr: rpc_addr.into(),
            datacenter: datacenter.into(),
            heartbeat_interval: Duration::from_millis(150),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(500),
            install_snapshot_timeout: Duration::from_secs(10),
            snapshot_threshold: 16384,
            trailing_logs: 10240,
            max_append_entries: 64,
            rpc_hold_timeout: Duration::from_secs(7),
            min_free_disk: 64 * 1024 * 1024,
            rpc_tls: None,
        }
    }

    /// Checks the settings; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_name.is_empty() {
            return Err("node_name must not be empty".into());
        }
        if self.rpc_addr.is_empty() {
            return Err("rpc_addr must not be empty".into());
        }
        if self.heartbeat_interval.is_zero() {
            return Err("heartbeat_interval must be positive".into());
        }
        if self.election_timeout_min <= self.heartbeat_interval {
            return Err(format!(
                "election_timeout_min ({:?}) must exceed heartbeat_interval ({:?})",
                self.election_timeout_min, self.heartbeat_interval
            ));
        }
        if self.election_timeout_max <= self.election_timeout_min {
            return Err(format!(
                "election_timeout_max ({:?}) must exceed election_timeout_min ({:?})",
                self.election_timeout_max, self.election_timeout_min
            ));
        }
        if self.install_snapshot_timeout < Duration::from_secs(10) {
            return Err("install_snapshot_timeout must be at least 10s".into());
        }
        if self.snapshot_threshold == 0 || self.max_append_entries == 0 {
            return Err("snapshot_threshold and max_append_entries must be positive".into());
        }
        if self.rpc_hold_timeout.is_zero() {
            return Err("rpc_hold_timeout must be positive".into());
        }
        Ok(())
    }
}

/// Derives a Raft node id from a node UUID: its first 8 bytes, big-endian (the last 8 if those
/// are zero; never 0). `None` if `node_id` is not a UUID.
pub fn raft_id_from_node_id(node_id: &str) -> Option<u64> {
    let uuid = uuid::Uuid::parse_str(node_id).ok()?;
    let (hi, lo) = uuid.as_u64_pair();
    Some(match (hi, lo) {
        (0, 0) => 1,
        (0, lo) => lo,
        (hi, _) => hi,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        let c = ServerConfig::new(1, "db1", "127.0.0.1:8300", "dc1");
        c.validate().unwrap();
        let bad = ServerConfig {
            election_timeout_min: Duration::from_millis(100),
            ..c.clone()
        };
        assert!(bad.validate().unwrap_err().contains("election_timeout_min"));
        let bad = ServerConfig {
            install_snapshot_timeout: Duration::from_millis(200),
            ..c.clone()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .contains("install_snapshot_timeout")
        );
        let bad = ServerConfig {
            election_timeout_max: c.election_timeout_min,
            ..c
        };
        assert!(bad.validate().unwrap_err().contains("election_timeout_max"));
    }

    #[test]
    fn raft_id_comes_from_the_uuid() {
        assert_eq!(
            raft_id_from_node_id("40e4a748-2192-161a-0510-9bf59fe950b5"),
            Some(0x40e4_a748_2192_161a)
        );
        assert_eq!(
            raft_id_from_node_id("00000000-0000-0000-0000-000000000007"),
            Some(7)
        );
        assert_eq!(
            raft_id_from_node_id("00000000-0000-0000-0000-000000000000"),
            Some(1)
        );
        assert_eq!(raft_id_from_node_id("not-a-uuid"), None);
    }
}
