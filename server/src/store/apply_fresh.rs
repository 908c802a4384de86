//! The fast path of remote merges: rows this node has never seen.
//!
//! When a remote version inserts a row whose key has no clock here (the normal case when a
//! node catches up), the merge rules have nothing to compare: every incoming cell wins and
//! the row starts the incoming life. Such rows are collected and written in multi-row
//! statements — clocks first, with `ON CONFLICT DO NOTHING` to find out which keys really were
//! new, then the base rows. A row whose clock turns out to exist goes through the general
//! per-row merge ([`Store::apply_row`]), so the outcome is exactly what the general path
//! would produce.

use super::catalog::{quote, TableInfo};
use super::feed::{Change, SENTINEL};
use super::rows::{insert_new_clocks, power_of_two_batches, ClockBuf, TouchedRows, CLOCK_BATCH};
use super::ChangedRows;
use super::Store;
use crate::crdt::clock::{CellClock, RowClock, Stamp};
use crate::crdt::pack;
use anyhow::Result;
use hashbrown::HashSet;
use rusqlite::types::Value;

/// A candidate row: its changes are `changes[start..end]` of the version.
struct FreshRow {
    start: usize,
    end: usize,
    pk: Vec<Value>,
    clock: RowClock,
}

/// Fresh rows of one table waiting to be written, all setting the same columns in the same
/// order (so one statement shape fits them all).
pub(super) struct FreshBatch<'a> {
    table: Option<&'a TableInfo>,
    rows: Vec<FreshRow>,
    keys: HashSet<&'a [u8]>,
}

impl<'a> FreshBatch<'a> {
    pub fn new() -> FreshBatch<'a> {
        FreshBatch {
            table: None,
            rows: Vec::new(),
            keys: HashSet::new(),
        }
    }
}

/// The clock a never-seen row gets from `changes` (one row's changes of one version), or
/// `None` if the row needs the general merge: sentinels, deletes, mixed causal lengths,
/// repeated or unknown columns, key columns, or stamps from another origin than the version's.
fn fresh_clock(
    t: &TableInfo,
    changes: &[Change],
    site: u32,
    actor: &crate::crdt::ActorId,
    version: u64,
) -> Option<(Vec<Value>, RowClock)> {
    let cl = changes[0].cl;
    if cl % 2 == 0 {
        return None;
    }
    let mut clock = RowClock {
        cl,
        row_stamp: None,
        cells: Vec::with_capacity(changes.len()),
    };
    for ch in changes {
        if ch.cl != cl || &*ch.cid == SENTINEL || ch.site_id != *actor || ch.db_version != version {
            return None;
        }
        let col = t.column_index(&ch.cid)?;
        if t.columns[col].pk > 0 || clock.cell(col as u32).is_some() {
            return None;
        }
        clock.set_cell(CellClock {
            col: col as u32,
            col_version: ch.col_version,
            stamp: Stamp {
                site,
                db_version: ch.db_version,
                seq: ch.seq,
            },
        });
    }
    let pk = pack::unpack(&changes[0].pk).ok()?;
    (pk.len() == t.pk_cols.len()).then_some((pk, clock))
}

/// Whether two rows' changes set the same columns in the same order.
fn same_shape(a: &[Change], b: &[Change]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.cid == y.cid)
}

impl Store {
    /// Takes one row's changes (`changes[start..end]`) into the fresh batch if it qualifies;
    /// returns false if the caller must merge it through the general path. Flushes the batch
    /// first when the row does not fit it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn try_fresh<'a>(
        &mut self,
        batch: &mut FreshBatch<'a>,
        t: &'a TableInfo,
        changes: &'a [Change],
        (start, end): (usize, usize),
        site: u32,
        set: (&crate::crdt::ActorId, u64),
        out: (&mut TouchedRows, &mut ChangedRows),
    ) -> Result<bool> {
        let row = &changes[start..end];
        let Some((pk, clock)) = fresh_clock(t, row, site, set.0, set.1) else {
            return Ok(false);
        };
        let fits = match (batch.table, batch.rows.first()) {
            (Some(bt), Some(first)) => {
                bt.id == t.id
                    && same_shape(&changes[first.start..first.end], row)
                    && !batch.keys.contains(&row[0].pk[..])
                    && batch.rows.len() < CLOCK_BATCH
            }
            _ => true,
        };
        if !fits {
            self.flush_fresh(batch, changes, out.0, out.1)?;
        }
        batch.table = Some(t);
        batch.keys.insert(&row[0].pk[..]);
        batch.rows.push(FreshRow {
            start,
            end,
            pk,
            clock,
        });
        Ok(true)
    }

    /// Writes the batched rows: their clocks, then the base rows of those whose clock was
    /// new; the others go through the general merge.
    pub(super) fn flush_fresh(
        &mut self,
        batch: &mut FreshBatch<'_>,
        changes: &[Change],
        touched: &mut TouchedRows,
        impacted: &mut ChangedRows,
    ) -> Result<()> {
        let Some(t) = batch.table.take() else {
            return Ok(());
        };
        batch.keys.clear();
        let rows = std::mem::take(&mut batch.rows);
        if rows.is_empty() {
            return Ok(());
        }
        let mut encoded = ClockBuf::default();
        for r in &rows {
            encoded.push(&r.clock);
        }
        let clocks: Vec<(&[Value], &[u8])> = rows
            .iter()
            .zip(encoded.iter())
            .map(|(r, c)| (&r.pk[..], c))
            .collect();
        let inserted = insert_new_clocks(&self.conn, t, &clocks)?;
        drop(clocks);
        let (new, known): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .zip(inserted)
            .partition(|(_, inserted)| *inserted);
        let new: Vec<FreshRow> = new.into_iter().map(|(r, _)| r).collect();
        self.insert_base_rows(t, changes, &new)?;
        for r in &new {
            let pk = &changes[r.start].pk;
            touched.push(t.id, pk);
            impacted.push((t.shared_name.clone(), pk.to_vec()));
        }
        for (r, _) in known {
            if self.apply_row(t, &changes[r.start..r.end])? {
                let pk = &changes[r.start].pk;
                touched.push(t.id, pk);
                impacted.push((t.shared_name.clone(), pk.to_vec()));
            }
        }
        Ok(())
    }

    /// `INSERT OR REPLACE` of rows that all set the same columns, in power-of-two batches.
    fn insert_base_rows(&self, t: &TableInfo, changes: &[Change], rows: &[FreshRow]) -> Result<()> {
        let Some(first) = rows.first() else {
            return Ok(());
        };
        let mut names: Vec<String> = t
            .pk_cols
            .iter()
            .map(|i| quote(&t.columns[*i].name))
            .collect();
        names.extend(
            changes[first.start..first.end]
                .iter()
                .map(|c| quote(&t.columns[t.column_index(&c.cid).expect("checked")].name)),
        );
        let tuple = format!("({})", vec!["?"; names.len()].join(", "));
        for (_, now) in power_of_two_batches(rows, CLOCK_BATCH) {
            let sql = format!(
                "INSERT OR REPLACE INTO {} ({}) VALUES {}",
                quote(&t.name),
                names.join(", "),
                vec![tuple.as_str(); now.len()].join(", ")
            );
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let mut i = 1;
            for r in now {
                for v in &r.pk {
                    stmt.raw_bind_parameter(i, v)?;
                    i += 1;
                }
                for c in &changes[r.start..r.end] {
                    stmt.raw_bind_parameter(i, &c.val)?;
                    i += 1;
                }
            }
            stmt.raw_execute()?;
        }
        Ok(())
    }
}
