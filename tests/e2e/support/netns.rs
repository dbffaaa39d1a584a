//! Network namespaces for fault tests (the suite runs as root): a hub namespace with a
//! bridge (the "data" network: gossip and Raft RPC), one namespace per agent joined to it by
//! a veth pair, and a second veth pair per agent from the test's own namespace (the
//! "management" path for HTTP and DNS), so the test can still talk to an agent whose data
//! link it cut.
//!
//! Addresses: data `10.<net>.0.<10+i>/24`, management `10.<net>.<1+i>.1` (test side) and
//! `.2` (agent side) on a /30. Names carry the test's PID and net number, so concurrent
//! test processes never collide. Everything is removed on drop (deleting a namespace
//! deletes its veths); agents must be stopped first (they are `Agent`s, dropped before).
//! Only veths and namespaces made here are touched: no host interface, route or rule.

use std::net::Ipv4Addr;
use std::process::Command;

/// Runs `ip <args>`; panics with its stderr when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A data network with `n` agent namespaces.
pub struct Lab {
    net: u8,
    tag: String,
    agents: usize,
}

impl Lab {
    /// Builds the hub, the bridge and `agents` namespaces, each with both links up.
    pub fn new(net: u8, agents: usize) -> Lab {
        let tag = format!("{}{net}", std::process::id() % 100_000);
        let lab = Lab { net, tag, agents };
        let hub = lab.hub();
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "set", "lo", "up"]);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for i in 0..agents {
            let ns = lab.ns(i);
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            // Data link: eth0 in the agent, its peer on the hub's bridge.
            let peer = format!("d{}x{i}", lab.tag);
            ip(&[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &peer, "netns",
                &hub,
            ]);
            ip(&["-n", &hub, "link", "set", &peer, "master", "br0"]);
            ip(&["-n", &hub, "link", "set", &peer, "up"]);
            let data = format!("{}/24", lab.data_addr(i));
            ip(&["-n", &ns, "addr", "add", &data, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            // Management link: mgmt0 in the agent, its peer here.
            let here = lab.mgmt_link(i);
            ip(&[
                "-n", &ns, "link", "add", "mgmt0", "type", "veth", "peer", "name", &here, "netns",
                "1",
            ]);
            let (ours, theirs) = lab.mgmt_addrs(i);
            ip(&["addr", "add", &format!("{ours}/30"), "dev", &here]);
            ip(&["link", "set", &here, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{theirs}/30"),
                "dev",
                "mgmt0",
            ]);
            ip(&["-n", &ns, "link", "set", "mgmt0", "up"]);
        }
        lab
    }

    fn hub(&self) -> String {
        format!("mu{}hub", self.tag)
    }

    fn mgmt_link(&self, i: usize) -> String {
        format!("m{}x{i}", self.tag)
    }

    /// The namespace of agent `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("mu{}a{i}", self.tag)
    }

    /// Agent `i`'s address on the data network (`bind_addr`).
    pub fn data_addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, 0, 10 + i as u8)
    }

    /// The management pair of agent `i`: the test's side and the agent's (`client_addr`).
    pub fn mgmt_addrs(&self, i: usize) -> (Ipv4Addr, Ipv4Addr) {
        (
            Ipv4Addr::new(10, self.net, 1 + i as u8, 1),
            Ipv4Addr::new(10, self.net, 1 + i as u8, 2),
        )
    }

    /// Cuts (or restores) agent `i`'s data link: it can reach nobody and nobody it, while
    /// the test still reaches its HTTP API and DNS.
    pub fn set_data_link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.ns(i), "link", "set", "eth0", state]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..self.agents {
            // Our side of the management pair first: a namespace's teardown is lazy (it
            // waits for its last sockets), and a lingering address would shadow the next run.
            let _ = Command::new("ip")
                .args(["link", "del", &self.mgmt_link(i)])
                .status();
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(i)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.hub()])
            .status();
    }
}
