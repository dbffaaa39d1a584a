//! One server: bootstrap, write, read, restart on the same directory.

use std::time::Duration;

use muster_server::{
    ApplyError, Catalog, Command, CommandResult, Consistency, HealthCheck, HealthStatus,
    NodeMetaFilter, RaftRole, Registration, ServiceFilter,
};
use tokio::time::Instant;

use crate::support::{
    TestServer, applied, config, deregister_node, node_uuid, register, wait_until,
};

#[tokio::test]
async fn bootstrap_write_read_and_restart_keep_catalog_and_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(1, dir.path(), None).await;
    let h = server.handle.clone();
    assert!(!h.is_initialized().await.unwrap());
    assert!(h.bootstrap_single().await.unwrap());
    assert!(
        !h.bootstrap_single().await.unwrap(),
        "second bootstrap is a no-op"
    );
    h.wait_for_leader(Instant::now() + Duration::from_secs(10))
        .await
        .expect("a leader");
    wait_until("leadership", Duration::from_secs(10), || async {
        h.is_leader().then_some(())
    })
    .await;

    let first = h.write(register("db1", 1)).await.unwrap();
    assert_eq!(first.result, CommandResult::Ok);
    let second = h.write(register("db2", 2)).await.unwrap();
    assert!(second.index > first.index);

    // The datacenter is filled in from the server config.
    let ((idx, nodes), meta) = h
        .read(Consistency::Default, |c| c.nodes(&NodeMetaFilter::new()))
        .await
        .unwrap();
    assert_eq!(idx, second.index);
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0].datacenter, "dc1");
    assert!(meta.known_leader);
    assert_eq!(meta.last_contact, Duration::ZERO);

    // An identical re-registration is logged but changes no index.
    let before = h.indexes();
    let again = h.write(register("db1", 1)).await.unwrap();
    assert!(again.index > second.index);
    assert_eq!(h.indexes(), before);

    let (rows, _) = h
        .read(Consistency::Consistent, |c| {
            c.check_service_nodes("DB", &ServiceFilter::default()).1
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);

    let gone = h.write(deregister_node("db2")).await.unwrap();
    let (snapshot, _) = h.read(Consistency::Stale, Catalog::clone).await.unwrap();
    assert!(snapshot.node("db2").is_none());
    assert_eq!(snapshot.indexes().nodes, gone.index);
    let status = h.status();
    assert_eq!(status.role, RaftRole::Leader);
    assert_eq!(
        status.leader_addr.as_deref(),
        Some(server.addr.to_string().as_str())
    );
    assert_eq!(h.voter_addrs(), vec![server.addr.to_string()]);
    assert!(status.commit_index >= Some(gone.index));

    // Restart on the same directory and port.
    let addr = server.addr;
    server.stop().await;
    let server = TestServer::start(1, dir.path(), Some(addr)).await;
    let h = server.handle.clone();
    assert!(h.is_initialized().await.unwrap());
    assert!(
        !h.bootstrap_single().await.unwrap(),
        "restart does not re-bootstrap"
    );
    applied(&h, gone.index).await;
    let (after, _) = h.read(Consistency::Stale, Catalog::clone).await.unwrap();
    assert_eq!(
        after, snapshot,
        "catalog and every index survive the restart"
    );
    // And it keeps working.
    wait_until(
        "leadership after restart",
        Duration::from_secs(10),
        || async { h.is_leader().then_some(()) },
    )
    .await;
    let third = h.write(register("db3", 3)).await.unwrap();
    assert!(third.index > gone.index);
    server.stop().await;
}

#[tokio::test]
async fn restart_from_snapshot_after_log_purge() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = config(1, addr);
    cfg.snapshot_threshold = 5;
    cfg.trailing_logs = 0;
    let server = TestServer::start_with(cfg.clone(), dir.path(), listener).await;
    let h = server.handle.clone();
    h.bootstrap_single().await.unwrap();
    let mut last = 0;
    for n in 1..=20 {
        last = h.write(register(&format!("db{n}"), n)).await.unwrap().index;
    }
    wait_until("a snapshot", Duration::from_secs(10), || async {
        h.status().snapshot_index.filter(|i| *i >= 10)
    })
    .await;
    let (before, _) = h.read(Consistency::Stale, Catalog::clone).await.unwrap();
    assert_eq!(before.node_count(), 20);
    server.stop().await;

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let server = TestServer::start_with(cfg, dir.path(), listener).await;
    let h = server.handle.clone();
    applied(&h, last).await;
    let (after, _) = h.read(Consistency::Stale, Catalog::clone).await.unwrap();
    assert_eq!(after, before);
    server.stop().await;
}

#[tokio::test]
async fn invalid_writes_are_refused_before_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(1, dir.path(), None).await;
    let h = server.handle.clone();
    h.bootstrap_single().await.unwrap();
    let missing_node = Command::Register(Registration {
        address: "10.0.0.1".into(),
        ..Registration::default()
    });
    let err = h.write(missing_node).await.unwrap_err();
    assert!(err.is_validation(), "{err:?}");
    assert_eq!(err.to_string(), "Must provide node");

    // A check bound to a service that is not registered: refused by the leader's pre-check.
    let orphan = Command::Register(Registration {
        node: "db1".into(),
        address: "10.0.0.1".into(),
        checks: vec![HealthCheck {
            check_id: "c".into(),
            service_id: "nosuch".into(),
            status: HealthStatus::Passing,
            ..HealthCheck::default()
        }],
        ..Registration::default()
    });
    let err = h.write(orphan).await.unwrap_err();
    assert!(err.is_validation(), "{err:?}");
    let last_log = h.status().last_log_index;
    assert!(
        h.read(Consistency::Stale, |c| c.node("db1").is_none())
            .await
            .unwrap()
            .0
    );
    assert_eq!(h.status().last_log_index, last_log, "nothing was logged");
    server.stop().await;
}

#[tokio::test]
async fn write_without_leader_fails_after_hold_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = config(1, listener.local_addr().unwrap());
    cfg.rpc_hold_timeout = Duration::from_millis(500);
    let server = TestServer::start_with(cfg, dir.path(), listener).await;
    // Never bootstrapped: there is no cluster and so no leader.
    let started = Instant::now();
    let err = server.handle.write(register("db1", 1)).await.unwrap_err();
    assert!(err.is_no_leader(), "{err:?}");
    assert_eq!(err.to_string(), "No cluster leader");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(450), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let err = server
        .handle
        .read(Consistency::Consistent, |c| c.node_count())
        .await
        .unwrap_err();
    assert!(err.is_no_leader(), "{err:?}");
    // Stale reads still answer, and say there is no leader.
    let (count, meta) = server
        .handle
        .read(Consistency::Stale, |c| c.node_count())
        .await
        .unwrap();
    assert_eq!(count, 0);
    assert!(!meta.known_leader);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_token_stops_the_server_and_refuses_work() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = config(1, listener.local_addr().unwrap());
    let token = tokio_util::sync::CancellationToken::new();
    let h = muster_server::CatalogServer::start(cfg, dir.path(), token.clone())
        .await
        .unwrap();
    h.bootstrap_single().await.unwrap();
    token.cancel();
    wait_until("shutdown", Duration::from_secs(10), || async {
        h.write(register("db1", 1))
            .await
            .err()
            .filter(|e| e.is_shutting_down())
    })
    .await;
    // The store is closed: the directory can be opened again.
    h.shutdown().await;
    let again = TestServer::start(1, dir.path(), None).await;
    again.stop().await;
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_entries_and_keep_their_own_results() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::single(dir.path()).await;
    let h = server.handle.clone();
    // "taken" belongs to a gossip-healthy node: another ID cannot register under its name.
    let owner = |id: u64| {
        Command::Register(Registration {
            id: node_uuid(id),
            node: "taken".into(),
            address: "10.9.0.1".into(),
            checks: vec![HealthCheck {
                check_id: "serfHealth".into(),
                name: "Serf Health Status".into(),
                status: HealthStatus::Passing,
                ..HealthCheck::default()
            }],
            ..Registration::default()
        })
    };
    assert!(h.write(owner(1)).await.unwrap().result.is_ok());
    let before = h.status().last_log_index;

    // 200 writers at once, one of them refused at apply time.
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..200u64 {
        let h = h.clone();
        writes.spawn(async move { (Some(i), h.write(register(&format!("c{i}"), 100 + i)).await) });
    }
    let clash = h.clone();
    writes.spawn(async move { (None, clash.write(owner(2)).await) });
    let mut indexes = std::collections::BTreeSet::new();
    while let Some(done) = writes.join_next().await {
        let (which, outcome) = done.unwrap();
        let outcome = outcome.unwrap();
        indexes.insert(outcome.index);
        match which {
            Some(i) => assert_eq!(outcome.result, CommandResult::Ok, "c{i}"),
            None => assert!(
                matches!(
                    outcome.result,
                    CommandResult::Rejected(ApplyError::NodeNameReserved { .. })
                ),
                "{:?}",
                outcome.result
            ),
        }
    }
    let (names, owner_id) = h
        .read(Consistency::Default, |c| {
            let names = (0..200)
                .filter(|i| c.node(&format!("c{i}")).is_some())
                .count();
            (names, c.node("taken").map(|n| n.id.clone()))
        })
        .await
        .unwrap()
        .0;
    assert_eq!(names, 200, "every acknowledged write is in the catalog");
    assert_eq!(
        owner_id,
        Some(node_uuid(1)),
        "the refused write changed nothing"
    );
    // Group commit: fewer entries than writes (each write still got its entry's index).
    let grew = h.status().last_log_index.unwrap() - before.unwrap();
    assert!(grew < 201, "{grew} entries for 201 concurrent writes");
    assert_eq!(
        indexes.len() as u64,
        grew,
        "writes report the entries they went into"
    );
    server.stop().await;
}
