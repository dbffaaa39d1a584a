//! The command-line flags of `muster agent`, spelled as Consul spells them (`-server`,
//! `-bootstrap-expect=3`, `-retry-join=a -retry-join=b`, `-config-dir=/etc/consul.d`).
//!
//! [`normalize_args`] is the pre-pass that turns Go's single-dash flags into clap's `--name`
//! form (double dashes are accepted as they are). [`AgentArgs`] is a clap `Args` type to
//! flatten into the binary's command. Boolean flags behave as Go's: `-server` and
//! `-server=true` turn it on, `-server=false` off, and `-server false` does not eat the next
//! argument.
//!
//! Flags are one more config source: scalar flags override the files; list flags
//! (`-retry-join`, `-join`, `-recursor`) add to the files' lists and, as in Consul, come
//! first in them; `-node-meta` replaces the files' `node_meta` map (maps replace on merge).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgMatches, Args, Command, FromArgMatches};
use serde_json::{Map, Value};

use super::error::ConfigError;

/// Rewrites Go-style flags (`-name`, `-name=value`) to clap's (`--name`, `--name=value`).
///
/// Only arguments of the form `-<letter><more>` are rewritten, so `-h`, negative numbers
/// (`-1`) and values after `--` stay as they are.
pub fn normalize_args<I, T>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut out = Vec::new();
    let mut rest_verbatim = false;
    for arg in args {
        let arg: OsString = arg.into();
        if rest_verbatim {
            out.push(arg);
            continue;
        }
        let rewritten = match arg.to_str() {
            Some("--") => {
                rest_verbatim = true;
                None
            }
            Some(s)
                if s.len() > 2 && s.starts_with('-') && s.as_bytes()[1].is_ascii_alphabetic() =>
            {
                Some(OsString::from(format!("-{s}")))
            }
            _ => None,
        };
        out.push(rewritten.unwrap_or(arg));
    }
    out
}

/// The flags of `muster agent` other than the config paths (see [`AgentArgs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct AgentFlags {
    /// Development mode: a single bootstrapping server on 127.0.0.1 with a temporary data dir.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub dev: Option<bool>,
    /// Run as a server (a Raft voter).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub server: Option<bool>,
    /// Bootstrap a single server without waiting for others.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub bootstrap: Option<bool>,
    /// The number of servers to wait for before bootstrapping the cluster.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub bootstrap_expect: Option<i64>,
    /// The node name (default: the hostname).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// The node ID (a UUID).
    #[arg(long, value_name = "UUID")]
    pub node_id: Option<String>,
    /// The datacenter.
    #[arg(long, value_name = "DC")]
    pub datacenter: Option<String>,
    /// Where the agent keeps its state.
    #[arg(long, value_name = "PATH")]
    pub data_dir: Option<String>,
    /// The address for cluster traffic (gossip and server RPC).
    #[arg(long, value_name = "IP")]
    pub bind: Option<String>,
    /// The addresses for client traffic (HTTP and DNS), space-separated.
    #[arg(long, value_name = "IPS")]
    pub client: Option<String>,
    /// The address advertised to other nodes.
    #[arg(long, value_name = "IP")]
    pub advertise: Option<String>,
    /// The WAN address advertised to other datacenters.
    #[arg(long, value_name = "IP")]
    pub advertise_wan: Option<String>,
    /// An agent to join (an alias of -retry-join); repeatable.
    #[arg(long, value_name = "ADDR")]
    pub join: Vec<String>,
    /// An agent to join, retrying until it works; repeatable.
    #[arg(long, value_name = "ADDR")]
    pub retry_join: Vec<String>,
    /// The time between join attempts (a Go duration).
    #[arg(long, value_name = "DURATION")]
    pub retry_interval: Option<String>,
    /// The number of join attempts (0: forever).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub retry_max: Option<i64>,
    /// Rejoin the cluster after a graceful leave.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub rejoin: Option<bool>,
    /// Read config files as this format regardless of their extension (`json` or `hcl`).
    #[arg(long, value_name = "FORMAT")]
    pub config_format: Option<String>,
    /// The log level: trace, debug, info, warn or error.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log as JSON.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub log_json: Option<bool>,
    /// Log to syslog.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub syslog: Option<bool>,
    /// The DNS port (-1 disables DNS; 0 picks a free port).
    #[arg(long, value_name = "PORT", allow_negative_numbers = true)]
    pub dns_port: Option<i64>,
    /// The HTTP API port (-1 disables; 0 picks a free port).
    #[arg(long, value_name = "PORT", allow_negative_numbers = true)]
    pub http_port: Option<i64>,
    /// The HTTPS API port (-1 disables, the default; 0 picks a free port).
    #[arg(long, value_name = "PORT", allow_negative_numbers = true)]
    pub https_port: Option<i64>,
    /// The server RPC (Raft) port (0 picks a free port).
    #[arg(long, value_name = "PORT", allow_negative_numbers = true)]
    pub server_port: Option<i64>,
    /// The LAN gossip port (0 picks a free port).
    #[arg(long, value_name = "PORT", allow_negative_numbers = true)]
    pub serf_lan_port: Option<i64>,
    /// The WAN gossip port (-1 disables).
    #[arg(long, value_name = "PORT", allow_negative_numbers = true)]
    pub serf_wan_port: Option<i64>,
    /// An upstream DNS server (IP or IP:port); repeatable.
    #[arg(long, value_name = "ADDR")]
    pub recursor: Vec<String>,
    /// The gossip encryption key (base64 of 16, 24 or 32 bytes).
    #[arg(long, value_name = "KEY")]
    pub encrypt: Option<String>,
    /// Node metadata as key:value; repeatable.
    #[arg(long, value_name = "KEY:VALUE")]
    pub node_meta: Vec<String>,
    /// The DNS domain (default `consul.`).
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// A second DNS domain answered like the first.
    #[arg(long, value_name = "DOMAIN")]
    pub alt_domain: Option<String>,
    /// Allow script checks from config files and the HTTP API.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub enable_script_checks: Option<bool>,
    /// Allow script checks from config files only.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub enable_local_script_checks: Option<bool>,
    /// Write the agent's PID to this file.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<String>,
    /// The default wait of blocking queries (a Go duration).
    #[arg(long, value_name = "DURATION")]
    pub default_query_time: Option<String>,
    /// The longest wait of blocking queries (a Go duration).
    #[arg(long, value_name = "DURATION")]
    pub max_query_time: Option<String>,
}

/// Only here so that clap parses the two path flags; [`AgentArgs`] merges them in order.
#[derive(Debug, Clone, Default, Args)]
struct ConfigPathArgs {
    /// A config file (JSON or HCL); repeatable, read in command-line order.
    #[arg(long, value_name = "PATH")]
    config_file: Vec<PathBuf>,
    /// A directory of config files (`*.json`, `*.hcl`, in lexical order); repeatable.
    #[arg(long, value_name = "PATH")]
    config_dir: Vec<PathBuf>,
}

/// Everything `muster agent` takes on its command line.
///
/// Flatten it into the binary's clap command (`#[command(flatten)] agent: AgentArgs`) and
/// run the arguments through [`normalize_args`] first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentArgs {
    /// The flags.
    pub flags: AgentFlags,
    /// `-config-file` and `-config-dir` paths in command-line order (Consul treats both
    /// alike: a directory is read file by file, a file as one file).
    pub config_paths: Vec<PathBuf>,
}

impl AgentArgs {
    /// Parses Consul-style arguments (without the program name) into `AgentArgs`.
    pub fn parse_consul_style<I, T>(args: I) -> Result<AgentArgs, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let cmd = AgentArgs::augment_args(Command::new("agent").no_binary_name(true));
        let matches = cmd
            .try_get_matches_from(normalize_args(args))
            .map_err(|e| ConfigError::Flags(e.to_string()))?;
        AgentArgs::from_arg_matches(&matches).map_err(|e| ConfigError::Flags(e.to_string()))
    }

    /// True when `-dev` is set.
    pub fn dev(&self) -> bool {
        self.flags.dev.unwrap_or(false)
    }

    /// The flags as config sources: the list values (merged before the files, as Consul
    /// does, so they come first in the merged lists) and everything else (merged last).
    pub(crate) fn to_sources(&self) -> Result<(Value, Value), ConfigError> {
        let f = &self.flags;
        let mut lists = Map::new();
        let retry_join: Vec<Value> = f
            .join
            .iter()
            .chain(&f.retry_join)
            .map(|s| Value::from(s.as_str()))
            .collect();
        if !retry_join.is_empty() {
            lists.insert("retry_join".into(), Value::Array(retry_join));
        }
        if !f.recursor.is_empty() {
            lists.insert(
                "recursors".into(),
                Value::Array(f.recursor.iter().map(|s| Value::from(s.as_str())).collect()),
            );
        }

        let mut values = Map::new();
        let mut put = |key: &str, v: Option<Value>| {
            if let Some(v) = v {
                values.insert(key.to_owned(), v);
            }
        };
        let s = |v: &Option<String>| v.as_deref().map(Value::from);
        let b = |v: &Option<bool>| v.map(Value::from);
        let i = |v: &Option<i64>| v.map(Value::from);
        put("server", b(&f.server));
        put("bootstrap", b(&f.bootstrap));
        put("bootstrap_expect", i(&f.bootstrap_expect));
        put("node_name", s(&f.node));
        put("node_id", s(&f.node_id));
        put("datacenter", s(&f.datacenter));
        put("data_dir", s(&f.data_dir));
        put("bind_addr", s(&f.bind));
        put("client_addr", s(&f.client));
        put("advertise_addr", s(&f.advertise));
        put("advertise_addr_wan", s(&f.advertise_wan));
        put("retry_interval", s(&f.retry_interval));
        put("retry_max", i(&f.retry_max));
        put("rejoin_after_leave", b(&f.rejoin));
        put("log_level", s(&f.log_level));
        put("log_json", b(&f.log_json));
        put("enable_syslog", b(&f.syslog));
        put("encrypt", s(&f.encrypt));
        put("domain", s(&f.domain));
        put("alt_domain", s(&f.alt_domain));
        put("enable_script_checks", b(&f.enable_script_checks));
        put(
            "enable_local_script_checks",
            b(&f.enable_local_script_checks),
        );
        put("pid_file", s(&f.pid_file));
        put("default_query_time", s(&f.default_query_time));
        put("max_query_time", s(&f.max_query_time));

        let mut ports = Map::new();
        for (key, v) in [
            ("dns", f.dns_port),
            ("http", f.http_port),
            ("https", f.https_port),
            ("server", f.server_port),
            ("serf_lan", f.serf_lan_port),
            ("serf_wan", f.serf_wan_port),
        ] {
            if let Some(v) = v {
                ports.insert(key.to_owned(), Value::from(v));
            }
        }
        if !ports.is_empty() {
            values.insert("ports".into(), Value::Object(ports));
        }

        if !f.node_meta.is_empty() {
            let mut meta = Map::new();
            for pair in &f.node_meta {
                let Some((k, v)) = pair.split_once(':') else {
                    return Err(ConfigError::Flags(format!(
                        "invalid -node-meta value {pair:?}: expected key:value"
                    )));
                };
                meta.insert(k.to_owned(), Value::from(v));
            }
            values.insert("node_meta".into(), Value::Object(meta));
        }
        Ok((Value::Object(lists), Value::Object(values)))
    }
}

impl FromArgMatches for AgentArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let flags = AgentFlags::from_arg_matches(matches)?;
        // Keep -config-file and -config-dir interleaved as given: Consul reads them in
        // command-line order, and later sources win.
        let mut paths: Vec<(usize, PathBuf)> = Vec::new();
        for id in ["config_file", "config_dir"] {
            if let (Some(indices), Some(values)) =
                (matches.indices_of(id), matches.get_many::<PathBuf>(id))
            {
                paths.extend(indices.zip(values.cloned()));
            }
        }
        paths.sort_by_key(|(i, _)| *i);
        Ok(AgentArgs {
            flags,
            config_paths: paths.into_iter().map(|(_, p)| p).collect(),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = AgentArgs::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for AgentArgs {
    fn augment_args(cmd: Command) -> Command {
        ConfigPathArgs::augment_args(AgentFlags::augment_args(cmd))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        ConfigPathArgs::augment_args_for_update(AgentFlags::augment_args_for_update(cmd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn single_dash_flags_become_double_dash() {
        let out = normalize_args([
            "-server",
            "-bootstrap-expect=3",
            "-node",
            "db1",
            "--datacenter=dc2",
            "-h",
            "-1",
            "--",
            "-x",
        ]);
        let out: Vec<&str> = out.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(
            out,
            [
                "--server",
                "--bootstrap-expect=3",
                "--node",
                "db1",
                "--datacenter=dc2",
                "-h",
                "-1",
                "--",
                "-x"
            ]
        );
    }

    #[test]
    fn parses_consul_spelling() {
        let args = AgentArgs::parse_consul_style([
            "-server",
            "-bootstrap-expect=3",
            "-node=db1",
            "-config-dir=/etc/a",
            "-config-file",
            "/etc/b.json",
            "-config-dir=/etc/c",
            "-retry-join=10.0.0.1",
            "-retry-join",
            "10.0.0.2",
            "-join=10.0.0.3",
            "-recursor=1.1.1.1",
            "-dns-port=-1",
            "-http-port=0",
            "-log-json=false",
            "-node-meta=rack:r1",
            "-enable-local-script-checks",
        ])
        .unwrap();
        assert_eq!(args.flags.server, Some(true));
        assert_eq!(args.flags.bootstrap_expect, Some(3));
        assert_eq!(args.flags.node.as_deref(), Some("db1"));
        assert_eq!(args.flags.log_json, Some(false));
        assert_eq!(args.flags.dns_port, Some(-1));
        assert_eq!(
            args.config_paths,
            [
                PathBuf::from("/etc/a"),
                PathBuf::from("/etc/b.json"),
                PathBuf::from("/etc/c")
            ]
        );
        let (lists, values) = args.to_sources().unwrap();
        assert_eq!(
            lists,
            json!({"retry_join": ["10.0.0.3", "10.0.0.1", "10.0.0.2"], "recursors": ["1.1.1.1"]})
        );
        assert_eq!(values["ports"], json!({"dns": -1, "http": 0}));
        assert_eq!(values["node_meta"], json!({"rack": "r1"}));
        assert_eq!(values["enable_local_script_checks"], json!(true));
        assert_eq!(values["server"], json!(true));
    }

    #[test]
    fn bool_flag_does_not_eat_the_next_argument() {
        let err = AgentArgs::parse_consul_style(["-server", "false"]).unwrap_err();
        assert!(matches!(err, ConfigError::Flags(_)));
        let args = AgentArgs::parse_consul_style(["-server=false", "-dev"]).unwrap();
        assert_eq!(args.flags.server, Some(false));
        assert!(args.dev());
    }

    /// The way the binary embeds it: a subcommand of a clap `Parser`.
    #[test]
    fn works_as_a_subcommand() {
        use clap::{Parser, Subcommand};
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            command: Cmd,
        }
        #[derive(Subcommand)]
        enum Cmd {
            Agent(AgentArgs),
        }
        let cli = Cli::try_parse_from(normalize_args([
            "muster",
            "agent",
            "-config-file=/a.json",
            "-dev",
            "-config-dir=/b",
        ]))
        .unwrap();
        let Cmd::Agent(args) = cli.command;
        assert!(args.dev());
        assert_eq!(
            args.config_paths,
            [PathBuf::from("/a.json"), PathBuf::from("/b")]
        );
    }

    #[test]
    fn bad_flags_are_errors() {
        assert!(AgentArgs::parse_consul_style(["-no-such-flag"]).is_err());
        assert!(AgentArgs::parse_consul_style(["-dns-port=abc"]).is_err());
        let args = AgentArgs::parse_consul_style(["-node-meta=novalue"]).unwrap();
        assert!(args.to_sources().is_err());
    }
}
