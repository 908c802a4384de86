//! Epidemic broadcast of new changes.
//!
//! - A local commit enqueues its version (the commit hook only `try_send`s). The version is
//!   read back, cut into chunks and pushed at once to [`FANOUT`] random members, then once
//!   more to other members a moment later.
//! - A node receiving a chunk it has not seen hands it to the apply queue and, while the
//!   chunk's `ttl` lasts, re-broadcasts it once to [`FANOUT`] random members.
//! - Local chunks go before re-broadcasts. The queue is bounded in bytes: when full, the
//!   oldest re-broadcast is dropped, else the oldest local chunk; a token bucket caps the
//!   bytes sent per second. What is dropped, sync repairs.
//!
//! The decisions (queue, fan-out, relay rule, head announcements) are in [`super::fanout`];
//! this is the I/O around them.

use super::chunker::{chunk_version, CHUNK_BYTES};
use super::codec::{self, Msg};
use super::fanout::{self, HeadAnnouncer, Outbox, Received, Seen, MAX_QUEUE_BYTES};
use super::ingest::{IngestTx, Source};
use super::status::{Counters, Status};
use super::transport::Transport;
use crate::crdt::ActorId;
use crate::node::Node;
use crate::store::bookkeeping::Bookie;
use crate::store::Shared;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Semaphore};

pub use super::fanout::FANOUT;

/// Stream sends in flight at once.
const MAX_SENDS: usize = 128;
/// Stream sends in flight to one peer: a peer that died but is not yet declared down holds
/// its sends until they time out, and must not use up the budget of the live ones.
const MAX_SENDS_PER_PEER: usize = 8;

/// Alive members' addresses.
pub fn alive_peers(status: &Status) -> Vec<SocketAddr> {
    peers_in(status, &["alive"])
}

/// Members worth a sync attempt: alive or merely suspected. A suspicion can outlive a healed
/// partition (SWIM clears it only when the suspect hears of it and refutes), and a node that
/// synced only with alive members would then stay behind; a suspect that really is down costs
/// one connect timeout.
pub fn sync_peers(status: &Status) -> Vec<SocketAddr> {
    peers_in(status, &["alive", "suspect"])
}

fn peers_in(status: &Status, states: &[&str]) -> Vec<SocketAddr> {
    status
        .members
        .read()
        .expect("members lock")
        .iter()
        .filter(|m| states.contains(&m.state.as_str()))
        .map(|m| m.address)
        .collect()
}

pub struct Broadcaster {
    status: Arc<Status>,
    transport: Arc<Transport>,
    cluster_id: u16,
    outbox: Outbox<Bytes>,
    sends: Arc<Semaphore>,
    peer_sends: HashMap<SocketAddr, Arc<Semaphore>>,
    /// This node's advertised gossip address (in [`Msg::Head`]).
    me: SocketAddr,
    head: HeadAnnouncer,
}

/// Starts the broadcast task. Returns the channel for local versions and the one for
/// re-broadcasts (raw frames).
pub fn start(
    node: Arc<Node>,
    shared: Arc<Shared>,
    status: Arc<Status>,
    transport: Arc<Transport>,
    me: SocketAddr,
    stop: watch::Receiver<bool>,
) -> (mpsc::Sender<(ActorId, u64)>, mpsc::Sender<Bytes>) {
    let cap = node.config.perf.bcast_channel_len.max(16);
    let (local_tx, local_rx) = mpsc::channel(cap);
    let (re_tx, re_rx) = mpsc::channel(cap);
    let rate = node.config.perf.broadcast_bytes_per_sec.max(64 * 1024) as f64;
    let b = Broadcaster {
        status,
        transport,
        cluster_id: node.config.gossip.cluster_id,
        outbox: Outbox::new(rate, MAX_QUEUE_BYTES, Instant::now()),
        sends: Arc::new(Semaphore::new(MAX_SENDS)),
        peer_sends: HashMap::new(),
        me,
        head: HeadAnnouncer::new(Instant::now()),
    };
    tokio::spawn(b.run(node, shared, local_rx, re_rx, stop));
    (local_tx, re_tx)
}

impl Broadcaster {
    async fn run(
        mut self,
        node: Arc<Node>,
        shared: Arc<Shared>,
        mut local_rx: mpsc::Receiver<(ActorId, u64)>,
        mut re_rx: mpsc::Receiver<Bytes>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                v = local_rx.recv() => {
                    let Some((actor, version)) = v else { return };
                    let mut versions = vec![version];
                    while let Ok((_, v)) = local_rx.try_recv() {
                        versions.push(v);
                    }
                    let newest = versions.iter().copied().max().unwrap_or(version);
                    self.head.local(actor, newest, Instant::now());
                    for frame in self.read_local(&node, &shared, actor, versions).await {
                        self.push(frame, true);
                    }
                }
                f = re_rx.recv() => {
                    let Some(frame) = f else { return };
                    self.push(frame, false);
                }
                _ = tick.tick() => {}
            }
            self.flush();
            self.announce_head();
            let (frames, bytes) = (self.outbox.frames() as u64, self.outbox.bytes() as u64);
            self.status
                .broadcast_queue_frames
                .store(frames, Ordering::Relaxed);
            self.status
                .broadcast_queue_bytes
                .store(bytes, Ordering::Relaxed);
        }
    }

    /// Reads local versions back and encodes their chunks.
    async fn read_local(
        &self,
        node: &Arc<Node>,
        shared: &Arc<Shared>,
        actor: ActorId,
        versions: Vec<u64>,
    ) -> Vec<Bytes> {
        let (node, shared, cluster_id) = (node.clone(), shared.clone(), self.cluster_id);
        let ttl = fanout::initial_ttl(self.status.alive_members() as usize);
        let r = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Bytes>> {
            let conn = node.reads.get()?;
            let mut out = Vec::new();
            for v in versions {
                for vc in crate::store::feed::read_versions(&conn, &shared, actor, v..=v)? {
                    for chunk in chunk_version(vc, CHUNK_BYTES) {
                        let msg = Msg::Change { chunk, ttl };
                        out.push(Bytes::from(codec::encode(&msg, cluster_id)));
                    }
                }
            }
            Ok(out)
        })
        .await;
        match r {
            Ok(Ok(frames)) => frames,
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "reading a local version for broadcast failed");
                vec![]
            }
            Err(_) => vec![],
        }
    }

    fn push(&mut self, frame: Bytes, local: bool) {
        let len = frame.len();
        let dropped = self.outbox.push(frame, len, local, Instant::now());
        for _ in 0..dropped {
            Counters::bump(&self.status.counters.broadcast_dropped);
        }
    }

    /// Sends the latest local version to every alive member once local writes pause (and
    /// every [`fanout::HEAD_EVERY`] while they go on), and to each member that comes up: a
    /// member that missed the last versions learns it is behind and syncs with this node at
    /// once, instead of at its next idle round.
    fn announce_head(&mut self) {
        let alive = alive_peers(&self.status);
        if let Some((head, to)) = self.head.came_up(&alive) {
            self.send_head(head, to);
        }
        if !self.head.pending() {
            return;
        }
        if let Some(head) = self.head.due(Instant::now(), !alive.is_empty()) {
            self.send_head(head, alive);
        }
    }

    /// Sends `Head{actor, version}` to `peers` (datagrams).
    fn send_head(&mut self, (actor, version): (ActorId, u64), peers: Vec<SocketAddr>) {
        let msg = Msg::Head {
            actor,
            addr: self.me,
            version,
        };
        let frame = Bytes::from(codec::encode(&msg, self.cluster_id));
        for addr in peers {
            let peer = self
                .peer_sends
                .entry(addr)
                .or_insert_with(|| Arc::new(Semaphore::new(MAX_SENDS_PER_PEER)));
            let Ok(permit) = peer.clone().try_acquire_owned() else {
                Counters::bump(&self.status.counters.broadcast_dropped);
                continue;
            };
            let (t, frame) = (self.transport.clone(), frame.clone());
            tokio::spawn(async move {
                if let Err(e) = t.send_datagram(addr, frame).await {
                    tracing::debug!(%addr, error = %format!("{e:#}"), "sending our head failed");
                }
                drop(permit);
            });
        }
    }

    /// Sends every due frame the byte budget allows, grouped per peer.
    fn flush(&mut self) {
        let peers = alive_peers(&self.status);
        self.peer_sends.retain(|a, _| peers.contains(a));
        let per_peer = self.outbox.flush(&peers, Instant::now(), &mut rand::rng());
        for (addr, frames) in per_peer {
            let peer = self
                .peer_sends
                .entry(addr)
                .or_insert_with(|| Arc::new(Semaphore::new(MAX_SENDS_PER_PEER)));
            let (Ok(peer_permit), Ok(permit)) = (
                peer.clone().try_acquire_owned(),
                self.sends.clone().try_acquire_owned(),
            ) else {
                Counters::bump(&self.status.counters.broadcast_dropped);
                continue;
            };
            let (t, status) = (self.transport.clone(), self.status.clone());
            tokio::spawn(async move {
                for batch in frames.chunks(64) {
                    if let Err(e) = t.send_frames(addr, batch).await {
                        Counters::bump(&status.counters.broadcast_dropped);
                        tracing::debug!(%addr, error = %format!("{e:#}"), "broadcast send failed");
                        break;
                    }
                }
                drop((permit, peer_permit));
            });
        }
    }
}

/// Handles broadcast frames received from peers: new chunks go to the apply queue and, while
/// their ttl lasts, back out as re-broadcasts.
pub async fn ingress(
    cluster_id: u16,
    book: Arc<Shared>,
    status: Arc<Status>,
    mut frames: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    ingest: IngestTx,
    rebroadcast: mpsc::Sender<Bytes>,
) {
    let mut seen = Seen::default();
    while let Some((_peer, frame)) = frames.recv().await {
        let (chunk, ttl) = match codec::decode(&frame, cluster_id) {
            Ok(Msg::Change { chunk, ttl }) => (chunk, ttl),
            Ok(_) => {
                Counters::bump(&status.counters.malformed);
                continue;
            }
            Err(super::wire::DecodeError::WrongCluster { .. }) => {
                Counters::bump(&status.counters.wrong_cluster);
                continue;
            }
            Err(_) => {
                Counters::bump(&status.counters.malformed);
                continue;
            }
        };
        let key = (
            chunk.actor,
            chunk.version,
            *chunk.seqs.start(),
            *chunk.seqs.end(),
        );
        let relay_ttl =
            match fanout::receive(&mut seen, key, ttl, || already_have(&book.book, &chunk)) {
                Received::Duplicate => continue,
                Received::New { relay_ttl } => relay_ttl,
            };
        if let Some(ttl) = relay_ttl {
            let again = codec::encode(
                &Msg::Change {
                    chunk: chunk.clone(),
                    ttl,
                },
                cluster_id,
            );
            if rebroadcast.try_send(Bytes::from(again)).is_err() {
                Counters::bump(&status.counters.broadcast_dropped);
            }
        }
        if status
            .bootstrapping
            .load(std::sync::atomic::Ordering::Relaxed)
            || ingest.try_send((chunk, Source::Broadcast)).is_err()
        {
            Counters::bump(&status.counters.changes_dropped);
        }
    }
}

fn already_have(book: &RwLock<Bookie>, c: &crate::store::buffer::Chunk) -> bool {
    book.read()
        .expect("book lock")
        .has_seqs(&c.actor, c.version, &c.seqs)
}
