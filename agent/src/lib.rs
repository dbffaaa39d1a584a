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
