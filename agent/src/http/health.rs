//! `/v1/health/*`: checks and service instances with their health, from the catalog, with
//! blocking queries, `?passing`, `?tag`, `?node-meta` and `?filter` where Consul has them.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::Method;
use axum::response::Response;
use muster_server::catalog::query::tables;
use muster_server::{CheckState, ServiceFilter};

use super::error::ApiError;
use super::query::{Query, ReadOptions};
use super::read::{blocking_read, filter_rows, parse_filter, with_meta};
use super::schema;
use super::token::Token;
use super::{Api, endpoint, json};

type ApiState = State<Arc<Api>>;

pub(super) fn routes(router: Router<Arc<Api>>) -> Router<Arc<Api>> {
    router
        .route("/v1/health/node/{*node}", endpoint(Method::GET, node))
        .route(
            "/v1/health/checks/{*service}",
            endpoint(Method::GET, checks),
        )
        .route(
            "/v1/health/service/{*service}",
            endpoint(Method::GET, service),
        )
        .route("/v1/health/state/{*state}", endpoint(Method::GET, state))
}

/// Query string, read options and the `?dc` check shared by the reads.
fn read_request(api: &Api, raw: Option<&str>) -> Result<(Query, ReadOptions), ApiError> {
    let q = Query::parse(raw)?;
    api.check_dc(&q)?;
    let opts = ReadOptions::parse(&q)?;
    Ok((q, opts))
}

/// `GET /v1/health/node/:node`: every check of the node, `serfHealth` included.
async fn node(
    State(api): ApiState,
    token: Token,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (q, opts) = read_request(&api, raw.as_deref())?;
    let filter = parse_filter(opts.filter.as_deref(), &schema::HEALTH_CHECK)?;
    let read = blocking_read(&api, &opts, tables::NODE_CHECKS, |c| c.node_checks(&name)).await?;
    let mut rows = read.value;
    rows.retain(|c| token.check(&c.service_name, &c.node));
    let rows = filter_rows(rows, filter.as_ref(), &schema::HEALTH_CHECK)?;
    Ok(with_meta(json(&rows, q.pretty()), read.index, &read.meta))
}

/// `GET /v1/health/checks/:service`: the checks of a service's instances.
async fn checks(
    State(api): ApiState,
    token: Token,
    Path(service): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (q, opts) = read_request(&api, raw.as_deref())?;
    let filter = parse_filter(opts.filter.as_deref(), &schema::HEALTH_CHECK)?;
    let meta = q.node_meta();
    let read = blocking_read(&api, &opts, tables::SERVICE_CHECKS, |c| {
        c.service_checks(&service, &meta)
    })
    .await?;
    let mut rows = read.value;
    rows.retain(|c| token.check(&c.service_name, &c.node));
    let rows = filter_rows(rows, filter.as_ref(), &schema::HEALTH_CHECK)?;
    Ok(with_meta(json(&rows, q.pretty()), read.index, &read.meta))
}

/// `GET /v1/health/service/:service`: instances with node-level and own checks.
async fn service(
    State(api): ApiState,
    token: Token,
    Path(service): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (q, opts) = read_request(&api, raw.as_deref())?;
    let passing_only = q
        .flag("passing")
        .map_err(|_| ApiError::bad("Invalid value for ?passing"))?;
    let filter = parse_filter(opts.filter.as_deref(), &schema::CHECK_SERVICE_NODE)?;
    let service_filter = ServiceFilter {
        tags: q.tags(),
        node_meta: q.node_meta(),
        passing_only,
    };
    let read = blocking_read(&api, &opts, tables::CHECK_SERVICE_NODES, |c| {
        c.check_service_nodes(&service, &service_filter)
    })
    .await?;
    let mut rows = read.value;
    rows.retain(|r| token.service(&r.service.service, &r.node.name));
    for r in &mut rows {
        r.checks.retain(|c| token.check(&c.service_name, &c.node));
    }
    let rows = filter_rows(rows, filter.as_ref(), &schema::CHECK_SERVICE_NODE)?;
    Ok(with_meta(json(&rows, q.pretty()), read.index, &read.meta))
}

/// `GET /v1/health/state/:state`: `any` or one status; anything else is a 400.
async fn state(
    State(api): ApiState,
    token: Token,
    Path(state): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (q, opts) = read_request(&api, raw.as_deref())?;
    let state: CheckState = state
        .parse()
        .map_err(|_| ApiError::bad(format!("Invalid check state: '{state}'")))?;
    let filter = parse_filter(opts.filter.as_deref(), &schema::HEALTH_CHECK)?;
    let meta = q.node_meta();
    let read = blocking_read(&api, &opts, tables::CHECKS_IN_STATE, |c| {
        c.checks_in_state(state, &meta)
    })
    .await?;
    let mut rows = read.value;
    rows.retain(|c| token.check(&c.service_name, &c.node));
    let rows = filter_rows(rows, filter.as_ref(), &schema::HEALTH_CHECK)?;
    Ok(with_meta(json(&rows, q.pretty()), read.index, &read.meta))
}
