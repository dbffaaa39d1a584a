//! Script checks (`args`): refused over the API unless `enable_script_checks`; with it, the
//! script's exit code drives the service's health and DNS (0 passing, 1 warning and still
//! answered, anything else critical and NXDOMAIN); a script check in a config file needs
//! `enable_local_script_checks` (or `enable_script_checks`).

use std::path::Path;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::json;

use crate::support::dns::{Transport, query};
use crate::support::{Agent, wait_for};

const REMOTE_REFUSAL: &str = "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true";
const LOCAL_REFUSAL: &str = "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or 'enable_local_script_checks' to true";

/// A check that exits with the number in `code_file`.
fn exit_with(code_file: &Path) -> serde_json::Value {
    json!([
        "/bin/sh",
        "-c",
        format!("exit $(cat {})", code_file.display())
    ])
}

async fn check_status(agent: &Agent, id: &str) -> String {
    let checks = agent.get_json("/v1/agent/checks").await;
    checks[id]["Status"].as_str().unwrap_or("absent").to_owned()
}

async fn dns_rcode(agent: &Agent, name: &str) -> (ResponseCode, usize) {
    let r = query(agent.dns, name, RecordType::A, Transport::Udp).await;
    (r.rcode(), r.answers().len())
}

#[tokio::test]
async fn api_script_checks_need_enable_script_checks() {
    let agent = Agent::start(&[], &[]).await;
    let r = agent
        .put(
            "/v1/agent/check/register",
            Some(&json!({"Name": "script", "Args": ["/bin/true"], "Interval": "1s"})),
        )
        .await;
    assert_eq!((r.status, r.text.trim_end()), (400, REMOTE_REFUSAL));
    let r = agent
        .put(
            "/v1/agent/service/register",
            Some(&json!({"Name": "job", "Check": {"Args": ["/bin/true"], "Interval": "1s"}})),
        )
        .await;
    assert_eq!((r.status, r.text.trim_end()), (400, REMOTE_REFUSAL));
    assert_eq!(agent.get_json("/v1/agent/services").await, json!({}));
}

#[tokio::test]
async fn the_exit_code_drives_health_and_dns() {
    let tmp = tempfile::tempdir().unwrap();
    let code = tmp.path().join("code");
    std::fs::write(&code, "0").unwrap();
    let agent = Agent::start(&["-enable-script-checks"], &[]).await;
    agent
        .put_ok(
            "/v1/agent/service/register",
            Some(&json!({
                "Name": "job", "Port": 9000,
                "Check": {"CheckID": "job-script", "Name": "job script",
                          "Args": exit_with(&code), "Interval": "1s", "Timeout": "5s"},
            })),
        )
        .await;
    let name = "job.service.consul.";
    let wait = Duration::from_secs(15);

    wait_for("passing and answered", wait, || async {
        check_status(&agent, "job-script").await == "passing"
            && dns_rcode(&agent, name).await == (ResponseCode::NoError, 1)
    })
    .await;

    std::fs::write(&code, "1").unwrap();
    wait_for("warning", wait, || async {
        check_status(&agent, "job-script").await == "warning"
    })
    .await;
    // Warning instances stay in DNS (only_passing is off)...
    wait_for("the catalog to see the warning", wait, || async {
        let h = agent.get_json("/v1/health/checks/job").await;
        h[0]["Status"] == "warning"
    })
    .await;
    assert_eq!(dns_rcode(&agent, name).await, (ResponseCode::NoError, 1));
    // ...but not in ?passing.
    assert_eq!(
        agent.get_json("/v1/health/service/job?passing").await,
        json!([])
    );

    std::fs::write(&code, "2").unwrap();
    wait_for("critical and NXDOMAIN", wait, || async {
        check_status(&agent, "job-script").await == "critical"
            && dns_rcode(&agent, name).await.0 == ResponseCode::NXDomain
    })
    .await;

    std::fs::write(&code, "0").unwrap();
    wait_for("answered again", wait, || async {
        dns_rcode(&agent, name).await == (ResponseCode::NoError, 1)
    })
    .await;
}

#[tokio::test]
async fn config_file_script_checks_need_enable_local_script_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let code = tmp.path().join("code");
    std::fs::write(&code, "0").unwrap();
    let service = json!({"service": {
        "name": "local-job",
        "check": {"id": "local-script", "args": exit_with(&code), "interval": "1s"},
    }});

    let done = Agent::builder()
        .json("job.json", &service)
        .run_to_exit()
        .await;
    assert_eq!(done.code, Some(1), "{done:?}");
    assert!(done.stderr.contains("job.json"), "{}", done.stderr);
    assert!(done.stderr.contains(LOCAL_REFUSAL), "{}", done.stderr);

    let agent = Agent::builder()
        .json("job.json", &service)
        .file("local.json", r#"{"enable_local_script_checks": true}"#)
        .start()
        .await;
    wait_for(
        "the local script check to pass",
        Duration::from_secs(15),
        || async {
            dns_rcode(&agent, "local-job.service.consul.").await == (ResponseCode::NoError, 1)
        },
    )
    .await;
    assert_eq!(check_status(&agent, "local-script").await, "passing");
    // Local only: the API still refuses scripts.
    let r = agent
        .put(
            "/v1/agent/check/register",
            Some(&json!({"Name": "remote", "Args": ["/bin/true"], "Interval": "1s"})),
        )
        .await;
    assert_eq!((r.status, r.text.trim_end()), (400, REMOTE_REFUSAL));
}
