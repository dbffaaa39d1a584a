//! The UDP socket loop: one OS thread per SO_REUSEPORT socket, taking datagrams and sending
//! answers in batches.
//!
//! Each turn takes up to [`UDP_BATCH`] queued datagrams with one `recvmmsg` (which blocks
//! only for the first one, MSG_WAITFORONE, within the socket's read timeout so the shutdown
//! token is seen within `UDP_POLL`), answers each on the fast path, and sends every answer
//! of the turn with one `sendmmsg`. Under load that is two system calls per batch instead of
//! two per query, which is most of what a query costs besides the kernel's own UDP work;
//! under light load a turn is a single datagram and nothing waits for a batch to fill.
//! Messages for the general path are copied out and handed to a task as before, so a slow
//! upstream never holds up a turn.
//!
//! Invariants:
//! - buffers are allocated once per thread: nothing is allocated in steady state;
//! - a datagram is never cut short: each receive buffer holds the largest UDP payload (the
//!   pages a short query does not touch are never made resident);
//! - every answer goes back to the address its query came from, within the same turn.
//!
//! `recvmmsg` comes from nix (rustix has no safe wrapper for it) and `sendmmsg` from rustix
//! (it reports the number sent without reading uninitialised address slots), both safe.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny, sendmmsg};
use tokio::runtime::Handle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Fast, FastCtx, Inner};
use crate::wire::Transport;

/// Datagrams taken (and answers sent) per system call.
pub(super) const UDP_BATCH: usize = 32;
/// Receive buffer per datagram: the largest UDP payload, so no query is ever truncated.
const MAX_DATAGRAM: usize = 65_535;
/// Answers start with room for this much; a larger one grows its buffer once.
const ANSWER_CAPACITY: usize = 4_096 + 512;
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

/// The sending half: the answers of the current turn and where they go.
struct Outbox {
    answers: Vec<Vec<u8>>,
    peers: Vec<SocketAddrAny>,
}

impl Outbox {
    fn new() -> Self {
        Self {
            answers: (0..UDP_BATCH)
                .map(|_| Vec::with_capacity(ANSWER_CAPACITY))
                .collect(),
            peers: Vec::with_capacity(UDP_BATCH),
        }
    }

    /// Queues a copy of `answer` for `peer` (at most [`UDP_BATCH`] per turn, one per
    /// datagram received).
    fn queue(&mut self, answer: &[u8], peer: SocketAddr) {
        let slot = self.peers.len();
        if let Some(buffer) = self.answers.get_mut(slot) {
            buffer.clear();
            buffer.extend_from_slice(answer);
            self.peers.push(peer.into());
        }
    }

    /// Sends every queued answer, then empties the queue. A send error drops that one
    /// answer (the client retries), as a failed `send_to` would.
    fn flush(&mut self, socket: &UdpSocket) {
        let count = self.peers.len();
        let Some(last) = self.peers.last() else {
            return;
        };
        let slices: [[IoSlice<'_>; 1]; UDP_BATCH] =
            std::array::from_fn(|i| [IoSlice::new(&self.answers[i])]);
        let mut controls: [SendAncillaryBuffer<'_, '_, '_>; UDP_BATCH] =
            std::array::from_fn(|_| SendAncillaryBuffer::default());
        let mut controls = controls.iter_mut();
        // Slots past `count` point at the last peer; they are never passed to the kernel.
        let mut messages: [MMsgHdr<'_>; UDP_BATCH] = std::array::from_fn(|i| {
            let control = controls.next().expect("one control buffer per slot");
            MMsgHdr::new_with_addr(self.peers.get(i).unwrap_or(last), &slices[i], control)
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
        self.peers.clear();
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

    #[test]
    fn an_empty_flush_sends_nothing() {
        let (server, _client) = pair();
        Outbox::new().flush(&server);
    }
}
