//! Runs the DNS server on one address with a synthetic catalog identical to the benchmark's
//! data (`/work/shared/bench/lib/dnsgen.py`): `svc-NNNN` services with K instances spread
//! round-robin over `node-NNNN` nodes at 127.64.x.y, ports 20000+s, TTL 0.
//!
//! ```text
//! cargo run --release -p muster-dns --example serve -- --addr 127.0.0.1:8600 \
//!     [--recursor 127.0.0.1:5400]... [--udp-sockets N] [--workers N] \
//!     [--services 100] [--instances 3] [--nodes 100]
//! ```
//! It prints `listening on <addr>` and serves until Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use muster_dns::{
    DnsCatalog, DnsConfig, DnsListeners, DnsNode, DnsServer, DnsServiceInstance, InstanceHealth,
    SharedCatalog, Weights,
};
use tokio_util::sync::CancellationToken;

struct Args {
    addr: SocketAddr,
    recursors: Vec<SocketAddr>,
    udp_sockets: usize,
    workers: usize,
    services: usize,
    instances: usize,
    nodes: usize,
}

fn parse_args() -> Result<Args, String> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut args = Args {
        addr: "127.0.0.1:8600".parse().unwrap(),
        recursors: Vec::new(),
        udp_sockets: cores,
        workers: 1,
        services: 100,
        instances: 3,
        nodes: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--addr" => args.addr = value()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--recursor" => args
                .recursors
                .push(value()?.parse().map_err(|e| format!("--recursor: {e}"))?),
            "--udp-sockets" => args.udp_sockets = num(value()?)?.max(1),
            "--workers" => args.workers = num(value()?)?.max(1),
            "--services" => args.services = num(value()?)?,
            "--instances" => args.instances = num(value()?)?,
            "--nodes" => args.nodes = num(value()?)?.max(1),
            "-h" | "--help" => return Err("see the header of dns/examples/serve.rs".into()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

fn node_ip(i: usize) -> String {
    format!("127.64.{}.{}", i / 250, 1 + i % 250)
}

/// The same services, instances and nodes as `dnsgen.py catalog`.
fn bench_catalog(services: usize, instances: usize, nodes: usize) -> DnsCatalog {
    let node_list = (0..nodes)
        .map(|i| DnsNode {
            name: format!("node-{i:04}"),
            address: node_ip(i),
            ..DnsNode::default()
        })
        .collect();
    let mut list = Vec::with_capacity(services * instances);
    for s in 0..services {
        for j in 0..instances {
            let nd = (s * instances + j) % nodes;
            list.push(DnsServiceInstance {
                service: format!("svc-{s:04}"),
                id: format!("svc-{s:04}-{j}"),
                node: format!("node-{nd:04}"),
                node_address: node_ip(nd),
                address: node_ip(nd),
                port: 20_000 + s as u16,
                tags: Vec::new(),
                weights: Weights::default(),
                health: InstanceHealth::Passing,
            });
        }
    }
    DnsCatalog {
        datacenter: "dc1".into(),
        index: 1,
        last_contact: Some(tokio::time::Instant::now()),
        nodes: node_list,
        services: list,
        servers: vec!["node-0000".into()],
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("serve: {e}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let catalog = Arc::new(SharedCatalog::new(bench_catalog(
            args.services,
            args.instances,
            args.nodes,
        )));
        let mut config = DnsConfig::default();
        config.recursors = args.recursors.clone();
        let server = DnsServer::new(config, catalog.clone()).expect("valid config");
        let listeners = DnsListeners::bind(args.addr, args.udp_sockets).expect("bind");
        println!(
            "listening on {} ({} UDP sockets)",
            listeners.local_addr().expect("addr"),
            args.udp_sockets
        );
        let shutdown = CancellationToken::new();
        // Keep the replica "in contact" as an agent would.
        let heartbeat = {
            let (catalog, shutdown) = (catalog.clone(), shutdown.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                while shutdown.run_until_cancelled(tick.tick()).await.is_some() {
                    catalog.record_contact(tokio::time::Instant::now());
                }
            })
        };
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        });
        server.run(listeners, shutdown).await.expect("serve");
        let _ = heartbeat.await;
        let s = server.stats();
        println!(
            "served udp={} tcp={} fast={} general={} cache_hits={} cache_misses={}",
            s.udp_queries, s.tcp_queries, s.fast_path, s.general_path, s.cache_hits, s.cache_misses
        );
    });
}
