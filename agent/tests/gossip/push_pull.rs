//! Push/pull: the full state over TCP repairs a member that missed the UDP updates.

use std::time::Duration;

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
