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
    let _serial = serial();
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
    let _serial = serial();
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
