//! The `run` command through the real binary: stdio, exit codes, arguments, environment,
//! `--json`, output caps, directory grants, clocks and deadlines.

mod common;

use common::{bin, guest, run, run_with_stdin, stderr, stdout};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The binary's exit code; a death by signal fails the test with the stderr.
fn code(o: &std::process::Output) -> i32 {
    o.status.code().unwrap_or_else(|| {
        panic!("zeroboot-wasm died by a signal: {:?}\nstderr: {}", o.status, stderr(o))
    })
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn assert_no_panic(o: &std::process::Output) {
    assert!(!stderr(o).contains("panicked"), "the runtime panicked:\n{}", stderr(o));
}

fn run_json(args: &[&str]) -> (std::process::Output, serde_json::Value) {
    let o = run(args);
    assert_no_panic(&o);
    let text = stdout(&o);
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_else(|| panic!("no JSON on stdout; stderr: {}", stderr(&o)));
    assert!(lines.next().is_none(), "--json must print exactly one line, got:\n{text}");
    let v: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("bad JSON {first:?}: {e}"));
    assert!(v.is_object(), "--json output is not an object: {v}");
    (o, v)
}

#[test]
fn hello_prints_its_line_and_exits_zero() {
    let o = run(&["run", s(&guest("hello"))]);
    assert_no_panic(&o);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "hello from a zeroboot-wasm sandbox\n");
    assert_eq!(stderr(&o), "");
}

/// Without namespaces the sandbox is forked by a plain clone under the zygote's own seccomp
/// filter: it must not be killed for a system call glibc's fork wrapper makes in the child.
#[test]
fn runs_without_namespaces_through_the_fork_server() {
    let hello = guest("hello");
    let o = run(&["run", "--namespaces", "off", s(&hello)]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "hello from a zeroboot-wasm sandbox\n");
    for pool in ["0", "2"] {
        let lines = common::worker(
            &hello,
            &["--namespaces", "off", "--pool", pool],
            &["{}".into(), "{}".into(), "{}".into()],
        );
        for v in &lines {
            assert_eq!(v["status"], "exited", "pool {pool}: {v}");
        }
    }
}

#[test]
fn exit_code_is_passed_through_and_streams_stay_separate() {
    let o = run(&["run", s(&guest("exit_code")), "42"]);
    assert_no_panic(&o);
    assert_eq!(code(&o), 42, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "exiting with 42\n");
    assert_eq!(stderr(&o), "to stderr before exit\n");
}

#[test]
fn exit_code_default_and_zero() {
    let o = run(&["run", s(&guest("exit_code"))]);
    assert_eq!(code(&o), 7, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "exiting with 7\n");

    let o = run(&["run", s(&guest("exit_code")), "0"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "exiting with 0\n");
}

#[test]
fn args_and_env_arrive_exactly() {
    let m = guest("args_env");
    let o = run(&[
        "run",
        "--env",
        "K=V",
        "--env",
        "EMPTY=",
        "--env",
        "EQ=a=b",
        s(&m),
        "plain",
        "--looks-like-a-flag",
        "--env",
        "NOT=ENV",
        "-x",
        "with space",
        "",
    ]);
    assert_no_panic(&o);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let expected = format!(
        "arg[0]={}\narg[1]=plain\narg[2]=--looks-like-a-flag\narg[3]=--env\narg[4]=NOT=ENV\n\
         arg[5]=-x\narg[6]=with space\narg[7]=\nenv:EMPTY=\nenv:EQ=a=b\nenv:K=V\n",
        file_name(&m)
    );
    assert_eq!(stdout(&o), expected);
}

#[test]
fn host_environment_does_not_leak() {
    let o = bin()
        .env("ZEROBOOT_TEST_SECRET", "do-not-leak")
        .args(["run", s(&guest("args_env"))])
        .stdin(Stdio::null())
        .output()
        .expect("run zeroboot-wasm");
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "arg[0]=args_env.wasm\n",
        "the guest must see no environment but what --env gives"
    );
}

#[test]
fn env_name_alone_passes_the_hosts_value() {
    let o = bin()
        .env("ZEROBOOT_TEST_PASSED", "from-host")
        .args(["run", "--env", "ZEROBOOT_TEST_PASSED", s(&guest("args_env"))])
        .stdin(Stdio::null())
        .output()
        .expect("run zeroboot-wasm");
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert!(
        stdout(&o).lines().any(|l| l == "env:ZEROBOOT_TEST_PASSED=from-host"),
        "stdout: {}",
        stdout(&o)
    );
}

#[test]
fn argv0_is_the_module_file_name_as_wasmtime_gives() {
    // `wasmtime run` (48) gives the module's file name, whatever path leads to it.
    let m = guest("args_env");
    let o = bin()
        .current_dir(m.parent().expect("guest dir"))
        .args(["run", "args_env.wasm", "x"])
        .stdin(Stdio::null())
        .output()
        .expect("run zeroboot-wasm");
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "arg[0]=args_env.wasm\narg[1]=x\n");

    let o = bin()
        .current_dir(m.parent().expect("guest dir"))
        .args(["run", "./args_env.wasm"])
        .stdin(Stdio::null())
        .output()
        .expect("run zeroboot-wasm");
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "arg[0]=args_env.wasm\n");

    let o = run(&["run", s(&m)]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "arg[0]=args_env.wasm\n");
}

#[test]
fn argv0_flag_overrides() {
    let o = run(&["run", "--argv0", "NAME", s(&guest("args_env")), "a"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "arg[0]=NAME\narg[1]=a\n");
}

#[test]
fn stdin_passes_through() {
    let input: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
    let o = run_with_stdin(&["run", s(&guest("echo"))], &input);
    assert_no_panic(&o);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert!(o.stdout == input, "stdout differs from stdin");
    assert_eq!(stderr(&o), "echo: 200000 bytes\n");
}

#[test]
fn empty_stdin() {
    let o = run_with_stdin(&["run", s(&guest("echo"))], b"");
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert_eq!(stderr(&o), "echo: 0 bytes\n");
}

#[test]
fn trap_exits_134_with_the_trap_on_stderr() {
    let o = run(&["run", s(&guest("trap"))]);
    assert_no_panic(&o);
    assert_eq!(code(&o), 134, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "about to trap\n");
    assert!(stderr(&o).contains("unreachable"), "stderr: {}", stderr(&o));
}

#[test]
fn stack_overflow_is_a_trap() {
    let o = run(&["run", s(&guest("stack_overflow"))]);
    assert_no_panic(&o);
    assert_eq!(code(&o), 134, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "recursing\n");
    // Rust's shadow stack lives in linear memory, so this may be reported as an
    // out-of-bounds access rather than as call-stack exhaustion: either way a trap.
    assert!(stderr(&o).contains("trapped"), "stderr: {}", stderr(&o));
}

#[test]
fn json_outcome_shape() {
    let (o, v) = run_json(&["run", "--json", s(&guest("hello"))]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(v["status"], "exited", "{v}");
    assert_eq!(v["exit_code"], 0, "{v}");
    assert_eq!(v["stdout"], "hello from a zeroboot-wasm sandbox\n", "{v}");
    assert_eq!(v["stderr"], "", "{v}");
    assert_eq!(v["stdout_truncated"], false, "{v}");
    assert_eq!(v["stderr_truncated"], false, "{v}");
    assert!(v["message"].is_null(), "{v}");
    assert!(v.get("stdout_base64").is_none(), "{v}");
    let t = &v["timings_us"];
    for k in ["fork", "setup", "run", "total"] {
        assert!(t[k].is_u64(), "timings_us.{k} missing or not a count: {v}");
    }
    let total = t["total"].as_u64().unwrap();
    for k in ["fork", "setup", "run"] {
        assert!(t[k].as_u64().unwrap() <= total, "timings_us.{k} exceeds total: {v}");
    }
}

#[test]
fn json_exit_code_and_separate_streams() {
    let (o, v) = run_json(&["run", "--json", s(&guest("exit_code")), "5"]);
    assert_eq!(code(&o), 5, "stderr: {}", stderr(&o));
    assert_eq!(v["status"], "exited", "{v}");
    assert_eq!(v["exit_code"], 5, "{v}");
    assert_eq!(v["stdout"], "exiting with 5\n", "{v}");
    assert_eq!(v["stderr"], "to stderr before exit\n", "{v}");
}

#[test]
fn json_trap() {
    let (o, v) = run_json(&["run", "--json", s(&guest("trap"))]);
    assert_eq!(code(&o), 134, "stderr: {}", stderr(&o));
    assert_eq!(v["status"], "trapped", "{v}");
    assert!(v["exit_code"].is_null(), "{v}");
    assert_eq!(v["stdout"], "about to trap\n", "{v}");
    let msg = v["message"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(msg.contains("unreachable"), "{v}");
}

#[test]
fn json_output_is_capped_exactly() {
    let (o, v) =
        run_json(&["run", "--json", "--max-output", "100000", s(&guest("output_flood")), "10"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(v["status"], "exited");
    assert_eq!(v["stdout_truncated"], true);
    assert_eq!(v["stderr_truncated"], false);
    let out = v["stdout"].as_str().expect("stdout string");
    assert_eq!(out.len(), 100_000);
    assert!(out.bytes().all(|b| b == b'x'));
}

#[test]
fn json_output_under_the_cap_is_whole() {
    // 10 chunks of 64 KiB = 640 KiB, under the default 1 MiB cap.
    let (o, v) = run_json(&["run", "--json", s(&guest("output_flood")), "10"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(v["stdout_truncated"], false);
    assert_eq!(v["stdout"].as_str().expect("stdout").len(), 10 * 64 * 1024);
}

#[test]
fn json_endless_output_with_a_deadline() {
    let start = Instant::now();
    let (o, v) = run_json(&[
        "run",
        "--json",
        "--max-output",
        "64KiB",
        "--timeout",
        "500ms",
        s(&guest("output_flood")),
    ]);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(code(&o), 124, "stderr: {}", stderr(&o));
    assert_eq!(v["status"], "timeout", "{v}");
    assert_eq!(v["stdout_truncated"], true);
    assert_eq!(v["stdout"].as_str().expect("stdout").len(), 64 * 1024);
}

/// A fresh `root/data` directory holding `input.txt`, inside a tempdir so escapes into the
/// parent can be checked.
fn data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    std::fs::create_dir(&data).expect("mkdir data");
    std::fs::write(data.join("input.txt"), "from the host\n").expect("write input");
    (root, data)
}

/// The `NAME ok|err ...` step lines of the fs guest, in order.
fn steps(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(' ')?;
            (rest == "ok" || rest.starts_with("err")).then(|| (name.to_string(), rest.to_string()))
        })
        .collect()
}

#[test]
fn preopen_read_write_and_no_escape() {
    let (root, data) = data_dir();
    let grant = format!("{}::/data", s(&data));
    let o = run(&["run", "--dir", &grant, s(&guest("fs")), "/data"]);
    assert_no_panic(&o);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let steps = steps(&out);
    for name in [
        "read_host_file",
        "create",
        "write",
        "seek",
        "read",
        "truncate",
        "len",
        "mkdir",
        "rename",
        "hard_link",
        "symlink",
        "read_via_symlink",
        "readdir",
        "unlink",
        "write_result",
        "escape_dotdot",
        "escape_absolute",
        "escape_root_readdir",
        "escape_symlink_create",
        "escape_symlink_follow",
        "escape_symlink_dotdot",
        "escape_hard_link",
        "escape_rename_out",
    ] {
        assert!(
            steps.iter().any(|(n, _)| n == name),
            "step {name} missing from the fs guest's output:\n{out}"
        );
    }
    for (name, result) in &steps {
        if name.starts_with("escape_") {
            assert!(result.starts_with("err"), "{name} must fail, got `{result}`:\n{out}");
        } else {
            assert_eq!(result, "ok", "step {name} failed:\n{out}");
        }
    }
    assert!(out.contains("input=from the host\n"), "{out}");
    assert!(out.contains("read_back=world\n"), "{out}");
    assert!(out.contains("len=5\n"), "{out}");
    assert!(out.contains("via_link=hello\n"), "{out}");
    assert!(out.contains("entries=c.txt,input.txt,link,sub\n"), "{out}");

    // What the guest did is on the host.
    assert_eq!(
        std::fs::read_to_string(data.join("result.txt")).expect("result.txt on the host"),
        "written by the guest\n"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("sub/b.txt")).expect("sub/b.txt on the host"),
        "hello"
    );
    assert!(!data.join("c.txt").exists(), "c.txt was unlinked");
    // Nothing escaped into the parent.
    assert!(!root.path().join("stolen.txt").exists());
    let parent_entries: Vec<_> = std::fs::read_dir(root.path())
        .expect("read root")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(parent_entries, vec![std::ffi::OsString::from("data")]);
}

#[test]
fn preopen_read_only() {
    let (_root, data) = data_dir();
    let grant = format!("{}::/data", s(&data));
    let o = run(&["run", "--dir-ro", &grant, s(&guest("fs")), "/data"]);
    assert_no_panic(&o);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let steps = steps(&out);
    let result = |name: &str| {
        steps
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("step {name} missing:\n{out}"))
    };
    assert_eq!(result("read_host_file"), "ok", "{out}");
    assert!(out.contains("input=from the host\n"), "{out}");
    assert_eq!(result("readdir"), "ok", "{out}");
    for name in ["create", "mkdir", "symlink", "unlink", "write_result"] {
        assert!(result(name).starts_with("err"), "{name} must fail on a read-only grant:\n{out}");
    }
    for (name, r) in &steps {
        if name.starts_with("escape_") {
            assert!(r.starts_with("err"), "{name} must fail:\n{out}");
        }
    }
    let mut entries: Vec<_> = std::fs::read_dir(&data)
        .expect("read data")
        .map(|e| e.expect("entry").file_name())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        vec![std::ffi::OsString::from("input.txt")],
        "a read-only grant was written to"
    );
}

#[test]
fn no_preopen_no_filesystem() {
    let o = run(&["run", s(&guest("fs")), "/data"]);
    assert_no_panic(&o);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let steps = steps(&out);
    assert!(!steps.is_empty(), "{out}");
    for (name, r) in &steps {
        assert!(r.starts_with("err"), "{name} must fail without a grant, got `{r}`:\n{out}");
    }
}

#[test]
fn clock_sleeps_and_monotonic_advances() {
    let o = run(&["run", s(&guest("clock")), "30"]);
    assert_no_panic(&o);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let out = stdout(&o);
    assert!(out.lines().any(|l| l == "monotonic_ok=true"), "{out}");
    let slept: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("slept_ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no slept_ms line:\n{out}"));
    assert!(slept >= 30, "{out}");
    let wall: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("wall_secs="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no wall_secs line:\n{out}"));
    let host =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(wall.abs_diff(host) < 60, "guest wall clock {wall} vs host {host}");
}

#[test]
fn timeout_kills_a_spinning_guest() {
    let start = Instant::now();
    let o = run(&["run", "--timeout", "300ms", s(&guest("spin"))]);
    let elapsed = start.elapsed();
    assert_no_panic(&o);
    assert_eq!(code(&o), 124, "stderr: {}", stderr(&o));
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?} to enforce a 300 ms deadline");
    assert_eq!(stdout(&o), "spinning\n");
    assert!(stderr(&o).contains("timeout"), "stderr: {}", stderr(&o));
}

#[test]
fn json_timeout() {
    let start = Instant::now();
    let (o, v) = run_json(&["run", "--json", "--timeout", "200ms", s(&guest("spin"))]);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(code(&o), 124, "stderr: {}", stderr(&o));
    assert_eq!(v["status"], "timeout", "{v}");
    assert!(v["exit_code"].is_null(), "{v}");
    assert_eq!(v["stdout"], "spinning\n", "{v}");
    assert!(v["message"].is_string(), "{v}");
}

#[test]
fn deadline_not_hit_by_a_quick_task() {
    let o = run(&["run", "--timeout", "30s", s(&guest("hello"))]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "hello from a zeroboot-wasm sandbox\n");
}

#[test]
fn random_differs_between_runs() {
    let a = run(&["run", s(&guest("random"))]);
    let b = run(&["run", s(&guest("random"))]);
    assert_eq!(code(&a), 0, "stderr: {}", stderr(&a));
    assert_eq!(code(&b), 0, "stderr: {}", stderr(&b));
    let (a, b) = (stdout(&a), stdout(&b));
    assert_eq!(a.trim().len(), 64, "{a}");
    assert_ne!(a, b);
}

#[test]
fn state_is_fresh() {
    let o = run(&["run", s(&guest("state"))]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "counter_before=0 scratch_before=0\n");
}

#[test]
fn no_cache_and_cache_dir_flags_work() {
    let o = run(&["run", "--no-cache", s(&guest("hello"))]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "hello from a zeroboot-wasm sandbox\n");

    let cache = tempfile::tempdir().expect("tempdir");
    let dir = cache.path().join("c");
    for _ in 0..2 {
        let o = run(&["run", "--cache-dir", s(&dir), s(&guest("hello"))]);
        assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
        assert_eq!(stdout(&o), "hello from a zeroboot-wasm sandbox\n");
    }
    assert!(
        std::fs::read_dir(&dir).expect("cache dir created").count() >= 1,
        "nothing was cached in {}",
        dir.display()
    );
}

/// Issue 12, defect 8: the file-size rlimit is for files in grants, not the caller's own
/// stdout. Redirected to a file, pass-through output past 64 MiB (the default cap) arrives
/// whole, as with `wasmtime run`.
#[test]
fn pass_through_stdout_to_a_file_is_not_cut_at_the_file_size_cap() {
    const CHUNKS: u64 = 1025; // 64 KiB each: 64 MiB + 64 KiB
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("out");
    let file = std::fs::File::create(&path).expect("create output file");
    let o = bin()
        .args(["run", s(&guest("output_flood")), &CHUNKS.to_string()])
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::piped())
        .output()
        .expect("run zeroboot-wasm");
    assert_no_panic(&o);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let len = std::fs::metadata(&path).expect("output file").len();
    assert_eq!(len, CHUNKS * 64 * 1024, "the caller's stdout was cut short");
    assert_eq!(stderr(&o), "");
}

/// Pass-through output is relayed as it arrives (a prompt shows before the guest finishes).
#[test]
fn pass_through_output_streams() {
    let start = Instant::now();
    let mut child = bin()
        .args(["run", "--timeout", "3s", s(&guest("multi")), "sleep"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn zeroboot-wasm");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("read a line");
    let first = start.elapsed();
    assert_eq!(line, "sleeping\n");
    assert!(first < Duration::from_millis(2500), "first line arrived after {first:?}");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(124), "the sleeper ends at its deadline");
}

/// A caller that stops reading (closed pipe): the guest sees EPIPE on its next write, nothing
/// hangs and nothing crashes.
#[test]
fn pass_through_to_a_closed_stdout_ends_cleanly() {
    let start = Instant::now();
    let mut child = bin()
        .args(["run", "--timeout", "20s", s(&guest("output_flood"))])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn zeroboot-wasm");
    let mut out = child.stdout.take().expect("stdout");
    let mut buf = vec![0u8; 1 << 20];
    std::io::Read::read_exact(&mut out, &mut buf).expect("read the first MiB");
    drop(out);
    let o = child.wait_with_output().expect("wait");
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    assert_no_panic(&o);
    // output_flood stops at its first failed write and returns normally.
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
}

/// The last component of a module's path, as the guest's argv[0] under `run`.
fn file_name(p: &std::path::Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}
