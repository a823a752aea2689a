//! Limits and honest outcomes: every hostile behaviour ends promptly with the status that says
//! why, and the same warm worker then serves an ordinary task.

mod common;

use common::{guest, spawn_worker, worker};
use serde_json::{Value, json};
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

fn task(args: &[&str], extra: Value) -> String {
    let mut v = json!({ "args": args });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    v.to_string()
}

fn assert_hello(o: &Value) {
    assert_eq!(o["status"], "exited", "the next ordinary task must succeed: {o}");
    assert_eq!(o["stdout"], "hello\n", "{o}");
}

#[test]
fn each_hostile_task_ends_with_its_status_and_the_worker_keeps_serving() {
    let lines = vec![
        task(&["alloc"], json!({"max_memory": 64 << 20})),
        task(&["hello"], json!({})),
        task(&["spin"], json!({"timeout_ms": 200})),
        task(&["hello"], json!({})),
        task(&["sleep"], json!({"timeout_ms": 200})),
        task(&["hello"], json!({})),
        task(&["flood"], json!({"timeout_ms": 300})),
        task(&["hello"], json!({})),
        task(&["trap"], json!({})),
        task(&["hello"], json!({})),
        task(&["recurse"], json!({})),
        task(&["hello"], json!({})),
    ];
    let out = worker(&guest("multi"), &["--max-output", "64KiB"], &lines);
    assert_eq!(out.len(), lines.len());

    let alloc = &out[0];
    assert_eq!(alloc["status"], "memory_limit", "{alloc}");
    let msg = alloc["message"].as_str().unwrap();
    assert!(msg.contains("past its cap of 67108864 bytes"), "{msg}");
    assert_eq!(alloc["stdout"], "allocating\n", "partial output is kept");

    let spin = &out[2];
    assert_eq!(spin["status"], "timeout", "{spin}");
    assert!(spin["message"].as_str().unwrap().contains("guest interrupted"), "{spin}");
    assert_eq!(spin["stdout"], "spinning\n", "partial output is kept");
    let total = spin["timings_us"]["total"].as_u64().unwrap();
    assert!((200_000..1_200_000).contains(&total), "timeout reported after {total} us");

    // Asleep in a host call: epochs cannot reach it; the zygote kills it after the grace.
    let sleep = &out[4];
    assert_eq!(sleep["status"], "timeout", "{sleep}");
    assert!(sleep["message"].as_str().unwrap().contains("blocked in a host call"), "{sleep}");
    assert_eq!(sleep["stdout"], "sleeping\n");
    let total = sleep["timings_us"]["total"].as_u64().unwrap();
    assert!((200_000..1_200_000).contains(&total), "timeout reported after {total} us");

    let flood = &out[6];
    assert_eq!(flood["status"], "timeout", "{flood}");
    assert_eq!(flood["stdout_truncated"], true);
    assert_eq!(flood["stdout"].as_str().unwrap().len(), 64 * 1024);

    let trap = &out[8];
    assert_eq!(trap["status"], "trapped", "{trap}");
    assert!(trap["message"].as_str().unwrap().contains("unreachable"), "{trap}");

    let recurse = &out[10];
    assert_eq!(recurse["status"], "trapped", "{recurse}");
    // Whichever runs out first: Wasmtime's native stack for wasm (8 MiB), or the guest's own
    // shadow stack in linear memory (1 MiB for Rust), which runs below address 0.
    let m = recurse["message"].as_str().unwrap();
    assert!(
        m.contains("call stack exhausted") || m.contains("out of bounds memory access"),
        "{recurse}"
    );

    for i in (1..lines.len()).step_by(2) {
        assert_hello(&out[i]);
    }
}

#[test]
fn fuel_budget_ends_a_spinning_guest_deterministically() {
    let lines = vec![
        task(&["spin"], json!({"fuel": 1_000_000})),
        task(&["hello"], json!({"fuel": 100_000_000})),
        task(&["spin"], json!({"fuel": 1_000_000})),
    ];
    let out = worker(&guest("multi"), &["--fuel", "50000000"], &lines);
    assert_eq!(out[0]["status"], "fuel_exhausted", "{}", out[0]);
    assert_eq!(out[0]["fuel_consumed"], 1_000_000);
    assert!(out[0]["message"].as_str().unwrap().contains("fuel"), "{}", out[0]);
    assert_hello(&out[1]);
    let used = out[1]["fuel_consumed"].as_u64().unwrap();
    assert!(used > 0 && used < 100_000_000, "hello consumed {used}");
    // Deterministic: the same budget, the same place.
    assert_eq!(out[0]["stdout"], out[2]["stdout"]);
    assert_eq!(out[2]["fuel_consumed"], 1_000_000);
}

#[test]
fn fuel_without_a_metered_template_is_an_invalid_request() {
    let out = worker(&guest("multi"), &[], &[task(&["hello"], json!({"fuel": 1000}))]);
    assert_eq!(out[0]["status"], "invalid_request", "{}", out[0]);
    assert!(out[0]["message"].as_str().unwrap().contains("fuel metering"), "{}", out[0]);
}

#[test]
fn run_without_flags_has_safe_defaults() {
    // The default memory cap (1 GiB) stops an allocation bomb on its own.
    let out = common::run(&["run", "--json", guest("multi").to_str().unwrap(), "alloc"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON outcome");
    assert_eq!(v["status"], "memory_limit", "{v}");
    assert!(v["message"].as_str().unwrap().contains("1073741824"), "{v}");
    assert_eq!(out.status.code(), Some(134));
}

/// The worker's own memory stays bounded however much a guest writes: it keeps at most
/// --max-output per stream and discards the rest.
#[test]
fn runtime_memory_stays_bounded_under_an_output_flood() {
    let (mut w, mut input, mut output) =
        spawn_worker(&["--max-output", "1MiB", guest("multi").to_str().unwrap()]);
    writeln!(input, "{}", task(&["flood"], json!({"timeout_ms": 1500}))).unwrap();
    input.flush().unwrap();
    let mut line = String::new();
    output.read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["stdout_truncated"], true);
    // Read the worker's peak RSS while it is still alive.
    let status = std::fs::read_to_string(format!("/proc/{}/status", w.id())).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    drop(input);
    let _ = w.wait();
    eprintln!("worker peak RSS under a 1.5 s flood: {hwm_kb} KiB");
    assert!(hwm_kb < 64 * 1024, "worker peak RSS {hwm_kb} KiB under a flood");
}

/// A sandbox that dies from outside (here SIGKILL) is reported as `killed`, never hangs the
/// caller, and the worker serves the next task.
#[test]
fn a_sandbox_killed_from_outside_is_reported_as_killed() {
    // Compile (in a child process of its own) and cache the module first, so the worker's
    // only children are its sandboxes.
    let warm = common::run(&["run", guest("multi").to_str().unwrap(), "hello"]);
    assert!(warm.status.success(), "{}", common::stderr(&warm));
    let (mut w, mut input, mut output) = spawn_worker(&[guest("multi").to_str().unwrap()]);
    writeln!(input, "{}", task(&["spin"], json!({"timeout_ms": 20000}))).unwrap();
    input.flush().unwrap();
    let start = Instant::now();
    // The spinning sandbox: pool sandboxes wait asleep (killing one of those is no matter
    // now: a task handed to it runs in a fresh sandbox instead).
    let (_, child) = common::running_sandbox(w.id(), Duration::from_millis(50));
    // SAFETY: kill takes plain integers; `child` is the worker's sandbox.
    assert_eq!(unsafe { libc::kill(child, libc::SIGKILL) }, 0);
    let mut line = String::new();
    output.read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["status"], "killed", "{v}");
    assert!(v["message"].as_str().unwrap().contains("SIGKILL"), "{v}");
    assert!(start.elapsed() < Duration::from_secs(5), "the kill took too long to report");
    writeln!(input, "{}", task(&["hello"], json!({}))).unwrap();
    drop(input);
    line.clear();
    output.read_line(&mut line).unwrap();
    assert_hello(&serde_json::from_str(&line).unwrap());
    let _ = w.wait();
}

/// Issue 12, defect 9: a per-task budget of bytes written to files and of files created,
/// enforced exactly, ending the task with `write_limit`; what stays under it is untouched,
/// and stdout is not a file.
mod write_budget {
    use super::*;

    fn grant(dir: &std::path::Path) -> String {
        format!("{}::/data", dir.to_str().unwrap())
    }

    fn entries(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn bytes_past_the_budget_end_the_task_and_no_more_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let g = grant(dir.path());
        let lines = vec![
            // 3 MiB asked, 1 MiB allowed: 16 chunks of 64 KiB are written, the 17th traps.
            task(&["/data", "bytes", "3145728"], json!({"max_write": 1 << 20})),
            // Exactly the budget is fine.
            task(&["/data", "bytes", "1048576"], json!({"max_write": 1 << 20})),
        ];
        let out = worker(&guest("fs_fill"), &["--dir", &g], &lines);
        let over = &out[0];
        assert_eq!(over["status"], "write_limit", "{over}");
        let msg = over["message"].as_str().unwrap();
        assert!(msg.contains("max_write") && msg.contains("1048576 bytes"), "{msg}");
        assert!(over["exit_code"].is_null(), "{over}");
        assert_eq!(out[1]["status"], "exited", "{}", out[1]);
        assert_eq!(out[1]["stdout"], "done bytes 1048576\n", "{}", out[1]);
        let len = std::fs::metadata(dir.path().join("big")).unwrap().len();
        assert_eq!(len, 1 << 20);
    }

    #[test]
    fn files_past_the_budget_end_the_task_and_exactly_the_budget_exists() {
        let dir = tempfile::tempdir().unwrap();
        let g = grant(dir.path());
        let lines = vec![task(&["/data", "files", "500"], json!({"max_files": 100}))];
        let out = worker(&guest("fs_fill"), &["--dir", &g], &lines);
        assert_eq!(out[0]["status"], "write_limit", "{}", out[0]);
        let msg = out[0]["message"].as_str().unwrap();
        assert!(msg.contains("max_files") && msg.contains("100"), "{msg}");
        assert_eq!(entries(dir.path()), 100);

        // Directories count too; so does the worker's own flag, and on-demand forks agree.
        let dirs = tempfile::tempdir().unwrap();
        let g = grant(dirs.path());
        let lines = vec![task(&["/data", "dirs", "50"], json!({}))];
        let out =
            worker(&guest("fs_fill"), &["--pool", "0", "--max-files", "20", "--dir", &g], &lines);
        assert_eq!(out[0]["status"], "write_limit", "{}", out[0]);
        assert_eq!(entries(dirs.path()), 20);
    }

    #[test]
    fn work_under_the_budget_is_untouched_and_rewrites_create_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let g = grant(dir.path());
        let lines = vec![
            task(&["/data", "files", "50"], json!({"max_files": 50})),
            // The same 50 paths again: opened with O_CREAT, but none is new.
            task(&["/data", "files", "50"], json!({"max_files": 50})),
            task(&["/data", "bytes", "100000"], json!({"max_write": 200000, "max_files": 1})),
        ];
        let out = worker(&guest("fs_fill"), &["--dir", &g], &lines);
        for o in &out {
            assert_eq!(o["status"], "exited", "{o}");
            assert_eq!(o["exit_code"], 0, "{o}");
        }
        assert_eq!(entries(dir.path()), 51);
    }

    #[test]
    fn stdout_is_not_charged() {
        // 4 MiB to stdout under a 64 KiB write budget.
        let out = common::run(&[
            "run",
            "--json",
            "--max-write",
            "64KiB",
            guest("output_flood").to_str().unwrap(),
            "64",
        ]);
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON outcome");
        assert_eq!(v["status"], "exited", "{v}");
        assert_eq!(v["stdout_truncated"], true, "{v}");
        assert_eq!(out.status.code(), Some(0));
    }

    #[test]
    fn run_exits_153_with_the_limit_on_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let g = grant(dir.path());
        let out = common::run(&[
            "run",
            "--dir",
            &g,
            "--max-files",
            "10",
            guest("fs_fill").to_str().unwrap(),
            "/data",
            "files",
            "1000",
        ]);
        assert_eq!(out.status.code(), Some(153), "{}", common::stderr(&out));
        let err = common::stderr(&out);
        assert!(err.contains("write_limit") && err.contains("max_files"), "{err}");
        assert_eq!(entries(dir.path()), 10);
    }
}

/// Issue 12, defects 2 and 3: what a sandbox does to memory — even memory that outlives it,
/// such as files on a tmpfs — is charged to a cgroup of its own, never to its zygote's, so the
/// OOM killer can pick only the sandbox, every task gets an outcome, and a later task's
/// smaller limit still applies.
mod memory_cgroups {
    use super::*;

    /// A directory on a tmpfs (files written there are memory), removed on drop.
    struct TmpfsDir(std::path::PathBuf);

    impl TmpfsDir {
        fn new() -> Option<Self> {
            let base = std::path::Path::new("/dev/shm");
            if !base.is_dir() {
                return None;
            }
            let p = base.join(format!("zeroboot-test-{}-{:?}", std::process::id(), Instant::now()));
            std::fs::create_dir(&p).ok()?;
            Some(Self(p))
        }
    }

    impl Drop for TmpfsDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn memory_cgroup(o: &Value) -> bool {
        o["zygote"]["memory_cgroup"].as_bool().unwrap_or(false)
    }

    #[test]
    fn filling_a_tmpfs_grant_kills_the_sandbox_not_the_zygote() {
        let Some(shm) = TmpfsDir::new() else {
            panic!("this test needs /dev/shm (a tmpfs)");
        };
        let grant = format!("{}::/data", shm.0.display());
        let g = guest("fs_fill");
        let args = [
            "--stats",
            "--max-memory",
            "32MiB",
            "--max-write",
            "1GiB",
            "--max-file-size",
            "1GiB",
            "--dir",
            grant.as_str(),
        ];
        let lines = vec![
            // 192 MiB into a tmpfs under a 32 MiB (+64 MiB host overhead) bound.
            task(&["/data", "bytes", "201326592"], json!({"timeout_ms": 20000})),
            // Then ordinary tasks, one with a smaller limit than the first.
            task(&["/data/small", "files", "1"], json!({"max_memory": 16 << 20})),
            task(&["/data/small", "files", "1"], json!({})),
        ];
        std::fs::create_dir(shm.0.join("small")).unwrap();
        let out = worker(&g, &args, &lines);
        assert_eq!(out.len(), 3, "every task gets an outcome: {out:?}");
        if memory_cgroup(&out[0]) {
            assert_eq!(out[0]["status"], "memory_limit", "{}", out[0]);
            assert!(out[0]["message"].as_str().unwrap().contains("cgroup"), "{}", out[0]);
        } else {
            eprintln!("no memory cgroup on this machine: the fill is bounded only by --max-write");
        }
        for o in &out[1..] {
            assert_eq!(o["status"], "exited", "{o}");
            assert_eq!(o["exit_code"], 0, "{o}");
            // The layer is still there for every later task (never silently dropped).
            assert_eq!(memory_cgroup(o), memory_cgroup(&out[0]), "{o}");
        }
    }

    /// A reaped sandbox's cgroup serves a later sandbox only when nothing is left charged to
    /// it: 85 MB written to a tmpfs grant stay charged to the writer's cgroup, and a later
    /// task whose bound is 80 MiB (16 MiB cap + 64 MiB host overhead, 83.9 MB) would be killed or
    /// refused in it. Ordinary tasks do reuse cgroups.
    #[test]
    fn a_cgroup_is_reused_only_when_its_sandbox_left_nothing_charged() {
        let Some(shm) = TmpfsDir::new() else {
            panic!("this test needs /dev/shm (a tmpfs)");
        };
        let grant = format!("{}::/data", shm.0.display());
        std::fs::create_dir(shm.0.join("small")).unwrap();
        // Forked on demand, each sandbox takes the cgroup released last: the writer's.
        let args = [
            "--pool",
            "0",
            "--stats",
            "--max-write",
            "1GiB",
            "--max-file-size",
            "1GiB",
            "--dir",
            &grant,
        ];
        let mut lines =
            vec![task(&["/data", "bytes", "85000000"], json!({"max_memory": 32 << 20}))];
        for _ in 0..12 {
            lines.push(task(&["/data/small", "files", "1"], json!({"max_memory": 16 << 20})));
        }
        let out = worker(&guest("fs_fill"), &args, &lines);
        assert_eq!(out.len(), lines.len(), "every task gets an outcome: {out:?}");
        for o in &out {
            assert_eq!(o["status"], "exited", "{o}");
            assert_eq!(o["exit_code"], 0, "{o}");
        }
        let last = &out[out.len() - 1]["zygote"];
        if memory_cgroup(&out[0]) {
            assert!(
                last["cgroups_reused"].as_u64().unwrap_or(0) > 0,
                "clean cgroups are reused: {last}"
            );
        } else {
            eprintln!("no memory cgroup on this machine: nothing to reuse");
        }
    }

    #[test]
    fn large_stdin_under_a_small_cap_does_not_kill_the_zygote() {
        // 10 MB of stdin for a guest that never reads it, under a 16 MiB cap: the input goes
        // from the host straight into the sandbox, never through the zygote.
        let body = "x".repeat(10 << 20);
        let lines = vec![task(&[], json!({"stdin": body})), task(&[], json!({}))];
        let out = worker(&guest("hello"), &["--max-memory", "16MiB"], &lines);
        assert_eq!(out.len(), 2, "{out:?}");
        for o in &out {
            assert_eq!(o["status"], "exited", "{o}");
            assert_eq!(o["stdout"], "hello from a zeroboot-wasm sandbox\n", "{o}");
        }
    }
}
