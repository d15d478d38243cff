//! Alertmanager's webhook, as a trigger source: `POST /v1/alertmanager` on the hook takes the
//! JSON Alertmanager sends to a `webhook_configs` receiver and turns every firing alert into a
//! trigger through the governor, so an alert on a latency histogram brings back the snapshot
//! that explains it.
//!
//! # Mapping
//!
//! | alert | trigger |
//! | --- | --- |
//! | `status: "firing"` | one trigger; `resolved` alerts are acknowledged and ignored |
//! | `labels.alertname` | `reason` (`"alert"` when it has none) |
//! | `labels` | `fields.tags` (what the collector catalogues as `key=value` tags) |
//! | `fingerprint` | the dedupe signature `alert:FINGERPRINT`: a re-sent alert (Alertmanager repeats firing alerts every `group_interval`) is a duplicate, never a second snapshot |
//! | `startsAt`, `generatorURL`, `annotations` | `fields.alert` |
//!
//! The payload format is Alertmanager's webhook version 4
//! (<https://prometheus.io/docs/alerting/latest/configuration/#webhook_config>); unknown fields
//! are ignored, since Alertmanager adds them over time.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::trigger::{
    InvalidTrigger, MAX_REASON, MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TAGS, Source, Trigger,
};

/// Most alerts one call may carry (Alertmanager's `max_alerts` should be set at or below it).
pub const MAX_ALERTS: usize = 64;

/// The body Alertmanager posts to a webhook receiver.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// Payload format version (`"4"`).
    #[serde(default)]
    pub version: String,
    /// `firing` or `resolved`, for the group as a whole.
    #[serde(default)]
    pub status: String,
    /// Name of the receiver that sent it.
    #[serde(default)]
    pub receiver: String,
    /// The alerts of the group.
    pub alerts: Vec<Alert>,
}

/// One alert of a [`Payload`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: String,
    /// The alert's labels (`alertname` among them).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its annotations (`summary`, `description`...).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// When it started firing (RFC 3339).
    #[serde(default)]
    pub starts_at: String,
    /// The Prometheus expression page that fired it.
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    /// Alertmanager's identity of the alert (a hash of its labels).
    #[serde(default)]
    pub fingerprint: String,
}

/// The longest prefix of `s` that fits `max` bytes, cut on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The firing alerts of `payload`, each with the trigger it becomes.
pub fn triggers(payload: &Payload) -> Result<Vec<(&Alert, Trigger)>, InvalidTrigger> {
    if payload.alerts.len() > MAX_ALERTS {
        return Err(InvalidTrigger(format!(
            "{} alerts in one call, more than the {MAX_ALERTS} allowed: set max_alerts: \
             {MAX_ALERTS} in the Alertmanager receiver's webhook_configs",
            payload.alerts.len()
        )));
    }
    let mut out = Vec::new();
    for a in payload.alerts.iter().filter(|a| a.status == "firing") {
        let name = a
            .labels
            .get("alertname")
            .map(String::as_str)
            .filter(|n| !n.trim().is_empty())
            .unwrap_or("alert");
        let fingerprint = if a.fingerprint.is_empty() {
            // Older senders: the labels are the alert's identity.
            a.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        } else {
            a.fingerprint.clone()
        };
        let mut t = Trigger::new(
            Source::Alert,
            cut(name, MAX_REASON).to_owned(),
            format!("alert:{fingerprint}"),
        );
        // Labels become tags; Prometheus label names are short, values are cut to the limit,
        // and past the limit on their number the rest are left out rather than refusing the
        // alert (an alert must never be lost for its labels).
        let tags: serde_json::Map<String, serde_json::Value> = a
            .labels
            .iter()
            .filter(|(k, _)| !k.is_empty() && k.len() <= MAX_TAG_KEY)
            .take(MAX_TAGS)
            .map(|(k, v)| (k.clone(), cut(v, MAX_TAG_VALUE).into()))
            .collect();
        t.fields.insert("tags".into(), tags.into());
        let mut alert = serde_json::Map::new();
        alert.insert("fingerprint".into(), cut(&fingerprint, 128).into());
        if !a.starts_at.is_empty() {
            alert.insert("starts_at".into(), cut(&a.starts_at, 64).into());
        }
        if !a.generator_url.is_empty() {
            alert.insert("generator_url".into(), cut(&a.generator_url, 2048).into());
        }
        if !payload.receiver.is_empty() {
            alert.insert("receiver".into(), cut(&payload.receiver, 256).into());
        }
        let annotations: serde_json::Map<String, serde_json::Value> = a
            .annotations
            .iter()
            .take(MAX_TAGS)
            .map(|(k, v)| (cut(k, MAX_TAG_KEY).to_owned(), cut(v, 1024).into()))
            .collect();
        if !annotations.is_empty() {
            alert.insert("annotations".into(), annotations.into());
        }
        t.fields.insert("alert".into(), alert.into());
        out.push((a, t));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Alertmanager 0.25 (Debian 12's) posts, trimmed to two alerts.
    const SENT: &str = r#"{
      "receiver": "flightrec",
      "status": "firing",
      "alerts": [
        {
          "status": "firing",
          "labels": {"alertname": "DiskLatencyHigh", "device": "vda", "severity": "page"},
          "annotations": {"summary": "p99 above 20 ms"},
          "startsAt": "2026-12-06T03:00:00.000Z",
          "endsAt": "0001-01-01T00:00:00Z",
          "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=x",
          "fingerprint": "c0ffee0123456789"
        },
        {
          "status": "resolved",
          "labels": {"alertname": "Old"},
          "annotations": {},
          "startsAt": "2026-12-06T02:00:00.000Z",
          "endsAt": "2026-12-06T02:30:00.000Z",
          "generatorURL": "",
          "fingerprint": "0123"
        }
      ],
      "groupLabels": {"alertname": "DiskLatencyHigh"},
      "commonLabels": {"alertname": "DiskLatencyHigh"},
      "commonAnnotations": {},
      "externalURL": "http://127.0.0.1:9093",
      "version": "4",
      "groupKey": "{}:{alertname=\"DiskLatencyHigh\"}",
      "truncatedAlerts": 0
    }"#;

    #[test]
    fn a_firing_alert_becomes_a_trigger_and_a_resolved_one_nothing() {
        let p: Payload = serde_json::from_str(SENT).unwrap();
        let t = triggers(&p).unwrap();
        assert_eq!(t.len(), 1);
        let (a, t) = &t[0];
        assert_eq!(a.fingerprint, "c0ffee0123456789");
        assert_eq!(t.source, Source::Alert);
        assert_eq!(t.reason, "DiskLatencyHigh");
        assert_eq!(t.signature, "alert:c0ffee0123456789");
        assert_eq!(
            t.fields["tags"],
            serde_json::json!({"alertname": "DiskLatencyHigh", "device": "vda", "severity": "page"})
        );
        assert_eq!(t.fields["alert"]["fingerprint"], "c0ffee0123456789");
        assert_eq!(t.fields["alert"]["receiver"], "flightrec");
        assert_eq!(
            t.fields["alert"]["annotations"]["summary"],
            "p99 above 20 ms"
        );
    }

    #[test]
    fn odd_alerts_are_cut_not_lost() {
        let mut labels: BTreeMap<String, String> = (0..40)
            .map(|i| (format!("l{i:02}"), "é".repeat(200)))
            .collect();
        labels.insert("alertname".into(), " ".into());
        let p = Payload {
            alerts: vec![Alert {
                status: "firing".into(),
                labels,
                ..Alert::default()
            }],
            ..Payload::default()
        };
        let t = triggers(&p).unwrap();
        let (_, t) = &t[0];
        // A blank name falls back; the signature comes from the labels.
        assert_eq!(t.reason, "alert");
        assert!(t.signature.starts_with("alert:alertname= ,l00="));
        let tags = t.fields["tags"].as_object().unwrap();
        assert_eq!(tags.len(), MAX_TAGS);
        // 400 bytes of two-byte characters, cut on a boundary to at most 256 bytes.
        let v = tags["l00"].as_str().unwrap();
        assert_eq!(v.len(), 256);
        assert!(v.chars().all(|c| c == 'é'));
    }

    #[test]
    fn too_many_alerts_are_refused_with_the_setting_to_change() {
        let p = Payload {
            alerts: vec![Alert::default(); MAX_ALERTS + 1],
            ..Payload::default()
        };
        let e = triggers(&p).unwrap_err();
        assert!(e.0.contains("max_alerts"), "{}", e.0);
    }

    #[test]
    fn a_payload_without_alerts_is_refused_by_serde() {
        assert!(serde_json::from_str::<Payload>(r#"{"status":"firing"}"#).is_err());
    }
}
