//! Subscriptions at fleet scale, measured from outside against a real `verdigris` process on
//! 127.0.0.1 (release build), over NDJSON HTTP:
//! - classes: a `machines` table of 10k, 100k and 1M rows, one subscription of every query
//!   class present at once (keyed filter, join, GROUP BY aggregate, count/max, DISTINCT,
//!   IN (subquery), EXISTS (subquery), LEFT JOIN, ORDER BY … LIMIT over an index and over no
//!   index). Each write updates one row so that every class's
//!   result changes by exactly one row; per class, p50/p99 over the writes of the time from
//!   sending the write until that class's event arrives. Also the node's RSS growth when the
//!   GROUP BY subscription is added and its result size (groups).
//! - fleet: 10,000 idle subscriptions `SELECT id, cpu FROM machines WHERE id = ?` with distinct
//!   parameters on a 10k-row table, plus one listened to: p50/p99 of write → its event, and
//!   node RSS per subscription.
//!
//! Run: `cargo bench -p verdigris --bench sub_scale`. `VERDIGRIS_BENCH_ROWS` sets the table
//! sizes (default `10000,100000,1000000`), `VERDIGRIS_BENCH_WRITES` the writes per size
//! (default 100), `VERDIGRIS_BENCH_SUBS` the fleet size (default 10000; 0 skips it).

#[path = "../../tests/support/mod.rs"]
mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{Api, LineStream, Next, NodeDir};

const SCHEMA: &str = "
CREATE TABLE machines (id INTEGER NOT NULL PRIMARY KEY, app_id INTEGER, region TEXT, cpu INTEGER, status TEXT);
CREATE INDEX machines_app ON machines (app_id);
CREATE INDEX machines_cpu ON machines (cpu);
CREATE TABLE apps (id INTEGER NOT NULL PRIMARY KEY, name TEXT);
";

const CLASSES: &[(&str, &str)] = &[
    ("keyed filter", "SELECT id, cpu FROM machines WHERE app_id = 7"),
    (
        "join",
        "SELECT m.id, m.cpu, a.name FROM machines m JOIN apps a ON a.id = m.app_id WHERE a.name = 'a7'",
    ),
    (
        "GROUP BY",
        "SELECT region, count(*), sum(cpu) FROM machines GROUP BY region",
    ),
    ("count/max", "SELECT count(*), max(cpu) FROM machines"),
    ("DISTINCT", "SELECT DISTINCT status FROM machines"),
    (
        "IN (subquery)",
        "SELECT id, cpu FROM machines WHERE app_id IN (SELECT id FROM apps WHERE name = 'a7')",
    ),
    (
        "EXISTS",
        "SELECT id, cpu FROM machines m WHERE EXISTS (SELECT 1 FROM apps a WHERE a.id = m.app_id AND a.name = 'a7')",
    ),
    (
        "LEFT JOIN",
        "SELECT m.id, m.cpu, a.name FROM machines m LEFT JOIN apps a ON a.id = m.app_id WHERE m.app_id = 7",
    ),
    (
        "ORDER BY LIMIT",
        "SELECT id, cpu FROM machines ORDER BY cpu DESC LIMIT 10",
    ),
    (
        "ORDER BY LIMIT, no index",
        "SELECT id, status FROM machines ORDER BY status DESC, id LIMIT 10",
    ),
];

/// The row every write updates (app 7, so every class sees it).
const TARGET: u64 = 7;
const EVENT_TIMEOUT: Duration = Duration::from_secs(120);

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().expect("comma-separated counts"))
        .collect()
}

async fn fill(api: &Api, rows: usize) {
    // In chunks: one transaction per 100k rows.
    let mut start = 0;
    while start < rows {
        let end = (start + 100_000).min(rows) - 1;
        api.write(&json!([format!(
            "WITH RECURSIVE n(i) AS (SELECT {start} UNION ALL SELECT i + 1 FROM n WHERE i < {end}) \
             INSERT INTO machines SELECT i, i % 100, 'r' || (i % 10), i % 1000, 'ok' FROM n"
        )]))
        .await;
        start = end + 1;
    }
    api.write(&json!([
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 99) \
         INSERT INTO apps SELECT i, 'a' || i FROM n"
    ]))
    .await;
}

/// Opens a subscription and reads its snapshot; returns the stream and its row count.
async fn subscribe(api: &Api, sql: &str) -> (LineStream, usize) {
    let mut s = api.open_post("/v1/subscriptions", &json!(sql)).await;
    assert_eq!(s.status.as_u16(), 200, "{sql}");
    let mut rows = 0;
    loop {
        let ev = s.expect_line(EVENT_TIMEOUT).await;
        if ev.get("row").is_some() {
            rows += 1;
        } else if ev.get("eoq").is_some() {
            return (s, rows);
        }
    }
}

/// The next change event of a stream.
async fn change(s: &mut LineStream) -> Value {
    match s.poll_line(EVENT_TIMEOUT).await {
        Next::Line(v) if v.get("change").is_some() => v,
        other => panic!("{}: expected a change, got {other:?}", s.what),
    }
}

fn classes(rt: &tokio::runtime::Runtime, rows: usize, writes: usize) {
    let dir = NodeDir::builder()
        .schema(SCHEMA)
        .api("max_concurrency = 100000")
        .build();
    let node = dir.start();
    rt.block_on(async {
        let api = node.http1().with_nodelay();
        let t = Instant::now();
        fill(&api, rows).await;
        let filled = t.elapsed();
        let mut streams = Vec::new();
        for (name, sql) in CLASSES {
            let before = node.rss_kib();
            let t = Instant::now();
            let (s, n) = subscribe(&node.http1().with_nodelay(), sql).await;
            let took = t.elapsed();
            let grew = node.rss_kib().saturating_sub(before);
            if *name == "GROUP BY" {
                println!(
                    "  {rows:>8} rows: GROUP BY subscription holds {n} groups; node RSS +{grew} KiB when added (initial query {:.0} ms)",
                    took.as_secs_f64() * 1e3
                );
            }
            streams.push(s);
        }
        let mut lat: Vec<Vec<f64>> = vec![Vec::new(); CLASSES.len()];
        // Event time minus the write's acknowledgement: a lower bound of commit → event (the
        // commit happens between sending the write and its acknowledgement).
        let mut after_ack: Vec<Vec<f64>> = vec![Vec::new(); CLASSES.len()];
        let mut acks = Vec::new();
        for i in 0..writes {
            let t0 = Instant::now();
            api.write(&json!([[
                "UPDATE machines SET cpu = ?, status = ? WHERE id = ?",
                [10_000 + i, format!("s{i}"), TARGET]
            ]]))
            .await;
            acks.push(t0.elapsed().as_secs_f64() * 1e3);
            // Every class changes by one row; read them concurrently.
            let arrivals = futures_util::future::join_all(streams.iter_mut().map(|s| async move {
                change(s).await;
                t0.elapsed().as_secs_f64() * 1e3
            }))
            .await;
            let ack = *acks.last().expect("pushed above");
            for (c, ms) in arrivals.into_iter().enumerate() {
                lat[c].push(ms);
                after_ack[c].push((ms - ack).max(0.0));
            }
        }
        println!(
            "  {rows:>8} rows (filled in {:.1} s), {writes} writes (write acknowledged p50 {:.2} ms, p99 {:.2} ms), write sent → event:",
            filled.as_secs_f64(),
            pct(&mut acks, 0.5),
            pct(&mut acks, 0.99)
        );
        for (c, (name, _)) in CLASSES.iter().enumerate() {
            let p50 = pct(&mut lat[c], 0.5);
            let p99 = pct(&mut lat[c], 0.99);
            let a50 = pct(&mut after_ack[c], 0.5);
            let a99 = pct(&mut after_ack[c], 0.99);
            println!(
                "    {name:<25} p50 {p50:8.2} ms  p99 {p99:8.2} ms   (after the ack: p50 {a50:8.2} ms  p99 {a99:8.2} ms)"
            );
        }
    });
}

fn fleet(rt: &tokio::runtime::Runtime, subs: usize, writes: usize) {
    let dir = NodeDir::builder()
        .schema(SCHEMA)
        .api("max_concurrency = 100000")
        .build();
    let node = dir.start();
    rt.block_on(async {
        let api = node.http1().with_nodelay();
        fill(&api, 10_000.max(subs + 1)).await;
        let before = node.rss_kib();
        let t = Instant::now();
        let per_task = subs.div_ceil(4);
        let tasks: Vec<_> = (0..4)
            .map(|k| {
                let api = node.http1().with_nodelay();
                tokio::spawn(async move {
                    for id in (k * per_task)..((k + 1) * per_task).min(subs) {
                        let sql = format!("SELECT id, cpu FROM machines WHERE id = {}", id + 1);
                        // Subscribe and hang up: the subscription stays, idle.
                        drop(subscribe(&api, &sql).await);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("subscribe task");
        }
        let setup = t.elapsed();
        let grew = node.rss_kib().saturating_sub(before);
        let (mut s, _) = subscribe(&api, "SELECT id, cpu FROM machines WHERE id = 0").await;
        let (mut lat, mut after_ack, mut acks) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..writes {
            let t0 = Instant::now();
            api.write(&json!([["UPDATE machines SET cpu = ? WHERE id = 0", [20_000 + i]]]))
                .await;
            let ack = t0.elapsed().as_secs_f64() * 1e3;
            change(&mut s).await;
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            lat.push(ms);
            acks.push(ack);
            after_ack.push(ms - ack);
        }
        println!(
            "  {subs} live subscriptions (set up in {:.1} s): write → event p50 {:.2} ms, p99 {:.2} ms (write acknowledged p50 {:.2} ms, p99 {:.2} ms; event after the ack p50 {:.2} ms, p99 {:.2} ms); node RSS {:.1} KiB per subscription",
            setup.as_secs_f64(),
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99),
            pct(&mut acks, 0.5),
            pct(&mut acks, 0.99),
            pct(&mut after_ack, 0.5),
            pct(&mut after_ack, 0.99),
            grew as f64 / subs as f64
        );
    });
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let writes = env_list("VERDIGRIS_BENCH_WRITES", "100")[0];
    println!("one subscription of every class present at once:");
    for rows in env_list("VERDIGRIS_BENCH_ROWS", "10000,100000,1000000") {
        classes(&rt, rows, writes);
    }
    let subs = env_list("VERDIGRIS_BENCH_SUBS", "10000")[0];
    if subs > 0 {
        println!("fleet:");
        fleet(&rt, subs, writes.max(200));
    }
}
