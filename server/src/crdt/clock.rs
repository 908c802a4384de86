//! The per-row clock stored next to every replicated row, and its compact byte encoding.
//!
//! A row's clock holds its causal length `cl` (odd = alive, even = deleted; every delete and
//! re-insert increments it) and, for the current life only, one [`CellClock`] per column that
//! has been written: the column's `col_version` and the [`Stamp`] of the transaction that wrote
//! it. A stamp names the ORIGIN of the write (site, version, seq), so any node can later serve
//! "the changes of actor A, versions x..y". Deletes (and inserts into key-only tables) also
//! carry a row-level stamp because they have no cell to carry it.

/// The origin of a write: `site` is a node-local ordinal for the origin actor id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stamp {
    pub site: u32,
    pub db_version: u64,
    pub seq: u64,
}

/// The clock of one column of one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CellClock {
    /// Column ordinal in the local table (stable: columns are only ever appended).
    pub col: u32,
    pub col_version: i64,
    pub stamp: Stamp,
}

/// The clock of one row.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RowClock {
    pub cl: i64,
    /// Stamp of the row-level event (delete, key-only insert, sentinel resurrect) if it is one
    /// that must be replicated as a sentinel change.
    pub row_stamp: Option<Stamp>,
    /// Sorted by `col`, at most one entry per column.
    pub cells: Vec<CellClock>,
}

impl RowClock {
    pub fn cell(&self, col: u32) -> Option<&CellClock> {
        self.cells
            .binary_search_by_key(&col, |c| c.col)
            .ok()
            .map(|i| &self.cells[i])
    }

    /// Inserts or replaces the clock of one column, keeping `cells` sorted.
    pub fn set_cell(&mut self, cell: CellClock) {
        match self.cells.binary_search_by_key(&cell.col, |c| c.col) {
            Ok(i) => self.cells[i] = cell,
            Err(i) => self.cells.insert(i, cell),
        }
    }

    /// Every (site, db_version) that still owns at least one replicated change of this row.
    pub fn versions(&self) -> Vec<(u32, u64)> {
        let mut v: Vec<(u32, u64)> = self
            .cells
            .iter()
            .map(|c| (c.stamp.site, c.stamp.db_version))
            .chain(self.row_stamp.map(|s| (s.site, s.db_version)))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The (site, db_version) every stamp of this clock shares, if they all share one.
    fn shared_origin(&self) -> Option<(u32, u64)> {
        let mut stamps = self
            .row_stamp
            .iter()
            .chain(self.cells.iter().map(|c| &c.stamp));
        let first = stamps.next()?;
        stamps
            .all(|s| s.site == first.site && s.db_version == first.db_version)
            .then_some((first.site, first.db_version))
    }

    /// Encodes the clock. Format 2, used when every stamp comes from one transaction (the
    /// common case: an insert, or an update by one writer), stores the origin once and each
    /// seq as a delta; format 1 stores every stamp in full.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.cells.len() * 4);
        self.encode_into(&mut out);
        out
    }

    /// A clock as a fresh insert leaves it: no row stamp, and cells of consecutive columns,
    /// all at `col_version` 1, stamped by one transaction with consecutive seqs. Returns the
    /// first cell.
    fn fresh_run(&self) -> Option<&CellClock> {
        let first = self.cells.first()?;
        let consecutive = self.cells.iter().enumerate().all(|(i, c)| {
            c.col_version == 1
                && c.stamp.site == first.stamp.site
                && c.stamp.db_version == first.stamp.db_version
                && Some(c.col) == u32::try_from(i).ok().and_then(|i| first.col.checked_add(i))
                && Some(c.stamp.seq) == first.stamp.seq.checked_add(i as u64)
        });
        (self.row_stamp.is_none() && consecutive).then_some(first)
    }

    /// Appends the encoding of [`RowClock::encode`] to `out`. Format 3 is a fresh run (see
    /// `fresh_run`): origin, first column, count and first seq, whatever the column count.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        if let Some(first) = self.fresh_run() {
            out.push(3);
            put_varint(out, self.cl as u64);
            put_varint(out, first.stamp.site as u64);
            put_varint(out, first.stamp.db_version);
            put_varint(out, first.col as u64);
            put_varint(out, self.cells.len() as u64);
            put_varint(out, first.stamp.seq);
            return;
        }
        if let Some((site, db_version)) = self.shared_origin() {
            out.push(2);
            put_varint(out, self.cl as u64);
            put_varint(out, site as u64);
            put_varint(out, db_version);
            let mut prev = 0u64;
            match self.row_stamp {
                None => out.push(0),
                Some(s) => {
                    out.push(1);
                    put_varint(out, s.seq);
                    prev = s.seq;
                }
            }
            put_varint(out, self.cells.len() as u64);
            for c in &self.cells {
                put_varint(out, c.col as u64);
                put_varint(out, c.col_version as u64);
                put_varint(out, zigzag(c.stamp.seq.wrapping_sub(prev) as i64));
                prev = c.stamp.seq;
            }
            return;
        }
        out.push(1);
        put_varint(out, self.cl as u64);
        match self.row_stamp {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                put_stamp(out, s);
            }
        }
        put_varint(out, self.cells.len() as u64);
        for c in &self.cells {
            put_varint(out, c.col as u64);
            put_varint(out, c.col_version as u64);
            put_stamp(out, c.stamp);
        }
    }

    pub fn decode(mut buf: &[u8]) -> Option<RowClock> {
        let b = &mut buf;
        let format = get_u8(b)?;
        if !(1..=3).contains(&format) {
            return None;
        }
        let cl = i64::try_from(get_varint(b)?).ok()?;
        if format == 3 {
            return decode_fresh_run(cl, b);
        }
        let origin = if format == 2 {
            Some((u32::try_from(get_varint(b)?).ok()?, get_varint(b)?))
        } else {
            None
        };
        let mut prev = 0u64;
        let mut stamp = |b: &mut &[u8], delta: bool| -> Option<Stamp> {
            match origin {
                None => get_stamp(b),
                Some((site, db_version)) => {
                    let v = get_varint(b)?;
                    let seq = if delta {
                        prev.wrapping_add(unzigzag(v) as u64)
                    } else {
                        v
                    };
                    prev = seq;
                    Some(Stamp {
                        site,
                        db_version,
                        seq,
                    })
                }
            }
        };
        let row_stamp = match get_u8(b)? {
            0 => None,
            1 => Some(stamp(b, false)?),
            _ => return None,
        };
        let n = get_varint(b)?;
        if n > b.len() as u64 {
            return None;
        }
        let mut cells = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let col = u32::try_from(get_varint(b)?).ok()?;
            let col_version = i64::try_from(get_varint(b)?).ok()?;
            cells.push(CellClock {
                col,
                col_version,
                stamp: stamp(b, true)?,
            });
        }
        b.is_empty().then_some(RowClock {
            cl,
            row_stamp,
            cells,
        })
    }
}

/// Most columns a table can have (SQLite's hard limit): bounds what a decoder allocates.
const MAX_COLUMNS: u64 = 32_767;

/// The rest of a format-3 clock (after `cl`).
fn decode_fresh_run(cl: i64, b: &mut &[u8]) -> Option<RowClock> {
    let site = u32::try_from(get_varint(b)?).ok()?;
    let db_version = get_varint(b)?;
    let col = u32::try_from(get_varint(b)?).ok()?;
    let n = get_varint(b)?;
    let seq = get_varint(b)?;
    if !b.is_empty() || n == 0 || n > MAX_COLUMNS {
        return None;
    }
    // Every column and seq of the run must be representable (as `fresh_run` requires).
    col.checked_add(u32::try_from(n - 1).ok()?)?;
    seq.checked_add(n - 1)?;
    let cells = (0..n)
        .map(|i| CellClock {
            col: col + i as u32,
            col_version: 1,
            stamp: Stamp {
                site,
                db_version,
                seq: seq + i,
            },
        })
        .collect();
    Some(RowClock {
        cl,
        row_stamp: None,
        cells,
    })
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_stamp(out: &mut Vec<u8>, s: Stamp) {
    put_varint(out, s.site as u64);
    put_varint(out, s.db_version);
    put_varint(out, s.seq);
}

fn get_stamp(b: &mut &[u8]) -> Option<Stamp> {
    Some(Stamp {
        site: u32::try_from(get_varint(b)?).ok()?,
        db_version: get_varint(b)?,
        seq: get_varint(b)?,
    })
}

/// LEB128 unsigned varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn get_varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = get_u8(b)?;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn get_u8(b: &mut &[u8]) -> Option<u8> {
    let (first, rest) = b.split_first()?;
    *b = rest;
    Some(*first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stamp() -> impl Strategy<Value = Stamp> {
        (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(site, db_version, seq)| Stamp {
            site,
            db_version,
            seq,
        })
    }

    proptest! {
        #[test]
        fn encoding_round_trips(cl in 0i64..i64::MAX, row in proptest::option::of(stamp()),
                                cells in proptest::collection::btree_map(any::<u32>(), (0i64..i64::MAX, stamp()), 0..8)) {
            let clock = RowClock {
                cl,
                row_stamp: row,
                cells: cells.into_iter().map(|(col, (col_version, stamp))| CellClock { col, col_version, stamp }).collect(),
            };
            prop_assert_eq!(RowClock::decode(&clock.encode()), Some(clock));
        }

        #[test]
        fn one_origin_clocks_round_trip_compactly(cl in 0i64..i64::MAX, site in any::<u32>(), db_version in any::<u64>(),
                                                  row in proptest::option::of(any::<u64>()),
                                                  cells in proptest::collection::btree_map(any::<u32>(), (0i64..i64::MAX, any::<u64>()), 0..8)) {
            let stamp = |seq| Stamp { site, db_version, seq };
            let clock = RowClock {
                cl,
                row_stamp: row.map(stamp),
                cells: cells.into_iter().map(|(col, (col_version, seq))| CellClock { col, col_version, stamp: stamp(seq) }).collect(),
            };
            let bytes = clock.encode();
            let stamped = clock.row_stamp.is_some() || !clock.cells.is_empty();
            let format = if clock.fresh_run().is_some() { 3 } else if stamped { 2 } else { 1 };
            prop_assert_eq!(bytes[0], format);
            prop_assert_eq!(RowClock::decode(&bytes), Some(clock));
        }

        #[test]
        fn fresh_runs_round_trip_in_format_3(cl in 0i64..i64::MAX, site in any::<u32>(), db_version in any::<u64>(),
                                             col in any::<u32>(), n in 1u32..40, seq in any::<u64>()) {
            let fits = col.checked_add(n - 1).is_some() && seq.checked_add(n as u64 - 1).is_some();
            prop_assume!(fits);
            let clock = RowClock {
                cl,
                row_stamp: None,
                cells: (0..n).map(|i| CellClock {
                    col: col + i,
                    col_version: 1,
                    stamp: Stamp { site, db_version, seq: seq + i as u64 },
                }).collect(),
            };
            let bytes = clock.encode();
            prop_assert_eq!(bytes[0], 3);
            prop_assert!(bytes.len() <= 1 + 5 * 10);
            prop_assert_eq!(RowClock::decode(&bytes), Some(clock));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = RowClock::decode(&bytes);
        }
    }

    #[test]
    fn an_inserted_row_clock_is_small() {
        let stamp = |seq| Stamp {
            site: 0,
            db_version: 70_000,
            seq,
        };
        let clock = RowClock {
            cl: 1,
            row_stamp: None,
            cells: (1..4)
                .map(|col| CellClock {
                    col,
                    col_version: 1,
                    stamp: stamp(200 + col as u64),
                })
                .collect(),
        };
        let bytes = clock.encode();
        assert_eq!(bytes[0], 3);
        assert!(bytes.len() <= 10, "{} bytes", bytes.len());
        assert_eq!(RowClock::decode(&bytes), Some(clock.clone()));
        // Any gap (a column, a seq, a second write) falls back to the general formats.
        let mut updated = clock.clone();
        updated.cells[1].col_version = 2;
        assert_eq!(updated.encode()[0], 2);
        assert_eq!(RowClock::decode(&updated.encode()), Some(updated));
        let mut gap = clock;
        gap.cells[2].col = 9;
        assert_eq!(gap.encode()[0], 2);
        assert_eq!(RowClock::decode(&gap.encode()), Some(gap));
    }

    #[test]
    fn hostile_fresh_runs_are_rejected() {
        let enc = |fields: &[u64]| {
            let mut b = vec![3];
            for f in fields {
                put_varint(&mut b, *f);
            }
            b
        };
        // cl, site, db_version, first col, count, first seq
        assert!(RowClock::decode(&enc(&[1, 0, 5, 1, 3, 10])).is_some());
        assert!(
            RowClock::decode(&enc(&[1, 0, 5, 1, 0, 10])).is_none(),
            "no cells"
        );
        assert!(
            RowClock::decode(&enc(&[1, 0, 5, 1, u64::MAX, 10])).is_none(),
            "absurd count"
        );
        assert!(RowClock::decode(&enc(&[1, 0, 5, u32::MAX as u64, 2, 10])).is_none());
        assert!(RowClock::decode(&enc(&[1, 0, 5, 1, 2, u64::MAX])).is_none());
        let mut trailing = enc(&[1, 0, 5, 1, 3, 10]);
        trailing.push(0);
        assert!(RowClock::decode(&trailing).is_none());
    }

    #[test]
    fn set_cell_keeps_order_and_versions_dedup() {
        let s = |v| Stamp {
            site: 0,
            db_version: v,
            seq: 0,
        };
        let mut c = RowClock {
            cl: 1,
            row_stamp: None,
            cells: vec![],
        };
        c.set_cell(CellClock {
            col: 3,
            col_version: 1,
            stamp: s(2),
        });
        c.set_cell(CellClock {
            col: 1,
            col_version: 1,
            stamp: s(2),
        });
        c.set_cell(CellClock {
            col: 3,
            col_version: 2,
            stamp: s(5),
        });
        assert_eq!(
            c.cells.iter().map(|c| c.col).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(c.versions(), vec![(0, 2), (0, 5)]);
    }
}
