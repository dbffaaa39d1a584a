//! The fast path and the general path give the same answers.

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use muster_dns::DnsConfig;
use muster_dns::testing::{FakeAnswer, FakeUpstream};

use crate::support::{Ask, PLAIN, TestServer, catalog, request, tcp_raw, udp, udp_raw};

/// Every name form and type the zone answers, with and without EDNS.
fn queries() -> Vec<Vec<u8>> {
    let names: &[(&str, RecordType)] = &[
        ("web.service.consul.", RecordType::A),
        ("Web.Service.Consul.", RecordType::SRV),
        ("primary.web.service.consul.", RecordType::A),
        ("_web._tcp.consul.", RecordType::SRV),
        ("big.service.consul.", RecordType::A),
        ("big.service.consul.", RecordType::SRV),
        ("web.service.consul.", RecordType::AAAA),
        ("web.service.consul.", RecordType::MX),
        ("nope.service.consul.", RecordType::A),
        ("n1.node.consul.", RecordType::A),
        ("n1.node.consul.", RecordType::TXT),
        ("n1.node.consul.", RecordType::ANY),
        ("0a000001.addr.consul.", RecordType::A),
        ("0a000001.addr.consul.", RecordType::AAAA),
        ("consul.", RecordType::SOA),
        ("consul.", RecordType::NS),
        ("service.consul.", RecordType::A),
        ("1.0.0.10.in-addr.arpa.", RecordType::PTR),
        ("consul.", RecordType::AXFR),
        ("cached.example.test.", RecordType::A),
    ];
    let mut out = Vec::new();
    for &(name, rtype) in names {
        for edns in [None, Some(512), Some(1232)] {
            out.push(request(name, rtype, &Ask { edns, ..PLAIN }));
        }
    }
    out
}

#[tokio::test]
async fn fast_and_general_paths_give_identical_bytes() {
    let upstream = FakeUpstream::start().await.unwrap();
    upstream.set(
        "cached.example.test.",
        FakeAnswer::a("192.0.2.7".parse().unwrap(), 3600),
    );
    let mut config = DnsConfig::default();
    config.recursors = vec![upstream.addr()];
    let srv = TestServer::start(config, catalog()).await;
    // Put the forwarded name in the cache so the fast path can answer it.
    let m = udp(srv.addr, "cached.example.test.", RecordType::A, &PLAIN).await;
    assert_eq!(m.answers.len(), 1);
    let mut compared = 0;
    for (i, q) in queries().iter().enumerate() {
        for tcp in [false, true] {
            let seed = i as u64;
            // SOA serials and cached TTLs come from the clock: a pair computed across a
            // second boundary may differ once, a real difference persists.
            let mut pair = (Vec::new(), Vec::new());
            for _ in 0..3 {
                let fast = srv
                    .server
                    .answer_fast_for_test(q, tcp, seed)
                    .expect("the fast path answers this");
                let general = srv
                    .server
                    .answer_general_for_test(q, tcp, seed)
                    .await
                    .expect("the general path answers");
                pair = (fast, general);
                if pair.0 == pair.1 {
                    break;
                }
            }
            assert_eq!(
                pair.0,
                pair.1,
                "query {i} ({:?}), tcp={tcp}",
                Message::from_vec(q).unwrap().queries
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 120);
    assert_eq!(
        upstream.all_queries(),
        1,
        "the cached name was not forwarded again"
    );
    srv.stop().await;
}

#[tokio::test]
async fn queries_with_edns_options_take_the_general_path_and_match() {
    let srv = TestServer::start(DnsConfig::default(), catalog()).await;
    let plain = request(
        "n1.node.consul.",
        RecordType::A,
        &Ask {
            edns: Some(1232),
            ..PLAIN
        },
    );
    // The same query with an EDNS COOKIE option (code 10, 8-byte client cookie).
    let mut with_cookie = plain.clone();
    let n = with_cookie.len();
    with_cookie[n - 2..].copy_from_slice(&12u16.to_be_bytes());
    with_cookie.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    let before = srv.server.stats();
    let a = udp_raw(srv.addr, &plain).await;
    let b = udp_raw(srv.addr, &with_cookie).await;
    let after = srv.server.stats();
    assert_eq!(after.fast_path - before.fast_path, 1);
    assert_eq!(after.general_path - before.general_path, 1);
    assert_eq!(a, b, "same bytes from both paths");
    srv.stop().await;
}

/// What a response says, independent of name compression and of the order of records
/// within a section (instances are shuffled per query): header, question, each section as
/// a sorted list, EDNS.
fn content(bytes: &[u8]) -> String {
    let m = Message::from_vec(bytes).expect("decodable");
    let section = |records: &[hickory_proto::rr::Record]| {
        let mut v: Vec<String> = records.iter().map(|r| format!("{r:?}")).collect();
        v.sort();
        v
    };
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        m.metadata,
        m.queries,
        section(&m.answers),
        section(&m.authorities),
        section(&m.additionals),
        m.edns
    )
}

/// The question section's raw bytes (the client's 0x20 case is echoed as sent).
fn question_bytes(msg: &[u8]) -> &[u8] {
    let mut at = 12;
    while msg[at] != 0 {
        at += 1 + usize::from(msg[at]);
    }
    &msg[12..at + 5]
}

#[tokio::test]
async fn tcp_answers_carry_the_engines_content() {
    let upstream = FakeUpstream::start().await.unwrap();
    upstream.set(
        "cached.example.test.",
        FakeAnswer::a("192.0.2.7".parse().unwrap(), 3600),
    );
    let mut config = DnsConfig::default();
    config.recursors = vec![upstream.addr()];
    let srv = TestServer::start(config, catalog()).await;
    let m = udp(srv.addr, "cached.example.test.", RecordType::A, &PLAIN).await;
    assert_eq!(m.answers.len(), 1);
    let before = srv.server.stats();
    let mut compared = 0;
    for (i, q) in queries().iter().enumerate() {
        // As in the test above: a pair computed across a second boundary may differ once
        // (SOA serials, cached TTLs); a real difference persists.
        let mut pair = (String::new(), String::new());
        for _ in 0..3 {
            let engine = srv
                .server
                .answer_fast_for_test(q, true, i as u64)
                .expect("the fast path answers this");
            let wire = tcp_raw(srv.addr, q).await;
            assert_eq!(question_bytes(&wire), question_bytes(q), "query {i}");
            pair = (content(&engine), content(&wire));
            if pair.0 == pair.1 {
                break;
            }
        }
        assert_eq!(pair.0, pair.1, "query {i} over TCP");
        compared += 1;
    }
    assert_eq!(compared, 60);
    let after = srv.server.stats();
    assert!(after.tcp_queries - before.tcp_queries >= 60);
    assert_eq!(upstream.all_queries(), 1, "TCP hits came from the cache");
    srv.stop().await;
}

/// Many clients at once: the UDP loop takes datagrams and sends answers in batches, and
/// every query still gets exactly its own answer, back at the socket that asked, whether
/// the fast path answers it within the batch or the general path answers it later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_from_many_clients_get_every_answer_at_their_sender() {
    use std::collections::BTreeSet;
    use tokio::net::UdpSocket;

    const CLIENTS: usize = 8;
    const PER_CLIENT: u16 = 60;
    // One UDP socket, so every datagram goes through the same thread's batches.
    let listeners = muster_dns::DnsListeners::bind("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    let srv = TestServer::start_on(listeners, DnsConfig::default(), catalog()).await;
    let before = srv.server.stats();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    // The client is in the high byte of the ID, the query number in the low byte.
    // Every seventh query is out of the zone without recursors (REFUSED, in place); every
    // fifth carries an EDNS cookie option, which only the general path handles.
    let refused = |i: u16| i.is_multiple_of(7);
    let general = |i: u16| i.is_multiple_of(5);
    // Send everything before reading anything, so the server finds full queues.
    for (c, socket) in clients.iter().enumerate() {
        for i in 0..PER_CLIENT {
            let (name, rtype) = match i % 3 {
                _ if refused(i) => ("example.org.", RecordType::A),
                0 => ("web.service.consul.", RecordType::A),
                1 => ("n1.node.consul.", RecordType::A),
                _ => ("big.service.consul.", RecordType::SRV),
            };
            let id = (c as u16) << 8 | i;
            let mut q = request(
                name,
                rtype,
                &Ask {
                    edns: Some(1232),
                    rd: true,
                    id,
                },
            );
            if general(i) {
                let n = q.len();
                q[n - 2..].copy_from_slice(&12u16.to_be_bytes());
                q.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
            }
            socket.send_to(&q, srv.addr).await.unwrap();
        }
    }
    for (c, socket) in clients.iter().enumerate() {
        let mut ids = BTreeSet::new();
        let mut buf = vec![0u8; 65_535];
        while ids.len() < usize::from(PER_CLIENT) {
            let (n, from) =
                tokio::time::timeout(crate::support::IO_TIMEOUT, socket.recv_from(&mut buf))
                    .await
                    .expect("every query of the burst is answered")
                    .unwrap();
            assert_eq!(from, srv.addr);
            let m = Message::from_vec(&buf[..n]).expect("decodable");
            let id = m.metadata.id;
            assert_eq!(
                usize::from(id >> 8),
                c,
                "an answer reached the wrong client"
            );
            let i = id & 0xff;
            let is_refused = m.metadata.response_code == hickory_proto::op::ResponseCode::Refused;
            assert_eq!(is_refused, refused(i), "query {i} of client {c}");
            assert!(
                is_refused || !m.answers.is_empty(),
                "query {i} of client {c}"
            );
            assert!(ids.insert(id), "answer {id:#x} came twice");
        }
    }
    let after = srv.server.stats();
    let per_client_general = (0..PER_CLIENT).filter(|&i| general(i)).count() as u64;
    assert_eq!(
        after.general_path - before.general_path,
        CLIENTS as u64 * per_client_general
    );
    assert_eq!(
        after.fast_path - before.fast_path,
        CLIENTS as u64 * (u64::from(PER_CLIENT) - per_client_general)
    );
    srv.stop().await;
}
