//! The apply queue: chunks received by broadcast or sync wait in one bounded channel and are
//! applied in batches ([`crate::store::Store::ingest`]), one transaction per batch. A batch is
//! cut at [`MAX_BATCH_CHANGES`] changes or after `perf.apply_queue_timeout`, so the store's
//! lock is held briefly and local writes interleave with remote applies.

use super::status::{Counters, Status};
use super::sync::Hint;
use crate::crdt::hlc::{ntp64_to_secs, wall_ntp64};
use crate::crdt::ActorId;
use crate::node::Node;
use crate::store::buffer::Chunk;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Most changes applied in one transaction (a version completed from the buffer may exceed
/// it: versions are applied whole).
pub const MAX_BATCH_CHANGES: usize = 20_000;
/// A batch that ends in the middle of a version keeps taking that version's chunks up to this
/// many changes, so the version is assembled in memory instead of buffered in the database.
pub const MAX_ASSEMBLY_CHANGES: usize = 120_000;

/// Where a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Broadcast,
    Sync,
}

type Item = (Chunk, Source);

/// The apply queue's sending side: two bounded queues, one for live broadcasts and one for
/// sync (catch-up). The apply task always takes live chunks first, so a catch-up that keeps
/// its queue full (sync sends wait for room) never crowds live broadcasts out: those are only
/// dropped when the live queue itself is full.
#[derive(Clone)]
pub struct IngestTx {
    live: mpsc::Sender<Item>,
    catch_up: mpsc::Sender<Item>,
}

impl IngestTx {
    fn queue(&self, source: Source) -> &mpsc::Sender<Item> {
        match source {
            Source::Broadcast => &self.live,
            Source::Sync => &self.catch_up,
        }
    }

    /// Enqueues without waiting (broadcasts: a full queue drops, sync repairs).
    pub fn try_send(&self, item: Item) -> Result<(), mpsc::error::TrySendError<Item>> {
        self.queue(item.1).try_send(item)
    }

    /// Enqueues, waiting for room (sync: backpressure slows the sender down).
    pub async fn send(&self, item: Item) -> Result<(), mpsc::error::SendError<Item>> {
        self.queue(item.1).send(item).await
    }
}

/// The receiving side: live chunks first.
struct Queues {
    live: mpsc::Receiver<Item>,
    catch_up: mpsc::Receiver<Item>,
}

impl Queues {
    async fn recv(&mut self) -> Option<Item> {
        tokio::select! {
            biased;
            Some(item) = self.live.recv() => Some(item),
            Some(item) = self.catch_up.recv() => Some(item),
            else => None,
        }
    }

    fn try_recv(&mut self) -> Result<Item, mpsc::error::TryRecvError> {
        use mpsc::error::TryRecvError::{Disconnected, Empty};
        match self.live.try_recv() {
            Ok(item) => return Ok(item),
            Err(Empty) => {}
            Err(Disconnected) => return self.catch_up.try_recv(),
        }
        match self.catch_up.try_recv() {
            Ok(item) => Ok(item),
            // The live queue is still open.
            Err(_) => Err(Empty),
        }
    }

    fn len(&self) -> usize {
        self.live.len() + self.catch_up.len()
    }
}

/// Starts the apply task; returns the queue's sending side.
pub fn start(node: Arc<Node>, status: Arc<Status>, hints: mpsc::Sender<Hint>) -> IngestTx {
    let len = node.config.perf.changes_channel_len.max(16);
    let (live, live_rx) = mpsc::channel(len);
    let (catch_up, catch_up_rx) = mpsc::channel(len);
    let queues = Queues {
        live: live_rx,
        catch_up: catch_up_rx,
    };
    tokio::spawn(run(node, status, queues, hints));
    IngestTx { live, catch_up }
}

async fn run(node: Arc<Node>, status: Arc<Status>, mut rx: Queues, hints: mpsc::Sender<Hint>) {
    let wait = Duration::from_millis(node.config.perf.apply_queue_timeout.max(1));
    while let Some(first) = rx.recv().await {
        let mut cost = first.0.changes.len() + 1;
        let mut open = open_version(&first.0);
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + wait;
        while cost < MAX_BATCH_CHANGES || (open.is_some() && cost < MAX_ASSEMBLY_CHANGES) {
            let next = match rx.try_recv() {
                Ok(c) => Some(c),
                Err(mpsc::error::TryRecvError::Empty) => {
                    tokio::time::timeout_at(deadline, rx.recv())
                        .await
                        .unwrap_or_default()
                }
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            };
            let Some(c) = next else { break };
            cost += c.0.changes.len() + 1;
            open = match open_version(&c.0) {
                Some(v) => Some(v),
                // The version's last chunk: it is whole (if nothing was lost on the way).
                None if open == Some((c.0.actor, c.0.version)) => None,
                None => open,
            };
            batch.push(c);
        }
        status.queue_size.store(rx.len() as u64, Ordering::Relaxed);
        let before = status.gaps.load(Ordering::Relaxed);
        apply_batch(&node, &status, batch).await;
        // A new gap: something was missed; the sync loop goes after it now, not at its next
        // round (which may be a long idle backoff away).
        if status.gaps.load(Ordering::Relaxed) > before && hints.try_send(Hint::Behind).is_err() {
            tracing::debug!("sync hint queue full; the next sync round covers the gap");
        }
    }
}

/// The version a chunk belongs to when more of its chunks are still to come.
fn open_version(c: &Chunk) -> Option<(ActorId, u64)> {
    (*c.seqs.end() < c.last_seq).then_some((c.actor, c.version))
}

async fn apply_batch(node: &Arc<Node>, status: &Arc<Status>, batch: Vec<(Chunk, Source)>) {
    let n = batch.len() as u64;
    let broadcast_ts: Vec<(ActorId, u64)> = batch
        .iter()
        .filter(|(c, s)| *s == Source::Broadcast && c.is_complete())
        .map(|(c, _)| (c.actor, c.ts))
        .collect();
    let chunks: Vec<Chunk> = batch.into_iter().map(|(c, _)| c).collect();
    let node2 = node.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut store = node2.store.lock().expect("store lock");
        let report = store.ingest(chunks);
        let gaps = store.shared().book.read().expect("book lock").gap_count();
        (report, gaps)
    })
    .await;
    match result {
        Ok((Ok(report), gaps)) => {
            status
                .counters
                .changes_ingested
                .fetch_add(n, Ordering::Relaxed);
            status.gaps.store(gaps, Ordering::Relaxed);
            for (a, v, e) in &report.apply.failed {
                tracing::warn!(actor = %a, version = v, error = %e, "remote version failed to apply");
            }
            if !report.apply.applied.is_empty() {
                let now = ntp64_to_secs(wall_ntp64());
                for (actor, ts) in broadcast_ts {
                    status.record_peer_lag(actor, now - ntp64_to_secs(ts));
                }
            }
        }
        Ok((Err(e), _)) => {
            Counters::bump(&status.counters.changes_dropped);
            tracing::warn!(error = %format!("{e:#}"), "applying remote changes failed");
        }
        Err(e) => tracing::error!(error = %e, "apply task panicked"),
    }
}
