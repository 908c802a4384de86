//! Anti-entropy decisions, as pure functions over bookkeeping: the summary a node sends to a
//! sync peer ([`SyncState`]) and what to ask that peer for ([`compute_needs`]). No I/O, so the
//! simulation and the real sync sessions run the same code.

use crate::crdt::ActorId;
use crate::store::bookkeeping::{Bookie, RangeSet};
use std::collections::HashMap;

/// Most gap ranges and partial versions described per actor in a state message; a node with
/// more gaps than that still makes progress, a bit at a time.
pub const MAX_RANGES_PER_ACTOR: usize = 4096;
/// Full needs are cut into pieces of at most this many versions so that the newest missing
/// versions are asked for first and different peers can serve different pieces.
pub const NEED_PIECE_VERSIONS: u64 = 512;

/// What one node knows of one origin actor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActorState {
    pub actor: ActorId,
    /// Highest version seen.
    pub head: u64,
    /// Missing version ranges below `head`.
    pub needed: Vec<(u64, u64)>,
    /// Partially received versions: (version, last_seq, seq ranges present).
    pub partials: Vec<(u64, u64, Vec<(u64, u64)>)>,
}

/// A node's bookkeeping summary, sent at the start of a sync session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncState {
    pub actor: ActorId,
    pub actors: Vec<ActorState>,
}

/// One thing to ask a peer for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Every change of versions `a..=b`.
    Full {
        actor: ActorId,
        versions: (u64, u64),
    },
    /// Some seq ranges of one version.
    Partial {
        actor: ActorId,
        version: u64,
        seqs: Vec<(u64, u64)>,
    },
}

impl Need {
    pub fn actor(&self) -> ActorId {
        match self {
            Need::Full { actor, .. } | Need::Partial { actor, .. } => *actor,
        }
    }

    /// The newest version this need covers (for ordering).
    fn newest(&self) -> u64 {
        match self {
            Need::Full { versions, .. } => versions.1,
            Need::Partial { version, .. } => *version,
        }
    }
}

/// The summary of `book` that node `me` sends to sync peers.
pub fn state_of(book: &Bookie, me: ActorId) -> SyncState {
    let mut actors: Vec<ActorState> = book
        .actors()
        .filter(|(_, b)| b.max > 0)
        .map(|(a, b)| ActorState {
            actor: *a,
            head: b.max,
            needed: b.needed.iter().rev().take(MAX_RANGES_PER_ACTOR).collect(),
            partials: b
                .partials
                .iter()
                .rev()
                .take(MAX_RANGES_PER_ACTOR)
                .map(|(v, p)| (*v, p.last_seq, p.seqs.iter().take(64).collect()))
                .collect(),
        })
        .collect();
    actors.sort_by_key(|s| s.actor);
    SyncState { actor: me, actors }
}

/// What node `me` (bookkeeping `ours`) should ask a peer whose state is `theirs` for:
/// newest first, full ranges cut into pieces of [`NEED_PIECE_VERSIONS`].
pub fn compute_needs(ours: &Bookie, me: ActorId, theirs: &SyncState) -> Vec<Need> {
    let mut out = Vec::new();
    let empty = Default::default();
    for st in &theirs.actors {
        if st.actor == me || st.head == 0 {
            continue;
        }
        let mut their_have = RangeSet::from_ranges([(1, st.head)]);
        for (a, b) in &st.needed {
            their_have.remove(*a, *b);
        }
        let their_partials: HashMap<u64, RangeSet> = st
            .partials
            .iter()
            .map(|(v, _, seqs)| (*v, RangeSet::from_ranges(seqs.iter().copied())))
            .collect();
        for v in their_partials.keys() {
            their_have.remove(*v, *v);
        }
        let booked = ours.get(&st.actor).unwrap_or(&empty);
        let mut missing = booked.needed.clone();
        if st.head > booked.max {
            missing.insert(booked.max + 1, st.head);
        }
        for (a, b) in missing.iter() {
            for (x, y) in their_have.present_in(a, b) {
                let mut hi = y;
                loop {
                    let lo = hi.saturating_sub(NEED_PIECE_VERSIONS - 1).max(x);
                    out.push(Need::Full {
                        actor: st.actor,
                        versions: (lo, hi),
                    });
                    if lo == x {
                        break;
                    }
                    hi = lo - 1;
                }
            }
        }
        for (v, p) in &booked.partials {
            let want = p.seqs.missing_in(0, p.last_seq);
            let seqs: Vec<(u64, u64)> = if their_have.contains(*v) {
                want
            } else if let Some(theirs) = their_partials.get(v) {
                want.iter()
                    .flat_map(|(a, b)| theirs.present_in(*a, *b))
                    .collect()
            } else {
                continue;
            };
            if !seqs.is_empty() {
                out.push(Need::Partial {
                    actor: st.actor,
                    version: *v,
                    seqs,
                });
            }
        }
    }
    out.sort_by(|a, b| b.newest().cmp(&a.newest()));
    out
}

/// Versions already asked of some peer during one sync round, so that concurrent sessions
/// with different peers do not fetch the same data twice.
#[derive(Debug, Default)]
pub struct Claims {
    full: HashMap<ActorId, RangeSet>,
    partial: HashMap<ActorId, RangeSet>,
}

impl Claims {
    /// Keeps the parts of `needs` nobody claimed yet, claims them, and returns at most `max`.
    pub fn claim(&mut self, needs: Vec<Need>, max: usize) -> Vec<Need> {
        let mut out = Vec::new();
        for n in needs {
            if out.len() >= max {
                break;
            }
            match n {
                Need::Full { actor, versions } => {
                    let set = self.full.entry(actor).or_default();
                    for (a, b) in set.missing_in(versions.0, versions.1).into_iter().rev() {
                        out.push(Need::Full {
                            actor,
                            versions: (a, b),
                        });
                    }
                    set.insert(versions.0, versions.1);
                }
                Need::Partial {
                    actor,
                    version,
                    seqs,
                } => {
                    let set = self.partial.entry(actor).or_default();
                    if !set.contains(version) {
                        set.insert(version, version);
                        out.push(Need::Partial {
                            actor,
                            version,
                            seqs,
                        });
                    }
                }
            }
        }
        out.truncate(max);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(n: u8) -> ActorId {
        ActorId([n; 16])
    }

    #[test]
    fn needs_cover_gaps_heads_and_partials_newest_first() {
        let (me, a) = (actor(1), actor(2));
        let mut ours = Bookie::new();
        ours.record_known(a, 1..=3);
        ours.record_known(a, 6..=6); // gap 4..=5
        ours.entry(a).record_partial(7, 0, 4, 9, 0);
        let mut theirs_book = Bookie::new();
        theirs_book.record_known(a, 1..=1200);
        let theirs = state_of(&theirs_book, actor(3));
        let needs = compute_needs(&ours, me, &theirs);
        assert_eq!(
            needs[0],
            Need::Full {
                actor: a,
                versions: (689, 1200)
            }
        );
        assert!(needs.contains(&Need::Full {
            actor: a,
            versions: (4, 5)
        }));
        assert!(needs.contains(&Need::Partial {
            actor: a,
            version: 7,
            seqs: vec![(5, 9)]
        }));
        let newest: Vec<u64> = needs.iter().map(Need::newest).collect();
        assert!(newest.windows(2).all(|w| w[0] >= w[1]), "{newest:?}");
        // Everything they have and we lack is covered exactly once.
        let mut covered = RangeSet::new();
        for n in &needs {
            if let Need::Full { versions, .. } = n {
                assert!(covered.missing_in(versions.0, versions.1) == vec![*versions]);
                covered.insert(versions.0, versions.1);
            }
        }
        assert_eq!(covered.iter().collect::<Vec<_>>(), vec![(4, 5), (8, 1200)]);
    }

    #[test]
    fn nothing_is_asked_of_a_peer_that_lacks_it_or_about_ourselves() {
        let (me, a) = (actor(1), actor(2));
        let mut ours = Bookie::new();
        ours.record_known(a, 1..=2);
        let mut theirs_book = Bookie::new();
        theirs_book.record_known(a, 1..=1);
        theirs_book.record_known(a, 4..=4); // they lack 2..=3
        theirs_book.record_known(me, 1..=9);
        let needs = compute_needs(&ours, me, &state_of(&theirs_book, actor(3)));
        assert_eq!(
            needs,
            vec![Need::Full {
                actor: a,
                versions: (4, 4)
            }]
        );
    }

    #[test]
    fn claims_split_work_between_sessions() {
        let a = actor(2);
        let mut c = Claims::default();
        let first = c.claim(
            vec![Need::Full {
                actor: a,
                versions: (1, 10),
            }],
            100,
        );
        assert_eq!(first.len(), 1);
        let second = c.claim(
            vec![Need::Full {
                actor: a,
                versions: (5, 20),
            }],
            100,
        );
        assert_eq!(
            second,
            vec![Need::Full {
                actor: a,
                versions: (11, 20)
            }]
        );
    }
}
