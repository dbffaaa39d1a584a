//! openraft's storage traits (v2) over the redb storage thread.
//!
//! Invariants:
//! - `append` returns once the entries are queued (and so readable by every later request) and
//!   calls `LogFlushed::log_io_completed` from the storage thread only after the group commit
//!   holding them is durable;
//! - `save_vote`, `truncate` and `purge` return after a durable commit; `last_purged` is
//!   written in the same transaction as the purge, so there are never holes;
//! - the state machine lives in memory (the catalog) and is made durable by snapshots stored
//!   in the same file: a snapshot is durable before `build_snapshot` returns (hence before
//!   openraft purges the logs it covers) and before `install_snapshot` swaps the catalog in; on
//!   start the latest snapshot is loaded and openraft re-applies committed entries after it.
//! - the newest entries (up to [`LOG_CACHE`]) are also kept in memory, in index order and
//!   ending at the last appended entry: replication and apply read them there, never queued
//!   behind a group commit on the storage thread; truncate and purge update it first.
//! - every applied entry also goes into the replica ring (`stream`), under the same lock, and
//!   the applied index is published after the lock is released (replica long polls wake).
//! - a leader's own appends (entries of its current, committed term) are reported flushed as
//!   soon as they are queued; until their sync completes they are pending in
//!   [`Durable`](super::Durable): `apply` waits for it, and the network never tells a follower
//!   a commit index that covers them. Every other append is reported after its sync.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io::{self, Cursor};
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    EntryPayload, LogState, OptionalSend, RaftLogReader, RaftSnapshotBuilder, Snapshot,
    StorageIOError,
};
use parking_lot::Mutex;

use super::stream::{ChangeRing, RING_CAPACITY};
use super::{
    Durable, Entry, LogId, NodeId, Shared, SmState, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig, Vote, decode, encode,
};
use crate::catalog::Catalog;
use crate::catalog::command::CommandResult;
use crate::storage::{Recovered, Storage, StorageHandle, StoreError};

/// Entries kept in memory for replication and apply (a few MB at catalog-entry sizes).
const LOG_CACHE: usize = 8192;

/// The newest log entries; when not empty, contiguous and ending at the last appended one.
#[derive(Default)]
struct LogCache {
    entries: VecDeque<Entry>,
}

impl LogCache {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id.index)
    }

    fn append(&mut self, new: Vec<Entry>) {
        let contiguous = match (self.entries.back(), new.first()) {
            (Some(last), Some(next)) => next.log_id.index == last.log_id.index + 1,
            _ => true,
        };
        if !contiguous {
            self.entries.clear();
        }
        self.entries.extend(new);
        while self.entries.len() > LOG_CACHE {
            self.entries.pop_front();
        }
    }

    /// Drops `[from, ∞)`.
    fn truncate(&mut self, from: u64) {
        while self.entries.back().is_some_and(|e| e.log_id.index >= from) {
            self.entries.pop_back();
        }
    }

    /// Drops `[0, upto]`.
    fn purge(&mut self, upto: u64) {
        while self.entries.front().is_some_and(|e| e.log_id.index <= upto) {
            self.entries.pop_front();
        }
    }

    /// `[start, end)` if the cache holds all of it that exists.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        if start < first {
            return None;
        }
        let skip = usize::try_from(start - first).unwrap_or(usize::MAX);
        let take = usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX);
        Some(self.entries.iter().skip(skip).take(take).cloned().collect())
    }
}

/// The log half of the store; owned by openraft's core task.
pub(crate) struct LogStore {
    /// This server's id: appends of its own leadership are reported flushed early.
    node_id: NodeId,
    storage: StorageHandle,
    cache: Arc<Mutex<LogCache>>,
    shared: Arc<Shared>,
    last_purged: Option<LogId>,
    last_log: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

/// A cheap reader used by replication tasks.
#[derive(Clone)]
pub(crate) struct LogReader {
    storage: StorageHandle,
    cache: Arc<Mutex<LogCache>>,
}

/// The state-machine half; owned by openraft's state-machine worker.
pub(crate) struct StateMachine {
    storage: StorageHandle,
    shared: Arc<Shared>,
}

/// A point-in-time copy of the state machine, to be encoded and saved.
pub(crate) struct SnapshotBuilder {
    storage: StorageHandle,
    catalog: Catalog,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
}

/// The sync of a leader's own append that openraft was told is already flushed: pending in
/// [`Durable`] from creation until the storage thread reports; dropped unreported (the store
/// closed with it queued), it counts as failed, so nothing waits for it forever.
struct EarlySync {
    shared: Arc<Shared>,
    last: LogId,
    reported: bool,
}

impl EarlySync {
    fn new(shared: Arc<Shared>, last: LogId) -> Self {
        shared
            .durable
            .send_modify(|d| d.early = d.early.max(Some(last)));
        EarlySync {
            shared,
            last,
            reported: false,
        }
    }

    fn report(mut self, ok: bool) {
        self.reported = true;
        record_sync(&self.shared, self.last, ok);
    }
}

impl Drop for EarlySync {
    fn drop(&mut self) {
        if !self.reported {
            record_sync(&self.shared, self.last, false);
        }
    }
}

/// Records the outcome of the sync that covers every entry up to `last`.
fn record_sync(shared: &Shared, last: LogId, ok: bool) {
    shared.durable.send_modify(|d| {
        if ok {
            d.through = d.through.max(Some(last));
        } else {
            d.failed = true;
        }
    });
}

/// Distinguishes snapshots built at the same log id.
static SNAPSHOT_SEQ: AtomicU64 = AtomicU64::new(0);

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(format!("cannot decode stored {what}: {e}"))
}

/// Opens the store file and builds both halves from what it holds.
pub(crate) async fn open(
    dir: &Path,
    node_id: NodeId,
) -> Result<(Storage, LogStore, StateMachine, Arc<Shared>), StoreError> {
    let (storage, recovered) = Storage::open(dir).await?;
    match build(&storage, recovered, node_id) {
        Ok((log, sm, shared)) => Ok((storage, log, sm, shared)),
        Err(e) => {
            storage.close(std::time::Duration::from_secs(5)).await;
            Err(e)
        }
    }
}

fn build(
    storage: &Storage,
    rec: Recovered,
    node_id: NodeId,
) -> Result<(LogStore, StateMachine, Arc<Shared>), StoreError> {
    let path = storage.path().to_path_buf();
    let opt = |what: &str, bytes: Option<Vec<u8>>| -> Result<Option<LogId>, StoreError> {
        bytes
            .map(|b| decode::<Option<LogId>>(&b).map_err(|e| corrupt(what, e)))
            .transpose()
            .map(Option::flatten)
    };
    let vote = rec
        .vote
        .map(|b| decode::<Vote>(&b).map_err(|e| corrupt("vote", e)))
        .transpose()?;
    let committed = opt("committed log id", rec.committed)?;
    let last_purged = opt("last purged log id", rec.last_purged)?;
    let last_log = rec
        .last_entry
        .map(|b| {
            decode::<Entry>(&b)
                .map(|e| e.log_id)
                .map_err(|e| corrupt("log entry", e))
        })
        .transpose()?;
    let state = match rec.snapshot {
        None => SmState {
            catalog: Catalog::new(),
            last_applied: None,
            last_membership: StoredMembership::default(),
            ring: ChangeRing::new(None, RING_CAPACITY),
        },
        Some((meta, data)) => {
            let meta: SnapshotMeta = decode(&meta).map_err(|e| corrupt("snapshot meta", e))?;
            let catalog = Catalog::decode_snapshot(&data).map_err(|e| StoreError::Corrupted {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            SmState {
                catalog,
                last_applied: meta.last_log_id,
                last_membership: meta.last_membership,
                ring: ChangeRing::new(meta.last_log_id, RING_CAPACITY),
            }
        }
    };
    // What the files hold is on disk: opening synced the last segment (and any repair).
    let durable = Durable {
        through: last_log,
        ..Durable::default()
    };
    let shared = Shared::new(state, durable);
    *shared.committed_index.lock() = committed.map(|c| c.index);
    let log = LogStore {
        node_id,
        storage: storage.handle(),
        cache: Arc::default(),
        shared: shared.clone(),
        last_purged,
        last_log,
        vote,
        committed,
    };
    let sm = StateMachine {
        storage: storage.handle(),
        shared: shared.clone(),
    };
    Ok((log, sm, shared))
}

fn to_range<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => *e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

async fn read_entries(
    storage: &StorageHandle,
    cache: &Mutex<LogCache>,
    start: u64,
    end: u64,
) -> Result<Vec<Entry>, StorageError> {
    if let Some(hit) = cache.lock().get(start, end) {
        return Ok(hit);
    }
    let raw = storage
        .read_logs(start, end)
        .await
        .map_err(|e| StorageIOError::read_logs(&e))?;
    raw.into_iter()
        .map(|(_, bytes)| decode::<Entry>(&bytes).map_err(|e| StorageIOError::read_logs(&e).into()))
        .collect()
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = to_range(&range);
        read_entries(&self.storage, &self.cache, start, end).await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = to_range(&range);
        read_entries(&self.storage, &self.cache, start, end).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(LogState {
            last_purged_log_id: self.last_purged,
            last_log_id: self.last_log.max(self.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            storage: self.storage.clone(),
            cache: self.cache.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = encode(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.storage
            .save_vote(bytes)
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = encode(&committed).map_err(|e| StorageIOError::write(&e))?;
        self.storage
            .save_committed(committed.map_or(0, |c| c.index), bytes)
            .map_err(|e| StorageIOError::write(&e))?;
        self.committed = committed;
        *self.shared.committed_index.lock() = committed.map(|c| c.index);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut batch = Vec::with_capacity(entries.len());
        for entry in &entries {
            let bytes = encode(entry).map_err(|e| StorageIOError::write_logs(&e))?;
            batch.push((entry.log_id.index, bytes));
        }
        let Some(last) = entries.last().map(|e| e.log_id) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        // Entries of this leader's own current term: see the module docs.
        let own = self.vote.is_some_and(|v| {
            v.is_committed()
                && v.leader_id().node_id == self.node_id
                && entries.iter().all(|e| e.log_id.leader_id == *v.leader_id())
        });
        // Readable on return: from the cache, and from the store behind it (queued first).
        self.cache.lock().append(entries);
        if own {
            let sync = EarlySync::new(self.shared.clone(), last);
            self.storage
                .append(batch, move |res| sync.report(res.is_ok()))
                .await
                .map_err(|e| StorageIOError::write_logs(&e))?;
            callback.log_io_completed(Ok(()));
        } else {
            // The callback runs on the storage thread once the group commit is durable.
            let shared = self.shared.clone();
            self.storage
                .append(batch, move |res| {
                    record_sync(&shared, last, res.is_ok());
                    callback.log_io_completed(res.map_err(io::Error::other));
                })
                .await
                .map_err(|e| StorageIOError::write_logs(&e))?;
        }
        self.last_log = Some(last);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.cache.lock().truncate(log_id.index);
        let last = self
            .storage
            .truncate(log_id.index)
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.last_log = match last {
            Some(bytes) => Some(
                decode::<Entry>(&bytes)
                    .map_err(|e| StorageIOError::read_logs(&e))?
                    .log_id,
            ),
            None => None,
        };
        // The truncation is synced, and so is everything before it; nothing removed is
        // pending any more.
        let last = self.last_log;
        self.shared.durable.send_modify(|d| {
            d.through = last;
            d.early = d.early.min(last);
        });
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = encode(&Some(log_id)).map_err(|e| StorageIOError::write_logs(&e))?;
        self.cache.lock().purge(log_id.index);
        self.storage
            .purge(log_id.index, bytes)
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.last_purged = Some(log_id);
        if self.last_log < self.last_purged {
            self.last_log = self.last_purged;
        }
        Ok(())
    }
}

impl StateMachine {
    /// Waits until `id` (and so every entry before it) is on disk here; see [`Durable`].
    async fn synced(&self, id: LogId) -> Result<(), StorageError> {
        if !self.shared.durable.borrow().pending(id) {
            return Ok(());
        }
        let mut rx = self.shared.durable.subscribe();
        let state = *rx
            .wait_for(|d| d.failed || !d.pending(id))
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        if state.pending(id) {
            let e = io::Error::other(format!("the log write holding entry {id} failed"));
            return Err(StorageIOError::write_logs(&e).into());
        }
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let st = self.shared.state.read();
        Ok((st.last_applied, st.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let Some(last) = entries.last() {
            self.synced(last.log_id).await?;
        }
        let mut results = Vec::new();
        let (indexes, applied) = {
            let mut st = self.shared.state.write();
            for entry in entries {
                st.last_applied = Some(entry.log_id);
                let (result, command) = match entry.payload {
                    EntryPayload::Blank => (CommandResult::Ok, None),
                    EntryPayload::Normal(cmd) => {
                        (st.catalog.apply(entry.log_id.index, &cmd), Some(cmd))
                    }
                    EntryPayload::Membership(m) => {
                        st.last_membership = StoredMembership::new(Some(entry.log_id), m);
                        (CommandResult::Ok, None)
                    }
                };
                // Replicas re-apply the same command at the same index: same content, same
                // indexes (rejected commands included: they change nothing there either).
                // ACL changes stay on the servers (replicas never hold token secrets).
                st.ring
                    .push(entry.log_id, command.and_then(crate::Command::without_acl));
                results.push(result);
            }
            (st.catalog.indexes(), st.last_applied)
        };
        // Wake blocking queries only after the lock is released, so they see the new state.
        self.shared.watches.publish(indexes);
        self.shared
            .applied
            .send_replace(applied.map_or(0, |l| l.index));
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // The point-in-time copy is taken here, on the state-machine worker, between applies.
        let st = self.shared.state.read();
        SnapshotBuilder {
            storage: self.storage.clone(),
            catalog: st.catalog.clone(),
            last_applied: st.last_applied,
            last_membership: st.last_membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let catalog = Catalog::decode_snapshot(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let meta_bytes =
            encode(meta).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        // Durable first: after a crash the node restarts from this snapshot.
        self.storage
            .save_snapshot(meta_bytes, data)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let indexes = {
            let mut st = self.shared.state.write();
            st.catalog = catalog;
            st.last_applied = meta.last_log_id;
            st.last_membership = meta.last_membership.clone();
            st.ring.reset(meta.last_log_id);
            st.catalog.indexes()
        };
        self.shared.watches.publish(indexes);
        self.shared
            .applied
            .send_replace(meta.last_log_id.map_or(0, |l| l.index));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let stored = self
            .storage
            .read_snapshot()
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let Some((meta, data)) = stored else {
            return Ok(None);
        };
        let meta: SnapshotMeta =
            decode(&meta).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Encoding a large catalog takes tens of milliseconds of CPU: off the runtime's
        // workers (the agent may run just one), so Raft and the API keep going meanwhile.
        let catalog = std::mem::take(&mut self.catalog);
        let data = tokio::task::spawn_blocking(move || catalog.encode_snapshot())
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &io::Error::other(e)))?;
        let seq = SNAPSHOT_SEQ.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}-{seq}", l.leader_id, l.index, data.len()),
            None => format!("none-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id,
        };
        let meta_bytes = encode(&meta)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        // Durable before returning: openraft purges the covered logs only after this.
        self.storage
            .save_snapshot(meta_bytes, data.clone())
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::command::{Command, Registration};
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, Membership};
    use std::collections::BTreeSet;

    /// Builds stores in fresh temp dirs for openraft's own storage test suite.
    struct Builder;

    /// Keeps the temp dir (and the storage thread's owner) alive for one suite test.
    struct Guard {
        _dir: tempfile::TempDir,
        _storage: Storage,
    }

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, Guard> for Builder {
        async fn build(&self) -> Result<(Guard, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
            let (storage, log, sm, _) = open(dir.path(), 1)
                .await
                .map_err(|e| StorageIOError::write(&e))?;
            Ok((
                Guard {
                    _dir: dir,
                    _storage: storage,
                },
                log,
                sm,
            ))
        }
    }

    #[test]
    fn openraft_storage_suite_passes() {
        Suite::test_all(Builder).unwrap();
    }

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn normal(term: u64, index: u64, node: &str) -> Entry {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(Command::Register(Registration {
                node: node.into(),
                address: "10.0.0.1".into(),
                ..Registration::default()
            })),
        }
    }

    fn membership(term: u64, index: u64) -> Entry {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1])], None)),
        }
    }

    async fn append(log: &mut LogStore, entries: Vec<Entry>) {
        use openraft::storage::RaftLogStorageExt;
        log.blocking_append(entries).await.unwrap();
    }

    const T: std::time::Duration = std::time::Duration::from_secs(10);

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[test]
    fn durable_holds_back_only_entries_reported_early() {
        let mut d = Durable::default();
        assert!(!d.pending(log_id(1, 1)), "nothing reported early");
        assert_eq!(d.clamp_commit(Some(log_id(1, 4))), Some(log_id(1, 4)));
        d.through = Some(log_id(1, 3));
        d.early = Some(log_id(1, 6));
        assert!(!d.pending(log_id(1, 3)), "synced");
        assert!(d.pending(log_id(1, 4)) && d.pending(log_id(1, 6)));
        assert!(
            !d.pending(log_id(1, 7)),
            "not reported early: openraft waits for its sync"
        );
        assert_eq!(d.clamp_commit(Some(log_id(1, 5))), Some(log_id(1, 3)));
        assert_eq!(d.clamp_commit(Some(log_id(1, 2))), Some(log_id(1, 2)));
        d.through = Some(log_id(1, 6));
        assert!(!d.pending(log_id(1, 6)));
        assert_eq!(d.clamp_commit(Some(log_id(1, 6))), Some(log_id(1, 6)));
    }

    #[tokio::test]
    async fn a_leaders_own_appends_are_reported_early_and_applied_only_once_synced() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, mut log, mut sm, shared) = open(dir.path(), 1).await.unwrap();
        // Following node 2: reported after the sync, never pending.
        log.save_vote(&Vote::new_committed(1, 2)).await.unwrap();
        let theirs = LogId::new(CommittedLeaderId::new(1, 2), 1);
        append(
            &mut log,
            vec![Entry {
                log_id: theirs,
                payload: EntryPayload::Blank,
            }],
        )
        .await;
        assert_eq!(
            *shared.durable.borrow(),
            Durable {
                through: Some(theirs),
                ..Durable::default()
            }
        );
        // Leading term 2 (this is node 1): pending from the append until the sync reports.
        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        append(&mut log, (2..=4).map(|i| normal(2, i, "n")).collect()).await;
        assert_eq!(shared.durable.borrow().early, Some(log_id(2, 4)));
        let mut rx = shared.durable.subscribe();
        tokio::time::timeout(T, rx.wait_for(|d| d.through == Some(log_id(2, 4))))
            .await
            .unwrap()
            .unwrap();

        // A pending entry is not applied until its sync completes.
        shared.durable.send_modify(|d| d.early = Some(log_id(2, 5)));
        let mut apply = tokio::spawn(async move {
            let result = sm.apply(vec![normal(2, 5, "late")]).await.map(|_| ());
            (sm, result)
        });
        let early = tokio::time::timeout(std::time::Duration::from_millis(200), &mut apply).await;
        assert!(early.is_err(), "applied before its sync");
        assert_eq!(shared.state.read().last_applied, None);
        record_sync(&shared, log_id(2, 5), true);
        let (mut sm, result) = tokio::time::timeout(T, apply).await.unwrap().unwrap();
        result.unwrap();
        assert_eq!(shared.state.read().last_applied, Some(log_id(2, 5)));

        // A failed sync fails the apply (openraft stops) rather than hanging it.
        shared.durable.send_modify(|d| d.early = Some(log_id(2, 6)));
        record_sync(&shared, log_id(2, 6), false);
        assert!(sm.apply(vec![normal(2, 6, "lost")]).await.is_err());
        assert_eq!(shared.state.read().last_applied, Some(log_id(2, 5)));

        // A truncation leaves nothing pending past the new end.
        log.truncate(log_id(2, 3)).await.unwrap();
        assert_eq!(shared.durable.borrow().early, Some(log_id(2, 2)));
        assert_eq!(shared.durable.borrow().through, Some(log_id(2, 2)));
        assert!(storage.close(T).await);
    }

    #[test]
    fn log_cache_serves_what_it_holds_and_nothing_older() {
        let mut c = LogCache::default();
        assert!(c.get(1, 5).is_none(), "empty: ask the store");
        c.append((1..=5).map(|i| normal(1, i, "n")).collect());
        assert_eq!(indexes(&c.get(2, 4).unwrap()), [2, 3]);
        assert_eq!(indexes(&c.get(4, u64::MAX).unwrap()), [4, 5]);
        assert!(c.get(6, 9).unwrap().is_empty(), "past the last entry");
        c.truncate(4);
        assert_eq!(indexes(&c.get(1, u64::MAX).unwrap()), [1, 2, 3]);
        c.purge(1);
        assert!(c.get(1, 3).is_none(), "purged: ask the store");
        // A gap (after a snapshot install) starts over at the new entries.
        c.append(vec![normal(2, 10, "n")]);
        assert_eq!(c.first_index(), Some(10));
        assert!(c.get(3, 11).is_none());
        // Bounded: the oldest go first.
        let more = u64::try_from(LOG_CACHE).unwrap();
        c.append((11..11 + more).map(|i| normal(2, i, "n")).collect());
        assert_eq!(c.entries.len(), LOG_CACHE);
        assert_eq!(c.first_index(), Some(11));
    }

    #[tokio::test]
    async fn log_vote_committed_and_purge_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, mut log, _sm, _) = open(dir.path(), 1).await.unwrap();
        append(
            &mut log,
            (1..=6).map(|i| normal(1, i, &format!("n{i}"))).collect(),
        )
        .await;
        let vote = Vote::new_committed(2, 1);
        log.save_vote(&vote).await.unwrap();
        log.save_committed(Some(log_id(1, 4))).await.unwrap();
        log.truncate(log_id(1, 6)).await.unwrap();
        log.purge(log_id(1, 2)).await.unwrap();
        drop(log);
        assert!(storage.close(T).await);

        let (storage, mut log, _sm, shared) = open(dir.path(), 1).await.unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 4)));
        assert_eq!(*shared.committed_index.lock(), Some(4));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
        assert_eq!(state.last_log_id, Some(log_id(1, 5)));
        let entries = log.try_get_log_entries(0..100).await.unwrap();
        let idx: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
        assert_eq!(idx, [3, 4, 5]);
        drop(log);
        assert!(storage.close(T).await);
    }

    #[tokio::test]
    async fn apply_updates_catalog_and_watches() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _log, mut sm, shared) = open(dir.path(), 1).await.unwrap();
        let results = sm
            .apply(vec![
                membership(1, 1),
                normal(1, 2, "db1"),
                normal(1, 3, ""),
            ])
            .await
            .unwrap();
        assert_eq!(results.len(), 3, "one result per entry");
        assert!(results[0].is_ok() && results[1].is_ok());
        assert!(!results[2].is_ok(), "invalid command is an error result");
        let (applied, mem) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 3)));
        assert_eq!(mem.log_id(), &Some(log_id(1, 1)));
        assert_eq!(
            shared
                .state
                .read()
                .catalog
                .node("db1")
                .unwrap()
                .create_index,
            2
        );
        assert_eq!(shared.watches.current(&crate::catalog::Table::ALL), 2);
        drop(sm);
        assert!(storage.close(T).await);
    }

    #[tokio::test]
    async fn snapshot_build_reopen_and_install_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _log, mut sm, _) = open(dir.path(), 1).await.unwrap();
        sm.apply(vec![
            membership(1, 1),
            normal(1, 2, "db1"),
            normal(1, 3, "db2"),
        ])
        .await
        .unwrap();
        let built = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(built.meta.last_log_id, Some(log_id(1, 3)));
        drop(sm);
        assert!(storage.close(T).await);

        // Reopen: the state machine comes back from the durable snapshot.
        let (storage, _log, mut sm, shared) = open(dir.path(), 1).await.unwrap();
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 3)));
        assert!(shared.state.read().catalog.node("db2").is_some());
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, built.meta);

        // Install it on a fresh store.
        let dir2 = tempfile::tempdir().unwrap();
        let (storage2, _log2, mut sm2, shared2) = open(dir2.path(), 1).await.unwrap();
        let mut rx = shared2.watches.nodes_receiver_for_test();
        sm2.install_snapshot(&current.meta, current.snapshot)
            .await
            .unwrap();
        assert_eq!(sm2.applied_state().await.unwrap().0, Some(log_id(1, 3)));
        assert_eq!(*rx.borrow_and_update(), 3);
        assert_eq!(
            shared2.state.read().catalog,
            shared.state.read().catalog,
            "installed catalog equals the source"
        );
        assert_eq!(
            sm2.get_current_snapshot().await.unwrap().unwrap().meta,
            built.meta
        );
        drop((sm, sm2));
        assert!(storage.close(T).await);
        assert!(storage2.close(T).await);
    }

    #[tokio::test]
    async fn snapshot_from_newer_build_fails_to_open_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _log, _sm, _) = open(dir.path(), 1).await.unwrap();
        let meta = SnapshotMeta::default();
        storage
            .handle()
            .save_snapshot(encode(&meta).unwrap(), br#"{"v":99}"#.to_vec())
            .await
            .unwrap();
        assert!(storage.close(T).await);
        let err = open(dir.path(), 1).await.err().unwrap();
        assert!(err.to_string().contains("version 99"), "{err}");
        assert!(err.to_string().contains("raft.redb"), "{err}");
    }
}
