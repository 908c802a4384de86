//! The admin socket: a Unix stream socket at `admin.path` speaking Corrosion's framing — a
//! 4-byte big-endian length, then JSON — in both directions. The client sends a command such
//! as `"Ping"` or `"Reload"` and reads responses until `"Success"` or `{"Error":{"msg":…}}`;
//! data comes as `{"Json": …}`.

use crate::node::Node;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Largest frame accepted (both sides).
const MAX_FRAME: u32 = 100 * 1024 * 1024;

pub async fn write_frame(s: &mut UnixStream, v: &Value) -> Result<()> {
    let bytes = serde_json::to_vec(v)?;
    s.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    s.write_all(&bytes).await?;
    Ok(())
}

pub async fn read_frame(s: &mut UnixStream) -> Result<Option<Value>> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        bail!("admin frame of {len} bytes exceeds the {MAX_FRAME}-byte limit");
    }
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf).await?;
    Ok(Some(
        serde_json::from_slice(&buf).context("admin frame is not JSON")?,
    ))
}

/// Binds the admin socket (at startup, so a bad `admin.path` stops the node).
pub fn bind(path: &Path) -> Result<UnixListener> {
    let fail = || {
        format!(
            "cannot create the admin socket admin.path = {}; make its directory writable by this user or set admin.path elsewhere",
            path.display()
        )
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(fail)?;
    }
    // A stale socket from a previous run (we hold the database lock, so it is not live). Not
    // there is the normal case; any other problem shows in the bind below.
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).with_context(fail)
}

/// Serves the admin socket until the task is dropped.
pub async fn serve(node: Arc<Node>, listener: UnixListener) -> Result<()> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        let node = node.clone();
        tokio::spawn(async move {
            while let Ok(Some(cmd)) = read_frame(&mut stream).await {
                let replies = execute(&node, &cmd).await;
                for r in replies {
                    if write_frame(&mut stream, &r).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

async fn execute(node: &Arc<Node>, cmd: &Value) -> Vec<Value> {
    let err = |msg: String| vec![json!({"Error": {"msg": msg}})];
    match cmd {
        Value::String(s) if s == "Ping" => vec![json!("Success")],
        Value::String(s) if s == "Reload" => {
            let node = node.clone();
            match tokio::task::spawn_blocking(move || node.reload_schema()).await {
                Ok(Ok(report)) => vec![
                    json!({"Json": {
                        "created_tables": report.created_tables,
                        "added_columns": report.added_columns,
                        "created_indexes": report.created_indexes,
                        "dropped_indexes": report.dropped_indexes,
                    }}),
                    json!("Success"),
                ],
                Ok(Err(e)) => err(format!("{e:#}")),
                Err(e) => err(e.to_string()),
            }
        }
        Value::Object(o)
            if matches!(
                o.get("Cluster").and_then(Value::as_str),
                Some("Rejoin" | "MembershipStates")
            ) =>
        {
            match membership(node, o["Cluster"].as_str() == Some("Rejoin")).await {
                Ok(v) => vec![json!({ "Json": v }), json!("Success")],
                Err(e) => err(e),
            }
        }
        Value::Object(o) if o.contains_key("Sync") => match sync(node, &o["Sync"]).await {
            Ok(v) => vec![json!({ "Json": v }), json!("Success")],
            Err(e) => err(e),
        },
        Value::Object(o) if o.contains_key("Actor") => match actor(node, &o["Actor"]).await {
            Ok(v) => vec![json!({ "Json": v }), json!("Success")],
            Err(e) => err(e),
        },
        Value::Object(o) if o.contains_key("Log") => match log(&o["Log"]) {
            Ok(v) => vec![json!({ "Json": v }), json!("Success")],
            Err(e) => err(e),
        },
        Value::Object(o) if o.contains_key("Cluster") => {
            match crate::cluster::control::handle(&node.cluster, cmd) {
                Some(Ok(v)) => vec![json!({ "Json": v }), json!("Success")],
                Some(Err(e)) => err(e),
                None => err("malformed cluster command".into()),
            }
        }
        Value::Object(o) if o.contains_key("Debug") => {
            match crate::watchdog::inject(node, &o["Debug"]) {
                Ok(v) => vec![json!({ "Json": v }), json!("Success")],
                Err(e) => err(e),
            }
        }
        Value::Object(o) if o.get("Subs").and_then(Value::as_str) == Some("List") => {
            let list = node.subs.list();
            vec![json!({ "Json": list }), json!("Success")]
        }
        other => err(format!(
            "unknown admin command {other}; known: \"Ping\", \"Reload\", {{\"Cluster\":\"Members\"|\"MembershipStates\"|\"Rejoin\"|\"Stats\"}}, {{\"Sync\":\"Generate\"|\"ReconcileGaps\"|\"CheckBookieConsistency\"}}, {{\"Actor\":{{\"Version\":{{\"actor_id\":…,\"version\":N}}}}}}, {{\"Log\":{{\"Set\":{{\"filter\":…}}}}}}, {{\"Log\":\"Reset\"}}, {{\"Subs\":\"List\"}}"
        )),
    }
}

/// How long an admin command waits for the membership task.
const MEMBERSHIP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn membership(node: &Arc<Node>, rejoin: bool) -> Result<Value, String> {
    use crate::cluster::status::MembershipCmd;
    let tx = node
        .cluster
        .membership
        .get()
        .ok_or("gossip is not running on this node (standalone)")?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    let cmd = if rejoin {
        MembershipCmd::Rejoin(reply)
    } else {
        MembershipCmd::States(reply)
    };
    tx.send(cmd)
        .await
        .map_err(|_| "the membership task has stopped")?;
    let v = tokio::time::timeout(MEMBERSHIP_TIMEOUT, answer)
        .await
        .map_err(|_| "the membership task did not answer within 5 s (see /v1/health)")?
        .map_err(|_| "the membership task has stopped")?;
    match v.get("error").and_then(Value::as_str) {
        Some(e) => Err(e.to_string()),
        None => Ok(v),
    }
}

/// Runs `f` on a connection of the read pool, off the async runtime.
async fn with_reader<T: Send + 'static>(
    node: &Arc<Node>,
    f: impl FnOnce(&rusqlite::Connection, &crate::store::Shared) -> Result<T> + Send + 'static,
) -> Result<T, String> {
    let node = node.clone();
    tokio::task::spawn_blocking(move || {
        let conn = node.reads.get()?;
        f(&conn, &node.shared)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("{e:#}"))
}

async fn sync(node: &Arc<Node>, cmd: &Value) -> Result<Value, String> {
    match cmd.as_str() {
        Some("Generate") => {
            let me = node.actor;
            with_reader(node, move |_, shared| {
                Ok(crate::inspect::sync_state(&shared.book.read().expect("book lock"), me))
            })
            .await
        }
        Some("CheckBookieConsistency") => {
            let diff = with_reader(node, crate::inspect::check_bookkeeping).await?;
            if diff.is_empty() {
                Ok(json!({"consistent": true}))
            } else {
                Err(format!(
                    "bookkeeping differs from the database (run `verdigris sync reconcile-gaps` to rebuild it): {}",
                    diff.join("; ")
                ))
            }
        }
        Some("ReconcileGaps") => {
            let node = node.clone();
            let (before, after) = tokio::task::spawn_blocking(move || {
                node.store.lock().expect("store lock").reconcile_bookkeeping()
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{e:#}"))?;
            Ok(json!({"gaps_before": before, "gaps_after": after}))
        }
        _ => Err(format!(
            "unknown sync command {cmd}; known: \"Generate\", \"ReconcileGaps\", \"CheckBookieConsistency\""
        )),
    }
}

async fn actor(node: &Arc<Node>, cmd: &Value) -> Result<Value, String> {
    let v = cmd
        .get("Version")
        .ok_or(r#"unknown actor command; known: {"Version":{"actor_id":"<id>","version":N}}"#)?;
    let id = v["actor_id"]
        .as_str()
        .and_then(crate::crdt::ActorId::parse)
        .ok_or("actor_id must be an actor id (32 hex digits, or a UUID)")?;
    let version = v["version"]
        .as_u64()
        .filter(|v| *v > 0)
        .ok_or("version must be a positive integer")?;
    with_reader(node, move |conn, shared| {
        crate::inspect::actor_version(conn, shared, id, version)
    })
    .await
}

fn log(cmd: &Value) -> Result<Value, String> {
    if cmd.as_str() == Some("Reset") {
        let filter = crate::logging::reset_filter()?;
        return Ok(json!({"filter": filter}));
    }
    let filter = cmd
        .get("Set")
        .and_then(|s| s.get("filter"))
        .and_then(Value::as_str)
        .ok_or(r#"unknown log command; known: {"Set":{"filter":"<RUST_LOG filter>"}}, "Reset""#)?;
    crate::logging::set_filter(filter)?;
    Ok(json!({"filter": filter}))
}

/// Sends one command and collects the responses up to `Success`/`Error`.
pub async fn request(path: &Path, cmd: Value) -> Result<Vec<Value>> {
    let mut s = UnixStream::connect(path).await.with_context(|| {
        format!(
            "connecting to the admin socket {} (is the node running? see admin.path)",
            path.display()
        )
    })?;
    write_frame(&mut s, &cmd).await?;
    let mut out = Vec::new();
    while let Some(v) = read_frame(&mut s).await? {
        if v == json!("Success") {
            return Ok(out);
        }
        if let Some(msg) = v
            .get("Error")
            .and_then(|e| e.get("msg"))
            .and_then(Value::as_str)
        {
            bail!("{msg}");
        }
        out.push(v);
    }
    bail!("admin socket closed before answering")
}

/// Sends one command and returns the data of its first `{"Json": …}` response (null if none).
pub async fn request_json(path: &Path, cmd: Value) -> Result<Value> {
    Ok(request(path, cmd)
        .await?
        .into_iter()
        .next()
        .and_then(|v| v.get("Json").cloned())
        .unwrap_or(Value::Null))
}
