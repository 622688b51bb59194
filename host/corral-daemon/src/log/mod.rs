//! The durable log: every message the daemon accepts is appended here before anything
//! else happens to it, and every reader (a plugin, the output) reads it from its own
//! position at its own pace.
//!
//! On disk a log is a directory of segment files, `<first seq, 20 digits>.log`, each a
//! 24-byte header (`CORRLOG1`, the first record's sequence number and global byte
//! offset) and then records:
//!
//! ```text
//! len u32 LE | CRC-32C u32 LE (of the payload) | payload (len bytes)
//! ```
//!
//! A [`Position`] is a record's sequence number and its global byte offset (bytes of
//! records before it since the log began), so a reader seeks straight to a position and
//! lag is measured in messages and bytes.
//!
//! **Group commit.** Appends go into a buffer; a committer thread writes it out and
//! `fdatasync`s the segment every commit interval (10 ms by default), then publishes the
//! new durable end. Readers only see records up to the durable end, so nothing a plugin
//! has read, and no checkpoint taken after it, can be lost with the tail. With
//! [`LogOptions::fsync`] off the end is published once written to the file (the page
//! cache): a crash of the process loses nothing, a crash of the machine may.
//!
//! **Recovery.** On open, the last segment is scanned record by record; a torn or
//! corrupt tail (a short record or a checksum that does not match) is truncated at the
//! last good record, with a log line saying how many bytes went.
//!
//! **The bound.** Readers register a position (their last checkpoint); what lies after
//! the oldest of them is the unread part. An append waits ([`Log::append`]) or is
//! refused ([`Log::try_append`]) while the unread part is at [`LogOptions::max_bytes`].
//! A segment is deleted once every registered position has passed it, so the disk holds
//! at most the bound plus one segment.

pub(crate) mod codec;
mod crc;
pub(crate) mod json;

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::lock;

const MAGIC: &[u8; 8] = b"CORRLOG1";
/// The segment header's size.
const HEADER: u64 = 24;
/// A record's frame: length and checksum.
const FRAME: u64 = 8;
/// The largest record accepted: a length beyond it is damage, not data.
pub const MAX_RECORD: u32 = 64 << 20;

/// Where a record starts: its sequence number and global byte offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Records before it since the log began.
    pub seq: u64,
    /// Bytes of records (frames included) before it since the log began.
    pub byte: u64,
}

/// How a log behaves.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// A new segment is started once the current one holds this many bytes.
    pub segment_bytes: u64,
    /// The most bytes the unread part may hold before appends wait.
    pub max_bytes: u64,
    /// How often appended records are made durable and published to readers.
    pub commit_interval: Duration,
    /// Whether a commit `fdatasync`s (durable against a machine crash) or only writes to
    /// the file (durable against a crash of the process).
    pub fsync: bool,
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            segment_bytes: 16 << 20,
            max_bytes: 1 << 30,
            commit_interval: Duration::from_millis(10),
            fsync: true,
        }
    }
}

/// A log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The unread part is at the bound: try again once readers have caught up.
    #[error("the log is full: {unread} unread bytes, at its bound of {max} (--max-log)")]
    Full {
        /// Unread bytes.
        unread: u64,
        /// The bound.
        max: u64,
    },
    /// A file could not be read or written.
    #[error("log `{}`: {reason}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A record failed its checksum or is cut short inside the durable part.
    #[error("log `{}`: corrupt record at byte {offset}: {reason}", path.display())]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Where in it.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The position asked for is before the oldest record kept.
    #[error("log position {asked} was deleted: the oldest kept is {first}")]
    Gone {
        /// The sequence number asked for.
        asked: u64,
        /// The oldest kept.
        first: u64,
    },
    /// The log is closed.
    #[error("the log is closed")]
    Closed,
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> LogError {
    LogError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// Records framed for one append: build with [`Batch::push`], hand to [`Log::append`].
#[derive(Debug, Default)]
pub struct Batch {
    buf: Vec<u8>,
    count: u64,
}

impl Batch {
    /// Appends a record whose payload `write` puts at the end of the buffer.
    pub fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let pushed = self.try_push(|buf| {
            write(buf);
            Ok::<(), std::convert::Infallible>(())
        });
        match pushed {
            Ok(_) => {}
            Err(never) => match never {},
        }
    }

    /// Appends a record whose payload `write` puts at the end of the buffer, if it can:
    /// on an error nothing is appended. Returns the payload.
    ///
    /// # Errors
    ///
    /// `write`'s.
    pub fn try_push<E>(&mut self, write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>) -> Result<&[u8], E> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; FRAME as usize]);
        if let Err(e) = write(&mut self.buf) {
            self.buf.truncate(start);
            return Err(e);
        }
        let payload = &self.buf[start + FRAME as usize..];
        let len = payload.len() as u32;
        let crc = crc::hash(payload);
        self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        self.count += 1;
        Ok(&self.buf[start + FRAME as usize..])
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes in the batch, frames included.
    pub fn bytes(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Empties the batch, keeping its buffer.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
    }
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    base: Position,
}

struct Writer {
    file: BufWriter<File>,
    /// The same file, to sync without holding the writer.
    sync: Arc<File>,
    path: PathBuf,
    base: Position,
    end: Position,
}

#[derive(Default)]
struct Shared {
    segments: VecDeque<Segment>,
    /// The end of what was appended.
    written: Position,
    /// The end of what readers may read.
    durable: Position,
    /// Each reader's registered position (its last checkpoint).
    holds: HashMap<String, Position>,
    /// Bumped by [`Log::wake`], so waiters notice.
    wakes: u64,
    /// A write or sync failed: appends are refused from then on.
    failed: Option<String>,
    closed: bool,
    /// Appends that had to wait for room.
    full_waits: u64,
}

struct Inner {
    dir: PathBuf,
    options: LogOptions,
    writer: Mutex<Writer>,
    shared: Mutex<Shared>,
    changed: Condvar,
    durable_seq: AtomicU64,
}

/// A durable log in a directory. Cheap to clone.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// What a log holds, for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStatus {
    /// The oldest record kept.
    pub first: Position,
    /// The end readers may read to.
    pub durable: Position,
    /// Unread bytes: after the oldest registered position.
    pub unread_bytes: u64,
    /// The bound on them.
    pub max_bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Bytes of records on disk.
    pub disk_bytes: u64,
    /// Appends that had to wait for room since the start.
    pub full_waits: u64,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.log"))
}

fn create_segment(dir: &Path, base: Position) -> Result<File, LogError> {
    let path = segment_path(dir, base.seq);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .read(true)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    let mut header = Vec::with_capacity(HEADER as usize);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&base.seq.to_le_bytes());
    header.extend_from_slice(&base.byte.to_le_bytes());
    file.write_all(&header).map_err(|e| io_error(&path, e))?;
    file.sync_all().map_err(|e| io_error(&path, e))?;
    sync_dir(dir)?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

fn read_header(path: &Path) -> Result<Option<Position>, LogError> {
    let mut file = File::open(path).map_err(|e| io_error(path, e))?;
    let mut header = [0u8; HEADER as usize];
    match file.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(io_error(path, e)),
    }
    if &header[..8] != MAGIC {
        return Ok(None);
    }
    Ok(Some(Position {
        seq: u64::from_le_bytes(header[8..16].try_into().expect("8 bytes")),
        byte: u64::from_le_bytes(header[16..24].try_into().expect("8 bytes")),
    }))
}

/// Reads until `buf` is full or the end of the file; returns how much was read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match reader.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Scans a segment's records from its header on; returns the end of the last good
/// record (as a file offset and a position) and why the scan stopped early, if it did.
fn scan(path: &Path, base: Position) -> Result<(u64, Position, Option<String>), LogError> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    reader
        .seek(SeekFrom::Start(HEADER))
        .map_err(|e| io_error(path, e))?;
    let (mut offset, mut end) = (HEADER, base);
    let mut payload = Vec::new();
    loop {
        let mut frame = [0u8; FRAME as usize];
        let n = read_full(&mut reader, &mut frame).map_err(|e| io_error(path, e))?;
        if n == 0 {
            return Ok((offset, end, None));
        }
        if n < frame.len() {
            return Ok((offset, end, Some("a record's frame is cut short".into())));
        }
        let len = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(frame[4..].try_into().expect("4 bytes"));
        if len > MAX_RECORD {
            return Ok((offset, end, Some(format!("a record claims {len} bytes"))));
        }
        payload.resize(len as usize, 0);
        let n = read_full(&mut reader, &mut payload).map_err(|e| io_error(path, e))?;
        if n < payload.len() {
            return Ok((offset, end, Some("a record is cut short".into())));
        }
        if crc::hash(&payload) != crc {
            return Ok((offset, end, Some("a record fails its checksum".into())));
        }
        offset += FRAME + u64::from(len);
        end = Position {
            seq: end.seq + 1,
            byte: end.byte + FRAME + u64::from(len),
        };
    }
}

impl Log {
    /// Opens (or creates) the log in `dir`, truncating a torn or corrupt tail, with the
    /// readers' positions in `holds` registered (see [`Log::hold`]), and starts its
    /// committer thread, which stops when the last clone is dropped.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] naming the file that cannot be created, read or truncated.
    pub fn open(dir: &Path, options: LogOptions, holds: HashMap<String, Position>) -> Result<Log, LogError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
            let entry = entry.map_err(|e| io_error(dir, e))?;
            let name = entry.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            found.push((seq, entry.path()));
        }
        found.sort();
        let mut segments = VecDeque::new();
        for (seq, path) in &found {
            match read_header(path)? {
                Some(base) if base.seq == *seq => segments.push_back((Segment { base }, path.clone())),
                _ => {
                    // Only a crash while a segment was being created leaves one without
                    // a header; it holds no record.
                    tracing::warn!(log = %dir.display(), "segment `{}` has no valid header: removed", path.display());
                    std::fs::remove_file(path).map_err(|e| io_error(path, e))?;
                }
            }
        }
        let (writer, end) = match segments.back() {
            None => {
                let base = Position::default();
                let file = create_segment(dir, base)?;
                segments.push_back((Segment { base }, segment_path(dir, 0)));
                (Writer::new(file, segment_path(dir, 0), base, base)?, base)
            }
            Some((segment, path)) => {
                let (offset, end, damage) = scan(path, segment.base)?;
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(|e| io_error(path, e))?;
                let size = file.metadata().map_err(|e| io_error(path, e))?.len();
                if size > offset {
                    file.set_len(offset).map_err(|e| io_error(path, e))?;
                    tracing::warn!(
                        log = %dir.display(),
                        "torn or corrupt tail truncated: {} bytes after record {} of `{}` ({})",
                        size - offset,
                        end.seq,
                        path.display(),
                        damage.as_deref().unwrap_or("trailing bytes")
                    );
                }
                file.sync_all().map_err(|e| io_error(path, e))?;
                let mut file = file;
                file.seek(SeekFrom::Start(offset))
                    .map_err(|e| io_error(path, e))?;
                (Writer::new(file, path.clone(), segment.base, end)?, end)
            }
        };
        let shared = Shared {
            segments: segments.into_iter().map(|(s, _)| s).collect(),
            written: end,
            durable: end,
            holds,
            ..Shared::default()
        };
        let log = Log {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                options,
                writer: Mutex::new(writer),
                shared: Mutex::new(shared),
                changed: Condvar::new(),
                durable_seq: AtomicU64::new(end.seq),
            }),
        };
        let weak = Arc::downgrade(&log.inner);
        std::thread::Builder::new()
            .name("corral-log-commit".into())
            .spawn(move || commit_loop(&weak))
            .map_err(|e| io_error(dir, e))?;
        Ok(log)
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        lock(&self.inner.shared)
    }

    /// Appends `batch`, waiting while the unread part is at the bound (until `closing`
    /// says to give up, checked at least every 100 ms). Returns the end of the batch.
    ///
    /// # Errors
    ///
    /// [`LogError::Closed`] once the log closes or `closing` is set while waiting, or
    /// the error of an earlier write.
    pub fn append(&self, batch: &Batch, closing: &dyn Fn() -> bool) -> Result<Position, LogError> {
        let mut counted = false;
        loop {
            match self.try_append(batch) {
                Err(LogError::Full { .. }) => {
                    let mut shared = self.shared();
                    if !counted {
                        shared.full_waits += 1;
                        counted = true;
                    }
                    if closing() || shared.closed {
                        return Err(LogError::Closed);
                    }
                    let (_guard, _) = self
                        .inner
                        .changed
                        .wait_timeout(shared, Duration::from_millis(100))
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                other => return other,
            }
        }
    }

    /// Appends `batch` if the unread part has room for it. Returns the end of the batch.
    ///
    /// # Errors
    ///
    /// [`LogError::Full`] when it has not, [`LogError::Closed`], or the error of an
    /// earlier write.
    pub fn try_append(&self, batch: &Batch) -> Result<Position, LogError> {
        if batch.is_empty() {
            return Ok(self.shared().written);
        }
        {
            let shared = self.shared();
            if shared.closed {
                return Err(LogError::Closed);
            }
            if let Some(e) = &shared.failed {
                return Err(io_error(&self.inner.dir, e));
            }
            let unread = shared.unread_bytes();
            // A batch larger than the bound still goes into an empty log.
            if unread > 0 && unread + batch.bytes() > self.inner.options.max_bytes {
                return Err(LogError::Full {
                    unread,
                    max: self.inner.options.max_bytes,
                });
            }
        }
        let mut writer = lock(&self.inner.writer);
        if writer.end.byte - writer.base.byte >= self.inner.options.segment_bytes {
            self.roll(&mut writer)?;
        }
        if let Err(e) = writer.file.write_all(&batch.buf) {
            let e = io_error(&writer.path, e);
            self.shared().failed = Some(e.to_string());
            return Err(e);
        }
        writer.end.seq += batch.count;
        writer.end.byte += batch.bytes();
        let end = writer.end;
        self.shared().written = end;
        Ok(end)
    }

    /// Starts a new segment at the writer's end, the old one made durable first.
    fn roll(&self, writer: &mut Writer) -> Result<(), LogError> {
        let fail = |e: LogError| {
            self.shared().failed = Some(e.to_string());
            e
        };
        writer
            .file
            .flush()
            .and_then(|()| writer.sync.sync_data())
            .map_err(|e| fail(io_error(&writer.path, e)))?;
        let base = writer.end;
        let file = create_segment(&self.inner.dir, base).map_err(fail)?;
        *writer = Writer::new(file, segment_path(&self.inner.dir, base.seq), base, base).map_err(fail)?;
        let mut shared = self.shared();
        shared.segments.push_back(Segment { base });
        // Everything before the new segment is durable now.
        if shared.durable < base {
            shared.durable = base;
            self.inner.durable_seq.store(base.seq, Ordering::Release);
            self.inner.changed.notify_all();
        }
        Ok(())
    }

    /// Makes everything appended so far durable and visible to readers now.
    ///
    /// # Errors
    ///
    /// The write or sync error.
    pub fn commit(&self) -> Result<(), LogError> {
        commit(&self.inner)
    }

    /// Waits until `end` is durable, up to `timeout`. Returns whether it is.
    pub fn wait_durable(&self, end: Position, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut shared = self.shared();
        while shared.durable.seq < end.seq {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || shared.failed.is_some() || shared.closed {
                return false;
            }
            shared = self
                .inner
                .changed
                .wait_timeout(shared, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Waits up to `timeout` for a durable record at `seq` or later, or for a
    /// [`Log::wake`]. Returns at once when one is there.
    pub fn wait_for(&self, seq: u64, timeout: Duration) {
        if self.inner.durable_seq.load(Ordering::Acquire) > seq {
            return;
        }
        let shared = self.shared();
        let wakes = shared.wakes;
        let _ = self.inner.changed.wait_timeout_while(shared, timeout, |s| {
            s.durable.seq <= seq && s.wakes == wakes && !s.closed
        });
    }

    /// Wakes every [`Log::wait_for`] and waiting append, to look at their conditions.
    pub fn wake(&self) {
        self.shared().wakes += 1;
        self.inner.changed.notify_all();
    }

    /// The durable end.
    pub fn durable(&self) -> Position {
        self.shared().durable
    }

    /// The oldest record kept.
    pub fn first(&self) -> Position {
        self.shared().segments.front().map(|s| s.base).unwrap_or_default()
    }

    /// Registers (or moves) `reader`'s position: the log keeps everything after it, and
    /// counts what is after it as unread.
    pub fn hold(&self, reader: &str, at: Position) {
        let mut shared = self.shared();
        match shared.holds.get_mut(reader) {
            Some(held) => *held = at,
            None => {
                shared.holds.insert(reader.to_owned(), at);
            }
        }
        self.inner.changed.notify_all();
    }

    /// Forgets `reader`'s position.
    pub fn release(&self, reader: &str) {
        self.shared().holds.remove(reader);
        self.inner.changed.notify_all();
    }

    /// Forgets every position but those of `keep`.
    pub fn release_all_but(&self, keep: &dyn Fn(&str) -> bool) {
        self.shared().holds.retain(|name, _| keep(name));
        self.inner.changed.notify_all();
    }

    /// The log's status.
    pub fn status(&self) -> LogStatus {
        let shared = self.shared();
        let first = shared.segments.front().map(|s| s.base).unwrap_or_default();
        LogStatus {
            first,
            durable: shared.durable,
            unread_bytes: shared.unread_bytes(),
            max_bytes: self.inner.options.max_bytes,
            segments: shared.segments.len() as u64,
            disk_bytes: shared.written.byte - first.byte,
            full_waits: shared.full_waits,
        }
    }

    /// A reader from `at`.
    pub fn reader(&self, at: Position) -> Reader {
        Reader {
            log: self.clone(),
            at,
            file: None,
            payload: Vec::new(),
        }
    }

    /// Commits what is appended and stops taking appends; waiting appends give up.
    pub fn close(&self) {
        if let Err(e) = self.commit() {
            tracing::error!(log = %self.inner.dir.display(), "cannot make the log's tail durable: {e}");
        }
        self.shared().closed = true;
        self.inner.changed.notify_all();
    }
}

impl Shared {
    fn unread_bytes(&self) -> u64 {
        let oldest = self
            .holds
            .values()
            .map(|p| p.byte)
            .min()
            .unwrap_or(self.written.byte);
        self.written.byte.saturating_sub(oldest)
    }
}

impl Writer {
    fn new(file: File, path: PathBuf, base: Position, end: Position) -> Result<Writer, LogError> {
        let sync = Arc::new(file.try_clone().map_err(|e| io_error(&path, e))?);
        Ok(Writer {
            file: BufWriter::with_capacity(256 << 10, file),
            sync,
            path,
            base,
            end,
        })
    }
}

fn commit(inner: &Inner) -> Result<(), LogError> {
    let (end, sync, path) = {
        let mut writer = lock(&inner.writer);
        if lock(&inner.shared).durable == writer.end {
            return Ok(());
        }
        if let Err(e) = writer.file.flush() {
            let e = io_error(&writer.path, e);
            lock(&inner.shared).failed = Some(e.to_string());
            return Err(e);
        }
        (writer.end, writer.sync.clone(), writer.path.clone())
    };
    if inner.options.fsync
        && let Err(e) = sync.sync_data()
    {
        let e = io_error(&path, e);
        lock(&inner.shared).failed = Some(e.to_string());
        inner.changed.notify_all();
        return Err(e);
    }
    let mut shared = lock(&inner.shared);
    if shared.durable < end {
        shared.durable = end;
        inner.durable_seq.store(end.seq, Ordering::Release);
    }
    inner.changed.notify_all();
    Ok(())
}

/// Deletes the segments every registered position has passed.
fn delete_read(inner: &Inner) {
    let doomed: Vec<PathBuf> = {
        let mut shared = lock(&inner.shared);
        let oldest = shared
            .holds
            .values()
            .map(|p| p.seq)
            .min()
            .unwrap_or(shared.written.seq);
        let mut doomed = Vec::new();
        while shared.segments.len() > 1 && shared.segments[1].base.seq <= oldest {
            let segment = shared.segments.pop_front().expect("two segments");
            doomed.push(segment_path(&inner.dir, segment.base.seq));
        }
        doomed
    };
    for path in doomed {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(log = %inner.dir.display(), "cannot delete read segment `{}`: {e}", path.display());
        }
    }
}

fn commit_loop(weak: &Weak<Inner>) {
    let mut reported = false;
    loop {
        let Some(inner) = weak.upgrade() else { break };
        let interval = inner.options.commit_interval;
        if lock(&inner.shared).closed {
            break;
        }
        match commit(&inner) {
            Ok(()) => reported = false,
            Err(e) if !reported => {
                reported = true;
                tracing::error!(log = %inner.dir.display(), "cannot commit the log: {e}");
            }
            Err(_) => {}
        }
        delete_read(&inner);
        drop(inner);
        std::thread::sleep(interval);
    }
}

/// Reads a log from a position, one durable record at a time.
pub struct Reader {
    log: Log,
    at: Position,
    file: Option<(BufReader<File>, PathBuf, u64)>,
    payload: Vec<u8>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Where the next record starts.
    pub fn position(&self) -> Position {
        self.at
    }

    /// The log it reads.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Moves to `at`.
    pub fn seek(&mut self, at: Position) {
        self.at = at;
        self.file = None;
    }

    /// Whether a durable record is waiting at the reader's position.
    pub fn has_next(&self) -> bool {
        self.log.inner.durable_seq.load(Ordering::Acquire) > self.at.seq
    }

    /// The next durable record's payload, or `None` at the durable end.
    ///
    /// # Errors
    ///
    /// [`LogError::Gone`] when the position was deleted, [`LogError::Corrupt`] for a
    /// record that fails its checksum, [`LogError::Io`].
    pub fn next(&mut self) -> Result<Option<&[u8]>, LogError> {
        if !self.has_next() {
            return Ok(None);
        }
        for _ in 0..2 {
            if self.file.is_none() {
                self.open()?;
            }
            let (reader, path, offset) = self.file.as_mut().expect("opened");
            let mut frame = [0u8; FRAME as usize];
            let n = read_full(reader, &mut frame).map_err(|e| io_error(path, e))?;
            if n == 0 {
                // The end of this segment: the record is at the start of the next.
                self.file = None;
                continue;
            }
            let corrupt = |reason: &str| LogError::Corrupt {
                path: path.clone(),
                offset: *offset,
                reason: reason.to_owned(),
            };
            if n < frame.len() {
                return Err(corrupt("a frame is cut short"));
            }
            let len = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(frame[4..].try_into().expect("4 bytes"));
            if len > MAX_RECORD {
                return Err(corrupt("a record's length is out of bounds"));
            }
            self.payload.resize(len as usize, 0);
            let n = read_full(reader, &mut self.payload).map_err(|e| io_error(path, e))?;
            if n < self.payload.len() {
                return Err(corrupt("a record is cut short"));
            }
            if crc::hash(&self.payload) != crc {
                return Err(corrupt("a record fails its checksum"));
            }
            *offset += FRAME + u64::from(len);
            self.at = Position {
                seq: self.at.seq + 1,
                byte: self.at.byte + FRAME + u64::from(len),
            };
            return Ok(Some(&self.payload));
        }
        Err(io_error(
            &self.log.inner.dir,
            format!("record {} is missing from the segments", self.at.seq),
        ))
    }

    /// Skips to the next segment after damage; returns what was skipped, in records.
    pub fn skip_segment(&mut self) -> u64 {
        let next = {
            let shared = self.log.shared();
            shared
                .segments
                .iter()
                .find(|s| s.base.seq > self.at.seq)
                .map_or(shared.durable, |s| s.base)
        };
        let skipped = next.seq - self.at.seq;
        self.seek(next);
        skipped
    }

    fn open(&mut self) -> Result<(), LogError> {
        let segment = {
            let shared = self.log.shared();
            let first = shared.segments.front().map(|s| s.base).unwrap_or_default();
            if self.at.seq < first.seq {
                return Err(LogError::Gone {
                    asked: self.at.seq,
                    first: first.seq,
                });
            }
            *shared
                .segments
                .iter()
                .rev()
                .find(|s| s.base.seq <= self.at.seq)
                .expect("a segment at or before the position")
        };
        let path = segment_path(&self.log.inner.dir, segment.base.seq);
        let mut file = File::open(&path).map_err(|e| io_error(&path, e))?;
        let offset = HEADER + (self.at.byte - segment.base.byte);
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| io_error(&path, e))?;
        self.file = Some((BufReader::with_capacity(256 << 10, file), path, offset));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> LogOptions {
        LogOptions {
            segment_bytes: 1024,
            max_bytes: 1 << 20,
            commit_interval: Duration::from_millis(2),
            fsync: false,
        }
    }

    /// A reader holding everything from the start.
    fn held() -> HashMap<String, Position> {
        HashMap::from([("p".to_owned(), Position::default())])
    }

    fn batch(records: &[&str]) -> Batch {
        let mut batch = Batch::default();
        for r in records {
            batch.push(|out| out.extend_from_slice(r.as_bytes()));
        }
        batch
    }

    fn read_all(reader: &mut Reader) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(r) = reader.next().unwrap() {
            out.push(String::from_utf8(r.to_vec()).unwrap());
        }
        out
    }

    #[test]
    fn records_survive_reopening_across_segments_and_read_segments_go() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..200).map(|i| format!("record {i}")).collect();
        {
            let log = Log::open(dir.path(), options(), held()).unwrap();
            for chunk in names.chunks(10) {
                let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                log.try_append(&batch(&refs)).unwrap();
            }
            log.close();
        }
        let log = Log::open(dir.path(), options(), held()).unwrap();
        assert!(log.status().segments > 2, "{:?}", log.status());
        let mut reader = log.reader(log.first());
        assert_eq!(read_all(&mut reader), names);
        // A reader from the middle starts there.
        let middle = {
            let mut r = log.reader(Position::default());
            for _ in 0..150 {
                r.next().unwrap();
            }
            r.position()
        };
        assert_eq!(read_all(&mut log.reader(middle)), names[150..]);
        log.hold("p", middle);
        delete_read(&log.inner);
        let status = log.status();
        assert!(status.first.seq <= 150 && status.first.seq > 0, "{status:?}");
        assert!(matches!(
            log.reader(Position::default()).next(),
            Err(LogError::Gone { .. })
        ));
    }

    #[test]
    fn a_torn_tail_is_truncated_at_the_last_good_record() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = Log::open(
                dir.path(),
                LogOptions {
                    segment_bytes: 1 << 20,
                    ..options()
                },
                held(),
            )
            .unwrap();
            log.try_append(&batch(&["one", "two", "three"])).unwrap();
            log.close();
        }
        let path = segment_path(dir.path(), 0);
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len();
        bytes[len - 1] ^= 0xff; // the last record fails its checksum
        bytes.extend_from_slice(&[7, 0, 0]); // and a torn frame after it
        std::fs::write(&path, &bytes).unwrap();
        let log = Log::open(dir.path(), options(), held()).unwrap();
        assert_eq!(log.durable().seq, 2);
        assert_eq!(read_all(&mut log.reader(Position::default())), ["one", "two"]);
        log.try_append(&batch(&["four"])).unwrap();
        log.commit().unwrap();
        assert_eq!(
            read_all(&mut log.reader(Position::default())),
            ["one", "two", "four"]
        );
    }

    #[test]
    fn the_bound_refuses_appends_until_the_reader_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(
            dir.path(),
            LogOptions {
                max_bytes: 100,
                ..options()
            },
            held(),
        )
        .unwrap();
        let ten = batch(&["0123456789"; 5]); // 5 × 18 bytes
        log.try_append(&ten).unwrap();
        assert!(matches!(
            log.try_append(&ten),
            Err(LogError::Full { unread: 90, max: 100 })
        ));
        log.commit().unwrap();
        let mut reader = log.reader(Position::default());
        read_all(&mut reader);
        log.hold("p", reader.position());
        log.try_append(&ten).unwrap();
    }
}
