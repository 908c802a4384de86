//! `POST /v1/subscriptions[?from=&skip_rows=]`, `GET /v1/subscriptions/{id}[?from=&skip_rows=]`
//! and `POST /v1/updates/{table}`: NDJSON streams of subscription events.

use super::{error, json, numeric_param, query_param, Api, Body};
use crate::subs::{Attach, SubsError};
use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::sync::atomic::Ordering;

fn skip_rows(req: &Request<Incoming>) -> Result<bool, Response<Body>> {
    match query_param(req, "skip_rows") {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(v) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("skip_rows={v:?} must be true or false"),
        )),
    }
}

fn failure(e: SubsError) -> Response<Body> {
    match e {
        SubsError::BadRequest(m) => error(StatusCode::BAD_REQUEST, m),
        SubsError::NotFound(m) => error(StatusCode::NOT_FOUND, m),
        SubsError::Internal(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

/// Streams `initial`, then every batch newer than `start`; ends with an error event naming
/// the last change id sent if the listener was dropped for being too slow.
fn stream_response(a: Attach, updates: bool) -> Response<Body> {
    struct S {
        initial: Option<Bytes>,
        rx: Option<tokio::sync::mpsc::Receiver<crate::subs::Batch>>,
        last: u64,
        a_id: String,
        lagged: std::sync::Arc<std::sync::atomic::AtomicBool>,
        done: bool,
    }
    let st = S {
        initial: Some(a.initial),
        rx: a.rx,
        last: a.start,
        a_id: a.id.clone(),
        lagged: a.lagged,
        done: false,
    };
    let body = stream::unfold(st, move |mut st| async move {
        if st.done {
            return None;
        }
        if let Some(i) = st.initial.take() {
            if !i.is_empty() {
                return Some((Ok::<_, Infallible>(Frame::data(i)), st));
            }
        }
        loop {
            let Some(rx) = st.rx.as_mut() else {
                return None;
            };
            match rx.recv().await {
                Some(b) if b.last_id != 0 && b.last_id <= st.last => continue,
                Some(b) => {
                    st.last = st.last.max(b.last_id);
                    return Some((Ok(Frame::data(b.bytes)), st));
                }
                None => {
                    st.done = true;
                    if st.lagged.load(Ordering::SeqCst) {
                        let mut buf = Vec::new();
                        let msg = if updates {
                            "listener too slow: it fell too far behind and was disconnected; re-open the stream".to_string()
                        } else {
                            format!(
                                "subscriber too slow: disconnected after change id {}; resume with GET /v1/subscriptions/{}?from={}",
                                st.last, st.a_id, st.last
                            )
                        };
                        crate::subs::events::error(&mut buf, &msg);
                        return Some((Ok(Frame::data(Bytes::from(buf))), st));
                    }
                    return None;
                }
            }
        }
    });
    let mut r = Response::new(StreamBody::new(body).boxed());
    let h = r.headers_mut();
    h.insert(
        "content-type",
        "application/x-ndjson".parse().expect("header"),
    );
    if let Ok(v) = a.id.parse() {
        h.insert("corro-query-id", v);
    }
    if !a.hash.is_empty() {
        if let Ok(v) = a.hash.parse() {
            h.insert("corro-query-hash", v);
        }
    }
    r
}

pub async fn subscribe(api: &Api, req: Request<Incoming>) -> Response<Body> {
    let (from, skip) = match (numeric_param::<u64>(&req, "from"), skip_rows(&req)) {
        (Ok(f), Ok(s)) => (f, s),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let stmt = match super::read_json(api, req)
        .await
        .and_then(|v| json::statement(v).map_err(|e| error(StatusCode::BAD_REQUEST, e)))
    {
        Ok(s) => s,
        Err(r) => return r,
    };
    let subs = api.node.subs.clone();
    match tokio::task::spawn_blocking(move || subs.subscribe(&stmt, from, skip)).await {
        Ok(Ok(a)) => stream_response(a, false),
        Ok(Err(e)) => failure(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub async fn get(api: &Api, req: Request<Incoming>, id: &str) -> Response<Body> {
    let (from, skip) = match (numeric_param::<u64>(&req, "from"), skip_rows(&req)) {
        (Ok(f), Ok(s)) => (f, s),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let groups: Vec<&str> = id.split('-').collect();
    let layout_ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    if !layout_ok {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a subscription id (a UUID like 1b4e28ba-2fa1-41d2-883f-0016d3cca427)"),
        );
    }
    let subs = api.node.subs.clone();
    let id = id.to_ascii_lowercase();
    match tokio::task::spawn_blocking(move || subs.attach(&id, from, skip)).await {
        Ok(Ok(a)) => stream_response(a, false),
        Ok(Err(e)) => failure(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub async fn updates(api: &Api, table: &str) -> Response<Body> {
    match api.node.subs.updates(table) {
        Ok(a) => stream_response(a, true),
        Err(e) => failure(e),
    }
}
