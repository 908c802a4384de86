//! The WebSocket protocol of `GET /v1/ws` (see `docs/websocket.md`): JSON text frames, one
//! message per frame. Client messages carry a `type` and a client-chosen `id`; every server
//! message carries the `id` it answers and the same fields as the NDJSON events.

use crate::{ChangeId, ChangeType, ExecResponse, RowId, SqliteValue, Statement, TypedQueryEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The subprotocol a client names to authenticate from a browser, which cannot set headers
/// on a WebSocket: `Sec-WebSocket-Protocol: verdigris.v1, verdigris.bearer.<token>`.
pub const SUBPROTOCOL: &str = "verdigris.v1";
/// Prefix of the subprotocol entry that carries the bearer token.
pub const BEARER_PROTOCOL_PREFIX: &str = "verdigris.bearer.";

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Subscribe to a query (`sql` + params), or attach to an existing subscription
    /// (`query_id`). With `from`, only changes after that change id are sent.
    Subscribe {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sql: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        params: Option<Vec<SqliteValue>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        named_params: Option<BTreeMap<String, SqliteValue>>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            alias = "subscription"
        )]
        query_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<ChangeId>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        skip_rows: bool,
    },
    /// Stop receiving a subscription's events (the subscription itself lives on while other
    /// listeners remain, then expires).
    Unsubscribe { id: String },
    /// Run a read-only query; answered by `columns`, `row`…, `eoq` (or `error`).
    Query {
        id: String,
        sql: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        params: Option<Vec<SqliteValue>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        named_params: Option<BTreeMap<String, SqliteValue>>,
        /// Seconds; 0 disables the node's default timeout.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<f64>,
    },
    /// Run statements as one transaction; answered by `transaction` (or `error`).
    Transaction {
        id: String,
        statements: Vec<Statement>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<f64>,
    },
    /// Answered by `pong`.
    Ping { id: String },
}

impl ClientMessage {
    pub fn id(&self) -> &str {
        match self {
            ClientMessage::Subscribe { id, .. }
            | ClientMessage::Unsubscribe { id }
            | ClientMessage::Query { id, .. }
            | ClientMessage::Transaction { id, .. }
            | ClientMessage::Ping { id } => id,
        }
    }
}

/// Builds a statement from a message's `sql`, `params` and `named_params`.
pub fn statement(
    sql: String,
    params: Option<Vec<SqliteValue>>,
    named_params: Option<BTreeMap<String, SqliteValue>>,
) -> Result<Statement, String> {
    match (params, named_params) {
        (Some(ps), _) => Ok(Statement::WithParams(sql, ps)),
        (None, Some(ps)) => {
            if let Some(k) = ps.keys().find(|k| !k.starts_with([':', '@', '$'])) {
                return Err(format!(
                    "named parameter {k:?} must include its prefix, e.g. \":{k}\""
                ));
            }
            Ok(Statement::WithNamedParams(sql, ps.into_iter().collect()))
        }
        (None, None) => Ok(Statement::Simple(sql)),
    }
}

/// Why the node sent an `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message is not valid (bad JSON, unknown type, missing field, bad SQL or params).
    BadRequest,
    /// The `id` is already in use on this socket by a live subscription or request.
    DuplicateId,
    /// `query_id` names no subscription on this node.
    NotFound,
    /// `from` is older than the subscription's retained change log: resubscribe without it.
    TooOld,
    /// The client did not read fast enough; `last_change_id` says where to resume.
    TooSlow,
    /// The query or transaction ran past its timeout.
    Timeout,
    /// A configured limit was reached (subscriptions or in-flight requests per socket).
    Limit,
    /// The node failed; retrying may help.
    Internal,
    /// The node is shutting down.
    Shutdown,
    /// A code this version does not know (from a newer node); treat it like `internal`.
    #[serde(other)]
    Unknown,
}

/// The payload of a server message: the NDJSON event fields, plus the WebSocket replies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerBody<T = Vec<SqliteValue>> {
    Columns(Vec<String>),
    Row(RowId, T),
    #[serde(rename = "eoq")]
    EndOfQuery {
        time: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        change_id: Option<ChangeId>,
    },
    Change(ChangeType, RowId, T, ChangeId),
    Error(String),
    /// The reply to `transaction`.
    Transaction(ExecResponse),
    /// The reply to `unsubscribe`: no more messages follow for this id.
    Unsubscribed(Empty),
    /// The reply to `ping`.
    Pong(Empty),
}

/// `{}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Empty {}

/// A message from the node: `{"id": …, <one body field>, <optional detail fields>}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerMessage<T = Vec<SqliteValue>> {
    /// The client's id this answers; absent only for errors about a message without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(flatten)]
    pub body: ServerBody<T>,
    /// With `error`: what kind of error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// With `error` code `too_slow`: the last change id sent for this subscription; resume
    /// with `from` set to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change_id: Option<ChangeId>,
    /// With a subscription's `columns`: the node's id of the subscription (`corro-query-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_id: Option<String>,
    /// With a subscription's `columns`: the hash of its SQL (`corro-query-hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

impl<T> ServerMessage<T> {
    pub fn new(id: Option<String>, body: ServerBody<T>) -> Self {
        ServerMessage {
            id,
            body,
            code: None,
            last_change_id: None,
            query_id: None,
            hash: None,
        }
    }

    pub fn error(id: Option<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage {
            code: Some(code),
            ..ServerMessage::new(id, ServerBody::Error(message.into()))
        }
    }

    /// The event, if this message carries one of the NDJSON event shapes.
    pub fn into_event(self) -> Option<TypedQueryEvent<T>> {
        Some(match self.body {
            ServerBody::Columns(c) => TypedQueryEvent::Columns(c),
            ServerBody::Row(r, t) => TypedQueryEvent::Row(r, t),
            ServerBody::EndOfQuery { time, change_id } => {
                TypedQueryEvent::EndOfQuery { time, change_id }
            }
            ServerBody::Change(k, r, t, c) => TypedQueryEvent::Change(k, r, t, c),
            ServerBody::Error(e) => TypedQueryEvent::Error(e),
            _ => return None,
        })
    }
}

impl<T> From<TypedQueryEvent<T>> for ServerBody<T> {
    fn from(ev: TypedQueryEvent<T>) -> Self {
        match ev {
            TypedQueryEvent::Columns(c) => ServerBody::Columns(c),
            TypedQueryEvent::Row(r, t) => ServerBody::Row(r, t),
            TypedQueryEvent::EndOfQuery { time, change_id } => {
                ServerBody::EndOfQuery { time, change_id }
            }
            TypedQueryEvent::Change(k, r, t, c) => ServerBody::Change(k, r, t, c),
            TypedQueryEvent::Error(e) => ServerBody::Error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn client_messages_decode() {
        let m: ClientMessage = serde_json::from_value(json!({
            "type": "subscribe", "id": "s1", "sql": "SELECT 1", "params": [1, "a"]
        }))
        .unwrap();
        assert_eq!(m.id(), "s1");
        let m: ClientMessage = serde_json::from_value(json!({
            "type": "subscribe", "id": "s2", "subscription": "x", "from": 3
        }))
        .unwrap();
        assert!(
            matches!(m, ClientMessage::Subscribe { query_id: Some(q), from: Some(3), .. } if q == "x")
        );
        let m: ClientMessage = serde_json::from_value(json!({
            "type": "transaction", "id": "t", "statements": ["INSERT INTO t VALUES (1)", ["SELECT ?", [1]]]
        }))
        .unwrap();
        assert!(
            matches!(m, ClientMessage::Transaction { statements, .. } if statements.len() == 2)
        );
        assert!(
            serde_json::from_value::<ClientMessage>(json!({"type": "nope", "id": "x"})).is_err()
        );
        assert!(serde_json::from_value::<ClientMessage>(json!({"type": "ping"})).is_err());
    }

    #[test]
    fn server_messages_are_events_plus_id() {
        let m: ServerMessage = ServerMessage::new(
            Some("s1".into()),
            ServerBody::Change(ChangeType::Insert, 1, vec![SqliteValue::Integer(5)], 2),
        );
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v, json!({"id": "s1", "change": ["insert", 1, [5], 2]}));
        assert_eq!(serde_json::from_value::<ServerMessage>(v).unwrap(), m);
        let e: ServerMessage = ServerMessage {
            last_change_id: Some(7),
            ..ServerMessage::error(Some("s1".into()), ErrorCode::TooSlow, "slow")
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            json!({"id": "s1", "error": "slow", "code": "too_slow", "last_change_id": 7})
        );
        assert_eq!(serde_json::from_value::<ServerMessage>(v).unwrap(), e);
        let newer: ServerMessage =
            serde_json::from_value(json!({"id": "s", "error": "x", "code": "from_the_future"}))
                .unwrap();
        assert_eq!(newer.code, Some(ErrorCode::Unknown));
        let p: ServerMessage = ServerMessage::new(Some("p".into()), ServerBody::Pong(Empty {}));
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"id": "p", "pong": {}})
        );
    }
}
