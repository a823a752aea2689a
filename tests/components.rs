//! Components (what `cargo build --target wasm32-wasip2` produces) through the real binary and
//! the library: the same guests as the core-module tests, built as components, must behave as
//! `wasmtime run` runs them (stdout, stderr, exit code, files: asserted exactly, since CI has no
//! wasmtime CLI to compare with), and the hostile twins must end with their module twins'
//! statuses. Also `--invoke` with WAVE values and `inspect` on the WIT guest `wit_tools`.

mod common;

use common::{component, guest, load_options, run, run_with_stdin, stderr, stdout, worker};
use serde_json::{Value, json};
use std::path::Path;
use zeroboot_wasm::{Error, Runtime, Status, Task};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn code(o: &std::process::Output) -> i32 {
    o.status.code().unwrap_or_else(|| panic!("killed by a signal: {o:?}"))
}

fn run_json(args: &[&str]) -> Value {
    let o = run(args);
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", stdout(&o), stderr(&o)))
}

#[test]
fn hello_runs_as_under_wasmtime() {
    let o = run(&["run", s(&component("hello"))]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "hello from a zeroboot-wasm sandbox\n");
    assert_eq!(stderr(&o), "");
}

#[test]
fn args_and_env_arrive_exactly() {
    let m = component("args_env");
    let o = run(&["run", "--env", "K=V", "--env", "EQ=a=b", s(&m), "plain", "--env", "", "x y"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let expected = "arg[0]=args_env.wasm\narg[1]=plain\narg[2]=--env\narg[3]=\narg[4]=x y\nenv:EQ=a=b\nenv:K=V\n";
    assert_eq!(stdout(&o), expected);
}

/// `wasi:cli/exit` in preview 2 takes `result` (0.2's `exit-with-code` is unstable and off in
/// `wasmtime run`): Rust's `process::exit(7)` becomes `exit(err)`, exit code 1.
#[test]
fn exit_codes_are_those_of_wasi_cli_exit() {
    let o = run(&["run", s(&component("exit_code")), "7"]);
    assert_eq!(code(&o), 1);
    assert_eq!(stdout(&o), "exiting with 7\n");
    assert_eq!(stderr(&o), "to stderr before exit\n");
    let o = run(&["run", s(&component("exit_code")), "0"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "exiting with 0\n");
    let v = run_json(&["run", "--json", s(&component("exit_code")), "3"]);
    assert_eq!(v["status"], "exited", "{v}");
    assert_eq!(v["exit_code"], 1, "{v}");
    assert_eq!(v["stderr"], "to stderr before exit\n", "{v}");
}

#[test]
fn stdin_passes_through() {
    let input: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
    let o = run_with_stdin(&["run", s(&component("echo"))], &input);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert!(o.stdout == input, "stdout differs from stdin");
    assert_eq!(stderr(&o), "echo: 200000 bytes\n");
}

#[test]
fn a_trap_exits_134_with_its_message() {
    let o = run(&["run", s(&component("trap"))]);
    assert_eq!(code(&o), 134);
    assert_eq!(stdout(&o), "about to trap\n");
    assert!(stderr(&o).contains("unreachable"), "{}", stderr(&o));
}

/// Each `NAME ok` / `NAME err KIND` line of the fs guest.
fn steps(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(' ')?;
            (rest == "ok" || rest.starts_with("err")).then(|| (name.to_string(), rest.to_string()))
        })
        .collect()
}

fn data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    std::fs::create_dir(&data).expect("mkdir data");
    std::fs::write(data.join("input.txt"), "from the host\n").expect("write input");
    (root, data)
}

#[test]
fn a_granted_directory_works_and_cannot_be_left() {
    for grant_flag in ["--dir", "--dir-ro"] {
        let mut outs = Vec::new();
        for wasm in [guest("fs"), component("fs")] {
            let (root, data) = data_dir();
            let grant = format!("{}::/data", s(&data));
            let o = run(&["run", grant_flag, &grant, s(&wasm), "/data"]);
            assert_eq!(code(&o), 0, "{grant_flag} {}: {}", s(&wasm), stderr(&o));
            let out = stdout(&o);
            for (name, result) in steps(&out) {
                if name.starts_with("escape") {
                    assert!(result.starts_with("err"), "{grant_flag}: {name} escaped: {out}");
                }
            }
            // Nothing appeared beside the granted directory.
            let beside: Vec<_> = std::fs::read_dir(root.path()).unwrap().flatten().collect();
            assert_eq!(beside.len(), 1, "{grant_flag}: {beside:?}");
            let result = std::fs::read_to_string(data.join("result.txt")).ok();
            if grant_flag == "--dir" {
                assert_eq!(result.as_deref(), Some("written by the guest\n"), "{out}");
                assert!(out.contains("input=from the host\n"), "{out}");
            } else {
                assert_eq!(result, None, "{out}");
            }
            outs.push(steps(&out));
        }
        assert_eq!(outs[0], outs[1], "{grant_flag}: the module and component steps differ");
        let symlinked = outs[1].iter().any(|(n, r)| n == "symlink" && r == "ok");
        assert_eq!(symlinked, grant_flag == "--dir", "{grant_flag}: {:?}", outs[1]);
    }
}

#[test]
fn without_a_grant_there_is_no_filesystem() {
    let m = run(&["run", s(&guest("fs")), "/data"]);
    let c = run(&["run", s(&component("fs")), "/data"]);
    assert_eq!(code(&m), code(&c), "{}", stderr(&c));
    assert_eq!(stderr(&m), stderr(&c));
    assert_eq!(steps(&stdout(&m)), steps(&stdout(&c)));
    assert!(steps(&stdout(&c)).iter().all(|(_, r)| r.starts_with("err")), "{}", stdout(&c));
}

/// The hostile twins: each ends as its core-module twin does.
#[test]
fn hostile_twins_end_with_their_module_twins_statuses() {
    let cases: [(&str, &[&str], &str); 5] = [
        ("spin", &["--timeout", "500ms"], "timeout"),
        ("alloc_bomb", &["--max-memory", "32MiB"], "memory_limit"),
        ("output_flood", &["--timeout", "500ms", "--max-output", "64KiB"], "timeout"),
        ("stack_overflow", &[], "trapped"),
        ("trap", &[], "trapped"),
    ];
    for (name, flags, status) in cases {
        let mut seen = Vec::new();
        for wasm in [guest(name), component(name)] {
            let mut args = vec!["run", "--json"];
            args.extend_from_slice(flags);
            args.push(s(&wasm));
            let v = run_json(&args);
            assert_eq!(v["status"], status, "{name} ({}): {v}", s(&wasm));
            seen.push((v["status"].clone(), v["stdout_truncated"].clone()));
        }
        assert_eq!(seen[0], seen[1], "{name}: module and component differ");
    }
}

#[test]
fn the_write_budget_applies_to_file_streams() {
    let (_root, data) = data_dir();
    let grant = format!("{}::/data", s(&data));
    let v = run_json(&[
        "run",
        "--json",
        "--dir",
        &grant,
        "--max-write",
        "100KiB",
        s(&component("fs_fill")),
        "/data",
        "bytes",
        "1000000",
    ]);
    assert_eq!(v["status"], "write_limit", "{v}");
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(msg.contains("max_write"), "{v}");
    let total: u64 =
        std::fs::read_dir(&data).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum();
    assert!(total <= 100 * 1024 + 14, "{total} bytes written past a 100 KiB budget");
}

/// `--max-files` as for modules (`limits::write_budget`): 500 files under a budget of 100
/// leave exactly 100; directories count too.
#[test]
fn the_files_budget_applies_to_components() {
    for (mode, n, budget) in [("files", "500", "100"), ("dirs", "50", "20")] {
        let dir = tempfile::tempdir().unwrap();
        let grant = format!("{}::/data", s(dir.path()));
        let v = run_json(&[
            "run",
            "--json",
            "--dir",
            &grant,
            "--max-files",
            budget,
            s(&component("fs_fill")),
            "/data",
            mode,
            n,
        ]);
        assert_eq!(v["status"], "write_limit", "{mode}: {v}");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(msg.contains("max_files") && msg.contains(budget), "{mode}: {v}");
        let entries = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(entries.to_string(), budget, "{mode}");
    }
    // Opening existing files with `create` creates nothing and is not charged.
    let dir = tempfile::tempdir().unwrap();
    let grant = format!("{}::/data", s(dir.path()));
    let fill = component("fs_fill");
    let args = ["run", "--json", "--dir", &grant, "--max-files", "10", s(&fill), "/data"];
    let v = run_json(&[&args[..], &["files", "10"]].concat());
    assert_eq!(v["status"], "exited", "{v}");
    assert_eq!(v["stdout"], "done files 10\n", "{v}");
    let v = run_json(&[&args[..], &["files", "10"]].concat());
    assert_eq!(v["stdout"], "done files 10\n", "rewriting existing files: {v}");
}

/// A pool of warm component sandboxes; the zygote stays single-threaded and a sandbox writing
/// files starts no thread (seccomp, enforcing, would end it `sandbox_violation`).
#[test]
fn worker_runs_components_from_a_single_threaded_zygote() {
    let out = worker(
        &component("args_env"),
        &["--stats", "--pool", "2"],
        &[
            json!({"args": ["a"], "env": {"K": "V"}}).to_string(),
            json!({"args": ["b"]}).to_string(),
            json!({}).to_string(),
        ],
    );
    let m = component("args_env");
    let expect = [
        format!("arg[0]={}\narg[1]=a\nenv:K=V\n", s(&m)),
        format!("arg[0]={}\narg[1]=b\n", s(&m)),
        format!("arg[0]={}\n", s(&m)),
    ];
    for (v, e) in out.iter().zip(expect) {
        assert_eq!(v["status"], "exited", "{v}");
        assert_eq!(v["stdout"], e, "{v}");
        assert_eq!(v["zygote"]["threads"], 1, "{v}");
    }
    let (_root, data) = data_dir();
    let grant = format!("{}::/data", s(&data));
    let out = worker(
        &component("fs"),
        &["--stats", "--dir", &grant, "--seccomp", "enforce"],
        &[json!({"args": ["/data"]}).to_string(), json!({"args": ["/data"]}).to_string()],
    );
    for v in &out {
        assert_eq!(v["status"], "exited", "{v}");
        assert!(v["stdout"].as_str().unwrap_or_default().contains("write_result ok"), "{v}");
        assert_eq!(v["zygote"]["threads"], 1, "{v}");
    }
}

#[test]
fn invoke_takes_and_prints_wave_values() {
    let t = component("wit_tools");
    let cases = [
        ("add(1, 2)", "3"),
        ("greet(\"zb\")", "\"hello, zb!\""),
        ("area(rect({x: 2, y: 3}))", "6"),
        ("area(empty)", "0"),
        (
            "summarize({id: 7, name: \"box\", tags: [\"a\", \"b\"], note: none, color: green})",
            "\"#7 box [a,b] - green\"",
        ),
        ("find([\"a\", \"b\"], \"b\")", "some(1)"),
        ("find([], \"b\")", "none"),
        ("divide(1.0, 0.0)", "err(\"division by zero\")"),
        ("divide(1.0, 4.0)", "ok(0.25)"),
        ("shift({x: 1, y: 1}, 2, 3)", "{x: 3, y: 4}"),
        ("granted({read, exec})", "[\"read\", \"exec\"]"),
        ("swap((7, \"x\"))", "(\"x\", 7)"),
        ("bump()", "101"),
    ];
    for (call, want) in cases {
        let o = run(&["run", "--invoke", call, s(&t)]);
        assert_eq!(code(&o), 0, "{call}: {}", stderr(&o));
        assert_eq!(stdout(&o), format!("{want}\n"), "{call}");
    }
    // Every sandbox starts from the warm instance (its `wizer-initialize` ran once, in the
    // zygote): the counter is 100 before each task's call, whatever ran before.
    let o = run(&["run", "--invoke", "bump()", s(&t)]);
    assert_eq!(stdout(&o), "101\n");
    let o = run(&["run", "--no-init", "--invoke", "bump()", s(&t)]);
    assert_eq!(stdout(&o), "1\n", "{}", stderr(&o));
    // An export that does not exist, or a call whose arguments do not fit its WIT types, is
    // refused before any sandbox runs: a usage error, with the parser's precise message.
    let o = run(&["run", "--invoke", "nope()", s(&t)]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("no function named `nope`"), "{}", stderr(&o));
    for (call, why) in [
        ("add(1, \"two\")", "invalid value type"),
        ("add(1)", "missing"),
        ("area(hexagon)", "hexagon"),
        ("summarize({id: 7})", "missing field"),
        ("add(1, 2", "unexpected end"),
    ] {
        let o = run(&["run", "--invoke", call, s(&t)]);
        assert_eq!(code(&o), 2, "{call}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(&format!("cannot call `{call}`")), "{call}: {err}");
        assert!(err.to_lowercase().contains(why), "{call}: wanted {why:?} in {err}");
    }
    // A hostile export is stopped like a hostile command.
    let o = run(&["run", "--timeout", "300ms", "--invoke", "spin()", s(&t)]);
    assert_eq!(code(&o), 124, "{}", stderr(&o));
}

#[test]
fn a_component_without_wasi_cli_run_needs_invoke() {
    let o = run(&["run", s(&component("wit_tools"))]);
    assert_eq!(code(&o), 65, "{}", stderr(&o));
    assert!(stderr(&o).contains("--invoke"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fork_server_runs_components_concurrently() {
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new();
    let args = rt.load(component("args_env"), load_options(&cache, 2)).await.expect("load");
    let tools = rt.load(component("wit_tools"), load_options(&cache, 2)).await.expect("load");
    let mut joins = Vec::new();
    for i in 0..60usize {
        let (args, tools) = (args.clone(), tools.clone());
        joins.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let o = args.run(&Task::new().args([format!("n{i}")])).await.expect("run");
                assert_eq!(o.status, Status::Exited, "{o:?}");
                assert!(o.stdout_text().ends_with(&format!("arg[1]=n{i}\n")), "{o:?}");
            } else {
                let o = tools.run(&Task::new().invoke(format!("add({i}, 1)"))).await.expect("run");
                assert_eq!(o.status, Status::Exited, "{o:?}");
                assert_eq!(o.stdout_text(), format!("{}\n", i + 1));
                let o = tools.run(&Task::new().invoke("bump")).await.expect("run");
                assert_eq!(o.stdout_text(), "101\n", "each task starts from the warm state");
            }
        }));
    }
    for j in joins {
        j.await.expect("task did not panic");
    }
    let stats = args.stats().await.expect("stats");
    assert_eq!(stats.threads, 1, "{stats:?}");
}

#[test]
fn inspect_describes_a_component() {
    let o = run(&["inspect", s(&component("wit_tools"))]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("inspect prints JSON");
    assert_eq!(v["kind"], "component");
    let add = v["exports"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == "zeroboot:tools/tools#add"))
        .unwrap_or_else(|| panic!("no add export: {v}"));
    assert_eq!(
        add["input_schema"],
        json!({
            "type": "object",
            "properties": {
                "a": {"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX},
                "b": {"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX},
            },
            "required": ["a", "b"],
            "additionalProperties": false,
        })
    );
    let o = run(&["inspect", s(&guest("hello"))]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("inspect prints JSON");
    assert_eq!(v["kind"], "module");
}

#[test]
fn worker_calls_exports_with_json_arguments() {
    let out = worker(
        &component("wit_tools"),
        &[],
        &[
            json!({"invoke": "summarize", "arguments": {"o": {"id": 7, "name": "box", "tags": ["a"], "color": "red"}}})
                .to_string(),
            json!({"invoke": "divide", "arguments": [1.0, 0.0]}).to_string(),
            json!({"invoke": "shift", "arguments": {"p": {"x": 1, "y": 2}, "dx": 1, "dy": 1}})
                .to_string(),
            json!({"invoke": "granted", "arguments": {"p": ["write"]}}).to_string(),
            json!({"invoke": "find", "arguments": {"items": ["x"], "needle": "y"}}).to_string(),
            json!({"invoke": "add", "arguments": {"a": 1}}).to_string(),
            json!({"invoke": "nope", "arguments": {}}).to_string(),
            json!({"invoke": "summarize", "arguments": {"o": {"id": 7, "name": "box", "tags": ["a", 2], "color": "red"}}})
                .to_string(),
            json!({"invoke": "add", "arguments": [2, 3]}).to_string(),
        ],
    );
    let results: Vec<&Value> = out.iter().map(|v| &v["result"]).collect();
    assert_eq!(results[0], &json!("#7 box [a] - red"), "{}", out[0]);
    assert_eq!(results[1], &json!({"err": "division by zero"}), "{}", out[1]);
    assert_eq!(results[2], &json!({"x": 2, "y": 3}), "{}", out[2]);
    assert_eq!(results[3], &json!(["write"]), "{}", out[3]);
    assert_eq!(results[4], &Value::Null, "{}", out[4]);
    assert_eq!(out[4]["stdout"], "null\n", "{}", out[4]);
    // Arguments that do not fit are refused by the host, before a sandbox is started, as
    // is an export that does not exist.
    assert_eq!(out[5]["status"], "invalid_request", "{}", out[5]);
    assert!(
        out[5]["message"].as_str().is_some_and(|m| m.contains("cannot call `add`: b: missing")),
        "{}",
        out[5]
    );
    assert_eq!(out[6]["status"], "invalid_request", "{}", out[6]);
    assert_eq!(out[7]["status"], "invalid_request", "{}", out[7]);
    let wrong = out[7]["message"].as_str().unwrap_or_default();
    assert!(wrong.contains("o.tags[1]: expected a string, got 2"), "{}", out[7]);
    assert_eq!(out[8]["status"], "exited", "the worker keeps serving: {}", out[8]);
}

/// A float argument reaches the export as the number the caller wrote (correctly rounded),
/// not one nudged by a decimal round trip on its way through the task frame: the host parses
/// the line, the sandbox parses the frame's header again. (Found by the `worker_line` fuzz
/// target.)
#[test]
fn float_arguments_reach_the_export_exactly() {
    let written = ["1.1071636248806372353e-297", "1.0963838812426355150e-282", "0.1", "2.5e-3"];
    let lines: Vec<String> = written
        .iter()
        .map(|a| format!(r#"{{"invoke": "divide", "arguments": [{a}, 1.0]}}"#))
        .collect();
    let out = worker(&component("wit_tools"), &[], &lines);
    for (a, o) in written.iter().zip(&out) {
        assert_eq!(o["status"], "exited", "{o}");
        // The guest prints `{"ok":X}`: X's text, parsed by the standard library.
        let stdout = o["stdout"].as_str().unwrap_or_default().trim();
        let x = stdout.strip_prefix(r#"{"ok":"#).and_then(|r| r.strip_suffix('}'));
        let got: f64 = x.and_then(|x| x.parse().ok()).unwrap_or_else(|| panic!("{o}"));
        let want: f64 = a.parse().unwrap();
        assert_eq!(got.to_bits(), want.to_bits(), "{a} came back as {got:e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_calls_exports_with_json_arguments() {
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new();
    let tools = rt.load(component("wit_tools"), load_options(&cache, 1)).await.expect("load");
    let o = tools.run(&Task::new().call_json("add", json!({"a": 40, "b": 2}))).await.expect("run");
    assert_eq!(o.status, Status::Exited, "{o:?}");
    assert_eq!(o.stdout_text(), "42\n");
    // The host checks the arguments against the types the zygote sent, before any sandbox.
    for (call, args) in [("add", json!({"a": "x", "b": 1})), ("add", json!([1, 2, 3]))] {
        let err = tools.run(&Task::new().call_json(call, args.clone())).await.expect_err("refused");
        assert!(matches!(err, Error::InvalidTask(_)), "{args}: {err}");
    }
    let err = tools.run(&Task::new().invoke("add(1, 2.5)")).await.expect_err("refused");
    let Error::InvalidTask(why) = err else { panic!("not an invalid task: {err}") };
    assert!(why.to_string().contains("cannot call `add(1, 2.5)`"), "{why}");
}

/// Preview 3 is not supported: a component importing a `wasi:*@0.3` interface is refused at
/// load, naming the import.
#[test]
fn a_preview3_component_is_refused_naming_its_import() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p3 = dir.path().join("p3.wat");
    let wat = r#"(component
        (import "wasi:cli/environment@0.3.0" (instance
            (export "get-arguments" (func (result (list string))))))
    )"#;
    std::fs::write(&p3, wat).expect("write p3.wat");
    let o = run(&["run", s(&p3)]);
    assert_eq!(code(&o), 65, "{}", stderr(&o));
    assert!(stderr(&o).contains("wasi:cli/environment@0.3.0"), "{}", stderr(&o));
}
