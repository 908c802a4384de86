//! The cluster: membership (SWIM via foca), the QUIC transport, broadcast of new changes and
//! anti-entropy sync. See docs/cluster.md.
//!
//! Pure parts: [`wire`] and [`codec`] (encoding), [`identity`] (SWIM identity and foca
//! codec), [`chunker`], [`sync_state`] (what to ask peers for). I/O parts: [`transport`],
//! [`membership`], [`broadcast`], [`sync`], [`ingest`] (the apply queue).
//!
//! Tasks, joined by bounded channels:
//!
//! ```text
//! transport ──datagrams──▶ membership (foca) ──datagrams──▶ transport
//! transport ──frames────▶ broadcast::ingress ──chunks──▶ ingest ──▶ Store::ingest
//!                                   └──rebroadcast──▶ broadcaster ──uni streams──▶ transport
//! store commit hook ──local versions──▶ broadcaster
//! sync client ──bi streams──▶ peers' sync servers;  chunks ──▶ ingest
//! ```

pub mod broadcast;
pub mod chunker;
pub mod cli;
pub mod codec;
pub mod control;
pub mod fanout;
pub mod identity;
pub mod ingest;
pub mod members_store;
pub mod membership;
pub mod snapshot;
pub mod status;
pub mod sync;
pub mod sync_sched;
pub mod sync_state;
pub mod tls;
pub mod transport;
pub mod wire;

use crate::node::Node;
use anyhow::Result;
use identity::Actor;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use transport::{Inbound, Transport};

/// A running cluster layer.
pub struct Cluster {
    pub transport: Arc<Transport>,
    /// The bound gossip address.
    pub addr: SocketAddr,
}

impl Cluster {
    pub async fn close(&self) {
        self.transport.close().await;
    }
}

/// Resolves `gossip.bootstrap` entries (`ip:port` or `host:port`).
async fn resolve(bootstrap: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for b in bootstrap {
        match tokio::net::lookup_host(b.as_str()).await {
            Ok(addrs) => out.extend(addrs),
            Err(e) => {
                tracing::warn!(entry = %b, error = %e, "cannot resolve gossip.bootstrap entry")
            }
        }
    }
    out
}

/// Starts membership, broadcast, sync and the apply queue. Fails (naming the setting and the
/// fix) when the gossip address cannot be bound or the TLS files cannot be loaded.
pub async fn start(node: Arc<Node>, stop: watch::Receiver<bool>) -> Result<Cluster> {
    let g = node.config.gossip.clone();
    let status = node.cluster.clone();
    let (dgram_tx, dgram_rx) = mpsc::channel(1024);
    let (frame_tx, frame_rx) = mpsc::channel(node.config.perf.bcast_channel_len.max(16));
    let (sess_tx, sess_rx) = mpsc::channel(16);
    if g.tls.is_none() && !g.plaintext {
        tracing::warn!(
            "no [gossip.tls] configured: peers are not authenticated; set gossip.tls (with a CA) or gossip.plaintext = true"
        );
    }
    let inbound = Inbound {
        datagrams: dgram_tx,
        frames: frame_tx,
        sessions: sess_tx,
    };
    // No fallback to standalone: a node that cannot gossip must say so and stop, or it
    // would silently diverge from its cluster.
    let transport = Transport::bind(&g, status.clone(), inbound)?;
    let addr = transport.local_addr();
    let advertised = g.external_addr.unwrap_or(addr);
    if advertised.ip().is_unspecified() {
        tracing::warn!(%advertised, "gossip.addr is a wildcard address: set gossip.external_addr so peers can reach this node");
    }
    let bump = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let me = Actor {
        id: node.actor,
        addr: advertised,
        bump,
    };
    let shared = node.shared.clone();
    let (hint_tx, hint_rx) = mpsc::channel(sync::HINT_QUEUE);
    let ingest = ingest::start(node.clone(), status.clone(), hint_tx.clone());
    let (local_tx, re_tx) = broadcast::start(
        node.clone(),
        shared.clone(),
        status.clone(),
        transport.clone(),
        advertised,
        stop.clone(),
    );
    node.store
        .lock()
        .expect("store lock")
        .on_commit(Box::new(move |c| {
            if c.local {
                for v in &c.versions {
                    // Never block the writer: a full queue is repaired by sync.
                    let _ = local_tx.try_send(*v);
                }
            }
        }));
    tokio::spawn(broadcast::ingress(
        g.cluster_id,
        shared.clone(),
        status.clone(),
        frame_rx,
        ingest.clone(),
        re_tx,
    ));
    let seeds = resolve(&g.bootstrap).await;
    membership::start(
        node.clone(),
        me,
        transport.clone(),
        status.clone(),
        dgram_rx,
        seeds,
        hint_tx,
        stop.clone(),
    );
    snapshot::remove_leftovers(&node.config.db.path);
    let ctx = Arc::new(sync::SyncCtx {
        node: node.clone(),
        shared: shared.clone(),
        status: status.clone(),
        transport: transport.clone(),
        ingest,
        cluster_id: g.cluster_id,
        snapshots: Default::default(),
    });
    tokio::spawn(sync::serve_loop(ctx.clone(), sess_rx));
    tokio::spawn(sync::client_loop(ctx, hint_rx, stop));
    let gaps = shared.book.read().expect("book lock").gap_count();
    status
        .gaps
        .store(gaps, std::sync::atomic::Ordering::Relaxed);
    Ok(Cluster { transport, addr })
}
