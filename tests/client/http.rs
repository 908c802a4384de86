//! Transactions and queries over HTTP: typed rows, errors, failover, auth.

use crate::support::NodeDir;
use crate::{builder, client, dead_addr, SCHEMA};
use futures_util::StreamExt;
use std::time::{Duration, Instant};
use verdigris_client::{Error, HttpVersion, QueryEvent, SqliteValue, Statement};

#[derive(serde::Deserialize, Debug, PartialEq)]
struct Machine {
    id: String,
    app: String,
    address: Option<String>,
}

async fn execute_and_query(version: HttpVersion) {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let c = builder([node.addr()])
        .http_version(version)
        .build()
        .unwrap();
    let r = c
        .execute(&[
            Statement::with_params(
                "INSERT INTO machines (id, app, address, state) VALUES (?, ?, ?, 'started')",
                ["m1", "web", "10.0.0.1"],
            ),
            Statement::with_named_params(
                "INSERT INTO machines (id, app, address, state) VALUES (:id, :app, NULL, 'stopped')",
                [(":id", "m2"), (":app", "db")],
            ),
        ])
        .await
        .unwrap();
    assert_eq!(r.results.len(), 2);
    assert!(r.version.is_some());
    // A no-op write creates no version.
    let r = c
        .execute(&["UPDATE machines SET app = 'web' WHERE id = 'm1'".into()])
        .await
        .unwrap();
    assert_eq!(r.version, None);

    let ms: Vec<Machine> = c
        .query_as("SELECT id, app, address FROM machines ORDER BY id")
        .await
        .unwrap();
    assert_eq!(
        ms,
        vec![
            Machine {
                id: "m1".into(),
                app: "web".into(),
                address: Some("10.0.0.1".into())
            },
            Machine {
                id: "m2".into(),
                app: "db".into(),
                address: None
            },
        ]
    );
    let pairs: Vec<(String, i64)> = c
        .query_as(Statement::with_params(
            "SELECT id, healthy FROM machines WHERE app = ?",
            ["db"],
        ))
        .await
        .unwrap();
    assert_eq!(pairs, vec![("m2".to_string(), 1)]);
    let (cols, rows) = c
        .query_rows("SELECT count(*) AS n, x'00ff' AS b FROM machines")
        .await
        .unwrap();
    assert_eq!(cols, ["n", "b"]);
    assert_eq!(
        rows,
        vec![vec![
            SqliteValue::Integer(2),
            SqliteValue::Blob(vec![0, 255])
        ]]
    );
    let evs: Vec<QueryEvent> = c
        .query("SELECT id FROM machines ORDER BY id")
        .await
        .unwrap()
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert!(matches!(&evs[0], QueryEvent::Columns(c) if c == &["id"]));
    assert_eq!(evs[1], QueryEvent::Row(1, vec!["m1".into()]));
    assert!(matches!(evs[3], QueryEvent::EndOfQuery { .. }));
    assert_eq!(evs.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_and_query_http1() {
    execute_and_query(HttpVersion::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_and_query_h2c() {
    execute_and_query(HttpVersion::H2c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_returned_at_once() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    // A dead second node: a retried 4xx would fail over to it and end in `Exhausted`.
    let c = client([node.addr(), dead_addr()]);
    let start = Instant::now();
    let e = c
        .execute(&["INSERT INTO nope VALUES (1)".into()])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Http { status: 400, message, .. } if message.contains("nope")),
        "{e}"
    );
    assert!(!e.is_retryable());
    let e = c.query("SELECT * FROM nope").await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    let e = c.query_as::<(i64, i64)>("SELECT 1").await.unwrap_err();
    assert!(
        matches!(e, Error::Decode { .. }),
        "a row that does not fit the type: {e}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(c.current_node().to_string(), node.addr().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_over_past_a_dead_node() {
    let dir = NodeDir::with_schema(SCHEMA);
    let node = dir.start();
    let c = client([dead_addr(), node.addr()]);
    let r = c
        .execute(&["INSERT INTO t VALUES (1, 'a', 1)".into()])
        .await
        .unwrap();
    assert!(r.version.is_some());
    assert_eq!(c.current_node().to_string(), node.addr().to_string());
    let rows: Vec<(i64,)> = c.query_as("SELECT id FROM t").await.unwrap();
    assert_eq!(rows, vec![(1,)]);
    // Queries fail over too.
    let c = client([dead_addr(), node.addr()]);
    assert_eq!(
        c.query_as::<(i64,)>("SELECT id FROM t").await.unwrap(),
        vec![(1,)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_nodes_down_gives_up() {
    let c = builder([dead_addr(), dead_addr()])
        .request_attempts(4)
        .build()
        .unwrap();
    let start = Instant::now();
    let e = c.execute(&["SELECT 1".into()]).await.unwrap_err();
    assert!(
        matches!(&e, Error::Exhausted { attempts: 4, last } if matches!(**last, Error::Connect { .. })),
        "{e}"
    );
    assert!(e.is_retryable());
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_on_http_and_websocket() {
    let dir = NodeDir::builder()
        .schema(SCHEMA)
        .tail("[api.authz]\nbearer-token = \"s3cret\"")
        .build();
    let node = dir.start();
    let anon = client([node.addr()]);
    let e = anon.execute(&["SELECT 1".into()]).await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    let e = anon.ws_ping().await.unwrap_err();
    assert_eq!(
        e.status(),
        Some(401),
        "the refused upgrade is reported, not retried: {e}"
    );

    let c = builder([node.addr()])
        .bearer_token("s3cret")
        .build()
        .unwrap();
    c.execute(&["INSERT INTO t VALUES (1, 'a', 1)".into()])
        .await
        .unwrap();
    c.ws_ping().await.unwrap();
    let rows: Vec<(i64,)> = c.ws_query_as("SELECT id FROM t").await.unwrap();
    assert_eq!(rows, vec![(1,)]);
}
