//! The host ⇄ zygote protocol: typed, versioned messages, one per `SOCK_SEQPACKET` packet
//! (so a message is never split or merged), JSON-encoded, with descriptors attached by
//! `SCM_RIGHTS`. It knows nothing of Wasmtime or of the sandbox child.
//!
//! A task's data never travels here. The zygote forks (or takes from its pool) a sandbox and
//! hands the host the sandbox's pipes ([`Reply::Started`]); the host writes the task (args,
//! env, stdin) straight into the sandbox and reads its output and report straight from it.
//! The zygote — whose memory every later sandbox inherits — never holds a task's input or
//! output (issue: task data left in later sandboxes).
//!
//! Conversation: `Hello` ⇄ `Hello` (versions must match), `Load` (+ the module's fd) →
//! `Ready` | `LoadFailed`; then any number of `Run` → `Started` (+ fds) | `RunFailed`, and
//! later `Exited` for each started run, in whatever order sandboxes finish; `Cancel`, `Stats`
//! → `Stats`, `Shutdown` at any time. A malformed or oversized message ends the connection.
//!
//! The pool belongs to the host. The zygote forks pool sandboxes ahead of time and hands each
//! to the host at once (`Pooled` + its fds). To run a task in one, the host sends `Claim` and
//! writes the task into it without waiting for an answer — no round trip on a task's path —
//! unless the task needs a different memory limit (`set_limit`), which the zygote applies and
//! acknowledges with `Started` (no fds) before the host writes. A claimed sandbox ends with
//! `Exited` like any other; one that died before it was claimed, with `Retired`; a claim of a
//! sandbox that is gone, with `RunFailed`. `Run` forks a sandbox on arrival (the host's pool
//! is empty, or the task inherits the caller's stdin).

use std::path::PathBuf;

/// Protocol version; both sides must speak the same one.
pub const VERSION: u32 = 4;

/// Largest message either side sends or accepts, in bytes. Messages carry no task data, so
/// this is generous; a bigger packet is a protocol error.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// The environment variable that makes a re-executed binary a zygote (its value is the
/// protocol version); its stdin is then the socket.
pub const ZYGOTE_ENV: &str = "ZEROBOOT_WASM_ZYGOTE";

/// A directory the host wants sandboxes to be able to be granted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GrantSpec {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// A granted directory as the zygote mounted it (after confinement).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountedGrantInfo {
    pub host: PathBuf,
    pub canonical: PathBuf,
    pub inside: String,
    pub read_only: bool,
}

/// How the zygote confines itself and its sandboxes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IsolationSpec {
    pub namespaces: bool,
    pub seccomp: crate::seccomp::SeccompMode,
    pub max_file_size: u64,
    pub grants: Vec<GrantSpec>,
    /// Limits on the module's own code while the zygote instantiates it.
    pub init: InitSpec,
    /// Each sandbox's scratch tmpfs size (see `Isolation::scratch`).
    #[serde(default)]
    pub scratch: Option<u64>,
}

/// Limits on instantiation (the module's `start` function, initialisers, declared memories).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InitSpec {
    pub timeout_us: Option<u64>,
    pub max_memory: Option<usize>,
    pub fuel: Option<u64>,
}

/// Bounds on the compiler process the zygote forks for a module not in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompileSpec {
    pub timeout_us: u64,
    pub max_memory: u64,
}

/// A duration in whole microseconds; durations past `u64::MAX` µs (half a million years)
/// saturate rather than wrap.
pub fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Everything the zygote needs to build its template; the module itself comes as a
/// descriptor with the message.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LoadRequest {
    /// Name for messages and `argv[0]`.
    pub name: String,
    /// Compile with fuel metering.
    pub fuel: bool,
    /// Compile cache directory (`None`: compile every time).
    pub cache_dir: Option<PathBuf>,
    /// How the module is compiled when not cached: in a bounded child process (`Some`), or
    /// in the zygote process itself (`None`).
    pub compile: Option<CompileSpec>,
    pub isolation: IsolationSpec,
    /// Sandboxes kept forked ahead of time.
    pub pool: usize,
    /// What the zygote runs once before its first fork.
    #[serde(default)]
    pub warm_up: crate::entry::WarmUp,
    /// Back the compiled code and warm memory with huge pages (see
    /// [`Config::huge_pages`](crate::Config::huge_pages)): for a zygote that forks many
    /// sandboxes, not for a one-shot run.
    #[serde(default)]
    pub huge_pages: bool,
}

/// Whose fault a failed load was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadFailure {
    /// The module is not a valid, loadable WASI module (or is hostile at instantiation).
    BadModule,
    /// A file or directory named by the caller is missing or unreadable.
    MissingInput,
    /// The host or the zygote itself failed.
    Internal,
}

/// A claimed pool sandbox's new memory limit: for a linear-memory cap of `max_memory`
/// (`None`: no cap). A struct, not an `Option<Option<u64>>`: JSON would write both "no cap"
/// and "no change" as `null` (a claim lifting a cap was read as no change, and never
/// acknowledged; found by fuzzing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SetLimit {
    pub max_memory: Option<u64>,
}

/// Host → zygote.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    Hello {
        version: u32,
    },
    /// Build the template (fd: the module, readable from offset 0).
    Load(LoadRequest),
    /// Start a sandbox for run `id` (fd, when `inherit_stdin`: the sandbox's stdin).
    Run {
        id: u64,
        /// The task's deadline; the zygote kills the sandbox at deadline + grace.
        timeout_us: Option<u64>,
        /// Bounds the sandbox's host-side memory (memory cgroup) with its linear-memory cap.
        max_memory: Option<u64>,
        inherit_stdin: bool,
    },
    /// Kill run `id`'s sandbox (its `Exited` still follows).
    /// Run `id` in pooled sandbox `sandbox`; the host writes the task into it. With
    /// `set_limit`, the zygote first sets the sandbox's memory limit for this linear-memory cap
    /// (`max_memory: None`: no cap) and answers `Started`; without, it answers nothing until
    /// `Exited`.
    Claim {
        id: u64,
        sandbox: u64,
        timeout_us: Option<u64>,
        #[serde(default)]
        set_limit: Option<SetLimit>,
    },
    Cancel {
        id: u64,
    },
    Stats,
    /// Kill every sandbox and exit.
    Shutdown,
}

/// Zygote → host.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Hello {
        version: u32,
        pid: i32,
    },
    Ready {
        meters_fuel: bool,
        grants: Vec<MountedGrantInfo>,
        namespaces: bool,
        /// What the module exports, so the host can check a task's entry point before
        /// starting a sandbox; `None` when the list is too long for a message (the sandbox
        /// then reports a bad entry point as its outcome).
        #[serde(default)]
        exports: Option<crate::entry::Exports>,
        /// Its sandboxes have a scratch directory (see `Zygote::has_scratch`).
        #[serde(default)]
        scratch: bool,
    },
    LoadFailed {
        message: String,
        kind: LoadFailure,
    },
    /// Run `id`'s sandbox exists. fds: task channel (write), report, stdout, stderr (read).
    Started {
        id: u64,
        /// Time the fork took (0 when the sandbox came from the pool).
        fork_us: u64,
    },
    RunFailed {
        id: u64,
        message: String,
    },
    /// Run `id`'s sandbox is gone (reaped).
    Exited {
        id: u64,
        /// Exit code, when it exited.
        code: Option<i32>,
        /// Signal, when it was killed.
        signal: Option<i32>,
        /// Peak resident set, bytes.
        peak_rss: u64,
        /// The zygote killed it at its deadline's backstop.
        timed_out: bool,
        /// The kernel's OOM killer killed it for its memory cgroup limit.
        oom_killed: bool,
        /// The limit in force, bytes, when `oom_killed`.
        memory_limit: Option<u64>,
    },
    Stats(crate::zygote::ZygoteStats),
    /// A pool sandbox for the host, with its four pipes attached (task channel, report,
    /// stdout, stderr); its memory limit is set for a linear-memory cap of `max_memory`.
    Pooled {
        sandbox: u64,
        max_memory: Option<u64>,
    },
    /// A pool sandbox died (or its channel was closed) before it was claimed.
    Retired {
        sandbox: u64,
    },
}

/// Encodes a message (serialising these plain types cannot fail).
pub(crate) fn encode<T: serde::Serialize>(message: &T) -> Vec<u8> {
    serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec())
}

/// Decodes a message, or says why it is malformed.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("malformed message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let r = Request::Run { id: 7, timeout_us: Some(5), max_memory: None, inherit_stdin: true };
        match decode::<Request>(&encode(&r)).unwrap() {
            Request::Run { id: 7, timeout_us: Some(5), max_memory: None, inherit_stdin: true } => {}
            other => panic!("got {other:?}"),
        }
    }

    #[test]
    fn a_claim_lifting_the_cap_is_not_a_claim_keeping_it() {
        for set_limit in
            [None, Some(SetLimit { max_memory: None }), Some(SetLimit { max_memory: Some(5) })]
        {
            let r = Request::Claim { id: 1, sandbox: 2, timeout_us: None, set_limit };
            match decode::<Request>(&encode(&r)).unwrap() {
                Request::Claim { set_limit: got, .. } => assert_eq!(got, set_limit),
                other => panic!("got {other:?}"),
            }
        }
    }

    #[test]
    fn garbage_and_unknown_types_are_errors() {
        assert!(decode::<Request>(b"{{").is_err());
        assert!(decode::<Request>(br#"{"type":"format_disk"}"#).is_err());
        assert!(decode::<Reply>(br#"{"type":"started"}"#).is_err(), "missing id");
    }
}
