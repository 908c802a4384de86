//! Property tests of the merge laws and of convergence over random change sets.

use super::*;
use crate::crdt::value::strategies::any_value;
use proptest::prelude::*;

/// An owned change, for generating.
#[derive(Clone, Debug)]
struct Change {
    cl: i64,
    actor: u8,
    cell: Option<(u32, i64, Value)>,
}

impl Change {
    fn incoming(&self) -> Incoming<'_> {
        Incoming {
            cl: self.cl,
            actor: ActorId([self.actor; 16]),
            cell: self
                .cell
                .as_ref()
                .map(|(col, col_version, value)| IncomingCell {
                    col: *col,
                    col_version: *col_version,
                    value,
                }),
        }
    }
}

fn change() -> impl Strategy<Value = Change> {
    (
        1i64..6,
        0u8..3,
        proptest::option::weighted(0.8, (0u32..3, 1i64..4, any_value())),
    )
        .prop_map(|(cl, actor, cell)| Change { cl, actor, cell })
}

fn state() -> impl Strategy<Value = RowState> {
    proptest::collection::vec(change(), 0..6).prop_map(|cs| {
        let mut s = RowState::default();
        for c in &cs {
            s.apply(&c.incoming());
        }
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn join_is_idempotent(a in state()) {
        prop_assert_eq!(a.join(&a), a);
    }

    #[test]
    fn join_is_commutative(a in state(), b in state()) {
        prop_assert_eq!(a.join(&b), b.join(&a));
    }

    #[test]
    fn join_is_associative(a in state(), b in state(), c in state()) {
        prop_assert_eq!(a.join(&b).join(&c), a.join(&b.join(&c)));
    }

    /// `decide` (what the store executes) is exactly "join with the change's state".
    #[test]
    fn decide_agrees_with_join(s in state(), c in change()) {
        let mut applied = s.clone();
        applied.apply(&c.incoming());
        prop_assert_eq!(applied, s.join(&RowState::of_change(&c.incoming())));
    }

    /// Any permutation and duplication of the same changes yields the same state.
    #[test]
    fn convergence_under_reordering_and_duplication(
        changes in proptest::collection::vec(change(), 1..12),
        order in proptest::collection::vec(any::<prop::sample::Index>(), 1..30),
    ) {
        let mut forward = RowState::default();
        for c in &changes {
            forward.apply(&c.incoming());
        }
        // Another replica receives a shuffled stream with duplicates, and every change at least once.
        let mut other = RowState::default();
        for i in &order {
            other.apply(&changes[i.index(changes.len())].incoming());
        }
        for c in changes.iter().rev() {
            other.apply(&c.incoming());
        }
        prop_assert_eq!(forward, other);
    }
}

#[test]
fn delete_then_reinsert_hides_old_life_values() {
    let a = ActorId([1; 16]);
    let v = Value::Text("old".into());
    let mut s = RowState::default();
    s.apply(&Incoming {
        cl: 1,
        actor: a,
        cell: Some(IncomingCell {
            col: 0,
            col_version: 5,
            value: &v,
        }),
    });
    s.apply(&Incoming {
        cl: 1,
        actor: a,
        cell: Some(IncomingCell {
            col: 1,
            col_version: 1,
            value: &v,
        }),
    });
    // Re-created (cl 3) with only column 1 written: column 0 must not keep the old value.
    let n = Value::Integer(7);
    s.apply(&Incoming {
        cl: 3,
        actor: a,
        cell: Some(IncomingCell {
            col: 1,
            col_version: 1,
            value: &n,
        }),
    });
    assert_eq!(s.cl, 3);
    assert_eq!(s.cells.len(), 1);
    // A late change from the first life loses.
    s.apply(&Incoming {
        cl: 1,
        actor: a,
        cell: Some(IncomingCell {
            col: 0,
            col_version: 9,
            value: &v,
        }),
    });
    assert_eq!(s.cells.len(), 1);
    // A delete of the old life (cl 2) loses too.
    s.apply(&Incoming {
        cl: 2,
        actor: a,
        cell: None,
    });
    assert!(s.alive());
}

#[test]
fn tie_breaks_follow_version_then_value_then_actor() {
    let lo = ActorId([1; 16]);
    let hi = ActorId([2; 16]);
    let one = Value::Integer(1);
    let text = Value::Text("z".into());
    let base = Incoming {
        cl: 1,
        actor: lo,
        cell: Some(IncomingCell {
            col: 0,
            col_version: 2,
            value: &one,
        }),
    };
    let mut s = RowState::default();
    s.apply(&base);
    // Same version, TEXT < INTEGER: loses.
    s.apply(&Incoming {
        cl: 1,
        actor: hi,
        cell: Some(IncomingCell {
            col: 0,
            col_version: 2,
            value: &text,
        }),
    });
    assert_eq!(s.cells[&0].value, one);
    // Same version and value, larger actor: wins (metadata only).
    s.apply(&Incoming {
        cl: 1,
        actor: hi,
        cell: Some(IncomingCell {
            col: 0,
            col_version: 2,
            value: &one,
        }),
    });
    assert_eq!(s.cells[&0].actor, hi);
    // Higher version wins regardless of value.
    s.apply(&Incoming {
        cl: 1,
        actor: lo,
        cell: Some(IncomingCell {
            col: 0,
            col_version: 3,
            value: &text,
        }),
    });
    assert_eq!(s.cells[&0].value, text);
}
