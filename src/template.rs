//! A template: a WASI preview1 core module or a WASI preview2 component, compiled once (in a
//! bounded child process) and linked once; the zygote instantiates it once and runs its
//! initialiser once ([`WarmUp`]), confined and under a task's limits ([`InitLimits`]), and
//! forks the warm instance per task.
//!
//! The two kinds share everything but the code and its linker ([`Code`]) and the warm
//! instance's entry points ([`Entry`]): one store type ([`TaskState`], whose WASI context
//! serves preview1 imports and, through [`WasiView`], preview2 ones), one compile cache, one
//! set of limits. [`GuestKind::detect`] is the one place the kinds are told apart.

use crate::budget::WriteBudget;
use crate::cache::CompileCache;
use crate::compile::CompileLimits;
use crate::compile::Compiled;
use crate::entry::{self, ExportedFunc, Exports, GuestKind, ValKind, WarmUp};
use crate::error::{Error, boxed};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;
use wasmtime::component::{self, Component};
use wasmtime::{Engine, Instance, Linker, Module, Store, Trap, TypedFunc};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::{Command, CommandPre};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtxBuilder, WasiCtxView, WasiView};

/// Engine-level settings shared by every task of a template.
#[derive(Debug, Clone)]
pub struct Config {
    cache_dir: Option<PathBuf>,
    meter_fuel: bool,
    compile: Option<CompileLimits>,
    warm_up: WarmUp,
    huge_pages: bool,
}

impl Default for Config {
    /// Compiled code cached in [`default_dir`](crate::cache::default_dir); no fuel metering;
    /// modules compiled in a child process under the default [`CompileLimits`].
    fn default() -> Self {
        Self {
            cache_dir: crate::cache::default_dir(),
            meter_fuel: false,
            compile: Some(CompileLimits::default()),
            warm_up: WarmUp::Auto,
            huge_pages: true,
        }
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

    /// How an untrusted module is compiled: `Some` (the default) in a forked child process,
    /// killed past its time bound and refused memory past its memory bound — which needs the
    /// calling process to be single-threaded when a module is not in the cache
    /// ([`Error::CompileNotSingleThreaded`] otherwise); `None` in this process, unbounded: for
    /// modules the caller trusts, or a caller with threads.
    pub fn compile_limits(&mut self, limits: Option<CompileLimits>) -> &mut Self {
        self.compile = limits;
        self
    }

    /// What the zygote runs once before forking (default [`WarmUp::Auto`]).
    pub fn warm_up(&mut self, warm_up: WarmUp) -> &mut Self {
        self.warm_up = warm_up;
        self
    }

    /// Whether the compiled code of a large module and the warm linear memory are backed with
    /// huge pages before the first fork, and, in a zygote process of the fork server, the
    /// runtime's own machine code too (default on; see `src/hugepages.rs`). It costs the
    /// zygote tens of milliseconds once for a large module (and a private copy of the
    /// runtime's code, 12–20 MB) and saves every sandbox the faults and page-table copies of
    /// 4 KiB pages: worth it for a zygote that forks many times, not for one that runs a single
    /// task. With it, a profiler finds no symbols for the runtime's code in zygote processes
    /// and their sandboxes (that code is no longer a file mapping).
    pub fn huge_pages(&mut self, enable: bool) -> &mut Self {
        self.huge_pages = enable;
        self
    }

    /// Whether huge pages are used (see [`huge_pages`](Self::huge_pages)).
    pub fn huge_pages_choice(&self) -> bool {
        self.huge_pages
    }

    /// The warm-up choice.
    pub fn warm_up_choice(&self) -> &WarmUp {
        &self.warm_up
    }

    /// The compile bounds, if modules are compiled in a child process.
    pub fn compile_bounds(&self) -> Option<CompileLimits> {
        self.compile
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
        // Deadlines: a timer bumps the epoch and running Wasm traps cleanly (in the child for a
        // task, in the zygote while a module's start function runs).
        c.epoch_interruption(true);
        c.consume_fuel(self.meter_fuel);
        // Wasmtime is built without `parallel-compilation` and `cache` (see Cargo.toml), so
        // neither rayon's pool nor the cache worker thread exists. Async support lets the
        // child drive wasmtime-wasi on a current-thread Tokio runtime, which starts no
        // threads (the synchronous API would start a multi-threaded one).
        c.cranelift_opt_level(wasmtime::OptLevel::Speed);
        // Interpreters recurse on the native (wasm) stack: QuickJS uses ~800 bytes per JS
        // call, so Wasmtime's default 512 KiB ends `f(n-1)` at ~700 levels with a trap. 8 MiB,
        // on the fiber each async call runs on (its pages are touched only as used).
        c.max_wasm_stack(WASM_STACK);
        c.async_stack_size(WASM_STACK + (1 << 20));
        Engine::new(&c).map_err(|e| Error::Engine(boxed(e)))
    }
}

/// The most native stack guest code may use (see [`Config`]'s engine settings).
const WASM_STACK: usize = 8 << 20;

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

/// The limits a module's own code runs under while it is instantiated in the zygote: its
/// `start` function, its data and element initialisers, its declared memories.
///
/// They are a task's limits, enforced the same way: a deadline (epoch interruption, armed by a
/// SIGALRM timer), fuel when the template meters it, and the linear-memory cap, which applies
/// to a memory's declared initial size as well as to every growth. A module that passes one
/// fails to load ([`Error::InitTimeout`], [`Error::InitMemoryLimit`], [`Error::InitFuel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitLimits {
    /// Wall-clock deadline for instantiation; `None` for none.
    pub timeout: Option<Duration>,
    /// Largest size, in bytes, any linear memory may have; `None` for no cap.
    pub max_memory: Option<usize>,
    /// Fuel budget (needs [`Config::fuel`]); `None`: unlimited fuel.
    pub fuel: Option<u64>,
}

impl Default for InitLimits {
    /// The command line's task defaults: [`DEFAULT_TIMEOUT`](crate::DEFAULT_TIMEOUT),
    /// [`DEFAULT_MAX_MEMORY`](crate::DEFAULT_MAX_MEMORY), no fuel budget.
    fn default() -> Self {
        Self {
            timeout: Some(crate::task::DEFAULT_TIMEOUT),
            max_memory: Some(crate::task::DEFAULT_MAX_MEMORY),
            fuel: None,
        }
    }
}

impl InitLimits {
    /// The limits of `task`: its timeout, memory cap and fuel budget.
    pub fn of_task(task: &crate::Task) -> Self {
        Self { timeout: task.timeout, max_memory: task.max_memory, fuel: task.fuel }
    }
}

/// A compiled and linked WASI module, checked (its imports are provided; it exports `_start`,
/// or functions to call with [`Task::invoke`](crate::Task::invoke); its initialiser and reseed
/// hook have the right types), not yet instantiated: building one runs no guest code.
///
/// [`Zygote`](crate::Zygote) instantiates it — after confining itself, under
/// [`InitLimits`] — and forks the instance per task: each child gets a copy-on-write copy, so
/// no task can see another's memory or globals.
pub struct Template {
    pub(crate) name: String,
    pub(crate) engine: Engine,
    pub(crate) code: Code,
    pub(crate) fuel: bool,
    code_source: CodeSource,
    /// Whether warm memory is backed with huge pages after instantiation.
    huge_pages: bool,
    /// Bytes of the compiled image backed with huge pages.
    huge_code: u64,
    exports: Exports,
    /// The initialisers the zygote runs, in order (from [`WarmUp`] and the exports).
    initializers: Vec<String>,
    warm_up: WarmUp,
}

/// A template's compiled code and the linker that provides its imports.
pub(crate) enum Code {
    /// A core module, linked to WASI preview1 (and the write budget's wrappers).
    Module { module: Module, linker: Linker<TaskState> },
    /// A component, linked to WASI preview2; `pre` has its imports resolved.
    Component {
        component: Component,
        pre: component::InstancePre<TaskState>,
        /// Present when it is a `wasi:cli/command` (exports `wasi:cli/run`).
        command: Option<CommandPre<TaskState>>,
        /// Its exported functions with their WIT types (`wasi:cli/run` aside).
        exports: Vec<crate::schema::ComponentExport>,
    },
}

impl Code {
    /// The compiled core module, if this is one (for the benchmark's in-process baseline).
    pub(crate) fn core(&self) -> Option<(&Module, &Linker<TaskState>)> {
        match self {
            Code::Module { module, linker } => Some((module, linker)),
            Code::Component { .. } => None,
        }
    }
}

/// A template's instance, created and warmed in the zygote: what each sandbox inherits.
pub(crate) struct Warm {
    pub store: Store<TaskState>,
    pub entry: Entry,
    /// How long instantiation and warm-up took in the zygote.
    pub warm_up_time: Duration,
    /// Bytes of warm linear memory backed with huge pages.
    pub huge_memory: u64,
    /// How the reseed hook went when a sandbox forked ahead of its task ran it while waiting
    /// (`None`: not run yet; the task runs it).
    pub reseeded: Option<wasmtime::Result<()>>,
}

/// The warm instance and what a task may call in it.
pub(crate) enum Entry {
    Module {
        instance: Instance,
        /// `_start`, for a command.
        start: Option<TypedFunc<(), ()>>,
        /// The guest's per-fork reseed hook ([`entry::RESEED`]), if it exports one.
        reseed: Option<TypedFunc<(i64, i64), ()>>,
        /// `_initialize`, when the zygote did not run it ([`WarmUp::Off`]): each sandbox does.
        per_task_init: Option<TypedFunc<(), ()>>,
    },
    Component {
        instance: component::Instance,
        /// `wasi:cli/run`, for a command.
        command: Option<Command>,
    },
}

/// What a store holds: the task's WASI context, its memory cap and its write budget.
pub(crate) struct TaskState {
    /// The preview1 context; it holds the preview2 context and resource table a component's
    /// imports use (see the [`WasiView`] impl), so both kinds share one store type.
    pub wasi: WasiP1Ctx,
    pub memory: MemoryCap,
    pub writes: WriteBudget,
    /// A component's bytes written to files, shared with its file streams
    /// ([`crate::file_streams`]); a module's are counted in `writes`.
    pub file_writes: crate::file_streams::Writes,
}

impl WasiView for TaskState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.wasi.ctx()
    }
}

/// Caps linear-memory growth and remembers a refused growth, so a trap that follows can be
/// reported as `memory_limit` rather than a generic trap.
#[derive(Debug, Default)]
pub(crate) struct MemoryCap {
    /// Largest size any memory may grow to, in bytes.
    pub max: Option<usize>,
    /// The size of the first growth refused, if any.
    pub refused: Option<usize>,
    /// The largest size any memory has been allowed (its initial size included): a memory's
    /// size now, since memories never shrink.
    pub largest: usize,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Wasmtime asks here for a memory's initial size too (current 0), when it is created
        // at instantiation: a declared minimum past the cap fails to instantiate.
        match self.max {
            Some(max) if desired > max => {
                self.refused.get_or_insert(desired);
                Ok(false)
            }
            _ => {
                self.largest = self.largest.max(desired);
                Ok(true)
            }
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
    /// Compiles (or loads from the cache) a `.wasm` (or `.wat`) file and checks it is a WASI
    /// command. Runs none of its code.
    pub fn from_file(path: impl AsRef<Path>, config: &Config) -> Result<Self, Error> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|source| Error::ReadModule { path: path.to_path_buf(), source })?;
        Self::from_bytes(&path.display().to_string(), &bytes, config)
    }

    /// Compiles (or loads from the cache) module bytes and checks them; `name` is used in
    /// messages and as `argv[0]`. Runs none of the module's code.
    pub fn from_bytes(name: &str, bytes: &[u8], config: &Config) -> Result<Self, Error> {
        let name = name.to_string();
        let kind = GuestKind::detect(bytes).ok_or_else(|| Error::NotWasm { name: name.clone() })?;
        let engine = config.engine()?;
        let cache = config
            .cache_dir
            .as_deref()
            .and_then(|d| CompileCache::open(d).ok())
            .map(|c| c.read_from(config.huge_pages.then_some(crate::hugepages::MIN_IMAGE)));
        let (compiled, code_source) = compile(&engine, &name, kind, bytes, cache.as_ref(), config)?;
        let huge_code = if config.huge_pages {
            crate::hugepages::back_image(compiled.image_range())
        } else {
            0
        };
        let module = match compiled {
            Compiled::Module(module) => module,
            Compiled::Component(component) => {
                let mut template =
                    Self::from_component(name, engine, component, code_source, config)?;
                template.huge_code = huge_code;
                return Ok(template);
            }
        };

        let mut linker: Linker<TaskState> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s| &mut s.wasi)
            .and_then(|()| crate::budget::add_to_linker(&mut linker))
            .map_err(|e| Error::Engine(boxed(e)))?;
        // A store only to look imports up in; nothing is instantiated in it.
        let mut store = Store::new(
            &engine,
            TaskState {
                wasi: placeholder_ctx(),
                memory: MemoryCap::default(),
                writes: WriteBudget::default(),
                file_writes: Default::default(),
            },
        );
        for import in module.imports() {
            if linker.get_by_import(&mut store, &import).is_none() {
                return Err(Error::UnknownImport {
                    name,
                    module: import.module().to_string(),
                    field: import.name().to_string(),
                });
            }
        }
        let exports = describe_exports(&module);
        let nullary = |f: &ExportedFunc| f.params.is_empty() && f.results.is_empty();
        let expect = |export: &str, ty: &str, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(Error::BadExport { name: name.clone(), export: export.into(), ty: ty.into() })
            }
        };
        if let Some(f) = exports.func("_start") {
            expect("_start", "() -> ()", nullary(f))?;
        }
        if exports.funcs.is_empty() {
            return Err(Error::NoStart { name });
        }
        if let Some(f) = exports.func(entry::RESEED) {
            expect(
                entry::RESEED,
                "(i64, i64) -> ()",
                f.params == [ValKind::I64, ValKind::I64] && f.results.is_empty(),
            )?;
        }
        let mut initializers = Vec::new();
        if let Some(f) = exports.func(entry::INITIALIZE) {
            expect(entry::INITIALIZE, "() -> ()", nullary(f))?;
            if config.warm_up != WarmUp::Off {
                initializers.push(entry::INITIALIZE.to_string());
            }
        }
        match &config.warm_up {
            WarmUp::Off => {}
            WarmUp::Auto => {
                if let Some(f) = entry::WIZER_INITIALIZE.iter().find_map(|n| exports.func(n)) {
                    expect(&f.name, "() -> ()", nullary(f))?;
                    initializers.push(f.name.clone());
                }
            }
            WarmUp::Export(init) => {
                let f = exports.func(init).ok_or_else(|| Error::NoInitializer {
                    name: name.clone(),
                    export: init.clone(),
                })?;
                expect(init, "() -> ()", nullary(f))?;
                if !initializers.contains(init) {
                    initializers.push(init.clone());
                }
            }
        }
        // Wasmtime makes a module's copy-on-write memory image (a memfd, for a module not
        // mapped from the cache) lazily, at its first instantiation; make it now, while the
        // process is unconfined: the fork-server zygote instantiates under a seccomp filter
        // that has no `memfd_create`.
        module.initialize_copy_on_write_image().map_err(|e| Error::Engine(boxed(e)))?;
        Ok(Self {
            name,
            engine,
            code: Code::Module { module, linker },
            fuel: config.meter_fuel,
            code_source,
            huge_pages: config.huge_pages,
            huge_code,
            exports,
            initializers,
            warm_up: config.warm_up.clone(),
        })
    }

    /// A component's half of [`from_bytes`](Self::from_bytes): link WASI preview2, resolve
    /// its imports, find `wasi:cli/run` and the warm-up export.
    fn from_component(
        name: String,
        engine: Engine,
        component: Component,
        code_source: CodeSource,
        config: &Config,
    ) -> Result<Self, Error> {
        let mut linker: component::Linker<TaskState> = component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| crate::file_streams::add_to_linker(&mut linker))
            .and_then(|()| crate::budget::add_to_component_linker(&mut linker))
            .map_err(|e| Error::Engine(boxed(e)))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| Error::ComponentImport { name: name.clone(), source: boxed(e) })?;
        let command = CommandPre::new(pre.clone()).ok();
        let typed = crate::schema::component_exports(&engine, &component);
        let exports = crate::schema::describe_component_exports(&typed, command.is_some());
        if !exports.start && exports.funcs.is_empty() {
            return Err(Error::NoStart { name });
        }
        let nullary = |f: &ExportedFunc| f.params.is_empty() && f.results.is_empty();
        let bad = |export: &str| Error::BadExport {
            name: name.clone(),
            export: export.into(),
            ty: "func()".into(),
        };
        let mut initializers = Vec::new();
        match &config.warm_up {
            WarmUp::Off => {}
            WarmUp::Auto => {
                // A component's export names are kebab-case: only the older Wizer name fits.
                if let Some(f) = entry::WIZER_INITIALIZE.iter().find_map(|n| exports.func(n)) {
                    if !nullary(f) {
                        return Err(bad(&f.name));
                    }
                    initializers.push(f.name.clone());
                }
            }
            WarmUp::Export(init) => {
                let f = exports.func(init).ok_or_else(|| Error::NoInitializer {
                    name: name.clone(),
                    export: init.clone(),
                })?;
                if !nullary(f) {
                    return Err(bad(init));
                }
                initializers.push(init.clone());
            }
        }
        // As for a module: make the copy-on-write images before any confinement.
        component.initialize_copy_on_write_image().map_err(|e| Error::Engine(boxed(e)))?;
        Ok(Self {
            name,
            engine,
            code: Code::Component { component, pre, command, exports: typed },
            fuel: config.meter_fuel,
            code_source,
            huge_pages: config.huge_pages,
            huge_code: 0,
            exports,
            initializers,
            warm_up: config.warm_up.clone(),
        })
    }

    /// A component's exported functions with their WIT types (empty for a module).
    pub(crate) fn component_exports(&self) -> &[crate::schema::ComponentExport] {
        match &self.code {
            Code::Component { exports, .. } => exports,
            Code::Module { .. } => &[],
        }
    }

    /// What `zeroboot-wasm inspect` prints: the kind, the imports, and the exported functions
    /// with their types — for a component, WIT types and a JSON Schema of each function's
    /// parameters and result ([`crate::schema`]).
    pub fn describe(&self) -> serde_json::Value {
        match &self.code {
            Code::Component { component, command, exports, .. } => {
                crate::schema::describe_component(
                    &self.engine,
                    component,
                    exports,
                    command.is_some(),
                )
            }
            Code::Module { module, .. } => {
                let imports: Vec<String> =
                    module.imports().map(|i| format!("{}::{}", i.module(), i.name())).collect();
                let funcs: Vec<_> = self
                    .exports
                    .funcs
                    .iter()
                    .map(|f| {
                        let names =
                            |v: &[ValKind]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
                        serde_json::json!({
                            "name": f.name,
                            "params": names(&f.params),
                            "results": names(&f.results),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "kind": GuestKind::Module.as_str(),
                    "command": self.exports.start,
                    "imports": imports,
                    "exports": funcs,
                })
            }
        }
    }

    /// A core module or a component.
    pub fn kind(&self) -> GuestKind {
        self.exports.kind
    }

    /// The functions the module exports, and whether it is a command (`_start`).
    pub fn exports(&self) -> &Exports {
        &self.exports
    }

    /// Whether the guest can reach a file by name at all: a module that imports any WASI
    /// preview1 `path_*` call, `fd_readdir` or `fd_prestat_*`, or a component that imports any
    /// `wasi:filesystem` interface. One that cannot has no use for a scratch directory (it
    /// could neither read a file put there nor leave one), so none is made for its sandboxes.
    pub fn reaches_files(&self) -> bool {
        match &self.code {
            Code::Module { module, .. } => module.imports().any(|i| {
                matches!(i.module(), "wasi_snapshot_preview1" | "wasi_unstable")
                    && (i.name().starts_with("path_")
                        || i.name().starts_with("fd_prestat_")
                        || i.name() == "fd_readdir")
            }),
            Code::Component { component, .. } => component
                .component_type()
                .imports(&self.engine)
                .any(|(name, _)| name.starts_with("wasi:filesystem/")),
        }
    }

    /// The exports the zygote runs once before forking, in order (see [`WarmUp`]).
    pub fn initializers(&self) -> &[String] {
        &self.initializers
    }

    /// The module's name, as given when the template was built.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether tasks can be given a fuel budget ([`Config::fuel`]).
    pub fn meters_fuel(&self) -> bool {
        self.fuel
    }

    /// Bytes of the compiled image backed with huge pages (see [`Config::huge_pages`]).
    pub(crate) fn huge_code(&self) -> u64 {
        self.huge_code
    }

    /// Whether the compiled code came from the cache.
    pub fn code_source(&self) -> CodeSource {
        self.code_source
    }

    /// Instantiates the module in this process — running its `start` function and
    /// initialisers — then runs its warm-up ([`Template::initializers`]), all under `limits`
    /// (one deadline for the whole), then warms Wasmtime's per-thread state for forking.
    ///
    /// Warm-up has WASI, with no arguments but the module's name, no environment, no stdin,
    /// no directories; its stdout is discarded and its stderr kept (up to 64 KiB) for the
    /// message if it fails. That context is replaced afterwards, so nothing it opened
    /// survives into a sandbox.
    ///
    /// With a timeout, SIGALRM is this process's for the duration (its previous disposition
    /// is put back afterwards); the caller must not use `ITIMER_REAL` meanwhile.
    ///
    /// `pagemap` (this process's `/proc/self/pagemap`, opened before any confinement) lets
    /// the warm memory be backed with huge pages where it is present; `None` leaves it as is.
    pub(crate) fn instantiate(
        &self,
        limits: &InitLimits,
        pagemap: Option<&std::fs::File>,
    ) -> Result<Warm, Error> {
        if limits.fuel.is_some() && !self.fuel {
            return Err(Error::FuelNotMetered);
        }
        let began = std::time::Instant::now();
        let name = || self.name.clone();
        let stderr = MemoryOutputPipe::new(WARM_UP_STDERR);
        let cap = MemoryCap { max: limits.max_memory, ..MemoryCap::default() };
        let wasi = WasiCtxBuilder::new()
            .arg(&self.name)
            .stdout(wasmtime_wasi::p2::pipe::SinkOutputStream)
            .stderr(stderr.clone())
            .build_p1();
        let mut store = Store::new(
            &self.engine,
            TaskState {
                wasi,
                memory: cap,
                writes: WriteBudget::default(),
                file_writes: Default::default(),
            },
        );
        store.limiter(|s| &mut s.memory);
        store.set_epoch_deadline(NO_DEADLINE);
        if self.fuel {
            store.set_fuel(limits.fuel.unwrap_or(u64::MAX)).map_err(|e| Error::Engine(boxed(e)))?;
        }
        // A current-thread runtime starts no thread; it drives a start function's host calls
        // (a WASI sleep, say), and its timer bounds a start function blocked in one.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| Error::Engine(e.into()))?;
        let timer = match limits.timeout {
            Some(timeout) => {
                store.set_epoch_deadline(1);
                store.epoch_deadline_trap();
                Some(InitTimer::arm(&self.engine, timeout).map_err(Error::InitTimer)?)
            }
            None => None,
        };
        // Which initialiser failed, if one did (`None`: instantiation itself).
        let mut failed_in: Option<&str> = None;
        let store_ref = &mut store;
        let warming = async {
            let instance = match &self.code {
                Code::Module { module, linker } => {
                    Instantiated::Module(linker.instantiate_async(&mut *store_ref, module).await?)
                }
                Code::Component { pre, .. } => {
                    Instantiated::Component(pre.instantiate_async(&mut *store_ref).await?)
                }
            };
            for init in &self.initializers {
                failed_in = Some(init);
                match &instance {
                    Instantiated::Module(i) => {
                        let f = i.get_typed_func::<(), ()>(&mut *store_ref, init)?;
                        f.call_async(&mut *store_ref, ()).await?;
                    }
                    Instantiated::Component(i) => {
                        let f = i.get_typed_func::<(), ()>(&mut *store_ref, init.as_str())?;
                        f.call_async(&mut *store_ref, ()).await?;
                    }
                }
            }
            failed_in = None;
            wasmtime::Result::Ok(instance)
        };
        let result: Option<wasmtime::Result<Instantiated>> = rt.block_on(async {
            match limits.timeout {
                Some(t) => tokio::time::timeout(t, warming).await.ok(),
                None => Some(warming.await),
            }
        });
        if let Some(timer) = timer {
            timer.disarm().map_err(Error::InitTimer)?;
        }
        drop(rt);
        let refused = store.data().memory.refused;
        let timed_out =
            || Error::InitTimeout { name: name(), timeout: limits.timeout.unwrap_or_default() };
        let instance = match result {
            None => return Err(timed_out()),
            Some(Ok(instance)) => instance,
            Some(Err(e)) => {
                return Err(match (e.downcast_ref::<Trap>(), refused, limits.max_memory) {
                    (Some(Trap::Interrupt), _, _) => timed_out(),
                    (Some(Trap::OutOfFuel), _, _) => {
                        Error::InitFuel { name: name(), fuel: limits.fuel.unwrap_or(u64::MAX) }
                    }
                    (_, Some(wanted), Some(max)) => {
                        Error::InitMemoryLimit { name: name(), wanted, max }
                    }
                    _ => match failed_in {
                        None => Error::Instantiate { name: name(), source: boxed(e) },
                        Some(export) => Error::WarmUp {
                            name: name(),
                            export: export.to_string(),
                            detail: warm_up_failure(&e, &stderr.contents()),
                        },
                    },
                });
            }
        };
        // What warm-up opened goes with its context; no deadline and unlimited fuel until a
        // child sets its task's own.
        store.data_mut().wasi = placeholder_ctx();
        store.set_epoch_deadline(NO_DEADLINE);
        let warm_up_time = began.elapsed();
        let mut huge_memory = 0;
        let entry = match instance {
            Instantiated::Module(instance) => {
                if let (true, Some(pagemap)) = (self.huge_pages, pagemap) {
                    // A component's memories are internal to it: only a module's are reached.
                    let memories: Vec<wasmtime::Memory> =
                        instance.exports(&mut store).filter_map(|e| e.into_memory()).collect();
                    for memory in memories {
                        let data = memory.data(&store).as_ptr_range();
                        huge_memory +=
                            crate::hugepages::back(data.start as usize, data.end as usize, pagemap);
                    }
                }
                self.module_entry(&mut store, instance)?
            }
            Instantiated::Component(instance) => {
                let command = match &self.code {
                    Code::Component { command: Some(_), .. } => Some(
                        Command::new(&mut store, &instance)
                            .map_err(|e| Error::Instantiate { name: name(), source: boxed(e) })?,
                    ),
                    _ => None,
                };
                Entry::Component { instance, command }
            }
        };
        prewarm(&self.engine);
        Ok(Warm { store, entry, warm_up_time, huge_memory, reseeded: None })
    }

    /// A warm core instance's entry points.
    fn module_entry(
        &self,
        store: &mut Store<TaskState>,
        instance: Instance,
    ) -> Result<Entry, Error> {
        let nullary = |store: &mut Store<TaskState>, export: &str| {
            self.exports.func(export).and_then(|_| instance.get_typed_func(store, export).ok())
        };
        let start = nullary(store, "_start");
        let per_task_init = match self.warm_up {
            WarmUp::Off => nullary(store, entry::INITIALIZE),
            _ => None,
        };
        let reseed = match self.exports.func(entry::RESEED) {
            Some(_) => Some(
                instance.get_typed_func::<(i64, i64), ()>(&mut *store, entry::RESEED).map_err(
                    |e| Error::Instantiate { name: self.name.clone(), source: boxed(e) },
                )?,
            ),
            None => None,
        };
        Ok(Entry::Module { instance, start, reseed, per_task_init })
    }
}

/// An instance of either kind, before its entry points are looked up.
enum Instantiated {
    Module(Instance),
    Component(component::Instance),
}

/// How much of an initialiser's stderr is kept for its failure message.
const WARM_UP_STDERR: usize = 64 << 10;

/// A failed initialiser's message: how it ended (an exit code, or the trap and its
/// backtrace), then what it wrote to stderr.
fn warm_up_failure(e: &wasmtime::Error, stderr: &[u8]) -> String {
    let how = match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        Some(exit) => format!("it exited with code {}", exit.0),
        None => format!("{e:#}"),
    };
    let stderr = String::from_utf8_lossy(stderr);
    match stderr.trim_end() {
        "" => how,
        text => format!("{how}\nits stderr:\n{text}"),
    }
}

/// Every exported function of `module`, with its type.
fn describe_exports(module: &Module) -> Exports {
    let kind = |t: wasmtime::ValType| match t {
        wasmtime::ValType::I32 => ValKind::I32,
        wasmtime::ValType::I64 => ValKind::I64,
        wasmtime::ValType::F32 => ValKind::F32,
        wasmtime::ValType::F64 => ValKind::F64,
        wasmtime::ValType::V128 => ValKind::V128,
        wasmtime::ValType::Ref(r) => ValKind::Ref(r.to_string()),
    };
    let funcs: Vec<ExportedFunc> = module
        .exports()
        .filter_map(|e| match e.ty() {
            wasmtime::ExternType::Func(f) => Some(ExportedFunc {
                name: e.name().to_string(),
                params: f.params().map(kind).collect(),
                param_names: Vec::new(),
                results: f.results().map(kind).collect(),
            }),
            _ => None,
        })
        .collect();
    let start =
        funcs.iter().any(|f| f.name == "_start" && f.params.is_empty() && f.results.is_empty());
    Exports { kind: GuestKind::Module, start, funcs }
}

/// The engine whose epoch the instantiation timer bumps, while one is armed.
static INIT_ENGINE: AtomicPtr<Engine> = AtomicPtr::new(std::ptr::null_mut());

/// SIGALRM handler while a module is instantiated: bumps the epoch, so a start function
/// running Wasm traps at its next epoch check. It does nothing else.
extern "C" fn on_init_deadline(_sig: libc::c_int) {
    let engine = INIT_ENGINE.load(Ordering::Acquire);
    if !engine.is_null() {
        // SAFETY: the pointer comes from `Box::into_raw` in `InitTimer::arm` and is freed only
        // by `InitTimer::disarm` after the timer is stopped and this handler uninstalled;
        // `Engine::increment_epoch` is documented as async-signal-safe (an atomic add).
        unsafe { (*engine).increment_epoch() };
    }
}

/// The ITIMER_REAL timer and SIGALRM handler bounding one instantiation (the zygote has one
/// thread, so no timer thread).
struct InitTimer {
    saved: crate::sys::SavedAction,
}

impl InitTimer {
    /// Installs the handler, then fires it after `timeout` and every 10 ms after that (a
    /// start function may be between epoch checks, or in a host call, at the first one).
    fn arm(engine: &Engine, timeout: Duration) -> std::io::Result<Self> {
        let engine = Box::into_raw(Box::new(engine.clone()));
        INIT_ENGINE.store(engine, Ordering::Release);
        // SAFETY: `on_init_deadline` only loads an atomic and increments the epoch, both
        // async-signal-safe.
        let timer = Self { saved: unsafe { crate::sys::on_alarm(on_init_deadline) }? };
        if let Err(e) = crate::sys::arm_alarm(timeout, Duration::from_millis(10)) {
            let _ = timer.disarm();
            return Err(e);
        }
        Ok(timer)
    }

    /// Stops the timer, puts the previous SIGALRM disposition back, frees the engine handle.
    fn disarm(self) -> std::io::Result<()> {
        crate::sys::disarm_alarm()?;
        crate::sys::restore_alarm(&self.saved)?;
        let engine = INIT_ENGINE.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !engine.is_null() {
            // SAFETY: made by `Box::into_raw` in `arm`; the handler that read it can no longer
            // run (timer stopped, handler replaced), and the swap above took the only copy.
            drop(unsafe { Box::from_raw(engine) });
        }
        Ok(())
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

fn compile(
    engine: &Engine,
    name: &str,
    kind: GuestKind,
    bytes: &[u8],
    cache: Option<&CompileCache>,
    config: &Config,
) -> Result<(Compiled, CodeSource), Error> {
    if let Some(module) = cache.and_then(|c| c.load(engine, kind, bytes)) {
        return Ok((module, CodeSource::Cache));
    }
    if let Some(limits) = &config.compile {
        return crate::compile::compile_in_child(engine, name, kind, bytes, cache, limits);
    }
    let module = Compiled::new(engine, kind, bytes)
        .map_err(|e| Error::Compile { name: name.to_string(), source: boxed(e) })?;
    match cache.and_then(|c| c.store(engine, bytes, &module)) {
        Some(mapped) => Ok((mapped, CodeSource::CompiledAndCached)),
        None => Ok((module, CodeSource::Compiled)),
    }
}
