//! The zygote: holds a warm [`Template`] and forks it once per task.
//!
//! It must be single-threaded at every fork — in the child only the forking thread survives,
//! and a lock held by any other thread (the allocator's, stdio's, Wasmtime's) would stay locked
//! forever. [`Zygote::run`] checks the thread count before each fork and refuses otherwise.

use crate::cgroup::MemoryCgroup;
use crate::child::{self, ChildFds};
use crate::error::Error;
use crate::outcome::{Captured, Outcome, Status, Timings};
use crate::sys::{self, ExitStatus, Fork};
use crate::task::{Output, Stdin, Task};
use crate::template::Template;
use crate::wire::{ChildReport, Frame, FrameReader};
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
}

/// Host-side memory a sandbox may use beyond its linear-memory cap (Wasmtime's and WASI's own
/// allocations, copy-on-write copies of the zygote's pages), when a memory cgroup is available.
pub const HOST_OVERHEAD: usize = 64 << 20;

/// A warm template that runs each task in its own forked sandbox.
pub struct Zygote {
    template: Template,
    pid: libc::pid_t,
    cgroup: Option<MemoryCgroup>,
}

impl Zygote {
    /// Takes ownership of a template. The process that calls [`run`](Self::run) must stay
    /// single-threaded. Sandboxes are placed in a memory cgroup when the machine offers one.
    pub fn new(template: Template) -> Self {
        Self { template, pid: sys::getpid(), cgroup: MemoryCgroup::create().ok() }
    }

    /// Reads the zygote's figures (threads, mappings) from `/proc/self`.
    pub fn stats(&self) -> std::io::Result<ZygoteStats> {
        Ok(ZygoteStats {
            threads: sys::thread_count()?,
            mappings: sys::mapping_count()?,
            memory_cgroup: self.cgroup.is_some(),
        })
    }

    /// The template every task is forked from.
    pub fn template(&self) -> &Template {
        &self.template
    }

    /// Runs `task` in a new sandbox forked from the template and returns its outcome once the
    /// child has been reaped.
    ///
    /// Returns `Err` only when the task could not be started (a directory that cannot be
    /// granted, more than one thread in this process, no processes left); everything that
    /// happens to a started task, including its death, is an [`Outcome`].
    pub fn run(&mut self, task: &Task) -> Result<Outcome, Error> {
        let started = Instant::now();
        for d in &task.dirs {
            match std::fs::metadata(&d.host) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    let source = std::io::Error::from(std::io::ErrorKind::NotADirectory);
                    return Err(Error::GrantDir { path: d.host.clone(), source });
                }
                Err(source) => {
                    return Err(Error::GrantDir { path: d.host.clone(), source });
                }
            }
        }
        if task.fuel.is_some() && !self.template.meters_fuel() {
            return Err(Error::FuelNotMetered);
        }
        let deadline = task.timeout.map(|t| started + t);
        let threads = sys::thread_count().map_err(Error::ThreadCount)?;
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

        let fork_at = Instant::now();
        // SAFETY: we checked just above that this process has exactly one thread, and nothing
        // between that check and here starts one.
        let pid = match unsafe { sys::fork() }.map_err(Error::Fork)? {
            Fork::Child => child::enter(&mut self.template, task, fds, self.pid, fork_at, deadline),
            Fork::Parent(pid) => pid,
        };
        let fork_us = micros(fork_at.elapsed());

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
        if status == ExitStatus::Signal(libc::SIGKILL) && !collected.timed_out {
            if let Some(cg) = self.cgroup.as_mut() {
                if cg.oom_killed_since_last() {
                    outcome.status = Status::MemoryLimit;
                    outcome.message = Some(format!(
                        "sandbox killed by the kernel: host-side memory exceeded {} bytes (cgroup)",
                        cg.limit().unwrap_or(0)
                    ));
                }
            }
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
            if d.fd.as_ref().is_some_and(|fd| ready(fd)) {
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
