//! Raft's AppendEntries over one long-lived connection per follower.
//!
//! Every write costs each follower two AppendEntries (the entry, then the new commit index),
//! and as separate HTTP exchanges through reqwest and hyper each one was several task hops,
//! a header block and a connection-pool round on both sides. Here the leader's connection to
//! a follower asks once for an HTTP/1.1 upgrade on the RPC port (`POST` [`PATH`] with
//! `Upgrade:` [`TOKEN`], answered `101`; through TLS when the port speaks TLS), and then
//! sends requests as frames on the same socket: a 4-byte big-endian length and the same JSON
//! envelope the HTTP path carries; each answer is a frame with the HTTP path's reply body.
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

use super::network::MAX_RPC_BODY;
use super::server::Inner;

/// The upgrade request's path on the RPC port.
pub(crate) const PATH: &str = "/raft/v1/append-stream";
/// The protocol named in `Upgrade:`.
pub(crate) const TOKEN: &str = "muster-raft-append/1";
/// How long a connection keeps to plain HTTP after a server said it has no channel.
pub(crate) const LEGACY_RETRY: Duration = Duration::from_secs(60);

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

/// The follower's side: answers the upgrade, then serves frames until the leader closes the
/// connection or this server stops.
pub(crate) async fn upgrade(State(inner): State<Arc<Inner>>, mut req: Request) -> Response {
    let asked = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(TOKEN.as_bytes()));
    if !asked {
        return (
            StatusCode::BAD_REQUEST,
            format!("this path needs `Upgrade: {TOKEN}`"),
        )
            .into_response();
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => serve(inner, hyper_util::rt::TokioIo::new(upgraded)).await,
            Err(e) => tracing::debug!(error = %e, "raft append channel: upgrade failed"),
        }
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [(header::UPGRADE, TOKEN), (header::CONNECTION, "upgrade")],
    )
        .into_response()
}

async fn serve<I: AsyncRead + AsyncWrite + Unpin>(inner: Arc<Inner>, mut io: I) {
    let stop = inner.stopping().clone();
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
                tracing::debug!(error = %e, "raft append channel: bad frame; closing");
                return;
            }
        };
        let reply = match super::rpc::append_reply(&inner, &body).await {
            Ok(reply) => reply,
            Err(reason) => {
                tracing::debug!(%reason, "raft append channel: bad request; closing");
                return;
            }
        };
        if let Err(e) = write_frame(&mut io, &reply).await {
            tracing::debug!(error = %e, "raft append channel: cannot answer; closing");
            return;
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
}
