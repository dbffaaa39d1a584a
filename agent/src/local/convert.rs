//! Conversions from config definitions to what the check runner and the catalog take.
//!
//! Invariant: a local check converts to exactly the `HealthCheck` the catalog stores after a
//! registration (node name set, `Type`/`Interval`/`Timeout` filled from the definition, the
//! service's name and tags copied), so anti-entropy can compare the two field by field and a
//! check that is in sync is never written again.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use muster_server::{
    CheckDefinition as CatalogCheckDefinition, HealthCheck, HealthStatus, NodeService,
    ServiceAddress, Weights,
};

use super::{MAINTENANCE_CHECK_TYPE, NODE_MAINTENANCE_NAME, SERVICE_MAINTENANCE_NAME};
use crate::config::{self, CheckDefinition, CheckKind, CheckSettings, ServiceDefinition};
use crate::duration::format_duration;

/// Longest output or notes the catalog accepts (`muster_server`'s `MAX_OUTPUT_LEN`).
pub(crate) const MAX_CATALOG_OUTPUT: usize = 64 * 1024;

/// The catalog's status from the config's.
pub(crate) fn status_from_config(s: config::HealthStatus) -> HealthStatus {
    match s {
        config::HealthStatus::Passing => HealthStatus::Passing,
        config::HealthStatus::Warning => HealthStatus::Warning,
        config::HealthStatus::Critical => HealthStatus::Critical,
    }
}

/// The catalog's status from the check runner's.
pub(crate) fn status_from_runner(s: muster_checks::HealthStatus) -> HealthStatus {
    match s {
        muster_checks::HealthStatus::Passing => HealthStatus::Passing,
        muster_checks::HealthStatus::Warning => HealthStatus::Warning,
        muster_checks::HealthStatus::Critical => HealthStatus::Critical,
    }
}

/// The check runner's status from the catalog's.
pub(crate) fn status_to_runner(s: HealthStatus) -> muster_checks::HealthStatus {
    match s {
        HealthStatus::Passing => muster_checks::HealthStatus::Passing,
        HealthStatus::Warning => muster_checks::HealthStatus::Warning,
        HealthStatus::Critical => muster_checks::HealthStatus::Critical,
    }
}

/// The runner definition of a config check, starting at `initial` (status, output); `None`
/// for a check type muster cannot run, which never reaches the runner.
pub(crate) fn runner_definition(
    def: &CheckDefinition,
    settings: &CheckSettings,
    initial: (HealthStatus, String),
) -> Option<muster_checks::CheckDefinition> {
    let kind = match &def.kind {
        CheckKind::Http {
            url,
            method,
            header,
            body,
            tls_skip_verify,
            tls_server_name,
            disable_redirects,
        } => muster_checks::CheckKind::Http(muster_checks::HttpCheck {
            url: url.clone(),
            method: method.clone(),
            headers: header.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            body: body.clone(),
            tls_skip_verify: *tls_skip_verify,
            tls_server_name: Some(tls_server_name.clone()).filter(|n| !n.is_empty()),
            disable_redirects: *disable_redirects,
        }),
        CheckKind::Tcp { address } => muster_checks::CheckKind::Tcp {
            address: address.clone(),
        },
        CheckKind::Script { args } => muster_checks::CheckKind::Script { args: args.clone() },
        CheckKind::Ttl { ttl } => muster_checks::CheckKind::Ttl { ttl: *ttl },
        CheckKind::Unsupported { .. } => return None,
    };
    let interval = match &def.kind {
        CheckKind::Ttl { ttl } => *ttl,
        _ => def.interval.unwrap_or(config::MIN_CHECK_INTERVAL),
    };
    let mut out = muster_checks::CheckDefinition::new(def.id.clone(), kind, interval);
    if !def.timeout.is_zero() {
        out.timeout = def.timeout;
    }
    out.initial_status = status_to_runner(initial.0);
    out.initial_output = initial.1;
    out.success_before_passing = def.success_before_passing;
    out.failures_before_warning = Some(def.failures_before_warning);
    out.failures_before_critical = def.failures_before_critical;
    out.output_max_size = def.output_limit(settings.output_max_size).max(1);
    Some(out)
}

/// The catalog record of a service definition.
pub(crate) fn node_service(def: &ServiceDefinition) -> NodeService {
    NodeService {
        id: def.id.clone(),
        service: def.name.clone(),
        tags: def.tags.clone(),
        address: def.address.clone(),
        tagged_addresses: def
            .tagged_addresses
            .iter()
            .map(|(tag, a)| {
                (
                    tag.clone(),
                    ServiceAddress {
                        address: a.address.clone(),
                        port: a.port,
                    },
                )
            })
            .collect(),
        meta: def.meta.clone(),
        port: def.port,
        weights: Weights {
            passing: i32::try_from(def.weights.passing).unwrap_or(i32::MAX),
            warning: i32::try_from(def.weights.warning).unwrap_or(i32::MAX),
        },
        enable_tag_override: def.enable_tag_override,
        create_index: 0,
        modify_index: 0,
    }
}

/// What a check's catalog record is built from besides its definition.
pub(crate) struct CheckContext<'a> {
    /// This node's name.
    pub node: &'a str,
    /// The service the check belongs to, if any.
    pub service: Option<&'a NodeService>,
    /// Current status.
    pub status: HealthStatus,
    /// Current output.
    pub output: &'a str,
}

fn go(d: Duration) -> String {
    format_duration(d)
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn with_service(mut check: HealthCheck, service: Option<&NodeService>) -> HealthCheck {
    if let Some(svc) = service {
        check.service_name = svc.service.clone();
        check.service_tags = svc.tags.clone();
    }
    check
}

/// The catalog record of a runnable check.
pub(crate) fn catalog_check(def: &CheckDefinition, ctx: &CheckContext<'_>) -> HealthCheck {
    let mut definition = CatalogCheckDefinition::default();
    match &def.kind {
        CheckKind::Http {
            url,
            method,
            header,
            body,
            tls_skip_verify,
            tls_server_name,
            disable_redirects,
        } => {
            definition.http = url.clone();
            definition.method = method.clone();
            definition.header = header.clone();
            definition.body = body.clone();
            definition.tls_skip_verify = *tls_skip_verify;
            definition.tls_server_name = tls_server_name.clone();
            if *disable_redirects {
                definition
                    .extra
                    .insert("DisableRedirects".into(), serde_json::Value::Bool(true));
            }
        }
        CheckKind::Tcp { address } => definition.tcp = address.clone(),
        CheckKind::Script { args } => definition.script_args = args.clone(),
        CheckKind::Ttl { ttl } => definition.ttl = go(*ttl),
        // Shown as Consul shows the definition, so clients see what was asked for.
        CheckKind::Unsupported { targets, args, .. } => {
            for (field, target) in targets {
                match field.as_str() {
                    "UDP" => definition.udp = target.clone(),
                    "GRPC" => definition.grpc = target.clone(),
                    _ => {
                        definition
                            .extra
                            .insert(field.clone(), serde_json::Value::from(target.as_str()));
                    }
                }
            }
            definition.script_args = args.clone();
        }
    }
    let interval = match def.kind {
        CheckKind::Ttl { .. } => String::new(),
        _ => def.interval.map(go).unwrap_or_default(),
    };
    let timeout = match def.kind {
        CheckKind::Ttl { .. } => String::new(),
        _ if def.timeout.is_zero() => String::new(),
        _ => go(def.timeout),
    };
    definition.interval = interval.clone();
    definition.timeout = timeout.clone();
    if let Some(after) = def.deregister_critical_service_after {
        definition.deregister_critical_service_after = go(after);
    }
    let check = HealthCheck {
        node: ctx.node.to_owned(),
        check_id: def.id.clone(),
        name: def.name.clone(),
        status: ctx.status,
        notes: truncate(&def.notes, MAX_CATALOG_OUTPUT),
        output: truncate(ctx.output, MAX_CATALOG_OUTPUT),
        service_id: def.service_id.clone().unwrap_or_default(),
        service_name: String::new(),
        service_tags: Vec::new(),
        check_type: def.kind.type_name().to_owned(),
        interval,
        timeout,
        definition,
        create_index: 0,
        modify_index: 0,
    };
    with_service(check, ctx.service)
}

/// The catalog record of a maintenance check (always critical, the reason in `Notes`).
pub(crate) fn maintenance_check(
    node: &str,
    check_id: &str,
    service: Option<&NodeService>,
    reason: &str,
) -> HealthCheck {
    let check = HealthCheck {
        node: node.to_owned(),
        check_id: check_id.to_owned(),
        name: if service.is_some() {
            SERVICE_MAINTENANCE_NAME
        } else {
            NODE_MAINTENANCE_NAME
        }
        .to_owned(),
        status: HealthStatus::Critical,
        notes: truncate(reason, MAX_CATALOG_OUTPUT),
        service_id: service.map(|s| s.id.clone()).unwrap_or_default(),
        check_type: MAINTENANCE_CHECK_TYPE.to_owned(),
        ..HealthCheck::default()
    };
    with_service(check, service)
}

/// Consul's node tagged addresses: `lan` and `wan` plus the family-specific variants.
pub(crate) fn tagged_addresses(lan: IpAddr, wan: IpAddr) -> BTreeMap<String, String> {
    let family = |ip: IpAddr| if ip.is_ipv4() { "ipv4" } else { "ipv6" };
    BTreeMap::from([
        ("lan".to_owned(), lan.to_string()),
        (format!("lan_{}", family(lan)), lan.to_string()),
        ("wan".to_owned(), wan.to_string()),
        (format!("wan_{}", family(wan)), wan.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> CheckSettings {
        CheckSettings {
            update_interval: Duration::from_secs(300),
            output_max_size: 4096,
            discard_output: false,
            scripts: Default::default(),
        }
    }

    #[test]
    fn tcp_check_converts_for_runner_and_catalog() {
        let svc = ServiceDefinition::from_api_json(&json!({
            "Name": "galeradb", "Tags": ["icinga-galera"],
            "Check": {"ID": "mysql", "Name": "mysql port", "TCP": "localhost:3306",
                      "Interval": "10s", "Timeout": "1s", "OutputMaxSize": 100}
        }))
        .unwrap();
        let def = &svc.checks[0];
        let runner = runner_definition(def, &settings(), (HealthStatus::Critical, String::new()))
            .expect("a TCP check runs");
        assert_eq!(runner.id, "mysql");
        assert_eq!(runner.interval, Duration::from_secs(10));
        assert_eq!(runner.timeout, Duration::from_secs(1));
        assert_eq!(runner.output_max_size, 100);
        assert_eq!(
            runner.kind,
            muster_checks::CheckKind::Tcp {
                address: "localhost:3306".into()
            }
        );
        let ns = node_service(&svc);
        let ctx = CheckContext {
            node: "db1",
            service: Some(&ns),
            status: HealthStatus::Passing,
            output: "TCP connect localhost:3306: Success",
        };
        let hc = catalog_check(def, &ctx);
        assert_eq!(hc.check_type, "tcp");
        assert_eq!(hc.interval, "10s");
        assert_eq!(hc.timeout, "1s");
        assert_eq!(hc.definition.tcp, "localhost:3306");
        assert_eq!(hc.definition.interval, "10s");
        assert_eq!(hc.service_name, "galeradb");
        assert_eq!(hc.service_tags, ["icinga-galera"]);
        assert_eq!(hc.node, "db1");
    }

    #[test]
    fn ttl_check_has_no_interval_or_timeout_in_catalog() {
        let def = CheckDefinition::from_api_json(&json!({"Name": "t", "TTL": "30s"})).unwrap();
        let ctx = CheckContext {
            node: "n",
            service: None,
            status: HealthStatus::Critical,
            output: "",
        };
        let hc = catalog_check(&def, &ctx);
        assert_eq!(hc.check_type, "ttl");
        assert_eq!(hc.interval, "");
        assert_eq!(hc.timeout, "");
        assert_eq!(hc.definition.ttl, "30s");
        let runner = runner_definition(&def, &settings(), (HealthStatus::Passing, "ok".into()))
            .expect("a TTL check runs");
        assert_eq!(runner.interval, Duration::from_secs(30));
        assert_eq!(runner.initial_status, muster_checks::HealthStatus::Passing);
        assert_eq!(runner.initial_output, "ok");
    }

    #[test]
    fn unsupported_checks_never_reach_the_runner_and_show_their_definition() {
        let def = CheckDefinition::from_api_json(&json!({
            "Name": "g", "GRPC": "localhost:9000", "Interval": "5s"
        }))
        .unwrap();
        assert!(def.is_unsupported());
        assert!(
            runner_definition(&def, &settings(), (HealthStatus::Critical, String::new())).is_none()
        );
        let ctx = CheckContext {
            node: "n",
            service: None,
            status: HealthStatus::Critical,
            output: "",
        };
        let hc = catalog_check(&def, &ctx);
        assert_eq!(hc.check_type, "grpc");
        assert_eq!(hc.definition.grpc, "localhost:9000");
        assert_eq!(hc.interval, "5s");
        let alias = CheckDefinition::from_api_json(&json!({
            "Name": "a", "AliasService": "web", "AliasNode": "n2"
        }))
        .unwrap();
        let hc = catalog_check(&alias, &ctx);
        assert_eq!(hc.check_type, "alias");
        assert_eq!(hc.interval, "");
        assert_eq!(hc.timeout, "");
        assert_eq!(hc.definition.extra["AliasService"], json!("web"));
        assert_eq!(hc.definition.extra["AliasNode"], json!("n2"));
    }

    #[test]
    fn maintenance_and_tagged_addresses() {
        let m = maintenance_check("n", "_node_maintenance", None, "why");
        assert_eq!(m.name, NODE_MAINTENANCE_NAME);
        assert_eq!(m.status, HealthStatus::Critical);
        assert_eq!(m.notes, "why");
        assert_eq!(m.check_type, "maintenance");
        let t = tagged_addresses("10.0.0.1".parse().unwrap(), "::1".parse().unwrap());
        assert_eq!(t["lan"], "10.0.0.1");
        assert_eq!(t["lan_ipv4"], "10.0.0.1");
        assert_eq!(t["wan_ipv6"], "::1");
        assert_eq!(truncate("héllo", 2), "h");
    }
}
