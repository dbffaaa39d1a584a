//! The `muster` binary: everything lives in the library (`muster::cli` parses the command
//! line and runs the subcommand; `muster::runtime` is the agent), so that tests can start an
//! agent in-process. This file only turns the result into the process exit code.

fn main() {
    let code = muster::cli::main(std::env::args_os());
    std::process::exit(code);
}
