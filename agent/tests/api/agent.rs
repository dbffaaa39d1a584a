//! `/v1/agent/*`: self, members, services, checks, TTL, maintenance, health for load
//! balancers, routing errors, reload and leave.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{NODE, Options, TestAgent, ttl_service, wait_until};

#[tokio::test]
async fn self_and_members_use_consul_field_names() {
    let agent = TestAgent::start(Options {
        config: json!({
            "node_meta": {"rack": "a"},
            "encrypt": "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=",
            "service": {"name": "db", "token": "tok-secret-1"}
        }),
        ..Options::default()
    })
    .await;
    let me = agent.get_json("/v1/agent/self").await;
    assert_eq!(me["Config"]["NodeName"], NODE);
    assert_eq!(me["Config"]["Datacenter"], "dc1");
    assert_eq!(me["Config"]["PrimaryDatacenter"], "dc1");
    assert_eq!(me["Config"]["NodeID"], crate::support::NODE_ID);
    assert_eq!(me["Config"]["Server"], true);
    assert!(me["Config"]["Version"].is_string() && me["Config"]["Revision"].is_string());
    assert_eq!(
        me["DebugConfig"]["EncryptKey"], "hidden",
        "secrets are redacted"
    );
    assert_eq!(me["DebugConfig"]["NodeName"], NODE);
    assert_eq!(me["Member"]["Name"], NODE);
    assert_eq!(me["Member"]["Status"], 1);
    assert_eq!(me["Meta"], json!({"rack": "a"}));
    assert!(me.get("Coord").is_none(), "no coordinates");
    assert_eq!(me["Stats"]["agent"]["services"], "1");
    assert!(
        !me.to_string().contains("pUqJrVyVRj5j"),
        "the key never leaves the agent"
    );

    let members = agent.get_json("/v1/agent/members").await;
    let m = &members[0];
    for field in [
        "Name",
        "Addr",
        "Port",
        "Tags",
        "Status",
        "ProtocolMin",
        "ProtocolMax",
        "ProtocolCur",
        "DelegateMin",
        "DelegateMax",
        "DelegateCur",
    ] {
        assert!(m.get(field).is_some(), "member field {field}: {m}");
    }
    assert_eq!(m["Addr"], "127.0.0.1");
    assert_eq!(m["Tags"]["role"], "consul");
    assert_eq!(agent.get_json("/v1/agent/members?wan").await, json!([]));
    agent.stop().await;
}

#[tokio::test]
async fn services_register_list_get_and_deregister() {
    let agent = TestAgent::start(Options::default()).await;
    // Field names are case-insensitive and snake_case is accepted.
    agent
        .put_ok(
            "/v1/agent/service/register",
            Some(json!({
                "id": "redis1", "NAME": "redis", "tags": ["primary"], "Port": 8000,
                "meta": {"version": "7"}, "enable_tag_override": true,
                "weights": {"passing": 10, "warning": 1},
                "check": {"ttl": "30s"}
            })),
        )
        .await;
    let services = agent.get_json("/v1/agent/services").await;
    let s = &services["redis1"];
    assert_eq!(s["ID"], "redis1");
    assert_eq!(s["Service"], "redis");
    assert_eq!(s["Tags"], json!(["primary"]));
    assert_eq!(s["Meta"], json!({"version": "7"}));
    assert_eq!(s["Port"], 8000);
    assert_eq!(s["Address"], "");
    assert_eq!(s["Weights"], json!({"Passing": 10, "Warning": 1}));
    assert_eq!(s["EnableTagOverride"], true);
    assert_eq!(s["Datacenter"], "dc1");

    let r = agent.get("/v1/agent/service/redis1").await;
    assert_eq!(r.status(), 200);
    let hash = r.headers()["x-consul-contenthash"]
        .to_str()
        .unwrap()
        .to_owned();
    let one: Value = r.json().await.unwrap();
    assert_eq!(one["ContentHash"], hash.as_str());
    assert_eq!(one["Service"], "redis");
    // Hash blocking: the same hash waits out `wait`, then answers the same content.
    let started = std::time::Instant::now();
    let again = agent
        .get_json(&format!("/v1/agent/service/redis1?hash={hash}&wait=300ms"))
        .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(again["ContentHash"], hash.as_str());

    let checks = agent.get_json("/v1/agent/checks").await;
    let c = &checks["service:redis1"];
    assert_eq!(c["Status"], "critical", "checks start critical");
    assert_eq!(c["ServiceID"], "redis1");
    assert_eq!(c["ServiceName"], "redis");
    assert_eq!(c["ServiceTags"], json!(["primary"]));
    assert_eq!(c["Type"], "ttl");
    assert_eq!(c["Node"], NODE);
    assert_eq!(c["Name"], "Service 'redis' check");

    let filtered = agent
        .get_json("/v1/agent/services?filter=Service%20%3D%3D%20nope")
        .await;
    assert_eq!(filtered, json!({}));

    let r = agent.get("/v1/agent/service/nope").await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), "unknown service ID: nope");

    assert_eq!(
        agent
            .put_ok("/v1/agent/service/deregister/redis1", None)
            .await,
        ""
    );
    assert_eq!(agent.get_json("/v1/agent/services").await, json!({}));
    assert_eq!(
        agent.get_json("/v1/agent/checks").await,
        json!({}),
        "checks go with it"
    );
    let r = agent.put("/v1/agent/service/deregister/redis1", None).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.text().await.unwrap(),
        r#"Unknown service ID "redis1". Ensure that the service ID is passed, not the service name."#
    );
    agent.stop().await;
}

#[tokio::test]
async fn replace_existing_checks_drops_the_old_ones() {
    let agent = TestAgent::start(Options::default()).await;
    let two = json!({"ID": "web", "Name": "web", "Checks": [
        {"CheckID": "a", "TTL": "30s"}, {"CheckID": "b", "TTL": "30s"}
    ]});
    agent.put_ok("/v1/agent/service/register", Some(two)).await;
    agent.put_ok("/v1/agent/check/pass/a?note=up", None).await;
    let one = json!({"ID": "web", "Name": "web", "Checks": [{"CheckID": "a", "TTL": "30s"}]});
    agent
        .put_ok("/v1/agent/service/register", Some(one.clone()))
        .await;
    let checks = agent.get_json("/v1/agent/checks").await;
    assert!(
        checks.get("b").is_some(),
        "kept without replace-existing-checks"
    );
    assert_eq!(
        checks["a"]["Status"], "passing",
        "a re-registered check keeps its state"
    );
    agent
        .put_ok(
            "/v1/agent/service/register?replace-existing-checks",
            Some(one),
        )
        .await;
    let checks = agent.get_json("/v1/agent/checks").await;
    assert!(checks.get("b").is_none());
    assert!(checks.get("a").is_some());
    agent.stop().await;
}

#[tokio::test]
async fn checks_and_ttl_endpoints() {
    let agent = TestAgent::start(Options::default()).await;
    agent
        .put_ok(
            "/v1/agent/check/register",
            Some(json!({"Name": "mem", "TTL": "30s", "Notes": "n"})),
        )
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = listener.local_addr().unwrap().to_string();
    agent
        .put_ok(
            "/v1/agent/check/register",
            Some(json!({"ID": "port", "Name": "port", "TCP": tcp, "Interval": "10s"})),
        )
        .await;

    let status = |checks: &Value, id: &str| {
        (
            checks[id]["Status"].as_str().unwrap().to_owned(),
            checks[id]["Output"].as_str().unwrap().to_owned(),
        )
    };
    agent
        .put_ok("/v1/agent/check/pass/mem?note=all%20good", None)
        .await;
    let checks = agent.get_json("/v1/agent/checks").await;
    assert_eq!(
        status(&checks, "mem"),
        ("passing".into(), "all good".into())
    );
    assert_eq!(checks["mem"]["Notes"], "n");
    agent.put_ok("/v1/agent/check/warn/mem", None).await;
    let checks = agent.get_json("/v1/agent/checks").await;
    assert_eq!(status(&checks, "mem"), ("warning".into(), String::new()));
    agent
        .put_ok("/v1/agent/check/fail/mem?note=down", None)
        .await;
    let checks = agent.get_json("/v1/agent/checks").await;
    assert_eq!(status(&checks, "mem"), ("critical".into(), "down".into()));
    agent
        .put_ok(
            "/v1/agent/check/update/mem",
            Some(json!({"status": "warning", "OUTPUT": "slow"})),
        )
        .await;
    let checks = agent.get_json("/v1/agent/checks").await;
    assert_eq!(status(&checks, "mem"), ("warning".into(), "slow".into()));

    let r = agent
        .put(
            "/v1/agent/check/update/mem",
            Some(json!({"Status": "bogus"})),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "Invalid check status: 'bogus'");
    let r = agent.put("/v1/agent/check/pass/port", None).await;
    assert_eq!(r.status(), 500);
    assert_eq!(
        r.text().await.unwrap(),
        r#"CheckID "port" does not have associated TTL"#
    );
    // An unknown check is "not a TTL check", a 500 that clients (Spring Cloud Consul,
    // go-kit) match to re-register after an agent restart.
    for path in [
        "/v1/agent/check/pass/nope",
        "/v1/agent/check/warn/nope",
        "/v1/agent/check/fail/nope",
    ] {
        let r = agent.put(path, None).await;
        assert_eq!(r.status(), 500, "{path}");
        assert_eq!(
            r.text().await.unwrap(),
            r#"CheckID "nope" does not have associated TTL"#,
            "{path}"
        );
    }
    let r = agent
        .put(
            "/v1/agent/check/update/nope",
            Some(json!({"Status": "passing"})),
        )
        .await;
    assert_eq!(r.status(), 500);
    assert_eq!(
        r.text().await.unwrap(),
        r#"CheckID "nope" does not have associated TTL"#
    );
    let r = agent
        .put(
            "/v1/agent/check/register",
            Some(json!({"Name": "x", "TTL": "1s", "ServiceID": "nope"})),
        )
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.text().await.unwrap(),
        r#"ServiceID "nope" does not exist"#
    );

    assert_eq!(
        agent.put_ok("/v1/agent/check/deregister/mem", None).await,
        ""
    );
    let r = agent.put("/v1/agent/check/deregister/mem", None).await;
    assert_eq!(r.status(), 404);
    drop(listener);
    agent.stop().await;
}

#[tokio::test]
async fn unsupported_check_types_register_always_critical() {
    let agent = TestAgent::start(Options::default()).await;
    let output =
        |t: &str| format!("muster does not support {t} checks yet; this check is always critical");
    // Standalone, even when it asks to start passing.
    agent
        .put_ok(
            "/v1/agent/check/register",
            Some(json!({"ID": "g", "Name": "grpc", "GRPC": "127.0.0.1:9000",
                        "GRPCUseTLS": true, "Interval": "10s", "Status": "passing"})),
        )
        .await;
    // Embedded in a service: the service must never look healthy because of it.
    agent
        .put_ok(
            "/v1/agent/service/register",
            Some(json!({"Name": "web", "Port": 80, "Checks": [
                {"CheckID": "web-alias", "AliasService": "db"},
                {"CheckID": "web-udp", "UDP": "127.0.0.1:53", "Interval": "10s"}]})),
        )
        .await;
    let checks = agent.get_json("/v1/agent/checks").await;
    for (id, t) in [("g", "grpc"), ("web-alias", "alias"), ("web-udp", "udp")] {
        assert_eq!(checks[id]["Status"], "critical", "{id}");
        assert_eq!(checks[id]["Type"], t, "{id}");
        assert_eq!(checks[id]["Output"], output(t).as_str(), "{id}");
    }
    assert_eq!(checks["g"]["Definition"]["GRPC"], "127.0.0.1:9000");
    assert_eq!(checks["web-alias"]["Definition"]["AliasService"], "db");
    let r = agent.get("/v1/agent/health/service/name/web").await;
    assert_eq!(r.status(), 503);
    // The catalog has them too, as registered.
    let checks = wait_until(
        "unsupported checks in the catalog",
        Duration::from_secs(10),
        || async {
            let checks = agent.get_json("/v1/health/checks/web").await;
            (checks.as_array().unwrap().len() == 2).then_some(checks)
        },
    )
    .await;
    for c in checks.as_array().unwrap() {
        assert_eq!(c["Status"], "critical");
        assert!(
            c["Output"]
                .as_str()
                .unwrap()
                .starts_with("muster does not support")
        );
    }
    let node = agent.get_json(&format!("/v1/health/node/{NODE}")).await;
    let g = node
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "g")
        .expect("g in the catalog");
    assert_eq!(g["Type"], "grpc");
    // Not a TTL check: updates are refused as for any other non-TTL check.
    let r = agent.put("/v1/agent/check/pass/g", None).await;
    assert_eq!(r.status(), 500);
    assert_eq!(
        r.text().await.unwrap(),
        r#"CheckID "g" does not have associated TTL"#
    );
    // Still validated: an alias check takes no interval.
    let r = agent
        .put(
            "/v1/agent/check/register",
            Some(json!({"Name": "a", "AliasNode": "n2", "Interval": "10s"})),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.text().await.unwrap(),
        "Interval cannot be set for Alias checks"
    );
    // Persisted like any API registration, and still never run after a restart.
    let agent = agent.restart().await;
    let checks = agent.get_json("/v1/agent/checks").await;
    assert_eq!(checks["g"]["Status"], "critical");
    assert_eq!(checks["g"]["Output"], output("grpc").as_str());
    assert_eq!(checks["web-alias"]["Type"], "alias");
    agent.stop().await;
}

#[tokio::test]
async fn script_checks_are_refused_over_the_api() {
    let agent = TestAgent::start(Options::default()).await;
    let text = "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true";
    let r = agent
        .put(
            "/v1/agent/check/register",
            Some(json!({"Name": "s", "Args": ["/bin/true"], "Interval": "10s"})),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), text);
    let r = agent
        .put(
            "/v1/agent/service/register",
            Some(json!({"Name": "s", "Check": {"Args": ["/bin/true"], "Interval": "10s"}})),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), text);
    assert_eq!(agent.get_json("/v1/agent/checks").await, json!({}));
    agent.stop().await;
}

#[tokio::test]
async fn bad_requests_get_clear_400s_and_bodies_are_bounded() {
    let agent = TestAgent::start(Options::default()).await;
    let raw = |body: &'static str| {
        agent
            .client
            .put(agent.url("/v1/agent/service/register"))
            .body(body)
            .send()
    };
    let r = raw("{not json").await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .starts_with("Request decode failed: ")
    );
    let r = raw("").await.unwrap();
    assert_eq!(r.text().await.unwrap(), "Request decode failed: EOF");
    for (body, want) in [
        (json!({"Port": 1}), "Missing service name"),
        (
            json!({"Name": "a", "Address": "0.0.0.0"}),
            "Invalid service address",
        ),
        (
            json!({"Name": "a", "Check": {"TCP": "localhost:1"}}),
            "Invalid check: Must provide TTL or Script/DockerContainerID/HTTP/TCP and Interval",
        ),
    ] {
        let r = agent.put("/v1/agent/service/register", Some(body)).await;
        assert_eq!(r.status(), 400);
        assert_eq!(r.text().await.unwrap(), want);
    }
    let r = agent
        .put(
            "/v1/agent/service/register",
            Some(json!({"Name": "a", "Port": "80"})),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .starts_with("Request decode failed: ")
    );
    let r = agent
        .put("/v1/agent/check/register", Some(json!({"TTL": "1s"})))
        .await;
    assert_eq!(r.text().await.unwrap(), "Missing check name");

    let big = format!("{{\"Name\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let r = agent
        .client
        .put(agent.url("/v1/agent/service/register"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    agent.stop().await;
}

#[tokio::test]
async fn maintenance_modes() {
    let agent = TestAgent::start(Options::default()).await;
    agent
        .put_ok(
            "/v1/agent/service/register",
            Some(ttl_service("web", "30s")),
        )
        .await;
    agent.put_ok("/v1/agent/check/pass/web-ttl", None).await;

    let r = agent.put("/v1/agent/maintenance", None).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "Missing value for enable");
    let r = agent
        .put("/v1/agent/maintenance?enable=perhaps", None)
        .await;
    assert_eq!(
        r.text().await.unwrap(),
        r#"Invalid value for enable: "perhaps""#
    );

    agent
        .put_ok(
            "/v1/agent/maintenance?enable=true&reason=kernel%20upgrade",
            None,
        )
        .await;
    let checks = agent.get_json("/v1/agent/checks").await;
    let m = &checks["_node_maintenance"];
    assert_eq!(m["Name"], "Node Maintenance Mode");
    assert_eq!(m["Status"], "critical");
    assert_eq!(m["Notes"], "kernel upgrade");
    assert_eq!(m["ServiceID"], "");
    // Every service on the node is out: the catalog gets the check too.
    let health = agent.get("/v1/agent/health/service/id/web").await;
    assert_eq!(health.status(), 503);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["AggregatedStatus"], "maintenance");
    wait_until(
        "node maintenance in the catalog",
        Duration::from_secs(10),
        || async {
            agent
                .catalog_checks()
                .await
                .get("_node_maintenance")
                .map(|_| ())
        },
    )
    .await;
    agent
        .put_ok("/v1/agent/maintenance?enable=false", None)
        .await;
    assert!(
        agent
            .get_json("/v1/agent/checks")
            .await
            .get("_node_maintenance")
            .is_none()
    );

    let r = agent
        .put("/v1/agent/service/maintenance/nope?enable=true", None)
        .await;
    assert_eq!(r.status(), 404);
    agent
        .put_ok("/v1/agent/service/maintenance/web?enable=true", None)
        .await;
    let checks = agent.get_json("/v1/agent/checks").await;
    let m = &checks["_service_maintenance:web"];
    assert_eq!(m["Name"], "Service Maintenance Mode");
    assert_eq!(m["ServiceID"], "web");
    assert_eq!(
        m["Notes"],
        "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."
    );
    // Enabling again keeps the first reason (Consul does the same).
    agent
        .put_ok(
            "/v1/agent/service/maintenance/web?enable=true&reason=other",
            None,
        )
        .await;
    let checks = agent.get_json("/v1/agent/checks").await;
    assert!(
        checks["_service_maintenance:web"]["Notes"]
            .as_str()
            .unwrap()
            .starts_with("Maintenance mode is enabled")
    );
    wait_until(
        "service maintenance in the catalog",
        Duration::from_secs(10),
        || async {
            agent
                .catalog_checks()
                .await
                .get("_service_maintenance:web")
                .map(|_| ())
        },
    )
    .await;
    agent
        .put_ok("/v1/agent/service/maintenance/web?enable=false", None)
        .await;
    wait_until(
        "service maintenance leaves the catalog",
        Duration::from_secs(10),
        || async {
            agent
                .catalog_checks()
                .await
                .get("_service_maintenance:web")
                .is_none()
                .then_some(())
        },
    )
    .await;
    agent.stop().await;
}

#[tokio::test]
async fn agent_health_endpoints_answer_by_aggregated_status() {
    let agent = TestAgent::start(Options::default()).await;
    agent
        .put_ok(
            "/v1/agent/service/register",
            Some(ttl_service("web1", "30s")),
        )
        .await;
    agent
        .put_ok(
            "/v1/agent/service/register",
            Some(ttl_service("web2", "30s")),
        )
        .await;

    let r = agent.get("/v1/agent/health/service/id/web1").await;
    assert_eq!(r.status(), 503, "checks start critical");
    agent.put_ok("/v1/agent/check/pass/web1-ttl", None).await;
    let r = agent.get("/v1/agent/health/service/id/web1").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["AggregatedStatus"], "passing");
    assert_eq!(body["Service"]["ID"], "web1");
    assert_eq!(body["Checks"][0]["CheckID"], "web1-ttl");
    agent.put_ok("/v1/agent/check/warn/web1-ttl", None).await;
    let r = agent
        .get("/v1/agent/health/service/id/web1?format=text")
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.text().await.unwrap(), "warning");

    // By name: the worst instance wins (web2 is still critical).
    let r = agent.get("/v1/agent/health/service/name/web").await;
    assert_eq!(r.status(), 503);
    let list: Value = r.json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    agent.put_ok("/v1/agent/check/pass/web2-ttl", None).await;
    let r = agent
        .get("/v1/agent/health/service/name/web?format=text")
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.text().await.unwrap(), "warning");

    let r = agent
        .get("/v1/agent/health/service/name/nope?format=text")
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), "ServiceName nope Not Found");
    let r = agent.get("/v1/agent/health/service/id/nope").await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["AggregatedStatus"], "critical");
    agent.stop().await;
}

#[tokio::test]
async fn unknown_paths_wrong_methods_and_options() {
    let agent = TestAgent::start(Options::default()).await;
    let r = agent.get("/v1/nope").await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.text().await.unwrap(),
        "Invalid URL path: not a recognized HTTP API endpoint\n"
    );
    let r = agent.get("/elsewhere").await;
    assert_eq!(r.status(), 404);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("ensure the path starts with '/v1/'")
    );

    let r = agent
        .client
        .post(agent.url("/v1/agent/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "OPTIONS,GET");
    assert_eq!(r.text().await.unwrap(), "method POST not allowed");
    let r = agent.get("/v1/agent/service/register").await;
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "OPTIONS,PUT");
    let r = agent
        .client
        .request(reqwest::Method::OPTIONS, agent.url("/v1/catalog/register"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["allow"], "OPTIONS,PUT");

    let pretty = agent
        .get("/v1/agent/members?pretty")
        .await
        .text()
        .await
        .unwrap();
    assert!(pretty.starts_with("[\n    {\n        \"Name\""), "{pretty}");
    assert!(pretty.ends_with("]\n"));
    agent.stop().await;
}

#[tokio::test]
async fn reload_and_leave_go_through_the_runtime() {
    let agent = TestAgent::start(Options::default()).await;
    assert_eq!(agent.put_ok("/v1/agent/reload", None).await, "");
    assert_eq!(agent.control.lock().reloads, 1);
    *agent.reload_reply.lock() = Err("config: bad key".into());
    let r = agent.put("/v1/agent/reload", None).await;
    assert_eq!(r.status(), 500);
    assert_eq!(r.text().await.unwrap(), "config: bad key");
    assert_eq!(agent.put_ok("/v1/agent/leave", None).await, "");
    assert_eq!(agent.control.lock().leaves, 1);
    agent.stop().await;
}
