//! Real clients against the real binary on loopback: Python's reference MCP SDK (the `mcp`
//! package from PyPI, installed into target/mcp-venv by scripts/mcp-client.sh) driving
//! `zeroboot-wasm mcp` on stdio and `/mcp` in `serve`, and our standard-library Python client
//! (clients/python) driving the HTTP API.

mod common;

use common::{component, guest};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const KEY: &str = "test-key-0123456789abcdef";

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_zeroboot-wasm")
}

fn cache_dir() -> &'static Path {
    static CACHE: OnceLock<tempfile::TempDir> = OnceLock::new();
    CACHE.get_or_init(|| tempfile::tempdir().expect("cache dir")).path()
}

/// The flags every server of these tests gets: a shared compile cache, and namespaces off
/// where the machine cannot create them (the MCP layer is what is tested here).
fn base_flags() -> Vec<String> {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    let mut f = vec!["--cache-dir".to_string(), cache_dir().display().to_string()];
    if !*AVAILABLE.get_or_init(zeroboot_wasm::namespaces::available) {
        f.extend(["--namespaces".into(), "off".into()]);
    }
    f
}

/// The Python of the venv holding the `mcp` package (installed on first use; idempotent).
fn mcp_python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mcp-client.sh");
        let out = Command::new("bash").arg(script).output().expect("run scripts/mcp-client.sh");
        assert!(
            out.status.success(),
            "cannot install Python's `mcp` package (is PyPI reachable?):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// Runs tests/mcp/client.py with `args` and the operations `ops`; returns its answers.
fn mcp_client(args: &[String], ops: &Value) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.py");
    let mut child = Command::new(mcp_python())
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the MCP client");
    child.stdin.take().expect("stdin").write_all(ops.to_string().as_bytes()).expect("ops");
    let out = common::wait_bounded(child, Duration::from_secs(180), "the MCP client");
    assert!(
        out.status.success(),
        "the MCP client failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("client output {line:?}: {e}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr))
    })
}

/// A `serve` on a free loopback port with the key `KEY`.
struct Server {
    child: Child,
    base: String,
    stderr: Arc<Mutex<String>>,
    /// Its data directory (`--data-dir`).
    store: PathBuf,
    _data: tempfile::TempDir,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let data = tempfile::tempdir().expect("data dir");
        let keys = data.path().join("keys");
        std::fs::write(&keys, format!("{KEY}\n")).expect("key file");
        let mut child = Command::new(exe())
            .args(["serve", "--listen", "127.0.0.1:0", "--api-keys"])
            .arg(&keys)
            .arg("--data-dir")
            .arg(data.path().join("store"))
            .args(base_flags())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("line");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!("unexpected first line {line:?}; stderr:\n{}", stderr.lock().unwrap())
            })
            .to_string();
        let store = data.path().join("store");
        Server { child, base, stderr, store, _data: data }
    }

    fn upload(&self, name: &str, query: &str) -> Value {
        let bytes = std::fs::read(guest(name)).expect("guest");
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/v1/tools?name={name}{query}", self.base))
            .bearer_auth(KEY)
            .body(bytes)
            .send()
            .expect("upload");
        assert!(r.status().is_success(), "upload {name}: {}", r.status());
        r.json().expect("JSON")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn texts(answer: &Value) -> Vec<String> {
    answer["content"]
        .as_array()
        .unwrap_or_else(|| panic!("no content in {answer}"))
        .iter()
        .map(|t| t.as_str().unwrap_or_default().to_string())
        .collect()
}

fn tool_names(answer: &Value) -> Vec<String> {
    let mut names: Vec<String> = answer["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {answer}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

/// The calls both transports must answer alike, and what each must give.
fn common_ops() -> Vec<Value> {
    vec![
        json!({"op": "call", "name": "hello", "arguments": {}}),
        json!({"op": "call", "name": "args_env",
               "arguments": {"args": ["one", "two words"], "env": {"COLOR": "teal"}}}),
        json!({"op": "call", "name": "spin", "arguments": {"limits": {"timeout_ms": 300}}}),
        json!({"op": "call", "name": "run_javascript",
               "arguments": {"code": "console.log([1,2,3].map(x => x * 2).join(','))"}}),
        json!({"op": "call", "name": "run_python", "arguments": {"code": "print(sum(range(10)))"}}),
        json!({"op": "call", "name": "run_python",
               "arguments": {"code": "import sys; print('bad', file=sys.stderr); sys.exit(3)"}}),
        json!({"op": "call", "name": "hello", "arguments": {"argz": ["typo"]}}),
        json!({"op": "call", "name": "args_env", "arguments": {"args": "not an array"}}),
        json!({"op": "call", "name": "args_env", "arguments": {"limits": {"timeout_ms": 999999999}}}),
        json!({"op": "call", "name": "run_python", "arguments": {}}),
        json!({"op": "call", "name": "no_such_tool", "arguments": {}}),
    ]
}

fn check_common(answers: &[Value]) {
    let [hello, args_env, spin, js, py, py_fail, typo, not_array, too_long, no_code, unknown] =
        answers
    else {
        panic!("{} answers: {answers:?}", answers.len())
    };
    assert_eq!(hello["isError"], false, "{hello}");
    assert_eq!(texts(hello)[0], "hello from a zeroboot-wasm sandbox\n");
    assert_eq!(hello["structured"]["status"], "exited");

    let out = &texts(args_env)[0];
    assert!(out.contains("arg[1]=one\narg[2]=two words\n"), "{out}");
    assert!(out.contains("env:COLOR=teal\n"), "{out}");

    // A hostile tool ends at its deadline, marked as an error with its status.
    assert_eq!(spin["isError"], true, "{spin}");
    assert_eq!(spin["structured"]["status"], "timeout", "{spin}");
    assert!(texts(spin).last().unwrap().starts_with("status: timeout"), "{spin}");

    assert_eq!(texts(js)[0], "2,4,6\n", "{js}");
    assert_eq!(js["isError"], false);
    assert_eq!(texts(py)[0], "45\n", "{py}");
    assert_eq!(py["isError"], false);

    // A guest that exits non-zero: an error result, stderr and the exit code in it.
    assert_eq!(py_fail["isError"], true, "{py_fail}");
    let t = texts(py_fail);
    assert_eq!(t[0], "", "stdout is empty: {py_fail}");
    assert_eq!(t[1], "stderr:\nbad\n", "{py_fail}");
    assert_eq!(t[2], "status: exited, exit code 3", "{py_fail}");

    // Bad arguments and unknown tools are JSON-RPC errors (invalid params), not results.
    for (bad, needle) in [
        (typo, "unknown field `argz`"),
        (not_array, "invalid arguments"),
        (too_long, "longer than the server's maximum"),
        (no_code, "missing field `code`"),
        (unknown, "unknown tool \"no_such_tool\""),
    ] {
        assert_eq!(bad["error"]["code"], -32602, "{bad}");
        let message = bad["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

#[test]
fn mcp_over_stdio_serves_the_store_and_tool_files_each_call_in_a_fork() {
    // A `serve` owns the store; `zeroboot-wasm mcp` serves the same directory beside it.
    let server = Server::start(&[]);
    let hello = server.upload("hello", "&description=Greets%20the%20caller");
    // A tool file with a sidecar giving it a name and its own input schema: its arguments
    // arrive as JSON on stdin.
    let tools = tempfile::tempdir().expect("tools");
    let echo = tools.path().join("echo.wasm");
    std::fs::copy(guest("echo"), &echo).expect("copy echo");
    std::fs::write(
        tools.path().join("echo.tool.json"),
        json!({
            "name": "echo_json",
            "description": "Echoes its arguments",
            "input_schema": {"type": "object", "properties": {"text": {"type": "string"}},
                             "required": ["text"]},
        })
        .to_string(),
    )
    .expect("sidecar");
    let mut args: Vec<String> =
        vec!["stdio".into(), exe().into(), "mcp".into(), "--data-dir".into()];
    args.push(server.store.display().to_string());
    args.extend(base_flags());
    for name in ["args_env", "spin", "scratch"] {
        args.extend(["--tool".to_string(), guest(name).display().to_string()]);
    }
    args.extend(["--tool".to_string(), echo.display().to_string()]);
    args.extend(["--timeout".to_string(), "20s".to_string()]);

    let mut ops = vec![json!({"op": "list"})];
    ops.extend(common_ops());
    ops.push(json!({"op": "call", "name": "echo_json", "arguments": {"text": "hi"}}));
    ops.push(json!({"op": "call", "name": "echo_json", "arguments": {"other": 1}}));
    // A tool uploaded to `serve` while the session is open is listed and callable.
    ops.push(json!({"op": "upload", "url": format!("{}/v1/tools?name=exit_code", server.base),
                    "key": KEY, "file": guest("exit_code")}));
    ops.push(json!({"op": "list"}));
    ops.push(json!({"op": "call", "name": "exit_code", "arguments": {"args": ["7"]}}));
    let answers = mcp_client(&args, &json!(ops));

    let list = &answers[0];
    assert_eq!(
        tool_names(list),
        ["args_env", "echo_json", "hello", "run_javascript", "run_python", "scratch", "spin"]
    );
    let listed = list["tools"].as_array().unwrap();
    let h = listed.iter().find(|t| t["name"] == "hello").unwrap();
    assert_eq!(h["description"], "Greets the caller");
    let props = &h["inputSchema"]["properties"];
    for field in ["args", "stdin", "env"] {
        assert!(props.get(field).is_some(), "{field} not in {h}");
    }
    assert_eq!(props["args"]["items"]["type"], "string");
    // `files` is offered to a tool that can open files, where sandboxes get a scratch directory;
    // `hello` imports no filesystem call.
    assert!(props.get("files").is_none(), "{h}");
    let scratch = listed.iter().find(|t| t["name"] == "scratch").unwrap();
    let files = &scratch["inputSchema"]["properties"]["files"];
    assert_eq!(files.is_object(), zeroboot_wasm::namespaces::available(), "{scratch}");
    let echo_tool = listed.iter().find(|t| t["name"] == "echo_json").unwrap();
    assert_eq!(echo_tool["description"], "Echoes its arguments");
    assert_eq!(echo_tool["inputSchema"]["required"], json!(["text"]));

    let n = common_ops().len();
    check_common(&answers[1..=n]);
    let rest = &answers[n + 1..];
    assert_eq!(texts(&rest[0])[0], r#"{"text":"hi"}"#, "{}", rest[0]);
    assert_eq!(rest[1]["error"]["code"], -32602, "{}", rest[1]);
    assert!(rest[1]["error"]["message"].as_str().unwrap().contains("text"), "{}", rest[1]);
    assert!(rest[2]["uploaded"].is_string(), "{}", rest[2]);
    assert!(tool_names(&rest[3]).contains(&"exit_code".to_string()), "{}", rest[3]);
    assert_eq!(rest[4]["isError"], true, "{}", rest[4]);
    assert_eq!(rest[4]["structured"]["exit_code"], 7, "{}", rest[4]);

    // The --tool modules were for that session only: the store holds what `serve` took.
    let mut stored: Vec<String> = std::fs::read_dir(server.store.join("tools"))
        .expect("tools dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".wasm"))
        .collect();
    stored.sort();
    let mut want = vec![
        format!("{}.wasm", hello["id"].as_str().unwrap()),
        format!("{}.wasm", rest[2]["uploaded"].as_str().unwrap()),
    ];
    want.sort();
    assert_eq!(stored, want);
}

#[test]
fn mcp_over_http_behind_the_api_keys_and_the_origin_check() {
    let server = Server::start(&["--timeout", "20s"]);
    let hello = server.upload("hello", "&description=Greets%20the%20caller");
    server.upload("args_env", "");
    server.upload("spin", "");
    assert_eq!(hello["description"], "Greets the caller");

    let mut ops = vec![json!({"op": "list"})];
    ops.extend(common_ops());
    let url = format!("{}/mcp", server.base);
    let answers = mcp_client(&["http".into(), url.clone(), KEY.into()], &json!(ops));
    assert_eq!(
        tool_names(&answers[0]),
        ["args_env", "hello", "run_javascript", "run_python", "spin"]
    );
    let listed = answers[0]["tools"].as_array().unwrap();
    let h = listed.iter().find(|t| t["name"] == "hello").unwrap();
    assert_eq!(h["description"], "Greets the caller");
    check_common(&answers[1..]);

    // The transport's own checks, with a plain HTTP client.
    let http = reqwest::blocking::Client::new();
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let post = |key: Option<&str>, headers: &[(&str, &str)]| {
        let mut r =
            http.post(&url).header("Accept", "application/json, text/event-stream").json(&list);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        for (h, v) in headers {
            r = r.header(*h, *v);
        }
        r.send().expect("POST /mcp")
    };
    assert_eq!(post(None, &[]).status(), 401, "no key");
    assert_eq!(post(Some("wrong-key-0123456789"), &[]).status(), 401, "a wrong key");
    let evil = post(Some(KEY), &[("Origin", "http://evil.example")]);
    assert_eq!(evil.status(), 403, "an Origin from elsewhere");
    let rebound = post(Some(KEY), &[("Host", "evil.example")]);
    assert_eq!(rebound.status(), 403, "a Host from elsewhere (DNS rebinding)");
    let port = server.base.rsplit(':').next().unwrap();
    let local = post(Some(KEY), &[("Origin", &format!("http://localhost:{port}"))]);
    assert_eq!(local.status(), 200, "a loopback Origin");
    let body: Value = local.json().expect("JSON-RPC");
    assert!(body["result"]["tools"].as_array().is_some_and(|t| t.len() == 5), "{body}");

    let log = server.stderr.lock().unwrap().clone();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn python_client_against_a_real_server() {
    let server = Server::start(&[]);
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python/test_zeroboot_client.py");
    let guests = guest("hello").parent().expect("guest dir").to_path_buf();
    let child = Command::new("python3")
        .arg(script)
        .env("ZEROBOOT_URL", &server.base)
        .env("ZEROBOOT_KEY", KEY)
        .env("ZEROBOOT_GUESTS", &guests)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let out = common::wait_bounded(child, Duration::from_secs(180), "the MCP client");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the client's tests failed:\n{stderr}");
    assert!(stderr.contains("OK"), "{stderr}");
}

/// A component given to the MCP server is offered function by function: each export a tool
/// whose input schema comes from its WIT parameter types, called with JSON arguments that the
/// host checks before any sandbox is started.
#[test]
fn mcp_offers_a_components_exports_as_typed_tools() {
    let store = tempfile::tempdir().expect("store");
    let mut args: Vec<String> =
        vec!["stdio".into(), exe().into(), "mcp".into(), "--data-dir".into()];
    args.push(store.path().display().to_string());
    args.extend(base_flags());
    args.extend(["--tool".to_string(), component("wit_tools").display().to_string()]);
    let ops = json!([
        {"op": "list"},
        {"op": "call", "name": "wit_tools.add", "arguments": {"a": 40, "b": 2}},
        {"op": "call", "name": "wit_tools.summarize",
         "arguments": {"o": {"id": 7, "name": "box", "tags": ["a", "b"], "color": "green"}}},
        {"op": "call", "name": "wit_tools.divide", "arguments": {"a": 1.0, "b": 0.0}},
        {"op": "call", "name": "wit_tools.add", "arguments": {"a": 1, "b": "two"}},
        {"op": "call", "name": "wit_tools.area", "arguments": {"s": {"hexagon": 1}}},
        {"op": "call", "name": "wit_tools", "arguments": {}},
    ]);
    let answers = mcp_client(&args, &ops);
    let [list, add, summarize, divide, bad_type, bad_case, whole] = answers.as_slice() else {
        panic!("{} answers: {answers:?}", answers.len())
    };
    let names = tool_names(list);
    for want in ["wit_tools.add", "wit_tools.area", "wit_tools.summarize", "wit_tools.divide"] {
        assert!(names.contains(&want.to_string()), "{want} not in {names:?}");
    }
    // Not a command: the component is offered only through its functions.
    assert!(!names.contains(&"wit_tools".to_string()), "{names:?}");
    let listed = list["tools"].as_array().unwrap();
    let summarize_tool = listed.iter().find(|t| t["name"] == "wit_tools.summarize").unwrap();
    let o = &summarize_tool["inputSchema"]["properties"]["o"];
    assert_eq!(o["required"], json!(["id", "name", "tags", "color"]), "{summarize_tool}");
    assert_eq!(o["properties"]["color"]["enum"], json!(["red", "green", "blue"]), "{o}");
    assert_eq!(o["properties"]["tags"]["items"]["type"], "string", "{o}");

    assert_eq!(add["isError"], false, "{add}");
    assert_eq!(texts(add)[0], "42\n", "{add}");
    assert_eq!(add["structured"]["result"], 42, "{add}");
    assert_eq!(summarize["structured"]["result"], "#7 box [a,b] - green", "{summarize}");
    assert_eq!(divide["structured"]["result"], json!({"err": "division by zero"}), "{divide}");
    for (bad, needle) in [(bad_type, "b: expected an integer"), (bad_case, "s: no case `hexagon`")]
    {
        assert_eq!(bad["error"]["code"], -32602, "{bad}");
        let message = bad["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    assert_eq!(whole["error"]["code"], -32602, "{whole}");
}
