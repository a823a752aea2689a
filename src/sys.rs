//! Every raw system call zeroboot-wasm makes, each behind a small safe (or documented `unsafe`)
//! wrapper. This is the single module to audit for `unsafe` OS interaction.
//!
//! Functions marked *async-signal-safe* may be called in a forked child before anything else
//! has been set up; since the zygote is single-threaded when it forks (checked in
//! [`crate::zygote`]), the child may also allocate afterwards, but these helpers never need to.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Turns a libc return value into `io::Result`, reading `errno` on `-1`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// The result of [`fork`], seen from each side.
pub enum Fork {
    /// We are the parent; the child has this pid.
    Parent(libc::pid_t),
    /// We are the new child.
    Child,
}

/// `fork(2)`.
///
/// # Safety
/// The calling process must be single-threaded: in the child only the calling thread exists,
/// and any lock another thread held would stay locked forever. The caller checks
/// [`thread_count`] first.
pub unsafe fn fork() -> io::Result<Fork> {
    // SAFETY: fork has no memory-safety preconditions of its own; the single-threadedness the
    // child relies on is this function's documented precondition.
    match check(unsafe { libc::fork() })? {
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid)),
    }
}

/// Number of threads in this process, from `/proc/self/stat` (field 20).
pub fn thread_count() -> io::Result<usize> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) may contain spaces and parentheses: fields resume after the
    // last ')'. Field 3 is the first one after it, so num_threads (field 20) is the 18th.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("malformed /proc/self/stat"))?;
    rest.split_whitespace()
        .nth(17)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::other("malformed /proc/self/stat"))
}

/// Number of memory mappings of this process (lines of `/proc/self/maps`).
pub fn mapping_count() -> io::Result<usize> {
    Ok(std::fs::read("/proc/self/maps")?.iter().filter(|&&b| b == b'\n').count())
}

/// `pipe2(O_CLOEXEC)`: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: on success both descriptors are new, open, and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Duplicates `fd` to the lowest free descriptor at or above `min`, without close-on-exec.
/// Async-signal-safe.
pub fn dup_at_least(fd: RawFd, min: RawFd) -> io::Result<RawFd> {
    // SAFETY: F_DUPFD only creates a new descriptor; an invalid `fd` yields EBADF.
    check(unsafe { libc::fcntl(fd, libc::F_DUPFD, min) })
}

/// `dup2(from, to)`: makes `to` refer to `from`'s open file. Async-signal-safe.
pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 only manipulates the descriptor table; `to` is closed first if open, which
    // the child's fd layout relies on.
    check(unsafe { libc::dup2(from, to) }).map(drop)
}

/// Closes every descriptor numbered `first` or above. Async-signal-safe.
pub fn close_from(first: RawFd) -> io::Result<()> {
    // SAFETY: close_range takes plain integers; it closes descriptors this (child) process
    // owns and that nothing in it will use again: the caller has moved the ones it keeps below
    // `first`.
    let ret = unsafe {
        libc::syscall(libc::SYS_close_range, first as libc::c_uint, libc::c_uint::MAX, 0)
    };
    if ret == 0 {
        return Ok(());
    }
    // Kernels before 5.9 lack close_range: close one by one up to the descriptor limit.
    // SAFETY: sysconf has no preconditions.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    let max = if max <= 0 { 65536 } else { max.min(1 << 20) as RawFd };
    for fd in first..max {
        // SAFETY: as above; EBADF for descriptors that are not open is expected and ignored.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// Asks the kernel to SIGKILL us when the thread that forked us exits, then checks the parent
/// is still `expected_parent` (it may have died before the request took effect).
/// Async-signal-safe.
pub fn die_with_parent(expected_parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and affects only this process.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) })?;
    // SAFETY: getppid has no preconditions and cannot fail.
    if unsafe { libc::getppid() } != expected_parent {
        return Err(io::Error::other("parent exited before the sandbox started"));
    }
    Ok(())
}

/// Unblocks every signal in this thread's mask. Async-signal-safe.
pub fn unblock_all_signals() -> io::Result<()> {
    // SAFETY: `set` is a local sigset_t initialised by sigemptyset before use; the old mask is
    // not requested (null).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        check(libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()))?;
    }
    Ok(())
}

/// Empties the process environment (`clearenv(3)`).
///
/// # Safety
/// No other thread may read or write the environment concurrently; the forked child is
/// single-threaded.
pub unsafe fn clear_environment() {
    // SAFETY: single-threaded per this function's contract, so nothing races on `environ`.
    unsafe { libc::clearenv() };
}

/// Fills `buf` from the kernel's CSPRNG (`getrandom(2)`), retrying on EINTR and short reads.
pub fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is a valid writable region of exactly `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        filled += n as usize;
    }
    Ok(())
}

/// `write(2)` all of `buf` to `fd`, retrying on EINTR and short writes. Async-signal-safe.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid readable region of `buf.len()` bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// `read(2)` into `buf`, retrying on EINTR; `Ok(0)` is end of file.
pub fn read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a valid writable region of `buf.len()` bytes; `fd` is open.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// `close(2)` a raw descriptor we own and no longer use. Async-signal-safe.
pub fn close(fd: RawFd) {
    // SAFETY: the caller passes a descriptor it owns and will not use again; errors on close
    // of a descriptor we only read from or wrote to are not actionable.
    unsafe { libc::close(fd) };
}

/// Ends this process at once: no atexit handlers, no stdio flushing, no destructors — the right
/// exit for a forked child, whose inherited buffers and handles belong to the zygote.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Outcome of waiting for a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// `_exit(code)`.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// `wait4(pid, 0)`, retrying on EINTR: the exit status and the child's peak resident set in
/// bytes.
pub fn wait(pid: libc::pid_t) -> io::Result<(ExitStatus, u64)> {
    let mut status = 0;
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are valid for the kernel to fill.
        let ret = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if ret == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let peak = (usage.ru_maxrss.max(0) as u64) * 1024;
    let st = if libc::WIFEXITED(status) {
        ExitStatus::Code(libc::WEXITSTATUS(status))
    } else {
        ExitStatus::Signal(libc::WTERMSIG(status))
    };
    Ok((st, peak))
}

/// Sends SIGKILL to `pid`. ESRCH (already gone) is not an error.
pub fn kill_hard(pid: libc::pid_t) {
    // SAFETY: kill takes plain integers; `pid` is our own unreaped child, so it cannot have
    // been recycled for an unrelated process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Blocks until one of `fds` is readable or `timeout_ms` passes (-1: no timeout). Returns the
/// `revents` of each, in order. EINTR is reported as "nothing ready".
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<libc::c_short>> {
    let mut pfds: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structures.
    let ret = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if ret < 0 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
        return Ok(vec![0; fds.len()]);
    }
    Ok(pfds.iter().map(|p| p.revents).collect())
}

/// Name of a signal number, for messages (`SIGKILL`, `SIGSYS`, …).
pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGALRM => "SIGALRM".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGFPE => "SIGFPE".into(),
        libc::SIGILL => "SIGILL".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGPIPE => "SIGPIPE".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGSYS => "SIGSYS".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGXCPU => "SIGXCPU".into(),
        libc::SIGXFSZ => "SIGXFSZ".into(),
        other => format!("signal {other}"),
    }
}

/// Wraps descriptor `fd` in a `File` that owns it.
///
/// # Safety
/// `fd` must be open and owned by nobody else: the `File` closes it when dropped.
pub unsafe fn file_from_fd(fd: RawFd) -> std::fs::File {
    // SAFETY: ownership of an open descriptor is transferred, per this function's contract.
    unsafe { std::fs::File::from_raw_fd(fd) }
}

/// This process's id.
pub fn getpid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() }
}

/// Installs `handler` for SIGALRM (with `SA_RESTART`, so interrupted host calls resume).
///
/// # Safety
/// `handler` must be async-signal-safe.
pub unsafe fn on_alarm(handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    // SAFETY: `sa` is fully initialised (zeroed, then the handler and an empty mask set);
    // the handler's signal-safety is this function's contract.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        check(libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()))?;
    }
    Ok(())
}

/// Arms a one-shot real-time timer: SIGALRM after `after`, then every `every` (zero: once).
pub fn arm_alarm(after: std::time::Duration, every: std::time::Duration) -> io::Result<()> {
    let tv = |d: std::time::Duration| libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    // A zero `it_value` would disarm the timer: fire after at least 1 µs.
    let after = after.max(std::time::Duration::from_micros(1));
    let it = libc::itimerval { it_interval: tv(every), it_value: tv(after) };
    // SAFETY: `it` is a valid itimerval; the old value is not requested.
    check(unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) }).map(drop)
}
