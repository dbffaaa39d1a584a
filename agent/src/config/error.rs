//! Errors of configuration loading ([`ConfigError`]) and of decoding service and check
//! definitions sent to the HTTP API ([`DecodeError`]).
//!
//! Invariant: every [`ConfigError`] names where the problem is: the file (or "command-line
//! flags") and the key path, or the file, line and column for a syntax error. Values merged
//! from several files are blamed on the file that set them last.

use std::fmt;

/// A configuration that cannot be loaded. The texts follow Consul's where it has one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file or directory could not be read.
    #[error("config: failed to read {path}: {source}")]
    Read {
        /// The path as given.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid JSON or HCL.
    #[error("{path}: syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// `-config-file` names a file whose extension says neither JSON nor HCL.
    #[error(
        "file {path} has unknown extension; must be .hcl or .json, or config format must be set"
    )]
    UnknownExtension {
        /// The file.
        path: String,
    },
    /// A key Consul does not know either.
    #[error("failed to parse {file}: invalid config key {key}")]
    UnknownKey {
        /// The file (or "command-line flags").
        file: String,
        /// The key path, such as `dns_config.udp_answer_limt` or `services[0].chek`.
        key: String,
    },
    /// A value that is known but wrong: the wrong type, out of range, or refused by validation.
    #[error("{}", invalid_text(origin.as_deref(), key, message))]
    Invalid {
        /// The source that set the value, when one did (a value can also be missing).
        origin: Option<String>,
        /// The key path.
        key: String,
        /// What is wrong, in Consul's words where it has some.
        message: String,
    },
    /// The command line itself is wrong (an unknown flag, a malformed value).
    #[error("{0}")]
    Flags(String),
}

fn invalid_text(origin: Option<&str>, key: &str, message: &str) -> String {
    match origin {
        Some(origin) => format!("{origin}: {key}: {message}"),
        // Consul's own messages often start with the key ("data_dir cannot be empty").
        None if message.starts_with(key) => message.to_owned(),
        None => format!("{key}: {message}"),
    }
}

impl ConfigError {
    /// True for a key that Consul's format does not have.
    pub fn is_unknown_key(&self) -> bool {
        matches!(self, ConfigError::UnknownKey { .. })
    }

    /// True for a JSON or HCL syntax error.
    pub fn is_syntax(&self) -> bool {
        matches!(self, ConfigError::Syntax { .. })
    }

    /// True for a value refused by type checks or validation.
    pub fn is_invalid(&self) -> bool {
        matches!(self, ConfigError::Invalid { .. })
    }

    /// The key path the error is about, when it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The file (or "command-line flags") the error is about, when there is one.
    pub fn file(&self) -> Option<&str> {
        match self {
            ConfigError::Read { path, .. }
            | ConfigError::Syntax { path, .. }
            | ConfigError::UnknownExtension { path } => Some(path),
            ConfigError::UnknownKey { file, .. } => Some(file),
            ConfigError::Invalid { origin, .. } => origin.as_deref(),
            ConfigError::Flags(_) => None,
        }
    }

    pub(crate) fn invalid(
        origin: Option<&str>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            origin: origin.map(str::to_owned),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A service or check definition sent to the HTTP API that cannot be accepted.
///
/// `Display` gives the response body Consul sends; every variant is a `400 Bad Request` in
/// Consul except [`DecodeError::ScriptsDisabled`], which Consul answers with a 500.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body does not decode: wrong JSON types, a bad duration.
    #[error("Request decode failed: {0}")]
    Malformed(String),
    /// The body decodes but is refused, with Consul's message
    /// (`Missing service name`, `Invalid check status: 'x'`, ...).
    #[error("{0}")]
    Invalid(String),
    /// A check type or field muster does not run yet (gRPC, Docker, alias, ...).
    #[error("{0}")]
    Unsupported(String),
    /// A script check sent through the API while `enable_script_checks` is off.
    #[error(
        "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true"
    )]
    ScriptsDisabled,
}

impl DecodeError {
    /// True when the body did not decode (Consul's `Request decode failed:`).
    pub fn is_malformed(&self) -> bool {
        matches!(self, DecodeError::Malformed(_))
    }

    /// True when a script check was refused because remote script checks are disabled.
    pub fn is_scripts_disabled(&self) -> bool {
        matches!(self, DecodeError::ScriptsDisabled)
    }

    /// True for a feature muster does not implement yet.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, DecodeError::Unsupported(_))
    }
}

/// A problem found inside one definition or one file, before it gets its context: a key path
/// relative to the walked value and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub kind: ProblemKind,
    pub path: String,
    pub message: String,
    /// The message is Consul's own text, which the HTTP API returns without a field prefix.
    pub consul_text: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProblemKind {
    /// A key that does not exist.
    UnknownKey,
    /// The wrong JSON type or an unparsable value.
    Type,
    /// Refused by validation.
    Invalid,
    /// A feature that is parsed and refused.
    Unsupported,
}

impl Problem {
    pub(crate) fn new(kind: ProblemKind, path: &str, message: impl Into<String>) -> Self {
        Problem {
            kind,
            path: path.to_owned(),
            message: message.into(),
            consul_text: false,
        }
    }

    /// A problem whose message is Consul's own API text.
    pub(crate) fn consul(kind: ProblemKind, path: &str, message: impl Into<String>) -> Self {
        Problem {
            consul_text: true,
            ..Problem::new(kind, path, message)
        }
    }

    /// Gives the problem its file context.
    pub(crate) fn into_config_error(self, file: &str) -> ConfigError {
        match self.kind {
            ProblemKind::UnknownKey => ConfigError::UnknownKey {
                file: file.to_owned(),
                key: self.path,
            },
            _ => ConfigError::invalid(Some(file), self.path, self.message),
        }
    }

    /// Gives the problem the HTTP API's context: fields are named, files are not.
    pub(crate) fn into_decode_error(self) -> DecodeError {
        let text = if self.path.is_empty() || self.consul_text {
            self.message
        } else {
            format!("{}: {}", self.path, self.message)
        };
        match self.kind {
            ProblemKind::UnknownKey | ProblemKind::Type => DecodeError::Malformed(text),
            ProblemKind::Invalid => DecodeError::Invalid(text),
            ProblemKind::Unsupported => DecodeError::Unsupported(text),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_file_and_key() {
        let e = ConfigError::invalid(
            Some("config-examples/x/agent.json"),
            "dns_config.udp_answer_limit",
            "must be between 0 and 8",
        );
        assert_eq!(
            e.to_string(),
            "config-examples/x/agent.json: dns_config.udp_answer_limit: must be between 0 and 8"
        );
        assert_eq!(e.file(), Some("config-examples/x/agent.json"));
        assert_eq!(e.key(), Some("dns_config.udp_answer_limit"));
        let e = ConfigError::invalid(None, "data_dir", "data_dir cannot be empty");
        assert_eq!(e.to_string(), "data_dir cannot be empty");
    }

    #[test]
    fn unknown_key_uses_consul_text() {
        let e = ConfigError::UnknownKey {
            file: "a.json".into(),
            key: "dns_config.foo".into(),
        };
        assert_eq!(
            e.to_string(),
            "failed to parse a.json: invalid config key dns_config.foo"
        );
        assert!(e.is_unknown_key());
    }

    #[test]
    fn decode_errors_read_like_consul() {
        assert_eq!(
            DecodeError::Malformed("Port: expected an integer".into()).to_string(),
            "Request decode failed: Port: expected an integer"
        );
        assert_eq!(
            DecodeError::ScriptsDisabled.to_string(),
            "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true"
        );
        let p = Problem::new(ProblemKind::Invalid, "", "Missing service name");
        assert_eq!(
            p.into_decode_error(),
            DecodeError::Invalid("Missing service name".into())
        );
    }
}
