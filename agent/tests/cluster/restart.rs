//! A whole-cluster restart: all servers stop, then come back on the same data directories
//! but on new ports (the realistic case in tests and containers); gossip's addresses let them
//! elect, the leader records the new addresses, and the catalog is intact.

use std::collections::BTreeSet;

use muster::node::{MemberStatus, Members};

use crate::formation::{has_service, write_service};
use crate::support::{TestNode, Tunables, agreed_leader, set_members, wait_until, wait_voters};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_cluster_restart_on_new_ports_keeps_the_catalog() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = [
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    ];
    let members = Members::new(vec![]);
    let t = Tunables::default();
    let (a, b, c) = tokio::join!(
        TestNode::start(1, dirs[0].clone(), &members, t),
        TestNode::start(2, dirs[1].clone(), &members, t),
        TestNode::start(3, dirs[2].clone(), &members, t),
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
    agreed_leader(&[&a, &b, &c]).await;
    wait_voters(&a, &[&a, &b, &c]).await;
    write_service(&b, "galeradb").await;
    for n in [&a, &b, &c] {
        wait_until("galeradb everywhere", || async {
            has_service(n, "galeradb").await.then_some(())
        })
        .await;
    }
    let old_addrs: BTreeSet<String> = [&a, &b, &c].iter().map(|n| n.rpc.to_string()).collect();
    tokio::join!(a.stop(), b.stop(), c.stop());

    // Everything comes back on new ports; gossip (the member list) has the new addresses.
    let members = Members::new(vec![]);
    let (a, b, c) = tokio::join!(
        TestNode::start(1, dirs[0].clone(), &members, t),
        TestNode::start(2, dirs[1].clone(), &members, t),
        TestNode::start(3, dirs[2].clone(), &members, t),
    );
    let new_addrs: BTreeSet<String> = [&a, &b, &c].iter().map(|n| n.rpc.to_string()).collect();
    assert!(
        old_addrs.is_disjoint(&new_addrs),
        "the test needs new ports"
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
    for n in [&a, &b, &c] {
        assert!(
            has_service(n, "galeradb").await,
            "catalog kept on {}",
            n.name
        );
    }
    // The leader writes the new addresses into the Raft configuration.
    wait_until("new addresses in the configuration", || async {
        let recorded: BTreeSet<String> = leader
            .handle
            .status()
            .servers
            .into_iter()
            .map(|s| s.rpc_addr)
            .collect();
        (recorded == new_addrs).then_some(())
    })
    .await;
    // And the cluster takes writes again.
    write_service(&c, "after-restart").await;
    wait_until("the new write on the leader", || async {
        has_service(leader, "after-restart").await.then_some(())
    })
    .await;
    tokio::join!(a.stop(), b.stop(), c.stop());
}
