//! `x IN (SELECT pk FROM t WHERE …)` and `EXISTS (SELECT … FROM t WHERE t.pk = x AND …)` as
//! inner joins, so that select-project-join maintenance ([`crate::keyed`]) applies instead of
//! a re-run.
//!
//! The rewrite is exact only when the subquery selects the whole primary key of its one
//! table and that key is the table's rowid (`INTEGER PRIMARY KEY`), so that each outer row
//! joins at most one row of it whatever the comparison's affinity and collation (a text key
//! can hold `'1'` and `'1.0'`, which one integer equals; a binary text key `'a'` and `'A'`,
//! which one `NOCASE` value equals): then
//! `o.x IN (SELECT t.pk FROM t WHERE c)` in the top-level conjunction of `WHERE` keeps the
//! same outer rows, once each, as `JOIN t AS __vd_inN ON o.x = __vd_inN.pk AND (c)`
//! (the comparison is written `x = pk`, the way SQLite compares for `IN`: the subquery
//! column's affinity, `x`'s collation). An `EXISTS` whose subquery's `WHERE` conjunction holds
//! `t.pk = x` (`x` a column of the outer table) and otherwise names only `t`'s columns is the
//! same filter, and its comparison already is `=`; it must select only names or literals (an
//! aggregate would yield a row whatever matched) and no result alias (found before an outer
//! column). Either way `c` must not be able to fail (only operators and functions that take
//! any value): joined, it may be evaluated on rows the subquery never read; and the rowid's
//! names (`rowid`, `oid`, `_rowid_`) are never taken for an outer column or allowed as a
//! result alias, since they resolve differently once there are two tables. Everything else
//! is left to the re-run
//! plan: `NOT IN`, `NOT EXISTS`, a subquery correlated any other way or that reads several
//! tables, groups, limits or nests subqueries,
//! and an outer query with joins or with result aliases that share a column's name (where
//! qualifying a name could change what it means).

use crate::analyze::Schema;
use sqlparser::ast::{
    visit_expressions_mut, BinaryOperator, Expr, Ident, Join, JoinConstraint, JoinOperator,
    ObjectName, ObjectNamePart, Query, Select, SelectItem, SelectItemQualifiedWildcardKind,
    SetExpr, TableAlias, TableFactor,
};
use std::ops::ControlFlow;

/// At most this many `IN`/`EXISTS` subqueries become joins (each adds a join to every round).
const MAX_JOINS: usize = 4;

/// The query with its qualifying `IN (SELECT pk …)` and `EXISTS` predicates turned into joins, or `None`
/// when there is none or the rewrite could change the result.
/// `rowid_key(table)` says whether the table's primary key is its rowid.
pub fn rewrite(q: &Query, schema: &dyn Schema, rowid_key: &dyn Fn(&str) -> bool) -> Option<Query> {
    if q.with.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
        return None;
    }
    let mut out = q.clone();
    let SetExpr::Select(sel) = &mut *out.body else {
        return None;
    };
    let (outer_ref, outer_cols) = single_table(sel, schema)?;
    // Split the WHERE conjunction into the predicates to turn into joins and the rest.
    let mut conjuncts = Vec::new();
    split_and(sel.selection.take()?, &mut conjuncts);
    let mut keep = Vec::new();
    let mut semis = Vec::new();
    for c in conjuncts {
        match c {
            Expr::InSubquery {
                expr,
                subquery,
                negated: false,
            } if semis.len() < MAX_JOINS => match semi(&subquery, schema, rowid_key) {
                Some(s) => semis.push((*expr, s)),
                None => keep.push(Expr::InSubquery {
                    expr,
                    subquery,
                    negated: false,
                }),
            },
            Expr::Exists {
                subquery,
                negated: false,
            } if semis.len() < MAX_JOINS => {
                match exists(&subquery, schema, rowid_key, &outer_ref, &outer_cols) {
                    Some((x, s)) => semis.push((x, s)),
                    None => keep.push(Expr::Exists {
                        subquery,
                        negated: false,
                    }),
                }
            }
            c => keep.push(c),
        }
    }
    if semis.is_empty() {
        return None;
    }
    // Result aliases that are also column names: qualifying such a name could change what
    // it refers to (SQLite resolves ORDER BY names to aliases first).
    // So are the rowid's names: one table's `oid` is its rowid, two tables' is the alias.
    let mut names: Vec<&str> = outer_cols.iter().map(String::as_str).collect();
    names.extend(ROWID_NAMES);
    for (_, s) in &semis {
        names.extend(s.columns.iter().map(String::as_str));
    }
    let clash = sel.projection.iter().any(|p| match p {
        SelectItem::ExprWithAlias { alias, .. } => {
            names.iter().any(|n| n.eq_ignore_ascii_case(&alias.value))
        }
        _ => false,
    });
    if clash {
        return None;
    }
    sel.selection = join_and(keep);
    // Qualify the outer query's column names before the joined tables come into scope.
    for p in &mut sel.projection {
        if let SelectItem::Wildcard(opts) = p {
            *p = SelectItem::QualifiedWildcard(
                SelectItemQualifiedWildcardKind::ObjectName(ObjectName(vec![
                    ObjectNamePart::Identifier(outer_ref.clone()),
                ])),
                opts.clone(),
            );
        }
    }
    let joined: Vec<&str> = semis
        .iter()
        .flat_map(|(_, s)| s.columns.iter().map(String::as_str))
        .collect();
    let mut bad = false;
    let mut qualify = |e: &mut Expr| {
        match e {
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => bad = true,
            Expr::Identifier(id) if has(&outer_cols, &id.value) => {
                *e = Expr::CompoundIdentifier(vec![outer_ref.clone(), id.clone()]);
            }
            // A name the outer table lacks would now find a joined table's column.
            Expr::Identifier(id) if has(&joined, &id.value) => bad = true,
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    };
    let _ = visit_expressions_mut(&mut out, &mut qualify);
    let mut lhs: Vec<Expr> = semis.iter().map(|(e, _)| e.clone()).collect();
    for e in &mut lhs {
        let _ = visit_expressions_mut(e, &mut qualify);
    }
    if bad {
        return None;
    }
    let SetExpr::Select(sel) = &mut *out.body else {
        unreachable!("checked above")
    };
    for (n, ((_, s), x)) in semis.into_iter().zip(lhs).enumerate() {
        let alias = Ident::new(format!("__vd_in{}", n + 1));
        let mut relation = s.relation;
        if let TableFactor::Table { alias: a, .. } = &mut relation {
            *a = Some(TableAlias {
                name: alias.clone(),
                columns: vec![],
            });
        }
        let mut on = Expr::BinaryOp {
            left: Box::new(x),
            op: BinaryOperator::Eq,
            right: Box::new(Expr::CompoundIdentifier(vec![alias.clone(), s.pk])),
        };
        if let Some(mut c) = s.filter {
            let _ = visit_expressions_mut(&mut c, |e: &mut Expr| {
                if let Expr::CompoundIdentifier(ids) = e {
                    ids[0] = alias.clone();
                }
                ControlFlow::<()>::Continue(())
            });
            on = Expr::BinaryOp {
                left: Box::new(on),
                op: BinaryOperator::And,
                right: Box::new(Expr::Nested(Box::new(c))),
            };
        }
        sel.from[0].joins.push(Join {
            relation,
            global: false,
            join_operator: JoinOperator::Join(JoinConstraint::On(on)),
        });
    }
    Some(out)
}

fn has<S: AsRef<str>>(names: &[S], name: &str) -> bool {
    names.iter().any(|n| n.as_ref().eq_ignore_ascii_case(name))
}

/// The outer query's one table (no joins): how its columns are qualified, and its columns.
fn single_table(sel: &Select, schema: &dyn Schema) -> Option<(Ident, Vec<String>)> {
    let (table, alias) = crate::analyze::one_table(sel).ok()?;
    schema.primary_key(&table.value)?;
    let cols = schema.columns(&table.value)?;
    Some((alias.unwrap_or(table).clone(), cols))
}

/// A subquery that selects the primary key of its one table.
struct Semi {
    relation: TableFactor,
    /// The key column, as the joined table's column name.
    pk: Ident,
    /// Its WHERE, every column qualified (the qualifier is replaced by the join's alias).
    filter: Option<Expr>,
    columns: Vec<String>,
}

/// The subquery's table when it is a plain one-table `SELECT` over a rowid-keyed table (no
/// grouping, ordering, limit or CTE): the table, how its columns are qualified, its key and
/// its columns.
struct Inner<'a> {
    sel: &'a Select,
    reference: Ident,
    pk: String,
    columns: Vec<String>,
}

fn inner<'a>(
    q: &'a Query,
    schema: &dyn Schema,
    rowid_key: &dyn Fn(&str) -> bool,
) -> Option<Inner<'a>> {
    if q.with.is_some() || q.limit_clause.is_some() || q.fetch.is_some() || q.order_by.is_some() {
        return None;
    }
    let SetExpr::Select(sel) = &*q.body else {
        return None;
    };
    let grouped = match &sel.group_by {
        sqlparser::ast::GroupByExpr::Expressions(e, m) => !e.is_empty() || !m.is_empty(),
        sqlparser::ast::GroupByExpr::All(_) => true,
    };
    if grouped || sel.having.is_some() || !sel.named_window.is_empty() || sel.top.is_some() {
        return None;
    }
    let (table, alias) = crate::analyze::one_table(sel).ok()?;
    let pk = schema.primary_key(&table.value)?;
    let [pk] = pk.as_slice() else {
        return None;
    };
    if !rowid_key(&table.value) {
        return None;
    }
    Some(Inner {
        sel,
        reference: alias.unwrap_or(table).clone(),
        pk: pk.clone(),
        columns: schema.columns(&table.value)?,
    })
}

impl Inner<'_> {
    fn is_ref(&self, q: &Ident) -> bool {
        q.value.eq_ignore_ascii_case(&self.reference.value)
    }

    /// The column of the subquery's own table that `e` names, if it names one (an
    /// unqualified name finds the subquery's table first, as in SQL).
    fn own_column<'e>(&self, e: &'e Expr) -> Option<&'e Ident> {
        match e {
            Expr::Identifier(id) if has(&self.columns, &id.value) => Some(id),
            Expr::CompoundIdentifier(ids)
                if ids.len() == 2 && self.is_ref(&ids[0]) && has(&self.columns, &ids[1].value) =>
            {
                Some(&ids[1])
            }
            _ => None,
        }
    }

    /// `filter` with every column qualified, or `None` when it names anything but the
    /// subquery table's own columns (correlated) or nests a subquery.
    fn own_filter(&self, filter: Option<Expr>) -> Option<Option<Expr>> {
        let Some(mut f) = filter else {
            return Some(None);
        };
        let mut ok = true;
        let _ = visit_expressions_mut(&mut f, |e: &mut Expr| {
            match e {
                Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => ok = false,
                Expr::Identifier(id) if has(&self.columns, &id.value) => {
                    *e = Expr::CompoundIdentifier(vec![self.reference.clone(), id.clone()]);
                }
                Expr::Identifier(_) => ok = false,
                Expr::CompoundIdentifier(_) if self.own_column(e).is_some() => {}
                Expr::CompoundIdentifier(_) => ok = false,
                _ => {}
            }
            if ok {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        });
        ok.then_some(Some(f))
    }

    fn into_semi(self, pk: Ident, filter: Option<Expr>) -> Semi {
        Semi {
            relation: self.sel.from[0].relation.clone(),
            pk,
            filter,
            columns: self.columns,
        }
    }
}

/// `x IN (SELECT pk FROM t WHERE c)` with `c` naming only `t`'s columns.
fn semi(q: &Query, schema: &dyn Schema, rowid_key: &dyn Fn(&str) -> bool) -> Option<Semi> {
    let inner = inner(q, schema, rowid_key)?;
    let [item] = inner.sel.projection.as_slice() else {
        return None;
    };
    let (SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) = item else {
        return None;
    };
    let key = inner.own_column(e)?.clone();
    if !key.value.eq_ignore_ascii_case(&inner.pk) {
        return None;
    }
    // Joined, the filter may run on rows the subquery never read (SQLite runs an `IN`
    // subquery only when a row needs it).
    if !inner.sel.selection.as_ref().is_none_or(cannot_fail) {
        return None;
    }
    let filter = inner.own_filter(inner.sel.selection.clone())?;
    Some(inner.into_semi(key, filter))
}

/// `EXISTS (SELECT … FROM t WHERE t.pk = x AND c)` where `x` is a column of the outer
/// table and `c` names only `t`'s columns: the same outer rows as `x IN (SELECT pk FROM t
/// WHERE c)` (both compare with `=`; a rowid key equals at most one row). Returns `x` too.
fn exists(
    q: &Query,
    schema: &dyn Schema,
    rowid_key: &dyn Fn(&str) -> bool,
    outer_ref: &Ident,
    outer_cols: &[String],
) -> Option<(Expr, Semi)> {
    let inner = inner(q, schema, rowid_key)?;
    // What it selects is never read, but an aggregate would make one row whatever matched,
    // and a result alias would be found before an outer column of the same name.
    let plain = inner.sel.projection.iter().all(|p| match p {
        SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => true,
        SelectItem::UnnamedExpr(e) => matches!(
            e,
            Expr::Value(_) | Expr::Identifier(_) | Expr::CompoundIdentifier(_)
        ),
        SelectItem::ExprWithAlias { .. } => false,
    });
    if !plain {
        return None;
    }
    // The filter runs only on the row the key finds, in the subquery; joined, it may run on
    // every row of `t`: it must not be able to fail where the subquery would not.
    if !inner.sel.selection.as_ref().is_some_and(cannot_fail) {
        return None;
    }
    // An outer column: a name the subquery's table lacks (not even as its rowid), or one
    // qualified by the outer table.
    let outer = |e: &Expr| match e {
        Expr::Identifier(id) => {
            !has(&inner.columns, &id.value)
                && !has(ROWID_NAMES, &id.value)
                && has(outer_cols, &id.value)
        }
        Expr::CompoundIdentifier(ids) => {
            ids.len() == 2
                && !inner.is_ref(&ids[0])
                && ids[0].value.eq_ignore_ascii_case(&outer_ref.value)
                && has(outer_cols, &ids[1].value)
        }
        _ => false,
    };
    let key = |e: &Expr| {
        inner
            .own_column(e)
            .filter(|c| c.value.eq_ignore_ascii_case(&inner.pk))
            .cloned()
    };
    let mut conjuncts = Vec::new();
    split_and(inner.sel.selection.clone()?, &mut conjuncts);
    let mut link = None;
    let mut rest = Vec::new();
    for c in conjuncts {
        if link.is_none() {
            if let Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } = &c
            {
                let linked = match (key(left), key(right)) {
                    (Some(k), _) if outer(right) => Some((k, (**right).clone())),
                    (_, Some(k)) if outer(left) => Some((k, (**left).clone())),
                    _ => None,
                };
                if linked.is_some() {
                    link = linked;
                    continue;
                }
            }
        }
        rest.push(c);
    }
    let (pk, x) = link?;
    let filter = inner.own_filter(join_and(rest))?;
    Some((x, inner.into_semi(pk, filter)))
}

/// Names SQLite resolves to a table's rowid when no column has them.
const ROWID_NAMES: &[&str] = &["rowid", "oid", "_rowid_"];

/// Scalar functions that return a value for any arguments (no error), allowed in a filter
/// that the rewrite may evaluate on more rows than the query did.
const TOTAL_FUNCTIONS: &[&str] = &[
    "lower",
    "upper",
    "length",
    "coalesce",
    "ifnull",
    "nullif",
    "typeof",
    "trim",
    "ltrim",
    "rtrim",
    "instr",
    "substr",
    "substring",
    "replace",
    "iif",
];

/// Whether `e` cannot raise an error for any row: only columns, literals, operators and
/// [`TOTAL_FUNCTIONS`] (SQLite's arithmetic does not fail: overflow becomes a real, division
/// by zero NULL), no `LIKE … ESCAPE` (a bad escape fails) and no subquery (refused anyway).
fn cannot_fail(e: &Expr) -> bool {
    let mut ok = true;
    let _ = sqlparser::ast::visit_expressions(e, |e: &Expr| {
        match e {
            Expr::Function(f) => {
                let name = crate::analyze::function_name(f);
                ok &= has(TOTAL_FUNCTIONS, &name)
                    && matches!(f.args, sqlparser::ast::FunctionArguments::List(_))
                    && f.filter.is_none()
                    && f.over.is_none()
            }
            Expr::Like { escape_char, .. } | Expr::ILike { escape_char, .. } => {
                ok &= escape_char.is_none()
            }
            Expr::Cast { .. } | Expr::Collate { .. } => {}
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => ok = false,
            _ => {}
        }
        if ok {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    });
    ok
}

fn split_and(e: Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            split_and(*left, out);
            split_and(*right, out);
        }
        Expr::Nested(inner)
            if matches!(
                *inner,
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            split_and(*inner, out)
        }
        e => out.push(e),
    }
}

fn join_and(mut es: Vec<Expr>) -> Option<Expr> {
    let first = if es.is_empty() {
        return None;
    } else {
        es.remove(0)
    };
    Some(es.into_iter().fold(first, |acc, e| Expr::BinaryOp {
        left: Box::new(acc),
        op: BinaryOperator::And,
        right: Box::new(e),
    }))
}

#[cfg(test)]
mod tests {
    use super::rewrite;
    use crate::analyze::Schema;
    use sqlparser::ast::Statement as Ast;
    use sqlparser::dialect::SQLiteDialect;
    use sqlparser::parser::Parser;

    struct Fleet;
    impl Schema for Fleet {
        fn primary_key(&self, table: &str) -> Option<Vec<String>> {
            match table {
                "machines" | "apps" | "texts" | "items" => Some(vec!["id".into()]),
                "pairs" => Some(vec!["a".into(), "b".into()]),
                _ => None,
            }
        }
        fn columns(&self, table: &str) -> Option<Vec<String>> {
            let c: &[&str] = match table {
                "machines" => &["id", "app_id", "cpu"],
                "apps" | "texts" => &["id", "name"],
                "items" => &["id", "oid"],
                "pairs" => &["a", "b"],
                _ => return None,
            };
            Some(c.iter().map(|s| s.to_string()).collect())
        }
    }

    fn rw(sql: &str) -> Option<String> {
        let Ast::Query(q) = Parser::parse_sql(&SQLiteDialect {}, sql).unwrap().remove(0) else {
            panic!("a query")
        };
        rewrite(&q, &Fleet, &|t| t != "texts").map(|q| q.to_string())
    }

    #[test]
    fn in_over_a_key_becomes_a_join_with_every_name_qualified() {
        assert_eq!(
            rw("SELECT id, cpu FROM machines WHERE cpu > 1 AND app_id IN (SELECT id FROM apps WHERE name = 'a7') ORDER BY id").as_deref(),
            Some("SELECT machines.id, machines.cpu FROM machines JOIN apps AS __vd_in1 ON machines.app_id = __vd_in1.id AND (__vd_in1.name = 'a7') WHERE machines.cpu > 1 ORDER BY machines.id")
        );
        assert_eq!(
            rw("SELECT * FROM machines m WHERE m.app_id IN (SELECT a.id FROM apps a)").as_deref(),
            Some("SELECT m.* FROM machines AS m JOIN apps AS __vd_in1 ON m.app_id = __vd_in1.id")
        );
    }

    #[test]
    fn exists_over_a_key_correlated_by_it_becomes_the_same_join() {
        assert_eq!(
            rw("SELECT id FROM machines WHERE EXISTS (SELECT 1 FROM apps WHERE apps.id = machines.app_id AND name = 'a7')").as_deref(),
            Some("SELECT machines.id FROM machines JOIN apps AS __vd_in1 ON machines.app_id = __vd_in1.id AND (__vd_in1.name = 'a7')")
        );
        // Either side of `=`, unqualified names on both sides, `*`.
        assert_eq!(
            rw("SELECT * FROM machines m WHERE cpu > 1 AND EXISTS (SELECT * FROM apps WHERE app_id = id AND lower(name) LIKE 'a%')").as_deref(),
            Some("SELECT m.* FROM machines AS m JOIN apps AS __vd_in1 ON m.app_id = __vd_in1.id AND (lower(__vd_in1.name) LIKE 'a%') WHERE m.cpu > 1")
        );
    }

    #[test]
    fn anything_that_could_change_the_result_is_left_alone() {
        for sql in [
            // Not the whole key, a composite key, NOT IN, under OR, correlated, nested.
            "SELECT id FROM machines WHERE app_id IN (SELECT name FROM apps)",
            "SELECT id FROM machines WHERE app_id IN (SELECT a FROM pairs)",
            "SELECT id FROM machines WHERE app_id NOT IN (SELECT id FROM apps)",
            "SELECT id FROM machines WHERE cpu = 1 OR app_id IN (SELECT id FROM apps)",
            "SELECT id FROM machines WHERE app_id IN (SELECT id FROM apps WHERE name = cpu)",
            "SELECT id FROM machines WHERE app_id IN (SELECT id FROM apps WHERE apps.name = machines.cpu)",
            "SELECT id FROM machines WHERE app_id IN (SELECT id FROM apps WHERE id IN (SELECT app_id FROM machines))",
            // A key that is not the rowid (`'1'` and `'1.0'` both equal 1).
            "SELECT id FROM machines WHERE app_id IN (SELECT id FROM texts)",
            // A LIMIT in the subquery, an outer join, an alias sharing a column's name.
            "SELECT id FROM machines WHERE app_id IN (SELECT id FROM apps LIMIT 1)",
            "SELECT m.id FROM machines m JOIN apps a ON a.id = m.app_id WHERE m.app_id IN (SELECT id FROM apps)",
            "SELECT cpu AS name FROM machines WHERE app_id IN (SELECT id FROM apps) ORDER BY name",
            // A name only the subquery's table has would change meaning once it is joined.
            "SELECT id FROM machines WHERE app_id IN (SELECT id FROM apps) AND name = 'x'",
            // EXISTS: not correlated, correlated by a non-key column or by more than the key,
            // an aggregate (one row whatever matched), NOT EXISTS, under OR, a self-reference.
            "SELECT id FROM machines WHERE EXISTS (SELECT 1 FROM apps WHERE id = 1)",
            "SELECT id FROM machines WHERE EXISTS (SELECT 1 FROM apps WHERE apps.name = machines.cpu)",
            "SELECT id FROM machines WHERE EXISTS (SELECT 1 FROM apps WHERE apps.id = machines.app_id AND apps.name = machines.cpu)",
            "SELECT id FROM machines WHERE EXISTS (SELECT count(*) FROM apps WHERE apps.id = machines.app_id)",
            "SELECT id FROM machines WHERE NOT EXISTS (SELECT 1 FROM apps WHERE apps.id = machines.app_id)",
            "SELECT id FROM machines WHERE cpu = 1 OR EXISTS (SELECT 1 FROM apps WHERE apps.id = machines.app_id)",
            "SELECT id FROM machines WHERE EXISTS (SELECT 1 FROM machines WHERE machines.id = machines.app_id)",
            "SELECT id FROM machines WHERE EXISTS (SELECT 1 FROM texts WHERE texts.id = machines.app_id)",
            // Found in review. `oid` in the subquery is `apps`' rowid, not the outer column.
            "SELECT id FROM items WHERE EXISTS (SELECT 1 FROM apps WHERE apps.id = oid)",
            // A result alias is found before an outer column.
            "SELECT id FROM machines WHERE EXISTS (SELECT 5 AS app_id FROM apps WHERE apps.id = app_id)",
            // `oid` is the rowid in a one-table query and the result alias in a join.
            "SELECT cpu AS oid FROM machines WHERE oid > 2 AND EXISTS (SELECT 1 FROM apps WHERE apps.id = machines.app_id)",
            "SELECT id, cpu AS rowid FROM machines WHERE rowid <= 2 AND app_id IN (SELECT id FROM apps)",
            // A filter that can fail, run on rows the subquery would not have read.
            "SELECT id FROM machines WHERE EXISTS (SELECT 1 FROM apps WHERE apps.id = machines.app_id AND json_extract(name, '$.a') = 1)",
            "SELECT id FROM machines WHERE app_id IN (SELECT id FROM apps WHERE abs(name) > 1)",
            "SELECT id FROM machines WHERE app_id IN (SELECT id FROM apps WHERE name LIKE 'a!%' ESCAPE '!')",
        ] {
            assert_eq!(rw(sql), None, "{sql}");
        }
    }
}
