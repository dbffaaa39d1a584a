//! Logging through the real binary: `enable_syslog` sends RFC 3164 datagrams to the socket
//! in `MUSTER_SYSLOG_SOCKET` (a unix datagram socket the test binds in a temp dir),
//! `log_json` makes every stderr line a JSON object, and `log_level` filters.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::UnixDatagram;

use crate::support::{Agent, Signal, wait_for};

/// Checks one RFC 3164 line, `<PRI>Mmm dd hh:mm:ss HOST muster[PID]: MESSAGE`, and returns
/// (PRI, MESSAGE).
fn parse_rfc3164(line: &str, pid: u32) -> (u16, String) {
    let rest = line.strip_prefix('<').unwrap_or_else(|| panic!("{line:?}"));
    let (pri, rest) = rest.split_once('>').unwrap_or_else(|| panic!("{line:?}"));
    let pri: u16 = pri.parse().unwrap_or_else(|_| panic!("PRI in {line:?}"));
    // "Mmm dd hh:mm:ss": a month name, a space-padded day, a time.
    let (stamp, rest) = rest.split_at(15);
    let b = stamp.as_bytes();
    assert!(
        b[..3].iter().all(u8::is_ascii_alphabetic)
            && b[3] == b' '
            && (b[4] == b' ' || b[4].is_ascii_digit())
            && b[5].is_ascii_digit()
            && b[6] == b' '
            && stamp[7..].split(':').count() == 3,
        "timestamp {stamp:?} in {line:?}"
    );
    let rest = rest.strip_prefix(' ').unwrap_or_else(|| panic!("{line:?}"));
    let (host, rest) = rest.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
    assert!(!host.is_empty(), "{line:?}");
    let tag = format!("muster[{pid}]: ");
    let message = rest
        .strip_prefix(&tag)
        .unwrap_or_else(|| panic!("{tag:?} in {line:?}"));
    (pri, message.to_owned())
}

#[tokio::test]
async fn syslog_gets_rfc3164_lines_with_the_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("log.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let agent = Agent::builder()
        .env("MUSTER_SYSLOG_SOCKET", path.to_str().unwrap())
        .file("syslog.json", r#"{"enable_syslog": true}"#)
        .start()
        .await;
    let pid = agent.pid();

    // Read datagrams until the start-up line arrives (bounded).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 16 * 1024];
    let mut seen = Vec::new();
    let started = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no 'agent started' datagram; got {seen:#?}"))
            .unwrap();
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        let (pri, message) = parse_rfc3164(&line, pid);
        seen.push(line);
        if message.contains("agent started") {
            break (pri, message);
        }
    };
    // Consul's default facility LOCAL0 (16) and severity info (6).
    assert_eq!(started.0, 16 * 8 + 6, "{seen:#?}");
    assert!(!started.1.ends_with('\n'));
    // The console keeps logging too.
    assert!(agent.stderr.contains("agent started"));
}

#[tokio::test]
async fn log_json_makes_every_stderr_line_json() {
    let mut agent = Agent::start(
        &[],
        &[(
            "log.json",
            r#"{"log_json": true, "ui_config": {"enabled": true}}"#,
        )],
    )
    .await;
    agent.put_ok("/v1/agent/reload", None).await;
    wait_for("the reload line", Duration::from_secs(10), || async {
        agent.stderr.contains("configuration reloaded")
    })
    .await;
    agent.stop(Signal::Term).await;

    let text = agent.stderr.text();
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 4, "{text}");
    for l in &lines {
        assert!(l["timestamp"].is_string(), "{l}");
        assert!(l["level"].is_string(), "{l}");
        assert!(l["fields"]["message"].is_string(), "{l}");
    }
    let has = |level: &str, needle: &str| {
        lines.iter().any(|l| {
            l["level"] == level
                && l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(needle))
        })
    };
    assert!(has("INFO", "agent started"), "{text}");
    assert!(has("WARN", "'ui_config'"), "{text}");
    assert!(has("INFO", "shutdown complete"), "{text}");
}

#[tokio::test]
async fn log_level_filters() {
    // warn: the warning about an unimplemented key, and no info lines.
    let quiet = Agent::start(
        &[],
        &[(
            "log.json",
            r#"{"log_level": "warn", "ui_config": {"enabled": true}}"#,
        )],
    )
    .await;
    // debug (the flag overrides the file): debug lines appear.
    let chatty = Agent::start(
        &["-log-level=debug"],
        &[("log.json", r#"{"log_level": "warn"}"#)],
    )
    .await;
    wait_for("a DEBUG line", Duration::from_secs(10), || async {
        chatty.stderr.contains(" DEBUG ")
    })
    .await;
    assert!(chatty.stderr.contains("agent started"));

    // Both agents have started and served; every line the quiet one wrote is WARN or worse.
    assert_eq!(quiet.get("/v1/status/leader").await.status, 200);
    let text = quiet.stderr.text();
    assert!(text.contains("'ui_config'"), "{text}");
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.contains(" WARN ") || line.contains(" ERROR "),
            "filtered out at warn: {line}"
        );
    }
    assert!(!text.contains("agent started"), "{text}");
}
