//! A multi-threaded Tokio application hosting two plugins, each run per call in a sandbox
//! forked from its warm template (one zygote process per plugin, started by the library).
//!
//! `cargo run --release --example plugin_host -- GUEST_A.wasm GUEST_B.wasm [CALLS]`
//!
//! Nothing zygote-specific is needed in `main`: the library re-executes this binary for each
//! zygote, and a constructor turns that process into a zygote before `main` (and so before
//! Tokio's threads) exists.

use std::time::{Duration, Instant};
use zeroboot_wasm::{LoadOptions, Runtime, Status, Task};

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(a), Some(b)) = (args.next(), args.next()) else {
        eprintln!("usage: plugin_host GUEST_A.wasm GUEST_B.wasm [CALLS]");
        std::process::exit(2);
    };
    let calls: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);

    let runtime = Runtime::new();
    let started = Instant::now();
    let plugin_a = runtime.load(std::path::PathBuf::from(&a), LoadOptions::default()).await?;
    let plugin_b = runtime.load(std::path::PathBuf::from(&b), LoadOptions::default()).await?;
    println!("loaded 2 plugins in {:?}", started.elapsed());

    let started = Instant::now();
    let mut calls_in_flight = tokio::task::JoinSet::new();
    for i in 0..calls {
        let plugin = if i % 2 == 0 { plugin_a.clone() } else { plugin_b.clone() };
        calls_in_flight.spawn(async move {
            let task = Task::new()
                .args([format!("call-{i}")])
                .stdin(zeroboot_wasm::Stdin::Bytes(format!("input {i}\n").into_bytes()))
                .timeout(Duration::from_secs(10));
            plugin.run(&task).await
        });
    }
    let (mut ok, mut other, mut errors) = (0usize, 0usize, 0usize);
    let mut totals = Vec::with_capacity(calls);
    while let Some(joined) = calls_in_flight.join_next().await {
        match joined? {
            Ok(o) if o.status == Status::Exited && o.exit_code == Some(0) => {
                ok += 1;
                totals.push(o.timings_us.total);
            }
            Ok(o) => {
                other += 1;
                eprintln!("call ended {:?}: {:?}", o.status, o.message);
            }
            Err(e) => {
                errors += 1;
                eprintln!("call failed: {}", e.one_line());
            }
        }
    }
    let elapsed = started.elapsed();
    totals.sort_unstable();
    let pct = |q: f64| {
        totals
            .get(((totals.len() as f64 * q) as usize).min(totals.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{calls} calls on 2 plugins from {} Tokio worker threads: {ok} ok, {other} other outcomes, {errors} errors",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:.0} calls/s; per call p50 {} us, p99 {} us (call to outcome, including the wait for an admission slot)",
        calls as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99)
    );
    if ok != calls {
        std::process::exit(1);
    }
    Ok(())
}
