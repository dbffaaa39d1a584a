//! The sockets a [`crate::DnsServer`] serves on, and the helper that binds them.
//!
//! The library never binds on its own: the agent (or a test) calls [`DnsListeners::bind`]
//! or builds [`DnsListeners`] from sockets it bound itself, and hands them to
//! [`crate::DnsServer::run`]. Several UDP sockets share one port with SO_REUSEPORT so the
//! kernel spreads datagrams over one receive thread per core.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Receive buffer asked for on each UDP socket, to absorb bursts (the kernel may cap it).
const UDP_RECV_BUFFER: usize = 4 << 20;
/// Attempts at finding a port free for both UDP and TCP when binding port 0.
const PORT_ATTEMPTS: usize = 16;

/// The already-bound sockets of one DNS endpoint: UDP sockets on one port (SO_REUSEPORT
/// when more than one) and a TCP listener on the same address.
#[derive(Debug)]
pub struct DnsListeners {
    /// UDP sockets; each gets its own receive thread.
    pub udp: Vec<UdpSocket>,
    /// The TCP listener.
    pub tcp: TcpListener,
}

impl DnsListeners {
    /// Binds `udp_sockets` (at least one) SO_REUSEPORT UDP sockets and a TCP listener on
    /// `addr`. With port 0, one free port is picked for both protocols.
    pub fn bind(addr: SocketAddr, udp_sockets: usize) -> io::Result<Self> {
        let attempts = if addr.port() == 0 { PORT_ATTEMPTS } else { 1 };
        let mut last_err = None;
        for _ in 0..attempts {
            match Self::bind_once(addr, udp_sockets.max(1)) {
                Ok(listeners) => return Ok(listeners),
                // Port 0: the UDP port picked may be taken for TCP; try another.
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no free port")))
    }

    fn bind_once(addr: SocketAddr, n: usize) -> io::Result<Self> {
        let first = reuseport_udp(addr)?;
        let bound = first.local_addr()?;
        let mut udp = vec![first];
        for _ in 1..n {
            udp.push(reuseport_udp(bound)?);
        }
        let tcp = Socket::new(
            Domain::for_address(bound),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        tcp.set_reuse_address(true)?;
        if bound.is_ipv6() {
            tcp.set_only_v6(true)?;
        }
        tcp.bind(&bound.into())?;
        tcp.listen(1024)?;
        Ok(Self {
            udp,
            tcp: tcp.into(),
        })
    }

    /// The address served (the UDP and TCP port are the same).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

fn reuseport_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: a smaller buffer only means more drops under bursts.
    let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_udp_and_tcp_on_one_port() {
        let l = DnsListeners::bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let addr = l.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        assert_eq!(l.udp.len(), 3);
        for s in &l.udp {
            assert_eq!(s.local_addr().unwrap(), addr);
        }
    }
}
