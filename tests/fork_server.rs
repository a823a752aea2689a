//! The fork server from a multi-threaded host: this test binary is the host (libtest and Tokio
//! give it many threads); each template lives in a zygote process started by re-executing this
//! very binary. Supervision (a zygote killed under load), cancellation, admission, leaks, and
//! a zygote fed garbage.

mod common;

use common::{alive, children_of as children, guest, load_options as options, wait_until};
use std::time::{Duration, Instant};
use zeroboot_wasm::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_multithreaded_host_runs_two_templates_with_many_tasks_in_flight() {
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new();
    let hello = rt.load(guest("hello"), options(&cache, 2)).await.expect("load hello");
    let args = rt.load(guest("args_env"), options(&cache, 2)).await.expect("load args_env");
    let mut joins = Vec::new();
    for i in 0..600usize {
        let (hello, args) = (hello.clone(), args.clone());
        joins.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let o = hello.run(&Task::new()).await.expect("hello run");
                assert_eq!(o.status, Status::Exited, "{o:?}");
                assert_eq!(o.stdout_text(), "hello from a zeroboot-wasm sandbox\n");
            } else {
                let o = args.run(&Task::new().args([format!("n{i}")])).await.expect("args run");
                assert_eq!(o.status, Status::Exited, "{o:?}");
                assert!(o.stdout_text().contains(&format!("arg[1]=n{i}\n")), "{o:?}");
            }
        }));
    }
    for j in joins {
        j.await.expect("task did not panic");
    }
    let stats = hello.stats().await.expect("stats");
    assert_eq!(stats.threads, 1, "the zygote stays single-threaded: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zygote_killed_under_load_ends_its_tasks_and_the_next_call_succeeds() {
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new();
    let spin = rt.load(guest("spin"), options(&cache, 0)).await.expect("load spin");
    let first = spin.zygote_pid().await.expect("zygote running");
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let spin = spin.clone();
            tokio::spawn(
                async move { spin.run(&Task::new().timeout(Duration::from_secs(30))).await },
            )
        })
        .collect();
    // Let the sandboxes start spinning, then kill the zygote.
    assert!(wait_until(Duration::from_secs(5), || children(first).len() >= 4));
    let sandboxes = children(first);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), nix::sys::signal::SIGKILL).unwrap();
    let started = Instant::now();
    for r in runs {
        let o = r.await.unwrap().expect("an outcome, not an error");
        assert_eq!(o.status, Status::InternalError, "{o:?}");
        let m = o.message.unwrap_or_default();
        assert!(m.contains("zygote") && m.contains("SIGKILL"), "{m}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "tasks ended {:?} after",
        started.elapsed()
    );
    // Its sandboxes die with it (PR_SET_PDEATHSIG).
    assert!(wait_until(Duration::from_secs(5), || sandboxes.iter().all(|&p| !alive(p))));
    // The next call starts a new zygote and succeeds.
    let o = spin.run(&Task::new().timeout(Duration::from_millis(200))).await.expect("run");
    assert_eq!(o.status, Status::Timeout, "{o:?}");
    let second = spin.zygote_pid().await.expect("zygote restarted");
    assert_ne!(first, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_run_kills_its_sandbox() {
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new();
    let spin = rt.load(guest("spin"), options(&cache, 0)).await.expect("load spin");
    let zygote = spin.zygote_pid().await.expect("zygote");
    let task = Task::new();
    let run = spin.run(&task);
    assert!(tokio::time::timeout(Duration::from_millis(300), run).await.is_err());
    assert!(
        wait_until(Duration::from_secs(3), || children(zygote).is_empty()),
        "sandboxes still alive: {:?}",
        children(zygote)
    );
}

/// Found by the soak: the reader task held the connection while it waited for the zygote's
/// next message, so a template whose handles were all dropped kept its zygote and pool
/// sandboxes until the host exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_stops_the_zygote_and_its_sandboxes() {
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new();
    let hello = rt.load(guest("hello"), options(&cache, 2)).await.expect("load hello");
    let zygote = hello.zygote_pid().await.expect("zygote");
    let o = hello.clone().run(&Task::new()).await.expect("run");
    assert_eq!(o.status, Status::Exited, "{o:?}");
    // The pool is full again: two sandboxes wait for tasks.
    assert!(wait_until(Duration::from_secs(5), || children(zygote).len() == 2));
    let sandboxes = children(zygote);
    drop(hello);
    assert!(
        wait_until(Duration::from_secs(5), || !alive(zygote)
            && sandboxes.iter().all(|&p| !alive(p))),
        "zygote {zygote} or its sandboxes {sandboxes:?} outlived every handle"
    );
    // Reaped by the host, not left a zombie.
    assert!(
        wait_until(Duration::from_secs(5), || !std::path::Path::new(&format!("/proc/{zygote}"))
            .exists()),
        "zygote {zygote} was not reaped"
    );
}

/// A pool sandbox killed while it waits (the OOM killer, an operator) before the host hears
/// of it: the task the host hands it never started, so it runs in a sandbox forked for it
/// instead of ending `killed`. The zygote is stopped meanwhile, so the host cannot learn of
/// the deaths before it claims a dead sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_handed_to_a_dead_pool_sandbox_runs_in_a_fresh_one() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new();
    let hello = rt.load(guest("hello"), options(&cache, 2)).await.expect("load hello");
    let zygote = hello.zygote_pid().await.expect("zygote");
    // The second task asks for another memory cap than the pool's: its claim waits for the
    // zygote to change the limit, and the zygote answers that the sandbox is gone.
    for task in [Task::new(), Task::new().max_memory(48 << 20)] {
        let o = hello.run(&Task::new()).await.expect("run");
        assert_eq!(o.status, Status::Exited, "{o:?}");
        assert!(wait_until(Duration::from_secs(5), || children(zygote).len() == 2));
        // Let the host receive the two pool sandboxes' pipes.
        std::thread::sleep(Duration::from_millis(200));
        kill(Pid::from_raw(zygote), Signal::SIGSTOP).unwrap();
        let idle = children(zygote);
        for &p in &idle {
            kill(Pid::from_raw(p), Signal::SIGKILL).unwrap();
        }
        assert!(wait_until(Duration::from_secs(5), || idle.iter().all(|&p| !alive(p))));
        let resume = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            kill(Pid::from_raw(zygote), Signal::SIGCONT).unwrap();
        });
        let o = hello.run(&task).await.expect("run after the pool died");
        resume.join().unwrap();
        assert_eq!(o.status, Status::Exited, "{o:?}");
        assert_eq!(o.stdout_text(), "hello from a zeroboot-wasm sandbox\n");
        assert!(o.timings_us.fork > 0, "ran in a sandbox forked for it: {o:?}");
    }
}

/// The same in a zygote in the caller's own process (`Zygote` with a pool): both pool
/// sandboxes are killed while they wait, and the task runs in a sandbox forked for it.
#[cfg(feature = "testkit")]
#[test]
fn an_in_process_zygote_runs_a_task_past_its_dead_pool() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zeroboot-testkit"))
        .args(["dead-pool", guest("hello").to_str().unwrap()])
        .env("ZEROBOOT_WASM_CACHE_DIR", tempfile::tempdir().unwrap().path())
        .output()
        .expect("run zeroboot-testkit dead-pool");
    assert!(out.status.success(), "{}", common::stderr(&out));
    let o: serde_json::Value = serde_json::from_str(common::stdout(&out).trim()).expect("JSON");
    assert_eq!(o["status"], "exited", "{o}");
    assert_eq!(o["stdout"], "hello from a zeroboot-wasm sandbox\n", "{o}");
}

/// The memory cgroup directory of this process (where a zygote makes its `zeroboot-<pid>`).
fn own_memory_cgroup() -> Option<std::path::PathBuf> {
    let table = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    table.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            Some(std::path::Path::new("/sys/fs/cgroup/memory").join(rel))
        } else if controllers.is_empty() {
            Some(std::path::Path::new("/sys/fs/cgroup").join(rel))
        } else {
            None
        }
    })
}

/// Found by the soak: a zygote killed by a signal cannot remove its sandboxes' cgroups, and
/// nothing did until another zygote started under the same cgroup; the host that reaps it
/// now removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a writable memory cgroup (and namespaces); test.sh runs it where the machine has them"]
async fn a_killed_zygotes_cgroups_are_removed_by_its_host() {
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new();
    let hello = rt.load(guest("hello"), options(&cache, 2)).await.expect("load hello");
    assert!(
        hello.stats().await.expect("stats").memory_cgroup,
        "this test needs a writable memory cgroup"
    );
    let zygote = hello.zygote_pid().await.expect("zygote");
    let tree = own_memory_cgroup().expect("a memory cgroup").join(format!("zeroboot-{zygote}"));
    assert!(tree.is_dir(), "{} should exist while the zygote runs", tree.display());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(zygote), nix::sys::signal::SIGKILL).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || !tree.exists()),
        "{} left behind by the killed zygote",
        tree.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_is_bounded_and_says_busy() {
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new();
    let opts = LoadOptions { max_in_flight: 1, max_queued: 1, ..options(&cache, 0) };
    let spin = rt.load(guest("spin"), opts).await.expect("load spin");
    let task = Task::new().timeout(Duration::from_millis(1500));
    let (a, b) = (spin.clone(), spin.clone());
    let (ta, tb) = (task.clone(), task.clone());
    let first = tokio::spawn(async move { a.run(&ta).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = tokio::spawn(async move { b.run(&tb).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    match spin.run(&task).await {
        Err(Error::Busy { .. }) => {}
        other => panic!("a third run must be refused as busy, got {other:?}"),
    }
    assert_eq!(first.await.unwrap().expect("first runs").status, Status::Timeout);
    assert_eq!(second.await.unwrap().expect("queued one runs").status, Status::Timeout);
}

#[test]
fn a_zygote_fed_garbage_fails_that_connection_without_hanging() {
    use std::os::fd::AsRawFd;
    let (host, zygote) = zeroboot_wasm::sys::seqpacket_pair().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_zeroboot-wasm"))
        .env(protocol::ZYGOTE_ENV, protocol::VERSION.to_string())
        .stdin(std::process::Stdio::from(zygote))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    zeroboot_wasm::sys::send_message(host.as_raw_fd(), b"\x00\xffnot json", &[]).unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "the zygote hung on a malformed message");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(70));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("malformed"), "{err}");
}

/// The library's entry points: a reactor warmed once in its zygote, its exports called with
/// typed arguments from many tasks at once, a bad entry point refused before any sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactor_is_warmed_once_and_its_exports_invoked_concurrently() {
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new();
    let wat = r#"(module
      (memory (export "memory") 1)
      (global $base (mut i64) (i64.const 0))
      (global $inits (mut i32) (i32.const 0))
      (func (export "_initialize")
        (global.set $base (i64.const 1000))
        (global.set $inits (i32.add (global.get $inits) (i32.const 1))))
      (func (export "add") (param i64) (result i64 i32)
        (global.set $base (i64.add (global.get $base) (local.get 0)))
        (global.get $base) (global.get $inits)))"#;
    let source =
        ModuleSource::Bytes { name: "adder.wat".into(), bytes: wat.as_bytes().to_vec().into() };
    let adder = rt.load(source, options(&cache, 2)).await.expect("load");
    assert_eq!(adder.stats().await.expect("stats").initializers, ["_initialize"]);
    let runs: Vec<_> = (0..50i64)
        .map(|i| {
            let adder = adder.clone();
            tokio::spawn(async move {
                let o = adder.run(&Task::new().invoke("add").args([i.to_string()])).await;
                (i, o.expect("run"))
            })
        })
        .collect();
    for r in runs {
        let (i, o) = r.await.expect("join");
        // Each fork starts from the warmed state (base 1000, initialised once), whatever the
        // other forks added.
        assert_eq!(o.stdout_text(), format!("{}\n1\n", 1000 + i), "{o:?}");
    }
    let e = adder.run(&Task::new()).await.expect_err("a reactor has no _start");
    assert!(matches!(e, Error::InvalidTask(TaskError::Entry(_))), "{e:?}");
    let e = adder.run(&Task::new().invoke("add").args(["x"])).await.expect_err("bad argument");
    assert!(e.to_string().contains("invalid task"), "{e}");
}

/// Found fuzzing the host ⇄ zygote frames: a claim that lifts a pool sandbox's memory cap
/// (`set_limit: Some(None)`) was encoded as `null`, which decodes as "no change" — the zygote
/// left the last task's cap in place and never acknowledged, and the task waited for an
/// acknowledgement that never came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_without_a_memory_cap_after_one_with_a_cap_runs() {
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new();
    let hello = rt.load(guest("hello"), options(&cache, 2)).await.expect("load hello");
    let capped = Task::new().max_memory(64 << 20).timeout(Duration::from_secs(10));
    let uncapped = Task::new().timeout(Duration::from_secs(10));
    for task in [&capped, &capped, &uncapped, &uncapped, &capped, &uncapped] {
        let o = tokio::time::timeout(Duration::from_secs(20), hello.run(task))
            .await
            .expect("the run ends")
            .expect("run");
        assert_eq!(o.status, Status::Exited, "{o:?}");
        assert_eq!(o.stdout_text(), "hello from a zeroboot-wasm sandbox\n");
    }
}

/// The race the test above stops: idle pool sandboxes killed right before each task, 100
/// times, with no pause for their deaths. A sandbox blocked reading its channel when killed
/// may still take the frame's first 8 bytes; it never has the whole task, so no outcome shows
/// the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_sandboxes_killed_right_before_tasks_never_show_in_outcomes() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new();
    let hello = rt.load(guest("hello"), options(&cache, 2)).await.expect("load hello");
    let zygote = hello.zygote_pid().await.expect("zygote");
    for i in 0..100u64 {
        let o = hello.run(&Task::new()).await.expect("run");
        assert_eq!(o.status, Status::Exited, "{o:?}");
        wait_until(Duration::from_secs(5), || children(zygote).len() >= 2);
        std::thread::sleep(Duration::from_millis(5 + i % 7));
        for p in children(zygote) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        let o = hello.run(&Task::new()).await.expect("run after the kills");
        assert_eq!(o.status, Status::Exited, "round {i}: {o:?}");
        assert_eq!(o.stdout_text(), "hello from a zeroboot-wasm sandbox\n");
    }
}

/// Whether this machine can back memory with huge pages on request: transparent huge pages
/// not `never`, and a kernel with `MADV_COLLAPSE` (6.1).
fn huge_pages_possible() -> bool {
    let enabled = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|s| !s.contains("[never]"));
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    enabled && (major, minor) >= (6, 1)
}

/// Warm memory is backed with huge pages where the zygote touched it, not where a module only
/// declared it; every fork still starts from the warm state and its writes stay its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_memory_goes_to_huge_pages_only_where_it_was_touched() {
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new();
    // 16 MiB, every page written by the initialiser (the byte at each page's start is 7);
    // `bump` adds one to the byte at 8 MiB and returns it.
    let touched = r#"(module
      (memory (export "memory") 256)
      (func (export "_initialize") (local $a i32)
        (loop $l
          (i32.store8 (local.get $a) (i32.const 7))
          (local.set $a (i32.add (local.get $a) (i32.const 4096)))
          (br_if $l (i32.lt_u (local.get $a) (i32.const 16777216)))))
      (func (export "bump") (result i32)
        (i32.store8 (i32.const 8388608) (i32.add (i32.load8_u (i32.const 8388608)) (i32.const 1)))
        (i32.load8_u (i32.const 8388608))))"#;
    // 64 MiB declared, none of it touched.
    let untouched = r#"(module
      (memory (export "memory") 1024)
      (func (export "_initialize"))
      (func (export "get") (result i32) (i32.load8_u (i32.const 8388608))))"#;
    let source = |name: &str, wat: &str| ModuleSource::Bytes {
        name: name.into(),
        bytes: wat.as_bytes().to_vec().into(),
    };
    let touched = rt.load(source("touched.wat", touched), options(&cache, 2)).await.expect("load");
    let untouched =
        rt.load(source("untouched.wat", untouched), options(&cache, 2)).await.expect("load");
    let backed = touched.stats().await.expect("stats").huge_page_bytes;
    let spared = untouched.stats().await.expect("stats").huge_page_bytes;
    assert_eq!(spared, 0, "declared but untouched memory is never filled in");
    if huge_pages_possible() {
        // At least 7 whole aligned 2 MiB blocks lie inside any 16 MiB range.
        assert!(backed >= 14 << 20, "touched warm memory backed with huge pages: {backed}");
    } else {
        assert_eq!(backed, 0, "no huge pages on this machine, and none reported");
    }
    for _ in 0..3 {
        let o = touched.run(&Task::new().invoke("bump")).await.expect("run");
        assert_eq!(o.stdout_text(), "8\n", "each fork starts from the warm byte: {o:?}");
    }
    let o = untouched.run(&Task::new().invoke("get")).await.expect("run");
    assert_eq!(o.stdout_text(), "0\n", "{o:?}");
}

/// A serving zygote backs the runtime's own code with huge pages, so that its sandboxes take
/// no page fault on it, and its sandboxes run tasks exactly as before: output, a trap (whose
/// handler runs in the moved code), a timeout. With huge pages off, nothing is moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_code_goes_to_huge_pages_and_tasks_run_as_before() {
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new();
    let hello = rt.load(guest("hello"), options(&cache, 2)).await.expect("load hello");
    let backed = hello.stats().await.expect("stats").runtime_code_huge_bytes;
    if huge_pages_possible() {
        assert!(backed >= 2 << 20, "the runtime's code backed with huge pages: {backed}");
    } else {
        assert_eq!(backed, 0, "no huge pages on this machine, and none reported");
    }
    for _ in 0..20 {
        let o = hello.run(&Task::new()).await.expect("run");
        assert_eq!(o.status, Status::Exited, "{o:?}");
        assert_eq!(o.stdout_text(), "hello from a zeroboot-wasm sandbox\n", "{o:?}");
    }
    let trap = rt.load(guest("trap"), options(&cache, 1)).await.expect("load trap");
    let o = trap.run(&Task::new()).await.expect("run trap");
    assert_eq!(o.status, Status::Trapped, "{o:?}");
    let spin = rt.load(guest("spin"), options(&cache, 1)).await.expect("load spin");
    let o = spin.run(&Task::new().timeout(Duration::from_millis(100))).await.expect("run spin");
    assert_eq!(o.status, Status::Timeout, "{o:?}");

    let mut off = options(&cache, 1);
    off.config.huge_pages(false);
    let plain = rt.load(guest("hello"), off).await.expect("load without huge pages");
    assert_eq!(plain.stats().await.expect("stats").runtime_code_huge_bytes, 0);
    let o = plain.run(&Task::new()).await.expect("run");
    assert_eq!(o.stdout_text(), "hello from a zeroboot-wasm sandbox\n", "{o:?}");
}
