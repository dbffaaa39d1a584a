//! Push/pull: the full state over TCP repairs a member that missed the UDP updates.

use std::time::Duration;

use muster::gossip::Timing;
use muster::node::MemberStatus;

use crate::support::{Node, Opts, cluster, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_pull_gives_a_deaf_member_the_whole_state() {
    let nodes = cluster(&["a", "b", "c"], Opts::default()).await;
    // c leaves gracefully; then d, deaf to every datagram, joins through a over TCP only.
    nodes[2].handle.leave().await;
    wait_for("a sees c left", Duration::from_secs(10), || {
        let s = nodes[0].status("c");
        async move { s == Some(MemberStatus::Left) }
    })
    .await;
    let d = Node::start("d", Opts::default());
    d.handle.drop_incoming(true).await;
    d.join(&nodes[0]).await;
    // Everything d knows came through push/pull: a and b alive, and c left (not failed),
    // thanks to the leave intents in the state.
    wait_for("d learns the members", Duration::from_secs(5), || {
        let ok = d.with_status(MemberStatus::Alive) == ["a", "b", "d"]
            && d.status("c") == Some(MemberStatus::Left);
        async move { ok }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_greets_every_member_its_seed_knows() {
    // Gossip so slow that the seed's piggybacked updates cannot spread anything within the
    // test (one send per update, probes and periodic gossip every 30 s): a member learns a
    // joiner only from the joiner's own greeting.
    let timing = Timing {
        probe_period: Duration::from_secs(30),
        probe_rtt: Duration::from_secs(10),
        gossip_interval: Duration::from_secs(30),
        push_pull_interval: Duration::from_secs(60),
        retransmit_mult: 0,
        ..Timing::lan()
    };
    let opts = Opts {
        timing,
        ..Opts::default()
    };
    let names = ["seed", "m1", "m2", "m3", "m4"];
    let nodes: Vec<Node> = names.iter().map(|n| Node::start(n, opts.clone())).collect();
    for n in &nodes[1..] {
        n.join(&nodes[0]).await;
    }
    let mut all: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    all.sort();
    wait_for("everyone knows everyone", Duration::from_secs(5), || {
        let ok = nodes
            .iter()
            .all(|n| n.with_status(MemberStatus::Alive) == all);
        async move { ok }
    })
    .await;
}
