//! The changes feed: committed versions read back per origin actor and version range, in seq
//! order, with the current values. This is what gossip broadcasts and what sync serves.
//!
//! Changes are state-based: a cell overwritten by a later version is served by that later
//! version only. A version none of whose changes survive is "cleared" (served as empty).

use super::catalog::quote;
use super::catalog::TableInfo;
use super::rows::decode_touched;
use super::{Shared, Store};
use crate::crdt::clock::RowClock;
use crate::crdt::{pack, ActorId};
use anyhow::{Context, Result};
use rusqlite::types::Value;
use rusqlite::Connection;
use rusqlite::OptionalExtension;
use std::ops::RangeInclusive;
use std::sync::Arc;

/// One replicated change (a cell, or the row sentinel `cid = "-1"`). Table and column names
/// are shared (`Arc<str>`): a version carries them once per cell, and copying them per cell
/// was a good part of the cost of reading, sending and applying versions.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub table: Arc<str>,
    /// Packed primary key ([`crate::crdt::pack`]), shared by the cells of one row.
    pub pk: Arc<[u8]>,
    pub cid: Arc<str>,
    pub val: Value,
    pub col_version: i64,
    pub db_version: u64,
    pub seq: u64,
    pub site_id: ActorId,
    pub cl: i64,
}

/// Name of the row sentinel column.
pub const SENTINEL: &str = "-1";

/// All surviving changes of one version.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionChanges {
    pub actor: ActorId,
    pub version: u64,
    /// Seq of the version's last change when it was committed (changes may be missing since).
    pub last_seq: u64,
    pub ts: u64,
    /// Sorted by seq; empty when the version was cleared.
    pub changes: Vec<Change>,
}

/// Reads versions `range` of `actor`. Versions this node does not have are omitted.
pub fn read_versions(
    conn: &Connection,
    shared: &Shared,
    actor: ActorId,
    range: RangeInclusive<u64>,
) -> Result<Vec<VersionChanges>> {
    let mut out = Vec::new();
    for_each_version(conn, shared, actor, range, |v| {
        out.push(v);
        true
    })?;
    Ok(out)
}

/// Reads versions `range` of `actor` one at a time, in version order, handing each to
/// `visit` until it returns false; only one version is in memory at a time.
pub fn for_each_version(
    conn: &Connection,
    shared: &Shared,
    actor: ActorId,
    range: RangeInclusive<u64>,
    mut visit: impl FnMut(VersionChanges) -> bool,
) -> Result<()> {
    let Some(site) = shared.sites.read().expect("sites lock").ordinal(&actor) else {
        return Ok(());
    };
    let catalog = shared.catalog();
    let mut stmt = conn.prepare_cached(
        "SELECT db_version, last_seq, ts, rows FROM __vd_versions WHERE site = ?1 AND db_version BETWEEN ?2 AND ?3 ORDER BY db_version",
    )?;
    let mut rows = stmt.query(rusqlite::params![site, range.start(), range.end()])?;
    while let Some(r) = rows.next()? {
        let version: u64 = r.get(0)?;
        let touched = r.get_ref(3)?.as_blob()?;
        let mut v = VersionChanges {
            actor,
            version,
            last_seq: r.get(1)?,
            ts: r.get::<_, i64>(2)? as u64,
            changes: vec![],
        };
        let mut entries = decode_touched(touched).context("corrupt row list in __vd_versions")?;
        entries.sort_unstable();
        entries.dedup();
        // Entries are sorted by table: one prepared statement per table run.
        let mut lookup: Option<(u32, rusqlite::CachedStatement<'_>)> = None;
        for (tbl, pk_blob) in entries {
            let Some(t) = catalog.by_id(tbl) else {
                continue;
            };
            if lookup.as_ref().is_none_or(|(id, _)| *id != tbl) {
                lookup = Some((tbl, conn.prepare_cached(&t.sql.clock_and_row)?));
            }
            let stmt = &mut lookup.as_mut().expect("prepared above").1;
            version_changes(stmt, t, site, &pk_blob, &mut v)?;
        }
        v.changes.sort_by_key(|c| c.seq);
        if !visit(v) {
            break;
        }
    }
    Ok(())
}

/// Appends the surviving changes of `v` held by one row; `stmt` is the table's
/// `clock_and_row` query.
fn version_changes(
    stmt: &mut rusqlite::Statement<'_>,
    t: &TableInfo,
    site: u32,
    pk_blob: &[u8],
    v: &mut VersionChanges,
) -> Result<()> {
    let pk = pack::unpack(pk_blob).context("corrupt key in __vd_versions")?;
    let n = t.columns.len();
    let found = stmt
        .query_row(rusqlite::params_from_iter(&pk), |r| {
            let clock = r.get_ref(0)?.as_blob().map(RowClock::decode)?;
            let values = (0..n)
                .map(|i| crate::store::exec::value_at(r, i + 1))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((clock, values))
        })
        .optional()?;
    let Some((clock, values)) = found else {
        return Ok(());
    };
    let clock = clock.with_context(|| format!("corrupt clock for a row of {}", t.name))?;
    let mine = |s: &crate::crdt::clock::Stamp| s.site == site && s.db_version == v.version;
    if !clock.row_stamp.iter().any(mine) && !clock.cells.iter().any(|c| mine(&c.stamp)) {
        return Ok(());
    }
    let values = (clock.cl % 2 == 1).then_some(values);
    let shared_pk: Arc<[u8]> = pk_blob.into();
    let change = |cid: Arc<str>, val: Value, col_version: i64, seq: u64| Change {
        table: t.shared_name.clone(),
        pk: shared_pk.clone(),
        cid,
        val,
        col_version,
        db_version: v.version,
        seq,
        site_id: v.actor,
        cl: clock.cl,
    };
    if let Some(s) = clock.row_stamp.filter(mine) {
        v.changes
            .push(change(SENTINEL.into(), Value::Null, clock.cl, s.seq));
    }
    for cell in clock.cells.iter().filter(|c| mine(&c.stamp)) {
        let col = cell.col as usize;
        let Some(name) = t.column_names.get(col) else {
            continue;
        };
        let val = values
            .as_ref()
            .and_then(|r| r.get(col).cloned())
            .unwrap_or(Value::Null);
        v.changes
            .push(change(name.clone(), val, cell.col_version, cell.stamp.seq));
    }
    Ok(())
}

impl Store {
    /// Reads versions of `actor` on the writer connection.
    pub fn changes(
        &self,
        actor: ActorId,
        range: RangeInclusive<u64>,
    ) -> Result<Vec<VersionChanges>> {
        read_versions(&self.conn, &self.shared, actor, range)
    }

    /// Every row of every replicated table, sorted, for convergence checks: (table, rows).
    pub fn dump_tables(&self) -> Result<Vec<(String, Vec<Vec<Value>>)>> {
        let catalog = self.shared.catalog();
        let mut out = Vec::new();
        for t in catalog.tables() {
            let order: Vec<String> = t
                .pk_cols
                .iter()
                .map(|i| quote(&t.columns[*i].name))
                .collect();
            let sql = format!(
                "SELECT * FROM {} ORDER BY {}",
                quote(&t.name),
                order.join(", ")
            );
            let mut stmt = self.conn.prepare(&sql)?;
            let n = stmt.column_count();
            let rows = stmt
                .query_map([], |r| {
                    (0..n)
                        .map(|i| crate::store::exec::value_at(r, i))
                        .collect::<rusqlite::Result<Vec<_>>>()
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            out.push((t.name.clone(), rows));
        }
        Ok(out)
    }
}
