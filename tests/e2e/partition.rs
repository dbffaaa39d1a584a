//! A network partition (issue 4): three servers in their own network namespaces on one
//! bridge; one follower's data link is cut. The majority keeps its leader and takes writes;
//! the isolated server refuses writes with `No cluster leader` within `rpc_hold_timeout`
//! instead of hanging, and its DNS answers from its replica until `max_stale`, then
//! SERVFAIL. Healed, it catches up: one leader, the same catalog (index and content) on
//! all three, every acknowledged write kept.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use crate::support::dns::{Transport, query};
use crate::support::netns::Lab;
use crate::support::{Agent, wait_for, wait_some};

const T: Duration = Duration::from_secs(60);

/// Server `i` of the lab: `db<i>`, bootstrap_expect 3, data and management addresses,
/// Consul's default ports (each namespace has its own), `max_stale` 8 s.
async fn server(lab: &Lab, i: usize) -> Agent {
    let joins: Vec<String> = (0..3).map(|j| lab.data_addr(j).to_string()).collect();
    let config = json!({
        "node_name": format!("db{i}"),
        "server": true,
        "bootstrap_expect": 3,
        "bind_addr": lab.data_addr(i).to_string(),
        "client_addr": lab.mgmt_addrs(i).1.to_string(),
        "retry_join": joins,
        "retry_interval": "1s",
        "dns_config": {"max_stale": "8s"},
        "services": [{"name": "db", "port": 3306}],
    });
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

/// `(status, body)` of a PUT with a 20 s client timeout (a hang would show as a timeout).
async fn put(agent: &Agent, path: &str, body: &Value) -> (u16, String, Duration) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let started = Instant::now();
    let r = client
        .put(agent.url(path))
        .body(body.to_string())
        .send()
        .await
        .expect("an answer, not a hang");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap(), started.elapsed())
}

fn node(name: &str) -> Value {
    json!({"Node": name, "Address": "192.0.2.5", "Service": {"Service": "ext", "ID": name}})
}

async fn leader(agent: &Agent) -> String {
    let r = agent.get("/v1/status/leader").await;
    if r.status == 200 {
        r.json().as_str().unwrap_or_default().to_owned()
    } else {
        String::new()
    }
}

/// A stale read of the nodes with its index.
async fn nodes(agent: &Agent) -> (u64, BTreeSet<String>) {
    let r = agent.get("/v1/catalog/nodes?stale").await;
    let names = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Node"].as_str().unwrap().to_owned())
        .collect();
    (r.index(), names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_server_refuses_writes_answers_stale_dns_and_catches_up() {
    // Declared first: dropped last, after the agents are gone.
    let lab = Lab::new(77, 3);
    let servers = {
        let (a, b, c) = tokio::join!(server(&lab, 0), server(&lab, 1), server(&lab, 2));
        [a, b, c]
    };
    let (leader_addr, took) = wait_some("one leader seen by all three", T, || async {
        let l = leader(&servers[0]).await;
        let all_agree =
            !l.is_empty() && leader(&servers[1]).await == l && leader(&servers[2]).await == l;
        all_agree.then_some(l)
    })
    .await;
    println!("cluster formed in namespaces, leader {leader_addr}, after {took:?}");
    for (i, server) in servers.iter().enumerate() {
        let (s, body, _) = put(
            server,
            "/v1/catalog/register",
            &node(&format!("before-{i}")),
        )
        .await;
        assert_eq!(s, 200, "{body}");
    }
    let db = |i: usize| {
        query(
            servers[i].dns,
            "db.service.consul.",
            RecordType::A,
            Transport::Udp,
        )
    };
    wait_for("db in DNS on every server", T, || async {
        for i in 0..3 {
            if db(i).await.a_addrs().len() != 3 {
                return false;
            }
        }
        true
    })
    .await;

    // Cut a follower's data link.
    let victim = (0..3)
        .find(|&i| !leader_addr.starts_with(&format!("{}:", lab.data_addr(i))))
        .expect("a follower");
    let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    lab.set_data_link(victim, false);
    let cut = Instant::now();

    // The isolated server still answers DNS from its replica.
    let r = db(victim).await;
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    // Writes through it fail with Consul's text, bounded by rpc_hold_timeout (7 s).
    let (s, body, took) = put(&servers[victim], "/v1/catalog/register", &node("isolated")).await;
    assert_eq!(
        (s, body.as_str()),
        (500, "No cluster leader"),
        "after {took:?}"
    );
    assert!(took < Duration::from_secs(15), "refused after {took:?}");
    // The majority keeps a leader and takes writes.
    for (n, &i) in others.iter().enumerate() {
        let name = format!("during-{n}");
        let took = wait_for("a write through the majority", T, || async {
            put(&servers[i], "/v1/catalog/register", &node(&name))
                .await
                .0
                == 200
        })
        .await;
        println!("write through db{i} during the partition after {took:?}");
    }
    // Past max_stale (8 s without the leader), the isolated server's DNS refuses to vouch.
    let took = wait_for(
        "SERVFAIL once the replica is older than max_stale",
        T,
        || async { db(victim).await.rcode() == ResponseCode::ServFail },
    )
    .await;
    let stale_after = cut.elapsed();
    println!("isolated DNS stale after {stale_after:?} (polled {took:?})");
    assert!(stale_after >= Duration::from_secs(7), "{stale_after:?}");
    // The majority's DNS is unaffected.
    assert_eq!(db(others[0]).await.rcode(), ResponseCode::NoError);

    // Heal: one leader, the same catalog everywhere, nothing lost, nothing from the isolated.
    lab.set_data_link(victim, true);
    let (catalog, took) = wait_some("the three catalogs equal again", T, || async {
        let (a, b, c) = (
            nodes(&servers[0]).await,
            nodes(&servers[1]).await,
            nodes(&servers[2]).await,
        );
        (a == b && b == c).then_some(a)
    })
    .await;
    println!("healed and caught up after {took:?} at index {}", catalog.0);
    for name in ["before-0", "before-1", "before-2", "during-0", "during-1"] {
        assert!(catalog.1.contains(name), "{name} lost: {:?}", catalog.1);
    }
    assert!(
        !catalog.1.contains("isolated"),
        "a refused write was applied"
    );
    let l = leader(&servers[0]).await;
    assert!(!l.is_empty());
    for s in &servers {
        assert_eq!(leader(s).await, l, "one leader");
    }
    // Its replica is fresh again at once: DNS answers (no more SERVFAIL).
    let took = wait_for("the healed server's DNS answering", T, || async {
        db(victim).await.rcode() == ResponseCode::NoError
    })
    .await;
    println!("healed server's DNS answering after {took:?}");
    // Gossip marks it alive again (its serfHealth was critical while it was cut off): the
    // announces to down members (every 2 s) tell it it was declared down, and it rejoins.
    let took = wait_for(
        "every instance back in DNS",
        Duration::from_secs(30),
        || async { db(victim).await.a_addrs().len() == 3 },
    )
    .await;
    println!("all three instances in DNS again after {took:?}");
    drop(servers);
    drop(lab);
}
