//! A small DNS client for the tests: hickory-proto messages over tokio UDP and TCP sockets,
//! with an optional EDNS(0) OPT record. Every exchange is bounded by [`QUERY_TIMEOUT`].

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The longest a query may take (the forwarder's worst case in these tests is far below).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How a query travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP (length-prefixed).
    Tcp,
}

/// Both transports, for tests that check each.
pub const BOTH: [Transport; 2] = [Transport::Udp, Transport::Tcp];

/// One query's options.
#[derive(Clone, Debug)]
pub struct Ask {
    /// The name.
    pub name: String,
    /// The type.
    pub rtype: RecordType,
    /// The transport.
    pub transport: Transport,
    /// Advertise this EDNS(0) UDP payload size (None: no OPT record).
    pub edns: Option<u16>,
    /// Recursion desired.
    pub rd: bool,
}

impl Ask {
    /// A plain query with RD=1 and no EDNS.
    pub fn new(name: &str, rtype: RecordType, transport: Transport) -> Ask {
        Ask {
            name: name.to_owned(),
            rtype,
            transport,
            edns: None,
            rd: true,
        }
    }
}

/// A decoded reply.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The whole message.
    pub message: Message,
}

impl Reply {
    /// The response code.
    pub fn rcode(&self) -> ResponseCode {
        self.message.metadata.response_code
    }

    /// AA.
    pub fn aa(&self) -> bool {
        self.message.metadata.authoritative
    }

    /// RA.
    pub fn ra(&self) -> bool {
        self.message.metadata.recursion_available
    }

    /// TC.
    pub fn tc(&self) -> bool {
        self.message.metadata.truncation
    }

    /// The answer section.
    pub fn answers(&self) -> &[Record] {
        &self.message.answers
    }

    /// The authority section.
    pub fn authority(&self) -> &[Record] {
        &self.message.authorities
    }

    /// The additional section (without the OPT record).
    pub fn additionals(&self) -> &[Record] {
        &self.message.additionals
    }

    /// The IPv4 addresses in the answer section, sorted.
    pub fn a_addrs(&self) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = a_of(self.answers());
        v.sort();
        v
    }

    /// The IPv4 addresses in the additional section.
    pub fn additional_a(&self) -> Vec<(String, Ipv4Addr)> {
        self.additionals()
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some((r.name.to_ascii(), a.0)),
                _ => None,
            })
            .collect()
    }

    /// The SRV records in the answer section.
    pub fn srv(&self) -> Vec<SRV> {
        self.answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    /// The SOA record in the authority section, with its TTL.
    pub fn soa(&self) -> Option<(u32, SOA)> {
        self.authority().iter().find_map(|r| match &r.data {
            RData::SOA(s) => Some((r.ttl, s.clone())),
            _ => None,
        })
    }

    /// The smallest TTL in the answer section.
    pub fn min_ttl(&self) -> u32 {
        self.answers().iter().map(|r| r.ttl).min().expect("answers")
    }

    /// A one-line summary for assertion messages.
    pub fn summary(&self) -> String {
        format!(
            "{:?} aa={} ra={} tc={} answers={:?} authority={:?} additional={:?}",
            self.rcode(),
            self.aa(),
            self.ra(),
            self.tc(),
            self.answers()
                .iter()
                .map(|r| format!("{} {} {}", r.name, r.ttl, r.data))
                .collect::<Vec<_>>(),
            self.authority()
                .iter()
                .map(|r| format!("{} {}", r.name, r.data.record_type()))
                .collect::<Vec<_>>(),
            self.additionals()
                .iter()
                .map(|r| format!("{} {}", r.name, r.data))
                .collect::<Vec<_>>(),
        )
    }
}

fn a_of(records: &[Record]) -> Vec<Ipv4Addr> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// Sends `ask` to `server`; panics on a network error or timeout.
pub async fn query(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    transport: Transport,
) -> Reply {
    exchange(server, &Ask::new(name, rtype, transport))
        .await
        .unwrap_or_else(|e| panic!("{name} {rtype} over {transport:?} to {server}: {e}"))
}

/// Sends `ask` to `server`.
pub async fn exchange(server: SocketAddr, ask: &Ask) -> io::Result<Reply> {
    let name = Name::from_ascii(&ask.name).map_err(io::Error::other)?;
    let mut msg = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = ask.rd;
    msg.add_query(Query::query(name, ask.rtype));
    if let Some(size) = ask.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(size);
        msg.set_edns(edns);
    }
    let id = msg.metadata.id;
    let bytes = msg.to_vec().map_err(io::Error::other)?;
    let fut = async {
        match ask.transport {
            Transport::Udp => udp(server, &bytes, id).await,
            Transport::Tcp => tcp(server, &bytes).await,
        }
    };
    let reply = tokio::time::timeout(QUERY_TIMEOUT, fut)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no reply"))??;
    if reply.metadata.id != id || reply.metadata.message_type != MessageType::Response {
        return Err(io::Error::other(format!("not our reply: {reply:?}")));
    }
    Ok(Reply { message: reply })
}

fn rand_id() -> u16 {
    rand::random()
}

async fn udp(server: SocketAddr, bytes: &[u8], id: u16) -> io::Result<Message> {
    // Loopback servers from loopback; agents in test namespaces over their management veth.
    let local = if server.ip().is_loopback() {
        "127.0.0.1:0"
    } else {
        "0.0.0.0:0"
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0u8; 65_535];
    // Bounded by the caller's timeout; stray datagrams with another ID are skipped.
    loop {
        let n = socket.recv(&mut buf).await?;
        let msg = Message::from_vec(&buf[..n]).map_err(io::Error::other)?;
        if msg.metadata.id == id {
            return Ok(msg);
        }
    }
}

async fn tcp(server: SocketAddr, bytes: &[u8]) -> io::Result<Message> {
    let mut stream = TcpStream::connect(server).await?;
    let len = u16::try_from(bytes.len()).map_err(io::Error::other)?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(bytes);
    stream.write_all(&frame).await?;
    let len = usize::from(stream.read_u16().await?);
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    Message::from_vec(&buf).map_err(io::Error::other)
}
