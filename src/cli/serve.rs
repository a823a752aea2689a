//! `zeroboot-wasm serve`: the HTTP server (`zeroboot_wasm::serve`) with its flags.

use super::interp::Lang;
use super::{CommonArgs, exit, parse};
use clap::Args;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use zeroboot_wasm::serve::{self, Access, ApiKeys, Interpreters, Language, ServeOptions};

pub const SERVE_HELP: &str = "\
Tools: POST /v1/tools?name=NAME (the .wasm or .wat as the body), GET /v1/tools,
GET|DELETE /v1/tools/{id}; runs: POST /v1/tools/{id}/run, POST /v1/tools/{id}/batch;
snippets (ZeroBoot-compatible): POST /v1/exec, POST /v1/exec/batch; GET /v1/health,
GET /metrics, GET /v1/openapi.json; MCP (Streamable HTTP) at /mcp. `?stream=sse` on a run or
/v1/exec streams the output as Server-Sent Events; a run's `files` go to a scratch directory
private to its sandbox (/scratch, its working directory). The limits flags (--timeout,
--max-memory, --fuel,
--max-output, ...) are each request's defaults and the most it may ask for.
Logs go to stderr (RUST_LOG=debug for one line per request); the bound address is printed
on stdout as `listening on http://ADDR:PORT`.";

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address and port to listen on (port 0: any free port). Without API keys, only a
    /// loopback address is accepted.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where tools are stored (and compiled modules cached, unless --cache-dir or
    /// --no-cache); default $XDG_DATA_HOME/zeroboot-wasm, else ~/.local/share/zeroboot-wasm.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// File of API keys, one per line (at least 16 characters; blank lines and # comments
    /// allowed). Requests must send `Authorization: Bearer <key>`.
    #[arg(long, value_name = "FILE", conflicts_with = "no_auth")]
    api_keys: Option<PathBuf>,
    /// Serve without authentication (loopback addresses only). Required when no key file
    /// is given.
    #[arg(long)]
    no_auth: bool,
    /// Runs in flight at once, server-wide (default: 4 × cores).
    #[arg(long, value_name = "N")]
    max_in_flight: Option<usize>,
    /// Runs waiting for a slot beyond those; past it, requests get 429 with Retry-After.
    #[arg(long, value_name = "N", default_value = "256")]
    max_queued: usize,
    /// Runs in flight or waiting per API key (batch items count one each); past it, 429.
    /// Without keys (--no-auth), all callers together count as one key.
    #[arg(long, value_name = "N")]
    per_key_in_flight: Option<usize>,
    /// Runs per second per API key (batch items count one each), refilled continuously; past
    /// it, 429 with Retry-After. Without keys (--no-auth), all callers together count as one
    /// key.
    #[arg(long, value_name = "N")]
    per_key_rate: Option<f64>,
    /// Runs an API key may start at once before --per-key-rate applies (default: the rate,
    /// at least 1).
    #[arg(long, value_name = "N", requires = "per_key_rate")]
    per_key_burst: Option<u32>,
    /// Size of each run's scratch directory, a tmpfs private to its sandbox (`/scratch`,
    /// its working directory) that holds the run's `files`; 0: none. A tool that imports no
    /// WASI call naming a file gets none (its JSON says `"scratch": false`).
    #[arg(long, value_name = "SIZE", value_parser = parse::size_u64, default_value = "64MiB")]
    scratch_size: u64,
    /// Most files a run brings in its request, and most it gets back.
    #[arg(long, value_name = "N", default_value = "64")]
    run_files: usize,
    /// Most bytes of files a run gets back, all together (past it: `files_truncated`).
    #[arg(long, value_name = "SIZE", value_parser = parse::size, default_value = "8MiB")]
    run_files_out: usize,
    /// Largest request body (an uploaded module, a run's stdin); past it, 413.
    #[arg(long, value_name = "SIZE", value_parser = parse::size, default_value = "64MiB")]
    max_body: usize,
    /// Most tasks in one batch request.
    #[arg(long, value_name = "N", default_value = "100")]
    max_batch: usize,
    /// Most tools the server holds (each keeps a zygote process and its pool of
    /// sandboxes); uploading one more gets 507 until one is deleted.
    #[arg(long, value_name = "N", default_value = "256")]
    max_tools: usize,
    /// Sandboxes each zygote keeps forked ahead of time.
    #[arg(long, value_name = "K", default_value = "2")]
    pool: usize,
    /// Log lines on stderr: `text`, or `json` (one object per line). RUST_LOG sets the level
    /// (default info; debug adds a line per request and per run).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// After SIGTERM or SIGINT, how long runs in flight have to finish.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration, default_value = "30s")]
    shutdown_grace: Duration,
    /// A `Host` header `/mcp` accepts besides loopback names and the listen address
    /// (`host` or `host:port`; repeatable): the name clients reach the server by.
    #[arg(long, value_name = "HOST")]
    mcp_allow_host: Vec<String>,
    /// A browser `Origin` `/mcp` accepts besides http://localhost:* and loopback
    /// (`scheme://host[:port|:*]`; repeatable); any other gets 403.
    #[arg(long, value_name = "ORIGIN")]
    mcp_allow_origin: Vec<String>,
}

/// The interpreter guests next to this executable.
pub(super) fn interpreters() -> Interpreters {
    Interpreters {
        module: |lang| language(lang).module(),
        code_args: |lang, code| language(lang).code_args(code, &[]),
    }
}

fn language(lang: Language) -> Lang {
    match lang {
        Language::JavaScript => Lang::Js,
        Language::Python => Lang::Py,
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    init_logging_with(format, "info");
}

/// Logs to stderr at `default` level unless RUST_LOG says otherwise.
pub(super) fn init_logging_with(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

pub fn main(a: ServeArgs) -> i32 {
    init_logging(a.log_format);
    let access = match (&a.api_keys, a.no_auth) {
        (Some(path), _) => match ApiKeys::from_file(path) {
            Ok(keys) => Access::Keys(keys),
            Err(e) => {
                eprintln!("zeroboot-wasm serve: error: {}", zeroboot_wasm::serve::error_chain(&e));
                return exit::USAGE;
            }
        },
        (None, true) => Access::Open,
        (None, false) => {
            eprintln!(
                "zeroboot-wasm serve: error: give --api-keys FILE, or --no-auth to serve without \
                 authentication (loopback addresses only)"
            );
            return exit::USAGE;
        }
    };
    let Some((data_dir, load)) = store_and_load("serve", a.data_dir.clone(), &a.common, a.pool)
    else {
        return exit::USAGE;
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = ServeOptions {
        listen: a.listen,
        data_dir,
        access,
        load,
        defaults: a.common.base_task(),
        max_in_flight: a.max_in_flight.unwrap_or(4 * cores).max(1),
        max_queued: a.max_queued,
        per_key_in_flight: a.per_key_in_flight,
        per_key_rate: a.per_key_rate.filter(|r| *r > 0.0).map(|per_second| serve::RateLimit {
            per_second,
            burst: a.per_key_burst.unwrap_or((per_second.ceil() as u32).max(1)),
        }),
        files: serve::FileOptions {
            scratch_size: Some(a.scratch_size).filter(|&s| s > 0),
            max_files: a.run_files,
            max_bytes_out: a.run_files_out,
        },
        max_body: a.max_body,
        max_batch: a.max_batch,
        max_tools: a.max_tools,
        shutdown_grace: a.shutdown_grace,
        interpreters: interpreters(),
        mcp_allowed_hosts: a.mcp_allow_host,
        mcp_allowed_origins: a.mcp_allow_origin,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zeroboot-wasm serve: error: cannot start the Tokio runtime: {e}");
            return exit::INTERNAL;
        }
    };
    let served = rt.block_on(serve::serve(options, serve::shutdown_signal(), |addr| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{addr}");
        let _ = out.flush();
    }));
    // Zygotes and their sandboxes end with the runtime's tasks (their sockets close).
    rt.shutdown_timeout(Duration::from_secs(1));
    match served {
        Ok(()) => 0,
        Err(e @ serve::ServeError::OpenOnNetwork { .. }) => {
            eprintln!("zeroboot-wasm serve: error: {}", zeroboot_wasm::serve::error_chain(&e));
            exit::USAGE
        }
        Err(e) => {
            eprintln!("zeroboot-wasm serve: error: {}", zeroboot_wasm::serve::error_chain(&e));
            exit::INTERNAL
        }
    }
}

/// The data directory (`--data-dir`, else the default) and the tools' load options, whose
/// compiled cache lives in it unless `--cache-dir` or `--no-cache` says otherwise; `None`
/// (after saying why) when there is no data directory.
pub(super) fn store_and_load(
    command: &str,
    data_dir: Option<PathBuf>,
    common: &CommonArgs,
    pool: usize,
) -> Option<(PathBuf, zeroboot_wasm::LoadOptions)> {
    let Some(data_dir) = data_dir.or_else(serve::default_data_dir) else {
        eprintln!(
            "zeroboot-wasm {command}: error: no data directory: give --data-dir DIR (neither \
             XDG_DATA_HOME nor HOME is set)"
        );
        return None;
    };
    let mut load = common.load_options(pool);
    if !common.no_cache && common.cache_dir.is_none() {
        load.config.cache_dir(Some(data_dir.join("cache")));
    }
    Some((data_dir, load))
}
