//! `zeroboot-wasm serve`: an HTTP server where agents upload WebAssembly tools once and run
//! them per request, each run in a fresh sandbox forked from the tool's warm zygote.
//!
//! The server is a multi-threaded Tokio host of the fork server ([`crate::Runtime`]): one
//! zygote per tool (and per snippet language), started by re-executing this binary. Nothing a
//! request carries goes through a zygote: the host writes a task straight into its sandbox.
//!
//! Modules: `store` (tools on disk, content-addressed, reloaded at start-up), `api`
//! (tools, runs and batches), `exec` (ZeroBoot-compatible snippets), [`auth`] (API keys and
//! per-key quotas and rates), `admission` (the server-wide bound on runs), `stream`
//! (runs answered with Server-Sent Events), `metrics` and `ops` (health, metrics, the
//! OpenAPI document), [`mcp`] (the same tools over the Model Context Protocol: Streamable
//! HTTP at `/mcp`, and stdio for `zeroboot-wasm mcp`). A run's `files` go to a scratch
//! directory private to its sandbox (`src/scratch.rs`).

mod admission;
mod api;
pub mod auth;
mod exec;
pub mod mcp;
mod metrics;
mod ops;
mod store;
mod stream;

pub use api::error_chain;
pub use auth::{ApiKeys, KeyFileError, RateLimit};
pub use exec::{Interpreters, Language};

use crate::host::{LoadOptions, Runtime};
use crate::task::Task;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Who may call the API.
#[derive(Debug, Clone)]
pub enum Access {
    /// Requests must carry `Authorization: Bearer <key>` with one of these keys.
    Keys(ApiKeys),
    /// No authentication: for local use only (refused on a non-loopback address).
    Open,
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen (port 0: any free port; the bound address goes to `on_listen`).
    pub listen: SocketAddr,
    /// The data directory: `tools/` (the tool store) and, by default, `cache/` (compiled
    /// modules; set in `load`).
    pub data_dir: PathBuf,
    pub access: Access,
    /// How every tool and interpreter template is loaded (engine, isolation, pool). Its
    /// per-template admission is set from the bounds below.
    pub load: LoadOptions,
    /// The task every request starts from: environment, directories and limits. Its limits
    /// are also the most a request may ask for.
    pub defaults: Task,
    /// Runs in flight at once, server-wide.
    pub max_in_flight: usize,
    /// Runs waiting for a slot beyond those; past it, 429.
    pub max_queued: usize,
    /// Runs in flight or waiting per API key (`None`: no per-key bound).
    pub per_key_in_flight: Option<usize>,
    /// Runs per second per API key (`None`: no rate limit).
    pub per_key_rate: Option<RateLimit>,
    /// Runs' scratch directories and files.
    pub files: FileOptions,
    /// Largest request body, in bytes (an upload's module, a run's stdin); past it, 413.
    pub max_body: usize,
    /// Most tasks in one batch.
    pub max_batch: usize,
    /// Most tools the store holds (each keeps a zygote process and its pool); an upload of
    /// a new tool past it gets 507.
    pub max_tools: usize,
    /// After a shutdown signal, how long runs in flight have to finish before the server
    /// stops anyway (their sandboxes are then killed with their zygotes).
    pub shutdown_grace: Duration,
    /// The interpreter guests for `/v1/exec`.
    pub interpreters: Interpreters,
    /// `Host` values `/mcp` accepts besides loopback names and the listen address
    /// (DNS-rebinding protection); `host` or `host:port`.
    pub mcp_allowed_hosts: Vec<String>,
    /// `Origin` values `/mcp` accepts besides `http://localhost:*`, `http://127.0.0.1:*`
    /// and `http://[::1]:*`; a browser request from any other origin gets 403.
    pub mcp_allowed_origins: Vec<String>,
}

/// Each run's scratch directory (see `src/scratch.rs`): the `files` a run brings and the
/// files it leaves.
#[derive(Debug, Clone, Copy)]
pub struct FileOptions {
    /// Size of each sandbox's scratch tmpfs (`None`: no scratch directory; it also needs
    /// namespaces).
    pub scratch_size: Option<u64>,
    /// Most files a run brings, and most it gets back.
    pub max_files: usize,
    /// Most bytes of files a run gets back, all together.
    pub max_bytes_out: usize,
}

impl Default for FileOptions {
    fn default() -> Self {
        Self {
            scratch_size: Some(crate::scratch::DEFAULT_SCRATCH_SIZE),
            max_files: 64,
            max_bytes_out: 8 << 20,
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// No keys, and an address other hosts can reach.
    #[error(
        "refusing to serve without API keys on {addr}, which is not a loopback address: give --api-keys FILE (or listen on 127.0.0.1)"
    )]
    OpenOnNetwork { addr: SocketAddr },
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// State every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    store: store::Store,
    snippets: exec::Snippets,
    admission: Arc<admission::Admission>,
    quotas: Arc<auth::Quotas>,
    rates: auth::Rates,
    files: api::FileBounds,
    per_key_in_flight: Option<usize>,
    metrics: metrics::Metrics,
    keys: Option<ApiKeys>,
    defaults: Task,
    max_body: usize,
    max_batch: usize,
}

/// Opens the tool store in the data directory, loads the stored tools and makes the state
/// the handlers share (`serve`'s HTTP API and `mcp`'s stdio server alike).
pub(crate) async fn open_state(
    options: &ServeOptions,
    keys: Option<ApiKeys>,
) -> Result<Arc<AppState>, ServeError> {
    let dir = &options.data_dir;
    let tools_dir = dir.join("tools");
    std::fs::create_dir_all(&tools_dir)
        .map_err(|source| ServeError::DataDir { path: tools_dir.clone(), source })?;
    let mut load = options.load.clone();
    load.isolation.scratch = options.files.scratch_size.filter(|&s| s > 0);
    if load.isolation.scratch.is_some() && !load.isolation.namespaces {
        tracing::warn!("no scratch directories without namespaces: runs with `files` get 400");
        load.isolation.scratch = None;
    }
    let files = api::FileBounds {
        scratch: load.isolation.scratch.is_some(),
        tool_cannot: false,
        max_files: options.files.max_files,
        max_in_bytes: usize::try_from(load.isolation.scratch.unwrap_or(0)).unwrap_or(usize::MAX),
        out: crate::scratch::FilesOut {
            max_files: options.files.max_files,
            max_bytes: options.files.max_bytes_out,
        },
    };
    load.max_in_flight = options.max_in_flight.max(1);
    load.max_queued = options.max_queued;
    let runtime = Runtime::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let store = store::Store::open(
        tools_dir.clone(),
        runtime.clone(),
        load.clone(),
        cores.max(2),
        options.max_tools.max(1),
    )
    .map_err(|source| ServeError::DataDir { path: tools_dir, source })?;
    let loaded = store.reload().await;
    tracing::info!(tools = loaded, data_dir = %dir.display(), "tool store loaded");
    let key_count = keys.as_ref().map_or(0, ApiKeys::len);
    Ok(Arc::new(AppState {
        store,
        snippets: exec::Snippets::new(runtime, load, options.interpreters),
        admission: admission::Admission::new(options.max_in_flight, options.max_queued),
        quotas: auth::Quotas::new(options.per_key_in_flight, key_count),
        rates: auth::Rates::new(options.per_key_rate, key_count),
        files,
        per_key_in_flight: options.per_key_in_flight,
        metrics: metrics::Metrics::default(),
        keys,
        defaults: options.defaults.clone(),
        max_body: options.max_body,
        max_batch: options.max_batch,
    }))
}

/// The default data directory: `$XDG_DATA_HOME/zeroboot-wasm`, else
/// `~/.local/share/zeroboot-wasm`.
pub fn default_data_dir() -> Option<PathBuf> {
    let nonempty = |v: std::ffi::OsString| (!v.is_empty()).then(|| PathBuf::from(v));
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").and_then(nonempty) {
        return Some(d.join("zeroboot-wasm"));
    }
    std::env::var_os("HOME")
        .and_then(nonempty)
        .map(|h| h.join(".local").join("share").join("zeroboot-wasm"))
}

/// Resolves when the process gets SIGTERM or SIGINT (never, if the handlers cannot be set).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install the SIGTERM/SIGINT handlers: stop the server with SIGKILL");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutdown requested");
}

fn router(state: Arc<AppState>, mcp: mcp::HttpService) -> Router {
    let protected = Router::new()
        .route_service("/mcp", mcp)
        .route("/v1/tools", post(api::upload).get(api::list))
        .route("/v1/tools/{id}", get(api::get).delete(api::delete))
        .route("/v1/tools/{id}/run", post(api::run))
        .route("/v1/tools/{id}/batch", post(api::batch))
        .route("/v1/exec", post(exec::exec))
        .route("/v1/exec/batch", post(exec::exec_batch))
        .route("/metrics", get(ops::metrics))
        .route("/v1/metrics", get(ops::metrics))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_key));
    let open = Router::new()
        .route("/v1/health", get(ops::health))
        .route("/v1/openapi.json", get(ops::openapi));
    protected
        .merge(open)
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), ops::observe))
        .with_state(state)
}

/// Runs the server until `shutdown` resolves, then stops accepting, lets runs in flight
/// finish for up to [`ServeOptions::shutdown_grace`], and returns. `on_listen` is called with
/// the bound address once the server accepts connections (after the stored tools are loaded).
pub async fn serve(
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let keys = match &options.access {
        Access::Keys(keys) => Some(keys.clone()),
        Access::Open if !options.listen.ip().is_loopback() => {
            return Err(ServeError::OpenOnNetwork { addr: options.listen });
        }
        Access::Open => {
            tracing::warn!(
                "AUTHENTICATION IS OFF (--no-auth): anyone who can reach {} can upload and run code",
                options.listen
            );
            None
        }
    };
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServeError::Bind { addr: options.listen, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr: options.listen, source })?;
    let key_count = keys.as_ref().map_or(0, ApiKeys::len);
    let state = open_state(&options, keys).await?;
    let mcp = mcp::http_service(state.clone(), addr, &options);
    tracing::info!(%addr, keys = key_count, "listening");
    on_listen(addr);

    let fired = Arc::new(tokio::sync::Notify::new());
    let notify = fired.clone();
    let server = axum::serve(listener, router(state.clone(), mcp))
        .with_graceful_shutdown(async move {
            shutdown.await;
            notify.notify_one();
        })
        .into_future();
    tokio::pin!(server);
    let finished = tokio::select! {
        r = &mut server => Some(r),
        () = fired.notified() => None,
    };
    let result = match finished {
        Some(r) => r,
        None => {
            tracing::info!(
                in_flight = state.admission.in_flight(),
                grace_s = options.shutdown_grace.as_secs_f64(),
                "no longer accepting connections; finishing the requests in flight"
            );
            match tokio::time::timeout(options.shutdown_grace, server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(
                        in_flight = state.admission.in_flight(),
                        "grace period over: stopping with runs in flight (their sandboxes are killed)"
                    );
                    Ok(())
                }
            }
        }
    };
    result.map_err(ServeError::Serve)?;
    tracing::info!("stopped");
    Ok(())
}

/// Fuzzing support (`crate::fuzzing::http_body`): `data` as the body of every route that takes
/// JSON, parsed and turned into tasks as the handlers do, against a server's limits; `accepted`
/// checks each task that comes out, and what is checked here holds of each (within the
/// server's limits).
#[cfg(feature = "testkit")]
pub(crate) fn fuzz_body(data: &[u8], accepted: fn(&Task)) {
    use serde_json::Value;
    let server = Task {
        timeout: Some(Duration::from_secs(10)),
        max_memory: Some(64 << 20),
        fuel: Some(1_000_000),
        output: crate::task::Output::Capture { max_bytes: 1 << 20 },
        env: vec![("SERVER".into(), "1".into())],
        ..Task::default()
    };
    let files = api::FileBounds {
        scratch: true,
        tool_cannot: false,
        max_files: 4,
        max_in_bytes: 1 << 10,
        out: crate::scratch::FilesOut { max_files: 4, max_bytes: 1 << 10 },
    };
    let tool =
        api::Limits { timeout_ms: Some(60_000), max_memory: Some(1 << 30), ..Default::default() };
    let within = |t: &Task| {
        accepted(t);
        assert!(t.timeout.is_some_and(|d| d <= Duration::from_secs(10)), "{:?}", t.timeout);
        assert!(t.max_memory.is_some_and(|m| m <= 64 << 20));
        assert!(t.fuel.is_some_and(|f| f <= 1_000_000));
        assert!(
            matches!(t.output, crate::task::Output::Capture { max_bytes } if max_bytes <= 1 << 20)
        );
        assert!(t.files.len() <= files.max_files);
        assert!(t.files.iter().map(|f| f.bytes.len()).sum::<usize>() <= files.max_in_bytes);
    };
    let body = || Ok(axum::body::Bytes::copy_from_slice(data));
    let run = |r: api::RunRequest| r.into_task(&server, tool, files);
    // POST /v1/tools/{id}/run
    if let Ok(r) = api::json_body::<api::RunRequest>(body(), data.len())
        && let Ok(t) = run(r)
    {
        within(&t);
    }
    // POST /v1/tools/{id}/batch
    if let Ok(b) = api::json_body::<api::BatchRequest>(body(), data.len())
        && api::check_batch(b.tasks.len(), 16).is_ok()
    {
        for v in b.tasks {
            if let Ok(t) = serde_json::from_value::<api::RunRequest>(v)
                .map_err(|e| e.to_string())
                .and_then(run)
            {
                within(&t);
            }
        }
    }
    // POST /v1/exec, /v1/exec/batch, and MCP's run_javascript / run_python
    let code_args = |_: exec::Language, code: &str| vec!["-e".to_string(), code.to_string()];
    let snippet = |v: Value| {
        if let Ok((r, lang)) = exec::ExecRequest::parse(v)
            && let Ok(t) = r.into_task(lang, &server, code_args, Some("python".into()))
        {
            within(&t);
        }
    };
    let value = api::json_body::<Value>(body(), data.len());
    if let Ok(v) = &value {
        snippet(v.clone());
    }
    if let Ok(b) = api::json_body::<exec::ExecBatch>(body(), data.len())
        && api::check_batch(b.executions.len(), 16).is_ok()
    {
        b.executions.into_iter().for_each(snippet);
    }
    // MCP tools/call of a stored tool: its arguments object, checked against a schema's
    // `required`, or parsed as a run request.
    if let Ok(Value::Object(args)) = value {
        let schema = serde_json::json!({"type": "object", "required": ["a", "b"]});
        if let Value::Object(schema) = schema {
            let _ = mcp::check_required(&schema, &args);
        }
        if let Ok(t) = serde_json::from_value::<api::RunRequest>(Value::Object(args))
            .map_err(|e| e.to_string())
            .and_then(run)
        {
            within(&t);
        }
    }
}
