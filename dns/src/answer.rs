//! Answer building for names in the zone: plain synchronous code from a prepared [`Zone`]
//! and a [`Query`] to response bytes.
//!
//! Both the UDP fast path and the general path (and TCP) call [`answer_zone`] and
//! [`answer_ptr`], so they give the same answers by construction. Invariants:
//! - answers reuse the question's name as sent (a compression pointer to offset 12, or a
//!   copy when compression is off), so 0x20 case randomisation round-trips;
//! - sections are written in order and a record that does not fit is rolled back:
//!   additional records are dropped silently, a cut answer set sets TC on UDP;
//!   a non-EDNS UDP response holds at most `udp_answer_limit` answers, TCP at most 4096
//!   (1024 SRV), and `a_record_limit` caps address answers everywhere;
//! - negative answers carry the zone SOA in the authority section (RFC 2308);
//! - allocation-free in steady state: the output buffer and [`Scratch`] are reused.

use std::collections::HashSet;
use std::net::IpAddr;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::error::{DnsError, rcode};
use crate::name::{MAX_NAME_LEN, Part, QName, ZoneName};
use crate::wire::{
    MessageWriter, NameRef, OptOut, Query, Section, Transport, response_flags, rtype,
};
use crate::zone::{
    Addr, Instance, InstanceSet, PtrTarget, ServiceEntry, SrvTarget, Zone, addr_from_hex,
};

/// Most answers in a TCP response (Consul's cap: 64 KiB cannot hold more).
const TCP_MAX_ANSWERS: usize = 4096;
/// Most SRV answers in a TCP response.
const TCP_MAX_SRV_ANSWERS: usize = 1024;
/// NS records per answer (Consul returns up to three servers).
const MAX_NS: usize = 3;
/// Depth of CNAME chains resolved inside the zone (Consul's `maxRecursionLevelDefault`).
const MAX_CNAME_DEPTH: usize = 3;

/// Reused per-thread (or per-task) state for answer building.
pub(crate) struct Scratch {
    rng: SmallRng,
    perm: Vec<u32>,
    /// (SRV target offset, instance) for every SRV answer kept, for the glue pass.
    kept: Vec<(u16, u32)>,
    glue_seen: HashSet<GlueKey>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum GlueKey {
    Node(u32),
    Ip(IpAddr),
}

impl Scratch {
    /// Fresh scratch space with a randomly seeded generator.
    pub(crate) fn new() -> Self {
        Self::seeded(rand::rng().random())
    }

    /// Scratch space with a fixed seed (tests compare paths with identical shuffles).
    pub(crate) fn seeded(seed: u64) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            perm: Vec::new(),
            kept: Vec::new(),
            glue_seen: HashSet::new(),
        }
    }

    /// Puts a random selection of `k` out of `0..total` into `perm[..k]` (a partial
    /// Fisher-Yates shuffle: O(total) to fill, O(k) to shuffle).
    fn shuffle(&mut self, total: usize, k: usize) {
        self.perm.clear();
        self.perm.extend(0..total as u32);
        for i in 0..k.min(total) {
            let j = self.rng.random_range(i..total);
            self.perm.swap(i, j);
        }
    }
}

/// What the response says, for statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Answered {
    pub(crate) rcode: u16,
    /// Answers were cut (TC was set on UDP).
    pub(crate) truncated: bool,
}

/// Answers a question inside the zone. `parsed` comes from [`crate::name::ZoneLabels::parse`],
/// `stale` says the catalog is older than `max_stale` allows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn answer_zone(
    zone: &Zone,
    q: &Query,
    name: ZoneName,
    domain_label: usize,
    transport: Transport,
    now_unix: u32,
    stale: bool,
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
) -> Answered {
    let mut b = Builder {
        zone,
        q,
        w: MessageWriter::new(out, q, q.size_limit(transport), zone.compress),
        domain_label,
        transport,
        now_unix,
        truncated: false,
    };
    let result = if matches!(q.qtype, rtype::AXFR | rtype::IXFR) {
        Err(DnsError::NotImplemented("zone transfer"))
    } else if stale {
        Err(DnsError::Stale)
    } else {
        b.dispatch(scratch, name)
    };
    b.finish(result)
}

/// Answers a PTR question from catalog data.
pub(crate) fn answer_ptr(
    zone: &Zone,
    q: &Query,
    targets: &[PtrTarget],
    transport: Transport,
    out: &mut Vec<u8>,
) -> Answered {
    let mut b = Builder {
        zone,
        q,
        w: MessageWriter::new(out, q, q.size_limit(transport), zone.compress),
        domain_label: 0,
        transport,
        now_unix: 0,
        truncated: false,
    };
    for target in targets {
        let mark = b.w.mark();
        b.w.name(NameRef::QUESTION, true);
        let rd = b.w.rr_header(rtype::PTR, target.ttl);
        b.w.name(NameRef::wire(&target.name), true);
        b.w.end_rdata(rd);
        if !b.w.commit(mark, Section::Answer) {
            b.truncated = true;
            break;
        }
    }
    b.finish(Ok(Found::Data))
}

/// A successful outcome; errors (NXDOMAIN, SERVFAIL, ...) are `DnsError`s.
enum Found {
    /// At least one answer record (or a deliberate partial answer).
    Data,
    /// NOERROR without answers; the SOA is already in the authority section.
    NoData,
}

/// Which address families an address question asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Families {
    V4,
    V6,
    Both,
}

impl Families {
    fn of(qtype: u16) -> Option<Self> {
        match qtype {
            rtype::A => Some(Self::V4),
            rtype::AAAA => Some(Self::V6),
            // Consul answers TXT questions for services with address records.
            rtype::ANY | rtype::TXT => Some(Self::Both),
            _ => None,
        }
    }

    fn admits(self, addr: &Addr) -> bool {
        matches!(
            (self, addr),
            (Self::Both, Addr::V4(_) | Addr::V6(_))
                | (Self::V4, Addr::V4(_))
                | (Self::V6, Addr::V6(_))
        )
    }
}

/// One response being built: the zone, the question and the writer, plus whether any
/// answer was cut (which becomes TC on UDP).
struct Builder<'a> {
    zone: &'a Zone,
    q: &'a Query,
    w: MessageWriter<'a>,
    /// Label index where the queried domain starts in the question.
    domain_label: usize,
    transport: Transport,
    now_unix: u32,
    truncated: bool,
}

impl Builder<'_> {
    /// Completes the response: the SOA for NXDOMAIN, flags, counts and OPT. AA is set on
    /// every zone answer except SERVFAIL for staleness (we cannot vouch for the data).
    fn finish(mut self, result: Result<Found, DnsError>) -> Answered {
        let (rcode, aa) = match &result {
            Ok(_) => (rcode::NOERROR, true),
            Err(e) => {
                if e.carries_soa() {
                    self.soa(Section::Authority);
                }
                (e.rcode(), !e.is_stale())
            }
        };
        let tc = self.truncated && self.transport == Transport::Udp;
        let flags = response_flags(
            self.q.flags,
            aa,
            tc,
            self.zone.recursion_available && self.q.may_recurse,
            rcode,
        );
        self.w
            .finish(flags, OptOut::for_request(self.q.edns, rcode));
        Answered {
            rcode,
            truncated: tc,
        }
    }

    /// Routes a parsed zone name to its answer builder.
    fn dispatch(&mut self, s: &mut Scratch, name: ZoneName) -> Result<Found, DnsError> {
        match name {
            ZoneName::Apex => self.apex(s),
            ZoneName::EmptyNonTerminal => Ok(self.nodata()),
            ZoneName::Service { service, tag } => self.service(s, service, tag),
            ZoneName::Node { node } => self.node(s, node),
            ZoneName::Addr { label } => self.addr(usize::from(label)),
            ZoneName::Invalid => Err(DnsError::NameNotFound),
        }
    }

    /// NODATA: the SOA goes into the authority section.
    fn nodata(&mut self) -> Found {
        self.soa(Section::Authority);
        Found::NoData
    }

    /// The most answers this transport allows; `None` means only the size limits.
    fn answer_cap(&self, srv: bool) -> Option<usize> {
        match (self.transport, self.q.edns) {
            (Transport::Udp, None) => Some(self.zone.udp_answer_limit),
            (Transport::Udp, Some(_)) => None,
            (Transport::Tcp, _) => Some(if srv {
                TCP_MAX_SRV_ANSWERS
            } else {
                TCP_MAX_ANSWERS
            }),
        }
    }

    /// How many of `total` candidates to write, noting a transport cut as truncation.
    fn plan(&mut self, total: usize, srv: bool) -> usize {
        let policy = if !srv && self.zone.a_record_limit > 0 {
            total.min(self.zone.a_record_limit)
        } else {
            total
        };
        let cap = self.answer_cap(srv).map_or(policy, |c| policy.min(c));
        if cap < policy {
            self.truncated = true;
        }
        cap
    }

    /// Keeps an answer record if it fits; a record that does not fit is a cut answer set.
    fn commit_answer(&mut self, mark: crate::wire::Mark) -> bool {
        let ok = self.w.commit(mark, Section::Answer);
        if !ok {
            self.truncated = true;
        }
        ok
    }

    /// The queried domain (`domain` or `alt_domain`, in the client's spelling).
    fn domain(&self) -> NameRef<'static> {
        NameRef {
            prefix: b"",
            suffix: crate::wire::Suffix::Question(self.domain_label),
        }
    }

    /// The zone SOA (Consul's `soa()`): owner and names under the queried domain, serial =
    /// unix time, TTL = MINIMUM = `soa.min_ttl`, so negative answers cache for that long.
    fn soa(&mut self, section: Section) -> bool {
        let soa = self.zone.soa;
        let mark = self.w.mark();
        self.w.name(self.domain(), true);
        let rd = self.w.rr_header(rtype::SOA, soa.min_ttl);
        self.w
            .name(NameRef::under(b"\x02ns", self.domain_label), true);
        self.w
            .name(NameRef::under(b"\x0ahostmaster", self.domain_label), true);
        for v in [
            self.now_unix,
            soa.refresh,
            soa.retry,
            soa.expire,
            soa.min_ttl,
        ] {
            self.w.bytes(&v.to_be_bytes());
        }
        self.w.end_rdata(rd);
        self.w.commit(mark, section)
    }

    /// An A or AAAA record for `addr` (an IP) owned by `owner`.
    fn ip_record(&mut self, owner: Owner<'_>, addr: &Addr, ttl: u32, section: Section) -> bool {
        let (t, data): (u16, &[u8]) = match addr {
            Addr::V4(o) => (rtype::A, o),
            Addr::V6(o) => (rtype::AAAA, o),
            // Hostnames are CNAMEs, never address records; nothing to write.
            Addr::Host(_) => return true,
        };
        let mark = self.w.mark();
        self.owner(owner);
        let rd = self.w.rr_header(t, ttl);
        self.w.bytes(data);
        self.w.end_rdata(rd);
        if section == Section::Answer {
            self.commit_answer(mark)
        } else {
            self.w.commit(mark, section)
        }
    }

    /// Writes a record's owner name (a pointer when compression allows it).
    fn owner(&mut self, owner: Owner<'_>) {
        match owner {
            Owner::Name(name) => {
                self.w.name(name, true);
            }
            Owner::Again(name, at) => self.w.name_again(name, at),
        }
    }

    /// `[tag.]svc.service` and RFC 2782 names: unknown service or tag, or no healthy
    /// instance, is NXDOMAIN; SRV gets SRV records plus glue; address types get shuffled
    /// A/AAAA records (or a CNAME when only hostname instances exist); other types NODATA.
    fn service(
        &mut self,
        s: &mut Scratch,
        service: Part,
        tag: Option<Part>,
    ) -> Result<Found, DnsError> {
        let zone = self.zone;
        let mut buf = [0u8; MAX_NAME_LEN];
        let entry = zone
            .services
            .get(self.q.name.join(service, &mut buf))
            .ok_or(DnsError::NameNotFound)?;
        let set = match tag {
            None => &entry.all,
            Some(tag) => entry
                .by_tag
                .get(self.q.name.join(tag, &mut buf))
                .ok_or(DnsError::NameNotFound)?,
        };
        if self.q.qtype == rtype::SRV {
            return Ok(self.srv_answers(s, entry, set));
        }
        let Some(families) = Families::of(self.q.qtype) else {
            return Ok(self.nodata());
        };
        let (first, second): (&[u32], &[u32]) = match families {
            Families::V4 => (&set.v4, &[]),
            Families::V6 => (&set.v6, &[]),
            Families::Both => (&set.v4, &set.v6),
        };
        let total = first.len() + second.len();
        if total == 0 {
            // Hostname instances are answered with a CNAME only when no instance has an
            // address of the asked type (Consul).
            if set.hosts.is_empty() {
                return Ok(self.nodata());
            }
            let pick = set.hosts[s.rng.random_range(0..set.hosts.len())];
            let Addr::Host(host) = &entry.instances[pick as usize].addr else {
                return Ok(self.nodata());
            };
            self.cname(
                s,
                Owner::Name(NameRef::QUESTION),
                host,
                entry.ttl,
                families,
                1,
            );
            return Ok(Found::Data);
        }
        let k = self.plan(total, false);
        s.shuffle(total, k);
        for pos in 0..k {
            let i = s.perm[pos] as usize;
            let idx = if i < first.len() {
                first[i]
            } else {
                second[i - first.len()]
            };
            if !self.ip_record(
                Owner::Name(NameRef::QUESTION),
                &entry.instances[idx as usize].addr,
                entry.ttl,
                Section::Answer,
            ) {
                break;
            }
        }
        Ok(Found::Data)
    }

    /// Shuffled SRV records (priority 1, weight by health), then glue for the kept ones.
    fn srv_answers(&mut self, s: &mut Scratch, entry: &ServiceEntry, set: &InstanceSet) -> Found {
        let zone = self.zone;
        let total = set.srv.len();
        let k = self.plan(total, true);
        s.shuffle(total, k);
        s.kept.clear();
        for pos in 0..k {
            let idx = set.srv[s.perm[pos] as usize];
            let inst = &entry.instances[idx as usize];
            let mark = self.w.mark();
            self.w.name(NameRef::QUESTION, true);
            let rd = self.w.rr_header(rtype::SRV, entry.ttl);
            self.w.bytes(&1u16.to_be_bytes());
            self.w.bytes(&inst.weight.to_be_bytes());
            self.w.bytes(&inst.port.to_be_bytes());
            // RFC 2782: the target is never compressed.
            let target = srv_target(zone, inst, self.domain_label);
            let at = self.w.name(target, false);
            self.w.end_rdata(rd);
            if !self.commit_answer(mark) {
                break;
            }
            s.kept.push((at, idx));
        }
        // Glue for the kept answers only, once per target; it is dropped silently when it
        // does not fit (RFC 2181 §9: additional data is not worth a TC).
        s.glue_seen.clear();
        for i in 0..s.kept.len() {
            let (at, idx) = s.kept[i];
            let inst = &entry.instances[idx as usize];
            let target = srv_target(zone, inst, self.domain_label);
            let fits = match &inst.srv_target {
                SrvTarget::Node(n) => {
                    let Some(addr) = &zone.nodes[*n as usize].addr else {
                        continue;
                    };
                    if !s.glue_seen.insert(GlueKey::Node(*n)) {
                        continue;
                    }
                    self.ip_record(
                        Owner::Again(target, at),
                        addr,
                        entry.ttl,
                        Section::Additional,
                    )
                }
                SrvTarget::Addr(_) => {
                    if !inst
                        .addr
                        .ip()
                        .is_some_and(|ip| s.glue_seen.insert(GlueKey::Ip(ip)))
                    {
                        continue;
                    }
                    self.ip_record(
                        Owner::Again(target, at),
                        &inst.addr,
                        entry.ttl,
                        Section::Additional,
                    )
                }
                SrvTarget::Host => {
                    if let Addr::Host(host) = &inst.addr {
                        self.resolve_in_zone(
                            s,
                            Owner::Again(target, at),
                            host,
                            Families::Both,
                            1,
                            Section::Additional,
                        );
                    }
                    true
                }
            };
            if !fits {
                break;
            }
        }
        Found::Data
    }

    /// A CNAME from `owner` to `host`, then the host's records if it is inside the zone.
    fn cname(
        &mut self,
        s: &mut Scratch,
        owner: Owner<'_>,
        host: &[u8],
        ttl: u32,
        families: Families,
        depth: usize,
    ) {
        let mark = self.w.mark();
        self.owner(owner);
        let rd = self.w.rr_header(rtype::CNAME, ttl);
        let at = self.w.name(NameRef::wire(host), true);
        self.w.end_rdata(rd);
        if self.commit_answer(mark) {
            self.resolve_in_zone(
                s,
                Owner::Again(NameRef::wire(host), at),
                host,
                families,
                depth,
                Section::Answer,
            );
        }
    }

    /// Writes the address records of `host` when it names something in this zone
    /// (service, node or addr), following CNAMEs up to [`MAX_CNAME_DEPTH`].
    fn resolve_in_zone(
        &mut self,
        s: &mut Scratch,
        owner: Owner<'_>,
        host: &[u8],
        families: Families,
        depth: usize,
        section: Section,
    ) {
        if depth > MAX_CNAME_DEPTH {
            return;
        }
        let Ok((target, _)) = QName::read(host, 0) else {
            return;
        };
        let Some(parsed) = self.zone.labels.parse(&target, rtype::A) else {
            return;
        };
        let zone = self.zone;
        let mut buf = [0u8; MAX_NAME_LEN];
        match parsed.name {
            ZoneName::Service { service, tag } => {
                let Some(entry) = zone.services.get(target.join(service, &mut buf)) else {
                    return;
                };
                let set = match tag {
                    None => &entry.all,
                    Some(tag) => match entry.by_tag.get(target.join(tag, &mut buf)) {
                        Some(set) => set,
                        None => return,
                    },
                };
                let mut wrote = false;
                let lists: [&[u32]; 2] = match families {
                    Families::V4 => [&set.v4, &[]],
                    Families::V6 => [&set.v6, &[]],
                    Families::Both => [&set.v4, &set.v6],
                };
                // A bounded handful, as Consul's `maxRecurseRecords`.
                for &idx in lists.iter().flat_map(|l| l.iter()).take(5) {
                    wrote = true;
                    if !self.ip_record(
                        owner,
                        &entry.instances[idx as usize].addr,
                        entry.ttl,
                        section,
                    ) {
                        return;
                    }
                }
                if !wrote
                    && section == Section::Answer
                    && let Some(&idx) = set.hosts.first()
                    && let Addr::Host(next) = &entry.instances[idx as usize].addr
                {
                    self.cname(s, owner, next, entry.ttl, families, depth + 1);
                }
            }
            ZoneName::Node { node } => {
                let Some(&n) = zone.node_index.get(target.join(node, &mut buf)) else {
                    return;
                };
                match &zone.nodes[n as usize].addr {
                    Some(Addr::Host(next)) if section == Section::Answer => {
                        self.cname(s, owner, next, zone.node_ttl, families, depth + 1);
                    }
                    Some(addr) if families.admits(addr) => {
                        self.ip_record(owner, addr, zone.node_ttl, section);
                    }
                    _ => {}
                }
            }
            ZoneName::Addr { label } => {
                if let Some(addr) = addr_from_hex(target.label(usize::from(label)))
                    && families.admits(&addr)
                {
                    self.ip_record(owner, &addr, zone.node_ttl, section);
                }
            }
            _ => {}
        }
    }

    /// `<node>.node`: its address (or a CNAME to its hostname), node meta as TXT (in the
    /// answer for TXT/ANY, in additional for A/AAAA when `enable_additional_node_meta_txt`).
    /// Unlike Consul, a type the node has no record of is NODATA with the SOA.
    fn node(&mut self, s: &mut Scratch, node: Part) -> Result<Found, DnsError> {
        let zone = self.zone;
        let mut buf = [0u8; MAX_NAME_LEN];
        let &idx = zone
            .node_index
            .get(self.q.name.join(node, &mut buf))
            .ok_or(DnsError::NameNotFound)?;
        let entry = &zone.nodes[idx as usize];
        let qtype = self.q.qtype;
        if qtype == rtype::TXT {
            self.txt(entry.txt.as_slice(), Section::Answer);
            return Ok(if self.w.count(Section::Answer) == 0 {
                self.nodata()
            } else {
                Found::Data
            });
        }
        let Some(families) = Families::of(qtype) else {
            return Ok(self.nodata());
        };
        match &entry.addr {
            Some(Addr::Host(host)) => self.cname(
                s,
                Owner::Name(NameRef::QUESTION),
                host,
                zone.node_ttl,
                families,
                1,
            ),
            Some(addr) if families.admits(addr) => {
                self.ip_record(
                    Owner::Name(NameRef::QUESTION),
                    addr,
                    zone.node_ttl,
                    Section::Answer,
                );
            }
            _ => {}
        }
        if qtype == rtype::ANY {
            self.txt(entry.txt.as_slice(), Section::Answer);
        }
        if self.w.count(Section::Answer) == 0 {
            return Ok(self.nodata());
        }
        if qtype != rtype::ANY && zone.meta_txt {
            self.txt(entry.txt.as_slice(), Section::Additional);
        }
        Ok(Found::Data)
    }

    /// Node-meta TXT records owned by the question name.
    fn txt(&mut self, records: &[Box<[u8]>], section: Section) {
        for rdata in records {
            let mark = self.w.mark();
            self.w.name(NameRef::QUESTION, true);
            let rd = self.w.rr_header(rtype::TXT, self.zone.node_ttl);
            self.w.bytes(rdata);
            self.w.end_rdata(rd);
            let ok = if section == Section::Answer {
                self.commit_answer(mark)
            } else {
                self.w.commit(mark, section)
            };
            if !ok {
                return;
            }
        }
    }

    /// `<hex>.addr`: the address itself, no catalog lookup.
    fn addr(&mut self, label: usize) -> Result<Found, DnsError> {
        let addr = addr_from_hex(self.q.name.label(label)).ok_or(DnsError::NameNotFound)?;
        let matches = match self.q.qtype {
            rtype::ANY => true,
            rtype::A => matches!(addr, Addr::V4(_)),
            rtype::AAAA => matches!(addr, Addr::V6(_)),
            _ => false,
        };
        let ttl = self.zone.node_ttl;
        if matches {
            self.ip_record(Owner::Name(NameRef::QUESTION), &addr, ttl, Section::Answer);
            return Ok(Found::Data);
        }
        // The other family is still useful to the client (Consul #10401): NODATA with the
        // record in the additional section.
        let found = self.nodata();
        self.ip_record(
            Owner::Name(NameRef::QUESTION),
            &addr,
            ttl,
            Section::Additional,
        );
        Ok(found)
    }

    /// The zone apex: SOA (with NS in authority), NS (up to three random servers, as
    /// `<node>.node.<dc>.<domain>`), ANY (both); glue for every NS; other types NODATA.
    fn apex(&mut self, s: &mut Scratch) -> Result<Found, DnsError> {
        let qtype = self.q.qtype;
        if !matches!(qtype, rtype::SOA | rtype::NS | rtype::ANY)
            || (qtype == rtype::NS && self.zone.servers.is_empty())
        {
            return Ok(self.nodata());
        }
        if matches!(qtype, rtype::SOA | rtype::ANY) {
            self.soa(Section::Answer);
        }
        let ns_section = if qtype == rtype::SOA {
            Section::Authority
        } else {
            Section::Answer
        };
        let zone = self.zone;
        let servers = &zone.servers;
        let k = servers.len().min(MAX_NS);
        s.shuffle(servers.len(), k);
        s.kept.clear();
        for pos in 0..k {
            let n = servers[s.perm[pos] as usize];
            let mark = self.w.mark();
            self.w.name(self.domain(), true);
            let rd = self.w.rr_header(rtype::NS, zone.node_ttl);
            let at = self.w.name(
                NameRef::under(&zone.nodes[n as usize].target, self.domain_label),
                true,
            );
            self.w.end_rdata(rd);
            if !self.w.commit(mark, ns_section) {
                break;
            }
            s.kept.push((at, n));
        }
        for i in 0..s.kept.len() {
            let (at, n) = s.kept[i];
            let node = &zone.nodes[n as usize];
            let Some(addr) = &node.addr else { continue };
            let target = NameRef::under(&node.target, self.domain_label);
            if !self.ip_record(
                Owner::Again(target, at),
                addr,
                zone.node_ttl,
                Section::Additional,
            ) {
                break;
            }
        }
        Ok(Found::Data)
    }
}

/// The SRV target name of an instance.
fn srv_target<'z>(zone: &'z Zone, inst: &'z Instance, domain_label: usize) -> NameRef<'z> {
    match (&inst.srv_target, &inst.addr) {
        (SrvTarget::Node(n), _) => NameRef::under(&zone.nodes[*n as usize].target, domain_label),
        (SrvTarget::Addr(labels), _) => NameRef::under(labels, domain_label),
        (SrvTarget::Host, Addr::Host(host)) => NameRef::wire(host),
        // Built only with a hostname address; the root name keeps this total.
        (SrvTarget::Host, _) => NameRef::wire(b"\0"),
    }
}

/// The owner name of a record.
#[derive(Clone, Copy)]
enum Owner<'n> {
    Name(NameRef<'n>),
    /// The same name as written earlier at this offset.
    Again(NameRef<'n>, u16),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{DnsCatalog, DnsNode, DnsServiceInstance, InstanceHealth, Weights};
    use crate::config::DnsConfig;
    use crate::wire::{Parse, parse_fast};
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as HQuery, ResponseCode};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use std::collections::BTreeMap;

    fn inst(
        service: &str,
        node: &str,
        node_addr: &str,
        addr: &str,
        port: u16,
        tags: &[&str],
    ) -> DnsServiceInstance {
        DnsServiceInstance {
            service: service.into(),
            id: format!("{service}-{node}-{port}"),
            node: node.into(),
            node_address: node_addr.into(),
            address: addr.into(),
            port,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            weights: Weights {
                passing: 5,
                warning: 1,
            },
            health: InstanceHealth::Passing,
        }
    }

    pub(crate) fn catalog() -> DnsCatalog {
        let meta: BTreeMap<String, String> = [
            ("rack".to_string(), "r1".to_string()),
            ("rfc1035-spf".to_string(), "v=spf1".to_string()),
        ]
        .into();
        let mut nodes = vec![
            DnsNode {
                name: "n1".into(),
                address: "10.0.0.1".into(),
                meta,
            },
            DnsNode {
                name: "n2".into(),
                address: "10.0.0.2".into(),
                ..Default::default()
            },
            DnsNode {
                name: "n3".into(),
                address: "2001:db8::3".into(),
                ..Default::default()
            },
            DnsNode {
                name: "ext".into(),
                address: "db.example.com".into(),
                ..Default::default()
            },
        ];
        let mut services = vec![
            inst("web", "n1", "10.0.0.1", "", 80, &["primary", "v1.2"]),
            inst("web", "n2", "10.0.0.2", "", 81, &["secondary"]),
            DnsServiceInstance {
                health: InstanceHealth::Critical,
                ..inst("web", "n3", "2001:db8::3", "", 82, &[])
            },
            DnsServiceInstance {
                health: InstanceHealth::Warning,
                ..inst("warn", "n1", "10.0.0.1", "", 90, &[])
            },
            inst("api", "n1", "10.0.0.1", "10.9.9.9", 8080, &[]),
            inst("v6svc", "n3", "2001:db8::3", "", 443, &[]),
            inst("cname-svc", "n1", "10.0.0.1", "db.example.com", 3306, &[]),
            inst("alias", "n2", "10.0.0.2", "web.service.consul", 80, &[]),
            DnsServiceInstance {
                health: InstanceHealth::Critical,
                ..inst("down", "n1", "10.0.0.1", "", 1, &[])
            },
        ];
        for i in 0..20u8 {
            let name = format!("big-{i:02}");
            let addr = format!("10.1.0.{}", i + 1);
            nodes.push(DnsNode {
                name: name.clone(),
                address: addr.clone(),
                ..Default::default()
            });
            services.push(inst("big", &name, &addr, "", 9000 + u16::from(i), &[]));
        }
        DnsCatalog {
            datacenter: "dc1".into(),
            index: 1,
            last_contact: None,
            nodes,
            services,
            servers: vec!["n1".into(), "n2".into()],
        }
    }

    fn config() -> DnsConfig {
        let mut c = DnsConfig {
            alt_domain: Some("alt.example.".into()),
            node_ttl: std::time::Duration::from_secs(30),
            ..DnsConfig::default()
        };
        c.service_ttl
            .insert("web", std::time::Duration::from_secs(10));
        c.soa.min_ttl = 5;
        c
    }

    fn query_bytes(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new(0xBEEF, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(HQuery::query(Name::from_ascii(name).unwrap(), rtype));
        if let Some(p) = edns {
            let mut e = Edns::new();
            e.set_max_payload(p);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    struct Ask {
        transport: Transport,
        edns: Option<u16>,
        stale: bool,
        seed: u64,
    }

    const UDP: Ask = Ask {
        transport: Transport::Udp,
        edns: None,
        stale: false,
        seed: 1,
    };

    fn ask_with(zone: &Zone, name: &str, rtype: RecordType, how: Ask) -> Message {
        let mut q = Query::empty();
        assert_eq!(
            parse_fast(&query_bytes(name, rtype, how.edns), &mut q),
            Parse::Query
        );
        let parsed = zone.labels.parse(&q.name, q.qtype).expect("in zone");
        let mut out = Vec::new();
        let mut scratch = Scratch::seeded(how.seed);
        answer_zone(
            zone,
            &q,
            parsed.name,
            parsed.domain_label,
            how.transport,
            1_700_000_000,
            how.stale,
            &mut scratch,
            &mut out,
        );
        assert!(
            out.len() <= q.size_limit(how.transport),
            "{} > limit",
            out.len()
        );
        Message::from_vec(&out).expect("decodable response")
    }

    fn ask(zone: &Zone, name: &str, rtype: RecordType) -> Message {
        ask_with(zone, name, rtype, UDP)
    }

    fn zone() -> Zone {
        Zone::build(&catalog(), &config())
    }

    fn ips(records: &[Record]) -> Vec<String> {
        let mut v: Vec<String> = records
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.to_string()),
                RData::AAAA(a) => Some(a.to_string()),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    fn assert_soa_authority(m: &Message, zone_name: &str) {
        assert_eq!(m.authorities.len(), 1, "{m}");
        let RData::SOA(soa) = &m.authorities[0].data else {
            panic!("no SOA: {m}")
        };
        assert_eq!(m.authorities[0].name.to_ascii().to_lowercase(), zone_name);
        assert_eq!(
            soa.mname.to_ascii().to_lowercase(),
            format!("ns.{zone_name}")
        );
        assert_eq!(
            soa.rname.to_ascii().to_lowercase(),
            format!("hostmaster.{zone_name}")
        );
        assert_eq!(
            (soa.refresh, soa.retry, soa.expire, soa.minimum),
            (3600, 600, 86_400, 5)
        );
        assert_eq!(soa.serial, 1_700_000_000);
        assert_eq!(m.authorities[0].ttl, 5);
    }

    #[test]
    fn service_a_answers_reuse_the_question_name() {
        let m = ask(&zone(), "WEB.service.Consul.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(
            m.metadata.authoritative && !m.metadata.truncation && !m.metadata.recursion_available
        );
        assert_eq!(
            ips(&m.answers),
            ["10.0.0.1", "10.0.0.2"],
            "critical n3 filtered"
        );
        for r in &m.answers {
            assert_eq!(r.name.to_ascii(), "WEB.service.Consul.");
            assert_eq!(r.ttl, 10);
        }
        // TXT and ANY give address records too (Consul).
        assert_eq!(
            ips(&ask(&zone(), "web.service.consul.", RecordType::TXT).answers).len(),
            2
        );
        assert_eq!(
            ips(&ask(&zone(), "web.service.consul.", RecordType::ANY).answers).len(),
            2
        );
        assert_eq!(
            ips(&ask(&zone(), "v6svc.service.consul.", RecordType::AAAA).answers),
            ["2001:db8::3"]
        );
        assert_eq!(
            ips(&ask(&zone(), "warn.service.consul.", RecordType::A).answers),
            ["10.0.0.1"]
        );
    }

    #[test]
    fn negative_service_answers() {
        let z = zone();
        let m = ask(&z, "web.service.consul.", RecordType::AAAA);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_soa_authority(&m, "consul.");
        let m = ask(&z, "nope.service.consul.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.metadata.authoritative);
        assert_soa_authority(&m, "consul.");
        let m = ask(&z, "down.service.consul.", RecordType::A);
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NXDomain,
            "all instances critical"
        );
        let m = ask(&z, "web.service.consul.", RecordType::MX);
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "unhandled type: NODATA, never forwarded"
        );
        assert_soa_authority(&m, "consul.");
        let m = ask(&z, "web.service.alt.example.", RecordType::CAA);
        assert_soa_authority(&m, "alt.example.");
        let m = ask(&z, "web.service.dc9.consul.", RecordType::A);
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NXDomain,
            "unknown DC"
        );
        let m = ask(&z, "service.consul.", RecordType::A);
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "empty non-terminal"
        );
        assert_soa_authority(&m, "consul.");
    }

    #[test]
    fn warning_instances_are_dropped_with_only_passing() {
        let mut c = config();
        c.only_passing = true;
        let z = Zone::build(&catalog(), &c);
        assert_eq!(
            ask(&z, "warn.service.consul.", RecordType::A)
                .metadata
                .response_code,
            ResponseCode::NXDomain
        );
    }

    #[test]
    fn tag_filters() {
        let z = zone();
        assert_eq!(
            ips(&ask(&z, "primary.web.service.consul.", RecordType::A).answers),
            ["10.0.0.1"]
        );
        assert_eq!(
            ips(&ask(&z, "Secondary.web.service.dc1.consul.", RecordType::A).answers),
            ["10.0.0.2"]
        );
        assert_eq!(
            ips(&ask(&z, "v1.2.web.service.consul.", RecordType::A).answers),
            ["10.0.0.1"]
        );
        assert_eq!(
            ask(&z, "other.web.service.consul.", RecordType::A)
                .metadata
                .response_code,
            ResponseCode::NXDomain
        );
    }

    fn srvs(m: &Message) -> Vec<(u16, u16, u16, String)> {
        let mut v: Vec<_> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some((s.priority, s.weight, s.port, s.target.to_ascii())),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn srv_answers_with_glue_and_no_meta_txt() {
        let z = zone();
        let m = ask(&z, "web.service.consul.", RecordType::SRV);
        assert_eq!(
            srvs(&m),
            [
                (1, 5, 80, "n1.node.dc1.consul.".into()),
                (1, 5, 81, "n2.node.dc1.consul.".into())
            ]
        );
        assert_eq!(ips(&m.additionals), ["10.0.0.1", "10.0.0.2"]);
        for glue in &m.additionals {
            assert!(glue.name.to_ascii().ends_with(".node.dc1.consul."));
            assert_eq!(
                glue.record_type(),
                RecordType::A,
                "no node-meta TXT for SRV (#3937)"
            );
        }
        let m = ask(&z, "_web._tcp.service.consul.", RecordType::SRV);
        assert_eq!(srvs(&m).len(), 2);
        let m = ask(&z, "_web._tcp.consul.", RecordType::SRV);
        assert_eq!(srvs(&m).len(), 2);
        let m = ask(&z, "_web._primary.service.consul.", RecordType::SRV);
        assert_eq!(srvs(&m).len(), 1);
        let m = ask(&z, "api.service.consul.", RecordType::SRV);
        assert_eq!(srvs(&m), [(1, 5, 8080, "0a090909.addr.dc1.consul.".into())]);
        assert_eq!(ips(&m.additionals), ["10.9.9.9"]);
        assert_eq!(
            m.additionals[0].name.to_ascii(),
            "0a090909.addr.dc1.consul."
        );
        let m = ask(&z, "warn.service.consul.", RecordType::SRV);
        assert_eq!(srvs(&m)[0].1, 1, "warning weight");
        // The alt domain answers with its own names.
        let m = ask(&z, "web.service.alt.example.", RecordType::SRV);
        assert!(
            srvs(&m)
                .iter()
                .all(|s| s.3.ends_with(".node.dc1.alt.example."))
        );
    }

    #[test]
    fn node_answers() {
        let z = zone();
        let m = ask(&z, "N1.node.consul.", RecordType::A);
        assert_eq!(ips(&m.answers), ["10.0.0.1"]);
        assert_eq!(m.answers[0].ttl, 30);
        let txt: Vec<String> = m.additionals.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(txt.len(), 2, "node meta TXT in additional: {txt:?}");
        let m = ask(&z, "n1.node.dc1.consul.", RecordType::TXT);
        let mut txt: Vec<String> = m
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::TXT(t) => t
                    .txt_data
                    .iter()
                    .map(|d| String::from_utf8_lossy(d).into_owned())
                    .collect::<String>(),
                other => panic!("{other:?}"),
            })
            .collect();
        txt.sort();
        assert_eq!(txt, ["rack=r1", "v=spf1"]);
        let m = ask(&z, "n1.node.consul.", RecordType::ANY);
        assert_eq!(m.answers.len(), 3, "address and TXT");
        let m = ask(&z, "n1.node.consul.", RecordType::AAAA);
        assert!(m.answers.is_empty() && m.additionals.is_empty());
        assert_soa_authority(&m, "consul.");
        let m = ask(&z, "n1.node.consul.", RecordType::MX);
        assert_soa_authority(&m, "consul.");
        assert_eq!(
            ask(&z, "n9.node.consul.", RecordType::A)
                .metadata
                .response_code,
            ResponseCode::NXDomain
        );
        assert_eq!(
            ask(&z, "n9.node.consul.", RecordType::MX)
                .metadata
                .response_code,
            ResponseCode::NXDomain
        );
        let mut c = config();
        c.enable_additional_node_meta_txt = false;
        let m = ask(
            &Zone::build(&catalog(), &c),
            "n1.node.consul.",
            RecordType::A,
        );
        assert!(m.additionals.is_empty());
    }

    #[test]
    fn cnames_for_hostnames() {
        let z = zone();
        let m = ask(&z, "ext.node.consul.", RecordType::A);
        let RData::CNAME(target) = &m.answers[0].data else {
            panic!("{m}")
        };
        assert_eq!(target.0.to_ascii(), "db.example.com.");
        let m = ask(&z, "cname-svc.service.consul.", RecordType::A);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
        let m = ask(&z, "cname-svc.service.consul.", RecordType::SRV);
        assert_eq!(srvs(&m)[0].3, "db.example.com.");
        // An in-zone target is resolved in the same answer.
        let m = ask(&z, "alias.service.consul.", RecordType::A);
        assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
        assert_eq!(ips(&m.answers), ["10.0.0.1", "10.0.0.2"]);
        assert!(
            m.answers[1..]
                .iter()
                .all(|r| r.name.to_ascii() == "web.service.consul.")
        );
    }

    #[test]
    fn addr_answers() {
        let z = zone();
        let m = ask(&z, "0a000001.addr.dc1.consul.", RecordType::A);
        assert_eq!(ips(&m.answers), ["10.0.0.1"]);
        let m = ask(&z, "0a000001.addr.consul.", RecordType::AAAA);
        assert!(m.answers.is_empty());
        assert_soa_authority(&m, "consul.");
        assert_eq!(
            ips(&m.additionals),
            ["10.0.0.1"],
            "other family in additional (#10401)"
        );
        let m = ask(
            &z,
            "20010db8000000000000000000000003.addr.consul.",
            RecordType::AAAA,
        );
        assert_eq!(ips(&m.answers), ["2001:db8::3"]);
    }

    #[test]
    fn apex_soa_and_ns() {
        let z = zone();
        let m = ask(&z, "Consul.", RecordType::SOA);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].record_type(), RecordType::SOA);
        assert_eq!(m.authorities.len(), 2, "NS for both servers");
        assert_eq!(ips(&m.additionals), ["10.0.0.1", "10.0.0.2"]);
        let m = ask(&z, "consul.", RecordType::NS);
        let mut ns: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
        ns.sort();
        assert_eq!(ns, ["n1.node.dc1.consul.", "n2.node.dc1.consul."]);
        assert_eq!(m.answers[0].ttl, 30);
        assert_eq!(ips(&m.additionals).len(), 2);
        let m = ask(&z, "consul.", RecordType::MX);
        assert!(m.answers.is_empty());
        assert_soa_authority(&m, "consul.");
        let m = ask(&z, "alt.example.", RecordType::SOA);
        assert_eq!(m.answers[0].name.to_ascii(), "alt.example.");
    }

    #[test]
    fn stale_and_zone_transfers() {
        let z = zone();
        let m = ask_with(
            &z,
            "web.service.consul.",
            RecordType::A,
            Ask { stale: true, ..UDP },
        );
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(m.answers.is_empty() && m.authorities.is_empty());
        let m = ask(&z, "consul.", RecordType::AXFR);
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
    }

    #[test]
    fn udp_answer_limit_sets_tc_and_edns_tcp_get_everything() {
        let z = zone();
        let m = ask(&z, "big.service.consul.", RecordType::A);
        assert_eq!(m.answers.len(), 3);
        assert!(m.metadata.truncation, "TC whenever a UDP answer is cut");
        let m = ask_with(
            &z,
            "big.service.consul.",
            RecordType::A,
            Ask {
                edns: Some(1232),
                ..UDP
            },
        );
        assert_eq!(m.answers.len(), 20);
        assert!(!m.metadata.truncation);
        assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
        let m = ask_with(
            &z,
            "big.service.consul.",
            RecordType::A,
            Ask {
                transport: Transport::Tcp,
                ..UDP
            },
        );
        assert_eq!(m.answers.len(), 20);
        assert!(!m.metadata.truncation);
        // SRV glue follows the kept answers.
        let m = ask(&z, "big.service.consul.", RecordType::SRV);
        assert_eq!(m.answers.len(), 3);
        assert!(m.metadata.truncation);
        let targets: Vec<String> = srvs(&m).into_iter().map(|s| s.3).collect();
        let mut glue: Vec<String> = m.additionals.iter().map(|r| r.name.to_ascii()).collect();
        glue.sort();
        let mut sorted = targets.clone();
        sorted.sort();
        assert_eq!(glue, sorted);
        let mut c = config();
        c.udp_answer_limit = 5;
        c.a_record_limit = 4;
        let z = Zone::build(&catalog(), &c);
        let m = ask_with(
            &z,
            "big.service.consul.",
            RecordType::A,
            Ask {
                transport: Transport::Tcp,
                ..UDP
            },
        );
        assert_eq!(m.answers.len(), 4, "a_record_limit applies on TCP too");
        assert!(!m.metadata.truncation);
        let m = ask(&z, "big.service.consul.", RecordType::SRV);
        assert_eq!(m.answers.len(), 5, "a_record_limit does not cap SRV");
    }

    #[test]
    fn size_limit_trims_additionals_before_answers() {
        let z = zone();
        // 20 SRV answers (about 45 bytes each) do not fit in 512 bytes of EDNS UDP.
        let m = ask_with(
            &z,
            "big.service.consul.",
            RecordType::SRV,
            Ask {
                edns: Some(512),
                ..UDP
            },
        );
        assert!(m.metadata.truncation);
        assert!(!m.answers.is_empty() && m.answers.len() < 20);
        assert!(
            m.additionals.len() < m.answers.len(),
            "glue dropped before answers"
        );
        assert!(m.edns.is_some(), "OPT always kept");
        // With room for every answer but not all glue: no TC.
        let m = ask_with(
            &z,
            "big.service.consul.",
            RecordType::SRV,
            Ask {
                edns: Some(1232),
                ..UDP
            },
        );
        assert_eq!(m.answers.len(), 20);
        assert!(!m.metadata.truncation);
        assert!(m.additionals.len() <= 20);
    }

    #[test]
    fn answers_are_shuffled() {
        let z = zone();
        let mut firsts = HashSet::new();
        for seed in 0..50 {
            let m = ask_with(
                &z,
                "big.service.consul.",
                RecordType::A,
                Ask {
                    transport: Transport::Tcp,
                    seed,
                    ..UDP
                },
            );
            firsts.insert(m.answers[0].data.to_string());
        }
        assert!(firsts.len() > 5, "first answer varies: {firsts:?}");
        let mut scratch = Scratch::new();
        scratch.shuffle(10, 10);
        let mut all = scratch.perm.clone();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<u32>>(), "a permutation");
    }

    #[test]
    fn uncompressed_answers_decode_the_same() {
        let mut c = config();
        c.disable_compression = true;
        let z = Zone::build(&catalog(), &c);
        let plain = ask(&z, "Web.service.consul.", RecordType::SRV);
        let compressed = ask(&zone(), "Web.service.consul.", RecordType::SRV);
        assert_eq!(srvs(&plain), srvs(&compressed));
        assert_eq!(ips(&plain.additionals), ips(&compressed.additionals));
        assert_eq!(plain.answers[0].name.to_ascii(), "Web.service.consul.");
        let m = ask(&z, "consul.", RecordType::SOA);
        assert_eq!(m.answers.len(), 1);
    }

    #[test]
    fn ptr_answers() {
        let z = zone();
        let mut q = Query::empty();
        assert_eq!(
            parse_fast(
                &query_bytes("1.0.0.10.in-addr.arpa.", RecordType::PTR, None),
                &mut q
            ),
            Parse::Query
        );
        let targets = &z.ptr[&"10.0.0.1".parse::<IpAddr>().unwrap()];
        let mut out = Vec::new();
        answer_ptr(&z, &q, targets, Transport::Udp, &mut out);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.answers[0].data.to_string(), "n1.node.dc1.consul.");
        let service = &z.ptr[&"10.9.9.9".parse::<IpAddr>().unwrap()];
        assert_eq!(service.len(), 1);
        answer_ptr(&z, &q, service, Transport::Udp, &mut out);
        assert_eq!(
            Message::from_vec(&out).unwrap().answers[0].data.to_string(),
            "api.service.dc1.consul."
        );
    }
}
