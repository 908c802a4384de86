//! Follows a routing query and prints every change to its result, across disconnections and
//! failovers.
//!
//! ```sh
//! cargo run -p verdigris-client --example follow_routes -- \
//!     --addr 127.0.0.1:8080 --addr 127.0.0.1:8081 \
//!     --sql "SELECT id, app, address FROM machines WHERE state = 'started' AND healthy = 1"
//! ```
//!
//! Options: `--addr HOST:PORT` (repeatable; default 127.0.0.1:8080), `--sql QUERY`,
//! `--token TOKEN` (bearer), `--ndjson` (one HTTP stream instead of the WebSocket).

use std::process::ExitCode;
use verdigris_client::{Client, SqliteValue, SubscribeOptions, Transport};

const DEFAULT_SQL: &str =
    "SELECT id, app, address FROM machines WHERE state = 'started' AND healthy = 1";

struct Args {
    addrs: Vec<String>,
    sql: String,
    token: Option<String>,
    transport: Transport,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addrs: Vec::new(),
        sql: DEFAULT_SQL.to_string(),
        token: None,
        transport: Transport::WebSocket,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--addr" => args.addrs.push(value("--addr")?),
            "--sql" => args.sql = value("--sql")?,
            "--token" => args.token = Some(value("--token")?),
            "--ndjson" => args.transport = Transport::Ndjson,
            "-h" | "--help" => {
                return Err("usage: follow_routes [--addr HOST:PORT]... [--sql QUERY] [--token TOKEN] [--ndjson]".into())
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if args.addrs.is_empty() {
        args.addrs.push("127.0.0.1:8080".into());
    }
    Ok(args)
}

fn show(row: &[SqliteValue]) -> String {
    let cells: Vec<String> = row
        .iter()
        .map(|v| match v {
            SqliteValue::Null => "NULL".into(),
            SqliteValue::Integer(i) => i.to_string(),
            SqliteValue::Real(f) => f.to_string(),
            SqliteValue::Text(t) => t.clone(),
            SqliteValue::Blob(b) => format!("<{} bytes>", b.len()),
        })
        .collect();
    cells.join(" | ")
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "verdigris_client=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = Client::builder(&args.addrs);
    if let Some(t) = &args.token {
        builder = builder.bearer_token(t);
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let opts = SubscribeOptions::default().transport(args.transport);
    let mut live = client.live_query::<Vec<SqliteValue>>(args.sql.as_str(), opts);
    while let Some(update) = live.next().await {
        let update = match update {
            Ok(u) => u,
            Err(e) => {
                eprintln!("subscription ended: {e}");
                return ExitCode::FAILURE;
            }
        };
        if update.snapshot {
            if let Some(why) = update.reset {
                println!("-- reset ({why:?}): new snapshot");
            }
            println!(
                "-- {} rows at change {:?} ({})",
                live.rows().len(),
                update.change_id,
                live.columns().join(", ")
            );
            for row in live.rows().values() {
                println!("   {}", show(row));
            }
            continue;
        }
        for rid in &update.inserted {
            println!("+ {}", show(&live.rows()[rid]));
        }
        for rid in &update.updated {
            println!("~ {}", show(&live.rows()[rid]));
        }
        for (_, row) in &update.deleted {
            println!("- {}", show(row));
        }
    }
    ExitCode::SUCCESS
}
