//! `POST /v1/queries[?timeout=<secs>]`: one read-only statement, answered as NDJSON:
//! `{"columns":[…]}`, `{"row":[n,[cells]]}`…, then `{"eoq":{"time":s}}` or `{"error":…}`.
//! [`start`] runs a query for any transport (the WebSocket `query` message too).

use super::{error, ndjson, Api, Body, Query};
use crate::store::reader::{run_query, QueryError, QueryEvent};
use crate::store::Statement;
use bytes::BytesMut;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use verdigris_api_types::TypedQueryEvent;

/// Hand events over in chunks of this many, or this old.
const CHUNK_EVENTS: usize = 256;
const CHUNK_AGE: Duration = Duration::from_millis(10);
/// Chunks buffered ahead of a slow reader (the query waits beyond that).
const CHUNKS_AHEAD: usize = 16;

/// A running query: `ready` says whether the statement was accepted (before any row); the
/// events then arrive in chunks on `events`, the last chunk ending with `eoq` or `error`.
pub struct Running {
    pub ready: oneshot::Receiver<Result<(), QueryError>>,
    pub events: mpsc::Receiver<Vec<QueryEvent>>,
}

/// The timeout for a request: `asked` seconds (0 = none), or the node's default.
pub fn timeout(api: &Api, asked: Option<f64>) -> Result<Option<Duration>, String> {
    let secs = asked.unwrap_or(api.node.config.api.query_timeout_secs as f64);
    super::transactions::timeout(Some(secs))
}

/// Runs `stmt` on the read pool, off the async workers. Dropping the receivers stops it.
pub fn start(api: &Api, stmt: Statement, timeout: Option<Duration>) -> Running {
    let (ready_tx, ready) = oneshot::channel::<Result<(), QueryError>>();
    let (tx, events) = mpsc::channel::<Vec<QueryEvent>>(CHUNKS_AHEAD);
    let pool = api.node.reads.clone();
    tokio::task::spawn_blocking(move || {
        let conn = match pool.get() {
            Ok(c) => c,
            Err(e) => {
                // The requester may be gone already; then nobody needs the error.
                let _ = ready_tx.send(Err(QueryError::Internal(e)));
                return;
            }
        };
        let mut ready = Some(ready_tx);
        let mut chunk = Vec::new();
        let mut last_flush = Instant::now();
        let result = run_query(&conn, &stmt, timeout, |ev| {
            if let Some(r) = ready.take() {
                if r.send(Ok(())).is_err() {
                    return false;
                }
            }
            let last = matches!(
                ev,
                TypedQueryEvent::EndOfQuery { .. } | TypedQueryEvent::Error(_)
            );
            chunk.push(ev);
            if last || chunk.len() >= CHUNK_EVENTS || last_flush.elapsed() >= CHUNK_AGE {
                last_flush = Instant::now();
                return tx.blocking_send(std::mem::take(&mut chunk)).is_ok();
            }
            true
        });
        if let (Err(e), Some(r)) = (result, ready.take()) {
            // As above: a requester that went away needs no answer.
            let _ = r.send(Err(e));
        }
    });
    Running { ready, events }
}

/// The response for a query that failed before its first row.
pub fn refused(e: QueryError) -> (StatusCode, String) {
    match e {
        QueryError::Client(msg) => (StatusCode::BAD_REQUEST, msg),
        QueryError::Internal(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

pub async fn handle(api: &Api, req: Request<Incoming>) -> Response<Body> {
    let asked = match Query::parse(&req).number::<f64>("timeout") {
        Ok(t) => t,
        Err(r) => return r,
    };
    let timeout = match timeout(api, asked) {
        Ok(t) => t,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let stmt = match super::read_statement(api, req).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Running { ready, events } = start(api, stmt, timeout);
    match ready.await {
        Ok(Ok(())) => {
            let chunks = super::queries::stream_of(events);
            ndjson::response(futures_util::StreamExt::map(chunks, |chunk| {
                let mut out = BytesMut::new();
                for ev in &chunk {
                    ndjson::push_line(&mut out, ev);
                }
                out.freeze()
            }))
        }
        Ok(Err(e)) => {
            let (status, msg) = refused(e);
            error(status, msg)
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "query task ended unexpectedly",
        ),
    }
}

/// Adapts an mpsc receiver into a `Stream`.
pub fn stream_of<T>(mut rx: mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
