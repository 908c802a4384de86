//! `GET /metrics`: refused without the bearer token, parsed with `prometheus-parse`, and the
//! values move after writes, a subscription and replication from a peer.

use crate::node::{eventually, serial, Dir};
use crate::support::Api;
use hyper::StatusCode;
use prometheus_parse::{Sample, Scrape, Value as PValue};
use serde_json::json;
use std::time::Duration;

const TOKEN: &str = "s3cret";

async fn scrape(api: &Api) -> Scrape {
    let r = api.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let ct = r.headers["content-type"].to_str().unwrap();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = r.text();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
}

/// The value of `name` whose labels include every `(key, value)` of `labels`.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x: &&Sample| x.metric == name)
        .find(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            PValue::Counter(v) | PValue::Gauge(v) | PValue::Untyped(v) => *v,
            PValue::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            PValue::Summary(_) => f64::NAN,
        })
}

fn get(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(s, name, labels).unwrap_or_else(|| {
        let names: Vec<&str> = s.samples.iter().map(|x| x.metric.as_str()).collect();
        panic!("no {name} {labels:?} in the scrape; metrics: {names:?}")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_respect_the_token_and_move_with_writes_and_replication() {
    let _serial = serial();
    let auth = format!("[api.authz]\nbearer-token = \"{TOKEN}\"\n");
    let (da, db) = (Dir::new(&auth), Dir::new(&auth));
    let a = da.start(&[], 0);
    let b = db.start(&[a.gossip], 0);
    let (api_a, api_b) = (a.http().with_bearer(TOKEN), b.http().with_bearer(TOKEN));

    // The token is required, like on every other endpoint.
    let denied = a.http().get("/metrics").await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED, "{}", denied.text());

    eventually(30, "A and B to see each other", || async {
        a.alive_members().await == 1 && b.alive_members().await == 1
    })
    .await;
    let before = scrape(&api_a).await;
    assert_eq!(
        get(&before, "verdigris_members", &[("state", "alive")]),
        1.0
    );
    assert_eq!(get(&before, "verdigris_writes_total", &[]), 0.0);
    assert!(get(&before, "verdigris_store_bytes", &[("file", "db")]) > 0.0);
    let b_before = scrape(&api_b).await;

    // A subscription on A with a listener, then 10 single-row writes and one 5-row write.
    let mut sub = api_a
        .open_post("/v1/subscriptions", &json!("SELECT id, n FROM items"))
        .await;
    assert_eq!(sub.status, StatusCode::OK);
    for id in 0..10 {
        api_a
            .write(&json!([[
                "INSERT INTO items (id, n) VALUES (?, ?)",
                [id, id]
            ]]))
            .await
            .expect("a version");
    }
    api_a
        .write(&json!([
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) \
             INSERT INTO items (id, n) SELECT x + 100, x FROM c"
        ]))
        .await
        .expect("a version");
    let mut changes = 0;
    while changes < 15 {
        let line = sub.expect_line(Duration::from_secs(10)).await;
        changes += usize::from(line.get("change").is_some());
    }

    let after = scrape(&api_a).await;
    assert_eq!(get(&after, "verdigris_writes_total", &[]), 11.0);
    assert_eq!(get(&after, "verdigris_rows_written_total", &[]), 15.0);
    let tx = [("route", "/v1/transactions"), ("status", "200")];
    assert_eq!(get(&after, "verdigris_http_requests_total", &tx), 11.0);
    assert_eq!(
        get(
            &after,
            "verdigris_http_request_duration_seconds_count",
            &[("route", "/v1/transactions")]
        ),
        11.0
    );
    assert_eq!(get(&after, "verdigris_subscriptions", &[]), 1.0);
    assert_eq!(get(&after, "verdigris_subscription_listeners", &[]), 1.0);
    assert!(
        get(
            &after,
            "verdigris_subscription_commit_to_event_seconds_count",
            &[]
        ) >= 1.0
    );
    assert!(
        get(
            &after,
            "verdigris_subscription_round_duration_seconds_count",
            &[]
        ) >= 1.0
    );
    assert_eq!(get(&after, "verdigris_watchdog_stalled", &[]), 0.0);
    let out_before = get(
        &before,
        "verdigris_peer_bytes_total",
        &[("kind", "gossip"), ("direction", "out")],
    );
    let out_after = get(
        &after,
        "verdigris_peer_bytes_total",
        &[("kind", "gossip"), ("direction", "out")],
    );
    assert!(
        out_after > out_before,
        "gossip bytes out {out_before} -> {out_after}"
    );

    // B applies A's 11 versions (15 rows) and says so; A's actor has no gaps on B.
    eventually(30, "B to apply A's writes", || async {
        let s = scrape(&api_b).await;
        get(&s, "verdigris_remote_rows_applied_total", &[]) == 15.0
    })
    .await;
    let b_after = scrape(&api_b).await;
    assert_eq!(
        get(&b_after, "verdigris_remote_versions_applied_total", &[]),
        11.0
    );
    assert_eq!(get(&b_after, "verdigris_writes_total", &[]), 0.0);
    assert_eq!(
        get(
            &b_after,
            "verdigris_replication_gaps",
            &[("actor", a.actor.as_str())]
        ),
        0.0
    );
    assert_eq!(
        get(
            &b_after,
            "verdigris_replication_head",
            &[("actor", a.actor.as_str())]
        ),
        11.0
    );
    let inb = |s: &Scrape| {
        get(
            s,
            "verdigris_peer_bytes_total",
            &[("kind", "gossip"), ("direction", "in")],
        )
    };
    assert!(inb(&b_after) > inb(&b_before));
    // Requests for ids and unknown paths are counted under bounded route labels.
    let r = api_a.get("/v1/subscriptions/nope").await;
    assert!(r.status.is_client_error(), "{}", r.status);
    let code = r.status.as_u16().to_string();
    assert_eq!(
        api_a.get("/no/such/path").await.status,
        StatusCode::NOT_FOUND
    );
    let last = scrape(&api_a).await;
    let by_id = [
        ("route", "/v1/subscriptions/:id"),
        ("status", code.as_str()),
    ];
    assert_eq!(get(&last, "verdigris_http_requests_total", &by_id), 1.0);
    let other = [("route", "other"), ("status", "404")];
    assert_eq!(get(&last, "verdigris_http_requests_total", &other), 1.0);
    drop(sub);
}
