//! HTTP/HTTPS probe and the shared clients it runs on.
//!
//! Clients are shared per *TLS mode* (skip verification or not, the `tls_server_name` to
//! verify against, redirects followed or not), never per check: thousands of HTTP checks
//! use a handful of clients. Each client has keep-alive off (`pool_max_idle_per_host(0)`,
//! as Consul disables keep-alives so a stale pooled connection cannot fail a check), no
//! environment proxy, and Go's redirect limit ([`MAX_REDIRECTS`] requests per chain).
//!
//! TLS is rustls with the ring provider. Trust anchors are the system's (loaded once,
//! lazily, on the first HTTPS-capable client) plus any the runner was configured with.
//! `tls_server_name` replaces the URL host when the certificate is verified; the SNI sent
//! is still the URL's host, because reqwest has no per-connection SNI override (Go sends
//! the configured name as SNI too; see the crate docs).
//!
//! Output and error texts are Consul's: `HTTP GET <url>: 200 OK Output: <body>` and Go's
//! `url.Error` forms such as `Get "<url>": dial tcp 127.0.0.1:80: connect: connection refused`.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::io;
use std::sync::{Arc, Once};
use std::time::Duration;

use reqwest::header::{ACCEPT, HOST, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use reqwest::{Client, Method, StatusCode, Url};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::time::{Instant, timeout_at};

use super::ProbeResult;
use super::tcp::lookup_error_text;
use crate::definition::{HttpCheck, MAX_REDIRECTS};
use crate::gostyle;
use crate::output::decode_head;
use crate::status::HealthStatus;

/// Consul's `User-Agent` for HTTP checks.
const USER_AGENT_VALUE: &str = "Consul Health Check";
/// Consul's default `Accept` for HTTP checks.
const ACCEPT_VALUE: &str = "text/plain, text/*, */*";
/// Bound on cached clients; distinct `tls_server_name`s are the only way to grow past the
/// four base modes, and clearing just means rebuilding on demand.
const MAX_CLIENTS: usize = 64;

/// Installs ring as rustls' process default, once. reqwest's `rustls-no-provider` build
/// panics in `build()` without a default provider; installing it is idempotent here and
/// harmless if the agent (or a test) installed it first.
pub(crate) fn install_ring_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means some provider is already installed, which is all we need.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ClientKey {
    skip_verify: bool,
    server_name: Option<String>,
    follow_redirects: bool,
}

/// The scheduler-owned cache of HTTP clients, one per TLS mode.
pub(crate) struct HttpClients {
    extra_roots: Vec<Vec<u8>>,
    roots: Option<Arc<RootCertStore>>,
    clients: HashMap<ClientKey, Client>,
}

impl HttpClients {
    /// `extra_roots` are DER certificates trusted in addition to the system's.
    pub(crate) fn new(extra_roots: Vec<Vec<u8>>) -> Self {
        HttpClients {
            extra_roots,
            roots: None,
            clients: HashMap::new(),
        }
    }

    /// The client for this check's TLS mode, built on first use. The error is the text
    /// reported as the check's (critical) output.
    pub(crate) fn client_for(&mut self, check: &HttpCheck) -> Result<Client, String> {
        let server_name = check
            .tls_server_name
            .clone()
            .filter(|n| !n.is_empty() && !check.tls_skip_verify);
        let key = ClientKey {
            skip_verify: check.tls_skip_verify,
            server_name,
            follow_redirects: !check.disable_redirects,
        };
        if let Some(client) = self.clients.get(&key) {
            return Ok(client.clone());
        }
        if self.clients.len() >= MAX_CLIENTS {
            self.clients.clear();
        }
        let client = self.build(&key)?;
        self.clients.insert(key, client.clone());
        Ok(client)
    }

    fn build(&mut self, key: &ClientKey) -> Result<Client, String> {
        install_ring_provider();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = if key.skip_verify {
            Arc::new(SkipVerification(Arc::clone(&provider)))
        } else {
            let roots = self.roots();
            let base: Arc<dyn ServerCertVerifier> = if roots.is_empty() {
                Arc::new(NoTrustAnchors(Arc::clone(&provider)))
            } else {
                WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                    .build()
                    .map_err(|e| format!("tls: {e}"))?
            };
            match &key.server_name {
                Some(name) => {
                    let name = ServerName::try_from(name.clone())
                        .map_err(|e| format!("tls: invalid server name {name:?}: {e}"))?;
                    Arc::new(VerifyAs { inner: base, name })
                }
                None => base,
            }
        };
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let redirects = if key.follow_redirects {
            // reqwest counts redirects, Go counts requests in the chain: nine redirects
            // make the ten requests after which Go stops.
            reqwest::redirect::Policy::limited(MAX_REDIRECTS - 1)
        } else {
            reqwest::redirect::Policy::none()
        };
        Client::builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .pool_max_idle_per_host(0)
            .redirect(redirects)
            .build()
            .map_err(|e| format!("building HTTP client: {e}"))
    }

    /// System roots plus the configured ones, loaded on first need. Reading the system
    /// store is a one-off few milliseconds of file I/O on the scheduler task.
    fn roots(&mut self) -> Arc<RootCertStore> {
        if let Some(roots) = &self.roots {
            return Arc::clone(roots);
        }
        let mut store = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for err in &native.errors {
            tracing::warn!(error = %err, "could not load a system CA certificate for HTTPS checks");
        }
        store.add_parsable_certificates(native.certs);
        for der in &self.extra_roots {
            if let Err(err) = store.add(CertificateDer::from(der.clone())) {
                tracing::warn!(error = %err, "ignoring an invalid extra CA certificate for HTTPS checks");
            }
        }
        let roots = Arc::new(store);
        self.roots = Some(Arc::clone(&roots));
        roots
    }
}

/// One HTTP check run.
pub(crate) async fn probe(
    client: &Client,
    check: &HttpCheck,
    timeout: Duration,
    max: usize,
) -> ProbeResult {
    let method_text = check.effective_method();
    let op = gostyle::url_error_op(method_text);
    let url = match Url::parse(&check.url) {
        Ok(url) => url,
        Err(e) => return ProbeResult::critical(format!("parse {:?}: {e}", check.url)),
    };
    if !matches!(url.scheme(), "http" | "https") {
        return ProbeResult::critical(format!(
            "{op} {:?}: unsupported protocol scheme {:?}",
            check.url,
            url.scheme()
        ));
    }
    // Validated when the check was added; GET is only a defensive fallback.
    let method = Method::from_bytes(method_text.as_bytes()).unwrap_or(Method::GET);
    let mut request = client
        .request(method, url.clone())
        .timeout(timeout)
        .headers(request_headers(check));
    if !check.body.is_empty() {
        request = request.body(check.body.clone());
    }

    // Like Go's Client.Timeout, the deadline covers the response body as well.
    let deadline = Instant::now() + timeout;
    let response = match timeout_at(deadline, request.send()).await {
        Err(_) => return ProbeResult::critical(timeout_text(&op, &check.url)),
        Ok(Err(e)) => return ProbeResult::critical(request_error_text(&op, check, &url, &e)),
        Ok(Ok(response)) => response,
    };
    let code = response.status();
    let body = read_body(response, max, deadline).await;
    let output = format!(
        "HTTP {method_text} {}: {} Output: {body}",
        check.url,
        status_text(code)
    );
    ProbeResult {
        status: status_for(code),
        output,
    }
}

/// Consul's mapping: any 2xx passes, 429 Too Many Requests warns, the rest is critical.
fn status_for(code: StatusCode) -> HealthStatus {
    if code.is_success() {
        HealthStatus::Passing
    } else if code == StatusCode::TOO_MANY_REQUESTS {
        HealthStatus::Warning
    } else {
        HealthStatus::Critical
    }
}

/// Go's `resp.Status`: `200 OK`.
fn status_text(code: StatusCode) -> String {
    match code.canonical_reason() {
        Some(reason) => format!("{} {reason}", code.as_u16()),
        None => code.as_u16().to_string(),
    }
}

/// The configured headers plus Consul's defaults. A `Host` header becomes the request's
/// host (its first value, as Go's `req.Host`); invalid entries were rejected at add time.
fn request_headers(check: &HttpCheck) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, values) in &check.headers {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        let mut values = values.iter().filter_map(|v| HeaderValue::from_str(v).ok());
        if name == HOST {
            if let Some(host) = values.next() {
                headers.insert(HOST, host);
            }
            continue;
        }
        for value in values {
            headers.append(name.clone(), value);
        }
    }
    if !headers.contains_key(USER_AGENT) {
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    }
    if !headers.contains_key(ACCEPT) {
        headers.insert(ACCEPT, HeaderValue::from_static(ACCEPT_VALUE));
    }
    headers
}

/// Reads at most `max` bytes of the body, then drops the connection: a health endpoint that
/// streams forever costs one buffer, not the whole timeout. Read errors end the body early
/// (Consul logs them and still reports the status).
async fn read_body(mut response: reqwest::Response, max: usize, deadline: Instant) -> String {
    let mut body = Vec::new();
    while body.len() < max {
        match timeout_at(deadline, response.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                let take = chunk.len().min(max - body.len());
                body.extend_from_slice(&chunk[..take]);
            }
            _ => break,
        }
    }
    decode_head(&body, max)
}

fn timeout_text(op: &str, url: &str) -> String {
    format!(
        "{op} {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
    )
}

/// Go's `*url.Error` text for a failed request.
fn request_error_text(op: &str, check: &HttpCheck, url: &Url, err: &reqwest::Error) -> String {
    if err.is_redirect() {
        // The last URL requested; Go names the one it refused to request next.
        let last = err.url().map_or(check.url.as_str(), Url::as_str);
        return format!("{op} {last:?}: stopped after {MAX_REDIRECTS} redirects");
    }
    if err.is_timeout() {
        return timeout_text(op, &check.url);
    }
    let chain = error_chain(err);
    let detail = if let Some(tls) = chain.iter().find_map(|e| e.downcast_ref::<rustls::Error>()) {
        tls_error_text(tls)
    } else if err.is_connect() {
        connect_error_text(url, &chain)
    } else if chain.iter().any(|e| {
        e.to_string()
            .contains("connection closed before message completed")
    }) {
        // hyper's IncompleteMessage is what Go reports as a bare EOF.
        "EOF".to_owned()
    } else {
        chain
            .iter()
            .skip(1)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ")
    };
    format!("{op} {:?}: {detail}", check.url)
}

/// Go's dial error for the URL's authority (the resolved IP when the URL has one; the host
/// name otherwise, since reqwest does not say which address failed).
fn connect_error_text(url: &Url, chain: &[&(dyn StdError + 'static)]) -> String {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    let io_err = chain.iter().find_map(|e| e.downcast_ref::<io::Error>());
    // hyper-util's connect error says "dns error" when resolution, not the connect, failed.
    if chain.iter().any(|e| e.to_string().starts_with("dns error")) {
        let reason = io_err.map_or_else(|| "no such host".to_owned(), lookup_error_text);
        return format!(
            "dial tcp: lookup {}: {reason}",
            host.trim_matches(['[', ']'])
        );
    }
    match io_err {
        Some(e) if e.kind() == io::ErrorKind::TimedOut => {
            format!("dial tcp {host}:{port}: i/o timeout")
        }
        Some(e) => format!(
            "dial tcp {host}:{port}: connect: {}",
            gostyle::errno_text(e)
        ),
        None => format!("dial tcp {host}:{port}: connect failed"),
    }
}

/// Every error in the chain, including the payload of `io::Error`s (whose `source()` skips
/// it), bounded in length.
fn error_chain<'a>(err: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut chain = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        chain.push(e);
        if chain.len() >= 16 {
            break;
        }
        next = match e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    chain
}

/// Go's `crypto/tls` and `crypto/x509` texts for the failures users meet.
fn tls_error_text(err: &rustls::Error) -> String {
    let x509 = |text: String| format!("tls: failed to verify certificate: x509: {text}");
    match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => {
                x509("certificate signed by unknown authority".to_owned())
            }
            CertificateError::NotValidForNameContext {
                expected,
                presented,
            } => x509(format!(
                "certificate is valid for {}, not {}",
                presented
                    .iter()
                    .map(|name| presented_name_text(name))
                    .collect::<Vec<_>>()
                    .join(", "),
                server_name_text(expected)
            )),
            CertificateError::NotValidForName => {
                x509("certificate is not valid for the requested name".to_owned())
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => {
                x509("certificate has expired or is not yet valid".to_owned())
            }
            other => x509(lower(&format!("{other:?}"))),
        },
        rustls::Error::AlertReceived(alert) => {
            format!("remote error: tls: {}", lower(&format!("{alert:?}")))
        }
        other => format!("tls: {other}"),
    }
}

fn server_name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(dns) => dns.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// webpki describes certificate names as `DnsName("db.test")` / `IpAddress(10.0.0.1)`;
/// Go lists the bare names.
fn presented_name_text(name: &str) -> &str {
    name.strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            name.strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        })
        .unwrap_or(name)
}

/// `HandshakeFailure` → `handshake failure`, the way Go names alerts and x509 errors.
fn lower(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push(' ');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// `tls_skip_verify`: accept any certificate chain and name, but still check the handshake
/// signatures, as Go's `InsecureSkipVerify` does.
#[derive(Debug)]
struct SkipVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A machine with no CA certificates at all still runs plain HTTP checks; HTTPS ones fail
/// the way an unknown issuer fails, which is the truth.
#[derive(Debug)]
struct NoTrustAnchors(Arc<CryptoProvider>);

impl ServerCertVerifier for NoTrustAnchors {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        SkipVerification(Arc::clone(&self.0)).verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        SkipVerification(Arc::clone(&self.0)).verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `tls_server_name`: verify the chain as usual but against the configured name.
#[derive(Debug)]
struct VerifyAs {
    inner: Arc<dyn ServerCertVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for VerifyAs {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping_is_consuls() {
        assert_eq!(status_for(StatusCode::OK), HealthStatus::Passing);
        assert_eq!(status_for(StatusCode::NO_CONTENT), HealthStatus::Passing);
        assert_eq!(
            status_for(StatusCode::TOO_MANY_REQUESTS),
            HealthStatus::Warning
        );
        assert_eq!(
            status_for(StatusCode::SERVICE_UNAVAILABLE),
            HealthStatus::Critical
        );
        assert_eq!(status_for(StatusCode::FOUND), HealthStatus::Critical);
        assert_eq!(status_text(StatusCode::OK), "200 OK");
        assert_eq!(status_text(StatusCode::from_u16(599).unwrap()), "599");
    }

    #[test]
    fn default_headers_are_added_unless_overridden() {
        let mut check = HttpCheck::new("http://127.0.0.1/");
        let headers = request_headers(&check);
        assert_eq!(headers[USER_AGENT], "Consul Health Check");
        assert_eq!(headers[ACCEPT], "text/plain, text/*, */*");

        check.headers = vec![
            ("accept".into(), vec!["application/json".into()]),
            ("X-Multi".into(), vec!["a".into(), "b".into()]),
            ("Host".into(), vec!["db.internal".into(), "ignored".into()]),
        ];
        let headers = request_headers(&check);
        assert_eq!(headers[ACCEPT], "application/json");
        assert_eq!(headers.get_all("x-multi").iter().count(), 2);
        assert_eq!(headers.get_all(HOST).iter().count(), 1);
        assert_eq!(headers[HOST], "db.internal");
    }

    #[test]
    fn tls_errors_read_like_go() {
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(
            tls_error_text(&unknown),
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
        );
        let name = rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("127.0.0.1").unwrap(),
            presented: vec!["DnsName(\"db.test\")".into(), "IpAddress(10.0.0.1)".into()],
        });
        assert_eq!(
            tls_error_text(&name),
            "tls: failed to verify certificate: x509: certificate is valid for db.test, 10.0.0.1, not 127.0.0.1"
        );
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
        assert_eq!(
            tls_error_text(&alert),
            "remote error: tls: handshake failure"
        );
    }

    #[test]
    fn clients_are_shared_per_tls_mode() {
        let mut clients = HttpClients::new(Vec::new());
        let a = HttpCheck::new("http://127.0.0.1:1/a");
        let b = HttpCheck::new("https://127.0.0.1:2/b");
        let mut skip = HttpCheck::new("https://127.0.0.1:3/");
        skip.tls_skip_verify = true;
        // A server name is irrelevant when verification is skipped.
        let mut skip_named = skip.clone();
        skip_named.tls_server_name = Some("db.test".into());
        let mut named = HttpCheck::new("https://127.0.0.1:4/");
        named.tls_server_name = Some("db.test".into());
        for check in [&a, &b, &skip, &skip_named, &named] {
            clients.client_for(check).unwrap();
        }
        assert_eq!(clients.clients.len(), 3);
    }
}
