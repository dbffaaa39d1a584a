//! What a check is: the typed definition the agent hands to the runner.
//!
//! The agent turns Consul's config and API check blocks into a [`CheckDefinition`]; this crate
//! never sees JSON. Defaults are Consul's (`agent/checks/check.go`, `agent/structs/check_type.go`):
//! a 10 s timeout for TCP and HTTP, 30 s for scripts, 4096 bytes of output, an interval of at
//! least one second, initial status critical. [`CheckDefinition::normalized`] applies the
//! clamps Consul applies silently (interval, zero timeout, zero output size) and rejects what
//! cannot run at all, so the scheduler only ever holds runnable checks.

use std::time::Duration;

use crate::error::CheckError;
use crate::status::HealthStatus;

/// The shortest interval a probe may run at; lower values are raised to it (Consul's
/// `MinInterval`, which exists so a typo cannot fork-bomb the host).
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Default timeout for TCP and HTTP probes.
pub const DEFAULT_NETWORK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default timeout for script probes.
pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on a check's output, in bytes (Consul's `check_output_max_size`).
pub const DEFAULT_OUTPUT_MAX_SIZE: usize = 4096;
/// Go's redirect limit: an HTTP check whose redirect chain reaches this many requests fails
/// with `stopped after 10 redirects` (so at most nine redirects are followed, as in Consul).
pub const MAX_REDIRECTS: usize = 10;

/// One health check as the runner sees it.
///
/// Build it with [`CheckDefinition::new`] (or [`CheckDefinition::ttl`]), which fills in
/// Consul's defaults, then adjust the public fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckDefinition {
    /// Unique check ID on this agent; adding a definition with an existing ID replaces it.
    pub id: String,
    /// What to probe.
    pub kind: CheckKind,
    /// Time between the end of one probe and the start of the next; at least
    /// [`MIN_INTERVAL`]. Ignored for TTL checks.
    pub interval: Duration,
    /// Probe timeout; zero means the kind's default. Ignored for TTL checks.
    pub timeout: Duration,
    /// Status reported until the first probe result (or TTL update) arrives.
    /// Consul's default is critical.
    pub initial_status: HealthStatus,
    /// Output reported alongside `initial_status`.
    pub initial_output: String,
    /// Consecutive successes needed before a success is reported (0 and 1 both mean at once).
    pub success_before_passing: u32,
    /// Consecutive failures needed before `warning` is reported; `None` means the same as
    /// `failures_before_critical` (Consul's default).
    pub failures_before_warning: Option<u32>,
    /// Consecutive failures needed before `critical` is reported (0 and 1 both mean at once).
    pub failures_before_critical: u32,
    /// Cap on the output text in bytes, cut on a UTF-8 boundary; zero means the default.
    pub output_max_size: usize,
}

/// The probe a check runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// Connect to `host:port` (every resolved address, IPv6 and IPv4); nothing is sent.
    Tcp {
        /// `host:port` or `[v6]:port`, exactly as configured; it appears in the output.
        address: String,
    },
    /// Make an HTTP or HTTPS request; 2xx is passing, 429 warning, anything else critical.
    Http(HttpCheck),
    /// Passive check fed by [`crate::CheckRunnerHandle::ttl_update`]; critical when `ttl`
    /// passes without an update.
    Ttl {
        /// How long an update stays valid.
        ttl: Duration,
    },
    /// Run a command (no shell unless `args` invokes one); exit 0 passing, 1 warning,
    /// anything else critical. Whether scripts are allowed at all is the agent's decision.
    Script {
        /// Program and arguments; `args[0]` is looked up in `PATH` when it has no `/`.
        args: Vec<String>,
    },
}

/// The request an HTTP check makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCheck {
    /// `http://` or `https://` URL, exactly as configured; it appears in the output.
    pub url: String,
    /// Request method; empty means `GET`. Sent as given.
    pub method: String,
    /// Request headers; each name may carry several values. A `Host` header sets the
    /// request's host; `User-Agent` and `Accept` replace Consul's defaults.
    pub headers: Vec<(String, Vec<String>)>,
    /// Request body; empty means none.
    pub body: String,
    /// Accept any server certificate (Consul's `tls_skip_verify`).
    pub tls_skip_verify: bool,
    /// Verify the server certificate against this name instead of the URL's host.
    pub tls_server_name: Option<String>,
    /// Report the redirect response itself instead of following it.
    pub disable_redirects: bool,
}

impl HttpCheck {
    /// A `GET` of `url` with no extra headers, verified TLS and redirects followed.
    pub fn new(url: impl Into<String>) -> Self {
        HttpCheck {
            url: url.into(),
            method: "GET".to_owned(),
            headers: Vec::new(),
            body: String::new(),
            tls_skip_verify: false,
            tls_server_name: None,
            disable_redirects: false,
        }
    }

    /// The method to send (`GET` when unset).
    pub fn effective_method(&self) -> &str {
        if self.method.is_empty() {
            "GET"
        } else {
            &self.method
        }
    }
}

impl CheckKind {
    /// Consul's default timeout for this kind of probe.
    pub fn default_timeout(&self) -> Duration {
        match self {
            CheckKind::Script { .. } => DEFAULT_SCRIPT_TIMEOUT,
            CheckKind::Tcp { .. } | CheckKind::Http(_) | CheckKind::Ttl { .. } => {
                DEFAULT_NETWORK_TIMEOUT
            }
        }
    }

    /// True for TTL checks, which are fed from outside rather than probed.
    pub fn is_ttl(&self) -> bool {
        matches!(self, CheckKind::Ttl { .. })
    }
}

impl CheckDefinition {
    /// A definition with Consul's defaults: the kind's timeout, initial status critical
    /// with empty output, no thresholds and 4096 bytes of output.
    pub fn new(id: impl Into<String>, kind: CheckKind, interval: Duration) -> Self {
        let timeout = kind.default_timeout();
        CheckDefinition {
            id: id.into(),
            kind,
            interval,
            timeout,
            initial_status: HealthStatus::Critical,
            initial_output: String::new(),
            success_before_passing: 0,
            failures_before_warning: None,
            failures_before_critical: 0,
            output_max_size: DEFAULT_OUTPUT_MAX_SIZE,
        }
    }

    /// A TTL check with Consul's defaults (the interval is unused and set to the TTL).
    pub fn ttl(id: impl Into<String>, ttl: Duration) -> Self {
        CheckDefinition::new(id, CheckKind::Ttl { ttl }, ttl)
    }

    /// `failures_before_warning`, with its default (`failures_before_critical`) applied.
    pub fn effective_failures_before_warning(&self) -> u32 {
        self.failures_before_warning
            .unwrap_or(self.failures_before_critical)
    }

    /// Applies Consul's silent clamps and rejects definitions that cannot run.
    ///
    /// Clamps: an interval below [`MIN_INTERVAL`] is raised to it (with a warning in the
    /// log, as Consul does), a zero timeout becomes the kind's default, a zero output cap
    /// becomes [`DEFAULT_OUTPUT_MAX_SIZE`]. Rejected: an empty ID, an empty TCP address,
    /// a zero TTL, empty script arguments, an empty URL, an invalid HTTP method or header,
    /// and a `tls_server_name` that is not a DNS name or IP address.
    pub fn normalized(mut self) -> Result<CheckDefinition, CheckError> {
        if self.id.is_empty() {
            return Err(CheckError::invalid("", "the check ID is empty"));
        }
        if !self.kind.is_ttl() && self.interval < MIN_INTERVAL {
            tracing::warn!(
                check = %self.id,
                interval = ?self.interval,
                "check interval is below the 1s minimum; using 1s"
            );
            self.interval = MIN_INTERVAL;
        }
        if self.timeout.is_zero() {
            self.timeout = self.kind.default_timeout();
        }
        if self.output_max_size == 0 {
            self.output_max_size = DEFAULT_OUTPUT_MAX_SIZE;
        }
        self.validate_kind()?;
        Ok(self)
    }

    fn validate_kind(&self) -> Result<(), CheckError> {
        let id = self.id.as_str();
        match &self.kind {
            CheckKind::Tcp { address } if address.is_empty() => {
                Err(CheckError::invalid(id, "the TCP address is empty"))
            }
            CheckKind::Tcp { .. } => Ok(()),
            CheckKind::Ttl { ttl } if ttl.is_zero() => {
                Err(CheckError::invalid(id, "the TTL is zero"))
            }
            CheckKind::Ttl { .. } => Ok(()),
            CheckKind::Script { args } if args.first().is_none_or(|a| a.is_empty()) => Err(
                CheckError::invalid(id, "the script check has no command to run"),
            ),
            CheckKind::Script { .. } => Ok(()),
            CheckKind::Http(http) => validate_http(id, http),
        }
    }
}

fn validate_http(id: &str, http: &HttpCheck) -> Result<(), CheckError> {
    if http.url.is_empty() {
        return Err(CheckError::invalid(id, "the HTTP URL is empty"));
    }
    let method = http.effective_method();
    if reqwest::Method::from_bytes(method.as_bytes()).is_err() {
        return Err(CheckError::invalid(
            id,
            format!("invalid HTTP method {method:?}"),
        ));
    }
    for (name, values) in &http.headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(CheckError::invalid(
                id,
                format!("invalid header name {name:?}"),
            ));
        }
        if let Some(bad) = values
            .iter()
            .find(|v| reqwest::header::HeaderValue::from_str(v).is_err())
        {
            return Err(CheckError::invalid(
                id,
                format!("invalid value {bad:?} for header {name:?}"),
            ));
        }
    }
    if let Some(name) = http.tls_server_name.as_deref().filter(|n| !n.is_empty())
        && rustls::pki_types::ServerName::try_from(name).is_err()
    {
        return Err(CheckError::invalid(
            id,
            format!("invalid tls_server_name {name:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(id: &str) -> CheckDefinition {
        CheckDefinition::new(
            id,
            CheckKind::Tcp {
                address: "localhost:3306".into(),
            },
            Duration::from_secs(10),
        )
    }

    #[test]
    fn new_fills_consul_defaults_per_kind() {
        let def = tcp("mysql");
        assert_eq!(def.timeout, Duration::from_secs(10));
        assert_eq!(def.initial_status, HealthStatus::Critical);
        assert_eq!(def.output_max_size, 4096);
        assert_eq!(def.effective_failures_before_warning(), 0);

        let script = CheckDefinition::new(
            "s",
            CheckKind::Script {
                args: vec!["true".into()],
            },
            Duration::from_secs(5),
        );
        assert_eq!(script.timeout, Duration::from_secs(30));
        assert_eq!(HttpCheck::new("http://x/").effective_method(), "GET");
    }

    #[test]
    fn failures_before_warning_defaults_to_critical_threshold() {
        let mut def = tcp("mysql");
        def.failures_before_critical = 3;
        assert_eq!(def.effective_failures_before_warning(), 3);
        def.failures_before_warning = Some(1);
        assert_eq!(def.effective_failures_before_warning(), 1);
    }

    #[test]
    fn normalized_clamps_interval_timeout_and_output_size() {
        let mut def = tcp("mysql");
        def.interval = Duration::from_millis(100);
        def.timeout = Duration::ZERO;
        def.output_max_size = 0;
        let def = def.normalized().unwrap();
        assert_eq!(def.interval, MIN_INTERVAL);
        assert_eq!(def.timeout, DEFAULT_NETWORK_TIMEOUT);
        assert_eq!(def.output_max_size, DEFAULT_OUTPUT_MAX_SIZE);

        // A TTL check has no interval to clamp.
        let ttl = CheckDefinition::ttl("t", Duration::from_millis(500))
            .normalized()
            .unwrap();
        assert_eq!(ttl.interval, Duration::from_millis(500));
    }

    #[test]
    fn normalized_rejects_unrunnable_definitions() {
        assert!(tcp("").normalized().unwrap_err().is_invalid_definition());
        let empty_tcp = CheckDefinition::new(
            "t",
            CheckKind::Tcp {
                address: String::new(),
            },
            MIN_INTERVAL,
        );
        assert!(empty_tcp.normalized().is_err());
        assert!(
            CheckDefinition::ttl("t", Duration::ZERO)
                .normalized()
                .is_err()
        );
        let no_args = CheckDefinition::new("s", CheckKind::Script { args: vec![] }, MIN_INTERVAL);
        assert!(no_args.normalized().is_err());
        let empty_arg0 = CheckDefinition::new(
            "s",
            CheckKind::Script {
                args: vec![String::new()],
            },
            MIN_INTERVAL,
        );
        assert!(empty_arg0.normalized().is_err());

        let http = |f: fn(&mut HttpCheck)| {
            let mut h = HttpCheck::new("http://127.0.0.1/health");
            f(&mut h);
            CheckDefinition::new("h", CheckKind::Http(h), MIN_INTERVAL).normalized()
        };
        assert!(http(|_| {}).is_ok());
        assert!(http(|h| h.url.clear()).is_err());
        assert!(http(|h| h.method = "GE T".into()).is_err());
        assert!(http(|h| h.headers = vec![("X Bad".into(), vec!["v".into()])]).is_err());
        assert!(http(|h| h.headers = vec![("X-Ok".into(), vec!["a\nb".into()])]).is_err());
        assert!(http(|h| h.tls_server_name = Some("not a name!".into())).is_err());
        assert!(http(|h| h.tls_server_name = Some("db.example.com".into())).is_ok());
        assert!(http(|h| h.method = String::new()).is_ok());
    }
}
