//! The Raft log as append-only segment files (`<dir>/raft-log/<first index>.log`), owned by
//! the storage thread.
//!
//! A redb write transaction rewrote about a dozen pages and spent ~250 µs of CPU per group
//! commit on top of its fsync, on every server, for every write. Here a group commit is one
//! positional write of the new records and one `fdatasync`.
//!
//! File format: an 8-byte header ([`SEGMENT_MAGIC`]), then records back to back:
//! `len: u32 LE | crc: u32 LE | index: u64 LE | payload (len bytes)`, where `crc` is the
//! CRC-32C of the index bytes and the payload. A segment holds consecutive indexes starting
//! at the one in its name; a new segment starts past [`SEGMENT_BYTES`], or when the next index
//! does not follow (after a snapshot was installed past the end of the log).
//!
//! Invariants:
//! - an append is acknowledged only after its records are written and `fdatasync`ed (and the
//!   directory synced when the append created a segment);
//! - truncation removes records physically (`ftruncate`, file removal, then sync), so a
//!   truncated entry can never reappear at the next open;
//! - at open, a record that is cut short or fails its checksum ends the log only in the last
//!   segment (an append that was never acknowledged: the file is cut back there); anywhere
//!   else it is corruption, reported with the file and offset, and nothing is removed;
//! - entries at or below the purged index are never served; segments holding only such
//!   entries are removed (at purge, and again at open if a purge was interrupted);
//! - after a failed write or sync the log refuses every later write: what reached the disk
//!   is unknown, and openraft stops on the first storage error anyway.
//!
//! Segments are extended with zeros [`PREALLOCATE`] bytes at a time ahead of the records, so
//! an append's `fdatasync` overwrites allocated blocks and needs no journal commit for a
//! new file size (on this VM: 150 → 100 µs per append, and half the CPU). At open, zeros
//! after the last record are that room, not damage.
//!
//! Where the file system takes them, appends to the last segment are direct, synchronous
//! writes (`O_DIRECT` and `RWF_DSYNC`) over that room: one system call that returns once the
//! records are on disk, instead of a write into the page cache and an `fdatasync` that
//! writes it back and then flushes the disk cache. A direct write covers whole
//! [`DIRECT_ALIGN`] blocks, so it starts with the bytes of the last partial block (kept in
//! memory) and ends with zeros, which is what the page cache wrote back before. On the
//! bench cluster (three servers syncing on one virtual disk) this took ~5 % off the CPU of
//! a write and made sequential writes through a follower ~10 % faster (bench/README.md,
//! `bench/log-sync.py` for the disk alone). The zeros are written and synced through the
//! page cache before direct writes reach them, so the blocks are allocated and a direct
//! write changes no metadata. A file system that refuses `O_DIRECT` at open (tmpfs), or a
//! direct write with `EINVAL`, `EOPNOTSUPP` or `ENOSYS` (kernels before 4.7), gets the
//! buffered path, which is otherwise identical.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Directory of the segment files, inside the store directory.
pub const DIR_NAME: &str = "raft-log";
/// First bytes of every segment file.
const SEGMENT_MAGIC: &[u8; 8] = b"MULOG\x01\0\0";
/// A segment is closed once it grows past this.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Zeros written ahead of the records at a time.
const PREALLOCATE: u64 = 4 * 1024 * 1024;
/// Record header: length, checksum, index.
const HEADER: usize = 16;
/// No record is larger (a sanity bound for reading damaged lengths).
const MAX_RECORD: usize = 1 << 30;
/// Offsets, lengths and memory of direct writes are multiples of this: the page size, which
/// is a multiple of the logical block size of common disks (512 or 4096 bytes).
const DIRECT_ALIGN: usize = 4096;

/// A log failure, naming the file where there is one.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A segment is damaged where a crash cannot explain it.
    #[error("{path} is corrupted at byte {offset}: {reason}")]
    Corrupted {
        /// The segment.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Entries must follow each other.
    #[error("log append out of order: index {index} after {last:?}")]
    OutOfOrder {
        /// The index appended.
        index: u64,
        /// The last index held.
        last: Option<u64>,
    },
    /// An earlier write failed; the log takes no more.
    #[error("the raft log refuses writes after an earlier failure: {0}")]
    Failed(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One segment file and where each of its entries starts.
struct Segment {
    first: u64,
    path: PathBuf,
    file: File,
    /// Byte offset of each entry's record: entry `first + k` at `offsets[k]`.
    offsets: Vec<u64>,
    /// Bytes in use (the write position).
    end: u64,
    /// The file's length: records, then zeros up to here.
    allocated: u64,
    /// The direct-write side, on the last segment when the file system takes it.
    direct: Option<Direct>,
}

/// A segment's file opened for direct writes, and the bytes of its last partial block.
struct Direct {
    file: File,
    /// The bytes from the last [`DIRECT_ALIGN`] boundary at or before `end` up to `end`.
    tail: Vec<u8>,
    /// Tests: answer the next write as a file system that refuses it would.
    #[cfg(test)]
    refuse: bool,
}

impl Direct {
    /// Opens `path` for direct writes; `None` where the file system refuses them.
    fn open(path: &Path, tail: Vec<u8>) -> Result<Option<Direct>, LogError> {
        use std::os::unix::fs::OpenOptionsExt;
        let flags = rustix::fs::OFlags::DIRECT.bits();
        match OpenOptions::new()
            .write(true)
            .custom_flags(i32::try_from(flags).unwrap_or(0))
            .open(path)
        {
            Ok(file) => Ok(Some(Direct {
                file,
                tail,
                #[cfg(test)]
                refuse: false,
            })),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                tracing::info!(path = %path.display(), "raft log: no direct I/O here; appends use fdatasync");
                Ok(None)
            }
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// Writes `records` at `end` (where the tail ends) durably, as whole aligned blocks;
    /// `Ok(false)` when the file system refuses (nothing needs undoing: a retry through the
    /// page cache writes the same bytes at the same places).
    fn write(&mut self, path: &Path, end: u64, records: &[u8]) -> Result<bool, LogError> {
        #[cfg(test)]
        if self.refuse {
            return Ok(false);
        }
        let start = end - self.tail.len() as u64;
        let used = self.tail.len() + records.len();
        let len = used.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
        let mut raw = vec![0u8; len + DIRECT_ALIGN];
        let skip = raw.as_ptr().align_offset(DIRECT_ALIGN);
        let block = &mut raw[skip..skip + len];
        block[..self.tail.len()].copy_from_slice(&self.tail);
        block[self.tail.len()..used].copy_from_slice(records);
        let mut done = 0;
        while done < len {
            match rustix::io::pwritev2(
                &self.file,
                &[io::IoSlice::new(&block[done..])],
                start + done as u64,
                rustix::io::ReadWriteFlags::DSYNC,
            ) {
                Ok(0) => return Err(io_err(path)(io::ErrorKind::WriteZero.into())),
                Ok(n) => done += n,
                Err(rustix::io::Errno::INTR) => {}
                // Unaligned for this device, no RWF_DSYNC (before Linux 4.7) or no
                // pwritev2 at all (before 4.6): nothing was written.
                Err(
                    rustix::io::Errno::INVAL
                    | rustix::io::Errno::OPNOTSUPP
                    | rustix::io::Errno::NOSYS,
                ) if done == 0 => {
                    return Ok(false);
                }
                Err(e) => return Err(io_err(path)(e.into())),
            }
        }
        let keep = used % DIRECT_ALIGN;
        self.tail.clear();
        self.tail.extend_from_slice(&block[used - keep..used]);
        Ok(true)
    }
}

/// The bytes of `file` from the last [`DIRECT_ALIGN`] boundary at or before `end` to `end`.
fn read_tail(file: &File, path: &Path, end: u64) -> Result<Vec<u8>, LogError> {
    let keep = end % DIRECT_ALIGN as u64;
    let mut tail = vec![0u8; keep as usize];
    file.read_exact_at(&mut tail, end - keep)
        .map_err(io_err(path))?;
    Ok(tail)
}

impl Segment {
    fn last(&self) -> Option<u64> {
        (!self.offsets.is_empty()).then(|| self.first + self.offsets.len() as u64 - 1)
    }

    /// Byte range of entries `[from, to)` (indexes within this segment).
    fn span(&self, from: u64, to: u64) -> (u64, u64) {
        let k0 = (from - self.first) as usize;
        let k1 = (to - self.first) as usize;
        let start = self.offsets[k0];
        let stop = self.offsets.get(k1).copied().unwrap_or(self.end);
        (start, stop)
    }
}

/// The open log.
pub struct Log {
    dir: PathBuf,
    segments: Vec<Segment>,
    /// Entries at or below this index are purged.
    purged: Option<u64>,
    failed: Option<String>,
    /// Whether appends try direct writes (see the module docs).
    direct: bool,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.log"))
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Encodes one record.
fn put_record(out: &mut Vec<u8>, index: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let idx = index.to_le_bytes();
    let crc = crc32c::extend(crc32c::extend(0, &idx), payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&idx);
    out.extend_from_slice(payload);
}

/// Why a record cannot be read.
enum Bad {
    /// It runs past the end of the data.
    Short,
    /// It is all there but wrong; its claimed end (maybe past the data) and why.
    Wrong(usize, String),
}

/// A record decoded from `bytes` at `at`: (index, payload range, next offset), or why not.
fn take_record(bytes: &[u8], at: usize) -> Result<(u64, std::ops::Range<usize>, usize), Bad> {
    let head = bytes.get(at..at + HEADER).ok_or(Bad::Short)?;
    let word = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().unwrap_or_default());
    let len = word(0) as usize;
    let crc = word(4);
    let index = u64::from_le_bytes(head[8..16].try_into().unwrap_or_default());
    let body = at + HEADER..at + HEADER + len;
    if len > MAX_RECORD {
        return Err(Bad::Wrong(
            body.end,
            format!("record length {len} is impossible"),
        ));
    }
    let payload = bytes.get(body.clone()).ok_or(Bad::Short)?;
    if crc32c::extend(crc32c::extend(0, &head[8..16]), payload) != crc {
        return Err(Bad::Wrong(body.end, "record checksum mismatch".into()));
    }
    Ok((index, body.clone(), body.end))
}

impl Bad {
    /// Whether this looks like the unsynced end of the last write: cut short by the end of
    /// the file, or wrong with nothing but zeros after it. Damage followed by more data is
    /// not a torn write.
    fn is_torn_tail(&self, bytes: &[u8]) -> bool {
        match self {
            Bad::Short => true,
            Bad::Wrong(end, _) => bytes
                .get(*end..)
                .is_none_or(|rest| rest.iter().all(|b| *b == 0)),
        }
    }

    fn reason(&self) -> String {
        match self {
            Bad::Short => "record cut short".into(),
            Bad::Wrong(_, reason) => reason.clone(),
        }
    }
}

impl Log {
    /// Opens the log in `dir` (created if missing), dropping entries at or below `purged`.
    pub fn open(dir: &Path, purged: Option<u64>) -> Result<Log, LogError> {
        Log::open_with(dir, purged, true)
    }

    /// [`Log::open`], with direct writes tried or not.
    fn open_with(dir: &Path, purged: Option<u64>, direct: bool) -> Result<Log, LogError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut firsts = Vec::new();
        for item in fs::read_dir(dir).map_err(io_err(dir))? {
            let name = item.map_err(io_err(dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(first) = name
                .strip_suffix(".log")
                .filter(|s| s.len() == 20)
                .and_then(|s| s.parse::<u64>().ok())
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut log = Log {
            dir: dir.to_path_buf(),
            segments: Vec::new(),
            purged,
            failed: None,
            direct,
        };
        let count = firsts.len();
        for (n, first) in firsts.into_iter().enumerate() {
            let segment = log.load_segment(first, n + 1 == count)?;
            if let (Some(prev), Some(_)) =
                (log.segments.last().and_then(Segment::last), segment.last())
                && segment.first != prev + 1
                && purged.is_none_or(|p| prev > p)
            {
                return Err(LogError::Corrupted {
                    path: segment.path,
                    offset: 0,
                    reason: format!("starts at index {} after {prev}", segment.first),
                });
            }
            log.segments.push(segment);
        }
        // Finish an interrupted purge; drop empty segments but the last.
        let mut removed = false;
        let keep_last = log.segments.len().saturating_sub(1);
        let mut kept = Vec::new();
        for (n, seg) in std::mem::take(&mut log.segments).into_iter().enumerate() {
            let stale = match seg.last() {
                Some(last) => purged.is_some_and(|p| last <= p),
                None => n != keep_last,
            };
            if stale {
                fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
                removed = true;
            } else {
                kept.push(seg);
            }
        }
        log.segments = kept;
        if removed {
            sync_dir(dir)?;
        }
        log.open_direct()?;
        Ok(log)
    }

    /// Opens the last segment for direct writes, if the log tries them.
    fn open_direct(&mut self) -> Result<(), LogError> {
        let try_direct = self.direct;
        let Some(seg) = self.segments.last_mut() else {
            return Ok(());
        };
        seg.direct = None;
        if try_direct {
            let tail = read_tail(&seg.file, &seg.path, seg.end)?;
            seg.direct = Direct::open(&seg.path, tail)?;
            self.direct = seg.direct.is_some();
        }
        Ok(())
    }

    /// Whether appends go out as direct writes.
    #[cfg(test)]
    fn writes_direct(&self) -> bool {
        self.segments.last().is_some_and(|s| s.direct.is_some())
    }

    /// Reads and checks one segment; a torn tail of the last one is cut off.
    fn load_segment(&self, first: u64, is_last: bool) -> Result<Segment, LogError> {
        let path = segment_path(&self.dir, first);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let corrupted = |offset: usize, reason: String| LogError::Corrupted {
            path: path.clone(),
            offset: offset as u64,
            reason,
        };
        if bytes.len() < SEGMENT_MAGIC.len() {
            if !is_last {
                return Err(corrupted(0, "segment header cut short".into()));
            }
        } else if &bytes[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
            return Err(corrupted(0, "not a muster log segment".into()));
        }
        let mut offsets = Vec::new();
        let mut at = SEGMENT_MAGIC.len().min(bytes.len());
        let mut torn = bytes.len() < SEGMENT_MAGIC.len();
        while at < bytes.len() {
            if bytes[at..].iter().all(|b| *b == 0) {
                // The preallocated room after the last record.
                break;
            }
            match take_record(&bytes, at) {
                Ok((index, _, next)) => {
                    let want = first + offsets.len() as u64;
                    if index != want {
                        return Err(corrupted(at, format!("index {index} where {want} belongs")));
                    }
                    offsets.push(at as u64);
                    at = next;
                }
                Err(bad) if is_last && bad.is_torn_tail(&bytes) => {
                    tracing::warn!(
                        path = %path.display(), offset = at, reason = %bad.reason(),
                        "dropping the unacknowledged tail of the raft log"
                    );
                    torn = true;
                    break;
                }
                Err(bad) => return Err(corrupted(at, bad.reason())),
            }
        }
        let mut end = at as u64;
        let mut allocated = bytes.len() as u64;
        if torn {
            if bytes.len() < SEGMENT_MAGIC.len() {
                file.write_all_at(SEGMENT_MAGIC, 0).map_err(io_err(&path))?;
                end = SEGMENT_MAGIC.len() as u64;
            }
            file.set_len(end).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
            allocated = end;
        } else if is_last {
            // A killed process may have left written but unsynced records (still in the page
            // cache, so read back above): from now on they count as on disk, so make them so.
            file.sync_data().map_err(io_err(&path))?;
        }
        Ok(Segment {
            first,
            path,
            file,
            offsets,
            end,
            allocated,
            direct: None,
        })
    }

    /// The first entry still held (above the purged index).
    fn first_held(&self) -> Option<u64> {
        let low = self.purged.map_or(0, |p| p + 1);
        let seg = self
            .segments
            .iter()
            .find(|s| s.last().is_some_and(|l| l >= low))?;
        Some(seg.first.max(low))
    }

    /// The last entry's index, if any entry is held.
    pub fn last_index(&self) -> Option<u64> {
        let last = self.segments.iter().rev().find_map(Segment::last)?;
        self.purged.is_none_or(|p| last > p).then_some(last)
    }

    /// Whether every entry up to `index` is held or purged.
    pub fn reaches(&self, index: u64) -> bool {
        index == 0
            || self
                .last_index()
                .max(self.purged)
                .is_some_and(|l| l >= index)
    }

    /// The last entry, if any.
    pub fn last_entry(&self) -> Result<Option<Vec<u8>>, LogError> {
        let Some(last) = self.last_index() else {
            return Ok(None);
        };
        Ok(self.read(last, last + 1)?.pop().map(|(_, v)| v))
    }

    /// Whether a write failed (the log takes no more).
    pub fn failed(&self) -> bool {
        self.failed.is_some()
    }

    fn check_writable(&self) -> Result<(), LogError> {
        match &self.failed {
            Some(reason) => Err(LogError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    fn fail<T>(&mut self, e: LogError) -> Result<T, LogError> {
        self.failed = Some(e.to_string());
        Err(e)
    }

    /// Appends `entries` (consecutive, following the last one) durably.
    pub fn append<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> Result<(), LogError> {
        self.check_writable()?;
        match self.append_inner(entries) {
            Ok(()) => Ok(()),
            Err(e @ LogError::OutOfOrder { .. }) => Err(e),
            Err(e) => self.fail(e),
        }
    }

    fn append_inner<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> Result<(), LogError> {
        // Entries at or below the purged index are covered by a snapshot and would never be
        // served: they are not written (openraft's storage suite appends such entries).
        let entries: Vec<(u64, &[u8])> = entries
            .into_iter()
            .filter(|(i, _)| self.purged.is_none_or(|p| *i > p))
            .collect();
        // Check the whole batch before touching anything (any index above the purged one
        // may start an empty log).
        let mut last = self.last_index();
        for &(index, _) in &entries {
            if last.is_some_and(|l| index != l + 1) {
                return Err(LogError::OutOfOrder { index, last });
            }
            last = Some(index);
        }
        let mut buf = Vec::new();
        // Segments written to (by position in `self.segments`) and whether one was created.
        let mut touched: Vec<usize> = Vec::new();
        let mut created = false;
        for (index, payload) in entries {
            let roll = match self.segments.last() {
                None => true,
                Some(seg) => {
                    let next = seg.last().map_or(seg.first, |l| l + 1);
                    next != index || seg.end + buf.len() as u64 >= SEGMENT_BYTES
                }
            };
            if roll {
                self.flush_buffer(&mut buf, &mut touched)?;
                self.start_segment(index)?;
                created = true;
            }
            let pos = self.segments.len() - 1;
            let seg = &mut self.segments[pos];
            seg.offsets.push(seg.end + buf.len() as u64);
            put_record(&mut buf, index, payload);
        }
        self.flush_buffer(&mut buf, &mut touched)?;
        // Direct writes are durable on return; the others are synced here.
        for pos in touched {
            let seg = &self.segments[pos];
            seg.file.sync_data().map_err(io_err(&seg.path))?;
        }
        if created {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Writes `buf` at the end of the last segment.
    fn flush_buffer(
        &mut self,
        buf: &mut Vec<u8>,
        touched: &mut Vec<usize>,
    ) -> Result<(), LogError> {
        if buf.is_empty() {
            return Ok(());
        }
        let pos = self.segments.len() - 1;
        let seg = &mut self.segments[pos];
        let need = seg.end + buf.len() as u64;
        // A direct write covers whole blocks, so the room must reach past the last one.
        let reach = match seg.direct {
            Some(_) => need.div_ceil(DIRECT_ALIGN as u64) * DIRECT_ALIGN as u64,
            None => need,
        };
        if reach > seg.allocated {
            // Zeros first, then the records over them: a buffered write's next sync makes
            // both durable; a direct write needs the blocks allocated and synced before.
            let target = reach.div_ceil(PREALLOCATE) * PREALLOCATE;
            let zeros = vec![0u8; (target - seg.allocated).min(PREALLOCATE) as usize];
            while seg.allocated < target {
                let n = (target - seg.allocated).min(zeros.len() as u64) as usize;
                seg.file
                    .write_all_at(&zeros[..n], seg.allocated)
                    .map_err(io_err(&seg.path))?;
                seg.allocated += n as u64;
            }
            if seg.direct.is_some() {
                seg.file.sync_data().map_err(io_err(&seg.path))?;
            }
        }
        if let Some(direct) = &mut seg.direct {
            if direct.write(&seg.path, seg.end, buf)? {
                seg.end += buf.len() as u64;
                buf.clear();
                return Ok(());
            }
            tracing::info!(path = %seg.path.display(), "raft log: direct write refused; appends use fdatasync");
            seg.direct = None;
            self.direct = false;
        }
        seg.file
            .write_all_at(buf, seg.end)
            .map_err(io_err(&seg.path))?;
        seg.end += buf.len() as u64;
        buf.clear();
        if !touched.contains(&pos) {
            touched.push(pos);
        }
        Ok(())
    }

    /// Starts a new segment whose first entry is `first` (replacing an empty last segment).
    fn start_segment(&mut self, first: u64) -> Result<(), LogError> {
        if self.segments.last().is_some_and(|s| s.offsets.is_empty()) {
            let old = self.segments.pop().map(|s| s.path);
            if let Some(old) = old {
                fs::remove_file(&old).map_err(io_err(&old))?;
            }
        }
        let path = segment_path(&self.dir, first);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.write_all_at(SEGMENT_MAGIC, 0).map_err(io_err(&path))?;
        // Only the last segment takes appends.
        if let Some(prev) = self.segments.last_mut() {
            prev.direct = None;
        }
        self.segments.push(Segment {
            first,
            path,
            file,
            offsets: Vec::new(),
            end: SEGMENT_MAGIC.len() as u64,
            allocated: SEGMENT_MAGIC.len() as u64,
            direct: None,
        });
        self.open_direct()
    }

    /// Entries in `[start, end)` that are held, in order.
    pub fn read(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
        let mut out = Vec::new();
        let Some(low) = self.first_held() else {
            return Ok(out);
        };
        let start = start.max(low);
        for seg in &self.segments {
            let Some(last) = seg.last() else { continue };
            let (from, to) = (start.max(seg.first), end.min(last + 1));
            if from >= to {
                continue;
            }
            let (a, b) = seg.span(from, to);
            let mut bytes = vec![0; (b - a) as usize];
            seg.file
                .read_exact_at(&mut bytes, a)
                .map_err(io_err(&seg.path))?;
            let mut at = 0;
            for want in from..to {
                let (index, body, next) =
                    take_record(&bytes, at).map_err(|bad| LogError::Corrupted {
                        path: seg.path.clone(),
                        offset: a + at as u64,
                        reason: bad.reason(),
                    })?;
                if index != want {
                    return Err(LogError::Corrupted {
                        path: seg.path.clone(),
                        offset: a + at as u64,
                        reason: format!("index {index} where {want} belongs"),
                    });
                }
                out.push((index, bytes[body].to_vec()));
                at = next;
            }
        }
        Ok(out)
    }

    /// Durably removes entries `[from, ∞)`; returns the new last entry.
    pub fn truncate(&mut self, from: u64) -> Result<Option<Vec<u8>>, LogError> {
        self.check_writable()?;
        if let Err(e) = self.truncate_inner(from) {
            return self.fail(e);
        }
        self.last_entry()
    }

    fn truncate_inner(&mut self, from: u64) -> Result<(), LogError> {
        let mut removed = false;
        while let Some(seg) = self.segments.last_mut() {
            if seg.first >= from {
                let path = seg.path.clone();
                self.segments.pop();
                fs::remove_file(&path).map_err(io_err(&path))?;
                removed = true;
                continue;
            }
            if seg.last().is_some_and(|l| l >= from) {
                let k = (from - seg.first) as usize;
                seg.end = seg.offsets[k];
                seg.allocated = seg.end;
                seg.offsets.truncate(k);
                seg.file.set_len(seg.end).map_err(io_err(&seg.path))?;
                seg.file.sync_all().map_err(io_err(&seg.path))?;
            }
            break;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        // The last segment (maybe another one now) takes the appends from its new end.
        self.open_direct()
    }

    /// Forgets entries `[0, upto]`, removing the segments that hold nothing else. The caller
    /// records `upto` durably first, so an interrupted purge is finished at the next open.
    pub fn purge(&mut self, upto: u64) -> Result<(), LogError> {
        self.check_writable()?;
        self.purged = Some(self.purged.map_or(upto, |p| p.max(upto)));
        let mut removed = false;
        while let Some(seg) = self.segments.first() {
            if seg.last().is_none_or(|l| l > upto) {
                break;
            }
            let path = seg.path.clone();
            self.segments.remove(0);
            if let Err(e) = fs::remove_file(&path) {
                return self.fail(io_err(&path)(e));
            }
            removed = true;
        }
        if removed && let Err(e) = sync_dir(&self.dir) {
            return self.fail(e);
        }
        Ok(())
    }
}

/// CRC-32C (Castagnoli), table-driven.
mod crc32c {
    const POLY: u32 = 0x82F6_3B78;
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };

    /// Continues `crc` over `bytes`.
    pub fn extend(crc: u32, bytes: &[u8]) -> u32 {
        let mut c = !crc;
        for &b in bytes {
            c = TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
        }
        !c
    }

    #[cfg(test)]
    #[test]
    fn matches_the_standard_check_value() {
        assert_eq!(extend(0, b"123456789"), 0xE306_9283);
        assert_eq!(extend(extend(0, b"1234"), b"56789"), 0xE306_9283);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(i: u64) -> Vec<u8> {
        format!("entry-{i}").into_bytes()
    }

    fn append(log: &mut Log, range: std::ops::RangeInclusive<u64>) {
        let owned: Vec<(u64, Vec<u8>)> = range.map(|i| (i, payload(i))).collect();
        log.append(owned.iter().map(|(i, p)| (*i, p.as_slice())))
            .unwrap();
    }

    fn indexes(log: &Log) -> Vec<u64> {
        log.read(0, u64::MAX)
            .unwrap()
            .into_iter()
            .map(|(i, p)| {
                assert_eq!(p, payload(i));
                i
            })
            .collect()
    }

    /// A log in `dir` with entries `1..=count` of `SEGMENT_BYTES / per_segment` bytes each.
    fn big_entries(dir: &Path, per_segment: u64, count: u64) -> Log {
        let mut log = Log::open(dir, None).unwrap();
        let big = vec![7u8; (SEGMENT_BYTES / per_segment) as usize];
        for i in 1..=count {
            log.append([(i, big.as_slice())]).unwrap();
        }
        log
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn entries_survive_reopen_and_out_of_order_appends_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), None).unwrap();
        assert_eq!(log.last_index(), None);
        append(&mut log, 1..=5);
        assert!(matches!(
            log.append([(9, b"x".as_slice())]),
            Err(LogError::OutOfOrder {
                index: 9,
                last: Some(5)
            })
        ));
        assert!(matches!(
            log.append([(5, b"x".as_slice())]),
            Err(LogError::OutOfOrder { index: 5, .. })
        ));
        // A refused append does not poison the log.
        append(&mut log, 6..=6);
        drop(log);
        let log = Log::open(dir.path(), None).unwrap();
        assert_eq!(indexes(&log), (1..=6).collect::<Vec<_>>());
        assert_eq!(log.last_entry().unwrap(), Some(payload(6)));
        assert_eq!(
            log.read(2, 4).unwrap(),
            vec![(2, payload(2)), (3, payload(3))]
        );
    }

    /// Whether the file system under `dir` takes `O_DIRECT`.
    fn direct_io_works(dir: &Path) -> bool {
        let probe = dir.join("probe");
        fs::write(&probe, b"").unwrap();
        let ok = Direct::open(&probe, Vec::new()).unwrap().is_some();
        fs::remove_file(&probe).unwrap();
        ok
    }

    #[test]
    fn direct_and_buffered_appends_leave_the_same_bytes() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let direct = direct_io_works(a.path());
        if !direct {
            eprintln!(
                "no O_DIRECT under {}: comparing buffered with buffered",
                a.path().display()
            );
        }
        // Sizes that end records at, just before and just after block boundaries, batches,
        // records larger than a block, a truncation into the middle of a block, a reopen.
        let sizes = [1usize, 4079, 4080, 4081, 9000, 13, 0, 4096, 70_000, 777];
        let body = |i: u64| vec![(i % 251) as u8 + 1; sizes[i as usize % sizes.len()]];
        let run = |dir: &Path, direct_on: bool| {
            let mut log = Log::open_with(dir, None, direct_on).unwrap();
            assert!(!log.writes_direct(), "no segment yet");
            for i in 1..=40u64 {
                log.append([(i, body(i).as_slice())]).unwrap();
                if i == 1 {
                    assert_eq!(log.writes_direct(), direct_on && direct);
                }
            }
            let batch: Vec<(u64, Vec<u8>)> = (41..=60).map(|i| (i, body(i))).collect();
            log.append(batch.iter().map(|(i, p)| (*i, p.as_slice())))
                .unwrap();
            assert_eq!(log.writes_direct(), direct_on && direct);
            log.truncate(33).unwrap();
            for i in 33..=50u64 {
                log.append([(i, body(i + 1).as_slice())]).unwrap();
            }
            drop(log);
            let mut log = Log::open_with(dir, None, direct_on).unwrap();
            assert_eq!(log.writes_direct(), direct_on && direct);
            for i in 51..=70u64 {
                log.append([(i, body(i).as_slice())]).unwrap();
            }
            // Still direct: a refused direct write would have fallen back quietly.
            assert_eq!(log.writes_direct(), direct_on && direct);
            let read = log.read(0, u64::MAX).unwrap();
            assert_eq!(read.len(), 70);
            for (i, p) in read {
                let want = if (33..=50).contains(&i) {
                    body(i + 1)
                } else {
                    body(i)
                };
                assert_eq!(p, want, "entry {i}");
            }
            segment_files(dir)
                .into_iter()
                .map(|f| fs::read(f).unwrap())
                .collect::<Vec<_>>()
        };
        let with_direct = run(a.path(), true);
        let buffered = run(b.path(), false);
        assert_eq!(with_direct.len(), buffered.len());
        for (x, y) in with_direct.iter().zip(&buffered) {
            assert_eq!(x.len(), y.len());
            assert!(x == y, "direct and buffered segments differ");
        }
    }

    #[test]
    fn a_refused_direct_write_falls_back_to_fdatasync_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        if !direct_io_works(dir.path()) {
            eprintln!(
                "no O_DIRECT under {}: nothing to refuse",
                dir.path().display()
            );
            return;
        }
        let mut log = Log::open(dir.path(), None).unwrap();
        append(&mut log, 1..=5);
        assert!(log.writes_direct());
        if let Some(direct) = log.segments.last_mut().and_then(|s| s.direct.as_mut()) {
            direct.refuse = true;
        }
        append(&mut log, 6..=9);
        assert!(!log.writes_direct(), "the log stops trying");
        append(&mut log, 10..=12);
        assert_eq!(indexes(&log), (1..=12).collect::<Vec<_>>());
        drop(log);
        let log = Log::open(dir.path(), None).unwrap();
        assert_eq!(indexes(&log), (1..=12).collect::<Vec<_>>());
    }

    #[test]
    fn truncated_entries_never_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), None).unwrap();
        append(&mut log, 1..=10);
        assert_eq!(log.truncate(8).unwrap(), Some(payload(7)));
        append(&mut log, 8..=8);
        drop(log);
        let mut log = Log::open(dir.path(), None).unwrap();
        assert_eq!(indexes(&log), (1..=8).collect::<Vec<_>>());
        assert_eq!(log.truncate(1).unwrap(), None);
        drop(log);
        let log = Log::open(dir.path(), None).unwrap();
        assert!(indexes(&log).is_empty());
    }

    #[test]
    fn segments_roll_and_purge_removes_whole_segments() {
        let dir = tempfile::tempdir().unwrap();
        // Three segments: entries of about a third of SEGMENT_BYTES each.
        let mut log = big_entries(dir.path(), 3, 7);
        let files = segment_files(dir.path());
        assert_eq!(files.len(), 3, "{files:?}");
        // Truncating into an earlier segment removes the later ones.
        log.truncate(5).unwrap();
        assert_eq!(log.last_index(), Some(4));
        assert_eq!(segment_files(dir.path()).len(), 2);
        log.purge(3).unwrap();
        assert_eq!(segment_files(dir.path()).len(), 1);
        assert_eq!(
            log.read(0, 100)
                .unwrap()
                .iter()
                .map(|e| e.0)
                .collect::<Vec<_>>(),
            vec![4]
        );
        drop(log);
        let log = Log::open(dir.path(), Some(3)).unwrap();
        assert_eq!(log.last_index(), Some(4));
        assert_eq!(log.read(0, 100).unwrap().len(), 1);
    }

    #[test]
    fn an_interrupted_purge_is_finished_at_open_and_a_snapshot_gap_starts_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), None).unwrap();
        append(&mut log, 1..=4);
        drop(log);
        // The purge index reached the meta table, the files were not removed yet.
        let mut log = Log::open(dir.path(), Some(10)).unwrap();
        assert_eq!(log.last_index(), None);
        assert!(log.read(0, 100).unwrap().is_empty());
        assert!(segment_files(dir.path()).is_empty());
        // An entry the purge covers is not written; the next one starts a segment.
        log.append([(10, b"x".as_slice())]).unwrap();
        assert_eq!(log.last_index(), None);
        append(&mut log, 11..=12);
        drop(log);
        let log = Log::open(dir.path(), Some(10)).unwrap();
        assert_eq!(indexes(&log), vec![11, 12]);
    }

    #[test]
    fn a_torn_tail_of_the_last_segment_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), None).unwrap();
        append(&mut log, 1..=3);
        let end = log.segments[0].end as usize;
        drop(log);
        let path = segment_path(dir.path(), 1);
        let full = fs::read(&path).unwrap();
        assert!(full.len() > end, "room is preallocated");
        assert!(full[end..].iter().all(|b| *b == 0));
        // A fourth record half written over the preallocated zeros.
        let mut torn = full.clone();
        let mut rec = Vec::new();
        put_record(&mut rec, 4, b"never acknowledged");
        torn[end..end + rec.len() / 2].copy_from_slice(&rec[..rec.len() / 2]);
        fs::write(&path, &torn).unwrap();
        let mut log = Log::open(dir.path(), None).unwrap();
        assert_eq!(indexes(&log), vec![1, 2, 3]);
        assert_eq!(
            fs::read(&path).unwrap(),
            full[..end],
            "the tail is cut back"
        );
        append(&mut log, 4..=4);
        drop(log);
        // Zeros after the last record are room, not damage: nothing is cut.
        let before = fs::read(&path).unwrap();
        let log = Log::open(dir.path(), None).unwrap();
        assert_eq!(indexes(&log), vec![1, 2, 3, 4]);
        assert_eq!(fs::read(&path).unwrap(), before);
        // A record cut short by the end of the file (no preallocation) is torn too.
        let records = log.segments[0].end as usize;
        drop(log);
        let mut short = before[..records].to_vec();
        short.extend_from_slice(&rec[..HEADER + 3]);
        fs::write(&path, &short).unwrap();
        let log = Log::open(dir.path(), None).unwrap();
        assert_eq!(indexes(&log), vec![1, 2, 3, 4]);
        assert_eq!(fs::read(&path).unwrap(), before[..records]);
    }

    #[test]
    fn damage_in_the_last_segment_followed_by_records_is_corruption_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), None).unwrap();
        append(&mut log, 1..=5);
        drop(log);
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        // A payload byte of entry 2: records 3 to 5 follow it.
        let second = SEGMENT_MAGIC.len() + HEADER + payload(1).len();
        bytes[second + HEADER + 1] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let err = Log::open(dir.path(), None).err().unwrap();
        assert!(
            matches!(&err, LogError::Corrupted { offset, .. } if *offset == second as u64),
            "{err:?}"
        );
        assert_eq!(fs::read(&path).unwrap(), bytes, "nothing cut");
    }

    #[test]
    fn damage_before_the_tail_is_an_error_naming_the_file_and_nothing_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        drop(big_entries(dir.path(), 2, 3));
        let first = segment_path(dir.path(), 1);
        assert!(segment_files(dir.path()).len() >= 2);
        let mut bytes = fs::read(&first).unwrap();
        bytes[SEGMENT_MAGIC.len() + HEADER + 100] ^= 0xFF;
        fs::write(&first, &bytes).unwrap();
        let err = Log::open(dir.path(), None).err().unwrap();
        assert!(matches!(err, LogError::Corrupted { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&first.display().to_string()), "{text}");
        assert!(text.contains("checksum"), "{text}");
        assert_eq!(fs::read(&first).unwrap(), bytes, "never rewritten");

        // A foreign file under a segment's name is refused too.
        let other = tempfile::tempdir().unwrap();
        fs::write(segment_path(other.path(), 1), b"hello, not a log").unwrap();
        let err = Log::open(other.path(), None).err().unwrap();
        assert!(
            err.to_string().contains("not a muster log segment"),
            "{err}"
        );
    }
}
