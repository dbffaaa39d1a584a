//! From a request's secret to an [`Authorizer`]: the agent's token settings, the catalog
//! (a server's own state, or a server asked by a client agent), a bounded cache, and
//! `down_policy` when no server answers.
//!
//! Invariants: with ACLs disabled every request is allowed and nothing is resolved; a
//! cached authorizer is used for `token_ttl` (servers resolve from memory, so they do not
//! cache); the cache holds at most [`MAX_CACHED`] tokens; a secret no token has is an error
//! (`ACL not found`, 403), never an anonymous request; no secret is ever logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use muster_server::ServerHandle;
use muster_server::catalog::acl::{ANONYMOUS_SECRET, ResolvedToken};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Authorizer, DefaultPolicy, Kind, Need, Rules, Scalar};
use crate::config::{AclSettings, DownPolicy};

/// Most resolved tokens kept by a client agent.
pub const MAX_CACHED: usize = 4096;

/// Why a request has no authorizer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// No token has this secret (Consul's text).
    #[error("ACL not found")]
    NotFound,
}

/// One agent's token resolution.
pub struct Resolver {
    settings: AclSettings,
    datacenter: String,
    node: String,
    catalog: Option<ServerHandle>,
    cache: Mutex<HashMap<String, Cached>>,
}

struct Cached {
    at: Instant,
    authorizer: Arc<Authorizer>,
}

impl Resolver {
    /// A resolver for the agent `node` in `datacenter`, asking `catalog`.
    pub fn new(
        settings: AclSettings,
        datacenter: &str,
        node: &str,
        catalog: Option<ServerHandle>,
    ) -> Self {
        Resolver {
            settings,
            datacenter: datacenter.to_owned(),
            node: node.to_owned(),
            catalog,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether ACLs are enforced.
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// The authorizer of a request carrying `secret` (`None` or empty: the `default` token,
    /// else anonymous).
    pub async fn resolve(&self, secret: Option<&str>) -> Result<Arc<Authorizer>, AclError> {
        if !self.settings.enabled {
            return Ok(Arc::new(Authorizer::all()));
        }
        let secret = match secret.filter(|s| !s.is_empty()) {
            Some(s) => s.to_owned(),
            None => self
                .settings
                .tokens
                .default
                .clone()
                .unwrap_or_else(|| ANONYMOUS_SECRET.to_owned()),
        };
        if self.settings.tokens.agent_recovery.as_deref() == Some(secret.as_str()) {
            return Ok(Arc::new(self.recovery()));
        }
        let server = self.catalog.as_ref().is_some_and(|c| !c.is_replica());
        if !server && let Some(hit) = self.cached(&secret, false) {
            return Ok(hit);
        }
        let Some(catalog) = &self.catalog else {
            return self.down(&secret);
        };
        match catalog.resolve_acl_token(&secret).await {
            Ok(Some(token)) => {
                let authorizer = Arc::new(self.authorizer(&token));
                if !server {
                    self.remember(secret, authorizer.clone());
                }
                Ok(authorizer)
            }
            Ok(None) => {
                self.cache.lock().remove(&secret);
                Err(AclError::NotFound)
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot resolve an ACL token; applying down_policy");
                self.down(&secret)
            }
        }
    }

    /// `down_policy`, when no server could be asked.
    fn down(&self, secret: &str) -> Result<Arc<Authorizer>, AclError> {
        Ok(match self.settings.down_policy {
            DownPolicy::Allow => Arc::new(Authorizer::all()),
            DownPolicy::Deny => Arc::new(deny_all()),
            DownPolicy::ExtendCache => self
                .cached(secret, true)
                .unwrap_or_else(|| Arc::new(deny_all())),
        })
    }

    /// The authorizer of a resolved token: everything for management tokens, else its
    /// policies' rules (those meant for this datacenter) over `default_policy`.
    fn authorizer(&self, token: &ResolvedToken) -> Authorizer {
        if token.management {
            return Authorizer::all();
        }
        let mut rules = Vec::new();
        for p in &token.policies {
            if !p.datacenters.is_empty() && !p.datacenters.contains(&self.datacenter) {
                continue;
            }
            match Rules::parse(&p.rules) {
                Ok(r) => rules.push(r),
                // Checked when written; a stored policy we cannot read grants nothing.
                Err(e) => {
                    tracing::warn!(policy = %p.name, error = %e, "ignoring an unreadable ACL policy");
                }
            }
        }
        Authorizer::from_policies(&rules, self.settings.default_policy)
    }

    /// `agent_recovery`: this agent's own endpoints, whatever the servers say.
    fn recovery(&self) -> Authorizer {
        let text = format!(
            "agent {name:?} {{\n policy = \"write\"\n}}\nnode_prefix \"\" {{\n policy = \"read\"\n}}",
            name = self.node
        );
        let rules = Rules::parse(&text).unwrap_or_default();
        Authorizer::from_policies([&rules], DefaultPolicy::Deny)
    }

    fn cached(&self, secret: &str, expired_ok: bool) -> Option<Arc<Authorizer>> {
        let cache = self.cache.lock();
        let hit = cache.get(secret)?;
        (expired_ok || hit.at.elapsed() < self.settings.token_ttl).then(|| hit.authorizer.clone())
    }

    fn remember(&self, secret: String, authorizer: Arc<Authorizer>) {
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED && !cache.contains_key(&secret) {
            // Drop the oldest entry: O(n) but only when full, and n is bounded.
            if let Some(oldest) = cache
                .iter()
                .min_by_key(|(_, c)| c.at)
                .map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(
            secret,
            Cached {
                at: Instant::now(),
                authorizer,
            },
        );
    }

    /// The token ttl (for tests and `/v1/agent/self`).
    pub fn token_ttl(&self) -> Duration {
        self.settings.token_ttl
    }
}

/// Nothing allowed.
fn deny_all() -> Authorizer {
    Authorizer::from_policies([], DefaultPolicy::Deny)
}

/// A permission a request lacks, in Consul's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Permission denied: token lacks permission '{resource}:{access}'{on}")]
pub struct Denied {
    resource: &'static str,
    access: &'static str,
    on: String,
}

impl Authorizer {
    /// `Ok` when allowed, else the denial naming what was needed.
    pub fn need(&self, kind: Kind, name: &str, need: Need) -> Result<(), Denied> {
        if self.allows(kind, name, need) {
            return Ok(());
        }
        Err(Denied {
            resource: kind.word(),
            access: need_word(need),
            on: format!(" on {name:?}"),
        })
    }

    /// `Ok` when allowed on the scalar resource, else the denial.
    pub fn need_scalar(&self, scalar: Scalar, need: Need) -> Result<(), Denied> {
        if self.allows_scalar(scalar, need) {
            return Ok(());
        }
        Err(Denied {
            resource: scalar.word(),
            access: need_word(need),
            on: String::new(),
        })
    }
}

fn need_word(need: Need) -> &'static str {
    match need {
        Need::Read => "read",
        Need::List => "list",
        Need::Write => "write",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AclTokens;

    fn settings(enabled: bool, down: DownPolicy) -> AclSettings {
        AclSettings {
            enabled,
            default_policy: DefaultPolicy::Deny,
            down_policy: down,
            token_ttl: Duration::from_secs(30),
            tokens: AclTokens {
                agent_recovery: Some("recover".into()),
                ..AclTokens::default()
            },
        }
    }

    #[tokio::test]
    async fn disabled_allows_everything_and_no_server_applies_down_policy() {
        let off = Resolver::new(settings(false, DownPolicy::Deny), "dc1", "n1", None);
        assert!(off.resolve(Some("x")).await.unwrap().is_all());

        let deny = Resolver::new(settings(true, DownPolicy::Deny), "dc1", "n1", None);
        let a = deny.resolve(Some("x")).await.unwrap();
        assert!(!a.allows(Kind::Service, "web", Need::Read));
        let allow = Resolver::new(settings(true, DownPolicy::Allow), "dc1", "n1", None);
        assert!(allow.resolve(None).await.unwrap().is_all());
        // extend-cache without a cached entry: denied.
        let extend = Resolver::new(settings(true, DownPolicy::ExtendCache), "dc1", "n1", None);
        let a = extend.resolve(Some("x")).await.unwrap();
        assert!(!a.allows(Kind::Node, "n1", Need::Read));
        extend.remember("x".into(), Arc::new(Authorizer::all()));
        assert!(extend.resolve(Some("x")).await.unwrap().is_all());
    }

    #[tokio::test]
    async fn the_recovery_token_writes_this_agent_only() {
        let r = Resolver::new(settings(true, DownPolicy::Deny), "dc1", "n1", None);
        let a = r.resolve(Some("recover")).await.unwrap();
        assert!(a.allows(Kind::Agent, "n1", Need::Write));
        assert!(!a.allows(Kind::Agent, "n2", Need::Read));
        assert!(a.allows(Kind::Node, "n2", Need::Read));
        assert!(!a.allows(Kind::Service, "web", Need::Read));
        let e = a.need(Kind::Service, "web", Need::Write).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Permission denied: token lacks permission 'service:write' on \"web\""
        );
        let e = a.need_scalar(Scalar::Operator, Need::Read).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Permission denied: token lacks permission 'operator:read'"
        );
    }

    #[test]
    fn resolved_tokens_become_authorizers_for_this_datacenter() {
        use muster_server::catalog::acl::AclPolicy;
        let r = Resolver::new(settings(true, DownPolicy::Deny), "dc1", "n1", None);
        let policy = |name: &str, dcs: &[&str], rules: &str| AclPolicy {
            id: name.into(),
            name: name.into(),
            rules: rules.into(),
            datacenters: dcs.iter().map(|s| (*s).to_owned()).collect(),
            ..AclPolicy::default()
        };
        let token = ResolvedToken {
            accessor_id: "a".into(),
            management: false,
            policies: vec![
                policy("here", &["dc1"], r#"service "web" { policy = "write" }"#),
                policy(
                    "elsewhere",
                    &["dc2"],
                    r#"service "db" { policy = "write" }"#,
                ),
                policy("everywhere", &[], r#"node_prefix "" { policy = "read" }"#),
            ],
        };
        let a = r.authorizer(&token);
        assert!(a.allows(Kind::Service, "web", Need::Write));
        assert!(!a.allows(Kind::Service, "db", Need::Read));
        assert!(a.allows(Kind::Node, "any", Need::Read));
        let m = ResolvedToken {
            management: true,
            ..token
        };
        assert!(r.authorizer(&m).is_all());
    }

    #[test]
    fn the_cache_is_bounded() {
        let r = Resolver::new(settings(true, DownPolicy::ExtendCache), "dc1", "n1", None);
        for i in 0..MAX_CACHED + 10 {
            r.remember(format!("s{i}"), Arc::new(Authorizer::all()));
        }
        assert_eq!(r.cache.lock().len(), MAX_CACHED);
    }
}
