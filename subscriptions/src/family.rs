//! Parameter families: keyed subscriptions that differ only in the value compared to one column
//! of the root table (`WHERE t.app_id = ?` followed by thousands of proxies, one value each)
//! share one evaluation per change set instead of one per subscription.
//!
//! The members' values live in a TEMP table on the evaluating connection
//! (`temp.__vd_fam_<hash>(__vd_idx, __vd_val)`, indexed on the value). For changed keys the family runs its
//! query once, with `col = <literal>` replaced by a join to the member table, restricted to the
//! affected roots; SQLite routes each result row to the members whose value it matches (with
//! the column's own affinity and collation, exactly as the literal comparison would), and each
//! member's materialization is updated for its share only.

use crate::keyed::Keyed;
use crate::matview::{read_rows, Changes, Result, RowChange};
use rusqlite::types::Value;
use rusqlite::Connection;
use sqlparser::ast::{BinaryOperator, Expr, Query, SelectItem, SetExpr, TableWithJoins};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;
use std::collections::{BTreeSet, HashMap};

/// How a subscription belongs to a family.
#[derive(Debug, Clone)]
pub struct FamilyInfo {
    /// The query with the member's value replaced by `?`, normalized: members share this key.
    pub key: String,
    /// This member's value.
    pub value: Value,
    /// Name of the TEMP table holding the members.
    pub table: String,
    /// The family query: member index, identity columns, result columns; `{roots}` is replaced by
    /// the root-key predicate.
    fetch: Query,
}

fn parse_expr(s: &str) -> Option<Expr> {
    Parser::new(&SQLiteDialect {})
        .try_with_sql(s)
        .and_then(|mut p| p.parse_expr())
        .ok()
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Top-level AND conjuncts of a WHERE clause, as mutable references.
fn conjuncts(e: &mut Expr) -> Vec<&mut Expr> {
    match e {
        Expr::BinaryOp {
            op: BinaryOperator::And,
            ..
        } => {
            let Expr::BinaryOp { left, right, .. } = e else {
                unreachable!()
            };
            let mut v = conjuncts(left);
            v.extend(conjuncts(right));
            v
        }
        other => vec![other],
    }
}

/// Whether `e` names a column of the root source (`root.col`, or `col` in a one-table query).
fn is_root_column(e: &Expr, root_ref: &str, single: bool) -> bool {
    match e {
        Expr::Identifier(_) => single,
        Expr::CompoundIdentifier(ids) if ids.len() == 2 => {
            crate::analyze::quote(&ids[0].value).eq_ignore_ascii_case(root_ref)
        }
        _ => false,
    }
}

fn is_literal(e: &Expr) -> bool {
    match e {
        Expr::Value(v) => !matches!(v.value, sqlparser::ast::Value::Placeholder(_)),
        Expr::UnaryOp { expr, .. } => matches!(**expr, Expr::Value(_)),
        _ => false,
    }
}

/// Detects a family: the first top-level `root.col = literal` conjunct of a keyed query.
pub fn detect(
    conn: &Connection,
    q: &Query,
    refs: &[String],
    normalize: impl Fn(&Query) -> String,
) -> Option<FamilyInfo> {
    let (root_ref, sources) = (refs.first()?.as_str(), refs.len());
    let mut template = q.clone();
    let SetExpr::Select(sel) = &mut *template.body else {
        return None;
    };
    let where_ = sel.selection.as_mut()?;
    let mut found: Option<(String, bool)> = None; // (literal SQL, literal on the right)
    for c in conjuncts(where_) {
        if let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = c
        {
            let single = sources == 1;
            if is_root_column(left, root_ref, single) && is_literal(right) {
                found = Some((right.to_string(), true));
                **right = parse_expr("?")?;
            } else if is_root_column(right, root_ref, single) && is_literal(left) {
                found = Some((left.to_string(), false));
                **left = parse_expr("?")?;
            }
            if found.is_some() {
                break;
            }
        }
    }
    let (literal, _) = found?;
    let value: Value = conn
        .query_row(&format!("SELECT {literal}"), [], |r| {
            r.get_ref(0).map(crate::stmt::owned)
        })
        .ok()??;
    let key = normalize(&template);
    let table = format!("__vd_fam_{:016x}", fnv(&key));
    // The fetch query: `?` → the member table's value, members joined last.
    let mut fetch = template;
    let SetExpr::Select(sel) = &mut *fetch.body else {
        return None;
    };
    for c in conjuncts(sel.selection.as_mut()?) {
        if let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = c
        {
            for side in [left, right] {
                if matches!(&**side, Expr::Value(v) if matches!(v.value, sqlparser::ast::Value::Placeholder(_)))
                {
                    **side = parse_expr("\"__vd_m\".\"__vd_val\"")?;
                }
            }
        }
    }
    let from = sel.from.first()?;
    let joined = format!("SELECT 1 FROM {from} JOIN temp.\"{table}\" AS \"__vd_m\"");
    let parsed = Parser::parse_sql(&SQLiteDialect {}, &joined).ok()?;
    let sqlparser::ast::Statement::Query(pq) = parsed.into_iter().next()? else {
        return None;
    };
    let SetExpr::Select(ps) = *pq.body else {
        return None;
    };
    let twj: TableWithJoins = ps.from.into_iter().next()?;
    sel.from = vec![twj];
    // `*` would now include the member table: spell it out as each source's columns, which is
    // exactly what SQLite expands it to.
    if sel
        .projection
        .iter()
        .any(|p| matches!(p, SelectItem::Wildcard(_)))
    {
        let stars = refs
            .iter()
            .map(|r| format!("{r}.*"))
            .collect::<Vec<_>>()
            .join(", ");
        let parsed = Parser::parse_sql(&SQLiteDialect {}, &format!("SELECT {stars}")).ok()?;
        let sqlparser::ast::Statement::Query(pq) = parsed.into_iter().next()? else {
            return None;
        };
        let SetExpr::Select(ps) = *pq.body else {
            return None;
        };
        let mut items = ps.projection.into_iter();
        let mut out = Vec::new();
        for p in std::mem::take(&mut sel.projection) {
            if matches!(p, SelectItem::Wildcard(_)) {
                out.extend(items.by_ref());
            } else {
                out.push(p);
            }
        }
        sel.projection = out;
    }
    sel.projection.insert(
        0,
        SelectItem::UnnamedExpr(parse_expr("\"__vd_m\".\"__vd_idx\"")?),
    );
    fetch.order_by = None;
    Some(FamilyInfo {
        key,
        value,
        table,
        fetch,
    })
}

impl FamilyInfo {
    /// Creates the member table on `conn` if needed and adds a member.
    pub fn add_member(&self, conn: &Connection, idx: u64) -> Result<()> {
        conn.execute_batch(&format!(
            "CREATE TEMP TABLE IF NOT EXISTS \"{t}\" (__vd_idx INTEGER PRIMARY KEY, __vd_val); CREATE INDEX IF NOT EXISTS temp.\"{t}_val\" ON \"{t}\" (__vd_val);",
            t = self.table
        ))?;
        conn.execute(
            &format!(
                "INSERT OR REPLACE INTO temp.\"{}\" (__vd_idx, __vd_val) VALUES (?1, ?2)",
                self.table
            ),
            rusqlite::params![idx, self.value],
        )?;
        Ok(())
    }

    pub fn remove_member(&self, conn: &Connection, idx: u64) -> Result<()> {
        conn.execute(
            &format!("DELETE FROM temp.\"{}\" WHERE __vd_idx = ?1", self.table),
            [idx],
        )?;
        Ok(())
    }

    /// Refreshes every member after `changes`: one probe and one fetch for the whole family.
    pub fn refresh(
        &self,
        conn: &Connection,
        members: &mut [(u64, &mut Keyed)],
        changes: &Changes,
    ) -> Result<Vec<(u64, Vec<RowChange>)>> {
        let Some((_, first)) = members.first() else {
            return Ok(vec![]);
        };
        let mut roots: BTreeSet<Vec<u8>> = first.probe_roots(conn, changes)?;
        for (_, k) in members.iter() {
            roots.extend(k.old_roots(changes));
        }
        if roots.is_empty() {
            return Ok(vec![]);
        }
        let mut fresh: HashMap<u64, crate::keyed::RootRows> = HashMap::new();
        let all: Vec<&Vec<u8>> = roots.iter().collect();
        for chunk in all.chunks(crate::keyed::KEYS_PER_QUERY) {
            let (sql, params) = first.restrict(&self.fetch, chunk);
            let Some(sql) = sql else { continue };
            if std::env::var("VD_DEBUG").is_ok() {
                eprintln!("FETCH {sql} {params:?}");
            }
            let mut stmt = conn.prepare_cached(&sql)?;
            for mut row in read_rows(&mut stmt, &params)? {
                let idx = match row.remove(0) {
                    Value::Integer(i) => i as u64,
                    _ => continue,
                };
                let (identity, root, cells) = first.split(row);
                fresh
                    .entry(idx)
                    .or_default()
                    .entry(root)
                    .or_default()
                    .push((identity, cells));
            }
        }
        let mut out = Vec::new();
        for (idx, k) in members.iter_mut() {
            let mine = fresh.remove(idx).unwrap_or_default();
            let member_roots: BTreeSet<Vec<u8>> = roots
                .iter()
                .filter(|r| k.has_root(r))
                .cloned()
                .chain(mine.keys().cloned())
                .collect();
            if member_roots.is_empty() {
                continue;
            }
            let ch = k.replace_roots(&member_roots, mine);
            if !ch.is_empty() {
                out.push((*idx, ch));
            }
        }
        Ok(out)
    }
}
