//! The recording daemon (`flightrec record`) and its control socket.
//!
//! # Control protocol
//!
//! A Unix stream socket; each request is one line of JSON, answered by one line of JSON:
//!
//! ```text
//! {"cmd":"status"}
//!   -> {"ok":true,"status":{...Status...}}
//! {"cmd":"snapshot","dir":"/path"|null,"name":"NAME"|null,"reason":"TEXT"|null}
//!   -> {"ok":true,"snapshot":{...Written...}}
//! anything else
//!   -> {"ok":false,"error":"..."}
//! ```
//!
//! Requests are at most 64 KiB; a client that sends nothing for 10 s is dropped.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schemas::manifest::TriggerInfo;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::config::Config;
use crate::rings::{CpuStatus, Rings};
use crate::snapshot::{self, Written};

/// A control request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Ring state.
    Status,
    /// Take a snapshot.
    Snapshot {
        /// Output directory (default: the spool dir).
        dir: Option<PathBuf>,
        /// Snapshot name (default: "snapshot").
        name: Option<String>,
        /// Reason recorded in the manifest.
        reason: Option<String>,
    },
}

/// A control response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// Error message when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Answer to `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Answer to `snapshot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Written>,
}

/// What `flightrec status` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// Daemon process id.
    pub pid: u32,
    /// Seconds since the daemon started.
    pub uptime_s: f64,
    /// Whether the rings were adopted from a previous run.
    pub adopted: bool,
    /// Bytes per ring (per CPU and epoch).
    pub ring_bytes: u64,
    /// Enabled event classes.
    pub classes: Vec<String>,
    /// Active epoch.
    pub epoch: u32,
    /// `CLOCK_MONOTONIC` now, to age the window timestamps.
    pub now_monotonic_ns: u64,
    /// Per CPU state.
    pub cpus: Vec<CpuStatus>,
    /// Events per second per CPU over the last sampling interval.
    pub rates: Vec<f64>,
    /// Snapshots written by this daemon.
    pub snapshots_taken: u64,
    /// Snapshot requests that failed.
    pub snapshots_failed: u64,
    /// Upload and group state, when a collector is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<crate::upload::CollectorStatus>,
}

struct Shared {
    rings: Mutex<Rings>,
    config: Config,
    started: Instant,
    rates: Mutex<Vec<f64>>,
    taken: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
    collector: crate::upload::Collector,
}

/// Takes a snapshot with the daemon's rings (one at a time).
fn take_snapshot(
    shared: &Shared,
    dir: Option<PathBuf>,
    name: Option<String>,
    trigger: TriggerInfo,
) -> Result<Written, String> {
    use std::sync::atomic::Ordering;
    let frozen = {
        let rings = shared.rings.lock().unwrap_or_else(|e| e.into_inner());
        rings.freeze()
    };
    let dir = dir.unwrap_or_else(|| shared.config.recorder.spool_dir.clone());
    match snapshot::write(&frozen, &shared.config, &dir, name.as_deref(), trigger) {
        Ok(w) => {
            shared.taken.fetch_add(1, Ordering::Relaxed);
            shared.collector.nudge();
            Ok(w)
        }
        Err(e) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            Err(e.to_string())
        }
    }
}

fn status(shared: &Shared) -> Status {
    use std::sync::atomic::Ordering;
    let rings = shared.rings.lock().unwrap_or_else(|e| e.into_inner());
    Status {
        pid: std::process::id(),
        uptime_s: shared.started.elapsed().as_secs_f64(),
        adopted: rings.adopted(),
        ring_bytes: rings.slots() * schemas::RECORD_SIZE as u64,
        classes: shared.config.events.enabled(),
        epoch: rings.active_epoch(),
        now_monotonic_ns: crate::rings::monotonic_ns(),
        cpus: rings.status(),
        rates: shared
            .rates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        snapshots_taken: shared.taken.load(Ordering::Relaxed),
        snapshots_failed: shared.failed.load(Ordering::Relaxed),
        collector: shared.collector.status(),
    }
}

/// Takes the snapshot a group trigger from the collector asks for, into the spool (so it is
/// uploaded). The one place group triggers enter the daemon's snapshot path.
fn group_snapshot(shared: &Shared, trigger: TriggerInfo) -> Result<Written, String> {
    let name = trigger
        .fields
        .get("group")
        .and_then(|g| g.as_str())
        .unwrap_or("group")
        .to_owned();
    take_snapshot(shared, None, Some(name), trigger)
}

async fn handle(shared: Arc<Shared>, stream: UnixStream) {
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd.take(64 * 1024)).lines();
    loop {
        let line = match tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await {
            Ok(Ok(Some(l))) => l,
            _ => return,
        };
        let resp = match serde_json::from_str::<Request>(&line) {
            Err(e) => Response {
                ok: false,
                error: Some(format!("bad request: {e}")),
                status: None,
                snapshot: None,
            },
            Ok(Request::Status) => Response {
                ok: true,
                error: None,
                status: Some(status(&shared)),
                snapshot: None,
            },
            Ok(Request::Snapshot { dir, name, reason }) => {
                let s = shared.clone();
                let trigger = TriggerInfo {
                    source: "cli".into(),
                    reason: reason.unwrap_or_else(|| "manual snapshot".into()),
                    fields: Default::default(),
                };
                let res =
                    tokio::task::spawn_blocking(move || take_snapshot(&s, dir, name, trigger))
                        .await
                        .unwrap_or_else(|e| Err(format!("snapshot task failed: {e}")));
                match res {
                    Ok(w) => Response {
                        ok: true,
                        error: None,
                        status: None,
                        snapshot: Some(w),
                    },
                    Err(e) => Response {
                        ok: false,
                        error: Some(e),
                        status: None,
                        snapshot: None,
                    },
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
fn bind_socket(path: &Path) -> Result<UnixListener, String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "another flightrec daemon is listening on {} (stop it, or set \
                 recorder.control_socket)",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("removing stale socket {}: {e}", path.display()))?;
    }
    UnixListener::bind(path).map_err(|e| format!("binding {}: {e}", path.display()))
}

/// Runs the daemon until SIGINT or SIGTERM. Recording continues in the kernel after it exits
/// (the programs are pinned); `flightrec teardown` stops it.
pub fn run(config: Config, ready: impl FnOnce(&Rings)) -> anyhow::Result<()> {
    let listener_path = config.recorder.control_socket.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = bind_socket(&listener_path).map_err(anyhow::Error::msg)?;
        let rings = Rings::start(&config)?;
        ready(&rings);
        let host_id = crate::statedump::host_info(&config.recorder.host_id, rings.ncpu()).host_id;
        let (collector, mut group_triggers) = crate::upload::Collector::start(
            &config.collector,
            &config.recorder.spool_dir,
            &host_id,
        )?;
        let shared = Arc::new(Shared {
            rings: Mutex::new(rings),
            config,
            started: Instant::now(),
            rates: Mutex::new(Vec::new()),
            taken: Default::default(),
            failed: Default::default(),
            collector,
        });
        let on_group = shared.clone();
        tokio::spawn(async move {
            while let Some(trigger) = group_triggers.recv().await {
                let s = on_group.clone();
                let id = trigger.fields.get("trigger_id").cloned();
                match tokio::task::spawn_blocking(move || group_snapshot(&s, trigger)).await {
                    Ok(Ok(w)) => eprintln!(
                        "flightrec: group trigger {}: snapshot {}",
                        id.unwrap_or_default(),
                        w.path.display()
                    ),
                    Ok(Err(e)) => eprintln!("flightrec: group trigger snapshot failed: {e}"),
                    Err(e) => eprintln!("flightrec: group trigger snapshot task failed: {e}"),
                }
            }
        });
        let sampler = shared.clone();
        tokio::spawn(async move {
            let mut last: Option<(Instant, Vec<u64>)> = None;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let totals: Vec<u64> = {
                    let r = sampler.rings.lock().unwrap_or_else(|e| e.into_inner());
                    (0..r.ncpu()).map(|cpu| r.total(cpu)).collect()
                };
                let now = Instant::now();
                if let Some((t, prev)) = &last {
                    let dt = now.duration_since(*t).as_secs_f64();
                    let rates = totals
                        .iter()
                        .zip(prev)
                        .map(|(a, b)| a.saturating_sub(*b) as f64 / dt)
                        .collect();
                    *sampler.rates.lock().unwrap_or_else(|e| e.into_inner()) = rates;
                }
                last = Some((now, totals));
            }
        });
        // Listeners made once: a signal that arrives while a connection is being accepted is
        // kept for the next turn of the loop instead of being missed.
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        loop {
            tokio::select! {
                conn = listener.accept() => {
                    if let Ok((stream, _)) = conn {
                        tokio::spawn(handle(shared.clone(), stream));
                    }
                }
                _ = int.recv() => break,
                _ = term.recv() => break,
            }
        }
        let _ = std::fs::remove_file(&listener_path);
        Ok(())
    })
}

/// Sends one request to the daemon listening on `socket`.
pub fn request(socket: &Path, req: &Request) -> Result<Response, String> {
    use std::io::{BufRead, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        format!(
            "no flightrec daemon on {} ({e}); start one with `flightrec record`",
            socket.display()
        )
    })?;
    let mut line = serde_json::to_vec(req).expect("serialisable");
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| format!("sending to {}: {e}", socket.display()))?;
    let mut resp = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut resp)
        .map_err(|e| format!("reading from {}: {e}", socket.display()))?;
    serde_json::from_str(&resp).map_err(|e| format!("bad answer from the daemon: {e}"))
}
