//! The Consul-compatible `/v1` HTTP API, on axum.
//!
//! Layout:
//! - `agent`: `/v1/agent/*`, answered from the local state ([`crate::local`]);
//! - `catalog`: `/v1/catalog/*` and `/v1/status/*`; `health`: `/v1/health/*`, answered from
//!   the catalog server's state machine, with blocking queries (`read`);
//! - `operator`: `/v1/operator/raft/*` (the Raft configuration, removing a peer);
//! - `query`: query-string parsing; `filter`: `?filter=` expressions; `schema`: the shapes of
//!   request and response JSON; `error`: the one mapping of failures to status codes;
//! - `listener`: the accept side, with a per-client connection limit; the same listener,
//!   router and limits serve HTTPS (`ports.https`), after a TLS handshake bounded by
//!   `limits.https_handshake_timeout` (with `tls.https.verify_incoming`, a client certificate
//!   signed by the CA is required).
//!
//! Invariants: request bodies are bounded ([`MAX_BODY`], 413 beyond) and must arrive within
//! `body_read_timeout` (408); a header block is bounded by `http_config.max_header_bytes`
//! (431) and must arrive within `header_read_timeout` (the connection is closed: slowloris);
//! connections per client IP are bounded (`limits.http_max_conns_per_client`); blocking
//! queries are bounded in number (`max_blocking_queries`, 429 beyond) and end at once when the shutdown
//! token is cancelled; serving returns after in-flight requests finish or a grace period.

mod acl;
mod agent;
mod catalog;
mod error;
mod filter;
mod health;
mod keyring;
mod listener;
mod operator;
mod query;
mod read;
mod schema;
mod token;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::handler::Handler;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, put};
use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::RuntimeConfig;
use crate::local::LocalState;
use crate::node::{AgentControl, Members, NodeIdentity};
use error::ApiError;

/// Largest request body read, in bytes.
pub const MAX_BODY: usize = 1024 * 1024;
/// How long `serve` waits for in-flight requests after shutdown.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Everything the API needs from the running agent.
#[derive(Clone)]
pub struct HttpContext {
    /// This agent.
    pub node: NodeIdentity,
    /// The configuration, swapped by the runtime on reload.
    pub config: Arc<ArcSwap<RuntimeConfig>>,
    /// Services and checks hosted here.
    pub local: LocalState,
    /// The catalog (None on a client agent without servers yet).
    pub catalog: Option<muster_server::ServerHandle>,
    /// Gossip members.
    pub members: Members,
    /// Reload and leave requests to the runtime.
    pub control: AgentControl,
    /// Cancelled at shutdown: stops accepting and ends blocking queries.
    pub shutdown: CancellationToken,
}

/// Shared state of the handlers.
pub(crate) struct Api {
    ctx: HttpContext,
    blocking: Semaphore,
    /// Token resolution (built from the configuration at start).
    acl: crate::acl::Resolver,
}

impl Api {
    fn config(&self) -> Arc<RuntimeConfig> {
        self.ctx.config.load_full()
    }

    /// The catalog, or Consul's "No known Consul servers".
    fn catalog(&self) -> Result<&muster_server::ServerHandle, ApiError> {
        self.ctx.catalog.as_ref().ok_or_else(ApiError::no_servers)
    }

    /// Refuses `?dc=` other than this agent's datacenter (no WAN federation).
    fn check_dc(&self, q: &query::Query) -> Result<(), ApiError> {
        match q.non_empty("dc") {
            Some(dc) if !dc.eq_ignore_ascii_case(&self.ctx.node.datacenter) => {
                Err(ApiError::no_path_to_datacenter())
            }
            _ => Ok(()),
        }
    }
}

/// Reads a request body up to [`MAX_BODY`] bytes, within `body_read_timeout`.
pub(crate) async fn read_body(api: &Api, body: Body) -> Result<Bytes, ApiError> {
    let limit = api.config().http.body_read_timeout;
    let read = tokio::time::timeout(limit, axum::body::to_bytes(body, MAX_BODY));
    let Ok(read) = read.await else {
        return Err(ApiError::RequestTimeout(limit));
    };
    read.map_err(|e| {
        let limit = std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
        .any(|e| e.to_string().contains("length limit exceeded"));
        if limit {
            ApiError::PayloadTooLarge { limit: MAX_BODY }
        } else {
            ApiError::bad(format!("Request decode failed: {e}"))
        }
    })
}

/// Decodes a JSON body as Go's decoder reports it (`EOF` for an empty body).
/// The request bodies of the register endpoints decoded and validated as the handlers do
/// (`/v1/agent/service/register`, `/v1/agent/check/register`, `/v1/catalog/register`,
/// `/v1/catalog/deregister`): the fuzzing entry point (`fuzz/`). Returns how many decoded.
#[doc(hidden)]
pub fn decode_register_bodies(bytes: &[u8]) -> usize {
    use crate::config::{CheckDefinition, ServiceDefinition};
    let Ok(value) = decode_json(bytes) else {
        return 0;
    };
    let mut ok = 0;
    ok += usize::from(ServiceDefinition::from_api_json(&value).is_ok());
    ok += usize::from(CheckDefinition::from_api_json(&value).is_ok());
    for command in catalog::decode_commands(bytes) {
        ok += usize::from(command.validate().is_ok());
    }
    ok
}

pub(crate) fn decode_json(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad("Request decode failed: EOF"));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("Request decode failed: {e}")))
}

/// A JSON response; `?pretty` gives 4-space indentation and a trailing newline, as Consul.
pub(crate) fn json<T: serde::Serialize + ?Sized>(value: &T, pretty: bool) -> Response {
    let body = if pretty {
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        match value.serialize(&mut ser) {
            Ok(()) => {
                out.push(b'\n');
                Ok(out)
            }
            Err(e) => Err(e),
        }
    } else {
        serde_json::to_vec(value)
    };
    match body {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("failed to encode the response: {e}")).into_response(),
    }
}

/// The 200 with an empty body of agent writes.
pub(crate) fn empty_ok() -> Response {
    StatusCode::OK.into_response()
}

/// A route that takes one method; OPTIONS lists it and anything else is a 405 with `Allow`,
/// as Consul's `wrap` does.
fn endpoint<H, T>(method: Method, handler: H) -> MethodRouter<Arc<Api>>
where
    H: Handler<T, Arc<Api>>,
    T: 'static,
{
    let (allow, route): (&'static str, _) = if method == Method::PUT {
        ("OPTIONS,PUT", put(handler))
    } else if method == Method::DELETE {
        ("OPTIONS,DELETE", delete(handler))
    } else {
        ("OPTIONS,GET", get(handler))
    };
    route
        .options(move || async move {
            let mut r = StatusCode::OK.into_response();
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            r
        })
        .fallback(move |m: Method| async move {
            ApiError::MethodNotAllowed {
                method: m.to_string(),
                allow,
            }
        })
}

/// 404 for every path without an endpoint, with Consul's texts.
async fn unknown_path(request: Request) -> Response {
    let path = request.uri().path();
    if path == "/" {
        return (
            StatusCode::OK,
            "muster agent: no UI is served here; the HTTP API is under /v1/",
        )
            .into_response();
    }
    let text = if path.contains("/v1/") {
        error::UNKNOWN_ENDPOINT
    } else {
        error::NOT_AN_API_PATH
    };
    ApiError::NotFound(text.to_owned()).into_response()
}

fn router(api: Arc<Api>) -> Router {
    let router = Router::new();
    let router = agent::routes(router);
    let router = catalog::routes(router);
    let router = health::routes(router);
    let router = operator::routes(router);
    let router = acl::routes(router);
    let router = keyring::routes(router);
    router.fallback(unknown_path).with_state(api)
}

/// TLS on an API listener (`ports.https`).
#[derive(Clone)]
pub struct HttpsSettings {
    /// The handshake side: certificate, key, client verification (`tls.https`).
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Time a client has to complete the handshake (`limits.https_handshake_timeout`).
    pub handshake_timeout: Duration,
}

/// Serves the API on `listener` (over TLS with `tls`) until `ctx.shutdown` is cancelled;
/// blocking queries watch the token so draining is quick; returns after in-flight requests
/// finish (bounded).
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: HttpContext,
    tls: Option<HttpsSettings>,
) -> std::io::Result<()> {
    let shutdown = ctx.shutdown.clone();
    let http = ctx.config.load().http.clone();
    let mut listener = listener::LimitedListener::new(listener, http.max_conns_per_client);
    let config = ctx.config.load_full();
    let acl = crate::acl::Resolver::new(
        config.acl.clone(),
        &ctx.node.datacenter,
        &ctx.node.name,
        ctx.catalog.clone(),
    );
    let api = Arc::new(Api {
        ctx,
        blocking: Semaphore::new(http.max_blocking_queries),
        acl,
    });
    let app = router(api);
    let mut conn = hyper::server::conn::http1::Builder::new();
    conn.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(http.header_read_timeout)
        .max_header_size(http.max_header_bytes)
        // The read buffer must hold the largest header block, and hyper wants at least 8 KiB.
        .max_buf_size(http.max_header_bytes.max(8192) + 8192);
    let conns = tokio_util::task::TaskTracker::new();
    while let Some((stream, peer)) = shutdown
        .run_until_cancelled(axum::serve::Listener::accept(&mut listener))
        .await
    {
        let (app, conn, shutdown, tls) = (app.clone(), conn.clone(), shutdown.clone(), tls.clone());
        conns.spawn(async move {
            let Some(tls) = tls else {
                serve_connection(stream, app, &conn, &shutdown).await;
                return;
            };
            // The connection slot is held during the handshake, which is bounded: a client
            // that says nothing cannot keep it.
            let handshake = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                h = tokio::time::timeout(tls.handshake_timeout, tls.acceptor.accept(stream)) => h,
            };
            match handshake {
                Ok(Ok(stream)) => serve_connection(stream, app, &conn, &shutdown).await,
                Ok(Err(e)) => tracing::debug!(
                    client = %peer,
                    error = %crate::tls::error_chain(&e),
                    "HTTPS handshake failed"
                ),
                Err(_) => tracing::debug!(
                    client = %peer,
                    "HTTPS handshake not completed within {:?} (limits.https_handshake_timeout)",
                    tls.handshake_timeout
                ),
            }
        });
    }
    conns.close();
    if tokio::time::timeout(DRAIN_GRACE, conns.wait())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still in flight after {DRAIN_GRACE:?}; closing");
    }
    Ok(())
}

/// Serves one HTTP/1.1 connection (plain or TLS) with `app` until it ends; on shutdown the
/// request in flight finishes, then the connection closes (keep-alive ends). The API ports
/// and the server RPC port both serve their connections through this.
pub(crate) async fn serve_connection<I>(
    io: I,
    app: Router,
    conn: &hyper::server::conn::http1::Builder,
    shutdown: &CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    // Upgrades: the RPC port's raft append channel (muster_server's `raft::channel`).
    let serving = conn
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .with_upgrades();
    let mut serving = std::pin::pin!(serving);
    match shutdown.run_until_cancelled(serving.as_mut()).await {
        Some(Ok(())) => {}
        // Header timeouts, oversized headers (431 sent), resets.
        Some(Err(e)) => tracing::debug!(error = %e, "HTTP connection ended"),
        None => {
            serving.as_mut().graceful_shutdown();
            let _ = serving.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_json_is_indented_with_a_newline() {
        let r = json(&serde_json::json!({"a": [1]}), true);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let body = rt
            .block_on(axum::body::to_bytes(r.into_body(), 1024))
            .unwrap();
        assert_eq!(&body[..], b"{\n    \"a\": [\n        1\n    ]\n}\n");
    }

    #[test]
    fn empty_bodies_decode_as_eof() {
        assert_eq!(
            decode_json(b"  ").unwrap_err(),
            ApiError::bad("Request decode failed: EOF")
        );
        assert!(
            decode_json(b"{")
                .unwrap_err()
                .to_string()
                .starts_with("Request decode failed: ")
        );
    }

    #[test]
    fn fuzz_corpus_and_regressions_of_register_bodies() {
        let inputs = crate::fuzz_inputs("register_body");
        assert!(!inputs.is_empty(), "the seed corpus is there");
        let decoded: usize = inputs.iter().map(|(_, d)| decode_register_bodies(d)).sum();
        assert!(decoded > 0, "the seeds are real bodies");
    }
}
