//! Bootstrap from gossip: servers with `bootstrap_expect = 3` wait for three agreeing
//! servers, then form exactly one cluster, also when all of them start at once.

use muster::node::{MemberStatus, Members};
use muster_server::{Command, Consistency, NodeService, Registration};

use crate::support::{
    TestNode, Tunables, agreed_leader, set_members, voters, wait_until, wait_voters,
};

fn register(node: &str, service: &str) -> Command {
    let mut reg = Registration {
        node: node.into(),
        address: "127.0.0.1".into(),
        service: Some(NodeService {
            service: service.into(),
            port: 8080,
            ..Default::default()
        }),
        ..Default::default()
    };
    reg.normalize();
    Command::Register(reg)
}

pub async fn has_service(node: &TestNode, name: &str) -> bool {
    node.handle
        .read(Consistency::Stale, |c| c.service("ext", name).is_some())
        .await
        .map(|(found, _)| found)
        .unwrap_or(false)
}

pub async fn write_service(node: &TestNode, name: &str) {
    node.handle
        .write(register("ext", name))
        .await
        .expect("the write commits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_servers_started_at_once_form_one_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let members = Members::new(vec![]);
    let t = Tunables::default();
    let (a, b, c) = tokio::join!(
        TestNode::start(1, tmp.path().join("a"), &members, t),
        TestNode::start(2, tmp.path().join("b"), &members, t),
        TestNode::start(3, tmp.path().join("c"), &members, t),
    );

    // Two of three servers visible: nobody bootstraps. (A negative check needs some time to
    // pass: five cluster rounds.)
    set_members(
        &members,
        &[(&a, MemberStatus::Alive), (&b, MemberStatus::Alive)],
        3,
    );
    tokio::time::sleep(t.interval * 5).await;
    // A third server that expects a different count stops the bootstrap (Consul's error).
    members.set(vec![
        a.member(MemberStatus::Alive, 3),
        b.member(MemberStatus::Alive, 3),
        c.member(MemberStatus::Alive, 5),
    ]);
    tokio::time::sleep(t.interval * 5).await;
    for n in [&a, &b, &c] {
        assert!(
            !n.handle.is_initialized().await.unwrap(),
            "{} bootstrapped",
            n.name
        );
    }

    // All three agree: they all see the third at the same moment and form one cluster.
    set_members(
        &members,
        &[
            (&a, MemberStatus::Alive),
            (&b, MemberStatus::Alive),
            (&c, MemberStatus::Alive),
        ],
        3,
    );
    let leader = agreed_leader(&[&a, &b, &c]).await;
    for n in [&a, &b, &c] {
        wait_voters(n, &[&a, &b, &c]).await;
    }
    let term = leader.handle.status().term;
    for n in [&a, &b, &c] {
        assert_eq!(n.handle.status().leader_id, Some(leader.raft_id));
        assert_eq!(voters(n).len(), 3);
    }

    // One catalog: a write through any server reaches all of them.
    write_service(&c, "web").await;
    for n in [&a, &b, &c] {
        wait_until(&format!("web on {}", n.name), || async {
            has_service(n, "web").await.then_some(())
        })
        .await;
    }
    assert_eq!(
        leader.handle.status().term,
        term,
        "no election after the bootstrap"
    );
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_added_later_does_not_bootstrap_a_second_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let members = Members::new(vec![]);
    let t = Tunables::default();
    let (a, b, c) = tokio::join!(
        TestNode::start(1, tmp.path().join("a"), &members, t),
        TestNode::start(2, tmp.path().join("b"), &members, t),
        TestNode::start(3, tmp.path().join("c"), &members, t),
    );
    set_members(
        &members,
        &[
            (&a, MemberStatus::Alive),
            (&b, MemberStatus::Alive),
            (&c, MemberStatus::Alive),
        ],
        3,
    );
    let leader = agreed_leader(&[&a, &b, &c]).await;

    // A fourth server with the same expect sees four alive servers, asks them, learns that a
    // cluster exists and waits: the leader adds it as a voter.
    let d = TestNode::start(4, tmp.path().join("d"), &members, t).await;
    set_members(
        &members,
        &[
            (&a, MemberStatus::Alive),
            (&b, MemberStatus::Alive),
            (&c, MemberStatus::Alive),
            (&d, MemberStatus::Alive),
        ],
        3,
    );
    wait_voters(leader, &[&a, &b, &c, &d]).await;
    wait_voters(&d, &[&a, &b, &c, &d]).await;
    assert_eq!(d.handle.status().leader_id, Some(leader.raft_id));
    write_service(&d, "api").await;
    wait_until("api on the leader", || async {
        has_service(leader, "api").await.then_some(())
    })
    .await;
    for n in [a, b, c, d] {
        n.stop().await;
    }
}
