//! Normalization: turns one parsed source (a config file, the flags, or an HTTP request body)
//! into a value tree with canonical snake_case keys, checked against [`super::schema`].
//!
//! What happens here, in order:
//! - (files only) Consul's deprecated top-level keys are moved to their new places with
//!   Consul's warning (`start_join` is appended to `retry_join`, `acl_*` go under `acl`, the
//!   top-level `verify_*`/`ca_file` keys go under `tls`, `ui` becomes `ui_config.enabled`);
//! - every key is matched case-insensitively (service and check keys also with underscores
//!   ignored) and renamed to its canonical name; an alias never overrides the canonical key;
//! - every value is type-checked (durations are parsed here, so a bad duration is reported
//!   with its file and key), `null` counts as absent, HCL's one-element block lists become
//!   objects and single blocks where lists are expected become one-element lists;
//! - unknown keys are an error in files and ignored in API bodies (as Go's JSON decoder does);
//!   keys muster does not implement produce one warning each; rejected keys are errors.
//!
//! The output holds only canonical keys, so merging and typed decoding never see aliases.

use serde_json::{Map, Value};

use super::error::{Problem, ProblemKind};
use super::schema::{Field, Kind, Obj, Use};
use crate::duration::{duration_from_json, json_type_name};

/// Where the value being normalized comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A config file or the command line: unknown keys are errors, paths use canonical names.
    File,
    /// An HTTP API body: unknown keys are ignored, paths use the client's spelling.
    Api,
}

/// One normalization pass over one source.
pub(crate) struct Walker<'a> {
    mode: Mode,
    /// The source's name, used in warnings ("config key 'x' in <source> ...").
    source: &'a str,
    warnings: &'a mut Vec<String>,
    /// Inside a key that already produced a "not implemented" warning: stay quiet below it.
    quiet: bool,
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn type_error(path: &str, expected: &str, got: &Value) -> Problem {
    Problem::new(
        ProblemKind::Type,
        path,
        format!("expected {expected}, got {}", json_type_name(got)),
    )
}

/// True for values that Consul treats as "not set" on a rejected field: `""`, `false`, `[]`.
fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(_) => false,
    }
}

impl<'a> Walker<'a> {
    pub(crate) fn new(mode: Mode, source: &'a str, warnings: &'a mut Vec<String>) -> Self {
        Walker {
            mode,
            source,
            warnings,
            quiet: false,
        }
    }

    /// Normalizes an object against `obj`.
    pub(crate) fn object(
        &mut self,
        obj: &'static Obj,
        value: Value,
        path: &str,
    ) -> Result<Map<String, Value>, Problem> {
        let map = match value {
            Value::Object(m) => m,
            // An HCL block arrives as a one-element list, as in Consul's HCL decoder.
            Value::Array(mut items) if items.len() == 1 && items[0].is_object() => {
                match items.pop() {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                }
            }
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
                return Err(Problem::new(
                    ProblemKind::Type,
                    path,
                    "expected a single object, got several (a block repeated?)",
                ));
            }
            other => return Err(type_error(path, "an object", &other)),
        };

        // Resolve every input key to its field; the canonical spelling wins over aliases.
        let mut chosen: Vec<(&'static Field, bool, String, Value)> = Vec::new();
        for (key, val) in map {
            let Some((field, primary)) = obj.lookup(&key) else {
                match self.mode {
                    Mode::File => {
                        return Err(Problem::new(
                            ProblemKind::UnknownKey,
                            &join(path, &key),
                            "invalid config key",
                        ));
                    }
                    Mode::Api => continue,
                }
            };
            match chosen.iter_mut().find(|(f, ..)| f.name == field.name) {
                Some(slot) if primary && !slot.1 => *slot = (field, primary, key, val),
                Some(_) => {}
                None => chosen.push((field, primary, key, val)),
            }
        }

        let mut out = Map::new();
        for (field, _, key, val) in chosen {
            if val.is_null() {
                continue;
            }
            let shown = match self.mode {
                Mode::File => join(path, field.name),
                Mode::Api => join(path, &key),
            };
            let normalized = match field.use_ {
                Use::Rejected(why) => {
                    if is_empty_value(&val) {
                        continue;
                    }
                    return Err(Problem::new(ProblemKind::Unsupported, &shown, why));
                }
                Use::NotImplemented => {
                    // API clients often send every field with its zero value; only a value
                    // that asks for something deserves a warning there.
                    let asks = self.mode == Mode::File || !is_empty_value(&val);
                    if !self.quiet && asks {
                        self.warn_not_implemented(&shown);
                    }
                    let was_quiet = std::mem::replace(&mut self.quiet, true);
                    let result = self.value(&field.kind, val, &shown);
                    self.quiet = was_quiet;
                    result?
                }
                Use::UnsupportedCheck(check_type) => {
                    // An empty value does not make it that kind of check (API zero values).
                    let asks = !is_empty_value(&val);
                    let value = self.value(&field.kind, val, &shown)?;
                    if asks {
                        self.warn_unsupported_check(&shown, check_type);
                    }
                    value
                }
                Use::Implemented => self.value(&field.kind, val, &shown)?,
            };
            if let Some(v) = normalized {
                out.insert(field.name.to_owned(), v);
            }
        }
        Ok(out)
    }

    fn warn_not_implemented(&mut self, key: &str) {
        let text = match self.mode {
            Mode::File => format!(
                "config key '{key}' in {} is accepted for compatibility but not implemented; ignored",
                self.source
            ),
            Mode::Api => {
                format!("field '{key}' is accepted for compatibility but not implemented; ignored")
            }
        };
        self.warnings.push(text);
    }

    fn warn_unsupported_check(&mut self, key: &str, check_type: &str) {
        let what = format!(
            "muster does not support {check_type} checks yet; the check is registered and \
             always critical"
        );
        let text = match self.mode {
            Mode::File => format!("config key '{key}' in {}: {what}", self.source),
            Mode::Api => format!("field '{key}': {what}"),
        };
        self.warnings.push(text);
    }

    /// Normalizes one value of the given kind; `None` means "absent" (a JSON null).
    pub(crate) fn value(
        &mut self,
        kind: &'static Kind,
        value: Value,
        path: &str,
    ) -> Result<Option<Value>, Problem> {
        if value.is_null() {
            return Ok(None);
        }
        let v = match kind {
            Kind::Str => match value {
                Value::String(_) => value,
                other => return Err(type_error(path, "a string", &other)),
            },
            Kind::Bool => match value {
                Value::Bool(_) => value,
                other => return Err(type_error(path, "a boolean", &other)),
            },
            Kind::Int => integer(value, path)?,
            Kind::Float => match value {
                Value::Number(_) => value,
                other => return Err(type_error(path, "a number", &other)),
            },
            Kind::Dur => {
                if let Err(e) = duration_from_json(&value) {
                    let text = match &value {
                        Value::String(s) => format!("invalid duration {s:?}: {e}"),
                        _ => e,
                    };
                    return Err(Problem::new(ProblemKind::Type, path, text));
                }
                value
            }
            Kind::List(inner) => {
                let items = match value {
                    Value::Array(items) => items,
                    // A single HCL block where Consul expects a list of blocks.
                    Value::Object(o) if matches!(inner, Kind::Obj(_) | Kind::Any) => {
                        vec![Value::Object(o)]
                    }
                    other => return Err(type_error(path, "a list", &other)),
                };
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    let p = index(path, i);
                    match self.value(inner, item, &p)? {
                        Some(v) => out.push(v),
                        None => return Err(Problem::new(ProblemKind::Type, &p, "null in a list")),
                    }
                }
                Value::Array(out)
            }
            Kind::Map(inner) => {
                let map = match value {
                    Value::Object(m) => m,
                    // Repeated labelled HCL blocks (`sink "a" {}` `sink "b" {}`) merge into one map.
                    Value::Array(items) if items.iter().all(Value::is_object) => {
                        let mut merged = Map::new();
                        for item in items {
                            if let Value::Object(m) = item {
                                merged.extend(m);
                            }
                        }
                        merged
                    }
                    other => return Err(type_error(path, "an object", &other)),
                };
                let mut out = Map::new();
                for (k, v) in map {
                    let p = join(path, &k);
                    if let Some(v) = self.value(inner, v, &p)? {
                        out.insert(k, v);
                    }
                }
                Value::Object(out)
            }
            Kind::Obj(obj) => Value::Object(self.object(obj, value, path)?),
            Kind::OneOrMany(obj) => match value {
                Value::Array(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (i, item) in items.into_iter().enumerate() {
                        out.push(Value::Object(self.object(obj, item, &index(path, i))?));
                    }
                    Value::Array(out)
                }
                other => Value::Array(vec![Value::Object(self.object(obj, other, path)?)]),
            },
            Kind::HeaderValues => match value {
                Value::String(s) => Value::Array(vec![Value::String(s)]),
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if !item.is_string() {
                            return Err(type_error(&index(path, i), "a string", item));
                        }
                    }
                    Value::Array(items)
                }
                other => return Err(type_error(path, "a string or a list of strings", &other)),
            },
            Kind::Any => value,
        };
        Ok(Some(v))
    }
}

/// Accepts integers, and floats without a fraction (HCL and some JSON writers produce `3.0`).
fn integer(value: Value, path: &str) -> Result<Value, Problem> {
    match &value {
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(value),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Value::from(f as i64)),
            _ => Err(Problem::new(
                ProblemKind::Type,
                path,
                format!("expected an integer, got {n}"),
            )),
        },
        other => Err(type_error(path, "an integer", other)),
    }
}

/// How a deprecated top-level key is carried over.
enum Carry {
    /// To this dotted path, unless the file also sets the new key.
    Move(&'static str),
    /// Appended to this list.
    Append(&'static str),
    /// Dropped with this warning.
    Drop(&'static str),
}

/// Consul's `DeprecatedConfig` and the deprecated UI keys, with where each one went.
const DEPRECATED: &[(&str, Carry)] = &[
    (
        "acl_agent_master_token",
        Carry::Move("acl.tokens.agent_recovery"),
    ),
    ("acl_agent_token", Carry::Move("acl.tokens.agent")),
    ("acl_token", Carry::Move("acl.tokens.default")),
    (
        "acl_enable_key_list_policy",
        Carry::Move("acl.enable_key_list_policy"),
    ),
    (
        "acl_master_token",
        Carry::Move("acl.tokens.initial_management"),
    ),
    (
        "acl_replication_token",
        Carry::Move("acl.tokens.replication"),
    ),
    (
        "enable_acl_replication",
        Carry::Move("acl.enable_token_replication"),
    ),
    ("acl_datacenter", Carry::Move("primary_datacenter")),
    ("acl_default_policy", Carry::Move("acl.default_policy")),
    ("acl_down_policy", Carry::Move("acl.down_policy")),
    ("acl_ttl", Carry::Move("acl.token_ttl")),
    ("ca_file", Carry::Move("tls.defaults.ca_file")),
    ("ca_path", Carry::Move("tls.defaults.ca_path")),
    ("cert_file", Carry::Move("tls.defaults.cert_file")),
    ("key_file", Carry::Move("tls.defaults.key_file")),
    (
        "tls_cipher_suites",
        Carry::Move("tls.defaults.tls_cipher_suites"),
    ),
    (
        "tls_min_version",
        Carry::Move("tls.defaults.tls_min_version"),
    ),
    (
        "verify_incoming",
        Carry::Move("tls.defaults.verify_incoming"),
    ),
    (
        "verify_incoming_https",
        Carry::Move("tls.https.verify_incoming"),
    ),
    (
        "verify_incoming_rpc",
        Carry::Move("tls.internal_rpc.verify_incoming"),
    ),
    (
        "verify_outgoing",
        Carry::Move("tls.defaults.verify_outgoing"),
    ),
    (
        "verify_server_hostname",
        Carry::Move("tls.internal_rpc.verify_server_hostname"),
    ),
    (
        "tls_prefer_server_cipher_suites",
        Carry::Drop(
            "The 'tls_prefer_server_cipher_suites' field is deprecated and will be ignored.",
        ),
    ),
    ("start_join", Carry::Append("retry_join")),
    ("start_join_wan", Carry::Append("retry_join_wan")),
    ("raft_boltdb", Carry::Move("raft_logstore.boltdb")),
    ("ui", Carry::Move("ui_config.enabled")),
    ("ui_dir", Carry::Move("ui_config.dir")),
    ("ui_content_path", Carry::Move("ui_config.content_path")),
    (
        "acl_enforce_version_8",
        Carry::Drop("config key \"acl_enforce_version_8\" is deprecated and should be removed"),
    ),
];

fn deprecation_warning(source: &str, old: &str, new: &str) -> String {
    format!("{source}: The '{old}' field is deprecated. Use the '{new}' field instead.")
}

/// Removes `key` from `map`, matching case-insensitively.
fn take_key(map: &mut Map<String, Value>, key: &str) -> Option<Value> {
    let found = map.keys().find(|k| k.eq_ignore_ascii_case(key))?.clone();
    map.remove(&found)
}

/// Finds (or creates) the object at `key` inside `map`, looking through HCL's one-element
/// block lists. Returns `None` when something else already sits there.
fn object_at<'m>(map: &'m mut Map<String, Value>, key: &str) -> Option<&'m mut Map<String, Value>> {
    let existing = map.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned();
    let slot = match existing {
        Some(k) => map.get_mut(&k)?,
        None => map
            .entry(key.to_owned())
            .or_insert_with(|| Value::Object(Map::new())),
    };
    match slot {
        Value::Object(m) => Some(m),
        Value::Array(items) if items.len() == 1 => items[0].as_object_mut(),
        _ => None,
    }
}

/// Applies Consul's deprecated-key translations to one file's top level, in place.
pub(crate) fn translate_deprecated(
    map: &mut Map<String, Value>,
    source: &str,
    warnings: &mut Vec<String>,
) {
    for (old, carry) in DEPRECATED {
        let Some(value) = take_key(map, old) else {
            continue;
        };
        match carry {
            Carry::Drop(text) => warnings.push(format!("{source}: {text}")),
            Carry::Append(new) => {
                warnings.push(deprecation_warning(source, old, new));
                let items = match value {
                    Value::Array(items) => items,
                    Value::Null => Vec::new(),
                    other => vec![other],
                };
                match map
                    .keys()
                    .find(|k| k.eq_ignore_ascii_case(new))
                    .cloned()
                    .and_then(|k| map.get_mut(&k))
                {
                    Some(Value::Array(existing)) => existing.extend(items),
                    Some(_) => {}
                    None => {
                        map.insert((*new).to_owned(), Value::Array(items));
                    }
                }
            }
            Carry::Move(new) => {
                warnings.push(deprecation_warning(source, old, new));
                let mut parts: Vec<&str> = new.split('.').collect();
                let Some(last) = parts.pop() else { continue };
                let mut target = Some(&mut *map);
                for part in parts {
                    target = target.and_then(|m| object_at(m, part));
                }
                if let Some(target) = target
                    && !target.keys().any(|k| k.eq_ignore_ascii_case(last))
                {
                    target.insert(last.to_owned(), value);
                }
            }
        }
    }
    // Two renames inside acl.tokens.
    let Some(acl) = map
        .keys()
        .find(|k| k.eq_ignore_ascii_case("acl"))
        .cloned()
        .and_then(|k| map.get_mut(&k))
    else {
        return;
    };
    let acl = match acl {
        Value::Object(m) => m,
        Value::Array(items) if items.len() == 1 => match items[0].as_object_mut() {
            Some(m) => m,
            None => return,
        },
        _ => return,
    };
    let Some(tokens) = acl
        .keys()
        .find(|k| k.eq_ignore_ascii_case("tokens"))
        .cloned()
        .and_then(|k| acl.get_mut(&k))
    else {
        return;
    };
    let tokens = match tokens {
        Value::Object(m) => m,
        Value::Array(items) if items.len() == 1 => match items[0].as_object_mut() {
            Some(m) => m,
            None => return,
        },
        _ => return,
    };
    for (old, new) in [
        ("master", "initial_management"),
        ("agent_master", "agent_recovery"),
    ] {
        if let Some(v) = take_key(tokens, old) {
            warnings.push(deprecation_warning(
                source,
                &format!("acl.tokens.{old}"),
                &format!("acl.tokens.{new}"),
            ));
            if !tokens.keys().any(|k| k.eq_ignore_ascii_case(new)) {
                tokens.insert(new.to_owned(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::schema::{CHECK, CONFIG, SERVICE};
    use super::*;
    use serde_json::json;

    fn file(value: Value) -> (Result<Map<String, Value>, Problem>, Vec<String>) {
        let mut warnings = Vec::new();
        let mut map = value.as_object().cloned().unwrap();
        translate_deprecated(&mut map, "f.json", &mut warnings);
        let out = Walker::new(Mode::File, "f.json", &mut warnings).object(
            &CONFIG,
            Value::Object(map),
            "",
        );
        (out, warnings)
    }

    #[test]
    fn keys_are_case_insensitive_and_canonicalized() {
        let (out, _) = file(json!({"Node_Name": "a", "DNS_Config": {"Allow_Stale": false}}));
        assert_eq!(
            Value::Object(out.unwrap()),
            json!({"node_name": "a", "dns_config": {"allow_stale": false}})
        );
    }

    #[test]
    fn unknown_key_reports_its_path() {
        let (out, _) = file(json!({"dns_config": {"udp_answer_limt": 3}}));
        let p = out.unwrap_err();
        assert_eq!(p.kind, ProblemKind::UnknownKey);
        assert_eq!(p.path, "dns_config.udp_answer_limt");
        let (out, _) = file(json!({"services": [{"name": "a"}, {"name": "b", "chek": {}}]}));
        assert_eq!(out.unwrap_err().path, "services[1].chek");
    }

    #[test]
    fn not_implemented_keys_warn_once_with_file_and_key() {
        let (out, warnings) = file(
            json!({"telemetry": {"disable_hostname": true}, "acl": {"enabled": false, "role_ttl": "5s", "tokens": {"agent": "x"}}}),
        );
        assert!(out.is_ok());
        assert_eq!(
            warnings,
            vec![
                "config key 'acl.role_ttl' in f.json is accepted for compatibility but not implemented; ignored",
                "config key 'telemetry' in f.json is accepted for compatibility but not implemented; ignored",
            ]
        );
        // Typos under an ignored key are still caught.
        let (out, _) = file(json!({"telemetry": {"disable_hostnam": true}}));
        assert_eq!(out.unwrap_err().path, "telemetry.disable_hostnam");
    }

    #[test]
    fn types_are_checked() {
        let (out, _) = file(json!({"ports": {"dns": "8600"}}));
        let p = out.unwrap_err();
        assert_eq!((p.kind, p.path.as_str()), (ProblemKind::Type, "ports.dns"));
        assert_eq!(p.message, "expected an integer, got a string");
        let (out, _) = file(json!({"retry_interval": "30 s"}));
        assert_eq!(out.unwrap_err().path, "retry_interval");
        let (out, _) = file(json!({"server": "true"}));
        assert_eq!(out.unwrap_err().message, "expected a boolean, got a string");
        let (out, _) = file(json!({"ports": {"dns": 8600.0}}));
        assert_eq!(out.unwrap()["ports"]["dns"], json!(8600));
    }

    #[test]
    fn deprecated_keys_move_with_consul_warning() {
        let (out, warnings) =
            file(json!({"start_join": ["a", "b"], "retry_join": ["c"], "ui": true}));
        let out = out.unwrap();
        assert_eq!(out["retry_join"], json!(["c", "a", "b"]));
        assert_eq!(out["ui_config"], json!({"enabled": true}));
        assert!(warnings.contains(
            &"f.json: The 'start_join' field is deprecated. Use the 'retry_join' field instead."
                .to_owned()
        ));
        assert!(
            warnings.contains(
                &"f.json: The 'ui' field is deprecated. Use the 'ui_config.enabled' field instead."
                    .to_owned()
            )
        );
        let (out, _) = file(
            json!({"acl_datacenter": "dc9", "verify_outgoing": true, "acl": {"tokens": {"master": "m"}}}),
        );
        let out = out.unwrap();
        assert_eq!(out["primary_datacenter"], json!("dc9"));
        assert_eq!(out["tls"]["defaults"]["verify_outgoing"], json!(true));
        assert_eq!(out["acl"]["tokens"]["initial_management"], json!("m"));
        // The new key wins when both are given, as in Consul.
        let (out, _) = file(json!({"acl_ttl": "1s", "acl": {"token_ttl": "2s"}}));
        assert_eq!(out.unwrap()["acl"]["token_ttl"], json!("2s"));
    }

    #[test]
    fn service_and_check_keys_accept_camel_case_aliases() {
        let mut w = Vec::new();
        let mut walker = Walker::new(Mode::File, "f", &mut w);
        let out = walker
            .object(
                &CHECK,
                json!({"CheckID": "c", "Name": "n", "ServiceID": "s", "ScriptArgs": ["x"],
                       "DeregisterCriticalServiceAfter": "90m", "TLSSkipVerify": true,
                       "Interval": "10s"}),
                "",
            )
            .unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"id": "c", "name": "n", "service_id": "s", "args": ["x"],
                   "deregister_critical_service_after": "90m", "tls_skip_verify": true,
                   "interval": "10s"})
        );
        // The canonical key wins over an alias.
        let out = walker
            .object(&CHECK, json!({"args": ["a"], "script_args": ["b"]}), "")
            .unwrap();
        assert_eq!(out["args"], json!(["a"]));
        let out = walker
            .object(&SERVICE, json!({"EnableTagOverride": true, "TaggedAddresses": {"lan": {"Address": "1.2.3.4", "Port": 1}}}), "")
            .unwrap();
        assert_eq!(
            out["tagged_addresses"]["lan"],
            json!({"address": "1.2.3.4", "port": 1})
        );
    }

    #[test]
    fn api_mode_ignores_unknown_fields_and_names_client_fields() {
        let mut w = Vec::new();
        let mut walker = Walker::new(Mode::Api, "api", &mut w);
        let out = walker
            .object(&SERVICE, json!({"Name": "a", "Bogus": 1}), "")
            .unwrap();
        assert_eq!(Value::Object(out), json!({"name": "a"}));
        let p = walker
            .object(&SERVICE, json!({"Name": "a", "Port": "80"}), "")
            .unwrap_err();
        assert_eq!(p.path, "Port");
    }

    #[test]
    fn unsupported_check_types_warn_unless_empty_and_script_is_rejected() {
        let mut w = Vec::new();
        let mut walker = Walker::new(Mode::File, "f", &mut w);
        let out = walker
            .object(
                &CHECK,
                json!({"grpc": "x:1", "grpc_use_tls": true}),
                "checks[0]",
            )
            .unwrap();
        assert_eq!(out["grpc"], json!("x:1"));
        assert!(walker.object(&CHECK, json!({"GRPC": ""}), "").is_ok());
        let p = walker
            .object(&CHECK, json!({"script": "x"}), "")
            .unwrap_err();
        assert_eq!(p.kind, ProblemKind::Unsupported);
        assert!(p.message.contains("use 'args'"));
        let p = walker
            .object(&CHECK, json!({"udp": 5}), "check")
            .unwrap_err();
        assert_eq!(p.path, "check.udp", "still type-checked");
        assert_eq!(
            w,
            [
                "config key 'checks[0].grpc' in f: muster does not support grpc checks yet; the \
                 check is registered and always critical",
                "config key 'checks[0].grpc_use_tls' in f is accepted for compatibility but not \
                 implemented; ignored",
            ]
        );
        let mut w = Vec::new();
        Walker::new(Mode::Api, "request", &mut w)
            .object(&CHECK, json!({"AliasService": "web", "H2PING": ""}), "")
            .unwrap();
        assert_eq!(
            w,
            [
                "field 'AliasService': muster does not support alias checks yet; the check is \
              registered and always critical"
            ]
        );
    }

    #[test]
    fn hcl_shapes_are_accepted() {
        // One block → object, repeated blocks → list, a single block where a list is expected.
        let (out, _) = file(json!({"ports": [{"dns": 53}], "services": {"name": "a"},
                                    "service": [{"name": "b"}, {"name": "c"}]}));
        let out = out.unwrap();
        assert_eq!(out["ports"], json!({"dns": 53}));
        assert_eq!(out["services"], json!([{"name": "a"}]));
        assert_eq!(out["service"], json!([{"name": "b"}, {"name": "c"}]));
    }

    #[test]
    fn header_values_become_lists() {
        let mut w = Vec::new();
        let mut walker = Walker::new(Mode::Api, "api", &mut w);
        let out = walker
            .object(
                &CHECK,
                json!({"Header": {"X-A": "1", "X-B": ["2", "3"]}}),
                "",
            )
            .unwrap();
        assert_eq!(out["header"], json!({"X-A": ["1"], "X-B": ["2", "3"]}));
    }
}
