//! HTTPS checks against a server with a certificate from a throwaway CA.

use muster_checks::{
    CheckDefinition, CheckKind, CheckRunnerConfig, HealthStatus, HttpCheck, MIN_INTERVAL,
};

use crate::support::{Runner, TestServer, test_pki};

fn https_check(id: &str, check: HttpCheck) -> CheckDefinition {
    let mut def = CheckDefinition::new(id, CheckKind::Http(check), MIN_INTERVAL);
    def.initial_status = HealthStatus::Warning;
    def
}

#[tokio::test]
async fn an_untrusted_certificate_fails_unless_verification_is_skipped() {
    let pki = test_pki(&["muster.test"]);
    let server = TestServer::tls(pki.server_config).await;
    let mut runner = Runner::start();
    let url = server.url("https", "/ok");
    runner
        .add(https_check("strict", HttpCheck::new(&url)))
        .await;
    let mut lax = HttpCheck::new(&url);
    lax.tls_skip_verify = true;
    runner.add(https_check("lax", lax)).await;

    let strict = runner.wait_for("strict", HealthStatus::Critical).await;
    assert_eq!(
        strict.output,
        format!(
            "Get \"{url}\": tls: failed to verify certificate: x509: certificate signed by unknown authority"
        )
    );
    let lax = runner.wait_for("lax", HealthStatus::Passing).await;
    assert_eq!(
        lax.output,
        format!("HTTP GET {url}: 200 OK Output: all good")
    );
}

#[tokio::test]
async fn a_trusted_certificate_is_verified_against_tls_server_name() {
    let pki = test_pki(&["muster.test"]);
    let server = TestServer::tls(pki.server_config).await;
    let config = CheckRunnerConfig {
        extra_root_certificates: vec![pki.ca_der],
        ..CheckRunnerConfig::default()
    };
    let mut runner = Runner::start_with(config);
    let url = server.url("https", "/ok");
    // The certificate names muster.test, not 127.0.0.1.
    runner.add(https_check("by-ip", HttpCheck::new(&url))).await;
    let mut named = HttpCheck::new(&url);
    named.tls_server_name = Some("muster.test".into());
    runner.add(https_check("by-name", named)).await;
    let mut wrong = HttpCheck::new(&url);
    wrong.tls_server_name = Some("other.test".into());
    runner.add(https_check("wrong-name", wrong)).await;

    let by_ip = runner.wait_for("by-ip", HealthStatus::Critical).await;
    assert_eq!(
        by_ip.output,
        format!(
            "Get \"{url}\": tls: failed to verify certificate: x509: certificate is valid for muster.test, not 127.0.0.1"
        )
    );
    let wrong = runner.wait_for("wrong-name", HealthStatus::Critical).await;
    assert_eq!(
        wrong.output,
        format!(
            "Get \"{url}\": tls: failed to verify certificate: x509: certificate is valid for muster.test, not other.test"
        )
    );
    let by_name = runner.wait_for("by-name", HealthStatus::Passing).await;
    assert_eq!(
        by_name.output,
        format!("HTTP GET {url}: 200 OK Output: all good")
    );
}
