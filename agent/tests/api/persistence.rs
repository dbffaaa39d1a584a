//! Restarts on the same `data_dir`: API registrations, TTL state and maintenance modes come
//! back; expired TTLs come back critical; corrupt files are skipped and kept; config-file
//! registrations follow the config (and reloads).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Options, TestAgent, runtime_config, ttl_service, wait_until};

#[tokio::test]
async fn restart_keeps_api_registrations_ttl_state_and_maintenance() {
    let agent = TestAgent::start(Options::default()).await;
    agent
        .put_ok(
            "/v1/agent/service/register",
            Some(ttl_service("web", "10m")),
        )
        .await;
    agent
        .put_ok(
            "/v1/agent/check/register",
            Some(json!({"Name": "disk", "TTL": "10m", "Status": "warning"})),
        )
        .await;
    agent
        .put_ok("/v1/agent/check/pass/web-ttl?note=alive", None)
        .await;
    agent
        .put_ok("/v1/agent/maintenance?enable=true&reason=upgrade", None)
        .await;
    agent
        .put_ok(
            "/v1/agent/service/maintenance/web?enable=true&reason=drain",
            None,
        )
        .await;
    let before = agent.get_json("/v1/agent/services").await;

    let agent = agent.restart().await;
    assert_eq!(agent.get_json("/v1/agent/services").await, before);
    let checks = agent.get_json("/v1/agent/checks").await;
    assert_eq!(checks["web-ttl"]["Status"], "passing", "TTL state restored");
    assert_eq!(checks["web-ttl"]["Output"], "alive");
    assert_eq!(checks["disk"]["Status"], "warning", "initial status kept");
    assert_eq!(checks["_node_maintenance"]["Notes"], "upgrade");
    assert_eq!(checks["_service_maintenance:web"]["Notes"], "drain");
    // The restored TTL check is still a TTL check.
    agent.put_ok("/v1/agent/check/warn/web-ttl", None).await;
    // And the catalog gets it all again.
    wait_until(
        "restored state in the catalog",
        Duration::from_secs(10),
        || async {
            let c = agent.catalog_checks().await;
            let ok = c.get("web-ttl").is_some_and(|c| c["Status"] == "warning")
                && c.contains_key("_node_maintenance")
                && c.contains_key("_service_maintenance:web");
            ok.then_some(())
        },
    )
    .await;

    // Deregistrations are persisted too.
    agent.put_ok("/v1/agent/service/deregister/web", None).await;
    agent
        .put_ok("/v1/agent/maintenance?enable=false", None)
        .await;
    let agent = agent.restart().await;
    let checks = agent.get_json("/v1/agent/checks").await;
    assert_eq!(agent.get_json("/v1/agent/services").await, json!({}));
    assert!(checks.get("_node_maintenance").is_none());
    assert!(checks.get("_service_maintenance:web").is_none());
    assert!(checks.get("disk").is_some());
    agent.stop().await;
}

#[tokio::test]
async fn an_expired_ttl_comes_back_critical() {
    let agent = TestAgent::start(Options::default()).await;
    agent
        .put_ok("/v1/agent/service/register", Some(ttl_service("web", "1s")))
        .await;
    agent
        .put_ok("/v1/agent/check/pass/web-ttl?note=ok", None)
        .await;
    let passed = Instant::now();
    let (dir, tmp, options) = agent.stop().await;
    // The TTL runs out while the agent is down.
    wait_until("the TTL to run out", Duration::from_secs(10), || async {
        (passed.elapsed() > Duration::from_millis(1500)).then_some(())
    })
    .await;
    let mut agent = TestAgent::start_in(&dir, options).await;
    agent.keep_dir(tmp);
    let checks = agent.get_json("/v1/agent/checks").await;
    assert_eq!(checks["web-ttl"]["Status"], "critical");
    assert_eq!(checks["web-ttl"]["Output"], "TTL expired");
    agent.stop().await;
}

#[tokio::test]
async fn corrupt_persisted_files_are_skipped_and_kept() {
    let agent = TestAgent::start(Options::default()).await;
    agent
        .put_ok(
            "/v1/agent/service/register",
            Some(ttl_service("good", "1m")),
        )
        .await;
    let services_dir = agent.dir.join("data").join("services");
    let garbage = services_dir.join("garbage");
    std::fs::write(&garbage, b"{\"Version\": 1, \"Service\": ").unwrap();
    let agent = agent.restart().await;
    let services = agent.get_json("/v1/agent/services").await;
    assert!(services.get("good").is_some());
    assert_eq!(services.as_object().unwrap().len(), 1);
    assert!(garbage.exists(), "never deleted behind the operator's back");
    agent.stop().await;
}

#[tokio::test]
async fn config_registrations_follow_the_config_and_reloads() {
    let config = json!({
        "services": [
            {"name": "galeradb", "tags": ["icinga-galera"], "port": 3306,
             "check": {"id": "mysql", "name": "mysql", "ttl": "10m"}},
            {"name": "old", "port": 1}
        ]
    });
    let agent = TestAgent::start(Options {
        config: config.clone(),
        ..Options::default()
    })
    .await;
    agent
        .put_ok(
            "/v1/agent/service/register",
            Some(ttl_service("api-web", "10m")),
        )
        .await;
    agent
        .put_ok("/v1/agent/check/pass/mysql?note=up", None)
        .await;
    let services = agent.get_json("/v1/agent/services").await;
    assert!(services.get("galeradb").is_some() && services.get("old").is_some());

    // Reload: `old` goes, `new` comes, the unchanged `galeradb` keeps its check state, the
    // API registration stays.
    let reloaded = json!({
        "services": [
            {"name": "galeradb", "tags": ["icinga-galera"], "port": 3306,
             "check": {"id": "mysql", "name": "mysql", "ttl": "10m"}},
            {"name": "new", "port": 2}
        ]
    });
    let cfg = runtime_config(&agent.dir, &reloaded);
    agent.local.reload(&cfg).await.unwrap();
    let services = agent.get_json("/v1/agent/services").await;
    let mut ids: Vec<&str> = services
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["api-web", "galeradb", "new"]);
    let checks = agent.get_json("/v1/agent/checks").await;
    assert_eq!(checks["mysql"]["Status"], "passing");
    wait_until(
        "the reload in the catalog",
        Duration::from_secs(10),
        || async {
            let s = agent.catalog_services().await;
            (s.contains_key("new") && !s.contains_key("old")).then_some(())
        },
    )
    .await;

    // A config that cannot run is refused as a whole; nothing changes.
    let bad = json!({"check": {"id": "orphan", "name": "o", "ttl": "1m", "service_id": "missing"}});
    let cfg = runtime_config(&agent.dir, &bad);
    let err = agent.local.reload(&cfg).await.unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(
        agent
            .get_json("/v1/agent/services")
            .await
            .get("new")
            .is_some()
    );

    // Config-file services are not persisted: a restart with the original config shows it.
    let agent = agent.restart_with(|o| Options { config, ..o }).await;
    let services = agent.get_json("/v1/agent/services").await;
    let mut ids: Vec<&str> = services
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["api-web", "galeradb", "old"]);
    agent.stop().await;
}
