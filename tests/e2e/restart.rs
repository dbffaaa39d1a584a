//! Restarting keeps state: services registered through the agent API (with a TTL check set
//! passing) and nodes registered through the catalog survive a SIGTERM and a restart on the
//! same data dir, with their Raft indexes, and so does every acknowledged write when the
//! agent is SIGKILLed instead.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use crate::support::dns::{Transport, query};
use crate::support::{Agent, Signal, wait_for, wait_some};

/// Registers `svc` (with a 10-minute TTL check `<svc>-ttl`), sets the check passing with a
/// note, and registers an external node `<node>` providing `<svc>-ext`.
async fn write_state(agent: &Agent, svc: &str, node: &str) {
    agent
        .put_ok(
            "/v1/agent/service/register",
            Some(&json!({
                "Name": svc,
                "Port": 7000,
                "Tags": ["v1"],
                "Meta": {"owner": "e2e"},
                "Check": {"CheckID": format!("{svc}-ttl"), "Name": "heartbeat", "TTL": "10m"},
            })),
        )
        .await;
    agent
        .put_ok(
            &format!("/v1/agent/check/pass/{svc}-ttl?note=alive%20{svc}"),
            None,
        )
        .await;
    let r = agent
        .put_ok(
            "/v1/catalog/register",
            Some(&json!({
                "Node": node,
                "Address": "192.0.2.50",
                "NodeMeta": {"rack": "r9"},
                "Service": {"Service": format!("{svc}-ext"), "Port": 9000},
            })),
        )
        .await;
    assert_eq!(r.text.trim(), "true");
}

/// What must survive, as read over the API.
#[derive(Debug, PartialEq)]
struct Snapshot {
    node: Value,
    ext_service: Value,
    local_service: Value,
    check_status: Value,
    check_output: Value,
}

async fn snapshot(agent: &Agent, svc: &str, node: &str) -> Snapshot {
    let n = agent.get_json(&format!("/v1/catalog/node/{node}")).await;
    assert!(!n.is_null(), "node {node} is in the catalog");
    let ext = &n["Services"][format!("{svc}-ext")];
    let local = agent.get_json(&format!("/v1/agent/service/{svc}")).await;
    let checks = agent.get_json("/v1/agent/checks").await;
    let check = &checks[format!("{svc}-ttl")];
    Snapshot {
        node: n["Node"].clone(),
        ext_service: ext.clone(),
        local_service: json!({
            "Service": local["Service"], "Port": local["Port"],
            "Tags": local["Tags"], "Meta": local["Meta"],
        }),
        check_status: check["Status"].clone(),
        check_output: check["Output"].clone(),
    }
}

/// The service's catalog entry, once anti-entropy has written it with a passing check.
async fn catalog_passing(agent: &Agent, svc: &str) -> Value {
    let path = format!("/v1/health/service/{svc}?passing");
    let what = format!("{svc} passing in the catalog");
    let (service, _) = wait_some(&what, Duration::from_secs(20), || async {
        let v = agent.get_json(&path).await;
        let one = v.as_array().is_some_and(|a| a.len() == 1);
        one.then(|| v[0]["Service"].clone())
    })
    .await;
    service
}

async fn in_dns(agent: &Agent, svc: &str) -> bool {
    let r = query(
        agent.dns,
        &format!("{svc}.service.consul."),
        RecordType::A,
        Transport::Udp,
    )
    .await;
    r.rcode() == ResponseCode::NoError && !r.answers().is_empty()
}

#[tokio::test]
async fn state_survives_sigterm_and_sigkill() {
    let mut agent = Agent::start(&[], &[]).await;

    // SIGTERM: a clean shutdown.
    write_state(&agent, "billing", "ext-1").await;
    let before = snapshot(&agent, "billing", "ext-1").await;
    assert_eq!(before.check_status, "passing");
    assert_eq!(before.check_output, "alive billing");
    let svc_before = catalog_passing(&agent, "billing").await;
    let services_index = agent.get("/v1/catalog/services").await.index();

    let status = agent.stop(Signal::Term).await;
    assert_eq!(status.code(), Some(0), "{}", agent.stderr.text());
    agent.restart().await;

    assert_eq!(snapshot(&agent, "billing", "ext-1").await, before);
    let svc_after = catalog_passing(&agent, "billing").await;
    assert_eq!(
        (&svc_after["CreateIndex"], &svc_after["ModifyIndex"]),
        (&svc_before["CreateIndex"], &svc_before["ModifyIndex"]),
        "indexes preserved: {svc_before} vs {svc_after}"
    );
    assert!(agent.get("/v1/catalog/services").await.index() >= services_index);
    wait_for("billing in DNS", Duration::from_secs(10), || {
        in_dns(&agent, "billing")
    })
    .await;

    // SIGKILL right after the writes were acknowledged: nothing may be lost.
    write_state(&agent, "payroll", "ext-2").await;
    let before2 = snapshot(&agent, "payroll", "ext-2").await;
    let status = agent.stop(Signal::Kill).await;
    assert_eq!(status.code(), None, "killed by the signal");
    agent.restart().await;

    assert_eq!(snapshot(&agent, "payroll", "ext-2").await, before2);
    assert_eq!(snapshot(&agent, "billing", "ext-1").await, before);
    catalog_passing(&agent, "payroll").await;
    wait_for("payroll in DNS", Duration::from_secs(10), || {
        in_dns(&agent, "payroll")
    })
    .await;
    let r = query(
        agent.dns,
        "payroll-ext.service.consul.",
        RecordType::A,
        Transport::Tcp,
    )
    .await;
    assert_eq!(
        r.a_addrs(),
        ["192.0.2.50".parse::<std::net::Ipv4Addr>().unwrap()]
    );
}

#[tokio::test]
async fn sigint_shuts_a_server_down_without_leaving() {
    let mut agent = Agent::start(&[], &[]).await;
    let node = agent.node().to_owned();
    let path = format!("/v1/catalog/node/{node}");
    let before = agent.get_json(&path).await["Node"]["CreateIndex"].clone();

    let status = agent.stop(Signal::Int).await;
    assert_eq!(status.code(), Some(0), "{}", agent.stderr.text());
    let logs = agent.stderr.text();
    assert!(logs.contains("caught signal, shutting down"), "{logs}");
    assert!(logs.contains("shutdown complete"), "{logs}");
    // Servers skip the leave on SIGINT (Consul's skip_leave_on_interrupt default): the node
    // record is the same one after a restart.
    assert!(!logs.contains("graceful leave complete"), "{logs}");
    agent.restart().await;
    assert_eq!(agent.get_json(&path).await["Node"]["CreateIndex"], before);
}
