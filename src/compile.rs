//! The compiler process: an untrusted module is validated and compiled in a forked child,
//! bounded in wall-clock time (the parent kills it) and in memory (`RLIMIT_DATA`), so a module
//! built to make Cranelift run for minutes or allocate gigabytes costs the caller a clear load
//! error instead of its own memory or a hang.
//!
//! The child hands its work back through the compile cache (it writes the artifact there, the
//! parent maps it from there) or, without a cache, as the serialized artifact on a pipe, which
//! the parent loads with `Module::deserialize`. Its stderr is a second pipe, so an allocation
//! failure's message is read and recognised rather than printed.
//!
//! Why `RLIMIT_DATA` and not `RLIMIT_AS`: since Linux 4.7 it bounds the private writable
//! mappings (heap and anonymous `mmap`) — where the compiler's memory lives — without counting
//! code, shared libraries or reserved-but-inaccessible address space. Compiling does not
//! reserve guard regions (only instantiation does), so either would do; `RLIMIT_DATA` is the
//! tighter fit for "memory the compiler uses".

use crate::cache::CompileCache;
use crate::entry::GuestKind;
use crate::error::Error;
use crate::sys::{self, ExitStatus, Fork};
use crate::template::CodeSource;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

/// Compiled code of either kind: what the compiler process, the cache and a template hold.
#[derive(Clone)]
pub(crate) enum Compiled {
    Module(Module),
    Component(Component),
}

impl Compiled {
    /// Validates and compiles `bytes` as `kind`.
    pub(crate) fn new(engine: &Engine, kind: GuestKind, bytes: &[u8]) -> wasmtime::Result<Self> {
        Ok(match kind {
            GuestKind::Module => Compiled::Module(Module::new(engine, bytes)?),
            GuestKind::Component => Compiled::Component(Component::new(engine, bytes)?),
        })
    }

    /// The artifact `deserialize` takes back.
    pub(crate) fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        match self {
            Compiled::Module(m) => m.serialize(),
            Compiled::Component(c) => c.serialize(),
        }
    }

    /// Loads an artifact of `kind` from memory.
    ///
    /// # Safety
    /// `bytes` must be `serialize` output of an engine with this configuration (see
    /// `Module::deserialize`).
    pub(crate) unsafe fn deserialize(
        engine: &Engine,
        kind: GuestKind,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        Ok(match kind {
            // SAFETY: the caller vouches for `bytes` (this function's contract).
            GuestKind::Module => Compiled::Module(unsafe { Module::deserialize(engine, bytes) }?),
            GuestKind::Component => {
                // SAFETY: as above.
                Compiled::Component(unsafe { Component::deserialize(engine, bytes) }?)
            }
        })
    }

    /// Maps an artifact of `kind` from a file.
    ///
    /// # Safety
    /// The file must hold `serialize` output of an engine with this configuration and must
    /// not change while mapped (see `Module::deserialize_file`).
    pub(crate) unsafe fn deserialize_file(
        engine: &Engine,
        kind: GuestKind,
        path: &std::path::Path,
    ) -> wasmtime::Result<Self> {
        Ok(match kind {
            GuestKind::Module => {
                // SAFETY: the caller vouches for the file (this function's contract).
                Compiled::Module(unsafe { Module::deserialize_file(engine, path) }?)
            }
            GuestKind::Component => {
                // SAFETY: as above.
                Compiled::Component(unsafe { Component::deserialize_file(engine, path) }?)
            }
        })
    }

    /// Where the compiled image (code and metadata) lies in this process's memory.
    pub(crate) fn image_range(&self) -> std::ops::Range<usize> {
        let range = match self {
            Compiled::Module(m) => m.image_range(),
            Compiled::Component(c) => c.image_range(),
        };
        range.start as usize..range.end as usize
    }

    /// The kind of code this is.
    pub(crate) fn kind(&self) -> GuestKind {
        match self {
            Compiled::Module(_) => GuestKind::Module,
            Compiled::Component(_) => GuestKind::Component,
        }
    }
}

/// Bounds on compiling one untrusted module, which runs in a child process of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    /// Wall-clock time the compiler may take before it is killed.
    pub timeout: Duration,
    /// Private writable memory (`RLIMIT_DATA`) the compiler process may map, in bytes,
    /// counting what it inherits from the caller.
    pub max_memory: u64,
}

/// Default compile deadline: 60 s.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default compile memory bound: 2 GiB, about ten times the most we measured a module to
/// need (bisecting `--compile-max-memory`, release build): a single function of 200,000
/// instructions (11 MB of text) needs 192–224 MiB; 6,000 functions of ~100 instructions each
/// (11.6 MB of text) 80–96 MiB; hello less than 512 KiB. The bound counts the caller's own
/// data mappings, inherited at fork, too.
pub const DEFAULT_COMPILE_MAX_MEMORY: u64 = 2 << 30;

impl Default for CompileLimits {
    /// [`DEFAULT_COMPILE_TIMEOUT`] and [`DEFAULT_COMPILE_MAX_MEMORY`].
    fn default() -> Self {
        Self { timeout: DEFAULT_COMPILE_TIMEOUT, max_memory: DEFAULT_COMPILE_MAX_MEMORY }
    }
}

/// What the child answers, as the first byte on the verdict pipe.
const CACHED: u8 = b'C';
const ARTIFACT: u8 = b'A';
const INVALID: u8 = b'E';
const OUT_OF_MEMORY: u8 = b'M';
const FAILED: u8 = b'F';

/// Most bytes of the child's stderr kept (enough for an allocation-failure message).
const STDERR_KEPT: usize = 4096;

/// Compiles `bytes` in a forked child under `limits`. With `cache`, the child writes the
/// artifact there and this process maps it back; without, the artifact comes over a pipe.
pub(crate) fn compile_in_child(
    engine: &Engine,
    name: &str,
    kind: GuestKind,
    bytes: &[u8],
    cache: Option<&CompileCache>,
    limits: &CompileLimits,
) -> Result<(Compiled, CodeSource), Error> {
    let process_err = |source| Error::CompileProcess { name: name.to_string(), source };
    let stat = std::fs::File::open("/proc/self/stat").map_err(process_err)?;
    let threads = sys::threads_in_stat(&sys::read_proc_file(&stat).map_err(process_err)?)
        .map_err(process_err)?;
    if threads != 1 {
        return Err(Error::CompileNotSingleThreaded { threads });
    }
    let (verdict_r, verdict_w) = sys::pipe().map_err(process_err)?;
    let (err_r, err_w) = sys::pipe().map_err(process_err)?;
    let parent = sys::getpid();
    // SAFETY: this process has exactly one thread (checked just above; nothing since starts
    // one), so the child may allocate and run the compiler.
    match unsafe { sys::fork() }.map_err(process_err)? {
        Fork::Child => {
            drop((verdict_r, err_r));
            compiler(engine, kind, bytes, cache, limits, parent, &verdict_w, &err_w)
        }
        Fork::Parent(pid) => {
            drop((verdict_w, err_w));
            let collected = collect(pid, &verdict_r, &err_r, limits);
            let collected = match collected {
                Ok(Some(c)) => c,
                Ok(None) => {
                    return Err(Error::CompileTimeout {
                        name: name.to_string(),
                        timeout: limits.timeout,
                    });
                }
                Err(e) => return Err(process_err(e)),
            };
            judge(engine, name, kind, bytes, cache, limits, &collected)
        }
    }
}

/// The child: bound memory, compile, answer, `_exit`. Never returns.
#[allow(clippy::too_many_arguments)]
fn compiler(
    engine: &Engine,
    kind: GuestKind,
    bytes: &[u8],
    cache: Option<&CompileCache>,
    limits: &CompileLimits,
    parent: libc::pid_t,
    verdict: &OwnedFd,
    stderr: &OwnedFd,
) -> ! {
    let verdict = verdict.as_raw_fd();
    let answer = |tag: u8, body: &[u8]| -> ! { answer(verdict, tag, body) };
    let setup = sys::die_with_parent(parent)
        .and_then(|()| sys::dup2(stderr.as_raw_fd(), 2))
        .and_then(|()| sys::setrlimit(libc::RLIMIT_DATA, limits.max_memory, limits.max_memory))
        .and_then(|()| sys::setrlimit(libc::RLIMIT_CORE, 0, 0));
    if let Err(e) = setup {
        answer(FAILED, format!("cannot set up the compiler process: {e}").as_bytes());
    }
    let module = match Compiled::new(engine, kind, bytes) {
        Ok(m) => m,
        Err(e) => {
            let out_of_memory = e.chain().any(|c| {
                c.downcast_ref::<io::Error>()
                    .is_some_and(|io| io.raw_os_error() == Some(libc::ENOMEM))
            }) || format!("{e:#}").contains("Cannot allocate memory");
            let text = crate::error::chain_text(&e);
            answer(if out_of_memory { OUT_OF_MEMORY } else { INVALID }, text.as_bytes());
        }
    };
    match cache {
        Some(c) => match c.write(engine, bytes, &module) {
            Ok(()) => answer(CACHED, b""),
            // An unwritable cache is not fatal: hand the artifact over the pipe instead.
            Err(_) => match module.serialize() {
                Ok(data) => answer(ARTIFACT, &data),
                Err(e) => answer(FAILED, crate::error::chain_text(&e).as_bytes()),
            },
        },
        None => match module.serialize() {
            Ok(data) => answer(ARTIFACT, &data),
            Err(e) => answer(FAILED, crate::error::chain_text(&e).as_bytes()),
        },
    }
}

/// Writes the child's verdict and exits.
fn answer(verdict: std::os::fd::RawFd, tag: u8, body: &[u8]) -> ! {
    let ok = sys::write_all(verdict, &[tag]).and_then(|()| sys::write_all(verdict, body));
    sys::exit_now(if ok.is_ok() { 0 } else { 70 })
}

/// What a compiler child said and how it ended.
struct Collected {
    /// The verdict pipe: a tag byte, then the artifact or a message.
    verdict: Vec<u8>,
    /// The start of its stderr.
    stderr: Vec<u8>,
    status: ExitStatus,
}

/// Reads the child's verdict and stderr until both close, then reaps it. `Ok(None)`: the
/// deadline passed and the child was killed (and reaped).
fn collect(
    pid: libc::pid_t,
    verdict: &OwnedFd,
    stderr: &OwnedFd,
    limits: &CompileLimits,
) -> io::Result<Option<Collected>> {
    let deadline = Instant::now() + limits.timeout;
    let max_verdict = usize::try_from(limits.max_memory).unwrap_or(usize::MAX);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut open = [true, true];
    let mut buf = vec![0u8; 64 * 1024];
    while open[0] || open[1] {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            sys::kill_hard(pid);
            sys::wait(pid)?;
            return Ok(None);
        }
        let fds: Vec<&OwnedFd> =
            [verdict, stderr].into_iter().zip(open).filter(|(_, o)| *o).map(|(f, _)| f).collect();
        let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let ms = i32::try_from(left.as_millis().saturating_add(1)).unwrap_or(i32::MAX);
        let ready = sys::poll_readable(&raw, ms)?;
        for (fd, revents) in fds.into_iter().zip(ready) {
            if revents == 0 {
                continue;
            }
            let n = sys::read(fd, &mut buf)?;
            let is_verdict = fd.as_raw_fd() == verdict.as_raw_fd();
            let slot = if is_verdict { 0 } else { 1 };
            if n == 0 {
                open[slot] = false;
            } else if is_verdict {
                if out.len() + n > max_verdict {
                    sys::kill_hard(pid);
                    sys::wait(pid)?;
                    return Err(io::Error::other("the compiled artifact is larger than the bound"));
                }
                out.extend_from_slice(&buf[..n]);
            } else if err.len() < STDERR_KEPT {
                let keep = n.min(STDERR_KEPT - err.len());
                err.extend_from_slice(&buf[..keep]);
            }
        }
    }
    // Both pipes closed: the child is exiting (it closes them only by exiting).
    let (status, _) = sys::wait(pid)?;
    Ok(Some(Collected { verdict: out, stderr: err, status }))
}

/// Turns what the child said and how it ended into a module or an error.
fn judge(
    engine: &Engine,
    name: &str,
    kind: GuestKind,
    bytes: &[u8],
    cache: Option<&CompileCache>,
    limits: &CompileLimits,
    collected: &Collected,
) -> Result<(Compiled, CodeSource), Error> {
    let Collected { verdict, stderr, status } = collected;
    let status = *status;
    let name_s = name.to_string();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let process_err =
        |msg: String| Error::CompileProcess { name: name_s.clone(), source: io::Error::other(msg) };
    let memory_limit =
        || Error::CompileMemoryLimit { name: name_s.clone(), max_memory: limits.max_memory };
    match (verdict.split_first(), status) {
        (Some((&CACHED, _)), ExitStatus::Code(0)) => {
            match cache.and_then(|c| c.load(engine, kind, bytes)) {
                Some(m) => Ok((m, CodeSource::CompiledAndCached)),
                None => {
                    Err(process_err("the compiler wrote the cache, but it cannot be loaded".into()))
                }
            }
        }
        (Some((&ARTIFACT, artifact)), ExitStatus::Code(0)) => {
            // SAFETY: the bytes are `Module::serialize` output of this same engine (the child
            // is a fork of this process and used the engine it inherited), written by our own
            // child through a pipe only it and we hold. They are as trustworthy as code this
            // process would have compiled itself from the same module; Wasmtime still checks
            // the header, version and engine configuration.
            let module = unsafe { Compiled::deserialize(engine, kind, artifact) }
                .map_err(|e| process_err(crate::error::chain_text(&e)))?;
            Ok((module, CodeSource::Compiled))
        }
        (Some((&INVALID, msg)), _) => {
            Err(Error::Compile { name: name_s.clone(), source: text(msg).into() })
        }
        (Some((&OUT_OF_MEMORY, _)), _) => Err(memory_limit()),
        (Some((&FAILED, msg)), _) => Err(process_err(text(msg))),
        (_, ExitStatus::Signal(sig)) => {
            // Rust aborts when an allocation fails and says so on stderr; the kernel's SIGSEGV
            // for a stack or heap that cannot grow under the rlimit says nothing.
            let said = text(stderr);
            if said.contains("memory allocation of") || sig == libc::SIGSEGV || sig == libc::SIGKILL
            {
                Err(memory_limit())
            } else {
                Err(process_err(format!(
                    "compiler process killed by {}: {}",
                    sys::signal_name(sig),
                    said.trim()
                )))
            }
        }
        (_, ExitStatus::Code(code)) => Err(process_err(format!(
            "compiler process exited with code {code} without a verdict: {}",
            text(stderr).trim()
        ))),
    }
}
