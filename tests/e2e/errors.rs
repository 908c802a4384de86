//! HTTP error cases: for each, the status code and a JSON body whose `"error"` names what to
//! fix (table, column, limit, parameter…). Covers bad SQL, unknown tables and columns,
//! constraints, empty and malformed statements, client DDL on replicated tables, writes to
//! internal tables, non-read-only queries, bad parameters, bad JSON, oversized bodies (413),
//! unknown paths (404), wrong methods (405), endpoint-name mismatch (421) and timeouts (408
//! for transactions, an in-stream error for queries). Failed requests never change data.

use crate::support::{chunked, full, Api, End, NodeDir, BOTH};
use bytes::Bytes;
use hyper::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const SCHEMA: &str = "
CREATE TABLE users (id INTEGER NOT NULL PRIMARY KEY, name TEXT, tag TEXT NOT NULL DEFAULT '');
CREATE INDEX users_name ON users (name);
";

/// Checks the transaction error shape: `error`, `results[0].error`, null version, actor id.
fn check_tx_error(body: &Value, actor: &str) {
    assert_eq!(body["version"], json!(null), "{body}");
    assert_eq!(body["actor_id"], json!(actor), "{body}");
    let e = body["results"][0]["error"].as_str().unwrap_or("");
    assert!(
        !e.is_empty(),
        "results[0].error must carry the message: {body}"
    );
}

async fn snapshot(api: &Api) -> (Vec<Vec<Value>>, i64, Vec<Vec<Value>>) {
    (
        api.rows(&json!("SELECT id, name, tag FROM users ORDER BY id"))
            .await,
        api.scalar("SELECT count(*) FROM __vd_versions").await,
        api.rows(&json!(
            "SELECT type, name, sql FROM sqlite_schema ORDER BY name"
        ))
        .await,
    )
}

#[tokio::test]
async fn transaction_sql_errors_are_400_naming_the_problem() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let api = node.http1();
    api.tx_ok(&json!(["INSERT INTO users (id, name) VALUES (1, 'ann')"]))
        .await;
    let before = snapshot(&api).await;
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!(["INSRT INTO users VALUES (2)"]), vec!["syntax"]),
        (
            json!(["INSERT INTO missing_tbl VALUES (2)"]),
            vec!["missing_tbl"],
        ),
        (json!(["UPDATE users SET nope = 1"]), vec!["nope"]),
        (
            json!(["INSERT INTO users (id) VALUES (5)", "COMMIT"]),
            vec!["transaction control"],
        ),
        (
            json!(["BEGIN", "INSERT INTO users (id) VALUES (6)"]),
            vec!["transaction control"],
        ),
        (
            json!(["INSERT INTO users (id) VALUES (1)"]),
            vec!["constraint", "users.id"],
        ),
        (
            json!(["INSERT INTO users (id, tag) VALUES (3, NULL)"]),
            vec!["not null", "users.tag"],
        ),
        (
            json!(["INSERT INTO users (id) VALUES (4); INSERT INTO users (id) VALUES (5)"]),
            vec!["multiple"],
        ),
        (
            json!([["INSERT INTO users (id, name) VALUES (?, ?)", [6]]]),
            vec!["parameter"],
        ),
        (
            json!([["INSERT INTO users (id) VALUES (?)", [6, 7]]]),
            vec!["parameter"],
        ),
        (
            json!([["INSERT INTO users (id) VALUES (:id)", {"id": 6}]]),
            vec!["id"],
        ),
        (
            json!([["INSERT INTO users (id) VALUES (:id)", {":other": 6}]]),
            vec![":other"],
        ),
        (
            json!(["INSERT INTO users (id) VALUES (8)", "SELECT * FROM nowhere"]),
            vec!["nowhere"],
        ),
        // The exact text of statements the store itself has prepared (and cached) by now:
        // a client must not get the store's already-authorized statement.
        (
            json!([[
                "INSERT OR REPLACE INTO __vd_versions (site, db_version, last_seq, ts, rows) VALUES (?1, ?2, ?3, ?4, ?5)",
                [0, 999, 0, 0, [1]]
            ]]),
            vec!["internal"],
        ),
        (
            json!([[
                "INSERT INTO \"users__vd_clock\" (\"id\", clock) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [9, [1]]
            ]]),
            vec!["internal"],
        ),
    ];
    for proto in BOTH {
        let api = node.api(proto);
        for (stmts, needles) in &cases {
            let r = api.tx(stmts).await;
            let body = r.expect_error(400, needles);
            check_tx_error(&body, &node.actor_id);
        }
    }
    assert_eq!(
        snapshot(&api).await,
        before,
        "failed transactions changed something"
    );
}

#[tokio::test]
async fn empty_and_malformed_transactions_are_400() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    for proto in BOTH {
        let api = node.api(proto);
        let r = api.tx(&json!([])).await;
        let body = r.expect_error(400, &["at least 1 statement is required"]);
        check_tx_error(&body, &node.actor_id);
        for bad in [
            json!([42]),
            json!([null]),
            json!([{"sql": "INSERT INTO users (id) VALUES (1)"}]),
            json!([{"query": "INSERT INTO users (id) VALUES (1)", "params": 5}]),
            json!([{"query": "INSERT INTO users (id) VALUES (1)", "bogus": 1}]),
            json!([["INSERT INTO users (id) VALUES (?)", 5]]),
            json!([[1, 2]]),
            json!([["INSERT INTO users (id) VALUES (1)", [], []]]),
            json!({"query": "INSERT INTO users (id) VALUES (1)"}),
            json!("INSERT INTO users (id) VALUES (1)"),
        ] {
            let r = api.tx(&bad).await;
            r.expect_error(400, &["statement"]);
        }
        assert_eq!(api.scalar("SELECT count(*) FROM users").await, 0);
    }
}

#[tokio::test]
async fn client_ddl_on_replicated_tables_is_refused() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let api = node.h2c();
    api.tx_ok(&json!(["INSERT INTO users (id, name) VALUES (1, 'ann')"]))
        .await;
    let before = snapshot(&api).await;
    for stmt in [
        "DROP TABLE users",
        "ALTER TABLE users ADD COLUMN extra TEXT",
        "ALTER TABLE users RENAME TO people",
        "ALTER TABLE users RENAME COLUMN name TO full_name",
        "ALTER TABLE users DROP COLUMN tag",
        "CREATE INDEX users_tag ON users (tag)",
        "DROP INDEX users_name",
        "CREATE TRIGGER users_trg AFTER INSERT ON users BEGIN SELECT 1; END",
    ] {
        let r = api.tx(&json!([stmt])).await;
        let body = r.expect_error(400, &["users"]);
        check_tx_error(&body, &node.actor_id);
    }
    // The same DDL in the second statement rolls back the first.
    let r = api
        .tx(&json!([
            "INSERT INTO users (id) VALUES (2)",
            "DROP TABLE users"
        ]))
        .await;
    r.expect_error(400, &["users"]);
    assert_eq!(
        snapshot(&api).await,
        before,
        "refused DDL changed something"
    );
    // Tables outside the schema stay free for the client.
    api.tx_ok(&json!([
        "CREATE TABLE scratch (a)",
        "CREATE INDEX scratch_a ON scratch (a)",
        "DROP TABLE scratch"
    ]))
    .await;
}

#[tokio::test]
async fn writes_to_internal_tables_are_refused() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let api = node.http1();
    api.tx_ok(&json!(["INSERT INTO users (id, name) VALUES (1, 'ann')"]))
        .await;
    let before = snapshot(&api).await;
    for (stmt, table) in [
        (
            "INSERT INTO __vd_versions VALUES (1, 99, 0, 0)",
            "__vd_versions",
        ),
        ("DELETE FROM __vd_versions", "__vd_versions"),
        ("UPDATE __vd_state SET value = 1", "__vd_state"),
        ("DELETE FROM __vd_log", "__vd_log"),
        ("DELETE FROM __vd_sites", "__vd_sites"),
        ("DROP TABLE __vd_log", "__vd_log"),
        ("DELETE FROM \"users__vd_clock\"", "users__vd_clock"),
    ] {
        let r = api.tx(&json!([stmt])).await;
        let body = r.expect_error(400, &[table]);
        check_tx_error(&body, &node.actor_id);
    }
    assert_eq!(
        snapshot(&api).await,
        before,
        "internal tables were modified"
    );
}

#[tokio::test]
async fn query_errors_are_400_before_streaming() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!("SELEC 1"), vec!["syntax"]),
        (json!("SELECT * FROM missing_tbl"), vec!["missing_tbl"]),
        (json!("SELECT nope FROM users"), vec!["nope"]),
        (
            json!("INSERT INTO users (id) VALUES (1)"),
            vec!["read-only"],
        ),
        (json!("DELETE FROM users"), vec!["read-only"]),
        (json!("BEGIN"), vec!["returns no rows"]),
        (json!("CREATE TABLE q (a)"), vec!["read-only"]),
        (json!("SELECT 1; SELECT 2"), vec!["multiple"]),
        (json!(["SELECT ?", [1, 2]]), vec!["parameter"]),
        (json!(["SELECT ?, ?", [1]]), vec!["parameter"]),
        (json!("SELECT ?"), vec!["parameter"]),
        (json!(["SELECT :a", {":b": 1}]), vec![":b"]),
        (json!(["SELECT :a", {"a": 1}]), vec!["a"]),
        (json!(42), vec!["statement"]),
        (json!({"sql": "SELECT 1"}), vec!["statement"]),
        (json!([["SELECT 1"]]), vec!["statement"]),
    ];
    for proto in BOTH {
        let api = node.api(proto);
        for (stmt, needles) in &cases {
            let r = api.query(stmt).await;
            assert!(
                !r.text().trim_end().contains('\n'),
                "{stmt}: an error before streaming is one JSON object, not a stream: {}",
                r.text()
            );
            r.expect_error(400, needles);
        }
        let r = api
            .post("/v1/queries?timeout=abc", &json!("SELECT 1"))
            .await;
        r.expect_error(400, &["timeout"]);
        let r = api
            .post("/v1/transactions?timeout=abc", &json!(["SELECT 1"]))
            .await;
        r.expect_error(400, &["timeout"]);
    }
    assert_eq!(node.http1().scalar("SELECT count(*) FROM users").await, 0);
}

#[tokio::test]
async fn invalid_json_bodies_are_400() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    for proto in BOTH {
        let api = node.api(proto);
        for path in ["/v1/transactions", "/v1/queries", "/v1/table_stats"] {
            for body in [
                "[",
                "{\"tables\": ",
                "not json",
                "[\"INSERT\"] trailing",
                "",
            ] {
                let r = api.post_raw(path, body.to_string()).await;
                r.expect_error(400, &["json"]);
            }
        }
        let r = api
            .post("/v1/table_stats", &json!({"tables": "users"}))
            .await;
        r.expect_error(400, &["tables"]);
        let r = api.post("/v1/table_stats", &json!(["users"])).await;
        r.expect_error(400, &["tables"]);
    }
}

#[tokio::test]
async fn oversized_body_is_413_naming_the_limit() {
    let dir = NodeDir::builder()
        .schema(SCHEMA)
        .api("max_body_bytes = 1024")
        .build();
    let node = dir.start();
    let big = serde_json::to_vec(&json!([[
        "INSERT INTO users (id, name) VALUES (?, ?)",
        [1, "x".repeat(4000)]
    ]]))
    .unwrap();
    for proto in BOTH {
        for path in ["/v1/transactions", "/v1/queries", "/v1/table_stats"] {
            // A fresh connection each time: after an early 413 the server may close an
            // HTTP/1.1 connection, and a pooled one could then fail for an unrelated reason.
            let r = node.api(proto).post_raw(path, big.clone()).await;
            r.expect_error(413, &["1024", "max_body_bytes"]);
        }
        // Under the limit is fine, also when streamed without a declared length.
        let api = node.api(proto);
        let small = serde_json::to_vec(&json!([[
            "INSERT OR REPLACE INTO users (id, name) VALUES (?, ?)",
            [1, "x".repeat(800)]
        ]]))
        .unwrap();
        assert!(small.len() < 1024);
        let r = api.post_raw("/v1/transactions", small.clone()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let chunks: Vec<Bytes> = small.chunks(100).map(Bytes::copy_from_slice).collect();
        let r = api
            .send(Method::POST, "/v1/transactions", chunked(chunks), &[])
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Without a declared length the limit still holds (h2c: no content-length, DATA frames).
    let chunks: Vec<Bytes> = big.chunks(500).map(Bytes::copy_from_slice).collect();
    let r = node
        .h2c()
        .send(
            Method::POST,
            "/v1/transactions",
            chunked(chunks),
            &[("content-type", "application/json")],
        )
        .await;
    r.expect_error(413, &["1024"]);
    assert_eq!(node.http1().scalar("SELECT count(*) FROM users").await, 1);
    assert_eq!(
        node.http1().scalar("SELECT length(name) FROM users").await,
        800,
        "no oversized write got through"
    );
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_is_405() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    for proto in BOTH {
        let api = node.api(proto);
        for path in [
            "/v1/nope",
            "/v2/transactions",
            "/v1/transactions/extra",
            "/v1",
        ] {
            let r = api.get(path).await;
            r.expect_error(404, &[path]);
            let r = api.post_raw(path, "[]").await;
            r.expect_error(404, &[path]);
        }
        for (method, path) in [
            (Method::GET, "/v1/transactions"),
            (Method::PUT, "/v1/transactions"),
            (Method::GET, "/v1/queries"),
            (Method::DELETE, "/v1/queries"),
            (Method::POST, "/v1/health"),
            (Method::GET, "/v1/table_stats"),
        ] {
            let r = api
                .send(method.clone(), path, full(Bytes::new()), &[])
                .await;
            r.expect_error(405, &[method.as_str(), path]);
        }
    }
}

/// The 404 message must say which path was asked for, also for `/` and trailing slashes.
#[tokio::test]
async fn not_found_message_names_trailing_slash_paths() {
    // (`/` itself serves the web console.)
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let api = node.http1();
    for path in ["/v1/nope/", "/nope/"] {
        let r = api.get(path).await;
        let body = r.expect_error(404, &[]);
        let msg = body["error"].as_str().unwrap();
        assert!(
            msg.contains(path.trim_end_matches('/')) && !msg.trim_end().ends_with(':'),
            "404 for {path:?} should name the path: {msg:?}"
        );
    }
}

#[tokio::test]
async fn endpoint_name_mismatch_is_421() {
    let dir = NodeDir::builder()
        .schema(SCHEMA)
        .api("endpoint_name = \"alpha\"")
        .build();
    let node = dir.start();
    for proto in BOTH {
        let api = node.api(proto);
        let header = |v: &'static str| [("x-corrosion-requested-endpoint-name", v)];
        let r = api
            .send(
                Method::GET,
                "/v1/health",
                full(Bytes::new()),
                &header("beta"),
            )
            .await;
        r.expect_error(421, &["alpha", "beta"]);
        let body = serde_json::to_vec(&json!(["INSERT INTO users (id) VALUES (1)"])).unwrap();
        let r = api
            .send(
                Method::POST,
                "/v1/transactions",
                full(body.clone()),
                &header("beta"),
            )
            .await;
        r.expect_error(421, &["alpha"]);
        assert_eq!(
            api.scalar("SELECT count(*) FROM users").await,
            0,
            "421 must not write"
        );
        let r = api
            .send(
                Method::GET,
                "/v1/health",
                full(Bytes::new()),
                &header("alpha"),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = api.get("/v1/health").await;
        assert_eq!(r.status, 200, "no header is allowed: {}", r.text());
        let r = api
            .send(
                Method::GET,
                "/v1/health",
                full(Bytes::new()),
                &header("\u{e9}t\u{e9}"),
            )
            .await;
        r.expect_error(400, &["x-corrosion-requested-endpoint-name"]);
    }
}

/// A CTE that would run for a very long time (but ends, should a timeout not fire).
const SLOW_CTE: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000000000) \
     SELECT count(*) FROM c";

#[tokio::test]
async fn slow_query_times_out_in_stream_and_node_keeps_serving() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    for proto in BOTH {
        let api = node.api(proto);
        let start = Instant::now();
        let r = api.post("/v1/queries?timeout=1", &json!(SLOW_CTE)).await;
        let took = start.elapsed();
        assert!(took < Duration::from_secs(10), "timeout=1 took {took:?}");
        assert!(
            took >= Duration::from_millis(900),
            "timed out too early: {took:?}"
        );
        if r.status == 200 {
            let out = r.query_out();
            match out.end {
                End::Error(msg) => assert!(
                    msg.to_lowercase().contains("timed out")
                        || msg.to_lowercase().contains("timeout"),
                    "in-stream error should mention the timeout: {msg}"
                ),
                End::Eoq { .. } => panic!("the slow query finished instead of timing out: {out:?}"),
            }
        } else {
            let s = r.status.as_u16();
            assert!((400..500).contains(&s), "status {s}: {}", r.text());
            r.expect_error(s, &["time"]);
        }
        assert_eq!(
            api.scalar("SELECT 1 + 1").await,
            2,
            "node serves after a timeout"
        );
    }
}

#[tokio::test]
async fn slow_transaction_times_out_with_408_and_rolls_back() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let api = node.http1();
    let start = Instant::now();
    let r = api
        .post(
            "/v1/transactions?timeout=1",
            &json!([
                "INSERT INTO users (id, name) VALUES (1, 'before the slow part')",
                format!(
                    "INSERT INTO users (id, name) {}",
                    SLOW_CTE.replace("SELECT count(*)", "SELECT 2, count(*)")
                )
            ]),
        )
        .await;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "timeout=1 took {took:?}");
    let body = r.expect_error(408, &["time"]);
    check_tx_error(&body, &node.actor_id);
    assert_eq!(
        api.scalar("SELECT count(*) FROM users").await,
        0,
        "timed-out tx rolled back"
    );
    assert_eq!(api.scalar("SELECT count(*) FROM __vd_versions").await, 0);
    // The writer is free again.
    let v = api
        .write(&json!(["INSERT INTO users (id) VALUES (3)"]))
        .await;
    assert_eq!(v, Some(1));
}
