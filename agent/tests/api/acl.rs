//! ACLs through the API: bootstrap once, policies and tokens CRUD, the three ways to carry a
//! token, and each rule kind allowing and denying (service, service_prefix, node,
//! node_prefix, agent, operator; key rules are parsed and tested in `acl::tests`, muster
//! has no KV store), with reads filtered rather than refused.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{NODE, Options, TestAgent};

/// One request with an optional token in `X-Consul-Token`; status and body.
async fn call(
    agent: &TestAgent,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    let mut r = agent.client.request(method, agent.url(path));
    if let Some(t) = token {
        r = r.header("X-Consul-Token", t);
    }
    if let Some(b) = body {
        r = r.body(b.to_string());
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn acl_agent() -> Options {
    Options {
        config: json!({"acl": {"enabled": true, "default_policy": "deny"}}),
        ..Options::default()
    }
}

/// Bootstraps and returns the management secret.
async fn bootstrap(agent: &TestAgent) -> String {
    let (status, body) = call(agent, Method::PUT, "/v1/acl/bootstrap", None, None).await;
    assert_eq!(status, 200, "{body}");
    let token: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(token["Policies"][0]["Name"], "global-management");
    assert_eq!(token["Description"], "Bootstrap Token (Global Management)");
    token["SecretID"].as_str().unwrap().to_owned()
}

/// A policy with `rules` and a token linked to it (by name); returns the token's secret.
async fn token_with(agent: &TestAgent, root: &str, name: &str, rules: &str) -> String {
    let (status, body) = call(
        agent,
        Method::PUT,
        "/v1/acl/policy",
        Some(root),
        Some(json!({"Name": name, "Rules": rules})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        agent,
        Method::PUT,
        "/v1/acl/token",
        Some(root),
        Some(json!({"Description": name, "Policies": [{"Name": name}]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token: Value = serde_json::from_str(&body).unwrap();
    token["SecretID"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn acl_endpoints_answer_401_when_acls_are_off() {
    let agent = TestAgent::start(Options::default()).await;
    let (status, body) = call(&agent, Method::GET, "/v1/acl/policies", None, None).await;
    assert_eq!((status, body.as_str()), (401, "ACL support disabled"));
    // Everything else works without a token, as before.
    assert_eq!(agent.get("/v1/agent/self").await.status(), 200);
    agent.stop().await;
}

#[tokio::test]
async fn bootstrap_once_then_tokens_and_policies_crud() {
    let agent = TestAgent::start(acl_agent()).await;
    // Anonymous, default deny: refused or filtered.
    let (status, body) = call(&agent, Method::GET, "/v1/agent/self", None, None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.starts_with("Permission denied"), "{body}");
    let (status, body) = call(&agent, Method::GET, "/v1/catalog/nodes", None, None).await;
    assert_eq!((status, body.as_str()), (200, "[]"));

    let root = bootstrap(&agent).await;
    let (status, body) = call(&agent, Method::PUT, "/v1/acl/bootstrap", None, None).await;
    assert_eq!(status, 403);
    assert!(
        body.contains("ACL bootstrap no longer allowed (reset index: "),
        "{body}"
    );
    // A secret nobody has.
    let (status, body) = call(&agent, Method::GET, "/v1/agent/self", Some("nope"), None).await;
    assert_eq!((status, body.as_str()), (403, "ACL not found"));
    // The three ways to carry a token.
    assert_eq!(
        call(&agent, Method::GET, "/v1/agent/self", Some(&root), None)
            .await
            .0,
        200
    );
    let bearer = agent
        .client
        .get(agent.url("/v1/agent/self"))
        .header("Authorization", format!("Bearer {root}"))
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let query = agent.get(&format!("/v1/agent/self?token={root}")).await;
    assert_eq!(query.status(), 200);

    // Policies: bad rules and duplicate names are 400.
    let (status, body) = call(
        &agent,
        Method::PUT,
        "/v1/acl/policy",
        Some(&root),
        Some(json!({"Name": "bad", "Rules": "service \"x\" { policy = \"rw\" }"})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.starts_with("Failed to parse ACL rules"), "{body}");
    let reader = token_with(&agent, &root, "acl-reader", r#"acl = "read""#).await;
    let (status, body) = call(
        &agent,
        Method::PUT,
        "/v1/acl/policy",
        Some(&root),
        Some(json!({"Name": "acl-reader"})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("already exists"), "{body}");
    // acl:read lists, but sees no secrets and cannot write.
    let (status, body) = call(&agent, Method::GET, "/v1/acl/tokens", Some(&reader), None).await;
    assert_eq!(status, 200);
    assert!(!body.contains(&root) && body.contains("<hidden>"), "{body}");
    let (status, _) = call(
        &agent,
        Method::PUT,
        "/v1/acl/policy",
        Some(&reader),
        Some(json!({"Name": "x"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = call(
        &agent,
        Method::GET,
        "/v1/acl/token/self",
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let me: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(me["Policies"][0]["Name"], "acl-reader");
    let accessor = me["AccessorID"].as_str().unwrap().to_owned();
    let (status, body) = call(&agent, Method::GET, "/v1/acl/policies", Some(&reader), None).await;
    assert_eq!(status, 200);
    let names: Vec<Value> = serde_json::from_str::<Vec<Value>>(&body)
        .unwrap()
        .into_iter()
        .map(|p| p["Name"].clone())
        .collect();
    assert!(names.contains(&json!("global-management")) && names.contains(&json!("acl-reader")));
    // Deleting the token: its secret stops working at once on a server.
    let (status, _) = call(
        &agent,
        Method::DELETE,
        &format!("/v1/acl/token/{accessor}"),
        Some(&root),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = call(&agent, Method::GET, "/v1/acl/tokens", Some(&reader), None).await;
    assert_eq!((status, body.as_str()), (403, "ACL not found"));
    // The builtins cannot go.
    let (status, body) = call(
        &agent,
        Method::DELETE,
        "/v1/acl/policy/00000000-0000-0000-0000-000000000001",
        Some(&root),
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("not permitted"), "{body}");
    agent.stop().await;
}

#[tokio::test]
async fn each_rule_kind_allows_and_denies() {
    let agent = TestAgent::start(acl_agent()).await;
    let root = bootstrap(&agent).await;
    let rules = format!(
        r#"
        service "web" {{
          policy = "write"
        }}
        service_prefix "ro-" {{
          policy = "read"
        }}
        node "{NODE}" {{
          policy = "read"
        }}
        node_prefix "ext-" {{
          policy = "write"
        }}
        agent "{NODE}" {{
          policy = "read"
        }}
        operator = "read"
        "#
    );
    let t = token_with(&agent, &root, "mixed", &rules).await;
    let put = |path: &'static str, body: Value| {
        let (agent, t) = (&agent, t.clone());
        async move { call(agent, Method::PUT, path, Some(&t), Some(body)).await }
    };
    // service: write on "web", nothing on "db", read-only on "ro-*".
    let (status, body) = put(
        "/v1/agent/service/register",
        json!({"Name": "web", "Port": 80}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = put("/v1/agent/service/register", json!({"Name": "db"})).await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        "Permission denied: token lacks permission 'service:write' on \"db\""
    );
    let (status, _) = put("/v1/agent/service/register", json!({"Name": "ro-api"})).await;
    assert_eq!(status, 403, "service_prefix read does not write");
    // node_prefix: catalog writes for ext-* nodes (with services it may write).
    let reg = |node: &str, svc: &str| json!({"Node": node, "Address": "192.0.2.1", "Service": {"Service": svc}});
    let (status, body) = put("/v1/catalog/register", reg("ext-1", "web")).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = put("/v1/catalog/register", reg("other", "web")).await;
    assert_eq!(status, 403, "node write needed");
    let (status, _) = put("/v1/catalog/register", reg("ext-2", "db")).await;
    assert_eq!(status, 403, "service write needed");
    // Management registers what the token may only partly see.
    for (node, svc) in [("ext-3", "ro-api"), ("hidden", "web"), ("ext-4", "db")] {
        let (status, _) = call(
            &agent,
            Method::PUT,
            "/v1/catalog/register",
            Some(&root),
            Some(reg(node, svc)),
        )
        .await;
        assert_eq!(status, 200);
    }
    // Reads are filtered: nodes by node rules, instances by service and node rules.
    let get = |path: String| {
        let (agent, t) = (&agent, t.clone());
        async move {
            let (status, body) = call(agent, Method::GET, &path, Some(&t), None).await;
            assert_eq!(status, 200, "{path}: {body}");
            serde_json::from_str::<Value>(&body).unwrap()
        }
    };
    let nodes: Vec<String> = get("/v1/catalog/nodes".into())
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Node"].as_str().unwrap().to_owned())
        .collect();
    assert!(nodes.contains(&"ext-1".to_owned()) && nodes.contains(&NODE.to_owned()));
    assert!(!nodes.contains(&"hidden".to_owned()), "{nodes:?}");
    let services = get("/v1/catalog/services".into()).await;
    assert!(services.get("web").is_some() && services.get("ro-api").is_some());
    assert!(services.get("db").is_none(), "{services}");
    let web: Vec<String> = get("/v1/health/service/web".into())
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Node"]["Node"].as_str().unwrap().to_owned())
        .collect();
    assert!(web.contains(&"ext-1".to_owned()));
    assert!(!web.contains(&"hidden".to_owned()), "{web:?}");
    // agent: read allows self, not reload (write).
    assert_eq!(
        get("/v1/agent/self".into()).await["Config"]["NodeName"],
        NODE
    );
    let (status, _) = call(&agent, Method::PUT, "/v1/agent/reload", Some(&t), None).await;
    assert_eq!(status, 403);
    // operator: read allows the Raft configuration, not removing a peer.
    get("/v1/operator/raft/configuration".into()).await;
    let (status, body) = call(
        &agent,
        Method::DELETE,
        "/v1/operator/raft/peer?address=127.0.0.1:1",
        Some(&t),
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body,
        "Permission denied: token lacks permission 'operator:write'"
    );
    // A token without operator rules, under default deny, cannot read it either.
    let none = token_with(
        &agent,
        &root,
        "nothing",
        r#"node_prefix "" { policy = "read" }"#,
    )
    .await;
    let (status, _) = call(
        &agent,
        Method::GET,
        "/v1/operator/raft/configuration",
        Some(&none),
        None,
    )
    .await;
    assert_eq!(status, 403);
    agent.stop().await;
}

#[tokio::test]
async fn policies_and_tokens_update_in_place() {
    let agent = TestAgent::start(acl_agent()).await;
    let root = bootstrap(&agent).await;
    let t = token_with(&agent, &root, "svc", r#"service "web" { policy = "read" }"#).await;
    let (status, _) = call(
        &agent,
        Method::GET,
        "/v1/catalog/service/web",
        Some(&t),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, body) = call(
        &agent,
        Method::GET,
        "/v1/acl/policy/name/svc",
        Some(&root),
        None,
    )
    .await;
    let policy: Value = serde_json::from_str(&body).unwrap();
    let id = policy["ID"].as_str().unwrap().to_owned();
    // Rules change in place: the same token may now register the service.
    let (status, body) = call(
        &agent,
        Method::PUT,
        &format!("/v1/acl/policy/{id}"),
        Some(&root),
        Some(json!({"Name": "svc", "Rules": "service \"web\" {\n policy = \"write\"\n}"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let updated: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(updated["CreateIndex"], policy["CreateIndex"]);
    assert!(updated["ModifyIndex"].as_u64() > policy["ModifyIndex"].as_u64());
    let (status, body) = call(
        &agent,
        Method::PUT,
        "/v1/agent/service/register",
        Some(&t),
        Some(json!({"Name": "web"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The token loses its policy: denied again, its secret unchanged.
    let (_, body) = call(&agent, Method::GET, "/v1/acl/token/self", Some(&t), None).await;
    let me: Value = serde_json::from_str(&body).unwrap();
    let accessor = me["AccessorID"].as_str().unwrap();
    let (status, body) = call(
        &agent,
        Method::PUT,
        &format!("/v1/acl/token/{accessor}"),
        Some(&root),
        Some(json!({"Description": "no rights", "Policies": []})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &agent,
        Method::GET,
        &format!("/v1/acl/token/{accessor}"),
        Some(&root),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let read: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(read["SecretID"], me["SecretID"]);
    assert_eq!(read["Description"], "no rights");
    let (status, _) = call(
        &agent,
        Method::PUT,
        "/v1/agent/service/register",
        Some(&t),
        Some(json!({"Name": "web"})),
    )
    .await;
    assert_eq!(status, 403);
    // A policy name that does not exist is a 400, and nothing changes.
    let (status, body) = call(
        &agent,
        Method::PUT,
        &format!("/v1/acl/token/{accessor}"),
        Some(&root),
        Some(json!({"Policies": [{"Name": "nope"}]})),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (400, "cannot find policy \"nope\"")
    );
    agent.stop().await;
}

/// A token with `body` (identities) created by `root`; its secret and its JSON.
async fn token_from_body(agent: &TestAgent, root: &str, body: Value) -> (String, Value) {
    let (status, text) = call(agent, Method::PUT, "/v1/acl/token", Some(root), Some(body)).await;
    assert_eq!(status, 200, "{text}");
    let token: Value = serde_json::from_str(&text).unwrap();
    (token["SecretID"].as_str().unwrap().to_owned(), token)
}

#[tokio::test]
async fn service_and_node_identities_grant_consuls_templated_rules() {
    let agent = TestAgent::start(acl_agent()).await;
    let root = bootstrap(&agent).await;
    let (web, json_token) = token_from_body(
        &agent,
        &root,
        json!({"Description": "web", "ServiceIdentities": [{"ServiceName": "web"}]}),
    )
    .await;
    assert_eq!(
        json_token["ServiceIdentities"],
        json!([{"ServiceName": "web"}])
    );
    assert!(
        json_token.get("NodeIdentities").is_none(),
        "omitted when empty"
    );
    let put = |path: &'static str, token: String, body: Value| {
        let agent = &agent;
        async move { call(agent, Method::PUT, path, Some(&token), Some(body)).await }
    };
    // service "web" and its sidecar: write; any other service: no write.
    for name in ["web", "web-sidecar-proxy"] {
        let (status, body) = put(
            "/v1/agent/service/register",
            web.clone(),
            json!({"Name": name, "Port": 80}),
        )
        .await;
        assert_eq!(status, 200, "{name}: {body}");
    }
    let (status, body) = put(
        "/v1/agent/service/register",
        web.clone(),
        json!({"Name": "db"}),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (
            403,
            "Permission denied: token lacks permission 'service:write' on \"db\""
        )
    );
    // Every service and node readable (service_prefix "" and node_prefix "" read).
    let (status, _) = call(
        &agent,
        Method::PUT,
        "/v1/catalog/register",
        Some(&root),
        Some(json!({"Node": "ext-9", "Address": "192.0.2.9", "Service": {"Service": "db"}})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = call(
        &agent,
        Method::GET,
        "/v1/catalog/services",
        Some(&web),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let services: Value = serde_json::from_str(&body).unwrap();
    assert!(
        services.get("db").is_some() && services.get("web").is_some(),
        "{services}"
    );
    let (_, body) = call(&agent, Method::GET, "/v1/catalog/nodes", Some(&web), None).await;
    assert!(body.contains("ext-9") && body.contains(NODE), "{body}");
    // A service identity limited to another datacenter grants nothing here.
    let (elsewhere, _) = token_from_body(
        &agent,
        &root,
        json!({"ServiceIdentities": [{"ServiceName": "web", "Datacenters": ["dc9"]}]}),
    )
    .await;
    let (status, _) = put(
        "/v1/agent/service/register",
        elsewhere,
        json!({"Name": "web"}),
    )
    .await;
    assert_eq!(status, 403);

    // A node identity: its node writable in its datacenter, services readable.
    let (node, json_token) = token_from_body(
        &agent,
        &root,
        json!({"NodeIdentities": [{"NodeName": "ext-1", "Datacenter": "dc1"}]}),
    )
    .await;
    assert_eq!(
        json_token["NodeIdentities"],
        json!([{"NodeName": "ext-1", "Datacenter": "dc1"}])
    );
    let (status, body) = put(
        "/v1/catalog/register",
        node.clone(),
        json!({"Node": "ext-1", "Address": "192.0.2.1"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = put(
        "/v1/catalog/register",
        node.clone(),
        json!({"Node": "ext-2", "Address": "192.0.2.2"}),
    )
    .await;
    assert_eq!(status, 403, "another node");
    let (_, body) = call(
        &agent,
        Method::GET,
        "/v1/catalog/services",
        Some(&node),
        None,
    )
    .await;
    assert!(body.contains("\"db\""), "{body}");

    // Bad identities: Consul's texts, nothing stored.
    for (body, want) in [
        (
            json!({"ServiceIdentities": [{"ServiceName": ""}]}),
            "Service identity is missing the service name field on this token",
        ),
        (
            json!({"ServiceIdentities": [{"ServiceName": "Web\" { policy = \"write\" } x"}]}),
            "has an invalid name",
        ),
        (
            json!({"NodeIdentities": [{"NodeName": "n1"}]}),
            "Node identity is missing the datacenter field on this token",
        ),
        (
            json!({"NodeIdentities": [{"NodeName": "n 1", "Datacenter": "dc1"}]}),
            "has an invalid name",
        ),
        (
            json!({"ServiceIdentities": {"ServiceName": "web"}}),
            "ServiceIdentities must be a list",
        ),
    ] {
        let (status, text) = call(
            &agent,
            Method::PUT,
            "/v1/acl/token",
            Some(&root),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(want), "{body}: {text}");
    }
}
