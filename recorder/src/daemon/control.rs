//! The control socket's server side: one task per connection, one JSON line per request.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use schemas::manifest::TriggerInfo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use triggers::Trigger;
use triggers::hook::Refused;

use super::access::{Access, peer_groups};
use super::embed::DaemonError;
use super::protocol::{Request, Response, Suppressed};
use super::snapshots::take_snapshot;
use super::{Shared, status};

pub(super) use schemas::error_chain as chain;

pub(super) async fn handle(shared: Arc<Shared>, stream: UnixStream) {
    // The socket's mode already keeps others out; this holds even if it was loosened by hand.
    let allowed = stream.peer_cred().is_ok_and(|c| {
        shared
            .access
            .allows(c.uid(), c.gid(), &peer_groups(c.pid()))
    });
    if !allowed {
        let uid = stream.peer_cred().map_or(u32::MAX, |c| c.uid());
        let mut stream = stream;
        let mut out =
            serde_json::to_vec(&Response::Error(Access::refusal(uid))).expect("serialisable");
        out.push(b'\n');
        let _ = stream.write_all(&out).await;
        return;
    }
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd.take(64 * 1024)).lines();
    loop {
        let line = match tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await {
            Ok(Ok(Some(l))) => l,
            _ => return,
        };
        let resp = match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::Error(format!("bad request: {e}")),
            Ok(Request::Status) => Response::Status(Box::new(status(&shared))),
            Ok(Request::Trigger { reason, post_ms }) => {
                match Trigger::cli(&reason, post_ms).map_err(Refused::from) {
                    Ok(t) => match shared.trigger(t) {
                        Ok(a) => Response::Trigger(a),
                        Err(Refused::Suppressed {
                            reason,
                            retry_after_ms,
                        }) => Response::Suppressed(Suppressed {
                            reason: reason.as_str().into(),
                            retry_after_ms: (retry_after_ms != u64::MAX).then_some(retry_after_ms),
                        }),
                        Err(e) => Response::Error(e.to_string()),
                    },
                    Err(e) => Response::Error(e.to_string()),
                }
            }
            Ok(Request::SnapshotState { id }) => match shared.snapshot_info(&id) {
                Some(info) => Response::State(info),
                None => Response::Error(format!("no snapshot {id} in this daemon's memory")),
            },
            Ok(Request::Snapshot { dir, name, reason }) => {
                let s = shared.clone();
                let trigger = TriggerInfo {
                    source: "cli".into(),
                    reason: reason.unwrap_or_else(|| "manual snapshot".into()),
                    fields: Default::default(),
                };
                match tokio::task::spawn_blocking(move || take_snapshot(&s, dir, name, trigger))
                    .await
                {
                    Ok(Ok(w)) => Response::Snapshot(w),
                    Ok(Err(e)) => Response::Error(chain(&e)),
                    Err(e) => Response::Error(format!("snapshot task failed: {e}")),
                }
            }
        };
        let mut out = serde_json::to_vec(&resp).expect("serialisable");
        out.push(b'\n');
        if wr.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Where the control socket was bound, to remove it at exit only while it is still ours.
pub(super) struct Bound {
    pub(super) listener: std::os::unix::net::UnixListener,
    path: PathBuf,
    dev_ino: (u64, u64),
}

impl Bound {
    /// Removes the socket file if it is still the one this daemon bound (a second daemon
    /// started by mistake may have replaced it, after its own checks).
    pub(super) fn remove(&self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && (m.dev(), m.ino()) == self.dev_ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds the control socket with the mode `access` asks for, whatever the umask: bound in a
/// fresh `0700` directory, given its mode and owner there, then renamed into place, so it is
/// never reachable with a looser mode. Replaces a stale socket left by a dead daemon, refuses
/// to steal the socket of a live one, and never replaces anything that is not a socket.
pub(super) fn bind_socket(path: &Path, access: &Access) -> Result<Bound, DaemonError> {
    let err = |what: &'static str, at: &Path| {
        let at = at.to_owned();
        move |source| DaemonError::Socket {
            path: at,
            what,
            source,
        }
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    // Traversable by the users the socket's own mode lets in, listable by no one else.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(&parent)
        .map_err(err("creating its directory", &parent))?;
    let pm = std::fs::metadata(&parent).map_err(err("reading its directory", &parent))?;
    // Sticky world-writable directories (/tmp) keep others from renaming our socket away.
    if pm.mode() & 0o002 != 0 && pm.mode() & 0o1000 == 0 {
        return Err(DaemonError::SocketDirUnsafe(parent));
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("reading what is there", path)(e)),
        Ok(m) if !m.file_type().is_socket() => {
            return Err(DaemonError::NotASocket(path.to_owned()));
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(DaemonError::SocketInUse(path.to_owned()));
            }
            // A stale socket: the rename below replaces it in one step.
        }
    }
    let private = parent.join(format!(
        ".flightrec-bind-{}-{}",
        std::process::id(),
        &crate::snapshot::random_id()[..8]
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(err("creating a private directory to bind in", &private))?;
    let staged = private.join("s");
    let result = (|| {
        let listener =
            std::os::unix::net::UnixListener::bind(&staged).map_err(err("binding", path))?;
        std::fs::set_permissions(
            &staged,
            std::fs::Permissions::from_mode(access.socket_mode()),
        )
        .map_err(err("setting its mode", path))?;
        std::os::unix::fs::chown(&staged, access.owner, access.group).map_err(err(
            "giving it to recorder.control_owner/control_group",
            path,
        ))?;
        let m = std::fs::symlink_metadata(&staged).map_err(err("reading it", path))?;
        std::fs::rename(&staged, path).map_err(err("moving it into place", path))?;
        Ok(Bound {
            listener,
            path: path.to_owned(),
            dev_ino: (m.dev(), m.ino()),
        })
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("flightrec-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// Probe 5b: the socket's mode came from the umask (0777 with umask 000).
    #[test]
    fn control_socket_is_0600_whatever_the_umask() {
        let dir = scratch("sockmode");
        let path = dir.join("run/control.sock");
        // SAFETY: umask has no preconditions; it is put back at once.
        let old = unsafe { libc::umask(0) };
        let bound = bind_socket(&path, &Access::default());
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let bound = bound.unwrap();
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.join("run")), 0o711);
        // Only the socket is left beside it: the private bind directory is gone.
        let names: Vec<_> = std::fs::read_dir(dir.join("run")).unwrap().collect();
        assert_eq!(names.len(), 1);
        // A second daemon may not steal a live socket.
        let e = bind_socket(&path, &Access::default()).err().unwrap();
        assert!(matches!(e, DaemonError::SocketInUse(_)), "{e}");
        bound.remove();
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Probe 5b: `--socket` pointing at a regular file deleted it.
    #[test]
    fn socket_flag_on_a_regular_file_leaves_it_alone() {
        let dir = scratch("sockfile");
        // An explicit mode: another test may have cleared the umask meanwhile.
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let file = dir.join("precious.txt");
        std::fs::write(&file, b"keep me").unwrap();
        let e = bind_socket(&file, &Access::default()).err().unwrap();
        assert!(matches!(e, DaemonError::NotASocket(_)), "{e}");
        assert!(e.to_string().contains("is not a socket"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
        // A stale socket (its daemon gone) is replaced.
        let stale = dir.join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let bound = bind_socket(&stale, &Access::default()).unwrap();
        assert!(std::os::unix::net::UnixStream::connect(&stale).is_ok());
        drop(bound);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
