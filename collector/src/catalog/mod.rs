//! The catalog: what the archive holds and how to find it, plus upload sessions and group
//! triggers. Behind the [`Catalog`] trait so that a shared database (PostgreSQL, for several
//! collector replicas) is a new implementation, not a rewrite; [`sqlite::SqliteCatalog`] is the
//! embedded default.
//!
//! The trait is synchronous: the server calls it from `spawn_blocking`, which keeps the
//! implementations plain and lets SQLite use one connection without an async wrapper.

pub mod postgres;
pub mod sqlite;

use serde::{Deserialize, Serialize};

/// Why the catalog failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The database answered with an error.
    #[error("catalog database: {0}")]
    Db(#[from] rusqlite::Error),
    /// PostgreSQL answered with an error.
    #[error("catalog database: {0}")]
    Pg(String),
    /// The database cannot be reached (down, restarting, refusing connections); calls
    /// succeed again once it is back.
    #[error("{0}")]
    Unavailable(String),
    /// A stored value could not be decoded.
    #[error("catalog value: {0}")]
    Value(String),
    /// The database file could not be created.
    #[error("catalog at {path}: {source}")]
    Open {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One archived snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Snapshot id (from the manifest).
    pub snapshot_id: String,
    /// Snapshot name.
    pub name: String,
    /// Host id of the recorder.
    pub host_id: String,
    /// Host name.
    pub hostname: String,
    /// Kernel release.
    pub kernel_release: String,
    /// `CLOCK_REALTIME` ns at the freeze.
    pub frozen_realtime_ns: u64,
    /// `CLOCK_MONOTONIC` ns at the freeze (event timebase).
    pub frozen_monotonic_ns: u64,
    /// Trigger source (`cli`, `hook`, `rule`, `group`...).
    pub trigger_source: String,
    /// Trigger reason.
    pub trigger_reason: String,
    /// Group trigger id, for snapshots taken on a group trigger.
    pub trigger_id: Option<String>,
    /// Group name, for snapshots taken on a group trigger.
    pub group: Option<String>,
    /// Tags from the trigger's `tags` field.
    pub tags: Vec<String>,
    /// CPUs of the host.
    pub ncpu: u32,
    /// Records in the file.
    pub records: u64,
    /// Records overwritten before the freeze.
    pub overwritten: u64,
    /// Records lost at the freeze.
    pub lost: u64,
    /// Oldest event, `CLOCK_MONOTONIC` ns (0 when empty).
    pub oldest_ns: u64,
    /// Newest event, `CLOCK_MONOTONIC` ns.
    pub newest_ns: u64,
    /// `CLOCK_REALTIME - CLOCK_MONOTONIC` on the host, ns: aligns its events with other hosts'.
    pub realtime_minus_monotonic_ns: i64,
    /// Uncertainty of that offset, ns.
    pub clock_uncertainty_ns: u64,
    /// For group snapshots: the host's realtime clock minus the collector's, estimated from
    /// when the trigger was sent and received (includes the fan-out delay), ns.
    pub host_clock_offset_ns: Option<i64>,
    /// File size.
    pub bytes: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// Key in the archive.
    pub archive_key: String,
    /// When the collector acknowledged it (`CLOCK_REALTIME` ns).
    pub received_realtime_ns: u64,
}

/// A filter over the catalog; every field given must match. Newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Query {
    /// Host id.
    pub host: Option<String>,
    /// Frozen at or after (`CLOCK_REALTIME` ns).
    pub from_ns: Option<u64>,
    /// Frozen before (`CLOCK_REALTIME` ns).
    pub to_ns: Option<u64>,
    /// Trigger source.
    pub source: Option<String>,
    /// Substring of the trigger reason.
    pub reason: Option<String>,
    /// Tag.
    pub tag: Option<String>,
    /// Group name.
    pub group: Option<String>,
    /// Group trigger id.
    pub trigger_id: Option<String>,
    /// Page size (default 50, at most 1000).
    pub limit: Option<u32>,
    /// Cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// Whether `cursor` has the shape of a `next_cursor` (`FROZEN_NS:SNAPSHOT_ID`).
pub fn valid_cursor(cursor: &str) -> bool {
    cursor.split_once(':').is_some_and(|(ts, id)| {
        !ts.is_empty()
            && ts.bytes().all(|b| b.is_ascii_digit())
            && ts.len() <= 19
            && id.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// Entries, newest first.
    pub items: Vec<Entry>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

/// A resumable upload in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Snapshot id: one session per snapshot, which makes uploads idempotent.
    pub snapshot_id: String,
    /// Host id of the token that opened it.
    pub host_id: String,
    /// Announced file size.
    pub size: u64,
    /// Announced SHA-256, hex.
    pub sha256: String,
    /// Bytes received and written to the staging file.
    pub offset: u64,
    /// When it was opened (`CLOCK_REALTIME` ns).
    pub created_realtime_ns: u64,
}

pub use schemas::wire::GroupTrigger;

/// A recorder registered in a group on one of the collectors sharing a catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    /// Group.
    pub group: String,
    /// Host id.
    pub host_id: String,
    /// When it registered (`CLOCK_REALTIME` ns); with `replica`, names the registration.
    pub since_realtime_ns: u64,
    /// The collector its event stream is connected to.
    pub replica: String,
}

/// How long a collector's group registrations count without its heartbeat: a collector that
/// died (kill -9, machine lost) stops listing its recorders after this.
pub const GROUP_LEASE_NS: u64 = 30_000_000_000;

/// Where [`Catalog::subscribe_triggers`] delivers other collectors' group triggers.
pub type TriggerSink = Box<dyn Fn(GroupTrigger) + Send + Sync>;

/// Storage of the catalog. Implementations must make `insert` durable before returning: an
/// upload is acknowledged right after it.
pub trait Catalog: Send + Sync + 'static {
    /// Adds an entry; `false` if the snapshot id is already catalogued (nothing changes).
    fn insert(&self, entry: &Entry) -> Result<bool, CatalogError>;
    /// One entry.
    fn get(&self, snapshot_id: &str) -> Result<Option<Entry>, CatalogError>;
    /// A page of entries matching `query`.
    fn list(&self, query: &Query) -> Result<Page, CatalogError>;
    /// Removes an entry; `false` if it was not there.
    fn remove(&self, snapshot_id: &str) -> Result<bool, CatalogError>;
    /// Entries and bytes catalogued.
    fn totals(&self) -> Result<(u64, u64), CatalogError>;
    /// Up to `n` oldest entries (by freeze time), oldest first, frozen before `before_ns` if
    /// given: what retention deletes first.
    fn oldest(&self, n: u32, before_ns: Option<u64>) -> Result<Vec<Entry>, CatalogError>;

    /// Creates a session, or returns the existing one for the same snapshot id.
    fn open_session(&self, session: &Session) -> Result<Session, CatalogError>;
    /// A session.
    fn session(&self, snapshot_id: &str) -> Result<Option<Session>, CatalogError>;
    /// Records that the staging file holds `offset` valid bytes.
    fn set_offset(&self, snapshot_id: &str, offset: u64) -> Result<(), CatalogError>;
    /// Removes a session.
    fn close_session(&self, snapshot_id: &str) -> Result<(), CatalogError>;
    /// Sessions open.
    fn sessions(&self) -> Result<Vec<Session>, CatalogError>;

    /// Records a group trigger, and announces it to the other collectors sharing the catalog
    /// if [`Catalog::announce_trigger`] could not.
    fn insert_trigger(&self, trigger: &GroupTrigger) -> Result<(), CatalogError>;
    /// A group trigger.
    fn trigger(&self, trigger_id: &str) -> Result<Option<GroupTrigger>, CatalogError>;

    /// Whether upload bytes are kept in the catalog ([`Catalog::stage_chunk`]), so that any
    /// collector sharing it can resume an upload another one started.
    fn shares_staging(&self) -> bool {
        false
    }

    /// Stores `data` as the upload's bytes from `at` on (dropping any staged past `at`) and
    /// moves the offset from `at` to `at + data.len()`, in one transaction; `false` (nothing
    /// changed) if the offset was no longer `at` (another collector took a chunk first).
    fn stage_chunk(&self, snapshot_id: &str, at: u64, data: &[u8]) -> Result<bool, CatalogError> {
        self.set_offset(snapshot_id, at + data.len() as u64)?;
        Ok(true)
    }

    /// Passes the upload's staged bytes below `to`, in order, to `sink`; returns how many
    /// there were (fewer than `to` if the catalog holds fewer).
    fn read_staged(
        &self,
        snapshot_id: &str,
        to: u64,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, CatalogError> {
        let _ = (snapshot_id, to, sink);
        Ok(0)
    }

    /// When any collector last moved the upload's offset (`CLOCK_REALTIME` ns), where the
    /// catalog records it; `None` otherwise (then the staging file's time tells).
    fn touched_ns(&self, snapshot_id: &str) -> Result<Option<u64>, CatalogError> {
        let _ = snapshot_id;
        Ok(None)
    }

    /// Calls `deliver` with each group trigger that another collector sharing this catalog
    /// records (PostgreSQL: LISTEN/NOTIFY), so that it reaches the recorders registered here.
    /// A catalog of one process has no other collector, and does nothing.
    fn subscribe_triggers(&self, deliver: TriggerSink) -> Result<(), CatalogError> {
        let _ = deliver;
        Ok(())
    }

    /// Whether group registrations are kept in the catalog ([`Catalog::join_group`]), so that
    /// every collector sharing it knows the recorders connected to the others. A catalog of
    /// one process keeps none: its collector's own registry is the whole truth.
    fn shares_groups(&self) -> bool {
        false
    }

    /// Records `member`'s registration (a newer registration of the same host in the same
    /// group replaces an older one, wherever that is) and keeps it alive: a collector calls
    /// it again for each of its registrations within [`GROUP_LEASE_NS`].
    fn join_group(&self, members: &[GroupMember]) -> Result<(), CatalogError> {
        let _ = members;
        Ok(())
    }

    /// `members` are all the registrations on collector `replica` as of `at` (its realtime
    /// clock, the clock of their `since_realtime_ns`): renews them as
    /// [`Catalog::join_group`] does and forgets the replica's others made before `at`
    /// (one made since is newer than the list, not gone). Each collector calls it well within
    /// [`GROUP_LEASE_NS`].
    fn renew_groups(
        &self,
        replica: &str,
        members: &[GroupMember],
        at: u64,
    ) -> Result<(), CatalogError> {
        let _ = (replica, members, at);
        Ok(())
    }

    /// Forgets `member`'s registration, unless a newer one replaced it.
    fn leave_group(&self, member: &GroupMember) -> Result<(), CatalogError> {
        let _ = member;
        Ok(())
    }

    /// Registrations whose collector renewed them within [`GROUP_LEASE_NS`], in `group` or
    /// in all groups, by group and host.
    fn group_members(&self, group: Option<&str>) -> Result<Vec<GroupMember>, CatalogError> {
        let _ = group;
        Ok(Vec::new())
    }

    /// Tells the other collectors sharing this catalog about `trigger` at once, before it is
    /// recorded ([`Catalog::insert_trigger`] announces what this could not). A catalog of one
    /// process does nothing.
    fn announce_trigger(&self, trigger: &GroupTrigger) -> Result<(), CatalogError> {
        let _ = trigger;
        Ok(())
    }

    /// Runs `f` unless another collector sharing this catalog is running work `key` now;
    /// `false` if it is (then `f` did not run). A catalog of one process runs `f` always.
    fn exclusive(&self, key: i64, f: &mut dyn FnMut()) -> Result<bool, CatalogError> {
        let _ = key;
        f();
        Ok(true)
    }
}

/// Opens the catalog the configuration names: PostgreSQL for a `catalog.url`, else the
/// SQLite file `catalog.sqlite` in `data_dir`.
pub fn open(config: &crate::config::Config) -> Result<std::sync::Arc<dyn Catalog>, CatalogError> {
    if config.catalog.url.is_empty() {
        let path = config.storage.data_dir.join("catalog.sqlite");
        return Ok(std::sync::Arc::new(sqlite::SqliteCatalog::open(&path)?));
    }
    let options = postgres::PoolOptions {
        max_connections: config.catalog.max_connections,
        connect_timeout: config.catalog.connect_timeout,
    };
    Ok(std::sync::Arc::new(postgres::PgCatalog::open(
        &config.catalog.url,
        options,
    )?))
}

/// A count or timestamp as the `INTEGER`/`BIGINT` both catalogs store (saturating).
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A value stored as JSON text, read back.
fn json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, CatalogError> {
    serde_json::from_str(text).map_err(|e| CatalogError::Value(e.to_string()))
}

/// A value stored as JSON text.
fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("catalog values serialise")
}

#[cfg(test)]
mod tests {
    #[test]
    fn cursors() {
        for (c, ok) in [
            ("1795594724000000000:f11e00", true),
            ("12:ab", true),
            ("nonsense", false),
            (":ab", false),
            ("12:zz", false),
            ("99999999999999999999:ab", false),
            ("-1:ab", false),
        ] {
            assert_eq!(super::valid_cursor(c), ok, "{c}");
        }
    }
}
