//! The table of every key Consul's config format accepts, walked from Consul's
//! `agent/config/config.go` (`Config` and its nested structs) plus the deprecated keys of
//! `deprecated.go`, which [`super::normalize`] translates before the walk.
//!
//! Each key says what it holds ([`Kind`], which also decides how it merges: lists append,
//! user-keyed maps replace, objects merge field by field) and what muster does with it
//! ([`Use`]): implemented, accepted with a warning because muster does not implement it yet
//! (check types muster cannot run are registered always critical), or rejected with a clear
//! error (the removed `script` key). Keys missing here are unknown and fatal, as in Consul.
//!
//! Service and check blocks are `loose`: their keys also match with underscores ignored, so
//! the HTTP API's CamelCase (`DeregisterCriticalServiceAfter`, `TLSSkipVerify`, `ServiceID`)
//! and the config files' snake_case reach the same field.

/// What a key holds.
#[derive(Debug)]
pub(crate) enum Kind {
    /// A string.
    Str,
    /// A boolean.
    Bool,
    /// An integer (a JSON number without a fraction).
    Int,
    /// Any JSON number.
    Float,
    /// A Go duration string or a number of nanoseconds; never negative.
    Dur,
    /// A list; lists from several sources are appended.
    List(&'static Kind),
    /// A map with user-chosen keys; a later non-empty map replaces an earlier one.
    Map(&'static Kind),
    /// A struct with known keys; merged field by field.
    Obj(&'static Obj),
    /// One object or a list of objects (`service {}` vs repeated HCL blocks), kept as a list.
    OneOrMany(&'static Obj),
    /// An HTTP header value: a string or a list of strings, kept as a list.
    HeaderValues,
    /// Anything; passed through untouched (opaque Consul sub-configs such as `proxy.config`).
    Any,
}

/// A struct of known keys.
#[derive(Debug)]
pub(crate) struct Obj {
    pub fields: &'static [Field],
    /// Keys also match with underscores removed (service and check definitions).
    pub loose: bool,
}

/// What muster does with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// Typed, validated and used.
    Implemented,
    /// Accepted for compatibility; a warning names the file and the key.
    NotImplemented,
    /// Parsed and rejected with this explanation (a non-empty value is an error).
    Rejected(&'static str),
    /// A check type Consul has and muster cannot run yet (Consul's type name): accepted, and
    /// a non-empty value warns with the file and key; the check is registered always critical.
    UnsupportedCheck(&'static str),
}

/// One key of a struct.
#[derive(Debug)]
pub(crate) struct Field {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub kind: Kind,
    pub use_: Use,
}

impl Obj {
    /// Finds the field for an input key and whether the key was the field's own name (which
    /// wins over an alias when both are given, as in Consul's `HookTranslateKeys`).
    pub(crate) fn lookup(&self, key: &str) -> Option<(&'static Field, bool)> {
        let squash = |s: &str| -> String {
            s.chars()
                .filter(|c| *c != '_')
                .flat_map(char::to_lowercase)
                .collect()
        };
        let loose_key = if self.loose { Some(squash(key)) } else { None };
        for field in self.fields {
            if field.name.eq_ignore_ascii_case(key) {
                return Some((field, true));
            }
            if let Some(k) = &loose_key
                && squash(field.name) == *k
            {
                return Some((field, true));
            }
        }
        for field in self.fields {
            for alias in field.aliases {
                if alias.eq_ignore_ascii_case(key) {
                    return Some((field, false));
                }
                if let Some(k) = &loose_key
                    && squash(alias) == *k
                {
                    return Some((field, false));
                }
            }
        }
        None
    }

    /// The field with exactly this canonical name.
    pub(crate) fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

const fn used(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        aliases: &[],
        kind,
        use_: Use::Implemented,
    }
}

const fn aliased(name: &'static str, aliases: &'static [&'static str], kind: Kind) -> Field {
    Field {
        name,
        aliases,
        kind,
        use_: Use::Implemented,
    }
}

const fn ignored(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        aliases: &[],
        kind,
        use_: Use::NotImplemented,
    }
}

const fn rejected(name: &'static str, kind: Kind, why: &'static str) -> Field {
    Field {
        name,
        aliases: &[],
        kind,
        use_: Use::Rejected(why),
    }
}

const fn unsupported_check(name: &'static str, check_type: &'static str) -> Field {
    Field {
        name,
        aliases: &[],
        kind: Str,
        use_: Use::UnsupportedCheck(check_type),
    }
}

use Kind::{Any, Bool, Dur, Float, Int, Str};

const STR_LIST: Kind = Kind::List(&Str);

/// The top level of a config file.
pub(crate) static CONFIG: Obj = Obj {
    loose: false,
    fields: &[
        used("acl", Kind::Obj(&ACL)),
        used("addresses", Kind::Obj(&ADDRESSES)),
        used("advertise_addr", Str),
        ignored("advertise_addr_ipv4", Str),
        ignored("advertise_addr_ipv6", Str),
        used("advertise_addr_wan", Str),
        ignored("advertise_addr_wan_ipv4", Str),
        ignored("advertise_addr_wan_ipv6", Str),
        ignored("advertise_reconnect_timeout", Dur),
        ignored("auto_config", Kind::Obj(&AUTO_CONFIG)),
        ignored("auto_encrypt", Kind::Obj(&AUTO_ENCRYPT)),
        ignored("auto_reload_config", Bool),
        ignored("autopilot", Kind::Obj(&AUTOPILOT)),
        used("bind_addr", Str),
        used("bootstrap", Bool),
        used("bootstrap_expect", Int),
        ignored("cache", Kind::Obj(&CACHE)),
        used("check", Kind::OneOrMany(&CHECK)),
        used("check_output_max_size", Int),
        used("check_update_interval", Dur),
        used("checks", Kind::List(&Kind::Obj(&CHECK))),
        used("client_addr", Str),
        ignored("cloud", Kind::Obj(&CLOUD)),
        ignored("config_entries", Kind::Obj(&CONFIG_ENTRIES)),
        ignored("connect", Kind::Obj(&CONNECT)),
        used("data_dir", Str),
        used("datacenter", Str),
        used("default_query_time", Dur),
        ignored("disable_anonymous_signature", Bool),
        ignored("disable_coordinates", Bool),
        ignored("disable_host_node_id", Bool),
        ignored("disable_http_unprintable_char_filter", Bool),
        ignored("disable_keyring_file", Bool),
        ignored("disable_remote_exec", Bool),
        // Accepted and honoured trivially: muster never phones home.
        used("disable_update_check", Bool),
        used("discard_check_output", Bool),
        ignored("discovery_max_stale", Dur),
        used("dns_config", Kind::Obj(&DNS)),
        used("domain", Str),
        used("alt_domain", Str),
        ignored("enable_agent_tls_for_checks", Bool),
        ignored("enable_central_service_config", Bool),
        ignored("enable_debug", Bool),
        used("enable_local_script_checks", Bool),
        used("enable_script_checks", Bool),
        used("enable_syslog", Bool),
        used("encrypt", Str),
        used("encrypt_verify_incoming", Bool),
        used("encrypt_verify_outgoing", Bool),
        ignored("experiments", STR_LIST),
        ignored("gossip_lan", Kind::Obj(&GOSSIP)),
        ignored("gossip_wan", Kind::Obj(&GOSSIP)),
        used("http_config", Kind::Obj(&HTTP_CONFIG)),
        used("leave_on_terminate", Bool),
        ignored("license_path", Str),
        used("limits", Kind::Obj(&LIMITS)),
        ignored("locality", Kind::Obj(&LOCALITY)),
        ignored("log_file", Str),
        used("log_json", Bool),
        used("log_level", Str),
        ignored("log_rotate_bytes", Int),
        ignored("log_rotate_duration", Dur),
        ignored("log_rotate_max_files", Int),
        ignored("log_sublevels", Kind::Map(&Str)),
        used("max_query_time", Dur),
        used("node_id", Str),
        used("node_meta", Kind::Map(&Str)),
        used("node_name", Str),
        ignored("peering", Kind::Obj(&PEERING)),
        used("performance", Kind::Obj(&PERFORMANCE)),
        used("pid_file", Str),
        used("ports", Kind::Obj(&PORTS)),
        ignored("primary_datacenter", Str),
        ignored("primary_gateways", STR_LIST),
        ignored("primary_gateways_interval", Dur),
        ignored("protocol", Int),
        ignored("raft_logstore", Kind::Obj(&RAFT_LOGSTORE)),
        ignored("raft_protocol", Int),
        ignored("raft_snapshot_interval", Dur),
        ignored("raft_snapshot_threshold", Int),
        ignored("raft_trailing_logs", Int),
        Field {
            name: "read_replica",
            aliases: &["non_voting_server"],
            kind: Bool,
            use_: Use::NotImplemented,
        },
        used("reconnect_timeout", Dur),
        ignored("reconnect_timeout_wan", Dur),
        used("recursors", STR_LIST),
        used("rejoin_after_leave", Bool),
        used("retry_interval", Dur),
        ignored("retry_interval_wan", Dur),
        used("retry_join", STR_LIST),
        ignored("retry_join_wan", STR_LIST),
        used("retry_max", Int),
        ignored("retry_max_wan", Int),
        ignored("rpc", Kind::Obj(&RPC)),
        ignored("serf_lan", Str),
        ignored("serf_lan_allowed_cidrs", STR_LIST),
        ignored("serf_wan", Str),
        ignored("serf_wan_allowed_cidrs", STR_LIST),
        used("server", Bool),
        ignored("server_name", Str),
        ignored("server_rejoin_age_max", Dur),
        used("service", Kind::OneOrMany(&SERVICE)),
        used("services", Kind::List(&Kind::Obj(&SERVICE))),
        ignored("session_ttl_min", Dur),
        used("skip_leave_on_interrupt", Bool),
        ignored("snapshot_agent", Kind::Map(&Any)),
        used("syslog_facility", Str),
        ignored("tagged_addresses", Kind::Map(&Str)),
        ignored("telemetry", Kind::Obj(&TELEMETRY)),
        used("tls", Kind::Obj(&TLS)),
        ignored("translate_wan_addrs", Bool),
        ignored("ui_config", Kind::Obj(&UI_CONFIG)),
        ignored("unix_sockets", Kind::Obj(&UNIX_SOCKETS)),
        ignored("use_streaming_backend", Bool),
        ignored("watches", Kind::List(&Any)),
        ignored("xds", Kind::Obj(&XDS)),
        // Enterprise-only keys: Consul CE accepts them too.
        ignored("audit", Kind::Obj(&AUDIT)),
        ignored("partition", Str),
        ignored("reporting", Kind::Obj(&REPORTING)),
        ignored("segment", Str),
        ignored("segments", Kind::List(&Kind::Obj(&SEGMENT))),
        ignored("license_poll_base_time", Dur),
        ignored("license_poll_max_time", Dur),
        ignored("license_update_base_time", Dur),
        ignored("license_update_max_time", Dur),
        // Consul's "non-user" keys: documented as internal, yet accepted in files.
        ignored("ae_interval", Dur),
        ignored("check_deregister_interval_min", Dur),
        ignored("check_reap_interval", Dur),
        ignored("consul", Kind::Obj(&CONSUL_INTERNAL)),
        ignored("revision", Str),
        ignored("segment_limit", Int),
        ignored("segment_name_limit", Int),
        ignored("sync_coordinate_interval_min", Dur),
        ignored("sync_coordinate_rate_target", Float),
        ignored("version", Str),
        ignored("version_prerelease", Str),
        ignored("version_metadata", Str),
        ignored("build_date", Str),
    ],
};

static ADDRESSES: Obj = Obj {
    loose: false,
    fields: &[
        used("dns", Str),
        used("http", Str),
        used("https", Str),
        ignored("grpc", Str),
        ignored("grpc_tls", Str),
    ],
};

static PORTS: Obj = Obj {
    loose: false,
    fields: &[
        used("dns", Int),
        used("http", Int),
        used("https", Int),
        used("serf_lan", Int),
        used("serf_wan", Int),
        used("server", Int),
        ignored("grpc", Int),
        ignored("grpc_tls", Int),
        ignored("proxy_min_port", Int),
        ignored("proxy_max_port", Int),
        ignored("sidecar_min_port", Int),
        ignored("sidecar_max_port", Int),
        ignored("expose_min_port", Int),
        ignored("expose_max_port", Int),
    ],
};

pub(crate) static DNS: Obj = Obj {
    loose: false,
    fields: &[
        used("allow_stale", Bool),
        used("a_record_limit", Int),
        used("disable_compression", Bool),
        used("enable_truncate", Bool),
        used("max_stale", Dur),
        used("node_ttl", Dur),
        used("only_passing", Bool),
        used("recursor_allow", STR_LIST),
        used("recursor_strategy", Str),
        used("recursor_timeout", Dur),
        used("service_ttl", Kind::Map(&Dur)),
        used("udp_answer_limit", Int),
        used("enable_additional_node_meta_txt", Bool),
        used("soa", Kind::Obj(&SOA)),
        ignored("use_cache", Bool),
        ignored("cache_max_age", Dur),
        ignored("prefer_namespace", Bool),
    ],
};

static SOA: Obj = Obj {
    loose: false,
    fields: &[
        used("refresh", Int),
        used("retry", Int),
        used("expire", Int),
        used("min_ttl", Int),
    ],
};

static PERFORMANCE: Obj = Obj {
    loose: false,
    fields: &[
        ignored("leave_drain_time", Dur),
        used("raft_multiplier", Int),
        ignored("rpc_hold_timeout", Dur),
    ],
};

static LIMITS: Obj = Obj {
    loose: false,
    fields: &[
        used("http_max_conns_per_client", Int),
        used("https_handshake_timeout", Dur),
        ignored("request_limits", Kind::Obj(&REQUEST_LIMITS)),
        ignored("rpc_client_timeout", Dur),
        used("rpc_handshake_timeout", Dur),
        ignored("rpc_max_burst", Int),
        ignored("rpc_max_conns_per_client", Int),
        ignored("rpc_rate", Float),
        ignored("kv_max_value_size", Int),
        ignored("txn_max_req_len", Int),
    ],
};

static REQUEST_LIMITS: Obj = Obj {
    loose: false,
    fields: &[
        ignored("mode", Str),
        ignored("read_rate", Float),
        ignored("write_rate", Float),
    ],
};

/// A service definition (`service {}`, `services []`, and the HTTP API's register body).
pub(crate) static SERVICE: Obj = Obj {
    loose: true,
    fields: &[
        ignored("kind", Str),
        used("id", Str),
        used("name", Str),
        used("tags", STR_LIST),
        used("address", Str),
        used("tagged_addresses", Kind::Map(&Kind::Obj(&SERVICE_ADDRESS))),
        used("meta", Kind::Map(&Str)),
        used("port", Int),
        ignored("socket_path", Str),
        used("check", Kind::OneOrMany(&CHECK)),
        used("checks", Kind::List(&Kind::Obj(&CHECK))),
        used("token", Str),
        used("weights", Kind::Obj(&WEIGHTS)),
        used("enable_tag_override", Bool),
        ignored("proxy", Any),
        ignored("connect", Any),
        ignored("namespace", Str),
        ignored("partition", Str),
        ignored("locality", Kind::Obj(&LOCALITY)),
    ],
};

static SERVICE_ADDRESS: Obj = Obj {
    loose: true,
    fields: &[used("address", Str), used("port", Int)],
};

static WEIGHTS: Obj = Obj {
    loose: true,
    fields: &[used("passing", Int), used("warning", Int)],
};

/// A check definition (`check {}`, `checks []`, inside a service, and the HTTP API's body).
pub(crate) static CHECK: Obj = Obj {
    loose: true,
    fields: &[
        aliased("id", &["check_id"], Str),
        used("name", Str),
        used("notes", Str),
        used("service_id", Str),
        used("token", Str),
        used("status", Str),
        aliased("args", &["script_args"], STR_LIST),
        rejected(
            "script",
            Str,
            "the 'script' field was removed in Consul 1.0; use 'args', a list of the command \
             and its arguments (a shell only if you ask for one: [\"/bin/sh\", \"-c\", \"...\"])",
        ),
        used("http", Str),
        used("header", Kind::Map(&Kind::HeaderValues)),
        used("method", Str),
        used("body", Str),
        used("disable_redirects", Bool),
        used("output_max_size", Int),
        used("tcp", Str),
        ignored("tcp_use_tls", Bool),
        unsupported_check("udp", "udp"),
        used("interval", Dur),
        unsupported_check("docker_container_id", "docker"),
        ignored("shell", Str),
        unsupported_check("grpc", "grpc"),
        ignored("grpc_use_tls", Bool),
        used("tls_server_name", Str),
        used("tls_skip_verify", Bool),
        unsupported_check("alias_node", "alias"),
        unsupported_check("alias_service", "alias"),
        used("timeout", Dur),
        used("ttl", Dur),
        unsupported_check("h2ping", "h2ping"),
        ignored("h2ping_use_tls", Bool),
        unsupported_check("os_service", "os_service"),
        used("success_before_passing", Int),
        used("failures_before_warning", Int),
        used("failures_before_critical", Int),
        used("deregister_critical_service_after", Dur),
        ignored("namespace", Str),
        ignored("partition", Str),
    ],
};

static ACL: Obj = Obj {
    loose: false,
    fields: &[
        used("enabled", Bool),
        ignored("enable_token_replication", Bool),
        ignored("policy_ttl", Dur),
        ignored("role_ttl", Dur),
        used("token_ttl", Dur),
        used("down_policy", Str),
        used("default_policy", Str),
        ignored("enable_key_list_policy", Bool),
        used("tokens", Kind::Obj(&ACL_TOKENS)),
        ignored("enable_token_persistence", Bool),
        ignored("msp_disable_bootstrap", Bool),
    ],
};

static ACL_TOKENS: Obj = Obj {
    loose: false,
    fields: &[
        used("initial_management", Str),
        ignored("replication", Str),
        used("agent_recovery", Str),
        used("default", Str),
        // Accepted: the agent's own catalog writes travel over the server RPC port, which
        // trusts its peers (use TLS with verify_incoming), so they need no token.
        used("agent", Str),
        ignored("config_file_service_registration", Str),
        used("dns", Str),
        ignored(
            "managed_service_provider",
            Kind::List(&Kind::Obj(&MSP_TOKEN)),
        ),
    ],
};

static MSP_TOKEN: Obj = Obj {
    loose: false,
    fields: &[ignored("accessor_id", Str), ignored("secret_id", Str)],
};

static AUTO_CONFIG: Obj = Obj {
    loose: false,
    fields: &[
        ignored("enabled", Bool),
        ignored("intro_token", Str),
        ignored("intro_token_file", Str),
        ignored("server_addresses", STR_LIST),
        ignored("dns_sans", STR_LIST),
        ignored("ip_sans", STR_LIST),
        ignored("authorization", Kind::Obj(&AUTO_CONFIG_AUTHZ)),
    ],
};

static AUTO_CONFIG_AUTHZ: Obj = Obj {
    loose: false,
    fields: &[
        ignored("enabled", Bool),
        ignored("static", Kind::Obj(&AUTO_CONFIG_STATIC)),
    ],
};

static AUTO_CONFIG_STATIC: Obj = Obj {
    loose: false,
    fields: &[
        ignored("claim_assertions", STR_LIST),
        ignored("allow_reuse", Bool),
        ignored("jwt_supported_algs", STR_LIST),
        ignored("bound_audiences", STR_LIST),
        ignored("claim_mappings", Kind::Map(&Str)),
        ignored("list_claim_mappings", Kind::Map(&Str)),
        ignored("oidc_discovery_url", Str),
        ignored("oidc_discovery_ca_cert", Str),
        ignored("jwks_url", Str),
        ignored("jwks_ca_cert", Str),
        ignored("jwt_validation_pub_keys", STR_LIST),
        ignored("bound_issuer", Str),
        ignored("expiration_leeway", Dur),
        ignored("not_before_leeway", Dur),
        ignored("clock_skew_leeway", Dur),
    ],
};

static AUTO_ENCRYPT: Obj = Obj {
    loose: false,
    fields: &[
        ignored("tls", Bool),
        ignored("dns_san", STR_LIST),
        ignored("ip_san", STR_LIST),
        ignored("allow_tls", Bool),
    ],
};

static AUTOPILOT: Obj = Obj {
    loose: false,
    fields: &[
        ignored("cleanup_dead_servers", Bool),
        ignored("last_contact_threshold", Dur),
        ignored("max_trailing_logs", Int),
        ignored("min_quorum", Int),
        ignored("server_stabilization_time", Dur),
        ignored("disable_upgrade_migration", Bool),
        ignored("redundancy_zone_tag", Str),
        ignored("upgrade_version_tag", Str),
    ],
};

static CACHE: Obj = Obj {
    loose: false,
    fields: &[
        ignored("entry_fetch_max_burst", Int),
        ignored("entry_fetch_rate", Float),
    ],
};

static CLOUD: Obj = Obj {
    loose: false,
    fields: &[
        ignored("resource_id", Str),
        ignored("client_id", Str),
        ignored("client_secret", Str),
        ignored("hostname", Str),
        ignored("auth_url", Str),
        ignored("scada_address", Str),
    ],
};

static CONFIG_ENTRIES: Obj = Obj {
    loose: false,
    fields: &[ignored("bootstrap", Kind::List(&Any))],
};

static CONNECT: Obj = Obj {
    loose: false,
    fields: &[
        ignored("enabled", Bool),
        ignored("ca_provider", Str),
        ignored("ca_config", Kind::Map(&Any)),
        ignored("enable_mesh_gateway_wan_federation", Bool),
        ignored("test_ca_leaf_root_change_spread", Dur),
    ],
};

static GOSSIP: Obj = Obj {
    loose: false,
    fields: &[
        ignored("gossip_nodes", Int),
        ignored("gossip_interval", Dur),
        ignored("probe_interval", Dur),
        ignored("probe_timeout", Dur),
        ignored("suspicion_mult", Int),
        ignored("retransmit_mult", Int),
    ],
};

static HTTP_CONFIG: Obj = Obj {
    loose: false,
    fields: &[
        ignored("block_endpoints", STR_LIST),
        ignored("allow_write_http_from", STR_LIST),
        ignored("response_headers", Kind::Map(&Str)),
        ignored("use_cache", Bool),
        used("max_header_bytes", Int),
    ],
};

static LOCALITY: Obj = Obj {
    loose: true,
    fields: &[ignored("region", Str), ignored("zone", Str)],
};

static PEERING: Obj = Obj {
    loose: false,
    fields: &[
        ignored("enabled", Bool),
        ignored("test_allow_peer_registrations", Bool),
    ],
};

static RAFT_LOGSTORE: Obj = Obj {
    loose: false,
    fields: &[
        ignored("backend", Str),
        ignored("disable_log_cache", Bool),
        ignored("verification", Kind::Obj(&RAFT_VERIFICATION)),
        ignored("boltdb", Kind::Obj(&RAFT_BOLTDB)),
        ignored("wal", Kind::Obj(&RAFT_WAL)),
    ],
};

static RAFT_VERIFICATION: Obj = Obj {
    loose: false,
    fields: &[ignored("enabled", Bool), ignored("interval", Dur)],
};

pub(crate) static RAFT_BOLTDB: Obj = Obj {
    loose: false,
    fields: &[ignored("no_freelist_sync", Bool)],
};

static RAFT_WAL: Obj = Obj {
    loose: false,
    fields: &[ignored("segment_size_mb", Int)],
};

static RPC: Obj = Obj {
    loose: false,
    fields: &[ignored("enable_streaming", Bool)],
};

static TELEMETRY: Obj = Obj {
    loose: false,
    fields: &[
        ignored("circonus_api_app", Str),
        ignored("circonus_api_token", Str),
        ignored("circonus_api_url", Str),
        ignored("circonus_broker_id", Str),
        ignored("circonus_broker_select_tag", Str),
        ignored("circonus_check_display_name", Str),
        ignored("circonus_check_force_metric_activation", Str),
        ignored("circonus_check_id", Str),
        ignored("circonus_check_instance_id", Str),
        ignored("circonus_check_search_tag", Str),
        ignored("circonus_check_tags", Str),
        ignored("circonus_submission_interval", Str),
        ignored("circonus_submission_url", Str),
        ignored("disable_hostname", Bool),
        ignored("dogstatsd_addr", Str),
        ignored("dogstatsd_tags", STR_LIST),
        ignored("retry_failed_connection", Bool),
        ignored("filter_default", Bool),
        ignored("prefix_filter", STR_LIST),
        ignored("metrics_prefix", Str),
        ignored("prometheus_retention_time", Dur),
        ignored("statsd_address", Str),
        ignored("statsite_address", Str),
        ignored("disable_compat_1.9", Bool),
    ],
};

static TLS: Obj = Obj {
    loose: false,
    fields: &[
        used("defaults", Kind::Obj(&TLS_DEFAULTS)),
        used("internal_rpc", Kind::Obj(&TLS_INTERNAL_RPC)),
        used("https", Kind::Obj(&TLS_HTTPS)),
        // muster serves no gRPC: the whole block warns.
        ignored("grpc", Kind::Obj(&TLS_PROTOCOL)),
    ],
};

const ONLY_INTERNAL_RPC: &str =
    "verify_server_hostname is only valid in the tls.internal_rpc stanza";

/// `tls.defaults`: applies to every interface that does not set the key itself.
static TLS_DEFAULTS: Obj = Obj {
    loose: false,
    fields: &[
        used("ca_file", Str),
        used("ca_path", Str),
        used("cert_file", Str),
        used("key_file", Str),
        used("tls_min_version", Str),
        used("tls_cipher_suites", Str),
        used("verify_incoming", Bool),
        used("verify_outgoing", Bool),
        rejected("verify_server_hostname", Bool, ONLY_INTERNAL_RPC),
        ignored("use_auto_cert", Bool),
    ],
};

/// `tls.https`: the HTTPS API listener. muster makes no outgoing HTTPS calls with the agent's
/// certificate (Consul's `enable_agent_tls_for_checks`), so `verify_outgoing` has no effect.
static TLS_HTTPS: Obj = Obj {
    loose: false,
    fields: &[
        used("ca_file", Str),
        used("ca_path", Str),
        used("cert_file", Str),
        used("key_file", Str),
        used("tls_min_version", Str),
        used("tls_cipher_suites", Str),
        used("verify_incoming", Bool),
        ignored("verify_outgoing", Bool),
        rejected("verify_server_hostname", Bool, ONLY_INTERNAL_RPC),
        ignored("use_auto_cert", Bool),
    ],
};

/// `tls.internal_rpc`: the server RPC port and every RPC to a server.
static TLS_INTERNAL_RPC: Obj = Obj {
    loose: false,
    fields: &[
        used("ca_file", Str),
        used("ca_path", Str),
        used("cert_file", Str),
        used("key_file", Str),
        used("tls_min_version", Str),
        used("tls_cipher_suites", Str),
        used("verify_incoming", Bool),
        used("verify_outgoing", Bool),
        used("verify_server_hostname", Bool),
        ignored("use_auto_cert", Bool),
    ],
};

/// `tls.grpc` (not implemented: every key warns).
static TLS_PROTOCOL: Obj = Obj {
    loose: false,
    fields: &[
        ignored("ca_file", Str),
        ignored("ca_path", Str),
        ignored("cert_file", Str),
        ignored("key_file", Str),
        ignored("tls_min_version", Str),
        ignored("tls_cipher_suites", Str),
        ignored("verify_incoming", Bool),
        ignored("verify_outgoing", Bool),
        ignored("verify_server_hostname", Bool),
        ignored("use_auto_cert", Bool),
    ],
};

static UI_CONFIG: Obj = Obj {
    loose: false,
    fields: &[
        ignored("enabled", Bool),
        ignored("dir", Str),
        ignored("content_path", Str),
        ignored("metrics_provider", Str),
        ignored("metrics_provider_files", STR_LIST),
        ignored("metrics_provider_options_json", Str),
        ignored("metrics_proxy", Kind::Obj(&UI_METRICS_PROXY)),
        ignored("dashboard_url_templates", Kind::Map(&Str)),
    ],
};

static UI_METRICS_PROXY: Obj = Obj {
    loose: false,
    fields: &[
        ignored("base_url", Str),
        ignored("add_headers", Kind::List(&Kind::Obj(&UI_HEADER))),
        ignored("path_allowlist", STR_LIST),
    ],
};

static UI_HEADER: Obj = Obj {
    loose: false,
    fields: &[ignored("name", Str), ignored("value", Str)],
};

static UNIX_SOCKETS: Obj = Obj {
    loose: false,
    fields: &[
        ignored("group", Str),
        ignored("mode", Str),
        ignored("user", Str),
    ],
};

static XDS: Obj = Obj {
    loose: false,
    fields: &[ignored("update_max_per_second", Float)],
};

static AUDIT: Obj = Obj {
    loose: false,
    fields: &[
        ignored("enabled", Bool),
        ignored("sink", Kind::Map(&Kind::Obj(&AUDIT_SINK))),
    ],
};

static AUDIT_SINK: Obj = Obj {
    loose: false,
    fields: &[
        ignored("type", Str),
        ignored("format", Str),
        ignored("path", Str),
        ignored("delivery_guarantee", Str),
        ignored("mode", Str),
        ignored("rotate_bytes", Int),
        ignored("rotate_duration", Dur),
        ignored("rotate_max_files", Int),
        // Deprecated in Consul with a warning; still accepted.
        ignored("name", Str),
    ],
};

static REPORTING: Obj = Obj {
    loose: false,
    fields: &[ignored("license", Kind::Obj(&REPORTING_LICENSE))],
};

static REPORTING_LICENSE: Obj = Obj {
    loose: false,
    fields: &[ignored("enabled", Bool)],
};

static SEGMENT: Obj = Obj {
    loose: false,
    fields: &[
        ignored("advertise", Str),
        ignored("bind", Str),
        ignored("name", Str),
        ignored("port", Int),
        ignored("rpc_listener", Bool),
    ],
};

static CONSUL_INTERNAL: Obj = Obj {
    loose: false,
    fields: &[
        ignored("coordinate", Kind::Obj(&CONSUL_COORDINATE)),
        ignored("raft", Kind::Obj(&CONSUL_RAFT)),
        ignored("server", Kind::Obj(&CONSUL_SERVER)),
    ],
};

static CONSUL_COORDINATE: Obj = Obj {
    loose: false,
    fields: &[
        ignored("update_batch_size", Int),
        ignored("update_max_batches", Int),
        ignored("update_period", Dur),
    ],
};

static CONSUL_RAFT: Obj = Obj {
    loose: false,
    fields: &[
        ignored("election_timeout", Dur),
        ignored("heartbeat_timeout", Dur),
        ignored("leader_lease_timeout", Dur),
    ],
};

static CONSUL_SERVER: Obj = Obj {
    loose: false,
    fields: &[ignored("health_interval", Dur)],
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Every struct's keys are distinct, also when compared the loose way.
    fn assert_distinct(obj: &'static Obj, path: &str) {
        let mut seen = std::collections::HashSet::new();
        for field in obj.fields {
            let mut names = vec![field.name];
            names.extend(field.aliases.iter().copied());
            for name in names {
                let key: String = if obj.loose {
                    name.replace('_', "").to_lowercase()
                } else {
                    name.to_lowercase()
                };
                assert!(seen.insert(key), "duplicate key {path}.{name}");
            }
            if let Kind::Obj(o) | Kind::OneOrMany(o) = &field.kind {
                assert_distinct(o, &format!("{path}.{}", field.name));
            }
            if let Kind::List(Kind::Obj(o)) | Kind::Map(Kind::Obj(o)) = &field.kind {
                assert_distinct(o, &format!("{path}.{}", field.name));
            }
        }
    }

    #[test]
    fn keys_are_distinct() {
        assert_distinct(&CONFIG, "");
    }

    #[test]
    fn lookup_matches_case_and_loose_forms() {
        assert_eq!(CONFIG.lookup("Node_Name").unwrap().0.name, "node_name");
        assert!(
            CONFIG.lookup("NodeName").is_none(),
            "top level is not loose"
        );
        assert_eq!(
            CHECK
                .lookup("DeregisterCriticalServiceAfter")
                .unwrap()
                .0
                .name,
            "deregister_critical_service_after"
        );
        assert_eq!(
            CHECK.lookup("TLSSkipVerify").unwrap().0.name,
            "tls_skip_verify"
        );
        assert_eq!(CHECK.lookup("ServiceID").unwrap().0.name, "service_id");
        let (field, primary) = CHECK.lookup("CheckID").unwrap();
        assert_eq!((field.name, primary), ("id", false));
        assert_eq!(CHECK.lookup("ScriptArgs").unwrap().0.name, "args");
        assert_eq!(CHECK.lookup("script_args").unwrap().0.name, "args");
        assert_eq!(
            CONFIG.lookup("non_voting_server").unwrap().0.name,
            "read_replica"
        );
    }
}
