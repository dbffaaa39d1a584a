//! TCP checks against real loopback listeners.

use std::time::Duration;

use muster_checks::{CheckDefinition, CheckKind, HealthStatus, MIN_INTERVAL};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use crate::support::Runner;

fn tcp_check(id: &str, address: String) -> CheckDefinition {
    CheckDefinition::new(id, CheckKind::Tcp { address }, MIN_INTERVAL)
}

/// Accepts and immediately drops connections, like a port that is merely listening.
fn accept_forever(listener: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    })
}

#[tokio::test]
async fn tcp_check_follows_a_listener_open_closed_and_reopened() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = accept_forever(listener);
    let mut runner = Runner::start();
    runner.add(tcp_check("mysql", addr.to_string())).await;

    let up = runner.wait_for("mysql", HealthStatus::Passing).await;
    assert_eq!(up.output, format!("TCP connect {addr}: Success"));

    // Closing the listener: the port now refuses connections.
    server.abort();
    let _ = server.await;
    let down = runner.wait_for("mysql", HealthStatus::Critical).await;
    assert_eq!(
        down.output,
        format!("dial tcp {addr}: connect: connection refused")
    );

    // The same port opens again (std sets SO_REUSEADDR on Unix listeners).
    let listener = TcpListener::bind(addr).await.unwrap();
    let _server = accept_forever(listener);
    let up = runner.wait_for("mysql", HealthStatus::Passing).await;
    assert_eq!(up.output, format!("TCP connect {addr}: Success"));
}

#[tokio::test]
async fn tcp_check_by_name_tries_every_address_of_localhost() {
    // Only IPv4 listens; if localhost also resolves to ::1 that attempt is refused first.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _server = accept_forever(listener);
    let mut runner = Runner::start();
    runner
        .add(tcp_check("local", format!("localhost:{port}")))
        .await;
    let up = runner.wait_for("local", HealthStatus::Passing).await;
    assert_eq!(up.output, format!("TCP connect localhost:{port}: Success"));
}

#[tokio::test]
async fn tcp_connect_timeout_reads_like_go() {
    // A listener with a zero backlog that never accepts: once its queue is full the kernel
    // drops further SYNs, so a connect hangs exactly like a firewalled port.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await
        {
            fillers.push(stream);
        }
    }
    assert!(!fillers.is_empty(), "the backlog accepted something");

    let mut runner = Runner::start();
    let mut def = tcp_check("firewalled", addr.to_string());
    def.timeout = Duration::from_millis(500);
    def.initial_status = HealthStatus::Passing;
    runner.add(def).await;
    let down = runner.wait_for("firewalled", HealthStatus::Critical).await;
    assert_eq!(down.output, format!("dial tcp {addr}: i/o timeout"));
    drop(listener);
}

#[tokio::test]
async fn tcp_address_without_port_is_critical_with_go_text() {
    let mut runner = Runner::start();
    let mut def = tcp_check("bad", "localhost".into());
    def.initial_status = HealthStatus::Passing;
    runner.add(def).await;
    let down = runner.wait_for("bad", HealthStatus::Critical).await;
    assert_eq!(
        down.output,
        "dial tcp: address localhost: missing port in address"
    );
}
