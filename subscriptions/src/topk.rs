//! `ORDER BY … LIMIT` over one table: the query is still re-run (its result among rows that tie
//! on the sort key is SQLite's scan order), but only when a change can reach its window.
//!
//! After each run the guard records, on the same snapshot, the window: the primary keys of
//! every row that sorts at or before the last row of `LIMIT + OFFSET` (ties included), and
//! that last row's sort key (the *boundary*). A change set leaves the result as it is when
//! none of its rows was in the window and none now passes the filter with a sort key at or
//! before the boundary: the first `LIMIT + OFFSET` rows are then the same rows with the same
//! values. Otherwise, when the table has fewer rows than the window (every row counts), or when
//! the state is unknown, it re-runs. Sort keys are compared as SQLite's `ORDER BY` does under
//! the BINARY collation (queries with `COLLATE` are not guarded).

use crate::aggregate::acc::compare;
use crate::analyze::{quote, Schema};
use crate::matview::{read_rows, Result};
use crate::pack;
use rusqlite::types::Value;
use rusqlite::Connection;
use sqlparser::ast::{visit_expressions, Expr, LimitClause, OrderByKind, Query, SetExpr};
use std::cmp::Ordering;
use std::collections::HashSet;
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
    /// Sort expressions with (descending, NULLS FIRST/LAST as written).
    order: Vec<(String, bool, Option<bool>)>,
    /// `LIMIT + OFFSET`.
    window: u64,
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
                let name = f.name.to_string().to_ascii_lowercase();
                f.over.is_none()
                    && !matches!(
                        name.as_str(),
                        "random"
                            | "randomblob"
                            | "changes"
                            | "total_changes"
                            | "last_insert_rowid"
                            | "count"
                            | "sum"
                            | "total"
                            | "avg"
                            | "group_concat"
                            | "string_agg"
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
                    && !(matches!(name.as_str(), "min" | "max")
                        && matches!(&f.args, sqlparser::ast::FunctionArguments::List(l) if l.args.len() == 1))
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
    let mut order = Vec::new();
    for o in items {
        if o.with_fill.is_some() || !row_only(&o.expr) || literal_u64(&o.expr).is_some() {
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
        order,
        window: limit.checked_add(offset)?,
    };
    // Sort expressions naming result aliases do not resolve against the table: not guarded.
    for sql in [plan.window_sql(), plan.ties_sql(), plan.key_sql()] {
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

    /// The first `window` rows: primary key, then sort keys.
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
            self.select(&format!("{}, {}", self.pk_cols(), self.keys()), ""),
            self.window
        )
    }

    /// Primary keys of the rows whose sort key equals the boundary (bound as `?1..`).
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
            self.select(&self.pk_cols(), &cond),
            MAX_WINDOW + 1
        )
    }

    /// The sort key of one row, if it passes the filter (primary key bound as `?1..`).
    fn key_sql(&self) -> String {
        let cond = crate::analyze::key_condition(&self.reference, &self.pk);
        self.select(&self.keys(), &cond)
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
    /// Fewer rows than `LIMIT + OFFSET`: every row counts.
    full: bool,
    boundary: Vec<Value>,
    /// Packed primary keys of the rows at or before the boundary.
    members: HashSet<Vec<u8>>,
}

/// Decides whether a change set can change an `ORDER BY … LIMIT` result.
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
        let k = self.plan.pk.len();
        let mut stmt = conn.prepare_cached(&self.plan.window_sql())?;
        let rows = read_rows(&mut stmt, &[])?;
        drop(stmt);
        let mut members: HashSet<Vec<u8>> =
            rows.iter().map(|r| pack::pack_owned(&r[..k])).collect();
        let full = rows.len() as u64 >= self.plan.window;
        let boundary = match rows.last() {
            Some(r) if full => r[k..].to_vec(),
            _ => Vec::new(),
        };
        if full {
            let mut ties = conn.prepare_cached(&self.plan.ties_sql())?;
            let tied = read_rows(&mut ties, &boundary)?;
            if tied.len() > MAX_WINDOW {
                return Ok(());
            }
            members.extend(tied.iter().map(|r| pack::pack_owned(r)));
        }
        self.window = Some(Window {
            full,
            boundary,
            members,
        });
        Ok(())
    }

    /// Whether `changes` can change the result (the query reads only the plan's table).
    pub fn affected(&self, conn: &Connection, changes: &crate::matview::Changes) -> Result<bool> {
        let Some(w) = &self.window else {
            return Ok(true);
        };
        let Some(keys) = changes.get(&self.plan.table) else {
            return Ok(false);
        };
        let mut stmt = conn.prepare_cached(&self.plan.key_sql())?;
        for pk in keys {
            if w.members.contains(pk) {
                return Ok(true);
            }
            let vals = pack::unpack(pk)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            let now = read_rows(&mut stmt, &vals)?;
            let Some(key) = now.first() else {
                continue; // gone or filtered out, and it was not in the window
            };
            if !w.full || self.plan.cmp(key, &w.boundary) != Ordering::Greater {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matview::Changes;
    use crate::stmt::Statement;

    struct S;
    impl Schema for S {
        fn primary_key(&self, _: &str) -> Option<Vec<String>> {
            Some(vec!["id".into()])
        }
    }

    fn key(id: i64) -> Changes {
        let mut c = Changes::new();
        c.entry("t".into())
            .or_default()
            .insert(pack::pack_owned(&[Value::Integer(id)]));
        c
    }

    #[test]
    fn only_changes_that_reach_the_window_rerun() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER);
             INSERT INTO t VALUES (1, 10), (2, 20), (3, 30), (4, 30), (5, 50);",
        )
        .unwrap();
        let a = crate::analyze(
            &conn,
            &Statement::new("SELECT id, v FROM t ORDER BY v DESC LIMIT 2"),
            &S,
        )
        .unwrap();
        let plan = a.topk.clone().expect("guarded");
        let mut g = Guard::new(plan);
        assert!(
            g.affected(&conn, &key(1)).unwrap(),
            "unknown window: re-run"
        );
        g.capture(&conn).unwrap();
        // Window: 5 (50) and one of the tied 30s: both 30s are in it.
        assert!(!g.affected(&conn, &key(1)).unwrap(), "10 → 10, far below");
        assert!(g.affected(&conn, &key(3)).unwrap(), "a tied boundary row");
        conn.execute("UPDATE t SET v = 25 WHERE id = 1", [])
            .unwrap();
        assert!(!g.affected(&conn, &key(1)).unwrap(), "25 stays below 30");
        conn.execute("UPDATE t SET v = 30 WHERE id = 1", [])
            .unwrap();
        assert!(
            g.affected(&conn, &key(1)).unwrap(),
            "ties with the boundary"
        );
        conn.execute("DELETE FROM t WHERE id = 2", []).unwrap();
        assert!(
            !g.affected(&conn, &key(2)).unwrap(),
            "was outside, now gone"
        );
        assert!(!g.affected(&conn, &Changes::new()).unwrap());
        // Fewer rows than the window: every change counts.
        conn.execute("DELETE FROM t WHERE id > 1", []).unwrap();
        g.capture(&conn).unwrap();
        conn.execute("INSERT INTO t VALUES (9, 1)", []).unwrap();
        assert!(g.affected(&conn, &key(9)).unwrap());
    }
}
