//! Service and check definitions, decoded the way Consul reads them from config files and
//! from the HTTP API (`/v1/agent/service/register`, `/v1/agent/check/register`): field names
//! case-insensitive, snake_case and CamelCase both accepted, durations as Go strings or
//! nanoseconds.
//!
//! Both paths share the normalizer, the typed decoding and the validation; they differ only
//! in how a problem is reported (file and key for files, [`DecodeError`] for the API), in
//! unknown fields (errors in files, ignored in API bodies, as Go's JSON decoder does) and in
//! the script-check permission ([`ScriptCheckPolicy`]).
//!
//! Invariants of a decoded definition: names are non-empty, IDs are defaulted as Consul does
//! (a service ID is its name; a standalone check ID is its name; an embedded check without an
//! ID is `service:<service-id>`, or `service:<service-id>:<n>` from 1 when the service has
//! several checks, and its default name is `Service '<name>' check`), every check has
//! exactly one type, intervals are at least 1s and `deregister_critical_service_after` at
//! least 1m (raised with a warning, as Consul does).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{DecodeError, Problem, ProblemKind};
use super::normalize::{Mode, Walker, index, join};
use super::schema::{CHECK, SERVICE};
use crate::duration::format_duration;

/// Consul's minimum check interval; shorter ones are raised with a warning.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Consul's minimum `deregister_critical_service_after`; shorter ones are raised.
pub const MIN_DEREGISTER_AFTER: Duration = Duration::from_secs(60);
/// Default timeout of HTTP and TCP checks.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default timeout of script checks.
pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

/// The message Consul gives for a check without a usable type.
const MUST_PROVIDE: &str = "Must provide TTL or Script/DockerContainerID/HTTP/TCP and Interval";
/// The message for a script check from a config file when scripts are off.
pub(crate) const FILE_SCRIPTS_DISABLED: &str = "Scripts are disabled on this agent; to enable, \
     configure 'enable_script_checks' or 'enable_local_script_checks' to true";

/// A check's health, as Consul spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// `passing`
    Passing,
    /// `warning`
    Warning,
    /// `critical`
    Critical,
}

impl HealthStatus {
    /// Consul's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Passing => "passing",
            HealthStatus::Warning => "warning",
            HealthStatus::Critical => "critical",
        }
    }

    /// Reads Consul's spelling (exact, lower case).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "passing" => Some(HealthStatus::Passing),
            "warning" => Some(HealthStatus::Warning),
            "critical" => Some(HealthStatus::Critical),
            _ => None,
        }
    }
}

/// What a check probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum CheckKind {
    /// An HTTP request; 2xx is passing, 429 warning, anything else critical.
    Http {
        /// The URL.
        url: String,
        /// The method (`GET` unless set).
        method: String,
        /// Request headers, each with one or more values.
        header: BTreeMap<String, Vec<String>>,
        /// The request body (empty for none).
        body: String,
        /// Skip TLS verification.
        tls_skip_verify: bool,
        /// The TLS server name to verify, when not the URL's host.
        tls_server_name: String,
        /// Do not follow redirects.
        disable_redirects: bool,
    },
    /// A TCP connect to `host:port`.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// A command run without a shell: exit 0 passing, 1 warning, anything else critical.
    Script {
        /// The command and its arguments.
        args: Vec<String>,
    },
    /// Fed by `/v1/agent/check/{pass,warn,fail,update}`; critical when not fed within `ttl`.
    Ttl {
        /// How long a status stays valid.
        #[serde(with = "crate::duration::serde_go")]
        ttl: Duration,
    },
    /// A type Consul has and muster cannot run yet (`udp`, `grpc`, `h2ping`, `alias`,
    /// `docker`, `os_service`). Such a check is registered always critical and never run, so
    /// its service can never look healthy because of a check nobody runs.
    Unsupported {
        /// Consul's type name, as in the API's `Type`.
        check_type: String,
        /// What it names, by Consul's `Definition` field (`GRPC`, `AliasService`, ...).
        targets: BTreeMap<String, String>,
        /// The command of a Docker check.
        args: Vec<String>,
    },
}

impl CheckKind {
    /// Consul's name for the type (`http`, `tcp`, `script`, `ttl`, or the unsupported
    /// type's), as in the API's `Type`.
    pub fn type_name(&self) -> &str {
        match self {
            CheckKind::Http { .. } => "http",
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Script { .. } => "script",
            CheckKind::Ttl { .. } => "ttl",
            CheckKind::Unsupported { check_type, .. } => check_type,
        }
    }
}

/// The output of a check muster cannot run: it says why the check is critical.
pub fn unsupported_check_output(check_type: &str) -> String {
    format!("muster does not support {check_type} checks yet; this check is always critical")
}

/// A health check definition, fully defaulted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckDefinition {
    /// The check ID, unique per agent.
    pub id: String,
    /// The check name.
    pub name: String,
    /// Free text shown in the API.
    pub notes: String,
    /// The local service this check belongs to, if any.
    pub service_id: Option<String>,
    /// The ACL token (accepted; muster has no ACLs yet).
    pub token: String,
    /// The status until the first result (Consul's default: critical).
    pub initial_status: HealthStatus,
    /// What is probed.
    pub kind: CheckKind,
    /// How often (every kind but TTL).
    #[serde(with = "crate::duration::serde_go::option")]
    pub interval: Option<Duration>,
    /// How long one probe may take (TTL checks: zero).
    #[serde(with = "crate::duration::serde_go")]
    pub timeout: Duration,
    /// Consecutive successes needed before passing.
    pub success_before_passing: u32,
    /// Consecutive failures needed before warning.
    pub failures_before_warning: u32,
    /// Consecutive failures needed before critical.
    pub failures_before_critical: u32,
    /// Deregister the service after it has been critical this long.
    #[serde(with = "crate::duration::serde_go::option")]
    pub deregister_critical_service_after: Option<Duration>,
    /// This check's own output cap in bytes; the agent-wide cap applies when unset or larger.
    pub output_max_size: Option<usize>,
}

impl CheckDefinition {
    /// Decodes a `/v1/agent/check/register` body as Consul reads it.
    ///
    /// Decoding does not know the agent's script-check setting: call
    /// [`ScriptCheckPolicy::permit_api_check`] before registering.
    pub fn from_api_json(value: &Value) -> Result<CheckDefinition, DecodeError> {
        let mut warnings = Vec::new();
        let result = Walker::new(Mode::Api, "request", &mut warnings)
            .object(&CHECK, value.clone(), "")
            .and_then(|map| decode_check(map, None, &mut warnings));
        log_api_warnings(&warnings);
        result.map_err(Problem::into_decode_error)
    }

    /// True for a script check (which needs permission).
    pub fn is_script(&self) -> bool {
        matches!(self.kind, CheckKind::Script { .. })
    }

    /// True for a check type muster cannot run (registered always critical, never run).
    pub fn is_unsupported(&self) -> bool {
        matches!(self.kind, CheckKind::Unsupported { .. })
    }

    /// The output cap for this check, given the agent-wide `check_output_max_size`.
    pub fn output_limit(&self, agent_max: usize) -> usize {
        match self.output_max_size {
            Some(own) if own < agent_max => own,
            _ => agent_max,
        }
    }
}

/// A service address under a tag (`lan`, `wan`, `lan_ipv4`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAddress {
    /// The address (may be empty).
    pub address: String,
    /// The port.
    pub port: u16,
}

/// SRV weights used in DNS answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    /// Weight while passing (at least 1).
    pub passing: u32,
    /// Weight while warning.
    pub warning: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            passing: 1,
            warning: 1,
        }
    }
}

/// A service definition with its checks, fully defaulted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDefinition {
    /// The service ID, unique per agent (defaults to the name).
    pub id: String,
    /// The service name.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// The address; empty means the node's address.
    pub address: String,
    /// Tagged addresses.
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
    /// The port.
    pub port: u16,
    /// SRV weights.
    pub weights: Weights,
    /// Let catalog-side tag changes stand (anti-entropy leaves tags alone).
    pub enable_tag_override: bool,
    /// The ACL token (accepted; muster has no ACLs yet).
    pub token: String,
    /// The service's checks, their IDs, names and `service_id` filled in.
    pub checks: Vec<CheckDefinition>,
}

impl ServiceDefinition {
    /// Decodes a `/v1/agent/service/register` body as Consul reads it.
    ///
    /// Decoding does not know the agent's script-check setting: call
    /// [`ScriptCheckPolicy::permit_api_service`] before registering.
    pub fn from_api_json(value: &Value) -> Result<ServiceDefinition, DecodeError> {
        let mut warnings = Vec::new();
        let result = Walker::new(Mode::Api, "request", &mut warnings)
            .object(&SERVICE, value.clone(), "")
            .and_then(|map| decode_service(map, Mode::Api, &mut warnings));
        log_api_warnings(&warnings);
        result
            .map(|(def, _)| def)
            .map_err(Problem::into_decode_error)
    }
}

fn log_api_warnings(warnings: &[String]) {
    for w in warnings {
        tracing::warn!("{w}");
    }
}

/// Which script checks the agent accepts (`enable_script_checks` allows them from config
/// files and the HTTP API; `enable_local_script_checks` from config files only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptCheckPolicy {
    /// `enable_script_checks`.
    pub enable_script_checks: bool,
    /// `enable_local_script_checks` (defaults to `enable_script_checks`).
    pub enable_local_script_checks: bool,
}

impl ScriptCheckPolicy {
    /// Script checks from config files are allowed.
    pub fn allows_files(&self) -> bool {
        self.enable_script_checks || self.enable_local_script_checks
    }

    /// Script checks from the HTTP API are allowed.
    pub fn allows_api(&self) -> bool {
        self.enable_script_checks
    }

    /// Refuses a script check registered through the API unless `enable_script_checks`.
    pub fn permit_api_check(&self, check: &CheckDefinition) -> Result<(), DecodeError> {
        if check.is_script() && !self.allows_api() {
            return Err(DecodeError::ScriptsDisabled);
        }
        Ok(())
    }

    /// The same for every check of a service registered through the API.
    pub fn permit_api_service(&self, service: &ServiceDefinition) -> Result<(), DecodeError> {
        service
            .checks
            .iter()
            .try_for_each(|c| self.permit_api_check(c))
    }
}

// ---------------------------------------------------------------------------------------------
// Typed decoding of normalized values.

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawCheck {
    id: Option<String>,
    name: Option<String>,
    notes: Option<String>,
    service_id: Option<String>,
    token: Option<String>,
    status: Option<String>,
    args: Option<Vec<String>>,
    http: Option<String>,
    header: Option<BTreeMap<String, Vec<String>>>,
    method: Option<String>,
    body: Option<String>,
    disable_redirects: Option<bool>,
    output_max_size: Option<i64>,
    tcp: Option<String>,
    udp: Option<String>,
    grpc: Option<String>,
    h2ping: Option<String>,
    alias_node: Option<String>,
    alias_service: Option<String>,
    docker_container_id: Option<String>,
    os_service: Option<String>,
    #[serde(with = "crate::duration::serde_go::option")]
    interval: Option<Duration>,
    tls_server_name: Option<String>,
    tls_skip_verify: Option<bool>,
    #[serde(with = "crate::duration::serde_go::option")]
    timeout: Option<Duration>,
    #[serde(with = "crate::duration::serde_go::option")]
    ttl: Option<Duration>,
    success_before_passing: Option<i64>,
    failures_before_warning: Option<i64>,
    failures_before_critical: Option<i64>,
    #[serde(with = "crate::duration::serde_go::option")]
    deregister_critical_service_after: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawService {
    id: Option<String>,
    name: Option<String>,
    tags: Option<Vec<String>>,
    address: Option<String>,
    tagged_addresses: Option<BTreeMap<String, RawServiceAddress>>,
    meta: Option<BTreeMap<String, String>>,
    port: Option<i64>,
    token: Option<String>,
    weights: Option<RawWeights>,
    enable_tag_override: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawServiceAddress {
    address: Option<String>,
    port: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawWeights {
    passing: Option<i64>,
    warning: Option<i64>,
}

fn typed<T: serde::de::DeserializeOwned>(map: Map<String, Value>) -> Result<T, Problem> {
    // The normalizer has checked every type; a failure here is a bug, still reported cleanly.
    serde_json::from_value(Value::Object(map))
        .map_err(|e| Problem::new(ProblemKind::Type, "", e.to_string()))
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn invalid(path: &str, message: impl Into<String>) -> Problem {
    Problem::new(ProblemKind::Invalid, path, message)
}

fn count(value: Option<i64>, path: &str, name: &str) -> Result<u32, Problem> {
    match value {
        None => Ok(0),
        Some(v) => u32::try_from(v).map_err(|_| {
            invalid(
                &join(path, name),
                format!("{name} must be between 0 and {}", u32::MAX),
            )
        }),
    }
}

/// The service a check is embedded in.
pub(crate) struct EmbeddedIn<'a> {
    pub service_id: &'a str,
    pub service_name: &'a str,
    /// 0-based position among the service's checks.
    pub position: usize,
    /// How many checks the service has.
    pub total: usize,
}

/// Decodes and validates one normalized check. Paths in problems are relative to the check.
pub(crate) fn decode_check(
    map: Map<String, Value>,
    embedded: Option<EmbeddedIn<'_>>,
    warnings: &mut Vec<String>,
) -> Result<CheckDefinition, Problem> {
    let raw: RawCheck = typed(map)?;

    let ttl = raw.ttl.filter(|d| !d.is_zero());
    let http = non_empty(raw.http);
    let tcp = non_empty(raw.tcp);
    let args = raw.args.filter(|a| !a.is_empty());
    let unsupported = unsupported_type(
        [
            ("udp", "UDP", raw.udp),
            ("grpc", "GRPC", raw.grpc),
            ("h2ping", "H2PING", raw.h2ping),
            ("alias", "AliasNode", raw.alias_node),
            ("alias", "AliasService", raw.alias_service),
            ("docker", "DockerContainerID", raw.docker_container_id),
            ("os_service", "OSService", raw.os_service),
        ],
        args.is_some(),
    )?;
    let mut present: Vec<&str> = Vec::new();
    if ttl.is_some() {
        present.push("ttl");
    }
    if http.is_some() {
        present.push("http");
    }
    if tcp.is_some() {
        present.push("tcp");
    }
    // A Docker check's `args` are its command, not a script check of their own.
    let docker = unsupported.as_ref().is_some_and(|(t, _)| t == "docker");
    if args.is_some() && !docker {
        present.push("args");
    }
    if let Some((check_type, _)) = &unsupported {
        present.push(check_type);
    }
    match present.len() {
        0 => return Err(invalid("", MUST_PROVIDE)),
        1 => {}
        _ => {
            return Err(invalid(
                "",
                format!(
                    "{MUST_PROVIDE} (this check sets {}; a check has exactly one type)",
                    present.join(" and ")
                ),
            ));
        }
    }
    let interval = raw.interval.filter(|d| !d.is_zero());
    if ttl.is_some() && interval.is_some() {
        return Err(invalid("", "Interval and TTL cannot both be specified"));
    }
    // Consul's alias checks follow another check's status: no interval of their own.
    let alias = unsupported.as_ref().is_some_and(|(t, _)| t == "alias");
    if alias && interval.is_some() {
        return Err(invalid("", "Interval cannot be set for Alias checks"));
    }
    if ttl.is_none() && interval.is_none() && !alias {
        return Err(invalid("", MUST_PROVIDE));
    }

    let initial_status = match non_empty(raw.status) {
        None => HealthStatus::Critical,
        Some(s) => HealthStatus::parse(&s).ok_or_else(|| {
            Problem::consul(
                ProblemKind::Invalid,
                "status",
                format!("Invalid check status: '{s}'"),
            )
        })?,
    };

    let (id, name, service_id) = match &embedded {
        Some(svc) => {
            let name = non_empty(raw.name)
                .unwrap_or_else(|| format!("Service '{}' check", svc.service_name));
            let id = non_empty(raw.id).unwrap_or_else(|| {
                if svc.total > 1 {
                    format!("service:{}:{}", svc.service_id, svc.position + 1)
                } else {
                    format!("service:{}", svc.service_id)
                }
            });
            (id, name, Some(svc.service_id.to_owned()))
        }
        None => {
            let Some(name) = non_empty(raw.name) else {
                return Err(invalid("", "Missing check name"));
            };
            let id = non_empty(raw.id).unwrap_or_else(|| name.clone());
            (id, name, non_empty(raw.service_id))
        }
    };

    let interval = interval.map(|d| {
        if d < MIN_CHECK_INTERVAL {
            warnings.push(format!(
                "check '{id}' has interval below minimum of {}",
                format_duration(MIN_CHECK_INTERVAL)
            ));
            MIN_CHECK_INTERVAL
        } else {
            d
        }
    });
    let deregister = raw
        .deregister_critical_service_after
        .filter(|d| !d.is_zero())
        .map(|d| {
            if d < MIN_DEREGISTER_AFTER {
                warnings.push(format!(
                    "check '{id}' has deregister interval below minimum of {}",
                    format_duration(MIN_DEREGISTER_AFTER)
                ));
                MIN_DEREGISTER_AFTER
            } else {
                d
            }
        });

    let success_before_passing = count(raw.success_before_passing, "", "success_before_passing")?;
    let failures_before_critical =
        count(raw.failures_before_critical, "", "failures_before_critical")?;
    let failures_before_warning = match raw.failures_before_warning {
        None => failures_before_critical,
        some => count(some, "", "failures_before_warning")?,
    };
    let output_max_size = match raw.output_max_size {
        None | Some(0) => None,
        Some(n) if n < 0 => {
            return Err(invalid(
                "output_max_size",
                "output_max_size must be positive",
            ));
        }
        Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
    };

    let kind = if let Some((check_type, targets)) = unsupported {
        CheckKind::Unsupported {
            check_type,
            targets,
            args: args.unwrap_or_default(),
        }
    } else if let Some(ttl) = ttl {
        CheckKind::Ttl { ttl }
    } else if let Some(url) = http {
        CheckKind::Http {
            url,
            method: non_empty(raw.method).unwrap_or_else(|| "GET".to_owned()),
            header: raw.header.unwrap_or_default(),
            body: raw.body.unwrap_or_default(),
            tls_skip_verify: raw.tls_skip_verify.unwrap_or(false),
            tls_server_name: raw.tls_server_name.unwrap_or_default(),
            disable_redirects: raw.disable_redirects.unwrap_or(false),
        }
    } else if let Some(address) = tcp {
        CheckKind::Tcp { address }
    } else {
        CheckKind::Script {
            args: args.unwrap_or_default(),
        }
    };
    let timeout = match (&kind, raw.timeout.filter(|d| !d.is_zero())) {
        (CheckKind::Ttl { .. }, _) => Duration::ZERO,
        (CheckKind::Unsupported { .. }, _) if alias => Duration::ZERO,
        (_, Some(t)) => t,
        (CheckKind::Script { .. }, None) => DEFAULT_SCRIPT_TIMEOUT,
        (_, None) => DEFAULT_CHECK_TIMEOUT,
    };

    Ok(CheckDefinition {
        id,
        name,
        notes: raw.notes.unwrap_or_default(),
        service_id,
        token: raw.token.unwrap_or_default(),
        initial_status,
        kind,
        interval,
        timeout,
        success_before_passing,
        failures_before_warning,
        failures_before_critical,
        deregister_critical_service_after: deregister,
        output_max_size,
    })
}

/// An unsupported check type (Consul's name) and its targets by Consul's `Definition` field.
type UnsupportedType = (String, BTreeMap<String, String>);

/// The unsupported check type a definition asks for, with its non-empty targets by Consul's
/// `Definition` field name; `None` for none. Two different types are an error (a check has
/// one type); `alias_node` with `alias_service` is one alias check. A Docker check needs its
/// command in `args`, as in Consul.
fn unsupported_type(
    fields: [(&'static str, &'static str, Option<String>); 7],
    has_args: bool,
) -> Result<Option<UnsupportedType>, Problem> {
    let mut found: Option<UnsupportedType> = None;
    for (check_type, field, value) in fields {
        let Some(value) = non_empty(value) else {
            continue;
        };
        match &mut found {
            Some((t, targets)) if t == check_type => {
                targets.insert(field.to_owned(), value);
            }
            Some((t, _)) => {
                return Err(invalid(
                    "",
                    format!(
                        "{MUST_PROVIDE} (this check sets {t} and {check_type}; a check has \
                         exactly one type)"
                    ),
                ));
            }
            None => {
                found = Some((
                    check_type.to_owned(),
                    BTreeMap::from([(field.to_owned(), value)]),
                ));
            }
        }
    }
    if found.as_ref().is_some_and(|(t, _)| t == "docker") && !has_args {
        return Err(invalid(
            "",
            "a Docker check (docker_container_id) needs args: the command to run in the container",
        ));
    }
    Ok(found)
}

/// Consul's metadata limits (`structs.ValidateMetadata`).
pub(crate) const META_MAX_PAIRS: usize = 64;
const META_KEY_MAX: usize = 128;
const META_VALUE_MAX: usize = 512;

/// Validates metadata pairs as Consul does; `what` is "Node" or "Service".
pub(crate) fn validate_meta(meta: &BTreeMap<String, String>, what: &str) -> Result<(), String> {
    if meta.len() > META_MAX_PAIRS {
        return Err(format!(
            "{what} metadata cannot contain more than {META_MAX_PAIRS} key/value pairs"
        ));
    }
    for (key, value) in meta {
        let problem = if key.is_empty() {
            Some("Key cannot be blank".to_owned())
        } else if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            Some("Key contains invalid characters".to_owned())
        } else if key.len() > META_KEY_MAX {
            Some(format!(
                "Key is too long (limit: {META_KEY_MAX} characters)"
            ))
        } else if key.starts_with("consul-") {
            Some("Key prefix 'consul-' is reserved for internal use".to_owned())
        } else if value.len() > META_VALUE_MAX {
            Some(format!(
                "Value is too long (limit: {META_VALUE_MAX} characters)"
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(format!(
                "Couldn't load metadata pair ('{key}', '{value}'): {problem}"
            ));
        }
    }
    Ok(())
}

/// True when `name` can be a DNS label (letters, digits and dashes), as Consul checks.
pub(crate) fn is_dns_compatible(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn port(value: i64, path: &str) -> Result<u16, Problem> {
    u16::try_from(value).map_err(|_| invalid(path, format!("invalid port: {value}")))
}

/// Decodes and validates one normalized service with its checks. Also returns, for each
/// check, the path of its definition relative to the service (`checks[1]`, `check`), so that
/// file errors about a check can name its key.
pub(crate) fn decode_service(
    mut map: Map<String, Value>,
    mode: Mode,
    warnings: &mut Vec<String>,
) -> Result<(ServiceDefinition, Vec<String>), Problem> {
    let single = map.remove("check");
    let list = map.remove("checks");
    let raw: RawService = typed(map)?;

    let Some(name) = non_empty(raw.name) else {
        return Err(invalid("", "Missing service name"));
    };
    let id = non_empty(raw.id).unwrap_or_else(|| name.clone());
    if !is_dns_compatible(&name) {
        warnings.push(format!(
            "Service name {name:?} will not be discoverable via DNS due to invalid characters. \
             Valid characters include all alpha-numerics and dashes."
        ));
    }
    let tags = raw.tags.unwrap_or_default();
    for tag in &tags {
        if !is_dns_compatible(tag) {
            warnings.push(format!(
                "Service tag {tag:?} will not be discoverable via DNS due to invalid \
                 characters. Valid characters include all alpha-numerics and dashes."
            ));
        }
    }
    let meta = raw.meta.unwrap_or_default();
    validate_meta(&meta, "Service").map_err(|e| {
        Problem::consul(
            ProblemKind::Invalid,
            "meta",
            format!("invalid meta for service {name}: {e}"),
        )
    })?;
    let port = port(raw.port.unwrap_or(0), "port")?;
    let mut weights = Weights::default();
    if let Some(w) = raw.weights {
        let bad = |msg: &str| {
            Problem::consul(
                ProblemKind::Invalid,
                "weights",
                format!("Invalid weight definition for service {name}: {msg}"),
            )
        };
        if let Some(p) = w.passing {
            if p < 1 {
                return Err(bad("Passing must be greater than 0"));
            }
            weights.passing = u32::try_from(p).unwrap_or(u32::MAX);
        }
        if let Some(warn) = w.warning {
            if warn < 0 {
                return Err(bad("Warning must be greater or equal than 0"));
            }
            weights.warning = u32::try_from(warn).unwrap_or(u32::MAX);
        }
        if weights.passing > 65535 || weights.warning > 65535 {
            return Err(bad("DNS Weight must be between 0 and 65535"));
        }
    }
    let mut tagged_addresses = BTreeMap::new();
    for (tag, addr) in raw.tagged_addresses.unwrap_or_default() {
        let p = join(&join("tagged_addresses", &tag), "port");
        tagged_addresses.insert(
            tag,
            ServiceAddress {
                address: addr.address.unwrap_or_default(),
                port: port_of(addr.port, &p)?,
            },
        );
    }

    // Consul's order: a file's `checks` list then its single `check`; the API's `Check`
    // then its `Checks`. Empty check objects (some clients send `"Check": {}`) are skipped.
    let mut sources: Vec<(String, Map<String, Value>)> = Vec::new();
    let single: Vec<(String, Map<String, Value>)> = match single {
        Some(Value::Array(items)) => {
            let n = items.len();
            items
                .into_iter()
                .enumerate()
                .filter_map(|(i, v)| match v {
                    Value::Object(m) => Some((
                        if n == 1 {
                            "check".to_owned()
                        } else {
                            index("check", i)
                        },
                        m,
                    )),
                    _ => None,
                })
                .collect()
        }
        _ => Vec::new(),
    };
    let many: Vec<(String, Map<String, Value>)> = match list {
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| match v {
                Value::Object(m) => Some((index("checks", i), m)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    match mode {
        Mode::File => {
            sources.extend(many);
            sources.extend(single);
        }
        Mode::Api => {
            sources.extend(single);
            sources.extend(many);
        }
    }
    sources.retain(|(_, m)| !m.is_empty());

    let total = sources.len();
    // The catalog takes at most this many checks per registration; more could never sync.
    if total > muster_server::MAX_CHECKS {
        return Err(invalid(
            "checks",
            format!(
                "too many checks for service {name}: {total} (at most {})",
                muster_server::MAX_CHECKS
            ),
        ));
    }
    let mut checks = Vec::with_capacity(total);
    let mut paths = Vec::with_capacity(total);
    for (position, (path, check)) in sources.into_iter().enumerate() {
        let embedded = EmbeddedIn {
            service_id: &id,
            service_name: &name,
            position,
            total,
        };
        let def = decode_check(check, Some(embedded), warnings).map_err(|mut p| {
            if mode == Mode::Api && p.kind == ProblemKind::Invalid {
                // Consul's service registration words check problems this way.
                p.message = if p.path == "status" {
                    "Status for checks must 'passing', 'warning', 'critical'".to_owned()
                } else {
                    format!("Invalid check: {}", p.message)
                };
                p.consul_text = true;
            }
            p.path = join(&path, &p.path);
            p.path = p.path.trim_end_matches('.').to_owned();
            p
        })?;
        checks.push(def);
        paths.push(path);
    }

    Ok((
        ServiceDefinition {
            id,
            name,
            tags,
            address: raw.address.unwrap_or_default(),
            tagged_addresses,
            meta,
            port,
            weights,
            enable_tag_override: raw.enable_tag_override.unwrap_or(false),
            token: raw.token.unwrap_or_default(),
            checks,
        },
        paths,
    ))
}

fn port_of(value: Option<i64>, path: &str) -> Result<u16, Problem> {
    port(value.unwrap_or(0), path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn api_service_with_camel_case_fields() {
        let def = ServiceDefinition::from_api_json(&json!({
            "ID": "redis1", "Name": "redis", "Tags": ["primary"], "Address": "127.0.0.1",
            "Port": 8000, "Meta": {"redis_version": "4.0"}, "EnableTagOverride": true,
            "Weights": {"Passing": 10, "Warning": 1},
            "Check": {"DeregisterCriticalServiceAfter": "90m", "HTTP": "http://localhost:8000/health",
                      "Interval": "10s", "Timeout": "5s", "TLSSkipVerify": true}
        }))
        .unwrap();
        assert_eq!(def.id, "redis1");
        assert_eq!(def.port, 8000);
        assert!(def.enable_tag_override);
        assert_eq!(
            def.weights,
            Weights {
                passing: 10,
                warning: 1
            }
        );
        let check = &def.checks[0];
        assert_eq!(check.id, "service:redis1");
        assert_eq!(check.name, "Service 'redis' check");
        assert_eq!(check.service_id.as_deref(), Some("redis1"));
        assert_eq!(check.interval, Some(Duration::from_secs(10)));
        assert_eq!(check.timeout, Duration::from_secs(5));
        assert_eq!(
            check.deregister_critical_service_after,
            Some(Duration::from_secs(5400))
        );
        assert_eq!(check.initial_status, HealthStatus::Critical);
        match &check.kind {
            CheckKind::Http {
                method,
                tls_skip_verify,
                ..
            } => {
                assert_eq!(method, "GET");
                assert!(tls_skip_verify);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn api_snake_case_aliases_and_nanosecond_durations() {
        let def = ServiceDefinition::from_api_json(&json!({
            "name": "web", "enable_tag_override": true,
            "checks": [
                {"script_args": ["/bin/true"], "interval": 10_000_000_000u64},
                {"CheckID": "own", "ttl": "30s", "status": "passing"}
            ]
        }))
        .unwrap();
        assert_eq!(def.id, "web");
        assert!(def.enable_tag_override);
        assert_eq!(def.checks[0].id, "service:web:1");
        assert_eq!(
            def.checks[0].kind,
            CheckKind::Script {
                args: vec!["/bin/true".into()]
            }
        );
        assert_eq!(def.checks[0].timeout, DEFAULT_SCRIPT_TIMEOUT);
        assert_eq!(def.checks[1].id, "own");
        assert_eq!(def.checks[1].initial_status, HealthStatus::Passing);
        assert_eq!(def.checks[1].interval, None);
    }

    #[test]
    fn embedded_check_numbering_counts_every_check() {
        let def = ServiceDefinition::from_api_json(&json!({
            "Name": "db", "ID": "db-1",
            "Check": {"TCP": "localhost:3306", "Interval": "10s"},
            "Checks": [{"TTL": "5s"}, {"ID": "x", "TTL": "5s"}]
        }))
        .unwrap();
        let ids: Vec<&str> = def.checks.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["service:db-1:1", "service:db-1:2", "x"]);
        let err = ServiceDefinition::from_api_json(
            &json!({"Name": "db", "Check": {"TCP": "localhost:3306"}}),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), format!("Invalid check: {MUST_PROVIDE}"));
        let err = ServiceDefinition::from_api_json(
            &json!({"Name": "db", "Checks": [{"TTL": "5s", "Status": "up"}]}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Status for checks must 'passing', 'warning', 'critical'"
        );
        // An empty `Check` object is skipped rather than rejected.
        let def = ServiceDefinition::from_api_json(&json!({"Name": "db", "Check": {}})).unwrap();
        assert!(def.checks.is_empty());
    }

    #[test]
    fn api_check_register() {
        let def = CheckDefinition::from_api_json(&json!({
            "Name": "mem", "Notes": "n", "TTL": "15s", "ServiceID": "redis1"
        }))
        .unwrap();
        assert_eq!(def.id, "mem");
        assert_eq!(def.service_id.as_deref(), Some("redis1"));
        assert_eq!(def.timeout, Duration::ZERO);
        assert_eq!(
            CheckDefinition::from_api_json(&json!({"TTL": "15s"})).unwrap_err(),
            DecodeError::Invalid("Missing check name".into())
        );
    }

    #[test]
    fn api_errors_use_consul_texts() {
        let err = CheckDefinition::from_api_json(&json!({"Name": "x"})).unwrap_err();
        assert_eq!(err.to_string(), MUST_PROVIDE);
        let err =
            CheckDefinition::from_api_json(&json!({"Name": "x", "HTTP": "http://a"})).unwrap_err();
        assert_eq!(err.to_string(), MUST_PROVIDE);
        let err =
            CheckDefinition::from_api_json(&json!({"Name": "x", "TTL": "1s", "Status": "bogus"}))
                .unwrap_err();
        assert_eq!(err.to_string(), "Invalid check status: 'bogus'");
        let err =
            CheckDefinition::from_api_json(&json!({"Name": "x", "TTL": "1s", "Interval": "1s"}))
                .unwrap_err();
        assert_eq!(err.to_string(), "Interval and TTL cannot both be specified");
        let err = CheckDefinition::from_api_json(
            &json!({"Name": "x", "HTTP": "http://a", "TCP": "a:1", "Interval": "1s"}),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with(MUST_PROVIDE), "{err}");
        let err = ServiceDefinition::from_api_json(&json!({"Port": 1})).unwrap_err();
        assert_eq!(err.to_string(), "Missing service name");
        let err =
            ServiceDefinition::from_api_json(&json!({"Name": "a", "Port": "80"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Request decode failed: Port: expected an integer, got a string"
        );
        assert!(err.is_malformed());
        let err =
            CheckDefinition::from_api_json(&json!({"Name": "x", "Interval": "10 s", "TCP": "a:1"}))
                .unwrap_err();
        assert!(err.is_malformed(), "{err}");
        // A check type muster cannot run is accepted (and registered always critical).
        let def =
            CheckDefinition::from_api_json(&json!({"Name": "x", "GRPC": "a:1", "Interval": "1s"}))
                .unwrap();
        assert_eq!(def.kind.type_name(), "grpc");
        let err = CheckDefinition::from_api_json(
            &json!({"Name": "x", "Script": "/bin/true", "Interval": "1s"}),
        )
        .unwrap_err();
        assert!(err.is_unsupported());
        assert!(
            err.to_string()
                .starts_with("Script: the 'script' field was removed"),
            "{err}"
        );
    }

    #[test]
    fn minimums_are_raised_with_warnings() {
        let mut warnings = Vec::new();
        let map = json!({"name": "c", "tcp": "a:1", "interval": "100ms",
                         "deregister_critical_service_after": "10s"});
        let def = decode_check(map.as_object().cloned().unwrap(), None, &mut warnings).unwrap();
        assert_eq!(def.interval, Some(MIN_CHECK_INTERVAL));
        assert_eq!(
            def.deregister_critical_service_after,
            Some(MIN_DEREGISTER_AFTER)
        );
        assert_eq!(
            warnings,
            [
                "check 'c' has interval below minimum of 1s",
                "check 'c' has deregister interval below minimum of 1m0s"
            ]
        );
    }

    #[test]
    fn failures_before_warning_defaults_to_critical() {
        let mut w = Vec::new();
        let map =
            json!({"name": "c", "tcp": "a:1", "interval": "5s", "failures_before_critical": 3});
        let def = decode_check(map.as_object().cloned().unwrap(), None, &mut w).unwrap();
        assert_eq!(def.failures_before_warning, 3);
        assert_eq!(def.failures_before_critical, 3);
        assert_eq!(def.timeout, DEFAULT_CHECK_TIMEOUT);
    }

    #[test]
    fn service_validation() {
        let err = ServiceDefinition::from_api_json(
            &json!({"Name": "a", "Weights": {"Passing": 0, "Warning": 1}}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid weight definition for service a: Passing must be greater than 0"
        );
        let err =
            ServiceDefinition::from_api_json(&json!({"Name": "a", "Port": 70000})).unwrap_err();
        assert_eq!(err.to_string(), "port: invalid port: 70000");
        let err =
            ServiceDefinition::from_api_json(&json!({"Name": "a", "Meta": {"consul-x": "1"}}))
                .unwrap_err();
        assert!(
            err.to_string().contains("reserved for internal use"),
            "{err}"
        );
    }

    #[test]
    fn script_policy() {
        let def = ServiceDefinition::from_api_json(
            &json!({"Name": "a", "Check": {"Args": ["/bin/true"], "Interval": "10s"}}),
        )
        .unwrap();
        let local_only = ScriptCheckPolicy {
            enable_script_checks: false,
            enable_local_script_checks: true,
        };
        assert!(local_only.allows_files());
        assert_eq!(
            local_only.permit_api_service(&def),
            Err(DecodeError::ScriptsDisabled)
        );
        let remote = ScriptCheckPolicy {
            enable_script_checks: true,
            enable_local_script_checks: true,
        };
        assert_eq!(remote.permit_api_service(&def), Ok(()));
    }

    #[test]
    fn meta_limits() {
        let mut meta = BTreeMap::new();
        for i in 0..65 {
            meta.insert(format!("k{i}"), "v".to_owned());
        }
        assert_eq!(
            validate_meta(&meta, "Node").unwrap_err(),
            "Node metadata cannot contain more than 64 key/value pairs"
        );
        let long_key: BTreeMap<_, _> = [("k".repeat(129), "v".to_owned())].into();
        assert!(
            validate_meta(&long_key, "Node")
                .unwrap_err()
                .contains("Key is too long")
        );
        let long_value: BTreeMap<_, _> = [("k".to_owned(), "v".repeat(513))].into();
        assert!(
            validate_meta(&long_value, "Node")
                .unwrap_err()
                .contains("Value is too long")
        );
        let bad: BTreeMap<_, _> = [("a b".to_owned(), "v".to_owned())].into();
        assert!(
            validate_meta(&bad, "Node")
                .unwrap_err()
                .contains("invalid characters")
        );
    }

    #[test]
    fn definitions_serialize_with_go_durations() {
        let def = CheckDefinition::from_api_json(&json!({"Name": "t", "TTL": "90s"})).unwrap();
        let v = serde_json::to_value(&def).unwrap();
        assert_eq!(v["kind"], json!({"type": "ttl", "ttl": "1m30s"}));
        assert_eq!(v["timeout"], json!("0s"));
        let back: CheckDefinition = serde_json::from_value(v).unwrap();
        assert_eq!(back, def);
    }
}
