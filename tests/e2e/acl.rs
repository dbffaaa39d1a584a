//! ACLs with the real binary: the leader creates `initial_management`, DNS answers only
//! what `acl.tokens.dns` may read (and follows changes to its rights), and the CLI carries
//! `-token`.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::json;

use crate::support::dns::{Transport, query};
use crate::support::{Agent, wait_for};

const ROOT: &str = "9f1c1e36-5d4e-4c0b-a1a5-3c1f7b2e0001";
const DNS: &str = "9f1c1e36-5d4e-4c0b-a1a5-3c1f7b2e0002";

#[tokio::test]
async fn initial_management_dns_token_and_cli() {
    let config = json!({
        "acl": {"enabled": true, "default_policy": "deny",
                "tokens": {"initial_management": ROOT, "dns": DNS}},
        "services": [{"name": "web", "port": 80}, {"name": "secret", "port": 81}]
    });
    let agent = Agent::builder()
        .file("acl.json", config.to_string())
        .no_catalog_wait()
        .start()
        .await;
    let with = |token: &'static str,
                method: reqwest::Method,
                path: &str,
                body: Option<serde_json::Value>| {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut r = client
            .request(method, agent.url(path))
            .header("X-Consul-Token", token);
        if let Some(b) = body {
            r = r.body(b.to_string());
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // The leader creates the management token from the config.
    wait_for(
        "the initial management token",
        Duration::from_secs(30),
        || async {
            with(ROOT, reqwest::Method::GET, "/v1/acl/token/self", None)
                .await
                .0
                == 200
        },
    )
    .await;
    // The services are registered (anti-entropy needs no token) but DNS may not see them:
    // the DNS token does not exist yet.
    wait_for(
        "both services in the catalog",
        Duration::from_secs(30),
        || async {
            let (s, body) = with(ROOT, reqwest::Method::GET, "/v1/catalog/services", None).await;
            s == 200 && body.contains("\"web\"") && body.contains("\"secret\"")
        },
    )
    .await;
    let web = || {
        query(
            agent.dns,
            "web.service.consul.",
            RecordType::A,
            Transport::Udp,
        )
    };
    assert_eq!(web().await.rcode(), ResponseCode::NXDomain);

    // Give the DNS token read on `web` and on nodes.
    let (s, body) = with(
        ROOT,
        reqwest::Method::PUT,
        "/v1/acl/policy",
        Some(json!({"Name": "dns", "Rules":
            "service \"web\" {\n policy = \"read\"\n}\nnode_prefix \"\" {\n policy = \"read\"\n}"})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = with(
        ROOT,
        reqwest::Method::PUT,
        "/v1/acl/token",
        Some(json!({"SecretID": DNS, "Description": "dns", "Policies": [{"Name": "dns"}]})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    wait_for(
        "web in DNS once the token may read it",
        Duration::from_secs(10),
        || async { web().await.rcode() == ResponseCode::NoError },
    )
    .await;
    assert_eq!(web().await.a_addrs().len(), 1);
    let secret = query(
        agent.dns,
        "secret.service.consul.",
        RecordType::A,
        Transport::Tcp,
    )
    .await;
    assert_eq!(
        secret.rcode(),
        ResponseCode::NXDomain,
        "not readable by the DNS token"
    );

    // The CLI carries -token; without one the default (anonymous) gets nothing.
    let done = agent
        .cli(&["catalog", "services", &format!("-token={ROOT}")])
        .await;
    assert_eq!(done.code, Some(0), "{done:?}");
    assert!(
        done.stdout.contains("secret") && done.stdout.contains("web"),
        "{done:?}"
    );
    let done = agent.cli(&["catalog", "services"]).await;
    assert_eq!(done.code, Some(0), "{done:?}");
    assert!(
        !done.stdout.contains("web"),
        "anonymous sees nothing: {done:?}"
    );
    // Members are filtered (anonymous may read no node); reload needs agent:write.
    let done = agent.cli(&["members", &format!("-token={ROOT}")]).await;
    assert_eq!(done.code, Some(0), "{done:?}");
    let done = agent.cli(&["reload"]).await;
    assert_ne!(done.code, Some(0), "{done:?}");
    assert!(done.stderr.contains("Permission denied"), "{done:?}");
    let done = agent.cli(&["reload", &format!("-token={ROOT}")]).await;
    assert_eq!(done.code, Some(0), "{done:?}");
}
