//! Shared test helpers: a runner with its update stream, a tiny HTTP/1.1 server (plain and
//! TLS), a throwaway PKI, and process inspection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster_checks::{
    CheckDefinition, CheckRunner, CheckRunnerConfig, CheckRunnerHandle, CheckUpdate, HealthStatus,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout_at};
use tokio_util::sync::CancellationToken;

/// Generous bound for anything that should happen within a couple of intervals.
pub const WITHIN: Duration = Duration::from_secs(20);

/// A runner plus the receiving end of its updates; shuts down when dropped.
pub struct Runner {
    pub handle: CheckRunnerHandle,
    pub updates: mpsc::Receiver<CheckUpdate>,
    pub shutdown: CancellationToken,
    /// The latest update seen per check.
    pub latest: HashMap<String, CheckUpdate>,
}

impl Runner {
    pub fn start() -> Self {
        Runner::start_with(CheckRunnerConfig::default())
    }

    pub fn start_with(config: CheckRunnerConfig) -> Self {
        let (tx, updates) = mpsc::channel(1024);
        let shutdown = CancellationToken::new();
        let handle = CheckRunner::spawn_with(config, tx, shutdown.clone());
        Runner {
            handle,
            updates,
            shutdown,
            latest: HashMap::new(),
        }
    }

    pub async fn add(&self, def: CheckDefinition) {
        self.handle.add(def).await.expect("check added");
    }

    /// Waits until check `id` reports `status`, returning that update.
    pub async fn wait_for(&mut self, id: &str, status: HealthStatus) -> CheckUpdate {
        self.wait_until(id, |u| u.status == status).await
    }

    /// Waits until an update for `id` satisfies `pred`; the last one seen counts too.
    pub async fn wait_until(
        &mut self,
        id: &str,
        pred: impl Fn(&CheckUpdate) -> bool,
    ) -> CheckUpdate {
        if let Some(seen) = self.latest.get(id).filter(|u| pred(u)) {
            return seen.clone();
        }
        let deadline = Instant::now() + WITHIN;
        loop {
            let update = timeout_at(deadline, self.updates.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no matching update for {id} in {WITHIN:?}; last: {:?}",
                        self.latest.get(id)
                    )
                })
                .expect("runner alive");
            self.latest.insert(update.id.clone(), update.clone());
            if update.id == id && pred(&update) {
                return update;
            }
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `cond` every 20 ms until it holds or `within` passes.
pub async fn eventually(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep_until(Instant::now() + Duration::from_millis(20)).await;
    }
}

/// A request as the test server saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A tiny HTTP/1.1 server with fixed routes:
/// `/ok` 200, `/busy` 429, `/down` 503, `/redirect` 302 to `/ok`, `/loop` 302 to `/loop?1`
/// (and `/loop?n` to `/loop?n+1`),
/// `/slow` answers after 30 s, `/stream` sends an endless body, `/echo` returns the body.
pub struct TestServer {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl TestServer {
    pub async fn plain() -> Self {
        TestServer::start(None).await
    }

    pub async fn tls(config: Arc<rustls::ServerConfig>) -> Self {
        TestServer::start(Some(tokio_rustls::TlsAcceptor::from(config))).await
    }

    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = Arc::clone(&log);
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve(stream, log).await,
                        Some(acceptor) => {
                            // A client that rejects our certificate aborts the handshake.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(stream, log).await;
                            }
                        }
                    }
                });
            }
        });
        TestServer {
            addr,
            requests,
            task,
        }
    }

    pub fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.addr)
    }

    pub fn requests_starting(&self, prefix: &str) -> Vec<Recorded> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one request on a connection, then closes it.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, log: Arc<Mutex<Vec<Recorded>>>) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    log.lock().unwrap().push(request.clone());
    let (status, extra, body): (&str, String, Vec<u8>) = match request.path.as_str() {
        "/ok" => ("200 OK", String::new(), b"all good".to_vec()),
        "/busy" => (
            "429 Too Many Requests",
            String::new(),
            b"slow down".to_vec(),
        ),
        "/down" => (
            "503 Service Unavailable",
            String::new(),
            b"database unavailable".to_vec(),
        ),
        "/redirect" => ("302 Found", "Location: /ok\r\n".into(), b"moved".to_vec()),
        loop_path if loop_path.starts_with("/loop") => {
            // Each hop names the next one: /loop, /loop?1, /loop?2, ...
            let hop: u32 = loop_path
                .strip_prefix("/loop?")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let location = format!("Location: /loop?{}\r\n", hop + 1);
            ("302 Found", location, Vec::new())
        }
        "/echo" => ("200 OK", String::new(), request.body.clone()),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            ("200 OK", String::new(), b"too late".to_vec())
        }
        "/stream" => {
            let head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            // Bounded: at most ~60 MB or until the client hangs up.
            for _ in 0..60_000 {
                if stream.write_all(&[b'z'; 1024]).await.is_err() {
                    return;
                }
            }
            return;
        }
        _ => ("404 Not Found", String::new(), b"no such route".to_vec()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
}

/// Reads a request head (bounded to 64 KiB) and a `Content-Length` body.
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Recorded> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
        .min(1024 * 1024);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Recorded {
        method,
        path,
        headers,
        body,
    })
}

/// A throwaway CA and a server certificate it signed for `names` (DNS names only).
pub struct TestPki {
    pub ca_der: Vec<u8>,
    pub server_config: Arc<rustls::ServerConfig>,
}

pub fn test_pki(names: &[&str]) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "muster test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let leaf = CertificateParams::new(names)
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key)
        .unwrap();
    TestPki {
        ca_der: ca.der().to_vec(),
        server_config: Arc::new(server_config),
    }
}

/// The state letter of a process (`R`, `S`, `Z`...), or `None` once it no longer exists.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces; the state follows it.
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

/// Reads a pid a script wrote to `path`, waiting for it to appear.
pub async fn read_pid(path: &std::path::Path) -> u32 {
    let deadline = Instant::now() + WITHIN;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        sleep_until(Instant::now() + Duration::from_millis(20)).await;
    }
}
