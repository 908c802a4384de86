//! The field reader every decoder is built on.
#![no_main]
use libfuzzer_sys::fuzz_target;
use verdigris::cluster::wire::Reader;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    while let Ok(Some(_)) = r.next_field() {}
});
