//! `/v1/catalog/*` and `/v1/status/*`: reads of the catalog server's state machine (with
//! blocking queries) and writes through `ServerHandle::write` (forwarded to the leader).
//!
//! Invariants: writes answer the JSON literal `true`; an unknown node answers 200 `null`
//! (`/v1/catalog/node/:node`); lists are `[]`, never `null`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::Method;
use axum::response::Response;
use muster_server::catalog::query::tables;
use muster_server::{
    Command, Consistency, Deregistration, NodeServiceList, NodeServices, Registration,
    ServiceFilter, ServiceNode,
};

use super::error::ApiError;
use super::query::{Query, ReadOptions};
use super::read::{blocking_read, filter_pairs, filter_rows, parse_filter, with_meta};
use super::schema::{self, Shape};
use super::token::Token;
use super::{Api, decode_json, endpoint, json, read_body};
use crate::acl::{Kind, Need};

type ApiState = State<Arc<Api>>;

pub(super) fn routes(router: Router<Arc<Api>>) -> Router<Arc<Api>> {
    router
        .route("/v1/catalog/register", endpoint(Method::PUT, register))
        .route("/v1/catalog/deregister", endpoint(Method::PUT, deregister))
        .route(
            "/v1/catalog/datacenters",
            endpoint(Method::GET, datacenters),
        )
        .route("/v1/catalog/nodes", endpoint(Method::GET, nodes))
        .route("/v1/catalog/services", endpoint(Method::GET, services))
        .route(
            "/v1/catalog/service/{*service}",
            endpoint(Method::GET, service),
        )
        .route("/v1/catalog/node/{*node}", endpoint(Method::GET, node))
        .route(
            "/v1/catalog/node-services/{*node}",
            endpoint(Method::GET, node_services),
        )
        .route("/v1/status/leader", endpoint(Method::GET, leader))
        .route("/v1/status/peers", endpoint(Method::GET, peers))
}

/// Decodes a write body case-insensitively (Go's `encoding/json`), snake_case accepted.
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], shape: &Shape) -> Result<T, ApiError> {
    let value = schema::canonicalize(decode_json(bytes)?, shape);
    serde_json::from_value(value).map_err(|e| ApiError::bad(format!("Request decode failed: {e}")))
}

/// A body as the catalog register and deregister handlers decode it (for fuzzing).
pub(super) fn decode_commands(bytes: &[u8]) -> Vec<Command> {
    let mut out = Vec::new();
    if let Ok(mut r) = decode::<Registration>(bytes, &schema::REGISTRATION) {
        r.normalize();
        out.push(Command::Register(r));
    }
    if let Ok(d) = decode::<Deregistration>(bytes, &schema::DEREGISTRATION) {
        out.push(Command::Deregister(d));
    }
    out
}

/// A body's `Datacenter` must be this one (there is no WAN to forward to).
fn check_body_dc(api: &Api, dc: &str) -> Result<(), ApiError> {
    if dc.is_empty() || dc.eq_ignore_ascii_case(&api.ctx.node.datacenter) {
        Ok(())
    } else {
        Err(ApiError::no_path_to_datacenter())
    }
}

async fn write(api: &Api, command: Command) -> Result<Response, ApiError> {
    let outcome = api.catalog()?.write(command).await?;
    match outcome.result.into_result() {
        Ok(()) => Ok(json(&true, false)),
        Err(e) if e.is_invalid() => Err(ApiError::bad(e.to_string())),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// The name of service `id` on `node` as the catalog has it (stale: only for ACL checks).
async fn service_name_of(api: &Api, node: &str, id: &str) -> Result<Option<String>, ApiError> {
    let (name, _) = api
        .catalog()?
        .read(Consistency::Stale, |c| {
            c.service(node, id).map(|s| s.service.clone())
        })
        .await?;
    Ok(name)
}

/// What a registration needs: `node:write` unless `SkipNodeUpdate` (Consul also spares an
/// unchanged node; we ask for it whenever the node may be written), `service:write` on the
/// service, and for each check the write permission of what it is about.
async fn authorize_registration(
    api: &Api,
    token: &Token,
    r: &Registration,
) -> Result<(), ApiError> {
    if token.0.is_all() {
        return Ok(());
    }
    if !r.skip_node_update {
        token.0.need(Kind::Node, &r.node, Need::Write)?;
    }
    if let Some(svc) = &r.service {
        token.0.need(Kind::Service, &svc.service, Need::Write)?;
    }
    for check in &r.checks {
        if check.service_id.is_empty() {
            token.0.need(Kind::Node, &r.node, Need::Write)?;
            continue;
        }
        let in_request = r.service.as_ref().filter(|s| s.id == check.service_id);
        let name = match in_request {
            Some(s) => Some(s.service.clone()),
            None => service_name_of(api, &r.node, &check.service_id).await?,
        };
        // An unknown service fails validation later; its check needs the node meanwhile.
        match name {
            Some(name) => token.0.need(Kind::Service, &name, Need::Write)?,
            None => token.0.need(Kind::Node, &r.node, Need::Write)?,
        }
    }
    Ok(())
}

/// What a deregistration needs: the service's or check's write permission, or `node:write`
/// for a whole node or a node-level check.
async fn authorize_deregistration(
    api: &Api,
    token: &Token,
    d: &Deregistration,
) -> Result<(), ApiError> {
    if token.0.is_all() {
        return Ok(());
    }
    let service_id = if !d.service_id.is_empty() {
        Some(d.service_id.clone())
    } else if !d.check_id.is_empty() {
        let (sid, _) = api
            .catalog()?
            .read(Consistency::Stale, |c| {
                c.check(&d.node, &d.check_id)
                    .map(|ch| ch.service_id.clone())
            })
            .await?;
        sid.filter(|s| !s.is_empty())
    } else {
        None
    };
    match service_id {
        Some(id) => match service_name_of(api, &d.node, &id).await? {
            Some(name) => token.0.need(Kind::Service, &name, Need::Write)?,
            None => token.0.need(Kind::Node, &d.node, Need::Write)?,
        },
        None => token.0.need(Kind::Node, &d.node, Need::Write)?,
    }
    Ok(())
}

/// `PUT /v1/catalog/register`: a node, optionally a service and checks; `true`.
async fn register(
    State(api): ApiState,
    token: Token,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref())?;
    api.check_dc(&q)?;
    api.catalog()?;
    let bytes = read_body(&api, body).await?;
    let mut registration: Registration = decode(&bytes, &schema::REGISTRATION)?;
    check_body_dc(&api, &registration.datacenter)?;
    if registration.datacenter.is_empty() {
        registration.datacenter = api.ctx.node.datacenter.clone();
    }
    authorize_registration(&api, &token, &registration).await?;
    write(&api, Command::Register(registration)).await
}

/// `PUT /v1/catalog/deregister`: a node, one service or one check; `true`.
async fn deregister(
    State(api): ApiState,
    token: Token,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref())?;
    api.check_dc(&q)?;
    api.catalog()?;
    let bytes = read_body(&api, body).await?;
    let deregistration: Deregistration = decode(&bytes, &schema::DEREGISTRATION)?;
    check_body_dc(&api, &deregistration.datacenter)?;
    authorize_deregistration(&api, &token, &deregistration).await?;
    write(&api, Command::Deregister(deregistration)).await
}

/// `GET /v1/catalog/datacenters`.
async fn datacenters(State(api): ApiState, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref())?;
    // One datacenter: no WAN federation yet.
    Ok(json(&[api.ctx.node.datacenter.as_str()], q.pretty()))
}

/// Query string, read options and the dc check shared by the reads.
fn read_request(api: &Api, raw: Option<&str>) -> Result<(Query, ReadOptions), ApiError> {
    let q = Query::parse(raw)?;
    api.check_dc(&q)?;
    let opts = ReadOptions::parse(&q)?;
    Ok((q, opts))
}

/// `GET /v1/catalog/nodes`.
async fn nodes(
    State(api): ApiState,
    token: Token,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (q, opts) = read_request(&api, raw.as_deref())?;
    let filter = parse_filter(opts.filter.as_deref(), &schema::NODE)?;
    let meta = q.node_meta();
    let read = blocking_read(&api, &opts, tables::NODES, |c| c.nodes(&meta)).await?;
    let mut rows = read.value;
    rows.retain(|n| token.node(&n.name));
    let rows = filter_rows(rows, filter.as_ref(), &schema::NODE)?;
    Ok(with_meta(json(&rows, q.pretty()), read.index, &read.meta))
}

/// `GET /v1/catalog/services`: service name → union of tags.
async fn services(
    State(api): ApiState,
    token: Token,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (q, opts) = read_request(&api, raw.as_deref())?;
    let filter = parse_filter(opts.filter.as_deref(), &schema::SERVICE_NODE)?;
    let meta = q.node_meta();
    let Some(filter) = filter else {
        let read = blocking_read(&api, &opts, tables::SERVICES, |c| c.services(&meta)).await?;
        let mut names = read.value;
        names.retain(|name, _| token.0.allows(Kind::Service, name, Need::Read));
        return Ok(with_meta(json(&names, q.pretty()), read.index, &read.meta));
    };
    // Consul filters the service instances, then aggregates names and tags.
    let read = blocking_read(&api, &opts, tables::SERVICES, |c| {
        let (_, nodes) = c.nodes(&meta);
        let mut rows = Vec::new();
        for node in nodes {
            if let (_, Some(ns)) = c.node_services(&node.name) {
                rows.extend(ns.services.values().map(|s| ServiceNode::new(&ns.node, s)));
            }
        }
        (c.indexes().max_of(tables::SERVICES), rows)
    })
    .await?;
    let mut rows = read.value;
    rows.retain(|r| token.service(&r.service_name, &r.node));
    let rows = filter_rows(rows, Some(&filter), &schema::SERVICE_NODE)?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in rows {
        out.entry(row.service_name)
            .or_default()
            .extend(row.service_tags);
    }
    for tags in out.values_mut() {
        tags.sort();
        tags.dedup();
    }
    Ok(with_meta(json(&out, q.pretty()), read.index, &read.meta))
}

/// `GET /v1/catalog/service/:name`: instances, no health filtering.
async fn service(
    State(api): ApiState,
    token: Token,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (q, opts) = read_request(&api, raw.as_deref())?;
    let filter = parse_filter(opts.filter.as_deref(), &schema::SERVICE_NODE)?;
    let service_filter = ServiceFilter {
        tags: q.tags(),
        node_meta: q.node_meta(),
        passing_only: false,
    };
    let read = blocking_read(&api, &opts, tables::SERVICE_NODES, |c| {
        c.service_nodes(&name, &service_filter)
    })
    .await?;
    let mut rows = read.value;
    rows.retain(|r| token.service(&r.service_name, &r.node));
    let rows = filter_rows(rows, filter.as_ref(), &schema::SERVICE_NODE)?;
    Ok(with_meta(json(&rows, q.pretty()), read.index, &read.meta))
}

/// `GET /v1/catalog/node/:node`: `null` for an unknown node, as Consul.
async fn node(
    State(api): ApiState,
    token: Token,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (q, opts) = read_request(&api, raw.as_deref())?;
    let filter = parse_filter(opts.filter.as_deref(), &schema::NODE_SERVICE)?;
    let read = blocking_read(&api, &opts, tables::NODE_SERVICES, |c| {
        c.node_services(&name)
    })
    .await?;
    let body = match read.value.filter(|ns| token.node(&ns.node.name)) {
        None => None,
        Some(mut ns) => {
            ns.services
                .retain(|_, s| token.0.allows(Kind::Service, &s.service, Need::Read));
            // `Services` is an object keyed by ID: the filter sees each NodeService value.
            let services = filter_pairs(ns.services, filter.as_ref(), &schema::NODE_SERVICE)?;
            Some(NodeServices {
                node: ns.node,
                services,
            })
        }
    };
    Ok(with_meta(json(&body, q.pretty()), read.index, &read.meta))
}

/// `GET /v1/catalog/node-services/:node`: like `node` with a list of services.
async fn node_services(
    State(api): ApiState,
    token: Token,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (q, opts) = read_request(&api, raw.as_deref())?;
    let filter = parse_filter(opts.filter.as_deref(), &schema::NODE_SERVICE)?;
    let read = blocking_read(&api, &opts, tables::NODE_SERVICES, |c| {
        c.node_services(&name)
    })
    .await?;
    let response = match read.value.filter(|ns| token.node(&ns.node.name)) {
        None => json(
            &serde_json::json!({"Node": null, "Services": []}),
            q.pretty(),
        ),
        Some(ns) => {
            let mut list = NodeServiceList::from(ns);
            list.services
                .retain(|s| token.0.allows(Kind::Service, &s.service, Need::Read));
            let services = filter_rows(list.services, filter.as_ref(), &schema::NODE_SERVICE)?;
            let list = NodeServiceList {
                node: list.node,
                services,
            };
            json(&list, q.pretty())
        }
    };
    Ok(with_meta(response, read.index, &read.meta))
}

/// `GET /v1/status/leader`: `""` while there is no leader.
async fn leader(State(api): ApiState, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref())?;
    api.check_dc(&q)?;
    let leader = api.catalog()?.leader_addr().unwrap_or_default();
    Ok(json(&leader, q.pretty()))
}

/// `GET /v1/status/peers`: the voters.
async fn peers(State(api): ApiState, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref())?;
    api.check_dc(&q)?;
    let peers = api.catalog()?.voter_addrs();
    Ok(json(&peers, q.pretty()))
}
