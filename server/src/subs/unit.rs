//! A *unit* of maintenance: one subscription, or one parameter family with all its members.
//! Units are scheduled independently (see [`super::worker`]), so a unit's cost is paid by that
//! unit: each has its own queue of change sets (`queue`, a leaf lock the dispatcher takes
//! briefly) and its own state lock (`state`: materializations, change ids and listeners),
//! which serializes its rounds and its listeners attaching, so a listener receives each of
//! the unit's change ids exactly once, in order.
//!
//! Lock order: registry → unit state → unit queue → persist. The registry is never taken while
//! a unit's state is held.

use super::attach::Listener;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use verdigris_api_types::QueryEvent;
use verdigris_subscriptions::family::{FamilyIndex, FamilyInfo, Member};
use verdigris_subscriptions::keyed::Keyed;
use verdigris_subscriptions::matview::Changes;
use verdigris_subscriptions::MatView;

/// Change sets queued per unit before they are merged into one.
pub(super) const MAX_BATCHES: usize = 64;
/// Keys queued per unit before its tables count as wholly changed (a full re-run).
pub(super) const MAX_QUEUED_KEYS: usize = 200_000;
/// Membership changes a family remembers for the workers' member tables; a worker further
/// behind rebuilds its copy.
const MAX_MEMBER_OPS: usize = 4096;

/// Which workers run a unit: cheap incremental work never queues behind re-runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// Keyed subscriptions and families, aggregate and `DISTINCT` subscriptions kept from
    /// before-images: cost proportional to the rows changed.
    Keyed,
    /// Subscriptions maintained by re-running their query (see `docs/subscriptions.md`)
    /// whose last round was cheap (e.g. `ORDER BY … LIMIT` read from an index).
    Rerun,
    /// Re-run subscriptions whose rounds average longer than [`HEAVY_ROUND`]: they queue
    /// among themselves, never in front of cheap re-runs.
    Heavy,
}

/// A re-run unit whose rounds average longer than this runs in the heavy lane.
pub(super) const HEAVY_ROUND: std::time::Duration = std::time::Duration::from_millis(20);

/// What admin views and counters read without taking the unit's lock.
#[derive(Debug)]
pub(super) struct SubMeta {
    pub id: String,
    pub hash: String,
    pub sql: String,
    /// The unit's plan description and tables, shared by its members.
    pub plan: Arc<str>,
    pub tables: Arc<BTreeSet<String>>,
    pub columns: Vec<String>,
    pub rows: AtomicUsize,
    pub last_change_id: AtomicU64,
    pub listeners: AtomicUsize,
}

pub(super) struct Sub {
    pub meta: Arc<SubMeta>,
    /// Boxed: a unit's member table keeps spare slots, which stay small this way.
    pub mv: Box<MatView>,
    pub last_change_id: u64,
    pub listeners: Vec<Listener<QueryEvent>>,
    pub idle_since: Instant,
    /// The member's value, in a family.
    pub value: Option<rusqlite::types::Value>,
}

impl Sub {
    /// Publishes the counters admin views read.
    pub fn sync_meta(&self) {
        let m = &self.meta;
        m.rows.store(self.mv.len(), Ordering::Relaxed);
        m.last_change_id
            .store(self.last_change_id, Ordering::Relaxed);
        m.listeners.store(self.listeners.len(), Ordering::Relaxed);
    }
}

impl Member for Sub {
    fn keyed(&self) -> Option<&Keyed> {
        self.mv.keyed()
    }
    fn keyed_mut(&mut self) -> Option<&mut Keyed> {
        self.mv.keyed_mut()
    }
}

pub(super) enum Kind {
    Single,
    /// The family's shared evaluation (its key, member table and fetch query).
    Family(Box<FamilyInfo>),
}

pub(super) struct Unit {
    pub id: u64,
    pub kind: Kind,
    /// How the unit is maintained: [`Lane::Keyed`] or [`Lane::Rerun`].
    pub lane: Lane,
    /// A re-run unit whose last round was slow runs in [`Lane::Heavy`].
    pub heavy: std::sync::atomic::AtomicBool,
    /// Decayed average of the unit's round times, in µs (0: no round yet).
    pub avg_round_us: AtomicU64,
    /// How the unit is maintained, for admin views (the same for every member).
    pub plan: Arc<str>,
    pub tables: Arc<BTreeSet<String>>,
    /// The table whose before-images maintain the unit (aggregates and `DISTINCT`; see
    /// [`super::images`]); such a unit only needs to know that its table changed.
    pub images: Option<String>,
    /// A re-run unit that needs the changed keys (an `ORDER BY … LIMIT` guard decides from
    /// them whether to re-run).
    pub keys: bool,
    pub queue: Mutex<Queue>,
    pub state: Mutex<UnitState>,
    /// The next member index (a single subscription is member 0).
    pub next_idx: AtomicU64,
}

/// Work waiting for a unit.
#[derive(Default)]
pub(super) struct Queue {
    pub batches: Vec<Arc<Changes>>,
    /// Re-run in full (tables changed wholesale, too many keys, or a retry after a failure).
    pub whole: bool,
    /// A re-run unit only needs to know that something it reads changed.
    pub dirty: bool,
    /// When the oldest change set not yet processed was committed.
    pub since: Option<Instant>,
    /// In a lane's ready queue, running, or waiting for a retry.
    pub scheduled: bool,
    /// False while a new single subscription runs its initial query.
    pub live: bool,
    /// Change sets seen while family members run their initial query (by join token):
    /// applied to the member when it joins.
    pub joining: HashMap<u64, CatchUp>,
}

#[derive(Default)]
pub(super) struct CatchUp {
    pub batches: Vec<Arc<Changes>>,
    pub whole: bool,
}

impl Unit {
    /// The lane the unit runs in now.
    pub fn lane_now(&self) -> Lane {
        if self.moves() && self.heavy.load(Ordering::Relaxed) {
            Lane::Heavy
        } else {
            self.lane
        }
    }

    /// Whether slow rounds move the unit to the heavy lane: re-run units, and units kept from
    /// before-images (cheap, but they re-run their query after a failure or a gap).
    fn moves(&self) -> bool {
        self.lane == Lane::Rerun || self.images.is_some()
    }

    /// How a change set is queued for the unit.
    pub fn queue_lane(&self) -> Lane {
        if self.images.is_some() {
            Lane::Rerun
        } else if self.keys {
            Lane::Keyed
        } else {
            self.lane
        }
    }

    /// Records how long a round took: re-run units move between the re-run lanes on a decayed
    /// average of their rounds (`avg += (d - avg) / 4`), so one round slowed by a busy host
    /// does not send a cheap unit behind the heavy ones.
    pub fn round_took(&self, d: std::time::Duration) {
        if !self.moves() {
            return;
        }
        let d = d.as_micros().min(u64::MAX as u128) as u64;
        let old = self.avg_round_us.load(Ordering::Relaxed);
        let avg = if old == 0 { d } else { old - old / 4 + d / 4 };
        self.avg_round_us.store(avg.max(1), Ordering::Relaxed);
        self.heavy
            .store(avg > HEAVY_ROUND.as_micros() as u64, Ordering::Relaxed);
    }
}

impl CatchUp {
    pub fn push(&mut self, batch: &Arc<Changes>, whole: bool) {
        if whole || self.batches.len() >= MAX_BATCHES {
            self.whole = true;
            self.batches.clear();
        } else if !self.whole {
            self.batches.push(batch.clone());
        }
    }
}

impl Queue {
    pub fn has_work(&self) -> bool {
        self.whole || self.dirty || !self.batches.is_empty()
    }

    /// Adds a change set (`whole`: its tables changed wholesale).
    pub fn push(&mut self, lane: Lane, batch: &Arc<Changes>, whole: bool, since: Option<Instant>) {
        if let Some(t) = since {
            self.since = Some(self.since.map_or(t, |s| s.min(t)));
        }
        for c in self.joining.values_mut() {
            c.push(batch, whole);
        }
        if whole {
            self.whole = true;
            self.batches.clear();
            return;
        }
        match lane {
            Lane::Rerun | Lane::Heavy => self.dirty = true,
            Lane::Keyed if self.whole => {}
            Lane::Keyed => {
                self.batches.push(batch.clone());
                if self.batches.len() > MAX_BATCHES {
                    let merged = merge(&self.batches, None);
                    if merged.values().map(|k| k.len()).sum::<usize>() > MAX_QUEUED_KEYS {
                        self.whole = true;
                        self.batches.clear();
                    } else {
                        self.batches = vec![Arc::new(merged)];
                    }
                }
            }
        }
    }

    /// Takes the queued work of a unit kept from before-images: (re-run in full, oldest
    /// commit); that its table changed (`dirty`) is all it needs to know.
    pub fn take_images(&mut self) -> (bool, Option<Instant>) {
        self.dirty = false;
        self.batches.clear();
        (std::mem::take(&mut self.whole), self.since.take())
    }

    /// Takes the queued work: (change sets, re-run in full, oldest commit).
    pub fn take(&mut self) -> (Vec<Arc<Changes>>, bool, Option<Instant>) {
        let whole = std::mem::take(&mut self.whole) || std::mem::take(&mut self.dirty);
        (std::mem::take(&mut self.batches), whole, self.since.take())
    }
}

/// One change set from several, keeping only `tables` (all tables when `None`).
pub(super) fn merge(batches: &[Arc<Changes>], tables: Option<&BTreeSet<String>>) -> Changes {
    let mut out = Changes::new();
    for b in batches {
        for (t, keys) in b.iter() {
            if tables.is_some_and(|ts| !ts.contains(t)) {
                continue;
            }
            out.entry(t.clone())
                .or_default()
                .extend(keys.iter().cloned());
        }
    }
    out
}

/// The state of a unit, under its lock.
#[derive(Default)]
pub(super) struct UnitState {
    /// Member index → subscription (a single subscription is member 0).
    pub subs: HashMap<u64, Sub>,
    pub index: FamilyIndex,
    /// Bumped on every membership change; workers compare it with their copy's.
    pub members_version: u64,
    /// Recent membership changes: (version, member, value or `None` for a removal).
    pub member_ops: VecDeque<(u64, u64, Option<rusqlite::types::Value>)>,
    /// Consecutive failed rounds (for the retry backoff).
    pub failures: u32,
    /// A unit kept from before-images: the last commit its state includes.
    pub image_pos: u64,
}

impl UnitState {
    pub fn add_member(&mut self, idx: u64, sub: Sub) {
        if let Some(k) = sub.mv.keyed() {
            if sub.value.is_some() {
                self.index.add_member(idx, k);
            }
        }
        self.note_member(idx, sub.value.clone());
        self.subs.insert(idx, sub);
    }

    pub fn remove_member(&mut self, idx: u64) -> Option<Sub> {
        let sub = self.subs.remove(&idx)?;
        if let (Some(k), Some(_)) = (sub.mv.keyed(), &sub.value) {
            self.index.remove_member(idx, k);
        }
        self.note_member(idx, None);
        Some(sub)
    }

    fn note_member(&mut self, idx: u64, value: Option<rusqlite::types::Value>) {
        self.members_version += 1;
        self.member_ops
            .push_back((self.members_version, idx, value));
        while self.member_ops.len() > MAX_MEMBER_OPS {
            self.member_ops.pop_front();
        }
    }

    /// Brings a connection's copy of the family's member table from version `have` to the
    /// current one: the recent changes if they reach back far enough, else a rebuild.
    pub fn sync_members(
        &self,
        info: &FamilyInfo,
        conn: &rusqlite::Connection,
        have: Option<u64>,
    ) -> rusqlite::Result<u64> {
        let v = self.members_version;
        if have == Some(v) {
            return Ok(v);
        }
        let oldest = self.member_ops.front().map(|o| o.0);
        match (have, oldest) {
            (Some(h), Some(o)) if o <= h + 1 => {
                for (_, idx, value) in self.member_ops.iter().filter(|o| o.0 > h) {
                    match value {
                        Some(val) => info.put_member(conn, *idx, val)?,
                        None => info.remove_member(conn, *idx)?,
                    }
                }
            }
            _ => {
                info.clear_members(conn)?;
                for (idx, s) in &self.subs {
                    if let Some(val) = &s.value {
                        info.put_member(conn, *idx, val)?;
                    }
                }
            }
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(t: &str, k: u8) -> Arc<Changes> {
        let mut c = Changes::new();
        c.entry(t.into()).or_default().insert(vec![k]);
        Arc::new(c)
    }

    #[test]
    fn a_queue_stays_bounded_and_keeps_every_key() {
        let mut q = Queue::default();
        for k in 0..200u8 {
            q.push(Lane::Keyed, &batch("t", k), false, None);
            assert!(q.batches.len() <= MAX_BATCHES + 1);
        }
        let (batches, whole, _) = q.take();
        assert!(!whole);
        assert_eq!(merge(&batches, None)["t"].len(), 200);
        assert!(!q.has_work());
    }

    #[test]
    fn a_rerun_unit_only_records_that_it_is_dirty() {
        let mut q = Queue::default();
        q.push(Lane::Rerun, &batch("t", 1), false, None);
        assert!(q.batches.is_empty() && q.has_work());
        let (_, whole, _) = q.take();
        assert!(whole);
    }

    #[test]
    fn joining_members_see_every_change_set_or_a_full_rerun() {
        let mut q = Queue::default();
        q.joining.insert(7, CatchUp::default());
        q.push(Lane::Keyed, &batch("t", 1), false, None);
        assert_eq!(q.joining[&7].batches.len(), 1);
        for k in 0..=MAX_BATCHES as u8 {
            q.push(Lane::Keyed, &batch("t", k), false, None);
        }
        assert!(q.joining[&7].whole);
    }

    fn rerun_unit() -> Unit {
        Unit {
            id: 1,
            kind: Kind::Single,
            lane: Lane::Rerun,
            heavy: Default::default(),
            avg_round_us: Default::default(),
            plan: "re-run".into(),
            tables: Arc::default(),
            images: None,
            keys: false,
            queue: Mutex::default(),
            state: Mutex::default(),
            next_idx: AtomicU64::new(0),
        }
    }

    #[test]
    fn slow_reruns_move_to_the_heavy_lane_and_one_slow_round_does_not() {
        let ms = std::time::Duration::from_millis;
        let u = rerun_unit();
        u.round_took(ms(2));
        assert_eq!(u.lane_now(), Lane::Rerun);
        u.round_took(ms(60));
        assert_eq!(u.lane_now(), Lane::Rerun, "one slow round on a busy host");
        for _ in 0..3 {
            u.round_took(ms(300));
        }
        assert_eq!(u.lane_now(), Lane::Heavy);
        for _ in 0..12 {
            u.round_took(ms(1));
        }
        assert_eq!(u.lane_now(), Lane::Rerun, "cheap again");
    }

    #[test]
    fn merge_keeps_only_the_units_tables() {
        let both = merge(&[batch("t", 1), batch("u", 2)], None);
        assert_eq!(both.len(), 2);
        let only: BTreeSet<String> = ["t".to_string()].into();
        assert_eq!(merge(&[batch("t", 1), batch("u", 2)], Some(&only)).len(), 1);
    }
}
