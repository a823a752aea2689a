//! Bad modules, bad flags, missing files: a clear one-line error and the documented exit code,
//! never a panic.

mod common;

use common::{guest, run, stderr, stdout};
use std::path::{Path, PathBuf};
use std::process::Output;

/// Exit codes documented in `zeroboot-wasm --help`.
const USAGE: i32 = 2;
const DATA: i32 = 65;
const NO_INPUT: i32 = 66;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or_else(|| {
        panic!("zeroboot-wasm died by a signal: {:?}\nstderr: {}", o.status, stderr(o))
    })
}

/// A file in a fresh tempdir holding `bytes`.
fn file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).expect("write module");
    (dir, p)
}

/// Asserts a runtime error: `code`, nothing on stdout, exactly one line on stderr, of the form
/// `zeroboot-wasm: error: ...`, containing every one of `needles`. Returns that line.
fn assert_error(o: &Output, code_wanted: i32, needles: &[&str]) -> String {
    let err = stderr(o);
    assert!(!err.contains("panicked"), "the runtime panicked:\n{err}");
    assert_eq!(code(o), code_wanted, "stderr: {err}");
    assert_eq!(stdout(o), "", "stdout must be empty on an error");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "the error must be one line on stderr, got:\n{err}");
    assert!(err.ends_with('\n'), "the error line must end with a newline");
    let line = lines[0];
    assert!(line.starts_with("zeroboot-wasm: error: "), "unexpected error format: {line}");
    for n in needles {
        assert!(line.contains(n), "error line lacks {n:?}: {line}");
    }
    line.to_string()
}

/// Asserts a command-line error from the argument parser: exit 2, no panic, nothing on stdout,
/// and one `error:` line (clap may add a usage hint after it) mentioning every one of `needles`.
fn assert_usage_error(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!err.contains("panicked"), "the runtime panicked:\n{err}");
    assert_eq!(code(o), USAGE, "stderr: {err}");
    assert_eq!(stdout(o), "", "stdout must be empty on a usage error");
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "expected exactly one `error:` line, got:\n{err}");
    for n in needles {
        assert!(error_lines[0].contains(n), "error line lacks {n:?}: {}", error_lines[0]);
    }
}

/// Deterministic pseudo-random bytes that are neither `\0asm` nor text.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    v[0] = 0xff; // never valid UTF-8, never `\0`
    v
}

#[test]
fn missing_module_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("no-such-module.wasm");
    let o = run(&["run", s(&p)]);
    assert_error(&o, NO_INPUT, &[s(&p)]);
}

#[test]
fn missing_module_file_in_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("no-such-module.wasm");
    let o = common::run_with_stdin(&["worker", s(&p)], b"{}\n");
    assert_error(&o, NO_INPUT, &[s(&p)]);
}

#[test]
fn module_is_a_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(&["run", s(dir.path())]);
    assert_error(&o, NO_INPUT, &[s(dir.path())]);
}

#[test]
fn random_bytes_are_not_wasm() {
    let (_d, p) = file("noise.wasm", &noise(4096));
    let o = run(&["run", s(&p)]);
    assert_error(&o, DATA, &["not a WebAssembly module", s(&p)]);
}

#[test]
fn plain_text_is_not_wasm() {
    let (_d, p) = file("script.wasm", b"#!/bin/sh\necho hi\n");
    let o = run(&["run", s(&p)]);
    assert_error(&o, DATA, &["not a WebAssembly module"]);
}

#[test]
fn empty_file_is_not_wasm() {
    let (_d, p) = file("empty.wasm", b"");
    let o = run(&["run", s(&p)]);
    assert_error(&o, DATA, &[s(&p)]);
}

#[test]
fn invalid_binary_module() {
    let mut bytes = b"\0asm\x01\0\0\0".to_vec();
    bytes.extend_from_slice(&noise(200));
    let (_d, p) = file("invalid.wasm", &bytes);
    let o = run(&["run", s(&p)]);
    assert_error(&o, DATA, &[s(&p)]);
}

#[test]
fn truncated_binary_module() {
    let whole = std::fs::read(guest("hello")).expect("read hello.wasm");
    let (_d, p) = file("truncated.wasm", &whole[..whole.len() / 2]);
    let o = run(&["run", s(&p)]);
    assert_error(&o, DATA, &[s(&p)]);
}

#[test]
fn invalid_text_module() {
    let (_d, p) = file("broken.wat", b"(module (func (export \"_start\") (i32.add)))");
    let o = run(&["run", s(&p)]);
    assert_error(&o, DATA, &[s(&p)]);
}

#[test]
fn component_is_rejected() {
    // The header of a component (version 0x0d, layer 1) followed by nothing.
    let (_d, p) = file("component.wasm", b"\0asm\x0d\0\x01\0");
    let o = run(&["run", s(&p)]);
    assert_error(&o, DATA, &["component"]);
}

#[test]
fn reactor_without_invoke() {
    let (_d, p) = file("nostart.wat", b"(module (func (export \"foo\")))\n");
    let o = run(&["run", s(&p)]);
    assert_error(&o, DATA, &["_start", "--invoke", s(&p)]);
}

#[test]
fn module_without_functions() {
    let (_d, p) = file("nofuncs.wat", b"(module (memory (export \"m\") 1))\n");
    let o = run(&["run", s(&p)]);
    assert_error(&o, DATA, &["exports no functions", s(&p)]);
}

#[test]
fn start_of_the_wrong_type() {
    let (_d, p) = file("badstart.wat", b"(module (func (export \"_start\") (param i32)))\n");
    let o = run(&["run", s(&p)]);
    assert_error(&o, DATA, &["_start"]);
}

#[test]
fn unknown_import() {
    let (_d, p) = file(
        "import.wat",
        b"(module (import \"env\" \"nope\" (func)) (func (export \"_start\")))\n",
    );
    let o = run(&["run", s(&p)]);
    assert_error(&o, DATA, &["env::nope", s(&p)]);
}

#[test]
fn unknown_wasi_function() {
    let (_d, p) = file(
        "import2.wat",
        b"(module (import \"wasi_snapshot_preview1\" \"no_such_call\" (func)) \
          (func (export \"_start\")))\n",
    );
    let o = run(&["run", s(&p)]);
    assert_error(&o, DATA, &["wasi_snapshot_preview1::no_such_call"]);
}

#[test]
fn trapping_start_function() {
    // The module's own `start` function runs while the template is built, and traps.
    let (_d, p) = file(
        "startfn.wat",
        b"(module (func $s unreachable) (start $s) (func (export \"_start\")))\n",
    );
    let o = run(&["run", s(&p)]);
    assert_error(&o, DATA, &[s(&p), "unreachable"]);
}

#[test]
fn valid_text_module_runs() {
    // The other side of the coin: a text module that is a WASI command is accepted.
    let (_d, p) = file("ok.wat", b"(module (func (export \"_start\")))\n");
    let o = run(&["run", s(&p)]);
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "");
}

#[test]
fn unknown_flag() {
    let o = run(&["run", "--frobnicate", s(&guest("hello"))]);
    assert_usage_error(&o, &["--frobnicate"]);
}

#[test]
fn unknown_command() {
    let o = run(&["frobnicate", s(&guest("hello"))]);
    assert_usage_error(&o, &["frobnicate"]);
}

#[test]
fn missing_module_argument() {
    let o = run(&["run"]);
    assert_usage_error(&o, &[]);
}

#[test]
fn bad_timeout() {
    let o = run(&["run", "--timeout", "fast", s(&guest("hello"))]);
    assert_usage_error(&o, &["fast"]);
}

#[test]
fn bad_max_output() {
    let o = run(&["run", "--max-output", "lots", s(&guest("hello"))]);
    assert_usage_error(&o, &["lots"]);
}

#[test]
fn bad_env() {
    let o = run(&["run", "--env", "=x", s(&guest("hello"))]);
    assert_usage_error(&o, &["=x"]);
}

#[test]
fn bad_dir_spec() {
    let o = run(&["run", "--dir", "::/data", s(&guest("hello"))]);
    assert_usage_error(&o, &["::/data"]);
}

#[test]
fn missing_granted_directory() {
    let o = run(&["run", "--dir", "/no/such/dir", s(&guest("hello"))]);
    assert_error(&o, NO_INPUT, &["/no/such/dir"]);
}

#[test]
fn missing_granted_directory_with_guest_path() {
    let o = run(&["run", "--dir-ro", "/no/such/dir::/data", s(&guest("hello"))]);
    assert_error(&o, NO_INPUT, &["/no/such/dir"]);
}

#[test]
fn granted_directory_is_a_file() {
    let (_d, p) = file("plain.txt", b"not a directory");
    let o = run(&["run", "--dir", s(&p), s(&guest("hello"))]);
    assert_error(&o, NO_INPUT, &[s(&p)]);
}

#[test]
fn bad_module_in_worker() {
    let (_d, p) = file("noise.wasm", &noise(512));
    let o = common::run_with_stdin(&["worker", s(&p)], b"{}\n");
    assert_error(&o, DATA, &["not a WebAssembly module"]);
}

/// Issue 12, defect 6: a deadline too long to represent is refused, not wrapped or clamped.
#[test]
fn absurd_timeout() {
    for t in ["999999999", "366d", "99999999999999999999999"] {
        let o = run(&["run", "--timeout", t, s(&guest("hello"))]);
        assert_usage_error(&o, &[t]);
    }
    let o = run(&["run", "--timeout", "365d", s(&guest("hello"))]);
    assert_eq!(code(&o), 0, "the maximum itself is accepted: {}", stderr(&o));
}
