//! `/v1/catalog/*` and `/v1/status/*`: writes, reads, headers, consistency, `?dc`, and a
//! client agent without servers.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{NODE, Options, TestAgent, wait_until};

#[tokio::test]
async fn catalog_register_deregister_and_reads() {
    let agent = TestAgent::start(Options::default()).await;
    // Lower-case and snake_case keys, as Go's decoder accepts them.
    let body = json!({
        "node": "ext1", "address": "10.1.0.1", "node_meta": {"rack": "b"},
        "tagged_addresses": {"wan": "192.0.2.1"},
        "service": {"id": "redis1", "service": "redis", "tags": ["v1", "primary"], "port": 6379,
                    "meta": {"version": "7"}},
        "check": {"check_id": "redis-alive", "name": "redis", "status": "passing",
                  "service_id": "redis1", "definition": {"tcp": "10.1.0.1:6379", "interval": "10s"}}
    });
    assert_eq!(
        agent.put_ok("/v1/catalog/register", Some(body)).await,
        "true"
    );

    let nodes = agent.get_json("/v1/catalog/nodes").await;
    let ext = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["Node"] == "ext1")
        .expect("ext1 listed");
    for field in [
        "ID",
        "Node",
        "Address",
        "Datacenter",
        "TaggedAddresses",
        "Meta",
        "CreateIndex",
        "ModifyIndex",
    ] {
        assert!(ext.get(field).is_some(), "node field {field}");
    }
    assert_eq!(ext["Datacenter"], "dc1");
    assert_eq!(ext["Meta"], json!({"rack": "b"}));
    let by_meta = agent.get_json("/v1/catalog/nodes?node-meta=rack:b").await;
    assert_eq!(by_meta.as_array().unwrap().len(), 1);
    let filtered = agent
        .get_json("/v1/catalog/nodes?filter=Meta.rack%20%3D%3D%20%22b%22")
        .await;
    assert_eq!(filtered[0]["Node"], "ext1");
    assert_eq!(filtered.as_array().unwrap().len(), 1);

    let services = agent.get_json("/v1/catalog/services").await;
    assert_eq!(services["redis"], json!(["primary", "v1"]));
    let services = agent
        .get_json("/v1/catalog/services?filter=ServiceMeta.version%20%3D%3D%20%226%22")
        .await;
    assert_eq!(services, json!({}));

    let rows = agent
        .get_json("/v1/catalog/service/redis?tag=v1&tag=primary")
        .await;
    let row = &rows[0];
    assert_eq!(row["Node"], "ext1");
    assert_eq!(row["ServiceID"], "redis1");
    assert_eq!(row["ServiceName"], "redis");
    assert_eq!(row["ServicePort"], 6379);
    assert_eq!(row["ServiceTags"], json!(["v1", "primary"]));
    assert_eq!(row["NodeMeta"], json!({"rack": "b"}));
    assert_eq!(row["ServiceWeights"], json!({"Passing": 1, "Warning": 1}));
    assert_eq!(
        agent.get_json("/v1/catalog/service/redis?tag=v2").await,
        json!([])
    );
    assert_eq!(agent.get_json("/v1/catalog/service/nope").await, json!([]));

    let node = agent.get_json("/v1/catalog/node/ext1").await;
    assert_eq!(node["Node"]["Node"], "ext1");
    assert_eq!(node["Services"]["redis1"]["Service"], "redis");
    // `?filter` sees each NodeService (the object's values), never the (ID, service) pairs.
    let kept = agent
        .get_json("/v1/catalog/node/ext1?filter=Service%20%3D%3D%20%22redis%22")
        .await;
    assert_eq!(kept["Services"]["redis1"]["Port"], 6379);
    let dropped = agent
        .get_json("/v1/catalog/node/ext1?filter=Port%20%3D%3D%201")
        .await;
    assert_eq!(dropped["Node"]["Node"], "ext1");
    assert_eq!(dropped["Services"], json!({}));
    assert_eq!(
        agent.get_json("/v1/catalog/node/missing").await,
        Value::Null
    );
    let list = agent.get_json("/v1/catalog/node-services/ext1").await;
    assert_eq!(list["Services"][0]["ID"], "redis1");
    assert_eq!(
        agent.get_json("/v1/catalog/node-services/missing").await,
        json!({"Node": null, "Services": []})
    );
    let checks = agent.get_json("/v1/health/node/ext1").await;
    assert_eq!(checks[0]["CheckID"], "redis-alive");
    assert_eq!(checks[0]["Definition"]["TCP"], "10.1.0.1:6379");
    assert_eq!(checks[0]["Type"], "tcp");

    let dereg = json!({"Node": "ext1", "ServiceID": "redis1"});
    assert_eq!(
        agent.put_ok("/v1/catalog/deregister", Some(dereg)).await,
        "true"
    );
    assert_eq!(agent.get_json("/v1/catalog/service/redis").await, json!([]));
    assert_eq!(
        agent.get_json("/v1/health/node/ext1").await,
        json!([]),
        "checks go with it"
    );
    assert_eq!(
        agent
            .put_ok("/v1/catalog/deregister", Some(json!({"node": "ext1"})))
            .await,
        "true"
    );
    assert_eq!(agent.get_json("/v1/catalog/node/ext1").await, Value::Null);
    agent.stop().await;
}

#[tokio::test]
async fn headers_consistency_datacenters_status_and_dc() {
    let agent = TestAgent::start(Options::default()).await;
    wait_until(
        "this node in the catalog",
        Duration::from_secs(10),
        || async {
            let nodes = agent.get_json("/v1/catalog/nodes").await;
            nodes
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["Node"] == NODE)
                .then_some(())
        },
    )
    .await;
    let r = agent.get("/v1/catalog/nodes").await;
    let h = r.headers();
    let index: u64 = h["x-consul-index"].to_str().unwrap().parse().unwrap();
    assert!(index >= 1);
    assert_eq!(h["x-consul-knownleader"], "true");
    assert_eq!(h["x-consul-lastcontact"], "0");
    assert_eq!(h["x-consul-effective-consistency"], "leader");
    assert_eq!(h["content-type"], "application/json");
    let r = agent.get("/v1/catalog/nodes?stale").await;
    assert_eq!(r.headers()["x-consul-effective-consistency"], "stale");
    let r = agent.get("/v1/catalog/nodes?consistent").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-consul-effective-consistency"], "consistent");
    let r = agent.get("/v1/catalog/nodes?stale&consistent").await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.text().await.unwrap(),
        "Cannot specify ?stale with ?consistent, conflicting semantics."
    );
    for (path, want) in [
        ("/v1/catalog/nodes?index=x", "Invalid index"),
        ("/v1/catalog/nodes?index=1&wait=5", "Invalid wait time"),
        (
            "/v1/catalog/nodes?filter=Nope%20%3D%3D%201",
            r#"Invalid filter expression: Selector "Nope" is not valid"#,
        ),
    ] {
        let r = agent.get(path).await;
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(r.text().await.unwrap(), want, "{path}");
    }

    assert_eq!(
        agent.get_json("/v1/catalog/datacenters").await,
        json!(["dc1"])
    );
    let leader = agent.get_json("/v1/status/leader").await;
    assert!(
        leader.as_str().unwrap().starts_with("127.0.0.1:"),
        "{leader}"
    );
    let peers = agent.get_json("/v1/status/peers").await;
    assert_eq!(peers, json!([leader]));

    for path in [
        "/v1/catalog/nodes?dc=dc2",
        "/v1/health/service/web?dc=DC2",
        "/v1/status/leader?dc=x",
    ] {
        let r = agent.get(path).await;
        assert_eq!(r.status(), 500, "{path}");
        assert_eq!(r.text().await.unwrap(), "No path to datacenter");
    }
    assert_eq!(agent.get("/v1/catalog/nodes?dc=dc1").await.status(), 200);
    let r = agent
        .put(
            "/v1/catalog/register",
            Some(json!({"Node": "x", "Address": "10.0.0.9", "Datacenter": "dc9"})),
        )
        .await;
    assert_eq!(r.status(), 500);
    assert_eq!(r.text().await.unwrap(), "No path to datacenter");

    let r = agent
        .put("/v1/catalog/register", Some(json!({"Address": "10.0.0.9"})))
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "Must provide node");
    let r = agent
        .client
        .put(agent.url("/v1/catalog/register"))
        .body("[1,")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .starts_with("Request decode failed: ")
    );
    let r = agent
        .put(
            "/v1/catalog/register",
            Some(json!({"Node": "x", "Address": 5})),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .starts_with("Request decode failed: ")
    );
    agent.stop().await;
}

#[tokio::test]
async fn client_agent_without_servers_answers_no_known_servers() {
    let agent = TestAgent::start(Options {
        catalog: false,
        ..Options::default()
    })
    .await;
    for path in [
        "/v1/catalog/nodes",
        "/v1/catalog/service/web",
        "/v1/health/service/web",
        "/v1/health/state/any",
        "/v1/status/leader",
    ] {
        let r = agent.get(path).await;
        assert_eq!(r.status(), 500, "{path}");
        assert_eq!(r.text().await.unwrap(), "No known Consul servers", "{path}");
    }
    let r = agent
        .put(
            "/v1/catalog/register",
            Some(json!({"Node": "x", "Address": "10.0.0.1"})),
        )
        .await;
    assert_eq!(r.text().await.unwrap(), "No known Consul servers");
    // The agent's own endpoints work: it is the source of truth for its services.
    agent
        .put_ok("/v1/agent/service/register", Some(json!({"Name": "web"})))
        .await;
    assert_eq!(
        agent.get_json("/v1/agent/services").await["web"]["Service"],
        "web"
    );
    agent.stop().await;
}

#[tokio::test]
async fn default_reads_without_a_leader_fail_at_once_stale_reads_answer() {
    let agent = TestAgent::start(Options {
        bootstrap: false,
        ..Options::default()
    })
    .await;
    let started = std::time::Instant::now();
    for path in [
        "/v1/catalog/nodes",
        "/v1/health/service/web",
        // A blocking query does not wait on a replica that no leader updates.
        "/v1/catalog/services?index=7&wait=30s",
    ] {
        let r = agent.get(path).await;
        assert_eq!(r.status(), 500, "{path}");
        assert_eq!(r.text().await.unwrap(), "No cluster leader", "{path}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered at once, took {:?}",
        started.elapsed()
    );
    let r = agent.get("/v1/catalog/nodes?stale").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-consul-effective-consistency"], "stale");
    assert_eq!(r.headers()["x-consul-knownleader"], "false");
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
    agent.stop().await;
}
