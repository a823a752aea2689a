//! Isolation in depth, proven black-box: native escape probes forked through exactly the
//! sandbox setup a guest gets (`zeroboot-testkit probe`, the test-support binary: these tests
//! are compiled only with `--features testkit`, which `test.sh` passes), and a running sandbox
//! inspected from outside through /proc. Tests that need user namespaces are ignored where the
//! machine lacks them.

mod common;

use common::guest;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a probe in the test-support binary and returns its outcome.
#[cfg(feature = "testkit")]
fn probe(flags: &[&str], probe_args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_zeroboot-testkit"))
        .arg("probe")
        .args(flags)
        .args(probe_args)
        .output()
        .expect("run zeroboot-testkit probe");
    assert!(
        out.status.success(),
        "probe {probe_args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(common::stdout(&out).trim()).expect("probe outcome is JSON")
}

/// Without the `testkit` feature the escape-probe tests are not compiled; this shows them as
/// ignored in the summary rather than leaving them out silently.
#[cfg(not(feature = "testkit"))]
#[test]
#[ignore = "the escape-probe tests need the test-support binary: cargo test --features testkit \
            (test.sh passes it)"]
fn escape_probes_need_the_testkit_feature() {
    panic!("build with --features testkit to run the escape probes");
}

/// Whether namespaces work here; prints why a test is skipped otherwise.
/// These tests need user namespaces; they are `#[ignore]`d so that a machine without them
/// shows them as ignored in the summary, and `test.sh` runs them (`--include-ignored`) wherever
/// the machine can create namespaces, checked independently of our own code. Here they insist:
/// on such a machine, a failure to confine is a failure, never a skip.
fn require_namespaces() {
    assert!(
        zeroboot_wasm::namespaces::available(),
        "this test needs user namespaces, which this machine cannot create (run without \
         --include-ignored to skip it)"
    );
}

#[cfg(feature = "testkit")]
fn finding(o: &Value) -> String {
    o["stdout"].as_str().unwrap_or_default().to_string()
}

#[cfg(feature = "testkit")]
#[test]
#[ignore = "needs user namespaces; test.sh runs it where the machine has them"]
fn enforce_mode_kills_each_forbidden_call_and_names_it() {
    require_namespaces();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback listener");
    let port = tcp.local_addr().unwrap().port().to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["connect_inet", &format!("127.0.0.1:{port}")], "socket"),
        (&["connect_abstract", "zeroboot-test"], "socket"),
        (&["execve"], "execve"),
        (&["fork"], "clone"),
        (&["clone"], "clone"),
        (&["ptrace_parent", "1"], "ptrace"),
        (&["kill_parent", "1"], "kill"),
        (&["mount"], "mount"),
        (&["unshare"], "unshare"),
        (&["setuid0"], "setuid"),
        (&["chroot"], "chroot"),
        (&["bpf"], "bpf"),
        (&["keyctl"], "keyctl"),
        (&["io_uring_setup"], "io_uring_setup"),
        (&["perf_event_open"], "perf_event_open"),
    ];
    for (args, syscall) in cases {
        let o = probe(&[], args);
        assert_eq!(o["status"], "sandbox_violation", "probe {args:?}: {o}");
        let msg = o["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(&format!("forbidden system call {syscall} ")),
            "probe {args:?} should name {syscall}: {msg}"
        );
        assert_eq!(finding(&o), "", "probe {args:?} must not get to report a finding");
    }
    // Nobody connected to the listener.
    tcp.set_nonblocking(true).unwrap();
    assert!(tcp.accept().is_err(), "a sandbox reached the loopback listener");
}

#[cfg(feature = "testkit")]
#[test]
#[ignore = "needs user namespaces; test.sh runs it where the machine has them"]
fn host_filesystem_proc_and_descriptors_are_out_of_reach() {
    require_namespaces();
    let o = probe(&[], &["open_passwd"]);
    assert_eq!(o["status"], "exited");
    assert!(finding(&o).starts_with("open_passwd: refused No such file"), "{o}");
    let o = probe(&[], &["read_proc_environ"]);
    assert!(finding(&o).starts_with("read_proc_environ: refused No such file"), "{o}");
    // The root the sandbox sees is an empty tmpfs: no etc, usr, proc, dev.
    let o = probe(&[], &["list_root"]);
    assert_eq!(finding(&o), "list_root: allowed []", "{o}");
    // Only stdout, stderr and the report pipe are open (stdin is closed when captured).
    let o = probe(&[], &["open_fds"]);
    assert_eq!(finding(&o), "open_fds: [1,2,3]", "{o}");
}

#[cfg(feature = "testkit")]
#[test]
#[ignore = "needs user namespaces; test.sh runs it where the machine has them"]
fn file_size_limit_stops_writes_in_a_granted_directory() {
    require_namespaces();
    let dir = tempfile::tempdir().unwrap();
    let grant = format!("{}::/data", dir.path().display());
    // With namespaces the first grant is mounted at /g0 inside the sandbox root.
    let o = probe(
        &["--dir", &grant, "--max-file-size", "8KiB"],
        &["write_past_fsize", "/g0/big", "100000"],
    );
    assert_eq!(o["status"], "exited", "{o}");
    assert_eq!(
        finding(&o),
        "write_past_fsize: refused File too large (os error 27) after 8192 bytes"
    );
    let meta = std::fs::metadata(dir.path().join("big")).expect("file exists on the host");
    assert_eq!(meta.len(), 8192);
}

#[cfg(feature = "testkit")]
#[test]
#[ignore = "needs user namespaces; test.sh runs it where the machine has them"]
fn log_mode_logs_instead_of_killing_and_other_layers_still_refuse() {
    require_namespaces();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback listener");
    let port = tcp.local_addr().unwrap().port().to_string();
    let abstract_name = format!("zeroboot-test-{}", std::process::id());
    let addr =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            abstract_name.as_bytes(),
        )
        .unwrap();
    let unix = std::os::unix::net::UnixListener::bind_addr(&addr).expect("abstract listener");
    let log = ["--seccomp", "log"];
    let refused: &[(&[&str], &str)] = &[
        (&["connect_inet", &format!("127.0.0.1:{port}")], "Network is unreachable"),
        (&["connect_abstract", &abstract_name], "Connection refused"),
        (&["execve"], "No such file or directory"),
        (&["mount"], "Operation not permitted"),
        (&["chroot"], "Operation not permitted"),
        (&["ptrace_parent", "1"], "Operation not permitted"),
        (&["open_passwd"], "No such file or directory"),
    ];
    for (args, why) in refused {
        let o = probe(&log, args);
        assert_eq!(o["status"], "exited", "probe {args:?} must be logged, not killed: {o}");
        let f = finding(&o);
        assert!(f.contains("refused") && f.contains(why), "probe {args:?}: {f}");
    }
    // Calls only seccomp stops are let through in log mode: that is what log mode is for.
    let o = probe(&log, &["setuid0"]);
    assert_eq!(o["status"], "exited", "{o}");
    tcp.set_nonblocking(true).unwrap();
    assert!(tcp.accept().is_err(), "a sandbox reached the loopback listener");
    unix.set_nonblocking(true).unwrap();
    assert!(unix.accept().is_err(), "a sandbox reached the abstract socket");
}

/// `pid`'s children, their children, and so on (the worker's sandboxes are children of its
/// zygote process).
fn descendants(pid: u32) -> Vec<u32> {
    let mut out: Vec<u32> = common::children_of(pid as i32).into_iter().map(|p| p as u32).collect();
    let mut i = 0;
    while i < out.len() {
        let more = common::children_of(out[i] as i32);
        out.extend(more.into_iter().map(|p| p as u32));
        i += 1;
    }
    out
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[test]
#[ignore = "needs user namespaces; test.sh runs it where the machine has them"]
fn a_running_sandbox_seen_from_outside_is_confined() {
    require_namespaces();
    let mut worker = Command::new(env!("CARGO_BIN_EXE_zeroboot-wasm"))
        .args(["worker", guest("spin").to_str().unwrap()])
        .env("ZEROBOOT_WASM_CACHE_DIR", tempfile::tempdir().unwrap().path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start worker");
    let mut input = worker.stdin.take().unwrap();
    writeln!(input, "{{\"timeout_ms\": 20000}}").unwrap();
    input.flush().unwrap();
    // Wait until the sandbox exists and is running its guest. The worker is the host; its
    // child is the zygote process; sandboxes are the zygote's children. A sandbox inherits the
    // zygote's own filter at fork, so `Seccomp: 2` alone does not mean its setup is done: take
    // the one still running (spinning) 200 ms later — pool sandboxes wait asleep, and one being
    // set up runs for microseconds.
    let (zygote, sandbox) = common::running_sandbox(worker.id(), Duration::from_millis(200));
    let sandbox = sandbox as u32;
    // The zygote emptied its own bounding set once (it never executes anything), so that its
    // sandboxes start with it empty.
    assert_eq!(status_field(zygote as u32, "CapBnd"), "0000000000000000");
    assert_eq!(status_field(sandbox, "Seccomp"), "2");
    assert_eq!(status_field(sandbox, "NoNewPrivs"), "1");
    assert_eq!(status_field(sandbox, "CapEff"), "0000000000000000");
    assert_eq!(status_field(sandbox, "CapPrm"), "0000000000000000");
    assert_eq!(status_field(sandbox, "CapBnd"), "0000000000000000");
    assert_eq!(status_field(sandbox, "CapAmb"), "0000000000000000");
    for ns in ["net", "ipc", "uts", "mnt", "pid", "user"] {
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let theirs = std::fs::read_link(format!("/proc/{sandbox}/ns/{ns}")).unwrap();
        assert_ne!(ours, theirs, "{ns} namespace is the host's");
    }
    // The sandbox's uid, seen from outside, is the invoking user's (files it creates are ours).
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let uid = status_field(sandbox, "Uid");
    assert_eq!(uid.split_whitespace().next(), Some(euid.to_string().as_str()), "Uid: {uid}");

    // Killing the host closes the zygote's socket: the zygote kills its sandboxes and exits
    // (and a sandbox dies with its zygote, PR_SET_PDEATHSIG), so nothing is left spinning.
    drop(input);
    worker.kill().unwrap();
    let _ = worker.wait();
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{sandbox}")).exists()
        && status_field(sandbox, "State").starts_with('R')
    {
        assert!(start.elapsed() < Duration::from_secs(5), "sandbox outlived its zygote");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = BufReader::new(worker.stdout.take().unwrap()).lines().count();
}

#[test]
fn files_a_guest_creates_belong_to_the_invoking_user() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.txt"), "x").unwrap();
    let grant = format!("{}::/data", dir.path().display());
    let out = common::run(&["run", "--dir", &grant, guest("fs").to_str().unwrap(), "/data"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let meta = std::fs::metadata(dir.path().join("result.txt")).expect("guest wrote result.txt");
    // SAFETY: geteuid and getegid have no preconditions.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid()), (euid, egid));
}

/// Issue 12: a directory granted both read-write and read-only gets a mount of its own for
/// each grant, so the read-only grant is read-only in the kernel, not only in WASI. The probe
/// writes through the sandbox path the task's preopen is opened from.
#[cfg(feature = "testkit")]
#[test]
#[ignore = "needs user namespaces; test.sh runs it where the machine has them"]
fn a_directory_granted_read_write_and_read_only_has_a_read_only_mount_for_the_latter() {
    require_namespaces();
    let dir = tempfile::tempdir().unwrap();
    let rw = format!("{}::/rw", dir.path().display());
    let ro = format!("{}::/ro", dir.path().display());
    let flags = ["--dir", rw.as_str(), "--dir-ro", ro.as_str()];
    let o = probe(&flags, &["write_in_grant", "/ro", "through-ro"]);
    assert_eq!(o["status"], "exited", "{o}");
    assert_eq!(finding(&o), "write_in_grant: refused Read-only file system (os error 30)");
    assert!(!dir.path().join("through-ro").exists());
    let o = probe(&flags, &["write_in_grant", "/rw", "through-rw"]);
    assert!(finding(&o).starts_with("write_in_grant: allowed"), "{o}");
    assert!(dir.path().join("through-rw").exists());
}

/// `RLIMIT_CPU` (soft, hard) of a live process, from /proc/<pid>/limits.
fn cpu_limit(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let line = limits.lines().find(|l| l.starts_with("Max cpu time")).unwrap_or_default();
    let mut fields = line.split_whitespace().skip(3);
    (fields.next().unwrap_or_default().into(), fields.next().unwrap_or_default().into())
}

/// Issue 12, defect 7: a pre-forked sandbox's CPU backstop becomes its task's (CPU used so
/// far, rounded up, + deadline + 2 s) when the task arrives, soft and hard, instead of the
/// pool's. Seen from outside, on the running pool sandbox of a spinning guest.
#[test]
#[ignore = "needs user namespaces; test.sh runs it where the machine has them"]
fn a_pool_sandbox_takes_its_task_cpu_backstop() {
    require_namespaces();
    let mut worker = Command::new(env!("CARGO_BIN_EXE_zeroboot-wasm"))
        .args(["worker", "--pool", "1", guest("spin").to_str().unwrap()])
        .env("ZEROBOOT_WASM_CACHE_DIR", tempfile::tempdir().unwrap().path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start worker");
    let mut input = worker.stdin.take().unwrap();
    let mut output = BufReader::new(worker.stdout.take().unwrap());
    // Let the zygote fill its pool first. The running sandbox is the one under seccomp that
    // is not asleep (idle pool sandboxes wait in read(2)).
    std::thread::sleep(Duration::from_secs(1));
    writeln!(input, "{{\"timeout_ms\": 3000}}").unwrap();
    input.flush().unwrap();
    let start = Instant::now();
    let (sandbox, limit) = loop {
        let kids = descendants(worker.id());
        let running = kids.iter().copied().find(|&p| {
            status_field(p, "Seccomp") == "2" && status_field(p, "State").starts_with('R')
        });
        if let Some(pid) = running {
            let limit = cpu_limit(pid);
            if limit.0.parse::<u64>().is_ok_and(|soft| soft <= 6) {
                break (pid, limit);
            }
        }
        if start.elapsed() > Duration::from_secs(2) {
            let seen: Vec<_> = kids.iter().map(|&p| (p, cpu_limit(p))).collect();
            panic!("no running pool sandbox with the task's CPU backstop; children: {seen:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // 3 s deadline + 2 s, plus the CPU second the sandbox had started (rounded up).
    let soft: u64 = limit.0.parse().unwrap();
    assert!((5..=6).contains(&soft), "sandbox {sandbox}: {limit:?}");
    assert_eq!(limit.1, (soft + 1).to_string(), "hard limit is soft + 1: {limit:?}");
    let mut reply = String::new();
    output.read_line(&mut reply).unwrap();
    let v: Value = serde_json::from_str(&reply).expect("outcome");
    assert_eq!(v["status"], "timeout", "{v}");
    assert_eq!(v["timings_us"]["fork"], 0, "the task must have run in a pool sandbox: {v}");
    drop(input);
    let _ = worker.wait();
}

/// The sandbox root is a tmpfs mounted over /tmp in the zygote's mount namespace. A grant of
/// the host's /tmp (or of a directory above it) must show the host's files, not that tmpfs.
#[test]
#[ignore = "needs user namespaces; test.sh runs it where the machine has them"]
fn a_grant_of_the_hosts_tmp_shows_its_files() {
    require_namespaces();
    let dir = tempfile::Builder::new().prefix("zb-tmp-grant").tempdir_in("/tmp").expect("tempdir");
    std::fs::write(dir.path().join("input.txt"), "from the host's /tmp\n").expect("write");
    let name = dir.path().file_name().and_then(|n| n.to_str()).expect("name");
    let inside = format!("/data/{name}");
    let fs = guest("fs");
    let o = common::run(&["run", "--dir-ro", "/tmp::/data", fs.to_str().expect("utf-8"), &inside]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("input=from the host's /tmp"),
        "stdout: {out}\nstderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Two sandboxes forked from one zygote at the same time, each with its scratch directory:
/// native code in one holds a file in its scratch while native code in the other looks for it
/// everywhere a path reaches (its own scratch, `..` of it, `/scratch`, the whole tree from
/// `/`) and finds nothing. The control: the same pair sharing a granted directory, where the
/// seeker does find the file — so "not found" is the scratch's privacy, not a blind probe.
#[cfg(feature = "testkit")]
#[test]
#[ignore = "needs user namespaces; test.sh runs it where they work"]
fn sibling_sandboxes_cannot_reach_each_others_scratch() {
    require_namespaces();
    let run = |flags: &[&str], args: &[&str]| -> Vec<Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_zeroboot-testkit"))
            .arg("probe")
            .args(flags)
            .args(args)
            .output()
            .expect("run zeroboot-testkit probe");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(common::stdout(&out).trim()).expect("a JSON array of outcomes")
    };
    let seeker = ["--sibling", "scratch_seek zb-secret-17 300"];
    let both = run(
        &[&["--scratch", "1MiB"][..], &seeker].concat(),
        &["scratch_hold", "zb-secret-17", "900"],
    );
    assert_eq!(both.len(), 2, "{both:?}");
    for o in &both {
        assert_eq!(o["status"], "exited", "{o}");
    }
    assert_eq!(
        finding(&both[0]),
        "scratch_hold: wrote zb-secret-17: true, still there: true",
        "the holder wrote its file in its own scratch"
    );
    let seek = finding(&both[1]);
    assert!(
        seek.starts_with("scratch_seek: zb-secret-17 not found; own scratch holds []"),
        "{seek}"
    );
    // The two ran at the same time: the seeker looked while the holder held its file.
    let run_us = |o: &Value| o["timings_us"]["run"].as_u64().unwrap();
    assert!(run_us(&both[0]) >= 900_000 && run_us(&both[1]) >= 300_000, "{both:?}");

    let shared = tempfile::tempdir().unwrap();
    let grant = format!("{}::/shared", shared.path().display());
    let control = run(
        &[&["--scratch", "1MiB", "--dir", grant.as_str()][..], &seeker].concat(),
        &["scratch_hold", "zb-secret-17", "900", "/g0"],
    );
    let seek = finding(&control[1]);
    assert!(seek.contains("zb-secret-17 FOUND at [\"/g0/zb-secret-17\"]"), "control: {seek}");
}
