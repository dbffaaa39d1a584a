//! Agent configuration: Consul's config files (JSON and HCL) and `consul agent` flags, turned
//! into one typed, fully defaulted [`RuntimeConfig`].
//!
//! Layout and data flow:
//! - `flags`: the `muster agent` command line ([`AgentArgs`], [`normalize_args`]);
//! - `source`: `-config-file`/`-config-dir` paths read in command-line order, directories in
//!   lexical order, only `*.json`/`*.hcl`, every file loaded or skipped recorded;
//! - `hcl`: HCL files converted to the same JSON value tree as JSON files;
//! - `schema` + `normalize`: every key Consul accepts, checked and renamed to canonical
//!   snake_case (aliases, case-insensitivity, deprecated keys translated with Consul's
//!   warnings; unknown keys fatal, unimplemented keys warned about);
//! - `merge`: Consul's merge rules over the normalized trees (structs field by field, later
//!   scalars win, lists append, later non-empty maps replace), remembering which source set
//!   every value;
//! - `runtime`: typed decoding, Consul's defaults and validation into [`RuntimeConfig`];
//! - `definition`: service and check definitions, shared with the HTTP API
//!   ([`ServiceDefinition::from_api_json`], [`CheckDefinition::from_api_json`]).
//!
//! Sources merge in Consul's order: `-dev` defaults, list-valued flags (so that they come
//! first in the merged lists, as in Consul), the config files, then the other flags.
//!
//! Invariants: [`load`] is a pure function of the arguments, the files they name and the
//! hostname (SIGHUP reload calls it again); it starts nothing, binds nothing and creates
//! nothing. Every error names the file (or "command-line flags") and the key; warnings are
//! returned, to be logged once tracing is set up ([`LoadedConfig::log`]).

mod definition;
mod error;
mod flags;
pub(crate) mod hcl;
mod merge;
mod normalize;
mod runtime;
mod schema;
mod source;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

pub use definition::{
    CheckDefinition, CheckKind, DEFAULT_CHECK_TIMEOUT, DEFAULT_SCRIPT_TIMEOUT, HealthStatus,
    MIN_CHECK_INTERVAL, MIN_DEREGISTER_AFTER, ScriptCheckPolicy, ServiceAddress, ServiceDefinition,
    Weights, unsupported_check_output,
};
pub use error::{ConfigError, DecodeError};
pub use flags::{AgentArgs, AgentFlags, normalize_args};
pub use runtime::{
    AclSettings, AclTokens, CheckSettings, DnsSettings, DownPolicy, GossipKey, GossipSettings,
    HttpSettings, LogLevel, LogSettings, Ports, RecursorStrategy, RuntimeConfig, ServerSettings,
    SoaSettings, TlsInterface, TlsSettings, TlsVersion,
};
pub use source::{ConfigFormat, FileEvent, FileOutcome};

use merge::{Origins, merge_object};
use schema::CONFIG;

/// What `muster validate` prints when the configuration loads.
pub const VALID_MESSAGE: &str = "Configuration is valid!";

/// The name given to the command line as a config source in errors and warnings.
pub const FLAGS_SOURCE: &str = "command-line flags";

/// The name given to the `-dev` defaults as a config source.
pub const DEV_SOURCE: &str = "dev mode";

/// A loaded configuration with everything worth reporting about how it was loaded.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The typed, defaulted, validated configuration.
    pub runtime: RuntimeConfig,
    /// Warnings (deprecated keys, keys accepted but not implemented, skipped files, values
    /// raised to a minimum...), each naming its file where there is one.
    pub warnings: Vec<String>,
    /// Every file found through the config paths, with what happened to it.
    pub files: Vec<FileEvent>,
    /// The merged configuration with canonical keys, before defaults: what the sources say.
    pub effective: Value,
}

impl LoadedConfig {
    /// Logs the files loaded and skipped and every warning. Call once tracing is set up.
    pub fn log(&self) {
        for event in &self.files {
            match &event.outcome {
                FileOutcome::Loaded => {
                    tracing::info!(file = %event.path.display(), "loaded config file");
                }
                FileOutcome::Empty => {
                    tracing::info!(file = %event.path.display(), "config file is empty");
                }
                FileOutcome::Skipped(reason) => {
                    tracing::warn!(file = %event.path.display(), %reason, "skipped config file");
                }
            }
        }
        for warning in &self.warnings {
            tracing::warn!("{warning}");
        }
    }
}

/// Loads the configuration for `muster agent` from its arguments, with the system hostname
/// as the default node name.
pub fn load(args: &AgentArgs) -> Result<LoadedConfig, ConfigError> {
    load_with_hostname(args, &system_hostname())
}

/// [`load`] with an explicit hostname (for tests and for callers that know better).
pub fn load_with_hostname(args: &AgentArgs, hostname: &str) -> Result<LoadedConfig, ConfigError> {
    let format = args
        .flags
        .config_format
        .as_deref()
        .map(ConfigFormat::parse)
        .transpose()?;
    let dev = args.dev();
    let mut warnings = Vec::new();
    let mut files = Vec::new();
    let mut tree = Map::new();
    let mut origins = Origins::default();
    let mut add = |name: &Arc<str>, source: Map<String, Value>| {
        merge_object(&mut tree, source, &CONFIG, "", name, &mut origins);
    };

    let flags_name: Arc<str> = Arc::from(FLAGS_SOURCE);
    let (flag_lists, flag_values) = args.to_sources()?;
    if dev {
        let name: Arc<str> = Arc::from(DEV_SOURCE);
        add(
            &name,
            normalize_source(&name, dev_defaults(), &mut warnings)?,
        );
    }
    add(
        &flags_name,
        normalize_source(&flags_name, flag_lists, &mut warnings)?,
    );
    for path in &args.config_paths {
        for file in source::read_path(path, format, &mut files, &mut warnings)? {
            let path = PathBuf::from(&*file.name);
            match source::parse(&file)? {
                None => files.push(FileEvent {
                    path,
                    outcome: FileOutcome::Empty,
                }),
                Some(value) => {
                    let normalized = normalize_source(&file.name, value, &mut warnings)?;
                    add(&file.name, normalized);
                    files.push(FileEvent {
                        path,
                        outcome: FileOutcome::Loaded,
                    });
                }
            }
        }
    }
    add(
        &flags_name,
        normalize_source(&flags_name, flag_values, &mut warnings)?,
    );

    let runtime = runtime::build(&tree, &origins, dev, hostname, &mut warnings)?;
    Ok(LoadedConfig {
        runtime,
        warnings,
        files,
        effective: Value::Object(tree),
    })
}

/// One config file's text through the whole loading path (parse, normalize, merge over
/// the defaults, build the runtime configuration), without the file system: the fuzzing
/// entry point (`fuzz/`). `hcl` picks the format as the file extension would.
#[doc(hidden)]
pub fn load_text(text: &str, hcl: bool) -> Result<LoadedConfig, ConfigError> {
    let name: Arc<str> = Arc::from(if hcl { "fuzz.hcl" } else { "fuzz.json" });
    let file = source::RawFile {
        name: name.clone(),
        text: text.to_owned(),
        format: if hcl {
            ConfigFormat::Hcl
        } else {
            ConfigFormat::Json
        },
    };
    let mut warnings = Vec::new();
    let mut tree = Map::new();
    let mut origins = Origins::default();
    if let Some(value) = source::parse(&file)? {
        let normalized = normalize_source(&name, value, &mut warnings)?;
        merge_object(&mut tree, normalized, &CONFIG, "", &name, &mut origins);
    }
    let runtime = runtime::build(&tree, &origins, false, "fuzz-host", &mut warnings)?;
    Ok(LoadedConfig {
        runtime,
        warnings,
        files: Vec::new(),
        effective: Value::Object(tree),
    })
}

fn normalize_source(
    name: &str,
    value: Value,
    warnings: &mut Vec<String>,
) -> Result<Map<String, Value>, ConfigError> {
    source::normalize_source(name, value, warnings)
}

/// Consul's dev-mode defaults, merged before the files (which may override them).
fn dev_defaults() -> Value {
    serde_json::json!({
        "bind_addr": "127.0.0.1",
        "client_addr": "127.0.0.1",
        "log_level": "DEBUG",
        "server": true,
        "bootstrap": true,
    })
}

/// Implements `muster validate <files or dirs>...`: loads them as `muster agent` would (with
/// `-config-format` when given) without starting anything. On success the CLI prints the
/// warnings and then [`VALID_MESSAGE`]; on failure, the error.
pub fn validate_paths(
    paths: &[PathBuf],
    config_format: Option<&str>,
) -> Result<LoadedConfig, ConfigError> {
    let args = AgentArgs {
        flags: AgentFlags {
            config_format: config_format.map(str::to_owned),
            ..AgentFlags::default()
        },
        config_paths: paths.to_vec(),
    };
    load(&args)
}

/// The hostname, from `/proc/sys/kernel/hostname` (empty when unreadable, which makes a
/// missing `node_name` an error, as in Consul).
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The temporary data directory of `-dev` mode, removed when dropped.
#[derive(Debug)]
pub struct DevDataDir {
    path: PathBuf,
}

impl DevDataDir {
    /// Creates a fresh, empty directory under the system temp dir.
    pub fn create() -> std::io::Result<DevDataDir> {
        let base = std::env::temp_dir();
        let mut last_err = None;
        // A name collision is astronomically unlikely; a few attempts bound the loop anyway.
        for _ in 0..8 {
            let path = base.join(format!("muster-dev-{}", uuid::Uuid::new_v4().simple()));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(DevDataDir { path }),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| std::io::Error::other("cannot create a dev data dir")))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// In dev mode without a configured `data_dir`, creates the temporary directory and
    /// points `runtime.data_dir` at it; keep the returned guard alive while the agent runs.
    pub fn attach(runtime: &mut RuntimeConfig) -> std::io::Result<Option<DevDataDir>> {
        if !runtime.needs_dev_data_dir() {
            return Ok(None);
        }
        let dir = DevDataDir::create()?;
        runtime.data_dir = dir.path.clone();
        Ok(Some(dir))
    }
}

impl Drop for DevDataDir {
    fn drop(&mut self) {
        // Best effort: a leftover temp dir is harmless, a panic in drop is not.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tls_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::net::SocketAddr;
    use std::time::Duration;

    const HOST: &str = "testhost";

    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new() -> Dir {
            Dir(tempfile::tempdir().unwrap())
        }

        fn write(&self, name: &str, content: &str) -> PathBuf {
            let path = self.0.path().join(name);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).unwrap();
            }
            fs::write(&path, content).unwrap();
            path
        }

        fn path(&self) -> &Path {
            self.0.path()
        }

        fn data_dir(&self) -> String {
            let d = self.0.path().join("data");
            fs::create_dir_all(&d).unwrap();
            d.display().to_string()
        }
    }

    fn load_args(args: &[&str]) -> Result<LoadedConfig, ConfigError> {
        let args = AgentArgs::parse_consul_style(args)?;
        load_with_hostname(&args, HOST)
    }

    /// Loads one directory holding `files`, with a data dir set unless the files set one.
    fn load_files(files: &[(&str, &str)]) -> Result<LoadedConfig, ConfigError> {
        let dir = Dir::new();
        let data = format!("-data-dir={}", dir.data_dir());
        let conf = dir.path().join("conf");
        fs::create_dir_all(&conf).unwrap();
        for (name, content) in files {
            dir.write(&format!("conf/{name}"), content);
        }
        let conf = format!("-config-dir={}", conf.display());
        load_args(&[&data, &conf])
    }

    fn err_of(files: &[(&str, &str)]) -> ConfigError {
        load_files(files).expect_err("the config should be refused")
    }

    #[test]
    fn defaults_follow_consul() {
        let dir = Dir::new();
        let data = format!("-data-dir={}", dir.data_dir());
        let rt = load_args(&[&data]).unwrap().runtime;
        assert_eq!(rt.node_name, HOST);
        assert_eq!(rt.datacenter, "dc1");
        assert!(!rt.server.enabled);
        assert_eq!(rt.bind_addr.to_string(), "0.0.0.0");
        assert_eq!(
            rt.client_addrs,
            ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(
            rt.ports,
            Ports {
                dns: Some(8600),
                http: Some(8500),
                https: None,
                serf_lan: 8301,
                serf_wan: Some(8302),
                server: 8300
            }
        );
        assert_eq!(
            rt.http.addrs,
            ["127.0.0.1:8500".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            rt.dns.addrs,
            ["127.0.0.1:8600".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(rt.dns.domain, "consul.");
        assert!(rt.dns.allow_stale);
        assert_eq!(rt.dns.max_stale, Duration::from_secs(87600 * 3600));
        assert_eq!(rt.dns.udp_answer_limit, 3);
        assert_eq!(rt.dns.recursor_timeout, Duration::from_secs(2));
        assert_eq!(rt.dns.recursor_strategy, RecursorStrategy::Sequential);
        // Not an open resolver by default: only this host and its own networks recurse.
        assert!(rt.dns.recursor_allow.allows("127.0.0.1".parse().unwrap()));
        assert!(!rt.dns.recursor_allow.allows("203.0.113.9".parse().unwrap()));
        assert!(rt.dns.enable_additional_node_meta_txt);
        assert_eq!(
            rt.dns.soa,
            SoaSettings {
                refresh: 3600,
                retry: 600,
                expire: 86400,
                min_ttl: 0
            }
        );
        assert_eq!(rt.gossip.retry_interval, Duration::from_secs(30));
        assert_eq!(rt.gossip.reconnect_timeout, Duration::from_secs(72 * 3600));
        assert!(rt.gossip.encrypt_verify_incoming && rt.gossip.encrypt_verify_outgoing);
        assert_eq!(rt.check_settings.update_interval, Duration::from_secs(300));
        assert_eq!(rt.check_settings.output_max_size, 4096);
        assert_eq!(rt.http.default_query_time, Duration::from_secs(300));
        assert_eq!(rt.http.max_query_time, Duration::from_secs(600));
        assert_eq!(rt.http.max_conns_per_client, 200);
        assert_eq!(rt.http.max_header_bytes, 64 * 1024);
        assert!(!rt.acl.enabled);
        assert_eq!(rt.acl.default_policy, crate::acl::DefaultPolicy::Allow);
        assert_eq!(rt.acl.down_policy, DownPolicy::ExtendCache);
        assert_eq!(rt.acl.token_ttl, Duration::from_secs(30));
        assert_eq!(rt.server.raft_multiplier, 5);
        assert_eq!(rt.logging.level, LogLevel::Info);
        assert_eq!(rt.logging.syslog_facility, "LOCAL0");
        // Client defaults for leaving.
        assert!(rt.leave_on_terminate);
        assert!(!rt.skip_leave_on_interrupt);
    }

    #[test]
    fn leave_defaults_depend_on_role() {
        let rt = load_files(&[("a.json", r#"{"server": true}"#)])
            .unwrap()
            .runtime;
        assert!(!rt.leave_on_terminate);
        assert!(rt.skip_leave_on_interrupt);
        let rt = load_files(&[(
            "a.json",
            r#"{"server": true, "leave_on_terminate": true, "skip_leave_on_interrupt": false}"#,
        )])
        .unwrap()
        .runtime;
        assert!(rt.leave_on_terminate);
        assert!(!rt.skip_leave_on_interrupt);
    }

    #[test]
    fn node_name_defaults_to_the_hostname_and_must_not_be_empty() {
        let dir = Dir::new();
        let args =
            AgentArgs::parse_consul_style([format!("-data-dir={}", dir.data_dir())]).unwrap();
        let err = load_with_hostname(&args, "").unwrap_err();
        assert_eq!(err.to_string(), "node_name cannot be empty");
        let rt = load_with_hostname(&args, " host-a \n").unwrap().runtime;
        assert_eq!(rt.node_name, "host-a");
        let loaded = load_files(&[("a.json", r#"{"node_name": "web_1"}"#)]).unwrap();
        assert!(loaded.warnings.iter().any(|w| w.starts_with(
            "Node name \"web_1\" will not be discoverable via DNS due to invalid characters."
        )));
        let err = err_of(&[("a.json", "{\"node_name\": \"a\\u0007b\"}")]);
        assert_eq!(err.key(), Some("node_name"));
    }

    #[test]
    fn hcl_expressions_are_refused_with_file_and_key() {
        let err = err_of(&[("agent.hcl", "retry_max = 1 + 2\n")]);
        assert_eq!(err.key(), Some("retry_max"));
        assert!(
            err.to_string()
                .contains("agent.hcl: retry_max: only literal values"),
            "{err}"
        );
    }

    #[test]
    fn data_dir_is_required_outside_dev_mode() {
        let err = load_args(&[]).unwrap_err();
        assert_eq!(err.to_string(), "data_dir cannot be empty");
        let dir = Dir::new();
        let file = dir.write("data", "not a dir");
        let err = load_args(&[&format!("-data-dir={}", file.display())]).unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");
    }

    #[test]
    fn files_merge_in_lexical_order_scalars_later_wins() {
        let loaded = load_files(&[
            ("b.json", r#"{"datacenter": "dc2", "log_level": "debug"}"#),
            ("a.json", r#"{"datacenter": "dc1", "node_name": "n1"}"#),
        ])
        .unwrap();
        assert_eq!(loaded.runtime.datacenter, "dc2");
        assert_eq!(loaded.runtime.node_name, "n1");
        assert_eq!(loaded.runtime.logging.level, LogLevel::Debug);
        let loaded_files: Vec<String> = loaded
            .files
            .iter()
            .filter(|e| e.outcome == FileOutcome::Loaded)
            .map(|e| e.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(loaded_files, ["a.json", "b.json"]);
    }

    #[test]
    fn config_paths_keep_command_line_order() {
        let dir = Dir::new();
        let data = format!("-data-dir={}", dir.data_dir());
        let x = dir.write("x.json", r#"{"datacenter": "from-x"}"#);
        dir.write("d/a.json", r#"{"datacenter": "from-dir"}"#);
        let d = dir.path().join("d");
        let rt = load_args(&[
            &data,
            &format!("-config-file={}", x.display()),
            &format!("-config-dir={}", d.display()),
        ])
        .unwrap()
        .runtime;
        assert_eq!(rt.datacenter, "from-dir");
        let rt = load_args(&[
            &data,
            &format!("-config-dir={}", d.display()),
            &format!("-config-file={}", x.display()),
        ])
        .unwrap()
        .runtime;
        assert_eq!(rt.datacenter, "from-x");
    }

    #[test]
    fn lists_append_across_files_and_flags_come_first() {
        let dir = Dir::new();
        let data = format!("-data-dir={}", dir.data_dir());
        dir.write(
            "c/a.json",
            r#"{"retry_join": ["10.0.0.1"], "recursors": ["8.8.8.8"]}"#,
        );
        dir.write(
            "c/b.json",
            r#"{"start_join": ["10.0.0.2"], "recursors": ["8.8.4.4", "8.8.8.8:53"]}"#,
        );
        let conf = format!("-config-dir={}", dir.path().join("c").display());
        let loaded =
            load_args(&[&data, &conf, "-retry-join=10.0.0.9", "-recursor=1.1.1.1"]).unwrap();
        let rt = loaded.runtime;
        assert_eq!(rt.gossip.retry_join, ["10.0.0.9", "10.0.0.1", "10.0.0.2"]);
        // Duplicates are ignored; port 53 is the default.
        let recursors: Vec<String> = rt.dns.recursors.iter().map(|r| r.to_string()).collect();
        assert_eq!(recursors, ["1.1.1.1:53", "8.8.8.8:53", "8.8.4.4:53"]);
        assert!(loaded.warnings.iter().any(|w| w.ends_with(
            "b.json: The 'start_join' field is deprecated. Use the 'retry_join' field instead."
        )));
    }

    #[test]
    fn gossip_keys_and_flags_are_kept_without_warnings() {
        let dir = Dir::new();
        let data = format!("-data-dir={}", dir.data_dir());
        dir.write(
            "c/a.json",
            r#"{"Encrypt": "ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8fX5/gIGCg4Q=",
                "encrypt_verify_incoming": false, "encrypt_verify_outgoing": false,
                "retry_join": ["10.0.0.1"], "retry_interval": "5s", "retry_max": 3,
                "rejoin_after_leave": true, "recursors": ["8.8.8.8"]}"#,
        );
        dir.write(
            "c/b.json",
            r#"{"start_join": ["10.0.0.2"], "retry_max": null}"#,
        );
        let conf = format!("-config-dir={}", dir.path().join("c").display());
        let key = "-encrypt=ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8fX5/gIGCg4Q=";
        let loaded =
            load_args(&[&data, &conf, "-join=10.0.0.8", "-retry-join=10.0.0.9", key]).unwrap();
        // Gossip works: the only warning left is start_join's deprecation.
        assert!(
            !loaded.warnings.iter().any(|w| w.contains("gossip")),
            "{:?}",
            loaded.warnings
        );
        assert!(loaded.warnings.iter().any(|w| w.ends_with(
            "b.json: The 'start_join' field is deprecated. Use the 'retry_join' field instead."
        )));
        let rt = loaded.runtime;
        assert_eq!(
            rt.gossip.retry_join,
            ["10.0.0.8", "10.0.0.9", "10.0.0.1", "10.0.0.2"]
        );
        assert_eq!(rt.gossip.retry_interval, Duration::from_secs(5));
        assert_eq!(rt.gossip.retry_max, 3);
        assert!(rt.gossip.rejoin_after_leave);
        assert!(!rt.gossip.encrypt_verify_incoming && !rt.gossip.encrypt_verify_outgoing);
        assert!(rt.gossip.encrypt_key.is_some());
        let err = load_args(&[&data, "-encrypt=%%%"]).unwrap_err();
        assert_eq!(err.key(), Some("encrypt"));
    }

    #[test]
    fn maps_replace_and_structs_merge() {
        let rt = load_files(&[
            (
                "a.json",
                r#"{"node_meta": {"a": "1", "b": "2"}, "ports": {"dns": 53, "http": 8000},
                    "dns_config": {"service_ttl": {"*": "5s"}, "node_ttl": "1s"}}"#,
            ),
            (
                "b.json",
                r#"{"node_meta": {"c": "3"}, "ports": {"dns": 8653},
                    "dns_config": {"service_ttl": {"web": "10s"}}}"#,
            ),
        ])
        .unwrap()
        .runtime;
        assert_eq!(
            rt.node_meta,
            BTreeMap::from([("c".to_owned(), "3".to_owned())])
        );
        assert_eq!(rt.ports.dns, Some(8653));
        assert_eq!(rt.ports.http, Some(8000));
        assert_eq!(
            rt.dns.service_ttl,
            BTreeMap::from([("web".to_owned(), Duration::from_secs(10))])
        );
        assert_eq!(rt.dns.node_ttl, Duration::from_secs(1));
    }

    use std::collections::BTreeMap;

    #[test]
    fn each_single_service_adds_a_list_entry() {
        let rt = load_files(&[
            ("a.json", r#"{"service": {"name": "a", "port": 1}}"#),
            (
                "b.json",
                r#"{"service": {"name": "b"}, "services": [{"name": "c"}]}"#,
            ),
            ("c.json", r#"{"check": {"name": "disk", "ttl": "30s"}}"#),
            ("d.json", r#"{"check": {"name": "mem", "ttl": "30s"}}"#),
        ])
        .unwrap()
        .runtime;
        let names: Vec<&str> = rt.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "c", "b"]);
        let checks: Vec<&str> = rt.checks.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(checks, ["disk", "mem"]);
    }

    #[test]
    fn unknown_key_error_names_file_and_key_path() {
        let err = err_of(&[("agent.json", r#"{"dns_config": {"udp_answer_limt": 3}}"#)]);
        assert!(err.is_unknown_key());
        let text = err.to_string();
        assert!(text.starts_with("failed to parse "), "{text}");
        assert!(
            text.ends_with("conf/agent.json: invalid config key dns_config.udp_answer_limt"),
            "{text}"
        );
        let err = err_of(&[(
            "svc.json",
            r#"{"service": {"name": "a", "check": {"name": "c", "ttl": "1s", "tcpp": "x"}}}"#,
        )]);
        assert!(
            err.to_string()
                .ends_with("invalid config key service.check.tcpp"),
            "{err}"
        );
    }

    #[test]
    fn unimplemented_keys_warn_with_file_and_key() {
        let loaded = load_files(&[("agent.json", r#"{"ui_config": {"enabled": true}}"#)]).unwrap();
        let w = loaded
            .warnings
            .iter()
            .find(|w| w.contains("ui_config"))
            .unwrap();
        assert!(w.starts_with("config key 'ui_config' in "), "{w}");
        assert!(
            w.ends_with(
                "conf/agent.json is accepted for compatibility but not implemented; ignored"
            ),
            "{w}"
        );
        // The deprecated `ui` key is translated first, then warned about.
        let loaded = load_files(&[("agent.json", r#"{"ui": true}"#)]).unwrap();
        assert!(loaded.warnings.iter().any(|w| w.ends_with(
            "The 'ui' field is deprecated. Use the 'ui_config.enabled' field instead."
        )));
        assert_eq!(loaded.effective["ui_config"]["enabled"], Value::Bool(true));
    }

    #[test]
    fn skipped_files_are_reported() {
        let loaded = load_files(&[
            ("agent.json", "{}"),
            ("agent.json.bak", "{"),
            ("notes.txt", "x"),
            ("empty.json", "  \n"),
        ])
        .unwrap();
        let skipped: Vec<String> = loaded
            .files
            .iter()
            .filter(|e| matches!(e.outcome, FileOutcome::Skipped(_)))
            .map(|e| e.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(skipped, ["agent.json.bak", "notes.txt"]);
        assert!(
            loaded
                .files
                .iter()
                .any(|e| e.outcome == FileOutcome::Empty && e.path.ends_with("empty.json"))
        );
        assert_eq!(
            loaded
                .warnings
                .iter()
                .filter(|w| w.starts_with("skipping file "))
                .count(),
            2
        );
    }

    #[test]
    fn bad_json_names_file_line_and_column() {
        let err = err_of(&[(
            "agent.json",
            "{\n  \"server\": true,\n  \"datacenter\": dc1\n}\n",
        )]);
        assert!(err.is_syntax());
        let text = err.to_string();
        assert!(
            text.contains("conf/agent.json: syntax error at line 3, column"),
            "{text}"
        );
    }

    #[test]
    fn hcl_files_load_like_json() {
        let rt = load_files(&[(
            "agent.hcl",
            r#"
            datacenter = "east"
            server = true
            bootstrap_expect = 3
            ports {
              dns = 8653
              https = -1
            }
            services {
              name = "a"
              check {
                tcp = "localhost:1"
                interval = "5s"
              }
            }
            services {
              name = "b"
            }
            "#,
        )])
        .unwrap()
        .runtime;
        assert_eq!(rt.datacenter, "east");
        assert_eq!(rt.server.bootstrap_expect, 3);
        assert_eq!(rt.ports.dns, Some(8653));
        assert_eq!(rt.services.len(), 2);
        assert_eq!(rt.services[0].checks[0].id, "service:a");
        let err = err_of(&[("agent.hcl", "server = = true\n")]);
        assert!(
            err.to_string()
                .contains("agent.hcl: syntax error at line 1"),
            "{err}"
        );
    }

    #[test]
    fn flags_override_files() {
        let dir = Dir::new();
        let data = format!("-data-dir={}", dir.data_dir());
        dir.write(
            "c/a.json",
            r#"{"datacenter": "dc1", "node_name": "file", "ports": {"http": 8000, "dns": 53},
                "log_level": "info", "node_meta": {"from": "file"}}"#,
        );
        let conf = format!("-config-dir={}", dir.path().join("c").display());
        let rt = load_args(&[
            &data,
            &conf,
            "-datacenter=dc9",
            "-node=flag",
            "-http-port=0",
            "-log-level=TRACE",
            "-node-meta=from:flag",
            "-node-meta=rack:r1",
        ])
        .unwrap()
        .runtime;
        assert_eq!(rt.datacenter, "dc9");
        assert_eq!(rt.node_name, "flag");
        assert_eq!(rt.ports.http, Some(0));
        assert_eq!(rt.ports.dns, Some(53));
        assert_eq!(rt.logging.level, LogLevel::Trace);
        assert_eq!(
            rt.node_meta,
            BTreeMap::from([
                ("from".to_owned(), "flag".to_owned()),
                ("rack".to_owned(), "r1".to_owned())
            ])
        );
        // Flag values are checked and blamed on the command line.
        let err = load_args(&[&data, "-retry-interval=5 s"]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("command-line flags: retry_interval: invalid duration"),
            "{err}"
        );
        let err = load_args(&[&data, "-dns-port=70000"]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("command-line flags: ports.dns: invalid port: 70000"),
            "{err}"
        );
    }

    #[test]
    fn dev_mode_defaults() {
        let loaded = load_args(&["-dev"]).unwrap();
        let mut rt = loaded.runtime;
        assert!(rt.dev_mode);
        assert!(rt.server.enabled);
        assert!(rt.server.bootstrap);
        assert_eq!(rt.server.bootstrap_expect, 0);
        assert_eq!(rt.node_name, HOST);
        assert_eq!(rt.bind_addr.to_string(), "127.0.0.1");
        assert_eq!(rt.client_addrs[0].to_string(), "127.0.0.1");
        assert_eq!(rt.logging.level, LogLevel::Debug);
        assert!(rt.needs_dev_data_dir());
        assert!(!loaded.warnings.iter().any(|w| w.contains("bootstrap")));
        let guard = DevDataDir::attach(&mut rt).unwrap().unwrap();
        let path = guard.path().to_owned();
        assert!(path.is_dir());
        assert_eq!(rt.data_dir, path);
        assert!(!rt.needs_dev_data_dir());
        drop(guard);
        assert!(!path.exists(), "the dev data dir is removed on drop");
        // Ports 0 are allowed everywhere tests need them.
        let rt = load_args(&[
            "-dev",
            "-dns-port=0",
            "-http-port=0",
            "-server-port=0",
            "-serf-lan-port=0",
        ])
        .unwrap()
        .runtime;
        assert_eq!(rt.server.rpc_addr.to_string(), "127.0.0.1:0");
        assert_eq!(rt.gossip.bind.to_string(), "127.0.0.1:0");
        assert_eq!(rt.http.addrs[0].to_string(), "127.0.0.1:0");
        // Dev mode does not take bootstrap_expect, as in Consul.
        let err = load_args(&["-dev", "-bootstrap-expect=3"]).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("'bootstrap_expect > 0' not allowed in dev mode"),
            "{err}"
        );
        // A configured data_dir is used as is.
        let dir = Dir::new();
        let mut rt = load_args(&["-dev", &format!("-data-dir={}", dir.data_dir())])
            .unwrap()
            .runtime;
        assert!(DevDataDir::attach(&mut rt).unwrap().is_none());
    }

    #[test]
    fn bootstrap_rules_and_warnings() {
        let err = err_of(&[("a.json", r#"{"bootstrap": true}"#)]);
        assert!(
            err.to_string()
                .ends_with("a.json: bootstrap: 'bootstrap = true' requires 'server = true'"),
            "{err}"
        );
        let err = err_of(&[("a.json", r#"{"bootstrap_expect": 3}"#)]);
        assert!(
            err.to_string()
                .ends_with("'bootstrap_expect > 0' requires 'server = true'")
        );
        let err = err_of(&[(
            "a.json",
            r#"{"server": true, "bootstrap": true, "bootstrap_expect": 3}"#,
        )]);
        assert!(
            err.to_string()
                .ends_with("'bootstrap_expect > 0' and 'bootstrap = true' are mutually exclusive")
        );
        let err = err_of(&[("a.json", r#"{"server": true, "bootstrap_expect": -1}"#)]);
        assert!(err.to_string().contains("bootstrap_expect cannot be -1"));
        let loaded =
            load_files(&[("a.json", r#"{"server": true, "bootstrap_expect": 2}"#)]).unwrap();
        assert!(loaded.warnings.iter().any(|w| w.starts_with(
            "bootstrap_expect = 2: A cluster with 2 servers will provide no failure tolerance."
        )));
        let loaded =
            load_files(&[("a.json", r#"{"server": true, "bootstrap_expect": 4}"#)]).unwrap();
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w.starts_with("bootstrap_expect is even number"))
        );
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w == "bootstrap_expect > 0: expecting 4 servers")
        );
        let loaded =
            load_files(&[("a.json", r#"{"server": true, "bootstrap_expect": 1}"#)]).unwrap();
        assert!(loaded.runtime.server.bootstrap);
        assert_eq!(loaded.runtime.server.bootstrap_expect, 0);
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w == "BootstrapExpect is set to 1; this is the same as Bootstrap mode.")
        );
        let loaded = load_files(&[("a.json", r#"{"server": true, "bootstrap": true}"#)]).unwrap();
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w == "bootstrap = true: do not enable unless necessary")
        );
    }

    /// One invalid value per implemented key: the error names the file, the key and the
    /// problem.
    #[test]
    fn implemented_keys_are_validated() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"{"dns_config": {"udp_answer_limit": 9}}"#,
                "dns_config.udp_answer_limit",
                "must be between 0 and 8",
            ),
            (
                r#"{"dns_config": {"udp_answer_limit": -1}}"#,
                "dns_config.udp_answer_limit",
                "must be between 0 and 8",
            ),
            (
                r#"{"dns_config": {"a_record_limit": -1}}"#,
                "dns_config.a_record_limit",
                "Must be greater than or equal to zero",
            ),
            (
                r#"{"dns_config": {"recursor_strategy": "fastest"}}"#,
                "dns_config.recursor_strategy",
                "invalid strategy: \"fastest\"",
            ),
            (
                r#"{"dns_config": {"recursor_allow": ["10.0.0.0/8", "10.0.0.0/40"]}}"#,
                "dns_config.recursor_allow",
                "\"10.0.0.0/40\" is not a network: the prefix length must be 0 to 32",
            ),
            (
                r#"{"acl": {"default_policy": "maybe"}}"#,
                "acl.default_policy",
                "invalid default policy \"maybe\"",
            ),
            (
                r#"{"acl_down_policy": "sometimes"}"#,
                "acl.down_policy",
                "invalid down policy \"sometimes\"",
            ),
            (
                r#"{"http_config": {"max_header_bytes": -1}}"#,
                "http_config.max_header_bytes",
                "cannot be -1. Must be between 0 (the default, 65536) and 16777216",
            ),
            (
                r#"{"dns_config": {"recursor_timeout": "0s"}}"#,
                "dns_config.recursor_timeout",
                "must be greater than zero",
            ),
            (
                r#"{"dns_config": {"max_stale": "forever"}}"#,
                "dns_config.max_stale",
                "invalid duration",
            ),
            (
                r#"{"dns_config": {"soa": {"retry": -1}}}"#,
                "dns_config.soa.retry",
                "must be between 0 and",
            ),
            (
                r#"{"dns_config": {"service_ttl": {"*": "5x"}}}"#,
                "dns_config.service_ttl.*",
                "unknown unit",
            ),
            (
                r#"{"encrypt": "c2hvcnQ="}"#,
                "encrypt",
                "Invalid key: key size must be 16, 24 or 32 bytes",
            ),
            (
                r#"{"encrypt": "%%%"}"#,
                "encrypt",
                "encrypt has invalid key",
            ),
            (
                r#"{"log_level": "loud"}"#,
                "log_level",
                "Invalid log level: loud.",
            ),
            (
                r#"{"syslog_facility": "LOCAL9"}"#,
                "syslog_facility",
                "invalid syslog facility",
            ),
            (
                r#"{"datacenter": "dc 1"}"#,
                "datacenter",
                "datacenter can only contain lowercase alphanumeric, - or _ characters.",
            ),
            (r#"{"node_id": "nope"}"#, "node_id", "is not a valid UUID"),
            (
                r#"{"node_meta": {"consul-x": "1"}}"#,
                "node_meta",
                "reserved for internal use",
            ),
            (
                r#"{"bind_addr": "10.0.0.1 10.0.0.2"}"#,
                "bind_addr",
                "bind_addr cannot contain multiple addresses",
            ),
            (
                r#"{"bind_addr": "eth0"}"#,
                "bind_addr",
                "invalid ip address: eth0",
            ),
            (
                r#"{"bind_addr": "{{ GetInterfaceIP \"eth0\" }}"}"#,
                "bind_addr",
                "go-sockaddr templates",
            ),
            (
                r#"{"client_addr": "127.0.0.1 nope"}"#,
                "client_addr",
                "invalid ip address: nope",
            ),
            (
                r#"{"client_addr": "unix:///tmp/x"}"#,
                "client_addr",
                "client_addr cannot be a unix socket",
            ),
            (
                r#"{"advertise_addr": "0.0.0.0"}"#,
                "advertise_addr",
                "Advertise address cannot be 0.0.0.0, :: or [::]",
            ),
            (
                r#"{"addresses": {"dns": "unix:///tmp/dns"}}"#,
                "addresses.dns",
                "DNS address cannot be a unix socket",
            ),
            (
                r#"{"addresses": {"http": "unix:///tmp/http"}}"#,
                "addresses.http",
                "not supported yet",
            ),
            (
                r#"{"ports": {"dns": 65536}}"#,
                "ports.dns",
                "invalid port: 65536",
            ),
            (
                r#"{"ports": {"server": -1}}"#,
                "ports.server",
                "cannot be disabled",
            ),
            (
                r#"{"ports": {"serf_lan": -1}}"#,
                "ports.serf_lan",
                "cannot be disabled",
            ),
            (
                r#"{"ports": {"dns": 8500}}"#,
                "ports.http",
                "HTTP address 127.0.0.1:8500 already configured for DNS",
            ),
            (
                r#"{"recursors": ["dns.google"]}"#,
                "recursors[0]",
                "expected an IP address or IP:port",
            ),
            (
                r#"{"recursors": ["0.0.0.0"]}"#,
                "recursors[0]",
                "DNS recursor address cannot be 0.0.0.0",
            ),
            (
                r#"{"recursors": ["unix:///x"]}"#,
                "recursors[0]",
                "DNS Recursors cannot be unix sockets",
            ),
            (
                r#"{"retry_join": ["provider=aws tag_key=x"]}"#,
                "retry_join[0]",
                "cloud auto-join",
            ),
            (
                r#"{"retry_join": ["a b"]}"#,
                "retry_join[0]",
                "invalid join address",
            ),
            (
                r#"{"retry_max": -1}"#,
                "retry_max",
                "retry_max must be between 0",
            ),
            (r#"{"domain": "a..b"}"#, "domain", "invalid domain"),
            (
                r#"{"alt_domain": "service.example"}"#,
                "alt_domain",
                "alt_domain cannot start with {service,connect,node,query,addr,dc1}",
            ),
            (
                r#"{"performance": {"raft_multiplier": 11}}"#,
                "performance.raft_multiplier",
                "performance.raft_multiplier cannot be 11. Must be between 1 and 10",
            ),
            (
                r#"{"check_output_max_size": 0}"#,
                "check_output_max_size",
                "check_output_max_size must be positive",
            ),
            (
                r#"{"limits": {"http_max_conns_per_client": -5}}"#,
                "limits.http_max_conns_per_client",
                "cannot be -5",
            ),
            (
                r#"{"max_query_time": "0s"}"#,
                "max_query_time",
                "must be greater than zero",
            ),
            (
                r#"{"server": 1}"#,
                "server",
                "expected a boolean, got a number",
            ),
            (
                r#"{"retry_join": "10.0.0.1"}"#,
                "retry_join",
                "expected a list, got a string",
            ),
        ];
        for (content, key, needle) in cases {
            let err = err_of(&[("agent.json", content)]);
            let text = err.to_string();
            assert_eq!(err.key(), Some(*key), "{content}: {text}");
            assert!(
                err.file().is_some_and(|f| f.ends_with("conf/agent.json")),
                "{content}: {text}"
            );
            assert!(
                text.contains(&format!("agent.json: {key}: ")),
                "{content}: {text}"
            );
            assert!(text.contains(needle), "{content}: {text}");
        }
    }

    #[test]
    fn implemented_keys_are_read() {
        let rt = load_files(&[(
            "agent.json",
            r#"{
              "node_name": "db1", "node_id": "ADF4238A-882B-9DDC-4A9D-5B6758E4159E",
              "datacenter": "DC1", "server": true, "bootstrap_expect": 3,
              "bind_addr": "127.0.0.11", "client_addr": "127.0.0.11 ::1",
              "advertise_addr": "10.1.1.1", "addresses": {"dns": "127.0.0.53"},
              "ports": {"dns": 53, "http": -1, "serf_wan": -1},
              "encrypt": "ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8fX5/gIGCg4Q=",
              "encrypt_verify_incoming": false,
              "log_level": "WARN", "log_json": true, "enable_syslog": true, "syslog_facility": "local3",
              "recursors": ["[::1]:5353", "127.0.0.1:5400 127.0.0.2"],
              "domain": "Example.", "alt_domain": "alt",
              "dns_config": {"allow_stale": false, "max_stale": "10s", "node_ttl": "30s",
                             "only_passing": true, "udp_answer_limit": 8, "a_record_limit": 2,
                             "enable_truncate": true, "recursor_strategy": "random",
                             "recursor_timeout": "500ms", "disable_compression": true,
                             "recursor_allow": ["any"],
                             "enable_additional_node_meta_txt": false,
                             "soa": {"min_ttl": 30}},
              "node_meta": {"rack": "r1"},
              "rejoin_after_leave": true, "retry_interval": "5s", "retry_max": 7,
              "reconnect_timeout": "24h",
              "enable_local_script_checks": true, "check_update_interval": "0s",
              "check_output_max_size": 1024, "discard_check_output": true,
              "default_query_time": "1m", "max_query_time": "2m",
              "performance": {"raft_multiplier": 1},
              "limits": {"http_max_conns_per_client": 0},
              "http_config": {"max_header_bytes": 10000},
              "pid_file": "/run/muster.pid", "disable_update_check": true
            }"#,
        )])
        .unwrap()
        .runtime;
        assert_eq!(rt.node_name, "db1");
        assert_eq!(
            rt.node_id.unwrap().to_string(),
            "adf4238a-882b-9ddc-4a9d-5b6758e4159e"
        );
        assert_eq!(rt.datacenter, "dc1");
        assert_eq!(rt.server.bootstrap_expect, 3);
        assert_eq!(rt.server.rpc_addr.to_string(), "127.0.0.11:8300");
        assert_eq!(rt.gossip.bind.to_string(), "127.0.0.11:8301");
        assert_eq!(rt.gossip.advertise_addr.unwrap().to_string(), "10.1.1.1");
        assert_eq!(rt.client_addrs.len(), 2);
        assert_eq!(
            rt.dns.addrs,
            ["127.0.0.53:53".parse::<SocketAddr>().unwrap()]
        );
        assert!(rt.http.addrs.is_empty());
        assert_eq!(rt.ports.serf_wan, None);
        assert_eq!(rt.gossip.encrypt_key.as_ref().unwrap().as_bytes().len(), 32);
        assert!(!rt.gossip.encrypt_verify_incoming);
        assert_eq!(rt.logging.level, LogLevel::Warn);
        assert!(rt.logging.json && rt.logging.syslog);
        assert_eq!(rt.logging.syslog_facility, "LOCAL3");
        let recursors: Vec<String> = rt.dns.recursors.iter().map(|r| r.to_string()).collect();
        assert_eq!(recursors, ["[::1]:5353", "127.0.0.1:5400", "127.0.0.2:53"]);
        assert_eq!(rt.dns.domain, "example.");
        assert_eq!(rt.dns.alt_domain.as_deref(), Some("alt."));
        assert!(!rt.dns.allow_stale);
        assert_eq!(rt.dns.max_stale, Duration::from_secs(10));
        assert_eq!(rt.dns.node_ttl, Duration::from_secs(30));
        assert!(rt.dns.only_passing && rt.dns.enable_truncate && rt.dns.disable_compression);
        assert_eq!(rt.dns.udp_answer_limit, 8);
        assert_eq!(rt.dns.a_record_limit, 2);
        assert_eq!(rt.dns.recursor_strategy, RecursorStrategy::Random);
        assert_eq!(rt.dns.recursor_timeout, Duration::from_millis(500));
        assert!(rt.dns.recursor_allow.allows("203.0.113.9".parse().unwrap()));
        assert!(!rt.dns.enable_additional_node_meta_txt);
        assert_eq!(rt.dns.soa.min_ttl, 30);
        assert_eq!(rt.dns.soa.refresh, 3600);
        assert!(rt.gossip.rejoin_after_leave);
        assert_eq!(rt.gossip.retry_interval, Duration::from_secs(5));
        assert_eq!(rt.gossip.retry_max, 7);
        assert_eq!(rt.gossip.reconnect_timeout, Duration::from_secs(24 * 3600));
        assert!(rt.check_settings.scripts.allows_files());
        assert!(!rt.check_settings.scripts.allows_api());
        assert_eq!(rt.check_settings.update_interval, Duration::ZERO);
        assert_eq!(rt.check_settings.output_max_size, 1024);
        assert!(rt.check_settings.discard_output);
        assert_eq!(rt.http.default_query_time, Duration::from_secs(60));
        assert_eq!(rt.http.max_query_time, Duration::from_secs(120));
        assert_eq!(rt.http.max_conns_per_client, 0);
        assert_eq!(rt.http.max_header_bytes, 10000);
        assert_eq!(rt.server.raft_multiplier, 1);
        assert_eq!(rt.pid_file, Some(PathBuf::from("/run/muster.pid")));
        assert!(rt.disable_update_check);
    }

    #[test]
    fn reconnect_timeout_below_minimum_is_raised() {
        let loaded = load_files(&[("a.json", r#"{"reconnect_timeout": "1h"}"#)]).unwrap();
        assert_eq!(
            loaded.runtime.gossip.reconnect_timeout,
            Duration::from_secs(8 * 3600)
        );
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w.contains("reconnect_timeout 1h0m0s is below the minimum of 8h0m0s"))
        );
    }

    #[test]
    fn script_checks_need_permission_in_files() {
        let svc = r#"{"service": {"name": "a", "checks": [{"ttl": "5s"}, {"args": ["/bin/true"], "interval": "10s"}]}}"#;
        let err = err_of(&[("svc.json", svc)]);
        let text = err.to_string();
        assert!(text.contains("svc.json: services[0].checks[1].args: Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or 'enable_local_script_checks' to true"), "{text}");
        let err = err_of(&[(
            "chk.json",
            r#"{"check": {"name": "c", "args": ["x"], "interval": "10s"}}"#,
        )]);
        assert_eq!(err.key(), Some("checks[0].args"));
        // Either setting allows them from files.
        for setting in ["enable_local_script_checks", "enable_script_checks"] {
            let rt = load_files(&[
                ("svc.json", svc),
                ("z.json", &format!(r#"{{"{setting}": true}}"#)),
            ])
            .unwrap()
            .runtime;
            assert!(rt.services[0].checks[1].is_script());
            assert_eq!(
                rt.script_checks().allows_api(),
                setting == "enable_script_checks"
            );
        }
        // The remote setting comes with Consul's warning.
        let loaded = load_files(&[("z.json", r#"{"enable_script_checks": true}"#)]).unwrap();
        assert!(loaded.warnings.iter().any(|w| w.contains("is DANGEROUS")));
    }

    #[test]
    fn script_checks_through_the_api_need_enable_script_checks() {
        let rt = load_files(&[("z.json", r#"{"enable_local_script_checks": true}"#)])
            .unwrap()
            .runtime;
        let check = CheckDefinition::from_api_json(&serde_json::json!({
            "Name": "s", "Args": ["/bin/true"], "Interval": "10s"
        }))
        .unwrap();
        let err = rt.script_checks().permit_api_check(&check).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true"
        );
    }

    #[test]
    fn embedded_checks_get_ids_and_names() {
        let rt = load_files(&[(
            "svc.json",
            r#"{"services": [
                {"name": "one", "check": {"tcp": "localhost:1", "interval": "10s"}},
                {"name": "two", "id": "two-1",
                 "checks": [{"ttl": "5s"}, {"id": "mine", "name": "Mine", "ttl": "5s"}],
                 "check": {"http": "http://localhost/", "interval": "10s"}}
            ]}"#,
        )])
        .unwrap()
        .runtime;
        let one = &rt.services[0].checks[0];
        assert_eq!(one.id, "service:one");
        assert_eq!(one.name, "Service 'one' check");
        assert_eq!(one.service_id.as_deref(), Some("one"));
        let ids: Vec<&str> = rt.services[1]
            .checks
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        // Files list `checks` first, then `check`; numbering counts every check.
        assert_eq!(ids, ["service:two-1:1", "mine", "service:two-1:3"]);
        assert_eq!(rt.services[1].checks[1].name, "Mine");
    }

    #[test]
    fn service_and_check_blocks_accept_aliases_in_files() {
        let rt = load_files(&[(
            "svc.json",
            r#"{"service": {"Name": "web", "EnableTagOverride": true, "Port": 80,
                "Check": {"CheckID": "w", "HTTP": "http://localhost/", "Interval": "10s",
                          "TLSSkipVerify": true, "DeregisterCriticalServiceAfter": "90m",
                          "Header": {"X-A": "1"}}}}"#,
        )])
        .unwrap()
        .runtime;
        let svc = &rt.services[0];
        assert!(svc.enable_tag_override);
        let check = &svc.checks[0];
        assert_eq!(check.id, "w");
        assert_eq!(
            check.deregister_critical_service_after,
            Some(Duration::from_secs(5400))
        );
        match &check.kind {
            CheckKind::Http {
                tls_skip_verify,
                header,
                ..
            } => {
                assert!(tls_skip_verify);
                assert_eq!(header["X-A"], ["1"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unsupported_check_types_load_with_a_warning_naming_file_and_key() {
        let loaded = load_files(&[(
            "svc.json",
            r#"{"service": {"name": "web", "checks": [
                  {"id": "u", "udp": "127.0.0.1:53", "interval": "10s"},
                  {"id": "g", "grpc": "127.0.0.1:9000", "grpc_use_tls": true, "interval": "10s"},
                  {"id": "h", "h2ping": "127.0.0.1:443", "h2ping_use_tls": false, "interval": "10s"},
                  {"id": "a", "alias_service": "db", "alias_node": "n2"},
                  {"id": "d", "docker_container_id": "f972c95ebf0e", "shell": "/bin/sh",
                   "args": ["/bin/true"], "interval": "10s"},
                  {"id": "o", "os_service": "sshd", "interval": "10s"},
                  {"id": "t", "tcp": "127.0.0.1:80", "interval": "10s"}]},
                "check": {"name": "standalone", "grpc": "127.0.0.1:9001", "interval": "5s"}}"#,
        )])
        .unwrap();
        let rt = loaded.runtime;
        let kinds: Vec<(&str, &str, bool)> = rt.services[0]
            .checks
            .iter()
            .map(|c| (c.id.as_str(), c.kind.type_name(), c.is_unsupported()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("u", "udp", true),
                ("g", "grpc", true),
                ("h", "h2ping", true),
                ("a", "alias", true),
                ("d", "docker", true),
                ("o", "os_service", true),
                ("t", "tcp", false),
            ]
        );
        assert!(
            !rt.services[0].checks[4].is_script(),
            "a Docker check is not run"
        );
        assert_eq!(rt.checks[0].kind.type_name(), "grpc");
        let unsupported: Vec<&String> = loaded
            .warnings
            .iter()
            .filter(|w| w.contains("muster does not support"))
            .collect();
        assert_eq!(unsupported.len(), 8, "{unsupported:?}");
        for (key, check_type) in [
            ("service.checks[0].udp", "udp"),
            ("service.checks[1].grpc", "grpc"),
            ("service.checks[2].h2ping", "h2ping"),
            ("service.checks[3].alias_node", "alias"),
            ("service.checks[3].alias_service", "alias"),
            ("service.checks[4].docker_container_id", "docker"),
            ("service.checks[5].os_service", "os_service"),
            ("check.grpc", "grpc"),
        ] {
            assert!(
                unsupported
                    .iter()
                    .any(|w| w.starts_with(&format!("config key '{key}' in "))
                        && w.contains("conf/svc.json: ")
                        && w.ends_with(&format!(
                            "muster does not support {check_type} checks yet; the check is \
                         registered and always critical"
                        ))),
                "{key}: {unsupported:?}"
            );
        }
    }

    #[test]
    fn check_validation_in_files_names_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"{"check": {"name": "c", "tcp": "a:1"}}"#,
                "checks[0]",
                "Must provide TTL or Script/DockerContainerID/HTTP/TCP and Interval",
            ),
            (
                r#"{"check": {"name": "c", "ttl": "1s", "status": "ok"}}"#,
                "checks[0].status",
                "Invalid check status: 'ok'",
            ),
            (
                r#"{"check": {"ttl": "1s"}}"#,
                "checks[0]",
                "Missing check name",
            ),
            (
                r#"{"service": {"port": 1}}"#,
                "services[0]",
                "Missing service name",
            ),
            (
                r#"{"check": {"name": "c", "grpc": "a:1"}}"#,
                "checks[0]",
                "Must provide TTL or Script/DockerContainerID/HTTP/TCP and Interval",
            ),
            (
                r#"{"check": {"name": "c", "grpc": "a:1", "udp": "a:2", "interval": "1s"}}"#,
                "checks[0]",
                "this check sets udp and grpc; a check has exactly one type",
            ),
            (
                r#"{"check": {"name": "c", "h2ping": "a:1", "tcp": "a:2", "interval": "1s"}}"#,
                "checks[0]",
                "this check sets tcp and h2ping; a check has exactly one type",
            ),
            (
                r#"{"check": {"name": "c", "alias_service": "web", "interval": "1s"}}"#,
                "checks[0]",
                "Interval cannot be set for Alias checks",
            ),
            (
                r#"{"check": {"name": "c", "docker_container_id": "x", "interval": "1s"}}"#,
                "checks[0]",
                "a Docker check (docker_container_id) needs args",
            ),
            (
                r#"{"check": {"name": "c", "script": "/bin/true", "interval": "1s"}}"#,
                "check.script",
                "use 'args'",
            ),
            (
                r#"{"service": {"name": "a", "weights": {"passing": 0}}}"#,
                "services[0].weights",
                "Passing must be greater than 0",
            ),
            (
                r#"{"service": {"name": "a", "port": 99999}}"#,
                "services[0].port",
                "invalid port: 99999",
            ),
        ];
        for (content, key, needle) in cases {
            let err = err_of(&[("x.json", content)]);
            let text = err.to_string();
            assert_eq!(err.key(), Some(*key), "{content}: {text}");
            assert!(text.contains(needle), "{content}: {text}");
            assert!(
                err.file().is_some_and(|f| f.ends_with("x.json")),
                "{content}: {text}"
            );
        }
    }

    #[test]
    fn duplicate_ids_name_both_files() {
        let err = err_of(&[
            ("a.json", r#"{"service": {"name": "web"}}"#),
            ("b.json", r#"{"service": {"name": "web", "port": 81}}"#),
        ]);
        let text = err.to_string();
        assert!(
            text.contains("b.json: services[1].id: duplicate service ID \"web\": also defined in "),
            "{text}"
        );
        assert!(text.contains("a.json at services[0]"), "{text}");
        let err = err_of(&[
            ("a.json", r#"{"check": {"name": "mem", "ttl": "5s"}}"#),
            (
                "b.json",
                r#"{"service": {"name": "x", "check": {"id": "mem", "ttl": "5s"}}}"#,
            ),
        ]);
        let text = err.to_string();
        assert!(text.contains("duplicate check ID \"mem\""), "{text}");
        assert!(text.contains("a.json") && text.contains("b.json"), "{text}");
    }

    #[test]
    fn config_format_flag() {
        let dir = Dir::new();
        let data = format!("-data-dir={}", dir.data_dir());
        let f = dir.write("agent.conf", r#"{"datacenter": "x"}"#);
        let file = format!("-config-file={}", f.display());
        assert!(matches!(
            load_args(&[&data, &file]).unwrap_err(),
            ConfigError::UnknownExtension { .. }
        ));
        let rt = load_args(&[&data, &file, "-config-format=json"])
            .unwrap()
            .runtime;
        assert_eq!(rt.datacenter, "x");
        let err = load_args(&[&data, "-config-format=yaml"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config: -config-format must be either 'hcl' or 'json'"
        );
    }

    #[test]
    fn validate_paths_checks_without_starting_anything() {
        let dir = Dir::new();
        let data = dir.data_dir();
        let conf = dir.write("c/agent.json", &format!(r#"{{"data_dir": "{data}"}}"#));
        let loaded = validate_paths(&[conf], None).unwrap();
        assert_eq!(loaded.runtime.data_dir, PathBuf::from(&data));
        assert_eq!(VALID_MESSAGE, "Configuration is valid!");
        let bad = dir.write("d/agent.json", r#"{"data_dir": "/x", "bogus": 1}"#);
        assert!(validate_paths(&[bad], None).unwrap_err().is_unknown_key());
        let missing = dir.path().join("nope");
        assert!(matches!(
            validate_paths(&[missing], None).unwrap_err(),
            ConfigError::Read { .. }
        ));
    }

    #[test]
    fn load_is_repeatable_for_reload() {
        let dir = Dir::new();
        let data = format!("-data-dir={}", dir.data_dir());
        dir.write("c/a.json", r#"{"service": {"name": "a"}}"#);
        let conf = format!("-config-dir={}", dir.path().join("c").display());
        let args = AgentArgs::parse_consul_style([data.as_str(), conf.as_str()]).unwrap();
        let first = load_with_hostname(&args, HOST).unwrap();
        let second = load_with_hostname(&args, HOST).unwrap();
        assert_eq!(first.runtime, second.runtime);
        dir.write("c/b.json", r#"{"service": {"name": "b"}}"#);
        let third = load_with_hostname(&args, HOST).unwrap();
        assert_eq!(third.runtime.services.len(), 2);
    }

    // ---- config-examples/ ----------------------------------------------------------------

    fn examples_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config-examples")
    }

    fn load_example(dir: &str, dev: bool) -> LoadedConfig {
        let path = examples_root().join(dir);
        let mut args = AgentArgs {
            config_paths: vec![path.clone()],
            ..AgentArgs::default()
        };
        args.flags.dev = Some(dev);
        load_with_hostname(&args, HOST).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The README's one-node Galera command is what it says: the flag overrides the file's
    /// `bootstrap_expect: 3`, and the gossip keys are taken without warnings.
    #[test]
    fn galera_node1_runs_alone_as_the_readme_says() {
        let readme = fs::read_to_string(examples_root().join("README.md")).unwrap();
        let command = "muster agent -config-dir=config-examples/galera/node1 -bootstrap-expect 1";
        assert!(
            readme.contains(command),
            "config-examples/README.md: {command}"
        );
        assert!(readme.contains("**One node alone**"));
        assert!(readme.contains("config-examples/galera/cluster.sh start"));
        let repo = examples_root().join("..");
        let dir = format!(
            "-config-dir={}",
            repo.join("config-examples/galera/node1").display()
        );
        let loaded = load_args(&[&dir, "-bootstrap-expect", "1"]).unwrap();
        // As in Consul, `bootstrap_expect: 1` is bootstrap mode: the server elects itself.
        assert!(loaded.runtime.server.bootstrap);
        assert_eq!(loaded.runtime.server.bootstrap_expect, 0);
        // The gossip settings are used as they are: no "not implemented" warning.
        assert!(loaded.runtime.gossip.encrypt_key.is_some());
        assert!(
            !loaded
                .warnings
                .iter()
                .any(|w| w.contains("not implemented")),
            "{:?}",
            loaded.warnings
        );
    }

    /// Every directory under config-examples/ that holds config files loads, and every file
    /// there is either a config file or a README.
    #[test]
    fn config_examples_all_load() {
        fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
            let mut has_config = false;
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, found);
                } else {
                    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                    let name = path.file_name().unwrap().to_string_lossy();
                    // Scripts sit in a scenario's dir (galera/cluster.sh), never in a
                    // node's config dir, where the agent would not read them.
                    assert!(
                        ext == "json" || ext == "hcl" || name == "README.md" || ext == "sh",
                        "unexpected file {}",
                        path.display()
                    );
                    has_config |= ext == "json" || ext == "hcl";
                }
            }
            if has_config {
                found.push(dir.to_owned());
            }
        }
        let root = examples_root();
        let mut dirs = Vec::new();
        walk(&root, &mut dirs);
        dirs.sort();
        let names: Vec<String> = dirs
            .iter()
            .map(|d| d.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "client",
                "dev",
                "galera/node1",
                "galera/node2",
                "galera/node3"
            ]
        );
        for name in &names {
            let loaded = load_example(name, name == "dev");
            assert!(
                loaded
                    .files
                    .iter()
                    .all(|f| f.outcome == FileOutcome::Loaded),
                "{name}: {:?}",
                loaded.files
            );
            // Every file also validates on its own with its directory's mode, as
            // `muster validate` would check it (dev needs -dev for its data dir).
            if name != "dev" {
                validate_paths(&[root.join(name)], None).unwrap();
            }
        }
    }

    #[test]
    fn config_examples_galera_nodes() {
        for n in 1..=3 {
            let loaded = load_example(&format!("galera/node{n}"), false);
            let rt = &loaded.runtime;
            assert_eq!(rt.node_name, format!("db{n}"));
            assert!(rt.server.enabled);
            assert_eq!(rt.server.bootstrap_expect, 3);
            assert_eq!(rt.datacenter, "dc1");
            assert_eq!(
                rt.data_dir,
                PathBuf::from(format!("/tmp/muster-galera/node{n}"))
            );
            let ip = format!("127.0.0.1{n}");
            assert_eq!(rt.bind_addr.to_string(), ip);
            assert_eq!(rt.http.addrs[0].to_string(), format!("{ip}:8500"));
            assert_eq!(rt.dns.addrs[0].to_string(), format!("{ip}:8600"));
            assert_eq!(rt.gossip.bind.to_string(), format!("{ip}:8301"));
            assert_eq!(rt.server.rpc_addr.to_string(), format!("{ip}:8300"));
            assert_eq!(
                rt.gossip.retry_join,
                ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
            );
            assert!(rt.gossip.encrypt_key.is_some());
            assert_eq!(rt.logging.level, LogLevel::Info);
            assert!(rt.logging.syslog);
            assert_eq!(
                rt.dns.recursors,
                ["127.0.0.1:5400".parse::<SocketAddr>().unwrap()]
            );
            let svc = &rt.services[0];
            assert_eq!(
                (svc.id.as_str(), svc.name.as_str()),
                ("galeradb", "galeradb")
            );
            assert_eq!(svc.tags, ["icinga-galera"]);
            let check = &svc.checks[0];
            assert_eq!(check.id, "mysql");
            assert_eq!(check.name, "Check mysql port listening");
            assert_eq!(check.service_id.as_deref(), Some("galeradb"));
            assert_eq!(
                check.kind,
                CheckKind::Tcp {
                    address: format!("{ip}:3306")
                }
            );
            assert_eq!(check.interval, Some(Duration::from_secs(10)));
            assert_eq!(check.timeout, Duration::from_secs(1));
            assert_eq!(check.initial_status, HealthStatus::Critical);
            assert!(
                loaded
                    .warnings
                    .iter()
                    .any(|w| w.contains("'start_join' field is deprecated"))
            );
        }
    }

    #[test]
    fn config_examples_dev_and_client() {
        let mut loaded = load_example("dev", true);
        let rt = &mut loaded.runtime;
        assert!(rt.server.enabled && rt.server.bootstrap);
        let web = &rt.services[0];
        assert_eq!((web.name.as_str(), web.port), ("web", 8080));
        assert!(matches!(
            &web.checks[0].kind,
            CheckKind::Http { url, .. } if url == "http://127.0.0.1:8500/v1/status/leader"
        ));
        assert_eq!(web.checks[0].interval, Some(Duration::from_secs(10)));
        assert_eq!(
            rt.dns.recursors,
            ["127.0.0.1:5400".parse::<SocketAddr>().unwrap()]
        );
        // The check targets the agent's own HTTP address in dev mode.
        assert_eq!(rt.http.addrs[0].to_string(), "127.0.0.1:8500");

        let rt = load_example("client", false).runtime;
        assert!(!rt.server.enabled);
        assert_eq!(rt.bind_addr.to_string(), "127.0.0.20");
        assert_eq!(
            rt.gossip.retry_join,
            ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
        );
        assert!(rt.dns.only_passing, "dns.hcl is merged after agent.json");
        assert_eq!(rt.dns.node_ttl, Duration::from_secs(10));
    }

    #[test]
    fn fuzz_corpus_and_regressions_load_without_panic() {
        let inputs = crate::fuzz_inputs("config");
        assert!(inputs.len() >= 3, "the seed corpus is there");
        for (path, data) in inputs {
            let Some((&format, rest)) = data.split_first() else {
                continue;
            };
            if let Ok(text) = std::str::from_utf8(rest) {
                // Errors are fine; a panic is not.
                let _ = load_text(text, format & 1 == 1);
            }
            let _ = path;
        }
        // The examples load as JSON through this path too.
        let ok = load_text(
            r#"{"node_name": "n1", "data_dir": "/tmp/x", "service": {"name": "web"}}"#,
            false,
        )
        .unwrap();
        assert_eq!(ok.runtime.services[0].name, "web");
    }
}
