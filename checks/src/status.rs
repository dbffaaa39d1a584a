//! The health status a check reports: `passing`, `warning` or `critical`.
//!
//! Consul spells these in lower case on the wire; parsing is case-insensitive because
//! operators type `PASSING` in configs and API calls, and Consul accepts it. The
//! variants are ordered by severity so the worst of several statuses is their `max`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The status of one health check, ordered from best to worst
/// (`Passing < Warning < Critical`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HealthStatus {
    /// The probe succeeded (exit 0, 2xx, TCP connect succeeded, TTL refreshed as passing).
    Passing,
    /// The probe reported a degraded state (exit 1, HTTP 429, or a failure below
    /// `failures_before_critical` but at or above `failures_before_warning`).
    Warning,
    /// The probe failed, timed out, or a TTL expired.
    Critical,
}

impl HealthStatus {
    /// Consul's wire spelling: `"passing"`, `"warning"` or `"critical"`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Passing => "passing",
            HealthStatus::Warning => "warning",
            HealthStatus::Critical => "critical",
        }
    }

    /// True for the statuses Consul's `StatusHandler` counts as a success
    /// (passing and warning both reset the failure counter).
    pub fn is_success(self) -> bool {
        !matches!(self, HealthStatus::Critical)
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error returned when a string is not one of the three statuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid health status {input:?}: expected passing, warning or critical")]
pub struct ParseHealthStatusError {
    /// The text that failed to parse.
    pub input: String,
}

impl FromStr for HealthStatus {
    type Err = ParseHealthStatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("passing") {
            Ok(HealthStatus::Passing)
        } else if s.eq_ignore_ascii_case("warning") {
            Ok(HealthStatus::Warning)
        } else if s.eq_ignore_ascii_case("critical") {
            Ok(HealthStatus::Critical)
        } else {
            Err(ParseHealthStatusError {
                input: s.to_owned(),
            })
        }
    }
}

impl Serialize for HealthStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for HealthStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Borrowed when possible; an owned String covers escaped JSON strings.
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_and_display_use_consul_spelling() {
        assert_eq!(HealthStatus::Passing.as_str(), "passing");
        assert_eq!(HealthStatus::Warning.to_string(), "warning");
        assert_eq!(HealthStatus::Critical.to_string(), "critical");
    }

    #[test]
    fn parse_is_case_insensitive_and_rejects_others() {
        assert_eq!("PASSING".parse(), Ok(HealthStatus::Passing));
        assert_eq!("Warning".parse(), Ok(HealthStatus::Warning));
        assert_eq!("critical".parse(), Ok(HealthStatus::Critical));
        let err = "maintenance".parse::<HealthStatus>().unwrap_err();
        assert_eq!(err.input, "maintenance");
        assert!("".parse::<HealthStatus>().is_err());
    }

    #[test]
    fn serde_round_trip_is_lower_case() {
        let json = serde_json::to_string(&HealthStatus::Warning).unwrap();
        assert_eq!(json, "\"warning\"");
        let back: HealthStatus = serde_json::from_str("\"Critical\"").unwrap();
        assert_eq!(back, HealthStatus::Critical);
        assert!(serde_json::from_str::<HealthStatus>("\"unknown\"").is_err());
    }

    #[test]
    fn severity_order_makes_max_the_worst() {
        let worst = [
            HealthStatus::Passing,
            HealthStatus::Critical,
            HealthStatus::Warning,
        ]
        .into_iter()
        .max();
        assert_eq!(worst, Some(HealthStatus::Critical));
        assert!(HealthStatus::Warning.is_success());
        assert!(!HealthStatus::Critical.is_success());
    }
}
