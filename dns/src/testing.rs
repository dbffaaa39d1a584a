//! A programmable fake upstream DNS server for tests (cargo feature `testing`).
//!
//! It serves UDP and TCP on one loopback port, answers each name as configured (exact
//! names first, then the longest configured zone, then a default), counts queries per name
//! and transport, and stops when [`FakeUpstream::stop`] is called or it is dropped. Every
//! task it starts is bounded by its cancellation token.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

/// How the fake upstream answers a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FakeAnswer {
    /// A records (for A and ANY questions; other types get NODATA with an SOA).
    A {
        /// The addresses.
        addrs: Vec<Ipv4Addr>,
        /// Their TTL.
        ttl: u32,
    },
    /// NXDOMAIN with an SOA in the authority section.
    NxDomain {
        /// The SOA record's TTL.
        soa_ttl: u32,
        /// The SOA MINIMUM field.
        minimum: u32,
    },
    /// NOERROR without answers, with an SOA (NODATA).
    NoData {
        /// The SOA record's TTL.
        soa_ttl: u32,
        /// The SOA MINIMUM field.
        minimum: u32,
    },
    /// SERVFAIL.
    ServFail,
    /// REFUSED.
    Refused,
    /// No reply at all (forces a timeout).
    Drop,
    /// Over UDP: TC=1 and no answers; over TCP: the full A answer.
    Truncated {
        /// The addresses.
        addrs: Vec<Ipv4Addr>,
        /// Their TTL.
        ttl: u32,
    },
    /// A reply that must not be believed (see [`Garbage`]).
    Garbage(Garbage),
}

/// Broken replies a misbehaving or spoofing upstream sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Garbage {
    /// The request's ID and a response header claiming one answer, then bytes that are not
    /// a DNS message.
    Junk,
    /// A well-formed A answer under another ID.
    WrongId,
    /// A well-formed A answer for another name.
    WrongQuestion,
    /// A query (QR=0) echoed back instead of a response.
    NotAResponse,
}

impl FakeAnswer {
    /// Shorthand for one A record.
    pub fn a(addr: Ipv4Addr, ttl: u32) -> Self {
        Self::A {
            addrs: vec![addr],
            ttl,
        }
    }
}

/// The transport a query reached the fake upstream on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FakeTransport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

#[derive(Default)]
struct Rules {
    exact: HashMap<String, FakeAnswer>,
    zones: Vec<(String, FakeAnswer)>,
    default: Option<FakeAnswer>,
    delay: Duration,
    counts: HashMap<(String, FakeTransport), u64>,
}

impl Rules {
    fn answer_for(&self, name: &str) -> FakeAnswer {
        if let Some(a) = self.exact.get(name) {
            return a.clone();
        }
        self.zones
            .iter()
            .filter(|(zone, _)| name == zone || name.ends_with(&format!(".{zone}")))
            .max_by_key(|(zone, _)| zone.len())
            .map(|(_, a)| a.clone())
            .or_else(|| self.default.clone())
            .unwrap_or(FakeAnswer::Refused)
    }
}

/// Lower-cases and makes a name fully qualified, as the rules store it.
fn fqdn(name: &str) -> String {
    let mut n = name.to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

/// The fake upstream server.
pub struct FakeUpstream {
    addr: SocketAddr,
    rules: Arc<Mutex<Rules>>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for FakeUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeUpstream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeUpstream {
    /// Starts on a free loopback port (UDP and TCP share it).
    pub async fn start() -> io::Result<Self> {
        for _ in 0..16 {
            let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            match TcpListener::bind(udp.local_addr()?).await {
                Ok(tcp) => return Ok(Self::serve(udp, tcp)),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("no free port for UDP and TCP"))
    }

    /// Starts on `addr` (for the example binary).
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let udp = UdpSocket::bind(addr).await?;
        let tcp = TcpListener::bind(udp.local_addr()?).await?;
        Ok(Self::serve(udp, tcp))
    }

    fn serve(udp: UdpSocket, tcp: TcpListener) -> Self {
        let addr = udp.local_addr().expect("bound socket");
        let rules = Arc::new(Mutex::new(Rules::default()));
        let shutdown = CancellationToken::new();
        tokio::spawn(udp_loop(Arc::new(udp), rules.clone(), shutdown.clone()));
        tokio::spawn(tcp_loop(tcp, rules.clone(), shutdown.clone()));
        Self {
            addr,
            rules,
            shutdown,
        }
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers `name` (exactly, case-insensitively) with `answer`.
    pub fn set(&self, name: &str, answer: FakeAnswer) {
        self.rules.lock().exact.insert(fqdn(name), answer);
    }

    /// Answers every name under `zone` (and `zone` itself) with `answer`, unless an exact
    /// rule or a longer zone applies.
    pub fn set_zone(&self, zone: &str, answer: FakeAnswer) {
        let zone = fqdn(zone).trim_end_matches('.').to_owned() + ".";
        let mut rules = self.rules.lock();
        rules.zones.retain(|(z, _)| *z != zone);
        rules.zones.push((zone, answer));
    }

    /// The answer for names no rule covers (REFUSED unless set).
    pub fn set_default(&self, answer: FakeAnswer) {
        self.rules.lock().default = Some(answer);
    }

    /// Delays every reply by `delay` (to test coalescing and timeouts).
    pub fn set_delay(&self, delay: Duration) {
        self.rules.lock().delay = delay;
    }

    /// Queries received for `name` over `transport`.
    pub fn queries(&self, name: &str, transport: FakeTransport) -> u64 {
        self.rules
            .lock()
            .counts
            .get(&(fqdn(name), transport))
            .copied()
            .unwrap_or(0)
    }

    /// Queries received for `name` over both transports.
    pub fn total(&self, name: &str) -> u64 {
        self.queries(name, FakeTransport::Udp) + self.queries(name, FakeTransport::Tcp)
    }

    /// Queries received for all names.
    pub fn all_queries(&self) -> u64 {
        self.rules.lock().counts.values().sum()
    }

    /// Stops serving; in-flight replies are abandoned.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Builds the reply to `request`, or `None` to stay silent.
fn respond(
    rules: &Mutex<Rules>,
    request: &[u8],
    transport: FakeTransport,
) -> Option<(Vec<u8>, Duration)> {
    let req = Message::from_vec(request).ok()?;
    let query = req.queries.first()?.clone();
    let name = fqdn(&query.name().to_ascii());
    let (answer, delay) = {
        let mut rules = rules.lock();
        *rules.counts.entry((name.clone(), transport)).or_default() += 1;
        (rules.answer_for(&name), rules.delay)
    };
    let mut m = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_query(query.clone());
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        m.set_edns(edns);
    }
    if let FakeAnswer::Garbage(kind) = answer {
        return Some((garbage(kind, &req, &query)?, delay));
    }
    let qname = query.name().clone();
    let zone = qname.base_name();
    let soa = |ttl: u32, minimum: u32| {
        let mname = Name::from_ascii("ns.fake.").expect("static name");
        Record::from_rdata(
            zone.clone(),
            ttl,
            RData::SOA(SOA::new(
                mname.clone(),
                mname,
                1,
                3600,
                600,
                86_400,
                minimum,
            )),
        )
    };
    let addresses = |m: &mut Message, addrs: &[Ipv4Addr], ttl: u32| {
        if matches!(query.query_type(), RecordType::A | RecordType::ANY) {
            for a in addrs {
                m.add_answer(Record::from_rdata(qname.clone(), ttl, RData::A(A(*a))));
            }
        } else {
            m.add_authority(soa(ttl, ttl));
        }
    };
    match answer {
        FakeAnswer::Drop => return None,
        FakeAnswer::A { addrs, ttl } => addresses(&mut m, &addrs, ttl),
        FakeAnswer::Truncated { addrs, ttl } => match transport {
            FakeTransport::Udp => m.metadata.truncation = true,
            FakeTransport::Tcp => addresses(&mut m, &addrs, ttl),
        },
        FakeAnswer::NxDomain { soa_ttl, minimum } => {
            m.metadata.response_code = ResponseCode::NXDomain;
            m.add_authority(soa(soa_ttl, minimum));
        }
        FakeAnswer::NoData { soa_ttl, minimum } => {
            m.add_authority(soa(soa_ttl, minimum));
        }
        FakeAnswer::ServFail => m.metadata.response_code = ResponseCode::ServFail,
        FakeAnswer::Refused => m.metadata.response_code = ResponseCode::Refused,
        FakeAnswer::Garbage(_) => unreachable!("answered above"),
    }
    Some((m.to_vec().ok()?, delay))
}

/// The bytes of a [`Garbage`] reply to `req`.
fn garbage(kind: Garbage, req: &Message, query: &hickory_proto::op::Query) -> Option<Vec<u8>> {
    let id = req.metadata.id;
    let answer_for = |id: u16, name: Name| -> Option<Vec<u8>> {
        let mut m = Message::new(id, MessageType::Response, OpCode::Query);
        m.metadata.recursion_available = true;
        m.add_query(hickory_proto::op::Query::query(name.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(
            name,
            60,
            RData::A(A::new(198, 51, 100, 66)),
        ));
        m.to_vec().ok()
    };
    match kind {
        Garbage::Junk => {
            // ID, QR=1 RD RA, QD=1 AN=1, then noise that is no name, type or class.
            let mut bytes = id.to_be_bytes().to_vec();
            bytes.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
            bytes.extend_from_slice(&[0xc0, 0xff, 0x3f, 0xff, 0xee, 0x00, 0x07]);
            Some(bytes)
        }
        Garbage::WrongId => answer_for(id.wrapping_add(1), query.name().clone()),
        Garbage::WrongQuestion => answer_for(id, Name::from_ascii("spoofed.invalid.").ok()?),
        Garbage::NotAResponse => req.to_vec().ok(),
    }
}

async fn udp_loop(socket: Arc<UdpSocket>, rules: Arc<Mutex<Rules>>, shutdown: CancellationToken) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(_) => continue,
            },
        };
        let Some((reply, delay)) = respond(&rules, &buf[..n], FakeTransport::Udp) else {
            continue;
        };
        let (socket, shutdown) = (socket.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(delay) => { let _ = socket.send_to(&reply, peer).await; }
            }
        });
    }
}

async fn tcp_loop(listener: TcpListener, rules: Arc<Mutex<Rules>>, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        let (rules, shutdown) = (rules.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                _ = tcp_connection(stream, &rules) => {}
            }
        });
    }
}

async fn tcp_connection(mut stream: TcpStream, rules: &Mutex<Rules>) -> io::Result<()> {
    loop {
        let len = usize::from(stream.read_u16().await?);
        let mut msg = vec![0u8; len];
        stream.read_exact(&mut msg).await?;
        let Some((reply, delay)) = respond(rules, &msg, FakeTransport::Tcp) else {
            continue;
        };
        tokio::time::sleep(delay).await;
        let mut frame = (reply.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(&reply);
        stream.write_all(&frame).await?;
    }
}

/// The Consul query-name parser on a wire-format name (for fuzzing): the name is read as a
/// question name, then parsed against the zones `consul.` and `alt.test.` with the local
/// datacenter `dc1`. Returns whether it is a zone name. Never panics, whatever the bytes.
pub fn parse_query_name(wire: &[u8], qtype: u16) -> bool {
    let Ok((name, _)) = crate::name::QName::read(wire, 0) else {
        return false;
    };
    let labels = crate::name::ZoneLabels {
        domains: vec![
            vec![b"consul".to_vec()],
            vec![b"alt".to_vec(), b"test".to_vec()],
        ],
        datacenter: b"dc1".to_vec(),
    };
    labels.parse(&name, qtype).is_some()
}
