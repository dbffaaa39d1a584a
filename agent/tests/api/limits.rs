//! Limits that keep one client from stopping the API for the others: slow header senders
//! (slowloris), connection floods from one address, oversized headers, slow bodies,
//! too many checks in one registration, and a flood of blocking queries.
//!
//! The attacker always connects from 127.0.0.2 and the well-behaved client from 127.0.0.1,
//! so per-client limits apply to the attacker only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout};

use crate::support::{Options, TestAgent, wait_until};

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn addr(agent: &TestAgent) -> SocketAddr {
    agent.url("").trim_start_matches("http://").parse().unwrap()
}

async fn connect_from(src: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(src, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether the server has closed `stream` (EOF or reset) within `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        match timeout(
            deadline.saturating_duration_since(Instant::now()),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // A response (431, 408...) before the close: keep reading.
            Ok(Ok(_)) => continue,
        }
    }
}

/// The status line of the first response read from `stream`.
async fn status_of(stream: &mut TcpStream) -> u16 {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(2).any(|w| w == b"\r\n") {
        let n = timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a response in time")
            .expect("readable");
        assert!(
            n > 0,
            "closed without a response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&got);
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn slowloris_clients_are_cut_off_and_others_are_served() {
    let agent = TestAgent::start(Options {
        config: json!({"limits": {"http_max_conns_per_client": 20}}),
        tweak: |c| c.http.header_read_timeout = Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    let to = addr(&agent);
    // Twenty connections that send a header byte every 100 ms and never finish.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = connect_from(ATTACKER, to).await;
        s.write_all(b"GET /v1/agent/self HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let trickle = tokio::spawn(async move {
        // Bounded: 30 rounds of 100 ms; writes to closed connections just fail.
        for _ in 0..30 {
            for s in &mut slow {
                let _ = s.write_all(b"X").await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        slow
    });
    // The 21st connection from the attacker is closed at once.
    let mut extra = connect_from(ATTACKER, to).await;
    assert!(closed_within(&mut extra, Duration::from_secs(5)).await);
    // Everyone else is served meanwhile, without delay.
    let started = Instant::now();
    for _ in 0..20 {
        let r = agent.get("/v1/agent/self").await;
        assert_eq!(r.status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The trickling connections are closed after the header timeout, though they never
    // stopped sending.
    let mut slow = trickle.await.unwrap();
    for s in &mut slow {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "a slow sender was kept"
        );
    }
    // Their slots came back: the attacker address may connect and be served again.
    let mut again = connect_from(ATTACKER, to).await;
    again
        .write_all(b"GET /v1/agent/self HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status_of(&mut again).await, 200);
    agent.stop().await;
}

#[tokio::test]
async fn oversized_headers_get_431_and_slow_bodies_408() {
    let agent = TestAgent::start(Options {
        config: json!({"http_config": {"max_header_bytes": 16384}}),
        tweak: |c| c.http.body_read_timeout = Duration::from_millis(500),
        ..Options::default()
    })
    .await;
    let big = |n: usize| format!("t{}", "x".repeat(n));
    let r = agent
        .client
        .get(agent.url("/v1/agent/self"))
        .header("X-Padding", big(20 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let r = agent
        .client
        .get(agent.url("/v1/agent/self"))
        .header("X-Padding", big(8 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A body announced as 200 bytes of which 10 arrive: 408, and others are unaffected.
    let mut s = TcpStream::connect(addr(&agent)).await.unwrap();
    s.write_all(
        b"PUT /v1/agent/service/register HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n{\"Name\": ",
    )
    .await
    .unwrap();
    assert_eq!(agent.get("/v1/agent/self").await.status(), 200);
    assert_eq!(status_of(&mut s).await, 408);
    agent.stop().await;
}

#[tokio::test]
async fn a_registration_with_too_many_checks_is_refused() {
    let agent = TestAgent::start(Options::default()).await;
    let service = |n: usize| {
        let checks: Vec<Value> = (0..n)
            .map(|i| json!({"CheckID": format!("c{i}"), "Name": "t", "TTL": "30s"}))
            .collect();
        json!({"Name": "web", "Port": 80, "Checks": checks})
    };
    let r = agent
        .put("/v1/agent/service/register", Some(service(65)))
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.text().await.unwrap(),
        "checks: too many checks for service web: 65 (at most 64)"
    );
    let services = agent.get_json("/v1/agent/services").await;
    assert_eq!(services, json!({}), "nothing half-registered");
    agent
        .put_ok("/v1/agent/service/register", Some(service(64)))
        .await;
    // The catalog endpoint has the same bound, in the catalog's words.
    let checks: Vec<Value> = (0..65)
        .map(|i| json!({"CheckID": format!("c{i}"), "Name": "t", "Status": "passing"}))
        .collect();
    let r = agent
        .put(
            "/v1/catalog/register",
            Some(json!({"Node": "n1", "Address": "10.0.0.1", "Checks": checks})),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("too many checks"));
    agent.stop().await;
}

#[tokio::test]
async fn a_flood_of_blocking_queries_gets_429_and_others_are_served() {
    let agent = TestAgent::start(Options {
        tweak: |c| c.http.max_blocking_queries = 8,
        ..Options::default()
    })
    .await;
    // Wait for a quiet catalog (the agent's own node sync bumps the index once at start),
    // so the waiters below stay blocked until the write at the end.
    let index_of = |r: &reqwest::Response| -> u64 {
        r.headers()["X-Consul-Index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let index = wait_until("a quiet catalog", Duration::from_secs(20), || async {
        let index = index_of(&agent.get("/v1/catalog/services").await);
        let path = format!("/v1/catalog/services?index={index}&wait=300ms");
        (index_of(&agent.get(&path).await) == index).then_some(index)
    })
    .await;
    let url = agent.url(&format!("/v1/catalog/services?index={index}&wait=60s"));
    // Eight queries from the attacker take every blocking slot...
    let attacker = reqwest::Client::builder()
        .no_proxy()
        .local_address(ATTACKER)
        .timeout(Duration::from_secs(90))
        .build()
        .unwrap();
    let mut waiting = Vec::new();
    for _ in 0..8 {
        let (c, u) = (attacker.clone(), url.clone());
        waiting.push(tokio::spawn(async move { c.get(u).send().await }));
    }
    // ...so the next blocking query is refused at once (with Consul-style text), not queued.
    let probe = agent.url(&format!("/v1/catalog/services?index={index}&wait=100ms"));
    let refused = wait_until(
        "the blocking slots to fill",
        Duration::from_secs(10),
        || {
            let (c, u) = (attacker.clone(), probe.clone());
            async move {
                let r = c.get(u).send().await.ok()?;
                (r.status() == 429).then_some(r)
            }
        },
    )
    .await;
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("Too many blocking queries")
    );
    // Non-blocking reads and writes go on for everyone.
    let started = Instant::now();
    agent
        .put_ok(
            "/v1/agent/service/register",
            Some(json!({"Name": "api", "Port": 81})),
        )
        .await;
    assert_eq!(agent.get("/v1/catalog/nodes").await.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The write wakes the eight waiters with the new index.
    for w in waiting {
        let r = timeout(Duration::from_secs(30), w)
            .await
            .expect("woken by the write")
            .unwrap()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    agent.stop().await;
}
