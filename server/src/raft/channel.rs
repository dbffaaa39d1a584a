//! Raft's AppendEntries, and writes forwarded to the leader, over long-lived connections.
//!
//! Every write costs each follower two AppendEntries (the entry, then the new commit index),
//! and as separate HTTP exchanges through reqwest and hyper each one was several task hops,
//! a header block and a connection-pool round on both sides. Here the leader's connection to
//! a follower asks once for an HTTP/1.1 upgrade on the RPC port (`POST` [`PATH`] with
//! `Upgrade:` [`TOKEN`], answered `101`; through TLS when the port speaks TLS), and then
//! sends requests as frames on the same socket: a 4-byte big-endian length and the same JSON
//! envelope the HTTP path carries; each answer is a frame with the HTTP path's reply body.
//! A follower forwards its clients' writes to the leader the same way ([`WRITE_PATH`]), over
//! a [`Pool`] of such connections, one request at a time on each.
//!
//! Invariants:
//! - one request at a time per connection (openraft replicates to a target one request at a
//!   time), so the answer to a frame is the next frame;
//! - any failure (timeout, short read, bad frame) drops the connection, and the call fails
//!   the way an HTTP call would; the next call opens a new one;
//! - a server without the path (an older build: 404) gets the HTTP path from that connection
//!   for [`LEGACY_RETRY`] before the upgrade is tried again, so mixed-version clusters work;
//! - frames are bounded by `MAX_RPC_BODY` in both directions.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::network::{MAX_RPC_BODY, PostError, RpcClient};
use super::server::Inner;

/// The upgrade request's path on the RPC port.
pub(crate) const PATH: &str = "/raft/v1/append-stream";
/// The protocol named in `Upgrade:`.
pub(crate) const TOKEN: &str = "muster-raft-append/1";
/// The upgrade path of forwarded writes.
pub(crate) const WRITE_PATH: &str = "/rpc/v1/write-stream";
/// Their protocol.
pub(crate) const WRITE_TOKEN: &str = "muster-forward-write/1";
/// Idle forwarding connections kept.
const POOL_IDLE: usize = 64;
/// How long a connection keeps to plain HTTP after a server said it has no channel.
pub(crate) const LEGACY_RETRY: Duration = Duration::from_secs(60);

/// A client's end of a channel. Reads are buffered: a frame usually arrives whole, and one
/// read system call then takes its length and its body (and tells the next frame's read that
/// nothing more is there), where unbuffered `read_exact`s took three.
pub(crate) type Conn = tokio::io::BufReader<reqwest::Upgraded>;

/// Writes one frame.
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|n| (*n as usize) <= MAX_RPC_BODY)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf).await?;
    w.flush().await
}

/// Reads one frame; `None` when the peer closed the connection between frames.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let got = r.read(&mut len).await?;
    if got == 0 {
        return Ok(None);
    }
    r.read_exact(&mut len[got..]).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_RPC_BODY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is larger than {MAX_RPC_BODY}"),
        ));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// What a channel carries.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Append,
    Write,
}

/// The follower's side of the append channel: answers the upgrade, then serves frames until
/// the leader closes the connection or this server stops.
pub(crate) async fn upgrade(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    accept(inner, req, Kind::Append)
}

/// The leader's side of a forwarding connection.
pub(crate) async fn upgrade_write(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    accept(inner, req, Kind::Write)
}

fn accept(inner: Arc<Inner>, mut req: Request, kind: Kind) -> Response {
    let token = match kind {
        Kind::Append => TOKEN,
        Kind::Write => WRITE_TOKEN,
    };
    let asked = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(token.as_bytes()));
    if !asked {
        return (
            StatusCode::BAD_REQUEST,
            format!("this path needs `Upgrade: {token}`"),
        )
            .into_response();
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => serve(inner, hyper_util::rt::TokioIo::new(upgraded), kind).await,
            Err(e) => tracing::debug!(error = %e, ?kind, "RPC channel: upgrade failed"),
        }
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [(header::UPGRADE, token), (header::CONNECTION, "upgrade")],
    )
        .into_response()
}

async fn serve<I: AsyncRead + AsyncWrite + Unpin>(inner: Arc<Inner>, io: I, kind: Kind) {
    let stop = inner.stopping().clone();
    // Buffered reads, as on the client's end ([`Conn`]); writes go straight through.
    let mut io = tokio::io::BufReader::new(io);
    loop {
        let frame = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            f = read_frame(&mut io) => f,
        };
        let body = match frame {
            Ok(Some(body)) => body,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "RPC channel: bad frame; closing");
                return;
            }
        };
        let handled = match kind {
            Kind::Append => super::rpc::append_reply(&inner, &body).await,
            Kind::Write => super::rpc::write_reply(&inner, &body).await,
        };
        let reply = match handled {
            Ok(reply) => reply,
            Err(reason) => {
                tracing::debug!(%reason, "RPC channel: bad request; closing");
                return;
            }
        };
        if let Err(e) = write_frame(&mut io, &reply).await {
            tracing::debug!(error = %e, "RPC channel: cannot answer; closing");
            return;
        }
    }
}

/// Why a call did not go over a channel.
pub(crate) enum ChannelError {
    /// The peer does not offer it: use HTTP.
    Unsupported,
    /// The upgrade exchange failed, as an HTTP call can.
    Failed(PostError),
    /// Cannot connect.
    Unreachable(PostError),
    /// The frame exchange failed or timed out.
    Broken(String),
}

/// Opens a channel of `path`/`token` to `addr`, within `deadline`.
pub(crate) async fn open(
    rpc: &RpcClient,
    addr: &str,
    path: &str,
    token: &str,
    deadline: Instant,
) -> Result<Conn, ChannelError> {
    let ttl = deadline.saturating_duration_since(Instant::now());
    let resp = rpc
        .client
        .post(rpc.url(addr, path))
        .timeout(ttl)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, token)
        .send()
        .await
        .map_err(|source| {
            let addr = addr.to_string();
            if source.is_connect() {
                ChannelError::Unreachable(PostError::Connect { addr, source })
            } else {
                ChannelError::Failed(PostError::Transport { addr, source })
            }
        })?;
    match resp.status() {
        StatusCode::SWITCHING_PROTOCOLS => {}
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
            return Err(ChannelError::Unsupported);
        }
        other => {
            return Err(ChannelError::Failed(PostError::Status {
                addr: addr.to_string(),
                status: other.as_u16(),
                body: format!("refused the {token} channel"),
            }));
        }
    }
    tokio::time::timeout_at(deadline, resp.upgrade())
        .await
        .map_err(|_| ChannelError::Broken(format!("{addr}: upgrade timed out")))?
        .map(tokio::io::BufReader::new)
        .map_err(|source| {
            ChannelError::Failed(PostError::Transport {
                addr: addr.to_string(),
                source,
            })
        })
}

/// Sends one request frame and reads its answer, within `deadline`. On an error the
/// connection's state is unknown: drop it.
pub(crate) async fn exchange<I: AsyncRead + AsyncWrite + Unpin>(
    io: &mut I,
    addr: &str,
    body: &[u8],
    deadline: Instant,
) -> Result<Vec<u8>, ChannelError> {
    let exchange = async {
        write_frame(io, body).await?;
        read_frame(io).await
    };
    Err(ChannelError::Broken(
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Ok(Some(reply))) => return Ok(reply),
            Ok(Ok(None)) => format!("{addr} closed the RPC channel"),
            Ok(Err(e)) => format!("RPC channel to {addr}: {e}"),
            Err(_) => format!("RPC channel to {addr}: timed out"),
        },
    ))
}

/// Connections for forwarded writes, to whichever servers led: each call takes an idle one
/// to its address or opens one, and puts it back after a clean exchange.
#[derive(Default)]
pub(crate) struct Pool {
    idle: parking_lot::Mutex<Vec<(String, Conn)>>,
    /// Servers without the channel, and until when HTTP is used for them.
    legacy: parking_lot::Mutex<std::collections::HashMap<String, Instant>>,
}

impl Pool {
    /// Whether `addr` is known to lack the channel (for now).
    pub(crate) fn is_legacy(&self, addr: &str) -> bool {
        let mut legacy = self.legacy.lock();
        match legacy.get(addr) {
            Some(until) if Instant::now() < *until => true,
            Some(_) => {
                legacy.remove(addr);
                false
            }
            None => false,
        }
    }

    /// One forwarded write's request body to `addr`; the reply body, or why not.
    pub(crate) async fn call(
        &self,
        rpc: &RpcClient,
        addr: &str,
        body: &[u8],
        deadline: Instant,
    ) -> Result<Vec<u8>, ChannelError> {
        let taken = {
            let mut idle = self.idle.lock();
            idle.iter()
                .rposition(|(a, _)| a == addr)
                .map(|i| idle.swap_remove(i).1)
        };
        if let Some(mut io) = taken {
            // An idle connection may have been closed by a server that restarted: then the
            // write is sent again on a new one (writes are idempotent).
            if let Ok(reply) = exchange(&mut io, addr, body, deadline).await {
                self.put_back(addr, io);
                return Ok(reply);
            }
        }
        let mut io = match open(rpc, addr, WRITE_PATH, WRITE_TOKEN, deadline).await {
            Ok(io) => io,
            Err(ChannelError::Unsupported) => {
                tracing::info!(
                    server = %addr,
                    "server has no forwarding channel (an older build); using HTTP"
                );
                self.legacy
                    .lock()
                    .insert(addr.to_string(), Instant::now() + LEGACY_RETRY);
                return Err(ChannelError::Unsupported);
            }
            Err(e) => return Err(e),
        };
        let reply = exchange(&mut io, addr, body, deadline).await?;
        self.put_back(addr, io);
        Ok(reply)
    }

    fn put_back(&self, addr: &str, io: Conn) {
        let mut idle = self.idle.lock();
        if idle.len() < POOL_IDLE {
            idle.push((addr.to_string(), io));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, b"{\"v\":1}").await.unwrap();
        write_frame(&mut a, b"").await.unwrap();
        assert_eq!(
            read_frame(&mut b).await.unwrap().as_deref(),
            Some(b"{\"v\":1}".as_slice())
        );
        assert_eq!(read_frame(&mut b).await.unwrap().as_deref(), Some(&[][..]));
        // A length beyond the bound is refused before anything is allocated for it.
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = read_frame(&mut b).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A close between frames is the end, not an error; a close inside one is.
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0]).await.unwrap();
        drop(a);
        assert!(read_frame(&mut b).await.is_err());
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        assert!(read_frame(&mut b).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_server_without_the_forwarding_channel_is_remembered_as_legacy() {
        let app = axum::Router::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let rpc = super::super::network::http_client(None).unwrap();
        let pool = Pool::default();
        assert!(!pool.is_legacy(&addr));
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = pool.call(&rpc, &addr, b"{}", deadline).await;
        assert!(matches!(got, Err(ChannelError::Unsupported)));
        assert!(pool.is_legacy(&addr), "HTTP is used for it from now on");
        assert!(pool.idle.lock().is_empty());
        server.abort();
    }
}
