//! What a trigger is, whatever its source: the hook's JSON body, its validation, and the
//! normalised [`Trigger`] the governor decides on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a trigger came from. Budgets and counters are kept per source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `POST /v1/trigger` (webserver modules, the tower layer, scripts).
    Hook,
    /// A kernel latency rule matched in the eBPF programs.
    Rule,
    /// `flightrec trigger` on the command line.
    Cli,
    /// A group trigger fanned out by the collector.
    Group,
    /// A firing alert posted by Alertmanager (`POST /v1/alertmanager` on the hook).
    Alert,
}

impl Source {
    /// Every source, in counter order.
    pub const ALL: [Source; 5] = [
        Source::Hook,
        Source::Rule,
        Source::Cli,
        Source::Group,
        Source::Alert,
    ];

    /// The name used in manifests, counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Hook => "hook",
            Source::Rule => "rule",
            Source::Cli => "cli",
            Source::Group => "group",
            Source::Alert => "alert",
        }
    }
}

/// Whether a hook trigger asks for a snapshot of this host only or of every host in its group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// This host only.
    #[default]
    Local,
    /// Every recorder in the group, through the collector.
    Group,
}

/// Most bytes of a reason.
pub const MAX_REASON: usize = 256;
/// Most bytes of a URL.
pub const MAX_URL: usize = 2048;
/// Most bytes of a request id.
pub const MAX_REQUEST_ID: usize = 128;
/// Most tags on one trigger.
pub const MAX_TAGS: usize = 32;
/// Most bytes of a tag key.
pub const MAX_TAG_KEY: usize = 64;
/// Most bytes of a tag value.
pub const MAX_TAG_VALUE: usize = 256;

/// The JSON body of `POST /v1/trigger`. Unknown fields are refused so a misspelt one is noticed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookRequest {
    /// Why a snapshot is wanted (required, 1 to 256 bytes).
    pub reason: String,
    /// URL of the slow request (path and query; the path is the dedupe signature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// HTTP method of the slow request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// How long the request took, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// The request's id (e.g. `X-Request-Id`), to find it again in logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Process id of the worker that served the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Thread id of the worker thread that served it (the pid for single-threaded workers
    /// such as nginx's): with `start_realtime_ns` and `duration_ms`, `analyze` tells the
    /// request's story.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    /// When the request started, ns since the Unix epoch (CLOCK_REALTIME).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_realtime_ns: Option<u64>,
    /// Free key/value labels kept in the manifest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Keep recording this long after the trigger before freezing, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_ms: Option<u64>,
    /// `local` (default) or `group`.
    #[serde(default)]
    pub scope: Scope,
}

/// A trigger whose fields break a limit; the message is safe to show to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidTrigger(pub String);

/// A trigger from any source, ready for the governor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// Where it came from.
    pub source: Source,
    /// Why (free text).
    pub reason: String,
    /// What makes two triggers "the same" for dedupe (e.g. rule + comm, or URL path).
    pub signature: String,
    /// Details kept in the manifest's `trigger.fields`.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Post-trigger window asked for, ms (the governor's default when absent).
    pub post_ms: Option<u64>,
    /// Local or group.
    pub scope: Scope,
    /// The kernel already froze the rings for it (a kernel rule without a post window).
    pub already_frozen: bool,
}

impl Trigger {
    /// A trigger with no fields.
    pub fn new(source: Source, reason: impl Into<String>, signature: impl Into<String>) -> Self {
        Trigger {
            source,
            reason: reason.into(),
            signature: signature.into(),
            fields: serde_json::Map::new(),
            post_ms: None,
            scope: Scope::Local,
            already_frozen: false,
        }
    }

    /// A `flightrec trigger` from the command line; the reason is the dedupe signature.
    pub fn cli(reason: &str, post_ms: Option<u64>) -> Result<Trigger, InvalidTrigger> {
        check_text("reason", reason, MAX_REASON, false)?;
        let mut t = Trigger::new(Source::Cli, reason, format!("cli:{reason}"));
        t.post_ms = post_ms;
        Ok(t)
    }
}

fn check_text(what: &str, text: &str, max: usize, empty_ok: bool) -> Result<(), InvalidTrigger> {
    if !empty_ok && text.trim().is_empty() {
        return Err(InvalidTrigger(format!("{what} must not be empty")));
    }
    if text.len() > max {
        return Err(InvalidTrigger(format!(
            "{what} is {} bytes, more than the {max} allowed",
            text.len()
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(InvalidTrigger(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

/// The path of a URL (no scheme, host, query or fragment): the dedupe signature of a slow
/// request, so `/orders?id=1` and `/orders?id=2` count as the same slow endpoint.
pub fn url_path(url: &str) -> &str {
    let rest = match url.find("://") {
        Some(i) => {
            let after = &url[i + 3..];
            after.find('/').map_or("/", |j| &after[j..])
        }
        None => url,
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

impl HookRequest {
    /// Checks every field against its limit and turns the body into a [`Trigger`].
    /// `max_post_ms` is the governor's limit on post windows.
    pub fn into_trigger(self, max_post_ms: u64) -> Result<Trigger, InvalidTrigger> {
        check_text("reason", &self.reason, MAX_REASON, false)?;
        let mut fields = serde_json::Map::new();
        let signature = match &self.url {
            Some(url) => {
                check_text("url", url, MAX_URL, false)?;
                fields.insert("url".into(), url.clone().into());
                format!("hook:{}", url_path(url))
            }
            None => format!("hook:{}", self.reason),
        };
        if let Some(m) = &self.method {
            if m.is_empty() || m.len() > 16 || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(InvalidTrigger(
                    "method must be 1 to 16 ASCII letters (e.g. GET)".into(),
                ));
            }
            fields.insert("method".into(), m.to_ascii_uppercase().into());
        }
        if let Some(d) = self.duration_ms {
            if !d.is_finite() || d < 0.0 {
                return Err(InvalidTrigger(
                    "duration_ms must be a finite number >= 0".into(),
                ));
            }
            fields.insert("duration_ms".into(), d.into());
        }
        for (k, v) in [("pid", self.pid), ("tid", self.tid)] {
            if let Some(v) = v {
                if v == 0 {
                    return Err(InvalidTrigger(format!("{k} must be a positive process id")));
                }
                fields.insert(k.into(), v.into());
            }
        }
        if let Some(t) = self.start_realtime_ns {
            fields.insert("start_realtime_ns".into(), t.into());
        }
        if let Some(id) = &self.request_id {
            check_text("request_id", id, MAX_REQUEST_ID, false)?;
            fields.insert("request_id".into(), id.clone().into());
        }
        if self.tags.len() > MAX_TAGS {
            return Err(InvalidTrigger(format!(
                "{} tags, more than the {MAX_TAGS} allowed",
                self.tags.len()
            )));
        }
        if !self.tags.is_empty() {
            let mut tags = serde_json::Map::new();
            for (k, v) in &self.tags {
                check_text("tag key", k, MAX_TAG_KEY, false)?;
                check_text("tag value", v, MAX_TAG_VALUE, true)?;
                tags.insert(k.clone(), v.clone().into());
            }
            fields.insert("tags".into(), tags.into());
        }
        if let Some(p) = self.post_ms
            && p > max_post_ms
        {
            return Err(InvalidTrigger(format!(
                "post_ms {p} is above this recorder's limit of {max_post_ms}"
            )));
        }
        Ok(Trigger {
            source: Source::Hook,
            reason: self.reason,
            signature,
            fields,
            post_ms: self.post_ms,
            scope: self.scope,
            already_frozen: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_paths() {
        let cases = [
            ("/orders?id=1", "/orders"),
            ("/orders#frag", "/orders"),
            ("http://example.test/a/b?x", "/a/b"),
            ("https://example.test", "/"),
            ("/", "/"),
        ];
        for (url, want) in cases {
            assert_eq!(url_path(url), want, "{url}");
        }
    }

    fn body(json: &str) -> Result<Trigger, String> {
        let req: HookRequest = serde_json::from_str(json).map_err(|e| e.to_string())?;
        req.into_trigger(1000).map_err(|e| e.0)
    }

    #[test]
    fn hook_bodies() {
        let t = body(
            r#"{"reason":"slow","url":"/api/x?q=1","method":"get","duration_ms":812.5,
                "request_id":"r-1","tags":{"svc":"shop"},"post_ms":200}"#,
        )
        .unwrap();
        assert_eq!(t.signature, "hook:/api/x");
        assert_eq!(t.fields["method"], "GET");
        assert_eq!(t.fields["duration_ms"], 812.5);
        assert_eq!(t.fields["request_id"], "r-1");
        assert_eq!(t.fields["tags"]["svc"], "shop");
        assert_eq!(t.post_ms, Some(200));
        assert_eq!(t.scope, Scope::Local);
        assert_eq!(body(r#"{"reason":"x"}"#).unwrap().signature, "hook:x");
        assert_eq!(
            body(r#"{"reason":"x","scope":"group"}"#).unwrap().scope,
            Scope::Group
        );

        let bad = [
            (r#"{"reason":""}"#, "reason must not be empty"),
            (r#"{"reason":"a\nb"}"#, "control characters"),
            (r#"{"reason":"x","method":"G T"}"#, "method"),
            (r#"{"reason":"x","duration_ms":-1}"#, "duration_ms"),
            (r#"{"reason":"x","post_ms":1001}"#, "limit of 1000"),
            (r#"{"reason":"x","colour":"red"}"#, "unknown field"),
            (r#"{"reason":"x","scope":"world"}"#, "unknown variant"),
            (r#"{"url":"/x"}"#, "missing field `reason`"),
        ];
        for (json, want) in bad {
            let err = body(json).unwrap_err();
            assert!(err.contains(want), "{json}: {err}");
        }
        let long = format!(r#"{{"reason":"{}"}}"#, "r".repeat(MAX_REASON + 1));
        assert!(body(&long).unwrap_err().contains("more than the 256"));
        let tags: Vec<String> = (0..=MAX_TAGS).map(|i| format!(r#""k{i}":"v""#)).collect();
        let many = format!(r#"{{"reason":"x","tags":{{{}}}}}"#, tags.join(","));
        assert!(body(&many).unwrap_err().contains("33 tags"));
    }

    #[test]
    fn cli_triggers() {
        let t = Trigger::cli("disk stall", Some(50)).unwrap();
        assert_eq!(
            (t.source, t.signature.as_str()),
            (Source::Cli, "cli:disk stall")
        );
        assert!(Trigger::cli(" ", None).is_err());
    }
}
