//! zeroboot-wasm: run untrusted WebAssembly, each task in its own OS process forked
//! copy-on-write from a warm template.
//!
//! The nouns, in lifecycle order:
//! [`Config`] → [`Template`] (compiled in a bounded child process or loaded from the cache,
//! linked, checked; none of its code run) → [`Zygote`] (confines this process, then
//! instantiates the template once under [`InitLimits`], then forks the instance per task) →
//! [`Task`] (args, env, stdin, directories, limits) → [`Outcome`].
//!
//! ```no_run
//! use zeroboot_wasm::{Config, Template, Zygote, Task};
//! # fn main() -> Result<(), zeroboot_wasm::Error> {
//! let template = Template::from_file("tool.wasm", &Config::new())?;
//! let mut zygote = Zygote::new(template)?;
//! let outcome = zygote.run(&Task::new().args(["--help"]))?;
//! println!("{:?}: {}", outcome.status, outcome.stdout_text());
//! # Ok(()) }
//! ```
//!
//! The process calling [`Zygote::run`] must be single-threaded (the call checks and refuses
//! otherwise): a program that has threads runs its zygote in a separate process.

#[doc(hidden)]
pub mod bench;
mod budget;
pub mod cache;
mod cgroup;
mod child;
mod compile;
pub mod entry;
mod error;
mod file_streams;
mod flight;
#[cfg(feature = "testkit")]
#[doc(hidden)]
pub mod fuzzing;
mod host;
mod hugepages;
mod invoke;
pub mod namespaces;
mod outcome;
pub mod protocol;
mod rlimits;
pub mod schema;
mod scratch;
pub mod seccomp;
#[cfg(feature = "serve")]
pub mod serve;
pub mod sys;
mod task;
mod template;
#[cfg(feature = "testkit")]
#[doc(hidden)]
pub mod testkit;
mod wire;
pub mod wit_type;
#[doc(hidden)]
pub mod worker_request;
mod zygote;
mod zygote_process;

pub use budget::{DEFAULT_MAX_FILES, DEFAULT_MAX_WRITE, WriteLimitExceeded};
pub use compile::{CompileLimits, DEFAULT_COMPILE_MAX_MEMORY, DEFAULT_COMPILE_TIMEOUT};
pub use entry::{GuestKind, WarmUp};
pub use error::{BoxError, Error};
pub use host::{
    BlockingRuntime, LoadOptions, ModuleSource, OutputChunk, OutputStream, Runtime, TemplateHandle,
    run_in_this_process,
};
pub use outcome::{Captured, Outcome, Status, Timings};
pub use rlimits::{DEFAULT_MAX_FILE_SIZE, MAX_OPEN_FILES};
pub use scratch::{DEFAULT_SCRATCH_SIZE, FilesOut, GUEST_PATH as SCRATCH_GUEST_PATH, ScratchFile};
pub use seccomp::SeccompMode;
pub use task::{
    DEFAULT_MAX_MEMORY, DEFAULT_MAX_OUTPUT, DEFAULT_TIMEOUT, DirGrant, MAX_REQUEST_BYTES,
    MAX_TIMEOUT, Output, Stdin, Task, TaskError,
};
pub use template::{CodeSource, Config, InitLimits, Template};
pub use zygote::{HOST_OVERHEAD, Isolation, KILL_GRACE, Zygote, ZygoteStats};
