//! Group triggers: recorders register in a group by holding a server-sent-events stream open;
//! a trigger with `scope: group` is written to every registered stream at once with one trigger
//! id, and each recorder takes a snapshot whose trigger fields carry that id, so the catalog
//! links the snapshots.
//!
//! # Wire protocol
//!
//! ```text
//! GET /v1/groups/GROUP/listen?host_id=HOST      (recorder token of HOST whose `groups`
//!                                               in auth.recorders name GROUP or "*")
//!   text/event-stream; events:
//!     event: hello    data: {"group","host_id","collector_realtime_ns"}
//!     event: trigger  data: {"trigger_id","group","reason","requested_by","fields",
//!                            "sent_realtime_ns"}
//!   A newer registration of the same host replaces the older one.
//! POST /v1/trigger {"scope":"group","group":G,"reason":R,"fields":{...}}
//!   (admin token, or a recorder token allowed in G and registered in it)
//!   200 {"trigger_id","group","recipients":[HOST...],"sent_realtime_ns"}
//! GET /v1/groups                    groups and their registered hosts (reader)
//! GET /v1/triggers/TRIGGER_ID       the trigger, its snapshots, and hosts still missing
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use futures_util::Stream;
use schemas::wire::{GroupHello, TriggerScope};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::auth::Caller;
use crate::catalog::{Entry, GroupTrigger};
use crate::error::AppError;
use crate::{AppState, now_realtime_ns};

/// What a registered recorder is sent.
#[derive(Clone, Debug)]
pub enum Message {
    /// Take a snapshot for this trigger.
    Trigger(Arc<GroupTrigger>),
}

struct Member {
    conn: u64,
    tx: mpsc::Sender<Message>,
    since_realtime_ns: u64,
}

/// Recorders registered per group.
#[derive(Default)]
pub struct Registry {
    groups: Mutex<HashMap<String, HashMap<String, Member>>>,
    next_conn: AtomicU64,
}

/// One registered host, as listed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Host id.
    pub host_id: String,
    /// When it registered (`CLOCK_REALTIME` ns).
    pub since_realtime_ns: u64,
}

impl Registry {
    /// Hosts registered, all groups.
    pub fn members(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }

    /// Groups and their hosts, sorted.
    pub fn list(&self) -> Vec<(String, Vec<MemberInfo>)> {
        let g = self.lock();
        let mut out: Vec<_> = g
            .iter()
            .map(|(name, m)| {
                let mut hosts: Vec<_> = m
                    .iter()
                    .map(|(h, m)| MemberInfo {
                        host_id: h.clone(),
                        since_realtime_ns: m.since_realtime_ns,
                    })
                    .collect();
                hosts.sort_by(|a, b| a.host_id.cmp(&b.host_id));
                (name.clone(), hosts)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Member>>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(self: &Arc<Self>, group: &str, host: &str) -> (mpsc::Receiver<Message>, Leave) {
        let (tx, rx) = mpsc::channel(16);
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(group.to_owned()).or_default().insert(
            host.to_owned(),
            Member {
                conn,
                tx,
                since_realtime_ns: now_realtime_ns(),
            },
        );
        tracing::info!(group, host, "recorder registered");
        (
            rx,
            Leave {
                registry: self.clone(),
                group: group.to_owned(),
                host: host.to_owned(),
                conn,
            },
        )
    }

    /// Whether `host` is registered in `group`.
    pub fn is_member(&self, group: &str, host: &str) -> bool {
        self.lock().get(group).is_some_and(|m| m.contains_key(host))
    }

    /// Sends `trigger` to every host of its group; returns the hosts it reached.
    pub fn fan_out(&self, trigger: Arc<GroupTrigger>) -> Vec<String> {
        let g = self.lock();
        let mut sent: Vec<String> = g
            .get(&trigger.group)
            .map(|m| {
                m.iter()
                    .filter(|(_, m)| m.tx.try_send(Message::Trigger(trigger.clone())).is_ok())
                    .map(|(h, _)| h.clone())
                    .collect()
            })
            .unwrap_or_default();
        sent.sort();
        sent
    }
}

/// Deregisters a host when its stream ends (the connection closed).
struct Leave {
    registry: Arc<Registry>,
    group: String,
    host: String,
    conn: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        let mut g = self.registry.lock();
        if let Some(m) = g.get_mut(&self.group) {
            // Only our own registration: a newer one of the same host stays.
            if m.get(&self.host).is_some_and(|m| m.conn == self.conn) {
                m.remove(&self.host);
                tracing::info!(group = %self.group, host = %self.host, "recorder left");
            }
            if m.is_empty() {
                g.remove(&self.group);
            }
        }
    }
}

/// Routes of group registration and triggers.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/groups", get(list))
        .route("/v1/groups/{group}/listen", get(listen))
        .route("/v1/trigger", post(trigger))
        .route("/v1/triggers/{trigger_id}", get(trigger_view))
}

/// Group names: what a config file would hold, nothing that needs escaping.
pub fn valid_group(g: &str) -> bool {
    !g.is_empty()
        && g.len() <= 64
        && g.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Whether the configuration lets recorder `host` register in and trigger `group`.
fn may_join(st: &AppState, host: &str, group: &str) -> bool {
    st.config
        .auth
        .recorders
        .iter()
        .any(|r| r.host_id == host && r.may_join(group))
}

#[derive(Deserialize)]
struct ListenQuery {
    host_id: String,
}

async fn listen(
    State(st): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
    Query(q): Query<ListenQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    if !valid_group(&group) {
        return Err(AppError::BadRequest(
            "group names are 1 to 64 letters, digits, '.', '_' or '-'".into(),
        ));
    }
    caller.require_host(&q.host_id)?;
    if let Caller::Recorder(h) = &caller
        && !may_join(&st, h, &group)
    {
        return Err(AppError::Forbidden(
            "register in this group (see groups in auth.recorders)",
        ));
    }
    let (rx, leave) = st.groups.register(&group, &q.host_id);
    let hello = GroupHello {
        group,
        host_id: q.host_id,
        collector_realtime_ns: now_realtime_ns(),
    };
    let hello = Event::default()
        .event("hello")
        .data(serde_json::to_string(&hello).expect("serialisable"));
    let first = futures_util::stream::once(async move { Ok(hello) });
    let rest = futures_util::stream::unfold((rx, leave), |(mut rx, leave)| async move {
        let Message::Trigger(t) = rx.recv().await?;
        let ev = Event::default()
            .event("trigger")
            .data(serde_json::to_string(&*t).expect("serialisable"));
        Some((Ok(ev), (rx, leave)))
    });
    use futures_util::StreamExt;
    Ok(Sse::new(first.chain(rest)).keep_alive(KeepAlive::default()))
}

pub use schemas::wire::{TriggerRequest, TriggerResponse};

async fn trigger(
    State(st): State<AppState>,
    caller: Caller,
    Json(req): Json<TriggerRequest>,
) -> Result<Json<TriggerResponse>, AppError> {
    // `scope` has one value, `group`: any other is refused while the body is read.
    let TriggerScope::Group = req.scope;
    if !valid_group(&req.group) {
        return Err(AppError::BadRequest("bad group name".into()));
    }
    let requested_by = match &caller {
        Caller::Admin => "collector".to_owned(),
        Caller::Recorder(h)
            if may_join(&st, h, &req.group) && st.groups.is_member(&req.group, h) =>
        {
            h.clone()
        }
        Caller::Recorder(_) => {
            return Err(AppError::Forbidden(
                "trigger a group it is not registered in",
            ));
        }
        Caller::Reader => return Err(AppError::Forbidden("trigger")),
    };
    let mut t = GroupTrigger {
        trigger_id: schemas::clock::random_id(),
        group: req.group.clone(),
        reason: if req.reason.is_empty() {
            "group trigger".into()
        } else {
            req.reason
        },
        requested_by,
        fields: req.fields,
        sent_realtime_ns: now_realtime_ns(),
        recipients: Vec::new(),
    };
    // Fan out first, record after: the 50 ms budget is for the recorders, not the catalog.
    let shared = Arc::new(t.clone());
    t.recipients = st.groups.fan_out(shared);
    st.metrics
        .group_triggers_sent
        .fetch_add(1, Ordering::Relaxed);
    tracing::info!(trigger = %t.trigger_id, group = %t.group, recipients = ?t.recipients, "group trigger");
    let resp = TriggerResponse {
        trigger_id: t.trigger_id.clone(),
        group: t.group.clone(),
        recipients: t.recipients.clone(),
        sent_realtime_ns: t.sent_realtime_ns,
    };
    st.with_catalog(move |c| c.insert_trigger(&t)).await?;
    Ok(Json(resp))
}

#[derive(Serialize)]
struct GroupList {
    groups: Vec<GroupInfo>,
}

#[derive(Serialize)]
struct GroupInfo {
    group: String,
    hosts: Vec<MemberInfo>,
}

async fn list(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, AppError> {
    caller.require_read()?;
    let groups = st
        .groups
        .list()
        .into_iter()
        .map(|(group, hosts)| GroupInfo { group, hosts })
        .collect();
    Ok(Json(
        serde_json::to_value(GroupList { groups }).expect("serialisable"),
    ))
}

/// A group trigger with the snapshots it produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TriggerView {
    /// The trigger (absent if only snapshots name it, e.g. after the catalog was moved).
    pub trigger: Option<GroupTrigger>,
    /// Its snapshots, one per host, by host id.
    pub snapshots: Vec<Entry>,
    /// Recipients with no snapshot archived (yet).
    pub missing: Vec<String>,
}

/// Loads a trigger and its snapshots.
pub async fn load_trigger(st: &AppState, trigger_id: &str) -> Result<TriggerView, AppError> {
    let id = trigger_id.to_owned();
    let (trigger, mut snapshots) = st
        .with_catalog(move |c| {
            let t = c.trigger(&id)?;
            let page = c.list(&crate::catalog::Query {
                trigger_id: Some(id.clone()),
                limit: Some(1000),
                ..Default::default()
            })?;
            Ok((t, page.items))
        })
        .await?;
    if trigger.is_none() && snapshots.is_empty() {
        return Err(AppError::NotFound("trigger"));
    }
    snapshots.sort_by(|a, b| a.host_id.cmp(&b.host_id));
    let missing = trigger
        .as_ref()
        .map(|t| {
            t.recipients
                .iter()
                .filter(|h| !snapshots.iter().any(|s| &s.host_id == *h))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    Ok(TriggerView {
        trigger,
        snapshots,
        missing,
    })
}

async fn trigger_view(
    State(st): State<AppState>,
    caller: Caller,
    Path(trigger_id): Path<String>,
) -> Result<Json<TriggerView>, AppError> {
    caller.require_read()?;
    if !crate::ingest::valid_id(&trigger_id) {
        return Err(AppError::BadRequest("trigger ids are hex".into()));
    }
    Ok(Json(load_trigger(&st, &trigger_id).await?))
}
