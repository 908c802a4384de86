//! Aggregates and `DISTINCT` over one table are maintained incrementally from before-images
//! (`docs/subscriptions.md`): on a real node, under random workloads on several seeds (moves
//! between groups, NULLs, integer and real scores, key changes, multi-statement
//! transactions), under a writer that commits continuously while the subscriptions follow,
//! and across a restart, each client state must equal a fresh run of its query; and the plan
//! reported for each is the incremental one.

use crate::client::{multiset, Sub};
use crate::support::NodeDir;
use crate::SCHEMA;
use serde_json::{json, Value};

pub const AGGREGATES: &[&str] = &[
    "SELECT count(*), sum(score), avg(score), total(score), min(score), max(score), count(team) FROM users",
    "SELECT team, count(*), sum(score), min(name), max(score) FROM users GROUP BY team",
    "SELECT team, avg(score), total(score) FROM users WHERE score > 30 GROUP BY team",
    "SELECT score % 3 AS r, count(*), max(name) FROM users GROUP BY score % 3",
    "SELECT max(score) - min(score), count(*) * 2 FROM users WHERE team IS NOT NULL",
    "SELECT DISTINCT team FROM users",
    "SELECT DISTINCT name, team FROM users WHERE score < 60",
    "SELECT k, count(*), sum(n), max(v), min(n) FROM kv GROUP BY k",
    "SELECT DISTINCT v FROM kv",
    "SELECT team, count(*) FROM users GROUP BY team HAVING count(*) >= 2 AND max(score) > 20",
];

use crate::queries::Rng;

fn score(r: &mut Rng) -> Value {
    match r.below(8) {
        0 => Value::Null,
        // Reals with exact binary fractions: sums do not depend on the order.
        1 => json!(r.below(100) as f64 + 0.25),
        _ => json!(r.below(100)),
    }
}

fn statement(r: &mut Rng) -> Value {
    const NAMES: &[&str] = &["ann", "bob", "cat", "dan", "eve"];
    let uid = r.below(16) + 1;
    let team = if r.below(5) == 0 {
        Value::Null
    } else {
        json!(r.below(4) + 1)
    };
    let name = NAMES[r.below(5) as usize];
    let k = ["x", "y", "z"][r.below(3) as usize];
    match r.below(12) {
        0..=2 => json!([
            "INSERT OR REPLACE INTO users VALUES (?, ?, ?, ?)",
            [uid, name, team, score(r)]
        ]),
        3 | 4 => json!(["UPDATE users SET score = ? WHERE id = ?", [score(r), uid]]),
        5 => json!(["UPDATE users SET team = ? WHERE id = ?", [team, uid]]),
        6 => json!(["DELETE FROM users WHERE id = ?", [uid]]),
        7 => json!([
            "UPDATE OR IGNORE users SET id = ? WHERE id = ?",
            [r.below(16) + 1, uid]
        ]),
        8 => json!(["UPDATE users SET score = score + 1 WHERE team = ?", [team]]),
        9 => json!([
            "INSERT OR REPLACE INTO kv VALUES (?, ?, ?)",
            [k, r.below(4), name]
        ]),
        10 => json!(["DELETE FROM kv WHERE k = ? AND n = ?", [k, r.below(4)]]),
        _ => json!([
            "UPDATE OR REPLACE kv SET n = (n + 1) % 4, v = ? WHERE k = ? AND n = ?",
            [name, k, r.below(4)]
        ]),
    }
}

/// `subscription_image_reruns_total` from `GET /metrics`.
async fn image_reruns(api: &crate::support::Api) -> f64 {
    let text = api.get("/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix("verdigris_subscription_image_reruns_total "))
        .unwrap_or_else(|| panic!("no image rerun counter in:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

/// The plan `verdigris subs list` reports for each subscription.
fn plans(dir: &NodeDir) -> Vec<Value> {
    let out = dir.cli(&["subs", "list"]);
    serde_json::from_str(out.ok()).expect("subs list prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_stay_exact_under_random_workloads() {
    let seeds: Vec<u64> = match std::env::var("SUBS_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(s) => vec![s],
        None => vec![1, 2, 3, 4],
    };
    for seed in seeds {
        let dir = NodeDir::with_schema(SCHEMA);
        let node = dir.start();
        let w = node.http1().with_nodelay();
        let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let initial: Vec<Value> = (0..150).map(|_| statement(&mut r)).collect();
        w.write(&Value::Array(initial)).await;
        let mut subs = Vec::new();
        for q in AGGREGATES {
            let s = Sub::post(&node.http1().with_nodelay(), &json!(q)).await;
            let fresh = w.query(&json!(q)).await.query_out();
            assert_eq!(s.columns, fresh.columns, "column names of {q}");
            assert_eq!(s.state(), multiset(&fresh.ok_rows()), "initial rows of {q}");
            subs.push(s);
        }
        for p in plans(&dir) {
            let plan = p["plan"].as_str().unwrap_or_default();
            assert!(plan.starts_with("incremental ("), "{p}");
        }
        for _ in 0..15 {
            for _ in 0..3 {
                let n = r.below(4) + 1;
                let stmts: Vec<Value> = (0..n).map(|_| statement(&mut r)).collect();
                w.write(&Value::Array(stmts)).await;
            }
            for (s, q) in subs.iter_mut().zip(AGGREGATES) {
                s.sync(&w, &json!(q)).await;
            }
        }
        let total: u64 = subs.iter().map(|s| s.last).sum();
        assert!(total > 40, "seed {seed}: too few changes ({total})");
        // Every round applied before-images: none had to re-run its query.
        assert_eq!(image_reruns(&w).await, 0.0, "seed {seed}");
        assert!(node.panics().is_empty(), "{:?}", node.panics());
    }
}

/// Rounds read snapshots while the writer commits: each must take exactly the commits its
/// snapshot holds (a commit counted twice or missed would never converge back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_stay_exact_while_a_writer_commits_continuously() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.http1().with_nodelay();
    let mut subs = Vec::new();
    for q in AGGREGATES {
        subs.push(Sub::post(&node.http1().with_nodelay(), &json!(q)).await);
    }
    let writer = {
        let w = node.http1().with_nodelay();
        tokio::spawn(async move {
            let mut r = Rng(0x5eed);
            for _ in 0..400 {
                w.write(&json!([statement(&mut r)])).await;
            }
        })
    };
    // Follow meanwhile, so rounds interleave with commits.
    let mut seen = 0;
    while !writer.is_finished() {
        if let Some(s) = subs.get_mut(seen % AGGREGATES.len()) {
            let _ = s.try_change(std::time::Duration::from_millis(20)).await;
        }
        seen += 1;
    }
    writer.await.expect("writer");
    for (s, q) in subs.iter_mut().zip(AGGREGATES) {
        s.sync(&w, &json!(q)).await;
    }
    assert!(node.panics().is_empty(), "{:?}", node.panics());
}

/// After a restart the state is rebuilt once (the groups' aggregate state is not stored) and
/// the subscription resumes from its change id, then keeps following exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_resume_after_a_restart() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.http1().with_nodelay();
    let mut r = Rng(77);
    let initial: Vec<Value> = (0..30).map(|_| statement(&mut r)).collect();
    w.write(&Value::Array(initial)).await;
    let q = json!(AGGREGATES[1]);
    let mut s = Sub::post(&node.http1().with_nodelay(), &q).await;
    w.write(&json!([
        "INSERT OR REPLACE INTO users VALUES (1, 'ann', 1, 1000)"
    ]))
    .await;
    s.sync(&w, &q).await;
    assert!(s.last > 0, "the write changed the result");
    let status = node.stop();
    assert!(status.success(), "graceful stop: {status}");
    let node = dir.start();
    let w = node.http1().with_nodelay();
    let mut s2 = Sub::resume_state(&node.http1().with_nodelay(), &s).await;
    for _ in 0..10 {
        w.write(&json!([statement(&mut r), statement(&mut r)]))
            .await;
    }
    s2.sync(&w, &q).await;
    assert!(node.panics().is_empty(), "{:?}", node.panics());
}

/// A round that fails (its persist step, a real SQLite error) publishes nothing; the retry
/// re-runs the query once and publishes the missed changes with contiguous ids; later rounds
/// apply before-images again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_round_is_retried_and_later_rounds_use_before_images_again() {
    use crate::failure::{await_failures, exec, subs_db, FAIL, HEAL};
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.http1().with_nodelay();
    let q = json!(AGGREGATES[1]);
    let mut s = Sub::post(&node.http1().with_nodelay(), &q).await;
    w.write(&json!([
        "INSERT INTO users VALUES (1, 'ann', 1, 10), (2, 'bob', 2, 20)"
    ]))
    .await;
    s.sync(&w, &q).await;
    let before = s.last;
    exec(&subs_db(dir.path()), FAIL);
    w.write(&json!(["UPDATE users SET team = 2 WHERE id = 1"]))
        .await;
    await_failures(&node, 1).await;
    w.write(&json!(["INSERT INTO users VALUES (3, 'cat', 3, 30)"]))
        .await;
    assert!(
        s.try_change(std::time::Duration::from_millis(300))
            .await
            .is_none(),
        "nothing is published while rounds fail"
    );
    exec(&subs_db(dir.path()), HEAL);
    s.sync(&w, &q).await;
    assert!(s.last > before, "the retry published the missed changes");
    let reruns = image_reruns(&w).await;
    assert!(reruns >= 1.0, "the retry re-ran the query");
    for i in 0..5 {
        w.write(&json!([[
            "UPDATE users SET score = ? WHERE id = 2",
            [100 + i]
        ]]))
        .await;
        s.sync(&w, &q).await;
    }
    assert_eq!(
        image_reruns(&w).await,
        reruns,
        "later rounds apply before-images"
    );
}

/// `ORDER BY … LIMIT` over one table is kept by sliding its window: under random workloads
/// (ties on the sort key included, tables larger than the window) it stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_k_reruns_only_when_its_window_is_reached_and_stays_exact() {
    const TOP: &[&str] = &[
        "SELECT id, name, score FROM users ORDER BY score DESC LIMIT 3",
        "SELECT id, score FROM users WHERE team IS NOT NULL ORDER BY score, id LIMIT 2 OFFSET 1",
        "SELECT k, n, v FROM kv ORDER BY v DESC NULLS FIRST, k LIMIT 2",
    ];
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.http1().with_nodelay();
    let mut r = Rng(4242);
    let initial: Vec<Value> = (0..20).map(|_| statement(&mut r)).collect();
    w.write(&Value::Array(initial)).await;
    // Rows the workload never touches, so that the tables are larger than the windows and
    // the workload's rows move in and out of them.
    let still: Vec<Value> = (100..160)
        .map(|id| {
            json!([
                "INSERT INTO users VALUES (?, 'still', ?, ?)",
                [id, id % 4 + 1, score(&mut r)]
            ])
        })
        .collect();
    w.write(&Value::Array(still)).await;
    let mut subs = Vec::new();
    for q in TOP {
        subs.push(Sub::post(&node.http1().with_nodelay(), &json!(q)).await);
    }
    for p in plans(&dir) {
        let plan = p["plan"].as_str().unwrap_or_default();
        assert!(plan.contains("ORDER BY … LIMIT window"), "{p}");
    }
    for _ in 0..40 {
        let n = r.below(3) + 1;
        let stmts: Vec<Value> = (0..n).map(|_| statement(&mut r)).collect();
        w.write(&Value::Array(stmts)).await;
        for (s, q) in subs.iter_mut().zip(TOP) {
            s.sync(&w, &json!(q)).await;
        }
    }
    assert!(node.panics().is_empty(), "{:?}", node.panics());
}
