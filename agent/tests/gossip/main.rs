//! Integration suite of LAN gossip: several gossip instances in one process on 127.0.0.1
//! (each on its own port and thread, as in the agent), driven through `GossipHandle` and
//! observed through `Members` (see `support`).

mod encryption;
mod membership;
mod push_pull;
mod support;
