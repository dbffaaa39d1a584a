//! Gossip key rotation on a running cluster (`muster keyring`): install, use, remove on the
//! three Galera servers, with every member alive at every step; an agent that only has the
//! old key can no longer join, one with the new key can; a restarted server keeps the
//! rotated keyring from `data_dir/serf/local.keyring` although its config still says the
//! old `encrypt`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::cluster::{
    CLUSTER_TIMEOUT, Net, client_config, member_status, start_from, three_servers, wait_galera,
};
use crate::support::{Agent, Signal, run_muster, wait_for};

/// The example configs' key.
const OLD: &str = "ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8fX5/gIGCg4Q=";

/// Every server lists every other as alive (serf status 1).
async fn all_alive(servers: &[Agent]) {
    for a in servers {
        for db in ["db1", "db2", "db3"] {
            assert_eq!(
                member_status(a, db).await,
                Some(1),
                "{db} as seen by a server"
            );
        }
    }
}

async fn keyring(agent: &Agent, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["keyring"];
    all.extend_from_slice(args);
    let done = agent.cli(&all).await;
    (done.code.unwrap_or(-1), done.stdout, done.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_on_a_running_cluster_without_dropping_a_member() {
    let net = Net(6);
    let tmp = tempfile::tempdir().expect("temp dir");
    let (_mysql, mut servers) = three_servers(net, tmp.path()).await;
    let all: BTreeSet<Ipv4Addr> = (0..3).map(|i| net.server(i)).collect();
    let new = run_muster(&["keygen"], &[]).await.stdout.trim().to_owned();

    let (code, out, err) = keyring(&servers[0], &["-list"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("  {OLD} [3/3]")), "{out}");

    // Install, then use: every member opens both, then seals with the new one.
    let (code, _, err) = keyring(&servers[1], &[&format!("-install={new}")]).await;
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = keyring(&servers[2], &["-list"]).await;
    assert!(out.contains(&format!("  {new} [3/3]")) && out.contains(&format!("  {OLD} [3/3]")));
    all_alive(&servers).await;
    let (code, _, err) = keyring(&servers[0], &[&format!("-use={new}")]).await;
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = keyring(&servers[0], &["-list-primary"]).await;
    assert!(
        out.contains(&format!("  {new} [3/3]")) && !out.contains(OLD),
        "{out}"
    );
    all_alive(&servers).await;

    // The primary cannot be removed; the old key can.
    let (code, _, err) = keyring(&servers[0], &[&format!("-remove={new}")]).await;
    assert_eq!(code, 1);
    assert!(err.contains("3/3 nodes reported failure"), "{err}");
    assert!(
        err.contains("Removing the primary key is not allowed"),
        "{err}"
    );
    let other = run_muster(&["keygen"], &[]).await.stdout.trim().to_owned();
    let (code, _, err) = keyring(&servers[0], &[&format!("-use={other}")]).await;
    assert_eq!(code, 1);
    assert!(err.contains("Requested key is not in the keyring"), "{err}");
    let (code, _, err) = keyring(&servers[0], &["-install=short"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("400") && err.contains("Invalid key"), "{err}");
    let (code, _, err) = keyring(&servers[2], &[&format!("-remove={OLD}")]).await;
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = keyring(&servers[1], &["-list"]).await;
    assert!(
        !out.contains(OLD) && out.contains(&format!("  {new} [3/3]")),
        "{out}"
    );
    // Gossip kept working the whole time: members alive, DNS whole.
    all_alive(&servers).await;
    {
        let everyone: Vec<&Agent> = servers.iter().collect();
        wait_galera("galeradb after the rotation", &everyone, &all).await;
    }

    // Only the new key lets an agent in.
    let mut stale = start_from(&client_config(tmp.path(), net, 0, Some(OLD))).await;
    wait_for(
        "the old-key agent to say why it cannot join",
        CLUSTER_TIMEOUT,
        || async {
            let log = stale.stderr.text().to_ascii_lowercase();
            log.contains("decrypt") || log.contains("encrypt")
        },
    )
    .await;
    assert_eq!(member_status(&servers[0], "monitor0").await, None);
    stale.stop(Signal::Kill).await;
    let fresh = start_from(&client_config(tmp.path(), net, 1, Some(&new))).await;
    wait_for("the new-key agent joined", CLUSTER_TIMEOUT, || async {
        member_status(&servers[0], "monitor1").await == Some(1)
    })
    .await;

    // A restarted server keeps the rotated keyring (its config still has the old key).
    servers[2].stop(Signal::Term).await;
    servers[2].restart().await;
    wait_for(
        "db3 alive again after its restart",
        CLUSTER_TIMEOUT,
        || async {
            member_status(&servers[0], "db3").await == Some(1)
                && member_status(&servers[2], "db1").await == Some(1)
        },
    )
    .await;
    let (_, out, _) = keyring(&servers[2], &["-list"]).await;
    assert!(
        out.contains(&format!("  {new} [4/4]")) && !out.contains(OLD),
        "{out}"
    );
    assert!(
        servers[2]
            .stderr
            .contains("the encrypt key is not in the keyring file"),
        "the restarted server says why it ignores encrypt"
    );
    drop(fresh);
}
