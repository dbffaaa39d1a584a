//! muster-dns: the DNS server of the muster agent.
//!
//! It answers names under the cluster domain (default `consul.`, plus `alt_domain`) from an
//! in-memory catalog snapshot that the agent publishes, the way Consul's DNS interface
//! does, and forwards every other name to the configured recursors through a cache, which
//! replaces the Bind9 forwarder usually put in front of Consul. It is a leaf library: it
//! knows nothing about Raft, gossip or config files.
//!
//! # Using it
//!
//! ```no_run
//! # async fn demo() -> Result<(), muster_dns::DnsError> {
//! use std::sync::Arc;
//! use muster_dns::{DnsCatalog, DnsConfig, DnsListeners, DnsServer, SharedCatalog};
//! use tokio_util::sync::CancellationToken;
//!
//! let catalog = Arc::new(SharedCatalog::default());
//! let server = DnsServer::new(DnsConfig::default(), catalog.clone())?;
//! let listeners = DnsListeners::bind("127.0.0.1:8600".parse().unwrap(), 2)?;
//! let shutdown = CancellationToken::new();
//! tokio::spawn({
//!     let server = server.clone();
//!     let shutdown = shutdown.clone();
//!     async move { server.run(listeners, shutdown).await }
//! });
//! // Whenever the catalog index changes (last_contact set by the replica):
//! catalog.publish(DnsCatalog { datacenter: "dc1".into(), ..DnsCatalog::default() });
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `config`: [`DnsConfig`] (Consul's `dns_config` keys, our cache settings);
//! - `catalog`: the port, [`CatalogView`], its data [`DnsCatalog`] and [`SharedCatalog`];
//! - `name`, `wire`: the pure query-name parser and the minimal wire format code;
//! - `zone`, `answer`: the catalog indexed per publication, and answer building;
//! - `cache`, `forward`: the forwarder's wire-level cache and upstream exchanges (each
//!   exchange through hickory-resolver's networking layer, hickory-net);
//! - `server`, `socket`: the UDP fast path, the general path, TCP (served by
//!   hickory-server with our request handler), and socket binding;
//! - `stats`, `error`: counters for metrics, and the one error-to-RCODE mapping;
//! - `testing` (feature `testing`): a programmable fake upstream for tests.
//!
//! The behaviour is written up, rule by rule and with every difference from Consul, in
//! `docs/dns.md` at the workspace root.
//!
//! # Where we differ from Consul, on purpose
//!
//! - **Truncation.** Whenever a UDP answer is cut (by `udp_answer_limit` for non-EDNS
//!   clients, or by the message size), the response has **TC=1**, so clients retry over
//!   TCP and get the full set. Consul only sets TC with `enable_truncate = true` (default
//!   false) and otherwise returns a silently partial set (#375, #788, #854).
//!   `enable_truncate` is accepted and ignored. Additional records are trimmed before
//!   answers, and node-meta TXT records are never added to SRV answers (#3937).
//! - **Authoritative for the whole zone.** Zone names are never forwarded: unhandled
//!   types (MX, CAA, ...) get NODATA with the SOA (#6183), node queries for other types
//!   too. Empty non-terminals (`service.consul`, `dc1.consul`) get NODATA instead of
//!   NXDOMAIN, so QNAME-minimising resolvers work. SOA and NS are answered at the apex only;
//!   other names asking SOA/NS get NODATA or NXDOMAIN with the SOA in the authority section.
//! - **EDNS.** The OPT record echoes the client's size clamped to 512..=4096 (the UDP
//!   limit); EDNS versions above 0 get BADVERS. Client-subnet options are not echoed.
//! - **SRV targets.** An instance whose service address equals its node address is
//!   answered with the node name as target (`<node>.node.<dc>.<domain>`), not `.addr`.
//! - **Staleness.** A replica that never heard from the leader (`last_contact = None`)
//!   answers zone queries with SERVFAIL; with `allow_stale = false` at most
//!   [`STRICT_MAX_STALE`] of lag is tolerated.
//! - **Forwarding** (see the `forward` module): a cache (Consul has none) with RFC 2308
//!   negative caching and RFC 8767 serve-stale; RD=0 is answered from the cache only,
//!   otherwise REFUSED (Consul ignores RD); recursors pointing at our own listener are
//!   ignored (loop protection); unknown reverse names without recursors get NXDOMAIN.
//!   Out-of-zone CNAME targets of hostname services are not chased by us (the client's
//!   resolver follows the CNAME); in-zone targets are resolved in the same answer.
//! - **Not supported:** prepared queries (`.query`), Connect, ingress and virtual-IP names,
//!   peering and other datacenters (all NXDOMAIN), DNSSEC, zone transfers (NOTIMP).
//!
//! # Forwarder cache rules
//!
//! Keyed by the lower-cased name, type and class. Positive answers live for the smallest
//! TTL in the answer section (capped by `cache.max_positive_ttl`), negative answers for
//! min(SOA TTL, SOA MINIMUM) when the upstream sent an SOA (capped by
//! `cache.max_negative_ttl`); nothing else is cached. Hits are served with the remaining
//! TTL. When every upstream fails, an entry expired less than `cache.serve_stale` ago is
//! served with TTL 30. Identical concurrent misses share one upstream exchange; at most
//! `max_inflight` queries are on the general path at once, beyond that SERVFAIL.
//! Entry count and bytes are both bounded (approximate LRU eviction).

mod allow;
mod answer;
mod cache;
mod catalog;
mod config;
mod error;
mod forward;
mod name;
mod server;
mod socket;
mod stats;
#[cfg(feature = "testing")]
pub mod testing;
mod wire;
mod zone;

pub use allow::{Net, RecursorAllow};
pub use catalog::{
    CatalogView, DnsCatalog, DnsNode, DnsServiceInstance, InstanceHealth, SharedCatalog, Weights,
};
pub use config::{
    CacheConfig, DnsConfig, MAX_UDP_ANSWER_LIMIT, RecursorStrategy, ServiceTtls, SoaConfig,
};
pub use error::{DnsError, rcode};
pub use server::{DnsServer, MAX_TCP_CONNECTIONS, STRICT_MAX_STALE, TCP_IDLE};
pub use socket::DnsListeners;
pub use stats::{DnsStatsSnapshot, QueryKind, UpstreamStats};
