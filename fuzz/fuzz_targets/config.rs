//! One config file through the whole loading path (parse, normalize, merge, build the
//! runtime configuration); the first byte picks HCL or JSON, the rest is the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&format, rest)) = data.split_first() else {
        return;
    };
    // The real loader refuses non-UTF-8 files before parsing.
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let _ = muster::config::load_text(text, format & 1 == 1);
});
