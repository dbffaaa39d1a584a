//! ACL decisions: a token's policies, merged, decide what its requests may do.
//!
//! Layout: `rules` parses Consul's rule language; this module answers "may this token do
//! that" ([`Authorizer`]); `resolver` turns a request's secret into an authorizer (the
//! catalog holds tokens and policies; client agents ask a server and cache the answer).
//! Which endpoint needs what is the HTTP layer's business.
//!
//! Decision order, as Consul's: a management token may do everything; otherwise the exact
//! rule for the name, else the longest prefix rule, else the agent's `default_policy`.
//! When a token has several policies, a rule present in more than one takes the level with
//! precedence (`deny` > `write` > `list` > `read`), so adding a policy can take access away
//! only by denying it explicitly.

pub mod resolver;
pub mod rules;

pub use resolver::{AclError, Denied, Resolver};
pub use rules::{Access, Kind, Need, Rules, RulesError, Scalar};

/// A new accessor or secret ID.
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Token creation times, as Consul writes them.
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Creates `initial_management` with `global-management` if no token has that secret yet
/// (the leader does this when it takes office, as Consul's `initializeACLs`).
pub async fn ensure_initial_management(
    catalog: &muster_server::ServerHandle,
    secret: &str,
) -> Result<bool, muster_server::ServerError> {
    let state = catalog.acl_state().await?;
    if state.token_by_secret(secret).is_some() {
        return Ok(false);
    }
    use muster_server::Command;
    use muster_server::catalog::acl::{AclCommand, AclToken, GLOBAL_MANAGEMENT_ID, PolicyLink};
    let token = AclToken {
        accessor_id: new_id(),
        secret_id: secret.to_owned(),
        description: "Initial Management Token".into(),
        policies: vec![PolicyLink {
            id: GLOBAL_MANAGEMENT_ID.into(),
            name: String::new(),
        }],
        create_time: now_rfc3339(),
        ..AclToken::default()
    };
    let outcome = catalog
        .write(Command::Acl(AclCommand::TokenSet(token)))
        .await?;
    Ok(outcome.result.is_ok())
}

/// `acl.default_policy`: what happens where no rule speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultPolicy {
    /// Allowed (Consul's default, for migrating to ACLs).
    Allow,
    /// Denied (what production clusters use).
    Deny,
}

/// What one token may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorizer {
    grant: Grant,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Grant {
    /// Everything: ACLs disabled, or a management token.
    All,
    /// The merged rules of the token's policies, then the default.
    Rules(Rules, DefaultPolicy),
}

impl Authorizer {
    /// Everything is allowed (ACLs off, or the `global-management` policy).
    pub fn all() -> Self {
        Authorizer { grant: Grant::All }
    }

    /// The merge of `policies`' rules, falling back to `default`.
    pub fn from_policies<'a>(
        policies: impl IntoIterator<Item = &'a Rules>,
        default: DefaultPolicy,
    ) -> Self {
        let mut merged = Rules::default();
        for p in policies {
            merged.merge(p);
        }
        Authorizer {
            grant: Grant::Rules(merged, default),
        }
    }

    /// Whether everything is allowed.
    pub fn is_all(&self) -> bool {
        matches!(self.grant, Grant::All)
    }

    /// May the token do `need` on `name` of `kind`?
    pub fn allows(&self, kind: Kind, name: &str, need: Need) -> bool {
        match &self.grant {
            Grant::All => true,
            Grant::Rules(rules, default) => match rules.lookup(kind, name) {
                Some(access) => access.grants(need),
                None => *default == DefaultPolicy::Allow,
            },
        }
    }

    /// May the token do `need` on the scalar resource (`operator`, `keyring`, `acl`...)?
    pub fn allows_scalar(&self, scalar: Scalar, need: Need) -> bool {
        match &self.grant {
            Grant::All => true,
            Grant::Rules(rules, default) => match rules.scalar(scalar) {
                Some(access) => access.grants(need),
                None => *default == DefaultPolicy::Allow,
            },
        }
    }

    /// May the token do `need` on at least one name of `kind` (list endpoints answer then,
    /// filtered; otherwise 403)?
    pub fn allows_some(&self, kind: Kind, need: Need) -> bool {
        match &self.grant {
            Grant::All => true,
            Grant::Rules(rules, default) => {
                *default == DefaultPolicy::Allow
                    || rules.named(kind).is_some_and(|n| n.grants_any(need))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(text: &str, default: DefaultPolicy) -> Authorizer {
        Authorizer::from_policies([&Rules::parse(text).unwrap()], default)
    }

    #[test]
    fn every_named_kind_allows_and_denies_by_exact_and_prefix_rules() {
        for kind in [
            Kind::Agent,
            Kind::Event,
            Kind::Key,
            Kind::Node,
            Kind::Query,
            Kind::Service,
            Kind::Session,
        ] {
            let w = kind.word();
            let text = format!(
                r#"
                {w} "exact" {{ policy = "write" }}
                {w} "ro" {{ policy = "read" }}
                {w}_prefix "" {{ policy = "read" }}
                {w}_prefix "secret-" {{ policy = "deny" }}
                {w}_prefix "secret-but-" {{ policy = "write" }}
                {w} "secret-exact" {{ policy = "read" }}
                "#
            );
            let a = auth(&text, DefaultPolicy::Deny);
            // Exact rules.
            assert!(a.allows(kind, "exact", Need::Write), "{w}");
            assert!(a.allows(kind, "ro", Need::Read) && !a.allows(kind, "ro", Need::Write));
            // The empty prefix covers everything else, read only.
            assert!(a.allows(kind, "other", Need::Read), "{w}");
            assert!(!a.allows(kind, "other", Need::Write), "{w}");
            // The longest prefix wins: deny, then write under a longer one.
            assert!(!a.allows(kind, "secret-x", Need::Read), "{w}");
            assert!(a.allows(kind, "secret-but-ok", Need::Write), "{w}");
            // An exact rule wins over any prefix.
            assert!(a.allows(kind, "secret-exact", Need::Read), "{w}");
            assert!(!a.allows(kind, "secret-exact", Need::Write), "{w}");
            assert!(a.allows_some(kind, Need::Write));
        }
    }

    #[test]
    fn the_default_applies_only_where_no_rule_speaks() {
        let text = r#"service "web" { policy = "deny" }"#;
        let allow = auth(text, DefaultPolicy::Allow);
        assert!(allow.allows(Kind::Service, "db", Need::Write));
        assert!(!allow.allows(Kind::Service, "web", Need::Read));
        assert!(allow.allows_scalar(Scalar::Operator, Need::Write));
        let deny = auth(text, DefaultPolicy::Deny);
        assert!(!deny.allows(Kind::Service, "db", Need::Read));
        assert!(!deny.allows(Kind::Node, "n1", Need::Read));
        assert!(!deny.allows_scalar(Scalar::Operator, Need::Read));
        assert!(!deny.allows_some(Kind::Service, Need::Read));
        let all = Authorizer::all();
        assert!(all.allows(Kind::Service, "web", Need::Write) && all.is_all());
    }

    #[test]
    fn scalar_rules_read_write_deny() {
        let a = auth(
            r#"operator = "read"
               keyring = "write"
               acl = "deny""#,
            DefaultPolicy::Allow,
        );
        assert!(a.allows_scalar(Scalar::Operator, Need::Read));
        assert!(!a.allows_scalar(Scalar::Operator, Need::Write));
        assert!(a.allows_scalar(Scalar::Keyring, Need::Write));
        assert!(!a.allows_scalar(Scalar::Acl, Need::Read));
        // No rule: the default.
        assert!(a.allows_scalar(Scalar::Mesh, Need::Write));
    }

    #[test]
    fn list_is_for_keys_only_and_grants_listing_not_values() {
        let a = auth(
            r#"key_prefix "app/" { policy = "list" }"#,
            DefaultPolicy::Deny,
        );
        assert!(a.allows(Kind::Key, "app/x", Need::List));
        assert!(a.allows(Kind::Key, "app/x", Need::Read));
        assert!(!a.allows(Kind::Key, "app/x", Need::Write));
        let e = Rules::parse(r#"service "web" { policy = "list" }"#).unwrap_err();
        assert!(e.to_string().contains("Invalid service policy"), "{e}");
    }

    #[test]
    fn policies_merge_with_consul_precedence() {
        let read = Rules::parse(r#"service_prefix "" { policy = "read" }"#).unwrap();
        let write = Rules::parse(r#"service_prefix "" { policy = "write" }"#).unwrap();
        let deny_web = Rules::parse(r#"service "web" { policy = "deny" }"#).unwrap();
        let web_write = Rules::parse(r#"service "web" { policy = "write" }"#).unwrap();
        let a = Authorizer::from_policies([&read, &write], DefaultPolicy::Deny);
        assert!(
            a.allows(Kind::Service, "any", Need::Write),
            "write beats read"
        );
        let b = Authorizer::from_policies([&web_write, &deny_web, &write], DefaultPolicy::Allow);
        assert!(
            !b.allows(Kind::Service, "web", Need::Read),
            "deny beats write"
        );
        assert!(b.allows(Kind::Service, "api", Need::Write));
    }

    #[test]
    fn json_and_hcl_are_the_same_rules() {
        let hcl = Rules::parse(
            r#"
            service "web" {
              policy = "write"
              intentions = "read"
            }
            service_prefix "" { policy = "read" }
            node_prefix "" { policy = "read" }
            agent "n1" { policy = "write" }
            operator = "read"
            "#,
        )
        .unwrap();
        let json = Rules::parse(
            r#"{"service": {"web": {"policy": "write", "intentions": "read"}},
                "service_prefix": {"": {"policy": "read"}},
                "node_prefix": {"": {"policy": "read"}},
                "agent": {"n1": {"policy": "write"}},
                "operator": "read"}"#,
        )
        .unwrap();
        assert_eq!(hcl, json);
        assert_eq!(Rules::parse("").unwrap(), Rules::default());
        assert_eq!(Rules::parse("  \n").unwrap(), Rules::default());
    }

    #[test]
    fn bad_rules_are_named() {
        for (text, says) in [
            (
                r#"servce "web" { policy = "read" }"#,
                "unknown rule \"servce\"",
            ),
            (
                r#"service "web" { policy = "rw" }"#,
                "Invalid service policy for \"web\"",
            ),
            (r#"service "web" { }"#, "missing policy"),
            (
                "service \"web\" {\n policy = \"read\"\n color = \"red\"\n}",
                "unknown field \"color\"",
            ),
            (r#"operator = "list""#, "Invalid operator policy"),
            (r#"operator = 3"#, "Invalid operator policy"),
            (
                r#"{"service": "web"}"#,
                "service rules must be labelled blocks",
            ),
            (
                r#"{"service": {"web": "read"}}"#,
                "the rule must be a block",
            ),
            (r#"service "web" { policy = "read" "#, "line 1, column"),
            ("[1]", "the rules must be an object"),
            (
                r#"service "web" { intentions = "write" }"#,
                "missing policy",
            ),
            (
                "node \"n\" {\n policy = \"read\"\n intentions = \"read\"\n}",
                "unknown field",
            ),
        ] {
            let e = Rules::parse(text).unwrap_err().to_string();
            assert!(e.starts_with("Failed to parse ACL rules: "), "{text}: {e}");
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn prefixes_respect_character_boundaries() {
        let a = auth(
            r#"service_prefix "é" { policy = "write" }"#,
            DefaultPolicy::Deny,
        );
        assert!(a.allows(Kind::Service, "éa", Need::Write));
        assert!(!a.allows(Kind::Service, "e", Need::Read));
        assert!(!a.allows(Kind::Service, "", Need::Read));
    }
}
