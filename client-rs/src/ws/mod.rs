//! The WebSocket transport: one socket per [`Client`](crate::Client), owned by a background
//! connection task ([`conn`]), multiplexing every subscription, query and transaction sent
//! over it by client-chosen ids ([`routes`]).
//!
//! Consumers talk to the task through a bounded command channel ([`WsHandle`]); the task
//! delivers each subscription's or query's messages into that consumer's own channel and
//! never waits for it. Each channel is bounded by a [`Budget`]: pending changes (a count)
//! and pending bytes (snapshot and query rows count only there, so a large result read at
//! the consumer's pace is fine). A consumer over budget is cut off (its subscription
//! unsubscribed on the node, marked [`EndReason::Behind`]) and recovers when it reads again.

mod conn;
mod routes;

use crate::config::{Config, Nodes};
use crate::error::{Error, Result};
use crate::types::ws::{ServerBody, ServerMessage};
use crate::types::{ChangeId, Statement};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Commands queued to the connection task before it applies back-pressure to callers.
const CMD_QUEUE: usize = 256;

/// A message from the node, cells still as JSON (each consumer decodes its own row type).
pub(crate) type RawMessage = ServerMessage<Value>;

/// What a subscription or query consumer receives.
#[derive(Debug)]
pub(crate) enum Item {
    /// The request was sent on the connection to node `node` (index); `resumed` when a
    /// subscription continues after its `from` change id there (else it is a fresh one).
    Started { node: usize, resumed: bool },
    /// A message and the size of its frame (its share of the [`Budget`]).
    Msg { msg: RawMessage, bytes: usize },
}

/// What a consumer may have pending before it counts as fallen behind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Pending `change` messages.
    pub changes: usize,
    /// Pending bytes (frame sizes) of all messages.
    pub bytes: usize,
}

/// What one consumer has pending: reserved by the task when it delivers a message,
/// released by the consumer when it receives it.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    changes: AtomicUsize,
    bytes: AtomicUsize,
}

fn is_change(m: &RawMessage) -> bool {
    matches!(m.body, ServerBody::Change(..))
}

impl Budget {
    /// Takes room for `msg`, or `false` if that would exceed `limits` (nothing taken).
    pub fn reserve(&self, msg: &RawMessage, bytes: usize, limits: Limits) -> bool {
        let change = is_change(msg);
        if change && self.changes.load(Ordering::Acquire) >= limits.changes {
            return false;
        }
        // Only the connection task reserves, so check-then-add cannot overshoot.
        if self.bytes.load(Ordering::Acquire) + bytes > limits.bytes {
            return false;
        }
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        if change {
            self.changes.fetch_add(1, Ordering::AcqRel);
        }
        true
    }

    fn release(&self, msg: &RawMessage, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        if is_change(msg) {
            self.changes.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Why a consumer's channel closed (set before the task drops its sender).
#[derive(Debug)]
pub(crate) enum EndReason {
    /// The consumer's channel was full: messages were dropped (a subscription was
    /// unsubscribed on the node).
    Behind,
    /// The connection was lost after the request was sent.
    Disconnected,
    /// The node ended it (an `error` or `unsubscribed` message was delivered).
    Ended,
    /// It could not be served (no node reachable, handshake refused, a limit).
    Failed(Error),
}

/// Where the task leaves the [`EndReason`] for the consumer.
#[derive(Debug, Default)]
pub(crate) struct EndSlot(Mutex<Option<EndReason>>);

impl EndSlot {
    pub fn set(&self, r: EndReason) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.get_or_insert(r);
    }
    pub fn take(&self) -> Option<EndReason> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Where a subscription was, to continue after `from` if the task reaches the same node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resume {
    pub node: usize,
    pub query_id: Option<String>,
    pub from: ChangeId,
}

/// A consumer's side of a route: its messages and why they stopped.
pub(crate) struct Feed {
    pub id: String,
    rx: mpsc::UnboundedReceiver<Item>,
    budget: Arc<Budget>,
    pub end: Arc<EndSlot>,
}

impl Feed {
    /// The next item; `None` once the task closed the route (see [`Feed::end`]).
    pub async fn recv(&mut self) -> Option<Item> {
        let item = self.rx.recv().await;
        if let Some(Item::Msg { msg, bytes }) = &item {
            self.budget.release(msg, *bytes);
        }
        item
    }

    /// The next item if one is ready.
    #[cfg(test)]
    pub fn try_recv(&mut self) -> Option<Item> {
        let item = self.rx.try_recv().ok();
        if let Some(Item::Msg { msg, bytes }) = &item {
            self.budget.release(msg, *bytes);
        }
        item
    }
}

/// The task's side of a route.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub tx: mpsc::UnboundedSender<Item>,
    pub budget: Arc<Budget>,
    pub end: Arc<EndSlot>,
}

/// A route's two sides.
pub(crate) fn route_channel(id: String) -> (Feed, Delivery) {
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Budget::default());
    let end = Arc::new(EndSlot::default());
    (
        Feed {
            id,
            rx,
            budget: budget.clone(),
            end: end.clone(),
        },
        Delivery { tx, budget, end },
    )
}

#[derive(Debug)]
pub(crate) enum Cmd {
    Subscribe {
        id: String,
        stmt: Statement,
        skip_rows: bool,
        resume: Option<Resume>,
        to: Delivery,
    },
    Query {
        id: String,
        stmt: Statement,
        timeout: Option<f64>,
        to: Delivery,
    },
    /// A transaction or ping: one reply.
    Request {
        msg: crate::types::ws::ClientMessage,
        reply: oneshot::Sender<Result<RawMessage>>,
    },
    /// The consumer is gone: unsubscribe (or forget a query).
    Cancel { id: String },
}

/// A handle on the connection task; the task ends when every handle and feed is dropped.
#[derive(Debug, Clone)]
pub(crate) struct WsHandle {
    cmd: mpsc::Sender<Cmd>,
    ids: Arc<AtomicU64>,
}

impl WsHandle {
    /// Starts the connection task (on the current Tokio runtime).
    pub fn spawn(cfg: Arc<Config>, nodes: Arc<Nodes>) -> WsHandle {
        let (tx, rx) = mpsc::channel(CMD_QUEUE);
        tokio::spawn(conn::run(cfg, nodes, rx));
        WsHandle {
            cmd: tx,
            ids: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The connection task is gone.
    pub fn is_closed(&self) -> bool {
        self.cmd.is_closed()
    }

    /// A new id, never used before on this client's sockets.
    pub fn next_id(&self, prefix: char) -> String {
        format!("{prefix}{}", self.ids.fetch_add(1, Ordering::Relaxed))
    }

    async fn send(&self, cmd: Cmd) -> Result<()> {
        self.cmd.send(cmd).await.map_err(|_| Error::Closed)
    }

    /// Registers a subscription (sent now, or when connected).
    pub async fn subscribe(
        &self,
        stmt: Statement,
        skip_rows: bool,
        resume: Option<Resume>,
    ) -> Result<Feed> {
        let (feed, to) = route_channel(self.next_id('s'));
        self.send(Cmd::Subscribe {
            id: feed.id.clone(),
            stmt,
            skip_rows,
            resume,
            to,
        })
        .await?;
        Ok(feed)
    }

    pub async fn query(&self, stmt: Statement, timeout: Option<f64>) -> Result<Feed> {
        let (feed, to) = route_channel(self.next_id('q'));
        self.send(Cmd::Query {
            id: feed.id.clone(),
            stmt,
            timeout,
            to,
        })
        .await?;
        Ok(feed)
    }

    /// Sends a transaction or ping and waits for its reply.
    pub async fn request(&self, msg: crate::types::ws::ClientMessage) -> Result<RawMessage> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Request { msg, reply }).await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Tells the task a consumer is gone, without waiting (from `Drop`). If the command
    /// queue is full the task still notices: it sweeps routes whose consumer is gone.
    pub fn cancel(&self, id: String) {
        if let Err(e) = self.cmd.try_send(Cmd::Cancel { id }) {
            tracing::debug!("cancel not queued ({e}); the connection task sweeps closed routes");
        }
    }
}

/// A statement as the `sql`, `params` and `named_params` fields of a message.
pub(crate) fn statement_parts(
    stmt: Statement,
) -> (
    String,
    Option<Vec<crate::types::SqliteValue>>,
    Option<std::collections::BTreeMap<String, crate::types::SqliteValue>>,
) {
    match stmt {
        Statement::Simple(sql) => (sql, None, None),
        Statement::WithParams(sql, ps) => (sql, Some(ps), None),
        Statement::WithNamedParams(sql, ps) => (sql, None, Some(ps.into_iter().collect())),
    }
}
