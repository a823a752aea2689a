//! A template: a WASI preview1 command module compiled once, linked once and instantiated once,
//! ready to be forked per task.

use crate::budget::WriteBudget;
use crate::cache::CompileCache;
use crate::error::{Error, boxed};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use wasmtime::{Engine, Linker, Module, Store, TypedFunc};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;

/// Engine-level settings shared by every task of a template.
#[derive(Debug, Clone)]
pub struct Config {
    cache_dir: Option<PathBuf>,
    meter_fuel: bool,
}

impl Default for Config {
    /// Compiled code cached in [`default_dir`](crate::cache::default_dir); no fuel metering.
    fn default() -> Self {
        Self { cache_dir: crate::cache::default_dir(), meter_fuel: false }
    }
}

impl Config {
    /// Settings with the default cache directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where compiled modules are cached; `None` compiles every time.
    pub fn cache_dir(&mut self, dir: Option<PathBuf>) -> &mut Self {
        self.cache_dir = dir;
        self
    }

    /// Compiles the module with fuel metering, so tasks can be given an instruction budget
    /// ([`Task::fuel`](crate::Task::fuel)). Metered code runs slower; off by default.
    pub fn fuel(&mut self, enable: bool) -> &mut Self {
        self.meter_fuel = enable;
        self
    }

    /// Whether modules are compiled with fuel metering.
    pub fn meters_fuel(&self) -> bool {
        self.meter_fuel
    }

    /// The compile cache directory, if any.
    pub fn cache_directory(&self) -> Option<&Path> {
        self.cache_dir.as_deref()
    }

    fn engine(&self) -> Result<Engine, Error> {
        let mut c = wasmtime::Config::new();
        // Deadlines: a timer in the child bumps the epoch and running Wasm traps cleanly.
        c.epoch_interruption(true);
        c.consume_fuel(self.meter_fuel);
        // Wasmtime is built without `parallel-compilation` and `cache` (see Cargo.toml), so
        // neither rayon's pool nor the cache worker thread exists. Async support lets the
        // child drive wasmtime-wasi on a current-thread Tokio runtime, which starts no
        // threads (the synchronous API would start a multi-threaded one).
        c.cranelift_opt_level(wasmtime::OptLevel::Speed);
        Engine::new(&c).map_err(|e| Error::Engine(boxed(e)))
    }
}

/// Where a template's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSource {
    /// Loaded, file-backed, from the compile cache.
    Cache,
    /// Compiled now and written to the cache.
    CompiledAndCached,
    /// Compiled now; no cache (disabled or unusable).
    Compiled,
}

/// A compiled, linked and instantiated WASI command, the parent of every task's sandbox.
///
/// Building a template never runs guest code except a module's own `start` function.
/// [`Zygote`](crate::Zygote) forks it per task: each child gets a copy-on-write copy of the
/// instance, so no task can see another's memory or globals.
pub struct Template {
    pub(crate) name: String,
    pub(crate) engine: Engine,
    pub(crate) module: Module,
    pub(crate) linker: Linker<TaskState>,
    pub(crate) store: Store<TaskState>,
    pub(crate) start: TypedFunc<(), ()>,
    pub(crate) fuel: bool,
    code_source: CodeSource,
}

/// What a store holds: the task's WASI context, its memory cap and its write budget.
pub(crate) struct TaskState {
    pub wasi: WasiP1Ctx,
    pub memory: MemoryCap,
    pub writes: WriteBudget,
}

/// Caps linear-memory growth and remembers a refused growth, so a trap that follows can be
/// reported as `memory_limit` rather than a generic trap.
#[derive(Debug, Default)]
pub(crate) struct MemoryCap {
    /// Largest size any memory may grow to, in bytes.
    pub max: Option<usize>,
    /// The size of the first growth refused, if any.
    pub refused: Option<usize>,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        match self.max {
            Some(max) if desired > max => {
                self.refused.get_or_insert(desired);
                Ok(false)
            }
            _ => Ok(true),
        }
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables grow in host memory; bound them like wasmtime's default instance limits.
        Ok(desired <= 10_000_000)
    }
}

impl Template {
    /// Builds a template from a `.wasm` (or `.wat`) file.
    pub fn from_file(path: impl AsRef<Path>, config: &Config) -> Result<Self, Error> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|source| Error::ReadModule { path: path.to_path_buf(), source })?;
        Self::from_bytes(&path.display().to_string(), &bytes, config)
    }

    /// Builds a template from module bytes; `name` is used in messages and as `argv[0]`.
    pub fn from_bytes(name: &str, bytes: &[u8], config: &Config) -> Result<Self, Error> {
        let name = name.to_string();
        check_magic(&name, bytes)?;
        let engine = config.engine()?;
        let cache = config.cache_dir.as_deref().and_then(|d| CompileCache::open(d).ok());
        let (module, code_source) = compile(&engine, &name, bytes, cache.as_ref())?;

        let mut linker: Linker<TaskState> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s| &mut s.wasi)
            .and_then(|()| crate::budget::add_to_linker(&mut linker))
            .map_err(|e| Error::Engine(boxed(e)))?;
        // The placeholder context has no args, env, stdio or preopens; each child swaps in its
        // task's context before calling `_start`.
        let mut store = Store::new(
            &engine,
            TaskState {
                wasi: placeholder_ctx(),
                memory: MemoryCap::default(),
                writes: WriteBudget::default(),
            },
        );
        store.limiter(|s| &mut s.memory);
        // No deadline and unlimited fuel while instantiating (a module's start function runs
        // here); each child sets its task's own.
        store.set_epoch_deadline(NO_DEADLINE);
        if config.meter_fuel {
            store.set_fuel(u64::MAX).map_err(|e| Error::Engine(boxed(e)))?;
        }
        for import in module.imports() {
            if linker.get_by_import(&mut store, &import).is_none() {
                return Err(Error::UnknownImport {
                    name,
                    module: import.module().to_string(),
                    field: import.name().to_string(),
                });
            }
        }
        match module.get_export("_start") {
            Some(wasmtime::ExternType::Func(f))
                if f.params().len() == 0 && f.results().len() == 0 => {}
            _ => return Err(Error::NoStart { name }),
        }

        let instance = block_on_ready(linker.instantiate_async(&mut store, &module))
            .ok_or_else(|| Error::Instantiate {
                name: name.clone(),
                source: "the module's start function blocked during instantiation".into(),
            })?
            .map_err(|e| Error::Instantiate { name: name.clone(), source: boxed(e) })?;
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .map_err(|_| Error::NoStart { name: name.clone() })?;
        prewarm(&engine);
        Ok(Self {
            name,
            engine,
            module,
            linker,
            store,
            start,
            fuel: config.meter_fuel,
            code_source,
        })
    }

    /// The module's name, as given when the template was built.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether tasks can be given a fuel budget ([`Config::fuel`]).
    pub fn meters_fuel(&self) -> bool {
        self.fuel
    }

    /// Whether the compiled code came from the cache.
    pub fn code_source(&self) -> CodeSource {
        self.code_source
    }
}

/// Calls into Wasm once, in a throwaway store, so Wasmtime's lazily created per-thread state
/// (its signal stack, thread-local trap state) exists before the zygote forks: every sandbox
/// inherits it instead of creating it (an mmap, an mprotect and a sigaltstack per task).
fn prewarm(engine: &Engine) {
    // A host function called through Wasmtime's trap-catching entry point is enough: no
    // module to compile.
    let mut store = Store::new(engine, ());
    let warm = wasmtime::Func::wrap(&mut store, || {});
    let _ = warm.call(&mut store, &[], &mut []);
}

/// Epoch ticks that never come: the deadline of a store without a timeout.
pub(crate) const NO_DEADLINE: u64 = 1 << 62;

/// An empty WASI context: closed stdio, nothing granted.
pub(crate) fn placeholder_ctx() -> WasiP1Ctx {
    WasiCtxBuilder::new().build_p1()
}

fn check_magic(name: &str, bytes: &[u8]) -> Result<(), Error> {
    const CORE: [u8; 8] = *b"\0asm\x01\0\0\0";
    if bytes.starts_with(b"\0asm") {
        // Core modules are version 1, layer 0; components carry layer 1 in bytes 6..8.
        if bytes.len() >= 8 && bytes[..8] != CORE && bytes[6..8] == [1, 0] {
            return Err(Error::Component { name: name.to_string() });
        }
        return Ok(());
    }
    // Not binary: accept it only if it is text (Wasmtime parses WebAssembly text).
    let looks_textual = std::str::from_utf8(bytes).is_ok_and(|s| {
        let t = s.trim_start();
        t.starts_with('(') || t.starts_with(";;")
    });
    if looks_textual { Ok(()) } else { Err(Error::NotWasm { name: name.to_string() }) }
}

fn compile(
    engine: &Engine,
    name: &str,
    bytes: &[u8],
    cache: Option<&CompileCache>,
) -> Result<(Module, CodeSource), Error> {
    if let Some(module) = cache.and_then(|c| c.load(engine, bytes)) {
        return Ok((module, CodeSource::Cache));
    }
    let module = Module::new(engine, bytes)
        .map_err(|e| Error::Compile { name: name.to_string(), source: boxed(e) })?;
    match cache.and_then(|c| c.store(engine, bytes, &module)) {
        Some(mapped) => Ok((mapped, CodeSource::CompiledAndCached)),
        None => Ok((module, CodeSource::Compiled)),
    }
}

/// Polls a future that is expected to be ready at once (instantiation without async host
/// calls), with a no-op waker: no runtime, no threads. `None` if it was not ready.
fn block_on_ready<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    // A few polls cover futures that yield once internally before completing.
    for _ in 0..16 {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
    }
    None
}
