//! Which clients may use the recursors: `dns_config.recursor_allow`.
//!
//! Consul forwards for anyone who can reach its DNS port, so an agent bound beyond loopback
//! is an open resolver unless a firewall says otherwise. We follow Bind9's
//! `allow-recursion` instead: by default only `localhost` and `localnets` (the networks of
//! this host's interfaces) may recurse. Everyone still gets answers inside the cluster
//! domain; a client outside the list gets REFUSED for every other name, and RA=0 on every
//! answer, as Bind answers it.
//!
//! Entries are CIDR prefixes (`10.0.0.0/8`, `fd00::/8`), single addresses, or the keywords
//! `localhost` (127.0.0.0/8 and ::1), `localnets` (resolved from the interfaces when the
//! configuration is loaded or reloaded) and `any` (everyone: an open resolver, on purpose).
//! An empty list allows nobody. IPv4-mapped IPv6 clients (`::ffff:a.b.c.d`) are matched
//! as the IPv4 address they are.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One network: an address and the number of leading bits that must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// The network `addr/prefix`; host bits of `addr` are cleared. `None` when the prefix is
    /// longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let addr = addr.to_canonical();
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= bits).then(|| Net {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// The clients allowed to use the recursors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecursorAllow {
    nets: Vec<Net>,
}

/// What `localhost` stands for.
fn localhost() -> [Net; 2] {
    [
        Net::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8).expect("valid prefix"),
        Net::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128).expect("valid prefix"),
    ]
}

impl RecursorAllow {
    /// Bind9's default and ours: `["localhost", "localnets"]`.
    pub const DEFAULT: [&'static str; 2] = ["localhost", "localnets"];

    /// Everyone (the `any` keyword).
    pub fn any() -> Self {
        RecursorAllow {
            nets: vec![
                Net::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).expect("valid prefix"),
                Net::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).expect("valid prefix"),
            ],
        }
    }

    /// Exactly these networks.
    pub fn nets(nets: Vec<Net>) -> Self {
        RecursorAllow { nets }
    }

    /// Parses the configured entries; `localnets` reads this host's interfaces now. The
    /// error names the entry that is wrong.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut nets = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            match entry {
                "any" => nets.extend(Self::any().nets),
                "localhost" => nets.extend(localhost()),
                "localnets" => nets.extend(local_nets().map_err(|e| {
                    format!("cannot list this host's networks for \"localnets\": {e}")
                })?),
                _ => nets.push(parse_net(entry)?),
            }
        }
        nets.dedup();
        Ok(RecursorAllow { nets })
    }

    /// Whether a client at `ip` may use the recursors.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// The networks, for logs and `/v1/agent/self`.
    pub fn networks(&self) -> &[Net] {
        &self.nets
    }
}

impl Default for RecursorAllow {
    /// `localhost` and `localnets`; `localhost` alone if the interfaces cannot be read.
    fn default() -> Self {
        Self::parse(&Self::DEFAULT).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "recursor_allow: falling back to localhost only");
            RecursorAllow {
                nets: localhost().to_vec(),
            }
        })
    }
}

fn parse_net(entry: &str) -> Result<Net, String> {
    let bad = |why: &str| {
        format!(
            "{entry:?} is not a network: {why} (use a CIDR such as 10.0.0.0/8, an address, \
             or localhost, localnets, any)"
        )
    };
    let (addr, prefix) = match entry.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (entry, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
    let addr = addr.to_canonical();
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => bits,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= bits)
            .ok_or_else(|| bad(&format!("the prefix length must be 0 to {bits}")))?,
    };
    Net::new(addr, prefix).ok_or_else(|| bad("prefix too long"))
}

/// The networks of this host's interfaces (address and netmask of each), Bind's
/// `localnets`.
fn local_nets() -> Result<Vec<Net>, nix::Error> {
    let mut nets = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let pair = if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            Some((IpAddr::V4(a.ip()), u32::from(m.ip()).count_ones()))
        } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            Some((IpAddr::V6(a.ip()), u128::from(m.ip()).count_ones()))
        } else {
            None
        };
        if let Some((ip, prefix)) = pair
            && let Some(net) = Net::new(ip, prefix as u8)
            && !nets.contains(&net)
        {
            nets.push(net);
        }
    }
    Ok(nets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_addresses_and_keywords() {
        let a = RecursorAllow::parse(&["10.1.0.0/16", "192.0.2.7", "fd00::/8"]).unwrap();
        assert!(a.allows(ip("10.1.200.3")));
        assert!(!a.allows(ip("10.2.0.1")));
        assert!(a.allows(ip("192.0.2.7")));
        assert!(!a.allows(ip("192.0.2.8")));
        assert!(a.allows(ip("fd12::1")));
        assert!(!a.allows(ip("fe80::1")));
        // IPv4-mapped clients of a dual-stack socket are their IPv4 address.
        assert!(a.allows(ip("::ffff:10.1.0.9")));
        assert!(!a.allows(ip("127.0.0.1")));

        let local = RecursorAllow::parse(&["localhost"]).unwrap();
        assert!(local.allows(ip("127.0.0.1")) && local.allows(ip("127.9.9.9")));
        assert!(local.allows(ip("::1")) && !local.allows(ip("10.0.0.1")));

        let any = RecursorAllow::parse(&["any"]).unwrap();
        assert!(any.allows(ip("203.0.113.1")) && any.allows(ip("2001:db8::1")));

        let nobody = RecursorAllow::parse::<&str>(&[]).unwrap();
        assert!(!nobody.allows(ip("127.0.0.1")));

        // Host bits are cleared, not refused (as Bind does).
        let host_bits = RecursorAllow::parse(&["10.1.2.3/8"]).unwrap();
        assert_eq!(host_bits.networks()[0].to_string(), "10.0.0.0/8");
        assert!(host_bits.allows(ip("10.200.0.1")));
    }

    #[test]
    fn localnets_covers_the_loopback_interface() {
        // `lo` carries 127.0.0.1/8 on every Linux host.
        let nets = RecursorAllow::parse(&["localnets"]).unwrap();
        assert!(nets.allows(ip("127.0.0.1")), "{:?}", nets.networks());
        assert!(!nets.allows(ip("203.0.113.77")), "{:?}", nets.networks());
        assert!(RecursorAllow::default().allows(ip("127.0.0.53")));
    }

    #[test]
    fn bad_entries_are_named() {
        for (entry, says) in [
            ("10.0.0.0/33", "prefix length must be 0 to 32"),
            ("fd00::/129", "prefix length must be 0 to 128"),
            ("10.0.0/8", "not an IP address"),
            ("localnet", "not an IP address"),
            ("10.0.0.0/x", "prefix length"),
        ] {
            let e = RecursorAllow::parse(&[entry]).unwrap_err();
            assert!(e.contains(&format!("{entry:?}")) && e.contains(says), "{e}");
        }
    }
}
