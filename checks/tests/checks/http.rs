//! HTTP checks against the tiny test server.

use std::time::Duration;

use muster_checks::{CheckDefinition, CheckKind, HealthStatus, HttpCheck, MIN_INTERVAL};
use tokio::net::TcpListener;

use crate::support::{Runner, TestServer, WITHIN, eventually};

fn http_check(id: &str, check: HttpCheck) -> CheckDefinition {
    CheckDefinition::new(id, CheckKind::Http(check), MIN_INTERVAL)
}

#[tokio::test]
async fn status_codes_map_to_passing_warning_and_critical() {
    let server = TestServer::plain().await;
    let mut runner = Runner::start();
    let ok_url = server.url("http", "/ok");
    let busy_url = server.url("http", "/busy");
    let down_url = server.url("http", "/down");
    runner.add(http_check("ok", HttpCheck::new(&ok_url))).await;
    runner
        .add(http_check("busy", HttpCheck::new(&busy_url)))
        .await;
    let mut down = http_check("down", HttpCheck::new(&down_url));
    down.initial_status = HealthStatus::Passing;
    runner.add(down).await;

    let ok = runner.wait_for("ok", HealthStatus::Passing).await;
    assert_eq!(
        ok.output,
        format!("HTTP GET {ok_url}: 200 OK Output: all good")
    );
    let busy = runner.wait_for("busy", HealthStatus::Warning).await;
    assert_eq!(
        busy.output,
        format!("HTTP GET {busy_url}: 429 Too Many Requests Output: slow down")
    );
    let down = runner.wait_for("down", HealthStatus::Critical).await;
    assert_eq!(
        down.output,
        format!("HTTP GET {down_url}: 503 Service Unavailable Output: database unavailable")
    );
}

#[tokio::test]
async fn request_carries_method_headers_and_body() {
    let server = TestServer::plain().await;
    let mut runner = Runner::start();
    let url = server.url("http", "/echo");
    let mut check = HttpCheck::new(&url);
    check.method = "POST".into();
    check.body = "ping".into();
    check.headers = vec![
        ("X-Multi".into(), vec!["one".into(), "two".into()]),
        ("Host".into(), vec!["db.internal".into()]),
    ];
    runner.add(http_check("echo", check)).await;
    let up = runner.wait_for("echo", HealthStatus::Passing).await;
    assert_eq!(up.output, format!("HTTP POST {url}: 200 OK Output: ping"));

    let seen = &server.requests_to("/echo")[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body, b"ping");
    assert_eq!(seen.header_values("x-multi"), ["one", "two"]);
    assert_eq!(seen.header_values("host"), ["db.internal"]);
    assert_eq!(seen.header_values("user-agent"), ["Consul Health Check"]);
    assert_eq!(seen.header_values("accept"), ["text/plain, text/*, */*"]);
}

#[tokio::test]
async fn configured_user_agent_and_accept_replace_the_defaults() {
    let server = TestServer::plain().await;
    let mut runner = Runner::start();
    let mut check = HttpCheck::new(server.url("http", "/ok"));
    check.headers = vec![
        ("user-agent".into(), vec!["probe/1".into()]),
        ("Accept".into(), vec!["application/json".into()]),
    ];
    runner.add(http_check("ua", check)).await;
    runner.wait_for("ua", HealthStatus::Passing).await;
    let seen = &server.requests_to("/ok")[0];
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.header_values("user-agent"), ["probe/1"]);
    assert_eq!(seen.header_values("accept"), ["application/json"]);
    assert!(seen.body.is_empty());
}

#[tokio::test]
async fn redirects_are_followed_unless_disabled() {
    let server = TestServer::plain().await;
    let mut runner = Runner::start();
    let url = server.url("http", "/redirect");
    runner.add(http_check("follow", HttpCheck::new(&url))).await;
    let mut no_follow = HttpCheck::new(&url);
    no_follow.disable_redirects = true;
    let mut def = http_check("stay", no_follow);
    def.initial_status = HealthStatus::Passing;
    runner.add(def).await;

    let followed = runner.wait_for("follow", HealthStatus::Passing).await;
    assert_eq!(
        followed.output,
        format!("HTTP GET {url}: 200 OK Output: all good")
    );
    let stayed = runner.wait_for("stay", HealthStatus::Critical).await;
    assert_eq!(
        stayed.output,
        format!("HTTP GET {url}: 302 Found Output: moved")
    );
}

#[tokio::test]
async fn a_redirect_loop_stops_after_ten_redirects() {
    let server = TestServer::plain().await;
    let mut runner = Runner::start();
    let url = server.url("http", "/loop");
    let mut def = http_check("loop", HttpCheck::new(&url));
    def.initial_status = HealthStatus::Passing;
    runner.add(def).await;
    let down = runner.wait_for("loop", HealthStatus::Critical).await;
    // Like Go: ten requests in the chain (nine redirects followed). The error names the
    // last URL requested (Go names the next one, which reqwest does not report).
    assert_eq!(
        down.output,
        format!("Get \"{url}?9\": stopped after 10 redirects")
    );
    let hops: Vec<String> = server
        .requests_starting("/loop")
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert!(hops.contains(&"/loop?9".to_owned()), "{hops:?}");
    assert!(!hops.contains(&"/loop?10".to_owned()), "{hops:?}");
}

#[tokio::test]
async fn output_is_capped_and_an_endless_body_is_not_read_past_the_cap() {
    let server = TestServer::plain().await;
    let mut runner = Runner::start();
    let url = server.url("http", "/stream");
    let mut def = http_check("stream", HttpCheck::new(&url));
    def.output_max_size = 120;
    def.timeout = Duration::from_secs(30);
    runner.add(def).await;
    let up = runner.wait_for("stream", HealthStatus::Passing).await;
    assert_eq!(up.output.len(), 120);
    let prefix = format!("HTTP GET {url}: 200 OK Output: ");
    assert!(up.output.starts_with(&prefix), "{}", up.output);
    assert!(up.output[prefix.len()..].bytes().all(|b| b == b'z'));
}

#[tokio::test]
async fn a_slow_server_times_out_with_go_text() {
    let server = TestServer::plain().await;
    let mut runner = Runner::start();
    let url = server.url("http", "/slow");
    let mut def = http_check("slow", HttpCheck::new(&url));
    def.timeout = Duration::from_millis(500);
    def.initial_status = HealthStatus::Passing;
    runner.add(def).await;
    let down = runner.wait_for("slow", HealthStatus::Critical).await;
    assert_eq!(
        down.output,
        format!(
            "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )
    );
}

#[tokio::test]
async fn a_closed_port_reads_like_go() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut runner = Runner::start();
    let url = format!("http://{addr}/health");
    let mut def = http_check("refused", HttpCheck::new(&url));
    def.initial_status = HealthStatus::Passing;
    runner.add(def).await;
    let down = runner.wait_for("refused", HealthStatus::Critical).await;
    assert_eq!(
        down.output,
        format!("Get \"{url}\": dial tcp {addr}: connect: connection refused")
    );
}

#[tokio::test]
async fn an_unsupported_scheme_is_critical() {
    let mut runner = Runner::start();
    let mut def = http_check("ftp", HttpCheck::new("ftp://127.0.0.1/file"));
    def.initial_status = HealthStatus::Passing;
    runner.add(def).await;
    let down = runner.wait_for("ftp", HealthStatus::Critical).await;
    assert_eq!(
        down.output,
        "Get \"ftp://127.0.0.1/file\": unsupported protocol scheme \"ftp\""
    );
}

#[tokio::test]
async fn each_run_is_a_new_connection() {
    let server = TestServer::plain().await;
    let mut runner = Runner::start();
    runner
        .add(http_check("ok", HttpCheck::new(server.url("http", "/ok"))))
        .await;
    runner.wait_for("ok", HealthStatus::Passing).await;
    // The server closes every connection after one response; later runs must still pass,
    // which they only do with a fresh connection each time (keep-alive off).
    eventually(WITHIN, "three runs", || {
        server.requests_to("/ok").len() >= 3
    })
    .await;
    let state = runner.handle.state("ok").await.unwrap().unwrap();
    assert_eq!(state.status, HealthStatus::Passing);
}
