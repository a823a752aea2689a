//! A task: what one sandboxed run of a template gets — arguments, environment, stdin, granted
//! directories — and how its output is handled.

use std::path::PathBuf;
use std::time::Duration;

/// Where the guest's stdin comes from. JSON: `"empty"`, `"inherit"`, or
/// `{"bytes": "<base64>"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stdin {
    /// Closed: reads see end of file.
    #[default]
    Empty,
    /// These bytes, then end of file.
    Bytes(#[serde(with = "base64_bytes")] Vec<u8>),
    /// The caller's own stdin (the `run` command's pass-through).
    Inherit,
}

/// What happens to the guest's stdout and stderr. JSON: `{"capture": {"max_bytes": N}}` or
/// `"inherit"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// Captured into the [`Outcome`](crate::Outcome), at most this many bytes per stream; the
    /// excess is read and discarded, and the stream is flagged truncated.
    Capture { max_bytes: usize },
    /// Relayed to the caller's own stdout and stderr as it arrives. The sandbox writes to
    /// pipes the zygote reads, never to the caller's descriptors themselves: the sandbox's
    /// file-size rlimit (meant for files in grants) cannot cut the caller's output short. If
    /// the caller's stream closes, the guest's next write to it fails with EPIPE.
    Inherit,
}

/// Default cap on captured output per stream: 1 MiB.
pub const DEFAULT_MAX_OUTPUT: usize = 1 << 20;
/// Default cap on a guest's linear memory (used by the command line): 1 GiB.
pub const DEFAULT_MAX_MEMORY: usize = 1 << 30;
/// Default wall-clock deadline (used by the command line): 60 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest deadline a task may have: 365 days. A longer one is refused rather than converted
/// (to microseconds, to an `Instant`, to a CPU-time limit) where it could overflow; a task
/// that must never time out has no deadline at all.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Largest request that travels to a sandbox in one piece: a `worker` request line, and each
/// part (header, stdin) of the frame that hands a task to a pre-forked sandbox. 64 MiB.
pub const MAX_REQUEST_BYTES: usize = 64 << 20;

impl Default for Output {
    fn default() -> Self {
        Output::Capture { max_bytes: DEFAULT_MAX_OUTPUT }
    }
}

/// A host directory made visible to the guest at a guest path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it (e.g. `/data` or `.`).
    pub guest: String,
    /// Whether the guest may only read.
    pub read_only: bool,
}

impl DirGrant {
    /// Parses `HOST[::GUEST]` the way `wasmtime run --dir` does: without `::GUEST`, the guest
    /// path is the host path as written.
    pub fn parse(spec: &str, read_only: bool) -> Result<Self, String> {
        let (host, guest) = match spec.split_once("::") {
            Some((h, g)) => (h, g),
            None => (spec, spec),
        };
        if host.is_empty() || guest.is_empty() {
            return Err(format!("invalid directory grant `{spec}`: expected HOST[::GUEST]"));
        }
        Ok(Self { host: PathBuf::from(host), guest: guest.to_string(), read_only })
    }
}

/// One run of a template.
///
/// Its JSON form (serde) has every field optional: the durations in milliseconds
/// (`timeout_ms`), stdin as above, the environment as `[["K", "V"], …]` (order kept).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Task {
    /// `argv[0]`; defaults to the template's name.
    pub argv0: Option<String>,
    /// Program arguments after `argv[0]`.
    pub args: Vec<String>,
    /// Environment, in order.
    pub env: Vec<(String, String)>,
    /// Standard input.
    pub stdin: Stdin,
    /// Standard output and error.
    pub output: Output,
    /// Granted directories.
    pub dirs: Vec<DirGrant>,
    /// Wall-clock deadline for the whole task, counted from [`Zygote::run`](crate::Zygote::run).
    /// Running Wasm is interrupted at the deadline (partial output kept); a guest blocked in a
    /// host call is killed a short grace period later. Either way the status is `timeout`.
    #[serde(rename = "timeout_ms", with = "millis")]
    pub timeout: Option<Duration>,
    /// Cap on the guest's linear memory, in bytes; growing past it fails, and a guest that
    /// then traps ends with status `memory_limit`.
    pub max_memory: Option<usize>,
    /// Instruction budget (the template must meter fuel, see
    /// [`Config::fuel`](crate::Config::fuel)); running out ends the task with
    /// `fuel_exhausted`.
    pub fuel: Option<u64>,
    /// Budget of bytes written to regular files (in granted directories; stdout and stderr
    /// are not files and are not charged), counted at the WASI layer, overwrites included. A
    /// write that would pass it ends the task with `write_limit`.
    pub max_write: Option<u64>,
    /// Budget of files, directories and links the task may create. Creating one more ends the
    /// task with `write_limit`.
    pub max_files: Option<u64>,
    /// The export to call instead of `_start`, as `wasmtime run --invoke` does: its
    /// parameters are parsed from the leading [`args`](Self::args) (which are the guest's
    /// `argv` too), and its results printed to stdout, one per line, as Wasmtime prints them.
    /// A reactor module (no `_start`) needs one.
    ///
    /// For a component it is a call in WAVE, as `wasmtime run --invoke` takes it
    /// (`add(1, 2)`; a bare name calls with no arguments) and the results are printed in WAVE
    /// on one line — or, with [`arguments`](Self::arguments), just the export's name.
    pub invoke: Option<String>,
    /// Files put in the task's scratch directory before the guest starts (the template's
    /// [`Isolation::scratch`](crate::Isolation::scratch) must be on; see
    /// [`ScratchFile`](crate::ScratchFile) for the names allowed).
    pub files: Vec<crate::scratch::ScratchFile>,
    /// Whether, and how much of, what the task leaves in its scratch directory comes back in
    /// its outcome ([`Outcome::files`](crate::Outcome::files)).
    pub files_out: Option<crate::scratch::FilesOut>,
    /// A component export's arguments as JSON — an object by parameter name, or an array in
    /// order, shaped as the export's input schema (`zeroboot-wasm inspect`) describes — for
    /// the export [`invoke`](Self::invoke) names. Its result is then written to stdout as one
    /// line of JSON (the output schema's shape) instead of WAVE.
    pub arguments: Option<serde_json::Value>,
}

/// `Option<Duration>` as whole milliseconds (a finer duration is rounded up, so a deadline
/// never shrinks to zero).
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => {
                let ms = d.as_micros().div_ceil(1000);
                s.serialize_some(&u64::try_from(ms).unwrap_or(u64::MAX))
            }
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// Bytes as a base64 string.
pub(crate) mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

/// Why a task was refused before it started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// `argv[0]` holds a NUL byte, which the guest's C-string view would cut short.
    #[error("argv[0] contains a NUL byte")]
    NulInArgv0,
    /// An argument holds a NUL byte.
    #[error("argument {index} contains a NUL byte")]
    NulInArg { index: usize },
    /// An environment variable has an empty name.
    #[error("an environment variable has an empty name")]
    EmptyEnvName,
    /// An environment variable's name holds `=` (the guest would split it elsewhere).
    #[error("environment variable name {name:?} contains `=`")]
    EqualsInEnvName { name: String },
    /// An environment variable's name or value holds a NUL byte.
    #[error("environment variable {name:?} contains a NUL byte")]
    NulInEnv { name: String },
    /// A part of the task (its stdin, or its args, env and directories together) is larger
    /// than [`MAX_REQUEST_BYTES`], the most a sandbox is handed in one piece.
    #[error("task {part} of {len} bytes exceeds the limit of {max} bytes", max = MAX_REQUEST_BYTES)]
    TooLarge { part: &'static str, len: usize },
    /// The entry point cannot be called: no `_start` and no `invoke`, no such export, or
    /// arguments that do not fit its parameters.
    #[error(transparent)]
    Entry(#[from] crate::entry::EntryError),
    /// A file of [`Task::files`] has a name that is not a plain relative path.
    #[error("{0}")]
    BadFileName(String),
    /// The task has files, but its template has no scratch directory.
    #[error("this template has no scratch directory for files (see Isolation::scratch)")]
    NoScratch,
    /// Streamed output was asked for a task whose output is inherited.
    #[error("a task whose output is streamed must capture it, not inherit it")]
    StreamInherited,
    /// The deadline is longer than [`MAX_TIMEOUT`].
    #[error("timeout of {ms} ms is longer than the maximum of {max_ms} ms (365 days)", max_ms = MAX_TIMEOUT.as_millis())]
    TimeoutTooLong { ms: u128 },
}

impl Task {
    /// When the task's time is up, counted from `started` (`None` without a timeout).
    pub(crate) fn deadline_from(
        &self,
        started: std::time::Instant,
    ) -> Result<Option<std::time::Instant>, TaskError> {
        match self.timeout {
            None => Ok(None),
            Some(t) => started
                .checked_add(t)
                .map(Some)
                .ok_or(TaskError::TimeoutTooLong { ms: t.as_millis() }),
        }
    }

    /// Checks what would otherwise be altered or overflow on the way to the guest: NUL bytes
    /// in `argv[0]`, arguments or environment, `=` in or empty environment names, a deadline
    /// past [`MAX_TIMEOUT`]. [`Zygote::run`](crate::Zygote::run) calls it before forking.
    pub fn validate(&self) -> Result<(), TaskError> {
        if self.argv0.as_deref().is_some_and(|a| a.contains('\0')) {
            return Err(TaskError::NulInArgv0);
        }
        if let Some(index) = self.args.iter().position(|a| a.contains('\0')) {
            return Err(TaskError::NulInArg { index });
        }
        for (name, value) in &self.env {
            if name.is_empty() {
                return Err(TaskError::EmptyEnvName);
            }
            if name.contains('\0') || value.contains('\0') {
                return Err(TaskError::NulInEnv { name: name.clone() });
            }
            if name.contains('=') {
                return Err(TaskError::EqualsInEnvName { name: name.clone() });
            }
        }
        for f in &self.files {
            crate::scratch::check_name(&f.name).map_err(TaskError::BadFileName)?;
        }
        if let Some(t) = self.timeout
            && t > MAX_TIMEOUT
        {
            return Err(TaskError::TimeoutTooLong { ms: t.as_millis() });
        }
        Ok(())
    }

    /// A task with no arguments, empty environment and stdin, captured output.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the program arguments (after `argv[0]`).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets stdin.
    pub fn stdin(mut self, stdin: Stdin) -> Self {
        self.stdin = stdin;
        self
    }

    /// Sets how output is handled.
    pub fn output(mut self, output: Output) -> Self {
        self.output = output;
        self
    }

    /// Grants a directory.
    pub fn dir(mut self, grant: DirGrant) -> Self {
        self.dirs.push(grant);
        self
    }

    /// Sets the wall-clock deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Caps linear memory.
    pub fn max_memory(mut self, bytes: usize) -> Self {
        self.max_memory = Some(bytes);
        self
    }

    /// Sets the fuel budget.
    pub fn fuel(mut self, fuel: u64) -> Self {
        self.fuel = Some(fuel);
        self
    }

    /// Bounds the bytes the task may write to files.
    pub fn max_write(mut self, bytes: u64) -> Self {
        self.max_write = Some(bytes);
        self
    }

    /// Calls the export `name` instead of `_start` (see [`Task::invoke`](Self::invoke)).
    pub fn invoke(mut self, name: impl Into<String>) -> Self {
        self.invoke = Some(name.into());
        self
    }

    /// Calls the component export `name` with JSON `arguments`; its result comes back as
    /// JSON on stdout (see [`Task::arguments`](Self::arguments)).
    pub fn call_json(mut self, name: impl Into<String>, arguments: serde_json::Value) -> Self {
        self.invoke = Some(name.into());
        self.arguments = Some(arguments);
        self
    }

    /// Bounds the files, directories and links the task may create.
    pub fn max_files(mut self, files: u64) -> Self {
        self.max_files = Some(files);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_refuses_what_would_be_altered() {
        assert_eq!(Task::new().args(["a", "b"]).env("K", "V=W").validate(), Ok(()));
        assert_eq!(
            Task::new().args(["ok", "a\0b"]).validate(),
            Err(TaskError::NulInArg { index: 1 })
        );
        let argv0 = Task { argv0: Some("x\0".into()), ..Task::new() };
        assert_eq!(argv0.validate(), Err(TaskError::NulInArgv0));
        assert_eq!(Task::new().env("", "v").validate(), Err(TaskError::EmptyEnvName));
        assert_eq!(
            Task::new().env("A=B", "v").validate(),
            Err(TaskError::EqualsInEnvName { name: "A=B".into() })
        );
        assert_eq!(
            Task::new().env("K", "v\0w").validate(),
            Err(TaskError::NulInEnv { name: "K".into() })
        );
        assert_eq!(Task::new().timeout(MAX_TIMEOUT).validate(), Ok(()));
        assert!(matches!(
            Task::new().timeout(MAX_TIMEOUT + Duration::from_millis(1)).validate(),
            Err(TaskError::TimeoutTooLong { .. })
        ));
        assert!(Task::new().timeout(Duration::MAX).validate().is_err());
    }

    #[test]
    fn json_round_trip() {
        let task = Task::new()
            .args(["a", "b"])
            .env("K", "V")
            .stdin(Stdin::Bytes(vec![0, 159, 146, 150]))
            .timeout(Duration::from_millis(1500))
            .max_memory(1 << 20)
            .invoke("add");
        let text = serde_json::to_string(&task).unwrap();
        assert!(text.contains(r#""timeout_ms":1500"#), "{text}");
        assert!(text.contains(r#""stdin":{"bytes":"AJ+Slg=="}"#), "{text}");
        assert_eq!(serde_json::from_str::<Task>(&text).unwrap(), task);
        let partial: Task = serde_json::from_str(r#"{"args": ["x"], "stdin": "inherit"}"#).unwrap();
        assert_eq!(partial.args, ["x"]);
        assert_eq!(partial.stdin, Stdin::Inherit);
        assert_eq!(partial.output, Output::default());
        assert!(serde_json::from_str::<Task>(r#"{"argz": []}"#).is_err(), "unknown field");
        assert!(serde_json::from_str::<Task>(r#"{"stdin": {"bytes": "!!"}}"#).is_err());
    }
}
