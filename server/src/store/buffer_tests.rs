use super::*;
use crate::cluster::chunker::chunk_version;
use crate::store::Statement;

const SCHEMA: &str = "CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, v TEXT, n INTEGER);";

fn origin_with_big_version() -> (Store, Vec<Chunk>) {
    let mut a = Store::open_in_memory().unwrap();
    a.apply_schema(SCHEMA).unwrap();
    let stmts: Vec<Statement> = (0..300)
        .map(|i| {
            Statement::with_params(
                "INSERT INTO t (id, v, n) VALUES (?1, ?2, ?1)",
                vec![
                    Value::Integer(i),
                    Value::Text(format!("row {i} {}", "x".repeat(30))),
                ],
            )
        })
        .collect();
    assert_eq!(a.transact(&stmts, None).unwrap().version, Some(1));
    let actor = a.actor_id();
    let vc = a.changes(actor, 1..=1).unwrap().remove(0);
    let chunks = chunk_version(vc, 512);
    assert!(chunks.len() > 10, "the version travels in pieces");
    (a, chunks)
}

#[test]
fn partial_versions_are_buffered_across_restarts_then_applied_atomically() {
    let (a, chunks) = origin_with_big_version();
    let actor = a.actor_id();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    {
        let mut b = Store::open(&path).unwrap();
        b.apply_schema(SCHEMA).unwrap();
        // Everything but the first chunk, newest first, with duplicates.
        let mut rest: Vec<Chunk> = chunks[1..].iter().rev().cloned().collect();
        rest.extend(chunks[3..6].iter().cloned());
        let r = b.ingest(rest).unwrap();
        assert!(r.apply.applied.is_empty());
        assert_eq!(r.dropped, 3, "duplicates are dropped");
        assert_eq!(
            b.dump_tables().unwrap()[0].1.len(),
            0,
            "nothing visible yet"
        );
        assert_eq!(b.shared().book.read().unwrap().gap_count(), 1);
    }
    let mut b = Store::open(&path).unwrap();
    {
        let book = b.shared().book.read().unwrap().clone();
        let last = &chunks[chunks.len() - 1];
        assert!(
            book.has_seqs(&actor, 1, &last.seqs),
            "partials survive a restart"
        );
        assert!(!book.has_seqs(&actor, 1, &chunks[0].seqs));
    }
    let r = b.ingest(vec![chunks[0].clone()]).unwrap();
    assert_eq!(r.apply.applied, vec![(actor, 1)]);
    assert_eq!(b.dump_tables().unwrap(), a.dump_tables().unwrap());
    assert_eq!(b.shared().book.read().unwrap().gap_count(), 0);
    let left: i64 = b
        .conn()
        .query_row("SELECT count(*) FROM __vd_buffer", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0, "the buffer is emptied once applied");
}

#[test]
fn cleared_versions_are_known_and_gaps_tracked() {
    let mut a = Store::open_in_memory().unwrap();
    a.apply_schema(SCHEMA).unwrap();
    let ins = |id: i64| {
        vec![Statement::with_params(
            "INSERT INTO t (id, v) VALUES (?1, 'x')",
            vec![Value::Integer(id)],
        )]
    };
    a.transact(&ins(1), None).unwrap();
    a.transact(&ins(2), None).unwrap();
    a.transact(&[Statement::new("DELETE FROM t WHERE id = 2")], None)
        .unwrap();
    let actor = a.actor_id();
    let versions = a.changes(actor, 1..=3).unwrap();
    assert!(
        versions[1].changes.is_empty(),
        "version 2 was cleared by the delete"
    );
    let mut b = Store::open_in_memory().unwrap();
    b.apply_schema(SCHEMA).unwrap();
    // Version 3 first: versions 1 and 2 become a gap.
    let v3 = chunk_version(versions[2].clone(), 8192);
    b.ingest(v3).unwrap();
    {
        let shared = b.shared();
        let book = shared.book.read().unwrap();
        let booked = book.get(&actor).unwrap();
        assert_eq!(booked.needed.iter().collect::<Vec<_>>(), vec![(1, 2)]);
    }
    let rest: Vec<Chunk> = versions[..2]
        .iter()
        .flat_map(|v| chunk_version(v.clone(), 8192))
        .collect();
    let r = b.ingest(rest).unwrap();
    assert_eq!(
        r.apply.applied.len(),
        2,
        "the cleared version is recorded too"
    );
    assert!(b.shared().book.read().unwrap().knows(&actor, 2));
    assert_eq!(b.shared().book.read().unwrap().gap_count(), 0);
    assert_eq!(b.dump_tables().unwrap(), a.dump_tables().unwrap());
}

#[test]
#[allow(clippy::reversed_empty_ranges)] // an inverted seq range is the invalid input under test
fn invalid_and_own_chunks_are_dropped() {
    let (a, chunks) = origin_with_big_version();
    let mut bad = chunks[0].clone();
    bad.seqs = 5..=2;
    let mut own = chunks[0].clone();
    own.actor = ActorId([1; 16]);
    let mut b = Store::open_in_memory().unwrap();
    b.apply_schema(SCHEMA).unwrap();
    let r = b.ingest(vec![bad, own]).unwrap();
    assert_eq!(r.dropped, 2);
    // A chunk of a's version that claims to be ours is dropped by a itself.
    let mut a = a;
    let r = a.ingest(vec![chunks[0].clone()]).unwrap();
    assert_eq!(r.dropped, 1);
}
