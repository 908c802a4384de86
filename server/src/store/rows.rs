//! Reading and writing one row's clock and its entries in the version log; shared by the local
//! write path and remote merges.

use super::catalog::TableInfo;
use crate::crdt::clock::{get_varint, put_varint, RowClock};
use crate::crdt::pack;
use anyhow::{anyhow, Result};
use rusqlite::types::Value;
use rusqlite::types::ValueRef;
use rusqlite::{params_from_iter, Connection, OptionalExtension};
use std::borrow::Cow;

pub fn load_clock(conn: &Connection, t: &TableInfo, pk: &[Value]) -> Result<Option<RowClock>> {
    let mut stmt = conn.prepare_cached(&t.sql.clock_get)?;
    let blob: Option<Vec<u8>> = stmt
        .query_row(params_from_iter(pk), |r| r.get(0))
        .optional()?;
    blob.map(|b| {
        RowClock::decode(&b).ok_or_else(|| anyhow!("corrupt clock for a row of {}", t.name))
    })
    .transpose()
}

pub fn put_clock(conn: &Connection, t: &TableInfo, pk: &[Value], clock: &RowClock) -> Result<()> {
    let mut stmt = conn.prepare_cached(&t.sql.clock_put)?;
    let blob = Value::Blob(clock.encode());
    stmt.execute(params_from_iter(pk.iter().chain(std::iter::once(&blob))))?;
    Ok(())
}

/// Loads the current values of a row (all columns, table order).
pub fn load_row(conn: &Connection, t: &TableInfo, pk: &[Value]) -> Result<Option<Vec<Value>>> {
    let mut stmt = conn.prepare_cached(&t.sql.row_get)?;
    let n = t.columns.len();
    Ok(stmt
        .query_row(params_from_iter(pk), |r| {
            (0..n)
                .map(|i| crate::store::exec::value_at(r, i))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .optional()?)
}

/// The rows a version touched, stored with the version; the feed re-checks each row's clock,
/// so entries whose changes were overwritten later are simply skipped (no per-row log
/// maintenance on the write path).
///
/// Format 2 (what is written): a 0 byte, then runs of one table, each `varint table id,
/// varint count` and `count` keys. A key that is a single integer is `varint (zigzag(delta
/// from the run's previous integer key) << 1 | 1)` — one byte for consecutive keys — and any
/// other packed key `varint (length << 1)` and its bytes. Format 1 (still read) is `varint
/// table id, varint key length, key bytes` per row; its first byte is never 0, as table ids
/// start at 1.
#[derive(Debug, Default)]
pub struct TouchedRows {
    out: Vec<u8>,
    /// The run being written.
    run: Option<Run>,
}

#[derive(Debug)]
struct Run {
    table: u32,
    /// Keys so far.
    keys: u64,
    /// The last integer key (the next one is stored as a delta from it).
    last_int: i64,
    /// The keys of the run, encoded (the header is written when the run closes).
    body: Vec<u8>,
}

impl TouchedRows {
    pub fn push(&mut self, table: u32, pk: &[u8]) {
        if self.run.as_ref().is_some_and(|r| r.table != table) {
            self.close_run();
        }
        let run = self.run.get_or_insert_with(|| Run {
            table,
            keys: 0,
            last_int: 0,
            body: Vec::new(),
        });
        run.keys += 1;
        // A delta must leave the tag bit room (any but the most extreme jumps do).
        let delta = single_integer(pk)
            .map(|v| (v, zigzag(v.wrapping_sub(run.last_int))))
            .filter(|(_, z)| z >> 63 == 0);
        match delta {
            Some((v, z)) => {
                put_varint(&mut run.body, (z << 1) | 1);
                run.last_int = v;
            }
            None => {
                put_varint(&mut run.body, (pk.len() as u64) << 1);
                run.body.extend_from_slice(pk);
            }
        }
    }

    fn close_run(&mut self) {
        if let Some(run) = self.run.take() {
            if self.out.is_empty() {
                self.out.push(0);
            }
            put_varint(&mut self.out, run.table as u64);
            put_varint(&mut self.out, run.keys);
            self.out.extend_from_slice(&run.body);
        }
    }

    /// The encoded list.
    pub fn finish(mut self) -> Vec<u8> {
        self.close_run();
        self.out
    }
}

/// The value of a packed key that is one integer in its canonical (shortest) form.
fn single_integer(pk: &[u8]) -> Option<i64> {
    let [1, header, bytes @ ..] = pk else {
        return None;
    };
    let len = (header >> 3) as usize;
    if header & 7 != 1 || len != bytes.len() || len > 8 {
        return None;
    }
    let v = bytes.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64);
    // The shortest big-endian form (negative numbers always take 8 bytes), as `pack` writes.
    let canonical = (8 - (v.leading_zeros() / 8) as usize).min(8);
    (len == canonical).then_some(v as i64)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Decodes a row list (either format); `None` if corrupt.
pub fn decode_touched(b: &[u8]) -> Option<Vec<(u32, Cow<'_, [u8]>)>> {
    match b.split_first() {
        Some((0, rest)) => decode_runs(rest),
        _ => decode_per_row(b),
    }
}

/// Takes `len` bytes off the front of `b` (`None` if it has fewer).
fn take_bytes<'a>(b: &mut &'a [u8], len: u64) -> Option<&'a [u8]> {
    let len = usize::try_from(len).ok().filter(|l| *l <= b.len())?;
    let (head, rest) = b.split_at(len);
    *b = rest;
    Some(head)
}

fn decode_per_row(mut b: &[u8]) -> Option<Vec<(u32, Cow<'_, [u8]>)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let table = u32::try_from(get_varint(&mut b)?).ok()?;
        let len = get_varint(&mut b)?;
        out.push((table, Cow::Borrowed(take_bytes(&mut b, len)?)));
    }
    Some(out)
}

fn decode_runs(mut b: &[u8]) -> Option<Vec<(u32, Cow<'_, [u8]>)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let table = u32::try_from(get_varint(&mut b)?).ok()?;
        let keys = get_varint(&mut b)?;
        // Every key takes at least one byte: a count beyond the rest is corrupt.
        if keys > b.len() as u64 {
            return None;
        }
        let mut last_int = 0i64;
        for _ in 0..keys {
            let tag = get_varint(&mut b)?;
            if tag & 1 == 1 {
                last_int = last_int.wrapping_add(unzigzag(tag >> 1));
                let pk = pack::pack(std::iter::once(ValueRef::Integer(last_int)));
                out.push((table, Cow::Owned(pk)));
            } else {
                out.push((table, Cow::Borrowed(take_bytes(&mut b, tag >> 1)?)));
            }
        }
    }
    Some(out)
}

pub fn record_version(
    conn: &Connection,
    site: u32,
    version: u64,
    last_seq: u64,
    ts: u64,
    rows: TouchedRows,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO __vd_versions (site, db_version, last_seq, ts, rows) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(rusqlite::params![site, version, last_seq, ts as i64, rows.finish()])?;
    Ok(())
}

pub fn next_odd(cl: i64) -> i64 {
    if cl % 2 == 0 {
        cl + 1
    } else {
        cl + 2
    }
}

pub fn next_even(cl: i64) -> i64 {
    if cl % 2 == 1 {
        cl + 1
    } else {
        cl + 2
    }
}

/// The encoded clocks of several rows in one buffer (no allocation per row).
#[derive(Debug, Default)]
pub struct ClockBuf {
    bytes: Vec<u8>,
    /// Where each clock ends in `bytes`.
    ends: Vec<usize>,
}

impl ClockBuf {
    pub fn push(&mut self, clock: &RowClock) {
        clock.encode_into(&mut self.bytes);
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// The encoded clocks, in the order pushed.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(a, b)| &self.bytes[a..*b])
    }
}

/// Rows per multi-row clock insert.
pub const CLOCK_BATCH: usize = 1 << super::catalog::CLOCK_BATCH_LOG2;

/// Inserts the clocks of `rows` (key values, encoded clock) that have none, in as few
/// statements as possible (batches of a power of two rows, so each table needs only a handful
/// of prepared statements); returns, per row, whether it was inserted (false: a clock existed).
pub fn insert_new_clocks(
    conn: &Connection,
    t: &TableInfo,
    rows: &[(&[Value], &[u8])],
) -> Result<Vec<bool>> {
    let mut out = Vec::with_capacity(rows.len());
    for (k, batch) in power_of_two_batches(rows, CLOCK_BATCH) {
        insert_clock_batch(conn, t, k, batch, &mut out)?;
    }
    Ok(out)
}

/// Splits `items` into runs of 2^k items (largest first, at most `max`), so multi-row
/// statements come in a handful of shapes that the statement cache keeps.
pub fn power_of_two_batches<T>(items: &[T], max: usize) -> impl Iterator<Item = (usize, &[T])> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let k = (usize::BITS - 1 - rest.len().min(max).leading_zeros()) as usize;
        let (batch, tail) = rest.split_at(1 << k);
        rest = tail;
        Some((k, batch))
    })
}

fn insert_clock_batch(
    conn: &Connection,
    t: &TableInfo,
    k: usize,
    rows: &[(&[Value], &[u8])],
    out: &mut Vec<bool>,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(&t.sql.clock_insert_many[k])?;
    let mut i = 1;
    for (pk, clock) in rows {
        for v in *pk {
            stmt.raw_bind_parameter(i, v)?;
            i += 1;
        }
        stmt.raw_bind_parameter(i, clock)?;
        i += 1;
    }
    let inserted = stmt.raw_execute()?;
    if inserted == rows.len() {
        out.extend(std::iter::repeat_n(true, rows.len()));
        return Ok(());
    }
    // Some keys already had a clock (re-inserts after deletes): tell them apart by content.
    for (pk, clock) in rows {
        let mut get = conn.prepare_cached(&t.sql.clock_get)?;
        let stored: Option<Vec<u8>> = get
            .query_row(params_from_iter(*pk), |r| r.get(0))
            .optional()?;
        out.push(stored.as_deref() == Some(*clock));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rusqlite::types::Value;

    fn key() -> impl Strategy<Value = Vec<Value>> {
        let v = prop_oneof![
            any::<i64>().prop_map(Value::Integer),
            (0i64..300).prop_map(Value::Integer),
            "[a-z]{0,6}".prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..5).prop_map(Value::Blob),
        ];
        proptest::collection::vec(v, 1..3)
    }

    proptest! {
        #[test]
        fn row_lists_round_trip(rows in proptest::collection::vec((1u32..4, key()), 0..60)) {
            let packed: Vec<(u32, Vec<u8>)> =
                rows.iter().map(|(t, k)| (*t, pack::pack_owned(k))).collect();
            let mut list = TouchedRows::default();
            for (t, pk) in &packed {
                list.push(*t, pk);
            }
            let bytes = list.finish();
            let back: Vec<(u32, Vec<u8>)> = decode_touched(&bytes)
                .unwrap()
                .into_iter()
                .map(|(t, k)| (t, k.into_owned()))
                .collect();
            prop_assert_eq!(back, packed);
        }

        #[test]
        fn decoding_row_lists_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_touched(&bytes);
        }
    }

    #[test]
    fn consecutive_integer_keys_take_a_byte_each() {
        let mut list = TouchedRows::default();
        for i in 1000..1100 {
            list.push(1, &pack::pack_owned(&[Value::Integer(i)]));
        }
        let bytes = list.finish();
        // Marker, table, count (2 bytes), the first key's delta (2 bytes), then one byte each.
        assert_eq!(bytes.len(), 1 + 1 + 1 + 2 + 99, "{bytes:?}");
    }

    #[test]
    fn the_per_row_format_is_still_read() {
        let pk = pack::pack_owned(&[Value::Integer(7)]);
        let mut old = vec![2, pk.len() as u8];
        old.extend_from_slice(&pk);
        let rows = decode_touched(&old).unwrap();
        assert_eq!(rows, vec![(2, Cow::Borrowed(&pk[..]))]);
    }

    #[test]
    fn non_canonical_integer_keys_are_kept_as_written() {
        // 5 in two bytes: not what `pack` writes, so it must not be re-packed shorter.
        let odd = vec![1, (2 << 3) | 1, 0, 5];
        let mut list = TouchedRows::default();
        list.push(1, &odd);
        let bytes = list.finish();
        let back = decode_touched(&bytes).unwrap();
        assert_eq!(back[0].1.as_ref(), &odd[..]);
    }
}
