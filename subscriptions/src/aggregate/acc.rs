//! Pure aggregate state, no I/O: what one group keeps per aggregate so that adding and removing
//! rows yields exactly the value SQLite's own aggregate would return over the group's rows.
//!
//! - `count(*)`/`count(x)`: counters.
//! - `sum`/`total`/`avg`: the count of non-NULL inputs, the exact sum of the integer inputs
//!   (`i128`) and the exact sum of the real inputs (Shewchuk's non-overlapping partials, which
//!   support removal exactly). SQLite's rules: all inputs integer → `sum` is an integer (an
//!   error if it leaves the 64-bit range), `avg` is `sum / count` in floating point, `total` the
//!   sum as a real; any real input → the (compensated) floating-point sum of every input; no
//!   input → `sum`/`avg` NULL, `total` 0.0.
//! - `min`/`max`: the extreme and how many inputs equal it; removing the last one marks the
//!   state *stale* (the caller re-reads the group).
//!
//! Inputs arrive already classified ([`Input`]): the caller asks SQLite how `sum()` reads a
//! TEXT or BLOB value, so the numeric conversions are SQLite's.

use rusqlite::types::Value;
use std::cmp::Ordering;

/// One aggregate function of the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    CountStar,
    Count,
    Sum,
    Total,
    Avg,
    Min,
    Max,
}

impl AggKind {
    pub fn parse(name: &str) -> Option<AggKind> {
        Some(match name {
            "count" => AggKind::Count,
            "sum" => AggKind::Sum,
            "total" => AggKind::Total,
            "avg" => AggKind::Avg,
            "min" => AggKind::Min,
            "max" => AggKind::Max,
            _ => return None,
        })
    }

    /// Whether the inputs are summed (and so need `sum()`'s numeric reading of TEXT/BLOB).
    pub fn sums(self) -> bool {
        matches!(self, AggKind::Sum | AggKind::Total | AggKind::Avg)
    }
}

/// A value as a summing aggregate reads it (SQLite's `sqlite3_value_numeric_type`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    Int(i64),
    Real(f64),
}

/// Exact sum of doubles: non-overlapping partials in increasing magnitude (Shewchuk), as in
/// Python's `math.fsum`. Adding `-x` removes `x` exactly.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Partials {
    parts: Vec<f64>,
    /// Infinite inputs are counted apart (they would poison the partials).
    pos_inf: u32,
    neg_inf: u32,
}

impl Partials {
    pub fn add(&mut self, x: f64) {
        self.add_signed(x, 1)
    }

    pub fn remove(&mut self, x: f64) {
        self.add_signed(-x, -1)
    }

    fn add_signed(&mut self, x: f64, sign: i32) {
        if x.is_infinite() {
            // `x` is already negated for a removal: count by the original sign.
            let positive = (x > 0.0) == (sign > 0);
            let c = if positive {
                &mut self.pos_inf
            } else {
                &mut self.neg_inf
            };
            *c = if sign > 0 {
                c.saturating_add(1)
            } else {
                c.saturating_sub(1)
            };
            return;
        }
        let mut x = x;
        let mut i = 0;
        for j in 0..self.parts.len() {
            let mut y = self.parts[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.parts[i] = lo;
                i += 1;
            }
            x = hi;
        }
        self.parts.truncate(i);
        if x != 0.0 {
            self.parts.push(x);
        }
    }

    /// Adds an integer exactly (split into doubles that hold it without rounding).
    pub fn add_int(&mut self, v: i128) {
        for p in split_int(v) {
            self.add(p);
        }
    }

    /// The correctly rounded value of the exact sum (`None`: NaN, i.e. +∞ and −∞ both present).
    pub fn value(&self) -> Option<f64> {
        match (self.pos_inf > 0, self.neg_inf > 0) {
            (true, true) => return None,
            (true, false) => return Some(f64::INFINITY),
            (false, true) => return Some(f64::NEG_INFINITY),
            _ => {}
        }
        // Python's fsum final step: sum from the largest partial down, then correct a
        // half-way rounding using the next partial.
        let p = &self.parts;
        let mut n = p.len();
        if n == 0 {
            return Some(0.0);
        }
        n -= 1;
        let mut hi = p[n];
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            let yr = x - hi;
            if y == yr {
                hi = x;
            }
        }
        Some(hi)
    }
}

/// Doubles whose exact sum is `v` (|v| < 2^127).
fn split_int(v: i128) -> Vec<f64> {
    let mut out = Vec::new();
    let mut rest = v;
    while rest != 0 {
        let hi = rest as f64;
        out.push(hi);
        rest -= hi as i128;
    }
    out
}

/// The order SQLite's `min`/`max` use under the BINARY collation: NULL < numbers (integers and
/// reals compared by value) < TEXT (bytewise) < BLOB (bytewise).
pub fn compare(a: &Value, b: &Value) -> Ordering {
    fn class(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Integer(_) | Value::Real(_) => 1,
            Value::Text(_) => 2,
            Value::Blob(_) => 3,
        }
    }
    match (a, b) {
        (Value::Integer(x), Value::Integer(y)) => x.cmp(y),
        (Value::Real(x), Value::Real(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (Value::Integer(i), Value::Real(r)) => int_real(*i, *r),
        (Value::Real(r), Value::Integer(i)) => int_real(*i, *r).reverse(),
        (Value::Text(x), Value::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Blob(x), Value::Blob(y)) => x.cmp(y),
        _ => class(a).cmp(&class(b)),
    }
}

/// Exact comparison of an integer with a real.
fn int_real(i: i64, r: f64) -> Ordering {
    if r.is_nan() {
        return Ordering::Equal;
    }
    if r >= 9_223_372_036_854_775_808.0 {
        return Ordering::Less;
    }
    if r < -9_223_372_036_854_775_808.0 {
        return Ordering::Greater;
    }
    let t = r.trunc();
    match i.cmp(&(t as i64)) {
        Ordering::Equal => {
            if r > t {
                Ordering::Less
            } else if r < t {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        }
        o => o,
    }
}

/// Sum state (`sum`, `total`, `avg`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SumAcc {
    /// Non-NULL inputs.
    pub n: i64,
    /// Real inputs among them.
    pub reals: i64,
    pub ints: i128,
    pub floats: Partials,
}

impl SumAcc {
    pub fn add(&mut self, v: Num) {
        self.n += 1;
        match v {
            Num::Int(i) => self.ints += i as i128,
            Num::Real(f) => {
                self.reals += 1;
                self.floats.add(f)
            }
        }
    }

    pub fn remove(&mut self, v: Num) {
        self.n -= 1;
        match v {
            Num::Int(i) => self.ints -= i as i128,
            Num::Real(f) => {
                self.reals -= 1;
                self.floats.remove(f)
            }
        }
    }

    /// The floating-point sum of every input (exact, rounded once).
    fn real_sum(&self) -> Value {
        let mut p = self.floats.clone();
        p.add_int(self.ints);
        p.value().map_or(Value::Null, Value::Real)
    }

    fn exact_int(&self) -> Option<i64> {
        i64::try_from(self.ints).ok()
    }
}

/// `min`/`max` state: the extreme, how many inputs equal it, and how many inputs there are.
#[derive(Debug, Clone, PartialEq)]
pub struct Extreme {
    pub best: Value,
    pub ties: i64,
    pub n: i64,
    /// The extreme left and others remain: the group must be re-read.
    pub stale: bool,
}

impl Default for Extreme {
    fn default() -> Self {
        Extreme {
            best: Value::Null,
            ties: 0,
            n: 0,
            stale: false,
        }
    }
}

impl Extreme {
    /// `want`: the order that makes a value better (`Less` for min, `Greater` for max).
    pub fn add(&mut self, v: Value, want: Ordering) {
        self.n += 1;
        if self.stale {
            return;
        }
        if self.n == 1 || compare(&v, &self.best) == want {
            self.best = v;
            self.ties = 1;
        } else if compare(&v, &self.best) == Ordering::Equal {
            self.ties += 1;
        }
    }

    pub fn remove(&mut self, v: &Value, want: Ordering) {
        self.n -= 1;
        if self.n <= 0 {
            *self = Extreme::default();
            return;
        }
        if self.stale {
            return;
        }
        match compare(v, &self.best) {
            Ordering::Equal => {
                self.ties -= 1;
                if self.ties <= 0 {
                    self.stale = true;
                }
            }
            // Better than the extreme: it was never counted; the state cannot be trusted.
            o if o == want => self.stale = true,
            _ => {}
        }
    }
}

/// The state of one aggregate in one group.
#[derive(Debug, Clone, PartialEq)]
pub enum Acc {
    Count(i64),
    Sum(SumAcc),
    Extreme(Extreme),
}

/// An input to one aggregate for one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// NULL (ignored by every aggregate but `count(*)`).
    None,
    /// `count(*)`, or `count(x)` of a non-NULL value.
    Counted,
    Num(Num),
    /// A `min`/`max` input.
    Value(Value),
}

/// Integer overflow of `sum()`: SQLite fails the query with this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overflow;

impl Acc {
    pub fn new(kind: AggKind) -> Acc {
        match kind {
            AggKind::CountStar | AggKind::Count => Acc::Count(0),
            AggKind::Sum | AggKind::Total | AggKind::Avg => Acc::Sum(SumAcc::default()),
            AggKind::Min | AggKind::Max => Acc::Extreme(Extreme::default()),
        }
    }

    fn want(kind: AggKind) -> Ordering {
        if kind == AggKind::Min {
            Ordering::Less
        } else {
            Ordering::Greater
        }
    }

    pub fn add(&mut self, kind: AggKind, input: Input) {
        match (self, input) {
            (_, Input::None) => {}
            (Acc::Count(n), _) => *n += 1,
            (Acc::Sum(s), Input::Num(v)) => s.add(v),
            (Acc::Extreme(e), Input::Value(v)) => e.add(v, Acc::want(kind)),
            _ => debug_assert!(false, "input does not fit the aggregate"),
        }
    }

    pub fn remove(&mut self, kind: AggKind, input: Input) {
        match (self, input) {
            (_, Input::None) => {}
            (Acc::Count(n), _) => *n -= 1,
            (Acc::Sum(s), Input::Num(v)) => s.remove(v),
            (Acc::Extreme(e), Input::Value(v)) => e.remove(&v, Acc::want(kind)),
            _ => debug_assert!(false, "input does not fit the aggregate"),
        }
    }

    /// Needs its group re-read before [`Acc::value`] is right.
    pub fn stale(&self) -> bool {
        matches!(self, Acc::Extreme(e) if e.stale)
    }

    /// The value SQLite returns for the aggregate over the group's rows.
    pub fn value(&self, kind: AggKind) -> Result<Value, Overflow> {
        Ok(match (self, kind) {
            (Acc::Count(n), _) => Value::Integer(*n),
            (Acc::Sum(s), AggKind::Sum) => match (s.n, s.reals) {
                (0, _) => Value::Null,
                (_, 0) => Value::Integer(s.exact_int().ok_or(Overflow)?),
                _ => s.real_sum(),
            },
            (Acc::Sum(s), AggKind::Total) => match (s.reals, s.exact_int()) {
                (0, Some(i)) => Value::Real(i as f64),
                _ => s.real_sum(),
            },
            (Acc::Sum(s), _) => match (s.n, s.reals, s.exact_int()) {
                (0, _, _) => Value::Null,
                (n, 0, Some(i)) => Value::Real(i as f64 / n as f64),
                (n, _, _) => match s.real_sum() {
                    Value::Real(f) => Value::Real(f / n as f64),
                    other => other,
                },
            },
            (Acc::Extreme(e), _) => e.best.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum_of(kind: AggKind, inputs: &[Num]) -> Result<Value, Overflow> {
        let mut a = Acc::new(kind);
        for v in inputs {
            a.add(kind, Input::Num(*v));
        }
        a.value(kind)
    }

    #[test]
    fn sums_follow_sqlite_types() {
        use Num::*;
        assert_eq!(sum_of(AggKind::Sum, &[]), Ok(Value::Null));
        assert_eq!(sum_of(AggKind::Total, &[]), Ok(Value::Real(0.0)));
        assert_eq!(sum_of(AggKind::Avg, &[]), Ok(Value::Null));
        assert_eq!(
            sum_of(AggKind::Sum, &[Int(2), Int(3)]),
            Ok(Value::Integer(5))
        );
        assert_eq!(
            sum_of(AggKind::Total, &[Int(2), Int(3)]),
            Ok(Value::Real(5.0))
        );
        assert_eq!(
            sum_of(AggKind::Avg, &[Int(2), Int(3)]),
            Ok(Value::Real(2.5))
        );
        assert_eq!(
            sum_of(AggKind::Sum, &[Int(2), Real(0.5)]),
            Ok(Value::Real(2.5))
        );
        assert_eq!(
            sum_of(AggKind::Sum, &[Int(i64::MAX), Int(1)]),
            Err(Overflow),
            "sum() of integers leaving the 64-bit range fails like SQLite's"
        );
        assert_eq!(
            sum_of(AggKind::Total, &[Int(i64::MAX), Int(1)]),
            Ok(Value::Real(i64::MAX as f64 + 1.0))
        );
    }

    #[test]
    fn removing_inputs_gives_back_the_exact_state() {
        use Num::*;
        let mut a = Acc::new(AggKind::Sum);
        let inputs = [Real(0.1), Real(1e16), Int(3), Real(-0.3), Real(1e-3)];
        for v in inputs {
            a.add(AggKind::Sum, Input::Num(v));
        }
        for v in &inputs[1..] {
            a.remove(AggKind::Sum, Input::Num(*v));
        }
        assert_eq!(a.value(AggKind::Sum), Ok(Value::Real(0.1)));
        a.remove(AggKind::Sum, Input::Num(Real(0.1)));
        assert_eq!(a.value(AggKind::Sum), Ok(Value::Null));
        // Back to integers only: the result is an integer again.
        a.add(AggKind::Sum, Input::Num(Int(7)));
        assert_eq!(a.value(AggKind::Sum), Ok(Value::Integer(7)));
    }

    #[test]
    fn partials_round_the_exact_sum_once() {
        let mut p = Partials::default();
        for _ in 0..10 {
            p.add(0.1);
        }
        assert_eq!(p.value(), Some(1.0));
        p.add(f64::INFINITY);
        assert_eq!(p.value(), Some(f64::INFINITY));
        p.add(f64::NEG_INFINITY);
        assert_eq!(p.value(), None);
        p.remove(f64::INFINITY);
        p.remove(f64::NEG_INFINITY);
        assert_eq!(p.value(), Some(1.0));
        let mut q = Partials::default();
        q.add_int(i64::MAX as i128 * 3);
        q.add(-0.5);
        assert_eq!(q.value(), Some((i64::MAX as i128 * 3) as f64));
    }

    #[test]
    fn values_compare_like_sqlite() {
        use Value::*;
        let ordered = [
            Null,
            Integer(i64::MIN),
            Real(-1.5),
            Integer(-1),
            Real(0.5),
            Integer(1),
            Real(1.5),
            Integer(i64::MAX),
            Real(1e19),
            Text("A".into()),
            Text("a".into()),
            Blob(vec![0]),
        ];
        for w in ordered.windows(2) {
            assert_eq!(compare(&w[0], &w[1]), Ordering::Less, "{w:?}");
            assert_eq!(compare(&w[1], &w[0]), Ordering::Greater, "{w:?}");
        }
        assert_eq!(compare(&Integer(1), &Real(1.0)), Ordering::Equal);
        assert_eq!(
            compare(
                &Integer(9_007_199_254_740_993),
                &Real(9_007_199_254_740_992.0)
            ),
            Ordering::Greater,
            "exact beyond 2^53"
        );
    }

    #[test]
    fn an_extreme_goes_stale_only_when_its_last_tie_leaves() {
        let max = AggKind::Max;
        let mut a = Acc::new(max);
        for v in [3, 7, 7, 5] {
            a.add(max, Input::Value(Value::Integer(v)));
        }
        assert_eq!(a.value(max), Ok(Value::Integer(7)));
        a.remove(max, Input::Value(Value::Integer(7)));
        assert!(!a.stale());
        assert_eq!(a.value(max), Ok(Value::Integer(7)));
        a.remove(max, Input::Value(Value::Integer(5)));
        assert!(!a.stale(), "a non-extreme leaving changes nothing");
        a.remove(max, Input::Value(Value::Integer(7)));
        assert!(a.stale(), "the last 7 left while 3 remains: re-read");
        a.remove(max, Input::Value(Value::Integer(3)));
        assert!(!a.stale(), "empty: nothing to re-read");
        assert_eq!(a.value(max), Ok(Value::Null));
        a.add(max, Input::Value(Value::Integer(1)));
        a.add(max, Input::None);
        assert_eq!(a.value(max), Ok(Value::Integer(1)));
        let min = AggKind::Min;
        let mut m = Acc::new(min);
        m.add(min, Input::Value(Value::Text("b".into())));
        m.add(min, Input::Value(Value::Integer(9)));
        assert_eq!(
            m.value(min),
            Ok(Value::Integer(9)),
            "numbers sort before text"
        );
    }
}
