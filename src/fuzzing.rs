//! Entry points for the fuzz targets in `fuzz/` (and their regression tests): each takes the
//! bytes an untrusted party sends and drives the very decode and conversion code the runtime
//! runs on them, then checks what must hold of whatever was accepted. Every function returns
//! normally on any input; a panic (or an abort) is a finding.
//!
//! Test support only (the `testkit` feature), never in a shipped build.

use crate::outcome::Status;
use crate::protocol::{self, Reply, Request};
use crate::sys::ExitStatus;
use crate::task::{MAX_TIMEOUT, Stdin, Task};
use crate::wire::{self, ChildReport, Frame, FrameReader};
use std::time::{Duration, Instant};

/// A `read(2)` over `bytes`, at most `step` bytes a call.
fn reader(bytes: &[u8], step: usize) -> impl FnMut(&mut [u8]) -> std::io::Result<usize> + '_ {
    let mut at = 0;
    move |buf: &mut [u8]| {
        let n = buf.len().min(step.max(1)).min(bytes.len() - at);
        buf[..n].copy_from_slice(&bytes[at..at + n]);
        at += n;
        Ok(n)
    }
}

/// Zygote (or host) → sandbox: the task frame a waiting sandbox reads from its channel, as
/// the sandbox decodes it (`data[0]` picks the read size, the rest is the channel's bytes).
/// What decodes must re-encode to a frame that decodes to the same task.
pub fn task_frame(data: &[u8]) {
    let Some((&step, bytes)) = data.split_first() else { return };
    let Ok(Some((header, stdin))) = wire::read_task(reader(bytes, usize::from(step))) else {
        return;
    };
    let mut again = match wire::encode_task(&header, &stdin) {
        Ok(frame) => frame,
        Err(e) => panic!("a decoded task frame does not re-encode: {e}"),
    };
    again.extend_from_slice(&stdin);
    let _ = crate::child::deadline_of(Instant::now(), header.remaining_us);
    let header_json = serde_json::to_string(&header).ok();
    let (task, preopens) = crate::child::task_of(header, stdin);
    let _ = crate::rlimits::cpu_backstop(task.timeout);
    let Ok(Some((header2, stdin2))) = wire::read_task(reader(&again, 4096)) else {
        panic!("a re-encoded task frame does not decode");
    };
    assert_eq!(serde_json::to_string(&header2).ok(), header_json, "header changed in transit");
    let (task2, preopens2) = crate::child::task_of(header2, stdin2);
    assert_eq!(task, task2, "task changed in transit");
    assert_eq!(preopens.len(), preopens2.len());
}

/// Sandbox → zygote/host: the report frame, fed to a [`FrameReader`] in pieces of
/// `data[0]` bytes (the rest is the pipe's bytes), then judged with the exit status and
/// deadline flag `data[1]` picks.
pub fn report_frame(data: &[u8]) {
    let [step, how, bytes @ ..] = data else { return };
    let mut reader = FrameReader::default();
    let mut got: Frame<ChildReport> = Frame::Partial;
    for chunk in bytes.chunks(usize::from(*step).max(1)) {
        got = reader.push(chunk);
        if !matches!(got, Frame::Partial) {
            break;
        }
    }
    let report = match got {
        Frame::Partial => Ok(None),
        Frame::Complete(r) => {
            let frame = wire::encode(&r);
            match FrameReader::default().push::<ChildReport>(&frame) {
                Frame::Complete(again) => assert_eq!(
                    serde_json::to_string(&again).ok(),
                    serde_json::to_string(&r).ok(),
                    "report changed in transit"
                ),
                _ => panic!("a decoded report does not re-encode"),
            }
            Ok(Some(r))
        }
        Frame::Corrupt(e) => Err(e),
    };
    let status = match how % 4 {
        0 => ExitStatus::Code(i32::from(*how)),
        1 => ExitStatus::Signal(libc::SIGSYS),
        2 => ExitStatus::Signal(libc::SIGKILL),
        _ => ExitStatus::Signal(i32::from(*how) - 128),
    };
    let timed_out = how & 0x80 != 0;
    let reported = report.as_ref().ok().and_then(|r| r.as_ref().map(|r| r.status));
    let o = crate::zygote::judge(report, status, timed_out, Some(Duration::from_millis(5)));
    if let Some(s) = reported
        && (!timed_out || s != Status::InternalError)
    {
        assert_eq!(o.status, s, "a report's own status is the outcome");
    }
    if o.status != Status::Exited {
        assert!(o.message.is_some(), "{:?} without a message", o.status);
    }
}

/// Host → zygote: one packet as the zygote decodes it, and the checks the zygote makes on
/// a run's or a claim's fields before acting on them.
pub fn zygote_request(data: &[u8]) {
    let Ok(request) = protocol::decode::<Request>(data) else { return };
    let again = protocol::encode(&request);
    assert!(protocol::decode::<Request>(&again).is_ok(), "a decoded request does not re-decode");
    match request {
        Request::Run { timeout_us, max_memory, .. } => {
            let _ = crate::zygote_process::backstop_for(Instant::now(), timeout_us);
            let _ = max_memory
                .map(|m| m.saturating_add(crate::zygote::bytes_u64(crate::zygote::HOST_OVERHEAD)));
        }
        Request::Claim { timeout_us, set_limit, .. } => {
            let _ = crate::zygote_process::backstop_for(Instant::now(), timeout_us);
            let _ = set_limit
                .and_then(|l| l.max_memory)
                .map(|m| m.saturating_add(crate::zygote::bytes_u64(crate::zygote::HOST_OVERHEAD)));
        }
        Request::Load(load) => {
            let _ = load.compile.map(|c| Duration::from_micros(c.timeout_us));
            let _ = load.isolation.init.timeout_us.map(Duration::from_micros);
        }
        Request::Hello { .. } | Request::Cancel { .. } | Request::Stats | Request::Shutdown => {}
    }
}

/// Zygote → host: one packet as the host decodes it, and what the host makes of an exit.
pub fn zygote_reply(data: &[u8]) {
    let Ok(reply) = protocol::decode::<Reply>(data) else { return };
    let again = protocol::encode(&reply);
    assert!(protocol::decode::<Reply>(&again).is_ok(), "a decoded reply does not re-decode");
    if let Reply::Exited { code, signal, timed_out, oom_killed, memory_limit, .. } = reply {
        let status = crate::host::exit_status(code, signal);
        let o = crate::zygote::judge(Ok(None), status, timed_out, Some(Duration::from_millis(1)));
        assert!(o.message.is_some());
        if oom_killed {
            let _ = crate::zygote::oom_message(memory_limit);
        }
    }
}

/// What holds of every task a request parser accepted: it passes [`Task::validate`], and it
/// reaches the sandbox intact through the task frame (as the host hands it over).
pub fn check_accepted(task: &Task) {
    if let Err(e) = task.validate() {
        panic!("accepted an invalid task: {e}");
    }
    assert!(task.timeout.is_none_or(|t| t <= MAX_TIMEOUT));
    let stdin: &[u8] = match &task.stdin {
        Stdin::Bytes(b) => b,
        Stdin::Empty | Stdin::Inherit => &[],
    };
    let deadline = task.deadline_from(Instant::now()).unwrap_or_else(|e| panic!("{e}"));
    let header = crate::zygote::task_header(task, "fuzz", &[], deadline, false);
    let Ok(mut frame) = wire::encode_task(&header, stdin) else {
        // Too large for one hand-over: the host refuses it with a precise error.
        return;
    };
    frame.extend_from_slice(stdin);
    let (decoded, _) = match wire::read_task(reader(&frame, usize::MAX)) {
        Ok(Some((h, s))) => crate::child::task_of(h, s),
        Ok(None) => panic!("an accepted task's frame is empty"),
        Err(e) => panic!("an accepted task's frame does not decode: {e}"),
    };
    assert_eq!(decoded.args, task.args);
    assert_eq!(decoded.env, task.env);
    assert_eq!(decoded.stdin, Stdin::Bytes(stdin.to_vec()));
    assert_eq!(decoded.invoke, task.invoke);
    assert_eq!(decoded.files, task.files);
    assert_eq!(decoded.max_memory, task.max_memory);
    assert_eq!(decoded.fuel, task.fuel);
    assert_eq!(
        decoded.timeout,
        task.timeout.map(|t| Duration::from_micros(crate::zygote::micros(t)))
    );
    assert_eq!(decoded.arguments, task.arguments, "a component call's arguments changed");
}

/// The worker's defaults, as its flags set them.
pub fn worker_base() -> Task {
    Task { timeout: Some(Duration::from_secs(60)), max_memory: Some(1 << 30), ..Task::default() }
}

/// The `worker` command: bytes on its stdin, read line by line (at most `max` bytes a line,
/// `data[0]` picks a small limit or the real one), each parsed as a request.
pub fn worker_lines(data: &[u8]) {
    let Some((&limit, input)) = data.split_first() else { return };
    let max = if limit < 128 { usize::from(limit) } else { crate::task::MAX_REQUEST_BYTES };
    let mut input = std::io::BufReader::with_capacity(7, input);
    let mut line = Vec::new();
    let base = worker_base();
    let code_args = |code: &str, args: &[String]| {
        ["-e".to_string(), code.to_string()].into_iter().chain(args.iter().cloned()).collect()
    };
    loop {
        match crate::worker_request::read_line(&mut input, &mut line, max) {
            Ok(crate::worker_request::Line::End) => return,
            Ok(crate::worker_request::Line::TooLong(len)) => assert!(len > max),
            Ok(crate::worker_request::Line::Read) => {
                assert!(line.len() <= max && !line.contains(&b'\n'));
                let Ok(text) = std::str::from_utf8(&line) else { continue };
                let text = text.trim();
                if text.is_empty() {
                    continue;
                }
                for snippets in [false, true] {
                    let code_args: Option<crate::worker_request::CodeArgs> =
                        snippets.then_some(&code_args);
                    if let Ok(task) = crate::worker_request::parse(text, &base, code_args) {
                        check_accepted(&task);
                    }
                }
            }
            Err(e) => panic!("reading from memory failed: {e}"),
        }
    }
}

/// `serve`: one HTTP request body, as each route that takes JSON parses it and turns it into
/// tasks (`/v1/tools/{id}/run`, `/v1/tools/{id}/batch`, `/v1/exec`, `/v1/exec/batch`, and an
/// MCP `tools/call`'s arguments), against a server's limits. What is accepted stays within
/// them.
#[cfg(feature = "serve")]
pub fn http_body(data: &[u8]) {
    crate::serve::fuzz_body(data, check_accepted);
}
