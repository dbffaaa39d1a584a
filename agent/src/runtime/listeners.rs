//! Binding every listener before anything serves: HTTP on each `client_addr` /
//! `addresses.http` address, DNS (several SO_REUSEPORT UDP sockets plus TCP) on each DNS
//! address, the server RPC port on servers, and the serf LAN port (UDP for gossip, TCP on the
//! same port for push/pull).
//!
//! Invariants: a disabled port (-1) is not bound; port 0 picks a free port and the real
//! address is what [`BoundAddrs`] reports; a bind failure is one error naming the address and
//! the settings that chose it.

use std::net::SocketAddr;

use muster_dns::DnsListeners;
use tokio::net::TcpListener;

use crate::config::RuntimeConfig;

/// The bound sockets.
#[derive(Debug)]
pub struct Listeners {
    /// HTTP API listeners.
    pub http: Vec<TcpListener>,
    /// HTTPS API listeners.
    pub https: Vec<TcpListener>,
    /// DNS endpoints.
    pub dns: Vec<DnsListeners>,
    /// The server RPC listener (servers only).
    pub server: Option<TcpListener>,
    /// The serf LAN sockets: UDP gossip and the TCP push/pull listener, on one port.
    pub serf: Option<(std::net::UdpSocket, std::net::TcpListener)>,
}

/// The addresses actually bound (port 0 resolved).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundAddrs {
    /// HTTP API addresses.
    pub http: Vec<SocketAddr>,
    /// HTTPS API addresses.
    pub https: Vec<SocketAddr>,
    /// DNS addresses (UDP and TCP on the same port).
    pub dns: Vec<SocketAddr>,
    /// The server RPC address.
    pub server: Option<SocketAddr>,
    /// The serf LAN address (UDP and TCP).
    pub serf: Option<SocketAddr>,
}

impl BoundAddrs {
    /// The line the end-to-end tests scrape from stdout:
    /// `==> muster ready: http=<addr> https=<addr> dns=<addr> server=<addr> serf=<addr>`, leaving out what is
    /// disabled; several addresses of one kind are joined with commas.
    pub fn ready_line(&self) -> String {
        let join = |v: &[SocketAddr]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut parts = vec!["==> muster ready:".to_owned()];
        if !self.http.is_empty() {
            parts.push(format!("http={}", join(&self.http)));
        }
        if !self.https.is_empty() {
            parts.push(format!("https={}", join(&self.https)));
        }
        if !self.dns.is_empty() {
            parts.push(format!("dns={}", join(&self.dns)));
        }
        if let Some(server) = self.server {
            parts.push(format!("server={server}"));
        }
        if let Some(serf) = self.serf {
            parts.push(format!("serf={serf}"));
        }
        parts.join(" ")
    }
}

/// How many UDP sockets serve DNS: one receive thread per core.
pub fn dns_udp_sockets() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn bind_error(what: &str, addr: SocketAddr, keys: &str, e: &std::io::Error) -> String {
    format!("cannot bind the {what} on {addr} (set by {keys}): {e}")
}

/// Binds one TCP listener; the error names what it is for and the keys that set `addr`.
async fn bind_tcp(
    addr: SocketAddr,
    what: &str,
    keys: &str,
) -> Result<(TcpListener, SocketAddr), String> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|e| bind_error(what, addr, keys, &e))?;
    let bound = l.local_addr().map_err(|e| e.to_string())?;
    Ok((l, bound))
}

/// Binds everything the configuration asks for.
pub async fn bind_all(cfg: &RuntimeConfig) -> Result<(Listeners, BoundAddrs), String> {
    let mut listeners = Listeners {
        http: Vec::new(),
        https: Vec::new(),
        dns: Vec::new(),
        server: None,
        serf: None,
    };
    let mut addrs = BoundAddrs::default();
    for addr in &cfg.http.addrs {
        let (l, bound) = bind_tcp(
            *addr,
            "HTTP API",
            "client_addr or addresses.http, and ports.http / -http-port",
        )
        .await?;
        addrs.http.push(bound);
        listeners.http.push(l);
    }
    for addr in &cfg.http.https_addrs {
        let (l, bound) = bind_tcp(
            *addr,
            "HTTPS API",
            "client_addr or addresses.https, and ports.https / -https-port",
        )
        .await?;
        addrs.https.push(bound);
        listeners.https.push(l);
    }
    for addr in &cfg.dns.addrs {
        let l = DnsListeners::bind(*addr, dns_udp_sockets()).map_err(|e| {
            bind_error(
                "DNS server",
                *addr,
                "client_addr or addresses.dns, and ports.dns / -dns-port",
                &e,
            )
        })?;
        addrs.dns.push(l.local_addr().map_err(|e| e.to_string())?);
        listeners.dns.push(l);
    }
    if cfg.server.enabled {
        let (l, bound) = bind_tcp(
            cfg.server.rpc_addr,
            "server RPC port",
            "bind_addr / -bind, and ports.server / -server-port",
        )
        .await?;
        addrs.server = Some(bound);
        listeners.server = Some(l);
    }
    let (udp, tcp) = bind_serf(cfg.gossip.bind).map_err(|e| {
        bind_error(
            "serf LAN port (UDP and TCP)",
            cfg.gossip.bind,
            "bind_addr / -bind, and ports.serf_lan / -serf-lan-port",
            &e,
        )
    })?;
    addrs.serf = Some(udp.local_addr().map_err(|e| e.to_string())?);
    listeners.serf = Some((udp, tcp));
    Ok((listeners, addrs))
}

/// Binds the gossip UDP socket and the push/pull TCP listener on one port. With port 0 the
/// UDP port is picked first and TCP must get the same number; if another process holds it,
/// a few fresh picks are tried.
pub fn bind_serf(
    addr: SocketAddr,
) -> std::io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let mut last = None;
    for _ in 0..if addr.port() == 0 { 8 } else { 1 } {
        let udp = std::net::UdpSocket::bind(addr)?;
        match std::net::TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_leaves_out_what_is_disabled() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let all = BoundAddrs {
            http: vec![a("127.0.0.1:8500")],
            https: vec![a("127.0.0.1:8501")],
            dns: vec![a("127.0.0.1:8600")],
            server: Some(a("127.0.0.1:8300")),
            serf: Some(a("127.0.0.1:8301")),
        };
        assert_eq!(
            all.ready_line(),
            "==> muster ready: http=127.0.0.1:8500 https=127.0.0.1:8501 dns=127.0.0.1:8600 \
             server=127.0.0.1:8300 serf=127.0.0.1:8301"
        );
        let client = BoundAddrs {
            http: vec![a("127.0.0.1:8500"), a("10.0.0.1:8500")],
            https: vec![],
            dns: vec![],
            server: None,
            serf: None,
        };
        assert_eq!(
            client.ready_line(),
            "==> muster ready: http=127.0.0.1:8500,10.0.0.1:8500"
        );
    }

    #[tokio::test]
    async fn bind_errors_name_the_address_and_the_keys() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let args = crate::config::AgentArgs::parse_consul_style([
            format!("-data-dir={}", dir.path().display()),
            format!("-http-port={port}"),
            "-dns-port=-1".to_owned(),
            "-bind=127.0.0.1".to_owned(),
        ])
        .unwrap();
        let cfg = crate::config::load_with_hostname(&args, "h")
            .unwrap()
            .runtime;
        let err = bind_all(&cfg).await.unwrap_err();
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(err.contains("ports.http"), "{err}");
    }

    #[tokio::test]
    async fn port_zero_reports_the_real_ports_and_disabled_ports_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let args = crate::config::AgentArgs::parse_consul_style([
            format!("-data-dir={}", dir.path().display()),
            "-http-port=0".to_owned(),
            "-dns-port=0".to_owned(),
            "-server-port=0".to_owned(),
            "-server".to_owned(),
            "-bind=127.0.0.1".to_owned(),
        ])
        .unwrap();
        let cfg = crate::config::load_with_hostname(&args, "h")
            .unwrap()
            .runtime;
        let (listeners, addrs) = bind_all(&cfg).await.unwrap();
        assert_eq!(addrs.http.len(), 1);
        assert_ne!(addrs.http[0].port(), 0);
        assert_ne!(addrs.dns[0].port(), 0);
        assert_ne!(addrs.server.unwrap().port(), 0);
        let serf = addrs.serf.unwrap();
        assert_ne!(serf.port(), 0);
        let (udp, tcp) = listeners.serf.as_ref().unwrap();
        assert_eq!(tcp.local_addr().unwrap(), serf);
        assert_eq!(udp.local_addr().unwrap(), serf);
        assert_eq!(listeners.dns[0].udp.len(), dns_udp_sockets());
        drop(listeners);

        let args = crate::config::AgentArgs::parse_consul_style([
            format!("-data-dir={}", dir.path().display()),
            "-http-port=-1".to_owned(),
            "-dns-port=-1".to_owned(),
            "-serf-lan-port=0".to_owned(),
            "-bind=127.0.0.1".to_owned(),
        ])
        .unwrap();
        let cfg = crate::config::load_with_hostname(&args, "h")
            .unwrap()
            .runtime;
        let (_, addrs) = bind_all(&cfg).await.unwrap();
        assert!(addrs.http.is_empty() && addrs.dns.is_empty() && addrs.server.is_none());
        assert!(addrs.serf.is_some(), "gossip always binds");
    }
}
