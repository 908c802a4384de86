//! Merging remote changes: each complete version is applied in its own savepoint inside one
//! transaction; per row, the changes are folded through [`crate::crdt::merge::decide`] in
//! memory and the outcome written once (base row, clock, log).

use super::apply_fresh::FreshBatch;
use super::catalog::TableInfo;
use super::feed::{Change, SENTINEL};
use super::rows::{load_clock, load_row, put_clock, record_version, TouchedRows};
use super::ChangedRows;
use super::Store;
use crate::crdt::clock::{CellClock, RowClock, Stamp};
use crate::crdt::merge::{decide, Incoming, IncomingCell, Outcome};
use crate::crdt::{pack, ActorId};
use anyhow::{anyhow, bail, Context, Result};
use rusqlite::params_from_iter;
use rusqlite::types::Value;
use std::collections::BTreeMap;

/// One complete version of a remote actor.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeSet {
    pub actor: ActorId,
    pub version: u64,
    pub last_seq: u64,
    pub ts: u64,
    pub changes: Vec<Change>,
}

#[derive(Debug, Default, Clone)]
pub struct ApplyReport {
    /// Versions newly recorded (applied or found fully superseded).
    pub applied: Vec<(ActorId, u64)>,
    /// Versions already known (duplicates) or our own.
    pub skipped: usize,
    /// Versions that failed (e.g. unknown table): not recorded, so sync asks again later.
    pub failed: Vec<(ActorId, u64, String)>,
    /// Rows whose state changed: (table, packed key).
    pub impacted: ChangedRows,
}

impl Store {
    /// Applies complete remote versions in one transaction.
    pub fn apply_changesets(&mut self, sets: &[ChangeSet]) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        super::run_cached(&self.conn, "BEGIN IMMEDIATE")?;
        let images = self.begin_images();
        let result = self.apply_sets_in_tx(sets, &mut report);
        let committed = result.and_then(|_| {
            let c = super::Committed {
                versions: report.applied.clone(),
                local: false,
                before: self.take_images(&images, &report.impacted),
                imaged: images.clone(),
                changed: report.impacted.clone(),
                seq: 0,
            };
            Ok(self.commit_and_notify(Some(c))?)
        });
        match committed {
            Ok(()) => Ok(report),
            Err(e) => {
                self.drop_images();
                if let Err(e2) = self.conn.execute_batch("ROLLBACK") {
                    tracing::debug!(error = %e2, "rollback after a failed apply (nothing open)");
                }
                Err(e)
            }
        }
    }

    /// Applies complete versions inside the caller's open transaction, each in a savepoint.
    pub(crate) fn apply_sets_in_tx(
        &mut self,
        sets: &[ChangeSet],
        report: &mut ApplyReport,
    ) -> Result<()> {
        for set in sets {
            if set.actor == self.actor || self.version_known(&set.actor, set.version)? {
                report.skipped += 1;
                continue;
            }
            self.conn.execute_batch("SAVEPOINT vd_apply")?;
            let mut impacted = Vec::new();
            match self.apply_one(set, &mut impacted) {
                Ok(()) => {
                    self.conn.execute_batch("RELEASE vd_apply")?;
                    report.applied.push((set.actor, set.version));
                    report.impacted.extend(impacted);
                }
                Err(e) => {
                    self.conn
                        .execute_batch("ROLLBACK TO vd_apply; RELEASE vd_apply")?;
                    report
                        .failed
                        .push((set.actor, set.version, format!("{e:#}")));
                }
            }
        }
        Ok(())
    }

    /// Whether a version of `actor` is already recorded.
    pub fn version_known(&self, actor: &ActorId, version: u64) -> Result<bool> {
        let Some(site) = self.shared.sites.read().expect("sites lock").ordinal(actor) else {
            return Ok(false);
        };
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM __vd_versions WHERE site = ?1 AND db_version = ?2")?
            .exists(rusqlite::params![site, version])?)
    }

    fn apply_one(&mut self, set: &ChangeSet, impacted: &mut ChangedRows) -> Result<()> {
        let catalog = self.shared.catalog();
        self.hlc.observe(set.ts);
        let site = self.site_ordinal(&set.actor)?;
        let mut touched = TouchedRows::default();
        let mut fresh = FreshBatch::new();
        let changes = &set.changes;
        let mut start = 0;
        while start < changes.len() {
            let first = &changes[start];
            let end = start
                + changes[start..]
                    .iter()
                    .take_while(|c| c.table == first.table && c.pk == first.pk)
                    .count();
            let t = catalog
                .get(&first.table)
                .ok_or_else(|| anyhow!("table {} is not in this node's schema", first.table))?;
            let taken = self.try_fresh(
                &mut fresh,
                t,
                changes,
                (start, end),
                site,
                (&set.actor, set.version),
                (&mut touched, impacted),
            )?;
            if !taken {
                // Rows of the batch may be this row in an earlier piece: write them first.
                self.flush_fresh(&mut fresh, changes, &mut touched, impacted)?;
                if self.apply_row(t, &changes[start..end])? {
                    touched.push(t.id, &first.pk);
                    impacted.push((t.shared_name.clone(), first.pk.to_vec()));
                }
            }
            start = end;
        }
        self.flush_fresh(&mut fresh, changes, &mut touched, impacted)?;
        record_version(&self.conn, site, set.version, set.last_seq, set.ts, touched)?;
        Ok(())
    }

    /// Folds the changes of one row; returns whether the row's state changed.
    pub(super) fn apply_row(&mut self, t: &TableInfo, changes: &[Change]) -> Result<bool> {
        let pk_blob = &changes[0].pk;
        let pk = pack::unpack(pk_blob).context("bad primary key in change")?;
        if pk.len() != t.pk_cols.len() {
            bail!(
                "change for {} has a {}-column key, expected {}",
                t.name,
                pk.len(),
                t.pk_cols.len()
            );
        }
        let old = load_clock(&self.conn, t, &pk)?;
        let mut clock = old.clone().unwrap_or_default();
        let mut base: Option<Option<Vec<Value>>> = None;
        let mut pending: BTreeMap<u32, Value> = BTreeMap::new();
        let mut reset = false;
        for ch in changes {
            let col = if &*ch.cid == SENTINEL {
                None
            } else {
                let c = t.column_index(&ch.cid).ok_or_else(|| {
                    anyhow!("column {}.{} is not in this node's schema", t.name, ch.cid)
                })?;
                if t.columns[c].pk > 0 {
                    bail!("change writes key column {}.{}", t.name, ch.cid);
                }
                Some(c as u32)
            };
            let local_actor = |s: u32| {
                self.shared
                    .sites
                    .read()
                    .expect("sites lock")
                    .actor(s)
                    .unwrap_or_default()
            };
            let local_cell = col
                .and_then(|c| clock.cell(c))
                .map(|cc| (cc.col_version, local_actor(cc.stamp.site)));
            let tie = matches!(local_cell, Some((cv, _)) if cv == ch.col_version);
            let local_value = match col {
                Some(c) if tie => match pending.get(&c) {
                    Some(v) => v.clone(),
                    None => {
                        if base.is_none() {
                            base = Some(load_row(&self.conn, t, &pk)?);
                        }
                        base.as_ref()
                            .and_then(|r| r.as_ref())
                            .and_then(|r| r.get(c as usize).cloned())
                            .unwrap_or(Value::Null)
                    }
                },
                _ => Value::Null,
            };
            let inc = Incoming {
                cl: ch.cl,
                actor: ch.site_id,
                cell: col.map(|c| IncomingCell {
                    col: c,
                    col_version: ch.col_version,
                    value: &ch.val,
                }),
            };
            let outcome = decide(clock.cl, local_cell, || local_value, &inc);
            if outcome == Outcome::Ignore {
                continue;
            }
            let stamp = Stamp {
                site: self.site_ordinal(&ch.site_id)?,
                db_version: ch.db_version,
                seq: ch.seq,
            };
            match outcome {
                Outcome::Ignore => {}
                Outcome::Delete { cl } | Outcome::Resurrect { cl } => {
                    clock = RowClock {
                        cl,
                        row_stamp: Some(stamp),
                        cells: vec![],
                    };
                    pending.clear();
                    reset = true;
                }
                Outcome::SetCell { new_life } => {
                    if let Some(cl) = new_life {
                        clock = RowClock {
                            cl,
                            row_stamp: None,
                            cells: vec![],
                        };
                        pending.clear();
                        reset = true;
                    }
                    let c = col.expect("SetCell has a column");
                    clock.set_cell(CellClock {
                        col: c,
                        col_version: ch.col_version,
                        stamp,
                    });
                    pending.insert(c, ch.val.clone());
                }
            }
        }
        let old_clock = old.unwrap_or_default();
        if clock == old_clock {
            return Ok(false);
        }
        let cols: Vec<usize> = pending.keys().map(|c| *c as usize).collect();
        let params = || {
            pk.iter()
                .cloned()
                .chain(pending.values().cloned())
                .collect::<Vec<Value>>()
        };
        if clock.cl % 2 == 0 {
            self.conn
                .prepare_cached(&t.sql.row_delete)?
                .execute(params_from_iter(&pk))?;
        } else if reset {
            self.conn
                .prepare_cached(&t.replace_sql(&cols))?
                .execute(params_from_iter(params()))?;
        } else if !cols.is_empty() {
            self.conn
                .prepare_cached(&t.upsert_sql(&cols))?
                .execute(params_from_iter(params()))?;
        }
        put_clock(&self.conn, t, &pk, &clock)?;
        Ok(true)
    }
}
