//! Local write throughput: raw SQLite (rusqlite) vs the CRDT store in-process vs the HTTP API,
//! for single-row and 100-row transactions, on the same machine in one run.
//!
//! Run: `cargo bench -p verdigris --bench write_throughput` (prints a table; set
//! `VERDIGRIS_BENCH_ROWS` to change the row count, default 20000).
//! `VERDIGRIS_BENCH_ONLY=images` instead measures what handing before-images to subscriptions
//! costs the write path (local transactions and remote merges, with and without a subscription
//! that needs them).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rusqlite::{params, Connection};
use std::time::Instant;
use verdigris::config::Config;
use verdigris::store::{Statement, Store};

const SCHEMA: &str = "CREATE TABLE items (id INTEGER NOT NULL PRIMARY KEY, name TEXT, qty INTEGER DEFAULT 0, price REAL);";
const INSERT: &str = "INSERT INTO items (id, name, qty, price) VALUES (?1, ?2, ?3, ?4)";

fn row(i: i64) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value::*;
    vec![
        Integer(i),
        Text(format!("item-{i}")),
        Integer(i % 97),
        Real(i as f64 * 0.5),
    ]
}

/// Seconds per row inserting `n` rows in transactions of `batch` rows with raw rusqlite.
fn raw(dir: &std::path::Path, n: i64, batch: i64) -> f64 {
    let conn = Connection::open(dir.join(format!("raw-{batch}.db"))).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        .unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        {
            let mut stmt = conn.prepare_cached(INSERT).unwrap();
            for j in i..(i + batch).min(n) {
                let r = row(j);
                stmt.execute(params![r[0], r[1], r[2], r[3]]).unwrap();
            }
        }
        conn.execute_batch("COMMIT").unwrap();
        i += batch;
    }
    start.elapsed().as_secs_f64() / n as f64
}

/// The store's executor on a table outside the schema: same statement path, no CRDT work.
fn plain_tx(dir: &std::path::Path, n: i64, batch: i64) -> f64 {
    let mut store = Store::open(&dir.join(format!("plain-{batch}.db"))).unwrap();
    store
        .transact(
            &[Statement::new(
                SCHEMA.replace("NOT NULL PRIMARY KEY", "PRIMARY KEY"),
            )],
            None,
        )
        .unwrap();
    timed_inserts(&mut store, n, batch, false)
}

fn store_tx(dir: &std::path::Path, n: i64, batch: i64) -> f64 {
    let mut store = Store::open(&dir.join(format!("store-{batch}.db"))).unwrap();
    store.apply_schema(SCHEMA).unwrap();
    timed_inserts(&mut store, n, batch, true)
}

/// Seconds per row inserting `n` rows through the store in transactions of `batch` rows;
/// checks that a version is created exactly when the table is replicated.
fn timed_inserts(store: &mut Store, n: i64, batch: i64, replicated: bool) -> f64 {
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let stmts: Vec<Statement> = (i..(i + batch).min(n))
            .map(|j| Statement::with_params(INSERT, row(j)))
            .collect();
        let out = store.transact(&stmts, None).unwrap();
        assert_eq!(out.version.is_some(), replicated);
        i += batch;
    }
    start.elapsed().as_secs_f64() / n as f64
}

fn http(dir: &std::path::Path, n: i64, batch: i64) -> f64 {
    let schema = dir.join(format!("schema-{batch}.sql"));
    std::fs::write(&schema, SCHEMA).unwrap();
    let text = format!(
        "[db]\npath = {:?}\nschema_paths = [{:?}]\n[api]\naddr = \"127.0.0.1:0\"\n[gossip]\naddr = \"127.0.0.1:0\"\nplaintext = true\n",
        dir.join(format!("http-{batch}.db")),
        schema
    );
    let (config, _) = Config::from_toml_str(&text, std::iter::empty()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let node = verdigris::node::Node::open(config).unwrap();
        let listeners = verdigris::api::bind(&node.config.api.addr).await.unwrap();
        let addr = listeners[0].local_addr().unwrap();
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(verdigris::api::serve(
            verdigris::api::Api::new(node),
            listeners,
            stop_rx,
        ));
        let client = Client::builder(TokioExecutor::new()).build_http();
        let url = format!("http://{addr}/v1/transactions");
        let start = Instant::now();
        let mut i = 0;
        while i < n {
            let stmts: Vec<serde_json::Value> = (i..(i + batch).min(n))
                .map(|j| {
                    serde_json::json!([INSERT, [j, format!("item-{j}"), j % 97, j as f64 * 0.5]])
                })
                .collect();
            let req = hyper::Request::post(&url)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(serde_json::to_vec(&stmts).unwrap())))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            assert!(resp.status().is_success());
            let _ = resp.into_body().collect().await.unwrap();
            i += batch;
        }
        start.elapsed().as_secs_f64() / n as f64
    })
}

/// Seconds per row of local inserts then updates (`batch` rows per transaction), with or
/// without before-images wanted.
fn local_images(dir: &std::path::Path, n: i64, batch: i64, wanted: bool) -> f64 {
    let mut store = Store::open(&dir.join(format!("local-{batch}-{wanted}.db"))).unwrap();
    store.apply_schema(SCHEMA).unwrap();
    store
        .shared()
        .images_wanted
        .store(wanted, std::sync::atomic::Ordering::Relaxed);
    let inserts = timed_inserts(&mut store, n, batch, true);
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let stmts: Vec<Statement> = (i..(i + batch).min(n))
            .map(|j| {
                Statement::with_params(
                    "UPDATE items SET qty = qty + 1, name = ?2 WHERE id = ?1",
                    vec![
                        rusqlite::types::Value::Integer(j),
                        rusqlite::types::Value::Text(format!("u{j}")),
                    ],
                )
            })
            .collect();
        store.transact(&stmts, None).unwrap();
        i += batch;
    }
    (inserts + start.elapsed().as_secs_f64() / n as f64) / 2.0
}

/// Seconds per row merging another node's inserts and updates (100-row versions, 50 versions
/// per apply), with or without before-images wanted.
fn remote_images(dir: &std::path::Path, n: i64, wanted: bool) -> f64 {
    let mut origin = Store::open(&dir.join(format!("origin-{wanted}.db"))).unwrap();
    origin.apply_schema(SCHEMA).unwrap();
    timed_inserts(&mut origin, n, 100, true);
    let mut i = 0;
    while i < n {
        let stmts: Vec<Statement> = (i..(i + 100).min(n))
            .map(|j| {
                Statement::with_params(
                    "UPDATE items SET qty = qty + 1 WHERE id = ?1",
                    vec![rusqlite::types::Value::Integer(j)],
                )
            })
            .collect();
        origin.transact(&stmts, None).unwrap();
        i += 100;
    }
    let sets: Vec<verdigris::store::ChangeSet> = origin
        .changes(origin.actor_id(), 1..=u64::MAX >> 1)
        .unwrap()
        .into_iter()
        .map(|v| verdigris::store::ChangeSet {
            actor: v.actor,
            version: v.version,
            last_seq: v.last_seq,
            ts: v.ts,
            changes: v.changes,
        })
        .collect();
    let mut target = Store::open(&dir.join(format!("target-{wanted}.db"))).unwrap();
    target.apply_schema(SCHEMA).unwrap();
    if wanted {
        let shared = target.shared();
        shared.image_tables.write().unwrap().insert("items".into());
        shared
            .images_wanted
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let start = Instant::now();
    for chunk in sets.chunks(50) {
        target.apply_changesets(chunk).unwrap();
    }
    start.elapsed().as_secs_f64() / (2 * n) as f64
}

fn images(n: i64) {
    let dir = tempfile::tempdir().unwrap();
    println!(
        "before-images for subscriptions: µs/row without / with a subscription that needs them \
         (best of 3 alternating runs; the host's run-to-run noise is larger than the local cost)"
    );
    // (case, off, on) → best µs/row of each.
    let mut best: Vec<(String, f64, f64)> = Vec::new();
    for _ in 0..3 {
        let mut i = 0;
        let mut note = |case: String, off: f64, on: f64| {
            if best.len() <= i {
                best.push((case, f64::MAX, f64::MAX));
            }
            best[i].1 = best[i].1.min(off);
            best[i].2 = best[i].2.min(on);
            i += 1;
        };
        for batch in [1, 100] {
            let rows = if batch == 1 { n / 4 } else { n };
            let off = local_images(dir.path(), rows, batch, false);
            let on = local_images(dir.path(), rows, batch, true);
            note(
                format!("local {batch}-row transactions (insert, update) ×{rows}"),
                off,
                on,
            );
        }
        let off = remote_images(dir.path(), n, false);
        let on = remote_images(dir.path(), n, true);
        note(
            format!("remote merge of {n} inserts and {n} updates"),
            off,
            on,
        );
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let _ = std::fs::remove_file(f.path());
        }
    }
    for (case, off, on) in best {
        println!(
            "  {case}: {:.2} / {:.2} ({:+.1} %)",
            off * 1e6,
            on * 1e6,
            (on / off - 1.0) * 100.0
        );
    }
}

fn main() {
    if std::env::var("VERDIGRIS_BENCH_ONLY").as_deref() == Ok("images") {
        let n: i64 = std::env::var("VERDIGRIS_BENCH_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        images(n);
        return;
    }
    let n: i64 = std::env::var("VERDIGRIS_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    println!("local write throughput, {n} rows of (INTEGER PK, TEXT, INTEGER, REAL)");
    println!(
        "{:<20} {:>11} {:>13} {:>13} {:>12} {:>10} {:>12} {:>10}",
        "transaction",
        "raw µs/row",
        "plain µs/row",
        "store µs/row",
        "http µs/row",
        "store/raw",
        "store/plain",
        "http/raw"
    );
    // VERDIGRIS_BENCH_ONLY=store (100-row) or store1 (1-row) runs only the in-process store
    // path (for profiling).
    let only = std::env::var("VERDIGRIS_BENCH_ONLY").unwrap_or_default();
    if let Some(batch) = match only.as_str() {
        "store" => Some(100),
        "store1" => Some(1),
        _ => None,
    } {
        println!(
            "store {batch}-row µs/row: {:.2}",
            store_tx(dir.path(), n, batch) * 1e6
        );
        return;
    }
    // The last case is sustained load: ten times the rows, long enough for both sides'
    // checkpoints (raw SQLite's inline ones, the store's background checkpointer) to run.
    for (batch, rows) in [(1i64, n / 4), (100, n), (100, n * 10)] {
        let case = dir.path().join(format!("{batch}x{rows}"));
        std::fs::create_dir_all(&case).unwrap();
        let r = raw(&case, rows, batch);
        let p = plain_tx(&case, rows, batch);
        let s = store_tx(&case, rows, batch);
        let h = http(&case, rows, batch);
        println!(
            "{:<20} {:>11.2} {:>13.2} {:>13.2} {:>12.2} {:>9.2}x {:>11.2}x {:>9.2}x",
            format!("{batch}-row ×{rows}"),
            r * 1e6,
            p * 1e6,
            s * 1e6,
            h * 1e6,
            s / r,
            s / p,
            h / r
        );
    }
}
