//! Leaks: the fork server's host keeps no descriptor and no zombie after many runs. Its own
//! test binary, because descriptor and child counts are process-wide.

mod common;

use common::{children_of as children, guest, load_options as options, wait_until};
use std::collections::HashSet;
use std::time::Duration;
use zeroboot_wasm::*;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

#[test]
fn thousands_of_runs_leave_no_fd_and_no_zombie_in_the_host() {
    let cache = tempfile::tempdir().unwrap();
    let rt = BlockingRuntime::new().expect("runtime");
    let hello = rt.load(guest("hello"), options(&cache, 2)).expect("load");
    // Warm up, so lazily opened descriptors (the reactor, the zygote's socket) exist.
    for _ in 0..20 {
        rt.run(&hello, &Task::new()).expect("run");
    }
    // The host holds the pipes of the pool sandboxes the zygote handed over (4 each, 2
    // sandboxes): counted once the pool is full again, before and after.
    let full = || {
        let mut last = open_fds();
        wait_until(Duration::from_secs(5), || {
            let now = open_fds();
            let settled = now == last;
            last = now;
            settled && children(rt.zygote_pid(&hello).unwrap_or(0)).len() == 2
        });
        open_fds()
    };
    let before = full();
    for _ in 0..10_000 {
        let o = rt.run(&hello, &Task::new()).expect("run");
        assert_eq!(o.status, Status::Exited);
    }
    assert_eq!(full(), before, "descriptors leaked");
    let zygote = rt.zygote_pid(&hello).expect("zygote");
    let ours = children(std::process::id() as i32);
    assert_eq!(ours, HashSet::from([zygote]), "the host's only child is its zygote");
    // The zygote's children are its pool (2) and sandboxes still tearing down.
    assert!(wait_until(Duration::from_secs(3), || children(zygote).len() <= 2));
}
