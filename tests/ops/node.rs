//! A node process for operability tests: its own directory and config (any extra sections),
//! started and restarted on the same ports, with its exit status observable (the watchdog
//! test waits for the process to end on its own). Killed when dropped.

use crate::support::{command, Api, Proto};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const SCHEMA: &str =
    "CREATE TABLE items (id INTEGER NOT NULL PRIMARY KEY, owner TEXT NOT NULL DEFAULT '', n INTEGER);\n";

/// A node's directory and config; outlives restarts of its process.
pub struct Dir {
    pub dir: TempDir,
    /// Extra TOML appended to the config (whole sections).
    pub extra: String,
}

impl Dir {
    pub fn new(extra: &str) -> Dir {
        let dir = tempfile::Builder::new()
            .prefix("vd-ops-")
            .tempdir()
            .expect("tempdir");
        std::fs::write(dir.path().join("schema.sql"), SCHEMA).expect("schema");
        Dir {
            dir,
            extra: extra.to_string(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.path().join("config.toml")
    }

    pub fn db(&self) -> PathBuf {
        self.path().join("state.db")
    }

    fn write_config(&self, bootstrap: &[SocketAddr], gossip_port: u16) {
        let d = self.path();
        let boot: Vec<String> = bootstrap.iter().map(|a| format!("\"{a}\"")).collect();
        let text = format!(
            "[db]\npath = \"{db}\"\nschema_paths = [\"{schema}\"]\n\
             [api]\naddr = \"127.0.0.1:0\"\n\
             [gossip]\naddr = \"127.0.0.1:{gossip_port}\"\nbootstrap = [{boot}]\nplaintext = true\n\
             [admin]\npath = \"{admin}\"\n\
             [perf]\nmin_sync_backoff = 1\nmax_sync_backoff = 2\n{extra}\n",
            db = self.db().display(),
            schema = d.join("schema.sql").display(),
            boot = boot.join(", "),
            admin = d.join("admin.sock").display(),
            extra = self.extra,
        );
        std::fs::write(self.config(), text).expect("config");
    }

    /// Starts the agent and waits for its startup lines.
    pub fn start(&self, bootstrap: &[SocketAddr], gossip_port: u16) -> Proc {
        self.write_config(bootstrap, gossip_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("agent.log"))
            .expect("log file");
        let mut child = command()
            .args(["-c", self.config().to_str().expect("utf8"), "agent"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning verdigris agent");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let (mut api, mut gossip, mut actor) = (None, None, String::new());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "agent in {} did not start; log:\n{}",
                    self.path().display(),
                    self.log()
                )
            });
            let line = line.trim();
            if let Some(a) = line.strip_prefix("api: http://") {
                api = a.parse().ok();
            } else if let Some(g) = line.strip_prefix("gossip: ") {
                gossip = g.parse().ok();
            } else if let Some(a) = line.strip_prefix("actor id: ") {
                actor = a.to_string();
            } else if line.starts_with("admin socket:") {
                break;
            }
        }
        Proc {
            child: Some(child),
            api: api.expect("api address"),
            gossip: gossip.expect("gossip address"),
            actor,
            admin: self.path().join("admin.sock"),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("agent.log")).unwrap_or_default()
    }
}

pub struct Proc {
    child: Option<Child>,
    pub api: SocketAddr,
    pub gossip: SocketAddr,
    pub actor: String,
    pub admin: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Proc {
    pub fn http(&self) -> Api {
        Api::new(self.api, Proto::Http1)
    }

    /// Waits up to `secs` for the process to exit on its own.
    pub fn wait_exit(&mut self, secs: u64) -> Option<ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let child = self.child.as_mut().expect("running");
        while Instant::now() < deadline {
            if let Some(s) = child.try_wait().expect("wait") {
                self.child = None;
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> ExitStatus {
        let c = self.child.as_ref().expect("running");
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        self.wait_exit(20)
            .expect("node stopped within 20 s of SIGTERM")
    }

    pub async fn admin(&self, cmd: Value) -> Value {
        verdigris::admin::request_json(&self.admin, cmd)
            .await
            .expect("admin request")
    }

    /// Inserts rows `ids` owned by `owner`, one transaction each.
    pub async fn insert(&self, owner: &str, ids: std::ops::Range<i64>) {
        let api = self.http();
        for id in ids {
            api.write(&json!([[
                "INSERT INTO items (id, owner, n) VALUES (?, ?, ?)",
                [id, owner, id * 2]
            ]]))
            .await;
        }
    }

    pub async fn ids(&self) -> Vec<i64> {
        self.http()
            .rows(&json!("SELECT id FROM items ORDER BY id"))
            .await
            .iter()
            .map(|r| r[0].as_i64().expect("id"))
            .collect()
    }

    pub async fn alive_members(&self) -> usize {
        let m = self.admin(json!({"Cluster": "Members"})).await;
        m.as_array()
            .map(|a| a.iter().filter(|m| m["state"] == "alive").count())
            .unwrap_or(0)
    }
}

/// Polls `f` every 200 ms until it holds; panics after `secs`.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every node holds exactly the ids `want`.
pub async fn converge(nodes: &[&Proc], want: &[i64], secs: u64) {
    for (i, n) in nodes.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let ids = n.ids().await;
            if ids == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} did not converge within {secs} s: has {} rows, want {}",
                ids.len(),
                want.len()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Multi-process tests run one at a time (2 cores).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
