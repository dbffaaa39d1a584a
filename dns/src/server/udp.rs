//! The UDP socket loop: one OS thread per SO_REUSEPORT socket, taking datagrams and sending
//! answers in batches.
//!
//! Each turn takes up to [`UDP_BATCH`] queued datagrams with one `recvmmsg` (which blocks
//! only for the first one, MSG_WAITFORONE, within the socket's read timeout so the shutdown
//! token is seen within `UDP_POLL`), answers each on the fast path, and sends the answers of
//! the turn with a few system calls: each client socket's answers as GSO sends (see
//! [`Outbox`]), the rest with one `sendmmsg`. Messages for the general path are copied out
//! and handed to a task as before, so a slow upstream never holds up a turn.
//!
//! Under load the fixed costs of a turn (waking up, the system calls, one pass through the
//! IP stack per GSO send) are shared by more queries the fuller the turn is. So a turn that
//! took at least [`COALESCE_AT`] datagrams is followed by a pause of [`COALESCE_WAIT`] before
//! the next receive, as a network card moderates its interrupts: under load every query
//! waits at most that much longer (about 0.15 ms with the kernel's timer slack), and with
//! the GSO runs the CPU per query halves (bench/README.md, 2026-12-07, third session). A
//! lightly loaded socket never pauses: its turns are a single datagram, answered at once.
//!
//! Invariants:
//! - buffers are allocated once per thread and reused: in steady state nothing is allocated
//!   but the control-message buffer nix builds for each GSO send;
//! - a datagram is never cut short: each receive buffer holds the largest UDP payload (the
//!   pages a short query does not touch are never made resident);
//! - every answer goes back to the address its query came from, within the same turn.
//!
//! `recvmmsg` and the GSO `sendmsg` come from nix (rustix has no safe wrapper for them) and
//! `sendmmsg` from rustix (it reports the number sent without reading uninitialised address
//! slots), all safe.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmsg,
};
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny, sendmmsg};
use tokio::runtime::Handle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Fast, FastCtx, Inner};
use crate::wire::Transport;

/// Most datagrams taken per turn. Large enough that a turn after a pause takes everything
/// that arrived during it: at 200,000 queries/s a pause with timer slack gathers ~30.
pub(super) const UDP_BATCH: usize = 128;
/// A turn that took at least this many datagrams means load: the next one waits.
const COALESCE_AT: usize = 8;
/// How long the turn after a loaded one waits, so that it finds a fuller batch.
const COALESCE_WAIT: Duration = Duration::from_micros(100);
/// Receive buffer per datagram: the largest UDP payload, so no query is ever truncated.
const MAX_DATAGRAM: usize = 65_535;
/// Most `sendmmsg` calls per turn beyond one per answer (interrupted calls are retried).
const SEND_RETRIES: usize = 4;

/// The receiving half: buffers and headers for one `recvmmsg`.
struct Inbox {
    /// [`UDP_BATCH`] receive buffers of [`MAX_DATAGRAM`] bytes, back to back.
    buffers: Vec<u8>,
    headers: MultiHeaders<SockaddrStorage>,
    /// Length and sender of each datagram of the current turn.
    received: [(usize, Option<SocketAddr>); UDP_BATCH],
}

impl Inbox {
    fn new() -> Self {
        Self {
            // Zeroed allocation of this size is mapped lazily: only touched pages count.
            buffers: vec![0; UDP_BATCH * MAX_DATAGRAM],
            headers: MultiHeaders::preallocate(UDP_BATCH, None),
            received: [(0, None); UDP_BATCH],
        }
    }

    /// Waits for at least one datagram (up to the socket's read timeout) and takes every
    /// one already queued, up to [`UDP_BATCH`]. Returns how many.
    fn receive(&mut self, socket: &UdpSocket) -> Result<usize, Errno> {
        let mut chunks = self.buffers.chunks_exact_mut(MAX_DATAGRAM);
        let mut slices: [[IoSliceMut<'_>; 1]; UDP_BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
        let got = recvmmsg(
            socket.as_raw_fd(),
            &mut self.headers,
            slices.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        )?;
        let mut count = 0;
        for (slot, msg) in self.received.iter_mut().zip(got) {
            *slot = (msg.bytes, msg.address.as_ref().and_then(std_addr));
            count += 1;
        }
        Ok(count)
    }

    /// Datagram `i` of the current turn and its sender.
    fn datagram(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let (len, peer) = self.received[i];
        (&self.buffers[i * MAX_DATAGRAM..][..len], peer)
    }
}

fn std_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

/// Largest answer sent as a segment of a GSO send. The kernel refuses a segment that does not
/// fit the path MTU with its headers; 1232 bytes fit IPv6's minimum MTU of 1280, so no path
/// refuses it. Larger answers (EDNS0 clients only) go one datagram each.
const GSO_MAX_SEGMENT: usize = 1232;
/// Most payload bytes in one GSO send: one IP datagram's worth, with room for the headers.
const GSO_MAX_BYTES: usize = 60_000;
/// Most segments in one GSO send (`UDP_MAX_SEGMENTS` is 64 on the oldest kernels with GSO).
const GSO_MAX_SEGMENTS: usize = 64;

/// The sending half: the answers of the current turn and where they go.
///
/// Answers for the same client socket are sent together with UDP generic segmentation
/// offload (`UDP_SEGMENT`): one `sendmsg` carries a run of equal-sized answers (and one
/// shorter answer last), the kernel takes it through the IP stack once and cuts it into
/// ordinary datagrams on the way out, so the client sees exactly what separate sends would
/// give it. A forwarding resolver or a loaded client sends many queries from one socket, and
/// its answers of one turn mostly share a size (same query type, same shape of name); per
/// answer that costs about a third of a separate datagram's kernel work. The rest go out
/// with one `sendmmsg`. When the kernel refuses a GSO send (no `UDP_SEGMENT` before Linux
/// 4.18, no checksum offload on the route), that run goes out as separate datagrams and this
/// socket stops trying.
struct Outbox {
    answers: Vec<Vec<u8>>,
    /// Where each answer goes.
    peers: Vec<SocketAddr>,
    /// Scratch for [`Outbox::send_each`]: its answers' addresses as `sendmmsg` takes them.
    send_to: Vec<SocketAddrAny>,
    /// Whether GSO sends are still tried.
    gso: bool,
    /// GSO sends made so far.
    gso_sends: u64,
}

impl Outbox {
    fn new() -> Self {
        Self {
            // Each grows to the largest answer it has held, on first use: a socket that
            // never sees a full batch never holds memory for one.
            answers: (0..UDP_BATCH).map(|_| Vec::new()).collect(),
            peers: Vec::with_capacity(UDP_BATCH),
            send_to: Vec::with_capacity(UDP_BATCH),
            gso: true,
            gso_sends: 0,
        }
    }

    /// Queues a copy of `answer` for `peer` (at most [`UDP_BATCH`] per turn, one per
    /// datagram received).
    fn queue(&mut self, answer: &[u8], peer: SocketAddr) {
        let slot = self.peers.len();
        if let Some(buffer) = self.answers.get_mut(slot) {
            buffer.clear();
            buffer.extend_from_slice(answer);
            self.peers.push(peer);
        }
    }

    /// Sends every queued answer, then empties the queue. A send error drops that answer
    /// (the client retries), as a failed `send_to` would.
    fn flush(&mut self, socket: &UdpSocket) {
        let count = self.peers.len();
        if count == 0 {
            return;
        }
        let mut order: [usize; UDP_BATCH] = std::array::from_fn(|i| i);
        let order = &mut order[..count];
        self.sort_for_runs(order);
        let mut singles = [0usize; UDP_BATCH];
        let mut single_count = 0;
        let mut start = 0;
        while start < count {
            let end = self.run_end(order, start);
            let run = &order[start..end];
            if run.len() < 2 || !self.gso || !self.send_gso(socket, run) {
                for &i in run {
                    singles[single_count] = i;
                    single_count += 1;
                }
            }
            start = end;
        }
        self.send_each(socket, &singles[..single_count]);
        self.peers.clear();
    }

    /// Sorts the answer indexes `order` by client, longest first, so that each client's
    /// answers form runs of one size. The sort is stable (and sorts on the stack at this
    /// size), so equal answers keep their order.
    fn sort_for_runs(&self, order: &mut [usize]) {
        order.sort_by(|&a, &b| {
            (self.peers[a], self.answers[b].len()).cmp(&(self.peers[b], self.answers[a].len()))
        });
    }

    /// The end of the run that starts at `order[start]`: the following answers for the same
    /// client with the same length, then at most one shorter one (GSO cuts a send into
    /// equal segments, and only the last may be short), within the GSO limits.
    fn run_end(&self, order: &[usize], start: usize) -> usize {
        let first = order[start];
        let size = self.answers[first].len();
        let mut end = start + 1;
        if size > GSO_MAX_SEGMENT {
            return end;
        }
        let mut bytes = size;
        while end < order.len() && end - start < GSO_MAX_SEGMENTS {
            let next = order[end];
            let len = self.answers[next].len();
            if self.peers[next] != self.peers[first] || len == 0 || bytes + len > GSO_MAX_BYTES {
                break;
            }
            bytes += len;
            end += 1;
            if len < size {
                break;
            }
        }
        end
    }

    /// Sends the answers `run` (one client, all but the last of one size) with one GSO
    /// `sendmsg`. Returns false when the kernel refuses GSO: nothing was sent, and this
    /// socket no longer tries.
    fn send_gso(&mut self, socket: &UdpSocket, run: &[usize]) -> bool {
        let slices: [IoSlice<'_>; GSO_MAX_SEGMENTS] = std::array::from_fn(|i| {
            IoSlice::new(run.get(i).map_or(&[][..], |&k| self.answers[k].as_slice()))
        });
        let Ok(segment) = u16::try_from(self.answers[run[0]].len()) else {
            return false;
        };
        let to = SockaddrStorage::from(self.peers[run[0]]);
        let control = [ControlMessage::UdpGsoSegments(&segment)];
        for _ in 0..SEND_RETRIES {
            match sendmsg(
                socket.as_raw_fd(),
                &slices[..run.len()],
                &control,
                MsgFlags::empty(),
                Some(&to),
            ) {
                Ok(_) => {
                    self.gso_sends += 1;
                    return true;
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(
                    e @ (Errno::EIO
                    | Errno::EINVAL
                    | Errno::EMSGSIZE
                    | Errno::EOPNOTSUPP
                    | Errno::ENOPROTOOPT),
                ) => {
                    tracing::info!(
                        error = %e,
                        "UDP segmentation offload refused: DNS answers on this socket go one datagram each"
                    );
                    self.gso = false;
                    return false;
                }
                // Dropped, as a failed `send_to` would be; the client retries.
                Err(_) => return true,
            }
        }
        true
    }

    /// Sends the answers `which`, one datagram each, with as few `sendmmsg` calls as the
    /// kernel allows.
    fn send_each(&mut self, socket: &UdpSocket, which: &[usize]) {
        let count = which.len();
        if count == 0 {
            return;
        }
        self.send_to.clear();
        self.send_to
            .extend(which.iter().map(|&i| SocketAddrAny::from(self.peers[i])));
        let addrs = &self.send_to;
        // Slots past `count` repeat the last answer; they are never passed to the kernel.
        let slot = |i: usize| i.min(count - 1);
        let slices: [[IoSlice<'_>; 1]; UDP_BATCH] =
            std::array::from_fn(|i| [IoSlice::new(&self.answers[which[slot(i)]])]);
        let mut controls: [SendAncillaryBuffer<'_, '_, '_>; UDP_BATCH] =
            std::array::from_fn(|_| SendAncillaryBuffer::default());
        let mut controls = controls.iter_mut();
        let mut messages: [MMsgHdr<'_>; UDP_BATCH] = std::array::from_fn(|i| {
            let control = controls.next().expect("one control buffer per slot");
            MMsgHdr::new_with_addr(&addrs[slot(i)], &slices[i], control)
        });
        let mut start = 0;
        let mut attempts = 0;
        while start < count && attempts < count + SEND_RETRIES {
            attempts += 1;
            match sendmmsg(socket, &mut messages[start..count], SendFlags::empty()) {
                Ok(0) => break,
                Ok(sent) => start += sent,
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
                // The error belongs to the first unsent message: skip it.
                Err(_) => start += 1,
            }
        }
    }
}

/// One UDP socket's receive loop (runs on its own thread until `shutdown`).
pub(super) fn udp_loop(
    inner: &Arc<Inner>,
    socket: Arc<UdpSocket>,
    index: usize,
    rt: &Handle,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let mut inbox = Inbox::new();
    let mut outbox = Outbox::new();
    let mut ctx = FastCtx::new(index);
    let mut last_error_log: Option<Instant> = None;
    while !shutdown.is_cancelled() {
        let count = match inbox.receive(&socket) {
            Ok(count) => count,
            // The read timeout (EAGAIN) brings us back to the shutdown check.
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some systems; log at most
                // once a second and go on.
                if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    tracing::debug!(error = %e, "DNS UDP receive error");
                    last_error_log = Some(Instant::now());
                }
                continue;
            }
        };
        for i in 0..count {
            let (msg, peer) = inbox.datagram(i);
            // Not an IP sender (cannot happen on an IP socket): nowhere to answer.
            let Some(peer) = peer else {
                continue;
            };
            match inner.fast_path(msg, Transport::Udp, peer.ip(), &mut ctx) {
                Fast::Reply => outbox.queue(&ctx.out, peer),
                Fast::General => inner.spawn_general(msg, peer, &socket, rt, tracker),
                Fast::Drop => {}
            }
        }
        outbox.flush(&socket);
        if count >= COALESCE_AT {
            std::thread::sleep(COALESCE_WAIT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (UdpSocket, UdpSocket) {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (server, client)
    }

    #[test]
    fn a_turn_takes_every_queued_datagram_up_to_the_batch_size() {
        let (server, client) = pair();
        let to = server.local_addr().unwrap();
        for i in 0..UDP_BATCH + 3 {
            client.send_to(&[i as u8; 20], to).unwrap();
        }
        let mut inbox = Inbox::new();
        let mut seen = Vec::new();
        // Loopback delivery is synchronous, so two turns see all of them.
        while seen.len() < UDP_BATCH + 3 {
            let count = inbox.receive(&server).unwrap();
            assert!((1..=UDP_BATCH).contains(&count));
            for i in 0..count {
                let (msg, peer) = inbox.datagram(i);
                assert_eq!(peer, Some(client.local_addr().unwrap()));
                assert_eq!(msg.len(), 20);
                seen.push(msg[0]);
            }
        }
        let expected: Vec<u8> = (0..UDP_BATCH + 3).map(|i| i as u8).collect();
        assert_eq!(seen, expected, "in arrival order, none lost or repeated");
    }

    #[test]
    fn large_datagrams_arrive_whole() {
        let (server, client) = pair();
        let big: Vec<u8> = (0..60_000).map(|i| (i % 251) as u8).collect();
        client.send_to(&big, server.local_addr().unwrap()).unwrap();
        let mut inbox = Inbox::new();
        assert_eq!(inbox.receive(&server).unwrap(), 1);
        assert_eq!(inbox.datagram(0).0, &big[..]);
    }

    #[test]
    fn the_read_timeout_ends_an_empty_wait() {
        let (server, _client) = pair();
        server
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut inbox = Inbox::new();
        assert_eq!(inbox.receive(&server), Err(Errno::EAGAIN));
    }

    #[test]
    fn flush_sends_each_answer_to_its_own_peer() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let clients: Vec<UdpSocket> = (0..3)
            .map(|_| {
                let c = UdpSocket::bind("127.0.0.1:0").unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                c
            })
            .collect();
        let mut outbox = Outbox::new();
        // More than one batch's worth over several turns, round-robin over the clients.
        for turn in 0..2 {
            for i in 0..UDP_BATCH {
                let c = &clients[i % 3];
                outbox.queue(&[turn, i as u8], c.local_addr().unwrap());
            }
            // One more than a batch is ignored rather than overflowing.
            outbox.queue(&[0xff], clients[0].local_addr().unwrap());
            outbox.flush(&server);
        }
        let mut buf = [0u8; 16];
        for (k, c) in clients.iter().enumerate() {
            for turn in 0..2u8 {
                for i in (k..UDP_BATCH).step_by(3) {
                    let n = c.recv(&mut buf).unwrap();
                    assert_eq!(&buf[..n], &[turn, i as u8]);
                }
            }
        }
        // Nothing else arrived (the overflowing answer was not sent).
        clients[0]
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        assert!(clients[0].recv(&mut buf).is_err());
    }

    /// Every datagram waiting on `client`, sorted (arrival order between runs is not kept).
    fn drain(client: &UdpSocket) -> Vec<Vec<u8>> {
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        while let Ok(n) = client.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got.sort();
        got
    }

    /// Answers of a few sizes for two clients, each answer's bytes unique.
    fn mixed_answers(a: SocketAddr, b: SocketAddr) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut out = Vec::new();
        for (i, (len, to)) in [
            (100, a),
            (60, a),
            (100, b),
            (100, a),
            (2000, a),
            (60, a),
            (100, a),
            (100, b),
            (37, a),
            (100, a),
        ]
        .into_iter()
        .enumerate()
        {
            let mut answer = vec![i as u8; len];
            answer[len - 1] = 0xee;
            out.push((answer, to));
        }
        out
    }

    #[test]
    fn runs_are_one_client_one_size_and_at_most_one_shorter_answer_last() {
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let mut outbox = Outbox::new();
        for (answer, to) in mixed_answers(a, b) {
            outbox.queue(&answer, to);
        }
        let count = outbox.peers.len();
        let mut order: Vec<usize> = (0..count).collect();
        outbox.sort_for_runs(&mut order);
        let mut runs = Vec::new();
        let mut start = 0;
        while start < count {
            let end = outbox.run_end(&order, start);
            let run: Vec<(u16, usize)> = order[start..end]
                .iter()
                .map(|&i| (outbox.peers[i].port(), outbox.answers[i].len()))
                .collect();
            runs.push(run);
            start = end;
        }
        assert_eq!(
            runs,
            vec![
                // Too large for a segment: alone.
                vec![(1000, 2000)],
                // Four of 100, then one shorter to end the run.
                vec![
                    (1000, 100),
                    (1000, 100),
                    (1000, 100),
                    (1000, 100),
                    (1000, 60)
                ],
                vec![(1000, 60), (1000, 37)],
                vec![(2000, 100), (2000, 100)],
            ]
        );
    }

    #[test]
    fn gso_runs_arrive_as_the_same_datagrams_separate_sends_give() {
        gso_runs_arrive_whole("127.0.0.1:0");
    }

    #[test]
    fn gso_runs_arrive_whole_over_ipv6_too() {
        gso_runs_arrive_whole("[::1]:0");
    }

    fn gso_runs_arrive_whole(bind: &str) {
        let server = UdpSocket::bind(bind).unwrap();
        let a = UdpSocket::bind(bind).unwrap();
        let b = UdpSocket::bind(bind).unwrap();
        let answers = mixed_answers(a.local_addr().unwrap(), b.local_addr().unwrap());
        let expected = |to: &UdpSocket| {
            let mut v: Vec<Vec<u8>> = answers
                .iter()
                .filter(|(_, t)| *t == to.local_addr().unwrap())
                .map(|(x, _)| x.clone())
                .collect();
            v.sort();
            v
        };
        for gso in [true, false] {
            let mut outbox = Outbox::new();
            outbox.gso = gso;
            for (answer, to) in &answers {
                outbox.queue(answer, *to);
            }
            outbox.flush(&server);
            // Three runs of two or more: client a's two and client b's one.
            assert_eq!(outbox.gso_sends, if gso { 3 } else { 0 });
            assert!(outbox.peers.is_empty());
            assert_eq!(drain(&a), expected(&a), "gso={gso}");
            assert_eq!(drain(&b), expected(&b), "gso={gso}");
        }
    }

    #[test]
    fn an_empty_flush_sends_nothing() {
        let (server, _client) = pair();
        Outbox::new().flush(&server);
    }
}
