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
    };
    send(&sock, &ready, &[])?;
    let mut server =
        Server { zygote, sock, running: Vec::new(), idle: Vec::new(), pool: load.pool };
    let result = server.run();
    server.shutdown();
    result
}

/// Builds the template and the zygote from a load request.
fn build(load: &LoadRequest, module: Option<OwnedFd>) -> Result<Zygote, Error> {
    let path = std::path::PathBuf::from(&load.name);
    let module = module.ok_or_else(|| Error::ReadModule {
        path: path.clone(),
        source: std::io::Error::other("the load request carried no module"),
    })?;
    let bytes = std::fs::read(format!("/proc/self/fd/{}", module.as_raw_fd()))
        .map_err(|source| Error::ReadModule { path, source })?;
    drop(module);
    let mut config = Config::new();
    config.warm_up(load.warm_up.clone());
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
    Zygote::with_isolation_self_filtered(template, isolation)
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

struct Server {
    zygote: Zygote,
    sock: OwnedFd,
    running: Vec<Running>,
    /// Pidfds of the pool's idle sandboxes, to notice one that dies while waiting.
    idle: Vec<(libc::pid_t, OwnedFd)>,
    pool: usize,
}

impl Server {
    /// The event loop: requests, sandbox exits, backstops; the pool is refilled only when
    /// no request is waiting.
    fn run(&mut self) -> std::io::Result<()> {
        self.zygote.set_pool_size(0);
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
            let pool_short = self.idle.len() < self.pool;
            // With the pool short, only look (timeout 0): a request first, then one more fork.
            let timeout = if pool_short { Some(Duration::ZERO) } else { next };
            let mut fds: Vec<RawFd> = vec![self.sock.as_raw_fd()];
            fds.extend(self.running.iter().map(|r| r.pidfd.as_raw_fd()));
            fds.extend(self.idle.iter().map(|(_, fd)| fd.as_raw_fd()));
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
            let dead_idle: Vec<libc::pid_t> = self
                .idle
                .iter()
                .enumerate()
                .filter(|&(j, _)| ready[1 + n_running + j] != 0)
                .map(|(_, (pid, _))| *pid)
                .collect();
            for pid in dead_idle {
                self.idle.retain(|(p, _)| *p != pid);
                self.zygote.forget_idle(pid);
                let _ = sys::wait(pid);
            }
            if ready[0] != 0 {
                match recv(&self.sock)? {
                    None => return Ok(()),
                    Some((Request::Shutdown, _)) => return Ok(()),
                    Some((request, fds)) => self.handle(request, fds)?,
                }
            } else if !any && pool_short {
                self.refill_one();
            }
            if !any || !pool_short {
                // Spare empty cgroups, made after the reply is out (a no-op when enough exist).
                self.zygote.top_up_cgroups();
            }
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
        let started = Instant::now();
        // Checked: `Instant + Duration` panics past the clock's range.
        let backstop = match timeout_us.map(|us| {
            started.checked_add(Duration::from_micros(us)).and_then(|d| d.checked_add(KILL_GRACE))
        }) {
            Some(None) => {
                let message = format!("timeout of {} µs is out of range", timeout_us.unwrap_or(0));
                return send(&self.sock, &Reply::RunFailed { id, message }, &[]);
            }
            backstop => backstop.flatten(),
        };
        let (mut sandbox, fork_us) = match self.zygote.hand_out(stdin, max_memory) {
            Ok(h) => h,
            Err(e) => {
                return send(&self.sock, &Reply::RunFailed { id, message: e.one_line() }, &[]);
            }
        };
        if fork_us == 0 {
            self.idle.retain(|(p, _)| *p != sandbox.pid);
        }
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
        let (status, peak_rss) = sys::wait(r.pid)?;
        let (code, signal) = match status {
            ExitStatus::Code(c) => (Some(c), None),
            ExitStatus::Signal(s) => (None, Some(s)),
        };
        let oom = match &r.slot {
            Some(slot) if signal == Some(libc::SIGKILL) && !r.timed_out && slot.oom_killed() => {
                Some(slot.limit())
            }
            _ => None,
        };
        self.zygote.release_slot(r.slot);
        let reply = Reply::Exited {
            id: r.id,
            code,
            signal,
            peak_rss,
            timed_out: r.timed_out,
            oom_killed: oom.is_some(),
            memory_limit: oom.flatten(),
        };
        send(&self.sock, &reply, &[])
    }

    fn refill_one(&mut self) {
        if let Ok(pid) = self.zygote.prefork_one()
            && let Ok(fd) = sys::pidfd_open(pid)
        {
            self.idle.push((pid, fd));
        }
    }

    /// Kills every sandbox, running or idle, and reaps them.
    fn shutdown(&mut self) {
        for r in std::mem::take(&mut self.running) {
            sys::kill_hard(r.pid);
            let _ = sys::wait(r.pid);
            self.zygote.release_slot(r.slot);
        }
        self.idle.clear();
    }
}
