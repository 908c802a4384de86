//! Splitting a version's changes into [`Chunk`]s of bounded size. Seq ranges are contiguous
//! and together cover `0..=last_seq`, holes included (changes cleared by later writes), so a
//! receiver knows when it has every piece.

use super::codec::change_size;
use crate::store::buffer::Chunk;
use crate::store::feed::VersionChanges;

/// Target encoded size of one chunk, in bytes.
pub const CHUNK_BYTES: usize = 8 * 1024;

/// Splits one version into chunks of about `max_bytes` (a single change larger than that gets
/// a chunk of its own).
pub fn chunk_version(v: VersionChanges, max_bytes: usize) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut start = 0u64;
    let mut cur = Vec::new();
    let mut size = 0usize;
    let n = v.changes.len();
    for (i, c) in v.changes.into_iter().enumerate() {
        size += change_size(&c);
        let seq = c.seq;
        cur.push(c);
        if size >= max_bytes && i + 1 < n && seq < v.last_seq {
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
        seqs: start..=v.last_seq.max(start),
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
                    pk: vec![0; 10],
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
    fn a_cleared_version_is_one_complete_empty_chunk() {
        let chunks = chunk_version(version(&[], 9), 1024);
        assert_eq!(chunks.len(), 1);
        assert!(chunks[0].is_complete() && chunks[0].changes.is_empty());
    }
}
