//! End-to-end suite: starts the real `muster` binary (`CARGO_BIN_EXE_muster`) on loopback
//! port 0s in temp dirs and talks to it as users do: a DNS client over UDP and TCP, HTTP
//! with reqwest, the `muster` CLI, signals. One `mod` per topic of issue part 10; the
//! harness is in `support`.
//!
//! Run it with `cargo test -p muster --test e2e` (add `-- --nocapture` to see the seed
//! scenario's measured times).

mod acl;
mod cli;
mod cluster;
mod config_errors;
mod dev;
mod dns_zone;
mod faults;
mod forwarding;
mod http_api;
mod keyring;
mod logging;
mod loss;
mod maintenance;
mod partition;
mod restart;
mod script_checks;
mod seed;
mod support;
mod tls;
