//! Subscriptions on a node: the registry, the matcher thread that keeps every subscription's
//! result current after each committed change set, and the fan-out to listeners.
//!
//! Every mutation of subscription state happens under one lock (the *round lock*): a matcher
//! round (refresh → persist → publish) and a listener attaching (snapshot or replay →
//! register) never interleave, so a listener receives each change id exactly once, in order.
//! Commit notifications only merge changed keys into a pending set (coalescing bursts), so
//! the writer never waits for subscriptions.
//!
//! - [`persist`]: the on-disk registry, rows and change logs.
//! - [`attach`]: what a listener receives (the attach contract every transport uses).

pub mod attach;
pub mod persist;

use crate::crdt::ActorId;
use crate::store::reader::ReadPool;
use crate::store::{Committed, Shared, Statement};
use anyhow::Result;
use attach::{publish, Failure, Listener, Published};
pub use attach::{Attach, Item};
use persist::{Persist, RoundWrite};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use verdigris_api_types::{NotifyEvent, NotifyKind, QueryEvent, SqliteValue, TypedQueryEvent};
use verdigris_subscriptions::family::FamilyInfo;
use verdigris_subscriptions::matview::Changes;
use verdigris_subscriptions::{analyze, Analysis, MatView, Schema};

/// Keys pending before the matcher treats whole tables as changed.
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

struct Sub {
    id: String,
    hash: String,
    sql: String,
    plan: String,
    columns: Vec<String>,
    tables: BTreeSet<String>,
    mv: MatView,
    last_change_id: u64,
    listeners: Vec<Listener<QueryEvent>>,
    idle_since: Instant,
    /// Family key and member index, for subscriptions evaluated with their family.
    family: Option<(String, u64)>,
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

struct State {
    subs: HashMap<String, Sub>,
    by_key: HashMap<String, String>,
    persist: Persist,
    updates: HashMap<String, UpdatesHandle>,
    /// The matcher's own read connection: it holds the families' member tables (TEMP).
    conn: rusqlite::Connection,
    families: HashMap<String, Family>,
}

/// Subscriptions that differ only in one value (see `verdigris_subscriptions::family`).
struct Family {
    info: FamilyInfo,
    next_idx: u64,
    members: HashMap<u64, String>,
}

impl State {
    fn join_family(&mut self, info: &FamilyInfo, sub_id: &str) -> Result<u64> {
        let fam = self
            .families
            .entry(info.key.clone())
            .or_insert_with(|| Family {
                info: info.clone(),
                next_idx: 0,
                members: HashMap::new(),
            });
        let idx = fam.next_idx;
        fam.next_idx += 1;
        info.add_member(&self.conn, idx)?;
        fam.members.insert(idx, sub_id.to_string());
        Ok(idx)
    }

    fn leave_family(&mut self, sub: &Sub) {
        if let Some((key, idx)) = &sub.family {
            if let Some(fam) = self.families.get_mut(key) {
                let _ = fam.info.remove_member(&self.conn, *idx);
                fam.members.remove(idx);
                if fam.members.is_empty() {
                    self.families.remove(key);
                }
            }
        }
    }
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

pub struct Manager {
    state: Mutex<State>,
    pending: Mutex<Pending>,
    wake: Condvar,
    reads: Arc<ReadPool>,
    shared: Arc<Shared>,
    config: SubsConfig,
}

/// Primary keys from the store's catalog.
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
}

fn shared_db_path(reads: &ReadPool) -> std::path::PathBuf {
    reads.path().to_path_buf()
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
    /// and starts the matcher thread.
    pub fn open(
        dir: &Path,
        reads: Arc<ReadPool>,
        shared: Arc<Shared>,
        config: SubsConfig,
    ) -> Result<Arc<Manager>> {
        let persist = Persist::open(dir)?;
        let conn = crate::store::reader::open_read_connection(&shared_db_path(&reads))?;
        let stored = persist.load()?;
        let m = Arc::new(Manager {
            state: Mutex::new(State {
                conn,
                families: HashMap::new(),
                subs: HashMap::new(),
                by_key: HashMap::new(),
                persist,
                updates: HashMap::new(),
            }),
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            reads,
            shared,
            config,
        });
        m.restore(stored)?;
        let worker = Arc::downgrade(&m);
        std::thread::Builder::new()
            .name("vd-matcher".into())
            .spawn(move || matcher_loop(worker))?;
        Ok(m)
    }

    fn restore(
        &self,
        stored: Vec<(
            persist::StoredSub,
            Vec<verdigris_subscriptions::matview::StoredRow>,
        )>,
    ) -> Result<()> {
        let schema = CatalogSchema(self.shared.catalog());
        let mut st = lock(&self.state);
        for (s, rows) in stored {
            let analysis = match analyze(&st.conn, &Statement::new(s.sql.clone()), &schema) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(id = %s.id, error = %e, "dropping a stored subscription that no longer analyzes");
                    st.persist.delete(&s.id)?;
                    continue;
                }
            };
            let mut mv = MatView::new(&analysis);
            mv.import(rows, s.next_row_id);
            let changes = mv.recompute(&st.conn)?;
            let mut sub = new_sub(s.id.clone(), &analysis, mv);
            if let Some(f) = &analysis.family {
                sub.family = Some((f.key.clone(), st.join_family(f, &s.id)?));
            }
            sub.last_change_id = s.last_change_id;
            if !changes.is_empty() {
                let first = sub.last_change_id + 1;
                sub.last_change_id += changes.len() as u64;
                st.persist.write_round(&[RoundWrite {
                    sub: &sub.id,
                    first_change_id: first,
                    changes: &changes,
                    next_row_id: sub.mv.next_row_id(),
                    retention: self.config.retention,
                }])?;
            }
            tracing::info!(id = %sub.id, rows = sub.mv.len(), caught_up = changes.len(), "restored subscription");
            st.by_key
                .insert(analysis.normalized.clone(), sub.id.clone());
            st.subs.insert(sub.id.clone(), sub);
        }
        Ok(())
    }

    /// Commit listener: merge the changed keys into the pending set and wake the matcher.
    pub fn enqueue(&self, c: &Committed) {
        let mut p = lock(&self.pending);
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
        self.wake.notify_one();
    }

    /// Re-runs every subscription on `tables` in full: for bulk loads that bypass per-row
    /// change tracking (a snapshot import).
    pub fn reload_tables(&self, tables: &[String]) {
        let mut p = lock(&self.pending);
        for t in tables {
            let t = t.to_ascii_lowercase();
            if let Some(keys) = p.changes.remove(&t) {
                p.keys = p.keys.saturating_sub(keys.len());
            }
            p.whole.insert(t);
        }
        drop(p);
        self.wake.notify_one();
    }

    pub fn stop(&self) {
        lock(&self.pending).stop = true;
        self.wake.notify_one();
    }

    fn analyze(
        &self,
        conn: &crate::store::reader::PooledConn,
        stmt: &Statement,
    ) -> Result<Analysis, SubsError> {
        analyze(conn, stmt, &CatalogSchema(self.shared.catalog()))
            .map_err(|e| SubsError::BadRequest(e.0))
    }

    /// `POST /v1/subscriptions`: subscribe (or join the identical existing subscription).
    pub fn subscribe(
        &self,
        stmt: &Statement,
        from: Option<u64>,
        skip_rows: bool,
    ) -> Result<Attach, SubsError> {
        let conn = self.reads.get()?;
        let analysis = self.analyze(&conn, stmt)?;
        let mut st = lock(&self.state);
        if let Some(id) = st.by_key.get(&analysis.normalized).cloned() {
            return self.attach_locked(&mut st, &id, from, skip_rows);
        }
        if from.is_some() {
            return Err(SubsError::NoSubscription(
                "a `from` query param was supplied, but no existing subscription found; subscribe without `from`".into(),
            ));
        }
        let start = Instant::now();
        let mut mv = MatView::new(&analysis);
        drop(conn);
        st.conn
            .execute_batch("BEGIN")
            .map_err(anyhow::Error::from)?;
        let rows = mv.initial(&st.conn);
        let _ = st.conn.execute_batch("COMMIT");
        let rows = rows.map_err(|e| SubsError::BadRequest(format!("query failed: {e}")))?;
        let id = ActorId::random().hyphenated();
        st.persist
            .create(&id, &analysis.sql, &mv.export(), mv.next_row_id())?;
        let mut sub = new_sub(id.clone(), &analysis, mv);
        if let Some(f) = &analysis.family {
            sub.family = Some((f.key.clone(), st.join_family(f, &id)?));
        }
        // `skip_rows` suppresses the snapshot entirely (columns, rows and eoq), as Corrosion does.
        let initial = if skip_rows {
            Vec::new()
        } else {
            snapshot_events(&sub.columns, rows, start.elapsed().as_secs_f64(), 0)
        };
        let (attach, listener) = Attach::listen(sub.id.clone(), sub.hash.clone(), initial, 0);
        sub.listeners.push(listener);
        st.by_key.insert(analysis.normalized.clone(), id.clone());
        st.subs.insert(id, sub);
        Ok(attach)
    }

    /// `GET /v1/subscriptions/{id}`.
    pub fn attach(
        &self,
        id: &str,
        from: Option<u64>,
        skip_rows: bool,
    ) -> Result<Attach, SubsError> {
        let mut st = lock(&self.state);
        self.attach_locked(&mut st, id, from, skip_rows)
    }

    fn attach_locked(
        &self,
        st: &mut State,
        id: &str,
        from: Option<u64>,
        skip_rows: bool,
    ) -> Result<Attach, SubsError> {
        let (last, columns) = match st.subs.get(id) {
            Some(s) => (s.last_change_id, s.columns.clone()),
            None => {
                return Err(SubsError::NotFound(format!(
                    "could not find subscription with id {id}"
                )))
            }
        };
        let initial = match from {
            Some(from) if from > 0 => {
                if from > last {
                    return Ok(closed(st, id, Failure::Ahead { from, last }));
                }
                let (min, changes) = st.persist.changes_after(id, from)?;
                let first_needed = from + 1;
                if first_needed <= last && min.is_none_or(|m| m > first_needed) {
                    let min = min.unwrap_or(last + 1);
                    return Ok(closed(st, id, Failure::TooOld { from, min }));
                }
                changes
                    .into_iter()
                    .map(|(cid, ch)| change_event(ch, cid))
                    .collect()
            }
            _ if skip_rows => Vec::new(),
            _ => {
                let sub = st.subs.get(id).expect("checked");
                snapshot_events(&columns, sub.mv.snapshot(), 0.0, last)
            }
        };
        let sub = st.subs.get_mut(id).expect("checked");
        let (attach, l) = Attach::listen(sub.id.clone(), sub.hash.clone(), initial, last);
        sub.listeners.push(l);
        Ok(attach)
    }

    /// `POST /v1/updates/{table}`: key notifications for one table.
    pub fn updates(&self, table: &str) -> Result<Attach<NotifyEvent>, SubsError> {
        let catalog = self.shared.catalog();
        let Some(t) = catalog.get(table) else {
            return Err(SubsError::BadRequest(format!(
                "table not found in schema: {table}"
            )));
        };
        let key = t.name.to_ascii_lowercase();
        let mut st = lock(&self.state);
        let h = st.updates.entry(key).or_insert_with(|| UpdatesHandle {
            id: ActorId::random().hyphenated(),
            listeners: vec![],
        });
        let (attach, l) = Attach::listen(h.id.clone(), String::new(), Vec::new(), 0);
        h.listeners.push(l);
        Ok(attach)
    }

    /// (subscriptions, listeners attached to them).
    pub fn counts(&self) -> (u64, u64) {
        let st = lock(&self.state);
        let listeners = st.subs.values().map(|s| s.listeners.len() as u64).sum();
        (st.subs.len() as u64, listeners)
    }

    pub fn list(&self) -> Vec<SubInfo> {
        let st = lock(&self.state);
        let mut v: Vec<SubInfo> = st
            .subs
            .values()
            .map(|s| SubInfo {
                id: s.id.clone(),
                hash: s.hash.clone(),
                sql: s.sql.clone(),
                plan: s.plan.clone(),
                tables: s.tables.iter().cloned().collect(),
                rows: s.mv.len(),
                last_change_id: s.last_change_id,
                listeners: s.listeners.len(),
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// One matcher round: refresh affected subscriptions, persist, publish.
    fn round(&self) -> Result<bool> {
        let mut st = lock(&self.state);
        let (changes, whole, stop, since) = {
            let mut p = lock(&self.pending);
            let c = std::mem::take(&mut p.changes);
            let w = std::mem::take(&mut p.whole);
            p.keys = 0;
            (c, w, p.stop, p.since.take())
        };
        let started = Instant::now();
        if stop {
            return Ok(false);
        }
        self.expire_idle(&mut st)?;
        if changes.is_empty() && whole.is_empty() {
            return Ok(true);
        }
        st.conn.execute_batch("BEGIN")?;
        let mut produced: Vec<(String, u64, Vec<verdigris_subscriptions::RowChange>)> = Vec::new();
        {
            let State {
                subs,
                families,
                conn,
                ..
            } = &mut *st;
            // Family members are refreshed together; everything else one by one.
            let mut groups: HashMap<
                String,
                Vec<(u64, &mut verdigris_subscriptions::keyed::Keyed)>,
            > = HashMap::new();
            let mut results: Vec<(&mut Sub, Vec<verdigris_subscriptions::RowChange>)> = Vec::new();
            let mut member_of: HashMap<(String, u64), String> = HashMap::new();
            let mut touched_families: BTreeSet<String> = BTreeSet::new();
            let mut singles: Vec<&mut Sub> = Vec::new();
            for sub in subs.values_mut() {
                let full = sub.tables.iter().any(|t| whole.contains(t));
                let touched = changes.keys().any(|t| sub.tables.contains(t));
                let in_family =
                    !full && sub.family.is_some() && matches!(sub.mv, MatView::Keyed(_));
                if !in_family {
                    singles.push(sub);
                    continue;
                }
                if touched {
                    let (key, idx) = sub.family.clone().expect("family member");
                    member_of.insert((key.clone(), idx), sub.id.clone());
                    touched_families.insert(key.clone());
                    if let MatView::Keyed(k) = &mut sub.mv {
                        groups.entry(key).or_default().push((idx, k));
                    }
                }
            }
            let mut family_changes: HashMap<String, Vec<verdigris_subscriptions::RowChange>> =
                HashMap::new();
            for (key, mut members) in groups {
                let Some(fam) = families.get(&key) else {
                    continue;
                };
                match fam.info.refresh(conn, &mut members, &changes) {
                    Ok(out) => {
                        for (idx, ch) in out {
                            if let Some(id) = member_of.get(&(key.clone(), idx)) {
                                family_changes.insert(id.clone(), ch);
                            }
                        }
                    }
                    Err(e) => tracing::error!(family = %key, error = %e, "family refresh failed"),
                }
            }
            for sub in singles {
                let full = sub.tables.iter().any(|t| whole.contains(t));
                let result = if full {
                    sub.mv.recompute(conn)
                } else {
                    sub.mv.refresh(conn, &sub.tables, &changes)
                };
                match result {
                    Ok(ch) if !ch.is_empty() => results.push((sub, ch)),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(id = %sub.id, error = %e, "subscription refresh failed")
                    }
                }
            }
            for (sub, ch) in results {
                let first = sub.last_change_id + 1;
                sub.last_change_id += ch.len() as u64;
                produced.push((sub.id.clone(), first, ch));
            }
            for (id, ch) in family_changes {
                if let Some(sub) = subs.get_mut(&id) {
                    let first = sub.last_change_id + 1;
                    sub.last_change_id += ch.len() as u64;
                    produced.push((id, first, ch));
                }
            }
            let _ = touched_families;
        }
        let notifications = self.updates_round(&st, &st.conn, &changes);
        let _ = st.conn.execute_batch("COMMIT");
        let writes: Vec<RoundWrite<'_>> = produced
            .iter()
            .map(|(id, first, ch)| RoundWrite {
                sub: id,
                first_change_id: *first,
                changes: ch,
                next_row_id: st.subs[id].mv.next_row_id(),
                retention: self.config.retention,
            })
            .collect();
        if !writes.is_empty() {
            // The in-memory state already moved on: publish even if the disk write failed, so
            // listeners never see a gap (the change log then misses this round for `from=`).
            if let Err(e) = st.persist.write_round(&writes) {
                tracing::error!(error = %format!("{e:#}"), "could not persist a subscription round");
            }
        }
        drop(writes);
        let (metrics, published) = (&self.config.metrics, !produced.is_empty());
        let mut slow = 0;
        for (id, first, ch) in produced {
            let last_id = first + ch.len() as u64 - 1;
            let events = ch
                .into_iter()
                .zip(first..)
                .map(|(c, cid)| change_event(c, cid))
                .collect();
            let sub = st.subs.get_mut(&id).expect("sub");
            slow += publish(&mut sub.listeners, Published::new(last_id, events));
            if sub.listeners.is_empty() {
                sub.idle_since = sub.idle_since.min(Instant::now());
            }
        }
        for (table, events) in notifications {
            if let Some(h) = st.updates.get_mut(&table) {
                slow += publish(&mut h.listeners, Published::new(0, events));
            }
        }
        st.updates.retain(|_, h| !h.listeners.is_empty());
        metrics.slow_listener_drops.inc_by(slow);
        metrics.sub_round.observe(started.elapsed().as_secs_f64());
        if let (true, Some(t)) = (published, since) {
            metrics.commit_to_event.observe(t.elapsed().as_secs_f64());
        }
        Ok(true)
    }

    /// `/v1/updates` notifications: "update" if the row exists now, else "delete".
    fn updates_round(
        &self,
        st: &State,
        conn: &rusqlite::Connection,
        changes: &Changes,
    ) -> Vec<(String, Vec<NotifyEvent>)> {
        let catalog = self.shared.catalog();
        let mut out = Vec::new();
        for (table, h) in &st.updates {
            let (Some(keys), Some(t)) = (changes.get(table), catalog.get(table)) else {
                continue;
            };
            if h.listeners.is_empty() {
                continue;
            }
            let sql = format!(
                "SELECT 1 FROM {} WHERE {}",
                crate::store::catalog::quote(&t.name),
                t.sql.pk_where
            );
            let mut events = Vec::with_capacity(keys.len());
            for k in keys {
                let Ok(vals) = crate::crdt::pack::unpack(k) else {
                    continue;
                };
                let exists = conn
                    .prepare_cached(&sql)
                    .and_then(|mut s| s.exists(rusqlite::params_from_iter(&vals)))
                    .unwrap_or(false);
                let kind = if exists {
                    NotifyKind::Update
                } else {
                    NotifyKind::Delete
                };
                events.push(NotifyEvent::Notify(
                    kind,
                    vals.into_iter().map(SqliteValue::from).collect(),
                ));
            }
            out.push((table.clone(), events));
        }
        out
    }

    fn expire_idle(&self, st: &mut State) -> Result<()> {
        let ttl = self.config.idle_ttl;
        let expired: Vec<String> = st
            .subs
            .values_mut()
            .filter_map(|s| {
                s.listeners.retain(|l| !l.is_closed());
                if !s.listeners.is_empty() {
                    s.idle_since = Instant::now();
                    None
                } else {
                    (s.idle_since.elapsed() > ttl).then(|| s.id.clone())
                }
            })
            .collect();
        for id in expired {
            if let Some(s) = st.subs.remove(&id) {
                st.leave_family(&s);
                st.by_key.retain(|_, v| *v != id);
                st.persist.delete(&id)?;
                tracing::info!(id = %s.id, "removed idle subscription");
            }
        }
        Ok(())
    }
}

fn new_sub(id: String, a: &Analysis, mv: MatView) -> Sub {
    Sub {
        hash: query_hash(&a.normalized),
        id,
        sql: a.sql.clone(),
        plan: a.plan.describe(),
        columns: a.columns.clone(),
        tables: a.tables.clone(),
        mv,
        last_change_id: 0,
        listeners: vec![],
        idle_since: Instant::now(),
        family: None,
    }
}

/// The snapshot a listener starts from: `columns`, every row, `eoq` with the change id the
/// snapshot is at.
fn snapshot_events(
    columns: &[String],
    rows: Vec<(u64, Vec<rusqlite::types::Value>)>,
    time: f64,
    change_id: u64,
) -> Vec<QueryEvent> {
    let mut out = Vec::with_capacity(rows.len() + 2);
    out.push(TypedQueryEvent::Columns(columns.to_vec()));
    out.extend(
        rows.into_iter()
            .map(|(rid, cells)| TypedQueryEvent::Row(rid, wire_cells(cells))),
    );
    out.push(TypedQueryEvent::EndOfQuery {
        time,
        change_id: Some(change_id),
    });
    out
}

fn change_event(c: verdigris_subscriptions::RowChange, change_id: u64) -> QueryEvent {
    let kind = match c.kind {
        verdigris_subscriptions::ChangeKind::Insert => verdigris_api_types::ChangeType::Insert,
        verdigris_subscriptions::ChangeKind::Update => verdigris_api_types::ChangeType::Update,
        verdigris_subscriptions::ChangeKind::Delete => verdigris_api_types::ChangeType::Delete,
    };
    TypedQueryEvent::Change(kind, c.row_id, wire_cells(c.cells), change_id)
}

fn wire_cells(cells: Vec<rusqlite::types::Value>) -> Vec<SqliteValue> {
    cells.into_iter().map(SqliteValue::from).collect()
}

/// An attach that only reports `failure`.
fn closed(st: &State, id: &str, failure: Failure) -> Attach {
    let hash = st.subs.get(id).map(|s| s.hash.clone()).unwrap_or_default();
    Attach::failed(id.to_string(), hash, failure)
}

fn matcher_loop(m: std::sync::Weak<Manager>) {
    loop {
        let Some(m) = m.upgrade() else { return };
        {
            let p = lock(&m.pending);
            if !p.stop && p.changes.is_empty() && p.whole.is_empty() {
                let _ = m.wake.wait_timeout(p, Duration::from_secs(1));
            }
        }
        match m.round() {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "subscription round failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
