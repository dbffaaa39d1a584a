//! The catalog port: the plain data the agent publishes for DNS ([`DnsCatalog`]), the trait
//! the server reads it through ([`CatalogView`]) and a ready implementation
//! ([`SharedCatalog`]).
//!
//! The agent builds a `DnsCatalog` whenever the catalog index changes and publishes it; the
//! server indexes it once per publication (see `zone.rs`), so queries never scan it. Health
//! is already aggregated by the agent: an instance is `Critical` if any of its service or
//! node checks (including `serfHealth` and maintenance) is critical.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::Instant;

/// A consistent picture of the catalog, as the DNS server needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsCatalog {
    /// The datacenter the catalog describes; empty means `DnsConfig::datacenter`.
    pub datacenter: String,
    /// The catalog's Raft index when this snapshot was taken.
    pub index: u64,
    /// When this replica last heard from the Raft leader (for `max_stale`); `None` means
    /// never, and zone queries are answered with SERVFAIL until it is set.
    pub last_contact: Option<Instant>,
    /// Every node of the datacenter.
    pub nodes: Vec<DnsNode>,
    /// Every service instance, whatever its health.
    pub services: Vec<DnsServiceInstance>,
    /// Names of the server nodes (for NS records).
    pub servers: Vec<String>,
}

/// A catalog node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsNode {
    /// Node name.
    pub name: String,
    /// Node address: an IP, or a hostname for external nodes.
    pub address: String,
    /// Node metadata, served as TXT records.
    pub meta: BTreeMap<String, String>,
}

/// One registered instance of a service on a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsServiceInstance {
    /// Service name.
    pub service: String,
    /// Service ID (unique on its node).
    pub id: String,
    /// Name of the node the instance runs on.
    pub node: String,
    /// The node's address.
    pub node_address: String,
    /// The service's own address; empty means the node address. An IP or a hostname.
    pub address: String,
    /// Service port.
    pub port: u16,
    /// Service tags.
    pub tags: Vec<String>,
    /// SRV weights.
    pub weights: Weights,
    /// Aggregated health of the service's and the node's checks.
    pub health: InstanceHealth,
}

/// SRV weights by health (Consul's `Weights`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weights {
    /// Weight while passing (default 1).
    pub passing: u16,
    /// Weight while warning (default 1).
    pub warning: u16,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            passing: 1,
            warning: 1,
        }
    }
}

/// Aggregated health of an instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InstanceHealth {
    /// Every check passes.
    #[default]
    Passing,
    /// At least one check warns and none is critical.
    Warning,
    /// At least one check is critical (or the node failed, or maintenance is on).
    Critical,
}

/// The port through which the DNS server reads the catalog.
pub trait CatalogView: Send + Sync + 'static {
    /// The current catalog. Cheap (an `Arc` clone); called when [`Self::version`] changes.
    fn snapshot(&self) -> Arc<DnsCatalog>;

    /// A number that changes whenever `snapshot` would return a different catalog. The
    /// default `None` makes the server compare snapshot pointers on every query instead.
    fn version(&self) -> Option<u64> {
        None
    }

    /// When the replica last heard from the leader. The default reads the snapshot;
    /// implementations can track contact without republishing the catalog.
    fn last_contact(&self) -> Option<Instant> {
        self.snapshot().last_contact
    }

    /// A channel that changes whenever a new catalog is published, so the server can index
    /// it at once instead of on the first query after the change. `None` (the default)
    /// means the server indexes lazily.
    fn subscribe(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}

const NEVER: i64 = i64::MIN;

/// A ready [`CatalogView`]: the agent calls [`SharedCatalog::publish`] with each new
/// catalog and [`SharedCatalog::record_contact`] on each leader contact.
#[derive(Debug)]
pub struct SharedCatalog {
    current: ArcSwap<DnsCatalog>,
    version: AtomicU64,
    /// Last contact as signed nanoseconds from `base`; `i64::MIN` means never.
    contact: AtomicI64,
    base: Instant,
    published: watch::Sender<u64>,
}

impl Default for SharedCatalog {
    fn default() -> Self {
        Self::new(DnsCatalog::default())
    }
}

impl SharedCatalog {
    /// A view that starts with `initial`.
    pub fn new(initial: DnsCatalog) -> Self {
        let shared = Self {
            current: ArcSwap::from_pointee(DnsCatalog::default()),
            version: AtomicU64::new(0),
            contact: AtomicI64::new(NEVER),
            base: Instant::now(),
            published: watch::Sender::new(0),
        };
        shared.publish(initial);
        shared
    }

    /// Replaces the catalog. Its `last_contact` also counts as a contact.
    pub fn publish(&self, catalog: DnsCatalog) {
        if let Some(at) = catalog.last_contact {
            self.record_contact(at);
        }
        self.current.store(Arc::new(catalog));
        // Bumped after the store, so a reader that sees the new version also sees the new
        // catalog (Release here, Acquire in `version`).
        let version = self.version.fetch_add(1, Ordering::Release) + 1;
        self.published.send_replace(version);
    }

    /// Records a contact with the leader at `at` (never moves backwards).
    pub fn record_contact(&self, at: Instant) {
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        // Contacts before `base` are negative offsets; `NEVER` stays below all of them.
        let offset = if at >= self.base {
            nanos(at - self.base)
        } else {
            (-nanos(self.base - at)).max(NEVER + 1)
        };
        self.contact.fetch_max(offset, Ordering::Relaxed);
    }

    /// The current catalog.
    pub fn current(&self) -> Arc<DnsCatalog> {
        self.current.load_full()
    }
}

impl CatalogView for SharedCatalog {
    fn snapshot(&self) -> Arc<DnsCatalog> {
        self.current.load_full()
    }

    fn version(&self) -> Option<u64> {
        Some(self.version.load(Ordering::Acquire))
    }

    fn subscribe(&self) -> Option<watch::Receiver<u64>> {
        Some(self.published.subscribe())
    }

    fn last_contact(&self) -> Option<Instant> {
        match self.contact.load(Ordering::Relaxed) {
            NEVER => None,
            n if n >= 0 => Some(self.base + Duration::from_nanos(n as u64)),
            n => self
                .base
                .checked_sub(Duration::from_nanos(n.unsigned_abs())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_bumps_version_and_contact() {
        let shared = SharedCatalog::default();
        assert_eq!(shared.last_contact(), None);
        let v0 = shared.version().unwrap();
        let at = Instant::now() + Duration::from_secs(1);
        shared.publish(DnsCatalog {
            index: 7,
            last_contact: Some(at),
            ..DnsCatalog::default()
        });
        assert!(shared.version().unwrap() > v0);
        assert_eq!(shared.snapshot().index, 7);
        let seen = shared.last_contact().unwrap();
        assert!(
            seen.duration_since(at) < Duration::from_micros(1)
                && at.duration_since(seen) < Duration::from_micros(1)
        );
        // An older contact does not move it backwards.
        shared.record_contact(at - Duration::from_millis(500));
        assert!(shared.last_contact().unwrap() >= seen);
    }

    #[test]
    fn contacts_before_creation_are_kept() {
        let long_ago = Instant::now() - Duration::from_secs(120);
        let shared = SharedCatalog::new(DnsCatalog {
            last_contact: Some(long_ago),
            ..DnsCatalog::default()
        });
        let seen = shared.last_contact().unwrap();
        assert!(
            seen <= long_ago + Duration::from_micros(1)
                && seen + Duration::from_micros(1) >= long_ago
        );
    }
}
