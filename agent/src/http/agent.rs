//! `/v1/agent/*`: this agent's own view: its configuration, members, and the services and
//! checks it hosts (answered from [`crate::local`], never from the catalog).
//!
//! Invariants: writes answer 200 with an empty body; request bodies are decoded as Consul
//! decodes them (`ServiceDefinition::from_api_json`, case-insensitive field names, snake_case,
//! Go durations); remote script checks need `enable_script_checks`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_server::{HealthCheck, HealthStatus, NodeService, ServiceAddress, Weights};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::error::ApiError;
use super::query::{Query, ReadOptions};
use super::read::{filter_pairs, parse_filter};
use super::schema;
use super::token::Token;
use super::{Api, decode_json, empty_ok, endpoint, read_body};
use crate::acl::{Kind, Need, Scalar};
use crate::config::{CheckDefinition, RuntimeConfig, ServiceDefinition};
use crate::local::is_maintenance_check;
use crate::node::{Member, MemberStatus};

type ApiState = State<Arc<Api>>;

pub(super) fn routes(router: Router<Arc<Api>>) -> Router<Arc<Api>> {
    router
        .route("/v1/agent/self", endpoint(Method::GET, agent_self))
        .route("/v1/agent/members", endpoint(Method::GET, members))
        .route("/v1/agent/services", endpoint(Method::GET, services))
        .route("/v1/agent/service/{*id}", endpoint(Method::GET, service))
        .route("/v1/agent/checks", endpoint(Method::GET, checks))
        .route(
            "/v1/agent/service/register",
            endpoint(Method::PUT, register_service),
        )
        .route(
            "/v1/agent/service/deregister/{*id}",
            endpoint(Method::PUT, deregister_service),
        )
        .route(
            "/v1/agent/service/maintenance/{*id}",
            endpoint(Method::PUT, service_maintenance),
        )
        .route(
            "/v1/agent/check/register",
            endpoint(Method::PUT, register_check),
        )
        .route(
            "/v1/agent/check/deregister/{*id}",
            endpoint(Method::PUT, deregister_check),
        )
        .route(
            "/v1/agent/check/pass/{*id}",
            endpoint(Method::PUT, check_pass),
        )
        .route(
            "/v1/agent/check/warn/{*id}",
            endpoint(Method::PUT, check_warn),
        )
        .route(
            "/v1/agent/check/fail/{*id}",
            endpoint(Method::PUT, check_fail),
        )
        .route(
            "/v1/agent/check/update/{*id}",
            endpoint(Method::PUT, check_update),
        )
        .route(
            "/v1/agent/maintenance",
            endpoint(Method::PUT, node_maintenance),
        )
        .route("/v1/agent/reload", endpoint(Method::PUT, reload))
        .route("/v1/agent/leave", endpoint(Method::PUT, leave))
        .route("/v1/agent/join/{*address}", endpoint(Method::PUT, join))
        .route(
            "/v1/agent/force-leave/{*node}",
            endpoint(Method::PUT, force_leave),
        )
        .route(
            "/v1/agent/health/service/name/{*name}",
            endpoint(Method::GET, health_by_name),
        )
        .route(
            "/v1/agent/health/service/id/{*id}",
            endpoint(Method::GET, health_by_id),
        )
}

fn query(raw: Option<String>) -> Result<Query, ApiError> {
    Query::parse(raw.as_deref())
}

// --- JSON shapes -------------------------------------------------------------------------------

/// A service as `/v1/agent/services` shows it (Consul's `AgentService`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
struct AgentService<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    service: &'a str,
    tags: &'a [String],
    meta: &'a BTreeMap<String, String>,
    port: u16,
    address: &'a str,
    tagged_addresses: &'a BTreeMap<String, ServiceAddress>,
    weights: Weights,
    enable_tag_override: bool,
    datacenter: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_hash: Option<String>,
}

fn agent_service<'a>(s: &'a NodeService, datacenter: &'a str) -> AgentService<'a> {
    AgentService {
        id: &s.id,
        service: &s.service,
        tags: &s.tags,
        meta: &s.meta,
        port: s.port,
        address: &s.address,
        tagged_addresses: &s.tagged_addresses,
        weights: s.weights,
        enable_tag_override: s.enable_tag_override,
        datacenter,
        content_hash: None,
    }
}

/// A gossip member as Consul's `serf.Member` JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct MemberJson<'a> {
    name: &'a str,
    addr: String,
    port: u16,
    tags: &'a BTreeMap<String, String>,
    status: u8,
    protocol_min: u8,
    protocol_max: u8,
    protocol_cur: u8,
    delegate_min: u8,
    delegate_max: u8,
    delegate_cur: u8,
}

fn member_json(m: &Member) -> MemberJson<'_> {
    MemberJson {
        name: &m.name,
        addr: m.addr.to_string(),
        port: m.port,
        tags: &m.tags,
        status: m.status as u8,
        // memberlist's protocol range and serf's delegate versions, as Consul reports them.
        protocol_min: 1,
        protocol_max: 5,
        protocol_cur: 2,
        delegate_min: 2,
        delegate_max: 5,
        delegate_cur: 4,
    }
}

/// This agent as a member: from the member list, or built from its identity.
fn self_member(api: &Api) -> Member {
    let node = &api.ctx.node;
    if let Some(m) = api
        .ctx
        .members
        .current()
        .iter()
        .find(|m| m.name == node.name)
    {
        return m.clone();
    }
    let mut tags = BTreeMap::from([
        ("dc".to_owned(), node.datacenter.clone()),
        ("id".to_owned(), node.id.clone()),
        (
            "role".to_owned(),
            if node.server { "consul" } else { "node" }.to_owned(),
        ),
        ("build".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
    ]);
    if let Some(port) = node.server_port {
        tags.insert("port".into(), port.to_string());
    }
    Member {
        name: node.name.clone(),
        addr: node.advertise_addr,
        port: node.serf_lan_port,
        tags,
        status: MemberStatus::Alive,
    }
}

/// `Stats.serf_lan`, with Consul's member counts and our dropped-packet counters (all values
/// are strings, as Consul's stats are).
fn serf_stats(api: &Api) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let members = api.ctx.members.current();
    let count = |s: MemberStatus| members.iter().filter(|m| m.status == s).count().to_string();
    let stats = api.ctx.members.stats();
    json!({
        "members": members.len().to_string(),
        "failed": count(MemberStatus::Failed),
        "left": count(MemberStatus::Left),
        "encrypted": stats.encrypted.load(Relaxed).to_string(),
        "dropped_key_mismatch": stats.dropped_key.load(Relaxed).to_string(),
        "dropped_malformed": stats.dropped_malformed.load(Relaxed).to_string(),
        "dropped_queue_full": stats.dropped_queue.load(Relaxed).to_string(),
        "health_score": stats.health_score.load(Relaxed).to_string(),
        "probes_failed": stats.probes_failed.load(Relaxed).to_string(),
        "suspicions": stats.suspicions.load(Relaxed).to_string(),
        "refuted": stats.refuted.load(Relaxed).to_string(),
    })
}

fn go(d: Duration) -> String {
    crate::duration::format_duration(d)
}

/// Replaces every non-empty `token` value with `hidden`, as Consul's `DebugConfig` does.
fn redact_tokens(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let secret = k.eq_ignore_ascii_case("token")
                        && v.as_str().is_some_and(|t| !t.is_empty());
                    let v = if secret {
                        Value::from("hidden")
                    } else {
                        redact_tokens(v)
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact_tokens).collect()),
        other => other,
    }
}

/// The runtime configuration for `DebugConfig`, secrets redacted as Consul does (`hidden`).
fn debug_config(cfg: &RuntimeConfig) -> Value {
    let hidden = |set: bool| if set { "hidden" } else { "" };
    let agent = json!({
        "Datacenter": cfg.datacenter,
        "PrimaryDatacenter": cfg.datacenter,
        "NodeName": cfg.node_name,
        "NodeID": cfg.node_id.map(|id| id.to_string()).unwrap_or_default(),
        "NodeMeta": cfg.node_meta,
        "DataDir": cfg.data_dir.display().to_string(),
        "DevMode": cfg.dev_mode,
        "ServerMode": cfg.server.enabled,
        "Bootstrap": cfg.server.bootstrap,
        "BootstrapExpect": cfg.server.bootstrap_expect,
        "RaftMultiplier": cfg.server.raft_multiplier,
        "RPCBindAddr": cfg.server.rpc_addr.to_string(),
        "BindAddr": cfg.bind_addr.to_string(),
        "ClientAddrs": cfg.client_addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "AdvertiseAddrLAN": cfg.gossip.advertise_addr.map(|a| a.to_string()).unwrap_or_default(),
        "AdvertiseAddrWAN": cfg.gossip.advertise_addr_wan.map(|a| a.to_string()).unwrap_or_default(),
        "SerfBindAddrLAN": cfg.gossip.bind.to_string(),
        "HTTPAddrs": cfg.http.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "HTTPMaxConnsPerClient": cfg.http.max_conns_per_client,
    });
    let network = json!({
        "DNSAddrs": cfg.dns.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "DNSPort": cfg.ports.dns,
        "HTTPPort": cfg.ports.http,
        "HTTPSPort": cfg.ports.https,
        "SerfPortLAN": cfg.ports.serf_lan,
        "SerfPortWAN": cfg.ports.serf_wan,
        "ServerPort": cfg.ports.server,
        "EncryptKey": hidden(cfg.gossip.encrypt_key.is_some()),
        "EncryptVerifyIncoming": cfg.gossip.encrypt_verify_incoming,
        "EncryptVerifyOutgoing": cfg.gossip.encrypt_verify_outgoing,
        "RetryJoinLAN": cfg.gossip.retry_join,
        "RetryJoinIntervalLAN": go(cfg.gossip.retry_interval),
        "RetryJoinMaxAttemptsLAN": cfg.gossip.retry_max,
        "RejoinAfterLeave": cfg.gossip.rejoin_after_leave,
        "ReconnectTimeoutLAN": go(cfg.gossip.reconnect_timeout),
    });
    let dns = json!({
        "DNSDomain": cfg.dns.domain,
        "DNSAltDomain": cfg.dns.alt_domain.clone().unwrap_or_default(),
        "DNSRecursors": cfg.dns.recursors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "DNSRecursorStrategy": format!("{:?}", cfg.dns.recursor_strategy).to_lowercase(),
        "DNSRecursorTimeout": go(cfg.dns.recursor_timeout),
        "DNSAllowStale": cfg.dns.allow_stale,
        "DNSMaxStale": go(cfg.dns.max_stale),
        "DNSNodeTTL": go(cfg.dns.node_ttl),
        "DNSServiceTTL": cfg.dns.service_ttl.iter().map(|(k, v)| (k.clone(), go(*v))).collect::<BTreeMap<_, _>>(),
        "DNSOnlyPassing": cfg.dns.only_passing,
        "DNSUDPAnswerLimit": cfg.dns.udp_answer_limit,
        "DNSARecordLimit": cfg.dns.a_record_limit,
        "DNSEnableTruncate": cfg.dns.enable_truncate,
        "DNSDisableCompression": cfg.dns.disable_compression,
    });
    let rest = json!({
        "CheckUpdateInterval": go(cfg.check_settings.update_interval),
        "CheckOutputMaxSize": cfg.check_settings.output_max_size,
        "DiscardCheckOutput": cfg.check_settings.discard_output,
        "EnableRemoteScriptChecks": cfg.check_settings.scripts.enable_script_checks,
        "EnableLocalScriptChecks": cfg.check_settings.scripts.enable_local_script_checks,
        "DefaultQueryTime": go(cfg.http.default_query_time),
        "MaxQueryTime": go(cfg.http.max_query_time),
        "LogLevel": cfg.logging.level.as_str().to_uppercase(),
        "LogJSON": cfg.logging.json,
        "EnableSyslog": cfg.logging.syslog,
        "SyslogFacility": cfg.logging.syslog_facility,
        "LeaveOnTerm": cfg.leave_on_terminate,
        "SkipLeaveOnInt": cfg.skip_leave_on_interrupt,
        "PidFile": cfg.pid_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        "Services": redact_tokens(serde_json::to_value(&cfg.services).unwrap_or_default()),
        "Checks": redact_tokens(serde_json::to_value(&cfg.checks).unwrap_or_default()),
    });
    let mut out = serde_json::Map::new();
    for part in [agent, network, dns, rest] {
        if let Value::Object(map) = part {
            out.extend(map);
        }
    }
    Value::Object(out)
}

// --- reads -------------------------------------------------------------------------------------

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SelfConfig<'a> {
    datacenter: &'a str,
    primary_datacenter: &'a str,
    node_name: &'a str,
    #[serde(rename = "NodeID")]
    node_id: &'a str,
    revision: &'a str,
    server: bool,
    version: &'a str,
}

/// `/v1/agent/self` (no `Coord`: muster has no network coordinates).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SelfJson<'a> {
    config: SelfConfig<'a>,
    debug_config: Value,
    member: MemberJson<'a>,
    meta: &'a BTreeMap<String, String>,
    stats: Value,
}

/// `GET /v1/agent/self`: identity, redacted runtime config, member, node meta, stats.
async fn agent_self(
    State(api): ApiState,
    token: Token,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = query(raw)?;
    token.0.need(Kind::Agent, &api.ctx.node.name, Need::Read)?;
    let cfg = api.config();
    let node = &api.ctx.node;
    let view = api.ctx.local.view();
    let mut stats = json!({
        "agent": {
            "services": view.services.len().to_string(),
            "checks": view.checks.len().to_string(),
        },
    });
    stats["serf_lan"] = serf_stats(&api);
    if let Some(catalog) = &api.ctx.catalog {
        let raft = catalog.status();
        stats["raft"] = json!({
            "state": format!("{:?}", raft.role),
            "term": raft.term.to_string(),
            "last_log_index": raft.last_log_index.unwrap_or(0).to_string(),
            "commit_index": raft.commit_index.unwrap_or(0).to_string(),
            "applied_index": raft.applied_index.unwrap_or(0).to_string(),
            "num_peers": raft.servers.len().saturating_sub(1).to_string(),
            "leader_addr": raft.leader_addr.unwrap_or_default(),
        });
    }
    let member = self_member(&api);
    let body = SelfJson {
        config: SelfConfig {
            datacenter: &node.datacenter,
            primary_datacenter: &node.datacenter,
            node_name: &node.name,
            node_id: &node.id,
            revision: "",
            server: node.server,
            version: env!("CARGO_PKG_VERSION"),
        },
        debug_config: debug_config(&cfg),
        member: member_json(&member),
        meta: &view.node.meta,
        stats,
    };
    Ok(super::json(&body, q.pretty()))
}

/// `GET /v1/agent/members`: the LAN gossip pool as gossip sees it (`?segment` is ignored).
async fn members(
    State(api): ApiState,
    token: Token,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = query(raw)?;
    let current = api.ctx.members.current();
    let me = [self_member(&api)];
    // No WAN pool yet: `?wan` lists nobody.
    let visible = |m: &&Member| token.node(&m.name);
    let list: Vec<MemberJson<'_>> = if q.has("wan") {
        Vec::new()
    } else if current.is_empty() {
        me.iter().filter(visible).map(member_json).collect()
    } else {
        current.iter().filter(visible).map(member_json).collect()
    };
    Ok(super::json(&list, q.pretty()))
}

/// `GET /v1/agent/services`: every local service by ID, `?filter` over AgentService.
async fn services(
    State(api): ApiState,
    token: Token,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = query(raw)?;
    let filter = parse_filter(q.non_empty("filter"), &schema::AGENT_SERVICE)?;
    let view = api.ctx.local.view();
    let dc = &api.ctx.node.datacenter;
    let rows = view
        .services
        .iter()
        .filter(|(_, s)| {
            token
                .0
                .allows(Kind::Service, &s.service.service, Need::Read)
        })
        .map(|(id, s)| (id.as_str(), agent_service(&s.service, dc)));
    let out: BTreeMap<&str, AgentService<'_>> =
        filter_pairs(rows, filter.as_ref(), &schema::AGENT_SERVICE)?;
    Ok(super::json(&out, q.pretty()))
}

/// `X-Consul-ContentHash` of an agent service: the first 16 hex digits of SHA-256 of its JSON.
fn content_hash(v: &AgentService<'_>) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `GET /v1/agent/service/:id`: one service with `ContentHash`; `?hash=` blocks while the
/// content is unchanged (watching the local view, bounded by `?wait`).
async fn service(
    State(api): ApiState,
    token: Token,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = query(raw)?;
    let opts = ReadOptions::parse(&q)?;
    let wanted = q.non_empty("hash").map(str::to_owned);
    let cfg = api.config();
    let wait = opts.blocking_wait(
        cfg.http.default_query_time,
        cfg.http.max_query_time,
        rand::random::<f64>(),
    );
    let deadline = Instant::now() + wait;
    let mut views = api.ctx.local.subscribe();
    loop {
        let view = views.borrow_and_update().clone();
        let Some(s) = view.services.get(&id) else {
            return Err(ApiError::NotFound(format!("unknown service ID: {id}")));
        };
        token
            .0
            .need(Kind::Service, &s.service.service, Need::Read)?;
        let mut body = agent_service(&s.service, &api.ctx.node.datacenter);
        let hash = content_hash(&body);
        // Hash-based blocking: wait while the content is what the client already has.
        let unchanged = wanted.as_deref() == Some(hash.as_str());
        if !unchanged || Instant::now() >= deadline || api.ctx.shutdown.is_cancelled() {
            body.content_hash = Some(hash.clone());
            let mut response = super::json(&body, q.pretty());
            if let Ok(h) = HeaderValue::from_str(&hash) {
                response.headers_mut().insert("x-consul-contenthash", h);
            }
            return Ok(response);
        }
        tokio::select! {
            biased;
            _ = api.ctx.shutdown.cancelled() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            changed = views.changed() => {
                if changed.is_err() {
                    return Err(ApiError::internal("the agent is shutting down"));
                }
            }
        }
    }
}

/// `GET /v1/agent/checks`: every local check by ID, with its current status and output.
async fn checks(
    State(api): ApiState,
    token: Token,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = query(raw)?;
    let filter = parse_filter(q.non_empty("filter"), &schema::HEALTH_CHECK)?;
    let view = api.ctx.local.view();
    let rows = view
        .checks
        .iter()
        .filter(|(_, c)| token.check(&c.check.service_name, &c.check.node))
        .map(|(id, c)| (id.as_str(), &c.check));
    let out = filter_pairs(rows, filter.as_ref(), &schema::HEALTH_CHECK)?;
    Ok(super::json(&out, q.pretty()))
}

// --- agent health for load balancers -------------------------------------------------------------

/// Consul's `AggregatedStatus`: maintenance first, then the worst status; and its HTTP code.
fn aggregated(checks: &[&HealthCheck]) -> (&'static str, StatusCode) {
    if checks.iter().any(|c| is_maintenance_check(&c.check_id)) {
        return ("maintenance", StatusCode::SERVICE_UNAVAILABLE);
    }
    match checks.iter().map(|c| c.status).max() {
        Some(HealthStatus::Critical) => ("critical", StatusCode::SERVICE_UNAVAILABLE),
        Some(HealthStatus::Warning) => ("warning", StatusCode::TOO_MANY_REQUESTS),
        _ => ("passing", StatusCode::OK),
    }
}

/// `format=text` (or `Accept: text/plain`) asks for the status word only.
fn wants_text(q: &Query, headers: &axum::http::HeaderMap) -> bool {
    if let Some(format) = q.non_empty("format") {
        return format == "text";
    }
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"))
}

/// One instance in `/v1/agent/health/service/*` (Consul's `AgentServiceChecksInfo`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceHealth<'a> {
    aggregated_status: &'a str,
    service: Option<AgentService<'a>>,
    checks: Option<Vec<&'a HealthCheck>>,
}

fn health_response<T: Serialize>(
    code: StatusCode,
    reason: &str,
    text: bool,
    body: &T,
    pretty: bool,
) -> Response {
    let mut response = if text {
        (
            code,
            [(header::CONTENT_TYPE, "text/plain")],
            reason.to_owned(),
        )
            .into_response()
    } else {
        let mut r = super::json(body, pretty);
        *r.status_mut() = code;
        r
    };
    if let Ok(v) = HeaderValue::from_str(reason) {
        response.headers_mut().insert("x-consul-reason", v);
    }
    response
}

/// `GET /v1/agent/health/service/id/:id`: one instance's aggregated health as a status code.
async fn health_by_id(
    State(api): ApiState,
    token: Token,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let q = query(raw)?;
    let text = wants_text(&q, &headers);
    let view = api.ctx.local.view();
    let Some(s) = view.services.get(&id) else {
        let reason = format!("ServiceId {id} not found");
        let body = ServiceHealth {
            aggregated_status: "critical",
            service: None,
            checks: None,
        };
        return Ok(health_response(
            StatusCode::NOT_FOUND,
            &reason,
            text,
            &body,
            q.pretty(),
        ));
    };
    token
        .0
        .need(Kind::Service, &s.service.service, Need::Read)?;
    let checks = view.checks_for_service(&id, true);
    let (status, code) = aggregated(&checks);
    let body = ServiceHealth {
        aggregated_status: status,
        service: Some(agent_service(&s.service, &api.ctx.node.datacenter)),
        checks: Some(checks),
    };
    Ok(health_response(code, status, text, &body, q.pretty()))
}

/// `GET /v1/agent/health/service/name/:name`: every local instance of a service.
async fn health_by_name(
    State(api): ApiState,
    token: Token,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let q = query(raw)?;
    token.0.need(Kind::Service, &name, Need::Read)?;
    let text = wants_text(&q, &headers);
    let view = api.ctx.local.view();
    let mut code = StatusCode::NOT_FOUND;
    let mut reason = format!("ServiceName {name} Not Found");
    let mut list = Vec::new();
    // Passing (200) < warning (429) < critical (503): the worst instance wins.
    for s in view.services_named(&name) {
        let checks = view.checks_for_service(&s.service.id, true);
        let (status, scode) = aggregated(&checks);
        list.push(ServiceHealth {
            aggregated_status: status,
            service: Some(agent_service(&s.service, &api.ctx.node.datacenter)),
            checks: Some(checks),
        });
        if code == StatusCode::NOT_FOUND || scode.as_u16() > code.as_u16() {
            code = scode;
            reason = status.to_owned();
        }
    }
    Ok(health_response(code, &reason, text, &list, q.pretty()))
}

// --- writes ------------------------------------------------------------------------------------

fn is_unspecified(addr: &str) -> bool {
    let bare = addr.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
}

/// `PUT /v1/agent/service/register`: decode as Consul does, refuse remote scripts, register
/// and persist; anti-entropy carries it to the catalog.
async fn register_service(
    State(api): ApiState,
    token: Token,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let q = query(raw)?;
    let replace = q
        .flag("replace-existing-checks")
        .map_err(|v| ApiError::bad(format!("Invalid value for replace-existing-checks: {v:?}")))?;
    let bytes = read_body(&api, body).await?;
    let def = ServiceDefinition::from_api_json(&decode_json(&bytes)?)?;
    token.0.need(Kind::Service, &def.name, Need::Write)?;
    if is_unspecified(&def.address) {
        return Err(ApiError::bad("Invalid service address"));
    }
    api.config().script_checks().permit_api_service(&def)?;
    api.ctx.local.register_service(def, replace).await?;
    Ok(empty_ok())
}

/// `PUT /v1/agent/service/deregister/:id`: the service and its checks.
async fn deregister_service(
    State(api): ApiState,
    token: Token,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(s) = api.ctx.local.view().services.get(&id) {
        token
            .0
            .need(Kind::Service, &s.service.service, Need::Write)?;
    }
    api.ctx.local.deregister_service(&id).await?;
    Ok(empty_ok())
}

/// `PUT /v1/agent/check/register`.
async fn register_check(
    State(api): ApiState,
    token: Token,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&api, body).await?;
    let def = CheckDefinition::from_api_json(&decode_json(&bytes)?)?;
    let service = def
        .service_id
        .as_ref()
        .and_then(|id| api.ctx.local.view().services.get(id).cloned());
    match service {
        Some(s) => token
            .0
            .need(Kind::Service, &s.service.service, Need::Write)?,
        None => token.0.need(Kind::Node, &api.ctx.node.name, Need::Write)?,
    }
    api.config().script_checks().permit_api_check(&def)?;
    api.ctx.local.register_check(def).await?;
    Ok(empty_ok())
}

/// `PUT /v1/agent/check/deregister/:id`.
async fn deregister_check(
    State(api): ApiState,
    token: Token,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_write(&api, &token, &id)?;
    api.ctx.local.deregister_check(&id).await?;
    Ok(empty_ok())
}

/// What changing a local check needs: its service's `service:write`, or `node:write` on
/// this node for a node-level check. Unknown checks pass here and get their 404 after.
fn check_write(api: &Api, token: &Token, id: &str) -> Result<(), ApiError> {
    if token.0.is_all() {
        return Ok(());
    }
    let view = api.ctx.local.view();
    let Some(check) = view.checks.get(id) else {
        return Ok(());
    };
    if check.check.service_name.is_empty() {
        token.0.need(Kind::Node, &api.ctx.node.name, Need::Write)?;
    } else {
        token
            .0
            .need(Kind::Service, &check.check.service_name, Need::Write)?;
    }
    Ok(())
}

/// The TTL endpoints: `?note` becomes the output.
async fn ttl(
    api: &Api,
    token: &Token,
    id: &str,
    status: HealthStatus,
    raw: Option<String>,
) -> Result<Response, ApiError> {
    let q = query(raw)?;
    check_write(api, token, id)?;
    let note = q.get("note").unwrap_or_default().to_owned();
    api.ctx.local.update_ttl(id, status, note).await?;
    Ok(empty_ok())
}

async fn check_pass(
    State(api): ApiState,
    token: Token,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    ttl(&api, &token, &id, HealthStatus::Passing, raw).await
}

async fn check_warn(
    State(api): ApiState,
    token: Token,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    ttl(&api, &token, &id, HealthStatus::Warning, raw).await
}

async fn check_fail(
    State(api): ApiState,
    token: Token,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    ttl(&api, &token, &id, HealthStatus::Critical, raw).await
}

#[derive(serde::Deserialize)]
struct CheckUpdate {
    #[serde(rename = "Status", default)]
    status: String,
    #[serde(rename = "Output", default)]
    output: String,
}

/// `PUT /v1/agent/check/update/:id`: status and output in the body.
async fn check_update(
    State(api): ApiState,
    token: Token,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&api, body).await?;
    let value = schema::canonicalize(decode_json(&bytes)?, &schema::CHECK_UPDATE);
    let update: CheckUpdate = serde_json::from_value(value)
        .map_err(|e| ApiError::bad(format!("Request decode failed: {e}")))?;
    let status = match update.status.as_str() {
        "passing" => HealthStatus::Passing,
        "warning" => HealthStatus::Warning,
        "critical" => HealthStatus::Critical,
        other => return Err(ApiError::bad(format!("Invalid check status: '{other}'"))),
    };
    check_write(&api, &token, &id)?;
    api.ctx.local.update_ttl(&id, status, update.output).await?;
    Ok(empty_ok())
}

/// `?enable=` (required) and `?reason=` of the maintenance endpoints.
fn maintenance_params(q: &Query) -> Result<(bool, Option<String>), ApiError> {
    let Some(raw) = q.get("enable") else {
        return Err(ApiError::bad("Missing value for enable"));
    };
    let enable = super::filter::parse_bool(raw)
        .map_err(|_| ApiError::bad(format!("Invalid value for enable: {raw:?}")))?;
    Ok((enable, q.non_empty("reason").map(str::to_owned)))
}

/// `PUT /v1/agent/maintenance?enable=&reason=`.
async fn node_maintenance(
    State(api): ApiState,
    token: Token,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = query(raw)?;
    let (enable, reason) = maintenance_params(&q)?;
    token.0.need(Kind::Node, &api.ctx.node.name, Need::Write)?;
    api.ctx.local.set_node_maintenance(enable, reason).await?;
    Ok(empty_ok())
}

/// `PUT /v1/agent/service/maintenance/:id?enable=&reason=`.
async fn service_maintenance(
    State(api): ApiState,
    token: Token,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = query(raw)?;
    let (enable, reason) = maintenance_params(&q)?;
    if let Some(s) = api.ctx.local.view().services.get(&id) {
        token
            .0
            .need(Kind::Service, &s.service.service, Need::Write)?;
    }
    api.ctx
        .local
        .set_service_maintenance(&id, enable, reason)
        .await?;
    Ok(empty_ok())
}

/// `PUT /v1/agent/reload`: the runtime reloads (and hands the new config to the local state).
async fn reload(State(api): ApiState, token: Token) -> Result<Response, ApiError> {
    token.0.need(Kind::Agent, &api.ctx.node.name, Need::Write)?;
    api.ctx.control.reload().await.map_err(ApiError::Internal)?;
    Ok(empty_ok())
}

/// `?wan` on join and force-leave: there is no WAN pool.
fn refuse_wan(q: &Query) -> Result<(), ApiError> {
    if q.has("wan") {
        return Err(ApiError::Internal(
            "WAN gossip is not supported: this agent has no WAN pool".into(),
        ));
    }
    Ok(())
}

/// `PUT /v1/agent/join/:address`: gossip join through one address (500 with the reason when
/// it cannot be contacted). There is no WAN pool, so `?wan` is refused.
async fn join(
    State(api): ApiState,
    token: Token,
    Path(address): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = query(raw)?;
    refuse_wan(&q)?;
    token.0.need(Kind::Agent, &api.ctx.node.name, Need::Write)?;
    api.ctx
        .members
        .join(vec![address])
        .await
        .map_err(ApiError::Internal)?;
    Ok(empty_ok())
}

/// `PUT /v1/agent/force-leave/:node`: a failed member becomes `left` on every agent
/// (`?prune`: it is forgotten). Unknown names are a 500 with Consul's text.
async fn force_leave(
    State(api): ApiState,
    token: Token,
    Path(node): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = query(raw)?;
    refuse_wan(&q)?;
    token.0.need_scalar(Scalar::Operator, Need::Write)?;
    api.ctx
        .members
        .force_leave(&node, q.has("prune"))
        .await
        .map_err(ApiError::Internal)?;
    Ok(empty_ok())
}

/// `PUT /v1/agent/leave`: answered once the runtime has left.
async fn leave(State(api): ApiState, token: Token) -> Result<Response, ApiError> {
    token.0.need(Kind::Agent, &api.ctx.node.name, Need::Write)?;
    api.ctx.control.leave().await;
    Ok(empty_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(id: &str, status: HealthStatus) -> HealthCheck {
        HealthCheck {
            check_id: id.into(),
            status,
            ..HealthCheck::default()
        }
    }

    #[test]
    fn aggregated_status_puts_maintenance_first() {
        let p = check("a", HealthStatus::Passing);
        let w = check("b", HealthStatus::Warning);
        let c = check("c", HealthStatus::Critical);
        let m = check("_node_maintenance", HealthStatus::Critical);
        assert_eq!(aggregated(&[]), ("passing", StatusCode::OK));
        assert_eq!(aggregated(&[&p]), ("passing", StatusCode::OK));
        assert_eq!(
            aggregated(&[&p, &w]),
            ("warning", StatusCode::TOO_MANY_REQUESTS)
        );
        assert_eq!(
            aggregated(&[&w, &c]),
            ("critical", StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(
            aggregated(&[&p, &m]),
            ("maintenance", StatusCode::SERVICE_UNAVAILABLE)
        );
    }

    #[test]
    fn tokens_are_redacted() {
        let v = redact_tokens(
            json!([{"id": "a", "token": "s3cret", "checks": [{"token": "x"}]}, {"token": ""}]),
        );
        assert_eq!(
            v,
            json!([{"id": "a", "token": "hidden", "checks": [{"token": "hidden"}]}, {"token": ""}])
        );
    }

    #[test]
    fn maintenance_parameters_follow_consul() {
        let q = |s: &str| Query::parse(Some(s)).unwrap();
        assert_eq!(
            maintenance_params(&q("")).unwrap_err(),
            ApiError::bad("Missing value for enable")
        );
        assert_eq!(
            maintenance_params(&q("enable=maybe")).unwrap_err(),
            ApiError::bad(r#"Invalid value for enable: "maybe""#)
        );
        assert_eq!(
            maintenance_params(&q("enable=true&reason=upgrade")).unwrap(),
            (true, Some("upgrade".into()))
        );
        assert_eq!(maintenance_params(&q("enable=0")).unwrap(), (false, None));
        assert!(is_unspecified("0.0.0.0") && is_unspecified("[::]") && !is_unspecified("10.0.0.1"));
    }
}
