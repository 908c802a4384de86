//! `GET /metrics` (Prometheus text format) and the per-request counting every response goes
//! through. The endpoint sits behind the same bearer token as the rest of the API.

use super::{error, full, Api, Body};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

pub fn is_metrics_path(path: &str) -> bool {
    path == "/metrics" || path == "/metrics/"
}

/// Answers `GET /metrics`: node state is read on a blocking thread (it takes short read
/// locks), then encoded with the event metrics.
pub async fn handle(api: &Arc<Api>, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed on /metrics; use GET", req.method()),
        );
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    let node = api.node.clone();
    let max = node.config.api.ws.max_sockets;
    let ws = max.saturating_sub(api.ws_sockets.available_permits()) as u64;
    let text = tokio::task::spawn_blocking(move || {
        let sample = crate::metrics::Sample::gather(&node, ws);
        crate::metrics::encode(&node.metrics, &sample)
    })
    .await;
    match text {
        Ok(text) => {
            let mut r = Response::new(full(text));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            r
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("gathering metrics failed: {e}"),
        ),
    }
}

/// Serves one request and counts it by route and status, with the time to its response head.
pub async fn counted(api: Arc<Api>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let route = crate::metrics::route::route_label(req.uri().path());
    let metrics = api.node.metrics.clone();
    let resp = api.handle(req).await?;
    metrics.observe_http(route, resp.status().as_u16(), started.elapsed());
    Ok(resp)
}
