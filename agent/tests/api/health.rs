//! `/v1/health/*`: node, checks, service (with `passing`, `tag`, `node-meta`, `filter`) and
//! state.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{NODE, Options, TestAgent, wait_until};

async fn two_instances() -> TestAgent {
    let agent = TestAgent::start(Options {
        config: json!({"node_meta": {"rack": "a"}}),
        ..Options::default()
    })
    .await;
    for (id, tag) in [("web1", "primary"), ("web2", "backup")] {
        let body = json!({"ID": id, "Name": "web", "Tags": [tag], "Port": 80,
                          "Check": {"CheckID": format!("{id}-ttl"), "Name": "ttl", "TTL": "30s"}});
        agent.put_ok("/v1/agent/service/register", Some(body)).await;
    }
    agent.put_ok("/v1/agent/check/pass/web1-ttl", None).await;
    wait_until("both instances synced", Duration::from_secs(10), || async {
        let rows = agent.get_json("/v1/health/service/web").await;
        let synced = rows.as_array().unwrap().len() == 2
            && rows.as_array().unwrap().iter().any(|r| {
                r["Checks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["CheckID"] == "web1-ttl" && c["Status"] == "passing")
            });
        synced.then_some(())
    })
    .await;
    agent
}

fn ids(rows: &Value) -> Vec<String> {
    let mut ids: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Service"]["ID"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn health_service_with_passing_tag_node_meta_and_filter() {
    let agent = two_instances().await;
    let rows = agent.get_json("/v1/health/service/web").await;
    assert_eq!(ids(&rows), ["web1", "web2"]);
    let entry = &rows[0];
    assert_eq!(entry["Node"]["Node"], NODE);
    assert_eq!(entry["Node"]["Meta"], json!({"rack": "a"}));
    assert_eq!(entry["Node"]["TaggedAddresses"]["lan"], "127.0.0.1");
    assert_eq!(entry["Service"]["Service"], "web");
    assert!(entry["Checks"].is_array());

    assert_eq!(
        ids(&agent.get_json("/v1/health/service/web?passing").await),
        ["web1"]
    );
    assert_eq!(
        ids(&agent.get_json("/v1/health/service/web?passing=false").await),
        ["web1", "web2"]
    );
    assert_eq!(
        ids(&agent.get_json("/v1/health/service/web?tag=backup").await),
        ["web2"]
    );
    assert!(
        ids(&agent
            .get_json("/v1/health/service/web?tag=backup&tag=primary")
            .await)
        .is_empty()
    );
    assert_eq!(
        ids(&agent
            .get_json("/v1/health/service/web?node-meta=rack:a")
            .await)
        .len(),
        2
    );
    assert!(
        ids(&agent
            .get_json("/v1/health/service/web?node-meta=rack:b")
            .await)
        .is_empty()
    );

    let filter = |expr: &str| {
        let encoded: String = expr
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!("/v1/health/service/web?filter={encoded}")
    };
    let rows = agent
        .get_json(&filter(r#"Service.Tags contains "backup""#))
        .await;
    assert_eq!(ids(&rows), ["web2"]);
    let rows = agent
        .get_json(&filter(
            r#"Service.Tags contains "primary" and Checks.Status != "critical""#,
        ))
        .await;
    assert_eq!(ids(&rows), ["web1"]);
    let rows = agent
        .get_json(&filter(
            r#"Checks.Status == critical or Node.Meta.rack == "z""#,
        ))
        .await;
    assert_eq!(ids(&rows), ["web2"]);

    let r = agent.get(&filter("Service.Tags ==")).await;
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .starts_with("Invalid filter expression: ")
    );
    let r = agent.get("/v1/health/service/web?passing=maybe").await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "Invalid value for ?passing");
    assert_eq!(agent.get_json("/v1/health/service/nope").await, json!([]));
    agent.stop().await;
}

#[tokio::test]
async fn health_node_checks_and_state() {
    let agent = two_instances().await;
    let checks = agent.get_json(&format!("/v1/health/node/{NODE}")).await;
    let ids: Vec<&str> = checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["CheckID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["web1-ttl", "web2-ttl"]);
    for field in [
        "Node",
        "CheckID",
        "Name",
        "Status",
        "Notes",
        "Output",
        "ServiceID",
        "ServiceName",
        "ServiceTags",
        "Type",
        "Interval",
        "Timeout",
        "Definition",
        "CreateIndex",
        "ModifyIndex",
    ] {
        assert!(checks[0].get(field).is_some(), "check field {field}");
    }
    assert_eq!(checks[0]["Definition"]["TTL"], "30s");
    let service_checks = agent.get_json("/v1/health/checks/web").await;
    assert_eq!(service_checks.as_array().unwrap().len(), 2);
    let filtered = agent
        .get_json("/v1/health/checks/web?filter=ServiceTags%20contains%20backup")
        .await;
    assert_eq!(filtered[0]["CheckID"], "web2-ttl");
    assert_eq!(filtered.as_array().unwrap().len(), 1);

    let critical = agent.get_json("/v1/health/state/critical").await;
    assert_eq!(critical.as_array().unwrap().len(), 1);
    assert_eq!(critical[0]["CheckID"], "web2-ttl");
    let passing = agent.get_json("/v1/health/state/passing").await;
    assert_eq!(passing[0]["CheckID"], "web1-ttl");
    assert_eq!(
        agent
            .get_json("/v1/health/state/any")
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(agent.get_json("/v1/health/state/warning").await, json!([]));
    assert_eq!(
        agent
            .get_json("/v1/health/state/any?node-meta=rack:z")
            .await,
        json!([])
    );
    let r = agent.get("/v1/health/state/bogus").await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "Invalid check state: 'bogus'");
    assert_eq!(agent.get_json("/v1/health/node/nobody").await, json!([]));
    agent.stop().await;
}
