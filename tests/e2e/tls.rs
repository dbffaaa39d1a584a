//! TLS (issue 4 point 8): a CA and certificates made with the real `muster tls` commands,
//! three Galera servers with `verify_incoming`, `verify_outgoing` and
//! `verify_server_hostname` on the RPC port and an HTTPS API, and client agents with and
//! without valid certificates.
//!
//! What must hold: the cluster forms over TLS and a registration through a client with its
//! certificate reaches every server; an agent without TLS, one whose certificate comes from
//! another CA, and one expecting another server name cannot use the RPC port (their writes
//! fail, their logs say why); a raw plaintext request to the RPC port is refused; the HTTPS
//! API works with the CA, refuses a client without a certificate when `verify_incoming` is
//! on, and accepts one with a certificate (reqwest and the `muster` CLI); silent connections
//! are closed after the handshake timeout.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::cluster::{
    CLUSTER_TIMEOUT, Mysql, Net, client_config, server_config, start_from, start_servers,
    wait_galera,
};
use crate::support::{Agent, run_muster, wait_for};

/// The HTTPS port of every server (Consul's conventional 8501; each server has its own IP).
const HTTPS_PORT: u16 = 8501;

/// Runs a `muster tls` command that must succeed.
async fn tls_cmd(args: &[&str]) {
    let done = run_muster(args, &[]).await;
    assert_eq!(done.code, Some(0), "muster {args:?}: {done:?}");
}

/// Makes, in `dir`, a CA, three server certificates (`dc1-server-consul-{0,1,2}`) and one client
/// certificate (`dc1-client-consul-0`) with the real CLI.
async fn make_certs(dir: &Path) {
    std::fs::create_dir_all(dir).expect("cert dir");
    let d = format!("-dir={}", dir.display());
    tls_cmd(&["tls", "ca", "create", &d]).await;
    for _ in 0..3 {
        tls_cmd(&["tls", "cert", "create", "-server", &d]).await;
    }
    tls_cmd(&["tls", "cert", "create", "-client", &d]).await;
}

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// Writes `json` as `tls.json` into an agent's config dir.
fn add_file(config_dir: &Path, json: &Value) {
    std::fs::write(config_dir.join("tls.json"), json.to_string()).expect("tls.json");
}

/// GET `https://localhost:<port>/v1/status/leader` (the client resolves `localhost` to the
/// server): the status, or the error with its causes.
async fn https_leader(client: &reqwest::Client, addr: SocketAddr) -> Result<u16, String> {
    let url = format!("https://localhost:{}/v1/status/leader", addr.port());
    match client.get(url).send().await {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => {
            let mut text = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                text.push_str(": ");
                text.push_str(&s.to_string());
                src = s.source();
            }
            Err(text)
        }
    }
}

/// Registers an external node through `agent`; the status (200 on success).
async fn register(agent: &Agent, node: &str) -> u16 {
    let body = json!({
        "Node": node, "Address": "192.0.2.20",
        "Service": {"Service": "tlsweb", "ID": node, "Port": 80}
    });
    agent.put("/v1/catalog/register", Some(&body)).await.status
}

/// True when `agent`'s catalog (its local view) lists `node`.
async fn has_node(agent: &Agent, node: &str) -> bool {
    let r = agent.get(&format!("/v1/catalog/node/{node}?stale")).await;
    r.status == 200 && r.json()["Node"]["Node"] == node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_refuses_agents_without_a_valid_certificate() {
    let net = Net(9);
    let tmp = tempfile::tempdir().expect("temp dir");
    let certs = tmp.path().join("certs");
    make_certs(&certs).await;
    // Another CA with its own client certificate, and a server certificate of our CA for
    // another datacenter (its name is server.dc9.consul).
    let other = tmp.path().join("other-ca");
    make_certs(&other).await;
    let ca = p(&certs, "consul-agent-ca.pem");

    // --- three servers: mutual TLS on the RPC port, HTTPS on 8501 ---------------------------
    let mut mysql = Vec::new();
    for i in 0..3 {
        mysql.push(Mysql::open(SocketAddr::new(net.server(i).into(), 0)).await);
    }
    let dirs: Vec<PathBuf> = (0..3)
        .map(|i| server_config(tmp.path(), net, i, mysql[i].addr, "2s"))
        .collect();
    for (i, dir) in dirs.iter().enumerate() {
        let mut tls = json!({
            "defaults": {
                "ca_file": ca,
                "cert_file": p(&certs, &format!("dc1-server-consul-{i}.pem")),
                "key_file": p(&certs, &format!("dc1-server-consul-{i}-key.pem")),
                "verify_incoming": true,
                "verify_outgoing": true
            },
            "internal_rpc": {"verify_server_hostname": true}
        });
        if i == 1 {
            // db2's HTTPS API takes any TLS client (its RPC port still requires certificates).
            tls["https"] = json!({"verify_incoming": false});
        }
        add_file(
            dir,
            &json!({
                "tls": tls,
                "ports": {"https": HTTPS_PORT},
                "limits": {"https_handshake_timeout": "1s", "rpc_handshake_timeout": "1s"}
            }),
        );
    }
    let servers = start_servers(&dirs).await;
    let all: BTreeSet<Ipv4Addr> = (0..3).map(|i| net.server(i)).collect();
    {
        let everyone: Vec<&Agent> = servers.iter().collect();
        let took = wait_galera("the TLS cluster answering", &everyone, &all).await;
        println!("TLS cluster formed after {took:?}");
    }
    for s in &servers {
        assert!(
            s.stdout.contains("TLS-Outgoing: true, TLS-Incoming: true"),
            "banner: {}",
            s.stdout.text()
        );
        assert!(s.stdout.contains(&format!(
            "https={}",
            SocketAddr::new(s.http.ip(), HTTPS_PORT)
        )));
    }

    // --- a client agent with its certificate: writes reach every server -------------------
    let good_dir = client_config(tmp.path(), net, 0, None);
    add_file(
        &good_dir,
        &json!({"tls": {
            "defaults": {"ca_file": ca,
                         "cert_file": p(&certs, "dc1-client-consul-0.pem"),
                         "key_file": p(&certs, "dc1-client-consul-0-key.pem"),
                         "verify_outgoing": true},
            "internal_rpc": {"verify_server_hostname": true}
        }}),
    );
    let good = start_from(&good_dir).await;
    wait_galera("the TLS client answering from its replica", &[&good], &all).await;
    wait_for(
        "a write through the TLS client",
        CLUSTER_TIMEOUT,
        || async { register(&good, "tls-ext-good").await == 200 },
    )
    .await;
    for s in &servers {
        wait_for("the write on every server", CLUSTER_TIMEOUT, || async {
            has_node(s, "tls-ext-good").await
        })
        .await;
    }

    // --- agents that cannot use the RPC port ---------------------------------------------
    // No TLS at all: plaintext to a verify_incoming port.
    let plain = start_from(&client_config(tmp.path(), net, 1, None)).await;
    // A certificate from another CA (and that CA as its only root).
    let foreign_dir = client_config(tmp.path(), net, 2, None);
    add_file(
        &foreign_dir,
        &json!({"tls": {"defaults": {
            "ca_file": p(&other, "consul-agent-ca.pem"),
            "cert_file": p(&other, "dc1-client-consul-0.pem"),
            "key_file": p(&other, "dc1-client-consul-0-key.pem"),
            "verify_outgoing": true}}}),
    );
    let foreign = start_from(&foreign_dir).await;
    // Our CA and a valid client certificate, but it expects servers of another domain
    // (server.dc1.elsewhere): the servers' certificates are for the wrong hostname.
    let wrong_name_dir = client_config(tmp.path(), net, 3, None);
    add_file(
        &wrong_name_dir,
        &json!({"domain": "elsewhere", "tls": {
            "defaults": {"ca_file": ca,
                         "cert_file": p(&certs, "dc1-client-consul-0.pem"),
                         "key_file": p(&certs, "dc1-client-consul-0-key.pem"),
                         "verify_outgoing": true},
            "internal_rpc": {"verify_server_hostname": true}}}),
    );
    let wrong_name = start_from(&wrong_name_dir).await;

    let refused = [
        (&plain, "requires TLS on its RPC port"),
        (&foreign, "UnknownIssuer"),
        (&wrong_name, "server.dc1.elsewhere"),
    ];
    for (agent, reason) in refused {
        // It joined by gossip (not TLS) and knows the servers...
        wait_for(
            "the bad agent to see the servers",
            CLUSTER_TIMEOUT,
            || async {
                let r = agent.get("/v1/agent/members").await;
                r.status == 200 && r.text.contains("db1") && r.text.contains("db3")
            },
        )
        .await;
        // ...but its log says why it cannot stream from them,
        wait_for(
            "the TLS reason in the bad agent's log",
            CLUSTER_TIMEOUT,
            || async { agent.stderr.contains(reason) },
        )
        .await;
        // its writes fail, and its catalog never shows the cluster's data.
        let status = register(agent, "tls-ext-bad").await;
        assert_ne!(status, 200, "a write through an agent the servers refuse");
        assert!(!has_node(agent, "tls-ext-good").await);
    }
    for s in &servers {
        assert!(
            !has_node(s, "tls-ext-bad").await,
            "nothing reached the servers"
        );
    }
    // The wrong-name agent's log names rustls' reason.
    assert!(
        wrong_name.stderr.contains("not valid for name"),
        "{}",
        wrong_name.stderr.text()
    );

    // --- a raw plaintext HTTP request to the RPC port is refused --------------------------
    let rpc = servers[0].server.expect("RPC address");
    let mut raw = TcpStream::connect(rpc)
        .await
        .expect("connect to the RPC port");
    raw.write_all(
        b"POST /rpc/v1/write HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 2\r\n\r\n{}",
    )
    .await
    .expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut answer))
        .await
        .expect("the RPC port closes the plaintext connection")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
    assert!(answer.contains("requires TLS"), "{answer}");
    wait_for(
        "the server's warning with the peer",
        CLUSTER_TIMEOUT,
        || async { servers[0].stderr.contains("plaintext connection refused") },
    )
    .await;

    // --- a silent connection to the RPC port is closed after rpc_handshake_timeout -------
    let mut silent = TcpStream::connect(rpc).await.expect("connect");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("closed within the handshake timeout");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");

    // --- HTTPS API ---------------------------------------------------------------------------
    let https = |i: usize| SocketAddr::new(net.server(i).into(), HTTPS_PORT);
    let ca_path = certs.join("consul-agent-ca.pem");
    let resolve = |i: usize, client_cert: Option<(&Path, &Path)>| {
        https_client(&ca_path, client_cert, https(i))
    };
    let client_cert = (
        certs.join("dc1-client-consul-0.pem"),
        certs.join("dc1-client-consul-0-key.pem"),
    );
    // db2 (no verify_incoming on HTTPS): the CA alone is enough.
    let r = https_leader(&resolve(1, None), https(1)).await;
    assert_eq!(r, Ok(200), "HTTPS with the CA on db2");
    // db1 (verify_incoming): no client certificate, refused at the handshake...
    let r = https_leader(&resolve(0, None), https(0)).await;
    assert!(r.is_err(), "HTTPS without a client certificate: {r:?}");
    // ...a certificate of another CA too...
    let other_cert = (
        other.join("dc1-client-consul-0.pem"),
        other.join("dc1-client-consul-0-key.pem"),
    );
    let r = https_leader(&resolve(0, Some((&other_cert.0, &other_cert.1))), https(0)).await;
    assert!(r.is_err(), "HTTPS with another CA's certificate: {r:?}");
    // ...and with ours it works.
    let r = https_leader(
        &resolve(0, Some((&client_cert.0, &client_cert.1))),
        https(0),
    )
    .await;
    assert_eq!(r, Ok(200), "HTTPS with a client certificate");
    // The plain HTTP API is still there.
    assert_eq!(servers[0].get("/v1/status/leader").await.status, 200);

    // The CLI: flags, then the CONSUL_* variables.
    let addr = format!("-http-addr=https://{}", https(0));
    let ca_flag = format!("-ca-file={ca}");
    let cert_flag = format!("-client-cert={}", client_cert.0.display());
    let key_flag = format!("-client-key={}", client_cert.1.display());
    let name_flag = "-tls-server-name=server.dc1.consul";
    let ok = run_muster(
        &["members", &addr, &ca_flag, &cert_flag, &key_flag, name_flag],
        &[],
    )
    .await;
    assert_eq!(ok.code, Some(0), "{ok:?}");
    assert!(ok.stdout.contains("db1"), "{ok:?}");
    let no_cert = run_muster(&["members", &addr, &ca_flag, name_flag], &[]).await;
    assert_eq!(no_cert.code, Some(1), "{no_cert:?}");
    // Without -tls-server-name the address dialled (127.0.9.11) is not in the certificate.
    let wrong_host = run_muster(&["members", &addr, &ca_flag, &cert_flag, &key_flag], &[]).await;
    assert_eq!(wrong_host.code, Some(1), "{wrong_host:?}");
    assert!(
        wrong_host.stderr.contains("not valid for name"),
        "{wrong_host:?}"
    );
    let by_env = run_muster(
        &["members"],
        &[
            ("CONSUL_HTTP_ADDR", &https(0).to_string()),
            ("CONSUL_HTTP_SSL", "true"),
            ("CONSUL_CACERT", &ca),
            ("CONSUL_CLIENT_CERT", &client_cert.0.display().to_string()),
            ("CONSUL_CLIENT_KEY", &client_cert.1.display().to_string()),
            ("CONSUL_TLS_SERVER_NAME", "server.dc1.consul"),
        ],
    )
    .await;
    assert_eq!(by_env.code, Some(0), "{by_env:?}");

    // --- a silent HTTPS client is cut off after https_handshake_timeout --------------------
    let mut silent = TcpStream::connect(https(0)).await.expect("connect");
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("closed within the HTTPS handshake timeout");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
}

/// A client for the HTTPS API with the standard WebPKI verifier (the test's own, not
/// muster's): the CA as the only root, optionally a client certificate, and `localhost`
/// resolved to `addr` (server certificates name `localhost`, not the test's 127.0.x.y).
fn https_client(
    ca: &Path,
    client: Option<(&Path, &Path)>,
    localhost: SocketAddr,
) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA PEM")).expect("CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .expect("cert file")
                .collect::<Result<Vec<_>, _>>()
                .expect("cert PEM");
            let key = PrivateKeyDer::from_pem_file(key).expect("key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .tls_backend_preconfigured(config)
        .resolve("localhost", localhost)
        .build()
        .expect("https client")
}
