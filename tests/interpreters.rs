//! The interpreter guests through the real binary: `js` (QuickJS) and `py` (RustPython),
//! warmed once in the zygote and forked per snippet. State does not leak between snippets,
//! random values differ in every fork, hostile snippets end with an honest status, and errors
//! reach stderr with a non-zero exit.

mod common;

use common::{bin, built_by, run_command, stderr, stdout};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::OnceLock;

/// The directory holding both interpreter modules, built once per test binary.
fn interpreters() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| built_by("build-interpreters.sh"))
}

/// Runs `zeroboot-wasm ARGS` with the interpreters found, feeding `stdin`.
fn zb(args: &[&str], stdin: &str) -> Output {
    let mut cmd = bin();
    cmd.env("ZEROBOOT_WASM_INTERPRETERS", interpreters()).args(args);
    run_command(cmd, stdin.as_bytes())
}

/// One outcome per request line, from `worker --lang LANG`.
fn worker(lang: &str, extra: &[&str], requests: &[Value]) -> Vec<Value> {
    let mut args = vec!["worker", "--lang", lang];
    args.extend_from_slice(extra);
    let input: String = requests.iter().map(|r| format!("{r}\n")).collect();
    let o = zb(&args, &input);
    assert!(o.status.success(), "worker failed: {}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

fn code(c: &str) -> Value {
    json!({ "code": c })
}

#[test]
fn js_and_py_print_and_exit_zero() {
    let o = zb(&["js", "-e", "console.log(1+1)"], "");
    assert_eq!((stdout(&o).as_str(), o.status.code()), ("2\n", Some(0)), "{}", stderr(&o));
    let o = zb(&["py", "-c", "print(1+1)"], "");
    assert_eq!((stdout(&o).as_str(), o.status.code()), ("2\n", Some(0)), "{}", stderr(&o));
    // Code from stdin, and a script file read on the host with its arguments.
    let o = zb(&["js"], "console.log([1,2,3].map(x => x * 2).join(','))");
    assert_eq!(stdout(&o), "2,4,6\n", "{}", stderr(&o));
    let o = zb(&["py"], "import json\nprint(json.dumps({'a': [1, 2]}))");
    assert_eq!(stdout(&o), "{\"a\": [1, 2]}\n", "{}", stderr(&o));
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("s.py");
    std::fs::write(&script, "import sys\nprint(' '.join(sys.argv[1:]))\n").expect("write");
    let o = zb(&["py", script.to_str().expect("utf-8"), "a", "b"], "");
    assert_eq!(stdout(&o), "a b\n", "{}", stderr(&o));
}

#[test]
fn errors_go_to_stderr_with_a_non_zero_exit() {
    for (args, needle) in [
        (vec!["js", "-e", "throw new Error('boom')"], "boom"),
        (vec!["js", "-e", "syntax error("], "SyntaxError"),
        (vec!["py", "-c", "raise ValueError('boom')"], "ValueError: boom"),
        (vec!["py", "-c", "def ("], "SyntaxError"),
    ] {
        let o = zb(&args, "");
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
    let o = zb(&["py", "-c", "import sys; sys.exit(7)"], "");
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
}

/// A clean exit returns from `_start` (not through `proc_exit`): nothing written before it may
/// be lost, `atexit` handlers and late timers still run, and the exit code is still right.
#[test]
fn a_clean_exit_keeps_all_output_and_runs_what_comes_last() {
    let big = 100_000;
    let o = zb(
        &[
            "py",
            "-c",
            &format!(
                "import atexit, sys\natexit.register(lambda: print('bye'))\n\
                 sys.stdout.write('x' * {big})\nprint('end', end='')"
            ),
        ],
        "",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{}endbye\n", "x".repeat(big)));
    let o = zb(&["py", "-c", "import sys\nprint('a')\nsys.exit(0)"], "");
    assert_eq!((stdout(&o).as_str(), o.status.code()), ("a\n", Some(0)), "{}", stderr(&o));
    // CPython's status is the code modulo 256: 256 is a clean exit, 257 is 1.
    for (code, want) in [(256, 0), (257, 1)] {
        let o = zb(&["py", "-c", &format!("print('c')\nraise SystemExit({code})")], "");
        assert_eq!((stdout(&o).as_str(), o.status.code()), ("c\n", Some(want)), "{code}");
    }
    let o = zb(
        &[
            "js",
            "-e",
            &format!("setTimeout(() => console.log('later'), 1); console.log('y'.repeat({big}))"),
        ],
        "",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{}\nlater\n", "y".repeat(big)));
}

#[test]
fn a_snippet_leaves_the_next_one_untouched() {
    let js = worker(
        "js",
        &[],
        &[
            code(
                "globalThis.leak = 1; Math.max = () => 42; function f() {}; console.log(typeof f)",
            ),
            code("console.log(typeof leak, typeof f, Math.max(1, 2))"),
        ],
    );
    assert_eq!(js[0]["stdout"], "function\n", "{}", js[0]);
    assert_eq!(js[1]["stdout"], "undefined undefined 2\n", "{}", js[1]);
    let py = worker(
        "py",
        &[],
        &[
            code(
                "import math, sys\nleak = 1\nmath.pi = 3\nsys.modules['json'].marker = 1\ndef f(): pass\nprint('set')",
            ),
            code(
                "import math, json\nprint('leak' in globals(), 'f' in globals(), math.pi > 3.1, hasattr(json, 'marker'))",
            ),
        ],
    );
    assert_eq!(py[0]["stdout"], "set\n", "{}", py[0]);
    assert_eq!(py[1]["stdout"], "False False True False\n", "{}", py[1]);
}

/// The stdout of 50 forks of one warm zygote must hold 50 distinct values.
fn assert_distinct(lang: &str, snippet: &str) {
    let requests: Vec<Value> = (0..50).map(|_| code(snippet)).collect();
    let out = worker(lang, &[], &requests);
    let values: HashSet<String> = out
        .iter()
        .map(|v| {
            assert_eq!(v["status"], "exited", "{v}");
            v["stdout"].as_str().expect("stdout").to_string()
        })
        .collect();
    assert_eq!(values.len(), 50, "{lang} `{snippet}`: {values:?}");
}

#[test]
fn random_values_differ_in_every_fork() {
    assert_distinct("js", "console.log(Math.random())");
    assert_distinct("py", "import random; print(random.random())");
}

/// Python's `hash()` of a str is seeded when the interpreter is created — in the zygote — and
/// every string and dict built during warm-up caches hashes made with that seed, so it cannot
/// change per fork (as with CPython's own `os.fork`). It differs between zygotes: each load
/// draws a new one.
#[test]
fn python_hash_seed_differs_between_zygotes() {
    let hashes: HashSet<String> = (0..3)
        .map(|_| {
            let o = zb(&["py", "-c", "print(hash('zeroboot'))"], "");
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            stdout(&o)
        })
        .collect();
    assert_eq!(hashes.len(), 3, "{hashes:?}");
}

#[test]
fn hostile_snippets_end_with_an_honest_status() {
    let status = |lang: &str, flags: &[&str], snippet: &str| -> Value {
        let mut args = vec![lang, "--json"];
        args.extend_from_slice(flags);
        args.extend([if lang == "js" { "-e" } else { "-c" }, snippet]);
        let o = zb(&args, "");
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stderr(&o)))
    };
    for (lang, snippet) in [("js", "while(true){}"), ("py", "while True: pass")] {
        let v = status(lang, &["--timeout", "1s"], snippet);
        assert_eq!(v["status"], "timeout", "{lang}: {v}");
    }
    for (lang, snippet) in [
        ("js", "let a = []; while (true) a.push(new Array(1e6).fill(1));"),
        ("py", "a = []\nwhile True: a.append(bytearray(10**6))"),
    ] {
        let v = status(lang, &["--max-memory", "256MiB", "--timeout", "30s"], snippet);
        assert_eq!(v["status"], "memory_limit", "{lang}: {v}");
    }
    // The worker goes on serving after each.
    let out = worker(
        "py",
        &["--timeout", "1s"],
        &[code("while True: pass"), code("raise KeyError('k')"), code("print('still here')")],
    );
    assert_eq!(out[0]["status"], "timeout", "{}", out[0]);
    assert_eq!(out[1]["exit_code"], 1, "{}", out[1]);
    assert_eq!(out[2]["stdout"], "still here\n", "{}", out[2]);
}

#[test]
fn the_interpreter_is_warmed_in_the_zygote() {
    for lang in ["js", "py"] {
        let out = worker(lang, &["--stats"], &[code("")]);
        let inits = &out[0]["zygote"]["initializers"];
        assert_eq!(inits, &json!(["wizer.initialize"]), "{lang}: {}", out[0]);
    }
}

#[test]
fn a_missing_interpreter_is_a_clear_error() {
    let empty = tempfile::tempdir().expect("tempdir");
    let o = bin()
        .env("ZEROBOOT_WASM_INTERPRETERS", empty.path())
        .args(["js", "-e", "1"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(66));
    assert!(stderr(&o).contains("zeroboot-js.wasm is missing"), "{}", stderr(&o));
}
