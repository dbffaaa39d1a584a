//! Read queries over the catalog and the Consul JSON shapes of their rows.
//!
//! Every query is a pure function of `&Catalog` returning `(index, rows)`, where `index` is the
//! max index of the tables the query reads (listed next to each query in [`tables`]); blocking
//! queries wait on those same tables. Rows are owned copies, so callers drop the catalog lock
//! before serializing. Ordering is by lowercased node name, then by ID, as Consul's indexes
//! iterate. Name, ID and tag matches are case-insensitive; node-meta filters are exact.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::command::eq_fold;
use super::model::{
    HealthCheck, HealthStatus, Index, InvalidStatus, Node, NodeService, ServiceAddress, Weights,
};
use super::{Catalog, NodeEntry, Table};

/// The tables each query reads: what its index covers and what a blocking query must watch.
pub mod tables {
    use super::Table;

    /// [`Catalog::nodes`](super::Catalog::nodes)
    pub const NODES: &[Table] = &[Table::Nodes];
    /// [`Catalog::services`](super::Catalog::services)
    pub const SERVICES: &[Table] = &[Table::Nodes, Table::Services];
    /// [`Catalog::service_nodes`](super::Catalog::service_nodes)
    pub const SERVICE_NODES: &[Table] = &[Table::Nodes, Table::Services];
    /// [`Catalog::node_services`](super::Catalog::node_services)
    pub const NODE_SERVICES: &[Table] = &[Table::Nodes, Table::Services];
    /// [`Catalog::node_checks`](super::Catalog::node_checks)
    pub const NODE_CHECKS: &[Table] = &[Table::Checks];
    /// [`Catalog::service_checks`](super::Catalog::service_checks)
    pub const SERVICE_CHECKS: &[Table] = &[Table::Nodes, Table::Checks];
    /// [`Catalog::checks_in_state`](super::Catalog::checks_in_state)
    pub const CHECKS_IN_STATE: &[Table] = &[Table::Nodes, Table::Checks];
    /// [`Catalog::check_service_nodes`](super::Catalog::check_service_nodes)
    pub const CHECK_SERVICE_NODES: &[Table] = &[Table::Nodes, Table::Services, Table::Checks];
}

/// Node-meta filter (`?node-meta=k:v`, repeatable): every pair must match exactly.
pub type NodeMetaFilter = BTreeMap<String, String>;

/// Filters of the service queries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceFilter {
    /// `?tag=` (repeatable): the service must carry all of them (case-insensitive).
    pub tags: Vec<String>,
    /// `?node-meta=`.
    pub node_meta: NodeMetaFilter,
    /// `?passing` (health queries only): keep entries whose checks all pass.
    pub passing_only: bool,
}

/// The `state` of `/v1/health/state/:state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckState {
    /// Every check.
    Any,
    /// Checks in one status.
    Status(HealthStatus),
}

impl FromStr for CheckState {
    type Err = InvalidStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "any" {
            return Ok(CheckState::Any);
        }
        s.parse().map(CheckState::Status)
    }
}

/// A `/v1/catalog/service/:service` row: node and service flattened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceNode {
    /// Node UUID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Node name.
    pub node: String,
    /// Node address.
    pub address: String,
    /// Node datacenter.
    pub datacenter: String,
    /// Node tagged addresses.
    pub tagged_addresses: BTreeMap<String, String>,
    /// Node metadata.
    pub node_meta: BTreeMap<String, String>,
    /// Always `""` (typical service); present for client compatibility.
    pub service_kind: String,
    /// Service ID.
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// Service name.
    pub service_name: String,
    /// Service tags.
    pub service_tags: Vec<String>,
    /// Service address.
    pub service_address: String,
    /// Service tagged addresses.
    pub service_tagged_addresses: BTreeMap<String, ServiceAddress>,
    /// Service weights.
    pub service_weights: Weights,
    /// Service metadata.
    pub service_meta: BTreeMap<String, String>,
    /// Service port.
    pub service_port: u16,
    /// Service tag override flag.
    pub service_enable_tag_override: bool,
    /// Always `{}` (no Connect proxy); present for client compatibility.
    pub service_proxy: serde_json::Map<String, serde_json::Value>,
    /// Always `{}` (no Connect); present for client compatibility.
    pub service_connect: serde_json::Map<String, serde_json::Value>,
    /// The service's CreateIndex.
    pub create_index: Index,
    /// The service's ModifyIndex.
    pub modify_index: Index,
}

impl ServiceNode {
    /// Flattens a node and one of its services.
    pub fn new(node: &Node, svc: &NodeService) -> Self {
        ServiceNode {
            id: node.id.clone(),
            node: node.name.clone(),
            address: node.address.clone(),
            datacenter: node.datacenter.clone(),
            tagged_addresses: node.tagged_addresses.clone(),
            node_meta: node.meta.clone(),
            service_kind: String::new(),
            service_id: svc.id.clone(),
            service_name: svc.service.clone(),
            service_tags: svc.tags.clone(),
            service_address: svc.address.clone(),
            service_tagged_addresses: svc.tagged_addresses.clone(),
            service_weights: svc.weights,
            service_meta: svc.meta.clone(),
            service_port: svc.port,
            service_enable_tag_override: svc.enable_tag_override,
            service_proxy: serde_json::Map::new(),
            service_connect: serde_json::Map::new(),
            create_index: svc.create_index,
            modify_index: svc.modify_index,
        }
    }
}

/// A `/v1/health/service/:service` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckServiceNode {
    /// The node.
    pub node: Node,
    /// The service instance.
    pub service: NodeService,
    /// Node-level checks first, then the service's checks.
    pub checks: Vec<HealthCheck>,
}

/// `/v1/catalog/node/:node`: the node and its services keyed by ID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeServices {
    /// The node.
    pub node: Node,
    /// Its services by ID.
    pub services: BTreeMap<String, NodeService>,
}

/// `/v1/catalog/node-services/:node`: the node and its services as a list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeServiceList {
    /// The node.
    pub node: Node,
    /// Its services.
    pub services: Vec<NodeService>,
}

impl From<NodeServices> for NodeServiceList {
    fn from(ns: NodeServices) -> Self {
        NodeServiceList {
            node: ns.node,
            services: ns.services.into_values().collect(),
        }
    }
}

/// One service instance with its aggregated health, borrowed from the catalog (for the agent's
/// DNS snapshot).
#[derive(Clone, Copy, Debug)]
pub struct ServiceInstance<'a> {
    /// The node.
    pub node: &'a Node,
    /// The service.
    pub service: &'a NodeService,
    /// Worst status over the node-level checks and the service's checks.
    pub health: HealthStatus,
}

/// Consul's aggregation for DNS: critical if any check is critical, else warning if any is,
/// else passing (also for no checks at all).
pub fn aggregate_health<'a>(checks: impl IntoIterator<Item = &'a HealthCheck>) -> HealthStatus {
    checks
        .into_iter()
        .map(|c| c.status)
        .max()
        .unwrap_or(HealthStatus::Passing)
}

fn meta_matches(node: &Node, filter: &NodeMetaFilter) -> bool {
    filter.iter().all(|(k, v)| node.meta.get(k) == Some(v))
}

fn has_all_tags(svc: &NodeService, tags: &[String]) -> bool {
    tags.iter()
        .all(|want| svc.tags.iter().any(|have| eq_fold(have, want)))
}

impl NodeEntry {
    /// Node-level checks, then the checks of `service_id`, each sorted by ID.
    fn checks_for(&self, service_id: &str) -> Vec<HealthCheck> {
        let node_level = self.checks.values().filter(|c| c.is_node_check());
        let of_service = self
            .checks
            .values()
            .filter(|c| !c.is_node_check() && eq_fold(&c.service_id, service_id));
        node_level.chain(of_service).cloned().collect()
    }
}

impl Catalog {
    fn index_of(&self, tables: &[Table]) -> Index {
        self.index.max_of(tables)
    }

    /// Entries of nodes passing the meta filter, in name order.
    fn filtered_nodes<'a>(
        &'a self,
        meta: &'a NodeMetaFilter,
    ) -> impl Iterator<Item = &'a NodeEntry> + 'a {
        self.nodes
            .values()
            .filter(move |e| meta_matches(&e.node, meta))
    }

    /// `/v1/catalog/nodes`: nodes sorted by name.
    pub fn nodes(&self, meta: &NodeMetaFilter) -> (Index, Vec<Node>) {
        let rows = self.filtered_nodes(meta).map(|e| e.node.clone()).collect();
        (self.index_of(tables::NODES), rows)
    }

    /// `/v1/catalog/services`: service name → sorted union of its tags.
    pub fn services(&self, meta: &NodeMetaFilter) -> (Index, BTreeMap<String, Vec<String>>) {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for entry in self.filtered_nodes(meta) {
            for svc in entry.services.values() {
                out.entry(svc.service.clone())
                    .or_default()
                    .extend(svc.tags.iter().cloned());
            }
        }
        for tags in out.values_mut() {
            tags.sort();
            tags.dedup();
        }
        (self.index_of(tables::SERVICES), out)
    }

    /// `/v1/catalog/service/:service`: instances of a service, with no health filtering.
    pub fn service_nodes(
        &self,
        service: &str,
        filter: &ServiceFilter,
    ) -> (Index, Vec<ServiceNode>) {
        let mut rows = Vec::new();
        for entry in self.filtered_nodes(&filter.node_meta) {
            for svc in entry.services.values() {
                if eq_fold(&svc.service, service) && has_all_tags(svc, &filter.tags) {
                    rows.push(ServiceNode::new(&entry.node, svc));
                }
            }
        }
        (self.index_of(tables::SERVICE_NODES), rows)
    }

    /// `/v1/catalog/node/:node`: `None` for an unknown node (Consul answers `null`).
    pub fn node_services(&self, node: &str) -> (Index, Option<NodeServices>) {
        let rows = self.nodes.get(&node.to_lowercase()).map(|e| NodeServices {
            node: e.node.clone(),
            services: e
                .services
                .values()
                .map(|s| (s.id.clone(), s.clone()))
                .collect(),
        });
        (self.index_of(tables::NODE_SERVICES), rows)
    }

    /// `/v1/health/node/:node`: every check on the node, node-level ones included.
    pub fn node_checks(&self, node: &str) -> (Index, Vec<HealthCheck>) {
        let rows = self
            .nodes
            .get(&node.to_lowercase())
            .map(|e| e.checks.values().cloned().collect())
            .unwrap_or_default();
        (self.index_of(tables::NODE_CHECKS), rows)
    }

    /// `/v1/health/checks/:service`: the checks bound to instances of a service.
    pub fn service_checks(
        &self,
        service: &str,
        meta: &NodeMetaFilter,
    ) -> (Index, Vec<HealthCheck>) {
        let rows = self
            .filtered_nodes(meta)
            .flat_map(|e| e.checks.values())
            .filter(|c| !c.is_node_check() && eq_fold(&c.service_name, service))
            .cloned()
            .collect();
        (self.index_of(tables::SERVICE_CHECKS), rows)
    }

    /// `/v1/health/state/:state`.
    pub fn checks_in_state(
        &self,
        state: CheckState,
        meta: &NodeMetaFilter,
    ) -> (Index, Vec<HealthCheck>) {
        let rows = self
            .filtered_nodes(meta)
            .flat_map(|e| e.checks.values())
            .filter(|c| match state {
                CheckState::Any => true,
                CheckState::Status(s) => c.status == s,
            })
            .cloned()
            .collect();
        (self.index_of(tables::CHECKS_IN_STATE), rows)
    }

    /// `/v1/health/service/:service`: each instance with its node, its own checks and the
    /// node-level checks; `passing_only` keeps entries whose checks all pass.
    pub fn check_service_nodes(
        &self,
        service: &str,
        filter: &ServiceFilter,
    ) -> (Index, Vec<CheckServiceNode>) {
        let mut rows = Vec::new();
        for entry in self.filtered_nodes(&filter.node_meta) {
            for svc in entry.services.values() {
                if !eq_fold(&svc.service, service) || !has_all_tags(svc, &filter.tags) {
                    continue;
                }
                let checks = entry.checks_for(&svc.id);
                if filter.passing_only && checks.iter().any(|c| c.status != HealthStatus::Passing) {
                    continue;
                }
                rows.push(CheckServiceNode {
                    node: entry.node.clone(),
                    service: svc.clone(),
                    checks,
                });
            }
        }
        (self.index_of(tables::CHECK_SERVICE_NODES), rows)
    }

    /// Every service instance with its aggregated health, without copying (for DNS snapshots).
    pub fn service_instances(&self) -> impl Iterator<Item = ServiceInstance<'_>> + '_ {
        self.nodes.values().flat_map(|entry| {
            let node_health = aggregate_health(entry.checks.values().filter(|c| c.is_node_check()));
            entry.services.values().map(move |svc| {
                let own = aggregate_health(
                    entry
                        .checks
                        .values()
                        .filter(|c| !c.is_node_check() && eq_fold(&c.service_id, &svc.id)),
                );
                ServiceInstance {
                    node: &entry.node,
                    service: svc,
                    health: node_health.max(own),
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::command::{Command, Registration};
    use crate::catalog::model::SERF_CHECK_ID;
    use crate::catalog::tests::{ID1, ID2, apply_ok, chk, node_reg, svc};

    const ID3: &str = "9c1e2d3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f";

    /// db1 (rack a): galeradb [icinga-galera, primary] mysql passing, serfHealth passing.
    /// db2 (rack b): galeradb [icinga-galera] mysql warning, serfHealth critical.
    /// app (rack a): web [] no checks.
    fn fixture() -> Catalog {
        let mut c = Catalog::new();
        let mut r = node_reg("db1", ID1, "10.0.0.1");
        r.node_meta.insert("rack".into(), "a".into());
        r.service = Some(svc("galeradb", "galeradb", &["icinga-galera", "Primary"]));
        r.checks = vec![
            chk("mysql", "galeradb", HealthStatus::Passing),
            chk(SERF_CHECK_ID, "", HealthStatus::Passing),
        ];
        apply_ok(&mut c, 10, Command::Register(r));
        let mut r = node_reg("db2", ID2, "10.0.0.2");
        r.node_meta.insert("rack".into(), "b".into());
        r.service = Some(svc("galeradb", "galeradb", &["icinga-galera"]));
        r.checks = vec![
            chk("mysql", "galeradb", HealthStatus::Warning),
            chk(SERF_CHECK_ID, "", HealthStatus::Critical),
        ];
        apply_ok(&mut c, 11, Command::Register(r));
        let mut r = node_reg("app", ID3, "10.0.0.3");
        r.node_meta.insert("rack".into(), "a".into());
        r.service = Some(svc("web", "web", &[]));
        apply_ok(&mut c, 12, Command::Register(r));
        c
    }

    fn meta(k: &str, v: &str) -> NodeMetaFilter {
        [(k.to_string(), v.to_string())].into()
    }

    #[test]
    fn nodes_sorted_and_filtered_by_meta() {
        let c = fixture();
        let (idx, rows) = c.nodes(&NodeMetaFilter::new());
        assert_eq!(idx, 12);
        let names: Vec<_> = rows.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["app", "db1", "db2"]);
        let (_, rows) = c.nodes(&meta("rack", "a"));
        let names: Vec<_> = rows.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["app", "db1"]);
        assert!(c.nodes(&meta("rack", "z")).1.is_empty());
    }

    #[test]
    fn services_map_unions_tags() {
        let c = fixture();
        let (idx, map) = c.services(&NodeMetaFilter::new());
        assert_eq!(idx, 12);
        assert_eq!(
            map["galeradb"],
            vec!["Primary".to_string(), "icinga-galera".to_string()]
        );
        assert_eq!(map["web"], Vec::<String>::new());
        let json = serde_json::to_value(&map).unwrap();
        assert_eq!(json["web"], serde_json::json!([]));
        let (_, map) = c.services(&meta("rack", "b"));
        assert_eq!(map.keys().collect::<Vec<_>>(), ["galeradb"]);
    }

    #[test]
    fn service_nodes_tags_all_must_match_case_insensitively() {
        let c = fixture();
        let (idx, rows) = c.service_nodes("GaleraDB", &ServiceFilter::default());
        assert_eq!(idx, 12);
        assert_eq!(rows.len(), 2);
        let filter = ServiceFilter {
            tags: vec!["icinga-galera".into(), "primary".into()],
            ..ServiceFilter::default()
        };
        let (_, rows) = c.service_nodes("galeradb", &filter);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].node, "db1");
        let filter = ServiceFilter {
            node_meta: meta("rack", "b"),
            ..ServiceFilter::default()
        };
        let (_, rows) = c.service_nodes("galeradb", &filter);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].node, "db2");
        assert!(
            c.service_nodes("nosuch", &ServiceFilter::default())
                .1
                .is_empty()
        );
    }

    #[test]
    fn service_node_row_has_consul_shape() {
        let c = fixture();
        let (_, rows) = c.service_nodes("galeradb", &ServiceFilter::default());
        let v = serde_json::to_value(&rows[0]).unwrap();
        for field in [
            "ID",
            "Node",
            "Address",
            "Datacenter",
            "TaggedAddresses",
            "NodeMeta",
            "ServiceKind",
            "ServiceID",
            "ServiceName",
            "ServiceTags",
            "ServiceAddress",
            "ServiceTaggedAddresses",
            "ServiceWeights",
            "ServiceMeta",
            "ServicePort",
            "ServiceEnableTagOverride",
            "ServiceProxy",
            "ServiceConnect",
            "CreateIndex",
            "ModifyIndex",
        ] {
            assert!(v.get(field).is_some(), "missing {field} in {v}");
        }
        assert_eq!(v["ServiceTaggedAddresses"], serde_json::json!({}));
        assert_eq!(
            v["ServiceWeights"],
            serde_json::json!({"Passing": 1, "Warning": 1})
        );
        assert_eq!(v["ServicePort"], 3306);
        assert_eq!(v["NodeMeta"], serde_json::json!({"rack": "a"}));
        assert_eq!(v["CreateIndex"], 10);
    }

    #[test]
    fn node_services_map_and_list_forms() {
        let c = fixture();
        let (idx, ns) = c.node_services("DB1");
        assert_eq!(idx, 12);
        let ns = ns.unwrap();
        assert_eq!(ns.node.name, "db1");
        assert!(ns.services.contains_key("galeradb"));
        let v = serde_json::to_value(&ns).unwrap();
        assert_eq!(v["Services"]["galeradb"]["Service"], "galeradb");
        let list: NodeServiceList = ns.into();
        let v = serde_json::to_value(&list).unwrap();
        assert_eq!(v["Services"][0]["ID"], "galeradb");
        assert!(c.node_services("nosuch").1.is_none());
        assert_eq!(
            serde_json::to_value(c.node_services("nosuch").1).unwrap(),
            serde_json::Value::Null
        );
    }

    #[test]
    fn node_and_service_checks() {
        let c = fixture();
        let (idx, checks) = c.node_checks("db2");
        assert_eq!(idx, 11, "checks table last changed at 11");
        let ids: Vec<_> = checks.iter().map(|c| c.check_id.as_str()).collect();
        assert_eq!(ids, ["mysql", SERF_CHECK_ID]);
        assert!(c.node_checks("nosuch").1.is_empty());
        let (idx, checks) = c.service_checks("galeradb", &NodeMetaFilter::new());
        assert_eq!(idx, 12);
        assert_eq!(checks.len(), 2);
        assert!(checks.iter().all(|c| c.check_id == "mysql"));
        let (_, checks) = c.service_checks("galeradb", &meta("rack", "a"));
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].node, "db1");
    }

    #[test]
    fn checks_in_state() {
        let c = fixture();
        let count = |s: &str| {
            c.checks_in_state(s.parse().unwrap(), &NodeMetaFilter::new())
                .1
                .len()
        };
        assert_eq!(count("any"), 4);
        assert_eq!(count("passing"), 2);
        assert_eq!(count("warning"), 1);
        assert_eq!(count("critical"), 1);
        assert!("unknown".parse::<CheckState>().is_err());
        let (_, rows) = c.checks_in_state(CheckState::Any, &meta("rack", "b"));
        assert!(rows.iter().all(|c| c.node == "db2"));
    }

    #[test]
    fn health_service_includes_node_checks_and_filters_passing() {
        let c = fixture();
        let (idx, rows) = c.check_service_nodes("galeradb", &ServiceFilter::default());
        assert_eq!(idx, 12);
        assert_eq!(rows.len(), 2);
        let db2 = rows.iter().find(|r| r.node.name == "db2").unwrap();
        let ids: Vec<_> = db2.checks.iter().map(|c| c.check_id.as_str()).collect();
        assert_eq!(ids, [SERF_CHECK_ID, "mysql"], "node-level checks first");
        let passing = ServiceFilter {
            passing_only: true,
            ..ServiceFilter::default()
        };
        let (_, rows) = c.check_service_nodes("galeradb", &passing);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].node.name, "db1");
        // A service with no checks passes.
        let (_, rows) = c.check_service_nodes("web", &passing);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            serde_json::to_value(&rows[0]).unwrap()["Checks"],
            serde_json::json!([])
        );
        let tagged = ServiceFilter {
            tags: vec!["PRIMARY".into()],
            ..ServiceFilter::default()
        };
        assert_eq!(c.check_service_nodes("galeradb", &tagged).1.len(), 1);
    }

    #[test]
    fn other_services_checks_do_not_leak_into_an_entry() {
        let mut c = fixture();
        let mut r = node_reg("db1", ID1, "10.0.0.1");
        r.service = Some(svc("backup", "backup", &[]));
        r.checks = vec![chk("backup-ok", "backup", HealthStatus::Critical)];
        apply_ok(&mut c, 13, Command::Register(r));
        let (_, rows) = c.check_service_nodes("galeradb", &ServiceFilter::default());
        let db1 = rows.iter().find(|r| r.node.name == "db1").unwrap();
        assert!(db1.checks.iter().all(|c| c.check_id != "backup-ok"));
    }

    #[test]
    fn aggregated_health_and_instances() {
        let c = fixture();
        assert_eq!(aggregate_health([]), HealthStatus::Passing);
        let mut health: Vec<_> = c
            .service_instances()
            .map(|i| (i.node.name.clone(), i.service.id.clone(), i.health))
            .collect();
        health.sort();
        assert_eq!(
            health,
            vec![
                ("app".into(), "web".into(), HealthStatus::Passing),
                ("db1".into(), "galeradb".into(), HealthStatus::Passing),
                // serfHealth critical on the node makes the instance critical.
                ("db2".into(), "galeradb".into(), HealthStatus::Critical),
            ]
        );
        let mut c = c;
        let mut r: Registration = node_reg("db1", ID1, "10.0.0.1");
        r.checks = vec![chk("mysql", "galeradb", HealthStatus::Warning)];
        apply_ok(&mut c, 20, Command::Register(r));
        let db1 = c
            .service_instances()
            .find(|i| i.node.name == "db1")
            .unwrap();
        assert_eq!(db1.health, HealthStatus::Warning);
    }

    #[test]
    fn query_index_moves_with_the_tables_it_reads() {
        let mut c = fixture();
        let mut r = node_reg("db1", ID1, "10.0.0.1");
        r.skip_node_update = true;
        r.checks = vec![chk("mysql", "galeradb", HealthStatus::Critical)];
        apply_ok(&mut c, 30, Command::Register(r));
        assert_eq!(c.nodes(&NodeMetaFilter::new()).0, 12);
        assert_eq!(c.service_nodes("galeradb", &ServiceFilter::default()).0, 12);
        assert_eq!(
            c.check_service_nodes("galeradb", &ServiceFilter::default())
                .0,
            30
        );
        assert_eq!(c.node_checks("db1").0, 30);
    }
}
