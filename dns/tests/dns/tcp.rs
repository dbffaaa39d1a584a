//! TCP through hickory-server: pipelined queries on one connection, and the bound on the
//! queries being answered at once.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use muster_dns::testing::{FakeAnswer, FakeUpstream};
use muster_dns::{DnsConfig, MAX_TCP_CONNECTIONS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::support::{Ask, IO_TIMEOUT, PLAIN, TestServer, catalog, ips, request, tcp, wait_for};

fn frame(msg: &[u8]) -> Vec<u8> {
    let mut f = (msg.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(msg);
    f
}

async fn read_reply(stream: &mut TcpStream) -> Message {
    let len = timeout(IO_TIMEOUT, stream.read_u16())
        .await
        .expect("TCP reply in time")
        .unwrap();
    let mut reply = vec![0u8; usize::from(len)];
    stream.read_exact(&mut reply).await.unwrap();
    Message::from_vec(&reply).expect("decodable")
}

async fn connect_and_ask(addr: SocketAddr, name: &str, id: u16) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let q = request(name, RecordType::A, &Ask { id, ..PLAIN });
    stream.write_all(&frame(&q)).await.unwrap();
    stream
}

#[tokio::test]
async fn one_connection_answers_queries_in_turn() {
    let srv = TestServer::start(DnsConfig::default(), catalog()).await;
    let mut stream = TcpStream::connect(srv.addr).await.unwrap();
    // Two queries written back to back; both are answered, in order.
    let mut both = frame(&request(
        "web.service.consul.",
        RecordType::A,
        &Ask { id: 1, ..PLAIN },
    ));
    both.extend(frame(&request(
        "n2.node.consul.",
        RecordType::A,
        &Ask { id: 2, ..PLAIN },
    )));
    stream.write_all(&both).await.unwrap();
    let first = read_reply(&mut stream).await;
    let second = read_reply(&mut stream).await;
    assert_eq!((first.metadata.id, second.metadata.id), (1, 2));
    assert_eq!(ips(&first.answers), ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(ips(&second.answers), ["10.0.0.2"]);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_beyond_the_tcp_bound_are_shed() {
    let up = FakeUpstream::start().await.unwrap();
    up.set(
        "slow.example.test.",
        FakeAnswer::a(Ipv4Addr::new(192, 0, 2, 20), 60),
    );
    // Long enough for every connection below to be waiting on it.
    up.set_delay(Duration::from_secs(3));
    let mut config = DnsConfig::default();
    config.recursors = vec![up.addr()];
    config.recursor_timeout = Duration::from_secs(10);
    let srv = TestServer::start(config, catalog()).await;

    // Fill every slot with a query waiting on the slow upstream (coalesced into one
    // exchange: the others are counted as coalesced once they wait).
    let mut held = Vec::with_capacity(MAX_TCP_CONNECTIONS);
    for i in 0..MAX_TCP_CONNECTIONS {
        held.push(connect_and_ask(srv.addr, "slow.example.test.", i as u16).await);
    }
    let waiting = (MAX_TCP_CONNECTIONS - 1) as u64;
    wait_for(Duration::from_secs(2), "every slot in use", || async {
        (srv.server.stats().coalesced >= waiting).then_some(())
    })
    .await;

    // One more query, even for a zone name, is shed at once.
    let shed_before = srv.server.stats().shed;
    let m = tcp(srv.addr, "web.service.consul.", RecordType::A, &PLAIN).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(srv.server.stats().shed - shed_before, 1);

    // The held queries are all answered once the upstream replies, and the slots free up.
    for (i, stream) in held.iter_mut().enumerate() {
        let m = read_reply(stream).await;
        assert_eq!(m.metadata.id, i as u16);
        assert_eq!(ips(&m.answers), ["192.0.2.20"]);
    }
    let m = tcp(srv.addr, "web.service.consul.", RecordType::A, &PLAIN).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(up.total("slow.example.test."), 1);
    srv.stop().await;
}

#[tokio::test]
async fn undecodable_tcp_messages_get_formerr() {
    let srv = TestServer::start(DnsConfig::default(), catalog()).await;
    // A header claiming one question, followed by garbage: hickory-server's own FORMERR.
    let mut garbage = request(
        "web.service.consul.",
        RecordType::A,
        &Ask { id: 7, ..PLAIN },
    )[..12]
        .to_vec();
    garbage.extend_from_slice(&[0xff; 7]);
    let mut stream = TcpStream::connect(srv.addr).await.unwrap();
    stream.write_all(&frame(&garbage)).await.unwrap();
    let m = read_reply(&mut stream).await;
    assert_eq!(m.metadata.id, 7);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    srv.stop().await;
}

/// A `MakeWriter` that appends everything to a shared buffer.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn hickorys_per_query_info_lines_are_not_emitted() {
    // This test's runtime is single-threaded, so the server's tasks log through the
    // subscriber set for this thread.
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let srv = TestServer::start(DnsConfig::default(), catalog()).await;
    for _ in 0..3 {
        let m = tcp(srv.addr, "web.service.consul.", RecordType::A, &PLAIN).await;
        assert_eq!(m.answers.len(), 2);
    }
    srv.stop().await;
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    // hickory's request decoding does log (at DEBUG) through this subscriber...
    assert!(text.contains("DEBUG hickory_server"), "{text}");
    // ...but not the two INFO lines per response.
    assert!(!text.contains("INFO hickory_server"), "{text}");
}
