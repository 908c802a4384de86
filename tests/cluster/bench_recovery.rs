//! Recovery benchmarks on a loopback cluster (ignored by default; figures in
//! docs/benchmarks.md): a burst on a cluster that just started, SIGKILL and restart under
//! load, a healed 2|2 partition. Default sync settings (not the fast test ones).
//!
//! `cargo test --release -p verdigris --test cluster bench_recovery -- --ignored --nocapture --test-threads 1`
//! (`VERDIGRIS_BENCH_NODES`, `VERDIGRIS_BENCH_RUNS` change the burst's size and every run count.)

#![allow(clippy::await_holding_lock)] // the serial lock is held across each scenario on purpose

use crate::support::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A node directory with the default `[perf]` settings.
fn default_dir() -> NodeDir {
    NodeDir {
        perf: String::new(),
        ..NodeDir::new()
    }
}

/// Seconds until every node holds `rows` rows (polled every 20 ms).
async fn until_all_hold(nodes: &[&TestNode], rows: i64, limit: Duration) -> f64 {
    let start = Instant::now();
    loop {
        let mut done = true;
        for n in nodes {
            done &= n.count("items").await == rows;
            if !done {
                break;
            }
        }
        if done {
            return start.elapsed().as_secs_f64();
        }
        assert!(start.elapsed() < limit, "not converged within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn four_rows(t: i64) -> Value {
    let stmt = "INSERT INTO items (id, owner, val, n) VALUES (?1, 'b', 'x', 1), (?1 + 1, 'b', 'x', 2), (?1 + 2, 'b', 'x', 3), (?1 + 3, 'b', 'x', 4)";
    json!([[stmt, [t * 4]]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn bench_recovery_burst_on_a_new_cluster() {
    let _serial = serial().await;
    let n = env("VERDIGRIS_BENCH_NODES", 10);
    let runs = env("VERDIGRIS_BENCH_RUNS", 3);
    let mut figures = Vec::new();
    for run in 0..runs {
        let dirs: Vec<NodeDir> = (0..n).map(|_| default_dir()).collect();
        let first = dirs[0].start(&[]);
        let mut nodes = vec![first];
        for d in &dirs[1..] {
            let seed = nodes[0].gossip;
            nodes.push(d.start(&[seed]));
        }
        // Right after start, as Corrosion's stress test does: 200 transactions of 4 rows to
        // nodes picked in a fixed pseudo-random order.
        for t in 0..200i64 {
            let node = &nodes[(t as usize * 7 + run) % n];
            node.exec(four_rows(t)).await;
        }
        let refs: Vec<&TestNode> = nodes.iter().collect();
        let secs = until_all_hold(&refs, 800, Duration::from_secs(120)).await;
        println!("burst, {n} nodes, run {run}: identical {secs:.2} s after the last write");
        figures.push(secs);
    }
    println!("burst, {n} nodes: {figures:.2?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn bench_recovery_kill9_restart_under_load() {
    let _serial = serial().await;
    let runs = env("VERDIGRIS_BENCH_RUNS", 3);
    for run in 0..runs {
        let ([_da, _db, dc], [a, b, mut c]) = three_nodes().await;
        let (a, b) = (Arc::new(a), Arc::new(b));
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let next_id = Arc::new(AtomicU64::new(0));
        // 4 writers, one-row transactions as fast as they go, on A and B.
        let mut writers = Vec::new();
        for w in 0..4 {
            let node = if w % 2 == 0 { a.clone() } else { b.clone() };
            let (stop, acked, next_id) = (stop.clone(), acked.clone(), next_id.clone());
            writers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let id = next_id.fetch_add(1, Ordering::Relaxed) as i64;
                    let stmt = json!([[
                        "INSERT INTO items (id, owner, val, n) VALUES (?1, 'w', 'x', ?1)",
                        [id]
                    ]]);
                    if node.try_exec(stmt).await {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let port = c.gossip.port();
        c.kill();
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(c);
        let c = dc.start_on(&[a.gossip], port);
        let restarted = Instant::now();
        // C writes too once back.
        let mut c_rows = 0i64;
        while restarted.elapsed() < Duration::from_secs(3) {
            let id = next_id.fetch_add(1, Ordering::Relaxed) as i64;
            c.exec(json!([[
                "INSERT INTO items (id, owner, val, n) VALUES (?1, 'c', 'x', ?1)",
                [id]
            ]]))
            .await;
            c_rows += 1;
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.expect("writer");
        }
        let total = acked.load(Ordering::Relaxed) as i64 + c_rows;
        let secs = until_all_hold(&[&a, &b, &c], total, Duration::from_secs(120)).await;
        println!(
            "kill -9 + restart, run {run}: {total} rows, every node holds all {secs:.2} s after the load stopped"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn bench_recovery_partition_heal() {
    let _serial = serial().await;
    let runs = env("VERDIGRIS_BENCH_RUNS", 4);
    for run in 0..runs {
        let dirs: Vec<NodeDir> = (0..4).map(|_| default_dir()).collect();
        let a = dirs[0].start(&[]);
        let rest: Vec<TestNode> = dirs[1..].iter().map(|d| d.start(&[a.gossip])).collect();
        let nodes = [&a, &rest[0], &rest[1], &rest[2]];
        wait_for_mesh(&nodes).await;
        let addr = |i: usize| nodes[i].gossip.to_string();
        for (i, other) in [(0, [2, 3]), (1, [2, 3]), (2, [0, 1]), (3, [0, 1])] {
            let block = json!({"Cluster": {"Partition": [addr(other[0]), addr(other[1])]}});
            nodes[i].admin(block).await;
        }
        let start = Instant::now();
        let mut t = 0i64;
        while start.elapsed() < Duration::from_secs(6) {
            for n in nodes {
                n.exec(four_rows(t)).await;
                t += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for n in nodes {
            n.admin(json!({"Cluster": "Heal"})).await;
        }
        let secs = until_all_hold(&nodes, t * 4, Duration::from_secs(120)).await;
        println!("2|2 partition for 6 s, run {run}: identical {secs:.2} s after the heal");
    }
}
