//! The connection task: keeps one WebSocket to the current node while there is work,
//! reconnecting with backoff (failing over to the next node), writes queued messages, pings
//! and watches for silence, and hands every incoming message to [`Routes`].
//!
//! It owns the socket and the routes, and ends when every handle on it is dropped.

use super::routes::Routes;
use super::{Cmd, Limits, RawMessage};
use crate::config::{Config, NodeAddr, Nodes};
use crate::error::{Error, Result};
use crate::types::ws::{ClientMessage, SUBPROTOCOL};
use futures_util::future::poll_fn;
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

type Socket = WebSocketStream<TcpStream>;

/// Messages queued for the socket before the task stops taking commands (back-pressure on
/// callers, never on the routing of incoming messages).
const OUT_QUEUE: usize = 1024;

/// How a connected session ended.
enum Outcome {
    /// Every handle is gone: the task ends.
    Stop,
    /// The connection failed; `received` if the node sent anything on it.
    Lost { error: Error, received: bool },
}

pub(super) async fn run(cfg: Arc<Config>, nodes: Arc<Nodes>, mut cmds: mpsc::Receiver<Cmd>) {
    let mut routes = Routes::new(
        cfg.max_ws_requests,
        Limits {
            changes: cfg.subscription_buffer,
            bytes: cfg.ws_buffer_bytes,
        },
    );
    let mut failures: u32 = 0;
    // A connection was lost or failed since the last one was up (for the log).
    let mut reconnecting = false;
    loop {
        if routes.is_empty() {
            // Nothing to serve: connect again only when there is work.
            match cmds.recv().await {
                None => return,
                Some(c) => {
                    routes.command(c, None, &mut VecDeque::new());
                    continue;
                }
            }
        }
        if failures > 0 {
            let delay = cfg.backoff.delay(failures - 1);
            if take_commands_while(tokio::time::sleep(delay), &mut cmds, &mut routes)
                .await
                .is_none()
            {
                return;
            }
            if routes.is_empty() {
                continue;
            }
        }
        let (node, addr) = nodes.current();
        let addr = addr.clone();
        let Some(res) = take_commands_while(connect(&cfg, &addr), &mut cmds, &mut routes).await
        else {
            return;
        };
        match res {
            Err(e) => {
                failures += 1;
                reconnecting = true;
                let fatal = !e.is_retryable();
                if !fatal {
                    nodes.advance(node);
                }
                if fatal || cfg.backoff.exhausted(failures) {
                    let err = if fatal {
                        e
                    } else {
                        Error::Exhausted {
                            attempts: failures,
                            last: Box::new(e),
                        }
                    };
                    tracing::warn!(node = %addr, "WebSocket connection failed; failing {} pending subscriptions and requests: {err}", routes.len());
                    routes.fail_all(&err);
                    failures = 0;
                } else {
                    tracing::info!(node = %addr, attempt = failures, "WebSocket connection failed, retrying: {e}");
                }
            }
            Ok(ws) => {
                if std::mem::take(&mut reconnecting) {
                    tracing::info!(node = %addr, "WebSocket reconnected");
                } else {
                    tracing::debug!(node = %addr, "WebSocket connected");
                }
                match session(ws, node, &addr, &cfg, &mut cmds, &mut routes).await {
                    Outcome::Stop => return,
                    Outcome::Lost { error, received } => {
                        tracing::warn!(node = %addr, "WebSocket connection lost, reconnecting: {error}");
                        routes.disconnected(&error.to_string());
                        reconnecting = true;
                        failures = if received { 0 } else { failures + 1 };
                        if received {
                            // Reconnect at once, after a short jittered pause so that
                            // many clients of a restarting node spread out.
                            let pause = cfg.backoff.delay(0);
                            if take_commands_while(
                                tokio::time::sleep(pause),
                                &mut cmds,
                                &mut routes,
                            )
                            .await
                            .is_none()
                            {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Runs `fut` while registering commands (offline); `None` if every handle is gone.
async fn take_commands_while<F: Future>(
    fut: F,
    cmds: &mut mpsc::Receiver<Cmd>,
    routes: &mut Routes,
) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut nothing = VecDeque::new();
    loop {
        tokio::select! {
            r = &mut fut => return Some(r),
            c = cmds.recv() => match c {
                None => return None,
                Some(c) => routes.command(c, None, &mut nothing),
            },
        }
    }
}

/// Opens the WebSocket: TCP (bounded by the connect timeout), then the upgrade with the
/// subprotocol and bearer token (bounded by the request timeout).
async fn connect(cfg: &Config, addr: &NodeAddr) -> Result<Socket> {
    let name = addr.to_string();
    let tcp =
        match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr.as_str())).await {
            Err(_) => {
                return Err(Error::Connect {
                    addr: name,
                    source: format!("timed out after {:?}", cfg.connect_timeout).into(),
                })
            }
            Ok(Err(e)) => {
                return Err(Error::Connect {
                    addr: name,
                    source: Box::new(e),
                })
            }
            Ok(Ok(s)) => s,
        };
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(node = %addr, "TCP_NODELAY not set: {e}");
    }
    let mut req = format!("ws://{addr}/v1/ws")
        .into_client_request()
        .map_err(|e| Error::Config(format!("bad WebSocket address {addr}: {e}")))?;
    req.headers_mut().insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    if let Some(t) = &cfg.token {
        let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|e| Error::Config(format!("bad bearer token: {e}")))?;
        v.set_sensitive(true);
        req.headers_mut().insert(AUTHORIZATION, v);
    }
    let limit = cfg.request_timeout.unwrap_or(Duration::from_secs(60));
    let handshake = tokio_tungstenite::client_async(req, tcp);
    match tokio::time::timeout(limit, handshake).await {
        Err(_) => Err(Error::Timeout {
            addr: name,
            after: limit,
        }),
        Ok(Ok((ws, _resp))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(resp))) => Err(Error::Http {
            addr: name,
            status: resp.status().as_u16(),
            message: resp
                .body()
                .as_deref()
                .map(crate::http::error_message)
                .unwrap_or_else(|| "WebSocket upgrade refused".into()),
        }),
        Ok(Err(
            e @ (tungstenite::Error::Io(_)
            | tungstenite::Error::ConnectionClosed
            | tungstenite::Error::AlreadyClosed),
        )) => Err(Error::Transport {
            addr: name,
            source: Box::new(e),
        }),
        Ok(Err(e)) => Err(Error::WebSocket {
            addr: name,
            message: format!("handshake failed: {e}"),
        }),
    }
}

fn encode(msg: &ClientMessage) -> Message {
    Message::text(serde_json::to_string(msg).expect("client messages always serialize"))
}

/// Writes queued frames (a due ping first) as far as the socket takes them, then flushes.
/// Cancel-safe: a frame leaves its queue only once the sink accepted it.
fn write<S>(
    sink: &mut S,
    out: &mut VecDeque<ClientMessage>,
    ping_due: &mut bool,
    unflushed: &mut bool,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<Result<(), tungstenite::Error>>
where
    S: futures_util::Sink<Message, Error = tungstenite::Error> + Unpin,
{
    use std::task::Poll;
    while *ping_due || !out.is_empty() {
        match sink.poll_ready_unpin(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        let msg = if *ping_due {
            *ping_due = false;
            Message::Ping(Default::default())
        } else {
            match out.pop_front() {
                Some(m) => encode(&m),
                None => break,
            }
        };
        sink.start_send_unpin(msg)?;
        *unflushed = true;
    }
    if *unflushed {
        match sink.poll_flush_unpin(cx) {
            Poll::Ready(Ok(())) => *unflushed = false,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    Poll::Ready(Ok(()))
}

/// Serves one connection until it fails or every handle is gone.
async fn session(
    ws: Socket,
    node: usize,
    addr: &NodeAddr,
    cfg: &Config,
    cmds: &mut mpsc::Receiver<Cmd>,
    routes: &mut Routes,
) -> Outcome {
    let (mut sink, mut stream) = ws.split();
    let mut out: VecDeque<ClientMessage> = VecDeque::new();
    // Consumers that left while offline need nothing sent.
    routes.sweep(false, &mut out);
    routes.connected(node, &mut out);
    let mut ping_due = false;
    let mut unflushed = false;
    let mut received = false;
    let mut last_rx = Instant::now();
    let mut ticker =
        tokio::time::interval_at(Instant::now() + cfg.ws_ping_interval, cfg.ws_ping_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lost = |error: Error, received: bool| Outcome::Lost { error, received };
    let ws_err = |e: tungstenite::Error| Error::Transport {
        addr: addr.to_string(),
        source: Box::new(e),
    };
    loop {
        let have_out = ping_due || !out.is_empty();
        tokio::select! {
            r = poll_fn(|cx| write(&mut sink, &mut out, &mut ping_due, &mut unflushed, cx)), if have_out || unflushed => {
                if let Err(e) = r {
                    return lost(ws_err(e), received);
                }
            }
            frame = stream.next() => {
                let m = match frame {
                    None => return lost(Error::ConnectionLost { reason: Some("the node closed the connection".into()) }, received),
                    Some(Err(e)) => return lost(ws_err(e), received),
                    Some(Ok(m)) => m,
                };
                last_rx = Instant::now();
                received = true;
                match m {
                    Message::Text(t) => match serde_json::from_str::<RawMessage>(t.as_str()) {
                        Ok(msg) => routes.message(msg, t.len(), &mut out),
                        Err(e) => {
                            let head: String = t.as_str().chars().take(200).collect();
                            tracing::warn!(node = %addr, "ignoring a message that does not decode ({e}): {head}");
                        }
                    },
                    Message::Close(frame) => {
                        let reason = frame.map_or_else(|| "no reason given".to_string(), |f| format!("{} {}", u16::from(f.code), f.reason));
                        return lost(Error::ConnectionLost { reason: Some(format!("the node closed the connection: {reason}")) }, received);
                    }
                    Message::Binary(_) => tracing::warn!(node = %addr, "ignoring an unexpected binary frame"),
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                }
            }
            c = cmds.recv(), if out.len() < OUT_QUEUE => match c {
                None => {
                    // Every handle is gone: say goodbye, without waiting long.
                    if let Err(e) = tokio::time::timeout(Duration::from_secs(1), sink.close()).await.unwrap_or(Ok(())) {
                        tracing::debug!(node = %addr, "closing the WebSocket: {e}");
                    }
                    return Outcome::Stop;
                }
                Some(c) => routes.command(c, Some(node), &mut out),
            },
            _ = ticker.tick() => {
                if last_rx.elapsed() >= cfg.ws_idle_timeout {
                    return lost(Error::Timeout { addr: addr.to_string(), after: cfg.ws_idle_timeout }, received);
                }
                ping_due = true;
                routes.sweep(true, &mut out);
            }
        }
    }
}
