//! `exec` and `query`: one statement against a node's HTTP API through the Rust client
//! (`verdigris-client`), sending the configured bearer token.

use crate::config::Config;
use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use std::time::{Duration, Instant};
use verdigris_client::{Client, QueryEvent, SqliteValue, Statement, TypedQueryEvent};

fn client(config: &Config) -> Result<Client> {
    let addr = config.api.addr.first().context("no api.addr configured")?;
    let host = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    let mut b = Client::builder([host])
        // One try: the command reports an unreachable node instead of retrying it.
        .request_attempts(1);
    if let Some(t) = config
        .api
        .authz
        .as_ref()
        .and_then(|a| a.bearer_token.as_deref())
    {
        b = b.bearer_token(t);
    }
    Ok(b.build()?)
}

/// Parameters from the command line are all TEXT, as in Corrosion's CLI.
fn statement(sql: &str, params: &[String]) -> Statement {
    if params.is_empty() {
        Statement::new(sql)
    } else {
        Statement::with_params(sql, params.iter().map(String::as_str))
    }
}

pub async fn exec(
    config: &Config,
    sql: &str,
    params: &[String],
    timer: bool,
    timeout: Option<u64>,
) -> Result<()> {
    let start = Instant::now();
    let c = client(config)?;
    let stmts = [statement(sql, params)];
    let out = match timeout {
        Some(t) => c.execute_with_timeout(&stmts, Duration::from_secs(t)).await,
        None => c.execute(&stmts).await,
    }
    .map_err(describe)?;
    let rows = match out.results.first() {
        Some(verdigris_client::ExecResult::Execute { rows_affected, .. }) => *rows_affected,
        Some(verdigris_client::ExecResult::Error { error }) => bail!("{error}"),
        None => 0,
    };
    println!("Rows affected: {rows}");
    match out.version {
        Some(ver) => println!("Version: {ver}"),
        None => println!("Version: none (no replicated change)"),
    }
    if timer {
        println!("Run Time: {:?}", start.elapsed());
    }
    Ok(())
}

/// The node's own message for an HTTP error; the client's description otherwise.
fn describe(e: verdigris_client::Error) -> anyhow::Error {
    match (e.server_message(), e.status()) {
        (Some(m), Some(status)) => anyhow::anyhow!("{m} ({status})"),
        _ => anyhow::Error::new(e),
    }
}

fn render(cell: &SqliteValue) -> String {
    match cell {
        SqliteValue::Null => String::new(),
        SqliteValue::Text(s) => s.clone(),
        SqliteValue::Integer(i) => i.to_string(),
        SqliteValue::Real(f) => serde_json::to_string(f).unwrap_or_else(|_| f.to_string()),
        SqliteValue::Blob(bytes) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("x'{hex}'")
        }
    }
}

fn row_line(cells: &[SqliteValue]) -> String {
    cells.iter().map(render).collect::<Vec<_>>().join("|")
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
    let c = client(config)?;
    let mut events = c
        .query_with_timeout::<Vec<SqliteValue>>(
            statement(sql, params),
            timeout.map(Duration::from_secs),
        )
        .await
        .map_err(describe)?;
    while let Some(ev) = events.next().await {
        let ev: QueryEvent = ev.map_err(describe)?;
        match ev {
            TypedQueryEvent::Columns(cols) if columns => println!("{}", cols.join("|")),
            TypedQueryEvent::Row(_, cells) => println!("{}", row_line(&cells)),
            TypedQueryEvent::Error(e) => bail!("{e}"),
            _ => {}
        }
    }
    if timer {
        println!("Run Time: {:?}", start.elapsed());
    }
    Ok(())
}
