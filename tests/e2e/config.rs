//! Configuration as the agent sees it: unknown keys stop it with an error naming the key, a
//! full Corrosion config (sections Verdigris ignores) starts and serves, several listeners,
//! and `api.authz.bearer-token` (and its aliases) protect every endpoint with 401.

use crate::support::{Node, NodeDir, BOTH, SIMPLE_SCHEMA};
use bytes::Bytes;
use hyper::Method;
use serde_json::json;

#[tokio::test]
async fn unknown_config_key_stops_agent_naming_the_key() {
    for (api_extra, tail, key) in [
        ("adress = \"127.0.0.1:0\"", "", "api.adress"),
        ("", "[storage]\npath = \"x\"", "storage"),
        ("", "[api.authz]\ntoken = \"x\"", "api.authz.token"),
    ] {
        let dir = NodeDir::builder()
            .schema(SIMPLE_SCHEMA)
            .api(api_extra)
            .tail(tail)
            .build();
        let failure = match dir.try_start() {
            Ok(_) => panic!("agent started with unknown key {key}"),
            Err(f) => f,
        };
        let status = failure.status.expect("the agent must exit, not hang");
        assert!(!status.success(), "exit status for {key}: {status}");
        assert!(
            failure.stderr.contains("error") && failure.stderr.contains(key),
            "stderr must name {key}: {}",
            failure.stderr
        );
        // The CLI verbs read the same config and refuse it too.
        let out = dir.cli(&["query", "SELECT 1"]);
        assert!(out.failed().contains(key), "query: {}", out.stderr);
    }
}

#[tokio::test]
async fn corrosion_config_with_ignored_sections_starts() {
    let dir = NodeDir::builder()
        .raw_config(
            r#"
[db]
path = "{dir}/data/state.db"
schema_paths = ["{dir}/schema"]

[api]
addr = "127.0.0.1:0"

[gossip]
addr = "127.0.0.1:0"
plaintext = true
client_addr = "127.0.0.1:0"
disable_gso = true
bootstrap = []

[gossip.compression]
enabled = false

[admin]
path = "{dir}/admin.sock"

[perf]
wal_threshold_mb = 512
apply_queue_min_batch_size = 100

[telemetry]
prometheus.addr = "127.0.0.1:0"

[consul.client]
address = "127.0.0.1:8501"

[reaper]
check_interval = 3600

[log]
colors = false
"#,
        )
        .schema(SIMPLE_SCHEMA)
        .build();
    let node = dir.start();
    let api = node.http1();
    let r = api.get("/v1/health").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        api.write(&json!(["INSERT INTO t (id) VALUES (1)"])).await,
        Some(1)
    );
    // Ignored settings are mentioned (warned about), not silently swallowed.
    let stderr = node.stderr();
    for key in ["telemetry", "wal_threshold_mb", "consul"] {
        assert!(
            stderr.contains(key),
            "expected a warning naming {key}:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn multiple_api_listeners_all_serve() {
    let dir = NodeDir::builder()
        .raw_config(
            r#"
[db]
path = "{dir}/data/state.db"
schema_paths = ["{dir}/schema"]
[api]
addr = ["127.0.0.1:0", "127.0.0.1:0"]
[gossip]
addr = "127.0.0.1:0"
plaintext = true
[admin]
path = "{dir}/admin.sock"
"#,
        )
        .schema(SIMPLE_SCHEMA)
        .build();
    let node = dir.start();
    assert_eq!(
        node.addrs.len(),
        2,
        "one api line per listener: {}",
        node.stdout()
    );
    assert_ne!(node.addrs[0], node.addrs[1]);
    for (i, addr) in node.addrs.iter().enumerate() {
        let api = crate::support::Api::new(*addr, crate::support::Proto::H2c);
        api.write(&json!([["INSERT INTO t (id) VALUES (?)", [i]]]))
            .await
            .expect("version");
        assert_eq!(api.scalar("SELECT count(*) FROM t").await, i as i64 + 1);
    }
}

async fn check_bearer(node: &Node, token: &str) {
    for proto in BOTH {
        let anon = node.api(proto);
        let wrong = node.api(proto).with_bearer("not-the-token");
        let right = node.api(proto).with_bearer(token);
        let tx = serde_json::to_vec(&json!(["INSERT OR IGNORE INTO t (id) VALUES (1)"])).unwrap();
        for (method, path, body) in [
            (Method::GET, "/v1/health", Bytes::new()),
            (Method::POST, "/v1/transactions", Bytes::from(tx.clone())),
            (
                Method::POST,
                "/v1/queries",
                Bytes::from_static(b"\"SELECT 1\""),
            ),
            (
                Method::POST,
                "/v1/table_stats",
                Bytes::from_static(b"{\"tables\":[\"t\"]}"),
            ),
            (Method::GET, "/v1/nope", Bytes::new()),
        ] {
            for api in [&anon, &wrong] {
                let r = api
                    .send(
                        method.clone(),
                        path,
                        crate::support::full(body.clone()),
                        &[],
                    )
                    .await;
                r.expect_error(401, &["bearer"]);
            }
            // Same token with another scheme or case is not accepted either.
            let auth = format!("Token {token}");
            let r = anon
                .send(
                    method.clone(),
                    path,
                    crate::support::full(body.clone()),
                    &[("authorization", &auth)],
                )
                .await;
            r.expect_error(401, &["bearer"]);
        }
        assert_eq!(right.get("/v1/health").await.status, 200);
        assert_eq!(
            right
                .tx(&json!(["INSERT OR IGNORE INTO t (id) VALUES (1)"]))
                .await
                .status,
            200
        );
        assert_eq!(right.scalar("SELECT count(*) FROM t").await, 1);
    }
    // The CLI sends the configured token.
    let out = node.cli(&["query", "SELECT count(*) FROM t"]);
    assert_eq!(out.ok().trim(), "1");
}

#[tokio::test]
async fn bearer_token_is_required_when_configured() {
    let dir = NodeDir::builder()
        .schema(SIMPLE_SCHEMA)
        .tail("[api.authz]\nbearer-token = \"s3cret-token\"")
        .build();
    check_bearer(&dir.start(), "s3cret-token").await;
}

/// Corrosion's field is `api.authorization` (alias `authz`), its key `bearer-token` (alias
/// `bearer`): every spelling a Corrosion config may use must work.
#[tokio::test]
async fn bearer_token_corrosion_spellings_are_accepted() {
    for (section, key) in [
        ("api.authz", "bearer"),
        ("api.authorization", "bearer-token"),
        ("api.authorization", "bearer"),
    ] {
        let dir = NodeDir::builder()
            .schema(SIMPLE_SCHEMA)
            .tail(&format!("[{section}]\n{key} = \"alias-token\""))
            .build();
        let node = dir.try_start().unwrap_or_else(|f| {
            panic!(
                "[{section}] {key} = … is a valid Corrosion config but the agent refused it:\n{}",
                f.stderr
            )
        });
        check_bearer(&node, "alias-token").await;
    }
}
