//! Client-agent replicas streamed from in-process servers: snapshot then changes, equal
//! content and indexes, resuming after a server restart, switching servers, writes and
//! default reads through the leader, stale reads with no server, blocking waits.

use std::time::Duration;

use muster_server::{
    Catalog, CatalogReplica, CommandResult, Consistency, ReplicaConfig, ServerHandle, Table,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::support::{TestServer, agreed_leader, members, register, wait_until};

const T: Duration = Duration::from_secs(20);

/// A replica fed from `addrs`; the sender changes its server list.
fn replica(addrs: &[&TestServer]) -> (ServerHandle, watch::Sender<Vec<String>>) {
    let list = addrs.iter().map(|s| s.addr.to_string()).collect();
    let (tx, rx) = watch::channel(list);
    let mut config = ReplicaConfig::new("dc1");
    config.poll_wait = Duration::from_millis(300);
    config.rpc_hold_timeout = Duration::from_secs(5);
    let handle = CatalogReplica::start(config, rx, CancellationToken::new()).unwrap();
    assert!(handle.is_replica());
    (handle, tx)
}

async fn content(h: &ServerHandle) -> Catalog {
    h.read(Consistency::Stale, Catalog::clone).await.unwrap().0
}

/// Waits until the replica holds exactly the server's catalog at the server's applied index.
async fn caught_up(replica: &ServerHandle, server: &ServerHandle) {
    wait_until("the replica to equal the server", T, || async {
        let (a, b) = (content(replica).await, content(server).await);
        let same_index = replica.status().applied_index == server.status().applied_index;
        (a == b && a.indexes() == b.indexes() && same_index).then_some(())
    })
    .await;
}

async fn single_server(dir: &std::path::Path) -> TestServer {
    let s = TestServer::start(1, dir, None).await;
    s.handle.bootstrap_single().await.unwrap();
    agreed_leader(&[&s.handle]).await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_of_one_server_follows_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = single_server(dir.path()).await;
    for n in 1..=3 {
        server
            .handle
            .write(register(&format!("db{n}"), n))
            .await
            .unwrap();
    }
    let (replica, _servers) = replica(&[&server]);
    // First a snapshot (the replica starts empty), then changes.
    caught_up(&replica, &server.handle).await;
    assert_eq!(content(&replica).await.node_count(), 3);
    let w = server.handle.write(register("db4", 4)).await.unwrap();
    caught_up(&replica, &server.handle).await;
    assert_eq!(
        replica.indexes().max_of(&Table::ALL),
        w.index,
        "indexes are the server's log indexes"
    );
    let status = replica.status();
    assert_eq!(status.leader_id, Some(1));
    assert_eq!(status.leader_addr, Some(server.addr.to_string()));
    assert_eq!(replica.leader_addr(), Some(server.addr.to_string()));
    assert!(!replica.is_leader());
    assert!(
        replica
            .bootstrap_single()
            .await
            .unwrap_err()
            .is_not_server()
    );

    // The server goes away: stale reads still answer from memory; the others cannot.
    let addr = server.addr;
    server.stop().await;
    let (names, meta) = replica
        .read(Consistency::Stale, |c| c.node("db4").is_some())
        .await
        .unwrap();
    assert!(names);
    wait_until("the replica to notice", T, || async {
        (!replica
            .read(Consistency::Stale, |_| ())
            .await
            .unwrap()
            .1
            .known_leader)
            .then_some(())
    })
    .await;
    assert_eq!(meta.consistency, Consistency::Stale);
    let err = replica
        .read(Consistency::Default, |_| ())
        .await
        .unwrap_err();
    assert!(err.is_no_servers(), "{err:?}");
    assert_eq!(err.to_string(), "No known Consul servers");
    let err = replica.write(register("db5", 5)).await.unwrap_err();
    assert!(err.is_no_servers(), "{err:?}");

    // It comes back on the same address: the replica resumes and takes the new writes.
    let server = TestServer::start(1, dir.path(), Some(addr)).await;
    agreed_leader(&[&server.handle]).await;
    server.handle.write(register("db5", 5)).await.unwrap();
    caught_up(&replica, &server.handle).await;
    assert!(content(&replica).await.node("db5").is_some());
    replica.shutdown().await;
    replica.shutdown().await;
    assert!(
        replica
            .read(Consistency::Stale, |_| ())
            .await
            .unwrap_err()
            .is_shutting_down()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_of_three_servers_reads_writes_waits_and_switches() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut servers = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        servers.push(TestServer::start(i as u64 + 1, dir.path(), None).await);
    }
    let all = members(&servers.iter().collect::<Vec<_>>());
    servers[0].handle.bootstrap(all).await.unwrap();
    let handles: Vec<&ServerHandle> = servers.iter().map(|s| &s.handle).collect();
    let leader_id = agreed_leader(&handles).await;
    let leader = servers.iter().position(|s| s.id == leader_id).unwrap();
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    servers[leader]
        .handle
        .write(register("db1", 1))
        .await
        .unwrap();

    // Streams from one follower only at first.
    let (replica, list) = replica(&[&servers[follower]]);
    caught_up(&replica, &servers[leader].handle).await;
    assert_eq!(replica.voter_addrs().len(), 3);

    // A write through the client is acknowledged by the leader and visible here at once.
    let w = replica.write(register("db2", 2)).await.unwrap();
    assert_eq!(w.result, CommandResult::Ok);
    assert!(content(&replica).await.node("db2").is_some());
    let on_leader = servers[leader]
        .handle
        .read(Consistency::Stale, |c| c.node("db2").is_some())
        .await
        .unwrap()
        .0;
    assert!(on_leader);

    // A default read through the client sees a write acknowledged on the leader just before.
    for n in 3..6 {
        servers[leader]
            .handle
            .write(register(&format!("db{n}"), n))
            .await
            .unwrap();
        let name = format!("db{n}");
        let (seen, meta) = replica
            .read(Consistency::Default, |c| c.node(&name).is_some())
            .await
            .unwrap();
        assert!(seen, "default read sees db{n}");
        assert!(meta.known_leader);
        assert_eq!(meta.consistency, Consistency::Default);
        assert_eq!(
            meta.last_contact,
            Duration::ZERO,
            "vouched for by the leader"
        );
        let (seen, _) = replica
            .read(Consistency::Consistent, |c| c.node(&name).is_some())
            .await
            .unwrap();
        assert!(seen);
    }

    // A blocking wait on the client wakes on a change made on the leader.
    let index = replica.indexes().max_of(&Table::ALL);
    let waiter = {
        let replica = replica.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let at = replica
                .wait_for_change(
                    &[Table::Nodes],
                    index,
                    Instant::now() + Duration::from_secs(60),
                )
                .await;
            (at, started.elapsed())
        })
    };
    servers[leader]
        .handle
        .write(register("db9", 9))
        .await
        .unwrap();
    let (at, took) = tokio::time::timeout(T, waiter).await.unwrap().unwrap();
    assert!(at > index, "woke with a newer index");
    assert!(
        took < Duration::from_secs(30),
        "woke on the change, not the deadline"
    );

    // Its server goes away: it switches to another one and keeps up.
    list.send_replace(
        [follower, other, leader]
            .iter()
            .map(|i| servers[*i].addr.to_string())
            .collect(),
    );
    let gone = servers.remove(follower);
    gone.stop().await;
    let leader = servers.iter().position(|s| s.id == leader_id).unwrap();
    servers[leader]
        .handle
        .write(register("db10", 10))
        .await
        .unwrap();
    caught_up(&replica, &servers[leader].handle).await;
    assert!(content(&replica).await.node("db10").is_some());
    let w = replica.write(register("db11", 11)).await.unwrap();
    assert_eq!(w.result, CommandResult::Ok);

    replica.shutdown().await;
    for s in servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_without_servers_answers_stale_reads_only() {
    let (tx, rx) = watch::channel(Vec::<String>::new());
    let replica =
        CatalogReplica::start(ReplicaConfig::new("dc1"), rx, CancellationToken::new()).unwrap();
    let (count, meta) = replica
        .read(Consistency::Stale, Catalog::node_count)
        .await
        .unwrap();
    assert_eq!(count, 0);
    assert!(!meta.known_leader);
    let started = Instant::now();
    let err = replica
        .read(Consistency::Default, |_| ())
        .await
        .unwrap_err();
    assert!(err.is_no_servers(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "fails at once");
    assert!(replica.leader_addr().is_none());

    drop(tx);
    replica.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_answer_through_an_election_and_writes_resume_after_it() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut servers = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        servers.push(TestServer::start(i as u64 + 1, dir.path(), None).await);
    }
    let all = members(&servers.iter().collect::<Vec<_>>());
    servers[0].handle.bootstrap(all).await.unwrap();
    let handles: Vec<&ServerHandle> = servers.iter().map(|s| &s.handle).collect();
    let leader_id = agreed_leader(&handles).await;
    let leader = servers.iter().position(|s| s.id == leader_id).unwrap();
    servers[leader]
        .handle
        .write(register("db1", 1))
        .await
        .unwrap();
    let (replica, _list) = replica(&servers.iter().collect::<Vec<_>>());
    caught_up(&replica, &servers[leader].handle).await;

    // The leader dies. Until a new one is elected, the followers and the replica still
    // answer stale reads from what they hold.
    let old = servers.remove(leader);
    old.stop().await;
    for h in servers.iter().map(|s| &s.handle).chain([&replica]) {
        let (found, meta) = h
            .read(Consistency::Stale, |c| c.node("db1").is_some())
            .await
            .unwrap();
        assert!(found);
        assert_eq!(meta.consistency, Consistency::Stale);
    }

    // A write through the client goes through once the survivors elect a leader.
    let w = replica.write(register("db2", 2)).await.unwrap();
    assert_eq!(w.result, CommandResult::Ok);
    let new_leader = agreed_leader(&servers.iter().map(|s| &s.handle).collect::<Vec<_>>()).await;
    assert_ne!(new_leader, leader_id);
    let leader = servers.iter().find(|s| s.id == new_leader).unwrap();
    caught_up(&replica, &leader.handle).await;
    assert!(content(&replica).await.node("db2").is_some());
    replica.shutdown().await;
    for s in servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_resolve_tokens_through_a_server_and_never_hold_secrets() {
    use muster_server::Command;
    use muster_server::catalog::acl::{AclCommand, AclPolicy, AclToken, PolicyLink};
    let dir = tempfile::tempdir().unwrap();
    let server = single_server(dir.path()).await;
    let policy = AclPolicy {
        id: "p1".into(),
        name: "readers".into(),
        rules: r#"service_prefix "" { policy = "read" }"#.into(),
        ..AclPolicy::default()
    };
    let token = AclToken {
        accessor_id: "a1".into(),
        secret_id: "secret-1".into(),
        policies: vec![PolicyLink {
            id: "p1".into(),
            name: String::new(),
        }],
        ..AclToken::default()
    };
    for cmd in [AclCommand::PolicySet(policy), AclCommand::TokenSet(token)] {
        let w = server.handle.write(Command::Acl(cmd)).await.unwrap();
        assert!(w.result.is_ok(), "{:?}", w.result);
    }
    server.handle.write(register("db1", 1)).await.unwrap();
    let (replica, _servers) = replica(&[&server]);
    wait_until("the replica to catch up", T, || async {
        (replica.status().applied_index == server.handle.status().applied_index).then_some(())
    })
    .await;
    // The replica has the nodes, not the tokens.
    let copy = content(&replica).await;
    assert!(copy.node("db1").is_some());
    assert!(copy.acl().token_by_secret("secret-1").is_none());
    assert!(copy.acl().is_empty());
    // It resolves through the server, as the server does locally.
    let via_replica = replica
        .resolve_acl_token("secret-1")
        .await
        .unwrap()
        .unwrap();
    let local = server
        .handle
        .resolve_acl_token("secret-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(via_replica, local);
    assert_eq!(via_replica.policies[0].name, "readers");
    assert!(replica.resolve_acl_token("wrong").await.unwrap().is_none());
    // Without a server it cannot.
    server.stop().await;
    let err = replica.resolve_acl_token("secret-1").await.unwrap_err();
    assert!(err.is_no_servers(), "{err:?}");
    replica.shutdown().await;
}
