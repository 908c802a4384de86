//! `GET /v1/health` (figures of an idle single node, threshold parameters, failure status)
//! and `POST /v1/table_stats` (row totals, invalid table names), over HTTP/1.1 and h2c.

use crate::support::{NodeDir, BOTH};
use serde_json::json;

const SCHEMA: &str = "
CREATE TABLE a (id INTEGER NOT NULL PRIMARY KEY, v TEXT);
CREATE TABLE b (k TEXT NOT NULL PRIMARY KEY, v INTEGER);
";

#[tokio::test]
async fn health_reports_idle_single_node_as_healthy() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let want = json!({"response": {"gaps": 0, "members": 1, "p99_lag": 0.0, "queue_size": 0}});
    for proto in BOTH {
        let api = node.api(proto);
        let r = api.get("/v1/health").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), want);
        // Generous thresholds: still healthy.
        for q in [
            "gaps=0",
            "p99_lag=0.5",
            "max_queue=0",
            "gaps=0&p99_lag=1.0&max_queue=10&queue_size=5",
            "failure_status=500",
        ] {
            let r = api.get(&format!("/v1/health?{q}")).await;
            assert_eq!(r.status, 200, "{q}: {}", r.text());
            assert_eq!(r.json(), want, "{q}");
        }
        // After writes the node is still healthy (local writes are not remote lag).
        api.tx_ok(&json!(["INSERT OR REPLACE INTO a (id, v) VALUES (1, 'x')"]))
            .await;
        let r = api.get("/v1/health?p99_lag=0").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[tokio::test]
async fn health_thresholds_select_failure_status() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    for proto in BOTH {
        let api = node.api(proto);
        // gaps (0) > -1 → unhealthy, with the default 503 or the requested status.
        let r = api.get("/v1/health?gaps=-1").await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(
            r.json()["response"]["gaps"],
            json!(0),
            "figures are still reported"
        );
        let r = api.get("/v1/health?gaps=-1&failure_status=500").await;
        assert_eq!(r.status, 500, "{}", r.text());
        let r = api.get("/v1/health?gaps=-1&failure_status=299").await;
        assert_eq!(r.status, 299, "{}", r.text());
        // p99_lag below zero is exceeded unless queue_size says the queue is small enough.
        let r = api.get("/v1/health?p99_lag=-1").await;
        assert_eq!(r.status, 503, "{}", r.text());
        let r = api.get("/v1/health?p99_lag=-1&queue_size=0").await;
        assert_eq!(r.status, 200, "queue_size=0 is not exceeded: {}", r.text());
        // Malformed parameters name themselves.
        for (q, name) in [
            ("gaps=abc", "gaps"),
            ("p99_lag=fast", "p99_lag"),
            ("max_queue=-1", "max_queue"),
            ("failure_status=abc", "failure_status"),
        ] {
            let r = api.get(&format!("/v1/health?{q}")).await;
            r.expect_error(400, &[name]);
        }
    }
}

#[tokio::test]
async fn table_stats_sums_rows_and_lists_invalid_tables() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let api = node.http1();
    let mut stmts = Vec::new();
    for i in 0..7 {
        stmts.push(json!(["INSERT INTO a (id, v) VALUES (?, 'x')", [i]]));
    }
    for i in 0..5 {
        stmts.push(json!([
            "INSERT INTO b (k, v) VALUES (?, 1)",
            [format!("k{i}")]
        ]));
    }
    stmts.push(json!("CREATE TABLE scratch (x)"));
    stmts.push(json!("INSERT INTO scratch VALUES (1), (2)"));
    api.tx_ok(&serde_json::Value::Array(stmts)).await;
    for proto in BOTH {
        let api = node.api(proto);
        for (tables, total, invalid) in [
            (json!(["a", "zz"]), 7, json!(["zz"])),
            (json!(["a", "b"]), 12, json!([])),
            (json!(["b", "nope", "a", "zz"]), 12, json!(["nope", "zz"])),
            (json!(["scratch"]), 2, json!([])),
            (json!([]), 0, json!([])),
            (json!(["zz"]), 0, json!(["zz"])),
        ] {
            let r = api
                .post("/v1/table_stats", &json!({ "tables": tables }))
                .await;
            assert_eq!(r.status, 200, "{tables}: {}", r.text());
            assert_eq!(
                r.json(),
                json!({"total_row_count": total, "invalid_tables": invalid}),
                "{tables}"
            );
        }
    }
}
