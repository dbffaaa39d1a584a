//! Errors returned by the check runner's handle.
//!
//! Callers branch on the predicates (`is_unknown_check()`, `is_not_ttl()`, ...) rather than on
//! variants, so new variants can be added without breaking the agent's error mapping. The
//! `Display` texts of the TTL errors are Consul's, so the agent can pass them through.

/// Why a request to the check runner failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// No check with this ID is registered with the runner.
    #[error("Unknown check ID {0:?}")]
    UnknownCheck(String),
    /// The check exists but is not a TTL check, so it cannot be updated from outside.
    /// The text is Consul's 500 body for `/v1/agent/check/pass/<id>` on such a check.
    #[error("CheckID {0:?} does not have associated TTL")]
    NotTtl(String),
    /// The definition cannot be run (empty ID, no script arguments, bad URL method...).
    #[error("invalid check definition {id:?}: {reason}")]
    InvalidDefinition {
        /// The check ID as given.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The runner has shut down (its token was cancelled or every handle was dropped).
    #[error("check runner has stopped")]
    Stopped,
}

impl CheckError {
    /// True when the check ID is not registered.
    pub fn is_unknown_check(&self) -> bool {
        matches!(self, CheckError::UnknownCheck(_))
    }

    /// True when a TTL update targeted a check that is not a TTL check.
    pub fn is_not_ttl(&self) -> bool {
        matches!(self, CheckError::NotTtl(_))
    }

    /// True when a definition was rejected by validation.
    pub fn is_invalid_definition(&self) -> bool {
        matches!(self, CheckError::InvalidDefinition { .. })
    }

    /// True when the runner is no longer running.
    pub fn is_stopped(&self) -> bool {
        matches!(self, CheckError::Stopped)
    }

    pub(crate) fn invalid(id: &str, reason: impl Into<String>) -> Self {
        CheckError::InvalidDefinition {
            id: id.to_owned(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_match_their_variant_only() {
        let unknown = CheckError::UnknownCheck("web".into());
        let not_ttl = CheckError::NotTtl("web".into());
        let invalid = CheckError::invalid("web", "no args");
        let stopped = CheckError::Stopped;
        assert!(unknown.is_unknown_check() && !unknown.is_not_ttl());
        assert!(not_ttl.is_not_ttl() && !not_ttl.is_unknown_check());
        assert!(invalid.is_invalid_definition() && !invalid.is_stopped());
        assert!(stopped.is_stopped() && !stopped.is_invalid_definition());
    }

    #[test]
    fn ttl_error_text_is_consuls() {
        assert_eq!(
            CheckError::NotTtl("mysql".into()).to_string(),
            "CheckID \"mysql\" does not have associated TTL"
        );
    }
}
