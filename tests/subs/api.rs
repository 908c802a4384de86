//! The subscription API surface, over HTTP/1.1 and h2c: headers and event shapes, the four
//! statement forms, row-id lifetimes, writes that must not produce events, dedupe of
//! identical queries, joining an existing subscription, `GET` by id with and without `from`,
//! errors before and inside the stream, and `/v1/updates/{table}`.

use crate::client::{is_uuid, parse_change, rows_json, Sub, EVENT_TIMEOUT};
use crate::support::{full, Api, NodeDir, Proto};
use crate::{both_protocols, SCHEMA};
use hyper::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

both_protocols!(
    shapes_and_row_lifecycle,
    statement_forms_and_params,
    dedupe_join_and_get,
    errors_before_and_in_stream,
    malformed_subscription_ids,
    skip_rows_new_subscription,
    updates_endpoint,
    value_encodings,
);

async fn shapes_and_row_lifecycle(proto: Proto) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    w.write(&json!([
        "INSERT INTO t VALUES (1, 'a', 10)",
        "INSERT INTO t VALUES (2, 'b', 20)"
    ]))
    .await;

    let q = json!("SELECT id, a FROM t");
    let mut s = Sub::post(&node.api(proto).with_nodelay(), &q).await;
    assert_eq!(s.columns, ["id", "a"]);
    assert_eq!(
        s.eoq_change_id, 0,
        "a new subscription's eoq has change_id 0"
    );
    assert_eq!(
        s.rows.keys().copied().collect::<Vec<_>>(),
        [1, 2],
        "fresh subscription rows are numbered 1..N"
    );
    assert_eq!(s.state(), crate::client::multiset(&w.rows(&q).await));
    let row_of = |s: &Sub, id: i64| -> u64 {
        *s.rows
            .iter()
            .find(|(_, c)| c[0] == json!(id))
            .unwrap_or_else(|| panic!("no row with id {id}: {:?}", s.rows))
            .0
    };

    // Insert → `insert` with a fresh row id and change id 1.
    w.write(&json!(["INSERT INTO t VALUES (3, 'c', 30)"])).await;
    let c = s.change().await;
    assert_eq!((c.kind.as_str(), c.id), ("insert", 1), "{c:?}");
    assert_eq!(c.cells, [json!(3), json!("c")]);
    let r3 = c.row_id;
    assert!(r3 > 2, "a new row gets a new row id: {c:?}");

    // Update of a selected column → `update` on the same row id.
    w.write(&json!(["UPDATE t SET a = 'cc' WHERE id = 3"]))
        .await;
    let c = s.change().await;
    assert_eq!(
        (c.kind.as_str(), c.row_id, c.id, c.cells.clone()),
        ("update", r3, 2, vec![json!(3), json!("cc")])
    );

    // Changes invisible in the output: a column that is not selected, identical values
    // re-written, then a visible change. The next event must be the visible one.
    w.write(&json!(["UPDATE t SET b = 31 WHERE id = 3"])).await;
    w.write(&json!(["UPDATE t SET a = 'b', b = 21 WHERE id = 2"]))
        .await;
    w.write(&json!(["INSERT OR REPLACE INTO t VALUES (1, 'a', 10)"]))
        .await;
    w.write(&json!(["UPDATE t SET a = 'aa' WHERE id = 1"]))
        .await;
    let c = s.change().await;
    assert_eq!(
        (c.kind.as_str(), c.row_id, c.id, c.cells.clone()),
        ("update", row_of(&s, 1), 3, vec![json!(1), json!("aa")]),
        "writes that leave the output unchanged must not produce events"
    );

    // Delete → `delete` carrying the last values; re-adding gets a new row id.
    w.write(&json!(["DELETE FROM t WHERE id = 3"])).await;
    let c = s.change().await;
    assert_eq!(
        (c.kind.as_str(), c.row_id, c.id, c.cells.clone()),
        ("delete", r3, 4, vec![json!(3), json!("cc")])
    );
    w.write(&json!(["INSERT INTO t VALUES (3, 'c', 30)"])).await;
    let c = s.change().await;
    assert_eq!((c.kind.as_str(), c.id), ("insert", 5), "{c:?}");
    assert_ne!(c.row_id, r3, "a re-added row must get a new row id");

    // Several rows in one transaction: one event each, contiguous ids.
    w.write(&json!([
        "INSERT INTO t VALUES (4, 'd', 40)",
        "INSERT INTO t VALUES (5, 'e', 50)",
        "DELETE FROM t WHERE id = 2"
    ]))
    .await;
    s.sync(&w, &q).await;
    assert_eq!(s.last, 8, "three more changes: {:?}", s.changes);
    assert!(
        s.stream
            .poll_line(Duration::from_millis(700))
            .await
            .is_timeout(),
        "no further events after the result converged"
    );
}

async fn statement_forms_and_params(proto: Proto) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    w.write(&json!([
        "INSERT INTO t VALUES (1, 'a', 10)",
        "INSERT INTO t VALUES (2, 'b', 20)",
        "INSERT INTO t VALUES (3, 'c', 30)"
    ]))
    .await;
    let forms = [
        json!("SELECT id, a FROM t WHERE b > 15"),
        json!(["SELECT id, a FROM t WHERE b > ?", [15]]),
        json!(["SELECT id, a FROM t WHERE b > :n", {":n": 15}]),
        json!({"query": "SELECT id, a FROM t WHERE b > ?", "params": [15]}),
        json!({"query": "SELECT id, a FROM t WHERE b > $n", "named_params": {"$n": 15}}),
    ];
    let mut subs = Vec::new();
    for f in &forms {
        let s = Sub::post(&node.api(proto).with_nodelay(), f).await;
        assert_eq!(
            crate::client::multiset(s.rows.values()),
            crate::client::multiset(&[vec![json!(2), json!("b")], vec![json!(3), json!("c")]]),
            "rows of {f}"
        );
        subs.push(s);
    }
    let ids: BTreeSet<&str> = subs.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        1,
        "the same query with the same parameter values in any statement form is one subscription"
    );
    let other = Sub::post(
        &node.api(proto).with_nodelay(),
        &json!(["SELECT id, a FROM t WHERE b > ?", [25]]),
    )
    .await;
    assert_ne!(
        other.id, subs[0].id,
        "different parameter values → another subscription"
    );
    assert_ne!(other.hash, subs[0].hash, "different query → different hash");
    assert_eq!(other.rows.len(), 1);

    // Every listener sees the same live change.
    w.write(&json!(["UPDATE t SET b = 16 WHERE id = 1"])).await;
    let mut seen = Vec::new();
    for s in &mut subs {
        let c = s.change().await;
        assert_eq!(c.kind, "insert");
        assert_eq!(c.cells, [json!(1), json!("a")]);
        seen.push((c.row_id, c.id));
    }
    assert!(
        seen.windows(2).all(|p| p[0] == p[1]),
        "same event for all: {seen:?}"
    );
}

async fn dedupe_join_and_get(proto: Proto) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    w.write(&json!([
        "INSERT INTO t VALUES (1, 'a', 10)",
        "INSERT INTO t VALUES (2, 'b', 20)"
    ]))
    .await;
    let q = json!("SELECT * FROM t");
    let mut a = Sub::post(&node.api(proto).with_nodelay(), &q).await;
    w.write(&json!([
        "INSERT INTO t VALUES (3, 'c', 30)",
        "UPDATE t SET b = 11 WHERE id = 1"
    ]))
    .await;
    w.write(&json!(["DELETE FROM t WHERE id = 2"])).await;
    // Wait for the delete: a delete and re-insert processed in one round is an update.
    a.sync(&w, &q).await;
    w.write(&json!(["INSERT INTO t VALUES (2, 'b2', 22)"]))
        .await;
    a.sync(&w, &q).await;
    assert_eq!(a.last, 4, "one change per changed row: {:?}", a.changes);

    // Different spacing and keyword/identifier case: the same subscription, joined with a
    // snapshot carrying the subscription's own row ids and current change id.
    let mut b = Sub::post(&node.api(proto).with_nodelay(), &json!("select *  from T")).await;
    assert_eq!(
        b.id, a.id,
        "whitespace/case variants must share the subscription"
    );
    assert_eq!(b.hash, a.hash);
    assert_eq!(b.columns, ["id", "a", "b"]);
    assert_eq!(
        rows_json(&b.rows),
        rows_json(&a.rows),
        "joined snapshot = current state"
    );
    assert_eq!(
        b.eoq_change_id, a.last,
        "joined eoq carries the last change id"
    );

    // GET by id: the same snapshot; `from=0` too.
    let mut g = Sub::get(&node.api(proto).with_nodelay(), &a.id).await;
    assert_eq!(g.hash, a.hash);
    assert_eq!(rows_json(&g.rows), rows_json(&a.rows));
    assert_eq!(g.eoq_change_id, 4);
    let g0 = node
        .api(proto)
        .open_get(&format!("/v1/subscriptions/{}?from=0", a.id))
        .await;
    let mut g0 = crate::client::Sub::from_stream(g0).await;
    g0.read_snapshot().await;
    assert_eq!(rows_json(&g0.rows), rows_json(&a.rows), "from=0 = snapshot");

    // `from=N`: replay exactly the logged changes after N, no columns/eoq, then live.
    let mut r = Sub::resume(&node.api(proto).with_nodelay(), &a.id, 2).await;
    r.until_id(4).await;
    assert_eq!(r.changes, a.changes[2..], "replay after change 2");
    // The same through `POST /v1/subscriptions?from=N` with the subscription's SQL.
    let p = node
        .api(proto)
        .with_nodelay()
        .open_post("/v1/subscriptions?from=1", &json!("SELECT * FROM t"))
        .await;
    let mut p = Sub::from_stream(p).await;
    assert_eq!(p.id, a.id);
    p.last = 1;
    p.until_id(4).await;
    assert_eq!(p.changes, a.changes[1..], "POST replay after change 1");

    // One live change reaches everyone with the same id and row id.
    w.write(&json!(["UPDATE t SET a = 'z' WHERE id = 3"])).await;
    let want = a.change().await;
    assert_eq!((want.kind.as_str(), want.id), ("update", 5));
    for s in [&mut b, &mut g, &mut g0, &mut r, &mut p] {
        assert_eq!(s.change().await, want);
    }
    assert_eq!(rows_json(&b.rows), rows_json(&a.rows));
}

async fn errors_before_and_in_stream(proto: Proto) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let api = node.api(proto).with_nodelay();
    let post_err = |sql: &'static str| {
        let api = api.clone();
        async move {
            api.open_post("/v1/subscriptions", &json!(sql))
                .await
                .into_resp(EVENT_TIMEOUT)
                .await
        }
    };
    post_err("SELEC id FROM t").await.expect_error(400, &[]);
    post_err("SELECT * FROM nope")
        .await
        .expect_error(400, &["no such table"]);
    post_err("SELECT nope FROM t")
        .await
        .expect_error(400, &["no such column"]);
    post_err("DELETE FROM t").await.expect_error(400, &[]);
    post_err("SELECT 1; SELECT 2").await.expect_error(400, &[]);
    api.write(&json!(["CREATE TABLE scratch (a)"])).await;
    post_err("SELECT * FROM scratch")
        .await
        .expect_error(400, &["not a replicated table"]);

    // `from` on a query with no subscription → 400, and nothing is left behind.
    let q = json!("SELECT id FROM t");
    api.open_post("/v1/subscriptions?from=0", &q)
        .await
        .into_resp(EVENT_TIMEOUT)
        .await
        .expect_error(400, &["from"]);
    let mut s = Sub::post(&api, &q).await;
    assert_eq!(s.eoq_change_id, 0);

    // Unknown and malformed ids.
    let unknown = "0b1d2c3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
    let resp = api
        .open_get(&format!("/v1/subscriptions/{unknown}"))
        .await
        .into_resp(EVENT_TIMEOUT)
        .await;
    resp.expect_error(
        404,
        &[&format!("could not find subscription with id {unknown}")],
    );
    api.open_get("/v1/subscriptions/not-a-uuid")
        .await
        .into_resp(EVENT_TIMEOUT)
        .await
        .expect_error(400, &[]);
    // Malformed `from` values.
    for bad in ["x", "-1", "1.5"] {
        api.open_post(&format!("/v1/subscriptions?from={bad}"), &q)
            .await
            .into_resp(EVENT_TIMEOUT)
            .await
            .expect_error(400, &["from"]);
    }
    // An uppercase spelling of a valid id finds the subscription.
    let mut upper = Sub::get_any(&api, &s.id.to_uppercase()).await;
    assert_eq!(upper.id, s.id);
    upper.read_snapshot().await;

    // `from` beyond the last change id: 200, one in-stream error, end of stream.
    api.write(&json!(["INSERT INTO t VALUES (1, 'a', 1)"]))
        .await;
    s.until_id(1).await;
    let mut ahead = Sub::resume(&api, &s.id, 5).await;
    ahead.expect_error_end("").await;
    let ahead = api.open_post("/v1/subscriptions?from=7", &q).await;
    let mut ahead = Sub::from_stream(ahead).await;
    ahead.expect_error_end("").await;
    // The subscription itself is unaffected.
    api.write(&json!(["INSERT INTO t VALUES (2, 'b', 2)"]))
        .await;
    let c = s.change().await;
    assert_eq!((c.kind.as_str(), c.id), ("insert", 2));
}

/// Ids that are not UUIDs are a 400 (like a `Path<Uuid>` rejection), whatever their length.
async fn malformed_subscription_ids(proto: Proto) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let api = node.api(proto).with_nodelay();
    for bad in [
        "x",
        "0b1d2c3e-4f50-4a6b-8c7d-9e0f1a2b3c4d-00",
        "0b1d2c3e-4f50-4a6b-8c7d-9e0f1a2b3c4g",
        // 36 characters of hex digits and hyphens, but not a UUID's layout.
        "0b1d2c3e4f504a6b8c7d9e0f1a2b3c4d----",
        "------------------------------------",
    ] {
        api.open_get(&format!("/v1/subscriptions/{bad}"))
            .await
            .into_resp(EVENT_TIMEOUT)
            .await
            .expect_error(400, &[]);
    }
}

async fn skip_rows_new_subscription(proto: Proto) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    w.write(&json!(["INSERT INTO t VALUES (1, 'a', 10)"])).await;
    let st = node
        .api(proto)
        .open_post(
            "/v1/subscriptions?skip_rows=true",
            &json!("SELECT id, b FROM t"),
        )
        .await;
    let mut s = Sub::from_stream(st).await;
    w.write(&json!(["INSERT INTO t VALUES (2, 'b', 20)"])).await;
    // As in Corrosion: no columns, rows or eoq; the first event is the live change.
    let ev = s.stream.expect_line(EVENT_TIMEOUT).await;
    assert!(
        ev.get("change").is_some(),
        "expected a change first, got {ev}"
    );
    let c = parse_change(&ev);
    assert_eq!(
        (c.kind.as_str(), c.id, c.cells),
        ("insert", 1, vec![json!(2), json!(20)])
    );
}

/// Reads notifications until `want` (a set of `[kind, pk]`) has been seen exactly.
async fn notifications(s: &mut crate::support::LineStream, want: &[Value]) {
    let mut got: Vec<Value> = Vec::new();
    while got.len() < want.len() {
        let ev = s.expect_line(EVENT_TIMEOUT).await;
        let n = ev
            .get("notify")
            .unwrap_or_else(|| panic!("expected a notify event, got {ev}"));
        got.push(n.clone());
    }
    let sort = |v: &[Value]| {
        let mut v: Vec<String> = v.iter().map(Value::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(sort(&got), sort(want));
}

async fn open_updates(api: &Api, table: &str) -> crate::support::LineStream {
    api.open(Method::POST, &format!("/v1/updates/{table}"), full(""), &[])
        .await
}

async fn updates_endpoint(proto: Proto) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    let mut u = open_updates(&node.api(proto).with_nodelay(), "t").await;
    assert_eq!(u.status.as_u16(), 200);
    let id = u
        .header("corro-query-id")
        .expect("corro-query-id")
        .to_string();
    assert!(is_uuid(&id), "{id:?}");
    let mut u2 = open_updates(&node.api(proto).with_nodelay(), "t").await;
    assert_eq!(
        u2.header("corro-query-id"),
        Some(id.as_str()),
        "one handle per table"
    );
    let mut kv = open_updates(&node.api(proto).with_nodelay(), "kv").await;
    assert_eq!(kv.status.as_u16(), 200);

    w.write(&json!([
        "INSERT INTO t VALUES (1, 'a', 1)",
        "INSERT INTO t VALUES (2, 'b', 2)"
    ]))
    .await;
    let both = [json!(["update", [1]]), json!(["update", [2]])];
    notifications(&mut u, &both).await;
    notifications(&mut u2, &both).await;
    w.write(&json!(["UPDATE t SET b = 5 WHERE id = 1"])).await;
    notifications(&mut u, &[json!(["update", [1]])]).await;
    w.write(&json!(["DELETE FROM t WHERE id = 2"])).await;
    notifications(&mut u, &[json!(["delete", [2]])]).await;
    notifications(&mut u2, &[json!(["update", [1]]), json!(["delete", [2]])]).await;

    w.write(&json!(["INSERT INTO kv VALUES ('x', 7, 'v')"]))
        .await;
    notifications(&mut kv, &[json!(["update", ["x", 7]])]).await;
    w.write(&json!(["DELETE FROM kv WHERE k = 'x'"])).await;
    notifications(&mut kv, &[json!(["delete", ["x", 7]])]).await;
    assert!(
        u.poll_line(Duration::from_millis(700)).await.is_timeout(),
        "kv writes must not notify t's listeners"
    );

    open_updates(&node.api(proto).with_nodelay(), "nope")
        .await
        .into_resp(EVENT_TIMEOUT)
        .await
        .expect_error(400, &["table not found in schema: nope"]);
    w.write(&json!(["CREATE TABLE scratch (a PRIMARY KEY)"]))
        .await;
    open_updates(&node.api(proto).with_nodelay(), "scratch")
        .await
        .into_resp(EVENT_TIMEOUT)
        .await
        .expect_error(400, &["table not found in schema: scratch"]);
}

/// Every value type is encoded in subscription events exactly as `/v1/queries` encodes it.
async fn value_encodings(proto: Proto) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    w.write(&json!(["INSERT INTO t VALUES (1, 'a', 0)"])).await;
    let q = json!("SELECT id, b, typeof(b) FROM t");
    let mut s = Sub::post(&node.api(proto).with_nodelay(), &q).await;
    let values = [
        json!(null),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(2.5),
        json!(-0.125),
        json!("text ünïcödé \"quoted\"\n"),
        json!([0, 255, 1]),
        json!([]),
        json!(7),
    ];
    for v in values {
        w.write(&json!([["UPDATE t SET b = ? WHERE id = 1", [v]]]))
            .await;
        let c = s.change().await;
        let fresh = w.rows(&q).await;
        assert_eq!(fresh.len(), 1);
        assert_eq!(c.cells, fresh[0], "event cells vs /v1/queries for {v}");
        let j = Sub::get(&node.api(proto).with_nodelay(), &s.id).await;
        assert_eq!(
            j.rows.values().next(),
            Some(&fresh[0]),
            "snapshot cells for {v}"
        );
    }
}
