//! Command-line parsing and the `run` and `worker` commands.

mod interp;
#[cfg(feature = "serve")]
mod mcp;
mod parse;
mod run;
#[cfg(feature = "serve")]
mod serve;
mod worker;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use zeroboot_wasm::{Config, DirGrant, Error, Status, Task};

/// Limits apply to every task unless a flag changes them: timeout 60s, linear memory 1GiB,
/// captured output 1MiB per stream, 256MiB written to files and 10,000 files created, no fuel
/// budget.
/// Exit codes of the command, besides the guest's own exit code.
pub mod exit {
    /// Bad command line: unknown flag, malformed value.
    pub const USAGE: i32 = 2;
    /// The module is not a valid WASI command (not WebAssembly, invalid, no `_start`,
    /// unknown import), or it is hostile: its start function or instantiation passed the
    /// limits (timeout, memory cap, fuel), or compiling it passed the compile bounds.
    pub const DATA: i32 = 65;
    /// The module file or a granted directory is missing or unreadable.
    pub const NO_INPUT: i32 = 66;
    /// The runtime itself failed.
    pub const INTERNAL: i32 = 70;
    /// The task hit its deadline.
    pub const TIMEOUT: i32 = 124;
    /// The guest trapped (as `wasmtime run`: 128 + SIGABRT).
    pub const TRAPPED: i32 = 134;
    /// The sandbox was killed by a signal.
    pub const KILLED: i32 = 137;
    /// The task passed its write budget (`write_limit`): 128 + SIGXFSZ, the status of a
    /// process stopped for writing past its file-size limit.
    pub const WRITE_LIMIT: i32 = 153;
    /// The seccomp filter stopped a forbidden system call (128 + SIGSYS).
    pub const SANDBOX_VIOLATION: i32 = 159;
}

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0-125  the guest's own exit code (status `exited`); WASI preview1 in Wasmtime refuses
         proc_exit codes of 126 and above (the guest traps), as `wasmtime run` does
  2      bad command line
  65     the module is not a valid WASI command or component, or loading it passed a limit:
         its start function ran past --timeout or --fuel, it needs more linear memory
         than --max-memory, or compiling it passed --compile-timeout/--compile-max-memory
  66     the module file or a granted directory is missing or unreadable
  70     internal error in the runtime
  124    timeout
  134    the guest trapped (as `wasmtime run`), ran out of fuel, or hit its memory cap
  137    the sandbox was killed by a signal
  153    write limit: the task passed --max-write or --max-files (128 + SIGXFSZ)
  159    sandbox violation (a system call the seccomp filter forbids)";

#[derive(Parser, Debug)]
#[command(name = "zeroboot-wasm", version, about = "Run untrusted WebAssembly, each task in its own OS process forked from a warm template", after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a WASI command (a preview1 module or a preview2 component) once, like `wasmtime run`, in a forked sandbox.
    #[command(after_help = EXIT_CODES_HELP)]
    Run(run::RunArgs),
    /// Keep one warm template and run one task per JSON line read on stdin.
    #[command(after_help = worker::WORKER_HELP)]
    Worker(worker::WorkerArgs),
    /// Run a JavaScript snippet (QuickJS, warmed once, forked per run): `js -e 'console.log(1+1)'`,
    /// `js script.js ARGS…`, or the code on stdin.
    #[command(after_help = EXIT_CODES_HELP)]
    Js(interp::SnippetArgs),
    /// Run a Python snippet (RustPython, warmed once, forked per run): `py -c 'print(1+1)'`,
    /// `py script.py ARGS…`, or the code on stdin.
    #[command(after_help = EXIT_CODES_HELP)]
    Py(interp::SnippetArgs),
    /// Measure end-to-end latency, throughput and per-sandbox memory beside their baselines.
    Bench(BenchArgs),
    /// Describe a module or component as JSON: its kind, imports and exported functions —
    /// for a component, each function's WIT types and a JSON Schema of its parameters and
    /// result. Compiles it (bounded, cached) but runs none of its code.
    Inspect(InspectArgs),
    /// Serve tools over HTTP: upload a module once, run it per request, each run in a fork.
    #[cfg(feature = "serve")]
    #[command(after_help = serve::SERVE_HELP)]
    Serve(serve::ServeArgs),
    /// Serve the same tools over the Model Context Protocol on stdin/stdout, each call in a fork.
    #[cfg(feature = "serve")]
    #[command(after_help = mcp::MCP_HELP)]
    Mcp(mcp::McpArgs),
}

/// Options shared by `run` and `worker`.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Grant a host directory read-write, seen by the guest at GUEST (default: HOST as written).
    #[arg(long = "dir", value_name = "HOST[::GUEST]", value_parser = parse::dir_rw)]
    dirs: Vec<DirGrant>,
    /// Grant a host directory read-only.
    #[arg(long = "dir-ro", value_name = "HOST[::GUEST]", value_parser = parse::dir_ro)]
    dirs_ro: Vec<DirGrant>,
    /// Set an environment variable for the guest; `--env NAME` passes the host's value.
    #[arg(long = "env", value_name = "NAME[=VALUE]", value_parser = parse::env_var)]
    env: Vec<(String, String)>,
    /// Wall-clock deadline per task, e.g. `500ms`, `2s`, or `none` (at most 365 days).
    #[arg(long, value_name = "DURATION", value_parser = parse::deadline, default_value = "60s")]
    timeout: parse::Deadline,
    /// Cap on the guest's linear memory, e.g. `64MiB`.
    #[arg(long, value_name = "SIZE", value_parser = parse::size, default_value = "1GiB")]
    max_memory: usize,
    /// Instruction budget per task (compiles the module with fuel metering, which is slower).
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,
    /// Most bytes of stdout and of stderr kept per task when output is captured.
    #[arg(long, value_name = "SIZE", value_parser = parse::size, default_value = "1MiB")]
    max_output: usize,
    /// Directory for compiled modules (default: $ZEROBOOT_WASM_CACHE_DIR, else
    /// $XDG_CACHE_HOME/zeroboot-wasm, else ~/.cache/zeroboot-wasm).
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    cache_dir: Option<PathBuf>,
    /// Compile the module every time; never read or write the cache.
    #[arg(long)]
    no_cache: bool,
    /// Seccomp policy: `enforce` ends a sandbox that makes a forbidden system call
    /// (sandbox_violation), `log` allows and logs it to the kernel log, `off` installs none.
    #[arg(long, value_enum, default_value = "enforce")]
    seccomp: SeccompArg,
    /// User, mount, network, IPC, UTS and per-sandbox PID namespaces, with an empty root
    /// holding only the granted directories. `off` where user namespaces are unavailable.
    #[arg(long, value_enum, default_value = "on")]
    namespaces: OnOff,
    /// Largest file a guest may write in a granted directory (writes past it fail with EFBIG).
    #[arg(long, value_name = "SIZE", value_parser = parse::size_u64, default_value = "64MiB")]
    max_file_size: u64,
    /// Wall-clock bound on compiling the module (in a child process, killed past it); a
    /// cached module is not compiled.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration, default_value = "60s")]
    compile_timeout: std::time::Duration,
    /// Memory bound on the compiler process (`RLIMIT_DATA`).
    #[arg(long, value_name = "SIZE", value_parser = parse::size_u64, default_value = "2GiB")]
    compile_max_memory: u64,
    /// Most bytes a task may write to files in total (overwrites included; stdout and stderr
    /// are not charged); a write past it ends the task with status write_limit.
    #[arg(long, value_name = "SIZE", value_parser = parse::size_u64, default_value = "256MiB")]
    max_write: u64,
    /// Most files, directories and links a task may create; one more ends the task with
    /// status write_limit.
    #[arg(long, value_name = "N", default_value = "10000")]
    max_files: u64,
    /// Call this export instead of `_start`, as `wasmtime run --invoke` does: its parameters
    /// are parsed from the guest's arguments (integers, `0x` hex, floats) and its results
    /// printed, one per line. A reactor module (no `_start`) needs it. For a component, a
    /// call in WAVE (`'add(1, 2)'`), its results printed in WAVE.
    #[arg(long, value_name = "NAME")]
    invoke: Option<String>,
    /// Run this export once in the zygote, before the first fork, so every task starts from
    /// the memory it initialised (default: `_initialize`, then `wizer.initialize` or
    /// `wizer-initialize`, whichever the module exports).
    #[arg(long, value_name = "NAME", conflicts_with = "no_init")]
    init: Option<String>,
    /// Run no initialiser in the zygote: each task does all of the guest's start-up itself
    /// (a reactor's `_initialize` runs in every sandbox, as under `wasmtime run`).
    #[arg(long)]
    no_init: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum SeccompArg {
    Enforce,
    Log,
    Off,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum OnOff {
    On,
    Off,
}

impl CommonArgs {
    fn config(&self) -> Config {
        let mut c = Config::new();
        c.fuel(self.fuel.is_some());
        c.compile_limits(Some(zeroboot_wasm::CompileLimits {
            timeout: self.compile_timeout,
            max_memory: self.compile_max_memory,
        }));
        c.warm_up(match (&self.init, self.no_init) {
            (_, true) => zeroboot_wasm::WarmUp::Off,
            (Some(name), false) => zeroboot_wasm::WarmUp::Export(name.clone()),
            (None, false) => zeroboot_wasm::WarmUp::Auto,
        });
        if self.no_cache {
            c.cache_dir(None);
        } else if let Some(d) = &self.cache_dir {
            c.cache_dir(Some(d.clone()));
        }
        c
    }

    fn isolation(&self) -> zeroboot_wasm::Isolation {
        zeroboot_wasm::Isolation {
            namespaces: self.namespaces == OnOff::On,
            seccomp: match self.seccomp {
                SeccompArg::Enforce => zeroboot_wasm::SeccompMode::Enforce,
                SeccompArg::Log => zeroboot_wasm::SeccompMode::Log,
                SeccompArg::Off => zeroboot_wasm::SeccompMode::Off,
            },
            max_file_size: self.max_file_size,
            grants: self.dirs.iter().chain(&self.dirs_ro).cloned().collect(),
            // The module's start function runs under the task limits the flags give.
            init: zeroboot_wasm::InitLimits {
                timeout: self.timeout.0,
                max_memory: Some(self.max_memory),
                fuel: self.fuel,
            },
            scratch: None,
        }
    }

    /// How the command's template is loaded into its zygote (a zygote process; for `run`,
    /// `js` and `py`, this process).
    fn load_options(&self, pool: usize) -> zeroboot_wasm::LoadOptions {
        zeroboot_wasm::LoadOptions {
            config: self.config(),
            isolation: self.isolation(),
            pool,
            ..zeroboot_wasm::LoadOptions::default()
        }
    }

    /// The task every command-line task starts from: env, grants and limits.
    fn base_task(&self) -> Task {
        Task {
            env: self.env.clone(),
            dirs: self.dirs.iter().chain(&self.dirs_ro).cloned().collect(),
            output: zeroboot_wasm::Output::Capture { max_bytes: self.max_output },
            timeout: self.timeout.0,
            max_memory: Some(self.max_memory),
            fuel: self.fuel,
            max_write: Some(self.max_write),
            max_files: Some(self.max_files),
            invoke: self.invoke.clone(),
            ..Task::default()
        }
    }
}

/// Parses the command line and runs the command; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => exit::USAGE,
            };
        }
    };
    match cli.command {
        Command::Run(args) => run::main(args),
        Command::Worker(args) => worker::main(args),
        Command::Js(args) => interp::main(interp::Lang::Js, args),
        Command::Py(args) => interp::main(interp::Lang::Py, args),
        Command::Bench(args) => bench_main(args),
        Command::Inspect(args) => inspect_main(args),
        #[cfg(feature = "serve")]
        Command::Serve(args) => serve::main(args),
        #[cfg(feature = "serve")]
        Command::Mcp(args) => mcp::main(args),
    }
}

/// Prints a one-line error and returns the exit code for it.
pub fn report_error(e: &Error) -> i32 {
    eprintln!("zeroboot-wasm: error: {}", e.one_line());
    match e {
        Error::ReadModule { .. }
        | Error::GrantDir { .. }
        | Error::NotGranted { .. }
        | Error::Confine(zeroboot_wasm::namespaces::NamespaceError::OpenGrant { .. })
        | Error::Load { kind: zeroboot_wasm::protocol::LoadFailure::MissingInput, .. } => {
            exit::NO_INPUT
        }
        // A reactor run without --invoke: the module is not a command.
        Error::InvalidTask(zeroboot_wasm::TaskError::Entry(
            zeroboot_wasm::entry::EntryError::NoStart { .. },
        )) => exit::DATA,
        Error::InvalidTask(_) => exit::USAGE,
        _ if e.is_bad_input() => exit::DATA,
        _ => exit::INTERNAL,
    }
}

/// The exit code for a task's final status (for `exited`, the guest's own code).
pub fn status_exit_code(status: Status, exit_code: Option<i32>) -> i32 {
    match status {
        Status::Exited => exit_code.unwrap_or(0),
        Status::Trapped | Status::FuelExhausted | Status::MemoryLimit => exit::TRAPPED,
        Status::Timeout => exit::TIMEOUT,
        Status::WriteLimit => exit::WRITE_LIMIT,
        Status::SandboxViolation => exit::SANDBOX_VIOLATION,
        Status::Killed => exit::KILLED,
        Status::InternalError => exit::INTERNAL,
    }
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The `.wasm` (or `.wat`) file.
    file: PathBuf,
}

fn inspect_main(a: InspectArgs) -> i32 {
    match zeroboot_wasm::Template::from_file(&a.file, &Config::new()) {
        Ok(t) => {
            let text = serde_json::to_string_pretty(&t.describe()).unwrap_or_default();
            // A closed stdout (`| head`) is the reader's choice, not an error of ours.
            let _ =
                std::io::Write::write_all(&mut std::io::stdout(), format!("{text}\n").as_bytes());
            0
        }
        Err(e) => report_error(&e),
    }
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Tasks per measurement.
    #[arg(long, default_value = "2000")]
    tasks: usize,
    /// Sandboxes in flight for the throughput figures (default: the number of cores).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
    /// `off` measures without namespaces (seccomp, rlimits and capability drop stay).
    #[arg(long, value_enum, default_value = "on")]
    namespaces: OnOff,
    /// Leave out the interpreter snippets (measured when the interpreter modules are found).
    #[arg(long)]
    no_snippets: bool,
    /// Also measure a core module beside its component twin (the same guest built for
    /// wasm32-wasip1 and wasm32-wasip2) through the fork server's pool.
    #[arg(long, num_args = 2, value_names = ["MODULE", "COMPONENT"])]
    twins: Vec<PathBuf>,
    /// The WASI command to run (default: a bundled hello in WebAssembly text).
    module: Option<PathBuf>,
}

/// The `cold_process` baseline's runner: the test-support binary `zeroboot-testkit`, when it
/// sits next to this executable (a build with `--features testkit` puts it there). It is
/// never shipped; without it the benchmark leaves the row out and says so.
fn cold_runner() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let runner = exe.parent()?.join("zeroboot-testkit");
    runner.is_file().then_some(runner)
}

fn bench_main(a: BenchArgs) -> i32 {
    let cfg = zeroboot_wasm::bench::BenchConfig {
        tasks: a.tasks,
        concurrency: a
            .concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        module: a.module,
        cold_runner: cold_runner(),
        namespaces: a.namespaces == OnOff::On,
        snippets: if a.no_snippets { Vec::new() } else { interp::bench_snippets() },
        twins: match a.twins.as_slice() {
            [m, c] => Some((m.clone(), c.clone())),
            _ => None,
        },
    };
    match zeroboot_wasm::bench::run(&cfg) {
        Ok(r) if a.json => {
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            0
        }
        Ok(r) => {
            print!("{}", zeroboot_wasm::bench::table(&r));
            0
        }
        Err(e) => report_error(&e),
    }
}
