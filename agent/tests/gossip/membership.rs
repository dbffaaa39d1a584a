//! Join, failure detection, graceful leave, restart and force-leave.

use std::time::Duration;

use muster::node::MemberStatus;

use crate::support::{Node, Opts, cluster, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_and_converge_with_consul_tags() {
    let nodes = cluster(&["a", "b", "c"], Opts::default()).await;
    let view = nodes[2].members.current();
    let a = view.iter().find(|m| m.name == "a").unwrap();
    assert_eq!(a.addr, nodes[0].addr.ip());
    assert_eq!(a.port, nodes[0].addr.port());
    assert_eq!(a.tags["role"], "node");
    assert_eq!(a.tags["dc"], "dc1");
    assert_eq!(a.tags["build"], "0.1.0:test");
    // Joining an address where nobody listens fails with the address in the message.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let err = nodes[0]
        .handle
        .join(vec![dead_addr.to_string()])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("Error joining address '{dead_addr}'")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_is_failed_everywhere_within_the_budget() {
    let nodes = cluster(&["a", "b", "c", "d", "e"], Opts::default()).await;
    // Quiet for a while: no false failures in a healthy cluster.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for n in &nodes {
        assert!(n.with_status(MemberStatus::Failed).is_empty(), "{}", n.name);
    }
    // "Crash" e: its gossip stops without a leave.
    nodes[4].handle.stop().await;
    let mut times = Vec::new();
    for n in &nodes[..4] {
        let t = wait_for(
            &format!("{} sees e failed", n.name),
            Duration::from_secs(10),
            || {
                let s = n.status("e");
                async move { s == Some(MemberStatus::Failed) }
            },
        )
        .await;
        times.push(t);
    }
    // Waited in turn, so each later time includes the earlier waits: the last is the max.
    let max = *times.iter().max().unwrap();
    eprintln!("failure detection: {times:?}");
    assert!(
        max < Duration::from_secs(4),
        "detection took {max:?} (budget ~1.5 s, bound generous for a loaded CI box)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_is_left_not_failed() {
    let nodes = cluster(&["a", "b", "c"], Opts::default()).await;
    nodes[2].handle.leave().await;
    assert_eq!(nodes[2].status("c"), Some(MemberStatus::Left));
    for n in &nodes[..2] {
        wait_for(
            &format!("{} sees c left", n.name),
            Duration::from_secs(10),
            || {
                let s = n.status("c");
                async move { s == Some(MemberStatus::Left) }
            },
        )
        .await;
    }
    // And it stays left (foca's down notification must not turn it into failed).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(nodes[0].status("c"), Some(MemberStatus::Left));
    assert_eq!(nodes[1].status("c"), Some(MemberStatus::Left));
    nodes[2].handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_is_alive_again_under_the_same_name() {
    let mut nodes = cluster(&["a", "b", "c"], Opts::default()).await;
    let port = nodes[2].addr.port();
    nodes[2].handle.stop().await;
    wait_for("a sees c failed", Duration::from_secs(10), || {
        let s = nodes[0].status("c");
        async move { s == Some(MemberStatus::Failed) }
    })
    .await;
    // Same name, same port, new identity (a larger bump): it wins at once.
    let restarted = Node::start(
        "c",
        Opts {
            port,
            ..Opts::default()
        },
    );
    restarted.join(&nodes[0]).await;
    nodes[2] = restarted;
    for n in &nodes {
        wait_for(
            &format!("{} sees c alive again", n.name),
            Duration::from_secs(10),
            || {
                let ok = n.with_status(MemberStatus::Alive) == ["a", "b", "c"];
                async move { ok }
            },
        )
        .await;
    }
    // Exactly one entry per name.
    assert_eq!(nodes[1].members.current().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_leave_turns_failed_into_left_everywhere_and_prune_forgets() {
    let nodes = cluster(&["a", "b", "c", "d"], Opts::default()).await;
    nodes[2].handle.stop().await;
    nodes[3].handle.stop().await;
    for n in &nodes[..2] {
        wait_for("c and d failed", Duration::from_secs(10), || {
            let ok = n.with_status(MemberStatus::Failed) == ["c", "d"];
            async move { ok }
        })
        .await;
    }
    // Errors: unknown node; an alive member is not forced out.
    let err = nodes[0]
        .members
        .force_leave("zzz", false)
        .await
        .unwrap_err();
    assert_eq!(err, "agent: No node found with name 'zzz'");
    nodes[0].members.force_leave("b", false).await.unwrap();
    nodes[0].members.force_leave("c", false).await.unwrap();
    wait_for("b sees c left", Duration::from_secs(10), || {
        let s = nodes[1].status("c");
        async move { s == Some(MemberStatus::Left) }
    })
    .await;
    assert_eq!(nodes[0].status("c"), Some(MemberStatus::Left));
    assert_eq!(nodes[0].status("b"), Some(MemberStatus::Alive));
    nodes[1].members.force_leave("d", true).await.unwrap();
    wait_for("a forgets d", Duration::from_secs(10), || {
        let s = nodes[0].status("d");
        async move { s.is_none() }
    })
    .await;
    assert_eq!(nodes[1].status("d"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_join_and_the_snapshot_rejoin_unless_left() {
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start("a", Opts::default());
    // b joins through retry_join and records a in its snapshot.
    let snap = dir.path().join("serf/local.snapshot");
    let b = Node::start(
        "b",
        Opts {
            retry_join: vec![a.addr.to_string()],
            snapshot: Some(snap.clone()),
            ..Opts::default()
        },
    );
    wait_for("a and b see each other", Duration::from_secs(10), || {
        let ok = a.status("b") == Some(MemberStatus::Alive)
            && b.status("a") == Some(MemberStatus::Alive);
        async move { ok }
    })
    .await;
    wait_for("the snapshot lists a", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&snap).unwrap_or_default();
        let want = format!("alive {}", a.addr);
        async move { text.contains(&want) }
    })
    .await;
    // A crash and a restart without retry_join: the snapshot brings b back.
    b.handle.stop().await;
    let b2 = Node::start(
        "b",
        Opts {
            snapshot: Some(snap.clone()),
            ..Opts::default()
        },
    );
    wait_for(
        "b rejoins from its snapshot",
        Duration::from_secs(10),
        || {
            let s = b2.status("a");
            async move { s == Some(MemberStatus::Alive) }
        },
    )
    .await;
    // A graceful leave, then a restart: no automatic rejoin.
    b2.handle.leave().await;
    b2.handle.stop().await;
    let b3 = Node::start(
        "b",
        Opts {
            snapshot: Some(snap.clone()),
            ..Opts::default()
        },
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(b3.status("a"), None, "b must not rejoin after leaving");
    b3.handle.stop().await;
    // With rejoin_after_leave it does.
    let b4 = Node::start(
        "b",
        Opts {
            snapshot: Some(snap),
            rejoin_after_leave: true,
            ..Opts::default()
        },
    );
    wait_for(
        "b rejoins with rejoin_after_leave",
        Duration::from_secs(10),
        || {
            let s = b4.status("a");
            async move { s == Some(MemberStatus::Alive) }
        },
    )
    .await;
}
