//! Versioned catalog write commands (the Raft log payload), their validation and their results.
//!
//! Wire form of a command: `{"v":1,"op":"register","args":{...Consul RegisterRequest...}}`.
//! Invariants:
//! - decoding a command never fails because of its content: a newer version, an unknown `op` or
//!   arguments this build cannot read become [`Command::Unsupported`], which keeps the raw JSON
//!   (so a node re-serializing it for replication sends it unchanged) and applies as an error
//!   *result*, never a storage error or a panic;
//! - unknown fields inside `args` are ignored (forward compatibility);
//! - [`Command::validate`] is pure and runs before proposing; the state machine runs
//!   [`Command::validate_against`] again before applying, so a bad entry never half-applies.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Catalog;
use super::acl::{AclCommand, AclPolicy, AclToken};
use super::model::{HealthCheck, NodeService, Weights};

/// The newest command version this build writes and applies.
pub const COMMAND_VERSION: u64 = 1;

/// Longest node name, service name/ID, check name/ID or address, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Most metadata pairs on a node or service (Consul's limit).
pub const MAX_META_KEYS: usize = 64;
/// Longest metadata key (Consul's limit).
pub const MAX_META_KEY_LEN: usize = 128;
/// Longest metadata value (Consul's limit).
pub const MAX_META_VALUE_LEN: usize = 512;
/// Most tags on one service.
pub const MAX_TAGS: usize = 128;
/// Longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 256;
/// Most tagged addresses on a node or service.
pub const MAX_TAGGED_ADDRESSES: usize = 32;
/// Most checks in one registration.
pub const MAX_CHECKS: usize = 64;
/// Longest check output or notes, in bytes.
pub const MAX_OUTPUT_LEN: usize = 64 * 1024;
/// Largest encoded command, in bytes (bounds everything the per-field limits do not, such as
/// check definitions).
pub const MAX_COMMAND_BYTES: usize = 1024 * 1024;

/// Node meta keys with the reserved `consul-` prefix that Consul agents set themselves.
const RESERVED_NODE_META_KEYS: [&str; 2] = ["consul-network-segment", "consul-version"];

/// A catalog write, as proposed to Raft.
// Commands are built once per write and moved into the log; boxing the registration would
// only make every construction noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Upsert a node, optionally one service and some checks (Consul's `Catalog.Register`).
    Register(Registration),
    /// Remove a node, one service or one check (Consul's `Catalog.Deregister`).
    Deregister(Deregistration),
    /// A change to ACL tokens or policies.
    Acl(AclCommand),
    /// Several independent commands in one log entry, applied in order, each with its own
    /// result (a rejected one changes nothing and does not stop the others). The leader
    /// groups concurrent writes this way: one entry, one fsync, for all of them.
    Batch(Vec<Command>),
    /// A command this build cannot interpret; applying it yields an error result.
    Unsupported(UnsupportedCommand),
}

/// A command kept verbatim because this build cannot interpret it.
#[derive(Clone, Debug, PartialEq)]
pub struct UnsupportedCommand {
    /// The command's version field (0 if missing).
    pub version: u64,
    /// The command's `op` field (empty if missing).
    pub op: String,
    /// Why it could not be read.
    pub reason: String,
    raw: serde_json::Value,
}

/// A registration request (Consul's `RegisterRequest`; also the `/v1/catalog/register` body).
///
/// Decoding accepts Consul's single `Check` next to `Checks` and normalizes it (see
/// [`Registration::normalize`]); encoding writes `Checks` only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", from = "RegistrationRepr")]
pub struct Registration {
    /// Node UUID (may be empty).
    #[serde(rename = "ID")]
    pub id: String,
    /// Node name (required).
    #[serde(rename = "Node")]
    pub node: String,
    /// Node address (required unless `skip_node_update` and the node exists).
    pub address: String,
    /// Datacenter; the server fills in its own when empty.
    pub datacenter: String,
    /// Node tagged addresses.
    pub tagged_addresses: BTreeMap<String, String>,
    /// Node metadata.
    pub node_meta: BTreeMap<String, String>,
    /// Service to upsert on the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<NodeService>,
    /// Checks to upsert on the node.
    pub checks: Vec<HealthCheck>,
    /// Leave an existing node record untouched (service/check updates only).
    pub skip_node_update: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RegistrationRepr {
    #[serde(rename = "ID", default)]
    id: Option<String>,
    #[serde(rename = "Node", default)]
    node: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    datacenter: Option<String>,
    #[serde(default)]
    tagged_addresses: Option<BTreeMap<String, String>>,
    #[serde(default)]
    node_meta: Option<BTreeMap<String, String>>,
    #[serde(default)]
    service: Option<NodeService>,
    #[serde(default)]
    check: Option<HealthCheck>,
    #[serde(default)]
    checks: Option<Vec<HealthCheck>>,
    #[serde(default)]
    skip_node_update: bool,
}

impl From<RegistrationRepr> for Registration {
    fn from(r: RegistrationRepr) -> Self {
        let mut checks = r.checks.unwrap_or_default();
        checks.extend(r.check);
        let mut reg = Registration {
            id: r.id.unwrap_or_default(),
            node: r.node.unwrap_or_default(),
            address: r.address.unwrap_or_default(),
            datacenter: r.datacenter.unwrap_or_default(),
            tagged_addresses: r.tagged_addresses.unwrap_or_default(),
            node_meta: r.node_meta.unwrap_or_default(),
            service: r.service,
            checks,
            skip_node_update: r.skip_node_update,
        };
        reg.normalize();
        reg
    }
}

impl Registration {
    /// Fills in Consul's defaults, idempotently: service ID from the service name; each check's
    /// node from the request, CheckID from its name, and `Type`/`Interval`/`Timeout` from its
    /// definition.
    pub fn normalize(&mut self) {
        if let Some(svc) = &mut self.service
            && svc.id.is_empty()
        {
            svc.id = svc.service.clone();
        }
        for check in &mut self.checks {
            if check.node.is_empty() {
                check.node = self.node.clone();
            }
            if check.check_id.is_empty() {
                check.check_id = check.name.clone();
            }
            if check.check_type.is_empty() {
                check.check_type = check.definition.implied_type().to_string();
            }
            if check.interval.is_empty() {
                check.interval = check.definition.interval.clone();
            }
            if check.timeout.is_empty() {
                check.timeout = check.definition.timeout.clone();
            }
        }
    }
}

/// A deregistration request: the whole node when neither `service_id` nor `check_id` is set,
/// else that service (with its checks), else that check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Deregistration {
    /// Node name (required).
    #[serde(rename = "Node", default)]
    pub node: String,
    /// Datacenter (informational).
    #[serde(default)]
    pub datacenter: String,
    /// Service to remove.
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    /// Check to remove.
    #[serde(rename = "CheckID", default)]
    pub check_id: String,
}

/// Why a command was refused before it was proposed (HTTP 400 material). Texts follow Consul's
/// where Consul has one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// Empty node name.
    #[error("Must provide node")]
    MissingNode,
    /// An ACL token or policy that cannot be stored (Consul's texts).
    #[error("{0}")]
    Acl(String),
    /// Empty address on a registration that updates the node.
    #[error("Must provide address if SkipNodeUpdate is not set")]
    MissingAddress,
    /// `SkipNodeUpdate` for a node that does not exist, without an address to create it.
    #[error("Node {0:?} is not registered and the request has no address to register it")]
    UnknownNodeWithoutAddress(String),
    /// Node ID that is not a UUID.
    #[error("Bad node ID: {0}")]
    BadNodeId(String),
    /// Service without a name.
    #[error("Must provide service name with ID")]
    MissingServiceName,
    /// Service address `0.0.0.0` or `::`.
    #[error("Invalid service address")]
    InvalidServiceAddress,
    /// Check without ID or name.
    #[error("Must provide check ID or name")]
    MissingCheckId,
    /// Check registered for another node than the request's.
    #[error("check node {check:?} does not match node {node:?}")]
    CheckNodeMismatch {
        /// The check's node.
        check: String,
        /// The request's node.
        node: String,
    },
    /// Check bound to a service that is neither in the request nor in the catalog.
    #[error(
        "Missing service registration: check {check:?} refers to service ID {service:?}, which is not registered on node {node:?}"
    )]
    UnknownService {
        /// Node name.
        node: String,
        /// Check ID.
        check: String,
        /// The missing service ID.
        service: String,
    },
    /// Bad metadata (Consul's message).
    #[error("{0}")]
    Meta(String),
    /// Bad weights (Consul's message).
    #[error("{0}")]
    Weights(&'static str),
    /// A field over its size limit.
    #[error("{what} is too long ({len} bytes, limit {max})")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A list or map over its count limit.
    #[error("too many {what} ({count}, limit {max})")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// Its length.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A command this build cannot interpret.
    #[error("{0}")]
    Unsupported(String),
    /// A validation failure reported by another server (text only).
    #[error("{0}")]
    Remote(String),
}

/// The outcome of applying one log entry to the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Applied (possibly as a no-op when nothing changed).
    Ok,
    /// Refused as a whole; the catalog is unchanged.
    Rejected(ApplyError),
    /// The results of a [`Command::Batch`], in its order.
    Batch(Vec<CommandResult>),
}

impl CommandResult {
    /// Whether the command was applied (every command of a batch).
    pub fn is_ok(&self) -> bool {
        match self {
            CommandResult::Ok => true,
            CommandResult::Rejected(_) => false,
            CommandResult::Batch(results) => results.iter().all(CommandResult::is_ok),
        }
    }

    /// `Ok(())` or the (first) rejection.
    pub fn into_result(self) -> Result<(), ApplyError> {
        match self {
            CommandResult::Ok => Ok(()),
            CommandResult::Rejected(e) => Err(e),
            CommandResult::Batch(results) => {
                results.into_iter().try_for_each(CommandResult::into_result)
            }
        }
    }
}

/// Why the state machine refused a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The command failed validation against the state at apply time.
    #[error("{0}")]
    Invalid(String),
    /// The node name belongs to another live node with a different ID.
    #[error("Node name {name} is reserved by node {owner_id} with name {owner} ({address})")]
    NodeNameReserved {
        /// Requested name.
        name: String,
        /// ID of the node holding the name.
        owner_id: String,
        /// Name of the node holding the name.
        owner: String,
        /// Its address.
        address: String,
    },
    /// The command comes from a newer build.
    #[error("{0}")]
    Unsupported(String),
}

impl ApplyError {
    /// The command itself was invalid (HTTP 400 material).
    pub fn is_invalid(&self) -> bool {
        matches!(self, ApplyError::Invalid(_))
    }

    /// The command needs a newer build.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, ApplyError::Unsupported(_))
    }
}

impl Command {
    /// Applies Consul's request defaults (see [`Registration::normalize`]).
    pub fn normalize(&mut self) {
        match self {
            Command::Register(r) => r.normalize(),
            Command::Batch(commands) => commands.iter_mut().for_each(Command::normalize),
            Command::Deregister(_) | Command::Unsupported(_) | Command::Acl(_) => {}
        }
    }

    /// The command as a replica applies it: ACL changes removed (from batches too), since
    /// replicas hold no ACL state. `None` when nothing is left.
    pub fn without_acl(self) -> Option<Command> {
        match self {
            Command::Acl(_) => None,
            Command::Batch(commands) => {
                let kept: Vec<Command> = commands
                    .into_iter()
                    .filter_map(Command::without_acl)
                    .collect();
                (!kept.is_empty()).then_some(Command::Batch(kept))
            }
            other => Some(other),
        }
    }

    /// Checks everything that does not depend on catalog state.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.validate_sized().map(|_| ())
    }

    /// [`Command::validate`], returning the encoded size. A batch is checked command by
    /// command (each within [`MAX_COMMAND_BYTES`]); batches do not nest.
    pub fn validate_sized(&self) -> Result<usize, ValidationError> {
        match self {
            Command::Register(r) => validate_registration(r)?,
            Command::Deregister(d) => validate_deregistration(d)?,
            Command::Acl(a) => a.validate().map_err(ValidationError::Acl)?,
            Command::Unsupported(u) => return Err(ValidationError::Unsupported(u.describe())),
            Command::Batch(commands) => {
                let mut total = 0;
                for c in commands {
                    if matches!(c, Command::Batch(_)) {
                        return Err(ValidationError::Unsupported(
                            "a batch inside a batch".to_owned(),
                        ));
                    }
                    total += c.validate_sized()?;
                }
                return Ok(total);
            }
        }
        let len = serde_json::to_vec(self)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if len > MAX_COMMAND_BYTES {
            return Err(ValidationError::TooLong {
                what: "command",
                len,
                max: MAX_COMMAND_BYTES,
            });
        }
        Ok(len)
    }

    /// [`Command::validate`] plus the checks that need the catalog: every check's service is in
    /// the request or already registered on the node, and a `SkipNodeUpdate` registration of an
    /// unknown node carries an address.
    pub fn validate_against(&self, catalog: &Catalog) -> Result<(), ValidationError> {
        self.validate()?;
        self.validate_state(catalog)
    }

    /// The part of [`Command::validate_against`] that needs the catalog (for a command that
    /// already passed [`Command::validate`]).
    pub fn validate_state(&self, catalog: &Catalog) -> Result<(), ValidationError> {
        let Command::Register(r) = self else {
            return Ok(());
        };
        if catalog.node(&r.node).is_none() && r.address.is_empty() {
            return Err(ValidationError::UnknownNodeWithoutAddress(r.node.clone()));
        }
        for check in &r.checks {
            if check.service_id.is_empty() {
                continue;
            }
            let in_request = r
                .service
                .as_ref()
                .is_some_and(|s| eq_fold(&s.id, &check.service_id));
            if !in_request && catalog.service(&r.node, &check.service_id).is_none() {
                return Err(ValidationError::UnknownService {
                    node: r.node.clone(),
                    check: check.check_id.clone(),
                    service: check.service_id.clone(),
                });
            }
        }
        Ok(())
    }
}

impl UnsupportedCommand {
    fn describe(&self) -> String {
        format!(
            "command version {} op {:?} is not supported by this server (supports version {}): {}",
            self.version, self.op, COMMAND_VERSION, self.reason
        )
    }

    /// The error result applying it yields.
    pub fn apply_error(&self) -> ApplyError {
        ApplyError::Unsupported(self.describe())
    }
}

/// Case-insensitive equality, as Consul's lowercase memdb indexes compare names and IDs.
pub(crate) fn eq_fold(a: &str, b: &str) -> bool {
    a == b || a.to_lowercase() == b.to_lowercase()
}

fn check_len(what: &'static str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.len() > max {
        return Err(ValidationError::TooLong {
            what,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

fn check_count(what: &'static str, count: usize, max: usize) -> Result<(), ValidationError> {
    if count > max {
        return Err(ValidationError::TooMany { what, count, max });
    }
    Ok(())
}

fn validate_registration(r: &Registration) -> Result<(), ValidationError> {
    if r.node.is_empty() {
        return Err(ValidationError::MissingNode);
    }
    check_len("node name", &r.node, MAX_NAME_LEN)?;
    if r.address.is_empty() && !r.skip_node_update {
        return Err(ValidationError::MissingAddress);
    }
    check_len("address", &r.address, MAX_NAME_LEN)?;
    check_len("datacenter", &r.datacenter, MAX_NAME_LEN)?;
    if !r.id.is_empty() {
        uuid::Uuid::parse_str(&r.id).map_err(|e| ValidationError::BadNodeId(e.to_string()))?;
    }
    validate_meta(&r.node_meta, &RESERVED_NODE_META_KEYS)?;
    check_count(
        "tagged addresses",
        r.tagged_addresses.len(),
        MAX_TAGGED_ADDRESSES,
    )?;
    for (tag, addr) in &r.tagged_addresses {
        check_len("tagged address name", tag, MAX_NAME_LEN)?;
        check_len("tagged address", addr, MAX_NAME_LEN)?;
    }
    if let Some(svc) = &r.service {
        validate_service(svc)?;
    }
    check_count("checks", r.checks.len(), MAX_CHECKS)?;
    for check in &r.checks {
        validate_check(check, &r.node)?;
    }
    Ok(())
}

fn validate_service(svc: &NodeService) -> Result<(), ValidationError> {
    if svc.service.is_empty() {
        return Err(ValidationError::MissingServiceName);
    }
    check_len("service name", &svc.service, MAX_NAME_LEN)?;
    check_len("service ID", &svc.id, MAX_NAME_LEN)?;
    check_len("service address", &svc.address, MAX_NAME_LEN)?;
    if is_any_address(&svc.address) {
        return Err(ValidationError::InvalidServiceAddress);
    }
    check_count("tags", svc.tags.len(), MAX_TAGS)?;
    for tag in &svc.tags {
        check_len("tag", tag, MAX_TAG_LEN)?;
    }
    check_count(
        "tagged addresses",
        svc.tagged_addresses.len(),
        MAX_TAGGED_ADDRESSES,
    )?;
    for (tag, addr) in &svc.tagged_addresses {
        check_len("tagged address name", tag, MAX_NAME_LEN)?;
        check_len("tagged address", &addr.address, MAX_NAME_LEN)?;
    }
    validate_meta(&svc.meta, &[])?;
    validate_weights(&svc.weights)
}

fn validate_check(check: &HealthCheck, node: &str) -> Result<(), ValidationError> {
    if check.check_id.is_empty() {
        return Err(ValidationError::MissingCheckId);
    }
    if !check.node.is_empty() && !eq_fold(&check.node, node) {
        return Err(ValidationError::CheckNodeMismatch {
            check: check.node.clone(),
            node: node.to_string(),
        });
    }
    check_len("check ID", &check.check_id, MAX_NAME_LEN)?;
    check_len("check name", &check.name, MAX_NAME_LEN)?;
    check_len("check service ID", &check.service_id, MAX_NAME_LEN)?;
    check_len("check output", &check.output, MAX_OUTPUT_LEN)?;
    check_len("check notes", &check.notes, MAX_OUTPUT_LEN)?;
    check_len("check type", &check.check_type, MAX_NAME_LEN)?;
    check_len("check interval", &check.interval, MAX_NAME_LEN)?;
    check_len("check timeout", &check.timeout, MAX_NAME_LEN)
}

fn validate_deregistration(d: &Deregistration) -> Result<(), ValidationError> {
    if d.node.is_empty() {
        return Err(ValidationError::MissingNode);
    }
    check_len("node name", &d.node, MAX_NAME_LEN)?;
    check_len("service ID", &d.service_id, MAX_NAME_LEN)?;
    check_len("check ID", &d.check_id, MAX_NAME_LEN)
}

/// Consul's `ValidateMetadata`, with its messages.
fn validate_meta(
    meta: &BTreeMap<String, String>,
    reserved_allowed: &[&str],
) -> Result<(), ValidationError> {
    if meta.len() > MAX_META_KEYS {
        return Err(ValidationError::Meta(format!(
            "Node metadata cannot contain more than {MAX_META_KEYS} key/value pairs"
        )));
    }
    for (key, value) in meta {
        let problem = if key.is_empty() {
            Some("Key cannot be blank".to_string())
        } else if !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            Some("Key contains invalid characters".to_string())
        } else if key.len() > MAX_META_KEY_LEN {
            Some(format!(
                "Key is too long (limit: {MAX_META_KEY_LEN} characters)"
            ))
        } else if key.starts_with("consul-") && !reserved_allowed.contains(&key.as_str()) {
            Some("Key prefix 'consul-' is reserved for internal use".to_string())
        } else if value.len() > MAX_META_VALUE_LEN {
            Some(format!(
                "Value is too long (limit: {MAX_META_VALUE_LEN} characters)"
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            // Keep the echoed pair short: a rejected value may be huge.
            let shown: String = value.chars().take(64).collect();
            return Err(ValidationError::Meta(format!(
                "Couldn't load metadata pair ('{key}', '{shown}'): {problem}"
            )));
        }
    }
    Ok(())
}

/// Consul's `ValidateWeights`.
fn validate_weights(w: &Weights) -> Result<(), ValidationError> {
    if w.passing < 1 {
        return Err(ValidationError::Weights("Passing must be greater than 0"));
    }
    if w.warning < 0 {
        return Err(ValidationError::Weights(
            "Warning must be greater or equal than 0",
        ));
    }
    if w.passing > 65535 || w.warning > 65535 {
        return Err(ValidationError::Weights(
            "DNS Weight must be between 0 and 65535",
        ));
    }
    Ok(())
}

fn is_any_address(addr: &str) -> bool {
    let bare = addr.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

// --- wire form -------------------------------------------------------------------------------

/// The arguments of the delete commands.
#[derive(Serialize, Deserialize)]
struct IdArgs {
    #[serde(rename = "ID")]
    id: String,
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T: Serialize> {
    v: u64,
    op: &'static str,
    args: &'a T,
}

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self {
            Command::Register(r) => EnvelopeOut {
                v: COMMAND_VERSION,
                op: "register",
                args: r,
            }
            .serialize(ser),
            Command::Deregister(d) => EnvelopeOut {
                v: COMMAND_VERSION,
                op: "deregister",
                args: d,
            }
            .serialize(ser),
            Command::Batch(commands) => EnvelopeOut {
                v: COMMAND_VERSION,
                op: "batch",
                args: commands,
            }
            .serialize(ser),
            Command::Acl(a) => {
                let op = a.op();
                match a {
                    AclCommand::Bootstrap(t) | AclCommand::TokenSet(t) => EnvelopeOut {
                        v: COMMAND_VERSION,
                        op,
                        args: t,
                    }
                    .serialize(ser),
                    AclCommand::PolicySet(p) => EnvelopeOut {
                        v: COMMAND_VERSION,
                        op,
                        args: p,
                    }
                    .serialize(ser),
                    AclCommand::PolicyDelete(id) | AclCommand::TokenDelete(id) => EnvelopeOut {
                        v: COMMAND_VERSION,
                        op,
                        args: &IdArgs { id: id.clone() },
                    }
                    .serialize(ser),
                }
            }
            // Written back exactly as received, so replication of a newer entry is lossless.
            Command::Unsupported(u) => u.raw.serialize(ser),
        }
    }
}

/// The envelope as read, borrowing the arguments' JSON text.
#[derive(Deserialize)]
struct EnvelopeIn<'a> {
    #[serde(default)]
    v: u64,
    #[serde(borrow, default)]
    op: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    args: Option<&'a serde_json::value::RawValue>,
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(de)?;
        Ok(Command::from_text(raw.get()))
    }
}

impl Command {
    /// Decodes one command from its JSON text. Entries are decoded on every follower, replica
    /// and forwarded write, so the usual case goes straight from the text into the argument
    /// types; anything unusual takes [`Command::from_value`], which gives the same result
    /// (and builds the `Unsupported` form) through a `Value` (~5x the CPU).
    fn from_text(text: &str) -> Command {
        if let Some(command) = Self::from_text_fast(text) {
            return command;
        }
        match serde_json::from_str(text) {
            Ok(value) => Command::from_value(value),
            // The text came out of a JSON deserializer, so this does not happen.
            Err(e) => Command::Unsupported(UnsupportedCommand {
                version: 0,
                op: String::new(),
                reason: format!("unreadable command: {e}"),
                raw: serde_json::Value::String(text.to_owned()),
            }),
        }
    }

    /// The current-version commands with readable arguments, or `None`.
    fn from_text_fast(text: &str) -> Option<Command> {
        use serde_json::from_str;
        let env: EnvelopeIn<'_> = from_str(text).ok()?;
        if env.v == 0 || env.v > COMMAND_VERSION {
            return None;
        }
        let args = env.args?.get();
        Some(match env.op?.as_ref() {
            "register" => Command::Register(from_str(args).ok()?),
            "deregister" => Command::Deregister(from_str(args).ok()?),
            "acl-bootstrap" => Command::Acl(AclCommand::Bootstrap(from_str(args).ok()?)),
            "acl-token-set" => Command::Acl(AclCommand::TokenSet(from_str(args).ok()?)),
            "acl-policy-set" => Command::Acl(AclCommand::PolicySet(from_str(args).ok()?)),
            "acl-policy-delete" => {
                Command::Acl(AclCommand::PolicyDelete(from_str::<IdArgs>(args).ok()?.id))
            }
            "acl-token-delete" => {
                Command::Acl(AclCommand::TokenDelete(from_str::<IdArgs>(args).ok()?.id))
            }
            "batch" => {
                let items: Vec<&serde_json::value::RawValue> = from_str(args).ok()?;
                Command::Batch(items.iter().map(|i| Command::from_text(i.get())).collect())
            }
            _ => return None,
        })
    }

    /// Interprets a decoded envelope; anything unreadable becomes [`Command::Unsupported`].
    fn from_value(raw: serde_json::Value) -> Command {
        let version = raw
            .get("v")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let op = raw
            .get("op")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string();
        let unsupported = |reason: String| {
            Command::Unsupported(UnsupportedCommand {
                version,
                op: op.clone(),
                reason,
                raw: raw.clone(),
            })
        };
        if version == 0 || version > COMMAND_VERSION {
            return unsupported(format!("unknown command version {version}"));
        }
        let args = raw.get("args").cloned().unwrap_or(serde_json::Value::Null);
        match op.as_str() {
            "register" => match serde_json::from_value(args) {
                Ok(r) => Command::Register(r),
                Err(e) => unsupported(format!("unreadable register arguments: {e}")),
            },
            "deregister" => match serde_json::from_value(args) {
                Ok(d) => Command::Deregister(d),
                Err(e) => unsupported(format!("unreadable deregister arguments: {e}")),
            },
            "acl-bootstrap" | "acl-token-set" => match serde_json::from_value::<AclToken>(args) {
                Ok(t) if op == "acl-bootstrap" => Command::Acl(AclCommand::Bootstrap(t)),
                Ok(t) => Command::Acl(AclCommand::TokenSet(t)),
                Err(e) => unsupported(format!("unreadable {op} arguments: {e}")),
            },
            "acl-policy-set" => match serde_json::from_value::<AclPolicy>(args) {
                Ok(p) => Command::Acl(AclCommand::PolicySet(p)),
                Err(e) => unsupported(format!("unreadable {op} arguments: {e}")),
            },
            "acl-policy-delete" | "acl-token-delete" => {
                match serde_json::from_value::<IdArgs>(args) {
                    Ok(a) if op == "acl-policy-delete" => {
                        Command::Acl(AclCommand::PolicyDelete(a.id))
                    }
                    Ok(a) => Command::Acl(AclCommand::TokenDelete(a.id)),
                    Err(e) => unsupported(format!("unreadable {op} arguments: {e}")),
                }
            }
            "batch" => match args {
                serde_json::Value::Array(items) => {
                    Command::Batch(items.into_iter().map(Command::from_value).collect())
                }
                _ => unsupported("batch arguments are not an array".to_owned()),
            },
            other => unsupported(format!("unknown op {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::model::{HealthStatus, ServiceAddress};

    fn reg() -> Registration {
        Registration {
            id: "40e4a748-2192-161a-0510-9bf59fe950b5".into(),
            node: "db1".into(),
            address: "10.0.0.1".into(),
            ..Registration::default()
        }
    }

    fn web() -> NodeService {
        NodeService {
            id: "web1".into(),
            service: "web".into(),
            port: 80,
            ..NodeService::default()
        }
    }

    fn check(id: &str, service_id: &str) -> HealthCheck {
        HealthCheck {
            check_id: id.into(),
            name: id.into(),
            service_id: service_id.into(),
            ..HealthCheck::default()
        }
    }

    #[test]
    fn register_decodes_consul_body_with_single_check_and_defaults() {
        let body = serde_json::json!({
            "Node": "db1",
            "Address": "10.0.0.1",
            "Service": {"Service": "web", "Port": 80},
            "Check": {"Name": "web alive", "ServiceID": "web", "Status": "passing",
                      "Definition": {"TCP": "localhost:80", "Interval": "10s"}},
            "SomeFutureField": 1
        });
        let r: Registration = serde_json::from_value(body).unwrap();
        assert_eq!(r.service.as_ref().unwrap().id, "web");
        assert_eq!(r.checks.len(), 1);
        let c = &r.checks[0];
        assert_eq!(c.check_id, "web alive");
        assert_eq!(c.node, "db1");
        assert_eq!(c.check_type, "tcp");
        assert_eq!(c.interval, "10s");
        assert_eq!(c.status, HealthStatus::Passing);
        // Encoding writes Checks only and decodes back to the same value.
        let v = serde_json::to_value(&r).unwrap();
        assert!(v.get("Check").is_none());
        let back: Registration = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn command_envelope_round_trips() {
        let mut cmd = Command::Register(Registration {
            service: Some(web()),
            checks: vec![check("c1", "web1")],
            ..reg()
        });
        // Decoding normalizes; a normalized command round-trips exactly.
        cmd.normalize();
        let json = serde_json::to_value(&cmd).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["op"], "register");
        assert_eq!(json["args"]["Node"], "db1");
        let back: Command = serde_json::from_value(json).unwrap();
        assert_eq!(back, cmd);

        let cmd = Command::Deregister(Deregistration {
            node: "db1".into(),
            service_id: "web1".into(),
            ..Deregistration::default()
        });
        let back: Command = serde_json::from_slice(&serde_json::to_vec(&cmd).unwrap()).unwrap();
        assert_eq!(back, cmd);
    }

    #[test]
    fn acl_commands_round_trip_apply_and_stay_off_replicas() {
        use crate::catalog::acl::{AclCommand, AclPolicy, AclToken, PolicyLink};
        let policy = AclPolicy {
            id: "p1".into(),
            name: "readers".into(),
            rules: r#"service_prefix "" { policy = "read" }"#.into(),
            ..AclPolicy::default()
        };
        let token = AclToken {
            accessor_id: "a1".into(),
            secret_id: "s1".into(),
            policies: vec![PolicyLink {
                id: "p1".into(),
                name: String::new(),
            }],
            ..AclToken::default()
        };
        let commands = [
            Command::Acl(AclCommand::PolicySet(policy)),
            Command::Acl(AclCommand::TokenSet(token.clone())),
            Command::Acl(AclCommand::Bootstrap(AclToken {
                accessor_id: "a2".into(),
                secret_id: "s2".into(),
                ..AclToken::default()
            })),
            Command::Acl(AclCommand::TokenDelete("a1".into())),
            Command::Acl(AclCommand::PolicyDelete("p1".into())),
        ];
        let mut c = Catalog::new();
        for (i, cmd) in commands.iter().enumerate() {
            let json = serde_json::to_value(cmd).unwrap();
            assert!(json["op"].as_str().unwrap().starts_with("acl-"), "{json}");
            let back: Command = serde_json::from_value(json).unwrap();
            assert_eq!(&back, cmd);
            assert!(cmd.validate().is_ok());
            assert!(c.apply(i as u64 + 1, cmd).is_ok(), "{cmd:?}");
        }
        assert!(c.acl().token_by_secret("s2").is_some());
        assert!(c.acl().token("a1").is_none() && c.acl().policy("p1").is_none());
        // Replicas never see them, alone or in a batch.
        assert_eq!(commands[1].clone().without_acl(), None);
        let mixed = Command::Batch(vec![
            commands[1].clone(),
            Command::Deregister(Deregistration {
                node: "db1".into(),
                ..Deregistration::default()
            }),
        ]);
        let kept = mixed.without_acl().unwrap();
        assert!(matches!(&kept, Command::Batch(b) if b.len() == 1));
        // A bad token is refused before proposing and at apply.
        let bad = Command::Acl(AclCommand::TokenSet(AclToken::default()));
        assert!(bad.validate().is_err());
        assert!(!c.apply(9, &bad).is_ok());
    }

    #[test]
    fn batches_round_trip_apply_each_command_and_do_not_nest() {
        let mut ok = Command::Register(Registration {
            service: Some(web()),
            ..reg()
        });
        ok.normalize();
        let mut orphan = Command::Register(Registration {
            node: "db2".into(),
            address: "10.0.0.2".into(),
            checks: vec![check("c", "nosuch")],
            ..Registration::default()
        });
        orphan.normalize();
        let batch = Command::Batch(vec![ok.clone(), orphan.clone()]);
        let json = serde_json::to_value(&batch).unwrap();
        assert_eq!(json["op"], "batch");
        assert_eq!(json["args"][0]["op"], "register");
        let back: Command = serde_json::from_value(json).unwrap();
        assert_eq!(back, batch);
        assert_eq!(
            batch.validate_sized().unwrap(),
            ok.validate_sized().unwrap() + serde_json::to_vec(&orphan).unwrap().len()
        );
        // Applied one by one: the orphan check is refused, the registration stays.
        let mut catalog = Catalog::new();
        let CommandResult::Batch(results) = catalog.apply(7, &batch) else {
            panic!("a batch answers with a batch");
        };
        assert_eq!(results[0], CommandResult::Ok);
        assert!(matches!(results[1], CommandResult::Rejected(_)));
        assert!(catalog.node("db1").is_some() && catalog.node("db2").is_none());
        // No batch inside a batch; a batch of something unreadable is not valid either.
        let nested = Command::Batch(vec![batch.clone()]);
        assert!(nested.validate().is_err());
        let bad = Command::from_value(serde_json::json!({"v": 1, "op": "batch", "args": {}}));
        assert!(matches!(bad, Command::Unsupported(_)));
    }

    #[test]
    fn the_direct_decoding_gives_what_the_value_decoding_gives() {
        use crate::catalog::acl::{AclPolicy, AclToken};
        let mut full = reg();
        full.service = Some(web());
        full.checks = vec![check("web alive", "web1"), check("serfHealth", "")];
        full.node_meta.insert("rack".into(), "r\"1\u{e9}".into());
        let token = AclToken {
            accessor_id: "a1".into(),
            secret_id: "s1".into(),
            ..AclToken::default()
        };
        let policy = AclPolicy {
            id: "p1".into(),
            name: "read-all".into(),
            ..AclPolicy::default()
        };
        let singles = vec![
            Command::Register(reg()),
            Command::Register(full),
            Command::Deregister(Deregistration {
                node: "db1".into(),
                service_id: "web1".into(),
                ..Deregistration::default()
            }),
            Command::Acl(AclCommand::Bootstrap(token.clone())),
            Command::Acl(AclCommand::TokenSet(token)),
            Command::Acl(AclCommand::PolicySet(policy)),
            Command::Acl(AclCommand::PolicyDelete("p1".into())),
            Command::Acl(AclCommand::TokenDelete("a1".into())),
        ];
        let mut all = singles.clone();
        all.push(Command::Batch(singles));
        for cmd in all {
            let text = serde_json::to_string(&cmd).unwrap();
            assert!(matches!(
                Command::from_value(serde_json::from_str(&text).unwrap()),
                Command::Register(_) | Command::Deregister(_) | Command::Acl(_) | Command::Batch(_)
            ));
            let fast = Command::from_text_fast(&text).expect("the fast path reads it");
            let slow = Command::from_value(serde_json::from_str(&text).unwrap());
            assert_eq!(fast, slow, "{text}");
            // Through the Deserialize impl, from text and from a Value.
            assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), slow);
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(serde_json::from_value::<Command>(value).unwrap(), slow);
        }
        // What the fast path leaves to the slow one still decodes, as Unsupported, and a
        // batch keeps its readable items.
        let odd = r#"{"v":1,"op":"batch","args":[{"v":1,"op":"register","args":{"Node":5}},
            {"v":1,"op":"deregister","args":{"Node":"db1"}}]}"#;
        let Command::Batch(items) = serde_json::from_str::<Command>(odd).unwrap() else {
            panic!("a batch");
        };
        assert!(matches!(items[0], Command::Unsupported(_)));
        assert!(matches!(items[1], Command::Deregister(_)));
    }

    #[test]
    fn newer_or_unknown_commands_decode_as_unsupported_and_reencode_verbatim() {
        let cases = [
            serde_json::json!({"v": 2, "op": "register", "args": {"Node": "x"}}),
            serde_json::json!({"v": 1, "op": "kv_set", "args": {"Key": "k"}}),
            serde_json::json!({"v": 1, "op": "register", "args": {"Node": 5}}),
            serde_json::json!({"something": "else"}),
            serde_json::json!(42),
        ];
        for raw in cases {
            let cmd: Command = serde_json::from_value(raw.clone()).unwrap();
            let Command::Unsupported(u) = &cmd else {
                panic!("{raw} decoded as {cmd:?}");
            };
            assert_eq!(serde_json::to_value(&cmd).unwrap(), raw);
            assert!(u.apply_error().is_unsupported());
            assert!(matches!(
                cmd.validate(),
                Err(ValidationError::Unsupported(_))
            ));
        }
    }

    #[test]
    fn validation_errors_use_consul_texts() {
        let cases: Vec<(Registration, &str)> = vec![
            (
                Registration {
                    node: String::new(),
                    ..reg()
                },
                "Must provide node",
            ),
            (
                Registration {
                    address: String::new(),
                    ..reg()
                },
                "Must provide address if SkipNodeUpdate is not set",
            ),
            (
                Registration {
                    id: "nope".into(),
                    ..reg()
                },
                "Bad node ID",
            ),
            (
                Registration {
                    service: Some(NodeService {
                        service: String::new(),
                        ..web()
                    }),
                    ..reg()
                },
                "Must provide service name with ID",
            ),
            (
                Registration {
                    service: Some(NodeService {
                        address: "0.0.0.0".into(),
                        ..web()
                    }),
                    ..reg()
                },
                "Invalid service address",
            ),
            (
                Registration {
                    service: Some(NodeService {
                        weights: Weights {
                            passing: 0,
                            warning: 1,
                        },
                        ..web()
                    }),
                    ..reg()
                },
                "Passing must be greater than 0",
            ),
            (
                Registration {
                    checks: vec![check("", "")],
                    ..reg()
                },
                "Must provide check ID or name",
            ),
            (
                Registration {
                    checks: vec![HealthCheck {
                        node: "other".into(),
                        ..check("c", "")
                    }],
                    ..reg()
                },
                "does not match node",
            ),
        ];
        for (r, want) in cases {
            let err = Command::Register(r).validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn meta_limits_follow_consul() {
        let with_meta = |k: &str, v: &str| {
            let mut r = reg();
            r.node_meta.insert(k.into(), v.into());
            Command::Register(r).validate()
        };
        assert!(with_meta("rack", "r1").is_ok());
        assert!(with_meta("consul-network-segment", "").is_ok());
        let cases = [
            ("consul-x", "v", "Key prefix 'consul-' is reserved"),
            ("bad key", "v", "Key contains invalid characters"),
            (&"k".repeat(129), "v", "Key is too long (limit: 128"),
            ("k", &"v".repeat(513), "Value is too long (limit: 512"),
        ];
        for (k, v, want) in cases {
            let err = with_meta(k, v).unwrap_err().to_string();
            assert!(err.starts_with("Couldn't load metadata pair"), "{err}");
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
        let mut r = reg();
        for i in 0..=MAX_META_KEYS {
            r.node_meta.insert(format!("k{i}"), "v".into());
        }
        assert_eq!(
            Command::Register(r).validate().unwrap_err().to_string(),
            "Node metadata cannot contain more than 64 key/value pairs"
        );
        // Services do not get the reserved node keys.
        let mut svc = web();
        svc.meta.insert("consul-version".into(), "1".into());
        let r = Registration {
            service: Some(svc),
            ..reg()
        };
        assert!(Command::Register(r).validate().is_err());
    }

    #[test]
    fn sizes_are_bounded() {
        let mut r = reg();
        r.checks = (0..=MAX_CHECKS)
            .map(|i| check(&format!("c{i}"), ""))
            .collect();
        assert!(matches!(
            Command::Register(r).validate(),
            Err(ValidationError::TooMany { what: "checks", .. })
        ));
        let mut c = check("c", "");
        c.output = "x".repeat(MAX_OUTPUT_LEN + 1);
        let r = Registration {
            checks: vec![c],
            ..reg()
        };
        assert!(matches!(
            Command::Register(r).validate(),
            Err(ValidationError::TooLong {
                what: "check output",
                ..
            })
        ));
        let mut svc = web();
        svc.tags = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        let r = Registration {
            service: Some(svc),
            ..reg()
        };
        assert!(Command::Register(r).validate().is_err());
        let mut svc = web();
        svc.tagged_addresses.insert(
            "lan".into(),
            ServiceAddress {
                address: "a".repeat(MAX_NAME_LEN + 1),
                port: 1,
            },
        );
        let r = Registration {
            service: Some(svc),
            ..reg()
        };
        assert!(Command::Register(r).validate().is_err());
        // The whole-command bound catches what per-field limits do not (definitions).
        let mut c = check("c", "");
        c.definition.body = "b".repeat(MAX_COMMAND_BYTES);
        let r = Registration {
            checks: vec![c],
            ..reg()
        };
        assert!(matches!(
            Command::Register(r).validate(),
            Err(ValidationError::TooLong {
                what: "command",
                ..
            })
        ));
    }

    #[test]
    fn deregistration_needs_a_node() {
        let d = Deregistration::default();
        assert_eq!(
            Command::Deregister(d).validate(),
            Err(ValidationError::MissingNode)
        );
    }

    #[test]
    fn check_service_must_exist_in_request_or_catalog() {
        let catalog = Catalog::default();
        let r = Registration {
            service: Some(web()),
            checks: vec![check("c1", "WEB1")],
            ..reg()
        };
        assert!(Command::Register(r).validate_against(&catalog).is_ok());
        let r = Registration {
            checks: vec![check("c1", "web1")],
            ..reg()
        };
        let err = Command::Register(r).validate_against(&catalog).unwrap_err();
        assert!(matches!(err, ValidationError::UnknownService { .. }));
        assert!(err.to_string().starts_with("Missing service registration"));
    }

    #[test]
    fn skip_node_update_on_unknown_node_needs_an_address() {
        let catalog = Catalog::default();
        let r = Registration {
            address: String::new(),
            skip_node_update: true,
            ..reg()
        };
        let cmd = Command::Register(r);
        assert!(cmd.validate().is_ok());
        assert!(matches!(
            cmd.validate_against(&catalog),
            Err(ValidationError::UnknownNodeWithoutAddress(_))
        ));
    }
}
