//! The DNS forwarder through the real binary: names outside `consul.` go to the `-recursor`s
//! (fake upstreams the test starts on loopback port 0), through a cache that keeps upstream
//! TTLs, caches negative answers (RFC 2308), fails over in order, answers SERVFAIL when every
//! upstream fails and REFUSED when there is none.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use muster_dns::testing::{FakeAnswer, FakeTransport, FakeUpstream};

use crate::support::dns::{BOTH, Transport, query};
use crate::support::{Agent, wait_some};

const WWW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

async fn agent_with(recursors: &[&FakeUpstream], extra: &[(&str, &str)]) -> Agent {
    let flags: Vec<String> = recursors
        .iter()
        .map(|u| format!("-recursor={}", u.addr()))
        .collect();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Agent::start(&flags, extra).await
}

#[tokio::test]
async fn forwarded_answers_are_cached_with_the_upstream_ttl() {
    let up = FakeUpstream::start().await.unwrap();
    up.set("www.example.test", FakeAnswer::a(WWW, 300));
    let agent = agent_with(&[&up], &[]).await;

    let first = query(
        agent.dns,
        "www.example.test.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    let what = first.summary();
    assert_eq!(first.rcode(), ResponseCode::NoError, "{what}");
    assert!(first.ra(), "RA=1 on forwarded answers: {what}");
    assert!(!first.aa(), "not authoritative: {what}");
    assert_eq!(first.a_addrs(), [WWW], "{what}");
    let ttl1 = first.min_ttl();
    assert!((290..=300).contains(&ttl1), "the upstream TTL: {what}");
    assert_eq!(up.total("www.example.test"), 1);

    // A cache hit, over either transport: nothing reaches the upstream and the TTL counts down.
    for transport in BOTH {
        let again = query(agent.dns, "WWW.Example.TEST.", RecordType::A, transport).await;
        assert_eq!(again.a_addrs(), [WWW], "{}", again.summary());
        assert!(again.min_ttl() <= ttl1, "{}", again.summary());
        assert!(again.ra());
    }
    assert_eq!(up.total("www.example.test"), 1, "served from the cache");

    // Zone names are still answered from the catalog, never forwarded.
    let r = query(
        agent.dns,
        "consul.service.consul.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    assert_eq!(r.a_addrs(), [Ipv4Addr::LOCALHOST], "{}", r.summary());
    assert!(r.aa() && r.ra(), "{}", r.summary());
    assert_eq!(up.all_queries(), 1);
}

#[tokio::test]
async fn negative_answers_are_cached_with_the_soa() {
    let up = FakeUpstream::start().await.unwrap();
    up.set(
        "missing.example.test",
        FakeAnswer::NxDomain {
            soa_ttl: 600,
            minimum: 120,
        },
    );
    up.set(
        "nodata.example.test",
        FakeAnswer::NoData {
            soa_ttl: 600,
            minimum: 60,
        },
    );
    let agent = agent_with(&[&up], &[]).await;

    for _ in 0..3 {
        let r = query(
            agent.dns,
            "missing.example.test.",
            RecordType::A,
            Transport::Udp,
        )
        .await;
        let what = r.summary();
        assert_eq!(r.rcode(), ResponseCode::NXDomain, "{what}");
        assert!(r.ra(), "{what}");
        let (ttl, soa) = r.soa().unwrap_or_else(|| panic!("SOA: {what}"));
        // RFC 2308: the negative TTL is min(SOA TTL, MINIMUM), and no TTL exceeds it.
        assert!(ttl <= 120, "{what}");
        assert_eq!(soa.minimum, 120, "{what}");
    }
    assert_eq!(up.total("missing.example.test"), 1, "NXDOMAIN is cached");

    for transport in BOTH {
        let r = query(
            agent.dns,
            "nodata.example.test.",
            RecordType::AAAA,
            transport,
        )
        .await;
        assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
        assert!(
            r.answers().is_empty() && r.soa().is_some(),
            "{}",
            r.summary()
        );
    }
    assert_eq!(up.total("nodata.example.test"), 1, "NODATA is cached");
}

#[tokio::test]
async fn a_failing_upstream_fails_over_to_the_next() {
    let bad = FakeUpstream::start().await.unwrap();
    bad.set_default(FakeAnswer::ServFail);
    let good = FakeUpstream::start().await.unwrap();
    good.set_zone("example.test", FakeAnswer::a(WWW, 60));
    let agent = agent_with(&[&bad, &good], &[]).await;

    let r = query(
        agent.dns,
        "failover.example.test.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    assert_eq!(r.a_addrs(), [WWW], "{}", r.summary());
    assert_eq!(
        bad.total("failover.example.test"),
        1,
        "tried first, in order"
    );
    assert_eq!(good.total("failover.example.test"), 1);
}

#[tokio::test]
async fn every_upstream_down_is_servfail_within_a_bound() {
    // One upstream never answers (a timeout), the other is gone (connection refused).
    let silent = FakeUpstream::start().await.unwrap();
    silent.set_default(FakeAnswer::Drop);
    let gone = FakeUpstream::start().await.unwrap();
    gone.stop();
    let timeout = r#"{"dns_config": {"recursor_timeout": "500ms"}}"#;
    let agent = agent_with(&[&silent, &gone], &[("dns.json", timeout)]).await;

    for transport in BOTH {
        let name = format!("down-{transport:?}.example.test.");
        let start = Instant::now();
        let r = query(agent.dns, &name, RecordType::A, transport).await;
        let took = start.elapsed();
        assert_eq!(r.rcode(), ResponseCode::ServFail, "{}", r.summary());
        assert!(r.ra(), "{}", r.summary());
        // Worst case: 2 recursors x 500 ms; allow a loaded machine plenty on top.
        assert!(took < Duration::from_secs(4), "SERVFAIL took {took:?}");
        assert!(silent.total(&name) >= 1, "the first recursor was tried");
    }
}

#[tokio::test]
async fn without_recursors_other_names_are_refused() {
    let agent = Agent::start(&[], &[]).await;
    for transport in BOTH {
        let r = query(agent.dns, "example.test.", RecordType::A, transport).await;
        assert_eq!(r.rcode(), ResponseCode::Refused, "{}", r.summary());
        assert!(!r.ra(), "RA=0 without recursors: {}", r.summary());
        // The zone still answers.
        let r = query(
            agent.dns,
            "consul.service.consul.",
            RecordType::A,
            transport,
        )
        .await;
        assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
        assert!(r.aa() && !r.ra(), "{}", r.summary());
    }
}

#[tokio::test]
async fn a_truncated_upstream_reply_is_retried_over_tcp() {
    let up = FakeUpstream::start().await.unwrap();
    let addrs: Vec<Ipv4Addr> = (1..=6).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect();
    up.set(
        "big.example.test",
        FakeAnswer::Truncated {
            addrs: addrs.clone(),
            ttl: 120,
        },
    );
    let agent = agent_with(&[&up], &[]).await;

    let r = query(
        agent.dns,
        "big.example.test.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    assert!(!r.tc(), "the client gets the full answer: {}", r.summary());
    assert_eq!(r.a_addrs(), addrs, "{}", r.summary());
    assert_eq!(up.queries("big.example.test", FakeTransport::Udp), 1);
    assert_eq!(up.queries("big.example.test", FakeTransport::Tcp), 1);
}

#[tokio::test]
async fn out_of_zone_queries_over_tcp_are_forwarded() {
    let up = FakeUpstream::start().await.unwrap();
    up.set("tcp.example.test", FakeAnswer::a(WWW, 90));
    let agent = agent_with(&[&up], &[]).await;

    let r = query(
        agent.dns,
        "tcp.example.test.",
        RecordType::A,
        Transport::Tcp,
    )
    .await;
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    assert!(r.ra() && !r.aa(), "{}", r.summary());
    assert_eq!(r.a_addrs(), [WWW], "{}", r.summary());
    assert!((80..=90).contains(&r.min_ttl()), "{}", r.summary());
    // The agent asks its upstream over UDP, whatever the client used.
    assert_eq!(up.queries("tcp.example.test", FakeTransport::Udp), 1);
    assert_eq!(up.queries("tcp.example.test", FakeTransport::Tcp), 0);
}

#[tokio::test]
async fn a_stale_answer_is_served_when_every_upstream_fails() {
    let up = FakeUpstream::start().await.unwrap();
    up.set("stale.example.test", FakeAnswer::a(WWW, 1));
    let timeout = r#"{"dns_config": {"recursor_timeout": "300ms"}}"#;
    let agent = agent_with(&[&up], &[("dns.json", timeout)]).await;
    let r = query(
        agent.dns,
        "stale.example.test.",
        RecordType::A,
        Transport::Udp,
    )
    .await;
    assert_eq!(r.a_addrs(), [WWW], "{}", r.summary());

    // The upstream goes silent; once the 1 s entry has expired, RFC 8767 serve-stale
    // answers with the old records and a 30 s TTL.
    up.set("stale.example.test", FakeAnswer::Drop);
    let (r, _) = wait_some("a stale answer", Duration::from_secs(10), || async {
        let r = query(
            agent.dns,
            "stale.example.test.",
            RecordType::A,
            Transport::Udp,
        )
        .await;
        (up.total("stale.example.test") >= 2).then_some(r)
    })
    .await;
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    assert_eq!(r.a_addrs(), [WWW], "{}", r.summary());
    assert_eq!(r.min_ttl(), 30, "{}", r.summary());
}
