//! The zygote: holds a warm [`Template`] and forks it once per task.
//!
//! It must be single-threaded at every fork — in the child only the forking thread survives,
//! and a lock held by any other thread (the allocator's, stdio's, Wasmtime's) would stay locked
//! forever. [`Zygote::run`] checks the thread count before each fork and refuses otherwise.

use crate::cgroup::{SandboxCgroups, Slot};
use crate::child::{self, Assignment, ChildFds, Payload, Plan, Preopen};
use crate::error::Error;
use crate::flight::{self, Flight};
use crate::namespaces::MountedGrant;
use crate::outcome::{Captured, Outcome, Status, Timings};
use crate::rlimits::{DEFAULT_MAX_FILE_SIZE, Rlimits};
use crate::seccomp::SeccompMode;
use crate::sys::{self, ExitStatus, Fork};
use crate::task::{DirGrant, MAX_TIMEOUT};
use crate::task::{Stdin, Task};
use crate::template::{InitLimits, Template, Warm};
use crate::wire::{self, ChildReport, TaskHeader};
use seccompiler::BpfProgram;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Test support: native code run in a sandbox instead of the guest
/// ([`Zygote::run_probe`]), given the task's args and, per preopened directory, its guest
/// path and the path it is opened from inside the sandbox.
#[doc(hidden)]
#[cfg(feature = "testkit")]
pub type ProbeFn = fn(&[String], &[(&str, &str)]) -> String;

/// A snapshot of the zygote process, as seen at fork time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Whether the zygote itself runs under its own seccomp filter (a fork-server zygote),
    /// so that sandboxes add only a short narrowing one.
    #[serde(default)]
    pub zygote_seccomp: bool,
    /// The initialisers the zygote ran before its first fork (see
    /// [`WarmUp`](crate::WarmUp)), in order.
    #[serde(default)]
    pub initializers: Vec<String>,
    /// How long instantiating the module and running those took, in microseconds.
    #[serde(default)]
    pub warm_up_us: u64,
    /// Bytes of compiled code and warm memory backed with huge pages, which every sandbox
    /// shares without a fault (see [`Config::huge_pages`](crate::Config::huge_pages)).
    #[serde(default)]
    pub huge_page_bytes: u64,
    /// Bytes of the runtime's own machine code backed with huge pages in a fork-server
    /// zygote, so that its sandboxes take no page fault on it (see
    /// [`Config::huge_pages`](crate::Config::huge_pages)).
    #[serde(default)]
    pub runtime_code_huge_bytes: u64,
    /// Sandbox memory cgroups made so far (0 without memory cgroups).
    #[serde(default)]
    pub cgroups_made: u64,
    /// How many times a reaped sandbox's cgroup was clean (empty, no OOM kill, nothing left
    /// charged beyond the kernel's per-CPU charge caches) and kept for a later sandbox.
    #[serde(default)]
    pub cgroups_reused: u64,
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
    /// of these (named as here, and read-only exactly when it is read-only here), since the
    /// host filesystem is gone afterwards. Each is mounted on its own with its own flags, so a
    /// directory granted both read-write and read-only has a read-only mount for the latter.
    pub grants: Vec<DirGrant>,
    /// Limits on instantiating the template (its `start` function, initialisers, declared
    /// memories), which happens after the namespaces are entered.
    pub init: InitLimits,
    /// A scratch directory of this many bytes for every sandbox: a fresh tmpfs reachable only
    /// from that sandbox, its working directory, seen by the guest at `/scratch` and `.`;
    /// see `src/scratch.rs`. Needs [`namespaces`](Self::namespaces). `None`: no scratch
    /// directory (tasks with [`files`](crate::Task::files) are refused). A template that
    /// cannot reach a file by name ([`Template::reaches_files`]) gets none either: it could
    /// not use it ([`Zygote::has_scratch`] says which).
    pub scratch: Option<u64>,
}

impl Default for Isolation {
    /// Everything on: namespaces, seccomp enforcing, 64 MiB file-size cap, no grants.
    fn default() -> Self {
        Self {
            namespaces: true,
            seccomp: SeccompMode::Enforce,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            grants: Vec::new(),
            init: InitLimits::default(),
            scratch: None,
        }
    }
}

/// What the zygote set up once for all its sandboxes.
struct Confinement {
    /// `Some` when the zygote lives in its own namespaces.
    mounted: Option<Vec<MountedGrant>>,
    seccomp: Option<BpfProgram>,
    mode: SeccompMode,
    /// This process runs under the zygote filter: sandboxes add only the narrowing one.
    self_filtered: bool,
    max_file_size: u64,
    /// Each sandbox's scratch tmpfs size.
    scratch: Option<u64>,
}

/// A warm template that runs each task in its own forked sandbox.
pub struct Zygote {
    template: Template,
    /// The template's instance, created here after confinement; every sandbox's copy.
    warm: Warm,
    pid: libc::pid_t,
    cgroups: Option<SandboxCgroups>,
    pool: VecDeque<Idle>,
    pool_size: usize,
    /// The linear-memory cap pool sandboxes are forked with: the last task's. Writing a
    /// cgroup's limit costs ~130 µs on a cgroup-v1 host, so a sandbox whose limit already
    /// matches its task's skips the write on the task's path.
    pool_max_memory: Option<u64>,
    /// Bytes of this process's own code backed with huge pages (a fork-server zygote's).
    runtime_code_huge: u64,
    /// Sandboxes that reported but were still tearing down: reaped later, off the task path.
    zombies: Vec<(libc::pid_t, Option<Slot>)>,
    /// `/proc/self/stat` and `/proc/self/maps`, opened before any confinement.
    proc_stat: std::fs::File,
    proc_maps: std::fs::File,
    /// A pipe only this process holds the write end of (children close it): a child that
    /// sees it hung up knows the zygote died before its death signal was armed.
    lifeline: (OwnedFd, OwnedFd),
    confinement: Confinement,
}

impl Zygote {
    /// A zygote whose sandboxes get the per-process layers — seccomp (enforcing), rlimits, no
    /// capabilities, no new privileges, a session of their own — but no namespaces, so the
    /// calling process keeps its view of the system. (Where memory cgroups can be created,
    /// each sandbox gets one of its own; the calling process stays where it is.) The process
    /// that calls [`run`](Self::run) must stay single-threaded.
    pub fn new(template: Template) -> Result<Self, Error> {
        Self::with_isolation(template, Isolation { namespaces: false, ..Isolation::default() })
    }

    /// A zygote with the given isolation. With `namespaces`, **this process** enters the new
    /// namespaces and loses the host filesystem: call it from a process that exists to be the
    /// zygote (as the `run` and `worker` commands do).
    ///
    /// The order is fixed: confine this process (namespaces), compile the seccomp policy, and
    /// only then instantiate the template — the first time any of the module's code runs —
    /// under [`Isolation::init`]. A module whose start function passes those limits is an
    /// error ([`Error::InitTimeout`], [`Error::InitMemoryLimit`], [`Error::InitFuel`]), never
    /// a hang. SIGALRM is this process's while it instantiates.
    pub fn with_isolation(template: Template, isolation: Isolation) -> Result<Self, Error> {
        Self::confine_and_instantiate(template, isolation, false)
    }

    /// Fork-server support: as [`with_isolation`](Self::with_isolation), and this process
    /// installs the zygote's own seccomp filter before it instantiates, so the module's start
    /// function runs under that filter too.
    pub(crate) fn with_isolation_self_filtered(
        template: Template,
        isolation: Isolation,
    ) -> Result<Self, Error> {
        Self::confine_and_instantiate(template, isolation, true)
    }

    fn confine_and_instantiate(
        template: Template,
        isolation: Isolation,
        self_filter: bool,
    ) -> Result<Self, Error> {
        let open = |path: &str| std::fs::File::open(path).map_err(Error::ThreadCount);
        let (proc_stat, proc_maps) = (open("/proc/self/stat")?, open("/proc/self/maps")?);
        // For backing warm memory with huge pages after instantiation (see `crate::hugepages`);
        // without it, that memory stays in 4 KiB pages.
        let pagemap = std::fs::File::open("/proc/self/pagemap").ok();
        // The cgroup is made with the host's view of /sys, before any namespace.
        let cgroups = SandboxCgroups::create().ok();
        if isolation.scratch.is_some() && !isolation.namespaces {
            return Err(Error::Confine(crate::namespaces::NamespaceError::ScratchNeedsNamespaces));
        }
        let mounted = if isolation.namespaces {
            require_single_thread(&proc_stat)?;
            Some(crate::namespaces::confine_zygote(&isolation.grants).map_err(Error::Confine)?)
        } else {
            None
        };
        let seccomp = crate::seccomp::compile(isolation.seccomp).map_err(Error::Seccomp)?;
        let mut confinement = Confinement {
            mounted,
            seccomp,
            mode: isolation.seccomp,
            self_filtered: false,
            max_file_size: isolation.max_file_size,
            // A fresh tmpfs per sandbox is ~5 % of a small run's CPU: not made for a guest
            // that could not name a file in it.
            scratch: isolation.scratch.filter(|_| template.reaches_files()),
        };
        if self_filter {
            filter_zygote(&mut confinement)?;
        }
        // Only now does any of the module's own code run — its start function, its
        // initialisers — in this process, inside its namespaces (entered above) and, in a
        // fork-server zygote, under its seccomp filter, with the same deadline, fuel and
        // memory cap as a task.
        let warm = template.instantiate(&isolation.init, pagemap.as_ref())?;
        drop(pagemap);
        Ok(Self {
            template,
            warm,
            pid: sys::getpid(),
            cgroups,
            pool: VecDeque::new(),
            pool_size: 0,
            pool_max_memory: None,
            runtime_code_huge: 0,
            zombies: Vec::new(),
            proc_stat,
            proc_maps,
            lifeline: sys::pipe().map_err(Error::Pipe)?,
            confinement,
        })
    }

    /// Reads the zygote's figures (threads, mappings) from `/proc/self`.
    pub fn stats(&self) -> std::io::Result<ZygoteStats> {
        let threads = sys::threads_in_stat(&sys::read_proc_file(&self.proc_stat)?)?;
        let maps = sys::read_proc_file(&self.proc_maps)?;
        let (cgroups_made, cgroups_reused) = self.cgroups.as_ref().map_or((0, 0), |c| c.counts());
        Ok(ZygoteStats {
            threads,
            mappings: maps.iter().filter(|&&b| b == b'\n').count(),
            memory_cgroup: self.cgroups.is_some(),
            namespaces: self.confinement.mounted.is_some(),
            seccomp: self.confinement.seccomp.is_some(),
            zygote_seccomp: self.confinement.self_filtered,
            initializers: self.template.initializers().to_vec(),
            warm_up_us: crate::protocol::micros(self.warm.warm_up_time),
            huge_page_bytes: self.template.huge_code() + self.warm.huge_memory,
            runtime_code_huge_bytes: self.runtime_code_huge,
            cgroups_made,
            cgroups_reused,
        })
    }

    /// The template every task is forked from.
    pub fn template(&self) -> &Template {
        &self.template
    }

    /// Whether its sandboxes get a scratch directory: [`Isolation::scratch`] asked for one
    /// and the template can reach files.
    pub fn has_scratch(&self) -> bool {
        self.confinement.scratch.is_some()
    }

    /// Where each of the task's directories is, as the child will open it.
    fn preopens(&self, task: &Task) -> Result<Vec<Preopen>, Error> {
        resolve_preopens(self.confinement.mounted.as_deref(), &task.dirs)
    }

    /// Runs `task` in a sandbox — a pre-forked one from the pool when there is one and the
    /// task can use it, else one forked now — and returns its outcome as soon as the report
    /// and output are in hand (a child that reported is reaped later, off the task's path).
    ///
    /// Returns `Err` only when the task could not be started (a directory that cannot be
    /// granted, more than one thread in this process, no processes left); everything that
    /// happens to a started task, including its death, is an [`Outcome`].
    pub fn run(&mut self, task: &Task) -> Result<Outcome, Error> {
        let started = Instant::now();
        let flight = self.launch(task, Payload::Guest, started)?;
        self.land(flight)
    }

    /// Runs many tasks with up to `concurrency` sandboxes alive at once; outcomes come back
    /// in the order of `tasks`. Each task's `total` counts from its own start.
    pub fn run_many(&mut self, tasks: &[Task], concurrency: usize) -> Vec<Result<Outcome, Error>> {
        self.run_many_with(tasks, concurrency, Payload::Guest)
    }

    /// Test support (the `testkit` feature): [`run_probe`](Self::run_probe) for every task,
    /// all sandboxes alive at once (siblings forked from this zygote).
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn run_probes(&mut self, tasks: &[Task], probe: ProbeFn) -> Vec<Result<Outcome, Error>> {
        self.run_many_with(tasks, tasks.len(), Payload::Probe(probe))
    }

    fn run_many_with(
        &mut self,
        tasks: &[Task],
        concurrency: usize,
        payload: Payload,
    ) -> Vec<Result<Outcome, Error>> {
        let mut results: Vec<Option<Result<Outcome, Error>>> = tasks.iter().map(|_| None).collect();
        let mut flying: Vec<(usize, Flight)> = Vec::new();
        let mut next = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while next < tasks.len() || !flying.is_empty() {
            while next < tasks.len() && flying.len() < concurrency.max(1) {
                match self.launch(&tasks[next], payload, Instant::now()) {
                    Ok(f) => flying.push((next, f)),
                    Err(e) => results[next] = Some(Err(e)),
                }
                next += 1;
            }
            if flying.is_empty() {
                continue;
            }
            let mut set: Vec<&mut Flight> = flying.iter_mut().map(|(_, f)| f).collect();
            if let Err(e) = flight::drive(&mut set, &mut buf) {
                for (i, f) in flying.drain(..) {
                    let slot = f.abandon();
                    self.release_slot(slot);
                    results[i] =
                        Some(Err(Error::Collect(std::io::Error::new(e.kind(), e.to_string()))));
                }
                continue;
            }
            let mut i = 0;
            while i < flying.len() {
                if flying[i].1.done() {
                    let (idx, f) = flying.swap_remove(i);
                    results[idx] = Some(self.land(f));
                } else {
                    i += 1;
                }
            }
            self.refill();
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Fork(std::io::Error::other("task not run")))))
            .collect()
    }

    /// Keeps `size` sandboxes forked ahead of time, fully confined and waiting for a task
    /// (0 disables the pool). They are forked now and after each task, off its critical path.
    pub fn set_pool_size(&mut self, size: usize) {
        self.pool_size = size;
        while self.pool.len() > size {
            if let Some(idle) = self.pool.pop_front() {
                self.dismiss(idle);
            }
        }
        self.refill();
    }

    /// Forks pool children until the pool is full; stops quietly at the first failure (the
    /// next task then forks on demand).
    pub fn refill(&mut self) {
        self.reap_zombies(false);
        if let Some(cg) = &mut self.cgroups {
            cg.top_up();
        }
        while self.pool.len() < self.pool_size {
            match self.prefork() {
                Ok(idle) => self.pool.push_back(idle),
                Err(_) => break,
            }
        }
    }

    /// Test support (the `testkit` feature; never in a release build without it): forks a
    /// sandbox through exactly the same setup as [`run`](Self::run), then runs `probe` (native
    /// code, given the task's args) instead of the guest; what it returns becomes the
    /// sandbox's stdout. Used to prove the confinement from the inside.
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn run_probe(&mut self, task: &Task, probe: ProbeFn) -> Result<Outcome, Error> {
        let flight = self.launch(task, Payload::Probe(probe), Instant::now())?;
        self.land(flight)
    }

    /// Starts `task` in a sandbox (from the pool when there is one) and returns it in flight,
    /// for a caller that drives it itself ([`flight::drive`]) and then lands or cancels it.
    pub(crate) fn start(&mut self, task: &Task) -> Result<Flight, Error> {
        self.launch(task, Payload::Guest, Instant::now())
    }

    /// Kills a sandbox in flight whose outcome no longer matters, reaps it and removes its
    /// cgroup.
    pub(crate) fn cancel(&mut self, flight: Flight) {
        let slot = flight.abandon();
        self.release_slot(slot);
    }

    /// Reaps sandboxes that reported before they were gone (`block`: wait for each).
    fn reap_zombies(&mut self, block: bool) {
        let mut still = Vec::new();
        for (pid, slot) in std::mem::take(&mut self.zombies) {
            let done = if block { sys::wait(pid).map(Some) } else { sys::try_wait(pid) };
            // Keep only those still running; an error (already reaped) drops it too.
            if matches!(done, Ok(None)) {
                still.push((pid, slot));
            } else {
                self.release_slot(slot);
            }
        }
        self.zombies = still;
    }

    /// Removes a reaped sandbox's cgroup.
    pub(crate) fn release_slot(&mut self, slot: Option<Slot>) {
        if let (Some(cg), Some(slot)) = (self.cgroups.as_mut(), slot) {
            cg.release(slot);
        }
    }

    /// A fresh cgroup for a sandbox whose linear memory is capped at `max_memory`.
    fn take_slot(&mut self, max_memory: Option<u64>) -> Result<Option<Slot>, Error> {
        let limit = max_memory.map(|m| m.saturating_add(bytes_u64(HOST_OVERHEAD)));
        match &mut self.cgroups {
            Some(cg) => cg.take(limit).map(Some).map_err(Error::MemoryLimit),
            None => Ok(None),
        }
    }

    /// Checks that a fork is possible now: the task is valid and we are single-threaded.
    fn preflight(&mut self, task: &Task) -> Result<Vec<Preopen>, Error> {
        if self.zombies.len() > 64 {
            self.reap_zombies(false);
        }
        task.validate().map_err(Error::InvalidTask)?;
        self.template
            .exports()
            .check(
                self.template.name(),
                task.invoke.as_deref(),
                &task.args,
                task.arguments.as_ref(),
            )
            .map_err(|e| Error::InvalidTask(e.into()))?;
        let preopens = self.preopens(task)?;
        if task.fuel.is_some() && !self.template.meters_fuel() {
            return Err(Error::FuelNotMetered);
        }
        if !task.files.is_empty() && self.confinement.scratch.is_none() {
            return Err(Error::InvalidTask(crate::task::TaskError::NoScratch));
        }
        Ok(preopens)
    }

    fn check_single_threaded(&self) -> Result<(), Error> {
        require_single_thread(&self.proc_stat)
    }

    /// Forks (clones) a child that runs `enter` with `assignment`, and moves it into `slot`
    /// (its memory cgroup). A child that has its task already (`Assignment::Now`) and a cgroup
    /// to join is gated: `fds.channel` is the read end of `gate`, and it waits there for one
    /// byte, written once it is in its cgroup, before it runs anything of the task.
    fn fork_child(
        &mut self,
        fds: ChildFds,
        timeout: Option<Duration>,
        assignment: Assignment,
        slot: Option<&mut Slot>,
        gate: Option<OwnedFd>,
    ) -> Result<(libc::pid_t, Instant), Error> {
        self.check_single_threaded()?;
        let gated = gate.is_some();
        let new_pid_ns = self.confinement.mounted.is_some();
        // The sandbox's own scratch tmpfs, detached: the child makes it its working directory;
        // this process closes its descriptor right after the fork.
        let scratch = match self.confinement.scratch {
            Some(size) => Some(
                sys::detached_tmpfs(size)
                    .map_err(|e| Error::Confine(crate::namespaces::NamespaceError::Scratch(e)))?,
            ),
            None => None,
        };
        let plan = Plan {
            scratch: scratch.as_ref().map(|fd| fd.as_fd()),
            zygote_pid: self.pid,
            lifeline: (self.lifeline.0.as_raw_fd(), self.lifeline.1.as_raw_fd()),
            new_pid_ns,
            harden: Some(Rlimits::for_task(self.confinement.max_file_size, timeout)),
            seccomp: self.confinement.seccomp.as_ref(),
            forked_at: Instant::now(),
            gated,
        };
        // SAFETY: we checked just above that this process has exactly one thread, and nothing
        // between that check and here starts one.
        let forked = unsafe { sys::fork_raw(new_pid_ns) };
        match forked.map_err(Error::Fork)? {
            Fork::Child => child::enter(&self.template, &mut self.warm, fds, &plan, assignment),
            Fork::Parent(pid) => {
                if let Some(slot) = slot
                    && let Err(e) = slot.attach(pid)
                {
                    sys::kill_hard(pid);
                    let _ = sys::wait(pid);
                    return Err(Error::MemoryLimit(e));
                }
                if let Some(gate) = gate {
                    // The child is where it belongs: let it go on (it ends itself if the write
                    // fails and the gate closes empty).
                    let _ = sys::write_all(gate.as_raw_fd(), b"g");
                }
                Ok((pid, plan.forked_at))
            }
        }
    }

    /// Forks a pool child: confined, waiting for its task on a pipe, in a cgroup of its own
    /// (its limit is written when its task arrives).
    fn prefork(&mut self) -> Result<Idle, Error> {
        self.fork_waiting(None, self.pool_max_memory)
    }

    /// Forks a sandbox that confines itself and then waits for its task on its channel (fd
    /// 4); `stdin`, when given, becomes its fd 0. It is moved into a cgroup of its own, with
    /// the limit for a linear-memory cap of `max_memory`.
    fn fork_waiting(
        &mut self,
        stdin: Option<RawFd>,
        max_memory: Option<u64>,
    ) -> Result<Idle, Error> {
        let mut slot = self.take_slot(max_memory)?;
        let (task_r, task_w) = sys::pipe().map_err(Error::Pipe)?;
        let (report_r, report_w) = sys::pipe().map_err(Error::Pipe)?;
        let (out_r, out_w) = sys::pipe().map_err(Error::Pipe)?;
        let (err_r, err_w) = sys::pipe().map_err(Error::Pipe)?;
        let fds = ChildFds {
            stdin,
            stdout: out_w.as_raw_fd(),
            stderr: err_w.as_raw_fd(),
            report: report_w.as_raw_fd(),
            channel: Some(task_r.as_raw_fd()),
        };
        // The CPU backstop the longest task may need; the child lowers it to its own task's
        // when the task arrives.
        let forked =
            self.fork_child(fds, Some(MAX_TIMEOUT), Assignment::Later, slot.as_mut(), None);
        let pid = match forked {
            Ok((pid, _)) => pid,
            Err(e) => {
                self.release_slot(slot);
                return Err(e);
            }
        };
        Ok(Idle { pid, task_w, report_r, out_r, err_r, slot })
    }

    /// Fork-server support: a confined sandbox whose task someone else (the host) will write
    /// to its channel — from the pool when there is one and `stdin` is not given, else forked
    /// now (with `stdin` as its fd 0). Also returns how long the fork took (0 from the pool).
    pub(crate) fn hand_out(
        &mut self,
        stdin: Option<&OwnedFd>,
        max_memory: Option<u64>,
    ) -> Result<(Idle, u64), Error> {
        self.pool_max_memory = max_memory;
        if stdin.is_none()
            && let Some(mut idle) = self.pool.pop_front()
        {
            if let Err(e) = idle.set_memory_limit(max_memory) {
                self.dismiss(idle);
                return Err(e);
            }
            return Ok((idle, 0));
        }
        let started = Instant::now();
        let idle = self.fork_waiting(stdin.map(AsRawFd::as_raw_fd), max_memory)?;
        Ok((idle, micros(started.elapsed())))
    }

    /// Closes an idle sandbox's channel (it exits), reaps it and removes its cgroup.
    pub(crate) fn dismiss(&mut self, idle: Idle) {
        let Idle { pid, task_w, slot, .. } = idle;
        drop(task_w);
        let _ = sys::wait(pid);
        self.release_slot(slot);
    }

    /// Fork-server support: records how much of this process's own code
    /// [`crate::hugepages::back_own_code`] backed with huge pages, for the stats.
    pub(crate) fn set_runtime_code_huge(&mut self, bytes: u64) {
        self.runtime_code_huge = bytes;
    }

    /// Fork-server support: makes one spare empty cgroup ahead of time, off any task's path;
    /// `false` if it could not (the next sandbox then makes its own).
    pub(crate) fn top_up_cgroup(&mut self) -> bool {
        self.cgroups.as_mut().is_some_and(|cg| cg.top_up_one())
    }

    /// Fork-server support: whether fewer spare cgroups are ready than it keeps.
    pub(crate) fn cgroups_short(&self) -> bool {
        self.cgroups.as_ref().is_some_and(|cg| cg.short())
    }

    /// Fork-server support: forks a pool sandbox for the host (not kept in this zygote's own
    /// pool), with the memory limit of [`pool_max_memory`](Self::pool_max_memory).
    pub(crate) fn fork_idle(&mut self) -> Result<Idle, Error> {
        self.prefork()
    }

    /// Fork-server support: the linear-memory cap pool sandboxes are forked with.
    pub(crate) fn pool_max_memory(&self) -> Option<u64> {
        self.pool_max_memory
    }

    /// Fork-server support: forks later pool sandboxes for this linear-memory cap.
    pub(crate) fn set_pool_max_memory(&mut self, max_memory: Option<u64>) {
        self.pool_max_memory = max_memory;
    }

    /// Fork-server support: the directories mounted for grants (empty without namespaces).
    pub(crate) fn mounted_grants(&self) -> &[MountedGrant] {
        self.confinement.mounted.as_deref().unwrap_or(&[])
    }

    /// Starts `task`: hands it to a pool child, or forks one for it.
    fn launch(&mut self, task: &Task, payload: Payload, started: Instant) -> Result<Flight, Error> {
        let preopens = self.preflight(task)?;
        let deadline = task.deadline_from(started).map_err(Error::InvalidTask)?;
        // Output always travels through pipes the zygote reads, captured or relayed to its
        // own stdout/stderr (`Output::Inherit`): a sandbox never holds the caller's streams.
        let poolable = matches!(payload, Payload::Guest) && !matches!(task.stdin, Stdin::Inherit);
        let stdin: &[u8] = match &task.stdin {
            Stdin::Bytes(b) => b,
            _ => &[],
        };
        // The frame's head (header borrowing from the task); stdin follows it as raw bytes. A
        // task too large for a frame runs in a sandbox forked for it instead.
        let head = (poolable && !self.pool.is_empty())
            .then(|| {
                let name = self.template.name();
                let header = task_header(task, name, &preopens, deadline, false);
                wire::encode_task(&header, stdin).ok()
            })
            .flatten();
        self.pool_max_memory = task.max_memory.map(bytes_u64);
        // A pool sandbox can die while it waits (the OOM killer, an operator's kill): when the
        // task cannot be written whole (EPIPE), the sandbox never ran it, and the next pool
        // sandbox, or one forked for it, takes it. (One that died after the write is
        // `killed`: the fork server's host tells the two apart, see `host::Written`.)
        while let Some(head) = &head
            && let Some(mut idle) = self.pool.pop_front()
        {
            if let Err(e) = idle.set_memory_limit(task.max_memory.map(bytes_u64)) {
                self.dismiss(idle);
                return Err(e);
            }
            let Idle { pid, task_w, report_r, out_r, err_r, slot } = idle;
            let sent = sys::write_all(task_w.as_raw_fd(), head)
                .and_then(|()| sys::write_all(task_w.as_raw_fd(), stdin));
            let flight = Flight::new(
                pid,
                started,
                0,
                task.timeout,
                deadline,
                report_r,
                out_r,
                err_r,
                task.output,
                slot,
            );
            if sent.is_ok() {
                return Ok(flight);
            }
            let slot = flight.abandon();
            self.release_slot(slot);
        }

        let mut slot = self.take_slot(task.max_memory.map(bytes_u64))?;
        let gate = match slot {
            Some(_) => Some(sys::pipe().map_err(Error::Pipe)?),
            None => None,
        };
        let (report_r, report_w) = sys::pipe().map_err(Error::Pipe)?;
        let (out_r, out_w) = sys::pipe().map_err(Error::Pipe)?;
        let (err_r, err_w) = sys::pipe().map_err(Error::Pipe)?;
        let fds = ChildFds {
            stdin: matches!(task.stdin, Stdin::Inherit).then_some(0),
            stdout: out_w.as_raw_fd(),
            stderr: err_w.as_raw_fd(),
            report: report_w.as_raw_fd(),
            channel: gate.as_ref().map(|(r, _)| r.as_raw_fd()),
        };
        let assignment = Assignment::Now { task, preopens, deadline, payload };
        // The gate's read end stays open here until the child has its copy.
        let (gate_r, gate_w) = gate.map_or((None, None), |(r, w)| (Some(r), Some(w)));
        let forked = self.fork_child(fds, task.timeout, assignment, slot.as_mut(), gate_w);
        drop(gate_r);
        let (pid, forked_at) = match forked {
            Ok(f) => f,
            Err(e) => {
                self.release_slot(slot);
                return Err(e);
            }
        };
        let fork_us = micros(forked_at.elapsed());
        // Our copies of the child's ends must be closed, or we would never see end of file.
        drop((report_w, out_w, err_w));
        Ok(Flight::new(
            pid,
            started,
            fork_us,
            task.timeout,
            deadline,
            report_r,
            out_r,
            err_r,
            task.output,
            slot,
        ))
    }

    /// Drives `flight` to its end (if not yet done), reaps it and decides its outcome.
    fn land(&mut self, mut flight: Flight) -> Result<Outcome, Error> {
        let mut buf = vec![0u8; 64 * 1024];
        while !flight.done() {
            if let Err(e) = flight::drive(&mut [&mut flight], &mut buf) {
                let slot = flight.abandon();
                self.release_slot(slot);
                return Err(Error::Collect(e));
            }
        }
        let pid = flight.pid;
        let landed =
            flight.land(&mut self.zombies).map_err(|source| Error::Wait { pid, source })?;
        let mut outcome = landed.outcome;
        if landed.status == ExitStatus::Signal(libc::SIGKILL)
            && !landed.timed_out
            && let Some(slot) = &landed.slot
            && slot.oom_killed()
        {
            outcome.status = Status::MemoryLimit;
            outcome.message = Some(oom_message(slot.limit()));
        }
        self.release_slot(landed.slot);
        Ok(outcome)
    }
}

/// A forked, confined sandbox waiting for its task on its channel, our ends of its pipes,
/// and its memory cgroup.
pub(crate) struct Idle {
    pub pid: libc::pid_t,
    pub task_w: OwnedFd,
    pub report_r: OwnedFd,
    pub out_r: OwnedFd,
    pub err_r: OwnedFd,
    pub slot: Option<Slot>,
}

/// Empties the fork-server zygote's capability bounding set, installs its own seccomp filter
/// on this process and switches its sandboxes to the short narrowing filter on top of it.
fn filter_zygote(confinement: &mut Confinement) -> Result<(), Error> {
    // The bounding set limits only what an execve could grant, and a zygote never executes
    // anything again: emptied here once, every sandbox inherits it empty and skips ~40
    // credential copies of its own (~3 % of a small run's CPU). Without namespaces (and so,
    // unprivileged, without the right to drop), each sandbox still does its own, as before;
    // a drop that fails here is left to the sandboxes the same way.
    if confinement.mounted.is_some() {
        let _ = sys::drop_bounding_set();
    }
    let mode = confinement.mode;
    let zygote = crate::seccomp::compile_zygote(mode).map_err(Error::Seccomp)?;
    let narrowing = crate::seccomp::compile_narrowing(mode).map_err(Error::Seccomp)?;
    let Some(zygote) = zygote else { return Ok(()) };
    crate::seccomp::apply(&zygote).map_err(Error::Seccomp)?;
    confinement.seccomp = narrowing;
    confinement.self_filtered = true;
    Ok(())
}

impl Idle {
    /// Sets its cgroup's limit for a linear-memory cap of `max_memory` (a limit that cannot
    /// be applied is an error for the task, never a layer silently dropped).
    fn set_memory_limit(&mut self, max_memory: Option<u64>) -> Result<(), Error> {
        set_slot_memory_limit(self.slot.as_mut(), max_memory)
    }
}

/// Sets a sandbox cgroup's limit for a linear-memory cap of `max_memory` (no cgroup: nothing
/// to set).
pub(crate) fn set_slot_memory_limit(
    slot: Option<&mut Slot>,
    max_memory: Option<u64>,
) -> Result<(), Error> {
    let limit = max_memory.map(|m| m.saturating_add(bytes_u64(HOST_OVERHEAD)));
    match slot {
        Some(slot) => slot.set_limit(limit).map_err(Error::MemoryLimit),
        None => Ok(()),
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        self.reap_zombies(true);
        while let Some(idle) = self.pool.pop_front() {
            self.dismiss(idle);
        }
    }
}

/// Where each granted directory is, as the sandbox will open it: the host path itself without
/// namespaces (checked to be a directory), else the zygote's mount of that grant.
pub(crate) fn resolve_preopens(
    mounted: Option<&[MountedGrant]>,
    dirs: &[DirGrant],
) -> Result<Vec<Preopen>, Error> {
    let mut out = Vec::with_capacity(dirs.len());
    for d in dirs {
        let path = match mounted {
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
                // Its own mount, with its own flags: a read-only grant of a directory also
                // granted read-write must not be served from the read-write mount.
                .find(|g| (g.host == d.host || g.canonical == d.host) && d.read_only == g.read_only)
                .map(|g| g.inside.clone())
                .ok_or_else(|| Error::NotGranted { path: d.host.clone() })?,
        };
        out.push(Preopen { path, guest: d.guest.clone(), read_only: d.read_only });
    }
    Ok(out)
}

/// `Err(NotSingleThreaded)` unless this process has one thread, read from its open
/// `/proc/self/stat`.
pub(crate) fn require_single_thread(stat: &std::fs::File) -> Result<(), Error> {
    let stat = sys::read_proc_file(stat).map_err(Error::ThreadCount)?;
    let threads = sys::threads_in_stat(&stat).map_err(Error::ThreadCount)?;
    if threads != 1 {
        return Err(Error::NotSingleThreaded { threads });
    }
    Ok(())
}

/// The frame that hands `task` to a sandbox waiting on its channel (`argv[0]` defaults to
/// `name`; `deadline` is when the task's time is up; `inherit_stdin`: the sandbox's fd 0 is
/// the task's stdin).
pub(crate) fn task_header<'a>(
    task: &'a Task,
    name: &'a str,
    preopens: &'a [Preopen],
    deadline: Option<Instant>,
    inherit_stdin: bool,
) -> TaskHeader<'a> {
    TaskHeader {
        argv0: Some(Cow::Borrowed(task.argv0.as_deref().unwrap_or(name))),
        args: Cow::Borrowed(&task.args),
        env: Cow::Borrowed(&task.env),
        inherit_stdin,
        preopens: Cow::Borrowed(preopens),
        max_memory: task.max_memory,
        fuel: task.fuel,
        max_write: task.max_write,
        max_files: task.max_files,
        // At most MAX_TIMEOUT (`Task::validate`): microseconds fit a u64.
        timeout_us: task.timeout.map(micros),
        remaining_us: deadline.map(|d| micros(d.saturating_duration_since(Instant::now()))),
        invoke: task.invoke.as_deref().map(Cow::Borrowed),
        files: Cow::Borrowed(&task.files),
        files_out: task.files_out,
        arguments: task.arguments.as_ref().map(Cow::Borrowed),
    }
}

/// The message of a sandbox the kernel killed for its cgroup's limit.
pub(crate) fn oom_message(limit: Option<u64>) -> String {
    format!(
        "sandbox killed by the kernel: host-side memory exceeded {} bytes (cgroup)",
        limit.unwrap_or(0)
    )
}

/// How long past its deadline a child may take to stop by itself before it is killed. A guest
/// running Wasm traps at the deadline; one blocked in a host call is stopped by its own timer
/// 10 ms later; this backstop is for a child that does neither.
pub const KILL_GRACE: Duration = Duration::from_millis(50);

/// A byte count as a `u64` (lossless on every target we build for; saturating otherwise).
pub(crate) fn bytes_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

pub(crate) fn micros(d: Duration) -> u64 {
    d.as_micros().try_into().unwrap_or(u64::MAX)
}

/// Decides the outcome from what the child reported and how it died.
pub(crate) fn judge(
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
        files: Vec::new(),
        files_truncated: false,
    };
    let mut report = match report {
        Ok(r) => r,
        Err(e) => {
            o.message = Some(format!("sandbox sent a corrupt report: {e}"));
            return o;
        }
    };
    if let Some(r) = &mut report {
        o.files = std::mem::take(&mut r.files);
        o.files_truncated = r.files_truncated;
        o.timings_us.setup = r.setup_us;
        o.timings_us.run = r.run_us;
        o.fuel_consumed = r.fuel_consumed;
    }
    match (report, status) {
        (Some(r), _) if !timed_out || r.status != Status::InternalError => {
            o.status = r.status;
            o.exit_code = r.exit_code;
            // Every status but `exited` says why, even from a report that did not (a
            // corrupt or forged one; found by fuzzing).
            o.message = match (r.message, r.status) {
                (None, s) if s != Status::Exited => {
                    Some(format!("sandbox reported `{}` without a message", s.as_str()))
                }
                (m, _) => m,
            };
        }
        _ if timed_out => {
            o.status = Status::Timeout;
            let ms = timeout.map_or(0, |t| t.as_millis());
            o.message = Some(format!(
                "deadline of {ms} ms passed and the sandbox did not stop; killed {} ms later",
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn status() -> impl Strategy<Value = Status> {
        prop::sample::select(vec![
            Status::Exited,
            Status::Trapped,
            Status::Timeout,
            Status::FuelExhausted,
            Status::MemoryLimit,
            Status::WriteLimit,
            Status::SandboxViolation,
            Status::Killed,
            Status::InternalError,
        ])
    }

    fn report() -> impl Strategy<Value = ChildReport> {
        (
            status(),
            proptest::option::of(any::<i32>()),
            proptest::option::of(".{0,10}"),
            any::<u64>(),
            any::<u64>(),
            proptest::option::of(any::<u64>()),
            any::<bool>(),
        )
            .prop_map(|(status, exit_code, message, setup_us, run_us, fuel, truncated)| {
                ChildReport {
                    status,
                    exit_code,
                    message,
                    setup_us,
                    run_us,
                    fuel_consumed: fuel,
                    peak_rss: 0,
                    files: Vec::new(),
                    files_truncated: truncated,
                }
            })
    }

    /// How the sandbox process ended: any exit code, any signal number.
    fn exit() -> impl Strategy<Value = ExitStatus> {
        prop_oneof![
            any::<i32>().prop_map(ExitStatus::Code),
            (1i32..65).prop_map(ExitStatus::Signal),
            Just(ExitStatus::Signal(libc::SIGSYS)),
            Just(ExitStatus::Signal(libc::SIGKILL)),
        ]
    }

    /// Found by fuzzing the report frame: a report of `trapped` without a message gave an
    /// outcome without one, though every status but `exited` carries its reason.
    #[test]
    fn a_report_without_a_message_still_says_why() {
        let input = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/seeds/sandbox_frames/found_trapped_without_message"
        ))
        .unwrap();
        let mut reader = wire::FrameReader::default();
        let report = match reader.push::<ChildReport>(&input[2..]) {
            wire::Frame::Complete(r) => r,
            _ => panic!("the finding's report decodes"),
        };
        assert_eq!((report.status, report.message.as_deref()), (Status::Trapped, None));
        let o = judge(Ok(Some(report)), ExitStatus::Code(0), false, None);
        assert_eq!(o.status, Status::Trapped);
        assert_eq!(o.message.as_deref(), Some("sandbox reported `trapped` without a message"));
    }

    proptest! {
        /// The outcome's status from what the sandbox reported and how its process ended.
        #[test]
        fn judged_status(
            report in prop_oneof![
                report().prop_map(|r| Ok(Some(r))),
                Just(Ok(None)),
                ".{0,10}".prop_map(Err),
            ],
            exit in exit(),
            timed_out in any::<bool>(),
            timeout_ms in proptest::option::of(1u64..1_000_000),
        ) {
            let timeout = timeout_ms.map(Duration::from_millis);
            let o = judge(report.clone(), exit, timed_out, timeout);
            match (&report, exit) {
                (Err(e), _) => {
                    prop_assert_eq!(o.status, Status::InternalError);
                    prop_assert_eq!(&o.message, &Some(format!("sandbox sent a corrupt report: {e}")));
                }
                // A report is the outcome, unless the sandbox blew its deadline while
                // reporting an internal error (the deadline is the cause then).
                (Ok(Some(r)), _) if !timed_out || r.status != Status::InternalError => {
                    prop_assert_eq!(o.status, r.status);
                    prop_assert_eq!(o.exit_code, r.exit_code);
                    if r.message.is_some() || r.status == Status::Exited {
                        prop_assert_eq!(&o.message, &r.message);
                    }
                }
                (Ok(_), _) if timed_out => {
                    prop_assert_eq!(o.status, Status::Timeout);
                    let ms = timeout.map_or(0, |t| t.as_millis());
                    let named = o.message.as_deref().unwrap_or("").contains(&format!("deadline of {ms} ms"));
                    prop_assert!(named);
                }
                (Ok(_), ExitStatus::Signal(libc::SIGSYS)) => {
                    prop_assert_eq!(o.status, Status::SandboxViolation);
                }
                (Ok(_), ExitStatus::Signal(libc::SIGABRT)) => {
                    prop_assert_eq!(o.status, Status::InternalError);
                }
                (Ok(_), ExitStatus::Signal(_)) => prop_assert_eq!(o.status, Status::Killed),
                (Ok(_), ExitStatus::Code(c)) => {
                    prop_assert_eq!(o.status, Status::InternalError);
                    let said = o.message.as_deref().unwrap_or("").contains(&format!("code {c} "));
                    prop_assert!(said);
                }
            }
            // Every status but `exited` says why.
            prop_assert!(o.status == Status::Exited || o.message.is_some(), "{:?}", o);
            // What the sandbox measured is kept whatever the status.
            if let Ok(Some(r)) = &report {
                prop_assert_eq!(o.timings_us.setup, r.setup_us);
                prop_assert_eq!(o.timings_us.run, r.run_us);
                prop_assert_eq!(o.fuel_consumed, r.fuel_consumed);
                prop_assert_eq!(o.files_truncated, r.files_truncated);
            } else {
                // Without a report, nothing explains the end but the message: there is one.
                prop_assert!(o.message.is_some());
                prop_assert_eq!(o.exit_code, None);
            }
        }

        /// A sandbox's host-side memory limit is its linear-memory cap plus the overhead,
        /// never wrapping.
        #[test]
        fn memory_limits_never_wrap(cap in any::<u64>()) {
            let limit = cap.saturating_add(bytes_u64(HOST_OVERHEAD));
            prop_assert!(limit >= cap);
            prop_assert!(oom_message(Some(limit)).contains(&limit.to_string()));
        }
    }
}
