//! The total order on SQLite values that breaks ties between concurrent writes.
//!
//! Same rule as cr-sqlite: values of different storage classes compare by class, with
//! INTEGER > REAL > TEXT > BLOB > NULL; within a class integers and reals compare numerically,
//! text and blobs byte-wise. Integer 1 and real 1.0 are *different* values (class decides).

use rusqlite::types::Value;
use std::cmp::Ordering;

fn class_rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Blob(_) => 1,
        Value::Text(_) => 2,
        Value::Real(_) => 3,
        Value::Integer(_) => 4,
    }
}

/// Total order used for merge tie-breaks.
pub fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Integer(x), Value::Integer(y)) => x.cmp(y),
        (Value::Real(x), Value::Real(y)) => x.total_cmp(y),
        (Value::Text(x), Value::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Blob(x), Value::Blob(y)) => x.cmp(y),
        _ => class_rank(a).cmp(&class_rank(b)),
    }
}

/// Whether two values are the same for no-op filtering (class-aware, so 1 ≠ 1.0).
pub fn same(a: &Value, b: &Value) -> bool {
    compare(a, b) == Ordering::Equal
}

/// Proptest generators shared by the crdt tests.
#[cfg(test)]
pub(crate) mod strategies {
    use proptest::prelude::*;
    use rusqlite::types::Value;

    /// Small value domain so that ties (equal versions, equal values) are frequent.
    pub fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Integer),
            (-1e6f64..1e6).prop_map(Value::Real),
            "[a-c]{0,3}".prop_map(Value::Text),
            proptest::collection::vec(0u8..3, 0..3).prop_map(Value::Blob),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::strategies::any_value;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn class_order_matches_cr_sqlite() {
        let order = [
            Value::Null,
            Value::Blob(vec![255]),
            Value::Text("zzz".into()),
            Value::Real(1e300),
            Value::Integer(i64::MIN),
        ];
        for w in order.windows(2) {
            assert_eq!(
                compare(&w[0], &w[1]),
                Ordering::Less,
                "{:?} < {:?}",
                w[0],
                w[1]
            );
        }
        assert!(!same(&Value::Integer(1), &Value::Real(1.0)));
    }

    proptest! {
        #[test]
        fn compare_is_a_total_order(a in any_value(), b in any_value(), c in any_value()) {
            prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
            if compare(&a, &b) != Ordering::Greater && compare(&b, &c) != Ordering::Greater {
                prop_assert_ne!(compare(&a, &c), Ordering::Greater);
            }
            prop_assert_eq!(compare(&a, &a), Ordering::Equal);
        }
    }
}
