//! The dispatcher thread: takes the pending change set (commit notifications coalesced by
//! [`super::Manager::enqueue`]), hands it to the units that read a changed table (an index
//! by table: never a scan of every subscription), and marks them ready for their lane's
//! workers. It also sends `/v1/updates` notifications and re-queues units whose retry is due.
//! It never evaluates a subscription, so no subscription's cost delays another's dispatch.
//!
//! The expiry thread removes subscriptions without listeners after `idle_ttl`; it skips a unit
//! that is busy (never waits for a round).

use super::attach::{publish, Published};
use super::unit::Unit;
use super::worker::{read_txn, schedule};
use super::{lock, Core};
use anyhow::Result;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use verdigris_api_types::{NotifyEvent, NotifyKind, SqliteValue};
use verdigris_subscriptions::matview::Changes;

pub(super) fn run(core: Arc<Core>, conn: rusqlite::Connection) {
    loop {
        let (changes, whole, stop, since) = {
            let mut p = lock(&core.pending);
            if !p.stop && p.changes.is_empty() && p.whole.is_empty() {
                let wait = next_retry(&core).unwrap_or(Duration::from_secs(1));
                p = core
                    .wake
                    .wait_timeout(p, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            p.keys = 0;
            (
                std::mem::take(&mut p.changes),
                std::mem::take(&mut p.whole),
                p.stop,
                p.since.take(),
            )
        };
        if stop {
            return;
        }
        if !changes.is_empty() || !whole.is_empty() {
            let batch = Arc::new(changes);
            route(&core, &batch, &whole, since);
            if let Err(e) = notify_updates(&core, &conn, &batch) {
                tracing::error!(error = %format!("{e:#}"), "could not compute /v1/updates notifications");
            }
        }
        requeue_due(&core);
    }
}

/// Queues `batch` on every unit reading a changed table and schedules them.
fn route(core: &Core, batch: &Arc<Changes>, whole: &BTreeSet<String>, since: Option<Instant>) {
    let units: HashMap<u64, (Arc<Unit>, bool)> = {
        let reg = lock(&core.registry);
        let mut out: HashMap<u64, (Arc<Unit>, bool)> = HashMap::new();
        for (t, all) in batch
            .keys()
            .map(|t| (t, false))
            .chain(whole.iter().map(|t| (t, true)))
        {
            for (id, u) in reg.by_table.get(t).into_iter().flatten() {
                let e = out.entry(*id).or_insert_with(|| (u.clone(), false));
                e.1 |= all;
            }
        }
        out
    };
    for (unit, all) in units.into_values() {
        lock(&unit.queue).push(unit.queue_lane(), batch, all, since);
        schedule(core, &unit);
    }
}

fn next_retry(core: &Core) -> Option<Duration> {
    let r = lock(&core.retries);
    r.iter()
        .map(|(at, _)| at.saturating_duration_since(Instant::now()))
        .min()
}

fn requeue_due(core: &Core) {
    let now = Instant::now();
    let due: Vec<Arc<Unit>> = {
        let mut r = lock(&core.retries);
        let (due, later): (Vec<_>, Vec<_>) = r.drain(..).partition(|(at, _)| *at <= now);
        *r = later;
        due.into_iter().map(|(_, u)| u).collect()
    };
    for u in due {
        // Still marked scheduled: hand it straight to its lane.
        core.lane(u.lane_now()).push(u);
    }
}

/// `/v1/updates` notifications: "update" if the row exists now, else "delete".
fn notify_updates(core: &Core, conn: &rusqlite::Connection, changes: &Changes) -> Result<()> {
    let tables: Vec<String> = lock(&core.updates)
        .iter()
        .filter(|(t, h)| !h.listeners.is_empty() && changes.contains_key(*t))
        .map(|(t, _)| t.clone())
        .collect();
    if tables.is_empty() {
        return Ok(());
    }
    let catalog = core.shared.catalog();
    let out = read_txn(conn, |conn| {
        let mut out = Vec::new();
        for table in tables {
            let (Some(keys), Some(t)) = (changes.get(&table), catalog.get(&table)) else {
                continue;
            };
            let sql = format!(
                "SELECT 1 FROM {} WHERE {}",
                crate::store::catalog::quote(&t.name),
                t.sql.pk_where
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut events = Vec::with_capacity(keys.len());
            for k in keys {
                let vals = crate::crdt::pack::unpack(k)
                    .map_err(|e| anyhow::anyhow!("corrupt changed key of {table}: {e}"))?;
                let kind = if stmt.exists(rusqlite::params_from_iter(&vals))? {
                    NotifyKind::Update
                } else {
                    NotifyKind::Delete
                };
                events.push(NotifyEvent::Notify(
                    kind,
                    vals.into_iter().map(SqliteValue::from).collect(),
                ));
            }
            out.push((table, events));
        }
        Ok(out)
    })?;
    let mut slow = 0;
    let mut handles = lock(&core.updates);
    for (table, events) in out {
        if let Some(h) = handles.get_mut(&table) {
            slow += publish(&mut h.listeners, Published::new(0, events));
        }
    }
    handles.retain(|_, h| !h.listeners.is_empty());
    core.config.metrics.slow_listener_drops.inc_by(slow);
    Ok(())
}

/// How often the expiry thread checks for idle subscriptions: a tenth of `idle_ttl`, between
/// 100 ms and 10 s (a check holds each unit's lock while it looks at its members, so a large
/// family is not checked more often than needed).
pub(super) fn expiry_interval(idle_ttl: Duration) -> Duration {
    (idle_ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(10))
}

/// The expiry thread: removes subscriptions idle for longer than `idle_ttl`.
pub(super) fn expire_loop(core: Arc<Core>) {
    let every = expiry_interval(core.config.idle_ttl);
    loop {
        {
            let p = lock(&core.pending);
            if p.stop {
                return;
            }
            let (p, _) = core
                .stopped
                .wait_timeout(p, every)
                .unwrap_or_else(|e| e.into_inner());
            if p.stop {
                return;
            }
        }
        expire_idle(&core);
    }
}

pub(super) fn expire_idle(core: &Core) {
    let ttl = core.config.idle_ttl;
    let units: Vec<Arc<Unit>> = lock(&core.registry).units.values().cloned().collect();
    let mut expired = Vec::new();
    for u in units {
        // A unit in a round is not idle-checked this time: never wait for a round.
        let Ok(mut st) = u.state.try_lock() else {
            continue;
        };
        let mut gone = Vec::new();
        for (idx, s) in st.subs.iter_mut() {
            s.listeners.retain(|l| !l.is_closed());
            if !s.listeners.is_empty() {
                s.idle_since = Instant::now();
            } else if s.idle_since.elapsed() > ttl {
                gone.push(*idx);
            }
            s.sync_meta();
        }
        for idx in gone {
            if let Some(s) = st.remove_member(idx) {
                expired.push(s.meta.id.clone());
            }
        }
    }
    for id in expired {
        core.forget(&id);
        match lock(&core.persist).delete(&id) {
            Ok(()) => tracing::info!(id = %id, "removed idle subscription"),
            Err(e) => {
                tracing::error!(id = %id, error = %format!("{e:#}"), "could not delete an idle subscription from disk")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::expiry_interval;
    use std::time::Duration;

    #[test]
    fn expiry_checks_scale_with_the_idle_ttl_within_bounds() {
        assert_eq!(
            expiry_interval(Duration::from_secs(600)),
            Duration::from_secs(10)
        );
        assert_eq!(
            expiry_interval(Duration::from_secs(5)),
            Duration::from_millis(500)
        );
        assert_eq!(expiry_interval(Duration::ZERO), Duration::from_millis(100));
    }
}
