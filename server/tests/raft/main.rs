//! Integration suite for the Raft-replicated catalog: real servers in one process on
//! 127.0.0.1:0 with temp dirs and the real HTTP RPC (plus one child process for kill -9).

mod blocking;
mod cluster;
mod durability;
mod replica;
mod single;
mod support;
