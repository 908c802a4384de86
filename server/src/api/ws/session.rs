//! One WebSocket: client messages in; subscription events, query rows and replies out.
//!
//! Everything a socket sends comes from *outputs*: one stream per subscription, query or
//! transaction, tagged with the client's id and polled together (`SelectAll`), so frames of
//! different subscriptions interleave and a large snapshot never holds back another
//! subscription's live changes. The loop pulls from the outputs only while the socket takes
//! data: a client that stops reading stops the pulling, its subscriptions' queues at the
//! manager fill, and each gets a `too_slow` error naming the last change id it was sent —
//! the node itself never waits. A socket that accepts nothing for `write_timeout_secs` is
//! closed.

use super::frames::{self, Tag};
use crate::api::subscriptions::blocking;
use crate::api::{json, queries, transactions, Api};
use crate::subs::attach::{to_json, Item};
use crate::subs::SubsError;
use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::{self, BoxStream, SelectAll};
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use verdigris_api_types::ws::{
    self as proto, ClientMessage, Empty, ErrorCode, ServerBody, ServerMessage,
};
use verdigris_api_types::QueryEvent;

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// Frames written per flush at most (the rest waits for the next turn of the loop).
const WRITE_BATCH: usize = 64;

/// What an output yields: a frame to send, its last frame (after which its id is free again,
/// so a client that reads it can reuse the id at once), or the end of the output.
enum Out {
    Frame(Message),
    Last(Message),
    Done {
        id: String,
        generation: u64,
        frame: Option<Message>,
    },
}

type Output = BoxStream<'static, Out>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Subscription,
    Request,
}

struct Entry {
    kind: Kind,
    generation: u64,
    abort: AbortHandle,
}

/// A socket's live outputs by client id.
struct Session {
    api: Arc<Api>,
    outputs: SelectAll<Abortable<Output>>,
    active: HashMap<String, Entry>,
    generation: u64,
    subscriptions: usize,
    in_flight: usize,
}

pub async fn run(api: Arc<Api>, ws: Ws) {
    let limits = api.node.config.api.ws.clone();
    let idle_timeout = Duration::from_secs(limits.idle_timeout_secs);
    let write_timeout = Duration::from_secs(limits.write_timeout_secs);
    let closing = api.closing.clone();
    let (mut sink, mut incoming) = ws.split();
    let mut s = Session {
        api,
        outputs: SelectAll::new(),
        active: HashMap::new(),
        generation: 0,
        subscriptions: 0,
        in_flight: 0,
    };
    let period = Duration::from_secs(limits.ping_interval_secs.max(1));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    // One registration with the token for the socket's life (not one per turn of the loop:
    // 10,000 sockets re-registering on every event would contend on the token's lock).
    let cancelled = closing.cancelled();
    tokio::pin!(cancelled);
    let close = loop {
        let mut out: Vec<Message> = Vec::new();
        let mut then_close = None;
        tokio::select! {
            _ = &mut cancelled => {
                // Each subscription learns why it ends, then the socket closes.
                for id in s.subscription_ids() {
                    out.push(frames::error(
                        Some(&id),
                        ErrorCode::Shutdown,
                        "the node is shutting down; resume from your last change id later, or take a fresh snapshot on another node",
                    ));
                }
                then_close = Some((CloseCode::Away, "the node is shutting down; reconnect to another node or later".to_string()));
            }
            msg = incoming.next() => {
                last_heard = Instant::now();
                match msg {
                    None => break None,
                    Some(Ok(Message::Close(_))) => {
                        // tungstenite queued the reply; send it (bounded: the peer may be gone).
                        let _ = tokio::time::timeout(Duration::from_secs(1), sink.flush()).await;
                        break None;
                    }
                    Some(Ok(Message::Text(t))) => s.handle(&t, &mut out),
                    Some(Ok(Message::Binary(_))) => out.push(frames::error(
                        None,
                        ErrorCode::BadRequest,
                        "binary frames are not supported: send each message as a JSON text frame",
                    )),
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Err(WsError::Capacity(e))) => {
                        let limit = format!("{e}; the limit is api.ws.max_message_bytes");
                        // Best effort and bounded: the close frame below says it too.
                        let error = frames::error(None, ErrorCode::BadRequest, &limit);
                        let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(error)).await;
                        break Some((CloseCode::Size, limit));
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "WebSocket read failed; closing the socket");
                        break None;
                    }
                }
            }
            Some(o) = s.outputs.next(), if !s.outputs.is_empty() => {
                s.output(o, &mut out);
                while out.len() < WRITE_BATCH {
                    match s.outputs.next().now_or_never() {
                        Some(Some(o)) => s.output(o, &mut out),
                        _ => break,
                    }
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > idle_timeout {
                    break Some((CloseCode::Policy, format!(
                        "nothing heard for {}s, not even a pong (api.ws.idle_timeout_secs)",
                        idle_timeout.as_secs()
                    )));
                }
                out.push(Message::Ping(Default::default()));
            }
        }
        if out.is_empty() {
            match then_close {
                Some(c) => break Some(c),
                None => continue,
            }
        }
        // The write timeout is about progress: each frame (and the flush) gets its own.
        let mut written = Ok(Ok(()));
        for m in out {
            written = tokio::time::timeout(write_timeout, sink.feed(m)).await;
            if !matches!(written, Ok(Ok(()))) {
                break;
            }
        }
        if matches!(written, Ok(Ok(()))) {
            written = tokio::time::timeout(write_timeout, sink.flush()).await;
        }
        match written {
            Ok(Ok(())) => {
                if let Some(c) = then_close {
                    break Some(c);
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "WebSocket write failed; closing the socket");
                break None;
            }
            Err(_) => {
                tracing::info!(
                    subscriptions = s.subscriptions,
                    "closing a WebSocket that accepted no data for {}s",
                    write_timeout.as_secs()
                );
                break Some((CloseCode::Again, format!(
                    "client too slow: the socket accepted no data for {}s (api.ws.write_timeout_secs); reconnect and resume each subscription from its last change id",
                    write_timeout.as_secs()
                )));
            }
        }
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: truncate(reason).into(),
        };
        // The peer may be gone or stuck; closing is best effort, bounded in time.
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            sink.send(Message::Close(Some(frame))),
        )
        .await;
    }
}

/// Close reasons must fit a control frame (123 bytes).
fn truncate(mut reason: String) -> String {
    if reason.len() > 123 {
        let mut end = 120;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str("...");
    }
    reason
}

impl Session {
    fn limits(&self) -> &crate::config::WsConfig {
        &self.api.node.config.api.ws
    }

    fn subscription_ids(&self) -> Vec<String> {
        self.active
            .iter()
            .filter(|(_, e)| e.kind == Kind::Subscription)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn output(&mut self, o: Out, out: &mut Vec<Message>) {
        match o {
            Out::Frame(m) | Out::Last(m) => out.push(m),
            Out::Done {
                id,
                generation,
                frame,
            } => {
                let live = self
                    .active
                    .get(&id)
                    .is_some_and(|e| e.generation == generation);
                match frame {
                    Some(m) => out.push(m),
                    // Ended without its last message (a failed task, a removed subscription):
                    // the client must not wait for one.
                    None if live => out.push(frames::error(
                        Some(&id),
                        ErrorCode::Internal,
                        "ended on the node without a final message; retry (subscriptions: resume from your last change id)",
                    )),
                    None => {}
                }
                if self
                    .active
                    .get(&id)
                    .is_some_and(|e| e.generation == generation)
                {
                    self.remove(&id);
                }
            }
        }
    }

    fn remove(&mut self, id: &str) -> Option<Entry> {
        let e = self.active.remove(id)?;
        match e.kind {
            Kind::Subscription => self.subscriptions -= 1,
            Kind::Request => self.in_flight -= 1,
        }
        Some(e)
    }

    fn start(&mut self, id: String, kind: Kind, output: Output) {
        self.generation += 1;
        let generation = self.generation;
        let done = stream::once(std::future::ready(Out::Done {
            id: id.clone(),
            generation,
            frame: None,
        }));
        let last_id = id.clone();
        let output = output.map(move |o| match o {
            Out::Last(m) => Out::Done {
                id: last_id.clone(),
                generation,
                frame: Some(m),
            },
            o => o,
        });
        let (abort, reg) = AbortHandle::new_pair();
        self.outputs
            .push(Abortable::new(output.chain(done).boxed(), reg));
        match kind {
            Kind::Subscription => self.subscriptions += 1,
            Kind::Request => self.in_flight += 1,
        }
        self.active.insert(
            id,
            Entry {
                kind,
                generation,
                abort,
            },
        );
    }

    /// One client message; immediate answers go to `out`.
    fn handle(&mut self, text: &str, out: &mut Vec<Message>) {
        let v: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return out.push(frames::error(
                    None,
                    ErrorCode::BadRequest,
                    format!("message is not valid JSON: {e}"),
                ))
            }
        };
        let id = match v.get("id") {
            Some(serde_json::Value::String(id)) if !id.is_empty() => id.clone(),
            _ if !v.is_object() => {
                return out.push(frames::error(
                    None,
                    ErrorCode::BadRequest,
                    "a message must be a JSON object with a \"type\" and an \"id\", e.g. {\"type\":\"ping\",\"id\":\"p1\"}",
                ))
            }
            None | Some(serde_json::Value::String(_)) => {
                return out.push(frames::error(
                    None,
                    ErrorCode::BadRequest,
                    "every message needs a non-empty string \"id\" chosen by the client; replies carry it",
                ))
            }
            Some(other) => {
                return out.push(frames::error(
                    None,
                    ErrorCode::BadRequest,
                    format!("\"id\" must be a string, got {other}"),
                ))
            }
        };
        let kind = v
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or("")
            .to_string();
        // A new subscription or request under a live id is refused before anything else, so
        // that the only errors carrying a live id are these (which do not end it).
        if matches!(kind.as_str(), "subscribe" | "query" | "transaction")
            && self.active.contains_key(&id)
        {
            return out.push(frames::error(
                Some(&id),
                ErrorCode::DuplicateId,
                format!(
                    "id {id:?} is in use on this socket by a live subscription or request; choose another id (an id is free again after its last message, e.g. after \"unsubscribed\"); the live one carries on"
                ),
            ));
        }
        let msg: ClientMessage = match serde_json::from_value(v.clone()) {
            Ok(m) => m,
            Err(e) => {
                let what = if kind.is_empty() {
                    "message (it needs a \"type\": subscribe, unsubscribe, query, transaction or ping)".to_string()
                } else {
                    format!("{kind:?} message")
                };
                let at = culprit(&v, &e.to_string())
                    .map(|f| format!(" (field {f:?})"))
                    .unwrap_or_default();
                return out.push(frames::error(
                    Some(&id),
                    ErrorCode::BadRequest,
                    format!("invalid {what}{at}: {e}"),
                ));
            }
        };
        match msg {
            ClientMessage::Ping { id } => out.push(frames::message(&ServerMessage::new(
                Some(id),
                ServerBody::Pong(Empty {}),
            ))),
            ClientMessage::Unsubscribe { id } => out.push(self.unsubscribe(id)),
            msg if self.active.contains_key(msg.id()) => out.push(frames::error(
                Some(msg.id()),
                ErrorCode::DuplicateId,
                format!(
                    "id {:?} is in use on this socket by a live subscription or request; choose another id (an id is free again after its last message, e.g. after \"unsubscribed\")",
                    msg.id()
                ),
            )),
            ClientMessage::Subscribe {
                id,
                sql,
                params,
                named_params,
                query_id,
                from,
                skip_rows,
            } => {
                if self.subscriptions >= self.limits().max_subscriptions {
                    return out.push(frames::error(
                        Some(&id),
                        ErrorCode::Limit,
                        format!(
                            "this socket already has {} subscriptions (api.ws.max_subscriptions); unsubscribe some or open another socket",
                            self.subscriptions
                        ),
                    ));
                }
                let target = match (sql, query_id) {
                    (Some(sql), None) => proto::statement(sql, params, named_params)
                        .map(|s| Target::Sql(json::statement(s))),
                    (None, Some(qid)) => crate::api::subscriptions::check_id(&qid).map(Target::Id),
                    (Some(_), Some(_)) => Err("send either \"sql\" (a new or shared subscription) or \"query_id\" (an existing one), not both".into()),
                    (None, None) => Err("a subscribe message needs \"sql\" (e.g. \"SELECT * FROM t\") or the \"query_id\" of an existing subscription".into()),
                };
                match target {
                    Ok(t) => {
                        let o = subscription(self.api.clone(), id.clone(), t, from, skip_rows);
                        self.start(id, Kind::Subscription, o);
                    }
                    Err(e) => out.push(frames::error(Some(&id), ErrorCode::BadRequest, e)),
                }
            }
            ClientMessage::Query {
                id,
                sql,
                params,
                named_params,
                timeout,
            } => {
                if let Some(m) = self.over_in_flight(&id) {
                    return out.push(m);
                }
                let stmt = proto::statement(sql, params, named_params)
                    .and_then(|s| Ok((s, queries::timeout(&self.api, timeout)?)));
                match stmt {
                    Ok((stmt, timeout)) => match self.node_slot(&id) {
                        Ok(slot) => {
                            let o = query(&self.api, id.clone(), json::statement(stmt), timeout);
                            self.start(id, Kind::Request, holding(o, slot));
                        }
                        Err(m) => out.push(m),
                    },
                    Err(e) => out.push(frames::error(Some(&id), ErrorCode::BadRequest, e)),
                }
            }
            ClientMessage::Transaction {
                id,
                statements,
                timeout,
            } => {
                if let Some(m) = self.over_in_flight(&id) {
                    return out.push(m);
                }
                let timeout = match transactions::timeout(timeout) {
                    Ok(t) => t,
                    Err(e) => return out.push(frames::error(Some(&id), ErrorCode::BadRequest, e)),
                };
                let slot = match self.node_slot(&id) {
                    Ok(slot) => slot,
                    Err(m) => return out.push(m),
                };
                let stmts = statements.into_iter().map(json::statement).collect();
                let o = transaction(self.api.clone(), id.clone(), stmts, timeout);
                self.start(id, Kind::Request, holding(o, slot));
            }
        }
    }

    /// A node-wide request slot (`api.max_concurrency`, shared with HTTP requests), so that
    /// many sockets cannot together occupy every blocking thread with slow queries.
    fn node_slot(&self, id: &str) -> Result<tokio::sync::OwnedSemaphorePermit, Message> {
        self.api.limiter.clone().try_acquire_owned().map_err(|_| {
            frames::error(
                Some(id),
                ErrorCode::Limit,
                "the node is serving api.max_concurrency requests already; retry with backoff",
            )
        })
    }

    fn over_in_flight(&self, id: &str) -> Option<Message> {
        (self.in_flight >= self.limits().max_in_flight).then(|| {
            frames::error(
                Some(id),
                ErrorCode::Limit,
                format!(
                    "{} queries and transactions are already running on this socket (api.ws.max_in_flight); wait for a reply before sending more",
                    self.in_flight
                ),
            )
        })
    }

    fn unsubscribe(&mut self, id: String) -> Message {
        match self.active.get(&id).map(|e| e.kind) {
            Some(Kind::Subscription) => {
                if let Some(e) = self.remove(&id) {
                    e.abort.abort();
                }
                frames::message(&ServerMessage::new(
                    Some(id),
                    ServerBody::Unsubscribed(Empty {}),
                ))
            }
            Some(Kind::Request) => frames::error(
                Some(&id),
                ErrorCode::BadRequest,
                "this id names a running query or transaction, not a subscription",
            ),
            None => frames::error(
                Some(&id),
                ErrorCode::NotFound,
                "no subscription with this id on this socket",
            ),
        }
    }
}

/// The field a decoding error is about. serde cannot tell for an internally tagged message,
/// so each field is left out in turn: the one whose absence changes the error is the culprit.
fn culprit(v: &serde_json::Value, error: &str) -> Option<String> {
    let obj = v.as_object()?;
    obj.keys()
        .filter(|k| !matches!(k.as_str(), "type" | "id"))
        .find(|k| {
            let mut without = obj.clone();
            without.remove(k.as_str());
            match serde_json::from_value::<ClientMessage>(serde_json::Value::Object(without)) {
                Ok(_) => true,
                Err(e) => e.to_string() != error,
            }
        })
        .cloned()
}

/// `output`, holding `slot` until it ends.
fn holding(output: Output, slot: tokio::sync::OwnedSemaphorePermit) -> Output {
    output
        .map(Some)
        .chain(stream::once(async move {
            drop(slot);
            None
        }))
        .filter_map(std::future::ready)
        .boxed()
}

/// What a subscribe message attaches to.
enum Target {
    Sql(crate::store::Statement),
    Id(String),
}

fn subs_error(id: &str, e: SubsError) -> Message {
    let code = match &e {
        SubsError::BadRequest(_) => ErrorCode::BadRequest,
        SubsError::NotFound(_) | SubsError::NoSubscription(_) => ErrorCode::NotFound,
        SubsError::Internal(_) => ErrorCode::Internal,
    };
    frames::error(Some(id), code, e.to_string())
}

/// A subscription's frames: the attach (off the async workers), then its items.
fn subscription(
    api: Arc<Api>,
    id: String,
    target: Target,
    from: Option<u64>,
    skip_rows: bool,
) -> Output {
    let subs = api.node.subs.clone();
    let attach = async move {
        blocking(&api, move || match target {
            Target::Sql(stmt) => subs.subscribe(&stmt, from, skip_rows),
            Target::Id(qid) => subs.attach(&qid, from, skip_rows),
        })
        .await
    };
    // Boxed: the attach future is done after the snapshot, and the subscription's stream
    // lives as long as the subscription; inline, its space would stay with every idle one.
    stream::once(Box::pin(attach))
        .flat_map(move |res| -> Output {
            match res {
                Ok(a) => {
                    let (qid, hash) = (a.id.clone(), a.hash.clone());
                    let id = id.clone();
                    let tag = Tag::new(&id);
                    a.into_stream()
                        .flat_map(move |item| stream::iter(encode(&id, &tag, &qid, &hash, item)))
                        .boxed()
                }
                Err(e) => stream::once(std::future::ready(Out::Last(subs_error(&id, e)))).boxed(),
            }
        })
        .boxed()
}

/// The frames of one subscription item (a failure is the subscription's last).
fn encode(id: &str, tag: &Tag, qid: &str, hash: &str, item: Item<QueryEvent>) -> Vec<Out> {
    match item {
        Item::Event(verdigris_api_types::TypedQueryEvent::Columns(cols)) => {
            vec![Out::Frame(frames::columns(id, cols, qid, hash))]
        }
        Item::Event(ev) => vec![Out::Frame(frames::with_tag(tag, &to_json(&ev)))],
        Item::Batch(b) => b
            .json()
            .iter()
            .map(|j| Out::Frame(frames::with_tag(tag, j)))
            .collect(),
        Item::Failed(f) => vec![Out::Last(frames::failure(id, &f))],
    }
}

/// A query's frames: `columns`, `row`…, `eoq` (or an `error`).
fn query(
    api: &Api,
    id: String,
    stmt: crate::store::Statement,
    timeout: Option<Duration>,
) -> Output {
    let queries::Running { ready, events } = queries::start(api, stmt, timeout);
    stream::once(async move { (ready.await, events) })
        .flat_map(move |(r, events)| -> Output {
            match r {
                Ok(Ok(())) => {
                    let tag = Tag::new(&id);
                    queries::stream_of(events)
                        .flat_map(move |chunk| {
                            let tag = tag.clone();
                            stream::iter(chunk.into_iter().map(move |ev| {
                                let last = matches!(
                                    ev,
                                    verdigris_api_types::TypedQueryEvent::EndOfQuery { .. }
                                        | verdigris_api_types::TypedQueryEvent::Error(_)
                                );
                                let m = frames::with_tag(&tag, &to_json(&ev));
                                if last {
                                    Out::Last(m)
                                } else {
                                    Out::Frame(m)
                                }
                            }))
                        })
                        .boxed()
                }
                Ok(Err(e)) => {
                    let (status, msg) = queries::refused(e);
                    let m = frames::error(Some(&id), code_for(status), msg);
                    stream::once(std::future::ready(Out::Last(m))).boxed()
                }
                Err(_) => {
                    let m = frames::error(
                        Some(&id),
                        ErrorCode::Internal,
                        "query task ended unexpectedly",
                    );
                    stream::once(std::future::ready(Out::Last(m))).boxed()
                }
            }
        })
        .boxed()
}

/// A transaction's reply: `transaction` with the results, or an `error`.
fn transaction(
    api: Arc<Api>,
    id: String,
    stmts: Vec<crate::store::Statement>,
    timeout: Option<Duration>,
) -> Output {
    stream::once(async move {
        Out::Last(match transactions::run(&api, stmts, timeout).await {
            Ok(r) => frames::message(&ServerMessage::new(Some(id), ServerBody::Transaction(r))),
            Err(f) => frames::error(Some(&id), code_for(f.status), f.message),
        })
    })
    .boxed()
}

fn code_for(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::REQUEST_TIMEOUT => ErrorCode::Timeout,
        s if s.is_client_error() => ErrorCode::BadRequest,
        _ => ErrorCode::Internal,
    }
}
