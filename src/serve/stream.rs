//! Streamed runs: `?stream=sse` (or `Accept: text/event-stream`) on `POST /v1/tools/{id}/run`
//! and `POST /v1/exec` answers with Server-Sent Events as the guest writes:
//!
//! - `event: stdout` / `event: stderr`, `data: {"text": "…"}` — one chunk of a stream as the
//!   sandbox wrote it. `text` is the chunk as UTF-8; when the chunk is not valid UTF-8 (binary
//!   output, or a character split between two chunks) `text` has U+FFFD replacements and
//!   `base64` holds the exact bytes. At most `max_output` bytes per stream are sent.
//! - `event: outcome`, `data: {…}` — last: the usual outcome (of a run or of a snippet), its
//!   `stdout` and `stderr` empty (they were sent as chunks), their `*_truncated` flags set.
//! - `event: error`, `data: {"error": "…", "status": N}` — last, instead of `outcome`: the run
//!   could not start after the stream began (e.g. 503, the zygote could not be started).
//!
//! A streamed batch (`POST /v1/tools/{id}/batch?stream=sse`) sends one event per task as it
//! finishes, in the order they finish, instead of the output chunks:
//!
//! - `event: result`, `data: {"index": i, …}` — task `i`'s outcome (with its output), or the
//!   error (`{"index", "error", "status"}`) of a task that could not start;
//! - `event: done`, `data: {"results": n}` — last, after every task's result.
//!
//! Admission (quota, rate, 429) and the request's validation happen before the stream starts,
//! so those are ordinary HTTP errors. Backpressure: the chunks travel through a small bounded
//! channel; a client that reads slowly leaves the sandbox's pipe full and the guest waiting
//! (under its deadline), never a growing buffer in the server. A client that goes away drops
//! the stream, which aborts the run: its sandbox is killed.

use super::AppState;
use super::api::{self, ApiError, Item};
use super::auth::Caller;
use crate::host::{OutputChunk, OutputStream};
use crate::outcome::Outcome;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};

/// Chunks buffered between a sandbox's pipes and the client: with the pipes' own 64 KiB
/// each, the most output a slow client leaves in flight per run.
const CHUNKS_IN_FLIGHT: usize = 8;

/// `?stream=` of a run.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamQuery {
    stream: Option<String>,
}

/// Whether the client asked for a stream: `?stream=sse`, or `Accept: text/event-stream`.
pub(crate) fn wanted(query: &StreamQuery, headers: &HeaderMap) -> Result<bool, ApiError> {
    match query.stream.as_deref() {
        Some("sse") => return Ok(true),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown stream format {other:?}: the only one is `sse`"
            )));
        }
        None => {}
    }
    Ok(headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.split(';').next().is_some_and(|m| m.trim() == "text/event-stream")))
}

/// Admits the run (or refuses it, as a plain HTTP error), then answers with its events.
pub(crate) fn respond(
    state: &Arc<AppState>,
    caller: Caller,
    item: Item,
    shape: impl FnOnce(&Outcome) -> Value + Send + 'static,
) -> Result<Response, ApiError> {
    let (quota, mut tickets) = api::admit(state, caller, 1)?;
    let Some(ticket) = tickets.pop() else {
        return Err(ApiError::internal("no admission ticket"));
    };
    let (chunks_tx, chunks) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let (done_tx, done) = oneshot::channel();
    let state = state.clone();
    let run = tokio::spawn(async move {
        let _quota = quota;
        let result = api::run_one(state, item, ticket, Some(chunks_tx)).await;
        let event = match result {
            Ok(outcome) => Event::default().event("outcome").data(shape(&outcome).to_string()),
            Err(e) => Event::default().event("error").data(e.to_json().to_string()),
        };
        let _ = done_tx.send(event);
    });
    let events = Events { chunks, chunks_open: true, done: Some(done), _run: AbortOnDrop(run) };
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// Admits a batch whole (or refuses it whole, as a plain HTTP error), then answers with one
/// `result` event per task as it finishes, and `done` (see the module's documentation).
/// `shape` gives a finished task's JSON; task `i`'s answer carries `"index": i`.
pub(crate) fn respond_batch(
    state: &Arc<AppState>,
    caller: Caller,
    items: Vec<Item>,
    shape: impl Fn(usize, &Outcome) -> Value + Send + 'static,
) -> Result<Response, ApiError> {
    let n = items.len();
    let (quota, tickets) = api::admit(state, caller, n)?;
    // Each task sends one event and `done` follows: the channel never holds more.
    let (tx, events) = mpsc::channel(n.saturating_add(1));
    let state = state.clone();
    let run = tokio::spawn(async move {
        let _quota = quota;
        let mut set = tokio::task::JoinSet::new();
        for (i, (item, ticket)) in items.into_iter().zip(tickets).enumerate() {
            let state = state.clone();
            set.spawn(async move { (i, api::run_one(state, item, ticket, None).await) });
        }
        while let Some(joined) = set.join_next().await {
            let (i, mut v) = match joined {
                Ok((i, Ok(outcome))) => (i, shape(i, &outcome)),
                Ok((i, Err(e))) => (i, e.to_json()),
                Err(e) => {
                    tracing::error!(error = %e, "a batch run ended abnormally");
                    continue;
                }
            };
            if let Some(obj) = v.as_object_mut() {
                obj.insert("index".into(), json!(i));
            }
            if tx.send(Event::default().event("result").data(v.to_string())).await.is_err() {
                return;
            }
        }
        let done = Event::default().event("done").data(json!({ "results": n }).to_string());
        let _ = tx.send(done).await;
    });
    let events = BatchEvents { events, _run: AbortOnDrop(run) };
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// A streamed batch's events, as its runs finish; dropping it (the client went away) aborts
/// every run.
struct BatchEvents {
    events: mpsc::Receiver<Event>,
    _run: AbortOnDrop,
}

impl futures_core::Stream for BatchEvents {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx).map(|e| e.map(Ok))
    }
}

/// One chunk as an event.
fn chunk_event(c: OutputChunk) -> Event {
    let name = match c.stream {
        OutputStream::Stdout => "stdout",
        OutputStream::Stderr => "stderr",
    };
    let data = match std::str::from_utf8(&c.bytes) {
        Ok(text) => json!({ "text": text }),
        Err(_) => json!({
            "text": String::from_utf8_lossy(&c.bytes),
            "base64": base64::engine::general_purpose::STANDARD.encode(&c.bytes),
        }),
    };
    Event::default().event(name).data(data.to_string())
}

/// Aborts the run's task when the response body is dropped (the client went away).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The response body's events: the chunks until the run drops its sender, then the final one.
struct Events {
    chunks: mpsc::Receiver<OutputChunk>,
    chunks_open: bool,
    done: Option<oneshot::Receiver<Event>>,
    _run: AbortOnDrop,
}

impl futures_core::Stream for Events {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.chunks_open {
            match this.chunks.poll_recv(cx) {
                Poll::Ready(Some(c)) => return Poll::Ready(Some(Ok(chunk_event(c)))),
                Poll::Ready(None) => this.chunks_open = false,
                Poll::Pending => return Poll::Pending,
            }
        }
        let Some(done) = this.done.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(done).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                this.done = None;
                let event = r.unwrap_or_else(|_| {
                    let e = ApiError::internal("the run ended abnormally");
                    Event::default().event("error").data(e.to_json().to_string())
                });
                Poll::Ready(Some(Ok(event)))
            }
        }
    }
}
