//! The `zeroboot-wasm` command: a thin layer over the library.
//!
//! The process never starts a thread: `run` and `worker` make this very process the zygote,
//! and [`zeroboot_wasm::Zygote::run`] verifies it is single-threaded before every fork.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
