//! The data directory's lock: one process per `--data-dir`.
//!
//! Two processes on one directory would each count visits in memory and overwrite each other's
//! file, losing about half of them. The first process takes an exclusive `flock(2)` on
//! `DIR/lock` and writes its pid there; a second one finds the lock taken and refuses to start.
//! The kernel drops the lock when the holder exits, however it exits (SIGKILL included), so a
//! stale file never blocks a restart; the file itself stays, and is harmless.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Name of the lock file inside the data directory.
pub const LOCK_NAME: &str = "lock";

/// Most of the lock file a refusal reads (a pid and a newline).
const PID_BYTES: u64 = 32;

/// Holds the lock until dropped (or the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

#[derive(Debug)]
pub enum LockError {
    /// Another live process holds the lock; `pid` is what it wrote in the file.
    Held { dir: PathBuf, pid: Option<u32> },
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
                    "the data directory {} is in use by {holder} (it holds the lock {}). Two \
                     processes on one directory would lose visits: stop the other one, or give \
                     this one its own --data-dir / WARPWATCH_DATA_DIR.",
                    dir.display(),
                    dir.join(LOCK_NAME).display()
                )
            }
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
pub fn lock(dir: &Path) -> Result<DirLock, LockError> {
    let path = dir.join(LOCK_NAME);
    let io_error = |what, at: &Path, error| LockError::Io {
        path: at.to_owned(),
        what,
        error,
    };
    fs::create_dir_all(dir).map_err(|e| io_error("create the data directory", dir, e))?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error("open the lock file", &path, e))?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = io::Error::last_os_error();
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
    Ok(DirLock { _file: file })
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
