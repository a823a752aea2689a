//! A task: what one sandboxed run of a template gets — arguments, environment, stdin, granted
//! directories — and how its output is handled.

use std::path::PathBuf;
use std::time::Duration;

/// Where the guest's stdin comes from.
#[derive(Debug, Clone, Default)]
pub enum Stdin {
    /// Closed: reads see end of file.
    #[default]
    Empty,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// The caller's own stdin (the `run` command's pass-through).
    Inherit,
}

/// What happens to the guest's stdout and stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl Default for Output {
    fn default() -> Self {
        Output::Capture { max_bytes: DEFAULT_MAX_OUTPUT }
    }
}

/// A host directory made visible to the guest at a guest path.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, Default)]
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
}

impl Task {
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

    /// Bounds the files, directories and links the task may create.
    pub fn max_files(mut self, files: u64) -> Self {
        self.max_files = Some(files);
        self
    }
}
