//! Who may use the control socket, and where `snapshot` may write.
//!
//! The socket is `0600` root's (or `recorder.control_owner`'s), `0660` with
//! `recorder.control_group`; the file mode keeps others from connecting, and every connection
//! is checked again with `SO_PEERCRED`, so a socket whose mode was loosened by hand still serves
//! only root, the daemon's own user, the owner and the group's members. `snapshot` writes only
//! into the spool or one of `recorder.snapshot_dirs`, which must already exist: the daemon
//! never creates a directory a client names.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use schemas::config::ConfigError;

use crate::config::RecorderConfig;

/// Who may use the control socket besides root and the daemon's own user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// `recorder.control_owner`'s uid.
    pub owner: Option<u32>,
    /// `recorder.control_group`'s gid.
    pub group: Option<u32>,
}

/// A user name or number, as `getpwnam` knows it.
fn uid_of(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid C string; the returned record is read at once, before any other
    // call that could reuse its static storage (the daemon resolves names once, at start).
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    // SAFETY: non-null pointers from getpwnam point at a valid passwd record.
    (!pw.is_null()).then(|| unsafe { (*pw).pw_uid })
}

/// A group name or number, as `getgrnam` knows it.
fn gid_of(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    let c = CString::new(name).ok()?;
    // SAFETY: as in `uid_of`, for the group database.
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    // SAFETY: non-null pointers from getgrnam point at a valid group record.
    (!gr.is_null()).then(|| unsafe { (*gr).gr_gid })
}

impl Access {
    /// Resolves `recorder.control_owner` and `recorder.control_group`.
    pub fn from_config(c: &RecorderConfig) -> Result<Access, ConfigError> {
        let owner = match c.control_owner.as_str() {
            "" => None,
            name => Some(uid_of(name).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "recorder.control_owner {name:?} is not a user here"
                ))
            })?),
        };
        let group = match c.control_group.as_str() {
            "" => None,
            name => Some(gid_of(name).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "recorder.control_group {name:?} is not a group here"
                ))
            })?),
        };
        Ok(Access { owner, group })
    }

    /// Mode of the socket file.
    pub fn socket_mode(&self) -> u32 {
        if self.group.is_some() { 0o660 } else { 0o600 }
    }

    /// Whether a peer with `uid`, primary `gid` and supplementary `groups` may use the socket.
    pub fn allows(&self, uid: u32, gid: u32, groups: &[u32]) -> bool {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        uid == 0
            || uid == me
            || self.owner == Some(uid)
            || self.group.is_some_and(|g| g == gid || groups.contains(&g))
    }

    /// The sentence a refused peer reads.
    pub fn refusal(uid: u32) -> String {
        format!(
            "permission denied: uid {uid} is not root, recorder.control_owner or a member of \
             recorder.control_group, who alone may use this control socket"
        )
    }
}

/// Supplementary groups of process `pid` (from `/proc/PID/status`), empty when unreadable.
pub fn peer_groups(pid: Option<i32>) -> Vec<u32> {
    let Some(pid) = pid else { return Vec::new() };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Why `snapshot` refuses an output directory.
#[derive(Debug, thiserror::Error)]
pub enum DirRefused {
    /// It does not exist, or cannot be resolved.
    #[error(
        "snapshot directory {0} does not exist (the daemon creates no directory but its spool)"
    )]
    Missing(PathBuf),
    /// It is not the spool nor one of `recorder.snapshot_dirs`.
    #[error(
        "snapshot directory {0} is not the spool nor one of recorder.snapshot_dirs, where root \
         lets snapshots be written"
    )]
    NotApproved(PathBuf),
    /// Others may write into it.
    #[error(
        "snapshot directory {0} is writable by every user: another user could replace the file"
    )]
    WorldWritable(PathBuf),
}

/// The directory `snapshot` writes into when a client names `dir`: the spool itself or one of
/// `recorder.snapshot_dirs`, compared after resolving links, and not world-writable.
pub fn approved_dir(c: &RecorderConfig, dir: &Path) -> Result<PathBuf, DirRefused> {
    let real = dir
        .canonicalize()
        .map_err(|_| DirRefused::Missing(dir.to_owned()))?;
    let approved = std::iter::once(&c.spool_dir)
        .chain(&c.snapshot_dirs)
        .filter_map(|d| d.canonicalize().ok())
        .any(|d| d == real);
    if !approved {
        return Err(DirRefused::NotApproved(dir.to_owned()));
    }
    let meta = std::fs::metadata(&real).map_err(|_| DirRefused::Missing(dir.to_owned()))?;
    if !meta.is_dir() {
        return Err(DirRefused::Missing(dir.to_owned()));
    }
    if meta.mode() & 0o002 != 0 {
        return Err(DirRefused::WorldWritable(dir.to_owned()));
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probe 5b: any local user could drive the daemon through its socket.
    #[test]
    fn control_socket_peers_are_root_the_owner_or_the_group() {
        let none = Access::default();
        assert!(none.allows(0, 0, &[]));
        assert!(!none.allows(65534, 65534, &[]));
        let a = Access {
            owner: Some(1000),
            group: Some(2000),
        };
        assert!(a.allows(1000, 1000, &[]));
        assert!(a.allows(1001, 2000, &[]));
        assert!(a.allows(1002, 1002, &[5, 2000]));
        assert!(!a.allows(1003, 1003, &[5]));
        assert_eq!((none.socket_mode(), a.socket_mode()), (0o600, 0o660));
        let mut c = RecorderConfig {
            control_owner: "root".into(),
            control_group: "0".into(),
            ..Default::default()
        };
        assert_eq!(
            Access::from_config(&c).unwrap(),
            Access {
                owner: Some(0),
                group: Some(0)
            }
        );
        c.control_owner = "no-such-user-flightrec".into();
        let e = Access::from_config(&c).unwrap_err();
        assert!(e.to_string().contains("not a user"), "{e}");
    }

    /// Probe 5b: with umask 000 the `snapshot` command's `dir` made root create a 0777
    /// directory wherever a client asked.
    #[test]
    fn snapshot_dirs_are_the_spool_or_approved_ones_only() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("flightrec-approved-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (spool, ok, other) = (base.join("spool"), base.join("ok"), base.join("other"));
        for d in [&spool, &ok, &other] {
            // An explicit mode: another test may have cleared the umask meanwhile.
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                0o755,
            )
            .create(d)
            .unwrap();
        }
        let c = RecorderConfig {
            spool_dir: spool.clone(),
            snapshot_dirs: vec![ok.clone()],
            ..Default::default()
        };
        assert_eq!(
            approved_dir(&c, &spool).unwrap(),
            spool.canonicalize().unwrap()
        );
        assert!(approved_dir(&c, &base.join("ok/../ok")).is_ok());
        let e = approved_dir(&c, &other).unwrap_err();
        assert!(matches!(e, DirRefused::NotApproved(_)), "{e}");
        let e = approved_dir(&c, &base.join("new")).unwrap_err();
        assert!(matches!(e, DirRefused::Missing(_)), "{e}");
        assert!(!base.join("new").exists());
        // A link to an approved directory is that directory; a link elsewhere is not.
        std::os::unix::fs::symlink(&other, base.join("ok-link")).unwrap();
        assert!(approved_dir(&c, &base.join("ok-link")).is_err());
        std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = approved_dir(&c, &ok).unwrap_err();
        assert!(matches!(e, DirRefused::WorldWritable(_)), "{e}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
