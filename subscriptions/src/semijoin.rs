//! `x IN (SELECT pk FROM t WHERE …)` as an inner join, so that select-project-join
//! maintenance ([`crate::keyed`]) applies instead of a re-run.
//!
//! The rewrite is exact only when the subquery selects the whole primary key of its one
//! table and that key is the table's rowid (`INTEGER PRIMARY KEY`), so that each outer row
//! joins at most one row of it whatever the comparison's affinity and collation (a text key
//! can hold `'1'` and `'1.0'`, which one integer equals; a binary text key `'a'` and `'A'`,
//! which one `NOCASE` value equals): then
//! `o.x IN (SELECT t.pk FROM t WHERE c)` in the top-level conjunction of `WHERE` keeps the
//! same outer rows, once each, as `JOIN t AS __vd_inN ON o.x = __vd_inN.pk AND (c)`
//! (the comparison is written `x = pk`, the way SQLite compares for `IN`: the subquery
//! column's affinity, `x`'s collation). Everything else is left to the re-run plan: `NOT IN`,
//! a subquery that is correlated, reads several tables, groups, limits or nests subqueries,
//! and an outer query with joins or with result aliases that share a column's name (where
//! qualifying a name could change what it means).

use crate::analyze::Schema;
use sqlparser::ast::{
    visit_expressions_mut, BinaryOperator, Expr, Ident, Join, JoinConstraint, JoinOperator,
    ObjectName, ObjectNamePart, Query, Select, SelectItem, SelectItemQualifiedWildcardKind,
    SetExpr, TableAlias, TableFactor,
};
use std::ops::ControlFlow;

/// At most this many `IN` subqueries become joins (each adds a join to every round).
const MAX_JOINS: usize = 4;

/// The query with its qualifying `IN (SELECT pk …)` predicates turned into joins, or `None`
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
    // Split the WHERE conjunction into the IN predicates to turn into joins and the rest.
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
            c => keep.push(c),
        }
    }
    if semis.is_empty() {
        return None;
    }
    // Result aliases that are also column names: qualifying such a name could change what
    // it refers to (SQLite resolves ORDER BY names to aliases first).
    let mut names: Vec<&str> = outer_cols.iter().map(String::as_str).collect();
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

fn semi(q: &Query, schema: &dyn Schema, rowid_key: &dyn Fn(&str) -> bool) -> Option<Semi> {
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
    let table = table.clone();
    let alias = alias.cloned();
    let pk = schema.primary_key(&table.value)?;
    let [pk] = pk.as_slice() else {
        return None;
    };
    if !rowid_key(&table.value) {
        return None;
    }
    let columns = schema.columns(&table.value)?;
    let reference = alias.unwrap_or_else(|| table.clone());
    let is_ref = |q: &Ident| q.value.eq_ignore_ascii_case(&reference.value);
    let [item] = sel.projection.as_slice() else {
        return None;
    };
    let (SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) = item else {
        return None;
    };
    let key = match e {
        Expr::Identifier(id) => id,
        Expr::CompoundIdentifier(ids) if ids.len() == 2 && is_ref(&ids[0]) => &ids[1],
        _ => return None,
    };
    if !key.value.eq_ignore_ascii_case(pk) {
        return None;
    }
    // Every column of the filter must be the subquery table's own (not correlated).
    let mut filter = sel.selection.clone();
    let mut ok = true;
    if let Some(f) = &mut filter {
        let _ = visit_expressions_mut(f, |e: &mut Expr| {
            match e {
                Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => ok = false,
                Expr::Identifier(id) if has(&columns, &id.value) => {
                    *e = Expr::CompoundIdentifier(vec![reference.clone(), id.clone()]);
                }
                Expr::Identifier(_) => ok = false,
                Expr::CompoundIdentifier(ids)
                    if ids.len() == 2 && is_ref(&ids[0]) && has(&columns, &ids[1].value) => {}
                Expr::CompoundIdentifier(_) => ok = false,
                _ => {}
            }
            if ok {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        });
    }
    if !ok {
        return None;
    }
    Some(Semi {
        relation: sel.from[0].relation.clone(),
        pk: key.clone(),
        filter,
        columns,
    })
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
                "machines" | "apps" | "texts" => Some(vec!["id".into()]),
                "pairs" => Some(vec!["a".into(), "b".into()]),
                _ => None,
            }
        }
        fn columns(&self, table: &str) -> Option<Vec<String>> {
            let c: &[&str] = match table {
                "machines" => &["id", "app_id", "cpu"],
                "apps" | "texts" => &["id", "name"],
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
        ] {
            assert_eq!(rw(sql), None, "{sql}");
        }
    }
}
