//! Read-only connections for queries, pooled, each with its own deadline guard.

use super::catalog::Catalog;
use super::exec::{bind, Statement};
use super::guard::Guard;
use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags};
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Keep at most this many idle connections.
const MAX_IDLE: usize = 16;

#[derive(Debug)]
pub struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<(Connection, Guard)>>,
}

pub struct PooledConn {
    conn: Option<(Connection, Guard)>,
    pool: Arc<ReadPool>,
}

impl Deref for PooledConn {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn.as_ref().expect("pooled connection").0
    }
}

impl DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn.as_mut().expect("pooled connection").0
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            let mut idle = self.pool.idle.lock().expect("pool lock");
            if idle.len() < MAX_IDLE {
                idle.push(c);
            }
        }
    }
}

impl PooledConn {
    pub fn guard(&self) -> &Guard {
        &self.conn.as_ref().expect("pooled connection").1
    }
}

impl ReadPool {
    pub fn new(path: PathBuf) -> Arc<ReadPool> {
        Arc::new(ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
        })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn get(self: &Arc<Self>) -> Result<PooledConn> {
        let existing = self.idle.lock().expect("pool lock").pop();
        let conn = match existing {
            Some(c) => c,
            None => {
                let conn = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY
                        | OpenFlags::SQLITE_OPEN_NO_MUTEX
                        | OpenFlags::SQLITE_OPEN_URI,
                )
                .with_context(|| format!("opening {} read-only", self.path.display()))?;
                super::configure_connection(&conn, false)?;
                let guard = Guard::install(&conn, &Catalog::default())?;
                (conn, guard)
            }
        };
        Ok(PooledConn {
            conn: Some(conn),
            pool: self.clone(),
        })
    }
}

/// Opens a read-only connection configured like the pool's (without a guard).
pub fn open_read_connection(path: &std::path::Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {} read-only", path.display()))?;
    super::configure_connection(&conn, false)?;
    Ok(conn)
}

/// What a query produces, in order: `Columns`, any number of `Row`s, then `EndOfQuery` (with
/// the seconds spent) or `Error`.
pub use verdigris_api_types::QueryEvent;
use verdigris_api_types::TypedQueryEvent;

/// Errors detected before any row is produced (answered with a 4xx).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Client(String),
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

/// Prepares a read-only statement; refuses writes with a message that says where they go.
pub fn prepare<'c>(
    conn: &'c Connection,
    s: &Statement,
) -> Result<rusqlite::Statement<'c>, QueryError> {
    let mut stmt = conn
        .prepare(&s.sql)
        .map_err(|e| QueryError::Client(e.to_string()))?;
    if !stmt.readonly() {
        return Err(QueryError::Client(
            "statement is not read-only: /v1/queries only runs reads; send writes to /v1/transactions".into(),
        ));
    }
    if stmt.column_count() == 0 {
        return Err(QueryError::Client(
            "statement returns no rows: /v1/queries runs queries (SELECT, WITH, VALUES); send writes to /v1/transactions".into(),
        ));
    }
    bind(&mut stmt, &s.params).map_err(QueryError::Client)?;
    Ok(stmt)
}

/// Runs a query, feeding events to `sink` until it returns false (client gone).
pub fn run_query(
    conn: &PooledConn,
    s: &Statement,
    timeout: Option<Duration>,
    mut sink: impl FnMut(QueryEvent) -> bool,
) -> Result<(), QueryError> {
    let start = Instant::now();
    let mut stmt = prepare(conn, s)?;
    let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let n = columns.len();
    if !sink(TypedQueryEvent::Columns(columns)) {
        return Ok(());
    }
    conn.guard().begin(timeout);
    let mut rows = stmt.raw_query();
    let mut row_id = 0u64;
    let outcome = loop {
        match rows.next() {
            Ok(Some(r)) => {
                row_id += 1;
                let cells: rusqlite::Result<Vec<verdigris_api_types::SqliteValue>> = (0..n)
                    .map(|i| verdigris_subscriptions::stmt::value_at(r, i).map(Into::into))
                    .collect();
                match cells {
                    Ok(cells) => {
                        if !sink(TypedQueryEvent::Row(row_id, cells)) {
                            break None;
                        }
                    }
                    Err(e) => break Some(TypedQueryEvent::Error(e.to_string())),
                }
            }
            Ok(None) => {
                break Some(TypedQueryEvent::EndOfQuery {
                    time: start.elapsed().as_secs_f64(),
                    change_id: None,
                })
            }
            Err(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::OperationInterrupted =>
            {
                break Some(TypedQueryEvent::Error(format!(
                    "query timed out after {:?}; add a LIMIT, an index, or raise ?timeout=",
                    timeout.unwrap_or_default()
                )))
            }
            Err(e) => break Some(TypedQueryEvent::Error(e.to_string())),
        }
    };
    drop(rows);
    conn.guard().end();
    if let Some(ev) = outcome {
        sink(ev);
    }
    Ok(())
}
