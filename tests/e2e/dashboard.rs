//! The read-only views for dashboards (`/v1/cluster/members`, `/v1/subscriptions`,
//! `/v1/stats`, `/v1/tables`) behind the bearer token, and the embedded console's files served
//! without it, with content types and revalidation.

use crate::support::{full, NodeDir, BOTH};
use bytes::Bytes;
use hyper::Method;
use serde_json::json;

const TOKEN: &str = "dash-token";

fn dir() -> NodeDir {
    NodeDir::builder()
        .schema("CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, v TEXT);\nCREATE TABLE u (k TEXT NOT NULL PRIMARY KEY);\n")
        .tail(&format!("[api.authz]\nbearer-token = \"{TOKEN}\""))
        .build()
}

#[tokio::test]
async fn views_report_writes_tables_members_and_subscriptions() {
    let dir = dir();
    let node = dir.start();
    for proto in BOTH {
        let anon = node.api(proto);
        for path in [
            "/v1/cluster/members",
            "/v1/subscriptions",
            "/v1/stats",
            "/v1/tables",
        ] {
            anon.get(path).await.expect_error(401, &["bearer"]);
            let r = anon
                .send(Method::DELETE, path, full(Bytes::new()), &[])
                .await;
            assert_eq!(r.status, 401, "auth comes before the method check");
        }
    }
    let api = node.http1().with_bearer(TOKEN);
    let before = api.get("/v1/stats").await.json();
    api.tx_ok(&json!(["INSERT INTO t (id, v) VALUES (1, 'a'), (2, 'b')"]))
        .await;
    api.tx_ok(&json!(["UPDATE t SET v = 'c' WHERE id = 1"]))
        .await;
    // No effective change: not a write.
    api.tx_ok(&json!(["UPDATE t SET v = 'c' WHERE id = 1"]))
        .await;
    let after = api.get("/v1/stats").await.json();
    let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert_eq!(
        (delta("local_transactions"), delta("local_rows")),
        (2, 3),
        "{after}"
    );
    assert_eq!(after["remote_rows"], json!(0));
    assert!(after["time"].as_f64().unwrap() > 1.6e9, "{after}");
    assert_eq!(after["members_alive"], json!(1));

    let tables = api.get("/v1/tables").await.json();
    assert_eq!(
        tables,
        json!({"tables": [
            {"name": "t", "columns": ["id", "v"], "rows": 2},
            {"name": "u", "columns": ["k"], "rows": 0},
        ]})
    );

    let members = api.get("/v1/cluster/members").await.json();
    assert_eq!(members["members"], json!([]), "a single node: {members}");
    assert_eq!(members["head"], json!(2), "{members}");
    assert_eq!(members["gaps"], json!(0));
    assert_eq!(members["actor_id"].as_str().unwrap().len(), 32);

    assert_eq!(
        api.get("/v1/subscriptions").await.json(),
        json!({"subscriptions": []})
    );
    let mut stream = api
        .open_post("/v1/subscriptions", &json!("SELECT id, v FROM t"))
        .await;
    let columns = stream.expect_line(std::time::Duration::from_secs(10)).await;
    assert_eq!(columns, json!({"columns": ["id", "v"]}));
    let subs = api.get("/v1/subscriptions").await.json();
    let list = subs["subscriptions"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{subs}");
    assert_eq!(list[0]["rows"], json!(2));
    assert_eq!(list[0]["listeners"], json!(1));
    assert!(
        list[0]["plan"].as_str().unwrap().contains("incremental"),
        "{subs}"
    );

    let r = api
        .send(Method::PUT, "/v1/subscriptions", full(Bytes::new()), &[])
        .await;
    r.expect_error(405, &["PUT"]);
    assert_eq!(r.headers["allow"], "GET, POST");
    api.send(Method::POST, "/v1/stats", full(Bytes::new()), &[])
        .await
        .expect_error(405, &["GET"]);
}

#[tokio::test]
async fn console_files_are_served_without_a_token_and_revalidated() {
    let dir = dir();
    let node = dir.start();
    for proto in BOTH {
        let api = node.api(proto);
        for (path, ctype, needle) in [
            ("/", "text/html; charset=utf-8", "/console/console.js"),
            (
                "/console/",
                "text/html; charset=utf-8",
                "<title>Verdigris console",
            ),
            (
                "/console/console.js",
                "text/javascript; charset=utf-8",
                "verdigris.bearer.",
            ),
            ("/console/console.css", "text/css; charset=utf-8", ".pill"),
        ] {
            let r = api.get(path).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            assert_eq!(r.headers["content-type"], ctype, "{path}");
            assert_eq!(r.headers["cache-control"], "no-cache", "{path}");
            assert!(r.text().contains(needle), "{path} lacks {needle:?}");
            let etag = r.headers["etag"].to_str().unwrap().to_string();
            let again = api
                .send(
                    Method::GET,
                    path,
                    full(Bytes::new()),
                    &[("if-none-match", &etag)],
                )
                .await;
            assert_eq!(again.status, 304, "{path}");
            assert!(again.body.is_empty());
        }
        let r = api.get("/console/nope.js").await;
        r.expect_error(404, &["no such console file"]);
        let r = api.send(Method::POST, "/", full(Bytes::new()), &[]).await;
        r.expect_error(405, &["GET"]);
    }
}
