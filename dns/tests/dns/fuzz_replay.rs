//! The fuzz seeds and regressions (`fuzz/corpus`, `fuzz/regressions`) of the DNS targets,
//! replayed through the same entry points without libFuzzer: no input may panic.

use std::sync::Arc;

use muster_dns::{DnsConfig, DnsServer, SharedCatalog};

use crate::support::catalog;

fn inputs(target: &str) -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) {
            out.extend(entries.flatten().map(|e| std::fs::read(e.path()).unwrap()));
        }
    }
    out
}

#[tokio::test]
async fn dns_packets_and_query_names_from_fuzzing() {
    let packets = inputs("dns_packet");
    assert!(packets.len() >= 5, "the seed corpus is there");
    let mut config = DnsConfig::default();
    config.alt_domain = Some("alt.test.".into());
    let server = DnsServer::new(config, Arc::new(SharedCatalog::new(catalog()))).unwrap();
    let mut answered = 0;
    for p in &packets {
        for tcp in [false, true] {
            answered += usize::from(server.answer_fast_for_test(p, tcp, 1).is_some());
            let _ = server.answer_general_for_test(p, tcp, 1).await;
        }
    }
    assert!(answered > 0, "the seeds are real queries");
    for name in inputs("query_name") {
        if name.len() >= 2 {
            let qtype = u16::from_be_bytes([name[0], name[1]]);
            let _ = muster_dns::testing::parse_query_name(&name[2..], qtype);
        }
    }
}
