//! The `muster` command line: `agent` runs an agent ([`crate::runtime`]); every other
//! subcommand is a thin client of the local agent's HTTP API, with Consul's flags
//! (single-dash, Go style: `-http-addr=...`), output and exit codes.
//!
//! Layout: this file holds the clap definitions and the commands; `client` the HTTP client
//! and address resolution; `output` the pure formatting of every table; `services` the
//! service-file handling of `services register|deregister`.
//!
//! Exit codes: 0 on success, 1 on any error (usage errors included, as Consul), 2 for
//! `members` when no member matches the status filter.

pub mod client;
pub mod operator;
pub mod output;
pub mod services;
pub mod tls;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use base64::Engine as _;
use clap::{Args, Parser, Subcommand};

use crate::config::{self, AgentArgs, VALID_MESSAGE};
use client::{ApiClient, encode};

/// The `muster` command.
#[derive(Debug, Parser)]
#[command(
    name = "muster",
    about = "Service discovery and health checks, Consul-compatible, with a caching DNS forwarder",
    disable_version_flag = true
)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs an agent (server or client).
    Agent(Box<AgentArgs>),
    /// Checks config files or directories without starting anything.
    Validate(ValidateArgs),
    /// Lists the members this agent knows.
    Members(MembersArgs),
    /// Reads the catalog.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Registers and deregisters services with the local agent.
    #[command(subcommand)]
    Services(ServicesCommand),
    /// Prints a new gossip encryption key.
    Keygen,
    /// Lists, installs, uses or removes gossip encryption keys on every member.
    Keyring(KeyringArgs),
    /// Creates a CA and agent certificates (Consul's file names).
    #[command(subcommand)]
    Tls(tls::TlsCommand),
    /// Prints the version.
    Version,
    /// Makes the local agent leave the cluster gracefully and shut down.
    Leave(HttpFlags),
    /// Makes the local agent join the cluster through one or more agents.
    Join(JoinArgs),
    /// Moves a failed member to `left` on every agent.
    ForceLeave(ForceLeaveArgs),
    /// Makes the local agent reload its configuration.
    Reload(HttpFlags),
    /// Operator tools (Raft peers).
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
}

/// How to reach the local agent.
#[derive(Debug, Clone, Default, Args)]
pub struct HttpFlags {
    /// The agent's HTTP address (`host:port`, `http://host:port` or `https://host:port`); default
    /// `$CONSUL_HTTP_ADDR`, `$MUSTER_HTTP_ADDR`, then 127.0.0.1:8500.
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<String>,
    /// The ACL token sent as `X-Consul-Token`; default `$CONSUL_HTTP_TOKEN`,
    /// `$MUSTER_HTTP_TOKEN`.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// CA certificates (PEM) for an HTTPS agent; default `$CONSUL_CACERT`, else the system's.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// A directory of CA certificates; default `$CONSUL_CAPATH`.
    #[arg(long, value_name = "DIR")]
    pub ca_path: Option<PathBuf>,
    /// A client certificate (PEM) for an agent with `verify_incoming`; default
    /// `$CONSUL_CLIENT_CERT`.
    #[arg(long, value_name = "FILE")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's key; default `$CONSUL_CLIENT_KEY`.
    #[arg(long, value_name = "FILE")]
    pub client_key: Option<PathBuf>,
    /// The name the agent's certificate must be valid for (else the address); default
    /// `$CONSUL_TLS_SERVER_NAME`.
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

impl HttpFlags {
    fn client(&self) -> Result<ApiClient, String> {
        let env = |k: &str| std::env::var(k).ok();
        let base = client::resolve_http_addr(self.http_addr.as_deref(), env)?;
        let tls = client::ClientTls::resolve(
            client::ClientTls {
                ca_file: self.ca_file.clone(),
                ca_path: self.ca_path.clone(),
                client_cert: self.client_cert.clone(),
                client_key: self.client_key.clone(),
                server_name: self.tls_server_name.clone(),
            },
            env,
        );
        ApiClient::with_tls(
            base,
            client::resolve_token(self.token.as_deref(), env),
            &tls,
        )
    }
}

/// `muster validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Print nothing when the configuration is valid.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub quiet: bool,
    /// Read files as this format (`json` or `hcl`) whatever their extension.
    #[arg(long, value_name = "FORMAT")]
    pub config_format: Option<String>,
    /// Config files or directories.
    pub paths: Vec<PathBuf>,
}

/// `muster members`.
#[derive(Debug, Args)]
pub struct MembersArgs {
    /// Show every tag.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub detailed: bool,
    /// Only members whose status matches this regular expression.
    #[arg(long, value_name = "REGEX", default_value = ".*")]
    pub status: String,
    /// How to reach the agent.
    #[command(flatten)]
    pub http: HttpFlags,
}

/// `muster keyring`: exactly one of the actions.
#[derive(Debug, Args)]
pub struct KeyringArgs {
    /// Install this key on every member (it then opens packets).
    #[arg(long, value_name = "KEY")]
    pub install: Option<String>,
    /// Make this installed key the primary on every member (it then seals packets).
    #[arg(long = "use", value_name = "KEY")]
    pub use_key: Option<String>,
    /// Remove this key (not the primary) from every member.
    #[arg(long, value_name = "KEY")]
    pub remove: Option<String>,
    /// List the keys and how many members have each.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub list: bool,
    /// List the primary keys only.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub list_primary: bool,
    /// How to reach the agent.
    #[command(flatten)]
    pub http: HttpFlags,
}

/// `muster join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// Join the WAN pool (not supported: there is no WAN pool).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub wan: bool,
    /// Addresses of agents to join (`ip`, `ip:port`, hostnames, `[v6]:port`).
    #[arg(required = true)]
    pub addrs: Vec<String>,
    /// How to reach the agent.
    #[command(flatten)]
    pub http: HttpFlags,
}

/// `muster force-leave`.
#[derive(Debug, Args)]
pub struct ForceLeaveArgs {
    /// Remove the member from the list entirely instead of marking it left.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub prune: bool,
    /// Force the member out of the WAN pool (not supported: there is no WAN pool).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub wan: bool,
    /// The member's node name.
    pub node: String,
    /// How to reach the agent.
    #[command(flatten)]
    pub http: HttpFlags,
}

/// `muster catalog ...`.
#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Lists the services.
    Services(CatalogServicesArgs),
    /// Lists the nodes.
    Nodes(CatalogNodesArgs),
}

/// `muster catalog services`.
#[derive(Debug, Args)]
pub struct CatalogServicesArgs {
    /// Show each service's tags.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub tags: bool,
    /// Only the services of this node.
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Only services on nodes with this metadata (`key=value`, repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub node_meta: Vec<String>,
    /// How to reach the agent.
    #[command(flatten)]
    pub http: HttpFlags,
}

/// `muster catalog nodes`.
#[derive(Debug, Args)]
pub struct CatalogNodesArgs {
    /// Only nodes providing this service.
    #[arg(long, value_name = "SERVICE")]
    pub service: Option<String>,
    /// Show full IDs, tagged addresses and metadata.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub detailed: bool,
    /// Only nodes with this metadata (`key=value`, repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub node_meta: Vec<String>,
    /// How to reach the agent.
    #[command(flatten)]
    pub http: HttpFlags,
}

/// `muster services ...`.
#[derive(Debug, Subcommand)]
pub enum ServicesCommand {
    /// Registers services from flags or from files.
    Register(RegisterArgs),
    /// Deregisters services by ID or as defined in files.
    Deregister(DeregisterArgs),
}

/// `muster services register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// Service name.
    #[arg(long)]
    pub name: Option<String>,
    /// Service ID (default: the name).
    #[arg(long)]
    pub id: Option<String>,
    /// Service address.
    #[arg(long)]
    pub address: Option<String>,
    /// Service port.
    #[arg(long)]
    pub port: Option<u16>,
    /// A tag (repeatable).
    #[arg(long)]
    pub tag: Vec<String>,
    /// Metadata as `key=value` (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Service definition files.
    pub files: Vec<PathBuf>,
    /// How to reach the agent.
    #[command(flatten)]
    pub http: HttpFlags,
}

/// `muster services deregister`.
#[derive(Debug, Args)]
pub struct DeregisterArgs {
    /// The service ID.
    #[arg(long)]
    pub id: Option<String>,
    /// Service definition files.
    pub files: Vec<PathBuf>,
    /// How to reach the agent.
    #[command(flatten)]
    pub http: HttpFlags,
}

/// Where commands write.
struct Io<'a> {
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
}

impl Io<'_> {
    fn out(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }

    fn err(&mut self, text: &str) {
        let _ = writeln!(self.err, "{text}");
    }
}

/// The `muster` binary: parses the arguments (Go-style flags accepted), runs the command and
/// returns the process exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    // reqwest is built without a default TLS provider; install ring once, before any client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = match Cli::try_parse_from(config::normalize_args(args)) {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
            let _ = e.print();
            return code;
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // tokio reads TOKIO_WORKER_THREADS itself when no count is set.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        builder.worker_threads(default_workers(cpus));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return 1;
        }
    };
    let code = runtime.block_on(async move {
        let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
        let mut io = Io {
            out: &mut out,
            err: &mut err,
        };
        run(cli.command, &mut io).await
    });
    let _ = std::io::stdout().flush();
    // Bounded: tasks that outlive the agent (a DNS thread finishing a query) get a moment.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}

/// Worker threads of the main runtime on a machine with `cpus` CPUs: half of them, 1 to 4.
///
/// The agent shares its machine with the database it watches, and DNS and gossip have
/// threads of their own. Fewer workers also mean fewer cross-thread wake-ups per Raft write:
/// on the 2-CPU bench machine (5 agents) one worker per agent took 8-17 % less CPU per
/// catalog write than two and wrote 1.2-1.3x as fast at 32 and 128 concurrent clients.
fn default_workers(cpus: usize) -> usize {
    (cpus / 2).clamp(1, 4)
}

async fn run(command: Command, io: &mut Io<'_>) -> i32 {
    match command {
        Command::Agent(args) => crate::runtime::run_agent_command(*args).await,
        Command::Validate(a) => validate(&a, io),
        Command::Members(a) => members(&a, io).await,
        Command::Catalog(CatalogCommand::Services(a)) => catalog_services(&a, io).await,
        Command::Catalog(CatalogCommand::Nodes(a)) => catalog_nodes(&a, io).await,
        Command::Services(ServicesCommand::Register(a)) => services_register(&a, io).await,
        Command::Services(ServicesCommand::Deregister(a)) => services_deregister(&a, io).await,
        Command::Keygen => {
            io.out(&keygen());
            0
        }
        Command::Version => {
            io.out(&output::version_text());
            0
        }
        Command::Leave(http) => {
            simple_put(
                &http,
                "/v1/agent/leave",
                "Error leaving",
                "Graceful leave complete",
                io,
            )
            .await
        }
        Command::Keyring(a) => keyring(&a, io).await,
        Command::Tls(c) => tls::run(c, io),
        Command::Join(a) => join(&a, io).await,
        Command::ForceLeave(a) => force_leave(&a, io).await,
        Command::Reload(http) => {
            simple_put(
                &http,
                "/v1/agent/reload",
                "Error reloading",
                "Configuration reload triggered",
                io,
            )
            .await
        }
        Command::Operator(c) => operator::run(c, io).await,
    }
}

/// A new gossip key: base64 of 32 random bytes (AES-256).
pub fn keygen() -> String {
    let mut key = [0u8; 32];
    rand::fill(&mut key);
    base64::engine::general_purpose::STANDARD.encode(key)
}

fn validate(a: &ValidateArgs, io: &mut Io<'_>) -> i32 {
    if a.paths.is_empty() {
        io.err("Must specify at least one config file or directory");
        return 1;
    }
    match config::validate_paths(&a.paths, a.config_format.as_deref()) {
        Ok(loaded) => {
            if !a.quiet {
                for w in &loaded.warnings {
                    io.err(&format!("[WARN] {w}"));
                }
                io.out(VALID_MESSAGE);
            }
            0
        }
        Err(e) => {
            io.err(&format!("Config validation failed: {e}"));
            1
        }
    }
}

fn client_or_report(http: &HttpFlags, io: &mut Io<'_>) -> Option<ApiClient> {
    match http.client() {
        Ok(c) => Some(c),
        Err(e) => {
            io.err(&format!("Error connecting to Consul agent: {e}"));
            None
        }
    }
}

async fn simple_put(
    http: &HttpFlags,
    path: &str,
    error: &str,
    success: &str,
    io: &mut Io<'_>,
) -> i32 {
    let Some(client) = client_or_report(http, io) else {
        return 1;
    };
    match client.put(path, None).await {
        Ok(()) => {
            io.out(success);
            0
        }
        Err(e) => {
            io.err(&format!("{error}: {e}"));
            1
        }
    }
}

/// `muster keyring`: Consul's messages and list format.
async fn keyring(a: &KeyringArgs, io: &mut Io<'_>) -> i32 {
    let actions = [
        a.install.is_some(),
        a.use_key.is_some(),
        a.remove.is_some(),
        a.list,
        a.list_primary,
    ];
    if actions.iter().filter(|x| **x).count() != 1 {
        io.err("Exactly one of -list, -list-primary, -install, -use or -remove is required");
        return 1;
    }
    let Some(client) = client_or_report(&a.http, io) else {
        return 1;
    };
    let path = "/v1/operator/keyring";
    if a.list || a.list_primary {
        io.out("==> Gathering installed encryption keys...");
        let pools = match client.get_json(path).await {
            Ok(v) => v,
            Err(e) => {
                io.err(&format!("Error: {e}"));
                return 1;
            }
        };
        let field = if a.list_primary {
            "PrimaryKeys"
        } else {
            "Keys"
        };
        for pool in pools.as_array().into_iter().flatten() {
            let total = pool["NumNodes"].as_u64().unwrap_or(0);
            io.out("");
            io.out("LAN:");
            for (key, n) in pool[field].as_object().into_iter().flatten() {
                io.out(&format!("  {key} [{}/{total}]", n.as_u64().unwrap_or(0)));
            }
            for (node, why) in pool["Messages"].as_object().into_iter().flatten() {
                io.err(&format!("  {node}: {}", why.as_str().unwrap_or_default()));
            }
        }
        return 0;
    }
    let (method, key, banner) = if let Some(k) = &a.install {
        ("POST", k, "==> Installing new gossip encryption key...")
    } else if let Some(k) = &a.use_key {
        ("PUT", k, "==> Changing primary gossip encryption key...")
    } else if let Some(k) = &a.remove {
        ("DELETE", k, "==> Removing gossip encryption key...")
    } else {
        unreachable!("one action is set, checked above")
    };
    io.out(banner);
    match client
        .write(method, path, &serde_json::json!({ "Key": key }))
        .await
    {
        Ok(()) => 0,
        Err(e) => {
            io.err(&format!("Error: {e}"));
            1
        }
    }
}

/// `muster join`: one `PUT /v1/agent/join/:addr` per address; fails only if all fail
/// (Consul's messages).
async fn join(a: &JoinArgs, io: &mut Io<'_>) -> i32 {
    let Some(client) = client_or_report(&a.http, io) else {
        return 1;
    };
    let wan = if a.wan { "?wan=1" } else { "" };
    let mut joined = 0;
    for addr in &a.addrs {
        let path = format!("/v1/agent/join/{}{wan}", encode(addr));
        match client.put(&path, None).await {
            Ok(()) => joined += 1,
            Err(e) => io.err(&format!("Error joining address '{addr}': {e}")),
        }
    }
    if joined == 0 {
        io.err("Failed to join any nodes.");
        return 1;
    }
    io.out(&format!(
        "Successfully joined cluster by contacting {joined} nodes."
    ));
    0
}

/// `muster force-leave`: `PUT /v1/agent/force-leave/:node` (`?prune`).
async fn force_leave(a: &ForceLeaveArgs, io: &mut Io<'_>) -> i32 {
    let Some(client) = client_or_report(&a.http, io) else {
        return 1;
    };
    let mut query = Vec::new();
    if a.prune {
        query.push("prune=1");
    }
    if a.wan {
        query.push("wan=1");
    }
    let mut path = format!("/v1/agent/force-leave/{}", encode(&a.node));
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    match client.put(&path, None).await {
        Ok(()) => 0,
        Err(e) => {
            io.err(&format!("Error force leaving: {e}"));
            1
        }
    }
}

async fn members(a: &MembersArgs, io: &mut Io<'_>) -> i32 {
    let status = match regex_automata::meta::Regex::new(&a.status) {
        Ok(r) => r,
        Err(e) => {
            io.err(&format!("Failed to compile status regexp: {e}"));
            return 1;
        }
    };
    let Some(client) = client_or_report(&a.http, io) else {
        return 1;
    };
    let rows = match client.get_json("/v1/agent/members").await {
        Ok(v) => v,
        Err(e) => {
            io.err(&format!("Error retrieving members: {e}"));
            return 1;
        }
    };
    let rows: Vec<output::MemberRow> = match serde_json::from_value(rows) {
        Ok(r) => r,
        Err(e) => {
            io.err(&format!("Error retrieving members: invalid response: {e}"));
            return 1;
        }
    };
    let rows = output::select_members(rows, |s| status.is_match(s));
    if rows.is_empty() {
        return 2;
    }
    if a.detailed {
        io.out(&output::members_detailed_table(&rows));
    } else {
        io.out(&output::members_table(&rows));
    }
    0
}

/// `?node-meta=k:v&...` from `-node-meta=k=v` flags.
fn node_meta_query(pairs: &[String]) -> Result<String, String> {
    let mut q = String::new();
    for p in pairs {
        let (k, v) = services::key_value(p)?;
        q.push_str(if q.is_empty() { "?" } else { "&" });
        q.push_str("node-meta=");
        q.push_str(&encode(&format!("{k}:{v}")));
    }
    Ok(q)
}

async fn catalog_services(a: &CatalogServicesArgs, io: &mut Io<'_>) -> i32 {
    let query = match node_meta_query(&a.node_meta) {
        Ok(q) => q,
        Err(e) => {
            io.err(&e);
            return 1;
        }
    };
    let Some(client) = client_or_report(&a.http, io) else {
        return 1;
    };
    let services = match &a.node {
        Some(node) => match client
            .get_json(&format!("/v1/catalog/node/{}{query}", encode(node)))
            .await
        {
            Ok(v) => output::services_from_node(&v),
            Err(e) => {
                io.err(&format!("Error listing services for node: {e}"));
                return 1;
            }
        },
        None => match client
            .get_json(&format!("/v1/catalog/services{query}"))
            .await
        {
            Ok(v) => output::services_from_catalog(&v),
            Err(e) => {
                io.err(&format!("Error listing services: {e}"));
                return 1;
            }
        },
    };
    if services.is_empty() {
        io.err("No services match the given query - try expanding your search.");
        return 0;
    }
    io.out(&output::services_list(&services, a.tags));
    0
}

async fn catalog_nodes(a: &CatalogNodesArgs, io: &mut Io<'_>) -> i32 {
    let query = match node_meta_query(&a.node_meta) {
        Ok(q) => q,
        Err(e) => {
            io.err(&e);
            return 1;
        }
    };
    let Some(client) = client_or_report(&a.http, io) else {
        return 1;
    };
    let (path, error) = match &a.service {
        Some(s) => (
            format!("/v1/catalog/service/{}{query}", encode(s)),
            "Error listing nodes for service",
        ),
        None => (format!("/v1/catalog/nodes{query}"), "Error listing nodes"),
    };
    let rows = match client.get_json(&path).await {
        Ok(v) => v,
        Err(e) => {
            io.err(&format!("{error}: {e}"));
            return 1;
        }
    };
    let nodes: Vec<output::NodeRow> = match serde_json::from_value(rows) {
        Ok(n) => n,
        Err(e) => {
            io.err(&format!("{error}: invalid response: {e}"));
            return 1;
        }
    };
    if nodes.is_empty() {
        io.err("No nodes match the given query - try expanding your search.");
        return 0;
    }
    io.out(&output::nodes_table(&nodes, a.detailed));
    0
}

async fn services_register(a: &RegisterArgs, io: &mut Io<'_>) -> i32 {
    let by_flags = a.name.is_some();
    if a.files.is_empty() && !by_flags {
        io.err("Service registration requires at least one argument or flags.");
        return 1;
    }
    if !a.files.is_empty() && by_flags {
        io.err("Service registration requires arguments or -id, not both.");
        return 1;
    }
    let bodies: Vec<(String, serde_json::Value)> = if by_flags {
        let mut meta = Vec::new();
        for m in &a.meta {
            match services::key_value(m) {
                Ok(kv) => meta.push(kv),
                Err(e) => {
                    io.err(&e);
                    return 1;
                }
            }
        }
        let name = a.name.clone().unwrap_or_default();
        let body = services::service_from_flags(
            &name,
            a.id.as_deref(),
            a.address.as_deref(),
            a.port,
            &a.tag,
            &meta,
        );
        vec![(name, body)]
    } else {
        match services::services_from_files(&a.files) {
            Ok(defs) => defs
                .iter()
                .map(|d| (d.name.clone(), services::service_to_api_json(d)))
                .collect(),
            Err(e) => {
                io.err(&format!("Error: {e}"));
                return 1;
            }
        }
    };
    let Some(client) = client_or_report(&a.http, io) else {
        return 1;
    };
    for (name, body) in bodies {
        if let Err(e) = client.put("/v1/agent/service/register", Some(&body)).await {
            io.err(&format!("Error registering service {name:?}: {e}"));
            return 1;
        }
        io.out(&format!("Registered service: {name}"));
    }
    0
}

async fn services_deregister(a: &DeregisterArgs, io: &mut Io<'_>) -> i32 {
    let id = a.id.as_deref().filter(|s| !s.is_empty());
    if a.files.is_empty() && id.is_none() {
        io.err("Service deregistration requires at least one argument or -id.");
        return 1;
    }
    if !a.files.is_empty() && id.is_some() {
        io.err("Service deregistration requires arguments or -id, not both.");
        return 1;
    }
    let ids: Vec<String> = match id {
        Some(id) => vec![id.to_owned()],
        None => match services::services_from_files(&a.files) {
            Ok(defs) => defs.into_iter().map(|d| d.id).collect(),
            Err(e) => {
                io.err(&format!("Error: {e}"));
                return 1;
            }
        },
    };
    let Some(client) = client_or_report(&a.http, io) else {
        return 1;
    };
    for id in ids {
        let path = format!("/v1/agent/service/deregister/{}", encode(&id));
        if let Err(e) = client.put(&path, None).await {
            io.err(&format!("Error deregistering service {id:?}: {e}"));
            return 1;
        }
        io.out(&format!("Deregistered service: {id}"));
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Command {
        let mut all = vec!["muster"];
        all.extend_from_slice(args);
        Cli::try_parse_from(config::normalize_args(all))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
    }

    #[test]
    fn the_runtime_takes_half_the_cpus_one_to_four() {
        let got: Vec<usize> = [1, 2, 3, 4, 8, 16, 64].map(default_workers).to_vec();
        assert_eq!(got, vec![1, 1, 1, 2, 4, 4, 4]);
    }

    #[test]
    fn go_style_flags_parse() {
        match parse(&[
            "members",
            "-detailed",
            "-status=alive|failed",
            "-http-addr=127.0.0.1:9",
        ]) {
            Command::Members(m) => {
                assert!(m.detailed);
                assert_eq!(m.status, "alive|failed");
                assert_eq!(m.http.http_addr.as_deref(), Some("127.0.0.1:9"));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["members"]) {
            Command::Members(m) => assert!(!m.detailed && m.status == ".*"),
            other => panic!("{other:?}"),
        }
        match parse(&[
            "catalog",
            "services",
            "-tags",
            "-node-meta=rack=a",
            "-node",
            "db1",
        ]) {
            Command::Catalog(CatalogCommand::Services(s)) => {
                assert!(s.tags);
                assert_eq!(s.node.as_deref(), Some("db1"));
                assert_eq!(s.node_meta, ["rack=a"]);
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "services",
            "register",
            "-name=web",
            "-port",
            "80",
            "-tag=a",
            "-tag=b",
            "-meta",
            "k=v",
            "-token=t",
        ]) {
            Command::Services(ServicesCommand::Register(r)) => {
                assert_eq!(r.name.as_deref(), Some("web"));
                assert_eq!(r.port, Some(80));
                assert_eq!(r.tag, ["a", "b"]);
                assert_eq!(r.meta, ["k=v"]);
                assert_eq!(r.http.token.as_deref(), Some("t"));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["validate", "-quiet", "a.json", "dir"]) {
            Command::Validate(v) => {
                assert!(v.quiet);
                assert_eq!(v.paths, [PathBuf::from("a.json"), PathBuf::from("dir")]);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["agent", "-dev", "-config-dir=x"]) {
            Command::Agent(a) => assert!(a.dev()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(&["keygen"]), Command::Keygen));
        assert!(matches!(
            parse(&["leave", "-http-addr=a:1"]),
            Command::Leave(_)
        ));
        match parse(&["join", "10.0.0.1", "[fd00::1]:8301", "-http-addr=a:1"]) {
            Command::Join(j) => {
                assert_eq!(j.addrs, ["10.0.0.1", "[fd00::1]:8301"]);
                assert!(!j.wan);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["force-leave", "-prune", "db2"]) {
            Command::ForceLeave(f) => assert!(f.prune && f.node == "db2"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn join_and_force_leave_report_unreachable_agents() {
        let flag = "-http-addr=127.0.0.1:1";
        let (code, out, err) = run_sync(parse(&["join", "10.0.0.1", "10.0.0.2", flag]));
        assert_eq!(code, 1);
        assert_eq!(out, "");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 3, "{err}");
        assert!(lines[0].starts_with("Error joining address '10.0.0.1': PUT http://"));
        assert!(lines[1].starts_with("Error joining address '10.0.0.2': "));
        assert_eq!(lines[2], "Failed to join any nodes.");
        let (code, _, err) = run_sync(parse(&["force-leave", "db2", flag]));
        assert_eq!(code, 1);
        assert!(err.starts_with("Error force leaving: PUT http://"), "{err}");
    }

    #[test]
    fn keygen_is_32_random_bytes_in_base64() {
        let a = keygen();
        let b = keygen();
        assert_ne!(a, b);
        assert_eq!(a.len(), 44);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&a)
            .unwrap();
        assert_eq!(bytes.len(), 32);
        // The agent accepts it as `encrypt`.
        config::GossipKey::from_base64(&a).unwrap();
    }

    #[test]
    fn node_meta_flags_become_the_query() {
        assert_eq!(node_meta_query(&[]).unwrap(), "");
        assert_eq!(
            node_meta_query(&["rack=a".into(), "env=prod env".into()]).unwrap(),
            "?node-meta=rack%3Aa&node-meta=env%3Aprod%20env"
        );
        assert!(node_meta_query(&["bad".into()]).is_err());
    }

    fn run_sync(command: Command) -> (i32, String, String) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = rt.block_on(async {
            let mut io = Io {
                out: &mut out,
                err: &mut err,
            };
            run(command, &mut io).await
        });
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn validate_prints_consuls_messages() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.json");
        std::fs::write(
            &good,
            format!(r#"{{"data_dir": "{}"}}"#, dir.path().display()),
        )
        .unwrap();
        let (code, out, _) = run_sync(parse(&["validate", good.to_str().unwrap()]));
        assert_eq!((code, out.as_str()), (0, "Configuration is valid!\n"));
        let (code, out, _) = run_sync(parse(&["validate", "-quiet", good.to_str().unwrap()]));
        assert_eq!((code, out.as_str()), (0, ""));
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"data_dir": "/x", "bogus_key": 1}"#).unwrap();
        let (code, out, err) = run_sync(parse(&["validate", bad.to_str().unwrap()]));
        assert_eq!(code, 1);
        assert_eq!(out, "");
        assert!(err.starts_with("Config validation failed: "), "{err}");
        assert!(
            err.contains("bad.json") && err.contains("bogus_key"),
            "{err}"
        );
        let (code, _, err) = run_sync(parse(&["validate"]));
        assert_eq!(code, 1);
        assert_eq!(err, "Must specify at least one config file or directory\n");
    }

    #[test]
    fn client_commands_report_api_errors() {
        let (code, out, err) = run_sync(parse(&["services", "register"]));
        assert_eq!((code, out.as_str()), (1, ""));
        assert_eq!(
            err,
            "Service registration requires at least one argument or flags.\n"
        );
        let (code, _, err) = run_sync(parse(&["services", "deregister"]));
        assert_eq!(code, 1);
        assert_eq!(
            err,
            "Service deregistration requires at least one argument or -id.\n"
        );
        // Nothing listens on this port: a clear error naming the request, exit 1.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let flag = format!("-http-addr={addr}");
        let (code, _, err) = run_sync(parse(&["members", &flag]));
        assert_eq!(code, 1);
        assert!(
            err.starts_with("Error retrieving members: GET http://"),
            "{err}"
        );
        let (code, _, err) = run_sync(parse(&["leave", &flag]));
        assert_eq!(code, 1);
        assert!(err.starts_with("Error leaving: PUT http://"), "{err}");
        let (code, _, err) = run_sync(parse(&["members", "-status=(", &flag]));
        assert_eq!(code, 1);
        assert!(err.starts_with("Failed to compile status regexp"), "{err}");
    }
}
