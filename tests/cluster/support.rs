//! Spawning `verdigris agent` processes on loopback and talking to them (HTTP API, admin
//! socket). Each node lives in its own temporary directory; a node is killed when dropped.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const SCHEMA: &str = "CREATE TABLE items (id INTEGER NOT NULL PRIMARY KEY, owner TEXT NOT NULL DEFAULT '', val TEXT, n INTEGER);\n";

/// A node's directory; outlives restarts of its process.
/// Multi-process scenarios run one at a time: each starts several nodes, and on a 2-core
/// machine running them side by side measures the scheduler more than the cluster.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

pub struct NodeDir {
    pub dir: TempDir,
    /// Extra lines for the `[gossip]` section.
    pub gossip_extra: String,
    /// The `[perf]` section's lines (fast sync rounds by default).
    pub perf: String,
}

impl NodeDir {
    pub fn new() -> NodeDir {
        let dir = tempfile::Builder::new()
            .prefix("vd-cluster-")
            .tempdir()
            .expect("tempdir");
        std::fs::write(dir.path().join("schema.sql"), SCHEMA).expect("schema");
        NodeDir {
            dir,
            gossip_extra: String::new(),
            perf: "min_sync_backoff = 1\nmax_sync_backoff = 2".into(),
        }
    }

    /// A node directory whose config adds `lines` to `[gossip]`.
    pub fn with_gossip(lines: &str) -> NodeDir {
        NodeDir {
            gossip_extra: lines.to_string(),
            ..NodeDir::new()
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write_config(&self, bootstrap: &[SocketAddr], gossip_port: u16, tls: &str) -> PathBuf {
        let d = self.path();
        let boot: Vec<String> = bootstrap.iter().map(|a| format!("\"{a}\"")).collect();
        let text = format!(
            "[db]\npath = \"{db}\"\nschema_paths = [\"{schema}\"]\n\
             [api]\naddr = \"127.0.0.1:0\"\n\
             [gossip]\naddr = \"127.0.0.1:{gossip_port}\"\nbootstrap = [{boot}]\n{security}\n{extra}\n\
             [admin]\npath = \"{admin}\"\n\
             [perf]\n{perf}\n{tls}",
            security = if tls.is_empty() {
                "plaintext = true"
            } else {
                ""
            },
            db = d.join("state.db").display(),
            schema = d.join("schema.sql").display(),
            boot = boot.join(", "),
            extra = self.gossip_extra,
            perf = self.perf,
            admin = d.join("admin.sock").display(),
        );
        let p = d.join("config.toml");
        std::fs::write(&p, text).expect("config");
        p
    }

    /// Starts an agent on this directory.
    pub fn start(&self, bootstrap: &[SocketAddr]) -> TestNode {
        self.start_on(bootstrap, 0)
    }

    /// Starts an agent with a fixed gossip port (0 = any).
    pub fn start_on(&self, bootstrap: &[SocketAddr], gossip_port: u16) -> TestNode {
        self.start_with(bootstrap, gossip_port, "")
    }

    /// Starts an agent whose config ends with `tls` (a `[gossip.tls]` section); plaintext
    /// gossip when empty.
    pub fn start_with(&self, bootstrap: &[SocketAddr], gossip_port: u16, tls: &str) -> TestNode {
        let config = self.write_config(bootstrap, gossip_port, tls);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("agent.log"))
            .expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_verdigris"))
            .args(["-c", config.to_str().expect("utf8"), "agent"])
            .env("RUST_LOG", "info,verdigris::cluster=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning verdigris agent");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let (mut api, mut gossip) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while gossip.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => panic!(
                    "agent in {} did not start; log:\n{}",
                    self.path().display(),
                    self.log()
                ),
            };
            if let Some(a) = line.trim().strip_prefix("api: http://") {
                api = a.parse().ok();
            }
            if let Some(g) = line.trim().strip_prefix("gossip: ") {
                gossip = g.parse().ok();
            }
        }
        TestNode {
            child: Some(child),
            api: api.expect("api address"),
            gossip: gossip.expect("gossip address"),
            admin: self.path().join("admin.sock"),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("agent.log")).unwrap_or_default()
    }
}

pub struct TestNode {
    child: Option<Child>,
    pub api: SocketAddr,
    pub gossip: SocketAddr,
    pub admin: PathBuf,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

impl TestNode {
    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Bytes) {
        let req = hyper::Request::post(format!("http://{}{path}", self.api))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(60), self.client.request(req))
            .await
            .expect("request timed out")
            .expect("request failed");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    }

    /// Runs statements in one transaction; panics unless it succeeds.
    pub async fn exec(&self, stmts: Value) -> Value {
        let (status, body) = self.post("/v1/transactions", stmts).await;
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(status, 200, "transaction failed: {v}");
        v
    }

    /// Like [`exec`] but returns whether it succeeded (for writes racing a kill).
    pub async fn try_exec(&self, stmts: Value) -> bool {
        let req = hyper::Request::post(format!("http://{}/v1/transactions", self.api))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(stmts.to_string())))
            .expect("request");
        match tokio::time::timeout(Duration::from_secs(10), self.client.request(req)).await {
            Ok(Ok(resp)) => resp.status().as_u16() == 200,
            _ => false,
        }
    }

    /// Rows of a query (cells as JSON).
    pub async fn query(&self, sql: &str) -> Vec<Vec<Value>> {
        let (status, body) = self.post("/v1/queries", json!(sql)).await;
        assert_eq!(
            status,
            200,
            "query failed: {}",
            String::from_utf8_lossy(&body)
        );
        let mut rows = Vec::new();
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: Value = serde_json::from_slice(line).expect("ndjson");
            if let Some(r) = v.get("row") {
                rows.push(r[1].as_array().expect("cells").clone());
            }
            if let Some(e) = v.get("error") {
                panic!("query error: {e}");
            }
        }
        rows
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.query(&format!("SELECT count(*) FROM {table}")).await[0][0]
            .as_i64()
            .expect("count")
    }

    pub async fn admin(&self, cmd: Value) -> Value {
        verdigris::admin::request_json(&self.admin, cmd)
            .await
            .expect("admin request")
    }

    /// Number of members this node sees as alive.
    pub async fn alive_members(&self) -> usize {
        let m = self.admin(json!({"Cluster": "Members"})).await;
        m.as_array()
            .map(|a| a.iter().filter(|m| m["state"] == "alive").count())
            .unwrap_or(0)
    }

    pub async fn health(&self) -> Value {
        let req = hyper::Request::get(format!("http://{}/v1/health", self.api))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = self.client.request(req).await.expect("health");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        serde_json::from_slice::<Value>(&body).expect("json")["response"].clone()
    }
}

/// Three nodes in their own directories, B and C joined through A, once all see each other.
/// Keep the directories bound (not `_`) for as long as the nodes run.
pub async fn three_nodes() -> ([NodeDir; 3], [TestNode; 3]) {
    let dirs = [NodeDir::new(), NodeDir::new(), NodeDir::new()];
    let a = dirs[0].start(&[]);
    let b = dirs[1].start(&[a.gossip]);
    let c = dirs[2].start(&[a.gossip]);
    wait_for_mesh(&[&a, &b, &c]).await;
    (dirs, [a, b, c])
}

/// Polls `f` every 200 ms until it returns true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if !wait_for(secs, f).await {
        panic!("timed out after {secs} s waiting for: {what}");
    }
}

/// Polls `f` until it holds (true) or `secs` pass (false).
pub async fn wait_for<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn wait_for_mesh(nodes: &[&TestNode]) {
    let n = nodes.len();
    for node in nodes {
        eventually(30, "membership to form", || async {
            node.alive_members().await == n - 1
        })
        .await;
    }
}

/// Waits until every node returns the same rows for `sql`, returning them.
pub async fn wait_converged(nodes: &[&TestNode], sql: &str, secs: u64) -> Vec<Vec<Value>> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let mut all = Vec::new();
        for n in nodes {
            all.push(n.query(sql).await);
        }
        if all.windows(2).all(|w| w[0] == w[1]) {
            return all.pop().unwrap_or_default();
        }
        if Instant::now() > deadline {
            let counts: Vec<usize> = all.iter().map(Vec::len).collect();
            panic!("nodes did not converge within {secs} s; row counts {counts:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One transaction inserting rows `from..to` owned by `owner`, as a single statement.
pub fn insert_range(owner: &str, from: i64, to: i64) -> Value {
    json!([[
        "WITH RECURSIVE c(x) AS (SELECT ?1 UNION ALL SELECT x + 1 FROM c WHERE x + 1 < ?2) \
         INSERT INTO items (id, owner, val, n) SELECT x, ?3, 'value-' || x, x * 3 FROM c",
        [from, to, owner]
    ]])
}
