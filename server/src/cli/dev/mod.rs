//! `verdigris dev`: a local cluster on loopback for trying Verdigris out. Starts N real
//! `verdigris agent` processes ([`procs`]), each with its own data directory, gossiping in
//! plaintext; loads an example schema (apps, workers, machines) and runs a small simulated
//! workload ([`workload`]); prints each node's URLs and a subscribe command for the routing
//! query. SIGINT or SIGTERM stops every node; a killed dev process takes its nodes with it.

mod procs;
pub mod workload;

use anyhow::{bail, Context, Result};
use procs::NodeProc;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// The example schema written when `--schema` is not given.
pub const EXAMPLE_SCHEMA: &str = include_str!("example.sql");

/// The routing query the banner's subscribe command uses, as a JSON statement.
pub const ROUTING_QUERY: &str = r#"["SELECT id, app, region, address, port FROM machines WHERE state = ? AND health = ?", ["started", "passing"]]"#;

#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// How many nodes to start.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub nodes: u16,
    /// Do not run the simulated workload (the example schema is still loaded).
    #[arg(long)]
    pub no_workload: bool,
    /// Use the schema files in this directory instead of the example schema (no workload then).
    #[arg(long, value_name = "DIR")]
    pub schema: Option<PathBuf>,
    /// Keep the nodes' data in this directory between runs (default: a temporary directory,
    /// removed on exit).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
}

/// Where the nodes live, and whether to remove it at the end.
struct Base {
    dir: PathBuf,
    temporary: bool,
}

impl Drop for Base {
    fn drop(&mut self) {
        if self.temporary {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                eprintln!("could not remove {}: {e}", self.dir.display());
            }
        }
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

/// Runs the dev cluster until SIGINT/SIGTERM. Nodes are started from this (the main)
/// thread: their parent-death signal follows the thread that started them.
pub fn run(args: DevArgs) -> Result<()> {
    let base = match &args.data {
        Some(d) => Base {
            dir: absolute(d)?,
            temporary: false,
        },
        None => Base {
            dir: std::env::temp_dir().join(format!("verdigris-dev-{}", std::process::id())),
            temporary: true,
        },
    };
    std::fs::create_dir_all(&base.dir)
        .with_context(|| format!("creating the data directory {}", base.dir.display()))?;
    let schema = match &args.schema {
        Some(s) => {
            let s = absolute(s)?;
            if !s.exists() {
                bail!(
                    "--schema {} does not exist; give a directory of .sql files",
                    s.display()
                );
            }
            s
        }
        None => {
            let dir = base.dir.join("schema");
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("example.sql"), EXAMPLE_SCHEMA)?;
            dir
        }
    };
    let mut nodes: Vec<NodeProc> = Vec::new();
    for i in 1..=args.nodes {
        let name = format!("node-{i}");
        let seeds: Vec<SocketAddr> = nodes.iter().map(|n| n.gossip).collect();
        nodes.push(NodeProc::start(
            &name,
            &base.dir.join(&name),
            &schema,
            &seeds,
        )?);
    }
    let workload = !args.no_workload && args.schema.is_none();
    print_banner(&nodes, &base, &schema, workload, args.schema.is_some())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let outcome = rt.block_on(supervise(&mut nodes, workload));
    drop(rt);
    for n in nodes.iter_mut() {
        n.terminate();
    }
    for n in nodes.iter_mut() {
        match n.wait_or_kill() {
            Some(s) if s.success() => {}
            Some(s) => eprintln!("{} exited with {s}; see {}", n.name, n.log.display()),
            None => eprintln!("{} could not be reaped", n.name),
        }
    }
    println!("stopped {} nodes", nodes.len());
    outcome
}

/// Runs the workload and waits for a stop signal, reporting nodes that exit on their own.
async fn supervise(nodes: &mut [NodeProc], workload: bool) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = if workload {
        let mut clients = Vec::new();
        for n in nodes.iter() {
            let client = verdigris_client::Client::new([n.api])
                .map_err(|e| anyhow::anyhow!("client for {}: {e}", n.name))?;
            clients.push((client, n.name.clone()));
        }
        Some(tokio::spawn(workload::run(clients, stop_rx)))
    } else {
        None
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut check = tokio::time::interval(std::time::Duration::from_millis(500));
    let mut reported = vec![false; nodes.len()];
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = check.tick() => {
                for (n, seen) in nodes.iter_mut().zip(reported.iter_mut()) {
                    if let (Some(s), false) = (n.exited(), *seen) {
                        *seen = true;
                        eprintln!("{} exited ({s}); see {}", n.name, n.log.display());
                    }
                }
            }
        }
    }
    println!("stopping {} nodes…", nodes.len());
    // The workload task holds the receiver until it ends.
    let _ = stop_tx.send(true);
    if let Some(t) = task {
        if let Err(e) = t.await {
            eprintln!("the workload task failed: {e}");
        }
    }
    Ok(())
}

fn print_banner(
    nodes: &[NodeProc],
    base: &Base,
    schema: &Path,
    workload: bool,
    custom_schema: bool,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let keep = if base.temporary {
        "removed on exit"
    } else {
        "kept"
    };
    writeln!(
        out,
        "Verdigris dev cluster: {} nodes on 127.0.0.1 (data in {}, {keep})\n",
        nodes.len(),
        base.dir.display()
    )?;
    for n in nodes {
        writeln!(
            out,
            "  {}  api http://{a}  ws ws://{a}/v1/ws  console http://{a}/  gossip {}  pid {}",
            n.name,
            n.gossip,
            n.pid(),
            a = n.api
        )?;
        writeln!(out, "          log {}", n.log.display())?;
    }
    writeln!(out)?;
    let first = nodes[0].api;
    let last = nodes[nodes.len() - 1].api;
    if custom_schema {
        writeln!(out, "Schema: {}", schema.display())?;
        writeln!(
            out,
            "Subscribe to a query (current rows, then changes as they happen):\n"
        )?;
        writeln!(out, "  curl -sN http://{last}/v1/subscriptions -H 'content-type: application/json' -d '\"SELECT …\"'\n")?;
    } else {
        writeln!(
            out,
            "Schema: apps, workers, machines ({})",
            schema.join("example.sql").display()
        )?;
        if workload {
            writeln!(out, "Workload: one worker per node publishes its machines, which start, stop and fail health checks.")?;
        } else {
            writeln!(out, "Workload: off (--no-workload); write rows yourself.")?;
        }
        writeln!(
            out,
            "Live routing table (machines started and passing health checks), from {}:\n",
            nodes[nodes.len() - 1].name
        )?;
        writeln!(
            out,
            "  curl -sN http://{last}/v1/subscriptions -H 'content-type: application/json' \\"
        )?;
        writeln!(out, "    -d '{ROUTING_QUERY}'\n")?;
        writeln!(out, "Write on {} and watch it arrive:\n", nodes[0].name)?;
        writeln!(
            out,
            "  curl -s http://{first}/v1/transactions -H 'content-type: application/json' \\"
        )?;
        writeln!(out, "    -d '[[\"UPDATE machines SET health = ? WHERE app = ?\", [\"critical\", \"web\"]]]'\n")?;
    }
    writeln!(out, "Ctrl-C stops every node.")?;
    out.flush()?;
    Ok(())
}
