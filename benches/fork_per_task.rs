//! `cargo bench`: the same measurements as `zeroboot-wasm bench` — floor, in-process,
//! cold-process, on-demand fork and pre-forked pool, on the bundled hello guest — printed as a
//! table with ratios. Not a criterion harness on purpose: criterion's analysis starts a thread
//! pool, and the zygote (this process) must stay single-threaded to fork.
//!
//! `ZEROBOOT_BENCH_TASKS` sets the tasks per measurement (default 1000).

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
        binary: env!("CARGO_BIN_EXE_zeroboot-wasm").into(),
        namespaces: zeroboot_wasm::namespaces::available(),
    };
    match zeroboot_wasm::bench::run(&cfg) {
        Ok(report) => print!("{}", zeroboot_wasm::bench::table(&report)),
        Err(e) => {
            eprintln!("bench failed: {}", e.one_line());
            std::process::exit(1);
        }
    }
}
