//! Snapshot bootstrap over a sync stream: a node that holds nothing asks a peer for its whole
//! database instead of every version change by change (the store side is
//! [`crate::store::snapshot`]).
//!
//! ```text
//! client → SyncStart{actor}
//! server → SyncState
//! client → SnapshotRequest, FIN
//! server → SnapshotBegin{bytes}, SnapshotData…, SyncDone, FIN   | Reject(reason)
//! ```
//!
//! Only a node that never wrote anything itself does this, and only from a peer that holds
//! far more ([`wants_snapshot`]): the import replaces whatever remote data the node had
//! (all of it can be fetched again), but never a node's own writes. The client writes the
//! file next to its database, imports it in one transaction and re-runs subscriptions on the
//! loaded tables. While it bootstraps, broadcast changes are dropped and other sync sessions
//! wait; the next sync rounds fetch whatever is newer than the snapshot. When the peer
//! refuses (other schema, busy) or anything fails, the node falls back to change-by-change
//! sync after [`MAX_FAILURES`] attempts.

use super::codec::{self, Msg};
use super::status::Status;
use super::sync::SyncCtx;
use super::sync::{read_counted, write_counted};
use super::sync_state::{held_versions, state_of, wants_snapshot, SyncState};
use crate::store::{db_sibling, snapshot};
use anyhow::{anyhow, bail, ensure, Context, Result};
use quinn::{RecvStream, SendStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// Failed snapshot attempts after which a node syncs change by change.
pub const MAX_FAILURES: u32 = 3;
/// Bytes per [`Msg::SnapshotData`] frame.
const DATA_FRAME: usize = 1 << 20;
/// How long the server may take to copy its database before the first byte.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest wait for any one frame while the snapshot streams.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Bootstrap state of one node: snapshots served and fetched.
#[derive(Debug)]
pub struct Snapshots {
    /// One snapshot served at a time (each copies the whole database).
    serving: Semaphore,
    failures: AtomicU32,
}

impl Default for Snapshots {
    fn default() -> Snapshots {
        Snapshots {
            serving: Semaphore::new(1),
            failures: AtomicU32::new(0),
        }
    }
}

/// Removes a file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Removes snapshot files a crash left next to the database at `db`.
pub fn remove_leftovers(db: &Path) {
    let (Some(dir), Some(name)) = (db.parent(), db.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.snapshot-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Whether this session should fetch a snapshot rather than changes ([`wants_snapshot`]),
/// unless disabled, failed too often, or another session already bootstraps. Answering true
/// claims the bootstrap for this session.
pub fn should_fetch(ctx: &SyncCtx, theirs: &SyncState) -> bool {
    let g = &ctx.node.config.gossip;
    if !g.snapshot_bootstrap || ctx.snapshots.failures.load(Ordering::Relaxed) >= MAX_FAILURES {
        return false;
    }
    let ours = {
        let book = ctx.shared.book.read().expect("book lock");
        if book.get(&ctx.node.actor).is_some_and(|b| b.max > 0) {
            return false; // it wrote: the common case, decided without building a state
        }
        state_of(&book, ctx.node.actor)
    };
    if !wants_snapshot(&ours, theirs, g.snapshot_min_bytes) {
        tracing::debug!(
            ours = held_versions(&ours),
            theirs = held_versions(theirs),
            their_bytes = theirs.db_bytes,
            "no snapshot: syncing change by change"
        );
        return false;
    }
    ctx.status
        .bootstrapping
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

async fn read_within(
    status: &Status,
    recv: &mut RecvStream,
    cluster_id: u16,
    limit: Duration,
) -> Result<Msg> {
    match tokio::time::timeout(limit, read_counted(status, recv)).await {
        Err(_) => bail!("peer too slow"),
        Ok(Ok(None)) => bail!("peer closed the stream before the snapshot ended"),
        Ok(Ok(Some(f))) => Ok(codec::decode(&f, cluster_id)?),
        Ok(Err(e)) => Err(e),
    }
}

/// Client side, after [`should_fetch`] claimed the bootstrap: fetches, imports, and releases
/// the claim. Returns the number of rows imported.
pub async fn fetch(ctx: &SyncCtx, send: SendStream, recv: RecvStream) -> Result<u64> {
    let started = Instant::now();
    let result = fetch_and_import(ctx, send, recv).await;
    ctx.status.bootstrapping.store(false, Ordering::Release);
    match &result {
        Ok(t) => tracing::info!(
            rows = t.rows,
            bytes = t.bytes,
            secs = started.elapsed().as_secs_f64(),
            wait_secs = t.waited.as_secs_f64(),
            transfer_secs = t.transfer.as_secs_f64(),
            import_secs = t.import.as_secs_f64(),
            "bootstrapped from a peer's snapshot"
        ),
        Err(e) => {
            let n = ctx.snapshots.failures.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(error = %format!("{e:#}"), attempt = n, "snapshot bootstrap failed");
            if n >= MAX_FAILURES {
                tracing::warn!("giving up on snapshots; syncing change by change");
            }
        }
    }
    result.map(|t| t.rows)
}

/// What a bootstrap took (for the log).
struct Fetched {
    rows: u64,
    bytes: u64,
    /// Until the peer had its snapshot ready.
    waited: Duration,
    transfer: Duration,
    import: Duration,
}

async fn fetch_and_import(
    ctx: &SyncCtx,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<Fetched> {
    let t0 = Instant::now();
    write_counted(
        &ctx.status,
        &mut send,
        &codec::encode(&Msg::SnapshotRequest, ctx.cluster_id),
    )
    .await?;
    send.finish()?;
    let bytes = match read_within(&ctx.status, &mut recv, ctx.cluster_id, PREPARE_TIMEOUT).await? {
        Msg::SnapshotBegin { bytes } => bytes,
        Msg::Reject(why) => bail!("peer refused: {why}"),
        other => bail!("unexpected answer {other:?}"),
    };
    let waited = t0.elapsed();
    let path = db_sibling(&ctx.node.config.db.path, ".snapshot-in");
    let file = TempFile(path.clone());
    let mut out = tokio::io::BufWriter::with_capacity(
        DATA_FRAME,
        tokio::fs::File::create(&path)
            .await
            .with_context(|| format!("creating {}", path.display()))?,
    );
    let mut got = 0u64;
    loop {
        match read_within(&ctx.status, &mut recv, ctx.cluster_id, FRAME_TIMEOUT).await? {
            Msg::SnapshotData(b) => {
                got += b.len() as u64;
                ensure!(
                    got <= bytes,
                    "peer sent more than the {bytes} bytes it announced"
                );
                out.write_all(&b).await?;
            }
            Msg::SyncDone => break,
            other => bail!("unexpected message {other:?}"),
        }
    }
    ensure!(got == bytes, "snapshot ended after {got} of {bytes} bytes");
    out.flush().await?;
    drop(out);
    let transfer = t0.elapsed() - waited;
    let node = ctx.node.clone();
    let imported = tokio::task::spawn_blocking(move || {
        let mut store = node.store.lock().expect("store lock");
        store.import_snapshot(&file.0)
    })
    .await
    .map_err(|e| anyhow!("import task failed: {e}"))??;
    ctx.node.subs.reload_tables(&imported.tables);
    let gaps = ctx.shared.book.read().expect("book lock").gap_count();
    ctx.status.gaps.store(gaps, Ordering::Relaxed);
    Ok(Fetched {
        rows: imported.rows,
        bytes,
        waited,
        transfer,
        import: t0.elapsed() - waited - transfer,
    })
}

/// Server side: answers a [`Msg::SnapshotRequest`].
pub async fn serve(ctx: &SyncCtx, send: &mut SendStream) -> Result<()> {
    let Ok(_permit) = ctx.snapshots.serving.try_acquire() else {
        let busy = Msg::Reject("busy: already serving a snapshot".into());
        write_counted(&ctx.status, send, &codec::encode(&busy, ctx.cluster_id)).await?;
        return Ok(());
    };
    let path = db_sibling(
        &ctx.node.config.db.path,
        &format!(".snapshot-out-{}", rand::random::<u64>()),
    );
    let file = TempFile(path.clone());
    let node = ctx.node.clone();
    let bytes = tokio::task::spawn_blocking(move || {
        let conn = node.reads.get()?;
        snapshot::write(&conn, &path)
    })
    .await
    .map_err(|e| anyhow!("snapshot task failed: {e}"))??;
    let begin = Msg::SnapshotBegin { bytes };
    write_counted(&ctx.status, send, &codec::encode(&begin, ctx.cluster_id)).await?;
    let mut input = tokio::fs::File::open(&file.0).await?;
    let mut buf = vec![0u8; DATA_FRAME];
    let mut sent = 0u64;
    while sent < bytes {
        let want = usize::try_from(bytes - sent)
            .unwrap_or(DATA_FRAME)
            .min(DATA_FRAME);
        input.read_exact(&mut buf[..want]).await?;
        let frame = codec::encode(&Msg::SnapshotData(buf[..want].to_vec()), ctx.cluster_id);
        tokio::time::timeout(FRAME_TIMEOUT, write_counted(&ctx.status, send, &frame))
            .await
            .map_err(|_| anyhow!("peer too slow"))??;
        sent += want as u64;
    }
    write_counted(
        &ctx.status,
        send,
        &codec::encode(&Msg::SyncDone, ctx.cluster_id),
    )
    .await?;
    Ok(())
}
