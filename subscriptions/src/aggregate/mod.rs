//! Incremental maintenance of aggregates and `DISTINCT` over one table, in O(groups) state.
//!
//! Each group (one per distinct tuple of group values; a single group without `GROUP BY`)
//! keeps the state of every aggregate ([`acc`]). A change set arrives as the changed rows'
//! primary keys with their *before-images* (the rows' values before the first change of the
//! set; `None` for a row that did not exist). On the current database state (the read
//! snapshot the set ends at), for every changed row:
//! - its new values are read from the table by primary key, and their contribution added;
//! - its before-image is written to a TEMP table with the same declared column types (so the
//!   same affinities) and read back through the same per-row SQL, and its contribution
//!   removed.
//!
//! So the filter, the group expressions and the aggregate arguments are evaluated by SQLite
//! itself, exactly as a fresh run would, for both images. A group whose `min`/`max` extreme
//! left is re-read alone (`… WHERE <filter> AND <group expressions> IS <its values>`).
//!
//! A result row's identity is its group (the packed group values), so a group whose
//! aggregates change keeps its row id (an update), a new group is an insert, an emptied group
//! a delete (with `GROUP BY`/`DISTINCT`; without, the single row always exists).
//!
//! Caveats, shared with a fresh run: SQLite sums reals with a compensated sum whose last bit
//! depends on the scan order; this state keeps the exact sum and rounds it once, which agrees
//! except for ill-conditioned sums. A group or extreme holding equal values of different
//! types (`1` and `1.0`) shows the one SQLite's scan meets first, which a re-read may pick
//! differently.

pub mod acc;
pub mod plan;

use crate::matview::{read_rows, ChangeKind, Result, RowChange, StoredRow};
use crate::pack;
use acc::{compare, Acc, AggKind, Input, Num};
use plan::{AggPlan, Output};
use rusqlite::types::{Value, ValueRef};
use rusqlite::Connection;
use std::collections::HashMap;
use std::sync::Arc;

/// Before-images of the changed rows of one table: packed primary key → the row's values
/// (all columns, in table order) before the change set; `None` if it did not exist.
pub type Images = HashMap<Vec<u8>, Option<Vec<Value>>>;

/// A group's row as published: (row id, cells), or `None` if it had none.
type Published = Option<(u64, Vec<Value>)>;

#[derive(Debug, Clone)]
struct Group {
    row_id: u64,
    /// The group's values as the result shows them.
    key: Vec<Value>,
    /// The group's values as its rows give them, with how many rows give each: more than one
    /// when equal values of different types (`1`, `1.0`) share the group.
    reps: Vec<(Vec<u8>, i64, Vec<Value>)>,
    accs: Vec<Acc>,
    /// The result row, as last published.
    cells: Vec<Value>,
    /// Whether the group has a result row (it has rows, and its `HAVING` holds).
    shown: bool,
}

#[derive(Debug)]
pub struct Aggregate {
    plan: Arc<AggPlan>,
    groups: HashMap<Vec<u8>, Group>,
    pub next_row_id: u64,
    /// Restored rows whose aggregate state is not known: the next refresh re-runs.
    rebuild: bool,
    /// Index of `count(*)` among the aggregates (always present).
    star: usize,
}

/// The map key of a group: its values packed, with integral reals as integers (SQLite's
/// `GROUP BY` and `DISTINCT` treat `1` and `1.0` as equal).
fn group_key(vals: &[Value]) -> Vec<u8> {
    let norm: Vec<ValueRef<'_>> = vals
        .iter()
        .map(|v| match v {
            Value::Real(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => ValueRef::Integer(*f as i64),
            v => ValueRef::from(v),
        })
        .collect();
    pack::pack(norm.into_iter())
}

fn overflow() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
        Some("integer overflow".into()),
    )
}

impl Aggregate {
    pub fn new(plan: Arc<AggPlan>) -> Aggregate {
        let star = plan
            .aggs
            .iter()
            .position(|a| a.kind == AggKind::CountStar)
            .expect("plans keep count(*)");
        Aggregate {
            plan,
            groups: HashMap::new(),
            next_row_id: 1,
            rebuild: false,
            star,
        }
    }

    pub fn plan(&self) -> &AggPlan {
        &self.plan
    }

    /// How each aggregate reads one row (`row`: `1`, group values, arguments).
    fn inputs(&self, conn: &Connection, row: &[Value]) -> Result<Vec<Input>> {
        let base = 1 + self.plan.groups.len();
        let mut out = Vec::with_capacity(self.plan.aggs.len());
        for f in &self.plan.aggs {
            let v = f.arg.map(|i| &row[base + i]);
            out.push(match (f.kind, v) {
                (AggKind::CountStar, _) => Input::Counted,
                (_, None | Some(Value::Null)) => Input::None,
                (AggKind::Count, _) => Input::Counted,
                (AggKind::Min | AggKind::Max, Some(v)) => Input::Value(v.clone()),
                (_, Some(Value::Integer(i))) => Input::Num(Num::Int(*i)),
                (_, Some(Value::Real(r))) => Input::Num(Num::Real(*r)),
                // TEXT/BLOB: read as SQLite's sum() reads it.
                (_, Some(v)) => {
                    let mut s = conn.prepare_cached("SELECT sum(?1)")?;
                    match s.query_row([v], |r| r.get::<_, Value>(0))? {
                        Value::Integer(i) => Input::Num(Num::Int(i)),
                        Value::Real(r) => Input::Num(Num::Real(r)),
                        _ => Input::None,
                    }
                }
            });
        }
        Ok(out)
    }

    fn empty_accs(&self) -> Vec<Acc> {
        self.plan.aggs.iter().map(|f| Acc::new(f.kind)).collect()
    }

    fn scan(conn: &Connection, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>> {
        let mut stmt = conn.prepare_cached(sql)?;
        if params.is_empty() {
            read_rows(&mut stmt, &[])
        } else {
            read_rows(&mut stmt, params)
        }
    }

    /// Adds `row` to its group in `groups` (creating it); returns the group's key.
    fn add_row(
        &self,
        conn: &Connection,
        groups: &mut HashMap<Vec<u8>, Group>,
        row: &[Value],
        next_id: &mut u64,
    ) -> Result<Vec<u8>> {
        let k = self.plan.groups.len();
        let vals = &row[1..=k];
        let key = group_key(vals);
        let g = groups.entry(key.clone()).or_insert_with(|| {
            let id = *next_id;
            *next_id += 1;
            Group {
                row_id: id,
                key: vals.to_vec(),
                reps: Vec::new(),
                accs: self.empty_accs(),
                cells: Vec::new(),
                shown: false,
            }
        });
        self.fold(conn, g, row, true)?;
        Ok(key)
    }

    /// Adds (`add`) or removes one row's contribution to/from `g`.
    fn fold(&self, conn: &Connection, g: &mut Group, row: &[Value], add: bool) -> Result<()> {
        let inputs = self.inputs(conn, row)?;
        for ((acc, f), input) in g.accs.iter_mut().zip(&self.plan.aggs).zip(inputs) {
            if add {
                acc.add(f.kind, input);
            } else {
                acc.remove(f.kind, input);
            }
        }
        let vals = &row[1..=self.plan.groups.len()];
        let exact = pack::pack_owned(vals);
        match g.reps.iter().position(|r| r.0 == exact) {
            Some(i) if add => g.reps[i].1 += 1,
            Some(i) => {
                g.reps[i].1 -= 1;
                if g.reps[i].1 <= 0 {
                    g.reps.swap_remove(i);
                }
            }
            None if add => g.reps.push((exact, 1, vals.to_vec())),
            None => {}
        }
        Ok(())
    }

    /// Sets the values a group shows: its rows' values, or where they differ in type (`1` and
    /// `1.0`), the ones SQLite picks when it runs the query over the group's rows (which
    /// depends on its scan and sort order: a best effort).
    fn settle_key(&self, conn: &Connection, g: &mut Group) -> Result<()> {
        match g.reps.as_slice() {
            [] => {}
            [one] => g.key = one.2.clone(),
            _ => {
                let rows = Self::scan(conn, &self.plan.group_values_sql(), &g.key.clone())?;
                if let Some(r) = rows.into_iter().next() {
                    g.key = r;
                }
            }
        }
        Ok(())
    }

    /// The whole state from a scan of the table (row ids: 0, assigned by the caller).
    fn build(&self, conn: &Connection) -> Result<HashMap<Vec<u8>, Group>> {
        let mut groups = HashMap::new();
        let sql = self.plan.scan_sql(&self.plan.table_sql, "");
        let mut stmt = conn.prepare_cached(&sql)?;
        let n = stmt.column_count();
        let mut rows = stmt.raw_query();
        let mut zero = 0;
        while let Some(r) = rows.next()? {
            let row = (0..n)
                .map(|i| crate::stmt::value_at(r, i))
                .collect::<Result<Vec<_>>>()?;
            self.add_row(conn, &mut groups, &row, &mut zero)?;
        }
        if !self.plan.grouped && groups.is_empty() {
            groups.insert(
                group_key(&[]),
                Group {
                    row_id: 0,
                    key: vec![],
                    reps: vec![],
                    accs: self.empty_accs(),
                    cells: vec![],
                    shown: false,
                },
            );
        }
        Ok(groups)
    }

    /// The aggregates' values of a group.
    fn agg_values(&self, g: &Group) -> Result<Vec<Value>> {
        g.accs
            .iter()
            .zip(&self.plan.aggs)
            .map(|(acc, f)| acc.value(f.kind).map_err(|_| overflow()))
            .collect()
    }

    /// Runs `SELECT <expr>` with the group's values and aggregates bound.
    fn eval(conn: &Connection, sql: &str, key: &[Value], aggs: &[Value]) -> Result<Value> {
        let mut s = conn.prepare_cached(sql)?;
        let vals: Vec<&Value> = key.iter().chain(aggs.iter()).collect();
        for i in 1..=s.parameter_count() {
            s.raw_bind_parameter(i, vals.get(i - 1).copied().unwrap_or(&Value::Null))?;
        }
        let mut rows = s.raw_query();
        match rows.next()? {
            Some(r) => crate::stmt::value_at(r, 0),
            None => Ok(Value::Null),
        }
    }

    /// Whether a group has a result row: it has rows (with `GROUP BY`/`DISTINCT`) and its
    /// `HAVING` holds.
    fn visible(&self, conn: &Connection, g: &Group) -> Result<bool> {
        if self.plan.grouped && matches!(g.accs[self.star], Acc::Count(0)) {
            return Ok(false);
        }
        match &self.plan.having {
            None => Ok(true),
            Some(sql) => {
                let aggs = self.agg_values(g)?;
                Ok(Self::eval(conn, sql, &g.key, &aggs)? == Value::Integer(1))
            }
        }
    }

    /// The result row of a group.
    fn cells(&self, conn: &Connection, g: &Group) -> Result<Vec<Value>> {
        let aggs = self.agg_values(g)?;
        let mut out = Vec::with_capacity(self.plan.outputs.len());
        for o in &self.plan.outputs {
            out.push(match o {
                Output::Group(i) => g.key[*i].clone(),
                Output::Agg(j) => aggs[*j].clone(),
                Output::Expr(sql) => Self::eval(conn, sql, &g.key, &aggs)?,
            });
        }
        Ok(out)
    }

    /// Groups in a stable order (by their values), for row ids.
    fn ordered(groups: &HashMap<Vec<u8>, Group>) -> Vec<Vec<u8>> {
        let mut keys: Vec<(&Vec<u8>, &Group)> = groups.iter().collect();
        keys.sort_by(|a, b| {
            a.1.key
                .iter()
                .zip(&b.1.key)
                .map(|(x, y)| compare(x, y))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        keys.into_iter().map(|(k, _)| k.clone()).collect()
    }

    pub fn initial(&mut self, conn: &Connection) -> Result<Vec<(u64, Vec<Value>)>> {
        let mut groups = self.build(conn)?;
        let mut out = Vec::with_capacity(groups.len());
        for k in Self::ordered(&groups) {
            let g = groups.get_mut(&k).expect("listed");
            self.settle_key(conn, g)?;
            g.shown = self.visible(conn, g)?;
            if !g.shown {
                continue;
            }
            let cells = self.cells(conn, g)?;
            g.row_id = self.next_row_id;
            self.next_row_id += 1;
            g.cells = cells.clone();
            out.push((g.row_id, cells));
        }
        self.groups = groups;
        self.rebuild = false;
        Ok(out)
    }

    /// Rebuilds the state from a scan and diffs by group (after a restart, a failure, or
    /// when the before-images of a change set are not known).
    pub fn recompute(&mut self, conn: &Connection) -> Result<Vec<RowChange>> {
        let mut fresh = self.build(conn)?;
        let mut changes = Vec::new();
        for k in Self::ordered(&fresh) {
            let g = fresh.get_mut(&k).expect("listed");
            self.settle_key(conn, g)?;
            g.shown = self.visible(conn, g)?;
            if !g.shown {
                continue;
            }
            let cells = self.cells(conn, g)?;
            g.cells = cells.clone();
            match self.groups.get(&k).filter(|old| old.shown) {
                Some(old) => {
                    g.row_id = old.row_id;
                    if old.cells != cells {
                        changes.push(change(ChangeKind::Update, g.row_id, cells, &k));
                    }
                }
                None => {
                    g.row_id = self.next_row_id;
                    self.next_row_id += 1;
                    changes.push(change(ChangeKind::Insert, g.row_id, cells, &k));
                }
            }
        }
        let mut gone: Vec<(&Vec<u8>, &Group)> = self
            .groups
            .iter()
            .filter(|(k, g)| g.shown && !fresh.get(*k).is_some_and(|f| f.shown))
            .collect();
        gone.sort_by_key(|(_, g)| g.row_id);
        let deletes: Vec<RowChange> = gone
            .into_iter()
            .map(|(k, g)| change(ChangeKind::Delete, g.row_id, g.cells.clone(), k))
            .collect();
        changes.splice(0..0, deletes);
        self.groups = fresh;
        self.rebuild = false;
        Ok(changes)
    }

    /// Brings the result up to date after a change set of the plan's table, given the
    /// changed rows' before-images, on the database state the set ends at.
    pub fn apply(&mut self, conn: &Connection, images: &Images) -> Result<Vec<RowChange>> {
        if self.rebuild {
            return self.recompute(conn);
        }
        let width = self.plan.columns.len();
        if images.values().flatten().any(|v| v.len() < width) {
            // The images are narrower than the table the plan was made for: start over.
            return self.recompute(conn);
        }
        let mut groups = std::mem::take(&mut self.groups);
        let mut next = self.next_row_id;
        let result = self.apply_to(conn, images, &mut groups, &mut next);
        self.groups = groups;
        self.next_row_id = next;
        match result {
            Ok(Some(changes)) => Ok(changes),
            // The state disagrees with the images (it cannot, unless a change was missed):
            // start over from the table.
            Ok(None) => self.recompute(conn),
            Err(e) => Err(e),
        }
    }

    fn apply_to(
        &self,
        conn: &Connection,
        images: &Images,
        groups: &mut HashMap<Vec<u8>, Group>,
        next: &mut u64,
    ) -> Result<Option<Vec<RowChange>>> {
        // Each touched group's row as published before this change set.
        let mut before: HashMap<Vec<u8>, Published> = HashMap::new();
        let mut note = |groups: &HashMap<Vec<u8>, Group>, key: &Vec<u8>| {
            before.entry(key.clone()).or_insert_with(|| {
                groups
                    .get(key)
                    .filter(|g| g.shown)
                    .map(|g| (g.row_id, g.cells.clone()))
            });
        };
        // New images first, then old ones: an extreme replaced by a better value never needs
        // a re-read.
        let by_key = self.plan.by_key_sql();
        for pk in images.keys() {
            let vals = pack::unpack(pk)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            for row in Self::scan(conn, &by_key, &vals)? {
                let key = group_key(&row[1..=self.plan.groups.len()]);
                note(groups, &key);
                self.add_row(conn, groups, &row, next)?;
            }
        }
        // Columns added since the plan was made come last (schema changes are additive);
        // the plan reads none of them.
        let width = self.plan.columns.len();
        let old: Vec<&[Value]> = images.values().flatten().map(|v| &v[..width]).collect();
        if !old.is_empty() {
            for row in self.eval_images(conn, &old)? {
                let key = group_key(&row[1..=self.plan.groups.len()]);
                note(groups, &key);
                let Some(g) = groups.get_mut(&key) else {
                    return Ok(None);
                };
                self.fold(conn, g, &row, false)?;
                if matches!(g.accs[self.star], Acc::Count(n) if n < 0) {
                    return Ok(None);
                }
            }
        }
        let mut changes = Vec::new();
        let mut touched: Vec<(Vec<u8>, Published)> = before.into_iter().collect();
        touched.sort_by_key(|(_, b)| b.as_ref().map_or(u64::MAX, |b| b.0));
        for (key, was) in touched {
            let empty = groups
                .get(&key)
                .is_none_or(|g| matches!(g.accs[self.star], Acc::Count(0)));
            if empty && self.plan.grouped {
                groups.remove(&key);
            } else if let Some(g) = groups.get(&key) {
                if g.accs.iter().any(Acc::stale) {
                    self.reread(conn, groups, &key)?;
                }
            }
            let now = match groups.get_mut(&key) {
                Some(g) if !(self.plan.grouped && matches!(g.accs[self.star], Acc::Count(0))) => {
                    self.settle_key(conn, g)?;
                    if self.visible(conn, g)? {
                        if !g.shown {
                            // Shown (again): a new row (a deleted row id never comes back).
                            g.row_id = *next;
                            *next += 1;
                            g.shown = true;
                        }
                        let cells = self.cells(conn, g)?;
                        g.cells = cells.clone();
                        Some((g.row_id, cells))
                    } else {
                        g.shown = false;
                        None
                    }
                }
                Some(_) => {
                    groups.remove(&key);
                    None
                }
                None => None,
            };
            match (was, now) {
                (None, Some((id, cells))) => {
                    changes.push(change(ChangeKind::Insert, id, cells, &key))
                }
                (Some((id, cells)), None) => {
                    changes.push(change(ChangeKind::Delete, id, cells, &key))
                }
                (Some((_, old)), Some((id, cells))) if old != cells => {
                    changes.push(change(ChangeKind::Update, id, cells, &key))
                }
                _ => {}
            }
        }
        Ok(Some(changes))
    }

    /// Per-row SQL over before-images, through a TEMP table shaped like the plan's table.
    fn eval_images(&self, conn: &Connection, rows: &[&[Value]]) -> Result<Vec<Vec<Value>>> {
        let table = self.plan.image_table();
        conn.prepare_cached(&self.plan.create_image_table_sql())?
            .execute([])?;
        let insert = format!(
            "INSERT INTO {table} VALUES ({})",
            vec!["?"; self.plan.columns.len()].join(", ")
        );
        let out = (|| {
            let mut ins = conn.prepare_cached(&insert)?;
            for r in rows {
                ins.execute(rusqlite::params_from_iter(r.iter()))?;
            }
            Self::scan(conn, &self.plan.scan_sql(&table, ""), &[])
        })();
        // Emptied whatever happened, so the next round starts clean.
        let cleared = conn
            .prepare_cached(&format!("DELETE FROM {table}"))
            .and_then(|mut s| s.execute([]));
        let out = out?;
        cleared?;
        Ok(out)
    }

    /// Rebuilds one group's state from its rows in the table.
    fn reread(
        &self,
        conn: &Connection,
        groups: &mut HashMap<Vec<u8>, Group>,
        key: &Vec<u8>,
    ) -> Result<()> {
        let Some(g) = groups.get_mut(key) else {
            return Ok(());
        };
        g.accs = self.empty_accs();
        g.reps.clear();
        // Rows SQLite finds equal to the group's values belong to it.
        for row in Self::scan(conn, &self.plan.by_group_sql(), &g.key.clone())? {
            self.fold(conn, g, &row, true)?;
        }
        Ok(())
    }

    pub fn rows(&self) -> impl Iterator<Item = (u64, &Vec<Value>)> {
        self.groups
            .values()
            .filter(|g| g.shown)
            .map(|g| (g.row_id, &g.cells))
    }

    /// Result rows.
    pub fn len(&self) -> usize {
        self.groups.values().filter(|g| g.shown).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn export(&self) -> Vec<StoredRow> {
        let mut rows: Vec<StoredRow> = self
            .groups
            .iter()
            .filter(|(_, g)| g.shown)
            .map(|(k, g)| StoredRow {
                row_id: g.row_id,
                identity: k.clone(),
                cells: g.cells.clone(),
            })
            .collect();
        rows.sort_by_key(|r| r.row_id);
        rows
    }

    /// Restores persisted rows; their aggregate state is rebuilt by the next refresh.
    pub fn import(&mut self, rows: Vec<StoredRow>, next_row_id: u64) {
        self.groups = rows
            .into_iter()
            .map(|r| {
                (
                    r.identity,
                    Group {
                        row_id: r.row_id,
                        key: vec![],
                        reps: vec![],
                        accs: vec![],
                        cells: r.cells,
                        shown: true,
                    },
                )
            })
            .collect();
        let max = self.groups.values().map(|g| g.row_id).max().unwrap_or(0);
        self.next_row_id = next_row_id.max(max + 1);
        self.rebuild = true;
    }

    /// Memory held, roughly: for figures (O(groups)).
    pub fn groups(&self) -> usize {
        self.groups.len()
    }
}

fn change(kind: ChangeKind, row_id: u64, cells: Vec<Value>, key: &[u8]) -> RowChange {
    RowChange {
        kind,
        row_id,
        cells,
        identity: key.to_vec(),
    }
}
