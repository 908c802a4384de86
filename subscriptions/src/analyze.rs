//! Query analysis: validation, parameter inlining, dependencies and plan choice.

use crate::stmt::{Params, Statement};
use rusqlite::types::Value;
use rusqlite::Connection;
use sqlparser::ast::{
    visit_expressions, visit_expressions_mut, visit_relations, Expr, FunctionArguments, Ident,
    JoinConstraint, JoinOperator, ObjectName, ObjectNamePart, Query, Select, SelectItem, SetExpr,
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
    /// All column names of a replicated table (`None`: unknown; the engine is then conservative).
    fn columns(&self, _table: &str) -> Option<Vec<String>> {
        None
    }
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
    /// Incremental: aggregates or DISTINCT over one table, kept per group from the changed
    /// rows' before- and after-images (see [`crate::aggregate`]).
    Aggregate {
        plan: std::sync::Arc<crate::aggregate::plan::AggPlan>,
    },
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
            Plan::Aggregate { plan } => plan.describe(),
            Plan::Recompute { reason } => format!("re-run and diff ({reason})"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Analysis {
    /// The query as written, parameters inlined (or as written, if it could not be parsed):
    /// what is stored, restored and shown.
    pub sql: String,
    /// What re-run plans execute: the client's statement with its parameters (keyed plans:
    /// `query` as SQL, without parameters).
    pub exec: Statement,
    /// Normalized text: the dedupe key (same query, different spacing or keyword case → same key).
    pub normalized: String,
    /// Lower-cased names of the replicated tables the query reads (FROM, JOINs, subqueries, CTE bodies).
    pub tables: BTreeSet<String>,
    pub columns: Vec<String>,
    pub plan: Plan,
    /// The parsed query with parameters inlined (`None` when re-run verbatim).
    pub query: Option<Query>,
    /// Set when the query belongs to a parameter family (see [`crate::family`]).
    pub family: Option<crate::family::FamilyInfo>,
    /// Set for an `ORDER BY … LIMIT` over one table: kept by a window slid by the changed rows,
    /// re-run only when the window cannot say the result (see [`crate::topk`]).
    pub topk: Option<std::sync::Arc<crate::topk::TopKPlan>>,
}

/// `reference.k1 = ?1 AND reference.k2 = ?2 …`: one row by its primary key `pk`.
pub(crate) fn key_condition(reference: &str, pk: &[String]) -> String {
    pk.iter()
        .enumerate()
        .map(|(i, c)| format!("{reference}.{} = ?{}", quote(c), i + 1))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The one plain table a `SELECT` reads — no join, subquery, table-valued function, index
/// hint, schema name or column renames — as its name and its alias, if any.
pub(crate) fn one_table(sel: &Select) -> Result<(&Ident, Option<&Ident>), &'static str> {
    let [twj] = sel.from.as_slice() else {
        return Err("does not read exactly one table");
    };
    if !twj.joins.is_empty() {
        return Err("uses joins");
    }
    let TableFactor::Table {
        name,
        alias,
        args: None,
        with_hints,
        index_hints,
        ..
    } = &twj.relation
    else {
        return Err("reads from a subquery or table-valued function");
    };
    if !with_hints.is_empty() || !index_hints.is_empty() {
        return Err("uses index hints");
    }
    let [ObjectNamePart::Identifier(table)] = name.0.as_slice() else {
        return Err("names a table with its schema");
    };
    match alias {
        Some(a) if !a.columns.is_empty() => Err("renames the table's columns"),
        a => Ok((table, a.as_ref().map(|a| &a.name))),
    }
}

/// Aggregate functions besides `min`/`max` (which are aggregates with one argument): a query
/// using one is not select-project-join.
pub(crate) const AGGREGATES: &[&str] = &[
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

/// A function's name as SQLite resolves it: unquoted (`"count"(*)` is `count`), lower-case.
pub(crate) fn function_name(f: &sqlparser::ast::Function) -> String {
    ident_of(&f.name)
        .unwrap_or_else(|| f.name.to_string())
        .to_ascii_lowercase()
}

/// Whether a call is an aggregate: one of [`AGGREGATES`], or `min`/`max` with one argument.
pub(crate) fn is_aggregate(f: &sqlparser::ast::Function) -> bool {
    let name = function_name(f);
    let nargs = match &f.args {
        FunctionArguments::List(l) => l.args.len(),
        _ => 0,
    };
    AGGREGATES.contains(&name.as_str()) || (matches!(name.as_str(), "min" | "max") && nargs == 1)
}

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
    // SQLite itself validates the statement as written: tables, columns, functions, parameters.
    let mut prepared = conn.prepare(&stmt.sql).map_err(|e| match e {
        rusqlite::Error::MultipleStatement => {
            SubError("a subscription takes exactly one SELECT statement".into())
        }
        e => SubError(e.to_string()),
    })?;
    let first_word = stmt
        .sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    if !prepared.readonly()
        || prepared.column_count() == 0
        || !matches!(first_word.as_str(), "SELECT" | "WITH" | "VALUES")
    {
        return err("subscriptions only accept SELECT queries");
    }
    crate::stmt::bind(&mut prepared, &stmt.params).map_err(SubError)?;
    // Column names as SQLite reports them for the query as written (what /v1/queries shows).
    let columns: Vec<String> = prepared
        .column_names()
        .iter()
        .map(|c| c.to_string())
        .collect();
    drop(prepared);
    let mut tables = read_tables(conn, &stmt.sql, schema)?;

    // The rewriting plans work on sqlparser's AST printed back to SQL; use them only when that
    // round trip is faithful. Otherwise the query is re-run verbatim with its parameters.
    let verbatim = |reason: String, tables: BTreeSet<String>| -> Result<Analysis, SubError> {
        if tables.is_empty() {
            return err("the query reads no replicated table, so it would never change; query it with /v1/queries instead");
        }
        Ok(Analysis {
            sql: stmt.sql.clone(),
            exec: stmt.clone(),
            normalized: format!("{}\u{0}{:?}", stmt.sql.trim(), stmt.params),
            tables,
            columns: columns.clone(),
            plan: Plan::Recompute { reason },
            query: None,
            family: None,
            topk: None,
        })
    };
    let mut asts = match Parser::parse_sql(&SQLiteDialect {}, &stmt.sql) {
        Ok(a) if a.len() == 1 && matches!(a[0], Ast::Query(_)) => a,
        Ok(_) => return err("subscriptions only accept one SELECT query"),
        Err(_) => {
            return verbatim(
                "uses SQLite syntax the rewriter does not handle; re-run as written".into(),
                tables,
            )
        }
    };
    if let Some(why) = unfaithful_literals(&stmt.sql) {
        return verbatim(why, tables);
    }
    let mut ast = asts.pop().expect("one statement");
    inline_params(&mut ast, &stmt.params)?;
    let sql = ast.to_string();
    match conn.prepare(&sql) {
        Ok(p) if p.parameter_count() == 0 && p.column_count() == columns.len() => {}
        _ => {
            return verbatim(
                "its parameters or syntax cannot be rewritten safely; re-run as written".into(),
                tables,
            )
        }
    }
    let Ast::Query(query) = ast else {
        unreachable!("checked above")
    };
    let mut ctes = BTreeSet::new();
    collect_ctes(&query, &mut ctes);
    let mut problem = None;
    let _ = visit_relations(&*query, |name| {
        if let Some(t) = ident_of(name) {
            let lower = t.to_ascii_lowercase();
            if !ctes.contains(&lower) && problem.is_none() {
                if schema.primary_key(&t).is_some() {
                    tables.insert(lower);
                } else if !is_table_function(&lower) && !is_local_table(conn, &t) {
                    problem = Some(format!("table {t} does not exist"));
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
    let plan = choose_plan(conn, &query, schema);
    let normalized = normalize(&query);
    // `x IN (SELECT pk …)` filters become joins, so the keyed plan maintains them. `sql`
    // stays the query as the client wrote it (what is stored and restored, and shown).
    let (plan, query) = match plan {
        Plan::Recompute { .. } => match semi_joined(conn, &query, schema, columns.len()) {
            Some((q, sources)) => (Plan::Keyed { sources }, Box::new(q)),
            None => (plan, query),
        },
        plan => (plan, query),
    };
    let family = match &plan {
        Plan::Keyed { sources } => {
            let refs: Vec<String> = sources.iter().map(|s| s.reference.clone()).collect();
            crate::family::detect(conn, &query, &refs, normalize)
        }
        Plan::Aggregate { .. } | Plan::Recompute { .. } => None,
    };
    let topk = match &plan {
        Plan::Recompute { .. } => {
            crate::topk::detect(conn, &query, schema).map(std::sync::Arc::new)
        }
        _ => None,
    };
    let plan = match (plan, &topk) {
        (Plan::Recompute { reason }, Some(_)) => Plan::Recompute {
            reason: format!(
                "{reason}; kept by sliding its ORDER BY … LIMIT window, re-run only to refill it or at a tie"
            ),
        },
        (plan, _) => plan,
    };
    // Re-run plans execute the query exactly as the client wrote it.
    let exec = match plan {
        Plan::Keyed { .. } => Statement::new(query.to_string()),
        Plan::Aggregate { .. } => Statement::new(sql.clone()),
        Plan::Recompute { .. } => stmt.clone(),
    };
    Ok(Analysis {
        sql,
        exec,
        normalized,
        tables,
        columns,
        plan,
        query: Some(*query),
        family,
        topk,
    })
}

/// Numeric literals sqlparser reads differently from SQLite (hex, digit separators).
fn unfaithful_literals(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
            }
            b'[' => {
                while i < b.len() && b[i] != b']' {
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            c if c.is_ascii_digit()
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.')
                {
                    i += 1;
                }
                let lit = &sql[start..i];
                if lit.contains('_') || lit.starts_with("0x") || lit.starts_with("0X") {
                    return Some(format!("uses the numeric literal {lit}; re-run as written"));
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether `name` is an existing (non-replicated) table or view of the database.
fn is_local_table(conn: &Connection, name: &str) -> bool {
    conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type IN ('table', 'view') AND name = ?1 COLLATE NOCASE",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .unwrap_or(false)
}

/// Every table SQLite opens to run `sql` (from its bytecode: `OpenRead` root pages), as the
/// replicated tables it depends on; a non-replicated table is an error.
fn read_tables(
    conn: &Connection,
    sql: &str,
    schema: &dyn Schema,
) -> Result<BTreeSet<String>, SubError> {
    let mut pages: BTreeSet<i64> = BTreeSet::new();
    let mut stmt = conn
        .prepare(&format!("EXPLAIN {sql}"))
        .map_err(|e| SubError(e.to_string()))?;
    let mut rows = stmt.raw_query();
    while let Ok(Some(r)) = rows.next() {
        let op: String = r.get(1).unwrap_or_default();
        if op == "OpenRead" {
            if let Ok(p2) = r.get::<_, i64>(3) {
                pages.insert(p2);
            }
        }
    }
    drop(rows);
    drop(stmt);
    let mut out = BTreeSet::new();
    for page in pages {
        let name: Option<String> = conn
            .query_row(
                "SELECT tbl_name FROM sqlite_schema WHERE rootpage = ?1",
                [page],
                |r| r.get(0),
            )
            .ok();
        let Some(name) = name else { continue };
        if schema.primary_key(&name).is_some() {
            out.insert(name.to_ascii_lowercase());
        } else if !name.to_ascii_lowercase().starts_with("sqlite_") {
            return err(format!(
                "table {name} is not a replicated table (not in the schema files); subscriptions can only follow replicated tables"
            ));
        }
    }
    Ok(out)
}

fn is_table_function(name: &str) -> bool {
    matches!(
        name,
        "json_each" | "json_tree" | "jsonb_each" | "jsonb_tree" | "generate_series"
    ) || name.starts_with("pragma_")
}

/// Names of every CTE the query defines, at any depth (a `WITH` may sit in a subquery of an
/// expression, a `FROM` subquery or another CTE).
fn collect_ctes(q: &Query, out: &mut BTreeSet<String>) {
    struct Ctes<'a>(&'a mut BTreeSet<String>);
    impl sqlparser::ast::Visitor for Ctes<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if let Some(w) = &q.with {
                for c in &w.cte_tables {
                    self.0.insert(c.alias.name.value.to_ascii_lowercase());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = sqlparser::ast::Visit::visit(q, &mut Ctes(out));
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

/// `q` with its `IN (SELECT pk …)` and `EXISTS` filters over a key as joins
/// ([`crate::semijoin`]), if that makes it a select-project-join query SQLite accepts with
/// the same number of columns.
fn semi_joined(
    conn: &Connection,
    q: &Query,
    schema: &dyn Schema,
    columns: usize,
) -> Option<(Query, Vec<Source>)> {
    let rewritten = crate::semijoin::rewrite(q, schema, &|t| rowid_key(conn, t))?;
    let sources = keyed_sources(&rewritten, schema).ok()?;
    let p = conn.prepare(&rewritten.to_string()).ok()?;
    (p.parameter_count() == 0 && p.column_count() == columns).then_some((rewritten, sources))
}

/// Whether `table`'s primary key is its rowid: one `INTEGER PRIMARY KEY` column of a rowid
/// table (a `WITHOUT ROWID` table's key, like any other key, has an index of origin `pk`).
fn rowid_key(conn: &Connection, table: &str) -> bool {
    let check = || -> rusqlite::Result<bool> {
        let pk_types: Vec<String> = conn
            .prepare("SELECT type FROM pragma_table_info(?1) WHERE pk > 0")?
            .query_map([table], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let pk_index: bool = conn
            .prepare("SELECT count(*) > 0 FROM pragma_index_list(?1) WHERE origin = 'pk'")?
            .query_row([table], |r| r.get(0))?;
        Ok(matches!(pk_types.as_slice(), [t] if t.eq_ignore_ascii_case("INTEGER")) && !pk_index)
    };
    // A failed look-up only means the rewrite is not used: the query is re-run instead.
    check().unwrap_or(false)
}

/// Keyed maintenance applies to plain select-project-join queries, aggregate maintenance to
/// aggregates and DISTINCT over one table; everything else is re-run.
fn choose_plan(conn: &Connection, q: &Query, schema: &dyn Schema) -> Plan {
    let keyed = match keyed_sources(q, schema) {
        Ok(sources) => return Plan::Keyed { sources },
        Err(reason) => reason,
    };
    match crate::aggregate::plan::detect(conn, q, schema) {
        Ok(plan) => Plan::Aggregate {
            plan: std::sync::Arc::new(plan),
        },
        // Say why the aggregate plan does not apply when that is the kind of query it is.
        Err(reason)
            if ["uses the aggregate", "uses GROUP BY", "uses DISTINCT"]
                .iter()
                .any(|p| keyed.starts_with(p)) =>
        {
            Plan::Recompute { reason }
        }
        Err(_) => Plan::Recompute { reason: keyed },
    }
}

/// The first LEFT-joined source whose columns the WHERE clause may read.
fn where_touches_nullable(w: &Expr, sources: &[Source], schema: &dyn Schema) -> Option<String> {
    let nullable: Vec<&Source> = sources.iter().filter(|s| s.nullable).collect();
    if nullable.is_empty() {
        return None;
    }
    let mut hit = None;
    let _ = visit_expressions(w, |e| {
        match e {
            Expr::CompoundIdentifier(ids) if ids.len() >= 2 => {
                let r = quote(&ids[ids.len() - 2].value);
                if let Some(s) = nullable
                    .iter()
                    .find(|s| s.reference.eq_ignore_ascii_case(&r))
                {
                    hit = Some(s.table.clone());
                }
            }
            Expr::Identifier(id) => {
                for s in &nullable {
                    let may = match schema.columns(&s.table) {
                        Some(cols) => cols.iter().any(|c| c.eq_ignore_ascii_case(&id.value)),
                        None => true,
                    };
                    if may {
                        hit = Some(s.table.clone());
                    }
                }
            }
            _ => {}
        }
        if hit.is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    hit
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
    // A WHERE predicate on a LEFT-joined table can hide a root's rows while the root is still
    // joined; the materialization then cannot tell which roots a change to that table affects.
    if let Some(w) = &sel.selection {
        if let Some(t) = where_touches_nullable(w, &sources, schema) {
            return Err(format!("filters on the LEFT-joined table {t} in WHERE"));
        }
    }
    // No subqueries, aggregates or window functions anywhere in the statement.
    let mut reason = None;
    let _ = visit_expressions(q, |e| {
        match e {
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                reason = Some("uses a subquery".to_string())
            }
            Expr::Function(f) => {
                if f.over.is_some() {
                    reason = Some("uses window functions".into());
                } else if is_aggregate(f) {
                    reason = Some(format!("uses the aggregate {}()", function_name(f)));
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
