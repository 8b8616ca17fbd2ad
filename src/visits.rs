//! The visit count: an atomic counter in memory, persisted to `<data dir>/visits`.
//!
//! File format: the count in decimal followed by a newline. Writes are atomic (write a temp file,
//! fsync it, rename it over `visits`, fsync the directory), so after a crash or SIGKILL the file
//! holds either the previous or the new count, never a torn one. A file that does not parse is
//! never reset to 0: [`VisitStore::open`] refuses it and the service does not start. Nor is
//! anything but a regular file of at most [`MAX_FILE_BYTES`] read: a FIFO, a device or a huge file
//! in its place is refused without blocking and without reading it whole. At `u64::MAX` the count
//! saturates (logged once) instead of wrapping to 0.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use log::{error, info, warn};

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
    /// Something other than a regular file (a FIFO, a directory, a device) has the file's name.
    NotAFile {
        path: PathBuf,
        kind: &'static str,
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
                 start rather than block on it or reset the count to 0. Move it away and put the \
                 count in a plain file there (echo 1234 > {}), or delete it to start again from 0 \
                 on purpose.",
                path.display(),
                path.display()
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// How much of a corrupt file the refusal message quotes.
const SHOWN_BYTES: usize = 40;

#[derive(Debug)]
pub struct VisitStore {
    count: AtomicU64,
    dir: Option<PathBuf>,
    /// The count last written successfully (`None` before the first write of this run).
    written: Mutex<Option<u64>>,
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
        VisitStore {
            count: AtomicU64::new(0),
            dir: None,
            written: Mutex::new(None),
            error: Mutex::new(None),
            saturated: AtomicBool::new(false),
        }
    }

    /// Loads the count from `dir/visits`; a missing file (first run) starts at 0.
    pub fn open(dir: &Path) -> Result<VisitStore, LoadError> {
        let path = dir.join(FILE_NAME);
        let count = match read_bounded(&path) {
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
        Ok(VisitStore {
            count: AtomicU64::new(count),
            dir: Some(dir.to_owned()),
            written: Mutex::new(None),
            error: Mutex::new(None),
            saturated: AtomicBool::new(false),
        })
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

    /// `Err(reason)` while the last attempt to write the file failed.
    pub fn health(&self) -> Result<(), String> {
        match &*lock(&self.error) {
            None => Ok(()),
            Some(e) => Err(e.clone()),
        }
    }

    /// Writes the count if it changed since the last successful write. Failures are logged, kept
    /// for [`VisitStore::health`], and retried by the next call; the count in memory is never lost.
    pub fn flush(&self) -> Result<(), String> {
        let Some((dir, count)) = self.unwritten() else {
            return Ok(());
        };
        let result = write_atomically(&dir, count).map_err(|e| e.to_string());
        self.record(count, result)
    }

    /// The data directory and the count, when the count differs from what was last written
    /// (`None` when there is nothing to write, or no data directory).
    pub fn unwritten(&self) -> Option<(PathBuf, u64)> {
        let dir = self.dir.as_ref()?;
        let count = self.count();
        (*lock(&self.written) != Some(count)).then(|| (dir.clone(), count))
    }

    /// Takes the outcome of writing `count` (by [`VisitStore::flush`] or the flusher's writer
    /// process; `Err` holds the OS error): logs it, keeps it for [`VisitStore::health`] and the
    /// metrics, and returns the reason a failure is reported with.
    pub fn record(&self, count: u64, result: Result<(), String>) -> Result<(), String> {
        let path = self
            .dir
            .as_ref()
            .map_or_else(PathBuf::new, |dir| dir.join(FILE_NAME));
        match result {
            Ok(()) => {
                let mut written = lock(&self.written);
                // A later count may already be written; never step back to an older one.
                if written.is_none_or(|w| w < count) {
                    *written = Some(count);
                }
                drop(written);
                if lock(&self.error).take().is_some() {
                    info!(
                        "visits file {} is writable again: persisted {count}",
                        path.display()
                    );
                }
                Ok(())
            }
            Err(e) => {
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
    NotAFile(&'static str),
}

/// At most [`MAX_FILE_BYTES`] + 1 bytes of `path` (enough to tell a too-long file), and the file's
/// length. Opened non-blocking, so a FIFO in its place cannot hang startup before the check.
fn read_bounded(path: &Path) -> Result<(Vec<u8>, u64), Refusal> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(Refusal::Io)?;
    let meta = file.metadata().map_err(Refusal::Io)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(Refusal::NotAFile(if kind.is_fifo() {
            "a FIFO (named pipe)"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "a device"
        }));
    }
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

/// Writes `count` as `dir/visits`: temp file, fsync, rename, fsync of the directory.
pub fn write_atomically(dir: &Path, count: u64) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let temp = dir.join(TEMP_NAME);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)?;
    file.write_all(format!("{count}\n").as_bytes())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, dir.join(FILE_NAME))?;
    // The rename is durable only once the directory entry is.
    File::open(dir)?.sync_all()
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
