//! The `muster` binary: everything lives in the library (`muster::cli` parses the command
//! line and runs the subcommand; `muster::runtime` is the agent), so that tests can start an
//! agent in-process. This file only turns the result into the process exit code.

/// mimalloc rather than glibc's malloc: with a catalog of thousands of instances, glibc's
/// free lists fragment and every allocation on the write path gets slower (a fifth of a
/// leader's CPU went to `_int_malloc` in a profile under sequential writes).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let code = muster::cli::main(std::env::args_os());
    std::process::exit(code);
}
