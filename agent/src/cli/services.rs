//! `muster services register|deregister` inputs: service definitions read from files the way
//! `muster agent` reads config files (JSON or HCL, `service {}` / `services []`, any key
//! spelling), then turned into the JSON body of `PUT /v1/agent/service/register`.
//!
//! Invariant: [`service_to_api_json`] is lossless: decoding its output with
//! `ServiceDefinition::from_api_json` gives back the same definition.

use std::path::PathBuf;

use serde_json::{Map, Value, json};

use crate::config::{self, AgentArgs, AgentFlags, CheckDefinition, CheckKind, ServiceDefinition};
use crate::duration::format_duration;

/// Reads the services defined in `files` (as `consul services register` does: with the
/// agent's config parser, in dev mode so no agent settings are required).
pub fn services_from_files(files: &[PathBuf]) -> Result<Vec<ServiceDefinition>, String> {
    let args = AgentArgs {
        flags: AgentFlags {
            dev: Some(true),
            ..AgentFlags::default()
        },
        config_paths: files.to_vec(),
    };
    let loaded = config::load(&args).map_err(|e| e.to_string())?;
    if loaded.runtime.services.is_empty() {
        return Err("no service definition found in the given files".to_owned());
    }
    Ok(loaded.runtime.services)
}

/// The `/v1/agent/service/register` body for a definition, in Consul's API spelling.
pub fn service_to_api_json(s: &ServiceDefinition) -> Value {
    let tagged: Map<String, Value> = s
        .tagged_addresses
        .iter()
        .map(|(k, a)| (k.clone(), json!({"Address": a.address, "Port": a.port})))
        .collect();
    let mut v = json!({
        "ID": s.id,
        "Name": s.name,
        "Tags": s.tags,
        "Address": s.address,
        "TaggedAddresses": tagged,
        "Meta": s.meta,
        "Port": s.port,
        "Weights": {"Passing": s.weights.passing, "Warning": s.weights.warning},
        "EnableTagOverride": s.enable_tag_override,
        "Checks": s.checks.iter().map(check_to_api_json).collect::<Vec<_>>(),
    });
    if !s.token.is_empty() {
        v["Token"] = json!(s.token);
    }
    v
}

/// One check of a service, in Consul's API spelling.
pub fn check_to_api_json(c: &CheckDefinition) -> Value {
    let mut v = json!({
        "CheckID": c.id,
        "Name": c.name,
        "Notes": c.notes,
        "Status": c.initial_status.as_str(),
        "SuccessBeforePassing": c.success_before_passing,
        "FailuresBeforeWarning": c.failures_before_warning,
        "FailuresBeforeCritical": c.failures_before_critical,
    });
    match &c.kind {
        CheckKind::Http {
            url,
            method,
            header,
            body,
            tls_skip_verify,
            tls_server_name,
            disable_redirects,
        } => {
            v["HTTP"] = json!(url);
            v["Method"] = json!(method);
            v["Header"] = json!(header);
            v["Body"] = json!(body);
            v["TLSSkipVerify"] = json!(tls_skip_verify);
            v["TLSServerName"] = json!(tls_server_name);
            v["DisableRedirects"] = json!(disable_redirects);
        }
        CheckKind::Tcp { address } => v["TCP"] = json!(address),
        CheckKind::Script { args } => v["Args"] = json!(args),
        CheckKind::Ttl { ttl } => v["TTL"] = json!(format_duration(*ttl)),
        // Sent as written, so the agent registers the same always-critical check.
        CheckKind::Unsupported { targets, args, .. } => {
            for (field, target) in targets {
                v[field.as_str()] = json!(target);
            }
            if !args.is_empty() {
                v["Args"] = json!(args);
            }
        }
    }
    if let Some(interval) = c.interval {
        v["Interval"] = json!(format_duration(interval));
    }
    if !c.timeout.is_zero() {
        v["Timeout"] = json!(format_duration(c.timeout));
    }
    if let Some(after) = c.deregister_critical_service_after {
        v["DeregisterCriticalServiceAfter"] = json!(format_duration(after));
    }
    if let Some(max) = c.output_max_size {
        v["OutputMaxSize"] = json!(max);
    }
    if !c.token.is_empty() {
        v["Token"] = json!(c.token);
    }
    v
}

/// The body for `-name -id -address -port -tag -meta` (only what was given).
pub fn service_from_flags(
    name: &str,
    id: Option<&str>,
    address: Option<&str>,
    port: Option<u16>,
    tags: &[String],
    meta: &[(String, String)],
) -> Value {
    let mut v = json!({"Name": name});
    if let Some(id) = id.filter(|s| !s.is_empty()) {
        v["ID"] = json!(id);
    }
    if let Some(address) = address.filter(|s| !s.is_empty()) {
        v["Address"] = json!(address);
    }
    if let Some(port) = port {
        v["Port"] = json!(port);
    }
    if !tags.is_empty() {
        v["Tags"] = json!(tags);
    }
    if !meta.is_empty() {
        let m: Map<String, Value> = meta.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        v["Meta"] = Value::Object(m);
    }
    v
}

/// Parses a `key=value` flag value (`-meta`, `-node-meta`), with Consul's error.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
        None => Err(format!("missing \"=\" value in argument: {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, content: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn files_with_service_or_services_in_any_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let one = write(
            &dir,
            "one.json",
            r#"{"Service": {"Name": "web", "Port": 80, "Tags": ["v1"],
                "Check": {"HTTP": "http://127.0.0.1:80/health", "Interval": "10s"}}}"#,
        );
        let many = write(
            &dir,
            "many.json",
            r#"{"services": [{"name": "db", "id": "db-1", "port": 3306,
                 "checks": [{"tcp": "127.0.0.1:3306", "interval": "5s", "timeout": "1s"},
                            {"id": "db-ttl", "ttl": "30s", "status": "passing"}]},
                {"name": "cache", "meta": {"tier": "1"},
                 "tagged_addresses": {"lan": {"address": "10.0.0.1", "port": 6379}}}]}"#,
        );
        let services = services_from_files(&[one, many]).unwrap();
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["web", "db", "cache"]);
        assert_eq!(services[1].id, "db-1");
        assert_eq!(services[1].checks.len(), 2);
    }

    #[test]
    fn api_json_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            &dir,
            "all.json",
            r#"{"services": [
                {"name": "web", "port": 80, "tags": ["a", "b"], "address": "10.0.0.5",
                 "enable_tag_override": true, "weights": {"passing": 5, "warning": 2},
                 "meta": {"k": "v"},
                 "tagged_addresses": {"wan": {"address": "1.2.3.4", "port": 8080}},
                 "checks": [
                   {"http": "https://127.0.0.1/", "method": "POST", "header": {"X-A": ["1", "2"]},
                    "body": "{}", "tls_skip_verify": true, "tls_server_name": "svc",
                    "disable_redirects": true, "interval": "15s", "timeout": "3s",
                    "success_before_passing": 2, "failures_before_critical": 3,
                    "deregister_critical_service_after": "90m", "notes": "n"},
                   {"tcp": "127.0.0.1:80", "interval": "10s"},
                   {"ttl": "45s", "status": "warning"}
                 ]},
                {"name": "bare"}
            ]}"#,
        );
        for def in services_from_files(&[file]).unwrap() {
            let body = service_to_api_json(&def);
            let back = ServiceDefinition::from_api_json(&body)
                .unwrap_or_else(|e| panic!("{}: {e}\n{body:#}", def.name));
            assert_eq!(back, def, "{body:#}");
        }
    }

    #[test]
    fn bad_files_are_reported_with_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let bad = write(
            &dir,
            "bad.json",
            r#"{"service": {"name": "x", "port": "eighty"}}"#,
        );
        let err = services_from_files(&[bad]).unwrap_err();
        assert!(err.contains("bad.json"), "{err}");
        let empty = write(&dir, "empty.json", r#"{}"#);
        assert!(
            services_from_files(&[empty])
                .unwrap_err()
                .contains("no service")
        );
    }

    #[test]
    fn flags_body_has_only_what_was_given() {
        let body = service_from_flags("web", None, None, Some(80), &[], &[]);
        assert_eq!(body, json!({"Name": "web", "Port": 80}));
        let body = service_from_flags(
            "web",
            Some("web-1"),
            Some("10.0.0.1"),
            None,
            &["a".into(), "b".into()],
            &[("k".into(), "v=w".into())],
        );
        assert_eq!(
            body,
            json!({"Name": "web", "ID": "web-1", "Address": "10.0.0.1",
                   "Tags": ["a", "b"], "Meta": {"k": "v=w"}})
        );
        assert_eq!(key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(
            key_value("nope").unwrap_err(),
            "missing \"=\" value in argument: nope"
        );
    }
}
