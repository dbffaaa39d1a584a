//! Many checks on one agent: one scheduler, no task or thread per check.

use std::collections::HashSet;
use std::time::Duration;

use muster_checks::{CheckDefinition, CheckKind, HealthStatus};
use tokio::net::TcpListener;
use tokio::time::{Instant, timeout_at};

use crate::support::Runner;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_tcp_checks_against_one_listener_all_pass() {
    const CHECKS: usize = 3000;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });

    let mut runner = Runner::start();
    let started = Instant::now();
    for i in 0..CHECKS {
        let def = CheckDefinition::new(
            format!("svc-{i}"),
            CheckKind::Tcp {
                address: addr.to_string(),
            },
            Duration::from_secs(3),
        );
        runner.add(def).await;
    }

    // Each check starts critical and reports passing once; wait for all of them.
    let mut passing = HashSet::new();
    let deadline = started + Duration::from_secs(90);
    while passing.len() < CHECKS {
        let update = timeout_at(deadline, runner.updates.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {CHECKS} passing", passing.len()))
            .expect("runner alive");
        assert_eq!(update.status, HealthStatus::Passing, "{update:?}");
        assert_eq!(update.output, format!("TCP connect {addr}: Success"));
        passing.insert(update.id);
    }
    // Staggered over one 3 s interval; generous bound for a loaded 2-core machine.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    server.abort();
}
