//! A materialized subscription result and the row changes that keep it equal to a fresh run.

use crate::aggregate::{Aggregate, Images};
use crate::analyze::{Analysis, Plan};
use crate::keyed::Keyed;
use crate::recompute::Recompute;
use rusqlite::types::Value;
use rusqlite::Connection;
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Insert => "insert",
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<ChangeKind> {
        match s {
            "insert" => Some(ChangeKind::Insert),
            "update" => Some(ChangeKind::Update),
            "delete" => Some(ChangeKind::Delete),
            _ => None,
        }
    }
}

/// One change of the result: for deletes, `cells` are the values the row had.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub kind: ChangeKind,
    pub row_id: u64,
    pub cells: Vec<Value>,
    /// The row's identity in the materialization (for persistence).
    pub identity: Vec<u8>,
}

/// Keys changed by committed transactions: lower-case table name → packed primary keys.
pub type Changes = HashMap<String, HashSet<Vec<u8>>>;

/// A stored result row (for persistence): row id, identity, cells.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub row_id: u64,
    pub identity: Vec<u8>,
    pub cells: Vec<Value>,
}

pub type Result<T> = std::result::Result<T, rusqlite::Error>;

// One per subscription, matched on every round: boxing the keyed state would add an
// indirection for no memory saved.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum MatView {
    Keyed(Keyed),
    Aggregate(Aggregate),
    Recompute(Recompute),
}

impl MatView {
    pub fn new(a: &Analysis) -> MatView {
        match &a.plan {
            Plan::Keyed { sources } => MatView::Keyed(Keyed::new(
                a.query.as_ref().expect("keyed plans have a query"),
                sources.clone(),
            )),
            Plan::Aggregate { plan } => MatView::Aggregate(Aggregate::new(plan.clone())),
            Plan::Recompute { .. } => {
                let r = Recompute::new(a.exec.clone());
                MatView::Recompute(match &a.topk {
                    Some(plan) => r.with_guard(plan.clone()),
                    None => r,
                })
            }
        }
    }

    /// Runs the query and materializes it; returns the rows (query order) with their ids.
    pub fn initial(&mut self, conn: &Connection) -> Result<Vec<(u64, Vec<Value>)>> {
        match self {
            MatView::Keyed(k) => k.initial(conn),
            MatView::Aggregate(g) => g.initial(conn),
            MatView::Recompute(r) => r.initial(conn),
        }
    }

    /// Whether the view is maintained from before-images ([`MatView::refresh_images`]); its
    /// [`MatView::refresh`] without them re-runs.
    pub fn needs_images(&self) -> bool {
        matches!(self, MatView::Aggregate(_))
    }

    /// The table whose before-images the view needs.
    pub fn image_table(&self) -> Option<&str> {
        match self {
            MatView::Aggregate(g) => Some(&g.plan().table),
            _ => None,
        }
    }

    /// Brings an aggregate view up to date from the before-images of its table's changed
    /// rows, on the database state the change set ends at (other views: [`MatView::refresh`]
    /// with the changed keys).
    pub fn refresh_images(&mut self, conn: &Connection, images: &Images) -> Result<Vec<RowChange>> {
        match self {
            MatView::Aggregate(g) => g.apply(conn, images),
            _ => self.recompute(conn),
        }
    }

    /// Brings the result up to date after `changes` (on the current database state).
    pub fn refresh(
        &mut self,
        conn: &Connection,
        tables: &std::collections::BTreeSet<String>,
        changes: &Changes,
    ) -> Result<Vec<RowChange>> {
        if !changes.keys().any(|t| tables.contains(t)) {
            return Ok(vec![]);
        }
        match self {
            MatView::Keyed(k) => k.refresh(conn, changes),
            // Without before-images an aggregate can only start over.
            MatView::Aggregate(g) => g.recompute(conn),
            MatView::Recompute(r) => r.refresh(conn, changes),
        }
    }

    /// Re-runs the whole query and diffs (after a restart, or when changes may have been missed).
    pub fn recompute(&mut self, conn: &Connection) -> Result<Vec<RowChange>> {
        match self {
            MatView::Keyed(k) => k.recompute(conn),
            MatView::Aggregate(g) => g.recompute(conn),
            MatView::Recompute(r) => r.recompute(conn),
        }
    }

    /// Current rows by row id.
    pub fn snapshot(&self) -> Vec<(u64, Vec<Value>)> {
        let mut rows: Vec<(u64, Vec<Value>)> = match self {
            MatView::Keyed(k) => k.rows().map(|(id, c)| (id, c.clone())).collect(),
            MatView::Aggregate(g) => g.rows().map(|(id, c)| (id, c.clone())).collect(),
            MatView::Recompute(r) => r.rows().map(|(id, c)| (id, c.clone())).collect(),
        };
        rows.sort_by_key(|r| r.0);
        rows
    }

    pub fn len(&self) -> usize {
        match self {
            MatView::Keyed(k) => k.len(),
            MatView::Aggregate(g) => g.len(),
            MatView::Recompute(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn export(&self) -> Vec<StoredRow> {
        match self {
            MatView::Keyed(k) => k.export(),
            MatView::Aggregate(g) => g.export(),
            MatView::Recompute(r) => r.export(),
        }
    }

    /// Restores persisted rows (instead of `initial`).
    pub fn import(&mut self, rows: Vec<StoredRow>, next_row_id: u64) {
        match self {
            MatView::Keyed(k) => k.import(rows, next_row_id),
            MatView::Aggregate(g) => g.import(rows, next_row_id),
            MatView::Recompute(r) => r.import(rows, next_row_id),
        }
    }

    pub fn next_row_id(&self) -> u64 {
        match self {
            MatView::Keyed(k) => k.next_row_id,
            MatView::Aggregate(g) => g.next_row_id,
            MatView::Recompute(r) => r.next_row_id,
        }
    }
}

/// Reads all rows of a prepared query as values.
pub(crate) fn read_rows(
    stmt: &mut rusqlite::Statement<'_>,
    params: &[Value],
) -> Result<Vec<Vec<Value>>> {
    let n = stmt.column_count();
    let mut out = Vec::new();
    // With no parameters given, keep whatever the caller bound (`raw_query` does not re-bind).
    let mut rows = if params.is_empty() {
        stmt.raw_query()
    } else {
        stmt.query(rusqlite::params_from_iter(params))?
    };
    while let Some(r) = rows.next()? {
        out.push(
            (0..n)
                .map(|i| crate::stmt::value_at(r, i))
                .collect::<Result<Vec<_>>>()?,
        );
    }
    Ok(out)
}
