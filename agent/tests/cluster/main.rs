//! Raft cluster formation and server membership, in-process: several catalog servers on
//! 127.0.0.1:0, each with its cluster task ([`muster::runtime::cluster::run`]) and HTTP API,
//! and one member list the test feeds as converged gossip would.

mod formation;
mod membership;
mod operator;
mod restart;
mod support;
