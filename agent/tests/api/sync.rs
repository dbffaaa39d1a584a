//! Anti-entropy: registrations and status changes reach the catalog at once, output-only
//! changes are throttled, drift is repaired by the full sync without rewriting what is in
//! sync, TCP checks follow a listener, and critical services are reaped.

use std::time::{Duration, Instant};

use muster::config::ServiceDefinition;
use muster::local::LocalOptions;
use serde_json::{Value, json};

use crate::support::{NODE, Options, TestAgent, ttl_service, wait_until};

/// The catalog's (status, output) of a check on this node.
async fn catalog_check(agent: &TestAgent, id: &str) -> Option<(String, String)> {
    let checks = agent.catalog_checks().await;
    let c = checks.get(id)?;
    Some((
        c["Status"].as_str().unwrap().to_owned(),
        c["Output"].as_str().unwrap().to_owned(),
    ))
}

#[tokio::test]
async fn agent_registration_reaches_the_catalog_and_deregistration_leaves_it() {
    let agent = TestAgent::start(Options {
        config: json!({"node_meta": {"rack": "a"}}),
        ..Options::default()
    })
    .await;
    let started = Instant::now();
    agent
        .put_ok(
            "/v1/agent/service/register",
            Some(ttl_service("web", "30s")),
        )
        .await;
    let rows = wait_until("web in the catalog", Duration::from_secs(10), || async {
        let rows = agent.get_json("/v1/catalog/service/web").await;
        (!rows.as_array().unwrap().is_empty()).then_some(rows)
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let row = &rows[0];
    assert_eq!(row["Node"], NODE);
    assert_eq!(row["ID"], crate::support::NODE_ID);
    assert_eq!(row["Address"], "127.0.0.1");
    assert_eq!(row["NodeMeta"], json!({"rack": "a"}));
    assert_eq!(row["ServiceTags"], json!(["primary"]));
    assert_eq!(row["ServicePort"], 8080);
    let node = agent.get_json(&format!("/v1/catalog/node/{NODE}")).await;
    let tagged = &node["Node"]["TaggedAddresses"];
    for tag in ["lan", "lan_ipv4", "wan", "wan_ipv4"] {
        assert_eq!(tagged[tag], "127.0.0.1", "{tag}");
    }
    assert_eq!(
        catalog_check(&agent, "web-ttl").await,
        Some(("critical".into(), String::new()))
    );

    agent.put_ok("/v1/agent/service/deregister/web", None).await;
    wait_until(
        "web leaves the catalog",
        Duration::from_secs(10),
        || async {
            let rows = agent.get_json("/v1/catalog/service/web").await;
            let gone = rows.as_array().unwrap().is_empty()
                && catalog_check(&agent, "web-ttl").await.is_none();
            gone.then_some(())
        },
    )
    .await;
    agent.stop().await;
}

#[tokio::test]
async fn status_changes_sync_at_once_and_output_only_changes_are_throttled() {
    // Output-only changes wait interval/2 + rand[0, interval): between 3 s and 9 s here.
    let agent = TestAgent::start(Options {
        config: json!({"check_update_interval": "6s"}),
        ..Options::default()
    })
    .await;
    agent
        .put_ok("/v1/agent/service/register", Some(ttl_service("web", "5m")))
        .await;
    wait_until(
        "web-ttl in the catalog",
        Duration::from_secs(10),
        || async { catalog_check(&agent, "web-ttl").await },
    )
    .await;

    let started = Instant::now();
    agent
        .put_ok("/v1/agent/check/pass/web-ttl?note=a", None)
        .await;
    wait_until(
        "passing in the catalog",
        Duration::from_secs(10),
        || async {
            (catalog_check(&agent, "web-ttl").await == Some(("passing".into(), "a".into())))
                .then_some(())
        },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "status change took {:?}",
        started.elapsed()
    );

    // Same status, new output: held back for at least interval/2.
    let started = Instant::now();
    agent
        .put_ok("/v1/agent/check/pass/web-ttl?note=b", None)
        .await;
    wait_until(
        "output b in the catalog",
        Duration::from_secs(20),
        || async {
            (catalog_check(&agent, "web-ttl").await == Some(("passing".into(), "b".into())))
                .then_some(())
        },
    )
    .await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(3),
        "output-only change synced after {waited:?}"
    );

    // An output change arms the deferral; a status change meanwhile goes out at once, with
    // the latest output.
    agent
        .put_ok("/v1/agent/check/pass/web-ttl?note=c", None)
        .await;
    let started = Instant::now();
    agent
        .put_ok("/v1/agent/check/fail/web-ttl?note=down", None)
        .await;
    wait_until(
        "critical in the catalog",
        Duration::from_secs(10),
        || async {
            (catalog_check(&agent, "web-ttl").await == Some(("critical".into(), "down".into())))
                .then_some(())
        },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "status change took {:?}",
        started.elapsed()
    );
    agent.stop().await;
}

#[tokio::test]
async fn catalog_drift_is_repaired_by_the_full_sync_without_rewrites() {
    let agent = TestAgent::start(Options {
        local: LocalOptions {
            full_sync_interval: Duration::from_millis(500),
            ..Options::default().local
        },
        ..Options::default()
    })
    .await;
    agent
        .put_ok("/v1/agent/service/register", Some(ttl_service("web", "5m")))
        .await;
    let in_catalog = || async {
        let services = agent.catalog_services().await;
        services.contains_key("web").then_some(())
    };
    wait_until("web in the catalog", Duration::from_secs(10), in_catalog).await;
    let index_of = |services: &serde_json::Map<String, Value>, key: &str| {
        services.get("web").and_then(|w| w[key].as_u64())
    };
    let before = index_of(&agent.catalog_services().await, "ModifyIndex").unwrap();

    // Someone deletes the agent's service through the catalog API: the full sync puts it back.
    // (A full sync may already run between the deregister and the next read, so the proof
    // that it was deleted is a recreated entry: a CreateIndex past the old ModifyIndex.)
    let dereg = json!({"Node": NODE, "ServiceID": "web"});
    assert_eq!(
        agent.put_ok("/v1/catalog/deregister", Some(dereg)).await,
        "true"
    );
    wait_until("web restored", Duration::from_secs(15), || async {
        let created = index_of(&agent.catalog_services().await, "CreateIndex")?;
        (created > before).then_some(())
    })
    .await;
    wait_until("web-ttl restored", Duration::from_secs(15), || async {
        catalog_check(&agent, "web-ttl").await
    })
    .await;

    // Someone registers a service on the agent's node: anti-entropy removes it (Consul #729).
    let stray = json!({"Node": NODE, "Address": "127.0.0.1",
                       "Service": {"ID": "stray", "Service": "stray"},
                       "Check": {"CheckID": "stray-check", "Name": "s", "ServiceID": "stray"}});
    agent.put_ok("/v1/catalog/register", Some(stray)).await;
    // The stray registration also overwrote the node record (no ID, no tagged addresses):
    // that is repaired as well.
    wait_until(
        "stray removed, node repaired",
        Duration::from_secs(15),
        || async {
            let node = agent.get_json(&format!("/v1/catalog/node/{NODE}")).await;
            let repaired = node["Node"]["ID"] == crate::support::NODE_ID
                && node["Node"]["TaggedAddresses"]["lan"] == "127.0.0.1";
            let gone = agent.catalog_services().await.get("stray").is_none()
                && catalog_check(&agent, "stray-check").await.is_none();
            (gone && repaired).then_some(())
        },
    )
    .await;

    // In sync: several full syncs later nothing was rewritten, so a blocking query on the
    // node's index runs out its wait with the same index.
    let path = format!("/v1/catalog/node/{NODE}");
    let r = agent.get(&path).await;
    let index: u64 = r.headers()["x-consul-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let r = agent.get(&format!("{path}?index={index}&wait=3s")).await;
    assert_eq!(
        r.headers()["x-consul-index"].to_str().unwrap(),
        index.to_string()
    );
    let checks_path = format!("/v1/health/node/{NODE}");
    let r = agent.get(&checks_path).await;
    let index: u64 = r.headers()["x-consul-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let r = agent
        .get(&format!("{checks_path}?index={index}&wait=2s"))
        .await;
    assert_eq!(
        r.headers()["x-consul-index"].to_str().unwrap(),
        index.to_string()
    );
    agent.stop().await;
}

#[tokio::test]
async fn tcp_check_follows_a_listener() {
    let agent = TestAgent::start(Options::default()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = json!({"Name": "db", "Port": addr.port(),
                      "Check": {"CheckID": "db-port", "TCP": addr.to_string(), "Interval": "1s", "Timeout": "1s"}});
    agent.put_ok("/v1/agent/service/register", Some(body)).await;
    let (_, output) = wait_until(
        "passing in the catalog",
        Duration::from_secs(15),
        || async {
            catalog_check(&agent, "db-port")
                .await
                .filter(|(s, _)| s == "passing")
        },
    )
    .await;
    assert_eq!(output, format!("TCP connect {addr}: Success"));
    drop(listener);
    let (_, output) = wait_until(
        "critical in the catalog",
        Duration::from_secs(15),
        || async {
            catalog_check(&agent, "db-port")
                .await
                .filter(|(s, _)| s == "critical")
        },
    )
    .await;
    assert!(output.contains("connection refused"), "{output}");
    let health = agent.get_json("/v1/health/service/db?passing").await;
    assert_eq!(health, json!([]));
    agent.stop().await;
}

#[tokio::test]
async fn services_critical_longer_than_their_threshold_are_reaped() {
    let agent = TestAgent::start(Options::default()).await;
    // The API raises `DeregisterCriticalServiceAfter` to Consul's 1m minimum; the state takes
    // a shorter one directly so the test is quick.
    let mut def = ServiceDefinition::from_api_json(&json!({
        "ID": "doomed", "Name": "doomed",
        "Check": {"CheckID": "doomed-ttl", "TTL": "1h", "DeregisterCriticalServiceAfter": "1m"}
    }))
    .unwrap();
    def.checks[0].deregister_critical_service_after = Some(Duration::from_millis(800));
    agent.local.register_service(def, false).await.unwrap();
    agent
        .put_ok(
            "/v1/agent/service/register",
            Some(ttl_service("kept", "1h")),
        )
        .await;
    wait_until("doomed in the catalog", Duration::from_secs(10), || async {
        agent.catalog_services().await.get("doomed").map(|_| ())
    })
    .await;
    let started = Instant::now();
    wait_until("doomed reaped", Duration::from_secs(10), || async {
        let local = agent.get_json("/v1/agent/services").await;
        let gone =
            local.get("doomed").is_none() && agent.catalog_services().await.get("doomed").is_none();
        gone.then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(8));
    let local: Value = agent.get_json("/v1/agent/services").await;
    assert!(
        local.get("kept").is_some(),
        "services without the setting stay"
    );
    agent.stop().await;
}
