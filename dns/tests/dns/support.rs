//! Harness: start a server on a loopback port with a catalog, send queries, wait on
//! conditions with deadlines.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use muster_dns::{
    DnsCatalog, DnsConfig, DnsListeners, DnsNode, DnsServer, DnsServiceInstance, InstanceHealth,
    SharedCatalog, Weights,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

/// Every network wait in the suite is bounded by this.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub server: DnsServer,
    pub addr: SocketAddr,
    pub catalog: Arc<SharedCatalog>,
    shutdown: CancellationToken,
    handle: JoinHandle<()>,
}

impl TestServer {
    pub async fn start(config: DnsConfig, catalog: DnsCatalog) -> Self {
        let listeners = DnsListeners::bind("127.0.0.1:0".parse().unwrap(), 2).expect("bind");
        Self::start_on(listeners, config, catalog).await
    }

    pub async fn start_on(listeners: DnsListeners, config: DnsConfig, catalog: DnsCatalog) -> Self {
        let addr = listeners.local_addr().unwrap();
        let shared = Arc::new(SharedCatalog::new(catalog));
        let server = DnsServer::new(config, shared.clone()).expect("valid config");
        let shutdown = CancellationToken::new();
        let (s, token) = (server.clone(), shutdown.clone());
        let handle =
            tokio::spawn(async move { s.run(listeners, token).await.expect("server runs") });
        Self {
            server,
            addr,
            catalog: shared,
            shutdown,
            handle,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        timeout(IO_TIMEOUT, self.handle)
            .await
            .expect("server stops in time")
            .expect("server task");
    }
}

pub fn instance(
    service: &str,
    node: &str,
    addr: &str,
    port: u16,
    tags: &[&str],
    health: InstanceHealth,
) -> DnsServiceInstance {
    DnsServiceInstance {
        service: service.into(),
        id: format!("{service}-{node}-{port}"),
        node: node.into(),
        node_address: String::new(),
        address: addr.into(),
        port,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        weights: Weights::default(),
        health,
    }
}

/// n1..n3 at 10.0.0.1-3 (n1 with meta), `web` on n1 and n2 (n3 critical), `db` with its
/// own IP on n1, `big` with 20 instances on big-NN nodes, servers n1 and n2.
pub fn catalog() -> DnsCatalog {
    let mut nodes: Vec<DnsNode> = (1..=3)
        .map(|i| DnsNode {
            name: format!("n{i}"),
            address: format!("10.0.0.{i}"),
            meta: BTreeMap::new(),
        })
        .collect();
    nodes[0].meta.insert("rack".into(), "r1".into());
    let mut services = vec![
        instance("web", "n1", "", 80, &["primary"], InstanceHealth::Passing),
        instance("web", "n2", "", 80, &["secondary"], InstanceHealth::Warning),
        instance("web", "n3", "", 80, &[], InstanceHealth::Critical),
        instance("db", "n1", "10.5.0.1", 5432, &[], InstanceHealth::Passing),
    ];
    for i in 0..20 {
        let name = format!("big-{i:02}");
        nodes.push(DnsNode {
            name: name.clone(),
            address: format!("10.1.0.{}", i + 1),
            meta: BTreeMap::new(),
        });
        services.push(instance(
            "big",
            &name,
            "",
            9000 + i,
            &[],
            InstanceHealth::Passing,
        ));
    }
    let addr_of: BTreeMap<String, String> = nodes
        .iter()
        .map(|n| (n.name.clone(), n.address.clone()))
        .collect();
    for s in &mut services {
        s.node_address = addr_of[&s.node].clone();
    }
    DnsCatalog {
        datacenter: "dc1".into(),
        index: 10,
        last_contact: Some(Instant::now()),
        nodes,
        services,
        servers: vec!["n1".into(), "n2".into()],
    }
}

pub struct Ask {
    pub edns: Option<u16>,
    pub rd: bool,
    pub id: u16,
}

pub const PLAIN: Ask = Ask {
    edns: None,
    rd: true,
    id: 0x5151,
};

pub fn request(name: &str, rtype: RecordType, how: &Ask) -> Vec<u8> {
    let mut m = Message::new(how.id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = how.rd;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(p) = how.edns {
        let mut e = Edns::new();
        e.set_max_payload(p);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

pub async fn udp_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    udp_raw_from(LOCALHOST, addr, bytes).await
}

/// The client side of every exchange unless a test picks another loopback address.
pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// One UDP exchange from a socket bound to `src` (any 127.0.0.0/8 address works).
pub async fn udp_raw_from(src: IpAddr, addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind(SocketAddr::new(src, 0)).await.unwrap();
    socket.send_to(bytes, addr).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, _) = timeout(IO_TIMEOUT, socket.recv_from(&mut buf))
        .await
        .expect("UDP reply in time")
        .unwrap();
    buf.truncate(n);
    buf
}

pub async fn tcp_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    tcp_raw_from(LOCALHOST, addr, bytes).await
}

/// One TCP exchange from a connection bound to `src`.
pub async fn tcp_raw_from(src: IpAddr, addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let socket = if src.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .unwrap();
    socket.bind(SocketAddr::new(src, 0)).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let mut frame = (bytes.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(bytes);
    stream.write_all(&frame).await.unwrap();
    let len = timeout(IO_TIMEOUT, stream.read_u16())
        .await
        .expect("TCP reply in time")
        .unwrap();
    let mut reply = vec![0u8; usize::from(len)];
    stream.read_exact(&mut reply).await.unwrap();
    reply
}

pub async fn udp(addr: SocketAddr, name: &str, rtype: RecordType, how: &Ask) -> Message {
    Message::from_vec(&udp_raw(addr, &request(name, rtype, how)).await).expect("decodable")
}

pub async fn tcp(addr: SocketAddr, name: &str, rtype: RecordType, how: &Ask) -> Message {
    Message::from_vec(&tcp_raw(addr, &request(name, rtype, how)).await).expect("decodable")
}

/// Sorted A/AAAA addresses of `records`.
pub fn ips(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.to_string()),
            RData::AAAA(a) => Some(a.to_string()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// Polls `check` until it returns `Some` or `deadline` passes (then panics with `what`).
pub async fn wait_for<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
