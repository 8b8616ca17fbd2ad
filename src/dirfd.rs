//! A directory held open, and the files in it opened relative to it, never through a symbolic
//! link.
//!
//! The data directory's path is resolved once, at startup (it may itself be a symbolic link, as
//! systemd's `DynamicUser=` state directories are); every file inside it is then reached with
//! `openat`, `renameat` and `fstatat` on the held descriptor, with `O_NOFOLLOW`. A link planted
//! in the directory can therefore never make the service overwrite or truncate another file, and
//! a directory removed or replaced under a running service is never written through its old path
//! (see [`Dir::moved`]).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// A file's identity: its device and inode numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Id {
    dev: u64,
    ino: u64,
}

impl Id {
    /// The identity of an open file.
    pub fn of(file: &File) -> io::Result<Id> {
        Ok(id_of(&rustix::fs::fstat(file)?))
    }
}

fn id_of(stat: &rustix::fs::Stat) -> Id {
    Id {
        dev: stat.st_dev,
        ino: stat.st_ino,
    }
}

/// Why a file in the directory cannot be used.
#[derive(Debug)]
pub enum Refused {
    /// The OS refused (missing, permissions, I/O error, ...).
    Io(io::Error),
    /// Something other than a regular file has the name; what it is, e.g. `a symbolic link to
    /// /etc/passwd` or `a FIFO (named pipe)`.
    NotAFile(String),
}

impl From<io::Error> for Refused {
    fn from(e: io::Error) -> Refused {
        Refused::Io(e)
    }
}

impl From<rustix::io::Errno> for Refused {
    fn from(e: rustix::io::Errno) -> Refused {
        Refused::Io(e.into())
    }
}

#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    id: Id,
}

impl Dir {
    /// Opens the directory at `path` (following a link at `path` itself: only the names inside
    /// are never followed).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let id = id_of(&rustix::fs::fstat(&fd)?);
        Ok(Dir {
            fd,
            path: path.to_owned(),
            id,
        })
    }

    /// The path the directory was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` inside the directory, for messages.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Opens `name` with `flags` (plus `O_NOFOLLOW` and `O_CLOEXEC`; `mode` applies when
    /// `O_CREAT` creates it), and checks that it is a regular file. A symbolic link, dangling or
    /// not, is refused as [`Refused::NotAFile`], as is a directory, FIFO, socket or device.
    pub fn open_file(&self, name: &str, flags: OFlags, mode: u32) -> Result<File, Refused> {
        let opened = rustix::fs::openat(
            &self.fd,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        );
        let fd = match opened {
            Ok(fd) => fd,
            // Whatever refused it (ELOOP for a link under O_NOFOLLOW, EEXIST under O_EXCL, EISDIR
            // for a directory opened to write, ...), say what has the name if it is no regular
            // file.
            Err(e) => {
                return Err(match self.describe(name) {
                    Some(kind) if kind != REGULAR => Refused::NotAFile(kind),
                    _ => Refused::Io(e.into()),
                });
            }
        };
        let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
        if kind != FileType::RegularFile {
            return Err(Refused::NotAFile(kind_name(kind).to_owned()));
        }
        Ok(File::from(fd))
    }

    /// What `name` is, without following it (`None` when nothing has the name): e.g. `a regular
    /// file`, `a symbolic link to /mnt/data/visits`, `a directory`.
    fn describe(&self, name: &str) -> Option<String> {
        let stat = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        let kind = FileType::from_raw_mode(stat.st_mode);
        if kind != FileType::Symlink {
            return Some(kind_name(kind).to_owned());
        }
        let target = rustix::fs::readlinkat(&self.fd, name, Vec::new())
            .map(|t| {
                Path::new(OsStr::from_bytes(t.as_bytes()))
                    .display()
                    .to_string()
            })
            .unwrap_or_else(|_| "an unreadable target".to_owned());
        Some(format!("a symbolic link to {target}"))
    }

    /// The identity of the entry `name`, not following a link (`Err` when it cannot be read,
    /// e.g. it is missing).
    pub fn id_of(&self, name: &str) -> io::Result<Id> {
        Ok(id_of(&rustix::fs::statat(
            &self.fd,
            name,
            AtFlags::SYMLINK_NOFOLLOW,
        )?))
    }

    /// `Some(why)` when the directory's path no longer leads to this directory (it was removed,
    /// moved away or replaced); `Err` when the path cannot be checked (e.g. a permission or I/O
    /// error on the way), which proves nothing either way.
    pub fn moved(&self) -> io::Result<Option<String>> {
        match rustix::fs::stat(&self.path) {
            Ok(stat) if id_of(&stat) == self.id => Ok(None),
            Ok(_) => Ok(Some(format!(
                "the data directory {} is no longer the directory this process locked at \
                 startup (it was removed or moved away, and another took its place)",
                self.path.display()
            ))),
            Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::NOTDIR => {
                Ok(Some(format!(
                    "the data directory {} is gone ({}): it was removed or moved away",
                    self.path.display(),
                    io::Error::from(e)
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Renames `from` over `to`, both in this directory (a link named `to` is replaced, never
    /// followed).
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        Ok(rustix::fs::renameat(&self.fd, from, &self.fd, to)?)
    }

    /// Removes the entry `name` (a link itself, never its target).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?)
    }

    /// fsync of the directory: makes its entries (a rename) durable.
    pub fn sync(&self) -> io::Result<()> {
        Ok(rustix::fs::fsync(&self.fd)?)
    }
}

const REGULAR: &str = "a regular file";

/// What a file of `kind` is, in words. Never a link: [`Dir::describe`] names those with their
/// target, and a descriptor opened with `O_NOFOLLOW` is never one.
fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => REGULAR,
        FileType::Directory => "a directory",
        FileType::Fifo => "a FIFO (named pipe)",
        FileType::Socket => "a socket",
        _ => "a device",
    }
}
