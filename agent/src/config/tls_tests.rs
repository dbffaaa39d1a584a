//! The `tls {}` block: per-interface values over `tls.defaults`, Consul's old top-level keys,
//! and every validation error naming the file and the key. Certificates are made with the
//! `muster tls` code itself.

use std::path::{Path, PathBuf};

use super::{ConfigError, LoadedConfig, TlsVersion, validate_paths};
use crate::cli::tls::fixtures;

/// A temp dir with a CA, a server certificate and a config file `agent.json`.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        fixtures::ca(dir.path());
        fixtures::cert(dir.path(), true);
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn ca(&self) -> String {
        self.path("consul-agent-ca.pem")
    }

    fn cert(&self) -> String {
        self.path("dc1-server-consul-0.pem")
    }

    fn key(&self) -> String {
        self.path("dc1-server-consul-0-key.pem")
    }

    /// Loads `agent.json` with `json` (a data dir added) as `muster validate` does.
    fn load(&self, mut json: serde_json::Value) -> Result<LoadedConfig, ConfigError> {
        json["data_dir"] = self.path("data").into();
        let file = self.dir.path().join("agent.json");
        std::fs::write(&file, json.to_string()).unwrap();
        validate_paths(&[file], None)
    }

    fn err(&self, json: serde_json::Value) -> (String, Option<String>) {
        let e = self.load(json).expect_err("the config is refused");
        assert!(
            e.file().is_some_and(|f| f.ends_with("agent.json")),
            "names the file: {e}"
        );
        (e.to_string(), e.key().map(str::to_owned))
    }
}

#[test]
fn interfaces_take_their_own_values_over_the_defaults() {
    let s = Setup::new();
    let loaded = s
        .load(serde_json::json!({
            "ports": {"https": 8501},
            "tls": {
                "defaults": {"ca_file": s.ca(), "cert_file": s.cert(), "key_file": s.key(),
                             "verify_incoming": true, "verify_outgoing": true},
                "https": {"verify_incoming": false, "tls_min_version": "TLSv1_3"},
                "internal_rpc": {"verify_server_hostname": true}
            }
        }))
        .unwrap();
    let tls = &loaded.runtime.tls;
    assert!(!tls.https.verify_incoming, "https overrides the default");
    assert_eq!(tls.https.min_version, TlsVersion::Tls13);
    assert_eq!(tls.https.cert_file.as_deref(), Some(Path::new(&s.cert())));
    assert!(tls.internal_rpc.verify_incoming && tls.internal_rpc.verify_outgoing);
    assert_eq!(tls.internal_rpc.min_version, TlsVersion::Tls12);
    assert!(tls.verify_server_hostname);
    assert_eq!(tls.server_name, "server.dc1.consul");
    assert_eq!(
        loaded.runtime.http.https_addrs,
        ["127.0.0.1:8501".parse().unwrap()]
    );
    assert_eq!(
        tls.https_handshake_timeout,
        std::time::Duration::from_secs(5)
    );
    // Implemented keys do not warn.
    assert!(
        !loaded.warnings.iter().any(|w| w.contains("tls")),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn consuls_old_top_level_keys_land_in_the_tls_block() {
    let s = Setup::new();
    let loaded = s
        .load(serde_json::json!({
            "ca_file": s.ca(), "cert_file": s.cert(), "key_file": s.key(),
            "verify_incoming_rpc": true, "verify_outgoing": true,
            "verify_server_hostname": true, "domain": "example", "datacenter": "east",
            "limits": {"rpc_handshake_timeout": "2s", "https_handshake_timeout": "1s"}
        }))
        .unwrap();
    let tls = &loaded.runtime.tls;
    assert!(tls.internal_rpc.verify_incoming);
    assert!(
        !tls.https.verify_incoming,
        "verify_incoming_rpc is the RPC port's only"
    );
    assert!(tls.https.has_ca() && tls.https.has_cert());
    assert!(tls.internal_rpc.verify_outgoing && tls.verify_server_hostname);
    assert_eq!(tls.server_name, "server.east.example");
    assert_eq!(tls.rpc_handshake_timeout, std::time::Duration::from_secs(2));
    assert_eq!(
        tls.https_handshake_timeout,
        std::time::Duration::from_secs(1)
    );
}

#[test]
fn verify_server_hostname_implies_verify_outgoing() {
    let s = Setup::new();
    let loaded = s
        .load(serde_json::json!({"tls": {"internal_rpc": {
            "ca_file": s.ca(), "verify_server_hostname": true}}}))
        .unwrap();
    assert!(loaded.runtime.tls.internal_rpc.verify_outgoing);
    let (text, key) = s.err(serde_json::json!({"tls": {"internal_rpc": {
        "verify_server_hostname": true}}}));
    assert_eq!(
        key.as_deref(),
        Some("tls.internal_rpc.verify_server_hostname")
    );
    assert!(text.contains("no ca_file or ca_path"), "{text}");
}

#[test]
fn keys_not_implemented_still_warn_with_their_name() {
    let s = Setup::new();
    let loaded = s
        .load(serde_json::json!({"tls": {
            "defaults": {"use_auto_cert": true},
            "grpc": {"verify_incoming": true},
            "https": {"verify_outgoing": true}
        }}))
        .unwrap();
    for key in [
        "tls.defaults.use_auto_cert",
        "tls.grpc",
        "tls.https.verify_outgoing",
    ] {
        assert!(
            loaded.warnings.iter().any(|w| w.contains(key)),
            "{key}: {:?}",
            loaded.warnings
        );
    }
}

#[test]
fn a_certificate_without_its_key_and_the_reverse_are_refused() {
    let s = Setup::new();
    let (text, key) = s.err(serde_json::json!({"tls": {"defaults": {"cert_file": s.cert()}}}));
    assert_eq!(key.as_deref(), Some("tls.defaults.cert_file"));
    assert!(text.contains("no key_file"), "{text}");
    let (text, key) = s.err(serde_json::json!({"tls": {"https": {"key_file": s.key()}}}));
    assert_eq!(key.as_deref(), Some("tls.https.key_file"));
    assert!(text.contains("no cert_file"), "{text}");
}

#[test]
fn verify_incoming_needs_a_ca_and_a_certificate() {
    let s = Setup::new();
    let (text, key) = s.err(serde_json::json!({"tls": {"https": {
        "cert_file": s.cert(), "key_file": s.key(), "verify_incoming": true}}}));
    assert_eq!(key.as_deref(), Some("tls.https.verify_incoming"));
    assert!(text.contains("no ca_file or ca_path"), "{text}");
    // The old top-level key is blamed under its new name.
    let (text, key) = s.err(serde_json::json!({"verify_incoming": true, "ca_file": s.ca()}));
    assert_eq!(key.as_deref(), Some("tls.defaults.verify_incoming"));
    assert!(text.contains("no cert_file and key_file"), "{text}");
}

#[test]
fn verify_outgoing_needs_a_ca() {
    let s = Setup::new();
    let (text, key) = s.err(serde_json::json!({"tls": {"internal_rpc": {
        "verify_outgoing": true}}}));
    assert_eq!(key.as_deref(), Some("tls.internal_rpc.verify_outgoing"));
    assert!(text.contains("no ca_file or ca_path"), "{text}");
}

#[test]
fn unreadable_or_invalid_pem_files_are_refused_with_the_file() {
    let s = Setup::new();
    let missing = s.path("nope.pem");
    let (text, key) = s.err(serde_json::json!({"ca_file": missing}));
    assert_eq!(key.as_deref(), Some("tls.defaults.ca_file"));
    assert!(
        text.contains("cannot read") && text.contains("nope.pem"),
        "{text}"
    );

    let garbage = s.path("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let (text, key) = s.err(serde_json::json!({"tls": {"https": {"ca_file": &garbage}}}));
    assert_eq!(key.as_deref(), Some("tls.https.ca_file"));
    assert!(
        text.contains("garbage.pem") && text.contains("no CERTIFICATE"),
        "{text}"
    );

    let broken = s.path("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (text, key) = s.err(serde_json::json!({"tls": {"defaults": {
        "cert_file": &broken, "key_file": s.key()}}}));
    assert_eq!(key.as_deref(), Some("tls.defaults.cert_file"));
    assert!(text.contains("broken.pem"), "{text}");

    // A certificate where the key should be.
    let (text, key) = s.err(serde_json::json!({"tls": {"defaults": {
        "cert_file": s.cert(), "key_file": s.cert()}}}));
    assert_eq!(key.as_deref(), Some("tls.defaults.key_file"));
    assert!(text.contains("no PRIVATE KEY"), "{text}");

    // A key of another certificate.
    let other = tempfile::tempdir().unwrap();
    fixtures::ca(other.path());
    let other_key = other.path().join("consul-agent-ca-key.pem");
    let (text, key) = s.err(serde_json::json!({"tls": {"defaults": {
        "cert_file": s.cert(), "key_file": other_key}}}));
    assert_eq!(key.as_deref(), Some("tls.defaults.key_file"));
    assert!(
        text.contains("does not belong to the certificate"),
        "{text}"
    );

    // ca_path: a directory without certificates.
    let empty = s.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (text, key) = s.err(serde_json::json!({"ca_path": &empty}));
    assert_eq!(key.as_deref(), Some("tls.defaults.ca_path"));
    assert!(text.contains("no PEM certificate"), "{text}");
}

#[test]
fn ca_path_loads_every_certificate_file() {
    let s = Setup::new();
    let dir = PathBuf::from(s.path("cas"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(s.ca(), dir.join("ca.pem")).unwrap();
    std::fs::write(dir.join("README"), "not a certificate").unwrap();
    let loaded = s
        .load(serde_json::json!({"tls": {"internal_rpc": {
            "ca_path": dir, "verify_outgoing": true}}}))
        .unwrap();
    assert!(loaded.runtime.tls.internal_rpc.verify_outgoing);
    let roots = crate::tls::load_roots(None, Some(&dir)).unwrap();
    assert_eq!(roots.len(), 1);
}

#[test]
fn tls_min_version_is_1_2_or_1_3() {
    let s = Setup::new();
    for old in ["TLSv1_0", "TLSv1_1", "tls11"] {
        let (text, key) = s.err(serde_json::json!({"tls": {"defaults": {"tls_min_version": old}}}));
        assert_eq!(key.as_deref(), Some("tls.defaults.tls_min_version"));
        assert!(
            text.contains("not supported") && text.contains("TLS 1.2 and 1.3"),
            "{text}"
        );
    }
    let (text, key) = s.err(serde_json::json!({"tls_min_version": "TLS1.2"}));
    assert_eq!(key.as_deref(), Some("tls.defaults.tls_min_version"));
    assert!(text.contains("invalid tls_min_version"), "{text}");
    let loaded = s
        .load(serde_json::json!({"tls": {"internal_rpc": {"tls_min_version": "TLSv1_3"}}}))
        .unwrap();
    assert_eq!(
        loaded.runtime.tls.internal_rpc.min_version,
        TlsVersion::Tls13
    );
    assert_eq!(loaded.runtime.tls.https.min_version, TlsVersion::Tls12);
}

#[test]
fn the_https_port_needs_a_certificate_and_its_own_address() {
    let s = Setup::new();
    let (text, key) = s.err(serde_json::json!({"ports": {"https": 8501}}));
    assert_eq!(key.as_deref(), Some("ports.https"));
    assert!(text.contains("needs a certificate"), "{text}");
    let (text, key) = s.err(serde_json::json!({
        "ports": {"https": 8500},
        "tls": {"defaults": {"cert_file": s.cert(), "key_file": s.key()}}
    }));
    assert_eq!(key.as_deref(), Some("ports.https"));
    assert!(text.contains("already configured"), "{text}");
    let loaded = s
        .load(serde_json::json!({
            "ports": {"https": 8501}, "addresses": {"https": "127.0.0.2"},
            "tls": {"defaults": {"cert_file": s.cert(), "key_file": s.key()}}
        }))
        .unwrap();
    assert_eq!(
        loaded.runtime.http.https_addrs,
        ["127.0.0.2:8501".parse().unwrap()]
    );
}

#[test]
fn verify_server_hostname_belongs_to_internal_rpc_only() {
    let s = Setup::new();
    let (text, key) = s.err(serde_json::json!({"tls": {"defaults": {
        "verify_server_hostname": true}}}));
    assert_eq!(key.as_deref(), Some("tls.defaults.verify_server_hostname"));
    assert!(
        text.contains("only valid in the tls.internal_rpc stanza"),
        "{text}"
    );
}

#[test]
fn a_zero_handshake_timeout_is_refused() {
    let s = Setup::new();
    let (text, key) = s.err(serde_json::json!({"limits": {"https_handshake_timeout": "0s"}}));
    assert_eq!(key.as_deref(), Some("limits.https_handshake_timeout"));
    assert!(text.contains("greater than zero"), "{text}");
}

#[test]
fn cipher_suites_take_gos_names_and_only_for_tls_1_2() {
    let s = Setup::new();
    let loaded = s
        .load(serde_json::json!({"tls": {
            "defaults": {"tls_cipher_suites":
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"},
            "https": {"tls_cipher_suites": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"}
        }}))
        .unwrap();
    let tls = &loaded.runtime.tls;
    assert_eq!(
        tls.internal_rpc.cipher_suites,
        [
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"
        ]
    );
    assert_eq!(
        tls.https.cipher_suites,
        ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]
    );
    assert!(
        !loaded
            .warnings
            .iter()
            .any(|w| w.contains("tls_cipher_suites"))
    );
    // The provider keeps TLS 1.3 and exactly the chosen 1.2 suites.
    let p = crate::tls::provider_with_suites(&tls.internal_rpc.cipher_suites).unwrap();
    let tls12: Vec<_> = p
        .cipher_suites
        .iter()
        .filter(|c| c.tls13().is_none())
        .collect();
    assert_eq!(tls12.len(), 2);
    assert!(p.cipher_suites.iter().any(|c| c.tls13().is_some()));

    // A CBC suite Go has and rustls does not.
    let (text, key) = s.err(serde_json::json!({"tls_cipher_suites":
        "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"}));
    assert_eq!(key.as_deref(), Some("tls.defaults.tls_cipher_suites"));
    assert!(text.contains("is not supported"), "{text}");
    let (text, key) = s.err(serde_json::json!({"tls": {"internal_rpc": {
        "tls_min_version": "TLSv1_3",
        "tls_cipher_suites": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"}}}));
    assert_eq!(key.as_deref(), Some("tls.internal_rpc.tls_cipher_suites"));
    assert!(text.contains("TLSv1_3"), "{text}");
}
