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
//!   (admin token, or a recorder token allowed in G and registered in it on any replica)
//!   200 {"trigger_id","group","recipients":[HOST...],"sent_realtime_ns"}
//! GET /v1/groups                    {"replica", "groups":[{"group","hosts":[{"host_id",
//!                                   "since_realtime_ns","replica"}]}]} (reader)
//! GET /v1/triggers/TRIGGER_ID       the trigger, its snapshots, and hosts still missing
//! ```
//!
//! Each collector process has a replica id. With a catalog that several collectors share
//! (PostgreSQL), each one records its registrations there and renews them every
//! [`RENEW_INTERVAL`]; the others count them for [`GROUP_LEASE_NS`] after the last renewal.
//! So a recorder token may trigger its group through any replica, a trigger's recipients are
//! every replica's recorders, and `/v1/groups` lists them all with the replica each one is
//! connected to. With the embedded catalog the registry of the one process is all there is.

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
use crate::catalog::{Catalog, Entry, GROUP_LEASE_NS, GroupMember, GroupTrigger};
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

/// How often a collector renews its registrations in a shared catalog.
pub const RENEW_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
const _: () = assert!(RENEW_INTERVAL.as_nanos() * 3 <= GROUP_LEASE_NS as u128);

/// Recorders registered per group on this collector.
pub struct Registry {
    groups: Mutex<HashMap<String, HashMap<String, Member>>>,
    next_conn: AtomicU64,
    /// This collector's replica id.
    replica: String,
    /// The catalog, when other collectors share it. Weak: the catalog's trigger listener
    /// holds this registry, and the catalog stops that listener when it is dropped.
    shared: Option<std::sync::Weak<dyn Catalog>>,
}

/// One registered host, as listed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Host id.
    pub host_id: String,
    /// When it registered (`CLOCK_REALTIME` ns).
    pub since_realtime_ns: u64,
    /// The replica its stream is connected to.
    pub replica: String,
}

impl Registry {
    /// An empty registry for a collector on `catalog`, with a new replica id.
    pub fn new(catalog: &Arc<dyn Catalog>) -> Registry {
        Registry {
            groups: Default::default(),
            next_conn: AtomicU64::new(0),
            replica: schemas::clock::random_id(),
            shared: catalog.shares_groups().then(|| Arc::downgrade(catalog)),
        }
    }

    /// This collector's replica id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Every registration here, as the catalog keeps them, and when the list was taken: a
    /// registration made since has a later `since_realtime_ns` (both are read under the lock).
    fn here(&self) -> (Vec<GroupMember>, u64) {
        let g = self.lock();
        let taken = now_realtime_ns();
        let members = g
            .iter()
            .flat_map(|(g, m)| {
                m.iter().map(|(h, m)| GroupMember {
                    group: g.clone(),
                    host_id: h.clone(),
                    since_realtime_ns: m.since_realtime_ns,
                    replica: self.replica.clone(),
                })
            })
            .collect();
        (members, taken)
    }

    /// Renews this collector's registrations in a shared catalog every [`RENEW_INTERVAL`],
    /// which also repairs what a failed join or leave (catalog down) left behind. Runs until
    /// dropped; returns at once with a catalog of one process.
    pub async fn renew(self: Arc<Self>) {
        if self.shared.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(RENEW_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(catalog) = self.catalog() else {
                return;
            };
            let ((members, taken), replica) = (self.here(), self.replica.clone());
            let done = tokio::task::spawn_blocking(move || {
                catalog.renew_groups(&replica, &members, taken)
            })
            .await;
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "group registrations not renewed in the catalog");
            }
        }
    }

    /// The shared catalog, while it is open.
    fn catalog(&self) -> Option<Arc<dyn Catalog>> {
        self.shared.as_ref().and_then(std::sync::Weak::upgrade)
    }

    /// Removes every registration of this collector from a shared catalog (at shutdown).
    pub async fn forget(&self) {
        let Some(catalog) = self.catalog() else {
            return;
        };
        let replica = self.replica.clone();
        let _ = tokio::task::spawn_blocking(move || catalog.renew_groups(&replica, &[], u64::MAX))
            .await;
    }

    /// Runs `f` on the shared catalog in a blocking thread, without waiting for it; a failure
    /// is logged and left to the next renewal.
    fn tell_catalog(
        &self,
        what: &'static str,
        f: impl FnOnce(&dyn Catalog) -> Result<(), crate::catalog::CatalogError> + Send + 'static,
    ) {
        let Some(catalog) = self.catalog() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn_blocking(move || {
            if let Err(e) = f(catalog.as_ref()) {
                tracing::warn!(error = %e, "{what}: the catalog will be told at the next renewal");
            }
        });
    }

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
                        replica: self.replica.clone(),
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
        let mut g = self.lock();
        // Read under the lock, as `here` reads its time: see there.
        let since_realtime_ns = now_realtime_ns();
        g.entry(group.to_owned()).or_default().insert(
            host.to_owned(),
            Member {
                conn,
                tx,
                since_realtime_ns,
            },
        );
        drop(g);
        tracing::info!(group, host, "recorder registered");
        let member = GroupMember {
            group: group.to_owned(),
            host_id: host.to_owned(),
            since_realtime_ns,
            replica: self.replica.clone(),
        };
        self.tell_catalog("a group registration", move |c| c.join_group(&[member]));
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
            let ours = m.get(&self.host).filter(|m| m.conn == self.conn);
            if let Some(since_realtime_ns) = ours.map(|m| m.since_realtime_ns) {
                m.remove(&self.host);
                tracing::info!(group = %self.group, host = %self.host, "recorder left");
                let member = GroupMember {
                    group: self.group.clone(),
                    host_id: self.host.clone(),
                    since_realtime_ns,
                    replica: self.registry.replica.clone(),
                };
                self.registry
                    .tell_catalog("a group departure", move |c| c.leave_group(&member));
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
            if may_join(&st, h, &req.group) && registered(&st, &req.group, h).await? =>
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
    // The other replicas sharing the catalog hear of it next, then it is recorded with every
    // replica's recorders as its recipients.
    let shared = Arc::new(t.clone());
    let here = st.groups.fan_out(shared);
    st.metrics
        .group_triggers_sent
        .fetch_add(1, Ordering::Relaxed);
    let replica = st.groups.replica().to_owned();
    let t = st
        .with_catalog(move |c| {
            c.announce_trigger(&t)?;
            let mut recipients = here;
            if c.shares_groups() {
                recipients.extend(
                    c.group_members(Some(&t.group))?
                        .into_iter()
                        .filter(|m| m.replica != replica)
                        .map(|m| m.host_id),
                );
                recipients.sort();
                recipients.dedup();
            }
            t.recipients = recipients;
            c.insert_trigger(&t)?;
            Ok(t)
        })
        .await?;
    tracing::info!(trigger = %t.trigger_id, group = %t.group, recipients = ?t.recipients, "group trigger");
    Ok(Json(TriggerResponse {
        trigger_id: t.trigger_id,
        group: t.group,
        recipients: t.recipients,
        sent_realtime_ns: t.sent_realtime_ns,
    }))
}

/// Whether `host` is registered in `group` here or, with a shared catalog, on another replica.
async fn registered(st: &AppState, group: &str, host: &str) -> Result<bool, AppError> {
    if st.groups.is_member(group, host) {
        return Ok(true);
    }
    if !st.catalog.shares_groups() {
        return Ok(false);
    }
    let (group, host) = (group.to_owned(), host.to_owned());
    st.with_catalog(move |c| {
        Ok(c.group_members(Some(&group))?
            .iter()
            .any(|m| m.host_id == host))
    })
    .await
}

#[derive(Serialize)]
struct GroupList {
    /// The replica answering.
    replica: String,
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
    let mut groups: Vec<GroupInfo> = st
        .groups
        .list()
        .into_iter()
        .map(|(group, hosts)| GroupInfo { group, hosts })
        .collect();
    let replica = st.groups.replica().to_owned();
    if st.catalog.shares_groups() {
        // The other replicas' registrations; this one's own are its registry's.
        let others = st.with_catalog(|c| c.group_members(None)).await?;
        for m in others.into_iter().filter(|m| m.replica != replica) {
            let info = MemberInfo {
                host_id: m.host_id,
                since_realtime_ns: m.since_realtime_ns,
                replica: m.replica,
            };
            match groups.iter_mut().find(|g| g.group == m.group) {
                Some(g) => g.hosts.push(info),
                None => groups.push(GroupInfo {
                    group: m.group,
                    hosts: vec![info],
                }),
            }
        }
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        for g in &mut groups {
            g.hosts.sort_by(|a, b| a.host_id.cmp(&b.host_id));
        }
    }
    Ok(Json(
        serde_json::to_value(GroupList { replica, groups }).expect("serialisable"),
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
