//! Maintenance mode: service and node maintenance add Consul's critical pseudo-checks (exact
//! IDs, names and default reasons), which take the service out of DNS; disabling them brings
//! it back.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::Value;

use crate::support::dns::{BOTH, query};
use crate::support::{Agent, wait_for};

const NAME: &str = "db.service.consul.";

async fn answered(agent: &Agent) -> bool {
    for transport in BOTH {
        let r = query(agent.dns, NAME, RecordType::A, transport).await;
        if r.rcode() != ResponseCode::NoError || r.answers().is_empty() {
            return false;
        }
    }
    true
}

async fn nxdomain(agent: &Agent) -> bool {
    for transport in BOTH {
        let r = query(agent.dns, NAME, RecordType::A, transport).await;
        if r.rcode() != ResponseCode::NXDomain || r.soa().is_none() {
            return false;
        }
    }
    true
}

async fn agent_check(agent: &Agent, id: &str) -> Value {
    agent.get_json("/v1/agent/checks").await[id].clone()
}

#[tokio::test]
async fn maintenance_takes_the_service_out_of_dns_and_back() {
    let agent = Agent::start(
        &[],
        &[("db.json", r#"{"service": {"name": "db", "port": 5432}}"#)],
    )
    .await;
    let wait = Duration::from_secs(10);
    wait_for("db in DNS", wait, || answered(&agent)).await;

    // Service maintenance, with a reason.
    agent
        .put_ok(
            "/v1/agent/service/maintenance/db?enable=true&reason=upgrading",
            None,
        )
        .await;
    let c = agent_check(&agent, "_service_maintenance:db").await;
    assert_eq!(c["Name"], "Service Maintenance Mode", "{c}");
    assert_eq!(c["Status"], "critical", "{c}");
    assert_eq!(c["Notes"], "upgrading", "{c}");
    assert_eq!(c["ServiceID"], "db", "{c}");
    wait_for("db out of DNS", wait, || nxdomain(&agent)).await;
    let catalog = agent.get_json("/v1/health/checks/db").await;
    assert!(
        catalog
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["CheckID"] == "_service_maintenance:db" && c["Status"] == "critical"),
        "{catalog}"
    );
    agent
        .put_ok("/v1/agent/service/maintenance/db?enable=false", None)
        .await;
    assert!(
        agent_check(&agent, "_service_maintenance:db")
            .await
            .is_null()
    );
    wait_for("db back in DNS", wait, || answered(&agent)).await;

    // Node maintenance, without a reason: Consul's default text.
    agent
        .put_ok("/v1/agent/maintenance?enable=true", None)
        .await;
    let c = agent_check(&agent, "_node_maintenance").await;
    assert_eq!(c["Name"], "Node Maintenance Mode", "{c}");
    assert_eq!(c["Status"], "critical", "{c}");
    assert_eq!(
        c["Notes"],
        "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.",
        "{c}"
    );
    assert_eq!(c["ServiceID"], "", "a node-level check");
    wait_for("db out of DNS under node maintenance", wait, || {
        nxdomain(&agent)
    })
    .await;
    let passing = agent.get_json("/v1/health/service/db?passing").await;
    assert_eq!(passing, Value::Array(vec![]));
    agent
        .put_ok("/v1/agent/maintenance?enable=false", None)
        .await;
    assert!(agent_check(&agent, "_node_maintenance").await.is_null());
    wait_for("db back after node maintenance", wait, || answered(&agent)).await;

    // The default service reason, and the parameter errors.
    agent
        .put_ok("/v1/agent/service/maintenance/db?enable=true", None)
        .await;
    assert_eq!(
        agent_check(&agent, "_service_maintenance:db").await["Notes"],
        "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."
    );
    let r = agent.put("/v1/agent/maintenance", None).await;
    assert_eq!(
        (r.status, r.text.trim_end()),
        (400, "Missing value for enable")
    );
    let r = agent.put("/v1/agent/maintenance?enable=maybe", None).await;
    assert_eq!(
        (r.status, r.text.trim_end()),
        (400, r#"Invalid value for enable: "maybe""#)
    );
    let r = agent
        .put("/v1/agent/service/maintenance/nope?enable=true", None)
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
}
