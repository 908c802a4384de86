//! The registry (subscription id → unit, dedupe keys, units by table) and the operations on
//! it: subscribe, attach, restore at startup, forget.
//!
//! A new subscription is *reserved* first — registered under its dedupe key and routed change
//! sets from that moment on — then runs its initial query holding no lock, so a slow initial
//! query delays nobody but identical subscribes (which wait for its result). Change sets that
//! arrive meanwhile are queued on its unit (a single subscription goes live afterwards and
//! processes them as ordinary rounds) or, for a family member, recorded and applied to the
//! member before it joins the family's evaluation.

use super::attach::Failure;
use super::events::{change_event, snapshot_events};
use super::unit::{merge, CatchUp, Kind, Lane, Queue, Sub, SubMeta, Unit, UnitState};
use super::worker::{positioned_txn, read_txn, schedule};
use super::{lock, query_hash, CatalogSchema, Core, Manager, SubsError};
use crate::crdt::ActorId;
use crate::store::Statement;
use anyhow::Result;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use verdigris_subscriptions::{analyze, Analysis, MatView, Plan};

static NEXT_UNIT: AtomicU64 = AtomicU64::new(1);

#[derive(Default)]
pub(super) struct Registry {
    subs: HashMap<String, Entry>,
    by_key: HashMap<String, String>,
    pub units: HashMap<u64, Arc<Unit>>,
    /// Registry entries per unit: a unit is dropped when none is left.
    refs: HashMap<u64, usize>,
    families: HashMap<String, u64>,
    pub by_table: HashMap<String, HashMap<u64, Arc<Unit>>>,
}

struct Entry {
    unit: Arc<Unit>,
    idx: u64,
    /// Its dedupe key.
    key: String,
    /// `None` while the initial query runs.
    meta: Option<Arc<SubMeta>>,
}

impl Registry {
    pub fn metas(&self) -> impl Iterator<Item = &Arc<SubMeta>> {
        self.subs.values().filter_map(|e| e.meta.as_ref())
    }

    /// Registers `id` with a unit for `a`: the family's unit (created if needed) or a new one.
    /// Returns the unit and the member index.
    fn reserve(&mut self, id: &str, a: &Analysis, live: bool, core: &Core) -> (Arc<Unit>, u64) {
        let keyed = matches!(a.plan, Plan::Keyed { .. });
        let images = match &a.plan {
            Plan::Aggregate { plan } => Some(plan.table.clone()),
            _ => None,
        };
        let family = a.family.as_ref().filter(|_| keyed);
        let existing = family
            .and_then(|f| self.families.get(&f.key))
            .and_then(|u| self.units.get(u))
            .cloned();
        let unit = existing.unwrap_or_else(|| {
            let unit = Arc::new(Unit {
                id: NEXT_UNIT.fetch_add(1, Ordering::Relaxed),
                kind: match family {
                    Some(f) => Kind::Family(Box::new(f.clone())),
                    None => Kind::Single,
                },
                lane: if keyed || images.is_some() {
                    Lane::Keyed
                } else {
                    Lane::Rerun
                },
                heavy: Default::default(),
                avg_round_us: Default::default(),
                plan: a.plan.describe().into(),
                tables: Arc::new(a.tables.clone()),
                images: images.clone(),
                keys: a.topk.is_some(),
                queue: Mutex::new(Queue {
                    // A family is live from the start: members join it when ready.
                    live: live || family.is_some(),
                    ..Queue::default()
                }),
                state: Mutex::new(UnitState::default()),
                next_idx: AtomicU64::new(0),
            });
            if let Some(f) = family {
                self.families.insert(f.key.clone(), unit.id);
            }
            if let Some(t) = &unit.images {
                // Before-images are kept from now on; the initial query sets the position.
                lock(&core.images).track(&core.shared, t, unit.id, 0);
            }
            for t in unit.tables.iter() {
                self.by_table
                    .entry(t.clone())
                    .or_default()
                    .insert(unit.id, unit.clone());
            }
            self.units.insert(unit.id, unit.clone());
            unit
        });
        let idx = unit.next_idx.fetch_add(1, Ordering::Relaxed);
        *self.refs.entry(unit.id).or_default() += 1;
        self.subs.insert(
            id.to_string(),
            Entry {
                unit: unit.clone(),
                idx,
                key: a.normalized.clone(),
                meta: None,
            },
        );
        self.by_key.insert(a.normalized.clone(), id.to_string());
        (unit, idx)
    }

    /// Removes `id`; drops its unit when no entry is left.
    fn remove(&mut self, id: &str, core: &Core) {
        let Some(e) = self.subs.remove(id) else {
            return;
        };
        if self.by_key.get(&e.key).is_some_and(|v| v == id) {
            self.by_key.remove(&e.key);
        }
        let n = self.refs.entry(e.unit.id).or_default();
        *n = n.saturating_sub(1);
        if *n == 0 {
            let u = e.unit;
            self.refs.remove(&u.id);
            self.units.remove(&u.id);
            if let Some(t) = &u.images {
                lock(&core.images).untrack(&core.shared, t, u.id);
            }
            if let Kind::Family(f) = &u.kind {
                if self.families.get(&f.key) == Some(&u.id) {
                    self.families.remove(&f.key);
                }
            }
            for t in u.tables.iter() {
                if let Some(m) = self.by_table.get_mut(t) {
                    m.remove(&u.id);
                    if m.is_empty() {
                        self.by_table.remove(t);
                    }
                }
            }
        }
    }
}

fn new_meta(id: &str, a: &Analysis, unit: &Unit) -> Arc<SubMeta> {
    Arc::new(SubMeta {
        id: id.to_string(),
        hash: query_hash(&a.normalized),
        sql: a.sql.clone(),
        plan: unit.plan.clone(),
        tables: unit.tables.clone(),
        columns: a.columns.clone(),
        rows: Default::default(),
        last_change_id: Default::default(),
        listeners: Default::default(),
    })
}

fn new_sub(meta: Arc<SubMeta>, a: &Analysis, mv: MatView) -> Sub {
    let keyed = matches!(a.plan, Plan::Keyed { .. });
    Sub {
        meta,
        mv: Box::new(mv),
        last_change_id: 0,
        listeners: vec![],
        idle_since: Instant::now(),
        value: a.family.as_ref().filter(|_| keyed).map(|f| f.value.clone()),
    }
}

impl Core {
    /// Removes a subscription from the registry (its unit state is already updated).
    pub(super) fn forget(&self, id: &str) {
        lock(&self.registry).remove(id, self);
        self.registered.notify_all();
    }
}

impl Manager {
    /// `POST /v1/subscriptions`: subscribe (or join the identical existing subscription).
    pub fn subscribe(
        &self,
        stmt: &Statement,
        from: Option<u64>,
        skip_rows: bool,
    ) -> Result<Attach, SubsError> {
        let core = &self.core;
        let conn = core.reads.get()?;
        let analysis = analyze(&conn, stmt, &CatalogSchema(core.shared.catalog()))
            .map_err(|e| SubsError::BadRequest(e.0))?;
        let (id, unit, idx) = loop {
            let mut reg = lock(&core.registry);
            if let Some(id) = reg.by_key.get(&analysis.normalized).cloned() {
                if reg.subs.get(&id).is_some_and(|e| e.meta.is_some()) {
                    drop(reg);
                    return self.attach(&id, from, skip_rows);
                }
                // An identical subscribe is running its initial query: wait for its result.
                drop(
                    core.registered
                        .wait_timeout(reg, Duration::from_millis(200))
                        .unwrap_or_else(|e| e.into_inner()),
                );
                continue;
            }
            if from.is_some() {
                return Err(SubsError::NoSubscription(
                    "a `from` query param was supplied, but no existing subscription found; subscribe without `from`".into(),
                ));
            }
            let id = ActorId::random().hyphenated();
            let (unit, idx) = reg.reserve(&id, &analysis, false, core);
            if matches!(unit.kind, Kind::Family(_)) {
                lock(&unit.queue).joining.insert(idx, CatchUp::default());
            }
            break (id, unit, idx);
        };
        let result = self.create(&conn, &analysis, &id, &unit, idx, skip_rows);
        if result.is_err() {
            lock(&unit.queue).joining.remove(&idx);
            core.forget(&id);
        }
        result
    }

    /// The initial query (no lock held), then the subscription joins its unit.
    fn create(
        &self,
        conn: &rusqlite::Connection,
        analysis: &Analysis,
        id: &str,
        unit: &Arc<Unit>,
        idx: u64,
        skip_rows: bool,
    ) -> Result<Attach, SubsError> {
        let core = &self.core;
        let start = Instant::now();
        let mut mv = MatView::new(analysis);
        // A unit kept from before-images needs to know which commits its state includes.
        let (pos, rows) = if unit.images.is_some() {
            positioned_txn(&core.shared, conn, |c, _| Ok(mv.initial(c)?))
        } else {
            read_txn(conn, |c| Ok(mv.initial(c)?)).map(|r| (0, r))
        }
        .map_err(|e| SubsError::BadRequest(format!("query failed: {e:#}")))?;
        let meta = new_meta(id, analysis, unit);
        let mut st = lock(&unit.state);
        if let Some(t) = &unit.images {
            st.image_pos = pos;
            lock(&core.images).advance(t, unit.id, pos);
        }
        let rows = if matches!(unit.kind, Kind::Family(_)) {
            // Change sets the family processed since this member's reservation.
            let catch = lock(&unit.queue).joining.remove(&idx).unwrap_or_default();
            if catch.whole || !catch.batches.is_empty() {
                let changes = merge(&catch.batches, Some(&*unit.tables));
                read_txn(conn, |c| {
                    // Folded into the snapshot this member starts from: no change ids.
                    if catch.whole {
                        mv.recompute(c)?;
                    } else {
                        mv.refresh(c, &unit.tables, &changes)?;
                    }
                    Ok(())
                })
                .map_err(|e| SubsError::BadRequest(format!("query failed: {e:#}")))?;
                mv.snapshot()
            } else {
                rows
            }
        } else {
            rows
        };
        lock(&core.persist).create(id, &analysis.sql, &mv.export(), mv.next_row_id())?;
        let mut sub = new_sub(meta.clone(), analysis, mv);
        // `skip_rows` suppresses the snapshot entirely (columns, rows and eoq), as Corrosion does.
        let initial = if skip_rows {
            Vec::new()
        } else {
            snapshot_events(&meta.columns, rows, start.elapsed().as_secs_f64(), 0)
        };
        let (attach, listener) = Attach::listen(id.to_string(), meta.hash.clone(), initial, 0);
        sub.listeners.push(listener);
        sub.sync_meta();
        st.add_member(idx, sub);
        drop(st);
        lock(&unit.queue).live = true;
        schedule(core, unit);
        if let Some(e) = lock(&core.registry).subs.get_mut(id) {
            e.meta = Some(meta);
        }
        core.registered.notify_all();
        Ok(attach)
    }

    /// `GET /v1/subscriptions/{id}`.
    pub fn attach(
        &self,
        id: &str,
        from: Option<u64>,
        skip_rows: bool,
    ) -> Result<Attach, SubsError> {
        let core = &self.core;
        let not_found = || SubsError::NotFound(format!("could not find subscription with id {id}"));
        let (unit, idx) = loop {
            let reg = lock(&core.registry);
            match reg.subs.get(id) {
                None => return Err(not_found()),
                Some(e) if e.meta.is_some() => break (e.unit.clone(), e.idx),
                Some(_) => drop(
                    core.registered
                        .wait_timeout(reg, Duration::from_millis(200))
                        .unwrap_or_else(|e| e.into_inner()),
                ),
            }
        };
        let mut st = lock(&unit.state);
        let Some(sub) = st.subs.get_mut(&idx) else {
            return Err(not_found());
        };
        let last = sub.last_change_id;
        let hash = sub.meta.hash.clone();
        let initial = match from {
            Some(from) if from > 0 => {
                if from > last {
                    return Ok(Attach::failed(
                        id.into(),
                        hash,
                        Failure::Ahead { from, last },
                    ));
                }
                let (min, changes) = lock(&core.persist).changes_after(id, from)?;
                let first_needed = from + 1;
                if first_needed <= last && min.is_none_or(|m| m > first_needed) {
                    let min = min.unwrap_or(last + 1);
                    return Ok(Attach::failed(
                        id.into(),
                        hash,
                        Failure::TooOld { from, min },
                    ));
                }
                changes
                    .into_iter()
                    .map(|(cid, ch)| change_event(ch, cid))
                    .collect()
            }
            _ if skip_rows => Vec::new(),
            _ => snapshot_events(&sub.meta.columns, sub.mv.snapshot(), 0.0, last),
        };
        let (attach, l) = Attach::listen(id.to_string(), hash, initial, last);
        sub.listeners.push(l);
        sub.sync_meta();
        Ok(attach)
    }

    /// Restores persisted subscriptions: each is re-run and diffed against its stored rows.
    pub(super) fn restore(
        &self,
        stored: Vec<(
            super::persist::StoredSub,
            Vec<verdigris_subscriptions::matview::StoredRow>,
        )>,
    ) -> Result<()> {
        let core = &self.core;
        let schema = CatalogSchema(core.shared.catalog());
        let conn = crate::store::reader::open_read_connection(core.reads.path())?;
        for (s, rows) in stored {
            let analysis = match analyze(&conn, &Statement::new(s.sql.clone()), &schema) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(id = %s.id, error = %e, "dropping a stored subscription that no longer analyzes");
                    lock(&core.persist).delete(&s.id)?;
                    continue;
                }
            };
            if lock(&core.registry)
                .by_key
                .contains_key(&analysis.normalized)
            {
                tracing::warn!(id = %s.id, "dropping a stored duplicate of another subscription");
                lock(&core.persist).delete(&s.id)?;
                continue;
            }
            let mut mv = MatView::new(&analysis);
            mv.import(rows, s.next_row_id);
            let (pos, changes) = positioned_txn(&core.shared, &conn, |c, _| Ok(mv.recompute(c)?))?;
            let mut last_change_id = s.last_change_id;
            if !changes.is_empty() {
                let first = last_change_id + 1;
                last_change_id += changes.len() as u64;
                lock(&core.persist).write_round(&[super::persist::RoundWrite {
                    sub: &s.id,
                    first_change_id: first,
                    changes: &changes,
                    next_row_id: mv.next_row_id(),
                    retention: core.config.retention,
                }])?;
            }
            tracing::info!(id = %s.id, rows = mv.len(), caught_up = changes.len(), "restored subscription");
            // Lock order: the writer takes the image log under the commit gate, so the gate
            // is never taken here with the registry or the image log held.
            let (unit, idx) = lock(&core.registry).reserve(&s.id, &analysis, true, core);
            let meta = new_meta(&s.id, &analysis, &unit);
            let mut sub = new_sub(meta.clone(), &analysis, mv);
            sub.last_change_id = last_change_id;
            sub.sync_meta();
            if let Some(t) = &unit.images {
                lock(&unit.state).image_pos = pos;
                lock(&core.images).advance(t, unit.id, pos);
                // Restore runs before the node listens for commits, so none can land between
                // the re-run and following the table; should one, the unit starts over once.
                if *lock(&core.shared.commit_gate) != pos {
                    lock(&unit.queue).whole = true;
                }
            }
            lock(&unit.state).add_member(idx, sub);
            schedule(core, &unit);
            if let Some(e) = lock(&core.registry).subs.get_mut(&s.id) {
                e.meta = Some(meta);
            }
            core.registered.notify_all();
        }
        Ok(())
    }
}

use super::Attach;
