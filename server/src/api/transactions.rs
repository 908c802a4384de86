//! `POST /v1/transactions[?timeout=<secs>]`: a JSON array of statements run as one atomic
//! transaction on the writer. [`run`] serves the WebSocket `transaction` message too.

use super::{json, json_response, Api, Body, Query};
use crate::store::local::TxError;
use crate::store::Statement;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use std::time::Duration;
use verdigris_api_types::{ExecResponse, ExecResult};

/// A failed transaction: the status that says whose fault it is, and the message.
pub struct Failed {
    pub status: StatusCode,
    pub message: String,
}

impl Failed {
    fn new(status: StatusCode, message: impl Into<String>) -> Failed {
        Failed {
            status,
            message: message.into(),
        }
    }
}

/// Decodes a JSON array of statements.
pub fn decode(value: serde_json::Value) -> Result<Vec<Statement>, Failed> {
    let serde_json::Value::Array(items) = value else {
        return Err(Failed::new(
            StatusCode::BAD_REQUEST,
            "body must be a JSON array of statements, e.g. [\"INSERT INTO t VALUES (1)\"]",
        ));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            json::decode_statement(item).map_err(|e| {
                Failed::new(StatusCode::BAD_REQUEST, format!("statement {}: {e}", i + 1))
            })
        })
        .collect()
}

/// Runs `stmts` as one transaction on the writer, off the async workers.
pub async fn run(
    api: &Api,
    stmts: Vec<Statement>,
    timeout: Option<Duration>,
) -> Result<ExecResponse, Failed> {
    if stmts.is_empty() {
        return Err(Failed::new(
            StatusCode::BAD_REQUEST,
            "at least 1 statement is required",
        ));
    }
    let store = api.node.store.clone();
    // The statements go to the writer thread and come back for error messages (no copy).
    let run = tokio::task::spawn_blocking(move || {
        let out = store.lock().expect("store lock").transact(&stmts, timeout);
        (out, stmts)
    })
    .await;
    match run {
        Ok((Ok(out), _)) => Ok(ExecResponse {
            error: None,
            results: out
                .results
                .iter()
                .map(|r| ExecResult::Execute {
                    rows_affected: r.rows_affected,
                    time: r.time,
                })
                .collect(),
            time: out.time,
            version: out.version,
            actor_id: Some(api.node.actor.to_string()),
        }),
        Ok((Err(TxError::Client { index, message }), stmts)) => {
            let sql: String = stmts[index].sql.chars().take(80).collect();
            Err(Failed::new(
                StatusCode::BAD_REQUEST,
                format!("statement {} ({sql}): {message}", index + 1),
            ))
        }
        Ok((Err(e @ TxError::Timeout(_)), _)) => {
            Err(Failed::new(StatusCode::REQUEST_TIMEOUT, e.to_string()))
        }
        Ok((Err(TxError::Internal(e)), _)) => {
            tracing::error!(error = %format!("{e:#}"), "transaction failed");
            Err(Failed::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{e:#}"),
            ))
        }
        Err(e) => Err(Failed::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("transaction task failed: {e}"),
        )),
    }
}

/// The longest timeout a request may ask for (a day); longer ones are refused.
pub const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// A timeout in seconds as asked: `None` or 0 for none, else at most [`MAX_TIMEOUT_SECS`].
pub fn timeout(secs: Option<f64>) -> Result<Option<Duration>, String> {
    match secs {
        None => Ok(None),
        Some(0.0) => Ok(None),
        Some(t) if t > 0.0 && t <= MAX_TIMEOUT_SECS => Ok(Some(Duration::from_secs_f64(t))),
        Some(t) => Err(format!(
            "timeout={t} is out of range: give seconds between 0 (none) and {MAX_TIMEOUT_SECS}"
        )),
    }
}

pub async fn handle(api: &Api, req: Request<Incoming>) -> Response<Body> {
    let asked = match Query::parse(&req).number::<f64>("timeout") {
        Ok(t) => t,
        Err(r) => return r,
    };
    let timeout = match timeout(asked) {
        Ok(t) => t,
        Err(m) => return super::error(StatusCode::BAD_REQUEST, m),
    };
    let result = match super::read_json(api, req).await {
        Ok(v) => match decode(v) {
            Ok(stmts) => run(api, stmts, timeout).await,
            Err(f) => Err(f),
        },
        Err(r) => return r,
    };
    let (status, body) = match result {
        Ok(out) => (StatusCode::OK, out),
        Err(f) => (
            f.status,
            ExecResponse {
                error: Some(f.message.clone()),
                results: vec![ExecResult::Error { error: f.message }],
                time: 0.0,
                version: None,
                actor_id: Some(api.node.actor.to_string()),
            },
        ),
    };
    json_response(status, crate::subs::attach::to_json(&body))
}
