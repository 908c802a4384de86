//! Reading and writing one row's clock and its entries in the version log; shared by the local
//! write path and remote merges.

use super::catalog::TableInfo;
use crate::crdt::clock::RowClock;
use anyhow::{anyhow, Result};
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OptionalExtension};

pub fn load_clock(conn: &Connection, t: &TableInfo, pk: &[Value]) -> Result<Option<RowClock>> {
    let mut stmt = conn.prepare_cached(&t.sql.clock_get)?;
    let blob: Option<Vec<u8>> = stmt
        .query_row(params_from_iter(pk), |r| r.get(0))
        .optional()?;
    blob.map(|b| {
        RowClock::decode(&b).ok_or_else(|| anyhow!("corrupt clock for a row of {}", t.name))
    })
    .transpose()
}

pub fn put_clock(conn: &Connection, t: &TableInfo, pk: &[Value], clock: &RowClock) -> Result<()> {
    let mut stmt = conn.prepare_cached(&t.sql.clock_put)?;
    let blob = Value::Blob(clock.encode());
    stmt.execute(params_from_iter(pk.iter().chain(std::iter::once(&blob))))?;
    Ok(())
}

/// Inserts the clock of a row that has none; returns false if one already exists.
pub fn insert_new_clock(
    conn: &Connection,
    t: &TableInfo,
    pk: &[Value],
    clock: &RowClock,
) -> Result<bool> {
    let mut stmt = conn.prepare_cached(&t.sql.clock_insert_new)?;
    let blob = Value::Blob(clock.encode());
    Ok(stmt.execute(params_from_iter(pk.iter().chain(std::iter::once(&blob))))? == 1)
}

/// Loads the current values of a row (all columns, table order).
pub fn load_row(conn: &Connection, t: &TableInfo, pk: &[Value]) -> Result<Option<Vec<Value>>> {
    let mut stmt = conn.prepare_cached(&t.sql.row_get)?;
    let n = t.columns.len();
    Ok(stmt
        .query_row(params_from_iter(pk), |r| {
            (0..n)
                .map(|i| r.get::<_, Value>(i))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .optional()?)
}

/// Keeps `__vd_log` in step with a row's clock: versions that no longer own any change of the
/// row are removed, newly owning ones added. Both lists are sorted.
pub fn update_log(
    conn: &Connection,
    table: u32,
    pk: &[u8],
    old: &[(u32, u64)],
    new: &[(u32, u64)],
) -> Result<()> {
    for v in old.iter().filter(|v| new.binary_search(v).is_err()) {
        conn.prepare_cached(
            "DELETE FROM __vd_log WHERE site = ?1 AND db_version = ?2 AND tbl = ?3 AND pk = ?4",
        )?
        .execute(rusqlite::params![v.0, v.1, table, pk])?;
    }
    for v in new.iter().filter(|v| old.binary_search(v).is_err()) {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO __vd_log (site, db_version, tbl, pk) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(rusqlite::params![v.0, v.1, table, pk])?;
    }
    Ok(())
}

pub fn record_version(
    conn: &Connection,
    site: u32,
    version: u64,
    last_seq: u64,
    ts: u64,
) -> Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO __vd_versions (site, db_version, last_seq, ts) VALUES (?1, ?2, ?3, ?4)")?
        .execute(rusqlite::params![site, version, last_seq, ts as i64])?;
    Ok(())
}

pub fn next_odd(cl: i64) -> i64 {
    if cl % 2 == 0 {
        cl + 1
    } else {
        cl + 2
    }
}

pub fn next_even(cl: i64) -> i64 {
    if cl % 2 == 1 {
        cl + 1
    } else {
        cl + 2
    }
}
