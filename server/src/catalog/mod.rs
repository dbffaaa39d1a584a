//! The catalog state machine: nodes, services and checks, plus one max index per table.
//!
//! Everything here is plain synchronous code over data; Raft, storage and tokio live elsewhere.
//! Invariants:
//! - every object's `CreateIndex`/`ModifyIndex` is the Raft log index of the entry that created
//!   / last changed it, and a table's index is the log index of the last entry that changed the
//!   table (deletes included), so the indexes are a pure function of the log;
//! - an update whose content is unchanged changes nothing, not even an index (anti-entropy
//!   full syncs must not wake blocking queries);
//! - [`Catalog::apply`] never panics and applies a command entirely or not at all;
//! - node names, service IDs and check IDs are looked up case-insensitively, as in Consul;
//! - services and checks exist only on a registered node (they live inside its entry).

pub mod acl;
pub mod command;
pub mod model;
pub mod query;
pub mod reconcile;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use command::{ApplyError, Command, CommandResult, Deregistration, Registration, eq_fold};
use model::{HealthCheck, HealthStatus, Index, Node, NodeService, SERF_CHECK_ID};

/// Version of the catalog snapshot encoding written by [`Catalog::encode_snapshot`].
pub const SNAPSHOT_VERSION: u64 = 1;

/// One of the catalog's tables; blocking queries watch the tables they read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Nodes.
    Nodes,
    /// Services.
    Services,
    /// Checks.
    Checks,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 3] = [Table::Nodes, Table::Services, Table::Checks];
}

/// The max index of each table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableIndexes {
    /// Last index that changed the nodes table.
    pub nodes: Index,
    /// Last index that changed the services table.
    pub services: Index,
    /// Last index that changed the checks table.
    pub checks: Index,
}

impl TableIndexes {
    /// The index of one table.
    pub fn get(&self, table: Table) -> Index {
        match table {
            Table::Nodes => self.nodes,
            Table::Services => self.services,
            Table::Checks => self.checks,
        }
    }

    /// The max index over some tables (what a query reading them reports).
    pub fn max_of(&self, tables: &[Table]) -> Index {
        tables.iter().map(|t| self.get(*t)).max().unwrap_or(0)
    }
}

/// A node with what is registered on it, keyed by lowercased ID.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NodeEntry {
    node: Node,
    services: BTreeMap<String, NodeService>,
    checks: BTreeMap<String, HealthCheck>,
}

/// The catalog. Cheap to read through the query methods; cloned whole for snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Keyed by lowercased node name, so iteration is sorted by name as Consul returns it.
    nodes: BTreeMap<String, NodeEntry>,
    index: TableIndexes,
    /// ACL tokens and policies (never sent to replicas: see [`Catalog::without_acl`]).
    acl: acl::AclState,
}

fn key(s: &str) -> String {
    s.to_lowercase()
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// The per-table max indexes.
    pub fn indexes(&self) -> TableIndexes {
        self.index
    }

    /// The max index of every table (the catalog's overall index).
    pub fn max_index(&self) -> Index {
        self.index.max_of(&Table::ALL)
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// A node by name (case-insensitive).
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(&key(name)).map(|e| &e.node)
    }

    /// A service on a node by service ID (both case-insensitive).
    pub fn service(&self, node: &str, service_id: &str) -> Option<&NodeService> {
        self.nodes.get(&key(node))?.services.get(&key(service_id))
    }

    /// A check on a node by check ID (both case-insensitive).
    pub fn check(&self, node: &str, check_id: &str) -> Option<&HealthCheck> {
        self.nodes.get(&key(node))?.checks.get(&key(check_id))
    }

    /// Applies one committed command at `index`. Never panics; on rejection nothing changed.
    pub fn apply(&mut self, index: Index, command: &Command) -> CommandResult {
        match command {
            Command::Unsupported(u) => return CommandResult::Rejected(u.apply_error()),
            // Each on its own, as if in consecutive entries at the same index.
            Command::Batch(commands) => {
                return CommandResult::Batch(
                    commands.iter().map(|c| self.apply(index, c)).collect(),
                );
            }
            Command::Acl(a) => {
                if let Err(e) = a.validate() {
                    return CommandResult::Rejected(ApplyError::Invalid(e));
                }
                return match self.acl.apply(index, a) {
                    Ok(()) => CommandResult::Ok,
                    Err(e) => CommandResult::Rejected(e),
                };
            }
            Command::Register(_) | Command::Deregister(_) => {}
        }
        // Defensive: the proposer validated too, but an entry may come from another build.
        if let Err(e) = command.validate_against(self) {
            return CommandResult::Rejected(ApplyError::Invalid(e.to_string()));
        }
        let outcome = match command {
            Command::Register(r) => self.register(index, r),
            Command::Deregister(d) => {
                self.deregister(index, d);
                Ok(())
            }
            Command::Unsupported(u) => Err(u.apply_error()),
            Command::Batch(_) | Command::Acl(_) => Ok(()),
        };
        match outcome {
            Ok(()) => CommandResult::Ok,
            Err(e) => CommandResult::Rejected(e),
        }
    }

    /// Consul's `ensureRegistration`: node, then service, then checks. Every error is found
    /// before the first change, so a rejected registration leaves the catalog untouched.
    fn register(&mut self, index: Index, r: &Registration) -> Result<(), ApplyError> {
        let node_key = key(&r.node);
        let rename_from = self.node_identity(&node_key, r)?;

        // --- from here on nothing can fail ---
        if let Some(old_key) = rename_from {
            // Same node ID under a new name: the old record goes, as Consul renames.
            self.remove_node(index, &old_key);
        }
        self.upsert_node(index, &node_key, r);
        if let Some(svc) = &r.service {
            self.upsert_service(index, &node_key, svc);
        }
        // A check ID listed twice: the last one wins, and only it is compared, so a repeated
        // request is still a no-op.
        for (i, check) in r.checks.iter().enumerate() {
            let later_duplicate = r.checks[i + 1..]
                .iter()
                .any(|c| eq_fold(&c.check_id, &check.check_id));
            if !later_duplicate {
                self.upsert_check(index, &node_key, check);
            }
        }
        Ok(())
    }

    /// Resolves the node ID against the catalog: returns the key of a node to rename from, or
    /// refuses a name held by another live node (Consul's `ensureNoNodeWithSimilarName`).
    fn node_identity(
        &self,
        node_key: &str,
        r: &Registration,
    ) -> Result<Option<String>, ApplyError> {
        if r.id.is_empty() {
            return Ok(None);
        }
        let same_id = self
            .nodes
            .iter()
            .find(|(_, e)| !e.node.id.is_empty() && eq_fold(&e.node.id, &r.id));
        match same_id {
            Some((k, _)) if k == node_key => Ok(None),
            Some((k, _)) => {
                self.ensure_name_free(node_key, r, false)?;
                Ok(Some(k.clone()))
            }
            None => {
                self.ensure_name_free(node_key, r, true)?;
                Ok(None)
            }
        }
    }

    fn ensure_name_free(
        &self,
        node_key: &str,
        r: &Registration,
        allow_clash_without_id: bool,
    ) -> Result<(), ApplyError> {
        let Some(owner) = self.nodes.get(node_key) else {
            return Ok(());
        };
        if owner.node.id == r.id || (owner.node.id.is_empty() && allow_clash_without_id) {
            return Ok(());
        }
        // A name may be taken over from a node that is failed or not gossip-managed.
        let owner_healthy = owner
            .checks
            .get(&key(SERF_CHECK_ID))
            .is_some_and(|c| c.status != HealthStatus::Critical);
        if !owner_healthy {
            return Ok(());
        }
        Err(ApplyError::NodeNameReserved {
            name: r.node.clone(),
            owner_id: owner.node.id.clone(),
            owner: owner.node.name.clone(),
            address: owner.node.address.clone(),
        })
    }

    fn upsert_node(&mut self, index: Index, node_key: &str, r: &Registration) {
        let wanted = Node {
            id: r.id.clone(),
            name: r.node.clone(),
            address: r.address.clone(),
            datacenter: r.datacenter.clone(),
            tagged_addresses: r.tagged_addresses.clone(),
            meta: r.node_meta.clone(),
            create_index: index,
            modify_index: index,
        };
        match self.nodes.get_mut(node_key) {
            None => {
                self.nodes.insert(
                    node_key.to_string(),
                    NodeEntry {
                        node: wanted,
                        services: BTreeMap::new(),
                        checks: BTreeMap::new(),
                    },
                );
                self.index.nodes = index;
            }
            Some(entry) => {
                if r.skip_node_update || !changes_node(&entry.node, &wanted) {
                    return;
                }
                entry.node = Node {
                    create_index: entry.node.create_index,
                    ..wanted
                };
                self.index.nodes = index;
            }
        }
    }

    fn upsert_service(&mut self, index: Index, node_key: &str, svc: &NodeService) {
        let Some(entry) = self.nodes.get_mut(node_key) else {
            return;
        };
        let svc_key = key(&svc.id);
        let create_index = match entry.services.get(&svc_key) {
            Some(old) if old.same_content(svc) => return,
            Some(old) => old.create_index,
            None => index,
        };
        let stored = NodeService {
            create_index,
            modify_index: index,
            ..svc.clone()
        };
        // Checks carry a copy of their service's name and tags; keep the copies current.
        let mut checks_changed = false;
        for check in entry.checks.values_mut() {
            if key(&check.service_id) == svc_key
                && (check.service_name != stored.service || check.service_tags != stored.tags)
            {
                check.service_name = stored.service.clone();
                check.service_tags = stored.tags.clone();
                check.modify_index = index;
                checks_changed = true;
            }
        }
        entry.services.insert(svc_key, stored);
        self.index.services = index;
        if checks_changed {
            self.index.checks = index;
        }
    }

    fn upsert_check(&mut self, index: Index, node_key: &str, check: &HealthCheck) {
        let Some(entry) = self.nodes.get_mut(node_key) else {
            return;
        };
        let mut wanted = check.clone();
        wanted.node = entry.node.name.clone();
        match entry.services.get(&key(&check.service_id)) {
            Some(svc) if !check.service_id.is_empty() => {
                wanted.service_name = svc.service.clone();
                wanted.service_tags = svc.tags.clone();
            }
            _ => {
                wanted.service_name.clear();
                wanted.service_tags.clear();
            }
        }
        let check_key = key(&check.check_id);
        let create_index = match entry.checks.get(&check_key) {
            Some(old) if old.same_content(&wanted) => return,
            Some(old) => old.create_index,
            None => index,
        };
        wanted.create_index = create_index;
        wanted.modify_index = index;
        entry.checks.insert(check_key, wanted);
        self.index.checks = index;
    }

    fn deregister(&mut self, index: Index, d: &Deregistration) {
        let node_key = key(&d.node);
        let Some(entry) = self.nodes.get_mut(&node_key) else {
            return;
        };
        if !d.service_id.is_empty() {
            let svc_key = key(&d.service_id);
            if entry.services.remove(&svc_key).is_none() {
                return;
            }
            self.index.services = index;
            let before = entry.checks.len();
            entry.checks.retain(|_, c| key(&c.service_id) != svc_key);
            if entry.checks.len() != before {
                self.index.checks = index;
            }
        } else if !d.check_id.is_empty() {
            if entry.checks.remove(&key(&d.check_id)).is_some() {
                self.index.checks = index;
            }
        } else {
            self.remove_node(index, &node_key);
        }
    }

    fn remove_node(&mut self, index: Index, node_key: &str) {
        let Some(entry) = self.nodes.remove(node_key) else {
            return;
        };
        self.index.nodes = index;
        if !entry.services.is_empty() {
            self.index.services = index;
        }
        if !entry.checks.is_empty() {
            self.index.checks = index;
        }
    }

    /// The ACL tokens and policies.
    pub fn acl(&self) -> &acl::AclState {
        &self.acl
    }

    /// This catalog without its ACL state: what a client agent's replica gets, so that
    /// token secrets stay on the servers (as in Consul, clients ask a server).
    pub fn without_acl(&self) -> Catalog {
        Catalog {
            nodes: self.nodes.clone(),
            index: self.index,
            acl: acl::AclState::default(),
        }
    }

    /// Encodes the catalog for a Raft snapshot (versioned JSON).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let image = CatalogImage {
            v: SNAPSHOT_VERSION,
            index: self.index,
            acl: self.acl.clone(),
            nodes: self
                .nodes
                .values()
                .map(|e| NodeImage {
                    node: e.node.clone(),
                    services: e.services.values().cloned().collect(),
                    checks: e.checks.values().cloned().collect(),
                })
                .collect(),
        };
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec(&image).unwrap_or_default()
    }

    /// Decodes a snapshot written by [`Catalog::encode_snapshot`] of this or an older version.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<Catalog, SnapshotDecodeError> {
        #[derive(Deserialize)]
        struct Version {
            v: u64,
        }
        let version: Version = serde_json::from_slice(bytes)
            .map_err(|e| SnapshotDecodeError::Malformed(e.to_string()))?;
        if version.v == 0 || version.v > SNAPSHOT_VERSION {
            return Err(SnapshotDecodeError::UnsupportedVersion(version.v));
        }
        let image: CatalogImage = serde_json::from_slice(bytes)
            .map_err(|e| SnapshotDecodeError::Malformed(e.to_string()))?;
        let mut acl = image.acl;
        acl.reindex();
        let mut catalog = Catalog {
            nodes: BTreeMap::new(),
            index: image.index,
            acl,
        };
        for n in image.nodes {
            // Keys are rebuilt from content, never trusted from the file.
            let entry = NodeEntry {
                services: n.services.into_iter().map(|s| (key(&s.id), s)).collect(),
                checks: n
                    .checks
                    .into_iter()
                    .map(|c| (key(&c.check_id), c))
                    .collect(),
                node: n.node,
            };
            catalog.nodes.insert(key(&entry.node.name), entry);
        }
        Ok(catalog)
    }
}

/// Consul's `RegisterRequest.ChangesNode`: the name compares case-insensitively.
fn changes_node(existing: &Node, wanted: &Node) -> bool {
    existing.id != wanted.id
        || !eq_fold(&existing.name, &wanted.name)
        || existing.address != wanted.address
        || existing.datacenter != wanted.datacenter
        || existing.tagged_addresses != wanted.tagged_addresses
        || existing.meta != wanted.meta
}

/// A snapshot that cannot be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotDecodeError {
    /// Written by a newer build.
    #[error(
        "catalog snapshot version {0} is not supported (this build reads up to {SNAPSHOT_VERSION})"
    )]
    UnsupportedVersion(u64),
    /// Not a catalog snapshot.
    #[error("malformed catalog snapshot: {0}")]
    Malformed(String),
}

#[derive(Serialize, Deserialize)]
struct CatalogImage {
    v: u64,
    index: TableIndexes,
    nodes: Vec<NodeImage>,
    /// Absent in snapshots written before ACLs existed.
    #[serde(default, skip_serializing_if = "acl::AclState::is_empty")]
    acl: acl::AclState,
}

#[derive(Serialize, Deserialize)]
struct NodeImage {
    node: Node,
    services: Vec<NodeService>,
    checks: Vec<HealthCheck>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::catalog::model::Weights;

    pub(crate) const ID1: &str = "40e4a748-2192-161a-0510-9bf59fe950b5";
    pub(crate) const ID2: &str = "5b3d7a8e-0c1f-4e2a-9d6b-1a2b3c4d5e6f";

    pub(crate) fn node_reg(name: &str, id: &str, addr: &str) -> Registration {
        Registration {
            id: id.into(),
            node: name.into(),
            address: addr.into(),
            datacenter: "dc1".into(),
            ..Registration::default()
        }
    }

    pub(crate) fn svc(id: &str, name: &str, tags: &[&str]) -> NodeService {
        NodeService {
            id: id.into(),
            service: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            port: 3306,
            ..NodeService::default()
        }
    }

    pub(crate) fn chk(id: &str, service_id: &str, status: HealthStatus) -> HealthCheck {
        HealthCheck {
            check_id: id.into(),
            name: id.into(),
            service_id: service_id.into(),
            status,
            ..HealthCheck::default()
        }
    }

    pub(crate) fn apply_ok(c: &mut Catalog, index: Index, cmd: Command) {
        let res = c.apply(index, &cmd);
        assert_eq!(res, CommandResult::Ok, "command at {index}: {cmd:?}");
    }

    fn dereg(node: &str, service_id: &str, check_id: &str) -> Command {
        Command::Deregister(Deregistration {
            node: node.into(),
            service_id: service_id.into(),
            check_id: check_id.into(),
            ..Deregistration::default()
        })
    }

    /// db1 with service galera (+ check mysql) and node check serfHealth.
    fn galera_catalog() -> Catalog {
        let mut c = Catalog::new();
        let mut r = node_reg("db1", ID1, "10.0.0.1");
        r.service = Some(svc("galeradb", "galeradb", &["icinga-galera"]));
        r.checks = vec![
            chk("mysql", "galeradb", HealthStatus::Passing),
            chk(SERF_CHECK_ID, "", HealthStatus::Passing),
        ];
        apply_ok(&mut c, 5, Command::Register(r));
        c
    }

    #[test]
    fn register_new_sets_all_indexes() {
        let c = galera_catalog();
        let n = c.node("db1").unwrap();
        assert_eq!((n.create_index, n.modify_index), (5, 5));
        assert_eq!(n.datacenter, "dc1");
        let s = c.service("db1", "galeradb").unwrap();
        assert_eq!((s.create_index, s.modify_index), (5, 5));
        let k = c.check("db1", "mysql").unwrap();
        assert_eq!((k.create_index, k.modify_index), (5, 5));
        assert_eq!(k.service_name, "galeradb");
        assert_eq!(k.service_tags, vec!["icinga-galera".to_string()]);
        assert_eq!(k.node, "db1");
        assert_eq!(
            c.indexes(),
            TableIndexes {
                nodes: 5,
                services: 5,
                checks: 5
            }
        );
    }

    #[test]
    fn identical_reregistration_changes_no_index() {
        let mut c = galera_catalog();
        let before = c.clone();
        let mut r = node_reg("db1", ID1, "10.0.0.1");
        r.service = Some(svc("galeradb", "galeradb", &["icinga-galera"]));
        r.checks = vec![
            chk("mysql", "galeradb", HealthStatus::Passing),
            chk(SERF_CHECK_ID, "", HealthStatus::Passing),
        ];
        apply_ok(&mut c, 9, Command::Register(r));
        assert_eq!(c, before, "a no-op full sync must not touch the catalog");
    }

    #[test]
    fn update_bumps_only_what_changed_and_keeps_create_index() {
        let mut c = galera_catalog();
        // Only a check status changes.
        let mut r = node_reg("db1", ID1, "10.0.0.1");
        r.checks = vec![chk("mysql", "galeradb", HealthStatus::Critical)];
        apply_ok(&mut c, 7, Command::Register(r));
        let k = c.check("db1", "mysql").unwrap();
        assert_eq!((k.create_index, k.modify_index), (5, 7));
        assert_eq!(k.status, HealthStatus::Critical);
        assert_eq!(
            c.indexes(),
            TableIndexes {
                nodes: 5,
                services: 5,
                checks: 7
            }
        );
        // The node address changes.
        apply_ok(
            &mut c,
            8,
            Command::Register(node_reg("db1", ID1, "10.0.0.9")),
        );
        let n = c.node("db1").unwrap();
        assert_eq!((n.create_index, n.modify_index), (5, 8));
        assert_eq!(n.address, "10.0.0.9");
        assert_eq!(c.indexes().nodes, 8);
        assert_eq!(c.indexes().services, 5);
        assert_eq!(c.check("db1", SERF_CHECK_ID).unwrap().modify_index, 5);
    }

    #[test]
    fn service_change_refreshes_linked_checks() {
        let mut c = galera_catalog();
        let mut r = node_reg("db1", ID1, "10.0.0.1");
        r.service = Some(svc("galeradb", "galeradb", &["primary"]));
        apply_ok(&mut c, 6, Command::Register(r));
        let s = c.service("db1", "galeradb").unwrap();
        assert_eq!((s.create_index, s.modify_index), (5, 6));
        let k = c.check("db1", "mysql").unwrap();
        assert_eq!(k.service_tags, vec!["primary".to_string()]);
        assert_eq!(k.modify_index, 6);
        assert_eq!(c.check("db1", SERF_CHECK_ID).unwrap().modify_index, 5);
        assert_eq!(c.indexes().checks, 6);
    }

    #[test]
    fn skip_node_update_leaves_node_alone() {
        let mut c = galera_catalog();
        let mut r = node_reg("db1", ID1, "");
        r.skip_node_update = true;
        r.checks = vec![chk("extra", "", HealthStatus::Warning)];
        apply_ok(&mut c, 6, Command::Register(r));
        assert_eq!(c.node("db1").unwrap().address, "10.0.0.1");
        assert_eq!(c.indexes().nodes, 5);
        assert_eq!(c.indexes().checks, 6);
    }

    #[test]
    fn duplicate_check_ids_last_wins_without_churn() {
        let mut c = Catalog::new();
        let mut r = node_reg("db1", ID1, "10.0.0.1");
        r.checks = vec![
            chk("c1", "", HealthStatus::Passing),
            chk("C1", "", HealthStatus::Warning),
        ];
        let cmd = Command::Register(r);
        apply_ok(&mut c, 3, cmd.clone());
        assert_eq!(c.check("db1", "c1").unwrap().status, HealthStatus::Warning);
        let before = c.clone();
        apply_ok(&mut c, 4, cmd);
        assert_eq!(c, before);
    }

    #[test]
    fn lookups_are_case_insensitive() {
        let mut c = galera_catalog();
        assert!(c.node("DB1").is_some());
        assert!(c.service("Db1", "GaleraDB").is_some());
        assert!(c.check("DB1", "MYSQL").is_some());
        // Registering under another case updates the same node; a name-only case change is
        // not a change (Consul's EqualFold).
        apply_ok(
            &mut c,
            6,
            Command::Register(node_reg("DB1", ID1, "10.0.0.1")),
        );
        assert_eq!(c.node_count(), 1);
        assert_eq!(c.node("db1").unwrap().name, "db1");
        assert_eq!(c.indexes().nodes, 5);
        // A check for service "GALERADB" links to "galeradb".
        let mut r = node_reg("db1", ID1, "10.0.0.1");
        r.checks = vec![chk("c2", "GALERADB", HealthStatus::Passing)];
        apply_ok(&mut c, 7, Command::Register(r));
        assert_eq!(c.check("db1", "c2").unwrap().service_name, "galeradb");
    }

    #[test]
    fn deregister_node_cascades() {
        let mut c = galera_catalog();
        apply_ok(&mut c, 10, dereg("DB1", "", ""));
        assert!(c.node("db1").is_none());
        assert!(c.service("db1", "galeradb").is_none());
        assert!(c.check("db1", "mysql").is_none());
        assert_eq!(
            c.indexes(),
            TableIndexes {
                nodes: 10,
                services: 10,
                checks: 10
            }
        );
    }

    #[test]
    fn deregister_service_removes_its_checks_only() {
        let mut c = galera_catalog();
        apply_ok(&mut c, 10, dereg("db1", "GaleraDB", ""));
        assert!(c.service("db1", "galeradb").is_none());
        assert!(c.check("db1", "mysql").is_none());
        assert!(c.check("db1", SERF_CHECK_ID).is_some());
        assert_eq!(
            c.indexes(),
            TableIndexes {
                nodes: 5,
                services: 10,
                checks: 10
            }
        );
    }

    #[test]
    fn deregister_check_only() {
        let mut c = galera_catalog();
        apply_ok(&mut c, 10, dereg("db1", "", "mysql"));
        assert!(c.check("db1", "mysql").is_none());
        assert!(c.service("db1", "galeradb").is_some());
        assert_eq!(
            c.indexes(),
            TableIndexes {
                nodes: 5,
                services: 5,
                checks: 10
            }
        );
    }

    #[test]
    fn deregister_unknown_is_a_no_op() {
        let mut c = galera_catalog();
        let before = c.clone();
        apply_ok(&mut c, 10, dereg("nope", "", ""));
        apply_ok(&mut c, 11, dereg("db1", "nope", ""));
        apply_ok(&mut c, 12, dereg("db1", "", "nope"));
        assert_eq!(c, before);
    }

    #[test]
    fn check_for_unknown_service_rejects_whole_command() {
        let mut c = Catalog::new();
        let mut r = node_reg("db2", ID2, "10.0.0.2");
        r.checks = vec![chk("orphan", "nosuch", HealthStatus::Passing)];
        let res = c.apply(3, &Command::Register(r));
        let CommandResult::Rejected(e) = res else {
            panic!("expected rejection, got {res:?}");
        };
        assert!(e.is_invalid());
        assert!(
            e.to_string().contains("Missing service registration"),
            "{e}"
        );
        // Not even the node was created.
        assert_eq!(c, Catalog::new());
    }

    #[test]
    fn invalid_command_is_rejected_at_apply() {
        let mut c = Catalog::new();
        let res = c.apply(3, &Command::Register(node_reg("", "", "10.0.0.1")));
        assert_eq!(
            res,
            CommandResult::Rejected(ApplyError::Invalid("Must provide node".into()))
        );
        let mut bad = node_reg("db1", "", "10.0.0.1");
        bad.service = Some(NodeService {
            weights: Weights {
                passing: 0,
                warning: 0,
            },
            ..svc("s", "s", &[])
        });
        assert!(!c.apply(4, &Command::Register(bad)).is_ok());
        assert_eq!(c, Catalog::new());
    }

    #[test]
    fn unknown_version_is_an_error_result() {
        let mut c = galera_catalog();
        let before = c.clone();
        let cmd: Command =
            serde_json::from_value(serde_json::json!({"v": 9, "op": "register", "args": {}}))
                .unwrap();
        let res = c.apply(20, &cmd);
        let CommandResult::Rejected(e) = res else {
            panic!("expected rejection");
        };
        assert!(e.is_unsupported(), "{e:?}");
        assert!(e.to_string().contains("not supported"), "{e}");
        assert_eq!(c, before);
    }

    #[test]
    fn node_id_rename_replaces_old_record() {
        let mut c = galera_catalog();
        apply_ok(
            &mut c,
            8,
            Command::Register(node_reg("db1-new", ID1, "10.0.0.1")),
        );
        assert!(c.node("db1").is_none());
        assert!(c.service("db1", "galeradb").is_none());
        let n = c.node("db1-new").unwrap();
        assert_eq!((n.create_index, n.modify_index), (8, 8));
        assert_eq!(c.indexes().services, 8);
    }

    #[test]
    fn name_held_by_live_node_with_other_id_is_refused() {
        let mut c = galera_catalog();
        let before = c.clone();
        let res = c.apply(8, &Command::Register(node_reg("db1", ID2, "10.0.0.2")));
        let CommandResult::Rejected(e) = res else {
            panic!("expected rejection");
        };
        assert!(matches!(e, ApplyError::NodeNameReserved { .. }));
        assert_eq!(
            e.to_string(),
            format!("Node name db1 is reserved by node {ID1} with name db1 (10.0.0.1)")
        );
        assert_eq!(c, before);
        // Once the holder is failed (serfHealth critical) the name can be taken over.
        let mut r = node_reg("db1", ID1, "10.0.0.1");
        r.checks = vec![chk(SERF_CHECK_ID, "", HealthStatus::Critical)];
        apply_ok(&mut c, 9, Command::Register(r));
        apply_ok(
            &mut c,
            10,
            Command::Register(node_reg("db1", ID2, "10.0.0.2")),
        );
        assert_eq!(c.node("db1").unwrap().id, ID2);
    }

    #[test]
    fn snapshot_round_trip_preserves_everything() {
        let mut c = galera_catalog();
        apply_ok(
            &mut c,
            6,
            Command::Register(node_reg("web1", ID2, "10.0.0.5")),
        );
        let bytes = c.encode_snapshot();
        let back = Catalog::decode_snapshot(&bytes).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.indexes(), c.indexes());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Small name spaces, mixed case, so operations collide often.
        fn name(prefix: &'static str, n: usize) -> impl Strategy<Value = String> {
            (0..n, any::<bool>()).prop_map(move |(i, upper)| {
                let s = format!("{prefix}{i}");
                if upper { s.to_uppercase() } else { s }
            })
        }

        fn status() -> impl Strategy<Value = HealthStatus> {
            prop_oneof![
                Just(HealthStatus::Passing),
                Just(HealthStatus::Warning),
                Just(HealthStatus::Critical)
            ]
        }

        fn command() -> impl Strategy<Value = Command> {
            let ids = [ID1, ID2, "", "nope"];
            let register = (
                name("n", 3),
                0..ids.len(),
                0..3usize,
                any::<bool>(),
                proptest::option::of((name("s", 2), name("t", 2))),
                proptest::collection::vec((name("c", 3), name("s", 3), status()), 0..3),
            )
                .prop_map(move |(node, id, addr, skip, service, checks)| {
                    let mut r = node_reg(&node, ids[id], ["10.0.0.1", "10.0.0.2", ""][addr]);
                    r.skip_node_update = skip;
                    r.service = service.map(|(id, tag)| svc(&id, "web", &[tag.as_str()]));
                    r.checks = checks
                        .into_iter()
                        .map(|(c, s, st)| {
                            let linked = if c.ends_with('0') { "" } else { s.as_str() };
                            chk(&c, linked, st)
                        })
                        .collect();
                    r.normalize();
                    Command::Register(r)
                });
            let deregister = (
                name("n", 3),
                proptest::option::of(name("s", 2)),
                proptest::option::of(name("c", 3)),
            )
                .prop_map(|(node, s, c)| {
                    dereg(
                        &node,
                        s.as_deref().unwrap_or(""),
                        c.as_deref().unwrap_or(""),
                    )
                });
            prop_oneof![3 => register, 1 => deregister]
        }

        fn check_invariants(c: &Catalog) {
            let ix = c.indexes();
            for e in c.nodes.values() {
                assert!(e.node.create_index <= e.node.modify_index);
                assert!(e.node.modify_index <= ix.nodes);
                for s in e.services.values() {
                    assert!(s.create_index <= s.modify_index && s.modify_index <= ix.services);
                }
                for k in e.checks.values() {
                    assert!(k.create_index <= k.modify_index && k.modify_index <= ix.checks);
                    assert!(eq_fold(&k.node, &e.node.name));
                    if !k.service_id.is_empty() {
                        let svc = e.services.get(&key(&k.service_id));
                        let svc = svc.expect("a check's service exists on its node");
                        assert_eq!(k.service_name, svc.service);
                        assert_eq!(k.service_tags, svc.tags);
                    }
                }
            }
        }

        proptest! {
            #[test]
            fn apply_is_total_atomic_and_keeps_invariants(
                commands in proptest::collection::vec(command(), 1..40)
            ) {
                let mut c = Catalog::new();
                for (i, cmd) in commands.iter().enumerate() {
                    let index = i as Index + 1;
                    let before = c.clone();
                    match c.apply(index, cmd) {
                        CommandResult::Rejected(_) => prop_assert_eq!(&c, &before),
                        CommandResult::Ok => {
                            for t in Table::ALL {
                                let (old, new) = (before.indexes().get(t), c.indexes().get(t));
                                prop_assert!(new == old || new == index);
                            }
                            // Applying the same command again changes nothing.
                            let after = c.clone();
                            prop_assert_eq!(c.apply(index + 1000, cmd), CommandResult::Ok);
                            prop_assert_eq!(&c, &after);
                        }
                        CommandResult::Batch(_) => prop_assert!(false, "no batch was applied"),
                    }
                    check_invariants(&c);
                }
                let back = Catalog::decode_snapshot(&c.encode_snapshot()).unwrap();
                prop_assert_eq!(back, c);
            }
        }
    }

    #[test]
    fn acl_state_is_in_snapshots_but_not_in_replica_copies() {
        use crate::catalog::acl::{AclCommand, AclToken};
        let mut c = Catalog::new();
        let boot = AclToken {
            accessor_id: "a1".into(),
            secret_id: "s1".into(),
            ..AclToken::default()
        };
        assert!(
            c.apply(1, &Command::Acl(AclCommand::Bootstrap(boot)))
                .is_ok()
        );
        let back = Catalog::decode_snapshot(&c.encode_snapshot()).unwrap();
        assert_eq!(back.acl().token_by_secret("s1").unwrap().accessor_id, "a1");
        assert_eq!(back.acl().bootstrap_index(), Some(1));
        let replica = c.without_acl();
        assert!(replica.acl().token_by_secret("s1").is_none());
        assert!(
            !String::from_utf8(replica.encode_snapshot())
                .unwrap()
                .contains("s1")
        );
        // Snapshots from before ACLs decode with an empty ACL state.
        let old = br#"{"v":1,"index":{"nodes":3,"services":0,"checks":0},"nodes":[]}"#;
        let old = Catalog::decode_snapshot(old).unwrap();
        assert!(old.acl().is_empty());
    }

    #[test]
    fn snapshot_from_newer_build_or_garbage_is_refused() {
        assert_eq!(
            Catalog::decode_snapshot(br#"{"v":2,"index":{},"nodes":[]}"#),
            Err(SnapshotDecodeError::UnsupportedVersion(2))
        );
        assert!(matches!(
            Catalog::decode_snapshot(b"not json"),
            Err(SnapshotDecodeError::Malformed(_))
        ));
    }
}
