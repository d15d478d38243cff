//! The recording daemon (`flightrec record`): the rings, the one governor every trigger goes
//! through, and the bridges to the hook, the kernel rules and the collector.
//!
//! - [`protocol`]: the control socket's requests and answers, and its client ([`request`]);
//! - `access`: who may use the socket, and where `snapshot` may write;
//! - `caps`: the capabilities dropped once the programs are attached;
//! - `control`: the socket's server side;
//! - `snapshots`: writing snapshots and the table of their states;
//! - `rule_hits`: kernel rule hits, read from the `RULE_HITS` ring buffer;
//! - `scrape`: `GET /metrics` (the exposition is [`crate::metrics`]);
//! - `embed`: running the daemon ([`run`], [`run_until`], [`spawn`]).
//!
//! # Triggers
//!
//! `snapshot` is the unconditional manual command. Everything else that asks for a snapshot —
//! the HTTP hook, kernel latency rules, `trigger` on the control socket, group triggers from the
//! collector — goes through the one [`Governor`], and every decision is logged on stderr and
//! counted (`status` shows the counters).

mod access;
pub(crate) mod caps;
mod control;
mod embed;
pub mod protocol;
mod rule_hits;
mod scrape;
mod snapshots;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schemas::manifest::TriggerInfo;
use triggers::governor::{Decision, Governor};
use triggers::group::{ForwardError, GroupForwarder};
use triggers::hook::{Accepted, Refused, SnapshotInfo, SnapshotService, SnapshotState};
use triggers::rules::Rule;
use triggers::{Scope, Source, Trigger};

pub use access::{Access, DirRefused};
pub use embed::{DaemonError, Handle, run, run_until, spawn};
pub use protocol::{ControlError, Request, Response, Status, Suppressed, request};

use crate::config::Config;
use crate::rings::Rings;
use snapshots::{States, take_triggered};

struct Shared {
    /// Shared without a lock: freezes serialise themselves, and what `status` reads is
    /// consistent on its own, so status answers during a snapshot.
    rings: Rings,
    config: Config,
    /// Who may use the control socket.
    access: access::Access,
    started: Instant,
    rates: Mutex<Vec<f64>>,
    taken: AtomicU64,
    failed: AtomicU64,
    governor: Mutex<Governor>,
    states: Mutex<States>,
    rules: Vec<Rule>,
    rule_hits: AtomicU64,
    hook_listen: Option<String>,
    /// Answers of the hook, by status code.
    hook_requests: Arc<triggers::hook::RequestCounts>,
    metrics_listen: Option<String>,
    /// Where `scope: group` triggers go: the collector, when one and a group are configured.
    group: Option<Arc<dyn GroupForwarder>>,
    collector: flightrec_uplink::Collector,
}

/// What the daemon reports, to `status` and to `GET /metrics`.
fn status(shared: &Shared) -> Status {
    let rings = &shared.rings;
    Status {
        pid: std::process::id(),
        uptime_s: shared.started.elapsed().as_secs_f64(),
        adopted: rings.adopted(),
        ring_bytes: rings.ring_bytes(),
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
        hook_requests: shared
            .hook_requests
            .snapshot()
            .into_iter()
            .map(|(code, n)| (code.to_string(), n))
            .collect(),
        metrics_listen: shared.metrics_listen.clone(),
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
    pub(super) fn trigger(self: &Arc<Self>, trigger: Trigger) -> Result<Accepted, Refused> {
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
                    .map_err(|e| Refused::Failed(control::chain(&e))),
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
                    self.rings.hold();
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
                        joined.push(TriggerInfo {
                            source: trigger.source.as_str().into(),
                            reason: trigger.reason.clone(),
                            fields: trigger.fields.clone(),
                        });
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
                    self.rings.release();
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

/// Sends `scope: group` triggers to the collector, which fans them out to every recorder of
/// this one's group (this one included, through its registration).
struct CollectorGroup {
    collector: flightrec_uplink::Collector,
    runtime: tokio::runtime::Handle,
}

impl GroupForwarder for CollectorGroup {
    fn forward(&self, trigger: &Trigger) -> Result<String, ForwardError> {
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
        .map_err(|e| ForwardError(Box::new(e)))
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
