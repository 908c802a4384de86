//! Records a node reads from its database that a peer can author: snapshot files carry a
//! peer's row clocks and version row lists. Decoding must never panic, and what decodes
//! must survive a re-encoding unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;
use verdigris::crdt::clock::RowClock;
use verdigris::store::{decode_touched, TouchedRows};

fuzz_target!(|data: &[u8]| {
    if let Some(clock) = RowClock::decode(data) {
        assert_eq!(RowClock::decode(&clock.encode()), Some(clock));
    }
    if let Some(rows) = decode_touched(data) {
        let mut list = TouchedRows::default();
        for (table, pk) in &rows {
            list.push(*table, pk);
        }
        let bytes = list.finish();
        let again = decode_touched(&bytes).expect("a re-encoded list decodes");
        assert_eq!(again, rows);
    }
});
