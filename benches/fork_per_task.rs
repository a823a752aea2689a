//! `cargo bench`: the same measurements as `zeroboot-wasm bench` — floor, in-process,
//! cold-process, on-demand fork and pre-forked pool, on the bundled hello guest — printed as a
//! table with ratios. Not a criterion harness on purpose: criterion's analysis starts a thread
//! pool, and the zygote (this process) must stay single-threaded to fork.
//!
//! `ZEROBOOT_BENCH_TASKS` sets the tasks per measurement (default 1000).
//!
//! The `cold_process` row needs the test-support binary: `cargo bench --features testkit`
//! builds it and runs it as the cold runner. Plain `cargo bench` leaves that row out and the
//! table says so.

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and expects a
    // quick run.
    let benching = std::env::args().any(|a| a == "--bench");
    let tasks = std::env::var("ZEROBOOT_BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 1000 } else { 20 });
    let cfg = zeroboot_wasm::bench::BenchConfig {
        tasks,
        concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
        module: None,
        // Cargo names the test-support binary's path even when the feature is off (and a stale
        // copy may sit there): use it only when this build also built it.
        cold_runner: option_env!("CARGO_BIN_EXE_zeroboot-testkit")
            .filter(|_| cfg!(feature = "testkit"))
            .map(Into::into),
        namespaces: zeroboot_wasm::namespaces::available(),
        // The interpreter snippets are measured by `zeroboot-wasm bench`, which finds the
        // interpreter modules next to it.
        snippets: Vec::new(),
        twins: None,
    };
    match zeroboot_wasm::bench::run(&cfg) {
        Ok(report) => print!("{}", zeroboot_wasm::bench::table(&report)),
        Err(e) => {
            eprintln!("bench failed: {}", e.one_line());
            std::process::exit(1);
        }
    }
}
