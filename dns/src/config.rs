//! Typed DNS configuration: Consul's `dns_config` keys plus the forwarder cache settings
//! that are ours.
//!
//! `Default` gives Consul's defaults. The agent converts its config file into a
//! [`DnsConfig`] and can replace it at runtime with [`crate::DnsServer::set_config`]; the
//! server validates it first ([`DnsConfig::validate`]), so a bad reload never replaces a good
//! configuration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::allow::RecursorAllow;
use crate::error::DnsError;

/// Consul's hard maximum for `udp_answer_limit`.
pub const MAX_UDP_ANSWER_LIMIT: usize = 8;

/// Configuration of the DNS server.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DnsConfig {
    /// The cluster domain, a fully qualified name such as `consul.`.
    pub domain: String,
    /// A second zone answered exactly like `domain` (Consul's `alt_domain`).
    pub alt_domain: Option<String>,
    /// The local datacenter; used when the published catalog does not name one.
    pub datacenter: String,
    /// TTL of node records, NS records and their glue (`node_ttl`, default 0).
    pub node_ttl: Duration,
    /// Per-service TTLs (`service_ttl`): exact names, `prefix*` patterns and `*`.
    pub service_ttl: ServiceTtls,
    /// Return only passing instances; by default warning instances are returned too.
    pub only_passing: bool,
    /// Answers per non-EDNS UDP response (default 3, clamped to 1..=8).
    pub udp_answer_limit: usize,
    /// Maximum A/AAAA answers per response; 0 means unlimited.
    pub a_record_limit: usize,
    /// Consul's `enable_truncate`. Accepted for compatibility only: this server always sets
    /// TC when it cuts a UDP answer, so clients can retry over TCP (see the crate docs).
    pub enable_truncate: bool,
    /// Put node-meta TXT records in the Additional section of A/AAAA node answers.
    pub enable_additional_node_meta_txt: bool,
    /// Write every name in full instead of using compression pointers.
    pub disable_compression: bool,
    /// The zone's SOA timers.
    pub soa: SoaConfig,
    /// Answer from a replica that may lag the leader, up to `max_stale`.
    pub allow_stale: bool,
    /// Beyond this time without leader contact, zone queries get SERVFAIL.
    pub max_stale: Duration,
    /// Upstream resolvers for every name outside the zone; empty disables forwarding.
    pub recursors: Vec<SocketAddr>,
    /// Clients that may use the recursors (`recursor_allow`, default `localhost` and
    /// `localnets`); everyone else gets REFUSED for names outside the zone and RA=0.
    pub recursor_allow: RecursorAllow,
    /// Order in which the recursors are tried.
    pub recursor_strategy: RecursorStrategy,
    /// Time allowed for one attempt against one recursor.
    pub recursor_timeout: Duration,
    /// The forwarder's answer cache.
    pub cache: CacheConfig,
    /// Queries handled at once on the general (asynchronous) path, which includes every
    /// upstream exchange; beyond it queries are shed with SERVFAIL.
    pub max_inflight: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            domain: "consul.".to_owned(),
            alt_domain: None,
            datacenter: "dc1".to_owned(),
            node_ttl: Duration::ZERO,
            service_ttl: ServiceTtls::default(),
            only_passing: false,
            udp_answer_limit: 3,
            a_record_limit: 0,
            enable_truncate: false,
            enable_additional_node_meta_txt: true,
            disable_compression: false,
            soa: SoaConfig::default(),
            allow_stale: true,
            max_stale: Duration::from_secs(87_600 * 3600),
            recursors: Vec::new(),
            recursor_allow: RecursorAllow::default(),
            recursor_strategy: RecursorStrategy::Sequential,
            recursor_timeout: Duration::from_secs(2),
            cache: CacheConfig::default(),
            max_inflight: 1024,
        }
    }
}

impl DnsConfig {
    /// Checks the values the server cannot work with: domain syntax, zero timeouts and
    /// zero-sized bounds.
    pub fn validate(&self) -> Result<(), DnsError> {
        let bad = |key: &'static str, reason: String| Err(DnsError::InvalidConfig { key, reason });
        if let Err(reason) = domain_labels(&self.domain) {
            return bad("domain", reason);
        }
        if domain_labels(&self.domain).is_ok_and(|l| l.is_empty()) {
            return bad(
                "domain",
                "the root zone cannot be the cluster domain".into(),
            );
        }
        if let Some(alt) = &self.alt_domain {
            match domain_labels(alt) {
                Err(reason) => return bad("alt_domain", reason),
                Ok(l) if l.is_empty() => {
                    return bad("alt_domain", "the root zone cannot be a domain".into());
                }
                Ok(_) => {}
            }
        }
        if self.datacenter.is_empty() || self.datacenter.len() > 63 || self.datacenter.contains('.')
        {
            return bad("datacenter", "must be a single DNS label".into());
        }
        if self.recursor_timeout.is_zero() {
            return bad("recursor_timeout", "must be greater than zero".into());
        }
        if self.max_inflight == 0 {
            return bad("max_inflight", "must be greater than zero".into());
        }
        if self.cache.max_entries == 0 || self.cache.max_bytes == 0 {
            return bad(
                "cache",
                "max_entries and max_bytes must be greater than zero".into(),
            );
        }
        Ok(())
    }

    /// The effective non-EDNS UDP answer limit (Consul clamps it to 8; 0 would drop every
    /// answer, so it counts as 1).
    pub(crate) fn effective_udp_answer_limit(&self) -> usize {
        self.udp_answer_limit.clamp(1, MAX_UDP_ANSWER_LIMIT)
    }
}

/// Splits a domain such as `consul.` or `Example.COM` into lower-cased labels.
/// The trailing dot is optional; the empty string and `.` are the root (no labels).
pub(crate) fn domain_labels(domain: &str) -> Result<Vec<Vec<u8>>, String> {
    let trimmed = domain.strip_suffix('.').unwrap_or(domain);
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let mut labels = Vec::new();
    let mut wire_len = 1;
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("invalid label {label:?} in {domain:?}"));
        }
        wire_len += label.len() + 1;
        labels.push(label.to_ascii_lowercase().into_bytes());
    }
    if wire_len > 255 {
        return Err(format!("{domain:?} is longer than 255 bytes"));
    }
    Ok(labels)
}

/// SOA timers of the zone (`dns_config.soa`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SoaConfig {
    /// SOA refresh, seconds (default 3600).
    pub refresh: u32,
    /// SOA retry, seconds (default 600).
    pub retry: u32,
    /// SOA expire, seconds (default 86400).
    pub expire: u32,
    /// SOA minimum and the SOA record's own TTL, seconds (default 0): the negative-caching
    /// TTL clients apply to NXDOMAIN and NODATA answers.
    pub min_ttl: u32,
}

impl Default for SoaConfig {
    fn default() -> Self {
        Self {
            refresh: 3600,
            retry: 600,
            expire: 86_400,
            min_ttl: 0,
        }
    }
}

/// In which order the recursors are tried for one query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RecursorStrategy {
    /// In configured order (Consul's default).
    #[default]
    Sequential,
    /// A fresh random permutation for every query.
    Random,
}

/// Settings of the forwarder's answer cache (Consul has none; these are ours).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Maximum number of cached responses.
    pub max_entries: usize,
    /// Maximum memory held by cached responses (wire bytes plus bookkeeping).
    pub max_bytes: usize,
    /// Positive answers are kept for the smallest TTL of the answer, at most this long.
    pub max_positive_ttl: Duration,
    /// Negative answers (NXDOMAIN, NODATA) are kept for min(SOA TTL, SOA minimum), at most
    /// this long (RFC 2308).
    pub max_negative_ttl: Duration,
    /// How long past expiry an answer may still be served when every upstream fails
    /// (RFC 8767 serve-stale); zero disables serving stale answers.
    pub serve_stale: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 65_536,
            max_bytes: 32 << 20,
            max_positive_ttl: Duration::from_secs(86_400),
            max_negative_ttl: Duration::from_secs(3600),
            serve_stale: Duration::from_secs(86_400),
        }
    }
}

/// Service TTLs (`service_ttl`): exact service names, `prefix*` patterns and the `*`
/// wildcard. Resolution order: exact name, then the longest matching prefix, then `*`,
/// then zero. Names match case-insensitively, as DNS names do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceTtls {
    exact: BTreeMap<String, Duration>,
    /// Prefix patterns without their `*`; `""` is the wildcard `*` itself.
    prefixes: BTreeMap<String, Duration>,
}

impl ServiceTtls {
    /// Adds one `service_ttl` entry: `name`, `prefix*` or `*`.
    pub fn insert(&mut self, pattern: &str, ttl: Duration) {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_suffix('*') {
            Some(prefix) => self.prefixes.insert(prefix.to_owned(), ttl),
            None => self.exact.insert(pattern, ttl),
        };
    }

    /// The TTL for `service`.
    pub fn resolve(&self, service: &str) -> Duration {
        let service = service.to_ascii_lowercase();
        if let Some(ttl) = self.exact.get(&service) {
            return *ttl;
        }
        // The longest prefix wins; `*` is the empty prefix and so matches last.
        self.prefixes
            .iter()
            .filter(|(prefix, _)| service.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(Duration::ZERO, |(_, ttl)| *ttl)
    }

    /// True when no entry is configured.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }
}

impl<S: AsRef<str>> FromIterator<(S, Duration)> for ServiceTtls {
    fn from_iter<I: IntoIterator<Item = (S, Duration)>>(iter: I) -> Self {
        let mut ttls = Self::default();
        for (pattern, ttl) in iter {
            ttls.insert(pattern.as_ref(), ttl);
        }
        ttls
    }
}

/// Converts a duration to a DNS TTL in whole seconds, saturating at `u32::MAX`.
pub(crate) fn ttl_secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn defaults_match_consul() {
        let c = DnsConfig::default();
        assert_eq!(c.domain, "consul.");
        assert_eq!(c.datacenter, "dc1");
        assert_eq!(c.udp_answer_limit, 3);
        assert_eq!(c.a_record_limit, 0);
        assert!(c.enable_additional_node_meta_txt);
        assert!(c.allow_stale);
        assert_eq!(c.recursor_timeout, secs(2));
        assert_eq!(
            c.soa,
            SoaConfig {
                refresh: 3600,
                retry: 600,
                expire: 86_400,
                min_ttl: 0
            }
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn service_ttl_resolution_order() {
        let ttls: ServiceTtls = [
            ("*", secs(5)),
            ("db*", secs(10)),
            ("db-primary*", secs(20)),
            ("db-primary-eu", secs(30)),
        ]
        .into_iter()
        .collect();
        assert_eq!(ttls.resolve("db-primary-eu"), secs(30), "exact wins");
        assert_eq!(ttls.resolve("DB-Primary-EU"), secs(30), "case-insensitive");
        assert_eq!(ttls.resolve("db-primary-us"), secs(20), "longest prefix");
        assert_eq!(ttls.resolve("db-replica"), secs(10), "shorter prefix");
        assert_eq!(ttls.resolve("web"), secs(5), "wildcard");
        let no_wildcard: ServiceTtls = [("web", secs(1))].into_iter().collect();
        assert_eq!(
            no_wildcard.resolve("api"),
            Duration::ZERO,
            "nothing matches"
        );
        assert_eq!(ServiceTtls::default().resolve("x"), Duration::ZERO);
    }

    #[test]
    fn exact_entry_beats_longer_prefix() {
        let ttls: ServiceTtls = [("web", secs(1)), ("web*", secs(9))].into_iter().collect();
        assert_eq!(ttls.resolve("web"), secs(1));
        assert_eq!(ttls.resolve("web2"), secs(9));
    }

    #[test]
    fn validate_rejects_bad_values() {
        let mut c = DnsConfig {
            domain: "bad..domain.".into(),
            ..DnsConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(DnsError::InvalidConfig { key: "domain", .. })
        ));
        c.domain = ".".into();
        assert!(c.validate().is_err());
        for c in [
            DnsConfig {
                recursor_timeout: Duration::ZERO,
                ..DnsConfig::default()
            },
            DnsConfig {
                alt_domain: Some("x".repeat(64)),
                ..DnsConfig::default()
            },
            DnsConfig {
                datacenter: "a.b".into(),
                ..DnsConfig::default()
            },
            DnsConfig {
                max_inflight: 0,
                ..DnsConfig::default()
            },
        ] {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }

    #[test]
    fn domain_labels_lowercase_and_optional_dot() {
        assert_eq!(domain_labels("Consul.").unwrap(), vec![b"consul".to_vec()]);
        assert_eq!(
            domain_labels("cluster.Local").unwrap(),
            vec![b"cluster".to_vec(), b"local".to_vec()]
        );
        assert!(domain_labels(".").unwrap().is_empty());
    }

    #[test]
    fn udp_answer_limit_is_clamped() {
        let mut c = DnsConfig {
            udp_answer_limit: 50,
            ..DnsConfig::default()
        };
        assert_eq!(c.effective_udp_answer_limit(), 8);
        c.udp_answer_limit = 0;
        assert_eq!(c.effective_udp_answer_limit(), 1);
    }
}
