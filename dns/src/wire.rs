//! DNS wire format, the minimal way: the fast-path query parser, the response writer and a
//! walker over upstream responses.
//!
//! Invariants: nothing here allocates except the writer's reused output buffer, nothing
//! panics on hostile bytes (all reads are bounds-checked), and the writer never lets a
//! message grow past its size limit: a record that does not fit is rolled back and the
//! caller decides whether that means TC. Anything the fast parser does not understand is
//! reported as [`Parse::General`] so that the general path (hickory-proto) decides.

use crate::name::{NameError, QName};

/// Record types and classes used by the crate.
pub(crate) mod rtype {
    pub(crate) const A: u16 = 1;
    pub(crate) const NS: u16 = 2;
    pub(crate) const CNAME: u16 = 5;
    pub(crate) const SOA: u16 = 6;
    pub(crate) const PTR: u16 = 12;
    pub(crate) const MX: u16 = 15;
    pub(crate) const TXT: u16 = 16;
    pub(crate) const AAAA: u16 = 28;
    pub(crate) const SRV: u16 = 33;
    pub(crate) const NAPTR: u16 = 35;
    pub(crate) const OPT: u16 = 41;
    pub(crate) const IXFR: u16 = 251;
    pub(crate) const AXFR: u16 = 252;
    pub(crate) const ANY: u16 = 255;
    pub(crate) const CLASS_IN: u16 = 1;
}

/// Size of the DNS header.
pub(crate) const HEADER_LEN: usize = 12;
/// Size of an OPT record without options.
pub(crate) const OPT_LEN: usize = 11;
/// Classic UDP message limit without EDNS (RFC 1035).
pub(crate) const MIN_UDP_PAYLOAD: u16 = 512;
/// Largest UDP payload we offer or use; bigger answers are truncated so the client retries
/// over TCP rather than relying on IP fragments.
pub(crate) const MAX_UDP_PAYLOAD: u16 = 4096;
/// The TCP message limit (two-byte length prefix).
pub(crate) const MAX_TCP_MESSAGE: usize = 65_535;

const QR: u16 = 0x8000;
const AA: u16 = 0x0400;
const TC: u16 = 0x0200;
const RD: u16 = 0x0100;
const RA: u16 = 0x0080;
const CD: u16 = 0x0010;

/// The EDNS(0) parameters of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Edns {
    /// The requester's UDP payload size.
    pub(crate) payload: u16,
    /// The EDNS version (only 0 is supported).
    pub(crate) version: u8,
    /// The DNSSEC OK bit (accepted, not acted upon: we serve no DNSSEC records).
    pub(crate) dnssec_ok: bool,
}

impl Edns {
    /// The payload size we echo and use as the UDP limit: the client's, within 512..=4096.
    pub(crate) fn clamped_payload(self) -> u16 {
        self.payload.clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD)
    }
}

/// The transport a query arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// UDP: size-limited, TC tells the client to retry over TCP.
    Udp,
    /// TCP: up to 65535 bytes.
    Tcp,
}

/// One question, with what the response needs from the request header.
#[derive(Clone)]
pub(crate) struct Query {
    pub(crate) id: u16,
    /// The request's flags word (opcode, RD, CD are echoed).
    pub(crate) flags: u16,
    pub(crate) name: QName,
    pub(crate) qtype: u16,
    pub(crate) qclass: u16,
    pub(crate) edns: Option<Edns>,
    /// The client is on `recursor_allow`: it may be forwarded for and sees RA.
    pub(crate) may_recurse: bool,
}

impl Query {
    /// An empty query to be filled by [`parse_fast`].
    pub(crate) fn empty() -> Self {
        Self {
            id: 0,
            flags: 0,
            name: QName::ROOT,
            qtype: 0,
            qclass: 0,
            edns: None,
            may_recurse: true,
        }
    }

    /// Recursion desired.
    pub(crate) fn rd(&self) -> bool {
        self.flags & RD != 0
    }

    /// The most bytes a response to this query may have on `transport`.
    pub(crate) fn size_limit(&self, transport: Transport) -> usize {
        match (transport, self.edns) {
            (Transport::Tcp, _) => MAX_TCP_MESSAGE,
            (Transport::Udp, Some(edns)) => usize::from(edns.clamped_payload()),
            (Transport::Udp, None) => usize::from(MIN_UDP_PAYLOAD),
        }
    }

    /// The cache key: lower-cased wire name, type and class.
    pub(crate) fn cache_key<'b>(&self, buf: &'b mut [u8; 260]) -> &'b [u8] {
        let lower = self.name.lower();
        buf[..lower.len()].copy_from_slice(lower);
        let n = lower.len();
        buf[n..n + 2].copy_from_slice(&self.qtype.to_be_bytes());
        buf[n + 2..n + 4].copy_from_slice(&self.qclass.to_be_bytes());
        &buf[..n + 4]
    }
}

/// Outcome of the fast parser.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parse {
    /// A plain query the fast path can answer; it was written into the caller's `Query`.
    Query,
    /// Valid-looking but unusual (opcode, counts, compression, EDNS options or version,
    /// trailing bytes): the general path decides.
    General,
    /// Not worth an answer: shorter than a header, or a response (QR=1), which must never
    /// be answered (that is how reflection loops start).
    Drop,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Reads the ID and flags of anything at least header-sized that is not a response.
pub(crate) fn request_header(msg: &[u8]) -> Option<(u16, u16)> {
    let id = be16(msg, 0)?;
    let flags = be16(msg, 2)?;
    (msg.len() >= HEADER_LEN && flags & QR == 0).then_some((id, flags))
}

/// The fast parser: header, exactly one uncompressed question and at most one OPT record
/// without options. Fills `q` in place (it is reused from query to query).
pub(crate) fn parse_fast(msg: &[u8], q: &mut Query) -> Parse {
    let Some((id, flags)) = request_header(msg) else {
        return Parse::Drop;
    };
    let opcode = (flags >> 11) & 0xF;
    let counts = [be16(msg, 4), be16(msg, 6), be16(msg, 8), be16(msg, 10)];
    if opcode != 0 || counts[..3] != [Some(1), Some(0), Some(0)] {
        return Parse::General;
    }
    let at = match q.name.read_into(msg, HEADER_LEN) {
        Ok(at) => at,
        Err(NameError::Truncated | NameError::TooLong | NameError::Compressed) => {
            return Parse::General;
        }
    };
    let (Some(qtype), Some(qclass)) = (be16(msg, at), be16(msg, at + 2)) else {
        return Parse::General;
    };
    let mut at = at + 4;
    let edns = match counts[3] {
        Some(0) => None,
        Some(1) => {
            // An OPT record: root owner, type 41, class = payload, TTL = ext-rcode, version,
            // flags; RDLENGTH 0 (any option sends the query to the general path).
            if msg.get(at) != Some(&0) || be16(msg, at + 1) != Some(rtype::OPT) {
                return Parse::General;
            }
            let (Some(payload), Some(ttl), Some(rdlen)) =
                (be16(msg, at + 3), be32(msg, at + 5), be16(msg, at + 9))
            else {
                return Parse::General;
            };
            let version = (ttl >> 16) as u8;
            if rdlen != 0 || version != 0 {
                return Parse::General;
            }
            at += OPT_LEN;
            Some(Edns {
                payload,
                version,
                dnssec_ok: ttl & 0x8000 != 0,
            })
        }
        _ => return Parse::General,
    };
    if at != msg.len() {
        return Parse::General;
    }
    q.id = id;
    q.flags = flags;
    q.qtype = qtype;
    q.qclass = qclass;
    q.edns = edns;
    Parse::Query
}

/// Response header flags: QR, the request's opcode, RD and CD, plus AA, TC, RA and the low
/// four bits of the rcode.
pub(crate) fn response_flags(request_flags: u16, aa: bool, tc: bool, ra: bool, rcode: u16) -> u16 {
    let mut flags = QR | (request_flags & (0x7800 | RD | CD)) | (rcode & 0xF);
    if aa {
        flags |= AA;
    }
    if tc {
        flags |= TC;
    }
    if ra {
        flags |= RA;
    }
    flags
}

/// Writes the header of a response that has at most the question (FORMERR, NOTIMP,
/// REFUSED, SERVFAIL without data) and an OPT record.
pub(crate) fn write_bare_response(
    out: &mut Vec<u8>,
    id: u16,
    flags: u16,
    question: Option<&[u8]>,
    opt: Option<OptOut>,
) {
    out.clear();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&u16::from(question.is_some()).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&u16::from(opt.is_some()).to_be_bytes());
    if let Some(q) = question {
        out.extend_from_slice(q);
    }
    if let Some(opt) = opt {
        opt.write(out);
    }
}

/// The OPT record of a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OptOut {
    pub(crate) payload: u16,
    /// The upper eight bits of a 12-bit rcode (BADVERS = 16 needs 1 here).
    pub(crate) rcode_high: u8,
}

impl OptOut {
    /// The OPT record answering a request's EDNS, with the given full rcode.
    pub(crate) fn for_request(edns: Option<Edns>, rcode: u16) -> Option<Self> {
        edns.map(|e| Self {
            payload: e.clamped_payload(),
            rcode_high: (rcode >> 4) as u8,
        })
    }

    pub(crate) fn write(self, out: &mut Vec<u8>) {
        out.push(0);
        out.extend_from_slice(&rtype::OPT.to_be_bytes());
        out.extend_from_slice(&self.payload.to_be_bytes());
        out.extend_from_slice(&[self.rcode_high, 0, 0, 0, 0, 0]);
    }
}

/// Where a written name's last labels come from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Suffix<'n> {
    /// The question name from label `i` on (the domain part, or the whole name for 0).
    Question(usize),
    /// A complete wire name (ends with the root byte).
    Wire(&'n [u8]),
}

/// A name to write: wire labels without a root byte, then a suffix.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NameRef<'n> {
    pub(crate) prefix: &'n [u8],
    pub(crate) suffix: Suffix<'n>,
}

impl<'n> NameRef<'n> {
    /// The question name itself.
    pub(crate) const QUESTION: NameRef<'static> = NameRef {
        prefix: b"",
        suffix: Suffix::Question(0),
    };

    /// `prefix` under the question's suffix starting at label `label`.
    pub(crate) fn under(prefix: &'n [u8], label: usize) -> Self {
        Self {
            prefix,
            suffix: Suffix::Question(label),
        }
    }

    /// A complete wire name.
    pub(crate) fn wire(name: &'n [u8]) -> Self {
        Self {
            prefix: b"",
            suffix: Suffix::Wire(name),
        }
    }
}

/// Message sections, in wire order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Section {
    Answer = 0,
    Authority = 1,
    Additional = 2,
}

/// A saved writer position, to roll back a record that did not fit.
#[derive(Clone, Copy)]
pub(crate) struct Mark(usize);

/// Writes one response into a reused buffer, enforcing a size limit.
pub(crate) struct MessageWriter<'a> {
    out: &'a mut Vec<u8>,
    question: &'a QName,
    counts: [u16; 3],
    limit: usize,
    /// Bytes kept free at the end (the OPT record).
    reserve: usize,
    compress: bool,
}

impl<'a> MessageWriter<'a> {
    /// Starts a response to `q`: header placeholder and the question as sent.
    pub(crate) fn new(out: &'a mut Vec<u8>, q: &'a Query, limit: usize, compress: bool) -> Self {
        out.clear();
        out.extend_from_slice(&q.id.to_be_bytes());
        out.extend_from_slice(&[0; 10]);
        out[5] = 1;
        out.extend_from_slice(q.name.wire());
        out.extend_from_slice(&q.qtype.to_be_bytes());
        out.extend_from_slice(&q.qclass.to_be_bytes());
        let reserve = if q.edns.is_some() { OPT_LEN } else { 0 };
        Self {
            out,
            question: &q.name,
            counts: [0; 3],
            limit,
            reserve,
            compress,
        }
    }

    /// Records written so far in `section`.
    pub(crate) fn count(&self, section: Section) -> u16 {
        self.counts[section as usize]
    }

    pub(crate) fn mark(&self) -> Mark {
        Mark(self.out.len())
    }

    /// Keeps the record written since `mark` if the message still fits; otherwise removes
    /// it and returns false.
    pub(crate) fn commit(&mut self, mark: Mark, section: Section) -> bool {
        if self.out.len() + self.reserve > self.limit {
            self.out.truncate(mark.0);
            return false;
        }
        self.counts[section as usize] += 1;
        true
    }

    /// Writes `name`; compression only if enabled and `may_compress` (SRV targets must not
    /// be compressed, RFC 2782). Returns the offset where the name starts.
    pub(crate) fn name(&mut self, name: NameRef<'_>, may_compress: bool) -> u16 {
        let start = self.out.len() as u16;
        self.out.extend_from_slice(name.prefix);
        match name.suffix {
            Suffix::Wire(wire) => self.out.extend_from_slice(wire),
            Suffix::Question(i) if i >= self.question.label_count() => self.out.push(0),
            Suffix::Question(i) => {
                let offset = HEADER_LEN + self.question.label_offset(i);
                if self.compress && may_compress {
                    self.out
                        .extend_from_slice(&(0xC000 | offset as u16).to_be_bytes());
                } else {
                    let wire = self.question.wire();
                    self.out.extend_from_slice(&wire[offset - HEADER_LEN..]);
                }
            }
        }
        start
    }

    /// Writes `name` again: a pointer to where it was written before (at `earlier`), or the
    /// full name when compression is off.
    pub(crate) fn name_again(&mut self, name: NameRef<'_>, earlier: u16) {
        if self.compress && earlier < 0x4000 {
            self.out
                .extend_from_slice(&(0xC000 | earlier).to_be_bytes());
        } else {
            self.name(name, false);
        }
    }

    /// Writes TYPE, CLASS IN, TTL and an RDLENGTH placeholder; returns the placeholder's
    /// offset for [`Self::end_rdata`].
    pub(crate) fn rr_header(&mut self, rtype: u16, ttl: u32) -> usize {
        self.out.extend_from_slice(&rtype.to_be_bytes());
        self.out.extend_from_slice(&rtype::CLASS_IN.to_be_bytes());
        self.out.extend_from_slice(&ttl.to_be_bytes());
        let at = self.out.len();
        self.out.extend_from_slice(&[0, 0]);
        at
    }

    /// Patches RDLENGTH after the record data has been written.
    pub(crate) fn end_rdata(&mut self, rdlen_at: usize) {
        let len = (self.out.len() - rdlen_at - 2) as u16;
        self.out[rdlen_at..rdlen_at + 2].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends raw bytes (record data).
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }

    /// Finishes the message: counts, flags, and the OPT record if the request had EDNS.
    pub(crate) fn finish(self, flags: u16, opt: Option<OptOut>) {
        let [an, ns, ar] = self.counts;
        let ar = ar + u16::from(opt.is_some());
        self.out[2..4].copy_from_slice(&flags.to_be_bytes());
        self.out[6..8].copy_from_slice(&an.to_be_bytes());
        self.out[8..10].copy_from_slice(&ns.to_be_bytes());
        self.out[10..12].copy_from_slice(&ar.to_be_bytes());
        if let Some(opt) = opt {
            opt.write(self.out);
        }
    }
}

/// Skips a possibly compressed name; returns the offset after it.
pub(crate) fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    // A name occupies at most 255 bytes in place; bound the loop anyway.
    for _ in 0..128 {
        let len = *msg.get(at)?;
        match len & 0xC0 {
            0xC0 => return (at + 2 <= msg.len()).then_some(at + 2),
            0x00 if len == 0 => return Some(at + 1),
            0x00 => at += 1 + usize::from(len),
            _ => return None,
        }
    }
    None
}

/// The layout of an upstream response, found by walking it once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Offset just after the question.
    pub(crate) question_end: usize,
    /// Offset where the authority section starts.
    pub(crate) authority_start: usize,
    /// Offset where the additional section starts.
    pub(crate) additional_start: usize,
    /// Record counts per section (OPT excluded from additional).
    pub(crate) counts: [u16; 3],
    /// Offsets of every record's TTL field (OPT excluded).
    pub(crate) ttl_offsets: Vec<u16>,
    /// The OPT record's byte range, if present.
    pub(crate) opt: Option<(usize, usize)>,
    /// Smallest TTL in the answer section.
    pub(crate) min_answer_ttl: Option<u32>,
    /// min(SOA TTL, SOA MINIMUM) of the first SOA in the authority section (RFC 2308).
    pub(crate) negative_ttl: Option<u32>,
}

/// Walks a response with exactly one question; `None` if it is malformed.
pub(crate) fn walk_response(msg: &[u8]) -> Option<Layout> {
    if be16(msg, 4)? != 1 || msg.len() > MAX_TCP_MESSAGE {
        return None;
    }
    let counts = [be16(msg, 6)?, be16(msg, 8)?, be16(msg, 10)?];
    let mut at = skip_name(msg, HEADER_LEN)? + 4;
    if at > msg.len() {
        return None;
    }
    let mut layout = Layout {
        question_end: at,
        ..Layout::default()
    };
    for (section, &count) in counts.iter().enumerate() {
        match section {
            1 => layout.authority_start = at,
            2 => layout.additional_start = at,
            _ => {}
        }
        for _ in 0..count {
            let start = at;
            let after_name = skip_name(msg, at)?;
            let rtype = be16(msg, after_name)?;
            let ttl = be32(msg, after_name + 4)?;
            let rdlen = usize::from(be16(msg, after_name + 8)?);
            let rdata = after_name + 10;
            at = rdata + rdlen;
            if at > msg.len() {
                return None;
            }
            if rtype == rtype::OPT {
                if section != 2 || layout.opt.is_some() {
                    return None;
                }
                layout.opt = Some((start, at));
                continue;
            }
            layout.counts[section] += 1;
            layout.ttl_offsets.push(u16::try_from(after_name + 4).ok()?);
            if section == 0 {
                layout.min_answer_ttl = Some(layout.min_answer_ttl.map_or(ttl, |m| m.min(ttl)));
            }
            if section == 1 && rtype == rtype::SOA && layout.negative_ttl.is_none() {
                let minimum_at = skip_name(msg, skip_name(msg, rdata)?)? + 16;
                let minimum = be32(msg, minimum_at)?;
                if minimum_at + 4 > at {
                    return None;
                }
                layout.negative_ttl = Some(ttl.min(minimum));
            }
        }
    }
    (at == msg.len()).then_some(layout)
}

/// The type and RDATA byte range of every record of a message, in order, OPT excluded;
/// `None` if the message is malformed. Used to hand hickory-server the exact RDATA bytes
/// of record types it need not interpret.
pub(crate) fn record_spans(msg: &[u8]) -> Option<Vec<(u16, std::ops::Range<usize>)>> {
    let questions = be16(msg, 4)?;
    let records = [be16(msg, 6)?, be16(msg, 8)?, be16(msg, 10)?];
    let mut at = HEADER_LEN;
    for _ in 0..questions {
        at = skip_name(msg, at)? + 4;
    }
    let total: usize = records.iter().map(|&n| usize::from(n)).sum();
    // Every record takes at least 11 bytes: a hostile count cannot make us allocate much.
    let mut spans = Vec::with_capacity(total.min(msg.len() / 11));
    for _ in 0..total {
        let after_name = skip_name(msg, at)?;
        let rtype = be16(msg, after_name)?;
        let rdlen = usize::from(be16(msg, after_name + 8)?);
        let rdata = after_name + 10;
        at = rdata + rdlen;
        if at > msg.len() {
            return None;
        }
        if rtype != rtype::OPT {
            spans.push((rtype, rdata..at));
        }
    }
    (at == msg.len()).then_some(spans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns as HEdns, Message, MessageType, OpCode, Query as HQuery};
    use hickory_proto::rr::rdata::{A as HA, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use proptest::prelude::*;

    fn query_bytes(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(HQuery::query(Name::from_ascii(name).unwrap(), rtype));
        if let Some(p) = edns {
            let mut e = HEdns::new();
            e.set_max_payload(p);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn parse(bytes: &[u8]) -> Option<Query> {
        let mut q = Query::empty();
        (parse_fast(bytes, &mut q) == Parse::Query).then_some(q)
    }

    fn kind(bytes: &[u8]) -> Parse {
        parse_fast(bytes, &mut Query::empty())
    }

    #[test]
    fn parses_plain_and_edns_queries() {
        let q =
            parse(&query_bytes("Web.Service.Consul.", RecordType::SRV, None)).expect("fast path");
        assert_eq!((q.id, q.qtype, q.qclass), (0x1234, rtype::SRV, 1));
        assert!(q.rd());
        assert_eq!(q.name.wire(), b"\x03Web\x07Service\x06Consul\x00");
        assert!(q.edns.is_none());
        assert_eq!(q.size_limit(Transport::Udp), 512);
        let q = parse(&query_bytes("a.b.", RecordType::A, Some(1232))).expect("fast path");
        assert_eq!(q.edns.map(|e| e.payload), Some(1232));
        assert_eq!(q.size_limit(Transport::Udp), 1232);
        assert_eq!(q.size_limit(Transport::Tcp), 65_535);
        let q = parse(&query_bytes("a.b.", RecordType::A, Some(65_000))).expect("fast path");
        assert_eq!(q.size_limit(Transport::Udp), 4096, "clamped");
    }

    #[test]
    fn unusual_queries_go_to_the_general_path() {
        let base = query_bytes("a.b.", RecordType::A, None);
        let mut two = base.clone();
        two[5] = 2;
        assert!(matches!(kind(&two), Parse::General));
        let mut notify = base.clone();
        notify[2] |= 4 << 3;
        assert!(matches!(kind(&notify), Parse::General));
        let mut trailing = base.clone();
        trailing.push(0);
        assert!(matches!(kind(&trailing), Parse::General));
        assert!(matches!(kind(&base[..base.len() - 1]), Parse::General));
        let mut v1 = query_bytes("a.b.", RecordType::A, Some(1232));
        let len = v1.len();
        v1[len - 5] = 1; // EDNS version byte
        assert!(matches!(kind(&v1), Parse::General));
        let mut response = base.clone();
        response[2] |= 0x80;
        assert!(matches!(kind(&response), Parse::Drop));
        assert!(matches!(kind(&base[..11]), Parse::Drop));
    }

    #[test]
    fn writer_enforces_the_limit_and_keeps_counts() {
        let q = parse(&query_bytes("x.consul.", RecordType::A, None)).expect("fast path");
        let mut out = Vec::new();
        let mut w = MessageWriter::new(&mut out, &q, 60, true);
        let mut kept = 0;
        for i in 0..10u8 {
            let mark = w.mark();
            w.name(NameRef::QUESTION, true);
            let rd = w.rr_header(rtype::A, 5);
            w.bytes(&[10, 0, 0, i]);
            w.end_rdata(rd);
            if !w.commit(mark, Section::Answer) {
                break;
            }
            kept += 1;
        }
        assert_eq!(w.count(Section::Answer), kept);
        w.finish(response_flags(q.flags, true, false, false, 0), None);
        assert!(out.len() <= 60);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.answers.len(), usize::from(kept));
        assert_eq!(m.answers[0].name.to_ascii(), "x.consul.");
        assert!(m.metadata.authoritative && m.metadata.recursion_desired);
    }

    #[test]
    fn walks_responses_and_finds_ttls_and_soa_minimum() {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        let name = Name::from_ascii("www.example.test.").unwrap();
        m.add_query(HQuery::query(name.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(
            name.clone(),
            300,
            RData::A(HA::new(1, 2, 3, 4)),
        ));
        m.add_answer(Record::from_rdata(
            name.clone(),
            60,
            RData::A(HA::new(1, 2, 3, 5)),
        ));
        let zone = Name::from_ascii("example.test.").unwrap();
        let soa = SOA::new(zone.clone(), zone.clone(), 1, 2, 3, 4, 120);
        m.add_authority(Record::from_rdata(zone, 900, RData::SOA(soa)));
        m.set_edns(HEdns::new());
        let bytes = m.to_vec().unwrap();
        let layout = walk_response(&bytes).unwrap();
        assert_eq!(layout.counts, [2, 1, 0]);
        assert_eq!(layout.ttl_offsets.len(), 3);
        assert_eq!(layout.min_answer_ttl, Some(60));
        assert_eq!(layout.negative_ttl, Some(120));
        assert!(layout.opt.is_some());
        for &off in &layout.ttl_offsets {
            let ttl = u32::from_be_bytes(
                bytes[usize::from(off)..usize::from(off) + 4]
                    .try_into()
                    .unwrap(),
            );
            assert!([300, 60, 900].contains(&ttl));
        }
        assert!(walk_response(&bytes[..bytes.len() - 1]).is_none());

        // The same message's RDATA spans: two A records and the SOA, OPT left out.
        let spans = record_spans(&bytes).unwrap();
        let types: Vec<u16> = spans.iter().map(|(t, _)| *t).collect();
        assert_eq!(types, [rtype::A, rtype::A, rtype::SOA]);
        assert_eq!(&bytes[spans[0].1.clone()], &[1, 2, 3, 4]);
        assert_eq!(&bytes[spans[1].1.clone()], &[1, 2, 3, 5]);
        assert!(record_spans(&bytes[..bytes.len() - 1]).is_none());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = kind(&bytes);
            let _ = walk_response(&bytes);
            let _ = record_spans(&bytes);
            let _ = skip_name(&bytes, 12);
        }

        #[test]
        fn mutated_queries_never_panic(flip in 0usize..40, value in any::<u8>()) {
            let mut bytes = query_bytes("web.service.consul.", RecordType::A, Some(1232));
            let at = flip % bytes.len();
            bytes[at] = value;
            let _ = kind(&bytes);
            let _ = walk_response(&bytes);
        }
    }
}
