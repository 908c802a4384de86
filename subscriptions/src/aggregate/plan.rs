//! Which queries the aggregate maintenance takes, and the SQL it runs for them.
//!
//! Accepted: one `SELECT` over one replicated table (no join, no subquery, no CTE), an optional
//! `WHERE`, and either
//! - aggregates `count(*)`, `count(x)`, `sum(x)`, `total(x)`, `avg(x)`, `min(x)`, `max(x)`
//!   (no `DISTINCT`/`FILTER`/`OVER`) with an optional `GROUP BY` of expressions and an
//!   optional `HAVING`; every result column (and `HAVING`) is built from aggregates, literals
//!   and group expressions; or
//! - `SELECT DISTINCT <expressions>` (the distinct tuples are groups with a row count).
//!
//! Refused (the query is re-run instead, with this reason): `ORDER BY`, `LIMIT`,
//! other aggregates, columns outside an aggregate that are not a group expression (SQLite's
//! "bare columns"), comparisons of a group column in a result column (a bound value has no
//! column affinity), `COLLATE` in the query or in the table's schema (groups and extremes are
//! compared bytewise), and functions whose value changes without a write (`random()`, the
//! current time).

use super::acc::AggKind;
use crate::analyze::{quote, Schema};
use rusqlite::Connection;
use sqlparser::ast::{
    visit_expressions, BinaryOperator, Distinct, Expr, FunctionArg, FunctionArgExpr,
    FunctionArguments, GroupByExpr, Query, SelectItem, SetExpr, VisitMut, VisitorMut,
};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

/// How one result column is computed from a group.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The value of group expression `i`.
    Group(usize),
    /// The value of aggregate `j`.
    Agg(usize),
    /// `SELECT <expr>` with group values bound as `?1..?k` and aggregates as `?k+1..`.
    Expr(String),
}

/// An aggregate of the query: its kind and the index of its argument in [`AggPlan::args`].
#[derive(Debug, Clone, PartialEq)]
pub struct AggFn {
    pub kind: AggKind,
    pub arg: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AggPlan {
    /// Lower-case table name.
    pub table: String,
    /// The table's name, quoted.
    pub table_sql: String,
    /// How the query refers to the table (alias or name), quoted.
    pub reference: String,
    pub pk: Vec<String>,
    /// The table's columns and declared types, in order (for the before-image table).
    pub columns: Vec<(String, String)>,
    pub filter: Option<String>,
    pub groups: Vec<String>,
    /// `GROUP BY` or `DISTINCT`: a group without rows has no result row. Otherwise the result
    /// is always one row.
    pub grouped: bool,
    /// `SELECT DISTINCT`.
    pub distinct: bool,
    pub aggs: Vec<AggFn>,
    /// Distinct aggregate arguments.
    pub args: Vec<String>,
    pub outputs: Vec<Output>,
    /// `SELECT CASE WHEN (<HAVING>) THEN 1 ELSE 0 END`, bound like [`Output::Expr`]: a group
    /// has a result row only while it holds.
    pub having: Option<String>,
}

/// Functions whose value may change without a write.
const VOLATILE: &[&str] = &[
    "random",
    "randomblob",
    "changes",
    "total_changes",
    "last_insert_rowid",
    "current_time",
    "current_date",
    "current_timestamp",
];
const TIME_FUNCTIONS: &[&str] = &[
    "date",
    "time",
    "datetime",
    "julianday",
    "unixepoch",
    "strftime",
    "timediff",
];
fn fn_name(f: &sqlparser::ast::Function) -> String {
    crate::analyze::function_name(f)
}

fn arg_count(f: &sqlparser::ast::Function) -> usize {
    match &f.args {
        FunctionArguments::List(l) => l.args.len(),
        _ => 0,
    }
}

/// The aggregate `f` is, if it is one this plan maintains (`Err`: an aggregate it does not).
fn aggregate_of(f: &sqlparser::ast::Function) -> Result<Option<(AggKind, Option<Expr>)>, String> {
    let name = fn_name(f);
    let Some(mut kind) = AggKind::parse(&name) else {
        if crate::analyze::AGGREGATES.contains(&name.as_str()) {
            return Err(format!("uses the aggregate {name}()"));
        }
        return Ok(None);
    };
    if matches!(kind, AggKind::Min | AggKind::Max) && arg_count(f) != 1 {
        return Ok(None); // the scalar min/max
    }
    if f.over.is_some() {
        return Err("uses window functions".into());
    }
    if f.filter.is_some() || !f.within_group.is_empty() || f.null_treatment.is_some() {
        return Err(format!("uses {name}() with FILTER or WITHIN GROUP"));
    }
    let FunctionArguments::List(l) = &f.args else {
        return Err(format!("uses {name}() without arguments"));
    };
    if l.duplicate_treatment.is_some() || !l.clauses.is_empty() {
        return Err(format!(
            "uses {name}(DISTINCT …) or an ORDER BY inside an aggregate"
        ));
    }
    let arg = match l.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if kind == AggKind::Count => {
            kind = AggKind::CountStar;
            None
        }
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] => Some(e.clone()),
        _ => return Err(format!("uses {name}() with unusual arguments")),
    };
    Ok(Some((kind, arg)))
}

/// Why `e` cannot be evaluated per row (subqueries, aggregates, volatile functions).
fn row_problem(e: &Expr) -> Option<String> {
    let mut why = None;
    let _ = visit_expressions(e, |x| {
        match x {
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                why = Some("uses a subquery".to_string())
            }
            Expr::Collate { .. } => why = Some("uses COLLATE".into()),
            Expr::Function(f) => {
                let name = fn_name(f);
                if f.over.is_some() {
                    why = Some("uses window functions".into());
                } else if VOLATILE.contains(&name.as_str())
                    || (TIME_FUNCTIONS.contains(&name.as_str())
                        && (arg_count(f) == 0
                            || f.to_string().to_ascii_lowercase().contains("now")))
                {
                    why = Some(format!(
                        "uses {name}(), whose value changes without a write"
                    ));
                } else {
                    match aggregate_of(f) {
                        Err(w) => why = Some(w),
                        Ok(Some(_)) => {
                            why = Some(format!(
                                "uses the aggregate {name}() outside the result columns"
                            ))
                        }
                        Ok(None) => {}
                    }
                }
            }
            _ => {}
        }
        if why.is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    why
}

fn placeholder(n: usize) -> Expr {
    Parser::new(&SQLiteDialect {})
        .try_with_sql(&format!("?{n}"))
        .and_then(|mut p| p.parse_expr())
        .expect("a placeholder parses")
}

/// Why an expression cannot be computed from its group's values and aggregates.
enum Lift {
    Problem(String),
    /// It reads a column outside every aggregate and group expression.
    Column,
    /// It compares a group value, whose column affinity a placeholder would not carry.
    ComparesGroup,
}

/// `e` with its aggregates and group expressions replaced by placeholders ([`Rewrite`]),
/// registering the aggregates and their arguments.
fn lift(
    e: &Expr,
    groups: &[String],
    aggs: &mut Vec<AggFn>,
    args: &mut Vec<String>,
) -> Result<Expr, Lift> {
    let mut x = e.clone();
    let mut rw = Rewrite {
        groups,
        aggs,
        args,
        problem: None,
        used_group: false,
    };
    let _ = x.visit(&mut rw);
    if let Some(p) = rw.problem {
        return Err(Lift::Problem(p));
    }
    let used_group = rw.used_group;
    if has_column(&x) {
        return Err(Lift::Column);
    }
    if let Some(p) = row_problem(&x) {
        return Err(Lift::Problem(p));
    }
    if used_group && compares(&x) {
        return Err(Lift::ComparesGroup);
    }
    Ok(x)
}

/// Replaces aggregates and group expressions in a result column by placeholders.
struct Rewrite<'a> {
    groups: &'a [String],
    aggs: &'a mut Vec<AggFn>,
    args: &'a mut Vec<String>,
    problem: Option<String>,
    /// Placeholders of group values put in.
    used_group: bool,
}

impl VisitorMut for Rewrite<'_> {
    type Break = ();
    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            match aggregate_of(f) {
                Err(w) => {
                    self.problem = Some(w);
                    return ControlFlow::Break(());
                }
                Ok(Some((kind, arg))) => {
                    let arg = match arg {
                        Some(a) => {
                            if let Some(w) = row_problem(&a) {
                                self.problem = Some(w);
                                return ControlFlow::Break(());
                            }
                            let sql = a.to_string();
                            let i = match self.args.iter().position(|x| *x == sql) {
                                Some(i) => i,
                                None => {
                                    self.args.push(sql);
                                    self.args.len() - 1
                                }
                            };
                            Some(i)
                        }
                        None => None,
                    };
                    let f = AggFn { kind, arg };
                    let j = match self.aggs.iter().position(|x| *x == f) {
                        Some(j) => j,
                        None => {
                            self.aggs.push(f);
                            self.aggs.len() - 1
                        }
                    };
                    *e = placeholder(self.groups.len() + j + 1);
                    return ControlFlow::Continue(());
                }
                Ok(None) => {}
            }
        }
        let sql = e.to_string();
        if let Some(i) = self.groups.iter().position(|g| *g == sql) {
            *e = placeholder(i + 1);
            self.used_group = true;
        }
        ControlFlow::Continue(())
    }
}

/// Whether `e` compares values (where a column's affinity would apply).
fn compares(e: &Expr) -> bool {
    let mut found = false;
    let _ = visit_expressions(e, |x| {
        found |= match x {
            Expr::BinaryOp { op, .. } => matches!(
                op,
                BinaryOperator::Eq
                    | BinaryOperator::NotEq
                    | BinaryOperator::Lt
                    | BinaryOperator::LtEq
                    | BinaryOperator::Gt
                    | BinaryOperator::GtEq
                    | BinaryOperator::Spaceship
            ),
            Expr::IsDistinctFrom(..)
            | Expr::IsNotDistinctFrom(..)
            | Expr::InList { .. }
            | Expr::Between { .. } => true,
            Expr::Case { operand, .. } => operand.is_some(),
            _ => false,
        };
        if found {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    found
}

/// Whether `e` still refers to a column.
fn has_column(e: &Expr) -> bool {
    let mut found = false;
    let _ = visit_expressions(e, |x| {
        found |= matches!(x, Expr::Identifier(_) | Expr::CompoundIdentifier(_));
        if found {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    found
}

/// The aggregate plan for `q`, or why it does not apply.
pub fn detect(conn: &Connection, q: &Query, schema: &dyn Schema) -> Result<AggPlan, String> {
    if q.with.is_some() {
        return Err("uses a WITH clause".into());
    }
    if q.order_by.is_some() {
        return Err("uses ORDER BY".into());
    }
    if q.limit_clause.is_some() || q.fetch.is_some() {
        return Err("uses LIMIT/OFFSET".into());
    }
    let SetExpr::Select(sel) = &*q.body else {
        return Err("is a compound select (UNION/INTERSECT/EXCEPT) or VALUES".into());
    };
    if !sel.named_window.is_empty() || sel.qualify.is_some() {
        return Err("uses window functions".into());
    }
    if sel.top.is_some() || sel.into.is_some() || !sel.lateral_views.is_empty() {
        return Err("uses syntax SQLite does not have".into());
    }
    let (table, alias) = crate::analyze::one_table(sel).map_err(String::from)?;
    let table = table.value.clone();
    let pk = schema
        .primary_key(&table)
        .ok_or_else(|| format!("reads non-replicated table {table}"))?;
    let reference = quote(alias.map_or(&table, |a| &a.value));
    let columns = table_columns(conn, &table)?;
    let filter = match &sel.selection {
        Some(w) => {
            if let Some(p) = row_problem(w) {
                return Err(p);
            }
            Some(w.to_string())
        }
        None => None,
    };
    let GroupByExpr::Expressions(group_exprs, modifiers) = &sel.group_by else {
        return Err("uses GROUP BY ALL".into());
    };
    if !modifiers.is_empty() {
        return Err("uses GROUP BY modifiers".into());
    }
    let distinct = match &sel.distinct {
        None => false,
        Some(Distinct::Distinct) => true,
        Some(_) => return Err("uses DISTINCT ON".into()),
    };
    let mut groups = Vec::new();
    let mut outputs = Vec::new();
    let mut aggs: Vec<AggFn> = Vec::new();
    let mut args: Vec<String> = Vec::new();
    let items: Vec<&Expr> = sel
        .projection
        .iter()
        .map(|p| match p {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Ok(e),
            _ => Err("selects * (with GROUP BY or aggregates)".to_string()),
        })
        .collect::<Result<_, _>>()?;
    let mut having = None;
    if distinct {
        if !group_exprs.is_empty() || sel.having.is_some() {
            return Err("uses DISTINCT with GROUP BY or HAVING".into());
        }
        for e in &items {
            if let Some(p) = row_problem(e) {
                return Err(p);
            }
            let sql = e.to_string();
            let i = match groups.iter().position(|g| *g == sql) {
                Some(i) => i,
                None => {
                    groups.push(sql);
                    groups.len() - 1
                }
            };
            outputs.push(Output::Group(i));
        }
        aggs.push(AggFn {
            kind: AggKind::CountStar,
            arg: None,
        });
    } else {
        let aliases: Vec<String> = sel
            .projection
            .iter()
            .filter_map(|p| match p {
                SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.to_ascii_lowercase()),
                _ => None,
            })
            .collect();
        for g in group_exprs {
            if matches!(g, Expr::Identifier(i) if aliases.contains(&i.value.to_ascii_lowercase())) {
                return Err("groups by a result column's alias".into());
            }
            if matches!(g, Expr::Value(_)) {
                return Err("groups by a result column number or a constant".into());
            }
            if let Some(p) = row_problem(g) {
                return Err(p);
            }
            groups.push(g.to_string());
        }
        for e in &items {
            let x = lift(e, &groups, &mut aggs, &mut args).map_err(|w| match w {
                Lift::Problem(p) => p,
                Lift::Column => {
                    format!("selects {e}, which is neither an aggregate nor a GROUP BY expression")
                }
                Lift::ComparesGroup => {
                    format!("compares a GROUP BY value in the result column {e}")
                }
            })?;
            let k = groups.len();
            outputs.push(match &x {
                Expr::Value(v) => match &v.value {
                    sqlparser::ast::Value::Placeholder(p) => {
                        let n: usize = p[1..].parse().map_err(|_| "bad placeholder")?;
                        if n <= k {
                            Output::Group(n - 1)
                        } else {
                            Output::Agg(n - k - 1)
                        }
                    }
                    _ => Output::Expr(format!("SELECT {x}")),
                },
                _ => Output::Expr(format!("SELECT {x}")),
            });
        }
        if let Some(h) = &sel.having {
            let x = lift(h, &groups, &mut aggs, &mut args).map_err(|w| match w {
                Lift::Problem(p) => p,
                Lift::Column => format!(
                    "uses HAVING {h}, which reads a column outside an aggregate and GROUP BY"
                ),
                Lift::ComparesGroup => format!("compares a GROUP BY value in HAVING {h}"),
            })?;
            having = Some(format!("SELECT CASE WHEN ({x}) THEN 1 ELSE 0 END"));
        }
        if aggs.is_empty() {
            return Err(if groups.is_empty() {
                "has no aggregate".into()
            } else {
                "uses GROUP BY without aggregates".into()
            });
        }
    }
    // count(*) is always kept: it tells when a group is empty.
    if !aggs.iter().any(|a| a.kind == AggKind::CountStar) {
        aggs.push(AggFn {
            kind: AggKind::CountStar,
            arg: None,
        });
    }
    let plan = AggPlan {
        table: table.to_ascii_lowercase(),
        table_sql: quote(&table),
        reference,
        pk,
        columns,
        filter,
        grouped: distinct || !groups.is_empty(),
        distinct,
        groups,
        aggs,
        args,
        outputs,
        having,
    };
    // SQLite must accept what the plan runs: otherwise re-run the query as written.
    for sql in
        [plan.scan_sql(&plan.table_sql, "")]
            .into_iter()
            .chain(plan.outputs.iter().filter_map(|o| match o {
                Output::Expr(s) => Some(s.clone()),
                _ => None,
            }))
    {
        conn.prepare(&sql)
            .map_err(|e| format!("cannot be evaluated row by row ({e})"))?;
    }
    Ok(plan)
}

/// Columns and declared types of `table`; refuses tables whose schema uses `COLLATE` or has
/// hidden (generated) columns.
fn table_columns(conn: &Connection, table: &str) -> Result<Vec<(String, String)>, String> {
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
            [table],
            |r| r.get(0),
        )
        .map_err(|e| format!("cannot read the schema of {table}: {e}"))?;
    if sql.to_ascii_lowercase().contains("collate") {
        return Err(format!("table {table} declares a collation"));
    }
    let mut stmt = conn
        .prepare("SELECT name, type, hidden FROM pragma_table_xinfo(?1)")
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([table], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for r in rows {
        let (name, ty, hidden) = r.map_err(|e| e.to_string())?;
        if hidden != 0 {
            return Err(format!("table {table} has generated or hidden columns"));
        }
        out.push((name, ty));
    }
    Ok(out)
}

impl AggPlan {
    /// Per row of `src` (a table shaped like the plan's): `1`, the group values, then the
    /// aggregate arguments; restricted by the query's filter and `extra` (SQL, may be empty).
    pub fn scan_sql(&self, src: &str, extra: &str) -> String {
        let mut cols = vec!["1".to_string()];
        cols.extend(self.groups.iter().cloned());
        cols.extend(self.args.iter().cloned());
        let mut conds: Vec<String> = self.filter.iter().map(|f| format!("({f})")).collect();
        if !extra.is_empty() {
            conds.push(extra.to_string());
        }
        let mut sql = format!(
            "SELECT {} FROM {src} AS {}",
            cols.join(", "),
            self.reference
        );
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql
    }

    /// The rows of one primary key (bound as `?1..`).
    pub fn by_key_sql(&self) -> String {
        let cond = crate::analyze::key_condition(&self.reference, &self.pk);
        self.scan_sql(&self.table_sql, &cond)
    }

    /// The rows of one group (group values bound as `?1..`).
    pub fn by_group_sql(&self) -> String {
        let cond = self
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| format!("({g}) IS ?{}", i + 1))
            .collect::<Vec<_>>()
            .join(" AND ");
        self.scan_sql(&self.table_sql, &cond)
    }

    /// The values SQLite shows for one group (group values bound as `?1..`): asked only when
    /// the group's rows hold equal values of different types, where the choice is SQLite's.
    pub fn group_values_sql(&self) -> String {
        let groups = self.groups.join(", ");
        let mut conds: Vec<String> = self.filter.iter().map(|f| format!("({f})")).collect();
        for (i, g) in self.groups.iter().enumerate() {
            conds.push(format!("({g}) IS ?{}", i + 1));
        }
        let (distinct, group_by) = if self.distinct {
            ("DISTINCT ", String::new())
        } else {
            ("", format!(" GROUP BY {groups}"))
        };
        format!(
            "SELECT {distinct}{groups} FROM {} AS {} WHERE {}{group_by}",
            self.table_sql,
            self.reference,
            conds.join(" AND ")
        )
    }

    /// The TEMP table that holds before-images on a connection (one per table shape).
    pub fn image_table(&self) -> String {
        format!(
            "temp.{}",
            quote(&format!("vd_img_{}_{}", self.table, self.columns.len()))
        )
    }

    pub fn create_image_table_sql(&self) -> String {
        let cols = self
            .columns
            .iter()
            .map(|(n, t)| format!("{} {}", quote(n), t))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "CREATE TEMP TABLE IF NOT EXISTS {} ({cols})",
            self.image_table()
        )
    }

    pub fn describe(&self) -> String {
        if self.aggs.len() == 1 && self.outputs.iter().all(|o| matches!(o, Output::Group(_))) {
            format!(
                "incremental (DISTINCT tuples of {} with counts)",
                self.table
            )
        } else {
            format!(
                "incremental (aggregates over {}, {} group expression(s))",
                self.table,
                self.groups.len()
            )
        }
    }
}
