//! Anti-entropy sync over QUIC bi streams. Decisions are in [`super::sync_state`]; this is the
//! I/O around them.
//!
//! ```text
//! client → SyncStart{actor}
//! server → SyncState (its bookkeeping)            | Reject(reason)
//! client → SyncRequest(needs, newest first), FIN
//! server → SyncChunk…, SyncDone, FIN
//! ```
//!
//! A node that never wrote and holds far less than the peer sends a `SnapshotRequest`
//! instead of a `SyncRequest` ([`super::snapshot`]).
//!
//! Each round picks a few random alive members; concurrent sessions split the work through
//! [`Claims`]. Received chunks go through the normal apply queue (with backpressure, so a
//! slow apply slows the sender down instead of growing memory).

use super::broadcast::sync_peers;
use super::chunker::{chunk_span, chunk_version, CHUNK_BYTES};
use super::codec::{self, Msg};
use super::ingest::{IngestTx, Source};
use super::snapshot;
use super::status::{Counters, Status};
use super::sync_sched::{head_is_news, Outcome, SyncScheduler};
use super::sync_state::{compute_needs, state_of, Claims, Need};
use super::transport::{read_frame, write_frame, Transport};
use crate::crdt::ActorId;
use crate::node::Node;
use crate::store::buffer::Chunk;
use crate::store::Shared;
use anyhow::{anyhow, bail, Result};
use quinn::{RecvStream, SendStream};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};

/// Needs sent in one session.
pub const MAX_NEEDS_PER_SESSION: usize = 4096;
/// Sessions served at once; more are rejected as busy.
pub const MAX_SERVED: usize = 3;
/// Waiting for the peer's first answer (its sync state): a few round trips plus reading its
/// bookkeeping. A peer that died behind a still-open connection fails here, fast.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const SESSION_TIMEOUT: Duration = Duration::from_secs(300);
/// Hints waiting for the sync loop, at most (more are dropped: the next round covers them).
pub const HINT_QUEUE: usize = 256;

/// A reason to sync now rather than at the next round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// This member just came up (joined, restarted, or back from a partition).
    Peer(SocketAddr),
    /// A gap appeared: something was missed.
    Behind,
    /// An origin told its latest version: sync with it if this node lacks that version.
    Head {
        actor: ActorId,
        addr: SocketAddr,
        version: u64,
    },
}

pub struct SyncCtx {
    pub node: Arc<Node>,
    pub shared: Arc<Shared>,
    pub status: Arc<Status>,
    pub transport: Arc<Transport>,
    pub ingest: IngestTx,
    pub cluster_id: u16,
    pub snapshots: super::snapshot::Snapshots,
}

/// Runs sync sessions until `stop`. Sessions are independent: each ends on its own, so a
/// round never waits for its slowest peer. Which peer and when is decided by
/// [`SyncScheduler`]: timer rounds (every `min_sync_backoff` while this node is behind or
/// changes are flowing, backing off to `max_sync_backoff` when idle) top the sessions up; a
/// hint starts one at once with the member that came up (or a random one when a gap
/// appeared); a session that failed, or made progress while gaps remain, is followed at
/// once by another.
pub async fn client_loop(
    ctx: Arc<SyncCtx>,
    mut hints: mpsc::Receiver<Hint>,
    mut stop: watch::Receiver<bool>,
) {
    let perf = &ctx.node.config.perf;
    let min = Duration::from_secs(perf.min_sync_backoff.max(1));
    let max = Duration::from_secs(perf.max_sync_backoff.max(perf.min_sync_backoff).max(1));
    let ingested = ctx.status.counters.changes_ingested.load(Ordering::Relaxed);
    let mut sched = SyncScheduler::new(min, max, std::time::Instant::now(), ingested);
    let mut running: tokio::task::JoinSet<(SocketAddr, Result<usize>)> = Default::default();
    let claims = Arc::new(Mutex::new(Claims::default()));
    loop {
        let next_round = tokio::time::Instant::from_std(sched.next_round());
        tokio::select! {
            _ = stop.changed() => {
                running.abort_all();
                return;
            }
            Some(done) = running.join_next(), if !running.is_empty() => {
                let (addr, result) = match done {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "sync session task failed");
                        continue;
                    }
                };
                let outcome = match result {
                    Ok(n) => Outcome::Received(n),
                    Err(e) => {
                        tracing::debug!(%addr, error = %format!("{e:#}"), "sync session failed");
                        Outcome::Failed
                    }
                };
                let gaps = ctx.shared.book.read().expect("book lock").gap_count();
                ctx.status.gaps.store(gaps, Ordering::Relaxed);
                sched.ended(addr, outcome, std::time::Instant::now(), gaps);
            }
            h = hints.recv() => match h {
                Some(Hint::Peer(addr)) => sched.peer_up(addr, std::time::Instant::now()),
                Some(Hint::Behind) => sched.behind(),
                Some(Hint::Head { actor, addr, version }) => {
                    let book = ctx.shared.book.read().expect("book lock");
                    if head_is_news(&book, ctx.node.actor, actor, version) {
                        sched.head(addr, actor, version);
                    }
                }
                None => return,
            },
            _ = tokio::time::sleep_until(next_round) => {
                let gaps = ctx.shared.book.read().expect("book lock").gap_count();
                ctx.status.gaps.store(gaps, Ordering::Relaxed);
                let ingested = ctx.status.counters.changes_ingested.load(Ordering::Relaxed);
                let book = ctx.shared.book.read().expect("book lock");
                let lacks = |a: &ActorId, v: u64| !book.knows(a, v);
                sched.round(std::time::Instant::now(), gaps, ingested, &mut rand::rng(), lacks);
            }
        }
        if !sched.wants() {
            continue;
        }
        let peers = sync_peers(&ctx.status);
        for addr in sched.start(&peers, std::time::Instant::now(), &mut rand::rng()) {
            let (ctx, claims) = (ctx.clone(), claims.clone());
            running.spawn(async move {
                let r = tokio::time::timeout(SESSION_TIMEOUT, session(&ctx, addr, &claims))
                    .await
                    .unwrap_or_else(|_| Err(anyhow!("session timed out")));
                (addr, r)
            });
        }
    }
}

/// Writes one frame of a sync session, counting its bytes.
pub(super) async fn write_counted(status: &Status, s: &mut SendStream, data: &[u8]) -> Result<()> {
    write_frame(s, data).await?;
    Counters::add(&status.counters.sync_bytes_out, data.len() + 4);
    Ok(())
}

/// Reads one frame of a sync session, counting its bytes.
pub(super) async fn read_counted(status: &Status, r: &mut RecvStream) -> Result<Option<Vec<u8>>> {
    let frame = read_frame(r).await?;
    if let Some(f) = &frame {
        Counters::add(&status.counters.sync_bytes_in, f.len() + 4);
    }
    Ok(frame)
}

async fn read_msg(status: &Status, recv: &mut RecvStream, cluster_id: u16) -> Result<Option<Msg>> {
    read_msg_within(STEP_TIMEOUT, status, recv, cluster_id).await
}

async fn read_msg_within(
    limit: Duration,
    status: &Status,
    recv: &mut RecvStream,
    cluster_id: u16,
) -> Result<Option<Msg>> {
    match tokio::time::timeout(limit, read_counted(status, recv)).await {
        Err(_) => bail!("peer too slow"),
        Ok(Ok(None)) => Ok(None),
        Ok(Ok(Some(f))) => Ok(Some(codec::decode(&f, cluster_id)?)),
        Ok(Err(e)) => Err(e),
    }
}

fn count_rejection(status: &Status, e: &anyhow::Error) {
    match e.downcast_ref::<super::wire::DecodeError>() {
        Some(super::wire::DecodeError::WrongCluster { .. }) => {
            Counters::bump(&status.counters.wrong_cluster)
        }
        _ => Counters::bump(&status.counters.malformed),
    }
}

/// Needs claimed by a running session; released when it ends.
struct Claimed<'a> {
    claims: &'a Mutex<Claims>,
    needs: Vec<Need>,
}

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        self.claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(&self.needs);
    }
}

/// One client session; returns how many chunks were received.
async fn session(ctx: &SyncCtx, addr: SocketAddr, claims: &Mutex<Claims>) -> Result<usize> {
    if ctx.status.bootstrapping.load(Ordering::Acquire) {
        return Ok(0);
    }
    let (mut send, mut recv) = ctx.transport.open_bi(addr).await?;
    let me = ctx.node.actor;
    let start = codec::encode(&Msg::SyncStart { actor: me }, ctx.cluster_id);
    write_counted(&ctx.status, &mut send, &start).await?;
    let answer = read_msg_within(ANSWER_TIMEOUT, &ctx.status, &mut recv, ctx.cluster_id);
    let theirs = match answer.await? {
        Some(Msg::SyncState(s)) => s,
        Some(Msg::Reject(why)) => bail!("rejected: {why}"),
        other => bail!("unexpected answer {other:?}"),
    };
    if snapshot::should_fetch(ctx, &theirs) {
        let rows = snapshot::fetch(ctx, send, recv).await?;
        return Ok(usize::try_from(rows).unwrap_or(usize::MAX).max(1));
    }
    if ctx.status.bootstrapping.load(Ordering::Acquire) {
        return Ok(0); // another session fetches a snapshot; its import would replace this
    }
    let needs = {
        let book = ctx.shared.book.read().expect("book lock");
        compute_needs(&book, me, &theirs)
    };
    let needs = claims
        .lock()
        .expect("claims lock")
        .claim(needs, MAX_NEEDS_PER_SESSION);
    // Released when the session ends, however it ends: sessions overlap, and what one
    // failed to fetch must be free for the next.
    let _claimed = Claimed {
        claims,
        needs: needs.clone(),
    };
    let req = codec::encode(&Msg::SyncRequest(needs.clone()), ctx.cluster_id);
    write_counted(&ctx.status, &mut send, &req).await?;
    send.finish()?;
    if needs.is_empty() {
        return Ok(0);
    }
    let mut n = 0;
    loop {
        match read_msg(&ctx.status, &mut recv, ctx.cluster_id).await {
            Ok(Some(Msg::SyncChunk(c))) => {
                if c.actor == me || !needs.iter().any(|nd| nd.actor() == c.actor) {
                    Counters::bump(&ctx.status.counters.malformed);
                    continue;
                }
                n += 1;
                ctx.ingest
                    .send((c, Source::Sync))
                    .await
                    .map_err(|_| anyhow!("apply queue closed"))?;
            }
            Ok(Some(Msg::SyncDone)) | Ok(None) => break,
            Ok(Some(other)) => bail!("unexpected message {other:?}"),
            Err(e) => {
                count_rejection(&ctx.status, &e);
                return Err(e);
            }
        }
    }
    Counters::bump(&ctx.status.counters.syncs);
    Ok(n)
}

/// Serves sync sessions opened by peers.
pub async fn serve_loop(
    ctx: Arc<SyncCtx>,
    mut sessions: mpsc::Receiver<(SocketAddr, SendStream, RecvStream)>,
) {
    let permits = Arc::new(Semaphore::new(MAX_SERVED));
    while let Some((peer, mut send, recv)) = sessions.recv().await {
        let ctx = ctx.clone();
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    if let Err(e) = serve(&ctx, send, recv).await {
                        tracing::debug!(%peer, error = %format!("{e:#}"), "serving sync failed");
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let msg = codec::encode(&Msg::Reject("busy".into()), ctx.cluster_id);
                    let _ = write_counted(&ctx.status, &mut send, &msg).await;
                    let _ = send.finish();
                });
            }
        }
    }
}

async fn serve(ctx: &SyncCtx, mut send: SendStream, mut recv: RecvStream) -> Result<()> {
    match read_msg(&ctx.status, &mut recv, ctx.cluster_id).await {
        Ok(Some(Msg::SyncStart { .. })) => {}
        Ok(other) => bail!("expected SyncStart, got {other:?}"),
        Err(e) => {
            count_rejection(&ctx.status, &e);
            let why = format!("{e:#}");
            let _ = write_counted(
                &ctx.status,
                &mut send,
                &codec::encode(&Msg::Reject(why.clone()), ctx.cluster_id),
            )
            .await;
            let _ = send.finish();
            return Err(e);
        }
    }
    let mut state = {
        let book = ctx.shared.book.read().expect("book lock");
        state_of(&book, ctx.node.actor)
    };
    // The database file plus its WAL: recent writes may not be checkpointed yet.
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let db = &ctx.node.config.db.path;
    state.db_bytes = size(db) + size(&crate::store::wal_path(db));
    write_counted(
        &ctx.status,
        &mut send,
        &codec::encode(&Msg::SyncState(state), ctx.cluster_id),
    )
    .await?;
    let needs = match read_msg(&ctx.status, &mut recv, ctx.cluster_id).await? {
        Some(Msg::SyncRequest(n)) => n,
        Some(Msg::SnapshotRequest) => {
            snapshot::serve(ctx, &mut send).await?;
            send.finish()?;
            let _ = tokio::time::timeout(STEP_TIMEOUT, send.stopped()).await;
            return Ok(());
        }
        None => return Ok(()),
        Some(other) => bail!("expected SyncRequest, got {other:?}"),
    };
    for need in needs {
        serve_need(ctx, &mut send, need).await?;
    }
    write_counted(
        &ctx.status,
        &mut send,
        &codec::encode(&Msg::SyncDone, ctx.cluster_id),
    )
    .await?;
    send.finish()?;
    let _ = tokio::time::timeout(STEP_TIMEOUT, send.stopped()).await;
    Ok(())
}

/// Frames read ahead of the peer when serving (each about [`CHUNK_BYTES`]).
const SERVE_READ_AHEAD: usize = 64;

/// Reads versions `a..=b` of `actor` on a blocking thread and streams their encoded chunks,
/// keeping those that overlap `seqs` when given. Reading runs ahead of the network by at most
/// [`SERVE_READ_AHEAD`] frames, so the database read and the transfer overlap while memory
/// stays bounded; dropping the receiver stops the reader.
fn stream_chunks(
    ctx: &SyncCtx,
    actor: ActorId,
    a: u64,
    b: u64,
    seqs: Option<Vec<(u64, u64)>>,
) -> mpsc::Receiver<Result<Vec<u8>>> {
    let (node, shared, cluster_id) = (ctx.node.clone(), ctx.shared.clone(), ctx.cluster_id);
    let (tx, rx) = mpsc::channel(SERVE_READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let produce = || -> Result<()> {
            let conn = node.reads.get()?;
            serve_chunks(
                &conn,
                &shared,
                actor,
                a..=b,
                seqs.as_deref(),
                CHUNK_BYTES,
                |chunk| {
                    let frame = codec::encode(&Msg::SyncChunk(chunk), cluster_id);
                    tx.blocking_send(Ok(frame)).is_ok() // false: the session ended
                },
            )
        };
        if let Err(e) = produce() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

/// What a sync server sends for versions `versions` of `actor` (only the chunks overlapping
/// `seqs` when given): the chunks of every version it holds, read from the changes feed; and
/// for a version asked for in part that it holds only in part itself, the pieces it has.
/// Hands each chunk to `emit` until that returns false. Shared with the simulation.
pub fn serve_chunks(
    conn: &rusqlite::Connection,
    shared: &Shared,
    actor: ActorId,
    versions: std::ops::RangeInclusive<u64>,
    seqs: Option<&[(u64, u64)]>,
    max_bytes: usize,
    mut emit: impl FnMut(Chunk) -> bool,
) -> Result<()> {
    let wanted = |c: &Chunk| {
        seqs.is_none_or(|s| {
            s.iter()
                .any(|(x, y)| x <= c.seqs.end() && y >= c.seqs.start())
        })
    };
    let first = *versions.start();
    let mut found = false;
    crate::store::feed::for_each_version(conn, shared, actor, versions, |vc| {
        found = true;
        chunk_version(vc, max_bytes)
            .into_iter()
            .filter(wanted)
            .all(&mut emit)
    })?;
    if let (false, Some(seqs)) = (found, seqs) {
        for (span, vc) in crate::store::buffer::partial_pieces(conn, shared, actor, first, seqs)? {
            if !chunk_span(vc, span, max_bytes).into_iter().all(&mut emit) {
                break;
            }
        }
    }
    Ok(())
}

/// Writes every frame of `frames` to the peer.
async fn send_all(
    status: &Status,
    send: &mut SendStream,
    mut frames: mpsc::Receiver<Result<Vec<u8>>>,
) -> Result<()> {
    while let Some(frame) = frames.recv().await {
        tokio::time::timeout(STEP_TIMEOUT, write_counted(status, send, &frame?))
            .await
            .map_err(|_| anyhow!("peer too slow"))??;
    }
    Ok(())
}

async fn serve_need(ctx: &SyncCtx, send: &mut SendStream, need: Need) -> Result<()> {
    let head = |actor: &ActorId| {
        ctx.shared
            .book
            .read()
            .expect("book lock")
            .get(actor)
            .map_or(0, |b| b.max)
    };
    match need {
        Need::Full { actor, versions } => {
            let end = versions.1.min(head(&actor));
            let a = versions.0.max(1);
            if a <= end {
                send_all(&ctx.status, send, stream_chunks(ctx, actor, a, end, None)).await?;
            }
        }
        Need::Partial {
            actor,
            version,
            seqs,
        } => {
            if version <= head(&actor) {
                send_all(
                    &ctx.status,
                    send,
                    stream_chunks(ctx, actor, version, version, Some(seqs)),
                )
                .await?;
            }
        }
    }
    Ok(())
}
