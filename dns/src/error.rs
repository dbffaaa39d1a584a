//! The crate's error type and the one place where errors become DNS response codes.
//!
//! Every negative outcome of a query (a name that does not exist, a stale catalog, failed
//! upstreams, a malformed request) is a [`DnsError`]; [`DnsError::rcode`] is the only mapping
//! from errors to RCODEs in the crate.

use std::io;

/// RCODE values used by this crate (RFC 1035, RFC 6891 for BADVERS).
pub mod rcode {
    /// No error.
    pub const NOERROR: u16 = 0;
    /// Format error: the query could not be interpreted.
    pub const FORMERR: u16 = 1;
    /// Server failure.
    pub const SERVFAIL: u16 = 2;
    /// The name does not exist.
    pub const NXDOMAIN: u16 = 3;
    /// Not implemented (opcode, zone transfer).
    pub const NOTIMP: u16 = 4;
    /// Refused by policy.
    pub const REFUSED: u16 = 5;
    /// Bad EDNS version (extended RCODE 16).
    pub const BADVERS: u16 = 16;
}

/// Errors of the DNS server and of query processing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The query's header parsed but the rest did not, or it asked more than one question.
    #[error("malformed query: {0}")]
    Malformed(&'static str),
    /// An opcode other than QUERY, or a zone transfer.
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    /// The query's EDNS version is not 0.
    #[error("unsupported EDNS version {0}")]
    BadVersion(u8),
    /// The name does not exist in the zone (or a service has no healthy instance).
    #[error("name not found")]
    NameNotFound,
    /// The catalog replica is older than `max_stale` allows.
    #[error("catalog view is too stale to answer")]
    Stale,
    /// The name is outside the zone and no recursor is configured, or the query class is
    /// not IN.
    #[error("query refused: {0}")]
    Refused(&'static str),
    /// RD was clear and the answer is not in the cache.
    #[error("recursion not desired and the answer is not cached")]
    NotCached,
    /// Every upstream resolver failed (timeout, network error or a bad rcode).
    #[error("all {0} upstream resolvers failed")]
    UpstreamsFailed(usize),
    /// Too many queries in flight; this one was shed.
    #[error("too many queries in flight")]
    Overloaded,
    /// The configuration is invalid.
    #[error("invalid DNS config `{key}`: {reason}")]
    InvalidConfig {
        /// The offending key.
        key: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A socket operation failed.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
}

impl DnsError {
    /// The response code a client receives for this error. This is the crate's only
    /// error-to-RCODE mapping.
    pub fn rcode(&self) -> u16 {
        match self {
            Self::Malformed(_) => rcode::FORMERR,
            Self::NotImplemented(_) => rcode::NOTIMP,
            Self::BadVersion(_) => rcode::BADVERS,
            Self::NameNotFound => rcode::NXDOMAIN,
            Self::Refused(_) | Self::NotCached => rcode::REFUSED,
            Self::Stale
            | Self::UpstreamsFailed(_)
            | Self::Overloaded
            | Self::InvalidConfig { .. }
            | Self::Io(_) => rcode::SERVFAIL,
        }
    }

    /// True for NXDOMAIN outcomes.
    pub fn is_name_not_found(&self) -> bool {
        matches!(self, Self::NameNotFound)
    }

    /// True when the catalog was too stale to answer.
    pub fn is_stale(&self) -> bool {
        matches!(self, Self::Stale)
    }

    /// True when every upstream failed or the query was shed.
    pub fn is_upstream_failure(&self) -> bool {
        matches!(self, Self::UpstreamsFailed(_) | Self::Overloaded)
    }

    /// True for configuration errors.
    pub fn is_invalid_config(&self) -> bool {
        matches!(self, Self::InvalidConfig { .. })
    }

    /// True when negative answers with this error carry the zone's SOA in the authority
    /// section (RFC 2308).
    pub(crate) fn carries_soa(&self) -> bool {
        matches!(self, Self::NameNotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcode_table() {
        let table: Vec<(DnsError, u16)> = vec![
            (DnsError::Malformed("two questions"), rcode::FORMERR),
            (DnsError::NotImplemented("AXFR"), rcode::NOTIMP),
            (DnsError::BadVersion(1), rcode::BADVERS),
            (DnsError::NameNotFound, rcode::NXDOMAIN),
            (DnsError::Stale, rcode::SERVFAIL),
            (DnsError::Refused("no recursors"), rcode::REFUSED),
            (DnsError::NotCached, rcode::REFUSED),
            (DnsError::UpstreamsFailed(2), rcode::SERVFAIL),
            (DnsError::Overloaded, rcode::SERVFAIL),
            (DnsError::Io(io::Error::other("x")), rcode::SERVFAIL),
        ];
        for (err, code) in table {
            assert_eq!(err.rcode(), code, "{err}");
        }
    }

    #[test]
    fn predicates() {
        assert!(DnsError::NameNotFound.is_name_not_found());
        assert!(DnsError::NameNotFound.carries_soa());
        assert!(!DnsError::Stale.carries_soa());
        assert!(DnsError::Stale.is_stale());
        assert!(DnsError::Overloaded.is_upstream_failure());
        assert!(DnsError::UpstreamsFailed(1).is_upstream_failure());
        assert!(
            DnsError::InvalidConfig {
                key: "domain",
                reason: String::new()
            }
            .is_invalid_config()
        );
    }
}
