//! Test harness: start servers on 127.0.0.1:0 with their RPC router served by axum, build
//! commands, and wait on conditions with deadlines (never bare sleeps).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use muster_server::{
    CatalogServer, Command, Deregistration, HealthCheck, HealthStatus, NodeService, Registration,
    ServerConfig, ServerHandle, ServerNode,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One running server with its RPC listener.
pub struct TestServer {
    pub handle: ServerHandle,
    pub addr: SocketAddr,
    pub id: u64,
    token: CancellationToken,
    http: JoinHandle<()>,
}

pub fn config(id: u64, addr: SocketAddr) -> ServerConfig {
    ServerConfig::new(id, format!("server{id}"), addr.to_string(), "dc1")
}

impl TestServer {
    /// Binds 127.0.0.1:0 (or `addr`, to come back on the same port) and starts a server.
    pub async fn start(id: u64, dir: &Path, addr: Option<SocketAddr>) -> TestServer {
        let listener = bind(addr).await;
        let addr = listener.local_addr().unwrap();
        Self::start_with(config(id, addr), dir, listener).await
    }

    pub async fn start_with(cfg: ServerConfig, dir: &Path, listener: TcpListener) -> TestServer {
        let addr = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let id = cfg.node_id;
        let handle = CatalogServer::start(cfg, dir, token.clone())
            .await
            .expect("server starts");
        let router = handle.rpc_router();
        let stop = token.clone();
        let http = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .unwrap();
        });
        TestServer {
            handle,
            addr,
            id,
            token,
            http,
        }
    }

    /// A one-server cluster in `dir`, bootstrapped and leading.
    pub async fn single(dir: &Path) -> TestServer {
        let server = Self::start(1, dir, None).await;
        server.handle.bootstrap_single().await.unwrap();
        wait_until("leadership", Duration::from_secs(10), || async {
            server.handle.is_leader().then_some(())
        })
        .await;
        server
    }

    pub fn node(&self) -> ServerNode {
        ServerNode {
            name: format!("server{}", self.id),
            rpc_addr: self.addr.to_string(),
        }
    }

    /// Stops the RPC listener and the server, and waits for both.
    pub async fn stop(self) {
        self.token.cancel();
        self.handle.shutdown().await;
        tokio::time::timeout(Duration::from_secs(10), self.http)
            .await
            .expect("rpc listener stops")
            .unwrap();
    }
}

async fn bind(addr: Option<SocketAddr>) -> TcpListener {
    let addr = addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
    // A port just released may take a moment to be free again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every handle agrees on one leader; returns its id.
pub async fn agreed_leader(handles: &[&ServerHandle]) -> u64 {
    wait_until("an agreed leader", Duration::from_secs(20), || async {
        let leaders: Vec<Option<u64>> = handles.iter().map(|h| h.status().leader_id).collect();
        let first = leaders[0]?;
        let leader_is_leading = handles
            .iter()
            .any(|h| h.node_id() == first && h.is_leader());
        (leaders.iter().all(|l| *l == Some(first)) && leader_is_leading).then_some(first)
    })
    .await
}

/// Waits until the server has applied at least `index`.
pub async fn applied(handle: &ServerHandle, index: u64) {
    wait_until(
        &format!("index {index} applied"),
        Duration::from_secs(20),
        || async { (handle.status().applied_index >= Some(index)).then_some(()) },
    )
    .await;
}

pub fn node_uuid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// Registers node `name` with a `db` service and a passing TCP check on it.
pub fn register(name: &str, n: u64) -> Command {
    let definition = muster_server::CheckDefinition {
        tcp: "localhost:3306".into(),
        interval: "10s".into(),
        ..Default::default()
    };
    Command::Register(Registration {
        id: node_uuid(n),
        node: name.into(),
        address: format!("10.0.{}.{}", n / 250, n % 250 + 1),
        service: Some(NodeService {
            service: "db".into(),
            tags: vec!["primary".into()],
            port: 3306,
            ..NodeService::default()
        }),
        checks: vec![HealthCheck {
            check_id: "db-port".into(),
            name: "db port".into(),
            service_id: "db".into(),
            status: HealthStatus::Passing,
            definition,
            ..HealthCheck::default()
        }],
        ..Registration::default()
    })
}

pub fn deregister_node(name: &str) -> Command {
    Command::Deregister(Deregistration {
        node: name.into(),
        ..Deregistration::default()
    })
}

pub fn members(servers: &[&TestServer]) -> BTreeMap<u64, ServerNode> {
    servers.iter().map(|s| (s.id, s.node())).collect()
}
