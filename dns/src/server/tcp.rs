//! DNS over TCP, served by hickory-server and answered by our wire-level engine.
//!
//! hickory-server's `Server` owns the transport: it accepts connections on the listener we
//! are given (`register_listener`), reads length-prefixed messages, closes a connection
//! that stays idle for [`TCP_IDLE`], drops responses (QR=1) and runt messages, answers
//! messages it cannot decode with FORMERR, and hands every other request to
//! [`TcpHandler`], one query at a time per connection. The handler answers it exactly as
//! a UDP query is answered (the fast path, else the general path, with the TCP size
//! limit) and gives the result back to hickory to send.
//!
//! Invariants, and why:
//! - **The same answer as the engine's.** hickory-server can only send a
//!   `MessageResponse`, which it encodes itself: there is no way to hand it finished
//!   bytes. So [`Reply::decode`] takes our response apart and hickory puts it back
//!   together: the header (ID, flags, full rcode), the question section (verbatim, so the
//!   client's 0x20 case survives), every record of every section in order, and the OPT
//!   record come out the same. Only name compression differs (hickory never points an
//!   owner name at the question and compresses at most 120 names a message), so a
//!   response is a few bytes longer than the UDP engine's; its content is identical
//!   (tested in `tests/dns/paths.rs`).
//! - **Forwarded records pass through uninterpreted.** Only record types whose RDATA
//!   may hold compressed names (NS, CNAME, SOA, PTR, MX, SRV, NAPTR) go through hickory's
//!   typed decoder, because those names must be decompressed before the message is
//!   re-encoded; every other RDATA (A, AAAA, TXT, CAA, HTTPS, DNSSEC types, unknown
//!   types...) is handed over as its exact bytes, so no lossy round trip can alter an
//!   upstream's answer.
//! - **Bounded.** hickory's accept loop admits every connection, and `register_listener`
//!   takes a concrete `tokio::net::TcpListener`, so the accept step cannot be wrapped.
//!   What we bound is the work: at most [`MAX_TCP_CONNECTIONS`] TCP queries are being
//!   answered at once, and a query beyond that gets SERVFAIL at once (shed, as on UDP).
//!   Each connection answers one query at a time, so this is also the number of
//!   connections being served. Idle connections cost a socket and a small task until
//!   hickory closes them after [`TCP_IDLE`]; their number is bounded only by the accept
//!   rate times that timeout.
//! - **Quiet.** hickory-server logs two INFO lines for every response it sends (its
//!   `ReportingResponseHandler`, deps.md §4.2). The send runs under a no-op tracing
//!   dispatcher, so those lines are never formatted whatever the agent's log filter;
//!   encoding failures, the one thing hickory would report there, are logged by us.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use hickory_proto::ProtoError;
use hickory_proto::op::{Edns, Header, HeaderCounts, Message, Metadata, ResponseCode};
use hickory_proto::rr::rdata::NULL;
use hickory_proto::rr::{RData, Record, RecordType};
use hickory_proto::serialize::binary::BinDecoder;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use tokio::sync::Semaphore;
use tracing::Dispatch;
use tracing::instrument::WithSubscriber;

use super::{Fast, FastCtx, Inner, MAX_TCP_CONNECTIONS, STAT_SHARDS, raw_question};
use crate::answer::Scratch;
use crate::error::DnsError;
use crate::stats::QueryKind;
use crate::wire::{
    HEADER_LEN, Transport, record_spans, request_header, response_flags, rtype, write_bare_response,
};

/// Responses queued per connection before hickory refuses more. One query is answered at
/// a time per connection, so one is in flight at most; the rest is slack.
pub(super) const TCP_RESPONSE_BUFFER: usize = 4;

/// Record types whose RDATA may hold compressed names (RFC 3597 §4, plus SRV and NAPTR,
/// which hickory decodes): only these are decoded into hickory's typed RDATA.
const NAME_BEARING: [u16; 7] = [
    rtype::NS,
    rtype::CNAME,
    rtype::SOA,
    rtype::PTR,
    rtype::MX,
    rtype::SRV,
    rtype::NAPTR,
];

thread_local! {
    /// The fast path's reusable buffers, one set per runtime worker thread. Borrowed only
    /// inside synchronous code, never across an await.
    static FAST_CTX: std::cell::RefCell<FastCtx> =
        std::cell::RefCell::new(FastCtx::new(STAT_SHARDS - 1));
}

/// A tracing dispatcher that records nothing, created once: creating a `Dispatch`
/// re-registers every callsite, far too costly per query.
fn quiet() -> Dispatch {
    static QUIET: OnceLock<Dispatch> = OnceLock::new();
    QUIET
        .get_or_init(|| Dispatch::new(tracing::subscriber::NoSubscriber::default()))
        .clone()
}

/// hickory-server's request handler for TCP.
pub(super) struct TcpHandler {
    inner: Arc<Inner>,
    /// Permits for queries being answered (see the module docs).
    busy: Semaphore,
}

impl TcpHandler {
    pub(super) fn new(inner: Arc<Inner>) -> Self {
        Self {
            inner,
            busy: Semaphore::new(MAX_TCP_CONNECTIONS),
        }
    }

    /// Our engine's response to `msg`, or `None` when it must not be answered.
    async fn answer(&self, msg: &[u8], client: IpAddr) -> Option<Vec<u8>> {
        let Ok(_permit) = self.busy.try_acquire() else {
            return Some(self.shed(msg));
        };
        // The fast path is synchronous: the thread-local buffers are released before any
        // await.
        let fast = FAST_CTX.with_borrow_mut(|ctx| {
            match self.inner.fast_path(msg, Transport::Tcp, client, ctx) {
                Fast::Reply => Some(Some(ctx.out.clone())),
                Fast::Drop => Some(None),
                Fast::General => None,
            }
        });
        match fast {
            Some(reply) => reply,
            None => {
                self.inner
                    .general(msg, Transport::Tcp, client, Scratch::new())
                    .await
            }
        }
    }

    /// SERVFAIL for a query over the bound, counted as shed.
    fn shed(&self, msg: &[u8]) -> Vec<u8> {
        let counters = self.inner.stats.shared();
        counters.shed();
        let mut out = Vec::with_capacity(512);
        if let Some((id, flags)) = request_header(msg) {
            let code = DnsError::Overloaded.rcode();
            write_bare_response(
                &mut out,
                id,
                response_flags(flags, false, false, true, code),
                raw_question(msg),
                None,
            );
            counters.answered(true, false, QueryKind::Other, code, false);
        }
        out
    }
}

#[async_trait::async_trait]
impl RequestHandler for TcpHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut unanswered = Metadata::response_from_request(&request.metadata);
        unanswered.response_code = ResponseCode::ServFail;
        let unanswered = ResponseInfo::from(Header {
            metadata: unanswered,
            counts: HeaderCounts::default(),
        });
        let Some(bytes) = self
            .answer(request.as_slice(), request.src().ip())
            .await
            .filter(|b| !b.is_empty())
        else {
            return unanswered;
        };
        let reply = match Reply::decode(&bytes) {
            Ok(reply) => reply,
            Err(e) => {
                // Our own writer produced it; this is a bug, not a client's fault.
                tracing::warn!(error = %e, "DNS TCP: cannot re-read our own response");
                return unanswered;
            }
        };
        let response = MessageResponseBuilder::new(&reply.queries, reply.edns.as_ref()).build(
            reply.metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response_handle
            .send_response(response)
            .with_subscriber(quiet())
            .await
        {
            Ok(info) => {
                if info.response_code != reply.metadata.response_code {
                    // hickory replaces a response it cannot encode with a bare SERVFAIL.
                    tracing::warn!(
                        rcode = %reply.metadata.response_code,
                        "DNS TCP: response could not be encoded, sent SERVFAIL"
                    );
                }
                info
            }
            Err(e) => {
                // The connection went away; nothing to tell anyone.
                tracing::debug!(error = %e, "DNS TCP: response not sent");
                unanswered
            }
        }
    }
}

/// One of our responses, taken apart into what hickory's `MessageResponse` is built from.
struct Reply {
    metadata: Metadata,
    /// The question section, kept as the exact bytes we wrote.
    queries: Queries,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
    edns: Option<Edns>,
}

impl Reply {
    fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        // Header, full rcode (with the OPT record's upper bits) and typed records.
        let message = Message::from_vec(bytes)?;
        let mut decoder = BinDecoder::new(bytes);
        decoder.read_slice(HEADER_LEN)?;
        let queries = Queries::read(&mut decoder, message.queries.len())?;
        let Message {
            metadata,
            mut answers,
            mut authorities,
            mut additionals,
            edns,
            ..
        } = message;
        // Replace the RDATA of every type that cannot hold a compressed name with its exact
        // bytes. The spans list the same records in the same order (OPT excluded, as
        // hickory lifts it into `edns`); if the counts disagree, keep hickory's decode.
        if let Some(spans) = record_spans(bytes) {
            let records = answers
                .iter_mut()
                .chain(authorities.iter_mut())
                .chain(additionals.iter_mut());
            if spans.len() == records.size_hint().0 {
                for (record, (code, span)) in records.zip(spans) {
                    if !NAME_BEARING.contains(&code) {
                        let raw = &bytes[span];
                        record.data = RData::Unknown {
                            code: RecordType::from(code),
                            rdata: if raw.is_empty() {
                                NULL::new()
                            } else {
                                NULL::with(raw.to_vec())
                            },
                        };
                    }
                }
            }
        }
        Ok(Self {
            metadata,
            queries,
            answers,
            authorities,
            additionals,
            edns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, OpCode, Query};
    use hickory_proto::rr::Name;
    use hickory_proto::rr::rdata::{A, CAA, SOA};
    use hickory_proto::serialize::binary::BinEncoder;

    /// Encodes `reply` the way hickory-server does for TCP.
    fn reencode(reply: &Reply) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = BinEncoder::new(&mut out);
        MessageResponseBuilder::new(&reply.queries, reply.edns.as_ref())
            .build(
                reply.metadata,
                reply.answers.iter(),
                reply.authorities.iter(),
                std::iter::empty(),
                reply.additionals.iter(),
            )
            .destructive_emit(&mut encoder)
            .unwrap();
        out
    }

    #[test]
    fn a_response_survives_hickorys_encoder() {
        let mut m = Message::new(0x1234, MessageType::Response, OpCode::Query);
        m.metadata.authoritative = true;
        m.metadata.recursion_desired = true;
        m.metadata.response_code = ResponseCode::BADVERS;
        let name = Name::from_ascii("WwW.Example.TEST.").unwrap();
        m.add_query(Query::query(name.clone(), RecordType::CAA));
        let caa = CAA::new_issue(true, None, vec![]);
        m.add_answer(Record::from_rdata(name.clone(), 60, RData::CAA(caa)));
        m.add_answer(Record::from_rdata(
            name.clone(),
            60,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        let zone = Name::from_ascii("example.test.").unwrap();
        let soa = SOA::new(zone.clone(), zone.clone(), 7, 2, 3, 4, 120);
        m.add_authority(Record::from_rdata(zone, 900, RData::SOA(soa)));
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        m.set_edns(edns);
        let bytes = m.to_vec().unwrap();

        let reply = Reply::decode(&bytes).unwrap();
        // CAA and A are carried as raw bytes, the SOA is typed (its names are compressed).
        assert!(matches!(reply.answers[0].data, RData::Unknown { .. }));
        assert!(matches!(reply.authorities[0].data, RData::SOA(_)));
        let again = Message::from_vec(&reencode(&reply)).unwrap();
        assert_eq!(again.metadata.id, 0x1234);
        // 16 is both BADVERS and BADSIG to hickory; the number is what travels.
        assert_eq!(u16::from(again.metadata.response_code), 16);
        assert!(again.metadata.authoritative && again.metadata.recursion_desired);
        assert_eq!(again.queries[0].name().to_ascii(), "WwW.Example.TEST.");
        assert_eq!(again.answers, m.answers);
        assert_eq!(again.authorities, m.authorities);
        assert_eq!(again.edns.map(|e| e.max_payload()), Some(1232));
    }

    #[test]
    fn a_bare_error_without_question_survives() {
        let mut bytes = Vec::new();
        write_bare_response(&mut bytes, 9, 0x8000 | 1, None, None);
        let reply = Reply::decode(&bytes).unwrap();
        let again = Message::from_vec(&reencode(&reply)).unwrap();
        assert_eq!(again.metadata.id, 9);
        assert_eq!(again.metadata.response_code, ResponseCode::FormErr);
        assert!(again.queries.is_empty());
    }
}
