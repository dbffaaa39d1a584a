//! Three servers in one process over the real HTTP RPC: bootstrap, writes on the leader and
//! through a follower, leader loss, no acknowledged write lost.

use std::time::Duration;

use muster_server::{Catalog, CommandResult, Consistency, NodeMetaFilter, RaftRole, ServerHandle};
use tokio::time::Instant;

use crate::support::{TestServer, agreed_leader, applied, members, register, wait_until};

async fn node_names(h: &ServerHandle) -> Vec<String> {
    h.read(Consistency::Stale, |c| {
        c.nodes(&NodeMetaFilter::new())
            .1
            .into_iter()
            .map(|n| n.name)
            .collect()
    })
    .await
    .unwrap()
    .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_replicate_forward_and_survive_leader_loss() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut servers = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        servers.push(TestServer::start(i as u64 + 1, dir.path(), None).await);
    }
    let all = members(&servers.iter().collect::<Vec<_>>());
    assert!(servers[0].handle.bootstrap(all.clone()).await.unwrap());
    assert!(!servers[0].handle.bootstrap(all).await.unwrap());
    let handles: Vec<&ServerHandle> = servers.iter().map(|s| &s.handle).collect();
    let leader_id = agreed_leader(&handles).await;
    let leader = servers.iter().position(|s| s.id == leader_id).unwrap();
    let follower = (leader + 1) % 3;

    let status = servers[follower].handle.status();
    assert_eq!(status.role, RaftRole::Follower);
    assert_eq!(status.servers.iter().filter(|s| s.voter).count(), 3);
    assert_eq!(
        servers[follower].handle.leader_addr(),
        Some(servers[leader].addr.to_string())
    );

    let mut acked = Vec::new();
    // On the leader.
    let w = servers[leader]
        .handle
        .write(register("web1", 1))
        .await
        .unwrap();
    assert_eq!(w.result, CommandResult::Ok);
    acked.push(("web1".to_string(), w.index));
    // Through a follower: forwarded to the leader's RPC port.
    let w = servers[follower]
        .handle
        .write(register("web2", 2))
        .await
        .unwrap();
    assert_eq!(w.result, CommandResult::Ok);
    acked.push(("web2".to_string(), w.index));
    // A write the leader refuses comes back as a validation error through the follower.
    let orphan = muster_server::Command::Register(muster_server::Registration {
        node: "web9".into(),
        address: "10.9.9.9".into(),
        checks: vec![muster_server::HealthCheck {
            check_id: "c".into(),
            service_id: "nosuch".into(),
            ..muster_server::HealthCheck::default()
        }],
        ..muster_server::Registration::default()
    });
    let err = servers[follower].handle.write(orphan).await.unwrap_err();
    assert!(err.is_validation(), "{err:?}");

    // A consistent read on a follower sees the latest write (read-index through the leader).
    let (names, meta) = servers[follower]
        .handle
        .read(Consistency::Consistent, |c| c.node("web2").is_some())
        .await
        .unwrap();
    assert!(names);
    assert!(meta.known_leader);
    // Followers report when they last heard from the leader.
    assert!(meta.last_contact < Duration::from_secs(5));
    // A default read on a follower is confirmed through the leader, so it too sees the write.
    let (seen, meta) = servers[follower]
        .handle
        .read(Consistency::Default, |c| c.node("web2").is_some())
        .await
        .unwrap();
    assert!(seen);
    assert_eq!(meta.consistency, Consistency::Default);
    for s in &servers {
        applied(&s.handle, w.index).await;
        assert_eq!(node_names(&s.handle).await, ["web1", "web2"]);
    }

    // Lose the leader.
    let old_leader = servers.remove(leader);
    old_leader.stop().await;
    let lost_at = Instant::now();
    let rest: Vec<&ServerHandle> = servers.iter().map(|s| &s.handle).collect();
    // The first write after the loss waits through the election (rpc_hold_timeout).
    let w = servers[0].handle.write(register("web3", 3)).await.unwrap();
    let failover = lost_at.elapsed();
    assert_eq!(w.result, CommandResult::Ok);
    acked.push(("web3".to_string(), w.index));
    // Measured about 1.1 s with the default timeouts; the bound is generous for loaded CI.
    assert!(
        failover < Duration::from_secs(5),
        "failover took {failover:?}"
    );
    let new_leader = agreed_leader(&rest).await;
    assert_ne!(new_leader, leader_id);
    let w = servers[1].handle.write(register("web4", 4)).await.unwrap();
    acked.push(("web4".to_string(), w.index));

    // No acknowledged write is lost, on either remaining server.
    for s in &servers {
        applied(&s.handle, w.index).await;
        let (catalog, _) = s
            .handle
            .read(Consistency::Stale, Catalog::clone)
            .await
            .unwrap();
        for (name, index) in &acked {
            let node = catalog.node(name).unwrap_or_else(|| panic!("{name} lost"));
            assert_eq!(node.create_index, *index);
        }
    }
    assert_eq!(
        servers[0].handle.indexes(),
        servers[1].handle.indexes(),
        "replicas agree on every table index"
    );
    wait_until("status settles", Duration::from_secs(10), || async {
        let leader = servers.iter().find(|s| s.handle.is_leader())?;
        (leader.handle.status().role == RaftRole::Leader).then_some(())
    })
    .await;
    for s in servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_voter_and_remove_server() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let first = TestServer::start(1, dirs[0].path(), None).await;
    let second = TestServer::start(2, dirs[1].path(), None).await;
    first.handle.bootstrap_single().await.unwrap();
    wait_until("leadership", Duration::from_secs(10), || async {
        first.handle.is_leader().then_some(())
    })
    .await;
    let w = first.handle.write(register("web1", 1)).await.unwrap();
    // Only the leader changes membership.
    let err = second.handle.add_voter(3, second.node()).await.unwrap_err();
    assert!(err.is_no_leader() || err.is_not_leader(), "{err:?}");

    first.handle.add_voter(2, second.node()).await.unwrap();
    applied(&second.handle, w.index).await;
    assert_eq!(node_names(&second.handle).await, ["web1"]);
    let voters = first.handle.voter_addrs();
    assert_eq!(voters.len(), 2);
    assert!(voters.contains(&second.addr.to_string()));

    first.handle.remove_server(2).await.unwrap();
    wait_until("server 2 removed", Duration::from_secs(10), || async {
        (first.handle.voter_addrs().len() == 1).then_some(())
    })
    .await;
    // Removing a non-member is a no-op.
    first.handle.remove_server(42).await.unwrap();
    // The one-voter cluster still commits.
    first.handle.write(register("web2", 2)).await.unwrap();
    second.stop().await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_reads_need_a_leader_stale_reads_do_not() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let first = TestServer::start(1, dirs[0].path(), None).await;
    let second = TestServer::start(2, dirs[1].path(), None).await;
    // Not yet a member of any cluster: no leader known, so a default read fails at once.
    let started = Instant::now();
    let err = second
        .handle
        .read(Consistency::Default, |c| c.node_count())
        .await
        .unwrap_err();
    assert!(err.is_no_leader(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not a hold-timeout wait"
    );

    first.handle.bootstrap_single().await.unwrap();
    wait_until("leadership", Duration::from_secs(10), || async {
        first.handle.is_leader().then_some(())
    })
    .await;
    first.handle.add_voter(2, second.node()).await.unwrap();
    let w = first.handle.write(register("web1", 1)).await.unwrap();
    applied(&second.handle, w.index).await;
    let (count, meta) = second
        .handle
        .read(Consistency::Default, |c| c.node_count())
        .await
        .unwrap();
    assert_eq!(count, 1);
    assert_eq!(meta.consistency, Consistency::Default);
    assert!(meta.known_leader);

    // Two voters, one gone: no quorum, so no leader can confirm a read. The follower's
    // replica still holds web1, but only a stale read may serve it.
    first.stop().await;
    let err = second
        .handle
        .read(Consistency::Default, |c| c.node_count())
        .await
        .unwrap_err();
    assert!(err.is_no_leader(), "{err:?}");
    let (count, meta) = second
        .handle
        .read(Consistency::Stale, |c| c.node_count())
        .await
        .unwrap();
    assert_eq!(count, 1);
    assert_eq!(meta.consistency, Consistency::Stale);

    second.stop().await;

    // Restarted alone, neither knows a leader (Consul's empty /v1/status/leader): not the
    // follower, whose stored vote names the old leader, nor the old leader, which openraft
    // restores as leader before any other voter has answered.
    for (id, dir) in [(2, &dirs[1]), (1, &dirs[0])] {
        let alone = TestServer::start(id, dir.path(), None).await;
        assert_eq!(alone.handle.leader_addr(), None, "server {id}");
        let (count, meta) = alone
            .handle
            .read(Consistency::Stale, |c| c.node_count())
            .await
            .unwrap();
        assert_eq!(count, 1, "server {id}: the catalog survives the restart");
        assert!(!meta.known_leader, "server {id}: {meta:?}");
        alone.stop().await;
    }
}
