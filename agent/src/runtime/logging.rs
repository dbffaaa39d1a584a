//! Process-wide logging: `tracing-subscriber` to stderr (text or `log_json`), plus syslog
//! when `enable_syslog` is set, behind one reloadable level filter.
//!
//! Logs go to **stderr**: stdout carries only the start-up banner and the
//! `==> muster ready:` line, so a supervisor or test that reads stdout up to that line and
//! then stops reading can never block the agent on a full pipe.
//!
//! Invariant: `hickory_server` and `openraft` are held at `warn` unless the level is
//! `trace` (hickory logs two `info` lines per DNS query; openraft is chatty at `debug`), and
//! the HTTP client/server internals (`hyper_util`, `h2`, `reqwest`) at `info` unless `trace`.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use super::syslog::{self, SyslogWriter};
use crate::config::{LogLevel, LogSettings};

/// The filter directives for a level.
pub fn filter_directives(level: LogLevel) -> String {
    let base = level.as_str();
    if level == LogLevel::Trace {
        return base.to_owned();
    }
    let mut directives = vec![base.to_owned()];
    // Noisy dependencies never log below their floor (unless the floor is below the level).
    for (target, floor) in [
        ("hickory_server", LogLevel::Warn),
        ("hickory_proto", LogLevel::Warn),
        ("openraft", LogLevel::Warn),
        ("hyper_util", LogLevel::Info),
        ("h2", LogLevel::Info),
        ("reqwest", LogLevel::Info),
    ] {
        directives.push(format!("{target}={}", level.max(floor).as_str()));
    }
    directives.join(",")
}

fn make_filter(level: LogLevel) -> EnvFilter {
    EnvFilter::builder()
        .parse(filter_directives(level))
        // The directives are ours and always parse; fall back to the bare level anyway.
        .unwrap_or_else(|_| EnvFilter::new(level.as_str()))
}

/// Changes the level at runtime (SIGHUP reload).
#[derive(Clone)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    level: std::sync::Arc<parking_lot::Mutex<LogLevel>>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("level", &*self.level.lock())
            .finish_non_exhaustive()
    }
}

impl LogHandle {
    /// Applies a new level; a no-op when it is unchanged.
    pub fn set_level(&self, level: LogLevel) {
        let mut current = self.level.lock();
        if *current == level {
            return;
        }
        match self.filter.reload(make_filter(level)) {
            Ok(()) => {
                *current = level;
                drop(current);
                tracing::info!(level = level.as_str(), "log level changed");
            }
            Err(e) => tracing::warn!(error = %e, "cannot change the log level"),
        }
    }

    /// The level in force.
    pub fn level(&self) -> LogLevel {
        *self.level.lock()
    }
}

/// Installs the global subscriber. Call once per process; a second call fails.
pub fn init(settings: &LogSettings, hostname: &str) -> Result<LogHandle, String> {
    let (filter, handle) = reload::Layer::new(make_filter(settings.level));
    type Base = tracing_subscriber::layer::Layered<reload::Layer<EnvFilter, Registry>, Registry>;
    let stderr: Box<dyn Layer<Base> + Send + Sync> = if settings.json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed()
    };
    let syslog_layer = if settings.syslog {
        let facility = syslog::facility_code(&settings.syslog_facility)
            .ok_or_else(|| format!("unknown syslog_facility {:?}", settings.syslog_facility))?;
        let writer = SyslogWriter::new(&syslog::socket_path(), facility, hostname);
        // The syslog header carries the time; the daemon adds its own anyway.
        Some(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_writer(writer)
                .boxed(),
        )
    } else {
        None
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(syslog_layer)
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))?;
    Ok(LogHandle {
        filter: handle,
        level: std::sync::Arc::new(parking_lot::Mutex::new(settings.level)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noisy_targets_are_held_back_unless_trace() {
        let info = filter_directives(LogLevel::Info);
        assert!(info.starts_with("info,"), "{info}");
        assert!(info.contains("hickory_server=warn"), "{info}");
        assert!(info.contains("openraft=warn"), "{info}");
        assert!(info.contains("hyper_util=info"), "{info}");
        let debug = filter_directives(LogLevel::Debug);
        assert!(
            debug.contains("openraft=warn") && debug.contains("h2=info"),
            "{debug}"
        );
        // A level above the floor wins: error stays error everywhere.
        let error = filter_directives(LogLevel::Error);
        assert!(error.contains("hickory_server=error"), "{error}");
        assert_eq!(filter_directives(LogLevel::Trace), "trace");
        for level in [
            LogLevel::Trace,
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
        ] {
            EnvFilter::builder()
                .parse(filter_directives(level))
                .unwrap();
        }
    }
}
