//! Before-images for the subscriptions maintained from them (aggregates and `DISTINCT` over
//! one table, `verdigris_subscriptions::aggregate`).
//!
//! Such a subscription's state must move from one database state to the next exactly: the
//! rows it removes must be the rows it added. So each of its rounds reads a snapshot whose
//! position in the node's commit order is known ([`Shared::positioned_snapshot`]: the writer
//! commits and notifies under one lock, and a reader starts its snapshot under it), and takes
//! the before-images of every commit between its last position and that one from this log.
//! The after-images are the rows in the snapshot itself.
//!
//! The log keeps, per table followed by such a subscription, the changed rows' before-images
//! of each commit (or a mark that they were not recorded), in commit order, bounded: past
//! [`MAX_ROWS`] rows the oldest commits are dropped, and a subscription that still needed them
//! re-runs its query once instead.

use crate::store::{Committed, Shared};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use verdigris_subscriptions::aggregate::Images;

/// Before-images kept per table before the oldest commits are dropped.
pub(super) const MAX_ROWS: usize = 200_000;

/// One commit's rows of a table: their keys with the position of each one's before-image in
/// the commit's (shared) images.
struct Rows {
    keys: Vec<(Vec<u8>, usize)>,
    images: crate::store::Images,
}

#[derive(Default)]
struct TableLog {
    /// (commit seq, its rows of this table with their before-images; `None`: not recorded).
    entries: VecDeque<(u64, Option<Arc<Rows>>)>,
    rows: usize,
    /// Commits up to this one may have been dropped.
    dropped_through: u64,
    /// Each following unit's position: it has applied every commit up to it.
    readers: HashMap<u64, u64>,
}

impl TableLog {
    fn trim(&mut self) {
        let min = self.readers.values().copied().min().unwrap_or(u64::MAX);
        while let Some((seq, rows)) = self.entries.front() {
            let over = self.rows > MAX_ROWS;
            if *seq > min && !over {
                break;
            }
            self.rows -= rows.as_ref().map_or(0, |r| r.keys.len());
            if *seq > min {
                self.dropped_through = self.dropped_through.max(*seq);
            }
            self.entries.pop_front();
        }
    }
}

/// The log, by lower-case table name.
#[derive(Default)]
pub(super) struct ImageLog {
    tables: HashMap<String, TableLog>,
}

/// The commits a round needs, gathered under the log's lock: shared with the log, not
/// copied, so the writer (which records under the same lock) is not held up.
pub(super) struct Needed(Option<Vec<Arc<Rows>>>);

impl Needed {
    /// Each changed row's first before-image, built with no lock held.
    pub fn images(self) -> Taken {
        let Some(commits) = self.0 else {
            return Taken::Missing;
        };
        let mut images = Images::new();
        for rows in commits {
            for (pk, i) in &rows.keys {
                let Some(before) = rows.images.get(*i) else {
                    return Taken::Missing;
                };
                images.entry(pk.clone()).or_insert_with(|| before.clone());
            }
        }
        Taken::Images(images)
    }
}

/// What a unit's round gets from the log.
#[derive(Debug)]
pub(super) enum Taken {
    /// Before-images of every row changed after the unit's position (possibly none).
    Images(Images),
    /// Some were not recorded or were dropped: the unit re-runs its query.
    Missing,
}

impl ImageLog {
    /// `unit` follows `table` from now on, having applied every commit up to `pos`.
    pub fn track(&mut self, shared: &Shared, table: &str, unit: u64, pos: u64) {
        self.tables
            .entry(table.to_string())
            .or_default()
            .readers
            .insert(unit, pos);
        self.publish(shared);
    }

    pub fn untrack(&mut self, shared: &Shared, table: &str, unit: u64) {
        if let Some(t) = self.tables.get_mut(table) {
            t.readers.remove(&unit);
            if t.readers.is_empty() {
                self.tables.remove(table);
            } else {
                t.trim();
            }
        }
        self.publish(shared);
    }

    /// Tells the store which tables' before-images to record.
    fn publish(&self, shared: &Shared) {
        *shared.image_tables.write().expect("image tables lock") =
            self.tables.keys().cloned().collect();
        shared
            .images_wanted
            .store(!self.tables.is_empty(), Ordering::Relaxed);
    }

    /// Records a commit (on the writer's thread, under the commit gate: cheap; the images
    /// are shared with the commit, not copied).
    pub fn record(&mut self, c: &Committed) {
        if self.tables.is_empty() {
            return;
        }
        let mut per_table: HashMap<String, Option<Rows>> = HashMap::new();
        let mut last: Option<(&Arc<str>, Option<String>)> = None;
        for (i, (table, pk)) in c.changed.iter().enumerate() {
            // Rows come in runs of one table: match each run's name once.
            let name = match &last {
                Some((t, name)) if Arc::ptr_eq(t, table) => name.clone(),
                _ => {
                    let name = self
                        .tables
                        .keys()
                        .find(|t| t.eq_ignore_ascii_case(table))
                        .cloned();
                    last = Some((table, name.clone()));
                    name
                }
            };
            let Some(name) = name else {
                continue;
            };
            // A table this commit recorded no images for (it was followed only after the
            // transaction began): its `None`s mean "not recorded", so the commit is missing.
            let recorded = c.imaged.as_ref().is_none_or(|t| t.contains(&name));
            let e = per_table.entry(name).or_insert_with(|| {
                c.before.as_ref().filter(|_| recorded).map(|images| Rows {
                    keys: Vec::new(),
                    images: images.clone(),
                })
            });
            if let Some(rows) = e {
                rows.keys.push((pk.clone(), i));
            }
        }
        for (name, rows) in per_table {
            let t = self.tables.get_mut(&name).expect("found above");
            t.rows += rows.as_ref().map_or(0, |r| r.keys.len());
            t.entries.push_back((c.seq, rows.map(Arc::new)));
            if t.rows > MAX_ROWS {
                t.trim();
            }
        }
    }

    /// The commits after `from` up to `to` that changed `table`'s rows, for
    /// [`Needed::images`]: each row's values before the first of them that changed it.
    pub fn take(&self, table: &str, from: u64, to: u64) -> Needed {
        let Some(t) = self.tables.get(table) else {
            return Needed(None);
        };
        if t.dropped_through > from {
            return Needed(None);
        }
        let mut commits = Vec::new();
        for (seq, rows) in &t.entries {
            if *seq <= from {
                continue;
            }
            if *seq > to {
                break;
            }
            let Some(rows) = rows else {
                return Needed(None);
            };
            commits.push(rows.clone());
        }
        Needed(Some(commits))
    }

    /// `unit` has applied every commit up to `pos`: entries every follower has applied go.
    pub fn advance(&mut self, table: &str, unit: u64, pos: u64) {
        if let Some(t) = self.tables.get_mut(table) {
            if let Some(p) = t.readers.get_mut(&unit) {
                *p = pos;
            }
            t.trim();
        }
    }

    /// Rows held, for tests and figures.
    #[cfg(test)]
    fn len(&self, table: &str) -> usize {
        self.tables.get(table).map_or(0, |t| t.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::types::Value;

    fn commit(seq: u64, rows: &[(i64, Option<i64>)], recorded: bool) -> Committed {
        let pk = |k: i64| verdigris_subscriptions::pack::pack_owned(&[Value::Integer(k)]);
        Committed {
            versions: vec![],
            local: true,
            changed: rows.iter().map(|(k, _)| (Arc::from("T"), pk(*k))).collect(),
            seq,
            before: recorded.then(|| {
                Arc::new(
                    rows.iter()
                        .map(|(_, b)| b.map(|v| vec![Value::Integer(v)]))
                        .collect(),
                )
            }),
            imaged: None,
        }
    }

    fn shared() -> Arc<Shared> {
        crate::store::Store::open_in_memory().unwrap().shared()
    }

    #[test]
    fn a_round_gets_each_rows_first_before_image_within_its_range() {
        let s = shared();
        let mut log = ImageLog::default();
        log.track(&s, "t", 1, 0);
        assert!(s.images_wanted.load(Ordering::Relaxed));
        log.record(&commit(1, &[(1, None)], true));
        log.record(&commit(2, &[(1, Some(10)), (2, Some(20))], true));
        log.record(&commit(3, &[(2, Some(21))], true));
        let Taken::Images(i) = log.take("t", 1, 3).images() else {
            panic!("recorded")
        };
        let pk = |k: i64| verdigris_subscriptions::pack::pack_owned(&[Value::Integer(k)]);
        assert_eq!(i[&pk(1)], Some(vec![Value::Integer(10)]));
        assert_eq!(
            i[&pk(2)],
            Some(vec![Value::Integer(20)]),
            "the first before-image"
        );
        let Taken::Images(i) = log.take("t", 0, 1).images() else {
            panic!("recorded")
        };
        assert_eq!(i[&pk(1)], None, "did not exist before commit 1");
        log.advance("t", 1, 3);
        assert_eq!(log.len("t"), 0, "applied by every follower: dropped");
        log.untrack(&s, "t", 1);
        assert!(!s.images_wanted.load(Ordering::Relaxed));
    }

    #[test]
    fn unrecorded_or_dropped_images_make_the_unit_rerun() {
        let s = shared();
        let mut log = ImageLog::default();
        log.track(&s, "t", 1, 0);
        log.record(&commit(1, &[(1, Some(1))], false));
        assert!(matches!(log.take("t", 0, 1).images(), Taken::Missing));
        // A merge that began before `t` was followed recorded images for other tables only:
        // its `None` for `t`'s row is "not recorded", not "did not exist".
        let mut merge = commit(2, &[(1, None)], true);
        merge.imaged = Some(Arc::new(["u".to_string()].into()));
        log.record(&merge);
        assert!(matches!(log.take("t", 1, 2).images(), Taken::Missing));
        let mut merge = commit(3, &[(1, Some(5))], true);
        merge.imaged = Some(Arc::new(["t".to_string()].into()));
        log.record(&merge);
        assert!(matches!(log.take("t", 2, 3).images(), Taken::Images(_)));
        assert!(
            matches!(log.take("t", 3, 3).images(), Taken::Images(_)),
            "after them: fine"
        );
        // A reader far behind: the log stays bounded and it learns it missed some.
        for seq in 4..(MAX_ROWS as u64 / 1000 + 10) {
            let rows: Vec<(i64, Option<i64>)> = (0..1000).map(|k| (k, Some(k))).collect();
            log.record(&commit(seq, &rows, true));
            assert!(log.len("t") <= MAX_ROWS + 1000);
        }
        assert!(matches!(
            log.take("t", 1, u64::MAX).images(),
            Taken::Missing
        ));
    }
}
