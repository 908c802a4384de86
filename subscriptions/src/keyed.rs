//! Incremental maintenance of select-project-join queries (inner and LEFT joins).
//!
//! Every result row is built from one row of each source table (or none, for the NULL side of
//! a LEFT JOIN); its identity is the tuple of those rows' primary keys, and it belongs to one
//! row of the first ("root") table. When rows P of table T change:
//! 1. old side: the materialization knows which roots had a result row built from a key in P;
//! 2. new side: a probe finds the roots that now join to a key in P (the query's joins with
//!    `T.pk IN (P)`; WHERE dropped, a superset is fine);
//! 3. the query re-runs restricted to those roots, and each root's rows are replaced, emitting
//!    insert / update / delete by identity.
//!
//! Recomputing whole roots (not single result rows) is what makes LEFT JOINs exact: a root
//! whose last match disappears gets its NULL-extended row back, and vice versa.

use crate::analyze::Source;
use crate::matview::{read_rows, ChangeKind, Changes, Result, RowChange, StoredRow};
use crate::pack;
use rusqlite::types::{Value, ValueRef};
use rusqlite::Connection;
use sqlparser::ast::{Distinct, Expr, Ident, Query, SelectItem, SetExpr};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::OnceLock;

/// Fresh rows per root key: (identity, cells), in query order.
pub(crate) type RootRows = HashMap<Vec<u8>, Vec<(Vec<u8>, Vec<Value>)>>;

/// Keys per restricted query.
pub(crate) const KEYS_PER_QUERY: usize = 400;

#[derive(Debug)]
struct Entry {
    row_id: u64,
    cells: Vec<Value>,
}

#[derive(Debug)]
pub struct Keyed {
    sources: Vec<Source>,
    /// Identity column count per source (its primary key width).
    widths: Vec<usize>,
    id_cols: usize,
    /// The query with the identity columns first, as SQL: what `initial` and `recompute` run.
    full_sql: String,
    /// The same query parsed, for building restricted and probe queries. Parsed from
    /// `full_sql` on first use and kept: a syntax tree takes several KiB, and most keyed
    /// subscriptions never need their own (family members are refreshed through the family's
    /// shared query). Set at construction when the text would not parse back to it.
    base: OnceLock<Box<Query>>,
    rows: HashMap<Vec<u8>, Entry>,
    by_root: HashMap<Vec<u8>, Vec<Vec<u8>>>,
    /// For each non-root source: its packed key → roots with a row built from it.
    by_source: Vec<HashMap<Vec<u8>, HashSet<Vec<u8>>>>,
    pub next_row_id: u64,
}

fn parse_expr(s: &str) -> Expr {
    Parser::new(&SQLiteDialect {})
        .try_with_sql(s)
        .and_then(|mut p| p.parse_expr())
        .expect("generated expression parses")
}

/// `sql` parsed as one query (`None` if it does not parse as exactly that).
fn parse_query(sql: &str) -> Option<Query> {
    let mut stmts = Parser::parse_sql(&SQLiteDialect {}, sql).ok()?;
    match (stmts.pop(), stmts.is_empty()) {
        (Some(sqlparser::ast::Statement::Query(q)), true) => Some(*q),
        _ => None,
    }
}

fn select_mut(q: &mut Query) -> &mut sqlparser::ast::Select {
    match &mut *q.body {
        SetExpr::Select(s) => s,
        _ => unreachable!("keyed plans are plain selects"),
    }
}

fn id_items(sources: &[Source]) -> Vec<SelectItem> {
    let mut ids = Vec::new();
    for s in sources {
        for k in &s.pk {
            ids.push(SelectItem::ExprWithAlias {
                expr: parse_expr(&format!("{}.{}", s.reference, crate::analyze::quote(k))),
                alias: Ident::with_quote('"', format!("__vd_id_{}", ids.len())),
            });
        }
    }
    ids
}

impl Keyed {
    pub fn new(query: &Query, sources: Vec<Source>) -> Keyed {
        let mut base = query.clone();
        let mut ids = id_items(&sources);
        let n = ids.len();
        let sel = select_mut(&mut base);
        ids.append(&mut sel.projection);
        sel.projection = ids;
        let full_sql = base.to_string();
        let cached = OnceLock::new();
        if parse_query(&full_sql).as_ref() != Some(&base) {
            let _ = cached.set(Box::new(base));
        }
        let widths = sources.iter().map(|s| s.pk.len()).collect();
        let by_source = vec![HashMap::new(); sources.len()];
        Keyed {
            sources,
            widths,
            id_cols: n,
            full_sql,
            base: cached,
            rows: HashMap::new(),
            by_root: HashMap::new(),
            by_source,
            next_row_id: 1,
        }
    }

    /// The parsed query (see `base`).
    fn base(&self) -> &Query {
        self.base.get_or_init(|| {
            Box::new(
                parse_query(&self.full_sql)
                    .expect("checked at construction: full_sql parses back to the query"),
            )
        })
    }

    fn root_width(&self) -> usize {
        self.widths[0]
    }

    /// `(ref.k1, ref.k2) IN (VALUES (?1, ?2), …)` for `n` keys of source `s`.
    fn key_predicate(&self, s: usize, n: usize) -> String {
        let src = &self.sources[s];
        let cols: Vec<String> = src
            .pk
            .iter()
            .map(|k| format!("{}.{}", src.reference, crate::analyze::quote(k)))
            .collect();
        let w = cols.len();
        if w == 1 {
            let ps: Vec<String> = (1..=n).map(|i| format!("?{i}")).collect();
            format!("{} IN ({})", cols[0], ps.join(", "))
        } else {
            let tuples: Vec<String> = (0..n)
                .map(|i| {
                    format!(
                        "({})",
                        (1..=w)
                            .map(|j| format!("?{}", i * w + j))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
                .collect();
            format!("({}) IN (VALUES {})", cols.join(", "), tuples.join(", "))
        }
    }

    /// The full query restricted to `n` root keys (keeps the WHERE clause).
    fn restricted_sql(&self, n: usize) -> String {
        let mut q = self.base().clone();
        q.order_by = None;
        let pred = self.key_predicate(0, n);
        let sel = select_mut(&mut q);
        sel.selection = Some(match sel.selection.take() {
            Some(w) => parse_expr(&format!("({w}) AND ({pred})")),
            None => parse_expr(&pred),
        });
        q.to_string()
    }

    /// Roots joined to `n` keys of source `s` (WHERE dropped: a superset).
    fn probe_sql(&self, s: usize, n: usize) -> String {
        let mut q = self.base().clone();
        q.order_by = None;
        let root = &self.sources[0];
        let pred = self.key_predicate(s, n);
        let sel = select_mut(&mut q);
        sel.projection = root
            .pk
            .iter()
            .map(|k| {
                SelectItem::UnnamedExpr(parse_expr(&format!(
                    "{}.{}",
                    root.reference,
                    crate::analyze::quote(k)
                )))
            })
            .collect();
        sel.distinct = Some(Distinct::Distinct);
        sel.selection = Some(parse_expr(&pred));
        q.to_string()
    }

    fn unpack_keys<'a>(keys: impl Iterator<Item = &'a Vec<u8>>) -> Vec<Value> {
        keys.filter_map(|k| pack::unpack(k).ok())
            .flatten()
            .collect()
    }

    /// Splits a fetched row into (identity, root key, per-source keys, cells).
    pub(crate) fn split(&self, mut row: Vec<Value>) -> (Vec<u8>, Vec<u8>, Vec<Value>) {
        let cells = row.split_off(self.id_cols);
        let identity = pack::pack(row.iter().map(ValueRef::from));
        let root = pack::pack(row[..self.root_width()].iter().map(ValueRef::from));
        (identity, root, cells)
    }

    /// The packed key of each joined source (not the root) a result row was built from, by
    /// source index; a source a LEFT JOIN left out (all NULL) has none.
    fn source_keys(&self, identity: &[u8]) -> Vec<(usize, Vec<u8>)> {
        let Ok(vals) = pack::unpack(identity) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(self.sources.len() - 1);
        let mut off = self.widths[0];
        for s in 1..self.sources.len() {
            let w = self.widths[s];
            let key = &vals[off..off + w];
            off += w;
            if !key.iter().all(|v| *v == Value::Null) {
                out.push((s, pack::pack(key.iter().map(ValueRef::from))));
            }
        }
        out
    }

    fn index_row(&mut self, identity: &[u8], root: &[u8]) {
        for (s, k) in self.source_keys(identity) {
            self.by_source[s]
                .entry(k)
                .or_default()
                .insert(root.to_vec());
        }
    }

    fn unindex_root(&mut self, root: &[u8], identities: &[Vec<u8>]) {
        for identity in identities {
            for (s, k) in self.source_keys(identity) {
                if let Some(set) = self.by_source[s].get_mut(&k) {
                    set.remove(root);
                    if set.is_empty() {
                        self.by_source[s].remove(&k);
                    }
                }
            }
        }
    }

    fn insert_row(
        &mut self,
        identity: Vec<u8>,
        root: &[u8],
        cells: Vec<Value>,
        row_id: Option<u64>,
    ) -> u64 {
        let row_id = row_id.unwrap_or_else(|| {
            self.next_row_id += 1;
            self.next_row_id - 1
        });
        self.index_row(&identity, root);
        self.by_root
            .entry(root.to_vec())
            .or_default()
            .push(identity.clone());
        self.rows.insert(identity, Entry { row_id, cells });
        row_id
    }

    pub fn initial(&mut self, conn: &Connection) -> Result<Vec<(u64, Vec<Value>)>> {
        // Run once per subscription: not cached, so distinct subscriptions do not fill the
        // connection's statement cache with statements nobody runs again.
        let mut stmt = conn.prepare(&self.full_sql)?;
        let rows = read_rows(&mut stmt, &[])?;
        drop(stmt);
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (identity, root, cells) = self.split(row);
            if self.rows.contains_key(&identity) {
                continue; // cannot happen for a select-project-join; be safe
            }
            let id = self.insert_row(identity, &root, cells.clone(), None);
            out.push((id, cells));
        }
        Ok(out)
    }

    /// Replaces the rows of `roots` with `fresh` (root → rows, query order), emitting changes.
    pub(crate) fn replace_roots(
        &mut self,
        roots: &BTreeSet<Vec<u8>>,
        mut fresh: RootRows,
    ) -> Vec<RowChange> {
        let mut changes = Vec::new();
        for root in roots {
            let old_ids = self.by_root.remove(root).unwrap_or_default();
            self.unindex_root(root, &old_ids);
            let mut old: HashMap<Vec<u8>, Entry> = old_ids
                .iter()
                .filter_map(|id| self.rows.remove(id).map(|e| (id.clone(), e)))
                .collect();
            for (identity, cells) in fresh.remove(root).unwrap_or_default() {
                match old.remove(&identity) {
                    Some(e) => {
                        if e.cells != cells {
                            changes.push(RowChange {
                                kind: ChangeKind::Update,
                                row_id: e.row_id,
                                cells: cells.clone(),
                                identity: identity.clone(),
                            });
                        }
                        self.insert_row(identity, root, cells, Some(e.row_id));
                    }
                    None => {
                        if self.rows.contains_key(&identity) {
                            continue;
                        }
                        let id = self.insert_row(identity.clone(), root, cells.clone(), None);
                        changes.push(RowChange {
                            kind: ChangeKind::Insert,
                            row_id: id,
                            cells,
                            identity,
                        });
                    }
                }
            }
            let mut gone: Vec<(Vec<u8>, Entry)> = old.into_iter().collect();
            gone.sort_by_key(|(_, e)| e.row_id);
            for (identity, e) in gone {
                changes.push(RowChange {
                    kind: ChangeKind::Delete,
                    row_id: e.row_id,
                    cells: e.cells,
                    identity,
                });
            }
        }
        changes
    }

    fn fetch_roots(&self, conn: &Connection, roots: &BTreeSet<Vec<u8>>) -> Result<RootRows> {
        let mut fresh: RootRows = HashMap::new();
        let all: Vec<&Vec<u8>> = roots.iter().collect();
        for chunk in all.chunks(KEYS_PER_QUERY) {
            let params = Self::unpack_keys(chunk.iter().copied());
            if params.len() != chunk.len() * self.root_width() {
                continue;
            }
            let mut stmt = conn.prepare_cached(&self.restricted_sql(chunk.len()))?;
            for row in read_rows(&mut stmt, &params)? {
                let (identity, root, cells) = self.split(row);
                fresh.entry(root).or_default().push((identity, cells));
            }
        }
        Ok(fresh)
    }

    /// Roots whose current rows were built from a changed key of a non-root source.
    pub(crate) fn old_roots(&self, changes: &Changes) -> BTreeSet<Vec<u8>> {
        let mut roots = BTreeSet::new();
        for s in 1..self.sources.len() {
            let Some(keys) = changes.get(&self.sources[s].table) else {
                continue;
            };
            for k in keys {
                if let Some(rs) = self.by_source[s].get(k) {
                    roots.extend(rs.iter().cloned());
                }
            }
        }
        roots
    }

    /// Changed root keys, plus the roots that now join to a changed key of another source.
    pub(crate) fn probe_roots(
        &self,
        conn: &Connection,
        changes: &Changes,
    ) -> Result<BTreeSet<Vec<u8>>> {
        let mut roots = BTreeSet::new();
        for s in 0..self.sources.len() {
            let Some(keys) = changes.get(&self.sources[s].table) else {
                continue;
            };
            if s == 0 {
                let w = self.root_width();
                roots.extend(
                    keys.iter()
                        .filter(|k| pack::unpack(k).map(|v| v.len() == w).unwrap_or(false))
                        .cloned(),
                );
                continue;
            }
            let keys: Vec<&Vec<u8>> = keys.iter().collect();
            for chunk in keys.chunks(KEYS_PER_QUERY) {
                let params = Self::unpack_keys(chunk.iter().copied());
                if params.len() != chunk.len() * self.widths[s] {
                    continue;
                }
                let mut stmt = conn.prepare_cached(&self.probe_sql(s, chunk.len()))?;
                for r in read_rows(&mut stmt, &params)? {
                    roots.insert(pack::pack(r.iter().map(ValueRef::from)));
                }
            }
        }
        Ok(roots)
    }

    /// Every root with rows in the materialization.
    pub fn roots(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.by_root.keys()
    }

    /// What the rows of `roots` were built from: `(0, root)` for each root with rows, and
    /// `(s, key)` once per root for each non-NULL key of source `s` its rows use.
    pub fn footprint<'a>(
        &self,
        roots: impl IntoIterator<Item = &'a Vec<u8>>,
    ) -> Vec<(usize, Vec<u8>)> {
        let mut out = Vec::new();
        for root in roots {
            let Some(ids) = self.by_root.get(root) else {
                continue;
            };
            out.push((0, root.clone()));
            let mut seen: HashSet<(usize, Vec<u8>)> = HashSet::new();
            for identity in ids {
                for (s, k) in self.source_keys(identity) {
                    if seen.insert((s, k.clone())) {
                        out.push((s, k));
                    }
                }
            }
        }
        out
    }

    /// The tables of the sources, in FROM order (the root first).
    pub fn source_tables(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().map(|s| s.table.as_str())
    }

    pub(crate) fn has_root(&self, root: &[u8]) -> bool {
        self.by_root.contains_key(root)
    }

    /// `query` (a family fetch: member index first) with identity columns after its first
    /// column and restricted to `roots`; `None` if a key does not unpack.
    pub(crate) fn restrict(
        &self,
        query: &Query,
        roots: &[&Vec<u8>],
    ) -> (Option<String>, Vec<Value>) {
        let params = Self::unpack_keys(roots.iter().copied());
        if params.len() != roots.len() * self.root_width() {
            return (None, params);
        }
        let mut q = query.clone();
        let pred = self.key_predicate(0, roots.len());
        let sel = select_mut(&mut q);
        let rest = sel.projection.split_off(1);
        sel.projection.extend(id_items(&self.sources));
        sel.projection.extend(rest);
        sel.selection = Some(match sel.selection.take() {
            Some(w) => parse_expr(&format!("({w}) AND ({pred})")),
            None => parse_expr(&pred),
        });
        (Some(q.to_string()), params)
    }

    pub fn refresh(&mut self, conn: &Connection, changes: &Changes) -> Result<Vec<RowChange>> {
        let mut roots = self.probe_roots(conn, changes)?;
        roots.extend(self.old_roots(changes));
        if roots.is_empty() {
            return Ok(vec![]);
        }
        let fresh = self.fetch_roots(conn, &roots)?;
        Ok(self.replace_roots(&roots, fresh))
    }

    /// Full re-run, diffed by identity against the materialization.
    pub fn recompute(&mut self, conn: &Connection) -> Result<Vec<RowChange>> {
        let mut stmt = conn.prepare_cached(&self.full_sql)?;
        let rows = read_rows(&mut stmt, &[])?;
        drop(stmt);
        let mut fresh: RootRows = HashMap::new();
        for row in rows {
            let (identity, root, cells) = self.split(row);
            fresh.entry(root).or_default().push((identity, cells));
        }
        let roots: BTreeSet<Vec<u8>> = fresh.keys().chain(self.by_root.keys()).cloned().collect();
        Ok(self.replace_roots(&roots, fresh))
    }

    pub fn rows(&self) -> impl Iterator<Item = (u64, &Vec<Value>)> {
        self.rows.values().map(|e| (e.row_id, &e.cells))
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn export(&self) -> Vec<StoredRow> {
        self.rows
            .iter()
            .map(|(id, e)| StoredRow {
                row_id: e.row_id,
                identity: id.clone(),
                cells: e.cells.clone(),
            })
            .collect()
    }

    pub fn import(&mut self, rows: Vec<StoredRow>, next_row_id: u64) {
        self.rows.clear();
        self.by_root.clear();
        self.by_source.iter_mut().for_each(HashMap::clear);
        let mut max = 0;
        for r in rows {
            let Ok(vals) = pack::unpack(&r.identity) else {
                continue;
            };
            if vals.len() != self.id_cols {
                continue;
            }
            let root = pack::pack(vals[..self.root_width()].iter().map(ValueRef::from));
            max = max.max(r.row_id);
            self.insert_row(r.identity, &root, r.cells, Some(r.row_id));
        }
        self.next_row_id = next_row_id.max(max + 1);
    }
}

#[cfg(test)]
mod tests {
    use crate::analyze::{analyze, Plan, Schema};
    use crate::stmt::Statement;
    use crate::MatView;

    struct Pk;
    impl Schema for Pk {
        fn primary_key(&self, _table: &str) -> Option<Vec<String>> {
            Some(vec!["id".into()])
        }
    }

    #[test]
    fn a_keyed_subscription_parses_its_query_only_when_a_round_needs_it() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE a (id INTEGER PRIMARY KEY, x INTEGER);
             CREATE TABLE b (id INTEGER PRIMARY KEY, a_id INTEGER);
             INSERT INTO a VALUES (1, 10), (2, 20); INSERT INTO b VALUES (5, 1);",
        )
        .unwrap();
        for sql in [
            "SELECT id, x FROM a WHERE id = 1",
            "SELECT a.id, b.id FROM a LEFT JOIN b ON b.a_id = a.id WHERE a.x > 0",
        ] {
            let an = analyze(&conn, &Statement::new(sql.to_string()), &Pk).unwrap();
            assert!(matches!(an.plan, Plan::Keyed { .. }), "{sql}");
            let MatView::Keyed(mut k) = MatView::new(&an) else {
                unreachable!()
            };
            k.initial(&conn).unwrap();
            assert!(k.base.get().is_none(), "{sql}: no syntax tree kept");
            conn.execute_batch("UPDATE a SET x = x + 1; UPDATE b SET a_id = 2")
                .unwrap();
            let mut changes = crate::matview::Changes::new();
            for (t, id) in [("a", 1i64), ("a", 2), ("b", 5)] {
                changes
                    .entry(t.to_string())
                    .or_default()
                    .insert(crate::pack::pack(
                        [rusqlite::types::ValueRef::Integer(id)].into_iter(),
                    ));
            }
            let ch = k.refresh(&conn, &changes).unwrap();
            assert!(!ch.is_empty(), "{sql}: the refresh saw the updates");
            assert!(k.base.get().is_some(), "{sql}: parsed for the round");
            conn.execute_batch("UPDATE a SET x = x - 1; UPDATE b SET a_id = 1")
                .unwrap();
        }
    }
}
