//! SWIM packets: foca header and member decoders.
#![no_main]
use foca::Codec;
use libfuzzer_sys::fuzz_target;
use verdigris::cluster::identity::SwimCodec;

fuzz_target!(|data: &[u8]| {
    let mut s = data;
    let _ = SwimCodec.decode_header(&mut s);
    let mut s = data;
    let _ = SwimCodec.decode_member(&mut s);
});
