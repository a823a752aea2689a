//! Operations: health (each zygote answers), metrics, the OpenAPI document, and the answers
//! for requests no route takes.

use super::AppState;
use super::api::ApiError;
use super::metrics::{Gauges, TemplateGauges};
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a zygote has to answer a health check.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// The OpenAPI 3 document of this API, kept by hand in `docs/openapi.json`.
const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// `GET /v1/health`: every loaded template's zygote is asked for its figures (a zygote that
/// died is started again first). 200 if all answer, else 503 naming those that did not. It
/// needs no key; without one (on a server with keys) only the verdict is given, not which
/// tools there are.
pub(crate) async fn health(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let (status, mut body) = health_report(&state).await;
    if super::auth::caller(&state, &headers).is_err()
        && let Some(obj) = body.as_object_mut()
    {
        obj.retain(|k, _| k == "status");
        if status != StatusCode::OK {
            obj.insert(
                "error".into(),
                json!("some templates are not ready (send an API key for details)"),
            );
        }
    }
    (status, Json(body)).into_response()
}

async fn health_report(state: &AppState) -> (StatusCode, Value) {
    let mut checks = tokio::task::JoinSet::new();
    let tools = state.store.list();
    for tool in &tools {
        let (key, name, handle) =
            (tool.meta.id.clone(), tool.meta.name.clone(), tool.handle.clone());
        checks.spawn(async move { (key, "tool", name, check(&handle).await) });
    }
    for (lang, handle) in state.snippets.loaded() {
        let name = lang.name().to_string();
        checks.spawn(async move { (name.clone(), "interpreter", name, check(&handle).await) });
    }
    let mut templates = Map::new();
    let mut down = Vec::new();
    while let Some(joined) = checks.join_next().await {
        let Ok((key, kind, name, mut report)) = joined else { continue };
        if report.get("ready") != Some(&Value::Bool(true)) {
            down.push(key.clone());
        }
        if let Some(obj) = report.as_object_mut() {
            obj.insert("kind".into(), json!(kind));
            obj.insert("name".into(), json!(name));
        }
        templates.insert(key, report);
    }
    // Stored tools that did not load are out of service: not ready, with why.
    for (id, why) in state.store.unloaded() {
        down.push(id.clone());
        templates.insert(id, json!({"kind": "tool", "ready": false, "error": why}));
    }
    let mut body = json!({
        "status": if down.is_empty() { "ok" } else { "unavailable" },
        "templates": templates,
        "tools": tools.len(),
        "in_flight": state.admission.in_flight(),
        "queued": state.admission.queued(),
    });
    if down.is_empty() {
        return (StatusCode::OK, body);
    }
    down.sort();
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "error".into(),
            json!(format!(
                "{} of {} templates not ready: {}",
                down.len(),
                templates_len(&obj["templates"]),
                down.join(", ")
            )),
        );
    }
    (StatusCode::SERVICE_UNAVAILABLE, body)
}

fn templates_len(v: &Value) -> usize {
    v.as_object().map_or(0, Map::len)
}

async fn check(handle: &crate::host::TemplateHandle) -> Value {
    match tokio::time::timeout(HEALTH_TIMEOUT, handle.stats()).await {
        Ok(Ok(s)) => json!({
            "ready": true,
            "zygote_pid": handle.zygote_pid().await,
            "zygote_restarts": handle.zygote_restarts(),
            "threads": s.threads,
            "namespaces": s.namespaces,
            "seccomp": s.seccomp,
            "memory_cgroup": s.memory_cgroup,
        }),
        Ok(Err(e)) => json!({ "ready": false, "error": e.one_line() }),
        Err(_) => json!({
            "ready": false,
            "error": format!("the zygote did not answer within {} s", HEALTH_TIMEOUT.as_secs()),
        }),
    }
}

/// `GET /metrics` (and ZeroBoot's `/v1/metrics`): the Prometheus text format.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let tools = state.store.list();
    let handles = tools
        .iter()
        .map(|t| (t.meta.id.clone(), t.handle.clone()))
        .chain(state.snippets.loaded().into_iter().map(|(lang, t)| (lang.name().to_string(), t)));
    let templates = handles
        .map(|(label, handle)| TemplateGauges {
            label,
            restarts: handle.zygote_restarts(),
            pool_ready: handle.pool_ready(),
            pool_size: handle.pool_size(),
        })
        .collect();
    let gauges = Gauges {
        in_flight: state.admission.in_flight(),
        queued: state.admission.queued(),
        tools: tools.len(),
        templates,
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(&gauges),
    )
        .into_response()
}

/// `GET /v1/openapi.json`.
pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// No route for this path.
pub(crate) async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

/// A route for this path, but not for this method.
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed for {}", uri.path()),
    )
}

/// Counts every response by status and logs it (at debug level: a busy server answers many);
/// an error answer to a request with a body closes the connection.
pub(crate) async fn observe(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req.headers().get(header::CONTENT_LENGTH).is_some_and(|v| v.to_str().ok() != Some("0"));
    let mut res = next.run(req).await;
    let status = res.status();
    // An error may be answered before the request's body is read (401, 413, no such route);
    // the connection then closes. Saying so keeps a client from sending its next request on
    // it.
    if has_body && (status.is_client_error() || status.is_server_error()) {
        res.headers_mut().insert(header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    }
    state.metrics.response(status.as_u16());
    tracing::debug!(
        %method,
        path,
        status = status.as_u16(),
        elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    res
}
