//! The seed scenario (issue part 10): `config-examples/galera/node1` run alone with
//! `-bootstrap-expect 1`. A TCP listener the test owns stands in for MySQL;
//! `galeradb.service.consul` answers while it accepts, is NXDOMAIN with the SOA once it closes
//! (within the check's interval plus timeout, plus the sync), and answers again once it
//! reopens. Only the check's target and `data_dir` are rewritten; the example's own 10 s
//! interval and 1 s timeout are kept, so this is the suite's slowest test.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::support::dns::{BOTH, Transport, query};
use crate::support::{Agent, copy_example, wait_for};

/// The example's check: interval 10 s, timeout 1 s.
const INTERVAL_PLUS_TIMEOUT: Duration = Duration::from_secs(11);
/// What the test allows on top for the probe scheduling, the catalog write and the DNS
/// publication; the measured time is printed.
const SYNC_MARGIN: Duration = Duration::from_secs(5);

/// A TCP listener that accepts and drops connections, as MySQL's port would for a probe.
struct MysqlStandIn {
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl MysqlStandIn {
    async fn open_on(addr: SocketAddr) -> std::io::Result<MysqlStandIn> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            // Ends when the test aborts the task (close) or the runtime stops.
            while let Ok((conn, _)) = listener.accept().await {
                drop(conn);
            }
        });
        Ok(MysqlStandIn {
            addr,
            task: Some(task),
        })
    }

    /// Closes the port: the listener is dropped with its task, so connects are refused.
    async fn close(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Opens the same address again.
    async fn reopen(&mut self) {
        *self = MysqlStandIn::open_on(self.addr)
            .await
            .unwrap_or_else(|e| panic!("cannot reopen {}: {e}", self.addr));
    }
}

/// The four names the scenario's clients use, with the type each is asked with.
const NAMES: [(&str, RecordType); 4] = [
    ("galeradb.service.consul.", RecordType::A),
    ("galeradb.service.consul.", RecordType::SRV),
    ("icinga-galera.galeradb.service.consul.", RecordType::A),
    ("_galeradb._tcp.service.consul.", RecordType::SRV),
];

async fn answers(agent: &Agent, transport: Transport) -> bool {
    let r = query(agent.dns, NAMES[0].0, RecordType::A, transport).await;
    r.rcode() == ResponseCode::NoError && !r.answers().is_empty()
}

async fn is_nxdomain(agent: &Agent, transport: Transport) -> bool {
    query(agent.dns, NAMES[0].0, RecordType::A, transport)
        .await
        .rcode()
        == ResponseCode::NXDomain
}

/// Every name answers, over both transports, with the node's address and SRV glue.
async fn assert_all_answer(agent: &Agent, node_ip: Ipv4Addr) {
    for transport in BOTH {
        for (name, rtype) in NAMES {
            let r = query(agent.dns, name, rtype, transport).await;
            let what = format!("{name} {rtype} over {transport:?}: {}", r.summary());
            assert_eq!(r.rcode(), ResponseCode::NoError, "{what}");
            assert!(r.aa(), "authoritative: {what}");
            match rtype {
                RecordType::A => assert_eq!(r.a_addrs(), [node_ip], "{what}"),
                _ => {
                    let srv = r.srv();
                    assert_eq!(srv.len(), 1, "{what}");
                    assert_eq!(srv[0].target.to_ascii(), "db1.node.dc1.consul.", "{what}");
                    assert_eq!(srv[0].priority, 1, "{what}");
                    assert_eq!(
                        r.additional_a(),
                        [("db1.node.dc1.consul.".to_owned(), node_ip)],
                        "glue: {what}"
                    );
                }
            }
        }
    }
}

/// Every name is NXDOMAIN with the consul SOA in the authority section, over both transports.
async fn assert_all_nxdomain(agent: &Agent) {
    for transport in BOTH {
        for (name, rtype) in NAMES {
            let r = query(agent.dns, name, rtype, transport).await;
            let what = format!("{name} {rtype} over {transport:?}: {}", r.summary());
            assert_eq!(r.rcode(), ResponseCode::NXDomain, "{what}");
            assert!(r.aa(), "{what}");
            assert!(r.answers().is_empty(), "{what}");
            let (_, soa) = r
                .soa()
                .unwrap_or_else(|| panic!("SOA in authority: {what}"));
            assert_eq!(soa.mname.to_ascii(), "ns.consul.", "{what}");
            assert_eq!(soa.rname.to_ascii(), "hostmaster.consul.", "{what}");
        }
    }
}

async fn mysql_check_status(agent: &Agent) -> String {
    let checks = agent.get_json("/v1/health/checks/galeradb").await;
    let check = checks
        .as_array()
        .and_then(|a| a.iter().find(|c| c["CheckID"] == "mysql"))
        .unwrap_or_else(|| panic!("no mysql check: {checks}"))
        .clone();
    assert_eq!(check["Name"], "Check mysql port listening");
    check["Status"].as_str().expect("status").to_owned()
}

#[tokio::test]
async fn galeradb_follows_the_mysql_port() {
    // Linux routes all of 127/8 to loopback, so the example's own 127.0.0.11 is usable
    // there; elsewhere everything moves to 127.0.0.1.
    let node_ip = Ipv4Addr::new(127, 0, 0, 11);
    let (mut mysql, on_11) =
        match MysqlStandIn::open_on(SocketAddr::new(IpAddr::V4(node_ip), 0)).await {
            Ok(l) => (l, true),
            Err(_) => (
                MysqlStandIn::open_on("127.0.0.1:0".parse().unwrap())
                    .await
                    .expect("listener"),
                false,
            ),
        };
    let node_ip = if on_11 { node_ip } else { Ipv4Addr::LOCALHOST };

    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let target = mysql.addr.to_string();
    let config = copy_example("galera/node1", tmp.path(), |name, v| match name {
        "agent.json" => v["data_dir"] = Value::from(data_dir.display().to_string()),
        "galera.json" => v["service"]["check"]["tcp"] = Value::from(target.as_str()),
        other => panic!("unexpected example file {other}"),
    });
    let mut builder = Agent::builder()
        .not_server()
        .node_from_config()
        .data_dir_from_config()
        .config_dir(&config)
        .args(&["-bootstrap-expect", "1"]);
    if on_11 {
        builder = builder.addresses_from_config();
    }
    let agent = builder.start().await;
    assert!(
        agent.stdout.contains("Node name: 'db1'"),
        "{}",
        agent.stdout.text()
    );

    // The check starts critical and probes first within one interval.
    let up = wait_for("galeradb to answer", Duration::from_secs(30), || {
        answers(&agent, Transport::Udp)
    })
    .await;
    eprintln!("seed: galeradb answered {up:?} after start");
    assert_all_answer(&agent, node_ip).await;
    assert_eq!(mysql_check_status(&agent).await, "passing");

    // MySQL goes away.
    mysql.close().await;
    let closed_at = Instant::now();
    wait_for(
        "galeradb to be NXDOMAIN",
        INTERVAL_PLUS_TIMEOUT + SYNC_MARGIN + Duration::from_secs(10),
        || is_nxdomain(&agent, Transport::Udp),
    )
    .await;
    let down = closed_at.elapsed();
    eprintln!("seed: NXDOMAIN {down:?} after the port closed");
    assert!(
        down <= INTERVAL_PLUS_TIMEOUT + SYNC_MARGIN,
        "NXDOMAIN took {down:?}"
    );
    assert_all_nxdomain(&agent).await;
    assert_eq!(mysql_check_status(&agent).await, "critical");
    // The node itself still answers: only the service left.
    let r = query(agent.dns, "db1.node.consul.", RecordType::A, Transport::Udp).await;
    assert_eq!(r.a_addrs(), [node_ip], "{}", r.summary());

    // MySQL comes back.
    mysql.reopen().await;
    let reopened_at = Instant::now();
    wait_for(
        "galeradb to answer again",
        INTERVAL_PLUS_TIMEOUT + SYNC_MARGIN + Duration::from_secs(10),
        || answers(&agent, Transport::Tcp),
    )
    .await;
    let back = reopened_at.elapsed();
    eprintln!("seed: answers again {back:?} after the port reopened");
    assert!(
        back <= INTERVAL_PLUS_TIMEOUT + SYNC_MARGIN,
        "recovery took {back:?}"
    );
    assert_all_answer(&agent, node_ip).await;
    assert_eq!(mysql_check_status(&agent).await, "passing");
}
