//! Subscriptions survive the node: after a graceful restart (SIGTERM) and after a crash
//! (SIGKILL), `GET /v1/subscriptions/{id}?from=N` yields exactly the changes after N with
//! contiguous ids, row ids are kept, and the same SQL still maps to the same subscription.
//! The change log keeps the last 10,000 changes: older `from` values get a "resubscribe"
//! error in the stream.

use crate::client::{parse_change, rows_json, Sub, EVENT_TIMEOUT};
use crate::support::{Next, NodeDir, Proto, BOTH};
use crate::{both_protocols, SCHEMA};
use serde_json::{json, Value};

both_protocols!(
    restart_resume,
    crash_resume,
    restart_keeps_every_subscription
);

#[derive(Clone, Copy, PartialEq)]
enum Down {
    Graceful,
    Crash,
}

async fn restart_resume(proto: Proto) {
    survive(proto, Down::Graceful).await
}

async fn crash_resume(proto: Proto) {
    survive(proto, Down::Crash).await
}

async fn survive(proto: Proto, how: Down) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    w.write(&json!(["INSERT INTO t VALUES (1, 'a', 1), (2, 'b', 2)"]))
        .await;
    let keyed = json!("SELECT id, a FROM t");
    let agg = json!("SELECT count(*), max(a) FROM t");
    let mut a = Sub::post(&node.api(proto).with_nodelay(), &keyed).await;
    let mut b = Sub::post(&node.api(proto).with_nodelay(), &agg).await;
    // Two members of one parameter family: restored into their family.
    let fam = json!("SELECT id, a FROM t WHERE b = 2");
    let sib = json!("SELECT id, a FROM t WHERE b = 3");
    let mut f = Sub::post(&node.api(proto).with_nodelay(), &fam).await;
    let mut g = Sub::post(&node.api(proto).with_nodelay(), &sib).await;
    w.write(&json!(["INSERT INTO t VALUES (3, 'c', 3)"])).await;
    w.write(&json!(["UPDATE t SET a = 'bb' WHERE id = 2"]))
        .await;
    a.sync(&w, &keyed).await;
    b.sync(&w, &agg).await;
    f.sync(&w, &fam).await;
    g.sync(&w, &sib).await;
    assert_eq!(
        (f.last, g.last),
        (1, 1),
        "{:?} / {:?}",
        f.changes,
        g.changes
    );
    assert_eq!(
        (a.last, b.last),
        (2, 1),
        "{:?} / {:?}",
        a.changes,
        b.changes
    );

    // A write acknowledged just before going down must not be lost for the subscription
    // (processed before, or caught up at restart); the listeners may or may not see it.
    w.write(&json!(["INSERT INTO t VALUES (4, 'd', 4)"])).await;
    match how {
        Down::Graceful => {
            let status = node.stop();
            assert!(status.success(), "graceful stop exit status: {status}");
            // Open streams end with the node (cleanly or with a transport error).
            for s in [&mut a, &mut b] {
                loop {
                    match s.stream.poll_line(EVENT_TIMEOUT).await {
                        Next::End | Next::Failed(_) => break,
                        Next::Line(v) => s.apply(&parse_change(&v)),
                        Next::Timeout => panic!("stream still open after the node stopped"),
                    }
                }
            }
        }
        Down::Crash => {
            let _ = node.kill();
        }
    }
    let (a_before, b_before) = (a.last, b.last);

    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    w.write(&json!(["INSERT INTO t VALUES (5, 'e', 5)"])).await;
    w.write(&json!([
        "UPDATE t SET a = 'cc' WHERE id = 3",
        "DELETE FROM t WHERE id = 1"
    ]))
    .await;

    let mut ra = Sub::resume_state(&node.api(proto).with_nodelay(), &a).await;
    let mut rb = Sub::resume_state(&node.api(proto).with_nodelay(), &b).await;
    ra.sync(&w, &keyed).await;
    rb.sync(&w, &agg).await;
    let mut rf = Sub::resume_state(&node.api(proto).with_nodelay(), &f).await;
    let mut rg = Sub::resume_state(&node.api(proto).with_nodelay(), &g).await;
    rf.sync(&w, &fam).await;
    rg.sync(&w, &sib).await;
    assert_eq!(
        ra.last, 6,
        "2 changes before going down, 1 around it, 3 after the restart: {:?}",
        ra.changes
    );
    assert_eq!(
        ra.changes[0].id,
        a_before + 1,
        "resume starts right after `from`"
    );
    assert!(rb.changes.is_empty() || rb.changes[0].id == b_before + 1);
    assert!(
        rb.changes.iter().all(|c| c.kind == "update"),
        "the single aggregate row keeps its row id across restarts: {:?}",
        rb.changes
    );

    // Live changes continue on the resumed streams.
    w.write(&json!(["UPDATE t SET a = 'z' WHERE id = 2"])).await;
    let c = rf.change().await;
    assert_eq!(
        (c.kind.as_str(), c.cells),
        ("update", vec![json!(2), json!("z")]),
        "a restored family member keeps following its rows"
    );
    rg.sync(&w, &sib).await;
    let c = ra.change().await;
    assert_eq!(
        (c.kind.as_str(), c.cells),
        ("update", vec![json!(2), json!("z")])
    );
    rb.change().await;

    // Same subscription (id, row ids) for a new client after the restart.
    let j = Sub::post(
        &node.api(proto).with_nodelay(),
        &json!("SELECT id, a FROM t"),
    )
    .await;
    assert_eq!(
        j.id, a.id,
        "the restored subscription keeps its id and dedupe key"
    );
    assert_eq!(rows_json(&j.rows), rows_json(&ra.rows));
    assert_eq!(j.eoq_change_id, ra.last);
    assert!(node.panics().is_empty(), "{:?}", node.panics());
}

/// `rows` single-row inserts `first..first+n` as one statement.
fn insert_range(first: u64, n: u64) -> Value {
    let values: Vec<String> = (first..first + n)
        .map(|i| format!("({i}, 'r', {i})"))
        .collect();
    json!([format!("INSERT INTO t VALUES {}", values.join(","))])
}

/// > 10,000 changes: `from` older than the retained log → in-stream "resubscribe" error;
/// the oldest retained `from` still replays everything after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_log_asks_to_resubscribe() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.h2c().with_nodelay();
    let q = json!("SELECT id FROM t");
    let mut s = Sub::post(&node.h2c().with_nodelay(), &q).await;
    const TOTAL: u64 = 10_100;
    for chunk in 0..5 {
        w.write(&insert_range(chunk * 2020 + 1, 2020)).await;
    }
    s.until_id(TOTAL).await;
    assert_eq!(s.rows.len(), TOTAL as usize);
    assert!(s.changes.iter().all(|c| c.kind == "insert"));

    let oldest_kept = TOTAL - 10_000;
    for proto in BOTH {
        let api = node.api(proto).with_nodelay();
        for from in [1, oldest_kept - 1] {
            let mut r = Sub::resume(&api, &s.id, from).await;
            r.expect_error_end("resubscribe").await;
        }
        let mut r = Sub::resume(&api, &s.id, oldest_kept).await;
        r.until_id(TOTAL).await;
        assert_eq!(r.changes.len(), 10_000);
        assert_eq!(r.changes[..], s.changes[oldest_kept as usize..]);
    }
    // A fresh join still works and sees everything.
    let j = Sub::get(&node.http1().with_nodelay(), &s.id).await;
    assert_eq!(j.eoq_change_id, TOTAL);
    assert_eq!(rows_json(&j.rows), rows_json(&s.rows));
}

/// Every query shape (and parameterized statements) maps to the same restored subscription
/// after a restart, with the same row ids and change id, and keeps being maintained.
async fn restart_keeps_every_subscription(proto: Proto) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    w.write(&json!([
        "INSERT INTO teams VALUES (1, 'red'), (2, 'blue'), (3, 'rose')",
        "INSERT INTO users VALUES (1, 'ann', 1, 10), (2, 'bob', 2, 60), (3, 'cat', NULL, 30), (4, 'dan', 1, 45)"
    ]))
    .await;
    let mut stmts: Vec<Value> = crate::queries::QUERIES.iter().map(|q| json!(q)).collect();
    stmts.push(json!([
        "SELECT id, name FROM users WHERE score > ? AND name <> ?",
        [20, "it's"]
    ]));
    stmts.push(json!(["SELECT count(*) FROM users WHERE team = :t", {":t": 1}]));
    let mut before = Vec::new();
    for st in &stmts {
        let mut s = Sub::post(&node.api(proto).with_nodelay(), st).await;
        w.write(&json!([[
            "UPDATE users SET score = score + 1 WHERE id = ?",
            [before.len() % 4 + 1]
        ]]))
        .await;
        s.sync(&w, st).await;
        before.push(s);
    }
    // Let every subscription catch up with the last write before stopping.
    for (s, st) in before.iter_mut().zip(&stmts) {
        s.sync(&w, st).await;
    }
    drop(w);
    let status = node.stop();
    assert!(status.success(), "graceful stop: {status}");

    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    let mut after = Vec::new();
    for (st, b) in stmts.iter().zip(&before) {
        let a = Sub::post(&node.api(proto).with_nodelay(), st).await;
        assert_eq!(a.id, b.id, "{st} maps to its restored subscription");
        assert_eq!(a.hash, b.hash, "{st}");
        assert_eq!(
            rows_json(&a.rows),
            rows_json(&b.rows),
            "{st}: restored rows"
        );
        assert_eq!(a.eoq_change_id, b.last, "{st}: restored change id");
        after.push(a);
    }
    w.write(&json!([
        "UPDATE users SET team = 3, score = 99 WHERE id = 1",
        "DELETE FROM teams WHERE id = 2",
        "INSERT INTO users VALUES (5, 'eve', 2, 70)"
    ]))
    .await;
    for (a, st) in after.iter_mut().zip(&stmts) {
        a.sync(&w, st).await;
    }
    assert!(node.panics().is_empty(), "{:?}", node.panics());
}
