//! Test harness: a server node is a catalog server with its RPC router, the cluster task and
//! the HTTP API (with a real `LocalState`), all on 127.0.0.1:0 in a directory that survives a
//! restart. The member list is shared by every node: the test plays converged gossip. Waits
//! are conditions polled with deadlines.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use muster::config::{AgentArgs, RuntimeConfig, load_with_hostname};
use muster::http::{HttpContext, serve};
use muster::local::{LocalOptions, LocalState};
use muster::node::{AgentControl, Member, MemberStatus, Members, NodeIdentity};
use muster::runtime::cluster::{self, ClusterSettings};
use muster_server::{CatalogServer, ServerConfig, ServerHandle, raft_id_from_node_id};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long any condition is waited for.
pub const WAIT: Duration = Duration::from_secs(30);

/// Cluster tunables of the nodes a test starts.
#[derive(Clone, Copy, Debug)]
pub struct Tunables {
    pub expect: u32,
    pub grace: Duration,
    pub interval: Duration,
}

impl Default for Tunables {
    fn default() -> Self {
        Tunables {
            expect: 3,
            grace: Duration::from_secs(2),
            interval: Duration::from_millis(200),
        }
    }
}

/// One server node.
pub struct TestNode {
    pub n: u64,
    pub name: String,
    pub uuid: String,
    pub raft_id: u64,
    pub rpc: SocketAddr,
    pub url: String,
    pub handle: ServerHandle,
    pub local: LocalState,
    token: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

pub fn uuid(n: u64) -> String {
    format!("{n:08x}-1111-4000-8000-000000000000")
}

fn runtime_config(dir: &Path, name: &str) -> RuntimeConfig {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = serde_json::json!({
        "node_name": name,
        "data_dir": data.display().to_string(),
        "datacenter": "dc1",
        "server": true,
    });
    let file = dir.join("agent.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let args = AgentArgs::parse_consul_style([format!("-config-file={}", file.display())]).unwrap();
    load_with_hostname(&args, name)
        .expect("config loads")
        .runtime
}

pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

impl TestNode {
    /// Starts node `n` in `dir` (kept across restarts) on fresh ports.
    pub async fn start(n: u64, dir: PathBuf, members: &Members, t: Tunables) -> TestNode {
        let name = format!("db{n}");
        let uuid = uuid(n);
        let raft_id = raft_id_from_node_id(&uuid).unwrap();
        let cfg = runtime_config(&dir, &name);
        let token = CancellationToken::new();
        let mut tasks = Vec::new();

        let rpc_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rpc = rpc_listener.local_addr().unwrap();
        let config = ServerConfig::new(raft_id, name.clone(), rpc.to_string(), "dc1");
        let handle = CatalogServer::start(config, &cfg.data_dir.join("raft"), token.clone())
            .await
            .expect("catalog starts");
        let router = handle.rpc_router();
        let stop = token.clone();
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(rpc_listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        }));

        let mut settings = ClusterSettings::new("dc1", raft_id, t.expect);
        settings.dead_server_grace = t.grace;
        settings.interval = t.interval;
        tasks.push(tokio::spawn(cluster::run(
            handle.clone(),
            members.clone(),
            settings,
            token.clone(),
        )));

        let node = NodeIdentity {
            name: name.clone(),
            id: uuid.clone(),
            datacenter: "dc1".into(),
            advertise_addr: "127.0.0.1".parse().unwrap(),
            server: true,
            bootstrap_expect: t.expect,
            serf_lan_port: 8301,
            server_port: Some(rpc.port()),
        };
        let options = LocalOptions {
            full_sync_interval: Duration::from_secs(60),
            retry_interval: Duration::from_millis(300),
            reap_interval: Duration::from_millis(200),
        };
        let local =
            LocalState::start_with(&cfg, &node, Some(handle.clone()), token.clone(), options)
                .await
                .expect("local state starts");
        let (control, mut control_rx) = AgentControl::channel();
        tasks.push(tokio::spawn(async move {
            // Nothing here reloads or leaves; just answer.
            while let Some(request) = control_rx.recv().await {
                drop(request);
            }
        }));
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", http.local_addr().unwrap());
        let ctx = HttpContext {
            node,
            config: Arc::new(ArcSwap::from_pointee(cfg)),
            local: local.clone(),
            catalog: Some(handle.clone()),
            members: members.clone(),
            control,
            shutdown: token.clone(),
        };
        tasks.push(tokio::spawn(async move {
            let _ = serve(http, ctx, None).await;
        }));
        TestNode {
            n,
            name,
            uuid,
            raft_id,
            rpc,
            url,
            handle,
            local,
            token,
            tasks,
        }
    }

    /// This node as a gossip member with the given status.
    pub fn member(&self, status: MemberStatus, expect: u32) -> Member {
        let mut tags = BTreeMap::new();
        for (k, v) in [
            ("role", "consul".to_owned()),
            ("dc", "dc1".to_owned()),
            ("id", self.uuid.clone()),
            ("port", self.rpc.port().to_string()),
            ("expect", expect.to_string()),
        ] {
            tags.insert(k.to_owned(), v);
        }
        Member {
            name: self.name.clone(),
            addr: self.rpc.ip(),
            port: 8301,
            tags,
            status,
        }
    }

    /// Stops everything and waits for it (bounded).
    pub async fn stop(self) {
        self.token.cancel();
        self.handle.shutdown().await;
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("node task stops")
                .unwrap();
        }
    }
}

/// Sets the shared member list.
pub fn set_members(members: &Members, list: &[(&TestNode, MemberStatus)], expect: u32) {
    members.set(
        list.iter()
            .map(|(node, status)| node.member(*status, expect))
            .collect(),
    );
}

/// Polls `check` until it yields a value or [`WAIT`] passes.
pub async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The node that leads, once every given node agrees on it.
pub async fn agreed_leader<'a>(nodes: &[&'a TestNode]) -> &'a TestNode {
    wait_until("an agreed leader", || async {
        let first = nodes[0].handle.status().leader_id?;
        let agreed = nodes
            .iter()
            .all(|n| n.handle.status().leader_id == Some(first));
        let leader = nodes.iter().find(|n| n.raft_id == first)?;
        (agreed && leader.handle.is_leader()).then_some(*leader)
    })
    .await
}

/// The voters in a node's Raft configuration.
pub fn voters(node: &TestNode) -> BTreeSet<u64> {
    node.handle
        .status()
        .servers
        .iter()
        .filter(|s| s.voter)
        .map(|s| s.id)
        .collect()
}

/// Waits until `node` sees exactly `expected` as voters.
pub async fn wait_voters(node: &TestNode, expected: &[&TestNode]) {
    let want: BTreeSet<u64> = expected.iter().map(|n| n.raft_id).collect();
    wait_until(&format!("voters {want:?} on {}", node.name), || async {
        (voters(node) == want).then_some(())
    })
    .await;
}
