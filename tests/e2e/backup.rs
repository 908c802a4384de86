//! `verdigris backup` and `verdigris restore`: an online, consistent snapshot taken while the
//! node runs; `restore` refused while the node runs; after a restore the node has exactly the
//! snapshot's rows and a fresh actor id by default, its old one with `--self-actor-id`, or
//! the given one with `--actor-id`.

use crate::support::{Api, NodeDir, SIMPLE_SCHEMA};
use serde_json::{json, Value};

async fn insert(api: &Api, ids: std::ops::RangeInclusive<i64>) {
    for i in ids {
        api.write(&json!([[
            "INSERT INTO t (id, a, b) VALUES (?, ?, ?)",
            [i, format!("row{i}"), i * i]
        ]]))
        .await
        .expect("version");
    }
}

async fn all_rows(api: &Api) -> Vec<Vec<Value>> {
    api.rows(&json!("SELECT id, a, b FROM t ORDER BY id")).await
}

/// Starts a node, writes rows 1..=5, backs up, writes 6..=8. Returns the snapshot's rows and
/// path, and the actor id; the node is stopped.
async fn node_with_backup(dir: &NodeDir) -> (Vec<Vec<Value>>, String, String) {
    let node = dir.start();
    let api = node.http1();
    insert(&api, 1..=5).await;
    let snapshot_rows = all_rows(&api).await;
    let snap = dir.path().join("snap.db").display().to_string();

    let out = dir.cli(&["backup", &snap]);
    out.ok();
    assert!(std::path::Path::new(&snap).exists(), "backup file written");
    // Never overwrites.
    let out = dir.cli(&["backup", &snap]);
    assert!(out.failed().contains("exists"), "{}", out.stderr);

    insert(&api, 6..=8).await;
    api.write(&json!([
        "UPDATE t SET a = 'changed after backup' WHERE id = 1"
    ]))
    .await
    .expect("version");
    assert_eq!(api.scalar("SELECT count(*) FROM t").await, 8);

    // Refused while the node runs; the database is untouched.
    let out = dir.cli(&["restore", &snap]);
    let err = out.failed().to_lowercase();
    assert!(
        err.contains("running") || err.contains("stop"),
        "restore while running: {err}"
    );
    assert_eq!(
        api.scalar("SELECT count(*) FROM t").await,
        8,
        "refused restore changed data"
    );

    let actor = node.actor_id.clone();
    node.stop();
    (snapshot_rows, snap, actor)
}

#[tokio::test]
async fn backup_restore_round_trip_takes_fresh_actor_id() {
    let dir = NodeDir::with_schema(SIMPLE_SCHEMA);
    let (snapshot_rows, snap, old_actor) = node_with_backup(&dir).await;

    let out = dir.cli(&["restore", &snap]);
    out.ok();
    let node = dir.start();
    let api = node.http1();
    assert_eq!(
        all_rows(&api).await,
        snapshot_rows,
        "exactly the snapshot's rows"
    );
    assert_ne!(
        node.actor_id, old_actor,
        "a plain restore takes a fresh actor id"
    );
    assert_eq!(api.scalar("SELECT count(*) FROM t").await, 5);

    // The restored node is fully writable and the snapshot's history is kept.
    let v = api
        .tx_ok(&json!([
            "INSERT INTO t (id, a) VALUES (100, 'after restore')"
        ]))
        .await;
    assert!(v["version"].is_u64(), "{v}");
    assert_eq!(v["actor_id"], json!(node.actor_id));
    assert!(
        api.scalar("SELECT count(*) FROM __vd_versions").await >= 6,
        "the snapshot's versions are kept"
    );
    // Identical re-publish is still a no-op on restored rows.
    let v = api
        .tx_ok(&json!(["UPDATE t SET a = 'row1' WHERE id = 1"]))
        .await;
    assert_eq!(v["version"], json!(null), "{v}");
    let v = api
        .write(&json!(["UPDATE t SET a = 'edited' WHERE id = 1"]))
        .await;
    assert!(v.is_some());
}

#[tokio::test]
async fn restore_with_self_actor_id_keeps_identity() {
    let dir = NodeDir::with_schema(SIMPLE_SCHEMA);
    let (snapshot_rows, snap, old_actor) = node_with_backup(&dir).await;
    dir.cli(&["restore", &snap, "--self-actor-id"]).ok();
    let node = dir.start();
    assert_eq!(
        node.actor_id, old_actor,
        "--self-actor-id keeps the identity"
    );
    let api = node.h2c();
    assert_eq!(all_rows(&api).await, snapshot_rows);
    let v = api.tx_ok(&json!(["INSERT INTO t (id) VALUES (200)"])).await;
    assert_eq!(v["actor_id"], json!(old_actor));
}

#[tokio::test]
async fn restore_with_explicit_actor_id() {
    let dir = NodeDir::with_schema(SIMPLE_SCHEMA);
    let (snapshot_rows, snap, old_actor) = node_with_backup(&dir).await;
    let wanted = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    let out = dir.cli(&["restore", &snap, "--actor-id", "not-a-uuid"]);
    assert!(out.failed().contains("not-a-uuid"), "{}", out.stderr);
    let out = dir.cli(&["restore", &snap, "--actor-id", wanted, "--self-actor-id"]);
    out.failed();
    dir.cli(&["restore", &snap, "--actor-id", wanted]).ok();
    let node = dir.start();
    assert_eq!(node.actor_id, wanted.replace('-', ""));
    assert_ne!(node.actor_id, old_actor);
    assert_eq!(all_rows(&node.http1()).await, snapshot_rows);
}

#[tokio::test]
async fn restore_refuses_files_that_are_not_backups() {
    let dir = NodeDir::with_schema(SIMPLE_SCHEMA);
    let node = dir.start();
    let api = node.http1();
    insert(&api, 1..=3).await;
    let rows = all_rows(&api).await;
    node.stop();

    let missing = dir.path().join("missing.db").display().to_string();
    dir.cli(&["restore", &missing]).failed();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"this is not a database").unwrap();
    dir.cli(&["restore", &junk.display().to_string()]).failed();
    let foreign = dir.path().join("foreign.db");
    {
        let c = rusqlite::Connection::open(&foreign).unwrap();
        c.execute_batch("CREATE TABLE x (a); INSERT INTO x VALUES (1);")
            .unwrap();
    }
    dir.cli(&["restore", &foreign.display().to_string()])
        .failed();

    let node = dir.start();
    assert_eq!(
        all_rows(&node.http1()).await,
        rows,
        "failed restores left the database alone"
    );
}

/// A backup taken while transactions keep committing holds whole transactions only: every
/// pair written together is either fully in the snapshot or absent, and the version
/// bookkeeping matches the rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_during_writes_is_transactionally_consistent() {
    let dir = NodeDir::with_schema(SIMPLE_SCHEMA);
    let node = dir.start();
    let api = node.http1();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let api = api.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut i = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                api.write(&json!([
                    ["INSERT INTO t (id, a, b) VALUES (?, 'pair', ?)", [2 * i, i]],
                    [
                        "INSERT INTO t (id, a, b) VALUES (?, 'pair', ?)",
                        [2 * i + 1, i]
                    ]
                ]))
                .await
                .expect("version");
                i += 1;
            }
            i
        })
    };
    // Let some transactions commit first.
    while api.scalar("SELECT count(*) FROM t").await < 40 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let snap = dir.path().join("live.db").display().to_string();
    let cfg = dir.config.display().to_string();
    let s = snap.clone();
    let out =
        tokio::task::spawn_blocking(move || crate::support::run_cli(&["-c", &cfg, "backup", &s]))
            .await
            .unwrap();
    out.ok();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let pairs = writer.await.unwrap();
    assert!(pairs >= 20, "writes kept going: {pairs}");
    node.stop();

    dir.cli(&["restore", &snap]).ok();
    let node = dir.start();
    let api = node.http1();
    let rows = api.scalar("SELECT count(*) FROM t").await;
    assert!(
        rows >= 40,
        "the snapshot has the rows written before it: {rows}"
    );
    assert_eq!(rows % 2, 0, "a transaction was split by the snapshot");
    let broken = api
        .scalar(
            "SELECT count(*) FROM t AS x WHERE NOT EXISTS \
             (SELECT 1 FROM t AS y WHERE y.b = x.b AND y.id != x.id)",
        )
        .await;
    assert_eq!(broken, 0, "half of a transaction's rows in the snapshot");
    assert_eq!(
        api.scalar("SELECT count(*) FROM __vd_versions").await,
        rows / 2,
        "one version per transaction in the snapshot"
    );
}
