//! The zygote process role: one single-threaded process per template, started fresh by a host
//! (re-executing the host's own binary, see [`command`]), serving the host over a
//! `SOCK_SEQPACKET` socket on its stdin with the messages of [`crate::protocol`].
//!
//! How a re-executed binary becomes a zygote without code in the application: a constructor
//! ([`become_zygote_if_asked`]) that runs before `main` — before the application, its async
//! runtime or anything else can start a thread — sees [`ZYGOTE_ENV`] and serves until the host
//! goes away, then `_exit`s; `main` never runs. The pattern of CPython's forkserver and the
//! Chromium zygote: a single-threaded process started apart from the host's threads.
//!
//! The zygote never holds a task's data: for each run it forks (or takes from its pool) a
//! confined sandbox and sends the host the sandbox's pipes; the host writes the task into the
//! sandbox and reads its output directly. The zygote only forks, watches deadlines (killing at
//! deadline + grace), reaps, and reports how each sandbox ended.

use crate::cgroup::Slot;
use crate::compile::CompileLimits;
use crate::error::Error;
use crate::protocol::{
    self, IsolationSpec, LoadRequest, MAX_MESSAGE, MountedGrantInfo, Reply, Request, VERSION,
    ZYGOTE_ENV,
};
use crate::sys::{self, ExitStatus, Received};
use crate::task::DirGrant;
use crate::template::{Config, InitLimits, Template};
use crate::zygote::{Isolation, KILL_GRACE, Zygote};

/// How long after a sandbox exits housekeeping waits for the host's next request (which,
/// under load, follows an outcome within tens of microseconds).
const IDLE_GRACE: Duration = Duration::from_millis(1);
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The command that starts a zygote: this very binary, with [`ZYGOTE_ENV`] set and `socket`
/// as its stdin. Calling this from the host also keeps this module (and so the constructor)
/// in the link.
pub(crate) fn command(socket: OwnedFd) -> std::io::Result<std::process::Command> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let mut c = std::process::Command::new(exe);
    c.env(ZYGOTE_ENV, VERSION.to_string())
        .stdin(std::process::Stdio::from(socket))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    Ok(c)
}

/// Runs before `main`: in a process started by [`command`], serve as a zygote and exit;
/// otherwise return at once.
#[ctor::ctor(unsafe)]
fn become_zygote_if_asked() {
    let Some(version) = std::env::var_os(ZYGOTE_ENV) else { return };
    // SAFETY: before main, in a freshly executed process: no other thread exists to read the
    // environment concurrently.
    unsafe { std::env::remove_var(ZYGOTE_ENV) };
    let code = if version.to_str() == Some(VERSION.to_string().as_str()) {
        // SAFETY: the host started us with the socket as stdin and nothing else owns fd 0.
        let sock = unsafe { OwnedFd::from_raw_fd(0) };
        match serve(sock) {
            Ok(()) => 0,
            // The host went away mid-reply: nothing to report to, nobody to tell.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                0
            }
            Err(e) => {
                eprintln!("zeroboot-wasm zygote: {e}");
                70
            }
        }
    } else {
        eprintln!("zeroboot-wasm zygote: protocol version {version:?} is not {VERSION}");
        70
    };
    sys::exit_now(code)
}

fn send(sock: &OwnedFd, reply: &Reply, fds: &[RawFd]) -> std::io::Result<()> {
    sys::send_message(sock.as_raw_fd(), &protocol::encode(reply), fds)
}

/// Receives one request (blocking); `None` when the host has gone.
fn recv(sock: &OwnedFd) -> std::io::Result<Option<(Request, Vec<OwnedFd>)>> {
    match sys::recv_message(sock.as_raw_fd(), MAX_MESSAGE)? {
        Received::Closed => Ok(None),
        Received::Message(bytes, fds) => protocol::decode(&bytes)
            .map(|r| Some((r, fds)))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
    }
}

/// The zygote's life: handshake, load, then serve runs until the host goes away.
fn serve(sock: OwnedFd) -> std::io::Result<()> {
    match recv(&sock)? {
        Some((Request::Hello { version }, _)) if version == VERSION => {
            send(&sock, &Reply::Hello { version: VERSION, pid: sys::getpid() }, &[])?;
        }
        Some((Request::Hello { version }, _)) => {
            let _ = send(&sock, &Reply::Hello { version: VERSION, pid: sys::getpid() }, &[]);
            return Err(std::io::Error::other(format!(
                "host speaks protocol {version}, this zygote {VERSION}"
            )));
        }
        Some(_) => return Err(std::io::Error::other("expected hello")),
        None => return Ok(()),
    }
    let (load, fds) = match recv(&sock)? {
        Some((Request::Load(load), fds)) => (load, fds),
        Some(_) => return Err(std::io::Error::other("expected load")),
        None => return Ok(()),
    };
    let zygote = match build(&load, fds.into_iter().next()) {
        Ok(z) => z,
        Err(e) => {
            let reply = Reply::LoadFailed { message: e.one_line(), kind: e.load_failure() };
            send(&sock, &reply, &[])?;
            return Ok(());
        }
    };
    let ready = Reply::Ready {
        meters_fuel: zygote.template().meters_fuel(),
        grants: zygote
            .mounted_grants()
            .iter()
            .map(|g| MountedGrantInfo {
                host: g.host.clone(),
                canonical: g.canonical.clone(),
                inside: g.inside.clone(),
                read_only: g.read_only,
            })
            .collect(),
        namespaces: zygote.stats().map(|s| s.namespaces).unwrap_or(false),
        exports: Some(zygote.template().exports().clone())
            .filter(|e| crate::protocol::encode(e).len() <= MAX_MESSAGE / 2),
        scratch: zygote.has_scratch(),
    };
    send(&sock, &ready, &[])?;
    let mut server = Server {
        zygote,
        sock,
        running: Vec::new(),
        pooled: Vec::new(),
        next_sandbox: 0,
        pool: load.pool,
        released: Vec::new(),
        retired: std::collections::VecDeque::new(),
        stalled: false,
    };
    let result = server.run();
    server.shutdown();
    result
}

/// Builds the template and the zygote from a load request.
pub(crate) fn build(load: &LoadRequest, module: Option<OwnedFd>) -> Result<Zygote, Error> {
    let path = std::path::PathBuf::from(&load.name);
    let module = module.ok_or_else(|| Error::ReadModule {
        path: path.clone(),
        source: std::io::Error::other("the load request carried no module"),
    })?;
    let bytes = std::fs::read(format!("/proc/self/fd/{}", module.as_raw_fd()))
        .map_err(|source| Error::ReadModule { path, source })?;
    drop(module);
    let mut config = Config::new();
    config.warm_up(load.warm_up.clone()).huge_pages(load.huge_pages);
    config.cache_dir(load.cache_dir.clone()).fuel(load.fuel).compile_limits(load.compile.map(
        |c| CompileLimits {
            timeout: Duration::from_micros(c.timeout_us),
            max_memory: c.max_memory,
        },
    ));
    // Compiles in a bounded child (this process is single-threaded: it runs before `main`);
    // runs none of the module's code.
    let template = Template::from_bytes(&load.name, &bytes, &config)?;
    drop(bytes);
    // This process's own code, before anything confines it (the move maps code).
    let own_code = if load.huge_pages { crate::hugepages::back_own_code() } else { 0 };
    let IsolationSpec { namespaces, seccomp, max_file_size, grants, init, scratch } =
        load.isolation.clone();
    let isolation = Isolation {
        namespaces,
        seccomp,
        max_file_size,
        grants: grants
            .into_iter()
            .map(|g| DirGrant { host: g.host, guest: g.guest, read_only: g.read_only })
            .collect(),
        init: InitLimits {
            timeout: init.timeout_us.map(Duration::from_micros),
            max_memory: init.max_memory,
            fuel: init.fuel,
        },
        scratch,
    };
    // Confines this process (namespaces, then the zygote's seccomp filter), and only then
    // instantiates under `init`: the module's start function runs here, confined.
    let mut zygote = Zygote::with_isolation_self_filtered(template, isolation)?;
    zygote.set_runtime_code_huge(own_code);
    Ok(zygote)
}

/// A started run's sandbox.
struct Running {
    id: u64,
    pid: libc::pid_t,
    pidfd: OwnedFd,
    /// Killed if still alive past this.
    backstop: Option<Instant>,
    timed_out: bool,
    /// Its memory cgroup, removed once it is reaped.
    slot: Option<Slot>,
}

/// How a reaped sandbox ended.
struct SandboxExit {
    status: ExitStatus,
    peak_rss: u64,
    timed_out: bool,
    /// Killed by the kernel's OOM killer in its cgroup, with that cgroup's limit.
    oom: Option<Option<u64>>,
}

impl SandboxExit {
    fn reply(&self, id: u64) -> Reply {
        let (code, signal) = match self.status {
            ExitStatus::Code(c) => (Some(c), None),
            ExitStatus::Signal(s) => (None, Some(s)),
        };
        Reply::Exited {
            id,
            code,
            signal,
            peak_rss: self.peak_rss,
            timed_out: self.timed_out,
            oom_killed: self.oom.is_some(),
            memory_limit: self.oom.flatten(),
        }
    }
}

/// Pool sandboxes that ended unclaimed, remembered for a claim on its way.
const RETIRED_KEPT: usize = 64;

/// A pool sandbox handed to the host, waiting for its claim.
struct PooledSandbox {
    sandbox: u64,
    pid: libc::pid_t,
    pidfd: OwnedFd,
    slot: Option<Slot>,
}

/// When to kill a run's sandbox that outlives its timeout; `Err` for a timeout past the
/// clock's range.
pub(crate) fn backstop_for(
    started: Instant,
    timeout_us: Option<u64>,
) -> Result<Option<Instant>, String> {
    match timeout_us {
        None => Ok(None),
        // Checked: `Instant + Duration` panics past the clock's range.
        Some(us) => started
            .checked_add(Duration::from_micros(us))
            .and_then(|d| d.checked_add(KILL_GRACE))
            .map(Some)
            .ok_or_else(|| format!("timeout of {us} µs is out of range")),
    }
}

struct Server {
    zygote: Zygote,
    sock: OwnedFd,
    running: Vec<Running>,
    /// Pool sandboxes handed to the host and not claimed yet (their pidfds, to notice one
    /// that dies or whose channel the host closes).
    pooled: Vec<PooledSandbox>,
    next_sandbox: u64,
    pool: usize,
    /// How the last pool sandboxes that ended unclaimed ended, for a claim on its way.
    retired: std::collections::VecDeque<(u64, SandboxExit)>,
    /// Cgroups of reaped sandboxes, to remove when there is time.
    released: Vec<Slot>,
    /// A refill fork or a spare cgroup failed; housekeeping waits until a sandbox starts or
    /// exits rather than retrying in a busy loop.
    stalled: bool,
}

impl Server {
    /// The event loop: requests, sandbox exits, backstops, and housekeeping (removing reaped
    /// sandboxes' cgroups, making spare ones, refilling the pool).
    ///
    /// Housekeeping is kept off the request path. Right after a sandbox exits, the host's next
    /// request is usually on its way, so housekeeping waits [`IDLE_GRACE`] for it; right after
    /// a sandbox starts, the zygote has nothing to do until that sandbox ends, so housekeeping
    /// is due at once. It runs one step at a time, with a look at the socket between steps.
    fn run(&mut self) -> std::io::Result<()> {
        self.zygote.set_pool_size(0);
        // The first request usually follows `Ready` at once (a one-shot `run` sends it right
        // away): housekeeping waits for it as it does after an exit.
        let mut chores_at = Instant::now() + IDLE_GRACE;
        loop {
            let now = Instant::now();
            for r in &mut self.running {
                if !r.timed_out && r.backstop.is_some_and(|b| b <= now) {
                    sys::kill_hard(r.pid);
                    r.timed_out = true;
                }
            }
            let next = self
                .running
                .iter()
                .filter(|r| !r.timed_out)
                .filter_map(|r| r.backstop)
                .min()
                .map(|b| b.saturating_duration_since(now));
            let chores = self.has_chores();
            let timeout = match (chores, next) {
                (true, Some(n)) => Some(n.min(chores_at.saturating_duration_since(now))),
                (true, None) => Some(chores_at.saturating_duration_since(now)),
                (false, n) => n,
            };
            let mut fds: Vec<RawFd> = vec![self.sock.as_raw_fd()];
            fds.extend(self.running.iter().map(|r| r.pidfd.as_raw_fd()));
            fds.extend(self.pooled.iter().map(|p| p.pidfd.as_raw_fd()));
            let ms =
                timeout.map_or(-1, |t| t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32);
            let ready = sys::poll_readable(&fds, ms)?;
            let any = ready.iter().any(|&r| r != 0);
            let n_running = self.running.len();
            // Exits first (they free their ids), then requests.
            let exited: Vec<usize> = (0..n_running).filter(|&i| ready[1 + i] != 0).collect();
            for &i in exited.iter().rev() {
                let r = self.running.swap_remove(i);
                self.report_exit(r)?;
            }
            if !exited.is_empty() {
                chores_at = chores_at.max(Instant::now() + IDLE_GRACE);
                self.stalled = false;
            }
            let gone: Vec<usize> =
                (0..self.pooled.len()).filter(|&j| ready[1 + n_running + j] != 0).collect();
            for &j in gone.iter().rev() {
                let p = self.pooled.swap_remove(j);
                // Kept for a claim already on its way: the host may have written its task
                // into this sandbox, which then ended because of that task (a crash, a kill).
                let exit = self.reap(p.pid, p.slot, false)?;
                if self.retired.len() == RETIRED_KEPT {
                    self.retired.pop_front();
                }
                self.retired.push_back((p.sandbox, exit));
                send(&self.sock, &Reply::Retired { sandbox: p.sandbox }, &[])?;
            }
            if ready[0] != 0 {
                match recv(&self.sock)? {
                    None => return Ok(()),
                    Some((Request::Shutdown, _)) => return Ok(()),
                    Some((request, fds)) => {
                        if matches!(request, Request::Run { .. } | Request::Claim { .. }) {
                            chores_at = Instant::now();
                            self.stalled = false;
                        }
                        self.handle(request, fds)?;
                    }
                }
            } else if !any && chores && Instant::now() >= chores_at {
                self.chore();
            }
        }
    }

    /// Whether housekeeping is waiting: a cgroup to remove, the pool short, spares short.
    fn has_chores(&self) -> bool {
        !self.released.is_empty()
            || (!self.stalled && (self.pooled.len() < self.pool || self.zygote.cgroups_short()))
    }

    /// One step of housekeeping, the cheapest first.
    fn chore(&mut self) {
        if let Some(slot) = self.released.pop() {
            self.zygote.release_slot(Some(slot));
        } else if self.pooled.len() < self.pool {
            self.stalled = !self.refill_one();
        } else {
            self.stalled = !self.zygote.top_up_cgroup();
        }
    }

    fn handle(&mut self, request: Request, mut fds: Vec<OwnedFd>) -> std::io::Result<()> {
        match request {
            Request::Run { id, timeout_us, max_memory, inherit_stdin } => {
                let stdin = if inherit_stdin { fds.pop() } else { None };
                if inherit_stdin && stdin.is_none() {
                    let message = "run asked to inherit stdin but sent no descriptor".into();
                    return send(&self.sock, &Reply::RunFailed { id, message }, &[]);
                }
                self.start(id, timeout_us, max_memory, stdin.as_ref())
            }
            Request::Claim { id, sandbox, timeout_us, set_limit } => {
                self.claim(id, sandbox, timeout_us, set_limit)
            }
            Request::Cancel { id } => {
                if let Some(r) = self.running.iter().find(|r| r.id == id) {
                    sys::kill_hard(r.pid);
                }
                Ok(())
            }
            Request::Stats => match self.zygote.stats() {
                Ok(s) => send(&self.sock, &Reply::Stats(s), &[]),
                Err(e) => Err(e),
            },
            Request::Hello { .. } | Request::Load(_) | Request::Shutdown => {
                Err(std::io::Error::other("unexpected request after load"))
            }
        }
    }

    fn start(
        &mut self,
        id: u64,
        timeout_us: Option<u64>,
        max_memory: Option<u64>,
        stdin: Option<&OwnedFd>,
    ) -> std::io::Result<()> {
        let backstop = match backstop_for(Instant::now(), timeout_us) {
            Ok(b) => b,
            Err(message) => return send(&self.sock, &Reply::RunFailed { id, message }, &[]),
        };
        let (mut sandbox, fork_us) = match self.zygote.hand_out(stdin, max_memory) {
            Ok(h) => h,
            Err(e) => {
                return send(&self.sock, &Reply::RunFailed { id, message: e.one_line() }, &[]);
            }
        };
        let pidfd = match sys::pidfd_open(sandbox.pid) {
            Ok(fd) => fd,
            Err(e) => {
                sys::kill_hard(sandbox.pid);
                let _ = sys::wait(sandbox.pid);
                self.zygote.release_slot(sandbox.slot.take());
                let message = format!("cannot watch the sandbox: {e}");
                return send(&self.sock, &Reply::RunFailed { id, message }, &[]);
            }
        };
        let fds = [
            sandbox.task_w.as_raw_fd(),
            sandbox.report_r.as_raw_fd(),
            sandbox.out_r.as_raw_fd(),
            sandbox.err_r.as_raw_fd(),
        ];
        let slot = sandbox.slot.take();
        self.running.push(Running {
            id,
            pid: sandbox.pid,
            pidfd,
            backstop,
            timed_out: false,
            slot,
        });
        // Our copies of the pipes close when `sandbox` drops: the host holds the only ones.
        send(&self.sock, &Reply::Started { id, fork_us }, &fds)
    }

    fn report_exit(&mut self, r: Running) -> std::io::Result<()> {
        let exit = self.reap(r.pid, r.slot, r.timed_out)?;
        send(&self.sock, &exit.reply(r.id), &[])
    }

    /// Reaps a sandbox and says how it ended; its cgroup is removed later, off the request
    /// path.
    fn reap(
        &mut self,
        pid: libc::pid_t,
        slot: Option<Slot>,
        timed_out: bool,
    ) -> std::io::Result<SandboxExit> {
        let (status, peak_rss) = sys::wait(pid)?;
        let signal = match status {
            ExitStatus::Signal(s) => Some(s),
            ExitStatus::Code(_) => None,
        };
        let oom = match &slot {
            Some(slot) if signal == Some(libc::SIGKILL) && !timed_out && slot.oom_killed() => {
                Some(slot.limit())
            }
            _ => None,
        };
        self.released.extend(slot);
        Ok(SandboxExit { status, peak_rss, timed_out, oom })
    }

    /// Forks one pool sandbox and hands it to the host; `false` if it could not.
    fn refill_one(&mut self) -> bool {
        let Ok(mut idle) = self.zygote.fork_idle() else { return false };
        let pidfd = match sys::pidfd_open(idle.pid) {
            Ok(fd) => fd,
            Err(_) => {
                self.zygote.dismiss(idle);
                return false;
            }
        };
        let sandbox = self.next_sandbox;
        self.next_sandbox += 1;
        let fds = [
            idle.task_w.as_raw_fd(),
            idle.report_r.as_raw_fd(),
            idle.out_r.as_raw_fd(),
            idle.err_r.as_raw_fd(),
        ];
        let reply = Reply::Pooled { sandbox, max_memory: self.zygote.pool_max_memory() };
        if send(&self.sock, &reply, &fds).is_err() {
            self.zygote.dismiss(idle);
            return false;
        }
        // Our copies of its pipes close here: the host holds the only ones, and a sandbox
        // whose channel the host closes exits (and is reaped as `Retired`).
        let slot = idle.slot.take();
        self.pooled.push(PooledSandbox { sandbox, pid: idle.pid, pidfd, slot });
        true
    }

    /// A claim of pooled sandbox `sandbox` for run `id`: it becomes a running sandbox (with
    /// its backstop), after its memory limit is set if asked.
    fn claim(
        &mut self,
        id: u64,
        sandbox: u64,
        timeout_us: Option<u64>,
        set_limit: Option<crate::protocol::SetLimit>,
    ) -> std::io::Result<()> {
        let Some(j) = self.pooled.iter().position(|p| p.sandbox == sandbox) else {
            // Ended before its claim arrived: how it ended is the run's end.
            if let Some(k) = self.retired.iter().position(|(s, _)| *s == sandbox)
                && let Some((_, exit)) = self.retired.remove(k)
            {
                return send(&self.sock, &exit.reply(id), &[]);
            }
            let message = format!("pool sandbox {sandbox} is gone");
            return send(&self.sock, &Reply::RunFailed { id, message }, &[]);
        };
        let mut p = self.pooled.swap_remove(j);
        let backstop = match backstop_for(Instant::now(), timeout_us) {
            Ok(b) => b,
            Err(message) => {
                sys::kill_hard(p.pid);
                let _ = sys::wait(p.pid);
                self.released.extend(p.slot);
                return send(&self.sock, &Reply::RunFailed { id, message }, &[]);
            }
        };
        if let Some(crate::protocol::SetLimit { max_memory }) = set_limit {
            self.zygote.set_pool_max_memory(max_memory);
            if let Err(e) = crate::zygote::set_slot_memory_limit(p.slot.as_mut(), max_memory) {
                sys::kill_hard(p.pid);
                let _ = sys::wait(p.pid);
                self.released.extend(p.slot);
                return send(&self.sock, &Reply::RunFailed { id, message: e.one_line() }, &[]);
            }
        }
        self.running.push(Running {
            id,
            pid: p.pid,
            pidfd: p.pidfd,
            backstop,
            timed_out: false,
            slot: p.slot,
        });
        if set_limit.is_some() {
            send(&self.sock, &Reply::Started { id, fork_us: 0 }, &[])?;
        }
        Ok(())
    }

    /// Kills every sandbox, running or idle, and reaps them.
    fn shutdown(&mut self) {
        for r in std::mem::take(&mut self.running) {
            sys::kill_hard(r.pid);
            let _ = sys::wait(r.pid);
            self.zygote.release_slot(r.slot);
        }
        for slot in std::mem::take(&mut self.released) {
            self.zygote.release_slot(Some(slot));
        }
        for p in std::mem::take(&mut self.pooled) {
            sys::kill_hard(p.pid);
            let _ = sys::wait(p.pid);
            self.zygote.release_slot(p.slot);
        }
    }
}
