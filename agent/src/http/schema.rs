//! The shapes of the JSON objects the API reads and writes, field by field.
//!
//! Two uses: request bodies are decoded as Consul (Go's `encoding/json`) decodes them, with
//! field names matched case-insensitively (and snake_case accepted) by [`canonicalize`];
//! `?filter` selectors are validated and evaluated against the response rows' shapes (which
//! fields exist, which are maps with free keys, which are lists). Invariant: every shape
//! lists the Consul field names exactly as the responses spell them.

use serde_json::{Map, Value};

/// The shape of a JSON value.
#[derive(Debug)]
pub(crate) enum Shape {
    /// A string.
    Str,
    /// A number.
    Int,
    /// A boolean.
    Bool,
    /// Anything (no validation below this point).
    Any,
    /// A list of values of one shape.
    List(&'static Shape),
    /// A map with free-form keys.
    Map(&'static Shape),
    /// An object with known fields.
    Struct(&'static [Field]),
}

/// One field of a [`Shape::Struct`].
#[derive(Debug)]
pub(crate) struct Field(pub &'static str, pub Shape);

impl Shape {
    /// The field of a struct shape with exactly this name.
    pub(crate) fn field(&self, name: &str) -> Option<&Field> {
        match self {
            Shape::Struct(fields) => fields.iter().find(|f| f.0 == name),
            _ => None,
        }
    }
}

const STR_LIST: Shape = Shape::List(&Shape::Str);
const STR_MAP: Shape = Shape::Map(&Shape::Str);

/// A service's tagged address.
pub(crate) const SERVICE_ADDRESS: Shape =
    Shape::Struct(&[Field("Address", Shape::Str), Field("Port", Shape::Int)]);

/// SRV weights.
pub(crate) const WEIGHTS: Shape =
    Shape::Struct(&[Field("Passing", Shape::Int), Field("Warning", Shape::Int)]);

/// A catalog node.
pub(crate) const NODE: Shape = Shape::Struct(&[
    Field("ID", Shape::Str),
    Field("Node", Shape::Str),
    Field("Address", Shape::Str),
    Field("Datacenter", Shape::Str),
    Field("TaggedAddresses", STR_MAP),
    Field("Meta", STR_MAP),
    Field("CreateIndex", Shape::Int),
    Field("ModifyIndex", Shape::Int),
]);

/// A service instance on a node (catalog and health responses, registration bodies).
pub(crate) const NODE_SERVICE: Shape = Shape::Struct(&[
    Field("ID", Shape::Str),
    Field("Service", Shape::Str),
    Field("Tags", STR_LIST),
    Field("Address", Shape::Str),
    Field("TaggedAddresses", Shape::Map(&SERVICE_ADDRESS)),
    Field("Meta", STR_MAP),
    Field("Port", Shape::Int),
    Field("Weights", WEIGHTS),
    Field("EnableTagOverride", Shape::Bool),
    Field("CreateIndex", Shape::Int),
    Field("ModifyIndex", Shape::Int),
]);

/// A service as `/v1/agent/services` shows it.
pub(crate) const AGENT_SERVICE: Shape = Shape::Struct(&[
    Field("ID", Shape::Str),
    Field("Service", Shape::Str),
    Field("Tags", STR_LIST),
    Field("Meta", STR_MAP),
    Field("Port", Shape::Int),
    Field("Address", Shape::Str),
    Field("TaggedAddresses", Shape::Map(&SERVICE_ADDRESS)),
    Field("Weights", WEIGHTS),
    Field("EnableTagOverride", Shape::Bool),
    Field("Datacenter", Shape::Str),
]);

/// How a check runs (`Definition`).
pub(crate) const CHECK_DEFINITION: Shape = Shape::Struct(&[
    Field("HTTP", Shape::Str),
    Field("TLSServerName", Shape::Str),
    Field("TLSSkipVerify", Shape::Bool),
    Field("Header", Shape::Map(&STR_LIST)),
    Field("Method", Shape::Str),
    Field("Body", Shape::Str),
    Field("TCP", Shape::Str),
    Field("UDP", Shape::Str),
    Field("GRPC", Shape::Str),
    Field("GRPCUseTLS", Shape::Bool),
    Field("Interval", Shape::Str),
    Field("Timeout", Shape::Str),
    Field("TTL", Shape::Str),
    Field("DeregisterCriticalServiceAfter", Shape::Str),
    Field("ScriptArgs", STR_LIST),
]);

/// A health check.
pub(crate) const HEALTH_CHECK: Shape = Shape::Struct(&[
    Field("Node", Shape::Str),
    Field("CheckID", Shape::Str),
    Field("Name", Shape::Str),
    Field("Status", Shape::Str),
    Field("Notes", Shape::Str),
    Field("Output", Shape::Str),
    Field("ServiceID", Shape::Str),
    Field("ServiceName", Shape::Str),
    Field("ServiceTags", STR_LIST),
    Field("Type", Shape::Str),
    Field("Interval", Shape::Str),
    Field("Timeout", Shape::Str),
    Field("Definition", CHECK_DEFINITION),
    Field("CreateIndex", Shape::Int),
    Field("ModifyIndex", Shape::Int),
]);

/// A `/v1/catalog/service/:service` row.
pub(crate) const SERVICE_NODE: Shape = Shape::Struct(&[
    Field("ID", Shape::Str),
    Field("Node", Shape::Str),
    Field("Address", Shape::Str),
    Field("Datacenter", Shape::Str),
    Field("TaggedAddresses", STR_MAP),
    Field("NodeMeta", STR_MAP),
    Field("ServiceKind", Shape::Str),
    Field("ServiceID", Shape::Str),
    Field("ServiceName", Shape::Str),
    Field("ServiceTags", STR_LIST),
    Field("ServiceAddress", Shape::Str),
    Field("ServiceTaggedAddresses", Shape::Map(&SERVICE_ADDRESS)),
    Field("ServiceWeights", WEIGHTS),
    Field("ServiceMeta", STR_MAP),
    Field("ServicePort", Shape::Int),
    Field("ServiceEnableTagOverride", Shape::Bool),
    Field("ServiceProxy", Shape::Any),
    Field("ServiceConnect", Shape::Any),
    Field("CreateIndex", Shape::Int),
    Field("ModifyIndex", Shape::Int),
]);

/// A `/v1/health/service/:service` entry.
pub(crate) const CHECK_SERVICE_NODE: Shape = Shape::Struct(&[
    Field(
        "Node",
        Shape::Struct(&[
            Field("ID", Shape::Str),
            Field("Node", Shape::Str),
            Field("Address", Shape::Str),
            Field("Datacenter", Shape::Str),
            Field("TaggedAddresses", STR_MAP),
            Field("Meta", STR_MAP),
            Field("CreateIndex", Shape::Int),
            Field("ModifyIndex", Shape::Int),
        ]),
    ),
    Field("Service", NODE_SERVICE),
    Field("Checks", Shape::List(&HEALTH_CHECK)),
]);

/// The `/v1/catalog/register` body (Consul's `RegisterRequest`).
pub(crate) const REGISTRATION: Shape = Shape::Struct(&[
    Field("ID", Shape::Str),
    Field("Node", Shape::Str),
    Field("Address", Shape::Str),
    Field("Datacenter", Shape::Str),
    Field("TaggedAddresses", STR_MAP),
    Field("NodeMeta", STR_MAP),
    Field("Service", NODE_SERVICE),
    Field("Check", HEALTH_CHECK),
    Field("Checks", Shape::List(&HEALTH_CHECK)),
    Field("SkipNodeUpdate", Shape::Bool),
]);

/// The `/v1/catalog/deregister` body.
pub(crate) const DEREGISTRATION: Shape = Shape::Struct(&[
    Field("Node", Shape::Str),
    Field("Datacenter", Shape::Str),
    Field("ServiceID", Shape::Str),
    Field("CheckID", Shape::Str),
]);

/// The `/v1/agent/check/update/:id` body.
pub(crate) const CHECK_UPDATE: Shape =
    Shape::Struct(&[Field("Status", Shape::Str), Field("Output", Shape::Str)]);

/// Go's `encoding/json` matches names ignoring case; Consul also takes snake_case.
fn fold(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Renames the object keys of `value` to the canonical field names of `shape`, recursively
/// (map keys, which are data, are left alone). Unknown fields are kept as they are; the typed
/// decoding ignores them, as Go does.
pub(crate) fn canonicalize(value: Value, shape: &Shape) -> Value {
    match (shape, value) {
        (Shape::Struct(fields), Value::Object(map)) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                let folded = fold(&k);
                match fields.iter().find(|f| fold(f.0) == folded) {
                    Some(field) => {
                        out.insert(field.0.to_owned(), canonicalize(v, &field.1));
                    }
                    None => {
                        out.insert(k, v);
                    }
                }
            }
            Value::Object(out)
        }
        (Shape::Map(inner), Value::Object(map)) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, canonicalize(v, inner)))
                .collect(),
        ),
        (Shape::List(inner), Value::Array(items)) => {
            Value::Array(items.into_iter().map(|v| canonicalize(v, inner)).collect())
        }
        (_, v) => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registration_keys_match_case_insensitively_and_snake_case() {
        let body = json!({
            "node": "db1", "ADDRESS": "10.0.0.1", "node_meta": {"Rack": "a"},
            "service": {"service": "web", "tags": ["x"], "tagged_addresses": {"lan": {"address": "1.2.3.4", "port": 80}}},
            "check": {"checkid": "c", "definition": {"tcp": "a:1", "interval": "10s"}},
            "checks": [{"CHECKID": "d", "service_id": "web"}],
            "Unknown": 1
        });
        let v = canonicalize(body, &REGISTRATION);
        assert_eq!(v["Node"], "db1");
        assert_eq!(v["Address"], "10.0.0.1");
        assert_eq!(v["NodeMeta"], json!({"Rack": "a"}), "map keys are data");
        assert_eq!(v["Service"]["Service"], "web");
        assert_eq!(v["Service"]["TaggedAddresses"]["lan"]["Address"], "1.2.3.4");
        assert_eq!(v["Check"]["CheckID"], "c");
        assert_eq!(v["Check"]["Definition"]["TCP"], "a:1");
        assert_eq!(v["Checks"][0]["ServiceID"], "web");
        assert_eq!(v["Unknown"], 1);
        let r: muster_server::Registration = serde_json::from_value(v).unwrap();
        assert_eq!(r.node, "db1");
        assert_eq!(r.checks.len(), 2);
    }
}
