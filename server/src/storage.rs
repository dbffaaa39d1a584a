//! Durable storage, owned by one dedicated thread: the Raft log in append-only segment
//! files (`<dir>/raft-log/`, [`log`]) and one redb file (`<dir>/raft.redb`) with the Raft
//! metadata (`meta`: vote, committed, last purged and its index, plus the file's magic and
//! format version) and the latest state-machine snapshot (`snapshot`). This module knows
//! bytes, not openraft: the `raft` module encodes and decodes.
//!
//! Format 1 kept the log in redb as well (table `log`); such a store is moved to the
//! segment files at open (the entries are written and synced, then one redb transaction
//! empties the table and records format 2, so an interrupted move is simply redone).
//!
//! Invariants:
//! - redb is synchronous, so every access runs on the storage thread; callers talk to it over a
//!   bounded channel and never block a tokio worker;
//! - requests are handled strictly in arrival order, so a read sent after an append returns sees
//!   the append (openraft's "readable on return"), and a vote can never overtake a log write;
//! - consecutive appends are group-committed: one write and one `fdatasync` of the log for all
//!   of them; their completion callbacks run only after that;
//! - votes, truncations, purges and snapshots are durable before their reply; the committed
//!   pointer is left in a slot the thread reads after its next group commit (saving it wakes
//!   nothing) and written to redb at most once per [`COMMITTED_EVERY`], only once the log
//!   holds the entry it names (so that entry is synced), and at close: losing it only means
//!   replaying less at start;
//! - a purge records its index in redb before it removes segments, so the log never serves a
//!   purged entry, even after a crash in between;
//! - a corrupted, foreign or newer-format file is refused at open with an error naming the
//!   path; it is never wiped, and a panic inside redb while opening becomes an error.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, ReadableDatabase, TableDefinition, TableHandle};
use tokio::sync::{mpsc, oneshot};

/// Name of the store file inside the directory the caller passes.
pub const FILE_NAME: &str = "raft.redb";
/// Format version written into new files; files with a higher version are refused.
/// 1: log in redb; 2: log in segment files.
pub const FORMAT_VERSION: u64 = 2;
const MAGIC: &[u8] = b"muster-raft-store";

const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");
const LOG: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("log");
const SNAPSHOT: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("snapshot");

const KEY_MAGIC: &str = "magic";
const KEY_FORMAT: &str = "format";
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
const KEY_PURGED_INDEX: &str = "purged_index";
const KEY_SNAPSHOT_META: &str = "meta";
const KEY_SNAPSHOT_DATA: &str = "data";

/// Queue depth between the async world and the storage thread.
const QUEUE: usize = 1024;
/// Most requests folded into one group commit.
const MAX_BATCH: usize = 256;
/// redb page cache (metadata and the snapshot only).
const CACHE_BYTES: usize = 4 * 1024 * 1024;
/// Least time between two writes of the committed pointer.
pub const COMMITTED_EVERY: Duration = Duration::from_secs(1);

pub mod log;
use log::{Log, LogError};

/// A storage failure. Open errors name the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file or directory cannot be created or read.
    #[error("cannot open the raft store {path}: {source}")]
    Io {
        /// The store file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is damaged.
    #[error("the raft store {path} is corrupted: {reason}")]
    Corrupted {
        /// The store file.
        path: PathBuf,
        /// What redb found.
        reason: String,
    },
    /// The file is a database, but not ours.
    #[error("{path} is not a muster raft store ({reason})")]
    Foreign {
        /// The store file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file was written by a newer build.
    #[error(
        "the raft store {path} has format version {found}; this build supports up to {FORMAT_VERSION}"
    )]
    NewerFormat {
        /// The store file.
        path: PathBuf,
        /// Its format version.
        found: u64,
    },
    /// Another server (or process) has the file open.
    #[error("the raft store {path} is already open by another server or process")]
    AlreadyOpen {
        /// The store file.
        path: PathBuf,
    },
    /// A database operation failed after open.
    #[error("raft store operation failed: {0}")]
    Db(String),
    /// The storage thread has stopped.
    #[error("the raft store is closed")]
    Closed,
}

impl StoreError {
    fn db(e: impl std::fmt::Display) -> Self {
        StoreError::Db(e.to_string())
    }
}

/// A stored snapshot: (encoded meta, data).
pub type SnapshotParts = (Vec<u8>, Vec<u8>);

/// What the file held when it was opened.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Encoded vote.
    pub vote: Option<Vec<u8>>,
    /// Encoded committed log id.
    pub committed: Option<Vec<u8>>,
    /// Encoded last purged log id.
    pub last_purged: Option<Vec<u8>>,
    /// The last log entry, encoded.
    pub last_entry: Option<Vec<u8>>,
    /// The latest snapshot: (encoded meta, data).
    pub snapshot: Option<SnapshotParts>,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;
type AppendDone = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

enum Request {
    Append {
        entries: Vec<(u64, Vec<u8>)>,
        done: AppendDone,
    },
    SaveVote {
        value: Vec<u8>,
        reply: Reply<()>,
    },
    Truncate {
        from: u64,
        reply: Reply<Option<Vec<u8>>>,
    },
    Purge {
        upto: u64,
        last_purged: Vec<u8>,
        reply: Reply<()>,
    },
    ReadLogs {
        start: u64,
        end: u64,
        reply: Reply<Vec<(u64, Vec<u8>)>>,
    },
    SaveSnapshot {
        meta: Vec<u8>,
        data: Vec<u8>,
        reply: Reply<()>,
    },
    ReadSnapshot {
        reply: Reply<Option<SnapshotParts>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

impl Request {
    fn batchable(&self) -> bool {
        matches!(self, Request::Append { .. })
    }
}

/// The latest committed pointer not yet written: the index it names and its encoding.
type CommittedSlot = Arc<parking_lot::Mutex<Option<(u64, Vec<u8>)>>>;

/// A cheap, cloneable handle to the storage thread.
#[derive(Clone)]
pub struct StorageHandle {
    tx: mpsc::Sender<Request>,
    committed: CommittedSlot,
}

/// The open store: its handle plus the thread, which [`Storage::close`] joins.
pub struct Storage {
    handle: StorageHandle,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
    commits: Arc<AtomicU64>,
}

impl Storage {
    /// Opens (or creates) `<dir>/raft.redb` on a new storage thread.
    pub async fn open(dir: &Path) -> Result<(Storage, Recovered), StoreError> {
        let path = dir.join(FILE_NAME);
        let (tx, rx) = mpsc::channel(QUEUE);
        let (opened_tx, opened_rx) = oneshot::channel();
        let thread_path = path.clone();
        let commits = Arc::new(AtomicU64::new(0));
        let thread_commits = commits.clone();
        let committed = CommittedSlot::default();
        let thread_committed = committed.clone();
        let thread = std::thread::Builder::new()
            .name("muster-storage".into())
            .spawn(move || {
                // A damaged file can trip redb's internal assertions: report, do not unwind.
                let opened = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    open_store(&thread_path, thread_committed)
                }))
                .unwrap_or_else(|panic| {
                    Err(StoreError::Corrupted {
                        path: thread_path.clone(),
                        reason: format!("redb panicked while opening: {}", panic_text(&panic)),
                    })
                });
                match opened {
                    Ok((store, recovered)) => {
                        let _ = opened_tx.send(Ok(recovered));
                        run(store, rx, &thread_commits);
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                    }
                }
            })
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        let error = match opened_rx.await {
            Ok(Ok(recovered)) => {
                let storage = Storage {
                    handle: StorageHandle { tx, committed },
                    thread: Some(thread),
                    path,
                    commits,
                };
                return Ok((storage, recovered));
            }
            Ok(Err(e)) => e,
            Err(_) => StoreError::Closed,
        };
        // The thread is exiting; join it off the async workers.
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        Err(error)
    }

    /// A handle for issuing requests.
    pub fn handle(&self) -> StorageHandle {
        self.handle.clone()
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Group commits so far: each is one log write and `fdatasync` for a whole group of
    /// queued appends.
    pub fn group_commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Stops the thread after the requests queued before this call, closes the file and joins
    /// the thread, waiting at most `timeout`. Returns whether the thread was joined.
    pub async fn close(mut self, timeout: Duration) -> bool {
        let (reply, done) = oneshot::channel();
        if self
            .handle
            .tx
            .send(Request::Shutdown { reply })
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(timeout, done).await;
        }
        let Some(thread) = self.thread.take() else {
            return true;
        };
        let joined = tokio::task::spawn_blocking(move || thread.join());
        matches!(tokio::time::timeout(timeout, joined).await, Ok(Ok(Ok(()))))
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

impl StorageHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues entries for the next group commit and returns once they are queued (and so
    /// visible to every later request); `done` runs on the storage thread after the commit is
    /// durable, or with the error.
    pub async fn append(
        &self,
        entries: Vec<(u64, Vec<u8>)>,
        done: impl FnOnce(Result<(), StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        self.tx
            .send(Request::Append {
                entries,
                done: Box::new(done),
            })
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Leaves the committed log id (naming entry `index`) for the storage thread and returns
    /// at once, without waking it: it is written after a later group commit, without an
    /// fsync of its own. Losing it only means replaying less at start, and waiting for it
    /// would stall openraft's core between two appends.
    pub fn save_committed(&self, index: u64, value: Vec<u8>) -> Result<(), StoreError> {
        if self.tx.is_closed() {
            return Err(StoreError::Closed);
        }
        *self.committed.lock() = Some((index, value));
        Ok(())
    }

    /// Saves the vote durably.
    pub async fn save_vote(&self, value: Vec<u8>) -> Result<(), StoreError> {
        self.call(|reply| Request::SaveVote { value, reply }).await
    }

    /// Durably deletes entries `[from, ∞)`; returns the new last entry, if any.
    pub async fn truncate(&self, from: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.call(|reply| Request::Truncate { from, reply }).await
    }

    /// Durably deletes entries `[0, upto]` and records `last_purged` in the same transaction.
    pub async fn purge(&self, upto: u64, last_purged: Vec<u8>) -> Result<(), StoreError> {
        self.call(|reply| Request::Purge {
            upto,
            last_purged,
            reply,
        })
        .await
    }

    /// Reads entries in `[start, end)`, in index order.
    pub async fn read_logs(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.call(|reply| Request::ReadLogs { start, end, reply })
            .await
    }

    /// Durably replaces the stored snapshot.
    pub async fn save_snapshot(&self, meta: Vec<u8>, data: Vec<u8>) -> Result<(), StoreError> {
        self.call(|reply| Request::SaveSnapshot { meta, data, reply })
            .await
    }

    /// Reads the stored snapshot.
    pub async fn read_snapshot(&self) -> Result<Option<SnapshotParts>, StoreError> {
        self.call(|reply| Request::ReadSnapshot { reply }).await
    }
}

// --- the storage thread ------------------------------------------------------------------------

fn open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::AlreadyOpen {
            path: path.to_path_buf(),
        },
        // redb reports "Not a redb database" as invalid data.
        redb::DatabaseError::Storage(redb::StorageError::Io(source))
            if source.kind() == std::io::ErrorKind::InvalidData =>
        {
            StoreError::Foreign {
                path: path.to_path_buf(),
                reason: source.to_string(),
            }
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(source)) => StoreError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => StoreError::Corrupted {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

/// What the storage thread owns.
struct Store {
    db: Database,
    log: Log,
    /// The committed pointer not yet written, and when it was last written.
    committed: CommittedSlot,
    committed_at: Option<std::time::Instant>,
}

/// Opens the store; `committed` is the slot shared with the handles.
fn open_store(path: &Path, committed: CommittedSlot) -> Result<(Store, Recovered), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        // Verify every page checksum at open: a damaged file becomes an error, not a panic.
        .set_check_integrity_on_open(true)
        .create(path)
        .map_err(|e| open_error(path, e))?;
    let corrupted = |e: redb::Error| StoreError::Corrupted {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let tables: Vec<String> = {
        let read = db.begin_read().map_err(|e| corrupted(e.into()))?;
        read.list_tables()
            .map_err(|e| corrupted(e.into()))?
            .map(|t| t.name().to_string())
            .collect()
    };
    if tables.is_empty() {
        init_db(&db).map_err(corrupted)?;
    } else if !tables.iter().any(|t| t == META.name()) {
        return Err(StoreError::Foreign {
            path: path.to_path_buf(),
            reason: format!("unexpected tables {tables:?}"),
        });
    }
    let meta = recover(&db, path).map_err(|e| match e {
        RecoverError::Db(e) => corrupted(e),
        RecoverError::Store(e) => e,
    })?;
    let log_dir = dir.join(log::DIR_NAME);
    if meta.format == 1 {
        move_log_out_of_redb(&db, path, &log_dir)?;
    }
    let log = Log::open(&log_dir, meta.purged_index).map_err(open_log_error)?;
    let mut recovered = meta.recovered;
    recovered.last_entry = log.last_entry().map_err(open_log_error)?;
    let store = Store {
        db,
        log,
        committed,
        committed_at: None,
    };
    Ok((store, recovered))
}

fn open_log_error(e: LogError) -> StoreError {
    match e {
        LogError::Io { path, source } => StoreError::Io { path, source },
        LogError::Corrupted {
            path,
            offset,
            reason,
        } => StoreError::Corrupted {
            path,
            reason: format!("at byte {offset}: {reason}"),
        },
        other => StoreError::db(other),
    }
}

/// Format 1 → 2: the entries of redb's `log` table are written to fresh segment files and
/// synced; then one transaction drops the table and records format 2.
fn move_log_out_of_redb(db: &Database, path: &Path, log_dir: &Path) -> Result<(), StoreError> {
    let corrupted = |e: redb::Error| StoreError::Corrupted {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let entries: Vec<(u64, Vec<u8>)> = (|| -> Result<_, redb::Error> {
        let read = db.begin_read()?;
        let mut out = Vec::new();
        match read.open_table(LOG) {
            Ok(table) => {
                for item in table.range(0..)? {
                    let (k, v) = item?;
                    out.push((k.value(), v.value().to_vec()));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(out)
    })()
    .map_err(corrupted)?;
    // Segments left by an interrupted move are written again from the table.
    if log_dir.exists() {
        std::fs::remove_dir_all(log_dir).map_err(|source| StoreError::Io {
            path: log_dir.to_path_buf(),
            source,
        })?;
    }
    let mut log = Log::open(log_dir, None).map_err(open_log_error)?;
    log.append(entries.iter().map(|(i, v)| (*i, v.as_slice())))
        .map_err(|e| StoreError::Corrupted {
            path: path.to_path_buf(),
            reason: format!("cannot move the log to {}: {e}", log_dir.display()),
        })?;
    drop(log);
    (|| -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        txn.delete_table(LOG)?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(KEY_FORMAT, FORMAT_VERSION.to_be_bytes().as_slice())?;
        }
        txn.commit()?;
        Ok(())
    })()
    .map_err(corrupted)?;
    tracing::info!(
        entries = entries.len(),
        dir = %log_dir.display(),
        "moved the raft log out of the redb store (format 1 to 2)"
    );
    Ok(())
}

fn init_db(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        meta.insert(KEY_MAGIC, MAGIC)?;
        meta.insert(KEY_FORMAT, FORMAT_VERSION.to_be_bytes().as_slice())?;
        txn.open_table(SNAPSHOT)?;
    }
    txn.commit()?;
    Ok(())
}

enum RecoverError {
    Db(redb::Error),
    Store(StoreError),
}

impl<E: Into<redb::Error>> From<E> for RecoverError {
    fn from(e: E) -> Self {
        RecoverError::Db(e.into())
    }
}

/// What the redb file holds, before the log is opened (`recovered.last_entry` comes from the
/// log).
struct RecoveredMeta {
    recovered: Recovered,
    format: u64,
    purged_index: Option<u64>,
}

fn be_u64(bytes: Option<Vec<u8>>) -> Option<u64> {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(u64::from_be_bytes)
}

fn recover(db: &Database, path: &Path) -> Result<RecoveredMeta, RecoverError> {
    let read = db.begin_read()?;
    let meta = read.open_table(META)?;
    let get = |k: &str| -> Result<Option<Vec<u8>>, redb::Error> {
        Ok(meta.get(k)?.map(|v| v.value().to_vec()))
    };
    if get(KEY_MAGIC)?.as_deref() != Some(MAGIC) {
        return Err(RecoverError::Store(StoreError::Foreign {
            path: path.to_path_buf(),
            reason: "missing or wrong magic".into(),
        }));
    }
    let format = be_u64(get(KEY_FORMAT)?).unwrap_or(0);
    if format > FORMAT_VERSION {
        return Err(RecoverError::Store(StoreError::NewerFormat {
            path: path.to_path_buf(),
            found: format,
        }));
    }
    if format == 0 {
        return Err(RecoverError::Store(StoreError::Foreign {
            path: path.to_path_buf(),
            reason: "missing format version".into(),
        }));
    }
    let snap = read.open_table(SNAPSHOT)?;
    let snapshot = match (snap.get(KEY_SNAPSHOT_META)?, snap.get(KEY_SNAPSHOT_DATA)?) {
        (Some(m), Some(d)) => Some((m.value().to_vec(), d.value().to_vec())),
        _ => None,
    };
    Ok(RecoveredMeta {
        recovered: Recovered {
            vote: get(KEY_VOTE)?,
            committed: get(KEY_COMMITTED)?,
            last_purged: get(KEY_LAST_PURGED)?,
            last_entry: None,
            snapshot,
        },
        format,
        purged_index: be_u64(get(KEY_PURGED_INDEX)?),
    })
}

/// The storage thread's loop: strictly in order, group-committing runs of appends.
fn run(mut store: Store, mut rx: mpsc::Receiver<Request>, commits: &AtomicU64) {
    let mut pending: Option<Request> = None;
    let mut shutdown_reply = None;
    loop {
        let req = match pending.take() {
            Some(r) => r,
            None => match rx.blocking_recv() {
                Some(r) => r,
                None => break,
            },
        };
        if let Request::Shutdown { reply } = req {
            shutdown_reply = Some(reply);
            break;
        }
        if req.batchable() {
            let mut batch = vec![req];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) if r.batchable() => batch.push(r),
                    Ok(r) => {
                        pending = Some(r);
                        break;
                    }
                    Err(_) => break,
                }
            }
            store.write_batch(batch);
            commits.fetch_add(1, Ordering::Relaxed);
        } else {
            store.handle_single(req);
        }
    }
    // Refuse what is still queued, then close the files before acknowledging the shutdown.
    rx.close();
    drop(rx);
    store.write_committed(true);
    drop(store);
    if let Some(reply) = shutdown_reply {
        let _ = reply.send(());
    }
}

impl Store {
    fn write_batch(&mut self, batch: Vec<Request>) {
        let mut appends = Vec::new();
        for req in batch {
            if let Request::Append { entries, done } = req {
                appends.push((entries, done));
            }
        }
        if !appends.is_empty() {
            let result = self.log.append(
                appends
                    .iter()
                    .flat_map(|(entries, _)| entries.iter().map(|(i, v)| (*i, v.as_slice()))),
            );
            let error = result.err().map(|e| e.to_string());
            for (_, done) in appends {
                done(match &error {
                    None => Ok(()),
                    Some(e) => Err(StoreError::Db(e.clone())),
                });
            }
        }
        self.write_committed(false);
    }

    /// Writes the waiting committed pointer if [`COMMITTED_EVERY`] has passed (or `now`) and
    /// the log holds the entry it names: every append is synced before this runs, so that
    /// entry and all before it are on disk. Nothing more is written once the log failed.
    fn write_committed(&mut self, now: bool) {
        if self.log.failed() {
            return;
        }
        let due = now
            || self
                .committed_at
                .is_none_or(|at| at.elapsed() >= COMMITTED_EVERY);
        if !due {
            return;
        }
        let value = {
            let mut slot = self.committed.lock();
            match slot.take_if(|(index, _)| self.log.reaches(*index)) {
                Some((_, value)) => value,
                None => return,
            }
        };
        if let Err(e) = put_meta(&self.db, KEY_COMMITTED, &value) {
            // Losing it only means replaying less at start.
            tracing::warn!(error = %e, "cannot save the raft committed pointer");
        }
        self.committed_at = Some(std::time::Instant::now());
    }

    fn handle_single(&mut self, req: Request) {
        match req {
            Request::SaveVote { value, reply } => {
                let _ = reply.send(put_meta(&self.db, KEY_VOTE, &value));
            }
            Request::Truncate { from, reply } => {
                let _ = reply.send(self.log.truncate(from).map_err(StoreError::db));
            }
            Request::Purge {
                upto,
                last_purged,
                reply,
            } => {
                let _ = reply.send(self.purge(upto, &last_purged));
            }
            Request::ReadLogs { start, end, reply } => {
                let _ = reply.send(self.log.read(start, end).map_err(StoreError::db));
            }
            Request::SaveSnapshot { meta, data, reply } => {
                let _ = reply.send(save_snapshot(&self.db, &meta, &data));
            }
            Request::ReadSnapshot { reply } => {
                let _ = reply.send(read_snapshot(&self.db));
            }
            // Batched or handled by the loop.
            Request::Append { .. } | Request::Shutdown { .. } => {}
        }
    }

    /// Records the purge durably, then drops the entries from the log.
    fn purge(&mut self, upto: u64, last_purged: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::db)?;
        {
            let mut meta = txn.open_table(META).map_err(StoreError::db)?;
            meta.insert(KEY_LAST_PURGED, last_purged)
                .map_err(StoreError::db)?;
            meta.insert(KEY_PURGED_INDEX, upto.to_be_bytes().as_slice())
                .map_err(StoreError::db)?;
        }
        txn.commit().map_err(StoreError::db)?;
        self.log.purge(upto).map_err(StoreError::db)
    }
}

fn put_meta(db: &Database, key: &str, value: &[u8]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(StoreError::db)?;
    {
        let mut meta = txn.open_table(META).map_err(StoreError::db)?;
        meta.insert(key, value).map_err(StoreError::db)?;
    }
    txn.commit().map_err(StoreError::db)
}

fn save_snapshot(db: &Database, meta: &[u8], data: &[u8]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(StoreError::db)?;
    {
        let mut snap = txn.open_table(SNAPSHOT).map_err(StoreError::db)?;
        snap.insert(KEY_SNAPSHOT_META, meta)
            .map_err(StoreError::db)?;
        snap.insert(KEY_SNAPSHOT_DATA, data)
            .map_err(StoreError::db)?;
    }
    txn.commit().map_err(StoreError::db)
}

fn read_snapshot(db: &Database) -> Result<Option<SnapshotParts>, StoreError> {
    let read = db.begin_read().map_err(StoreError::db)?;
    let snap = read.open_table(SNAPSHOT).map_err(StoreError::db)?;
    let meta = snap.get(KEY_SNAPSHOT_META).map_err(StoreError::db)?;
    let data = snap.get(KEY_SNAPSHOT_DATA).map_err(StoreError::db)?;
    Ok(match (meta, data) {
        (Some(m), Some(d)) => Some((m.value().to_vec(), d.value().to_vec())),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    async fn append_durably(h: &StorageHandle, entries: Vec<(u64, Vec<u8>)>) {
        let (tx, rx) = oneshot::channel();
        h.append(entries, move |r| {
            let _ = tx.send(r);
        })
        .await
        .unwrap();
        rx.await.unwrap().unwrap();
    }

    fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
        range.map(|i| (i, format!("e{i}").into_bytes())).collect()
    }

    #[tokio::test]
    async fn the_committed_pointer_waits_for_the_entry_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Storage::open(dir.path()).await.unwrap();
        let h = store.handle();
        append_durably(&h, entries(1..=3)).await;
        // Names entry 5 while the log ends at 4: not written, not even at close.
        h.save_committed(5, b"c-5".to_vec()).unwrap();
        append_durably(&h, entries(4..=4)).await;
        assert!(store.close(T).await);
        let (store, rec) = Storage::open(dir.path()).await.unwrap();
        assert_eq!(rec.committed, None);
        // Once the log holds it, the next group commit writes it.
        let h = store.handle();
        h.save_committed(5, b"c-5".to_vec()).unwrap();
        append_durably(&h, entries(5..=5)).await;
        assert!(store.close(T).await);
        assert!(h.save_committed(5, b"c-5".to_vec()).is_err(), "closed");
        let (store, rec) = Storage::open(dir.path()).await.unwrap();
        assert_eq!(rec.committed.as_deref(), Some(b"c-5".as_slice()));
        assert!(store.close(T).await);
    }

    #[tokio::test]
    async fn log_vote_and_committed_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, rec) = Storage::open(dir.path()).await.unwrap();
        assert!(rec.vote.is_none() && rec.last_entry.is_none() && rec.snapshot.is_none());
        let h = store.handle();
        append_durably(&h, entries(1..=5)).await;
        h.save_vote(b"vote-1".to_vec()).await.unwrap();
        h.save_committed(3, b"c-3".to_vec()).unwrap();
        // A durable append after the committed pointer persists it too.
        append_durably(&h, entries(6..=6)).await;
        assert_eq!(h.read_logs(2, 4).await.unwrap(), entries(2..=3));
        assert!(store.close(T).await);

        let (store, rec) = Storage::open(dir.path()).await.unwrap();
        assert_eq!(rec.vote.as_deref(), Some(b"vote-1".as_slice()));
        assert_eq!(rec.committed.as_deref(), Some(b"c-3".as_slice()));
        assert_eq!(rec.last_entry.as_deref(), Some(b"e6".as_slice()));
        assert_eq!(
            store.handle().read_logs(0, 100).await.unwrap(),
            entries(1..=6)
        );
        assert!(store.close(T).await);
    }

    #[tokio::test]
    async fn appends_are_readable_as_soon_as_queued() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Storage::open(dir.path()).await.unwrap();
        let h = store.handle();
        let (tx, rx) = oneshot::channel();
        h.append(entries(1..=3), move |r| {
            let _ = tx.send(r);
        })
        .await
        .unwrap();
        // Requests are served in order, so this read sees the queued append.
        assert_eq!(h.read_logs(1, 4).await.unwrap(), entries(1..=3));
        rx.await.unwrap().unwrap();
        assert!(store.close(T).await);
    }

    #[tokio::test]
    async fn many_concurrent_appends_all_complete_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Storage::open(dir.path()).await.unwrap();
        let h = store.handle();
        let mut waits = Vec::new();
        for i in 1..=200u64 {
            let (tx, rx) = oneshot::channel();
            h.append(vec![(i, vec![i as u8])], move |r| {
                let _ = tx.send(r);
            })
            .await
            .unwrap();
            waits.push(rx);
        }
        for rx in waits {
            rx.await.unwrap().unwrap();
        }
        // Appends queued while a commit was in flight shared the next one.
        assert!(
            store.group_commits() < 200,
            "{} commits",
            store.group_commits()
        );
        assert!(store.close(T).await);
        let (store, rec) = Storage::open(dir.path()).await.unwrap();
        assert_eq!(rec.last_entry, Some(vec![200u8]));
        assert_eq!(store.handle().read_logs(1, 201).await.unwrap().len(), 200);
        assert!(store.close(T).await);
    }

    #[tokio::test]
    async fn truncate_and_purge_leave_no_holes_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Storage::open(dir.path()).await.unwrap();
        let h = store.handle();
        append_durably(&h, entries(1..=10)).await;
        let last = h.truncate(8).await.unwrap();
        assert_eq!(last.as_deref(), Some(b"e7".as_slice()));
        h.purge(3, b"purged-3".to_vec()).await.unwrap();
        assert_eq!(h.read_logs(0, 100).await.unwrap(), entries(4..=7));
        assert!(store.close(T).await);

        let (store, rec) = Storage::open(dir.path()).await.unwrap();
        assert_eq!(rec.last_purged.as_deref(), Some(b"purged-3".as_slice()));
        assert_eq!(rec.last_entry.as_deref(), Some(b"e7".as_slice()));
        let h = store.handle();
        assert_eq!(h.read_logs(0, 100).await.unwrap(), entries(4..=7));
        // Truncating everything leaves an empty log.
        assert_eq!(h.truncate(4).await.unwrap(), None);
        assert!(h.read_logs(0, 100).await.unwrap().is_empty());
        assert!(store.close(T).await);
    }

    #[tokio::test]
    async fn snapshot_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Storage::open(dir.path()).await.unwrap();
        let h = store.handle();
        assert!(h.read_snapshot().await.unwrap().is_none());
        h.save_snapshot(b"m1".to_vec(), b"d1".to_vec())
            .await
            .unwrap();
        h.save_snapshot(b"m2".to_vec(), b"d2".to_vec())
            .await
            .unwrap();
        assert_eq!(
            h.read_snapshot().await.unwrap(),
            Some((b"m2".to_vec(), b"d2".to_vec()))
        );
        assert!(store.close(T).await);
        let (store, rec) = Storage::open(dir.path()).await.unwrap();
        assert_eq!(rec.snapshot, Some((b"m2".to_vec(), b"d2".to_vec())));
        assert!(store.close(T).await);
    }

    #[tokio::test]
    async fn closed_store_refuses_requests() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Storage::open(dir.path()).await.unwrap();
        let h = store.handle();
        assert!(store.close(T).await);
        assert!(matches!(
            h.save_vote(vec![1]).await,
            Err(StoreError::Closed)
        ));
    }

    #[tokio::test]
    async fn second_open_of_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Storage::open(dir.path()).await.unwrap();
        let err = Storage::open(dir.path()).await.err().unwrap();
        assert!(matches!(err, StoreError::AlreadyOpen { .. }), "{err}");
        assert!(err.to_string().contains(FILE_NAME));
        assert!(store.close(T).await);
    }

    #[tokio::test]
    async fn foreign_text_file_is_refused_with_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            b"hello, I am not a database\n".repeat(200),
        )
        .unwrap();
        let err = Storage::open(dir.path()).await.err().unwrap();
        assert!(err.to_string().contains(FILE_NAME), "{err}");
        assert!(
            matches!(
                err,
                StoreError::Corrupted { .. } | StoreError::Foreign { .. }
            ),
            "{err:?}"
        );
        // Never wiped.
        let kept = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        assert!(kept.starts_with(b"hello, I am not a database"));
    }

    #[tokio::test]
    async fn foreign_redb_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let other: TableDefinition<'_, &str, &str> = TableDefinition::new("other");
                let mut t = txn.open_table(other).unwrap();
                t.insert("k", "v").unwrap();
            }
            txn.commit().unwrap();
        }
        let err = Storage::open(dir.path()).await.err().unwrap();
        assert!(matches!(err, StoreError::Foreign { .. }), "{err:?}");
        assert!(err.to_string().contains("not a muster raft store"));
    }

    #[tokio::test]
    async fn newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Storage::open(dir.path()).await.unwrap();
        assert!(store.close(T).await);
        {
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert(KEY_FORMAT, 99u64.to_be_bytes().as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let err = Storage::open(dir.path()).await.err().unwrap();
        assert!(
            matches!(err, StoreError::NewerFormat { found: 99, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("format version 99"));
    }

    #[tokio::test]
    async fn corrupted_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Storage::open(dir.path()).await.unwrap();
        let h = store.handle();
        // The log lives in segment files now: a large snapshot gives redb pages to damage.
        h.save_snapshot(b"meta".to_vec(), vec![0xAB; 512 * 1024])
            .await
            .unwrap();
        assert!(store.close(T).await);
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 64 * 1024);
        // Scribble over most of the file after its header.
        for b in bytes[8192..].iter_mut() {
            *b ^= 0x5A;
        }
        std::fs::write(&path, &bytes).unwrap();
        let err = Storage::open(dir.path()).await.err().unwrap();
        assert!(err.to_string().contains(FILE_NAME), "{err}");
        assert!(
            matches!(
                err,
                StoreError::Corrupted { .. } | StoreError::Foreign { .. }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_damaged_log_segment_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Storage::open(dir.path()).await.unwrap();
        let h = store.handle();
        // Two segments, so the damage is not in the last one (a torn tail would be cut off).
        let big = vec![0xCD; (log::SEGMENT_BYTES / 2) as usize];
        for i in 1..=3u64 {
            append_durably(&h, vec![(i, big.clone())]).await;
        }
        assert!(store.close(T).await);
        let segment = dir
            .path()
            .join(log::DIR_NAME)
            .join(format!("{:020}.log", 1));
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes[4096] ^= 0xFF;
        std::fs::write(&segment, &bytes).unwrap();
        let err = Storage::open(dir.path()).await.err().unwrap();
        assert!(matches!(err, StoreError::Corrupted { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&segment.display().to_string()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_format_1_store_has_its_log_moved_to_segments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        {
            // What format 1 wrote: the log in redb's `log` table.
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert(KEY_MAGIC, MAGIC).unwrap();
                meta.insert(KEY_FORMAT, 1u64.to_be_bytes().as_slice())
                    .unwrap();
                meta.insert(KEY_VOTE, b"vote-7".as_slice()).unwrap();
                meta.insert(KEY_LAST_PURGED, b"purged-2".as_slice())
                    .unwrap();
                let mut log = txn.open_table(LOG).unwrap();
                for (i, v) in entries(3..=9) {
                    log.insert(i, v.as_slice()).unwrap();
                }
                txn.open_table(SNAPSHOT).unwrap();
            }
            txn.commit().unwrap();
        }
        // A segment left by an interrupted earlier move is replaced, not appended to.
        let log_dir = dir.path().join(log::DIR_NAME);
        std::fs::create_dir_all(&log_dir).unwrap();
        std::fs::write(log_dir.join(format!("{:020}.log", 3)), b"partial").unwrap();

        let (store, rec) = Storage::open(dir.path()).await.unwrap();
        assert_eq!(rec.vote.as_deref(), Some(b"vote-7".as_slice()));
        assert_eq!(rec.last_purged.as_deref(), Some(b"purged-2".as_slice()));
        assert_eq!(rec.last_entry.as_deref(), Some(b"e9".as_slice()));
        let h = store.handle();
        assert_eq!(h.read_logs(0, 100).await.unwrap(), entries(3..=9));
        append_durably(&h, entries(10..=10)).await;
        assert!(store.close(T).await);
        {
            let db = Database::open(&path).unwrap();
            let read = db.begin_read().unwrap();
            let tables: Vec<String> = read
                .list_tables()
                .unwrap()
                .map(|t| t.name().to_string())
                .collect();
            assert!(!tables.iter().any(|t| t == LOG.name()), "{tables:?}");
            let meta = read.open_table(META).unwrap();
            let format = meta.get(KEY_FORMAT).unwrap().unwrap().value().to_vec();
            assert_eq!(format, FORMAT_VERSION.to_be_bytes());
        }
        let (store, rec) = Storage::open(dir.path()).await.unwrap();
        assert_eq!(rec.last_entry.as_deref(), Some(b"e10".as_slice()));
        assert_eq!(
            store.handle().read_logs(0, 100).await.unwrap(),
            entries(3..=10)
        );
        assert!(store.close(T).await);
    }

    #[tokio::test]
    async fn a_purge_past_the_log_end_then_appends_after_it() {
        // A follower that installs a snapshot beyond its log purges past its last entry and
        // continues at the snapshot's next index.
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Storage::open(dir.path()).await.unwrap();
        let h = store.handle();
        append_durably(&h, entries(1..=3)).await;
        h.purge(20, b"purged-20".to_vec()).await.unwrap();
        assert!(h.read_logs(0, 100).await.unwrap().is_empty());
        append_durably(&h, entries(21..=22)).await;
        assert!(store.close(T).await);
        let (store, rec) = Storage::open(dir.path()).await.unwrap();
        assert_eq!(rec.last_purged.as_deref(), Some(b"purged-20".as_slice()));
        assert_eq!(rec.last_entry.as_deref(), Some(b"e22".as_slice()));
        assert_eq!(
            store.handle().read_logs(0, 100).await.unwrap(),
            entries(21..=22)
        );
        assert!(store.close(T).await);
    }
}
