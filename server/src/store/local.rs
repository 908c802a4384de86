//! Client transactions: run the statements in one `BEGIN IMMEDIATE` transaction with capture
//! on, then turn the captured net effect into clock updates stamped with a new local version.
//! A transaction whose net effect on replicated tables is empty gets no version.

use super::catalog::{Catalog, TableInfo};
use super::exec::{bind, Params, Statement};
use super::literal_insert::literal_insert_target;
use super::rows::{
    insert_new_clocks, load_clock, next_even, next_odd, put_clock, record_version, ClockBuf,
    TouchedRows, CLOCK_BATCH,
};
use super::ChangedRows;
use super::Store;
use crate::crdt::clock::{CellClock, RowClock, Stamp};
use crate::crdt::{pack, value};
use anyhow::{anyhow, Context, Result};
use rusqlite::types::Value;
use rusqlite::ErrorCode;
use std::time::{Duration, Instant};

/// Appended to client SQL before it goes through the writer's statement cache. The
/// authorizer that keeps clients away from internal tables runs when a statement is
/// prepared, and a cached statement is not prepared again: without a key of their own, a
/// client sending the exact text of one of the store's own statements would get the store's
/// already-authorized statement. No internal statement ends with this comment.
const CLIENT_SQL_MARK: &str = "\n/* verdigris: client statement */";

#[derive(Debug, Clone, PartialEq)]
pub struct StatementResult {
    pub rows_affected: usize,
    /// Seconds.
    pub time: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TxOutcome {
    pub results: Vec<StatementResult>,
    /// The new local version, or `None` if nothing replicated changed.
    pub version: Option<u64>,
    /// Seconds from start to commit.
    pub time: f64,
}

/// Why a transaction failed.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// The client's statement is at fault (bad SQL, constraint, denied): a 4xx.
    #[error("{message}")]
    Client { index: usize, message: String },
    #[error(
        "transaction timed out after {0:?}; split it into smaller transactions or raise ?timeout="
    )]
    Timeout(Duration),
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

fn is_client_error(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => matches!(
            f.code,
            ErrorCode::Unknown // SQLITE_ERROR: syntax, no such table/column…
                | ErrorCode::ConstraintViolation
                | ErrorCode::TypeMismatch
                | ErrorCode::ParameterOutOfRange
                | ErrorCode::TooBig
                | ErrorCode::AuthorizationForStatementDenied
                | ErrorCode::ReadOnly
        ),
        rusqlite::Error::SqlInputError { .. }
        | rusqlite::Error::MultipleStatement
        | rusqlite::Error::InvalidParameterName(_)
        | rusqlite::Error::InvalidParameterCount(..)
        | rusqlite::Error::Utf8Error(_)
        | rusqlite::Error::NulError(_) => true,
        _ => false,
    }
}

fn is_interrupt(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::OperationInterrupted)
}

impl Store {
    /// Runs client statements as one atomic transaction.
    pub fn transact(
        &mut self,
        stmts: &[Statement],
        timeout: Option<Duration>,
    ) -> Result<TxOutcome, TxError> {
        let start = Instant::now();
        super::run_cached(&self.conn, "BEGIN IMMEDIATE").context("beginning transaction")?;
        self.capture.lock().expect("capture lock").clear();
        self.capture.lock().expect("capture lock").enabled = true;
        self.guard.begin(timeout);
        let ran = self.run_statements(stmts, timeout);
        self.guard.end();
        self.capture.lock().expect("capture lock").enabled = false;
        let (effects, invalid) = {
            let mut c = self.capture.lock().expect("capture lock");
            (c.take(), c.invalid.take())
        };
        let ran = match (ran, invalid) {
            (Ok(_), Some(message)) => Err(TxError::Client {
                index: stmts.len().saturating_sub(1),
                message,
            }),
            (r, _) => r,
        };
        // The capture knows every touched row's values before the transaction: handed to
        // subscriptions that need them.
        let mut before = self
            .shared
            .images_wanted
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(Vec::new);
        let result = ran.and_then(|results| {
            let mut changed = Vec::new();
            let version = self
                .record_local(effects, &mut changed, &mut before)
                .map_err(TxError::Internal)?;
            Ok((results, version, changed))
        });
        match result {
            Ok((results, version, changed)) => {
                let committed = version.map(|v| super::Committed {
                    versions: vec![(self.actor, v)],
                    local: true,
                    changed,
                    seq: 0,
                    before: before.map(std::sync::Arc::new),
                    imaged: None,
                });
                if let Err(e) = self.commit_and_notify(committed) {
                    if let Err(e2) = self.conn.execute_batch("ROLLBACK") {
                        tracing::debug!(error = %e2, "rollback after a failed COMMIT (nothing open)");
                    }
                    return Err(TxError::Internal(anyhow!(e).context("committing")));
                }
                if let Some(v) = version {
                    self.local_max = v;
                }
                Ok(TxOutcome {
                    results,
                    version,
                    time: start.elapsed().as_secs_f64(),
                })
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn run_statements(
        &mut self,
        stmts: &[Statement],
        timeout: Option<Duration>,
    ) -> Result<Vec<StatementResult>, TxError> {
        let mut results = Vec::with_capacity(stmts.len());
        let catalog = self.shared.catalog();
        // A run of statements with the same SQL (a batch of inserts, say) keeps one prepared
        // statement instead of returning it to the cache and looking it up again each time.
        let mut held: Option<(usize, rusqlite::CachedStatement<'_>)> = None;
        // Each statement's time runs from the previous one's end: one clock read per statement.
        let mut t0 = Instant::now();
        for (index, s) in stmts.iter().enumerate() {
            let failure = |e: rusqlite::Error| -> TxError {
                if is_interrupt(&e) {
                    return TxError::Timeout(timeout.unwrap_or_default());
                }
                if let Some(reason) = self.guard.take_denial() {
                    return TxError::Client {
                        index,
                        message: reason,
                    };
                }
                if is_client_error(&e) {
                    TxError::Client {
                        index,
                        message: e.to_string().replace(CLIENT_SQL_MARK, ""),
                    }
                } else {
                    TxError::Internal(anyhow!(e))
                }
            };
            let reuse = matches!(&held, Some((i, _)) if stmts[*i].sql == s.sql);
            if !reuse {
                let key = format!("{}{CLIENT_SQL_MARK}", s.sql.trim());
                held = Some((index, self.conn.prepare_cached(&key).map_err(failure)?));
                let trusted = literal_insert_target(&s.sql)
                    .and_then(|name| catalog.get(&name))
                    .filter(|t| t.literal_inserts_are_utf8)
                    .map(|t| t.id);
                self.capture.lock().expect("capture lock").trusted = trusted;
            }
            let stmt = &mut held.as_mut().expect("a prepared statement").1;
            // Positional parameters rebind every slot (bind checks the count); names may not.
            if reuse && !matches!(s.params, Params::Positional(_)) {
                stmt.clear_bindings();
            }
            bind(stmt, &s.params).map_err(|message| TxError::Client { index, message })?;
            // Statements that return rows (RETURNING, SELECT) are stepped to completion.
            let mut rows = stmt.raw_query();
            loop {
                match rows.next() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        drop(rows);
                        return Err(failure(e));
                    }
                }
            }
            drop(rows);
            let t1 = Instant::now();
            results.push(StatementResult {
                rows_affected: self.conn.changes() as usize,
                time: (t1 - t0).as_secs_f64(),
            });
            t0 = t1;
        }
        Ok(results)
    }

    /// Writes clocks for the captured effects; returns the new version if anything changed.
    fn record_local(
        &mut self,
        effects: Vec<super::capture::RowEffect>,
        changed: &mut ChangedRows,
        images: &mut Option<Vec<Option<Vec<rusqlite::types::Value>>>>,
    ) -> Result<Option<u64>> {
        if effects.is_empty() {
            return Ok(None);
        }
        let catalog = self.shared.catalog();
        let version = self.local_max + 1;
        let site = self.local_site;
        let seq = std::cell::Cell::new(0u64);
        let next = || {
            let s = Stamp {
                site,
                db_version: version,
                seq: seq.get(),
            };
            seq.set(seq.get() + 1);
            s
        };
        let mut touched = TouchedRows::default();
        // Clocks of inserted rows, written in batches per table.
        let mut fresh: std::collections::BTreeMap<u32, FreshClocks> = Default::default();
        let mut scratch = RowClock::default();
        for e in effects {
            let t = catalog
                .by_id(e.table)
                .context("captured a change for an unknown table")?;
            let row_event_needed = t.value_cols.is_empty();
            let seq_before = seq.get();
            match (&e.before, e.after) {
                (None, false) => {}
                (None, true) => {
                    // Insert. Try the common case (never seen) first: one write.
                    scratch.cl = 1;
                    scratch.row_stamp = row_event_needed.then(&next);
                    scratch.cells.clear();
                    for c in &t.value_cols {
                        scratch.cells.push(CellClock {
                            col: *c as u32,
                            col_version: 1,
                            stamp: next(),
                        });
                    }
                    let batch = fresh.entry(t.id).or_default();
                    batch.push(&e.pk, &scratch)?;
                    if batch.len() == CLOCK_BATCH {
                        self.write_fresh_clocks(t, batch)?;
                        batch.clear();
                    }
                }
                (Some(_), false) => {
                    let pk = pack::unpack(&e.pk).context("captured key")?;
                    let old = load_clock(&self.conn, t, &pk)?.unwrap_or(RowClock {
                        cl: 1,
                        ..Default::default()
                    });
                    let clock = RowClock {
                        cl: next_even(old.cl),
                        row_stamp: Some(next()),
                        cells: vec![],
                    };
                    put_clock(&self.conn, t, &pk, &clock)?;
                }
                (Some(before), true) => {
                    let pk = pack::unpack(&e.pk).context("captured key")?;
                    let after = e
                        .after_values
                        .as_ref()
                        .context("update without final values")?;
                    let old = load_clock(&self.conn, t, &pk)?.unwrap_or(RowClock {
                        cl: 1,
                        ..Default::default()
                    });
                    let mut clock = old.clone();
                    for &c in &t.value_cols {
                        let (b, a) = (before.get(c), after.get(c));
                        if let (Some(b), Some(a)) = (b, a) {
                            if value::same(b, a) {
                                continue;
                            }
                        }
                        let cv = old.cell(c as u32).map(|x| x.col_version).unwrap_or(0) + 1;
                        clock.set_cell(CellClock {
                            col: c as u32,
                            col_version: cv,
                            stamp: next(),
                        });
                    }
                    if clock != old {
                        put_clock(&self.conn, t, &pk, &clock)?;
                    }
                }
            }
            if seq.get() != seq_before {
                touched.push(t.id, &e.pk);
                changed.push((t.shared_name.clone(), e.pk));
                if let Some(images) = images {
                    images.push(e.before);
                }
            }
        }
        for (tid, batch) in &fresh {
            if batch.len() > 0 {
                let t = catalog.by_id(*tid).context("table vanished")?;
                self.write_fresh_clocks(t, batch)?;
            }
        }
        if seq.get() == 0 {
            return Ok(None);
        }
        let ts = self.hlc.now();
        record_version(&self.conn, site, version, seq.get() - 1, ts, touched)?;
        Ok(Some(version))
    }

    /// Writes the clocks of inserted rows; a row that already had one (re-insert after a
    /// delete) starts a new life with the next odd causal length.
    fn write_fresh_clocks(&self, t: &TableInfo, batch: &FreshClocks) -> Result<()> {
        let rows = batch.rows(t.pk_cols.len());
        let inserted = insert_new_clocks(&self.conn, t, &rows)?;
        for ((pk, clock), done) in rows.iter().zip(inserted) {
            if !done {
                let old = load_clock(&self.conn, t, pk)?.unwrap_or_default();
                let mut clock = RowClock::decode(clock).context("decoding a new clock")?;
                clock.cl = next_odd(old.cl);
                put_clock(&self.conn, t, pk, &clock)?;
            }
        }
        Ok(())
    }

    /// Keeps the client-SQL guard in step with the catalog.
    pub(super) fn refresh_guard(&self, catalog: &Catalog) {
        self.guard.set_tables(catalog);
    }
}

/// The clocks of rows one transaction inserted into one table, gathered for multi-row
/// inserts: key values and encoded clocks side by side, with no allocation per row.
#[derive(Debug, Default)]
struct FreshClocks {
    /// The key values of every row, one key after the other.
    keys: Vec<Value>,
    clocks: ClockBuf,
}

impl FreshClocks {
    fn push(&mut self, packed_key: &[u8], clock: &RowClock) -> Result<()> {
        pack::unpack_into(packed_key, &mut self.keys).context("captured key")?;
        self.clocks.push(clock);
        Ok(())
    }

    fn len(&self) -> usize {
        self.clocks.len()
    }

    fn clear(&mut self) {
        self.keys.clear();
        self.clocks.clear();
    }

    /// (key values, encoded clock) per row, for keys of `width` columns.
    fn rows(&self, width: usize) -> Vec<(&[Value], &[u8])> {
        self.keys.chunks(width).zip(self.clocks.iter()).collect()
    }
}
