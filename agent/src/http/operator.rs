//! `/v1/operator/raft/*`: the Raft configuration (`GET /v1/operator/raft/configuration`) and
//! removing a stale peer (`DELETE /v1/operator/raft/peer?id=|address=`), with Consul's shapes
//! and error texts.
//!
//! Invariants: both need a known leader (`No cluster leader` otherwise, as in Consul, unless
//! the read says `?stale`); a removal is carried out by the leader (forwarded from a
//! follower). Server IDs are node UUIDs as in Consul: the Raft ids muster uses internally are
//! mapped back through gossip's `id` tags; a server gossip does not know is shown (and can be
//! removed) by its numeric Raft id.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::Method;
use axum::response::Response;
use muster_server::{Consistency, RaftServerState, ServerHandle, raft_id_from_node_id};
use serde::Serialize;

use super::error::ApiError;
use super::query::Query;
use super::token::Token;
use super::{Api, empty_ok, endpoint, json};
use crate::acl::{Need, Scalar};
use crate::runtime::RAFT_PROTOCOL;

type ApiState = State<Arc<Api>>;

pub(super) fn routes(router: Router<Arc<Api>>) -> Router<Arc<Api>> {
    router
        .route(
            "/v1/operator/raft/configuration",
            endpoint(Method::GET, configuration),
        )
        .route(
            "/v1/operator/raft/peer",
            endpoint(Method::DELETE, remove_peer),
        )
}

/// One server of `GET /v1/operator/raft/configuration`, in Consul's field order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct RaftServer {
    #[serde(rename = "ID")]
    id: String,
    node: String,
    address: String,
    leader: bool,
    protocol_version: String,
    voter: bool,
    last_index: u64,
}

/// The body of `GET /v1/operator/raft/configuration`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct RaftConfiguration {
    servers: Vec<RaftServer>,
    index: u64,
}

/// Raft id → node UUID, from gossip's `id` tags and this agent's own identity.
fn node_ids(api: &Api) -> BTreeMap<u64, String> {
    let mut ids: BTreeMap<u64, String> = api
        .ctx
        .members
        .current()
        .iter()
        .filter_map(|m| {
            let id = m.tags.get("id")?;
            Some((raft_id_from_node_id(id)?, id.clone()))
        })
        .collect();
    if let Some(raft) = raft_id_from_node_id(&api.ctx.node.id) {
        ids.insert(raft, api.ctx.node.id.clone());
    }
    ids
}

/// `No cluster leader` unless a leader is known.
fn require_leader(catalog: &ServerHandle) -> Result<(), ApiError> {
    match catalog.leader_addr() {
        Some(_) => Ok(()),
        None => Err(ApiError::internal("No cluster leader")),
    }
}

/// `GET /v1/operator/raft/configuration[?stale]`: answered by the leader (forwarded from a
/// follower), so `LastIndex` is the leader's view of every server; with `?stale` a follower
/// answers alone and knows only its own `LastIndex` (0 for the others). A client agent shows
/// what the servers last told its replica.
async fn configuration(
    State(api): ApiState,
    token: Token,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref())?;
    api.check_dc(&q)?;
    token.0.need_scalar(Scalar::Operator, Need::Read)?;
    let catalog = api.catalog()?;
    let stale = q.has("stale");
    if !stale {
        require_leader(catalog)?;
    }
    let config = if catalog.is_replica() {
        replica_configuration(catalog)
    } else {
        let consistency = if stale {
            Consistency::Stale
        } else {
            Consistency::Default
        };
        catalog.raft_configuration(consistency).await?
    };
    let ids = node_ids(&api);
    let servers = config
        .servers
        .into_iter()
        .map(|s| RaftServer {
            id: ids.get(&s.id).cloned().unwrap_or_else(|| s.id.to_string()),
            node: s.name,
            address: s.rpc_addr,
            leader: s.leader,
            protocol_version: RAFT_PROTOCOL.to_string(),
            voter: s.voter,
            last_index: s.last_index,
        })
        .collect();
    let body = RaftConfiguration {
        servers,
        index: config.index,
    };
    Ok(json(&body, q.pretty()))
}

/// A client agent's view: the servers its replica last heard of (no log indexes).
fn replica_configuration(catalog: &ServerHandle) -> muster_server::RaftConfiguration {
    let servers = catalog
        .status()
        .servers
        .into_iter()
        .map(|s| RaftServerState {
            id: s.id,
            name: s.name,
            rpc_addr: s.rpc_addr,
            voter: s.voter,
            leader: s.leader,
            last_index: 0,
        })
        .collect();
    muster_server::RaftConfiguration { index: 0, servers }
}

/// `DELETE /v1/operator/raft/peer?id=<node-id>` or `?address=<ip:port>`.
async fn remove_peer(
    State(api): ApiState,
    token: Token,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref())?;
    api.check_dc(&q)?;
    token.0.need_scalar(Scalar::Operator, Need::Write)?;
    let (id, address) = (q.get("id"), q.get("address"));
    let target = match (id, address) {
        (None, None) => {
            return Err(ApiError::bad(
                "Must specify either ?id with the server's ID or ?address with IP:port of peer \
                 to remove",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad("Must specify only one of ?id or ?address"));
        }
        (Some(id), None) => PeerRef::Id(id.to_owned()),
        (None, Some(addr)) => PeerRef::Address(addr.to_owned()),
    };
    let catalog = api.catalog()?;
    require_leader(catalog)?;
    let servers = catalog.status().servers;
    let ids = node_ids(&api);
    let found = servers.iter().find(|s| match &target {
        PeerRef::Id(id) => {
            ids.get(&s.id)
                .is_some_and(|uuid| uuid.eq_ignore_ascii_case(id))
                || s.id.to_string() == *id
        }
        PeerRef::Address(addr) => s.rpc_addr == *addr,
    });
    let Some(server) = found else {
        return Err(ApiError::internal(match &target {
            PeerRef::Id(id) => format!("id {id:?} was not found in the Raft configuration"),
            PeerRef::Address(a) => format!("address {a:?} was not found in the Raft configuration"),
        }));
    };
    catalog.remove_server_anywhere(server.id).await?;
    tracing::warn!(peer = %server.rpc_addr, node = %server.name, "removed Raft peer");
    Ok(empty_ok())
}

/// How the operator named the peer to remove.
enum PeerRef {
    Id(String),
    Address(String),
}
