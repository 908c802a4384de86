//! Every datagram and stream frame a peer sends goes through `codec::decode`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use verdigris::cluster::codec;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = codec::decode(data, 0) {
        // Whatever decodes must re-encode and decode to the same message.
        let again = codec::encode(&msg, 0);
        assert_eq!(codec::decode(&again, 0).ok(), Some(msg));
    }
});
