//! Packet loss and jitter (issue 4, part 3): five agents (three servers with `galeradb`, two
//! clients) in their own network namespaces on one bridge; every packet each of them sends
//! on the data network is dropped with probability 10 % or delayed by 0–50 ms
//! (`support::impair`, NFQUEUE: this kernel has no netem). For the whole run, polled every
//! second on every agent: all five members alive, `galeradb.service.consul` answering the
//! three servers; and afterwards no agent logged a member as down.
//!
//! CI runs it for `MUSTER_LOSS_SECS` (default 30 s); `tests/soak` runs it for 5 minutes.
//! `MUSTER_LOSS_LOG_LEVEL=debug MUSTER_LOSS_LOGS=<dir>` keeps the agents' logs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use crate::support::dns::{Transport, query};
use crate::support::impair::Impairment;
use crate::support::netns::Lab;
use crate::support::{Agent, wait_for};

const T: Duration = Duration::from_secs(90);
const AGENTS: usize = 5;
const SERVERS: usize = 3;
const LOSS: f64 = 0.10;
const JITTER: Duration = Duration::from_millis(50);

fn run_for() -> Duration {
    let secs = std::env::var("MUSTER_LOSS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// Agent `i`: a server with `galeradb` (a TCP check on its own HTTP port, inside its
/// namespace) for `i < 3`, else a client; Consul's default ports and timings.
async fn agent(lab: &Lab, i: usize) -> Agent {
    let joins: Vec<String> = (0..SERVERS).map(|j| lab.data_addr(j).to_string()).collect();
    let mgmt = lab.mgmt_addrs(i).1;
    let mut config = json!({
        "node_name": format!("n{i}"),
        "bind_addr": lab.data_addr(i).to_string(),
        "client_addr": mgmt.to_string(),
        "retry_join": joins,
        "retry_interval": "1s",
    });
    if let Ok(level) = std::env::var("MUSTER_LOSS_LOG_LEVEL") {
        config["log_level"] = json!(level);
    }
    if i < SERVERS {
        config["server"] = json!(true);
        config["bootstrap_expect"] = json!(SERVERS);
        config["services"] = json!([{
            "name": "galeradb",
            "port": 3306,
            "check": {"tcp": format!("{mgmt}:8500"), "interval": "1s", "timeout": "1s"},
        }]);
    }
    // `not_server`: no `-server` flag; the config file says which agents are servers.
    Agent::builder()
        .not_server()
        .node_from_config()
        .addresses_from_config()
        .ports_from_config()
        .in_netns(&lab.ns(i))
        .file("agent.json", config.to_string())
        .no_catalog_wait()
        .start()
        .await
}

/// How agent `a` sees the cluster: alive members, and the non-alive ones by name.
async fn members(a: &Agent) -> (usize, Vec<String>) {
    let r = a.get("/v1/agent/members").await;
    if r.status != 200 {
        return (0, vec![format!("HTTP {}", r.status)]);
    }
    let list = r.json();
    let mut alive = 0;
    let mut others = Vec::new();
    for m in list.as_array().into_iter().flatten() {
        // Consul's serf status: 1 alive, 2 leaving, 3 left, 4 failed.
        if m["Status"] == json!(1) {
            alive += 1;
        } else {
            others.push(format!("{}={}", m["Name"], m["Status"]));
        }
    }
    (alive, others)
}

async fn galeradb(a: &Agent) -> usize {
    query(
        a.dns,
        "galeradb.service.consul.",
        RecordType::A,
        Transport::Udp,
    )
    .await
    .a_addrs()
    .len()
}

fn serf_stats(v: &Value) -> String {
    let s = &v["Stats"]["serf_lan"];
    format!(
        "health_score {} probes_failed {} suspicions {} refuted {}",
        s["health_score"], s["probes_failed"], s["suspicions"], s["refuted"]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_loss_and_jitter_mark_nobody_failed_and_drop_nothing_from_dns() {
    // Declared first: dropped last, after the agents and the impairment are gone.
    let lab = Lab::new(78, AGENTS);
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        agents.push(agent(&lab, i).await);
    }
    let took = wait_for(
        "five alive members and galeradb ×3 everywhere",
        T,
        || async {
            for a in &agents {
                if members(a).await.0 != AGENTS || galeradb(a).await != SERVERS {
                    return false;
                }
            }
            true
        },
    )
    .await;
    println!("cluster of {AGENTS} formed in namespaces after {took:?}");

    let namespaces: Vec<String> = (0..AGENTS).map(|i| lab.ns(i)).collect();
    let impairment = Impairment::start(&namespaces, LOSS, JITTER);
    let length = run_for();
    println!(
        "impairing every data link for {length:?}: {:.0} % loss, 0–{} ms delay",
        LOSS * 100.0,
        JITTER.as_millis()
    );
    let started = Instant::now();
    let mut misses: BTreeMap<String, usize> = BTreeMap::new();
    let mut polls = 0usize;
    while started.elapsed() < length {
        let round = Instant::now();
        polls += 1;
        for (i, a) in agents.iter().enumerate() {
            let (alive, others) = members(a).await;
            if alive != AGENTS {
                let t = started.elapsed().as_secs_f32();
                eprintln!("{t:.1}s n{i} sees {alive} alive: {others:?}");
                *misses.entry(format!("n{i} members")).or_default() += 1;
            }
            let n = galeradb(a).await;
            if n != SERVERS {
                let t = started.elapsed().as_secs_f32();
                eprintln!("{t:.1}s n{i} DNS galeradb answers {n}");
                *misses.entry(format!("n{i} dns")).or_default() += 1;
            }
        }
        let rest = Duration::from_secs(1).saturating_sub(round.elapsed());
        tokio::time::sleep(rest).await;
    }
    let links = impairment.finish();
    for (i, a) in agents.iter().enumerate() {
        println!("n{i}: {}", serf_stats(&a.get_json("/v1/agent/self").await));
    }
    for (ns, s) in &links {
        println!(
            "{ns}: {} packets, {} dropped ({:.1} %), at most {} held",
            s.seen,
            s.dropped,
            s.loss() * 100.0,
            s.max_held
        );
    }
    // MUSTER_LOSS_LOGS=<dir>: keep every agent's log for a post-mortem.
    if let Ok(dir) = std::env::var("MUSTER_LOSS_LOGS") {
        for (i, a) in agents.iter().enumerate() {
            let path = std::path::Path::new(&dir).join(format!("n{i}.log"));
            std::fs::write(&path, a.stderr.text()).expect("write the log");
        }
    }
    let downs: Vec<String> = agents
        .iter()
        .enumerate()
        .flat_map(|(i, a)| {
            a.stderr
                .text()
                .lines()
                .filter(|l| l.contains("gossip: member down") || l.contains("declared down"))
                .map(|l| format!("n{i}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect();
    println!("{polls} polls of {AGENTS} agents over {length:?}");
    assert!(misses.is_empty(), "misses: {misses:?}");
    assert!(
        downs.is_empty(),
        "members marked down:\n{}",
        downs.join("\n")
    );
    // The impairment really happened: every link carried traffic and lost about 10 %.
    for (ns, s) in &links {
        assert!(s.seen >= 100, "{ns}: only {} packets", s.seen);
        assert!(
            (0.05..0.16).contains(&s.loss()),
            "{ns}: {:.1} % lost",
            s.loss() * 100.0
        );
    }
    drop(agents);
    drop(lab);
}
