//! Reading and writing one row's clock and its entries in the version log; shared by the local
//! write path and remote merges.

use super::catalog::TableInfo;
use crate::crdt::clock::{get_varint, put_varint, RowClock};
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

/// Loads the current values of a row (all columns, table order).
pub fn load_row(conn: &Connection, t: &TableInfo, pk: &[Value]) -> Result<Option<Vec<Value>>> {
    let mut stmt = conn.prepare_cached(&t.sql.row_get)?;
    let n = t.columns.len();
    Ok(stmt
        .query_row(params_from_iter(pk), |r| {
            (0..n)
                .map(|i| crate::store::exec::value_at(r, i))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .optional()?)
}

/// The rows a version touched, packed as (varint table id, varint key length, key bytes)*.
/// Stored with the version; the feed re-checks each row's clock, so entries whose changes were
/// overwritten later are simply skipped (no per-row log maintenance on the write path).
#[derive(Debug, Default)]
pub struct TouchedRows(Vec<u8>);

impl TouchedRows {
    pub fn push(&mut self, table: u32, pk: &[u8]) {
        put_varint(&mut self.0, table as u64);
        put_varint(&mut self.0, pk.len() as u64);
        self.0.extend_from_slice(pk);
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Decodes [`TouchedRows`]; `None` if corrupt.
pub fn decode_touched(mut b: &[u8]) -> Option<Vec<(u32, &[u8])>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let table = u32::try_from(get_varint(&mut b)?).ok()?;
        let len = usize::try_from(get_varint(&mut b)?).ok()?;
        if len > b.len() {
            return None;
        }
        let (pk, rest) = b.split_at(len);
        out.push((table, pk));
        b = rest;
    }
    Some(out)
}

pub fn record_version(
    conn: &Connection,
    site: u32,
    version: u64,
    last_seq: u64,
    ts: u64,
    rows: &TouchedRows,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO __vd_versions (site, db_version, last_seq, ts, rows) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(rusqlite::params![site, version, last_seq, ts as i64, rows.as_bytes()])?;
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

/// Rows per multi-row clock insert.
pub const CLOCK_BATCH: usize = 1 << super::catalog::CLOCK_BATCH_LOG2;

/// Inserts the clocks of `rows` (key values, encoded clock) that have none, in as few
/// statements as possible (batches of a power of two rows, so each table needs only a handful
/// of prepared statements); returns, per row, whether it was inserted (false: a clock existed).
pub fn insert_new_clocks(
    conn: &Connection,
    t: &TableInfo,
    rows: &[(&[Value], &[u8])],
) -> Result<Vec<bool>> {
    let mut out = Vec::with_capacity(rows.len());
    for (k, batch) in power_of_two_batches(rows, CLOCK_BATCH) {
        insert_clock_batch(conn, t, k, batch, &mut out)?;
    }
    Ok(out)
}

/// Splits `items` into runs of 2^k items (largest first, at most `max`), so multi-row
/// statements come in a handful of shapes that the statement cache keeps.
pub fn power_of_two_batches<T>(items: &[T], max: usize) -> impl Iterator<Item = (usize, &[T])> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let k = (usize::BITS - 1 - rest.len().min(max).leading_zeros()) as usize;
        let (batch, tail) = rest.split_at(1 << k);
        rest = tail;
        Some((k, batch))
    })
}

fn insert_clock_batch(
    conn: &Connection,
    t: &TableInfo,
    k: usize,
    rows: &[(&[Value], &[u8])],
    out: &mut Vec<bool>,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(&t.sql.clock_insert_many[k])?;
    let mut i = 1;
    for (pk, clock) in rows {
        for v in *pk {
            stmt.raw_bind_parameter(i, v)?;
            i += 1;
        }
        stmt.raw_bind_parameter(i, clock)?;
        i += 1;
    }
    let inserted = stmt.raw_execute()?;
    if inserted == rows.len() {
        out.extend(std::iter::repeat_n(true, rows.len()));
        return Ok(());
    }
    // Some keys already had a clock (re-inserts after deletes): tell them apart by content.
    for (pk, clock) in rows {
        let mut get = conn.prepare_cached(&t.sql.clock_get)?;
        let stored: Option<Vec<u8>> = get
            .query_row(params_from_iter(*pk), |r| r.get(0))
            .optional()?;
        out.push(stored.as_deref() == Some(*clock));
    }
    Ok(())
}
