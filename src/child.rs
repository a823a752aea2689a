//! The sandbox child: everything that happens between `fork()` and `_exit()`, in one ordered
//! function, [`enter`].
//!
//! The zygote is single-threaded when it forks (checked before every fork), so the child's
//! only thread is a copy of the one that held no locks: allocation and Rust's standard library
//! are safe to use here, unlike after a fork from a multi-threaded process. Wasmtime's signal
//! handlers, installed in the zygote, are inherited and stay installed: they turn guest faults
//! into traps.

use crate::budget::{WriteBudget, WriteLimitExceeded};
use crate::entry::{self, EntryError, Scalar};
use crate::outcome::Status;
use crate::rlimits::Rlimits;
use crate::sys;
use crate::task::{Stdin, Task};
use crate::template::{Entry, NO_DEADLINE, TaskState, Template, Warm};
use crate::wire::{self, ChildReport, TaskHeader};
use seccompiler::BpfProgram;
use std::borrow::Cow;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};
use std::time::{Duration, Instant};
use wasmtime::{Engine, Store, Trap, TypedFunc, Val};
use wasmtime_wasi::cli::{InputFile, OutputFile};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

/// The child's descriptors after [`arrange_fds`].
const STDIN: RawFd = 0;
const STDOUT: RawFd = 1;
const STDERR: RawFd = 2;
const REPORT: RawFd = 3;
/// A sandbox whose task comes later reads it here (the host or zygote writes it).
pub(crate) const CHANNEL: RawFd = 4;

/// Descriptors the zygote hands to the child, as numbered in the zygote.
pub(crate) struct ChildFds {
    /// Becomes fd 0, or fd 0 is closed.
    pub stdin: Option<RawFd>,
    /// Becomes fd 1.
    pub stdout: RawFd,
    /// Becomes fd 2.
    pub stderr: RawFd,
    /// Becomes fd 3: the report pipe.
    pub report: RawFd,
    /// Becomes fd 4: the task channel of a sandbox whose task comes later.
    pub channel: Option<RawFd>,
}

/// A directory to preopen, as the child must open it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Preopen {
    /// Path in the child's filesystem view (inside the sandbox root when confined).
    pub path: String,
    /// Where the guest sees it.
    pub guest: String,
    pub read_only: bool,
}

/// What the zygote decided for this child before forking it, whatever its task.
pub(crate) struct Plan<'a> {
    pub zygote_pid: libc::pid_t,
    /// The zygote's lifeline pipe, (read end, write end) (see [`enter`], step 1).
    pub lifeline: (RawFd, RawFd),
    /// The child is PID 1 of a new PID namespace (its parent's pid reads as 0).
    pub new_pid_ns: bool,
    /// Per-sandbox hardening: a session of its own, rlimits, no capabilities, no new privileges.
    pub harden: Option<Rlimits>,
    pub seccomp: Option<&'a BpfProgram>,
    pub forked_at: Instant,
    /// Wait on the channel (fd 4) for one byte — written once the zygote has moved this child
    /// into its memory cgroup — before running anything of a task already in memory.
    pub gated: bool,
    /// The sandbox's own scratch tmpfs (a detached mount, see [`crate::scratch`]): made the
    /// working directory in step 2, before the descriptor is closed.
    pub scratch: Option<BorrowedFd<'a>>,
}

/// What the child runs once set up: the guest's `_start`, or — only in builds with the
/// `testkit` feature, for the escape-probe tests — native code that probes the confinement,
/// given the task's args and, for each preopened directory, its guest path and the path it is
/// opened from in the sandbox.
#[derive(Clone, Copy)]
pub(crate) enum Payload {
    Guest,
    #[cfg(feature = "testkit")]
    Probe(crate::zygote::ProbeFn),
}

/// How the child learns its task.
pub(crate) enum Assignment<'a> {
    /// Known at fork (on-demand): in this copy of the zygote's memory.
    Now { task: &'a Task, preopens: Vec<Preopen>, deadline: Option<Instant>, payload: Payload },
    /// Handed over later on the channel, fd 4 (a pre-forked pool child, or a sandbox whose
    /// task the host writes itself), read once the sandbox is confined.
    Later,
}

/// A task ready to run in the child.
struct Ready<'a> {
    /// Borrowed from the zygote's memory (on-demand) or decoded from the channel (pool).
    task: Cow<'a, Task>,
    preopens: Vec<Preopen>,
    deadline: Option<Instant>,
    payload: Payload,
    /// When setup counts from: the fork (on-demand) or the hand-over (pool).
    since: Instant,
    /// The working directory is the sandbox's scratch directory.
    scratch: bool,
}

/// Runs one task in a freshly forked child and exits. Never returns.
///
/// The order, and why:
/// 1. **Die with the zygote** (`PR_SET_PDEATHSIG`), first, so no later failure can leave an
///    orphan running guest code; and if the zygote died before that took effect (its
///    lifeline pipe has hung up), exit at once.
/// 2. **Descriptors**: stdio and the report pipe moved to 0–3 (and the task channel, for a
///    sandbox whose task comes later, to 4); every other inherited descriptor closed (the zygote's module file, its
///    /proc handles, other sandboxes' pipes).
/// 3. **Signals and environment**: mask emptied (dispositions kept, so Wasmtime's trap handlers
///    stay); environment cleared.
/// 4. **Session**: `setsid`, away from the caller's terminal and process group.
/// 5. **Event loop and deadline handler** prepared while `rt_sigaction` is still allowed.
/// 6. **Rlimits**: no core dumps, few open files, the file-size cap, a CPU-time backstop.
/// 7. **Privileges**: every capability dropped (bounding, ambient, effective, permitted,
///    inheritable), then `PR_SET_NO_NEW_PRIVS`.
/// 8. **Seccomp**, last of the restraints: from here on only the allowlist works, and a
///    violation reports itself.
///    A child that gets its task later then runs the guest's reseed hook, confined and
///    bounded, while the task is on its way (see [`reseed_ahead`]).
/// 9. **The task**: already in memory, or read from the channel (fd 4) — so a pre-forked child
///    waits fully sandboxed — and then, if it waited, lowers its CPU backstop to its task's.
/// 10. **Per-task state**: the WASI context (args, env, stdio, preopened directories opened with
///     `openat`, and randomness drawn from the OS in this child — never state inherited from
///     the zygote), memory cap, fuel; the deadline timer armed.
/// 11. **Run** `_start` on the instance created in the zygote.
/// 12. **Report**: close stdout/stderr so the zygote sees end of file, write one framed report,
///     `_exit`.
///
/// Namespaces are not in this list because the zygote entered them before forking (see
/// [`crate::namespaces`]), except the PID namespace, which the fork itself creates.
pub(crate) fn enter(
    template: &Template,
    warm: &mut Warm,
    fds: ChildFds,
    plan: &Plan,
    assignment: Assignment,
) -> ! {
    let forked_at = plan.forked_at;
    let mut report_fd = fds.report;
    let setup = sys::die_with_parent(if plan.new_pid_ns { 0 } else { plan.zygote_pid })
        .map(|()| {
            // In a new PID namespace the parent's pid reads as 0 whatever happened to it: a
            // zygote that died before the death signal was armed shows as its lifeline pipe
            // hung up (only the zygote holds the write end).
            sys::close(plan.lifeline.1);
            if sys::hung_up(plan.lifeline.0) {
                sys::exit_now(0);
            }
        })
        .and_then(|()| plan.scratch.map_or(Ok(()), sys::fchdir))
        .and_then(|()| arrange_fds(&fds))
        .inspect(|()| report_fd = REPORT)
        .and_then(|()| sys::unblock_all_signals())
        .and_then(|()| {
            // SAFETY: this child has a single thread (the zygote checked before forking).
            unsafe { sys::clear_environment() };
            if plan.harden.is_some() { sys::setsid() } else { Ok(()) }
        })
        .map_err(|e| format!("sandbox setup failed: {e}"))
        .and_then(|()| restrain(template, plan))
        .and_then(|rt| {
            if matches!(assignment, Assignment::Later) {
                reseed_ahead(warm, &rt);
            }
            Ok((rt, receive(assignment, forked_at, plan)?))
        });
    let report = match setup {
        Ok((rt, ready)) => run_task(template, warm, &rt, ready),
        Err(e) => internal(e, forked_at),
    };
    sys::close(STDOUT);
    sys::close(STDERR);
    let code = match sys::write_all(report_fd, &wire::encode(&report)) {
        Ok(()) => 0,
        Err(_) => 70,
    };
    sys::exit_now(code)
}

/// Steps 5–8: the event loop and deadline handler, rlimits, privileges, seccomp.
fn restrain(template: &Template, plan: &Plan) -> Result<tokio::runtime::Runtime, String> {
    // A current-thread runtime starts no threads. It drives wasmtime-wasi's async host calls
    // (timers for `poll_oneoff`); file I/O runs inline (`allow_blocking_current_thread`).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start the task's event loop: {e}"))?;
    prepare_deadline(template).map_err(|e| format!("cannot prepare the deadline timer: {e}"))?;
    if let Some(limits) = &plan.harden {
        limits.apply().map_err(|e| format!("cannot set resource limits: {e}"))?;
        sys::drop_capabilities()
            .and_then(|()| sys::set_no_new_privs())
            .map_err(|e| format!("cannot drop privileges: {e}"))?;
    }
    if let Some(program) = plan.seccomp {
        crate::seccomp::install(program)
            .map_err(|e| format!("cannot install the seccomp filter: {e}"))?;
    }
    Ok(rt)
}

/// Step 9: the task, from memory or from the channel on fd 4. A sandbox that waited for its
/// task, with rlimits, then lowers its CPU backstop to its task's.
fn receive<'a>(
    assignment: Assignment<'a>,
    forked_at: Instant,
    plan: &Plan,
) -> Result<Ready<'a>, String> {
    let gated = plan.gated;
    let scratch = plan.scratch.is_some();
    match assignment {
        Assignment::Now { task, preopens, deadline, payload } => {
            if gated {
                let mut byte = [0u8; 1];
                // SAFETY: fd 4 is the gate pipe; reading into a one-byte stack buffer.
                if unsafe { libc::read(CHANNEL, byte.as_mut_ptr().cast(), 1) } != 1 {
                    // The zygote could not place us in our cgroup and gave up on us.
                    sys::exit_now(0);
                }
                sys::close(CHANNEL);
            }
            Ok(Ready {
                task: Cow::Borrowed(task),
                preopens,
                deadline,
                payload,
                since: forked_at,
                scratch,
            })
        }
        Assignment::Later => {
            let (header, stdin) = match wire::read_task(|buf| sys::read_raw(CHANNEL, buf)) {
                Ok(Some(frame)) => frame,
                // The channel closed without a task: the zygote is shutting down.
                Ok(None) => sys::exit_now(0),
                Err(e) => return Err(format!("corrupt task frame: {e}")),
            };
            let since = Instant::now();
            let timeout = header.timeout_us.map(Duration::from_micros);
            if let Some(limits) = &plan.harden {
                limits
                    .lower_cpu_for_task(timeout)
                    .map_err(|e| format!("cannot lower the CPU-time limit to the task's: {e}"))?;
            }
            let deadline = deadline_of(since, header.remaining_us)?;
            let (task, preopens) = task_of(header, stdin);
            Ok(Ready {
                task: Cow::Owned(task),
                preopens,
                deadline,
                payload: Payload::Guest,
                since,
                scratch,
            })
        }
    }
}

/// When a task handed over at `since` with `remaining_us` left is due (`Err`: past the
/// clock's range, which a sandbox must refuse rather than panic on).
pub(crate) fn deadline_of(
    since: Instant,
    remaining_us: Option<u64>,
) -> Result<Option<Instant>, String> {
    match remaining_us {
        None => Ok(None),
        Some(us) => since
            .checked_add(Duration::from_micros(us))
            .map(Some)
            .ok_or_else(|| "task deadline out of range".to_string()),
    }
}

/// The task (and its preopened directories) a sandbox decoded from its channel.
pub(crate) fn task_of(header: TaskHeader<'static>, stdin: Vec<u8>) -> (Task, Vec<Preopen>) {
    let task = Task {
        argv0: header.argv0.map(Cow::into_owned),
        args: header.args.into_owned(),
        env: header.env.into_owned(),
        stdin: if header.inherit_stdin { Stdin::Inherit } else { Stdin::Bytes(stdin) },
        timeout: header.timeout_us.map(Duration::from_micros),
        max_memory: header.max_memory,
        fuel: header.fuel,
        max_write: header.max_write,
        max_files: header.max_files,
        invoke: header.invoke.map(Cow::into_owned),
        files: header.files.into_owned(),
        files_out: header.files_out,
        arguments: header.arguments.map(Cow::into_owned),
        ..Task::default()
    };
    (task, header.preopens.into_owned())
}

/// Moves the child's descriptors to 0–3 and closes everything else.
fn arrange_fds(fds: &ChildFds) -> std::io::Result<()> {
    // Duplicate every source above the target range first, so that placing one never
    // overwrites another that happens to be numbered 0–3.
    const ABOVE: RawFd = 10;
    let sources = [fds.stdin, Some(fds.stdout), Some(fds.stderr), Some(fds.report), fds.channel];
    let mut temps = [None; 5];
    for (temp, source) in temps.iter_mut().zip(sources) {
        if let Some(fd) = source {
            *temp = Some(sys::dup_at_least(fd, ABOVE)?);
        }
    }
    for (target, temp) in temps.into_iter().enumerate() {
        match temp {
            Some(fd) => sys::dup2(fd, target as RawFd)?,
            None => sys::close(target as RawFd),
        }
    }
    sys::close_from(CHANNEL + 1)
}

fn internal(message: String, since: Instant) -> ChildReport {
    ChildReport {
        status: Status::InternalError,
        exit_code: None,
        message: Some(message),
        setup_us: micros(since.elapsed()),
        run_us: 0,
        fuel_consumed: None,
        peak_rss: 0,
        files: Vec::new(),
        files_truncated: false,
    }
}

/// The engine whose epoch the deadline timer bumps; set once in the child, before the timer
/// is armed, and never freed (the child ends with `_exit`).
static DEADLINE_ENGINE: AtomicPtr<Engine> = AtomicPtr::new(std::ptr::null_mut());
/// The report to send if the deadline passes while the guest sits in a host call: framed
/// when the timer is armed (allocation is not allowed in the handler), never freed.
static HOST_CALL_TIMEOUT_FRAME: AtomicPtr<Vec<u8>> = AtomicPtr::new(std::ptr::null_mut());
/// How many times the deadline timer has fired.
static DEADLINE_FIRED: AtomicU32 = AtomicU32::new(0);
/// Set once `_start` has returned: a late timer must not report over the real outcome.
static GUEST_DONE: AtomicBool = AtomicBool::new(false);

/// SIGALRM handler. First firing: bump the epoch, so running Wasm traps at its next epoch
/// check (microseconds later) and reports `timeout` itself with its partial output. A second
/// firing (the timer repeats every 10 ms) means the guest did not return to Wasm: it is blocked
/// in a host call (a sleep, a read). Then the handler sends the prepared `timeout` report and
/// exits, rather than leaving the zygote to kill it after the grace.
extern "C" fn on_deadline(_sig: libc::c_int) {
    let engine = DEADLINE_ENGINE.load(Ordering::Acquire);
    if !engine.is_null() {
        // SAFETY: the pointer comes from `Box::into_raw` in `prepare_deadline` and is never
        // freed; `Engine::increment_epoch` is documented as async-signal-safe (an atomic add).
        unsafe { (*engine).increment_epoch() };
    }
    let fired = DEADLINE_FIRED.fetch_add(1, Ordering::AcqRel);
    let frame = HOST_CALL_TIMEOUT_FRAME.load(Ordering::Acquire);
    if fired >= 1 && !frame.is_null() && !GUEST_DONE.load(Ordering::Acquire) {
        // SAFETY: the frame was leaked by `arm_deadline` and is never freed or changed.
        let bytes = unsafe { &*frame };
        sys::close(STDOUT);
        sys::close(STDERR);
        let _ = sys::write_all(REPORT, bytes);
        sys::exit_now(0);
    }
}

/// Installs the deadline handler (while `rt_sigaction` is still allowed) for this engine.
fn prepare_deadline(template: &Template) -> std::io::Result<()> {
    let engine = Box::into_raw(Box::new(template.engine.clone()));
    DEADLINE_ENGINE.store(engine, Ordering::Release);
    // SAFETY: `on_deadline` only loads an atomic and increments the epoch, both signal-safe.
    unsafe { sys::on_alarm(on_deadline) }.map(drop)
}

/// Arms the deadline: at `deadline`, SIGALRM bumps the epoch past the store's deadline of one
/// tick. The timer repeats every 10 ms in case the guest was in a host call when it first
/// fired (the zygote kills a child still alive after its grace).
fn arm_deadline(
    warm: &mut Warm,
    task: &Task,
    deadline: Instant,
    since: Instant,
) -> std::io::Result<()> {
    let ms = task.timeout.map_or(0, |t| t.as_millis());
    let report = ChildReport {
        status: Status::Timeout,
        exit_code: None,
        message: Some(format!(
            "deadline of {ms} ms passed while the guest was blocked in a host call; sandbox stopped"
        )),
        setup_us: micros(since.elapsed()),
        run_us: micros(deadline.saturating_duration_since(Instant::now())),
        fuel_consumed: None,
        peak_rss: 0,
        files: Vec::new(),
        files_truncated: false,
    };
    HOST_CALL_TIMEOUT_FRAME
        .store(Box::into_raw(Box::new(wire::encode(&report))), Ordering::Release);
    warm.store.set_epoch_deadline(1);
    warm.store.epoch_deadline_trap();
    let left = deadline.saturating_duration_since(Instant::now());
    sys::arm_alarm(left, Duration::from_millis(10))
}

fn micros(d: std::time::Duration) -> u64 {
    d.as_micros().try_into().unwrap_or(u64::MAX)
}

/// Steps 10–11: per-task state, the deadline, then the payload.
fn run_task(
    template: &Template,
    warm: &mut Warm,
    rt: &tokio::runtime::Runtime,
    ready: Ready<'_>,
) -> ChildReport {
    let Ready { mut task, mut preopens, deadline, payload, since, scratch } = ready;
    let fail = |what: &str, e: &dyn std::fmt::Display| internal(format!("{what}: {e}"), since);
    if scratch {
        if let Err(e) = crate::scratch::populate(&task.files) {
            return fail("cannot put the task's files in its scratch directory", &e);
        }
        preopens.extend(crate::scratch::preopens());
    }
    // A task decoded from the channel is ours: its stdin moves into the WASI pipe uncopied.
    let stdin = match &mut task {
        Cow::Owned(Task { stdin: Stdin::Bytes(bytes), .. }) => Some(std::mem::take(bytes)),
        _ => None,
    };
    let ctx = match wasi_ctx(template.name(), &task, stdin, &preopens) {
        Ok(ctx) => ctx,
        Err(e) => return fail("cannot build the task's WASI context", &e),
    };
    let state = warm.store.data_mut();
    state.wasi = ctx;
    state.memory.max = task.max_memory;
    state.memory.refused = None;
    state.writes = WriteBudget::new(task.max_write, task.max_files);
    state.file_writes =
        std::sync::Arc::new(std::sync::Mutex::new(crate::file_streams::SharedWrites {
            max_bytes: task.max_write,
            bytes: 0,
        }));
    // The instance may already hold more memory than this task may have: the zygote
    // instantiated it under its own (larger) cap, or its start function grew it. Such a task
    // ends before any of its code runs.
    let held = state.memory.largest;
    if let Some(max) = task.max_memory
        && held > max
    {
        return ChildReport {
            status: Status::MemoryLimit,
            exit_code: None,
            message: Some(format!(
                "the instance already holds {held} bytes of linear memory (from instantiation), \
                 past this task's cap of {max} bytes; the guest was not run"
            )),
            setup_us: micros(since.elapsed()),
            run_us: 0,
            fuel_consumed: None,
            peak_rss: sys::peak_rss(),
            files: Vec::new(),
            files_truncated: false,
        };
    }
    if let (Some(fuel), true) = (task.fuel, template.fuel)
        && let Err(e) = warm.store.set_fuel(fuel)
    {
        return fail("cannot set fuel", &e);
    }
    if let Some(deadline) = deadline
        && let Err(e) = arm_deadline(warm, &task, deadline, since)
    {
        return fail("cannot arm the deadline timer", &e);
    }
    let setup_us = micros(since.elapsed());
    let started = Instant::now();
    let result = match payload {
        Payload::Guest => {
            let r = rt.block_on(call_entry(template, warm, &task));
            GUEST_DONE.store(true, Ordering::Release);
            r
        }
        #[cfg(feature = "testkit")]
        Payload::Probe(probe) => {
            let dirs: Vec<(&str, &str)> =
                preopens.iter().map(|p| (p.guest.as_str(), p.path.as_str())).collect();
            let text = probe(&task.args, &dirs);
            let _ = sys::write_all(STDOUT, text.as_bytes());
            Ok(())
        }
    };
    let run_us = micros(started.elapsed());
    let fuel_consumed = match (task.fuel, template.fuel) {
        (Some(budget), true) => warm.store.get_fuel().ok().map(|left| budget.saturating_sub(left)),
        _ => None,
    };
    let refused = warm.store.data().memory.refused;
    let (status, exit_code, message) = match result {
        Ok(()) => (Status::Exited, Some(0), None),
        Err(e) => classify(&e, refused, &task),
    };
    let (files, files_truncated) = match task.files_out {
        Some(limits) if scratch => crate::scratch::collect(&task.files, limits),
        _ => (Vec::new(), false),
    };
    let peak_rss = sys::peak_rss();
    ChildReport {
        status,
        exit_code,
        message,
        setup_us,
        run_us,
        fuel_consumed,
        peak_rss,
        files,
        files_truncated,
    }
}

/// The most a reseed hook may take when a sandbox runs it ahead of its task.
const RESEED_AHEAD_LIMIT: Duration = Duration::from_secs(1);

/// The guest's reseed hook, with 128 fresh bits from the OS.
async fn call_reseed(
    reseed: &TypedFunc<(i64, i64), ()>,
    store: &mut Store<TaskState>,
) -> wasmtime::Result<()> {
    let mut seed = [0u8; 16];
    sys::getrandom(&mut seed)?;
    let (a, b) = seed.split_at(8);
    let word = |w: &[u8]| i64::from_le_bytes(w.try_into().unwrap_or_default());
    reseed.call_async(store, (word(a), word(b))).await
}

/// Step 8½, in a sandbox forked ahead of its task: the guest's reseed hook runs now, fully
/// confined, while the sandbox waits, instead of on the task's path (it needs only bits that are
/// fresh in this fork, nothing of the task; ~0.3 ms of a RustPython `print(1+1)` moved off the
/// task's path). It runs with no task context (no arguments, environment or stdio) and under
/// [`RESEED_AHEAD_LIMIT`]; a failure is kept and ends the task, which then runs no guest code.
/// A module warmed per task (`per_task_init`) keeps its order: initialiser, then reseed, in
/// the task.
fn reseed_ahead(warm: &mut Warm, rt: &tokio::runtime::Runtime) {
    let Entry::Module { reseed: Some(reseed), per_task_init: None, .. } = &warm.entry else {
        return;
    };
    let reseed = reseed.clone();
    warm.store.set_epoch_deadline(1);
    warm.store.epoch_deadline_trap();
    let result = sys::arm_alarm(RESEED_AHEAD_LIMIT, Duration::from_millis(10))
        .map_err(wasmtime::Error::from)
        .and_then(|()| rt.block_on(call_reseed(&reseed, &mut warm.store)));
    let disarmed = sys::disarm_alarm();
    DEADLINE_FIRED.store(0, Ordering::Release);
    warm.store.set_epoch_deadline(NO_DEADLINE);
    let result = result.and_then(|()| disarmed.map_err(wasmtime::Error::from));
    warm.reseeded = Some(result.map_err(|e| {
        let why = match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => {
                format!("did not return within {} ms", RESEED_AHEAD_LIMIT.as_millis())
            }
            _ => format!("failed: {}", trap_message(&e)),
        };
        wasmtime::format_err!("the guest's reseed hook, run before the task arrived, {why}")
    }));
}

/// Step 11: the guest's code for this task, in order: `_initialize` when the zygote did not
/// warm the instance up; the reseed hook, with 128 fresh bits from the OS; then `_start`, or
/// the export the task invokes, whose results are printed to stdout as Wasmtime prints them.
async fn call_entry(template: &Template, warm: &mut Warm, task: &Task) -> wasmtime::Result<()> {
    let (instance, start, reseed, per_task_init) = match &warm.entry {
        Entry::Module { instance, start, reseed, per_task_init } => {
            (*instance, start.clone(), reseed.clone(), per_task_init.clone())
        }
        Entry::Component { .. } => return call_component(template, warm, task).await,
    };
    if let Some(init) = per_task_init {
        init.call_async(&mut warm.store, ()).await?;
    }
    match warm.reseeded.take() {
        // Run while this sandbox waited for its task.
        Some(result) => result?,
        None => {
            if let Some(reseed) = reseed {
                call_reseed(&reseed, &mut warm.store).await?;
            }
        }
    }
    if task.arguments.is_some() {
        return Err(EntryError::BadCall {
            call: task.invoke.clone().unwrap_or_default(),
            detail: "JSON arguments are for a component's exports; a core module's take --invoke's text arguments".into(),
        }
        .into());
    }
    let Some(name) = task.invoke.as_deref() else {
        return match start {
            Some(start) => start.call_async(&mut warm.store, ()).await,
            None => Err(EntryError::NoStart { module: template.name().to_string() }.into()),
        };
    };
    let no_export =
        || EntryError::NoSuchExport { module: template.name().to_string(), name: name.to_string() };
    let ty = template.exports().func(name).ok_or_else(no_export)?;
    let func = instance.get_func(&mut warm.store, name).ok_or_else(no_export)?;
    let params: Vec<Val> = entry::parse_args(ty, &task.args)?
        .into_iter()
        .map(|s| match s {
            Scalar::I32(v) => Val::I32(v),
            Scalar::I64(v) => Val::I64(v),
            Scalar::F32(bits) => Val::F32(bits),
            Scalar::F64(bits) => Val::F64(bits),
        })
        .collect();
    let mut results = vec![Val::I32(0); ty.results.len()];
    func.call_async(&mut warm.store, &params, &mut results).await?;
    let text: String = results.iter().map(|v| format!("{}\n", show(v))).collect();
    sys::write_all(STDOUT, text.as_bytes())?;
    Ok(())
}

/// Step 11 for a component: `wasi:cli/run`'s `run`, whose `err` result ends the task with
/// exit code 1 as under `wasmtime run`; or an export the task invokes.
async fn call_component(template: &Template, warm: &mut Warm, task: &Task) -> wasmtime::Result<()> {
    let Warm { store, entry: Entry::Component { instance, command }, .. } = warm else {
        return Err(wasmtime::format_err!("not a component"));
    };
    if let Some(call) = task.invoke.as_deref() {
        return crate::invoke::call_component_export(template, store, *instance, call, task).await;
    }
    let Some(command) = command else {
        return Err(EntryError::NoStart { module: template.name().to_string() }.into());
    };
    match command.wasi_cli_run().call_run(store).await? {
        Ok(()) => Ok(()),
        Err(()) => Err(I32Exit(1).into()),
    }
}

/// A result of an invoked export, as `wasmtime run --invoke` prints it.
fn show(v: &Val) -> String {
    let absent = |kind: &str, null: bool| {
        if null { format!("<null {kind}>") } else { format!("<{kind}>") }
    };
    match v {
        Val::I32(i) => i.to_string(),
        Val::I64(i) => i.to_string(),
        Val::F32(bits) => f32::from_bits(*bits).to_string(),
        Val::F64(bits) => f64::from_bits(*bits).to_string(),
        Val::V128(x) => x.as_u128().to_string(),
        Val::ExternRef(r) => absent("externref", r.is_none()),
        Val::FuncRef(r) => absent("funcref", r.is_none()),
        Val::AnyRef(r) => absent("anyref", r.is_none()),
        Val::ExnRef(r) => absent("exnref", r.is_none()),
        Val::ContRef(r) => absent("contref", r.is_none()),
    }
}

/// Sorts an error out of the guest's code into a status, exit code and message.
fn classify(
    e: &wasmtime::Error,
    refused: Option<usize>,
    task: &Task,
) -> (Status, Option<i32>, Option<String>) {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        // A guest that handles a refused growth itself (an interpreter's "out of memory"
        // error) and then fails still ended for its memory cap.
        if let (true, Some(wanted), Some(max)) = (exit.0 != 0, refused, task.max_memory) {
            let why = format!(
                "guest exited with code {} after its linear memory growth to {wanted} bytes was refused (cap {max} bytes)",
                exit.0
            );
            return (Status::MemoryLimit, Some(exit.0), Some(why));
        }
        return (Status::Exited, Some(exit.0), None);
    }
    let detail = trap_message(e);
    if e.downcast_ref::<WriteLimitExceeded>().is_some() {
        // The trap's own message names the limit; the wasm backtrace follows it.
        return (Status::WriteLimit, None, Some(detail));
    }
    let (status, why) = match (e.downcast_ref::<Trap>(), refused, task.max_memory) {
        (Some(Trap::Interrupt), _, _) => {
            let ms = task.timeout.map_or(0, |t| t.as_millis());
            (Status::Timeout, format!("deadline of {ms} ms passed: guest interrupted"))
        }
        (Some(Trap::OutOfFuel), _, _) => {
            let budget = task.fuel.unwrap_or(0);
            (Status::FuelExhausted, format!("fuel budget of {budget} exhausted"))
        }
        (_, Some(wanted), Some(max)) => (
            Status::MemoryLimit,
            format!(
                "guest tried to grow linear memory to {wanted} bytes, past its cap of {max} bytes"
            ),
        ),
        _ => return (Status::Trapped, None, Some(detail)),
    };
    (status, None, Some(format!("{why}\n{detail}")))
}

/// The trap (root cause) first, then the context Wasmtime attached (the wasm backtrace).
fn trap_message(e: &wasmtime::Error) -> String {
    let root = e.root_cause().to_string();
    let context: Vec<String> = e.chain().map(|c| c.to_string()).filter(|c| *c != root).collect();
    if context.is_empty() { root } else { format!("{root}\n{}", context.join("\n")) }
}

/// Randomness for WASI read from the kernel on every call, so that no state captured in the
/// zygote is shared between sandboxes.
struct OsRandom;

impl rand_core::TryRng for OsRandom {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        if sys::getrandom(dst).is_err() {
            // getrandom(2) with no flags fails only on a kernel without the call or on EFAULT.
            // Returning predictable bytes would be worse than dying: abort, which the zygote
            // reports as an internal error.
            std::process::abort();
        }
        Ok(())
    }
}

/// The task's WASI context; `owned_stdin`, when given, is the task's stdin, moved in.
fn wasi_ctx(
    name: &str,
    task: &Task,
    owned_stdin: Option<Vec<u8>>,
    preopens: &[Preopen],
) -> std::io::Result<WasiP1Ctx> {
    let mut b = WasiCtxBuilder::new();
    b.arg(task.argv0.as_deref().unwrap_or(name));
    b.args(&task.args);
    b.envs(&task.env);
    b.allow_blocking_current_thread(true);
    b.secure_random(OsRandom);
    b.insecure_random(OsRandom);
    let mut seed = [0u8; 16];
    sys::getrandom(&mut seed)?;
    b.insecure_random_seed(u128::from_le_bytes(seed));
    match (owned_stdin, &task.stdin) {
        (Some(bytes), _) => {
            b.stdin(MemoryInputPipe::new(bytes));
        }
        (None, Stdin::Empty) => {}
        (None, Stdin::Bytes(bytes)) => {
            b.stdin(MemoryInputPipe::new(bytes.clone()));
        }
        (None, Stdin::Inherit) => {
            // SAFETY: `arrange_fds` made fd 0 the task's stdin; this File becomes its only user.
            b.stdin(InputFile::new(unsafe { sys::file_from_fd(STDIN) }));
        }
    }
    // Unbuffered: each guest write is one write(2), so nothing is lost if the child is killed.
    // Fds 1 and 2 are always pipes the zygote reads: it captures what arrives, or relays it
    // to its own stdio (inherit), so no rlimit of ours applies to the caller's streams.
    // SAFETY: `arrange_fds` made fds 1 and 2 the task's output; these Files are their only
    // users. `enter` closes the raw numbers once the guest is done; the Files live in the
    // store, which is never dropped before `_exit`, so nothing closes them twice.
    let (out, err) = unsafe { (sys::file_from_fd(STDOUT), sys::file_from_fd(STDERR)) };
    b.stdout(OutputFile::new(out));
    b.stderr(OutputFile::new(err));
    for d in preopens {
        let perms = if d.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
        b.preopened_dir(&d.path, &d.guest, perms)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", d.guest)))?;
    }
    Ok(b.build_p1())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What ended a guest, as its error.
    #[derive(Debug, Clone)]
    enum Cause {
        Exit(i32),
        Trap(Trap),
        WriteLimit,
        Other(String),
    }

    fn cause() -> impl Strategy<Value = Cause> {
        prop_oneof![
            any::<i32>().prop_map(Cause::Exit),
            prop::sample::select(vec![
                Trap::Interrupt,
                Trap::OutOfFuel,
                Trap::UnreachableCodeReached,
                Trap::MemoryOutOfBounds,
                Trap::StackOverflow,
                Trap::IntegerDivisionByZero,
                Trap::IndirectCallToNull,
                Trap::TableOutOfBounds,
            ])
            .prop_map(Cause::Trap),
            Just(Cause::WriteLimit),
            ".{0,20}".prop_map(Cause::Other),
        ]
    }

    fn error(cause: &Cause, context: bool) -> wasmtime::Error {
        let e = match cause {
            Cause::Exit(code) => wasmtime::Error::new(I32Exit(*code)),
            Cause::Trap(t) => wasmtime::Error::new(*t),
            Cause::WriteLimit => wasmtime::Error::new(WriteLimitExceeded::Files { limit: 1 }),
            Cause::Other(m) => wasmtime::Error::msg(m.clone()),
        };
        // Wasmtime adds the wasm backtrace as context: it must not hide the cause.
        if context { e.context("wasm backtrace:\n  0: f") } else { e }
    }

    proptest! {
        #[test]
        fn trap_classification(
            cause in cause(),
            context in any::<bool>(),
            refused in proptest::option::of(0usize..1 << 40),
            max_memory in proptest::option::of(0usize..1 << 40),
            timeout_ms in proptest::option::of(1u64..100_000),
            fuel in proptest::option::of(any::<u64>()),
        ) {
            let task = Task {
                max_memory,
                timeout: timeout_ms.map(Duration::from_millis),
                fuel,
                ..Task::default()
            };
            let (status, code, message) = classify(&error(&cause, context), refused, &task);
            let capped = refused.is_some() && max_memory.is_some();
            let expected = match &cause {
                Cause::Exit(c) if *c != 0 && capped => Status::MemoryLimit,
                Cause::Exit(_) => Status::Exited,
                Cause::Trap(Trap::Interrupt) => Status::Timeout,
                Cause::Trap(Trap::OutOfFuel) => Status::FuelExhausted,
                Cause::WriteLimit => Status::WriteLimit,
                Cause::Trap(_) | Cause::Other(_) if capped => Status::MemoryLimit,
                Cause::Trap(_) | Cause::Other(_) => Status::Trapped,
            };
            prop_assert_eq!(status, expected);
            match &cause {
                Cause::Exit(c) => prop_assert_eq!(code, Some(*c)),
                _ => prop_assert_eq!(code, None),
            }
            // Every status but a plain exit says why; a timeout names its deadline.
            prop_assert_eq!(message.is_none(), status == Status::Exited, "{:?}", message);
            if status == Status::Timeout {
                let ms = timeout_ms.unwrap_or(0);
                let named = message.unwrap_or_default().contains(&format!("deadline of {ms} ms"));
                prop_assert!(named);
            }
        }

        #[test]
        fn handed_over_deadlines_never_panic(us in proptest::option::of(any::<u64>())) {
            let now = Instant::now();
            match deadline_of(now, us) {
                Ok(None) => prop_assert!(us.is_none()),
                Ok(Some(d)) => prop_assert_eq!(d - now, Duration::from_micros(us.unwrap_or(0))),
                Err(e) => prop_assert!(e.contains("out of range")),
            }
        }
    }
}
