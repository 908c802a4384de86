//! Subscriptions across nodes: a subscriber on one node sees writes made on another, through
//! broadcast and through sync (a late node catching up).

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Opens a subscription on `node` and returns a channel of its NDJSON events.
async fn subscribe(node: &TestNode, sql: &str) -> tokio::sync::mpsc::Receiver<Value> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = hyper::Request::post(format!("http://{}/v1/subscriptions", node.api))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json!(sql).to_string())))
        .expect("request");
    let resp = client.request(req).await.expect("subscribe");
    assert_eq!(resp.status(), 200);
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
                while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=i).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                        if tx.send(v).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    rx
}

/// Applies events to a row map until `done` holds, or panics after `secs`.
async fn follow(
    rx: &mut tokio::sync::mpsc::Receiver<Value>,
    rows: &mut BTreeMap<u64, Value>,
    secs: u64,
    done: impl Fn(&BTreeMap<u64, Value>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !done(rows) {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("timed out waiting for subscription events")
            .expect("stream ended");
        if let Some(r) = ev.get("row") {
            rows.insert(r[0].as_u64().unwrap(), r[1].clone());
        } else if let Some(c) = ev.get("change") {
            let id = c[1].as_u64().unwrap();
            match c[0].as_str().unwrap() {
                "delete" => {
                    rows.remove(&id);
                }
                _ => {
                    rows.insert(id, c[2].clone());
                }
            }
        } else if let Some(e) = ev.get("error") {
            panic!("subscription error: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_writes_from_other_nodes() {
    let _serial = serial().await;
    let (da, db) = (NodeDir::new(), NodeDir::new());
    let a = da.start(&[]);
    let b = db.start(&[a.gossip]);
    wait_for_mesh(&[&a, &b]).await;
    let sql = "SELECT id, val FROM items WHERE owner = 'a' ORDER BY id";
    let mut rx = subscribe(&b, sql).await;
    let mut rows = BTreeMap::new();
    a.exec(json!([[
        "INSERT INTO items (id, owner, val) VALUES (1, 'a', 'x'), (2, 'a', 'y'), (3, 'b', 'z')",
        []
    ]]))
    .await;
    follow(&mut rx, &mut rows, 30, |r| r.len() == 2).await;
    a.exec(json!([
        ["UPDATE items SET val = 'x2' WHERE id = 1", []],
        ["DELETE FROM items WHERE id = 2", []]
    ]))
    .await;
    follow(&mut rx, &mut rows, 30, |r| {
        r.len() == 1 && r.values().next() == Some(&json!([1, "x2"]))
    })
    .await;
    // The rebuilt state equals a fresh query on the subscriber's node.
    let fresh = b.query(sql).await;
    let mine: Vec<Value> = rows.values().cloned().collect();
    assert_eq!(mine, fresh.into_iter().map(Value::from).collect::<Vec<_>>());

    // A third node that joins late catches up through sync; its subscription follows.
    let dc = NodeDir::new();
    let c = dc.start(&[a.gossip]);
    let mut rx_c = subscribe(&c, "SELECT count(*) FROM items").await;
    let mut rows_c = BTreeMap::new();
    follow(&mut rx_c, &mut rows_c, 60, |r| {
        r.values().next() == Some(&json!([2]))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_bootstraps_from_a_snapshot_and_its_subscriptions_follow() {
    let _serial = serial().await;
    let da = NodeDir::new();
    let a = da.start(&[]);
    for t in 0..2 {
        a.exec(insert_range("a", t * 10_000, (t + 1) * 10_000))
            .await;
    }
    a.exec(json!([
        ["UPDATE items SET val = 'changed' WHERE id = 7", []],
        ["DELETE FROM items WHERE id = 8", []]
    ]))
    .await;
    // Any database size is worth a snapshot for this node.
    let db = NodeDir::with_gossip("snapshot_min_bytes = 0");
    let b = db.start(&[a.gossip]);
    let sql = "SELECT id, val FROM items WHERE id % 1000 = 7 ORDER BY id";
    let mut rx = subscribe(&b, sql).await;
    let mut rows = BTreeMap::new();
    follow(&mut rx, &mut rows, 60, |r| r.len() == 20).await;
    // The log line follows the import (and the subscription refresh) by a moment.
    let logged = wait_for(10, || async {
        db.log().contains("bootstrapped from a peer's snapshot")
    })
    .await;
    assert!(
        logged,
        "b did not log a bootstrap from a snapshot; its log:\n{}",
        db.log()
    );
    assert_eq!(b.count("items").await, 19_999);
    let fresh = b.query(sql).await;
    let mine: Vec<Value> = rows.values().cloned().collect();
    assert_eq!(mine, fresh.into_iter().map(Value::from).collect::<Vec<_>>());
    assert_eq!(mine[0], json!([7, "changed"]));

    // Afterwards it takes new writes from A and its own writes reach A.
    a.exec(json!([[
        "INSERT INTO items (id, owner, val) VALUES (50007, 'a', 'new')",
        []
    ]]))
    .await;
    b.exec(json!([[
        "UPDATE items SET val = 'from b' WHERE id = 1007",
        []
    ]]))
    .await;
    follow(&mut rx, &mut rows, 60, |r| {
        r.len() == 21 && r.values().any(|v| v == &json!([1007, "from b"]))
    })
    .await;
    wait_converged(
        &[&a, &b],
        "SELECT id, owner, val, n FROM items ORDER BY id",
        60,
    )
    .await;
    eventually(30, "no gaps left on the new node", || async {
        b.health().await["gaps"] == 0
    })
    .await;
}

/// `verdigris_<name>_total` from a node's `GET /metrics`.
async fn counter(node: &TestNode, name: &str) -> f64 {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = hyper::Request::get(format!("http://{}/metrics", node.api))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = client.request(req).await.expect("metrics");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&body).to_string();
    let prefix = format!("verdigris_{name}_total ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

fn multiset(rows: impl IntoIterator<Item = Value>) -> Vec<String> {
    let mut v: Vec<String> = rows.into_iter().map(|r| r.to_string()).collect();
    v.sort();
    v
}

/// Aggregate and DISTINCT subscriptions are kept from before-images, which remote merges
/// record too: with writes on both nodes (rows moving between groups, deletes, the same rows
/// written on both sides and merged), a subscriber's state equals a fresh run on its node once
/// the cluster converged, without re-running the queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_subscriptions_follow_remote_and_merged_writes() {
    let _serial = serial().await;
    let (da, db) = (NodeDir::new(), NodeDir::new());
    let a = da.start(&[]);
    let b = db.start(&[a.gossip]);
    wait_for_mesh(&[&a, &b]).await;
    let queries = [
        "SELECT owner, count(*), sum(n), min(n), max(n), avg(n) FROM items GROUP BY owner",
        "SELECT count(*), total(n), max(val), count(n) FROM items",
        "SELECT DISTINCT val FROM items WHERE n IS NOT NULL",
    ];
    let mut subs = Vec::new();
    for q in queries {
        subs.push((q, subscribe(&b, q).await, BTreeMap::new()));
    }
    // A small deterministic PRNG (xorshift64*).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    };
    for round in 0..60 {
        let id = next(20);
        let owner = ["a", "b", "c"][next(3) as usize];
        let n = if next(6) == 0 {
            Value::Null
        } else {
            json!(next(50))
        };
        let stmt = match next(5) {
            0 | 1 => json!([
                "INSERT OR REPLACE INTO items (id, owner, val, n) VALUES (?, ?, ?, ?)",
                [id, owner, format!("v{}", next(4)), n]
            ]),
            2 => json!([
                "UPDATE items SET owner = ?, n = ? WHERE id = ?",
                [owner, n, id]
            ]),
            3 => json!(["UPDATE items SET n = n + 1 WHERE owner = ?", [owner]]),
            _ => json!(["DELETE FROM items WHERE id = ?", [id]]),
        };
        // Mostly remote writes (made on A), some local to B, some to both at once.
        let on_b = round % 4 == 1;
        let both = round % 7 == 3;
        if on_b || both {
            b.exec(json!([stmt.clone()])).await;
        }
        if !on_b || both {
            a.exec(json!([stmt])).await;
        }
    }
    wait_converged(
        &[&a, &b],
        "SELECT id, owner, val, n FROM items ORDER BY id",
        60,
    )
    .await;
    for (q, rx, rows) in subs.iter_mut() {
        let fresh = multiset(b.query(q).await.into_iter().map(Value::from));
        follow(rx, rows, 60, |r| multiset(r.values().cloned()) == fresh).await;
    }
    assert_eq!(
        counter(&b, "subscription_image_reruns").await,
        0.0,
        "every round on B applied before-images (local and merged)"
    );
}
