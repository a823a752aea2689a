//! The library's error type: one variant per operation that can fail, the cause in `source`.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// A boxed error from Wasmtime (whose own error type does not implement `std::error::Error`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

pub(crate) fn boxed(e: wasmtime::Error) -> BoxError {
    e.into_boxed_dyn_error()
}

/// A Wasmtime error and its causes as one text, `outer: inner: innermost`, for errors that
/// cross a process boundary as bytes.
pub(crate) fn chain_text(e: &wasmtime::Error) -> String {
    format!("{e:#}")
}

/// Why a template could not be built or a task could not be started.
///
/// A task that starts and then fails (a trap, a non-zero exit, a kill) is not an `Error`: it is
/// an [`Outcome`](crate::Outcome) with its own status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The module file could not be read.
    #[error("cannot read module {path}")]
    ReadModule {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The bytes are neither a binary module (`\0asm`) nor WebAssembly text.
    #[error("{name} is not a WebAssembly module (no \\0asm header, and not WebAssembly text)")]
    NotWasm { name: String },
    /// Validation or compilation failed.
    #[error("invalid WebAssembly module {name}")]
    Compile {
        name: String,
        #[source]
        source: BoxError,
    },
    /// A component imports something WASI preview2 does not provide (or with another type).
    #[error(
        "component {name} cannot be linked: it needs imports that are not provided (only WASI preview2 is)"
    )]
    ComponentImport {
        name: String,
        #[source]
        source: BoxError,
    },
    /// The module exports no function at all: neither a command's `_start` nor anything to
    /// call with `--invoke`.
    #[error(
        "module {name} exports no functions: it is neither a WASI command (`_start`) nor a reactor with exports to invoke"
    )]
    NoStart { name: String },
    /// An export with a name the runtime gives a meaning to (`_start`, `_initialize`, a Wizer
    /// initialiser, the reseed hook) has the wrong type.
    #[error("module {name} exports `{export}` with the wrong type: it must be {ty}")]
    BadExport { name: String, export: String, ty: String },
    /// The warm-up export named (`--init NAME`) is not exported.
    #[error("module {name} exports no function `{export}` to run as its initialiser")]
    NoInitializer { name: String, export: String },
    /// The module's initialiser (warm-up, in the zygote) trapped or exited.
    #[error("module {name}: its initialiser `{export}` failed: {detail}")]
    WarmUp { name: String, export: String, detail: String },
    /// The module imports something we do not provide.
    #[error(
        "module {name} imports `{module}::{field}`, which is not provided (only wasi_snapshot_preview1 is)"
    )]
    UnknownImport { name: String, module: String, field: String },
    /// Instantiating the module (in the zygote) failed.
    #[error("cannot instantiate module {name}")]
    Instantiate {
        name: String,
        #[source]
        source: BoxError,
    },
    /// The module's `start` function or its initialiser (warm-up) passed the load deadline.
    #[error(
        "module {name} did not finish instantiating and initialising within {} ms: its start function or initialiser was stopped",
        timeout.as_millis()
    )]
    InitTimeout { name: String, timeout: Duration },
    /// Instantiating the module needed more linear memory than the cap: a declared initial
    /// size, or a growth in the `start` function, past it.
    #[error(
        "module {name} needs {wanted} bytes of linear memory while instantiating, past its cap of {max} bytes"
    )]
    InitMemoryLimit { name: String, wanted: usize, max: usize },
    /// The module's `start` function used up the load's fuel budget.
    #[error("module {name} exhausted its fuel budget of {fuel} while instantiating")]
    InitFuel { name: String, fuel: u64 },
    /// The SIGALRM timer that bounds instantiation could not be set up or restored.
    #[error("cannot arm the instantiation deadline")]
    InitTimer(#[source] io::Error),
    /// Compiling the module did not finish within its time bound; the compiler was killed.
    #[error(
        "compiling module {name} took longer than {} ms: the compiler process was killed",
        timeout.as_millis()
    )]
    CompileTimeout { name: String, timeout: Duration },
    /// Compiling the module needed more memory than its bound.
    #[error("compiling module {name} needed more than {max_memory} bytes of memory")]
    CompileMemoryLimit { name: String, max_memory: u64 },
    /// The compiler process could not be started or talked to, or died without a verdict.
    #[error("cannot compile module {name} in a child process")]
    CompileProcess {
        name: String,
        #[source]
        source: io::Error,
    },
    /// A module must be compiled, in a forked child, but this process has other threads.
    #[error(
        "refusing to fork the compiler: this process has {threads} threads, it must have exactly 1 (or compile in process: Config::compile_limits(None))"
    )]
    CompileNotSingleThreaded { threads: usize },
    /// The engine rejected its configuration.
    #[error("cannot configure the WebAssembly engine")]
    Engine(#[source] BoxError),
    /// A directory to grant does not exist or is not a directory.
    #[error("cannot grant directory {path}")]
    GrantDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The task holds something that cannot reach the guest unaltered, or a deadline too
    /// long to represent ([`Task::validate`](crate::Task::validate)).
    #[error("invalid task")]
    InvalidTask(#[source] crate::task::TaskError),
    /// A task asked for a fuel budget but the template was compiled without metering.
    #[error("a fuel budget needs a template compiled with fuel metering (Config::fuel, or --fuel)")]
    FuelNotMetered,
    /// The zygote has more than one thread: forking it could deadlock the child.
    #[error("refusing to fork: the zygote has {threads} threads, it must have exactly 1")]
    NotSingleThreaded { threads: usize },
    /// A task names a directory the (namespaced) zygote was not given.
    #[error(
        "directory {path} was not granted to this zygote (add it to Isolation::grants / --dir)"
    )]
    NotGranted { path: PathBuf },
    /// Entering namespaces or building the sandbox root failed.
    #[error("cannot confine the zygote")]
    Confine(#[source] crate::namespaces::NamespaceError),
    /// The seccomp policy could not be compiled.
    #[error("cannot prepare the seccomp filter")]
    Seccomp(#[source] io::Error),
    /// The zygote's thread count could not be read.
    #[error("cannot count the zygote's threads")]
    ThreadCount(#[source] io::Error),
    /// Creating a pipe for the sandbox failed.
    #[error("cannot create a pipe for the sandbox")]
    Pipe(#[source] io::Error),
    /// `fork()` failed.
    #[error("cannot fork a sandbox")]
    Fork(#[source] io::Error),
    /// Reading the sandbox's output or report failed.
    #[error("cannot read from the sandbox")]
    Collect(#[source] io::Error),
    /// The memory cgroup's limit could not be set for this task.
    #[error("cannot apply the task's memory limit to its memory cgroup")]
    MemoryLimit(#[source] io::Error),
    /// A zygote process could not be started or spoken to.
    #[error("cannot start a zygote process")]
    SpawnZygote(#[source] io::Error),
    /// The zygote broke the protocol or went away during a request.
    #[error("zygote protocol error: {0}")]
    Protocol(String),
    /// The zygote could not build the template; `message` has the whole cause chain.
    #[error("{message}")]
    Load { message: String, kind: crate::protocol::LoadFailure },
    /// The template's in-flight limit and queue are both full.
    #[error("busy: {in_flight} tasks in flight and {queued} queued for this template; retry later")]
    Busy { in_flight: usize, queued: usize },
    /// The zygote could not start a sandbox for the task.
    #[error("cannot start a sandbox: {0}")]
    StartSandbox(String),
    /// Reaping the sandbox failed.
    #[error("cannot wait for sandbox {pid}")]
    Wait {
        pid: i32,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The message with all its causes on one line, `outer: inner: innermost` (line breaks
    /// inside a cause, such as a wasm backtrace, are folded into spaces).
    pub fn one_line(&self) -> String {
        let mut s = self.to_string();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        while let Some(e) = cur {
            s.push_str(": ");
            s.push_str(&e.to_string());
            cur = e.source();
        }
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Whose fault the error is, as the zygote reports a failed load.
    pub(crate) fn load_failure(&self) -> crate::protocol::LoadFailure {
        use crate::protocol::LoadFailure;
        match self {
            Error::ReadModule { .. }
            | Error::GrantDir { .. }
            | Error::NotGranted { .. }
            | Error::Confine(crate::namespaces::NamespaceError::OpenGrant { .. }) => {
                LoadFailure::MissingInput
            }
            Error::Load { kind, .. } => *kind,
            _ if self.is_bad_input() => LoadFailure::BadModule,
            _ => LoadFailure::Internal,
        }
    }

    /// Whether the error is about the caller's input (module, directory) rather than the host.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::ReadModule { .. }
                | Error::NotWasm { .. }
                | Error::Compile { .. }
                | Error::ComponentImport { .. }
                | Error::NoStart { .. }
                | Error::BadExport { .. }
                | Error::NoInitializer { .. }
                | Error::WarmUp { .. }
                | Error::UnknownImport { .. }
                | Error::Instantiate { .. }
                | Error::InitTimeout { .. }
                | Error::InitMemoryLimit { .. }
                | Error::InitFuel { .. }
                | Error::CompileTimeout { .. }
                | Error::CompileMemoryLimit { .. }
                | Error::GrantDir { .. }
                | Error::InvalidTask(_)
                | Error::FuelNotMetered
                | Error::NotGranted { .. }
                | Error::Load { kind: crate::protocol::LoadFailure::BadModule, .. }
                | Error::Load { kind: crate::protocol::LoadFailure::MissingInput, .. }
                | Error::Confine(crate::namespaces::NamespaceError::OpenGrant { .. })
        )
    }
}
