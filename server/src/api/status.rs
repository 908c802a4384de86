//! `GET /v1/health` and `POST /v1/table_stats`.

use super::{error, json_response, Api, Body, Query};
use crate::store::catalog::quote;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

/// Health figures; thresholds come from the query string (`gaps`, `p99_lag`, `max_queue`,
/// `queue_size`, `failure_status`). Unlike Corrosion, an idle cluster is healthy: with no
/// recent remote change the lag is 0, not "unknown".
pub async fn health(api: &Api, req: Request<Incoming>) -> Response<Body> {
    let q = Query::parse(&req);
    let params = (|| -> Result<_, Response<Body>> {
        Ok((
            q.number::<i64>("gaps")?,
            q.number::<f64>("p99_lag")?,
            q.number::<u64>("max_queue")?,
            q.number::<u64>("queue_size")?,
            q.number::<u16>("failure_status")?,
        ))
    })();
    let (max_gaps, max_lag, max_queue, queue_size_param, failure_status) = match params {
        Ok(p) => p,
        Err(r) => return r,
    };
    let failure = match StatusCode::from_u16(failure_status.unwrap_or(503)) {
        Ok(s) => s,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "failure_status must be an HTTP status code (100-999)",
            )
        }
    };
    let h = api.node.health();
    if let Some(problem) = api.node.watchdog.problem() {
        return error(failure, format!("node is stalled: {problem}"));
    }
    let unhealthy = max_gaps.is_some_and(|g| h.gaps > g)
        || max_queue.is_some_and(|q| h.queue_size > q)
        || (max_lag.is_some_and(|l| h.p99_lag > l)
            && queue_size_param.is_none_or(|q| h.queue_size > q));
    let body = json!({"response": {"gaps": h.gaps, "members": h.members, "p99_lag": h.p99_lag, "queue_size": h.queue_size}});
    json_response(
        if unhealthy { failure } else { StatusCode::OK },
        serde_json::to_vec(&body).expect("json"),
    )
}

/// `{"tables": [...]}` → total row count over the existing ones, and the names that do not exist.
pub async fn table_stats(api: &Api, req: Request<Incoming>) -> Response<Body> {
    let v = match super::read_json(api, req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(tables) = v.get("tables").and_then(|t| t.as_array()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "body must be {\"tables\": [\"name\", …]}",
        );
    };
    let Some(names) = tables
        .iter()
        .map(|t| t.as_str().map(str::to_string))
        .collect::<Option<Vec<String>>>()
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "\"tables\" must be a list of table names (strings)",
        );
    };
    let pool = api.node.reads.clone();
    let res = tokio::task::spawn_blocking(move || -> anyhow::Result<(i64, Vec<String>)> {
        let conn = pool.get()?;
        let mut total = 0i64;
        let mut invalid = Vec::new();
        for n in names {
            let exists: i64 = conn.query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                [&n],
                |r| r.get(0),
            )?;
            if exists == 0 {
                invalid.push(n);
                continue;
            }
            total += conn.query_row(&format!("SELECT count(*) FROM {}", quote(&n)), [], |r| {
                r.get::<_, i64>(0)
            })?;
        }
        Ok((total, invalid))
    })
    .await;
    match res {
        Ok(Ok((total, invalid))) => json_response(
            StatusCode::OK,
            serde_json::to_vec(&json!({"total_row_count": total, "invalid_tables": invalid}))
                .expect("json"),
        ),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
