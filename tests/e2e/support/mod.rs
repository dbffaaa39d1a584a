//! The end-to-end harness: real `muster` processes and the clients that talk to them.
//!
//! - [`Agent`] spawns `env!("CARGO_BIN_EXE_muster")` in its own temp dir (data dir, config
//!   dir, syslog socket path), every port 0 and a unique node name, reads stdout up to the
//!   `==> muster ready:` line (bounded) and keeps draining stdout and stderr on two threads
//!   into buffers tests can search (an undrained pipe would block the agent's logging).
//!   Signals go to the PID; every wait for an exit is bounded; Drop kills what is left.
//! - [`wait_for`] / [`wait_some`] poll a condition with a deadline: tests never sleep bare.
//! - [`dns`] is a DNS client over UDP and TCP; [`Resp`] and the `get`/`put` methods are the
//!   HTTP client (reqwest, no proxy).
//!
//! Invariants: parallel tests never share a port (all bound with port 0, by the agent or the
//! test) or a directory (one `TempDir` per agent); no process outlives its test.

pub mod dns;
pub mod impair;
pub mod netns;

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_muster");
/// How long an agent may take to print its ready line (a loaded 2-core CI box is slow).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a signalled agent, or a one-shot command, may take to exit.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(50);

/// A node name no other test in this run uses.
pub fn unique_node(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `probe` until it returns `Some`, at most `timeout`; panics naming `what` otherwise.
/// Returns the value and how long it took.
pub async fn wait_some<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return (v, start.elapsed());
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `cond` until it holds, at most `timeout`; panics naming `what` otherwise. Returns
/// how long it took.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_some(what, timeout, || {
        let fut = cond();
        async move { fut.await.then_some(()) }
    })
    .await
    .1
}

/// Text a child process wrote to one of its pipes, appended by a drain thread.
#[derive(Clone, Default)]
pub struct Output(Arc<Mutex<String>>);

impl Output {
    /// Everything so far.
    pub fn text(&self) -> String {
        self.0.lock().clone()
    }

    /// True when some line contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.0.lock().contains(needle)
    }

    /// Drains `pipe` on a thread until EOF; the thread ends when the child closes the pipe.
    fn drain(pipe: impl Read + Send + 'static) -> Output {
        let out = Output::default();
        let buf = out.0.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            // Bounded by the pipe: read_until returns 0 at EOF, when the child exits.
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                buf.lock().push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
        });
        out
    }
}

/// A finished one-shot command.
#[derive(Debug)]
pub struct Finished {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

/// Runs `muster <args>` to completion (bounded by [`EXIT_TIMEOUT`]) with extra environment
/// variables, and `CONSUL_HTTP_ADDR`/`MUSTER_HTTP_ADDR` removed unless given.
pub async fn run_muster(args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("MUSTER_HTTP_ADDR")
        .env_remove("CONSUL_HTTP_TOKEN")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(EXIT_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("muster {args:?} did not exit within {EXIT_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run muster {args:?}: {e}"));
    Finished {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// How to start an agent. Defaults: a single bootstrapping server (`-server
/// -bootstrap-expect 1`), a unique `-node`, 127.0.0.1 for everything, ports 0.
pub struct AgentBuilder {
    files: Vec<(String, String)>,
    config_dirs: Vec<PathBuf>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    server: bool,
    loopback_flags: bool,
    data_dir_flag: bool,
    ports_flags: bool,
    node: Option<String>,
    catalog_wait: bool,
    netns: Option<String>,
}

impl AgentBuilder {
    /// Writes `content` as `name` into the agent's config dir.
    pub fn file(mut self, name: &str, content: impl Into<String>) -> Self {
        self.files.push((name.to_owned(), content.into()));
        self
    }

    /// Writes `json` as `name` into the agent's config dir.
    pub fn json(self, name: &str, json: &Value) -> Self {
        let text = serde_json::to_string_pretty(json).expect("json");
        self.file(name, text)
    }

    /// Adds a `-config-dir` read after the agent's own config dir.
    pub fn config_dir(mut self, dir: &Path) -> Self {
        self.config_dirs.push(dir.to_owned());
        self
    }

    /// Adds command-line arguments (after the harness's own, so they override them).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| (*s).to_owned()));
        self
    }

    /// Sets an environment variable for the agent.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// No `-server -bootstrap-expect 1` (dev mode, or the config files decide).
    pub fn not_server(mut self) -> Self {
        self.server = false;
        self
    }

    /// Runs the agent inside this network namespace (`ip netns exec`); see [`netns`].
    pub fn in_netns(mut self, ns: &str) -> Self {
        self.netns = Some(ns.to_owned());
        self
    }

    /// Do not wait for the catalog to reach DNS after start (an agent whose DNS answers are
    /// filtered by ACLs never shows the `consul` service).
    pub fn no_catalog_wait(mut self) -> Self {
        self.catalog_wait = false;
        self
    }

    /// No `-node` flag: the config files (or the hostname) name the node.
    pub fn node_from_config(mut self) -> Self {
        self.node = None;
        self
    }

    /// No `-bind 127.0.0.1 -client 127.0.0.1`: the config files choose the addresses.
    pub fn addresses_from_config(mut self) -> Self {
        self.loopback_flags = false;
        self
    }

    /// No `-data-dir`: the config files choose it.
    pub fn data_dir_from_config(mut self) -> Self {
        self.data_dir_flag = false;
        self
    }

    /// No `-http-port 0 -dns-port 0 -server-port 0 -serf-lan-port 0`: the config files (or
    /// Consul's defaults) choose the ports, which then stay the same across restarts.
    pub fn ports_from_config(mut self) -> Self {
        self.ports_flags = false;
        self
    }

    /// Lays out the temp dir and returns the full command line.
    fn prepare(&self, dir: &Path) -> Vec<String> {
        let data = dir.join("data");
        let config = dir.join("config");
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::create_dir_all(&config).expect("config dir");
        for (name, content) in &self.files {
            std::fs::write(config.join(name), content).expect("config file");
        }
        let mut args = vec!["agent".to_owned()];
        if self.ports_flags {
            // Port 0 everywhere, gossip included, so parallel agents never collide.
            args.extend(
                [
                    "-http-port",
                    "0",
                    "-dns-port",
                    "0",
                    "-server-port",
                    "0",
                    "-serf-lan-port",
                    "0",
                ]
                .map(String::from),
            );
        }
        if self.loopback_flags {
            args.extend(["-bind", "127.0.0.1", "-client", "127.0.0.1"].map(String::from));
        }
        if self.data_dir_flag {
            args.push(format!("-data-dir={}", data.display()));
        }
        if self.server {
            args.extend(["-server".into(), "-bootstrap-expect".into(), "1".into()]);
        }
        if let Some(node) = &self.node {
            args.push(format!("-node={node}"));
        }
        args.push(format!("-config-dir={}", config.display()));
        for d in &self.config_dirs {
            args.push(format!("-config-dir={}", d.display()));
        }
        args.extend(self.args.iter().cloned());
        args
    }

    /// The environment every agent gets: syslog goes to a path inside its own temp dir, never
    /// to the host's `/dev/log`.
    fn full_env(&self, dir: &Path) -> Vec<(String, String)> {
        let mut env = vec![(
            "MUSTER_SYSLOG_SOCKET".to_owned(),
            dir.join("syslog.sock").display().to_string(),
        )];
        env.extend(self.env.iter().cloned());
        env
    }

    /// Starts the agent and waits for its ready line; panics (with its stderr) if it exits
    /// first or does not get ready within [`START_TIMEOUT`].
    pub async fn start(self) -> Agent {
        let tmp = tempfile::tempdir().expect("temp dir");
        let args = self.prepare(tmp.path());
        let env = self.full_env(tmp.path());
        let mut agent = Agent {
            node: self.node.clone(),
            catalog_wait: self.catalog_wait,
            netns: self.netns.clone(),
            args,
            env,
            process: None,
            stdout: Output::default(),
            stderr: Output::default(),
            http: "0.0.0.0:0".parse().expect("addr"),
            dns: "0.0.0.0:0".parse().expect("addr"),
            server: None,
            serf: None,
            client: http_client(),
            dir: tmp,
        };
        agent.spawn().await;
        agent
    }

    /// Runs the agent expecting it to exit by itself (a bad configuration), bounded by
    /// [`EXIT_TIMEOUT`]; panics if it prints the ready line instead.
    pub async fn run_to_exit(self) -> Finished {
        let tmp = tempfile::tempdir().expect("temp dir");
        let args = self.prepare(tmp.path());
        let env = self.full_env(tmp.path());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let envv: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let done = run_muster(&argv, &envv).await;
        assert!(
            !done.stdout.contains("==> muster ready"),
            "the agent started: {done:?}"
        );
        done
    }
}

fn http_client() -> reqwest::Client {
    // reqwest is built without a default TLS provider; the client needs one installed even
    // for plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// A signal for [`Agent::signal`].
#[derive(Clone, Copy, Debug)]
pub enum Signal {
    /// SIGTERM.
    Term,
    /// SIGINT.
    Int,
    /// SIGKILL.
    Kill,
    /// SIGHUP.
    Hup,
}

/// A running (or stopped) `muster agent` process and its temp dir.
pub struct Agent {
    node: Option<String>,
    catalog_wait: bool,
    netns: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    process: Option<Child>,
    /// Its stdout (banner, ready line) since the last (re)start.
    pub stdout: Output,
    /// Its stderr (the logs) since the last (re)start.
    pub stderr: Output,
    /// The HTTP API address.
    pub http: SocketAddr,
    /// The DNS address (UDP and TCP).
    pub dns: SocketAddr,
    /// The server RPC address (servers only).
    pub server: Option<SocketAddr>,
    /// The serf LAN (gossip) address, UDP and TCP.
    pub serf: Option<SocketAddr>,
    client: reqwest::Client,
    // Last: removed after Drop has killed the process.
    dir: tempfile::TempDir,
}

impl Agent {
    /// An agent with the defaults of [`AgentBuilder`].
    pub fn builder() -> AgentBuilder {
        AgentBuilder {
            files: Vec::new(),
            config_dirs: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            server: true,
            loopback_flags: true,
            data_dir_flag: true,
            ports_flags: true,
            catalog_wait: true,
            netns: None,
            node: Some(unique_node("e2e")),
        }
    }

    /// Starts a default agent with extra `args` and config `files` (name, JSON text).
    pub async fn start(args: &[&str], files: &[(&str, &str)]) -> Agent {
        let mut b = Agent::builder().args(args);
        for (name, content) in files {
            b = b.file(name, *content);
        }
        b.start().await
    }

    /// The node name given with `-node` (None when the config names it).
    pub fn node(&self) -> &str {
        self.node
            .as_deref()
            .expect("the node name comes from the config")
    }

    /// The agent's config dir (read again on reload).
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// The process ID of the current process.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("running").id()
    }

    /// `host:port` of the HTTP API.
    pub fn http_addr(&self) -> String {
        self.http.to_string()
    }

    async fn spawn(&mut self) {
        // `ip netns exec` enters the namespace and execs the agent: same PID.
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.as_str(), BIN]);
                c
            }
            None => Command::new(BIN),
        };
        let mut child = cmd
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {BIN}: {e}"));
        self.stdout = Output::drain(child.stdout.take().expect("stdout"));
        self.stderr = Output::drain(child.stderr.take().expect("stderr"));
        self.process = Some(child);
        let start = Instant::now();
        let line = loop {
            if let Some(line) = self
                .stdout
                .text()
                .lines()
                .find(|l| l.starts_with("==> muster ready:"))
            {
                break line.to_owned();
            }
            if let Ok(Some(status)) = self.process.as_mut().expect("child").try_wait() {
                // Give the drain threads a moment to collect the last words.
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "the agent exited ({status}) before it was ready\nargs: {:?}\nstdout:\n{}\nstderr:\n{}",
                    self.args,
                    self.stdout.text(),
                    self.stderr.text()
                );
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "the agent was not ready within {START_TIMEOUT:?}\nstderr:\n{}",
                self.stderr.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.split(',').next())
                .map(|a| {
                    a.parse::<SocketAddr>()
                        .unwrap_or_else(|e| panic!("{key}{a} in {line:?}: {e}"))
                })
        };
        self.http = field("http=").expect("http address in the ready line");
        self.dns = field("dns=").expect("dns address in the ready line");
        self.server = field("server=");
        self.serf = field("serf=");
        if self.server.is_some() && self.catalog_wait {
            self.wait_catalog().await;
        }
    }

    /// Waits until DNS answers from the catalog. Right after the ready line the DNS replica
    /// has not heard from the Raft leader yet and answers zone names with SERVFAIL (by
    /// design: it must not deny services it has not seen); a server's `consul` service shows
    /// that the catalog has reached DNS.
    pub async fn wait_catalog(&self) {
        let dns = self.dns;
        wait_for("the catalog to reach DNS", START_TIMEOUT, || async move {
            let r = dns::query(
                dns,
                "consul.service.consul.",
                hickory_proto::rr::RecordType::A,
                dns::Transport::Udp,
            )
            .await;
            r.rcode() == hickory_proto::op::ResponseCode::NoError
        })
        .await;
    }

    /// Sends `signal` to the agent's PID.
    pub fn signal(&self, signal: Signal) {
        use rustix::process::{Pid, Signal as Sig, kill_process};
        let sig = match signal {
            Signal::Term => Sig::TERM,
            Signal::Int => Sig::INT,
            Signal::Kill => Sig::KILL,
            Signal::Hup => Sig::HUP,
        };
        let pid = Pid::from_raw(i32::try_from(self.pid()).expect("pid")).expect("pid");
        kill_process(pid, sig).expect("kill");
    }

    /// Waits (bounded by `timeout`) for the process to exit; panics if it does not.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.process.as_mut().expect("started");
        let (status, _) = wait_some("the agent to exit", timeout, || {
            let status = child.try_wait().expect("try_wait");
            async move { status }
        })
        .await;
        status
    }

    /// Sends `signal` and waits for the exit.
    pub async fn stop(&mut self, signal: Signal) -> ExitStatus {
        self.signal(signal);
        self.wait_exit(EXIT_TIMEOUT).await
    }

    /// Starts the agent again on the same data and config dirs (new ports, new buffers);
    /// the previous process must have exited.
    pub async fn restart(&mut self) {
        if let Some(child) = self.process.as_mut() {
            assert!(
                child.try_wait().expect("try_wait").is_some(),
                "restart of a running agent"
            );
        }
        self.spawn().await;
    }

    /// `http://<http addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Resp {
        Resp::from(self.client.get(self.url(path)).send().await, path).await
    }

    /// PUT `path` with an optional JSON body.
    pub async fn put(&self, path: &str, body: Option<&Value>) -> Resp {
        let mut req = self.client.put(self.url(path));
        if let Some(b) = body {
            req = req.body(serde_json::to_vec(b).expect("json"));
        }
        Resp::from(req.send().await, path).await
    }

    /// PUT `path` with a raw body.
    pub async fn put_raw(&self, path: &str, body: &str) -> Resp {
        let req = self.client.put(self.url(path)).body(body.to_owned());
        Resp::from(req.send().await, path).await
    }

    /// Any method on `path`.
    pub async fn request(&self, method: reqwest::Method, path: &str) -> Resp {
        Resp::from(
            self.client.request(method, self.url(path)).send().await,
            path,
        )
        .await
    }

    /// PUT that must answer 200; returns the body.
    pub async fn put_ok(&self, path: &str, body: Option<&Value>) -> Resp {
        let r = self.put(path, body).await;
        assert_eq!(r.status, 200, "PUT {path}: {}", r.text);
        r
    }

    /// GET that must answer 200 with JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text);
        r.json()
    }

    /// Runs `muster <args> -http-addr=<this agent>`.
    pub async fn cli(&self, args: &[&str]) -> Finished {
        let flag = format!("-http-addr={}", self.http);
        let mut all: Vec<&str> = args.to_vec();
        all.push(&flag);
        run_muster(&all, &[]).await
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = self.process.as_mut()
            && child.try_wait().ok().flatten().is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP response, read whole.
#[derive(Debug)]
pub struct Resp {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body.
    pub text: String,
}

impl Resp {
    async fn from(r: reqwest::Result<reqwest::Response>, path: &str) -> Resp {
        let r = r.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        Resp {
            status,
            headers,
            text,
        }
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `X-Consul-Index` as a number.
    pub fn index(&self) -> u64 {
        self.header("X-Consul-Index")
            .unwrap_or_else(|| panic!("no X-Consul-Index: {self:?}"))
            .parse()
            .expect("numeric index")
    }
}

/// Asserts that `v` is an object with exactly these keys.
#[track_caller]
pub fn assert_keys(v: &Value, keys: &[&str]) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    let got: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = keys.iter().copied().collect();
    assert_eq!(got, want, "key set of {v:#}");
}

/// The workspace root (for `config-examples/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// Copies the files of `config-examples/<example>` into a new dir under `into`, passing each
/// parsed JSON file through `edit(file name, value)`.
pub fn copy_example(example: &str, into: &Path, mut edit: impl FnMut(&str, &mut Value)) -> PathBuf {
    let src = workspace().join("config-examples").join(example);
    let dst = into.join(example.replace('/', "-"));
    std::fs::create_dir_all(&dst).expect("example copy dir");
    let mut entries: Vec<_> = std::fs::read_dir(&src)
        .unwrap_or_else(|e| panic!("{}: {e}", src.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).expect("example file");
        if !name.ends_with(".json") {
            // HCL (and anything else) is copied as it is.
            std::fs::write(dst.join(&name), text).expect("write copy");
            continue;
        }
        let mut value: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        edit(&name, &mut value);
        std::fs::write(
            dst.join(&name),
            serde_json::to_vec_pretty(&value).expect("json"),
        )
        .expect("write copy");
    }
    dst
}
