//! Files and directories that only their owner (and group) may read, whatever the umask.
//!
//! Snapshots carry syscall arguments and the statedump carries every process's command line,
//! which may hold passwords: the spool and every snapshot file are kept from other local users.
//! Modes are passed to `mkdir`/`open` themselves (a umask only removes bits, so `000` cannot
//! loosen them) and never widened afterwards.

use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the directories this crate and the recorder create (spool, `rejected`).
pub const DIR_MODE: u32 = 0o750;
/// Mode of the snapshot files.
pub const FILE_MODE: u32 = 0o640;

/// Creates `dir` and its missing parents with [`DIR_MODE`]. An existing `dir` owned by this
/// user that others may write or read into is tightened to [`DIR_MODE`]; one owned by another
/// user (root excepted) is refused, since its owner could swap the files under us.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory (a symbolic link or a file)",
            dir.display()
        )));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(io::Error::other(format!(
            "{} belongs to uid {}, not to this user ({me}) or root: refusing to keep snapshots \
             there",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.uid() == me && meta.mode() & 0o027 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
    } else if meta.mode() & 0o002 != 0 {
        return Err(io::Error::other(format!(
            "{} is writable by every user (mode {:o}): refusing to keep snapshots there",
            dir.display(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Creates a new file (never an existing one, never through a symbolic link) with
/// [`FILE_MODE`], for writing.
pub fn create_file(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probe 5a: with umask 000 a spool made by `mkdir -p` was 0777 and its files 0666.
    #[test]
    fn spool_files_and_dirs_are_private_whatever_the_umask() {
        let base = std::env::temp_dir().join(format!("flightrec-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        // SAFETY: umask has no preconditions; it is put back below. A looser umask only makes
        // files other tests create at the same time more open, never unusable.
        let old = unsafe { libc::umask(0) };
        let dir = base.join("a/b/spool");
        let made = create_dir(&dir).and_then(|()| create_file(&dir.join("x.frs")));
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        made.unwrap();
        for d in [base.join("a"), base.join("a/b"), dir.clone()] {
            let mode = std::fs::metadata(&d).unwrap().mode() & 0o777;
            assert_eq!(mode, DIR_MODE, "{}", d.display());
        }
        let mode = std::fs::metadata(dir.join("x.frs")).unwrap().mode() & 0o777;
        assert_eq!(mode, FILE_MODE);
        // Never an existing file, never through a link.
        assert!(create_file(&dir.join("x.frs")).is_err());
        std::os::unix::fs::symlink("/etc/passwd", dir.join("l.frs")).unwrap();
        assert!(create_file(&dir.join("l.frs")).is_err());
        // A loose directory of ours is tightened.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        create_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, DIR_MODE);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
