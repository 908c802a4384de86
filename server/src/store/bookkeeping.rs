//! Version bookkeeping ("bookie"): per origin actor, which versions this node has (applied or
//! cleared), which are missing below the highest one seen (gaps), and which are partially
//! received (seq ranges buffered so far). Pure data; the store keeps it in step with SQLite
//! (`__vd_versions`, `__vd_partials`) and sync reads it to decide what to ask peers for.

use crate::crdt::ActorId;
use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;

/// A set of u64 stored as disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start → end (inclusive).
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    pub fn from_ranges(rs: impl IntoIterator<Item = (u64, u64)>) -> RangeSet {
        let mut s = RangeSet::new();
        for (a, b) in rs {
            s.insert(a, b);
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of ranges.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// Number of values (saturating).
    pub fn len(&self) -> u64 {
        self.ranges
            .iter()
            .fold(0u64, |n, (a, b)| n.saturating_add(b - a).saturating_add(1))
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(a, b)| (*a, *b))
    }

    pub fn contains(&self, v: u64) -> bool {
        self.ranges
            .range(..=v)
            .next_back()
            .is_some_and(|(_, e)| *e >= v)
    }

    /// Whether every value of `a..=b` is in the set.
    pub fn contains_range(&self, a: u64, b: u64) -> bool {
        self.ranges
            .range(..=a)
            .next_back()
            .is_some_and(|(_, e)| *e >= b)
    }

    /// Adds `a..=b`, merging with overlapping or adjacent ranges.
    pub fn insert(&mut self, a: u64, b: u64) {
        if a > b {
            return;
        }
        let (mut start, mut end) = (a, b);
        if let Some((&s, &e)) = self.ranges.range(..=a).next_back() {
            if e.saturating_add(1) >= a {
                start = s;
                end = end.max(e);
            }
        }
        let overlapping: Vec<(u64, u64)> = self
            .ranges
            .range(start..=end.saturating_add(1))
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in overlapping {
            self.ranges.remove(&s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
    }

    /// Removes `a..=b`.
    pub fn remove(&mut self, a: u64, b: u64) {
        if a > b {
            return;
        }
        let mut touched: Vec<(u64, u64)> = self
            .ranges
            .range(..=b)
            .rev()
            .take_while(|(_, e)| **e >= a)
            .map(|(s, e)| (*s, *e))
            .collect();
        touched.reverse();
        for (s, e) in touched {
            self.ranges.remove(&s);
            if s < a {
                self.ranges.insert(s, a - 1);
            }
            if e > b {
                self.ranges.insert(b + 1, e);
            }
        }
    }

    /// The parts of `a..=b` that are NOT in the set.
    pub fn missing_in(&self, a: u64, b: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut cur = a;
        let first = self.ranges.range(..=a).next_back().map(|(s, _)| *s);
        let iter = self.ranges.range(first.unwrap_or(a)..=b);
        for (&s, &e) in iter {
            if e < cur {
                continue;
            }
            if s > cur {
                out.push((cur, s - 1));
            }
            if e >= b {
                return out;
            }
            cur = e + 1;
        }
        if cur <= b {
            out.push((cur, b));
        }
        out
    }

    /// The parts of `a..=b` that are in the set.
    pub fn present_in(&self, a: u64, b: u64) -> Vec<(u64, u64)> {
        let first = self.ranges.range(..=a).next_back().map(|(s, _)| *s);
        self.ranges
            .range(first.unwrap_or(a)..=b)
            .filter(|(_, e)| **e >= a)
            .map(|(s, e)| ((*s).max(a), (*e).min(b)))
            .collect()
    }
}

/// A version received in part: the seqs seen so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    pub seqs: RangeSet,
    pub last_seq: u64,
    pub ts: u64,
}

impl Partial {
    pub fn is_complete(&self) -> bool {
        self.seqs.contains_range(0, self.last_seq)
    }
}

/// What is known of one origin actor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Booked {
    /// Highest version seen (complete, cleared or partial); 0 if none.
    pub max: u64,
    /// Versions below `max` that are neither known nor partial.
    pub needed: RangeSet,
    /// Versions received in part.
    pub partials: BTreeMap<u64, Partial>,
}

impl Booked {
    /// Whether version `v` is known (applied or cleared).
    pub fn knows(&self, v: u64) -> bool {
        v >= 1 && v <= self.max && !self.needed.contains(v) && !self.partials.contains_key(&v)
    }

    /// Whether the seqs `a..=b` of version `v` are already here (known, or buffered).
    pub fn has_seqs(&self, v: u64, a: u64, b: u64) -> bool {
        if self.knows(v) {
            return true;
        }
        self.partials
            .get(&v)
            .is_some_and(|p| p.seqs.contains_range(a, b))
    }

    fn extend_max(&mut self, b: u64) {
        if b > self.max {
            if b > self.max + 1 {
                self.needed.insert(self.max + 1, b - 1);
            }
            self.max = b;
        }
    }

    /// Records versions `a..=b` as known.
    pub fn record_known(&mut self, a: u64, b: u64) {
        if a == 0 || a > b {
            return;
        }
        self.extend_max(b);
        self.needed.remove(a, b);
        if !self.partials.is_empty() {
            let done: Vec<u64> = self.partials.range(a..=b).map(|(v, _)| *v).collect();
            for v in done {
                self.partials.remove(&v);
            }
        }
    }

    /// Records seqs `a..=b` of version `v`; returns whether the version is now complete.
    pub fn record_partial(&mut self, v: u64, a: u64, b: u64, last_seq: u64, ts: u64) -> bool {
        if v == 0 || self.knows(v) {
            return false;
        }
        self.extend_max(v);
        self.needed.remove(v, v);
        let p = self.partials.entry(v).or_insert_with(|| Partial {
            seqs: RangeSet::new(),
            last_seq,
            ts,
        });
        p.seqs.insert(a, b.min(p.last_seq));
        p.is_complete()
    }

    /// Number of versions missing (gaps plus incomplete partials).
    pub fn gap_count(&self) -> u64 {
        self.needed.len() + self.partials.len() as u64
    }
}

/// Bookkeeping for every actor this node has heard of.
#[derive(Debug, Clone, Default)]
pub struct Bookie {
    actors: HashMap<ActorId, Booked>,
}

impl Bookie {
    pub fn new() -> Bookie {
        Bookie::default()
    }

    pub fn get(&self, a: &ActorId) -> Option<&Booked> {
        self.actors.get(a)
    }

    pub fn entry(&mut self, a: ActorId) -> &mut Booked {
        self.actors.entry(a).or_default()
    }

    pub fn actors(&self) -> impl Iterator<Item = (&ActorId, &Booked)> {
        self.actors.iter()
    }

    pub fn knows(&self, a: &ActorId, v: u64) -> bool {
        self.actors.get(a).is_some_and(|b| b.knows(v))
    }

    pub fn has_seqs(&self, a: &ActorId, v: u64, seqs: &RangeInclusive<u64>) -> bool {
        self.actors
            .get(a)
            .is_some_and(|b| b.has_seqs(v, *seqs.start(), *seqs.end()))
    }

    pub fn record_known(&mut self, a: ActorId, versions: RangeInclusive<u64>) {
        self.entry(a)
            .record_known(*versions.start(), *versions.end());
    }

    /// Whether no version of any actor is known, buffered or even heard of.
    pub fn holds_nothing(&self) -> bool {
        self.actors.values().all(|b| b.max == 0)
    }

    /// Total number of missing versions over every actor (for `/v1/health`).
    pub fn gap_count(&self) -> u64 {
        self.actors.values().map(Booked::gap_count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn gaps_appear_and_fill() {
        let mut b = Booked::default();
        b.record_known(1, 1);
        b.record_known(5, 5);
        assert_eq!(b.needed.iter().collect::<Vec<_>>(), vec![(2, 4)]);
        assert!(b.knows(5) && !b.knows(3) && !b.knows(6));
        b.record_known(3, 3);
        assert_eq!(b.needed.iter().collect::<Vec<_>>(), vec![(2, 2), (4, 4)]);
        assert!(!b.record_partial(2, 0, 3, 9, 0));
        assert_eq!(b.gap_count(), 2, "one gap and one partial");
        assert!(b.has_seqs(2, 1, 3) && !b.has_seqs(2, 3, 4));
        assert!(
            b.record_partial(2, 4, 9, 9, 0),
            "complete once 0..=9 is covered"
        );
        b.record_known(2, 2);
        b.record_known(4, 4);
        assert_eq!(b.gap_count(), 0);
        assert!(b.partials.is_empty());
    }

    fn model_ranges(s: &BTreeSet<u64>) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &v in s {
            match out.last_mut() {
                Some((_, e)) if *e + 1 == v => *e = v,
                _ => out.push((v, v)),
            }
        }
        out
    }

    proptest! {
        #[test]
        fn range_set_matches_a_set_model(ops in proptest::collection::vec((any::<bool>(), 0u64..60, 0u64..8), 0..60), q in (0u64..70, 0u64..10)) {
            let mut s = RangeSet::new();
            let mut m = BTreeSet::new();
            for (add, a, len) in ops {
                let b = a + len;
                if add { s.insert(a, b); m.extend(a..=b); } else { s.remove(a, b); for v in a..=b { m.remove(&v); } }
            }
            prop_assert_eq!(s.iter().collect::<Vec<_>>(), model_ranges(&m));
            prop_assert_eq!(s.len(), m.len() as u64);
            let (a, b) = (q.0, q.0 + q.1);
            let missing: BTreeSet<u64> = (a..=b).filter(|v| !m.contains(v)).collect();
            let present: BTreeSet<u64> = (a..=b).filter(|v| m.contains(v)).collect();
            prop_assert_eq!(s.missing_in(a, b), model_ranges(&missing));
            prop_assert_eq!(s.present_in(a, b), model_ranges(&present));
            prop_assert_eq!(s.contains_range(a, b), missing.is_empty());
        }
    }
}
