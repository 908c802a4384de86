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

/// Serves the admin socket until the task is dropped.
pub async fn serve(node: Arc<Node>, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A stale socket from a previous run (we hold the database lock, so it is not live).
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding admin socket {}", path.display()))?;
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
        Value::Object(o) if o.contains_key("Cluster") => {
            match crate::cluster::control::handle(&node.cluster, cmd) {
                Some(Ok(v)) => vec![json!({ "Json": v }), json!("Success")],
                Some(Err(e)) => err(e),
                None => err("malformed cluster command".into()),
            }
        }
        Value::Object(o) if o.get("Subs").and_then(Value::as_str) == Some("List") => {
            let list = node.subs.list();
            vec![json!({ "Json": list }), json!("Success")]
        }
        other => err(format!(
            "unknown admin command {other}; known: \"Ping\", \"Reload\", {{\"Cluster\":\"Members\"}}, {{\"Subs\":\"List\"}}"
        )),
    }
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
