//! Every raw system call zeroboot-wasm makes, each behind a small safe (or documented `unsafe`)
//! wrapper. This is the single module to audit for `unsafe` OS interaction.
//!
//! Functions marked *async-signal-safe* may be called in a forked child before anything else
//! has been set up; since the zygote is single-threaded when it forks (checked in
//! `crate::zygote`), the child may also allocate afterwards, but these helpers never need to.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

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
/// The calling process must be single-threaded — in the child only the calling thread exists,
/// and any lock another thread held would stay locked forever (the zygote checks its thread
/// count first) — or the child must call only async-signal-safe functions until it exits.
pub unsafe fn fork() -> io::Result<Fork> {
    // SAFETY: fork has no memory-safety preconditions of its own; the single-threadedness the
    // child relies on is this function's documented precondition.
    match check(unsafe { libc::fork() })? {
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid)),
    }
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

/// Whether the write ends of the pipe whose read end is `fd` are all closed (end of file is
/// ready): a zero-timeout `poll`. Async-signal-safe.
pub fn hung_up(fd: RawFd) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: `p` is one valid pollfd; a zero timeout never blocks.
    let ret = unsafe { libc::poll(&mut p, 1, 0) };
    ret > 0 && p.revents & (libc::POLLHUP | libc::POLLIN) != 0
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

/// Like [`write_all`], but waits for `fd` to accept more when it is non-blocking and full
/// (EAGAIN), as the caller's own stdout may be.
pub fn write_all_waiting(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid readable region of `buf.len()` bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    let mut p = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
                    // SAFETY: `p` is one valid pollfd; its result is only a wake-up (errors
                    // resurface from the next write).
                    unsafe { libc::poll(&mut p, 1, -1) };
                    continue;
                }
                _ => return Err(err),
            }
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// `read(2)` into `buf`, retrying on EINTR; `Ok(0)` is end of file.
pub fn read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    read_raw(fd.as_raw_fd(), buf)
}

/// `read(2)` from descriptor number `fd` (a forked child's fixed fds), retrying on EINTR;
/// `Ok(0)` is end of file. Reading cannot close or redirect anyone's descriptor, so a raw
/// number is enough; a descriptor that is not open gives EBADF.
pub fn read_raw(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a valid writable region of `buf.len()` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if let Ok(n) = usize::try_from(n) {
            return Ok(n);
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
    wait4(pid, 0).map(|r| r.unwrap_or((ExitStatus::Code(0), 0)))
}

/// `wait4(pid, WNOHANG)`: `None` while the child is still running (or tearing down).
pub fn try_wait(pid: libc::pid_t) -> io::Result<Option<(ExitStatus, u64)>> {
    wait4(pid, libc::WNOHANG)
}

/// This process's own resource usage (`getrusage(RUSAGE_SELF)`).
fn own_usage() -> io::Result<libc::rusage> {
    // SAFETY: rusage is plain data; all-zero is a valid value for the kernel to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is valid for writing.
    check(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) })?;
    Ok(usage)
}

/// `ru_maxrss` (KiB) in bytes.
fn maxrss_bytes(usage: &libc::rusage) -> u64 {
    u64::try_from(usage.ru_maxrss).unwrap_or(0).saturating_mul(1024)
}

/// This process's own peak resident set, in bytes (`getrusage`).
pub fn peak_rss() -> u64 {
    own_usage().map_or(0, |u| maxrss_bytes(&u))
}

/// CPU time this process has used, user plus system — what `RLIMIT_CPU` counts.
pub fn cpu_time_used() -> io::Result<std::time::Duration> {
    let usage = own_usage()?;
    let tv = |t: libc::timeval| {
        let secs = u64::try_from(t.tv_sec).unwrap_or(0);
        let micros = u64::try_from(t.tv_usec).unwrap_or(0);
        std::time::Duration::from_secs(secs)
            .saturating_add(std::time::Duration::from_micros(micros))
    };
    Ok(tv(usage.ru_utime).saturating_add(tv(usage.ru_stime)))
}

fn wait4(pid: libc::pid_t, flags: libc::c_int) -> io::Result<Option<(ExitStatus, u64)>> {
    let mut status = 0;
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are valid for the kernel to fill.
        let ret = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
        if ret == pid {
            break;
        }
        if ret == 0 {
            return Ok(None);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let peak = maxrss_bytes(&usage);
    let st = if libc::WIFEXITED(status) {
        ExitStatus::Code(libc::WEXITSTATUS(status))
    } else {
        ExitStatus::Signal(libc::WTERMSIG(status))
    };
    Ok(Some((st, peak)))
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

/// A signal's disposition as it was before we changed it, to put back with
/// [`restore_alarm`].
pub struct SavedAction(libc::sigaction);

/// Installs `handler` for SIGALRM (with `SA_RESTART`, so interrupted host calls resume) and
/// returns the disposition it replaced.
///
/// # Safety
/// `handler` must be async-signal-safe.
pub unsafe fn on_alarm(handler: extern "C" fn(libc::c_int)) -> io::Result<SavedAction> {
    // SAFETY: `sa` is fully initialised (zeroed, then the handler and an empty mask set) and
    // `old` is plain data for the kernel to fill; the handler's signal-safety is this
    // function's contract.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        let mut old: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        check(libc::sigaction(libc::SIGALRM, &sa, &mut old))?;
        Ok(SavedAction(old))
    }
}

/// Puts back the SIGALRM disposition [`on_alarm`] replaced.
pub fn restore_alarm(saved: &SavedAction) -> io::Result<()> {
    // SAFETY: `saved` holds a disposition the kernel itself returned for SIGALRM, so it is
    // valid to install again; the old value is not requested.
    check(unsafe { libc::sigaction(libc::SIGALRM, &saved.0, std::ptr::null_mut()) }).map(drop)
}

/// Stops the real-time timer [`arm_alarm`] started (no SIGALRM after this returns).
pub fn disarm_alarm() -> io::Result<()> {
    let zero = libc::timeval { tv_sec: 0, tv_usec: 0 };
    let it = libc::itimerval { it_interval: zero, it_value: zero };
    // SAFETY: `it` is a valid itimerval; an all-zero value disarms the timer.
    check(unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) }).map(drop)
}

/// Arms a one-shot real-time timer: SIGALRM after `after`, then every `every` (zero: once).
pub fn arm_alarm(after: std::time::Duration, every: std::time::Duration) -> io::Result<()> {
    let tv = |d: std::time::Duration| -> io::Result<libc::timeval> {
        Ok(libc::timeval {
            tv_sec: libc::time_t::try_from(d.as_secs())
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
            // Below 1,000,000: always fits.
            tv_usec: libc::suseconds_t::from(d.subsec_micros()),
        })
    };
    // A zero `it_value` would disarm the timer: fire after at least 1 µs.
    let after = after.max(std::time::Duration::from_micros(1));
    let it = libc::itimerval { it_interval: tv(every)?, it_value: tv(after)? };
    // SAFETY: `it` is a valid itimerval; the old value is not requested.
    check(unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) }).map(drop)
}

/// Reads a whole `/proc` file through a descriptor opened earlier (so it keeps working after
/// the zygote has left the host's mount namespace), from offset 0.
pub fn read_proc_file(file: &std::fs::File) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut out = Vec::with_capacity(4096);
    let mut buf = [0u8; 4096];
    loop {
        let n = file.read_at(&mut buf, out.len() as u64)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Parses the thread count (field 20) out of the text of `/proc/<pid>/stat`.
pub fn threads_in_stat(stat: &[u8]) -> io::Result<usize> {
    let stat = String::from_utf8_lossy(stat);
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("malformed /proc/self/stat"))?;
    rest.split_whitespace()
        .nth(17)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::other("malformed /proc/self/stat"))
}

fn cstr(s: &str) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// `unshare(flags)`.
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes a flag word and changes only this process's namespaces.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

/// `mount(2)`; `None` arguments are passed as null.
pub fn mount(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(cstr).transpose()?;
    let target = cstr(target)?;
    let fstype = fstype.map(cstr).transpose()?;
    let data = data.map(cstr).transpose()?;
    let ptr = |c: &Option<std::ffi::CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either null or a NUL-terminated string that outlives the call.
    check(unsafe {
        libc::mount(ptr(&source), target.as_ptr(), ptr(&fstype), flags, ptr(&data).cast())
    })
    .map(drop)
}

/// `pivot_root(new_root, put_old)`.
pub fn pivot_root(new_root: &str, put_old: &str) -> io::Result<()> {
    let (new_root, put_old) = (cstr(new_root)?, cstr(put_old)?);
    // SAFETY: both arguments are NUL-terminated strings that outlive the call.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) };
    check(ret as libc::c_int).map(drop)
}

/// `umount2(target, flags)`.
pub fn umount2(target: &str, flags: libc::c_int) -> io::Result<()> {
    let target = cstr(target)?;
    // SAFETY: `target` is a NUL-terminated string that outlives the call.
    check(unsafe { libc::umount2(target.as_ptr(), flags) }).map(drop)
}

/// The mount flags (`ST_*` from statvfs) of the filesystem holding `path`.
pub fn mount_flags(path: &str) -> io::Result<libc::c_ulong> {
    let path = cstr(path)?;
    // SAFETY: statvfs is plain data; all-zero is a valid value for the kernel to overwrite.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated; `st` is valid for writing.
    check(unsafe { libc::statvfs(path.as_ptr(), &mut st) })?;
    Ok(st.f_flag)
}

/// `sethostname(name)` (in a UTS namespace of our own).
pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// `open_tree(dir, "", OPEN_TREE_CLONE | AT_RECURSIVE | AT_EMPTY_PATH | OPEN_TREE_CLOEXEC)`:
/// a detached copy of the mount tree at `dir` (Linux 5.2), taken now: mounts made later on top
/// of that place are not in it.
pub fn clone_mount_tree(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | libc::AT_RECURSIVE as libc::c_uint
        | libc::AT_EMPTY_PATH as libc::c_uint;
    // SAFETY: `dir` is an open descriptor for the call's duration and the path is a static
    // empty C string; the kernel returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, dir.as_raw_fd(), c"".as_ptr(), flags) };
    let fd = check(fd as libc::c_int)?;
    // SAFETY: on success `fd` is a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A fresh tmpfs of at most `size` bytes as a detached mount (`fsopen`, `fsconfig`,
/// `fsmount`; Linux 5.2), not attached anywhere: no path reaches it, only the returned
/// descriptor (and `..` at its root stays at its root). Mounted `nosuid,nodev,noexec`, mode
/// 0700. Needs `CAP_SYS_ADMIN` in the user namespace owning the caller's mount namespace.
pub fn detached_tmpfs(size: u64) -> io::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
    const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
    const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x8;
    // SAFETY: a static NUL-terminated file-system name; the kernel returns a new descriptor
    // or -1.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), FSOPEN_CLOEXEC) };
    let fs = check(fs as libc::c_int)?;
    // SAFETY: on success `fs` is a new descriptor owned by nobody else.
    let fs = unsafe { OwnedFd::from_raw_fd(fs) };
    let size = cstr(&size.to_string())?;
    for (key, value) in [(c"size", size.as_c_str()), (c"mode", c"0700")] {
        // SAFETY: `fs` is open; key and value are NUL-terminated strings that outlive the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        };
        check(ret as libc::c_int)?;
    }
    // SAFETY: `fs` is open; the command takes no key or value (null pointers, 0).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    check(ret as libc::c_int)?;
    let attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    // SAFETY: `fs` is open and its file system created; the kernel returns a new descriptor
    // for the detached mount or -1.
    let mnt = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) };
    let mnt = check(mnt as libc::c_int)?;
    // SAFETY: on success `mnt` is a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(mnt) })
}

/// `fchdir(dir)`: makes `dir` the calling process's working directory.
pub fn fchdir(dir: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `dir` is an open descriptor for the call's duration.
    check(unsafe { libc::fchdir(dir.as_raw_fd()) }).map(drop)
}

/// `move_mount(tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`: attaches a detached
/// mount tree (from [`clone_mount_tree`]) at `target`.
pub fn attach_mount_tree(tree: BorrowedFd<'_>, target: &str) -> io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let target = cstr(target)?;
    // SAFETY: `tree` is open for the call, both paths are NUL-terminated strings that outlive
    // it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    check(ret as libc::c_int).map(drop)
}

/// `fork()` as a raw `clone(SIGCHLD)`, or with `new_pid_ns` into a new PID namespace
/// (`clone(CLONE_NEWPID | SIGCHLD)`: the child is its namespace's PID 1 and sees no other
/// process).
///
/// The raw system call, not glibc's `fork()`: glibc's wrapper runs its fork handlers and, in
/// the child, `set_robust_list`, which a fork-server zygote's seccomp filter (inherited by the
/// child) does not allow — a sandbox forked through it was killed by SIGSYS before its setup.
///
/// # Safety
/// As for [`fork`]: the calling process must be single-threaded. The raw `clone` skips
/// glibc's fork handlers, which only matter when other threads hold locks.
pub unsafe fn fork_raw(new_pid_ns: bool) -> io::Result<Fork> {
    let pid_ns = if new_pid_ns { libc::CLONE_NEWPID } else { 0 };
    let flags = (pid_ns | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: clone without CLONE_VM and with a null stack behaves like fork: the child gets a
    // copy of this address space and continues here. Single-threadedness is the caller's
    // contract.
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match check(ret as libc::c_int)? {
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid)),
    }
}

/// `setsid()`: a session and process group of our own, detached from the caller's terminal.
pub fn setsid() -> io::Result<()> {
    // SAFETY: setsid has no preconditions.
    check(unsafe { libc::setsid() }).map(drop)
}

/// Empties the bounding set: each capability up to the last the kernel knows that is still in
/// it is dropped. Reading costs the kernel next to nothing, while each drop copies and commits
/// the process's credentials: a set already empty (a fork-server zygote empties its own once,
/// and its sandboxes inherit that) takes no drop at all.
pub fn drop_bounding_set() -> io::Result<()> {
    for cap in 0..=63 {
        // SAFETY: PR_CAPBSET_READ takes a capability number; EINVAL marks the end.
        match unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) } {
            0 => continue,
            1 => {}
            _ => {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINVAL) {
                    break;
                }
                return Err(err);
            }
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Drops every capability: the bounding set ([`drop_bounding_set`]), the ambient set, then
/// effective, permitted and inheritable (capset to zero).
pub fn drop_capabilities() -> io::Result<()> {
    drop_bounding_set()?;
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointers.
    check(unsafe {
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0)
    })?;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header { version: VERSION_3, pid: 0 };
    let data = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: `header` and the two-element `data` array are the layout capset(2) expects for
    // version 3; the kernel only reads them.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    check(ret as libc::c_int).map(drop)
}

/// `PR_SET_NO_NEW_PRIVS`: no execve can ever grant privileges again.
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: this prctl takes integers only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).map(drop)
}

/// `setrlimit(resource, soft, hard)`.
pub fn setrlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: `lim` is a valid rlimit the kernel only reads.
    check(unsafe { libc::setrlimit(resource, &lim) }).map(drop)
}

/// Lowers this process's `RLIMIT_CPU` with `prlimit64(0, RLIMIT_CPU, new, NULL)` — exactly
/// the call the seccomp policy allows a sandbox (see [`crate::seccomp`]), issued directly so
/// the filter does not depend on how the C library implements `setrlimit`. Without
/// `CAP_SYS_RESOURCE` a hard limit can only go down, so the new one is final.
pub fn lower_cpu_limit(soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit64 { rlim_cur: soft, rlim_max: hard };
    // SAFETY: `lim` is a valid rlimit64 the kernel only reads; the old value is not requested
    // (null); pid 0 is the calling process.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0 as libc::pid_t,
            libc::RLIMIT_CPU,
            &lim as *const libc::rlimit64,
            std::ptr::null_mut::<libc::rlimit64>(),
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets `sig` to be ignored.
pub fn ignore_signal(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: SIG_IGN is a valid disposition for any catchable signal.
    if unsafe { libc::signal(sig, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Installs `handler` for SIGSYS with `SA_SIGINFO`, so it sees the number of the system call
/// the seccomp filter refused.
///
/// # Safety
/// `handler` must be async-signal-safe.
pub unsafe fn on_sigsys(
    handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void),
) -> io::Result<()> {
    // SAFETY: `sa` is fully initialised; the handler's signal-safety is the caller's contract.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        check(libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()))?;
    }
    Ok(())
}

/// The system call number in a SIGSYS `siginfo_t` (`si_syscall`).
///
/// # Safety
/// `info` must point to the `siginfo_t` the kernel passed to a SIGSYS handler.
pub unsafe fn sigsys_syscall(info: *const libc::siginfo_t) -> i32 {
    // The SIGSYS member of the union: { void *call_addr; int syscall; unsigned arch; },
    // after the three leading ints and the union's 8-byte alignment: offset 16 + 8.
    const OFFSET: usize = 16 + std::mem::size_of::<*const libc::c_void>();
    // SAFETY: per this function's contract `info` is a kernel-filled siginfo_t for SIGSYS, at
    // least 128 bytes long, whose union holds the sigsys member at this offset.
    unsafe { info.cast::<u8>().add(OFFSET).cast::<i32>().read_unaligned() }
}

/// Opens `path` relative to the directory `dir` (`openat`), read-only.
pub fn open_at(dir: &std::fs::File, path: &str) -> io::Result<std::fs::File> {
    let path = cstr(path)?;
    // SAFETY: `dir` is an open directory; `path` is NUL-terminated and outlives the call.
    let fd = check(unsafe {
        libc::openat(dir.as_raw_fd(), path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC)
    })?;
    // SAFETY: `fd` was just returned by openat and is owned by nobody else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// A connected pair of `SOCK_SEQPACKET` Unix sockets (close-on-exec): message boundaries are
/// kept and descriptors travel with a message (`SCM_RIGHTS`). The host ⇄ zygote channel.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(io::Error::from)
}

/// Shuts both directions of a connected socket down: the peer reads end of file, and a reader
/// of this end (another holder of the same socket) wakes up to end of file too.
pub fn shutdown_socket(sock: RawFd) -> io::Result<()> {
    use nix::sys::socket::{Shutdown, shutdown};
    shutdown(sock, Shutdown::Both).map_err(io::Error::from)
}

/// Largest number of descriptors one message may carry.
pub const MAX_FDS_PER_MESSAGE: usize = 8;

/// Sends one message with `fds` attached (`sendmsg`, `MSG_NOSIGNAL`: a closed peer is
/// `EPIPE`, never a signal). A would-block socket gives `ErrorKind::WouldBlock`.
pub fn send_message(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let iov = [io::IoSlice::new(bytes)];
    let cmsgs = if fds.is_empty() { vec![] } else { vec![ControlMessage::ScmRights(fds)] };
    loop {
        match sendmsg::<()>(sock, &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(n) => return Err(io::Error::other(format!("short send: {n} of {}", bytes.len()))),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// What [`recv_message`] got.
pub enum Received {
    /// One whole message and the descriptors that came with it.
    Message(Vec<u8>, Vec<OwnedFd>),
    /// The peer closed the connection.
    Closed,
}

/// Receives one message of at most `max` bytes and its descriptors (`recvmsg`, received
/// close-on-exec). A longer message is an `InvalidData` error (its descriptors are closed);
/// a would-block socket gives `ErrorKind::WouldBlock`.
pub fn recv_message(sock: RawFd, max: usize) -> io::Result<Received> {
    // One receive buffer per thread, kept: messages are small, and a zeroed `max + 1` bytes per
    // message was a visible share of a busy host's CPU. The message is copied out at its size.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < max + 1 {
                buf.resize(max + 1, 0);
            }
            recv_into(sock, max, &mut buf[..max + 1])
        }
        // Not reentrant in practice; a fresh buffer if it ever is.
        Err(_) => recv_into(sock, max, &mut vec![0u8; max + 1]),
    })
}

/// [`recv_message`] with `buf` (`max + 1` bytes) to receive into.
fn recv_into(sock: RawFd, max: usize, buf: &mut [u8]) -> io::Result<Received> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS_PER_MESSAGE]);
    let (len, truncated, raw_fds) = loop {
        let mut iov = [io::IoSliceMut::new(buf)];
        match recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for c in msg.cmsgs().map_err(io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(got) = c {
                        fds.extend(got);
                    }
                }
                let truncated = msg.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
                break (msg.bytes, truncated, fds);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
    };
    // SAFETY: the kernel just installed these descriptors in this process for us; nothing
    // else knows their numbers, so each gets exactly one owner.
    let fds: Vec<OwnedFd> =
        raw_fds.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }).collect();
    if len == 0 && fds.is_empty() {
        return Ok(Received::Closed);
    }
    if truncated || len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message larger than {max} bytes (or too many descriptors)"),
        ));
    }
    Ok(Received::Message(buf[..len].to_vec(), fds))
}

/// Sets or clears `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL only read and change this descriptor's status flags.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let flags = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }).map(drop)
}

/// How many bytes sit unread in the pipe `fd` (either end) belongs to (`FIONREAD`).
pub fn unread_in_pipe(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points at `n` on our stack.
    check(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n as *mut libc::c_int) })?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// `pidfd_open(pid)`: a descriptor that becomes readable when our child `pid` exits (it does
/// not reap it).
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and a flag word; `pid` is our own unreaped child, so it
    // cannot name a recycled process.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = check(ret as libc::c_int)?;
    // SAFETY: the descriptor was just created for us and has no other owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An anonymous in-memory file (`memfd_create`, close-on-exec) holding `bytes`, read from
/// offset 0 by whoever receives it.
pub fn memfd_with(name: &str, bytes: &[u8]) -> io::Result<OwnedFd> {
    use std::io::Write;
    let cname = cstr(name)?;
    // SAFETY: `cname` is NUL-terminated and outlives the call; the flags are valid.
    let fd = check(unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: the descriptor was just created for us and has no other owner.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(bytes)?;
    Ok(OwnedFd::from(file))
}

/// A new descriptor (close-on-exec) for this process's stdin, to hand to a sandbox.
pub fn dup_stdin() -> io::Result<OwnedFd> {
    // SAFETY: fd 0 stays open for the life of the process (we never close our own stdin), so
    // borrowing it for the duration of the dup is sound.
    let stdin = unsafe { std::os::fd::BorrowedFd::borrow_raw(0) };
    stdin.try_clone_to_owned()
}

/// How many pages of `[addr, addr + len)` are present in this process's page tables, read
/// from its `/proc/self/pagemap` (opened by the caller; bit 63 of each page's 64-bit entry).
/// `addr` must be page-aligned. A plain `pread`: no system call beyond what the zygote's
/// filter allows already.
pub fn present_pages(pagemap: &std::fs::File, addr: usize, len: usize) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    const PAGE: usize = 4096;
    let mut entries = vec![0u8; len.div_ceil(PAGE) * 8];
    pagemap.read_exact_at(&mut entries, (addr / PAGE * 8) as u64)?;
    Ok(entries
        .chunks_exact(8)
        .filter(|e| u64::from_le_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]) >> 63 == 1)
        .count())
}

/// Asks the kernel to back `[addr, addr + len)` (2 MiB-aligned) with huge pages now
/// (`MADV_COLLAPSE`, Linux 6.1): it copies the range's pages into huge pages and maps those
/// instead, filling pages never touched with zeros. Fails (EINVAL) where transparent huge pages
/// are off or the kernel predates the call.
pub fn collapse_to_huge_pages(addr: usize, len: usize) -> io::Result<()> {
    // SAFETY: MADV_COLLAPSE changes only how the range is backed, never what it holds or its
    // protection, so no reference into it is invalidated; an unmapped range is an error.
    check(unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_COLLAPSE) })?;
    Ok(())
}

/// Copies `[addr, addr + len)` into a new private anonymous mapping aligned to `align` (a
/// power of two), readable and writable, and returns the copy's address.
///
/// # Safety
/// `[addr, addr + len)` must be mapped readable.
pub unsafe fn copy_to_anonymous(addr: usize, len: usize, align: usize) -> io::Result<usize> {
    let reserved = len + align;
    // SAFETY: a fresh private anonymous mapping, at an address the kernel picks.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            reserved,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let base = base as usize;
    let copy = base.next_multiple_of(align);
    // SAFETY: trims our own fresh mapping to the aligned part; nothing refers to the rest.
    unsafe {
        if copy > base {
            libc::munmap(base as *mut libc::c_void, copy - base);
        }
        libc::munmap((copy + len) as *mut libc::c_void, base + reserved - (copy + len));
    }
    // SAFETY: the caller guarantees the source is readable; `copy` is a distinct writable
    // mapping of `len` bytes.
    unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, copy as *mut u8, len) };
    Ok(copy)
}

/// Unmaps a mapping made by [`copy_to_anonymous`].
///
/// # Safety
/// Nothing may refer to `[addr, addr + len)` any more.
pub unsafe fn unmap(addr: usize, len: usize) {
    // SAFETY: per the caller.
    unsafe { libc::munmap(addr as *mut libc::c_void, len) };
}

/// Makes `copy` (from [`copy_to_anonymous`], holding the same bytes as `[addr, addr + len)`)
/// read + execute and moves it over `[addr, addr + len)` in one `mremap`: the old mapping
/// there is gone and `copy` with it. On failure `copy` is unmapped and the original stays.
///
/// # Safety
/// `[addr, addr + len)` must be code of this process that nothing writes to, the copy must
/// hold exactly its bytes, and no other thread may run. Code returning into the range (this
/// function's callers) then finds the same instructions at the same addresses; during the
/// move itself only the C library's `mremap` runs, which is not in the range.
pub unsafe fn replace_code(addr: usize, copy: usize, len: usize) -> io::Result<()> {
    let fail = |e: io::Error| {
        // SAFETY: `copy` is ours and, after a failure, still where it was.
        unsafe { unmap(copy, len) };
        Err(e)
    };
    // SAFETY: changes only the protection of the caller's copy.
    if unsafe { libc::mprotect(copy as *mut _, len, libc::PROT_READ | libc::PROT_EXEC) } == -1 {
        return fail(io::Error::last_os_error());
    }
    // SAFETY: per the caller; the move is atomic for the range.
    let moved = unsafe {
        libc::mremap(
            copy as *mut _,
            len,
            len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            addr as *mut libc::c_void,
        )
    };
    if moved == libc::MAP_FAILED {
        return fail(io::Error::last_os_error());
    }
    Ok(())
}
