//! The pin directory: owned by the daemon's user, private, and locked for the daemon's life.
//!
//! bpffs is often writable by more users than root, so the configured `recorder.pin_dir` may
//! already exist when the daemon starts, made by someone else. Such a directory is never
//! trusted: pins in it could be anyone's. When it is empty it is replaced by a fresh `0700`
//! directory of our own; when it holds anything it is refused with a sentence naming its owner
//! and what to do. A symbolic link there is replaced (never followed). A trusted directory is
//! owned by the daemon's user and writable by nobody else; it is tightened to `0700`.
//!
//! The daemon holds an exclusive `flock` on the directory for as long as its rings live, so a
//! second daemon on the same pin directory refuses to start, and `flightrec teardown` refuses to
//! pull the pins from under a running daemon. The lock dies with its process: a daemon killed
//! with `SIGKILL` leaves pins, never a stale lock.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::SetupError;

/// Mode of the pin directory.
pub const PIN_DIR_MODE: u32 = 0o700;

/// An open, exclusively locked pin directory; the lock is released when this is dropped.
#[derive(Debug)]
pub struct PinLock {
    path: PathBuf,
    dir: File,
}

impl PinLock {
    /// The pin directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why the pin directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PinDirRefused {
    /// Another process holds the directory's lock.
    #[error(
        "a flightrec daemon{} is using the pin directory {path}: stop it first (a second \
         daemon needs its own recorder.pin_dir)",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked {
        /// The pin directory.
        path: PathBuf,
        /// The process holding the lock, when `/proc/locks` names it.
        pid: Option<u32>,
    },
    /// Someone else made it (or may write into it) and it is not empty.
    #[error(
        "the pin directory {path} belongs to {owner} with mode {mode:o} and is not empty, so \
         its pins cannot be trusted: remove it (`flightrec teardown --pin-dir {path}`) or set \
         recorder.pin_dir to another directory"
    )]
    Untrusted {
        /// The pin directory.
        path: PathBuf,
        /// Its owner, as `uid N (name)`.
        owner: String,
        /// Its permission bits.
        mode: u32,
    },
    /// It is a symbolic link or a file.
    #[error("the pin directory {0} is not a directory (a symbolic link or a file)")]
    NotADirectory(PathBuf),
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// `uid N (name)`, or `uid N` for a number the user database does not know.
fn owner_name(uid: u32) -> String {
    // SAFETY: getpwuid returns a pointer to static storage or null; it is read at once.
    let pw = unsafe { libc::getpwuid(uid) };
    if pw.is_null() {
        return format!("uid {uid}");
    }
    // SAFETY: a non-null passwd record has a valid NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) };
    format!("uid {uid} ({})", name.to_string_lossy())
}

fn io_err(dir: &Path, what: &str) -> impl FnOnce(std::io::Error) -> SetupError {
    let (path, what) = (dir.to_owned(), what.to_owned());
    move |source| SetupError::PinDir { path, what, source }
}

/// Whether a directory with `meta` is ours alone.
fn trusted(meta: &std::fs::Metadata) -> bool {
    meta.uid() == euid() && meta.mode() & 0o022 == 0
}

fn make(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().mode(PIN_DIR_MODE).create(dir)
}

/// Makes `dir` ours (creating it, or replacing an untrusted empty one) and locks it.
pub fn acquire(dir: &Path) -> Result<PinLock, SetupError> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(dir, "creating its parent"))?;
    }
    match make(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(dir, "creating the directory")(e)),
    }
    let mut meta = std::fs::symlink_metadata(dir).map_err(io_err(dir, "reading its owner"))?;
    if meta.file_type().is_symlink() {
        // Never followed: the link itself goes, whatever it points at stays as it is.
        std::fs::remove_file(dir).map_err(io_err(dir, "removing the symbolic link there"))?;
        make(dir).map_err(io_err(dir, "creating the directory"))?;
        eprintln!(
            "flightrec: replaced the symbolic link at {} made by {} with a pin directory of its \
             own",
            dir.display(),
            owner_name(meta.uid())
        );
        meta = std::fs::symlink_metadata(dir).map_err(io_err(dir, "reading its owner"))?;
    }
    if !meta.is_dir() {
        return Err(PinDirRefused::NotADirectory(dir.to_owned()).into());
    }
    if !trusted(&meta) {
        let untrusted = || PinDirRefused::Untrusted {
            path: dir.to_owned(),
            owner: owner_name(meta.uid()),
            mode: meta.mode() & 0o7777,
        };
        let empty = std::fs::read_dir(dir)
            .map_err(io_err(dir, "listing the directory"))?
            .next()
            .is_none();
        if !empty {
            return Err(untrusted().into());
        }
        // Empty: nothing in it to lose. Replaced by our own; if someone races us to make it
        // again, what they made is refused below like any other.
        std::fs::remove_dir(dir).map_err(io_err(dir, "removing the untrusted directory"))?;
        make(dir).map_err(|_| untrusted())?;
        eprintln!(
            "flightrec: replaced the empty pin directory {} made by {} (mode {:o}) with one of \
             its own",
            dir.display(),
            owner_name(meta.uid()),
            meta.mode() & 0o7777
        );
    }
    let lock = lock(dir)?;
    let meta = lock
        .dir
        .metadata()
        .map_err(io_err(dir, "reading its owner"))?;
    if !trusted(&meta) {
        // Swapped between the checks above and the open.
        return Err(PinDirRefused::Untrusted {
            path: dir.to_owned(),
            owner: owner_name(meta.uid()),
            mode: meta.mode() & 0o7777,
        }
        .into());
    }
    if meta.mode() & 0o077 != 0 {
        lock.dir
            .set_permissions(std::fs::Permissions::from_mode(PIN_DIR_MODE))
            .map_err(io_err(dir, "making it private"))?;
    }
    Ok(lock)
}

/// Opens the existing `dir` (never through a symbolic link) and takes its lock.
pub fn lock(dir: &Path) -> Result<PinLock, SetupError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
                SetupError::PinDirRefused(PinDirRefused::NotADirectory(dir.to_owned()))
            }
            _ => io_err(dir, "opening the directory")(e),
        })?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(PinDirRefused::Locked {
                path: dir.to_owned(),
                pid: file.metadata().ok().and_then(|m| lock_holder(&m)),
            }
            .into());
        }
        return Err(io_err(dir, "locking the directory")(e));
    }
    Ok(PinLock {
        path: dir.to_owned(),
        dir: file,
    })
}

/// The pid `/proc/locks` gives for the `flock` on the file of `meta`.
fn lock_holder(meta: &std::fs::Metadata) -> Option<u32> {
    let dev = meta.dev();
    let key = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.ino()
    );
    parse_lock_holder(&std::fs::read_to_string("/proc/locks").ok()?, &key)
}

/// The pid of the first `FLOCK` line of `locks` on `key` (`MAJ:MIN:INODE`).
fn parse_lock_holder(locks: &str, key: &str) -> Option<u32> {
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // `1: FLOCK  ADVISORY  WRITE 1234 00:1e:5678 0 EOF` (`->` marks waiters).
        let f = if f.get(1) == Some(&"->") {
            &f[1..]
        } else {
            &f[..]
        };
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&key))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}

/// Removes everything in `dir`, subdirectories included, keeping `dir` itself. Unlinking a
/// pinned link drops its last reference once no process holds it: the program detaches.
pub fn clear(dir: &Path) -> Result<(), SetupError> {
    let entries = std::fs::read_dir(dir).map_err(io_err(dir, "listing the directory"))?;
    for entry in entries {
        let entry = entry.map_err(io_err(dir, "listing the directory"))?;
        let path = entry.path();
        let what = format!("removing {}", path.display());
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .map_err(io_err(dir, &what))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_holder_is_read_from_proc_locks() {
        let locks = "1: FLOCK  ADVISORY  WRITE 4242 00:1e:77 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 99 00:1e:77 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 7 00:1e:88 0 EOF\n";
        assert_eq!(parse_lock_holder(locks, "00:1e:77"), Some(4242));
        assert_eq!(parse_lock_holder(locks, "00:1e:88"), None);
        assert_eq!(parse_lock_holder(locks, "00:1e:99"), None);
    }

    /// Probe 8: two daemons could share one pin directory. A second lock on a locked
    /// directory is refused (an ordinary directory stands in for bpffs), and a dropped lock
    /// leaves nothing stale behind.
    #[test]
    fn one_lock_per_pin_dir() {
        let dir = std::env::temp_dir().join(format!("flightrec-pinlock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let held = acquire(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, PIN_DIR_MODE);
        let e = acquire(&dir).unwrap_err().to_string();
        assert!(e.contains("a flightrec daemon"), "{e}");
        assert!(e.contains(&format!("(pid {})", std::process::id())), "{e}");
        drop(held);
        std::fs::create_dir(dir.join("stray")).unwrap();
        std::fs::write(dir.join("stray/x"), b"x").unwrap();
        let again = acquire(&dir).unwrap();
        clear(&dir).unwrap();
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
        drop(again);
        std::fs::remove_dir(&dir).unwrap();
        // A symbolic link at the path is replaced, and what it points at is left alone.
        let target = dir.with_extension("target");
        std::fs::create_dir_all(target.join("keep")).unwrap();
        std::os::unix::fs::symlink(&target, &dir).unwrap();
        let l = acquire(&dir).unwrap();
        assert!(std::fs::symlink_metadata(&dir).unwrap().is_dir());
        assert!(target.join("keep").exists());
        drop(l);
        std::fs::remove_dir(&dir).unwrap();
        std::fs::remove_dir_all(&target).unwrap();
    }
}
