//! The one structured result of a task, the same in the library, `run --json` and `worker`.

use base64::Engine as _;
use serde::ser::{Serialize, SerializeMap, Serializer};

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// `_start` returned (code 0) or the guest called `proc_exit`.
    Exited,
    /// The guest trapped (`unreachable`, out-of-bounds access, stack overflow, …).
    Trapped,
    /// The wall-clock deadline passed.
    Timeout,
    /// The instruction budget ran out.
    FuelExhausted,
    /// The guest tried to grow memory past its cap.
    MemoryLimit,
    /// The task passed its budget of bytes written to files or of files created.
    WriteLimit,
    /// The seccomp filter stopped a forbidden system call.
    SandboxViolation,
    /// The sandbox process was killed by a signal the runtime did not send for a deadline.
    Killed,
    /// The runtime itself failed while running the task.
    InternalError,
}

impl Status {
    /// The `snake_case` name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Exited => "exited",
            Status::Trapped => "trapped",
            Status::Timeout => "timeout",
            Status::FuelExhausted => "fuel_exhausted",
            Status::MemoryLimit => "memory_limit",
            Status::WriteLimit => "write_limit",
            Status::SandboxViolation => "sandbox_violation",
            Status::Killed => "killed",
            Status::InternalError => "internal_error",
        }
    }
}

/// Time spent in each phase, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Timings {
    /// The `fork()` call, seen by the zygote.
    pub fork: u64,
    /// In the child, from fork to `_start`: hygiene and the per-task WASI context.
    pub setup: u64,
    /// The guest's `_start`, measured in the child.
    pub run: u64,
    /// From the task being handed to the zygote to the outcome in hand: report and output
    /// collected (a child that reported is reaped afterwards, off the task's path).
    pub total: u64,
}

/// Captured bytes of one output stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The bytes kept (at most the task's cap).
    pub bytes: Vec<u8>,
    /// Whether bytes past the cap were discarded.
    pub truncated: bool,
}

/// The result of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// How the task ended.
    pub status: Status,
    /// The guest's exit code, for [`Status::Exited`].
    pub exit_code: Option<i32>,
    /// Captured stdout (empty when output was inherited).
    pub stdout: Captured,
    /// Captured stderr (empty when output was inherited).
    pub stderr: Captured,
    /// The trap or error message, for every status but `exited`.
    pub message: Option<String>,
    /// Phase timings.
    pub timings_us: Timings,
    /// Peak resident memory of the sandbox process (`ru_maxrss`), including pages it shares
    /// copy-on-write with the zygote.
    pub peak_memory_bytes: u64,
    /// Fuel the guest consumed, when the task had a fuel budget.
    pub fuel_consumed: Option<u64>,
    /// Files the task created or changed in its scratch directory, in name order (with
    /// [`Task::files_out`](crate::Task::files_out); see `src/scratch.rs`).
    pub files: Vec<crate::scratch::ScratchFile>,
    /// Whether files were left out of [`files`](Self::files) (past the task's bounds).
    pub files_truncated: bool,
}

impl Outcome {
    /// The result of a call made with JSON arguments ([`Task::call_json`]): the JSON value
    /// the sandbox wrote as its one line of stdout, if the call returned.
    ///
    /// [`Task::call_json`]: crate::Task::call_json
    pub fn json_result(&self) -> Option<serde_json::Value> {
        if self.status != Status::Exited || self.stdout.truncated {
            return None;
        }
        serde_json::from_slice(&self.stdout.bytes).ok()
    }

    /// Stdout as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout.bytes).into_owned()
    }

    /// Stderr as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.bytes).into_owned()
    }
}

/// JSON form. `stdout` and `stderr` are UTF-8 text; when a stream is not valid UTF-8, the text
/// has U+FFFD replacements and the exact bytes are in `stdout_base64` / `stderr_base64`.
impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("status", &self.status)?;
        m.serialize_entry("exit_code", &self.exit_code)?;
        for (key, stream) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            match std::str::from_utf8(&stream.bytes) {
                Ok(text) => m.serialize_entry(key, text)?,
                Err(_) => {
                    m.serialize_entry(key, &String::from_utf8_lossy(&stream.bytes))?;
                    let b64 = base64::engine::general_purpose::STANDARD.encode(&stream.bytes);
                    m.serialize_entry(&format!("{key}_base64"), &b64)?;
                }
            }
            m.serialize_entry(&format!("{key}_truncated"), &stream.truncated)?;
        }
        m.serialize_entry("message", &self.message)?;
        m.serialize_entry("timings_us", &self.timings_us)?;
        m.serialize_entry("peak_memory_bytes", &self.peak_memory_bytes)?;
        if let Some(f) = self.fuel_consumed {
            m.serialize_entry("fuel_consumed", &f)?;
        }
        if !self.files.is_empty() || self.files_truncated {
            let files: Vec<FileJson> = self.files.iter().map(FileJson::of).collect();
            m.serialize_entry("files", &files)?;
            m.serialize_entry("files_truncated", &self.files_truncated)?;
        }
        m.end()
    }
}

/// A returned file in JSON: `{"name", "size", "text"}` when its bytes are UTF-8, else
/// `{"name", "size", "base64"}`.
#[derive(serde::Serialize, serde::Deserialize)]
struct FileJson {
    name: String,
    #[serde(default)]
    size: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
}

impl FileJson {
    fn of(f: &crate::scratch::ScratchFile) -> Self {
        let (text, base64) = match std::str::from_utf8(&f.bytes) {
            Ok(t) => (Some(t.to_string()), None),
            Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(&f.bytes))),
        };
        FileJson { name: f.name.clone(), size: f.bytes.len(), text, base64 }
    }
}

/// The JSON form read back: what [`Serialize`] writes.
#[derive(serde::Deserialize)]
struct OutcomeJson {
    status: Status,
    exit_code: Option<i32>,
    #[serde(default)]
    stdout: String,
    stdout_base64: Option<String>,
    #[serde(default)]
    stdout_truncated: bool,
    #[serde(default)]
    stderr: String,
    stderr_base64: Option<String>,
    #[serde(default)]
    stderr_truncated: bool,
    message: Option<String>,
    #[serde(default)]
    timings_us: Timings,
    #[serde(default)]
    peak_memory_bytes: u64,
    fuel_consumed: Option<u64>,
    #[serde(default)]
    files: Vec<FileJson>,
    #[serde(default)]
    files_truncated: bool,
}

impl<'de> serde::Deserialize<'de> for Outcome {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let j = OutcomeJson::deserialize(d)?;
        let stream = |text: String, b64: Option<String>, truncated| -> Result<Captured, D::Error> {
            let bytes = match b64 {
                Some(b) => base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))?,
                None => text.into_bytes(),
            };
            Ok(Captured { bytes, truncated })
        };
        let mut files = Vec::with_capacity(j.files.len());
        for f in j.files {
            let bytes = match (f.text, f.base64) {
                (_, Some(b)) => base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))?,
                (Some(t), None) => t.into_bytes(),
                (None, None) => Vec::new(),
            };
            files.push(crate::scratch::ScratchFile { name: f.name, bytes });
        }
        Ok(Outcome {
            files,
            files_truncated: j.files_truncated,
            status: j.status,
            exit_code: j.exit_code,
            stdout: stream(j.stdout, j.stdout_base64, j.stdout_truncated)?,
            stderr: stream(j.stderr, j.stderr_base64, j.stderr_truncated)?,
            message: j.message,
            timings_us: j.timings_us,
            peak_memory_bytes: j.peak_memory_bytes,
            fuel_consumed: j.fuel_consumed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_exact_bytes() {
        let o = Outcome {
            status: Status::Exited,
            exit_code: Some(3),
            stdout: Captured { bytes: b"hi\n".to_vec(), truncated: false },
            stderr: Captured { bytes: vec![0xff, 0xfe, b'x'], truncated: true },
            message: None,
            timings_us: Timings { fork: 1, setup: 2, run: 3, total: 4 },
            peak_memory_bytes: 5,
            fuel_consumed: Some(6),
            files: vec![
                crate::scratch::ScratchFile { name: "a/b.txt".into(), bytes: b"text".to_vec() },
                crate::scratch::ScratchFile { name: "c".into(), bytes: vec![0xff, 0] },
            ],
            files_truncated: true,
        };
        let text = serde_json::to_string(&o).unwrap();
        assert!(text.contains("stderr_base64"), "{text}");
        assert_eq!(serde_json::from_str::<Outcome>(&text).unwrap(), o);
    }
}
