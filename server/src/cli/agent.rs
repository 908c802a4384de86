//! `verdigris agent`: open the node, join the cluster, serve the API and the admin socket,
//! write periodic snapshots if configured, stop on SIGINT/SIGTERM.
//!
//! Everything that can fail on bad configuration (database, schema, API and gossip addresses,
//! TLS files) is done before the startup lines are printed, so a misconfigured node exits
//! non-zero with one error line instead of half-starting.

use crate::api::{self, Api};
use crate::config::Config;
use crate::node::Node;
use anyhow::Result;
use std::io::Write;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

pub async fn run(config: Config) -> Result<()> {
    let admin_path = config.admin.path.clone();
    let addrs = config.api.addr.clone();
    let db = config.db.path.clone();
    let node = tokio::task::spawn_blocking(move || Node::open(config)).await??;
    let limits = crate::watchdog::Limits::from(&node.config.watchdog);
    crate::watchdog::Watchdog::start(node.clone(), limits, std::time::Duration::from_secs(1));
    let listeners = api::bind(&addrs).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let cluster = crate::cluster::start(node.clone(), stop_rx.clone()).await?;
    let snapshots = crate::backup::periodic::start(node.clone(), stop_rx.clone())?;
    let admin_listener = crate::admin::bind(&admin_path)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "verdigris agent {} started", env!("CARGO_PKG_VERSION"))?;
    writeln!(out, "  actor id: {}", node.actor)?;
    writeln!(out, "  database: {}", db.display())?;
    for l in &listeners {
        writeln!(out, "  api: http://{}", l.local_addr()?)?;
    }
    writeln!(out, "  gossip: {}", cluster.addr)?;
    if let Some(dir) = &node.config.snapshots.dir {
        writeln!(out, "  snapshots: {}", dir.display())?;
    }
    writeln!(out, "  admin socket: {}", admin_path.display())?;
    out.flush()?;
    drop(out);
    let admin_node = node.clone();
    let admin = tokio::spawn(async move {
        if let Err(e) = crate::admin::serve(admin_node, admin_listener).await {
            tracing::error!(error = %format!("{e:#}"), "admin socket failed");
        }
    });
    let server = tokio::spawn(api::serve(Api::new(node.clone()), listeners, stop_rx));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
    // Receivers only go away when their tasks ended: nothing left to tell then.
    let _ = stop_tx.send(true);
    if let Err(e) = server.await {
        tracing::warn!(error = %e, "the API server task ended abnormally");
    }
    if let Some(s) = snapshots {
        if let Err(e) = s.await {
            tracing::warn!(error = %e, "the snapshot task ended abnormally");
        }
    }
    cluster.close().await;
    admin.abort();
    if let Err(e) = std::fs::remove_file(&node.config.admin.path) {
        tracing::debug!(error = %e, "admin socket already gone");
    }
    Ok(())
}
