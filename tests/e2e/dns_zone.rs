//! Zone answers beyond the seed scenario, through the real binary: a UDP answer cut by
//! `udp_answer_limit` sets TC=1 (where Consul silently truncates) and TCP or EDNS(0) gets
//! every instance; names are case-insensitive; node, addr, SOA and unhandled types answer as
//! docs/dns.md says.

use std::net::Ipv4Addr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use serde_json::json;

use crate::support::dns::{Ask, Transport, exchange, query};
use crate::support::{Agent, wait_for};

#[tokio::test]
async fn a_cut_udp_answer_sets_tc_and_tcp_or_edns_get_everything() {
    let agent = Agent::start(&[], &[]).await;
    let addrs: Vec<Ipv4Addr> = (1..=6).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect();
    for (i, addr) in addrs.iter().enumerate() {
        agent
            .put_ok(
                "/v1/catalog/register",
                Some(
                    &json!({"Node": format!("web-{i}"), "Address": addr.to_string(),
                             "Service": {"Service": "wide", "Port": 80}}),
                ),
            )
            .await;
    }
    let name = "wide.service.consul.";

    // Catalog writes reach the DNS replica when it is next published.
    wait_for("six instances in DNS", Duration::from_secs(10), || async {
        query(agent.dns, name, RecordType::A, Transport::Tcp)
            .await
            .answers()
            .len()
            == 6
    })
    .await;

    // Plain UDP: Consul's default udp_answer_limit of 3, and TC=1 so the client retries.
    let r = query(agent.dns, name, RecordType::A, Transport::Udp).await;
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    assert_eq!(r.answers().len(), 3, "{}", r.summary());
    assert!(r.tc() && r.aa(), "{}", r.summary());
    assert!(r.a_addrs().iter().all(|a| addrs.contains(a)));

    // TCP and EDNS(0) UDP: all six, no TC.
    let r = query(agent.dns, name, RecordType::A, Transport::Tcp).await;
    assert_eq!(r.a_addrs(), addrs, "{}", r.summary());
    assert!(!r.tc());
    let mut ask = Ask::new(name, RecordType::A, Transport::Udp);
    ask.edns = Some(1232);
    let r = exchange(agent.dns, &ask).await.unwrap();
    assert_eq!(r.a_addrs(), addrs, "{}", r.summary());
    assert!(!r.tc(), "{}", r.summary());
    let edns = r.message.edns.as_ref().expect("an OPT record back");
    assert!(edns.max_payload() >= 512, "{edns:?}");
}

#[tokio::test]
async fn node_addr_soa_and_unhandled_types() {
    let agent = Agent::start(&["-node-meta=rack:r7"], &[]).await;
    let node = agent.node().to_owned();

    // Case-insensitive, with the question's case echoed.
    let asked = format!("{}.NODE.Consul.", node.to_uppercase());
    let r = query(agent.dns, &asked, RecordType::A, Transport::Udp).await;
    assert_eq!(r.a_addrs(), [Ipv4Addr::LOCALHOST], "{}", r.summary());
    assert_eq!(r.answers()[0].name.to_ascii(), asked);
    // Node meta as TXT, once anti-entropy has written it to the node record. When the whole
    // suite starts at once a first sync can fail for want of a leader, and the retries back
    // off (0.5 s doubling to 15 s): 10 s was once not enough in CI, so the bound covers them.
    let txt_name = format!("{node}.node.dc1.consul.");
    wait_for("node meta as TXT", Duration::from_secs(40), || async {
        let r = query(agent.dns, &txt_name, RecordType::TXT, Transport::Tcp).await;
        r.answers().iter().any(|rec| match &rec.data {
            RData::TXT(t) => t.to_string().contains("rack=r7"),
            _ => false,
        })
    })
    .await;

    // <hex>.addr answers the address itself.
    let r = query(
        agent.dns,
        "c000020a.addr.consul.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    assert_eq!(
        r.a_addrs(),
        [Ipv4Addr::new(192, 0, 2, 10)],
        "{}",
        r.summary()
    );

    // The apex SOA; a type the zone does not serve is NODATA with the SOA, not forwarded.
    let r = query(agent.dns, "consul.", RecordType::SOA, Transport::Udp).await;
    assert!(
        r.answers()
            .iter()
            .any(|rec| matches!(rec.data, RData::SOA(_))),
        "{}",
        r.summary()
    );
    let r = query(
        agent.dns,
        "consul.service.consul.",
        RecordType::MX,
        Transport::Udp,
    )
    .await;
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    assert!(
        r.answers().is_empty() && r.soa().is_some(),
        "{}",
        r.summary()
    );
    // An unknown service: NXDOMAIN with the SOA.
    let r = query(
        agent.dns,
        "nope.service.consul.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    assert_eq!(r.rcode(), ResponseCode::NXDomain, "{}", r.summary());
    assert!(r.soa().is_some(), "{}", r.summary());
}
