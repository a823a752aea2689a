//! The `worker` command's request line (`zeroboot-wasm worker`, one JSON object per line):
//! reading a bounded line and turning it into a [`Task`]. In the library, not the command
//! line, so the fuzz targets (`fuzz/`) and the property tests drive the very code the worker
//! runs on what an untrusted client sends.

use crate::task::{Stdin, Task};
use std::io::BufRead;
use std::time::Duration;

/// How a snippet and its arguments become an interpreter guest's arguments.
pub type CodeArgs<'a> = &'a dyn Fn(&str, &[String]) -> Vec<String>;

/// Parses one (trimmed, non-blank) line into its task; the error is the message the worker
/// answers with (after the line number).
pub fn parse(text: &str, base: &Task, code_args: Option<CodeArgs<'_>>) -> Result<Task, String> {
    serde_json::from_str::<Request>(text)
        .map_err(|e| format!("invalid request: {e}"))?
        .into_task(base, code_args)
}

/// One request line.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: serde_json::Map<String, serde_json::Value>,
    stdin: Option<String>,
    stdin_base64: Option<String>,
    timeout_ms: Option<u64>,
    max_memory: Option<usize>,
    fuel: Option<u64>,
    max_write: Option<u64>,
    max_files: Option<u64>,
    invoke: Option<String>,
    arguments: Option<serde_json::Value>,
    code: Option<String>,
}

impl Request {
    /// The task: `base` (the worker's flags), then this line's fields. `code_args` turns a
    /// snippet (`code`) and the line's `args` into the interpreter's arguments (`None`: the
    /// worker serves a module, and `code` is refused).
    pub fn into_task(self, base: &Task, code_args: Option<CodeArgs<'_>>) -> Result<Task, String> {
        let mut task = base.clone();
        task.args = match (self.code, code_args) {
            (Some(code), Some(code_args)) => code_args(&code, &self.args),
            (Some(_), None) => return Err("`code` needs a worker started with --lang".into()),
            (None, _) => self.args,
        };
        if let Some(name) = self.invoke {
            task.invoke = Some(name);
        }
        if self.arguments.is_some() && task.invoke.is_none() {
            return Err("`arguments` needs `invoke`, the component export to call".into());
        }
        task.arguments = self.arguments;
        for (k, v) in self.env {
            match v {
                serde_json::Value::String(v) => task.env.push((k, v)),
                other => return Err(format!("env value for `{k}` must be a string, not {other}")),
            }
        }
        task.stdin = match (self.stdin, self.stdin_base64) {
            (Some(_), Some(_)) => return Err("give `stdin` or `stdin_base64`, not both".into()),
            (Some(text), None) => Stdin::Bytes(text.into_bytes()),
            (None, Some(b64)) => {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| format!("invalid stdin_base64: {e}"))?;
                Stdin::Bytes(bytes)
            }
            (None, None) => Stdin::Empty,
        };
        if let Some(bytes) = self.max_memory {
            task.max_memory = Some(bytes);
        }
        if let Some(fuel) = self.fuel {
            task.fuel = Some(fuel);
        }
        if let Some(bytes) = self.max_write {
            task.max_write = Some(bytes);
        }
        if let Some(files) = self.max_files {
            task.max_files = Some(files);
        }
        match self.timeout_ms {
            Some(0) => return Err("timeout_ms must be positive".into()),
            Some(ms) => task.timeout = Some(Duration::from_millis(ms)),
            None => {}
        }
        // NUL bytes, bad env names, a timeout past the maximum: refused here, with the line.
        task.validate().map_err(|e| format!("invalid task: {e}"))?;
        Ok(task)
    }
}

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// End of input, no line.
    End,
    /// A line, in the buffer (without its newline).
    Read,
    /// A line of this many bytes, over the limit: read to its end and dropped.
    TooLong(usize),
}

/// Reads one line into `line` (cleared first, newline dropped), keeping at most `max` bytes:
/// the rest of a longer line is read and discarded, so memory stays bounded by `max`.
pub fn read_line(
    input: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    line.clear();
    let mut len = 0usize;
    let mut any = false;
    loop {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(match (any, len > max) {
                (false, _) => Line::End,
                (true, false) => Line::Read,
                (true, true) => Line::TooLong(len),
            });
        }
        any = true;
        let newline = buf.iter().position(|&b| b == b'\n');
        let chunk = &buf[..newline.unwrap_or(buf.len())];
        len = len.saturating_add(chunk.len());
        if len <= max {
            line.extend_from_slice(chunk);
        } else if line.capacity() > 0 {
            // Over the limit: give back what the line had taken.
            *line = Vec::new();
        }
        let used = newline.map_or(buf.len(), |i| i + 1);
        input.consume(used);
        if newline.is_some() {
            return Ok(if len > max { Line::TooLong(len) } else { Line::Read });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::MAX_TIMEOUT;
    use proptest::prelude::*;

    fn base() -> Task {
        Task {
            timeout: Some(Duration::from_secs(60)),
            max_memory: Some(1 << 30),
            ..Task::default()
        }
    }

    /// A line's fields, each present or not.
    #[derive(Debug, Clone)]
    struct Fields {
        args: Vec<String>,
        env: Vec<(String, String)>,
        stdin: Option<Vec<u8>>,
        as_base64: bool,
        timeout_ms: Option<u64>,
        max_memory: Option<usize>,
        fuel: Option<u64>,
        invoke: Option<String>,
    }

    fn fields() -> impl Strategy<Value = Fields> {
        (
            prop::collection::vec(any::<String>(), 0..4),
            prop::collection::btree_map("[^=\u{0}]{1,8}", any::<String>(), 0..4),
            proptest::option::of(prop::collection::vec(any::<u8>(), 0..64)),
            any::<bool>(),
            proptest::option::of(prop_oneof![
                Just(0u64),
                1u64..=MAX_TIMEOUT.as_millis() as u64 + 10,
                any::<u64>()
            ]),
            proptest::option::of(any::<usize>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of("[a-z_]{1,8}"),
        )
            .prop_map(
                |(args, env, stdin, as_base64, timeout_ms, max_memory, fuel, invoke)| Fields {
                    args,
                    env: env.into_iter().collect(),
                    stdin,
                    as_base64,
                    timeout_ms,
                    max_memory,
                    fuel,
                    invoke,
                },
            )
    }

    fn line(f: &Fields) -> String {
        use base64::Engine as _;
        let mut v = serde_json::json!({ "args": f.args });
        let env: serde_json::Map<String, serde_json::Value> =
            f.env.iter().map(|(k, x)| (k.clone(), serde_json::Value::String(x.clone()))).collect();
        v["env"] = serde_json::Value::Object(env);
        match (&f.stdin, f.as_base64) {
            (Some(b), true) => {
                v["stdin_base64"] = base64::engine::general_purpose::STANDARD.encode(b).into()
            }
            (Some(b), false) => v["stdin"] = String::from_utf8_lossy(b).into_owned().into(),
            (None, _) => {}
        }
        if let Some(ms) = f.timeout_ms {
            v["timeout_ms"] = ms.into();
        }
        if let Some(m) = f.max_memory {
            v["max_memory"] = m.into();
        }
        if let Some(x) = f.fuel {
            v["fuel"] = x.into();
        }
        if let Some(i) = &f.invoke {
            v["invoke"] = i.clone().into();
        }
        v.to_string()
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in any::<String>(), json in r#"\{("[a-z_]{1,12}": ?(-?[0-9]{1,25}|"[^"]{0,8}"|\[\]|\{\}|null|true),? ?){0,4}\}"#) {
            for t in [&text, &json] {
                if let Ok(task) = parse(t, &base(), None) {
                    prop_assert!(task.validate().is_ok());
                }
            }
        }

        /// A line becomes exactly the task it describes, or is refused for what makes it
        /// invalid (a NUL byte, a zero or too long timeout).
        #[test]
        fn lines_become_their_tasks(f in fields()) {
            let got = parse(&line(&f), &base(), None);
            let nul = f.args.iter().any(|a| a.contains('\0'))
                || f.env.iter().any(|(_, v)| v.contains('\0'));
            let bad_timeout = f.timeout_ms.is_some_and(|ms| ms == 0 || Duration::from_millis(ms) > MAX_TIMEOUT);
            if nul || bad_timeout {
                prop_assert!(got.is_err(), "accepted {:?}", f);
                return Ok(());
            }
            let task = got.map_err(TestCaseError::fail)?;
            prop_assert_eq!(&task.args, &f.args);
            prop_assert_eq!(&task.env, &f.env);
            let stdin = match (&f.stdin, f.as_base64) {
                (Some(b), true) => Stdin::Bytes(b.clone()),
                (Some(b), false) => Stdin::Bytes(String::from_utf8_lossy(b).into_owned().into_bytes()),
                (None, _) => Stdin::Empty,
            };
            prop_assert_eq!(task.stdin, stdin);
            prop_assert_eq!(task.timeout, Some(f.timeout_ms.map_or(Duration::from_secs(60), Duration::from_millis)));
            prop_assert_eq!(task.max_memory, Some(f.max_memory.unwrap_or(1 << 30)));
            prop_assert_eq!(task.fuel, f.fuel);
            prop_assert_eq!(task.invoke, f.invoke);
        }

        /// The bounded reader: lines come back whole (under the limit) or are counted and
        /// dropped (over it), and nothing is lost or merged across lines.
        #[test]
        fn read_line_splits_and_bounds(lines in prop::collection::vec("[^\n]{0,40}", 0..6), max in 0usize..48, cap in 1usize..16) {
            let input = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
            let mut r = std::io::BufReader::with_capacity(cap, input.as_bytes());
            let mut buf = Vec::new();
            for l in &lines {
                match read_line(&mut r, &mut buf, max).map_err(|e| TestCaseError::fail(e.to_string()))? {
                    Line::Read => { prop_assert!(l.len() <= max); prop_assert_eq!(&buf, l.as_bytes()); }
                    Line::TooLong(n) => { prop_assert!(l.len() > max); prop_assert_eq!(n, l.len()); }
                    Line::End => prop_assert!(false, "end before {:?}", l),
                }
            }
            prop_assert_eq!(read_line(&mut r, &mut buf, max).ok(), Some(Line::End));
        }
    }
}
