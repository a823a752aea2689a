//! `zeroboot-wasm run`: one task, stdio passed through, the guest's exit code as ours.

use super::{CommonArgs, exit, report_error, status_exit_code};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use zeroboot_wasm::{Output, Status, Stdin, run_in_this_process};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Capture stdout and stderr and print the outcome as one JSON object instead.
    #[arg(long)]
    json: bool,
    /// `argv[0]` as the guest sees it (default: the file name of MODULE, as `wasmtime run`).
    #[arg(long, value_name = "NAME")]
    argv0: Option<String>,
    /// The WASI command: a preview1 module or a preview2 component (`.wasm`, or `.wat` text).
    #[arg(value_name = "MODULE")]
    module: PathBuf,
    /// Arguments for the guest.
    #[arg(value_name = "ARGS", trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn main(a: RunArgs) -> i32 {
    run_once(&a.common, a.module, a.args, a.argv0, a.json)
}

/// Runs one task with this process as its zygote ([`run_in_this_process`]): stdin passed
/// through, output relayed (or captured and printed as one JSON outcome with `json`), the
/// guest's exit code as ours. This process exists for that one task, so it needs no zygote
/// process of its own: starting one cost more than `wasmtime run` takes in all (README,
/// "One-shot `run`").
pub fn run_once(
    common: &CommonArgs,
    module: PathBuf,
    args: Vec<String>,
    argv0: Option<String>,
    json: bool,
) -> i32 {
    // As `wasmtime run` does: the guest's argv[0] is the module's file name.
    let argv0 = argv0.or_else(|| module.file_name().map(|n| n.to_string_lossy().into_owned()));
    let mut task = common.base_task().args(args);
    task.argv0 = argv0;
    task.stdin = Stdin::Inherit;
    if !json {
        task.output = Output::Inherit;
    }
    let outcome = match run_in_this_process(module, &common.load_options(0), &task) {
        Ok(o) => o,
        Err(e) => return report_error(&e),
    };
    if json {
        let mut out = std::io::stdout().lock();
        let line = serde_json::to_string(&outcome).unwrap_or_else(|e| {
            format!("{{\"status\":\"internal_error\",\"message\":\"cannot encode outcome: {e}\"}}")
        });
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return exit::INTERNAL;
        }
    } else if outcome.status != Status::Exited {
        // Like `wasmtime run`, a trap (or any other abnormal end) is described on stderr.
        let msg = outcome.message.as_deref().unwrap_or("no details");
        eprintln!("zeroboot-wasm: {}: {msg}", outcome.status.as_str());
    }
    status_exit_code(outcome.status, outcome.exit_code)
}
