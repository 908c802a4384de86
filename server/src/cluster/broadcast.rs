//! Epidemic broadcast of new changes.
//!
//! - A local commit enqueues its version (the commit hook only `try_send`s). The version is
//!   read back, cut into chunks and pushed at once to [`FANOUT`] random members, then once
//!   more to other members a moment later.
//! - A node receiving a chunk it has not seen hands it to the apply queue and, while the
//!   chunk's `ttl` lasts, re-broadcasts it once to [`FANOUT`] random members (not the sender).
//! - Local chunks go before re-broadcasts. The queue is bounded in bytes: when full, the
//!   oldest re-broadcast is dropped, else the oldest local chunk; a token bucket caps the
//!   bytes sent per second. What is dropped, sync repairs.

use super::chunker::{chunk_version, CHUNK_BYTES};
use super::codec::{self, Msg};
use super::ingest::{IngestTx, Source};
use super::status::{Counters, Status};
use super::transport::Transport;
use crate::crdt::ActorId;
use crate::node::Node;
use crate::store::bookkeeping::Bookie;
use crate::store::Shared;
use bytes::Bytes;
use rand::seq::IndexedRandom;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Semaphore};

/// Members a chunk is pushed to per round.
pub const FANOUT: usize = 3;
/// Hops a chunk may still travel when it leaves its origin.
pub const INITIAL_TTL: u8 = 4;
/// Rounds a local chunk is pushed (each to different members).
const LOCAL_ROUNDS: u8 = 2;
const ROUND_DELAY: Duration = Duration::from_millis(200);
/// Bytes of frames waiting to be sent, at most.
const MAX_QUEUE_BYTES: usize = 32 * 1024 * 1024;
/// Stream sends in flight at once.
const MAX_SENDS: usize = 128;
/// Stream sends in flight to one peer: a peer that died but is not yet declared down holds
/// its sends until they time out, and must not use up the budget of the live ones.
const MAX_SENDS_PER_PEER: usize = 8;
/// A pause in local writes this long sends the latest version to every member ([`Msg::Head`]).
const HEAD_QUIET: Duration = Duration::from_millis(300);
/// During continuous writes, the latest version is sent at least this often.
const HEAD_EVERY: Duration = Duration::from_secs(1);
/// Chunks remembered as seen (FIFO eviction).
const SEEN_CAPACITY: usize = 100_000;

type ChunkKey = (ActorId, u64, u64, u64);

struct Pending {
    frame: Bytes,
    due: Instant,
    rounds_left: u8,
    local: bool,
    sent: Vec<SocketAddr>,
}

/// Remembers which chunks passed through, to stop re-broadcast loops.
#[derive(Default)]
pub struct Seen {
    set: HashSet<ChunkKey>,
    order: VecDeque<ChunkKey>,
}

impl Seen {
    /// Inserts `k`; returns false if it was already there.
    pub fn insert(&mut self, k: ChunkKey) -> bool {
        if !self.set.insert(k) {
            return false;
        }
        self.order.push_back(k);
        if self.order.len() > SEEN_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

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
    queue: VecDeque<Pending>,
    queued_bytes: usize,
    tokens: f64,
    rate: f64,
    last_refill: Instant,
    sends: Arc<Semaphore>,
    peer_sends: HashMap<SocketAddr, Arc<Semaphore>>,
    /// This node's advertised gossip address (in [`Msg::Head`]).
    me: SocketAddr,
    /// The latest local version not yet announced with [`Msg::Head`].
    head: Option<(ActorId, u64)>,
    last_local: Instant,
    head_sent: Instant,
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
        queue: VecDeque::new(),
        queued_bytes: 0,
        tokens: rate,
        rate,
        last_refill: Instant::now(),
        sends: Arc::new(Semaphore::new(MAX_SENDS)),
        peer_sends: HashMap::new(),
        me,
        head: None,
        last_local: Instant::now(),
        head_sent: Instant::now(),
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
                    self.head = Some((actor, newest.max(self.head.map_or(0, |h| h.1))));
                    self.last_local = Instant::now();
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
            let (frames, bytes) = (self.queue.len() as u64, self.queued_bytes as u64);
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
        let r = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Bytes>> {
            let conn = node.reads.get()?;
            let mut out = Vec::new();
            for v in versions {
                for vc in crate::store::feed::read_versions(&conn, &shared, actor, v..=v)? {
                    for chunk in chunk_version(vc, CHUNK_BYTES) {
                        let msg = Msg::Change {
                            chunk,
                            ttl: INITIAL_TTL,
                        };
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
        self.queued_bytes += frame.len();
        let p = Pending {
            frame,
            due: Instant::now(),
            rounds_left: if local { LOCAL_ROUNDS } else { 1 },
            local,
            sent: Vec::new(),
        };
        if local {
            let at = self
                .queue
                .iter()
                .position(|p| !p.local)
                .unwrap_or(self.queue.len());
            self.queue.insert(at, p);
        } else {
            self.queue.push_back(p);
        }
        while self.queued_bytes > MAX_QUEUE_BYTES {
            let victim = self.queue.iter().position(|p| !p.local).unwrap_or(0);
            match self.queue.remove(victim) {
                Some(p) => {
                    self.queued_bytes -= p.frame.len();
                    Counters::bump(&self.status.counters.broadcast_dropped);
                }
                None => break,
            }
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last_refill).as_secs_f64();
        self.last_refill = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.rate);
    }

    /// Sends the latest local version to every alive member once local writes pause (and
    /// every [`HEAD_EVERY`] while they go on): a member that missed the last versions learns
    /// it is behind and syncs with this node at once, instead of at its next idle round.
    fn announce_head(&mut self) {
        let Some((actor, version)) = self.head else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(self.last_local) < HEAD_QUIET
            && now.duration_since(self.head_sent) < HEAD_EVERY
        {
            return;
        }
        let peers = alive_peers(&self.status);
        if peers.is_empty() {
            return; // announced once members appear (they also sync with us when they do)
        }
        self.head = None;
        self.head_sent = now;
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

    /// Sends every due item the byte budget allows, grouped per peer.
    fn flush(&mut self) {
        self.refill();
        let peers = alive_peers(&self.status);
        if peers.is_empty() {
            // Nobody to tell yet: keep the queue (bounded in bytes) until members appear.
            return;
        }
        self.peer_sends.retain(|a, _| peers.contains(a));
        let now = Instant::now();
        let mut per_peer: HashMap<SocketAddr, Vec<Bytes>> = HashMap::new();
        let mut keep = VecDeque::new();
        let mut rng = rand::rng();
        while let Some(mut p) = self.queue.pop_front() {
            if p.due > now || self.tokens < p.frame.len() as f64 {
                keep.push_back(p);
                continue;
            }
            let candidates: Vec<SocketAddr> = peers
                .iter()
                .filter(|a| !p.sent.contains(a))
                .copied()
                .collect();
            let chosen: Vec<SocketAddr> = candidates
                .choose_multiple(&mut rng, FANOUT)
                .copied()
                .collect();
            for a in &chosen {
                self.tokens -= p.frame.len() as f64;
                per_peer.entry(*a).or_default().push(p.frame.clone());
            }
            p.sent.extend(chosen);
            p.rounds_left = p.rounds_left.saturating_sub(1);
            if p.rounds_left > 0 && p.sent.len() < peers.len() {
                p.due = now + ROUND_DELAY;
                keep.push_back(p);
            } else {
                self.queued_bytes -= p.frame.len();
            }
        }
        self.queue = keep;
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
        if !seen.insert(key) || already_have(&book.book, &chunk) {
            continue;
        }
        if ttl > 0 {
            let again = codec::encode(
                &Msg::Change {
                    chunk: chunk.clone(),
                    ttl: ttl - 1,
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
