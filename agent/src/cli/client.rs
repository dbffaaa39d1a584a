//! The HTTP client the CLI commands use to talk to the local agent, as Consul's `api`
//! package does: the address from `-http-addr`, else `CONSUL_HTTP_ADDR`, else
//! `MUSTER_HTTP_ADDR`, else `127.0.0.1:8500`; the token from `-token`, else
//! `CONSUL_HTTP_TOKEN`, else `MUSTER_HTTP_TOKEN`, sent as `X-Consul-Token`.
//!
//! HTTPS: an `https://` address (or `CONSUL_HTTP_SSL=true`) with the CA from `-ca-file` /
//! `-ca-path` (`CONSUL_CACERT`, `CONSUL_CAPATH`; else the system's roots), a client
//! certificate from `-client-cert` / `-client-key` (`CONSUL_CLIENT_CERT`,
//! `CONSUL_CLIENT_KEY`) for agents with `verify_incoming`, and `-tls-server-name`
//! (`CONSUL_TLS_SERVER_NAME`) to check the agent's certificate for that name instead of the
//! address dialled.
//!
//! Errors read like Consul's: a non-2xx answer is `Unexpected response code: <code>
//! (<body>)`; a transport failure names the method, the URL and the cause.
//!
//! Invariants: no proxy from the environment is ever used (the agent is local), every
//! request is bounded by [`REQUEST_TIMEOUT`], and response bodies by [`MAX_BODY`].

use std::time::Duration;

use serde_json::Value;

/// The agent address when nothing else is given.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8500";
/// Longest time one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response body read.
pub const MAX_BODY: usize = 64 << 20;

/// Where the agent's API is: `http://host:port` or `https://host:port` from the flag, the
/// environment or the default (`env` looks a variable up; the binary passes `std::env::var`).
/// A bare `host:port` is HTTPS when `CONSUL_HTTP_SSL` is true, as in Consul.
pub fn resolve_http_addr(
    flag: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let raw = flag
        .map(str::to_owned)
        .or_else(|| env("CONSUL_HTTP_ADDR"))
        .or_else(|| env("MUSTER_HTTP_ADDR"))
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_HTTP_ADDR.to_owned());
    let ssl = match env("CONSUL_HTTP_SSL").as_deref().map(str::trim) {
        None | Some("") => false,
        Some(v) => {
            parse_go_bool(v).ok_or_else(|| format!("CONSUL_HTTP_SSL: {v:?} is not a boolean"))?
        }
    };
    let raw = raw.trim();
    let (scheme, host_port) = if let Some(rest) = raw.strip_prefix("http://") {
        ("http", rest)
    } else if let Some(rest) = raw.strip_prefix("https://") {
        ("https", rest)
    } else if raw.starts_with("unix://") {
        return Err(format!(
            "{raw}: unix sockets are not supported by muster yet; use host:port"
        ));
    } else if raw.contains("://") {
        return Err(format!("{raw}: unknown protocol scheme"));
    } else if ssl {
        ("https", raw)
    } else {
        ("http", raw)
    };
    let host_port = host_port.trim_end_matches('/');
    if host_port.is_empty() || host_port.contains('/') {
        return Err(format!("{raw}: expected host:port or http(s)://host:port"));
    }
    Ok(format!("{scheme}://{host_port}"))
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// TLS settings of the CLI's client (used for `https://` addresses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA certificates (PEM) to trust instead of the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// A directory of CA certificate files.
    pub ca_path: Option<std::path::PathBuf>,
    /// The client certificate, for agents with `verify_incoming`.
    pub client_cert: Option<std::path::PathBuf>,
    /// Its key.
    pub client_key: Option<std::path::PathBuf>,
    /// The name the agent's certificate must be valid for (else the address dialled).
    pub server_name: Option<String>,
}

impl ClientTls {
    /// Flags first, then `CONSUL_CACERT`, `CONSUL_CAPATH`, `CONSUL_CLIENT_CERT`,
    /// `CONSUL_CLIENT_KEY`, `CONSUL_TLS_SERVER_NAME`; empty values are unset.
    pub fn resolve(flags: ClientTls, env: impl Fn(&str) -> Option<String>) -> ClientTls {
        let path = |flag: Option<std::path::PathBuf>, var: &str| {
            flag.filter(|p| !p.as_os_str().is_empty()).or_else(|| {
                env(var)
                    .filter(|v| !v.is_empty())
                    .map(std::path::PathBuf::from)
            })
        };
        ClientTls {
            ca_file: path(flags.ca_file, "CONSUL_CACERT"),
            ca_path: path(flags.ca_path, "CONSUL_CAPATH"),
            client_cert: path(flags.client_cert, "CONSUL_CLIENT_CERT"),
            client_key: path(flags.client_key, "CONSUL_CLIENT_KEY"),
            server_name: flags
                .server_name
                .filter(|n| !n.is_empty())
                .or_else(|| env("CONSUL_TLS_SERVER_NAME").filter(|v| !v.is_empty())),
        }
    }

    /// The rustls config: the CA given (else the system's roots), the client certificate.
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, String> {
        let roots = if self.ca_file.is_some() || self.ca_path.is_some() {
            crate::tls::load_roots(self.ca_file.as_deref(), self.ca_path.as_deref())
                .map_err(|e| format!("-ca-file/-ca-path: {e}"))?
        } else {
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
            roots
        };
        let cert = match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => Some((
                crate::tls::load_certs(c).map_err(|e| format!("-client-cert: {e}"))?,
                crate::tls::load_key(k).map_err(|e| format!("-client-key: {e}"))?,
            )),
            (None, None) => None,
            _ => return Err("-client-cert and -client-key must be given together".to_owned()),
        };
        let identity = match &self.server_name {
            Some(n) => crate::tls::ServerIdentity::Name(n.clone()),
            None => crate::tls::ServerIdentity::Dialled,
        };
        crate::tls::client_config_with(roots, cert, crate::config::TlsVersion::Tls12, identity)
    }
}

/// The ACL token, when one is given (`-token`, `CONSUL_HTTP_TOKEN`, `MUSTER_HTTP_TOKEN`).
pub fn resolve_token(flag: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    flag.map(str::to_owned)
        .or_else(|| env("CONSUL_HTTP_TOKEN"))
        .or_else(|| env("MUSTER_HTTP_TOKEN"))
        .filter(|t| !t.is_empty())
}

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The agent answered with a non-2xx status.
    #[error("Unexpected response code: {status} ({body})")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The response body, as text.
        body: String,
    },
    /// The request did not get an answer.
    #[error("{method} {url}: {cause}")]
    Transport {
        /// The method.
        method: &'static str,
        /// The URL.
        url: String,
        /// What went wrong, with its causes.
        cause: String,
    },
    /// The answer was not the JSON expected.
    #[error("invalid response from {url}: {cause}")]
    Decode {
        /// The URL.
        url: String,
        /// The decoding error.
        cause: String,
    },
}

impl ApiError {
    /// The HTTP status, for a status error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An error with its whole `source()` chain (reqwest's own text is only the outermost layer).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    // Bounded: error chains are short, and this keeps a cyclic chain from looping.
    for _ in 0..8 {
        let Some(s) = source else { break };
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// A client for one agent.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client for `base` (`http://host:port`).
    pub fn new(base: String, token: Option<String>) -> Result<ApiClient, String> {
        Self::with_tls(base, token, &ClientTls::default())
    }

    /// A client for `base` (`http://` or `https://host:port`), with `tls` for HTTPS.
    pub fn with_tls(
        base: String,
        token: Option<String>,
        tls: &ClientTls,
    ) -> Result<ApiClient, String> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10));
        if base.starts_with("https://") {
            builder = builder.tls_backend_preconfigured(tls.rustls_config()?);
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", chain(&e)))?;
        Ok(ApiClient { base, token, http })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Vec<u8>, ApiError> {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            "POST" => self.http.post(&url),
            _ => self.http.put(&url),
        };
        if let Some(token) = &self.token {
            req = req.header("X-Consul-Token", token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        // reqwest's outermost text repeats the URL we already print: start at its cause.
        let transport = |e: reqwest::Error| ApiError::Transport {
            method,
            url: url.clone(),
            cause: std::error::Error::source(&e).map_or_else(|| e.to_string(), chain),
        };
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(ApiError::Decode {
                    url,
                    cause: format!("response larger than {MAX_BODY} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(ApiError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).trim_end().to_owned(),
            });
        }
        Ok(bytes)
    }

    /// `GET path` (with its query string), decoded as JSON.
    pub async fn get_json(&self, path: &str) -> Result<Value, ApiError> {
        let bytes = self.send("GET", path, None).await?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
            url: format!("{}{path}", self.base),
            cause: e.to_string(),
        })
    }

    /// `PUT path` with an optional JSON body; the answer is ignored.
    pub async fn put(&self, path: &str, body: Option<&Value>) -> Result<(), ApiError> {
        self.send("PUT", path, body).await.map(drop)
    }

    /// `DELETE path`; the answer is ignored.
    pub async fn delete(&self, path: &str) -> Result<(), ApiError> {
        self.send("DELETE", path, None).await.map(drop)
    }

    /// Any write method with a JSON body (`/v1/operator/keyring` uses POST, PUT and DELETE).
    pub async fn write(
        &self,
        method: &'static str,
        path: &str,
        body: &Value,
    ) -> Result<(), ApiError> {
        self.send(method, path, Some(body)).await.map(drop)
    }
}

/// Percent-encodes a path segment or query value (RFC 3986 unreserved characters stay).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn http_addr_resolution_order() {
        let both = env_of(&[
            ("CONSUL_HTTP_ADDR", "10.0.0.1:8500"),
            ("MUSTER_HTTP_ADDR", "10.0.0.2:8500"),
        ]);
        assert_eq!(
            resolve_http_addr(Some("127.0.0.2:9500"), &both).unwrap(),
            "http://127.0.0.2:9500",
            "the flag wins"
        );
        assert_eq!(
            resolve_http_addr(None, &both).unwrap(),
            "http://10.0.0.1:8500",
            "then CONSUL_HTTP_ADDR"
        );
        let muster = env_of(&[("MUSTER_HTTP_ADDR", "http://10.0.0.2:8501/")]);
        assert_eq!(
            resolve_http_addr(None, &muster).unwrap(),
            "http://10.0.0.2:8501",
            "then MUSTER_HTTP_ADDR"
        );
        assert_eq!(
            resolve_http_addr(None, env_of(&[])).unwrap(),
            "http://127.0.0.1:8500",
            "then the default"
        );
        assert_eq!(
            resolve_http_addr(None, env_of(&[("CONSUL_HTTP_ADDR", "")])).unwrap(),
            "http://127.0.0.1:8500",
            "an empty variable is unset"
        );
        assert_eq!(
            resolve_http_addr(Some("http://[::1]:8500"), env_of(&[])).unwrap(),
            "http://[::1]:8500"
        );
        assert_eq!(
            resolve_http_addr(Some("https://a:1"), env_of(&[])).unwrap(),
            "https://a:1"
        );
        let ssl = env_of(&[("CONSUL_HTTP_SSL", "true")]);
        assert_eq!(
            resolve_http_addr(Some("127.0.0.1:8501"), &ssl).unwrap(),
            "https://127.0.0.1:8501",
            "CONSUL_HTTP_SSL makes a bare address HTTPS"
        );
        assert_eq!(
            resolve_http_addr(Some("http://127.0.0.1:8500"), &ssl).unwrap(),
            "http://127.0.0.1:8500",
            "an explicit scheme wins"
        );
        assert!(resolve_http_addr(None, env_of(&[("CONSUL_HTTP_SSL", "yes")])).is_err());
        assert!(resolve_http_addr(Some("unix:///tmp/s"), env_of(&[])).is_err());
        assert!(resolve_http_addr(Some("ftp://a:1"), env_of(&[])).is_err());
        assert!(resolve_http_addr(Some("a:1/path"), env_of(&[])).is_err());
    }

    #[test]
    fn tls_settings_come_from_flags_then_the_environment() {
        let env = env_of(&[
            ("CONSUL_CACERT", "/env/ca.pem"),
            ("CONSUL_CLIENT_CERT", "/env/c.pem"),
            ("CONSUL_CLIENT_KEY", "/env/k.pem"),
            ("CONSUL_TLS_SERVER_NAME", "server.dc1.consul"),
        ]);
        let t = ClientTls::resolve(
            ClientTls {
                ca_file: Some("/flag/ca.pem".into()),
                ..ClientTls::default()
            },
            &env,
        );
        assert_eq!(
            t.ca_file.as_deref(),
            Some(std::path::Path::new("/flag/ca.pem"))
        );
        assert_eq!(
            t.client_cert.as_deref(),
            Some(std::path::Path::new("/env/c.pem"))
        );
        assert_eq!(
            t.client_key.as_deref(),
            Some(std::path::Path::new("/env/k.pem"))
        );
        assert_eq!(t.server_name.as_deref(), Some("server.dc1.consul"));
        assert_eq!(t.ca_path, None);
        let half = ClientTls {
            client_cert: Some("/x.pem".into()),
            ..ClientTls::default()
        };
        assert!(
            half.rustls_config()
                .unwrap_err()
                .contains("-client-cert and -client-key must be given together")
        );
    }

    #[test]
    fn token_resolution_order() {
        let env = env_of(&[("CONSUL_HTTP_TOKEN", "c"), ("MUSTER_HTTP_TOKEN", "m")]);
        assert_eq!(resolve_token(Some("f"), &env).as_deref(), Some("f"));
        assert_eq!(resolve_token(None, &env).as_deref(), Some("c"));
        let env = env_of(&[("MUSTER_HTTP_TOKEN", "m")]);
        assert_eq!(resolve_token(None, &env).as_deref(), Some("m"));
        assert_eq!(resolve_token(None, env_of(&[])), None);
        assert_eq!(resolve_token(Some(""), env_of(&[])), None);
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(encode("web-1.a_b~"), "web-1.a_b~");
        assert_eq!(encode("a b/c:d"), "a%20b%2Fc%3Ad");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[tokio::test]
    async fn errors_read_like_consuls() {
        use axum::routing::{get, put};
        let app = axum::Router::new()
            .route(
                "/v1/status/leader",
                get(|| async {
                    (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "No cluster leader",
                    )
                }),
            )
            .route(
                "/v1/agent/reload",
                put(|headers: axum::http::HeaderMap| async move {
                    match headers.get("X-Consul-Token") {
                        Some(t) if t == "secret" => (axum::http::StatusCode::OK, String::new()),
                        _ => (
                            axum::http::StatusCode::FORBIDDEN,
                            "Permission denied\n".to_owned(),
                        ),
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let _ = rustls::crypto::ring::default_provider().install_default();

        let client = ApiClient::new(format!("http://{addr}"), None).unwrap();
        let err = client.get_json("/v1/status/leader").await.unwrap_err();
        assert_eq!(err.status(), Some(500));
        assert_eq!(
            err.to_string(),
            "Unexpected response code: 500 (No cluster leader)"
        );
        let err = client.put("/v1/agent/reload", None).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unexpected response code: 403 (Permission denied)"
        );
        let with_token = ApiClient::new(format!("http://{addr}"), Some("secret".into())).unwrap();
        with_token.put("/v1/agent/reload", None).await.unwrap();
        server.abort();

        // Nobody listening: the error names the request.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = closed.local_addr().unwrap();
        drop(closed);
        let client = ApiClient::new(format!("http://{gone}"), None).unwrap();
        let err = client.get_json("/v1/agent/members").await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("GET http://{gone}/v1/agent/members: ")),
            "{text}"
        );
    }
}
