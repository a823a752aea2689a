//! The host role: any process, with any number of threads, that runs tasks through zygote
//! processes of its own — one per loaded template — over the protocol of [`crate::protocol`].
//!
//! [`Runtime`] → [`Runtime::load`] → [`TemplateHandle`] → [`TemplateHandle::run`] →
//! [`Outcome`]. A run asks the template's zygote for a sandbox, writes the task straight into
//! the sandbox's channel and reads its output and report straight from its pipes, so a task's
//! data never passes through the zygote. Many runs can be in flight per template and across
//! templates; admission is bounded (in-flight limit, then a bounded queue, then
//! [`Error::Busy`]). Dropping a run's future cancels it: the zygote kills its sandbox.
//!
//! A zygote that dies (crash, OOM, `kill -9`) ends each of its in-flight runs with an
//! `internal_error` outcome saying so, as soon as its socket closes; the next run starts a new
//! zygote. When the host exits, its zygotes see their sockets close, kill their sandboxes,
//! remove their cgroups and exit. They are not killed outright when the host's runtime drops
//! them (no `kill_on_drop`): a zygote killed by a signal leaves its cgroup directories behind
//! until the next zygote started under the same cgroup removes them.

use crate::error::Error;
use crate::namespaces::MountedGrant;
use crate::outcome::{Captured, Outcome, Status};
use crate::protocol::{
    self, GrantSpec, IsolationSpec, LoadRequest, MAX_MESSAGE, MountedGrantInfo, Reply, Request,
    SetLimit, VERSION,
};
use crate::sys::{self, ExitStatus, Received};
use crate::task::{Output, Stdin, Task, TaskError};
use crate::template::Config;
use crate::wire::{self, ChildReport, Frame, FrameReader, TaskFrameError, TaskHeader};
use crate::zygote::{
    Isolation, ZygoteStats, bytes_u64, judge, micros, resolve_preopens, task_header,
};
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// A module to load: a file, or bytes with a name.
#[derive(Debug, Clone)]
pub enum ModuleSource {
    File(PathBuf),
    Bytes { name: String, bytes: Arc<[u8]> },
}

impl ModuleSource {
    fn name(&self) -> String {
        match self {
            ModuleSource::File(p) => p.display().to_string(),
            ModuleSource::Bytes { name, .. } => name.clone(),
        }
    }

    /// A descriptor the zygote reads the module from.
    fn open(&self) -> Result<OwnedFd, Error> {
        match self {
            ModuleSource::File(path) => std::fs::File::open(path)
                .map(OwnedFd::from)
                .map_err(|source| Error::ReadModule { path: path.clone(), source }),
            ModuleSource::Bytes { name, bytes } => sys::memfd_with("module", bytes)
                .map_err(|source| Error::ReadModule { path: PathBuf::from(name), source }),
        }
    }
}

impl From<PathBuf> for ModuleSource {
    fn from(p: PathBuf) -> Self {
        ModuleSource::File(p)
    }
}

impl From<&std::path::Path> for ModuleSource {
    fn from(p: &std::path::Path) -> Self {
        ModuleSource::File(p.to_path_buf())
    }
}

/// How a template is loaded and served.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Engine settings (cache, fuel metering).
    pub config: Config,
    /// How the zygote confines itself and its sandboxes.
    pub isolation: Isolation,
    /// Sandboxes the zygote keeps forked ahead of time.
    pub pool: usize,
    /// Runs in flight at once for this template (default: 4 × cores).
    pub max_in_flight: usize,
    /// Runs waiting for a slot beyond that; past it, [`Error::Busy`] (default: 1024).
    pub max_queued: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            config: Config::new(),
            isolation: Isolation::default(),
            pool: 2,
            max_in_flight: 4 * cores,
            max_queued: 1024,
        }
    }
}

/// The entry point of the host API: a handle (`Clone + Send + Sync`) from which templates are
/// loaded, each into a zygote process of its own.
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    ids: Arc<AtomicU64>,
}

impl Runtime {
    /// A runtime. Zygotes are started by re-executing this program's own binary
    /// (`/proc/self/exe`); a constructor in this library turns that process into a zygote
    /// before its `main` runs, so nothing else is needed in the application.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a zygote for `module` and waits until its template is warm.
    pub async fn load(
        &self,
        module: impl Into<ModuleSource>,
        options: LoadOptions,
    ) -> Result<TemplateHandle, Error> {
        let module = module.into();
        let inner = Arc::new(TemplateInner {
            name: module.name(),
            in_flight: Semaphore::new(options.max_in_flight.clamp(1, Semaphore::MAX_PERMITS)),
            queued: AtomicUsize::new(0),
            module,
            options,
            conn: tokio::sync::Mutex::new(None),
            ids: self.ids.clone(),
            starts: AtomicU64::new(0),
        });
        inner.connection().await?;
        Ok(TemplateHandle { inner })
    }
}

/// A warm template served by its zygote process: `Clone + Send + Sync`; every clone runs on
/// the same zygote. The zygote stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct TemplateHandle {
    inner: Arc<TemplateInner>,
}

#[derive(Debug)]
struct TemplateInner {
    name: String,
    module: ModuleSource,
    options: LoadOptions,
    conn: tokio::sync::Mutex<Option<Arc<Connection>>>,
    in_flight: Semaphore,
    queued: AtomicUsize,
    ids: Arc<AtomicU64>,
    /// Zygotes started for this template, the first one included.
    starts: AtomicU64,
}

impl TemplateHandle {
    /// The module's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Runs `task` in a fresh sandbox forked from the warm template and returns its outcome.
    ///
    /// `Err` only when the task could not be started (bad task, busy, the zygote cannot be
    /// started or reached); everything that happens to a started task — including its
    /// zygote dying — is an [`Outcome`]. Dropping the future kills the task's sandbox.
    pub async fn run(&self, task: &Task) -> Result<Outcome, Error> {
        self.run_with(task, None).await
    }

    /// [`run`](Self::run), with the guest's stdout and stderr sent to `chunks` as they arrive
    /// instead of captured: at most the task's `max_bytes` per stream (the rest read and
    /// dropped, the outcome's stream flagged truncated); the outcome's `stdout` and `stderr`
    /// stay empty. `chunks` is bounded: while it is full the sandbox's output is not read, so
    /// a slow consumer holds the guest back (its deadline still runs) rather than making the
    /// host buffer. If the receiver is dropped, the guest's next write fails (EPIPE). The task
    /// must capture its output ([`Output::Capture`]).
    pub async fn run_streaming(
        &self,
        task: &Task,
        chunks: mpsc::Sender<OutputChunk>,
    ) -> Result<Outcome, Error> {
        if task.output == Output::Inherit {
            return Err(Error::InvalidTask(TaskError::StreamInherited));
        }
        self.run_with(task, Some(&chunks)).await
    }

    async fn run_with(
        &self,
        task: &Task,
        chunks: Option<&mpsc::Sender<OutputChunk>>,
    ) -> Result<Outcome, Error> {
        let inner = &self.inner;
        let started = Instant::now();
        let queued = inner.queued.fetch_add(1, Ordering::AcqRel);
        let waiting = QueueSlot(&inner.queued);
        if queued >= inner.options.max_queued && inner.in_flight.available_permits() == 0 {
            return Err(Error::Busy { in_flight: inner.options.max_in_flight, queued });
        }
        let permit = inner
            .in_flight
            .acquire()
            .await
            .map_err(|_| Error::Protocol("template closed".into()))?;
        drop(waiting);
        let conn = inner.connection().await?;
        let id = inner.ids.fetch_add(1, Ordering::Relaxed);
        let outcome = conn.run(task, started, id, chunks).await;
        drop(permit);
        outcome
    }

    /// The zygote's figures (threads, mappings, confinement).
    pub async fn stats(&self) -> Result<ZygoteStats, Error> {
        let conn = self.inner.connection().await?;
        conn.stats().await
    }

    /// The functions the module exports, with their types, as its zygote reported them when it
    /// loaded the template (a zygote that died is started again first).
    pub async fn exports(&self) -> Result<crate::entry::Exports, Error> {
        let conn = self.inner.connection().await?;
        Ok(conn.exports.clone().unwrap_or_default())
    }

    /// Whether its sandboxes get a scratch directory for [`Task::files`]: the load asked for
    /// one ([`crate::Isolation::scratch`]) and the guest can reach files by name
    /// ([`crate::Template::reaches_files`]), as its zygote reported when it loaded.
    pub async fn has_scratch(&self) -> Result<bool, Error> {
        Ok(self.inner.connection().await?.scratch)
    }

    /// How many times this template's zygote was started again after it died (a crash, the
    /// OOM killer, `kill -9`): zygotes started, less the first.
    pub fn zygote_restarts(&self) -> u64 {
        self.inner.starts.load(Ordering::Relaxed).saturating_sub(1)
    }

    /// Pool sandboxes forked, confined and handed over, waiting for a task now (0 while its
    /// zygote is not running or being started: this never waits).
    pub fn pool_ready(&self) -> usize {
        let Ok(guard) = self.inner.conn.try_lock() else { return 0 };
        guard
            .as_ref()
            .filter(|c| !c.is_dead())
            .and_then(|c| c.pool.lock().ok().map(|p| p.len()))
            .unwrap_or(0)
    }

    /// How many pool sandboxes its zygote keeps ready ([`LoadOptions::pool`]).
    pub fn pool_size(&self) -> usize {
        self.inner.options.pool
    }

    /// The zygote's process id (for supervision tests and diagnostics); `None` if it is not
    /// running.
    pub async fn zygote_pid(&self) -> Option<i32> {
        let guard = self.inner.conn.lock().await;
        guard.as_ref().filter(|c| !c.is_dead()).map(|c| c.pid)
    }
}

/// Counts a run waiting for admission while it is alive.
struct QueueSlot<'a>(&'a AtomicUsize);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl TemplateInner {
    /// The live connection to the zygote, starting a zygote if there is none or it died.
    async fn connection(&self) -> Result<Arc<Connection>, Error> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| !c.is_dead()) {
            return Ok(c.clone());
        }
        let conn = Connection::start(&self.name, &self.module, &self.options).await?;
        self.starts.fetch_add(1, Ordering::Relaxed);
        *guard = Some(conn.clone());
        Ok(conn)
    }
}

/// What the reader task tells a run.
#[derive(Debug)]
enum Event {
    Started { fork_us: u64, fds: Vec<OwnedFd> },
    Failed(String),
    Exited { status: ExitStatus, peak_rss: u64, timed_out: bool, oom: Option<Option<u64>> },
    Died(String),
}

/// A task checked and encoded once, for each try at running it.
#[derive(Clone, Copy)]
struct Prepared<'a> {
    task: &'a Task,
    header: &'a TaskHeader<'a>,
    stdin_bytes: &'a [u8],
    deadline: Option<Instant>,
    max_bytes: usize,
    started: Instant,
    id: u64,
    chunks: Option<&'a mpsc::Sender<OutputChunk>>,
}

/// How one try at running a task ended.
enum Attempt {
    Done(Outcome),
    /// The pool sandbox was gone before it had the whole task (which never started).
    Undelivered,
}

/// A pool sandbox the zygote handed over: its pipes (task channel, report, stdout, stderr)
/// and the linear-memory cap its cgroup limit is set for.
#[derive(Debug)]
struct Pooled {
    sandbox: u64,
    max_memory: Option<u64>,
    fds: Vec<OwnedFd>,
}

/// The host's end of one zygote.
#[derive(Debug)]
struct Connection {
    name: String,
    /// Shared with the reader task, which must not keep the connection itself alive.
    sock: Arc<AsyncFd<OwnedFd>>,
    pid: i32,
    meters_fuel: bool,
    exports: Option<crate::entry::Exports>,
    /// Its sandboxes have a scratch directory.
    scratch: bool,
    grants: Option<Vec<MountedGrant>>,
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<Event>>>,
    /// Pool sandboxes the zygote handed over, waiting for a task.
    pool: Mutex<VecDeque<Pooled>>,
    stats: Mutex<VecDeque<oneshot::Sender<ZygoteStats>>>,
    dead: AtomicBool,
    death: Mutex<Option<String>>,
}

/// What the zygote is asked to load: `name`'s template with `options`.
fn load_request(name: &str, options: &LoadOptions) -> LoadRequest {
    let isolation = &options.isolation;
    LoadRequest {
        name: name.to_string(),
        fuel: options.config.meters_fuel(),
        cache_dir: options.config.cache_directory().map(|p| p.to_path_buf()),
        compile: options.config.compile_bounds().map(|c| crate::protocol::CompileSpec {
            timeout_us: crate::protocol::micros(c.timeout),
            max_memory: c.max_memory,
        }),
        isolation: IsolationSpec {
            namespaces: isolation.namespaces,
            seccomp: isolation.seccomp,
            max_file_size: isolation.max_file_size,
            grants: isolation
                .grants
                .iter()
                .map(|g| GrantSpec {
                    host: g.host.clone(),
                    guest: g.guest.clone(),
                    read_only: g.read_only,
                })
                .collect(),
            init: crate::protocol::InitSpec {
                timeout_us: isolation.init.timeout.map(crate::protocol::micros),
                max_memory: isolation.init.max_memory,
                fuel: isolation.init.fuel,
            },
            scratch: isolation.scratch,
        },
        pool: options.pool,
        warm_up: options.config.warm_up_choice().clone(),
        huge_pages: options.config.huge_pages_choice(),
    }
}

/// Runs one task in a zygote that is **this process**: loads `module` with `options` here,
/// enters the zygote's namespaces and its seccomp filter (for good: this process keeps them
/// afterwards), forks one sandbox for `task` and returns its outcome. The same code as a
/// zygote process runs, with the same checks and errors, minus starting that process: for a
/// process that exists to run one task, as `zeroboot-wasm run` (where it saves the start of
/// a second process). The calling process must be single-threaded ([`Error::NotSingleThreaded`]
/// otherwise); a library embedding uses [`Runtime`] instead.
pub fn run_in_this_process(
    module: impl Into<ModuleSource>,
    options: &LoadOptions,
    task: &Task,
) -> Result<Outcome, Error> {
    // Before anything confines this process: a filter or namespace entered by one thread of
    // several would leave the caller half-confined, and forking it is unsafe.
    let stat = std::fs::File::open("/proc/self/stat").map_err(Error::ThreadCount)?;
    crate::zygote::require_single_thread(&stat)?;
    let module = module.into();
    let name = module.name();
    // One fork: backing memory with huge pages would cost more than it saves.
    let load = LoadRequest { huge_pages: false, ..load_request(&name, options) };
    let fd = module.open()?;
    // Errors as a zygote process reports them, so both paths fail alike.
    let mut zygote = crate::zygote_process::build(&load, Some(fd))
        .map_err(|e| Error::Load { message: e.one_line(), kind: e.load_failure() })?;
    zygote.run(task)
}

fn protocol_err(e: impl std::fmt::Display) -> Error {
    Error::Protocol(e.to_string())
}

impl Connection {
    /// Starts a zygote, shakes hands, loads the template and starts the reader task.
    async fn start(
        name: &str,
        module: &ModuleSource,
        options: &LoadOptions,
    ) -> Result<Arc<Self>, Error> {
        let module_fd = module.open()?;
        let (host_end, zygote_end) = sys::seqpacket_pair().map_err(Error::SpawnZygote)?;
        let std_cmd = crate::zygote_process::command(zygote_end).map_err(Error::SpawnZygote)?;
        let mut cmd = tokio::process::Command::from(std_cmd);
        let mut child = cmd.spawn().map_err(Error::SpawnZygote)?;
        drop(cmd); // closes our copy of the zygote's end
        sys::set_nonblocking(host_end.as_raw_fd(), true).map_err(Error::SpawnZygote)?;
        // SAFETY: an `OwnedFd` keeps its descriptor open, and always returns the same number,
        // until the `AsyncFd` owning it drops it.
        let sock = unsafe { AsyncFd::register(host_end) }
            .map_err(|e| Error::SpawnZygote(e.into_parts().1))?;

        send(&sock, &Request::Hello { version: VERSION }, &[]).await?;
        let pid = match recv(&sock).await? {
            Some((Reply::Hello { version: VERSION, pid }, _)) => pid,
            Some((Reply::Hello { version, .. }, _)) => {
                return Err(protocol_err(format!(
                    "zygote speaks protocol {version}, not {VERSION}"
                )));
            }
            _ => return Err(zygote_gone(&mut child, "during the handshake").await),
        };
        let load = load_request(name, options);
        send(&sock, &Request::Load(load), &[module_fd.as_raw_fd()]).await?;
        drop(module_fd);
        let (meters_fuel, grants, namespaces, exports, scratch) = match recv(&sock).await? {
            Some((Reply::Ready { meters_fuel, grants, namespaces, exports, scratch }, _)) => {
                (meters_fuel, grants, namespaces, exports, scratch)
            }
            Some((Reply::LoadFailed { message, kind }, _)) => {
                let _ = child.wait().await;
                return Err(Error::Load { message, kind });
            }
            _ => return Err(zygote_gone(&mut child, "while loading the module").await),
        };
        let sock = Arc::new(sock);
        let conn = Arc::new(Connection {
            name: name.to_string(),
            sock: sock.clone(),
            pid,
            meters_fuel,
            exports,
            scratch,
            grants: namespaces.then(|| grants.into_iter().map(mounted).collect()),
            pending: Mutex::new(HashMap::new()),
            pool: Mutex::new(VecDeque::new()),
            stats: Mutex::new(VecDeque::new()),
            dead: AtomicBool::new(false),
            death: Mutex::new(None),
        });
        tokio::spawn(read_replies(Arc::downgrade(&conn), sock, child));
        Ok(conn)
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Marks the connection dead and tells every pending run why.
    fn die(&self, why: String) {
        self.dead.store(true, Ordering::Release);
        if let Ok(mut d) = self.death.lock() {
            d.get_or_insert_with(|| why.clone());
        }
        let pending: Vec<_> = match self.pending.lock() {
            Ok(mut p) => p.drain().collect(),
            Err(_) => Vec::new(),
        };
        for (_, tx) in pending {
            let _ = tx.send(Event::Died(why.clone()));
        }
        if let Ok(mut s) = self.stats.lock() {
            s.clear();
        }
        if let Ok(mut p) = self.pool.lock() {
            p.clear();
        }
    }

    fn death_reason(&self) -> String {
        self.death
            .lock()
            .ok()
            .and_then(|d| d.clone())
            .unwrap_or_else(|| "the zygote exited".to_string())
    }

    async fn stats(&self) -> Result<ZygoteStats, Error> {
        let (tx, rx) = oneshot::channel();
        self.stats.lock().map_err(protocol_err)?.push_back(tx);
        send(&self.sock, &Request::Stats, &[]).await?;
        rx.await.map_err(|_| Error::Protocol(self.death_reason()))
    }

    async fn run(
        self: &Arc<Self>,
        task: &Task,
        started: Instant,
        id: u64,
        chunks: Option<&mpsc::Sender<OutputChunk>>,
    ) -> Result<Outcome, Error> {
        task.validate().map_err(Error::InvalidTask)?;
        if let Some(exports) = &self.exports {
            exports
                .check(&self.name, task.invoke.as_deref(), &task.args, task.arguments.as_ref())
                .map_err(|e| Error::InvalidTask(e.into()))?;
        }
        let deadline = task.deadline_from(started).map_err(Error::InvalidTask)?;
        let preopens = resolve_preopens(self.grants.as_deref(), &task.dirs)?;
        if task.fuel.is_some() && !self.meters_fuel {
            return Err(Error::FuelNotMetered);
        }
        if !task.files.is_empty() && !self.scratch {
            return Err(Error::InvalidTask(TaskError::NoScratch));
        }
        let stdin_bytes: &[u8] = match &task.stdin {
            Stdin::Bytes(b) => b,
            _ => &[],
        };
        // The frame's header borrows from the task; stdin follows it as raw bytes. Both are
        // checked against the frame's limit before any sandbox is asked for.
        let inherit_stdin = matches!(task.stdin, Stdin::Inherit);
        let header = task_header(task, &self.name, &preopens, None, inherit_stdin);
        let size_check = wire::encode_task(&header, stdin_bytes);
        if let Err(TaskFrameError::TooLarge { part, len }) = size_check {
            return Err(Error::InvalidTask(TaskError::TooLarge { part, len }));
        }
        let max_bytes = match task.output {
            Output::Capture { max_bytes } => max_bytes,
            Output::Inherit => 0,
        };
        let prepared = Prepared {
            task,
            header: &header,
            stdin_bytes,
            deadline,
            max_bytes,
            started,
            id,
            chunks,
        };
        // A pool sandbox can die while it waits (the OOM killer, an operator's kill): one the
        // host claimed before hearing so never had the whole task, which then runs in a
        // sandbox forked for it. A sandbox that had the whole task is never given it again.
        let mut use_pool = !inherit_stdin;
        loop {
            match self.attempt(&prepared, use_pool).await? {
                Attempt::Done(outcome) => return Ok(outcome),
                // Only a try in a pool sandbox ends so: the next forks a sandbox for the task.
                Attempt::Undelivered => use_pool = false,
            }
        }
    }

    /// One try at running a prepared task: in a pool sandbox (when `use_pool` and one is
    /// handed over) or in one forked for it.
    async fn attempt(
        self: &Arc<Self>,
        prepared: &Prepared<'_>,
        use_pool: bool,
    ) -> Result<Attempt, Error> {
        let Prepared { task, header, stdin_bytes, deadline, max_bytes, started, id, chunks } =
            *prepared;
        let mut header = header.clone();
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.pending.lock().map_err(protocol_err)?.insert(id, tx);
        let mut guard = RunGuard { conn: self.clone(), id, finished: false };
        if self.is_dead() {
            return Ok(Attempt::Done(zygote_died(self.death_reason(), started)));
        }
        let max_memory = task.max_memory.map(bytes_u64);
        let timeout_us = task.timeout.map(micros);
        // A pool sandbox the zygote already handed over: claimed without a round trip, unless
        // its memory limit must change first.
        let pooled =
            if use_pool { self.pool.lock().ok().and_then(|mut p| p.pop_front()) } else { None };
        let from_pool = pooled.is_some();
        let (fork_us, mut fds) = if let Some(p) = pooled {
            let set_limit = (p.max_memory != max_memory).then_some(SetLimit { max_memory });
            let claim = Request::Claim { id, sandbox: p.sandbox, timeout_us, set_limit };
            if let Err(e) = send(&self.sock, &claim, &[]).await {
                guard.finished = true;
                return Ok(Attempt::Done(zygote_died(
                    format!("cannot reach the zygote: {e}"),
                    started,
                )));
            }
            if set_limit.is_some() {
                // The task is written only after the zygote's answer: a sandbox that was gone
                // (its exit, or "gone", as the answer) never saw it.
                match rx.recv().await {
                    Some(Event::Started { .. }) => {}
                    Some(Event::Exited { .. } | Event::Failed(_)) => {
                        guard.finished = true;
                        return Ok(Attempt::Undelivered);
                    }
                    Some(Event::Died(why)) => {
                        guard.finished = true;
                        return Ok(Attempt::Done(zygote_died(why, started)));
                    }
                    None => {
                        guard.finished = true;
                        return Ok(Attempt::Done(zygote_died(self.death_reason(), started)));
                    }
                }
            }
            (0, p.fds)
        } else {
            let stdin = match task.stdin {
                Stdin::Inherit => Some(sys::dup_stdin().map_err(Error::Pipe)?),
                _ => None,
            };
            let request =
                Request::Run { id, timeout_us, max_memory, inherit_stdin: stdin.is_some() };
            let fds: Vec<_> = stdin.iter().map(|f| f.as_raw_fd()).collect();
            if let Err(e) = send(&self.sock, &request, &fds).await {
                guard.finished = true;
                return Ok(Attempt::Done(zygote_died(
                    format!("cannot reach the zygote: {e}"),
                    started,
                )));
            }
            drop(stdin);
            match self.started(&mut rx, &mut guard, started).await? {
                Ok((fork_us, fds)) if fds.len() == 4 => (fork_us, fds),
                Ok(_) => return Err(protocol_err("started without 4 pipes")),
                Err(outcome) => return Ok(Attempt::Done(outcome)),
            }
        };
        let err_r = fds.pop();
        let out_r = fds.pop();
        let report_r = fds.pop();
        let task_w = fds.pop();
        let (Some(task_w), Some(report_r), Some(out_r), Some(err_r)) =
            (task_w, report_r, out_r, err_r)
        else {
            return Err(protocol_err("started without its pipes"));
        };
        header.remaining_us = deadline.map(|d| micros(d.saturating_duration_since(Instant::now())));
        let head = wire::encode_task(&header, stdin_bytes).map_err(protocol_err)?;
        let sink = |fd, stream| match (task.output, chunks) {
            (Output::Inherit, _) => Sink::Relay(fd),
            (_, Some(tx)) => Sink::Stream(tx, stream),
            _ => Sink::Capture,
        };
        let (wrote, out, err, report) = tokio::join!(
            write_task(task_w, head, stdin_bytes),
            drain(out_r, max_bytes, sink(1, OutputStream::Stdout)),
            drain(err_r, max_bytes, sink(2, OutputStream::Stderr)),
            read_report(report_r),
        );
        let (out, err) = (out.map_err(Error::Collect)?, err.map_err(Error::Collect)?);
        // Ended without a report and without the whole task (not all of it went into the
        // channel, or some is still unread there): the sandbox never ran it, since it reads the
        // whole frame before running anything.
        let untaken = from_pool && matches!(report, Ok(None)) && !wrote.delivered();
        drop(wrote);
        // With a report in hand, how the sandbox then exited adds nothing: do not wait for it.
        let (status, peak, timed_out, oom) = match &report {
            Ok(Some(r)) if r.status != Status::InternalError => {
                (ExitStatus::Code(0), r.peak_rss, false, None)
            }
            _ => match rx.recv().await {
                Some(Event::Exited { status, peak_rss, timed_out, oom }) => {
                    (status, peak_rss, timed_out, oom)
                }
                // A claimed pool sandbox that was gone before its task reached it.
                Some(Event::Failed(message)) => {
                    guard.finished = true;
                    if untaken {
                        return Ok(Attempt::Undelivered);
                    }
                    return Err(Error::StartSandbox(message));
                }
                Some(Event::Died(why)) => {
                    guard.finished = true;
                    let mut o = zygote_died(why, started);
                    o.stdout = out;
                    o.stderr = err;
                    return Ok(Attempt::Done(o));
                }
                _ => (ExitStatus::Signal(libc::SIGKILL), 0, false, None),
            },
        };
        guard.finished = true;
        if untaken {
            return Ok(Attempt::Undelivered);
        }
        let peak = match &report {
            Ok(Some(r)) => r.peak_rss.max(peak),
            _ => peak,
        };
        let mut outcome = judge(report, status, timed_out, task.timeout);
        if let Some(limit) = oom {
            outcome.status = Status::MemoryLimit;
            outcome.message = Some(format!(
                "sandbox killed by the kernel: host-side memory exceeded {} bytes (cgroup)",
                limit.unwrap_or(0)
            ));
        }
        outcome.stdout = out;
        outcome.stderr = err;
        outcome.peak_memory_bytes = peak;
        outcome.timings_us.fork = fork_us;
        outcome.timings_us.total = micros(started.elapsed());
        Ok(Attempt::Done(outcome))
    }
}

impl Connection {
    /// Waits for the zygote's answer to a run or a claim that asked for one: `Ok(Ok(..))` with
    /// the fork time and the pipes (none for a claim), `Ok(Err(outcome))` when the zygote died
    /// meanwhile, `Err` when it could not start the sandbox.
    async fn started(
        &self,
        rx: &mut mpsc::UnboundedReceiver<Event>,
        guard: &mut RunGuard,
        started: Instant,
    ) -> Result<Result<(u64, Vec<OwnedFd>), Outcome>, Error> {
        match rx.recv().await {
            Some(Event::Started { fork_us, fds }) => Ok(Ok((fork_us, fds))),
            Some(Event::Failed(message)) => {
                guard.finished = true;
                Err(Error::StartSandbox(message))
            }
            Some(Event::Died(why)) => {
                guard.finished = true;
                Ok(Err(zygote_died(why, started)))
            }
            Some(Event::Exited { .. }) | None => {
                guard.finished = true;
                Ok(Err(zygote_died(self.death_reason(), started)))
            }
        }
    }
}

/// Cancels a run whose future was dropped before it finished: the zygote kills its sandbox.
struct RunGuard {
    conn: Arc<Connection>,
    id: u64,
    finished: bool,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if !self.finished && !self.conn.is_dead() {
            // A small message on a socket with room: sent at once or not at all.
            let bytes = protocol::encode(&Request::Cancel { id: self.id });
            let _ = sys::send_message(self.conn.sock.get_ref().as_raw_fd(), &bytes, &[]);
        }
        if !self.finished
            && let Ok(mut p) = self.conn.pending.lock()
        {
            // Keep listening for its exit only to drop it; nothing waits any more.
            p.remove(&self.id);
        }
    }
}

fn mounted(g: MountedGrantInfo) -> MountedGrant {
    MountedGrant { host: g.host, canonical: g.canonical, inside: g.inside, read_only: g.read_only }
}

fn zygote_died(why: String, started: Instant) -> Outcome {
    let mut o = judge(Ok(None), ExitStatus::Code(70), false, None);
    o.status = Status::InternalError;
    o.message = Some(format!("the zygote died while the task was in flight: {why}"));
    o.timings_us.total = micros(started.elapsed());
    o
}

/// The zygote closed the connection: reap it and say how it ended.
async fn zygote_gone(child: &mut tokio::process::Child, when: &str) -> Error {
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let how = match status {
        Ok(Ok(s)) => describe_exit(s),
        _ => "it did not answer".to_string(),
    };
    Error::Protocol(format!("the zygote went away {when}: {how}"))
}

fn describe_exit(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (_, Some(sig)) => format!("killed by {}", sys::signal_name(sig)),
        _ => "ended".to_string(),
    }
}

/// Reads the zygote's replies and dispatches them, until the zygote goes away.
async fn read_replies(
    conn: std::sync::Weak<Connection>,
    sock: Arc<AsyncFd<OwnedFd>>,
    mut child: tokio::process::Child,
) {
    // No strong reference is held while waiting: when the last handle and the last run drop
    // the connection, its `Drop` shuts the socket down, this wait ends, and the zygote (which
    // reads end of file) kills its sandboxes and exits.
    let pid = child.id();
    let why = loop {
        let got = recv(&sock).await;
        let Some(c) = conn.upgrade() else {
            let _ = child.wait().await;
            remove_cgroups_of(pid).await;
            return;
        };
        match got {
            Ok(Some((reply, fds))) => dispatch(&c, reply, fds),
            Ok(None) => {
                let how = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                    Ok(Ok(s)) => describe_exit(s),
                    _ => "closed its socket".to_string(),
                };
                break format!("zygote {} {how}", c.pid);
            }
            Err(e) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                break format!("zygote {} broke the protocol: {}", c.pid, e.one_line());
            }
        }
    };
    if let Some(c) = conn.upgrade() {
        c.die(why);
    }
    remove_cgroups_of(pid).await;
}

/// Removes what a zygote that was killed (and could not clean up) left in the cgroup tree,
/// once its sandboxes, which die with it, have exited: tried for up to 2 s.
async fn remove_cgroups_of(pid: Option<u32>) {
    let Some(pid) = pid else { return };
    for _ in 0..40 {
        if crate::cgroup::remove_dead_zygote_tree(pid).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The reader task holds the socket too; shutting it down (not only closing our
        // reference) ends the reader's wait and tells the zygote to stop.
        let _ = sys::shutdown_socket(self.sock.get_ref().as_raw_fd());
    }
}

/// A sandbox's exit as the zygote reported it: its code, else its signal.
pub(crate) fn exit_status(code: Option<i32>, signal: Option<i32>) -> ExitStatus {
    match (code, signal) {
        (Some(c), _) => ExitStatus::Code(c),
        (_, Some(s)) => ExitStatus::Signal(s),
        _ => ExitStatus::Code(0),
    }
}

fn dispatch(c: &Connection, reply: Reply, fds: Vec<OwnedFd>) {
    let (id, event, last) = match reply {
        Reply::Started { id, fork_us } => (id, Event::Started { fork_us, fds }, false),
        Reply::RunFailed { id, message } => (id, Event::Failed(message), true),
        Reply::Exited { id, code, signal, peak_rss, timed_out, oom_killed, memory_limit } => {
            let status = exit_status(code, signal);
            let oom = oom_killed.then_some(memory_limit);
            (id, Event::Exited { status, peak_rss, timed_out, oom }, true)
        }
        Reply::Stats(s) => {
            if let Some(tx) = c.stats.lock().ok().and_then(|mut q| q.pop_front()) {
                let _ = tx.send(s);
            }
            return;
        }
        Reply::Pooled { sandbox, max_memory } => {
            // Four pipes or none of it: a short handover is dropped (the sandbox then exits
            // with its channel closed, and is retired).
            if fds.len() == 4
                && let Ok(mut pool) = c.pool.lock()
            {
                pool.push_back(Pooled { sandbox, max_memory, fds });
            }
            return;
        }
        Reply::Retired { sandbox } => {
            if let Ok(mut pool) = c.pool.lock() {
                pool.retain(|p| p.sandbox != sandbox);
            }
            return;
        }
        Reply::Hello { .. } | Reply::Ready { .. } | Reply::LoadFailed { .. } => return,
    };
    let Ok(mut pending) = c.pending.lock() else { return };
    let tx = if last { pending.remove(&id) } else { pending.get(&id).cloned() };
    if let Some(tx) = tx {
        let _ = tx.send(event);
    }
}

async fn send(sock: &AsyncFd<OwnedFd>, request: &Request, fds: &[i32]) -> Result<(), Error> {
    let bytes = protocol::encode(request);
    loop {
        let mut ready = sock.writable().await.map_err(protocol_err)?;
        match ready.try_io(|s| sys::send_message(s.get_ref().as_raw_fd(), &bytes, fds)) {
            Ok(r) => return r.map_err(protocol_err),
            Err(_would_block) => continue,
        }
    }
}

/// Receives one reply; `None` when the zygote closed the socket.
async fn recv(sock: &AsyncFd<OwnedFd>) -> Result<Option<(Reply, Vec<OwnedFd>)>, Error> {
    loop {
        let mut ready = sock.readable().await.map_err(protocol_err)?;
        match ready.try_io(|s| sys::recv_message(s.get_ref().as_raw_fd(), MAX_MESSAGE)) {
            Ok(Ok(Received::Closed)) => return Ok(None),
            Ok(Ok(Received::Message(bytes, fds))) => {
                return protocol::decode(&bytes).map(|r| Some((r, fds))).map_err(Error::Protocol);
            }
            Ok(Err(e)) => return Err(protocol_err(e)),
            Err(_would_block) => continue,
        }
    }
}

/// Writes the task frame — its head, then stdin's bytes straight from the task — into the
/// sandbox's channel, and keeps the channel open so that what the sandbox left unread can be
/// counted afterwards. A sandbox that died before reading it is not an error here: its
/// outcome, or a retry, says what happened.
async fn write_task(fd: OwnedFd, head: Vec<u8>, stdin: &[u8]) -> Written {
    let mut written = Written { pipe: None, bytes: 0, total: head.len() + stdin.len() };
    let Ok(mut pipe) = tokio::net::unix::pipe::Sender::from_owned_fd(fd) else { return written };
    'parts: for mut rest in [&head[..], stdin] {
        while !rest.is_empty() {
            match pipe.write(rest).await {
                Ok(n) if n > 0 => {
                    written.bytes += n;
                    rest = &rest[n..];
                }
                // The sandbox is gone (EPIPE), or the pipe failed: what went in is counted.
                _ => break 'parts,
            }
        }
    }
    written.pipe = Some(pipe);
    written
}

/// A task's channel after the task was written to it, kept open until the run ends.
struct Written {
    pipe: Option<tokio::net::unix::pipe::Sender>,
    bytes: usize,
    total: usize,
}

impl Written {
    /// Whether the sandbox read the whole task: all of it went into the channel and none of it
    /// is left there. (A sandbox killed while blocked reading may still take a first chunk.)
    fn delivered(&self) -> bool {
        self.bytes == self.total
            && self
                .pipe
                .as_ref()
                .is_some_and(|p| sys::unread_in_pipe(p.as_raw_fd()).is_ok_and(|n| n == 0))
    }
}

/// Which output stream a [`OutputChunk`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Bytes a running guest wrote, as they arrived (see [`TemplateHandle::run_streaming`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    pub stream: OutputStream,
    pub bytes: Vec<u8>,
}

/// Where [`drain`] puts what it reads.
enum Sink<'a> {
    /// Into the outcome.
    Capture,
    /// To this process's own descriptor, as it arrives.
    Relay(i32),
    /// To a bounded channel, as it arrives.
    Stream(&'a mpsc::Sender<OutputChunk>, OutputStream),
}

/// Reads a sandbox's output stream to its end: kept up to `max` bytes (the rest read and
/// dropped), relayed to this process's own descriptor as it arrives, or sent as chunks (up to
/// `max` bytes, the rest read and dropped).
async fn drain(fd: OwnedFd, max: usize, sink: Sink<'_>) -> std::io::Result<Captured> {
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    let mut captured = Captured::default();
    let mut sent = 0usize;
    // Read into spare capacity (`read_buf`): a zeroed 64 KiB buffer per stream per run was a
    // visible share of `serve`'s CPU under load. It starts at 4 KiB (most runs write less) and
    // doubles, up to 64 KiB, each time a read fills it: two 64 KiB allocations per run had the
    // allocator trim and grow its heap, a page fault per page, on every run.
    let mut buf: Vec<u8> = Vec::with_capacity(4 * 1024);
    loop {
        buf.clear();
        let n = pipe.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(captured);
        }
        if n == buf.capacity() && n < 64 * 1024 {
            buf.reserve(n);
        }
        match sink {
            Sink::Relay(target) => {
                // A caller that stopped reading its own output: close the pipe, so the guest's
                // next write fails (EPIPE) as if it wrote to the caller's stream itself.
                if sys::write_all_waiting(target, &buf[..n]).is_err() {
                    return Ok(captured);
                }
            }
            Sink::Stream(tx, stream) => {
                let keep = n.min(max.saturating_sub(sent));
                captured.truncated |= keep < n;
                if keep > 0 {
                    sent += keep;
                    let chunk = OutputChunk { stream, bytes: buf[..keep].to_vec() };
                    // Waits while the consumer is behind: the pipe fills and the guest waits.
                    if tx.send(chunk).await.is_err() {
                        return Ok(captured);
                    }
                }
            }
            Sink::Capture => {
                let keep = n.min(max.saturating_sub(captured.bytes.len()));
                captured.bytes.extend_from_slice(&buf[..keep]);
                captured.truncated |= keep < n;
            }
        }
    }
}

/// Reads the sandbox's report frame: `Ok(None)` if it ended without one.
async fn read_report(fd: OwnedFd) -> Result<Option<ChildReport>, String> {
    let mut pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        Ok(p) => p,
        Err(e) => return Err(e.to_string()),
    };
    let mut reader = FrameReader::default();
    let mut buf = [0u8; 4096];
    loop {
        let n = pipe.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(None);
        }
        match reader.push::<ChildReport>(&buf[..n]) {
            Frame::Partial => {}
            Frame::Complete(r) => return Ok(Some(r)),
            Frame::Corrupt(e) => return Err(e),
        }
    }
}

/// A blocking front for callers without an async runtime: owns a small Tokio runtime.
#[derive(Debug)]
pub struct BlockingRuntime {
    rt: tokio::runtime::Runtime,
    runtime: Runtime,
}

impl BlockingRuntime {
    /// A runtime with one worker thread driving the zygote connections.
    pub fn new() -> Result<Self, Error> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(Error::SpawnZygote)?;
        Ok(Self { rt, runtime: Runtime::new() })
    }

    /// [`Runtime::load`], blocking.
    pub fn load(
        &self,
        module: impl Into<ModuleSource>,
        options: LoadOptions,
    ) -> Result<TemplateHandle, Error> {
        self.rt.block_on(self.runtime.load(module, options))
    }

    /// [`TemplateHandle::run`], blocking.
    pub fn run(&self, template: &TemplateHandle, task: &Task) -> Result<Outcome, Error> {
        self.rt.block_on(template.run(task))
    }

    /// [`TemplateHandle::zygote_pid`], blocking.
    pub fn zygote_pid(&self, template: &TemplateHandle) -> Option<i32> {
        self.rt.block_on(template.zygote_pid())
    }

    /// [`TemplateHandle::stats`], blocking.
    pub fn stats(&self, template: &TemplateHandle) -> Result<ZygoteStats, Error> {
        self.rt.block_on(template.stats())
    }
}
