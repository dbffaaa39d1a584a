//! The `muster` CLI against a running agent: `members`, `catalog services|nodes`,
//! `services register|deregister`, `keygen`, `version`, `reload`, `leave`, with the agent
//! found through `-http-addr` or `CONSUL_HTTP_ADDR`.

use std::time::Duration;

use base64::Engine as _;

use crate::support::{Agent, Finished, Signal, run_muster, wait_for, wait_some};

/// The whitespace-separated columns of each line.
fn rows(text: &str) -> Vec<Vec<&str>> {
    text.lines()
        .map(|l| l.split_whitespace().collect())
        .collect()
}

#[track_caller]
fn ok(done: &Finished) -> &str {
    assert_eq!(done.code, Some(0), "{done:?}");
    &done.stdout
}

#[tokio::test]
async fn client_commands_talk_to_the_agent() {
    let agent = Agent::start(&[], &[]).await;
    let node = agent.node().to_owned();

    let out = agent.cli(&["members"]).await;
    let table = rows(ok(&out));
    assert_eq!(
        table[0],
        [
            "Node",
            "Address",
            "Status",
            "Type",
            "Build",
            "Protocol",
            "DC",
            "Partition",
            "Segment"
        ]
    );
    assert_eq!(table.len(), 2, "{}", out.stdout);
    let serf = agent.serf.expect("serf= in the ready line").to_string();
    assert_eq!(
        table[1],
        [
            node.as_str(),
            serf.as_str(),
            "alive",
            "server",
            "0.1.0",
            "2",
            "dc1",
            "default",
            "<all>"
        ]
    );
    // No member matches: exit code 2, as Consul.
    let none = agent.cli(&["members", "-status=failed"]).await;
    assert_eq!(none.code, Some(2), "{none:?}");

    // CONSUL_HTTP_ADDR works as it does for consul.
    let env = run_muster(
        &["catalog", "nodes"],
        &[("CONSUL_HTTP_ADDR", &agent.http_addr())],
    )
    .await;
    let table = rows(ok(&env));
    assert_eq!(table[0], ["Node", "ID", "Address", "DC"]);
    assert_eq!(table[1][0], node);
    assert_eq!(table[1][2..], ["127.0.0.1", "dc1"]);
    assert_eq!(
        table[1][1].len(),
        8,
        "the first 8 characters of the node ID"
    );
    // And the flag wins over the variable.
    let both = run_muster(
        &[
            "catalog",
            "nodes",
            &format!("-http-addr={}", agent.http_addr()),
        ],
        &[("CONSUL_HTTP_ADDR", "127.0.0.1:1")],
    )
    .await;
    assert_eq!(rows(ok(&both))[1][0], node);

    let out = agent
        .cli(&[
            "services",
            "register",
            "-name=web",
            "-port=8080",
            "-tag=blue",
            "-tag=v2",
        ])
        .await;
    assert_eq!(ok(&out), "Registered service: web\n");
    let (listing, _) = wait_some("web in the catalog", Duration::from_secs(10), || async {
        let out = agent.cli(&["catalog", "services", "-tags"]).await;
        let text = ok(&out).to_owned();
        text.contains("web").then_some(text)
    })
    .await;
    let table = rows(&listing);
    assert_eq!(table, [vec!["consul"], vec!["web", "blue,v2"]], "{listing}");
    let out = agent.cli(&["catalog", "services"]).await;
    assert_eq!(ok(&out), "consul\nweb\n");
    let out = agent.cli(&["catalog", "nodes", "-service=web"]).await;
    assert_eq!(rows(ok(&out))[1][0], node);

    let out = agent.cli(&["services", "deregister", "-id=web"]).await;
    assert_eq!(ok(&out), "Deregistered service: web\n");
    wait_for(
        "web to leave the catalog",
        Duration::from_secs(10),
        || async {
            let out = agent.cli(&["catalog", "services"]).await;
            ok(&out) == "consul\n"
        },
    )
    .await;

    let out = agent.cli(&["reload"]).await;
    assert_eq!(ok(&out), "Configuration reload triggered\n");
    wait_for("the reload log line", Duration::from_secs(10), || async {
        agent.stderr.contains("configuration reloaded")
    })
    .await;

    // No agent there: a clear error and exit 1.
    let gone = run_muster(&["members", "-http-addr=127.0.0.1:1"], &[]).await;
    assert_eq!(gone.code, Some(1), "{gone:?}");
    assert!(
        gone.stderr.starts_with("Error retrieving members: "),
        "{gone:?}"
    );
}

#[tokio::test]
async fn keygen_and_version() {
    let a = run_muster(&["keygen"], &[]).await;
    let b = run_muster(&["keygen"], &[]).await;
    let (a, b) = (ok(&a).trim().to_owned(), ok(&b).trim().to_owned());
    assert_ne!(a, b, "fresh keys");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&a)
        .expect("base64");
    assert_eq!(bytes.len(), 32);
    // The agent takes it as its gossip key: gossip is encrypted.
    let agent = Agent::start(&[&format!("-encrypt={a}")], &[]).await;
    assert!(
        agent.stdout.contains(
            "Encrypt: Gossip: true, TLS-Outgoing: false, TLS-Incoming: false, \
             Auto-Encrypt-TLS: false"
        ),
        "{}",
        agent.stdout.text()
    );
    let this = agent.get_json("/v1/agent/self").await;
    assert_eq!(this["Stats"]["serf_lan"]["encrypted"], "true", "{this}");

    let v = run_muster(&["version"], &[]).await;
    let text = ok(&v);
    assert!(
        text.starts_with(&format!("Muster v{}\n", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("Protocol 2 spoken by default"), "{text}");
}

#[tokio::test]
async fn leave_exits_zero_and_deregisters_the_node() {
    let mut agent = Agent::start(&[], &[]).await;
    let node = agent.node().to_owned();
    let path = format!("/v1/catalog/node/{node}");
    let before = agent.get_json(&path).await["Node"]["CreateIndex"]
        .as_u64()
        .expect("the node is registered");

    let out = agent.cli(&["leave"]).await;
    assert_eq!(ok(&out), "Graceful leave complete\n");
    let status = agent.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{}", agent.stderr.text());
    assert!(
        agent
            .stderr
            .contains("graceful leave complete: this node is deregistered"),
        "{}",
        agent.stderr.text()
    );

    // Proof in the catalog: after a restart on the same data dir the node is registered
    // anew (a later CreateIndex), so the leave removed the old record.
    agent.restart().await;
    let (after, _) = wait_some(
        "the node to register again",
        Duration::from_secs(10),
        || async { agent.get_json(&path).await["Node"]["CreateIndex"].as_u64() },
    )
    .await;
    assert!(
        after > before,
        "re-created: CreateIndex {before} -> {after}"
    );
}

#[tokio::test]
async fn reload_reads_new_files_from_the_cli_and_on_sighup() {
    let agent = Agent::start(&[], &[]).await;
    let has_service = |id: &'static str| {
        let agent = &agent;
        async move { agent.get_json("/v1/agent/services").await.get(id).is_some() }
    };

    std::fs::write(
        agent.config_dir().join("cache.json"),
        r#"{"service": {"name": "cache", "port": 6379}}"#,
    )
    .unwrap();
    assert!(!has_service("cache").await, "not before the reload");
    let out = agent.cli(&["reload"]).await;
    assert_eq!(ok(&out), "Configuration reload triggered\n");
    assert!(
        has_service("cache").await,
        "the reload answers once applied"
    );

    std::fs::write(
        agent.config_dir().join("queue.json"),
        r#"{"service": {"name": "queue", "port": 5672}}"#,
    )
    .unwrap();
    agent.signal(Signal::Hup);
    wait_for("SIGHUP to reload", Duration::from_secs(10), || {
        has_service("queue")
    })
    .await;
    assert!(has_service("cache").await);

    // A broken file: the reload fails with the reason and the old configuration stays.
    std::fs::write(agent.config_dir().join("zz.json"), r#"{"bogus_key": 1}"#).unwrap();
    let out = agent.cli(&["reload"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.starts_with("Error reloading: "), "{out:?}");
    assert!(out.stderr.contains("bogus_key"), "{out:?}");
    assert!(has_service("queue").await && has_service("cache").await);
    assert_eq!(agent.get("/v1/status/leader").await.status, 200);
}
