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
    pub partials: Vec<Partial>,
}

/// A partially received version: (version, last_seq, seq ranges present).
pub type Partial = (u64, u64, Vec<(u64, u64)>);

/// A node's bookkeeping summary, sent at the start of a sync session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncState {
    pub actor: ActorId,
    pub actors: Vec<ActorState>,
    /// Size of the sender's database file (0 when not told): decides whether a snapshot is
    /// worth fetching instead of changes.
    pub db_bytes: u64,
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
    SyncState {
        actor: me,
        actors,
        db_bytes: 0,
    }
}

/// Versions a state says its node holds (applied or cleared), approximately: gap lists are
/// truncated at [`MAX_RANGES_PER_ACTOR`].
pub fn held_versions(s: &SyncState) -> u64 {
    s.actors
        .iter()
        .map(|a| {
            let missing: u64 = a.needed.iter().map(|(x, y)| y - x + 1).sum();
            a.head
                .saturating_sub(missing)
                .saturating_sub(a.partials.len() as u64)
        })
        .sum()
}

/// Whether a node in state `ours` should replace its replicated data with a snapshot of a
/// peer in state `theirs` instead of fetching changes: it never wrote anything itself (its
/// own writes exist nowhere else), the peer's database is at least `min_bytes`, and the peer
/// holds more than twice the versions it does (a new node, or one far behind).
pub fn wants_snapshot(ours: &SyncState, theirs: &SyncState, min_bytes: u64) -> bool {
    let wrote = ours
        .actors
        .iter()
        .any(|a| a.actor == ours.actor && a.head > 0);
    !wrote && theirs.db_bytes >= min_bytes && held_versions(theirs) > 2 * held_versions(ours)
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
        // Versions we lack entirely that they hold in part: take the part (another peer may
        // hold the rest, and the origin may be gone).
        for (v, theirs) in &their_partials {
            if missing.contains(*v) {
                out.push(Need::Partial {
                    actor: st.actor,
                    version: *v,
                    seqs: theirs.iter().collect(),
                });
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
    out.sort_by_key(|a| std::cmp::Reverse(a.newest()));
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
                        if out.len() >= max {
                            break;
                        }
                        // Only what is handed out is claimed: the rest stays free for others.
                        set.insert(a, b);
                        out.push(Need::Full {
                            actor,
                            versions: (a, b),
                        });
                    }
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
        out
    }

    /// Frees what a session claimed (it ended; whatever it did not fetch is still needed).
    pub fn release(&mut self, needs: &[Need]) {
        for n in needs {
            match n {
                Need::Full { actor, versions } => {
                    if let Some(set) = self.full.get_mut(actor) {
                        set.remove(versions.0, versions.1);
                    }
                }
                Need::Partial { actor, version, .. } => {
                    if let Some(set) = self.partial.get_mut(actor) {
                        set.remove(*version, *version);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(n: u8) -> ActorId {
        ActorId([n; 16])
    }

    #[test]
    fn a_version_we_lack_is_asked_in_part_of_a_partial_holder() {
        let (me, a) = (actor(1), actor(2));
        let mut ours = Bookie::new();
        ours.record_known(a, 1..=3);
        let mut theirs_book = Bookie::new();
        theirs_book.record_known(a, 1..=4);
        theirs_book.entry(a).record_partial(5, 0, 9, 30, 0);
        theirs_book.entry(a).record_partial(5, 20, 25, 30, 0);
        let needs = compute_needs(&ours, me, &state_of(&theirs_book, actor(3)));
        assert_eq!(
            needs,
            vec![
                Need::Partial {
                    actor: a,
                    version: 5,
                    seqs: vec![(0, 9), (20, 25)],
                },
                Need::Full {
                    actor: a,
                    versions: (4, 4),
                },
            ]
        );
        // Once we hold it completely, nothing is asked.
        ours.record_known(a, 4..=5);
        assert!(compute_needs(&ours, me, &state_of(&theirs_book, actor(3))).is_empty());
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

    #[test]
    fn claims_hand_out_at_most_max_and_released_needs_can_be_claimed_again() {
        let a = actor(2);
        let full = |x, y| Need::Full {
            actor: a,
            versions: (x, y),
        };
        let mut c = Claims::default();
        c.claim(vec![full(5, 6)], 100);
        // (1..=10) minus the claimed 5..=6 is two ranges; with room for one, the other stays
        // free: a later session gets it.
        let first = c.claim(vec![full(1, 10)], 1);
        assert_eq!(first, vec![full(7, 10)]);
        assert_eq!(c.claim(vec![full(1, 10)], 10), vec![full(1, 4)]);
        // A session that ended (failed, or its peer was busy) gives its claims back.
        c.release(&first);
        assert_eq!(c.claim(vec![full(1, 10)], 10), vec![full(7, 10)]);
        let partial = Need::Partial {
            actor: a,
            version: 3,
            seqs: vec![(0, 1)],
        };
        assert_eq!(c.claim(vec![partial.clone()], 10).len(), 1);
        assert!(c.claim(vec![partial.clone()], 10).is_empty());
        c.release(std::slice::from_ref(&partial));
        assert_eq!(c.claim(vec![partial], 10).len(), 1);
    }

    fn state(me: ActorId, heads: &[(ActorId, u64)], db_bytes: u64) -> SyncState {
        SyncState {
            actor: me,
            actors: heads
                .iter()
                .map(|(a, h)| ActorState {
                    actor: *a,
                    head: *h,
                    needed: vec![],
                    partials: vec![],
                })
                .collect(),
            db_bytes,
        }
    }

    #[test]
    fn snapshots_go_to_nodes_that_never_wrote_and_hold_far_less() {
        let (me, a, b) = (actor(1), actor(2), actor(3));
        let big = 64 << 20;
        let peer = state(b, &[(a, 100), (b, 50)], big);
        // A new node.
        assert!(wants_snapshot(&state(me, &[], 0), &peer, 16 << 20));
        // One far behind, that only ever received.
        assert!(wants_snapshot(&state(me, &[(a, 40)], 0), &peer, 16 << 20));
        // Not when it wrote anything itself: the import would replace its writes.
        assert!(!wants_snapshot(&state(me, &[(me, 1)], 0), &peer, 16 << 20));
        // Not when it holds half or more.
        assert!(!wants_snapshot(&state(me, &[(a, 100)], 0), &peer, 16 << 20));
        // Not from a small database (changes are cheap enough), nor one that did not say.
        assert!(!wants_snapshot(
            &state(me, &[], 0),
            &state(b, &[(a, 100)], 1 << 20),
            16 << 20
        ));
        assert!(!wants_snapshot(
            &state(me, &[], 0),
            &state(b, &[(a, 100)], 0),
            16 << 20
        ));
        // Gaps and partials do not count as held.
        let mut gappy = state(b, &[(a, 100)], big);
        gappy.actors[0].needed = vec![(1, 60)];
        gappy.actors[0].partials = vec![(61, 3, vec![(0, 1)])];
        assert_eq!(held_versions(&gappy), 39);
        assert!(!wants_snapshot(&state(me, &[(a, 20)], 0), &gappy, 16 << 20));
    }
}
