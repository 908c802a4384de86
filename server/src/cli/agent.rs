//! `verdigris agent`: open the node, serve the API and the admin socket, stop on SIGINT/SIGTERM.

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
    crate::watchdog::Watchdog::start(
        node.clone(),
        crate::watchdog::Limits::default(),
        std::time::Duration::from_secs(1),
    );
    let listeners = api::bind(&addrs).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "verdigris agent {} started", env!("CARGO_PKG_VERSION"))?;
    writeln!(out, "  actor id: {}", node.actor)?;
    writeln!(out, "  database: {}", db.display())?;
    for l in &listeners {
        writeln!(out, "  api: http://{}", l.local_addr()?)?;
    }
    writeln!(out, "  admin socket: {}", admin_path.display())?;
    out.flush()?;
    drop(out);
    let admin_node = node.clone();
    let admin = tokio::spawn(async move {
        if let Err(e) = crate::admin::serve(admin_node, &admin_path).await {
            tracing::error!(error = %format!("{e:#}"), "admin socket failed");
        }
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let cluster = crate::cluster::start(node.clone(), stop_rx.clone()).await?;
    if let Some(c) = &cluster {
        println!("  gossip: {}", c.addr);
    }
    let server = tokio::spawn(api::serve(Api::new(node.clone()), listeners, stop_rx));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    if let Some(c) = &cluster {
        c.close().await;
    }
    admin.abort();
    let _ = std::fs::remove_file(&node.config.admin.path);
    Ok(())
}
