//! Subscriptions on a node: the registry, the maintenance of every subscription's result after
//! each committed change set, and the fan-out to listeners.
//!
//! Subscriptions are grouped into *units* ([`unit`]: one subscription, or one parameter family)
//! that are maintained independently, so each pays only its own cost:
//! - Commit notifications only merge changed keys into a pending set (coalescing bursts), so
//!   the writer never waits for subscriptions ([`Manager::enqueue`]).
//! - The dispatcher thread ([`dispatch`]) hands each change set to the units reading a changed
//!   table (an index by table) and marks them ready.
//! - Bounded worker pools, one per lane ([`worker`]: keyed work never queues behind re-runs,
//!   cheap re-runs never behind slow ones),
//!   each worker with its own read connection, run one unit at a time: refresh in one read
//!   transaction → persist → publish. A round that fails publishes nothing and is retried.
//! - A unit's state lock serializes its rounds and its listeners attaching, so a listener
//!   receives each change id exactly once, in order. A new subscription runs its initial
//!   query holding no lock ([`registry`]).
//!
//! - [`images`]: before-images for aggregate and `DISTINCT` units, by commit position.
//! - [`persist`]: the on-disk registry, rows and change logs.
//! - [`attach`]: what a listener receives (the attach contract every transport uses).
//! - [`events`]: event encoding.

pub mod attach;
mod dispatch;
mod events;
mod images;
pub mod persist;
mod registry;
mod unit;
mod worker;

use crate::store::reader::ReadPool;
use crate::store::{Committed, Shared};
use anyhow::Result;
use attach::Listener;
pub use attach::{Attach, Item};
use persist::Persist;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use unit::{Lane, Unit};
use verdigris_api_types::NotifyEvent;
use verdigris_subscriptions::matview::Changes;
use verdigris_subscriptions::Schema;

/// Keys pending before the dispatcher treats whole tables as changed.
const MAX_PENDING_KEYS: usize = 200_000;

/// Tunables (from the config).
#[derive(Debug, Clone)]
pub struct SubsConfig {
    /// Change-log entries kept per subscription for `from=` resumes.
    pub retention: u64,
    /// A subscription with no listener for this long is removed.
    pub idle_ttl: Duration,
    /// Where rounds, commit-to-event latency and slow-listener drops are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Default for SubsConfig {
    fn default() -> Self {
        SubsConfig {
            retention: 10_000,
            idle_ttl: Duration::from_secs(600),
            metrics: Arc::default(),
        }
    }
}

/// Why a subscribe/attach request failed before streaming.
#[derive(Debug, thiserror::Error)]
pub enum SubsError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// `from` was given, but there is no such subscription to resume.
    #[error("{0}")]
    NoSubscription(String),
    #[error("{0:#}")]
    Internal(#[from] anyhow::Error),
}

/// Info for admin/introspection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubInfo {
    pub id: String,
    pub hash: String,
    pub sql: String,
    pub plan: String,
    pub tables: Vec<String>,
    pub rows: usize,
    pub last_change_id: u64,
    pub listeners: usize,
}

struct UpdatesHandle {
    id: String,
    listeners: Vec<Listener<NotifyEvent>>,
}

#[derive(Default)]
struct Pending {
    changes: Changes,
    keys: usize,
    /// Tables with too many pending keys: their subscriptions re-run in full.
    whole: BTreeSet<String>,
    stop: bool,
    /// When the oldest commit not yet processed was enqueued.
    since: Option<Instant>,
}

/// Everything the threads share. The [`Manager`] owns it; dropping or stopping the manager
/// stops every thread.
struct Core {
    registry: Mutex<registry::Registry>,
    /// Notified when a subscription finishes its initial query (or gives up).
    registered: Condvar,
    persist: Mutex<Persist>,
    pending: Mutex<Pending>,
    /// Wakes the dispatcher.
    wake: Condvar,
    /// Wakes the expiry thread on stop.
    stopped: Condvar,
    keyed: worker::LaneQueue,
    rerun: worker::LaneQueue,
    heavy: worker::LaneQueue,
    /// Units waiting for a retry after a failed round, with when it is due (at most one entry
    /// per unit).
    retries: Mutex<Vec<(Instant, Arc<Unit>)>>,
    updates: Mutex<HashMap<String, UpdatesHandle>>,
    /// Before-images for units maintained from them ([`images`]).
    images: Mutex<images::ImageLog>,
    reads: Arc<ReadPool>,
    shared: Arc<Shared>,
    config: SubsConfig,
}

impl Core {
    fn lane(&self, lane: Lane) -> &worker::LaneQueue {
        match lane {
            Lane::Keyed => &self.keyed,
            Lane::Rerun => &self.rerun,
            Lane::Heavy => &self.heavy,
        }
    }
}

pub struct Manager {
    core: Arc<Core>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Primary keys and columns from the store's catalog.
struct CatalogSchema(Arc<crate::store::catalog::Catalog>);

impl Schema for CatalogSchema {
    fn primary_key(&self, table: &str) -> Option<Vec<String>> {
        let t = self.0.get(table)?;
        Some(
            t.pk_cols
                .iter()
                .map(|i| t.columns[*i].name.clone())
                .collect(),
        )
    }

    fn columns(&self, table: &str) -> Option<Vec<String>> {
        let t = self.0.get(table)?;
        Some(t.columns.iter().map(|c| c.name.clone()).collect())
    }
}

/// 64-bit FNV-1a: the stable query hash sent as `corro-query-hash`.
pub fn query_hash(sql: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Manager {
    /// Opens the registry in `dir`, restores persisted subscriptions (re-running each and
    /// diffing against its stored rows, so changes missed while down become new change ids),
    /// and starts the dispatcher, the expiry thread and the workers.
    pub fn open(
        dir: &Path,
        reads: Arc<ReadPool>,
        shared: Arc<Shared>,
        config: SubsConfig,
    ) -> Result<Arc<Manager>> {
        let persist = Persist::open(dir)?;
        let stored = persist.load()?;
        let core = Arc::new(Core {
            registry: Mutex::default(),
            registered: Condvar::new(),
            persist: Mutex::new(persist),
            pending: Mutex::default(),
            wake: Condvar::new(),
            stopped: Condvar::new(),
            keyed: worker::LaneQueue::default(),
            rerun: worker::LaneQueue::default(),
            heavy: worker::LaneQueue::default(),
            retries: Mutex::default(),
            updates: Mutex::default(),
            images: Mutex::default(),
            reads,
            shared,
            config,
        });
        let m = Arc::new(Manager {
            core,
            threads: Mutex::default(),
        });
        m.restore(stored)?;
        m.start()?;
        Ok(m)
    }

    fn start(&self) -> Result<()> {
        let open = || crate::store::reader::open_read_connection(self.core.reads.path());
        let mut threads = lock(&self.threads);
        let core = self.core.clone();
        let conn = open()?;
        threads.push(
            std::thread::Builder::new()
                .name("vd-subs-dispatch".into())
                .spawn(move || dispatch::run(core, conn))?,
        );
        let core = self.core.clone();
        threads.push(
            std::thread::Builder::new()
                .name("vd-subs-expire".into())
                .spawn(move || dispatch::expire_loop(core))?,
        );
        for (lane, name) in [
            (Lane::Keyed, "keyed"),
            (Lane::Rerun, "rerun"),
            (Lane::Heavy, "heavy"),
        ] {
            for i in 0..worker::WORKERS_PER_LANE {
                let core = self.core.clone();
                let conn = open()?;
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("vd-subs-{name}-{i}"))
                        .spawn(move || worker::run(core, lane, conn))?,
                );
            }
        }
        Ok(())
    }

    /// Commit listener: merge the changed keys into the pending set and wake the dispatcher;
    /// keep the before-images units need.
    pub fn enqueue(&self, c: &Committed) {
        lock(&self.core.images).record(c);
        let mut p = lock(&self.core.pending);
        p.since.get_or_insert_with(Instant::now);
        // Rows mostly come in runs of one table: lower-case each run's name once.
        let mut name: Option<(&str, String)> = None;
        for (table, pk) in &c.changed {
            if name.as_ref().is_none_or(|(n, _)| *n != &**table) {
                name = Some((table, table.to_ascii_lowercase()));
            }
            let t = &name.as_ref().expect("set above").1;
            if p.whole.contains(t) {
                continue;
            }
            let keys = match p.changes.get_mut(t) {
                Some(keys) => keys,
                None => p.changes.entry(t.clone()).or_default(),
            };
            if keys.insert(pk.clone()) {
                p.keys += 1;
            }
            if p.keys > MAX_PENDING_KEYS {
                // Too many distinct keys: re-run affected subscriptions instead of tracking keys.
                let tables: Vec<String> = p.changes.keys().cloned().collect();
                p.whole.extend(tables);
                p.changes.clear();
                p.keys = 0;
            }
        }
        drop(p);
        self.core.wake.notify_one();
    }

    /// Re-runs every subscription on `tables` in full: for bulk loads that bypass per-row
    /// change tracking (a snapshot import).
    pub fn reload_tables(&self, tables: &[String]) {
        let mut p = lock(&self.core.pending);
        p.since.get_or_insert_with(Instant::now);
        for t in tables {
            let t = t.to_ascii_lowercase();
            if let Some(keys) = p.changes.remove(&t) {
                p.keys = p.keys.saturating_sub(keys.len());
            }
            p.whole.insert(t);
        }
        drop(p);
        self.core.wake.notify_one();
    }

    /// Stops the dispatcher, the expiry thread and the workers (each after its current round)
    /// and waits for them.
    pub fn stop(&self) {
        lock(&self.core.pending).stop = true;
        self.core.wake.notify_all();
        self.core.stopped.notify_all();
        self.core.keyed.stop();
        self.core.rerun.stop();
        self.core.heavy.stop();
        let threads: Vec<_> = lock(&self.threads).drain(..).collect();
        for t in threads {
            if t.thread().id() == std::thread::current().id() {
                continue;
            }
            if t.join().is_err() {
                tracing::error!("a subscription thread panicked");
            }
        }
    }

    /// `POST /v1/updates/{table}`: key notifications for one table. Takes only the updates
    /// handles' lock, which is never held across SQLite work.
    pub fn updates(&self, table: &str) -> Result<Attach<NotifyEvent>, SubsError> {
        let catalog = self.core.shared.catalog();
        let Some(t) = catalog.get(table) else {
            return Err(SubsError::BadRequest(format!(
                "table not found in schema: {table}"
            )));
        };
        let key = t.name.to_ascii_lowercase();
        let mut handles = lock(&self.core.updates);
        let h = handles.entry(key).or_insert_with(|| UpdatesHandle {
            id: crate::crdt::ActorId::random().hyphenated(),
            listeners: vec![],
        });
        let (attach, l) = Attach::listen(h.id.clone(), String::new(), Vec::new(), 0);
        h.listeners.push(l);
        Ok(attach)
    }

    /// (subscriptions, listeners attached to them). Never waits for a round.
    pub fn counts(&self) -> (u64, u64) {
        let reg = lock(&self.core.registry);
        let metas: Vec<_> = reg.metas().collect();
        let listeners = metas
            .iter()
            .map(|m| m.listeners.load(Ordering::Relaxed) as u64)
            .sum();
        (metas.len() as u64, listeners)
    }

    /// Every subscription, for admin views. Never waits for a round.
    pub fn list(&self) -> Vec<SubInfo> {
        let reg = lock(&self.core.registry);
        let mut v: Vec<SubInfo> = reg
            .metas()
            .map(|s| SubInfo {
                id: s.id.clone(),
                hash: s.hash.clone(),
                sql: s.sql.clone(),
                plan: s.plan.to_string(),
                tables: s.tables.iter().cloned().collect(),
                rows: s.rows.load(Ordering::Relaxed),
                last_change_id: s.last_change_id.load(Ordering::Relaxed),
                listeners: s.listeners.load(Ordering::Relaxed),
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.stop();
    }
}
