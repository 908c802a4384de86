//! `ORDER BY … LIMIT` over one table: a window of the first rows, slid by the changed rows,
//! and the query re-run only when the window cannot say the result.
//!
//! After each run the guard records, on the same snapshot, the window: the primary keys of
//! every row that sorts at or before the last of the first `LIMIT + OFFSET` rows plus a slack
//! of as many again (ties included), and that last row's sort key (the *boundary*; none when
//! the table has fewer rows: every row is in the window). The invariant: every row outside
//! the window that passes the filter sorts strictly after the boundary.
//!
//! [`Guard::refresh`] reads each changed row once, by key:
//! - When none of them was in the window and none now passes the filter at or before the
//!   boundary, the result is as it was.
//! - Otherwise the window keeps its other rows as they were read (sort keys and result
//!   columns) and takes the changed rows as they are now. Its rows at or before the boundary
//!   are, by the invariant, every such row of the table, so when at least `LIMIT + OFFSET`
//!   remain, sorted, rows `OFFSET .. LIMIT + OFFSET` are the result; rows that moved past the
//!   boundary leave the window. A tie across the `OFFSET` or the `LIMIT + OFFSET` cut would
//!   leave the choice to SQLite's scan order, which only a run of the query reproduces:
//!   re-run.
//! - Re-run too when fewer rows remain (more rows left the window than its slack), or when
//!   the window is unknown.
//!
//! Sort keys are compared as SQLite's `ORDER BY` does under the BINARY collation (queries
//! with `COLLATE` are not guarded).

use crate::aggregate::acc::compare;
use crate::analyze::{quote, Schema};
use crate::matview::{read_rows, Result};
use crate::pack;
use rusqlite::types::Value;
use rusqlite::Connection;
use sqlparser::ast::{visit_expressions, Expr, LimitClause, OrderByKind, Query, SetExpr};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

/// Ties of the boundary kept at most; more and the guard gives up (always re-runs).
const MAX_WINDOW: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub struct TopKPlan {
    /// Lower-case table name.
    pub table: String,
    table_sql: String,
    reference: String,
    pk: Vec<String>,
    filter: Option<String>,
    /// The query's result columns, as written.
    projection: String,
    /// Sort expressions with (descending, NULLS FIRST/LAST as written).
    order: Vec<(String, bool, Option<bool>)>,
    /// `LIMIT + OFFSET`.
    window: u64,
    offset: u64,
}

fn literal_u64(e: &Expr) -> Option<u64> {
    match e {
        Expr::Value(v) => match &v.value {
            sqlparser::ast::Value::Number(n, _) => n.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// Whether `e` reads only the row (no subquery, aggregate, window or volatile function).
fn row_only(e: &Expr) -> bool {
    let mut ok = true;
    let _ = visit_expressions(e, |x| {
        ok &= match x {
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => false,
            Expr::Collate { .. } => false,
            Expr::Function(f) => {
                let name = crate::analyze::function_name(f);
                f.over.is_none()
                    && !crate::analyze::is_aggregate(f)
                    && !matches!(
                        name.as_str(),
                        "random"
                            | "randomblob"
                            | "changes"
                            | "total_changes"
                            | "last_insert_rowid"
                            | "date"
                            | "time"
                            | "datetime"
                            | "julianday"
                            | "unixepoch"
                            | "strftime"
                            | "timediff"
                            | "current_time"
                            | "current_date"
                            | "current_timestamp"
                    )
            }
            _ => true,
        };
        if ok {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    });
    ok
}

/// The guard's plan for `q`, if it is a plain `ORDER BY … LIMIT` over one table.
pub fn detect(conn: &Connection, q: &Query, schema: &dyn Schema) -> Option<TopKPlan> {
    if q.with.is_some() || q.fetch.is_some() {
        return None;
    }
    let (limit, offset) = match q.limit_clause.as_ref()? {
        LimitClause::LimitOffset {
            limit: Some(l),
            offset,
            limit_by,
        } if limit_by.is_empty() => (
            literal_u64(l)?,
            match offset {
                Some(o) => literal_u64(&o.value)?,
                None => 0,
            },
        ),
        LimitClause::OffsetCommaLimit { offset, limit } => {
            (literal_u64(limit)?, literal_u64(offset)?)
        }
        _ => return None,
    };
    let OrderByKind::Expressions(items) = &q.order_by.as_ref()?.kind else {
        return None;
    };
    let SetExpr::Select(sel) = &*q.body else {
        return None;
    };
    if sel.distinct.is_some()
        || sel.having.is_some()
        || !sel.named_window.is_empty()
        || !matches!(&sel.group_by, sqlparser::ast::GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
    {
        return None;
    }
    let (table, alias) = crate::analyze::one_table(sel).ok()?;
    let table = table.value.clone();
    let pk = schema.primary_key(&table)?;
    let reference = quote(alias.map_or(&table, |a| &a.value));
    for p in &sel.projection {
        if let sqlparser::ast::SelectItem::UnnamedExpr(e)
        | sqlparser::ast::SelectItem::ExprWithAlias { expr: e, .. } = p
        {
            if !row_only(e) {
                return None;
            }
        }
    }
    if sel.selection.as_ref().is_some_and(|w| !row_only(w)) {
        return None;
    }
    // A bare name in ORDER BY finds a result alias before a column; the window reads sort
    // keys without the result columns, so such a query is not guarded.
    let aliases: Vec<&str> = sel
        .projection
        .iter()
        .filter_map(|p| match p {
            sqlparser::ast::SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.as_str()),
            _ => None,
        })
        .collect();
    let mut order = Vec::new();
    for o in items {
        // `ORDER BY 2`, `(2)` or `+2` is a result column's position.
        let mut bare = &o.expr;
        while let Expr::Nested(e)
        | Expr::UnaryOp {
            op: sqlparser::ast::UnaryOperator::Plus,
            expr: e,
        } = bare
        {
            bare = e;
        }
        let aliased = match bare {
            Expr::Identifier(id) => aliases.iter().any(|a| a.eq_ignore_ascii_case(&id.value)),
            _ => false,
        };
        if o.with_fill.is_some() || !row_only(&o.expr) || matches!(bare, Expr::Value(_)) || aliased
        {
            return None;
        }
        order.push((
            o.expr.to_string(),
            o.options.asc == Some(false),
            o.options.nulls_first,
        ));
    }
    let schema_sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
            [&table],
            |r| r.get(0),
        )
        .ok()?;
    if schema_sql.to_ascii_lowercase().contains("collate") {
        return None;
    }
    let plan = TopKPlan {
        table: table.to_ascii_lowercase(),
        table_sql: quote(&table),
        reference,
        pk,
        filter: sel.selection.as_ref().map(|w| w.to_string()),
        projection: sel
            .projection
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        order,
        window: limit.checked_add(offset)?,
        offset,
    };
    // Sort expressions naming result aliases do not resolve against the table: not guarded.
    for sql in [plan.window_sql(), plan.ties_sql(), plan.row_sql()] {
        conn.prepare(&sql).ok()?;
    }
    Some(plan)
}

impl TopKPlan {
    fn select(&self, what: &str, extra: &str) -> String {
        let mut conds: Vec<String> = self.filter.iter().map(|f| format!("({f})")).collect();
        if !extra.is_empty() {
            conds.push(extra.to_string());
        }
        let mut sql = format!(
            "SELECT {what} FROM {} AS {}",
            self.table_sql, self.reference
        );
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql
    }

    fn pk_cols(&self) -> String {
        self.pk
            .iter()
            .map(|c| format!("{}.{}", self.reference, quote(c)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn keys(&self) -> String {
        self.order
            .iter()
            .map(|o| o.0.clone())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Rows the window holds: `LIMIT + OFFSET` and as many again (at least 16), so that rows
    /// may leave it without a re-run. A window past [`MAX_WINDOW`] does not slide: it holds
    /// `LIMIT + OFFSET` rows (at most `i64::MAX`, SQLite's largest `LIMIT`).
    fn captured(&self) -> u64 {
        if self.slides() {
            self.window + self.window.max(16)
        } else {
            self.window.min(i64::MAX as u64)
        }
    }

    /// Whether the window slides (else a change that reaches it re-runs the query).
    fn slides(&self) -> bool {
        self.window <= MAX_WINDOW as u64
    }

    /// The first [`TopKPlan::captured`] rows ([`TopKPlan::member_cols`]).
    fn window_sql(&self) -> String {
        let order = self
            .order
            .iter()
            .map(|(e, desc, nulls)| {
                format!(
                    "{e}{}{}",
                    if *desc { " DESC" } else { "" },
                    match nulls {
                        Some(true) => " NULLS FIRST",
                        Some(false) => " NULLS LAST",
                        None => "",
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{} ORDER BY {order} LIMIT {}",
            self.select(&self.member_cols(), ""),
            self.captured()
        )
    }

    /// A window row's columns: primary key, sort keys, result columns.
    fn member_cols(&self) -> String {
        format!("{}, {}, {}", self.pk_cols(), self.keys(), self.projection)
    }

    /// The rows whose sort key equals the boundary (bound as `?1..`).
    fn ties_sql(&self) -> String {
        let cond = self
            .order
            .iter()
            .enumerate()
            .map(|(i, o)| format!("({}) IS ?{}", o.0, i + 1))
            .collect::<Vec<_>>()
            .join(" AND ");
        format!(
            "{} LIMIT {}",
            self.select(&self.member_cols(), &cond),
            MAX_WINDOW + 1
        )
    }

    /// The sort key and the result columns of one row, if it passes the filter (primary key
    /// bound as `?1..`).
    fn row_sql(&self) -> String {
        let cond = crate::analyze::key_condition(&self.reference, &self.pk);
        self.select(&format!("{}, {}", self.keys(), self.projection), &cond)
    }

    /// How two sort keys compare in the query's order.
    fn cmp(&self, a: &[Value], b: &[Value]) -> Ordering {
        for ((x, y), (_, desc, nulls)) in a.iter().zip(b).zip(&self.order) {
            let o = match (x, y, nulls) {
                (Value::Null, Value::Null, _) => Ordering::Equal,
                (Value::Null, _, Some(first)) => {
                    if *first {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    }
                }
                (_, Value::Null, Some(first)) => {
                    if *first {
                        Ordering::Greater
                    } else {
                        Ordering::Less
                    }
                }
                _ if *desc => compare(x, y).reverse(),
                _ => compare(x, y),
            };
            if o.is_ne() {
                return o;
            }
        }
        Ordering::Equal
    }
}

#[derive(Debug)]
struct Window {
    /// `PRAGMA schema_version` when captured: a schema change (a column added under
    /// `SELECT *`) makes the kept result columns stale, so the window is unknown again.
    schema: i64,
    /// Fewer rows than the window: every row counts.
    full: bool,
    boundary: Vec<Value>,
    /// The rows at or before the boundary, by packed primary key. A row that no change
    /// names is as it was read, so only changed rows are read again.
    members: HashMap<Vec<u8>, Member>,
}

#[derive(Debug)]
struct Member {
    key: Vec<Value>,
    cells: Vec<Value>,
}

/// What a change set does to an `ORDER BY … LIMIT` result ([`Guard::refresh`]).
#[derive(Debug)]
pub enum Outcome {
    /// None of its rows was in the window or now is: the result is as it was.
    Unchanged,
    /// The new result, read from the window, which has slid.
    Slid(Vec<Vec<Value>>),
    /// Only a run of the query can say; the window is unknown until [`Guard::capture`].
    Rerun,
}

/// Keeps an `ORDER BY … LIMIT` result from its window.
#[derive(Debug)]
pub struct Guard {
    plan: Arc<TopKPlan>,
    /// `None`: unknown (re-run).
    window: Option<Window>,
}

impl Guard {
    pub fn new(plan: Arc<TopKPlan>) -> Guard {
        Guard { plan, window: None }
    }

    pub fn forget(&mut self) {
        self.window = None;
    }

    /// Records the window after a run, on the same snapshot.
    pub fn capture(&mut self, conn: &Connection) -> Result<()> {
        self.window = None;
        let schema = schema_version(conn)?;
        let (k, n) = (self.plan.pk.len(), self.plan.order.len());
        let slides = self.plan.slides();
        let member = |mut r: Vec<Value>| {
            // A window that does not slide never reads its rows' result columns.
            let cells = if slides {
                r.split_off(k + n)
            } else {
                Vec::new()
            };
            r.truncate(k + n);
            let key = r.split_off(k);
            (pack::pack_owned(&r), Member { key, cells })
        };
        let mut stmt = conn.prepare_cached(&self.plan.window_sql())?;
        let rows = read_rows(&mut stmt, &[])?;
        drop(stmt);
        let full = rows.len() as u64 >= self.plan.captured();
        let mut members: HashMap<Vec<u8>, Member> = rows.into_iter().map(member).collect();
        let boundary = match members
            .values()
            .max_by(|a, b| self.plan.cmp(&a.key, &b.key))
        {
            Some(m) if full => m.key.clone(),
            _ => Vec::new(),
        };
        if full {
            let mut ties = conn.prepare_cached(&self.plan.ties_sql())?;
            let tied = read_rows(&mut ties, &boundary)?;
            if tied.len() > MAX_WINDOW {
                return Ok(());
            }
            members.extend(tied.into_iter().map(member));
        }
        self.window = Some(Window {
            schema,
            full,
            boundary,
            members,
        });
        Ok(())
    }

    /// What `changes` do to the result (the query reads only the plan's table), in one pass
    /// over the changed rows: each is read once, by key.
    pub fn refresh(
        &mut self,
        conn: &Connection,
        changes: &crate::matview::Changes,
    ) -> Result<Outcome> {
        let Some(w) = &self.window else {
            return Ok(Outcome::Rerun);
        };
        let Some(changed) = changes.get(&self.plan.table) else {
            return Ok(Outcome::Unchanged);
        };
        if schema_version(conn)? != w.schema {
            self.window = None;
            return Ok(Outcome::Rerun);
        }
        let plan = &self.plan;
        let n = plan.order.len();
        // Each changed row as it is now, if it passes the filter at or before the boundary
        // (rows past it may sort after rows outside the window).
        let mut stmt = conn.prepare_cached(&plan.row_sql())?;
        let mut reached = false;
        let mut now = Vec::with_capacity(changed.len());
        for pk in changed {
            reached |= w.members.contains_key(pk);
            let vals = pack::unpack(pk)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            let row = read_rows(&mut stmt, &vals)?
                .into_iter()
                .next()
                .and_then(|mut key| {
                    let cells = key.split_off(n);
                    let within = !w.full || plan.cmp(&key, &w.boundary) != Ordering::Greater;
                    within.then_some(Member { key, cells })
                });
            reached |= row.is_some();
            now.push((pk, row));
        }
        drop(stmt);
        if !reached {
            return Ok(Outcome::Unchanged);
        }
        // From here on the window is unknown unless it slides.
        let mut w = self.window.take().expect("checked above");
        if !plan.slides() || w.members.len() + now.len() > MAX_WINDOW {
            return Ok(Outcome::Rerun);
        }
        for (pk, row) in now {
            w.members.remove(pk);
            if let Some(m) = row {
                w.members.insert(pk.clone(), m);
            }
        }
        let mut rows: Vec<(&Vec<u8>, &Member)> = w.members.iter().collect();
        rows.sort_by(|a, b| plan.cmp(&a.1.key, &b.1.key));
        let (window, offset) = (plan.window as usize, plan.offset as usize);
        if w.full && rows.len() < window {
            return Ok(Outcome::Rerun); // more rows left than the slack: refill from the table
        }
        let tied = |i: usize| {
            i > 0
                && i < rows.len()
                && plan.cmp(&rows[i - 1].1.key, &rows[i].1.key) == Ordering::Equal
        };
        if tied(window) || tied(offset) {
            return Ok(Outcome::Rerun);
        }
        let result: Vec<Vec<Value>> = rows[offset.min(rows.len())..window.min(rows.len())]
            .iter()
            .map(|r| r.1.cells.clone())
            .collect();
        // Rows that entered grow the window: past twice its size, cut it where two rows
        // differ (every row after the cut sorts after the new boundary).
        let captured = plan.captured() as usize;
        let cut = (rows.len() > 2 * captured)
            .then(|| (captured..rows.len()).find(|i| !tied(*i)))
            .flatten()
            .map(|cut| {
                let boundary = rows[cut - 1].1.key.clone();
                let gone: Vec<Vec<u8>> = rows[cut..].iter().map(|r| r.0.clone()).collect();
                (boundary, gone)
            });
        drop(rows);
        if let Some((boundary, gone)) = cut {
            for pk in gone {
                w.members.remove(&pk);
            }
            w.full = true;
            w.boundary = boundary;
        }
        self.window = Some(w);
        Ok(Outcome::Slid(result))
    }
}

fn schema_version(conn: &Connection) -> Result<i64> {
    conn.query_row("PRAGMA schema_version", [], |r| r.get(0))
}

#[cfg(test)]
#[path = "topk_tests.rs"]
mod tests;
