//! The server RPC port: the catalog server's axum router over HTTP/1.1, in plain text or TLS
//! on the same port.
//!
//! Consul multiplexes its RPC port on the first byte of a connection; so does muster: with
//! `tls.internal_rpc` cert and key, a connection whose first byte is a TLS handshake record
//! (0x16, the ClientHello) is served over TLS, anything else as plain HTTP, which is refused
//! when `verify_incoming` is on. A refused plaintext client gets one short `403` naming the
//! reason (so its own log says why) and the connection is closed; the server logs one warning
//! per peer address per [`WARN_EVERY`]. With `verify_incoming` the TLS handshake also
//! requires a client certificate signed by the CA.
//!
//! Invariants: the first byte and the TLS handshake must arrive within
//! `limits.rpc_handshake_timeout` (a silent client cannot hold a task); nothing blocks the
//! accept loop; shutdown stops accepting at once and lets connections finish for at most
//! [`DRAIN_GRACE`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// At most one warning per peer address this often.
pub const WARN_EVERY: Duration = Duration::from_secs(10);
/// How long shutdown waits for RPCs in flight.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of file descriptors, ...).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Addresses remembered by the warning limiter before old entries are dropped.
const LIMITER_ENTRIES: usize = 4096;

/// What a refused plaintext client reads.
pub const PLAINTEXT_REFUSED: &str = "this server requires TLS on its RPC port \
     (tls.internal_rpc.verify_incoming): connect with verify_outgoing and a certificate signed \
     by its CA";

/// TLS on the RPC port.
#[derive(Clone)]
pub struct RpcTlsListener {
    /// The handshake side (certificate, key, client verification).
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Plain-text connections are refused.
    pub verify_incoming: bool,
}

/// One warning per peer address per [`WARN_EVERY`].
#[derive(Default)]
struct WarnLimiter {
    last: Mutex<HashMap<IpAddr, Instant>>,
}

impl WarnLimiter {
    /// True when a warning about `ip` may be logged now.
    fn allow(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock();
        if last.len() >= LIMITER_ENTRIES {
            last.retain(|_, t| now.duration_since(*t) < WARN_EVERY);
            if last.len() >= LIMITER_ENTRIES {
                last.clear();
            }
        }
        match last.get(&ip) {
            Some(t) if now.duration_since(*t) < WARN_EVERY => false,
            _ => {
                last.insert(ip, now);
                true
            }
        }
    }

    fn warn(&self, peer: SocketAddr, what: &str, reason: &str) {
        if self.allow(peer.ip()) {
            tracing::warn!(peer = %peer, reason, "server RPC port: {what}");
        } else {
            tracing::debug!(peer = %peer, reason, "server RPC port: {what}");
        }
    }
}

struct Shared {
    router: axum::Router,
    tls: Option<RpcTlsListener>,
    handshake_timeout: Duration,
    limiter: WarnLimiter,
    stop: CancellationToken,
}

/// Serves `router` on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<RpcTlsListener>,
    handshake_timeout: Duration,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        router,
        tls,
        handshake_timeout,
        limiter: WarnLimiter::default(),
        stop: stop.clone(),
    });
    let conns = tokio_util::task::TaskTracker::new();
    while let Some(accepted) = stop.run_until_cancelled(listener.accept()).await {
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "server RPC accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        conns.spawn(connection(shared.clone(), stream, peer));
    }
    conns.close();
    if tokio::time::timeout(DRAIN_GRACE, conns.wait())
        .await
        .is_err()
    {
        tracing::debug!("server RPCs still in flight after {DRAIN_GRACE:?}; closing");
    }
    Ok(())
}

/// One connection: sorted by its first byte, then served.
async fn connection(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let Some(tls) = &shared.tls else {
        serve_http(&shared, stream).await;
        return;
    };
    let deadline = Instant::now() + shared.handshake_timeout;
    let mut first = [0u8; 1];
    let peeked = tokio::select! {
        biased;
        () = shared.stop.cancelled() => return,
        p = tokio::time::timeout_at(deadline, stream.peek(&mut first)) => p,
    };
    match peeked {
        Ok(Ok(1..)) => {}
        // Closed, failed, or silent for the whole handshake timeout.
        Ok(_) => return,
        Err(_) => {
            shared.limiter.warn(
                peer,
                "connection closed",
                &format!("nothing received within {:?}", shared.handshake_timeout),
            );
            return;
        }
    }
    if first[0] == TLS_HANDSHAKE_RECORD {
        let handshake = tokio::select! {
            biased;
            () = shared.stop.cancelled() => return,
            h = tokio::time::timeout_at(deadline, tls.acceptor.accept(stream)) => h,
        };
        match handshake {
            Ok(Ok(tls_stream)) => serve_http(&shared, tls_stream).await,
            Ok(Err(e)) => {
                shared
                    .limiter
                    .warn(peer, "TLS handshake failed", &crate::tls::error_chain(&e));
            }
            Err(_) => shared.limiter.warn(
                peer,
                "TLS handshake failed",
                &format!(
                    "not completed within {:?} (limits.rpc_handshake_timeout)",
                    shared.handshake_timeout
                ),
            ),
        }
    } else if tls.verify_incoming {
        shared.limiter.warn(
            peer,
            "plaintext connection refused",
            "tls.internal_rpc.verify_incoming requires TLS with a client certificate",
        );
        refuse_plaintext(stream, shared.handshake_timeout).await;
    } else {
        serve_http(&shared, stream).await;
    }
}

/// Answers one `403` with [`PLAINTEXT_REFUSED`] and closes. The request head is read first
/// (bounded) so that closing does not reset the connection before the client reads the answer.
async fn refuse_plaintext(mut stream: TcpStream, bound: Duration) {
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(bound, stream.read(&mut buf)).await;
    let response = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{PLAINTEXT_REFUSED}",
        PLAINTEXT_REFUSED.len()
    );
    let _ = tokio::time::timeout(bound, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Drain what the client still sends until it closes (bounded by the timeout).
        while stream.read(&mut buf).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// Serves HTTP/1.1 on one connection until it closes or shutdown (the request in flight
/// finishes first), as the API ports do.
async fn serve_http<I>(shared: &Shared, io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new();
    crate::http::serve_connection(io, shared.router.clone(), &conn, &shared.stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tls::fixtures;
    use crate::config::{TlsInterface, TlsVersion};
    use crate::tls::{ServerIdentity, client_config_with, load_certs, load_key, load_roots};

    /// A CA with a server and a client certificate in a temp dir.
    fn certs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fixtures::ca(dir.path());
        fixtures::cert(dir.path(), true);
        fixtures::cert(dir.path(), false);
        dir
    }

    /// Serves a one-route router on 127.0.0.1 with the server certificate.
    async fn start(
        dir: &std::path::Path,
        verify_incoming: bool,
    ) -> (SocketAddr, CancellationToken) {
        let iface = TlsInterface {
            ca_file: Some(dir.join("consul-agent-ca.pem")),
            cert_file: Some(dir.join("dc1-server-consul-0.pem")),
            key_file: Some(dir.join("dc1-server-consul-0-key.pem")),
            verify_incoming,
            ..TlsInterface::default()
        };
        let config = crate::tls::server_config(&iface).unwrap();
        let tls = RpcTlsListener {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            verify_incoming,
        };
        let router = axum::Router::new().route("/ping", axum::routing::get(|| async { "pong" }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            router,
            Some(tls),
            Duration::from_secs(2),
            stop.clone(),
        ));
        (addr, stop)
    }

    /// GET /ping over http (no TLS) or https (with or without the client certificate).
    async fn ping(
        dir: &std::path::Path,
        addr: SocketAddr,
        tls: Option<bool>,
    ) -> Result<String, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10));
        let scheme = match tls {
            None => "http",
            Some(with_cert) => {
                let roots = load_roots(Some(&dir.join("consul-agent-ca.pem")), None).unwrap();
                let cert = with_cert.then(|| {
                    (
                        load_certs(&dir.join("dc1-client-consul-0.pem")).unwrap(),
                        load_key(&dir.join("dc1-client-consul-0-key.pem")).unwrap(),
                    )
                });
                let config = client_config_with(
                    roots,
                    cert,
                    TlsVersion::Tls12,
                    ServerIdentity::Name("server.dc1.consul".into()),
                )
                .unwrap();
                builder = builder.tls_backend_preconfigured(config);
                "https"
            }
        };
        let resp = builder
            .build()
            .unwrap()
            .get(format!("{scheme}://{addr}/ping"))
            .send()
            .await
            .map_err(|e| crate::tls::error_chain(&e))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| e.to_string())?;
        Ok(format!("{status} {body}"))
    }

    #[tokio::test]
    async fn one_port_serves_tls_and_plaintext_unless_verify_incoming() {
        let dir = certs();
        let (addr, stop) = start(dir.path(), false).await;
        assert_eq!(ping(dir.path(), addr, None).await.unwrap(), "200 pong");
        assert_eq!(
            ping(dir.path(), addr, Some(false)).await.unwrap(),
            "200 pong"
        );
        assert_eq!(
            ping(dir.path(), addr, Some(true)).await.unwrap(),
            "200 pong"
        );
        stop.cancel();

        let (addr, stop) = start(dir.path(), true).await;
        let plain = ping(dir.path(), addr, None).await.unwrap();
        assert_eq!(plain, format!("403 {PLAINTEXT_REFUSED}"));
        let no_cert = ping(dir.path(), addr, Some(false)).await;
        assert!(no_cert.is_err(), "{no_cert:?}");
        assert_eq!(
            ping(dir.path(), addr, Some(true)).await.unwrap(),
            "200 pong"
        );
        stop.cancel();
    }

    #[test]
    fn warnings_are_limited_per_address() {
        let limiter = WarnLimiter::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(limiter.allow(a));
        assert!(
            !limiter.allow(a),
            "a second warning within the interval is dropped"
        );
        assert!(limiter.allow(b), "another address has its own budget");
    }
}
