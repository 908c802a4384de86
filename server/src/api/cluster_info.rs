//! Read-only JSON views of the node for dashboards (the web console polls them):
//!
//! - `GET /v1/cluster/members`: this node and every SWIM member, with state, address,
//!   round-trip time, when it was last seen alive, and per origin actor what this node holds
//!   of its versions (head, gaps, partial versions) and the lag of its latest broadcast;
//! - `GET /v1/subscriptions`: the node's subscriptions with their cost (rows, listeners,
//!   plan);
//! - `GET /v1/stats`: counters since start (writes, changes applied) and current figures,
//!   so a client derives rates from two readings;
//! - `GET /v1/tables`: the replicated tables, their columns and row counts.
//!
//! Nothing here writes or takes the writer lock; each answer is built from the node's shared
//! state or one read-pool connection.

use super::{error, json_response, Api, Body};
use crate::crdt::ActorId;
use crate::store::catalog::quote;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn ok(v: Value) -> Response<Body> {
    json_response(StatusCode::OK, serde_json::to_vec(&v).expect("json"))
}

/// Seconds since `t`, rounded to milliseconds.
fn age(now: Instant, t: Instant) -> f64 {
    (now.saturating_duration_since(t).as_secs_f64() * 1000.0).round() / 1000.0
}

/// What this node holds of `actor`'s versions: `(head, missing versions, partial versions)`.
fn holdings(api: &Api, actor: &ActorId) -> (u64, u64, usize) {
    let book = api.node.shared.book.read().expect("book lock");
    book.get(actor)
        .map_or((0, 0, 0), |b| (b.max, b.needed.len(), b.partials.len()))
}

/// `GET /v1/cluster/members`.
pub async fn members(api: &Api) -> Response<Body> {
    let node = &api.node;
    let status = &node.cluster;
    let now = Instant::now();
    let (head, _, _) = holdings(api, &node.actor);
    let members: Vec<Value> = status
        .members
        .read()
        .expect("members lock")
        .iter()
        .map(|m| {
            let actor = ActorId::parse(&m.actor_id);
            let (head, gaps, partial) = actor.map_or((0, 0, 0), |a| holdings(api, &a));
            let lag = actor.and_then(|a| status.peer_lag(&a));
            json!({
                "actor_id": m.actor_id,
                "address": m.address.to_string(),
                "state": m.state,
                "rtt_ms": m.rtt_ms,
                "last_seen_secs": m.last_seen.map(|t| age(now, t)),
                "head": head,
                "gaps": gaps,
                "partial": partial,
                "lag_secs": lag.map(|l| l.lag_secs),
                "last_applied_secs": lag.map(|l| age(now, l.at)),
            })
        })
        .collect();
    ok(json!({
        "actor_id": node.actor.to_string(),
        "gossip_addr": status.gossip_addr.get().map(|a| a.to_string()),
        "head": head,
        "gaps": status.gaps.load(Ordering::Relaxed),
        "members": members,
    }))
}

/// `GET /v1/subscriptions`: every subscription on this node.
pub async fn subscriptions(api: &Api) -> Response<Body> {
    // The registry lock is also held by the matcher during a round: wait off the runtime.
    let subs = api.node.subs.clone();
    match tokio::task::spawn_blocking(move || subs.list()).await {
        Ok(list) => ok(json!({ "subscriptions": list })),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /v1/stats`.
pub async fn stats(api: &Api) -> Response<Body> {
    let node = &api.node;
    let status = &node.cluster;
    let activity = node.activity.snapshot();
    let (lag_samples, _, lag_p99) = status.lag_summary();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let mut v = serde_json::to_value(activity).expect("json");
    let extra = json!({
        "time": unix,
        "uptime_secs": node.started.elapsed().as_secs_f64(),
        "chunks_ingested": status.counters.changes_ingested.load(Ordering::Relaxed),
        "gaps": status.gaps.load(Ordering::Relaxed),
        "queue_size": status.queue_size.load(Ordering::Relaxed),
        "lag_samples": lag_samples,
        "lag_p99_secs": lag_p99,
        "members_alive": status.alive_members(),
    });
    if let (Value::Object(o), Value::Object(e)) = (&mut v, extra) {
        o.extend(e);
    }
    ok(v)
}

/// `GET /v1/tables`: replicated tables with their columns and row counts.
pub async fn tables(api: &Api) -> Response<Body> {
    let node = Arc::clone(&api.node);
    let res = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Value>> {
        let conn = node.reads.get()?;
        let catalog = node.shared.catalog();
        let mut out = Vec::new();
        for t in catalog.tables() {
            let rows: i64 = conn.query_row(
                &format!("SELECT count(*) FROM {}", quote(&t.name)),
                [],
                |r| r.get(0),
            )?;
            let columns: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
            out.push(json!({"name": t.name, "columns": columns, "rows": rows}));
        }
        Ok(out)
    })
    .await;
    match res {
        Ok(Ok(tables)) => ok(json!({ "tables": tables })),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
