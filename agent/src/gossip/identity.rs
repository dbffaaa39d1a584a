//! The gossip identity: who a member is, as every foca message carries it.
//!
//! foca puts the sender's and the receiver's identity into every message header, so the
//! identity is a small, fixed record (name, address, role, datacenter, RPC port, `expect`,
//! build) from which Consul's serf tags are rebuilt ([`GossipId::tags`]). A `bump` taken from
//! the wall clock when the agent starts makes a restarted agent's identity win over its
//! previous one at once ([`foca::Identity::win_addr_conflict`]).
//!
//! Wire format (versioned, tolerant): the identity travels as one length-prefixed byte string
//! whose first byte is [`ID_VERSION`]; then the version-1 fields in a fixed order. A newer
//! agent may append fields: an older one keeps those bytes verbatim in `extra` (so it
//! re-gossips the identity unchanged and equality still holds) and ignores them otherwise.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::node::NodeIdentity;

/// The identity encoding written by this build.
pub const ID_VERSION: u8 = 1;
/// Longest string field accepted (node names, datacenter, build).
const MAX_STR: usize = 256;
/// Longest appended (unknown, newer) field block kept.
const MAX_EXTRA: usize = 512;

/// A gossip member's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GossipId {
    /// Gossip address (advertise address and bound serf LAN port).
    pub addr: SocketAddr,
    /// Node name.
    pub name: String,
    /// Restart counter: wall-clock milliseconds at start, plus one per renewal.
    pub bump: u64,
    /// Node UUID (the `id` tag).
    pub node_id: String,
    /// Datacenter (the `dc` tag).
    pub datacenter: String,
    /// Whether the member is a server (`role` = `consul`).
    pub server: bool,
    /// Server RPC port (the `port` tag; 0 when none).
    pub rpc_port: u16,
    /// `bootstrap_expect` (the `expect` tag; 0 when unset).
    pub expect: u32,
    /// Bootstrap mode (the `bootstrap` tag).
    pub bootstrap: bool,
    /// Build string (the `build` tag).
    pub build: String,
    /// Fields appended by a newer encoding, kept verbatim.
    pub extra: Vec<u8>,
}

/// Why an identity could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdDecodeError {
    /// The bytes end before the version-1 fields do.
    #[error("identity truncated")]
    Truncated,
    /// Version 0 or an unusable field.
    #[error("invalid identity: {0}")]
    Invalid(&'static str),
}

impl GossipId {
    /// The identity of this agent, with `bump` (see [`initial_bump`]).
    pub fn from_node(node: &NodeIdentity, bootstrap: bool, build: String, bump: u64) -> Self {
        GossipId {
            addr: SocketAddr::new(node.advertise_addr, node.serf_lan_port),
            name: node.name.clone(),
            bump,
            node_id: node.id.clone(),
            datacenter: node.datacenter.clone(),
            server: node.server,
            rpc_port: node.server_port.unwrap_or(0),
            expect: node.bootstrap_expect,
            bootstrap,
            build,
            extra: Vec::new(),
        }
    }

    /// Consul's serf tags for this member (`role`, `dc`, `id`, `vsn`, `build`, `port`, ...).
    pub fn tags(&self) -> BTreeMap<String, String> {
        let node = NodeIdentity {
            name: self.name.clone(),
            id: self.node_id.clone(),
            datacenter: self.datacenter.clone(),
            advertise_addr: self.addr.ip(),
            server: self.server,
            bootstrap_expect: self.expect,
            serf_lan_port: self.addr.port(),
            server_port: (self.rpc_port != 0).then_some(self.rpc_port),
        };
        let mut tags = crate::runtime::self_tags(&node, self.bootstrap);
        tags.insert("build".to_owned(), self.build.clone());
        tags
    }

    /// The encoding (without the outer length prefix).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.name.len() + self.node_id.len());
        out.push(ID_VERSION);
        match self.addr.ip() {
            IpAddr::V4(ip) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&self.addr.port().to_be_bytes());
        out.extend_from_slice(&self.bump.to_be_bytes());
        for s in [&self.name, &self.node_id, &self.datacenter] {
            put_str(&mut out, s);
        }
        out.push(u8::from(self.server) | (u8::from(self.bootstrap) << 1));
        out.extend_from_slice(&self.rpc_port.to_be_bytes());
        out.extend_from_slice(&self.expect.to_be_bytes());
        put_str(&mut out, &self.build);
        out.extend_from_slice(&self.extra);
        out
    }

    /// Decodes [`GossipId::encode`]'s output, from any version ≥ 1.
    pub fn decode(bytes: &[u8]) -> Result<Self, IdDecodeError> {
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version == 0 {
            return Err(IdDecodeError::Invalid("version 0"));
        }
        let ip = match r.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(r.take(4)?).unwrap_or_default(),
            )),
            6 => IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(r.take(16)?).unwrap_or_default(),
            )),
            _ => return Err(IdDecodeError::Invalid("address family")),
        };
        let port = r.u16()?;
        let bump = r.u64()?;
        let name = r.str()?;
        let node_id = r.str()?;
        let datacenter = r.str()?;
        let flags = r.u8()?;
        let rpc_port = r.u16()?;
        let expect = r.u32()?;
        let build = r.str()?;
        if name.is_empty() {
            return Err(IdDecodeError::Invalid("empty node name"));
        }
        if r.0.len() > MAX_EXTRA {
            return Err(IdDecodeError::Invalid("too many appended fields"));
        }
        Ok(GossipId {
            addr: SocketAddr::new(ip, port),
            name,
            bump,
            node_id,
            datacenter,
            server: flags & 1 != 0,
            rpc_port,
            expect,
            bootstrap: flags & 2 != 0,
            build,
            extra: r.0.to_vec(),
        })
    }
}

/// The starting `bump`: milliseconds since the Unix epoch, so that an agent restarted later
/// (even within a second) has a larger one than any identity it had before.
pub fn initial_bump() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Strings are capped at encode time too, so a valid identity always decodes.
    let s = truncate(s, MAX_STR);
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], IdDecodeError> {
        if self.0.len() < n {
            return Err(IdDecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, IdDecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, IdDecodeError> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Result<u32, IdDecodeError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    fn u64(&mut self) -> Result<u64, IdDecodeError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    fn str(&mut self) -> Result<String, IdDecodeError> {
        let len = usize::from(self.u16()?);
        if len > MAX_STR {
            return Err(IdDecodeError::Invalid("string too long"));
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| IdDecodeError::Invalid("string not UTF-8"))
    }
}

impl foca::Identity for GossipId {
    type Addr = SocketAddr;

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A renewed identity (after this node was declared down) is the same node with a
    /// larger bump, so the cluster takes it as newer.
    fn renew(&self) -> Option<Self> {
        Some(GossipId {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

// serde: one byte string, so the codec frames it and older decoders can skip what they
// do not know inside it.
impl Serialize for GossipId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.encode())
    }
}

impl<'de> Deserialize<'de> for GossipId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = GossipId;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an encoded gossip identity")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<GossipId, E> {
                GossipId::decode(v).map_err(E::custom)
            }
        }
        d.deserialize_bytes(IdVisitor)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use foca::Identity;

    use super::*;

    pub(crate) fn sample() -> GossipId {
        GossipId {
            addr: "10.0.0.11:8301".parse().unwrap(),
            name: "db1".into(),
            bump: 1_700_000_000_000,
            node_id: "40e4a748-2192-161a-0510-9bf59fe950b5".into(),
            datacenter: "dc1".into(),
            server: true,
            rpc_port: 8300,
            expect: 3,
            bootstrap: false,
            build: "0.1.0:abc".into(),
            extra: Vec::new(),
        }
    }

    #[test]
    fn round_trip_v4_and_v6() {
        let id = sample();
        assert_eq!(GossipId::decode(&id.encode()).unwrap(), id);
        let mut v6 = sample();
        v6.addr = "[fd00::1]:9301".parse().unwrap();
        v6.server = false;
        v6.rpc_port = 0;
        v6.bootstrap = true;
        assert_eq!(GossipId::decode(&v6.encode()).unwrap(), v6);
    }

    #[test]
    fn newer_versions_with_appended_fields_decode_and_reencode_unchanged() {
        let mut bytes = sample().encode();
        bytes[0] = 7;
        bytes.extend_from_slice(b"\x00\x03new");
        let id = GossipId::decode(&bytes).unwrap();
        assert_eq!(id.name, "db1");
        assert_eq!(id.extra, b"\x00\x03new");
        // Re-encoded by this (older) build, only the version byte differs.
        let again = id.encode();
        assert_eq!(&again[1..], &bytes[1..]);
    }

    #[test]
    fn truncated_and_invalid_identities_are_refused() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() - "0.1.0:abc".len() - 2 {
            assert!(GossipId::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut zero = bytes.clone();
        zero[0] = 0;
        assert_eq!(
            GossipId::decode(&zero),
            Err(IdDecodeError::Invalid("version 0"))
        );
        let mut family = bytes;
        family[1] = 5;
        assert!(GossipId::decode(&family).is_err());
    }

    #[test]
    fn a_restart_or_renewal_wins_the_address() {
        let old = sample();
        let renewed = old.renew().unwrap();
        assert!(renewed.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&renewed));
        let mut restarted = old.clone();
        restarted.bump = initial_bump();
        assert!(restarted.win_addr_conflict(&old));
        assert_eq!(renewed.addr(), old.addr());
    }

    #[test]
    fn tags_follow_consul() {
        let tags = sample().tags();
        assert_eq!(tags["role"], "consul");
        assert_eq!(tags["dc"], "dc1");
        assert_eq!(tags["port"], "8300");
        assert_eq!(tags["expect"], "3");
        assert_eq!(tags["build"], "0.1.0:abc");
        assert_eq!(tags["id"], "40e4a748-2192-161a-0510-9bf59fe950b5");
        let mut client = sample();
        client.server = false;
        assert_eq!(client.tags()["role"], "node");
        assert!(!client.tags().contains_key("port"));
    }
}
