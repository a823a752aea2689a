//! Leaks: the fork server's host keeps no descriptor and no zombie after many runs. Its own
//! test binary, because descriptor and child counts are process-wide.

mod common;

use common::{children_of as children, guest, load_options as options, wait_until};
use std::collections::HashSet;
use std::time::Duration;
use zeroboot_wasm::*;

/// This process's open descriptors: pipes, and all others.
struct Fds {
    pipes: usize,
    others: usize,
}

fn open_fds_by_kind() -> Fds {
    let mut fds = Fds { pipes: 0, others: 0 };
    for e in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").flatten() {
        match std::fs::read_link(e.path()) {
            Ok(t) if t.to_string_lossy().starts_with("pipe:") => fds.pipes += 1,
            _ => fds.others += 1,
        }
    }
    fds
}

#[test]
fn thousands_of_runs_leave_no_fd_and_no_zombie_in_the_host() {
    // Pipes this process holds before any zygote (the test harness's own output, say).
    let harness_pipes = open_fds_by_kind().pipes;
    let cache = tempfile::tempdir().unwrap();
    let rt = BlockingRuntime::new().expect("runtime");
    let hello = rt.load(guest("hello"), options(&cache, 2)).expect("load");
    // Warm up, so lazily opened descriptors (the reactor, the zygote's socket) exist.
    for _ in 0..20 {
        rt.run(&hello, &Task::new()).expect("run");
    }
    // The host holds the pipes of the pool sandboxes the zygote handed over (4 each; a pool
    // of 2, refilled as runs claim them): at most 8 pipes at any moment, and every other
    // descriptor exactly as before.
    let pool_pipes = |f: &Fds| f.pipes.saturating_sub(harness_pipes);
    let before = open_fds_by_kind();
    assert!(pool_pipes(&before) <= 8, "{} pipes held with a pool of 2", pool_pipes(&before));
    for _ in 0..10_000 {
        let o = rt.run(&hello, &Task::new()).expect("run");
        assert_eq!(o.status, Status::Exited);
    }
    let after = open_fds_by_kind();
    assert_eq!(after.others, before.others, "descriptors leaked");
    assert!(pool_pipes(&after) <= 8, "pipes leaked: {} held with a pool of 2", pool_pipes(&after));
    let zygote = rt.zygote_pid(&hello).expect("zygote");
    let ours = children(std::process::id() as i32);
    assert_eq!(ours, HashSet::from([zygote]), "the host's only child is its zygote");
    // The zygote's children are its pool (2) and sandboxes still tearing down.
    assert!(wait_until(Duration::from_secs(3), || children(zygote).len() <= 2));
}
