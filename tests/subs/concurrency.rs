//! Races between subscribing and writing: many clients creating the same new subscription at
//! once, and subscriptions (keyed, re-run and parameter-family members) created, joined and
//! resumed while a writer commits continuously.
//! No change may be lost or duplicated between a snapshot (or `from` replay) and the live
//! events that follow it.

use crate::client::{rows_json, Sub};
use crate::support::{NodeDir, Proto};
use crate::{both_protocols, SCHEMA};
use serde_json::{json, Value};
use std::collections::BTreeSet;

both_protocols!(
    concurrent_identical_subscribes,
    subscribe_while_writing,
    dropped_listener_leaves_others_alone,
);

async fn concurrent_identical_subscribes(proto: Proto) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    w.write(&json!([
        "INSERT INTO t VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3)"
    ]))
    .await;
    let q = json!("SELECT id, a FROM t WHERE b > 1");
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let api = node.api(proto).with_nodelay();
        let q = q.clone();
        tasks.push(tokio::spawn(async move { Sub::post(&api, &q).await }));
    }
    let mut subs = Vec::new();
    for t in tasks {
        subs.push(t.await.expect("subscriber task"));
    }
    let ids: BTreeSet<&str> = subs.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        1,
        "concurrent identical subscribes must share one subscription"
    );
    for s in &subs {
        assert_eq!(rows_json(&s.rows), rows_json(&subs[0].rows));
        assert_eq!(s.eoq_change_id, 0);
    }
    w.write(&json!(["UPDATE t SET b = 5 WHERE id = 1"])).await;
    for s in &mut subs {
        let c = s.change().await;
        assert_eq!((c.kind.as_str(), c.id), ("insert", 1), "{c:?}");
    }
}

async fn subscribe_while_writing(proto: Proto) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    w.write(&json!([
        "INSERT INTO t VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3)"
    ]))
    .await;
    let base = json!("SELECT id, a, b FROM t");
    let mut first = Sub::post(&node.api(proto).with_nodelay(), &base).await;

    // The writer runs until the subscribing loop is done (bounded).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let w = node.api(proto).with_nodelay();
        let stop = stop.clone();
        tokio::spawn(async move {
            for i in 0..5000u64 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return i;
                }
                let id = i % 40 + 1;
                let stmt = match i % 5 {
                    0 | 1 => json!([
                        "INSERT OR REPLACE INTO t VALUES (?, ?, ?)",
                        [id, format!("v{i}"), i % 17]
                    ]),
                    2 => json!([
                        "UPDATE t SET b = ? WHERE id = ?",
                        [i % 13, (i * 7) % 40 + 1]
                    ]),
                    3 => json!(["UPDATE t SET a = ? WHERE b < 5", [format!("w{i}")]]),
                    _ => json!(["DELETE FROM t WHERE id = ?", [(i * 3) % 40 + 1]]),
                };
                w.write(&json!([stmt])).await;
            }
            5000
        })
    };

    // Keep subscribing (new subscriptions of both maintenance kinds), joining and resuming
    // while the writer runs; `first` keeps reading so it stays current.
    let mut subs: Vec<(Value, Sub)> = Vec::new();
    let mut k = 0;
    while k < 40 {
        k += 1;
        let q = match k % 4 {
            0 => json!(format!("SELECT id, a FROM t WHERE b >= {}", k % 17)),
            1 => json!(format!(
                "SELECT count(*), sum(b) FROM t WHERE b >= {}",
                k % 17
            )),
            // Members of one parameter family, joining it while it is being maintained.
            3 => json!(format!("SELECT id, a FROM t WHERE b = {}", k % 13)),
            _ => base.clone(),
        };
        let s = if k % 4 == 2 && k % 8 == 2 {
            Sub::get(&node.api(proto).with_nodelay(), &first.id).await
        } else {
            Sub::post(&node.api(proto).with_nodelay(), &q).await
        };
        subs.push((q, s));
        for _ in 0..100 {
            if first
                .try_change(std::time::Duration::from_millis(1))
                .await
                .is_none()
            {
                break;
            }
        }
        // A resume from the point `first` has reached must continue seamlessly.
        if k % 5 == 0 {
            let r = Sub::resume_state(&node.api(proto).with_nodelay(), &first).await;
            subs.push((base.clone(), r));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let writes = writer.await.expect("writer task");
    assert!(
        (10..5000).contains(&writes),
        "the subscriptions should have been made while writing ({writes} writes)"
    );
    first.sync(&w, &base).await;
    for (q, s) in &mut subs {
        s.sync(&w, q).await;
        if s.id == first.id {
            // Same subscription: same change ids and row ids once caught up.
            while s.last < first.last {
                s.change().await;
            }
            assert_eq!(s.last, first.last, "{}", s.stream.what);
            assert_eq!(rows_json(&s.rows), rows_json(&first.rows));
        }
    }
    assert!(node.panics().is_empty(), "{:?}", node.panics());
}

/// A listener that goes away (stream dropped mid-flow, on the same client connection as
/// others for h2c) disturbs neither the other listeners nor the subscription, which the same
/// SQL then still reaches.
async fn dropped_listener_leaves_others_alone(proto: Proto) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let w = node.api(proto).with_nodelay();
    let q = json!("SELECT id, a FROM t");
    let shared = node.api(proto).with_nodelay();
    let mut keep = Sub::post(&shared, &q).await;
    let gone = Sub::post(&shared, &q).await;
    let lone = Sub::post(&shared, &json!("SELECT count(*) FROM t")).await;
    for i in 0..20 {
        w.write(&json!([["INSERT INTO t VALUES (?, 'x', 0)", [i]]]))
            .await;
    }
    drop(gone);
    drop(lone);
    for i in 20..60 {
        w.write(&json!([["INSERT INTO t VALUES (?, 'x', 0)", [i]]]))
            .await;
    }
    keep.sync(&w, &q).await;
    assert_eq!(keep.last, 60);
    let again = Sub::post(&shared, &q).await;
    assert_eq!(
        again.id, keep.id,
        "the subscription outlives a departed listener"
    );
    assert_eq!(again.eoq_change_id, 60);
    // The re-run subscription whose only listener left is still maintained. (Its snapshot may
    // trail the keyed one's: subscriptions are maintained independently, and changes not yet
    // applied to it follow as events.)
    let count_sql = json!("SELECT count(*) FROM t");
    let mut count = Sub::post(&node.api(proto).with_nodelay(), &count_sql).await;
    count.sync(&w, &count_sql).await;
    assert_eq!(count.state(), crate::client::multiset(&[vec![json!(60)]]));
    assert!(node.panics().is_empty(), "{:?}", node.panics());
}
