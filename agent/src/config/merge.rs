//! Merging normalized sources, following Consul's `merge.go`: structs merge field by field,
//! a later scalar wins, lists are appended, and a later non-empty user-keyed map (such as
//! `node_meta` or `dns_config.service_ttl`) replaces the earlier one as a whole.
//!
//! Invariant: [`Origins`] remembers, for every merged value, which source set it last, so that
//! validation after the merge can blame the right file. Lookups walk up the key path, so a
//! value inside an object that one file set as a whole is blamed on that file.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::normalize::{index, join};
use super::schema::{Kind, Obj};

/// Which source set each merged value.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origins {
    by_path: BTreeMap<String, Arc<str>>,
}

impl Origins {
    /// Records `source` for `path`, forgetting what was recorded below it.
    fn set(&mut self, path: &str, source: &Arc<str>) {
        self.clear_under(path);
        self.by_path.insert(path.to_owned(), Arc::clone(source));
    }

    fn clear_under(&mut self, path: &str) {
        let below: Vec<String> = self
            .by_path
            .range(path.to_owned()..)
            .take_while(|(k, _)| k.starts_with(path))
            .filter(|(k, _)| {
                k.len() == path.len() || matches!(k.as_bytes()[path.len()], b'.' | b'[')
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in below {
            self.by_path.remove(&k);
        }
    }

    /// The source that set `path`, or the nearest enclosing value.
    pub(crate) fn get(&self, path: &str) -> Option<&str> {
        let mut p = path;
        loop {
            if let Some(source) = self.by_path.get(p) {
                return Some(source);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

/// Merges the normalized source `src` into `dst`.
pub(crate) fn merge_object(
    dst: &mut Map<String, Value>,
    src: Map<String, Value>,
    obj: &'static Obj,
    path: &str,
    source: &Arc<str>,
    origins: &mut Origins,
) {
    for (key, value) in src {
        let child = join(path, &key);
        let kind = obj.field(&key).map(|f| &f.kind);
        match (kind, value) {
            (Some(Kind::Obj(inner)), Value::Object(value)) => match dst.get_mut(&key) {
                Some(Value::Object(existing)) => {
                    merge_object(existing, value, inner, &child, source, origins);
                }
                _ => {
                    origins.set(&child, source);
                    dst.insert(key, Value::Object(value));
                }
            },
            (Some(Kind::List(_) | Kind::OneOrMany(_)), Value::Array(items)) => {
                let slot = dst.entry(key).or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(existing) = slot {
                    for item in items {
                        origins.set(&index(&child, existing.len()), source);
                        existing.push(item);
                    }
                }
            }
            (Some(Kind::Map(_)), Value::Object(value)) => {
                // Consul: a later non-empty map replaces the earlier one, keys are not merged.
                if !value.is_empty() || !dst.contains_key(&key) {
                    origins.set(&child, source);
                    dst.insert(key, Value::Object(value));
                }
            }
            (_, value) => {
                origins.set(&child, source);
                dst.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::schema::CONFIG;
    use super::*;
    use serde_json::json;

    fn merged(sources: &[(&str, Value)]) -> (Value, Origins) {
        let mut dst = Map::new();
        let mut origins = Origins::default();
        for (name, v) in sources {
            let name: Arc<str> = Arc::from(*name);
            merge_object(
                &mut dst,
                v.as_object().cloned().unwrap(),
                &CONFIG,
                "",
                &name,
                &mut origins,
            );
        }
        (Value::Object(dst), origins)
    }

    #[test]
    fn scalars_later_wins() {
        let (v, o) = merged(&[
            ("a", json!({"datacenter": "x", "server": false})),
            ("b", json!({"datacenter": "y"})),
        ]);
        assert_eq!(v, json!({"datacenter": "y", "server": false}));
        assert_eq!(o.get("datacenter"), Some("b"));
        assert_eq!(o.get("server"), Some("a"));
    }

    #[test]
    fn structs_merge_field_by_field() {
        let (v, o) = merged(&[
            ("a", json!({"ports": {"dns": 1, "http": 2}})),
            ("b", json!({"ports": {"dns": 3}})),
        ]);
        assert_eq!(v, json!({"ports": {"dns": 3, "http": 2}}));
        assert_eq!(o.get("ports.dns"), Some("b"));
        assert_eq!(o.get("ports.http"), Some("a"));
    }

    #[test]
    fn lists_append_and_remember_each_element() {
        let (v, o) = merged(&[
            (
                "a",
                json!({"retry_join": ["1"], "services": [{"name": "x"}]}),
            ),
            (
                "b",
                json!({"retry_join": ["2", "3"], "services": [{"name": "y"}]}),
            ),
        ]);
        assert_eq!(v["retry_join"], json!(["1", "2", "3"]));
        assert_eq!(o.get("retry_join[2]"), Some("b"));
        assert_eq!(o.get("services[0].port"), Some("a"));
        assert_eq!(o.get("services[1].name"), Some("b"));
    }

    #[test]
    fn maps_are_replaced_not_merged() {
        let (v, o) = merged(&[
            ("a", json!({"node_meta": {"a": "1", "b": "2"}})),
            ("b", json!({"node_meta": {"c": "3"}})),
            ("c", json!({"node_meta": {}})),
        ]);
        assert_eq!(v["node_meta"], json!({"c": "3"}));
        assert_eq!(o.get("node_meta.c"), Some("b"));
        let (v, _) = merged(&[
            (
                "a",
                json!({"dns_config": {"service_ttl": {"*": "5s"}, "node_ttl": "1s"}}),
            ),
            ("b", json!({"dns_config": {"service_ttl": {"web": "10s"}}})),
        ]);
        assert_eq!(
            v["dns_config"],
            json!({"service_ttl": {"web": "10s"}, "node_ttl": "1s"})
        );
    }

    #[test]
    fn origin_lookup_walks_up_and_forgets_replaced_values() {
        let (_, o) = merged(&[
            ("a", json!({"dns_config": {"soa": {"retry": 1}}})),
            ("b", json!({"dns_config": {"allow_stale": true}})),
        ]);
        assert_eq!(o.get("dns_config.soa.retry"), Some("a"));
        assert_eq!(o.get("dns_config.allow_stale"), Some("b"));
        assert_eq!(o.get("dns_config.max_stale"), Some("a"));
        assert_eq!(o.get("node_name"), None);
    }
}
