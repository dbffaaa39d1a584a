//! The prepared zone: a [`DnsCatalog`] indexed for DNS under one [`DnsConfig`].
//!
//! Built once per published catalog (or config change) so that answering is O(answer):
//! lower-cased hash keys for services, tags and nodes; health filtering, de-duplication and
//! TTL resolution done up front; node TXT data and SRV target labels pre-encoded; a reverse
//! map for PTR. Invariants: every instance index in a set points into its service's
//! `instances`, every node index into `nodes`; sets contain only instances that DNS may
//! return (passing, or warning unless `only_passing`).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::catalog::{DnsCatalog, InstanceHealth};
use crate::config::{DnsConfig, SoaConfig, domain_labels, ttl_secs};
use crate::name::ZoneLabels;

/// An address record's data, or a hostname to CNAME to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Addr {
    V4([u8; 4]),
    V6([u8; 16]),
    /// A lower-cased wire name (FQDN).
    Host(Box<[u8]>),
}

impl Addr {
    /// Parses a catalog address: an IP (IPv4-mapped IPv6 counts as IPv4), a hostname, or
    /// nothing when it is empty or not a valid name.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(Self::from_ip(ip));
        }
        text_to_wire(text).map(|w| Self::Host(w.into_boxed_slice()))
    }

    fn from_ip(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => Self::V6(v6.octets()),
        }
    }

    /// The IP, for IP addresses.
    pub(crate) fn ip(&self) -> Option<IpAddr> {
        match self {
            Self::V4(o) => Some(IpAddr::V4(Ipv4Addr::from(*o))),
            Self::V6(o) => Some(IpAddr::V6(Ipv6Addr::from(*o))),
            Self::Host(_) => None,
        }
    }
}

/// Converts `a.b.c` or `a.b.c.` to a lower-cased wire name; `None` if it is not a name.
pub(crate) fn text_to_wire(text: &str) -> Option<Vec<u8>> {
    let mut wire = Vec::with_capacity(text.len() + 2);
    for label in domain_labels(text).ok()? {
        wire.push(label.len() as u8);
        wire.extend_from_slice(&label);
    }
    if wire.is_empty() {
        return None;
    }
    wire.push(0);
    Some(wire)
}

/// Wire labels (no root byte) for a name given as text, keeping its case; `None` if a
/// label is empty or too long.
fn text_to_labels(text: &str) -> Option<Vec<u8>> {
    let mut wire = Vec::with_capacity(text.len() + 1);
    for label in text.split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        wire.push(label.len() as u8);
        wire.extend_from_slice(label.as_bytes());
    }
    Some(wire)
}

/// Encodes one node-meta entry as TXT record data (RFC 1464 `key=value`, with Consul's
/// backquote escaping; keys starting with `rfc1035-` give the bare value), split into
/// character-strings of at most 255 bytes.
pub(crate) fn meta_txt_rdata(key: &str, value: &str) -> Vec<u8> {
    let text = if key.to_ascii_lowercase().starts_with("rfc1035-") {
        value.to_owned()
    } else {
        rfc1464(key, value)
    };
    let mut rdata = Vec::with_capacity(text.len() + 2);
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        rdata.push(0);
    }
    for chunk in bytes.chunks(255) {
        rdata.push(chunk.len() as u8);
        rdata.extend_from_slice(chunk);
    }
    rdata
}

/// RFC 1464 attribute encoding as Consul does it: in the key, backquote becomes two
/// backquotes, `=` becomes backquote-`=`, and leading and trailing spaces are backquoted;
/// in the value only backquotes are doubled.
pub(crate) fn rfc1464(key: &str, value: &str) -> String {
    let key = key.replace('`', "``").replace('=', "`=");
    let body = key.trim_matches(' ');
    let leading = key.len() - key.trim_start_matches(' ').len();
    let trailing = if body.is_empty() {
        0
    } else {
        key.len() - key.trim_end_matches(' ').len()
    };
    let mut out = String::with_capacity(key.len() + value.len() + 8);
    out.push_str(&"` ".repeat(leading));
    out.push_str(body);
    out.push_str(&"` ".repeat(trailing));
    out.push('=');
    out.push_str(&value.replace('`', "``"));
    out
}

/// Where an SRV record points.
#[derive(Clone, Debug)]
pub(crate) enum SrvTarget {
    /// `<node>.node.<dc>.<domain>`, glue from the node's IP.
    Node(u32),
    /// `<hex>.addr.<dc>.<domain>`: the wire labels `<hex>.addr.<dc>`; glue from the IP.
    Addr(Box<[u8]>),
    /// The hostname itself (glue only when it is inside the zone).
    Host,
}

/// One healthy instance, ready to write.
#[derive(Clone, Debug)]
pub(crate) struct Instance {
    pub(crate) node: u32,
    pub(crate) addr: Addr,
    pub(crate) srv_target: SrvTarget,
    pub(crate) port: u16,
    pub(crate) weight: u16,
}

/// The instances one name returns, per record kind, de-duplicated as Consul does.
#[derive(Clone, Debug, Default)]
pub(crate) struct InstanceSet {
    /// Instances with distinct IPv4 addresses.
    pub(crate) v4: Vec<u32>,
    /// Instances with distinct IPv6 addresses.
    pub(crate) v6: Vec<u32>,
    /// Instances with distinct hostnames.
    pub(crate) hosts: Vec<u32>,
    /// Instances with distinct (node, address, port), for SRV.
    pub(crate) srv: Vec<u32>,
    seen_addr: HashSet<Addr>,
    seen_srv: HashSet<(u32, Addr, u16)>,
}

impl InstanceSet {
    fn add(&mut self, idx: u32, inst: &Instance) {
        if self.seen_addr.insert(inst.addr.clone()) {
            match inst.addr {
                Addr::V4(_) => self.v4.push(idx),
                Addr::V6(_) => self.v6.push(idx),
                Addr::Host(_) => self.hosts.push(idx),
            }
        }
        if self
            .seen_srv
            .insert((inst.node, inst.addr.clone(), inst.port))
        {
            self.srv.push(idx);
        }
    }

    fn seal(&mut self) {
        // The de-duplication sets are only needed while building.
        self.seen_addr = HashSet::new();
        self.seen_srv = HashSet::new();
    }
}

/// A service with at least one instance DNS may return.
#[derive(Clone, Debug)]
pub(crate) struct ServiceEntry {
    pub(crate) ttl: u32,
    pub(crate) instances: Vec<Instance>,
    pub(crate) all: InstanceSet,
    pub(crate) by_tag: HashMap<Box<[u8]>, InstanceSet>,
}

/// A node.
#[derive(Clone, Debug)]
pub(crate) struct NodeEntry {
    /// Wire labels `<name>.node.<dc>` (no root byte): the prefix of its canonical name.
    pub(crate) target: Box<[u8]>,
    pub(crate) addr: Option<Addr>,
    /// Pre-encoded TXT record data, one per meta entry.
    pub(crate) txt: Vec<Box<[u8]>>,
}

/// One PTR answer: the full wire name it points to and its TTL.
#[derive(Clone, Debug)]
pub(crate) struct PtrTarget {
    pub(crate) name: Box<[u8]>,
    pub(crate) ttl: u32,
}

/// The prepared zone.
#[derive(Debug)]
pub(crate) struct Zone {
    pub(crate) labels: ZoneLabels,
    pub(crate) node_ttl: u32,
    pub(crate) soa: SoaConfig,
    pub(crate) meta_txt: bool,
    pub(crate) compress: bool,
    pub(crate) recursion_available: bool,
    pub(crate) a_record_limit: usize,
    pub(crate) udp_answer_limit: usize,
    pub(crate) services: HashMap<Box<[u8]>, ServiceEntry>,
    pub(crate) nodes: Vec<NodeEntry>,
    pub(crate) node_index: HashMap<Box<[u8]>, u32>,
    /// Node names for each address; service names when no node has it (as Consul).
    pub(crate) ptr: HashMap<IpAddr, Vec<PtrTarget>>,
    /// Server nodes with an IP address, for NS records.
    pub(crate) servers: Vec<u32>,
}

impl Zone {
    /// Indexes `catalog` for `config` (which must have passed `validate`).
    pub(crate) fn build(catalog: &DnsCatalog, config: &DnsConfig) -> Self {
        // The catalog knows which datacenter it describes; the config is the fallback.
        let dc = if catalog.datacenter.is_empty() {
            &config.datacenter
        } else {
            &catalog.datacenter
        };
        let dc = dc.to_ascii_lowercase();
        let mut domains = vec![domain_labels(&config.domain).unwrap_or_default()];
        if let Some(alt) = &config.alt_domain {
            domains.push(domain_labels(alt).unwrap_or_default());
        }
        let primary_wire: Vec<u8> = domains[0]
            .iter()
            .flat_map(|l| std::iter::once(l.len() as u8).chain(l.iter().copied()))
            .chain(std::iter::once(0))
            .collect();
        let mut dc_label = vec![dc.len() as u8];
        dc_label.extend_from_slice(dc.as_bytes());
        let node_ttl = ttl_secs(config.node_ttl);
        let mut zone = Self {
            labels: ZoneLabels {
                domains,
                datacenter: dc.clone().into_bytes(),
            },
            node_ttl,
            soa: config.soa,
            meta_txt: config.enable_additional_node_meta_txt,
            compress: !config.disable_compression,
            recursion_available: !config.recursors.is_empty(),
            a_record_limit: config.a_record_limit,
            udp_answer_limit: config.effective_udp_answer_limit(),
            services: HashMap::new(),
            nodes: Vec::with_capacity(catalog.nodes.len()),
            node_index: HashMap::with_capacity(catalog.nodes.len()),
            ptr: HashMap::new(),
            servers: Vec::new(),
        };

        // Nodes come from the node list and, for consistency, from instances whose node is
        // missing from it (the instance carries the node address).
        let mut node_ptr: HashMap<IpAddr, Vec<PtrTarget>> = HashMap::new();
        let mut add_node = |zone: &mut Self,
                            name: &str,
                            address: &str,
                            meta: Option<&std::collections::BTreeMap<String, String>>|
         -> Option<u32> {
            // Names are case-insensitive: keys are lower-cased, display names keep their case.
            let key = name.to_ascii_lowercase().into_bytes().into_boxed_slice();
            if let Some(&idx) = zone.node_index.get(&key) {
                return Some(idx);
            }
            let mut target = text_to_labels(name)?;
            target.extend_from_slice(b"\x04node");
            target.extend_from_slice(&dc_label);
            // A node whose canonical name would exceed 255 bytes cannot be named in DNS.
            if target.len() + primary_wire.len() > 255 {
                return None;
            }
            let addr = Addr::parse(address);
            if let Some(ip) = addr.as_ref().and_then(Addr::ip) {
                let mut full = target.clone();
                full.extend_from_slice(&primary_wire);
                node_ptr.entry(ip).or_default().push(PtrTarget {
                    name: full.into(),
                    ttl: node_ttl,
                });
            }
            let txt = meta
                .into_iter()
                .flatten()
                .map(|(k, v)| meta_txt_rdata(k, v).into_boxed_slice())
                .collect();
            let idx = zone.nodes.len() as u32;
            zone.nodes.push(NodeEntry {
                target: target.into(),
                addr,
                txt,
            });
            zone.node_index.insert(key, idx);
            Some(idx)
        };
        for node in &catalog.nodes {
            add_node(&mut zone, &node.name, &node.address, Some(&node.meta));
        }

        let mut service_ptr: HashMap<IpAddr, Vec<PtrTarget>> = HashMap::new();
        for inst in &catalog.services {
            let Some(node) = add_node(&mut zone, &inst.node, &inst.node_address, None) else {
                continue;
            };
            let key = inst
                .service
                .to_ascii_lowercase()
                .into_bytes()
                .into_boxed_slice();
            let ttl = ttl_secs(config.service_ttl.resolve(&inst.service));
            if let (Some(ip), Some(labels)) = (
                inst.address.trim().parse::<IpAddr>().ok(),
                text_to_labels(&inst.service),
            ) {
                let mut full = labels;
                full.extend_from_slice(b"\x07service");
                full.extend_from_slice(&dc_label);
                full.extend_from_slice(&primary_wire);
                let targets = service_ptr.entry(ip.to_canonical()).or_default();
                if full.len() <= 255 && !targets.iter().any(|t| *t.name == *full) {
                    targets.push(PtrTarget {
                        name: full.into(),
                        ttl,
                    });
                }
            }
            // Health filter (Consul `Filter(only_passing)`): critical never, warning unless
            // only_passing; the SRV weight follows the health.
            let weight = match inst.health {
                InstanceHealth::Passing => inst.weights.passing,
                InstanceHealth::Warning if !config.only_passing => inst.weights.warning,
                InstanceHealth::Warning | InstanceHealth::Critical => continue,
            };
            let node_addr = zone.nodes[node as usize].addr.clone();
            // A service address equal to the node address is treated as "none" (our choice:
            // the SRV target is then the node name, not `.addr`).
            let svc_addr = Addr::parse(&inst.address).filter(|a| Some(a) != node_addr.as_ref());
            // Consul's rules: no service address → the node (SRV target `<node>.node`);
            // a service IP → `<hex>.addr` target; a hostname → CNAME / SRV to it.
            let (addr, srv_target) = match (svc_addr, node_addr) {
                (None, Some(Addr::Host(h))) => (Addr::Host(h), SrvTarget::Host),
                (None, Some(ip)) => (ip, SrvTarget::Node(node)),
                (None, None) => continue,
                (Some(Addr::Host(h)), _) => (Addr::Host(h), SrvTarget::Host),
                (Some(ip), _) => {
                    let target = addr_target(&ip, &dc_label);
                    (ip, SrvTarget::Addr(target))
                }
            };
            let entry = zone.services.entry(key).or_insert_with(|| ServiceEntry {
                ttl,
                instances: Vec::new(),
                all: InstanceSet::default(),
                by_tag: HashMap::new(),
            });
            let idx = entry.instances.len() as u32;
            let instance = Instance {
                node,
                addr,
                srv_target,
                port: inst.port,
                weight,
            };
            entry.all.add(idx, &instance);
            // One set per distinct lower-cased tag; a tag listed twice counts once.
            let mut tags_seen = HashSet::new();
            for tag in &inst.tags {
                let tag = tag.to_ascii_lowercase().into_bytes().into_boxed_slice();
                if tags_seen.insert(tag.clone()) {
                    entry.by_tag.entry(tag).or_default().add(idx, &instance);
                }
            }
            entry.instances.push(instance);
        }
        // Drop the build-time de-duplication sets before the zone is shared.
        for entry in zone.services.values_mut() {
            entry.all.seal();
            entry.by_tag.values_mut().for_each(InstanceSet::seal);
        }
        // PTR: node names win; service names only for addresses no node has (Consul).
        for (ip, targets) in service_ptr {
            node_ptr.entry(ip).or_insert(targets);
        }
        zone.ptr = node_ptr;
        // NS targets need glue, so only servers with an IP address qualify.
        for server in &catalog.servers {
            let key = server.to_ascii_lowercase().into_bytes();
            if let Some(&idx) = zone.node_index.get(key.as_slice())
                && zone.nodes[idx as usize]
                    .addr
                    .as_ref()
                    .and_then(Addr::ip)
                    .is_some()
                && !zone.servers.contains(&idx)
            {
                zone.servers.push(idx);
            }
        }
        zone
    }
}

/// The wire labels `<hex>.addr.<dc>` for an IP (Consul's `encodeIPAsFqdn`).
fn addr_target(addr: &Addr, dc_label: &[u8]) -> Box<[u8]> {
    let octets: &[u8] = match addr {
        Addr::V4(o) => o,
        Addr::V6(o) => o,
        Addr::Host(_) => &[],
    };
    let mut out = Vec::with_capacity(octets.len() * 2 + 8 + dc_label.len());
    out.push((octets.len() * 2) as u8);
    for b in octets {
        out.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    out.extend_from_slice(b"\x04addr");
    out.extend_from_slice(dc_label);
    out.into_boxed_slice()
}

/// Decodes the hex label of an `.addr` name.
pub(crate) fn addr_from_hex(hex: &[u8]) -> Option<Addr> {
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut bytes = [0u8; 16];
    let n = hex.len() / 2;
    if !matches!(hex.len(), 8 | 32) {
        return None;
    }
    for i in 0..n {
        bytes[i] = nibble(hex[2 * i])? << 4 | nibble(hex[2 * i + 1])?;
    }
    Some(if n == 4 {
        Addr::V4([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        Addr::V6(bytes)
    })
}

/// Parses a reverse name (`4.3.2.1.in-addr.arpa`, 32 nibbles `.ip6.arpa`) given as
/// lower-cased labels, leftmost first.
pub(crate) fn ip_from_arpa<'a>(labels: impl Iterator<Item = &'a [u8]> + Clone) -> Option<IpAddr> {
    let all: Vec<&[u8]> = labels.collect();
    match all.as_slice() {
        [d, c, b, a, b"in-addr", b"arpa"] => {
            let octet = |l: &[u8]| -> Option<u8> {
                let s = std::str::from_utf8(l).ok()?;
                if s.len() > 1 && s.starts_with('0') {
                    return None;
                }
                s.parse().ok()
            };
            Some(IpAddr::V4(Ipv4Addr::new(
                octet(a)?,
                octet(b)?,
                octet(c)?,
                octet(d)?,
            )))
        }
        [nibbles @ .., b"ip6", b"arpa"] if nibbles.len() == 32 => {
            let mut bytes = [0u8; 16];
            for (i, label) in nibbles.iter().rev().enumerate() {
                let [c] = label else { return None };
                let v = (*c as char).to_digit(16)? as u8;
                bytes[i / 2] |= if i % 2 == 0 { v << 4 } else { v };
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)).to_canonical())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{DnsNode, DnsServiceInstance, Weights};

    #[test]
    fn rfc1464_encoding() {
        assert_eq!(rfc1464("color", "blue"), "color=blue");
        assert_eq!(rfc1464("a=b", "c=d"), "a`=b=c=d");
        assert_eq!(rfc1464("back`quote", "x`y"), "back``quote=x``y");
        assert_eq!(rfc1464("  padded ", "v"), "` ` padded` =v");
        assert_eq!(rfc1464("", "v"), "=v");
        assert_eq!(meta_txt_rdata("key", "value"), b"\x09key=value");
        assert_eq!(
            meta_txt_rdata("rfc1035-raw", "v=spf1 -all"),
            b"\x0bv=spf1 -all"
        );
        assert_eq!(meta_txt_rdata("RFC1035-x", ""), b"\x00");
        let long = meta_txt_rdata("k", &"x".repeat(300));
        assert_eq!(long[0], 255);
        assert_eq!(usize::from(long[256]), 302 - 255);
    }

    #[test]
    fn parses_addresses() {
        assert_eq!(Addr::parse("10.1.2.3"), Some(Addr::V4([10, 1, 2, 3])));
        assert_eq!(
            Addr::parse("::ffff:10.1.2.3"),
            Some(Addr::V4([10, 1, 2, 3]))
        );
        assert!(matches!(Addr::parse("2001:db8::1"), Some(Addr::V6(_))));
        assert_eq!(
            Addr::parse("DB.Example.com"),
            Some(Addr::Host(b"\x02db\x07example\x03com\x00".to_vec().into()))
        );
        assert_eq!(Addr::parse(""), None);
        assert_eq!(Addr::parse("bad..name"), None);
    }

    #[test]
    fn hex_and_arpa() {
        assert_eq!(addr_from_hex(b"7f000001"), Some(Addr::V4([127, 0, 0, 1])));
        assert_eq!(addr_from_hex(b"7f00001"), None);
        assert_eq!(
            addr_target(&Addr::V4([127, 0, 0, 1]), b"\x03dc1").as_ref(),
            b"\x087f000001\x04addr\x03dc1"
        );
        let v4: Vec<&[u8]> = vec![b"4", b"3", b"2", b"1", b"in-addr", b"arpa"];
        assert_eq!(
            ip_from_arpa(v4.into_iter()),
            Some("1.2.3.4".parse().unwrap())
        );
        let bad: Vec<&[u8]> = vec![b"256", b"3", b"2", b"1", b"in-addr", b"arpa"];
        assert_eq!(ip_from_arpa(bad.into_iter()), None);
        let ip6 = "2001:db8::1".parse::<Ipv6Addr>().unwrap();
        let nibbles: Vec<String> = ip6
            .octets()
            .iter()
            .flat_map(|b| [b >> 4, b & 0xF])
            .rev()
            .map(|n| format!("{n:x}"))
            .collect();
        let mut labels: Vec<&[u8]> = nibbles.iter().map(|s| s.as_bytes()).collect();
        labels.extend([b"ip6".as_slice(), b"arpa"]);
        assert_eq!(ip_from_arpa(labels.into_iter()), Some(IpAddr::V6(ip6)));
    }

    fn instance(
        service: &str,
        node: &str,
        node_addr: &str,
        addr: &str,
        port: u16,
        health: InstanceHealth,
    ) -> DnsServiceInstance {
        DnsServiceInstance {
            service: service.into(),
            id: format!("{service}-{node}-{port}"),
            node: node.into(),
            node_address: node_addr.into(),
            address: addr.into(),
            port,
            tags: vec!["Primary".into()],
            weights: Weights {
                passing: 10,
                warning: 2,
            },
            health,
        }
    }

    #[test]
    fn build_filters_health_and_dedups() {
        let catalog = DnsCatalog {
            nodes: vec![
                DnsNode {
                    name: "n1".into(),
                    address: "10.0.0.1".into(),
                    ..Default::default()
                },
                DnsNode {
                    name: "n2".into(),
                    address: "10.0.0.2".into(),
                    ..Default::default()
                },
            ],
            services: vec![
                instance("Web", "n1", "10.0.0.1", "", 80, InstanceHealth::Passing),
                instance("web", "n1", "10.0.0.1", "", 81, InstanceHealth::Passing),
                instance(
                    "web",
                    "n2",
                    "10.0.0.2",
                    "10.0.0.9",
                    80,
                    InstanceHealth::Warning,
                ),
                instance("web", "n3", "10.0.0.3", "", 80, InstanceHealth::Critical),
                instance("db", "n1", "10.0.0.1", "", 5432, InstanceHealth::Critical),
            ],
            servers: vec!["n1".into(), "ghost".into()],
            ..Default::default()
        };
        let mut config = DnsConfig::default();
        config
            .service_ttl
            .insert("web", std::time::Duration::from_secs(7));
        let zone = Zone::build(&catalog, &config);
        let web = &zone.services[b"web".as_slice()];
        assert_eq!(web.ttl, 7);
        assert_eq!(web.all.v4.len(), 2, "same node IP twice counts once for A");
        assert_eq!(web.all.srv.len(), 3, "distinct ports count for SRV");
        assert!(
            !zone.services.contains_key(b"db".as_slice()),
            "all critical: absent"
        );
        assert_eq!(web.by_tag[b"primary".as_slice()].srv.len(), 3);
        assert!(matches!(web.instances[2].srv_target, SrvTarget::Addr(_)));
        assert_eq!(web.instances[2].weight, 2);
        assert_eq!(zone.servers, vec![0]);
        assert_eq!(zone.nodes.len(), 3, "n3 was added from its instance");
        assert!(
            zone.ptr
                .contains_key(&"10.0.0.9".parse::<IpAddr>().unwrap())
        );

        config.only_passing = true;
        let zone = Zone::build(&catalog, &config);
        assert_eq!(zone.services[b"web".as_slice()].all.srv.len(), 2);
    }
}
