//! The public HTTP API, wire-compatible with Corrosion's: HTTP/1.1 and HTTP/2 cleartext
//! (prior knowledge) on the same port.
//!
//! - [`json`]: statement, parameter and value encodings.
//! - [`transactions`]: `POST /v1/transactions`.
//! - [`queries`]: `POST /v1/queries` (NDJSON stream).
//! - [`status`]: `GET /v1/health`, `POST /v1/table_stats`.
//! - [`cluster_info`]: read-only views for dashboards (members, subscriptions, stats, tables).
//! - [`console`]: the embedded web console at `/`.
//!
//! Every error is `{"error": "..."}` with a status that says whose fault it is.

// Handlers return ready-made error responses as `Err`, which is the point of the pattern.
#![allow(clippy::result_large_err)]

pub mod cluster_info;
pub mod console;
pub mod json;
pub mod metrics;
pub mod ndjson;
pub mod queries;
mod query_string;
pub mod status;
pub mod subscriptions;
pub mod transactions;
pub mod ws;

pub use query_string::Query;

use crate::node::Node;
use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

pub type Body = BoxBody<Bytes, Infallible>;

/// Subscription setups (subscribe, attach, updates) that run at once, node-wide: enough that a
/// few slow initial queries do not hold up other subscribes, few enough that a burst of
/// subscribes does not park a blocking thread (and its stack) each.
const SUB_SETUP_SLOTS: usize = 8;

/// Shared state of the HTTP server.
pub struct Api {
    pub node: Arc<Node>,
    /// Requests served at once (`api.max_concurrency`), WebSocket queries and transactions
    /// included.
    limiter: Arc<Semaphore>,
    /// One permit per open WebSocket (`api.ws.max_sockets`).
    ws_sockets: Arc<Semaphore>,
    /// Subscribe/attach calls running at once (they serialize on the subscription registry
    /// anyway; more would only park blocking threads, each with its own stack).
    sub_setup: Arc<Semaphore>,
    /// WebSocket sessions, which outlive the HTTP connection they were upgraded from.
    tasks: tokio_util::task::TaskTracker,
    /// Cancelled when the node shuts down: sessions close their sockets.
    closing: tokio_util::sync::CancellationToken,
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `{"error": msg}` with `status`.
pub fn error(status: StatusCode, msg: impl AsRef<str>) -> Response<Body> {
    json_response(status, json::error_body(msg.as_ref()))
}

/// Reads a whole request body under the configured size limit.
pub async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, Response<Body>> {
    let too_big = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes (api.max_body_bytes); split the request"),
        )
    };
    // Read frame by frame. Past the limit, keep draining (bounded in bytes and time) before
    // answering 413: an HTTP/1.1 server that answers and closes with request bytes unread makes
    // the kernel reset the connection, and the client never sees the 413.
    let drain_cap = (limit as u64).saturating_mul(4).max(64 * 1024 * 1024);
    let mut body = req.into_body();
    let mut buf = bytes::BytesMut::new();
    let mut seen: u64 = 0;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) if seen > limit as u64 => return Err(too_big()),
            Err(_) => {
                return Err(error(
                    StatusCode::REQUEST_TIMEOUT,
                    "timed out reading the request body",
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("could not read request body: {e}"),
                ))
            }
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            seen += data.len() as u64;
            if seen <= limit as u64 {
                buf.extend_from_slice(&data);
            } else if seen > drain_cap {
                return Err(too_big());
            }
        }
    }
    if seen > limit as u64 {
        return Err(too_big());
    }
    Ok(buf.freeze())
}

/// Reads the body under the size limit and parses it as JSON.
pub async fn read_json(
    api: &Api,
    req: Request<Incoming>,
) -> Result<serde_json::Value, Response<Body>> {
    let body = read_body(req, api.node.config.api.max_body_bytes).await?;
    parse_json(&body)
}

/// Parses a JSON body, with a 400 that says what is wrong.
pub fn parse_json(body: &[u8]) -> Result<serde_json::Value, Response<Body>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "request body is empty; send JSON",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("request body is not valid JSON: {e}"),
        )
    })
}

/// Reads a body holding one statement, in any of its four JSON forms.
pub async fn read_statement(
    api: &Api,
    req: Request<Incoming>,
) -> Result<crate::store::Statement, Response<Body>> {
    let v = read_json(api, req).await?;
    json::decode_statement(v).map_err(|e| error(StatusCode::BAD_REQUEST, e))
}

impl Api {
    pub fn new(node: Arc<Node>) -> Arc<Api> {
        let permits = node.config.api.max_concurrency;
        let sockets = node.config.api.ws.max_sockets;
        Arc::new(Api {
            node,
            limiter: Arc::new(Semaphore::new(permits)),
            ws_sockets: Arc::new(Semaphore::new(sockets)),
            sub_setup: Arc::new(Semaphore::new(SUB_SETUP_SLOTS)),
            tasks: tokio_util::task::TaskTracker::new(),
            closing: tokio_util::sync::CancellationToken::new(),
        })
    }

    fn check_auth(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        if let Some(token) = self
            .node
            .config
            .api
            .authz
            .as_ref()
            .and_then(|a| a.bearer_token.as_deref())
        {
            let expected = format!("Bearer {token}");
            let header = req.headers().get(AUTHORIZATION);
            let ok = match header {
                Some(v) => same_secret(v.as_bytes(), expected.as_bytes()),
                // Browsers cannot set headers on a WebSocket: the token may come as a
                // subprotocol entry or a query parameter instead.
                None if is_ws_path(req.uri().path()) => ws::browser_token(req)
                    .is_some_and(|t| same_secret(t.as_bytes(), token.as_bytes())),
                None => false,
            };
            if !ok {
                return Some(error(
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong bearer token: send the header `Authorization: Bearer <api.authz.bearer-token>` (WebSocket clients in a browser: the subprotocol `verdigris.bearer.<token>` or `?token=<token>`)",
                ));
            }
        }
        if let Some(name) = &self.node.config.api.endpoint_name {
            if let Some(asked) = req.headers().get("x-corrosion-requested-endpoint-name") {
                match asked.to_str() {
                    Err(_) => {
                        return Some(error(
                            StatusCode::BAD_REQUEST,
                            "x-corrosion-requested-endpoint-name must be ASCII",
                        ))
                    }
                    Ok(a) if a != name => {
                        return Some(error(
                            StatusCode::MISDIRECTED_REQUEST,
                            format!("this node's endpoint name is {name:?}, not {a:?}"),
                        ))
                    }
                    Ok(_) => {}
                }
            }
        }
        None
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        if console::is_console_path(req.uri().path()) {
            // Static files only: the page asks for the token the endpoints need.
            return Ok(console::serve(&req));
        }
        if let Some(denied) = self.check_auth(&req) {
            return Ok(denied);
        }
        if metrics::is_metrics_path(req.uri().path()) {
            return Ok(metrics::handle(&self, &req).await);
        }
        let raw_path = req.uri().path().to_string();
        let path = if raw_path.len() > 1 {
            raw_path.trim_end_matches('/').to_string()
        } else {
            raw_path.clone()
        };
        let method = req.method().clone();
        if is_ws_path(&path) {
            // The upgrade answers at once; the socket's own limits apply from then on.
            return Ok(ws::upgrade(self.clone(), req).await);
        }
        let known = matches!(
            path.as_str(),
            "/v1/transactions"
                | "/v1/queries"
                | "/v1/health"
                | "/v1/table_stats"
                | "/v1/subscriptions"
                | "/v1/cluster/members"
                | "/v1/stats"
                | "/v1/tables"
        ) || path.starts_with("/v1/subscriptions/")
            || path.starts_with("/v1/updates/");
        if !known {
            return Ok(error(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {raw_path} (endpoints: /v1/transactions, /v1/queries, /v1/subscriptions, /v1/updates/{{table}}, /v1/ws, /v1/health, /v1/table_stats, /v1/cluster/members, /v1/stats, /v1/tables; the console is at /)"),
            ));
        }
        let _permit = match self.limiter.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                return Ok(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "max concurrency limit reached (api.max_concurrency); retry with backoff",
                ))
            }
        };
        let resp = match (method, path.as_str()) {
            (Method::POST, "/v1/transactions") => transactions::handle(&self, req).await,
            (Method::POST, "/v1/queries") => queries::handle(&self, req).await,
            (Method::GET, "/v1/health") => status::health(&self, req).await,
            (Method::POST, "/v1/table_stats") => status::table_stats(&self, req).await,
            (Method::POST, "/v1/subscriptions") => subscriptions::subscribe(&self, req).await,
            (Method::GET, "/v1/subscriptions") => cluster_info::subscriptions(&self).await,
            (Method::GET, "/v1/cluster/members") => cluster_info::members(&self).await,
            (Method::GET, "/v1/stats") => cluster_info::stats(&self).await,
            (Method::GET, "/v1/tables") => cluster_info::tables(&self).await,
            (Method::GET, p) if p.starts_with("/v1/subscriptions/") => {
                let id = p["/v1/subscriptions/".len()..].to_string();
                subscriptions::get(&self, req, &id).await
            }
            (Method::POST, p) if p.starts_with("/v1/updates/") => {
                let table = p["/v1/updates/".len()..].to_string();
                subscriptions::updates(&self, &table).await
            }
            (m, p) => {
                let get_only = [
                    "/v1/health",
                    "/v1/cluster/members",
                    "/v1/stats",
                    "/v1/tables",
                ];
                let allow = if get_only.contains(&p) || p.starts_with("/v1/subscriptions/") {
                    "GET"
                } else if p == "/v1/subscriptions" {
                    "GET, POST"
                } else {
                    "POST"
                };
                let mut r = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{m} is not allowed on {p}; use {allow}"),
                );
                r.headers_mut()
                    .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
                r
            }
        };
        Ok(resp)
    }
}

fn is_ws_path(path: &str) -> bool {
    path.trim_end_matches('/') == "/v1/ws"
}

/// Compares a presented secret with the configured one in time that does not depend on where
/// they differ.
fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Binds every configured API address.
pub async fn bind(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for a in addrs {
        out.push(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("binding the API to {a}"))?,
        );
    }
    Ok(out)
}

/// Serves HTTP/1.1 and h2c on the listeners until `shutdown` flips to true.
pub async fn serve(
    api: Arc<Api>,
    listeners: Vec<TcpListener>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel(64);
    for l in listeners {
        let tx = conn_tx.clone();
        tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        if tx.send(stream).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    drop(conn_tx);
    loop {
        tokio::select! {
            Some(stream) = conn_rx.recv() => {
                let api = api.clone();
                let svc = hyper::service::service_fn(move |req| metrics::counted(api.clone(), req));
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    // WebSocket sessions send a close frame and end; HTTP connections finish their requests.
    api.closing.cancel();
    api.tasks.close();
    let drained = async {
        tokio::join!(graceful.shutdown(), api.tasks.wait());
    };
    if tokio::time::timeout(std::time::Duration::from_secs(5), drained)
        .await
        .is_err()
    {
        tracing::warn!("connections still open 5 s after shutdown began; closing them");
    }
}
