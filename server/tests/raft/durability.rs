//! Acknowledged writes survive `kill -9`: a child process (this test binary, re-run in a
//! child role) writes and prints each acknowledgement, the parent kills it with SIGKILL
//! mid-stream, reopens the directory and finds every acknowledged write.

use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use muster_server::{Catalog, Consistency};

use crate::support::{TestServer, applied, register, wait_until};

const CHILD_DIR_ENV: &str = "MUSTER_SERVER_KILL9_CHILD_DIR";
const TEST_NAME: &str = "durability::acknowledged_writes_survive_kill_9";
/// Acknowledgements to collect before killing the writer.
const ACKS_BEFORE_KILL: usize = 40;
/// The child writes at most this many entries (it is killed long before).
const CHILD_MAX_WRITES: u64 = 5_000;

#[test]
fn acknowledged_writes_survive_kill_9() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        child_writer(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Process::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(ack) = line.strip_prefix("ACK ") {
                let mut parts = ack.split(' ');
                let index: u64 = parts.next().unwrap().parse().unwrap();
                let name = parts.next().unwrap().to_string();
                if tx.send((index, name)).is_err() {
                    break;
                }
            }
        }
    });
    let mut acked = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.len() < ACKS_BEFORE_KILL {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(ack) => acked.push(ack),
            Err(e) => {
                let _ = child.kill();
                panic!("writer stopped after {} acks: {e}", acked.len());
            }
        }
    }
    // SIGKILL while it is still writing.
    child.kill().unwrap();
    child.wait().unwrap();
    // Anything acknowledged before the kill landed counts too.
    acked.extend(rx.try_iter());
    reader.join().unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = TestServer::start(1, dir.path(), None).await;
        let h = server.handle.clone();
        assert!(h.is_initialized().await.unwrap());
        assert!(!h.bootstrap_single().await.unwrap());
        wait_until(
            "leadership after kill -9",
            Duration::from_secs(20),
            || async { h.is_leader().then_some(()) },
        )
        .await;
        let last = acked.iter().map(|(i, _)| *i).max().unwrap();
        applied(&h, last).await;
        let (catalog, _) = h.read(Consistency::Stale, Catalog::clone).await.unwrap();
        for (index, name) in &acked {
            let node = catalog
                .node(name)
                .unwrap_or_else(|| panic!("acknowledged write {name} at {index} was lost"));
            assert_eq!(node.create_index, *index);
        }
        server.stop().await;
    });
}

/// Child role: bootstrap a single server in `dir` and write until killed.
fn child_writer(dir: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = TestServer::start(1, std::path::Path::new(dir), None).await;
        let h = server.handle.clone();
        h.bootstrap_single().await.unwrap();
        for n in 1..=CHILD_MAX_WRITES {
            let name = format!("node{n}");
            let outcome = h.write(register(&name, n)).await.unwrap();
            assert!(outcome.result.is_ok());
            // Printed only after the write is acknowledged (committed, hence durable).
            println!("ACK {} {name}", outcome.index);
        }
        server.stop().await;
    });
}
