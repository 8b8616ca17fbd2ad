//! The visit count: an atomic counter in memory, persisted to `<data dir>/visits`.
//!
//! File format: the count in decimal followed by a newline. Writes are atomic (write a temp file,
//! fsync it, rename it over `visits`, fsync the directory), so after a crash or SIGKILL the file
//! holds either the previous or the new count, never a torn one. A file that does not parse is
//! never reset to 0: [`VisitStore::open`] refuses it and the service does not start. Nor is
//! anything but a regular file of at most [`MAX_FILE_BYTES`] read: a symbolic link (dangling or
//! not: a volume not mounted yet must not look like a first start), a FIFO, a device or a huge
//! file in its place is refused without blocking and without reading it whole. Every file is
//! reached through the held data directory without following links (see [`crate::dirfd`]); the
//! temporary file is created with `O_EXCL`, so nothing already there is ever written through. At
//! `u64::MAX` the count saturates (logged once) instead of wrapping to 0.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use log::{error, info, warn};
use rustix::fs::OFlags;

use crate::dirfd::{Dir, Refused};
use crate::metrics;

/// Name of the file inside the data directory.
pub const FILE_NAME: &str = "visits";
const TEMP_NAME: &str = ".visits.tmp";

/// Largest visits file that is read: 20 digits (`u64::MAX`) with room for surrounding whitespace.
pub const MAX_FILE_BYTES: u64 = 64;

/// Why the stored count cannot be loaded. The service must not start on these.
#[derive(Debug)]
pub enum LoadError {
    Unreadable {
        path: PathBuf,
        error: io::Error,
    },
    Corrupt {
        path: PathBuf,
        found: String,
    },
    /// Something other than a regular file (a symbolic link, a FIFO, a directory, a device)
    /// has the file's name.
    NotAFile {
        path: PathBuf,
        kind: String,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Unreadable { path, error } => write!(
                f,
                "cannot read the visits file {}: {error}. Refusing to start rather than reset the count to 0. \
                 Fix the file's ownership or permissions (it must be readable and writable by the service user), \
                 then start again.",
                path.display()
            ),
            LoadError::Corrupt { path, found } => write!(
                f,
                "the visits file {} is corrupt: expected a decimal count such as 42, found {found}. \
                 Refusing to start rather than reset the count to 0. Restore the file from a backup, \
                 or write the right count into it (echo 1234 > {}), or delete it to start again from 0 \
                 on purpose.",
                path.display(),
                path.display()
            ),
            LoadError::NotAFile { path, kind } => write!(
                f,
                "cannot read the visits file {}: it is {kind}, not a regular file. Refusing to \
                 start rather than block on it, follow it or reset the count to 0. Move it away \
                 and put the count in a plain file there (echo 1234 > {}), or delete it to start \
                 again from 0 on purpose.{}",
                path.display(),
                path.display(),
                if kind.starts_with("a symbolic link") {
                    " Links in the data directory are never followed: to keep the count on \
                     another volume, make that volume's directory the data directory."
                } else {
                    ""
                }
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// How much of a corrupt file the refusal message quotes.
const SHOWN_BYTES: usize = 40;

/// Why a write of the visits file did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// The OS refused (disk full, read-only volume, something in the temp file's place, ...):
    /// retried on the next flush.
    Failed(String),
    /// The data directory is no longer this process's (removed or replaced, see
    /// [`crate::datadir::DataDir::check`]): never retried, so no write goes behind the back of a
    /// process that took the path since.
    Lost(String),
}

#[derive(Debug)]
pub struct VisitStore {
    count: AtomicU64,
    /// The visits file's path (`None`: in memory only).
    file: Option<PathBuf>,
    /// The count the file held at startup.
    loaded: u64,
    /// The count last written successfully (`None` before the first write of this run).
    written: Mutex<Option<u64>>,
    /// Since when a write has gone unanswered for too long (a stuck disk; the flusher decides).
    stalled: Mutex<Option<Instant>>,
    /// Why the data directory is no longer written at all (set once, for good).
    lost: Mutex<Option<String>>,
    /// Why the last write failed, while it keeps failing. A separate lock, never held across
    /// I/O: `/readyz` and `/metrics` read it on the async runtime, and must not wait for an
    /// fsync on a slow or stuck disk (that would stall every request on the runtime thread).
    error: Mutex<Option<String>>,
    /// Set once the count reached `u64::MAX`, so the refusal is logged once.
    saturated: AtomicBool,
}

impl VisitStore {
    /// A store that keeps the count in memory only.
    pub fn in_memory() -> VisitStore {
        VisitStore::new(None, 0)
    }

    fn new(file: Option<PathBuf>, loaded: u64) -> VisitStore {
        VisitStore {
            count: AtomicU64::new(loaded),
            file,
            loaded,
            written: Mutex::new(None),
            stalled: Mutex::new(None),
            lost: Mutex::new(None),
            error: Mutex::new(None),
            saturated: AtomicBool::new(false),
        }
    }

    /// Loads the count from `dir/visits`; a missing file (first run) starts at 0.
    pub fn open(dir: &Dir) -> Result<VisitStore, LoadError> {
        let path = dir.join(FILE_NAME);
        let count = match read_bounded(dir) {
            Ok((bytes, len)) => (len <= MAX_FILE_BYTES)
                .then(|| parse(&bytes))
                .flatten()
                .ok_or_else(|| LoadError::Corrupt {
                    path: path.clone(),
                    found: describe(&bytes, len),
                })?,
            Err(Refusal::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                info!("no visits file at {} yet: starting from 0", path.display());
                0
            }
            Err(Refusal::Io(error)) => return Err(LoadError::Unreadable { path, error }),
            Err(Refusal::NotAFile(kind)) => return Err(LoadError::NotAFile { path, kind }),
        };
        metrics::VISITS_TOTAL.inc_by(count);
        Ok(VisitStore::new(Some(path), count))
    }

    /// Counts one visit; returns the new count. At `u64::MAX` the count stays there: wrapping
    /// would persist 0 over the real count.
    pub fn visit(&self) -> u64 {
        match self
            .count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
        {
            Ok(previous) => {
                metrics::VISITS_TOTAL.inc();
                previous + 1
            }
            Err(full) => {
                if !self.saturated.swap(true, Ordering::Relaxed) {
                    error!(
                        "the visit count reached its maximum ({full}): further visits are not \
                         counted. Reset it on purpose: stop the service, write the count you want \
                         into the visits file, start it again."
                    );
                }
                full
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// `Err(reason)` while the data directory is lost, while a write is stalled (see
    /// [`VisitStore::stalled`]), or while the last attempt to write the file failed.
    pub fn health(&self) -> Result<(), String> {
        if let Some(why) = self.lost() {
            return Err(why);
        }
        if let Some(since) = *lock(&self.stalled) {
            return Err(format!(
                "the visits writer has not answered for {}s (a stuck disk?): {}",
                since.elapsed().as_secs(),
                self.behind()
            ));
        }
        match &*lock(&self.error) {
            None => Ok(()),
            Some(e) => Err(e.clone()),
        }
    }

    /// The count, when it differs from what was last written (`None` when there is nothing to
    /// write, no data directory, or the directory is lost).
    pub fn unwritten(&self) -> Option<u64> {
        self.file.as_ref()?;
        if lock(&self.lost).is_some() {
            return None;
        }
        let count = self.count();
        (*lock(&self.written) != Some(count)).then_some(count)
    }

    /// Whether the data directory is lost for good (nothing is written any more).
    pub fn is_lost(&self) -> bool {
        self.lost().is_some()
    }

    /// Why the data directory is lost for good, once it is.
    pub fn lost(&self) -> Option<String> {
        lock(&self.lost).clone()
    }

    /// How far the file is behind the count, in words: e.g. `the visits file holds 100, the
    /// count is 400`.
    pub fn behind(&self) -> String {
        format!(
            "the visits file holds {}, the count is {}",
            self.on_disk(),
            self.count()
        )
    }

    /// The count the file is known to hold: the last one written, else the one loaded.
    pub fn on_disk(&self) -> u64 {
        lock(&self.written).unwrap_or(self.loaded)
    }

    /// Called when a write sent at `since` has gone unanswered for too long: logged, counted as a
    /// failed write, and reported by [`VisitStore::health`] until the writer answers.
    pub fn stalled(&self, since: Instant) {
        metrics::VISITS_FLUSH_FAILURES_TOTAL.inc();
        *lock(&self.stalled) = Some(since);
        error!(
            "the visits writer has not answered for {}s (a stuck disk?): {}; visits are kept in \
             memory, and a stop waits for the writer only for a bounded time",
            since.elapsed().as_secs(),
            self.behind()
        );
    }

    /// Takes the outcome of writing `count` (`None`: of checking the directory only), by the
    /// flusher's writer process (`Err` holds why not): logs it, keeps it for
    /// [`VisitStore::health`] and the metrics, and returns the reason a failure is reported with.
    pub fn record(&self, count: Option<u64>, result: Result<(), WriteError>) -> Result<(), String> {
        let path = self.file.clone().unwrap_or_default();
        if let Some(since) = lock(&self.stalled).take() {
            info!(
                "the visits writer answered again after {}s",
                since.elapsed().as_secs()
            );
        }
        match result {
            Ok(()) => {
                let mut written = lock(&self.written);
                if let Some(count) = count {
                    // A later count may already be written; never step back to an older one.
                    if written.is_none_or(|w| w < count) {
                        *written = Some(count);
                    }
                }
                let persisted = written.unwrap_or(self.loaded);
                drop(written);
                if lock(&self.error).take().is_some() {
                    info!(
                        "visits file {} is writable again: persisted {persisted}",
                        path.display()
                    );
                }
                Ok(())
            }
            Err(WriteError::Lost(why)) => {
                metrics::VISITS_FLUSH_FAILURES_TOTAL.inc();
                let reason = format!("{why}; visits are no longer persisted");
                let mut lost = lock(&self.lost);
                if lost.is_none() {
                    *lost = Some(reason.clone());
                    drop(lost);
                    error!(
                        "{why}. Another process may have taken the path since: to never write \
                         behind its back, this one stops writing the visits file for good and \
                         keeps counting in memory ({}). Restart it to take the directory anew; \
                         if the directory was removed by mistake, write the count into the new \
                         visits file first.",
                        self.behind()
                    );
                }
                Err(reason)
            }
            Err(WriteError::Failed(e)) => {
                let count = count.unwrap_or_else(|| self.count());
                metrics::VISITS_FLUSH_FAILURES_TOTAL.inc();
                let reason = format!("cannot write visits file {}: {e}", path.display());
                let previous = lock(&self.error).replace(reason.clone());
                if previous.as_deref() != Some(reason.as_str()) {
                    error!("{reason}; keeping {count} visits in memory and retrying");
                } else {
                    warn!("{reason} (still failing; {count} visits kept in memory)");
                }
                Err(reason)
            }
        }
    }
}

/// A poisoned lock only means a panic elsewhere; the data behind it is still whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The count in `bytes`: ASCII digits, optionally surrounded by whitespace.
fn parse(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

enum Refusal {
    Io(io::Error),
    NotAFile(String),
}

/// At most [`MAX_FILE_BYTES`] + 1 bytes of the visits file in `dir` (enough to tell a too-long
/// file), and the file's length. Opened non-blocking, so a FIFO in its place cannot hang startup
/// before the check, and without following a link.
fn read_bounded(dir: &Dir) -> Result<(Vec<u8>, u64), Refusal> {
    let file = dir
        .open_file(FILE_NAME, OFlags::RDONLY | OFlags::NONBLOCK, 0)
        .map_err(|e| match e {
            Refused::Io(e) => Refusal::Io(e),
            Refused::NotAFile(kind) => Refusal::NotAFile(kind),
        })?;
    let meta = file.metadata().map_err(Refusal::Io)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(Refusal::Io)?;
    let len = meta.len().max(bytes.len() as u64);
    Ok((bytes, len))
}

/// Quotes the start of a bad file of `len` bytes (`bytes` is its beginning).
fn describe(bytes: &[u8], len: u64) -> String {
    if len == 0 {
        return "an empty file".to_owned();
    }
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN_BYTES)]);
    let more = if len > SHOWN_BYTES as u64 { "..." } else { "" };
    let limit = if len > MAX_FILE_BYTES {
        format!("; a count takes at most {MAX_FILE_BYTES} bytes")
    } else {
        String::new()
    };
    format!("{shown:?}{more} ({len} bytes{limit})")
}

/// Writes `count` as `dir/visits`: temp file (created with `O_EXCL`), fsync, `ready_to_rename`
/// (a last check that the directory is still this process's), rename, fsync of the directory.
/// Whatever fails, the temp file is removed.
pub fn write_atomically(
    dir: &Dir,
    count: u64,
    ready_to_rename: impl FnOnce() -> Result<(), WriteError>,
) -> Result<(), WriteError> {
    let failed = |e: io::Error| WriteError::Failed(e.to_string());
    let mut file = create_temp(dir)?;
    let written = file
        .write_all(format!("{count}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(failed)
        .and_then(|()| ready_to_rename())
        .and_then(|()| dir.rename(TEMP_NAME, FILE_NAME).map_err(failed));
    drop(file);
    if written.is_err() {
        let _ = dir.remove(TEMP_NAME);
        return written;
    }
    // The rename is durable only once the directory entry is.
    dir.sync().map_err(failed)
}

/// Creates the temp file, refusing whatever already has its name, except a regular file: the
/// leftover of a write cut short (SIGKILL, power loss), removed first. Only this process writes
/// in the directory (it holds the lock), so nothing else of its own can be there.
fn create_temp(dir: &Dir) -> Result<File, WriteError> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL;
    let created = match dir.open_file(TEMP_NAME, flags, 0o666) {
        Err(Refused::Io(e)) if e.kind() == io::ErrorKind::AlreadyExists => dir
            .remove(TEMP_NAME)
            .map_err(Refused::Io)
            .and_then(|()| dir.open_file(TEMP_NAME, flags, 0o666)),
        other => other,
    };
    created.map_err(|e| match e {
        Refused::Io(e) => WriteError::Failed(e.to_string()),
        Refused::NotAFile(kind) => WriteError::Failed(format!(
            "its temporary file {} is {kind}: refusing to write through it (remove it; the \
             service creates its own)",
            dir.join(TEMP_NAME).display()
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_plain_counts() {
        assert_eq!(parse(b"42\n"), Some(42));
        assert_eq!(parse(b" 7 "), Some(7));
        for bad in [
            &b""[..],
            b"\n",
            b"-1",
            b"+1",
            b"4 2",
            b"abc",
            b"99999999999999999999999",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn describes_bad_content() {
        assert_eq!(describe(b"", 0), "an empty file");
        assert!(describe(b"garbage", 7).starts_with("\"garbage\""));
        assert!(describe(b"1111", 1 << 30).contains("1073741824 bytes; a count takes at most"));
    }
}
