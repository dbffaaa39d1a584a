//! TLS material and rustls configurations (ring provider only) for the HTTPS API, the server
//! RPC port and the CLI's HTTP client.
//!
//! - [`load_roots`], [`load_certs`], [`load_key`]: PEM files as Consul's `ca_file`,
//!   `ca_path`, `cert_file` and `key_file` name them; errors name the file.
//! - [`server_config`]: a listener's rustls config; with `verify_incoming` every client must
//!   present a certificate that chains to the CA (mutual TLS).
//! - [`client_config`]: an outgoing config whose only roots are the CA, presenting the
//!   agent's certificate when it has one. The server's certificate is checked by
//!   [`PinnedVerifier`]: against one fixed name (`server.<dc>.<domain>` for
//!   `verify_server_hostname`, or the CLI's `-tls-server-name`) whatever address was dialled,
//!   or for the chain alone. rustls has no "chain only" mode, and servers are dialled by IP,
//!   which is rarely in a certificate, so the verifier is ours; it still checks the chain,
//!   validity dates, key usage (server auth) and the handshake signatures with rustls' own
//!   WebPKI functions.
//!
//! - [`CertStore`]: the agent's certificate and key behind every listener and outgoing
//!   config, re-read on SIGHUP ([`reload_certificates`]) so renewed files take effect without
//!   a restart, as Consul's reload does. A file that fails to load or a key that does not
//!   match keeps the old pair in use (and says so). CA files are read at start only.
//!
//! Invariant: every config is built from the ring provider explicitly (never a process-wide
//! default) with the protocol versions from `tls_min_version` (TLS 1.2 or 1.3; rustls has no
//! 1.0/1.1).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::sign::CertifiedKey;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{TlsInterface, TlsVersion};

/// The ring provider every TLS config uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The name of a TLS 1.2 cipher suite as Go (and so Consul) spells it: rustls' name, except
/// that Go's ChaCha20 suites have no `_SHA256`.
fn go_suite_name(suite: &rustls::SupportedCipherSuite) -> Option<String> {
    let name = suite.suite().as_str()?;
    Some(name.strip_suffix("_CHACHA20_POLY1305_SHA256").map_or_else(
        || name.to_owned(),
        |base| format!("{base}_CHACHA20_POLY1305"),
    ))
}

/// The TLS 1.2 cipher suites `tls_cipher_suites` may name (Go's names).
pub fn tls12_suite_names() -> Vec<String> {
    rustls::crypto::ring::default_provider()
        .cipher_suites
        .iter()
        .filter(|s| s.tls13().is_none())
        .filter_map(go_suite_name)
        .collect()
}

/// The ring provider restricted to the TLS 1.2 suites of `tls_cipher_suites` (Go's names,
/// comma-separated, as Consul; in that order of preference), every TLS 1.3 suite kept (Go
/// does not let TLS 1.3 suites be chosen either). Empty: rustls' defaults.
pub fn provider_with_suites(suites: &[String]) -> Result<Arc<CryptoProvider>, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    if suites.is_empty() {
        return Ok(Arc::new(provider));
    }
    let mut chosen: Vec<rustls::SupportedCipherSuite> = provider
        .cipher_suites
        .iter()
        .filter(|s| s.tls13().is_some())
        .copied()
        .collect();
    for name in suites {
        let suite = provider
            .cipher_suites
            .iter()
            .find(|s| s.tls13().is_none() && go_suite_name(s).as_deref() == Some(name.as_str()))
            .ok_or_else(|| {
                format!(
                    "cipher suite {name:?} is not supported (muster's TLS offers {})",
                    tls12_suite_names().join(", ")
                )
            })?;
        chosen.push(*suite);
    }
    provider.cipher_suites = chosen;
    Ok(Arc::new(provider))
}

fn versions(min: TlsVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static BOTH: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY_13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match min {
        TlsVersion::Tls12 => &BOTH,
        TlsVersion::Tls13 => &ONLY_13,
    }
}

/// The certificates of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: invalid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no CERTIFICATE block in the PEM file",
            path.display()
        ));
    }
    // Parse each, so that garbage inside a well-formed PEM block is refused now.
    for cert in &certs {
        rustls::server::ParsedCertificate::try_from(cert)
            .map(|_| ())
            .or_else(|_| {
                // A CA certificate is not an end-entity certificate; accept it if webpki can
                // use it as a trust anchor.
                webpki_anchor(cert)
            })
            .map_err(|e| format!("{}: not a valid X.509 certificate: {e}", path.display()))?;
    }
    Ok(certs)
}

fn webpki_anchor(cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    let mut store = RootCertStore::empty();
    store.add(cert.clone())
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1), checked to be usable with ring.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("{}: no PRIVATE KEY block in the PEM file", path.display())
        }
        e => format!("{}: invalid PEM: {e}", path.display()),
    })?;
    provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| format!("{}: not a usable private key: {e}", path.display()))?;
    Ok(key)
}

/// The trust anchors from `ca_file` and every certificate file in `ca_path` (files without
/// certificates there are skipped, as Consul does; at least one certificate is required).
pub fn load_roots(ca_file: Option<&Path>, ca_path: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    if let Some(file) = ca_file {
        for cert in load_certs(file)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: not a usable CA certificate: {e}", file.display()))?;
        }
    }
    if let Some(dir) = ca_path {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read the directory {}: {e}", dir.display()))?;
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        let before = roots.len();
        for path in paths {
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            for cert in CertificateDer::pem_slice_iter(&text).flatten() {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
            }
        }
        if roots.len() == before {
            return Err(format!(
                "{}: no PEM certificate in any file of the directory",
                dir.display()
            ));
        }
    }
    if roots.is_empty() {
        return Err("no CA certificate: set ca_file or ca_path".to_owned());
    }
    Ok(roots)
}

/// A certificate and key from two files, swapped in place when the files change.
pub struct CertStore {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

/// Every live store, for [`reload_certificates`].
static STORES: Mutex<Vec<Weak<CertStore>>> = Mutex::new(Vec::new());

impl CertStore {
    /// Loads the pair and registers it for reloads.
    pub fn open(cert_file: &Path, key_file: &Path) -> Result<Arc<CertStore>, String> {
        let store = Arc::new(CertStore {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: ArcSwap::from_pointee(certified_key(cert_file, key_file)?),
        });
        let mut stores = STORES.lock();
        stores.retain(|w| w.strong_count() > 0);
        stores.push(Arc::downgrade(&store));
        Ok(store)
    }

    /// Re-reads the files; true when the certificate changed. On error the old pair stays.
    pub fn reload(&self) -> Result<bool, String> {
        let next = certified_key(&self.cert_file, &self.key_file)?;
        let changed = next.cert != self.current.load().cert;
        if changed {
            self.current.store(Arc::new(next));
        }
        Ok(changed)
    }

    fn get(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

fn certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    CertifiedKey::from_der(load_certs(cert_file)?, load_key(key_file)?, &provider()).map_err(|e| {
        format!(
            "the key {} does not go with the certificate {}: {e}",
            key_file.display(),
            cert_file.display()
        )
    })
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

impl rustls::server::ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl rustls::client::ResolvesClientCert for CertStore {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Re-reads every certificate store of this process (SIGHUP): one line per store whose
/// certificate changed or failed to load.
pub fn reload_certificates() {
    let stores: Vec<Arc<CertStore>> = {
        let mut stores = STORES.lock();
        stores.retain(|w| w.strong_count() > 0);
        stores.iter().filter_map(Weak::upgrade).collect()
    };
    for store in stores {
        match store.reload() {
            Ok(true) => {
                tracing::info!(cert_file = %store.cert_file.display(), "TLS certificate reloaded");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(
                cert_file = %store.cert_file.display(),
                error = %e,
                "TLS certificate not reloaded; the previous one stays in use"
            ),
        }
    }
}

/// The certificate store of an interface, when it has a certificate and key.
fn identity(iface: &TlsInterface) -> Result<Option<Arc<CertStore>>, String> {
    match (&iface.cert_file, &iface.key_file) {
        (Some(cert), Some(key)) => Ok(Some(CertStore::open(cert, key)?)),
        (None, None) => Ok(None),
        _ => Err("cert_file and key_file must be given together".to_owned()),
    }
}

/// The rustls config of a TLS listener (HTTPS or server RPC): the interface's certificate and
/// key; with `verify_incoming`, client certificates signed by the CA are required.
pub fn server_config(iface: &TlsInterface) -> Result<rustls::ServerConfig, String> {
    let store =
        identity(iface)?.ok_or_else(|| "a TLS listener needs cert_file and key_file".to_owned())?;
    let builder =
        rustls::ServerConfig::builder_with_provider(provider_with_suites(&iface.cipher_suites)?)
            .with_protocol_versions(versions(iface.min_version))
            .map_err(|e| e.to_string())?;
    let builder = if iface.verify_incoming {
        let roots = load_roots(iface.ca_file.as_deref(), iface.ca_path.as_deref())?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| format!("cannot verify client certificates: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Which name an outgoing connection checks the server's certificate against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerIdentity {
    /// Exactly this name, whatever address was dialled (`verify_server_hostname`:
    /// `server.<dc>.<domain>`; the CLI's `-tls-server-name`).
    Name(String),
    /// The name or address in the URL, as any HTTPS client (the CLI without a server name).
    Dialled,
    /// The chain only: any certificate the CA signed for server authentication
    /// (`verify_outgoing` without `verify_server_hostname`, as Consul).
    ChainOnly,
}

/// The rustls config of outgoing connections: the CA as the only root, the interface's
/// certificate as client certificate when it has one, the server checked per `identity`.
pub fn client_config(
    iface: &TlsInterface,
    identity: ServerIdentity,
) -> Result<rustls::ClientConfig, String> {
    let roots = load_roots(iface.ca_file.as_deref(), iface.ca_path.as_deref())?;
    let cert = match self::identity(iface)? {
        Some(store) => ClientCert::Store(store),
        None => ClientCert::None,
    };
    client_config_from(
        provider_with_suites(&iface.cipher_suites)?,
        roots,
        cert,
        iface.min_version,
        identity,
    )
}

/// The certificate an outgoing connection presents.
enum ClientCert {
    None,
    /// Loaded once (the CLI).
    Pair(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    /// The agent's, reloaded on SIGHUP.
    Store(Arc<CertStore>),
}

/// [`client_config`] from loaded material.
pub fn client_config_with(
    roots: RootCertStore,
    cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    min_version: TlsVersion,
    identity: ServerIdentity,
) -> Result<rustls::ClientConfig, String> {
    let cert = match cert {
        Some((chain, key)) => ClientCert::Pair(chain, key),
        None => ClientCert::None,
    };
    client_config_from(provider(), roots, cert, min_version, identity)
}

fn client_config_from(
    provider: Arc<CryptoProvider>,
    roots: RootCertStore,
    cert: ClientCert,
    min_version: TlsVersion,
    identity: ServerIdentity,
) -> Result<rustls::ClientConfig, String> {
    let verifier = Arc::new(PinnedVerifier::new(roots, identity, &provider)?);
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(min_version))
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match cert {
        ClientCert::Pair(chain, key) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the certificate and key do not go together: {e}"))?,
        ClientCert::Store(store) => builder.with_client_cert_resolver(store),
        ClientCert::None => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// Verifies a server certificate against the CA and a fixed name (or the dialled name, or
/// none: see [`ServerIdentity`]).
pub struct PinnedVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    /// The name to check; `None` with `dialled` false: the chain only.
    name: Option<ServerName<'static>>,
    dialled: bool,
}

impl PinnedVerifier {
    /// A verifier trusting `roots` only, checking names per `identity`.
    pub fn new(
        roots: RootCertStore,
        identity: ServerIdentity,
        provider: &CryptoProvider,
    ) -> Result<PinnedVerifier, String> {
        let name = match &identity {
            ServerIdentity::Name(n) => Some(
                ServerName::try_from(n.clone())
                    .map_err(|_| format!("{n:?} is not a valid TLS server name"))?,
            ),
            _ => None,
        };
        Ok(PinnedVerifier {
            roots: Arc::new(roots),
            algorithms: provider.signature_verification_algorithms,
            name,
            dialled: identity == ServerIdentity::Dialled,
        })
    }
}

impl fmt::Debug for PinnedVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedVerifier")
            .field("roots", &self.roots.len())
            .field("name", &self.name)
            .field("dialled", &self.dialled)
            .finish()
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if let Some(name) = &self.name {
            rustls::client::verify_server_name(&cert, name)?;
        } else if self.dialled {
            rustls::client::verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// An error with its sources, `a: b: c` (reqwest and hyper hide the TLS reason in the chain).
pub use muster_server::error_chain;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tls::fixtures::{self, ca};
    use crate::config::TlsVersion;

    fn cert(dir: &Path, server: bool) -> CertificateDer<'static> {
        load_certs(&fixtures::cert(dir, server)[0])
            .unwrap()
            .remove(0)
    }

    fn verifier(dir: &Path, identity: ServerIdentity) -> PinnedVerifier {
        let roots = load_roots(Some(&dir.join("consul-agent-ca.pem")), None).unwrap();
        PinnedVerifier::new(roots, identity, &provider()).unwrap()
    }

    fn accepts(v: &PinnedVerifier, cert: &CertificateDer<'_>, dialled: &str) -> bool {
        let name = ServerName::try_from(dialled.to_owned()).unwrap();
        v.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .is_ok()
    }

    /// The certificate a TLS listener built from `iface` presents to a new connection.
    async fn presented(
        acceptor: &tokio_rustls::TlsAcceptor,
        dir: &Path,
    ) -> CertificateDer<'static> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = acceptor.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = acceptor.accept(tcp).await;
        });
        let roots = load_roots(Some(&dir.join("consul-agent-ca.pem")), None).unwrap();
        let config = client_config_with(
            roots,
            None,
            TlsVersion::Tls12,
            ServerIdentity::Name("server.dc1.consul".into()),
        )
        .unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("server.dc1.consul").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        drop(tls);
        server.await.unwrap();
        cert
    }

    #[tokio::test]
    async fn renewed_certificate_files_are_served_after_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        ca(d);
        let first = cert(d, true);
        let second = cert(d, true);
        assert_ne!(first, second);
        let (live, live_key) = (d.join("live.pem"), d.join("live-key.pem"));
        let install = |n: u32| {
            std::fs::copy(d.join(format!("dc1-server-consul-{n}.pem")), &live).unwrap();
            std::fs::copy(d.join(format!("dc1-server-consul-{n}-key.pem")), &live_key).unwrap();
        };
        install(0);
        let iface = TlsInterface {
            cert_file: Some(live.clone()),
            key_file: Some(live_key.clone()),
            ..TlsInterface::default()
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(&iface).unwrap()));
        assert_eq!(presented(&acceptor, d).await, first);
        // Renewed in place, then SIGHUP: new connections get the new certificate.
        install(1);
        assert_eq!(
            presented(&acceptor, d).await,
            first,
            "not before the reload"
        );
        reload_certificates();
        assert_eq!(presented(&acceptor, d).await, second);
        // A broken renewal keeps the working pair: a key that does not match the
        // certificate, or not a key at all.
        std::fs::copy(d.join("dc1-server-consul-0-key.pem"), &live_key).unwrap();
        reload_certificates();
        assert_eq!(presented(&acceptor, d).await, second, "mismatched key");
        std::fs::write(&live_key, "garbage").unwrap();
        reload_certificates();
        assert_eq!(presented(&acceptor, d).await, second, "garbage key");
        let mismatch = certified_key(&live, &d.join("dc1-server-consul-0-key.pem"))
            .map(|_| ())
            .unwrap_err();
        assert!(mismatch.contains("does not go with"), "{mismatch}");
    }

    #[test]
    fn server_identity_policies() {
        let (dir, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        ca(dir.path());
        ca(other.path());
        let server = cert(dir.path(), true);
        let client = cert(dir.path(), false);
        let foreign = cert(other.path(), true);

        // verify_server_hostname: the fixed name, whatever address was dialled.
        let pinned = verifier(dir.path(), ServerIdentity::Name("server.dc1.consul".into()));
        assert!(accepts(&pinned, &server, "10.9.9.9"));
        assert!(
            !accepts(&pinned, &client, "10.9.9.9"),
            "a client certificate is no server's"
        );
        assert!(!accepts(&pinned, &foreign, "10.9.9.9"), "another CA");
        let other_dc = verifier(dir.path(), ServerIdentity::Name("server.dc2.consul".into()));
        assert!(!accepts(&other_dc, &server, "10.9.9.9"), "the wrong name");

        // verify_outgoing alone: the chain (and server auth), any name.
        let chain = verifier(dir.path(), ServerIdentity::ChainOnly);
        assert!(accepts(&chain, &server, "10.9.9.9"));
        assert!(
            !accepts(&chain, &client, "10.9.9.9"),
            "server auth is still required"
        );
        assert!(!accepts(&chain, &foreign, "10.9.9.9"));

        // The CLI without -tls-server-name: the address dialled.
        let dialled = verifier(dir.path(), ServerIdentity::Dialled);
        assert!(accepts(&dialled, &server, "127.0.0.1"));
        assert!(accepts(&dialled, &server, "localhost"));
        assert!(!accepts(&dialled, &server, "10.9.9.9"));
    }

    #[test]
    fn error_chains_show_the_cause() {
        let inner = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        let outer = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, inner);
        assert!(error_chain(&outer).contains("UnknownIssuer"));
    }
}
