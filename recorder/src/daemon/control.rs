//! The control socket's server side: one task per connection, one JSON line per request.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use schemas::manifest::TriggerInfo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use triggers::Trigger;
use triggers::hook::Refused;

use super::embed::DaemonError;
use super::protocol::{Request, Response, Suppressed};
use super::snapshots::take_snapshot;
use super::{Shared, status};

pub(super) use schemas::error_chain as chain;

pub(super) async fn handle(shared: Arc<Shared>, stream: UnixStream) {
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

/// Binds the control socket, replacing a stale one left by a dead daemon but refusing to steal
/// the socket of a live one.
pub(super) fn bind_socket(path: &Path) -> Result<UnixListener, DaemonError> {
    let err = |what: &'static str, at: &Path| {
        let at = at.to_owned();
        move |source| DaemonError::Socket {
            path: at,
            what,
            source,
        }
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err("creating its directory", parent))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::SocketInUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(err("removing the stale socket", path))?;
    }
    UnixListener::bind(path).map_err(err("binding", path))
}
