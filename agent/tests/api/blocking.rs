//! Blocking queries: wake on a change of the query's tables, time out with the same index,
//! return at once for an index the catalog has not reached, end at shutdown.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Options, TestAgent, ttl_service, wait_until};

async fn index_of(agent: &TestAgent, path: &str) -> u64 {
    let r = agent.get(path).await;
    assert_eq!(r.status(), 200);
    r.headers()["x-consul-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn synced_web(agent: &TestAgent) {
    agent
        .put_ok(
            "/v1/agent/service/register",
            Some(ttl_service("web", "60s")),
        )
        .await;
    wait_until("web in the catalog", Duration::from_secs(10), || async {
        let rows = agent.get_json("/v1/health/service/web").await;
        (rows.as_array().unwrap().len() == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn blocking_query_wakes_on_a_change_and_times_out_with_the_same_index() {
    let agent = TestAgent::start(Options::default()).await;
    synced_web(&agent).await;
    let index = index_of(&agent, "/v1/health/service/web").await;

    // Nothing changes: the wait runs out (plus at most 1/16 jitter) and the index is the same.
    let started = Instant::now();
    let r = agent
        .get(&format!("/v1/health/service/web?index={index}&wait=400ms"))
        .await;
    let elapsed = started.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-consul-index"].to_str().unwrap(),
        index.to_string()
    );
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

    // A check status change wakes a waiter on the health query.
    let client = agent.client.clone();
    let url = agent.url(&format!("/v1/health/service/web?index={index}&wait=30s"));
    let started = Instant::now();
    let waiter = tokio::spawn(async move {
        let r = client.get(url).send().await.unwrap();
        let idx: u64 = r.headers()["x-consul-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        (idx, r.json::<Value>().await.unwrap(), started.elapsed())
    });
    agent
        .put_ok("/v1/agent/check/pass/web-ttl?note=up", None)
        .await;
    let (new_index, rows, elapsed) = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the blocking query returns")
        .unwrap();
    assert!(new_index > index);
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    assert_eq!(rows[0]["Checks"][0]["Status"], "passing");
    agent.stop().await;
}

#[tokio::test]
async fn an_index_ahead_of_the_catalog_returns_at_once() {
    let agent = TestAgent::start(Options::default()).await;
    synced_web(&agent).await;
    let index = index_of(&agent, "/v1/catalog/services").await;
    let started = Instant::now();
    let ahead = index + 1_000_000;
    let r = agent
        .get(&format!("/v1/catalog/services?index={ahead}&wait=30s"))
        .await;
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        r.headers()["x-consul-index"].to_str().unwrap(),
        index.to_string()
    );
    agent.stop().await;
}

#[tokio::test]
async fn shutdown_ends_blocking_queries_quickly() {
    let agent = TestAgent::start(Options::default()).await;
    synced_web(&agent).await;
    let index = index_of(&agent, "/v1/catalog/nodes").await;
    let client = agent.client.clone();
    let url = agent.url(&format!("/v1/catalog/nodes?index={index}&wait=60s"));
    let waiter = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) });
    // Let the query reach the server and start waiting: a second query on the same index
    // returning after its own short wait shows the server is waiting on that index.
    let _ = agent
        .get(&format!("/v1/catalog/nodes?index={index}&wait=100ms"))
        .await;
    let started = Instant::now();
    agent.stop().await;
    let result = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the blocking query ends with the agent")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    if let Ok(status) = result {
        assert_eq!(status, 200);
    }
}
