//! Periodic snapshots on a 3-node cluster, and rebuilding a node from one: node C is stopped
//! and restored from a snapshot node A wrote, under a new actor id; it catches up with what
//! the cluster wrote since (its own earlier writes included) without losing or duplicating a
//! row, and its bookkeeping agrees with its database.

use crate::node::{converge, eventually, serial, Dir};
use crate::support::run_cli;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Snapshot files in `dir` (complete ones only), oldest first.
fn snapshots(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| {
        let name = p.file_name().unwrap().to_string_lossy();
        name.starts_with("verdigris-") && name.ends_with(".db")
    });
    v.sort();
    v
}

fn rows_in(snapshot: &Path) -> i64 {
    let c =
        rusqlite::Connection::open_with_flags(snapshot, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open snapshot");
    c.query_row("SELECT count(*) FROM items", [], |r| r.get(0))
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_snapshots_rebuild_a_node_under_a_new_actor_id() {
    let _serial = serial();
    let snap_dir = tempfile::tempdir().expect("tempdir");
    let da = Dir::new(&format!(
        "[snapshots]\ndir = \"{}\"\ninterval_secs = 1\nkeep = 2\n",
        snap_dir.path().display()
    ));
    let (db, dc) = (Dir::new(""), Dir::new(""));
    let a = da.start(&[], 0);
    let b = db.start(&[a.gossip], 0);
    let c = dc.start(&[a.gossip], 0);
    eventually(30, "a 3-node mesh", || async {
        a.alive_members().await == 2 && b.alive_members().await == 2 && c.alive_members().await == 2
    })
    .await;
    a.insert("a", 0..30).await;
    b.insert("b", 100..130).await;
    c.insert("c", 200..230).await;
    let mut want: Vec<i64> = (0..30).chain(100..130).chain(200..230).collect();
    converge(&[&a, &b, &c], &want, 30).await;

    // A snapshot holding all 90 rows appears; retention keeps at most 2, no partial files.
    eventually(30, "a snapshot with every row", || async {
        snapshots(snap_dir.path())
            .last()
            .is_some_and(|s| rows_in(s) == 90)
    })
    .await;
    let snap = snapshots(snap_dir.path()).pop().unwrap();
    let kept = snap_dir.path().join("kept.db");
    std::fs::copy(&snap, &kept).expect("copy the snapshot out of the rotation");
    eventually(15, "retention to delete old snapshots", || async {
        let n = snapshots(snap_dir.path()).len();
        std::fs::read_dir(snap_dir.path()).unwrap().count() <= 3 && n == 2
    })
    .await;
    let m = a.http().get("/metrics").await.text();
    assert!(
        m.contains("verdigris_snapshots_total{result=\"ok\"}"),
        "{m}"
    );

    // C writes more, then is stopped; the cluster goes on writing.
    c.insert("c", 230..240).await;
    want.extend(230..240);
    want.sort();
    converge(&[&a, &b], &want, 30).await;
    let (c_gossip, c_actor) = (c.gossip, c.actor.clone());
    assert!(c.stop().success());
    a.insert("a", 30..40).await;
    b.insert("b", 130..140).await;
    want.extend((30..40).chain(130..140));
    want.sort();

    // Rebuild C from A's snapshot: fresh actor id, then it catches up through sync.
    let cfg = dc.config().display().to_string();
    run_cli(&["-c", &cfg, "restore", kept.to_str().unwrap()]).ok();
    let c = dc.start(&[a.gossip], c_gossip.port());
    assert_ne!(c.actor, c_actor, "a restored node takes a new actor id");
    assert_ne!(c.actor, a.actor, "and not the snapshot's origin's");
    converge(&[&a, &b, &c], &want, 60).await;
    let api = c.http();
    assert_eq!(
        api.rows(&json!(
            "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM items"
        ))
        .await,
        vec![vec![
            json!(want.len()),
            json!(want.len()),
            json!(0),
            json!(239)
        ]]
    );
    let check = c.admin(json!({"Sync": "CheckBookieConsistency"})).await;
    assert_eq!(check, json!({"consistent": true}));
    eventually(30, "no gaps left on C", || async {
        api.get("/v1/health").await.json()["response"]["gaps"] == 0
    })
    .await;
    // Its new identity writes and replicates like any other.
    c.insert("c2", 300..305).await;
    want.extend(300..305);
    converge(&[&a, &b, &c], &want, 30).await;
}
