//! The incremental query engine behind Verdigris subscriptions. No network code: it analyzes
//! a `SELECT`, materializes its result on a SQLite connection, and after every committed
//! change set computes the exact row diff (insert / update / delete) against the current
//! database state.
//!
//! - [`analyze`]: parse and validate the query, inline its parameters, find every table it
//!   depends on, and choose a maintenance [`analyze::Plan`].
//! - [`keyed`]: incremental maintenance for select-project-join queries (inner and LEFT joins):
//!   re-evaluate only the root rows related to the changed primary keys.
//! - [`aggregate`]: incremental `count`/`sum`/`total`/`avg`/`min`/`max` (with or without
//!   `GROUP BY`) and `DISTINCT` over one table, in O(groups) state, from the changed rows'
//!   before-images.
//! - [`semijoin`]: `x IN (SELECT pk FROM t WHERE …)` rewritten as a join, so [`keyed`]
//!   maintains it.
//! - [`recompute`]: everything else (other aggregates, LIMIT, subqueries, joins under
//!   aggregates, compound selects…): re-run and diff the result as a multiset.
//! - [`topk`]: `ORDER BY … LIMIT` kept by a window slid by the changed rows.
//! - [`matview`]: the common interface over both, and row changes.
//! - [`pack`], [`stmt`]: the packed primary-key format and client statements (shared with the
//!   server).

pub mod aggregate;
pub mod analyze;
pub mod family;
pub mod keyed;
pub mod matview;
pub mod pack;
pub mod recompute;
pub mod semijoin;
pub mod stmt;
pub mod topk;

pub use analyze::{analyze, Analysis, Plan, Schema, SubError};
pub use matview::{ChangeKind, MatView, RowChange};
