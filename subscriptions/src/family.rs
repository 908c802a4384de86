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
        self.put_member(conn, idx, &self.value)
    }

    /// Creates the member table on `conn` if needed and sets member `idx`'s value.
    pub fn put_member(&self, conn: &Connection, idx: u64, value: &Value) -> Result<()> {
        conn.execute_batch(&format!(
            "CREATE TEMP TABLE IF NOT EXISTS \"{t}\" (__vd_idx INTEGER PRIMARY KEY, __vd_val); CREATE INDEX IF NOT EXISTS temp.\"{t}_val\" ON \"{t}\" (__vd_val);",
            t = self.table
        ))?;
        conn.execute(
            &format!(
                "INSERT OR REPLACE INTO temp.\"{}\" (__vd_idx, __vd_val) VALUES (?1, ?2)",
                self.table
            ),
            rusqlite::params![idx, value],
        )?;
        Ok(())
    }

    /// Empties the member table on `conn` (creating it if needed).
    pub fn clear_members(&self, conn: &Connection) -> Result<()> {
        conn.execute_batch(&format!(
            "CREATE TEMP TABLE IF NOT EXISTS \"{t}\" (__vd_idx INTEGER PRIMARY KEY, __vd_val); CREATE INDEX IF NOT EXISTS temp.\"{t}_val\" ON \"{t}\" (__vd_val); DELETE FROM temp.\"{t}\";",
            t = self.table
        ))
    }

    pub fn remove_member(&self, conn: &Connection, idx: u64) -> Result<()> {
        conn.execute(
            &format!("DELETE FROM temp.\"{}\" WHERE __vd_idx = ?1", self.table),
            [idx],
        )?;
        Ok(())
    }

    /// Refreshes the members affected by `changes`: one probe and one fetch for the whole
    /// family. The members touched are found through `index` (old side) and the fetch (new
    /// side), so the cost is proportional to the members affected, not to the family's size.
    pub fn refresh<M: Member>(
        &self,
        conn: &Connection,
        members: &mut HashMap<u64, M>,
        index: &mut FamilyIndex,
        changes: &Changes,
    ) -> Result<Vec<(u64, Vec<RowChange>)>> {
        let Some(first) = members.values().find_map(|m| m.keyed()) else {
            return Ok(vec![]);
        };
        let tables: Vec<String> = first.source_tables().map(str::to_string).collect();
        let candidates = index.candidates(&tables, changes);
        let mut roots: BTreeSet<Vec<u8>> = first.probe_roots(conn, changes)?;
        for idx in &candidates {
            if let Some(k) = members.get(idx).and_then(|m| m.keyed()) {
                roots.extend(k.old_roots(changes));
            }
        }
        if roots.is_empty() {
            return Ok(vec![]);
        }
        let mut fresh: HashMap<u64, crate::keyed::RootRows> = HashMap::new();
        let all: Vec<&Vec<u8>> = roots.iter().collect();
        for chunk in all.chunks(crate::keyed::KEYS_PER_QUERY) {
            let (sql, params) = first.restrict(&self.fetch, chunk);
            let Some(sql) = sql else { continue };
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
        let affected: BTreeSet<u64> = candidates
            .into_iter()
            .chain(fresh.keys().copied())
            .collect();
        let mut out = Vec::new();
        for idx in affected {
            let Some(k) = members.get_mut(&idx).and_then(|m| m.keyed_mut()) else {
                continue;
            };
            let mine = fresh.remove(&idx).unwrap_or_default();
            let member_roots: BTreeSet<Vec<u8>> = roots
                .iter()
                .filter(|r| k.has_root(r))
                .cloned()
                .chain(mine.keys().cloned())
                .collect();
            if member_roots.is_empty() {
                continue;
            }
            index.remove(idx, &k.footprint(&member_roots));
            let ch = k.replace_roots(&member_roots, mine);
            index.add(idx, &k.footprint(&member_roots));
            if !ch.is_empty() {
                out.push((idx, ch));
            }
        }
        Ok(out)
    }
}

/// A family member's materialization (members are always keyed).
pub trait Member {
    fn keyed(&self) -> Option<&Keyed>;
    fn keyed_mut(&mut self) -> Option<&mut Keyed>;
}

impl Member for Keyed {
    fn keyed(&self) -> Option<&Keyed> {
        Some(self)
    }
    fn keyed_mut(&mut self) -> Option<&mut Keyed> {
        Some(self)
    }
}

impl Member for crate::MatView {
    fn keyed(&self) -> Option<&Keyed> {
        match self {
            crate::MatView::Keyed(k) => Some(k),
            _ => None,
        }
    }
    fn keyed_mut(&mut self) -> Option<&mut Keyed> {
        match self {
            crate::MatView::Keyed(k) => Some(k),
            _ => None,
        }
    }
}

/// Which members' rows were built from which base rows: per source (0 = the root), packed key
/// → member → number of that member's roots using it. Kept in step with the members'
/// materializations, it finds the members a change concerns without visiting the others.
#[derive(Debug, Default)]
pub struct FamilyIndex {
    by_key: Vec<HashMap<Vec<u8>, HashMap<u64, u32>>>,
}

impl FamilyIndex {
    /// Indexes a member's whole materialization (after its initial run or an import).
    pub fn add_member(&mut self, idx: u64, k: &Keyed) {
        let fp = k.footprint(k.roots());
        self.add(idx, &fp);
    }

    /// Forgets a member (before it leaves, or before a full recompute of it).
    pub fn remove_member(&mut self, idx: u64, k: &Keyed) {
        let fp = k.footprint(k.roots());
        self.remove(idx, &fp);
    }

    pub fn add(&mut self, idx: u64, footprint: &[(usize, Vec<u8>)]) {
        for (s, key) in footprint {
            if self.by_key.len() <= *s {
                self.by_key.resize_with(s + 1, HashMap::new);
            }
            *self.by_key[*s]
                .entry(key.clone())
                .or_default()
                .entry(idx)
                .or_default() += 1;
        }
    }

    pub fn remove(&mut self, idx: u64, footprint: &[(usize, Vec<u8>)]) {
        for (s, key) in footprint {
            let Some(map) = self.by_key.get_mut(*s) else {
                continue;
            };
            let Some(members) = map.get_mut(key) else {
                continue;
            };
            if let Some(n) = members.get_mut(&idx) {
                *n -= 1;
                if *n == 0 {
                    members.remove(&idx);
                }
            }
            if members.is_empty() {
                map.remove(key);
            }
        }
    }

    /// Members with a row built from a changed key (of a source reading `tables[s]`).
    pub fn candidates(&self, tables: &[String], changes: &Changes) -> BTreeSet<u64> {
        let mut out = BTreeSet::new();
        for (s, t) in tables.iter().enumerate() {
            let (Some(keys), Some(map)) = (changes.get(t), self.by_key.get(s)) else {
                continue;
            };
            for k in keys {
                if let Some(m) = map.get(k) {
                    out.extend(m.keys().copied());
                }
            }
        }
        out
    }

    /// Number of (source key, member) entries: memory is proportional to this.
    pub fn len(&self) -> usize {
        self.by_key
            .iter()
            .map(|m| m.values().map(HashMap::len).sum::<usize>())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
