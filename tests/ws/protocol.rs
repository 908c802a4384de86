//! The protocol's happy paths.

use crate::sock::Sock;
use crate::support::{NodeDir, Proto};
use crate::SCHEMA;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscriptions_queries_and_transactions_share_one_socket() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let mut ws = Sock::connect(node.addr()).await;
    let n = 40;
    let reply = ws
        .transact(
            "t0",
            json!([format!("WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i+1 FROM n WHERE i < {}) INSERT INTO t SELECT i, 'v' || i, 0 FROM n", n - 1)]),
        )
        .await;
    assert_eq!(reply["transaction"]["results"][0]["rows_affected"], n);
    assert_eq!(reply["transaction"]["version"], 1);

    // Subscribe to every row at once, then read the snapshots (they interleave).
    for i in 0..n {
        ws.send(json!({"type": "subscribe", "id": format!("s{i}"), "sql": "SELECT id, a FROM t WHERE id = ?", "params": [i]}))
            .await;
    }
    let mut query_ids = std::collections::HashSet::new();
    for i in 0..n {
        let (cols, rows, eoq) = ws.snapshot(&format!("s{i}")).await;
        assert_eq!(cols["columns"], json!(["id", "a"]));
        assert!(query_ids.insert(cols["query_id"].as_str().unwrap().to_string()));
        assert_eq!(cols["hash"].as_str().unwrap().len(), 16);
        assert_eq!(rows, vec![json!([1, [i, format!("v{i}")]])]);
        assert_eq!(eoq["eoq"]["change_id"], 0);
    }

    // A query and a transaction while subscriptions are live.
    ws.send(json!({"type": "query", "id": "q1", "sql": "SELECT count(*) FROM t WHERE id >= ?", "params": [10]}))
        .await;
    let (cols, rows, eoq) = ws.snapshot("q1").await;
    assert_eq!(cols, json!({"id": "q1", "columns": ["count(*)"]}));
    assert_eq!(rows, vec![json!([1, [n - 10]])]);
    assert!(eoq["eoq"].get("change_id").is_none(), "{eoq}");
    let reply = ws
        .transact(
            "t1",
            json!([["UPDATE t SET a = a || '!' WHERE id < ?", [n]]]),
        )
        .await;
    assert_eq!(reply["transaction"]["results"][0]["rows_affected"], n);
    for i in 0..n {
        assert_eq!(
            ws.change(&format!("s{i}")).await,
            ("update".into(), 1, json!([i, format!("v{i}!")]), 1)
        );
    }

    // Unsubscribe s0: no more changes for it, the others carry on.
    ws.send(json!({"type": "unsubscribe", "id": "s0"})).await;
    assert_eq!(
        ws.next_for("s0").await,
        json!({"id": "s0", "unsubscribed": {}})
    );
    node.http1()
        .write(&json!(["UPDATE t SET a = 'z' WHERE id IN (0, 1)"]))
        .await;
    assert_eq!(ws.change("s1").await.3, 2);
    ws.sync("p1").await;
    assert!(ws.queued_for("s0").is_empty(), "{:?}", ws.queued_for("s0"));
    // The id is free again: subscribe anew under it and join the existing subscription.
    let (_, rows, eoq) = ws.subscribe("s0", "SELECT id, a FROM t WHERE id = 0").await;
    assert_eq!(rows, vec![json!([1, [0, "z"]])]);
    assert_eq!(eoq["eoq"]["change_id"], 2);
    assert!(node.panics().is_empty(), "{:?}", node.panics());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_ndjson_subscribers_share_a_subscription() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let api = node.http1();
    api.write(&json!(["INSERT INTO t VALUES (1, 'a', 0)"]))
        .await;
    let mut ws = Sock::connect(node.addr()).await;
    let (cols, _, _) = ws.subscribe("s", "SELECT id, a FROM t").await;
    let mut http = api
        .open_post("/v1/subscriptions", &json!("SELECT id, a FROM t"))
        .await;
    assert_eq!(http.header("corro-query-id"), cols["query_id"].as_str());
    api.write(&json!(["UPDATE t SET a = 'b' WHERE id = 1"]))
        .await;
    assert_eq!(
        ws.change("s").await,
        ("update".into(), 1, json!([1, "b"]), 1)
    );
    let mut lines = Vec::new();
    while lines.len() < 4 {
        lines.push(http.expect_line(Duration::from_secs(10)).await);
    }
    assert_eq!(lines[3], json!({"change": ["update", 1, [1, "b"], 1]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_the_socket_closes_and_after_a_restart() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let api = node.http1();
    api.write(&json!(["INSERT INTO t VALUES (1, 'a', 0)"]))
        .await;
    let sql = "SELECT id, b FROM t";
    let mut ws = Sock::connect(node.addr()).await;
    let (cols, _, _) = ws.subscribe("s", sql).await;
    let query_id = cols["query_id"].as_str().unwrap().to_string();
    for b in 1..=3 {
        api.write(&json!([["UPDATE t SET b = ? WHERE id = 1", [b]]]))
            .await;
        assert_eq!(ws.change("s").await.3, b);
    }
    drop(ws);
    // A second socket watches each write land, so that the node cannot coalesce the two
    // updates into one change (it may, and does under load, when both commit in one round).
    let mut watch = Sock::connect(node.addr()).await;
    watch.subscribe("w", sql).await;
    for b in 4..=5 {
        api.write(&json!([["UPDATE t SET b = ? WHERE id = 1", [b]]]))
            .await;
        assert_eq!(watch.change("w").await.3, b);
    }
    drop(watch);
    // By SQL (the shared subscription) and by the node's id: only the changes after `from`.
    let mut ws = Sock::connect(node.addr()).await;
    ws.send(json!({"type": "subscribe", "id": "by-sql", "sql": sql, "from": 3}))
        .await;
    ws.send(json!({"type": "subscribe", "id": "by-id", "query_id": query_id, "from": 4}))
        .await;
    assert_eq!(
        ws.change("by-sql").await,
        ("update".into(), 1, json!([1, 4]), 4)
    );
    assert_eq!(
        ws.change("by-sql").await,
        ("update".into(), 1, json!([1, 5]), 5)
    );
    assert_eq!(
        ws.change("by-id").await,
        ("update".into(), 1, json!([1, 5]), 5)
    );
    drop(ws);

    // The subscription and its change log survive a restart.
    node.stop();
    let node = dir.start();
    let api = node.http1();
    api.write(&json!(["UPDATE t SET b = 6 WHERE id = 1"])).await;
    let mut ws = Sock::connect(node.addr()).await;
    ws.send(json!({"type": "subscribe", "id": "again", "query_id": query_id, "from": 5}))
        .await;
    assert_eq!(
        ws.change("again").await,
        ("update".into(), 1, json!([1, 6]), 6)
    );
    // `from` ahead of the subscription, or with SQL that has no subscription: errors.
    ws.send(json!({"type": "subscribe", "id": "ahead", "query_id": query_id, "from": 99}))
        .await;
    let e = ws.next_for("ahead").await;
    assert_eq!(e["code"], "bad_request", "{e}");
    ws.send(json!({"type": "subscribe", "id": "none", "sql": "SELECT a FROM t", "from": 1}))
        .await;
    let e = ws.next_for("none").await;
    assert_eq!(e["code"], "not_found", "{e}");
    assert!(node.panics().is_empty(), "{:?}", node.panics());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_snapshot_does_not_hold_back_other_subscriptions() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let api = node.api(Proto::Http1);
    let rows = 40_000;
    api.write(&json!([format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < {rows}) INSERT INTO big SELECT i, printf('%.600c', 'x') FROM n"
    )]))
    .await;
    api.write(&json!(["INSERT INTO t VALUES (1, 'a', 0)"]))
        .await;
    let mut ws = Sock::connect(node.addr()).await;
    ws.subscribe("small", "SELECT id, b FROM t").await;
    ws.send(json!({"type": "subscribe", "id": "big", "sql": "SELECT id, v FROM big"}))
        .await;
    let first = ws.next_for("big").await;
    assert!(first.get("columns").is_some(), "{first}");
    // While the big snapshot streams (read slowly), a change to the small subscription.
    api.write(&json!(["UPDATE t SET b = 1 WHERE id = 1"])).await;
    let mut big_rows = 0;
    let small_at = loop {
        let m = ws.next().await;
        if m["id"] == "small" {
            assert_eq!(m["change"], json!(["update", 1, [1, 1], 1]));
            break big_rows;
        }
        if m.get("row").is_some() {
            big_rows += 1;
            if big_rows % 500 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        } else {
            assert!(
                m.get("eoq").is_none(),
                "the small change came after the whole snapshot"
            );
        }
    };
    assert!(
        small_at < rows,
        "small change after {small_at} of {rows} rows"
    );
    let (mut n, mut eoq) = (small_at, None);
    while eoq.is_none() {
        let m = ws.next_for("big").await;
        if m.get("row").is_some() {
            n += 1;
        } else {
            eoq = Some(m);
        }
    }
    assert_eq!(n, rows);

    // A row bigger than any client message may be (api.ws.max_message_bytes) still goes out.
    api.write(&json!([
        "INSERT INTO t VALUES (2, printf('%.3000000c', 'y'), 0)"
    ]))
    .await;
    ws.send(json!({"type": "query", "id": "huge", "sql": "SELECT a FROM t WHERE id = 2"}))
        .await;
    let (_, rows, _) = ws.snapshot("huge").await;
    assert_eq!(rows[0][1][0].as_str().map(str::len), Some(3_000_000));
}
