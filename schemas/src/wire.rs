//! The recorder↔collector wire: every JSON body the recorder's uploader and group client send
//! and read, and the collector's handlers produce and accept, defined once here so the two
//! sides cannot drift. The protocol itself (routes, headers, status codes) is described in
//! `docs/collector.md`.

use serde::{Deserialize, Serialize};

use crate::manifest::TriggerInfo;

/// Body of `POST /v1/uploads`: the recorder announces a snapshot file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    /// Snapshot id from the file's manifest.
    pub snapshot_id: String,
    /// File size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
}

/// Where an upload stands on the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadStage {
    /// Bytes are being received; send from the offset.
    Open,
    /// The snapshot is verified and archived: nothing more to send.
    Complete,
}

/// Answer to `POST /v1/uploads` and `GET /v1/uploads/ID`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadState {
    /// Open or complete.
    pub status: UploadStage,
    /// Bytes the collector holds: send from here.
    pub offset: u64,
    /// File size.
    #[serde(default)]
    pub size: u64,
    /// Largest chunk accepted.
    #[serde(default)]
    pub max_chunk: u64,
}

/// Answer to a chunk (`PATCH /v1/uploads/ID`): the collector's new offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkAck {
    /// Bytes the collector holds after this chunk.
    pub offset: u64,
}

/// Answer to `POST /v1/uploads/ID/complete`: the snapshot is verified, archived and
/// catalogued. `E` is the collector's catalog entry; the recorder needs only the status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completed<E> {
    /// Always [`UploadStage::Complete`].
    pub status: UploadStage,
    /// What the catalog now holds.
    pub entry: E,
}

/// Body of every error answer of the collector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// One sentence saying what is wrong.
    #[serde(default)]
    pub error: String,
    /// On a conflict over an upload: the offset the collector holds, to resume from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// Scope of a trigger sent to the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerScope {
    /// Every recorder registered in the group takes a snapshot.
    Group,
}

/// Body of `POST /v1/trigger`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// Who takes a snapshot.
    pub scope: TriggerScope,
    /// The group.
    pub group: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// Details passed to every recorder (request URL, duration, tags...).
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// Answer to `POST /v1/trigger`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerResponse {
    /// Shared by every snapshot of this trigger.
    pub trigger_id: String,
    /// The group.
    pub group: String,
    /// Hosts it reached.
    pub recipients: Vec<String>,
    /// Collector `CLOCK_REALTIME` ns when it was sent.
    pub sent_realtime_ns: u64,
}

/// First event of a group's stream (`GET /v1/groups/GROUP/listen`, event `hello`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHello {
    /// The group joined.
    pub group: String,
    /// The host registered.
    pub host_id: String,
    /// Collector `CLOCK_REALTIME` ns when the stream opened.
    pub collector_realtime_ns: u64,
}

/// A group trigger: sent to every registered recorder (event `trigger`) and kept in the
/// collector's catalog.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupTrigger {
    /// Shared by every host's snapshot.
    pub trigger_id: String,
    /// The group.
    pub group: String,
    /// Why.
    pub reason: String,
    /// Who asked: a host id, or `collector`.
    pub requested_by: String,
    /// The caller's details, passed on to every recorder.
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Collector `CLOCK_REALTIME` ns when it was sent.
    pub sent_realtime_ns: u64,
    /// Host ids it was sent to.
    #[serde(default)]
    pub recipients: Vec<String>,
}

impl GroupTrigger {
    /// The trigger recorded in a recorder's snapshot, received at `received_realtime_ns`: its
    /// fields carry the trigger id (which links the hosts' snapshots in the catalog) and both
    /// clocks (an estimate of the host's clock offset for alignment).
    pub fn to_trigger_info(&self, received_realtime_ns: u64) -> TriggerInfo {
        let mut fields = self.fields.clone();
        for (k, v) in [
            ("trigger_id", self.trigger_id.clone().into()),
            ("group", self.group.clone().into()),
            ("requested_by", self.requested_by.clone().into()),
            ("sent_realtime_ns", self.sent_realtime_ns.into()),
            ("received_realtime_ns", received_realtime_ns.into()),
        ] {
            fields.insert(k.to_owned(), v);
        }
        TriggerInfo {
            source: "group".into(),
            reason: self.reason.clone(),
            fields,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_lowercase_words_on_the_wire() {
        let s = UploadState {
            status: UploadStage::Complete,
            offset: 7,
            size: 7,
            max_chunk: 0,
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["status"], "complete");
        let back: UploadState = serde_json::from_str(r#"{"status":"open","offset":3}"#).unwrap();
        assert_eq!(back.status, UploadStage::Open);
        assert!(serde_json::from_str::<UploadState>(r#"{"status":"done","offset":3}"#).is_err());
        let t: TriggerRequest = serde_json::from_str(r#"{"scope":"group","group":"web"}"#).unwrap();
        assert_eq!(t.scope, TriggerScope::Group);
        assert!(serde_json::from_str::<TriggerRequest>(r#"{"scope":"host","group":"w"}"#).is_err());
    }

    #[test]
    fn an_error_body_without_offset_omits_it() {
        let e = ErrorBody {
            error: "no".into(),
            offset: None,
        };
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"error":"no"}"#);
    }
}
