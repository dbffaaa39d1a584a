//! Raft cluster formation and server membership, driven by gossip ([`Members`]).
//!
//! Two duties, one task per server ([`run`]):
//! - **bootstrap** (Consul's `maybeBootstrap`): a server with no Raft state and
//!   `bootstrap_expect = N` waits until gossip shows N alive servers of its datacenter whose
//!   `expect` tags agree; it then asks each of them whether it already has Raft state, and only
//!   if none has, initializes Raft with exactly those servers as voters. Every server computes
//!   the same membership from the same gossip view, and openraft's `initialize` with identical
//!   membership on several servers is safe (the entry is written at log id 0-0-0 on each; the
//!   first candidate to win replicates it), so servers starting at once form one cluster.
//!   The caveat is Consul's too: servers that see *different* sets of at least N servers at
//!   the same moment (N+1 brand-new servers starting together) would propose different
//!   memberships; the peer question narrows that window but cannot close it;
//! - **membership upkeep** on the leader (Consul's `joinConsulServer` / `removeConsulServer`
//!   and autopilot's dead-server cleanup): alive servers that are not voters are added, moved
//!   servers get their new address, servers that left are removed, and failed servers are
//!   removed once they have been failed for [`DEAD_SERVER_GRACE`] and only while the healthy
//!   voters keep a quorum (of the configuration before and after the change). The leader
//!   never removes itself. A server that vanishes from the configuration while gossip still
//!   lists it alive (its own graceful leave racing gossip, or `operator raft remove-peer`) is
//!   not added back for [`REJOIN_HOLDOFF`] (best effort: a server notices the removal by
//!   looking at the configuration every second); Consul re-adds such a server at its next
//!   reconcile, we only wait a little longer.
//!
//! Every round also hands the server the gossip address book (Raft id → RPC address), so a
//! whole cluster restarted on new addresses can elect before any membership records them.
//!
//! The decisions are plain functions over data ([`gossip_servers`], [`bootstrap_decision`],
//! [`plan_membership`]); [`run`] is the tokio edge. Rounds run on member changes, leadership
//! changes and every [`ClusterSettings::interval`]; all of them are idempotent.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use muster_server::{ServerError, ServerHandle, ServerInfo, ServerNode, raft_id_from_node_id};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::node::{Member, MemberStatus, Members};

/// How long a server must have been failed before the leader removes it from the Raft
/// configuration. Long enough that a restart (systemd restart, upgrade, reboot of a small VM)
/// or a gossip flap (suspicion refuted a few seconds later) never costs a membership change
/// and the re-add that follows; short enough that a dead server stops counting against the
/// quorum maths within a minute. It plays the role of autopilot's 10 s server stabilization
/// plus its reconcile interval, rounded up for the gossip failure detector's own delay.
pub const DEAD_SERVER_GRACE: Duration = Duration::from_secs(30);
/// How often the cluster round runs without a member or leadership change (autopilot's
/// reconcile interval).
pub const CLUSTER_INTERVAL: Duration = Duration::from_secs(10);
/// How long a server that vanished from the Raft configuration while alive (removed by an
/// operator, or by its own graceful leave ahead of gossip) is not added back.
pub const REJOIN_HOLDOFF: Duration = Duration::from_secs(60);
/// Bound on one membership change (adding a voter waits for it to catch up).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one "do you have Raft state" question to a peer.
const PEER_QUESTION_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the "still waiting for servers" line is logged.
const WAIT_LOG_EVERY: Duration = Duration::from_secs(30);
/// How soon a bootstrap attempt that could not ask every peer is retried.
const BOOTSTRAP_RETRY: Duration = Duration::from_secs(1);
/// How soon a round whose membership change failed is retried.
const CHANGE_RETRY: Duration = Duration::from_secs(5);
/// How often the Raft configuration is looked at between rounds, so that a server removed
/// while alive is noticed (and held off) even by a server that becomes leader right after.
const OBSERVE_EVERY: Duration = Duration::from_secs(1);

/// What the cluster task needs to know about this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Datacenter: only servers of this datacenter count.
    pub datacenter: String,
    /// This server's Raft id.
    pub self_id: u64,
    /// `bootstrap_expect` (bootstrap from gossip when > 1; otherwise the start-up code has
    /// already bootstrapped or the server waits to be added).
    pub bootstrap_expect: u32,
    /// Autopilot's `cleanup_dead_servers` (Consul's default: true).
    pub cleanup_dead_servers: bool,
    /// See [`DEAD_SERVER_GRACE`].
    pub dead_server_grace: Duration,
    /// See [`CLUSTER_INTERVAL`].
    pub interval: Duration,
    /// See [`REJOIN_HOLDOFF`].
    pub rejoin_holdoff: Duration,
}

impl ClusterSettings {
    /// Consul's defaults for a server.
    pub fn new(datacenter: impl Into<String>, self_id: u64, bootstrap_expect: u32) -> Self {
        ClusterSettings {
            datacenter: datacenter.into(),
            self_id,
            bootstrap_expect,
            cleanup_dead_servers: true,
            dead_server_grace: DEAD_SERVER_GRACE,
            interval: CLUSTER_INTERVAL,
            rejoin_holdoff: REJOIN_HOLDOFF,
        }
    }
}

/// A server as gossip describes it (a member with `role=consul`, a UUID `id` and a `port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipServer {
    /// Node name.
    pub name: String,
    /// Node UUID (the `id` tag).
    pub node_id: String,
    /// Raft id derived from the UUID.
    pub raft_id: u64,
    /// Server RPC address: the member's address and its `port` tag.
    pub rpc_addr: String,
    /// Gossip status.
    pub status: MemberStatus,
    /// The `expect` tag (`None` when absent or unreadable).
    pub expect: Option<u32>,
    /// The `bootstrap` tag is set.
    pub bootstrap: bool,
}

impl GossipServer {
    /// The membership record Raft keeps for it.
    pub fn node(&self) -> ServerNode {
        ServerNode {
            name: self.name.clone(),
            rpc_addr: self.rpc_addr.clone(),
        }
    }
}

/// The servers of `datacenter` among `members`. Members of other datacenters, clients, and
/// servers without a readable `id` or `port` tag are skipped (nobody could reach them).
pub fn gossip_servers(members: &[Member], datacenter: &str) -> Vec<GossipServer> {
    members
        .iter()
        .filter(|m| m.status != MemberStatus::None)
        .filter(|m| m.tags.get("role").map(String::as_str) == Some("consul"))
        .filter(|m| {
            m.tags
                .get("dc")
                .is_some_and(|dc| dc.eq_ignore_ascii_case(datacenter))
        })
        .filter_map(|m| {
            let node_id = m.tags.get("id")?.clone();
            let raft_id = raft_id_from_node_id(&node_id)?;
            let port = m.tags.get("port")?.parse::<u16>().ok()?;
            Some(GossipServer {
                name: m.name.clone(),
                node_id,
                raft_id,
                rpc_addr: SocketAddr::new(m.addr, port).to_string(),
                status: m.status,
                expect: m.tags.get("expect").and_then(|e| e.parse().ok()),
                bootstrap: m.tags.contains_key("bootstrap"),
            })
        })
        .collect()
}

/// What a server waiting on `bootstrap_expect` should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapDecision {
    /// Fewer than `expect` alive servers: keep waiting.
    Wait {
        /// Alive servers seen so far (this one included).
        seen: usize,
    },
    /// A server disagrees (Consul logs an error and does not bootstrap).
    Conflict {
        /// The member at fault.
        member: String,
        /// Consul's error text.
        reason: &'static str,
    },
    /// Enough servers agree: ask them for Raft state, then bootstrap with these voters.
    Ready(Vec<GossipServer>),
}

/// Consul's `maybeBootstrap` member scan: the alive servers count; one with a different
/// `expect` or in `bootstrap` mode stops the bootstrap. All alive servers are used (Consul
/// uses every server it sees once there are at least `expect`), sorted by Raft id so every
/// server proposes the same membership.
pub fn bootstrap_decision(servers: &[GossipServer], expect: u32) -> BootstrapDecision {
    let mut alive: Vec<GossipServer> = Vec::new();
    for s in servers.iter().filter(|s| s.status == MemberStatus::Alive) {
        if s.expect.is_some_and(|e| e != expect) {
            return BootstrapDecision::Conflict {
                member: s.name.clone(),
                reason: "Member has a conflicting expect value. All nodes should expect the same \
                         number.",
            };
        }
        if s.bootstrap {
            return BootstrapDecision::Conflict {
                member: s.name.clone(),
                reason: "Member has bootstrap mode. Expect disabled.",
            };
        }
        if !alive.iter().any(|a| a.raft_id == s.raft_id) {
            alive.push(s.clone());
        }
    }
    if alive.len() < expect as usize {
        return BootstrapDecision::Wait { seen: alive.len() };
    }
    alive.sort_by_key(|s| s.raft_id);
    BootstrapDecision::Ready(alive)
}

/// The voters to bootstrap with, by Raft id.
pub fn bootstrap_membership(servers: &[GossipServer]) -> BTreeMap<u64, ServerNode> {
    servers.iter().map(|s| (s.raft_id, s.node())).collect()
}

/// One change of the Raft configuration the leader should make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// Add (or promote) an alive server as a voter.
    AddVoter {
        /// Raft id.
        id: u64,
        /// Its membership record.
        node: ServerNode,
    },
    /// A member server is reachable at another address now.
    UpdateAddress {
        /// Raft id.
        id: u64,
        /// The new membership record.
        node: ServerNode,
    },
    /// Remove a server.
    Remove {
        /// Raft id.
        id: u64,
        /// Node name (for the log).
        name: String,
        /// Why.
        reason: RemovalReason,
    },
}

/// Why a server is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalReason {
    /// It left gracefully.
    Left,
    /// It has been failed for longer than the grace time.
    Dead,
}

/// Quorum of `voters` voters.
pub fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// The changes that make the Raft configuration `config` match gossip's `servers`, as the
/// leader `self_id` sees them at `now`. `failed_since` says since when each failed server has
/// been seen failed, `held_off` lists servers not to add back yet. Removals keep the quorum:
/// each one is planned only if the voters that gossip says are alive are a quorum both of the
/// voters before it and of the voters that remain (so the change can commit and the cluster
/// is never left below quorum).
pub fn plan_membership(
    servers: &[GossipServer],
    config: &[ServerInfo],
    settings: &ClusterSettings,
    failed_since: &BTreeMap<u64, Instant>,
    held_off: &BTreeSet<u64>,
    now: Instant,
) -> Vec<MembershipChange> {
    let mut changes = Vec::new();
    // The latest gossip record per Raft id (a renamed node keeps its id).
    let by_id: BTreeMap<u64, &GossipServer> = servers.iter().map(|s| (s.raft_id, s)).collect();
    let in_config: BTreeMap<u64, &ServerInfo> = config.iter().map(|s| (s.id, s)).collect();

    for s in by_id.values() {
        if s.status != MemberStatus::Alive {
            continue;
        }
        match in_config.get(&s.raft_id) {
            Some(c) if c.rpc_addr != s.rpc_addr || c.name != s.name => {
                changes.push(MembershipChange::UpdateAddress {
                    id: s.raft_id,
                    node: s.node(),
                });
                if !c.voter {
                    changes.push(MembershipChange::AddVoter {
                        id: s.raft_id,
                        node: s.node(),
                    });
                }
            }
            Some(c) if c.voter => {}
            // A leader missing from its own configuration has just been removed and is
            // stepping down: it must not add itself back.
            _ if s.raft_id == settings.self_id => {}
            _ if held_off.contains(&s.raft_id) => {}
            _ => changes.push(MembershipChange::AddVoter {
                id: s.raft_id,
                node: s.node(),
            }),
        }
    }

    // Removals, one at a time against the configuration each leaves behind.
    let mut voters: BTreeSet<u64> = config.iter().filter(|s| s.voter).map(|s| s.id).collect();
    let alive = |id: &u64| {
        *id == settings.self_id
            || by_id
                .get(id)
                .is_some_and(|s| s.status == MemberStatus::Alive)
    };
    for c in config {
        if c.id == settings.self_id {
            continue;
        }
        let Some(s) = by_id.get(&c.id) else {
            // Not (or no longer) known to gossip: an operator decides (remove-peer).
            continue;
        };
        let reason = match s.status {
            MemberStatus::Left => RemovalReason::Left,
            MemberStatus::Failed
                if settings.cleanup_dead_servers
                    && failed_since.get(&c.id).is_some_and(|t| {
                        now.saturating_duration_since(*t) >= settings.dead_server_grace
                    }) =>
            {
                RemovalReason::Dead
            }
            _ => continue,
        };
        let mut remaining = voters.clone();
        remaining.remove(&c.id);
        // The change commits through a joint configuration: the healthy voters must be a
        // quorum of the configuration before and of the one after.
        let healthy_before = voters.iter().filter(|id| alive(id)).count();
        let healthy_after = remaining.iter().filter(|id| alive(id)).count();
        if remaining.is_empty()
            || healthy_before < quorum(voters.len())
            || healthy_after < quorum(remaining.len())
        {
            continue;
        }
        voters = remaining;
        changes.push(MembershipChange::Remove {
            id: c.id,
            name: c.name.clone(),
            reason,
        });
    }
    changes
}

/// Updates the "failed since" record: failed servers keep their first sighting (or get `now`),
/// everyone else is dropped.
pub fn track_failures(
    failed_since: &mut BTreeMap<u64, Instant>,
    servers: &[GossipServer],
    now: Instant,
) {
    let failed: BTreeSet<u64> = servers
        .iter()
        .filter(|s| s.status == MemberStatus::Failed)
        .map(|s| s.raft_id)
        .collect();
    failed_since.retain(|id, _| failed.contains(id));
    for id in failed {
        failed_since.entry(id).or_insert(now);
    }
}

/// The gossip address book handed to the server: every server's latest RPC address.
pub fn address_book(servers: &[GossipServer]) -> BTreeMap<u64, String> {
    servers
        .iter()
        .filter(|s| matches!(s.status, MemberStatus::Alive | MemberStatus::Failed))
        .map(|s| (s.raft_id, s.rpc_addr.clone()))
        .collect()
}

/// State of the cluster task between rounds.
struct ClusterState {
    settings: ClusterSettings,
    /// Still waiting to bootstrap from gossip.
    bootstrap_pending: bool,
    /// When to run again without waiting for a change (a peer did not answer).
    retry_at: Option<Instant>,
    last_wait_log: Option<Instant>,
    last_conflict: Option<String>,
    failed_since: BTreeMap<u64, Instant>,
    /// The Raft configuration seen at the previous round, and when each server that vanished
    /// from it while alive was last seen vanishing.
    last_config: BTreeSet<u64>,
    vanished_at: BTreeMap<u64, Instant>,
}

impl ClusterState {
    fn new(settings: ClusterSettings) -> Self {
        ClusterState {
            bootstrap_pending: settings.bootstrap_expect > 1,
            retry_at: None,
            settings,
            last_wait_log: None,
            last_conflict: None,
            failed_since: BTreeMap::new(),
            last_config: BTreeSet::new(),
            vanished_at: BTreeMap::new(),
        }
    }

    /// Records servers that left the configuration since the last round while gossip still
    /// has them alive, so the leader does not add them straight back.
    fn observe_config(&mut self, config: &[ServerInfo], servers: &[GossipServer], now: Instant) {
        let current: BTreeSet<u64> = config.iter().map(|s| s.id).collect();
        for id in self.last_config.difference(&current) {
            let alive = servers
                .iter()
                .any(|s| s.raft_id == *id && s.status == MemberStatus::Alive);
            if alive {
                tracing::debug!(
                    id,
                    "a live server left the raft configuration; not re-adding it for a while"
                );
                self.vanished_at.insert(*id, now);
            }
        }
        let holdoff = self.settings.rejoin_holdoff;
        self.vanished_at
            .retain(|_, t| now.saturating_duration_since(*t) < holdoff);
        if !current.is_empty() {
            self.last_config = current;
        }
    }

    async fn maybe_bootstrap(&mut self, catalog: &ServerHandle, servers: &[GossipServer]) {
        match catalog.is_initialized().await {
            Ok(true) => {
                tracing::info!("raft data found, disabling bootstrap mode");
                self.bootstrap_pending = false;
                return;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the raft state; bootstrap retried later");
                return;
            }
        }
        let expect = self.settings.bootstrap_expect;
        let ready = match bootstrap_decision(servers, expect) {
            BootstrapDecision::Wait { seen } => {
                let now = Instant::now();
                if self
                    .last_wait_log
                    .is_none_or(|t| now.saturating_duration_since(t) >= WAIT_LOG_EVERY)
                {
                    self.last_wait_log = Some(now);
                    tracing::warn!(
                        expect,
                        seen,
                        "no known peers, aborting election (bootstrap_expect: waiting for \
                         {expect} servers, {seen} seen)"
                    );
                }
                return;
            }
            BootstrapDecision::Conflict { member, reason } => {
                if self.last_conflict.as_deref() != Some(member.as_str()) {
                    tracing::error!(member = %member, "{reason}");
                    self.last_conflict = Some(member);
                }
                return;
            }
            BootstrapDecision::Ready(ready) => ready,
        };
        self.last_conflict = None;
        // Any sign of an existing cluster means we will be added by its leader; a peer that
        // does not answer means we cannot know, so we ask again shortly.
        for s in &ready {
            match catalog
                .peer_status_of(&s.rpc_addr, PEER_QUESTION_TIMEOUT)
                .await
            {
                Ok(status) if status.has_cluster() => {
                    tracing::info!(
                        server = %s.name,
                        "existing raft peers reported by server, disabling bootstrap mode"
                    );
                    self.bootstrap_pending = false;
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(
                        server = %s.name, error = %e,
                        "failed to confirm peer status for server (will retry)"
                    );
                    self.retry_at = Some(Instant::now() + BOOTSTRAP_RETRY);
                    return;
                }
            }
        }
        let peers: Vec<&str> = ready.iter().map(|s| s.rpc_addr.as_str()).collect();
        tracing::info!(
            peers = %peers.join(","),
            "found expected number of peers, attempting bootstrap"
        );
        match catalog.bootstrap(bootstrap_membership(&ready)).await {
            Ok(true) => {
                tracing::info!("bootstrapped the raft cluster");
                self.bootstrap_pending = false;
            }
            Ok(false) => {
                tracing::info!("raft state appeared meanwhile; not bootstrapping");
                self.bootstrap_pending = false;
            }
            Err(e) => tracing::error!(error = %e, "failed to bootstrap cluster"),
        }
    }

    async fn leader_round(&mut self, catalog: &ServerHandle, servers: &[GossipServer]) {
        let config = catalog.status().servers;
        let me = self.settings.self_id;
        if !config.iter().any(|s| s.id == me && s.voter) {
            // Removed (or demoted) and stepping down: changes are the next leader's business.
            return;
        }
        let held_off: BTreeSet<u64> = self.vanished_at.keys().copied().collect();
        let mut plan = plan_membership(
            servers,
            &config,
            &self.settings,
            &self.failed_since,
            &held_off,
            Instant::now(),
        );
        // Removals and address updates first: they are quick, while adding a voter waits for
        // it to catch up (bounded by CHANGE_TIMEOUT) and must not hold them up.
        plan.sort_by_key(|c| match c {
            MembershipChange::Remove { .. } => 0,
            MembershipChange::UpdateAddress { .. } => 1,
            MembershipChange::AddVoter { .. } => 2,
        });
        for change in plan {
            let outcome = match &change {
                MembershipChange::AddVoter { id, node } => {
                    tracing::info!(server = %node.name, addr = %node.rpc_addr, "adding raft voter");
                    bounded(catalog.add_voter(*id, node.clone())).await
                }
                MembershipChange::UpdateAddress { id, node } => {
                    tracing::info!(server = %node.name, addr = %node.rpc_addr, "updating raft server address");
                    bounded(catalog.set_server_addr(*id, node.clone())).await
                }
                MembershipChange::Remove { id, name, reason } => {
                    match reason {
                        RemovalReason::Left => {
                            tracing::info!(server = %name, "removing server that left from the raft configuration");
                        }
                        RemovalReason::Dead => tracing::warn!(
                            server = %name,
                            grace = ?self.settings.dead_server_grace,
                            "removing dead server from the raft configuration"
                        ),
                    }
                    bounded(catalog.remove_server(*id)).await
                }
            };
            if let Err(e) = outcome {
                // Lost leadership, a slow learner, a change in flight: the next round
                // recomputes from the new configuration.
                tracing::warn!(error = %e, change = ?change, "raft membership change failed");
                self.retry_at = Some(Instant::now() + CHANGE_RETRY);
                return;
            }
        }
    }

    async fn round(&mut self, catalog: &ServerHandle, members: &[Member]) {
        let now = Instant::now();
        self.retry_at = None;
        let servers = gossip_servers(members, &self.settings.datacenter);
        catalog.set_peer_addrs(address_book(&servers));
        track_failures(&mut self.failed_since, &servers, now);
        self.observe_config(&catalog.status().servers, &servers, now);
        if self.bootstrap_pending {
            self.maybe_bootstrap(catalog, &servers).await;
        }
        if catalog.is_leader() {
            self.leader_round(catalog, &servers).await;
        }
    }
}

async fn bounded(change: impl Future<Output = Result<(), ServerError>>) -> Result<(), ServerError> {
    tokio::time::timeout(CHANGE_TIMEOUT, change)
        .await
        .unwrap_or(Err(ServerError::Timeout))
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The cluster task of a server; returns when `shutdown` is cancelled or the server stops.
pub async fn run(
    catalog: ServerHandle,
    members: Members,
    settings: ClusterSettings,
    shutdown: CancellationToken,
) {
    let mut state = ClusterState::new(settings);
    let mut leadership = catalog.leadership();
    let mut member_changes = members.subscribe();
    let mut tick = tokio::time::interval(state.settings.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut observe = tokio::time::interval(OBSERVE_EVERY.min(state.settings.interval));
    observe.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // The first tick completes at once: that is the start-up round.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            changed = leadership.changed() => if changed.is_err() { return },
            changed = member_changes.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
            _ = sleep_until_opt(state.retry_at) => {}
            _ = observe.tick() => {
                // Only look: no network, no change.
                let servers = gossip_servers(&members.current(), &state.settings.datacenter);
                state.observe_config(&catalog.status().servers, &servers, Instant::now());
                continue;
            }
        }
        leadership.borrow_and_update();
        member_changes.borrow_and_update();
        let current = members.current();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            () = state.round(&catalog, &current) => {}
        }
    }
}

/// A graceful leave of a server: asks the leader (possibly itself) to remove this server from
/// the Raft configuration, unless it is the only voter (a single server keeps its state so it
/// can start again alone). Returns whether it was removed.
pub async fn leave_raft(catalog: &ServerHandle) -> Result<bool, ServerError> {
    let status = catalog.status();
    let voters = status.servers.iter().filter(|s| s.voter).count();
    let member = status.servers.iter().any(|s| s.id == status.node_id);
    if !member || voters <= 1 {
        return Ok(false);
    }
    catalog.remove_server_anywhere(status.node_id).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DC: &str = "dc1";

    fn uuid(n: u64) -> String {
        format!("{n:08x}-0000-4000-8000-000000000000")
    }

    fn member(n: u64, status: MemberStatus, expect: Option<u32>) -> Member {
        let mut tags = BTreeMap::new();
        tags.insert("role".to_owned(), "consul".to_owned());
        tags.insert("dc".to_owned(), DC.to_owned());
        tags.insert("id".to_owned(), uuid(n));
        tags.insert("port".to_owned(), "8300".to_owned());
        if let Some(e) = expect {
            tags.insert("expect".to_owned(), e.to_string());
        }
        Member {
            name: format!("db{n}"),
            addr: format!("10.0.0.{n}").parse().unwrap(),
            port: 8301,
            tags,
            status,
        }
    }

    fn rid(n: u64) -> u64 {
        raft_id_from_node_id(&uuid(n)).unwrap()
    }

    fn info(n: u64, voter: bool) -> ServerInfo {
        ServerInfo {
            id: rid(n),
            name: format!("db{n}"),
            rpc_addr: format!("10.0.0.{n}:8300"),
            voter,
            leader: n == 1,
        }
    }

    fn settings() -> ClusterSettings {
        ClusterSettings::new(DC, rid(1), 3)
    }

    #[test]
    fn only_servers_of_this_datacenter_with_id_and_port_count() {
        let mut client = member(4, MemberStatus::Alive, None);
        client.tags.insert("role".into(), "node".into());
        let mut other_dc = member(5, MemberStatus::Alive, Some(3));
        other_dc.tags.insert("dc".into(), "dc2".into());
        let mut no_port = member(6, MemberStatus::Alive, Some(3));
        no_port.tags.remove("port");
        let mut unknown = member(7, MemberStatus::None, Some(3));
        unknown.name = "ghost".into();
        let list = vec![
            member(1, MemberStatus::Alive, Some(3)),
            client,
            other_dc,
            no_port,
            unknown,
        ];
        let servers = gossip_servers(&list, "DC1");
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].rpc_addr, "10.0.0.1:8300");
        assert_eq!(servers[0].raft_id, rid(1));
        assert_eq!(servers[0].expect, Some(3));
    }

    #[test]
    fn bootstrap_waits_for_expect_alive_servers() {
        let mut list = vec![
            member(1, MemberStatus::Alive, Some(3)),
            member(2, MemberStatus::Alive, Some(3)),
            member(3, MemberStatus::Failed, Some(3)),
        ];
        let d = bootstrap_decision(&gossip_servers(&list, DC), 3);
        assert_eq!(d, BootstrapDecision::Wait { seen: 2 });
        list[2].status = MemberStatus::Alive;
        let BootstrapDecision::Ready(ready) = bootstrap_decision(&gossip_servers(&list, DC), 3)
        else {
            panic!("three alive servers are enough");
        };
        let ids: Vec<u64> = ready.iter().map(|s| s.raft_id).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted, "sorted so every server proposes the same list");
        // Every server computes the same membership whatever its member order.
        list.reverse();
        let BootstrapDecision::Ready(again) = bootstrap_decision(&gossip_servers(&list, DC), 3)
        else {
            panic!("still ready");
        };
        assert_eq!(bootstrap_membership(&ready), bootstrap_membership(&again));
        assert_eq!(bootstrap_membership(&ready).len(), 3);
    }

    #[test]
    fn conflicting_expect_or_bootstrap_mode_stops_the_bootstrap() {
        let list = vec![
            member(1, MemberStatus::Alive, Some(3)),
            member(2, MemberStatus::Alive, Some(5)),
            member(3, MemberStatus::Alive, Some(3)),
        ];
        match bootstrap_decision(&gossip_servers(&list, DC), 3) {
            BootstrapDecision::Conflict { member, reason } => {
                assert_eq!(member, "db2");
                assert_eq!(
                    reason,
                    "Member has a conflicting expect value. All nodes should expect the same \
                     number."
                );
            }
            other => panic!("{other:?}"),
        }
        let mut list = list;
        list[1].tags.insert("expect".into(), "3".into());
        list[2].tags.insert("bootstrap".into(), "1".into());
        assert!(matches!(
            bootstrap_decision(&gossip_servers(&list, DC), 3),
            BootstrapDecision::Conflict { .. }
        ));
        // A server without an expect tag does not conflict.
        list[2].tags.remove("bootstrap");
        list[2].tags.remove("expect");
        assert!(matches!(
            bootstrap_decision(&gossip_servers(&list, DC), 3),
            BootstrapDecision::Ready(_)
        ));
    }

    #[test]
    fn leader_adds_alive_servers_and_updates_addresses() {
        let now = Instant::now();
        let mut list = vec![
            member(1, MemberStatus::Alive, Some(3)),
            member(2, MemberStatus::Alive, Some(3)),
            member(3, MemberStatus::Alive, Some(3)),
            member(4, MemberStatus::Alive, Some(3)),
        ];
        list[1].addr = "10.0.1.2".parse().unwrap();
        let config = vec![info(1, true), info(2, true), info(3, false)];
        let plan = plan_membership(
            &gossip_servers(&list, DC),
            &config,
            &settings(),
            &BTreeMap::new(),
            &BTreeSet::new(),
            now,
        );
        assert!(plan.contains(&MembershipChange::UpdateAddress {
            id: rid(2),
            node: ServerNode {
                name: "db2".into(),
                rpc_addr: "10.0.1.2:8300".into()
            }
        }));
        let added: Vec<u64> = plan
            .iter()
            .filter_map(|c| match c {
                MembershipChange::AddVoter { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(added.len(), 2, "{plan:?}");
        assert!(added.contains(&rid(3)) && added.contains(&rid(4)));
        // Held off: db4 vanished from the configuration while alive.
        let plan = plan_membership(
            &gossip_servers(&list, DC),
            &config,
            &settings(),
            &BTreeMap::new(),
            &BTreeSet::from([rid(4)]),
            now,
        );
        assert!(
            !plan
                .iter()
                .any(|c| matches!(c, MembershipChange::AddVoter { id, .. } if *id == rid(4)))
        );
        // Nothing to do when everything matches.
        list[1].addr = "10.0.0.2".parse().unwrap();
        let config = vec![info(1, true), info(2, true), info(3, true), info(4, true)];
        let plan = plan_membership(
            &gossip_servers(&list, DC),
            &config,
            &settings(),
            &BTreeMap::new(),
            &BTreeSet::new(),
            now,
        );
        assert_eq!(plan, vec![]);
    }

    #[test]
    fn a_removed_leader_does_not_add_itself_back() {
        let list = vec![
            member(1, MemberStatus::Alive, Some(3)),
            member(2, MemberStatus::Alive, Some(3)),
        ];
        // db1 (self) removed itself; the configuration is db2 alone.
        let plan = plan_membership(
            &gossip_servers(&list, DC),
            &[info(2, true)],
            &settings(),
            &BTreeMap::new(),
            &BTreeSet::new(),
            Instant::now(),
        );
        assert_eq!(plan, vec![]);
    }

    #[test]
    fn left_servers_are_removed_but_never_the_leader() {
        let now = Instant::now();
        let list = vec![
            member(1, MemberStatus::Left, Some(3)),
            member(2, MemberStatus::Alive, Some(3)),
            member(3, MemberStatus::Left, Some(3)),
        ];
        let config = vec![info(1, true), info(2, true), info(3, true)];
        let plan = plan_membership(
            &gossip_servers(&list, DC),
            &config,
            &settings(),
            &BTreeMap::new(),
            &BTreeSet::new(),
            now,
        );
        assert_eq!(
            plan,
            vec![MembershipChange::Remove {
                id: rid(3),
                name: "db3".into(),
                reason: RemovalReason::Left
            }]
        );
    }

    #[test]
    fn dead_servers_go_after_the_grace_time_and_only_with_quorum() {
        let start = Instant::now();
        let s = settings();
        let list = vec![
            member(1, MemberStatus::Alive, Some(3)),
            member(2, MemberStatus::Alive, Some(3)),
            member(3, MemberStatus::Failed, Some(3)),
        ];
        let servers = gossip_servers(&list, DC);
        let config = vec![info(1, true), info(2, true), info(3, true)];
        let mut failed = BTreeMap::new();
        track_failures(&mut failed, &servers, start);
        let plan_at = |t: Instant, failed: &BTreeMap<u64, Instant>, servers: &[GossipServer]| {
            plan_membership(servers, &config, &s, failed, &BTreeSet::new(), t)
        };
        assert_eq!(
            plan_at(start + Duration::from_secs(29), &failed, &servers),
            vec![]
        );
        // A later sighting does not restart the clock.
        track_failures(&mut failed, &servers, start + Duration::from_secs(20));
        let plan = plan_at(start + s.dead_server_grace, &failed, &servers);
        assert_eq!(
            plan,
            vec![MembershipChange::Remove {
                id: rid(3),
                name: "db3".into(),
                reason: RemovalReason::Dead
            }]
        );
        // With cleanup off nothing is removed.
        let off = ClusterSettings {
            cleanup_dead_servers: false,
            ..s.clone()
        };
        assert_eq!(
            plan_membership(
                &servers,
                &config,
                &off,
                &failed,
                &BTreeSet::new(),
                start + Duration::from_secs(3600)
            ),
            vec![]
        );

        // Two of three failed: removing either would leave 1 healthy of 2 voters.
        let list = vec![
            member(1, MemberStatus::Alive, Some(3)),
            member(2, MemberStatus::Failed, Some(3)),
            member(3, MemberStatus::Failed, Some(3)),
        ];
        let servers = gossip_servers(&list, DC);
        let mut failed = BTreeMap::new();
        track_failures(&mut failed, &servers, start);
        assert_eq!(
            plan_at(start + Duration::from_secs(3600), &failed, &servers),
            vec![]
        );

        // Everyone in `list` last seen at `start`, planned an hour later against `config`.
        let plan_an_hour_later = |config: &[ServerInfo], list: &[Member]| {
            let servers = gossip_servers(list, DC);
            let mut failed = BTreeMap::new();
            track_failures(&mut failed, &servers, start);
            let later = start + Duration::from_secs(3600);
            plan_membership(&servers, config, &s, &failed, &BTreeSet::new(), later)
        };

        // Two voters, one failed: {leader} alone would be a quorum of what remains, but the
        // change cannot commit without a quorum of the two.
        let config2 = vec![info(1, true), info(2, true)];
        let list = vec![
            member(1, MemberStatus::Alive, Some(3)),
            member(2, MemberStatus::Failed, Some(3)),
        ];
        assert_eq!(plan_an_hour_later(&config2, &list), vec![]);

        // Five voters, two dead: both can go, one after the other (5 → 4 → 3, 3 healthy).
        let config5: Vec<ServerInfo> = (1..=5).map(|n| info(n, true)).collect();
        let list: Vec<Member> = (1..=5)
            .map(|n| {
                let status = if n >= 4 {
                    MemberStatus::Failed
                } else {
                    MemberStatus::Alive
                };
                member(n, status, Some(3))
            })
            .collect();
        let plan = plan_an_hour_later(&config5, &list);
        assert_eq!(plan.len(), 2, "{plan:?}");

        // Recovery clears the record.
        let mut failed = BTreeMap::new();
        track_failures(&mut failed, &gossip_servers(&list, DC), start);
        assert_eq!(failed.len(), 2);
        let list = vec![
            member(1, MemberStatus::Alive, Some(3)),
            member(2, MemberStatus::Alive, Some(3)),
            member(3, MemberStatus::Alive, Some(3)),
        ];
        track_failures(&mut failed, &gossip_servers(&list, DC), start);
        assert!(failed.is_empty());
    }

    #[test]
    fn a_live_server_removed_from_the_configuration_is_held_off() {
        let start = Instant::now();
        let mut state = ClusterState::new(settings());
        let mut list = vec![
            member(1, MemberStatus::Alive, Some(3)),
            member(2, MemberStatus::Alive, Some(3)),
            member(3, MemberStatus::Alive, Some(3)),
        ];
        let servers = gossip_servers(&list, DC);
        let full = vec![info(1, true), info(2, true), info(3, true)];
        // No configuration yet (before the bootstrap): nothing is learnt from it.
        state.observe_config(&[], &servers, start);
        state.observe_config(&full, &servers, start);
        assert!(state.vanished_at.is_empty());
        // db3 is removed while alive: held off for the hold-off time, then forgotten.
        state.observe_config(&full[..2], &servers, start);
        assert_eq!(
            state.vanished_at.keys().copied().collect::<Vec<_>>(),
            vec![rid(3)]
        );
        state.observe_config(&full[..2], &servers, start + REJOIN_HOLDOFF);
        assert!(state.vanished_at.is_empty());
        // A server that left is not held off: it is not alive, so it is not re-added anyway.
        list[1].status = MemberStatus::Left;
        let servers = gossip_servers(&list, DC);
        state.observe_config(&full[..1], &servers, start);
        assert!(state.vanished_at.is_empty());
    }

    #[test]
    fn quorum_sizes_follow_raft() {
        assert_eq!(
            (1..=7).map(quorum).collect::<Vec<_>>(),
            vec![1, 2, 2, 3, 3, 4, 4]
        );
    }

    #[test]
    fn address_book_has_alive_and_failed_servers() {
        let list = vec![
            member(1, MemberStatus::Alive, None),
            member(2, MemberStatus::Failed, None),
            member(3, MemberStatus::Left, None),
        ];
        let book = address_book(&gossip_servers(&list, DC));
        assert_eq!(book.len(), 2);
        assert_eq!(book[&rid(2)], "10.0.0.2:8300");
    }
}
