//! The inbound RPC router served on the server port: Raft's append/vote/snapshot, writes
//! forwarded by followers, the read-index call behind follower `?consistent` reads, the
//! "do you have Raft state" question of a bootstrapping peer, removals from the Raft
//! configuration forwarded to the leader, and the leader's view of that configuration.
//!
//! Invariants: bodies are bounded ([`MAX_RPC_BODY`]); envelopes from a newer RPC version are
//! refused with 400 rather than misread; a forwarded write is only ever applied locally (never
//! forwarded again), so forwarding cannot loop; contact from a leader (an append or snapshot
//! that did not carry a stale vote) is recorded for `X-Consul-LastContact`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::TypeConfig;
use super::network::{
    Envelope, MAX_RPC_BODY, PATH_ACL_RESOLVE, PATH_ACL_STATE, PATH_APPEND, PATH_CONFIGURATION,
    PATH_PEERS, PATH_READ_INDEX, PATH_REMOVE_SERVER, PATH_SNAPSHOT, PATH_VOTE, PATH_WRITE,
    RPC_VERSION, Reply,
};
use super::server::{Inner, PeerStatus, RaftConfiguration, WriteOutcome, remove_forwarded};
use crate::catalog::command::{Command, ValidationError};
use crate::error::ServerError;

/// A write forwarded from a follower.
#[derive(Serialize, Deserialize)]
pub(crate) struct ForwardWrite {
    pub(crate) command: Command,
}

/// Why the leader could not take a forwarded request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum ForwardError {
    NotLeader { leader: Option<String> },
    NoLeader,
    Validation(String),
    ShuttingDown,
    Timeout,
    Internal(String),
}

impl ForwardError {
    /// Worth retrying against the (possibly new) leader.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(
            self,
            ForwardError::NotLeader { .. } | ForwardError::NoLeader | ForwardError::ShuttingDown
        )
    }

    pub(crate) fn into_server_error(self) -> ServerError {
        match self {
            ForwardError::NotLeader { leader } => ServerError::NotLeader { leader },
            ForwardError::NoLeader => ServerError::NoLeader,
            ForwardError::Validation(m) => ServerError::Validation(ValidationError::Remote(m)),
            ForwardError::ShuttingDown => ServerError::ShuttingDown,
            ForwardError::Timeout => ServerError::Timeout,
            ForwardError::Internal(m) => ServerError::Rpc(m),
        }
    }
}

impl From<ServerError> for ForwardError {
    fn from(e: ServerError) -> Self {
        match e {
            ServerError::Validation(v) => ForwardError::Validation(v.to_string()),
            ServerError::NotLeader { leader } => ForwardError::NotLeader { leader },
            ServerError::NoLeader => ForwardError::NoLeader,
            ServerError::ShuttingDown => ForwardError::ShuttingDown,
            ServerError::Timeout => ForwardError::Timeout,
            other => ForwardError::Internal(other.to_string()),
        }
    }
}

/// Reply to a forwarded write.
pub(crate) type ForwardWriteReply = Result<WriteOutcome, ForwardError>;
/// Reply to a read-index request: the index a linearizable read must wait for.
pub(crate) type ReadIndexReply = Result<u64, ForwardError>;
/// Reply to a bootstrapping peer's question about our Raft state.
pub(crate) type PeersReply = Result<PeerStatus, ForwardError>;

/// A removal from the Raft configuration, asked of the leader.
#[derive(Serialize, Deserialize)]
pub(crate) struct RemoveServer {
    pub(crate) id: u64,
}

/// Reply to a forwarded removal.
pub(crate) type RemoveServerReply = Result<(), ForwardError>;
/// A client agent asks for a token's rules by its secret.
#[derive(Serialize, Deserialize)]
pub(crate) struct AclResolve {
    pub(crate) secret: String,
}

/// Reply to [`AclResolve`]: `None` when no token has that secret.
pub(crate) type AclResolveReply = Result<Option<crate::catalog::acl::ResolvedToken>, ForwardError>;

/// Reply to an ACL state request (a client agent serving `/v1/acl/*` reads).
pub(crate) type AclStateReply = Result<crate::catalog::acl::AclState, ForwardError>;

/// Reply to a configuration request (answered by the leader only).
pub(crate) type ConfigurationReply = Result<RaftConfiguration, ForwardError>;

/// Builds the router over the server's internals.
pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route(PATH_APPEND, post(append))
        .route(super::channel::PATH, post(super::channel::upgrade))
        .route(PATH_VOTE, post(vote))
        .route(PATH_SNAPSHOT, post(snapshot))
        .route(PATH_WRITE, post(write))
        .route(
            super::channel::WRITE_PATH,
            post(super::channel::upgrade_write),
        )
        .route(PATH_READ_INDEX, post(read_index))
        .route(crate::replica::wire::PATH_STREAM, post(stream))
        .route(PATH_PEERS, post(peers))
        .route(PATH_REMOVE_SERVER, post(remove_server))
        .route(PATH_CONFIGURATION, post(configuration))
        .route(PATH_ACL_RESOLVE, post(acl_resolve))
        .route(PATH_ACL_STATE, post(acl_state))
        .layer(DefaultBodyLimit::max(MAX_RPC_BODY))
        .with_state(inner)
}

/// Reads a versioned envelope; a bad or newer envelope becomes a 400 with a plain-text reason.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Response> {
    parse_body(bytes).map_err(bad_request)
}

/// Reads a versioned envelope, or says why not.
fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    #[derive(Deserialize)]
    struct VersionOnly {
        v: u32,
    }
    match serde_json::from_slice::<Envelope<T>>(bytes) {
        Ok(env) if (1..=RPC_VERSION).contains(&env.v) => Ok(env.body),
        Ok(env) => Err(format!(
            "unsupported RPC version {} (this server speaks {RPC_VERSION})",
            env.v
        )),
        Err(e) => match serde_json::from_slice::<VersionOnly>(bytes) {
            Ok(v) if v.v > RPC_VERSION => Err(format!(
                "unsupported RPC version {} (this server speaks {RPC_VERSION})",
                v.v
            )),
            _ => Err(format!("malformed RPC body: {e}")),
        },
    }
}

fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, msg).into_response()
}

fn encode_reply<T: Serialize>(result: T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Reply {
        v: RPC_VERSION,
        result,
    })
}

fn reply<T: Serialize>(result: T) -> Response {
    match encode_reply(result) {
        Ok(body) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn append(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let req: AppendEntriesRequest<TypeConfig> = match parse(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    reply(handle_append(&inner, req).await)
}

async fn handle_append(
    inner: &Arc<Inner>,
    req: AppendEntriesRequest<TypeConfig>,
) -> Result<AppendEntriesResponse<super::NodeId>, openraft::error::RaftError<super::NodeId>> {
    let res = inner.raft().append_entries(req).await;
    if let Ok(r) = &res
        && !matches!(r, AppendEntriesResponse::HigherVote(_))
    {
        inner.touch_leader_contact();
    }
    res
}

/// An append frame of the channel ([`super::channel`]): the reply body the HTTP path would
/// send, or why the request is unreadable.
pub(crate) async fn append_reply(inner: &Arc<Inner>, body: &[u8]) -> Result<Vec<u8>, String> {
    let req: AppendEntriesRequest<TypeConfig> = parse_body(body)?;
    encode_reply(handle_append(inner, req).await).map_err(|e| e.to_string())
}

async fn vote(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    match parse(&body) {
        Ok(req) => reply(inner.raft().vote(req).await),
        Err(resp) => resp,
    }
}

async fn snapshot(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let req: InstallSnapshotRequest<TypeConfig> = match parse(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let res = inner.raft().install_snapshot(req).await;
    if res.is_ok() {
        inner.touch_leader_contact();
    }
    reply(res)
}

async fn write(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let req: ForwardWrite = match parse(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    reply(handle_write(&inner, req).await)
}

async fn handle_write(inner: &Arc<Inner>, req: ForwardWrite) -> ForwardWriteReply {
    inner
        .write_forwarded(req.command)
        .await
        .map_err(ForwardError::from)
}

/// A forwarded write's frame ([`super::channel`]): the reply body the HTTP path would send,
/// or why the request is unreadable.
pub(crate) async fn write_reply(inner: &Arc<Inner>, body: &[u8]) -> Result<Vec<u8>, String> {
    let req: ForwardWrite = parse_body(body)?;
    encode_reply(handle_write(inner, req).await).map_err(|e| e.to_string())
}

async fn read_index(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    if let Err(resp) = parse::<()>(&body) {
        return resp;
    }
    let result: ReadIndexReply = inner.leader_read_index().await.map_err(ForwardError::from);
    reply(result)
}

async fn peers(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    if let Err(resp) = parse::<()>(&body) {
        return resp;
    }
    let result: PeersReply = inner.local_peer_status().await.map_err(ForwardError::from);
    reply(result)
}

async fn remove_server(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let req: RemoveServer = match parse(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let result: RemoveServerReply = remove_forwarded(inner, req.id)
        .await
        .map_err(ForwardError::from);
    reply(result)
}

/// A client agent's replica asks for the changes after its position (long poll).
async fn stream(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let req: crate::replica::wire::StreamRequest = match parse(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    reply(super::stream::serve(&inner, req).await)
}

/// Token resolution for client agents, from this server's state (as Consul's servers do).
async fn acl_resolve(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let req: AclResolve = match parse(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let result: AclResolveReply = inner.acl_resolve(&req.secret).map_err(ForwardError::from);
    reply(result)
}

/// The whole ACL state, for a client agent answering `/v1/acl/*` reads (it authorized the
/// caller's token first).
async fn acl_state(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    if let Err(resp) = parse::<()>(&body) {
        return resp;
    }
    let result: AclStateReply = inner.acl_state().map_err(ForwardError::from);
    reply(result)
}

async fn configuration(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    if let Err(resp) = parse::<()>(&body) {
        return resp;
    }
    let result: ConfigurationReply = inner.leader_configuration().map_err(ForwardError::from);
    reply(result)
}
