//! Consul's ACL rule language: the `Rules` text of a policy, in HCL or JSON, parsed into
//! exact and prefix rules per resource kind plus the scalar rules (`operator`, `keyring`,
//! `acl`, `mesh`, `peering`).
//!
//! ```hcl
//! service "web" { policy = "write" }
//! service_prefix "" { policy = "read" }
//! node_prefix "db-" { policy = "read" }
//! operator = "read"
//! ```
//!
//! is the same as `{"service": {"web": {"policy": "write"}}, "service_prefix": {"": {"policy":
//! "read"}}, "node_prefix": {"db-": {"policy": "read"}}, "operator": "read"}`.
//!
//! Invariants: parsing is pure and total (every input gives rules or an error that names the
//! rule); an unknown rule kind, an unknown access word, or an access a kind cannot have
//! (`list` outside `key`) is an error, as in Consul, so a typo never silently grants or
//! denies. Service rules' `intentions` are accepted (validated) and have no effect here.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::hcl::HclError;

/// One access level. The order is Consul's precedence when policies disagree on the same
/// rule: `deny` beats `write` beats `list` beats `read`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Read (for keys: get).
    Read,
    /// Key listing without values (`key` and `key_prefix` only).
    List,
    /// Read and write.
    Write,
    /// Nothing, whatever a prefix or the default allows.
    Deny,
}

impl Access {
    fn parse(word: &str, list_allowed: bool) -> Option<Access> {
        match word {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            "deny" => Some(Access::Deny),
            "list" if list_allowed => Some(Access::List),
            _ => None,
        }
    }

    /// Whether this level grants `need`.
    pub fn grants(self, need: Need) -> bool {
        match (self, need) {
            (Access::Deny, _) => false,
            (Access::Write, _) => true,
            (Access::List, Need::Read | Need::List) => true,
            (Access::Read, Need::Read) => true,
            _ => false,
        }
    }

    /// The level that wins when two policies give one rule different levels.
    pub fn merge(self, other: Access) -> Access {
        self.max(other)
    }
}

/// What an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// To see it.
    Read,
    /// To list keys.
    List,
    /// To change it.
    Write,
}

/// The resource kinds that have names (exact and `_prefix` rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `agent` / `agent_prefix`: an agent by node name.
    Agent,
    /// `event` / `event_prefix`.
    Event,
    /// `key` / `key_prefix`: KV keys.
    Key,
    /// `node` / `node_prefix`.
    Node,
    /// `query` / `query_prefix`: prepared queries.
    Query,
    /// `service` / `service_prefix`.
    Service,
    /// `session` / `session_prefix`.
    Session,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Agent,
        Kind::Event,
        Kind::Key,
        Kind::Node,
        Kind::Query,
        Kind::Service,
        Kind::Session,
    ];

    /// The rule word (`service`); the prefix rule adds `_prefix`.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Agent => "agent",
            Kind::Event => "event",
            Kind::Key => "key",
            Kind::Node => "node",
            Kind::Query => "query",
            Kind::Service => "service",
            Kind::Session => "session",
        }
    }
}

/// The resources with one rule each (`operator = "read"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scalar {
    /// `operator`: Raft, autopilot, force-leave.
    Operator,
    /// `keyring`: the gossip keyring.
    Keyring,
    /// `acl`: ACL tokens and policies.
    Acl,
    /// `mesh`.
    Mesh,
    /// `peering`.
    Peering,
}

impl Scalar {
    const ALL: [Scalar; 5] = [
        Scalar::Operator,
        Scalar::Keyring,
        Scalar::Acl,
        Scalar::Mesh,
        Scalar::Peering,
    ];

    /// The rule word.
    pub fn word(self) -> &'static str {
        match self {
            Scalar::Operator => "operator",
            Scalar::Keyring => "keyring",
            Scalar::Acl => "acl",
            Scalar::Mesh => "mesh",
            Scalar::Peering => "peering",
        }
    }
}

/// The exact and prefix rules of one kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Named {
    /// `service "web"`: this name only; wins over every prefix rule.
    pub exact: BTreeMap<String, Access>,
    /// `service_prefix "we"`: names starting with it; the longest matching prefix wins.
    pub prefix: BTreeMap<String, Access>,
}

impl Named {
    /// The rule that applies to `name`: the exact one, else the longest prefix.
    pub fn lookup(&self, name: &str) -> Option<Access> {
        if let Some(a) = self.exact.get(name) {
            return Some(*a);
        }
        if self.prefix.is_empty() {
            return None;
        }
        let ends = name
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(name.len()));
        let ends: Vec<usize> = ends.collect();
        ends.into_iter()
            .rev()
            .find_map(|end| self.prefix.get(&name[..end]).copied())
    }

    /// Some rule of this kind grants `need` on some name (`service_prefix "" deny` plus
    /// `service "web" read` still lets a token list services: the list is filtered).
    pub fn grants_any(&self, need: Need) -> bool {
        self.exact
            .values()
            .chain(self.prefix.values())
            .any(|a| a.grants(need))
    }

    fn merge(&mut self, other: &Named) {
        for (map, theirs) in [
            (&mut self.exact, &other.exact),
            (&mut self.prefix, &other.prefix),
        ] {
            for (name, access) in theirs {
                map.entry(name.clone())
                    .and_modify(|a| *a = a.merge(*access))
                    .or_insert(*access);
            }
        }
    }
}

/// A parsed policy, or the merge of several.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    named: BTreeMap<Kind, Named>,
    scalar: BTreeMap<Scalar, Access>,
}

/// Why rules were refused; the text names the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Failed to parse ACL rules: {0}")]
pub struct RulesError(pub String);

impl Rules {
    /// Parses a policy's rules, HCL or JSON (JSON when the text starts with `{` or `[`).
    pub fn parse(text: &str) -> Result<Rules, RulesError> {
        let trimmed = text.trim_start();
        if trimmed.is_empty() {
            return Ok(Rules::default());
        }
        let value = if trimmed.starts_with(['{', '[']) {
            serde_json::from_str::<Value>(text).map_err(|e| RulesError(e.to_string()))?
        } else {
            crate::config::hcl::to_json(text).map_err(|e| {
                RulesError(match e {
                    HclError::Syntax {
                        line,
                        column,
                        message,
                    } => format!("line {line}, column {column}: {message}"),
                    HclError::Content { key, message } => format!("{key}: {message}"),
                })
            })?
        };
        Self::from_value(&value)
    }

    fn from_value(value: &Value) -> Result<Rules, RulesError> {
        let Some(top) = value.as_object() else {
            return Err(RulesError("the rules must be an object".into()));
        };
        let mut rules = Rules::default();
        'keys: for (key, v) in top {
            for s in Scalar::ALL {
                if key == s.word() {
                    let word = v.as_str().unwrap_or_default();
                    let access = Access::parse(word, false)
                        .ok_or_else(|| RulesError(format!("Invalid {key} policy: {v}")))?;
                    rules.scalar.insert(s, access);
                    continue 'keys;
                }
            }
            for k in Kind::ALL {
                let prefix = match key.strip_prefix(k.word()) {
                    Some("") => false,
                    Some("_prefix") => true,
                    _ => continue,
                };
                let named = rules.named.entry(k).or_default();
                let map = if prefix {
                    &mut named.prefix
                } else {
                    &mut named.exact
                };
                // A block repeated under the same label arrives as a list of objects.
                let entries: Vec<&Value> = match v {
                    Value::Array(items) => items.iter().collect(),
                    other => vec![other],
                };
                for entry in entries {
                    let Some(by_name) = entry.as_object() else {
                        return Err(RulesError(format!("{key} rules must be labelled blocks")));
                    };
                    for (name, body) in by_name {
                        let access = rule_access(key, name, body, k == Kind::Key)?;
                        map.entry(name.clone())
                            .and_modify(|a| *a = a.merge(access))
                            .or_insert(access);
                    }
                }
                continue 'keys;
            }
            return Err(RulesError(format!("unknown rule {key:?}")));
        }
        Ok(rules)
    }

    /// Folds `other` in: where both have a rule, the one with precedence wins.
    pub fn merge(&mut self, other: &Rules) {
        for (kind, named) in &other.named {
            self.named.entry(*kind).or_default().merge(named);
        }
        for (scalar, access) in &other.scalar {
            self.scalar
                .entry(*scalar)
                .and_modify(|a| *a = a.merge(*access))
                .or_insert(*access);
        }
    }

    /// The rule for `name` of `kind`, if any.
    pub fn lookup(&self, kind: Kind, name: &str) -> Option<Access> {
        self.named.get(&kind).and_then(|n| n.lookup(name))
    }

    /// The rules of one kind.
    pub fn named(&self, kind: Kind) -> Option<&Named> {
        self.named.get(&kind)
    }

    /// The scalar rule, if any.
    pub fn scalar(&self, scalar: Scalar) -> Option<Access> {
        self.scalar.get(&scalar).copied()
    }
}

/// The access of one labelled block: `{"policy": "read"}` (plus `intentions` for services).
fn rule_access(
    key: &str,
    name: &str,
    body: &Value,
    list_allowed: bool,
) -> Result<Access, RulesError> {
    let Some(fields) = body.as_object() else {
        return Err(RulesError(format!(
            "{key} {name:?}: the rule must be a block"
        )));
    };
    let mut access = None;
    for (field, v) in fields {
        match field.as_str() {
            "policy" => {
                let word = v.as_str().unwrap_or_default();
                access = Some(Access::parse(word, list_allowed).ok_or_else(|| {
                    RulesError(format!("Invalid {key} policy for {name:?}: {v}"))
                })?);
            }
            "intentions" if key.starts_with("service") => {
                let word = v.as_str().unwrap_or_default();
                if Access::parse(word, false).is_none() {
                    return Err(RulesError(format!(
                        "Invalid {key} intentions policy for {name:?}: {v}"
                    )));
                }
            }
            other => {
                return Err(RulesError(format!(
                    "{key} {name:?}: unknown field {other:?}"
                )));
            }
        }
    }
    access.ok_or_else(|| RulesError(format!("{key} {name:?}: missing policy")))
}
