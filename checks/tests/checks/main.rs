//! Integration tests of the check runner against real loopback services and processes.
//!
//! One test binary; a module per topic. Every server binds 127.0.0.1 port 0, every wait
//! polls with a deadline, and nothing talks to a non-loopback address.

mod support;

mod http;
mod https;
mod scale;
mod script;
mod tcp;
