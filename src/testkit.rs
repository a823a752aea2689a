//! Test and bench support, compiled only with the `testkit` feature (never in a release build
//! without it): what the `zeroboot-testkit` binary needs from inside the library. The escape
//! probes' payload is [`Zygote::run_probe`](crate::Zygote::run_probe), gated the same way.

use crate::Template;
use std::fs::File;
use wasmtime_wasi::WasiCtxBuilder;

/// `zeroboot-testkit cold MODULE`, the benchmark's `cold_process` baseline: what
/// `wasmtime run` does, in this fresh process — load the compiled module (from the cache),
/// instantiate, run `_start` with stdout passed through. Returns the exit code.
pub fn cold_main(module: &std::path::Path) -> i32 {
    let template = match Template::from_file(module, &crate::Config::new()) {
        Ok(t) => t,
        Err(_) => return 65,
    };
    let mut warm = match template.instantiate(&crate::InitLimits::default(), None) {
        Ok(w) => w,
        Err(_) => return 65,
    };
    let out = std::io::stdout();
    let ctx = WasiCtxBuilder::new()
        .stdout(wasmtime_wasi::cli::OutputFile::new(
            match std::os::fd::AsFd::as_fd(&out).try_clone_to_owned() {
                Ok(fd) => File::from(fd),
                Err(_) => return 70,
            },
        ))
        .build_p1();
    warm.store.data_mut().wasi = ctx;
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_time().build() else {
        return 70;
    };
    let crate::template::Entry::Module { start: Some(start), .. } = &warm.entry else {
        return 65;
    };
    let start = start.clone();
    match rt.block_on(start.call_async(&mut warm.store, ())) {
        Ok(()) => 0,
        Err(e) => e.downcast_ref::<wasmtime_wasi::I32Exit>().map_or(134, |x| x.0),
    }
}
