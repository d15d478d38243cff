//! The embedded catalog: one SQLite file in WAL mode with `synchronous = FULL`, so a committed
//! insert survives a power cut and an acknowledged upload is never forgotten.
//!
//! Each entry is kept whole as JSON beside the columns that queries filter and sort on; the
//! indexes match the browse filters so a page out of 100k entries reads a few dozen rows.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    Catalog, CatalogError, Entry, GroupTrigger, Page, Query, Session, json, to_i64, to_json,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS snapshots (
    snapshot_id TEXT PRIMARY KEY,
    frozen_realtime_ns INTEGER NOT NULL,
    host_id TEXT NOT NULL,
    trigger_source TEXT NOT NULL,
    trigger_reason TEXT NOT NULL,
    trigger_id TEXT,
    group_name TEXT,
    bytes INTEGER NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshots_time ON snapshots (frozen_realtime_ns, snapshot_id);
CREATE INDEX IF NOT EXISTS snapshots_host ON snapshots (host_id, frozen_realtime_ns, snapshot_id);
CREATE INDEX IF NOT EXISTS snapshots_source ON snapshots (trigger_source, frozen_realtime_ns, snapshot_id);
CREATE INDEX IF NOT EXISTS snapshots_group ON snapshots (group_name, frozen_realtime_ns, snapshot_id);
CREATE INDEX IF NOT EXISTS snapshots_trigger ON snapshots (trigger_id);
CREATE TABLE IF NOT EXISTS tags (
    tag TEXT NOT NULL,
    snapshot_id TEXT NOT NULL,
    PRIMARY KEY (tag, snapshot_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    snapshot_id TEXT PRIMARY KEY,
    session TEXT NOT NULL,
    offset INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS group_triggers (
    trigger_id TEXT PRIMARY KEY,
    trigger TEXT NOT NULL
);
";

/// The SQLite catalog.
#[derive(Debug)]
pub struct SqliteCatalog {
    conn: Mutex<Connection>,
}

impl SqliteCatalog {
    /// Opens (creating if needed) the catalog at `path`.
    pub fn open(path: &Path) -> Result<SqliteCatalog, CatalogError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| CatalogError::Open {
                path: path.to_owned(),
                source,
            })?;
        }
        // Created 0600 before SQLite opens it, whatever the umask: SQLite keeps an existing
        // file's mode and gives its -wal and -shm files the same.
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(path)
                .map_err(|source| CatalogError::Open {
                    path: path.to_owned(),
                    source,
                })?;
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteCatalog {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Inserts many entries in one transaction (benchmarks and imports).
    pub fn insert_many(&self, entries: &[Entry]) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for e in entries {
            insert_in(&tx, e)?;
        }
        tx.commit()?;
        Ok(())
    }
}

fn insert_in(conn: &Connection, e: &Entry) -> Result<bool, CatalogError> {
    let n = conn.execute(
        "INSERT OR IGNORE INTO snapshots (snapshot_id, frozen_realtime_ns, host_id, \
         trigger_source, trigger_reason, trigger_id, group_name, bytes, entry) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            e.snapshot_id,
            to_i64(e.frozen_realtime_ns),
            e.host_id,
            e.trigger_source,
            e.trigger_reason,
            e.trigger_id,
            e.group,
            to_i64(e.bytes),
            to_json(e),
        ],
    )?;
    if n == 0 {
        return Ok(false);
    }
    for tag in &e.tags {
        conn.execute(
            "INSERT OR IGNORE INTO tags (tag, snapshot_id) VALUES (?1, ?2)",
            params![tag, e.snapshot_id],
        )?;
    }
    Ok(true)
}

fn parse_cursor(c: &str) -> Option<(i64, String)> {
    let (ts, id) = c.split_once(':')?;
    Some((ts.parse().ok()?, id.to_owned()))
}

impl Catalog for SqliteCatalog {
    fn insert(&self, entry: &Entry) -> Result<bool, CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let added = insert_in(&tx, entry)?;
        tx.commit()?;
        Ok(added)
    }

    fn get(&self, snapshot_id: &str) -> Result<Option<Entry>, CatalogError> {
        let text: Option<String> = self
            .conn()
            .query_row(
                "SELECT entry FROM snapshots WHERE snapshot_id = ?1",
                [snapshot_id],
                |r| r.get(0),
            )
            .optional()?;
        text.map(|t| json(&t)).transpose()
    }

    fn list(&self, q: &Query) -> Result<Page, CatalogError> {
        let limit = q.limit.unwrap_or(50).clamp(1, 1000);
        let mut sql = String::from("SELECT entry, frozen_realtime_ns, snapshot_id FROM snapshots");
        let mut conds: Vec<&str> = Vec::new();
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        use rusqlite::types::Value;
        if let Some(h) = &q.host {
            conds.push("host_id = ?");
            args.push(Value::Text(h.clone()));
        }
        if let Some(s) = &q.source {
            conds.push("trigger_source = ?");
            args.push(Value::Text(s.clone()));
        }
        if let Some(g) = &q.group {
            conds.push("group_name = ?");
            args.push(Value::Text(g.clone()));
        }
        if let Some(t) = &q.trigger_id {
            conds.push("trigger_id = ?");
            args.push(Value::Text(t.clone()));
        }
        if let Some(r) = &q.reason {
            conds.push("instr(trigger_reason, ?) > 0");
            args.push(Value::Text(r.clone()));
        }
        if let Some(t) = &q.tag {
            conds.push("snapshot_id IN (SELECT snapshot_id FROM tags WHERE tag = ?)");
            args.push(Value::Text(t.clone()));
        }
        if let Some(f) = q.from_ns {
            conds.push("frozen_realtime_ns >= ?");
            args.push(Value::Integer(to_i64(f)));
        }
        if let Some(t) = q.to_ns {
            conds.push("frozen_realtime_ns < ?");
            args.push(Value::Integer(to_i64(t)));
        }
        if let Some(c) = &q.cursor {
            let (ts, id) =
                parse_cursor(c).ok_or_else(|| CatalogError::Value("bad cursor".into()))?;
            conds.push("(frozen_realtime_ns < ? OR (frozen_realtime_ns = ? AND snapshot_id < ?))");
            args.push(Value::Integer(ts));
            args.push(Value::Integer(ts));
            args.push(Value::Text(id));
        }
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(" ORDER BY frozen_realtime_ns DESC, snapshot_id DESC LIMIT ?");
        args.push(Value::Integer(i64::from(limit) + 1));
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut items = Vec::new();
        let mut next_cursor = None;
        let mut last = None;
        for row in rows {
            let (text, ts, id) = row?;
            if items.len() == limit as usize {
                next_cursor = last.take();
                break;
            }
            items.push(json(&text)?);
            last = Some(format!("{ts}:{id}"));
        }
        Ok(Page { items, next_cursor })
    }

    fn remove(&self, snapshot_id: &str) -> Result<bool, CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "DELETE FROM snapshots WHERE snapshot_id = ?1",
            [snapshot_id],
        )?;
        tx.execute("DELETE FROM tags WHERE snapshot_id = ?1", [snapshot_id])?;
        tx.commit()?;
        Ok(n > 0)
    }

    fn totals(&self) -> Result<(u64, u64), CatalogError> {
        let (n, b): (i64, i64) = self.conn().query_row(
            "SELECT count(*), coalesce(sum(bytes), 0) FROM snapshots",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((n as u64, b as u64))
    }

    fn oldest(&self, n: u32, before_ns: Option<u64>) -> Result<Vec<Entry>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT entry FROM snapshots WHERE frozen_realtime_ns < ?1 \
             ORDER BY frozen_realtime_ns, snapshot_id LIMIT ?2",
        )?;
        let before = before_ns.map(to_i64).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![before, n], |r| r.get::<_, String>(0))?;
        rows.map(|r| json(&r?)).collect()
    }

    fn open_session(&self, s: &Session) -> Result<Session, CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let existing: Option<(String, i64)> = tx
            .query_row(
                "SELECT session, offset FROM sessions WHERE snapshot_id = ?1",
                [&s.snapshot_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let out = match existing {
            Some((text, offset)) => {
                let mut old: Session = json(&text)?;
                old.offset = offset as u64;
                old
            }
            None => {
                tx.execute(
                    "INSERT INTO sessions (snapshot_id, session, offset) VALUES (?1, ?2, ?3)",
                    params![s.snapshot_id, to_json(s), to_i64(s.offset)],
                )?;
                s.clone()
            }
        };
        tx.commit()?;
        Ok(out)
    }

    fn session(&self, snapshot_id: &str) -> Result<Option<Session>, CatalogError> {
        let row: Option<(String, i64)> = self
            .conn()
            .query_row(
                "SELECT session, offset FROM sessions WHERE snapshot_id = ?1",
                [snapshot_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(text, offset)| {
            let mut s: Session = json(&text)?;
            s.offset = offset as u64;
            Ok(s)
        })
        .transpose()
    }

    fn set_offset(&self, snapshot_id: &str, offset: u64) -> Result<(), CatalogError> {
        self.conn().execute(
            "UPDATE sessions SET offset = ?2 WHERE snapshot_id = ?1",
            params![snapshot_id, to_i64(offset)],
        )?;
        Ok(())
    }

    fn close_session(&self, snapshot_id: &str) -> Result<(), CatalogError> {
        self.conn()
            .execute("DELETE FROM sessions WHERE snapshot_id = ?1", [snapshot_id])?;
        Ok(())
    }

    fn sessions(&self) -> Result<Vec<Session>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT session, offset FROM sessions")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        rows.map(|r| {
            let (text, offset) = r?;
            let mut s: Session = json(&text)?;
            s.offset = offset as u64;
            Ok(s)
        })
        .collect()
    }

    fn insert_trigger(&self, t: &GroupTrigger) -> Result<(), CatalogError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO group_triggers (trigger_id, trigger) VALUES (?1, ?2)",
            params![t.trigger_id, to_json(t)],
        )?;
        Ok(())
    }

    fn trigger(&self, trigger_id: &str) -> Result<Option<GroupTrigger>, CatalogError> {
        let text: Option<String> = self
            .conn()
            .query_row(
                "SELECT trigger FROM group_triggers WHERE trigger_id = ?1",
                [trigger_id],
                |r| r.get(0),
            )
            .optional()?;
        text.map(|t| json(&t)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upload sessions survive reopening the file. Everything else a catalog does is checked
    /// on both implementations by the contract test (collector/tests/collector/catalog.rs).
    #[test]
    fn sessions_resume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let s = Session {
            snapshot_id: "ab".repeat(16),
            host_id: "h".into(),
            size: 10,
            sha256: "00".into(),
            offset: 0,
            created_realtime_ns: 1,
        };
        {
            let c = SqliteCatalog::open(&path).unwrap();
            c.open_session(&s).unwrap();
            c.set_offset(&s.snapshot_id, 7).unwrap();
        }
        let c = SqliteCatalog::open(&path).unwrap();
        let again = c.open_session(&s).unwrap();
        assert_eq!(again.offset, 7);
        assert_eq!(c.sessions().unwrap().len(), 1);
        c.close_session(&s.snapshot_id).unwrap();
        assert!(c.session(&s.snapshot_id).unwrap().is_none());
    }
}
