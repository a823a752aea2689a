//! The tool API: upload, list, get, delete; run and batch. Also the pieces every handler
//! shares: the JSON error, body reading under the size limit, a run request made a [`Task`],
//! and running admitted tasks.

use super::AppState;
use super::auth::Caller;
use super::store::{self, AddError};
use crate::error::Error;
use crate::host::TemplateHandle;
use crate::outcome::Outcome;
use crate::task::{Output, Stdin, Task};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An error answer: `{"error": "...", "status": N}` with that HTTP status.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    /// Seconds a 429's client is told to wait (default [`RETRY_AFTER_SECS`]).
    retry_after: Option<u64>,
}

/// Seconds a client is told to wait before retrying after a 429.
const RETRY_AFTER_SECS: u64 = 1;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn too_many(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, message)
    }

    /// 429 with `Retry-After: secs`.
    pub fn too_many_after(message: impl Into<String>, secs: u64) -> Self {
        Self { retry_after: Some(secs.max(1)), ..Self::too_many(message) }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// A run that could not start: the task's fault (400), the template's admission full
    /// (429), or the zygote not available (503).
    pub fn from_run(e: &Error) -> Self {
        match e {
            Error::InvalidTask(_) | Error::FuelNotMetered | Error::NotGranted { .. } => {
                Self::bad_request(e.one_line())
            }
            Error::Busy { .. } => Self::too_many(e.one_line()),
            _ => Self::unavailable(e.one_line()),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The metrics' name for a run that failed with this error.
    pub fn run_label(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "invalid_request",
            StatusCode::TOO_MANY_REQUESTS => "busy",
            _ => "unavailable",
        }
    }

    /// The JSON body (also the item of a batch that failed).
    pub fn to_json(&self) -> Value {
        json!({ "error": self.message, "status": self.status.as_u16() })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(self.to_json())).into_response();
        let headers = res.headers_mut();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            let secs = self.retry_after.unwrap_or(RETRY_AFTER_SECS);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

/// The request body, or the error for it: 413 past the server's `--max-body`.
pub(crate) fn body(b: Result<Bytes, BytesRejection>, max: usize) -> Result<Bytes, ApiError> {
    b.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than the server's limit of {max} bytes (--max-body)"),
            )
        } else {
            ApiError::new(r.status(), r.body_text())
        }
    })
}

/// The request body parsed as JSON (whatever its Content-Type); an empty body is `{}`.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    b: Result<Bytes, BytesRejection>,
    max: usize,
) -> Result<T, ApiError> {
    let bytes = body(b, max)?;
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))
}

/// Limits a request may set, each at most the server's own (its flags are the defaults and
/// the ceilings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Limits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output: Option<usize>,
}

/// A file of a run's `files`: text, or `{"base64": "…"}` for bytes.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub(crate) enum FileContent {
    Text(String),
    Bytes { base64: String },
}

/// Bounds on a run's files, from the server's options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileBounds {
    /// Whether sandboxes have a scratch directory at all.
    pub scratch: bool,
    /// The server gives scratch directories, but not to this tool's sandboxes: it imports no
    /// WASI filesystem call (see [`FileBounds::for_tool`]).
    pub tool_cannot: bool,
    /// Most files in (and out).
    pub max_files: usize,
    /// Most bytes in, all files together (the scratch directory's size).
    pub max_in_bytes: usize,
    /// What comes back.
    pub out: crate::scratch::FilesOut,
}

impl FileBounds {
    /// The server's bounds as they apply to runs of `tool`: no scratch directory for a tool
    /// that cannot reach files by name.
    pub fn for_tool(self, tool: &super::store::ToolMeta) -> Self {
        Self {
            scratch: self.scratch && tool.scratch,
            tool_cannot: self.scratch && !tool.scratch,
            ..self
        }
    }
}

/// The body of `POST /v1/tools/{id}/run` (and an item of a batch).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RunRequest {
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub stdin: Option<String>,
    pub stdin_base64: Option<String>,
    pub invoke: Option<String>,
    /// A component export's arguments as JSON (an object by parameter name, or an array in
    /// order), with `invoke` naming the export; the result comes back as `result`.
    pub arguments: Option<Value>,
    pub limits: Limits,
    /// Files for the run's scratch directory, by relative name.
    pub files: BTreeMap<String, FileContent>,
}

/// `stdin` (text) or `stdin_base64` (bytes), not both.
pub(crate) fn stdin_of(text: Option<String>, b64: Option<String>) -> Result<Stdin, String> {
    match (text, b64) {
        (Some(_), Some(_)) => Err("give `stdin` or `stdin_base64`, not both".into()),
        (Some(text), None) => Ok(Stdin::Bytes(text.into_bytes())),
        (None, Some(b64)) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map(Stdin::Bytes)
                .map_err(|e| format!("invalid stdin_base64: {e}"))
        }
        (None, None) => Ok(Stdin::Empty),
    }
}

/// Sets the task's deadline to `asked`, refusing one past the server's.
pub(crate) fn set_timeout(task: &mut Task, asked: Duration, server: &Task) -> Result<(), String> {
    if asked.is_zero() {
        return Err("the timeout must be positive".into());
    }
    if let Some(max) = server.timeout
        && asked > max
    {
        return Err(format!(
            "a timeout of {} ms is longer than the server's maximum of {} ms",
            asked.as_millis(),
            max.as_millis()
        ));
    }
    task.timeout = Some(asked);
    Ok(())
}

impl Limits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// These limits lowered to the server's where they pass them (a tool's defaults after
    /// the server restarted with smaller limits).
    pub fn capped(self, server: &Task) -> Limits {
        let min = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, _) => a,
        };
        let max_out = match server.output {
            Output::Capture { max_bytes } => Some(max_bytes),
            Output::Inherit => None,
        };
        Limits {
            timeout_ms: min(
                self.timeout_ms,
                server.timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            ),
            max_memory: self.max_memory.map(|m| server.max_memory.map_or(m, |s| m.min(s))),
            fuel: min(self.fuel, server.fuel).filter(|_| server.fuel.is_some()),
            max_output: self.max_output.map(|m| max_out.map_or(m, |s| m.min(s))),
        }
    }

    /// Checks the limits against the server's, as [`apply`](Self::apply) would.
    pub fn check(self, server: &Task) -> Result<(), String> {
        self.apply(&mut server.clone(), server)
    }

    /// Applies the limits to `task`, refusing any past the server's (`server`).
    pub(crate) fn apply(self, task: &mut Task, server: &Task) -> Result<(), String> {
        if let Some(ms) = self.timeout_ms {
            set_timeout(task, Duration::from_millis(ms), server)?;
        }
        if let Some(bytes) = self.max_memory {
            match server.max_memory {
                Some(max) if bytes > max => {
                    return Err(format!(
                        "limits.max_memory of {bytes} bytes is more than the server's maximum of {max}"
                    ));
                }
                _ => task.max_memory = Some(bytes),
            }
        }
        if let Some(fuel) = self.fuel {
            match server.fuel {
                None => {
                    return Err("limits.fuel needs a server started with --fuel (modules compiled with fuel metering)".into());
                }
                Some(max) if fuel > max => {
                    return Err(format!(
                        "limits.fuel of {fuel} is more than the server's maximum of {max}"
                    ));
                }
                Some(_) => task.fuel = Some(fuel),
            }
        }
        if let Some(bytes) = self.max_output {
            match server.output {
                Output::Capture { max_bytes } if bytes > max_bytes => {
                    return Err(format!(
                        "limits.max_output of {bytes} bytes is more than the server's maximum of {max_bytes}"
                    ));
                }
                _ => task.output = Output::Capture { max_bytes: bytes },
            }
        }
        Ok(())
    }
}

impl RunRequest {
    /// The task: the server's defaults, then the tool's default `limits` (capped by the
    /// server's), then this request's fields; its files within `files`.
    pub fn into_task(self, server: &Task, tool: Limits, files: FileBounds) -> Result<Task, String> {
        let mut task = server.clone();
        tool.capped(server).apply(&mut task, server)?;
        if !self.files.is_empty() && files.tool_cannot {
            return Err("`files` cannot reach this tool: it imports no WASI filesystem call \
                        (path_open and the like), so it could not read them, and its sandboxes \
                        get no scratch directory"
                .into());
        }
        if !self.files.is_empty() && !files.scratch {
            return Err("`files` needs a scratch directory, which this server does not give \
                        sandboxes (it runs with --namespaces off or --scratch-size 0)"
                .into());
        }
        if self.files.len() > files.max_files {
            return Err(format!(
                "{} files is more than the server's maximum of {} (--run-files)",
                self.files.len(),
                files.max_files
            ));
        }
        for (name, content) in self.files {
            let bytes = match content {
                FileContent::Text(t) => t.into_bytes(),
                FileContent::Bytes { base64 } => {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD
                        .decode(base64.trim())
                        .map_err(|e| format!("files[{name:?}]: invalid base64: {e}"))?
                }
            };
            task.files.push(crate::scratch::ScratchFile { name, bytes });
        }
        let total = task.files.iter().fold(0usize, |t, f| t.saturating_add(f.bytes.len()));
        if total > files.max_in_bytes {
            return Err(format!(
                "files of {total} bytes in all are more than the scratch directory's {} bytes \
                 (--scratch-size)",
                files.max_in_bytes
            ));
        }
        if files.scratch {
            task.files_out = Some(files.out);
        }
        task.args = self.args;
        for (name, value) in self.env {
            task.env.retain(|(n, _)| *n != name);
            task.env.push((name, value));
        }
        task.stdin = stdin_of(self.stdin, self.stdin_base64)?;
        if self.invoke.is_some() {
            task.invoke = self.invoke;
        }
        if self.arguments.is_some() {
            if task.invoke.is_none() {
                return Err("`arguments` need `invoke`: the export to call".into());
            }
            task.arguments = self.arguments;
        }
        self.limits.apply(&mut task, server)?;
        task.validate().map_err(|e| format!("invalid task: {e}"))?;
        Ok(task)
    }
}

/// One run to make: on which template, under which label for the metrics, what.
pub(crate) struct Item {
    pub handle: TemplateHandle,
    pub label: String,
    pub task: Task,
}

/// Runs the items concurrently, in order of the answers, after taking the caller's quota
/// and the server's admission for all of them (refused whole with 429). Dropping the future
/// (the client went away) cancels every run and kills its sandbox.
pub(crate) async fn run_all(
    state: &Arc<AppState>,
    caller: Caller,
    items: Vec<Item>,
) -> Result<Vec<Result<Outcome, ApiError>>, ApiError> {
    let n = items.len();
    let (_quota, tickets) = admit(state, caller, n)?;
    if n == 1 {
        let (Some(item), Some(ticket)) = (items.into_iter().next(), tickets.into_iter().next())
        else {
            return Ok(Vec::new());
        };
        return Ok(vec![run_one(state.clone(), item, ticket, None).await]);
    }
    let mut set = tokio::task::JoinSet::new();
    for (i, (item, ticket)) in items.into_iter().zip(tickets).enumerate() {
        let state = state.clone();
        set.spawn(async move { (i, run_one(state, item, ticket, None).await) });
    }
    let mut results: Vec<Option<Result<Outcome, ApiError>>> = (0..n).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, r)) => {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(r);
                }
            }
            Err(e) => tracing::error!(error = %e, "a batch run ended abnormally"),
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(ApiError::internal("the run ended abnormally"))))
        .collect())
}

/// Takes the caller's quota and the server's admission for `n` runs, or refuses them all
/// with 429.
pub(crate) fn admit(
    state: &Arc<AppState>,
    caller: Caller,
    n: usize,
) -> Result<(super::auth::QuotaGuard, Vec<super::admission::Ticket>), ApiError> {
    if let Err(wait) = state.rates.take(caller, n) {
        state.metrics.refused(true);
        return Err(ApiError::too_many_after(
            format!(
                "this API key is past its rate of {} runs per second (--per-key-rate, \
                 --per-key-burst); retry in {} s",
                state.rates.per_second(),
                wait.as_secs_f64().ceil()
            ),
            wait.as_secs_f64().ceil() as u64,
        ));
    }
    let quota = state.quotas.take(caller, n).map_err(|held| {
        state.metrics.refused(true);
        ApiError::too_many(format!(
            "this API key has {held} runs in flight, its quota is {} (--per-key-in-flight)",
            state.per_key_in_flight.unwrap_or(0)
        ))
    })?;
    let tickets = state.admission.reserve(n).map_err(|r| {
        state.metrics.refused(false);
        ApiError::too_many(format!(
            "server busy: {} runs in flight and {} waiting (--max-in-flight, --max-queued); retry later",
            r.in_flight, r.queued
        ))
    })?;
    Ok((quota, tickets))
}

/// Runs one admitted item (its output streamed to `chunks` when given).
pub(crate) async fn run_one(
    state: Arc<AppState>,
    item: Item,
    ticket: super::admission::Ticket,
    chunks: Option<tokio::sync::mpsc::Sender<crate::host::OutputChunk>>,
) -> Result<Outcome, ApiError> {
    let waited = Instant::now();
    let Some(slot) = ticket.enter().await else {
        return Err(ApiError::unavailable("the server is shutting down"));
    };
    let queue_us = u64::try_from(waited.elapsed().as_micros()).unwrap_or(u64::MAX);
    let result = match chunks {
        Some(tx) => item.handle.run_streaming(&item.task, tx).await,
        None => item.handle.run(&item.task).await,
    };
    drop(slot);
    match result {
        Ok(outcome) => {
            state.metrics.finished(&item.label, &outcome, queue_us);
            tracing::debug!(
                tool = %item.label,
                status = outcome.status.as_str(),
                total_us = outcome.timings_us.total,
                queue_us,
                "run finished"
            );
            Ok(outcome)
        }
        Err(e) => {
            let err = ApiError::from_run(&e);
            state.metrics.failed(&item.label, err.run_label());
            if err.status() == StatusCode::SERVICE_UNAVAILABLE {
                tracing::warn!(tool = %item.label, error = %e.one_line(), "run could not start");
            }
            Err(err)
        }
    }
}

/// An outcome as JSON (the `--json` shape).
/// An outcome as JSON (its `--json` shape); for a call made with JSON `arguments`
/// (`json_call`), with the call's `result` beside it.
pub(crate) fn outcome_json(o: &Outcome, json_call: bool) -> Value {
    let mut v =
        serde_json::to_value(o).unwrap_or_else(|e| ApiError::internal(e.to_string()).to_json());
    if let (true, Some(result), Some(obj)) = (json_call, o.json_result(), v.as_object_mut()) {
        obj.insert("result".into(), result);
    }
    v
}

fn caller_of(c: Option<Extension<Caller>>) -> Caller {
    c.map_or(Caller::Anonymous, |Extension(c)| c)
}

/// The tool in service, else 503 for a stored tool that did not load (with why), else 404.
fn tool_or_404(state: &AppState, id: &str) -> Result<Arc<store::Tool>, ApiError> {
    if !store::is_id(id) {
        return Err(ApiError::not_found(format!("no tool {id}")));
    }
    if let Some(tool) = state.store.get(id) {
        return Ok(tool);
    }
    match state.store.why_unloaded(id) {
        Some(why) => Err(ApiError::unavailable(format!(
            "tool {id} is stored but out of service: it did not load ({why})"
        ))),
        None => Err(ApiError::not_found(format!("no tool {id}"))),
    }
}

/// An error and its causes on one line, `outer: inner: innermost`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// `?name=`, the tool's default limits, and for MCP clients `&description=` and
/// `&input_schema=` (JSON), of an upload.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadQuery {
    name: Option<String>,
    timeout_ms: Option<u64>,
    max_memory: Option<usize>,
    fuel: Option<u64>,
    max_output: Option<usize>,
    description: Option<String>,
    input_schema: Option<String>,
}

/// `POST /v1/tools?name=NAME[&description=TEXT][&input_schema=JSON]`: the module's bytes
/// (binary or text) as the body.
pub(crate) async fn upload(
    State(state): State<Arc<AppState>>,
    query: Result<Query<UploadQuery>, QueryRejection>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let limits = Limits {
        timeout_ms: query.timeout_ms,
        max_memory: query.max_memory,
        fuel: query.fuel,
        max_output: query.max_output,
    };
    limits.check(&state.defaults).map_err(|e| {
        ApiError::bad_request(format!("the tool's default limits: {}", e.replace("limits.", "")))
    })?;
    let bytes = body(bytes, state.max_body)?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "empty body: send the module's bytes (binary .wasm or WebAssembly text)",
        ));
    }
    let about = store::About::parse(query.description, query.input_schema.as_deref())
        .map_err(ApiError::bad_request)?;
    let (tool, created) =
        state.store.add(query.name, limits, about, Arc::from(bytes.as_ref())).await.map_err(
            |e| match e {
                AddError::BadName(m) => ApiError::bad_request(m),
                e @ AddError::Full { .. } => {
                    ApiError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string())
                }
                AddError::Busy { loading } => {
                    state.metrics.refused(false);
                    ApiError::too_many(format!(
                        "busy: {loading} other uploads are being loaded; retry later"
                    ))
                }
                AddError::Load(e) if e.is_bad_input() => ApiError::bad_request(e.one_line()),
                AddError::Load(e) => ApiError::unavailable(e.one_line()),
                AddError::Write { .. } => {
                    tracing::error!(error = %error_chain(&e), "cannot store a tool");
                    ApiError::internal(error_chain(&e))
                }
            },
        )?;
    let meta = &tool.meta;
    if created {
        tracing::info!(id = %meta.id, name = %meta.name, size = meta.size, "tool added");
    }
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let mut res = (status, Json(json!(meta))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/tools/{}", meta.id)) {
        res.headers_mut().insert(header::LOCATION, location);
    }
    Ok(res)
}

/// `GET /v1/tools`.
pub(crate) async fn list(State(state): State<Arc<AppState>>) -> Json<Value> {
    let tools: Vec<_> = state.store.list().iter().map(|t| json!(t.meta)).collect();
    Json(json!({ "tools": tools }))
}

/// `GET /v1/tools/{id}`.
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tool = tool_or_404(&state, &id)?;
    Ok(Json(json!(tool.meta)))
}

/// `DELETE /v1/tools/{id}`: out of service at once; its zygote stops when its runs in
/// flight have finished.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !store::is_id(&id) {
        return Err(ApiError::not_found(format!("no tool {id}")));
    }
    match state.store.remove(&id).await {
        Ok(true) => {
            state.metrics.forget(&id);
            tracing::info!(id = %id, "tool deleted");
            Ok(StatusCode::NO_CONTENT)
        }
        Ok(false) => Err(ApiError::not_found(format!("no tool {id}"))),
        Err(e) => {
            tracing::error!(id = %id, error = %e, "cannot delete a tool's files");
            Err(ApiError::internal(format!(
                "tool {id} is out of service but its files remain: {e}"
            )))
        }
    }
}

/// The tool a run or batch names (404 if none), and whether the client asked for a stream.
fn tool_and_stream(
    state: &AppState,
    id: &str,
    query: Result<Query<super::stream::StreamQuery>, QueryRejection>,
    headers: &axum::http::HeaderMap,
) -> Result<(Arc<store::Tool>, bool), ApiError> {
    let tool = tool_or_404(state, id)?;
    let Query(query) = query.map_err(|r| ApiError::bad_request(r.body_text()))?;
    Ok((tool, super::stream::wanted(&query, headers)?))
}

/// `POST /v1/tools/{id}/run`: 200 with the outcome, whatever the sandbox's status; with
/// `?stream=sse` (or `Accept: text/event-stream`), the output as events, then the outcome
/// (see [`super::stream`]).
pub(crate) async fn run(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
    query: Result<Query<super::stream::StreamQuery>, QueryRejection>,
    headers: axum::http::HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (tool, streamed) = tool_and_stream(&state, &id, query, &headers)?;
    let request: RunRequest = json_body(bytes, state.max_body)?;
    let task = request
        .into_task(&state.defaults, tool.meta.limits, state.files.for_tool(&tool.meta))
        .map_err(ApiError::bad_request)?;
    let json_call = task.arguments.is_some();
    let item = Item { handle: tool.handle.clone(), label: tool.meta.id.clone(), task };
    if streamed {
        let shape = move |o: &Outcome| outcome_json(o, json_call);
        return super::stream::respond(&state, caller_of(caller), item, shape);
    }
    let mut results = run_all(&state, caller_of(caller), vec![item]).await?;
    match results.pop() {
        Some(Ok(outcome)) => Ok(Json(outcome_json(&outcome, json_call)).into_response()),
        Some(Err(e)) => Err(e),
        None => Err(ApiError::internal("no outcome")),
    }
}

/// The body of `POST /v1/tools/{id}/batch`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchRequest {
    pub tasks: Vec<Value>,
}

/// Checks a batch's size against the server's bound.
pub(crate) fn check_batch(n: usize, max: usize) -> Result<(), ApiError> {
    if n > max {
        return Err(ApiError::bad_request(format!(
            "a batch of {n} exceeds the server's maximum of {max} (--max-batch)"
        )));
    }
    Ok(())
}

/// Results of a batch in order: an outcome, or the error of an item that could not start.
pub(crate) fn results_json(results: Vec<Result<Value, ApiError>>) -> Json<Value> {
    let results: Vec<Value> =
        results.into_iter().map(|r| r.unwrap_or_else(|e| e.to_json())).collect();
    Json(json!({ "results": results }))
}

/// `POST /v1/tools/{id}/batch` `{tasks: [...]}`: every task in its own sandbox, run
/// concurrently; `{results: [...]}` in order — or, with `?stream=sse` (or `Accept:
/// text/event-stream`), one event per task as it finishes (see [`super::stream`]).
pub(crate) async fn batch(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
    query: Result<Query<super::stream::StreamQuery>, QueryRejection>,
    headers: axum::http::HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (tool, streamed) = tool_and_stream(&state, &id, query, &headers)?;
    let request: BatchRequest = json_body(bytes, state.max_body)?;
    check_batch(request.tasks.len(), state.max_batch)?;
    let mut items = Vec::with_capacity(request.tasks.len());
    for (i, value) in request.tasks.into_iter().enumerate() {
        let task = serde_json::from_value::<RunRequest>(value)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                r.into_task(&state.defaults, tool.meta.limits, state.files.for_tool(&tool.meta))
            })
            .map_err(|e| ApiError::bad_request(format!("tasks[{i}]: {e}")))?;
        items.push(Item { handle: tool.handle.clone(), label: tool.meta.id.clone(), task });
    }
    let json_calls: Vec<bool> = items.iter().map(|i| i.task.arguments.is_some()).collect();
    if streamed {
        let shape = move |i: usize, o: &Outcome| outcome_json(o, json_calls.get(i) == Some(&true));
        return super::stream::respond_batch(&state, caller_of(caller), items, shape);
    }
    let results = run_all(&state, caller_of(caller), items).await?;
    let shaped = results.into_iter().zip(json_calls).map(|(r, j)| r.map(|o| outcome_json(&o, j)));
    Ok(results_json(shaped.collect()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Task {
        Task {
            timeout: Some(Duration::from_secs(10)),
            max_memory: Some(1 << 20),
            output: Output::Capture { max_bytes: 1000 },
            env: vec![("A".into(), "server".into())],
            ..Task::default()
        }
    }

    fn parse(text: &str) -> Result<Task, String> {
        let files = FileBounds {
            scratch: true,
            tool_cannot: false,
            max_files: 2,
            max_in_bytes: 100,
            out: crate::scratch::FilesOut { max_files: 2, max_bytes: 10 },
        };
        serde_json::from_str::<RunRequest>(text).map_err(|e| e.to_string())?.into_task(
            &server(),
            Limits::default(),
            files,
        )
    }

    #[test]
    fn requests_become_tasks_within_the_server_limits() {
        let t = parse(
            r#"{"args": ["x"], "env": {"A": "mine", "B": "b"}, "stdin": "in",
                          "limits": {"timeout_ms": 500, "max_output": 10}}"#,
        )
        .unwrap();
        assert_eq!(t.args, ["x"]);
        assert_eq!(t.env, [("A".to_string(), "mine".to_string()), ("B".into(), "b".into())]);
        assert_eq!(t.stdin, Stdin::Bytes(b"in".to_vec()));
        assert_eq!(t.timeout, Some(Duration::from_millis(500)));
        assert_eq!(t.output, Output::Capture { max_bytes: 10 });
        assert_eq!(parse("{}").unwrap().timeout, Some(Duration::from_secs(10)));
        assert_eq!(parse(r#"{"stdin_base64": "AP8="}"#).unwrap().stdin, Stdin::Bytes(vec![0, 255]));
        for bad in [
            r#"{"limits": {"timeout_ms": 10001}}"#,
            r#"{"limits": {"timeout_ms": 0}}"#,
            r#"{"limits": {"max_memory": 2097152}}"#,
            r#"{"limits": {"fuel": 5}}"#,
            r#"{"limits": {"max_output": 1001}}"#,
            r#"{"stdin": "a", "stdin_base64": "YQ=="}"#,
            r#"{"stdin_base64": "!"}"#,
            r#"{"args": ["a\u0000"]}"#,
            r#"{"files": []}"#,
            r#"{"files": {"../x": "a"}}"#,
            r#"{"files": {"a": "1", "b": "2", "c": "3"}}"#,
            r#"{"files": {"a": {"base64": "!"}}}"#,
            r#"{"env": {"A": 1}}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    use proptest::prelude::*;

    proptest! {
        /// A run request's limits are accepted exactly when each is within the server's,
        /// and then the task has exactly those.
        #[test]
        fn run_limits_within_the_server(
            timeout_ms in proptest::option::of(prop_oneof![Just(0u64), 1u64..20_000, any::<u64>()]),
            max_memory in proptest::option::of(0usize..4 << 20),
            max_output in proptest::option::of(0usize..2000),
            fuel in proptest::option::of(any::<u64>()),
            args in prop::collection::vec("[^\u{0}]{0,6}", 0..3),
        ) {
            let limits = Limits { timeout_ms, max_memory, fuel, max_output };
            let body = serde_json::json!({ "args": args, "limits": limits }).to_string();
            let got = parse(&body);
            let ok = timeout_ms.is_none_or(|ms| (1..=10_000).contains(&ms))
                && max_memory.is_none_or(|m| m <= 1 << 20)
                && max_output.is_none_or(|m| m <= 1000)
                && fuel.is_none();
            prop_assert_eq!(got.is_ok(), ok, "{} gave {:?}", body, got);
            if let Ok(t) = got {
                prop_assert_eq!(t.timeout, Some(timeout_ms.map_or(Duration::from_secs(10), Duration::from_millis)));
                prop_assert_eq!(t.max_memory, Some(max_memory.unwrap_or(1 << 20)));
                prop_assert_eq!(t.output, Output::Capture { max_bytes: max_output.unwrap_or(1000) });
                prop_assert_eq!(t.args, args);
            }
        }

        /// A tool's stored limits, capped by a server that restarted with smaller ones,
        /// always pass that server's check.
        #[test]
        fn capped_limits_always_pass(
            timeout_ms in proptest::option::of(1u64..u64::MAX),
            max_memory in proptest::option::of(any::<usize>()),
            max_output in proptest::option::of(any::<usize>()),
            fuel in proptest::option::of(any::<u64>()),
            server_fuel in proptest::option::of(any::<u64>()),
        ) {
            let mut server = server();
            server.fuel = server_fuel;
            let capped = Limits { timeout_ms, max_memory, fuel, max_output }.capped(&server);
            prop_assert_eq!(capped.check(&server), Ok(()));
        }

        #[test]
        fn bodies_never_panic(body in any::<Vec<u8>>(), text in r#"\{"(args|env|stdin|stdin_base64|invoke|limits|files)": ?(\[\]|\{\}|"[^"]{0,6}"|-?[0-9]{1,22}|null),? ?\}"#) {
            for b in [&body[..], text.as_bytes()] {
                let _ = serde_json::from_slice::<RunRequest>(b).map(|r| {
                    let _ = r.into_task(&server(), Limits::default(), FileBounds {
                        scratch: true,
                        tool_cannot: false,
                        max_files: 2,
                        max_in_bytes: 100,
                        out: crate::scratch::FilesOut { max_files: 2, max_bytes: 10 },
                    });
                });
            }
        }
    }
}
