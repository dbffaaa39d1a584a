//! TCP probe: connect to `host:port` within the timeout, send nothing, close.
//!
//! Dialling follows Go's `net.Dialer` (which Consul uses), because its behaviour is what
//! Consul users rely on for `"tcp": "localhost:3306"`:
//! * a name resolves to every address; they are split into primaries (the first address's
//!   family) and fallbacks (the other family), and the fallbacks start racing 300 ms later
//!   or as soon as the primaries fail ("happy eyeballs");
//! * within a family, addresses are tried one after another, each with its share of the
//!   remaining time (at least 2 s, Go's `partialDeadline`);
//! * if everything fails, the first error of the primaries is reported, in Go's form
//!   (`dial tcp 127.0.0.1:3306: connect: connection refused`).
//!
//! All waiting uses tokio's clock, so the whole dial is bounded by the check timeout.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::ProbeResult;
use crate::gostyle;

/// Go's `DefaultFallbackDelay` for happy eyeballs.
const FALLBACK_DELAY: Duration = Duration::from_millis(300);
/// Go's minimum per-address share of the dial timeout.
const SANE_MINIMUM: Duration = Duration::from_secs(2);

/// One TCP check run; the output texts are Consul's.
pub(crate) async fn probe(address: &str, timeout: Duration) -> ProbeResult {
    let deadline = Instant::now() + timeout;
    match dial(address, deadline).await {
        Ok(stream) => {
            drop(stream);
            ProbeResult::passing(format!("TCP connect {address}: Success"))
        }
        Err(text) => ProbeResult::critical(text),
    }
}

/// Resolves and connects; the error is Go's `*net.OpError` text.
async fn dial(address: &str, deadline: Instant) -> Result<TcpStream, String> {
    let (host, port) = gostyle::split_host_port(address).map_err(|e| format!("dial tcp: {e}"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("dial tcp: lookup tcp/{port}: unknown port"))?;
    let addrs = resolve(host, port, deadline).await?;
    // Go's partition: addresses of the first one's family first, the others as fallbacks.
    let first_is_v4 = addrs[0].is_ipv4();
    let (primaries, fallbacks): (Vec<_>, Vec<_>) =
        addrs.into_iter().partition(|a| a.is_ipv4() == first_is_v4);
    if fallbacks.is_empty() {
        return dial_serial(&primaries, deadline).await;
    }
    dial_parallel(&primaries, &fallbacks, deadline).await
}

async fn resolve(host: &str, port: u16, deadline: Instant) -> Result<Vec<SocketAddr>, String> {
    // An empty host means this machine, as in Go.
    if host.is_empty() {
        return Ok(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ]);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    match timeout_at(deadline, tokio::net::lookup_host((host, port))).await {
        Err(_) => Err(format!("dial tcp: lookup {host}: i/o timeout")),
        Ok(Err(e)) => Err(format!(
            "dial tcp: lookup {host}: {}",
            lookup_error_text(&e)
        )),
        Ok(Ok(found)) => {
            let addrs: Vec<SocketAddr> = found.collect();
            if addrs.is_empty() {
                Err(format!("dial tcp: lookup {host}: no such host"))
            } else {
                Ok(addrs)
            }
        }
    }
}

/// getaddrinfo's "Name or service not known" is Go's "no such host".
pub(crate) fn lookup_error_text(err: &std::io::Error) -> String {
    let text = err.to_string();
    if text.contains("not known") || text.contains("No address associated") {
        "no such host".to_owned()
    } else {
        gostyle::errno_text(err)
    }
}

/// Tries `addrs` in order; returns the first connection or the first error.
async fn dial_serial(addrs: &[SocketAddr], deadline: Instant) -> Result<TcpStream, String> {
    let mut first_err = None;
    for (i, addr) in addrs.iter().enumerate() {
        let now = Instant::now();
        if now >= deadline {
            first_err.get_or_insert_with(|| format!("dial tcp {addr}: i/o timeout"));
            break;
        }
        let part = partial_deadline(now, deadline, addrs.len() - i);
        let err = match timeout_at(part, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => format!("dial tcp {addr}: connect: {}", gostyle::errno_text(&e)),
            Err(_) => format!("dial tcp {addr}: i/o timeout"),
        };
        first_err.get_or_insert(err);
    }
    Err(first_err.unwrap_or_else(|| "dial tcp: no addresses to dial".to_owned()))
}

/// Go's `partialDeadline`: an equal share of the time left per remaining address, but
/// never less than 2 s unless less than that is left.
fn partial_deadline(now: Instant, deadline: Instant, remaining: usize) -> Instant {
    let left = deadline - now;
    let share = left / remaining.max(1) as u32;
    let share = if share < SANE_MINIMUM {
        left.min(SANE_MINIMUM)
    } else {
        share
    };
    now + share
}

/// Races the two families, the fallbacks starting after [`FALLBACK_DELAY`] or as soon as
/// the primaries fail; reports the primaries' error if both fail.
async fn dial_parallel(
    primaries: &[SocketAddr],
    fallbacks: &[SocketAddr],
    deadline: Instant,
) -> Result<TcpStream, String> {
    let primary = dial_serial(primaries, deadline);
    tokio::pin!(primary);
    let head_start = tokio::time::sleep(FALLBACK_DELAY);
    tokio::pin!(head_start);
    tokio::select! {
        result = &mut primary => {
            return match result {
                Ok(stream) => Ok(stream),
                Err(primary_err) => dial_serial(fallbacks, deadline).await.map_err(|_| primary_err),
            };
        }
        _ = &mut head_start => {}
    }
    let fallback = dial_serial(fallbacks, deadline);
    tokio::pin!(fallback);
    tokio::select! {
        result = &mut primary => match result {
            Ok(stream) => Ok(stream),
            Err(primary_err) => fallback.await.map_err(|_| primary_err),
        },
        result = &mut fallback => match result {
            Ok(stream) => Ok(stream),
            Err(_) => primary.await,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_deadline_shares_time_with_a_two_second_floor() {
        let now = Instant::now();
        let ten = now + Duration::from_secs(10);
        assert_eq!(partial_deadline(now, ten, 2), now + Duration::from_secs(5));
        assert_eq!(partial_deadline(now, ten, 10), now + Duration::from_secs(2));
        let one = now + Duration::from_secs(1);
        assert_eq!(partial_deadline(now, one, 3), one);
    }

    #[tokio::test]
    async fn bad_addresses_fail_with_go_texts() {
        let soon = Instant::now() + Duration::from_secs(1);
        assert_eq!(
            dial("localhost", soon).await.unwrap_err(),
            "dial tcp: address localhost: missing port in address"
        );
        assert_eq!(
            dial("127.0.0.1:http2", soon).await.unwrap_err(),
            "dial tcp: lookup tcp/http2: unknown port"
        );
    }

    #[test]
    fn lookup_errors_read_like_go() {
        let nx = std::io::Error::other(
            "failed to lookup address information: Name or service not known",
        );
        assert_eq!(lookup_error_text(&nx), "no such host");
    }
}
