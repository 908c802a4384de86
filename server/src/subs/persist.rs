//! Subscriptions on disk: one node-local SQLite file (`<db.subscriptions_path>/subscriptions.db`)
//! holding every subscription's query, materialized rows and recent change log. Each matcher
//! round is written in one transaction before its events are published, so a client never
//! sees a change id that a crash could lose.

use crate::crdt::pack;
use anyhow::{Context, Result};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use verdigris_subscriptions::matview::StoredRow;
use verdigris_subscriptions::{ChangeKind, RowChange};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS subs (
    id TEXT PRIMARY KEY, sql TEXT NOT NULL, last_change_id INTEGER NOT NULL, next_row_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sub_rows (
    sub TEXT NOT NULL, row_id INTEGER NOT NULL, identity BLOB NOT NULL, cells BLOB NOT NULL,
    PRIMARY KEY (sub, row_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sub_changes (
    sub TEXT NOT NULL, change_id INTEGER NOT NULL, kind TEXT NOT NULL, row_id INTEGER NOT NULL, cells BLOB NOT NULL,
    PRIMARY KEY (sub, change_id)) WITHOUT ROWID;
";

/// A subscription as stored.
#[derive(Debug, Clone)]
pub struct StoredSub {
    pub id: String,
    pub sql: String,
    pub last_change_id: u64,
    pub next_row_id: u64,
}

pub struct Persist {
    conn: Connection,
    /// Checkpoints `subscriptions.db`'s WAL on its own thread: a round's write never copies
    /// pages back and syncs them itself (with automatic checkpoints, about one round in a
    /// hundred did, and its events waited for two fsyncs).
    _checkpointer: crate::store::checkpoint::Checkpointer,
}

fn cells_blob(cells: &[Value]) -> Vec<u8> {
    pack::pack_owned(cells)
}

fn cells_of(blob: &[u8]) -> Result<Vec<Value>> {
    pack::unpack(blob).map_err(|e| anyhow::anyhow!("corrupt stored row: {e}"))
}

/// Logged changes with their change ids, oldest first.
pub type Changes = Vec<(u64, RowChange)>;

/// One subscription's writes of a round.
pub struct RoundWrite<'a> {
    pub sub: &'a str,
    pub first_change_id: u64,
    pub changes: &'a [RowChange],
    pub next_row_id: u64,
    pub retention: u64,
}

impl Persist {
    pub fn open(dir: &Path) -> Result<Persist> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let conn = Connection::open(dir.join("subscriptions.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.execute_batch(SCHEMA)?;
        let path = dir.join("subscriptions.db");
        Ok(Persist {
            conn,
            _checkpointer: crate::store::checkpoint::spawn(&path),
        })
    }

    /// One stored subscription with its rows (`None` if it is not stored).
    pub fn load_one(&self, id: &str) -> Result<Option<(StoredSub, Vec<StoredRow>)>> {
        let sub: Option<StoredSub> = self
            .conn
            .prepare_cached("SELECT id, sql, last_change_id, next_row_id FROM subs WHERE id = ?1")?
            .query_row([id], |r| {
                Ok(StoredSub {
                    id: r.get(0)?,
                    sql: r.get(1)?,
                    last_change_id: r.get(2)?,
                    next_row_id: r.get(3)?,
                })
            })
            .optional()?;
        match sub {
            Some(s) => {
                let rows = self.rows(&s.id)?;
                Ok(Some((s, rows)))
            }
            None => Ok(None),
        }
    }

    fn rows(&self, id: &str) -> Result<Vec<StoredRow>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT row_id, identity, cells FROM sub_rows WHERE sub = ?1")?;
        let raw: Vec<(u64, Vec<u8>, Vec<u8>)> = stmt
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        raw.into_iter()
            .map(|(row_id, identity, cells)| {
                Ok(StoredRow {
                    row_id,
                    identity,
                    cells: cells_of(&cells)?,
                })
            })
            .collect()
    }

    pub fn load(&self) -> Result<Vec<(StoredSub, Vec<StoredRow>)>> {
        let mut out = Vec::new();
        let subs: Vec<StoredSub> = self
            .conn
            .prepare("SELECT id, sql, last_change_id, next_row_id FROM subs ORDER BY created_at")?
            .query_map([], |r| {
                Ok(StoredSub {
                    id: r.get(0)?,
                    sql: r.get(1)?,
                    last_change_id: r.get(2)?,
                    next_row_id: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        for s in subs {
            let rows = self.rows(&s.id)?;
            out.push((s, rows));
        }
        Ok(out)
    }

    /// Stores a new subscription with its initial rows.
    pub fn create(
        &mut self,
        id: &str,
        sql: &str,
        rows: &[StoredRow],
        next_row_id: u64,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        tx.execute("INSERT INTO subs (id, sql, last_change_id, next_row_id, created_at) VALUES (?1, ?2, 0, ?3, ?4)", params![id, sql, next_row_id, now])?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO sub_rows (sub, row_id, identity, cells) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for r in rows {
                stmt.execute(params![id, r.row_id, r.identity, cells_blob(&r.cells)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Writes one matcher round for several subscriptions atomically.
    pub fn write_round(&mut self, writes: &[RoundWrite<'_>]) -> Result<()> {
        let tx = self.conn.transaction()?;
        for w in writes {
            let mut id = w.first_change_id;
            for ch in w.changes {
                let blob = cells_blob(&ch.cells);
                tx.prepare_cached("INSERT INTO sub_changes (sub, change_id, kind, row_id, cells) VALUES (?1, ?2, ?3, ?4, ?5)")?
                    .execute(params![w.sub, id, ch.kind.as_str(), ch.row_id, blob])?;
                match ch.kind {
                    ChangeKind::Delete => {
                        tx.prepare_cached("DELETE FROM sub_rows WHERE sub = ?1 AND row_id = ?2")?
                            .execute(params![w.sub, ch.row_id])?;
                    }
                    ChangeKind::Insert | ChangeKind::Update => {
                        let identity = &ch.identity;
                        tx.prepare_cached("INSERT OR REPLACE INTO sub_rows (sub, row_id, identity, cells) VALUES (?1, ?2, ?3, ?4)")?
                            .execute(params![w.sub, ch.row_id, identity, blob])?;
                    }
                }
                id += 1;
            }
            let last = id - 1;
            tx.prepare_cached(
                "UPDATE subs SET last_change_id = ?2, next_row_id = ?3 WHERE id = ?1",
            )?
            .execute(params![w.sub, last, w.next_row_id])?;
            if last > w.retention {
                tx.prepare_cached("DELETE FROM sub_changes WHERE sub = ?1 AND change_id <= ?2")?
                    .execute(params![w.sub, last - w.retention])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Changes after `from`, oldest first, and the smallest retained id (None if the log is empty).
    pub fn changes_after(&self, id: &str, from: u64) -> Result<(Option<u64>, Changes)> {
        let min: Option<u64> = self
            .conn
            .prepare_cached("SELECT min(change_id) FROM sub_changes WHERE sub = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?
            .flatten();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT change_id, kind, row_id, cells FROM sub_changes WHERE sub = ?1 AND change_id > ?2 ORDER BY change_id")?;
        let raw: Vec<(u64, String, u64, Vec<u8>)> = stmt
            .query_map(params![id, from], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::with_capacity(raw.len());
        for (cid, kind, row_id, cells) in raw {
            let kind = ChangeKind::parse(&kind).context("corrupt change kind")?;
            out.push((
                cid,
                RowChange {
                    kind,
                    row_id,
                    cells: cells_of(&cells)?,
                    identity: Vec::new(),
                },
            ));
        }
        Ok((min, out))
    }

    pub fn delete(&mut self, id: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        for t in ["subs", "sub_rows", "sub_changes"] {
            let col = if t == "subs" { "id" } else { "sub" };
            tx.execute(&format!("DELETE FROM {t} WHERE {col} = ?1"), [id])?;
        }
        tx.commit()?;
        Ok(())
    }
}
