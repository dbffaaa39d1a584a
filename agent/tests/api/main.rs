//! Integration suite of the `/v1` HTTP API and the local agent state, in-process: a real
//! catalog server bootstrapped alone in a temp dir, a real `LocalState` and the API served on
//! 127.0.0.1:0, queried with reqwest (see `support`).

mod acl;
mod agent;
mod blocking;
mod catalog;
mod health;
mod limits;
mod persistence;
mod support;
mod sync;
