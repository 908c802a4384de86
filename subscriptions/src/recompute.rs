//! Maintenance by re-running the query and diffing the result as a multiset: correct for any
//! SELECT (aggregates, DISTINCT, LIMIT, subqueries, compound selects). A row's identity is its
//! content plus occurrence; a deleted and an inserted row in the same diff are paired into an
//! update of the deleted row's id, so single-row aggregates keep their row id.

use crate::matview::{read_rows, ChangeKind, Result, RowChange, StoredRow};
use crate::pack;
use rusqlite::types::{Value, ValueRef};
use rusqlite::Connection;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug)]
pub struct Recompute {
    stmt: crate::stmt::Statement,
    /// For `ORDER BY … LIMIT` over one table: skips re-runs no change can affect.
    guard: Option<crate::topk::Guard>,
    rows: BTreeMap<u64, Vec<Value>>,
    by_content: HashMap<Vec<u8>, Vec<u64>>,
    pub next_row_id: u64,
}

fn content_key(cells: &[Value]) -> Vec<u8> {
    pack::pack(cells.iter().map(ValueRef::from))
}

impl Recompute {
    pub fn new(stmt: crate::stmt::Statement) -> Recompute {
        Recompute {
            stmt,
            guard: None,
            rows: BTreeMap::new(),
            by_content: HashMap::new(),
            next_row_id: 1,
        }
    }

    /// Re-runs only when a change can reach the `ORDER BY … LIMIT` window of `plan`.
    pub fn with_guard(mut self, plan: std::sync::Arc<crate::topk::TopKPlan>) -> Recompute {
        self.guard = Some(crate::topk::Guard::new(plan));
        self
    }

    /// After `changes`: a re-run, unless the guard's window says the result.
    pub fn refresh(
        &mut self,
        conn: &Connection,
        changes: &crate::matview::Changes,
    ) -> Result<Vec<RowChange>> {
        if let Some(g) = &mut self.guard {
            match g.refresh(conn, changes)? {
                crate::topk::Outcome::Unchanged => return Ok(vec![]),
                crate::topk::Outcome::Slid(fresh) => return Ok(self.diff(fresh)),
                crate::topk::Outcome::Rerun => {}
            }
        }
        self.recompute(conn)
    }

    /// Records the guard's window on the snapshot the result was just read from.
    fn capture(&mut self, conn: &Connection) -> Result<()> {
        if let Some(g) = &mut self.guard {
            if let Err(e) = g.capture(conn) {
                g.forget();
                return Err(e);
            }
        }
        Ok(())
    }

    fn add(&mut self, cells: Vec<Value>) -> u64 {
        let id = self.next_row_id;
        self.next_row_id += 1;
        self.by_content
            .entry(content_key(&cells))
            .or_default()
            .push(id);
        self.rows.insert(id, cells);
        id
    }

    fn run(&self, conn: &Connection) -> Result<Vec<Vec<Value>>> {
        let mut stmt = conn.prepare_cached(&self.stmt.sql)?;
        crate::stmt::bind(&mut stmt, &self.stmt.params)
            .map_err(rusqlite::Error::InvalidParameterName)?;
        read_rows(&mut stmt, &[])
    }

    pub fn initial(&mut self, conn: &Connection) -> Result<Vec<(u64, Vec<Value>)>> {
        let rows = self.run(conn)?;
        self.capture(conn)?;
        Ok(rows
            .into_iter()
            .map(|cells| (self.add(cells.clone()), cells))
            .collect())
    }

    pub fn recompute(&mut self, conn: &Connection) -> Result<Vec<RowChange>> {
        let fresh = self.run(conn)?;
        self.capture(conn)?;
        Ok(self.diff(fresh))
    }

    /// Replaces the result with `fresh`: the changes, as a multiset diff.
    fn diff(&mut self, fresh: Vec<Vec<Value>>) -> Vec<RowChange> {
        let mut wanted: HashMap<Vec<u8>, Vec<Vec<Value>>> = HashMap::new();
        let mut order: Vec<Vec<u8>> = Vec::new();
        for cells in fresh {
            let k = content_key(&cells);
            let e = wanted.entry(k.clone()).or_default();
            if e.is_empty() {
                order.push(k);
            }
            e.push(cells);
        }
        // Rows whose content is no longer wanted as often.
        let mut deleted: Vec<u64> = Vec::new();
        for (k, ids) in &self.by_content {
            let keep = wanted.get(k).map_or(0, Vec::len);
            if ids.len() > keep {
                deleted.extend(&ids[keep..]);
            }
        }
        deleted.sort_unstable();
        let mut inserted: Vec<Vec<Value>> = Vec::new();
        for k in &order {
            let have = self.by_content.get(k).map_or(0, Vec::len);
            let rows = &wanted[k];
            if rows.len() > have {
                inserted.extend(rows[have..].iter().cloned());
            }
        }
        let mut changes = Vec::new();
        let pairs = deleted.len().min(inserted.len());
        let mut ins = inserted.into_iter();
        for (i, id) in deleted.iter().enumerate() {
            let old = self.rows.remove(id).expect("row");
            let ok = content_key(&old);
            if let Some(ids) = self.by_content.get_mut(&ok) {
                ids.retain(|x| x != id);
                if ids.is_empty() {
                    self.by_content.remove(&ok);
                }
            }
            if i < pairs {
                let cells = ins.next().expect("paired insert");
                let identity = content_key(&cells);
                self.by_content
                    .entry(identity.clone())
                    .or_default()
                    .push(*id);
                self.rows.insert(*id, cells.clone());
                changes.push(RowChange {
                    kind: ChangeKind::Update,
                    row_id: *id,
                    cells,
                    identity,
                });
            } else {
                changes.push(RowChange {
                    kind: ChangeKind::Delete,
                    row_id: *id,
                    cells: old,
                    identity: ok,
                });
            }
        }
        for cells in ins {
            let id = self.add(cells.clone());
            let identity = content_key(&cells);
            changes.push(RowChange {
                kind: ChangeKind::Insert,
                row_id: id,
                cells,
                identity,
            });
        }
        changes
    }

    pub fn rows(&self) -> impl Iterator<Item = (u64, &Vec<Value>)> {
        self.rows.iter().map(|(id, c)| (*id, c))
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn export(&self) -> Vec<StoredRow> {
        self.rows
            .iter()
            .map(|(id, c)| StoredRow {
                row_id: *id,
                identity: content_key(c),
                cells: c.clone(),
            })
            .collect()
    }

    pub fn import(&mut self, rows: Vec<StoredRow>, next_row_id: u64) {
        if let Some(g) = &mut self.guard {
            g.forget();
        }
        self.rows.clear();
        self.by_content.clear();
        for r in rows {
            self.by_content
                .entry(content_key(&r.cells))
                .or_default()
                .push(r.row_id);
            self.rows.insert(r.row_id, r.cells);
        }
        for ids in self.by_content.values_mut() {
            ids.sort_unstable();
        }
        self.next_row_id = next_row_id.max(self.rows.keys().next_back().map_or(1, |m| m + 1));
    }
}
