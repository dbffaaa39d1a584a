//! The Consul query-name parser (`<tag>.<svc>.service.<dc>.consul`, RFC 2782 `_svc._tcp`,
//! `<node>.node`, `<hex>.addr`, `alt_domain`...) on arbitrary wire-format names; the first
//! two bytes choose the query type.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let qtype = u16::from_be_bytes([data[0], data[1]]);
    let _ = muster_dns::testing::parse_query_name(&data[2..], qtype);
});
