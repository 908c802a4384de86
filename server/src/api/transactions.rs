//! `POST /v1/transactions[?timeout=<secs>]`: a JSON array of statements run as one atomic
//! transaction on the writer.

use super::{error, json, json_response, numeric_param, Api, Body};
use crate::store::local::TxError;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use std::time::Duration;

pub async fn handle(api: &Api, req: Request<Incoming>) -> Response<Body> {
    let timeout = match numeric_param::<f64>(&req, "timeout") {
        Ok(t) => t.filter(|t| *t > 0.0).map(Duration::from_secs_f64),
        Err(r) => return r,
    };
    let value = match super::read_json(api, req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let actor_id = api.node.actor.to_string();
    let fail = |status: StatusCode, msg: String| {
        json_response(
            status,
            serde_json::to_vec(&json!({
                "error": msg, "results": [{"error": msg}], "time": 0.0, "version": null, "actor_id": actor_id,
            }))
            .expect("json"),
        )
    };
    let serde_json::Value::Array(items) = value else {
        return fail(
            StatusCode::BAD_REQUEST,
            "body must be a JSON array of statements, e.g. [\"INSERT INTO t VALUES (1)\"]".into(),
        );
    };
    if items.is_empty() {
        return fail(
            StatusCode::BAD_REQUEST,
            "at least 1 statement is required".into(),
        );
    }
    let mut stmts = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match json::statement(item) {
            Ok(s) => stmts.push(s),
            Err(e) => return fail(StatusCode::BAD_REQUEST, format!("statement {}: {e}", i + 1)),
        }
    }
    let store = api.node.store.clone();
    // The statements go to the writer thread and come back for error messages (no copy).
    let run = tokio::task::spawn_blocking(move || {
        let out = store.lock().expect("store lock").transact(&stmts, timeout);
        (out, stmts)
    })
    .await;
    match run {
        Ok((Ok(out), _)) => {
            let results: Vec<_> = out
                .results
                .iter()
                .map(|r| json!({"rows_affected": r.rows_affected, "time": r.time}))
                .collect();
            json_response(
                StatusCode::OK,
                serde_json::to_vec(&json!({"results": results, "time": out.time, "version": out.version, "actor_id": actor_id}))
                    .expect("json"),
            )
        }
        Ok((Err(TxError::Client { index, message }), stmts)) => {
            let sql: String = stmts[index].sql.chars().take(80).collect();
            fail(
                StatusCode::BAD_REQUEST,
                format!("statement {} ({sql}): {message}", index + 1),
            )
        }
        Ok((Err(e @ TxError::Timeout(_)), _)) => fail(StatusCode::REQUEST_TIMEOUT, e.to_string()),
        Ok((Err(TxError::Internal(e)), _)) => {
            tracing::error!(error = %format!("{e:#}"), "transaction failed");
            fail(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("transaction task failed: {e}"),
        ),
    }
}
