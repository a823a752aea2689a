//! A sandbox in flight, seen from the zygote: its report pipe and output pipes being drained,
//! its deadline watched, until it is reaped. Several can be driven at once from one thread.

use crate::cgroup::Slot;
use crate::outcome::{Captured, Outcome};
use crate::sys::{self, ExitStatus};
use crate::task::Output;
use crate::wire::{ChildReport, Frame, FrameReader};
use crate::zygote::{KILL_GRACE, judge, micros};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// One stream being drained. Captured: kept up to a cap, the rest read and dropped, so memory
/// stays bounded however much the guest writes and cost is linear in what it writes. Relayed
/// (`sink`, output inherited): written on to the zygote's own descriptor as it arrives, so the
/// sandbox never holds the caller's stdout or stderr (a file there would fall under the
/// sandbox's file-size rlimit, which is meant for files in grants).
struct Drain {
    fd: Option<OwnedFd>,
    captured: Captured,
    max: usize,
    sink: Option<RawFd>,
}

impl Drain {
    fn read_once(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        let Some(fd) = &self.fd else { return Ok(()) };
        let n = sys::read(fd, buf)?;
        if n == 0 {
            self.fd = None;
            return Ok(());
        }
        if let Some(sink) = self.sink {
            if sys::write_all_waiting(sink, &buf[..n]).is_err() {
                // The caller's stream is gone (EPIPE: its reader closed) or failing: stop
                // relaying and close our end, so the guest's next write fails with EPIPE, as
                // it would have written to the closed stream itself. Nothing here is fatal to
                // the zygote or the task.
                self.fd = None;
            }
            return Ok(());
        }
        let room = self.max.saturating_sub(self.captured.bytes.len());
        let keep = n.min(room);
        self.captured.bytes.extend_from_slice(&buf[..keep]);
        self.captured.truncated |= keep < n;
        Ok(())
    }
}

/// A started sandbox.
pub(crate) struct Flight {
    pub pid: libc::pid_t,
    started: Instant,
    fork_us: u64,
    timeout: Option<Duration>,
    /// Past this the child is killed: its deadline plus the grace.
    backstop: Option<Instant>,
    report_fd: Option<OwnedFd>,
    frame: FrameReader,
    report: Result<Option<ChildReport>, String>,
    streams: [Drain; 2],
    timed_out: bool,
    /// The sandbox's memory cgroup, removed once it is reaped.
    slot: Option<Slot>,
}

/// What reaping a flight gives.
pub(crate) struct Landed {
    pub outcome: Outcome,
    pub status: ExitStatus,
    pub timed_out: bool,
    /// The sandbox's cgroup, when it was reaped here (else it went to `zombies` with it).
    pub slot: Option<Slot>,
}

impl Flight {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        pid: libc::pid_t,
        started: Instant,
        fork_us: u64,
        timeout: Option<Duration>,
        deadline: Option<Instant>,
        report: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
        output: Output,
        slot: Option<Slot>,
    ) -> Self {
        let drain = |fd, inherit_as| {
            let (max, sink) = match output {
                Output::Capture { max_bytes } => (max_bytes, None),
                Output::Inherit => (0, Some(inherit_as)),
            };
            Drain { fd: Some(fd), captured: Captured::default(), max, sink }
        };
        Self {
            pid,
            started,
            fork_us,
            timeout,
            backstop: deadline.map(|d| d + KILL_GRACE),
            report_fd: Some(report),
            frame: FrameReader::default(),
            report: Ok(None),
            streams: [drain(stdout, 1), drain(stderr, 2)],
            timed_out: false,
            slot,
        }
    }

    /// Bytes of stdout captured so far.
    pub(crate) fn stdout_len(&self) -> usize {
        self.streams[0].captured.bytes.len()
    }

    /// Whether every pipe is closed: the outcome can be decided.
    pub(crate) fn done(&self) -> bool {
        self.report_fd.is_none() && self.streams.iter().all(|d| d.fd.is_none())
    }

    fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.report_fd
            .iter()
            .chain(self.streams.iter().filter_map(|d| d.fd.as_ref()))
            .map(|fd| fd.as_raw_fd())
    }

    /// Kills the child if it is past its backstop; returns how long until it is.
    fn watch(&mut self, now: Instant) -> Option<Duration> {
        let backstop = self.backstop.filter(|_| !self.timed_out)?;
        let left = backstop.saturating_duration_since(now);
        if left.is_zero() {
            sys::kill_hard(self.pid);
            self.timed_out = true;
            return None;
        }
        Some(left)
    }

    fn on_ready(&mut self, fd: RawFd, buf: &mut [u8]) -> std::io::Result<()> {
        if let Some(r) = self.report_fd.as_ref().filter(|r| r.as_raw_fd() == fd) {
            let n = sys::read(r, buf)?;
            let step = if n == 0 { None } else { Some(self.frame.push::<ChildReport>(&buf[..n])) };
            match step {
                Some(Frame::Partial) => {}
                Some(Frame::Complete(r)) => {
                    self.report = Ok(Some(r));
                    self.report_fd = None;
                }
                // End of file before a whole frame: no report (the child died first).
                None => self.report_fd = None,
                Some(Frame::Corrupt(e)) => {
                    self.report = Err(e);
                    self.report_fd = None;
                }
            }
            return Ok(());
        }
        for d in &mut self.streams {
            if d.fd.as_ref().is_some_and(|s| s.as_raw_fd() == fd) {
                d.read_once(buf)?;
            }
        }
        Ok(())
    }

    /// Kills and reaps a flight whose outcome no longer matters; returns its cgroup.
    pub(crate) fn abandon(self) -> Option<Slot> {
        sys::kill_hard(self.pid);
        let _ = sys::wait(self.pid);
        self.slot
    }

    /// Decides the outcome. With a report in hand the child's exit status adds nothing, so
    /// the outcome does not wait for its teardown (unmapping everything it inherited): a child
    /// not yet gone is pushed on `zombies`, to be reaped later. Without a report, the way it
    /// died is the outcome, so it is reaped now.
    pub(crate) fn land(
        mut self,
        zombies: &mut Vec<(libc::pid_t, Option<Slot>)>,
    ) -> std::io::Result<Landed> {
        let reported = matches!(&self.report, Ok(Some(_)));
        let mut slot = self.slot.take();
        let (status, peak) = if reported && !self.timed_out {
            let peak = self.report.as_ref().ok().and_then(Option::as_ref).map_or(0, |r| r.peak_rss);
            match sys::try_wait(self.pid)? {
                Some((status, _)) => (status, peak),
                None => {
                    zombies.push((self.pid, slot.take()));
                    (ExitStatus::Code(0), peak)
                }
            }
        } else {
            sys::wait(self.pid)?
        };
        let [out, err] = self.streams;
        let mut outcome = judge(self.report, status, self.timed_out, self.timeout);
        outcome.peak_memory_bytes = peak;
        outcome.stdout = out.captured;
        outcome.stderr = err.captured;
        outcome.timings_us.fork = self.fork_us;
        outcome.timings_us.total = micros(self.started.elapsed());
        Ok(Landed { outcome, status, timed_out: self.timed_out, slot })
    }
}

/// One round: waits until some flight has data or a backstop passes, then reads what is ready.
pub(crate) fn drive(flights: &mut [&mut Flight], buf: &mut [u8]) -> std::io::Result<()> {
    let now = Instant::now();
    let mut wait: Option<Duration> = None;
    for f in flights.iter_mut() {
        if let Some(left) = f.watch(now) {
            wait = Some(wait.map_or(left, |w| w.min(left)));
        }
    }
    let owners: Vec<(usize, RawFd)> =
        flights.iter().enumerate().flat_map(|(i, f)| f.fds().map(move |fd| (i, fd))).collect();
    if owners.is_empty() {
        return Ok(());
    }
    let raw: Vec<RawFd> = owners.iter().map(|&(_, fd)| fd).collect();
    // Round up so the backstop has passed when poll returns.
    let timeout_ms = wait.map_or(-1, |w| w.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32);
    let revents = sys::poll_readable(&raw, timeout_ms)?;
    for (&(i, fd), &ev) in owners.iter().zip(&revents) {
        if ev != 0 {
            flights[i].on_ready(fd, buf)?;
        }
    }
    Ok(())
}
