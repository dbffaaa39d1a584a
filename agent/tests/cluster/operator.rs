//! `/v1/operator/raft/*` and `/v1/status/peers` on a three-server cluster, and without a
//! leader.

use muster::node::{MemberStatus, Members};
use serde_json::Value;

use crate::formation::write_service;
use crate::support::{
    TestNode, Tunables, agreed_leader, http_client, set_members, wait_until, wait_voters,
};

async fn get(url: &str) -> (u16, String) {
    let resp = http_client().get(url).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn delete(url: &str) -> (u16, String) {
    let resp = http_client().delete(url).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_configuration_and_peer_removal() {
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
    wait_voters(leader, &[&a, &b, &c]).await;
    write_service(leader, "web").await;
    let follower = [&a, &b, &c].into_iter().find(|n| n.n != leader.n).unwrap();
    let other = [&a, &b, &c]
        .into_iter()
        .find(|n| n.n != leader.n && n.n != follower.n)
        .unwrap();

    // The configuration, in Consul's shape, from a follower.
    let (status, body) = get(&format!("{}/v1/operator/raft/configuration", follower.url)).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let servers = v["Servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3);
    // The index of the configuration entry (0: the bootstrap entry, never changed yet).
    let index = v["Index"].as_u64().expect("Index is a number");
    for s in servers {
        let keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "ID",
            "Node",
            "Address",
            "Leader",
            "ProtocolVersion",
            "Voter",
            "LastIndex",
        ];
        want.sort_unstable();
        let mut got = keys.clone();
        got.sort_unstable();
        assert_eq!(got, want);
        let node = [&a, &b, &c]
            .into_iter()
            .find(|n| n.name == s["Node"])
            .unwrap();
        assert_eq!(s["ID"], node.uuid.as_str());
        assert_eq!(s["Address"], node.rpc.to_string().as_str());
        assert_eq!(s["Leader"], node.n == leader.n);
        assert_eq!(s["Voter"], true);
        assert_eq!(s["ProtocolVersion"], "3");
    }
    // The follower forwards to the leader, which knows every server's LastIndex once it has
    // replicated the write.
    wait_until("LastIndex of every server from the leader", || async {
        let (_, body) = get(&format!("{}/v1/operator/raft/configuration", follower.url)).await;
        let v: Value = serde_json::from_str(&body).ok()?;
        let all = v["Servers"]
            .as_array()?
            .iter()
            .all(|s| s["LastIndex"].as_u64().unwrap_or(0) > 0);
        all.then_some(())
    })
    .await;

    // `?stale`: the follower answers alone and knows only its own LastIndex.
    let (_, body) = get(&format!(
        "{}/v1/operator/raft/configuration?stale",
        follower.url
    ))
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    for s in v["Servers"].as_array().unwrap() {
        let own = s["Node"] == follower.name.as_str();
        assert_eq!(s["LastIndex"].as_u64().unwrap() > 0, own, "{s}");
    }

    // /v1/status/peers lists the three voters.
    let (_, body) = get(&format!("{}/v1/status/peers", follower.url)).await;
    let mut peers: Vec<String> = serde_json::from_str(&body).unwrap();
    peers.sort();
    let mut want: Vec<String> = [&a, &b, &c].iter().map(|n| n.rpc.to_string()).collect();
    want.sort();
    assert_eq!(peers, want);

    // Consul's errors.
    let peer = format!("{}/v1/operator/raft/peer", follower.url);
    let (status, body) = delete(&peer).await;
    assert_eq!(
        (status, body.as_str()),
        (
            400,
            "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove"
        )
    );
    let (status, body) = delete(&format!("{peer}?id=x&address=y")).await;
    assert_eq!(
        (status, body.as_str()),
        (400, "Must specify only one of ?id or ?address")
    );
    let (status, body) = delete(&format!("{peer}?id=nope")).await;
    assert_eq!(
        (status, body.as_str()),
        (500, "id \"nope\" was not found in the Raft configuration")
    );
    let (status, body) = delete(&format!("{peer}?address=nope")).await;
    assert_eq!(
        (status, body.as_str()),
        (
            500,
            "address \"nope\" was not found in the Raft configuration"
        )
    );

    // A removal through a follower is carried out by the leader; the removed server is held
    // off (not added straight back although gossip still says it is alive).
    let (status, body) = delete(&format!("{peer}?address={}", other.rpc)).await;
    assert_eq!(status, 200, "{body}");
    wait_voters(leader, &[leader, follower]).await;
    let (_, body) = get(&format!("{}/v1/operator/raft/configuration", leader.url)).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["Servers"].as_array().unwrap().len(), 2);
    assert!(
        v["Index"].as_u64().unwrap() > index,
        "a new configuration entry"
    );
    // And by ID (the node UUID), through the leader this time: nothing left to remove but
    // the follower, which a two-voter configuration can lose only with both alive.
    let (status, body) = delete(&format!(
        "{}/v1/operator/raft/peer?id={}",
        leader.url, follower.uuid
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    wait_voters(leader, &[leader]).await;
    tokio::join!(a.stop(), b.stop(), c.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_leader_operator_calls_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let members = Members::new(vec![]);
    let a = TestNode::start(1, tmp.path().join("a"), &members, Tunables::default()).await;
    set_members(&members, &[(&a, MemberStatus::Alive)], 3);
    let (status, body) = get(&format!("{}/v1/operator/raft/configuration", a.url)).await;
    assert_eq!((status, body.as_str()), (500, "No cluster leader"));
    let (status, body) = delete(&format!("{}/v1/operator/raft/peer?id={}", a.url, a.uuid)).await;
    assert_eq!((status, body.as_str()), (500, "No cluster leader"));
    // `?stale` answers from local state: no configuration yet.
    let (status, body) = get(&format!("{}/v1/operator/raft/configuration?stale", a.url)).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["Servers"], serde_json::json!([]));
    a.stop().await;
}
