//! `zeroboot-wasm mcp`: the Model Context Protocol server on stdio
//! (`zeroboot_wasm::serve::mcp`), with the tool store of `serve` and `--tool` modules.

use super::serve::{LogFormat, init_logging_with, interpreters};
use super::{CommonArgs, exit};
use clap::Args;
use std::path::PathBuf;
use zeroboot_wasm::serve::{self, Access, ServeOptions, mcp};

pub const MCP_HELP: &str = "\
Speaks MCP (JSON-RPC) on stdin/stdout; logs go to stderr. Every tool in the data directory's
store (the one `serve` uploads to) is an MCP tool, and each --tool FILE is one for this
session (name: the file's stem, or the `name` in FILE's sidecar `<stem>.tool.json`, which may
also give `description` and `input_schema`). Plus run_javascript and run_python. Every call
runs in a fresh sandbox forked from the tool's warm zygote.

Register it with an MCP client, e.g. in its JSON configuration:
  {\"mcpServers\": {\"zeroboot\": {\"command\": \"zeroboot-wasm\",
     \"args\": [\"mcp\", \"--tool\", \"/path/to/tool.wasm\"]}}}";

#[derive(Args, Debug)]
pub struct McpArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The tool store to serve (default: the one `serve` uses, $XDG_DATA_HOME/zeroboot-wasm,
    /// else ~/.local/share/zeroboot-wasm).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A module to serve as a tool for this session only (not written to the store).
    #[arg(long = "tool", value_name = "FILE")]
    tools: Vec<PathBuf>,
    /// Runs in flight at once (default: 2 × cores); calls beyond wait.
    #[arg(long, value_name = "N")]
    max_in_flight: Option<usize>,
    /// Calls waiting for a slot beyond those; past it, a call gets an error.
    #[arg(long, value_name = "N", default_value = "64")]
    max_queued: usize,
    /// Most tools loaded (each keeps a zygote process and its pool of sandboxes).
    #[arg(long, value_name = "N", default_value = "256")]
    max_tools: usize,
    /// Sandboxes each zygote keeps forked ahead of time.
    #[arg(long, value_name = "K", default_value = "1")]
    pool: usize,
    /// Log lines on stderr: `text` or `json`; RUST_LOG sets the level (default info).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

pub fn main(a: McpArgs) -> i32 {
    // rmcp logs every request and error at info/warn; the protocol answers say it already.
    init_logging_with(a.log_format, "info,rmcp=error");
    let Some((data_dir, load)) =
        super::serve::store_and_load("mcp", a.data_dir.clone(), &a.common, a.pool)
    else {
        return exit::USAGE;
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = ServeOptions {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir,
        access: Access::Open,
        load,
        defaults: a.common.base_task(),
        max_in_flight: a.max_in_flight.unwrap_or(2 * cores).max(1),
        max_queued: a.max_queued,
        per_key_in_flight: None,
        per_key_rate: None,
        files: serve::FileOptions::default(),
        max_body: usize::MAX,
        max_batch: 1,
        max_tools: a.max_tools,
        shutdown_grace: std::time::Duration::ZERO,
        interpreters: interpreters(),
        mcp_allowed_hosts: Vec::new(),
        mcp_allowed_origins: Vec::new(),
    };
    let extra = a.tools.into_iter().map(|path| mcp::ExtraTool { path }).collect();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zeroboot-wasm mcp: error: cannot start the Tokio runtime: {e}");
            return exit::INTERNAL;
        }
    };
    let served = rt.block_on(mcp::stdio(options, extra));
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match served {
        Ok(()) => 0,
        Err(e @ mcp::McpError::AddTool { .. }) => {
            eprintln!("zeroboot-wasm mcp: error: {}", serve::error_chain(&e));
            exit::DATA
        }
        Err(e) => {
            eprintln!("zeroboot-wasm mcp: error: {}", serve::error_chain(&e));
            exit::INTERNAL
        }
    }
}
