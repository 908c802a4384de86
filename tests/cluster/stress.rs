//! Localhost stress in the spirit of Corrosion's: many nodes, hundreds of multi-row
//! transactions sent to random nodes, then every node must hold the same rows within a bound.
//! `VERDIGRIS_STRESS_NODES` (default 10) and `VERDIGRIS_STRESS_TXS` (default 300) scale it.

use crate::support::*;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_nodes_converge_under_random_multi_row_writes() {
    let _serial = serial().await;
    let n = env_or("VERDIGRIS_STRESS_NODES", 10);
    let txs = env_or("VERDIGRIS_STRESS_TXS", 300);
    let seed: u64 = rand::random();
    eprintln!("stress seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dirs: Vec<NodeDir> = (0..n).map(|_| NodeDir::new()).collect();
    let mut nodes = vec![dirs[0].start(&[])];
    for d in &dirs[1..] {
        // Each node knows one earlier node: membership spreads by gossip.
        let seed_node = &nodes[rng.random_range(0..nodes.len())];
        let gossip = seed_node.gossip;
        nodes.push(d.start(&[gossip]));
    }
    let refs: Vec<&TestNode> = nodes.iter().collect();
    wait_for_mesh(&refs).await;
    let mut expected_rows = std::collections::BTreeSet::new();
    for t in 0..txs {
        let node = &nodes[rng.random_range(0..n)];
        let rows = rng.random_range(2..=10);
        let mut stmts = Vec::new();
        for _ in 0..rows {
            // A shared key space, so nodes overwrite each other's rows concurrently.
            let id: i64 = rng.random_range(0..2000);
            expected_rows.insert(id);
            stmts.push(json!([
                "INSERT INTO items (id, owner, val, n) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, val = excluded.val, n = items.n + 1",
                [id, format!("tx{t}"), format!("v{t}"), t]
            ]));
        }
        node.exec(json!(stmts)).await;
    }
    let rows = wait_converged(
        &refs,
        "SELECT id, owner, val, n FROM items ORDER BY id",
        120,
    )
    .await;
    assert_eq!(rows.len(), expected_rows.len(), "seed {seed}");
}
