//! Gossip's TCP side and join addresses: push/pull frames and `retry_join` targets.
//!
//! A push/pull exchange is one request and one reply on a fresh TCP connection to the serf
//! LAN port: each side sends one frame `[len u32][envelope]` whose envelope (see
//! [`super::seal`]) holds an encoded [`super::wire::State`]. Frames are bounded
//! ([`MAX_FRAME`]) and every step has a timeout, so a stuck peer costs one connection for a
//! few seconds and nothing else.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::seal::{Channel, OpenError, Sealer};

/// Largest push/pull frame (a few thousand members fit easily).
pub const MAX_FRAME: usize = 8 * 1024 * 1024;
/// Bound on one whole push/pull exchange.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Consul's default LAN gossip port, used when a join address has none.
pub const DEFAULT_SERF_PORT: u16 = 8301;

/// Why a push/pull exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Connect, read or write failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer took longer than [`EXCHANGE_TIMEOUT`].
    #[error("timed out after {EXCHANGE_TIMEOUT:?}")]
    Timeout,
    /// The frame is larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes is too large")]
    TooLarge(usize),
    /// The envelope did not open (key mismatch or malformed).
    #[error("{0}")]
    Open(#[from] OpenError),
    /// The peer took our request and closed the connection without a reply: an agent does
    /// that when it cannot open the request, which between agents of the same version means
    /// the encrypt keys differ (or only one side has one).
    #[error(
        "the agent closed the connection without answering: its gossip encrypt key most likely \
         differs from ours (or only one of us has one)"
    )]
    NoReply,
}

/// Writes one sealed frame.
pub async fn write_frame(
    stream: &mut TcpStream,
    sealer: &Sealer,
    payload: &[u8],
) -> Result<(), ExchangeError> {
    let sealed = sealer.seal(Channel::Tcp, payload);
    if sealed.len() > MAX_FRAME {
        return Err(ExchangeError::TooLarge(sealed.len()));
    }
    stream.write_u32(sealed.len() as u32).await?;
    stream.write_all(&sealed).await?;
    stream.flush().await?;
    Ok(())
}

/// Reads one frame and opens it; returns the payload.
pub async fn read_frame(stream: &mut TcpStream, sealer: &Sealer) -> Result<Vec<u8>, ExchangeError> {
    let len = stream.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(ExchangeError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    let payload = sealer.open(Channel::Tcp, &mut buf)?.to_vec();
    Ok(payload)
}

/// The client side: sends `payload` to `addr` and returns the peer's reply payload.
pub async fn exchange(
    addr: SocketAddr,
    sealer: &Sealer,
    payload: &[u8],
) -> Result<Vec<u8>, ExchangeError> {
    let work = async {
        let mut stream = TcpStream::connect(addr).await?;
        write_frame(&mut stream, sealer, payload).await?;
        match read_frame(&mut stream, sealer).await {
            // Closed before the first byte of a reply: the peer refused what we sent.
            Err(ExchangeError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(ExchangeError::NoReply)
            }
            other => other,
        }
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, work)
        .await
        .map_err(|_| ExchangeError::Timeout)?
}

/// Splits a join address into host and port: `ip`, `ip:port`, `host`, `host:port`,
/// `[v6]`, `[v6]:port` and a bare IPv6 address. The default port is 8301.
pub fn split_host_port(addr: &str) -> Result<(String, u16), String> {
    let addr = addr.trim();
    if addr.is_empty() {
        return Err("empty address".to_owned());
    }
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    if let Ok(ip) = addr.parse::<std::net::IpAddr>() {
        return Ok((ip.to_string(), DEFAULT_SERF_PORT));
    }
    if let Some(rest) = addr.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("missing ']' in address {addr}"))?;
        let port = match tail {
            "" => DEFAULT_SERF_PORT,
            t => t
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid port in address {addr}"))?,
        };
        return Ok((host.to_owned(), port));
    }
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            let port = port
                .parse()
                .map_err(|_| format!("invalid port in address {addr}"))?;
            Ok((host.to_owned(), port))
        }
        None => Ok((addr.to_owned(), DEFAULT_SERF_PORT)),
    }
}

/// Resolves a join address to socket addresses (hostnames through the system resolver).
pub async fn resolve(addr: &str) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = split_host_port(addr)?;
    let found: Vec<SocketAddr> = tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await
    .map_err(|_| format!("resolving {host} timed out"))?
    .map_err(|e| format!("cannot resolve {host}: {e}"))?
    .take(16)
    .collect();
    if found.is_empty() {
        return Err(format!("no addresses found for {host}"));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_addresses_follow_consul() {
        let ok = |s: &str| split_host_port(s).unwrap();
        assert_eq!(ok("10.0.0.1"), ("10.0.0.1".into(), 8301));
        assert_eq!(ok("10.0.0.1:9301"), ("10.0.0.1".into(), 9301));
        assert_eq!(ok("db1.example"), ("db1.example".into(), 8301));
        assert_eq!(ok("db1.example:7000"), ("db1.example".into(), 7000));
        assert_eq!(ok("[fd00::1]:9301"), ("fd00::1".into(), 9301));
        assert_eq!(ok("[fd00::1]"), ("fd00::1".into(), 8301));
        assert_eq!(ok("fd00::1"), ("fd00::1".into(), 8301));
        assert!(split_host_port("").is_err());
        assert!(split_host_port("[fd00::1").is_err());
        assert!(split_host_port("host:port").is_err());
    }

    #[tokio::test]
    async fn resolve_handles_literals_and_localhost() {
        let got = resolve("127.0.0.1:4000").await.unwrap();
        assert_eq!(got, ["127.0.0.1:4000".parse().unwrap()]);
        let got = resolve("localhost").await.unwrap();
        assert!(got.iter().all(|a| a.port() == 8301 && a.ip().is_loopback()));
    }

    #[tokio::test]
    async fn frames_are_sealed_and_bounded() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let key: &[u8] = b"0123456789abcdef";
        let server = tokio::spawn(async move {
            let sealer = Sealer::new(Some(key), true, true);
            let (mut s, _) = listener.accept().await.unwrap();
            let got = read_frame(&mut s, &sealer).await.unwrap();
            write_frame(&mut s, &sealer, &[got, b" back".to_vec()].concat())
                .await
                .unwrap();
            // A second client with the wrong key is refused.
            let (mut s, _) = listener.accept().await.unwrap();
            read_frame(&mut s, &sealer).await.unwrap_err()
        });
        let sealer = Sealer::new(Some(key), true, true);
        let reply = exchange(addr, &sealer, b"hello").await.unwrap();
        assert_eq!(reply, b"hello back");
        let wrong = Sealer::new(Some(b"fedcba9876543210"), true, true);
        let refused = exchange(addr, &wrong, b"x").await.unwrap_err();
        // The joiner learns why: the peer refused the request without a reply.
        assert!(matches!(refused, ExchangeError::NoReply), "{refused}");
        assert!(refused.to_string().contains("encrypt key"), "{refused}");
        let err = server.await.unwrap();
        assert!(
            matches!(err, ExchangeError::Open(OpenError::WrongKey)),
            "{err}"
        );
    }
}
