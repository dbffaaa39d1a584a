//! Forwarding through the fake upstream: caching, negative caching, failover, timeouts,
//! garbage replies, serve-stale, TCP retry, RD=0, coalescing, loop protection, zone
//! answers that never wait for upstreams, and `recursor_allow`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use muster_dns::testing::{FakeAnswer, FakeTransport, FakeUpstream, Garbage};
use muster_dns::{CacheConfig, DnsConfig, DnsListeners, RecursorAllow, RecursorStrategy};
use tokio::time::Instant;

use crate::support::{
    Ask, PLAIN, TestServer, catalog, ips, request, tcp, tcp_raw_from, udp, udp_raw_from, wait_for,
};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn forwarding(upstreams: &[&FakeUpstream]) -> DnsConfig {
    let mut c = DnsConfig::default();
    c.recursors = upstreams.iter().map(|u| u.addr()).collect();
    c.recursor_timeout = Duration::from_millis(300);
    c
}

#[tokio::test]
async fn first_query_goes_upstream_then_cache_hits_count_down() {
    let up = FakeUpstream::start().await.unwrap();
    up.set("www.example.test.", FakeAnswer::a(ip("192.0.2.1"), 300));
    let srv = TestServer::start(forwarding(&[&up]), catalog()).await;
    let m = udp(srv.addr, "www.example.test.", RecordType::A, &PLAIN).await;
    assert_eq!(ips(&m.answers), ["192.0.2.1"]);
    assert_eq!(m.answers[0].ttl, 300);
    assert!(m.metadata.recursion_available && !m.metadata.authoritative);
    assert_eq!(up.queries("www.example.test.", FakeTransport::Udp), 1);
    // Cache hits, with the client's case, until the TTL has visibly counted down.
    let ttl = wait_for(Duration::from_secs(5), "a decremented TTL", || async {
        let m = udp(srv.addr, "WWW.example.TEST.", RecordType::A, &PLAIN).await;
        assert_eq!(m.answers[0].name.to_ascii(), "WWW.example.TEST.");
        (m.answers[0].ttl < 300).then_some(m.answers[0].ttl)
    })
    .await;
    assert!(ttl >= 290, "{ttl}");
    let m = tcp(srv.addr, "www.example.test.", RecordType::A, &PLAIN).await;
    assert_eq!(ips(&m.answers), ["192.0.2.1"]);
    assert_eq!(
        up.total("www.example.test."),
        1,
        "every later query was a cache hit"
    );
    let stats = srv.server.stats();
    assert!(stats.cache_hits >= 2);
    assert_eq!(stats.cache_misses, 1);
    assert_eq!(stats.upstreams[0].queries, 1);
    srv.stop().await;
}

#[tokio::test]
async fn negative_answers_are_cached_for_the_soa_minimum() {
    let up = FakeUpstream::start().await.unwrap();
    up.set(
        "nx.example.test.",
        FakeAnswer::NxDomain {
            soa_ttl: 600,
            minimum: 60,
        },
    );
    up.set(
        "nodata.example.test.",
        FakeAnswer::NoData {
            soa_ttl: 30,
            minimum: 300,
        },
    );
    up.set("bare.example.test.", FakeAnswer::ServFail);
    let srv = TestServer::start(forwarding(&[&up]), catalog()).await;
    for _ in 0..3 {
        let m = udp(srv.addr, "nx.example.test.", RecordType::A, &PLAIN).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities.len(), 1, "the upstream SOA is passed through");
        assert!(
            m.authorities[0].ttl <= 60,
            "SOA TTL capped to the negative TTL"
        );
        let m = udp(srv.addr, "nodata.example.test.", RecordType::A, &PLAIN).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
    }
    assert_eq!(up.total("nx.example.test."), 1);
    assert_eq!(up.total("nodata.example.test."), 1);
    // SERVFAIL is never cached.
    for _ in 0..2 {
        let m = udp(srv.addr, "bare.example.test.", RecordType::A, &PLAIN).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    }
    assert_eq!(up.total("bare.example.test."), 2);
    srv.stop().await;
}

#[tokio::test]
async fn fails_over_from_servfail_refused_and_timeouts() {
    let bad = FakeUpstream::start().await.unwrap();
    let slow = FakeUpstream::start().await.unwrap();
    let good = FakeUpstream::start().await.unwrap();
    bad.set_default(FakeAnswer::ServFail);
    bad.set("refused.example.test.", FakeAnswer::Refused);
    slow.set_default(FakeAnswer::Drop);
    good.set_zone("example.test", FakeAnswer::a(ip("192.0.2.9"), 60));
    let srv = TestServer::start(forwarding(&[&bad, &slow, &good]), catalog()).await;
    let started = Instant::now();
    let m = udp(srv.addr, "a.example.test.", RecordType::A, &PLAIN).await;
    assert_eq!(ips(&m.answers), ["192.0.2.9"]);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "waited for the timeout"
    );
    assert_eq!(
        (
            bad.total("a.example.test."),
            slow.total("a.example.test."),
            good.total("a.example.test.")
        ),
        (1, 1, 1)
    );
    let m = udp(srv.addr, "refused.example.test.", RecordType::A, &PLAIN).await;
    assert_eq!(ips(&m.answers), ["192.0.2.9"]);
    let stats = srv.server.stats();
    let by_addr = |a| {
        stats
            .upstreams
            .iter()
            .find(|u| u.addr == a)
            .unwrap()
            .clone()
    };
    assert_eq!(by_addr(bad.addr()).bad_rcode, 2);
    assert_eq!(by_addr(slow.addr()).timeouts, 2);
    srv.stop().await;
}

#[tokio::test]
async fn all_upstreams_down_gives_servfail_in_bounded_time() {
    let a = FakeUpstream::start().await.unwrap();
    let b = FakeUpstream::start().await.unwrap();
    a.set_default(FakeAnswer::Drop);
    b.set_default(FakeAnswer::Drop);
    let srv = TestServer::start(forwarding(&[&a, &b]), catalog()).await;
    let started = Instant::now();
    let m = udp(srv.addr, "down.example.test.", RecordType::A, &PLAIN).await;
    let took = started.elapsed();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(m.metadata.recursion_available);
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_secs(2),
        "2 × 300 ms timeout, took {took:?}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn garbage_from_an_upstream_is_never_believed() {
    let good = FakeUpstream::start().await.unwrap();
    good.set_zone("example.test", FakeAnswer::a(ip("192.0.2.20"), 60));
    for kind in [
        Garbage::Junk,
        Garbage::WrongId,
        Garbage::WrongQuestion,
        Garbage::NotAResponse,
    ] {
        let bad = FakeUpstream::start().await.unwrap();
        bad.set_default(FakeAnswer::Garbage(kind));
        // The only upstream: SERVFAIL within the attempt's recursor_timeout (300 ms), and
        // nothing cached from it (asked again, it is asked again).
        let alone = TestServer::start(forwarding(&[&bad]), catalog()).await;
        for round in 1..=2 {
            let started = Instant::now();
            let m = udp(alone.addr, "g.example.test.", RecordType::A, &PLAIN).await;
            let took = started.elapsed();
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::ServFail,
                "{kind:?}: {m}"
            );
            assert!(m.answers.is_empty(), "{kind:?}: {m}");
            assert!(took < Duration::from_secs(2), "{kind:?} took {took:?}");
            assert_eq!(bad.total("g.example.test."), round, "{kind:?}");
        }
        alone.stop().await;
        // Followed by a good upstream: its answer.
        let both = TestServer::start(forwarding(&[&bad, &good]), catalog()).await;
        let m = udp(both.addr, "h.example.test.", RecordType::A, &PLAIN).await;
        assert_eq!(ips(&m.answers), ["192.0.2.20"], "{kind:?}: {m}");
        assert_eq!(bad.total("h.example.test."), 1, "{kind:?}");
        both.stop().await;
    }
}

#[tokio::test]
async fn zone_answers_do_not_wait_for_hanging_upstreams() {
    let up = FakeUpstream::start().await.unwrap();
    up.set_default(FakeAnswer::Drop);
    let mut config = forwarding(&[&up]);
    // Long enough that every forwarded query below is still pending at the end.
    config.recursor_timeout = Duration::from_secs(20);
    let srv = TestServer::start(config, catalog()).await;
    let forwarded: Vec<_> = (0..200)
        .map(|i| {
            let addr = srv.addr;
            tokio::spawn(async move {
                let name = format!("hang{i}.example.test.");
                udp(addr, &name, RecordType::A, &PLAIN).await
            })
        })
        .collect();
    wait_for(
        Duration::from_secs(10),
        "the upstream holds 200 queries",
        || async { (up.all_queries() >= 200).then_some(()) },
    )
    .await;
    let started = Instant::now();
    for i in 0..500u16 {
        let how = Ask { id: i, ..PLAIN };
        let m = udp(srv.addr, "web.service.consul.", RecordType::A, &how).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(ips(&m.answers), ["10.0.0.1", "10.0.0.2"]);
    }
    let took = started.elapsed();
    assert!(
        forwarded.iter().all(|t| !t.is_finished()),
        "the forwarded queries were still waiting for the upstream"
    );
    assert!(
        took < Duration::from_secs(20),
        "500 zone answers took {took:?}"
    );
    for t in forwarded {
        t.abort();
    }
    srv.stop().await;
}

#[tokio::test]
async fn serves_stale_answers_when_every_upstream_fails() {
    let up = FakeUpstream::start().await.unwrap();
    up.set("flaky.example.test.", FakeAnswer::a(ip("192.0.2.2"), 1));
    let mut config = forwarding(&[&up]);
    config.cache.serve_stale = Duration::from_secs(60);
    let srv = TestServer::start(config, catalog()).await;
    assert_eq!(
        ips(&udp(srv.addr, "flaky.example.test.", RecordType::A, &PLAIN)
            .await
            .answers),
        ["192.0.2.2"]
    );
    up.set("flaky.example.test.", FakeAnswer::ServFail);
    let m = wait_for(Duration::from_secs(5), "a stale answer", || async {
        let m = udp(srv.addr, "flaky.example.test.", RecordType::A, &PLAIN).await;
        (m.answers.first().is_some_and(|r| r.ttl == 30)).then_some(m)
    })
    .await;
    assert_eq!(ips(&m.answers), ["192.0.2.2"]);
    assert!(srv.server.stats().cache_stale_served >= 1);
    assert!(
        up.total("flaky.example.test.") >= 2,
        "the upstream was asked again first"
    );

    // Without serve-stale the same situation is SERVFAIL.
    let mut config = forwarding(&[&up]);
    config.cache.serve_stale = Duration::ZERO;
    up.set("flaky2.example.test.", FakeAnswer::a(ip("192.0.2.3"), 1));
    let strict = TestServer::start(config, catalog()).await;
    assert_eq!(
        udp(strict.addr, "flaky2.example.test.", RecordType::A, &PLAIN)
            .await
            .answers
            .len(),
        1
    );
    up.set("flaky2.example.test.", FakeAnswer::ServFail);
    wait_for(Duration::from_secs(5), "SERVFAIL after expiry", || async {
        let m = udp(strict.addr, "flaky2.example.test.", RecordType::A, &PLAIN).await;
        (m.metadata.response_code == ResponseCode::ServFail).then_some(())
    })
    .await;
    srv.stop().await;
    strict.stop().await;
}

#[tokio::test]
async fn truncated_upstream_replies_are_retried_over_tcp() {
    let up = FakeUpstream::start().await.unwrap();
    up.set(
        "tc.example.test.",
        FakeAnswer::Truncated {
            addrs: vec![ip("192.0.2.4"), ip("192.0.2.5")],
            ttl: 60,
        },
    );
    let srv = TestServer::start(forwarding(&[&up]), catalog()).await;
    let m = udp(srv.addr, "tc.example.test.", RecordType::A, &PLAIN).await;
    assert_eq!(ips(&m.answers), ["192.0.2.4", "192.0.2.5"]);
    assert!(!m.metadata.truncation);
    assert_eq!(up.queries("tc.example.test.", FakeTransport::Udp), 1);
    assert_eq!(up.queries("tc.example.test.", FakeTransport::Tcp), 1);
    assert_eq!(srv.server.stats().upstreams[0].tcp_retries, 1);
    srv.stop().await;
}

#[tokio::test]
async fn large_cached_answers_truncate_for_small_udp_clients() {
    let up = FakeUpstream::start().await.unwrap();
    let many: Vec<Ipv4Addr> = (1..=40).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect();
    up.set(
        "many.example.test.",
        FakeAnswer::Truncated {
            addrs: many,
            ttl: 60,
        },
    );
    let srv = TestServer::start(forwarding(&[&up]), catalog()).await;
    let m = udp(srv.addr, "many.example.test.", RecordType::A, &PLAIN).await;
    assert!(m.metadata.truncation, "40 answers do not fit in 512 bytes");
    let m = tcp(srv.addr, "many.example.test.", RecordType::A, &PLAIN).await;
    assert_eq!(m.answers.len(), 40);
    let m = udp(
        srv.addr,
        "many.example.test.",
        RecordType::A,
        &Ask {
            edns: Some(1232),
            ..PLAIN
        },
    )
    .await;
    assert_eq!(m.answers.len(), 40);
    assert_eq!(
        up.queries("many.example.test.", FakeTransport::Tcp),
        1,
        "one upstream TCP exchange, then the cache"
    );
    srv.stop().await;
}

#[tokio::test]
async fn recursion_not_desired_is_answered_from_the_cache_only() {
    let up = FakeUpstream::start().await.unwrap();
    up.set("rd.example.test.", FakeAnswer::a(ip("192.0.2.6"), 60));
    let srv = TestServer::start(forwarding(&[&up]), catalog()).await;
    let no_rd = Ask { rd: false, ..PLAIN };
    let m = udp(srv.addr, "rd.example.test.", RecordType::A, &no_rd).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert_eq!(up.total("rd.example.test."), 0);
    udp(srv.addr, "rd.example.test.", RecordType::A, &PLAIN).await;
    let m = udp(srv.addr, "rd.example.test.", RecordType::A, &no_rd).await;
    assert_eq!(ips(&m.answers), ["192.0.2.6"]);
    assert!(!m.metadata.recursion_desired);
    assert_eq!(up.total("rd.example.test."), 1);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_concurrent_misses_are_coalesced() {
    let up = FakeUpstream::start().await.unwrap();
    up.set("same.example.test.", FakeAnswer::a(ip("192.0.2.8"), 60));
    // Slow enough that all ten queries arrive while the first is in flight.
    up.set_delay(Duration::from_millis(200));
    let mut config = forwarding(&[&up]);
    config.recursor_timeout = Duration::from_secs(2);
    let srv = TestServer::start(config, catalog()).await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let addr = srv.addr;
        tasks.push(tokio::spawn(async move {
            udp(
                addr,
                "same.example.test.",
                RecordType::A,
                &Ask { id: i, ..PLAIN },
            )
            .await
        }));
    }
    for t in tasks {
        let m = t.await.unwrap();
        assert_eq!(ips(&m.answers), ["192.0.2.8"], "{m}");
    }
    assert_eq!(up.total("same.example.test."), 1);
    assert!(srv.server.stats().coalesced >= 1);
    srv.stop().await;
}

#[tokio::test]
async fn random_strategy_spreads_over_upstreams() {
    let a = FakeUpstream::start().await.unwrap();
    let b = FakeUpstream::start().await.unwrap();
    a.set_zone("example.test", FakeAnswer::a(ip("192.0.2.10"), 0));
    b.set_zone("example.test", FakeAnswer::a(ip("192.0.2.10"), 0));
    let mut config = forwarding(&[&a, &b]);
    config.recursor_strategy = RecursorStrategy::Random;
    config.cache = CacheConfig::default();
    let srv = TestServer::start(config, catalog()).await;
    // TTL 0 answers are not cached, so every query is forwarded.
    wait_for(Duration::from_secs(10), "both upstreams used", || async {
        udp(srv.addr, "r.example.test.", RecordType::A, &PLAIN).await;
        (a.all_queries() > 0 && b.all_queries() > 0).then_some(())
    })
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn refuses_to_forward_to_itself() {
    let listeners = DnsListeners::bind("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    let own = listeners.local_addr().unwrap();
    let mut config = DnsConfig::default();
    config.recursors = vec![own];
    let srv = TestServer::start_on(listeners, config, catalog()).await;
    let m = udp(srv.addr, "loop.example.test.", RecordType::A, &PLAIN).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    let stats = srv.server.stats();
    assert!(stats.upstreams.is_empty(), "nothing was sent to ourselves");
    assert_eq!(stats.udp_queries, 1, "the query did not come back to us");
    srv.stop().await;
}

#[tokio::test]
async fn every_upstream_query_uses_a_fresh_socket_and_id() {
    // A hand-rolled upstream that records where each query came from.
    let upstream = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut config = DnsConfig::default();
    config.recursors = vec![upstream.local_addr().unwrap()];
    config.recursor_timeout = Duration::from_secs(2);
    let srv = TestServer::start(config, catalog()).await;
    let names = ["p1.Example.TEST.", "p2.example.test.", "p3.example.test."];
    let answering = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut buf = [0u8; 1500];
        for _ in 0..names.len() {
            let (n, from) = upstream.recv_from(&mut buf).await.unwrap();
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut reply = q.clone();
            reply.metadata.message_type = hickory_proto::op::MessageType::Response;
            reply.metadata.recursion_available = true;
            reply.add_answer(hickory_proto::rr::Record::from_rdata(
                q.queries[0].name().clone(),
                0,
                hickory_proto::rr::RData::A(ip("192.0.2.11").into()),
            ));
            upstream
                .send_to(&reply.to_vec().unwrap(), from)
                .await
                .unwrap();
            seen.push((from.port(), q));
        }
        seen
    });
    for name in names {
        let m = udp(srv.addr, name, RecordType::A, &PLAIN).await;
        assert_eq!(ips(&m.answers), ["192.0.2.11"], "{name}");
    }
    let seen = tokio::time::timeout(crate::support::IO_TIMEOUT, answering)
        .await
        .expect("upstream saw every query")
        .unwrap();
    // Random ports and IDs: all three equal by chance has odds of about 1 in 4·10⁹.
    let ports: std::collections::HashSet<u16> = seen.iter().map(|(p, _)| *p).collect();
    let ids: std::collections::HashSet<u16> = seen.iter().map(|(_, q)| q.metadata.id).collect();
    assert!(ports.len() > 1, "source ports {ports:?}");
    assert!(ids.len() > 1, "IDs {ids:?}");
    // The request itself: RD, EDNS(0) at 1232 bytes without DO, the lower-cased name.
    let (_, first) = &seen[0];
    assert!(first.metadata.recursion_desired);
    let edns = first.edns.as_ref().expect("EDNS");
    assert_eq!(edns.max_payload(), 1232);
    assert!(!edns.flags().dnssec_ok);
    assert_eq!(first.queries[0].name().to_ascii(), "p1.example.test.");
    srv.stop().await;
}

#[tokio::test]
async fn recursion_only_for_clients_on_recursor_allow() {
    let up = FakeUpstream::start().await.unwrap();
    up.set("www.example.test.", FakeAnswer::a(ip("192.0.2.1"), 300));
    let mut config = forwarding(&[&up]);
    config.recursor_allow = RecursorAllow::parse(&["127.0.0.2/32"]).unwrap();
    let srv = TestServer::start(config, catalog()).await;
    let (allowed, outside) = (IpAddr::from(ip("127.0.0.2")), IpAddr::from(ip("127.0.0.1")));
    let ask = |src, name: &'static str, tcp: bool| {
        let bytes = request(name, RecordType::A, &PLAIN);
        async move {
            let raw = if tcp {
                tcp_raw_from(src, srv.addr, &bytes).await
            } else {
                udp_raw_from(src, srv.addr, &bytes).await
            };
            Message::from_vec(&raw).unwrap()
        }
    };
    for tcp in [false, true] {
        // Outside the list: REFUSED, RA=0, the upstream never asked; a cached answer is
        // not served either (the allowed client's query below fills the cache first on
        // the second round).
        let m = ask(outside, "www.example.test.", tcp).await;
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "tcp={tcp}");
        assert!(!m.metadata.recursion_available && m.answers.is_empty());
        // Unknown reverse names: NXDOMAIN, as without recursors.
        let m = ask(outside, "9.2.0.192.in-addr.arpa.", tcp).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        // The zone is answered for everyone, with RA=0 outside the list.
        let m = ask(outside, "web.service.consul.", tcp).await;
        assert_eq!(ips(&m.answers), ["10.0.0.1", "10.0.0.2"]);
        assert!(m.metadata.authoritative && !m.metadata.recursion_available);
        // On the list: forwarded (then cached), RA=1.
        let m = ask(allowed, "www.example.test.", tcp).await;
        assert_eq!(ips(&m.answers), ["192.0.2.1"], "tcp={tcp}");
        assert!(m.metadata.recursion_available);
        let m = ask(allowed, "web.service.consul.", tcp).await;
        assert!(m.metadata.authoritative && m.metadata.recursion_available);
    }
    assert_eq!(
        up.total("www.example.test."),
        1,
        "one miss, then cache hits"
    );
    srv.stop().await;
}
