//! Anti-entropy: keeps the catalog's record of this node equal to the local state (Consul's
//! `agent/ae` and `agent/local/state.go`; the algorithm is written up in
//! `docs/anti-entropy.md`).
//!
//! One task owns the sync state: what it believes the catalog holds for this node
//! ([`Remote`]), the output-throttling deadlines and the tag-override snapshots. Its inputs
//! are watch channels (the local view and the catalog handle), so they coalesce and never
//! back up. The decisions are a pure function, [`plan`], of (desired, remote, deadlines,
//! now); the task only reads the catalog, writes the planned commands and applies the
//! successful ones to its model.
//!
//! Invariants: a write is planned only for a difference (an in-sync item is never
//! re-written, so catalog indexes do not move); `serfHealth` and the `consul` service are
//! never deleted; a failed write drops the model, so the retry starts with a fresh read of
//! the catalog and nothing is lost.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use muster_server::catalog::command::MAX_CHECKS;
use muster_server::catalog::model::{CONSUL_SERVICE, SERF_CHECK_ID};
use muster_server::{
    Catalog, Command, Consistency, Deregistration, HealthCheck, Node, NodeService, Registration,
    ServerHandle,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{LocalOptions, LocalView};

/// Cluster size up to which the full-sync period is not stretched (Consul's `scaleThreshold`).
const SCALE_THRESHOLD: usize = 128;
/// Longest stagger before the full sync that follows a new leader (Consul's `serverUpIntv`).
const SERVER_UP_STAGGER: Duration = Duration::from_secs(3);
/// How often the task looks at the catalog's leadership.
const LEADER_POLL: Duration = Duration::from_secs(1);
/// At most one sync failure is logged per this period.
const LOG_EVERY: Duration = Duration::from_secs(30);
/// First retry delay after a failure; it doubles up to `LocalOptions::retry_interval`.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// Consul's `scaleFactor`: 1 up to 128 nodes, then one more for every doubling
/// (`ceil(log2(n) - log2(128)) + 1`: 2 up to 256 nodes, 3 up to 512, 7 at 8192).
pub fn scale_factor(nodes: usize) -> u32 {
    let mut factor = 1;
    let mut covered = SCALE_THRESHOLD;
    while covered < nodes {
        covered = covered.saturating_mul(2);
        factor += 1;
    }
    factor
}

/// Time to the next full sync: `interval` plus a random stagger in
/// `[0, interval × scale)` (Consul's `Interval + Jitter(Interval)`); `r` is in `[0, 1)`.
pub(crate) fn full_sync_delay(interval: Duration, scale: u32, r: f64) -> Duration {
    interval + interval.mul_f64(f64::from(scale) * r.clamp(0.0, 1.0))
}

/// Deferral of an output-only change: `interval/2 + r × interval` (Consul's
/// `CheckUpdateInterval/2 + RandomStagger(CheckUpdateInterval)`); `r` is in `[0, 1)`.
pub(crate) fn defer_delay(update_interval: Duration, r: f64) -> Duration {
    update_interval / 2 + update_interval.mul_f64(r.clamp(0.0, 1.0))
}

/// Delay before retrying after the `failures`-th consecutive failure: doubling from
/// [`FIRST_RETRY`] up to `max`, plus up to half of it again at random.
pub(crate) fn retry_delay(max: Duration, failures: u32, r: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = FIRST_RETRY.saturating_mul(1 << exp).min(max);
    base + base.mul_f64(r.clamp(0.0, 1.0) / 2.0)
}

fn random_fraction() -> f64 {
    rand::random::<f64>()
}

/// Logs at most once per period, counting what it held back.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) fn new(every: Duration) -> Self {
        LogLimiter {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(number suppressed since the last log)` when a log line may be written now.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

fn key(id: &str) -> String {
    id.to_lowercase()
}

/// What the catalog should hold for this node, keyed by lowercased ID (the catalog's
/// lookups are case-insensitive).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Desired {
    pub node: Node,
    pub services: BTreeMap<String, NodeService>,
    pub checks: BTreeMap<String, HealthCheck>,
}

/// What the sync task believes the catalog holds for this node.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Remote {
    pub node: Option<Node>,
    pub services: BTreeMap<String, NodeService>,
    pub checks: BTreeMap<String, HealthCheck>,
}

/// Tags adopted from the catalog for a service with `enable_tag_override`, valid while the
/// local definition is still `local`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TagOverride {
    pub local: NodeService,
    pub tags: Vec<String>,
}

impl Desired {
    pub(crate) fn from_view(view: &LocalView, overrides: &HashMap<String, TagOverride>) -> Self {
        let node = Node {
            id: view.node.id.clone(),
            name: view.node.name.clone(),
            address: view.node.address.clone(),
            datacenter: view.node.datacenter.clone(),
            tagged_addresses: view.node.tagged_addresses.clone(),
            meta: view.node.meta.clone(),
            create_index: 0,
            modify_index: 0,
        };
        let mut services = BTreeMap::new();
        for (id, local) in &view.services {
            let mut service = local.service.clone();
            if let Some(o) = overrides.get(id)
                && o.local == service
            {
                service.tags = o.tags.clone();
            }
            services.insert(key(id), service);
        }
        let mut checks = BTreeMap::new();
        for (id, local) in &view.checks {
            let mut check = local.check.clone();
            if let Some(service) = services.get(&key(&check.service_id)) {
                // The catalog copies the stored service's tags onto its checks.
                check.service_tags = service.tags.clone();
            }
            checks.insert(key(id), check);
        }
        Desired {
            node,
            services,
            checks,
        }
    }
}

impl Remote {
    /// This node's records in the catalog.
    pub(crate) fn read(catalog: &Catalog, node: &str) -> Remote {
        let services = catalog
            .node_services(node)
            .1
            .map(|ns| ns.services.into_values().map(|s| (key(&s.id), s)).collect())
            .unwrap_or_default();
        let checks = catalog
            .node_checks(node)
            .1
            .into_iter()
            .map(|c| (key(&c.check_id), c))
            .collect();
        Remote {
            node: catalog.node(node).cloned(),
            services,
            checks,
        }
    }

    /// Applies a command that the catalog accepted, as the catalog applies it.
    pub(crate) fn apply(&mut self, command: &Command) {
        match command {
            Command::Register(r) => {
                if !r.skip_node_update || self.node.is_none() {
                    self.node = Some(Node {
                        id: r.id.clone(),
                        name: r.node.clone(),
                        address: r.address.clone(),
                        datacenter: r.datacenter.clone(),
                        tagged_addresses: r.tagged_addresses.clone(),
                        meta: r.node_meta.clone(),
                        create_index: 0,
                        modify_index: 0,
                    });
                }
                if let Some(service) = &r.service {
                    let k = key(&service.id);
                    for check in self.checks.values_mut() {
                        if key(&check.service_id) == k {
                            check.service_name = service.service.clone();
                            check.service_tags = service.tags.clone();
                        }
                    }
                    self.services.insert(k, service.clone());
                }
                for check in &r.checks {
                    let mut stored = check.clone();
                    match self.services.get(&key(&check.service_id)) {
                        Some(s) if !check.service_id.is_empty() => {
                            stored.service_name = s.service.clone();
                            stored.service_tags = s.tags.clone();
                        }
                        _ => {
                            stored.service_name.clear();
                            stored.service_tags.clear();
                        }
                    }
                    self.checks.insert(key(&check.check_id), stored);
                }
            }
            Command::Deregister(d) if !d.service_id.is_empty() => {
                let k = key(&d.service_id);
                self.services.remove(&k);
                self.checks.retain(|_, c| key(&c.service_id) != k);
            }
            Command::Deregister(d) if !d.check_id.is_empty() => {
                self.checks.remove(&key(&d.check_id));
            }
            Command::Deregister(_) => *self = Remote::default(),
            _ => {}
        }
    }
}

fn node_in_sync(remote: &Node, desired: &Node) -> bool {
    remote.name == desired.name
        && remote.id.eq_ignore_ascii_case(&desired.id)
        && remote.address == desired.address
        && remote.tagged_addresses == desired.tagged_addresses
        && remote.meta == desired.meta
}

fn output_only_differs(desired: &HealthCheck, remote: &HealthCheck) -> bool {
    let mut same_output = desired.clone();
    same_output.output = remote.output.clone();
    same_output.same_content(remote)
}

/// Output throttling state: when each deferred output may be written, and the output each
/// check had at the last round (to tell a fresh local change from an old difference).
#[derive(Debug, Clone, Default)]
pub(crate) struct Throttle {
    deadlines: HashMap<String, Instant>,
    seen: HashMap<String, String>,
}

impl Throttle {
    /// The earliest deadline, if any output is deferred.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.values().min().copied()
    }

    /// Whether a deferred output is due.
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.deadlines.values().any(|at| *at <= now)
    }
}

/// The sync settings of one planning round.
pub(crate) struct Round {
    pub now: Instant,
    /// `check_update_interval` (zero: no throttling).
    pub update_interval: Duration,
    /// A full sync pushes pending output at once unless a deferral is already running
    /// (Consul: so that a check that never changes status still gets its output synced).
    pub full: bool,
}

/// Decides whether a desired check must be written now, arming or firing its deferral.
fn needs_push(
    k: &str,
    desired: &HealthCheck,
    remote: Option<&HealthCheck>,
    throttle: &mut Throttle,
    round: &Round,
    rng: &mut impl FnMut() -> f64,
) -> bool {
    let Some(remote) = remote else {
        throttle.deadlines.remove(k);
        return true;
    };
    if desired.same_content(remote) {
        throttle.deadlines.remove(k);
        return false;
    }
    if round.update_interval.is_zero() || !output_only_differs(desired, remote) {
        // A status (or definition) change goes out at once, with the latest output.
        throttle.deadlines.remove(k);
        return true;
    }
    // Output only: a fresh local change waits; an old difference (found by a full sync, or
    // at start) goes out at once, so a check whose status never changes still gets its
    // output into the catalog.
    let fresh = throttle
        .seen
        .get(k)
        .is_some_and(|seen| *seen != desired.output);
    match throttle.deadlines.get(k) {
        Some(at) if *at <= round.now => {
            throttle.deadlines.remove(k);
            true
        }
        Some(_) => false,
        None if round.full && !fresh => true,
        None => {
            let at = round.now + defer_delay(round.update_interval, rng());
            throttle.deadlines.insert(k.to_owned(), at);
            false
        }
    }
}

fn registration(
    node: &Node,
    skip_node_update: bool,
    service: Option<NodeService>,
    checks: Vec<HealthCheck>,
) -> Command {
    Command::Register(Registration {
        id: node.id.clone(),
        node: node.name.clone(),
        address: node.address.clone(),
        datacenter: node.datacenter.clone(),
        tagged_addresses: node.tagged_addresses.clone(),
        node_meta: node.meta.clone(),
        service,
        checks,
        skip_node_update,
    })
}

fn deregistration(node: &Node, service_id: &str, check_id: &str) -> Command {
    Command::Deregister(Deregistration {
        node: node.name.clone(),
        datacenter: node.datacenter.clone(),
        service_id: service_id.to_owned(),
        check_id: check_id.to_owned(),
    })
}

/// The commands that make the catalog match `desired`, given what it holds (`remote`):
/// deletions first, then each out-of-sync service with its out-of-sync checks, then
/// node-level checks, then the node itself if nothing else carried it. Updates the
/// output-throttling state.
pub(crate) fn plan(
    desired: &Desired,
    remote: &Remote,
    throttle: &mut Throttle,
    round: &Round,
    rng: &mut impl FnMut() -> f64,
) -> Vec<Command> {
    let node = &desired.node;
    let mut commands = Vec::new();
    let mut node_synced = remote.node.as_ref().is_some_and(|n| node_in_sync(n, node));
    throttle
        .deadlines
        .retain(|k, _| desired.checks.contains_key(k));

    // Entries the agent does not have: the catalog drops a service's checks with it.
    let mut dropped = BTreeSet::new();
    for (k, service) in &remote.services {
        if !desired.services.contains_key(k) && *k != key(CONSUL_SERVICE) {
            commands.push(deregistration(node, &service.id, ""));
            dropped.insert(k.clone());
        }
    }
    for (k, check) in &remote.checks {
        let managed_by_leader = *k == key(SERF_CHECK_ID);
        let goes_with_service = dropped.contains(&key(&check.service_id));
        if !desired.checks.contains_key(k) && !managed_by_leader && !goes_with_service {
            commands.push(deregistration(node, "", &check.check_id));
        }
    }

    let push: BTreeSet<&String> = desired
        .checks
        .iter()
        .filter(|(k, c)| needs_push(k, c, remote.checks.get(*k), throttle, round, rng))
        .map(|(k, _)| k)
        .collect();
    throttle.seen = desired
        .checks
        .iter()
        .map(|(k, c)| (k.clone(), c.output.clone()))
        .collect();
    let pushed = |service_id: &str| -> Vec<HealthCheck> {
        desired
            .checks
            .iter()
            .filter(|(k, c)| push.contains(k) && key(&c.service_id) == key(service_id))
            .map(|(_, c)| c.clone())
            .collect()
    };

    for (k, service) in &desired.services {
        let in_sync = remote
            .services
            .get(k)
            .is_some_and(|r| r.same_content(service));
        let checks = pushed(&service.id);
        if in_sync && checks.is_empty() {
            continue;
        }
        if checks.is_empty() {
            commands.push(registration(
                node,
                node_synced,
                Some(service.clone()),
                vec![],
            ));
        }
        for chunk in checks.chunks(MAX_CHECKS) {
            commands.push(registration(
                node,
                node_synced,
                Some(service.clone()),
                chunk.to_vec(),
            ));
        }
        node_synced = true;
    }
    let node_checks = pushed("");
    for chunk in node_checks.chunks(MAX_CHECKS) {
        commands.push(registration(node, node_synced, None, chunk.to_vec()));
        node_synced = true;
    }
    if !node_synced {
        commands.push(registration(node, false, None, vec![]));
    }
    commands
}

/// The anti-entropy task.
pub(crate) struct SyncTask {
    view: watch::Receiver<Arc<LocalView>>,
    catalog: watch::Receiver<Option<ServerHandle>>,
    shutdown: CancellationToken,
    options: LocalOptions,
    remote: Option<Remote>,
    throttle: Throttle,
    overrides: HashMap<String, TagOverride>,
    next_full: Instant,
    retry_at: Option<Instant>,
    changes: bool,
    failures: u32,
    cluster_size: usize,
    leader_known: bool,
    leading: bool,
    waiting_logged: bool,
    log: LogLimiter,
}

impl SyncTask {
    pub(crate) fn new(
        view: watch::Receiver<Arc<LocalView>>,
        catalog: watch::Receiver<Option<ServerHandle>>,
        shutdown: CancellationToken,
        options: LocalOptions,
    ) -> Self {
        SyncTask {
            view,
            catalog,
            shutdown,
            options,
            remote: None,
            throttle: Throttle::default(),
            overrides: HashMap::new(),
            next_full: Instant::now(),
            retry_at: None,
            changes: true,
            failures: 0,
            cluster_size: 1,
            leader_known: false,
            leading: false,
            waiting_logged: false,
            log: LogLimiter::new(LOG_EVERY),
        }
    }

    /// Runs until shutdown. Shutdown comes first in every wait, writes included.
    pub(crate) async fn run(mut self) {
        loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                changed = self.view.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.changes = true;
                }
                changed = self.catalog.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    // Another catalog: believe nothing about it until it is read.
                    self.remote = None;
                    self.retry_at = None;
                    self.failures = 0;
                    self.leader_known = false;
                    self.waiting_logged = false;
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            self.step().await;
        }
        tracing::debug!("anti-entropy stopped");
    }

    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = self.next_full.max(now);
        if let Some(retry) = self.retry_at {
            wake = wake.min(retry);
        }
        if let Some(deferred) = self.throttle.next_deadline() {
            wake = wake.min(deferred);
        }
        if self.catalog.borrow().is_some() {
            wake = wake.min(now + LEADER_POLL);
        }
        wake
    }

    async fn step(&mut self) {
        let catalog = self.catalog.borrow().clone();
        let Some(catalog) = catalog else {
            if !self.waiting_logged {
                tracing::info!(
                    "no catalog server is known yet; anti-entropy will sync once one is"
                );
                self.waiting_logged = true;
            }
            return;
        };
        let now = Instant::now();
        let leader_known = catalog.leader_addr().is_some();
        let leading = catalog.is_leader();
        if (leader_known && !self.leader_known) || (leading && !self.leading) {
            // A leader appeared, or this server took over: resync soon (staggered, so a
            // cluster that just elected a leader is not hit by every agent at once).
            let stagger = SERVER_UP_STAGGER
                .min(self.options.full_sync_interval)
                .mul_f64(random_fraction());
            self.next_full = self.next_full.min(now + stagger);
            self.retry_at = None;
        }
        self.leader_known = leader_known;
        self.leading = leading;
        if self.retry_at.is_some_and(|at| now < at) {
            return;
        }
        let deferral_due = self.throttle.due(now);
        if self.remote.is_none() || now >= self.next_full {
            self.full_sync(&catalog).await;
        } else if self.changes || deferral_due || self.retry_at.is_some() {
            self.sync_changes(&catalog, false).await;
        }
    }

    async fn full_sync(&mut self, catalog: &ServerHandle) {
        let name = self.view.borrow().node.name.clone();
        let read = catalog
            .read(Consistency::Stale, |c| {
                (Remote::read(c, &name), c.node_count())
            })
            .await;
        match read {
            Ok(((remote, nodes), _)) => {
                self.cluster_size = nodes.max(1);
                self.update_overrides(&remote);
                self.remote = Some(remote);
            }
            Err(e) => {
                self.failed("reading the catalog", &e.to_string());
                return;
            }
        }
        if self.sync_changes(catalog, true).await {
            let scale = scale_factor(self.cluster_size);
            self.next_full = Instant::now()
                + full_sync_delay(self.options.full_sync_interval, scale, random_fraction());
            tracing::debug!(next_in = ?self.next_full - Instant::now(), "anti-entropy full sync done");
        }
    }

    /// Adopts catalog-side tags of services with `enable_tag_override`.
    fn update_overrides(&mut self, remote: &Remote) {
        let view = self.view.borrow().clone();
        self.overrides
            .retain(|id, o| view.services.get(id).is_some_and(|s| s.service == o.local));
        for (id, local) in &view.services {
            if !local.service.enable_tag_override {
                continue;
            }
            if let Some(r) = remote.services.get(&key(id)) {
                self.overrides.insert(
                    id.clone(),
                    TagOverride {
                        local: local.service.clone(),
                        tags: r.tags.clone(),
                    },
                );
            }
        }
    }

    /// Pushes the planned commands; returns whether every write went through.
    async fn sync_changes(&mut self, catalog: &ServerHandle, full: bool) -> bool {
        self.changes = false;
        let view = self.view.borrow_and_update().clone();
        let Some(mut remote) = self.remote.take() else {
            return false;
        };
        let desired = Desired::from_view(&view, &self.overrides);
        let round = Round {
            now: Instant::now(),
            update_interval: view.check_update_interval,
            full,
        };
        let commands = plan(
            &desired,
            &remote,
            &mut self.throttle,
            &round,
            &mut random_fraction,
        );
        for command in commands {
            let outcome = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return false,
                outcome = catalog.write(command.clone()) => outcome,
            };
            match outcome {
                Ok(written) => match written.result.into_result() {
                    Ok(()) => remote.apply(&command),
                    Err(e) => self.refused(&command, &e.to_string()),
                },
                Err(e) if e.is_validation() => self.refused(&command, &e.to_string()),
                Err(e) => {
                    // The model may now be wrong (the write may have applied): it is dropped
                    // and the retry starts from a fresh read.
                    self.failed("writing to the catalog", &e.to_string());
                    return false;
                }
            }
        }
        self.remote = Some(remote);
        self.failures = 0;
        self.retry_at = None;
        true
    }

    /// The catalog refused a command: retrying it unchanged cannot help, so it is logged and
    /// left for the next change or full sync.
    fn refused(&mut self, command: &Command, error: &str) {
        if let Some(suppressed) = self.log.allow(Instant::now()) {
            tracing::error!(
                %error,
                suppressed,
                command = ?describe(command),
                "anti-entropy: the catalog refused an update"
            );
        }
    }

    fn failed(&mut self, what: &str, error: &str) {
        self.failures = self.failures.saturating_add(1);
        self.remote = None;
        let delay = retry_delay(
            self.options.retry_interval,
            self.failures,
            random_fraction(),
        );
        self.retry_at = Some(Instant::now() + delay);
        if let Some(suppressed) = self.log.allow(Instant::now()) {
            tracing::warn!(%error, suppressed, retry_in = ?delay, "anti-entropy: {what} failed");
        }
    }
}

fn describe(command: &Command) -> String {
    match command {
        Command::Register(r) => format!(
            "register node {:?} service {:?} checks {:?}",
            r.node,
            r.service.as_ref().map(|s| &s.id),
            r.checks.iter().map(|c| &c.check_id).collect::<Vec<_>>()
        ),
        Command::Deregister(d) => format!(
            "deregister node {:?} service {:?} check {:?}",
            d.node, d.service_id, d.check_id
        ),
        _ => "unsupported command".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_server::HealthStatus;

    fn node() -> Node {
        Node {
            id: "40e4a748-2192-161a-0510-9bf59fe950b5".into(),
            name: "db1".into(),
            address: "10.0.0.1".into(),
            datacenter: "dc1".into(),
            ..Node::default()
        }
    }

    fn svc(id: &str, tags: &[&str]) -> NodeService {
        NodeService {
            id: id.into(),
            service: id.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..NodeService::default()
        }
    }

    fn chk(
        id: &str,
        service: Option<&NodeService>,
        status: HealthStatus,
        output: &str,
    ) -> HealthCheck {
        HealthCheck {
            node: "db1".into(),
            check_id: id.into(),
            name: id.into(),
            status,
            output: output.into(),
            service_id: service.map(|s| s.id.clone()).unwrap_or_default(),
            service_name: service.map(|s| s.service.clone()).unwrap_or_default(),
            service_tags: service.map(|s| s.tags.clone()).unwrap_or_default(),
            check_type: "ttl".into(),
            ..HealthCheck::default()
        }
    }

    fn desired(services: Vec<NodeService>, checks: Vec<HealthCheck>) -> Desired {
        Desired {
            node: node(),
            services: services.into_iter().map(|s| (key(&s.id), s)).collect(),
            checks: checks.into_iter().map(|c| (key(&c.check_id), c)).collect(),
        }
    }

    fn round(now: Instant, interval: Duration, full: bool) -> Round {
        Round {
            now,
            update_interval: interval,
            full,
        }
    }

    /// Plans, then applies what was planned to the model (as a successful round would).
    fn sync(d: &Desired, r: &mut Remote, throttle: &mut Throttle, round: &Round) -> Vec<Command> {
        let commands = plan(d, r, throttle, round, &mut || 0.5);
        for c in &commands {
            r.apply(c);
        }
        commands
    }

    #[test]
    fn scale_factor_follows_consul() {
        assert_eq!(scale_factor(0), 1);
        assert_eq!(scale_factor(3), 1);
        assert_eq!(scale_factor(128), 1);
        assert_eq!(scale_factor(129), 2);
        assert_eq!(scale_factor(256), 2);
        assert_eq!(scale_factor(257), 3);
        assert_eq!(scale_factor(512), 3);
        assert_eq!(scale_factor(1024), 4);
        assert_eq!(scale_factor(8192), 7);
    }

    #[test]
    fn delays_follow_consul_arithmetic() {
        let min = Duration::from_secs(60);
        assert_eq!(full_sync_delay(min, 1, 0.0), min);
        assert_eq!(full_sync_delay(min, 2, 0.5), Duration::from_secs(120));
        let five = Duration::from_secs(300);
        // 2.5 to 7.5 minutes with the default check_update_interval.
        assert_eq!(defer_delay(five, 0.0), Duration::from_secs(150));
        assert_eq!(
            defer_delay(five, 0.999_999),
            Duration::from_secs(150) + five.mul_f64(0.999_999)
        );
        assert!(defer_delay(five, 1.0) <= Duration::from_secs(450));
        let max = Duration::from_secs(15);
        assert_eq!(retry_delay(max, 1, 0.0), Duration::from_millis(500));
        assert_eq!(retry_delay(max, 2, 0.0), Duration::from_secs(1));
        assert_eq!(retry_delay(max, 40, 0.0), max);
        assert_eq!(retry_delay(max, 40, 1.0), max + max / 2);
    }

    #[test]
    fn log_limiter_counts_what_it_suppresses() {
        let mut l = LogLimiter::new(Duration::from_secs(30));
        let t0 = Instant::now();
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(29)), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(30)), Some(2));
        assert_eq!(l.allow(t0 + Duration::from_secs(31)), None);
    }

    #[test]
    fn first_sync_registers_node_services_and_checks_then_nothing() {
        let web = svc("web", &["a"]);
        let d = desired(
            vec![web.clone()],
            vec![
                chk("web-ttl", Some(&web), HealthStatus::Critical, ""),
                chk("mem", None, HealthStatus::Passing, "ok"),
            ],
        );
        let mut r = Remote::default();
        let mut defer = Throttle::default();
        let now = Instant::now();
        let commands = sync(
            &d,
            &mut r,
            &mut defer,
            &round(now, Duration::from_secs(300), true),
        );
        assert_eq!(commands.len(), 2, "{commands:?}");
        let Command::Register(first) = &commands[0] else {
            panic!("{commands:?}")
        };
        assert!(!first.skip_node_update, "the first write carries the node");
        assert_eq!(first.service.as_ref().unwrap().id, "web");
        assert_eq!(first.checks.len(), 1);
        let Command::Register(second) = &commands[1] else {
            panic!("{commands:?}")
        };
        assert!(second.skip_node_update);
        assert!(second.service.is_none());
        assert_eq!(second.checks[0].check_id, "mem");
        // In sync: nothing is written again, in either mode.
        assert!(
            sync(
                &d,
                &mut r,
                &mut defer,
                &round(now, Duration::from_secs(300), false)
            )
            .is_empty()
        );
        assert!(
            sync(
                &d,
                &mut r,
                &mut defer,
                &round(now, Duration::from_secs(300), true)
            )
            .is_empty()
        );
    }

    #[test]
    fn drift_is_repaired_and_leader_entries_are_kept() {
        let web = svc("web", &[]);
        let d = desired(
            vec![web.clone()],
            vec![chk("w", Some(&web), HealthStatus::Passing, "")],
        );
        let mut r = Remote {
            node: Some(Node {
                meta: [("rack".to_string(), "old".to_string())].into(),
                ..node()
            }),
            ..Remote::default()
        };
        let consul = svc(CONSUL_SERVICE, &[]);
        r.services.insert(key("consul"), consul);
        let stray = svc("stray", &[]);
        r.services.insert(key("stray"), stray.clone());
        r.checks.insert(
            key("stray-check"),
            chk("stray-check", Some(&stray), HealthStatus::Passing, ""),
        );
        r.checks.insert(
            key("orphan"),
            chk("orphan", None, HealthStatus::Passing, ""),
        );
        r.checks.insert(
            key(SERF_CHECK_ID),
            chk(SERF_CHECK_ID, None, HealthStatus::Passing, ""),
        );
        let mut defer = Throttle::default();
        let commands = sync(
            &d,
            &mut r,
            &mut defer,
            &round(Instant::now(), Duration::ZERO, true),
        );
        let deregs: Vec<(String, String)> = commands
            .iter()
            .filter_map(|c| match c {
                Command::Deregister(d) => Some((d.service_id.clone(), d.check_id.clone())),
                _ => None,
            })
            .collect();
        // The stray service goes (its check with it), the orphan check goes; serfHealth and
        // the consul service stay.
        assert_eq!(
            deregs,
            [
                ("stray".into(), String::new()),
                (String::new(), "orphan".into())
            ]
        );
        let Command::Register(reg) = commands.last().unwrap() else {
            panic!()
        };
        assert!(
            !reg.skip_node_update,
            "node meta drifted: the node is rewritten"
        );
        assert!(r.services.contains_key("consul"));
        assert!(r.checks.contains_key(&key(SERF_CHECK_ID)));
        assert!(
            sync(
                &d,
                &mut r,
                &mut defer,
                &round(Instant::now(), Duration::ZERO, true)
            )
            .is_empty()
        );
    }

    #[test]
    fn output_only_changes_are_deferred_and_status_changes_are_not() {
        let interval = Duration::from_secs(10);
        let web = svc("web", &[]);
        let mut d = desired(
            vec![web.clone()],
            vec![chk("c", Some(&web), HealthStatus::Passing, "v1")],
        );
        let mut r = Remote::default();
        let mut defer = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(
            sync(&d, &mut r, &mut defer, &round(t0, interval, true)).len(),
            1
        );

        // Output only: deferred by interval/2 + 0.5 × interval = 10 s.
        d.checks.get_mut("c").unwrap().output = "v2".into();
        assert!(sync(&d, &mut r, &mut defer, &round(t0, interval, false)).is_empty());
        assert_eq!(defer.deadlines["c"], t0 + Duration::from_secs(10));
        // Another output change does not push the deadline back; a full sync waits too.
        d.checks.get_mut("c").unwrap().output = "v3".into();
        let t1 = t0 + Duration::from_secs(5);
        assert!(sync(&d, &mut r, &mut defer, &round(t1, interval, false)).is_empty());
        assert!(sync(&d, &mut r, &mut defer, &round(t1, interval, true)).is_empty());
        assert_eq!(defer.deadlines["c"], t0 + Duration::from_secs(10));
        // At the deadline the latest output goes out.
        let out = sync(
            &d,
            &mut r,
            &mut defer,
            &round(t0 + Duration::from_secs(10), interval, false),
        );
        let Command::Register(reg) = &out[0] else {
            panic!()
        };
        assert_eq!(reg.checks[0].output, "v3");
        assert!(defer.deadlines.is_empty());

        // A status change goes out at once with the latest output, clearing the deferral.
        d.checks.get_mut("c").unwrap().output = "v4".into();
        assert!(sync(&d, &mut r, &mut defer, &round(t1, interval, false)).is_empty());
        let c = d.checks.get_mut("c").unwrap();
        c.status = HealthStatus::Critical;
        c.output = "down".into();
        let out = sync(&d, &mut r, &mut defer, &round(t1, interval, false));
        let Command::Register(reg) = &out[0] else {
            panic!()
        };
        assert_eq!(
            (reg.checks[0].status, reg.checks[0].output.as_str()),
            (HealthStatus::Critical, "down")
        );
        assert!(defer.deadlines.is_empty());

        // A full sync that finds an old output difference (the catalog's copy drifted, the
        // local output did not change) writes it at once...
        r.checks.get_mut("c").unwrap().output = "stale".into();
        assert_eq!(
            sync(&d, &mut r, &mut defer, &round(t1, interval, true)).len(),
            1
        );
        // ...but a fresh local output change is deferred even when a full sync sees it first.
        d.checks.get_mut("c").unwrap().output = "v5".into();
        assert!(sync(&d, &mut r, &mut defer, &round(t1, interval, true)).is_empty());
        assert!(defer.deadlines.contains_key("c"));
        // With a zero interval nothing is throttled.
        d.checks.get_mut("c").unwrap().output = "v6".into();
        assert_eq!(
            sync(&d, &mut r, &mut defer, &round(t1, Duration::ZERO, false)).len(),
            1
        );
    }

    #[test]
    fn tag_override_adopts_catalog_tags_until_the_local_definition_changes() {
        let local = svc("web", &["local"]);
        let overrides = HashMap::from([(
            "web".to_string(),
            TagOverride {
                local: local.clone(),
                tags: vec!["remote".into()],
            },
        )]);
        let view = LocalView {
            node: super::super::NodeInfo {
                name: "db1".into(),
                id: node().id,
                address: "10.0.0.1".into(),
                datacenter: "dc1".into(),
                tagged_addresses: BTreeMap::new(),
                meta: BTreeMap::new(),
            },
            services: BTreeMap::from([(
                "web".to_string(),
                Arc::new(super::super::LocalService {
                    service: local.clone(),
                    source: super::super::Source::Api,
                }),
            )]),
            checks: BTreeMap::new(),
            check_update_interval: Duration::ZERO,
        };
        let d = Desired::from_view(&view, &overrides);
        assert_eq!(d.services["web"].tags, ["remote"]);
        let changed = HashMap::from([(
            "web".to_string(),
            TagOverride {
                local: svc("web", &["older"]),
                tags: vec!["remote".into()],
            },
        )]);
        let d = Desired::from_view(&view, &changed);
        assert_eq!(d.services["web"].tags, ["local"]);
    }

    #[test]
    fn many_checks_are_split_into_bounded_registrations() {
        let web = svc("web", &[]);
        let checks = (0..(MAX_CHECKS + 3))
            .map(|i| chk(&format!("c{i}"), Some(&web), HealthStatus::Passing, ""))
            .collect();
        let d = desired(vec![web], checks);
        let mut r = Remote::default();
        let commands = sync(
            &d,
            &mut r,
            &mut Throttle::default(),
            &round(Instant::now(), Duration::ZERO, true),
        );
        assert_eq!(commands.len(), 2);
        assert_eq!(r.checks.len(), MAX_CHECKS + 3);
    }
}
