//! The seccomp-bpf policy: default deny, an allowlist derived by tracing real guests (strace
//! of the sandbox children of every test guest: stdio, files in a preopen, clocks and sleeps,
//! traps, memory growth, deadlines), compiled to BPF in the zygote and installed in each
//! child as its last setup step.
//!
//! Arguments are constrained where it is cheap: `write` only to the sandbox's stdout, stderr
//! and report pipe (file writes use `pwrite64`/`pwritev2`); `read` only from stdin and the task
//! channel (files use `pread64`); `mmap`/`mprotect` never with `PROT_EXEC` (the compiled code is already mapped:
//! no new executable memory after the fork); `rt_sigaction` and `tgkill` only for `SIGABRT`
//! (what `abort()` needs); `prlimit64` only to set the caller's own `RLIMIT_CPU` (a pool
//! child lowering its CPU backstop to its task's, see [`CONSTRAINED`]). `prctl` and `seccomp`
//! are denied, so the filter cannot be changed.
//!
//! Cost: attaching the filter takes ~200 µs per sandbox on the development VM (`zeroboot-wasm
//! bench` prints it), nearly all of it fixed per filter rather than per instruction: a filter a
//! third as long cost the same, and two stacked filters (coarse, then fine) cost 1.4× one. It
//! is the kernel's fixed work for any new filter (most likely the BPF JIT allocating executable
//! memory; the JIT is always on in this kernel, so that could not be checked), which is why the
//! pre-forked pool attaches it before the task arrives.
//!
//! A refused call raises SIGSYS (`SECCOMP_RET_TRAP`); the handler installed here writes a
//! `sandbox_violation` report naming the call, then exits. Since `rt_sigaction` is denied,
//! code running after the filter cannot replace the handler, and a blocked SIGSYS is forced
//! through by the kernel, so a violation always ends the sandbox.

use crate::sys;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;
use std::io;

/// What the filter does with a system call outside the allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompMode {
    /// End the sandbox with `sandbox_violation`.
    #[default]
    Enforce,
    /// Allow it, and log it to the kernel log (`dmesg`, audit) — for deriving policies.
    Log,
    /// No filter.
    Off,
}

/// The system calls allowed without conditions, by name, for documentation and reports.
pub const ALLOWED: &[(&str, i64)] = &[
    ("pread64", libc::SYS_pread64),
    ("pwrite64", libc::SYS_pwrite64),
    ("preadv", libc::SYS_preadv),
    ("pwritev", libc::SYS_pwritev),
    ("preadv2", libc::SYS_preadv2),
    ("pwritev2", libc::SYS_pwritev2),
    ("lseek", libc::SYS_lseek),
    ("fstat", libc::SYS_fstat),
    ("newfstatat", libc::SYS_newfstatat),
    ("statx", libc::SYS_statx),
    ("openat", libc::SYS_openat),
    ("openat2", libc::SYS_openat2),
    ("close", libc::SYS_close),
    ("getdents64", libc::SYS_getdents64),
    ("mkdirat", libc::SYS_mkdirat),
    ("unlinkat", libc::SYS_unlinkat),
    ("renameat", libc::SYS_renameat),
    ("renameat2", libc::SYS_renameat2),
    ("linkat", libc::SYS_linkat),
    ("symlinkat", libc::SYS_symlinkat),
    ("readlinkat", libc::SYS_readlinkat),
    ("ftruncate", libc::SYS_ftruncate),
    ("fsync", libc::SYS_fsync),
    ("fdatasync", libc::SYS_fdatasync),
    ("fadvise64", libc::SYS_fadvise64),
    ("fallocate", libc::SYS_fallocate),
    ("utimensat", libc::SYS_utimensat),
    ("fcntl", libc::SYS_fcntl),
    ("futex", libc::SYS_futex),
    ("sched_yield", libc::SYS_sched_yield),
    ("clock_gettime", libc::SYS_clock_gettime),
    ("clock_getres", libc::SYS_clock_getres),
    ("clock_nanosleep", libc::SYS_clock_nanosleep),
    ("nanosleep", libc::SYS_nanosleep),
    ("gettimeofday", libc::SYS_gettimeofday),
    ("munmap", libc::SYS_munmap),
    ("madvise", libc::SYS_madvise),
    ("mremap", libc::SYS_mremap),
    ("brk", libc::SYS_brk),
    ("rt_sigreturn", libc::SYS_rt_sigreturn),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    ("sigaltstack", libc::SYS_sigaltstack),
    ("getrandom", libc::SYS_getrandom),
    ("setitimer", libc::SYS_setitimer),
    ("getrusage", libc::SYS_getrusage),
    ("getpid", libc::SYS_getpid),
    ("gettid", libc::SYS_gettid),
    ("exit", libc::SYS_exit),
    ("exit_group", libc::SYS_exit_group),
    ("restart_syscall", libc::SYS_restart_syscall),
];

/// System calls allowed only with constrained arguments, with the constraint in words.
pub const CONSTRAINED: &[(&str, &str)] = &[
    ("write", "fd is 1, 2 or 3 (stdout, stderr, report)"),
    ("read", "fd is 0 (stdin) or 4 (the task channel)"),
    ("mmap", "prot without PROT_EXEC"),
    ("mprotect", "prot without PROT_EXEC"),
    ("rt_sigaction", "signal is SIGABRT"),
    ("tgkill", "signal is SIGABRT"),
    (
        "prlimit64",
        "pid 0 (the caller), resource RLIMIT_CPU, old limit not read: a sandbox forked before \
         its task lowering its CPU backstop to its task's once the task arrives (a hard limit cannot be \
         raised without CAP_SYS_RESOURCE, which is gone)",
    ),
];

fn cond(
    arg: u8,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value)
}

fn rules_one_of(arg: u8, values: &[u64]) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    values.iter().map(|&v| SeccompRule::new(vec![cond(arg, SeccompCmpOp::Eq, v)?])).collect()
}

/// `prlimit64(0, RLIMIT_CPU, new, NULL)` only: a sandbox lowering its own CPU backstop.
fn own_cpu_limit_only() -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    Ok(vec![SeccompRule::new(vec![
        cond(0, SeccompCmpOp::Eq, 0)?,
        cond(1, SeccompCmpOp::Eq, u64::from(libc::RLIMIT_CPU))?,
        cond(3, SeccompCmpOp::Eq, 0)?,
    ])?])
}

fn no_exec(arg: u8) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    let prot_exec = libc::PROT_EXEC as u64;
    Ok(vec![SeccompRule::new(vec![cond(arg, SeccompCmpOp::MaskedEq(prot_exec), 0)?])?])
}

/// System calls the fork-server zygote makes after its own filter is installed, beyond a
/// sandbox's allowlist (traced with `strace -f` of a zygote serving runs: forking and reaping
/// sandboxes, the host socket, cgroup placement) and what a sandbox does between its fork and
/// its own filter (fd layout, session, rlimits, capabilities, installing that filter).
pub const ZYGOTE_EXTRA: &[(&str, i64)] = &[
    ("clone", libc::SYS_clone),
    ("wait4", libc::SYS_wait4),
    ("kill", libc::SYS_kill),
    ("pidfd_open", libc::SYS_pidfd_open),
    ("pipe2", libc::SYS_pipe2),
    ("poll", libc::SYS_poll),
    ("ppoll", libc::SYS_ppoll),
    ("sendmsg", libc::SYS_sendmsg),
    ("recvmsg", libc::SYS_recvmsg),
    ("getppid", libc::SYS_getppid),
    ("capset", libc::SYS_capset),
    ("close_range", libc::SYS_close_range),
    ("dup2", libc::SYS_dup2),
    ("dup3", libc::SYS_dup3),
    ("prctl", libc::SYS_prctl),
    ("seccomp", libc::SYS_seccomp),
    ("prlimit64", libc::SYS_prlimit64),
    ("setsid", libc::SYS_setsid),
    // A sandbox's scratch tmpfs: created detached by the zygote before each fork, made the
    // child's working directory before its own filter (see `crate::scratch`).
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fchdir", libc::SYS_fchdir),
];

/// What the filter does on a refused call in `mode` (`None`: no filter).
fn refusal(mode: SeccompMode) -> Option<SeccompAction> {
    match mode {
        SeccompMode::Enforce => Some(SeccompAction::Trap),
        SeccompMode::Log => Some(SeccompAction::Log),
        SeccompMode::Off => None,
    }
}

fn finish(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, seccompiler::Error> {
    let filter = SeccompFilter::new(rules, mismatch, matched, TargetArch::x86_64)?;
    filter.try_into().map_err(seccompiler::Error::Backend)
}

fn compiled(
    what: &str,
    built: Result<BpfProgram, seccompiler::Error>,
) -> io::Result<Option<BpfProgram>> {
    built
        .map(Some)
        .map_err(|e| io::Error::other(format!("cannot compile the {what} seccomp policy: {e}")))
}

/// The sandbox allowlist, whole: what a sandbox of an in-process zygote installs (the
/// calling process has no filter of its own). `None` for [`SeccompMode::Off`]. Compiled in the
/// zygote, before any fork, so a child only installs it.
pub(crate) fn compile(mode: SeccompMode) -> io::Result<Option<BpfProgram>> {
    let Some(refuse) = refusal(mode) else { return Ok(None) };
    let build = || -> Result<BpfProgram, seccompiler::Error> {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            ALLOWED.iter().map(|&(_, nr)| (nr, Vec::new())).collect();
        rules.insert(libc::SYS_write, rules_one_of(0, &[1, 2, 3])?);
        rules.insert(libc::SYS_read, rules_one_of(0, &[0, 4])?);
        rules.insert(libc::SYS_mmap, no_exec(2)?);
        rules.insert(libc::SYS_mprotect, no_exec(2)?);
        rules.insert(libc::SYS_rt_sigaction, rules_one_of(0, &[libc::SIGABRT as u64])?);
        rules.insert(libc::SYS_tgkill, rules_one_of(2, &[libc::SIGABRT as u64])?);
        rules.insert(libc::SYS_prlimit64, own_cpu_limit_only()?);
        finish(rules, refuse, SeccompAction::Allow)
    };
    compiled("sandbox", build())
}

/// The fork-server zygote's own allowlist, installed on the zygote once it is set up: the
/// sandbox allowlist plus [`ZYGOTE_EXTRA`], with `write`, `read` and `rt_sigaction` on any
/// descriptor or signal, `kill` only with SIGKILL, `clone` only as a plain fork (optionally
/// into a new PID namespace), and still no executable memory. Every sandbox inherits it.
pub(crate) fn compile_zygote(mode: SeccompMode) -> io::Result<Option<BpfProgram>> {
    let Some(refuse) = refusal(mode) else { return Ok(None) };
    let build = || -> Result<BpfProgram, seccompiler::Error> {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            ALLOWED.iter().chain(ZYGOTE_EXTRA).map(|&(_, nr)| (nr, Vec::new())).collect();
        for nr in [libc::SYS_write, libc::SYS_read, libc::SYS_rt_sigaction] {
            rules.insert(nr, Vec::new());
        }
        rules.insert(libc::SYS_mmap, no_exec(2)?);
        rules.insert(libc::SYS_mprotect, no_exec(2)?);
        rules.insert(libc::SYS_tgkill, rules_one_of(2, &[libc::SIGABRT as u64])?);
        rules.insert(libc::SYS_kill, rules_one_of(1, &[libc::SIGKILL as u64])?);
        let sigchld = libc::SIGCHLD as u64;
        let fork_flags = [
            sigchld,
            libc::CLONE_NEWPID as u64 | sigchld,
            (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) as u64 | sigchld,
        ];
        rules.insert(libc::SYS_clone, rules_one_of(0, &fork_flags)?);
        finish(rules, refuse, SeccompAction::Allow)
    };
    compiled("zygote", build())
}

/// The short filter a fork-server sandbox adds on top of the zygote's: it refuses what the
/// zygote's allowlist has beyond the sandbox's — every call of [`ZYGOTE_EXTRA`], and `write`,
/// `read` and `rt_sigaction` outside the sandbox's descriptors and SIGABRT — and lets the
/// rest through to the zygote's filter. The two together allow exactly what [`compile`]'s
/// allowlist does; this one is a fraction of its length, and the kernel evaluates it only for
/// the calls the zygote's filter allows, which is what makes attaching it cheap.
pub(crate) fn compile_narrowing(mode: SeccompMode) -> io::Result<Option<BpfProgram>> {
    let Some(refuse) = refusal(mode) else { return Ok(None) };
    let build = || -> Result<BpfProgram, seccompiler::Error> {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            ZYGOTE_EXTRA.iter().map(|&(_, nr)| (nr, Vec::new())).collect();
        let outside = |arg: u8, allowed: &[u64]| -> Result<Vec<SeccompRule>, seccompiler::Error> {
            let conds = allowed
                .iter()
                .map(|&v| cond(arg, SeccompCmpOp::Ne, v))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(vec![SeccompRule::new(conds)?])
        };
        rules.insert(libc::SYS_write, outside(0, &[1, 2, 3])?);
        rules.insert(libc::SYS_read, outside(0, &[0, 4])?);
        rules.insert(libc::SYS_rt_sigaction, outside(0, &[libc::SIGABRT as u64])?);
        // prlimit64 (in ZYGOTE_EXTRA) is refused unless it is a sandbox lowering its own CPU
        // backstop, the one form the sandbox allowlist has.
        let cpu = u64::from(libc::RLIMIT_CPU);
        rules.insert(
            libc::SYS_prlimit64,
            vec![
                SeccompRule::new(vec![cond(0, SeccompCmpOp::Ne, 0)?])?,
                SeccompRule::new(vec![cond(1, SeccompCmpOp::Ne, cpu)?])?,
                SeccompRule::new(vec![cond(3, SeccompCmpOp::Ne, 0)?])?,
            ],
        );
        // Matching a rule refuses; everything else passes on to the zygote's filter.
        finish(rules, SeccompAction::Allow, refuse)
    };
    compiled("sandbox (narrowing)", build())
}

/// Installs `program` on the calling (child) process, with the SIGSYS handler that reports a
/// violation on `report_fd`. Must be the last setup step: nothing after it may need a call
/// outside the allowlist.
pub(crate) fn install(program: &BpfProgram) -> io::Result<()> {
    // SAFETY: `on_violation` is async-signal-safe: it formats into a stack buffer and calls
    // only write(2) and _exit(2).
    unsafe { sys::on_sigsys(on_violation)? };
    seccompiler::apply_filter(program).map_err(|e| io::Error::other(e.to_string()))
}

/// Installs `program` on the calling process without a SIGSYS handler (the fork-server
/// zygote's own filter: a refused call kills it with SIGSYS, which its host reports).
pub(crate) fn apply(program: &BpfProgram) -> io::Result<()> {
    seccompiler::apply_filter(program).map_err(|e| io::Error::other(e.to_string()))
}

/// Names of system calls a sandbox might attempt, for violation reports.
const NAMES: &[(&str, i64)] = &[
    ("socket", libc::SYS_socket),
    ("connect", libc::SYS_connect),
    ("bind", libc::SYS_bind),
    ("execve", libc::SYS_execve),
    ("execveat", libc::SYS_execveat),
    ("fork", libc::SYS_fork),
    ("vfork", libc::SYS_vfork),
    ("clone", libc::SYS_clone),
    ("clone3", libc::SYS_clone3),
    ("ptrace", libc::SYS_ptrace),
    ("kill", libc::SYS_kill),
    ("tkill", libc::SYS_tkill),
    ("tgkill", libc::SYS_tgkill),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("setuid", libc::SYS_setuid),
    ("setgid", libc::SYS_setgid),
    ("chroot", libc::SYS_chroot),
    ("pivot_root", libc::SYS_pivot_root),
    ("bpf", libc::SYS_bpf),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("prctl", libc::SYS_prctl),
    ("seccomp", libc::SYS_seccomp),
    ("open", libc::SYS_open),
    ("stat", libc::SYS_stat),
    ("ioctl", libc::SYS_ioctl),
    ("read", libc::SYS_read),
    ("write", libc::SYS_write),
    ("mmap", libc::SYS_mmap),
    ("mprotect", libc::SYS_mprotect),
    ("rt_sigaction", libc::SYS_rt_sigaction),
    ("dup", libc::SYS_dup),
    ("dup2", libc::SYS_dup2),
    ("dup3", libc::SYS_dup3),
    ("poll", libc::SYS_poll),
    ("ppoll", libc::SYS_ppoll),
    ("epoll_create1", libc::SYS_epoll_create1),
    ("socketpair", libc::SYS_socketpair),
    ("sendto", libc::SYS_sendto),
    ("getppid", libc::SYS_getppid),
    ("memfd_create", libc::SYS_memfd_create),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("shmget", libc::SYS_shmget),
    ("msgget", libc::SYS_msgget),
    ("semget", libc::SYS_semget),
    ("mq_open", libc::SYS_mq_open),
    ("personality", libc::SYS_personality),
    ("setrlimit", libc::SYS_setrlimit),
    ("prlimit64", libc::SYS_prlimit64),
    ("chdir", libc::SYS_chdir),
    ("fchdir", libc::SYS_fchdir),
    ("mincore", libc::SYS_mincore),
];

/// The name of system call `nr`, when known.
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    NAMES.iter().chain(ALLOWED).find(|&&(_, n)| n == nr).map(|&(name, _)| name)
}

/// A fixed-size, allocation-free text buffer for the signal handler.
struct StackBuf {
    buf: [u8; 256],
    len: usize,
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() { Err(std::fmt::Error) } else { Ok(()) }
    }
}

/// SIGSYS handler: reports the refused call on the report pipe (fd 3) and exits.
extern "C" fn on_violation(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    use std::fmt::Write as _;
    // SAFETY: the kernel passes the SIGSYS siginfo to this SA_SIGINFO handler.
    let nr = i64::from(unsafe { sys::sigsys_syscall(info) });
    let mut body = StackBuf { buf: [0; 256], len: 0 };
    let name = syscall_name(nr).unwrap_or("unknown");
    let _ = write!(
        body,
        "{{\"status\":\"sandbox_violation\",\"exit_code\":null,\"message\":\"forbidden system call {name} (number {nr}) stopped by seccomp\",\"setup_us\":0,\"run_us\":0,\"fuel_consumed\":null,\"peak_rss\":0}}"
    );
    let mut frame = [0u8; 260];
    frame[..4].copy_from_slice(&(body.len as u32).to_le_bytes());
    frame[4..4 + body.len].copy_from_slice(&body.buf[..body.len]);
    let _ = sys::write_all(3, &frame[..4 + body.len]);
    sys::exit_now(128 + libc::SIGSYS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_compiles() {
        for c in [compile, compile_zygote, compile_narrowing] {
            assert!(c(SeccompMode::Enforce).unwrap().is_some());
            assert!(c(SeccompMode::Log).unwrap().is_some());
            assert!(c(SeccompMode::Off).unwrap().is_none());
        }
    }

    #[test]
    fn zygote_extras_are_not_in_the_sandbox_allowlist() {
        // The narrowing filter refuses every extra outright, except `prlimit64`, which it
        // narrows to the sandbox's one constrained form (lowering its own CPU limit); any other
        // extra that a sandbox also needs would break sandboxes.
        for (name, nr) in ZYGOTE_EXTRA {
            assert!(ALLOWED.iter().all(|&(_, a)| a != *nr), "{name} is in both lists");
            if *name != "prlimit64" {
                assert!(CONSTRAINED.iter().all(|&(c, _)| c != *name), "{name} is constrained");
            }
        }
    }

    #[test]
    fn the_narrowing_filter_is_a_fraction_of_the_whole() {
        let whole = compile(SeccompMode::Enforce).unwrap().unwrap().len();
        let short = compile_narrowing(SeccompMode::Enforce).unwrap().unwrap().len();
        assert!(short * 2 < whole, "narrowing {short} instructions, whole {whole}");
    }

    #[test]
    fn dangerous_calls_are_not_allowed_unconditionally() {
        for nr in [
            libc::SYS_socket,
            libc::SYS_execve,
            libc::SYS_clone,
            libc::SYS_ptrace,
            libc::SYS_prctl,
            libc::SYS_seccomp,
            libc::SYS_mount,
            libc::SYS_bpf,
        ] {
            assert!(ALLOWED.iter().all(|&(_, n)| n != nr), "{nr} must not be allowed");
            assert!(syscall_name(nr).is_some(), "{nr} must have a name for reports");
        }
    }
}
