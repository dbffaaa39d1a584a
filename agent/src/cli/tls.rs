//! `muster tls ca create` and `muster tls cert create`: a CA and agent certificates for a
//! test or small cluster, with Consul's file names and SANs, so the same commands and files
//! work for both.
//!
//! - CA: `<domain>-agent-ca.pem` and `<domain>-agent-ca-key.pem` (ECDSA P-256, 5 years by
//!   default, CN `Consul Agent CA <serial>`, constrained to `<domain>.` and `localhost` when
//!   `-name-constraint` is given).
//! - Server: `<dc>-server-<domain>-<n>.pem` / `-key.pem`, SANs `server.<dc>.<domain>`,
//!   `localhost`, `127.0.0.1` plus `-additional-dnsname` / `-additional-ipaddress`; usable
//!   for both server and client authentication (servers dial each other).
//! - Client: `<dc>-client-<domain>-<n>.pem`, SANs `client.<dc>.<domain>`, `localhost`.
//!
//! `<n>` is the first index whose files do not exist: existing files are never overwritten.
//! Keys are written with mode 0600.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::Io;

/// `muster tls`.
#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Certificate authority commands.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Certificate commands.
    #[command(subcommand)]
    Cert(CertCommand),
}

/// `muster tls ca`.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Creates a CA certificate and key in the current directory (or `-dir`).
    Create(CaArgs),
}

/// `muster tls cert`.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Creates an agent certificate signed by the CA.
    Create(CertArgs),
}

/// `muster tls ca create`.
#[derive(Debug, Args)]
pub struct CaArgs {
    /// Days the CA is valid.
    #[arg(long, default_value_t = 1825)]
    pub days: u32,
    /// The cluster domain.
    #[arg(long, default_value = "consul")]
    pub domain: String,
    /// Where to write the files.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

/// `muster tls cert create`.
#[derive(Debug, Args)]
pub struct CertArgs {
    /// A server certificate (`server.<dc>.<domain>`).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub server: bool,
    /// A client certificate (`client.<dc>.<domain>`).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub client: bool,
    /// The datacenter.
    #[arg(long, default_value = "dc1")]
    pub dc: String,
    /// The cluster domain.
    #[arg(long, default_value = "consul")]
    pub domain: String,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// The CA certificate (default `<domain>-agent-ca.pem` in `-dir`).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The CA key (default `<domain>-agent-ca-key.pem` in `-dir`).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Another DNS name for the certificate (repeatable).
    #[arg(long = "additional-dnsname")]
    pub dns_names: Vec<String>,
    /// Another IP address for the certificate (repeatable).
    #[arg(long = "additional-ipaddress")]
    pub ips: Vec<IpAddr>,
    /// Where to read the CA and write the files.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

/// Runs a `muster tls` command.
pub(super) fn run(command: TlsCommand, io: &mut Io<'_>) -> i32 {
    let result = match command {
        TlsCommand::Ca(CaCommand::Create(a)) => create_ca(&a),
        TlsCommand::Cert(CertCommand::Create(a)) => create_cert(&a),
    };
    match result {
        Ok(written) => {
            for path in written {
                io.out(&format!("==> Saved {}", path.display()));
            }
            0
        }
        Err(e) => {
            io.err(&format!("==> {e}"));
            1
        }
    }
}

fn err(e: rcgen::Error) -> String {
    format!("cannot create the certificate: {e}")
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // A minute back, for clocks a little behind ours.
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

/// Creates the CA files; refuses to overwrite.
pub fn create_ca(a: &CaArgs) -> Result<Vec<PathBuf>, String> {
    let cert_path = a.dir.join(format!("{}-agent-ca.pem", a.domain));
    let key_path = a.dir.join(format!("{}-agent-ca-key.pem", a.domain));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(format!("{} already exists", p.display()));
        }
    }
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    let serial: u32 = rand::random();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("Consul Agent CA {serial}"));
    dn.push(DnType::OrganizationName, "muster");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, a.days);
    let cert = params.self_signed(&key).map_err(err)?;
    save_pair(cert_path, key_path, &cert, &key)
}

/// Creates a server or client certificate signed by the CA; refuses to overwrite.
pub fn create_cert(a: &CertArgs) -> Result<Vec<PathBuf>, String> {
    let kind = match (a.server, a.client) {
        (true, false) => "server",
        (false, true) => "client",
        _ => return Err("Exactly one of -server or -client is required".into()),
    };
    let ca_path =
        a.ca.clone()
            .unwrap_or_else(|| a.dir.join(format!("{}-agent-ca.pem", a.domain)));
    let ca_key_path = a
        .key
        .clone()
        .unwrap_or_else(|| a.dir.join(format!("{}-agent-ca-key.pem", a.domain)));
    let ca_der = read_pem(&ca_path, "CERTIFICATE")?;
    let ca_key_der = read_pem(&ca_key_path, "PRIVATE KEY")?;
    let ca_key = KeyPair::try_from(ca_key_der.as_slice())
        .map_err(|e| format!("{}: not a private key: {e}", ca_key_path.display()))?;
    let issuer = Issuer::from_ca_cert_der(&ca_der.as_slice().into(), ca_key)
        .map_err(|e| format!("{}: not a CA certificate: {e}", ca_path.display()))?;

    let name = format!("{kind}.{}.{}", a.dc, a.domain);
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name.clone());
    params.distinguished_name = dn;
    let mut sans = vec![name, "localhost".to_owned()];
    sans.extend(a.dns_names.iter().cloned());
    params.subject_alt_names = sans
        .into_iter()
        .map(|s| {
            s.clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|_| format!("{s:?} is not a DNS name"))
        })
        .collect::<Result<_, _>>()?;
    let mut ips = a.ips.clone();
    if kind == "server" {
        ips.insert(0, IpAddr::from([127, 0, 0, 1]));
    }
    params
        .subject_alt_names
        .extend(ips.into_iter().map(SanType::IpAddress));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = if kind == "server" {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    validity(&mut params, a.days);
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    let (cert_path, key_path) = (0u32..)
        .map(|n| {
            let stem = format!("{}-{kind}-{}-{n}", a.dc, a.domain);
            (
                a.dir.join(format!("{stem}.pem")),
                a.dir.join(format!("{stem}-key.pem")),
            )
        })
        .find(|(c, k)| !c.exists() && !k.exists())
        .expect("some index is free");
    save_pair(cert_path, key_path, &cert, &key)
}

/// Writes a certificate (0644) and its key (0600), neither of which may exist yet.
fn save_pair(
    cert_path: PathBuf,
    key_path: PathBuf,
    cert: &rcgen::Certificate,
    key: &KeyPair,
) -> Result<Vec<PathBuf>, String> {
    write_new(&cert_path, pem("CERTIFICATE", cert.der()).as_bytes(), 0o644)?;
    write_new(
        &key_path,
        pem("PRIVATE KEY", &key.serialize_der()).as_bytes(),
        0o600,
    )?;
    Ok(vec![cert_path, key_path])
}

/// PEM text of one DER block.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER of the first `label` block of a PEM file.
fn read_pem(path: &Path, label: &str) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(body, _)| body)
        .ok_or_else(|| format!("{}: no {label} block", path.display()))?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("{}: bad {label} block: {e}", path.display()))
}

/// Writes a file that must not exist yet, with `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Certificates for tests elsewhere in the crate, made by the code above.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::path::{Path, PathBuf};

    use super::{CaArgs, CertArgs, create_ca, create_cert};

    /// A CA in `dir` (`consul-agent-ca.pem`, `consul-agent-ca-key.pem`, 30 days).
    pub(crate) fn ca(dir: &Path) {
        create_ca(&CaArgs {
            days: 30,
            domain: "consul".into(),
            dir: dir.to_path_buf(),
        })
        .unwrap();
    }

    /// The next server (or client) certificate of dc1 signed by the CA in `dir`: its
    /// certificate and key files.
    pub(crate) fn cert(dir: &Path, server: bool) -> Vec<PathBuf> {
        cert_with(dir, server, vec![], vec![])
    }

    /// [`cert`] with `-additional-dnsname`s and `-additional-ipaddress`es.
    pub(crate) fn cert_with(
        dir: &Path,
        server: bool,
        dns_names: Vec<String>,
        ips: Vec<std::net::IpAddr>,
    ) -> Vec<PathBuf> {
        create_cert(&CertArgs {
            server,
            client: !server,
            dc: "dc1".into(),
            domain: "consul".into(),
            days: 30,
            ca: None,
            key: None,
            dns_names,
            ips,
            dir: dir.to_path_buf(),
        })
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::ca;
    use super::*;
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    fn cert(dir: &Path, server: bool) -> Vec<PathBuf> {
        let ip = "10.0.0.7".parse().unwrap();
        fixtures::cert_with(dir, server, vec!["db1.example".into()], vec![ip])
    }

    /// Verifies `cert` for `name` against the CA file with rustls' WebPKI verifier.
    fn verifies(dir: &Path, cert: &Path, name: &str) -> bool {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(
                read_pem(&dir.join("consul-agent-ca.pem"), "CERTIFICATE").unwrap(),
            ))
            .unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder(roots.into())
            .build()
            .unwrap();
        let end = CertificateDer::from(read_pem(cert, "CERTIFICATE").unwrap());
        verifier
            .verify_server_cert(
                &end,
                &[],
                &ServerName::try_from(name.to_owned()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .is_ok()
    }

    #[test]
    fn ca_and_server_certs_with_consul_names_that_verify() {
        let dir = tempfile::tempdir().unwrap();
        ca(dir.path());
        let files = cert(dir.path(), true);
        assert_eq!(files[0], dir.path().join("dc1-server-consul-0.pem"));
        assert_eq!(files[1], dir.path().join("dc1-server-consul-0-key.pem"));
        for name in [
            "server.dc1.consul",
            "localhost",
            "db1.example",
            "127.0.0.1",
            "10.0.0.7",
        ] {
            assert!(verifies(dir.path(), &files[0], name), "{name}");
        }
        assert!(!verifies(dir.path(), &files[0], "client.dc1.consul"));
        // The next one gets the next index; nothing is overwritten.
        let again = cert(dir.path(), true);
        assert_eq!(again[0], dir.path().join("dc1-server-consul-1.pem"));
        let client = cert(dir.path(), false);
        assert_eq!(client[0], dir.path().join("dc1-client-consul-0.pem"));
        // Keys are private.
        let mode = std::fs::metadata(&files[1]).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        // A second CA in the same place is refused.
        let e = create_ca(&CaArgs {
            days: 1,
            domain: "consul".into(),
            dir: dir.path().to_path_buf(),
        })
        .unwrap_err();
        assert!(e.contains("already exists"), "{e}");
    }

    #[test]
    fn a_certificate_from_another_ca_does_not_verify() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        ca(a.path());
        ca(b.path());
        let from_b = cert(b.path(), true);
        assert!(!verifies(a.path(), &from_b[0], "server.dc1.consul"));
        assert!(verifies(b.path(), &from_b[0], "server.dc1.consul"));
    }

    #[test]
    fn missing_ca_or_both_kinds_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut args = CertArgs {
            server: true,
            client: true,
            dc: "dc1".into(),
            domain: "consul".into(),
            days: 1,
            ca: None,
            key: None,
            dns_names: Vec::new(),
            ips: Vec::new(),
            dir: dir.path().to_path_buf(),
        };
        assert!(
            create_cert(&args)
                .unwrap_err()
                .contains("Exactly one of -server or -client")
        );
        args.client = false;
        let e = create_cert(&args).unwrap_err();
        assert!(e.contains("consul-agent-ca.pem"), "{e}");
    }
}
