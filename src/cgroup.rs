//! Memory cgroups for sandboxes: each sandbox gets a memory cgroup of its own, which bounds
//! everything it allocates on the host side (its copy-on-write copies, Wasmtime's and WASI's
//! host allocations, files it writes to a tmpfs), not only the guest's linear memory, which
//! the store's limiter already caps.
//!
//! The zygote creates `zeroboot-<pid>` below its own memory cgroup (v2, or v1's `memory`
//! hierarchy) and never joins it: it stays where it was started, so a sandbox's memory use can
//! never make the OOM killer pick the zygote, and what a sandbox leaves charged (tmpfs pages)
//! can never push the zygote over a limit. Each sandbox gets `zeroboot-<pid>/s<n>`, with its
//! task's limit, and is moved in by the zygote right after the fork, while it is still setting
//! itself up (before it can run guest code: it runs nothing before its task arrives, and the
//! task is handed over only after the move). A pre-forked sandbox is moved when it is forked,
//! off any task's path; only its limit is written when its task arrives.
//!
//! Empty cgroups are made ahead of time. Once its sandbox is reaped, a cgroup is kept for a
//! later sandbox only if it is empty, saw no OOM kill, and has no more than
//! [`LEFTOVER_PER_CPU`] per CPU still charged. That much is what the kernel holds for a
//! moment after a reap on any cgroup (its per-CPU charge caches, kernel objects whose freeing
//! waits for an RCU grace period; seen here: 4–750 kB after a hello task, varying, never
//! growing with reuse), and it drains the caches before it would OOM-kill for a limit.
//! Anything more (a tmpfs file the task wrote to a grant, page cache it faulted in) is never
//! carried to a later task: that cgroup is removed, and its charges move to the parent, which
//! has no limit. Making and removing a cgroup cost the zygote ~110 µs of kernel time per
//! sandbox (mkdir, five opens, rmdir), plus the kernel's deferred teardown in its own
//! workers; keeping one costs three reads. On-demand throughput through the fork server went
//! from 1316–1485 to 1379–1684 tasks/s (hello, 2 in flight, four pairs alternating).
//!
//! Moving a process into a cgroup takes the kernel's cgroup thread-group lock (tens of µs at
//! p50, milliseconds at p99 on a cgroup-v1 host under load), which is why the move overlaps
//! the child's own set-up and why pool sandboxes are moved ahead of time.
//!
//! When no writable memory cgroup exists (no cgroupfs, no permission), sandboxes run without
//! this bound, and [`crate::ZygoteStats::memory_cgroup`] says so. Where cgroups exist, a limit
//! that cannot be applied is an error for that task, never a layer silently dropped.

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Which cgroup interface the directory speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

impl Version {
    fn limit_file(self) -> &'static str {
        match self {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        }
    }

    fn events_file(self) -> &'static str {
        match self {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        }
    }

    fn usage_file(self) -> &'static str {
        match self {
            Version::V1 => "memory.usage_in_bytes",
            Version::V2 => "memory.current",
        }
    }
}

/// Spare empty cgroups kept ready, so a sandbox forked on demand does not wait for a mkdir.
const SPARES: usize = 4;

/// Spare cgroups kept at most, counting those kept for reuse after their sandbox.
const MAX_SPARES: usize = 2 * SPARES;

/// Bytes a reaped sandbox's cgroup may still have charged and be reused: per CPU, the
/// kernel's charge batch (64 pages), which it keeps cached after a charge.
const LEFTOVER_PER_CPU: u64 = 64 * 4096;

/// The zygote's tree of sandbox cgroups.
#[derive(Debug)]
pub(crate) struct SandboxCgroups {
    /// `zeroboot-<pid>`, opened while the host's /sys was still visible.
    root: Dir,
    /// The zygote's own memory cgroup, to remove `root` from at the end.
    parent: Dir,
    root_name: String,
    version: Version,
    spare: Vec<Slot>,
    next: u64,
    /// A reaped sandbox's cgroup is reused while it holds no more than this.
    leftover: u64,
    /// Cgroups made, and cgroups reused after their sandbox.
    made: u64,
    reused: u64,
}

/// One sandbox's cgroup.
#[derive(Debug)]
pub(crate) struct Slot {
    name: String,
    version: Version,
    limit_file: File,
    events_file: File,
    usage_file: File,
    /// `cgroup.procs`, read and write: a process is moved in by writing its pid, and the
    /// cgroup is reused only when reading it finds no process.
    procs_file: File,
    limit: Option<u64>,
    written: bool,
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

impl SandboxCgroups {
    /// Creates the zygote's sandbox cgroup tree. `Err` when the machine offers no writable
    /// memory cgroup. Must be called before the zygote leaves the host's mount namespace.
    pub(crate) fn create() -> io::Result<Self> {
        let (parent_path, version) = own_memory_cgroup()
            .ok_or_else(|| io::Error::other("no memory cgroup controller for this process"))?;
        let parent = Dir::open_ambient_dir(&parent_path, ambient_authority())?;
        remove_stale(&parent);
        let root_name = format!("zeroboot-{}", std::process::id());
        match parent.create_dir(&root_name) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let root = parent.open_dir(&root_name)?;
        if version == Version::V2 {
            // Let the sandboxes' cgroups have memory limits of their own.
            let mut control =
                root.open_with("cgroup.subtree_control", OpenOptions::new().write(true))?;
            control.write_all(b"+memory")?;
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let mut cgroups = Self {
            root,
            parent,
            root_name,
            version,
            spare: Vec::new(),
            next: 0,
            leftover: LEFTOVER_PER_CPU * cpus,
            made: 0,
            reused: 0,
        };
        // Prove now that a sandbox cgroup can be made and configured, so that a machine where
        // it cannot is found out at start-up rather than at the first task.
        let probe = cgroups.make_slot()?;
        cgroups.spare.push(probe);
        Ok(cgroups)
    }

    fn make_slot(&mut self) -> io::Result<Slot> {
        let name = format!("s{}", self.next);
        self.next += 1;
        self.root.create_dir(&name)?;
        let open = |file: &str, read: bool, write: bool| -> io::Result<File> {
            let mut o = OpenOptions::new();
            o.read(read).write(write);
            Ok(self.root.open_with(format!("{name}/{file}"), &o)?.into_std())
        };
        let limit_file = open(self.version.limit_file(), false, true)?;
        let events_file = open(self.version.events_file(), true, false)?;
        let usage_file = open(self.version.usage_file(), true, false)?;
        let procs_file = open("cgroup.procs", true, true)?;
        if self.version == Version::V2 {
            // Without swap a limit is a limit: swapping a sandbox out would only slow it.
            let _ = open("memory.swap.max", false, true).and_then(|mut f| f.write_all(b"0"));
        }
        self.made += 1;
        Ok(Slot {
            name,
            version: self.version,
            limit_file,
            events_file,
            usage_file,
            procs_file,
            limit: None,
            written: false,
        })
    }

    /// An empty cgroup with this limit (bytes; `None`: no limit) for the next sandbox.
    pub(crate) fn take(&mut self, limit: Option<u64>) -> io::Result<Slot> {
        let mut slot = match self.spare.pop() {
            Some(s) => s,
            None => self.make_slot()?,
        };
        if let Err(e) = slot.set_limit(limit) {
            self.remove(slot);
            return Err(e);
        }
        Ok(slot)
    }

    /// Whether fewer spare cgroups are ready than it keeps.
    pub(crate) fn short(&self) -> bool {
        self.spare.len() < SPARES
    }

    /// Makes spare empty cgroups, off any task's path; stops quietly at the first failure.
    pub(crate) fn top_up(&mut self) {
        while self.short() && self.top_up_one() {}
    }

    /// Makes one spare empty cgroup; `false` if it could not.
    pub(crate) fn top_up_one(&mut self) -> bool {
        match self.make_slot() {
            Ok(s) => {
                self.spare.push(s);
                true
            }
            Err(_) => false,
        }
    }

    /// Keeps a reaped sandbox's cgroup as a spare if it is clean (see the module's notes),
    /// else removes it (what it left charged moves to the parent, which has no limit).
    pub(crate) fn release(&mut self, slot: Slot) {
        if self.spare.len() < MAX_SPARES && slot.clean(self.leftover) {
            self.reused += 1;
            self.spare.push(slot);
            return;
        }
        self.remove(slot);
    }

    fn remove(&mut self, slot: Slot) {
        let Slot { name, limit_file, events_file, usage_file, procs_file, .. } = slot;
        drop((limit_file, events_file, usage_file, procs_file));
        let _ = self.root.remove_dir(&name);
    }

    /// Cgroups made so far, and how many times one was kept for the next sandbox.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.made, self.reused)
    }
}

impl Drop for SandboxCgroups {
    fn drop(&mut self) {
        for slot in std::mem::take(&mut self.spare) {
            self.remove(slot);
        }
        // Succeeds once every sandbox is gone; a leftover is removed by the next zygote.
        let _ = self.parent.remove_dir(&self.root_name);
    }
}

impl Slot {
    /// Sets the limit (written only when it changes).
    pub(crate) fn set_limit(&mut self, bytes: Option<u64>) -> io::Result<()> {
        if self.limit == bytes && self.written {
            return Ok(());
        }
        let value = match (bytes, self.version) {
            (Some(b), _) => b.to_string(),
            (None, Version::V1) => "-1".to_string(),
            (None, Version::V2) => "max".to_string(),
        };
        use std::os::unix::fs::FileExt;
        // The kernel may reclaim to meet a lower limit, and gives up with EINTR when a signal
        // arrives meanwhile (a SIGCHLD, a timer): try again.
        retry_interrupted(|| self.limit_file.write_at(value.as_bytes(), 0))?;
        self.limit = bytes;
        self.written = true;
        Ok(())
    }

    /// The limit in force.
    pub(crate) fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Moves process `pid` (a sandbox just forked) into this cgroup.
    pub(crate) fn attach(&mut self, pid: libc::pid_t) -> io::Result<()> {
        let pid = pid.to_string();
        retry_interrupted(|| self.procs_file.write(pid.as_bytes())).map(drop)
    }

    /// Whether the cgroup can serve another sandbox as if new: no process in it, no OOM kill
    /// ever, and no more than `leftover` bytes charged.
    fn clean(&self, leftover: u64) -> bool {
        read_all(&self.procs_file).trim().is_empty()
            && !self.oom_killed()
            && read_all(&self.usage_file).trim().parse::<u64>().is_ok_and(|b| b <= leftover)
    }

    /// Whether the kernel's OOM killer has killed a process in this cgroup.
    pub(crate) fn oom_killed(&self) -> bool {
        read_all(&self.events_file)
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse::<u64>().ok()))
            .is_some_and(|n| n > 0)
    }
}

/// Runs `op` again while it fails with EINTR.
fn retry_interrupted<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn read_all(file: &File) -> String {
    let mut f = file;
    let mut text = String::new();
    if f.rewind().is_ok() {
        let _ = f.read_to_string(&mut text);
    }
    text
}

/// Removes `zeroboot-<pid>` trees left by zygotes that no longer run (rmdir fails on any
/// cgroup that still has processes, so a live one is never touched).
fn remove_stale(parent: &Dir) {
    let Ok(entries) = parent.entries() else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = name.strip_prefix("zeroboot-") else { continue };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        let _ = remove_tree(parent, name);
    }
}

/// Removes a `zeroboot-<pid>` tree and the sandbox cgroups in it. `Err` (`EBUSY`) while a
/// process is still in one of them.
fn remove_tree(parent: &Dir, name: &str) -> io::Result<()> {
    if let Ok(tree) = parent.open_dir(name)
        && let Ok(children) = tree.entries()
    {
        for c in children.flatten() {
            if c.file_type().is_ok_and(|t| t.is_dir()) {
                match tree.remove_dir(c.file_name()) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
    }
    match parent.remove_dir(name) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// For the host that supervised zygote `pid`, once it has reaped it: removes the sandbox
/// cgroups a zygote killed by a signal (so unable to remove them itself) left under this
/// process's memory cgroup, which is where the zygote made them. `Ok` when nothing is left
/// (or there was nothing); `Err` while one of its sandboxes is still exiting.
pub(crate) fn remove_dead_zygote_tree(pid: u32) -> io::Result<()> {
    let Some((parent_path, _)) = own_memory_cgroup() else { return Ok(()) };
    let name = format!("zeroboot-{pid}");
    if !parent_path.join(&name).exists() {
        return Ok(());
    }
    if Path::new("/proc").join(pid.to_string()).exists() {
        // Not reaped yet, or its pid already reused: the tree may be a live zygote's.
        return Err(io::Error::from_raw_os_error(libc::EBUSY));
    }
    let parent = Dir::open_ambient_dir(&parent_path, ambient_authority())?;
    remove_tree(&parent, &name)
}
