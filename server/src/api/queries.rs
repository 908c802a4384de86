//! `POST /v1/queries[?timeout=<secs>]`: one read-only statement, answered as NDJSON:
//! `{"columns":[…]}`, `{"row":[n,[cells]]}`…, then `{"eoq":{"time":s}}` or `{"error":…}`.

use super::{error, json, numeric_param, Api, Body};
use crate::store::reader::{run_query, QueryError, QueryEvent};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use std::convert::Infallible;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Flush a chunk when it reaches this size or age.
const CHUNK_BYTES: usize = 16 * 1024;
const CHUNK_AGE: Duration = Duration::from_millis(10);

/// One NDJSON line for an event.
pub fn event_line(ev: &QueryEvent) -> Vec<u8> {
    let v = match ev {
        QueryEvent::Columns(c) => json!({ "columns": c }),
        QueryEvent::Row(id, cells) => json!({ "row": [id, json::cells(cells)] }),
        QueryEvent::End(t) => json!({ "eoq": { "time": t } }),
        QueryEvent::Error(e) => json!({ "error": e }),
    };
    let mut line = serde_json::to_vec(&v).expect("json");
    line.push(b'\n');
    line
}

pub async fn handle(api: &Api, req: Request<Incoming>) -> Response<Body> {
    let default = api.node.config.api.query_timeout_secs;
    let timeout = match numeric_param::<f64>(&req, "timeout") {
        Ok(t) => t.unwrap_or(default as f64),
        Err(r) => return r,
    };
    let timeout = (timeout > 0.0).then(|| Duration::from_secs_f64(timeout));
    let value = match super::read_json(api, req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let stmt = match json::statement(value) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let (ready_tx, ready_rx) = oneshot::channel::<Result<(), QueryError>>();
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    let pool = api.node.reads.clone();
    tokio::task::spawn_blocking(move || {
        let conn = match pool.get() {
            Ok(c) => c,
            Err(e) => {
                let _ = ready_tx.send(Err(QueryError::Internal(e)));
                return;
            }
        };
        let mut ready = Some(ready_tx);
        let mut buf = BytesMut::new();
        let mut last_flush = Instant::now();
        let result = run_query(&conn, &stmt, timeout, |ev| {
            if let Some(r) = ready.take() {
                if r.send(Ok(())).is_err() {
                    return false;
                }
            }
            let last = matches!(ev, QueryEvent::End(_) | QueryEvent::Error(_));
            buf.extend_from_slice(&event_line(&ev));
            if last || buf.len() >= CHUNK_BYTES || last_flush.elapsed() >= CHUNK_AGE {
                last_flush = Instant::now();
                return tx
                    .blocking_send(Ok(Frame::data(buf.split().freeze())))
                    .is_ok();
            }
            true
        });
        if let (Err(e), Some(r)) = (result, ready.take()) {
            let _ = r.send(Err(e));
        }
    });
    match ready_rx.await {
        Ok(Ok(())) => {
            let body = StreamBody::new(tokio_stream_from(rx)).boxed();
            let mut r = Response::new(body);
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                "application/x-ndjson".parse().expect("header"),
            );
            r
        }
        Ok(Err(QueryError::Client(msg))) => error(StatusCode::BAD_REQUEST, msg),
        Ok(Err(QueryError::Internal(e))) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "query task ended unexpectedly",
        ),
    }
}

/// Adapts an mpsc receiver into a `Stream`.
pub fn tokio_stream_from<T>(mut rx: mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
