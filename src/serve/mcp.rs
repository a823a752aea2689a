//! The Model Context Protocol front door: every tool in the store is an MCP tool, beside the
//! `run_javascript` and `run_python` snippet tools, and every call runs in a fresh fork through
//! the same `AppState` (admission, quotas, metrics) as the HTTP API.
//!
//! Two transports, one handler ([`McpServer`], on the official Rust SDK `rmcp`):
//! - Streamable HTTP at `/mcp` inside `serve`, behind the same API keys, stateless (no
//!   session kept between requests, so nothing grows with the number of clients), with the
//!   `Host` and `Origin` headers checked against loopback and the listen address (DNS-rebinding
//!   protection: a browser page from elsewhere gets 403);
//! - stdio for `zeroboot-wasm mcp` ([`stdio`]): stdout carries only the protocol, logs go to
//!   stderr.
//!
//! A tool's input is `{args, stdin, stdin_base64, env, invoke, limits}` — the body of
//! `POST /v1/tools/{id}/run`, parsed by the same code — unless its uploader gave it an
//! `input_schema`: then the call's arguments are handed to the guest as JSON on its stdin. A
//! component is offered function by function (`name.function`), each with the input schema
//! derived from its WIT parameter types; the call's arguments are checked on the host against
//! those types and passed to the function as JSON, and its result comes back as JSON.
//! The result is stdout as the first text content, stderr (when not empty) and a status line
//! after it, the outcome (the `--json` shape) as structured content, and `isError` unless the
//! guest exited 0. Arguments that do not fit, an unknown tool or a saturated server are
//! JSON-RPC errors (`-32602` invalid params, `-32603` with the HTTP status in `data`).

use super::api::{self, ApiError, Item, RunRequest};
use super::auth::Caller;
use super::exec::Language;
use super::store::{self, Kind, Tool};
use super::{AppState, ServeError, ServeOptions};
use crate::outcome::{Outcome, Status};
use crate::task::{Stdin, Task};
use axum::http::StatusCode;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The names of the snippet tools (no stored tool takes them).
const RUN_JAVASCRIPT: &str = "run_javascript";
const RUN_PYTHON: &str = "run_python";

/// Longest MCP tool name (the protocol allows 128 of `A-Z a-z 0-9 _ - .`).
const MAX_TOOL_NAME: usize = 128;

/// The MCP server: a view of the shared state.
#[derive(Clone)]
pub struct McpServer {
    state: Arc<AppState>,
    /// Whether the store may gain tools behind this process's back (stdio: a `serve` on the
    /// same data directory uploads them), so each listing looks for new ones first.
    follow_store: bool,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("McpServer")
    }
}

/// `/mcp`'s service: Streamable HTTP, stateless, answering with JSON.
pub(crate) type HttpService = StreamableHttpService<McpServer, NeverSessionManager>;

/// The Streamable HTTP service for `serve`, bound to `addr`.
pub(crate) fn http_service(
    state: Arc<AppState>,
    addr: SocketAddr,
    options: &ServeOptions,
) -> HttpService {
    let mut hosts: Vec<String> =
        ["localhost", "127.0.0.1", "::1"].into_iter().map(String::from).collect();
    if !addr.ip().is_unspecified() {
        hosts.push(addr.ip().to_string());
    }
    hosts.extend(options.mcp_allowed_hosts.iter().cloned());
    let mut origins: Vec<String> = ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"]
        .into_iter()
        .map(String::from)
        .collect();
    origins.extend(options.mcp_allowed_origins.iter().cloned());
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .enforce_origin_validation()
        .with_max_request_body_bytes(state.max_body);
    let server = McpServer { state, follow_store: false };
    StreamableHttpService::new(move || Ok(server.clone()), Arc::default(), config)
}

/// A module file given to `zeroboot-wasm mcp --tool FILE` (its sidecar, if any, beside it).
#[derive(Debug, Clone)]
pub struct ExtraTool {
    pub path: PathBuf,
}

/// What may sit beside a `--tool FILE` as `<FILE without extension>.tool.json`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Sidecar {
    name: Option<String>,
    description: Option<String>,
    input_schema: Option<Value>,
}

/// Why `zeroboot-wasm mcp` stopped.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The store could not be opened.
    #[error(transparent)]
    OpenStore(#[from] ServeError),
    /// A `--tool` module (or its sidecar) could not be read or loaded.
    #[error("--tool {path}: {message}")]
    AddTool { path: PathBuf, message: String },
    /// The session could not start, or failed.
    #[error("the MCP session failed: {0}")]
    Session(String),
}

async fn add_extra(state: &AppState, path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let sidecar_path = path.with_extension("tool.json");
    let sidecar: Sidecar = match std::fs::read(&sidecar_path) {
        Ok(text) => {
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", sidecar_path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Sidecar::default(),
        Err(e) => return Err(format!("cannot read {}: {e}", sidecar_path.display())),
    };
    let schema = sidecar.input_schema.map(|s| s.to_string());
    let about = store::About::parse(sidecar.description, schema.as_deref())
        .map_err(|e| format!("{}: {e}", sidecar_path.display()))?;
    let name = sidecar.name.or_else(|| {
        path.file_stem().map(|s| {
            s.to_string_lossy()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-') {
                        c
                    } else {
                        '_'
                    }
                })
                .take(store::MAX_NAME_LEN)
                .collect()
        })
    });
    let (tool, _) = state
        .store
        .add_unsaved(name, api::Limits::default(), about, Arc::from(bytes))
        .await
        .map_err(|e| api::error_chain(&e))?;
    Ok(tool.meta.name.clone())
}

/// Serves MCP on stdin/stdout until the client closes it: the stored tools of
/// `options.data_dir`, plus `extra` modules for this process only.
pub async fn stdio(options: ServeOptions, extra: Vec<ExtraTool>) -> Result<(), McpError> {
    let state = super::open_state(&options, None).await?;
    for t in &extra {
        let name = add_extra(&state, &t.path)
            .await
            .map_err(|message| McpError::AddTool { path: t.path.clone(), message })?;
        tracing::info!(tool = %name, file = %t.path.display(), "tool added for this session");
    }
    tracing::info!(tools = state.store.list().len(), "serving MCP on stdio");
    let running = McpServer { state, follow_store: true }
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| McpError::Session(e.to_string()))?;
    let reason = running.waiting().await.map_err(|e| McpError::Session(e.to_string()))?;
    tracing::info!(reason = ?reason, "MCP session ended");
    Ok(())
}

/// What an MCP tool name stands for: a stored tool run as a whole (a command, or a core
/// module's export named by `invoke`), or one exported function of a component, whose
/// input schema is derived from its WIT parameter types.
enum Entry {
    Tool(Arc<Tool>),
    Export(Arc<Tool>, usize),
}

/// Each tool under its MCP name: its own name when no other tool (nor a snippet tool) has
/// it, otherwise `name-<first 12 hex digits of its id>`. Characters MCP does not allow in a
/// name become `_`. A component's functions follow as `name.function` (where two interfaces
/// export the same function name, `name.` and the export's full name, `pkg_ns_iface_function`);
/// a component that is not a command is offered only through its functions.
fn named(tools: Vec<Arc<Tool>>) -> Vec<(String, Entry)> {
    let names = mcp_names(tools.iter().map(|t| (t.meta.name.as_str(), t.meta.id.as_str())));
    let mut entries = Vec::new();
    for (name, tool) in names.into_iter().zip(tools) {
        let typed: Vec<usize> = (0..tool.meta.exports.len())
            .filter(|&i| tool.meta.exports[i].input_schema.is_some())
            .collect();
        for &i in &typed {
            let export = &tool.meta.exports[i];
            let func = export.func();
            let unique =
                typed.iter().filter(|&&j| tool.meta.exports[j].func() == func).count() == 1;
            let suffix = clean(if unique { func } else { &export.name });
            let keep = MAX_TOOL_NAME.saturating_sub(suffix.len() + 1).max(1);
            let base = name.get(..keep).unwrap_or(&name);
            let full = format!("{base}.{suffix}");
            entries.push((
                full.get(..MAX_TOOL_NAME).unwrap_or(&full).to_string(),
                Entry::Export(tool.clone(), i),
            ));
        }
        if typed.is_empty() || tool.meta.kind == Kind::Command {
            entries.push((name, Entry::Tool(tool)));
        }
    }
    entries
}

/// `name` with the characters MCP does not allow in a tool name as `_`.
fn clean(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' })
        .collect()
}

/// The MCP names of tools given as `(name, id)`, in the same order (see [`named`]).
fn mcp_names<'a>(tools: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> Vec<String> {
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for (name, _) in tools.clone() {
        *counts.entry(clean(name)).or_default() += 1;
    }
    tools
        .map(|(name, id)| {
            let base = clean(name);
            let unique =
                counts.get(&base) == Some(&1) && base != RUN_JAVASCRIPT && base != RUN_PYTHON;
            if unique {
                return base;
            }
            let id = id.get(..12).unwrap_or(id);
            let keep = MAX_TOOL_NAME.saturating_sub(id.len() + 1);
            format!("{}-{id}", base.get(..keep).unwrap_or(&base))
        })
        .collect()
}

fn object(v: Value) -> Arc<JsonObject> {
    match v {
        Value::Object(m) => Arc::new(m),
        _ => Arc::default(),
    }
}

/// The input schema of a tool that takes the run request's fields.
fn run_schema(tool: &Tool) -> Value {
    let mut properties = json!({
        "args": {
            "type": "array", "items": {"type": "string"},
            "description": "Command-line arguments (argv[1..]); for an `invoke`d export, its parameters",
        },
        "stdin": {"type": "string", "description": "Text on the guest's standard input"},
        "stdin_base64": {"type": "string", "description": "Bytes on standard input, in base64 (instead of stdin)"},
        "env": {
            "type": "object", "additionalProperties": {"type": "string"},
            "description": "Environment variables, added to the server's",
        },
        "limits": {
            "type": "object",
            "description": "Tighter limits than the server's own",
            "additionalProperties": false,
            "properties": {
                "timeout_ms": {"type": "integer", "minimum": 1},
                "max_memory": {"type": "integer", "minimum": 0},
                "fuel": {"type": "integer", "minimum": 0},
                "max_output": {"type": "integer", "minimum": 0},
            },
        },
    });
    // Files in (and out, in the result): the HTTP API's scratch directory, for a tool whose
    // sandboxes get one; a call's arguments are parsed by the same code as a run.
    if tool.meta.scratch
        && let Some(p) = properties.as_object_mut()
    {
        p.insert(
            "files".into(),
            json!({
                "type": "object",
                "description": "Files put in the run's scratch directory (its working directory, /scratch), by relative name: text, or {\"base64\": \"...\"} for bytes. The files the run leaves there come back in the result.",
                "additionalProperties": {
                    "oneOf": [
                        {"type": "string"},
                        {"type": "object", "properties": {"base64": {"type": "string"}}, "required": ["base64"], "additionalProperties": false},
                    ],
                },
            }),
        );
    }
    let mut required = Vec::new();
    if tool.meta.kind == Kind::Reactor {
        let exports: Vec<&str> = tool.meta.exports.iter().map(|e| e.name.as_str()).collect();
        if let Some(p) = properties.as_object_mut() {
            p.insert(
                "invoke".into(),
                json!({"type": "string", "enum": exports, "description": "The export to call"}),
            );
        }
        required.push("invoke");
    }
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn snippet_schema(lang: Language) -> Value {
    let code = match lang {
        Language::JavaScript => "JavaScript source (QuickJS; print with console.log)",
        Language::Python => "Python source (RustPython; print with print)",
    };
    json!({
        "type": "object",
        "properties": {
            "code": {"type": "string", "description": code},
            "stdin": {"type": "string", "description": "Text on standard input"},
            "args": {"type": "array", "items": {"type": "string"}, "description": "Arguments after the code"},
            "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "description": "Deadline (default 30, at most the server's)"},
        },
        "required": ["code"],
        "additionalProperties": false,
    })
}

fn mcp_tool(name: String, tool: &Tool) -> rmcp::model::Tool {
    let about = &tool.meta.about;
    let description = about.description.clone().unwrap_or_else(|| {
        let kind = match tool.meta.kind {
            Kind::Command => "WASI command",
            Kind::Reactor => "WebAssembly reactor (call an export with `invoke`)",
        };
        format!(
            "{kind} `{}` (sha256 {}), run in a fresh sandbox per call; stdout is the result",
            tool.meta.name, tool.meta.id
        )
    });
    let schema = match &about.input_schema {
        Some(s) => Arc::new(s.clone()),
        None => object(run_schema(tool)),
    };
    rmcp::model::Tool::new(name, description, schema).with_title(tool.meta.name.clone())
}

/// The MCP tool for export `i` of component `tool`: its input schema is the function's
/// parameters (derived from their WIT types), its result the function's, as JSON.
fn export_tool(name: String, tool: &Tool, i: usize) -> rmcp::model::Tool {
    let e = &tool.meta.exports[i];
    let params: Vec<String> =
        e.param_names.iter().zip(&e.params).map(|(n, t)| format!("{n}: {t}")).collect();
    let results = match e.results.as_slice() {
        [] => String::new(),
        [one] => format!(" -> {one}"),
        many => format!(" -> ({})", many.join(", ")),
    };
    let mut description = format!(
        "Calls `{}({}){results}` of the component `{}` in a fresh sandbox; the text result \
         is the function's result as JSON",
        e.name,
        params.join(", "),
        tool.meta.name
    );
    if let Some(about) = &tool.meta.about.description {
        description = format!("{about}\n\n{description}");
    }
    let schema = object(e.input_schema.clone().unwrap_or_else(|| json!({"type": "object"})));
    rmcp::model::Tool::new(name, description, schema).with_title(e.name.clone())
}

fn snippet_tool(lang: Language) -> rmcp::model::Tool {
    let (name, description) = match lang {
        Language::JavaScript => (
            RUN_JAVASCRIPT,
            "Run a JavaScript snippet (QuickJS) in a fresh sandbox; stdout is the result",
        ),
        Language::Python => (
            RUN_PYTHON,
            "Run a Python snippet (RustPython) in a fresh sandbox; stdout is the result",
        ),
    };
    rmcp::model::Tool::new(name, description, object(snippet_schema(lang)))
}

/// An error before a run: 400 is the caller's (invalid params), the others the server's.
fn rpc_error(e: &ApiError) -> ErrorData {
    let data = Some(json!({ "status": e.status().as_u16() }));
    if e.status() == StatusCode::BAD_REQUEST {
        ErrorData::invalid_params(e.message().to_string(), data)
    } else {
        ErrorData::internal_error(e.message().to_string(), data)
    }
}

/// A finished run as an MCP result: stdout, then stderr (if any), then the status.
pub(crate) fn call_result(o: &Outcome, json_call: bool) -> CallToolResult {
    let mut content = vec![ContentBlock::text(o.stdout_text())];
    if !o.stderr.bytes.is_empty() {
        content.push(ContentBlock::text(format!("stderr:\n{}", o.stderr_text())));
    }
    let mut status = format!("status: {}", o.status.as_str());
    if let Some(code) = o.exit_code {
        status.push_str(&format!(", exit code {code}"));
    }
    if let Some(m) = &o.message {
        status.push_str(&format!(": {m}"));
    }
    content.push(ContentBlock::text(status));
    let ok = o.status == Status::Exited && o.exit_code.unwrap_or(0) == 0;
    let mut result =
        if ok { CallToolResult::success(content) } else { CallToolResult::error(content) };
    result.structured_content = Some(api::outcome_json(o, json_call));
    result
}

/// Who is calling: the API key the HTTP request carried (the auth layer put it in the
/// request's extensions), or nobody (stdio, or a server without keys).
fn caller_of(ctx: &RequestContext<RoleServer>) -> Caller {
    ctx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|p| p.extensions.get::<Caller>().copied())
        .unwrap_or(Caller::Anonymous)
}

impl McpServer {
    /// A task of `tool` under the server's defaults and the tool's own limits, given its
    /// input by `fill`, and checked.
    fn tool_task(&self, tool: &Tool, fill: impl FnOnce(&mut Task)) -> Result<Task, ErrorData> {
        let defaults = &self.state.defaults;
        let mut task = defaults.clone();
        tool.meta
            .limits
            .capped(defaults)
            .apply(&mut task, defaults)
            .map_err(|e| ErrorData::invalid_params(e, None))?;
        fill(&mut task);
        task.validate()
            .map_err(|e| ErrorData::invalid_params(format!("invalid task: {e}"), None))?;
        Ok(task)
    }

    /// The run item for a call of export `i` of component `tool` with `args`: the host checks
    /// them against the function's WIT types before a sandbox is started.
    fn export_item(&self, tool: &Tool, i: usize, args: JsonObject) -> Result<Item, ErrorData> {
        let task = self.tool_task(tool, |task| {
            task.invoke = Some(tool.meta.exports[i].name.clone());
            task.arguments = Some(Value::Object(args));
        })?;
        Ok(Item { handle: tool.handle.clone(), label: tool.meta.id.clone(), task })
    }

    /// The run item for a call of stored tool `tool` with `args`.
    fn tool_item(&self, tool: &Tool, args: JsonObject) -> Result<Item, ErrorData> {
        let task = if let Some(schema) = &tool.meta.about.input_schema {
            check_required(schema, &args)?;
            self.tool_task(tool, |task| {
                task.stdin = Stdin::Bytes(Value::Object(args).to_string().into_bytes());
            })?
        } else {
            let request: RunRequest = serde_json::from_value(Value::Object(args))
                .map_err(|e| ErrorData::invalid_params(format!("invalid arguments: {e}"), None))?;
            request
                .into_task(
                    &self.state.defaults,
                    tool.meta.limits,
                    self.state.files.for_tool(&tool.meta),
                )
                .map_err(|e| ErrorData::invalid_params(e, None))?
        };
        Ok(Item { handle: tool.handle.clone(), label: tool.meta.id.clone(), task })
    }

    async fn snippet_item(&self, lang: Language, mut args: JsonObject) -> Result<Item, ErrorData> {
        if args.contains_key("language") {
            return Err(ErrorData::invalid_params(
                "unknown field `language`: the tool's name gives the language",
                None,
            ));
        }
        args.insert("language".into(), json!(lang.name()));
        let (_, item) = super::exec::item_of(&self.state, Value::Object(args), "")
            .await
            .map_err(|e| rpc_error(&e))?;
        Ok(item)
    }

    async fn call(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let name = request.name.as_ref();
        let item = match name {
            RUN_JAVASCRIPT => self.snippet_item(Language::JavaScript, args).await?,
            RUN_PYTHON => self.snippet_item(Language::Python, args).await?,
            _ => {
                let find = || {
                    named(self.state.store.list())
                        .into_iter()
                        .find_map(|(n, t)| (n == name).then_some(t))
                };
                let mut tool = find();
                if tool.is_none() && self.follow_store && self.state.store.load_new().await > 0 {
                    tool = find();
                }
                match tool {
                    Some(Entry::Tool(tool)) => self.tool_item(&tool, args)?,
                    Some(Entry::Export(tool, i)) => self.export_item(&tool, i, args)?,
                    None => {
                        let unknown = format!("unknown tool {name:?}");
                        return Err(ErrorData::invalid_params(unknown, None));
                    }
                }
            }
        };
        let label = item.label.clone();
        let json_call = item.task.arguments.is_some();
        let run = api::run_all(&self.state, caller_of(&ctx), vec![item]);
        let results = tokio::select! {
            r = run => r.map_err(|e| rpc_error(&e))?,
            () = ctx.ct.cancelled() => {
                tracing::debug!(tool = %label, "MCP call cancelled by the client");
                return Err(ErrorData::internal_error("cancelled by the client", None));
            }
        };
        match results.into_iter().next() {
            Some(Ok(outcome)) => Ok(call_result(&outcome, json_call)),
            Some(Err(e)) => Err(rpc_error(&e)),
            None => Err(ErrorData::internal_error("no outcome", None)),
        }
    }
}

/// A light check of arguments against a tool's own schema: each `required` property is
/// there (the guest validates the rest).
pub(crate) fn check_required(schema: &JsonObject, args: &JsonObject) -> Result<(), ErrorData> {
    let missing: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|k| !args.contains_key(*k))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ErrorData::invalid_params(
            format!("missing required argument(s): {}", missing.join(", ")),
            None,
        ))
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("zeroboot-wasm", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Each tool is a WebAssembly module (or a JavaScript/Python snippet) run in a fresh \
                 forked sandbox per call; its stdout is the result, its stderr and exit status follow.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        if self.follow_store {
            self.state.store.load_new().await;
        }
        let mut tools: Vec<rmcp::model::Tool> = named(self.state.store.list())
            .into_iter()
            .map(|(n, entry)| match entry {
                Entry::Tool(t) => mcp_tool(n, &t),
                Entry::Export(t, i) => export_tool(n, &t, i),
            })
            .collect();
        tools.push(snippet_tool(Language::JavaScript));
        tools.push(snippet_tool(Language::Python));
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.call(request, ctx).await.map(CallToolResponse::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_valid() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let c = "c".repeat(64);
        let long = "x".repeat(128);
        let names = mcp_names(
            [
                ("hello", a.as_str()),
                ("dup", b.as_str()),
                ("dup", c.as_str()),
                ("run_python", a.as_str()),
                ("c++", b.as_str()),
                (long.as_str(), c.as_str()),
            ]
            .into_iter(),
        );
        assert_eq!(names[0], "hello");
        assert_eq!(names[1], "dup-bbbbbbbbbbbb");
        assert_eq!(names[2], "dup-cccccccccccc");
        assert_eq!(names[3], "run_python-aaaaaaaaaaaa", "a snippet tool's name is taken");
        assert_eq!(names[4], "c__");
        assert_eq!(names[5], long, "a unique name of 128 characters is kept");
        let ok = |n: &str| {
            !n.is_empty()
                && n.len() <= MAX_TOOL_NAME
                && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        assert!(names.iter().all(|n| ok(n)), "{names:?}");
        let clash =
            mcp_names([(long.as_str(), a.as_str()), (long.as_str(), b.as_str())].into_iter());
        assert!(clash.iter().all(|n| ok(n)), "{clash:?}");
        assert_ne!(clash[0], clash[1]);
    }

    #[test]
    fn required_arguments_are_checked() {
        let schema: JsonObject =
            serde_json::from_value(json!({"type": "object", "required": ["a", "b"]})).unwrap();
        let args: JsonObject = serde_json::from_value(json!({"a": 1})).unwrap();
        let e = check_required(&schema, &args).unwrap_err();
        assert!(e.message.contains('b'), "{e:?}");
        let all: JsonObject = serde_json::from_value(json!({"a": 1, "b": 2})).unwrap();
        assert!(check_required(&schema, &all).is_ok());
    }
}
