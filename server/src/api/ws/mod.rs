//! `GET /v1/ws`: the multiplexed WebSocket endpoint (protocol in `docs/websocket.md`).
//!
//! - this module: the HTTP/1.1 upgrade (handshake checks, browser auth through the
//!   subprotocol, the per-node socket limit);
//! - [`session`]: one socket — client messages in, subscription events and replies out;
//! - [`frames`]: server messages as text frames.

mod frames;
mod session;

use super::{error, Api, Body};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use verdigris_api_types::ws::{BEARER_PROTOCOL_PREFIX, SUBPROTOCOL};

/// Read buffer per socket (client messages are small; larger ones grow it while read).
const READ_BUFFER: usize = 4 * 1024;
/// Frames are gathered up to this size before a write (and always on flush).
const WRITE_BUFFER: usize = 16 * 1024;

/// The subprotocols a client offered (`Sec-WebSocket-Protocol`, comma-separated).
fn offered_protocols(req: &Request<Incoming>) -> Vec<String> {
    req.headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The bearer token a browser sent as a subprotocol entry, or as `?token=`.
pub fn browser_token(req: &Request<Incoming>) -> Option<String> {
    offered_protocols(req)
        .into_iter()
        .find_map(|p| p.strip_prefix(BEARER_PROTOCOL_PREFIX).map(str::to_string))
        .or_else(|| super::Query::parse(req).get("token").map(str::to_string))
}

fn header_has(req: &Request<Incoming>, name: hyper::header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Answers the upgrade request and starts the session once the connection is handed over.
pub async fn upgrade(api: Arc<Api>, mut req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{} is not allowed on /v1/ws; open a WebSocket with GET",
                req.method()
            ),
        );
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    if req.version() != Version::HTTP_11 {
        return error(
            StatusCode::BAD_REQUEST,
            "WebSockets are served over HTTP/1.1 only; connect without HTTP/2",
        );
    }
    let is_upgrade =
        header_has(&req, CONNECTION, "upgrade") && header_has(&req, UPGRADE, "websocket");
    let key = req.headers().get(SEC_WEBSOCKET_KEY).cloned();
    let (true, Some(key)) = (is_upgrade, key) else {
        let mut r = error(
            StatusCode::UPGRADE_REQUIRED,
            "/v1/ws is a WebSocket endpoint: send `Connection: Upgrade`, `Upgrade: websocket` and a `Sec-WebSocket-Key`",
        );
        r.headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        return r;
    };
    if req
        .headers()
        .get(SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        let mut r = error(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version: send `Sec-WebSocket-Version: 13`",
        );
        r.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return r;
    }
    let offered = offered_protocols(&req);
    if !offered.is_empty() && !offered.iter().any(|p| p == SUBPROTOCOL) {
        // Name what was offered, but never echo a token.
        let shown: Vec<&str> = offered
            .iter()
            .map(|p| match p.starts_with(BEARER_PROTOCOL_PREFIX) {
                true => "verdigris.bearer.<token>",
                false => p.as_str(),
            })
            .collect();
        return error(
            StatusCode::BAD_REQUEST,
            format!("Sec-WebSocket-Protocol must include {SUBPROTOCOL:?} when it is sent (offered: {shown:?})"),
        );
    }
    let Ok(permit) = api.ws_sockets.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many WebSocket connections on this node (api.ws.max_sockets = {}); retry later or use another node",
                api.node.config.api.ws.max_sockets
            ),
        );
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let limits = api.node.config.api.ws.clone();
    let session_api = api.clone();
    api.tasks.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade did not complete");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(limits.max_message_bytes))
            .max_frame_size(Some(limits.max_message_bytes))
            // Small buffers: an idle socket should cost a few KiB, not the 256 KiB default.
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            // Outgoing frames are not capped (a row may be large); the session writes at most
            // WRITE_BATCH frames before it waits for the socket, which bounds the buffer.
            .max_write_buffer_size(usize::MAX);
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        session::run(session_api, ws).await;
        drop(permit);
    });
    let mut r = Response::new(super::full(bytes::Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    if !offered.is_empty() {
        h.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    r
}
