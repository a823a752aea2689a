//! zeroboot-py: a Python interpreter (RustPython, with its native modules and its pure-Python
//! standard library frozen into the binary) as a WASI preview1 command for zeroboot-wasm.
//!
//! The contract with the runtime:
//! - `wizer.initialize` (run once, in the zygote): builds the interpreter, imports the common
//!   modules and prepares the `__main__` namespace, all kept in a global. Idempotent. Opens no
//!   file and starts no thread.
//! - `zeroboot-reseed(hi, lo)` (run in every sandbox after the fork, before `_start`): reseeds
//!   `random`'s global generator from the 128 fresh bits. `hash()` of str/bytes is NOT reseeded:
//!   see [`reseed`].
//! - `_start`: initialises first if `wizer.initialize` did not run (a cold run), then runs
//!   `-c CODE`, `-m MODULE`, `FILE`, or stdin (no argument or `-`) in a fresh `__main__`,
//!   printing an uncaught exception's traceback to stderr (exit 1) and honouring `SystemExit`.
use rustpython_vm::{
    Interpreter, PyObjectRef, PyResult, Settings, VirtualMachine, builtins::PyDictRef, scope::Scope,
};
use std::cell::RefCell;
use std::io::Read;
use std::time::Instant;

/// Modules imported during initialisation so that a task finds them in `sys.modules`. Each one is
/// tried on its own; one that fails to import is skipped (and named when timing is on).
const WARM_MODULES: &[&str] = &[
    // Needed by the runner itself: tracebacks and `-m`.
    "linecache",
    "traceback",
    "runpy",
    // Commonly used by tasks (each costs 0-13 ms of initialisation).
    "abc",
    "argparse",
    "array",
    "ast",
    "base64",
    "binascii",
    "bisect",
    "calendar",
    "cmath",
    "collections",
    "collections.abc",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "enum",
    "fnmatch",
    "fractions",
    "functools",
    "glob",
    "graphlib",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "logging",
    "math",
    "numbers",
    "operator",
    "os",
    "pathlib",
    "pickle",
    "pprint",
    "queue",
    "random",
    "re",
    "secrets",
    "shlex",
    "shutil",
    "statistics",
    "string",
    "struct",
    "tempfile",
    "textwrap",
    "time",
    "tomllib",
    "types",
    "typing",
    "unicodedata",
    "urllib.parse",
    "uuid",
    "warnings",
    "weakref",
    "zlib",
    // datetime.strptime's helper (after the time zone shim, see HELPERS).
    "_strptime",
];

/// Python helpers the runner calls (compiled once, during initialisation).
const HELPERS: &str = r#"
import sys as _sys

def _time_zone_shim():
    # RustPython's time module has no tzname/timezone/altzone/daylight on WASI, which has no time
    # zones (local time is UTC); _strptime (datetime.strptime, time.strptime) needs them.
    import time
    for name, value in (("tzname", ("UTC", "UTC")), ("timezone", 0), ("altzone", 0), ("daylight", 0)):
        if not hasattr(time, name):
            setattr(time, name, value)

_time_zone_shim()

def reseed(n):
    import random
    random.seed(n)
    # A rehearsal of a task's path (environment, argv, compile, run, print), each step a no-op
    # or in a namespace thrown away: this fork copies the interpreter's pages it writes now,
    # while it waits for its task, rather than on the task's path. Nothing of it is left for the
    # task to see.
    import io, os
    refresh_environ(list(os.environ._data.items()))
    prepare(list(_sys.argv), None, list(_sys.path))
    exec(compile("print(1 + 1, file=_out)", "<zeroboot-rehearsal>", "exec"), {"_out": io.StringIO()})

def refresh_environ(pairs):
    # Called in a sandbox forked after initialisation: os.environ was built from the zygote's
    # environment; make it (and the C library's copy) the task's.
    import os
    if os.environ._data == dict(pairs):
        return
    os.environ.clear()
    for k, v in pairs:
        os.environ[os.fsdecode(k)] = os.fsdecode(v)

def prepare(argv, path0, base_path):
    _sys.argv = argv
    _sys.path[:] = ([path0] if path0 is not None else []) + base_path

def flush():
    # The status of the first failing flush: 0 when all went well.
    status = 0
    for f in (_sys.stdout, _sys.stderr):
        try:
            if f is not None:
                f.flush()
        except BaseException:
            status = -1
    return status
"#;

/// Everything `wizer.initialize` builds, kept for `_start`.
struct Guest {
    interp: Interpreter,
    runner: Runner,
}

/// The runner's state, beside the interpreter.
struct Runner {
    /// The `__main__` namespace prepared during initialisation (`__name__`, `__builtins__`, …),
    /// consumed by the one run this process (or fork) does.
    main: Option<Scope>,
    /// The helpers' namespace (see [`HELPERS`]).
    helpers: PyDictRef,
    /// `sys.path` as initialisation left it (without the script's directory).
    base_path: PyObjectRef,
}

thread_local! {
    // A wasm32-wasip1 module has one thread: this is a plain global.
    static GUEST: RefCell<Option<Guest>> = const { RefCell::new(None) };
}

fn timing() -> bool {
    std::env::var_os("ZEROBOOT_PY_TIMING").is_some_and(|v| !v.is_empty())
}

/// The phases of one `_start`, timed for `ZEROBOOT_PY_TIMING`.
struct Phases {
    last: Instant,
    parts: Vec<(&'static str, std::time::Duration)>,
}

impl Phases {
    fn new() -> Self {
        Phases { last: Instant::now(), parts: Vec::new() }
    }

    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.parts.push((name, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, d)) in self.parts.iter().enumerate() {
            write!(f, "{}{name} {}µs", if i == 0 { "" } else { ", " }, d.as_micros())?;
        }
        Ok(())
    }
}

fn build_interpreter() -> Interpreter {
    let mut settings = Settings::default();
    // No `site` (it only looks for site-packages directories, which a sandbox has none of), no
    // .pyc files written, no signal handlers (WASI has no signals).
    settings.import_site = false;
    settings.user_site_directory = false;
    settings.write_bytecode = false;
    settings.install_signal_handlers = false;
    settings.argv = vec![String::new()];
    let builder = Interpreter::builder(settings);
    let defs = rustpython_stdlib::stdlib_module_defs(&builder.ctx);
    builder.add_native_modules(&defs).add_frozen_modules(rustpython_pylib::FROZEN_STDLIB).build()
}

fn helper(vm: &VirtualMachine, helpers: &PyDictRef, name: &str) -> PyResult {
    helpers.get_item(name, vm)
}

fn initialize() {
    GUEST.with(|g| {
        if g.borrow().is_some() {
            return;
        }
        let verbose = timing();
        let t0 = Instant::now();
        let interp = build_interpreter();
        let t_vm = t0.elapsed();
        let (main, helpers, base_path) = interp.enter(|vm| {
            let helpers = vm.ctx.new_dict();
            let scope = Scope::with_builtins(None, helpers.clone(), vm);
            if let Err(e) = vm.run_string(scope, HELPERS, "<zeroboot-py>") {
                vm.print_exception(&e);
                panic!("zeroboot-py: the runner's helpers failed");
            }
            let t1 = Instant::now();
            for name in WARM_MODULES {
                if let Err(e) = vm.import(*name, 0) {
                    if verbose {
                        eprintln!("zeroboot-py: warm-up: import {name} failed:");
                        vm.print_exception(&e);
                    }
                }
            }
            let t_imports = t1.elapsed();
            let main = vm.new_scope_with_main().expect("zeroboot-py: creating __main__");
            let base_path = vm
                .sys_module
                .get_attr("path", vm)
                .and_then(|p| vm.call_method(&p, "copy", ()))
                .expect("zeroboot-py: sys.path");
            if verbose {
                eprintln!(
                    "zeroboot-py: initialised in {:?} (interpreter {:?}, {} warm-up imports {:?})",
                    t0.elapsed(),
                    t_vm,
                    WARM_MODULES.len(),
                    t_imports
                );
            }
            (main, helpers, base_path)
        });
        *g.borrow_mut() =
            Some(Guest { interp, runner: Runner { main: Some(main), helpers, base_path } });
    });
}

unsafe extern "C" {
    // wasi-libc: forget the environment and the preopened directories it has read so far, so that
    // a sandbox forked from this memory reads its own (both are read again lazily).
    fn __wasilibc_deinitialize_environ();
    fn __wasilibc_reset_preopens();
}

/// Wizer's convention: run once before the snapshot (here: before the zygote forks).
#[unsafe(export_name = "wizer.initialize")]
pub extern "C" fn wizer_initialize() {
    initialize();
    // SAFETY: both only reset wasi-libc's lazily-initialised tables; nothing holds pointers into
    // them (Rust's std reads the environment through getenv each time).
    unsafe {
        __wasilibc_deinitialize_environ();
        __wasilibc_reset_preopens();
    }
    GUEST.with(|g| {
        if let Some(guest) = g.borrow().as_ref() {
            guest.interp.enter(|vm| {
                let _ = helper(vm, &guest.runner.helpers, "flush").and_then(|f| f.call((), vm));
            });
        }
    });
}

/// Called by the runtime in every sandbox after the fork, before `_start`, with 128 fresh random
/// bits. Reseeds `random`'s module-level generator.
///
/// `hash()` of str and bytes keeps the secret drawn when the interpreter was created (once per
/// zygote): every str/bytes object caches its hash and every dict and set stores its keys' hashes,
/// so changing the secret after warm-up would make lookups of keys hashed before the change
/// fail (module, type and instance dicts included). Doing it safely would need the VM to reset
/// every live str/bytes hash cache and rebuild every hash table.
#[unsafe(export_name = "zeroboot-reseed")]
pub extern "C" fn reseed(hi: i64, lo: i64) {
    let t0 = Instant::now();
    let bits = ((hi as u64 as u128) << 64) | (lo as u64 as u128);
    GUEST.with(|g| {
        let g = g.borrow();
        // Not initialised: `_start` will initialise, seeding everything from the OS.
        let Some(guest) = g.as_ref() else { return };
        guest.interp.enter(|vm| {
            let n = vm.ctx.new_int(bits);
            if let Err(e) =
                helper(vm, &guest.runner.helpers, "reseed").and_then(|f| f.call((n,), vm))
            {
                vm.print_exception(&e);
            }
        });
    });
    if timing() {
        eprintln!("zeroboot-py: reseed took {:?}", t0.elapsed());
    }
}

/// What `_start` was asked to run.
enum Program {
    Command(String),
    Module(String),
    File(String),
    Stdin,
}

const USAGE: &str = "usage: zeroboot-py [-c cmd | -m mod | file | -] [arg] ...";

/// CPython's command line, reduced to what a sandbox needs: `-c`, `-m`, a file, `-` or nothing.
/// Returns the program and the new `sys.argv`, or the exit code of a usage error.
fn parse_args(args: Vec<String>) -> Result<(Program, Vec<String>), u32> {
    let mut rest = args.into_iter().skip(1);
    match rest.next() {
        None => Ok((Program::Stdin, vec![String::new()])),
        Some(a) if a == "-" => Ok((Program::Stdin, std::iter::once(a).chain(rest).collect())),
        Some(a) if a == "-c" || a == "-m" => {
            let Some(v) = rest.next() else {
                eprintln!("Argument expected for the {a} option\n{USAGE}");
                return Err(2);
            };
            if a == "-c" {
                Ok((Program::Command(v), std::iter::once(a).chain(rest).collect()))
            } else {
                // runpy replaces argv[0] with the module's path.
                Ok((Program::Module(v), std::iter::once(a).chain(rest).collect()))
            }
        }
        Some(a) if a.starts_with("-c") || a.starts_with("-m") => {
            // `-cCODE` / `-mMODULE`, as CPython accepts.
            let (flag, v) = a.split_at(2);
            let argv = std::iter::once(flag.to_owned()).chain(rest).collect();
            Ok((
                if flag == "-c" {
                    Program::Command(v.to_owned())
                } else {
                    Program::Module(v.to_owned())
                },
                argv,
            ))
        }
        Some(a) if a == "--" => match rest.next() {
            None => Ok((Program::Stdin, vec![String::new()])),
            Some(f) => Ok((Program::File(f.clone()), std::iter::once(f).chain(rest).collect())),
        },
        Some(a) if a.starts_with('-') && a.len() > 1 => {
            eprintln!("Unknown option: {a}\n{USAGE}");
            Err(2)
        }
        Some(f) => Ok((Program::File(f.clone()), std::iter::once(f).chain(rest).collect())),
    }
}

/// The directory CPython puts first on `sys.path` for a script.
fn script_dir(path: &str) -> String {
    match path.rfind('/') {
        Some(0) => "/".to_owned(),
        Some(i) => path[..i].to_owned(),
        None => String::new(),
    }
}

/// The task's environment, read from WASI (not from wasi-libc's copy, which may be the zygote's).
fn wasi_environ() -> Vec<(Vec<u8>, Vec<u8>)> {
    std::env::vars_os()
        .map(|(k, v)| {
            use std::os::wasi::ffi::OsStrExt;
            (k.as_bytes().to_vec(), v.as_bytes().to_vec())
        })
        .collect()
}

fn run(
    vm: &VirtualMachine,
    guest: &mut Runner,
    warm: bool,
    program: Program,
    argv: Vec<String>,
    phases: &mut Phases,
) -> u32 {
    let result = (|| -> PyResult<()> {
        if warm {
            let pairs: Vec<PyObjectRef> = wasi_environ()
                .into_iter()
                .map(|(k, v)| {
                    vm.ctx
                        .new_tuple(vec![vm.ctx.new_bytes(k).into(), vm.ctx.new_bytes(v).into()])
                        .into()
                })
                .collect();
            helper(vm, &guest.helpers, "refresh_environ")?.call((vm.ctx.new_list(pairs),), vm)?;
        }
        phases.mark("environ");
        let path0 = match &program {
            Program::Command(_) | Program::Stdin | Program::Module(_) => Some(String::new()),
            Program::File(f) => Some(script_dir(f)),
        };
        let argv_obj =
            vm.ctx.new_list(argv.into_iter().map(|a| vm.ctx.new_str(a).into()).collect());
        helper(vm, &guest.helpers, "prepare")?
            .call((argv_obj, path0, guest.base_path.clone()), vm)?;
        let scope = match guest.main.take() {
            Some(s) => s,
            None => vm.new_scope_with_main()?,
        };
        phases.mark("prepare");
        match program {
            Program::Command(code) => vm.run_string(scope, &code, "<string>").map(drop),
            Program::Stdin => {
                let mut src = Vec::new();
                if let Err(e) = std::io::stdin().read_to_end(&mut src) {
                    return Err(vm.new_os_error(format!("reading stdin: {e}")));
                }
                let src = String::from_utf8_lossy(&src);
                vm.run_string(scope, &src, "<stdin>").map(drop)
            }
            Program::File(path) => match std::fs::read(&path) {
                Ok(src) => {
                    let src = String::from_utf8_lossy(&src);
                    scope.globals.set_item("__file__", vm.ctx.new_str(path.as_str()).into(), vm)?;
                    scope.globals.set_item("__cached__", vm.ctx.none(), vm)?;
                    vm.run_string(scope, &src, &path).map(drop)
                }
                Err(e) => {
                    let errno = e.raw_os_error().unwrap_or(2);
                    let msg = e.to_string();
                    let msg = msg.split(" (os error").next().unwrap_or(&msg);
                    eprintln!("zeroboot-py: can't open file {path:?}: [Errno {errno}] {msg}");
                    Err(vm.new_exception(
                        vm.ctx.exceptions.system_exit.to_owned(),
                        vec![vm.ctx.new_int(2).into()],
                    ))
                }
            },
            Program::Module(name) => {
                let runpy = vm.import("runpy", 0)?;
                let f = runpy.get_attr("_run_module_as_main", vm)?;
                f.call((name, true), vm).map(drop)
            }
        }
    })();
    phases.mark("program");
    let mut flush_status = flush(vm, guest);
    let code = match result {
        Ok(()) => 0,
        Err(exc) => vm.handle_exit_exception(exc),
    };
    rustpython_vm::stdlib::atexit::_run_exitfuncs(vm);
    let status2 = flush(vm, guest);
    if flush_status == 0 {
        flush_status = status2;
    }
    phases.mark("exit");
    // Like CPython: a failed flush of stdout turns a clean exit into 120.
    if code == 0 && flush_status != 0 { 120 } else { code }
}

fn flush(vm: &VirtualMachine, guest: &Runner) -> i32 {
    helper(vm, &guest.helpers, "flush")
        .and_then(|f| f.call((), vm))
        .ok()
        .and_then(|r| r.try_into_value::<i32>(vm).ok())
        .unwrap_or(-1)
}

fn main() {
    let t0 = Instant::now();
    let args: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    let (program, argv) = match parse_args(args) {
        Ok(p) => p,
        Err(code) => std::process::exit(code as i32),
    };
    let warm = GUEST.with(|g| g.borrow().is_some());
    if !warm {
        initialize();
    }
    let mut phases = Phases::new();
    let code = GUEST.with(|g| {
        let mut g = g.borrow_mut();
        let guest = g.as_mut().expect("initialised");
        let Guest { interp, runner } = guest;
        interp.enter(|vm| run(vm, runner, warm, program, argv, &mut phases))
    });
    if timing() {
        eprintln!("zeroboot-py: _start took {:?} (warm: {warm}): {phases}", t0.elapsed());
    }
    // CPython's exit status is the code modulo 256. A clean exit returns from `_start`
    // instead: `proc_exit` ends the guest by unwinding it as an error, which costs the runtime
    // ~0.5 ms more (measured with `worker`, 300 `print(1+1)` tasks). The interpreter is not
    // dropped on the way out (that would run finalizers and free every object for nothing).
    if code & 0xff != 0 {
        std::process::exit((code & 0xff) as i32);
    }
    GUEST.with(|g| std::mem::forget(g.borrow_mut().take()));
}
