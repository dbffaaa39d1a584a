//! The `/v1` HTTP API through the real binary: every endpoint of issue part 6 at least once,
//! with Consul's field names (exact key sets), status codes, error texts, headers, blocking
//! queries and the `filter`, `passing`, `tag` and `node-meta` parameters.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::dev::CHECK_KEYS;
use crate::support::{Agent, Resp, assert_keys, wait_for, wait_some};

const MEMBER_KEYS: [&str; 11] = [
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
];
const AGENT_SERVICE_KEYS: [&str; 10] = [
    "ID",
    "Service",
    "Tags",
    "Meta",
    "Port",
    "Address",
    "TaggedAddresses",
    "Weights",
    "EnableTagOverride",
    "Datacenter",
];
const NODE_KEYS: [&str; 8] = [
    "ID",
    "Node",
    "Address",
    "Datacenter",
    "TaggedAddresses",
    "Meta",
    "CreateIndex",
    "ModifyIndex",
];
const NODE_SERVICE_KEYS: [&str; 11] = [
    "ID",
    "Service",
    "Tags",
    "Address",
    "TaggedAddresses",
    "Meta",
    "Port",
    "Weights",
    "EnableTagOverride",
    "CreateIndex",
    "ModifyIndex",
];
const CATALOG_SERVICE_KEYS: [&str; 20] = [
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
];

#[track_caller]
fn assert_error(r: &Resp, status: u16, text: &str) {
    assert_eq!(
        (r.status, r.text.trim_end()),
        (status, text),
        "{:?}",
        r.headers
    );
    let ct = r.header("Content-Type").unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "errors are text: {ct}");
}

/// The sorted values of `field` in a JSON list.
fn column(v: &Value, field: &str) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("a list: {v}"))
        .iter()
        .map(|e| {
            let f = e.pointer(field).unwrap_or(&e[field]);
            f.as_str().unwrap_or_default().to_owned()
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn agent_endpoints() {
    let agent = Agent::start(&["-node-meta=rack:r1"], &[]).await;
    let node = agent.node().to_owned();

    let me = agent.get_json("/v1/agent/self").await;
    assert_keys(&me, &["Config", "DebugConfig", "Member", "Meta", "Stats"]);
    assert_keys(
        &me["Config"],
        &[
            "Datacenter",
            "PrimaryDatacenter",
            "NodeName",
            "NodeID",
            "Revision",
            "Server",
            "Version",
        ],
    );
    assert_eq!(me["Config"]["NodeName"], node.as_str());
    assert_eq!(me["Config"]["Server"], true);
    assert_eq!(me["Meta"], json!({"rack": "r1"}));
    assert_keys(&me["Member"], &MEMBER_KEYS);
    assert_eq!(me["Stats"]["raft"]["state"], "Leader");

    let members = agent.get_json("/v1/agent/members").await;
    assert_eq!(members.as_array().map(Vec::len), Some(1), "{members}");
    let m = &members[0];
    assert_keys(m, &MEMBER_KEYS);
    assert_eq!(
        (m["Name"].as_str(), m["Status"].as_u64()),
        (Some(node.as_str()), Some(1))
    );
    assert_eq!(m["Tags"]["role"], "consul");
    assert_eq!(m["Tags"]["dc"], "dc1");

    // Registration bodies are read as Consul reads them: snake_case and PascalCase alike.
    let r = agent
        .put(
            "/v1/agent/service/register",
            Some(&json!({
                "name": "api", "id": "api-1", "port": 8080, "tags": ["v1", "blue"],
                "meta": {"version": "1"},
                "check": {"check_id": "api-ttl", "name": "api ttl", "ttl": "30s"},
            })),
        )
        .await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (200, ""),
        "agent writes: 200, empty body"
    );
    agent
        .put_ok(
            "/v1/agent/service/register",
            Some(&json!({
                "Name": "api", "ID": "api-2", "Port": 8081, "Tags": ["v1", "green"],
                "Check": {"CheckID": "api-2-tcp", "Name": "tcp", "TCP": "127.0.0.1:9", "Interval": "30s"},
            })),
        )
        .await;

    let services = agent.get_json("/v1/agent/services").await;
    let obj = services.as_object().expect("a map");
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["api-1", "api-2"]);
    for s in obj.values() {
        assert_keys(s, &AGENT_SERVICE_KEYS);
    }
    assert_eq!(services["api-1"]["Tags"], json!(["v1", "blue"]));
    assert_eq!(
        services["api-1"]["Weights"],
        json!({"Passing": 1, "Warning": 1})
    );
    let filtered = agent
        .get_json("/v1/agent/services?filter=Tags%20contains%20%22green%22")
        .await;
    assert_eq!(
        filtered.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["api-2"]
    );

    let one = agent.get("/v1/agent/service/api-1").await;
    assert_eq!(one.status, 200);
    let mut keys = AGENT_SERVICE_KEYS.to_vec();
    keys.push("ContentHash");
    assert_keys(&one.json(), &keys);
    assert_eq!(
        one.header("X-Consul-ContentHash"),
        one.json()["ContentHash"].as_str()
    );
    assert_error(
        &agent.get("/v1/agent/service/nope").await,
        404,
        "unknown service ID: nope",
    );

    // A node-level check, and the TTL updates.
    agent
        .put_ok(
            "/v1/agent/check/register",
            Some(&json!({"Name": "disk", "TTL": "1m", "Notes": "root fs"})),
        )
        .await;
    let checks = agent.get_json("/v1/agent/checks").await;
    let mut ids: Vec<&String> = checks.as_object().unwrap().keys().collect();
    ids.sort();
    assert_eq!(ids, ["api-2-tcp", "api-ttl", "disk"]);
    for c in checks.as_object().unwrap().values() {
        assert_keys(c, &CHECK_KEYS);
    }
    assert_eq!(
        checks["disk"]["Status"], "critical",
        "checks start critical"
    );
    assert_eq!(checks["disk"]["Type"], "ttl");
    assert_eq!(checks["api-ttl"]["ServiceID"], "api-1");
    assert_eq!(checks["api-2-tcp"]["Type"], "tcp");

    let status = |id: &'static str| {
        let agent = &agent;
        async move {
            let c = agent.get_json("/v1/agent/checks").await;
            (
                c[id]["Status"].as_str().unwrap_or_default().to_owned(),
                c[id]["Output"].as_str().unwrap_or_default().to_owned(),
            )
        }
    };
    agent
        .put_ok("/v1/agent/check/warn/api-ttl?note=slow", None)
        .await;
    assert_eq!(status("api-ttl").await, ("warning".into(), "slow".into()));
    agent
        .put_ok("/v1/agent/check/fail/api-ttl?note=down", None)
        .await;
    assert_eq!(status("api-ttl").await, ("critical".into(), "down".into()));
    agent.put_ok("/v1/agent/check/pass/api-ttl", None).await;
    assert_eq!(status("api-ttl").await.0, "passing");
    agent
        .put_ok(
            "/v1/agent/check/update/api-ttl",
            Some(&json!({"Status": "warning", "Output": "almost full"})),
        )
        .await;
    assert_eq!(
        status("api-ttl").await,
        ("warning".into(), "almost full".into())
    );
    assert_error(
        &agent
            .put(
                "/v1/agent/check/update/api-ttl",
                Some(&json!({"Status": "bogus"})),
            )
            .await,
        400,
        "Invalid check status: 'bogus'",
    );
    // The text clients match on to re-register: a check without a TTL.
    assert_error(
        &agent.put("/v1/agent/check/pass/api-2-tcp", None).await,
        500,
        r#"CheckID "api-2-tcp" does not have associated TTL"#,
    );

    agent.put_ok("/v1/agent/check/deregister/disk", None).await;
    assert_error(
        &agent.put("/v1/agent/check/deregister/disk", None).await,
        404,
        r#"Unknown check ID "disk". Ensure that the check ID is passed, not the check name."#,
    );
    agent
        .put_ok("/v1/agent/service/deregister/api-2", None)
        .await;
    assert_error(
        &agent.put("/v1/agent/service/deregister/api-2", None).await,
        404,
        r#"Unknown service ID "api-2". Ensure that the service ID is passed, not the service name."#,
    );
    let services = agent.get_json("/v1/agent/services").await;
    assert_eq!(
        services.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["api-1"]
    );
    let checks = agent.get_json("/v1/agent/checks").await;
    assert_eq!(
        checks.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["api-ttl"],
        "a service's checks go with it"
    );

    // Reload re-reads the config; the runtime logs it.
    agent.put_ok("/v1/agent/reload", None).await;
    wait_for("the reload log line", Duration::from_secs(10), || async {
        agent.stderr.contains("configuration reloaded")
    })
    .await;
}

/// Registers `db` on two external nodes: ext-a (rack a, tag primary, check passing) and
/// ext-b (rack b, tag replica, check critical).
async fn register_two_db_nodes(agent: &Agent) {
    for (node, rack, tag, status, addr) in [
        ("ext-a", "a", "primary", "passing", "192.0.2.1"),
        ("ext-b", "b", "replica", "critical", "192.0.2.2"),
    ] {
        let r = agent
            .put(
                "/v1/catalog/register",
                Some(&json!({
                    "Node": node, "Address": addr, "NodeMeta": {"rack": rack},
                    "Service": {"ID": "db", "Service": "db", "Tags": [tag], "Port": 5432},
                    "Check": {"CheckID": "db-check", "Name": "db alive", "Status": status,
                              "ServiceID": "db"},
                })),
            )
            .await;
        assert_eq!(
            (r.status, r.text.trim()),
            (200, "true"),
            "catalog writes answer true"
        );
    }
}

#[tokio::test]
async fn catalog_and_status_endpoints() {
    let agent = Agent::start(&[], &[]).await;
    let node = agent.node().to_owned();
    register_two_db_nodes(&agent).await;

    assert_eq!(
        agent.get_json("/v1/catalog/datacenters").await,
        json!(["dc1"])
    );
    let leader = agent.get_json("/v1/status/leader").await;
    assert_eq!(leader, agent.server.unwrap().to_string().as_str());
    assert_eq!(agent.get_json("/v1/status/peers").await, json!([leader]));

    let nodes = agent.get("/v1/catalog/nodes").await;
    assert_eq!(nodes.status, 200);
    assert_eq!(nodes.header("X-Consul-KnownLeader"), Some("true"));
    assert_eq!(nodes.header("X-Consul-LastContact"), Some("0"));
    assert_eq!(
        nodes.header("X-Consul-Effective-Consistency"),
        Some("leader")
    );
    assert!(nodes.index() > 0);
    let nodes = nodes.json();
    let mut want = vec!["ext-a".to_owned(), "ext-b".to_owned(), node.clone()];
    want.sort();
    assert_eq!(column(&nodes, "Node"), want);
    for n in nodes.as_array().unwrap() {
        assert_keys(n, &NODE_KEYS);
    }
    let by_meta = agent.get_json("/v1/catalog/nodes?node-meta=rack:a").await;
    assert_eq!(column(&by_meta, "Node"), ["ext-a"]);
    let by_filter = agent
        .get_json("/v1/catalog/nodes?filter=Meta.rack%20%3D%3D%20%22b%22")
        .await;
    assert_eq!(column(&by_filter, "Node"), ["ext-b"]);
    let stale = agent.get("/v1/catalog/nodes?stale").await;
    assert_eq!(
        stale.header("X-Consul-Effective-Consistency"),
        Some("stale")
    );
    let consistent = agent.get("/v1/catalog/nodes?consistent").await;
    assert_eq!(
        consistent.header("X-Consul-Effective-Consistency"),
        Some("consistent")
    );

    assert_eq!(
        agent.get_json("/v1/catalog/services").await,
        json!({"consul": [], "db": ["primary", "replica"]})
    );
    assert_eq!(
        agent
            .get_json("/v1/catalog/services?node-meta=rack:a")
            .await,
        json!({"db": ["primary"]})
    );

    let rows = agent.get_json("/v1/catalog/service/db").await;
    assert_eq!(column(&rows, "Node"), ["ext-a", "ext-b"]);
    for row in rows.as_array().unwrap() {
        assert_keys(row, &CATALOG_SERVICE_KEYS);
        assert_eq!(row["ServicePort"], 5432);
    }
    let tagged = agent.get_json("/v1/catalog/service/db?tag=replica").await;
    assert_eq!(column(&tagged, "Node"), ["ext-b"]);
    let both_tags = agent
        .get_json("/v1/catalog/service/db?tag=replica&tag=primary")
        .await;
    assert_eq!(both_tags, json!([]), "every tag must match");
    let meta = agent
        .get_json("/v1/catalog/service/db?node-meta=rack:a")
        .await;
    assert_eq!(column(&meta, "Node"), ["ext-a"]);
    let filtered = agent
        .get_json("/v1/catalog/service/db?filter=ServiceTags%20contains%20%22primary%22")
        .await;
    assert_eq!(column(&filtered, "Node"), ["ext-a"]);

    let n = agent.get_json("/v1/catalog/node/ext-a").await;
    assert_keys(&n, &["Node", "Services"]);
    assert_keys(&n["Node"], &NODE_KEYS);
    assert_keys(&n["Services"]["db"], &NODE_SERVICE_KEYS);
    assert_eq!(
        agent.get_json("/v1/catalog/node/missing").await,
        Value::Null
    );
    let ns = agent.get_json("/v1/catalog/node-services/ext-a").await;
    assert_keys(&ns, &["Node", "Services"]);
    assert_eq!(ns["Services"].as_array().map(Vec::len), Some(1));
    assert_keys(&ns["Services"][0], &NODE_SERVICE_KEYS);
    assert_eq!(
        agent.get_json("/v1/catalog/node-services/missing").await,
        json!({"Node": null, "Services": []})
    );

    // Deregister one service, then a whole node.
    let r = agent
        .put(
            "/v1/catalog/deregister",
            Some(&json!({"Node": "ext-b", "ServiceID": "db"})),
        )
        .await;
    assert_eq!((r.status, r.text.trim()), (200, "true"));
    let rows = agent.get_json("/v1/catalog/service/db").await;
    assert_eq!(column(&rows, "Node"), ["ext-a"]);
    assert!(!agent.get_json("/v1/catalog/node/ext-b").await.is_null());
    agent
        .put_ok("/v1/catalog/deregister", Some(&json!({"Node": "ext-b"})))
        .await;
    assert_eq!(agent.get_json("/v1/catalog/node/ext-b").await, Value::Null);
}

#[tokio::test]
async fn health_endpoints() {
    let agent = Agent::start(&[], &[]).await;
    let node = agent.node().to_owned();
    register_two_db_nodes(&agent).await;

    let all = agent.get("/v1/health/service/db").await;
    assert_eq!(all.status, 200);
    assert!(all.index() > 0);
    let all = all.json();
    assert_eq!(column(&all, "/Node/Node"), ["ext-a", "ext-b"]);
    for e in all.as_array().unwrap() {
        assert_keys(e, &["Node", "Service", "Checks"]);
        assert_keys(&e["Node"], &NODE_KEYS);
        assert_keys(&e["Service"], &NODE_SERVICE_KEYS);
        for c in e["Checks"].as_array().unwrap() {
            assert_keys(c, &CHECK_KEYS);
        }
    }
    let passing = agent.get_json("/v1/health/service/db?passing").await;
    assert_eq!(column(&passing, "/Node/Node"), ["ext-a"]);
    let passing_false = agent.get_json("/v1/health/service/db?passing=false").await;
    assert_eq!(passing_false.as_array().map(Vec::len), Some(2));
    let tagged = agent.get_json("/v1/health/service/db?tag=replica").await;
    assert_eq!(column(&tagged, "/Node/Node"), ["ext-b"]);
    let meta = agent
        .get_json("/v1/health/service/db?node-meta=rack:b")
        .await;
    assert_eq!(column(&meta, "/Node/Node"), ["ext-b"]);
    let filtered = agent
        .get_json("/v1/health/service/db?filter=Node.Meta.rack%20%3D%3D%20%22a%22")
        .await;
    assert_eq!(column(&filtered, "/Node/Node"), ["ext-a"]);

    let checks = agent.get_json("/v1/health/checks/db").await;
    assert_eq!(column(&checks, "Node"), ["ext-a", "ext-b"]);
    for c in checks.as_array().unwrap() {
        assert_keys(c, &CHECK_KEYS);
        assert_eq!(
            (&c["CheckID"], &c["ServiceName"]),
            (&json!("db-check"), &json!("db"))
        );
    }
    let critical = agent
        .get_json("/v1/health/checks/db?filter=Status%20%3D%3D%20%22critical%22")
        .await;
    assert_eq!(column(&critical, "Node"), ["ext-b"]);
    let by_meta = agent
        .get_json("/v1/health/checks/db?node-meta=rack:a")
        .await;
    assert_eq!(column(&by_meta, "Node"), ["ext-a"]);

    let on_node = agent.get_json("/v1/health/node/ext-b").await;
    assert_eq!(column(&on_node, "Status"), ["critical"]);
    let own = agent.get_json(&format!("/v1/health/node/{node}")).await;
    assert_eq!(column(&own, "CheckID"), ["serfHealth"]);

    let crit = agent.get_json("/v1/health/state/critical").await;
    assert_eq!(column(&crit, "Node"), ["ext-b"]);
    let pass = agent.get_json("/v1/health/state/passing").await;
    assert_eq!(column(&pass, "CheckID"), ["db-check", "serfHealth"]);
    let any = agent.get_json("/v1/health/state/any").await;
    assert_eq!(any.as_array().map(Vec::len), Some(3));
    let warn = agent.get_json("/v1/health/state/warning").await;
    assert_eq!(warn, json!([]));
    let filtered = agent
        .get_json("/v1/health/state/any?filter=Node%20%3D%3D%20%22ext-a%22")
        .await;
    assert_eq!(column(&filtered, "Node"), ["ext-a"]);
    let by_meta = agent
        .get_json("/v1/health/state/any?node-meta=rack:b")
        .await;
    assert_eq!(column(&by_meta, "Node"), ["ext-b"]);
}

#[tokio::test]
async fn errors_have_consuls_codes_and_texts() {
    let agent = Agent::start(&[], &[]).await;

    let r = agent
        .put_raw("/v1/agent/service/register", "{not json")
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.starts_with("Request decode failed: "), "{}", r.text);
    assert_error(
        &agent.put_raw("/v1/agent/service/register", "").await,
        400,
        "Request decode failed: EOF",
    );
    let r = agent.put_raw("/v1/catalog/register", r#"{"Node": 5"#).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.starts_with("Request decode failed: "), "{}", r.text);
    let r = agent
        .put_raw(
            "/v1/agent/service/register",
            r#"{"Name": "x", "Port": "eighty"}"#,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.starts_with("Request decode failed: "), "{}", r.text);
    assert_error(
        &agent
            .put("/v1/agent/service/register", Some(&json!({"Port": 80})))
            .await,
        400,
        "Missing service name",
    );

    assert_error(
        &agent.get("/v1/catalog/nodes?index=abc").await,
        400,
        "Invalid index",
    );
    assert_error(
        &agent.get("/v1/health/service/x?index=1&wait=forever").await,
        400,
        "Invalid wait time",
    );
    assert_error(
        &agent.get("/v1/catalog/services?stale&consistent").await,
        400,
        "Cannot specify ?stale with ?consistent, conflicting semantics.",
    );
    assert_error(
        &agent.get("/v1/health/state/bogus").await,
        400,
        "Invalid check state: 'bogus'",
    );
    assert_error(
        &agent.get("/v1/health/service/x?passing=maybe").await,
        400,
        "Invalid value for ?passing",
    );
    let r = agent
        .get("/v1/catalog/nodes?filter=NoSuchField%20%3D%3D%20%22x%22")
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.text.starts_with("Invalid filter expression"),
        "{}",
        r.text
    );

    assert_error(
        &agent.get("/v1/no/such/endpoint").await,
        404,
        "Invalid URL path: not a recognized HTTP API endpoint",
    );
    let r = agent
        .request(reqwest::Method::POST, "/v1/catalog/nodes")
        .await;
    assert_error(&r, 405, "method POST not allowed");
    assert_eq!(r.header("Allow"), Some("OPTIONS,GET"));
    let r = agent
        .request(reqwest::Method::GET, "/v1/agent/service/register")
        .await;
    assert_eq!(r.status, 405, "{}", r.text);
    assert_eq!(r.header("Allow"), Some("OPTIONS,PUT"));

    assert_error(
        &agent.get("/v1/catalog/nodes?dc=elsewhere").await,
        500,
        "No path to datacenter",
    );
    // Consul's text for an unknown check: clients match it to re-register after a restart.
    assert_error(
        &agent.put("/v1/agent/check/pass/nope", None).await,
        500,
        r#"CheckID "nope" does not have associated TTL"#,
    );
}

#[tokio::test]
async fn blocking_queries_wake_on_writes_and_time_out() {
    let agent = Agent::start(&[], &[]).await;

    // Nothing changes: the query waits out its `wait` and returns the same index and body.
    // Start-up writes (the leader's reconcile, the first anti-entropy sync) may still move
    // the index, which rightly wakes the query early; so retry until one wait is quiet.
    let (index, _) = wait_some("a quiet 1 s wait", Duration::from_secs(30), || async {
        let first = agent.get("/v1/catalog/services").await;
        let index = first.index();
        let start = Instant::now();
        let r = agent
            .get(&format!("/v1/catalog/services?index={index}&wait=1s"))
            .await;
        let waited = start.elapsed();
        assert_eq!(r.status, 200);
        if r.index() != index {
            assert!(
                r.index() > index,
                "woken by a write: {} > {index}",
                r.index()
            );
            return None;
        }
        assert_eq!(r.text, first.text);
        // wait plus at most wait/16 of jitter; generous on top for a loaded machine.
        assert!(
            waited >= Duration::from_millis(950) && waited < Duration::from_secs(5),
            "waited {waited:?}"
        );
        Some(index)
    })
    .await;

    // A registration wakes a waiting query long before its 30 s wait.
    let path = format!("/v1/catalog/services?index={index}&wait=30s");
    let url = agent.url(&path);
    let mut waiting = tokio::spawn(async move {
        let started = Instant::now();
        let r = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(url)
            .send()
            .await
            .unwrap();
        let index: u64 = r.headers()["X-Consul-Index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        (index, r.text().await.unwrap(), started.elapsed())
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "the query blocks while nothing changes"
    );
    agent
        .put_ok(
            "/v1/catalog/register",
            Some(&json!({"Node": "late", "Address": "192.0.2.9",
                         "Service": {"Service": "late-svc"}})),
        )
        .await;
    let (new_index, body, took) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("woken by the write")
        .unwrap();
    assert!(new_index > index, "{new_index} > {index}");
    assert!(body.contains("late-svc"), "{body}");
    assert!(took < Duration::from_secs(10), "{took:?}");

    // Health reads block too, and wake on a check's status change.
    agent
        .put_ok(
            "/v1/agent/service/register",
            Some(
                &json!({"Name": "beat", "Check": {"CheckID": "beat", "Name": "beat", "TTL": "5m"}}),
            ),
        )
        .await;
    let (entry_index, _) = wait_some("beat in the catalog", Duration::from_secs(10), || async {
        let r = agent.get("/v1/health/service/beat").await;
        (r.json().as_array().map(Vec::len) == Some(1)).then(|| r.index())
    })
    .await;
    let agent_url = agent.url(&format!(
        "/v1/health/service/beat?passing&index={entry_index}&wait=30s"
    ));
    let mut waiting = tokio::spawn(async move {
        let r = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(agent_url)
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut waiting)
            .await
            .is_err(),
        "the health query blocks"
    );
    agent.put_ok("/v1/agent/check/pass/beat", None).await;
    let body = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("woken by the status change")
        .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(1), "passing now: {body}");
}
