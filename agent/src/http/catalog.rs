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
    Command, Deregistration, NodeServiceList, NodeServices, Registration, ServiceFilter,
    ServiceNode,
};

use super::error::ApiError;
use super::query::{Query, ReadOptions};
use super::read::{blocking_read, filter_pairs, filter_rows, parse_filter, with_meta};
use super::schema::{self, Shape};
use super::{Api, decode_json, endpoint, json, read_body};

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

/// `PUT /v1/catalog/register`: a node, optionally a service and checks; `true`.
async fn register(
    State(api): ApiState,
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
    write(&api, Command::Register(registration)).await
}

/// `PUT /v1/catalog/deregister`: a node, one service or one check; `true`.
async fn deregister(
    State(api): ApiState,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref())?;
    api.check_dc(&q)?;
    api.catalog()?;
    let bytes = read_body(&api, body).await?;
    let deregistration: Deregistration = decode(&bytes, &schema::DEREGISTRATION)?;
    check_body_dc(&api, &deregistration.datacenter)?;
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
async fn nodes(State(api): ApiState, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let (q, opts) = read_request(&api, raw.as_deref())?;
    let filter = parse_filter(opts.filter.as_deref(), &schema::NODE)?;
    let meta = q.node_meta();
    let read = blocking_read(&api, &opts, tables::NODES, |c| c.nodes(&meta)).await?;
    let rows = filter_rows(read.value, filter.as_ref(), &schema::NODE)?;
    Ok(with_meta(json(&rows, q.pretty()), read.index, &read.meta))
}

/// `GET /v1/catalog/services`: service name → union of tags.
async fn services(State(api): ApiState, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let (q, opts) = read_request(&api, raw.as_deref())?;
    let filter = parse_filter(opts.filter.as_deref(), &schema::SERVICE_NODE)?;
    let meta = q.node_meta();
    let Some(filter) = filter else {
        let read = blocking_read(&api, &opts, tables::SERVICES, |c| c.services(&meta)).await?;
        return Ok(with_meta(
            json(&read.value, q.pretty()),
            read.index,
            &read.meta,
        ));
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
    let rows = filter_rows(read.value, Some(&filter), &schema::SERVICE_NODE)?;
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
    let rows = filter_rows(read.value, filter.as_ref(), &schema::SERVICE_NODE)?;
    Ok(with_meta(json(&rows, q.pretty()), read.index, &read.meta))
}

/// `GET /v1/catalog/node/:node`: `null` for an unknown node, as Consul.
async fn node(
    State(api): ApiState,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (q, opts) = read_request(&api, raw.as_deref())?;
    let filter = parse_filter(opts.filter.as_deref(), &schema::NODE_SERVICE)?;
    let read = blocking_read(&api, &opts, tables::NODE_SERVICES, |c| {
        c.node_services(&name)
    })
    .await?;
    let body = match read.value {
        None => None,
        Some(ns) => {
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
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (q, opts) = read_request(&api, raw.as_deref())?;
    let filter = parse_filter(opts.filter.as_deref(), &schema::NODE_SERVICE)?;
    let read = blocking_read(&api, &opts, tables::NODE_SERVICES, |c| {
        c.node_services(&name)
    })
    .await?;
    let response = match read.value {
        None => json(
            &serde_json::json!({"Node": null, "Services": []}),
            q.pretty(),
        ),
        Some(ns) => {
            let list = NodeServiceList::from(ns);
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
