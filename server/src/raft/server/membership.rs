//! Cluster formation and membership upkeep of a server, as the agent's cluster loop drives
//! them: asking a peer whether it already has Raft state (before a `bootstrap_expect`
//! bootstrap), the gossip address book, address updates, removals asked of the leader from
//! anywhere in the cluster (graceful leave, `DELETE /v1/operator/raft/peer`), and the Raft
//! configuration as the leader reports it (`GET /v1/operator/raft/configuration`).
//!
//! Invariants: every call is bounded (a peer question by the caller's timeout, a forwarded
//! removal by `rpc_hold_timeout`); a removal is only ever carried out by the leader, and a
//! leader applies a forwarded removal locally without forwarding it again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::super::network::{
    PATH_CONFIGURATION, PATH_PEERS, PATH_REMOVE_SERVER, PostError, encode_request, post,
};
use super::super::rpc::{PeersReply, RemoveServer};
use super::{Consistency, Inner, Leader, ServerHandle, client_write_error};
use crate::error::ServerError;
use crate::raft::ServerNode;

/// What a server says about its Raft state when a bootstrapping peer asks (Consul's
/// `Status.Peers` question in `maybeBootstrap`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// It has Raft state (bootstrapped, or joined a cluster).
    pub initialized: bool,
    /// RPC addresses of the voters it knows.
    pub voters: Vec<String>,
}

impl PeerStatus {
    /// Evidence of an existing cluster: whoever sees it must not bootstrap another one.
    pub fn has_cluster(&self) -> bool {
        self.initialized || !self.voters.is_empty()
    }
}

/// One server of the Raft configuration (`GET /v1/operator/raft/configuration`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftServerState {
    /// Raft id.
    pub id: u64,
    /// Node name.
    pub name: String,
    /// RPC address recorded in the configuration.
    pub rpc_addr: String,
    /// Voter (else learner).
    pub voter: bool,
    /// The current leader.
    pub leader: bool,
    /// Its last log index as the answering server knows it: exact for itself, the matched
    /// index for others on the leader, 0 when unknown (another server, asked `?stale` of a
    /// follower).
    pub last_index: u64,
}

/// The Raft configuration in force and the index of its log entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftConfiguration {
    /// Log index of the configuration entry (0: the bootstrap entry).
    pub index: u64,
    /// The servers, voters and learners.
    pub servers: Vec<RaftServerState>,
}

impl Inner {
    /// The configuration as this server sees it.
    pub(crate) fn local_configuration(&self) -> RaftConfiguration {
        let m = self.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let matched = m.replication.as_ref();
        let servers = membership
            .nodes()
            .map(|(id, node)| {
                let last_index = if *id == self.config.node_id {
                    m.last_log_index.unwrap_or(0)
                } else {
                    matched
                        .and_then(|r| r.get(id))
                        .and_then(|l| l.as_ref())
                        .map_or(0, |l| l.index)
                };
                RaftServerState {
                    id: *id,
                    name: node.name.clone(),
                    rpc_addr: node.rpc_addr.clone(),
                    voter: voters.contains(id),
                    leader: m.current_leader == Some(*id),
                    last_index,
                }
            })
            .collect();
        RaftConfiguration {
            index: m.membership_config.log_id().map_or(0, |l| l.index),
            servers,
        }
    }

    /// The leader's answer to a forwarded configuration request.
    pub(crate) fn leader_configuration(&self) -> Result<RaftConfiguration, ServerError> {
        self.ensure_open()?;
        match self.leader() {
            Leader::Me => Ok(self.local_configuration()),
            Leader::Other(addr) => Err(ServerError::NotLeader { leader: Some(addr) }),
            Leader::Unknown => Err(ServerError::NoLeader),
        }
    }

    /// Removes a server from the configuration (leader only; not a member: no-op). Another
    /// membership change in flight (the cluster task removing the same server because gossip
    /// says it left, say) is waited out until `deadline`.
    pub(crate) async fn remove_member(
        &self,
        id: u64,
        deadline: Instant,
    ) -> Result<(), ServerError> {
        loop {
            self.ensure_open()?;
            match self.leader() {
                Leader::Me => {}
                Leader::Other(addr) => return Err(ServerError::NotLeader { leader: Some(addr) }),
                Leader::Unknown => return Err(ServerError::NoLeader),
            }
            let (is_voter, is_member) = {
                let m = self.raft.metrics();
                let m = m.borrow();
                let membership = m.membership_config.membership();
                (
                    membership.voter_ids().any(|v| v == id),
                    membership.get_node(&id).is_some(),
                )
            };
            if !is_member {
                return Ok(());
            }
            let ids = BTreeSet::from([id]);
            let change = if is_voter {
                ChangeMembers::RemoveVoters(ids)
            } else {
                ChangeMembers::RemoveNodes(ids)
            };
            let budget = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(budget, self.raft.change_membership(change, false)).await {
                Err(_) => return Err(ServerError::Timeout),
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                )))) => {}
                Ok(Err(e)) => return Err(client_write_error(e)),
            }
            if !self.pause(deadline).await {
                self.ensure_open()?;
                return Err(ServerError::Timeout);
            }
        }
    }

    /// This server's answer to [`ServerHandle::peer_status_of`].
    pub(crate) async fn local_peer_status(&self) -> Result<PeerStatus, ServerError> {
        self.ensure_open()?;
        let initialized = self.raft.is_initialized().await.map_err(super::fatal)?;
        let voters = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            membership
                .voter_ids()
                .filter_map(|id| membership.get_node(&id).map(|n| n.rpc_addr.clone()))
                .collect()
        };
        Ok(PeerStatus {
            initialized,
            voters,
        })
    }
}

impl ServerHandle {
    /// Asks the server at `addr` (its RPC address) whether it has Raft state, within
    /// `timeout`. Used before a `bootstrap_expect` bootstrap.
    pub async fn peer_status_of(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<PeerStatus, ServerError> {
        let inner = self.server()?;
        if addr == inner.config.rpc_addr {
            return inner.local_peer_status().await;
        }
        let body = encode_request(addr, &()).map_err(|e| ServerError::Rpc(e.to_string()))?;
        let reply: Result<PeersReply, PostError> =
            post(&inner.client, addr, PATH_PEERS, body, timeout).await;
        match reply {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(e.into_server_error()),
            Err(e) => Err(ServerError::Rpc(e.to_string())),
        }
    }

    /// Replaces the gossip address book: Raft id → RPC address of every server gossip knows.
    /// Outbound Raft traffic and forwarding use these addresses before the ones recorded in
    /// the membership.
    pub fn set_peer_addrs(&self, book: BTreeMap<u64, String>) {
        if let Ok(inner) = self.server() {
            inner.peers.replace(book);
        }
    }

    /// The Raft configuration with each server's last log index (Consul's
    /// `Operator.RaftGetConfiguration`). `Stale` answers from this server; otherwise the
    /// leader answers (forwarded from a follower, retried across elections for up to
    /// `rpc_hold_timeout`), so `last_index` is the leader's view of every server.
    pub async fn raft_configuration(
        &self,
        consistency: Consistency,
    ) -> Result<RaftConfiguration, ServerError> {
        let inner = self.server()?;
        inner.ensure_open()?;
        if consistency == Consistency::Stale {
            return Ok(inner.local_configuration());
        }
        let deadline = Instant::now() + inner.config.rpc_hold_timeout;
        inner
            .on_leader(PATH_CONFIGURATION, &(), deadline, || async {
                Ok(inner.local_configuration())
            })
            .await
    }

    /// Records a server's new RPC address in the Raft membership (leader only). A no-op when
    /// the server is not a member or already has that address.
    pub async fn set_server_addr(&self, id: u64, node: ServerNode) -> Result<(), ServerError> {
        let inner = self.server()?;
        inner.ensure_open()?;
        self.ensure_leader()?;
        let current = {
            let m = inner.raft.metrics();
            let m = m.borrow();
            m.membership_config.membership().get_node(&id).cloned()
        };
        match current {
            Some(cur) if cur != node => {
                // `SetNodes` replaces the node record of an existing member: the id (the
                // server's identity) stays, only where to reach it changes.
                inner
                    .raft
                    .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, node)])), true)
                    .await
                    .map_err(client_write_error)?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Removes a server from the Raft configuration, on the leader or forwarded to it, retried
    /// across elections for up to `rpc_hold_timeout` (`No cluster leader` after that). A server
    /// that is not a member is a no-op.
    pub async fn remove_server_anywhere(&self, id: u64) -> Result<(), ServerError> {
        let inner = self.server()?;
        let deadline = Instant::now() + inner.config.rpc_hold_timeout;
        inner
            .on_leader(PATH_REMOVE_SERVER, &RemoveServer { id }, deadline, || {
                inner.remove_member(id, deadline)
            })
            .await
    }
}

/// The leader's side of a forwarded removal: applied here, never forwarded again.
pub(crate) async fn remove_forwarded(
    inner: std::sync::Arc<Inner>,
    id: u64,
) -> Result<(), ServerError> {
    let deadline = Instant::now() + inner.config.rpc_hold_timeout;
    inner.remove_member(id, deadline).await
}
