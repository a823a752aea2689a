//! Shared helpers for the integration tests: the guests and the real binary.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Runs a build script of `scripts/` and returns the directory it prints (where it put what
/// it built); panics with the script's stderr if it fails.
pub fn built_by(script: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts").join(script))
        .output()
        .unwrap_or_else(|e| panic!("run scripts/{script}: {e}"));
    assert!(
        out.status.success(),
        "scripts/{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Path to guest `name`'s `.wasm`, building the guest workspace once per test binary.
pub fn guest(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| built_by("build-guests.sh"));
    let p = dir.join(format!("{name}.wasm"));
    assert!(p.exists(), "guest {name} not built at {}", p.display());
    p
}

/// Path to guest `name` built as a component (wasm32-wasip2): the twin of [`guest`]'s core
/// module, or a component-only guest.
pub fn component(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("bash")
            .arg(root.join("scripts").join("build-guests.sh"))
            .arg("wasip2")
            .output()
            .unwrap_or_else(|e| panic!("run scripts/build-guests.sh: {e}"));
        assert!(
            out.status.success(),
            "scripts/build-guests.sh wasip2 failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    });
    let p = dir.join(format!("{name}.wasm"));
    assert!(p.exists(), "component {name} not built at {}", p.display());
    p
}

/// The `zeroboot-wasm` binary, with a private compile cache so tests do not share state
/// with the user's.
pub fn bin() -> Command {
    static CACHE: OnceLock<tempfile::TempDir> = OnceLock::new();
    let cache = CACHE.get_or_init(|| tempfile::tempdir().expect("cache dir"));
    let mut c = Command::new(env!("CARGO_BIN_EXE_zeroboot-wasm"));
    c.env("ZEROBOOT_WASM_CACHE_DIR", cache.path());
    c
}

/// Runs the binary with `args`, feeding `stdin`, and returns its output.
pub fn run_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = bin();
    cmd.args(args);
    run_command(cmd, stdin)
}

/// Runs `cmd`, feeding `stdin`, and returns its output.
pub fn run_command(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn zeroboot-wasm");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for zeroboot-wasm");
    feeder.join().expect("stdin feeder");
    out
}

/// Runs the binary with `args` and empty stdin.
pub fn run(args: &[&str]) -> Output {
    run_with_stdin(args, b"")
}

/// Runs `worker` on `module` with these request lines; returns one parsed JSON value per
/// output line.
pub fn worker(module: &Path, extra: &[&str], lines: &[String]) -> Vec<serde_json::Value> {
    let mut args = vec!["worker"];
    args.extend_from_slice(extra);
    let m = module.to_str().expect("utf-8 path");
    args.push(m);
    let input = lines.join("\n") + "\n";
    let out = run_with_stdin(&args, input.as_bytes());
    assert!(
        out.status.success(),
        "worker failed: {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("worker output is UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A running `worker` driven line by line: (process, its stdin, its stdout).
pub fn spawn_worker(
    args: &[&str],
) -> (std::process::Child, std::process::ChildStdin, std::io::BufReader<std::process::ChildStdout>)
{
    let mut w = bin()
        .arg("worker")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start worker");
    let input = w.stdin.take().expect("stdin");
    let output = std::io::BufReader::new(w.stdout.take().expect("stdout"));
    (w, input, output)
}

/// Load options for fork-server tests: a private compile cache, namespaces where the machine
/// has them, and a pool of `pool`.
pub fn load_options(cache: &tempfile::TempDir, pool: usize) -> zeroboot_wasm::LoadOptions {
    let mut config = zeroboot_wasm::Config::new();
    config.cache_dir(Some(cache.path().to_path_buf()));
    let isolation = zeroboot_wasm::Isolation {
        namespaces: zeroboot_wasm::namespaces::available(),
        ..zeroboot_wasm::Isolation::default()
    };
    zeroboot_wasm::LoadOptions { config, isolation, pool, ..zeroboot_wasm::LoadOptions::default() }
}

/// The direct children of process `pid`.
pub fn children_of(pid: i32) -> std::collections::HashSet<i32> {
    let mut out = std::collections::HashSet::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for t in tasks.flatten() {
        let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    out
}

/// Process `pid`'s state letter from `/proc/PID/stat` (`R` running, `S` asleep, `Z` a
/// zombie, …); `None` once it is gone.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether process `pid` has not died yet (a zombie still has a `/proc` entry: it counts as
/// dead).
pub fn alive(pid: i32) -> bool {
    proc_state(pid).is_some_and(|s| s != 'Z')
}

/// The sandbox of the `worker` process that is running its guest, and its zygote: a child of
/// the worker's zygote process (the worker's child) seen running (`R`) both before and after
/// `settle`. Pool sandboxes wait asleep, and one being forked or torn down runs only briefly.
/// Panics if none appears within 10 s.
pub fn running_sandbox(worker: u32, settle: Duration) -> (i32, i32) {
    let start = Instant::now();
    let running = || -> Vec<(i32, i32)> {
        let zygotes = children_of(worker as i32);
        zygotes
            .into_iter()
            .flat_map(|z| children_of(z).into_iter().map(move |s| (z, s)))
            .filter(|&(_, s)| proc_state(s) == Some('R'))
            .collect()
    };
    loop {
        let first = running();
        std::thread::sleep(settle);
        if let Some(&found) = running().iter().find(|p| first.contains(p)) {
            return found;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no running sandbox appeared");
    }
}

/// Polls `f` every 20 ms until it holds or `limit` passes; returns its last answer.
pub fn wait_until(limit: std::time::Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    f()
}

/// Runs the binary with `args` and `stdin`, killing it after `limit`; returns its output and
/// how long it took. Panics if it had to be killed.
pub fn run_bounded(args: &[&str], stdin: &[u8], limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn zeroboot-wasm");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let output = wait_bounded(child, limit, &format!("zeroboot-wasm {args:?}"));
    let took = started.elapsed();
    let _ = feeder.join();
    (output, took)
}

/// Waits for `child`, collecting its stdout and stderr; kills it and panics (naming `what`,
/// with what it wrote to stderr) past `limit`: it hangs.
pub fn wait_bounded(mut child: std::process::Child, limit: Duration, what: &str) -> Output {
    let started = Instant::now();
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_reader.join().unwrap_or_default();
            panic!(
                "{what} still running after {limit:?}: it hangs\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().expect("stdout reader");
    let stderr = err_reader.join().expect("stderr reader");
    Output { status, stdout, stderr }
}
