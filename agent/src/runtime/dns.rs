//! DNS glue: the config file's DNS settings as a `muster_dns::DnsConfig`, and the publisher
//! that turns the server's catalog into the `DnsCatalog` snapshots the DNS server answers
//! from.
//!
//! The publisher rebuilds the snapshot whenever the nodes, services or checks table moves
//! (`ServerHandle::wait_for_change`), at most once per [`MIN_REBUILD_GAP`] so a burst of
//! writes costs one rebuild, and records leader contact every [`CONTACT_TICK`] so that
//! `max_stale` (and `allow_stale = false`) judge the replica's real age.
//!
//! A rebuild copies the whole catalog under its read lock, so on a large catalog under a
//! write storm a fixed gap would spend most of a core on rebuilds (and hold off the state
//! machine's applies meanwhile): with 1,000 nodes and 10,000 services every agent of a
//! 5-agent cluster spent ~20 % of a core on them at 2,700 writes/s. The gap therefore grows
//! with the cost of the last rebuild, [`REBUILD_COST_FACTOR`] times it, so rebuilding never
//! takes more than ~1/[`REBUILD_COST_FACTOR`] of a core, up to [`MAX_REBUILD_GAP`]. A small
//! catalog (rebuilds under a millisecond) keeps the 50 ms gap. At 50 rather than 20 times
//! the cost, that bench cluster took 35–45 % more sequential writes per second (every agent
//! rebuilds, and the leader's own rebuild delays its applies): DNS on a big catalog under a
//! write storm trails the catalog by up to a second, while failure detection on a catalog of
//! normal size keeps its 50 ms.
//!
//! Health is aggregated here, once per snapshot: an instance is critical if any of its own
//! checks or its node's checks (`serfHealth`, maintenance) is critical, as Consul's DNS does.
//!
//! Without a catalog (a client agent before cluster support), the published snapshot never
//! has a leader contact, which the DNS server answers with SERVFAIL for names in the cluster
//! domain; every other name is still forwarded to the recursors.

use std::time::Duration;

use muster_dns::{
    DnsCatalog, DnsConfig, DnsNode, DnsServiceInstance, InstanceHealth, RecursorStrategy,
    SharedCatalog, Weights,
};
use muster_server::catalog::model::CONSUL_SERVICE;
use muster_server::{Catalog, Consistency, HealthStatus, ServerHandle, Table};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::acl::{Authorizer, Kind, Need, Resolver};
use crate::config::{self, DnsSettings};

/// Least time between two snapshot rebuilds.
pub const MIN_REBUILD_GAP: Duration = Duration::from_millis(50);
/// The gap after a rebuild is at least this many times what the rebuild cost.
pub const REBUILD_COST_FACTOR: u32 = 50;
/// The gap never grows beyond this, however large the catalog.
pub const MAX_REBUILD_GAP: Duration = Duration::from_secs(1);
/// How often leader contact is refreshed while the catalog is idle.
pub const CONTACT_TICK: Duration = Duration::from_millis(250);

/// The DNS server's configuration from the agent's.
pub fn dns_config(settings: &DnsSettings, datacenter: &str) -> DnsConfig {
    let mut c = DnsConfig::default();
    c.domain = settings.domain.clone();
    c.alt_domain = settings.alt_domain.clone();
    c.datacenter = datacenter.to_owned();
    c.node_ttl = settings.node_ttl;
    c.service_ttl = settings
        .service_ttl
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    c.only_passing = settings.only_passing;
    c.udp_answer_limit = usize::from(settings.udp_answer_limit);
    c.a_record_limit = usize::try_from(settings.a_record_limit).unwrap_or(usize::MAX);
    c.enable_truncate = settings.enable_truncate;
    c.enable_additional_node_meta_txt = settings.enable_additional_node_meta_txt;
    c.disable_compression = settings.disable_compression;
    c.soa.refresh = settings.soa.refresh;
    c.soa.retry = settings.soa.retry;
    c.soa.expire = settings.soa.expire;
    c.soa.min_ttl = settings.soa.min_ttl;
    c.allow_stale = settings.allow_stale;
    c.max_stale = settings.max_stale;
    c.recursors = settings.recursors.clone();
    c.recursor_allow = settings.recursor_allow.clone();
    c.recursor_strategy = match settings.recursor_strategy {
        config::RecursorStrategy::Sequential => RecursorStrategy::Sequential,
        config::RecursorStrategy::Random => RecursorStrategy::Random,
    };
    c.recursor_timeout = settings.recursor_timeout;
    c
}

fn instance_health(status: HealthStatus) -> InstanceHealth {
    match status {
        HealthStatus::Passing => InstanceHealth::Passing,
        HealthStatus::Warning => InstanceHealth::Warning,
        HealthStatus::Critical => InstanceHealth::Critical,
    }
}

fn weight(w: i32) -> u16 {
    u16::try_from(w.max(0)).unwrap_or(u16::MAX)
}

/// The DNS view of a catalog: every node, every instance with its aggregated health, and the
/// servers (nodes carrying the `consul` service) for NS records.
pub fn build_dns_catalog(
    catalog: &Catalog,
    datacenter: &str,
    last_contact: Option<Instant>,
) -> DnsCatalog {
    let (_, nodes) = catalog.nodes(&Default::default());
    let nodes = nodes
        .into_iter()
        .map(|n| DnsNode {
            name: n.name,
            address: n.address,
            meta: n.meta,
        })
        .collect();
    let mut services = Vec::new();
    let mut servers = Vec::new();
    for inst in catalog.service_instances() {
        if inst.service.service == CONSUL_SERVICE && !servers.contains(&inst.node.name) {
            servers.push(inst.node.name.clone());
        }
        services.push(DnsServiceInstance {
            service: inst.service.service.clone(),
            id: inst.service.id.clone(),
            node: inst.node.name.clone(),
            node_address: inst.node.address.clone(),
            address: inst.service.address.clone(),
            port: inst.service.port,
            tags: inst.service.tags.clone(),
            weights: Weights {
                passing: weight(inst.service.weights.passing),
                warning: weight(inst.service.weights.warning),
            },
            health: instance_health(inst.health),
        });
    }
    servers.sort();
    DnsCatalog {
        datacenter: datacenter.to_owned(),
        index: catalog.max_index(),
        last_contact,
        nodes,
        services,
        servers,
    }
}

/// What DNS may answer: nodes the DNS token may read, and instances whose service and node
/// it may read (Consul filters DNS by `acl.tokens.dns`, else `default`, else anonymous;
/// what is filtered out is NXDOMAIN).
pub fn filter_dns_catalog(mut c: DnsCatalog, auth: &Authorizer) -> DnsCatalog {
    if auth.is_all() {
        return c;
    }
    let node_ok = |n: &str| auth.allows(Kind::Node, n, Need::Read);
    c.nodes.retain(|n| node_ok(&n.name));
    c.services
        .retain(|s| auth.allows(Kind::Service, &s.service, Need::Read) && node_ok(&s.node));
    c.servers.retain(|s| node_ok(s));
    c
}

/// The authorizer DNS answers with (`None`: ACLs off, everything).
async fn dns_authorizer(acl: Option<&(Resolver, Option<String>)>) -> Option<Authorizer> {
    let (resolver, secret) = acl?;
    match resolver.resolve(secret.as_deref()).await {
        Ok(a) => Some((*a).clone()),
        Err(e) => {
            tracing::warn!(error = %e, "the DNS ACL token does not resolve; DNS answers nothing");
            Some(Authorizer::from_policies(
                [],
                crate::acl::DefaultPolicy::Deny,
            ))
        }
    }
}

/// Keeps `shared` in step with the server's catalog until `shutdown` is cancelled. With
/// `acl` (a resolver and the DNS token), answers are filtered by what that token may read,
/// and re-filtered when its rights change.
pub async fn publish(
    catalog: ServerHandle,
    shared: std::sync::Arc<SharedCatalog>,
    datacenter: String,
    acl: Option<(Resolver, Option<String>)>,
    shutdown: CancellationToken,
) {
    let mut contact: Option<Instant> = None;
    let mut published: Option<u64> = None;
    let mut rights: Option<Authorizer> = None;
    let mut last_build = Instant::now() - MIN_REBUILD_GAP;
    let mut gap = MIN_REBUILD_GAP;
    loop {
        // Leader contact as this server sees it: now on the leader, the last append from it
        // on a follower, nothing while no leader is known.
        let meta = match catalog.read(Consistency::Stale, |_| ()).await {
            Ok(((), meta)) => meta,
            Err(e) if e.is_shutting_down() => return,
            Err(e) => {
                tracing::debug!(error = %e, "DNS publisher cannot read the catalog");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(CONTACT_TICK) => continue,
                }
            }
        };
        if meta.known_leader {
            let at = Instant::now()
                .checked_sub(meta.last_contact)
                .unwrap_or_else(Instant::now);
            contact = Some(contact.map_or(at, |c| c.max(at)));
            shared.record_contact(at);
        }
        let index = catalog.indexes().max_of(&Table::ALL);
        let now_rights = dns_authorizer(acl.as_ref()).await;
        let rights_changed = now_rights != rights;
        // Contact is tracked by `record_contact` alone; only a catalog change (or a change of
        // the DNS token's rights) needs a rebuild.
        if published != Some(index) || rights_changed {
            rights = now_rights;
            let wait = gap.saturating_sub(last_build.elapsed());
            if !wait.is_zero() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            let started = Instant::now();
            let snapshot = catalog
                .read(Consistency::Stale, |c| {
                    build_dns_catalog(c, &datacenter, contact)
                })
                .await;
            match snapshot {
                Ok((snapshot, _)) => {
                    published = Some(snapshot.index);
                    let snapshot = match &rights {
                        Some(auth) => filter_dns_catalog(snapshot, auth),
                        None => snapshot,
                    };
                    shared.publish(snapshot);
                    last_build = Instant::now();
                    gap = rebuild_gap(last_build - started);
                }
                Err(e) if e.is_shutting_down() => return,
                Err(e) => tracing::debug!(error = %e, "DNS publisher cannot read the catalog"),
            }
        }
        let after = published.unwrap_or(0);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = catalog.wait_for_change(&Table::ALL, after, Instant::now() + CONTACT_TICK) => {}
        }
    }
}

/// The least time between the end of a rebuild that took `cost` and the start of the next.
fn rebuild_gap(cost: Duration) -> Duration {
    cost.saturating_mul(REBUILD_COST_FACTOR)
        .clamp(MIN_REBUILD_GAP, MAX_REBUILD_GAP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_server::{Command, HealthCheck, NodeService, Registration};
    use std::collections::BTreeMap;

    fn settings() -> DnsSettings {
        let mut service_ttl = BTreeMap::new();
        service_ttl.insert("db*".to_owned(), Duration::from_secs(10));
        DnsSettings {
            addrs: vec!["127.0.0.1:8600".parse().unwrap()],
            domain: "example.".into(),
            alt_domain: Some("alt.".into()),
            recursors: vec!["127.0.0.1:5400".parse().unwrap()],
            recursor_allow: muster_dns::RecursorAllow::parse(&["10.0.0.0/8"]).unwrap(),
            recursor_strategy: config::RecursorStrategy::Random,
            recursor_timeout: Duration::from_secs(3),
            allow_stale: false,
            max_stale: Duration::from_secs(7),
            node_ttl: Duration::from_secs(4),
            service_ttl,
            only_passing: true,
            udp_answer_limit: 5,
            a_record_limit: 2,
            enable_truncate: true,
            disable_compression: true,
            enable_additional_node_meta_txt: false,
            soa: config::SoaSettings {
                refresh: 1,
                retry: 2,
                expire: 3,
                min_ttl: 4,
            },
        }
    }

    #[test]
    fn the_rebuild_gap_grows_with_the_cost_of_a_rebuild_within_bounds() {
        // A cheap rebuild keeps the base gap.
        assert_eq!(rebuild_gap(Duration::from_micros(300)), MIN_REBUILD_GAP);
        // An expensive one waits REBUILD_COST_FACTOR times its cost...
        assert_eq!(
            rebuild_gap(Duration::from_millis(10)),
            Duration::from_millis(10) * REBUILD_COST_FACTOR
        );
        // ...but never longer than the cap.
        assert_eq!(rebuild_gap(Duration::from_secs(3)), MAX_REBUILD_GAP);
    }

    #[test]
    fn dns_config_carries_every_setting() {
        let c = dns_config(&settings(), "dc9");
        assert_eq!(c.domain, "example.");
        assert_eq!(c.alt_domain.as_deref(), Some("alt."));
        assert_eq!(c.datacenter, "dc9");
        assert_eq!(c.node_ttl, Duration::from_secs(4));
        assert_eq!(c.service_ttl.resolve("dbx"), Duration::from_secs(10));
        assert_eq!(c.service_ttl.resolve("web"), Duration::ZERO);
        assert!(c.only_passing);
        assert_eq!(c.udp_answer_limit, 5);
        assert_eq!(c.a_record_limit, 2);
        assert!(c.enable_truncate && c.disable_compression);
        assert!(!c.enable_additional_node_meta_txt);
        assert_eq!(
            (c.soa.refresh, c.soa.retry, c.soa.expire, c.soa.min_ttl),
            (1, 2, 3, 4)
        );
        assert!(!c.allow_stale);
        assert_eq!(c.max_stale, Duration::from_secs(7));
        assert_eq!(c.recursors, settings().recursors);
        assert_eq!(c.recursor_strategy, RecursorStrategy::Random);
        assert!(c.recursor_allow.allows("10.1.2.3".parse().unwrap()));
        assert!(!c.recursor_allow.allows("127.0.0.1".parse().unwrap()));
        assert_eq!(c.recursor_timeout, Duration::from_secs(3));
        c.validate().unwrap();
    }

    fn check(id: &str, service_id: &str, status: HealthStatus) -> HealthCheck {
        HealthCheck {
            check_id: id.into(),
            name: id.into(),
            service_id: service_id.into(),
            status,
            ..HealthCheck::default()
        }
    }

    fn register(
        catalog: &mut Catalog,
        index: u64,
        node: &str,
        addr: &str,
        service: Option<NodeService>,
        checks: Vec<HealthCheck>,
    ) {
        let mut reg = Registration {
            node: node.into(),
            address: addr.into(),
            datacenter: "dc1".into(),
            service,
            checks,
            ..Registration::default()
        };
        reg.normalize();
        let result = catalog.apply(index, &Command::Register(reg));
        assert!(result.is_ok(), "{result:?}");
    }

    fn svc(id: &str, name: &str, port: u16) -> NodeService {
        NodeService {
            id: id.into(),
            service: name.into(),
            port,
            tags: vec!["primary".into()],
            weights: muster_server::Weights {
                passing: 3,
                warning: 1,
            },
            ..NodeService::default()
        }
    }

    #[test]
    fn snapshot_aggregates_health_and_finds_servers() {
        let mut c = Catalog::new();
        // db1: a server, healthy galeradb.
        register(
            &mut c,
            1,
            "db1",
            "10.0.0.1",
            Some(svc("consul", "consul", 8300)),
            vec![check("serfHealth", "", HealthStatus::Passing)],
        );
        register(
            &mut c,
            2,
            "db1",
            "10.0.0.1",
            Some(svc("galeradb", "galeradb", 3306)),
            vec![check("mysql", "galeradb", HealthStatus::Passing)],
        );
        // db2: galeradb warning.
        register(
            &mut c,
            3,
            "db2",
            "10.0.0.2",
            Some(svc("galeradb", "galeradb", 3306)),
            vec![
                check("serfHealth", "", HealthStatus::Passing),
                check("mysql", "galeradb", HealthStatus::Warning),
            ],
        );
        // db3: the node failed, so its passing service is critical.
        register(
            &mut c,
            4,
            "db3",
            "10.0.0.3",
            Some(svc("galeradb", "galeradb", 3306)),
            vec![
                check("serfHealth", "", HealthStatus::Critical),
                check("mysql", "galeradb", HealthStatus::Passing),
            ],
        );
        // app: a service with no checks at all is passing.
        register(
            &mut c,
            5,
            "app",
            "10.0.0.9",
            Some(svc("web-1", "web", 80)),
            vec![],
        );

        let at = Instant::now();
        let dns = build_dns_catalog(&c, "dc1", Some(at));
        assert_eq!(dns.datacenter, "dc1");
        assert_eq!(dns.index, 5);
        assert_eq!(dns.last_contact, Some(at));
        let names: Vec<&str> = dns.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["app", "db1", "db2", "db3"]);
        assert_eq!(dns.servers, ["db1"]);
        let health = |node: &str, id: &str| {
            dns.services
                .iter()
                .find(|s| s.node == node && s.id == id)
                .map(|s| s.health)
                .unwrap()
        };
        assert_eq!(health("db1", "galeradb"), InstanceHealth::Passing);
        assert_eq!(health("db2", "galeradb"), InstanceHealth::Warning);
        assert_eq!(health("db3", "galeradb"), InstanceHealth::Critical);
        assert_eq!(health("app", "web-1"), InstanceHealth::Passing);
        let web = dns.services.iter().find(|s| s.id == "web-1").unwrap();
        assert_eq!(web.service, "web");
        assert_eq!(web.node_address, "10.0.0.9");
        assert_eq!(web.port, 80);
        assert_eq!(web.tags, ["primary"]);
        assert_eq!(
            web.weights,
            Weights {
                passing: 3,
                warning: 1
            }
        );
        assert_eq!(dns.services.len(), 5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publisher_follows_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = crate::runtime::leader::tests::single_server(dir.path(), "db1").await;
        let shared = std::sync::Arc::new(SharedCatalog::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(publish(
            catalog.clone(),
            shared.clone(),
            "dc1".into(),
            None,
            stop.clone(),
        ));
        let mut reg = Registration {
            node: "db1".into(),
            address: "127.0.0.1".into(),
            service: Some(svc("web", "web", 80)),
            ..Registration::default()
        };
        reg.normalize();
        catalog.write(Command::Register(reg)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let snap = shared.current();
            if snap.services.iter().any(|s| s.service == "web") {
                assert!(snap.last_contact.is_some(), "the leader counts as contact");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the snapshot never showed the service"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        catalog.shutdown().await;
    }
}
