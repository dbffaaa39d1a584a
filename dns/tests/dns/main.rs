//! Integration suite: a real `DnsServer` on 127.0.0.1:0, queried over UDP and TCP with
//! hickory-proto messages, forwarding to the crate's fake upstream.

mod forward;
mod fuzz_replay;
mod paths;
mod support;
mod tcp;
mod zone;
