//! `tail`: follows the files a path or glob names, line by line.
//!
//! Each file is known by its identity (device, inode), not its path, so a rename does
//! not confuse it. Every `poll` the glob's directory is looked at:
//!
//! - a path that names a file not followed yet starts being followed: from its
//!   beginning, or at the first look of an input new to the daemon, from its end (or its
//!   beginning with `start-at = "beginning"`);
//! - a followed file whose path now names another file, or nothing, was rotated by
//!   rename (or deleted): it is still read, before any other, until it has been quiet
//!   at its end for `rotated-grace-ms`;
//! - a followed file smaller than where the input has read to was truncated in place
//!   (copy-truncate): it is read again from its beginning.
//!
//! A line longer than `max-line` bytes is cut to it (the rest up to the newline is read
//! and dropped, never held) and counted. A last line without its newline waits for it,
//! except in a rotated file at the end of its grace, where it is taken as it is.
//!
//! The position is, for each file, its identity, its path and the offset after the last
//! line whose messages are in the log. At a restart a file is found again by its path,
//! or, rotated since, by its identity in the same directory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{FileStatus, Record, Source};
use crate::input::{StartAt, TailConfig, glob_matches};
use corral::now_ns;

/// How much is read from a file at a time.
const CHUNK: usize = 64 << 10;

#[derive(Serialize, Deserialize, Default)]
struct Saved {
    files: Vec<SavedFile>,
}

#[derive(Serialize, Deserialize)]
struct SavedFile {
    path: String,
    dev: u64,
    ino: u64,
    offset: u64,
}

struct Followed {
    path: PathBuf,
    shown: Arc<str>,
    dev: u64,
    ino: u64,
    file: File,
    /// Where the file has been read to.
    read_at: u64,
    /// Where the line being read starts.
    line_start: u64,
    /// The line being read, up to `max_line` bytes.
    partial: Vec<u8>,
    /// Whether the line being read is longer than `max_line`.
    cut: bool,
    /// After the last line handed out.
    handed: u64,
    /// After the last line delivered (in the log).
    delivered: u64,
    size: u64,
    /// When the file was seen rotated away, and when it last grew since.
    rotated: Option<Instant>,
    /// Rotated and read to its end: dropped once its last lines are delivered.
    finished: bool,
}

pub(crate) struct Tail {
    name: String,
    config: TailConfig,
    max_line: usize,
    files: Vec<Followed>,
    /// Whether the files are looked at for the first time (where `start-at` applies).
    first_look: bool,
    next_look: Instant,
    buf: Vec<u8>,
    /// Lines cut since the stats last took them.
    pub(crate) cut: u64,
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

impl Tail {
    /// A tail resuming from `saved` (a position it wrote), or new to the daemon.
    pub(crate) fn new(name: &str, config: TailConfig, max_line: usize, saved: Option<&[u8]>) -> Tail {
        let mut tail = Tail {
            name: name.to_owned(),
            max_line,
            files: Vec::new(),
            first_look: saved.is_none(),
            next_look: Instant::now(),
            buf: vec![0; CHUNK],
            cut: 0,
            config,
        };
        if let Some(saved) = saved {
            match serde_json::from_slice::<Saved>(saved) {
                Ok(saved) => {
                    for file in saved.files {
                        tail.resume(file);
                    }
                }
                Err(e) => {
                    tracing::error!(
                        plugin = name,
                        "the input's checkpoint cannot be read ({e}): following its files as new"
                    );
                    tail.first_look = true;
                }
            }
        }
        tail.look();
        tail
    }

    /// Finds a file of the checkpoint again: at its path, or rotated, by its identity
    /// in the same directory.
    fn resume(&mut self, saved: SavedFile) {
        let path = PathBuf::from(&saved.path);
        let at_path = std::fs::metadata(&path)
            .ok()
            .filter(|m| identity(m) == (saved.dev, saved.ino));
        let found = match at_path {
            Some(_) => Some((path.clone(), false)),
            None => path.parent().and_then(|dir| {
                std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
                    let meta = entry.metadata().ok()?;
                    (meta.is_file() && identity(&meta) == (saved.dev, saved.ino))
                        .then(|| (entry.path(), true))
                })
            }),
        };
        let Some((found, rotated)) = found else {
            tracing::warn!(plugin = %self.name, path = %saved.path, "a file of the input's checkpoint is gone: what it held after offset {} was not read", saved.offset);
            return;
        };
        match self.open(&found, saved.offset) {
            Some(mut followed) => {
                if rotated {
                    followed.rotated = Some(Instant::now());
                }
                self.files.push(followed);
            }
            None => {
                tracing::warn!(plugin = %self.name, path = %found.display(), "cannot open a file of the input's checkpoint")
            }
        }
    }

    /// Opens `path` to be followed from `offset` (from 0 if it is shorter now).
    fn open(&self, path: &Path, offset: u64) -> Option<Followed> {
        let mut file = File::open(path).ok()?;
        let meta = file.metadata().ok()?;
        let offset = if meta.len() < offset { 0 } else { offset };
        file.seek(SeekFrom::Start(offset)).ok()?;
        let (dev, ino) = identity(&meta);
        Some(Followed {
            path: path.to_owned(),
            shown: Arc::from(path.display().to_string()),
            dev,
            ino,
            file,
            read_at: offset,
            line_start: offset,
            partial: Vec::new(),
            cut: false,
            handed: offset,
            delivered: offset,
            size: meta.len(),
            rotated: None,
            finished: false,
        })
    }

    /// Looks at the glob's directory: new files, rotated ones, truncated ones.
    fn look(&mut self) {
        self.next_look = Instant::now() + self.config.poll;
        let dir = self
            .config
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        let pattern = self
            .config
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut seen: HashMap<PathBuf, (u64, u64, u64)> = HashMap::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !glob_matches(&pattern, &name) {
                    continue;
                }
                // Follow symbolic links: the file is what is read.
                let Ok(meta) = std::fs::metadata(entry.path()) else {
                    continue;
                };
                if meta.is_file() {
                    let (dev, ino) = identity(&meta);
                    seen.insert(entry.path(), (dev, ino, meta.len()));
                }
            }
        }
        // Files followed: rotated away, truncated, or grown.
        for followed in &mut self.files {
            let here = seen.get(&followed.path).copied();
            match here {
                Some((dev, ino, size)) if (dev, ino) == (followed.dev, followed.ino) => {
                    followed.size = size;
                    if size < followed.read_at {
                        tracing::info!(plugin = %self.name, path = %followed.shown, "file truncated (copy-truncate): reading it again from its beginning");
                        let _ = followed.file.seek(SeekFrom::Start(0));
                        followed.read_at = 0;
                        followed.line_start = 0;
                        followed.partial.clear();
                        followed.cut = false;
                        followed.handed = 0;
                        followed.delivered = 0;
                    }
                }
                _ => {
                    // Renamed within the glob: follow it under its new path.
                    let moved = seen
                        .iter()
                        .find(|(_, (dev, ino, _))| (*dev, *ino) == (followed.dev, followed.ino));
                    if let Some((path, (_, _, size))) = moved {
                        followed.path = path.clone();
                        followed.shown = Arc::from(path.display().to_string());
                        followed.size = *size;
                    } else if followed.rotated.is_none() {
                        tracing::info!(plugin = %self.name, path = %followed.shown, "file rotated: reading it to its end");
                        followed.rotated = Some(Instant::now());
                    }
                    if let Ok(meta) = followed.file.metadata() {
                        followed.size = meta.len();
                    }
                }
            }
        }
        // Paths naming a file not followed: new files.
        let mut new: Vec<(PathBuf, u64)> = seen
            .into_iter()
            .filter(|(_, (dev, ino, _))| !self.files.iter().any(|f| (f.dev, f.ino) == (*dev, *ino)))
            .map(|(path, (_, _, size))| (path, size))
            .collect();
        new.sort();
        for (path, size) in new {
            let offset = if self.first_look && self.config.start_at == StartAt::End {
                size
            } else {
                0
            };
            if let Some(followed) = self.open(&path, offset) {
                tracing::info!(plugin = %self.name, path = %path.display(), offset, "following a file");
                self.files.push(followed);
            }
        }
        self.first_look = false;
        // Rotated files first (oldest first), then the others by path.
        self.files
            .sort_by(|a, b| (a.rotated.is_none(), &a.path).cmp(&(b.rotated.is_none(), &b.path)));
    }

    /// Reads lines of `followed` into `out`; returns whether it stopped at the bounds.
    #[allow(clippy::too_many_arguments)]
    fn read_file(
        followed: &mut Followed,
        buf: &mut [u8],
        max_line: usize,
        cut: &mut u64,
        out: &mut Vec<Record>,
        max: usize,
        max_bytes: usize,
        bytes: &mut usize,
    ) -> bool {
        loop {
            if out.len() >= max || *bytes >= max_bytes {
                return true;
            }
            let n = match followed.file.read(buf) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(path = %followed.shown, "cannot read the file: {e}");
                    return false;
                }
            };
            let chunk = &buf[..n];
            let mut start = 0;
            while let Some(newline) = chunk[start..].iter().position(|b| *b == b'\n') {
                let line = &chunk[start..start + newline];
                Self::take(followed, line, max_line);
                let end = followed.read_at + (start + newline + 1) as u64;
                Self::hand(followed, end, cut, out, bytes);
                start += newline + 1;
            }
            Self::take(followed, &chunk[start..], max_line);
            followed.read_at += n as u64;
            followed.size = followed.size.max(followed.read_at);
            if start < n && (out.len() >= max || *bytes >= max_bytes) {
                // The bounds came mid-line: the rest of the line is read next time.
                return true;
            }
        }
    }

    /// Adds `bytes` of the line being read, up to `max_line`.
    fn take(followed: &mut Followed, bytes: &[u8], max_line: usize) {
        let room = max_line.saturating_sub(followed.partial.len());
        if bytes.len() > room {
            followed.cut = true;
        }
        followed
            .partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Hands out the line being read, which ends at `end`.
    fn hand(followed: &mut Followed, end: u64, cut: &mut u64, out: &mut Vec<Record>, bytes: &mut usize) {
        let mut data = std::mem::take(&mut followed.partial);
        if data.last() == Some(&b'\r') && !followed.cut {
            data.pop();
        }
        if followed.cut {
            *cut += 1;
            followed.cut = false;
        }
        *bytes += data.len();
        out.push(Record {
            data,
            path: followed.shown.clone(),
            offset: followed.line_start,
            peer: Arc::from(""),
            received_ns: now_ns(),
        });
        followed.line_start = end;
        followed.handed = end;
    }
}

impl Source for Tail {
    fn read(&mut self, out: &mut Vec<Record>, max: usize, max_bytes: usize) -> bool {
        // Rotated files read to their end, their last lines delivered: done.
        let name = &self.name;
        self.files.retain(|f| {
            let keep = !f.finished || f.delivered != f.handed;
            if !keep {
                tracing::info!(plugin = %name, path = %f.shown, "rotated file read to its end: no longer followed");
            }
            keep
        });
        if Instant::now() >= self.next_look {
            self.look();
        }
        let mut bytes = 0;
        let grace = self.config.rotated_grace;
        // In order, each to its end (or the bounds): rotated files first.
        for followed in self.files.iter_mut().filter(|f| !f.finished) {
            let before = followed.read_at;
            if Self::read_file(
                followed,
                &mut self.buf,
                self.max_line,
                &mut self.cut,
                out,
                max,
                max_bytes,
                &mut bytes,
            ) {
                return true;
            }
            if let Some(since) = followed.rotated {
                if followed.read_at > before {
                    // Still written to: the grace counts from its last growth.
                    followed.rotated = Some(Instant::now());
                } else if since.elapsed() >= grace {
                    if !followed.partial.is_empty() || followed.cut {
                        let end = followed.read_at;
                        Self::hand(followed, end, &mut self.cut, out, &mut bytes);
                    }
                    followed.finished = true;
                }
            }
        }
        false
    }

    fn delivered(&mut self) {
        for followed in &mut self.files {
            followed.delivered = followed.handed;
        }
    }

    fn position(&self) -> Vec<u8> {
        let saved = Saved {
            files: self
                .files
                .iter()
                .map(|f| SavedFile {
                    path: f.path.display().to_string(),
                    dev: f.dev,
                    ino: f.ino,
                    offset: f.delivered,
                })
                .collect(),
        };
        serde_json::to_vec(&saved).unwrap_or_default()
    }

    fn wait(&mut self, timeout: Duration) {
        let until = self.next_look.min(Instant::now() + timeout);
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
    }

    fn files(&self) -> Vec<FileStatus> {
        self.files
            .iter()
            .map(|f| FileStatus {
                path: f.shown.to_string(),
                dev: f.dev,
                ino: f.ino,
                offset: f.delivered,
                size: f.size,
                rotated: f.rotated.is_some(),
            })
            .collect()
    }

    fn take_cut(&mut self) -> u64 {
        std::mem::take(&mut self.cut)
    }
}
