//! The benchmark: every figure beside its baselines, measured in one run on one guest.
//!
//! - `floor`: fork + `_exit` + `waitpid` of this very process — the machine's floor for any
//!   fork-per-task design.
//! - `in_process`: new `Store`, instantiate, run `_start` in this process — the lower bound
//!   without OS isolation.
//! - `cold_process`: a fresh process per task that loads the compiled module from the cache
//!   and runs it (what `wasmtime run` does). The runner is the test-support binary
//!   (`zeroboot-testkit cold MODULE`, built with the `testkit` feature); without it this row is
//!   left out, and the table says so.
//! - `on_demand`: our path, forking a confined sandbox when the task arrives.
//! - `pool`: our path with pre-forked, already-confined sandboxes.
//!
//! Latency is per task, from hand-over to outcome in hand (report and output collected; the
//! child's teardown is reaped afterwards). Throughput is tasks
//! per second at concurrency 1 and at `concurrency` (default: the number of cores).
//! Per-sandbox memory is measured from `smaps_rollup` of N live sandboxes after they ran the
//! guest: M(N) = PSS of the zygote and its sandboxes, and the marginal cost is
//! (M(N2) − M(N1)) / (N2 − N1). The sandboxes stay alive on their own: they run the bundled
//! [`HELLO_THEN_WAIT_WAT`] (hello's one `fd_write`, then a WASI `poll_oneoff` sleep), from
//! pre-forked sandboxes as `worker` uses, and are measured once their line has arrived — that
//! is, while they wait — then killed. (Until November the sandboxes ran the benchmark's own
//! guest to the end and were held alive after their report by a hook in the sandbox's exit
//! path; that hook is gone from the production child.)

use crate::error::{Error, boxed};
use crate::flight::{self, Flight};
use crate::template::{MemoryCap, TaskState};
use crate::{Isolation, Output, Stdin, Task, Template, Zygote, sys, wire};
use seccompiler::BpfProgram;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use wasmtime::Store;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

/// A WASI command that writes one line: the bundled default guest (no build needed).
pub const HELLO_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from a zeroboot-wasm sandbox\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 35))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// Hello, then a wait: the guest of the per-sandbox memory measurement. It writes hello's line
/// with one `fd_write`, then blocks in `poll_oneoff` on a relative monotonic-clock timeout of
/// 30 s, so a sandbox stays alive, having run its guest, until it is killed.
pub const HELLO_THEN_WAIT_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from a zeroboot-wasm sandbox\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 35))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    ;; One subscription at 64 (48 bytes, zeroed memory): userdata 0, tag 0 (clock),
    ;; clock id 1 (monotonic) at 80, timeout in ns at 88, precision 0, flags 0 (relative).
    (i32.store (i32.const 80) (i32.const 1))
    (i64.store (i32.const 88) (i64.const 30000000000))
    (drop (call $poll_oneoff (i32.const 64) (i32.const 128) (i32.const 1) (i32.const 160)))))"#;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Tasks per measurement.
    pub tasks: usize,
    /// The "full" concurrency (default: cores).
    pub concurrency: usize,
    /// The module (`None`: the bundled hello).
    pub module: Option<PathBuf>,
    /// The cold runner for `cold_process`: the test-support binary, run as
    /// `zeroboot-testkit cold MODULE`. `None` leaves the row out (never estimated).
    pub cold_runner: Option<PathBuf>,
    /// Confine with namespaces (else only the per-sandbox layers).
    pub namespaces: bool,
    /// Interpreter snippets to measure (warm pool, boot per task, in process).
    pub snippets: Vec<SnippetSpec>,
    /// A core module and a component doing the same work (the same guest built for
    /// wasm32-wasip1 and wasm32-wasip2), measured side by side through the fork server's pool.
    pub twins: Option<(PathBuf, PathBuf)>,
}

/// A snippet run in an interpreter guest.
#[derive(Debug, Clone)]
pub struct SnippetSpec {
    /// A short name for the row (`js`, `py`).
    pub name: String,
    /// The interpreter module.
    pub module: PathBuf,
    /// The guest's arguments (e.g. `-e`, `console.log(1+1)`).
    pub args: Vec<String>,
    /// What the snippet must print.
    pub expect_stdout: String,
}

/// One snippet's figures: through the fork server's pool with the interpreter warmed once in
/// the zygote; the same with no warm-up (the interpreter boots in every task); and in this
/// process without isolation (a fresh instance per task, booting the interpreter).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SnippetFigures {
    pub name: String,
    pub code: String,
    pub module_bytes: u64,
    /// Instantiation plus warm-up in the zygote, µs (once per zygote).
    pub warm_up_us: u64,
    pub warm_pool: Figures,
    pub boot_pool: Figures,
    pub in_process: Figures,
}

/// Latency and throughput of one way of running the task.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Figures {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Tasks per second at concurrency 1.
    pub per_s: f64,
    /// Tasks per second at the full concurrency (`None` where not measured).
    pub per_s_concurrent: Option<f64>,
    pub samples: usize,
}

impl Figures {
    fn from(mut lat_us: Vec<f64>, elapsed: Duration) -> Self {
        lat_us.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| {
            let i = ((lat_us.len() as f64 * q).ceil() as usize).saturating_sub(1);
            lat_us.get(i.min(lat_us.len().saturating_sub(1))).copied().unwrap_or(0.0)
        };
        Self {
            p50_us: at(0.5),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: lat_us.last().copied().unwrap_or(0.0),
            per_s: lat_us.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            per_s_concurrent: None,
            samples: lat_us.len(),
        }
    }
}

/// The zygote as it forks.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ZygoteShape {
    pub mappings: usize,
    pub rss_kb: u64,
    pub private_dirty_kb: u64,
    pub anonymous_kb: u64,
}

/// Seccomp filter lengths (BPF instructions) and attach costs (p50 µs, in a fresh child).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SeccompFigures {
    /// The whole sandbox allowlist (in-process zygote's sandboxes).
    pub whole_instructions: usize,
    pub whole_install_us: f64,
    /// The short filter a fork-server sandbox adds on top of its zygote's.
    pub narrowing_instructions: usize,
    pub narrowing_install_us: f64,
    /// The fork-server zygote's own filter (installed once per zygote).
    pub zygote_instructions: usize,
}

/// The machine the figures come from.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
}

/// Everything one run measures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BenchReport {
    pub floor: Figures,
    pub in_process: Figures,
    /// `None` when no cold runner was available (see [`BenchConfig::cold_runner`]).
    pub cold_process: Option<Figures>,
    pub on_demand: Figures,
    pub pool: Figures,
    /// The fork server from a multi-threaded host: a zygote process of its own, sandboxes
    /// forked when their task arrives.
    pub server_on_demand: Figures,
    /// The fork server with pre-forked sandboxes (what `worker`, `serve` and the library's
    /// `Runtime` use).
    pub server_pool: Figures,
    pub marginal_private_dirty_kb: f64,
    pub marginal_pss_kb: f64,
    /// The guest the per-sandbox memory was measured with.
    pub memory_guest: String,
    /// Attaching a sandbox's seccomp filter: the largest single step of an on-demand
    /// sandbox's setup (the kernel runs a new filter for every system call number still
    /// allowed, to build its action cache, so the cost grows with the filter's length and with
    /// how much earlier filters allow).
    pub seccomp: SeccompFigures,
    pub zygote: ZygoteShape,
    pub concurrency: usize,
    pub tasks: usize,
    pub module: String,
    pub isolation: String,
    pub machine: Machine,
    pub snippets: Vec<SnippetFigures>,
    /// The module/component twins, when asked for.
    pub twins: Option<TwinFigures>,
}

/// A core module and its component twin through the fork server's pool, in one run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TwinFigures {
    pub module: String,
    pub component: String,
    pub module_pool: Figures,
    pub component_pool: Figures,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Runs every measurement. This process becomes the zygote (and, with namespaces, is
/// confined) part-way through: call it from a process that exists for the benchmark.
pub fn run(cfg: &BenchConfig) -> Result<BenchReport, Error> {
    let machine = machine();
    let (name, template) = match &cfg.module {
        Some(p) => (p.display().to_string(), Template::from_file(p, &crate::Config::new())?),
        None => (
            "hello (bundled WAT)".to_string(),
            Template::from_bytes("hello.wat", HELLO_WAT.as_bytes(), &crate::Config::new())?,
        ),
    };
    // The cold processes load the same module from the cache, as `wasmtime run` would.
    let module_path = match &cfg.module {
        Some(p) => p.clone(),
        None => {
            let p = std::env::temp_dir()
                .join(format!("zeroboot-bench-hello-{}.wat", std::process::id()));
            std::fs::write(&p, HELLO_WAT)
                .map_err(|source| Error::ReadModule { path: p.clone(), source })?;
            p
        }
    };
    let proc_dir = File::open("/proc").map_err(Error::ThreadCount)?;
    let c = cfg.concurrency.max(1);
    let n = cfg.tasks.max(10);

    // The fork server first: its host runtime starts threads, which are joined again before
    // this process becomes an in-process zygote (which refuses to fork otherwise).
    let (server_on_demand, server_pool) = measure_fork_server(&cfg.module, n, c, cfg.namespaces)?;
    let snippets = cfg
        .snippets
        .iter()
        .map(|spec| measure_snippet(spec, n, c, cfg.namespaces))
        .collect::<Result<Vec<_>, _>>()?;
    let twins = match &cfg.twins {
        Some((module, component)) => Some(measure_twins(module, component, n, c, cfg.namespaces)?),
        None => None,
    };
    let floor = measure_floor(n, c)?;
    let seccomp = measure_filters(50)?;
    let in_process = measure_in_process(&template, n)?;
    let cold_process = match &cfg.cold_runner {
        Some(runner) => Some(measure_cold(runner, &module_path, (n / 10).clamp(20, 200), c)?),
        None => None,
    };
    if cfg.module.is_none() {
        let _ = std::fs::remove_file(&module_path);
    }

    let isolation = Isolation { namespaces: cfg.namespaces, ..Isolation::default() };
    // Before this process becomes the zygote (and, with namespaces, is confined): the helper
    // that measures live sandboxes is forked from it.
    let (n1, n2) = (4, 16);
    let (m1, m2) = measure_live_memory(&isolation, n1, n2)?;
    let per = (n2 - n1) as f64;
    let isolation_name = if cfg.namespaces {
        "namespaces + seccomp + rlimits + no caps"
    } else {
        "seccomp + rlimits + no caps"
    };
    let mut zygote = Zygote::with_isolation(template, isolation)?;
    // The write budget the command line applies by default, so its checks are measured too.
    let task = Task::new()
        .output(Output::Capture { max_bytes: 1 << 20 })
        .stdin(Stdin::Empty)
        .max_write(crate::DEFAULT_MAX_WRITE)
        .max_files(crate::DEFAULT_MAX_FILES);
    let tasks: Vec<Task> = (0..n).map(|_| task.clone()).collect();

    zygote.set_pool_size(0);
    let on_demand = measure_zygote(&mut zygote, &tasks, c, false)?;
    zygote.set_pool_size(c + 1);
    let pool = measure_zygote(&mut zygote, &tasks, c, true)?;
    zygote.set_pool_size(0);

    let shape = zygote_shape(&proc_dir);
    Ok(BenchReport {
        floor,
        in_process,
        cold_process,
        on_demand,
        pool,
        server_on_demand,
        server_pool,
        // As floats: PSS can shrink as sandboxes are added (pages shared with processes
        // outside the measured set are split among more sharers), and an unsigned
        // difference would wrap.
        marginal_private_dirty_kb: (m2.1 as f64 - m1.1 as f64) / per,
        marginal_pss_kb: (m2.0 as f64 - m1.0 as f64) / per,
        memory_guest: "hello then wait (bundled WAT)".to_string(),
        seccomp,
        zygote: shape,
        concurrency: c,
        tasks: n,
        module: name,
        isolation: isolation_name.to_string(),
        machine,
        snippets,
        twins,
    })
}

/// The module and the component twin through the pool, one after the other on one host, each
/// task the twin's `_start` / `wasi:cli/run` with no arguments (every outcome must be
/// `exited` with code 0).
fn measure_twins(
    module: &std::path::Path,
    component: &std::path::Path,
    n: usize,
    c: usize,
    namespaces: bool,
) -> Result<TwinFigures, Error> {
    use crate::host::{LoadOptions, ModuleSource};
    let isolation = Isolation { namespaces, ..Isolation::default() };
    let options =
        LoadOptions { isolation, pool: c + 1, max_in_flight: c.max(1), ..LoadOptions::default() };
    let mut rows = Vec::new();
    for path in [module, component] {
        let source = ModuleSource::File(path.to_path_buf());
        let served = serve(&source, &[(options.clone(), n)], &Task::new(), c, None)?;
        rows.push(served.into_iter().next().map(|(f, _)| f).unwrap_or_default());
    }
    let mut rows = rows.into_iter();
    Ok(TwinFigures {
        module: module.display().to_string(),
        component: component.display().to_string(),
        module_pool: rows.next().unwrap_or_default(),
        component_pool: rows.next().unwrap_or_default(),
    })
}

/// Runs `n` jobs one at a time (latency, throughput at concurrency 1), then `n` more in
/// batches of `c` started together (throughput at concurrency `c`). `start` begins a job,
/// `finish` waits for it.
fn one_then_batched<H>(
    n: usize,
    c: usize,
    mut start: impl FnMut() -> Result<H, Error>,
    mut finish: impl FnMut(H) -> Result<(), Error>,
) -> Result<Figures, Error> {
    let mut lat = Vec::with_capacity(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        finish(start()?)?;
        lat.push(us(t.elapsed()));
    }
    let mut f = Figures::from(lat, t0.elapsed());
    let t0 = Instant::now();
    let mut done = 0;
    while done < n {
        let batch = c.min(n - done);
        let jobs: Vec<H> = (0..batch).map(|_| start()).collect::<Result<_, _>>()?;
        for job in jobs {
            finish(job)?;
        }
        done += batch;
    }
    f.per_s_concurrent = Some(n as f64 / t0.elapsed().as_secs_f64());
    Ok(f)
}

fn measure_floor(n: usize, c: usize) -> Result<Figures, Error> {
    let fork_exit = || -> Result<libc::pid_t, Error> {
        // SAFETY: the child only calls _exit, which is async-signal-safe.
        match unsafe { sys::fork() }.map_err(Error::Fork)? {
            sys::Fork::Child => sys::exit_now(0),
            sys::Fork::Parent(pid) => Ok(pid),
        }
    };
    let reap = |pid| sys::wait(pid).map(drop).map_err(|source| Error::Wait { pid, source });
    one_then_batched(n, c, fork_exit, reap)
}

/// Attaching a sandbox's seccomp filter in a fresh child, p50 µs: the whole allowlist in a
/// child of an unfiltered process (`base` = `None`, the in-process zygote's sandboxes), or the
/// short narrowing filter on top of the zygote's own (`base` = the zygote filter, what a
/// fork-server sandbox does).
fn measure_seccomp_install(
    n: usize,
    base: Option<&BpfProgram>,
    program: &BpfProgram,
) -> Result<f64, Error> {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let (r, w) = sys::pipe().map_err(Error::Pipe)?;
        // SAFETY: this process is single-threaded here (nothing before the zygote starts a
        // thread); the child only installs the filters, writes 8 bytes and exits.
        match unsafe { sys::fork() }.map_err(Error::Fork)? {
            sys::Fork::Child => {
                // The filter lets the child write only to fds 1–3: report on fd 3.
                if sys::dup2(std::os::fd::AsRawFd::as_raw_fd(&w), 3).is_err() {
                    sys::exit_now(1);
                }
                let based = base.is_none_or(|b| crate::seccomp::apply(b).is_ok());
                let t = Instant::now();
                let ok = based
                    && sys::set_no_new_privs().is_ok()
                    && crate::seccomp::install(program).is_ok();
                let us = if ok { t.elapsed().as_micros() as u64 } else { u64::MAX };
                let _ = sys::write_all(3, &us.to_le_bytes());
                sys::exit_now(0)
            }
            sys::Fork::Parent(pid) => {
                drop(w);
                let mut b = [0u8; 8];
                let n = sys::read(&r, &mut b).map_err(Error::Collect)?;
                sys::wait(pid).map_err(|source| Error::Wait { pid, source })?;
                let us = u64::from_le_bytes(b);
                if n == 8 && us != u64::MAX {
                    lat.push(us as f64);
                }
            }
        }
    }
    Ok(Figures::from(lat, Duration::from_secs(1)).p50_us)
}

/// The filters' lengths and attach costs, whole vs narrowing-on-zygote.
fn measure_filters(n: usize) -> Result<SeccompFigures, Error> {
    let compile = |f: fn(crate::SeccompMode) -> std::io::Result<Option<BpfProgram>>| {
        f(crate::SeccompMode::Enforce)
            .map_err(Error::Seccomp)?
            .ok_or_else(|| Error::Seccomp(std::io::Error::other("no filter")))
    };
    let whole = compile(crate::seccomp::compile)?;
    let zygote = compile(crate::seccomp::compile_zygote)?;
    let narrowing = compile(crate::seccomp::compile_narrowing)?;
    Ok(SeccompFigures {
        whole_instructions: whole.len(),
        whole_install_us: measure_seccomp_install(n, None, &whole)?,
        narrowing_instructions: narrowing.len(),
        narrowing_install_us: measure_seccomp_install(n, Some(&zygote), &narrowing)?,
        zygote_instructions: zygote.len(),
    })
}

fn measure_in_process(template: &Template, n: usize) -> Result<Figures, Error> {
    measure_in_process_with(template, &[], n)
}

/// A fresh instance per task in this process, `_start` run with `args`: no fork, no isolation.
fn measure_in_process_with(
    template: &Template,
    args: &[String],
    n: usize,
) -> Result<Figures, Error> {
    let (module, linker) = template.code.core().ok_or_else(|| Error::Instantiate {
        name: template.name.clone(),
        source: "the in-process baseline measures core modules only".into(),
    })?;
    let pre = linker
        .instantiate_pre(module)
        .map_err(|e| Error::Instantiate { name: template.name.clone(), source: boxed(e) })?;
    // A current-thread runtime starts no thread, so this process can still fork afterwards.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| Error::Engine(e.into()))?;
    let mut lat = Vec::with_capacity(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let ctx = WasiCtxBuilder::new()
            .arg(&template.name)
            .args(args)
            .stdout(MemoryOutputPipe::new(1 << 20))
            .stderr(MemoryOutputPipe::new(1 << 20))
            .build_p1();
        let mut store = Store::new(
            &template.engine,
            TaskState {
                wasi: ctx,
                memory: MemoryCap::default(),
                writes: Default::default(),
                file_writes: Default::default(),
            },
        );
        store.set_epoch_deadline(crate::template::NO_DEADLINE);
        let result = rt.block_on(async {
            let instance = pre.instantiate_async(&mut store).await?;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call_async(&mut store, ()).await
        });
        if let Err(e) = result
            && e.downcast_ref::<wasmtime_wasi::I32Exit>().is_none_or(|x| x.0 != 0)
        {
            return Err(Error::Instantiate { name: template.name.clone(), source: boxed(e) });
        }
        lat.push(us(t.elapsed()));
    }
    Ok(Figures::from(lat, t0.elapsed()))
}

fn measure_cold(
    runner: &std::path::Path,
    module: &std::path::Path,
    n: usize,
    c: usize,
) -> Result<Figures, Error> {
    use std::process::{Command, Stdio};
    let spawn = || {
        Command::new(runner)
            .arg("cold")
            .arg(module)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(Error::Fork)
    };
    // One warm-up run fills the compile cache.
    spawn()?.wait().map_err(Error::Fork)?;
    one_then_batched(n, c, spawn, |mut child| child.wait().map(drop).map_err(Error::Fork))
}

/// Runs `tasks` through the fork server, from a multi-threaded Tokio host: one at a time
/// (latency, throughput at concurrency 1), then with `c` in flight. On-demand, then pooled.
fn measure_fork_server(
    module: &Option<PathBuf>,
    n: usize,
    c: usize,
    namespaces: bool,
) -> Result<(Figures, Figures), Error> {
    use crate::host::{LoadOptions, ModuleSource};
    let source = match module {
        Some(p) => ModuleSource::File(p.clone()),
        None => ModuleSource::Bytes {
            name: "hello.wat".into(),
            bytes: HELLO_WAT.as_bytes().to_vec().into(),
        },
    };
    let isolation = Isolation { namespaces, ..Isolation::default() };
    let options = |pool| LoadOptions {
        isolation: isolation.clone(),
        pool,
        max_in_flight: c.max(1),
        ..LoadOptions::default()
    };
    let runs = [(options(0), n), (options(c + 1), n)];
    let mut it = serve(&source, &runs, &Task::new(), c, None)?.into_iter().map(|(f, _)| f);
    Ok((it.next().unwrap_or_default(), it.next().unwrap_or_default()))
}

/// Loads `source` once per entry of `runs` (its options, its task count) on a multi-threaded
/// Tokio host and runs `task` that many times one at a time, then as many again with `c` in
/// flight. Every outcome must be `exited` (with `expect` on stdout, when given). Returns the
/// figures and the zygote's warm-up time for each.
fn serve(
    source: &crate::host::ModuleSource,
    runs: &[(crate::host::LoadOptions, usize)],
    task: &Task,
    c: usize,
    expect: Option<&str>,
) -> Result<Vec<(Figures, u64)>, Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(c.max(2))
        .enable_all()
        .build()
        .map_err(Error::SpawnZygote)?;
    let check = |o: crate::Outcome| -> Result<u64, Error> {
        let wrong_output = expect.is_some_and(|e| o.stdout.bytes != e.as_bytes());
        if o.status != crate::Status::Exited || o.exit_code != Some(0) || wrong_output {
            return Err(Error::Collect(std::io::Error::other(format!(
                "benchmark task ended {} (exit code {:?}, stdout {:?}): {} {}",
                o.status.as_str(),
                o.exit_code,
                o.stdout_text(),
                o.message.as_deref().unwrap_or_default(),
                o.stderr_text(),
            ))));
        }
        Ok(o.timings_us.total)
    };
    let figures = rt.block_on(async {
        let runtime = crate::host::Runtime::new();
        let mut out = Vec::new();
        for (options, n) in runs {
            let pool = options.pool;
            // The concurrent phase queues every task at once (`c` of them in flight): the
            // queue must hold them all, or the runtime rightly answers `Busy`.
            let options = crate::host::LoadOptions {
                max_queued: options.max_queued.max(*n),
                ..options.clone()
            };
            let handle = runtime.load(source.clone(), options).await?;
            let warm_up_us = handle.stats().await?.warm_up_us;
            // Warm-up: the zygote's pool fills, code paths are touched.
            for _ in 0..20.min(*n) {
                check(handle.run(task).await?)?;
                if pool > 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            let mut lat = Vec::with_capacity(*n);
            let t0 = Instant::now();
            for _ in 0..*n {
                lat.push(check(handle.run(task).await?)? as f64);
            }
            let mut f = Figures::from(lat, t0.elapsed());
            let t0 = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..*n {
                let (h, t) = (handle.clone(), task.clone());
                set.spawn(async move { h.run(&t).await });
            }
            while let Some(r) = set.join_next().await {
                let o = r.map_err(|e| Error::Protocol(e.to_string()))??;
                check(o)?;
            }
            f.per_s_concurrent = Some(*n as f64 / t0.elapsed().as_secs_f64());
            out.push((f, warm_up_us));
        }
        Ok::<_, Error>(out)
    })?;
    rt.shutdown_timeout(Duration::from_secs(5));
    Ok(figures)
}

/// A snippet in an interpreter guest: warm pool, boot-per-task pool, in process. Booting per
/// task is slow (an interpreter's whole start-up), so those rows take fewer samples.
fn measure_snippet(
    spec: &SnippetSpec,
    n: usize,
    c: usize,
    namespaces: bool,
) -> Result<SnippetFigures, Error> {
    use crate::host::{LoadOptions, ModuleSource};
    let source = ModuleSource::File(spec.module.clone());
    let isolation = Isolation { namespaces, ..Isolation::default() };
    let options = |warm_up: crate::WarmUp| {
        let mut config = crate::Config::new();
        config.warm_up(warm_up);
        LoadOptions {
            config,
            isolation: isolation.clone(),
            pool: c + 1,
            max_in_flight: c.max(1),
            ..LoadOptions::default()
        }
    };
    let boot_n = (n / 20).clamp(10, 100);
    let task = Task::new().args(spec.args.iter().cloned());
    let runs = [(options(crate::WarmUp::Auto), n), (options(crate::WarmUp::Off), boot_n)];
    let mut served = serve(&source, &runs, &task, c, Some(&spec.expect_stdout))?.into_iter();
    let (warm_pool, warm_up_us) = served.next().unwrap_or_default();
    let (boot_pool, _) = served.next().unwrap_or_default();
    let template = Template::from_file(&spec.module, &crate::Config::new())?;
    let in_process = measure_in_process_with(&template, &spec.args, boot_n)?;
    let module_bytes = std::fs::metadata(&spec.module).map_or(0, |m| m.len());
    Ok(SnippetFigures {
        name: spec.name.clone(),
        code: spec.args.last().cloned().unwrap_or_default(),
        module_bytes,
        warm_up_us,
        warm_pool,
        boot_pool,
        in_process,
    })
}

fn measure_zygote(
    zygote: &mut Zygote,
    tasks: &[Task],
    c: usize,
    pooled: bool,
) -> Result<Figures, Error> {
    let mut lat = Vec::with_capacity(tasks.len());
    let t0 = Instant::now();
    for t in tasks {
        let o = zygote.run(t)?;
        if o.status != crate::Status::Exited {
            return Err(Error::Collect(std::io::Error::other(format!(
                "benchmark task ended {}: {}",
                o.status.as_str(),
                o.message.unwrap_or_default()
            ))));
        }
        lat.push(o.timings_us.total as f64);
        if pooled {
            zygote.refill();
        }
    }
    let mut f = Figures::from(lat, t0.elapsed());
    let t0 = Instant::now();
    let results = zygote.run_many(tasks, c);
    let elapsed = t0.elapsed();
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        return Err(e);
    }
    f.per_s_concurrent = Some(tasks.len() as f64 / elapsed.as_secs_f64());
    Ok(f)
}

/// `(Pss, Private_Dirty)` in kB from a `smaps_rollup` text.
fn rollup(text: &str) -> (u64, u64, u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("Pss:"), field("Private_Dirty:"), field("Rss:"), field("Anonymous:"))
}

fn read_at(dir: &File, path: &str) -> String {
    sys::open_at(dir, path)
        .and_then(|f| sys::read_proc_file(&f))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn zygote_shape(proc_dir: &File) -> ZygoteShape {
    let pid = std::process::id();
    let maps = read_at(proc_dir, &format!("{pid}/maps"));
    let (_, dirty, rss, anon) = rollup(&read_at(proc_dir, &format!("{pid}/smaps_rollup")));
    ZygoteShape {
        mappings: maps.lines().count(),
        rss_kb: rss,
        private_dirty_kb: dirty,
        anonymous_kb: anon,
    }
}

/// PSS and private dirty, in kB.
type Usage = (u64, u64);

/// `(PSS, private dirty)` in kB of a zygote of [`HELLO_THEN_WAIT_WAT`] with `n1` and then
/// `n2` live sandboxes. Measured in a helper process forked for it, which becomes that
/// zygote: this process becomes the benchmark's own zygote afterwards, and a process is
/// confined (enters its namespaces) only once.
fn measure_live_memory(
    isolation: &Isolation,
    n1: usize,
    n2: usize,
) -> Result<(Usage, Usage), Error> {
    let template = Template::from_bytes(
        "hello-then-wait.wat",
        HELLO_THEN_WAIT_WAT.as_bytes(),
        &crate::Config::new(),
    )?;
    let (r, w) = sys::pipe().map_err(Error::Pipe)?;
    let parent = sys::getpid();
    // SAFETY: this process is single-threaded here: the fork server's host runtime was shut
    // down before the floor was measured, and nothing since starts a thread (the zygote
    // created after this checks it again). The child allocates and uses the library as a
    // zygote does, which is sound in a single-threaded child.
    match unsafe { sys::fork() }.map_err(Error::Fork)? {
        sys::Fork::Child => {
            drop(r);
            let result: Result<_, String> =
                sys::die_with_parent(parent).map_err(|e| e.to_string()).and_then(|()| {
                    live_memory_zygote(template, isolation, n1, n2).map_err(|e| e.one_line())
                });
            let code = i32::from(sys::write_all(w.as_raw_fd(), &wire::encode(&result)).is_err());
            sys::exit_now(code)
        }
        sys::Fork::Parent(pid) => {
            drop(w);
            drop(template);
            let mut reader = wire::FrameReader::default();
            let mut buf = [0u8; 4096];
            let result = loop {
                let n = sys::read(&r, &mut buf).map_err(Error::Collect)?;
                if n == 0 {
                    break Err("the helper ended without a result".to_string());
                }
                match reader.push::<Result<(Usage, Usage), String>>(&buf[..n]) {
                    wire::Frame::Partial => continue,
                    wire::Frame::Complete(r) => break r,
                    wire::Frame::Corrupt(e) => break Err(e),
                }
            };
            sys::wait(pid).map_err(|source| Error::Wait { pid, source })?;
            result.map_err(|e| {
                Error::Collect(std::io::Error::other(format!("live-memory measurement: {e}")))
            })
        }
    }
}

/// In the helper: becomes the zygote and measures `n1`, then `n2`, live sandboxes.
fn live_memory_zygote(
    template: Template,
    isolation: &Isolation,
    n1: usize,
    n2: usize,
) -> Result<(Usage, Usage), Error> {
    let proc_dir = File::open("/proc").map_err(Error::ThreadCount)?;
    let mut zygote = Zygote::with_isolation(template, isolation.clone())?;
    let task = Task::new()
        .output(Output::Capture { max_bytes: 1 << 20 })
        .stdin(Stdin::Empty)
        .timeout(Duration::from_secs(60))
        .max_write(crate::DEFAULT_MAX_WRITE)
        .max_files(crate::DEFAULT_MAX_FILES);
    let m1 = live_memory(&mut zygote, &proc_dir, n1, &task)?;
    let m2 = live_memory(&mut zygote, &proc_dir, n2, &task)?;
    Ok((m1, m2))
}

/// Total PSS and private dirty (kB) of the zygote and `n` live sandboxes that ran the guest:
/// `n` pre-forked sandboxes are handed the task, and measured once each one's line has
/// arrived (the guest then waits in `poll_oneoff`); then they are killed.
fn live_memory(
    zygote: &mut Zygote,
    proc_dir: &File,
    n: usize,
    task: &Task,
) -> Result<Usage, Error> {
    zygote.set_pool_size(n);
    let mut flights = Vec::with_capacity(n);
    let mut started = Ok(());
    for _ in 0..n {
        match zygote.start(task) {
            Ok(f) => flights.push(f),
            Err(e) => {
                started = Err(e);
                break;
            }
        }
    }
    zygote.set_pool_size(0);
    let measured = started.and_then(|()| {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut waiting: Vec<&mut Flight> =
                flights.iter_mut().filter(|f| f.stdout_len() == 0).collect();
            if waiting.is_empty() {
                break;
            }
            if waiting.iter().any(|f| f.done()) {
                return Err(Error::Collect(std::io::Error::other(
                    "a sandbox of the memory measurement ended before writing its line",
                )));
            }
            flight::drive(&mut waiting, &mut buf).map_err(Error::Collect)?;
        }
        let mut pss = rollup(&read_at(proc_dir, &format!("{}/smaps_rollup", sys::getpid()))).0;
        let mut dirty = 0;
        for f in &flights {
            let (p, d, _, _) = rollup(&read_at(proc_dir, &format!("{}/smaps_rollup", f.pid)));
            pss += p;
            dirty += d;
        }
        Ok((pss, dirty))
    });
    for f in flights {
        zygote.cancel(f);
    }
    measured
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let mem_kb: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        kernel,
    }
}

/// What the table says in place of the `cold_process` row when there was no cold runner.
pub const COLD_RUNNER_MISSING: &str = "not measured: no cold runner (the test-support binary \
    zeroboot-testkit; `cargo build --release --features testkit` puts it next to zeroboot-wasm, \
    `cargo bench --features testkit` passes it)";

/// The human-readable table, with ratios to `floor` and to `in_process`.
pub fn table(r: &BenchReport) -> String {
    let mut s = String::new();
    let m = &r.machine;
    s.push_str(&format!(
        "zeroboot-wasm bench: {} tasks of {}, isolation: {}\nmachine: {} ({} cores, {} GiB), Linux {}\n\n",
        r.tasks, r.module, r.isolation, m.cpu, m.cores, m.memory_gib, m.kernel
    ));
    s.push_str(&format!(
        "{:<13} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}   {:>8} {:>11}\n",
        "",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "per_s c=1",
        format!("per_s c={}", r.concurrency),
        "×floor",
        "×in_process"
    ));
    for (name, f) in [
        ("floor", Some(&r.floor)),
        ("in_process", Some(&r.in_process)),
        ("cold_process", r.cold_process.as_ref()),
        ("on_demand", Some(&r.on_demand)),
        ("pool", Some(&r.pool)),
        ("srv_on_demand", Some(&r.server_on_demand)),
        ("srv_pool", Some(&r.server_pool)),
    ] {
        let Some(f) = f else {
            s.push_str(&format!("{name:<13} {COLD_RUNNER_MISSING}\n"));
            continue;
        };
        let conc = f.per_s_concurrent.map_or("-".to_string(), |v| format!("{v:.0}"));
        s.push_str(&format!(
            "{:<13} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>10.0} {:>10}   {:>8.2} {:>11.2}\n",
            name,
            f.p50_us,
            f.p99_us,
            f.p999_us,
            f.max_us,
            f.per_s,
            conc,
            f.p50_us / r.floor.p50_us.max(1e-9),
            f.p50_us / r.in_process.p50_us.max(1e-9),
        ));
    }
    s.push_str(&format!(
        "\nper sandbox (live, after running the guest; {}): private dirty {:.0} kB, PSS {:.0} kB\n",
        r.memory_guest, r.marginal_private_dirty_kb, r.marginal_pss_kb
    ));
    let sc = &r.seccomp;
    s.push_str(&format!(
        "seccomp attach per sandbox (p50): whole allowlist {} insns {:.0} µs; fork server's narrowing filter {} insns on the zygote's ({} insns) {:.0} µs\n",
        sc.whole_instructions, sc.whole_install_us, sc.narrowing_instructions, sc.zygote_instructions, sc.narrowing_install_us
    ));
    s.push_str(&format!(
        "zygote at fork: {} mappings, RSS {} kB, private dirty {} kB, anonymous {} kB\n",
        r.zygote.mappings, r.zygote.rss_kb, r.zygote.private_dirty_kb, r.zygote.anonymous_kb
    ));
    s.push_str(&format!(
        "fork server (multi-threaded host) / in-process zygote, p50: pool {:.2}×, on_demand {:.2}×; throughput c={}: pool {:.2}×, on_demand {:.2}×\n",
        r.server_pool.p50_us / r.pool.p50_us.max(1e-9),
        r.server_on_demand.p50_us / r.on_demand.p50_us.max(1e-9),
        r.concurrency,
        r.server_pool.per_s_concurrent.unwrap_or(0.0) / r.pool.per_s_concurrent.unwrap_or(1.0).max(1e-9),
        r.server_on_demand.per_s_concurrent.unwrap_or(0.0) / r.on_demand.per_s_concurrent.unwrap_or(1.0).max(1e-9),
    ));
    if let Some(cold) = &r.cold_process {
        s.push_str(&format!(
            "cold_process / on_demand p50: {:.1}×; ",
            cold.p50_us / r.on_demand.p50_us.max(1e-9)
        ));
    }
    for sn in &r.snippets {
        s.push_str(&format!(
            "\n{} snippet `{}` ({:.1} MiB module; zygote instantiation + warm-up {:.1} ms, once):\n",
            sn.name,
            sn.code,
            sn.module_bytes as f64 / (1 << 20) as f64,
            sn.warm_up_us as f64 / 1e3
        ));
        for (row, f) in [
            ("warm pool", &sn.warm_pool),
            ("boot pool", &sn.boot_pool),
            ("in_process", &sn.in_process),
        ] {
            s.push_str(&format!(
                "  {:<11} p50 {:>9.0} µs  p99 {:>9.0} µs  ({} samples)\n",
                row, f.p50_us, f.p99_us, f.samples
            ));
        }
        s.push_str(&format!(
            "  warm-up speed-up, p50: {:.1}× over booting per task; {:.1}× over in_process\n",
            sn.boot_pool.p50_us / sn.warm_pool.p50_us.max(1e-9),
            sn.in_process.p50_us / sn.warm_pool.p50_us.max(1e-9),
        ));
    }
    if let Some(t) = &r.twins {
        s.push_str("\nmodule vs component, the same guest through the fork server's pool:\n");
        for (row, f, path) in
            [("module", &t.module_pool, &t.module), ("component", &t.component_pool, &t.component)]
        {
            s.push_str(&format!(
                "  {:<10} p50 {:>7.0} µs  p99 {:>7.0} µs  {:>6.0}/s at {}  ({} samples; {})\n",
                row,
                f.p50_us,
                f.p99_us,
                f.per_s_concurrent.unwrap_or(0.0),
                r.concurrency,
                f.samples,
                path
            ));
        }
        s.push_str(&format!(
            "  component / module p50: {:.2}×, p99: {:.2}×\n",
            t.component_pool.p50_us / t.module_pool.p50_us.max(1e-9),
            t.component_pool.p99_us / t.module_pool.p99_us.max(1e-9),
        ));
    }
    s.push_str(&format!(
        "pool concurrent throughput / floor concurrent: {:.0}%\n",
        100.0 * r.pool.per_s_concurrent.unwrap_or(0.0)
            / r.floor.per_s_concurrent.unwrap_or(1.0).max(1e-9),
    ));
    s
}
