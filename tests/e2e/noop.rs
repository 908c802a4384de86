//! No-op filtering: a transaction gets a `version` only if it changed replicated data.
//! Re-publishing identical rows (plain UPDATE, upsert, `INSERT OR REPLACE`), and writes only
//! to tables outside the schema answer `"version": null` and record nothing in `__vd_versions`;
//! real changes get consecutive versions.

use crate::support::{Api, NodeDir, SIMPLE_SCHEMA};
use serde_json::json;

async fn version_rows(api: &Api) -> i64 {
    api.scalar("SELECT count(*) FROM __vd_versions").await
}

#[tokio::test]
async fn republishing_identical_row_gets_null_version() {
    let dir = NodeDir::with_schema(SIMPLE_SCHEMA);
    let node = dir.start();
    let api = node.http1();
    let upsert = json!([[
        "INSERT INTO t (id, a, b) VALUES (?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET a = excluded.a, b = excluded.b",
        [1, "x", 2]
    ]]);
    let v1 = api
        .write(&upsert)
        .await
        .expect("first insert gets a version");
    let before = version_rows(&api).await;

    let same = api.tx_ok(&upsert).await;
    assert_eq!(same["version"], json!(null), "identical upsert: {same}");
    for stmt in [
        "UPDATE t SET a = 'x' WHERE id = 1",
        "UPDATE t SET a = a, b = b",
        "UPDATE t SET b = 2 WHERE id = 1",
        "UPDATE t SET a = 'y' WHERE id = 999",
        "DELETE FROM t WHERE id = 999",
    ] {
        let v = api.tx_ok(&json!([stmt])).await;
        assert_eq!(v["version"], json!(null), "{stmt}: {v}");
    }
    // A change undone within the same transaction nets out to nothing.
    let v = api
        .tx_ok(&json!([
            "UPDATE t SET a = 'tmp' WHERE id = 1",
            "UPDATE t SET a = 'x' WHERE id = 1"
        ]))
        .await;
    assert_eq!(v["version"], json!(null), "net no-op: {v}");
    let v = api
        .tx_ok(&json!([
            "INSERT INTO t (id, a) VALUES (50, 'short-lived')",
            "DELETE FROM t WHERE id = 50"
        ]))
        .await;
    assert_eq!(v["version"], json!(null), "insert+delete of a new row: {v}");

    assert_eq!(
        version_rows(&api).await,
        before,
        "no-ops must record no version"
    );
    let v2 = api.write(&json!(["UPDATE t SET b = 3 WHERE id = 1"])).await;
    assert_eq!(v2, Some(v1 + 1), "no-ops must not consume version numbers");
}

#[tokio::test]
async fn changing_one_column_bumps_version_by_one() {
    let dir = NodeDir::with_schema(SIMPLE_SCHEMA);
    let node = dir.start();
    let api = node.h2c();
    let mut last = api
        .write(&json!(["INSERT INTO t (id, a, b) VALUES (1, 'x', 2)"]))
        .await
        .expect("version");
    for stmt in [
        "UPDATE t SET a = 'y' WHERE id = 1",
        "UPDATE t SET b = 3 WHERE id = 1",
        "UPDATE t SET b = NULL WHERE id = 1",
        "UPDATE t SET b = '3' WHERE id = 1", // text '3' → INTEGER affinity → 3, a change from NULL
        "DELETE FROM t WHERE id = 1",
        "INSERT INTO t (id, a, b) VALUES (1, 'y', 3)",
    ] {
        let before = version_rows(&api).await;
        let v = api.write(&json!([stmt])).await;
        assert_eq!(v, Some(last + 1), "{stmt}");
        assert_eq!(
            version_rows(&api).await,
            before + 1,
            "{stmt}: one new version row"
        );
        last += 1;
    }
    // Values are compared as stored, after column affinity.
    api.write(&json!(["INSERT INTO t (id, a) VALUES (2, '1')"]))
        .await
        .expect("version");
    let v = api
        .write(&json!([["UPDATE t SET a = ? WHERE id = 2", [1]]]))
        .await;
    // Column a has TEXT affinity: the integer 1 is stored as '1', which is unchanged.
    assert_eq!(v, None, "TEXT affinity turns 1 into '1': identical");
}

#[tokio::test]
async fn insert_or_replace_identical_row_gets_null_version() {
    let dir = NodeDir::with_schema(SIMPLE_SCHEMA);
    let node = dir.start();
    let api = node.http1();
    let replace = json!(["INSERT OR REPLACE INTO t (id, a, b) VALUES (7, 'same', 1)"]);
    let v1 = api
        .write(&replace)
        .await
        .expect("first write gets a version");
    let before = version_rows(&api).await;
    let v = api.tx_ok(&replace).await;
    assert_eq!(
        v["version"],
        json!(null),
        "identical INSERT OR REPLACE: {v}"
    );
    let v = api
        .tx_ok(&json!(["REPLACE INTO t (id, a, b) VALUES (7, 'same', 1)"]))
        .await;
    assert_eq!(v["version"], json!(null), "identical REPLACE: {v}");
    assert_eq!(version_rows(&api).await, before);
    assert_eq!(
        api.rows(&json!("SELECT id, a, b FROM t")).await,
        vec![vec![json!(7), json!("same"), json!(1)]]
    );
    let v = api
        .write(&json!([
            "INSERT OR REPLACE INTO t (id, a, b) VALUES (7, 'other', 1)"
        ]))
        .await;
    assert_eq!(
        v,
        Some(v1 + 1),
        "a REPLACE that changes a column is a change"
    );
}

#[tokio::test]
async fn writes_only_to_non_schema_table_get_null_version() {
    let dir = NodeDir::with_schema(SIMPLE_SCHEMA);
    let node = dir.start();
    let api = node.http1();
    let before = version_rows(&api).await;
    for stmts in [
        json!(["CREATE TABLE scratch(a)"]),
        json!([
            "INSERT INTO scratch VALUES (1)",
            "INSERT INTO scratch VALUES ('two')"
        ]),
        json!(["UPDATE scratch SET a = 3 WHERE a = 1"]),
        json!(["DELETE FROM scratch WHERE a = 'two'"]),
    ] {
        let v = api.tx_ok(&stmts).await;
        assert_eq!(v["version"], json!(null), "{stmts}: {v}");
    }
    assert_eq!(version_rows(&api).await, before);
    assert_eq!(
        api.rows(&json!("SELECT a FROM scratch")).await,
        vec![vec![json!(3)]],
        "non-schema tables are still written"
    );
    // Mixed: the replicated part gets a version.
    let v = api
        .write(&json!([
            "INSERT INTO scratch VALUES (4)",
            "INSERT INTO t (id) VALUES (1)"
        ]))
        .await;
    assert_eq!(v, Some(1));
    assert_eq!(version_rows(&api).await, before + 1);
}
