//! Bad configuration gives clear errors: the agent exits 1 naming the file and the key (or
//! the line and column of a JSON syntax error); `muster validate` accepts every
//! `config-examples` dir and rejects a bad file the same way; a key Consul accepts that muster
//! does not implement is a warning naming it, and the agent still starts.

use crate::support::{Agent, Finished, run_muster, workspace};

/// Starts an agent whose config dir holds `name` with `content`; it must exit 1 with every
/// needle on stderr.
async fn rejected(name: &str, content: &str, needles: &[&str]) -> Finished {
    let done = Agent::builder().file(name, content).run_to_exit().await;
    assert_eq!(done.code, Some(1), "{done:?}");
    for needle in needles {
        assert!(
            done.stderr.contains(needle),
            "{needle:?} in stderr of {content}:\n{}",
            done.stderr
        );
    }
    done
}

#[tokio::test]
async fn unknown_keys_are_fatal_and_named() {
    rejected(
        "agent.json",
        r#"{"datacenter": "dc1", "bogus_key": 1}"#,
        &["agent.json", "bogus_key"],
    )
    .await;
    rejected(
        "dns.json",
        r#"{"dns_config": {"only_passing": true, "no_such_option": 1}}"#,
        &["dns.json", "no_such_option"],
    )
    .await;
}

#[tokio::test]
async fn bad_values_name_the_file_and_the_key() {
    rejected(
        "limits.json",
        r#"{"dns_config": {"udp_answer_limit": 99}}"#,
        &["limits.json", "dns_config.udp_answer_limit", "99"],
    )
    .await;
    rejected(
        "gossip.json",
        r#"{"encrypt": "not-a-key"}"#,
        &["gossip.json", "encrypt"],
    )
    .await;
    rejected(
        "ttl.json",
        r#"{"dns_config": {"node_ttl": "5 parsecs"}}"#,
        &["ttl.json", "dns_config.node_ttl", "5 parsecs"],
    )
    .await;
    rejected(
        "svc.json",
        r#"{"service": {"name": "web", "check": {"tcp": "127.0.0.1:1", "interval": "often"}}}"#,
        &["svc.json", "interval", "often"],
    )
    .await;
    rejected(
        "types.json",
        r#"{"server": "yes please"}"#,
        &["types.json", "server"],
    )
    .await;
}

#[tokio::test]
async fn bad_json_names_the_file_line_and_column() {
    let done = rejected(
        "broken.json",
        "{\n  \"datacenter\": \"dc1\",\n  \"server\": true,,\n}\n",
        &["broken.json", "line 3", "column"],
    )
    .await;
    assert!(!done.stderr.contains("panicked"), "{}", done.stderr);
}

#[tokio::test]
async fn validate_accepts_every_example_and_rejects_a_bad_file() {
    let examples = workspace().join("config-examples");
    let tmp = tempfile::tempdir().unwrap();
    // `-dev` supplies the dev example's data_dir; validate (like Consul's) has no -dev, so the
    // dev dir is validated together with a file that sets one.
    let data_dir = tmp.path().join("data-dir.json");
    std::fs::write(
        &data_dir,
        format!(r#"{{"data_dir": "{}"}}"#, tmp.path().join("data").display()),
    )
    .unwrap();
    let cases: Vec<Vec<String>> = vec![
        vec![
            examples.join("dev").display().to_string(),
            data_dir.display().to_string(),
        ],
        vec![examples.join("galera/node1").display().to_string()],
        vec![examples.join("galera/node2").display().to_string()],
        vec![examples.join("galera/node3").display().to_string()],
        vec![examples.join("client").display().to_string()],
    ];
    for paths in cases {
        let mut args = vec!["validate"];
        args.extend(paths.iter().map(String::as_str));
        let done = run_muster(&args, &[]).await;
        assert_eq!(done.code, Some(0), "{paths:?}: {done:?}");
        assert_eq!(done.stdout, "Configuration is valid!\n", "{paths:?}");
    }

    let bad = tmp.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"data_dir": "/tmp/x", "dns_config": {"bogus": true}}"#,
    )
    .unwrap();
    let done = run_muster(&["validate", bad.to_str().unwrap()], &[]).await;
    assert_eq!(done.code, Some(1), "{done:?}");
    assert_eq!(done.stdout, "");
    assert!(
        done.stderr.starts_with("Config validation failed: "),
        "{}",
        done.stderr
    );
    assert!(
        done.stderr.contains("bad.json") && done.stderr.contains("bogus"),
        "{}",
        done.stderr
    );
}

#[tokio::test]
async fn unimplemented_keys_warn_and_the_agent_starts() {
    let agent = Agent::start(
        &[],
        &[(
            "extras.json",
            r#"{"ui_config": {"enabled": true}, "telemetry": {"statsd_address": "127.0.0.1:8125"}}"#,
        )],
    )
    .await;
    for key in ["ui_config", "telemetry"] {
        let line = agent
            .stderr
            .text()
            .lines()
            .find(|l| l.contains(&format!("'{key}'")))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no warning for {key}:\n{}", agent.stderr.text()));
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("extras.json"), "{line}");
        assert!(line.contains("not implemented"), "{line}");
    }
    // It serves.
    assert_eq!(agent.get("/v1/status/leader").await.status, 200);
}
