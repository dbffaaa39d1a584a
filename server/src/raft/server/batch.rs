//! Group commit above openraft: concurrent writes on the leader share one log entry.
//!
//! openraft 0.9 waits for each append to be durable before it takes the next, so one entry
//! per write caps a leader at one write per fsync round (about 2,000 a second on the test
//! machine, however many clients write). The batcher proposes one entry at a time: a write
//! that finds it idle is proposed alone, as itself; writes that arrive while an entry is in
//! flight are gathered into the next one, a [`Command::Batch`] of at most [`MAX_BATCH`]
//! commands and about [`MAX_BATCH_BYTES`].
//!
//! Invariants: writes are proposed in arrival order; every waiter gets its own command's
//! result and the entry's index; a write whose caller has given up (deadline passed) before
//! it was proposed is dropped, never applied behind the caller's back; nothing waits without
//! a bound (each proposal is bounded by `rpc_hold_timeout`).

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{WriteOutcome, client_write_error};
use crate::catalog::command::{Command, CommandResult};
use crate::error::ServerError;
use crate::raft::Raft;

/// Most commands in one entry.
pub(crate) const MAX_BATCH: usize = 256;
/// Encoded bytes after which no more commands join an entry (one command may exceed it
/// alone; see `MAX_COMMAND_BYTES`).
pub(crate) const MAX_BATCH_BYTES: usize = 512 * 1024;
/// Writes waiting for the next entry; callers wait for room beyond that.
const QUEUE: usize = 4 * MAX_BATCH;

type Reply = oneshot::Sender<Result<WriteOutcome, ServerError>>;

struct Pending {
    command: Command,
    size: usize,
    reply: Reply,
}

/// The handle writes go through on the leader.
pub(crate) struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts the proposing task; it ends when `stop` fires or every handle is dropped.
    pub(crate) fn start(raft: Raft, hold: Duration, stop: CancellationToken) -> Batcher {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, hold, rx, stop));
        Batcher { tx }
    }

    /// Proposes `command` (validated, `size` encoded bytes) and waits for its result until
    /// `deadline`.
    pub(crate) async fn write(
        &self,
        command: Command,
        size: usize,
        deadline: Instant,
    ) -> Result<WriteOutcome, ServerError> {
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            command,
            size,
            reply,
        };
        match tokio::time::timeout_at(deadline, self.tx.send(pending)).await {
            Err(_) => return Err(ServerError::Timeout),
            Ok(Err(_)) => return Err(ServerError::ShuttingDown),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => Err(ServerError::Timeout),
            Ok(Err(_)) => Err(ServerError::ShuttingDown),
            Ok(Ok(result)) => result,
        }
    }
}

async fn run(raft: Raft, hold: Duration, mut rx: mpsc::Receiver<Pending>, stop: CancellationToken) {
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            next = rx.recv() => match next {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.size;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.size;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        // Callers that gave up are not written for.
        batch.retain(|p| !p.reply.is_closed());
        if !batch.is_empty() {
            propose(&raft, hold, batch).await;
        }
    }
}

async fn propose(raft: &Raft, hold: Duration, mut batch: Vec<Pending>) {
    let (command, replies): (Command, Vec<Reply>) = if batch.len() == 1 {
        let p = batch.pop().expect("one");
        (p.command, vec![p.reply])
    } else {
        let (commands, replies) = batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        (Command::Batch(commands), replies)
    };
    let batched = matches!(command, Command::Batch(_));
    let written = tokio::time::timeout(hold, raft.client_write(command)).await;
    match written {
        Err(_) => {
            for r in replies {
                let _ = r.send(Err(ServerError::Timeout));
            }
        }
        Ok(Err(e)) => {
            for r in replies {
                let _ = r.send(Err(client_write_error(e.clone())));
            }
        }
        Ok(Ok(resp)) => {
            let index = resp.log_id.index;
            let results = match resp.data {
                CommandResult::Batch(results) if batched => results,
                // A lone command, or (never expected) a batch answered as one.
                other => vec![other; replies.len()],
            };
            for (r, result) in replies.into_iter().zip(results) {
                let _ = r.send(Ok(WriteOutcome { index, result }));
            }
        }
    }
}
