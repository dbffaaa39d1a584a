//! Request bodies of the register endpoints, decoded and validated as the handlers do.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = muster::http::decode_register_bodies(data);
});
