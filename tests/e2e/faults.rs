//! The fault suite (issue 4): a three-server cluster of real processes broken on purpose.
//!
//! - Leader crash under write load: bounded writers register and deregister nodes through
//!   every server while the leader is killed with SIGKILL three times (and restarted each
//!   time). Afterwards every acknowledged write is there, no failed write is half-applied,
//!   and the three servers hold the same catalog (same index, same content).
//!
//! - Disk full: a single server whose `data_dir` is on a small tmpfs that the test fills:
//!   writes are refused at once with a clear error and one log line, nothing unsaved is
//!   acknowledged, reads go on, and writes come back by themselves when space returns.
//! - A corrupted or foreign Raft store file: the agent refuses to start, names the file,
//!   and leaves it as it was.
//!
//! Writers use their own HTTP client with a timeout: a killed server refuses connections and
//! that write simply failed. A failed write may still have been committed (the leader died
//! after committing, before answering), so it may be present, but then complete.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::cluster::{CLUSTER_TIMEOUT, Net, leader_of, three_servers};
use crate::support::{Agent, Signal, run_muster, wait_for, wait_some};

/// Writers running at once, and the most operations each may send.
const WRITERS: usize = 2;
const MAX_OPS: usize = 5_000;
/// How long the load may run in all (it normally stops much earlier).
const LOAD_DEADLINE: Duration = Duration::from_secs(240);

/// What the writers were told.
#[derive(Default)]
struct Outcomes {
    registered: BTreeSet<String>,
    register_failed: BTreeSet<String>,
    deregistered: BTreeSet<String>,
    deregister_failed: BTreeSet<String>,
}

impl Outcomes {
    fn acked(&self) -> usize {
        self.registered.len() + self.deregistered.len()
    }
}

/// A node with one service and one service check: a write that could be half-applied.
fn registration(name: &str) -> Value {
    json!({
        "Node": name,
        "Address": "192.0.2.10",
        "Service": {"Service": "load", "ID": name, "Port": 80},
        "Check": {"CheckID": format!("check-{name}"), "Name": "load check",
                  "Status": "passing", "ServiceID": name}
    })
}

/// One writer: register a new node per operation through the servers in turn, and every
/// third operation deregister one of its earlier acknowledged nodes.
async fn writer(
    id: usize,
    servers: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Outcomes>>,
) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let put = |via: SocketAddr, path: &'static str, body: Value| {
        let client = client.clone();
        async move {
            let r = client
                .put(format!("http://{via}{path}"))
                .body(body.to_string())
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 200 => r.text().await.is_ok_and(|t| t.trim() == "true"),
                _ => false,
            }
        }
    };
    let mut mine: Vec<String> = Vec::new();
    for op in 0..MAX_OPS {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let via = servers[(op + id) % servers.len()];
        let ok = if op % 3 == 2 && !mine.is_empty() {
            let name = mine.remove(0);
            let ok = put(via, "/v1/catalog/deregister", json!({"Node": name})).await;
            let mut o = out.lock();
            if ok {
                o.deregistered.insert(name);
            } else {
                o.deregister_failed.insert(name);
            }
            ok
        } else {
            let name = format!("w{id}-{op}");
            let ok = put(via, "/v1/catalog/register", registration(&name)).await;
            let mut o = out.lock();
            if ok {
                o.registered.insert(name.clone());
                mine.push(name);
            } else {
                o.register_failed.insert(name);
            }
            ok
        };
        if !ok {
            // Pacing, not waiting on a condition: a dead server refuses at once, and a
            // writer should not burn its operations while an election runs.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The leader as the first server other than `skip` that knows one reports it: its index
/// among the servers and its RPC address.
async fn leader_seen(servers: &[Agent], net: Net, skip: Option<usize>) -> Option<(usize, String)> {
    for (i, s) in servers.iter().enumerate() {
        if Some(i) == skip {
            continue;
        }
        let l = leader_of(s).await;
        if let Some(at) = (0..3).find(|&j| l.starts_with(&format!("{}:", net.server(j)))) {
            return Some((at, l));
        }
    }
    None
}

/// A server's catalog as a stale read sees it: the nodes, the `load` service instances and
/// every check, each with its indexes, plus the nodes' `X-Consul-Index`.
async fn catalog_dump(agent: &Agent) -> Option<(u64, Value, Value, Value)> {
    let nodes = agent.get("/v1/catalog/nodes?stale").await;
    let load = agent.get("/v1/catalog/service/load?stale").await;
    let checks = agent.get("/v1/health/state/any?stale").await;
    (nodes.status == 200 && load.status == 200 && checks.status == 200).then(|| {
        (
            nodes.index().max(load.index()).max(checks.index()),
            nodes.json(),
            load.json(),
            checks.json(),
        )
    })
}

fn names(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .filter_map(|v| v[field].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crashes_under_write_load_lose_nothing_acknowledged() {
    let net = Net(4);
    let tmp = tempfile::tempdir().expect("temp dir");
    let (_mysql, mut servers) = three_servers(net, tmp.path()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let out = Arc::new(Mutex::new(Outcomes::default()));
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.http).collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| tokio::spawn(writer(id, addrs.clone(), stop.clone(), out.clone())))
        .collect();
    // Whatever happens below, the writers stop by the deadline.
    let deadline = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LOAD_DEADLINE).await;
            stop.store(true, Ordering::Relaxed);
        })
    };

    for round in 0..3 {
        let before = out.lock().acked();
        wait_for(
            "writes acknowledged before the kill",
            CLUSTER_TIMEOUT,
            || {
                let out = out.clone();
                async move { out.lock().acked() >= before + 30 }
            },
        )
        .await;
        let (old, leader) = wait_some("a leader", CLUSTER_TIMEOUT, || {
            leader_seen(&servers, net, None)
        })
        .await
        .0;
        servers[old].stop(Signal::Kill).await;
        let acked_at_kill = out.lock().acked();
        let (_, took) = wait_some("a new leader", CLUSTER_TIMEOUT, || async {
            let seen = leader_seen(&servers, net, Some(old)).await;
            seen.filter(|(_, l)| *l != leader)
        })
        .await;
        wait_for(
            "writes acknowledged after the kill",
            CLUSTER_TIMEOUT,
            || {
                let out = out.clone();
                async move { out.lock().acked() >= acked_at_kill + 10 }
            },
        )
        .await;
        println!("round {round}: leader {leader} killed, new leader after {took:?}");
        servers[old].restart().await;
        wait_for(
            "the killed server back with a leader",
            CLUSTER_TIMEOUT,
            || {
                let s = &servers[old];
                async move { !leader_of(s).await.is_empty() }
            },
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    deadline.abort();

    // Every server converges on one catalog: same index, same content.
    let (dump, took) = wait_some(
        "identical catalogs on the three servers",
        CLUSTER_TIMEOUT,
        || {
            let servers = &servers;
            async move {
                let first = catalog_dump(&servers[0]).await?;
                for s in &servers[1..] {
                    if catalog_dump(s).await? != first {
                        return None;
                    }
                }
                Some(first)
            }
        },
    )
    .await;
    let (index, nodes, load, checks) = dump;
    let out = out.lock();
    println!(
        "{} registrations and {} deregistrations acknowledged, {} + {} failed; \
         catalogs identical at index {index} after {took:?}",
        out.registered.len(),
        out.deregistered.len(),
        out.register_failed.len(),
        out.deregister_failed.len()
    );

    let present: BTreeSet<String> = names(&nodes, "Node")
        .into_iter()
        .filter(|n| n.starts_with('w'))
        .collect();
    for name in &out.registered {
        if !out.deregistered.contains(name) && !out.deregister_failed.contains(name) {
            assert!(
                present.contains(name),
                "acknowledged registration {name} lost"
            );
        }
    }
    for name in &out.deregistered {
        assert!(
            !present.contains(name),
            "acknowledged deregistration of {name} lost"
        );
    }
    // Nothing half-applied: every node present has exactly its service and its check.
    let instances = names(&load, "Node");
    let check_nodes: Vec<String> = checks
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| {
            c["CheckID"]
                .as_str()
                .is_some_and(|id| id.starts_with("check-w"))
        })
        .filter_map(|c| c["Node"].as_str().map(str::to_owned))
        .collect();
    for name in &present {
        let svc = instances.iter().filter(|n| *n == name).count();
        let chk = check_nodes.iter().filter(|n| *n == name).count();
        assert_eq!((svc, chk), (1, 1), "{name}: services {svc}, checks {chk}");
    }
    assert_eq!(instances.len(), present.len(), "instances on absent nodes");
    assert_eq!(check_nodes.len(), present.len(), "checks on absent nodes");
}

/// A tmpfs the test mounts (it runs as root, as the suite does) and unmounts on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let done = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(
            done.success(),
            "mount tmpfs at {} (needs root)",
            at.display()
        );
        Tmpfs(at.to_path_buf())
    }

    fn free(&self) -> u64 {
        let s = rustix::fs::statvfs(&self.0).expect("statvfs");
        s.f_bavail * s.f_frsize
    }

    /// Takes all but `leave` bytes of the free space with one file.
    fn fill_leaving(&self, leave: u64) -> std::path::PathBuf {
        let path = self.0.join("filler");
        let file = std::fs::File::create(&path).expect("filler");
        let len = self.free().saturating_sub(leave);
        rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len)
            .expect("fallocate on tmpfs");
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_clearly_and_recovers() {
    let tmp = tempfile::tempdir().expect("temp dir");
    // Declared before the agent, so it is unmounted after the agent is gone.
    let disk = Tmpfs::mount(&tmp.path().join("mnt"), "160m");
    let data = disk.0.join("data");
    let mut agent = Agent::builder()
        .data_dir_from_config()
        .args(&[&format!("-data-dir={}", data.display())])
        .start()
        .await;
    agent.wait_catalog().await;
    let register = |name: String| {
        let agent = &agent;
        async move {
            let body = json!({"Node": name, "Address": "192.0.2.1",
                              "Service": {"Service": "disk", "ID": name}});
            agent.put("/v1/catalog/register", Some(&body)).await
        }
    };
    for i in 0..5 {
        assert_eq!(register(format!("before-{i}")).await.status, 200);
    }

    // Leave less than the 64 MiB reserve: writes are refused at once, with the reason.
    let filler = disk.fill_leaving(16 * 1024 * 1024);
    let started = std::time::Instant::now();
    let refused = register("while-full".into()).await;
    assert_eq!(refused.status, 500, "{}", refused.text);
    assert!(
        refused.text.starts_with("Disk full: ") && refused.text.contains("catalog writes need"),
        "{}",
        refused.text
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused promptly"
    );
    wait_for("the disk-full log line", CLUSTER_TIMEOUT, || async {
        agent.stderr.contains("data_dir is almost full")
    })
    .await;
    // Reads go on; the refused write is not there.
    let nodes = agent.get_json("/v1/catalog/nodes").await;
    let seen = names(&nodes, "Node");
    assert!(seen.contains(&"before-4".to_owned()) && !seen.contains(&"while-full".to_owned()));

    // Space returns: writes succeed again by themselves, and say so once in the log.
    std::fs::remove_file(&filler).expect("remove filler");
    wait_for("writes after space returned", CLUSTER_TIMEOUT, || async {
        register("after".into()).await.status == 200
    })
    .await;
    assert!(agent.stderr.contains("data_dir has free space again"));
    assert_eq!(
        agent
            .stderr
            .text()
            .matches("data_dir is almost full")
            .count(),
        1,
        "one line per transition"
    );
    // Everything acknowledged survives a restart.
    agent.stop(Signal::Term).await;
    agent.restart().await;
    agent.wait_catalog().await;
    let seen = names(&agent.get_json("/v1/catalog/nodes").await, "Node");
    for n in ["before-0", "before-4", "after"] {
        assert!(seen.contains(&n.to_owned()), "{n} lost: {seen:?}");
    }
    agent.stop(Signal::Term).await;
    drop(agent);
    drop(disk);
}

#[tokio::test]
async fn a_corrupted_or_foreign_raft_store_is_refused_and_kept() {
    // A real store first, then damaged in two ways.
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let flag = format!("-data-dir={}", data.display());
    let mut agent = Agent::builder()
        .data_dir_from_config()
        .args(&[&flag])
        .start()
        .await;
    agent.wait_catalog().await;
    agent.stop(Signal::Term).await;
    let store = data.join("raft").join("raft.redb");
    let start = [
        "agent",
        "-server",
        "-bootstrap-expect=1",
        "-bind=127.0.0.1",
        "-client=127.0.0.1",
        "-http-port=0",
        "-dns-port=0",
        "-server-port=0",
        "-serf-lan-port=0",
        &flag,
    ];
    let original = std::fs::read(&store).expect("the raft store exists");

    let mut damaged = original.clone();
    for b in damaged.iter_mut().skip(512).step_by(7).take(4096) {
        *b ^= 0x5a;
    }
    for (what, bytes) in [
        ("corrupted", damaged),
        ("foreign", b"this is somebody else's file\n".to_vec()),
    ] {
        std::fs::write(&store, &bytes).unwrap();
        let done = run_muster(&start, &[]).await;
        assert_eq!(done.code, Some(1), "{what}: {done:?}");
        assert!(!done.stdout.contains("muster ready"), "{what}: started");
        assert!(
            done.stderr.contains(&store.display().to_string()),
            "{what}: the error names the file: {}",
            done.stderr
        );
        assert!(!done.stderr.contains("panicked"), "{what}: {}", done.stderr);
        assert_eq!(
            std::fs::read(&store).unwrap(),
            bytes,
            "{what}: the file was changed"
        );
    }
    // The original file works again: nothing else was touched.
    std::fs::write(&store, &original).unwrap();

    // The log's segment files: damage with records after it is corruption (not a torn
    // tail to cut off), reported with the file and never repaired by dropping entries.
    let segment = std::fs::read_dir(data.join("raft").join("raft-log"))
        .expect("the raft log directory exists")
        .map(|e| e.unwrap().path())
        .min()
        .expect("a log segment");
    let log_original = std::fs::read(&segment).unwrap();
    let mut damaged = log_original.clone();
    // A payload byte of the first record (8-byte file header, 16-byte record header).
    damaged[8 + 16 + 2] ^= 0x01;
    std::fs::write(&segment, &damaged).unwrap();
    let done = run_muster(&start, &[]).await;
    assert_eq!(done.code, Some(1), "damaged segment: {done:?}");
    assert!(
        done.stderr.contains(&segment.display().to_string()) && done.stderr.contains("checksum"),
        "the error names the segment and the cause: {}",
        done.stderr
    );
    assert_eq!(std::fs::read(&segment).unwrap(), damaged, "segment changed");
    std::fs::write(&segment, &log_original).unwrap();

    agent.restart().await;
    agent.wait_catalog().await;
}
