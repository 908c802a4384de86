//! A small HTTP client for `exec` and `query` (sends the configured bearer token).

use crate::config::Config;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::time::Instant;

async fn post(
    config: &Config,
    path: &str,
    body: Value,
) -> Result<(StatusCode, hyper::body::Incoming)> {
    let addr = config.api.addr.first().context("no api.addr configured")?;
    let host = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    let mut req =
        Request::post(format!("http://{host}{path}")).header("content-type", "application/json");
    if let Some(t) = config
        .api
        .authz
        .as_ref()
        .and_then(|a| a.bearer_token.as_deref())
    {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(req)
        .await
        .with_context(|| format!("connecting to the node at {host} (is it running?)"))?;
    Ok((resp.status(), resp.into_body()))
}

fn statement(sql: &str, params: &[String]) -> Value {
    if params.is_empty() {
        json!(sql)
    } else {
        json!([sql, params])
    }
}

fn error_text(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

pub async fn exec(
    config: &Config,
    sql: &str,
    params: &[String],
    timer: bool,
    timeout: Option<u64>,
) -> Result<()> {
    let start = Instant::now();
    let path = match timeout {
        Some(t) => format!("/v1/transactions?timeout={t}"),
        None => "/v1/transactions".to_string(),
    };
    let (status, body) = post(config, &path, json!([statement(sql, params)])).await?;
    let body = body.collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{} ({status})", error_text(&body));
    }
    let v: Value = serde_json::from_slice(&body)?;
    let rows = v["results"][0]["rows_affected"].as_u64().unwrap_or(0);
    println!("Rows affected: {rows}");
    match v["version"].as_u64() {
        Some(ver) => println!("Version: {ver}"),
        None => println!("Version: none (no replicated change)"),
    }
    if timer {
        println!("Run Time: {:?}", start.elapsed());
    }
    Ok(())
}

fn render(cell: &Value) -> String {
    match cell {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(bytes) => {
            let hex: String = bytes
                .iter()
                .map(|b| format!("{:02x}", b.as_u64().unwrap_or(0)))
                .collect();
            format!("x'{hex}'")
        }
        other => other.to_string(),
    }
}

pub async fn query(
    config: &Config,
    sql: &str,
    params: &[String],
    columns: bool,
    timer: bool,
    timeout: Option<u64>,
) -> Result<()> {
    let start = Instant::now();
    let path = match timeout {
        Some(t) => format!("/v1/queries?timeout={t}"),
        None => "/v1/queries".to_string(),
    };
    let (status, body) = post(config, &path, statement(sql, params)).await?;
    let body = body.collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{} ({status})", error_text(&body));
    }
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let ev: Value = serde_json::from_slice(line).context("bad NDJSON line from the node")?;
        if let Some(cols) = ev.get("columns").and_then(Value::as_array) {
            if columns {
                println!("{}", cols.iter().map(render).collect::<Vec<_>>().join("|"));
            }
        } else if let Some(row) = ev.get("row") {
            let cells = row[1].as_array().cloned().unwrap_or_default();
            println!("{}", cells.iter().map(render).collect::<Vec<_>>().join("|"));
        } else if let Some(e) = ev.get("error").and_then(Value::as_str) {
            bail!("{e}");
        }
    }
    if timer {
        println!("Run Time: {:?}", start.elapsed());
    }
    Ok(())
}
