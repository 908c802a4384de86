//! Query analysis: validation, parameter inlining, dependencies and plan choice.

use crate::stmt::{Params, Statement};
use rusqlite::types::Value;
use rusqlite::Connection;
use sqlparser::ast::{
    visit_expressions, visit_expressions_mut, visit_relations, Expr, FunctionArguments,
    JoinConstraint, JoinOperator, ObjectName, ObjectNamePart, Query, SelectItem, SetExpr,
    Statement as Ast, TableFactor,
};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;
use std::collections::BTreeSet;
use std::ops::ControlFlow;

/// What the engine needs to know about the database schema.
pub trait Schema {
    /// Primary-key column names of a replicated table (`None`: not a replicated table).
    fn primary_key(&self, table: &str) -> Option<Vec<String>>;
}

/// A query the engine refuses, with a message for the client (an HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SubError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, SubError> {
    Err(SubError(msg.into()))
}

/// One table occurrence in the FROM clause of a keyed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub table: String,
    /// How the query refers to it (alias or name), quoted for SQL.
    pub reference: String,
    pub pk: Vec<String>,
    /// Joined with LEFT JOIN (its columns may be NULL-extended).
    pub nullable: bool,
}

/// How a subscription is maintained.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Incremental: re-evaluate the root rows related to changed keys.
    Keyed { sources: Vec<Source> },
    /// Re-run the query and diff, because of `reason`.
    Recompute { reason: String },
}

impl Plan {
    pub fn describe(&self) -> String {
        match self {
            Plan::Keyed { sources } => format!(
                "incremental (keyed by the primary keys of {}; root {})",
                sources
                    .iter()
                    .map(|s| s.table.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                sources[0].table
            ),
            Plan::Recompute { reason } => format!("re-run and diff ({reason})"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Analysis {
    /// The query with parameters inlined as literals (what is executed).
    pub sql: String,
    /// Normalized text: the dedupe key (same query, different spacing or keyword case → same key).
    pub normalized: String,
    /// Lower-cased names of the replicated tables the query reads (FROM, JOINs, subqueries, CTE bodies).
    pub tables: BTreeSet<String>,
    pub columns: Vec<String>,
    pub plan: Plan,
    /// The parsed query with parameters inlined.
    pub query: Query,
}

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "total",
    "avg",
    "group_concat",
    "string_agg",
    "json_group_array",
    "json_group_object",
    "jsonb_group_array",
    "jsonb_group_object",
    "median",
    "percentile",
    "percentile_cont",
    "percentile_disc",
];

fn ident_of(name: &ObjectName) -> Option<String> {
    match name.0.last()? {
        ObjectNamePart::Identifier(i) => Some(i.value.clone()),
        _ => None,
    }
}

pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// SQL literal for a value.
pub fn literal(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) if f.is_finite() => {
            let s = format!("{f:?}");
            if s.contains(['.', 'e', 'E']) {
                s
            } else {
                format!("{s}.0")
            }
        }
        Value::Real(_) => "NULL".into(),
        Value::Text(s) => format!("'{}'", s.replace('\'', "''")),
        Value::Blob(b) => format!(
            "X'{}'",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    }
}

/// Replaces parameters with literals, following SQLite's numbering (`?` = next, `?N`, `:name`…).
fn inline_params(stmt: &mut Ast, params: &Params) -> Result<(), SubError> {
    let mut next = 0usize;
    let mut failure: Option<String> = None;
    let _ = visit_expressions_mut(stmt, |e| {
        if let Expr::Value(v) = e {
            if let sqlparser::ast::Value::Placeholder(p) = &v.value {
                let value = match (p.as_str(), params) {
                    ("?", Params::Positional(vs)) => {
                        next += 1;
                        vs.get(next - 1).cloned()
                    }
                    (p, Params::Positional(vs)) if p.starts_with('?') => {
                        let n: usize = p[1..].parse().unwrap_or(0);
                        next = next.max(n);
                        n.checked_sub(1).and_then(|i| vs.get(i)).cloned()
                    }
                    (p, Params::Named(named)) => {
                        named.iter().find(|(k, _)| k == p).map(|(_, v)| v.clone())
                    }
                    _ => None,
                };
                match value {
                    Some(v) => match Parser::new(&SQLiteDialect {})
                        .try_with_sql(&literal(&v))
                        .and_then(|mut p| p.parse_expr())
                    {
                        Ok(lit) => *e = lit,
                        Err(er) => failure = Some(er.to_string()),
                    },
                    None => failure = Some(format!("no value given for parameter {p}")),
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    match failure {
        Some(f) => err(f),
        None => Ok(()),
    }
}

/// Analyzes a subscription query. `conn` is a read connection used to validate it with SQLite.
pub fn analyze(
    conn: &Connection,
    stmt: &Statement,
    schema: &dyn Schema,
) -> Result<Analysis, SubError> {
    let mut asts = Parser::parse_sql(&SQLiteDialect {}, &stmt.sql)
        .map_err(|e| SubError(format!("query does not parse: {e}")))?;
    if asts.len() != 1 {
        return err("a subscription takes exactly one SELECT statement");
    }
    let mut ast = asts.pop().expect("one statement");
    if !matches!(ast, Ast::Query(_)) {
        return err("subscriptions only accept SELECT queries");
    }
    inline_params(&mut ast, &stmt.params)?;
    let sql = ast.to_string();
    // SQLite validates tables, columns and functions, and tells us the column names.
    let prepared = conn.prepare(&sql).map_err(|e| SubError(e.to_string()))?;
    if !prepared.readonly() {
        return err("subscriptions only accept read-only SELECT queries");
    }
    let columns: Vec<String> = prepared
        .column_names()
        .iter()
        .map(|c| c.to_string())
        .collect();
    drop(prepared);
    let Ast::Query(query) = ast else {
        unreachable!("checked above")
    };
    let mut ctes = BTreeSet::new();
    let _ = sqlparser::ast::visit_statements(&Ast::Query(query.clone()), |_| {
        ControlFlow::<()>::Continue(())
    });
    collect_ctes(&query, &mut ctes);
    let mut tables = BTreeSet::new();
    let mut problem = None;
    let _ = visit_relations(&*query, |name| {
        if let Some(t) = ident_of(name) {
            let lower = t.to_ascii_lowercase();
            if !ctes.contains(&lower) && problem.is_none() {
                if schema.primary_key(&t).is_some() {
                    tables.insert(lower);
                } else if !is_table_function(&lower) {
                    problem = Some(format!(
                        "table {t} is not a replicated table (not in the schema files); subscriptions can only follow replicated tables"
                    ));
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if let Some(p) = problem {
        return err(p);
    }
    if tables.is_empty() {
        return err("the query reads no replicated table, so it would never change; query it with /v1/queries instead");
    }
    let plan = choose_plan(&query, schema);
    let normalized = normalize(&query);
    Ok(Analysis {
        sql,
        normalized,
        tables,
        columns,
        plan,
        query: *query,
    })
}

fn is_table_function(name: &str) -> bool {
    matches!(
        name,
        "json_each" | "json_tree" | "jsonb_each" | "jsonb_tree" | "generate_series"
    ) || name.starts_with("pragma_")
}

fn collect_ctes(q: &Query, out: &mut BTreeSet<String>) {
    if let Some(w) = &q.with {
        for c in &w.cte_tables {
            out.insert(c.alias.name.value.to_ascii_lowercase());
            collect_ctes(&c.query, out);
        }
    }
}

/// Dedupe key: the AST printed back with unquoted identifiers lower-cased.
fn normalize(q: &Query) -> String {
    let mut q = q.clone();
    let _ = sqlparser::ast::visit_expressions_mut(&mut q, |e| {
        match e {
            Expr::Identifier(i) if i.quote_style.is_none() => {
                i.value = i.value.to_ascii_lowercase()
            }
            Expr::CompoundIdentifier(ids) => {
                for i in ids.iter_mut().filter(|i| i.quote_style.is_none()) {
                    i.value = i.value.to_ascii_lowercase();
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    let _ = sqlparser::ast::visit_relations_mut(&mut q, |name| {
        for part in name.0.iter_mut() {
            if let ObjectNamePart::Identifier(i) = part {
                if i.quote_style.is_none() {
                    i.value = i.value.to_ascii_lowercase();
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    q.to_string()
}

/// Keyed maintenance applies to plain select-project-join queries.
fn choose_plan(q: &Query, schema: &dyn Schema) -> Plan {
    match keyed_sources(q, schema) {
        Ok(sources) => Plan::Keyed { sources },
        Err(reason) => Plan::Recompute { reason },
    }
}

fn keyed_sources(q: &Query, schema: &dyn Schema) -> Result<Vec<Source>, String> {
    if q.with.is_some() {
        return Err("uses a WITH clause".into());
    }
    if q.limit_clause.is_some() || q.fetch.is_some() {
        return Err("uses LIMIT/OFFSET".into());
    }
    let SetExpr::Select(sel) = &*q.body else {
        return Err("is a compound select (UNION/INTERSECT/EXCEPT) or VALUES".into());
    };
    if sel.distinct.is_some() {
        return Err("uses DISTINCT".into());
    }
    let grouped = match &sel.group_by {
        sqlparser::ast::GroupByExpr::Expressions(e, m) => !e.is_empty() || !m.is_empty(),
        sqlparser::ast::GroupByExpr::All(_) => true,
    };
    if grouped || sel.having.is_some() {
        return Err("uses GROUP BY/HAVING".into());
    }
    if !sel.named_window.is_empty() {
        return Err("uses window functions".into());
    }
    if sel.from.len() != 1 {
        return Err(if sel.from.is_empty() {
            "has no FROM table".into()
        } else {
            "uses comma joins".into()
        });
    }
    let mut sources = Vec::new();
    let twj = &sel.from[0];
    let mut add = |tf: &TableFactor, nullable: bool| -> Result<(), String> {
        let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = tf
        else {
            return Err("reads from a subquery, nested join or table-valued function".into());
        };
        let table = ident_of(name).ok_or("has an unusual table name")?;
        let pk = schema
            .primary_key(&table)
            .ok_or_else(|| format!("reads non-replicated table {table}"))?;
        let reference = match alias {
            Some(a) => quote(&a.name.value),
            None => quote(&table),
        };
        sources.push(Source {
            table: table.to_ascii_lowercase(),
            reference,
            pk,
            nullable,
        });
        Ok(())
    };
    add(&twj.relation, false)?;
    for j in &twj.joins {
        let (nullable, constraint) = match &j.join_operator {
            JoinOperator::Join(c) | JoinOperator::Inner(c) | JoinOperator::CrossJoin(c) => {
                (false, c)
            }
            JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (true, c),
            _ => return Err("uses RIGHT, FULL or another join kind".into()),
        };
        if matches!(constraint, JoinConstraint::Natural) {
            return Err("uses a NATURAL join".into());
        }
        add(&j.relation, nullable)?;
    }
    let mut refs = BTreeSet::new();
    if !sources
        .iter()
        .all(|s| refs.insert(s.reference.to_ascii_lowercase()))
    {
        return Err("references the same table twice without distinct aliases".into());
    }
    // No subqueries, aggregates or window functions anywhere in the statement.
    let mut reason = None;
    let _ = visit_expressions(q, |e| {
        match e {
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                reason = Some("uses a subquery".to_string())
            }
            Expr::Function(f) => {
                let name = f.name.to_string().to_ascii_lowercase();
                let nargs = match &f.args {
                    FunctionArguments::List(l) => l.args.len(),
                    _ => 0,
                };
                if f.over.is_some() {
                    reason = Some("uses window functions".into());
                } else if AGGREGATES.contains(&name.as_str())
                    || (matches!(name.as_str(), "min" | "max") && nargs == 1)
                {
                    reason = Some(format!("uses the aggregate {name}()"));
                }
            }
            _ => {}
        }
        if reason.is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    if let Some(r) = reason {
        return Err(r);
    }
    if sel
        .projection
        .iter()
        .any(|p| matches!(p, SelectItem::Wildcard(_)))
        && sources.len() > 1
    {
        // `*` over joins is fine for SQLite; nothing to reject.
    }
    Ok(sources)
}
