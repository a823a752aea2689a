//! The zygote: holds a warm [`Template`] and forks it once per task.
//!
//! It must be single-threaded at every fork — in the child only the forking thread survives,
//! and a lock held by any other thread (the allocator's, stdio's, Wasmtime's) would stay locked
//! forever. [`Zygote::run`] checks the thread count before each fork and refuses otherwise.

use crate::cgroup::MemoryCgroup;
use crate::child::{self, ChildFds, Payload, Plan, Preopen};
use crate::error::Error;
use crate::namespaces::MountedGrant;
use crate::outcome::{Captured, Outcome, Status, Timings};
use crate::rlimits::{DEFAULT_MAX_FILE_SIZE, Rlimits};
use crate::seccomp::SeccompMode;
use crate::sys::{self, ExitStatus, Fork};
use crate::task::DirGrant;
use crate::task::{Output, Stdin, Task};
use crate::template::Template;
use crate::wire::{ChildReport, Frame, FrameReader};
use seccompiler::BpfProgram;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// A snapshot of the zygote process, as seen at fork time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ZygoteStats {
    /// Threads in the process (must be 1 to fork).
    pub threads: usize,
    /// Memory mappings (fork copies one page-table entry range per mapping).
    pub mappings: usize,
    /// Whether sandboxes run in a memory cgroup that bounds their host-side memory.
    pub memory_cgroup: bool,
    /// Whether the zygote (and so every sandbox) is in namespaces of its own.
    pub namespaces: bool,
    /// Whether sandboxes install a seccomp filter.
    pub seccomp: bool,
}

/// Host-side memory a sandbox may use beyond its linear-memory cap (Wasmtime's and WASI's own
/// allocations, copy-on-write copies of the zygote's pages), when a memory cgroup is available.
pub const HOST_OVERHEAD: usize = 64 << 20;

/// How a zygote confines its sandboxes.
#[derive(Debug, Clone)]
pub struct Isolation {
    /// Enter new user, mount, network, IPC and UTS namespaces (once, in the zygote: this
    /// confines the calling process) and give each sandbox a PID namespace of its own. The
    /// zygote's root becomes an empty read-only tmpfs holding only [`grants`](Self::grants).
    pub namespaces: bool,
    /// The seccomp policy's mode.
    pub seccomp: SeccompMode,
    /// Largest file a guest may write (`RLIMIT_FSIZE`).
    pub max_file_size: u64,
    /// Host directories tasks may be granted. With namespaces, a task can only be granted one
    /// of these (named as here), since the host filesystem is gone afterwards.
    pub grants: Vec<DirGrant>,
}

impl Default for Isolation {
    /// Everything on: namespaces, seccomp enforcing, 64 MiB file-size cap, no grants.
    fn default() -> Self {
        Self {
            namespaces: true,
            seccomp: SeccompMode::Enforce,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            grants: Vec::new(),
        }
    }
}

/// What the zygote set up once for all its sandboxes.
struct Confinement {
    /// `Some` when the zygote lives in its own namespaces.
    mounted: Option<Vec<MountedGrant>>,
    seccomp: Option<BpfProgram>,
    max_file_size: u64,
}

/// A warm template that runs each task in its own forked sandbox.
pub struct Zygote {
    template: Template,
    pid: libc::pid_t,
    cgroup: Option<MemoryCgroup>,
    /// `/proc/self/stat` and `/proc/self/maps`, opened before any confinement.
    proc_stat: std::fs::File,
    proc_maps: std::fs::File,
    confinement: Confinement,
}

impl Zygote {
    /// A zygote whose sandboxes get the per-process layers — seccomp (enforcing), rlimits, no
    /// capabilities, no new privileges, a session of their own — but no namespaces, so the
    /// calling process is left as it is. The process that calls [`run`](Self::run) must stay
    /// single-threaded.
    pub fn new(template: Template) -> Result<Self, Error> {
        Self::with_isolation(template, Isolation { namespaces: false, ..Isolation::default() })
    }

    /// A zygote with the given isolation. With `namespaces`, **this process** enters the new
    /// namespaces and loses the host filesystem: call it from a process that exists to be the
    /// zygote (as the `run` and `worker` commands do).
    pub fn with_isolation(template: Template, isolation: Isolation) -> Result<Self, Error> {
        let open = |path: &str| std::fs::File::open(path).map_err(Error::ThreadCount);
        let (proc_stat, proc_maps) = (open("/proc/self/stat")?, open("/proc/self/maps")?);
        // The cgroup is made with the host's view of /sys, before any namespace.
        let cgroup = MemoryCgroup::create().ok();
        let mounted = if isolation.namespaces {
            let threads =
                sys::threads_in_stat(&sys::read_proc_file(&proc_stat).map_err(Error::ThreadCount)?)
                    .map_err(Error::ThreadCount)?;
            if threads != 1 {
                return Err(Error::NotSingleThreaded { threads });
            }
            Some(crate::namespaces::confine_zygote(&isolation.grants).map_err(Error::Confine)?)
        } else {
            None
        };
        let seccomp = crate::seccomp::compile(isolation.seccomp).map_err(Error::Seccomp)?;
        let confinement = Confinement { mounted, seccomp, max_file_size: isolation.max_file_size };
        Ok(Self { template, pid: sys::getpid(), cgroup, proc_stat, proc_maps, confinement })
    }

    /// Reads the zygote's figures (threads, mappings) from `/proc/self`.
    pub fn stats(&self) -> std::io::Result<ZygoteStats> {
        let threads = sys::threads_in_stat(&sys::read_proc_file(&self.proc_stat)?)?;
        let maps = sys::read_proc_file(&self.proc_maps)?;
        Ok(ZygoteStats {
            threads,
            mappings: maps.iter().filter(|&&b| b == b'\n').count(),
            memory_cgroup: self.cgroup.is_some(),
            namespaces: self.confinement.mounted.is_some(),
            seccomp: self.confinement.seccomp.is_some(),
        })
    }

    /// The template every task is forked from.
    pub fn template(&self) -> &Template {
        &self.template
    }

    /// Where each of the task's directories is, as the child will open it.
    fn preopens(&self, task: &Task) -> Result<Vec<Preopen>, Error> {
        let mut out = Vec::with_capacity(task.dirs.len());
        for d in &task.dirs {
            let path = match &self.confinement.mounted {
                None => {
                    let source = match std::fs::metadata(&d.host) {
                        Ok(m) if m.is_dir() => None,
                        Ok(_) => Some(std::io::Error::from(std::io::ErrorKind::NotADirectory)),
                        Err(e) => Some(e),
                    };
                    if let Some(source) = source {
                        return Err(Error::GrantDir { path: d.host.clone(), source });
                    }
                    d.host.to_string_lossy().into_owned()
                }
                Some(mounted) => mounted
                    .iter()
                    .find(|g| {
                        (g.host == d.host || g.canonical == d.host) && (d.read_only || !g.read_only)
                    })
                    .map(|g| g.inside.clone())
                    .ok_or_else(|| Error::NotGranted { path: d.host.clone() })?,
            };
            out.push(Preopen { path, guest: d.guest.clone(), read_only: d.read_only });
        }
        Ok(out)
    }

    /// Runs `task` in a new sandbox forked from the template and returns its outcome once the
    /// child has been reaped.
    ///
    /// Returns `Err` only when the task could not be started (a directory that cannot be
    /// granted, more than one thread in this process, no processes left); everything that
    /// happens to a started task, including its death, is an [`Outcome`].
    pub fn run(&mut self, task: &Task) -> Result<Outcome, Error> {
        self.run_payload(task, Payload::Guest)
    }

    /// Test support: forks a sandbox through exactly the same setup as [`run`](Self::run),
    /// then runs `probe` (native code, given the task's args) instead of the guest; what it
    /// returns becomes the sandbox's stdout. Used to prove the confinement from the inside.
    #[doc(hidden)]
    pub fn run_probe(
        &mut self,
        task: &Task,
        probe: fn(&[String]) -> String,
    ) -> Result<Outcome, Error> {
        self.run_payload(task, Payload::Probe(probe))
    }

    fn run_payload(&mut self, task: &Task, payload: Payload) -> Result<Outcome, Error> {
        let started = Instant::now();
        let preopens = self.preopens(task)?;
        if task.fuel.is_some() && !self.template.meters_fuel() {
            return Err(Error::FuelNotMetered);
        }
        let deadline = task.timeout.map(|t| started + t);
        let stat = sys::read_proc_file(&self.proc_stat).map_err(Error::ThreadCount)?;
        let threads = sys::threads_in_stat(&stat).map_err(Error::ThreadCount)?;
        if threads != 1 {
            return Err(Error::NotSingleThreaded { threads });
        }

        if let Some(cg) = &mut self.cgroup {
            let limit = task.max_memory.map(|m| m.saturating_add(HOST_OVERHEAD) as u64);
            if cg.set_limit(limit).is_err() {
                // A cgroup we cannot configure cannot bound anything: stop using it.
                self.cgroup = None;
            }
        }
        let (report_r, report_w) = sys::pipe().map_err(Error::Pipe)?;
        let captured = match task.output {
            Output::Capture { max_bytes } => {
                let (out_r, out_w) = sys::pipe().map_err(Error::Pipe)?;
                let (err_r, err_w) = sys::pipe().map_err(Error::Pipe)?;
                Some((max_bytes, out_r, out_w, err_r, err_w))
            }
            Output::Inherit => None,
        };
        let fds = ChildFds {
            stdin: matches!(task.stdin, Stdin::Inherit).then_some(0),
            stdout: captured.as_ref().map_or(1, |c| c.2.as_raw_fd()),
            stderr: captured.as_ref().map_or(2, |c| c.4.as_raw_fd()),
            report: report_w.as_raw_fd(),
        };
        let new_pid_ns = self.confinement.mounted.is_some();
        let mut plan = Plan {
            zygote_pid: self.pid,
            new_pid_ns,
            preopens,
            harden: Some(Rlimits::for_task(self.confinement.max_file_size, task.timeout)),
            seccomp: self.confinement.seccomp.as_ref(),
            forked_at: Instant::now(),
            deadline,
        };

        plan.forked_at = Instant::now();
        // SAFETY: we checked just above that this process has exactly one thread, and nothing
        // between that check and here starts one.
        let forked = unsafe { if new_pid_ns { sys::fork_new_pid_ns() } else { sys::fork() } };
        let pid = match forked.map_err(Error::Fork)? {
            Fork::Child => child::enter(&mut self.template, task, fds, &plan, payload),
            Fork::Parent(pid) => pid,
        };
        let fork_us = micros(plan.forked_at.elapsed());

        // Our copies of the child's ends must be closed, or we would never see end of file.
        drop(report_w);
        let (max_bytes, out_r, err_r) = match captured {
            Some((max, out_r, out_w, err_r, err_w)) => {
                drop((out_w, err_w));
                (max, Some(out_r), Some(err_r))
            }
            None => (0, None, None),
        };
        // The child interrupts its own Wasm at the deadline; past the grace, it is killed.
        let backstop = deadline.map(|d| d + KILL_GRACE);
        let collected = match collect(pid, report_r, out_r, err_r, max_bytes, backstop) {
            Ok(c) => c,
            Err(source) => {
                sys::kill_hard(pid);
                let _ = sys::wait(pid);
                return Err(Error::Collect(source));
            }
        };
        let (status, peak) = sys::wait(pid).map_err(|source| Error::Wait { pid, source })?;
        let mut outcome = judge(collected.report, status, collected.timed_out, task.timeout);
        if status == ExitStatus::Signal(libc::SIGKILL)
            && !collected.timed_out
            && let Some(cg) = self.cgroup.as_mut()
            && cg.oom_killed_since_last()
        {
            outcome.status = Status::MemoryLimit;
            outcome.message = Some(format!(
                "sandbox killed by the kernel: host-side memory exceeded {} bytes (cgroup)",
                cg.limit().unwrap_or(0)
            ));
        }
        outcome.peak_memory_bytes = peak;
        outcome.stdout = collected.stdout;
        outcome.stderr = collected.stderr;
        outcome.timings_us.fork = fork_us;
        outcome.timings_us.total = micros(started.elapsed());
        Ok(outcome)
    }
}

/// How long past its deadline a child may take to stop by itself (a guest blocked in a host
/// call does not see the epoch) before it is killed.
pub const KILL_GRACE: Duration = Duration::from_millis(50);

fn micros(d: Duration) -> u64 {
    d.as_micros().try_into().unwrap_or(u64::MAX)
}

/// What the zygote read from a child.
struct Collected {
    report: Result<Option<ChildReport>, String>,
    stdout: Captured,
    stderr: Captured,
    timed_out: bool,
}

/// One stream being drained: kept up to a cap, the rest read and dropped.
struct Drain {
    fd: Option<OwnedFd>,
    captured: Captured,
    max: usize,
}

impl Drain {
    fn new(fd: Option<OwnedFd>, max: usize) -> Self {
        Self { fd, captured: Captured::default(), max }
    }

    /// Reads once; closes the stream at end of file.
    fn read_once(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        let Some(fd) = &self.fd else { return Ok(()) };
        let n = sys::read(fd, buf)?;
        if n == 0 {
            self.fd = None;
            return Ok(());
        }
        let room = self.max.saturating_sub(self.captured.bytes.len());
        let keep = n.min(room);
        self.captured.bytes.extend_from_slice(&buf[..keep]);
        self.captured.truncated |= keep < n;
        Ok(())
    }
}

/// Reads the report and (when captured) the output streams until the child has closed them,
/// killing the child if the deadline passes first. Memory stays bounded by the caps however
/// much the guest writes; cost is linear in what it writes.
fn collect(
    pid: libc::pid_t,
    report: OwnedFd,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    max_bytes: usize,
    deadline: Option<Instant>,
) -> std::io::Result<Collected> {
    let mut frame = FrameReader::default();
    let mut report_result: Result<Option<ChildReport>, String> = Ok(None);
    let mut report_fd = Some(report);
    let mut streams = [Drain::new(stdout, max_bytes), Drain::new(stderr, max_bytes)];
    let mut timed_out = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let watched: Vec<&OwnedFd> =
            report_fd.iter().chain(streams.iter().filter_map(|d| d.fd.as_ref())).collect();
        if watched.is_empty() {
            break;
        }
        let raw: Vec<_> = watched.iter().map(|fd| fd.as_raw_fd()).collect();
        let timeout_ms = match deadline {
            Some(d) if !timed_out => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    sys::kill_hard(pid);
                    timed_out = true;
                    -1
                } else {
                    // Round up so the deadline has passed when poll returns.
                    (left.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32
                }
            }
            _ => -1,
        };
        let revents = sys::poll_readable(&raw, timeout_ms)?;
        let ready = |fd: &OwnedFd| {
            raw.iter().position(|&r| r == fd.as_raw_fd()).is_some_and(|i| revents[i] != 0)
        };
        if let Some(fd) = report_fd.as_ref().filter(|fd| ready(fd)) {
            let n = sys::read(fd, &mut buf)?;
            let step = if n == 0 { Frame::Corrupt(String::new()) } else { frame.push(&buf[..n]) };
            match step {
                Frame::Partial => {}
                Frame::Complete(r) => {
                    report_result = Ok(Some(r));
                    report_fd = None;
                }
                // End of file before a whole frame: no report (the child died first).
                Frame::Corrupt(e) if e.is_empty() => report_fd = None,
                Frame::Corrupt(e) => {
                    report_result = Err(e);
                    report_fd = None;
                }
            }
        }
        for d in &mut streams {
            if d.fd.as_ref().is_some_and(&ready) {
                d.read_once(&mut buf)?;
            }
        }
    }
    let [out, err] = streams;
    Ok(Collected { report: report_result, stdout: out.captured, stderr: err.captured, timed_out })
}

/// Decides the outcome from what the child reported and how it died.
fn judge(
    report: Result<Option<ChildReport>, String>,
    status: ExitStatus,
    timed_out: bool,
    timeout: Option<Duration>,
) -> Outcome {
    let mut o = Outcome {
        status: Status::InternalError,
        exit_code: None,
        stdout: Captured::default(),
        stderr: Captured::default(),
        message: None,
        timings_us: Timings::default(),
        peak_memory_bytes: 0,
        fuel_consumed: None,
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            o.message = Some(format!("sandbox sent a corrupt report: {e}"));
            return o;
        }
    };
    if let Some(r) = &report {
        o.timings_us.setup = r.setup_us;
        o.timings_us.run = r.run_us;
        o.fuel_consumed = r.fuel_consumed;
    }
    match (report, status) {
        (Some(r), _) if !timed_out || r.status != Status::InternalError => {
            o.status = r.status;
            o.exit_code = r.exit_code;
            o.message = r.message;
        }
        _ if timed_out => {
            o.status = Status::Timeout;
            let ms = timeout.map_or(0, |t| t.as_millis());
            o.message = Some(format!(
                "deadline of {ms} ms passed; sandbox killed {} ms later (blocked in a host call)",
                KILL_GRACE.as_millis()
            ));
        }
        (_, ExitStatus::Signal(libc::SIGSYS)) => {
            o.status = Status::SandboxViolation;
            o.message = Some("killed by SIGSYS: a forbidden system call".into());
        }
        (_, ExitStatus::Signal(libc::SIGABRT)) => {
            o.message =
                Some("sandbox aborted (SIGABRT): the runtime failed inside the child".into());
        }
        (_, ExitStatus::Signal(sig)) => {
            o.status = Status::Killed;
            o.message = Some(format!("sandbox killed by {}", sys::signal_name(sig)));
        }
        (_, ExitStatus::Code(code)) => {
            o.message = Some(format!("sandbox exited with code {code} without a report"));
        }
    }
    o
}
