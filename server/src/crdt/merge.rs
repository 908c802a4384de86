//! The merge rules, as pure functions.
//!
//! The state of one row on one node is its causal length `cl` plus, for the current life, the
//! winning (col_version, value, actor) of every written column ([`RowState`]). Merging two
//! states is a join ([`RowState::join`]): the larger `cl` wins outright (an older life's cells
//! are discarded, so a re-created row never shows values from a previous life); with equal
//! `cl` each column keeps the larger `(col_version, value, actor)` — value order from
//! [`super::value::compare`], actor ids compared byte-wise. A join is idempotent, commutative
//! and associative, so any order and duplication of the same changes converges.
//!
//! A single replicated change is a one-column (or, for deletes and sentinels, zero-column)
//! state; [`decide`] is the join specialised to "state ⊔ one change", expressed as the action
//! the store must perform. Tests check that the two agree.

use super::value;
use super::ActorId;
use rusqlite::types::Value;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// One incoming change for a row.
#[derive(Clone, Debug)]
pub struct Incoming<'a> {
    pub cl: i64,
    pub actor: ActorId,
    /// `None` for the row sentinel (row created/deleted without a column value).
    pub cell: Option<IncomingCell<'a>>,
}

#[derive(Clone, Debug)]
pub struct IncomingCell<'a> {
    pub col: u32,
    pub col_version: i64,
    pub value: &'a Value,
}

/// What the store must do to apply an incoming change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The change loses (or is already known).
    Ignore,
    /// The row is deleted: remove it, drop all cell clocks, set `cl`.
    Delete { cl: i64 },
    /// A new life without values: the row exists with its key and column defaults; cells dropped.
    Resurrect { cl: i64 },
    /// The incoming cell wins. With `new_life`, first reset the row to key + defaults and drop
    /// all cell clocks, then set `cl` to it.
    SetCell { new_life: Option<i64> },
}

/// Decides the fate of `inc` against the local row.
///
/// `local_cl` is 0 for a row this node has never seen. `local_cell` is the clock of the same
/// column (col_version and writing actor) in the current life; `local_value` is only called on
/// a col_version tie, so the caller can load the value lazily.
pub fn decide(
    local_cl: i64,
    local_cell: Option<(i64, ActorId)>,
    local_value: impl FnOnce() -> Value,
    inc: &Incoming<'_>,
) -> Outcome {
    if inc.cl < local_cl {
        return Outcome::Ignore;
    }
    let newer = inc.cl > local_cl;
    let Some(cell) = inc.cell.as_ref().filter(|_| inc.cl % 2 == 1) else {
        // A sentinel, or a change from a deleted life: only the causal length matters.
        return match (newer, inc.cl % 2 == 0) {
            (false, _) => Outcome::Ignore,
            (true, true) => Outcome::Delete { cl: inc.cl },
            (true, false) => Outcome::Resurrect { cl: inc.cl },
        };
    };
    if newer {
        return Outcome::SetCell {
            new_life: Some(inc.cl),
        };
    }
    let Some((local_cv, local_actor)) = local_cell else {
        return Outcome::SetCell { new_life: None };
    };
    let wins = cell
        .col_version
        .cmp(&local_cv)
        .then_with(|| value::compare(cell.value, &local_value()))
        .then_with(|| inc.actor.cmp(&local_actor))
        == Ordering::Greater;
    if wins {
        Outcome::SetCell { new_life: None }
    } else {
        Outcome::Ignore
    }
}

/// The winning state of one column.
#[derive(Clone, Debug, PartialEq)]
pub struct CellState {
    pub col_version: i64,
    pub value: Value,
    pub actor: ActorId,
}

impl CellState {
    fn key_cmp(&self, other: &CellState) -> Ordering {
        self.col_version
            .cmp(&other.col_version)
            .then_with(|| value::compare(&self.value, &other.value))
            .then_with(|| self.actor.cmp(&other.actor))
    }
}

/// The full replicated state of one row (the model the store implements on SQLite).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RowState {
    pub cl: i64,
    pub cells: BTreeMap<u32, CellState>,
}

impl RowState {
    /// The state that a single change represents.
    pub fn of_change(inc: &Incoming<'_>) -> RowState {
        let mut cells = BTreeMap::new();
        if let Some(c) = inc.cell.as_ref().filter(|_| inc.cl % 2 == 1) {
            cells.insert(
                c.col,
                CellState {
                    col_version: c.col_version,
                    value: c.value.clone(),
                    actor: inc.actor,
                },
            );
        }
        RowState { cl: inc.cl, cells }
    }

    /// The join of two states.
    pub fn join(&self, other: &RowState) -> RowState {
        match self.cl.cmp(&other.cl) {
            Ordering::Greater => self.clone(),
            Ordering::Less => other.clone(),
            Ordering::Equal => {
                let mut cells = self.cells.clone();
                for (col, theirs) in &other.cells {
                    match cells.get(col) {
                        Some(mine) if mine.key_cmp(theirs) != Ordering::Less => {}
                        _ => {
                            cells.insert(*col, theirs.clone());
                        }
                    }
                }
                RowState { cl: self.cl, cells }
            }
        }
    }

    /// Applies one change the way the store does: through [`decide`].
    pub fn apply(&mut self, inc: &Incoming<'_>) {
        let local_cell = inc
            .cell
            .as_ref()
            .and_then(|c| self.cells.get(&c.col))
            .map(|c| (c.col_version, c.actor));
        let local_value = || {
            inc.cell
                .as_ref()
                .and_then(|c| self.cells.get(&c.col))
                .map(|c| c.value.clone())
                .unwrap_or(Value::Null)
        };
        match decide(self.cl, local_cell, local_value, inc) {
            Outcome::Ignore => {}
            Outcome::Delete { cl } | Outcome::Resurrect { cl } => {
                self.cl = cl;
                self.cells.clear();
            }
            Outcome::SetCell { new_life } => {
                if let Some(cl) = new_life {
                    self.cl = cl;
                    self.cells.clear();
                }
                let c = inc.cell.as_ref().expect("SetCell only for cell changes");
                self.cells.insert(
                    c.col,
                    CellState {
                        col_version: c.col_version,
                        value: c.value.clone(),
                        actor: inc.actor,
                    },
                );
            }
        }
    }

    /// Whether the row is visible in the table.
    pub fn alive(&self) -> bool {
        self.cl % 2 == 1
    }
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
