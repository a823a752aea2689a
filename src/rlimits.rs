//! Child-side resource limits, where they mean something for a Wasm sandbox.
//!
//! `RLIMIT_AS` is deliberately absent: Wasmtime reserves gigabytes of address space per
//! linear memory (guard regions), so an address-space limit would break guests long before it
//! bounded anything. Memory is bounded by the store's limiter and the memory cgroup.

use crate::sys;
use std::io;
use std::time::Duration;

/// Default cap on the size of any file a guest writes in a granted directory: 64 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 64 << 20;
/// Open files a sandbox may hold (its stdio, report pipe and the guest's preopens and files).
pub const MAX_OPEN_FILES: u64 = 128;

/// The limits applied to a child.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rlimits {
    /// Largest file the guest may write (`RLIMIT_FSIZE`); writing past it fails with EFBIG.
    pub max_file_size: u64,
    /// CPU-seconds backstop (`RLIMIT_CPU`), for a sandbox that somehow escapes its deadline.
    pub cpu_seconds: u64,
}

/// CPU-seconds backstop for a task with this deadline: the deadline plus two seconds (ten
/// minutes without a deadline).
pub(crate) fn cpu_backstop(timeout: Option<Duration>) -> u64 {
    timeout.map_or(600, |t| t.as_secs().saturating_add(2))
}

impl Rlimits {
    /// Limits for a task with this deadline (see [`cpu_backstop`]).
    pub(crate) fn for_task(max_file_size: u64, timeout: Option<Duration>) -> Self {
        Self { max_file_size, cpu_seconds: cpu_backstop(timeout) }
    }

    /// Applies them to the calling (child) process.
    pub(crate) fn apply(&self) -> io::Result<()> {
        sys::setrlimit(libc::RLIMIT_CORE, 0, 0)?;
        sys::setrlimit(libc::RLIMIT_NOFILE, MAX_OPEN_FILES, MAX_OPEN_FILES)?;
        sys::setrlimit(libc::RLIMIT_FSIZE, self.max_file_size, self.max_file_size)?;
        // Past the file-size limit, write(2) fails with EFBIG instead of killing us.
        sys::ignore_signal(libc::SIGXFSZ)?;
        // SIGXCPU at the soft limit (reported as `killed`), SIGKILL a second later.
        sys::setrlimit(libc::RLIMIT_CPU, self.cpu_seconds, self.cpu_seconds.saturating_add(1))
    }
}

impl Rlimits {
    /// In a pre-forked sandbox (whose limits are `self`), once its task has arrived: lowers
    /// the CPU backstop from the pool's (the largest any task may need) to this task's — CPU
    /// time already used, rounded up, plus [`cpu_backstop`] — soft and hard limit alike, so it
    /// cannot be raised again; never above the pool's. Runs under seccomp, which allows
    /// exactly this call.
    pub(crate) fn lower_cpu_for_task(&self, timeout: Option<Duration>) -> io::Result<()> {
        let used = sys::cpu_time_used()?;
        let used_secs = used.as_secs().saturating_add(u64::from(used.subsec_nanos() > 0));
        let soft = used_secs.saturating_add(cpu_backstop(timeout)).min(self.cpu_seconds);
        sys::lower_cpu_limit(soft, soft.saturating_add(1))
    }
}
