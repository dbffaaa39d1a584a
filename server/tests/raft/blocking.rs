//! Blocking-query waits against a running server.

use std::time::Duration;

use muster_server::Table;
use muster_server::catalog::query::tables;
use tokio::time::Instant;

use crate::support::{TestServer, register};

#[tokio::test]
async fn wait_wakes_on_a_write_and_times_out_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::single(dir.path()).await;
    let h = server.handle.clone();
    let first = h.write(register("db1", 1)).await.unwrap();
    let index = h.indexes().max_of(tables::CHECK_SERVICE_NODES);
    assert_eq!(index, first.index);

    // Nothing changes: the wait ends at its deadline with the same index.
    let started = Instant::now();
    let deadline = started + Duration::from_millis(300);
    let got = h
        .wait_for_change(tables::SERVICE_NODES, index, deadline)
        .await;
    assert_eq!(got, index);
    assert!(started.elapsed() >= Duration::from_millis(290));

    // A waiter wakes as soon as a write lands in a table it watches.
    let waiter = {
        let h = h.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let got = h.wait_for_change(&[Table::Services], index, deadline).await;
            (got, Instant::now())
        })
    };
    tokio::task::yield_now().await;
    let second = h.write(register("db2", 2)).await.unwrap();
    let written = Instant::now();
    let (got, woke) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("waiter wakes")
        .unwrap();
    assert_eq!(got, second.index);
    assert!(woke.saturating_duration_since(written) < Duration::from_secs(2));

    // An identical re-registration does not wake anyone.
    let index = h.indexes().max_of(&Table::ALL);
    let waiter = {
        let h = h.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_millis(500);
            h.wait_for_change(&Table::ALL, index, deadline).await
        })
    };
    h.write(register("db2", 2)).await.unwrap();
    assert_eq!(waiter.await.unwrap(), index);

    // Shutdown wakes waiters well before their deadline.
    let waiter = {
        let h = h.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(600);
            h.wait_for_change(&Table::ALL, u64::MAX, deadline).await
        })
    };
    server.stop().await;
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("shutdown wakes blocking queries")
        .unwrap();
}
