use super::*;
use proptest::prelude::*;

fn sample_chunk() -> Chunk {
    let actor = ActorId([7; 16]);
    let vals = [
        Value::Null,
        Value::Integer(-42),
        Value::Real(2.5),
        Value::Text("123".into()),
        Value::Blob(vec![0, 1, 2]),
    ];
    Chunk {
        actor,
        version: 9,
        last_seq: 10,
        ts: 1 << 40,
        seqs: 0..=6,
        changes: vals
            .iter()
            .enumerate()
            .map(|(i, v)| Change {
                table: if i % 2 == 0 { "a".into() } else { "b".into() },
                pk: vec![1, 9, i as u8].into(),
                cid: format!("c{i}").into(),
                val: v.clone(),
                col_version: i as i64 + 1,
                db_version: 9,
                seq: i as u64,
                site_id: actor,
                cl: 1,
            })
            .collect(),
    }
}

fn samples() -> Vec<Msg> {
    let a = ActorId([3; 16]);
    vec![
        Msg::Swim(vec![1, 2, 3]),
        Msg::Change {
            chunk: sample_chunk(),
            ttl: 3,
        },
        Msg::SyncStart { actor: a },
        Msg::SyncState(SyncState {
            actor: a,
            actors: vec![ActorState {
                actor: a,
                head: 100,
                needed: vec![(3, 4), (9, 9)],
                partials: vec![(50, 20, vec![(0, 3), (7, 9)])],
            }],
            db_bytes: 123 << 20,
        }),
        Msg::SyncRequest(vec![
            Need::Full {
                actor: a,
                versions: (1, 5),
            },
            Need::Partial {
                actor: a,
                version: 8,
                seqs: vec![(2, 3)],
            },
        ]),
        Msg::SyncChunk(sample_chunk()),
        Msg::SyncDone,
        Msg::Reject("busy".into()),
        Msg::SnapshotRequest,
        Msg::SnapshotBegin { bytes: 1 << 33 },
        Msg::SnapshotData(vec![0, 255, 7]),
        Msg::Head {
            actor: a,
            addr: "10.0.0.7:8787".parse().unwrap(),
            version: 1 << 40,
        },
    ]
}

#[test]
fn every_message_round_trips_with_type_fidelity() {
    for m in samples() {
        let bytes = encode(&m, 5);
        assert_eq!(decode(&bytes, 5).unwrap(), m);
    }
}

#[test]
fn other_clusters_and_versions_are_rejected() {
    let bytes = encode(&Msg::SyncDone, 5);
    assert_eq!(
        decode(&bytes, 6),
        Err(DecodeError::WrongCluster { ours: 6, theirs: 5 })
    );
    let mut v2 = bytes.clone();
    v2[0] = 2;
    assert_eq!(decode(&v2, 5), Err(DecodeError::Version(2)));
    assert!(decode(&[], 5).is_err());
}

#[test]
fn unknown_fields_and_kinds_are_tolerated() {
    // A future sender adds field 99 to the envelope and a new message kind 50.
    let mut w = Writer::new();
    w.buf.push(FORMAT_VERSION);
    w.u64(1, 0).u64(99, 1).bytes(50, b"future");
    assert_eq!(decode(&w.finish(), 0), Ok(Msg::Unknown(99)));
    // A known message with an extra envelope field decodes as the known message.
    let mut w = Writer::new();
    w.buf.push(FORMAT_VERSION);
    w.u64(1, 0).u64(99, 1).bytes(8, &[]);
    assert_eq!(decode(&w.finish(), 0), Ok(Msg::SyncDone));
}

#[test]
fn every_truncation_fails_cleanly() {
    for m in samples() {
        let bytes = encode(&m, 0);
        for cut in 0..bytes.len() {
            // Must not panic; most prefixes are errors (some are valid shorter messages).
            let _ = decode(&bytes[..cut], 0);
        }
    }
}

#[test]
fn chunks_with_changes_outside_their_seq_range_are_rejected() {
    let mut c = sample_chunk();
    c.seqs = 0..=2;
    let bytes = encode(&Msg::SyncChunk(c), 0);
    assert_eq!(decode(&bytes, 0), Err(DecodeError::Invalid("chunk")));
}

/// Found by the `decode_envelope` fuzz target: NaN broke the re-encode round trip and would
/// break the merge's total order on values.
#[test]
fn nan_values_are_rejected() {
    let mut c = sample_chunk();
    c.changes[2].val = Value::Real(f64::NAN);
    let bytes = encode(&Msg::SyncChunk(c), 0);
    assert_eq!(decode(&bytes, 0), Err(DecodeError::Invalid("real (NaN)")));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes, 0);
        let mut with_version = vec![FORMAT_VERSION];
        with_version.extend_from_slice(&bytes);
        let _ = decode(&with_version, 0);
    }

    #[test]
    fn mutated_messages_never_panic(idx in 0usize..8, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut bytes = encode(&samples()[idx], 0);
        for (pos, b) in flips {
            let n = bytes.len();
            bytes[pos % n] = b;
        }
        let _ = decode(&bytes, 0);
    }
}
