//! Write/read round trips through `/v1/transactions` and `/v1/queries`, over both HTTP/1.1 and
//! h2c: the four statement forms, every value type (NULL, INTEGER incl. i64 extremes, REAL,
//! TEXT incl. unicode, BLOB incl. empty, and the JSON-text fallback for other parameters),
//! named parameters with each SQLite prefix, multi-statement atomicity, row numbering and
//! concurrent requests.

use crate::support::{is_actor_id, NodeDir, Proto, BOTH, SIMPLE_SCHEMA};
use serde_json::{json, Value};
use std::collections::BTreeSet;

async fn statement_forms_round_trip(proto: Proto) {
    let dir = NodeDir::with_schema(SIMPLE_SCHEMA);
    let node = dir.start();
    let api = node.api(proto);

    let v = api
        .tx_ok(&json!([
            "INSERT INTO t (id, a, b) VALUES (1, 'one', 10)",
            ["INSERT INTO t (id, a, b) VALUES (?, ?, ?)", [2, "two", 20]],
            ["INSERT INTO t (id, a, b) VALUES (:id, :a, :b)", {":id": 3, ":a": "three", ":b": 30}],
            {"query": "INSERT INTO t (id, a, b) VALUES (?, ?, ?)", "params": [4, "four", 40]},
            {"query": "INSERT INTO t (id, a, b) VALUES (:id, :a, :b)",
             "named_params": {":id": 5, ":a": "five", ":b": 50}},
        ]))
        .await;
    for r in v["results"].as_array().unwrap() {
        assert_eq!(r["rows_affected"], json!(1), "{v}");
    }
    assert_eq!(v["version"], json!(1), "first write on a fresh node: {v}");
    assert_eq!(
        v["actor_id"],
        json!(node.actor_id),
        "actor id as printed at startup"
    );

    let out = api
        .query(&json!("SELECT id, a, b FROM t ORDER BY id"))
        .await
        .query_out();
    assert_eq!(out.columns, ["id", "a", "b"]);
    assert_eq!(
        out.clone().ok_rows(),
        vec![
            vec![json!(1), json!("one"), json!(10)],
            vec![json!(2), json!("two"), json!(20)],
            vec![json!(3), json!("three"), json!(30)],
            vec![json!(4), json!("four"), json!(40)],
            vec![json!(5), json!("five"), json!(50)],
        ]
    );

    let reads: Vec<(Value, Vec<Vec<Value>>)> = vec![
        (
            json!(["SELECT a FROM t WHERE id = ?", [2]]),
            vec![vec![json!("two")]],
        ),
        (
            json!(["SELECT a FROM t WHERE id = :id", {":id": 3}]),
            vec![vec![json!("three")]],
        ),
        (
            json!({"query": "SELECT a FROM t WHERE b > ? ORDER BY id", "params": [35]}),
            vec![vec![json!("four")], vec![json!("five")]],
        ),
        (
            json!({"query": "SELECT a FROM t WHERE id = $id", "named_params": {"$id": 5}}),
            vec![vec![json!("five")]],
        ),
        (
            json!({"query": "SELECT count(*) FROM t"}),
            vec![vec![json!(5)]],
        ),
        (json!(["SELECT count(*) FROM t"]), vec![vec![json!(5)]]),
    ];
    for (stmt, want) in reads {
        assert_eq!(api.rows(&stmt).await, want, "query {stmt}");
    }

    let v2 = api
        .write(&json!([["UPDATE t SET b = ? WHERE id = ?", [11, 1]]]))
        .await;
    assert_eq!(
        v2,
        Some(2),
        "versions count up by one per replicated transaction"
    );
}

#[tokio::test]
async fn four_statement_forms_round_trip_over_http1() {
    statement_forms_round_trip(Proto::Http1).await;
}

#[tokio::test]
async fn four_statement_forms_round_trip_over_h2c() {
    statement_forms_round_trip(Proto::H2c).await;
}

/// (parameter as sent, cell expected back, SQLite storage class).
fn value_cases() -> Vec<(Value, Value, &'static str)> {
    vec![
        (json!(null), json!(null), "null"),
        (json!(0), json!(0), "integer"),
        (json!(-1), json!(-1), "integer"),
        (json!(i64::MIN), json!(i64::MIN), "integer"),
        (json!(i64::MAX), json!(i64::MAX), "integer"),
        (json!(1.5), json!(1.5), "real"),
        (json!(-0.25), json!(-0.25), "real"),
        (json!(2.0), json!(2.0), "real"),
        (json!(0.1), json!(0.1), "real"),
        (json!(1.2345678901234567), json!(1.2345678901234567), "real"),
        (json!(123456.789), json!(123456.789), "real"),
        (json!(""), json!(""), "text"),
        (
            json!("héllo wörld ✓ 日本語 🎉"),
            json!("héllo wörld ✓ 日本語 🎉"),
            "text",
        ),
        (
            json!("quotes ' \" \\ newline\n tab\t end"),
            json!("quotes ' \" \\ newline\n tab\t end"),
            "text",
        ),
        (json!("123"), json!("123"), "text"),
        (json!([]), json!([]), "blob"),
        (
            json!([0, 1, 127, 128, 255]),
            json!([0, 1, 127, 128, 255]),
            "blob",
        ),
        (json!(true), json!(1), "integer"),
        (json!(false), json!(0), "integer"),
        (json!({"k": [1, 2]}), json!("{\"k\":[1,2]}"), "text"),
        (json!([1, "a"]), json!("[1,\"a\"]"), "text"),
        (json!([256]), json!("[256]"), "text"),
        (json!(u64::MAX), json!(u64::MAX as f64), "real"),
    ]
}

async fn values_round_trip(proto: Proto) {
    let dir = NodeDir::with_schema("CREATE TABLE vals (id INTEGER NOT NULL PRIMARY KEY, v);");
    let node = dir.start();
    let api = node.api(proto);
    let cases = value_cases();

    // Through a table: written as parameters, read back as cells.
    let stmts: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, (p, _, _))| json!(["INSERT INTO vals (id, v) VALUES (?, ?)", [i, p]]))
        .collect();
    let v = api.tx_ok(&Value::Array(stmts)).await;
    assert!(v["version"].is_u64(), "{v}");
    let rows = api
        .rows(&json!("SELECT id, v, typeof(v) FROM vals ORDER BY id"))
        .await;
    assert_eq!(rows.len(), cases.len());
    for (row, (sent, want, class)) in rows.iter().zip(&cases) {
        assert_eq!(row[1], *want, "stored {sent} came back as {}", row[1]);
        assert_eq!(row[2], json!(class), "storage class of {sent}");
    }

    // Directly as query parameters, no table involved.
    for (sent, want, class) in &cases {
        let rows = api.rows(&json!(["SELECT ?1, typeof(?1)", [sent]])).await;
        assert_eq!(rows, vec![vec![want.clone(), json!(class)]], "param {sent}");
    }

    // SQL literals of every type.
    let rows = api
        .rows(&json!(
            "SELECT NULL, 1, -9223372036854775808, 1.5, 'x', x'00ff', x''"
        ))
        .await;
    assert_eq!(
        rows,
        vec![vec![
            json!(null),
            json!(1),
            json!(i64::MIN),
            json!(1.5),
            json!("x"),
            json!([0, 255]),
            json!([])
        ]]
    );
}

#[tokio::test]
async fn every_value_type_round_trips_exactly_over_http1() {
    values_round_trip(Proto::Http1).await;
}

#[tokio::test]
async fn every_value_type_round_trips_exactly_over_h2c() {
    values_round_trip(Proto::H2c).await;
}

#[tokio::test]
async fn named_params_accept_colon_at_and_dollar_prefixes() {
    let dir = NodeDir::with_schema(SIMPLE_SCHEMA);
    let node = dir.start();
    for (n, proto) in BOTH.into_iter().enumerate() {
        let api = node.api(proto);
        let base = n as i64 * 10;
        api.tx_ok(&json!([
            ["INSERT INTO t (id, a, b) VALUES (:id, @a, $b)", {":id": base + 1, "@a": "mixed", "$b": 7}],
            ["INSERT INTO t (id, a, b) VALUES (@id, @a, @b)", {"@id": base + 2, "@a": "at", "@b": 8}],
            {"query": "INSERT INTO t (id, a, b) VALUES ($id, $a, $b)",
             "named_params": {"$id": base + 3, "$a": "dollar", "$b": 9}},
        ]))
        .await;
        for (stmt, want) in [
            (
                json!(["SELECT a, b FROM t WHERE id = :id", {":id": base + 1}]),
                json!(["mixed", 7]),
            ),
            (
                json!(["SELECT a, b FROM t WHERE id = @id", {"@id": base + 2}]),
                json!(["at", 8]),
            ),
            (
                json!(["SELECT a, b FROM t WHERE id = $id", {"$id": base + 3}]),
                json!(["dollar", 9]),
            ),
        ] {
            let rows = api.rows(&stmt).await;
            assert_eq!(rows.len(), 1, "{stmt} ({proto:?}): {rows:?}");
            assert_eq!(Value::Array(rows[0].clone()), want, "{stmt} ({proto:?})");
        }
    }
}

#[tokio::test]
async fn failing_statement_rolls_back_whole_transaction() {
    let dir = NodeDir::with_schema(SIMPLE_SCHEMA);
    let node = dir.start();
    let api = node.http1();
    let v1 = api
        .write(&json!(["INSERT INTO t (id, a, b) VALUES (1, 'keep', 1)"]))
        .await
        .expect("a version");
    let versions = api.scalar("SELECT count(*) FROM __vd_versions").await;

    let failing = [
        // Second statement names a missing table.
        json!([
            "INSERT INTO t (id, a) VALUES (10, 'ghost')",
            "INSERT INTO no_such_table VALUES (1)"
        ]),
        // Second statement violates the primary key.
        json!([
            "INSERT INTO t (id, a) VALUES (11, 'ghost')",
            "INSERT INTO t (id, a) VALUES (11, 'dup')"
        ]),
        // An update followed by a syntax error.
        json!([
            "UPDATE t SET a = 'changed' WHERE id = 1",
            "INSERT INTO t VALUES (("
        ]),
        // Third statement fails after two good ones.
        json!([
            "INSERT INTO t (id, a) VALUES (12, 'ghost')",
            "DELETE FROM t WHERE id = 1",
            ["INSERT INTO t (id, a) VALUES (?, ?)", [13]]
        ]),
    ];
    for stmts in failing {
        let r = api.tx(&stmts).await;
        r.expect_error(400, &[]);
        assert_eq!(
            api.rows(&json!("SELECT id, a, b FROM t ORDER BY id")).await,
            vec![vec![json!(1), json!("keep"), json!(1)]],
            "after failed {stmts} the table must be as before"
        );
        assert_eq!(
            api.scalar("SELECT count(*) FROM __vd_versions").await,
            versions,
            "a rolled-back transaction must not record a version ({stmts})"
        );
    }
    let v2 = api
        .write(&json!(["INSERT INTO t (id, a) VALUES (2, 'next')"]))
        .await;
    assert_eq!(
        v2,
        Some(v1 + 1),
        "failed transactions must not consume versions"
    );
}

#[tokio::test]
async fn query_rows_are_numbered_in_order_and_eoq_time_is_positive() {
    let dir = NodeDir::with_schema(SIMPLE_SCHEMA);
    let node = dir.start();
    let api = node.h2c();
    let stmts: Vec<Value> = (1..=300)
        .map(|i| {
            json!([
                "INSERT INTO t (id, a, b) VALUES (?, ?, ?)",
                [i, format!("r{i}"), 1000 - i]
            ])
        })
        .collect();
    api.tx_ok(&Value::Array(stmts)).await;
    // Ordered by b descending, so row ids (1, 2, 3…) differ from the table's rowids.
    let out = api
        .query(&json!("SELECT id FROM t ORDER BY b ASC"))
        .await
        .query_out();
    let time = match out.end {
        crate::support::End::Eoq { time } => time,
        ref e => panic!("{e:?}"),
    };
    assert!(time > 0.0, "eoq time must measure the query: {time}");
    let ids: Vec<i64> = out.rows.iter().map(|r| r[0].as_i64().unwrap()).collect();
    assert_eq!(ids, (1..=300).rev().collect::<Vec<_>>());

    let empty = api
        .query(&json!("SELECT id FROM t WHERE id < 0"))
        .await
        .query_out();
    assert_eq!(empty.columns, ["id"]);
    assert!(empty.ok_rows().is_empty());
}

#[tokio::test]
async fn concurrent_writes_get_distinct_consecutive_versions() {
    let dir = NodeDir::with_schema(SIMPLE_SCHEMA);
    let node = dir.start();
    let mut tasks = Vec::new();
    for i in 0..24i64 {
        // Half over one shared h2c connection, half over HTTP/1.1 connections.
        let api = if i % 2 == 0 { node.h2c() } else { node.http1() };
        tasks.push(tokio::spawn(async move {
            api.write(&json!([["INSERT INTO t (id, a) VALUES (?, 'c')", [i]]]))
                .await
                .expect("a version")
        }));
    }
    let mut versions = BTreeSet::new();
    for t in tasks {
        assert!(versions.insert(t.await.unwrap()), "duplicate version");
    }
    assert_eq!(versions, (1..=24).collect::<BTreeSet<u64>>());

    let h2 = node.h2c();
    let mut reads = Vec::new();
    for _ in 0..32 {
        let api = h2.clone();
        reads.push(tokio::spawn(async move {
            api.scalar("SELECT count(*) FROM t").await
        }));
    }
    for r in reads {
        assert_eq!(r.await.unwrap(), 24);
    }
}

#[tokio::test]
async fn actor_id_is_stable_and_matches_startup_line() {
    let dir = NodeDir::with_schema(SIMPLE_SCHEMA);
    let node = dir.start();
    assert!(
        is_actor_id(&json!(node.actor_id)),
        "startup line: {}",
        node.stdout()
    );
    for proto in BOTH {
        let v = node
            .api(proto)
            .tx_ok(&json!(["INSERT OR IGNORE INTO t (id) VALUES (1)"]))
            .await;
        assert_eq!(v["actor_id"], json!(node.actor_id));
    }
    let first = node.actor_id.clone();
    node.stop();
    let node = dir.start();
    assert_eq!(node.actor_id, first, "a restart keeps the node's identity");
}

#[tokio::test]
async fn large_result_streams_every_row_in_order() {
    let dir = NodeDir::with_schema(SIMPLE_SCHEMA);
    let node = dir.start();
    let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000) \
               SELECT x, 'row ' || x || ' ' || hex(randomblob(16)) FROM c";
    for proto in BOTH {
        let out = node.api(proto).query(&json!(sql)).await.query_out();
        let rows = out.ok_rows();
        assert_eq!(rows.len(), 20000, "{proto:?}");
        for (i, r) in rows.iter().enumerate() {
            let x = i as i64 + 1;
            assert_eq!(r[0], json!(x), "{proto:?}");
            assert!(
                r[1].as_str().unwrap().starts_with(&format!("row {x} ")),
                "{proto:?}: {r:?}"
            );
        }
    }
}

#[tokio::test]
async fn non_utf8_text_ends_stream_with_error_event() {
    let dir = NodeDir::with_schema(SIMPLE_SCHEMA);
    let node = dir.start();
    for proto in BOTH {
        let api = node.api(proto);
        let r = api
            .query(&json!(
                "SELECT 'fine' AS v UNION ALL SELECT CAST(x'ff' AS TEXT)"
            ))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            !r.body.is_empty(),
            "{proto:?}: 200 with an empty body (no columns, no rows, no error event)"
        );
        let out = r.query_out();
        assert_eq!(out.rows, vec![vec![json!("fine")]], "{proto:?}");
        match &out.end {
            crate::support::End::Error(e) => assert!(!e.is_empty()),
            other => panic!("{proto:?}: expected an in-stream error, got {other:?}"),
        }
        assert_eq!(api.scalar("SELECT 7").await, 7, "node still serves");
    }
}

/// SQLite accepts TEXT that is not UTF-8; writing it must work and must not crash any part
/// of the node (the value stays readable through `hex()`).
#[tokio::test]
async fn non_utf8_text_write_is_refused_with_a_clear_error() {
    // Replicated TEXT must be UTF-8 (JSON and the wire format cannot carry anything else):
    // the write is refused with a 400 that says to use a BLOB, nothing is stored, no panic.
    let dir = NodeDir::with_schema(SIMPLE_SCHEMA);
    let node = dir.start();
    let api = node.http1();
    api.post(
        "/v1/transactions",
        &json!(["INSERT INTO t (id, a) VALUES (1, CAST(x'ff00fe' AS TEXT))"]),
    )
    .await
    .expect_error(400, &["UTF-8", "BLOB"]);
    let v = api
        .write(&json!(["INSERT INTO t (id, a) VALUES (2, 'ok')"]))
        .await;
    assert_eq!(v, Some(1));
    assert_eq!(api.scalar("SELECT count(*) FROM t").await, 1);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let panics = node.panics();
    assert!(
        panics.is_empty(),
        "the node panicked: {panics:?}\n{}",
        node.stderr()
    );
}
