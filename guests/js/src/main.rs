//! zeroboot-js: a JavaScript interpreter guest (QuickJS-ng through rquickjs) for zeroboot-wasm.
//!
//! A WASI preview1 command with two extra exports, the contract the runtime relies on:
//! - `wizer.initialize` `() -> ()`: creates the runtime and context, installs the host objects
//!   (console, print, timers, a reseedable Math.random) and warms the engine up. Called once in
//!   the zygote; every sandbox is a fork of the memory after it. Idempotent.
//! - `zeroboot-reseed` `(i64, i64) -> ()`: called in every sandbox after the fork and before
//!   `_start` with 128 fresh bits from the OS; reseeds Math.random.
//! - `_start` (`main`): initialises if nobody did (a cold run), then runs the script given as
//!   `-e CODE`, `FILE` or on stdin (no argument or `-`); arguments after it go to `scriptArgs`.
//!   Exit 0, or 1 after an uncaught exception / syntax error / unhandled rejection (message and
//!   stack on stderr), 2 for a usage error.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::process::exit;
use std::time::Duration;

use rquickjs::{
    CatchResultExt, CaughtError, Context, Ctx, Function, Object, Persistent, Runtime, Value,
    context::EvalOptions, qjs,
};

/// console, print, inspect, timers, error formatting. Evaluates to a function taking the
/// native helpers and returning the hooks the event loop below calls.
const PRELUDE: &str = include_str!("prelude.js");
/// Exercises what a typical first task touches, so its lazy initialisation happens in the
/// zygote rather than in every sandbox.
const WARMUP: &str = include_str!("warmup.js");

struct Engine {
    // Field order matters only on drop, which never happens: the process leaves through
    // exit(), or `main` forgets the engine first (freeing a QuickJS runtime with live objects
    // would be wasted work).
    context: Context,
    _runtime: Runtime,
    /// formatError(e) -> string
    format_error: Persistent<Function<'static>>,
    /// runTimer() -> bool: runs the earliest timer (sleeping until it is due); false if none.
    run_timer: Persistent<Function<'static>>,
}

thread_local! {
    static ENGINE: RefCell<Option<Engine>> = const { RefCell::new(None) };
    /// Rejected promises without a handler yet: (promise, reason).
    static REJECTIONS: RefCell<Vec<(Persistent<Value<'static>>, Persistent<Value<'static>>)>> =
        const { RefCell::new(Vec::new()) };
    /// xoshiro256++ state behind Math.random.
    static RNG: Cell<[u64; 4]> = const { Cell::new([1, 2, 3, 4]) };
}

// ---------------------------------------------------------------------------------------------
// Randomness

#[link(wasm_import_module = "wasi_snapshot_preview1")]
unsafe extern "C" {
    #[link_name = "random_get"]
    fn wasi_random_get(buf: *mut u8, len: usize) -> u16;
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn seed_rng(a: u64, b: u64) {
    let (mut x, mut y) = (a, b ^ 0x6A09_E667_F3BC_C908);
    let mut s = [splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut y), splitmix64(&mut y)];
    if s == [0; 4] {
        s[0] = 1; // the one state xoshiro cannot leave
    }
    RNG.with(|r| r.set(s));
}

/// Seeds from WASI random_get (falling back to the clock if the host refuses).
fn seed_rng_from_host() {
    let mut buf = [0u8; 16];
    let err = unsafe { wasi_random_get(buf.as_mut_ptr(), buf.len()) };
    let (a, b) = if err == 0 {
        (
            u64::from_le_bytes(buf[..8].try_into().unwrap()),
            u64::from_le_bytes(buf[8..].try_into().unwrap()),
        )
    } else {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        (t, t.rotate_left(17) ^ 0x5851_F42D_4C95_7F2D)
    };
    seed_rng(a, b);
}

/// xoshiro256++ next, as a double in [0, 1).
fn random_f64() -> f64 {
    RNG.with(|r| {
        let mut s = r.get();
        let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        r.set(s);
        (out >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    })
}

/// Wizer-style reseed hook: the runtime calls it in every fork with 128 fresh bits — in a
/// sandbox forked ahead of its task, while it waits for that task.
#[unsafe(export_name = "zeroboot-reseed")]
pub extern "C" fn zeroboot_reseed(a: u64, b: u64) {
    seed_rng(a, b);
    rehearse();
}

/// A rehearsal of a task's path (setting `scriptArgs`, compiling and running a script) that
/// leaves nothing a task can see: the fork copies the engine's pages it writes now, while it
/// waits for its task, rather than on the task's path. The task sets `scriptArgs` again.
fn rehearse() {
    ENGINE.with(|e| {
        let guard = e.borrow();
        let Some(engine) = guard.as_ref() else { return };
        engine.context.with(|ctx| {
            let _ = ctx.globals().set("scriptArgs", Vec::<String>::new());
            let mut opts = EvalOptions::default();
            opts.strict = false;
            opts.filename = Some("<zeroboot-rehearsal>".into());
            let _ = ctx.eval_with_options::<(), _>("void String(1 + 1);", opts);
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Initialisation

#[unsafe(export_name = "wizer.initialize")]
pub extern "C" fn wizer_initialize() {
    ensure_initialized(true);
}

/// Creates the engine unless that was done already. `warm_up`: also run the warm-up script,
/// which pays only when the initialised memory is reused (the zygote's, forked per task); a
/// cold run (`_start` without a prior `wizer.initialize`) skips it and does only what the task
/// itself needs.
fn ensure_initialized(warm_up: bool) {
    if ENGINE.with(|e| e.borrow().is_some()) {
        return;
    }
    seed_rng_from_host();
    let engine = match build_engine(warm_up) {
        Ok(engine) => engine,
        Err(msg) => {
            let _ = writeln!(std::io::stderr(), "zeroboot-js: initialisation failed: {msg}");
            exit(70);
        }
    };
    ENGINE.with(|e| *e.borrow_mut() = Some(engine));
}

fn build_engine(warm_up: bool) -> Result<Engine, String> {
    let runtime = Runtime::new().map_err(|e| e.to_string())?;
    runtime.set_host_promise_rejection_tracker(Some(Box::new(track_rejection)));
    let context = Context::full(&runtime).map_err(|e| e.to_string())?;

    let (format_error, run_timer) = context.with(|ctx| -> Result<_, String> {
        let hooks = install_host(&ctx).catch(&ctx).map_err(|e| e.to_string())?;
        let format_error: Function = hooks.get("formatError").map_err(|e| e.to_string())?;
        let run_timer: Function = hooks.get("runTimer").map_err(|e| e.to_string())?;
        let format_error = Persistent::save(&ctx, format_error);
        let run_timer = Persistent::save(&ctx, run_timer);

        if !warm_up {
            return Ok((format_error, run_timer));
        }
        // Warm-up: its output goes nowhere (it calls inspect, not console), and whatever it
        // leaves (promises) is drained here so no task inherits it. It reaches the hooks
        // (inspect, formatArgs) through a global that is deleted again right after.
        let globals = ctx.globals();
        globals.set("__zbHooks", hooks).map_err(|e| e.to_string())?;
        let mut opts = EvalOptions::default();
        opts.strict = false;
        opts.filename = Some("<warmup>".into());
        ctx.eval_with_options::<(), _>(WARMUP, opts)
            .catch(&ctx)
            .map_err(|e| format!("warm-up: {e}"))?;
        while drain_one_job(&ctx).map_err(|e| format!("warm-up job: {e}"))? {}
        globals.remove("__zbHooks").map_err(|e| e.to_string())?;
        Ok((format_error, run_timer))
    })?;
    REJECTIONS.with(|r| r.borrow_mut().clear());
    if warm_up {
        // Compact what the warm-up left, so the forks start from a collected heap.
        runtime.run_gc();
    }
    Ok(Engine { context, _runtime: runtime, format_error, run_timer })
}

fn track_rejection<'js>(ctx: Ctx<'js>, promise: Value<'js>, reason: Value<'js>, handled: bool) {
    REJECTIONS.with(|r| {
        let mut list = r.borrow_mut();
        if handled {
            list.retain(|(p, _)| p.clone().restore(&ctx).map(|p| p != promise).unwrap_or(false));
        } else {
            list.push((Persistent::save(&ctx, promise), Persistent::save(&ctx, reason)));
        }
    });
}

/// Native helpers handed to the prelude, which returns its hooks object.
fn install_host<'js>(ctx: &Ctx<'js>) -> rquickjs::Result<Object<'js>> {
    let natives = Object::new(ctx.clone())?;
    natives.set(
        "write",
        Function::new(ctx.clone(), |fd: i32, s: rquickjs::String| -> rquickjs::Result<()> {
            let s = s.to_string()?;
            // Each call is one line (or one block of lines) written out at once, so the output
            // of a task killed at its deadline is all there up to the kill.
            let _ = if fd == 2 {
                std::io::stderr().write_all(s.as_bytes())
            } else {
                let mut out = std::io::stdout().lock();
                out.write_all(s.as_bytes()).and_then(|_| out.flush())
            };
            Ok(())
        })?,
    )?;
    natives.set("random", Function::new(ctx.clone(), random_f64)?.with_name("random")?)?;
    natives.set(
        "sleep",
        Function::new(ctx.clone(), |ms: f64| {
            if ms > 0.0 && ms.is_finite() {
                std::thread::sleep(Duration::from_secs_f64(ms / 1000.0));
            }
        })?,
    )?;
    let mut opts = EvalOptions::default();
    opts.filename = Some("<prelude>".into());
    let setup: Function = ctx.eval_with_options(PRELUDE, opts)?;
    setup.call((natives,))
}

// ---------------------------------------------------------------------------------------------
// Running a task

enum Source {
    Code(String, &'static str),
    File(String),
    Stdin,
}

fn usage(msg: &str) -> ! {
    fail(&format!("{msg}\nusage: zeroboot-js [-e CODE | FILE | -] [ARGS...]"))
}

fn fail(msg: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "zeroboot-js: {msg}");
    exit(2);
}

fn main() {
    ensure_initialized(false);

    let mut args = std::env::args().skip(1);
    let source = match args.next().as_deref() {
        None | Some("-") => Source::Stdin,
        Some("-e") | Some("--eval") => match args.next() {
            Some(code) => Source::Code(code, "<cmdline>"),
            None => usage("-e needs an argument"),
        },
        Some("--") => match args.next() {
            Some(f) if f != "-" => Source::File(f),
            _ => Source::Stdin,
        },
        Some(f) if f.starts_with('-') => usage(&format!("unknown option {f}")),
        Some(f) => Source::File(f.to_string()),
    };
    let script_args: Vec<String> = args.collect();

    let (code, filename) = match source {
        Source::Code(code, name) => (code, name.to_string()),
        Source::Stdin => {
            let mut buf = Vec::new();
            if let Err(e) = std::io::stdin().read_to_end(&mut buf) {
                fail(&format!("reading stdin: {e}"));
            }
            (String::from_utf8_lossy(&buf).into_owned(), "<stdin>".to_string())
        }
        Source::File(path) => match std::fs::read(&path) {
            Ok(buf) => (String::from_utf8_lossy(&buf).into_owned(), path),
            Err(e) => fail(&format!("cannot read {path}: {e}")),
        },
    };

    let code = ENGINE.with(|e| {
        let guard = e.borrow();
        let engine = guard.as_ref().expect("initialised above");
        engine.context.with(|ctx| run(&ctx, engine, code, filename, script_args))
    });
    let _ = std::io::stdout().flush();
    // A clean exit returns from `_start`: `proc_exit` ends the guest by unwinding it as an
    // error, which costs the runtime ~0.5 ms more. The engine is not dropped on the way out.
    if code != 0 {
        exit(code);
    }
    ENGINE.with(|e| std::mem::forget(e.borrow_mut().take()));
}

fn run(ctx: &Ctx, engine: &Engine, code: String, filename: String, args: Vec<String>) -> i32 {
    if let Err(e) = ctx.globals().set("scriptArgs", args) {
        return report(ctx, engine, CaughtError::from_error(ctx, e), "");
    }
    let mut opts = EvalOptions::default();
    opts.strict = false;
    opts.filename = Some(filename);
    if let Err(e) = ctx.eval_with_options::<(), _>(code, opts).catch(ctx) {
        return report(ctx, engine, e, "");
    }
    // Event loop: promise jobs, then the earliest timer, until nothing is left.
    loop {
        loop {
            match drain_one_job(ctx) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return report(ctx, engine, e, ""),
            }
        }
        if let Some(reason) = take_unhandled_rejection(ctx) {
            return report(ctx, engine, reason, "(in promise) ");
        }
        let run_timer = match engine.run_timer.clone().restore(ctx) {
            Ok(f) => f,
            Err(e) => return report(ctx, engine, CaughtError::from_error(ctx, e), ""),
        };
        match run_timer.call::<_, bool>(()).catch(ctx) {
            Ok(true) => {}
            Ok(false) => return 0,
            Err(e) => return report(ctx, engine, e, ""),
        }
    }
}

/// Runs one pending promise job; Ok(false) when there was none.
fn drain_one_job<'js>(ctx: &Ctx<'js>) -> Result<bool, CaughtError<'js>> {
    let mut job_ctx = std::mem::MaybeUninit::<*mut qjs::JSContext>::uninit();
    let rt = unsafe { qjs::JS_GetRuntime(ctx.as_raw().as_ptr()) };
    match unsafe { qjs::JS_ExecutePendingJob(rt, job_ctx.as_mut_ptr()) } {
        0 => Ok(false),
        r if r > 0 => Ok(true),
        // Single context: the exception is pending on ours.
        _ => Err(CaughtError::from_error(ctx, rquickjs::Error::Exception)),
    }
}

fn take_unhandled_rejection<'js>(ctx: &Ctx<'js>) -> Option<CaughtError<'js>> {
    let first = REJECTIONS.with(|r| {
        let mut list = r.borrow_mut();
        if list.is_empty() { None } else { Some(list.remove(0)) }
    })?;
    let reason = first.1.restore(ctx).ok()?;
    Some(match reason.clone().into_exception() {
        Some(ex) => CaughtError::Exception(ex),
        None => CaughtError::Value(reason),
    })
}

/// Writes an uncaught error to stderr (through the prelude's formatError when it can) and
/// returns the exit code, 1.
fn report<'js>(ctx: &Ctx<'js>, engine: &Engine, err: CaughtError<'js>, what: &str) -> i32 {
    let value: Option<Value<'js>> = match &err {
        CaughtError::Exception(ex) => Some(ex.clone().into_value()),
        CaughtError::Value(v) => Some(v.clone()),
        CaughtError::Error(_) => None,
    };
    let text = value
        .and_then(|v| {
            let f = engine.format_error.clone().restore(ctx).ok()?;
            f.call::<_, String>((v,)).ok()
        })
        .unwrap_or_else(|| {
            // formatError itself failed (out of memory, say): what rquickjs can say without JS.
            let _ = ctx.catch();
            err.to_string()
        });
    let _ = std::io::stdout().flush();
    let mut stderr = std::io::stderr();
    let _ = match err {
        // Not a JS exception: a host-side failure (source with a NUL byte, say).
        CaughtError::Error(_) => writeln!(stderr, "zeroboot-js: {}", text.trim_end()),
        _ => writeln!(stderr, "Uncaught {what}{}", text.trim_end()),
    };
    1
}
