//! A subscription's cost is paid by that subscription: a subscribe whose initial query takes
//! seconds, and a re-run subscription whose every round takes seconds, delay no other
//! subscription's events and no `/v1/updates` call.
//!
//! The slow query reads `teams` and counts a recursive CTE of `n` rows; `n` is calibrated on
//! the node under test (from a small run through `/v1/queries`) to take the time wanted.

use crate::client::Sub;
use crate::support::{Api, Node, NodeDir, Proto};
use crate::SCHEMA;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A fast event must arrive within this, whatever the slow subscription is doing.
const FAST: Duration = Duration::from_millis(1500);

fn slow_sql(n: u64) -> String {
    format!(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) \
         SELECT count(*) FROM teams WHERE id > (SELECT count(*) - {n} FROM c)"
    )
}

/// The `n` for which [`slow_sql`] takes about `want` on this node.
async fn calibrate(api: &Api, want: Duration) -> u64 {
    let n = 300_000;
    let t = Instant::now();
    api.rows(&json!(slow_sql(n))).await;
    let per_row = t.elapsed().as_secs_f64() / n as f64;
    (want.as_secs_f64() / per_row) as u64
}

async fn fast_subs(node: &Node) -> (Api, Sub, Sub, Value, Value) {
    let w = node.api(Proto::Http1).with_nodelay();
    w.write(&json!(["INSERT INTO t VALUES (1, 'a', 1)"])).await;
    let keyed = json!("SELECT id, a FROM t WHERE id = 1");
    let join = json!("SELECT t.id, u.name FROM t JOIN users u ON u.id = t.b");
    let k = Sub::post(&node.api(Proto::Http1).with_nodelay(), &keyed).await;
    let j = Sub::post(&node.api(Proto::Http1).with_nodelay(), &join).await;
    (w, k, j, keyed, join)
}

/// Writes that change both fast subscriptions; each event must come within [`FAST`].
async fn fast_events_flow(w: &Api, k: &mut Sub, j: &mut Sub, round: usize) {
    let t = Instant::now();
    w.write(&json!([
        ["UPDATE t SET a = ? WHERE id = 1", [format!("v{round}")]],
        [
            "INSERT OR REPLACE INTO users VALUES (1, ?, 0, 0)",
            [format!("n{round}")]
        ]
    ]))
    .await;
    let ck = k.try_change(FAST).await;
    let cj = j.try_change(FAST).await;
    assert!(
        ck.is_some() && cj.is_some(),
        "round {round}: a fast subscription was delayed ({:?} since the write)",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_initial_query_delays_no_other_subscription() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let (w, mut k, mut j, keyed, join) = fast_subs(&node).await;
    w.write(&json!(["INSERT INTO teams VALUES (1, 'x')"])).await;
    w.write(&json!(["INSERT INTO users VALUES (1, 'n', 0, 0)"]))
        .await;
    k.sync(&w, &keyed).await;
    j.sync(&w, &join).await;
    let n = calibrate(&w, Duration::from_secs(5)).await;

    let slow_api = node.api(Proto::Http1).with_nodelay();
    let slow_stmt = json!(slow_sql(n));
    let started = Instant::now();
    let slow = tokio::spawn(async move { Sub::post(&slow_api, &slow_stmt).await });
    let updates = node.api(Proto::Http1).with_nodelay();
    let mut round = 0;
    // Events keep flowing while the slow subscribe is still running its initial query.
    while !slow.is_finished() && round < 10 {
        round += 1;
        fast_events_flow(&w, &mut k, &mut j, round).await;
        // `/v1/updates` answers too (its handler takes no lock a subscribe holds).
        let t = Instant::now();
        let mut u = updates.open_post("/v1/updates/kv", &json!(null)).await;
        assert_eq!(u.status.as_u16(), 200);
        assert!(t.elapsed() < FAST, "/v1/updates waited {:?}", t.elapsed());
        w.write(&json!([[
            "INSERT OR REPLACE INTO kv VALUES ('k', 1, ?)",
            [format!("{round}")]
        ]]))
        .await;
        let ev = u.expect_line(FAST).await;
        assert_eq!(ev["notify"][0], json!("update"), "{ev}");
    }
    assert!(
        round >= 2,
        "the slow subscribe finished after {:?}: too fast to test anything",
        started.elapsed()
    );
    let slow = slow.await.expect("slow subscribe task");
    assert_eq!(
        slow.rows.len(),
        1,
        "the slow subscription still gets its result"
    );
    k.sync(&w, &keyed).await;
    j.sync(&w, &join).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_rerun_delays_no_keyed_subscription() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let (w, mut k, mut j, _, _) = fast_subs(&node).await;
    w.write(&json!(["INSERT INTO teams VALUES (1, 'x')"])).await;
    let n = calibrate(&w, Duration::from_secs(2)).await;
    let slow_stmt = json!(slow_sql(n));
    let mut slow = Sub::post(&node.api(Proto::Http1).with_nodelay(), &slow_stmt).await;
    assert_eq!(slow.rows.values().next(), Some(&vec![json!(1)]));

    // Each write to teams costs the slow subscription a multi-second re-run.
    w.write(&json!(["INSERT INTO teams VALUES (2, 'y')"])).await;
    let mut round = 0;
    let mut slow_change = None;
    while slow_change.is_none() && round < 20 {
        round += 1;
        fast_events_flow(&w, &mut k, &mut j, round).await;
        slow_change = slow.try_change(Duration::ZERO).await;
    }
    assert!(round >= 2, "the re-run was too fast to test anything");
    let c = match slow_change {
        Some(c) => c,
        None => slow.change().await,
    };
    assert_eq!(c.cells, vec![json!(2)]);
}
