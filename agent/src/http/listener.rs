//! The accept side of the API: a TCP listener that bounds connections per client IP
//! (`limits.http_max_conns_per_client`, Consul's default 200).
//!
//! Invariant: a client's count is the number of its connections alive right now; each
//! accepted stream carries a guard that gives its slot back when the stream is dropped.
//! Connections beyond the limit are closed at once.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Pause after a failed accept (out of file descriptors, ...), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A TCP listener with a per-client connection limit (0: unlimited).
pub(crate) struct LimitedListener {
    inner: TcpListener,
    per_client: usize,
    counts: Counts,
}

impl LimitedListener {
    pub(crate) fn new(inner: TcpListener, per_client: u32) -> Self {
        LimitedListener {
            inner,
            per_client: usize::try_from(per_client).unwrap_or(usize::MAX),
            counts: Arc::default(),
        }
    }

    fn admit(&self, ip: IpAddr) -> Option<Slot> {
        let mut counts = self.counts.lock();
        let count = counts.entry(ip).or_insert(0);
        if self.per_client != 0 && *count >= self.per_client {
            return None;
        }
        *count += 1;
        Some(Slot {
            ip,
            counts: self.counts.clone(),
        })
    }
}

/// One client's connection slot, released on drop.
struct Slot {
    ip: IpAddr,
    counts: Counts,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// An accepted connection holding its slot.
pub(crate) struct CountedStream {
    stream: TcpStream,
    _slot: Slot,
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CountedStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let Some(slot) = self.admit(addr.ip()) else {
                        tracing::debug!(client = %addr.ip(), "too many HTTP connections from this client; closing");
                        continue;
                    };
                    // Small JSON answers: do not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    return (
                        CountedStream {
                            stream,
                            _slot: slot,
                        },
                        addr,
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener as _;
    use tokio::io::AsyncReadExt as _;

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_and_slots_come_back() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut listener = LimitedListener::new(tcp, 1);
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let (first, _) = listener.accept().await;
        // A second connection from the same IP is closed at once...
        let mut c2 = TcpStream::connect(addr).await.unwrap();
        let accepting = tokio::spawn(async move {
            let (s, _) = listener.accept().await;
            (s, listener)
        });
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(10), c2.read(&mut buf))
            .await
            .expect("the refused connection is closed");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        // ...and once the first closes, the next one is accepted.
        drop(first);
        let _c3 = TcpStream::connect(addr).await.unwrap();
        let (third, listener) = tokio::time::timeout(Duration::from_secs(10), accepting)
            .await
            .expect("accepted after a slot freed")
            .unwrap();
        assert_eq!(listener.counts.lock().get(&addr.ip()), Some(&1));
        drop(third);
        assert!(listener.counts.lock().is_empty());
    }
}
