//! Query and subscription events (one NDJSON line each) and the transaction response.

use crate::SqliteValue;
use serde::{Deserialize, Serialize};

/// A result row's id: its position for `/v1/queries`; for a subscription, the row's identity
/// for its whole life in the result (never reused).
pub type RowId = u64;
/// A subscription's change id: starts at 1, contiguous.
pub type ChangeId = u64;

/// What a change did to a subscription's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeType {
    Insert,
    Update,
    Delete,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Insert => "insert",
            ChangeType::Update => "update",
            ChangeType::Delete => "delete",
        }
    }
}

/// One event of a query or subscription stream, generic over the row type: `Vec<SqliteValue>`
/// on the wire ([`QueryEvent`]), or any type that deserializes from a JSON array of cells
/// (a tuple, or a struct with fields in column order) for typed rows.
///
/// ```text
/// {"columns":["id","name"]}
/// {"row":[1,[1,"a"]]}
/// {"eoq":{"time":0.001,"change_id":0}}       change_id: subscriptions only
/// {"change":["update",1,[1,"b"],1]}          [type, row id, cells, change id]
/// {"error":"…"}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TypedQueryEvent<T> {
    Columns(Vec<String>),
    Row(RowId, T),
    #[serde(rename = "eoq")]
    EndOfQuery {
        /// Seconds the query took.
        time: f64,
        /// The subscription's change id when the snapshot was taken (absent for queries).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        change_id: Option<ChangeId>,
    },
    Change(ChangeType, RowId, T, ChangeId),
    Error(String),
}

/// An event with untyped cells, as the node sends it.
pub type QueryEvent = TypedQueryEvent<Vec<SqliteValue>>;

/// Whether a notified row exists after the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyKind {
    Update,
    Delete,
}

/// One line of `POST /v1/updates/{table}`: `{"notify":["update",[pk…]]}` or `{"error":"…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    Notify(NotifyKind, Vec<SqliteValue>),
    Error(String),
}

/// The result of one statement of a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExecResult {
    Execute {
        rows_affected: usize,
        /// Seconds.
        time: f64,
    },
    Error {
        error: String,
    },
}

/// The answer to `POST /v1/transactions` (also the `transaction` reply on the WebSocket).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecResponse {
    /// Set when the transaction failed (and then also the only entry of `results`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub results: Vec<ExecResult>,
    /// Seconds from start to commit.
    pub time: f64,
    /// The node's new local version, or `None` if nothing replicated changed.
    pub version: Option<u64>,
    /// The node's actor id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_have_corrosions_shapes() {
        let cases: Vec<(QueryEvent, serde_json::Value)> = vec![
            (
                TypedQueryEvent::Columns(vec!["a".into()]),
                json!({"columns": ["a"]}),
            ),
            (
                TypedQueryEvent::Row(1, vec![SqliteValue::Integer(2)]),
                json!({"row": [1, [2]]}),
            ),
            (
                TypedQueryEvent::EndOfQuery {
                    time: 0.5,
                    change_id: Some(3),
                },
                json!({"eoq": {"time": 0.5, "change_id": 3}}),
            ),
            (
                TypedQueryEvent::EndOfQuery {
                    time: 0.5,
                    change_id: None,
                },
                json!({"eoq": {"time": 0.5}}),
            ),
            (
                TypedQueryEvent::Change(ChangeType::Delete, 4, vec!["x".into()], 9),
                json!({"change": ["delete", 4, ["x"], 9]}),
            ),
            (
                TypedQueryEvent::Error("bad".into()),
                json!({"error": "bad"}),
            ),
        ];
        for (ev, want) in cases {
            assert_eq!(serde_json::to_value(&ev).unwrap(), want);
            assert_eq!(serde_json::from_value::<QueryEvent>(want).unwrap(), ev);
        }
    }

    #[test]
    fn typed_rows_decode_into_tuples_and_structs() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct M {
            id: i64,
            name: String,
        }
        let ev: TypedQueryEvent<M> =
            serde_json::from_value(json!({"change": ["insert", 1, [7, "a"], 2]})).unwrap();
        assert_eq!(
            ev,
            TypedQueryEvent::Change(
                ChangeType::Insert,
                1,
                M {
                    id: 7,
                    name: "a".into()
                },
                2
            )
        );
        let ev: TypedQueryEvent<(i64, Option<String>)> =
            serde_json::from_value(json!({"row": [1, [7, null]]})).unwrap();
        assert_eq!(ev, TypedQueryEvent::Row(1, (7, None)));
    }

    #[test]
    fn exec_response_shapes() {
        let ok: ExecResponse = serde_json::from_value(json!({
            "results": [{"rows_affected": 1, "time": 0.1}], "time": 0.2, "version": 3, "actor_id": "a"
        }))
        .unwrap();
        assert_eq!(
            ok.results[0],
            ExecResult::Execute {
                rows_affected: 1,
                time: 0.1
            }
        );
        assert_eq!(ok.error, None);
        let err: ExecResponse = serde_json::from_value(json!({
            "results": [{"error": "no such table: x"}], "time": 0.0, "version": null
        }))
        .unwrap();
        assert!(matches!(&err.results[0], ExecResult::Error { error } if error.contains("x")));
    }
}
