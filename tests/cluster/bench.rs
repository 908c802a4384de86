//! Benchmarks on a loopback cluster (ignored by default; numbers in docs/benchmarks.md):
//!
//! `cargo test --release -p verdigris --test cluster bench_ -- --ignored --nocapture --test-threads 1`

use crate::support::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn bench_replication_latency() {
    let _serial = serial().await;
    let (_dirs, [a, b, c]) = three_nodes().await;
    let rate = 1000u64;
    let secs = 10u64;
    let start = Instant::now();
    let mut next = Instant::now();
    let a = std::sync::Arc::new(a);
    let mut tasks = Vec::new();
    for i in 0..rate * secs {
        next += Duration::from_micros(1_000_000 / rate);
        tokio::time::sleep_until(next.into()).await;
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            a.exec(json!([[
                "INSERT INTO items (id, owner, val, n) VALUES (?1, 'a', 'v', ?1)",
                [i]
            ]]))
            .await;
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let achieved = (rate * secs) as f64 / start.elapsed().as_secs_f64();
    wait_converged(&[&a, &b, &c], "SELECT count(*) FROM items", 60).await;
    for (name, n) in [("b", &b), ("c", &c)] {
        let s = n.admin(json!({"Cluster": "Stats"})).await;
        println!(
            "node {name}: {} samples, write→visible p50 {:.2} ms, p99 {:.2} ms (offered {achieved:.0} writes/s)",
            s["lag_samples"],
            s["lag_p50_secs"].as_f64().unwrap() * 1000.0,
            s["lag_p99_secs"].as_f64().unwrap() * 1000.0
        );
    }
}

/// Inserts `rows` rows shaped like the test table into a plain SQLite file, `per_tx` per
/// transaction: the baseline for catch-up time.
fn raw_sqlite_insert(rows: i64, per_tx: i64) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = rusqlite::Connection::open(dir.path().join("raw.db")).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let start = Instant::now();
    let mut id = 0;
    while id < rows {
        let tx = conn.unchecked_transaction().unwrap();
        {
            let mut stmt = tx
                .prepare_cached("INSERT INTO items (id, owner, val, n) VALUES (?1, 'a', 'value-' || ?1, ?1 * 3)")
                .unwrap();
            for _ in 0..per_tx {
                stmt.execute([id]).unwrap();
                id += 1;
            }
        }
        tx.commit().unwrap();
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn bench_catch_up_one_million_rows() {
    let _serial = serial().await;
    let total: i64 = std::env::var("VERDIGRIS_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let per_tx = 10_000;
    let raw = raw_sqlite_insert(total, per_tx);
    let (da, db) = (NodeDir::new(), NodeDir::new());
    let a = da.start(&[]);
    let start = Instant::now();
    let mut t = 0;
    while t * per_tx < total {
        a.exec(insert_range("a", t * per_tx, ((t + 1) * per_tx).min(total)))
            .await;
        t += 1;
    }
    let local = start.elapsed();
    let origin = a.admin(json!({"Sync": "Generate"})).await["actor_id"]
        .as_str()
        .expect("an actor id")
        .to_string();
    let versions = (total as u64).div_ceil(per_tx as u64);
    println!(
        "{total} rows: raw SQLite insert {:.2} s; local writes through the API {:.2} s",
        raw.as_secs_f64(),
        local.as_secs_f64(),
    );
    // The default: a fresh node bootstraps from a snapshot of A's database.
    let start = Instant::now();
    let b = db.start(&[a.gossip]);
    let (catch_up, first_row) = time_catch_up(&b, total, start, (&origin, versions)).await;
    drop(b);
    let log = db.log();
    if catch_up > raw * 2 {
        eprintln!("slow snapshot catch-up; the new node's log:\n{log}");
    }
    let line = log
        .lines()
        .find(|l| l.contains("bootstrapped from a peer's snapshot"));
    println!("  {}", line.expect("b bootstrapped from a snapshot").trim());
    println!(
        "fresh-node catch-up (snapshot bootstrap) {:.2} s = {:.2}× raw (start to first row {:.2} s)",
        catch_up.as_secs_f64(),
        catch_up.as_secs_f64() / raw.as_secs_f64(),
        first_row.as_secs_f64(),
    );
    // Change by change, as a node that already holds data catches up: the apply path.
    let dc = NodeDir::with_gossip("snapshot_bootstrap = false");
    let start = Instant::now();
    let c = dc.start(&[a.gossip]);
    let (catch_up, first_row) = time_catch_up(&c, total, start, (&origin, versions)).await;
    let changes = total as f64 * 3.0;
    println!(
        "fresh-node catch-up (change by change) {:.2} s = {:.2}× raw (start to first row {:.2} s); \
         apply {:.0} column-changes/s",
        catch_up.as_secs_f64(),
        catch_up.as_secs_f64() / raw.as_secs_f64(),
        first_row.as_secs_f64(),
        changes / catch_up.as_secs_f64()
    );
}

/// Time from `start` (just before starting `node`) until it holds every one of `origin`'s
/// `versions` (and so its `total` rows), and until its first row. Completion is polled from
/// the node's in-memory bookkeeping (`sync generate`): a `count(*)` over a million rows every
/// 50 ms would cost the node a good part of a core while it catches up.
async fn time_catch_up(
    node: &TestNode,
    total: i64,
    start: Instant,
    (origin, versions): (&str, u64),
) -> (Duration, Duration) {
    let mut first_row = None;
    loop {
        if first_row.is_none() && node.count("items").await > 0 {
            first_row = Some(start.elapsed());
        }
        let s = node.admin(json!({"Sync": "Generate"})).await;
        let complete = s["heads"][origin] == versions
            && s["need"].get(origin).is_none()
            && s["partial_need"].get(origin).is_none();
        if complete {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3600),
            "catch-up timed out: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let catch_up = start.elapsed();
    assert_eq!(
        node.count("items").await,
        total,
        "every version applied, every row there"
    );
    (catch_up, first_row.unwrap_or(catch_up))
}
