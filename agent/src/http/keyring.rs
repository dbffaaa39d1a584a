//! `/v1/operator/keyring`: list (GET), install (POST), use (PUT) and remove (DELETE) a gossip
//! key on every alive member, in Consul's shapes. Writes succeed only when every member did;
//! otherwise `500` with `N/M nodes reported failure` and each failing member's reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::json;

use super::error::ApiError;
use super::query::Query;
use super::token::Token;
use super::{Api, decode_json, empty_ok, json, read_body};
use crate::acl::{Need, Scalar};
use crate::gossip::keyring::{KeyringOp, decode_key, encode_key};

type ApiState = State<Arc<Api>>;

pub(super) fn routes(router: Router<Arc<Api>>) -> Router<Arc<Api>> {
    router.route(
        "/v1/operator/keyring",
        get(list).post(install).put(use_key).delete(remove),
    )
}

type Answers = crate::gossip::keyring::KeyringAnswers;

async fn run(api: &Api, op: KeyringOp) -> Result<Answers, ApiError> {
    api.ctx
        .members
        .keyring(op)
        .await
        .map_err(ApiError::Internal)
}

/// `Messages`: the failing members and why.
fn failures(answers: &Answers) -> BTreeMap<String, String> {
    answers
        .iter()
        .filter_map(|(node, r)| r.as_ref().err().map(|e| (node.clone(), e.clone())))
        .collect()
}

/// `GET`: each key with the number of members that have it, and the primaries.
async fn list(
    State(api): ApiState,
    token: Token,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref())?;
    token.0.need_scalar(Scalar::Keyring, Need::Read)?;
    let answers = run(&api, KeyringOp::List).await?;
    let mut keys: BTreeMap<String, u64> = BTreeMap::new();
    let mut primaries: BTreeMap<String, u64> = BTreeMap::new();
    for ring in answers.iter().filter_map(|(_, r)| r.as_ref().ok()) {
        for (i, k) in ring.iter().enumerate() {
            *keys.entry(encode_key(k)).or_default() += 1;
            if i == 0 {
                *primaries.entry(encode_key(k)).or_default() += 1;
            }
        }
    }
    let body = json!([{
        "WAN": false,
        "Datacenter": api.ctx.node.datacenter,
        "Segment": "",
        "Partition": "",
        "Keys": keys,
        "PrimaryKeys": primaries,
        "NumNodes": answers.len(),
        "Messages": failures(&answers),
    }]);
    Ok(json(&body, q.pretty()))
}

/// The `Key` of a request body (case-insensitive), decoded.
async fn key_of(api: &Api, body: Body) -> Result<Vec<u8>, ApiError> {
    let body = decode_json(&read_body(api, body).await?)?;
    let text = body
        .as_object()
        .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case("Key")))
        .and_then(|(_, v)| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    if text.is_empty() {
        return Err(ApiError::bad("Request decode failed: no Key given"));
    }
    decode_key(&text).map_err(ApiError::bad)
}

async fn change(
    api: &Api,
    token: &Token,
    body: Body,
    op: fn(Vec<u8>) -> KeyringOp,
) -> Result<Response, ApiError> {
    token.0.need_scalar(Scalar::Keyring, Need::Write)?;
    let key = key_of(api, body).await?;
    let answers = run(api, op(key)).await?;
    let failed = failures(&answers);
    if failed.is_empty() {
        return Ok(empty_ok());
    }
    let mut text = format!("{}/{} nodes reported failure", failed.len(), answers.len());
    for (node, why) in &failed {
        text.push_str(&format!("\n  {node}: {why}"));
    }
    Err(ApiError::Internal(text))
}

async fn install(State(api): ApiState, token: Token, body: Body) -> Result<Response, ApiError> {
    change(&api, &token, body, KeyringOp::Install).await
}

async fn use_key(State(api): ApiState, token: Token, body: Body) -> Result<Response, ApiError> {
    change(&api, &token, body, KeyringOp::Use).await
}

async fn remove(State(api): ApiState, token: Token, body: Body) -> Result<Response, ApiError> {
    change(&api, &token, body, KeyringOp::Remove).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_each_member() {
        let answers: Answers = vec![
            ("a".into(), Ok(vec![vec![1; 16]])),
            (
                "b".into(),
                Err("Requested key is not in the keyring".into()),
            ),
        ];
        let f = failures(&answers);
        assert_eq!(f.len(), 1);
        assert_eq!(f["b"], "Requested key is not in the keyring");
        assert_eq!(
            json!(f),
            json!({"b": "Requested key is not in the keyring"})
        );
    }
}
