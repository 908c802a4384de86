//! The CRDT store: one SQLite database file holding the user's tables, their clocks and the
//! version bookkeeping, driven through a single writer connection.
//!
//! - [`catalog`]: which tables are replicated, their columns and cached SQL.
//! - [`capture`]: the preupdate hook that records the net effect of a local transaction.
//! - [`local`]: executing client transactions and turning their net effect into clocks.
//! - [`apply`]: merging remote changes (the store side of [`crate::crdt::merge`]).
//! - [`feed`]: reading committed versions back as changes.
//! - [`schema`]: schema files → validated, additive DDL.
//! - [`exec`]: statements and parameter binding shared by reads and writes.
//! - [`reader`]: the pool of read-only connections.
//! - [`snapshot`]: whole-database snapshots that bootstrap a fresh node.
//!
//! Internal tables (all prefixed `__vd_`): `__vd_state` (key/value: actor id…), `__vd_sites`
//! (actor id ↔ small ordinal), `__vd_tables` (replicated tables), `__vd_versions` (one row per
//! applied version: origin site, version, last seq, timestamp and the rows it touched) and one `"<table>__vd_clock"` per replicated table.

pub mod apply;
mod apply_fresh;
pub mod assemble;
pub mod bookkeeping;
pub mod buffer;
pub mod capture;
pub mod catalog;
pub mod checkpoint;
/// Statements and parameter binding (shared with the subscription engine).
pub use verdigris_subscriptions::stmt as exec;
pub mod feed;
pub mod guard;
mod literal_insert;
pub mod local;
pub mod reader;
mod rows;
pub use rows::{decode_touched, TouchedRows};
pub mod schema;
pub mod snapshot;

use crate::crdt::hlc::Hlc;
use crate::crdt::ActorId;
use anyhow::{bail, Context, Result};
use catalog::Catalog;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

pub use apply::{ApplyReport, ChangeSet};
pub use exec::{Params, Statement};
pub use feed::{Change, VersionChanges};
pub use local::{StatementResult, TxOutcome};

/// Bumped when the internal table layout or an encoding stored in it changes; a newer file is
/// refused, an older one is read as it is and marked with this version when opened.
/// 1: the first layout. 2: clock format 3 and row-list format 2 are written (formats 1 and 2
/// of clocks and format 1 of row lists are still read); integer-keyed clock tables.
const INTERNAL_SCHEMA_VERSION: i64 = 2;

const BOOTSTRAP: &str = "
CREATE TABLE IF NOT EXISTS __vd_state (key TEXT PRIMARY KEY, value ANY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS __vd_sites (ord INTEGER PRIMARY KEY, actor BLOB NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS __vd_tables (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS __vd_versions (
    site INTEGER NOT NULL, db_version INTEGER NOT NULL, last_seq INTEGER NOT NULL, ts INTEGER NOT NULL,
    rows BLOB NOT NULL DEFAULT x'', PRIMARY KEY (site, db_version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS __vd_members (actor BLOB PRIMARY KEY, address TEXT NOT NULL, state TEXT NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS __vd_partials (
    site INTEGER NOT NULL, db_version INTEGER NOT NULL, last_seq INTEGER NOT NULL, ts INTEGER NOT NULL, seqs BLOB NOT NULL,
    PRIMARY KEY (site, db_version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS __vd_buffer (
    site INTEGER NOT NULL, db_version INTEGER NOT NULL, seq INTEGER NOT NULL, tbl TEXT NOT NULL, pk BLOB NOT NULL,
    cid TEXT NOT NULL, val, col_version INTEGER NOT NULL, cl INTEGER NOT NULL,
    PRIMARY KEY (site, db_version, seq)) WITHOUT ROWID;
";

/// Actor id ↔ ordinal interning, shared with readers.
#[derive(Debug, Default)]
pub struct Sites {
    by_actor: HashMap<ActorId, u32>,
    by_ord: HashMap<u32, ActorId>,
}

impl Sites {
    pub fn ordinal(&self, a: &ActorId) -> Option<u32> {
        self.by_actor.get(a).copied()
    }
    pub fn actor(&self, ord: u32) -> Option<ActorId> {
        self.by_ord.get(&ord).copied()
    }
    pub fn all(&self) -> impl Iterator<Item = (u32, ActorId)> + '_ {
        self.by_ord.iter().map(|(o, a)| (*o, *a))
    }
    fn insert(&mut self, ord: u32, a: ActorId) {
        self.by_actor.insert(a, ord);
        self.by_ord.insert(ord, a);
    }
}

/// A file next to the database at `db`: its path with `suffix` appended (`-wal`, `.lock`…).
pub fn db_sibling(db: &Path, suffix: &str) -> std::path::PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(suffix);
    p.into()
}

/// The WAL file of the database at `db`.
pub fn wal_path(db: &Path) -> std::path::PathBuf {
    db_sibling(db, "-wal")
}

/// Reads the actor id ↔ ordinal table.
fn load_sites(conn: &Connection) -> Result<Sites> {
    let mut sites = Sites::default();
    let mut stmt = conn.prepare("SELECT ord, actor FROM __vd_sites")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
    for row in rows {
        let (ord, bytes) = row?;
        sites.insert(
            ord,
            ActorId::from_slice(&bytes).context("corrupt actor id in __vd_sites")?,
        );
    }
    Ok(sites)
}

/// State shared between the writer and the read pool.
#[derive(Debug)]
pub struct Shared {
    pub catalog: RwLock<Arc<Catalog>>,
    pub sites: RwLock<Sites>,
    /// Version bookkeeping ([`bookkeeping`]); updated by the writer after each commit.
    pub book: RwLock<bookkeeping::Bookie>,
    /// The sequence number of the last commit notified ([`Committed::seq`]). The writer
    /// holds this lock from COMMIT until its listeners have run, so a reader that starts its
    /// read transaction under it knows exactly which commits its snapshot holds (all up to
    /// the value, none after) — see [`Shared::positioned_snapshot`]. Held by a reader for a
    /// `BEGIN` and one read of the schema page only.
    pub commit_gate: Mutex<u64>,
    /// Set while some subscription needs the before-images of changed rows
    /// ([`Committed::before`]); remote merges record them only then, and only for the tables
    /// in `image_tables`.
    pub images_wanted: std::sync::atomic::AtomicBool,
    /// Lower-case names of the tables whose before-images subscriptions need.
    pub image_tables: RwLock<std::collections::BTreeSet<String>>,
}

impl Shared {
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().expect("catalog lock").clone()
    }

    /// Starts a read transaction on `conn` and returns the sequence number of the last
    /// commit its snapshot holds: every commit notified with a [`Committed::seq`] up to it
    /// is visible, none after. The caller ends the transaction.
    pub fn positioned_snapshot(&self, conn: &Connection) -> rusqlite::Result<u64> {
        let gate = self.commit_gate.lock().unwrap_or_else(|e| e.into_inner());
        conn.execute_batch("BEGIN")?;
        // The snapshot is taken by the first read, not by BEGIN.
        let read = conn
            .prepare_cached("SELECT 1 FROM sqlite_schema LIMIT 1")
            .and_then(|mut s| s.exists([]));
        if let Err(e) = read {
            drop(gate);
            if let Err(e2) = conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e2, "rolling back a read transaction that failed to start");
            }
            return Err(e);
        }
        Ok(*gate)
    }
}

/// Applies the PRAGMAs every connection needs.
pub fn configure_connection(conn: &Connection, writer: bool) -> Result<()> {
    conn.pragma_update(None, "busy_timeout", 5000)?;
    if writer {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        conn.pragma_update(None, "recursive_triggers", "ON")?;
    }
    // Readers (the pool, the subscription matcher) run many distinct one-off statements
    // (every subscription's initial query has its own text): a small cache keeps them from
    // holding megabytes of prepared statements.
    conn.set_prepared_statement_cache_capacity(if writer { 512 } else { 64 });
    Ok(())
}

/// Runs a statement that takes no parameters and returns no rows (`BEGIN IMMEDIATE`,
/// `COMMIT`) from the statement cache, without parsing it again on every transaction.
pub(crate) fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// The writer side of the store.
pub struct Store {
    conn: Connection,
    shared: Arc<Shared>,
    capture: Arc<Mutex<capture::Capture>>,
    actor: ActorId,
    local_site: u32,
    /// Highest local version committed.
    local_max: u64,
    hlc: Hlc,
    guard: guard::Guard,
    _checkpointer: Option<checkpoint::Checkpointer>,
    commit_listeners: Vec<CommitListener>,
}

/// Rows whose replicated state changed: (table, packed primary key).
pub type ChangedRows = Vec<(Arc<str>, Vec<u8>)>;

/// Called by the writer after each commit that changed something.
type CommitListener = Box<dyn FnMut(&Committed) + Send>;

/// What a committed transaction changed: delivered to commit listeners (subscriptions,
/// gossip) right after COMMIT, on the writer's thread — listeners must only enqueue work.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// Versions that were recorded, with their origin actor.
    pub versions: Vec<(ActorId, u64)>,
    /// Whether these are this node's own writes.
    pub local: bool,
    /// Rows whose replicated state changed: (table, packed primary key).
    pub changed: ChangedRows,
    /// This commit's place in the node's order of commits (1, 2, …, per process), assigned
    /// under [`Shared::commit_gate`].
    pub seq: u64,
    /// The values of each of `changed`'s rows before this commit (`None`: the row did not
    /// exist), in the same order; `None` when not recorded (no subscription wanted them when
    /// the transaction started). Shared: listeners keep it without copying.
    pub before: Option<Images>,
    /// The tables (as named in [`Shared::image_tables`]) whose rows' images `before` holds;
    /// `None`: every table's (a local transaction's capture sees every row). A row of another
    /// table has `None` in `before` without having been absent: its image was not recorded.
    pub imaged: Option<ImagedTables>,
}

/// Names of the tables whose before-images a commit recorded ([`Committed::imaged`]).
pub type ImagedTables = Arc<std::collections::BTreeSet<String>>;

/// Before-images of a commit's changed rows, in the order of [`Committed::changed`].
pub type Images = Arc<Vec<Option<Vec<rusqlite::types::Value>>>>;

impl Store {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening database {}", path.display()))?;
        let mut store = Self::from_connection(conn)?;
        store.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        store._checkpointer = Some(checkpoint::spawn(path));
        Ok(store)
    }

    /// An in-memory store (tests and simulations).
    pub fn open_in_memory() -> Result<Store> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    /// An in-memory store with a given actor id whose clock reads `time` (deterministic
    /// simulations: every id and timestamp comes from the seed).
    pub fn open_in_memory_as(actor: ActorId, time: crate::crdt::hlc::TimeSource) -> Result<Store> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(BOOTSTRAP)
            .context("creating internal tables")?;
        conn.execute(
            "INSERT INTO __vd_state(key, value) VALUES ('actor_id', ?1)",
            [&actor.0[..]],
        )?;
        let mut store = Self::from_connection(conn)?;
        store.hlc = Hlc::with_source(time);
        Ok(store)
    }

    /// Gives a restarted simulated store its clock back (see [`Store::open_in_memory_as`]).
    pub fn set_time_source(&mut self, time: crate::crdt::hlc::TimeSource) {
        self.hlc = Hlc::with_source(time);
    }

    /// A crash and restart of an in-memory store (for simulations): what was committed is
    /// copied to a new database with SQLite's backup API, and the new store rebuilds all its
    /// in-memory state (catalog, bookkeeping, clocks) from it, as a restarted node does from
    /// its file. Nothing held only in memory survives.
    pub fn crash_and_restart_in_memory(self) -> Result<Store> {
        let mut copy = Connection::open_in_memory()?;
        rusqlite::backup::Backup::new(&self.conn, &mut copy)?.run_to_completion(
            1024,
            std::time::Duration::ZERO,
            None,
        )?;
        drop(self);
        Self::from_connection(copy)
    }

    fn from_connection(conn: Connection) -> Result<Store> {
        configure_connection(&conn, true)?;
        conn.execute_batch(BOOTSTRAP)
            .context("creating internal tables")?;
        let version: Option<i64> = conn
            .query_row(
                "SELECT value FROM __vd_state WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match version {
            Some(v) if v > INTERNAL_SCHEMA_VERSION => {
                bail!("database was written by a newer Verdigris (internal schema {v}); upgrade this binary")
            }
            Some(v) if v < INTERNAL_SCHEMA_VERSION => {
                // Everything older is still read; from now on newer formats are written, so an
                // older binary must refuse this file.
                conn.execute(
                    "UPDATE __vd_state SET value = ?1 WHERE key = 'schema_version'",
                    [INTERNAL_SCHEMA_VERSION],
                )?;
            }
            Some(_) => {}
            None => {
                conn.execute(
                    "INSERT INTO __vd_state(key, value) VALUES ('schema_version', ?1)",
                    [INTERNAL_SCHEMA_VERSION],
                )?;
            }
        }
        let actor = match conn
            .query_row(
                "SELECT value FROM __vd_state WHERE key = 'actor_id'",
                [],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()?
        {
            Some(bytes) => ActorId::from_slice(&bytes).context("corrupt actor id in __vd_state")?,
            None => {
                let a = ActorId::random();
                conn.execute(
                    "INSERT INTO __vd_state(key, value) VALUES ('actor_id', ?1)",
                    [&a.0[..]],
                )?;
                a
            }
        };
        let sites = load_sites(&conn)?;
        let catalog = Catalog::load(&conn)?;
        let capture = Arc::new(Mutex::new(capture::Capture::new(&catalog)));
        capture::install(&conn, capture.clone())?;
        let guard = guard::Guard::install(&conn, &catalog)?;
        let shared = Arc::new(Shared {
            catalog: RwLock::new(Arc::new(catalog)),
            sites: RwLock::new(sites),
            book: RwLock::new(bookkeeping::Bookie::new()),
            commit_gate: Mutex::new(0),
            images_wanted: Default::default(),
            image_tables: Default::default(),
        });
        let mut store = Store {
            conn,
            shared,
            capture,
            actor,
            local_site: 0,
            local_max: 0,
            hlc: Hlc::default(),
            guard,
            _checkpointer: None,
            commit_listeners: Vec::new(),
        };
        store.local_site = store.site_ordinal(&actor)?;
        store.local_max = store.max_version(store.local_site)?;
        store.load_bookkeeping()?;
        Ok(store)
    }

    pub fn actor_id(&self) -> ActorId {
        self.actor
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// The raw connection (tests, backups and maintenance).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Highest version of `site` recorded in `__vd_versions`.
    fn max_version(&self, site: u32) -> Result<u64> {
        Ok(self
            .conn
            .query_row(
                "SELECT max(db_version) FROM __vd_versions WHERE site = ?1",
                [site],
                |r| r.get::<_, Option<u64>>(0),
            )?
            .unwrap_or(0))
    }

    /// Highest version known for `actor` (0 if none).
    pub fn head(&self, actor: &ActorId) -> Result<u64> {
        match self.shared.sites.read().expect("sites lock").ordinal(actor) {
            Some(ord) => self.max_version(ord),
            None => Ok(0),
        }
    }

    /// The ordinal of `actor`, interning it if new.
    pub fn site_ordinal(&mut self, actor: &ActorId) -> Result<u32> {
        if let Some(ord) = self.shared.sites.read().expect("sites lock").ordinal(actor) {
            return Ok(ord);
        }
        self.conn.execute(
            "INSERT OR IGNORE INTO __vd_sites(actor) VALUES (?1)",
            [&actor.0[..]],
        )?;
        let ord: u32 = self.conn.query_row(
            "SELECT ord FROM __vd_sites WHERE actor = ?1",
            [&actor.0[..]],
            |r| r.get(0),
        )?;
        self.shared
            .sites
            .write()
            .expect("sites lock")
            .insert(ord, *actor);
        Ok(ord)
    }

    /// Re-reads the catalog after DDL and points the capture hook at it.
    fn reload_catalog(&mut self) -> Result<()> {
        let catalog = Catalog::load(&self.conn)?;
        self.capture
            .lock()
            .expect("capture lock")
            .set_tables(&catalog);
        self.refresh_guard(&catalog);
        *self.shared.catalog.write().expect("catalog lock") = Arc::new(catalog);
        Ok(())
    }

    /// Registers a callback run after every commit that changed replicated state.
    pub fn on_commit(&mut self, f: Box<dyn FnMut(&Committed) + Send>) {
        self.commit_listeners.push(f);
    }

    /// Whether before-images are wanted; if so, the capture records them during the store's
    /// own writes until [`Store::take_images`].
    /// Returns the tables whose images it records (`None`: not recording).
    fn begin_images(&self) -> Option<ImagedTables> {
        let want = self
            .shared
            .images_wanted
            .load(std::sync::atomic::Ordering::Relaxed);
        if !want {
            return None;
        }
        let names: ImagedTables = Arc::new(
            self.shared
                .image_tables
                .read()
                .expect("image tables lock")
                .clone(),
        );
        let catalog = self.shared.catalog();
        let tables = names
            .iter()
            .filter_map(|t| catalog.get(t).map(|t| t.id))
            .collect();
        let mut c = self.capture.lock().expect("capture lock");
        c.clear();
        c.images = true;
        c.image_tables = tables;
        Some(names)
    }

    /// Stops recording before-images; returns those of `changed`'s rows (`None` if not
    /// recording; `None` for rows of tables no subscription needs them for). A changed row
    /// whose base row was not written (only its clock changed, e.g.
    /// a merged change that lost, or a delete of a row already gone) has the values it still
    /// has.
    ///
    /// Never fails the write: images that cannot be read are "not recorded" (logged), and
    /// the subscriptions that needed them re-run their queries once.
    fn take_images(
        &self,
        recording: &Option<ImagedTables>,
        changed: &ChangedRows,
    ) -> Option<Images> {
        recording.as_ref()?;
        let mut c = self.capture.lock().expect("capture lock");
        c.images = false;
        let images = self.read_images(&mut c, changed);
        c.clear();
        match images {
            Ok(images) => Some(Arc::new(images)),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "before-images not recorded for a commit; subscriptions kept from them re-run");
                None
            }
        }
    }

    fn read_images(
        &self,
        c: &mut capture::Capture,
        changed: &ChangedRows,
    ) -> Result<Vec<Option<Vec<rusqlite::types::Value>>>> {
        let catalog = self.shared.catalog();
        let mut out: Vec<Option<Vec<rusqlite::types::Value>>> = Vec::with_capacity(changed.len());
        // A row changed by several versions of one apply is listed once per version.
        let mut taken: HashMap<usize, usize> = HashMap::new();
        let mut last: Option<(&Arc<str>, u32, bool)> = None;
        for (table, pk) in changed {
            let (id, wanted) = match last {
                Some((t, id, w)) if Arc::ptr_eq(t, table) => (id, w),
                _ => {
                    let id = catalog
                        .get(table)
                        .with_context(|| format!("changed row of unknown table {table}"))?
                        .id;
                    let w = c.image_tables.contains(&id);
                    last = Some((table, id, w));
                    (id, w)
                }
            };
            if !wanted {
                // No subscription follows this table's before-images.
                out.push(None);
                continue;
            }
            match c.image_of(id, pk) {
                Some(i) => match taken.get(&i) {
                    Some(&at) => out.push(out[at].clone()),
                    None => {
                        taken.insert(i, out.len());
                        out.push(c.take_image(i));
                    }
                },
                None => {
                    let t = catalog.by_id(id).context("table vanished")?;
                    let key = crate::crdt::pack::unpack(pk).context("changed row's key")?;
                    let mut stmt = self.conn.prepare_cached(&t.sql.row_get)?;
                    let n = stmt.column_count();
                    let row = stmt
                        .query_row(rusqlite::params_from_iter(&key), |r| {
                            (0..n)
                                .map(|i| r.get::<_, rusqlite::types::Value>(i))
                                .collect::<rusqlite::Result<Vec<_>>>()
                        })
                        .optional()?;
                    out.push(row);
                }
            }
        }
        Ok(out)
    }

    /// Stops recording before-images after a failed transaction.
    fn drop_images(&self) {
        let mut c = self.capture.lock().expect("capture lock");
        c.images = false;
        c.clear();
    }

    /// Commits the open transaction and, if `changes` says something changed, notifies the
    /// commit listeners — both under [`Shared::commit_gate`], with the next sequence number.
    fn commit_and_notify(&mut self, changes: Option<Committed>) -> rusqlite::Result<()> {
        let shared = self.shared.clone();
        let mut gate = shared.commit_gate.lock().unwrap_or_else(|e| e.into_inner());
        run_cached(&self.conn, "COMMIT")?;
        if let Some(mut c) = changes {
            *gate += 1;
            c.seq = *gate;
            self.notify_commit(c);
        }
        Ok(())
    }

    fn notify_commit(&mut self, c: Committed) {
        if !c.versions.is_empty() {
            let mut book = self.shared.book.write().expect("book lock");
            for (a, v) in &c.versions {
                book.record_known(*a, *v..=*v);
            }
        }
        if c.versions.is_empty() && c.changed.is_empty() {
            return;
        }
        for f in &mut self.commit_listeners {
            f(&c);
        }
    }

    /// Number of versions recorded for every actor (for tests and stats).
    pub fn version_count(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM __vd_versions", params![], |r| {
                r.get(0)
            })?)
    }
}

#[cfg(test)]
mod tests;
