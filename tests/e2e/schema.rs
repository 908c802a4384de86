//! Schema files and `verdigris reload` on a running node: additive changes (nullable or
//! defaulted columns, indexes, new tables) apply live without creating versions or change
//! log entries; destructive changes (removed or changed columns, primary key changes) are
//! refused with a message naming the table and column, and the node keeps the old schema.
//! A restart re-applies the files and keeps the data.

use crate::support::{Api, NodeDir};
use serde_json::json;
use std::collections::BTreeMap;

const V1: &str = "CREATE TABLE items (id INTEGER NOT NULL PRIMARY KEY, name TEXT, qty INTEGER);\n";

/// Bookkeeping that an additive reload must not change: the number of recorded versions, the
/// highest one, and the row count of every other internal change-tracking table (`__vd_log`
/// if the store has one, per-table clocks, buffers…), keyed by name.
async fn bookkeeping(api: &Api) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    out.insert(
        "versions".to_string(),
        api.scalar("SELECT count(*) FROM __vd_versions").await,
    );
    out.insert(
        "max_version".to_string(),
        api.scalar("SELECT coalesce(max(db_version), 0) FROM __vd_versions")
            .await,
    );
    let tables = api
        .rows(&json!(
            "SELECT name FROM sqlite_schema WHERE type = 'table' \
             AND (name LIKE '\\_\\_vd\\_%' ESCAPE '\\' OR name LIKE '%\\_\\_vd\\_clock' ESCAPE '\\') \
             AND name NOT IN ('__vd_state', '__vd_tables', '__vd_sites', '__vd_members', '__vd_versions') \
             ORDER BY name"
        ))
        .await;
    for t in tables {
        let name = t[0].as_str().expect("table name").to_string();
        let n = api
            .scalar(&format!("SELECT count(*) FROM \"{name}\""))
            .await;
        out.insert(name, n);
    }
    out
}

/// Every figure in `before` is unchanged; tables that appeared since are empty.
fn assert_unchanged(before: &BTreeMap<String, i64>, after: &BTreeMap<String, i64>) {
    for (k, v) in before {
        assert_eq!(
            after.get(k),
            Some(v),
            "{k} changed: before {before:?}, after {after:?}"
        );
    }
    for (k, v) in after.iter().filter(|(k, _)| !before.contains_key(*k)) {
        assert_eq!(*v, 0, "new bookkeeping table {k} is not empty: {after:?}");
    }
}

fn versions(b: &BTreeMap<String, i64>) -> i64 {
    b["versions"]
}

fn max_version(b: &BTreeMap<String, i64>) -> u64 {
    b["max_version"] as u64
}

async fn write_20_rows(api: &Api) {
    for i in 1..=20 {
        api.write(&json!([[
            "INSERT INTO items (id, name, qty) VALUES (?, ?, ?)",
            [i, format!("item{i}"), i * 10]
        ]]))
        .await
        .expect("version");
    }
}

#[tokio::test]
async fn reload_adds_nullable_column_and_index_without_new_versions() {
    let dir = NodeDir::with_schema(V1);
    let node = dir.start();
    let api = node.http1();
    write_20_rows(&api).await;
    let before = bookkeeping(&api).await;
    assert_eq!(versions(&before), 20, "one version per write");

    dir.write_schema(
        "CREATE TABLE items (id INTEGER NOT NULL PRIMARY KEY, name TEXT, qty INTEGER, \
         note TEXT, rank INTEGER NOT NULL DEFAULT 7);\n\
         CREATE INDEX items_note ON items (note);\n",
    );
    let out = node.cli(&["reload"]);
    out.ok();
    assert_eq!(
        bookkeeping(&api).await,
        before,
        "an additive reload must create no versions"
    );

    let rows = api
        .rows(&json!(
            "SELECT count(*), count(note), min(rank), max(rank) FROM items"
        ))
        .await;
    assert_eq!(rows, vec![vec![json!(20), json!(0), json!(7), json!(7)]]);
    let idx = api
        .rows(&json!(
            "SELECT name FROM sqlite_schema WHERE type = 'index' AND name = 'items_note'"
        ))
        .await;
    assert_eq!(idx.len(), 1, "index created");
    let plan = api
        .rows(&json!(
            "EXPLAIN QUERY PLAN SELECT id FROM items WHERE note = 'x'"
        ))
        .await;
    assert!(
        format!("{plan:?}").contains("items_note"),
        "the new index is used: {plan:?}"
    );

    // Writing the new column creates exactly one new version.
    let v = api
        .write(&json!(["UPDATE items SET note = 'hello' WHERE id = 3"]))
        .await;
    assert_eq!(v, Some(max_version(&before) + 1));
    let after = bookkeeping(&api).await;
    assert_eq!(
        versions(&after),
        versions(&before) + 1,
        "exactly one new version row"
    );
    assert_eq!(
        api.rows(&json!(
            "SELECT id, note, rank FROM items WHERE note IS NOT NULL"
        ))
        .await,
        vec![vec![json!(3), json!("hello"), json!(7)]]
    );
    // New rows can use the new columns right away, and reloading again is a no-op.
    api.write(&json!([
        "INSERT INTO items (id, name, note, rank) VALUES (21, 'n', 'x', 1)"
    ]))
    .await
    .expect("version");
    let settled = bookkeeping(&api).await;
    node.cli(&["reload"]).ok();
    assert_unchanged(&settled, &bookkeeping(&api).await);
}

#[tokio::test]
async fn reload_adds_new_table_and_drops_index() {
    let dir = NodeDir::with_schema(&format!("{V1}CREATE INDEX items_name ON items (name);\n"));
    let node = dir.start();
    let api = node.h2c();
    write_20_rows(&api).await;
    let before = bookkeeping(&api).await;
    dir.write_schema(&format!(
        "{V1}DROP INDEX IF EXISTS items_name;\n\
         CREATE TABLE tags (item INTEGER NOT NULL, tag TEXT NOT NULL DEFAULT '', PRIMARY KEY (item, tag));\n"
    ));
    node.cli(&["reload"]).ok();
    assert_unchanged(&before, &bookkeeping(&api).await);
    let idx = api
        .rows(&json!(
            "SELECT name FROM sqlite_schema WHERE name = 'items_name'"
        ))
        .await;
    assert!(idx.is_empty(), "index dropped: {idx:?}");
    let v = api
        .write(&json!([
            "INSERT INTO tags (item, tag) VALUES (1, 'red'), (1, 'blue')"
        ]))
        .await;
    assert_eq!(
        v,
        Some(max_version(&before) + 1),
        "the new table is replicated"
    );
    // Client DDL on the new table is refused like on any replicated table.
    let r = api.tx(&json!(["DROP TABLE tags"])).await;
    r.expect_error(400, &["tags"]);
}

#[tokio::test]
async fn reload_refuses_removed_column_and_keeps_old_schema() {
    let dir = NodeDir::with_schema(V1);
    let node = dir.start();
    let api = node.http1();
    write_20_rows(&api).await;
    let before = bookkeeping(&api).await;
    let schema_before = api
        .rows(&json!("SELECT name, sql FROM sqlite_schema ORDER BY name"))
        .await;

    // qty removed, and a new column added in the same file: nothing may be applied.
    dir.write_schema(
        "CREATE TABLE items (id INTEGER NOT NULL PRIMARY KEY, name TEXT, extra TEXT);\n",
    );
    let out = node.cli(&["reload"]);
    let err = out.failed();
    assert!(
        err.contains("items") && err.contains("qty"),
        "names table and column: {err}"
    );
    assert_eq!(
        api.rows(&json!("SELECT name, sql FROM sqlite_schema ORDER BY name"))
            .await,
        schema_before,
        "a refused reload must not apply any part of the change"
    );
    assert_unchanged(&before, &bookkeeping(&api).await);

    // The node keeps working with the old schema.
    let v = api
        .write(&json!(["UPDATE items SET qty = qty + 1 WHERE id = 1"]))
        .await;
    assert_eq!(v, Some(max_version(&before) + 1));
    assert_eq!(api.scalar("SELECT qty FROM items WHERE id = 1").await, 11);
    let r = api.query(&json!("SELECT extra FROM items")).await;
    r.expect_error(400, &["extra"]);
}

#[tokio::test]
async fn reload_refuses_changed_column_and_primary_key() {
    let dir = NodeDir::with_schema(V1);
    let node = dir.start();
    let api = node.http1();
    write_20_rows(&api).await;
    for (schema, needles) in [
        (
            "CREATE TABLE items (id INTEGER NOT NULL PRIMARY KEY, name TEXT, qty TEXT);",
            vec!["items", "qty"],
        ),
        (
            "CREATE TABLE items (id INTEGER NOT NULL, name TEXT NOT NULL, qty INTEGER, PRIMARY KEY (id, name));",
            vec!["items", "name"],
        ),
        (
            "CREATE TABLE items (id INTEGER NOT NULL PRIMARY KEY, name TEXT, qty INTEGER, \
             extra TEXT NOT NULL);",
            vec!["items", "extra"],
        ),
        (
            "CREATE TABLE items (id INTEGER NOT NULL PRIMARY KEY, name TEXT, qty INTEGER);\n\
             CREATE UNIQUE INDEX items_u ON items (name);",
            vec!["items", "unique"],
        ),
        ("DROP TABLE items;", vec!["drop"]),
    ] {
        dir.write_schema(schema);
        let out = node.cli(&["reload"]);
        let err = out.failed().to_lowercase();
        for n in needles {
            assert!(err.contains(n), "reload of {schema:?} should mention {n:?}: {err}");
        }
    }
    assert_eq!(api.scalar("SELECT count(*) FROM items").await, 20);
    api.write(&json!(["UPDATE items SET qty = 0 WHERE id = 2"]))
        .await
        .expect("still writable");
}

#[tokio::test]
async fn restart_reapplies_schema_and_keeps_data() {
    let dir = NodeDir::with_schema(V1);
    let node = dir.start();
    let api = node.http1();
    write_20_rows(&api).await;
    let before = bookkeeping(&api).await;
    node.stop();
    // Offline change: a new nullable column, applied at startup.
    dir.write_schema(
        "CREATE TABLE items (id INTEGER NOT NULL PRIMARY KEY, name TEXT, qty INTEGER, note TEXT);",
    );
    let node = dir.start();
    let api = node.http1();
    assert_unchanged(&before, &bookkeeping(&api).await);
    assert_eq!(
        api.scalar("SELECT count(*) FROM items WHERE note IS NULL")
            .await,
        20
    );
    let v = api
        .write(&json!(["UPDATE items SET note = 'n' WHERE id = 20"]))
        .await;
    assert_eq!(
        v,
        Some(max_version(&before) + 1),
        "versions continue after a restart"
    );
}
