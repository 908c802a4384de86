//! Records the net effect of a local transaction on replicated tables, through SQLite's
//! preupdate hook: for every row touched, its state when first touched ("before") and whether
//! it exists at the end ("after"). Comparing the two at commit time gives exact no-op filtering
//! — an `UPDATE` that sets the same values, an `INSERT OR REPLACE` of an identical row, or a
//! delete followed by a re-insert of the same values produce no change at all.
//!
//! The hook only reads values; the store writes clocks after the statements ran. Capture is
//! off while the store itself writes (clocks, remote merges), except for *images* mode: while
//! a remote merge runs and a subscription needs before-images ([`Capture::images`]), only each
//! touched row's state when first touched is recorded.

use super::catalog::Catalog;
use crate::crdt::pack;
use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use rusqlite::hooks::{Action, PreUpdateCase};
use rusqlite::types::{Value, ValueRef};
use rusqlite::Connection;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

/// Replicated TEXT must be UTF-8: JSON and the wire format cannot carry anything else.
fn check_text<'a>(table: &str, n: i32, get: impl Fn(i32) -> ValueRef<'a>) -> Option<String> {
    (0..n).find(|i| matches!(get(*i), ValueRef::Text(b) if std::str::from_utf8(b).is_err())).map(|i| {
        format!(
            "table {table}: column {} would hold TEXT that is not valid UTF-8; store binary data as a BLOB (e.g. X'..' or a byte-array parameter)",
            i + 1
        )
    })
}

/// Owned value; invalid UTF-8 (already reported by `check_text`) becomes NULL here.
fn owned(v: ValueRef<'_>) -> Value {
    verdigris_subscriptions::stmt::owned(v).unwrap_or(Value::Null)
}

/// A row's values, `n` columns read through `get`.
fn row_values<'a>(n: i32, get: impl Fn(i32) -> ValueRef<'a>) -> Vec<Value> {
    (0..n).map(|i| owned(get(i))).collect()
}

/// A row's key and its values before (`None`: it did not exist).
type Image = (Vec<u8>, Option<Vec<Value>>);

/// One row's net effect within the transaction.
#[derive(Debug)]
pub struct RowEffect {
    pub table: u32,
    pub pk: Vec<u8>,
    /// All column values when the transaction first touched the row (`None`: did not exist).
    pub before: Option<Vec<Value>>,
    /// Whether the row exists at the end.
    pub after: bool,
    /// Final values, kept only when `before` is known (needed to compare).
    pub after_values: Option<Vec<Value>>,
}

#[derive(Debug)]
struct CapturedTable {
    id: u32,
    pk_positions: Vec<usize>,
    /// The key is the rowid, which the hook gets without reading the row.
    rowid_key: bool,
}

impl CapturedTable {
    /// The packed primary key of a row whose columns are read through `get`.
    fn key<'a>(&self, get: impl Fn(i32) -> ValueRef<'a>) -> Vec<u8> {
        pack::pack(self.pk_positions.iter().map(|p| get(*p as i32)))
    }
}

#[derive(Debug, Default)]
pub struct Capture {
    pub enabled: bool,
    /// Records only before-images (for the store's own merges; see the module docs), of the
    /// tables in `image_tables`.
    pub images: bool,
    pub image_tables: std::collections::HashSet<u32>,
    /// Set when a write stored TEXT that is not UTF-8 in a replicated table (the transaction fails).
    pub invalid: Option<String>,
    /// The table the running statement inserts only given values into (see
    /// `literal_insert`): its new rows need no UTF-8 check.
    pub trusted: Option<u32>,
    tables: HashMap<String, CapturedTable>,
    /// Positions in `effects`, found by (table, key) without keeping a second copy of the key.
    index: HashTable<usize>,
    hasher: DefaultHashBuilder,
    effects: Vec<RowEffect>,
}

impl Capture {
    pub fn new(catalog: &Catalog) -> Capture {
        let mut c = Capture::default();
        c.set_tables(catalog);
        c
    }

    pub fn set_tables(&mut self, catalog: &Catalog) {
        self.tables = catalog
            .tables()
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    CapturedTable {
                        id: t.id,
                        pk_positions: t.pk_cols.clone(),
                        rowid_key: t.rowid_key,
                    },
                )
            })
            .collect();
    }

    /// Takes the recorded effects (in first-touch order) and resets.
    pub fn take(&mut self) -> Vec<RowEffect> {
        self.index.clear();
        std::mem::take(&mut self.effects)
    }

    pub fn clear(&mut self) {
        self.index.clear();
        self.effects.clear();
        self.invalid = None;
        self.trusted = None;
    }

    /// Images mode: records each touched row's values when first touched (`None`: the row
    /// did not exist), nothing else.
    fn on_image(&mut self, table: &str, case: &PreUpdateCase) {
        let Some(t) = self.tables.get(table) else {
            return;
        };
        if !self.image_tables.contains(&t.id) {
            return;
        }
        let id = t.id;
        // (key, values before) of the row, and the new key of a key-changing update (a row
        // that did not exist).
        let (first, second): (Image, Option<Vec<u8>>) = match case {
            PreUpdateCase::Insert(new) => {
                let pk = if t.rowid_key {
                    pack::pack(std::iter::once(ValueRef::Integer(new.get_new_row_id())))
                } else {
                    let get = |i: i32| new.get_new_column_value(i).unwrap_or(ValueRef::Null);
                    t.key(get)
                };
                ((pk, None), None)
            }
            PreUpdateCase::Delete(old) => {
                let n = old.get_column_count();
                let get = |i: i32| old.get_old_column_value(i).unwrap_or(ValueRef::Null);
                let pk = t.key(get);
                ((pk, Some(row_values(n, get))), None)
            }
            PreUpdateCase::Update {
                old_value_accessor: old,
                new_value_accessor: new,
            } => {
                let n = old.get_column_count();
                let get_old = |i: i32| old.get_old_column_value(i).unwrap_or(ValueRef::Null);
                let get_new = |i: i32| new.get_new_column_value(i).unwrap_or(ValueRef::Null);
                let old_pk = t.key(get_old);
                let new_pk = t.key(get_new);
                let moved = (new_pk != old_pk).then_some(new_pk);
                ((old_pk, Some(row_values(n, get_old))), moved)
            }
            PreUpdateCase::Unknown => return,
        };
        let (pk, before) = first;
        self.entry(id, pk, || before);
        if let Some(pk) = second {
            self.entry(id, pk, || None);
        }
    }

    /// In images mode: the position of the before-image recorded for a row, if it was
    /// touched.
    pub fn image_of(&self, table: u32, pk: &[u8]) -> Option<usize> {
        let hash = self.hasher.hash_one((table, pk));
        self.index
            .find(hash, |&i| {
                self.effects[i].table == table && self.effects[i].pk == pk
            })
            .copied()
    }

    /// In images mode: takes the before-image at `i` (see [`Capture::image_of`]).
    pub fn take_image(&mut self, i: usize) -> Option<Vec<Value>> {
        self.effects[i].before.take()
    }

    fn entry(
        &mut self,
        table: u32,
        pk: Vec<u8>,
        before: impl FnOnce() -> Option<Vec<Value>>,
    ) -> &mut RowEffect {
        let Capture {
            index,
            hasher,
            effects,
            ..
        } = self;
        let hash = hasher.hash_one((table, pk.as_slice()));
        let found = index
            .find(hash, |&i| effects[i].table == table && effects[i].pk == pk)
            .copied();
        let i = match found {
            Some(i) => i,
            None => {
                let next = effects.len();
                effects.push(RowEffect {
                    table,
                    pk,
                    before: before(),
                    after: false,
                    after_values: None,
                });
                index.insert_unique(hash, next, |&i| {
                    hasher.hash_one((effects[i].table, effects[i].pk.as_slice()))
                });
                next
            }
        };
        &mut effects[i]
    }

    fn on_change(&mut self, table: &str, case: &PreUpdateCase) {
        let Some(t) = self.tables.get(table) else {
            return;
        };
        let id = t.id;
        match case {
            PreUpdateCase::Insert(new) => {
                let n = new.get_column_count();
                let get = |i: i32| new.get_new_column_value(i).unwrap_or(ValueRef::Null);
                // Reading any value makes SQLite decode the whole new row. The UTF-8 check is
                // skipped when the statement inserts only given values; a rowid key comes
                // without reading the row, so such rows are not decoded at all.
                if self.invalid.is_none() && self.trusted != Some(id) {
                    self.invalid = check_text(table, n, get);
                }
                let pk = if t.rowid_key {
                    pack::pack(std::iter::once(ValueRef::Integer(new.get_new_row_id())))
                } else {
                    t.key(get)
                };
                let e = self.entry(id, pk, || None);
                e.after = true;
                if e.before.is_some() {
                    e.after_values = Some(row_values(n, get));
                }
            }
            PreUpdateCase::Delete(old) => {
                let n = old.get_column_count();
                let get = |i: i32| old.get_old_column_value(i).unwrap_or(ValueRef::Null);
                let pk = t.key(get);
                let e = self.entry(id, pk, || Some(row_values(n, get)));
                e.after = false;
                e.after_values = None;
            }
            PreUpdateCase::Update {
                old_value_accessor: old,
                new_value_accessor: new,
            } => {
                let n = old.get_column_count();
                let get_old = |i: i32| old.get_old_column_value(i).unwrap_or(ValueRef::Null);
                let get_new = |i: i32| new.get_new_column_value(i).unwrap_or(ValueRef::Null);
                if self.invalid.is_none() {
                    self.invalid = check_text(table, n, get_new);
                }
                let old_pk = t.key(get_old);
                let new_pk = t.key(get_new);
                let moved = old_pk != new_pk;
                let e = self.entry(id, old_pk, || Some(row_values(n, get_old)));
                if moved {
                    // A key change is a delete of the old key and an insert of the new one.
                    e.after = false;
                    e.after_values = None;
                    let e = self.entry(id, new_pk, || None);
                    e.after = true;
                    if e.before.is_some() {
                        e.after_values = Some(row_values(n, get_new));
                    }
                } else {
                    e.after = true;
                    e.after_values = Some(row_values(n, get_new));
                }
            }
            PreUpdateCase::Unknown => {}
        }
    }
}

/// Installs the hook on the writer connection.
pub fn install(conn: &Connection, capture: Arc<Mutex<Capture>>) -> rusqlite::Result<()> {
    conn.preupdate_hook(Some(
        move |_action: Action, db: &str, table: &str, case: &PreUpdateCase| {
            if db != "main" {
                return;
            }
            let mut c = capture.lock().expect("capture lock");
            if c.enabled {
                c.on_change(table, case);
            } else if c.images {
                c.on_image(table, case);
            }
        },
    ))
}
