//! The leader's upkeep of the Raft configuration: servers that left are removed at once,
//! failed servers after the grace time and only while the healthy voters keep a quorum.

use std::time::Duration;

use muster::config::ServiceDefinition;
use muster::node::{MemberStatus, Members};
use muster::runtime::cluster;
use muster_server::Consistency;
use tokio::time::Instant;

use crate::support::{TestNode, Tunables, agreed_leader, voters, wait_until, wait_voters};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn left_servers_go_at_once_and_dead_ones_after_the_grace_time_with_quorum() {
    let tmp = tempfile::tempdir().unwrap();
    let members = Members::new(vec![]);
    let t = Tunables::default();
    let (a, b, c, d) = tokio::join!(
        TestNode::start(1, tmp.path().join("a"), &members, t),
        TestNode::start(2, tmp.path().join("b"), &members, t),
        TestNode::start(3, tmp.path().join("c"), &members, t),
        TestNode::start(4, tmp.path().join("d"), &members, t),
    );
    let all = [&a, &b, &c, &d];
    let set = |statuses: [MemberStatus; 4]| {
        members.set(
            all.iter()
                .zip(statuses)
                .map(|(n, s)| n.member(s, 3))
                .collect(),
        );
    };
    use MemberStatus::{Alive, Failed, Left};
    set([Alive, Alive, Alive, Alive]);
    let leader = agreed_leader(&all).await;
    wait_voters(leader, &all).await;

    // Pick the roles by who leads: two followers to lose, one to leave.
    let others: Vec<&TestNode> = all.iter().copied().filter(|n| n.n != leader.n).collect();
    let (leaving, first_dead, last_dead) = (others[0], others[1], others[2]);
    let status_of = |leaving_s, first_s, last_s| {
        let mut s = [Alive; 4];
        s[(leaving.n - 1) as usize] = leaving_s;
        s[(first_dead.n - 1) as usize] = first_s;
        s[(last_dead.n - 1) as usize] = last_s;
        s
    };

    // A graceful leave: removed without waiting.
    set(status_of(Left, Alive, Alive));
    wait_voters(leader, &[leader, first_dead, last_dead]).await;

    // A failed server: still a voter until the grace time has passed, then removed (3 → 2
    // voters with 2 healthy keeps a quorum).
    first_dead.handle.shutdown().await;
    let failed_at = Instant::now();
    set(status_of(Left, Failed, Alive));
    assert!(voters(leader).contains(&first_dead.raft_id));
    wait_voters(leader, &[leader, last_dead]).await;
    assert!(
        failed_at.elapsed() >= t.grace,
        "removed after {:?}, before the grace time {:?}",
        failed_at.elapsed(),
        t.grace
    );

    // The last follower fails too: removing it would need a quorum of {leader, it} that the
    // leader alone is not, so it stays, however long it is failed.
    last_dead.handle.shutdown().await;
    set(status_of(Left, Failed, Failed));
    tokio::time::sleep(t.grace * 2 + t.interval * 5).await;
    assert_eq!(
        voters(leader),
        [leader.raft_id, last_dead.raft_id].into_iter().collect(),
        "never below quorum"
    );

    for n in [a, b, c, d] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_leaves_shrink_the_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let members = Members::new(vec![]);
    let t = Tunables::default();
    let (a, b, c) = tokio::join!(
        TestNode::start(1, tmp.path().join("a"), &members, t),
        TestNode::start(2, tmp.path().join("b"), &members, t),
        TestNode::start(3, tmp.path().join("c"), &members, t),
    );
    let all = [&a, &b, &c];
    members.set(
        all.iter()
            .map(|n| n.member(MemberStatus::Alive, 3))
            .collect(),
    );
    let leader = agreed_leader(&all).await;
    wait_voters(leader, &all).await;
    let others: Vec<&TestNode> = all.iter().copied().filter(|n| n.n != leader.n).collect();

    // A follower leaves as `muster leave` does: it announces the leave in gossip, then asks
    // the leader to remove it from the Raft configuration.
    let leaving = |gone: &[&TestNode]| {
        members.set(
            all.iter()
                .map(|n| {
                    let status = if gone.iter().any(|g| g.n == n.n) {
                        MemberStatus::Left
                    } else {
                        MemberStatus::Alive
                    };
                    n.member(status, 3)
                })
                .collect(),
        );
    };
    leaving(&[others[0]]);
    assert!(cluster::leave_raft(&others[0].handle).await.unwrap());
    wait_voters(leader, &[leader, others[1]]).await;

    // The leader leaves: it removes itself, and the last server leads alone.
    leaving(&[others[0], leader]);
    assert!(cluster::leave_raft(&leader.handle).await.unwrap());
    let last = others[1];
    wait_voters(last, &[last]).await;
    wait_until("the last server leads", || async {
        last.handle.is_leader().then_some(())
    })
    .await;
    // Nobody is added back, and a single server does not remove itself.
    tokio::time::sleep(t.interval * 5).await;
    assert_eq!(voters(last), [last.raft_id].into_iter().collect());
    let alone = cluster::leave_raft(&last.handle).await;
    assert!(matches!(alone, Ok(false)), "{alone:?}");
    for n in [a, b, c] {
        n.stop().await;
    }
}

/// `deregister_critical_service_after` is carried out by the agent hosting the service (as in
/// Consul): its reaper drops the service locally and anti-entropy deregisters it through the
/// leader, so the whole cluster sees it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn critical_services_are_reaped_cluster_wide() {
    let tmp = tempfile::tempdir().unwrap();
    let members = Members::new(vec![]);
    let t = Tunables::default();
    let (a, b, c) = tokio::join!(
        TestNode::start(1, tmp.path().join("a"), &members, t),
        TestNode::start(2, tmp.path().join("b"), &members, t),
        TestNode::start(3, tmp.path().join("c"), &members, t),
    );
    let all = [&a, &b, &c];
    members.set(
        all.iter()
            .map(|n| n.member(MemberStatus::Alive, 3))
            .collect(),
    );
    let leader = agreed_leader(&all).await;
    let follower = all.iter().copied().find(|n| n.n != leader.n).unwrap();

    // A TTL check starts critical; the API's 1 min minimum is bypassed to keep the test short.
    let mut def = ServiceDefinition::from_api_json(&serde_json::json!({
        "ID": "doomed", "Name": "doomed",
        "Check": {"CheckID": "doomed-ttl", "TTL": "1h", "DeregisterCriticalServiceAfter": "1m"}
    }))
    .unwrap();
    def.checks[0].deregister_critical_service_after = Some(Duration::from_millis(800));
    follower.local.register_service(def, false).await.unwrap();
    let on_leader = || async {
        leader
            .handle
            .read(Consistency::Stale, |c| {
                c.service(&follower.name, "doomed").is_some()
            })
            .await
            .map(|(found, _)| found)
            .unwrap_or(false)
    };
    wait_until("doomed registered on the leader", || async {
        on_leader().await.then_some(())
    })
    .await;
    wait_until("doomed reaped on the leader", || async {
        (!on_leader().await).then_some(())
    })
    .await;
    for n in [a, b, c] {
        n.stop().await;
    }
}
