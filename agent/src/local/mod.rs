//! Local agent state: the services and checks this agent hosts, their persistence in
//! `data_dir`, the health-check wiring and anti-entropy into the catalog.
//!
//! Layout:
//! - `state`: the one task that owns the services and checks ([`LocalState`] is its handle);
//!   it talks to the check runner, persists API registrations and reaps services whose checks
//!   stay critical (`deregister_critical_service_after`);
//! - `convert`: config definitions → check-runner definitions and catalog records;
//! - `persist`: the files under `<data_dir>/services`, `<data_dir>/checks` and
//!   `<data_dir>/checks/state` (atomic writes, versioned records, corrupt files skipped);
//! - `sync`: anti-entropy, a second task that owns the sync state and pushes the difference
//!   between [`LocalView`] and the catalog (see `docs/anti-entropy.md`).
//!
//! Invariants: the agent is the source of truth for its own services and checks; every change
//! is published as a new immutable [`LocalView`] (readers never lock the owner); a check
//! always belongs to a registered service or to the node; API registrations are on disk
//! before the API call returns.

mod convert;
mod persist;
mod state;
mod sync;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use muster_server::{HealthCheck, HealthStatus, NodeService, ServerHandle};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{CheckDefinition, RuntimeConfig, ServiceDefinition};
use crate::node::NodeIdentity;

pub use sync::scale_factor;

/// CheckID of the node maintenance check.
pub const NODE_MAINTENANCE_CHECK_ID: &str = "_node_maintenance";
/// Prefix of a service maintenance CheckID (`_service_maintenance:<service-id>`).
pub const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";
/// Name of the node maintenance check (clients match on it).
pub const NODE_MAINTENANCE_NAME: &str = "Node Maintenance Mode";
/// Name of a service maintenance check (Spring Cloud Consul and Steeltoe match on it).
pub const SERVICE_MAINTENANCE_NAME: &str = "Service Maintenance Mode";
/// Notes of the node maintenance check when no reason is given (Consul's text).
pub const DEFAULT_NODE_MAINTENANCE_REASON: &str = "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.";
/// Notes of a service maintenance check when no reason is given (Consul's text).
pub const DEFAULT_SERVICE_MAINTENANCE_REASON: &str = "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.";
/// The `Type` of maintenance checks.
pub const MAINTENANCE_CHECK_TYPE: &str = "maintenance";

/// The CheckID of the maintenance check of a service.
pub fn service_maintenance_check_id(service_id: &str) -> String {
    format!("{SERVICE_MAINTENANCE_PREFIX}{service_id}")
}

/// Whether a CheckID is a node or service maintenance check.
pub fn is_maintenance_check(check_id: &str) -> bool {
    check_id == NODE_MAINTENANCE_CHECK_ID || check_id.starts_with(SERVICE_MAINTENANCE_PREFIX)
}

/// Where a registration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A config file: replaced on reload, never persisted by the agent.
    File,
    /// The HTTP API: kept across reloads and restarts (persisted in `data_dir`).
    Api,
}

/// Tunables of the local state and anti-entropy. The defaults are Consul's; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalOptions {
    /// Base period of the anti-entropy full sync (Consul's 1 min), multiplied by
    /// [`scale_factor`] of the cluster size, plus a random stagger.
    pub full_sync_interval: Duration,
    /// Pause before retrying after a failed sync (Consul: 15 s), plus a random stagger.
    pub retry_interval: Duration,
    /// How often the reaper looks for services critical longer than their
    /// `deregister_critical_service_after` (Consul: 30 s).
    pub reap_interval: Duration,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            full_sync_interval: Duration::from_secs(60),
            retry_interval: Duration::from_secs(15),
            reap_interval: Duration::from_secs(5),
        }
    }
}

/// How this node appears in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Node UUID.
    pub id: String,
    /// Advertise address.
    pub address: String,
    /// Datacenter.
    pub datacenter: String,
    /// `lan`, `lan_ipv4`/`lan_ipv6`, `wan`, `wan_ipv4`/`wan_ipv6`.
    pub tagged_addresses: BTreeMap<String, String>,
    /// `node_meta`.
    pub meta: BTreeMap<String, String>,
}

/// A service this agent hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalService {
    /// The service as the catalog stores it (indexes zero).
    pub service: NodeService,
    /// Where it was registered from.
    pub source: Source,
}

/// What runs a local check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalCheckKind {
    /// A probe on an interval (TCP, HTTP, script).
    Probe,
    /// A TTL check fed by `/v1/agent/check/{pass,warn,fail,update}`.
    Ttl,
    /// A node or service maintenance check (always critical).
    Maintenance,
    /// A check type muster cannot run yet (always critical, never run).
    Unsupported,
}

/// A check this agent hosts, with its current status and output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCheck {
    /// The check as the catalog stores it (indexes zero): current status and output,
    /// the service's name and tags filled in.
    pub check: HealthCheck,
    /// What runs it.
    pub kind: LocalCheckKind,
    /// Where it was registered from.
    pub source: Source,
    /// `deregister_critical_service_after`, when set.
    pub deregister_critical_after: Option<Duration>,
}

/// An immutable snapshot of the local state, published after every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalView {
    /// This node.
    pub node: NodeInfo,
    /// Services by ID.
    pub services: BTreeMap<String, Arc<LocalService>>,
    /// Checks by ID.
    pub checks: BTreeMap<String, Arc<LocalCheck>>,
    /// `check_update_interval`: how long output-only changes may wait before a sync.
    pub check_update_interval: Duration,
}

impl LocalView {
    /// The checks of a service, optionally with the node-level checks first (as
    /// `/v1/agent/health/service/*` reports them).
    pub fn checks_for_service(
        &self,
        service_id: &str,
        with_node_checks: bool,
    ) -> Vec<&HealthCheck> {
        let node_level = self
            .checks
            .values()
            .filter(move |c| with_node_checks && c.check.service_id.is_empty());
        let own = self
            .checks
            .values()
            .filter(|c| !c.check.service_id.is_empty() && c.check.service_id == service_id);
        node_level.chain(own).map(|c| &c.check).collect()
    }

    /// Services with this name.
    pub fn services_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a LocalService> {
        self.services
            .values()
            .filter(move |s| s.service.service == name)
            .map(|s| s.as_ref())
    }
}

/// Why a local-state operation failed. `Display` is the HTTP API's response body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    /// No service with this ID (Consul's newer 404 text).
    #[error(
        "Unknown service ID {0:?}. Ensure that the service ID is passed, not the service name."
    )]
    UnknownService(String),
    /// No check with this ID (Consul's newer 404 text).
    #[error("Unknown check ID {0:?}. Ensure that the check ID is passed, not the check name.")]
    UnknownCheck(String),
    /// A TTL update for a check that is not a TTL check, or for no check at all (Consul's
    /// 500 text, which clients match to re-register after an agent restart).
    #[error("CheckID {0:?} does not have associated TTL")]
    NotTtl(String),
    /// A check registered for a service that this agent does not have (Consul's 404 text).
    #[error("ServiceID {0:?} does not exist")]
    MissingService(String),
    /// The definition cannot be run.
    #[error("{0}")]
    Invalid(String),
    /// Writing the registration to `data_dir` failed; nothing was changed.
    #[error("failed to persist the registration: {0}")]
    Persist(String),
    /// The local state task has stopped (shutdown).
    #[error("the agent is shutting down")]
    Stopped,
}

impl LocalError {
    /// Unknown service ID (404).
    pub fn is_unknown_service(&self) -> bool {
        matches!(self, LocalError::UnknownService(_))
    }

    /// Unknown check ID (404).
    pub fn is_unknown_check(&self) -> bool {
        matches!(self, LocalError::UnknownCheck(_))
    }

    /// TTL update on a check without a TTL (500).
    pub fn is_not_ttl(&self) -> bool {
        matches!(self, LocalError::NotTtl(_))
    }

    /// A check refers to a service that is not registered (404).
    pub fn is_missing_service(&self) -> bool {
        matches!(self, LocalError::MissingService(_))
    }

    /// The request was invalid (400).
    pub fn is_invalid(&self) -> bool {
        matches!(self, LocalError::Invalid(_))
    }

    /// The state is shutting down.
    pub fn is_stopped(&self) -> bool {
        matches!(self, LocalError::Stopped)
    }
}

/// Requests to the owner task.
pub(crate) enum Request {
    RegisterService {
        def: ServiceDefinition,
        replace_existing_checks: bool,
        reply: oneshot::Sender<Result<(), LocalError>>,
    },
    DeregisterService {
        id: String,
        reply: oneshot::Sender<Result<(), LocalError>>,
    },
    RegisterCheck {
        def: CheckDefinition,
        reply: oneshot::Sender<Result<(), LocalError>>,
    },
    DeregisterCheck {
        id: String,
        reply: oneshot::Sender<Result<(), LocalError>>,
    },
    UpdateTtl {
        id: String,
        status: HealthStatus,
        output: String,
        reply: oneshot::Sender<Result<(), LocalError>>,
    },
    NodeMaintenance {
        enable: bool,
        reason: Option<String>,
        reply: oneshot::Sender<Result<(), LocalError>>,
    },
    ServiceMaintenance {
        service_id: String,
        enable: bool,
        reason: Option<String>,
        reply: oneshot::Sender<Result<(), LocalError>>,
    },
    Reload {
        cfg: Box<RuntimeConfig>,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
}

/// Requests waiting for the owner task; callers wait when it is full.
const REQUEST_QUEUE: usize = 64;

struct Inner {
    requests: mpsc::Sender<Request>,
    view: watch::Receiver<Arc<LocalView>>,
    catalog: watch::Sender<Option<ServerHandle>>,
    tracker: TaskTracker,
}

/// Handle to the local agent state. Cheap to clone.
#[derive(Clone)]
pub struct LocalState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let view = self.view();
        f.debug_struct("LocalState")
            .field("services", &view.services.len())
            .field("checks", &view.checks.len())
            .finish()
    }
}

impl LocalState {
    /// Loads persisted API registrations from `cfg` data_dir, adds the config file's services
    /// and checks, starts the check runner and the anti-entropy task. `catalog` is None on a
    /// client agent that has no server yet (gossip/RPC to servers comes in the next issue).
    pub async fn start(
        cfg: &RuntimeConfig,
        node: &NodeIdentity,
        catalog: Option<ServerHandle>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<LocalState> {
        Self::start_with(cfg, node, catalog, shutdown, LocalOptions::default()).await
    }

    /// [`LocalState::start`] with explicit tunables (tests shorten the sync periods).
    pub async fn start_with(
        cfg: &RuntimeConfig,
        node: &NodeIdentity,
        catalog: Option<ServerHandle>,
        shutdown: CancellationToken,
        options: LocalOptions,
    ) -> anyhow::Result<LocalState> {
        let tracker = TaskTracker::new();
        let (requests, inbox) = mpsc::channel(REQUEST_QUEUE);
        let owner = state::Owner::load(cfg, node, options, shutdown.clone(), &tracker).await?;
        let view = owner.subscribe();
        let (catalog_tx, catalog_rx) = watch::channel(catalog);
        tracker.spawn(owner.run(inbox));
        let syncer = sync::SyncTask::new(view.clone(), catalog_rx, shutdown, options);
        tracker.spawn(syncer.run());
        tracker.close();
        Ok(LocalState {
            inner: Arc::new(Inner {
                requests,
                view,
                catalog: catalog_tx,
                tracker,
            }),
        })
    }

    /// Applies a reloaded configuration: config-file services/checks replaced, API ones kept,
    /// check settings (check_update_interval, output cap, script policy) updated.
    pub async fn reload(&self, cfg: &RuntimeConfig) -> anyhow::Result<()> {
        let (reply, rx) = oneshot::channel();
        let cfg = Box::new(cfg.clone());
        self.inner
            .requests
            .send(Request::Reload { cfg, reply })
            .await
            .map_err(|_| anyhow::anyhow!("the agent is shutting down"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the agent is shutting down"))?
    }

    /// Resolves once every task it started has stopped (after `shutdown` is cancelled).
    pub async fn stopped(&self) {
        self.inner.tracker.wait().await;
    }

    /// Hands anti-entropy a catalog to sync into (a client agent that found a server), or
    /// takes it away; a new catalog triggers a full sync.
    pub fn set_catalog(&self, catalog: Option<ServerHandle>) {
        self.inner.catalog.send_replace(catalog);
    }

    /// The current state (cheap: one `Arc` clone).
    pub fn view(&self) -> Arc<LocalView> {
        self.inner.view.borrow().clone()
    }

    /// A receiver that sees every new state (for hash-based blocking queries).
    pub fn subscribe(&self) -> watch::Receiver<Arc<LocalView>> {
        self.inner.view.clone()
    }

    /// Registers (or replaces) a service from the API, with its checks, and persists it.
    /// Checks the service had before are kept unless `replace_existing_checks`.
    pub async fn register_service(
        &self,
        def: ServiceDefinition,
        replace_existing_checks: bool,
    ) -> Result<(), LocalError> {
        self.request(|reply| Request::RegisterService {
            def,
            replace_existing_checks,
            reply,
        })
        .await
    }

    /// Removes a service and its checks.
    pub async fn deregister_service(&self, id: &str) -> Result<(), LocalError> {
        let id = id.to_owned();
        self.request(|reply| Request::DeregisterService { id, reply })
            .await
    }

    /// Registers (or replaces) a check from the API and persists it.
    pub async fn register_check(&self, def: CheckDefinition) -> Result<(), LocalError> {
        self.request(|reply| Request::RegisterCheck { def, reply })
            .await
    }

    /// Removes a check.
    pub async fn deregister_check(&self, id: &str) -> Result<(), LocalError> {
        let id = id.to_owned();
        self.request(|reply| Request::DeregisterCheck { id, reply })
            .await
    }

    /// Sets a TTL check's status and output and restarts its TTL; the state is persisted.
    pub async fn update_ttl(
        &self,
        id: &str,
        status: HealthStatus,
        output: String,
    ) -> Result<(), LocalError> {
        let id = id.to_owned();
        self.request(|reply| Request::UpdateTtl {
            id,
            status,
            output,
            reply,
        })
        .await
    }

    /// Enables or disables node maintenance mode (`_node_maintenance`).
    pub async fn set_node_maintenance(
        &self,
        enable: bool,
        reason: Option<String>,
    ) -> Result<(), LocalError> {
        self.request(|reply| Request::NodeMaintenance {
            enable,
            reason,
            reply,
        })
        .await
    }

    /// Enables or disables maintenance mode of a service (`_service_maintenance:<id>`).
    pub async fn set_service_maintenance(
        &self,
        service_id: &str,
        enable: bool,
        reason: Option<String>,
    ) -> Result<(), LocalError> {
        let service_id = service_id.to_owned();
        self.request(|reply| Request::ServiceMaintenance {
            service_id,
            enable,
            reason,
            reply,
        })
        .await
    }

    async fn request(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), LocalError>>) -> Request,
    ) -> Result<(), LocalError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .requests
            .send(make(reply))
            .await
            .map_err(|_| LocalError::Stopped)?;
        rx.await.map_err(|_| LocalError::Stopped)?
    }
}
