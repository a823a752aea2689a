//! The `zeroboot-wasm` command: a thin layer over the library.
//!
//! `run` (and `js`, `py`) make this very process the zygote of their one task
//! ([`zeroboot_wasm::run_in_this_process`]), so they start no thread before it forks; it
//! verifies the process is single-threaded before every fork. `worker`, `serve`, `mcp` and
//! `bench` drive zygote processes through the fork server.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
