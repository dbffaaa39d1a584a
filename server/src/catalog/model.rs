//! Catalog records and their Consul JSON shape.
//!
//! These are the canonical `Node`, `NodeService` and `HealthCheck` types of the whole workspace.
//! Rust fields are snake_case; Consul's PascalCase names exist only in the serde attributes.
//! Invariants kept by the serde layer:
//! - maps and lists always serialize as `{}` / `[]`, never `null`, and a `null` on input is read
//!   as empty (Consul clients send both);
//! - `CreateIndex`/`ModifyIndex` are ignored in meaning on input: the state machine sets them from
//!   the Raft log index.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// A Raft log index, as Consul exposes it in `X-Consul-Index`, `CreateIndex` and `ModifyIndex`.
pub type Index = u64;

/// CheckID of the node health check the leader maintains from gossip membership.
pub const SERF_CHECK_ID: &str = "serfHealth";
/// Name of the [`SERF_CHECK_ID`] check.
pub const SERF_CHECK_NAME: &str = "Serf Health Status";
/// Output of a passing [`SERF_CHECK_ID`] check.
pub const SERF_CHECK_ALIVE_OUTPUT: &str = "Agent alive and reachable";
/// Output of a critical [`SERF_CHECK_ID`] check.
pub const SERF_CHECK_FAILED_OUTPUT: &str = "Agent not live or unreachable";
/// Service ID and name the leader registers for every server.
pub const CONSUL_SERVICE: &str = "consul";

/// The status of one health check. Ordered from best to worst, so the aggregate of several
/// checks is their maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// `passing`
    Passing,
    /// `warning`
    Warning,
    /// `critical`: also the status of a check that has not run yet.
    Critical,
}

impl HealthStatus {
    /// The Consul wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Passing => "passing",
            HealthStatus::Warning => "warning",
            HealthStatus::Critical => "critical",
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a status string that is not `passing`, `warning` or `critical`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Invalid check status: '{0}'")]
pub struct InvalidStatus(pub String);

impl FromStr for HealthStatus {
    type Err = InvalidStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "passing" => Ok(HealthStatus::Passing),
            "warning" => Ok(HealthStatus::Warning),
            "critical" => Ok(HealthStatus::Critical),
            other => Err(InvalidStatus(other.to_string())),
        }
    }
}

/// A catalog node: one machine (agent) in the datacenter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    /// Node UUID; may be empty for externally registered nodes.
    #[serde(rename = "ID", default, deserialize_with = "null_default")]
    pub id: String,
    /// Node name, unique per datacenter (case-insensitive).
    #[serde(rename = "Node", default, deserialize_with = "null_default")]
    pub name: String,
    /// The node's address.
    #[serde(default, deserialize_with = "null_default")]
    pub address: String,
    /// Datacenter the node belongs to.
    #[serde(default, deserialize_with = "null_default")]
    pub datacenter: String,
    /// Extra addresses by tag (`lan`, `wan`, `lan_ipv4`, ...).
    #[serde(default, deserialize_with = "null_default")]
    pub tagged_addresses: BTreeMap<String, String>,
    /// Node metadata.
    #[serde(default, deserialize_with = "null_default")]
    pub meta: BTreeMap<String, String>,
    /// Raft index that created the node.
    #[serde(default)]
    pub create_index: Index,
    /// Raft index that last changed the node.
    #[serde(default)]
    pub modify_index: Index,
}

/// An address with a port, the value type of a service's `TaggedAddresses`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceAddress {
    /// IP or host name.
    #[serde(default, deserialize_with = "null_default")]
    pub address: String,
    /// Port.
    #[serde(default)]
    pub port: u16,
}

/// DNS SRV weights of a service by health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    /// Weight while all checks pass (must be ≥ 1).
    #[serde(default)]
    pub passing: i32,
    /// Weight while a check warns (must be ≥ 0).
    #[serde(default)]
    pub warning: i32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            passing: 1,
            warning: 1,
        }
    }
}

/// One service instance registered on a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeService {
    /// Service ID, unique per node (case-insensitive); defaults to the service name.
    #[serde(rename = "ID", default, deserialize_with = "null_default")]
    pub id: String,
    /// Service name.
    #[serde(default, deserialize_with = "null_default")]
    pub service: String,
    /// Tags.
    #[serde(default, deserialize_with = "null_default")]
    pub tags: Vec<String>,
    /// Service address; empty means the node's address.
    #[serde(default, deserialize_with = "null_default")]
    pub address: String,
    /// Extra addresses by tag (`lan_ipv4`, `wan`, ...).
    #[serde(default, deserialize_with = "null_default")]
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    /// Service metadata.
    #[serde(default, deserialize_with = "null_default")]
    pub meta: BTreeMap<String, String>,
    /// Port.
    #[serde(default)]
    pub port: u16,
    /// DNS SRV weights.
    #[serde(default, deserialize_with = "null_default")]
    pub weights: Weights,
    /// Whether anti-entropy leaves catalog-side tag edits alone.
    #[serde(default)]
    pub enable_tag_override: bool,
    /// Raft index that created the service.
    #[serde(default)]
    pub create_index: Index,
    /// Raft index that last changed the service.
    #[serde(default)]
    pub modify_index: Index,
}

impl NodeService {
    /// Equal in everything but the Raft indexes (Consul's `IsSame`).
    pub fn same_content(&self, other: &NodeService) -> bool {
        self.id == other.id
            && self.service == other.service
            && self.tags == other.tags
            && self.address == other.address
            && self.tagged_addresses == other.tagged_addresses
            && self.meta == other.meta
            && self.port == other.port
            && self.weights == other.weights
            && self.enable_tag_override == other.enable_tag_override
    }
}

/// How a check is run, as registered. Every field is optional and omitted from JSON when empty
/// (as Consul does); fields this build does not know are kept verbatim in `extra`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckDefinition {
    /// HTTP check URL.
    #[serde(rename = "HTTP", default, skip_serializing_if = "String::is_empty")]
    pub http: String,
    /// TLS server name for HTTP/gRPC checks.
    #[serde(
        rename = "TLSServerName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub tls_server_name: String,
    /// Skip TLS verification.
    #[serde(rename = "TLSSkipVerify", default, skip_serializing_if = "is_false")]
    pub tls_skip_verify: bool,
    /// HTTP headers.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub header: BTreeMap<String, Vec<String>>,
    /// HTTP method.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
    /// HTTP body.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    /// TCP check address.
    #[serde(rename = "TCP", default, skip_serializing_if = "String::is_empty")]
    pub tcp: String,
    /// UDP check address.
    #[serde(rename = "UDP", default, skip_serializing_if = "String::is_empty")]
    pub udp: String,
    /// gRPC check target.
    #[serde(rename = "GRPC", default, skip_serializing_if = "String::is_empty")]
    pub grpc: String,
    /// gRPC over TLS.
    #[serde(rename = "GRPCUseTLS", default, skip_serializing_if = "is_false")]
    pub grpc_use_tls: bool,
    /// Run interval, a Go duration string (`"10s"`).
    #[serde(
        default,
        deserialize_with = "go_duration",
        skip_serializing_if = "String::is_empty"
    )]
    pub interval: String,
    /// Probe timeout, a Go duration string.
    #[serde(
        default,
        deserialize_with = "go_duration",
        skip_serializing_if = "String::is_empty"
    )]
    pub timeout: String,
    /// Time-to-live of a TTL check, a Go duration string.
    #[serde(
        rename = "TTL",
        default,
        deserialize_with = "go_duration",
        skip_serializing_if = "String::is_empty"
    )]
    pub ttl: String,
    /// Reap the service after it has been critical this long, a Go duration string.
    #[serde(
        default,
        deserialize_with = "go_duration",
        skip_serializing_if = "String::is_empty"
    )]
    pub deregister_critical_service_after: String,
    /// Script check arguments.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub script_args: Vec<String>,
    /// Fields of newer Consul versions, kept as sent.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl CheckDefinition {
    /// The check type implied by the definition (Consul's `CheckType.Type()`), or `""`.
    pub fn implied_type(&self) -> &'static str {
        if !self.ttl.is_empty() {
            "ttl"
        } else if !self.http.is_empty() {
            "http"
        } else if !self.tcp.is_empty() {
            "tcp"
        } else if !self.udp.is_empty() {
            "udp"
        } else if !self.grpc.is_empty() {
            "grpc"
        } else if !self.script_args.is_empty() {
            "script"
        } else {
            ""
        }
    }
}

/// One health check: node-level when `service_id` is empty, otherwise bound to that service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    /// Node the check runs on.
    #[serde(default, deserialize_with = "null_default")]
    pub node: String,
    /// Check ID, unique per node (case-insensitive); defaults to the name.
    #[serde(rename = "CheckID", default, deserialize_with = "null_default")]
    pub check_id: String,
    /// Human name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Current status; an empty or missing status means `critical`, as in Consul.
    #[serde(default = "critical", deserialize_with = "status_or_critical")]
    pub status: HealthStatus,
    /// Free-form notes.
    #[serde(default, deserialize_with = "null_default")]
    pub notes: String,
    /// Output of the last run.
    #[serde(default, deserialize_with = "null_default")]
    pub output: String,
    /// Service the check belongs to; empty for a node-level check.
    #[serde(rename = "ServiceID", default, deserialize_with = "null_default")]
    pub service_id: String,
    /// Name of that service, filled in by the catalog.
    #[serde(default, deserialize_with = "null_default")]
    pub service_name: String,
    /// Tags of that service, filled in by the catalog.
    #[serde(default, deserialize_with = "null_default")]
    pub service_tags: Vec<String>,
    /// Check type (`tcp`, `http`, `ttl`, ...).
    #[serde(rename = "Type", default, deserialize_with = "null_default")]
    pub check_type: String,
    /// Run interval as a Go duration string.
    #[serde(default, deserialize_with = "go_duration")]
    pub interval: String,
    /// Probe timeout as a Go duration string.
    #[serde(default, deserialize_with = "go_duration")]
    pub timeout: String,
    /// How the check runs.
    #[serde(default, deserialize_with = "null_default")]
    pub definition: CheckDefinition,
    /// Raft index that created the check.
    #[serde(default)]
    pub create_index: Index,
    /// Raft index that last changed the check.
    #[serde(default)]
    pub modify_index: Index,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            node: String::new(),
            check_id: String::new(),
            name: String::new(),
            status: HealthStatus::Critical,
            notes: String::new(),
            output: String::new(),
            service_id: String::new(),
            service_name: String::new(),
            service_tags: Vec::new(),
            check_type: String::new(),
            interval: String::new(),
            timeout: String::new(),
            definition: CheckDefinition::default(),
            create_index: 0,
            modify_index: 0,
        }
    }
}

impl HealthCheck {
    /// Equal in everything but the Raft indexes. The node name compares case-insensitively,
    /// as Consul's `IsSame` does.
    pub fn same_content(&self, other: &HealthCheck) -> bool {
        self.node.to_lowercase() == other.node.to_lowercase()
            && self.check_id == other.check_id
            && self.name == other.name
            && self.status == other.status
            && self.notes == other.notes
            && self.output == other.output
            && self.service_id == other.service_id
            && self.service_name == other.service_name
            && self.service_tags == other.service_tags
            && self.check_type == other.check_type
            && self.interval == other.interval
            && self.timeout == other.timeout
            && self.definition == other.definition
    }

    /// Whether this is a node-level check (no service).
    pub fn is_node_check(&self) -> bool {
        self.service_id.is_empty()
    }
}

fn critical() -> HealthStatus {
    HealthStatus::Critical
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Reads `null` as the type's default (Consul clients send `"Tags": null`).
fn null_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// A status string; empty or `null` is `critical` (Consul's default for a new check).
fn status_or_critical<'de, D>(de: D) -> Result<HealthStatus, D::Error>
where
    D: Deserializer<'de>,
{
    let raw = Option::<String>::deserialize(de)?.unwrap_or_default();
    if raw.is_empty() {
        return Ok(HealthStatus::Critical);
    }
    raw.parse().map_err(serde::de::Error::custom)
}

/// A duration given either as a Go duration string (kept as is) or as integer nanoseconds
/// (Consul's API accepts both); stored as the Go string form.
fn go_duration<'de, D>(de: D) -> Result<String, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Nanos(u64),
    }
    Ok(match Option::<Raw>::deserialize(de)? {
        None => String::new(),
        Some(Raw::Text(s)) => s,
        Some(Raw::Nanos(0)) => String::new(),
        Some(Raw::Nanos(n)) => format_go_duration(n),
    })
}

/// Formats nanoseconds the way Go's `time.Duration.String()` does (`1m30s`, `1.5s`, `250ms`).
pub fn format_go_duration(nanos: u64) -> String {
    const MICRO: u64 = 1_000;
    const MILLI: u64 = 1_000_000;
    const SECOND: u64 = 1_000_000_000;
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < MICRO {
        return format!("{nanos}ns");
    }
    if nanos < MILLI {
        return format!("{}µs", decimal(nanos, 3));
    }
    if nanos < SECOND {
        return format!("{}ms", decimal(nanos, 6));
    }
    let secs = nanos / SECOND;
    let frac = decimal(nanos % SECOND, 9);
    // `decimal` of the sub-second part renders as "0" or "0.25"; keep only the fraction.
    let frac = frac.trim_start_matches('0');
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h{m}m"));
    } else if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}{frac}s"));
    out
}

/// `value / 10^digits` as a decimal without trailing zeros (`1500, 3` → `"1.5"`).
fn decimal(value: u64, digits: u32) -> String {
    let scale = 10u64.pow(digits);
    let (int, frac) = (value / scale, value % scale);
    if frac == 0 {
        return int.to_string();
    }
    let frac = format!("{frac:0width$}", width = digits as usize);
    format!("{int}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_and_orders_worst_last() {
        for s in ["passing", "warning", "critical"] {
            let st: HealthStatus = s.parse().unwrap();
            assert_eq!(st.to_string(), s);
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{s}\""));
        }
        assert!(HealthStatus::Passing < HealthStatus::Warning);
        assert!(HealthStatus::Warning < HealthStatus::Critical);
        assert_eq!(
            "bogus".parse::<HealthStatus>().unwrap_err().to_string(),
            "Invalid check status: 'bogus'"
        );
    }

    #[test]
    fn node_json_shape_is_consuls() {
        let node = Node {
            id: "40e4a748-2192-161a-0510-9bf59fe950b5".into(),
            name: "db1".into(),
            address: "10.0.0.1".into(),
            datacenter: "dc1".into(),
            ..Node::default()
        };
        let v = serde_json::to_value(&node).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "ID": "40e4a748-2192-161a-0510-9bf59fe950b5",
                "Node": "db1",
                "Address": "10.0.0.1",
                "Datacenter": "dc1",
                "TaggedAddresses": {},
                "Meta": {},
                "CreateIndex": 0,
                "ModifyIndex": 0
            })
        );
    }

    #[test]
    fn service_json_shape_and_defaults() {
        let svc: NodeService =
            serde_json::from_value(serde_json::json!({"Service": "web", "Tags": null})).unwrap();
        assert_eq!(svc.weights, Weights::default());
        assert!(svc.tags.is_empty());
        let v = serde_json::to_value(&svc).unwrap();
        assert_eq!(v["Tags"], serde_json::json!([]));
        assert_eq!(v["Meta"], serde_json::json!({}));
        assert_eq!(v["TaggedAddresses"], serde_json::json!({}));
        assert_eq!(
            v["Weights"],
            serde_json::json!({"Passing": 1, "Warning": 1})
        );
        assert_eq!(v["EnableTagOverride"], serde_json::json!(false));
        let tagged: NodeService = serde_json::from_value(serde_json::json!({
            "Service": "web",
            "TaggedAddresses": {"lan_ipv4": {"Address": "10.0.0.1", "Port": 80}}
        }))
        .unwrap();
        assert_eq!(
            tagged.tagged_addresses["lan_ipv4"],
            ServiceAddress {
                address: "10.0.0.1".into(),
                port: 80
            }
        );
    }

    #[test]
    fn check_status_defaults_to_critical_and_rejects_garbage() {
        let c: HealthCheck = serde_json::from_value(serde_json::json!({"CheckID": "a"})).unwrap();
        assert_eq!(c.status, HealthStatus::Critical);
        let c: HealthCheck =
            serde_json::from_value(serde_json::json!({"CheckID": "a", "Status": ""})).unwrap();
        assert_eq!(c.status, HealthStatus::Critical);
        let err = serde_json::from_value::<HealthCheck>(
            serde_json::json!({"CheckID": "a", "Status": "up"}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("Invalid check status: 'up'"));
    }

    #[test]
    fn check_json_shape_omits_empty_definition_fields() {
        let mut c = HealthCheck {
            node: "db1".into(),
            check_id: "mysql".into(),
            name: "mysql port".into(),
            status: HealthStatus::Passing,
            ..HealthCheck::default()
        };
        c.definition.tcp = "localhost:3306".into();
        c.definition.interval = "10s".into();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v["Definition"],
            serde_json::json!({"TCP": "localhost:3306", "Interval": "10s"})
        );
        assert_eq!(v["ServiceTags"], serde_json::json!([]));
        assert_eq!(v["Status"], "passing");
        assert_eq!(v["Type"], "");
        let back: HealthCheck = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn definition_keeps_unknown_fields_and_reads_nanosecond_durations() {
        let d: CheckDefinition = serde_json::from_value(serde_json::json!({
            "TCP": "x:1",
            "Interval": 10_000_000_000u64,
            "Timeout": "1s",
            "H2PING": "h:2"
        }))
        .unwrap();
        assert_eq!(d.interval, "10s");
        assert_eq!(d.timeout, "1s");
        assert_eq!(d.extra["H2PING"], serde_json::json!("h:2"));
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["H2PING"], "h:2");
        assert_eq!(d.implied_type(), "tcp");
    }

    #[test]
    fn go_duration_formatting_matches_go() {
        assert_eq!(format_go_duration(0), "0s");
        assert_eq!(format_go_duration(999), "999ns");
        assert_eq!(format_go_duration(1_500), "1.5µs");
        assert_eq!(format_go_duration(250_000_000), "250ms");
        assert_eq!(format_go_duration(1_500_000_000), "1.5s");
        assert_eq!(format_go_duration(10_000_000_000), "10s");
        assert_eq!(format_go_duration(90_000_000_000), "1m30s");
        assert_eq!(format_go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(format_go_duration(3_723_250_000_000), "1h2m3.25s");
    }
}
