//! Packet loss and delay jitter on the agents' data links, for the loss test (issue 4,
//! part 3). This kernel has no `sch_netem`, so `tc netem` is not available; the same effect
//! comes from netfilter: in each agent's namespace an iptables rule sends every packet the
//! agent transmits on its data link (`eth0`: gossip UDP, push/pull and Raft RPC TCP; not the
//! management link, not loopback) to an NFQUEUE, and a thread of the test process, moved into
//! that namespace, decides: drop it with probability `loss`, else let it go after a delay
//! drawn uniformly from `0..=jitter` (so packets reorder, as with netem's jitter).
//!
//! Each packet crosses one impaired link (its sender's), so the loss applies once per
//! direction, as `tc qdisc add dev eth0 root netem loss 10% delay 25ms 25ms` on every agent
//! would. The rule has no `--queue-bypass`: if the deciding thread is gone, the link is
//! dead rather than silently healthy, so the test cannot pass by accident; the test also
//! checks the counters ([`LinkStats`]) show the loss it asked for.
//!
//! Needs root and the `iptables` command (`scripts/install-test-deps`).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The NFQUEUE number used in every namespace (each namespace has its own queues).
const QUEUE: u16 = 0;
/// Kernel-side queue bound; packets beyond it are dropped (far above what the test sends).
const QUEUE_MAX: u32 = 16 * 1024;

/// What one link's deciding thread did.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkStats {
    /// Packets queued to us.
    pub seen: u64,
    /// Packets dropped on purpose.
    pub dropped: u64,
    /// Most packets held back at once.
    pub max_held: usize,
}

impl LinkStats {
    /// The fraction of packets dropped.
    pub fn loss(&self) -> f64 {
        if self.seen == 0 {
            0.0
        } else {
            self.dropped as f64 / self.seen as f64
        }
    }
}

/// Loss and jitter on a set of namespaces' `eth0`, until [`Impairment::finish`] or drop.
pub struct Impairment {
    stop: Arc<AtomicBool>,
    links: Vec<(String, JoinHandle<std::io::Result<LinkStats>>)>,
    rules_removed: bool,
}

fn rule(ns: &str, action: &str) -> std::io::Result<()> {
    let queue = QUEUE.to_string();
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "iptables", action, "OUTPUT", "-o", "eth0",
        ])
        .args(["-j", "NFQUEUE", "--queue-num", &queue])
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "iptables {action} in {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

impl Impairment {
    /// Starts impairing `namespaces`: one deciding thread each, bound to its queue before
    /// the rule that feeds it is added.
    pub fn start(namespaces: &[String], loss: f64, jitter: Duration) -> Impairment {
        let stop = Arc::new(AtomicBool::new(false));
        let mut links = Vec::new();
        for ns in namespaces {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (name, stop) = (ns.clone(), stop.clone());
            let handle = std::thread::Builder::new()
                .name(format!("impair-{ns}"))
                .spawn(move || decide(&name, loss, jitter, &stop, ready_tx))
                .expect("spawn the impairment thread");
            match ready_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("NFQUEUE in {ns}: {e}"),
                Err(e) => panic!("NFQUEUE in {ns}: the thread did not start: {e}"),
            }
            rule(ns, "-A").unwrap_or_else(|e| panic!("{e}"));
            links.push((ns.clone(), handle));
        }
        Impairment {
            stop,
            links,
            rules_removed: false,
        }
    }

    fn remove_rules(&mut self) {
        if !self.rules_removed {
            self.rules_removed = true;
            for (ns, _) in &self.links {
                if let Err(e) = rule(ns, "-D") {
                    eprintln!("{e}");
                }
            }
        }
    }

    /// Removes the rules, lets every held packet go, and returns each link's counters.
    pub fn finish(mut self) -> Vec<(String, LinkStats)> {
        self.remove_rules();
        self.stop.store(true, Ordering::SeqCst);
        std::mem::take(&mut self.links)
            .into_iter()
            .map(|(ns, h)| {
                let stats = h
                    .join()
                    .expect("impairment thread panicked")
                    .unwrap_or_else(|e| panic!("impairment in {ns}: {e}"));
                (ns, stats)
            })
            .collect()
    }
}

impl Drop for Impairment {
    fn drop(&mut self) {
        self.remove_rules();
        self.stop.store(true, Ordering::SeqCst);
        for (_, h) in self.links.drain(..) {
            let _ = h.join();
        }
    }
}

/// The deciding loop of one namespace (runs on its own thread, which it moves into `ns`).
fn decide(
    ns: &str,
    loss: f64,
    jitter: Duration,
    stop: &AtomicBool,
    ready: std::sync::mpsc::Sender<std::io::Result<()>>,
) -> std::io::Result<LinkStats> {
    let open = || -> std::io::Result<nfq::Queue> {
        let netns = File::open(format!("/run/netns/{ns}"))?;
        rustix::thread::move_into_link_name_space(
            netns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )?;
        let mut q = nfq::Queue::open()?;
        q.bind(QUEUE)?;
        // Only the metadata: the decision does not look at the payload.
        q.set_copy_range(QUEUE, 0)?;
        q.set_queue_max_len(QUEUE, QUEUE_MAX)?;
        q.set_nonblocking(true);
        Ok(q)
    };
    let mut q = match open() {
        Ok(q) => {
            let _ = ready.send(Ok(()));
            q
        }
        Err(e) => {
            let msg = e.to_string();
            let _ = ready.send(Err(e));
            return Err(std::io::Error::other(msg));
        }
    };
    let mut stats = LinkStats::default();
    let mut held: BTreeMap<(Instant, u64), nfq::Message> = BTreeMap::new();
    let mut seq = 0u64;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        loop {
            match q.recv() {
                Ok(mut msg) => {
                    stats.seen += 1;
                    if !stopping && rand::random::<f64>() < loss {
                        stats.dropped += 1;
                        msg.set_verdict(nfq::Verdict::Drop);
                        q.verdict(msg)?;
                    } else {
                        let delay = if stopping {
                            Duration::ZERO
                        } else {
                            jitter.mul_f64(rand::random::<f64>())
                        };
                        seq += 1;
                        held.insert((Instant::now() + delay, seq), msg);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        stats.max_held = stats.max_held.max(held.len());
        let now = Instant::now();
        while let Some(entry) = held.first_entry() {
            if entry.key().0 > now && !stopping {
                break;
            }
            let mut msg = entry.remove();
            msg.set_verdict(nfq::Verdict::Accept);
            q.verdict(msg)?;
        }
        if stopping && held.is_empty() {
            return Ok(stats);
        }
        let next = held
            .keys()
            .next()
            .map_or(Duration::from_millis(1), |(at, _)| {
                at.saturating_duration_since(now)
            });
        std::thread::sleep(next.min(Duration::from_millis(1)));
    }
}
