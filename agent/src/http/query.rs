//! Query-string parsing as Consul (Go's `url.ParseQuery`) does it: value-less flags
//! (`?stale`, `?passing`, `?pretty`), repeated keys (`tag`, `node-meta`), and the read
//! options of catalog and health endpoints (consistency, blocking `index`/`wait`, `filter`).
//!
//! Invariant: parsing is pure and never panics; every rejection carries Consul's 400 text.

use std::collections::BTreeMap;
use std::time::Duration;

use muster_server::Consistency;

use super::error::ApiError;
use super::filter::parse_bool;
use crate::duration::parse_go_nanos;

/// Most query parameters read from one request.
const MAX_PARAMS: usize = 256;

/// The decoded query string, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `url.QueryUnescape`: `+` is a space, `%XX` a byte; a bad escape is an error.
fn unescape(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex);
                let lo = bytes.get(i + 2).copied().and_then(hex);
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h * 16 + l),
                    _ => {
                        return Err(ApiError::bad(format!(
                            "Failed to decode query: invalid URL escape {:?}",
                            String::from_utf8_lossy(&bytes[i..(i + 3).min(bytes.len())])
                        )));
                    }
                }
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

impl Query {
    /// Parses a raw query string (without the `?`).
    pub(crate) fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let mut pairs = Vec::new();
        for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            if pairs.len() >= MAX_PARAMS {
                return Err(ApiError::bad(format!(
                    "Failed to decode query: more than {MAX_PARAMS} parameters"
                )));
            }
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            pairs.push((unescape(k)?, unescape(v)?));
        }
        Ok(Query { pairs })
    }

    /// Whether the key is present (with or without a value).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == key)
    }

    /// The first value of the key (`""` for a flag without a value).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The first non-empty value of the key (Go's `query.Get(k) != ""`).
    pub(crate) fn non_empty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    /// Every value of a repeated key.
    pub(crate) fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// `?pretty`: indented JSON.
    pub(crate) fn pretty(&self) -> bool {
        self.has("pretty")
    }

    /// A boolean flag as Consul reads it: absent is false, present without a value is true,
    /// otherwise Go's `strconv.ParseBool`; `Err` carries the bad value.
    pub(crate) fn flag(&self, key: &str) -> Result<bool, String> {
        match self.get(key) {
            None => Ok(false),
            Some("") => Ok(true),
            Some(v) => parse_bool(v).map_err(|_| v.to_owned()),
        }
    }

    /// `?node-meta=k:v` (repeatable): every pair must match.
    pub(crate) fn node_meta(&self) -> BTreeMap<String, String> {
        self.all("node-meta")
            .into_iter()
            .map(|pair| match pair.split_once(':') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (pair.to_owned(), String::new()),
            })
            .collect()
    }

    /// `?tag=` (repeatable).
    pub(crate) fn tags(&self) -> Vec<String> {
        self.all("tag").into_iter().map(str::to_owned).collect()
    }
}

/// How a catalog or health read is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadOptions {
    /// `?stale`, `?consistent` or the default.
    pub consistency: Consistency,
    /// `?index` (0: do not block).
    pub index: u64,
    /// `?wait`, if given.
    pub wait: Option<Duration>,
    /// `?filter`, if given.
    pub filter: Option<String>,
}

impl ReadOptions {
    /// Consul's `parseConsistency` and `parseWait`.
    pub(crate) fn parse(q: &Query) -> Result<ReadOptions, ApiError> {
        let max_stale = match q.non_empty("max_stale") {
            None => 0,
            Some(v) => parse_go_nanos(v)
                .map_err(|_| ApiError::bad(format!("Invalid max_stale value {v:?}")))?,
        };
        let stale = q.has("stale") || max_stale > 0;
        let consistent = q.has("consistent");
        if stale && consistent {
            return Err(ApiError::bad(
                "Cannot specify ?stale with ?consistent, conflicting semantics.",
            ));
        }
        let consistency = if stale {
            Consistency::Stale
        } else if consistent {
            Consistency::Consistent
        } else {
            Consistency::Default
        };
        let wait = match q.non_empty("wait") {
            None => None,
            Some(w) => {
                let nanos = parse_go_nanos(w).map_err(|_| ApiError::bad("Invalid wait time"))?;
                Some(Duration::from_nanos(u64::try_from(nanos).unwrap_or(0)))
            }
        };
        let index = match q.non_empty("index") {
            None => 0,
            Some(i) => i.parse().map_err(|_| ApiError::bad("Invalid index"))?,
        };
        Ok(ReadOptions {
            consistency,
            index,
            wait,
            filter: q.non_empty("filter").map(str::to_owned),
        })
    }

    /// The wait of a blocking query: `?wait` or the default, at most the max, plus up to
    /// 1/16 of random jitter (`r` in `[0, 1)`), as Consul spreads its wake-ups.
    pub(crate) fn blocking_wait(&self, default: Duration, max: Duration, r: f64) -> Duration {
        let wait = self
            .wait
            .filter(|w| !w.is_zero())
            .unwrap_or(default)
            .min(max);
        wait + (wait / 16).mul_f64(r.clamp(0.0, 1.0))
    }
}

/// `X-Consul-Effective-Consistency`.
pub(crate) fn consistency_name(c: Consistency) -> &'static str {
    match c {
        Consistency::Stale => "stale",
        Consistency::Consistent => "consistent",
        Consistency::Default => "leader",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Query {
        Query::parse(Some(s)).unwrap()
    }

    #[test]
    fn flags_repeats_and_escapes() {
        let query = q(
            "passing&tag=a&tag=b%20c&node-meta=rack:a&node-meta=env&pretty&x=1+2&filter=Service.Tags%20contains%20%22x%22",
        );
        assert!(query.has("passing") && query.pretty());
        assert_eq!(query.flag("passing"), Ok(true));
        assert_eq!(query.flag("absent"), Ok(false));
        assert_eq!(query.tags(), ["a", "b c"]);
        assert_eq!(query.get("x"), Some("1 2"));
        assert_eq!(
            query.node_meta(),
            BTreeMap::from([("rack".into(), "a".into()), ("env".into(), String::new())])
        );
        assert_eq!(q("passing=false").flag("passing"), Ok(false));
        assert_eq!(q("passing=yes").flag("passing"), Err("yes".into()));
        let opts = ReadOptions::parse(&query).unwrap();
        assert_eq!(opts.filter.as_deref(), Some(r#"Service.Tags contains "x""#));
        assert!(Query::parse(Some("a=%zz")).is_err());
        assert!(Query::parse(Some("a=%4")).is_err());
        assert_eq!(Query::parse(None).unwrap(), Query::default());
    }

    #[test]
    fn read_options_follow_consul() {
        let o = ReadOptions::parse(&q("index=42&wait=10s&stale")).unwrap();
        assert_eq!(o.index, 42);
        assert_eq!(o.wait, Some(Duration::from_secs(10)));
        assert_eq!(o.consistency, Consistency::Stale);
        assert_eq!(
            ReadOptions::parse(&q("consistent")).unwrap().consistency,
            Consistency::Consistent
        );
        assert_eq!(
            ReadOptions::parse(&q("")).unwrap().consistency,
            Consistency::Default
        );
        assert_eq!(
            ReadOptions::parse(&q("stale&consistent")).unwrap_err(),
            ApiError::bad("Cannot specify ?stale with ?consistent, conflicting semantics.")
        );
        assert_eq!(
            ReadOptions::parse(&q("index=abc")).unwrap_err(),
            ApiError::bad("Invalid index")
        );
        assert_eq!(
            ReadOptions::parse(&q("index=-1")).unwrap_err(),
            ApiError::bad("Invalid index")
        );
        assert_eq!(
            ReadOptions::parse(&q("wait=10")).unwrap_err(),
            ApiError::bad("Invalid wait time")
        );
        assert_eq!(
            ReadOptions::parse(&q("wait=5d")).unwrap_err(),
            ApiError::bad("Invalid wait time")
        );
        // Empty values are ignored, as Go's `query.Get(k) != ""` does.
        assert_eq!(ReadOptions::parse(&q("index=&wait=")).unwrap().index, 0);
        assert_eq!(consistency_name(Consistency::Default), "leader");
    }

    #[test]
    fn blocking_wait_defaults_caps_and_jitters() {
        let five = Duration::from_secs(300);
        let ten = Duration::from_secs(600);
        let none = ReadOptions::parse(&q("index=1")).unwrap();
        assert_eq!(none.blocking_wait(five, ten, 0.0), five);
        let long = ReadOptions::parse(&q("index=1&wait=1h")).unwrap();
        assert_eq!(long.blocking_wait(five, ten, 0.0), ten);
        assert_eq!(long.blocking_wait(five, ten, 1.0), ten + ten / 16);
        let short = ReadOptions::parse(&q("index=1&wait=16s")).unwrap();
        assert_eq!(
            short.blocking_wait(five, ten, 0.5),
            Duration::from_millis(16_500)
        );
        let negative = ReadOptions::parse(&q("index=1&wait=-3s")).unwrap();
        assert_eq!(negative.blocking_wait(five, ten, 0.0), five);
    }
}
