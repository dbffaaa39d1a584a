//! Runs the fake upstream DNS server (`muster_dns::testing`) answering every name under one
//! zone with A records, for demos of the forwarder.
//!
//! ```text
//! cargo run -p muster-dns --example upstream -- --addr 127.0.0.1:5400 \
//!     --zone example.test [--ip 192.0.2.1] [--ttl 300]
//! ```

use std::net::{Ipv4Addr, SocketAddr};

use muster_dns::testing::{FakeAnswer, FakeUpstream};

fn main() {
    let mut addr: SocketAddr = "127.0.0.1:5400".parse().unwrap();
    let mut zone = "example.test".to_owned();
    let mut ip: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    let mut ttl = 300u32;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| {
            eprintln!("upstream: {flag} needs a value");
            std::process::exit(2);
        });
        let bad = |e: &dyn std::fmt::Display| -> ! {
            eprintln!("upstream: {flag} {value}: {e}");
            std::process::exit(2)
        };
        match flag.as_str() {
            "--addr" => addr = value.parse().unwrap_or_else(|e| bad(&e)),
            "--zone" => zone = value.clone(),
            "--ip" => ip = value.parse().unwrap_or_else(|e| bad(&e)),
            "--ttl" => ttl = value.parse().unwrap_or_else(|e| bad(&e)),
            _ => bad(&"unknown flag"),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let upstream = FakeUpstream::bind(addr).await.expect("bind");
        upstream.set_zone(&zone, FakeAnswer::a(ip, ttl));
        upstream.set_default(FakeAnswer::Refused);
        println!(
            "fake upstream on {} answering *.{zone} A {ip} (TTL {ttl}); other names REFUSED",
            upstream.addr()
        );
        let _ = tokio::signal::ctrl_c().await;
        println!("answered {} queries", upstream.all_queries());
        upstream.stop();
    });
}
