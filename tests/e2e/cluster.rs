//! The cluster (issue 3): the Galera scenario from `config-examples/galera/node1..3` plus
//! client agents from `config-examples/client`, each a real `muster` process with the
//! example's own ports (Consul's defaults) on its own loopback address, gossip encrypted
//! with the example key.
//!
//! Each test gets its own `127.0.<net>.0/24` (the examples' 127.0.0.x addresses are rewritten)
//! so tests, and the seed test that runs `galera/node1` on 127.0.0.11, never see each other's
//! gossip. What is rewritten: addresses, `start_join`/`retry_join`, the MySQL check's target
//! (a listener the test owns) and, where a test waits for a check to fail, its interval.
//! Times are measured and printed (`-- --nocapture`); the bounds are generous.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::support::dns::{Transport, query};
use crate::support::{Agent, Signal, copy_example, wait_for, wait_some};

/// How long a cluster may take to form, a failure to reach DNS, a leader to be elected.
pub(crate) const CLUSTER_TIMEOUT: Duration = Duration::from_secs(60);
/// The example's gossip key; [`WRONG_KEY`] is another valid key.
const WRONG_KEY: &str = "aGVsbG8gd29ybGQhIGhlbGxvIHdvcmxkISEhISEhISE=";

/// A TCP listener standing in for MySQL: accepts and drops connections.
pub(crate) struct Mysql {
    pub(crate) addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Mysql {
    pub(crate) async fn open(addr: SocketAddr) -> Mysql {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("MySQL stand-in on {addr}: {e}"));
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                drop(conn);
            }
        });
        Mysql {
            addr,
            task: Some(task),
        }
    }

    async fn close(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// One test's address plan: servers on .11-.13, clients on .20 and up.
#[derive(Clone, Copy)]
pub(crate) struct Net(pub(crate) u8);

impl Net {
    pub(crate) fn server(self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, self.0, 11 + i as u8)
    }

    fn client(self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, self.0, 20 + i as u8)
    }

    /// Rewrites every `127.0.0.x` in a string of the examples into this net.
    fn rewrite(self, s: &str) -> String {
        s.replace("127.0.0.1", &format!("127.0.{}.1", self.0))
            .replace("127.0.0.2", &format!("127.0.{}.2", self.0))
    }

    /// Rewrites the addresses in an example's JSON value (recursors stay on 127.0.0.1).
    fn rewrite_value(self, v: &mut Value) {
        for key in ["bind_addr", "client_addr"] {
            if let Some(Value::String(s)) = v.get_mut(key) {
                *s = self.rewrite(s);
            }
        }
        for key in ["start_join", "retry_join"] {
            if let Some(Value::Array(list)) = v.get_mut(key) {
                for item in list {
                    if let Value::String(s) = item {
                        *s = self.rewrite(s);
                    }
                }
            }
        }
    }
}

/// Copies `config-examples/galera/node<i+1>` into `tmp`, rewritten for `net`, with the MySQL
/// check pointed at `mysql` every `interval`.
pub(crate) fn server_config(
    tmp: &Path,
    net: Net,
    i: usize,
    mysql: SocketAddr,
    interval: &str,
) -> std::path::PathBuf {
    copy_example(&format!("galera/node{}", i + 1), tmp, |name, v| {
        if name == "agent.json" {
            net.rewrite_value(v);
        } else {
            let check = &mut v["service"]["check"];
            check["tcp"] = json!(mysql.to_string());
            check["interval"] = json!(interval);
        }
    })
}

/// Copies `config-examples/client` for client `i` of `net` (node `monitor<i>`), optionally with
/// another gossip key.
pub(crate) fn client_config(
    tmp: &Path,
    net: Net,
    i: usize,
    key: Option<&str>,
) -> std::path::PathBuf {
    let into = tmp.join(format!("client{i}"));
    copy_example("client", &into, |name, v| {
        if name == "agent.json" {
            net.rewrite_value(v);
            v["bind_addr"] = json!(net.client(i).to_string());
            v["client_addr"] = json!(net.client(i).to_string());
            v["node_name"] = json!(format!("monitor{i}"));
            if let Some(key) = key {
                v["encrypt"] = json!(key);
            }
        }
    })
}

/// Starts an agent from an example config dir, with the example's node name, addresses and
/// ports; only the data dir is the test's.
pub(crate) async fn start_from(dir: &Path) -> Agent {
    Agent::builder()
        .not_server()
        .node_from_config()
        .addresses_from_config()
        .ports_from_config()
        .config_dir(dir)
        .start()
        .await
}

/// Starts the three servers at once (each waits for the others before it has a leader).
pub(crate) async fn start_servers(dirs: &[std::path::PathBuf]) -> Vec<Agent> {
    let (a, b, c) = tokio::join!(
        start_from(&dirs[0]),
        start_from(&dirs[1]),
        start_from(&dirs[2])
    );
    vec![a, b, c]
}

/// Three Galera servers of `net` in `tmp`, each with its MySQL stand-in, started together
/// and answering `galeradb.service.consul` with the three nodes.
pub(crate) async fn three_servers(net: Net, tmp: &Path) -> (Vec<Mysql>, Vec<Agent>) {
    let mut mysql = Vec::new();
    for i in 0..3 {
        mysql.push(Mysql::open(SocketAddr::new(net.server(i).into(), 0)).await);
    }
    let dirs: Vec<_> = (0..3)
        .map(|i| server_config(tmp, net, i, mysql[i].addr, "2s"))
        .collect();
    let servers = start_servers(&dirs).await;
    let all: BTreeSet<Ipv4Addr> = (0..3).map(|i| net.server(i)).collect();
    {
        let everyone: Vec<&Agent> = servers.iter().collect();
        wait_galera("the cluster answering", &everyone, &all).await;
    }
    (mysql, servers)
}

/// The A records of `galeradb.service.consul` at `agent` (empty unless NOERROR).
async fn galera_addrs(agent: &Agent) -> BTreeSet<Ipv4Addr> {
    let r = query(
        agent.dns,
        "galeradb.service.consul.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    if r.rcode() == ResponseCode::NoError {
        r.a_addrs().into_iter().collect()
    } else {
        BTreeSet::new()
    }
}

/// Waits until every agent in `agents` answers `galeradb.service.consul` with exactly `want`.
pub(crate) async fn wait_galera(
    what: &str,
    agents: &[&Agent],
    want: &BTreeSet<Ipv4Addr>,
) -> Duration {
    wait_for(what, CLUSTER_TIMEOUT, || async {
        for a in agents {
            if galera_addrs(a).await != *want {
                return false;
            }
        }
        true
    })
    .await
}

/// The leader's RPC address as `/v1/status/leader` on `agent` reports it ("" when none).
pub(crate) async fn leader_of(agent: &Agent) -> String {
    let r = agent.get("/v1/status/leader").await;
    if r.status != 200 {
        return String::new();
    }
    r.json().as_str().unwrap_or_default().to_owned()
}

/// The catalog's node names as `agent` sees them (stale read: any agent answers).
async fn catalog_nodes(agent: &Agent) -> BTreeSet<String> {
    read_nodes(agent, "/v1/catalog/nodes?stale").await
}

/// The catalog's node names read through the leader (empty while there is none).
async fn leader_catalog_nodes(agent: &Agent) -> BTreeSet<String> {
    read_nodes(agent, "/v1/catalog/nodes").await
}

async fn read_nodes(agent: &Agent, path: &str) -> BTreeSet<String> {
    let r = agent.get(path).await;
    if r.status != 200 {
        return BTreeSet::new();
    }
    r.json()
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["Node"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The gossip status of `node` in `agent`'s member list (None when not listed).
pub(crate) async fn member_status(agent: &Agent, node: &str) -> Option<u64> {
    let r = agent.get("/v1/agent/members").await;
    if r.status != 200 {
        return None;
    }
    r.json()
        .as_array()?
        .iter()
        .find(|m| m["Name"] == node)
        .and_then(|m| m["Status"].as_u64())
}

/// Registers an external node with one service through `agent`'s catalog API; true when the
/// write was acknowledged (200).
async fn register(agent: &Agent, name: &str) -> bool {
    let body = json!({
        "Node": name,
        "Address": "192.0.2.10",
        "Service": {"Service": "ext", "ID": name, "Port": 80}
    });
    agent.put("/v1/catalog/register", Some(&body)).await.status == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn galera_cluster_forms_fails_over_and_heals() {
    let net = Net(2);
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut mysql = Vec::new();
    for i in 0..3 {
        mysql.push(Mysql::open(SocketAddr::new(net.server(i).into(), 0)).await);
    }
    let dirs: Vec<_> = (0..3)
        .map(|i| server_config(tmp.path(), net, i, mysql[i].addr, "2s"))
        .collect();

    // --- three servers and two clients form one cluster; every DNS answers the three nodes.
    let mut servers = start_servers(&dirs).await;
    let mut clients = Vec::new();
    for i in 0..2 {
        clients.push(start_from(&client_config(tmp.path(), net, i, None)).await);
    }
    let all: BTreeSet<Ipv4Addr> = (0..3).map(|i| net.server(i)).collect();
    {
        let everyone: Vec<&Agent> = servers.iter().chain(&clients).collect();
        let took = wait_galera("galeradb with three nodes on every agent", &everyone, &all).await;
        println!("cluster formed and answering on every agent after {took:?}");
        for a in &everyone {
            let members = a.get_json("/v1/agent/members").await;
            assert_eq!(
                members.as_array().map(Vec::len),
                Some(5),
                "members: {members}"
            );
            let peers = a.get_json("/v1/status/peers").await;
            assert_eq!(peers.as_array().map(Vec::len), Some(3), "peers: {peers}");
        }
    }
    let names: Vec<String> = ["db1", "db2", "db3", "monitor0", "monitor1"]
        .map(String::from)
        .to_vec();
    let names: BTreeSet<String> = names.into_iter().collect();
    wait_for("every member in the catalog", CLUSTER_TIMEOUT, || async {
        catalog_nodes(&clients[0]).await.is_superset(&names)
    })
    .await;

    // --- one node's MySQL port closes: it leaves galeradb everywhere; reopens: back.
    mysql[2].close().await;
    let two: BTreeSet<Ipv4Addr> = (0..2).map(|i| net.server(i)).collect();
    {
        let everyone: Vec<&Agent> = servers.iter().chain(&clients).collect();
        let took = wait_galera("db3 out of galeradb after its port closed", &everyone, &two).await;
        println!("closed MySQL port out of DNS everywhere after {took:?}");
    }
    mysql[2] = Mysql::open(mysql[2].addr).await;
    {
        let everyone: Vec<&Agent> = servers.iter().chain(&clients).collect();
        wait_galera("db3 back in galeradb", &everyone, &all).await;
    }

    // --- kill -9 a non-leader server: it leaves DNS on every other agent; restart: back.
    let leader = leader_of(&clients[0]).await;
    let victim = (0..3)
        .find(|&i| !leader.starts_with(&format!("{}:", net.server(i))))
        .expect("a follower");
    servers[victim].stop(Signal::Kill).await;
    let rest: BTreeSet<Ipv4Addr> = (0..3)
        .filter(|&i| i != victim)
        .map(|i| net.server(i))
        .collect();
    {
        let others: Vec<&Agent> = servers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .map(|(_, a)| a)
            .chain(&clients)
            .collect();
        let took = wait_galera("the killed server out of DNS everywhere", &others, &rest).await;
        println!("kill -9 of a follower to DNS removal everywhere: {took:?}");
    }
    servers[victim].restart().await;
    {
        let everyone: Vec<&Agent> = servers.iter().chain(&clients).collect();
        let took = wait_galera("the restarted server back in DNS", &everyone, &all).await;
        println!("restarted follower back in DNS everywhere after {took:?}");
    }

    // --- kill -9 the leader: a new one is elected; no acknowledged write is lost.
    let mut acked = Vec::new();
    for i in 0..10 {
        let name = format!("before-{i}");
        let via = &servers[i % 3];
        if register(via, &name).await {
            acked.push(name);
        }
    }
    assert_eq!(acked.len(), 10, "writes with a healthy leader");
    let leader = leader_of(&clients[0]).await;
    let old = (0..3)
        .find(|&i| leader.starts_with(&format!("{}:", net.server(i))))
        .expect("a leader among the servers");
    servers[old].stop(Signal::Kill).await;
    let (new_leader, took) = wait_some("a new leader", CLUSTER_TIMEOUT, || async {
        let l = leader_of(&clients[1]).await;
        (!l.is_empty() && l != leader).then_some(l)
    })
    .await;
    println!("leader kill -9 to a new leader ({new_leader}) seen by a client: {took:?}");
    let took = wait_for(
        "a write through a client after the leader died",
        CLUSTER_TIMEOUT,
        || register(&clients[0], "after-kill"),
    )
    .await;
    println!("leader kill -9 to the next acknowledged write: {took:?}");
    acked.push("after-kill".to_owned());
    // Read through the leader: a stale read on the other client may lag the last write.
    let nodes = leader_catalog_nodes(&clients[1]).await;
    for name in &acked {
        assert!(nodes.contains(name), "acknowledged {name} lost: {nodes:?}");
    }
    servers[old].restart().await;
    {
        let everyone: Vec<&Agent> = servers.iter().chain(&clients).collect();
        wait_galera("the old leader back in DNS", &everyone, &all).await;
    }

    // --- graceful leave deregisters the node.
    let done = clients[1].cli(&["leave"]).await;
    assert_eq!(done.code, Some(0), "muster leave: {done:?}");
    clients[1].wait_exit(Duration::from_secs(30)).await;
    wait_for(
        "monitor1 deregistered after leave",
        CLUSTER_TIMEOUT,
        || async { !catalog_nodes(&servers[0]).await.contains("monitor1") },
    )
    .await;
    wait_for("monitor1 listed as left", CLUSTER_TIMEOUT, || async {
        member_status(&servers[0], "monitor1").await == Some(3)
    })
    .await;

    // --- force-leave of a failed node deregisters it.
    clients[0].stop(Signal::Kill).await;
    wait_for("monitor0 failed", CLUSTER_TIMEOUT, || async {
        member_status(&servers[1], "monitor0").await == Some(4)
    })
    .await;
    assert!(
        catalog_nodes(&servers[1]).await.contains("monitor0"),
        "a failed node stays"
    );
    servers[1]
        .put_ok("/v1/agent/force-leave/monitor0", None)
        .await;
    wait_for(
        "monitor0 deregistered after force-leave",
        CLUSTER_TIMEOUT,
        || async { !catalog_nodes(&servers[2]).await.contains("monitor0") },
    )
    .await;

    // --- a wrong gossip key cannot join; the others are unaffected.
    let mut intruder = start_from(&client_config(tmp.path(), net, 5, Some(WRONG_KEY))).await;
    wait_for(
        "the intruder to say why it cannot join",
        CLUSTER_TIMEOUT,
        || async {
            let log = intruder.stderr.text().to_ascii_lowercase();
            log.contains("decrypt") || log.contains("encrypt")
        },
    )
    .await;
    for a in &servers {
        assert_eq!(
            member_status(a, "monitor5").await,
            None,
            "the intruder joined"
        );
        for db in ["db1", "db2", "db3"] {
            assert_eq!(member_status(a, db).await, Some(1), "{db} alive");
        }
    }
    let alone = intruder.get_json("/v1/agent/members").await;
    assert_eq!(alone.as_array().map(Vec::len), Some(1), "intruder: {alone}");
    intruder.stop(Signal::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restart_keeps_the_catalog() {
    let net = Net(3);
    let tmp = tempfile::tempdir().expect("temp dir");
    let (_mysql, mut servers) = three_servers(net, tmp.path()).await;
    let all: BTreeSet<Ipv4Addr> = (0..3).map(|i| net.server(i)).collect();
    for i in 0..5 {
        assert!(register(&servers[i % 3], &format!("kept-{i}")).await);
    }
    for s in &mut servers {
        s.stop(Signal::Kill).await;
    }
    {
        let [a, b, c] = &mut servers[..] else {
            unreachable!("three servers")
        };
        tokio::join!(a.restart(), b.restart(), c.restart());
    }
    let took = wait_for(
        "a leader after the whole cluster restarted",
        CLUSTER_TIMEOUT,
        || async { !leader_of(&servers[0]).await.is_empty() },
    )
    .await;
    println!("whole-cluster restart to a leader: {took:?}");
    // A default read goes through the leader's read index: every acknowledged write must be
    // in it (a stale read on a follower may lag until the new leader's first commit).
    let (nodes, _) = wait_some(
        "a default read after the restart",
        CLUSTER_TIMEOUT,
        || async {
            let nodes = leader_catalog_nodes(&servers[2]).await;
            (!nodes.is_empty()).then_some(nodes)
        },
    )
    .await;
    for i in 0..5 {
        assert!(
            nodes.contains(&format!("kept-{i}")),
            "kept-{i} lost: {nodes:?}"
        );
    }
    {
        let everyone: Vec<&Agent> = servers.iter().collect();
        wait_galera("galeradb again after the restart", &everyone, &all).await;
    }
    assert!(register(&servers[1], "after-restart").await);
}
