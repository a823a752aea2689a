//! `zeroboot-testkit`: test and bench support, built only with the `testkit` feature and never
//! shipped (`cargo build --release` builds neither it nor the probe payload in the library).
//!
//! - `zeroboot-testkit probe [FLAGS] NAME [ARGS…]` forks a sandbox through the full setup a
//!   guest gets and, as native code, attempts one escape (see `probes.rs`); prints the task's
//!   outcome as JSON. Used by `tests/isolation.rs`.
//! - `zeroboot-testkit cold MODULE` loads and runs a module in this fresh process: the
//!   `cold_process` baseline of `zeroboot-wasm bench` and `cargo bench`.

mod probes;

#[allow(dead_code)]
#[path = "../../cli/parse.rs"]
mod parse;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use zeroboot_wasm::{Config, DirGrant, Isolation, Output, SeccompMode, Task, Template, Zygote};

#[derive(Parser, Debug)]
#[command(
    name = "zeroboot-testkit",
    about = "Test and bench support for zeroboot-wasm (not shipped)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a native escape probe through the full sandbox setup; print the outcome as JSON.
    Probe(ProbeArgs),
    /// Load and run a module in this fresh process (a cold start, like `wasmtime run`).
    Cold { module: PathBuf },
    /// Keep a pool of two sandboxes of MODULE in this process's zygote, kill both while they
    /// wait, then run one task; print its outcome as JSON.
    DeadPool { module: PathBuf },
}

/// The isolation flags of `zeroboot-wasm run`, with the same syntax.
#[derive(Args, Debug)]
struct ProbeArgs {
    /// Grant a host directory read-write, seen by the probe at GUEST.
    #[arg(long = "dir", value_name = "HOST[::GUEST]", value_parser = parse::dir_rw)]
    dirs: Vec<DirGrant>,
    /// Grant a host directory read-only.
    #[arg(long = "dir-ro", value_name = "HOST[::GUEST]", value_parser = parse::dir_ro)]
    dirs_ro: Vec<DirGrant>,
    /// Largest file the probe may write (`RLIMIT_FSIZE`).
    #[arg(long, value_name = "SIZE", value_parser = parse::size_u64, default_value = "64MiB")]
    max_file_size: u64,
    #[arg(long, value_enum, default_value = "enforce")]
    seccomp: SeccompArg,
    #[arg(long, value_enum, default_value = "on")]
    namespaces: OnOff,
    /// Give each sandbox a scratch directory of this size (its working directory).
    #[arg(long, value_name = "SIZE", value_parser = parse::size_u64)]
    scratch: Option<u64>,
    /// Run a sibling probe at the same time, from the same zygote, with these
    /// space-separated arguments (repeatable); prints a JSON array of the outcomes.
    #[arg(long, value_name = "PROBE ARGS")]
    sibling: Vec<String>,
    /// The probe, then its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    probe: Vec<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum SeccompArg {
    Enforce,
    Log,
    Off,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum OnOff {
    On,
    Off,
}

fn main() {
    let code = match Cli::parse().command {
        Command::Probe(a) => probe_main(a),
        Command::Cold { module } => zeroboot_wasm::testkit::cold_main(&module),
        Command::DeadPool { module } => dead_pool_main(&module),
    };
    std::process::exit(code);
}

/// Prints an outcome as JSON (exit 0), or the error (exit 70).
fn print_outcome(result: Result<zeroboot_wasm::Outcome, zeroboot_wasm::Error>) -> i32 {
    match result {
        Ok(outcome) => {
            println!("{}", serde_json::to_string(&outcome).unwrap_or_default());
            0
        }
        Err(e) => {
            eprintln!("zeroboot-testkit: error: {}", e.one_line());
            70
        }
    }
}

/// Keeps a pool of two sandboxes of `module` in this process's zygote, kills both while they
/// wait, then runs one task.
fn dead_pool_main(module: &std::path::Path) -> i32 {
    use std::io::{Read, Seek};
    // Opened now: the zygote's new root has no /proc.
    let children = std::fs::File::open(format!("/proc/self/task/{}/children", std::process::id()));
    let isolation =
        Isolation { namespaces: zeroboot_wasm::namespaces::available(), ..Isolation::default() };
    let result = Template::from_file(module, &Config::new())
        .and_then(|template| Zygote::with_isolation(template, isolation))
        .and_then(|mut zygote| {
            zygote.set_pool_size(2);
            let mut text = String::new();
            if let Ok(mut f) = children {
                let _ = f.rewind().and_then(|()| f.read_to_string(&mut text));
            }
            let idle: Vec<i32> = text.split_whitespace().filter_map(|p| p.parse().ok()).collect();
            if idle.len() != 2 {
                eprintln!("zeroboot-testkit: expected 2 pool sandboxes, found {idle:?}");
                std::process::exit(70);
            }
            for &pid in &idle {
                // SAFETY: kill sends a signal to our own child, and waitid with WNOWAIT waits
                // for its death without reaping it (the zygote still owns it); `info` is ours.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    let mut info: libc::siginfo_t = std::mem::zeroed();
                    libc::waitid(
                        libc::P_PID,
                        pid as libc::id_t,
                        &mut info,
                        libc::WEXITED | libc::WNOWAIT,
                    );
                }
            }
            zygote.run(&Task::new().output(Output::Capture { max_bytes: 1 << 20 }))
        });
    print_outcome(result)
}

fn probe_main(a: ProbeArgs) -> i32 {
    let grants: Vec<DirGrant> = a.dirs.iter().chain(&a.dirs_ro).cloned().collect();
    let isolation = Isolation {
        namespaces: a.namespaces == OnOff::On,
        seccomp: match a.seccomp {
            SeccompArg::Enforce => SeccompMode::Enforce,
            SeccompArg::Log => SeccompMode::Log,
            SeccompArg::Off => SeccompMode::Off,
        },
        max_file_size: a.max_file_size,
        grants: grants.clone(),
        init: zeroboot_wasm::InitLimits::default(),
        scratch: a.scratch,
    };
    let mut config = Config::new();
    config.cache_dir(None);
    // It imports `path_open` (never called): a guest that can name files, so the zygote makes
    // it a scratch directory when one is asked for.
    let module = br#"(module
        (import "wasi_snapshot_preview1" "path_open"
            (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
        (func (export "_start")))"#;
    let result = Template::from_bytes("probe", module, &config)
        .and_then(|template| Zygote::with_isolation(template, isolation))
        .and_then(|mut zygote| {
            let mut task = Task::new()
                .args(a.probe.iter().cloned())
                .output(Output::Capture { max_bytes: 1 << 20 })
                .timeout(std::time::Duration::from_secs(60));
            for g in grants {
                task = task.dir(g);
            }
            if !a.sibling.is_empty() {
                let mut tasks = vec![task.clone()];
                for s in &a.sibling {
                    tasks.push(Task {
                        args: s.split(' ').map(String::from).collect(),
                        ..task.clone()
                    });
                }
                let outcomes: Vec<serde_json::Value> = zygote
                    .run_probes(&tasks, probes::probe)
                    .into_iter()
                    .map(|r| match r {
                        Ok(o) => serde_json::to_value(&o).unwrap_or_default(),
                        Err(e) => serde_json::json!({ "error": e.one_line() }),
                    })
                    .collect();
                println!("{}", serde_json::Value::from(outcomes));
                std::process::exit(0);
            }
            zygote.run_probe(&task, probes::probe)
        });
    print_outcome(result)
}
