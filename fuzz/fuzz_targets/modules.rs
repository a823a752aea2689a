//! Valid but hostile modules from `wasm-smith`, through load and run: each is compiled (in
//! this process, so the compiler's coverage counts), instantiated by a zygote under init
//! limits, and run once in a forked sandbox under a deadline, fuel, a memory cap and write
//! budgets. Every case must end with an outcome or a load error — never a panic, a hang (a
//! case past 20 s is a finding) or a leak (a descriptor or child process left behind).
//!
//! An input that starts as a module does (`\0asm`, or `(module` text) is taken as it is:
//! the seeds are small hostile modules, and their mutations exercise the loader on
//! malformed ones. The modules may import WASI preview1 functions (called with whatever arguments the
//! generator picks) and export `_start` and their memory, as a WASI command does.
//!
//! Needs libFuzzer's `-rss_limit_mb=0` (its RSS watcher is a thread; a zygote refuses to fork
//! in a multi-threaded process) and `-timeout=0` (the zygote's init deadline uses SIGALRM and
//! `ITIMER_REAL`, which libFuzzer's own timeout would share); `scripts/fuzz.sh` passes both.
#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use zeroboot_wasm::{Config, InitLimits, Isolation, Output, Status, Stdin, Task, Template, Zygote};

/// What a generated module may import: a WASI command's usual calls.
const IMPORTS: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sched_yield" (func (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func (param i32 i32) (result i32)))
)"#;

/// What a generated module must export: a WASI command's `_start` and memory.
const EXPORTS: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start"))
)"#;

fn shapes() -> &'static (Vec<u8>, Vec<u8>) {
    static SHAPES: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    SHAPES.get_or_init(|| {
        (wat::parse_str(IMPORTS).expect("imports"), wat::parse_str(EXPORTS).expect("exports"))
    })
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// This process's children (zombies included), from every thread's list.
fn children() -> String {
    std::fs::read_to_string("/proc/thread-self/children").unwrap_or_default()
}

fn module(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    let (imports, exports) = shapes();
    let mut c: wasm_smith::Config = u.arbitrary()?;
    c.available_imports = Some(imports.clone());
    c.exports = Some(exports.clone());
    // What this runtime's engine does not take (a load error for those is right, but a
    // wasted case).
    c.threads_enabled = false;
    c.shared_everything_threads_enabled = false;
    c.exceptions_enabled = false;
    c.custom_page_sizes_enabled = false;
    c.wide_arithmetic_enabled = false;
    c.max_memory32_bytes = c.max_memory32_bytes.min(1 << 28);
    c.max_memory64_bytes = c.max_memory64_bytes.min(1 << 28);
    c.max_funcs = c.max_funcs.min(50);
    c.max_instructions = c.max_instructions.min(2000);
    Ok(wasm_smith::Module::new(c, u)?.to_bytes())
}

fuzz_target!(|data: &[u8]| {
    // A module as it is (binary or text: the seeds, and mutations of them), else one
    // generated from the bytes.
    let (bytes, stdin) = if data.starts_with(b"\0asm") || data.starts_with(b"(module") {
        (data.to_vec(), Vec::new())
    } else {
        let mut u = Unstructured::new(data);
        let Ok(bytes) = module(&mut u) else { return };
        (bytes, u.arbitrary().unwrap_or_default())
    };
    let (fds_before, children_before) = (fds(), children());
    let began = Instant::now();
    {
        let mut config = Config::new();
        config.cache_dir(None).compile_limits(None).fuel(true);
        let template = match Template::from_bytes("fuzz.wasm", &bytes, &config) {
            Ok(t) => t,
            Err(e) => {
                assert!(e.is_bad_input(), "load failed, not for the module: {e:?}");
                return;
            }
        };
        let limits = Isolation {
            namespaces: false,
            init: InitLimits {
                timeout: Some(Duration::from_secs(1)),
                max_memory: Some(64 << 20),
                fuel: Some(10_000_000),
            },
            ..Isolation::default()
        };
        let mut zygote = match Zygote::with_isolation(template, limits) {
            Ok(z) => z,
            Err(e) => {
                assert!(e.is_bad_input(), "instantiation failed, not for the module: {e:?}");
                return;
            }
        };
        let task = Task::new()
            .args(["a", "b"])
            .env("K", "V")
            .stdin(Stdin::Bytes(stdin))
            .output(Output::Capture { max_bytes: 64 << 10 })
            .timeout(Duration::from_secs(1))
            .max_memory(64 << 20)
            .fuel(10_000_000)
            .max_write(1 << 20)
            .max_files(10);
        match zygote.run(&task) {
            Ok(o) => assert_ne!(
                o.status,
                Status::InternalError,
                "the runtime failed on a module: {:?}",
                o.message
            ),
            // A reactor (no `_start`) loads, and refuses a task that calls nothing.
            Err(e) => assert!(e.is_bad_input(), "a loaded module's task did not run: {e:?}"),
        }
    }
    let took = began.elapsed();
    assert!(took < Duration::from_secs(20), "one case took {took:?}");
    assert_eq!(fds(), fds_before, "a descriptor leaked");
    assert_eq!(children(), children_before, "a child process was left behind");
});
