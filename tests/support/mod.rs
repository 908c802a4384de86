//! Shared helpers for end-to-end tests that run the real `verdigris` binary.
//!
//! - [`NodeDir`]: a temporary directory holding one node's config, schema files, database,
//!   admin socket and logs. Build it with [`NodeDir::builder`]; start the agent with
//!   [`NodeDir::start`] (several times if the test restarts the node).
//! - [`Node`]: a running `verdigris agent`. Dropping it kills the process, so no node outlives
//!   its test, even on panic. [`Node::stop`] shuts it down gracefully (SIGTERM).
//! - [`Api`]: an HTTP client bound to one node, speaking HTTP/1.1 ([`Node::http1`]) or h2c,
//!   HTTP/2 with prior knowledge ([`Node::h2c`]). Every request has a 30 s time limit.
//! - [`Resp`] / [`QueryOut`]: a response with helpers to check JSON errors and to parse and
//!   validate NDJSON query streams.
//! - [`run_cli`] / [`CliOut`]: run a CLI subcommand with a time limit and capture its output.
//! - [`LineStream`] ([`Api::open`], `open_post`, `open_get`): a long-lived NDJSON response
//!   read line by line as it arrives, each wait bounded; [`Api::with_nodelay`]; [`Node::kill`]
//!   (SIGKILL, for crash tests).
//!
//! Everything listens on 127.0.0.1 with ephemeral ports; the real API port is parsed from the
//! agent's `  api: http://…` startup line.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Version};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::cell::Cell;
use std::convert::Infallible;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

mod stream;
#[allow(unused_imports)]
pub use stream::{LineStream, Next};

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_verdigris");

/// How long a node may take to print its API address.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Time limit for one HTTP request (including reading the whole body).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit for one CLI invocation.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// A commonly used schema: one table with an integer key and two value columns.
pub const SIMPLE_SCHEMA: &str =
    "CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, a TEXT, b INTEGER);\n";

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A command for the binary with environment overrides of the config removed, so the
/// developer's or CI's environment (`DB__PATH`, `VERDIGRIS_…`) cannot change what a test runs.
pub fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.contains("__") || k.to_ascii_uppercase().starts_with("VERDIGRIS") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd.stdin(Stdio::null());
    cmd
}

/// What a finished CLI invocation printed.
#[derive(Debug)]
pub struct CliOut {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOut {
    /// Asserts exit code 0 and returns stdout.
    pub fn ok(&self) -> &str {
        assert!(
            self.status.success(),
            "command failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Asserts a non-zero exit and returns stderr.
    pub fn failed(&self) -> &str {
        assert!(
            !self.status.success(),
            "command unexpectedly succeeded:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        &self.stderr
    }
}

fn read_file_lossy(f: &mut File) -> String {
    let mut buf = Vec::new();
    f.seek(SeekFrom::Start(0)).expect("seek output");
    f.read_to_end(&mut buf).expect("read output");
    String::from_utf8_lossy(&buf).into_owned()
}

/// Runs `verdigris <args>` to completion (killed after [`CLI_TIMEOUT`]).
pub fn run_cli(args: &[&str]) -> CliOut {
    let mut out = tempfile::tempfile().expect("stdout file");
    let mut err = tempfile::tempfile().expect("stderr file");
    let mut child = command()
        .args(args)
        .stdout(Stdio::from(out.try_clone().expect("dup")))
        .stderr(Stdio::from(err.try_clone().expect("dup")))
        .spawn()
        .expect("spawning verdigris");
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for verdigris") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`verdigris {}` did not finish within {CLI_TIMEOUT:?}; stderr:\n{}",
                args.join(" "),
                read_file_lossy(&mut err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    CliOut {
        status,
        stdout: read_file_lossy(&mut out),
        stderr: read_file_lossy(&mut err),
    }
}

// ---------------------------------------------------------------------------------------------
// Node directories and configuration
// ---------------------------------------------------------------------------------------------

/// Builds a [`NodeDir`]: the standard single-node config plus optional extra lines per section.
#[derive(Default)]
pub struct NodeDirBuilder {
    schema: Option<String>,
    db: String,
    api: String,
    gossip: String,
    tail: String,
    raw: Option<String>,
}

impl NodeDirBuilder {
    /// Contents of `schema/schema.sql` (no schema file at all if never called).
    pub fn schema(mut self, sql: &str) -> Self {
        self.schema = Some(sql.to_string());
        self
    }
    /// Extra lines in `[db]`.
    pub fn db(mut self, lines: &str) -> Self {
        self.db.push_str(lines);
        self.db.push('\n');
        self
    }
    /// Extra lines in `[api]`, e.g. `max_body_bytes = 1024`.
    pub fn api(mut self, lines: &str) -> Self {
        self.api.push_str(lines);
        self.api.push('\n');
        self
    }
    /// Extra lines in `[gossip]`, e.g. `bootstrap = ["127.0.0.1:1234"]`.
    pub fn gossip(mut self, lines: &str) -> Self {
        self.gossip.push_str(lines);
        self.gossip.push('\n');
        self
    }
    /// Text appended after the standard sections (new tables such as `[api.authz]`).
    pub fn tail(mut self, text: &str) -> Self {
        self.tail.push_str(text);
        self.tail.push('\n');
        self
    }
    /// Replaces the whole config; `{dir}` is replaced by the node directory.
    pub fn raw_config(mut self, text: &str) -> Self {
        self.raw = Some(text.to_string());
        self
    }

    pub fn build(self) -> NodeDir {
        let dir = tempfile::Builder::new()
            .prefix("vd-e2e-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        let nd = NodeDir {
            config: root.join("config.toml"),
            db: root.join("data").join("state.db"),
            admin: root.join("admin.sock"),
            schema_dir: root.join("schema"),
            runs: Cell::new(0),
            dir,
        };
        std::fs::create_dir_all(&nd.schema_dir).expect("schema dir");
        if let Some(s) = &self.schema {
            nd.write_schema(s);
        }
        let text = match self.raw {
            Some(raw) => raw.replace("{dir}", &root.display().to_string()),
            None => format!(
                "[db]\npath = \"{db}\"\nschema_paths = [\"{schema}\"]\n{dbx}\n\
                 [api]\naddr = \"127.0.0.1:0\"\n{api}\n\
                 [gossip]\naddr = \"127.0.0.1:0\"\nplaintext = true\n{gossip}\n\
                 [admin]\npath = \"{admin}\"\n\n{tail}",
                db = nd.db.display(),
                schema = nd.schema_dir.display(),
                dbx = self.db,
                api = self.api,
                gossip = self.gossip,
                admin = nd.admin.display(),
                tail = self.tail,
            ),
        };
        nd.write_config(&text);
        nd
    }
}

/// One node's directory. Keep it alive for as long as the node's files are needed; declare it
/// before the [`Node`] so the node is dropped (killed) first.
pub struct NodeDir {
    pub config: PathBuf,
    pub db: PathBuf,
    pub admin: PathBuf,
    pub schema_dir: PathBuf,
    runs: Cell<u32>,
    dir: TempDir,
}

/// Why a node did not come up.
#[derive(Debug)]
pub struct StartFailure {
    /// Exit status if the process ended (None: it was still running at the deadline).
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl NodeDir {
    pub fn builder() -> NodeDirBuilder {
        NodeDirBuilder::default()
    }

    /// The standard config with `schema` as the schema file.
    pub fn with_schema(schema: &str) -> NodeDir {
        NodeDir::builder().schema(schema).build()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces `schema/schema.sql`.
    pub fn write_schema(&self, sql: &str) {
        std::fs::write(self.schema_dir.join("schema.sql"), sql).expect("writing schema");
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("writing config");
    }

    /// Runs `verdigris -c <config> <args>` (no API address override).
    pub fn cli(&self, args: &[&str]) -> CliOut {
        let cfg = self.config.display().to_string();
        let mut all = vec!["-c", cfg.as_str()];
        all.extend_from_slice(args);
        run_cli(&all)
    }

    /// Starts the agent and waits until it serves; panics with its stderr if it does not.
    pub fn start(&self) -> Node {
        match self.try_start() {
            Ok(n) => n,
            Err(f) => panic!(
                "node did not start (status {:?})\nstdout:\n{}\nstderr:\n{}",
                f.status, f.stdout, f.stderr
            ),
        }
    }

    /// Starts the agent; `Err` if it exits or does not print its API address in time.
    pub fn try_start(&self) -> Result<Node, StartFailure> {
        let run = self.runs.get() + 1;
        self.runs.set(run);
        let stdout_path = self.path().join(format!("agent-{run}.stdout"));
        let stderr_path = self.path().join(format!("agent-{run}.stderr"));
        // A socket left by a killed previous run would accept nothing until the new node
        // replaces it; remove it so "socket exists" means "this node is listening".
        let _ = std::fs::remove_file(&self.admin);
        let out = File::create(&stdout_path).expect("stdout file");
        let err = File::create(&stderr_path).expect("stderr file");
        let child = command()
            .arg("agent")
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawning verdigris agent");
        let mut node = Node {
            child: Some(child),
            addrs: Vec::new(),
            actor_id: String::new(),
            config: self.config.clone(),
            admin: self.admin.clone(),
            stdout_path,
            stderr_path,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let fail = |node: &mut Node, status: Option<ExitStatus>| StartFailure {
            status,
            stdout: node.stdout(),
            stderr: node.stderr(),
        };
        loop {
            let status = node
                .child
                .as_mut()
                .expect("child")
                .try_wait()
                .expect("wait");
            if let Some(s) = status {
                let f = fail(&mut node, Some(s));
                node.child = None;
                return Err(f);
            }
            let out = node.stdout();
            if out
                .lines()
                .any(|l| l.trim_start().starts_with("admin socket:"))
            {
                node.addrs.clear();
                for line in out.lines().map(str::trim) {
                    if let Some(a) = line.strip_prefix("api: http://") {
                        node.addrs
                            .push(a.trim().parse().expect("api address in startup output"));
                    } else if let Some(id) = line.strip_prefix("actor id:") {
                        node.actor_id = id.trim().to_string();
                    }
                }
                if !node.addrs.is_empty() && self.admin.exists() {
                    return Ok(node);
                }
            }
            if Instant::now() > deadline {
                let f = fail(&mut node, None);
                return Err(f);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A running `verdigris agent`; killed when dropped.
pub struct Node {
    child: Option<Child>,
    /// Every API address printed at startup (one per listener).
    pub addrs: Vec<SocketAddr>,
    /// The actor id printed at startup (32 lowercase hex).
    pub actor_id: String,
    pub config: PathBuf,
    pub admin: PathBuf,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Node {
    /// The first API address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node is running").id()
    }

    /// The agent's resident memory (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading the node's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc status")
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Panic messages the agent printed so far (empty if none).
    pub fn panics(&self) -> Vec<String> {
        self.stderr()
            .lines()
            .filter(|l| l.contains("panicked"))
            .map(str::to_string)
            .collect()
    }

    /// An HTTP/1.1 client for this node.
    pub fn http1(&self) -> Api {
        Api::new(self.addr(), Proto::Http1)
    }

    /// An h2c (HTTP/2 prior knowledge) client for this node.
    pub fn h2c(&self) -> Api {
        Api::new(self.addr(), Proto::H2c)
    }

    /// A client of either protocol.
    pub fn api(&self, proto: Proto) -> Api {
        Api::new(self.addr(), proto)
    }

    /// Runs `verdigris -c <config> --api-addr <this node> <args>`.
    pub fn cli(&self, args: &[&str]) -> CliOut {
        let cfg = self.config.display().to_string();
        let addr = self.addr().to_string();
        let mut all = vec!["-c", cfg.as_str(), "--api-addr", addr.as_str()];
        all.extend_from_slice(args);
        run_cli(&all)
    }

    /// Graceful stop: SIGTERM, then SIGKILL if it has not exited within 10 s.
    /// Returns the exit status.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("node is running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let s = child.wait().expect("wait");
                panic!(
                    "node ignored SIGTERM for 10 s (killed: {s}); stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Node {
    /// Crash: SIGKILL (`Child::kill` on Unix), then reap. Returns the exit status.
    pub fn kill(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("node is running");
        let _ = child.kill();
        child.wait().expect("wait")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

pub type ReqBody = BoxBody<Bytes, Infallible>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http1,
    H2c,
}

pub const BOTH: [Proto; 2] = [Proto::Http1, Proto::H2c];

/// A complete HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as one JSON document (panics with the raw body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response ({}) is not JSON: {e}; body: {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// The body as NDJSON: every line must be a JSON document and end with `\n`.
    pub fn ndjson(&self) -> Vec<Value> {
        let text = self.text();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "NDJSON body does not end with a newline: {text:?}"
        );
        text.lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("NDJSON line is not JSON ({e}): {l:?}"))
            })
            .collect()
    }

    /// Asserts `status`, a JSON object body and a non-empty `"error"` string containing every
    /// needle (case-insensitive). Returns the whole body.
    pub fn expect_error(&self, status: u16, needles: &[&str]) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "expected status {status}; body: {}",
            self.text()
        );
        let v = self.json();
        assert!(v.is_object(), "error body is not a JSON object: {v}");
        let msg = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("error body has no \"error\" string: {v}"));
        assert!(!msg.trim().is_empty(), "empty error message: {v}");
        let lower = msg.to_lowercase();
        for n in needles {
            assert!(
                lower.contains(&n.to_lowercase()),
                "error message should mention {n:?}: {msg:?}"
            );
        }
        v
    }

    /// Parses and validates a `/v1/queries` stream (see [`QueryOut::parse`]).
    pub fn query_out(&self) -> QueryOut {
        assert_eq!(self.status, StatusCode::OK, "query failed: {}", self.text());
        QueryOut::parse(&self.ndjson())
    }
}

/// How a query stream ended.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    Eoq { time: f64 },
    Error(String),
}

/// A validated query stream: `columns` first, rows numbered 1, 2, 3…, then `eoq` or `error`
/// as the last event.
#[derive(Debug, Clone)]
pub struct QueryOut {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    pub end: End,
}

impl QueryOut {
    pub fn parse(events: &[Value]) -> QueryOut {
        let mut columns = None;
        let mut rows = Vec::new();
        let mut end = None;
        for (i, ev) in events.iter().enumerate() {
            assert!(
                end.is_none(),
                "event after the end of the stream: {events:?}"
            );
            let obj = ev
                .as_object()
                .unwrap_or_else(|| panic!("event is not an object: {ev}"));
            assert_eq!(obj.len(), 1, "event must have exactly one key: {ev}");
            if let Some(c) = obj.get("columns") {
                assert_eq!(i, 0, "columns must be the first event: {events:?}");
                let cols = c.as_array().expect("columns array");
                columns = Some(
                    cols.iter()
                        .map(|c| c.as_str().expect("column name string").to_string())
                        .collect::<Vec<_>>(),
                );
            } else if let Some(r) = obj.get("row") {
                let pair = r.as_array().expect("row is [id, cells]");
                assert_eq!(pair.len(), 2, "row is [id, cells]: {ev}");
                assert_eq!(
                    pair[0].as_u64(),
                    Some(rows.len() as u64 + 1),
                    "row ids must be 1, 2, 3…: {ev}"
                );
                let cells = pair[1].as_array().expect("cells array").clone();
                let ncols = columns.as_ref().expect("row before columns").len();
                assert_eq!(cells.len(), ncols, "row width ≠ number of columns: {ev}");
                rows.push(cells);
            } else if let Some(e) = obj.get("eoq") {
                let time = e
                    .get("time")
                    .and_then(Value::as_f64)
                    .unwrap_or_else(|| panic!("eoq without a numeric time: {ev}"));
                end = Some(End::Eoq { time });
            } else if let Some(e) = obj.get("error") {
                let msg = e.as_str().expect("error string").to_string();
                assert!(!msg.is_empty(), "empty in-stream error");
                end = Some(End::Error(msg));
            } else {
                panic!("unknown event: {ev}");
            }
        }
        QueryOut {
            columns: columns.unwrap_or_default(),
            rows,
            end: end.unwrap_or_else(|| panic!("stream has no eoq/error event: {events:?}")),
        }
    }

    /// Asserts the stream ended with `eoq` and returns the rows.
    pub fn ok_rows(self) -> Vec<Vec<Value>> {
        match &self.end {
            End::Eoq { .. } => self.rows,
            End::Error(e) => panic!("query ended with an error: {e}"),
        }
    }
}

/// An HTTP client bound to one node.
#[derive(Clone)]
pub struct Api {
    pub addr: SocketAddr,
    pub proto: Proto,
    client: Client<HttpConnector, ReqBody>,
    /// Extra headers sent with every request (e.g. authorization).
    pub headers: Vec<(String, String)>,
}

impl Api {
    pub fn new(addr: SocketAddr, proto: Proto) -> Api {
        let mut b = Client::builder(TokioExecutor::new());
        if proto == Proto::H2c {
            b.http2_only(true);
        }
        Api {
            addr,
            proto,
            client: b.build_http(),
            headers: Vec::new(),
        }
    }

    /// The same client, also sending `Authorization: Bearer <token>`.
    pub fn with_bearer(mut self, token: &str) -> Api {
        self.headers
            .push(("authorization".into(), format!("Bearer {token}")));
        self
    }

    /// Builds a request to this node: the client's own headers, then `headers`.
    pub fn request(
        &self,
        method: &Method,
        path: &str,
        body: ReqBody,
        headers: &[(&str, &str)],
    ) -> Request<ReqBody> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("http://{}{}", self.addr, path));
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        for (k, v) in headers {
            req = req.header(
                HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                HeaderValue::from_bytes(v.as_bytes()).expect("header value"),
            );
        }
        req.body(body).expect("request")
    }

    /// Sends a request with a body; `headers` are added to the client's own.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: ReqBody,
        headers: &[(&str, &str)],
    ) -> Resp {
        let req = self.request(&method, path, body, headers);
        let what = format!("{method} {path} ({:?})", self.proto);
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .unwrap_or_else(|e| panic!("{what}: request failed: {e:?}"));
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .unwrap_or_else(|e| panic!("{what}: reading the body failed: {e:?}"))
                .to_bytes();
            Resp {
                status: parts.status,
                version: parts.version,
                headers: parts.headers,
                body,
            }
        };
        let resp = tokio::time::timeout(HTTP_TIMEOUT, fut)
            .await
            .unwrap_or_else(|_| panic!("{what}: no complete response within {HTTP_TIMEOUT:?}"));
        let expected = match self.proto {
            Proto::Http1 => Version::HTTP_11,
            Proto::H2c => Version::HTTP_2,
        };
        assert_eq!(
            resp.version, expected,
            "{what}: answered with the wrong HTTP version"
        );
        resp
    }

    /// POST raw bytes as `application/json`.
    pub async fn post_raw(&self, path: &str, body: impl Into<Bytes>) -> Resp {
        self.send(
            Method::POST,
            path,
            full(body),
            &[("content-type", "application/json")],
        )
        .await
    }

    /// POST a JSON value.
    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.post_raw(path, serde_json::to_vec(body).expect("json"))
            .await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, full(Bytes::new()), &[]).await
    }

    /// `POST /v1/transactions` with a JSON array of statements.
    pub async fn tx(&self, stmts: &Value) -> Resp {
        self.post("/v1/transactions", stmts).await
    }

    /// A transaction that must succeed: checks the response shape and returns it.
    pub async fn tx_ok(&self, stmts: &Value) -> Value {
        let r = self.tx(stmts).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "transaction {stmts} failed: {}",
            r.text()
        );
        let v = r.json();
        let n = stmts.as_array().map(Vec::len).unwrap_or(0);
        let results = v["results"]
            .as_array()
            .unwrap_or_else(|| panic!("no results: {v}"));
        assert_eq!(results.len(), n, "one result per statement: {v}");
        for res in results {
            assert!(res["rows_affected"].is_u64(), "rows_affected: {v}");
            assert!(res["time"].is_f64() || res["time"].is_u64(), "time: {v}");
        }
        assert!(
            v["version"].is_null() || v["version"].is_u64(),
            "version: {v}"
        );
        assert!(v["time"].is_number(), "time: {v}");
        assert!(is_actor_id(&v["actor_id"]), "actor_id: {v}");
        v
    }

    /// The `version` of a successful transaction (None when null).
    pub async fn write(&self, stmts: &Value) -> Option<u64> {
        self.tx_ok(stmts).await["version"].as_u64()
    }

    /// `POST /v1/queries` with one statement.
    pub async fn query(&self, stmt: &Value) -> Resp {
        self.post("/v1/queries", stmt).await
    }

    /// Rows of a query that must succeed.
    pub async fn rows(&self, stmt: &Value) -> Vec<Vec<Value>> {
        self.query(stmt).await.query_out().ok_rows()
    }

    /// The single integer a query returns.
    pub async fn scalar(&self, sql: &str) -> i64 {
        let rows = self.rows(&Value::String(sql.to_string())).await;
        assert_eq!(rows.len(), 1, "{sql}: expected one row, got {rows:?}");
        rows[0][0]
            .as_i64()
            .unwrap_or_else(|| panic!("{sql}: not an integer: {rows:?}"))
    }
}

/// Is `v` a 32-character lowercase hex string?
pub fn is_actor_id(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 32
            && s.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

pub fn full(b: impl Into<Bytes>) -> ReqBody {
    Full::new(b.into()).boxed()
}

/// A body sent in several chunks without a declared length (chunked encoding on HTTP/1.1).
pub fn chunked(chunks: Vec<Bytes>) -> ReqBody {
    let frames = chunks
        .into_iter()
        .map(|c| Ok::<_, Infallible>(Frame::data(c)));
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}
