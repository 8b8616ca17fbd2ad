//! The data directory's lock: one process per `--data-dir`.
//!
//! Two processes on one directory would each count visits in memory and overwrite each other's
//! file, losing about half of them. The first process takes an exclusive `flock(2)` on
//! `DIR/lock` and writes its pid there; a second one finds the lock taken and refuses to start.
//! The kernel drops the lock when the holder exits, however it exits (SIGKILL included), so a
//! stale file never blocks a restart; the file itself stays, and is harmless.
//!
//! The directory is held open from then on ([`DataDir`]), and the lock file is opened in it
//! without following a link: a `lock` that is a symbolic link (or a hard link to another file)
//! is refused, never truncated. A lock only excludes others while the path leads to it: once the
//! directory or the lock file is removed or replaced, a second process can start on the same
//! path. [`DataDir::check`] tells, and the service stops writing from then on.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, OFlags};

use crate::dirfd::{Dir, Id, Refused};

/// Name of the lock file inside the data directory.
pub const LOCK_NAME: &str = "lock";

/// Most of the lock file a refusal reads (a pid and a newline).
const PID_BYTES: u64 = 32;

/// The data directory, held open, and its lock, held until dropped (or until every process
/// sharing the descriptors ends: the visits writer inherits them).
#[derive(Debug)]
pub struct DataDir {
    dir: Dir,
    _lock: File,
    lock_id: Id,
}

impl DataDir {
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// `Ok(Some(why))` once the path no longer leads to this directory, or its lock file is no
    /// longer the one this process locked (removed or replaced): another process could then
    /// lock the path and start, and writing here would go behind its back. `Err` when that
    /// cannot be checked now (an I/O or permission error), which proves nothing either way.
    pub fn check(&self) -> io::Result<Option<String>> {
        if let Some(why) = self.dir.moved()? {
            return Ok(Some(why));
        }
        let path = self.dir.join(LOCK_NAME);
        match self.dir.id_of(LOCK_NAME) {
            Ok(id) if id == self.lock_id => Ok(None),
            Ok(_) => Ok(Some(format!(
                "the lock file {} was replaced: it is no longer the one this process locked",
                path.display()
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Some(format!(
                "the lock file {} was removed",
                path.display()
            ))),
            Err(e) => Err(e),
        }
    }
}

#[derive(Debug)]
pub enum LockError {
    /// Another live process holds the lock; `pid` is what it wrote in the file.
    Held { dir: PathBuf, pid: Option<u32> },
    /// Something other than a regular file of its own has the lock file's name (`what` says
    /// what: a symbolic link and its target, a directory, a file with other hard links).
    NotAFile { path: PathBuf, what: String },
    /// The directory or the lock file cannot be created, opened or locked.
    Io {
        path: PathBuf,
        what: &'static str,
        error: io::Error,
    },
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Held { dir, pid } => {
                let holder = pid.map_or_else(
                    || "another warpwatch process (its pid is not yet recorded)".to_owned(),
                    |p| format!("another warpwatch process, pid {p}"),
                );
                write!(
                    f,
                    "the data directory {} is in use by {holder} (it holds the lock {}; so \
                     does its visits writer process, which can outlive it while stuck on a hung \
                     disk). Two processes on one directory would lose visits: stop the other \
                     one, or give this one its own --data-dir / WARPWATCH_DATA_DIR.",
                    dir.display(),
                    dir.join(LOCK_NAME).display()
                )
            }
            LockError::NotAFile { path, what } => write!(
                f,
                "the lock file {} is {what}: refusing to open it (the service would truncate \
                 and overwrite what it leads to). Remove it (rm {}); the service creates its own.",
                path.display(),
                path.display()
            ),
            LockError::Io { path, what, error } => write!(
                f,
                "cannot {what} {}: {error}. The data directory must be a directory the service \
                 user can write to (--data-dir / WARPWATCH_DATA_DIR).",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LockError {}

/// Takes the lock of `dir`, creating the directory if needed, and records this process's pid.
pub fn lock(dir: &Path) -> Result<DataDir, LockError> {
    let path = dir.join(LOCK_NAME);
    let io_error = |what, at: &Path, error| LockError::Io {
        path: at.to_owned(),
        what,
        error,
    };
    fs::create_dir_all(dir).map_err(|e| io_error("create the data directory", dir, e))?;
    let held = Dir::open(dir).map_err(|e| io_error("open the data directory", dir, e))?;
    // Non-blocking: a FIFO in its place must not hang the start (it is refused just after).
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NONBLOCK;
    let mut file = match held.open_file(LOCK_NAME, flags, 0o666) {
        Ok(file) => file,
        Err(Refused::NotAFile(what)) => return Err(LockError::NotAFile { path, what }),
        Err(Refused::Io(e)) => return Err(io_error("open the lock file", &path, e)),
    };
    let stat =
        rustix::fs::fstat(&file).map_err(|e| io_error("open the lock file", &path, e.into()))?;
    // A hard link to another file would have that file truncated below.
    if stat.st_nlink > 1 {
        return Err(LockError::NotAFile {
            path,
            what: format!(
                "a file with {} names (a hard link to another file?)",
                stat.st_nlink
            ),
        });
    }
    if let Err(e) = rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
        let error = io::Error::from(e);
        if error.kind() == io::ErrorKind::WouldBlock {
            return Err(LockError::Held {
                dir: dir.to_owned(),
                pid: recorded_pid(&mut file),
            });
        }
        return Err(io_error("lock", &path, error));
    }
    let pid = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.write_all(pid.as_bytes()))
        .map_err(|e| io_error("write the lock file", &path, e))?;
    let lock_id = Id::of(&file).map_err(|e| io_error("open the lock file", &path, e))?;
    Ok(DataDir {
        dir: held,
        _lock: file,
        lock_id,
    })
}

fn recorded_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.take(PID_BYTES).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_one_directory_is_refused_until_the_first_is_dropped() {
        let dir = std::env::temp_dir().join(format!("warpwatch-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let first = lock(&dir).unwrap();
        // flock locks belong to the open file description: a second open in the same process
        // conflicts like another process would.
        match lock(&dir) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        drop(lock(&dir).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }
}
