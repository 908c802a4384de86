//! Splitting a version's changes into [`Chunk`]s of bounded size. Seq ranges are contiguous
//! and together cover `0..=last_seq`, holes included (changes cleared by later writes), so a
//! receiver knows when it has every piece.

use super::codec::change_size;
use crate::store::buffer::Chunk;
use crate::store::feed::VersionChanges;
use std::ops::RangeInclusive;

/// Target encoded size of one chunk, in bytes.
pub const CHUNK_BYTES: usize = 8 * 1024;

/// Splits one version into chunks of about `max_bytes` (a single change larger than that gets
/// a chunk of its own).
pub fn chunk_version(v: VersionChanges, max_bytes: usize) -> Vec<Chunk> {
    let span = 0..=v.last_seq;
    chunk_span(v, span, max_bytes)
}

/// Splits the changes of one version that lie in `span` (a seq range the sender accounts
/// for: every change in it that is absent was cleared) into contiguous chunks covering
/// exactly `span`.
pub fn chunk_span(v: VersionChanges, span: RangeInclusive<u64>, max_bytes: usize) -> Vec<Chunk> {
    let (first, last) = (*span.start(), *span.end());
    let mut out = Vec::new();
    let mut start = first;
    let mut cur = Vec::new();
    let mut size = 0usize;
    let n = v.changes.len();
    for (i, c) in v.changes.into_iter().enumerate() {
        size += change_size(&c);
        let seq = c.seq;
        cur.push(c);
        if size >= max_bytes && i + 1 < n && seq < last {
            out.push(Chunk {
                actor: v.actor,
                version: v.version,
                last_seq: v.last_seq,
                ts: v.ts,
                seqs: start..=seq,
                changes: std::mem::take(&mut cur),
            });
            start = seq + 1;
            size = 0;
        }
    }
    out.push(Chunk {
        actor: v.actor,
        version: v.version,
        last_seq: v.last_seq,
        ts: v.ts,
        seqs: start..=last.max(start),
        changes: cur,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::ActorId;
    use crate::store::feed::Change;
    use rusqlite::types::Value;

    fn version(seqs: &[u64], last_seq: u64) -> VersionChanges {
        let actor = ActorId([1; 16]);
        VersionChanges {
            actor,
            version: 4,
            last_seq,
            ts: 0,
            changes: seqs
                .iter()
                .map(|s| Change {
                    table: "t".into(),
                    pk: vec![0; 10].into(),
                    cid: "v".into(),
                    val: Value::Text("x".repeat(100)),
                    col_version: 1,
                    db_version: 4,
                    seq: *s,
                    site_id: actor,
                    cl: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn chunks_are_contiguous_bounded_and_cover_holes() {
        let seqs: Vec<u64> = (0..500).filter(|s| s % 7 != 3).collect();
        let chunks = chunk_version(version(&seqs, 505), 1024);
        assert!(chunks.len() > 10);
        let mut next = 0;
        let mut total = 0;
        for c in &chunks {
            assert_eq!(*c.seqs.start(), next);
            assert!(c.is_valid(), "{:?}", c.seqs);
            let bytes: usize = c.changes.iter().map(change_size).sum();
            assert!(bytes < 1024 + 200);
            next = c.seqs.end() + 1;
            total += c.changes.len();
        }
        assert_eq!(next, 506, "the last chunk ends at last_seq");
        assert_eq!(total, seqs.len());
        assert!(!chunks[0].is_complete());
    }

    #[test]
    fn a_span_is_covered_exactly() {
        let seqs: Vec<u64> = (100..300).filter(|s| s % 5 != 0).collect();
        let chunks = chunk_span(version(&seqs, 505), 98..=301, 1024);
        assert!(chunks.len() > 3);
        assert_eq!(*chunks[0].seqs.start(), 98);
        assert_eq!(*chunks.last().unwrap().seqs.end(), 301);
        for w in chunks.windows(2) {
            assert_eq!(*w[0].seqs.end() + 1, *w[1].seqs.start());
        }
        assert!(chunks.iter().all(|c| c.is_valid() && !c.is_complete()));
        let total: usize = chunks.iter().map(|c| c.changes.len()).sum();
        assert_eq!(total, seqs.len());
    }

    #[test]
    fn a_cleared_version_is_one_complete_empty_chunk() {
        let chunks = chunk_version(version(&[], 9), 1024);
        assert_eq!(chunks.len(), 1);
        assert!(chunks[0].is_complete() && chunks[0].changes.is_empty());
    }
}
