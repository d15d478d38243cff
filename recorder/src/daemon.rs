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
//! {"cmd":"trigger","reason":"TEXT","post_ms":N|null}
//!   -> {"ok":true,"trigger":{"snapshot_id":"ID","joined":false,"post_ms":N}}
//!   -> {"ok":false,"error":"suppressed (cooldown), retry in 812 ms",
//!       "suppressed":{"reason":"cooldown","retry_after_ms":812}}
//! {"cmd":"snapshot_state","id":"ID"}
//!   -> {"ok":true,"state":{"snapshot_id":"ID","state":"written","path":"...",...}}
//! anything else
//!   -> {"ok":false,"error":"..."}
//! ```
//!
//! Requests are at most 64 KiB; a client that sends nothing for 10 s is dropped.
//!
//! # Triggers
//!
//! `snapshot` is the unconditional manual command. Everything else that asks for a snapshot —
//! the HTTP hook, kernel latency rules (read from the `RULE_HITS` ring buffer), `trigger` on the
//! control socket — goes through the one [`Governor`], and every decision is logged on stderr and
//! counted (`status` shows the counters).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schemas::manifest::TriggerInfo;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use triggers::governor::{Counters, Decision, Governor};
use triggers::group::GroupForwarder;
use triggers::hook::{Accepted, Refused, SnapshotInfo, SnapshotService, SnapshotState};
use triggers::rules::Rule;
use triggers::{Scope, Source, Trigger};

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
    /// Ask for a snapshot through the governor (`flightrec trigger`).
    Trigger {
        /// Why, kept in the manifest; also the dedupe signature.
        reason: String,
        /// Post-trigger window, ms (the governor's default when absent).
        post_ms: Option<u64>,
    },
    /// State of a snapshot admitted by the governor.
    SnapshotState {
        /// Its id.
        id: String,
    },
}

/// A suppression, as the control socket reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Suppressed {
    /// Why (`cooldown`, `duplicate`, `prefill`, `source_budget`, `host_budget`).
    pub reason: String,
    /// When trying again could succeed, ms (absent: not by waiting).
    pub retry_after_ms: Option<u64>,
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
    /// Answer to an admitted `trigger`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Accepted>,
    /// Answer to a suppressed `trigger`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<Suppressed>,
    /// Answer to `snapshot_state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<SnapshotInfo>,
}

impl Response {
    fn error(message: String) -> Response {
        Response {
            ok: false,
            error: Some(message),
            status: None,
            snapshot: None,
            trigger: None,
            suppressed: None,
            state: None,
        }
    }

    fn ok() -> Response {
        Response {
            ok: true,
            ..Response::error(String::new())
        }
        .no_error()
    }

    fn no_error(mut self) -> Response {
        self.error = None;
        self
    }
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
    /// Governor decisions by outcome, reason and source.
    #[serde(default)]
    pub triggers: Counters,
    /// Kernel rule hits received from the eBPF programs.
    #[serde(default)]
    pub rule_hits: u64,
    /// Address the HTTP hook listens on, when it is on.
    #[serde(default)]
    pub hook_listen: Option<String>,
    /// Upload and group state, when a collector is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<flightrec_uplink::CollectorStatus>,
}

/// Most snapshot states kept for `GET /v1/snapshots/{id}`; the oldest are forgotten first.
const MAX_STATES: usize = 1024;

/// Snapshot states by id, bounded.
#[derive(Default)]
struct States {
    by_id: HashMap<String, (SnapshotInfo, Vec<serde_json::Value>)>,
    order: VecDeque<String>,
}

impl States {
    fn insert(&mut self, info: SnapshotInfo) {
        if self.order.len() >= MAX_STATES
            && let Some(old) = self.order.pop_front()
        {
            self.by_id.remove(&old);
        }
        self.order.push_back(info.snapshot_id.clone());
        self.by_id
            .insert(info.snapshot_id.clone(), (info, Vec::new()));
    }

    fn set(&mut self, id: &str, state: SnapshotState) {
        if let Some((info, _)) = self.by_id.get_mut(id) {
            info.state = state;
        }
    }
}

struct Shared {
    rings: Mutex<Rings>,
    config: Config,
    started: Instant,
    rates: Mutex<Vec<f64>>,
    taken: AtomicU64,
    failed: AtomicU64,
    governor: Mutex<Governor>,
    states: Mutex<States>,
    rules: Vec<Rule>,
    rule_hits: AtomicU64,
    hook_listen: Option<String>,
    /// Where `scope: group` triggers go: the collector, when one and a group are configured.
    group: Option<Arc<dyn GroupForwarder>>,
    collector: flightrec_uplink::Collector,
}

/// Takes a snapshot with the daemon's rings (one at a time).
fn take_snapshot(
    shared: &Shared,
    dir: Option<PathBuf>,
    name: Option<String>,
    trigger: TriggerInfo,
) -> Result<Written, String> {
    let frozen = {
        let rings = shared.rings.lock().unwrap_or_else(|e| e.into_inner());
        rings.freeze()
    };
    let dir = dir.unwrap_or_else(|| shared.config.recorder.spool_dir.clone());
    shared
        .governor
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .note_freeze(frozen.frozen_monotonic_ns);
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
        triggers: shared
            .governor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .counters()
            .clone(),
        rule_hits: shared.rule_hits.load(Ordering::Relaxed),
        hook_listen: shared.hook_listen.clone(),
        collector: shared.collector.status(),
    }
}

fn log_decision(t: &Trigger, d: &Decision) {
    let what = match d {
        Decision::Admitted {
            snapshot_id,
            post_ms,
        } => format!("admitted as snapshot {snapshot_id} (post window {post_ms} ms)"),
        Decision::Joined { snapshot_id } => {
            format!("joined snapshot {snapshot_id}, which is being taken")
        }
        Decision::Suppressed {
            reason,
            retry_after_ms,
        } => match *retry_after_ms {
            u64::MAX => format!("suppressed: {}", reason.as_str()),
            ms => format!("suppressed: {} (retry in {ms} ms)", reason.as_str()),
        },
    };
    let frozen = if t.already_frozen {
        " [frozen in the kernel]"
    } else {
        ""
    };
    eprintln!(
        "flightrec: trigger {} {:?} [{}]{frozen}: {what}",
        t.source.as_str(),
        t.reason,
        t.signature
    );
}

impl Shared {
    /// Passes `trigger` through the governor and starts an admitted snapshot on the runtime
    /// (after its post window). Returns at once.
    fn trigger(self: &Arc<Self>, trigger: Trigger) -> Result<Accepted, Refused> {
        if trigger.scope == Scope::Group {
            return match &self.group {
                // No collector group configured: say so instead of taking a local snapshot.
                None => Err(Refused::GroupUnavailable),
                Some(g) => g
                    .forward(&trigger)
                    .map(|id| Accepted {
                        snapshot_id: id,
                        joined: false,
                        post_ms: 0,
                    })
                    .map_err(Refused::Failed),
            };
        }
        let now = crate::rings::monotonic_ns();
        let decision = self
            .governor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .decide(now, &trigger);
        log_decision(&trigger, &decision);
        match decision {
            Decision::Admitted {
                snapshot_id,
                post_ms,
            } => {
                self.states
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(SnapshotInfo {
                        snapshot_id: snapshot_id.clone(),
                        state: SnapshotState::Pending,
                        source: trigger.source.as_str().into(),
                        reason: trigger.reason.clone(),
                        joined: 0,
                    });
                if post_ms > 0 {
                    // Kernel rules must not freeze while the window runs; their hits join.
                    self.rings.lock().unwrap_or_else(|e| e.into_inner()).hold();
                }
                let shared = self.clone();
                let id = snapshot_id.clone();
                tokio::spawn(async move {
                    if post_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(post_ms)).await;
                    }
                    let s = shared.clone();
                    let id2 = id.clone();
                    let done =
                        tokio::task::spawn_blocking(move || take_triggered(&s, &id2, trigger))
                            .await;
                    if let Err(e) = done {
                        eprintln!("flightrec: snapshot {id}: task failed: {e}");
                    }
                });
                Ok(Accepted {
                    snapshot_id,
                    joined: false,
                    post_ms,
                })
            }
            Decision::Joined { snapshot_id } => {
                let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((info, joined)) = states.by_id.get_mut(&snapshot_id) {
                    info.joined += 1;
                    if joined.len() < 64 {
                        joined.push(serde_json::json!({
                            "source": trigger.source.as_str(),
                            "reason": trigger.reason,
                            "fields": trigger.fields,
                        }));
                    }
                }
                Ok(Accepted {
                    snapshot_id,
                    joined: true,
                    post_ms: 0,
                })
            }
            Decision::Suppressed {
                reason,
                retry_after_ms,
            } => {
                if trigger.already_frozen {
                    // The kernel froze for nothing: the frozen epoch is simply not written.
                    self.rings
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .release();
                }
                Err(Refused::Suppressed {
                    reason,
                    retry_after_ms,
                })
            }
        }
    }

    /// Marks the triggered snapshot written to `path` as acknowledged by the collector.
    fn mark_uploaded(&self, path: &Path) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        for (info, _) in states.by_id.values_mut() {
            if let SnapshotState::Written {
                path: p,
                file_snapshot_id,
            } = &info.state
                && Path::new(p) == path
            {
                info.state = SnapshotState::Uploaded {
                    path: p.clone(),
                    file_snapshot_id: file_snapshot_id.clone(),
                };
                return;
            }
        }
    }

    fn snapshot_info(&self, id: &str) -> Option<SnapshotInfo> {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states.by_id.get(id).map(|(info, _)| info.clone())
    }
}

/// Freezes (joining a kernel freeze if one waits), writes the snapshot of an admitted trigger
/// to the spool dir, and records its state.
fn take_triggered(shared: &Shared, id: &str, trigger: Trigger) {
    let frozen = shared
        .rings
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .freeze();
    shared
        .governor
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .finished(id, frozen.frozen_monotonic_ns);
    let joined = shared
        .states
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .by_id
        .get(id)
        .map(|(_, j)| j.clone())
        .unwrap_or_default();
    let mut fields = trigger.fields;
    // A group trigger keeps the group's id, which links every host's snapshot in the catalog;
    // the file's own snapshot id is the governor's either way.
    fields.entry("trigger_id").or_insert_with(|| id.into());
    fields.insert("frozen_in_kernel".into(), frozen.kernel_frozen.into());
    if !joined.is_empty() {
        fields.insert("joined".into(), joined.into());
    }
    let name = match (&trigger.source, fields.get("rule").and_then(|r| r.as_str())) {
        (Source::Rule, Some(rule)) => format!("rule-{rule}"),
        (Source::Group, _) => fields
            .get("group")
            .and_then(|g| g.as_str())
            .filter(|g| snapshot::valid_name(g))
            .unwrap_or("group")
            .to_owned(),
        (s, _) => s.as_str().to_owned(),
    };
    let info = TriggerInfo {
        source: trigger.source.as_str().into(),
        reason: trigger.reason,
        fields,
    };
    let dir = shared.config.recorder.spool_dir.clone();
    let written =
        snapshot::write_with_id(&frozen, &shared.config, &dir, Some(&name), info, id.into());
    let state = match written {
        Ok(w) => {
            shared.taken.fetch_add(1, Ordering::Relaxed);
            shared.collector.nudge();
            eprintln!(
                "flightrec: snapshot {id} written to {} ({} events)",
                w.path.display(),
                w.records
            );
            SnapshotState::Written {
                path: w.path.display().to_string(),
                file_snapshot_id: w.snapshot_id,
            }
        }
        Err(e) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            eprintln!("flightrec: snapshot {id} failed: {e}");
            SnapshotState::Failed
        }
    };
    shared
        .states
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .set(id, state);
}

/// Sends `scope: group` triggers to the collector, which fans them out to every recorder of
/// this one's group (this one included, through its registration).
struct CollectorGroup {
    collector: flightrec_uplink::Collector,
    runtime: tokio::runtime::Handle,
}

impl GroupForwarder for CollectorGroup {
    fn forward(&self, trigger: &Trigger) -> Result<String, String> {
        let mut fields = trigger.fields.clone();
        fields.insert("source".into(), trigger.source.as_str().into());
        // The hook calls in from a runtime worker; the request blocks only that worker.
        tokio::task::block_in_place(|| {
            self.runtime
                .block_on(self.collector.trigger_group(&trigger.reason, fields))
        })
        .unwrap_or_else(|| {
            Err(flightrec_uplink::UploadError::Status {
                status: 0,
                message: "no collector group configured".into(),
            })
        })
        .map_err(|e| format!("group trigger to the collector failed: {e}"))
    }
}

/// A group trigger fanned out by the collector, as the governor sees it: one signature per
/// group trigger id, so a repeated delivery joins or is deduplicated, never taken twice.
fn group_trigger(info: TriggerInfo) -> Trigger {
    let id = info
        .fields
        .get("trigger_id")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_owned();
    let mut t = Trigger::new(Source::Group, info.reason, format!("group:{id}"));
    t.fields = info.fields;
    t
}

/// The daemon as the hook's [`SnapshotService`].
struct HookService(Arc<Shared>);

impl SnapshotService for HookService {
    fn trigger(&self, trigger: Trigger) -> Result<Accepted, Refused> {
        self.0.trigger(trigger)
    }

    fn snapshot(&self, snapshot_id: &str) -> Option<SnapshotInfo> {
        self.0.snapshot_info(snapshot_id)
    }

    fn max_post_ms(&self) -> u64 {
        self.0.config.governor.max_post.as_millis() as u64
    }
}

/// The trigger a kernel rule hit becomes: its fields are the triggering event's.
fn rule_trigger(rules: &[Rule], hit: &schemas::RuleHit) -> Trigger {
    use triggers::rules::RuleKind;
    let rule = rules.get(hit.rule as usize);
    let name = rule.map_or("unknown", |r| r.name.as_str());
    let comm = schemas::cstr_lossy(&hit.comm);
    let latency_ms = hit.latency_ns as f64 / 1e6;
    let mut fields = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        fields.insert(k.into(), v);
    };
    put("rule", name.into());
    put("latency_ns", hit.latency_ns.into());
    put("start_ns", hit.start_ns.into());
    put("ts_ns", hit.ts_ns.into());
    put("cpu", hit.cpu.into());
    put("frozen_by_rule", (hit.frozen != 0).into());
    let what = match rule.map(|r| r.kind) {
        Some(RuleKind::Syscall) => {
            let sys = schemas::event::syscall_name(hit.key)
                .map_or_else(|| format!("syscall_{}", hit.key), str::to_owned);
            put("kind", "syscall".into());
            put("syscall", sys.clone().into());
            put("syscall_nr", hit.key.into());
            put("ret", (hit.aux as i64).into());
            put("tid", hit.tid.into());
            put("pid", hit.pid.into());
            put("comm", comm.clone().into());
            format!("{sys} by {comm} ({}) took {latency_ms:.3} ms", hit.tid)
        }
        Some(RuleKind::Runqueue) => {
            put("kind", "runqueue".into());
            put("tid", hit.tid.into());
            put("pid", hit.pid.into());
            put("comm", comm.clone().into());
            format!("{comm} ({}) waited {latency_ms:.3} ms to run", hit.tid)
        }
        Some(RuleKind::Block) => {
            let dev = schemas::event::dev_name(hit.key as u32);
            put("kind", "block".into());
            put("device", dev.clone().into());
            put("sector", hit.aux.into());
            format!("block request on {dev} took {latency_ms:.3} ms")
        }
        Some(RuleKind::Irq) => {
            put("kind", "irq".into());
            put("irq", hit.key.into());
            format!("irq {} handler took {latency_ms:.3} ms", hit.key)
        }
        None => format!("rule #{} fired", hit.rule),
    };
    let signature = match rule.map(|r| r.kind) {
        Some(RuleKind::Syscall | RuleKind::Runqueue) => format!("rule:{name}:{comm}"),
        Some(RuleKind::Block) => format!("rule:{name}:{}", hit.key),
        _ => format!("rule:{name}"),
    };
    let mut t = Trigger::new(Source::Rule, format!("rule {name}: {what}"), signature);
    t.fields = fields;
    t.post_ms = rule.map(|r| r.post_ms);
    t.already_frozen = hit.frozen != 0;
    t
}

/// Reads kernel rule hits as they come (the ring buffer wakes the reader; nothing is polled).
async fn read_rule_hits(
    shared: Arc<Shared>,
    hits: aya::maps::RingBuf<aya::maps::MapData>,
) -> std::io::Result<()> {
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as long as the
    // AsyncFd owns the RingBuf.
    let mut fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(hits, tokio::io::Interest::READABLE)
    }
    .map_err(std::io::Error::from)?;
    loop {
        let mut guard = fd.readable_mut().await?;
        let mut batch = Vec::new();
        {
            let rb = guard.get_inner_mut();
            while let Some(item) = rb.next() {
                if item.len() >= size_of::<schemas::RuleHit>() {
                    // SAFETY: the programs write whole RuleHit values; read_unaligned copes
                    // with the ring buffer's 8-byte alignment.
                    batch.push(unsafe {
                        std::ptr::read_unaligned(item.as_ptr() as *const schemas::RuleHit)
                    });
                }
            }
        }
        guard.clear_ready();
        for hit in batch {
            shared.rule_hits.fetch_add(1, Ordering::Relaxed);
            let t = rule_trigger(&shared.rules, &hit);
            let _ = shared.trigger(t);
        }
    }
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
            Err(e) => Response::error(format!("bad request: {e}")),
            Ok(Request::Status) => Response {
                status: Some(status(&shared)),
                ..Response::ok()
            },
            Ok(Request::Trigger { reason, post_ms }) => {
                match Trigger::cli(&reason, post_ms).map_err(Refused::from) {
                    Ok(t) => match shared.trigger(t) {
                        Ok(a) => Response {
                            trigger: Some(a),
                            ..Response::ok()
                        },
                        Err(e) => {
                            let suppressed = match &e {
                                Refused::Suppressed {
                                    reason,
                                    retry_after_ms,
                                } => Some(Suppressed {
                                    reason: reason.as_str().into(),
                                    retry_after_ms: (*retry_after_ms != u64::MAX)
                                        .then_some(*retry_after_ms),
                                }),
                                _ => None,
                            };
                            Response {
                                suppressed,
                                ..Response::error(e.to_string())
                            }
                        }
                    },
                    Err(e) => Response::error(e.to_string()),
                }
            }
            Ok(Request::SnapshotState { id }) => match shared.snapshot_info(&id) {
                Some(info) => Response {
                    state: Some(info),
                    ..Response::ok()
                },
                None => Response::error(format!("no snapshot {id} in this daemon's memory")),
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
                        snapshot: Some(w),
                        ..Response::ok()
                    },
                    Err(e) => Response::error(e),
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
    run_until(config, ready, async {
        use tokio::signal::unix::{SignalKind, signal};
        // Listeners made once: a signal that arrives while a connection is being accepted is
        // kept for the next turn of the accept loop instead of being missed.
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    })
}

/// Binds the hook's listener when a token is configured.
async fn bind_hook(config: &Config) -> anyhow::Result<Option<(tokio::net::TcpListener, String)>> {
    if !config.hook.enabled() {
        return Ok(None);
    }
    let token = config
        .hook
        .load_token()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let addr = config
        .hook
        .listen_addr()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the hook on {addr}: {e}"))?;
    Ok(Some((listener, token)))
}

/// [`run`] until `shutdown` completes instead of a signal (for embedding and tests).
pub fn run_until(
    config: Config,
    ready: impl FnOnce(&Rings),
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let listener_path = config.recorder.control_socket.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let rules =
            triggers::rules::check_rules(&config.rules).map_err(|e| anyhow::anyhow!("{e}"))?;
        let listener = bind_socket(&listener_path).map_err(anyhow::Error::msg)?;
        let hook = bind_hook(&config).await?;
        let mut rings = Rings::start(&config)?;
        ready(&rings);
        let hits = rings.take_rule_hits();
        let hook_listen = match &hook {
            Some((l, _)) => Some(l.local_addr()?.to_string()),
            None => None,
        };
        let governor = Governor::new(
            config.governor.clone(),
            crate::rings::monotonic_ns(),
            snapshot::random_id,
        );
        let host_id = crate::statedump::host_info(&config.recorder.host_id, rings.ncpu()).host_id;
        let (collector, mut group_triggers) = flightrec_uplink::Collector::start(
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
            governor: Mutex::new(governor),
            states: Mutex::new(States::default()),
            rules,
            rule_hits: Default::default(),
            hook_listen,
            group: collector.has_group().then(|| {
                Arc::new(CollectorGroup {
                    collector: collector.clone(),
                    runtime: tokio::runtime::Handle::current(),
                }) as Arc<dyn GroupForwarder>
            }),
            collector,
        });
        // Group triggers fanned out by the collector go through the governor like any other.
        let on_group = shared.clone();
        tokio::spawn(async move {
            while let Some(info) = group_triggers.recv().await {
                let _ = on_group.trigger(group_trigger(info));
            }
        });
        // Triggered snapshots the collector acknowledged become `uploaded`.
        if let Some(mut uploaded) = shared.collector.uploaded() {
            let s = shared.clone();
            tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    match uploaded.recv().await {
                        Ok(path) => s.mark_uploaded(&path),
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => break,
                    }
                }
            });
        }
        if let Some(hits) = hits {
            let s = shared.clone();
            tokio::spawn(async move {
                if let Err(e) = read_rule_hits(s, hits).await {
                    eprintln!("flightrec: reading kernel rule hits stopped: {e}");
                }
            });
        }
        let (stop_hook, hook_stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some((listener, token)) = hook {
            let addr = listener.local_addr()?;
            let hook_config = shared.config.hook.clone();
            let state = triggers::hook::HookState::new(
                Arc::new(HookService(shared.clone())),
                &token,
                &hook_config,
            );
            let app = triggers::hook::app(state);
            eprintln!("flightrec: trigger hook listening on http://{addr}/v1/trigger");
            tokio::spawn(async move {
                triggers::hook::serve(listener, app, &hook_config, async {
                    let _ = hook_stopped.await;
                })
                .await;
            });
        }
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
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                conn = listener.accept() => {
                    if let Ok((stream, _)) = conn {
                        tokio::spawn(handle(shared.clone(), stream));
                    }
                }
                () = &mut shutdown => break,
            }
        }
        let _ = stop_hook.send(());
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

/// A daemon running on its own thread, for embedding (and tests): [`spawn`] starts it,
/// [`Handle::stop`] ends it.
pub struct Handle {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

/// Starts the daemon on a thread and returns once it serves its control socket (or failed).
pub fn spawn(config: Config) -> anyhow::Result<Handle> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (up, is_up) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        run_until(
            config,
            move |_| {
                let _ = up.send(());
            },
            async {
                let _ = stopped.await;
            },
        )
    });
    let mut handle = Handle {
        stop: Some(stop),
        thread: Some(thread),
    };
    if is_up.recv().is_err() {
        // The thread ended before the rings were up: its error says why.
        return Err(handle
            .join()
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("the daemon stopped before it started recording")));
    }
    Ok(handle)
}

impl Handle {
    /// Stops the daemon and waits for it; returns its result.
    pub fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.join()
    }

    fn join(&mut self) -> anyhow::Result<()> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(anyhow::anyhow!("the daemon thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.join();
    }
}
