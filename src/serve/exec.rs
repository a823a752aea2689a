//! Snippets, compatible with ZeroBoot's API: `POST /v1/exec {code, language,
//! timeout_seconds}` and `POST /v1/exec/batch {executions: [...]}`, answered with ZeroBoot's
//! fields (`id`, `stdout`, `stderr`, `exit_code`, `fork_time_ms`, `exec_time_ms`,
//! `total_time_ms`) and ours beside them (`status`, `message`, truncation flags, `timings_us`,
//! `peak_memory_bytes`, `language`), so a ZeroBoot client switches by changing the URL.
//!
//! Each language is an interpreter guest, loaded into its zygote on first use.

use super::AppState;
use super::api::{self, ApiError, Item, json_body, results_json};
use super::auth::Caller;
use crate::host::{LoadOptions, Runtime, TemplateHandle};
use crate::outcome::{Outcome, Status};
use crate::task::Task;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A snippet language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    JavaScript,
    Python,
}

impl Language {
    pub const ALL: [Language; 2] = [Language::JavaScript, Language::Python];

    /// The name used in answers, in health and in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Language::JavaScript => "javascript",
            Language::Python => "python",
        }
    }

    /// ZeroBoot's names (`python`, `node`, `javascript`) and the short ones.
    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "javascript" | "js" | "node" | "nodejs" => Some(Language::JavaScript),
            "python" | "py" | "python3" => Some(Language::Python),
            _ => None,
        }
    }

    fn index(self) -> usize {
        match self {
            Language::JavaScript => 0,
            Language::Python => 1,
        }
    }
}

/// Where the interpreter guests are and how they take code: given by the embedding program
/// (the command line finds them next to its executable).
#[derive(Debug, Clone, Copy)]
pub struct Interpreters {
    /// The interpreter module's path, or a message saying why there is none.
    pub module: fn(Language) -> Result<PathBuf, String>,
    /// The guest's arguments that make it run `code`.
    pub code_args: fn(Language, &str) -> Vec<String>,
}

/// ZeroBoot's default deadline for a snippet (it is bounded by the server's `--timeout`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The interpreter templates, loaded on first use.
#[derive(Debug)]
pub(crate) struct Snippets {
    runtime: Runtime,
    load: LoadOptions,
    pub interpreters: Interpreters,
    slots: [tokio::sync::Mutex<Option<TemplateHandle>>; 2],
}

impl Snippets {
    pub fn new(runtime: Runtime, load: LoadOptions, interpreters: Interpreters) -> Self {
        Self { runtime, load, interpreters, slots: Default::default() }
    }

    /// The language's template, loading it first if needed (503 if it cannot be).
    pub async fn template(&self, lang: Language) -> Result<TemplateHandle, ApiError> {
        let mut slot = self.slots[lang.index()].lock().await;
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let module = (self.interpreters.module)(lang).map_err(ApiError::unavailable)?;
        let handle = self.runtime.load(module, self.load.clone()).await.map_err(|e| {
            tracing::error!(language = lang.name(), error = %e.one_line(), "cannot load the interpreter");
            ApiError::unavailable(format!("cannot load the {} interpreter: {}", lang.name(), e.one_line()))
        })?;
        tracing::info!(language = lang.name(), "interpreter loaded");
        *slot = Some(handle.clone());
        Ok(handle)
    }

    /// The templates loaded so far (one being loaded now is not waited for).
    pub fn loaded(&self) -> Vec<(Language, TemplateHandle)> {
        Language::ALL
            .into_iter()
            .filter_map(|lang| {
                let slot = self.slots[lang.index()].try_lock().ok()?;
                slot.as_ref().map(|t| (lang, t.clone()))
            })
            .collect()
    }
}

/// One snippet: ZeroBoot's fields, and ours (`stdin`, `args`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecRequest {
    code: String,
    language: Option<String>,
    timeout_seconds: Option<f64>,
    stdin: Option<String>,
    #[serde(default)]
    args: Vec<String>,
}

impl ExecRequest {
    /// The language (ZeroBoot's default is Python).
    fn language(&self) -> Result<Language, String> {
        match &self.language {
            None => Ok(Language::Python),
            Some(name) => Language::parse(name).ok_or_else(|| {
                format!("unknown language {name:?}: use \"javascript\" (or \"node\") or \"python\"")
            }),
        }
    }

    /// The task: the server's defaults (`server`), the interpreter's arguments for the code
    /// (`code_args`), then this request's deadline and stdin; `argv0` names the interpreter.
    pub(crate) fn into_task(
        self,
        lang: Language,
        server: &Task,
        code_args: fn(Language, &str) -> Vec<String>,
        argv0: Option<String>,
    ) -> Result<Task, String> {
        let mut task = server.clone();
        task.invoke = None;
        task.args = code_args(lang, &self.code);
        task.args.extend(self.args);
        task.argv0 = argv0;
        let timeout = match self.timeout_seconds {
            None => server.timeout.map_or(DEFAULT_TIMEOUT, |max| max.min(DEFAULT_TIMEOUT)),
            Some(s) => Duration::try_from_secs_f64(s)
                .map_err(|_| format!("invalid timeout_seconds {s}: must be positive"))?,
        };
        api::set_timeout(&mut task, timeout, server)?;
        task.stdin = api::stdin_of(self.stdin, None)?;
        task.validate().map_err(|e| format!("invalid task: {e}"))?;
        Ok(task)
    }

    /// Parses a snippet's JSON and checks its language (before its template is loaded).
    pub(crate) fn parse(value: Value) -> Result<(Self, Language), String> {
        let request: ExecRequest =
            serde_json::from_value(value).map_err(|e| format!("invalid request: {e}"))?;
        let lang = request.language()?;
        Ok((request, lang))
    }
}

/// A UUIDv7 (time-ordered), as ZeroBoot's ids are.
fn uuid_v7() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut b = [0u8; 16];
    let ms_bytes = (ms as u64).to_be_bytes();
    b[..6].copy_from_slice(&ms_bytes[2..]);
    if crate::sys::getrandom(&mut b[6..]).is_err() {
        // No kernel randomness: the id stays unique enough by time and a counter.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        b[8..].copy_from_slice(&n.to_be_bytes());
    }
    b[6] = 0x70 | (b[6] & 0x0f);
    b[8] = 0x80 | (b[8] & 0x3f);
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// The exit code ZeroBoot's clients read: the guest's own for `exited`, otherwise the code
/// `zeroboot-wasm run` exits with for that status (124 timeout, 134 trap, …).
fn exit_code(o: &Outcome) -> i32 {
    match o.status {
        Status::Exited => o.exit_code.unwrap_or(0),
        Status::Trapped | Status::FuelExhausted | Status::MemoryLimit => 134,
        Status::Timeout => 124,
        Status::WriteLimit => 153,
        Status::SandboxViolation => 159,
        Status::Killed => 137,
        Status::InternalError => 70,
    }
}

/// ZeroBoot's answer for one snippet, with our outcome's fields beside.
fn exec_json(lang: Language, o: &Outcome) -> Value {
    let mut v = api::outcome_json(o, false);
    if let Some(m) = v.as_object_mut() {
        let ms = |us: u64| us as f64 / 1000.0;
        m.insert("id".into(), json!(uuid_v7()));
        m.insert("language".into(), json!(lang.name()));
        m.insert("exit_code".into(), json!(exit_code(o)));
        m.insert("fork_time_ms".into(), json!(ms(o.timings_us.fork)));
        m.insert("exec_time_ms".into(), json!(ms(o.timings_us.run)));
        m.insert("total_time_ms".into(), json!(ms(o.timings_us.total)));
    }
    v
}

fn caller_of(c: Option<Extension<Caller>>) -> Caller {
    c.map_or(Caller::Anonymous, |Extension(c)| c)
}

/// Parses one snippet into its run; `at` prefixes messages (a batch's index).
pub(crate) async fn item_of(
    state: &AppState,
    value: Value,
    at: &str,
) -> Result<(Language, Item), ApiError> {
    let (request, lang) =
        ExecRequest::parse(value).map_err(|e| ApiError::bad_request(format!("{at}{e}")))?;
    let handle = state.snippets.template(lang).await?;
    let argv0 =
        std::path::Path::new(handle.name()).file_stem().map(|s| s.to_string_lossy().into_owned());
    let task = request
        .into_task(lang, &state.defaults, state.snippets.interpreters.code_args, argv0)
        .map_err(|e| ApiError::bad_request(format!("{at}{e}")))?;
    Ok((lang, Item { handle, label: lang.name().to_string(), task }))
}

/// `POST /v1/exec`.
pub(crate) async fn exec(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    query: Result<Query<super::stream::StreamQuery>, QueryRejection>,
    headers: axum::http::HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let streamed = super::stream::wanted(&query, &headers)?;
    let value: Value = json_body(bytes, state.max_body)?;
    let (lang, item) = item_of(&state, value, "").await?;
    if streamed {
        return super::stream::respond(&state, caller_of(caller), item, move |o| {
            exec_json(lang, o)
        });
    }
    let mut results = api::run_all(&state, caller_of(caller), vec![item]).await?;
    match results.pop() {
        Some(Ok(o)) => Ok(Json(exec_json(lang, &o)).into_response()),
        Some(Err(e)) => Err(e),
        None => Err(ApiError::internal("no outcome")),
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecBatch {
    pub executions: Vec<Value>,
}

/// `POST /v1/exec/batch`: every snippet in its own sandbox, run concurrently; `{results}`
/// in order.
pub(crate) async fn exec_batch(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let request: ExecBatch = json_body(bytes, state.max_body)?;
    api::check_batch(request.executions.len(), state.max_batch)?;
    let mut langs = Vec::new();
    let mut items = Vec::new();
    for (i, value) in request.executions.into_iter().enumerate() {
        let (lang, item) = item_of(&state, value, &format!("executions[{i}]: ")).await?;
        langs.push(lang);
        items.push(item);
    }
    let results = api::run_all(&state, caller_of(caller), items).await?;
    Ok(results_json(
        results.into_iter().zip(langs).map(|(r, lang)| r.map(|o| exec_json(lang, &o))).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuid_v7() {
        let a = uuid_v7();
        let b = uuid_v7();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "7", "{a}");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }

    #[test]
    fn zeroboot_language_names() {
        assert_eq!(Language::parse("node"), Some(Language::JavaScript));
        assert_eq!(Language::parse("Python"), Some(Language::Python));
        assert_eq!(Language::parse("ruby"), None);
    }
}
