//! The muster agent: configuration, local state, anti-entropy, the HTTP API, the CLI and the
//! glue that runs the catalog server, the DNS server and the health checks together.
//!
//! Layout:
//! - [`config`]: Consul-compatible config files and flags → one typed `RuntimeConfig`;
//! - [`duration`]: Go duration strings;
//! - [`node`]: this agent's identity, the member list, the control channel;
//! - [`local`]: services and checks this agent hosts (the source of truth for them), their
//!   persistence in `data_dir`, health-check wiring and anti-entropy into the catalog;
//! - [`http`]: the `/v1` HTTP API;
//! - [`runtime`]: start-up, logging, listeners, the catalog server, DNS, signals, shutdown;
//! - [`cli`]: the `muster` subcommands.

pub mod acl;
pub mod cli;
pub mod config;
pub mod duration;
pub mod gossip;
pub mod http;
pub mod local;
pub mod node;
pub mod runtime;
pub mod tls;

/// Every file of `fuzz/corpus/<target>` and `fuzz/regressions/<target>` (the seeds and the
/// crashes fuzzing found), for the unit tests that replay them without libFuzzer.
#[cfg(test)]
pub(crate) fn fuzz_inputs(target: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            out.push((
                e.path(),
                std::fs::read(e.path()).expect("readable fuzz input"),
            ));
        }
    }
    out
}
