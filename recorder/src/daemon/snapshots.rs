//! Snapshot writing: the unconditional `snapshot` command, the snapshots of admitted triggers
//! (frozen after their post window, named after their source), and the bounded table of their
//! states that `GET /v1/snapshots/{id}` and `snapshot_state` read.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use schemas::manifest::TriggerInfo;
use triggers::hook::{SnapshotInfo, SnapshotState};
use triggers::{Source, Trigger};

use super::Shared;
use crate::error::SnapshotError;
use crate::snapshot::{self, Written};

/// Most snapshot states kept for `GET /v1/snapshots/{id}`; the oldest are forgotten first.
const MAX_STATES: usize = 1024;

/// Snapshot states by id, bounded.
#[derive(Default)]
pub(super) struct States {
    pub(super) by_id: HashMap<String, (SnapshotInfo, Vec<TriggerInfo>)>,
    order: VecDeque<String>,
}

impl States {
    pub(super) fn insert(&mut self, info: SnapshotInfo) {
        if self.order.len() >= MAX_STATES
            && let Some(old) = self.order.pop_front()
        {
            self.by_id.remove(&old);
        }
        self.order.push_back(info.snapshot_id.clone());
        self.by_id
            .insert(info.snapshot_id.clone(), (info, Vec::new()));
    }

    pub(super) fn set(&mut self, id: &str, state: SnapshotState) {
        if let Some((info, _)) = self.by_id.get_mut(id) {
            info.state = state;
        }
    }
}

/// Takes a snapshot with the daemon's rings (one at a time).
pub(super) fn take_snapshot(
    shared: &Shared,
    dir: Option<PathBuf>,
    name: Option<String>,
    trigger: TriggerInfo,
) -> Result<Written, SnapshotError> {
    // Checked before freezing: a refused request costs the rings nothing.
    let dir = match dir {
        Some(d) => super::access::approved_dir(&shared.config.recorder, &d)?,
        None => shared.config.recorder.spool_dir.clone(),
    };
    // One freeze at a time (the rings serialise them); status and rates read the rings
    // meanwhile.
    let frozen = shared.rings.freeze_epoch();
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
            Err(e)
        }
    }
}

/// Freezes (joining a kernel freeze if one waits), writes the snapshot of an admitted trigger
/// to the spool dir, and records its state.
pub(super) fn take_triggered(shared: &Shared, id: &str, trigger: Trigger) {
    // One freeze at a time (the rings serialise them); status and rates read the rings
    // meanwhile.
    let frozen = shared.rings.freeze_epoch();
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
        fields.insert(
            "joined".into(),
            serde_json::to_value(joined).expect("serialisable"),
        );
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
