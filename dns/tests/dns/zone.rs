//! Zone answers over real sockets: every name form, health filtering, negative answers,
//! truncation, protocol errors, staleness and runtime changes.

use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use muster_dns::{DnsCatalog, DnsConfig, InstanceHealth, rcode};
use tokio::time::Instant;

use crate::support::{
    Ask, PLAIN, TestServer, catalog, instance, ips, request, tcp, tcp_raw, udp, udp_raw, wait_for,
};

fn soa_in_authority(m: &Message) -> bool {
    m.authorities.len() == 1 && matches!(m.authorities[0].data, RData::SOA(_))
}

#[tokio::test]
async fn every_name_form_over_udp_and_tcp() {
    let srv = TestServer::start(DnsConfig::default(), catalog()).await;
    for transport in ["udp", "tcp"] {
        let ask = |name: &'static str, rtype: RecordType| {
            let addr = srv.addr;
            async move {
                if transport == "udp" {
                    udp(addr, name, rtype, &PLAIN).await
                } else {
                    tcp(addr, name, rtype, &PLAIN).await
                }
            }
        };
        let m = ask("web.service.consul.", RecordType::A).await;
        assert_eq!(
            ips(&m.answers),
            ["10.0.0.1", "10.0.0.2"],
            "{transport}: critical n3 filtered"
        );
        assert!(m.metadata.authoritative, "{transport}");
        assert_eq!(
            ips(&ask("primary.web.service.consul.", RecordType::A)
                .await
                .answers),
            ["10.0.0.1"]
        );
        assert_eq!(
            ips(&ask("web.service.dc1.consul.", RecordType::A).await.answers).len(),
            2
        );
        assert_eq!(
            ips(&ask("web.service.dc1.dc.consul.", RecordType::A)
                .await
                .answers)
            .len(),
            2
        );

        let m = ask("_web._tcp.service.consul.", RecordType::SRV).await;
        let mut targets: Vec<String> = m
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::SRV(s) => format!("{} {} {} {}", s.priority, s.weight, s.port, s.target),
                other => panic!("{other:?}"),
            })
            .collect();
        targets.sort();
        assert_eq!(
            targets,
            ["1 1 80 n1.node.dc1.consul.", "1 1 80 n2.node.dc1.consul."],
            "{transport}"
        );
        assert_eq!(ips(&m.additionals), ["10.0.0.1", "10.0.0.2"], "glue");
        let m = ask("db.service.consul.", RecordType::SRV).await;
        let RData::SRV(s) = &m.answers[0].data else {
            panic!()
        };
        assert_eq!(s.target.to_ascii(), "0a050001.addr.dc1.consul.");

        let m = ask("n1.node.consul.", RecordType::A).await;
        assert_eq!(ips(&m.answers), ["10.0.0.1"]);
        assert_eq!(m.additionals.len(), 1, "node meta TXT");
        assert_eq!(
            ips(&ask("0a000002.addr.consul.", RecordType::A).await.answers),
            ["10.0.0.2"]
        );

        let m = ask("consul.", RecordType::SOA).await;
        assert!(matches!(m.answers[0].data, RData::SOA(_)));
        assert_eq!(m.authorities.len(), 2, "NS records");
        let m = ask("consul.", RecordType::NS).await;
        assert_eq!(m.answers.len(), 2);
        assert_eq!(ips(&m.additionals), ["10.0.0.1", "10.0.0.2"]);

        let m = ask("1.0.0.10.in-addr.arpa.", RecordType::PTR).await;
        assert_eq!(m.answers[0].data.to_string(), "n1.node.dc1.consul.");
        let m = ask("1.0.5.10.in-addr.arpa.", RecordType::PTR).await;
        assert_eq!(m.answers[0].data.to_string(), "db.service.dc1.consul.");
    }
    let stats = srv.server.stats();
    assert!(stats.udp_queries > 0 && stats.tcp_queries > 0);
    srv.stop().await;
}

#[tokio::test]
async fn case_of_the_question_is_echoed() {
    let srv = TestServer::start(DnsConfig::default(), catalog()).await;
    let m = udp(srv.addr, "wEb.SeRvIcE.cOnSuL.", RecordType::A, &PLAIN).await;
    assert_eq!(m.queries[0].name().to_ascii(), "wEb.SeRvIcE.cOnSuL.");
    assert!(
        m.answers
            .iter()
            .all(|r| r.name.to_ascii() == "wEb.SeRvIcE.cOnSuL.")
    );
    srv.stop().await;
}

#[tokio::test]
async fn negative_answers_carry_the_soa() {
    let srv = TestServer::start(DnsConfig::default(), catalog()).await;
    let m = udp(srv.addr, "nope.service.consul.", RecordType::A, &PLAIN).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(soa_in_authority(&m));
    let m = udp(srv.addr, "web.service.consul.", RecordType::AAAA, &PLAIN).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty() && soa_in_authority(&m), "NODATA");
    let m = udp(srv.addr, "web.service.consul.", RecordType::MX, &PLAIN).await;
    assert!(
        m.answers.is_empty() && soa_in_authority(&m),
        "unhandled type is NODATA"
    );
    let m = udp(srv.addr, "x.y.consul.", RecordType::A, &PLAIN).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(soa_in_authority(&m));
    let m = udp(srv.addr, "web.service.dc2.consul.", RecordType::A, &PLAIN).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "unknown datacenter"
    );
    srv.stop().await;
}

#[tokio::test]
async fn unhealthy_instances_leave_the_answer() {
    let srv = TestServer::start(DnsConfig::default(), catalog()).await;
    assert_eq!(
        ips(&udp(srv.addr, "web.service.consul.", RecordType::A, &PLAIN)
            .await
            .answers)
        .len(),
        2
    );
    let mut down = catalog();
    for s in down.services.iter_mut().filter(|s| s.service == "web") {
        s.health = InstanceHealth::Critical;
    }
    srv.catalog.publish(down);
    let m = udp(srv.addr, "web.service.consul.", RecordType::A, &PLAIN).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "all instances critical"
    );
    assert!(soa_in_authority(&m));
    let mut one_back = catalog();
    one_back.services.retain(|s| s.service != "web");
    one_back
        .services
        .push(instance("web", "n3", "", 80, &[], InstanceHealth::Passing));
    srv.catalog.publish(one_back);
    assert_eq!(
        ips(&udp(srv.addr, "web.service.consul.", RecordType::A, &PLAIN)
            .await
            .answers),
        ["10.0.0.3"]
    );

    let mut config = DnsConfig::default();
    config.only_passing = true;
    srv.server.set_config(config).unwrap();
    srv.catalog.publish(catalog());
    assert_eq!(
        ips(&udp(srv.addr, "web.service.consul.", RecordType::A, &PLAIN)
            .await
            .answers),
        ["10.0.0.1"],
        "warning n2 dropped"
    );
    srv.stop().await;
}

#[tokio::test]
async fn large_service_truncates_over_udp_and_is_complete_over_tcp() {
    let srv = TestServer::start(DnsConfig::default(), catalog()).await;
    let m = udp(srv.addr, "big.service.consul.", RecordType::A, &PLAIN).await;
    assert_eq!(m.answers.len(), 3, "udp_answer_limit");
    assert!(m.metadata.truncation, "TC set when cut");
    let m = tcp(srv.addr, "big.service.consul.", RecordType::A, &PLAIN).await;
    assert_eq!(m.answers.len(), 20);
    assert!(!m.metadata.truncation);
    let m = udp(
        srv.addr,
        "big.service.consul.",
        RecordType::SRV,
        &Ask {
            edns: Some(512),
            ..PLAIN
        },
    )
    .await;
    assert!(m.metadata.truncation && !m.answers.is_empty());
    assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(512));
    let m = udp(
        srv.addr,
        "big.service.consul.",
        RecordType::SRV,
        &Ask {
            edns: Some(4096),
            ..PLAIN
        },
    )
    .await;
    assert_eq!(m.answers.len(), 20);
    assert!(!m.metadata.truncation);
    let m = tcp(srv.addr, "big.service.consul.", RecordType::SRV, &PLAIN).await;
    assert_eq!((m.answers.len(), m.additionals.len()), (20, 20));
    assert!(srv.server.stats().truncated >= 2);
    srv.stop().await;
}

#[tokio::test]
async fn protocol_errors() {
    let srv = TestServer::start(DnsConfig::default(), catalog()).await;
    // EDNS version 1: BADVERS (extended rcode 16) with an OPT record.
    let mut bytes = request(
        "web.service.consul.",
        RecordType::A,
        &Ask {
            edns: Some(1232),
            ..PLAIN
        },
    );
    let n = bytes.len();
    bytes[n - 5] = 1;
    let m = Message::from_vec(&udp_raw(srv.addr, &bytes).await).unwrap();
    assert_eq!(u16::from(m.metadata.response_code), rcode::BADVERS);
    assert!(m.edns.is_some());
    // Two questions: FORMERR.
    let mut two = request("web.service.consul.", RecordType::A, &PLAIN);
    let q = two[12..].to_vec();
    two.extend_from_slice(&q);
    two[5] = 2;
    let m = Message::from_vec(&udp_raw(srv.addr, &two).await).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // Opcode STATUS (2): NOTIMP, also over TCP.
    let mut status = request("web.service.consul.", RecordType::A, &PLAIN);
    status[2] |= 2 << 3;
    let m = Message::from_vec(&udp_raw(srv.addr, &status).await).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
    let m = Message::from_vec(&tcp_raw(srv.addr, &status).await).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
    // A header followed by garbage: FORMERR.
    let mut garbage = request("web.service.consul.", RecordType::A, &PLAIN)[..12].to_vec();
    garbage.extend_from_slice(&[0xff; 7]);
    let m = Message::from_vec(&udp_raw(srv.addr, &garbage).await).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // Zone transfers: NOTIMP.
    let m = tcp(srv.addr, "consul.", RecordType::AXFR, &PLAIN).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
    // A response (QR=1) is never answered: the next reply on the socket is for the query.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut response = request(
        "web.service.consul.",
        RecordType::A,
        &Ask { id: 1, ..PLAIN },
    );
    response[2] |= 0x80;
    socket.send_to(&response, srv.addr).await.unwrap();
    socket
        .send_to(
            &request(
                "web.service.consul.",
                RecordType::A,
                &Ask { id: 2, ..PLAIN },
            ),
            srv.addr,
        )
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(crate::support::IO_TIMEOUT, socket.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Message::from_vec(&buf[..n]).unwrap().metadata.id, 2);
    srv.stop().await;
}

#[tokio::test]
async fn stale_catalog_gives_servfail() {
    let mut config = DnsConfig::default();
    config.max_stale = Duration::from_secs(60);
    let old = DnsCatalog {
        last_contact: Some(Instant::now() - Duration::from_secs(120)),
        ..catalog()
    };
    let srv = TestServer::start(config.clone(), old).await;
    let m = udp(srv.addr, "web.service.consul.", RecordType::A, &PLAIN).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    srv.catalog.record_contact(Instant::now());
    let m = udp(srv.addr, "web.service.consul.", RecordType::A, &PLAIN).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "fresh contact"
    );
    // Never in contact: not initialised, SERVFAIL whatever max_stale says.
    let fresh = TestServer::start(
        DnsConfig::default(),
        DnsCatalog {
            last_contact: None,
            ..catalog()
        },
    )
    .await;
    let m = udp(fresh.addr, "web.service.consul.", RecordType::A, &PLAIN).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    // allow_stale = false tolerates only a second of lag.
    config.allow_stale = false;
    let strict = TestServer::start(
        config,
        DnsCatalog {
            last_contact: Some(Instant::now() - Duration::from_secs(5)),
            ..catalog()
        },
    )
    .await;
    let m = udp(strict.addr, "web.service.consul.", RecordType::A, &PLAIN).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(strict.server.stats().stale_catalog >= 1);
    for s in [srv, fresh, strict] {
        s.stop().await;
    }
}

#[tokio::test]
async fn config_reload_takes_effect() {
    let srv = TestServer::start(DnsConfig::default(), catalog()).await;
    let m = udp(srv.addr, "web.service.consul.", RecordType::A, &PLAIN).await;
    assert_eq!(m.answers[0].ttl, 0);
    let mut config = DnsConfig::default();
    config.domain = "cluster.test.".into();
    config.service_ttl.insert("w*", Duration::from_secs(15));
    srv.server.set_config(config).unwrap();
    let m = udp(srv.addr, "web.service.cluster.test.", RecordType::A, &PLAIN).await;
    assert_eq!(m.answers.len(), 2);
    assert_eq!(m.answers[0].ttl, 15);
    let m = udp(srv.addr, "web.service.consul.", RecordType::A, &PLAIN).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::Refused,
        "old domain is out of zone now"
    );
    let mut bad = DnsConfig::default();
    bad.domain = "..".into();
    assert!(srv.server.set_config(bad).unwrap_err().is_invalid_config());
    assert_eq!(srv.server.config().domain, "cluster.test.");
    srv.stop().await;
}

#[tokio::test]
async fn without_recursors_out_of_zone_is_refused() {
    let srv = TestServer::start(DnsConfig::default(), catalog()).await;
    let m = udp(srv.addr, "example.com.", RecordType::A, &PLAIN).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!m.metadata.recursion_available);
    let m = udp(srv.addr, "9.9.9.9.in-addr.arpa.", RecordType::PTR, &PLAIN).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "unknown PTR without recursors"
    );
    let stats = srv.server.stats();
    assert_eq!(stats.rcode(rcode::REFUSED), 1);
    srv.stop().await;
}

#[tokio::test]
async fn catalog_updates_are_seen_at_once() {
    let srv = TestServer::start(DnsConfig::default(), catalog()).await;
    // A publication is indexed without waiting for a query.
    let builds = srv.server.stats().zone_builds;
    srv.catalog.publish(catalog());
    wait_for(
        Duration::from_secs(5),
        "the new catalog indexed",
        || async { (srv.server.stats().zone_builds > builds).then_some(()) },
    )
    .await;
    let mut c = catalog();
    c.services
        .push(instance("new", "n3", "", 1, &[], InstanceHealth::Passing));
    srv.catalog.publish(c);
    let m = udp(srv.addr, "new.service.consul.", RecordType::A, &PLAIN).await;
    assert_eq!(
        ips(&m.answers),
        ["10.0.0.3"],
        "the first query after publish sees it"
    );
    srv.stop().await;
}
