//! Hostile modules whose attack is in loading, not in `_start`: a `start` function that loops
//! forever, sleeps, grows memory past the cap (32- and 64-bit memories), a declared initial
//! memory past the cap, and modules that make the compiler slow or hungry. Each must fail to
//! load with exit 65 and a clear one-line error within a few seconds — never hang, never hold
//! the host's memory — and a per-task cap below what the instance already holds must end that
//! task with `memory_limit` before the guest runs.
//!
//! Every run is bounded by a wall-clock kill, so a regression fails here instead of hanging
//! the suite.

mod common;

use common::run_bounded;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// Exit code for bad input, hostile modules included.
const DATA: i32 = 65;

/// How long any load may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(10);

/// A module file in a fresh tempdir.
fn module(name: &str, wat: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join(name);
    std::fs::write(&p, wat).expect("write module");
    (dir, p)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts a load failure: exit 65, nothing on stdout, one `zeroboot-wasm: error:` line on
/// stderr containing every needle.
fn assert_load_error(o: &Output, needles: &[&str]) {
    let err = text(&o.stderr);
    assert!(!err.contains("panicked"), "the runtime panicked:\n{err}");
    assert_eq!(o.status.code(), Some(DATA), "status {:?}, stderr: {err}", o.status);
    assert_eq!(text(&o.stdout), "", "stdout must be empty on a load error");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "the error must be one line, got:\n{err}");
    assert!(lines[0].starts_with("zeroboot-wasm: error: "), "{}", lines[0]);
    for n in needles {
        assert!(lines[0].contains(n), "error lacks {n:?}: {}", lines[0]);
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A `start` function that never returns.
const START_LOOPS: &str = r#"(module
  (func $spin (loop $l (br $l)))
  (start $spin)
  (func (export "_start")))"#;

/// A `start` function that sleeps an hour in a WASI host call (`poll_oneoff`, clock).
const START_SLEEPS: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func $sleep
    ;; one clock subscription at 0: userdata 0, tag 0 (clock), id 1 (monotonic),
    ;; timeout 3600 s in ns, precision 0, flags 0 (relative)
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 3600000000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))))
  (start $sleep)
  (func (export "_start")))"#;

/// A `start` function that grows memory 1 MiB at a time to 3 GiB, touching each new MiB,
/// and traps if a growth is refused.
const START_GROWS: &str = r#"(module
  (memory 1)
  (func $grow (local $i i32) (local $at i32)
    (loop $l
      (local.set $at (memory.grow (i32.const 16)))
      (if (i32.eq (local.get $at) (i32.const -1)) (then unreachable))
      (i32.store (i32.mul (local.get $at) (i32.const 65536)) (i32.const 1))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 3072)))))
  (start $grow)
  (func (export "_start")))"#;

/// memory64: a `start` function that grows linear memory to 18 GiB, and a `_start` that then
/// writes at 17 GiB.
const START_GROWS_64: &str = r#"(module
  (memory i64 1)
  (func $grow
    (if (i64.eq (memory.grow (i64.const 294912)) (i64.const -1)) (then unreachable)))
  (start $grow)
  (func (export "_start")
    (i64.store (i64.const 18253611008) (i64.const 42))))"#;

/// A declared initial memory of 128 MiB (2048 pages).
const BIG_INITIAL: &str = r#"(module (memory 2048) (func (export "_start")))"#;

/// memory64, a declared initial memory of 16 GiB.
const BIG_INITIAL_64: &str = r#"(module (memory i64 262144) (func (export "_start")))"#;

/// A `start` function that grows memory to 128 MiB (within a 256 MiB cap) and touches it; a
/// `_start` that prints nothing and exits 0.
const START_GROWS_128M: &str = r#"(module
  (memory 1)
  (func $grow
    (if (i32.eq (memory.grow (i32.const 2047)) (i32.const -1)) (then unreachable))
    (i32.store (i32.const 134217724) (i32.const 1)))
  (start $grow)
  (func (export "_start")))"#;

#[test]
fn start_function_that_loops_fails_to_load_at_the_timeout() {
    let (_d, m) = module("loop.wat", START_LOOPS);
    let (o, took) = run_bounded(&["run", "--timeout", "1s", s(&m)], b"", HANG);
    assert_load_error(
        &o,
        &["did not finish instantiating and initialising within 1000 ms", "loop.wat"],
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn start_function_that_loops_runs_out_of_fuel() {
    let (_d, m) = module("loop.wat", START_LOOPS);
    let (o, _) = run_bounded(&["run", "--timeout", "5s", "--fuel", "1000000", s(&m)], b"", HANG);
    assert_load_error(&o, &["exhausted its fuel budget of 1000000 while instantiating"]);
    // A budget too big to run out within the deadline: the deadline still holds.
    let (o, took) =
        run_bounded(&["run", "--timeout", "1s", "--fuel", "1000000000000000", s(&m)], b"", HANG);
    assert_load_error(&o, &["did not finish instantiating and initialising within 1000 ms"]);
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn worker_with_a_looping_start_function_exits_with_an_error() {
    let (_d, m) = module("loop.wat", START_LOOPS);
    for pool in ["0", "2"] {
        let (o, took) =
            run_bounded(&["worker", "--pool", pool, "--timeout", "1s", s(&m)], b"{}\n", HANG);
        assert_load_error(&o, &["did not finish instantiating and initialising within 1000 ms"]);
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }
}

#[test]
fn start_function_blocked_in_a_host_call_fails_to_load_at_the_timeout() {
    let (_d, m) = module("sleep.wat", START_SLEEPS);
    let (o, took) = run_bounded(&["run", "--timeout", "1s", s(&m)], b"", HANG);
    assert_load_error(&o, &["did not finish instantiating and initialising within 1000 ms"]);
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn start_function_cannot_grow_memory_past_the_cap() {
    let (_d, m) = module("grow.wat", START_GROWS);
    let (o, took) = run_bounded(&["run", "--max-memory", "64MiB", s(&m)], b"", HANG);
    // One page, then 1 MiB at a time: the first growth refused asks for 64 MiB + one page.
    assert_load_error(
        &o,
        &["needs 67174400 bytes of linear memory while instantiating", "67108864"],
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn memory64_start_function_cannot_grow_to_gigabytes() {
    let (_d, m) = module("grow64.wat", START_GROWS_64);
    let (o, _) = run_bounded(&["run", "--max-memory", "64MiB", s(&m)], b"", HANG);
    assert_load_error(&o, &["needs 19327418368 bytes of linear memory", "67108864"]);
}

#[test]
fn declared_initial_memory_past_the_cap_fails_to_load() {
    let (_d, m) = module("big.wat", BIG_INITIAL);
    let (o, _) = run_bounded(&["run", "--max-memory", "64MiB", s(&m)], b"", HANG);
    assert_load_error(&o, &["needs 134217728 bytes of linear memory", "67108864"]);
    let (_d, m) = module("big64.wat", BIG_INITIAL_64);
    let (o, _) = run_bounded(&["run", "--max-memory", "64MiB", s(&m)], b"", HANG);
    assert_load_error(&o, &["needs 17179869184 bytes of linear memory", "67108864"]);
    // Under a cap that allows it, the same module loads and runs.
    let (_d, m) = module("big.wat", BIG_INITIAL);
    let (o, _) = run_bounded(&["run", "--max-memory", "128MiB", s(&m)], b"", HANG);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
}

#[test]
fn a_task_capped_below_the_instance_ends_memory_limit_before_running() {
    let (_d, m) = module("grown.wat", START_GROWS_128M);
    for pool in ["0", "2"] {
        let lines = "{\"max_memory\": 67108864}\n{}\n";
        let (o, _) = run_bounded(
            &["worker", "--pool", pool, "--max-memory", "256MiB", s(&m)],
            lines.as_bytes(),
            HANG,
        );
        assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
        let out: Vec<serde_json::Value> =
            text(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0]["status"], "memory_limit", "{}", out[0]);
        let msg = out[0]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("already holds 134217728 bytes"), "{msg}");
        assert!(msg.contains("67108864"), "{msg}");
        assert_eq!(out[1]["status"], "exited", "{}", out[1]);
    }
}

/// A module with one function of `n` constant adds: slow and memory-hungry to compile.
fn big_function(n: usize) -> String {
    let mut w = String::with_capacity(n * 40);
    w.push_str("(module (func (export \"_start\") (local $x i32)\n");
    for i in 0..n {
        w.push_str(&format!("(local.set $x (i32.add (local.get $x) (i32.const {})))\n", i % 1000));
    }
    w.push_str("))");
    w
}

#[test]
fn compiling_past_the_compile_timeout_fails_to_load() {
    let (_d, m) = module("slow.wat", &big_function(200_000));
    let (o, took) =
        run_bounded(&["run", "--no-cache", "--compile-timeout", "50ms", s(&m)], b"", HANG);
    assert_load_error(&o, &["compiling module", "took longer than 50 ms"]);
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn compiling_past_the_compile_memory_bound_fails_to_load() {
    let (_d, m) = module("hungry.wat", &big_function(200_000));
    let (o, _) =
        run_bounded(&["run", "--no-cache", "--compile-max-memory", "64MiB", s(&m)], b"", HANG);
    assert_load_error(&o, &["compiling module", "needed more than 67108864 bytes of memory"]);
    // The same module compiles under the default bounds, with and without the cache.
    let (o, _) = run_bounded(&["run", "--no-cache", s(&m)], b"", Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    let (o, _) = run_bounded(&["run", s(&m)], b"", Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
}
