//! The `verdigris` command line: `agent` runs a node; `exec`, `query` talk to a node's HTTP
//! API; `reload` uses the admin socket; `backup` and `restore` work on the database file.

pub mod agent;
pub mod client;
pub mod dev;

use crate::backup::{self, RestoreIdentity};
use crate::config::Config;
use crate::crdt::ActorId;
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "verdigris", version, about = "Verdigris: a gossip-replicated SQLite database for fleets of servers.\n\nEvery node keeps a full SQLite copy; writes spread to all nodes by gossip and merge with CRDT rules. Compatible with Corrosion's config, HTTP API and CLI.", long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Config file (TOML, Corrosion's keys). Without it, the embedded default config is used
    /// (data in ./verdigris-data, API on 127.0.0.1:8080).
    #[arg(short = 'c', long = "config", global = true, env = "VERDIGRIS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Override the API address used by exec/query (default: the first api.addr).
    #[arg(long, global = true)]
    pub api_addr: Option<SocketAddr>,
    /// Override db.path.
    #[arg(long, global = true)]
    pub db_path: Option<PathBuf>,
    /// Override admin.path (the admin socket).
    #[arg(long, global = true)]
    pub admin_path: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (prints the addresses it listens on).
    Agent,
    /// Start a local cluster on loopback with an example schema and a simulated workload
    /// (prints each node's URLs); Ctrl-C stops it.
    Dev(dev::DevArgs),
    /// Run one write statement through POST /v1/transactions.
    Exec {
        /// The SQL statement.
        sql: String,
        /// A positional parameter (repeatable; bound as text).
        #[arg(long = "param", short = 'p')]
        params: Vec<String>,
        /// Print how long it took.
        #[arg(long)]
        timer: bool,
        /// Abort after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Run one read query through POST /v1/queries; prints rows separated by `|`.
    Query {
        /// The SQL query.
        sql: String,
        /// A positional parameter (repeatable; bound as text).
        #[arg(long = "param", short = 'p')]
        params: Vec<String>,
        /// Print the column names first.
        #[arg(long)]
        columns: bool,
        /// Print how long it took.
        #[arg(long)]
        timer: bool,
        /// Abort after this many seconds (default: the node's api.query_timeout_secs).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Re-read the schema files (db.schema_paths) and apply additive changes on the running node.
    Reload,
    /// Cluster membership and fault injection (through the admin socket).
    Cluster {
        #[command(subcommand)]
        cmd: crate::cluster::cli::ClusterCmd,
    },
    /// Subscriptions on the running node (through the admin socket).
    Subs {
        #[command(subcommand)]
        cmd: SubsCmd,
    },
    /// Sync bookkeeping of the running node (through the admin socket).
    Sync {
        #[command(subcommand)]
        cmd: SyncCmd,
    },
    /// What the running node holds of one actor's versions (through the admin socket).
    Actor {
        #[command(subcommand)]
        cmd: ActorCmd,
    },
    /// The running node's log filter (through the admin socket).
    Log {
        #[command(subcommand)]
        cmd: LogCmd,
    },
    /// Generate the TLS certificates gossip needs (CA, server, client).
    Tls {
        #[command(subcommand)]
        cmd: crate::cluster::cli::TlsCmd,
    },
    /// Write a consistent snapshot of the database (works while the node runs).
    Backup {
        /// Where to write the snapshot (must not exist).
        path: PathBuf,
    },
    /// Replace the database with a snapshot (the node must be stopped).
    Restore {
        /// The snapshot written by `verdigris backup`.
        path: PathBuf,
        /// Keep the current database's actor id instead of taking a fresh one. Only safe if
        /// the snapshot is this node's latest state.
        #[arg(long, conflicts_with = "actor_id")]
        self_actor_id: bool,
        /// Take this actor id (UUID).
        #[arg(long)]
        actor_id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SubsCmd {
    /// List subscriptions: id, hash, SQL, maintenance plan, tables, rows, last change id, listeners.
    List,
}

#[derive(Debug, Subcommand)]
pub enum SyncCmd {
    /// Print the sync state this node sends its peers: heads, missing versions, partial ones.
    Generate,
    /// Rebuild the in-memory bookkeeping from the database; prints missing versions before and after.
    ReconcileGaps,
    /// Compare the in-memory bookkeeping with the database; fails (exit 1) when they differ.
    CheckBookieConsistency,
}

#[derive(Debug, Subcommand)]
pub enum ActorCmd {
    /// Whether a version is unknown (null), partial, current or cleared on this node.
    Version {
        /// The origin actor id (32 hex digits, or a UUID).
        actor_id: String,
        /// The version number.
        version: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum LogCmd {
    /// Replace the log filter (RUST_LOG syntax, e.g. `info,verdigris::cluster=debug`).
    Set { filter: String },
    /// Go back to the filter the node started with.
    Reset,
}

/// Sends one admin command and prints each JSON answer.
async fn print_admin(config: &Config, cmd: serde_json::Value) -> Result<()> {
    for r in crate::admin::request(&config.admin.path, cmd).await? {
        println!(
            "{}",
            serde_json::to_string_pretty(r.get("Json").unwrap_or(&r))?
        );
    }
    Ok(())
}

/// Loads the config named by `-c`, or the embedded default, and applies the global overrides.
pub fn load_config(g: &Global) -> Result<Config> {
    let (mut config, warnings) = match &g.config {
        Some(p) => Config::load(p, std::env::vars())?,
        None => Config::default_with_env(std::env::vars())?,
    };
    for w in warnings {
        tracing::warn!("{w}");
    }
    if let Some(p) = &g.db_path {
        config.db.path = p.clone();
    }
    if let Some(p) = &g.admin_path {
        config.admin.path = p.clone();
    }
    if let Some(a) = g.api_addr {
        config.api.addr = vec![a];
    }
    Ok(config)
}

pub fn run(cli: Cli) -> Result<()> {
    if let Command::Dev(args) = cli.command {
        return dev::run(args);
    }
    let config = load_config(&cli.global)?;
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")
    };
    match cli.command {
        Command::Agent => rt()?.block_on(agent::run(config)),
        Command::Dev(_) => unreachable!("handled above"),
        Command::Exec {
            sql,
            params,
            timer,
            timeout,
        } => rt()?.block_on(client::exec(&config, &sql, &params, timer, timeout)),
        Command::Query {
            sql,
            params,
            columns,
            timer,
            timeout,
        } => rt()?.block_on(client::query(
            &config, &sql, &params, columns, timer, timeout,
        )),
        Command::Reload => rt()?.block_on(async {
            let replies =
                crate::admin::request(&config.admin.path, serde_json::json!("Reload")).await?;
            for r in replies {
                println!("{}", r.get("Json").unwrap_or(&r));
            }
            println!("schema reloaded");
            Ok(())
        }),
        Command::Cluster { cmd } => rt()?.block_on(crate::cluster::cli::cluster(&config, cmd)),
        Command::Tls { cmd } => crate::cluster::cli::tls(cmd),
        Command::Subs { cmd: SubsCmd::List } => {
            rt()?.block_on(print_admin(&config, json!({"Subs": "List"})))
        }
        Command::Sync { cmd } => {
            let name = match cmd {
                SyncCmd::Generate => "Generate",
                SyncCmd::ReconcileGaps => "ReconcileGaps",
                SyncCmd::CheckBookieConsistency => "CheckBookieConsistency",
            };
            rt()?.block_on(print_admin(&config, json!({ "Sync": name })))
        }
        Command::Actor {
            cmd: ActorCmd::Version { actor_id, version },
        } => rt()?.block_on(print_admin(
            &config,
            json!({"Actor": {"Version": {"actor_id": actor_id, "version": version}}}),
        )),
        Command::Log { cmd } => {
            let req = match cmd {
                LogCmd::Set { filter } => json!({"Log": {"Set": {"filter": filter}}}),
                LogCmd::Reset => json!({"Log": "Reset"}),
            };
            rt()?.block_on(print_admin(&config, req))
        }
        Command::Backup { path } => {
            backup::backup(&config.db.path, &path)?;
            println!(
                "backup of {} written to {}",
                config.db.path.display(),
                path.display()
            );
            Ok(())
        }
        Command::Restore {
            path,
            self_actor_id,
            actor_id,
        } => {
            let identity = match (self_actor_id, actor_id) {
                (true, _) => RestoreIdentity::KeepCurrent,
                (false, Some(a)) => match ActorId::parse(&a) {
                    Some(a) => RestoreIdentity::Given(a),
                    None => bail!("--actor-id {a:?} is not a UUID"),
                },
                (false, None) => RestoreIdentity::Fresh,
            };
            backup::restore(
                &config.db.path,
                &path,
                identity,
                &config.db.subscriptions_dir(),
            )?;
            println!(
                "restored {} from {}",
                config.db.path.display(),
                path.display()
            );
            Ok(())
        }
    }
}
