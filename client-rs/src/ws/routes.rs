//! The demultiplexer of one WebSocket connection: which client id belongs to which
//! consumer, what to send when (re)connected, and what happens to a consumer that does not
//! keep up. Pure bookkeeping (no socket), driven by the connection task.

use super::{statement_parts, Cmd, Delivery, EndReason, Item, Limits, RawMessage, Resume};
use crate::error::Error;
use crate::types::ws::{ClientMessage, ErrorCode, ServerBody};
use crate::types::Statement;
use std::collections::{HashMap, VecDeque};
use tokio::sync::oneshot;

/// What is yet to be sent for a route.
#[derive(Debug)]
enum Pending {
    Sub {
        stmt: Statement,
        skip_rows: bool,
        resume: Option<Resume>,
    },
    Query {
        stmt: Statement,
        timeout: Option<f64>,
    },
    Request(ClientMessage),
}

#[derive(Debug)]
enum Sink {
    /// A subscription or query: a stream of messages.
    Stream { to: Delivery, subscription: bool },
    /// A transaction or ping: one reply.
    Reply(oneshot::Sender<crate::Result<RawMessage>>),
}

#[derive(Debug)]
struct Route {
    sink: Sink,
    /// `Some` until sent on a connection.
    pending: Option<Pending>,
}

/// Every live id of one client's WebSocket.
#[derive(Debug)]
pub(crate) struct Routes {
    map: HashMap<String, Route>,
    max: usize,
    limits: Limits,
}

impl Routes {
    /// At most `max` routes; each consumer may have `limits` pending.
    pub fn new(max: usize, limits: Limits) -> Routes {
        Routes {
            map: HashMap::new(),
            max,
            limits,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Applies a consumer's command; when connected to node `online`, what it sends goes
    /// to `out` at once, otherwise it waits for [`Routes::connected`].
    pub fn command(&mut self, cmd: Cmd, online: Option<usize>, out: &mut VecDeque<ClientMessage>) {
        let (id, route) = match cmd {
            Cmd::Cancel { id } => {
                if let Some(r) = self.map.remove(&id) {
                    let subscribed = matches!(
                        r.sink,
                        Sink::Stream {
                            subscription: true,
                            ..
                        }
                    );
                    if subscribed && r.pending.is_none() && online.is_some() {
                        out.push_back(ClientMessage::Unsubscribe { id });
                    }
                }
                return;
            }
            Cmd::Subscribe {
                id,
                stmt,
                skip_rows,
                resume,
                to,
            } => (
                id,
                Route {
                    sink: Sink::Stream {
                        to,
                        subscription: true,
                    },
                    pending: Some(Pending::Sub {
                        stmt,
                        skip_rows,
                        resume,
                    }),
                },
            ),
            Cmd::Query {
                id,
                stmt,
                timeout,
                to,
            } => (
                id,
                Route {
                    sink: Sink::Stream {
                        to,
                        subscription: false,
                    },
                    pending: Some(Pending::Query { stmt, timeout }),
                },
            ),
            Cmd::Request { msg, reply } => (
                msg.id().to_string(),
                Route {
                    sink: Sink::Reply(reply),
                    pending: Some(Pending::Request(msg)),
                },
            ),
        };
        let refuse = if self.map.len() >= self.max {
            Some((ErrorCode::Limit, format!("{} subscriptions and requests are already in flight on this client's WebSocket (the configured max_ws_requests)", self.max)))
        } else if self.map.contains_key(&id) {
            Some((
                ErrorCode::DuplicateId,
                format!("id {id:?} is already in use"),
            ))
        } else {
            None
        };
        if let Some((code, message)) = refuse {
            finish(
                route.sink,
                EndReason::Failed(Error::Server {
                    code: Some(code),
                    message,
                }),
            );
            return;
        }
        self.map.insert(id.clone(), route);
        if let Some(node) = online {
            self.send(&id, node, out);
        }
    }

    /// A connection to node `node` is up: sends everything not sent yet.
    pub fn connected(&mut self, node: usize, out: &mut VecDeque<ClientMessage>) {
        let ids: Vec<String> = self
            .map
            .iter()
            .filter(|(_, r)| r.pending.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.send(&id, node, out);
        }
    }

    fn send(&mut self, id: &str, node: usize, out: &mut VecDeque<ClientMessage>) {
        let Some(route) = self.map.get_mut(id) else {
            return;
        };
        let Some(pending) = route.pending.take() else {
            return;
        };
        let id = id.to_string();
        let msg = match pending {
            Pending::Request(m) => m,
            Pending::Query { stmt, timeout } => {
                let (sql, params, named_params) = statement_parts(stmt);
                ClientMessage::Query {
                    id: id.clone(),
                    sql,
                    params,
                    named_params,
                    timeout,
                }
            }
            Pending::Sub {
                stmt,
                skip_rows,
                resume,
            } => {
                let resume = resume.filter(|r| r.node == node);
                let resumed = resume.is_some();
                let gone = match &route.sink {
                    Sink::Stream { to, .. } => to.tx.send(Item::Started { node, resumed }).is_err(),
                    Sink::Reply(_) => false,
                };
                if gone {
                    // The consumer is gone (a fresh channel is never full).
                    self.map.remove(&id);
                    return;
                }
                match resume {
                    Some(Resume {
                        query_id: Some(q),
                        from,
                        ..
                    }) => ClientMessage::Subscribe {
                        id: id.clone(),
                        sql: None,
                        params: None,
                        named_params: None,
                        query_id: Some(q),
                        from: Some(from),
                        skip_rows,
                    },
                    r => {
                        let (sql, params, named_params) = statement_parts(stmt);
                        ClientMessage::Subscribe {
                            id: id.clone(),
                            sql: Some(sql),
                            params,
                            named_params,
                            query_id: None,
                            from: r.map(|r| r.from),
                            skip_rows,
                        }
                    }
                }
            }
        };
        out.push_back(msg);
    }

    /// Routes one message from the node to its consumer, never waiting: a consumer whose
    /// channel is full is cut off (a subscription is also unsubscribed via `out`).
    /// `bytes` is the size of the message's frame.
    pub fn message(&mut self, msg: RawMessage, bytes: usize, out: &mut VecDeque<ClientMessage>) {
        let Some(id) = msg.id.clone() else {
            tracing::warn!(message = ?msg.body, code = ?msg.code, "the node reported an error about a message without id (a client bug)");
            return;
        };
        let Some(route) = self.map.get(&id) else {
            tracing::trace!(id, "message for an id no longer followed");
            return;
        };
        if route.pending.is_some() {
            tracing::warn!(
                id,
                "message for an id not sent yet on this connection; ignored"
            );
            return;
        }
        // What to do with the route once the message is handled: keep it, or remove it
        // (and unsubscribe on the node).
        let remove: Option<bool> = match &route.sink {
            Sink::Stream { to, subscription } => {
                let subscription = *subscription;
                let terminal = match &msg.body {
                    ServerBody::Error(_) | ServerBody::Unsubscribed(_) => true,
                    ServerBody::EndOfQuery { .. } => !subscription,
                    ServerBody::Transaction(_) | ServerBody::Pong(_) => {
                        tracing::debug!(id, "reply of a request for a stream id; ignored");
                        return;
                    }
                    _ => false,
                };
                if !to.budget.reserve(&msg, bytes, self.limits) {
                    if subscription {
                        tracing::warn!(id, "subscription consumer fell behind (its buffer is full): unsubscribing; it re-subscribes with a fresh snapshot when read again");
                        to.end.set(EndReason::Behind);
                    } else {
                        tracing::warn!(
                            id,
                            "query consumer fell behind (its buffer is full): abandoning the query"
                        );
                        to.end.set(EndReason::Failed(Error::Lagged));
                    }
                    Some(subscription && !terminal)
                } else if to.tx.send(Item::Msg { msg, bytes }).is_err() {
                    // The consumer is gone.
                    Some(subscription && !terminal)
                } else if terminal {
                    to.end.set(EndReason::Ended);
                    Some(false)
                } else {
                    None
                }
            }
            Sink::Reply(_) => match msg.body {
                ServerBody::Transaction(_) | ServerBody::Pong(_) | ServerBody::Error(_) => {
                    if let Some(Route {
                        sink: Sink::Reply(reply),
                        ..
                    }) = self.map.remove(&id)
                    {
                        if reply.send(Ok(msg)).is_err() {
                            tracing::debug!(id, "reply arrived after its caller gave up");
                        }
                    }
                    None
                }
                _ => {
                    tracing::debug!(id, "stream event for a request id; ignored");
                    None
                }
            },
        };
        if let Some(unsubscribe) = remove {
            self.map.remove(&id);
            if unsubscribe {
                out.push_back(ClientMessage::Unsubscribe { id });
            }
        }
    }

    /// The connection is gone: everything sent on it ends (subscriptions are told to
    /// resume, requests fail: their outcome is unknown); unsent routes wait for the next.
    pub fn disconnected(&mut self, why: &str) {
        let sent: Vec<String> = self
            .map
            .iter()
            .filter(|(_, r)| r.pending.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in sent {
            let Some(r) = self.map.remove(&id) else {
                continue;
            };
            let reason = match &r.sink {
                Sink::Stream {
                    subscription: true, ..
                } => EndReason::Disconnected,
                _ => EndReason::Failed(Error::ConnectionLost {
                    reason: Some(why.to_string()),
                }),
            };
            finish(r.sink, reason);
        }
    }

    /// No connection can be made: every route fails with `err`.
    pub fn fail_all(&mut self, err: &Error) {
        for (_, r) in self.map.drain() {
            finish(r.sink, EndReason::Failed(err.clone_lossy()));
        }
    }

    /// Forgets routes whose consumer is gone (their cancel may not have been queued),
    /// unsubscribing their subscriptions.
    pub fn sweep(&mut self, online: bool, out: &mut VecDeque<ClientMessage>) {
        let gone: Vec<String> = self
            .map
            .iter()
            .filter(|(_, r)| match &r.sink {
                Sink::Stream { to, .. } => to.tx.is_closed(),
                Sink::Reply(reply) => reply.is_closed(),
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(r) = self.map.remove(&id) {
                let subscribed = matches!(
                    r.sink,
                    Sink::Stream {
                        subscription: true,
                        ..
                    }
                );
                if subscribed && r.pending.is_none() && online {
                    out.push_back(ClientMessage::Unsubscribe { id });
                }
            }
        }
    }
}

/// Ends a consumer: its channel closes after `reason` is recorded, or its reply fails.
fn finish(sink: Sink, reason: EndReason) {
    match sink {
        Sink::Stream { to, .. } => {
            // Record why before the channel closes.
            to.end.set(reason);
            drop(to);
        }
        Sink::Reply(reply) => {
            let err = match reason {
                EndReason::Failed(e) => e,
                EndReason::Disconnected | EndReason::Ended | EndReason::Behind => {
                    Error::ConnectionLost { reason: None }
                }
            };
            if reply.send(Err(err)).is_err() {
                tracing::debug!("request failed after its caller gave up");
            }
        }
    }
}

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;
