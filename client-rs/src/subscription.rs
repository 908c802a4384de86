//! [`Subscription`]: a resumable stream of typed subscription events over NDJSON or the
//! WebSocket. The driver here opens sessions as the state machine ([`crate::sub`]) plans
//! them, with backoff and failover, and feeds it each session's events.

use crate::client::Client;
use crate::error::{Error, Result};
use crate::http::{check, Lines};
use crate::query::decode_error;
use crate::sub::{Machine, Plan, ResetReason, Step, SubEvent};
use crate::types::ws::ServerBody;
use crate::types::{ChangeId, Statement, TypedQueryEvent, QUERY_HASH_HEADER, QUERY_ID_HEADER};
use crate::ws::{EndReason, Feed, Item, RawMessage, Resume, WsHandle};
use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt};
use hyper::Method;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// How a subscription reaches the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// One HTTP stream per subscription (`POST /v1/subscriptions`, resumed with
    /// `GET /v1/subscriptions/{id}?from=`); works with Corrosion too.
    Ndjson,
    /// The client's one WebSocket (`GET /v1/ws`), shared by all its subscriptions.
    #[default]
    WebSocket,
}

/// How to subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    pub transport: Transport,
    /// No snapshot: only changes from now on (`skip_rows`).
    pub skip_rows: bool,
    /// On a gap (missed change ids, changes no longer kept by the node, a consumer that
    /// fell behind) emit [`SubEvent::Reset`] and take a fresh snapshot (default). When
    /// false the stream yields [`Error::MissedChange`] and ends instead.
    pub resnapshot_on_gap: bool,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            transport: Transport::WebSocket,
            skip_rows: false,
            resnapshot_on_gap: true,
        }
    }
}

impl SubscribeOptions {
    /// Over NDJSON (one HTTP stream per subscription).
    pub fn ndjson() -> Self {
        SubscribeOptions {
            transport: Transport::Ndjson,
            ..Self::default()
        }
    }
    /// Over the client's WebSocket (the default).
    pub fn websocket() -> Self {
        Self::default()
    }
    pub fn transport(mut self, t: Transport) -> Self {
        self.transport = t;
        self
    }
    pub fn skip_rows(mut self, skip: bool) -> Self {
        self.skip_rows = skip;
        self
    }
    pub fn resnapshot_on_gap(mut self, on: bool) -> Self {
        self.resnapshot_on_gap = on;
        self
    }
}

/// What a subscription knows about itself, readable while its stream is polled elsewhere.
#[derive(Debug, Default)]
struct Info {
    query_id: Option<String>,
    hash: Option<String>,
    last: Option<ChangeId>,
    node: Option<String>,
}

/// A subscription: a [`Stream`] of [`SubEvent`]s that survives disconnections.
///
/// The client tracks the last change id; after a transport error, a closed socket or a
/// node going down it reconnects with exponential backoff and jitter (trying the nodes in
/// turn) and resumes after that change id. When resuming is impossible — a missed change
/// id, changes the node no longer keeps, a failover to another node (change ids are per
/// node), a consumer that fell behind — it yields [`SubEvent::Reset`] followed by a fresh
/// snapshot, never silently continues.
///
/// An `Err` item is fatal and ends the stream: bad SQL or authentication (4xx), a row that
/// does not decode into `T`, retries exhausted per the [`Backoff`](crate::Backoff) policy.
///
/// Dropping it unsubscribes (the node keeps the subscription for other listeners, then
/// expires it).
pub struct Subscription<T> {
    inner: BoxStream<'static, Result<SubEvent<T>>>,
    info: Arc<Mutex<Info>>,
}

impl<T> std::fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl<T> Subscription<T> {
    fn info(&self) -> std::sync::MutexGuard<'_, Info> {
        self.info.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node's id of the subscription (`corro-query-id`), once known. It changes when the
    /// client re-subscribes (failover, reset).
    pub fn query_id(&self) -> Option<String> {
        self.info().query_id.clone()
    }

    /// The hash of the subscription's normalized SQL (`corro-query-hash`), once known.
    pub fn query_hash(&self) -> Option<String> {
        self.info().hash.clone()
    }

    /// The last change id received (from the snapshot's end or a change): where the
    /// subscription resumes.
    pub fn last_change_id(&self) -> Option<ChangeId> {
        self.info().last
    }

    /// The node the subscription lives on (`host:port`), once known.
    pub fn node(&self) -> Option<String> {
        self.info().node.clone()
    }
}

impl<T> Stream for Subscription<T> {
    type Item = Result<SubEvent<T>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl<T: DeserializeOwned + Send + 'static> Subscription<T> {
    pub(crate) fn new(client: Client, stmt: Statement, opts: SubscribeOptions) -> Subscription<T> {
        let info = Arc::new(Mutex::new(Info::default()));
        let driver = Driver {
            machine: Machine::new(opts.skip_rows, opts.resnapshot_on_gap),
            client,
            stmt,
            opts,
            session: None,
            out: VecDeque::new(),
            error: None,
            done: false,
            opened: false,
            reopening: false,
            failures: 0,
            last_failure: None,
            info: info.clone(),
        };
        let inner = stream::unfold(driver, |mut d| async move {
            let item = d.next().await?;
            Some((item, d))
        });
        Subscription {
            inner: inner.boxed(),
            info,
        }
    }
}

/// A subscription on the WebSocket; dropping it unsubscribes.
struct WsSession {
    feed: Feed,
    handle: WsHandle,
}

impl Drop for WsSession {
    fn drop(&mut self) {
        self.handle.cancel(self.feed.id.clone());
    }
}

enum Conn {
    Ndjson(Lines),
    Ws(WsSession),
}

struct Session {
    conn: Conn,
    /// It delivered something (or ended for a reason that is not its own failure): its end
    /// does not count as a failed attempt.
    healthy: bool,
}

struct Driver<T> {
    client: Client,
    stmt: Statement,
    opts: SubscribeOptions,
    machine: Machine,
    session: Option<Session>,
    out: VecDeque<SubEvent<T>>,
    /// A fatal error, yielded once `out` is drained.
    error: Option<Error>,
    done: bool,
    /// A session was opened before (the next open is a reopen, after a pause).
    opened: bool,
    /// The current session replaces an earlier one (for the log).
    reopening: bool,
    /// Consecutive failed attempts.
    failures: u32,
    last_failure: Option<Error>,
    info: Arc<Mutex<Info>>,
}

impl<T: DeserializeOwned + Send + 'static> Driver<T> {
    async fn next(&mut self) -> Option<Result<SubEvent<T>>> {
        loop {
            if let Some(ev) = self.out.pop_front() {
                self.sync_info();
                return Some(Ok(ev));
            }
            if let Some(e) = self.error.take() {
                self.done = true;
                self.session = None;
                return Some(Err(e));
            }
            if self.done {
                return None;
            }
            let step = if self.session.is_some() {
                self.read().await
            } else {
                self.open().await
            };
            match step {
                Step::Continue => {}
                Step::Reopen => self.close(),
                Step::Fatal(e) => {
                    self.close();
                    self.error = Some(e);
                }
            }
        }
    }

    fn sync_info(&self) {
        let mut i = self.info.lock().unwrap_or_else(|p| p.into_inner());
        i.last = self.machine.last_change_id();
        i.query_id = self.machine.query_id().map(str::to_string);
        i.hash = self.machine.hash().map(str::to_string);
        i.node = self
            .machine
            .node()
            .map(|n| self.client.nodes().get(n).to_string());
    }

    fn close(&mut self) {
        if let Some(s) = self.session.take() {
            if s.healthy {
                self.failures = 0;
            } else {
                self.failures += 1;
            }
        }
    }

    fn failed(&mut self, e: Error) -> Step {
        self.failures += 1;
        self.last_failure = Some(e);
        Step::Continue
    }

    async fn open(&mut self) -> Step {
        let backoff = &self.client.config().backoff;
        if self.opened {
            if backoff.exhausted(self.failures) {
                let last = self.last_failure.take().unwrap_or(Error::ConnectionLost {
                    reason: Some("every session ended without delivering anything".into()),
                });
                return Step::Fatal(Error::Exhausted {
                    attempts: self.failures,
                    last: Box::new(last),
                });
            }
            tokio::time::sleep(backoff.delay(self.failures)).await;
        }
        self.reopening = self.opened;
        self.opened = true;
        let plan = self.machine.plan();
        match self.opts.transport {
            Transport::Ndjson => self.open_ndjson(plan).await,
            Transport::WebSocket => self.open_ws(plan).await,
        }
    }

    async fn open_ndjson(&mut self, plan: Plan) -> Step {
        let nodes = self.client.nodes().clone();
        let (idx, addr) = nodes.current();
        let skip = if self.opts.skip_rows {
            "skip_rows=true"
        } else {
            ""
        };
        let body = || serde_json::to_vec(&self.stmt).map(bytes::Bytes::from);
        let (method, path, body, resumed) = match plan {
            Plan::Resume {
                node,
                query_id: Some(q),
                from,
            } if node == idx && q.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => (
                Method::GET,
                format!("/v1/subscriptions/{q}?from={from}&{skip}"),
                None,
                true,
            ),
            Plan::Resume { node, from, .. } if node == idx => (
                Method::POST,
                format!("/v1/subscriptions?from={from}&{skip}"),
                Some(body()),
                true,
            ),
            _ => (
                Method::POST,
                format!("/v1/subscriptions?{skip}"),
                Some(body()),
                false,
            ),
        };
        let body = match body.transpose() {
            Ok(b) => b,
            Err(e) => return Step::Fatal(Error::decode("the statement", e)),
        };
        let http = self.client.http();
        let resp = match http
            .send(addr, method, path.trim_end_matches(['&', '?']), body)
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_retryable() => {
                tracing::info!(node = %addr, "subscription request failed: {e}");
                nodes.advance(idx);
                return self.failed(e);
            }
            Err(e) => return Step::Fatal(e),
        };
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (query_id, hash) = (header(QUERY_ID_HEADER), header(QUERY_HASH_HEADER));
        let resp = match check(http, addr, resp).await {
            Ok(r) => r,
            Err(e) => {
                let status = e.status().unwrap_or(0);
                let gone = status == 404
                    || (status == 400
                        && e.server_message()
                            .is_some_and(|m| m.contains("no existing subscription")));
                return if resumed && gone {
                    tracing::info!(node = %addr, "the subscription cannot be resumed ({e}); taking a fresh snapshot");
                    self.machine.resnapshot(ResetReason::NotFound);
                    Step::Continue
                } else if e.is_retryable() {
                    tracing::info!(node = %addr, "subscription request failed: {e}");
                    nodes.advance(idx);
                    self.failed(e)
                } else {
                    Step::Fatal(e)
                };
            }
        };
        if self.reopening {
            tracing::info!(node = %addr, resumed, "subscription reconnected");
        }
        self.machine.started(idx, resumed, &mut self.out);
        self.machine.identity(query_id, hash);
        self.session = Some(Session {
            conn: Conn::Ndjson(Lines::new(addr, resp.into_body(), http.max_line)),
            healthy: false,
        });
        Step::Continue
    }

    async fn open_ws(&mut self, plan: Plan) -> Step {
        let handle = self.client.ws_handle();
        let resume = match plan {
            Plan::Fresh => None,
            Plan::Resume {
                node,
                query_id,
                from,
            } => Some(Resume {
                node,
                query_id,
                from,
            }),
        };
        match handle
            .subscribe(self.stmt.clone(), self.opts.skip_rows, resume)
            .await
        {
            Ok(feed) => {
                self.session = Some(Session {
                    conn: Conn::Ws(WsSession { feed, handle }),
                    healthy: false,
                });
                Step::Continue
            }
            Err(e) => Step::Fatal(e),
        }
    }

    async fn read(&mut self) -> Step {
        let Some(session) = self.session.as_mut() else {
            return Step::Continue;
        };
        match &mut session.conn {
            Conn::Ndjson(lines) => match lines.next_line().await {
                Ok(Some(line)) => {
                    session.healthy = true;
                    match serde_json::from_slice::<TypedQueryEvent<T>>(&line) {
                        Ok(ev) => self.machine.event(ev, &mut self.out),
                        Err(e) => Step::Fatal(decode_error(&line, e)),
                    }
                }
                Ok(None) => {
                    tracing::info!(
                        node = lines.addr(),
                        "the node ended the subscription stream; resuming"
                    );
                    Step::Reopen
                }
                Err(e) if e.is_retryable() => {
                    tracing::info!("subscription stream failed, resuming: {e}");
                    self.last_failure = Some(e);
                    Step::Reopen
                }
                Err(e) => Step::Fatal(e),
            },
            Conn::Ws(ws) => match ws.feed.recv().await {
                Some(Item::Started { node, resumed }) => {
                    if self.reopening {
                        let addr = self.client.nodes().get(node);
                        tracing::info!(node = %addr, resumed, "subscription reconnected");
                    }
                    self.machine.started(node, resumed, &mut self.out);
                    Step::Continue
                }
                Some(Item::Msg { msg: m, .. }) => {
                    session.healthy = true;
                    self.ws_message(m)
                }
                None => match ws.feed.end.take() {
                    Some(EndReason::Behind) => {
                        session.healthy = true;
                        tracing::info!("the subscription fell behind; taking a fresh snapshot");
                        self.machine.behind()
                    }
                    Some(EndReason::Disconnected | EndReason::Ended) => {
                        // The connection task reconnects with its own backoff.
                        session.healthy = true;
                        Step::Reopen
                    }
                    Some(EndReason::Failed(e)) => Step::Fatal(e),
                    None => Step::Fatal(Error::Closed),
                },
            },
        }
    }

    fn ws_message(&mut self, m: RawMessage) -> Step {
        let row = |cells| {
            serde_json::from_value::<T>(cells).map_err(|e| {
                Error::decode(
                    "a subscription row (does the row type match the columns?)",
                    e,
                )
            })
        };
        let ev = match m.body {
            ServerBody::Columns(c) => {
                self.machine.identity(m.query_id, m.hash);
                TypedQueryEvent::Columns(c)
            }
            ServerBody::Row(rid, cells) => match row(cells) {
                Ok(r) => TypedQueryEvent::Row(rid, r),
                Err(e) => return Step::Fatal(e),
            },
            ServerBody::EndOfQuery { time, change_id } => {
                TypedQueryEvent::EndOfQuery { time, change_id }
            }
            ServerBody::Change(kind, rid, cells, cid) => match row(cells) {
                Ok(r) => TypedQueryEvent::Change(kind, rid, r, cid),
                Err(e) => return Step::Fatal(e),
            },
            ServerBody::Error(msg) => return self.machine.error(m.code, &msg, m.last_change_id),
            ServerBody::Unsubscribed(_) => {
                tracing::info!("the node ended the subscription; resuming");
                return Step::Reopen;
            }
            ServerBody::Transaction(_) | ServerBody::Pong(_) => return Step::Continue,
        };
        self.machine.event(ev, &mut self.out)
    }
}
