//! The owner task of the local state: the only code that changes services and checks.
//!
//! It is fed by the API's requests (bounded channel, oneshot replies), the check runner's
//! updates and the reaper's tick, and after every change it publishes a new [`LocalView`].
//! Invariants:
//! - a request is validated completely (check definitions included) before anything changes,
//!   and an API registration is on disk before it is applied, so a failed call changes nothing;
//! - a check always belongs to a registered service or to the node: removing a service
//!   removes its checks, and a check for an unknown service is refused;
//! - replacing a check keeps its current status and output (Consul's snapshot/restore), so a
//!   re-registration or a reload does not flap it to critical;
//! - file writes run on the blocking pool; the task awaits them, so the order of changes on
//!   disk is the order of the requests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use anyhow::Context as _;
use muster_checks::{CheckError, CheckRunner, CheckRunnerHandle, CheckUpdate, TtlState};
use muster_server::{HealthStatus, NodeService};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::convert::{
    CheckContext, catalog_check, maintenance_check, node_service, runner_definition,
    status_from_config, status_from_runner, status_to_runner, tagged_addresses,
};
use super::persist::{
    CheckRecord, MaintenanceRecord, RECORD_VERSION, ServiceRecord, Store, TtlRecord,
};
use super::{
    DEFAULT_NODE_MAINTENANCE_REASON, DEFAULT_SERVICE_MAINTENANCE_REASON, LocalCheck,
    LocalCheckKind, LocalError, LocalOptions, LocalService, LocalView, NODE_MAINTENANCE_CHECK_ID,
    NodeInfo, Request, Source, service_maintenance_check_id,
};
use crate::config::{
    CheckDefinition, CheckKind, CheckSettings, RuntimeConfig, ServiceDefinition,
    unsupported_check_output,
};
use crate::node::NodeIdentity;

/// Runner updates waiting for the owner; the runner coalesces per check when it is full.
const UPDATE_QUEUE: usize = 1024;
/// Runner updates applied before one publish.
const UPDATE_BATCH: usize = 256;
/// Output of a TTL check whose persisted state expired while the agent was down.
const TTL_EXPIRED: &str = "TTL expired";

/// A service and where it came from.
struct ServiceEntry {
    /// The definition without its checks (they live in `checks`).
    def: ServiceDefinition,
    source: Source,
    record: NodeService,
}

/// What a check is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CheckSpec {
    /// Run by the check runner (probe or TTL).
    Run(Box<CheckDefinition>),
    /// A maintenance check: always critical.
    Maintenance {
        service_id: Option<String>,
        reason: String,
    },
}

impl CheckSpec {
    fn service_id(&self) -> Option<&str> {
        match self {
            CheckSpec::Run(def) => def.service_id.as_deref(),
            CheckSpec::Maintenance { service_id, .. } => service_id.as_deref(),
        }
    }
}

struct CheckEntry {
    spec: CheckSpec,
    source: Source,
    status: HealthStatus,
    output: String,
    /// When the check last went critical (for `deregister_critical_service_after`).
    critical_since: Option<Instant>,
}

/// Which existing checks of a service a registration replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// Keep checks that are not in the new registration.
    None,
    /// `?replace-existing-checks`: drop the service's other checks (maintenance excepted).
    All,
    /// A reload: drop the service's other config-file checks.
    FileOnly,
}

pub(crate) struct Owner {
    node: NodeInfo,
    settings: CheckSettings,
    options: LocalOptions,
    store: Store,
    runner: CheckRunnerHandle,
    updates: mpsc::Receiver<CheckUpdate>,
    shutdown: CancellationToken,
    services: BTreeMap<String, ServiceEntry>,
    checks: BTreeMap<String, CheckEntry>,
    /// TTL states read at start, consumed when their check is added.
    pending_ttl: HashMap<String, TtlRecord>,
    view_tx: watch::Sender<Arc<LocalView>>,
    view_services: BTreeMap<String, Arc<LocalService>>,
    view_checks: BTreeMap<String, Arc<LocalCheck>>,
    dirty: bool,
}

fn check_error(e: CheckError) -> LocalError {
    if e.is_stopped() {
        LocalError::Stopped
    } else {
        LocalError::Invalid(e.to_string())
    }
}

/// Runs blocking file work off the async workers and waits for it.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, LocalError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(LocalError::Persist(e.to_string())),
        Err(e) => Err(LocalError::Persist(e.to_string())),
    }
}

fn is_ttl(def: &CheckDefinition) -> bool {
    matches!(def.kind, CheckKind::Ttl { .. })
}

/// The node as the catalog should know it.
pub(crate) fn node_info(cfg: &RuntimeConfig, node: &NodeIdentity) -> NodeInfo {
    let lan = node.advertise_addr;
    let wan = cfg.gossip.advertise_addr_wan.unwrap_or(lan);
    NodeInfo {
        name: node.name.clone(),
        id: node.id.clone(),
        address: lan.to_string(),
        datacenter: node.datacenter.clone(),
        tagged_addresses: tagged_addresses(lan, wan),
        meta: cfg.node_meta.clone(),
    }
}

impl Owner {
    /// Opens the store, starts the check runner and loads the config's and the persisted
    /// registrations. Errors name the file or the check at fault.
    pub(crate) async fn load(
        cfg: &RuntimeConfig,
        node: &NodeIdentity,
        options: LocalOptions,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> anyhow::Result<Owner> {
        anyhow::ensure!(
            !cfg.data_dir.as_os_str().is_empty(),
            "data_dir is not set: local state cannot be persisted"
        );
        let data_dir = cfg.data_dir.clone();
        let (store, loaded) = tokio::task::spawn_blocking(move || {
            Store::open(&data_dir).map(|store| {
                let loaded = store.load();
                (store, loaded)
            })
        })
        .await?
        .with_context(|| format!("cannot open {}", cfg.data_dir.display()))?;

        let (updates_tx, updates) = mpsc::channel(UPDATE_QUEUE);
        let runner_stop = shutdown.child_token();
        let runner = CheckRunner::spawn(updates_tx, runner_stop.clone());
        {
            let runner = runner.clone();
            tracker.spawn(async move { runner.stopped().await });
        }
        let node = node_info(cfg, node);
        let view = LocalView {
            node: node.clone(),
            services: BTreeMap::new(),
            checks: BTreeMap::new(),
            check_update_interval: cfg.check_settings.update_interval,
        };
        let mut owner = Owner {
            node,
            settings: cfg.check_settings,
            options,
            store,
            runner,
            updates,
            shutdown,
            services: BTreeMap::new(),
            checks: BTreeMap::new(),
            pending_ttl: loaded
                .ttl_states
                .into_iter()
                .map(|r| (r.check_id.clone(), r))
                .collect(),
            view_tx: watch::Sender::new(Arc::new(view)),
            view_services: BTreeMap::new(),
            view_checks: BTreeMap::new(),
            dirty: true,
        };

        // Consul's order: config services, persisted services, config checks, persisted checks
        // (so a config check may belong to a service registered through the API).
        let loading = async {
            owner.validate_runnable(cfg)?;
            owner.apply_config_services(cfg).await?;
            owner.restore_services(loaded.services).await;
            owner.validate_references(cfg)?;
            owner.apply_config_checks(cfg).await?;
            owner.restore_checks(loaded.checks).await;
            anyhow::Ok(())
        };
        if let Err(e) = loading.await {
            // Nothing will own the runner: stop it rather than leave probes running.
            runner_stop.cancel();
            return Err(e);
        }
        owner.pending_ttl.clear();
        owner.publish();
        Ok(owner)
    }

    /// A receiver of every published view.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<LocalView>> {
        self.view_tx.subscribe()
    }

    /// Serves requests, runner updates and the reaper until shutdown.
    pub(crate) async fn run(mut self, mut inbox: mpsc::Receiver<Request>) {
        let mut reap = tokio::time::interval(self.options.reap_interval);
        reap.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                request = inbox.recv() => match request {
                    Some(request) => self.handle(request).await,
                    None => break,
                },
                Some(update) = self.updates.recv() => {
                    self.on_update(update);
                    // Apply a burst of updates before publishing once.
                    for _ in 0..UPDATE_BATCH {
                        match self.updates.try_recv() {
                            Ok(update) => self.on_update(update),
                            Err(_) => break,
                        }
                    }
                }
                _ = reap.tick() => self.reap().await,
            }
            self.publish();
        }
        tracing::debug!("local state stopped");
    }

    /// Serves one request; the reply carries Consul's error for the API to map.
    async fn handle(&mut self, request: Request) {
        // A dropped reply receiver only means the caller stopped waiting.
        match request {
            Request::RegisterService {
                def,
                replace_existing_checks,
                reply,
            } => {
                let replace = if replace_existing_checks {
                    Replace::All
                } else {
                    Replace::None
                };
                let _ = reply.send(self.add_service(def, Source::Api, replace).await);
            }
            Request::DeregisterService { id, reply } => {
                let _ = reply.send(self.remove_service(&id).await);
            }
            Request::RegisterCheck { def, reply } => {
                let _ = reply.send(self.register_check(def).await);
            }
            Request::DeregisterCheck { id, reply } => {
                let _ = reply.send(self.deregister_check(&id).await);
            }
            Request::UpdateTtl {
                id,
                status,
                output,
                reply,
            } => {
                let _ = reply.send(self.update_ttl(&id, status, output).await);
            }
            Request::NodeMaintenance {
                enable,
                reason,
                reply,
            } => {
                let _ = reply.send(self.maintenance(None, enable, reason).await);
            }
            Request::ServiceMaintenance {
                service_id,
                enable,
                reason,
                reply,
            } => {
                let _ = reply.send(self.maintenance(Some(service_id), enable, reason).await);
            }
            Request::Reload { cfg, reply } => {
                let _ = reply.send(self.reload(&cfg).await);
            }
        }
    }

    // --- loading and reloading ---------------------------------------------------------------

    /// Adds or replaces the config file's services (with their checks); unchanged ones are
    /// left running as they are.
    async fn apply_config_services(&mut self, cfg: &RuntimeConfig) -> anyhow::Result<()> {
        for def in &cfg.services {
            if self.file_service_unchanged(def) {
                continue;
            }
            self.add_service(def.clone(), Source::File, Replace::FileOnly)
                .await
                .with_context(|| format!("service {:?} from the config files", def.id))?;
        }
        Ok(())
    }

    /// Adds or replaces the config file's standalone checks.
    async fn apply_config_checks(&mut self, cfg: &RuntimeConfig) -> anyhow::Result<()> {
        for def in &cfg.checks {
            let unchanged = self.checks.get(&def.id).is_some_and(|c| {
                c.source == Source::File && c.spec == CheckSpec::Run(Box::new(def.clone()))
            });
            if unchanged {
                continue;
            }
            self.add_check(def.clone(), Source::File)
                .await
                .with_context(|| format!("check {:?} from the config files", def.id))?;
        }
        Ok(())
    }

    /// Refuses a configuration whose checks cannot run.
    fn validate_runnable(&self, cfg: &RuntimeConfig) -> anyhow::Result<()> {
        let settings = &cfg.check_settings;
        let defs = cfg
            .services
            .iter()
            .flat_map(|s| &s.checks)
            .chain(&cfg.checks);
        for def in defs {
            // A check muster cannot run has nothing the runner could refuse.
            let Some(runner_def) =
                runner_definition(def, settings, (HealthStatus::Critical, String::new()))
            else {
                continue;
            };
            runner_def
                .normalized()
                .map_err(|e| anyhow::anyhow!("check {:?} from the config files: {e}", def.id))?;
        }
        Ok(())
    }

    /// Refuses standalone config checks that refer to services neither the config nor the
    /// API registered.
    fn validate_references(&self, cfg: &RuntimeConfig) -> anyhow::Result<()> {
        for def in &cfg.checks {
            let Some(service) = &def.service_id else {
                continue;
            };
            let in_config = cfg.services.iter().any(|s| &s.id == service);
            let from_api = self
                .services
                .get(service)
                .is_some_and(|s| s.source == Source::Api);
            anyhow::ensure!(
                in_config || from_api,
                "check {:?} from the config files refers to service {service:?}, which is not registered",
                def.id
            );
        }
        Ok(())
    }

    /// Whether a config service and its checks are exactly what is running.
    fn file_service_unchanged(&self, def: &ServiceDefinition) -> bool {
        let Some(entry) = self.services.get(&def.id) else {
            return false;
        };
        let mut bare = def.clone();
        bare.checks.clear();
        entry.source == Source::File
            && entry.def == bare
            && def.checks.iter().all(|c| {
                self.checks.get(&c.id).is_some_and(|e| {
                    e.source == Source::File && e.spec == CheckSpec::Run(Box::new(c.clone()))
                })
            })
    }

    /// Restores persisted API services; the config files win over them.
    async fn restore_services(&mut self, services: Vec<ServiceRecord>) {
        for record in services {
            let id = record.service.id.clone();
            if self.services.contains_key(&id) {
                // Consul prefers the config files and purges the persisted copy.
                tracing::info!(service = %id, "service is defined in the config files; dropping its persisted API registration");
                let store = self.store.clone();
                if let Err(e) = blocking(move || store.remove_service(&id)).await {
                    tracing::warn!(error = %e, "cannot remove a persisted service");
                }
                continue;
            }
            let def = record.service;
            let service_id = def.id.clone();
            if let Err(e) = self.insert_service(def, Source::Api) {
                tracing::error!(service = %service_id, error = %e, "cannot restore persisted service; skipped");
            }
        }
    }

    /// Restores persisted API checks and maintenance modes; config-file checks win.
    async fn restore_checks(&mut self, checks: Vec<CheckRecord>) {
        for record in checks {
            let id = record.id().unwrap_or_default().to_owned();
            if self
                .checks
                .get(&id)
                .is_some_and(|c| c.source == Source::File)
            {
                tracing::info!(check = %id, "check is defined in the config files; keeping that one");
                continue;
            }
            let result = match (record.check, record.maintenance) {
                (Some(def), _) => self.restore_check(def).await,
                (None, Some(m)) => self.restore_maintenance(m),
                (None, None) => Ok(()),
            };
            if let Err(e) = result {
                tracing::error!(check = %id, error = %e, "cannot restore persisted check; skipped (its file is kept)");
            }
        }
    }

    /// A persisted API check, refused when its service is gone.
    async fn restore_check(&mut self, def: CheckDefinition) -> Result<(), LocalError> {
        if let Some(service) = &def.service_id
            && !self.services.contains_key(service)
        {
            return Err(LocalError::MissingService(service.clone()));
        }
        self.add_check(def, Source::Api).await
    }

    /// A persisted maintenance check, refused when its service is gone.
    fn restore_maintenance(&mut self, m: MaintenanceRecord) -> Result<(), LocalError> {
        if let Some(service) = &m.service_id
            && !self.services.contains_key(service)
        {
            return Err(LocalError::MissingService(service.clone()));
        }
        self.insert_maintenance(m.check_id, m.service_id, m.reason);
        Ok(())
    }

    /// Applies a reloaded config: validate it all, drop the config registrations that are
    /// gone, add or replace the rest (unchanged ones keep running), re-add every check when
    /// the output cap changed. API registrations are untouched.
    async fn reload(&mut self, cfg: &RuntimeConfig) -> anyhow::Result<()> {
        self.validate_runnable(cfg)?;
        self.validate_references(cfg)?;
        let old_output_cap = self.settings.output_max_size;
        self.settings = cfg.check_settings;
        self.node.meta = cfg.node_meta.clone();
        self.dirty = true;

        // Config registrations that are gone.
        let wanted_services: BTreeSet<&str> = cfg.services.iter().map(|s| s.id.as_str()).collect();
        let stale_services: Vec<String> = self
            .services
            .iter()
            .filter(|(id, s)| s.source == Source::File && !wanted_services.contains(id.as_str()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale_services {
            self.remove_service(&id).await?;
        }
        let wanted_checks: BTreeSet<&str> = cfg
            .services
            .iter()
            .flat_map(|s| &s.checks)
            .chain(&cfg.checks)
            .map(|c| c.id.as_str())
            .collect();
        let stale_checks: Vec<String> = self
            .checks
            .iter()
            .filter(|(id, c)| c.source == Source::File && !wanted_checks.contains(id.as_str()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale_checks {
            self.deregister_check(&id).await?;
        }

        self.apply_config_services(cfg).await?;
        self.apply_config_checks(cfg).await?;

        // A new output cap changes every runner definition: re-add them, keeping their state.
        if old_output_cap != self.settings.output_max_size {
            let runnable: Vec<(CheckDefinition, Source)> = self
                .checks
                .values()
                .filter_map(|c| match &c.spec {
                    CheckSpec::Run(def) => Some((def.as_ref().clone(), c.source)),
                    CheckSpec::Maintenance { .. } => None,
                })
                .collect();
            for (def, source) in runnable {
                self.add_check(def, source).await?;
            }
        }
        tracing::info!(
            services = self.services.len(),
            checks = self.checks.len(),
            "local state reloaded"
        );
        Ok(())
    }

    // --- services ------------------------------------------------------------------------------

    /// Validates every check of a service against the runner's rules.
    fn validate_checks<'a>(
        &self,
        defs: impl IntoIterator<Item = &'a CheckDefinition>,
    ) -> Result<(), LocalError> {
        for def in defs {
            if let Some(runner_def) =
                runner_definition(def, &self.settings, (HealthStatus::Critical, String::new()))
            {
                runner_def.normalized().map_err(check_error)?;
            }
        }
        Ok(())
    }

    /// Registers a service with its checks: validate everything, persist (API) or drop a
    /// persisted copy the config now shadows (file), then apply.
    async fn add_service(
        &mut self,
        def: ServiceDefinition,
        source: Source,
        replace: Replace,
    ) -> Result<(), LocalError> {
        self.validate_checks(&def.checks)?;
        let mut bare = def.clone();
        bare.checks.clear();
        let previous_source = self.services.get(&def.id).map(|s| s.source);
        if source == Source::Api {
            let store = self.store.clone();
            let service = ServiceRecord {
                version: RECORD_VERSION,
                source,
                service: bare.clone(),
            };
            let checks: Vec<CheckRecord> = def
                .checks
                .iter()
                .map(|c| CheckRecord {
                    version: RECORD_VERSION,
                    source,
                    check: Some(c.clone()),
                    maintenance: None,
                })
                .collect();
            blocking(move || {
                store.save_service(&service)?;
                checks.iter().try_for_each(|c| store.save_check(c))
            })
            .await?;
        } else if previous_source == Some(Source::Api) {
            // The config files take the ID over; the persisted API copy must not come back.
            let store = self.store.clone();
            let id = def.id.clone();
            blocking(move || store.remove_service(&id)).await?;
        }

        let service_id = def.id.clone();
        let new_checks: BTreeSet<String> = def.checks.iter().map(|c| c.id.clone()).collect();
        let old_checks: Vec<(String, Source)> = self
            .checks
            .iter()
            .filter(|(id, c)| {
                c.spec.service_id() == Some(service_id.as_str())
                    && matches!(c.spec, CheckSpec::Run(_))
                    && !new_checks.contains(id.as_str())
            })
            .map(|(id, c)| (id.clone(), c.source))
            .collect();
        self.insert_service(bare, source)?;
        for check in def.checks {
            self.add_check(check, source).await?;
        }
        for (id, check_source) in old_checks {
            let drop = match replace {
                Replace::None => false,
                Replace::All => true,
                Replace::FileOnly => check_source == Source::File,
            };
            if drop {
                self.deregister_check(&id).await?;
            }
        }
        self.refresh_service(&service_id);
        Ok(())
    }

    /// Inserts a service record (no checks, no persistence).
    fn insert_service(&mut self, def: ServiceDefinition, source: Source) -> Result<(), LocalError> {
        if def.id.is_empty() {
            return Err(LocalError::Invalid("Missing service ID".into()));
        }
        let record = node_service(&def);
        let id = def.id.clone();
        self.services.insert(
            id.clone(),
            ServiceEntry {
                def,
                source,
                record,
            },
        );
        self.refresh_service(&id);
        Ok(())
    }

    /// Removes a service and its checks, files first so a failure changes nothing.
    async fn remove_service(&mut self, id: &str) -> Result<(), LocalError> {
        let Some(entry) = self.services.get(id) else {
            return Err(LocalError::UnknownService(id.to_owned()));
        };
        let check_ids: Vec<String> = self
            .checks
            .iter()
            .filter(|(_, c)| c.spec.service_id() == Some(id))
            .map(|(cid, _)| cid.clone())
            .collect();
        if entry.source == Source::Api || check_ids.iter().any(|c| self.is_api_check(c)) {
            let store = self.store.clone();
            let (sid, cids) = (id.to_owned(), check_ids.clone());
            blocking(move || {
                store.remove_service(&sid)?;
                cids.iter().try_for_each(|c| store.remove_check(c))
            })
            .await?;
        }
        for cid in &check_ids {
            self.drop_check(cid).await;
        }
        self.services.remove(id);
        self.view_services.remove(id);
        self.dirty = true;
        Ok(())
    }

    /// Whether a check was registered through the API (so it has a file).
    fn is_api_check(&self, id: &str) -> bool {
        self.checks.get(id).is_some_and(|c| c.source == Source::Api)
    }

    // --- checks --------------------------------------------------------------------------------

    /// An API check: its service must be here; persisted before it is applied.
    async fn register_check(&mut self, def: CheckDefinition) -> Result<(), LocalError> {
        if let Some(service) = &def.service_id
            && !self.services.contains_key(service)
        {
            return Err(LocalError::MissingService(service.clone()));
        }
        self.validate_checks([&def])?;
        let store = self.store.clone();
        let record = CheckRecord {
            version: RECORD_VERSION,
            source: Source::Api,
            check: Some(def.clone()),
            maintenance: None,
        };
        blocking(move || store.save_check(&record)).await?;
        self.add_check(def, Source::Api).await
    }

    /// Adds or replaces a runnable check, keeping the state of a check it replaces and
    /// restoring a persisted TTL state at start.
    async fn add_check(&mut self, def: CheckDefinition, source: Source) -> Result<(), LocalError> {
        let id = def.id.clone();
        let carried = self.checks.get(&id).map(|c| (c.status, c.output.clone()));
        let initial = carried
            .clone()
            .unwrap_or_else(|| (status_from_config(def.initial_status), String::new()));
        let Some(mut runner_def) = runner_definition(&def, &self.settings, initial) else {
            self.add_unsupported_check(def, source).await;
            return Ok(());
        };
        let restored = if is_ttl(&def) {
            self.pending_ttl.remove(&id)
        } else {
            None
        };
        match restored {
            Some(record) if !record.remaining().is_zero() => {
                let state = TtlState {
                    status: status_to_runner(record.status),
                    output: record.output.clone(),
                    remaining: record.remaining(),
                };
                self.runner
                    .restore_ttl(runner_def, state)
                    .await
                    .map_err(check_error)?;
            }
            Some(_) => {
                // The TTL ran out while the agent was down: the check is critical, as it
                // would have become had the agent been running.
                runner_def.initial_status = muster_checks::HealthStatus::Critical;
                runner_def.initial_output = TTL_EXPIRED.to_owned();
                self.runner.add(runner_def).await.map_err(check_error)?;
            }
            None => self.runner.add(runner_def).await.map_err(check_error)?,
        }
        // Read back what the runner reports now (restored, carried or initial).
        let (status, output) = match self.runner.state(&id).await.map_err(check_error)? {
            Some(s) => (status_from_runner(s.status), s.output),
            None => (HealthStatus::Critical, String::new()),
        };
        let output = if self.settings.discard_output {
            String::new()
        } else {
            output
        };
        // A replaced check that stays critical keeps its clock (for the reaper).
        let critical_since = match self.checks.get(&id) {
            _ if status != HealthStatus::Critical => None,
            Some(old) => old.critical_since.or_else(|| Some(Instant::now())),
            None => Some(Instant::now()),
        };
        self.checks.insert(
            id.clone(),
            CheckEntry {
                spec: CheckSpec::Run(Box::new(def)),
                source,
                status,
                output,
                critical_since,
            },
        );
        self.refresh_check(&id);
        Ok(())
    }

    /// Adds or replaces a check muster cannot run: never handed to the runner (a runnable
    /// check it replaces is taken off the runner), always critical, with an output that says
    /// why, so its service never looks healthy on a check nobody runs.
    async fn add_unsupported_check(&mut self, def: CheckDefinition, source: Source) {
        let id = def.id.clone();
        let was_running = self
            .checks
            .get(&id)
            .is_some_and(|c| matches!(&c.spec, CheckSpec::Run(old) if !old.is_unsupported()));
        if was_running && let Err(e) = self.runner.remove(&id).await {
            tracing::debug!(check = %id, error = %e, "check runner did not remove the check");
        }
        let output = if self.settings.discard_output {
            String::new()
        } else {
            unsupported_check_output(def.kind.type_name())
        };
        self.checks.insert(
            id.clone(),
            CheckEntry {
                spec: CheckSpec::Run(Box::new(def)),
                source,
                status: HealthStatus::Critical,
                output,
                // Not a clock the reaper may act on: the check is not failing, it is not run.
                critical_since: None,
            },
        );
        self.refresh_check(&id);
    }

    /// Removes a check and its files (TTL state included).
    async fn deregister_check(&mut self, id: &str) -> Result<(), LocalError> {
        if !self.checks.contains_key(id) {
            return Err(LocalError::UnknownCheck(id.to_owned()));
        }
        // Also clears the TTL state of a config-file check.
        let store = self.store.clone();
        let cid = id.to_owned();
        blocking(move || store.remove_check(&cid)).await?;
        self.drop_check(id).await;
        Ok(())
    }

    /// Removes a check from memory and the runner (no persistence).
    async fn drop_check(&mut self, id: &str) {
        if let Some(entry) = self.checks.remove(id)
            && matches!(&entry.spec, CheckSpec::Run(def) if !def.is_unsupported())
            && let Err(e) = self.runner.remove(id).await
        {
            tracing::debug!(check = %id, error = %e, "check runner did not remove the check");
        }
        self.view_checks.remove(id);
        self.dirty = true;
    }

    /// A TTL update: the runner restarts the TTL and caps the output; the new state is
    /// persisted so a restart restores it. An unknown check is "not a TTL check", as in
    /// Consul: clients (Spring Cloud Consul, go-kit) match that 500 text to re-register after
    /// an agent restart.
    async fn update_ttl(
        &mut self,
        id: &str,
        status: HealthStatus,
        output: String,
    ) -> Result<(), LocalError> {
        let is_ttl_check = self
            .checks
            .get(id)
            .is_some_and(|entry| matches!(&entry.spec, CheckSpec::Run(def) if is_ttl(def)));
        if !is_ttl_check {
            return Err(LocalError::NotTtl(id.to_owned()));
        }
        let state = self
            .runner
            .ttl_update(id, status_to_runner(status), output)
            .await
            .map_err(|e| {
                if e.is_not_ttl() || e.is_unknown_check() {
                    LocalError::NotTtl(id.to_owned())
                } else {
                    check_error(e)
                }
            })?;
        let new_status = status_from_runner(state.status);
        self.set_check_state(id, new_status, state.output.clone());
        let store = self.store.clone();
        let record = TtlRecord::new(id, new_status, &state.output, state.remaining);
        blocking(move || store.save_ttl_state(&record)).await
    }

    /// Records a check's new status and output.
    fn set_check_state(&mut self, id: &str, status: HealthStatus, output: String) {
        let discard = self.settings.discard_output;
        let Some(entry) = self.checks.get_mut(id) else {
            return;
        };
        let output = if discard { String::new() } else { output };
        if status == HealthStatus::Critical {
            entry.critical_since.get_or_insert_with(Instant::now);
        } else {
            entry.critical_since = None;
        }
        if entry.status == status && entry.output == output {
            return;
        }
        entry.status = status;
        entry.output = output;
        self.refresh_check(id);
    }

    /// A result from the check runner.
    fn on_update(&mut self, update: CheckUpdate) {
        // Updates for checks that were removed meanwhile are dropped.
        let runnable = self
            .checks
            .get(&update.id)
            .is_some_and(|c| matches!(&c.spec, CheckSpec::Run(def) if !def.is_unsupported()));
        if runnable {
            self.set_check_state(&update.id, status_from_runner(update.status), update.output);
        }
    }

    // --- maintenance ---------------------------------------------------------------------------

    /// Node (`service_id` None) or service maintenance; enabling twice keeps the first reason.
    async fn maintenance(
        &mut self,
        service_id: Option<String>,
        enable: bool,
        reason: Option<String>,
    ) -> Result<(), LocalError> {
        let check_id = match &service_id {
            Some(sid) => {
                if !self.services.contains_key(sid) {
                    return Err(LocalError::UnknownService(sid.clone()));
                }
                service_maintenance_check_id(sid)
            }
            None => NODE_MAINTENANCE_CHECK_ID.to_owned(),
        };
        if !enable {
            if self.checks.contains_key(&check_id) {
                self.deregister_check(&check_id).await?;
                tracing::info!(check = %check_id, "maintenance mode disabled");
            }
            return Ok(());
        }
        if self.checks.contains_key(&check_id) {
            // Consul leaves an enabled maintenance mode (and its reason) as it is.
            return Ok(());
        }
        let default = if service_id.is_some() {
            DEFAULT_SERVICE_MAINTENANCE_REASON
        } else {
            DEFAULT_NODE_MAINTENANCE_REASON
        };
        let reason = reason
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| default.to_owned());
        let store = self.store.clone();
        let record = CheckRecord {
            version: RECORD_VERSION,
            source: Source::Api,
            check: None,
            maintenance: Some(MaintenanceRecord {
                check_id: check_id.clone(),
                service_id: service_id.clone(),
                reason: reason.clone(),
            }),
        };
        blocking(move || store.save_check(&record)).await?;
        tracing::info!(check = %check_id, %reason, "maintenance mode enabled");
        self.insert_maintenance(check_id, service_id, reason);
        Ok(())
    }

    /// Adds a maintenance check to memory (persisted by the caller).
    fn insert_maintenance(&mut self, check_id: String, service_id: Option<String>, reason: String) {
        self.checks.insert(
            check_id.clone(),
            CheckEntry {
                spec: CheckSpec::Maintenance { service_id, reason },
                source: Source::Api,
                status: HealthStatus::Critical,
                output: String::new(),
                critical_since: Some(Instant::now()),
            },
        );
        self.refresh_check(&check_id);
    }

    // --- reaper ----------------------------------------------------------------------------------

    /// Deregisters services whose check has been critical longer than its
    /// `deregister_critical_service_after`.
    async fn reap(&mut self) {
        let now = Instant::now();
        let mut due: BTreeSet<String> = BTreeSet::new();
        for (id, check) in &self.checks {
            let CheckSpec::Run(def) = &check.spec else {
                continue;
            };
            // A check muster cannot run says nothing about its service's health.
            if def.is_unsupported() {
                continue;
            }
            let (Some(after), Some(service), Some(since)) = (
                def.deregister_critical_service_after,
                def.service_id.as_ref(),
                check.critical_since,
            ) else {
                continue;
            };
            if now.saturating_duration_since(since) >= after {
                tracing::warn!(
                    check = %id,
                    service = %service,
                    critical_for = ?now.saturating_duration_since(since),
                    "check has been critical for too long; deregistering its service"
                );
                due.insert(service.clone());
            }
        }
        for service in due {
            match self.remove_service(&service).await {
                Ok(()) | Err(LocalError::UnknownService(_)) => {}
                Err(e) => {
                    tracing::error!(service = %service, error = %e, "cannot deregister a critical service");
                }
            }
        }
    }

    // --- the published view ----------------------------------------------------------------------

    /// Rebuilds the published record of a service and of its checks.
    fn refresh_service(&mut self, id: &str) {
        let Some(entry) = self.services.get(id) else {
            return;
        };
        self.view_services.insert(
            id.to_owned(),
            Arc::new(LocalService {
                service: entry.record.clone(),
                source: entry.source,
            }),
        );
        // Checks carry the service's name and tags.
        let check_ids: Vec<String> = self
            .checks
            .iter()
            .filter(|(_, c)| c.spec.service_id() == Some(id))
            .map(|(cid, _)| cid.clone())
            .collect();
        for cid in check_ids {
            self.refresh_check(&cid);
        }
        self.dirty = true;
    }

    /// Rebuilds the published record of a check.
    fn refresh_check(&mut self, id: &str) {
        let Some(entry) = self.checks.get(id) else {
            return;
        };
        let service = entry
            .spec
            .service_id()
            .and_then(|s| self.services.get(s))
            .map(|s| &s.record);
        let (check, kind, deregister_critical_after) = match &entry.spec {
            CheckSpec::Run(def) => {
                let ctx = CheckContext {
                    node: &self.node.name,
                    service,
                    status: entry.status,
                    output: &entry.output,
                };
                let kind = if is_ttl(def) {
                    LocalCheckKind::Ttl
                } else if def.is_unsupported() {
                    LocalCheckKind::Unsupported
                } else {
                    LocalCheckKind::Probe
                };
                (
                    catalog_check(def, &ctx),
                    kind,
                    def.deregister_critical_service_after,
                )
            }
            CheckSpec::Maintenance { reason, .. } => (
                maintenance_check(&self.node.name, id, service, reason),
                LocalCheckKind::Maintenance,
                None,
            ),
        };
        self.view_checks.insert(
            id.to_owned(),
            Arc::new(LocalCheck {
                check,
                kind,
                source: entry.source,
                deregister_critical_after,
            }),
        );
        self.dirty = true;
    }

    /// Sends the new view if anything changed since the last one.
    fn publish(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let view = LocalView {
            node: self.node.clone(),
            services: self.view_services.clone(),
            checks: self.view_checks.clone(),
            check_update_interval: self.settings.update_interval,
        };
        self.view_tx.send_replace(Arc::new(view));
    }
}
