//! A memory cgroup for the sandboxes of one zygote: bounds everything a child allocates on the
//! host side (its copy-on-write copies, Wasmtime's and WASI's host allocations), not only the
//! guest's linear memory, which the store's limiter already caps.
//!
//! The zygote creates `zeroboot-<pid>` below its own memory cgroup (v2, or v1's `memory`
//! hierarchy) and moves itself in once; children are born in it. Moving each child in instead
//! was measured: attaching a process to a cgroup takes the kernel's cgroup thread-group lock,
//! which added 30 µs at p50 and 1.5 ms at p99 per task here (cgroup v1, 2 cores). Pages the
//! zygote had before it joined stay charged to its old cgroup, so the new cgroup's usage is
//! what sandboxes dirty (copy-on-write copies, host allocations) plus the zygote's small
//! per-task bookkeeping; the limit is set before each fork. With one task at a time (`run`,
//! `worker`) that is a per-sandbox bound. When the kernel kills for the limit it picks the
//! biggest process in the cgroup: the sandbox, which maps everything the zygote does and more.
//! When no writable memory cgroup exists (no cgroupfs, no permission), sandboxes run without
//! this bound; [`crate::ZygoteStats`] says which.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Which cgroup interface the directory speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// The zygote's sandbox cgroup.
#[derive(Debug)]
pub(crate) struct MemoryCgroup {
    dir: PathBuf,
    parent: PathBuf,
    version: Version,
    /// The limit file and the OOM counter, opened now so they work after the zygote has left
    /// the host's mount namespace.
    limit_file: File,
    events_file: File,
    limit: Option<u64>,
    written: bool,
    oom_kills: u64,
}

/// Finds the memory cgroup directory this process belongs to.
fn own_memory_cgroup() -> Option<(PathBuf, Version)> {
    let table = fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in table.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            let dir = Path::new("/sys/fs/cgroup/memory").join(rel);
            if dir.join("memory.limit_in_bytes").exists() {
                return Some((dir, Version::V1));
            }
        }
        if controllers.is_empty() {
            let dir = Path::new("/sys/fs/cgroup").join(rel);
            let enabled =
                fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
            if enabled.split_whitespace().any(|c| c == "memory") {
                return Some((dir, Version::V2));
            }
        }
    }
    None
}

impl MemoryCgroup {
    /// Creates the zygote's sandbox cgroup. `Err` when the machine offers no writable one.
    pub(crate) fn create() -> io::Result<Self> {
        let (parent, version) = own_memory_cgroup()
            .ok_or_else(|| io::Error::other("no memory cgroup controller for this process"))?;
        remove_stale(&parent);
        let dir = parent.join(format!("zeroboot-{}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let (limit_name, events_name) = match version {
            Version::V1 => ("memory.limit_in_bytes", "memory.oom_control"),
            Version::V2 => ("memory.max", "memory.events"),
        };
        let limit_file = OpenOptions::new().write(true).open(dir.join(limit_name))?;
        let events_file = File::open(dir.join(events_name))?;
        if version == Version::V2 {
            // Without swap a limit is a limit: swapping a sandbox out would only slow it.
            let _ = fs::write(dir.join("memory.swap.max"), "0");
        }
        let oom_kills = read_oom_kills(&events_file);
        let cg = Self {
            dir,
            parent,
            version,
            limit_file,
            events_file,
            limit: None,
            written: false,
            oom_kills,
        };
        move_self_to(&cg.dir)?;
        Ok(cg)
    }

    /// Sets the limit for the next child, `None` for none (written only when it changes).
    pub(crate) fn set_limit(&mut self, bytes: Option<u64>) -> io::Result<()> {
        if self.limit == bytes && self.written {
            return Ok(());
        }
        let value = match (self.version, bytes) {
            (_, Some(b)) => b.to_string(),
            (Version::V1, None) => "-1".to_string(),
            (Version::V2, None) => "max".to_string(),
        };
        self.limit_file.write_at(value.as_bytes(), 0)?;
        self.limit = bytes;
        self.written = true;
        Ok(())
    }

    /// The limit last set.
    pub(crate) fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Whether the kernel's OOM killer has killed a process in the cgroup since the last call.
    pub(crate) fn oom_killed_since_last(&mut self) -> bool {
        let now = read_oom_kills(&self.events_file);
        let killed = now > self.oom_kills;
        self.oom_kills = now;
        killed
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Leave, then remove it (this succeeds once the last child is reaped; a leftover
        // empty cgroup is removed by the next zygote's `remove_stale`).
        let _ = move_self_to(&self.parent);
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Moves this process into the cgroup directory `dir`.
fn move_self_to(dir: &Path) -> io::Result<()> {
    let mut procs = OpenOptions::new().write(true).open(dir.join("cgroup.procs"))?;
    procs.write_all(std::process::id().to_string().as_bytes())
}

/// Removes `zeroboot-<pid>` cgroups left by zygotes that no longer run (rmdir fails on any
/// cgroup that still has processes, so a live one is never touched).
fn remove_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("zeroboot-")) else { continue };
        if !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir(e.path());
        }
    }
}

fn read_oom_kills(events: &File) -> u64 {
    crate::sys::read_proc_file(events)
        .ok()
        .and_then(|bytes| {
            String::from_utf8_lossy(&bytes)
                .lines()
                .find_map(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse().ok()))
        })
        .unwrap_or(0)
}
