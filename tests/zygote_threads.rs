//! Library-level checks: the zygote refuses to fork a multi-threaded process, and templates
//! reject bad modules with the right error.
//!
//! libtest runs each test on a thread of its own, so this process always has at least two
//! threads (the main thread and the test's); the tests that need it also start a parked
//! helper thread so the count cannot drop to one under any harness setting.

mod common;

use common::guest;
use std::sync::mpsc;
use zeroboot_wasm::*;

/// Compiles in this (multi-threaded) test process: a compiler child cannot be forked from it.
/// The guests here are our own.
fn config(cache: &tempfile::TempDir) -> Config {
    let mut c = Config::new();
    c.cache_dir(Some(cache.path().to_path_buf()));
    c.compile_limits(None);
    c
}

/// Keeps one extra thread alive while it is in scope.
struct ExtraThread {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl ExtraThread {
    fn start() -> Self {
        let (stop, rx) = mpsc::channel::<()>();
        let (ready_tx, ready) = mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            ready_tx.send(()).expect("signal ready");
            let _ = rx.recv();
        });
        ready.recv().expect("helper thread started");
        Self { stop: Some(stop), handle: Some(handle) }
    }
}

impl Drop for ExtraThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn live_threads() -> usize {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    let rest = stat.rsplit_once(')').expect("stat format").1;
    rest.split_whitespace().nth(17).and_then(|f| f.parse().ok()).expect("num_threads field")
}

#[test]
fn zygote_refuses_to_fork_a_multithreaded_process() {
    let _extra = ExtraThread::start();
    let before = live_threads();
    assert!(before >= 2, "test process has {before} threads");

    let cache = tempfile::tempdir().expect("tempdir");
    let t = Template::from_file(guest("hello"), &config(&cache)).expect("template");
    let mut z = Zygote::new(t).expect("zygote");
    match z.run(&Task::new()) {
        Err(Error::NotSingleThreaded { threads }) => {
            assert!(threads >= 2, "reported {threads} threads");
        }
        Err(e) => panic!("expected NotSingleThreaded, got error: {}", e.one_line()),
        Ok(o) => panic!("the zygote forked a multi-threaded process: {o:?}"),
    }
    // Refusing is not fatal: it keeps refusing, the same way, as long as threads exist.
    match z.run(&Task::new().args(["again"])) {
        Err(Error::NotSingleThreaded { threads }) => assert!(threads >= 2),
        Err(e) => panic!("expected NotSingleThreaded, got error: {}", e.one_line()),
        Ok(o) => panic!("the zygote forked a multi-threaded process: {o:?}"),
    }
}

#[test]
fn running_in_this_process_refuses_a_multithreaded_process_before_confining_it() {
    let _extra = ExtraThread::start();
    let mnt_ns = || std::fs::read_link("/proc/self/ns/mnt").expect("read our mount namespace");
    let before = mnt_ns();
    let cache = tempfile::tempdir().expect("tempdir");
    for namespaces in [true, false] {
        let options = LoadOptions {
            config: config(&cache),
            isolation: Isolation { namespaces, ..Isolation::default() },
            ..LoadOptions::default()
        };
        match run_in_this_process(guest("hello"), &options, &Task::new()) {
            Err(Error::NotSingleThreaded { threads }) => assert!(threads >= 2),
            Err(e) => panic!("expected NotSingleThreaded, got error: {}", e.one_line()),
            Ok(o) => panic!("a multi-threaded process ran a task as its own zygote: {o:?}"),
        }
    }
    // Refused before any confinement: still in the host's mount namespace, and free to make
    // calls a zygote's seccomp filter would refuse (a thread of its own).
    assert_eq!(mnt_ns(), before);
    std::thread::spawn(|| {}).join().expect("a thread can still be started");
}

#[test]
fn refusal_error_is_one_line_and_not_bad_input() {
    let e = Error::NotSingleThreaded { threads: 3 };
    let line = e.one_line();
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains('3'), "{line}");
    assert!(!e.is_bad_input(), "a threaded host is not the caller's bad input");
}

#[test]
fn garbage_is_not_wasm() {
    let cache = tempfile::tempdir().expect("tempdir");
    match Template::from_bytes("x", b"garbage", &config(&cache)) {
        Err(Error::NotWasm { name }) => assert_eq!(name, "x"),
        Err(e) => panic!("expected NotWasm, got {}", e.one_line()),
        Ok(_) => panic!("garbage accepted as a module"),
    }
    match Template::from_bytes("bin", &[0xff, 0x00, 0x13, 0x37], &config(&cache)) {
        Err(Error::NotWasm { .. }) => {}
        Err(e) => panic!("expected NotWasm, got {}", e.one_line()),
        Ok(_) => panic!("binary garbage accepted as a module"),
    }
    match Template::from_bytes("empty", b"", &config(&cache)) {
        Err(Error::NotWasm { .. }) => {}
        Err(e) => panic!("expected NotWasm, got {}", e.one_line()),
        Ok(_) => panic!("an empty file accepted as a module"),
    }
}

/// Builds a template from `wat` and returns the error, failing if it was accepted.
fn reject(name: &str, bytes: &[u8]) -> Error {
    let cache = tempfile::tempdir().expect("tempdir");
    match Template::from_bytes(name, bytes, &config(&cache)) {
        Err(e) => {
            assert!(e.is_bad_input(), "{} should be bad input", e.one_line());
            assert!(!e.one_line().contains('\n'), "{}", e.one_line());
            e
        }
        Ok(_) => panic!("{name} was accepted"),
    }
}

#[test]
fn invalid_binary_is_a_compile_error() {
    let mut bytes = b"\0asm\x01\0\0\0".to_vec();
    bytes.extend_from_slice(b"\x7f\x7f\x7fgarbage");
    let e = reject("invalid", &bytes);
    assert!(matches!(&e, Error::Compile { name, .. } if name == "invalid"), "{e:?}");
}

#[test]
fn a_component_is_a_template_and_its_bad_imports_are_named() {
    let cache = tempfile::tempdir().expect("tempdir");
    let t = Template::from_file(common::component("hello"), &config(&cache)).expect("component");
    assert_eq!(t.kind(), GuestKind::Component);
    assert!(t.exports().start, "a wasi:cli/command component is a command");
    // Instantiated like a module's template; a zygote with threads refuses to fork it.
    let _extra = ExtraThread::start();
    let mut z = Zygote::new(t).expect("zygote of a component");
    assert!(matches!(z.run(&Task::new()), Err(Error::NotSingleThreaded { .. })));
    let e = reject("comp", br#"(component (import "env:x/y" (instance (export "f" (func)))))"#);
    assert!(matches!(&e, Error::ComponentImport { name, .. } if name == "comp"), "{e:?}");
    let e = reject("empty", br#"(component)"#);
    assert!(matches!(&e, Error::NoStart { .. }), "{e:?}");
    // The cache keys kinds apart: the module and the component of one guest both load from it.
    for wasm in [guest("hello"), common::component("hello")] {
        Template::from_file(&wasm, &config(&cache)).expect("template");
    }
    for (wasm, kind) in
        [(guest("hello"), GuestKind::Module), (common::component("hello"), GuestKind::Component)]
    {
        let t = Template::from_file(&wasm, &config(&cache)).expect("template");
        assert_eq!(t.code_source(), CodeSource::Cache, "{}", wasm.display());
        assert_eq!(t.kind(), kind);
    }
}

#[test]
fn a_module_without_functions_or_with_a_mistyped_entry_is_refused() {
    let e = reject("nofuncs", br#"(module (memory (export "_start") 1))"#);
    assert!(matches!(&e, Error::NoStart { name } if name == "nofuncs"), "{e:?}");
    let e = reject("typed", br#"(module (func (export "_start") (result i32) (i32.const 0)))"#);
    assert!(matches!(&e, Error::BadExport { export, .. } if export == "_start"), "{e:?}");
    let e = reject(
        "reseed",
        br#"(module (func (export "_start")) (func (export "zeroboot-reseed") (param i32)))"#,
    );
    assert!(matches!(&e, Error::BadExport { export, .. } if export == "zeroboot-reseed"), "{e:?}");
    let e = reject("init", br#"(module (func (export "wizer.initialize") (param i32)))"#);
    assert!(matches!(&e, Error::BadExport { export, .. } if export == "wizer.initialize"), "{e:?}");
}

#[test]
fn unknown_import_is_named() {
    let e = reject("imp", br#"(module (import "env" "nope" (func)) (func (export "_start")))"#);
    match &e {
        Error::UnknownImport { name, module, field } => {
            assert_eq!(name, "imp");
            assert_eq!(module, "env");
            assert_eq!(field, "nope");
        }
        other => panic!("expected UnknownImport, got {other:?}"),
    }
    assert!(e.one_line().contains("env::nope"), "{}", e.one_line());
}

#[test]
fn trapping_start_function_is_an_instantiate_error() {
    let cache = tempfile::tempdir().expect("tempdir");
    let wat = br#"(module (func $s unreachable) (start $s) (func (export "_start")))"#;
    // Building the template runs none of the module's code; the zygote instantiates it.
    let t = Template::from_bytes("startfn", wat, &config(&cache)).expect("template");
    match Zygote::new(t) {
        Err(e) => {
            assert!(e.is_bad_input(), "{} should be bad input", e.one_line());
            assert!(matches!(&e, Error::Instantiate { .. }), "{e:?}");
        }
        Ok(_) => panic!("a trapping start function was instantiated"),
    }
}

#[test]
fn compiling_in_a_child_refuses_a_multithreaded_process() {
    let _extra = ExtraThread::start();
    let cache = tempfile::tempdir().expect("tempdir");
    let mut c = Config::new();
    c.cache_dir(Some(cache.path().to_path_buf()));
    match Template::from_bytes("text", br#"(module (func (export "_start")))"#, &c) {
        Err(Error::CompileNotSingleThreaded { threads }) => assert!(threads >= 2),
        Err(e) => panic!("expected CompileNotSingleThreaded, got {}", e.one_line()),
        Ok(_) => panic!("a compiler child was forked from a multi-threaded process"),
    }
    // Compiled in process once, the module is then loaded from the cache without a child.
    c.compile_limits(None);
    let t = Template::from_bytes("text", br#"(module (func (export "_start")))"#, &c)
        .expect("in-process compile");
    assert_eq!(t.code_source(), CodeSource::CompiledAndCached);
    c.compile_limits(Some(CompileLimits::default()));
    let t = Template::from_bytes("text", br#"(module (func (export "_start")))"#, &c)
        .expect("cached load");
    assert_eq!(t.code_source(), CodeSource::Cache);
}

#[test]
fn missing_file_is_read_module() {
    let cache = tempfile::tempdir().expect("tempdir");
    let p = cache.path().join("absent.wasm");
    match Template::from_file(&p, &config(&cache)) {
        Err(Error::ReadModule { path, source }) => {
            assert_eq!(path, p);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        Err(e) => panic!("expected ReadModule, got {}", e.one_line()),
        Ok(_) => panic!("a missing file was accepted"),
    }
}

#[test]
fn good_modules_build_templates() {
    let cache = tempfile::tempdir().expect("tempdir");
    let t = Template::from_file(guest("hello"), &config(&cache)).expect("hello template");
    assert_eq!(t.name(), guest("hello").display().to_string());
    let t = Template::from_bytes("text", br#"(module (func (export "_start")))"#, &{
        let mut c = Config::new();
        c.cache_dir(None);
        c.compile_limits(None);
        c
    })
    .expect("text template");
    assert_eq!(t.name(), "text");
    assert_eq!(t.code_source(), CodeSource::Compiled);
}

#[test]
fn compile_cache_is_used_the_second_time() {
    let cache = tempfile::tempdir().expect("tempdir");
    let first = Template::from_file(guest("hello"), &config(&cache)).expect("template");
    assert_eq!(first.code_source(), CodeSource::CompiledAndCached);
    let second = Template::from_file(guest("hello"), &config(&cache)).expect("template");
    assert_eq!(second.code_source(), CodeSource::Cache);
}
