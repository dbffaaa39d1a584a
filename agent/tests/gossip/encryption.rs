//! Encrypted gossip: same key joins, a wrong or missing key cannot, and is counted.

use std::sync::atomic::Ordering;
use std::time::Duration;

use muster::node::MemberStatus;

use crate::support::{KEY, Node, Opts, cluster, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_joins_wrong_key_cannot_and_the_others_are_unaffected() {
    let keyed = Opts {
        key: Some(KEY.to_vec()),
        ..Opts::default()
    };
    let nodes = cluster(&["a", "b"], keyed.clone()).await;
    assert!(nodes[0].members.stats().encrypted.load(Ordering::Relaxed));

    let wrong = Node::start(
        "intruder",
        Opts {
            key: Some(b"another-key-another-key-32bytes!".to_vec()),
            ..Opts::default()
        },
    );
    let err = wrong.handle.join(vec![nodes[0].addr.to_string()]).await;
    assert!(err.is_err(), "a wrong key must not join: {err:?}");
    let plain = Node::start("plain", Opts::default());
    assert!(
        plain
            .handle
            .join(vec![nodes[1].addr.to_string()])
            .await
            .is_err()
    );

    // The refused packets are counted, and nobody lists the intruders.
    wait_for(
        "a counts the refused push/pull",
        Duration::from_secs(5),
        || {
            let n = nodes[0].members.stats().dropped_key.load(Ordering::Relaxed);
            async move { n > 0 }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in &nodes {
        assert_eq!(n.status("intruder"), None);
        assert_eq!(n.status("plain"), None);
        assert_eq!(n.with_status(MemberStatus::Alive), ["a", "b"]);
    }
    assert_eq!(wrong.with_status(MemberStatus::Alive), ["intruder"]);
}
