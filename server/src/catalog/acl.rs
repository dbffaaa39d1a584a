//! ACL tokens and policies, replicated through Raft with the catalog (Consul keeps them in
//! the same state store).
//!
//! The builtin `global-management` policy and `anonymous` token always exist: they are
//! synthesized when not stored, and stored only once changed (the anonymous token's
//! policies may change, the builtin policy's name and rules may not, neither can be deleted).
//! Policy rules are kept as text: the agent parses and checks them before proposing (the
//! rule language lives with the authorizer), the state machine checks everything that
//! depends on state (unique names and secrets, linked policies, the builtins).
//!
//! Invariants: a rejected command changes nothing; `by_secret` always indexes exactly the
//! stored tokens; a token's policy links name existing policies when it is written (a
//! policy deleted later is dropped from the links when tokens are read, as Consul does);
//! bootstrap happens at most once per cluster (`bootstrap_index`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Index;
use super::command::ApplyError;

/// ID of the builtin policy that grants everything.
pub const GLOBAL_MANAGEMENT_ID: &str = "00000000-0000-0000-0000-000000000001";
/// Name of that policy.
pub const GLOBAL_MANAGEMENT_NAME: &str = "global-management";
/// Accessor ID of the token used by requests without one.
pub const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";
/// Secret of that token.
pub const ANONYMOUS_SECRET: &str = "anonymous";
/// Longest policy name (Consul's `^[A-Za-z0-9\-_]{1,128}$`).
pub const MAX_POLICY_NAME: usize = 128;
/// Longest rules text, description or ID we store.
pub const MAX_RULES_LEN: usize = 64 * 1024;
/// Most policies linked from one token.
pub const MAX_TOKEN_POLICIES: usize = 64;

/// A policy (`/v1/acl/policy`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclPolicy {
    /// UUID, chosen by the proposer.
    #[serde(rename = "ID")]
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The rules, HCL or JSON, as given.
    pub rules: String,
    /// Datacenters where it applies (empty: all).
    pub datacenters: Vec<String>,
    /// Raft index of its creation.
    pub create_index: Index,
    /// Raft index of its last change.
    pub modify_index: Index,
}

/// A link from a token to a policy, by ID (the name is filled in when read).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PolicyLink {
    /// The policy's ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// The policy's name (ignored when written; current when read).
    pub name: String,
}

/// A service identity on a token: Consul's templated policy for one service (`service
/// "<name>"` and its sidecar writable, every service and node readable).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceIdentity {
    /// The service it may register.
    pub service_name: String,
    /// Datacenters where it applies (empty: all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
}

/// A node identity on a token: Consul's templated policy for one agent's node (`node
/// "<name>"` writable, every service readable), in one datacenter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeIdentity {
    /// The node it may register.
    pub node_name: String,
    /// The datacenter where it applies.
    pub datacenter: String,
}

impl ServiceIdentity {
    /// The policy it stands for (Consul's `ACLServiceIdentity.SyntheticPolicy`).
    pub fn policy(&self) -> AclPolicy {
        let n = &self.service_name;
        AclPolicy {
            name: format!("synthetic-policy-service-identity-{n}"),
            description: format!("synthetic policy of the service identity {n}"),
            rules: format!(
                "service \"{n}\" {{ policy = \"write\" }}\n\
                 service \"{n}-sidecar-proxy\" {{ policy = \"write\" }}\n\
                 service_prefix \"\" {{ policy = \"read\" }}\n\
                 node_prefix \"\" {{ policy = \"read\" }}\n"
            ),
            datacenters: self.datacenters.clone(),
            ..AclPolicy::default()
        }
    }
}

impl NodeIdentity {
    /// The policy it stands for (Consul's `ACLNodeIdentity.SyntheticPolicy`).
    pub fn policy(&self) -> AclPolicy {
        let n = &self.node_name;
        AclPolicy {
            name: format!("synthetic-policy-node-identity-{n}"),
            description: format!("synthetic policy of the node identity {n}"),
            rules: format!(
                "node \"{n}\" {{ policy = \"write\" }}\n\
                 service_prefix \"\" {{ policy = \"read\" }}\n"
            ),
            datacenters: vec![self.datacenter.clone()],
            ..AclPolicy::default()
        }
    }
}

/// A token (`/v1/acl/token`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclToken {
    /// Public UUID that names the token.
    #[serde(rename = "AccessorID")]
    pub accessor_id: String,
    /// The bearer secret (a UUID, or `anonymous`).
    #[serde(rename = "SecretID")]
    pub secret_id: String,
    /// Free text.
    pub description: String,
    /// Its policies.
    pub policies: Vec<PolicyLink>,
    /// Its service identities (Consul omits the key when there are none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub service_identities: Vec<ServiceIdentity>,
    /// Its node identities (Consul omits the key when there are none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub node_identities: Vec<NodeIdentity>,
    /// Local to this datacenter (kept for Consul's shape; we have one datacenter).
    pub local: bool,
    /// RFC 3339 creation time, chosen by the proposer.
    pub create_time: String,
    /// Raft index of its creation.
    pub create_index: Index,
    /// Raft index of its last change.
    pub modify_index: Index,
}

/// What an agent needs to decide a token's requests: its policies' rules, or that it may
/// do everything. Servers answer it from their state; client agents ask a server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedToken {
    /// The token's accessor ID.
    pub accessor_id: String,
    /// Linked to `global-management`: every request is allowed.
    pub management: bool,
    /// The linked policies that exist, with their rules, then the synthetic policies of its
    /// service and node identities (empty for management tokens).
    pub policies: Vec<AclPolicy>,
}

/// The ACL part of the replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AclState {
    policies: BTreeMap<String, AclPolicy>,
    tokens: BTreeMap<String, AclToken>,
    /// Secret → accessor; rebuilt after decoding.
    #[serde(skip)]
    by_secret: BTreeMap<String, String>,
    /// Where `/v1/acl/bootstrap` (or the initial management token) happened.
    bootstrap_index: Option<Index>,
    /// The index of the last ACL change.
    index: Index,
}

/// A change to the ACL state (the `acl-*` Raft commands).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AclCommand {
    /// Creates the first management token; refused once done.
    Bootstrap(AclToken),
    /// Creates or updates a policy (by ID).
    PolicySet(AclPolicy),
    /// Deletes a policy.
    PolicyDelete(String),
    /// Creates or updates a token (by accessor ID).
    TokenSet(AclToken),
    /// Deletes a token.
    TokenDelete(String),
}

impl AclCommand {
    /// The wire `op`.
    pub(crate) fn op(&self) -> &'static str {
        match self {
            AclCommand::Bootstrap(_) => "acl-bootstrap",
            AclCommand::PolicySet(_) => "acl-policy-set",
            AclCommand::PolicyDelete(_) => "acl-policy-delete",
            AclCommand::TokenSet(_) => "acl-token-set",
            AclCommand::TokenDelete(_) => "acl-token-delete",
        }
    }

    /// Checks what needs no state: lengths, names, IDs.
    pub(crate) fn validate(&self) -> Result<(), String> {
        match self {
            AclCommand::Bootstrap(t) | AclCommand::TokenSet(t) => validate_token(t),
            AclCommand::PolicySet(p) => validate_policy(p),
            AclCommand::PolicyDelete(id) | AclCommand::TokenDelete(id) => {
                if id.is_empty() || id.len() > 256 {
                    return Err("Must specify the ID to delete".into());
                }
                Ok(())
            }
        }
    }
}

fn validate_policy(p: &AclPolicy) -> Result<(), String> {
    if p.id.is_empty() || p.id.len() > 64 {
        return Err("Invalid Policy: missing or overlong ID".into());
    }
    let name_ok = !p.name.is_empty()
        && p.name.len() <= MAX_POLICY_NAME
        && p.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !name_ok {
        return Err(format!("Invalid Policy: invalid Name {:?}", p.name));
    }
    if p.rules.len() > MAX_RULES_LEN || p.description.len() > MAX_RULES_LEN {
        return Err(format!(
            "Invalid Policy: rules or description over {MAX_RULES_LEN} bytes"
        ));
    }
    Ok(())
}

fn validate_token(t: &AclToken) -> Result<(), String> {
    for (what, v) in [("AccessorID", &t.accessor_id), ("SecretID", &t.secret_id)] {
        if v.is_empty() || v.len() > 128 {
            return Err(format!("Invalid Token: missing or overlong {what}"));
        }
    }
    if t.description.len() > MAX_RULES_LEN {
        return Err("Invalid Token: description too long".into());
    }
    if t.policies.len() > MAX_TOKEN_POLICIES {
        return Err(format!(
            "Invalid Token: more than {MAX_TOKEN_POLICIES} policies"
        ));
    }
    if t.policies.iter().any(|l| l.id.is_empty()) {
        return Err("Invalid Token: a policy link without an ID".into());
    }
    if t.service_identities.len() + t.node_identities.len() > MAX_TOKEN_POLICIES {
        return Err(format!(
            "Invalid Token: more than {MAX_TOKEN_POLICIES} service and node identities"
        ));
    }
    // The names go into the synthetic policies' rules: only the characters Consul allows.
    if let Some(s) = t
        .service_identities
        .iter()
        .find(|s| !valid_service_identity_name(&s.service_name))
    {
        return Err(format!(
            "Invalid Token: service identity {:?} has an invalid name",
            s.service_name
        ));
    }
    if let Some(n) = t
        .node_identities
        .iter()
        .find(|n| !valid_node_identity_name(&n.node_name) || n.datacenter.is_empty())
    {
        return Err(format!(
            "Invalid Token: node identity {:?} has an invalid name or no datacenter",
            n.node_name
        ));
    }
    Ok(())
}

/// Consul's service identity names: lowercase letters, digits, `-` and `_`, starting and
/// ending with a letter or digit, at most 256 bytes.
pub fn valid_service_identity_name(n: &str) -> bool {
    let edge = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    n.len() <= 256
        && n.starts_with(edge)
        && n.ends_with(edge)
        && n.chars().all(|c| edge(c) || c == '-' || c == '_')
}

/// Consul's node identity names: letters, digits, `-` and `_`, 1 to 256 bytes.
pub fn valid_node_identity_name(n: &str) -> bool {
    (1..=256).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The builtin policy as it is until stored.
fn builtin_policy() -> AclPolicy {
    AclPolicy {
        id: GLOBAL_MANAGEMENT_ID.into(),
        name: GLOBAL_MANAGEMENT_NAME.into(),
        description: "Builtin Policy that grants unlimited access".into(),
        rules: String::new(),
        ..AclPolicy::default()
    }
}

/// The anonymous token as it is until stored.
fn builtin_anonymous() -> AclToken {
    AclToken {
        accessor_id: ANONYMOUS_ACCESSOR.into(),
        secret_id: ANONYMOUS_SECRET.into(),
        description: "Anonymous Token".into(),
        ..AclToken::default()
    }
}

impl AclState {
    /// Nothing stored (the builtins only).
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty() && self.tokens.is_empty() && self.bootstrap_index.is_none()
    }

    /// The index of the last ACL change (0: none).
    pub fn index(&self) -> Index {
        self.index
    }

    /// Where the cluster was bootstrapped, if it was.
    pub fn bootstrap_index(&self) -> Option<Index> {
        self.bootstrap_index
    }

    /// A policy by ID, the builtin included.
    pub fn policy(&self, id: &str) -> Option<AclPolicy> {
        self.policies
            .get(id)
            .cloned()
            .or_else(|| (id == GLOBAL_MANAGEMENT_ID).then(builtin_policy))
    }

    /// A policy by name.
    pub fn policy_by_name(&self, name: &str) -> Option<AclPolicy> {
        self.policies().into_iter().find(|p| p.name == name)
    }

    /// Every policy, the builtin included, by ID.
    pub fn policies(&self) -> Vec<AclPolicy> {
        let mut all: Vec<AclPolicy> = self.policies.values().cloned().collect();
        if !self.policies.contains_key(GLOBAL_MANAGEMENT_ID) {
            all.push(builtin_policy());
            all.sort_by(|a, b| a.id.cmp(&b.id));
        }
        all
    }

    /// A token by accessor ID, with current policy names and without links to deleted
    /// policies.
    pub fn token(&self, accessor: &str) -> Option<AclToken> {
        let t = self
            .tokens
            .get(accessor)
            .cloned()
            .or_else(|| (accessor == ANONYMOUS_ACCESSOR).then(builtin_anonymous))?;
        Some(self.resolve_links(t))
    }

    /// A token by secret (what requests carry).
    pub fn token_by_secret(&self, secret: &str) -> Option<AclToken> {
        match self.by_secret.get(secret) {
            Some(accessor) => self.token(accessor),
            None if secret == ANONYMOUS_SECRET => self.token(ANONYMOUS_ACCESSOR),
            None => None,
        }
    }

    /// The token whose secret is `secret`, ready for an authorizer (`None`: no such token,
    /// Consul's `ACL not found`).
    pub fn resolve(&self, secret: &str) -> Option<ResolvedToken> {
        let token = self.token_by_secret(secret)?;
        let management = token.policies.iter().any(|l| l.id == GLOBAL_MANAGEMENT_ID);
        let policies = if management {
            Vec::new()
        } else {
            let linked = token.policies.iter().filter_map(|l| self.policy(&l.id));
            let services = token.service_identities.iter().map(ServiceIdentity::policy);
            let nodes = token.node_identities.iter().map(NodeIdentity::policy);
            linked.chain(services).chain(nodes).collect()
        };
        Some(ResolvedToken {
            accessor_id: token.accessor_id,
            management,
            policies,
        })
    }

    /// Every token, the anonymous one included, by accessor ID.
    pub fn tokens(&self) -> Vec<AclToken> {
        let mut all: Vec<AclToken> = self.tokens.keys().filter_map(|a| self.token(a)).collect();
        if !self.tokens.contains_key(ANONYMOUS_ACCESSOR) {
            all.push(self.resolve_links(builtin_anonymous()));
            all.sort_by(|a, b| a.accessor_id.cmp(&b.accessor_id));
        }
        all
    }

    fn resolve_links(&self, mut t: AclToken) -> AclToken {
        t.policies = t
            .policies
            .iter()
            .filter_map(|l| {
                self.policy(&l.id).map(|p| PolicyLink {
                    id: p.id,
                    name: p.name,
                })
            })
            .collect();
        t
    }

    /// Rebuilds the secret index (after decoding a snapshot).
    pub(crate) fn reindex(&mut self) {
        self.by_secret = self
            .tokens
            .values()
            .map(|t| (t.secret_id.clone(), t.accessor_id.clone()))
            .collect();
    }

    /// Applies one command at `index`; on error nothing changed.
    pub(crate) fn apply(&mut self, index: Index, command: &AclCommand) -> Result<(), ApplyError> {
        let invalid = |m: String| Err(ApplyError::Invalid(m));
        match command {
            AclCommand::Bootstrap(token) => {
                if let Some(at) = self.bootstrap_index {
                    return invalid(format!(
                        "ACL bootstrap no longer allowed (reset index: {at})"
                    ));
                }
                let mut token = token.clone();
                token.policies = vec![PolicyLink {
                    id: GLOBAL_MANAGEMENT_ID.into(),
                    name: GLOBAL_MANAGEMENT_NAME.into(),
                }];
                self.check_token(&token)?;
                self.put_token(index, token);
                self.bootstrap_index = Some(index);
            }
            AclCommand::PolicySet(policy) => {
                if let Some(other) = self.policy_by_name(&policy.name)
                    && other.id != policy.id
                {
                    return invalid(format!(
                        "Invalid Policy: A Policy with Name {:?} already exists",
                        policy.name
                    ));
                }
                let existing = self.policy(&policy.id);
                if policy.id == GLOBAL_MANAGEMENT_ID {
                    if policy.name != GLOBAL_MANAGEMENT_NAME {
                        return invalid(
                            "Changing the Name for the builtin global-management policy is not \
                             permitted"
                                .into(),
                        );
                    }
                    if !policy.rules.is_empty() {
                        return invalid(
                            "Changing the Rules for the builtin global-management policy is not \
                             permitted"
                                .into(),
                        );
                    }
                }
                let mut policy = policy.clone();
                policy.create_index = existing.as_ref().map_or(index, |p| {
                    if p.create_index == 0 {
                        index
                    } else {
                        p.create_index
                    }
                });
                policy.modify_index = index;
                self.policies.insert(policy.id.clone(), policy);
            }
            AclCommand::PolicyDelete(id) => {
                if id == GLOBAL_MANAGEMENT_ID {
                    return invalid(
                        "Deletion of the builtin global-management policy is not permitted".into(),
                    );
                }
                if self.policies.remove(id).is_none() {
                    return invalid(format!("Cannot find policy {id:?} to delete"));
                }
            }
            AclCommand::TokenSet(token) => {
                let mut token = token.clone();
                if let Some(old) = self.token(&token.accessor_id) {
                    if old.secret_id != token.secret_id {
                        return invalid("Cannot change a token's SecretID".into());
                    }
                    token.create_time = old.create_time;
                    token.create_index = old.create_index;
                }
                self.check_token(&token)?;
                self.put_token(index, token);
            }
            AclCommand::TokenDelete(accessor) => {
                if accessor == ANONYMOUS_ACCESSOR {
                    return invalid(
                        "Deletion of the builtin anonymous token is not permitted".into(),
                    );
                }
                let Some(t) = self.tokens.remove(accessor) else {
                    return invalid(format!("Cannot find token {accessor:?} to delete"));
                };
                self.by_secret.remove(&t.secret_id);
            }
        }
        self.index = index;
        Ok(())
    }

    /// State checks of a token about to be stored: its secret is its own, its policies exist.
    fn check_token(&self, token: &AclToken) -> Result<(), ApplyError> {
        let secret_owner = self
            .by_secret
            .get(&token.secret_id)
            .map(String::as_str)
            .or((token.secret_id == ANONYMOUS_SECRET).then_some(ANONYMOUS_ACCESSOR));
        if secret_owner.is_some_and(|owner| owner != token.accessor_id) {
            return Err(ApplyError::Invalid(
                "Invalid Token: SecretID is already in use".into(),
            ));
        }
        if token.accessor_id == ANONYMOUS_ACCESSOR && token.secret_id != ANONYMOUS_SECRET {
            return Err(ApplyError::Invalid(
                "Cannot change a token's SecretID".into(),
            ));
        }
        if let Some(missing) = token.policies.iter().find(|l| self.policy(&l.id).is_none()) {
            return Err(ApplyError::Invalid(format!(
                "cannot find policy {:?}",
                missing.id
            )));
        }
        Ok(())
    }

    fn put_token(&mut self, index: Index, mut token: AclToken) {
        if token.create_index == 0 {
            token.create_index = index;
        }
        token.modify_index = index;
        token.policies.iter_mut().for_each(|l| l.name.clear());
        self.by_secret
            .insert(token.secret_id.clone(), token.accessor_id.clone());
        self.tokens.insert(token.accessor_id.clone(), token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(accessor: &str, secret: &str, policies: &[&str]) -> AclToken {
        AclToken {
            accessor_id: accessor.into(),
            secret_id: secret.into(),
            policies: policies
                .iter()
                .map(|id| PolicyLink {
                    id: (*id).into(),
                    name: String::new(),
                })
                .collect(),
            create_time: "2026-11-22T00:00:00Z".into(),
            ..AclToken::default()
        }
    }

    fn policy(id: &str, name: &str) -> AclPolicy {
        AclPolicy {
            id: id.into(),
            name: name.into(),
            rules: r#"service_prefix "" { policy = "read" }"#.into(),
            ..AclPolicy::default()
        }
    }

    #[test]
    fn builtins_exist_until_stored_and_cannot_be_deleted() {
        let mut s = AclState::default();
        assert_eq!(s.policies().len(), 1);
        assert_eq!(
            s.policy(GLOBAL_MANAGEMENT_ID).unwrap().name,
            "global-management"
        );
        let anon = s.token_by_secret(ANONYMOUS_SECRET).unwrap();
        assert_eq!(anon.accessor_id, ANONYMOUS_ACCESSOR);
        assert!(anon.policies.is_empty());
        for cmd in [
            AclCommand::PolicyDelete(GLOBAL_MANAGEMENT_ID.into()),
            AclCommand::TokenDelete(ANONYMOUS_ACCESSOR.into()),
        ] {
            let e = s.apply(5, &cmd).unwrap_err().to_string();
            assert!(e.contains("is not permitted"), "{e}");
        }
        // The anonymous token's policies may change; its secret may not.
        s.apply(6, &AclCommand::PolicySet(policy("p1", "readers")))
            .unwrap();
        s.apply(
            7,
            &AclCommand::TokenSet(token(ANONYMOUS_ACCESSOR, ANONYMOUS_SECRET, &["p1"])),
        )
        .unwrap();
        assert_eq!(
            s.token_by_secret("anonymous").unwrap().policies[0].name,
            "readers"
        );
        let e = s
            .apply(
                8,
                &AclCommand::TokenSet(token(ANONYMOUS_ACCESSOR, "other", &[])),
            )
            .unwrap_err();
        assert!(e.to_string().contains("SecretID"), "{e}");
        let mut renamed = builtin_policy();
        renamed.name = "mine".into();
        assert!(s.apply(9, &AclCommand::PolicySet(renamed)).is_err());
        let mut ruled = builtin_policy();
        ruled.rules = "operator = \"read\"".into();
        assert!(s.apply(9, &AclCommand::PolicySet(ruled)).is_err());
    }

    #[test]
    fn identities_resolve_to_synthetic_policies_and_bad_names_are_refused() {
        let mut s = AclState::default();
        s.apply(2, &AclCommand::PolicySet(policy("p1", "readers")))
            .unwrap();
        let mut t = token("a1", "s1", &["p1"]);
        t.service_identities = vec![ServiceIdentity {
            service_name: "web".into(),
            datacenters: vec!["dc2".into()],
        }];
        t.node_identities = vec![NodeIdentity {
            node_name: "db-1".into(),
            datacenter: "dc1".into(),
        }];
        s.apply(3, &AclCommand::TokenSet(t.clone())).unwrap();
        let r = s.resolve("s1").unwrap();
        let names: Vec<&str> = r.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "readers",
                "synthetic-policy-service-identity-web",
                "synthetic-policy-node-identity-db-1"
            ]
        );
        assert!(
            r.policies[1]
                .rules
                .contains(r#"service "web-sidecar-proxy" { policy = "write" }"#)
        );
        assert_eq!(r.policies[1].datacenters, ["dc2"]);
        assert!(
            r.policies[2]
                .rules
                .contains(r#"node "db-1" { policy = "write" }"#)
        );
        assert_eq!(r.policies[2].datacenters, ["dc1"]);
        // The token keeps them; its JSON omits empty lists as Consul does.
        assert_eq!(
            s.token("a1").unwrap().service_identities,
            t.service_identities
        );
        let plain = serde_json::to_value(token("a2", "s2", &[])).unwrap();
        assert!(plain.get("ServiceIdentities").is_none() && plain.get("NodeIdentities").is_none());
        // Names go into rules: anything outside Consul's characters is refused.
        for bad in ["Web", "web\" { policy = \"write\" } x", "-web", ""] {
            let mut t = token("a3", "s3", &[]);
            t.service_identities = vec![ServiceIdentity {
                service_name: bad.into(),
                datacenters: vec![],
            }];
            let e = AclCommand::TokenSet(t).validate().unwrap_err();
            assert!(e.contains("invalid name"), "{bad:?}: {e}");
        }
        let mut t = token("a3", "s3", &[]);
        t.node_identities = vec![NodeIdentity {
            node_name: "n1".into(),
            datacenter: String::new(),
        }];
        assert!(AclCommand::TokenSet(t).validate().is_err(), "no datacenter");
        // Valid identities pass.
        assert_eq!(
            AclCommand::TokenSet(s.token("a1").unwrap()).validate(),
            Ok(())
        );
    }

    #[test]
    fn bootstrap_once_with_global_management() {
        let mut s = AclState::default();
        s.apply(10, &AclCommand::Bootstrap(token("a1", "s1", &[])))
            .unwrap();
        let t = s.token_by_secret("s1").unwrap();
        assert_eq!(t.policies[0].id, GLOBAL_MANAGEMENT_ID);
        assert_eq!((t.create_index, t.modify_index), (10, 10));
        assert_eq!(s.bootstrap_index(), Some(10));
        let e = s
            .apply(11, &AclCommand::Bootstrap(token("a2", "s2", &[])))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "ACL bootstrap no longer allowed (reset index: 10)"
        );
        assert!(s.token("a2").is_none(), "nothing changed");
        assert_eq!(s.index(), 10);
    }

    #[test]
    fn tokens_need_their_own_secret_and_existing_policies() {
        let mut s = AclState::default();
        s.apply(1, &AclCommand::PolicySet(policy("p1", "readers")))
            .unwrap();
        s.apply(2, &AclCommand::TokenSet(token("a1", "s1", &["p1"])))
            .unwrap();
        let e = s
            .apply(3, &AclCommand::TokenSet(token("a2", "s1", &[])))
            .unwrap_err();
        assert_eq!(e.to_string(), "Invalid Token: SecretID is already in use");
        let e = s
            .apply(3, &AclCommand::TokenSet(token("a2", "s2", &["nope"])))
            .unwrap_err();
        assert_eq!(e.to_string(), "cannot find policy \"nope\"");
        let e = s
            .apply(3, &AclCommand::TokenSet(token("a1", "other", &[])))
            .unwrap_err();
        assert_eq!(e.to_string(), "Cannot change a token's SecretID");
        // An update keeps the creation index and time.
        let mut update = token("a1", "s1", &[]);
        update.description = "changed".into();
        update.create_time = "later".into();
        s.apply(4, &AclCommand::TokenSet(update)).unwrap();
        let t = s.token("a1").unwrap();
        assert_eq!((t.create_index, t.modify_index), (2, 4));
        assert_eq!(t.create_time, "2026-11-22T00:00:00Z");
        // Deleting a policy drops it from tokens when read.
        s.apply(5, &AclCommand::TokenSet(token("a1", "s1", &["p1"])))
            .unwrap();
        s.apply(6, &AclCommand::PolicyDelete("p1".into())).unwrap();
        assert!(s.token("a1").unwrap().policies.is_empty());
        s.apply(7, &AclCommand::TokenDelete("a1".into())).unwrap();
        assert!(s.token_by_secret("s1").is_none());
        assert!(s.apply(8, &AclCommand::TokenDelete("a1".into())).is_err());
    }

    #[test]
    fn policy_names_are_unique_and_valid() {
        let mut s = AclState::default();
        s.apply(1, &AclCommand::PolicySet(policy("p1", "readers")))
            .unwrap();
        let e = s
            .apply(2, &AclCommand::PolicySet(policy("p2", "readers")))
            .unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert!(
            s.apply(
                2,
                &AclCommand::PolicySet(policy("p2", GLOBAL_MANAGEMENT_NAME))
            )
            .is_err()
        );
        // Renaming keeps the creation index.
        s.apply(3, &AclCommand::PolicySet(policy("p1", "reader-2")))
            .unwrap();
        let p = s.policy("p1").unwrap();
        assert_eq!(
            (p.name.as_str(), p.create_index, p.modify_index),
            ("reader-2", 1, 3)
        );
        for bad in ["", "with space", "ünï", &"x".repeat(129)] {
            let e = AclCommand::PolicySet(policy("p9", bad))
                .validate()
                .unwrap_err();
            assert!(e.contains("invalid Name"), "{bad}: {e}");
        }
        assert!(
            AclCommand::TokenSet(token("", "s", &[]))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn secrets_resolve_to_rules_or_management() {
        let mut s = AclState::default();
        s.apply(1, &AclCommand::PolicySet(policy("p1", "readers")))
            .unwrap();
        s.apply(2, &AclCommand::TokenSet(token("a1", "s1", &["p1"])))
            .unwrap();
        s.apply(3, &AclCommand::Bootstrap(token("a2", "s2", &[])))
            .unwrap();
        let r = s.resolve("s1").unwrap();
        assert_eq!((r.accessor_id.as_str(), r.management), ("a1", false));
        assert_eq!(r.policies.len(), 1);
        assert!(r.policies[0].rules.contains("service_prefix"));
        let m = s.resolve("s2").unwrap();
        assert!(m.management && m.policies.is_empty());
        let anon = s.resolve(ANONYMOUS_SECRET).unwrap();
        assert!(!anon.management && anon.policies.is_empty());
        assert!(s.resolve("nobody").is_none());
    }

    #[test]
    fn the_state_survives_encoding() {
        let mut s = AclState::default();
        s.apply(1, &AclCommand::PolicySet(policy("p1", "readers")))
            .unwrap();
        s.apply(2, &AclCommand::Bootstrap(token("a1", "s1", &[])))
            .unwrap();
        let mut back: AclState = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert!(
            back.token_by_secret("s1").is_none(),
            "index rebuilt on demand only"
        );
        back.reindex();
        assert_eq!(back, s);
        assert_eq!(back.token_by_secret("s1").unwrap().accessor_id, "a1");
    }
}
