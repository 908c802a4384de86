//! `POST /v1/subscriptions[?from=&skip_rows=]`, `GET /v1/subscriptions/{id}[?from=&skip_rows=]`
//! and `POST /v1/updates/{table}`: NDJSON streams of subscription events.

use super::{error, ndjson, Api, Body, Query};
use crate::subs::attach::Failure;
use crate::subs::{Attach, SubsError};
use futures_util::StreamExt;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use serde::Serialize;
use verdigris_api_types::{QUERY_HASH_HEADER, QUERY_ID_HEADER};

/// `?from=` and `?skip_rows=`.
fn stream_params(req: &Request<Incoming>) -> Result<(Option<u64>, bool), Response<Body>> {
    let q = Query::parse(req);
    Ok((q.number("from")?, q.flag("skip_rows")?))
}

pub fn failure(e: SubsError) -> Response<Body> {
    match e {
        SubsError::BadRequest(m) | SubsError::NoSubscription(m) => {
            error(StatusCode::BAD_REQUEST, m)
        }
        SubsError::NotFound(m) => error(StatusCode::NOT_FOUND, m),
        SubsError::Internal(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

/// Streams an attach as NDJSON, with the subscription's id and hash headers.
/// The stream ends when the node shuts down (as Corrosion's do), so graceful shutdown does not
/// wait on subscribers; clients resume with `from` from their last change id.
fn stream_response<E: Serialize + Send + Sync + 'static>(
    api: &Api,
    a: Attach<E>,
) -> Response<Body> {
    let id = a.id.clone();
    let hash = a.hash.clone();
    let sub_id = id.clone();
    let text = move |f: &Failure| {
        match f {
        Failure::TooSlow {
            last_change_id: Some(last),
        } => format!(
            "subscriber too slow: disconnected after change id {last}; resume with GET /v1/subscriptions/{sub_id}?from={last}"
        ),
        f => f.message(),
    }
    };
    let items = a
        .into_stream()
        .take_until(api.closing.clone().cancelled_owned());
    let mut r = ndjson::response(ndjson::encode_items(items, text));
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert(QUERY_ID_HEADER, v);
    }
    if !hash.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&hash) {
            h.insert(QUERY_HASH_HEADER, v);
        }
    }
    r
}

/// Runs a blocking subscription-manager call off the async workers, at most
/// `SUB_SETUP_SLOTS` at once node-wide (a burst of subscribes queues here instead of parking
/// hundreds of blocking threads on the registry's lock).
pub async fn blocking<T: Send + 'static>(
    api: &Api,
    f: impl FnOnce() -> Result<T, SubsError> + Send + 'static,
) -> Result<T, SubsError> {
    let Ok(_slot) = api.sub_setup.clone().acquire_owned().await else {
        return Err(SubsError::Internal(anyhow::anyhow!(
            "the node is shutting down"
        )));
    };
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(SubsError::Internal(anyhow::anyhow!(
            "subscription task failed: {e}"
        ))),
    }
}

pub async fn subscribe(api: &Api, req: Request<Incoming>) -> Response<Body> {
    let (from, skip) = match stream_params(&req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let stmt = match super::read_statement(api, req).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let subs = api.node.subs.clone();
    match blocking(api, move || subs.subscribe(&stmt, from, skip)).await {
        Ok(a) => stream_response(api, a),
        Err(e) => failure(e),
    }
}

/// Checks that `id` looks like a subscription id (a hyphenated UUID).
pub fn check_id(id: &str) -> Result<String, String> {
    let groups: Vec<&str> = id.split('-').collect();
    let layout_ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    if !layout_ok {
        return Err(format!(
            "{id:?} is not a subscription id (a UUID like 1b4e28ba-2fa1-41d2-883f-0016d3cca427)"
        ));
    }
    Ok(id.to_ascii_lowercase())
}

pub async fn get(api: &Api, req: Request<Incoming>, id: &str) -> Response<Body> {
    let (from, skip) = match stream_params(&req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let id = match check_id(id) {
        Ok(id) => id,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let subs = api.node.subs.clone();
    match blocking(api, move || subs.attach(&id, from, skip)).await {
        Ok(a) => stream_response(api, a),
        Err(e) => failure(e),
    }
}

pub async fn updates(api: &Api, table: &str) -> Response<Body> {
    let subs = api.node.subs.clone();
    let table = table.to_string();
    match blocking(api, move || subs.updates(&table)).await {
        Ok(a) => stream_response(api, a),
        Err(e) => failure(e),
    }
}
