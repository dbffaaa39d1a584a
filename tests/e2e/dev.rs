//! Dev mode, as the README's first command runs it: `-dev -config-dir config-examples/dev`.
//! The example's `web` check asks the agent's API on 127.0.0.1:8500; a test cannot own that
//! port, so the copy points the check at a small HTTP responder the test runs on port 0
//! (answering what `/v1/status/leader` answers) and uses a 1 s interval.

use std::net::Ipv4Addr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::dns::{BOTH, Transport, query};
use crate::support::{Agent, assert_keys, copy_example, wait_for};

/// Serves `200 "127.0.0.1:8300"` to every request, like a leader's `/v1/status/leader`.
async fn leader_responder() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/status/leader", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Read the request head (bounded), then answer and close.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "\"127.0.0.1:8300\"";
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    (url, task)
}

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
const SERVICE_KEYS: [&str; 11] = [
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
/// A HealthCheck as the catalog returns it.
pub const CHECK_KEYS: [&str; 15] = [
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
];

#[tokio::test]
async fn dev_mode_serves_web_over_dns_and_http() {
    let (check_url, _responder) = leader_responder().await;
    let tmp = tempfile::tempdir().unwrap();
    let config = copy_example("dev", tmp.path(), |name, v| {
        if name == "web.json" {
            let check = &mut v["service"]["check"];
            assert_eq!(check["http"], "http://127.0.0.1:8500/v1/status/leader");
            check["http"] = Value::from(check_url.as_str());
            check["interval"] = Value::from("1s");
        }
    });
    let agent = Agent::builder()
        .not_server()
        .config_dir(&config)
        .args(&["-dev"])
        .start()
        .await;
    assert!(
        agent.stdout.contains("Server: true (Bootstrap: true)"),
        "{}",
        agent.stdout.text()
    );
    let node = agent.node().to_owned();
    let target = format!("{node}.node.dc1.consul.");

    wait_for("web to pass", Duration::from_secs(20), || async {
        let r = query(
            agent.dns,
            "web.service.consul.",
            RecordType::SRV,
            Transport::Udp,
        )
        .await;
        r.rcode() == ResponseCode::NoError && !r.answers().is_empty()
    })
    .await;

    for transport in BOTH {
        let r = query(agent.dns, "web.service.consul.", RecordType::SRV, transport).await;
        let what = format!("{transport:?}: {}", r.summary());
        assert!(r.aa() && !r.tc(), "{what}");
        // The dev config has recursors, so RA is set on every answer.
        assert!(r.ra(), "{what}");
        let srv = r.srv();
        assert_eq!(srv.len(), 1, "{what}");
        assert_eq!(
            (srv[0].priority, srv[0].weight, srv[0].port),
            (1, 1, 8080),
            "{what}"
        );
        assert_eq!(srv[0].target.to_ascii(), target, "{what}");
        assert_eq!(
            r.additional_a(),
            [(target.clone(), Ipv4Addr::LOCALHOST)],
            "{what}"
        );
        let r = query(
            agent.dns,
            "dev.web.service.consul.",
            RecordType::A,
            transport,
        )
        .await;
        assert_eq!(r.a_addrs(), [Ipv4Addr::LOCALHOST], "{}", r.summary());
    }

    // curl -s localhost:8500/v1/health/service/web?passing
    let r = agent.get("/v1/health/service/web?passing").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert!(r.index() > 0);
    assert_eq!(r.header("X-Consul-KnownLeader"), Some("true"));
    let entries = r.json();
    let entries = entries.as_array().expect("a list");
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_keys(entry, &["Node", "Service", "Checks"]);
    assert_keys(&entry["Node"], &NODE_KEYS);
    assert_eq!(entry["Node"]["Node"], node.as_str());
    assert_eq!(entry["Node"]["Address"], "127.0.0.1");
    assert_keys(&entry["Service"], &SERVICE_KEYS);
    assert_eq!(entry["Service"]["Service"], "web");
    assert_eq!(entry["Service"]["Port"], 8080);
    assert_eq!(entry["Service"]["Tags"], serde_json::json!(["dev"]));
    assert_eq!(
        entry["Service"]["Weights"],
        serde_json::json!({"Passing": 1, "Warning": 1})
    );
    let checks = entry["Checks"].as_array().expect("checks");
    let mut ids: Vec<&str> = checks
        .iter()
        .map(|c| c["CheckID"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["serfHealth", "web-leader"], "{checks:?}");
    for c in checks {
        assert_keys(c, &CHECK_KEYS);
        assert_eq!(c["Status"], "passing", "{c}");
    }
    let web = checks
        .iter()
        .find(|c| c["CheckID"] == "web-leader")
        .unwrap();
    assert_eq!(web["Name"], "Agent API answers");
    assert_eq!(web["Type"], "http");
    assert_eq!(web["ServiceID"], "web");
    assert_eq!(web["Interval"], "1s");
    // Consul's HTTP check output: "HTTP GET <url>: 200 OK Output: <body>".
    let output = web["Output"].as_str().unwrap();
    assert!(
        output.starts_with(&format!("HTTP GET {check_url}: 200 OK Output: ")),
        "{output}"
    );
    let serf = checks
        .iter()
        .find(|c| c["CheckID"] == "serfHealth")
        .unwrap();
    assert_eq!(serf["Name"], "Serf Health Status");
    assert_eq!(serf["Output"], "Agent alive and reachable");
}
