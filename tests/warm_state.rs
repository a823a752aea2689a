//! Warm state (issue: initialise the guest once in the zygote): the initialiser runs once,
//! before the first fork, and every sandbox starts from the memory it left; `--invoke` calls
//! any export with typed arguments; a reactor's `_initialize` runs once; the per-fork reseed
//! hook gets fresh bits in every sandbox; a hostile initialiser fails the load, bounded.

mod common;

use common::{run, run_bounded, run_with_stdin, stderr, stdout, worker};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A module whose initialiser counts its calls and fills a page with a marker, with exports
/// to read that state back, to bump it, and to see the reseed hook's bits.
const WARM: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (global $inits (mut i32) (i32.const 0))
  (global $seed (mut i64) (i64.const 0))
  (global $reseeds (mut i32) (i32.const 0))
  (func (export "wizer.initialize")
    (global.set $inits (i32.add (global.get $inits) (i32.const 1)))
    (i32.store (i32.const 1024) (i32.const 0xC0FFEE)))
  (func (export "zeroboot-reseed") (param i64 i64)
    (global.set $seed (i64.xor (local.get 0) (local.get 1)))
    (global.set $reseeds (i32.add (global.get $reseeds) (i32.const 1))))
  (func (export "inits") (result i32) (global.get $inits))
  (func (export "marker") (result i32) (i32.load (i32.const 1024)))
  (func (export "bump") (result i32)
    (i32.store (i32.const 1024) (i32.add (i32.load (i32.const 1024)) (i32.const 1)))
    (global.set $inits (i32.add (global.get $inits) (i32.const 100)))
    (global.get $inits))
  (func (export "seed") (result i64) (global.get $seed))
  (func (export "reseeds") (result i32) (global.get $reseeds))
  (func (export "mix") (param i32 i64 f32 f64) (result i64 f64)
    (i64.add (i64.extend_i32_s (local.get 0)) (local.get 1))
    (f64.add (f64.promote_f32 (local.get 2)) (local.get 3)))
  (func (export "_start") (call $exit (i32.add (global.get $inits) (i32.const 40))))
)"#;

/// A reactor: `_initialize` sets state, exports read it; no `_start`.
const REACTOR: &str = r#"(module
  (memory (export "memory") 1)
  (global $x (mut i32) (i32.const 0))
  (global $calls (mut i32) (i32.const 0))
  (func (export "_initialize")
    (global.set $x (i32.const 41))
    (global.set $calls (i32.add (global.get $calls) (i32.const 1))))
  (func (export "answer") (result i32) (i32.add (global.get $x) (i32.const 1)))
  (func (export "init_calls") (result i32) (global.get $calls))
)"#;

fn module(name: &str, wat: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, wat).expect("write module");
    (dir, path)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn invoke_lines(name: &str, n: usize) -> Vec<String> {
    (0..n).map(|_| json!({ "invoke": name }).to_string()).collect()
}

#[test]
fn the_initialiser_runs_once_and_every_task_starts_from_its_memory() {
    let (_d, m) = module("warm.wat", WARM);
    // `_start` exits with 40 + the number of times the initialiser ran.
    let o = run(&["run", s(&m)]);
    assert_eq!(o.status.code(), Some(41), "stderr: {}", stderr(&o));

    let mut lines = invoke_lines("bump", 5);
    lines.extend(invoke_lines("marker", 1));
    lines.extend(invoke_lines("inits", 1));
    for pool in ["0", "2"] {
        let out = worker(&m, &["--pool", pool], &lines);
        assert_eq!(out.len(), 7, "{out:?}");
        // Each task bumps the state the initialiser left (inits 1 → 101, marker 0xC0FFEE + 1)
        // and none sees another's bump.
        for v in &out[..5] {
            assert_eq!(v["status"], "exited", "{v}");
            assert_eq!(v["stdout"], "101\n", "pool {pool}: {v}");
        }
        assert_eq!(out[5]["stdout"], format!("{}\n", 0xC0FFEE), "{}", out[5]);
        assert_eq!(out[6]["stdout"], "1\n", "{}", out[6]);
    }
}

#[test]
fn no_init_leaves_start_up_to_each_task() {
    let (_d, m) = module("warm.wat", WARM);
    let o = run(&["run", "--no-init", s(&m)]);
    assert_eq!(o.status.code(), Some(40), "stderr: {}", stderr(&o));
    let o = run(&["run", "--no-init", "--invoke", "marker", s(&m)]);
    assert_eq!(stdout(&o), "0\n", "stderr: {}", stderr(&o));
}

#[test]
fn a_named_initialiser_replaces_the_wizer_one() {
    let (_d, m) = module("warm.wat", WARM);
    // `bump` is not () -> (): refused before anything runs.
    let o = run(&["run", "--init", "bump", s(&m)]);
    assert_eq!(o.status.code(), Some(65));
    assert!(stderr(&o).contains("`bump` with the wrong type"), "{}", stderr(&o));
    let o = run(&["run", "--init", "missing", s(&m)]);
    assert_eq!(o.status.code(), Some(65));
    assert!(stderr(&o).contains("no function `missing`"), "{}", stderr(&o));
    let (_d2, m2) = module(
        "named.wat",
        r#"(module (global $g (mut i32) (i32.const 0))
             (func (export "setup") (global.set $g (i32.const 7)))
             (func (export "get") (result i32) (global.get $g))
             (func (export "wizer.initialize") (global.set $g (i32.const 99))))"#,
    );
    let o = run(&["run", "--init", "setup", "--invoke", "get", s(&m2)]);
    assert_eq!(stdout(&o), "7\n", "stderr: {}", stderr(&o));
    let o = run(&["run", "--invoke", "get", s(&m2)]);
    assert_eq!(stdout(&o), "99\n", "stderr: {}", stderr(&o));
}

#[test]
fn invoke_parses_typed_arguments_and_prints_results_like_wasmtime() {
    let (_d, m) = module("warm.wat", WARM);
    let o = run(&["run", "--invoke", "mix", s(&m), "-3", "0x10", "1.5", "0.25"]);
    assert_eq!(stdout(&o), "13\n1.75\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));

    for (args, needle) in [
        (vec!["1", "2"], "not enough arguments for `mix`"),
        (vec!["x", "1", "1", "1"], "argument 0 of `mix` (\"x\") is not a valid i32"),
        (vec!["1", "1", "1", "one"], "is not a valid f64"),
    ] {
        let mut cmd = vec!["run", "--invoke", "mix", s(&m)];
        cmd.extend(args);
        let o = run(&cmd);
        assert_eq!(o.status.code(), Some(2), "{cmd:?}");
        assert!(stderr(&o).contains(needle), "{cmd:?}: {}", stderr(&o));
    }
    let o = run(&["run", "--invoke", "nope", s(&m)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("exports no function named `nope`"), "{}", stderr(&o));

    // In the worker a bad entry is one bad line: the next request is served.
    let out = worker(
        &m,
        &[],
        &[
            json!({"invoke": "mix", "args": ["1"]}).to_string(),
            json!({"invoke": "mix", "args": ["1", "2", "3", "4"]}).to_string(),
            json!({"invoke": "nope"}).to_string(),
            json!({}).to_string(),
        ],
    );
    assert_eq!(out[0]["status"], "invalid_request", "{}", out[0]);
    assert_eq!(out[1]["stdout"], "3\n7\n", "{}", out[1]);
    assert_eq!(out[2]["status"], "invalid_request", "{}", out[2]);
    assert_eq!(out[3]["exit_code"], 41, "{}", out[3]);
}

#[test]
fn a_reactor_initialises_once_and_runs_with_invoke() {
    let (_d, m) = module("reactor.wat", REACTOR);
    let o = run(&["run", "--invoke", "answer", s(&m)]);
    assert_eq!(stdout(&o), "42\n", "stderr: {}", stderr(&o));
    // Once in the zygote; with --no-init, once in the sandbox (as `wasmtime run` does).
    for flags in [&[][..], &["--no-init"][..]] {
        let mut cmd = vec!["run"];
        cmd.extend_from_slice(flags);
        cmd.extend(["--invoke", "init_calls", s(&m)]);
        let o = run(&cmd);
        assert_eq!(stdout(&o), "1\n", "{flags:?}: {}", stderr(&o));
    }
    let o = run(&["run", s(&m)]);
    assert_eq!(o.status.code(), Some(65));
    assert!(stderr(&o).contains("has no `_start`"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--invoke"), "{}", stderr(&o));
}

#[test]
fn the_reseed_hook_gets_fresh_bits_in_every_fork() {
    let (_d, m) = module("warm.wat", WARM);
    for pool in ["0", "2"] {
        let mut lines = invoke_lines("seed", 50);
        lines.extend(invoke_lines("reseeds", 3));
        let out = worker(&m, &["--pool", pool], &lines);
        let seeds: std::collections::HashSet<String> =
            out[..50].iter().map(|v| v["stdout"].as_str().expect("stdout").to_string()).collect();
        assert_eq!(seeds.len(), 50, "pool {pool}: 50 forks, distinct seeds: {seeds:?}");
        assert!(!seeds.contains("0\n"), "the hook ran in every fork");
        for v in &out[50..] {
            assert_eq!(v["stdout"], "1\n", "called once per sandbox: {v}");
        }
    }
}

/// A sandbox runs the reseed hook while it waits for its task (off the task's path), so a hook
/// that never returns must still end each task promptly with an honest status and message,
/// through the pool and on demand alike, and the worker keeps serving.
#[test]
fn a_spinning_reseed_hook_ends_each_task_with_a_clear_status() {
    let wat = r#"(module
      (func (export "wizer.initialize"))
      (func (export "zeroboot-reseed") (param i64 i64) (loop $l (br $l)))
      (func (export "_start")))"#;
    let (_d, m) = module("spin_reseed.wat", wat);
    for pool in ["0", "2"] {
        let lines = vec![json!({ "timeout_ms": 3000 }).to_string(); 3];
        let started = std::time::Instant::now();
        let out = worker(&m, &["--pool", pool], &lines);
        assert_eq!(out.len(), 3, "pool {pool}: {out:?}");
        for v in &out {
            // A fork-server sandbox, pooled or forked on arrival, runs the hook before it
            // reads its task, bounded by a second of its own.
            assert_eq!(v["status"], "trapped", "pool {pool}: {v}");
            let message = v["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("reseed hook, run before the task arrived, did not return"),
                "pool {pool}: {v}"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(20), "pool {pool}: bounded");
    }
}

#[test]
fn a_spinning_initialiser_fails_the_load_at_the_deadline() {
    let (_d, m) = module(
        "spin.wat",
        r#"(module (func (export "wizer.initialize") (loop $l (br $l))) (func (export "_start")))"#,
    );
    for cmd in ["run", "worker"] {
        // Killed (and the test failed) past 10 s: the load must end at its deadline.
        let (o, _) = run_bounded(&[cmd, "--timeout", "1s", s(&m)], b"", Duration::from_secs(10));
        assert_eq!(o.status.code(), Some(65), "{cmd}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("did not finish instantiating and initialising within 1000 ms"),
            "{cmd}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn a_trapping_initialiser_fails_the_load_with_its_stderr() {
    let (_d, m) = module(
        "trap.wat",
        r#"(module
             (import "wasi_snapshot_preview1" "fd_write"
               (func $w (param i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 1)
             (data (i32.const 16) "config file is corrupt")
             (func (export "wizer.initialize")
               (i32.store (i32.const 0) (i32.const 16))
               (i32.store (i32.const 4) (i32.const 22))
               (drop (call $w (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
               unreachable)
             (func (export "_start")))"#,
    );
    let o = run(&["run", s(&m)]);
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("initialiser `wizer.initialize` failed"), "{e}");
    assert!(e.contains("unreachable"), "{e}");
    assert!(e.contains("config file is corrupt"), "the initialiser's stderr: {e}");
}

#[test]
fn an_initialiser_cannot_grow_past_the_memory_cap() {
    let (_d, m) = module(
        "grow.wat",
        r#"(module (memory 1)
             (func (export "wizer.initialize")
               (if (i32.eq (memory.grow (i32.const 4096)) (i32.const -1)) (then unreachable)))
             (func (export "_start")))"#,
    );
    let o = run(&["run", "--max-memory", "64MiB", s(&m)]);
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    assert!(stderr(&o).contains("past its cap of 67108864 bytes"), "{}", stderr(&o));
}

#[test]
fn a_guest_that_exits_after_a_refused_growth_ends_memory_limit() {
    // What an interpreter does when malloc fails: report "out of memory", exit 1.
    let (_d, m) = module(
        "oom.wat",
        r#"(module
             (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
             (memory (export "memory") 1)
             (func (export "_start")
               (if (i32.eq (memory.grow (i32.const 4096)) (i32.const -1))
                 (then (call $exit (i32.const 1))))))"#,
    );
    let o = run_with_stdin(&["run", "--json", "--max-memory", "16MiB", s(&m)], b"");
    let v: Value = serde_json::from_slice(&o.stdout).expect("json outcome");
    assert_eq!(v["status"], "memory_limit", "{v}");
    assert_eq!(v["exit_code"], 1, "{v}");
    assert!(v["message"].as_str().unwrap_or("").contains("was refused"), "{v}");
}
