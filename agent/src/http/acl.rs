//! `/v1/acl/*`: bootstrap, policies and tokens, in Consul's shapes and texts.
//!
//! Writes go through Raft (`acl-*` commands, checked again by the state machine); reads
//! come from a server's ACL state (a client agent asks one: replicas hold no secrets).
//! Everything needs `acl:read` or `acl:write` except bootstrap (open until done once) and
//! `token/self` (any valid token). With ACLs disabled every endpoint answers Consul's
//! `401 ACL support disabled`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::Method;
use axum::response::Response;
use axum::routing::get;
use muster_server::Command;
use muster_server::catalog::acl::{
    AclCommand, AclPolicy, AclState, AclToken, NodeIdentity, PolicyLink, ServiceIdentity,
};
use serde_json::Value;

use super::error::ApiError;
use super::query::Query;
use super::token::Token;
use super::{Api, decode_json, endpoint, json, read_body};
use crate::acl::{Need, Rules, Scalar};

type ApiState = State<Arc<Api>>;

pub(super) fn routes(router: Router<Arc<Api>>) -> Router<Arc<Api>> {
    router
        .route("/v1/acl/bootstrap", endpoint(Method::PUT, bootstrap))
        .route("/v1/acl/policy", endpoint(Method::PUT, create_policy))
        .route(
            "/v1/acl/policy/name/{name}",
            endpoint(Method::GET, policy_by_name),
        )
        .route(
            "/v1/acl/policy/{id}",
            get(read_policy).put(update_policy).delete(delete_policy),
        )
        .route("/v1/acl/policies", endpoint(Method::GET, list_policies))
        .route("/v1/acl/token", endpoint(Method::PUT, create_token))
        .route("/v1/acl/token/self", endpoint(Method::GET, token_self))
        .route(
            "/v1/acl/token/{id}",
            get(read_token).put(update_token).delete(delete_token),
        )
        .route("/v1/acl/tokens", endpoint(Method::GET, list_tokens))
}

/// Consul's answer on every ACL endpoint of an agent without ACLs.
fn enabled(api: &Api) -> Result<(), ApiError> {
    if api.acl.enabled() {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("ACL support disabled".into()))
    }
}

/// ACLs on, and the token may `need` on `acl`.
fn allowed(api: &Api, token: &Token, need: Need) -> Result<(), ApiError> {
    enabled(api)?;
    Ok(token.0.need_scalar(Scalar::Acl, need)?)
}

/// A delete: `acl:write`, then `true` as Consul answers.
async fn delete(api: &Api, token: &Token, command: AclCommand) -> Result<Response, ApiError> {
    allowed(api, token, Need::Write)?;
    write(api, command).await?;
    Ok(json(&true, false))
}

/// A policy or token as JSON, or Consul's `403 ACL not found`.
fn found<T: serde::Serialize>(item: Option<T>) -> Result<Response, ApiError> {
    match item {
        Some(item) => Ok(json(&item, false)),
        None => Err(ApiError::Forbidden("ACL not found".into())),
    }
}

/// The ACL state, from this server or a server a client agent asks.
async fn state(api: &Api) -> Result<AclState, ApiError> {
    Ok(api.catalog()?.acl_state().await?)
}

/// Proposes one ACL command; a rejection is the caller's fault (400), as in Consul.
async fn write(api: &Api, command: AclCommand) -> Result<(), ApiError> {
    let outcome = api.catalog()?.write(Command::Acl(command)).await?;
    outcome
        .result
        .into_result()
        .map_err(|e| ApiError::bad(e.to_string()))
}

/// A request body's field, case-insensitively (Go's decoder), or `Null`.
fn field<'a>(body: &'a Value, name: &str) -> &'a Value {
    body.as_object()
        .and_then(|m| {
            m.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
        .unwrap_or(&Value::Null)
}

fn string(body: &Value, name: &str) -> Result<String, ApiError> {
    match field(body, name) {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        other => Err(ApiError::bad(format!(
            "Request decode failed: {name} must be a string, not {other}"
        ))),
    }
}

use crate::acl::{new_id, now_rfc3339};

/// `PUT /v1/acl/bootstrap`: the first management token, once per cluster.
async fn bootstrap(State(api): ApiState) -> Result<Response, ApiError> {
    enabled(&api)?;
    let token = AclToken {
        accessor_id: new_id(),
        secret_id: new_id(),
        description: "Bootstrap Token (Global Management)".into(),
        create_time: now_rfc3339(),
        ..AclToken::default()
    };
    let accessor = token.accessor_id.clone();
    let outcome = api
        .catalog()?
        .write(Command::Acl(AclCommand::Bootstrap(token)))
        .await?;
    if let Err(e) = outcome.result.into_result() {
        // Consul answers a second bootstrap with 403 and the reset index.
        return Err(ApiError::Forbidden(format!("Permission denied: {e}")));
    }
    let state = state(&api).await?;
    let token = state
        .token(&accessor)
        .ok_or_else(|| ApiError::internal("the bootstrap token is not visible yet"))?;
    Ok(json(&token, false))
}

/// A policy from a request body; `id` is kept for updates.
fn policy_from(body: &Value, id: String) -> Result<AclPolicy, ApiError> {
    let rules = string(body, "Rules")?;
    Rules::parse(&rules).map_err(|e| ApiError::bad(e.to_string()))?;
    let datacenters = strings(body, "Datacenters")?;
    let name = string(body, "Name")?;
    if name.is_empty() {
        return Err(ApiError::bad("Invalid Policy: no Name is set"));
    }
    Ok(AclPolicy {
        id,
        name,
        description: string(body, "Description")?,
        rules,
        datacenters,
        ..AclPolicy::default()
    })
}

async fn create_policy(
    State(api): ApiState,
    token: Token,
    body: Body,
) -> Result<Response, ApiError> {
    allowed(&api, &token, Need::Write)?;
    let body = decode_json(&read_body(&api, body).await?)?;
    if !string(&body, "ID")?.is_empty() {
        return Err(ApiError::bad("Cannot specify an ID when creating a policy"));
    }
    let policy = policy_from(&body, new_id())?;
    let id = policy.id.clone();
    write(&api, AclCommand::PolicySet(policy)).await?;
    read_policy_json(&api, &id).await
}

async fn update_policy(
    State(api): ApiState,
    token: Token,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    allowed(&api, &token, Need::Write)?;
    let body = decode_json(&read_body(&api, body).await?)?;
    let in_body = string(&body, "ID")?;
    if !in_body.is_empty() && in_body != id {
        return Err(ApiError::bad("Policy ID in URL and payload do not match"));
    }
    if state(&api).await?.policy(&id).is_none() {
        return Err(ApiError::bad(format!("Cannot find policy {id:?}")));
    }
    write(&api, AclCommand::PolicySet(policy_from(&body, id.clone())?)).await?;
    read_policy_json(&api, &id).await
}

async fn read_policy_json(api: &Api, id: &str) -> Result<Response, ApiError> {
    found(state(api).await?.policy(id))
}

async fn read_policy(
    State(api): ApiState,
    token: Token,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    allowed(&api, &token, Need::Read)?;
    read_policy_json(&api, &id).await
}

async fn policy_by_name(
    State(api): ApiState,
    token: Token,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    allowed(&api, &token, Need::Read)?;
    found(state(&api).await?.policy_by_name(&name))
}

async fn delete_policy(
    State(api): ApiState,
    token: Token,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    delete(&api, &token, AclCommand::PolicyDelete(id)).await
}

async fn list_policies(
    State(api): ApiState,
    token: Token,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    allowed(&api, &token, Need::Read)?;
    let q = Query::parse(raw.as_deref())?;
    // Consul's list stubs carry no rules.
    let list: Vec<Value> = state(&api)
        .await?
        .policies()
        .into_iter()
        .map(|p| {
            serde_json::json!({
                "ID": p.id, "Name": p.name, "Description": p.description,
                "Datacenters": p.datacenters, "CreateIndex": p.create_index,
                "ModifyIndex": p.modify_index,
            })
        })
        .collect();
    Ok(json(&list, q.pretty()))
}

/// The items of a list field (none when absent).
fn list<'a>(body: &'a Value, name: &str) -> Result<&'a [Value], ApiError> {
    match field(body, name) {
        Value::Null => Ok(&[]),
        Value::Array(items) => Ok(items),
        _ => Err(ApiError::bad(format!(
            "Request decode failed: {name} must be a list"
        ))),
    }
}

/// A list of strings (empty when absent).
fn strings(body: &Value, name: &str) -> Result<Vec<String>, ApiError> {
    list(body, name)?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ApiError::bad(format!("Request decode failed: {name} must be strings")))
}

fn service_identities(body: &Value) -> Result<Vec<ServiceIdentity>, ApiError> {
    let mut out: Vec<ServiceIdentity> = Vec::new();
    for item in list(body, "ServiceIdentities")? {
        let name = string(item, "ServiceName")?;
        if name.is_empty() {
            return Err(ApiError::bad(
                "Service identity is missing the service name field on this token",
            ));
        }
        if !muster_server::catalog::acl::valid_service_identity_name(&name) {
            return Err(ApiError::bad(format!(
                "Service identity {name:?} has an invalid name. Only lowercase alphanumeric \
                 characters, '-' and '_' are allowed"
            )));
        }
        let datacenters = strings(item, "Datacenters")?;
        // Consul merges repeated names (datacenters joined; empty means all).
        match out.iter_mut().find(|s| s.service_name == name) {
            Some(s) if s.datacenters.is_empty() || datacenters.is_empty() => {
                s.datacenters.clear();
            }
            Some(s) => s.datacenters.extend(datacenters),
            None => out.push(ServiceIdentity {
                service_name: name,
                datacenters,
            }),
        }
    }
    Ok(out)
}

fn node_identities(body: &Value) -> Result<Vec<NodeIdentity>, ApiError> {
    let mut out: Vec<NodeIdentity> = Vec::new();
    for item in list(body, "NodeIdentities")? {
        let (name, dc) = (string(item, "NodeName")?, string(item, "Datacenter")?);
        if name.is_empty() {
            return Err(ApiError::bad(
                "Node identity is missing the node name field on this token",
            ));
        }
        if dc.is_empty() {
            return Err(ApiError::bad(
                "Node identity is missing the datacenter field on this token",
            ));
        }
        if !muster_server::catalog::acl::valid_node_identity_name(&name) {
            return Err(ApiError::bad(format!(
                "Node identity {name:?} has an invalid name. Only alphanumeric characters, '-' \
                 and '_' are allowed"
            )));
        }
        let identity = NodeIdentity {
            node_name: name,
            datacenter: dc,
        };
        if !out.contains(&identity) {
            out.push(identity);
        }
    }
    Ok(out)
}

/// A token from a request body: policies by `ID` or `Name`, service and node identities,
/// secrets optional.
fn token_from(body: &Value, state: &AclState) -> Result<AclToken, ApiError> {
    let mut links = Vec::new();
    for item in list(body, "Policies")? {
        let (id, name) = (string(item, "ID")?, string(item, "Name")?);
        let policy = if !id.is_empty() {
            state.policy(&id)
        } else {
            state.policy_by_name(&name)
        };
        let Some(p) = policy else {
            let which = if id.is_empty() { name } else { id };
            return Err(ApiError::bad(format!("cannot find policy {which:?}")));
        };
        links.push(PolicyLink {
            id: p.id,
            name: String::new(),
        });
    }
    let local = match field(body, "Local") {
        Value::Null => false,
        Value::Bool(b) => *b,
        _ => {
            return Err(ApiError::bad(
                "Request decode failed: Local must be a boolean",
            ));
        }
    };
    Ok(AclToken {
        accessor_id: string(body, "AccessorID")?,
        secret_id: string(body, "SecretID")?,
        description: string(body, "Description")?,
        policies: links,
        service_identities: service_identities(body)?,
        node_identities: node_identities(body)?,
        local,
        create_time: now_rfc3339(),
        ..AclToken::default()
    })
}

async fn create_token(
    State(api): ApiState,
    token: Token,
    body: Body,
) -> Result<Response, ApiError> {
    allowed(&api, &token, Need::Write)?;
    let body = decode_json(&read_body(&api, body).await?)?;
    let state = state(&api).await?;
    let mut new = token_from(&body, &state)?;
    if new.accessor_id.is_empty() {
        new.accessor_id = new_id();
    } else if state.token(&new.accessor_id).is_some() {
        return Err(ApiError::bad("Invalid Token: AccessorID is already in use"));
    }
    if new.secret_id.is_empty() {
        new.secret_id = new_id();
    }
    let accessor = new.accessor_id.clone();
    write(&api, AclCommand::TokenSet(new)).await?;
    read_token_json(&api, &accessor).await
}

async fn update_token(
    State(api): ApiState,
    token: Token,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    allowed(&api, &token, Need::Write)?;
    let body = decode_json(&read_body(&api, body).await?)?;
    let state = state(&api).await?;
    let Some(old) = state.token(&id) else {
        return Err(ApiError::bad(format!("Cannot find token {id:?}")));
    };
    let mut new = token_from(&body, &state)?;
    if !new.accessor_id.is_empty() && new.accessor_id != id {
        return Err(ApiError::bad(
            "Token AccessorID in URL and payload do not match",
        ));
    }
    new.accessor_id = id.clone();
    if new.secret_id.is_empty() {
        new.secret_id = old.secret_id;
    }
    write(&api, AclCommand::TokenSet(new)).await?;
    read_token_json(&api, &id).await
}

async fn read_token_json(api: &Api, accessor: &str) -> Result<Response, ApiError> {
    found(state(api).await?.token(accessor))
}

async fn read_token(
    State(api): ApiState,
    token: Token,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    allowed(&api, &token, Need::Read)?;
    read_token_json(&api, &id).await
}

/// `GET /v1/acl/token/self`: the token the request carries (any valid token may).
async fn token_self(State(api): ApiState, token: Token) -> Result<Response, ApiError> {
    enabled(&api)?;
    let secret = token
        .1
        .ok_or_else(|| ApiError::Forbidden("ACL not found".into()))?;
    found(state(&api).await?.token_by_secret(&secret))
}

async fn delete_token(
    State(api): ApiState,
    token: Token,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    delete(&api, &token, AclCommand::TokenDelete(id)).await
}

/// `GET /v1/acl/tokens`: secrets only for callers that may write ACLs, as Consul.
async fn list_tokens(
    State(api): ApiState,
    token: Token,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    allowed(&api, &token, Need::Read)?;
    let q = Query::parse(raw.as_deref())?;
    let show_secrets = token.0.allows_scalar(Scalar::Acl, Need::Write);
    let mut list = state(&api).await?.tokens();
    if !show_secrets {
        for t in &mut list {
            t.secret_id = "<hidden>".into();
        }
    }
    Ok(json(&list, q.pretty()))
}
