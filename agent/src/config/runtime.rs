//! The runtime configuration: the merged value tree decoded into typed structs, defaulted as
//! Consul's `default.go` does and validated with Consul's messages (`builder.go`).
//!
//! Invariants of a [`RuntimeConfig`]: every field has its final value (no "unset" left but
//! the genuinely optional ones), addresses are parsed, durations are `Duration`s, services
//! and checks are fully decoded with unique IDs, and every error on the way named the file
//! (or "command-line flags") that set the offending value and the key.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::definition::{
    CheckDefinition, FILE_SCRIPTS_DISABLED, ScriptCheckPolicy, ServiceDefinition, decode_check,
    decode_service, validate_meta,
};
use super::error::{ConfigError, Problem};
use super::merge::Origins;
use super::normalize::{Mode, index, join};
use crate::duration::format_duration;

/// Everything the agent needs from its configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// Started with `-dev`.
    pub dev_mode: bool,
    /// This node's name (default: the hostname).
    pub node_name: String,
    /// This node's ID when configured; otherwise the agent persists a random one in `data_dir`.
    pub node_id: Option<uuid::Uuid>,
    /// The datacenter, lower case.
    pub datacenter: String,
    /// Where state lives. Empty only in dev mode before [`super::DevDataDir`] fills it in.
    pub data_dir: PathBuf,
    /// Node metadata (also served as DNS TXT records).
    pub node_meta: BTreeMap<String, String>,
    /// `bind_addr`: cluster traffic (gossip, server RPC).
    pub bind_addr: IpAddr,
    /// `client_addr`: where HTTP and DNS listen unless `addresses` says otherwise.
    pub client_addrs: Vec<IpAddr>,
    /// The ports; `None` means disabled (-1), `Some(0)` an ephemeral port.
    pub ports: Ports,
    /// Raft server settings.
    pub server: ServerSettings,
    /// Gossip (LAN membership) settings.
    pub gossip: GossipSettings,
    /// HTTP API settings.
    pub http: HttpSettings,
    /// ACL settings (`acl {}` and the old `acl_*` keys).
    pub acl: AclSettings,
    /// TLS settings (`tls {}` and the old top-level `ca_file`, `verify_*` keys).
    pub tls: TlsSettings,
    /// DNS server and forwarder settings.
    pub dns: DnsSettings,
    /// Logging settings.
    pub logging: LogSettings,
    /// Health check settings shared by every check.
    pub check_settings: CheckSettings,
    /// Leave the cluster gracefully on SIGTERM (default: clients yes, servers no).
    pub leave_on_terminate: bool,
    /// Skip the graceful leave on SIGINT (default: servers yes, clients no).
    pub skip_leave_on_interrupt: bool,
    /// Write the PID here.
    pub pid_file: Option<PathBuf>,
    /// Accepted for compatibility; muster never phones home.
    pub disable_update_check: bool,
    /// Services from the config files.
    pub services: Vec<ServiceDefinition>,
    /// Standalone checks from the config files.
    pub checks: Vec<CheckDefinition>,
}

impl RuntimeConfig {
    /// True in dev mode when no data dir was configured: call
    /// [`super::DevDataDir::attach`] before starting.
    pub fn needs_dev_data_dir(&self) -> bool {
        self.dev_mode && self.data_dir.as_os_str().is_empty()
    }

    /// Which script checks are allowed (for HTTP API registrations).
    pub fn script_checks(&self) -> ScriptCheckPolicy {
        self.check_settings.scripts
    }
}

/// The listener ports (`ports {}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// DNS, UDP and TCP (default 8600).
    pub dns: Option<u16>,
    /// HTTP API (default 8500).
    pub http: Option<u16>,
    /// HTTPS API (default disabled, as Consul; 8501 by convention).
    pub https: Option<u16>,
    /// LAN gossip (default 8301; cannot be disabled).
    pub serf_lan: u16,
    /// WAN gossip (default 8302; muster has no WAN gossip yet).
    pub serf_wan: Option<u16>,
    /// Server RPC / Raft (default 8300; cannot be disabled).
    pub server: u16,
}

/// Raft server settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSettings {
    /// Run as a server.
    pub enabled: bool,
    /// Elect itself without waiting for peers.
    pub bootstrap: bool,
    /// Servers to wait for before the first election (0: not set).
    pub bootstrap_expect: u32,
    /// `performance.raft_multiplier` (1 = fastest timing, Consul's default 5).
    pub raft_multiplier: u32,
    /// Where the server RPC listener binds (`bind_addr` and `ports.server`).
    pub rpc_addr: SocketAddr,
}

/// Gossip (LAN membership) settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipSettings {
    /// Where gossip binds (`bind_addr` and `ports.serf_lan`).
    pub bind: SocketAddr,
    /// The advertised address, when configured (otherwise derived from the bind address).
    pub advertise_addr: Option<IpAddr>,
    /// The advertised WAN address, when configured.
    pub advertise_addr_wan: Option<IpAddr>,
    /// The gossip encryption key.
    pub encrypt_key: Option<GossipKey>,
    /// Refuse unencrypted incoming gossip.
    pub encrypt_verify_incoming: bool,
    /// Encrypt outgoing gossip.
    pub encrypt_verify_outgoing: bool,
    /// Agents to join: IPs, `ip:port`, hostnames, `[v6]:port`; `start_join` and `-join`
    /// end up here too.
    pub retry_join: Vec<String>,
    /// Time between join attempts.
    pub retry_interval: Duration,
    /// Join attempts before giving up (0: forever).
    pub retry_max: u32,
    /// Rejoin after a graceful leave.
    pub rejoin_after_leave: bool,
    /// How long failed nodes are kept before they are reaped (at least 8h).
    pub reconnect_timeout: Duration,
}

/// HTTP API settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Listen addresses (`addresses.http`, else `client_addr`, with `ports.http`); empty when
    /// the port is disabled.
    pub addrs: Vec<SocketAddr>,
    /// HTTPS listen addresses (`addresses.https`, else `client_addr`, with `ports.https`);
    /// empty when the port is disabled (the default).
    pub https_addrs: Vec<SocketAddr>,
    /// Concurrent connections per client IP (0: unlimited).
    pub max_conns_per_client: u32,
    /// Largest request header block in bytes (`http_config.max_header_bytes`; 431 beyond).
    pub max_header_bytes: usize,
    /// Time for a client to send a request's header block (slowloris bound); also how long
    /// an idle keep-alive connection stays open. No config key (Consul has none).
    pub header_read_timeout: Duration,
    /// Time for a request body to arrive; 408 beyond. No config key.
    pub body_read_timeout: Duration,
    /// Blocking queries waiting at once per listener; 429 beyond. No config key.
    pub max_blocking_queries: usize,
    /// Default blocking-query wait.
    pub default_query_time: Duration,
    /// Longest blocking-query wait.
    pub max_query_time: Duration,
}

/// TLS settings: `tls.defaults` merged under `tls.https` and `tls.internal_rpc` (a value set
/// on the interface wins), as Consul; the old top-level keys are moved under `tls` by
/// `normalize`. Paths are as configured; the files were read and checked when the
/// configuration was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The HTTPS API.
    pub https: TlsInterface,
    /// The server RPC port, and every RPC this agent makes to servers.
    pub internal_rpc: TlsInterface,
    /// Outgoing RPCs check that the server's certificate is valid for
    /// `server.<datacenter>.<domain>` (`tls.internal_rpc.verify_server_hostname`; implies
    /// `verify_outgoing`, as in Consul since 1.4.3).
    pub verify_server_hostname: bool,
    /// The name checked with `verify_server_hostname`: `server.<datacenter>.<domain>`.
    pub server_name: String,
    /// Time a client has to complete the TLS handshake on the HTTPS port
    /// (`limits.https_handshake_timeout`, default 5 s).
    pub https_handshake_timeout: Duration,
    /// Time a connection to the server RPC port has to send its first byte and complete the
    /// TLS handshake (`limits.rpc_handshake_timeout`, default 5 s).
    pub rpc_handshake_timeout: Duration,
}

/// The TLS settings of one interface (`tls.https`, `tls.internal_rpc`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInterface {
    /// A PEM file of CA certificates.
    pub ca_file: Option<PathBuf>,
    /// A directory of PEM CA certificate files.
    pub ca_path: Option<PathBuf>,
    /// This agent's certificate (PEM, the chain after it).
    pub cert_file: Option<PathBuf>,
    /// This agent's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Incoming connections must be TLS with a client certificate signed by the CA.
    pub verify_incoming: bool,
    /// Outgoing connections use TLS and check the peer's certificate against the CA (RPCs
    /// only: always false for HTTPS, which has no outgoing side in muster).
    pub verify_outgoing: bool,
    /// The oldest TLS version accepted or offered.
    pub min_version: TlsVersion,
    /// The TLS 1.2 cipher suites allowed, in order of preference, by Go's names
    /// (`tls_cipher_suites`); empty: rustls' defaults. TLS 1.3 suites are not configurable.
    pub cipher_suites: Vec<String>,
}

impl TlsInterface {
    /// True when the interface has a certificate and key (a TLS listener can start).
    pub fn has_cert(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }

    /// True when a CA is configured.
    pub fn has_ca(&self) -> bool {
        self.ca_file.is_some() || self.ca_path.is_some()
    }
}

/// `tls_min_version`: rustls speaks TLS 1.2 and 1.3 only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsVersion {
    /// `TLSv1_2` (Consul's default).
    #[default]
    Tls12,
    /// `TLSv1_3`.
    Tls13,
}

/// ACL settings (`acl {}`; the old top-level `acl_*` keys are moved here by `normalize`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclSettings {
    /// ACLs are enforced.
    pub enabled: bool,
    /// Where no rule of a token speaks (`default_policy`, default allow).
    pub default_policy: crate::acl::DefaultPolicy,
    /// What happens when no server can resolve a token (`down_policy`).
    pub down_policy: DownPolicy,
    /// How long a resolved token is cached on a client agent (`token_ttl`, default 30 s).
    pub token_ttl: Duration,
    /// The tokens the agent itself uses.
    pub tokens: AclTokens,
}

/// `acl.down_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownPolicy {
    /// Every request is allowed.
    Allow,
    /// Every request is denied.
    Deny,
    /// A token resolved before keeps its cached rights (`extend-cache`, the default, and
    /// `async-cache`); others are denied.
    ExtendCache,
}

/// `acl.tokens`: secrets, never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AclTokens {
    /// Created with `global-management` by the first leader (`initial_management`).
    pub initial_management: Option<String>,
    /// The agent's own catalog writes (`agent`).
    pub agent: Option<String>,
    /// `agent:write` on this agent even when no server answers (`agent_recovery`).
    pub agent_recovery: Option<String>,
    /// Requests without a token (`default`; else the anonymous token).
    pub default: Option<String>,
    /// DNS lookups (`dns`; else `default`).
    pub dns: Option<String>,
}

impl std::fmt::Debug for AclTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |t: &Option<String>| if t.is_some() { "<set>" } else { "<none>" };
        f.debug_struct("AclTokens")
            .field("initial_management", &set(&self.initial_management))
            .field("agent", &set(&self.agent))
            .field("agent_recovery", &set(&self.agent_recovery))
            .field("default", &set(&self.default))
            .field("dns", &set(&self.dns))
            .finish()
    }
}

/// DNS settings (`domain`, `alt_domain`, `recursors`, `dns_config {}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// Listen addresses, UDP and TCP (`addresses.dns`, else `client_addr`, with `ports.dns`).
    pub addrs: Vec<SocketAddr>,
    /// The cluster domain, lower case, with its trailing dot (`consul.`).
    pub domain: String,
    /// A second domain answered the same way, normalized like `domain`.
    pub alt_domain: Option<String>,
    /// Upstream resolvers for every other name, deduplicated, port 53 unless given.
    pub recursors: Vec<SocketAddr>,
    /// Clients that may use the recursors (`dns_config.recursor_allow`; default
    /// `localhost` and `localnets`), so an agent bound beyond loopback is no open resolver.
    pub recursor_allow: muster_dns::RecursorAllow,
    /// How upstreams are tried.
    pub recursor_strategy: RecursorStrategy,
    /// Timeout of one upstream query.
    pub recursor_timeout: Duration,
    /// Answer from the local replica even when it may be stale.
    pub allow_stale: bool,
    /// The oldest acceptable replica data.
    pub max_stale: Duration,
    /// TTL of node records.
    pub node_ttl: Duration,
    /// TTL of service records by service name (`*` and `prefix*` patterns allowed).
    pub service_ttl: BTreeMap<String, Duration>,
    /// Return only passing instances (drop warning ones too).
    pub only_passing: bool,
    /// Answers in a non-EDNS UDP response (0..=8).
    pub udp_answer_limit: u8,
    /// Maximum A/AAAA records in an answer (0: unlimited).
    pub a_record_limit: u32,
    /// Set TC when answers were trimmed.
    pub enable_truncate: bool,
    /// Do not compress names in responses.
    pub disable_compression: bool,
    /// Add node metadata TXT records to SRV answers.
    pub enable_additional_node_meta_txt: bool,
    /// The SOA record's timers.
    pub soa: SoaSettings,
}

/// How the DNS forwarder tries its upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecursorStrategy {
    /// In the configured order.
    Sequential,
    /// In random order.
    Random,
}

/// The SOA timers, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoaSettings {
    /// Refresh.
    pub refresh: u32,
    /// Retry.
    pub retry: u32,
    /// Expire.
    pub expire: u32,
    /// Minimum TTL (also the negative-answer TTL).
    pub min_ttl: u32,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// The level.
    pub level: LogLevel,
    /// JSON lines instead of text.
    pub json: bool,
    /// Also log to syslog.
    pub syslog: bool,
    /// The syslog facility, upper case (`LOCAL0`).
    pub syslog_facility: String,
}

/// A log level, read case-insensitively as Consul does (`INFO`, `info`, `warn`, `err`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// trace
    Trace,
    /// debug
    Debug,
    /// info
    Info,
    /// warn
    Warn,
    /// error
    Error,
}

impl LogLevel {
    /// Reads a level; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" | "warning" => LogLevel::Warn,
            "err" | "error" => LogLevel::Error,
            _ => return None,
        })
    }

    /// The matching `tracing` level.
    pub fn as_tracing(self) -> tracing::Level {
        match self {
            LogLevel::Trace => tracing::Level::TRACE,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Error => tracing::Level::ERROR,
        }
    }

    /// Lower-case name, as `tracing_subscriber::EnvFilter` reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Settings shared by every health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckSettings {
    /// How often output-only changes are synced to the catalog (0: every change).
    pub update_interval: Duration,
    /// The agent-wide cap on check output, in bytes.
    pub output_max_size: usize,
    /// Drop check output entirely.
    pub discard_output: bool,
    /// Which script checks are allowed.
    pub scripts: ScriptCheckPolicy,
}

/// A gossip encryption key: 16, 24 or 32 bytes (AES-128, -192, -256).
#[derive(Clone, PartialEq, Eq)]
pub struct GossipKey(Vec<u8>);

impl GossipKey {
    /// Decodes and checks a base64 key as `encrypt` holds it.
    pub fn from_base64(s: &str) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| format!("encrypt has invalid key: {e}"))?;
        if !matches!(bytes.len(), 16 | 24 | 32) {
            return Err("Invalid key: key size must be 16, 24 or 32 bytes".to_owned());
        }
        Ok(GossipKey(bytes))
    }

    /// The raw key.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key in base64, as `encrypt` and `muster keygen` spell it.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.0)
    }
}

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "GossipKey(<{} bytes>)", self.0.len())
    }
}

// ---------------------------------------------------------------------------------------------
// The typed view of the merged tree. Only keys muster implements appear; every one is
// optional so that defaults are applied (and blamed) in one place below.

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileConfig {
    addresses: FileAddresses,
    advertise_addr: Option<String>,
    advertise_addr_wan: Option<String>,
    alt_domain: Option<String>,
    bind_addr: Option<String>,
    bootstrap: Option<bool>,
    bootstrap_expect: Option<i64>,
    check_output_max_size: Option<i64>,
    #[serde(with = "crate::duration::serde_go::option")]
    check_update_interval: Option<Duration>,
    checks: Vec<Value>,
    client_addr: Option<String>,
    data_dir: Option<String>,
    datacenter: Option<String>,
    #[serde(with = "crate::duration::serde_go::option")]
    default_query_time: Option<Duration>,
    disable_update_check: Option<bool>,
    discard_check_output: Option<bool>,
    dns_config: FileDns,
    domain: Option<String>,
    enable_local_script_checks: Option<bool>,
    enable_script_checks: Option<bool>,
    enable_syslog: Option<bool>,
    encrypt: Option<String>,
    encrypt_verify_incoming: Option<bool>,
    encrypt_verify_outgoing: Option<bool>,
    leave_on_terminate: Option<bool>,
    limits: FileLimits,
    http_config: FileHttpConfig,
    acl: FileAcl,
    tls: FileTls,
    log_json: Option<bool>,
    log_level: Option<String>,
    #[serde(with = "crate::duration::serde_go::option")]
    max_query_time: Option<Duration>,
    node_id: Option<String>,
    node_meta: Option<BTreeMap<String, String>>,
    node_name: Option<String>,
    performance: FilePerformance,
    pid_file: Option<String>,
    ports: FilePorts,
    #[serde(with = "crate::duration::serde_go::option")]
    reconnect_timeout: Option<Duration>,
    recursors: Vec<String>,
    rejoin_after_leave: Option<bool>,
    #[serde(with = "crate::duration::serde_go::option")]
    retry_interval: Option<Duration>,
    retry_join: Vec<String>,
    retry_max: Option<i64>,
    server: Option<bool>,
    services: Vec<Value>,
    skip_leave_on_interrupt: Option<bool>,
    syslog_facility: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileAddresses {
    dns: Option<String>,
    http: Option<String>,
    https: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileTls {
    defaults: FileTlsProtocol,
    https: FileTlsProtocol,
    internal_rpc: FileTlsProtocol,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileTlsProtocol {
    ca_file: Option<String>,
    ca_path: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    tls_min_version: Option<String>,
    tls_cipher_suites: Option<String>,
    verify_incoming: Option<bool>,
    verify_outgoing: Option<bool>,
    verify_server_hostname: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FilePorts {
    dns: Option<i64>,
    http: Option<i64>,
    https: Option<i64>,
    serf_lan: Option<i64>,
    serf_wan: Option<i64>,
    server: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileLimits {
    http_max_conns_per_client: Option<i64>,
    #[serde(with = "crate::duration::serde_go::option")]
    https_handshake_timeout: Option<Duration>,
    #[serde(with = "crate::duration::serde_go::option")]
    rpc_handshake_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileAcl {
    enabled: Option<bool>,
    default_policy: Option<String>,
    down_policy: Option<String>,
    #[serde(with = "crate::duration::serde_go::option")]
    token_ttl: Option<Duration>,
    tokens: FileAclTokens,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileAclTokens {
    initial_management: Option<String>,
    agent: Option<String>,
    agent_recovery: Option<String>,
    default: Option<String>,
    dns: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileHttpConfig {
    max_header_bytes: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FilePerformance {
    raft_multiplier: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct GoDuration(#[serde(with = "crate::duration::serde_go")] Duration);

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileDns {
    allow_stale: Option<bool>,
    a_record_limit: Option<i64>,
    disable_compression: Option<bool>,
    enable_truncate: Option<bool>,
    #[serde(with = "crate::duration::serde_go::option")]
    max_stale: Option<Duration>,
    #[serde(with = "crate::duration::serde_go::option")]
    node_ttl: Option<Duration>,
    only_passing: Option<bool>,
    recursor_allow: Option<Vec<String>>,
    recursor_strategy: Option<String>,
    #[serde(with = "crate::duration::serde_go::option")]
    recursor_timeout: Option<Duration>,
    service_ttl: Option<BTreeMap<String, GoDuration>>,
    udp_answer_limit: Option<i64>,
    enable_additional_node_meta_txt: Option<bool>,
    soa: FileSoa,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileSoa {
    refresh: Option<i64>,
    retry: Option<i64>,
    expire: Option<i64>,
    min_ttl: Option<i64>,
}

/// Blames errors on the source that set the key.
struct Blame<'a> {
    origins: &'a Origins,
}

impl Blame<'_> {
    fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::invalid(self.origins.get(key), key, message)
    }

    fn origin(&self, key: &str) -> String {
        self.origins.get(key).unwrap_or("(defaults)").to_owned()
    }

    /// A problem found inside the definition at `prefix`.
    fn problem(&self, prefix: &str, p: Problem) -> ConfigError {
        let key = if p.path.is_empty() {
            prefix.to_owned()
        } else {
            join(prefix, &p.path)
        };
        let origin = self.origins.get(prefix);
        match p.kind {
            super::error::ProblemKind::UnknownKey => ConfigError::UnknownKey {
                file: origin.unwrap_or("(defaults)").to_owned(),
                key,
            },
            _ => ConfigError::invalid(origin, key, p.message),
        }
    }
}

/// Consul's defaults (`default.go`), for the values muster uses.
mod defaults {
    use std::time::Duration;
    pub const DATACENTER: &str = "dc1";
    pub const DOMAIN: &str = "consul.";
    pub const BIND_ADDR: &str = "0.0.0.0";
    pub const CLIENT_ADDR: &str = "127.0.0.1";
    pub const PORT_DNS: i64 = 8600;
    pub const PORT_HTTP: i64 = 8500;
    pub const PORT_HTTPS: i64 = -1;
    pub const PORT_SERF_LAN: i64 = 8301;
    pub const PORT_SERF_WAN: i64 = 8302;
    pub const PORT_SERVER: i64 = 8300;
    pub const RETRY_INTERVAL: Duration = Duration::from_secs(30);
    pub const RECONNECT_TIMEOUT: Duration = Duration::from_secs(72 * 3600);
    pub const RECONNECT_TIMEOUT_MIN: Duration = Duration::from_secs(8 * 3600);
    pub const CHECK_UPDATE_INTERVAL: Duration = Duration::from_secs(300);
    pub const CHECK_OUTPUT_MAX_SIZE: i64 = 4096;
    pub const DEFAULT_QUERY_TIME: Duration = Duration::from_secs(300);
    pub const MAX_QUERY_TIME: Duration = Duration::from_secs(600);
    pub const HTTP_MAX_CONNS_PER_CLIENT: i64 = 200;
    pub const HTTPS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
    pub const RPC_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
    pub const RAFT_MULTIPLIER: i64 = 5;
    pub const MAX_RAFT_MULTIPLIER: i64 = 10;
    pub const MAX_STALE: Duration = Duration::from_secs(87600 * 3600);
    pub const RECURSOR_TIMEOUT: Duration = Duration::from_secs(2);
    pub const MAX_HEADER_BYTES: usize = 64 * 1024;
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
    pub const MAX_BLOCKING_QUERIES: usize = 4096;
    pub const MAX_MAX_HEADER_BYTES: usize = 16 * 1024 * 1024;
    pub const UDP_ANSWER_LIMIT: i64 = 3;
    pub const MAX_UDP_ANSWER_LIMIT: i64 = 8;
    pub const SYSLOG_FACILITY: &str = "LOCAL0";
}

const SYSLOG_FACILITIES: &[&str] = &[
    "KERN", "USER", "MAIL", "DAEMON", "AUTH", "SYSLOG", "LPR", "NEWS", "UUCP", "CRON", "AUTHPRIV",
    "FTP", "LOCAL0", "LOCAL1", "LOCAL2", "LOCAL3", "LOCAL4", "LOCAL5", "LOCAL6", "LOCAL7",
];

const REMOTE_SCRIPT_WARNING: &str = "using enable-script-checks without ACLs and without \
     allow_write_http_from is DANGEROUS, use enable-local-script-checks instead, see \
     https://www.hashicorp.com/blog/protecting-consul-from-rce-risk-in-specific-configurations/";

/// Builds and validates the runtime configuration from the merged tree.
pub(crate) fn build(
    tree: &Map<String, Value>,
    origins: &Origins,
    dev_mode: bool,
    hostname: &str,
    warnings: &mut Vec<String>,
) -> Result<RuntimeConfig, ConfigError> {
    let blame = Blame { origins };
    let f: FileConfig = serde_json::from_value(Value::Object(tree.clone()))
        .map_err(|e| ConfigError::invalid(None, "(merged config)", e.to_string()))?;

    // --- identity -------------------------------------------------------------------------
    let datacenter = f
        .datacenter
        .clone()
        .unwrap_or_else(|| defaults::DATACENTER.to_owned())
        .to_lowercase();
    if datacenter.is_empty() {
        return Err(blame.err("datacenter", "datacenter cannot be empty"));
    }
    if !datacenter
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(blame.err(
            "datacenter",
            format!(
                "datacenter can only contain lowercase alphanumeric, - or _ characters. \
                 received: {datacenter:?}"
            ),
        ));
    }

    let node_name = f
        .node_name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| hostname.to_owned())
        .trim()
        .to_owned();
    if node_name.is_empty() {
        return Err(blame.err("node_name", "node_name cannot be empty"));
    }
    if node_name.chars().any(char::is_control) {
        return Err(blame.err(
            "node_name",
            format!("node name {node_name:?} contains control characters"),
        ));
    }
    if !node_name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        warnings.push(format!(
            "Node name {node_name:?} will not be discoverable via DNS due to invalid \
             characters. Valid characters include all alpha-numerics and dashes."
        ));
    } else if node_name.len() > 63 {
        warnings.push(format!(
            "Node name {node_name:?} will not be discoverable via DNS due to it being too \
             long. Valid lengths are between 1 and 63 bytes."
        ));
    }

    let node_id = match f.node_id.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            uuid::Uuid::parse_str(s)
                .map_err(|e| blame.err("node_id", format!("{s:?} is not a valid UUID: {e}")))?,
        ),
    };

    let data_dir = f.data_dir.clone().unwrap_or_default();
    if data_dir.is_empty() && !dev_mode {
        return Err(blame.err("data_dir", "data_dir cannot be empty"));
    }
    let data_dir = PathBuf::from(data_dir);
    if !data_dir.as_os_str().is_empty()
        && let Ok(meta) = std::fs::metadata(&data_dir)
        && !meta.is_dir()
    {
        return Err(blame.err(
            "data_dir",
            format!(
                "data_dir {:?} is not a directory",
                data_dir.display().to_string()
            ),
        ));
    }

    let node_meta = f.node_meta.clone().unwrap_or_default();
    validate_meta(&node_meta, "Node")
        .map_err(|e| blame.err("node_meta", format!("node_meta invalid: {e}")))?;

    // --- ports and addresses ---------------------------------------------------------------
    let ports = Ports {
        dns: port_or_disabled(&blame, "ports.dns", f.ports.dns, defaults::PORT_DNS)?,
        http: port_or_disabled(&blame, "ports.http", f.ports.http, defaults::PORT_HTTP)?,
        https: port_or_disabled(&blame, "ports.https", f.ports.https, defaults::PORT_HTTPS)?,
        serf_lan: port_required(
            &blame,
            "ports.serf_lan",
            f.ports.serf_lan,
            defaults::PORT_SERF_LAN,
        )?,
        serf_wan: port_or_disabled(
            &blame,
            "ports.serf_wan",
            f.ports.serf_wan,
            defaults::PORT_SERF_WAN,
        )?,
        server: port_required(
            &blame,
            "ports.server",
            f.ports.server,
            defaults::PORT_SERVER,
        )?,
    };

    let bind_text = f
        .bind_addr
        .clone()
        .unwrap_or_else(|| defaults::BIND_ADDR.to_owned());
    let bind_addrs = ip_list(&blame, "bind_addr", &bind_text)?;
    let bind_addr = match bind_addrs.as_slice() {
        [] => return Err(blame.err("bind_addr", "bind_addr cannot be empty")),
        [one] => *one,
        _ => {
            return Err(blame.err(
                "bind_addr",
                "bind_addr cannot contain multiple addresses. Use 'addresses.{dns,http,https}' \
                 instead.",
            ));
        }
    };
    let advertise_addr = single_ip(&blame, "advertise_addr", f.advertise_addr.as_deref())?;
    if advertise_addr.is_some_and(|ip| ip.is_unspecified()) {
        return Err(blame.err(
            "advertise_addr",
            "Advertise address cannot be 0.0.0.0, :: or [::]",
        ));
    }
    let advertise_addr_wan = single_ip(
        &blame,
        "advertise_addr_wan",
        f.advertise_addr_wan.as_deref(),
    )?;
    if advertise_addr_wan.is_some_and(|ip| ip.is_unspecified()) {
        return Err(blame.err(
            "advertise_addr_wan",
            "Advertise WAN address cannot be 0.0.0.0, :: or [::]",
        ));
    }

    let client_text = f
        .client_addr
        .clone()
        .unwrap_or_else(|| defaults::CLIENT_ADDR.to_owned());
    let client_addrs = ip_list(&blame, "client_addr", &client_text)?;
    if client_addrs.is_empty() {
        warnings.push(
            "client_addr is empty, client services (DNS, HTTP, HTTPS, GRPC) will not be \
             listening for connections"
                .to_owned(),
        );
    }
    let dns_ips = match f.addresses.dns.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => {
            if s.split_whitespace().any(|a| a.starts_with("unix://")) {
                return Err(blame.err("addresses.dns", "DNS address cannot be a unix socket"));
            }
            ip_list(&blame, "addresses.dns", s)?
        }
        None => client_addrs.clone(),
    };
    let http_ips = match f.addresses.http.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => {
            if s.split_whitespace().any(|a| a.starts_with("unix://")) {
                return Err(blame.err(
                    "addresses.http",
                    "unix sockets for the HTTP API are not supported yet",
                ));
            }
            ip_list(&blame, "addresses.http", s)?
        }
        None => client_addrs.clone(),
    };
    let https_ips = match f.addresses.https.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => {
            if s.split_whitespace().any(|a| a.starts_with("unix://")) {
                return Err(blame.err(
                    "addresses.https",
                    "unix sockets for the HTTPS API are not supported yet",
                ));
            }
            ip_list(&blame, "addresses.https", s)?
        }
        None => client_addrs.clone(),
    };
    let dns_addrs = with_port(&dns_ips, ports.dns);
    let http_addrs = with_port(&http_ips, ports.http);
    let https_addrs = with_port(&https_ips, ports.https);
    for a in &https_addrs {
        if a.port() != 0 && (dns_addrs.contains(a) || http_addrs.contains(a)) {
            return Err(blame.err(
                "ports.https",
                format!("HTTPS address {a} already configured for DNS or HTTP"),
            ));
        }
    }
    // Consul's addrUnique: DNS (TCP side) and HTTP must not share a socket.
    for a in &http_addrs {
        if a.port() != 0 && dns_addrs.contains(a) {
            return Err(blame.err(
                "ports.http",
                format!("HTTP address {a} already configured for DNS"),
            ));
        }
    }

    // --- server ----------------------------------------------------------------------------
    let server_mode = f.server.unwrap_or(false);
    let mut bootstrap = f.bootstrap.unwrap_or(false);
    let mut bootstrap_expect = f.bootstrap_expect.unwrap_or(0);
    if bootstrap_expect == 1 {
        bootstrap = true;
        bootstrap_expect = 0;
        warnings.push("BootstrapExpect is set to 1; this is the same as Bootstrap mode.".into());
    }
    if bootstrap && !server_mode {
        return Err(blame.err("bootstrap", "'bootstrap = true' requires 'server = true'"));
    }
    if bootstrap_expect < 0 {
        return Err(blame.err(
            "bootstrap_expect",
            format!(
                "bootstrap_expect cannot be {bootstrap_expect}. Must be greater than or equal \
                 to zero"
            ),
        ));
    }
    if bootstrap_expect > 0 && !server_mode {
        return Err(blame.err(
            "bootstrap_expect",
            "'bootstrap_expect > 0' requires 'server = true'",
        ));
    }
    if bootstrap_expect > 0 && dev_mode {
        return Err(blame.err(
            "bootstrap_expect",
            "'bootstrap_expect > 0' not allowed in dev mode",
        ));
    }
    if bootstrap_expect > 0 && bootstrap {
        return Err(blame.err(
            "bootstrap_expect",
            "'bootstrap_expect > 0' and 'bootstrap = true' are mutually exclusive",
        ));
    }
    let bootstrap_expect = u32::try_from(bootstrap_expect)
        .map_err(|_| blame.err("bootstrap_expect", "bootstrap_expect is too large"))?;
    if server_mode && !dev_mode && !bootstrap && bootstrap_expect == 2 {
        warnings.push(
            "bootstrap_expect = 2: A cluster with 2 servers will provide no failure \
             tolerance. See https://www.consul.io/docs/internals/consensus.html#deployment-table"
                .into(),
        );
    }
    if server_mode && !bootstrap && bootstrap_expect > 2 && bootstrap_expect % 2 == 0 {
        warnings.push(
            "bootstrap_expect is even number: A cluster with an even number of servers does \
             not achieve optimum fault tolerance. See \
             https://www.consul.io/docs/internals/consensus.html#deployment-table"
                .into(),
        );
    }
    if server_mode && bootstrap && bootstrap_expect == 0 && !dev_mode {
        warnings.push("bootstrap = true: do not enable unless necessary".into());
    }
    if server_mode && !dev_mode && !bootstrap && bootstrap_expect > 1 {
        warnings.push(format!(
            "bootstrap_expect > 0: expecting {bootstrap_expect} servers"
        ));
    }
    let raft_multiplier = match f.performance.raft_multiplier {
        None | Some(0) => defaults::RAFT_MULTIPLIER,
        Some(n) if (1..=defaults::MAX_RAFT_MULTIPLIER).contains(&n) => n,
        Some(n) => {
            return Err(blame.err(
                "performance.raft_multiplier",
                format!(
                    "performance.raft_multiplier cannot be {n}. Must be between 1 and {}",
                    defaults::MAX_RAFT_MULTIPLIER
                ),
            ));
        }
    } as u32;
    let server = ServerSettings {
        enabled: server_mode,
        bootstrap,
        bootstrap_expect,
        raft_multiplier,
        rpc_addr: SocketAddr::new(bind_addr, ports.server),
    };

    // --- gossip ----------------------------------------------------------------------------
    let encrypt_key = match f.encrypt.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(GossipKey::from_base64(s).map_err(|e| blame.err("encrypt", e))?),
    };
    for (i, entry) in f.retry_join.iter().enumerate() {
        validate_join_address(&blame, &index("retry_join", i), entry)?;
    }
    let retry_max = u32::try_from(f.retry_max.unwrap_or(0)).map_err(|_| {
        blame.err(
            "retry_max",
            "retry_max must be between 0 (retry forever) and 4294967295",
        )
    })?;
    let mut reconnect_timeout = f
        .reconnect_timeout
        .filter(|d| !d.is_zero())
        .unwrap_or(defaults::RECONNECT_TIMEOUT);
    if reconnect_timeout < defaults::RECONNECT_TIMEOUT_MIN {
        warnings.push(format!(
            "{}: reconnect_timeout {} is below the minimum of {}; using {}",
            blame.origin("reconnect_timeout"),
            format_duration(reconnect_timeout),
            format_duration(defaults::RECONNECT_TIMEOUT_MIN),
            format_duration(defaults::RECONNECT_TIMEOUT_MIN),
        ));
        reconnect_timeout = defaults::RECONNECT_TIMEOUT_MIN;
    }
    let gossip = GossipSettings {
        bind: SocketAddr::new(bind_addr, ports.serf_lan),
        advertise_addr,
        advertise_addr_wan,
        encrypt_key,
        encrypt_verify_incoming: f.encrypt_verify_incoming.unwrap_or(true),
        encrypt_verify_outgoing: f.encrypt_verify_outgoing.unwrap_or(true),
        retry_join: f.retry_join.clone(),
        retry_interval: f.retry_interval.unwrap_or(defaults::RETRY_INTERVAL),
        retry_max,
        rejoin_after_leave: f.rejoin_after_leave.unwrap_or(false),
        reconnect_timeout,
    };

    // --- HTTP ------------------------------------------------------------------------------
    let max_conns = f
        .limits
        .http_max_conns_per_client
        .unwrap_or(defaults::HTTP_MAX_CONNS_PER_CLIENT);
    let max_conns_per_client = u32::try_from(max_conns).map_err(|_| {
        blame.err(
            "limits.http_max_conns_per_client",
            format!("limits.http_max_conns_per_client cannot be {max_conns}. Must be between 0 and 4294967295"),
        )
    })?;
    // 0 means the default, as in Consul (whose default is Go's 1 MiB; ours is smaller).
    let max_header_bytes = match f.http_config.max_header_bytes.unwrap_or(0) {
        0 => defaults::MAX_HEADER_BYTES,
        n => usize::try_from(n)
            .ok()
            .filter(|n| *n <= defaults::MAX_MAX_HEADER_BYTES)
            .ok_or_else(|| {
                blame.err(
                    "http_config.max_header_bytes",
                    format!(
                        "http_config.max_header_bytes cannot be {n}. Must be between 0 (the \
                         default, {}) and {}",
                        defaults::MAX_HEADER_BYTES,
                        defaults::MAX_MAX_HEADER_BYTES
                    ),
                )
            })?,
    };
    let default_query_time = f.default_query_time.unwrap_or(defaults::DEFAULT_QUERY_TIME);
    let max_query_time = f.max_query_time.unwrap_or(defaults::MAX_QUERY_TIME);
    for (key, d) in [
        ("default_query_time", default_query_time),
        ("max_query_time", max_query_time),
    ] {
        if d.is_zero() {
            return Err(blame.err(key, format!("{key} must be greater than zero")));
        }
    }
    let http = HttpSettings {
        addrs: http_addrs,
        https_addrs,
        max_conns_per_client,
        max_header_bytes,
        header_read_timeout: defaults::HEADER_READ_TIMEOUT,
        body_read_timeout: defaults::BODY_READ_TIMEOUT,
        max_blocking_queries: defaults::MAX_BLOCKING_QUERIES,
        default_query_time,
        max_query_time,
    };

    // --- ACL -------------------------------------------------------------------------------
    let acl = build_acl(&blame, &f.acl)?;

    // --- DNS -------------------------------------------------------------------------------
    let dns = build_dns(&blame, &f, &datacenter, dns_addrs)?;

    // --- TLS -------------------------------------------------------------------------------
    let tls = build_tls(&blame, &f, &datacenter, &dns.domain)?;
    if ports.https.is_some() && !tls.https.has_cert() {
        return Err(blame.err(
            "ports.https",
            "the HTTPS port needs a certificate: set tls.https (or tls.defaults) cert_file and \
             key_file",
        ));
    }

    // --- logging ---------------------------------------------------------------------------
    let level_text = f.log_level.clone().unwrap_or_else(|| "info".to_owned());
    let level = LogLevel::parse(&level_text).ok_or_else(|| {
        blame.err(
            "log_level",
            format!(
                "Invalid log level: {level_text}. Valid log levels are: [TRACE DEBUG INFO WARN \
                 ERR ERROR]"
            ),
        )
    })?;
    let facility = f
        .syslog_facility
        .clone()
        .unwrap_or_else(|| defaults::SYSLOG_FACILITY.to_owned())
        .to_ascii_uppercase();
    if !SYSLOG_FACILITIES.contains(&facility.as_str()) {
        return Err(blame.err(
            "syslog_facility",
            format!(
                "invalid syslog facility {facility:?}; use one of {}",
                SYSLOG_FACILITIES.join(", ")
            ),
        ));
    }
    let logging = LogSettings {
        level,
        json: f.log_json.unwrap_or(false),
        syslog: f.enable_syslog.unwrap_or(false),
        syslog_facility: facility,
    };

    // --- checks ----------------------------------------------------------------------------
    let output_max = f
        .check_output_max_size
        .unwrap_or(defaults::CHECK_OUTPUT_MAX_SIZE);
    if output_max < 1 {
        return Err(blame.err(
            "check_output_max_size",
            "check_output_max_size must be positive, to discard check output use the \
             discard_check_output flag",
        ));
    }
    let enable_script_checks = f.enable_script_checks.unwrap_or(false);
    let scripts = ScriptCheckPolicy {
        enable_script_checks,
        enable_local_script_checks: f.enable_local_script_checks.unwrap_or(enable_script_checks),
    };
    if enable_script_checks {
        // muster has no ACLs and no allow_write_http_from yet, so this always applies.
        warnings.push(REMOTE_SCRIPT_WARNING.to_owned());
    }
    let check_settings = CheckSettings {
        update_interval: f
            .check_update_interval
            .unwrap_or(defaults::CHECK_UPDATE_INTERVAL),
        output_max_size: usize::try_from(output_max).unwrap_or(usize::MAX),
        discard_output: f.discard_check_output.unwrap_or(false),
        scripts,
    };

    let (services, checks) = build_definitions(&blame, &f, scripts, warnings)?;

    Ok(RuntimeConfig {
        dev_mode,
        node_name,
        node_id,
        datacenter,
        data_dir,
        node_meta,
        bind_addr,
        client_addrs,
        ports,
        server,
        gossip,
        http,
        acl,
        tls,
        dns,
        logging,
        check_settings,
        leave_on_terminate: f.leave_on_terminate.unwrap_or(!server_mode),
        skip_leave_on_interrupt: f.skip_leave_on_interrupt.unwrap_or(server_mode),
        pid_file: f
            .pid_file
            .clone()
            .filter(|p| !p.is_empty())
            .map(PathBuf::from),
        disable_update_check: f.disable_update_check.unwrap_or(false),
        services,
        checks,
    })
}

/// One TLS setting of an interface: the value and the key that set it (the interface's own,
/// else `tls.defaults`), so errors name what the user wrote.
struct TlsValue<T> {
    value: Option<T>,
    key: String,
}

fn tls_pick<T: Clone>(
    iface: &str,
    field: &str,
    own: &Option<T>,
    defaults: &Option<T>,
) -> TlsValue<T> {
    match (own, defaults) {
        (Some(v), _) => TlsValue {
            value: Some(v.clone()),
            key: format!("tls.{iface}.{field}"),
        },
        (None, Some(v)) => TlsValue {
            value: Some(v.clone()),
            key: format!("tls.defaults.{field}"),
        },
        (None, None) => TlsValue {
            value: None,
            key: format!("tls.{iface}.{field}"),
        },
    }
}

/// Parses `tls_min_version` as Consul spells it (`TLSv1_2`, `TLSv1_3`; the old `tls12`,
/// `tls13` too). TLS 1.0 and 1.1 are refused: rustls does not implement them.
fn parse_tls_version(text: &str) -> Result<TlsVersion, String> {
    match text {
        "" | "TLSv1_2" | "tls12" => Ok(TlsVersion::Tls12),
        "TLSv1_3" | "tls13" => Ok(TlsVersion::Tls13),
        "TLSv1_0" | "TLSv1_1" | "tls10" | "tls11" => Err(format!(
            "{text} is not supported: muster's TLS (rustls) speaks TLS 1.2 and 1.3 only; use \
             \"TLSv1_2\" or \"TLSv1_3\""
        )),
        other => Err(format!(
            "invalid tls_min_version {other:?}: use \"TLSv1_2\" or \"TLSv1_3\""
        )),
    }
}

/// The effective settings of one interface, with every file read and checked.
fn build_tls_interface(
    blame: &Blame<'_>,
    iface: &str,
    own: &FileTlsProtocol,
    defaults: &FileTlsProtocol,
    uses_outgoing: bool,
) -> Result<TlsInterface, ConfigError> {
    let path = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let ca_file = tls_pick(
        iface,
        "ca_file",
        &path(&own.ca_file),
        &path(&defaults.ca_file),
    );
    let ca_path = tls_pick(
        iface,
        "ca_path",
        &path(&own.ca_path),
        &path(&defaults.ca_path),
    );
    let cert_file = tls_pick(
        iface,
        "cert_file",
        &path(&own.cert_file),
        &path(&defaults.cert_file),
    );
    let key_file = tls_pick(
        iface,
        "key_file",
        &path(&own.key_file),
        &path(&defaults.key_file),
    );
    let min_version = tls_pick(
        iface,
        "tls_min_version",
        &own.tls_min_version,
        &defaults.tls_min_version,
    );
    let verify_incoming = tls_pick(
        iface,
        "verify_incoming",
        &own.verify_incoming,
        &defaults.verify_incoming,
    );
    let verify_outgoing = tls_pick(
        iface,
        "verify_outgoing",
        &own.verify_outgoing,
        &defaults.verify_outgoing,
    );

    let min = match &min_version.value {
        None => TlsVersion::Tls12,
        Some(text) => parse_tls_version(text).map_err(|e| blame.err(&min_version.key, e))?,
    };
    let suites = tls_pick(
        iface,
        "tls_cipher_suites",
        &path(&own.tls_cipher_suites),
        &path(&defaults.tls_cipher_suites),
    );
    let cipher_suites: Vec<String> = suites
        .value
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if !cipher_suites.is_empty() {
        if min == TlsVersion::Tls13 {
            return Err(blame.err(
                &suites.key,
                format!(
                    "{} cannot be used with tls_min_version TLSv1_3: TLS 1.3 cipher suites are \
                     not configurable",
                    suites.key
                ),
            ));
        }
        crate::tls::provider_with_suites(&cipher_suites).map_err(|e| blame.err(&suites.key, e))?;
    }

    match (&cert_file.value, &key_file.value) {
        (Some(_), None) => {
            return Err(blame.err(
                &cert_file.key,
                format!("{} is set but no key_file: give both", cert_file.key),
            ));
        }
        (None, Some(_)) => {
            return Err(blame.err(
                &key_file.key,
                format!("{} is set but no cert_file: give both", key_file.key),
            ));
        }
        (Some(cert), Some(key)) => {
            let chain = crate::tls::load_certs(Path::new(cert))
                .map_err(|e| blame.err(&cert_file.key, e))?;
            let key_der =
                crate::tls::load_key(Path::new(key)).map_err(|e| blame.err(&key_file.key, e))?;
            rustls::sign::CertifiedKey::from_der(chain, key_der, &crate::tls::provider()).map_err(
                |e| {
                    blame.err(
                        &key_file.key,
                        format!(
                            "the key in {key} does not belong to the certificate in {cert}: {e}"
                        ),
                    )
                },
            )?;
        }
        (None, None) => {}
    }
    if let Some(file) = &ca_file.value {
        crate::tls::load_roots(Some(Path::new(file)), None)
            .map_err(|e| blame.err(&ca_file.key, e))?;
    }
    if let Some(dir) = &ca_path.value {
        crate::tls::load_roots(None, Some(Path::new(dir)))
            .map_err(|e| blame.err(&ca_path.key, e))?;
    }
    let has_ca = ca_file.value.is_some() || ca_path.value.is_some();
    let incoming = verify_incoming.value.unwrap_or(false);
    if incoming && !has_ca {
        return Err(blame.err(
            &verify_incoming.key,
            format!(
                "{} is set but no ca_file or ca_path is given to verify client certificates \
                 with",
                verify_incoming.key
            ),
        ));
    }
    if incoming && cert_file.value.is_none() {
        return Err(blame.err(
            &verify_incoming.key,
            format!(
                "{} is set but no cert_file and key_file are given for the TLS listener",
                verify_incoming.key
            ),
        ));
    }
    // Only RPCs go out with the agent's TLS settings (HTTPS has no outgoing side here).
    let outgoing = uses_outgoing && verify_outgoing.value.unwrap_or(false);
    if outgoing && !has_ca {
        return Err(blame.err(
            &verify_outgoing.key,
            format!(
                "{} is set but no ca_file or ca_path is given to verify servers with",
                verify_outgoing.key
            ),
        ));
    }
    Ok(TlsInterface {
        ca_file: ca_file.value.map(PathBuf::from),
        ca_path: ca_path.value.map(PathBuf::from),
        cert_file: cert_file.value.map(PathBuf::from),
        key_file: key_file.value.map(PathBuf::from),
        verify_incoming: incoming,
        verify_outgoing: outgoing,
        min_version: min,
        cipher_suites,
    })
}

fn build_tls(
    blame: &Blame<'_>,
    f: &FileConfig,
    datacenter: &str,
    domain: &str,
) -> Result<TlsSettings, ConfigError> {
    let t = &f.tls;
    let https = build_tls_interface(blame, "https", &t.https, &t.defaults, false)?;
    let mut internal_rpc =
        build_tls_interface(blame, "internal_rpc", &t.internal_rpc, &t.defaults, true)?;
    let verify_server_hostname = t.internal_rpc.verify_server_hostname.unwrap_or(false);
    if verify_server_hostname {
        // Implies verify_outgoing (Consul since 1.4.3), which needs a CA.
        if !internal_rpc.has_ca() {
            return Err(blame.err(
                "tls.internal_rpc.verify_server_hostname",
                "tls.internal_rpc.verify_server_hostname is set but no ca_file or ca_path is \
                 given to verify servers with",
            ));
        }
        internal_rpc.verify_outgoing = true;
    }
    let timeout = |key: &str, v: Option<Duration>, default: Duration| match v {
        Some(d) if d.is_zero() => Err(blame.err(key, format!("{key} must be greater than zero"))),
        Some(d) => Ok(d),
        None => Ok(default),
    };
    Ok(TlsSettings {
        https,
        internal_rpc,
        verify_server_hostname,
        server_name: format!("server.{datacenter}.{}", domain.trim_end_matches('.')),
        https_handshake_timeout: timeout(
            "limits.https_handshake_timeout",
            f.limits.https_handshake_timeout,
            defaults::HTTPS_HANDSHAKE_TIMEOUT,
        )?,
        rpc_handshake_timeout: timeout(
            "limits.rpc_handshake_timeout",
            f.limits.rpc_handshake_timeout,
            defaults::RPC_HANDSHAKE_TIMEOUT,
        )?,
    })
}

fn build_acl(blame: &Blame<'_>, a: &FileAcl) -> Result<AclSettings, ConfigError> {
    use crate::acl::DefaultPolicy;
    let default_policy = match a.default_policy.as_deref().unwrap_or("allow") {
        "allow" => DefaultPolicy::Allow,
        "deny" => DefaultPolicy::Deny,
        other => {
            return Err(blame.err(
                "acl.default_policy",
                format!("invalid default policy {other:?} (must be \"allow\" or \"deny\")"),
            ));
        }
    };
    let down_policy = match a.down_policy.as_deref().unwrap_or("extend-cache") {
        "allow" => DownPolicy::Allow,
        "deny" => DownPolicy::Deny,
        "extend-cache" | "async-cache" => DownPolicy::ExtendCache,
        other => {
            return Err(blame.err(
                "acl.down_policy",
                format!(
                    "invalid down policy {other:?} (must be \"allow\", \"deny\", \
                     \"extend-cache\" or \"async-cache\")"
                ),
            ));
        }
    };
    let token_ttl = a.token_ttl.unwrap_or(Duration::from_secs(30));
    let secret = |t: &Option<String>| t.clone().filter(|s| !s.is_empty());
    Ok(AclSettings {
        enabled: a.enabled.unwrap_or(false),
        default_policy,
        down_policy,
        token_ttl,
        tokens: AclTokens {
            initial_management: secret(&a.tokens.initial_management),
            agent: secret(&a.tokens.agent),
            agent_recovery: secret(&a.tokens.agent_recovery),
            default: secret(&a.tokens.default),
            dns: secret(&a.tokens.dns),
        },
    })
}

fn build_dns(
    blame: &Blame<'_>,
    f: &FileConfig,
    datacenter: &str,
    addrs: Vec<SocketAddr>,
) -> Result<DnsSettings, ConfigError> {
    let d = &f.dns_config;
    let domain_text = f
        .domain
        .clone()
        .unwrap_or_else(|| defaults::DOMAIN.to_owned());
    let domain = normalize_domain(&domain_text)
        .ok_or_else(|| blame.err("domain", format!("invalid domain {domain_text:?}")))?;
    let alt_domain = match f.alt_domain.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => {
            let alt = normalize_domain(text)
                .ok_or_else(|| blame.err("alt_domain", format!("invalid domain {text:?}")))?;
            let first = alt.split('.').next().unwrap_or_default();
            if ["service", "connect", "node", "query", "addr", datacenter].contains(&first) {
                return Err(blame.err(
                    "alt_domain",
                    format!(
                        "alt_domain cannot start with {{service,connect,node,query,addr,{datacenter}}}"
                    ),
                ));
            }
            Some(alt)
        }
    };

    let mut recursors = Vec::new();
    for (i, entry) in f.recursors.iter().enumerate() {
        let key = index("recursors", i);
        if entry.contains("{{") {
            return Err(template_error(blame, &key, entry));
        }
        for addr in entry.split_whitespace() {
            if addr.starts_with("unix://") {
                return Err(blame.err(
                    &key,
                    format!("DNS Recursors cannot be unix sockets: {addr}"),
                ));
            }
            let parsed = parse_recursor(addr).ok_or_else(|| {
                blame.err(
                    &key,
                    format!("invalid recursor {addr:?}: expected an IP address or IP:port"),
                )
            })?;
            if parsed.ip().is_unspecified() {
                return Err(blame.err(&key, "DNS recursor address cannot be 0.0.0.0, :: or [::]"));
            }
            // Duplicates are ignored, as in Consul.
            if !recursors.contains(&parsed) {
                recursors.push(parsed);
            }
        }
    }

    let recursor_strategy = match d.recursor_strategy.as_deref().unwrap_or("") {
        "" | "sequential" => RecursorStrategy::Sequential,
        "random" => RecursorStrategy::Random,
        other => {
            return Err(blame.err(
                "dns_config.recursor_strategy",
                format!("invalid strategy: {other:?}"),
            ));
        }
    };
    let recursor_allow = match &d.recursor_allow {
        None => muster_dns::RecursorAllow::default(),
        Some(entries) => muster_dns::RecursorAllow::parse(entries)
            .map_err(|e| blame.err("dns_config.recursor_allow", e))?,
    };
    let recursor_timeout = d.recursor_timeout.unwrap_or(defaults::RECURSOR_TIMEOUT);
    if recursor_timeout.is_zero() {
        return Err(blame.err("dns_config.recursor_timeout", "must be greater than zero"));
    }
    let udp = d.udp_answer_limit.unwrap_or(defaults::UDP_ANSWER_LIMIT);
    if !(0..=defaults::MAX_UDP_ANSWER_LIMIT).contains(&udp) {
        return Err(blame.err(
            "dns_config.udp_answer_limit",
            format!(
                "must be between 0 and {} (got {udp})",
                defaults::MAX_UDP_ANSWER_LIMIT
            ),
        ));
    }
    let a_limit = d.a_record_limit.unwrap_or(0);
    let a_record_limit = u32::try_from(a_limit).map_err(|_| {
        blame.err(
            "dns_config.a_record_limit",
            format!(
                "dns_config.a_record_limit cannot be {a_limit}. Must be greater than or equal \
                 to zero"
            ),
        )
    })?;
    let soa_value = |key: &str, v: Option<i64>, default: u32| -> Result<u32, ConfigError> {
        match v {
            None => Ok(default),
            Some(n) => u32::try_from(n).map_err(|_| {
                blame.err(
                    &format!("dns_config.soa.{key}"),
                    format!("must be between 0 and {}", u32::MAX),
                )
            }),
        }
    };
    let soa = SoaSettings {
        refresh: soa_value("refresh", d.soa.refresh, 3600)?,
        retry: soa_value("retry", d.soa.retry, 600)?,
        expire: soa_value("expire", d.soa.expire, 86400)?,
        min_ttl: soa_value("min_ttl", d.soa.min_ttl, 0)?,
    };
    Ok(DnsSettings {
        addrs,
        domain,
        alt_domain,
        recursors,
        recursor_allow,
        recursor_strategy,
        recursor_timeout,
        allow_stale: d.allow_stale.unwrap_or(true),
        max_stale: d.max_stale.unwrap_or(defaults::MAX_STALE),
        node_ttl: d.node_ttl.unwrap_or(Duration::ZERO),
        service_ttl: d
            .service_ttl
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.0)).collect())
            .unwrap_or_default(),
        only_passing: d.only_passing.unwrap_or(false),
        udp_answer_limit: udp as u8,
        a_record_limit,
        enable_truncate: d.enable_truncate.unwrap_or(false),
        disable_compression: d.disable_compression.unwrap_or(false),
        enable_additional_node_meta_txt: d.enable_additional_node_meta_txt.unwrap_or(true),
        soa,
    })
}

type Definitions = (Vec<ServiceDefinition>, Vec<CheckDefinition>);

fn build_definitions(
    blame: &Blame<'_>,
    f: &FileConfig,
    scripts: ScriptCheckPolicy,
    warnings: &mut Vec<String>,
) -> Result<Definitions, ConfigError> {
    let mut service_ids: HashMap<String, (String, String)> = HashMap::new();
    let mut check_ids: HashMap<String, (String, String)> = HashMap::new();
    let mut check_seen = |blame: &Blame<'_>, id: &str, key: String| -> Result<(), ConfigError> {
        let origin = blame.origin(&key);
        if let Some((other_origin, other_key)) =
            check_ids.insert(id.to_owned(), (origin.clone(), key.clone()))
        {
            return Err(blame.err(
                &key,
                format!("duplicate check ID {id:?}: also defined in {other_origin} at {other_key}"),
            ));
        }
        Ok(())
    };

    let mut services = Vec::with_capacity(f.services.len());
    for (i, value) in f.services.iter().enumerate() {
        let path = index("services", i);
        let Value::Object(map) = value else { continue };
        let (def, check_paths) = decode_service(map.clone(), Mode::File, warnings)
            .map_err(|p| blame.problem(&path, p))?;
        let origin = blame.origin(&path);
        if let Some((other_origin, other_key)) =
            service_ids.insert(def.id.clone(), (origin, path.clone()))
        {
            return Err(blame.err(
                &join(&path, "id"),
                format!(
                    "duplicate service ID {:?}: also defined in {other_origin} at {other_key}",
                    def.id
                ),
            ));
        }
        for (check, check_path) in def.checks.iter().zip(&check_paths) {
            let key = join(&path, check_path);
            if check.is_script() && !scripts.allows_files() {
                return Err(blame.err(&join(&key, "args"), FILE_SCRIPTS_DISABLED));
            }
            check_seen(blame, &check.id, key)?;
        }
        services.push(def);
    }

    let mut checks = Vec::with_capacity(f.checks.len());
    for (i, value) in f.checks.iter().enumerate() {
        let path = index("checks", i);
        let Value::Object(map) = value else { continue };
        let def = decode_check(map.clone(), None, warnings).map_err(|p| blame.problem(&path, p))?;
        if def.is_script() && !scripts.allows_files() {
            return Err(blame.err(&join(&path, "args"), FILE_SCRIPTS_DISABLED));
        }
        check_seen(blame, &def.id, path)?;
        checks.push(def);
    }
    Ok((services, checks))
}

fn template_error(blame: &Blame<'_>, key: &str, text: &str) -> ConfigError {
    blame.err(
        key,
        format!("go-sockaddr templates such as {text:?} are not supported yet; give IP addresses"),
    )
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

/// A space-separated list of IP addresses (`client_addr`, `addresses.*`, `bind_addr`).
fn ip_list(blame: &Blame<'_>, key: &str, text: &str) -> Result<Vec<IpAddr>, ConfigError> {
    if text.contains("{{") {
        return Err(template_error(blame, key, text));
    }
    text.split_whitespace()
        .map(|a| {
            if a.starts_with("unix://") {
                return Err(blame.err(key, format!("{key} cannot be a unix socket")));
            }
            parse_ip(a).ok_or_else(|| blame.err(key, format!("invalid ip address: {a}")))
        })
        .collect()
}

fn single_ip(
    blame: &Blame<'_>,
    key: &str,
    text: Option<&str>,
) -> Result<Option<IpAddr>, ConfigError> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    match ip_list(blame, key, text)?.as_slice() {
        [one] => Ok(Some(*one)),
        _ => Err(blame.err(key, format!("multiple addresses found: {text}"))),
    }
}

fn with_port(ips: &[IpAddr], port: Option<u16>) -> Vec<SocketAddr> {
    match port {
        Some(port) => ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect(),
        None => Vec::new(),
    }
}

/// A port that -1 disables; 0 asks for an ephemeral port.
fn port_or_disabled(
    blame: &Blame<'_>,
    key: &str,
    value: Option<i64>,
    default: i64,
) -> Result<Option<u16>, ConfigError> {
    match value.unwrap_or(default) {
        -1 => Ok(None),
        v => u16::try_from(v).map(Some).map_err(|_| {
            blame.err(
                key,
                format!("invalid port: {v} (use 0 to 65535, or -1 to disable)"),
            )
        }),
    }
}

/// A port that cannot be disabled; 0 asks for an ephemeral port.
fn port_required(
    blame: &Blame<'_>,
    key: &str,
    value: Option<i64>,
    default: i64,
) -> Result<u16, ConfigError> {
    let v = value.unwrap_or(default);
    u16::try_from(v).map_err(|_| {
        blame.err(
            key,
            format!("invalid port: {v} (use 0 to 65535; this listener cannot be disabled)"),
        )
    })
}

/// `IP`, `IP:port`, `[IPv6]:port` or a bare IPv6 address; port 53 unless given.
fn parse_recursor(s: &str) -> Option<SocketAddr> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa);
    }
    parse_ip(s).map(|ip| SocketAddr::new(ip, 53))
}

/// Lower case, with a trailing dot; `None` when a label is empty or has odd characters.
fn normalize_domain(text: &str) -> Option<String> {
    let trimmed = text.trim().trim_end_matches('.').to_ascii_lowercase();
    if trimmed.is_empty() {
        return None;
    }
    let ok = trimmed.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    ok.then(|| format!("{trimmed}."))
}

/// A `retry_join` entry: an IP, `IP:port`, `[IPv6]:port` or a hostname (optionally with a
/// port). Cloud auto-join strings and templates are refused, not silently ignored.
fn validate_join_address(blame: &Blame<'_>, key: &str, entry: &str) -> Result<(), ConfigError> {
    if entry.contains("{{") {
        return Err(template_error(blame, key, entry));
    }
    if entry.contains("provider=") {
        return Err(blame.err(
            key,
            format!("cloud auto-join ({entry:?}) is not supported yet; list the agents' addresses"),
        ));
    }
    let ok = !entry.is_empty()
        && !entry.chars().any(char::is_whitespace)
        && (entry.parse::<SocketAddr>().is_ok()
            || parse_ip(entry).is_some()
            || host_port_ok(entry));
    if !ok {
        return Err(blame.err(
            key,
            format!("invalid join address {entry:?}: expected an IP, IP:port or hostname"),
        ));
    }
    Ok(())
}

fn host_port_ok(entry: &str) -> bool {
    let (host, port) = match entry.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (entry, None),
    };
    let host_ok = !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    host_ok && port.is_none_or(|p| p.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recursor_forms() {
        assert_eq!(
            parse_recursor("8.8.8.8"),
            Some("8.8.8.8:53".parse().unwrap())
        );
        assert_eq!(
            parse_recursor("127.0.0.1:5400"),
            Some("127.0.0.1:5400".parse().unwrap())
        );
        assert_eq!(
            parse_recursor("[::1]:53"),
            Some("[::1]:53".parse().unwrap())
        );
        assert_eq!(parse_recursor("::1"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(
            parse_recursor("[2001:db8::1]"),
            Some("[2001:db8::1]:53".parse().unwrap())
        );
        assert_eq!(parse_recursor("dns.google"), None);
        assert_eq!(parse_recursor("1.2.3.4:99999"), None);
    }

    #[test]
    fn domains_normalize() {
        assert_eq!(normalize_domain("consul"), Some("consul.".into()));
        assert_eq!(normalize_domain("Consul."), Some("consul.".into()));
        assert_eq!(normalize_domain("my.dom."), Some("my.dom.".into()));
        assert_eq!(normalize_domain("a..b"), None);
        assert_eq!(normalize_domain(""), None);
        assert_eq!(normalize_domain("a b"), None);
    }

    #[test]
    fn join_addresses() {
        assert!(host_port_ok("db1.example.com"));
        assert!(host_port_ok("db1:8301"));
        assert!(!host_port_ok("db1:port"));
        assert!(!host_port_ok("a..b"));
    }

    #[test]
    fn gossip_key_sizes() {
        use base64::Engine as _;
        let enc = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
        for n in [16, 24, 32] {
            let key = GossipKey::from_base64(&enc(n)).unwrap();
            assert_eq!(key.as_bytes().len(), n);
            assert_eq!(key.to_base64(), enc(n));
            assert_eq!(format!("{key:?}"), format!("GossipKey(<{n} bytes>)"));
        }
        assert_eq!(
            GossipKey::from_base64(&enc(20)).unwrap_err(),
            "Invalid key: key size must be 16, 24 or 32 bytes"
        );
        assert!(
            GossipKey::from_base64("not base64!")
                .unwrap_err()
                .starts_with("encrypt has invalid key:")
        );
    }

    #[test]
    fn log_levels_are_case_insensitive() {
        assert_eq!(LogLevel::parse("INFO"), Some(LogLevel::Info));
        assert_eq!(LogLevel::parse("Warn"), Some(LogLevel::Warn));
        assert_eq!(LogLevel::parse("warning"), Some(LogLevel::Warn));
        assert_eq!(LogLevel::parse("ERR"), Some(LogLevel::Error));
        assert_eq!(
            LogLevel::parse("trace").unwrap().as_tracing(),
            tracing::Level::TRACE
        );
        assert_eq!(LogLevel::parse("verbose"), None);
    }
}
