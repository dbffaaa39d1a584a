//! Health-check probes and their scheduler: the `checks` leaf of muster.
//!
//! This crate runs Consul-style health checks (TCP, HTTP/HTTPS, script, TTL) and reports
//! when a check's status or output changes. It knows nothing of the catalog, services, Raft
//! or config files: the agent turns config and API check definitions into
//! [`CheckDefinition`]s, adds and removes them at runtime through a [`CheckRunnerHandle`],
//! feeds TTL updates, and consumes [`CheckUpdate`]s from a channel.
//!
//! ```no_run
//! # async fn demo() -> Result<(), muster_checks::CheckError> {
//! use std::time::Duration;
//! use muster_checks::{CheckDefinition, CheckKind, CheckRunner};
//! use tokio_util::sync::CancellationToken;
//!
//! let (tx, mut updates) = tokio::sync::mpsc::channel(1024);
//! let runner = CheckRunner::spawn(tx, CancellationToken::new());
//! let tcp = CheckKind::Tcp { address: "localhost:3306".into() };
//! runner.add(CheckDefinition::new("mysql", tcp, Duration::from_secs(10))).await?;
//! while let Some(update) = updates.recv().await {
//!     println!("{} is {}: {}", update.id, update.status, update.output);
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! * `status`: [`HealthStatus`].
//! * `definition`: [`CheckDefinition`], [`CheckKind`], [`HttpCheck`] and Consul's defaults.
//! * `thresholds`: Consul's `StatusHandler` (success/failure counters) as a pure struct.
//! * `probe`: one run of a TCP, HTTP or script check, with Consul's output texts.
//! * `runner`: the single scheduler task, its handle, TTL timers and update delivery.
//! * `output`, `gostyle`: output caps and Go-formatted texts (durations, errno, dial errors).
//!
//! # Behaviour worth knowing
//!
//! * Output is always at most `output_max_size` bytes of valid UTF-8; Consul's
//!   `Captured <n> of <m> bytes` notes are kept inside that bound.
//! * An HTTP check sends the URL host as TLS SNI even when `tls_server_name` is set (the
//!   certificate is verified against `tls_server_name`); Go would send the configured name.
//! * A TCP address's port must be numeric (Go also accepts service names like `mysql`).
//! * HTTP output keeps the *first* `output_max_size` bytes of the body and stops reading
//!   there; Consul reads the whole body and keeps the last bytes.

mod definition;
mod error;
mod gostyle;
mod output;
mod probe;
mod runner;
mod status;
mod thresholds;

pub use definition::{
    CheckDefinition, CheckKind, DEFAULT_NETWORK_TIMEOUT, DEFAULT_OUTPUT_MAX_SIZE,
    DEFAULT_SCRIPT_TIMEOUT, HttpCheck, MAX_REDIRECTS, MIN_INTERVAL,
};
pub use error::CheckError;
pub use runner::{
    CheckRunner, CheckRunnerConfig, CheckRunnerHandle, CheckState, CheckUpdate,
    DEFAULT_MAX_CONCURRENT_PROBES, TtlState,
};
pub use status::{HealthStatus, ParseHealthStatusError};
