//! The maintenance workers: a bounded pool per [`Lane`], each worker with its own read
//! connection. A worker takes a ready unit, refreshes it in one read transaction (one WAL
//! snapshot), writes its new rows and change log to `subscriptions.db`, and only then
//! publishes. A unit is run by one worker at a time, so its change ids stay contiguous and
//! ordered; different units run in parallel, so a slow re-run delays only itself.
//!
//! A round that fails — a query error, a read transaction that does not commit, a persist
//! error — publishes nothing: the unit's subscriptions are reset to their state on disk
//! (what every listener has seen) and the unit is retried with a full re-run after a backoff,
//! exactly as after a crash. If even the state on disk cannot be read, the subscriptions are
//! ended with an error.

use super::attach::{publish, Published};
use super::events::change_events;
use super::images::Taken;
use super::persist::RoundWrite;
use super::unit::{merge, Kind, Lane, Unit, UnitState};
use super::Core;
use anyhow::{Context, Result};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use verdigris_subscriptions::family::Member;
use verdigris_subscriptions::RowChange;

/// Workers per lane.
pub(super) const WORKERS_PER_LANE: usize = 2;
/// Longest wait before retrying a failed unit.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Ready units of one lane. Each unit is queued at most once (its queue's `scheduled` flag),
/// so the queue is bounded by the number of units.
#[derive(Default)]
pub(super) struct LaneQueue {
    ready: Mutex<LaneState>,
    wake: Condvar,
}

#[derive(Default)]
struct LaneState {
    units: VecDeque<Arc<Unit>>,
    stop: bool,
}

impl LaneQueue {
    pub fn push(&self, unit: Arc<Unit>) {
        super::lock(&self.ready).units.push_back(unit);
        self.wake.notify_one();
    }

    pub fn stop(&self) {
        super::lock(&self.ready).stop = true;
        self.wake.notify_all();
    }

    /// The next ready unit; `None` once stopped.
    fn pop(&self) -> Option<Arc<Unit>> {
        let mut st = super::lock(&self.ready);
        loop {
            if st.stop {
                return None;
            }
            if let Some(u) = st.units.pop_front() {
                return Some(u);
            }
            st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Marks `unit` ready unless it already is (or is running, or waiting for a retry).
pub(super) fn schedule(core: &Core, unit: &Arc<Unit>) {
    let mut q = super::lock(&unit.queue);
    if q.live && !q.scheduled && q.has_work() {
        q.scheduled = true;
        drop(q);
        core.lane(unit.lane_now()).push(unit.clone());
    }
}

/// Scheduling priority (nice) of a lane's workers: on a busy host the kernel gives the CPU to
/// keyed rounds (and to the writer and the API) before re-runs, so a re-run that saturates a
/// core slows the re-runs, not the cheap subscriptions.
fn nice(lane: Lane) -> i32 {
    match lane {
        Lane::Keyed => 0,
        Lane::Rerun => 3,
        // CFS weight ~1/10 of a keyed worker's: slowed down on a busy host, not starved.
        Lane::Heavy => 10,
    }
}

/// Lowers the calling thread's priority (Linux: `setpriority` on a thread id is per thread).
fn set_thread_nice(n: i32) {
    if n == 0 {
        return;
    }
    // SAFETY: plain syscalls; `gettid` has no preconditions, and `setpriority` only reads its
    // arguments.
    let r = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, n)
    };
    if r != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), nice = n,
            "could not lower a subscription worker's priority; re-runs compete with keyed rounds for CPU");
    }
}

/// A worker: owns its read connection; ends when its lane is stopped.
pub(super) fn run(core: Arc<Core>, lane: Lane, conn: rusqlite::Connection) {
    set_thread_nice(nice(lane));
    let mut w = Worker {
        conn,
        synced: HashMap::new(),
    };
    while let Some(unit) = core.lane(lane).pop() {
        let retry = w.round(&core, &unit);
        let mut q = super::lock(&unit.queue);
        match retry {
            Some(after) => {
                // Stays scheduled: the retry list owns it until it is due.
                q.whole = true;
                drop(q);
                super::lock(&core.retries).push((Instant::now() + after, unit));
                core.wake.notify_one();
            }
            None if q.has_work() => {
                drop(q);
                core.lane(unit.lane_now()).push(unit);
            }
            None => q.scheduled = false,
        }
    }
}

struct Worker {
    conn: rusqlite::Connection,
    /// Version of each family's member table on this connection.
    synced: HashMap<u64, u64>,
}

/// Tells the unit how long its round took when the round ends (whatever the outcome).
struct RoundTimer<'a>(&'a Unit, Instant);

impl Drop for RoundTimer<'_> {
    fn drop(&mut self) {
        self.0.round_took(self.1.elapsed());
    }
}

/// Runs `f` in one read transaction; an error from `f` or from ending the transaction is
/// returned (never dropped).
pub(super) fn read_txn<T>(
    conn: &rusqlite::Connection,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T>,
) -> Result<T> {
    conn.execute_batch("BEGIN")
        .context("starting a read transaction")?;
    let out = f(conn);
    let end = conn.execute_batch(if out.is_ok() { "COMMIT" } else { "ROLLBACK" });
    match (out, end) {
        (Ok(v), Ok(())) => Ok(v),
        (Ok(_), Err(e)) => Err(anyhow::Error::from(e).context("ending a read transaction")),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(e2)) => Err(e.context(format!("and rolling back failed too: {e2}"))),
    }
}

/// Like [`read_txn`], on a snapshot whose position in the commit order is known: `f` gets it
/// (see [`crate::store::Shared::positioned_snapshot`]).
pub(super) fn positioned_txn<T>(
    shared: &crate::store::Shared,
    conn: &rusqlite::Connection,
    f: impl FnOnce(&rusqlite::Connection, u64) -> Result<T>,
) -> Result<(u64, T)> {
    let pos = shared
        .positioned_snapshot(conn)
        .context("starting a read transaction")?;
    let out = f(conn, pos);
    let end = conn.execute_batch(if out.is_ok() { "COMMIT" } else { "ROLLBACK" });
    match (out, end) {
        (Ok(v), Ok(())) => Ok((pos, v)),
        (Ok(_), Err(e)) => Err(anyhow::Error::from(e).context("ending a read transaction")),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(e2)) => Err(e.context(format!("and rolling back failed too: {e2}"))),
    }
}

type Produced = Vec<(u64, u64, Vec<RowChange>)>;

impl Worker {
    /// One round of `unit`; returns the delay before a retry if it failed.
    fn round(&mut self, core: &Core, unit: &Arc<Unit>) -> Option<Duration> {
        let (batches, whole, since) = match unit.images {
            // A unit kept from before-images runs whenever its table changed.
            Some(_) => {
                let (whole, since) = super::lock(&unit.queue).take_images();
                (vec![], whole, since)
            }
            None => super::lock(&unit.queue).take(),
        };
        let changes = merge(&batches, Some(&*unit.tables));
        drop(batches);
        if !whole && changes.is_empty() && unit.images.is_none() {
            return None;
        }
        let started = Instant::now();
        let mut st = super::lock(&unit.state);
        let _timing = RoundTimer(unit, started);
        let refreshed = match &unit.images {
            Some(table) => self.refresh_images(core, unit, table, &mut st, whole),
            None => self.refresh(unit, &mut st, &changes, whole),
        };
        let result = refreshed.and_then(|produced| {
            persist(core, &st, &produced)?;
            Ok(produced)
        });
        match result {
            Ok(produced) => {
                st.failures = 0;
                let published = !produced.is_empty();
                let mut slow = 0;
                for (idx, first, ch) in produced {
                    let Some(sub) = st.subs.get_mut(&idx) else {
                        continue;
                    };
                    let last = first + ch.len() as u64 - 1;
                    slow += publish(
                        &mut sub.listeners,
                        Published::new(last, change_events(ch, first)),
                    );
                    if sub.listeners.is_empty() {
                        sub.idle_since = sub.idle_since.min(Instant::now());
                    }
                    sub.sync_meta();
                }
                let m = &core.config.metrics;
                m.slow_listener_drops.inc_by(slow);
                m.sub_round.observe(started.elapsed().as_secs_f64());
                if let (true, Some(t)) = (published, since) {
                    m.commit_to_event.observe(t.elapsed().as_secs_f64());
                }
                None
            }
            Err(e) => {
                // Rebuild this connection's copy of a family's member table before the retry,
                // whatever went wrong.
                self.synced.remove(&unit.id);
                st.failures += 1;
                let ids: Vec<String> = st.subs.values().map(|s| s.meta.id.clone()).collect();
                tracing::error!(error = %format!("{e:#}"), subscriptions = ?ids, attempt = st.failures,
                    "subscription round failed: nothing published; resetting to the state on disk and retrying");
                let ended = reset_to_disk(core, &mut st);
                let exponent = st.failures.min(6);
                drop(st);
                for id in ended {
                    core.forget(&id);
                }
                Some(
                    Duration::from_millis(100)
                        .saturating_mul(1 << exponent)
                        .min(MAX_BACKOFF),
                )
            }
        }
    }

    /// Refreshes a unit kept from before-images: on a positioned snapshot, with the images of
    /// the commits since its last position (a re-run if some are missing or `whole`).
    fn refresh_images(
        &mut self,
        core: &Core,
        unit: &Unit,
        table: &str,
        st: &mut UnitState,
        whole: bool,
    ) -> Result<Produced> {
        let from = st.image_pos;
        let subs = &mut st.subs;
        let (pos, out) = positioned_txn(&core.shared, &self.conn, |conn, to| {
            let taken = if whole {
                Taken::Missing
            } else {
                // Two statements: the log's lock is let go before the images are built.
                let needed = super::lock(&core.images).take(table, from, to);
                needed.images()
            };
            if matches!(taken, Taken::Missing) {
                core.config.metrics.sub_image_reruns.inc();
            }
            let mut out: Vec<(u64, Vec<RowChange>)> = Vec::new();
            for (idx, sub) in subs.iter_mut() {
                let r = match &taken {
                    Taken::Images(images) => sub.mv.refresh_images(conn, images),
                    Taken::Missing => sub.mv.recompute(conn),
                };
                let ch = r.with_context(|| format!("refreshing {}", sub.meta.id))?;
                if !ch.is_empty() {
                    out.push((*idx, ch));
                }
            }
            Ok(out)
        })?;
        st.image_pos = pos;
        super::lock(&core.images).advance(table, unit.id, pos);
        Ok(assign_ids(st, out))
    }

    /// Refreshes the unit's subscriptions; assigns change ids to what changed.
    fn refresh(
        &mut self,
        unit: &Unit,
        st: &mut UnitState,
        changes: &verdigris_subscriptions::matview::Changes,
        whole: bool,
    ) -> Result<Produced> {
        if let Kind::Family(info) = &unit.kind {
            let have = self.synced.get(&unit.id).copied();
            self.synced.remove(&unit.id);
            let v = st
                .sync_members(info, &self.conn, have)
                .context("updating the family's member table")?;
            self.synced.insert(unit.id, v);
        }
        let out = read_txn(&self.conn, |conn| {
            let mut out: Vec<(u64, Vec<RowChange>)> = Vec::new();
            match &unit.kind {
                Kind::Family(info) if !whole => {
                    let UnitState { subs, index, .. } = &mut *st;
                    out = info.refresh(conn, subs, index, changes)?;
                }
                _ => {
                    let UnitState { subs, index, .. } = &mut *st;
                    for (idx, sub) in subs.iter_mut() {
                        let family = sub.value.is_some();
                        if family {
                            if let Some(k) = sub.mv.keyed() {
                                index.remove_member(*idx, k);
                            }
                        }
                        let r = if whole {
                            sub.mv.recompute(conn)
                        } else {
                            sub.mv.refresh(conn, &unit.tables, changes)
                        };
                        if family {
                            if let Some(k) = sub.mv.keyed() {
                                index.add_member(*idx, k);
                            }
                        }
                        let ch = r.with_context(|| format!("refreshing {}", sub.meta.id))?;
                        if !ch.is_empty() {
                            out.push((*idx, ch));
                        }
                    }
                }
            }
            Ok(out)
        })?;
        Ok(assign_ids(st, out))
    }
}

/// Gives each subscription's changes their change ids.
fn assign_ids(st: &mut UnitState, out: Vec<(u64, Vec<RowChange>)>) -> Produced {
    let mut produced = Vec::with_capacity(out.len());
    for (idx, ch) in out {
        if let Some(sub) = st.subs.get_mut(&idx) {
            let first = sub.last_change_id + 1;
            sub.last_change_id += ch.len() as u64;
            produced.push((idx, first, ch));
        }
    }
    produced
}

/// Writes a round to disk in one transaction.
fn persist(core: &Core, st: &UnitState, produced: &Produced) -> Result<()> {
    if produced.is_empty() {
        return Ok(());
    }
    let writes: Vec<RoundWrite<'_>> = produced
        .iter()
        .filter_map(|(idx, first, ch)| {
            let sub = st.subs.get(idx)?;
            Some(RoundWrite {
                sub: &sub.meta.id,
                first_change_id: *first,
                changes: ch,
                next_row_id: sub.mv.next_row_id(),
                retention: core.config.retention,
            })
        })
        .collect();
    super::lock(&core.persist).write_round(&writes)
}

/// Resets every subscription of the unit to its state on disk; returns the ids of those whose
/// state could not be read (they are ended with an error).
fn reset_to_disk(core: &Core, st: &mut UnitState) -> Vec<String> {
    let mut ended = Vec::new();
    let idxs: Vec<u64> = st.subs.keys().copied().collect();
    for idx in idxs {
        let Some(mut sub) = st.remove_member(idx) else {
            continue;
        };
        let loaded = super::lock(&core.persist).load_one(&sub.meta.id);
        match loaded {
            Ok(Some((stored, rows))) => {
                sub.mv.import(rows, stored.next_row_id);
                sub.last_change_id = stored.last_change_id;
                sub.sync_meta();
                st.add_member(idx, sub);
            }
            other => {
                let why = match other {
                    Err(e) => format!("its state on disk could not be read: {e:#}"),
                    _ => "its state on disk is gone".to_string(),
                };
                tracing::error!(id = %sub.meta.id, reason = %why, "ending a subscription");
                for l in sub.listeners.drain(..) {
                    l.end(&why);
                }
                ended.push(sub.meta.id.clone());
            }
        }
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_error_is_returned_not_dropped() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x)").unwrap();
        // Ending the transaction inside makes the final COMMIT fail.
        let r = read_txn(&conn, |c| {
            c.execute_batch("SELECT * FROM t; COMMIT")?;
            Ok(1)
        });
        let e = r.expect_err("the failed COMMIT is reported");
        assert!(
            format!("{e:#}").contains("ending a read transaction"),
            "{e:#}"
        );
        // And a failing body is reported even though the rollback works.
        let r: Result<()> = read_txn(&conn, |c| {
            c.execute_batch("SELECT * FROM missing")?;
            Ok(())
        });
        assert!(format!("{:#}", r.unwrap_err()).contains("missing"));
        // The connection is usable afterwards (no transaction left open).
        assert!(conn.is_autocommit());
    }
}
