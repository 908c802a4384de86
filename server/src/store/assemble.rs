//! Assembling versions in memory: when every chunk of a version arrives in the same ingest
//! batch (the usual case for sync, which sends a version's chunks back to back), the chunks
//! are joined into one complete chunk and applied directly, without a round trip through the
//! partial buffer (`__vd_buffer`). Pure: no I/O.

use super::buffer::Chunk;
use std::collections::HashMap;

/// Joins, per (actor, version), chunks that together cover `0..=last_seq` into one complete
/// chunk. Chunks that cannot be completed within `chunks` (or that disagree about the
/// version's `last_seq` or `ts`) are returned unchanged. A joined chunk takes the position of
/// the version's first chunk; everything else keeps its order.
pub fn assemble(chunks: Vec<Chunk>) -> Vec<Chunk> {
    // Versions with more than one partial chunk in this batch.
    let mut parts: HashMap<([u8; 16], u64), Vec<usize>> = HashMap::new();
    for (i, c) in chunks.iter().enumerate() {
        if !c.is_complete() {
            parts.entry((c.actor.0, c.version)).or_default().push(i);
        }
    }
    parts.retain(|_, idx| idx.len() > 1 && covers_version(&chunks, idx));
    if parts.is_empty() {
        return chunks;
    }
    let mut slots: Vec<Option<Chunk>> = chunks.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(slots.len());
    for i in 0..slots.len() {
        let Some(c) = slots[i].take() else { continue };
        let Some(idx) = parts.remove(&(c.actor.0, c.version)) else {
            out.push(c);
            continue;
        };
        let mut pieces = vec![c];
        pieces.extend(idx[1..].iter().filter_map(|j| slots[*j].take()));
        out.push(join(pieces));
    }
    out
}

/// Whether the chunks at `idx` agree on the version's shape and cover all of its seqs.
fn covers_version(chunks: &[Chunk], idx: &[usize]) -> bool {
    let first = &chunks[idx[0]];
    if idx
        .iter()
        .any(|i| chunks[*i].last_seq != first.last_seq || chunks[*i].ts != first.ts)
    {
        return false;
    }
    let mut ranges: Vec<(u64, u64)> = idx
        .iter()
        .map(|i| (*chunks[*i].seqs.start(), *chunks[*i].seqs.end()))
        .collect();
    ranges.sort_unstable();
    let mut next = 0u64; // first seq not covered yet
    for (a, b) in ranges {
        if a > next {
            return false;
        }
        if b >= next {
            match b.checked_add(1) {
                Some(n) => next = n,
                None => return true,
            }
        }
    }
    next > first.last_seq
}

/// Joins chunks covering a whole version: changes in seq order, overlaps counted once.
fn join(mut pieces: Vec<Chunk>) -> Chunk {
    pieces.sort_by_key(|c| *c.seqs.start());
    let total = pieces.iter().map(|c| c.changes.len()).sum();
    let mut changes = Vec::with_capacity(total);
    let mut iter = pieces.into_iter();
    let first = iter.next().expect("at least two pieces");
    let (actor, version, last_seq, ts) = (first.actor, first.version, first.last_seq, first.ts);
    let mut covered_to = *first.seqs.end();
    changes.extend(first.changes);
    for c in iter {
        let end = *c.seqs.end();
        changes.extend(c.changes.into_iter().filter(|ch| ch.seq > covered_to));
        covered_to = covered_to.max(end);
    }
    changes.sort_by_key(|c| c.seq);
    Chunk {
        actor,
        version,
        last_seq,
        ts,
        seqs: 0..=last_seq,
        changes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::ActorId;
    use crate::store::feed::Change;
    use rusqlite::types::Value;

    fn chunk(actor: u8, version: u64, seqs: (u64, u64), last_seq: u64) -> Chunk {
        let a = ActorId([actor; 16]);
        Chunk {
            actor: a,
            version,
            last_seq,
            ts: 7,
            seqs: seqs.0..=seqs.1,
            changes: (seqs.0..=seqs.1)
                .map(|seq| Change {
                    table: "t".into(),
                    pk: vec![seq as u8].into(),
                    cid: "v".into(),
                    val: Value::Integer(seq as i64),
                    col_version: 1,
                    db_version: version,
                    seq,
                    site_id: a,
                    cl: 1,
                })
                .collect(),
        }
    }

    fn seqs(c: &Chunk) -> Vec<u64> {
        c.changes.iter().map(|c| c.seq).collect()
    }

    #[test]
    fn a_version_whose_chunks_all_arrived_is_joined_in_seq_order() {
        let out = assemble(vec![
            chunk(1, 5, (4, 9), 9),
            chunk(2, 1, (0, 3), 3),
            chunk(1, 5, (0, 3), 9),
        ]);
        assert_eq!(out.len(), 2);
        assert!(out[0].is_complete() && out[0].version == 5);
        assert_eq!(seqs(&out[0]), (0..=9).collect::<Vec<_>>());
        assert_eq!(out[1].actor, ActorId([2; 16]));
    }

    #[test]
    fn overlapping_and_duplicate_chunks_count_each_seq_once() {
        let out = assemble(vec![
            chunk(1, 5, (0, 5), 9),
            chunk(1, 5, (3, 9), 9),
            chunk(1, 5, (3, 9), 9),
        ]);
        assert_eq!(out.len(), 1);
        assert_eq!(seqs(&out[0]), (0..=9).collect::<Vec<_>>());
    }

    #[test]
    fn incomplete_or_inconsistent_versions_pass_through_unchanged() {
        let gap = vec![chunk(1, 5, (0, 3), 9), chunk(1, 5, (5, 9), 9)];
        assert_eq!(assemble(gap.clone()), gap);
        let mut other_last = vec![chunk(1, 5, (0, 3), 9), chunk(1, 5, (4, 9), 10)];
        other_last[1].seqs = 4..=9;
        assert_eq!(assemble(other_last.clone()), other_last);
        let single = vec![chunk(1, 5, (0, 3), 9)];
        assert_eq!(assemble(single.clone()), single);
    }

    #[test]
    fn a_version_at_the_top_of_the_seq_space_does_not_overflow() {
        let mut a = chunk(1, 5, (0, 1), u64::MAX);
        let mut b = chunk(1, 5, (2, 3), u64::MAX);
        b.seqs = 2..=u64::MAX;
        a.changes.truncate(1);
        let out = assemble(vec![a, b]);
        assert_eq!(out.len(), 1);
        assert!(out[0].is_complete());
    }
}
