//! A running node: the store (single writer), the read pool, configuration and the lock file
//! that marks the database as in use.

use crate::config::Config;
use crate::crdt::ActorId;
use crate::store::reader::ReadPool;
use crate::store::schema::SchemaReport;
use crate::store::Store;
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub struct Node {
    pub config: Config,
    pub store: Arc<Mutex<Store>>,
    pub reads: Arc<ReadPool>,
    /// The store's state readers share (catalog, sites, bookkeeping), without its lock.
    pub shared: Arc<crate::store::Shared>,
    pub actor: ActorId,
    pub started: Instant,
    /// What the cluster layer reports (members, gaps, lag, fault switch).
    pub cluster: Arc<crate::cluster::status::Status>,
    /// Subscriptions (kept current by commit notifications from the store).
    pub subs: Arc<crate::subs::Manager>,
    /// Stall detection (see [`crate::watchdog`]).
    pub watchdog: Arc<crate::watchdog::Watchdog>,
    /// Prometheus event metrics (`GET /metrics`; see [`crate::metrics`]).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Writes and applied changes counted at commit (`GET /v1/stats`).
    pub activity: Arc<crate::activity::Activity>,
    _lock: File,
}

/// Path of the lock file held while a node runs on `db`.
pub fn lock_path(db: &Path) -> PathBuf {
    crate::store::db_sibling(db, ".lock")
}

/// Takes the exclusive lock on the database; fails if a node already runs on it.
pub fn lock_database(db: &Path) -> Result<File> {
    let dir = db.parent().filter(|d| !d.as_os_str().is_empty());
    let unwritable = |e: std::io::Error| {
        let dir = dir.unwrap_or(Path::new("."));
        anyhow::anyhow!(
            "cannot write the data directory {} (db.path = {}): {e}; make it writable by the user running verdigris, or set db.path to a writable location",
            dir.display(),
            db.display()
        )
    };
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(unwritable)?;
    }
    let path = lock_path(db);
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(unwritable)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!(
                "another Verdigris node is running on {} (lock {} is held)",
                db.display(),
                path.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).context("locking the database"),
    }
}

impl Node {
    /// Opens the database, applies the schema files and prepares the read pool.
    pub fn open(config: Config) -> Result<Arc<Node>> {
        let lock = lock_database(&config.db.path)?;
        let mut store = Store::open(&config.db.path)?;
        if !config.db.schema_paths.is_empty() {
            let existing: Vec<PathBuf> = config
                .db
                .schema_paths
                .iter()
                .filter(|p| p.exists())
                .cloned()
                .collect();
            let report = store
                .apply_schema_files(&existing)
                .context("applying schema files")?;
            log_schema_report(&report);
        }
        let actor = store.actor_id();
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let reads = ReadPool::new(config.db.path.clone());
        let subs = crate::subs::Manager::open(
            &config.db.subscriptions_dir(),
            reads.clone(),
            store.shared(),
            crate::subs::SubsConfig {
                retention: config.db.subscription_log_retention,
                idle_ttl: std::time::Duration::from_secs(config.db.subscription_idle_secs),
                metrics: metrics.clone(),
            },
        )
        .context("opening subscriptions")?;
        let notify = subs.clone();
        store.on_commit(Box::new(move |c| notify.enqueue(c)));
        let activity = Arc::new(crate::activity::Activity::default());
        let counted = activity.clone();
        store.on_commit(Box::new(move |c| counted.record(c)));
        let shared = store.shared();
        Ok(Arc::new(Node {
            config,
            store: Arc::new(Mutex::new(store)),
            reads,
            shared,
            actor,
            started: Instant::now(),
            cluster: Arc::default(),
            subs,
            watchdog: Arc::default(),
            metrics,
            activity,
            _lock: lock,
        }))
    }

    /// Re-reads the schema files and applies additive changes.
    pub fn reload_schema(&self) -> Result<SchemaReport> {
        let paths = &self.config.db.schema_paths;
        let missing = crate::store::schema::missing_paths(paths);
        if !missing.is_empty() {
            bail!(
                "schema path {} does not exist (check db.schema_paths)",
                missing[0].display()
            );
        }
        let report = self
            .store
            .lock()
            .expect("store lock")
            .apply_schema_files(paths)?;
        log_schema_report(&report);
        Ok(report)
    }
}

fn log_schema_report(r: &SchemaReport) {
    if r.is_empty() {
        tracing::info!("schema is up to date");
    } else {
        tracing::info!(
            tables = ?r.created_tables,
            columns = ?r.added_columns,
            created_indexes = ?r.created_indexes,
            dropped_indexes = ?r.dropped_indexes,
            "schema applied"
        );
    }
}

/// Figures reported by `/v1/health`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Health {
    pub gaps: i64,
    pub members: u64,
    pub p99_lag: f64,
    pub queue_size: u64,
}

impl Node {
    /// Current health figures: missing versions, alive members (self included), p99 lag of
    /// applied broadcast changes over the last 30 s (0 when idle) and the apply queue length.
    pub fn health(&self) -> Health {
        use std::sync::atomic::Ordering;
        Health {
            gaps: self.cluster.gaps.load(Ordering::Relaxed) as i64,
            members: self.cluster.alive_members(),
            p99_lag: self.cluster.p99_lag(),
            queue_size: self.cluster.queue_size.load(Ordering::Relaxed),
        }
    }
}
