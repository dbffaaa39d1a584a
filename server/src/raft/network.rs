//! Outbound RPCs to other servers over HTTP: openraft's `RaftNetwork` plus the forwarded
//! write and read-index calls.
//!
//! Invariants: one `reqwest::Client` per server, shared by every connection (`.no_proxy()`,
//! plain HTTP, or HTTPS with the agent's [`RpcTls`] config when `tls.internal_rpc` asks for
//! it; TLS provider passed explicitly so nothing depends on a process-wide default);
//! every request carries the timeout openraft gives (`RPCOption::hard_ttl`) or the caller's
//! remaining budget; connect failures map to `Unreachable` (openraft backs off), other
//! transport failures to `Network`, and errors the remote Raft reports come back as
//! `RemoteError`. Bodies are versioned envelopes. A peer's address is resolved on every call:
//! the one gossip last reported ([`PeerAddrs`]) wins over the one recorded in the Raft
//! membership, so a cluster whose servers all restarted on new addresses can still elect.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::channel::{self, ChannelError};
use super::{Durable, NodeId, ServerNode, TypeConfig};
use crate::config::RpcTls;

/// Version of the RPC envelopes this build speaks.
pub(crate) const RPC_VERSION: u32 = 1;
/// Largest RPC body the router accepts.
pub(crate) const MAX_RPC_BODY: usize = 32 * 1024 * 1024;
/// Append requests larger than this are split (openraft retries with fewer entries).
const SPLIT_APPEND_ABOVE: usize = 8 * 1024 * 1024;

pub(crate) const PATH_APPEND: &str = "/raft/v1/append";
pub(crate) const PATH_VOTE: &str = "/raft/v1/vote";
pub(crate) const PATH_SNAPSHOT: &str = "/raft/v1/snapshot";
pub(crate) const PATH_WRITE: &str = "/rpc/v1/write";
pub(crate) const PATH_READ_INDEX: &str = "/rpc/v1/read-index";
pub(crate) const PATH_PEERS: &str = "/rpc/v1/peers";
pub(crate) const PATH_REMOVE_SERVER: &str = "/rpc/v1/remove-server";
pub(crate) const PATH_CONFIGURATION: &str = "/rpc/v1/raft-configuration";
pub(crate) const PATH_ACL_RESOLVE: &str = "/rpc/v1/acl-resolve";
pub(crate) const PATH_ACL_STATE: &str = "/rpc/v1/acl-state";

/// Request envelope.
#[derive(Serialize, Deserialize)]
pub(crate) struct Envelope<T> {
    pub(crate) v: u32,
    pub(crate) body: T,
}

/// Reply envelope.
#[derive(Serialize, Deserialize)]
pub(crate) struct Reply<T> {
    pub(crate) v: u32,
    pub(crate) result: T,
}

/// A failed HTTP exchange. Transport errors carry their whole source chain: the reason a
/// TLS handshake failed is only there.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PostError {
    #[error("cannot connect to {addr}: {}", error_chain(source))]
    Connect {
        addr: String,
        source: reqwest::Error,
    },
    #[error("request to {addr} failed: {}", error_chain(source))]
    Transport {
        addr: String,
        source: reqwest::Error,
    },
    #[error("{addr} answered HTTP {status}: {body}")]
    Status {
        addr: String,
        status: u16,
        body: String,
    },
    #[error("{reason}")]
    Channel { addr: String, reason: String },
    #[error("cannot encode or decode an RPC to {addr}: {source}")]
    Codec {
        addr: String,
        source: serde_json::Error,
    },
}

/// An error and its sources, `a: b: c` (reqwest's and hyper's own texts hide the cause, a
/// TLS reason included).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// The HTTP client for server RPCs and the scheme it speaks (`https` with TLS).
#[derive(Clone)]
pub(crate) struct RpcClient {
    pub(crate) client: reqwest::Client,
    scheme: &'static str,
}

impl RpcClient {
    /// The URL of `path` on the server at `addr` (`ip:port`).
    pub(crate) fn url(&self, addr: &str, path: &str) -> String {
        format!("{}://{addr}{path}", self.scheme)
    }
}

/// The shared HTTP client for server-to-server calls.
pub(crate) fn http_client(tls: Option<&RpcTls>) -> Result<RpcClient, String> {
    http_client_with(tls, |b| b)
}

/// [`http_client`] with extra settings on top (the replica bounds connects and keeps
/// connections alive so that a dead server's pooled connection fails fast).
pub(crate) fn http_client_with(
    tls: Option<&RpcTls>,
    extra: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> Result<RpcClient, String> {
    let (config, scheme) = match tls {
        Some(tls) => ((*tls.0).clone(), "https"),
        // Plain HTTP, but reqwest needs a TLS backend to build; hand it one with an explicit
        // provider instead of relying on a process-wide default (which would panic).
        None => {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            (config, "http")
        }
    };
    let builder = reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(config)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90));
    let client = extra(builder).build().map_err(|e| e.to_string())?;
    Ok(RpcClient { client, scheme })
}

/// Encodes a request body.
pub(crate) fn encode_request<T: Serialize>(addr: &str, body: &T) -> Result<Vec<u8>, PostError> {
    serde_json::to_vec(&Envelope {
        v: RPC_VERSION,
        body,
    })
    .map_err(|source| PostError::Codec {
        addr: addr.to_string(),
        source,
    })
}

/// POSTs an encoded envelope to `{scheme}://{addr}{path}` and decodes the reply's result.
pub(crate) async fn post<T: DeserializeOwned>(
    rpc: &RpcClient,
    addr: &str,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<T, PostError> {
    let resp = rpc
        .client
        .post(rpc.url(addr, path))
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|source| {
            if source.is_connect() {
                PostError::Connect {
                    addr: addr.to_string(),
                    source,
                }
            } else {
                PostError::Transport {
                    addr: addr.to_string(),
                    source,
                }
            }
        })?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|source| PostError::Transport {
        addr: addr.to_string(),
        source,
    })?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
        return Err(PostError::Status {
            addr: addr.to_string(),
            status: status.as_u16(),
            body: text,
        });
    }
    decode_reply(addr, &bytes)
}

/// Decodes a reply envelope's result.
pub(crate) fn decode_reply<T: DeserializeOwned>(addr: &str, bytes: &[u8]) -> Result<T, PostError> {
    let reply: Reply<T> = serde_json::from_slice(bytes).map_err(|source| PostError::Codec {
        addr: addr.to_string(),
        source,
    })?;
    Ok(reply.result)
}

/// Server RPC addresses learned from gossip, by Raft id. They override the addresses recorded
/// in the Raft membership, which go stale when a server comes back on another address; the
/// leader then writes the new address into the membership, but until a leader exists only
/// this book lets the servers reach each other.
#[derive(Debug, Default)]
pub(crate) struct PeerAddrs {
    book: parking_lot::RwLock<BTreeMap<NodeId, String>>,
}

impl PeerAddrs {
    /// The address to use for `id`: gossip's, else the recorded one.
    pub(crate) fn resolve(&self, id: NodeId, recorded: &str) -> String {
        self.book
            .read()
            .get(&id)
            .cloned()
            .unwrap_or_else(|| recorded.to_owned())
    }

    /// Replaces the whole book (gossip's current view of the servers).
    pub(crate) fn replace(&self, book: BTreeMap<NodeId, String>) {
        *self.book.write() = book;
    }
}

/// openraft's connection factory.
pub(crate) struct Network {
    pub(crate) client: RpcClient,
    pub(crate) peers: Arc<PeerAddrs>,
    /// How much of the local log is on disk: bounds the commit index sent.
    pub(crate) durable: tokio::sync::watch::Receiver<Durable>,
}

/// A connection to one peer (its id and recorded address; the client pools sockets), with
/// the upgraded connection appends go over ([`super::channel`]).
pub(crate) struct Connection {
    client: RpcClient,
    target: NodeId,
    recorded: String,
    peers: Arc<PeerAddrs>,
    /// The open channel and the address it goes to (behind a mutex only so the connection
    /// is `Sync`, as openraft wants; calls take `&mut self`, so it is never contended).
    channel: tokio::sync::Mutex<Option<(String, channel::Conn)>>,
    /// Until when appends use plain HTTP (the peer has no channel).
    legacy_until: Option<tokio::time::Instant>,
    durable: tokio::sync::watch::Receiver<Durable>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &ServerNode) -> Connection {
        Connection {
            client: self.client.clone(),
            target,
            recorded: node.rpc_addr.clone(),
            peers: self.peers.clone(),
            channel: tokio::sync::Mutex::new(None),
            legacy_until: None,
            durable: self.durable.clone(),
        }
    }
}

impl Connection {
    /// Resolved per call: openraft keeps connections for a long time.
    fn addr(&self) -> String {
        self.peers.resolve(self.target, &self.recorded)
    }

    async fn call<Resp, E>(
        &self,
        path: &str,
        body: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, ServerNode, E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let addr = self.addr();
        let result: Result<Resp, E> = post(&self.client, &addr, path, body, option.hard_ttl())
            .await
            .map_err(|e| match &e {
                PostError::Connect { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// Sends an encoded append over the channel (opening it first if needed) and returns the
    /// reply body.
    async fn append_on_channel(
        &mut self,
        body: &[u8],
        ttl: Duration,
    ) -> Result<Vec<u8>, ChannelError> {
        let addr = self.addr();
        let deadline = tokio::time::Instant::now() + ttl;
        let channel = self.channel.get_mut();
        if channel.as_ref().is_some_and(|(a, _)| *a != addr) {
            *channel = None;
        }
        let io = match channel {
            Some((_, io)) => io,
            None => {
                let io =
                    channel::open(&self.client, &addr, channel::PATH, channel::TOKEN, deadline)
                        .await?;
                &mut channel.insert((addr.clone(), io)).1
            }
        };
        let reply = channel::exchange(io, &addr, body, deadline).await;
        if reply.is_err() {
            // The state of the stream is unknown: the next call opens a new one.
            *channel = None;
        }
        reply
    }

    fn encode<T: Serialize, E: std::error::Error>(
        &self,
        body: &T,
    ) -> Result<Vec<u8>, RPCError<NodeId, ServerNode, E>> {
        encode_request(&self.addr(), body).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, ServerNode, RaftError<NodeId>>>
    {
        // A follower applies what it is told is committed: never an entry not yet on disk
        // here (this leader reports its own appends flushed early; see `Durable`).
        rpc.leader_commit = self.durable.borrow().clamp_commit(rpc.leader_commit);
        let entries = rpc.entries.len() as u64;
        let body = self.encode(&rpc)?;
        if body.len() > SPLIT_APPEND_ABOVE && entries > 1 {
            // Let openraft resend in smaller pieces rather than exceed the peer's body limit.
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries / 2),
            ));
        }
        let use_channel = self
            .legacy_until
            .is_none_or(|t| tokio::time::Instant::now() >= t);
        if use_channel {
            let addr = self.addr();
            match self.append_on_channel(&body, option.hard_ttl()).await {
                Ok(reply) => {
                    let result: Result<_, RaftError<NodeId>> = decode_reply(&addr, &reply)
                        .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
                    return result
                        .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)));
                }
                Err(ChannelError::Unsupported) => {
                    tracing::info!(
                        peer = %addr,
                        "server has no raft append channel (an older build); using HTTP"
                    );
                    self.legacy_until = Some(tokio::time::Instant::now() + channel::LEGACY_RETRY);
                }
                Err(ChannelError::Unreachable(e)) => {
                    return Err(RPCError::Unreachable(Unreachable::new(&e)));
                }
                Err(ChannelError::Failed(e)) => {
                    return Err(RPCError::Network(NetworkError::new(&e)));
                }
                Err(ChannelError::Broken(reason)) => {
                    let e = std::io::Error::other(reason);
                    return Err(RPCError::Network(NetworkError::new(&e)));
                }
            }
        }
        self.call(PATH_APPEND, body, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, ServerNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let body = self.encode(&rpc)?;
        self.call(PATH_SNAPSHOT, body, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, ServerNode, RaftError<NodeId>>> {
        let body = self.encode(&rpc)?;
        self.call(PATH_VOTE, body, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use openraft::Vote;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn heartbeat() -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        }
    }

    #[tokio::test]
    async fn appends_fall_back_to_http_when_the_server_has_no_channel() {
        // An older server: the HTTP append path only.
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let app = axum::Router::new().route(
            PATH_APPEND,
            post(move || {
                let seen = seen.clone();
                async move {
                    seen.fetch_add(1, Ordering::SeqCst);
                    serde_json::to_vec(&Reply {
                        v: RPC_VERSION,
                        result: Ok::<_, RaftError<NodeId>>(
                            AppendEntriesResponse::<NodeId>::Success,
                        ),
                    })
                    .unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let mut network = Network {
            client: http_client(None).unwrap(),
            peers: Arc::default(),
            durable: tokio::sync::watch::Sender::new(Durable::default()).subscribe(),
        };
        let node = ServerNode {
            name: "old".into(),
            rpc_addr: addr,
        };
        let mut conn = network.new_client(2, &node).await;
        let option = RPCOption::new(Duration::from_secs(5));
        for _ in 0..3 {
            let reply = conn.append_entries(heartbeat(), option.clone()).await;
            assert!(
                matches!(reply, Ok(AppendEntriesResponse::Success)),
                "{reply:?}"
            );
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "every append went over HTTP"
        );
        assert!(
            conn.legacy_until.is_some(),
            "the channel is not retried at once"
        );
        assert!(conn.channel.get_mut().is_none());
        server.abort();
    }
}
