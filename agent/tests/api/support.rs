//! Test harness: one agent in-process: a real catalog server (bootstrapped alone) in a temp
//! dir, a real `LocalState` and the HTTP API on 127.0.0.1:0, queried with reqwest. Waits are
//! conditions polled with deadlines, never bare sleeps.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use muster::config::{AgentArgs, RuntimeConfig, load_with_hostname};
use muster::http::{HttpContext, serve};
use muster::local::{LocalOptions, LocalState};
use muster::node::{AgentControl, ControlRequest, Member, MemberStatus, Members, NodeIdentity};
use muster_server::{CatalogServer, ServerConfig, ServerHandle, raft_id_from_node_id};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const NODE: &str = "node1";
pub const NODE_ID: &str = "40e4a748-2192-161a-0510-9bf59fe950b5";

/// How an agent is started.
#[derive(Clone)]
pub struct Options {
    /// Extra top-level config keys (JSON object), merged into the agent's config file.
    pub config: Value,
    /// Start a catalog server (false: a client agent with no servers yet).
    pub catalog: bool,
    /// Bootstrap the catalog server and wait for its leadership (false: a server that has
    /// not formed a cluster, so there is no leader).
    pub bootstrap: bool,
    /// Local state tunables.
    pub local: LocalOptions,
    /// Changes to the loaded configuration (settings that have no config key).
    pub tweak: fn(&mut RuntimeConfig),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: serde_json::json!({}),
            catalog: true,
            bootstrap: true,
            local: LocalOptions {
                full_sync_interval: Duration::from_secs(60),
                retry_interval: Duration::from_millis(300),
                reap_interval: Duration::from_millis(200),
            },
            tweak: |_| {},
        }
    }
}

/// What the runtime's control loop was asked to do.
#[derive(Debug, Default)]
pub struct ControlLog {
    pub reloads: usize,
    pub leaves: usize,
}

/// One agent.
pub struct TestAgent {
    pub dir: PathBuf,
    pub url: String,
    pub client: reqwest::Client,
    pub catalog: Option<ServerHandle>,
    pub local: LocalState,
    pub control: Arc<parking_lot::Mutex<ControlLog>>,
    /// What the next reload request is answered with.
    pub reload_reply: Arc<parking_lot::Mutex<Result<(), String>>>,
    token: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    options: Options,
    _tmp: Option<tempfile::TempDir>,
}

fn client() -> reqwest::Client {
    // reqwest is built without a default TLS provider; plain HTTP still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// Loads a runtime config the way `muster agent -config-file` does.
pub fn runtime_config(dir: &Path, extra: &Value) -> RuntimeConfig {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut config = serde_json::json!({
        "node_name": NODE,
        "data_dir": data.display().to_string(),
        "datacenter": "dc1",
    });
    if let (Some(base), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    let file = dir.join("agent.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let args = AgentArgs::parse_consul_style([format!("-config-file={}", file.display())]).unwrap();
    load_with_hostname(&args, NODE)
        .expect("config loads")
        .runtime
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

impl TestAgent {
    pub async fn start(options: Options) -> TestAgent {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut agent = Self::start_in(&dir, options).await;
        agent._tmp = Some(tmp);
        agent
    }

    /// Starts an agent on an existing directory (a restart keeps `data`).
    pub async fn start_in(dir: &Path, options: Options) -> TestAgent {
        let mut cfg = runtime_config(dir, &options.config);
        (options.tweak)(&mut cfg);
        let token = CancellationToken::new();
        let mut tasks = Vec::new();

        let rpc = bind().await;
        let rpc_addr: SocketAddr = rpc.local_addr().unwrap();
        let node = NodeIdentity {
            name: NODE.into(),
            id: NODE_ID.into(),
            datacenter: "dc1".into(),
            advertise_addr: "127.0.0.1".parse().unwrap(),
            server: options.catalog,
            bootstrap_expect: u32::from(options.catalog),
            serf_lan_port: 8301,
            server_port: options.catalog.then_some(rpc_addr.port()),
        };

        let catalog = if options.catalog {
            let config = ServerConfig::new(
                raft_id_from_node_id(NODE_ID).unwrap(),
                NODE,
                rpc_addr.to_string(),
                "dc1",
            );
            let handle = CatalogServer::start(config, &cfg.data_dir, token.clone())
                .await
                .expect("catalog starts");
            let router = handle.rpc_router();
            let stop = token.clone();
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(rpc, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
            }));
            if options.bootstrap {
                handle.bootstrap_single().await.unwrap();
                let h = handle.clone();
                wait_until("catalog leadership", Duration::from_secs(20), || {
                    let h = h.clone();
                    async move { h.is_leader().then_some(()) }
                })
                .await;
            }
            Some(handle)
        } else {
            None
        };

        let local =
            LocalState::start_with(&cfg, &node, catalog.clone(), token.clone(), options.local)
                .await
                .expect("local state starts");

        let (control, mut control_rx) = AgentControl::channel();
        let log = Arc::new(parking_lot::Mutex::new(ControlLog::default()));
        let reload_reply = Arc::new(parking_lot::Mutex::new(Ok(())));
        {
            let (log, reply) = (log.clone(), reload_reply.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(request) = control_rx.recv().await {
                    match request {
                        ControlRequest::Reload(tx) => {
                            log.lock().reloads += 1;
                            let _ = tx.send(reply.lock().clone());
                        }
                        ControlRequest::Leave(tx) => {
                            log.lock().leaves += 1;
                            let _ = tx.send(());
                        }
                    }
                }
            }));
        }

        let members = Members::new(vec![Member {
            name: NODE.into(),
            addr: "127.0.0.1".parse().unwrap(),
            port: 8301,
            tags: [
                ("role".to_string(), "consul".to_string()),
                ("dc".to_string(), "dc1".to_string()),
            ]
            .into(),
            status: MemberStatus::Alive,
        }]);
        let http = bind().await;
        let url = format!("http://{}", http.local_addr().unwrap());
        let ctx = HttpContext {
            node,
            config: Arc::new(ArcSwap::from_pointee(cfg)),
            local: local.clone(),
            catalog: catalog.clone(),
            members,
            control,
            shutdown: token.clone(),
        };
        tasks.push(tokio::spawn(async move {
            serve(http, ctx, None).await.expect("http serves");
        }));

        TestAgent {
            dir: dir.to_path_buf(),
            url,
            client: client(),
            catalog,
            local,
            control: log,
            reload_reply,
            token,
            tasks,
            options,
            _tmp: None,
        }
    }

    /// Stops everything and waits for it (bounded).
    pub async fn stop(mut self) -> (PathBuf, Option<tempfile::TempDir>, Options) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.local.stopped())
            .await
            .expect("local state stops");
        if let Some(c) = &self.catalog {
            c.shutdown().await;
        }
        for task in self.tasks.drain(..) {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("task stops")
                .unwrap();
        }
        (self.dir.clone(), self._tmp.take(), self.options.clone())
    }

    /// Stops and starts again on the same data directory.
    pub async fn restart(self) -> TestAgent {
        self.restart_with(|o| o).await
    }

    pub async fn restart_with(self, change: impl FnOnce(Options) -> Options) -> TestAgent {
        let (dir, tmp, options) = self.stop().await;
        let mut agent = Self::start_in(&dir, change(options)).await;
        agent._tmp = tmp;
        agent
    }

    /// Keeps a temp dir alive as long as this agent.
    pub fn keep_dir(&mut self, tmp: Option<tempfile::TempDir>) {
        self._tmp = tmp;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// GET expecting 200 and JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
    }

    pub async fn put(&self, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut request = self.client.put(self.url(path));
        if let Some(body) = body {
            request = request.body(serde_json::to_vec(&body).unwrap());
        }
        request.send().await.unwrap()
    }

    /// PUT expecting 200; returns the body.
    pub async fn put_ok(&self, path: &str, body: Option<Value>) -> String {
        let r = self.put(path, body).await;
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "PUT {path}: {text}");
        text
    }

    /// The catalog's health checks of this node, by CheckID.
    pub async fn catalog_checks(&self) -> serde_json::Map<String, Value> {
        let rows = self.get_json(&format!("/v1/health/node/{NODE}")).await;
        rows.as_array()
            .unwrap()
            .iter()
            .map(|c| (c["CheckID"].as_str().unwrap().to_owned(), c.clone()))
            .collect()
    }

    /// The catalog's services of this node, by ID.
    pub async fn catalog_services(&self) -> serde_json::Map<String, Value> {
        let body = self.get_json(&format!("/v1/catalog/node/{NODE}")).await;
        body.get("Services")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    }
}

/// Polls `check` until it yields a value or `timeout` passes.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A service body with a TTL check.
pub fn ttl_service(id: &str, ttl: &str) -> Value {
    serde_json::json!({
        "ID": id, "Name": "web", "Tags": ["primary"], "Port": 8080,
        "Check": {"CheckID": format!("{id}-ttl"), "Name": "ttl", "TTL": ttl}
    })
}
