//! Operator-facing subscription settings: the configurable change-log retention and the
//! `verdigris subs list` introspection (plan per subscription).

use crate::client::Sub;
use crate::support::NodeDir;
use crate::SCHEMA;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_is_configurable_and_plans_are_listed() {
    let dir = NodeDir::builder()
        .schema(SCHEMA)
        .db("subscription_log_retention = 5")
        .build();
    let node = dir.start();
    let w = node.http1().with_nodelay();
    let mut s = Sub::post(&node.http1().with_nodelay(), &json!("SELECT id FROM t")).await;
    let mut agg = Sub::post(
        &node.http1().with_nodelay(),
        &json!("SELECT count(*) FROM t"),
    )
    .await;
    for i in 1..=12 {
        w.write(&json!([["INSERT INTO t (id) VALUES (?)", [i]]]))
            .await;
        s.until_id(i).await;
    }
    agg.until_id(1).await;
    // Only the last 5 changes are kept: from=6 is too old, from=7 replays 8..=12.
    let mut old = Sub::resume(&node.http1().with_nodelay(), &s.id, 6).await;
    old.expect_error_end("resubscribe").await;
    let mut r = Sub::resume(&node.http1().with_nodelay(), &s.id, 7).await;
    r.until_id(12).await;
    assert_eq!(r.changes.len(), 5);

    let out = dir.cli(&["subs", "list"]);
    let list: Vec<Value> = serde_json::from_str(out.ok()).expect("subs list prints JSON");
    let plan_of = |id: &str| {
        list.iter()
            .find(|v| v["id"] == id)
            .map(|v| v["plan"].as_str().unwrap_or("").to_string())
    };
    assert!(
        plan_of(&s.id).expect("listed").starts_with("incremental"),
        "{list:?}"
    );
    assert!(
        plan_of(&agg.id).expect("listed").contains("aggregate"),
        "{list:?}"
    );
}
