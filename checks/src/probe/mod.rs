//! Probes: one run of a TCP, HTTP or script check, as a self-contained future.
//!
//! The scheduler calls [`ProbeExecutor::start`] on its own task (so the executor can own
//! caches without locks) and gets back a `'static` future that it spawns as a short-lived
//! task. Every probe future enforces its own timeout and always resolves to a
//! [`ProbeResult`]: failures are results (critical, with Go-style text), never errors.
//! Dropping a probe future cancels it cleanly (sockets closed, scripts killed).

pub(crate) mod http;
pub(crate) mod script;
pub(crate) mod tcp;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::definition::HttpCheck;
use crate::status::HealthStatus;

/// The raw outcome of one probe run, before thresholds are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProbeResult {
    pub(crate) status: HealthStatus,
    pub(crate) output: String,
}

impl ProbeResult {
    pub(crate) fn passing(output: String) -> Self {
        ProbeResult {
            status: HealthStatus::Passing,
            output,
        }
    }

    pub(crate) fn critical(output: String) -> Self {
        ProbeResult {
            status: HealthStatus::Critical,
            output,
        }
    }
}

/// What to probe, extracted from a validated definition (TTL checks have none).
#[derive(Clone, Debug)]
pub(crate) struct ProbeSpec {
    pub(crate) target: ProbeTarget,
    pub(crate) timeout: Duration,
    pub(crate) output_max_size: usize,
}

#[derive(Clone, Debug)]
pub(crate) enum ProbeTarget {
    Tcp { address: String },
    Http(Arc<HttpCheck>),
    Script { args: Vec<String> },
}

/// Turns a probe spec into a runnable future. The real implementation is [`NetworkExecutor`];
/// scheduler tests substitute a scripted one.
pub(crate) trait ProbeExecutor: Send + 'static {
    fn start(&mut self, spec: &Arc<ProbeSpec>) -> BoxFuture<'static, ProbeResult>;
}

/// Runs real probes: TCP connects, HTTP requests through shared clients, child processes.
pub(crate) struct NetworkExecutor {
    http: http::HttpClients,
}

impl NetworkExecutor {
    pub(crate) fn new(extra_roots: Vec<Vec<u8>>) -> Self {
        NetworkExecutor {
            http: http::HttpClients::new(extra_roots),
        }
    }
}

impl ProbeExecutor for NetworkExecutor {
    fn start(&mut self, spec: &Arc<ProbeSpec>) -> BoxFuture<'static, ProbeResult> {
        let (timeout, max) = (spec.timeout, spec.output_max_size);
        match &spec.target {
            ProbeTarget::Tcp { address } => {
                let address = address.clone();
                Box::pin(async move { tcp::probe(&address, timeout).await.capped(max) })
            }
            ProbeTarget::Http(check) => {
                let client = self.http.client_for(check);
                let check = Arc::clone(check);
                Box::pin(async move {
                    match client {
                        Ok(client) => http::probe(&client, &check, timeout, max).await,
                        Err(text) => ProbeResult::critical(text),
                    }
                    .capped(max)
                })
            }
            ProbeTarget::Script { args } => {
                let args = args.clone();
                Box::pin(async move { script::probe(&args, timeout, max).await.capped(max) })
            }
        }
    }
}

impl ProbeResult {
    /// Enforces the output cap on whatever a probe produced (error texts included).
    pub(crate) fn capped(mut self, max: usize) -> Self {
        self.output = crate::output::cap(self.output, max);
        self
    }
}
