//! `zeroboot-wasm worker`: one warm template, one forked task per JSON line on stdin, one JSON
//! outcome per line on stdout, in order.

use super::interp::Lang;
use super::{CommonArgs, report_error};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use zeroboot_wasm::worker_request::{self, CodeArgs, Line, read_line};
use zeroboot_wasm::{BlockingRuntime, MAX_REQUEST_BYTES};

pub const WORKER_HELP: &str = "\
Input, one JSON object per line (every field optional):
  {\"args\": [\"a\", \"b\"], \"env\": {\"K\": \"V\"}, \"stdin\": \"text\", \"stdin_base64\": \"...\",
   \"timeout_ms\": 500, \"max_memory\": 67108864, \"fuel\": 1000000,
   \"max_write\": 1048576, \"max_files\": 100, \"invoke\": \"export_name\",
   \"code\": \"console.log(1+1)\" (with --lang js|py: the snippet, run before `args`),
   \"arguments\": {\"a\": 1} (a component: `invoke` names an export, these are its arguments
   as JSON, shaped as `zeroboot-wasm inspect` describes; the reply adds \"result\")}
A component's `invoke` is otherwise a WAVE call, as `run --invoke` takes it: \"add(1, 2)\".
Fields missing from a line take the worker's flags (--timeout, --max-memory, --fuel,
--max-write, --max-files); a
`fuel` field needs a worker started with --fuel (the module is compiled with metering).
`timeout_ms` is at most 31536000000 (365 days). `args` and `env` may not hold NUL bytes, and
env names may not be empty or hold `=`. A line may be at most 64 MiB (67108864 bytes).
Output, one JSON object per line, in input order:
  {\"status\": \"exited\"|\"trapped\"|\"timeout\"|\"write_limit\"|\"killed\"|...,
   \"exit_code\": 0, \"stdout\": \"...\", \"stderr\": \"...\", \"stdout_truncated\": false,
   \"stderr_truncated\": false, \"message\": null,
   \"timings_us\": {\"fork\": 0, \"setup\": 0, \"run\": 0, \"total\": 0},
   \"peak_memory_bytes\": 0, \"fuel_consumed\": 0 (with a fuel budget only)}
A stream that is not UTF-8 also gets `stdout_base64` / `stderr_base64` with the exact bytes.
A line that is not a valid request (or is too long) gets
{\"status\": \"invalid_request\", \"message\": ...} and the worker goes on. Blank lines are ignored. The worker exits 0 at end of input.";

#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Add the zygote's thread and mapping counts, read just before each fork, to each outcome.
    #[arg(long)]
    stats: bool,
    /// Sandboxes kept forked ahead of time, fully confined and waiting for a task, so a task
    /// does not wait for a fork (0: fork each sandbox when its task arrives).
    #[arg(long, value_name = "K", default_value = "2")]
    pool: usize,
    /// Serve snippets in an interpreter guest instead of a module: requests give `code`.
    #[arg(
        long,
        value_enum,
        value_name = "LANG",
        conflicts_with = "module",
        required_unless_present = "module"
    )]
    lang: Option<Lang>,
    /// The WASI module or component (`.wasm`, or `.wat` text).
    #[arg(value_name = "MODULE")]
    module: Option<PathBuf>,
}

fn error_line(status: &str, message: &str) -> String {
    serde_json::json!({ "status": status, "message": message }).to_string()
}

pub fn main(a: WorkerArgs) -> i32 {
    // This process is the host; the template lives in a zygote process of its own, so no
    // request this process parses is ever in a sandbox's memory.
    let rt = match BlockingRuntime::new() {
        Ok(rt) => rt,
        Err(e) => return report_error(&e),
    };
    let module = match (&a.module, a.lang) {
        (Some(module), _) => module.clone(),
        (None, Some(lang)) => match lang.module() {
            Ok(m) => m,
            Err(e) => {
                eprintln!("zeroboot-wasm: error: {e}");
                return super::exit::NO_INPUT;
            }
        },
        // Clap requires one of the two; should it ever let neither through, say so.
        (None, None) => {
            eprintln!("zeroboot-wasm: error: give a MODULE or --lang js|py");
            return super::exit::USAGE;
        }
    };
    let template = match rt.load(module, a.common.load_options(a.pool)) {
        Ok(t) => t,
        Err(e) => return report_error(&e),
    };
    let base = a.common.base_task();
    let snippet = a.lang.map(|lang| move |code: &str, args: &[String]| lang.code_args(code, args));
    let code_args: Option<CodeArgs> = snippet.as_ref().map(|f| f as CodeArgs);
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut out = std::io::stdout().lock();
    let mut line = Vec::new();
    let mut line_no = 0u64;
    loop {
        let read = read_line(&mut input, &mut line, MAX_REQUEST_BYTES);
        line_no += 1;
        match read {
            Ok(Line::End) => return 0,
            Ok(Line::Read) => {}
            Ok(Line::TooLong(len)) => {
                let reply = error_line(
                    "invalid_request",
                    &format!(
                        "line {line_no}: request of {len} bytes exceeds the limit of \
                         {MAX_REQUEST_BYTES} bytes"
                    ),
                );
                if writeln!(out, "{reply}").and_then(|()| out.flush()).is_err() {
                    return 0;
                }
                continue;
            }
            Err(e) => {
                eprintln!("zeroboot-wasm: error: cannot read requests: {e}");
                return super::exit::INTERNAL;
            }
        }
        let text = match std::str::from_utf8(&line) {
            Ok(t) => t.trim(),
            Err(_) => {
                let reply = error_line("invalid_request", &format!("line {line_no}: not UTF-8"));
                if writeln!(out, "{reply}").and_then(|()| out.flush()).is_err() {
                    return 0;
                }
                continue;
            }
        };
        if text.is_empty() {
            continue;
        }
        let parsed = worker_request::parse(text, &base, code_args)
            .map_err(|e| format!("line {line_no}: {e}"));
        // The request is parsed (its stdin now lives in the task): a large line's buffer is
        // not kept for the rest of the worker's life.
        if line.capacity() > 1 << 20 {
            line = Vec::new();
        }
        let reply = match parsed {
            Err(e) => error_line("invalid_request", &e),
            Ok(task) => {
                let stats = a.stats.then(|| rt.stats(&template));
                match rt.run(&template, &task) {
                    Ok(outcome) => {
                        let mut v = serde_json::to_value(&outcome)
                            .unwrap_or_else(|e| serde_json::json!({"status": "internal_error", "message": e.to_string()}));
                        if let (Some(stats), Some(obj)) = (stats, v.as_object_mut()) {
                            let s = stats.map_or_else(
                                |e| serde_json::json!({ "error": e.to_string() }),
                                |s| serde_json::json!(s),
                            );
                            obj.insert("zygote".into(), s);
                        }
                        // A JSON call's result, parsed from the one line the sandbox wrote.
                        if let (true, Some(obj)) = (task.arguments.is_some(), v.as_object_mut())
                            && let Some(result) = outcome.json_result()
                        {
                            obj.insert("result".into(), result);
                        }
                        v.to_string()
                    }
                    Err(e) if e.is_bad_input() => error_line("invalid_request", &e.one_line()),
                    Err(e) => error_line("internal_error", &e.one_line()),
                }
            }
        };
        // A closed stdout means nobody is listening: stop quietly.
        if writeln!(out, "{reply}").and_then(|()| out.flush()).is_err() {
            return 0;
        }
    }
}
