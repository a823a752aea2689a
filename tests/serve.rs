//! `zeroboot-wasm serve` through real HTTP on loopback: the real binary, started per test on
//! a free port with a data directory of its own, driven with a blocking HTTP client.

mod common;

use common::{children_of, guest, wait_until};
use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A compile cache shared by every server of this test binary.
fn cache_dir() -> &'static Path {
    static CACHE: OnceLock<tempfile::TempDir> = OnceLock::new();
    CACHE.get_or_init(|| tempfile::tempdir().expect("cache dir")).path()
}

fn namespaces_flag() -> &'static [&'static str] {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    if *AVAILABLE.get_or_init(zeroboot_wasm::namespaces::available) {
        &[]
    } else {
        &["--namespaces", "off"]
    }
}

fn command(data_dir: &Path, extra: &[&str]) -> Command {
    command_of(Path::new(env!("CARGO_BIN_EXE_zeroboot-wasm")), data_dir, extra)
}

fn command_of(exe: &Path, data_dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(exe);
    c.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .arg("--cache-dir")
        .arg(cache_dir())
        .args(namespaces_flag())
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// A running server.
struct Server {
    child: Child,
    base: String,
    stderr: Arc<Mutex<String>>,
    http: Client,
    key: Option<String>,
    /// Kept alive for the server's life (when the test did not give its own).
    _data: Option<tempfile::TempDir>,
    data_dir: PathBuf,
}

impl Server {
    /// A server without keys (`--no-auth`) and `extra` flags.
    fn open(extra: &[&str]) -> Server {
        let mut args = vec!["--no-auth"];
        args.extend_from_slice(extra);
        Self::start(None, &args)
    }

    fn start(data_dir: Option<&Path>, extra: &[&str]) -> Server {
        Self::start_exe(Path::new(env!("CARGO_BIN_EXE_zeroboot-wasm")), data_dir, extra)
    }

    fn start_exe(exe: &Path, data_dir: Option<&Path>, extra: &[&str]) -> Server {
        let (owned, dir) = match data_dir {
            Some(d) => (None, d.to_path_buf()),
            None => {
                let t = tempfile::tempdir().expect("data dir");
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let mut child = command_of(exe, &dir, extra).spawn().expect("start zeroboot-wasm serve");
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
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            panic!("the server printed no address; stderr:\n{}", stderr.lock().unwrap())
        });
        let base = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let http = Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
        Server { child, base, stderr, http, key: None, _data: owned, data_dir: dir }
    }

    fn with_key(mut self, key: &str) -> Self {
        self.key = Some(key.to_string());
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self, r: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    fn get(&self, path: &str) -> Response {
        self.auth(self.http.get(self.url(path))).send().expect("GET")
    }

    fn delete(&self, path: &str) -> Response {
        self.auth(self.http.delete(self.url(path))).send().expect("DELETE")
    }

    fn post_bytes(&self, path: &str, body: Vec<u8>) -> Response {
        self.auth(self.http.post(self.url(path))).body(body).send().expect("POST")
    }

    fn post_json(&self, path: &str, body: &Value) -> Response {
        self.auth(self.http.post(self.url(path))).json(body).send().expect("POST")
    }

    /// Uploads guest `name` and returns its id.
    fn upload(&self, name: &str) -> String {
        let bytes = std::fs::read(guest(name)).expect("guest bytes");
        let r = self.post_bytes(&format!("/v1/tools?name={name}"), bytes);
        let status = r.status();
        let v: Value = r.json().expect("JSON");
        assert!(status == StatusCode::CREATED || status == StatusCode::OK, "{status}: {v}");
        v["id"].as_str().expect("id").to_string()
    }

    /// Runs tool `id` with `request`; returns (status, JSON body).
    fn run(&self, id: &str, request: &Value) -> (StatusCode, Value) {
        json_of(self.post_json(&format!("/v1/tools/{id}/run"), request))
    }

    fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The log once it holds `needle` (stderr is read on another thread: a line logged
    /// before the address was printed may not have arrived yet).
    fn log_with(&self, needle: &str) -> String {
        wait_until(Duration::from_secs(10), || self.logs().contains(needle));
        self.logs()
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGTERM and waits for the exit code.
    fn terminate(mut self) -> (Option<i32>, String) {
        signal(self.pid(), libc::SIGTERM);
        let code = wait_exit(&mut self.child, Duration::from_secs(40));
        std::thread::sleep(Duration::from_millis(100));
        (code, self.logs())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid of a process this test started (or its zygote); no memory
    // is involved.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig}): {}", std::io::Error::last_os_error());
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let end = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s.code();
        }
        assert!(Instant::now() < end, "the server did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn json_of(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().expect("body");
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    (status, v)
}

/// An error answer: the status, and `{"error": …, "status": N}` with that N.
fn assert_error(r: Response, want: StatusCode) -> String {
    let (status, v) = json_of(r);
    assert_eq!(status, want, "{v}");
    assert_eq!(v["status"], json!(want.as_u16()), "{v}");
    v["error"].as_str().unwrap_or_else(|| panic!("no error message: {v}")).to_string()
}

#[test]
fn upload_is_idempotent_and_tools_are_listed_got_and_deleted() {
    let s = Server::open(&[]);
    let bytes = std::fs::read(guest("hello")).unwrap();
    let r = s.post_bytes("/v1/tools?name=hello", bytes.clone());
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let (_, first) = json_of(r);
    let id = first["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 64);
    assert_eq!(location, format!("/v1/tools/{id}"));
    assert_eq!(first["name"], "hello");
    assert_eq!(first["kind"], "command");
    assert_eq!(first["size"], json!(bytes.len()));
    assert!(first["exports"].as_array().unwrap().iter().any(|e| e["name"] == "_start"), "{first}");
    // The same bytes again: the same tool, 200 not 201, the first name kept.
    let (status, again) = json_of(s.post_bytes("/v1/tools?name=other", bytes));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first);

    let echo = s.upload("echo");
    let (status, list) = json_of(s.get("/v1/tools"));
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<_> = list["tools"].as_array().unwrap().iter().map(|t| t["id"].clone()).collect();
    assert_eq!(ids, [json!(echo), json!(id)], "sorted by name: echo, hello");
    let (status, got) = json_of(s.get(&format!("/v1/tools/{id}")));
    assert_eq!((status, &got), (StatusCode::OK, &first));
    assert!(s.data_dir.join(format!("tools/{id}.wasm")).is_file());
    assert!(s.data_dir.join(format!("tools/{id}.json")).is_file());

    let r = s.delete(&format!("/v1/tools/{id}"));
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(!s.data_dir.join(format!("tools/{id}.wasm")).exists());
    assert_error(s.get(&format!("/v1/tools/{id}")), StatusCode::NOT_FOUND);
    assert_error(s.delete(&format!("/v1/tools/{id}")), StatusCode::NOT_FOUND);
    assert_error(s.post_json(&format!("/v1/tools/{id}/run"), &json!({})), StatusCode::NOT_FOUND);
    let (_, list) = json_of(s.get("/v1/tools"));
    assert_eq!(list["tools"].as_array().unwrap().len(), 1);
}

#[test]
fn invalid_modules_are_400_and_oversized_bodies_413() {
    let s = Server::open(&["--max-body", "100KiB", "--max-tools", "2"]);
    let m = assert_error(
        s.post_bytes("/v1/tools?name=junk", b"not wasm".to_vec()),
        StatusCode::BAD_REQUEST,
    );
    assert!(m.contains("not a WebAssembly module"), "{m}");
    let wat = br#"(module (import "env" "nope" (func)) (func (export "_start")))"#.to_vec();
    let m = assert_error(s.post_bytes("/v1/tools?name=imports", wat), StatusCode::BAD_REQUEST);
    assert!(m.contains("env::nope"), "{m}");
    let m = assert_error(s.post_bytes("/v1/tools", Vec::new()), StatusCode::BAD_REQUEST);
    assert!(m.contains("empty body"), "{m}");
    let m = assert_error(
        s.post_bytes("/v1/tools?name=a%20b", b"(module)".to_vec()),
        StatusCode::BAD_REQUEST,
    );
    assert!(m.contains("invalid tool name"), "{m}");
    let m = assert_error(
        s.post_bytes("/v1/tools?nmae=x", b"(module)".to_vec()),
        StatusCode::BAD_REQUEST,
    );
    assert!(m.contains("nmae"), "{m}");
    let r = s.post_bytes("/v1/tools?name=big", vec![0u8; 200 * 1024]);
    // Answered before the body was read: the connection closes, and the answer says so.
    assert_eq!(r.headers()["connection"], "close");
    let m = assert_error(r, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(m.contains("102400"), "{m}");
    // WebAssembly text is a module too.
    let wat = br#"(module (func (export "_start")))"#.to_vec();
    let (status, v) = json_of(s.post_bytes("/v1/tools?name=empty", wat));
    assert_eq!(status, StatusCode::CREATED, "{v}");
    // A reactor (no _start) is a tool to invoke.
    let wat = br#"(module (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))"#;
    let (status, v) = json_of(s.post_bytes("/v1/tools?name=adder", wat.to_vec()));
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["kind"], "reactor");
    let id = v["id"].as_str().unwrap();
    let (status, o) = s.run(id, &json!({"invoke": "add", "args": ["2", "40"]}));
    assert_eq!((status, o["status"].as_str()), (StatusCode::OK, Some("exited")), "{o}");
    assert_eq!(o["stdout"], "42\n");
    let m = assert_error(
        s.post_json(&format!("/v1/tools/{id}/run"), &json!({})),
        StatusCode::BAD_REQUEST,
    );
    assert!(m.contains("no `_start`"), "{m}");
    // Two tools are the most this server holds; the same bytes again are no new tool.
    let (status, _) = json_of(s.post_bytes("/v1/tools?name=adder", wat.to_vec()));
    assert_eq!(status, StatusCode::OK);
    let third = br#"(module (func (export "_start") nop))"#.to_vec();
    let m = assert_error(
        s.post_bytes("/v1/tools?name=third", third.clone()),
        StatusCode::INSUFFICIENT_STORAGE,
    );
    assert!(m.contains("--max-tools"), "{m}");
    let (_, list) = json_of(s.get("/v1/tools"));
    let empty = list["tools"].as_array().unwrap().iter().find(|t| t["name"] == "empty").unwrap();
    let r = s.delete(&format!("/v1/tools/{}", empty["id"].as_str().unwrap()));
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (status, _) = json_of(s.post_bytes("/v1/tools?name=third", third));
    assert_eq!(status, StatusCode::CREATED, "room again after a delete");
    // A run request body past the limit.
    let big = json!({"stdin": "x".repeat(200 * 1024)});
    assert_error(s.post_json(&format!("/v1/tools/{id}/run"), &big), StatusCode::PAYLOAD_TOO_LARGE);
}

#[test]
fn runs_carry_args_env_and_stdin_both_ways() {
    let s = Server::open(&["--env", "FROM_SERVER=1"]);
    let args = s.upload("args_env");
    let (status, o) = s.run(&args, &json!({"args": ["a b", "ü"], "env": {"K": "v=w"}}));
    assert_eq!(status, StatusCode::OK, "{o}");
    assert_eq!(o["status"], "exited");
    assert_eq!(o["exit_code"], 0);
    assert_eq!(
        o["stdout"], "arg[0]=args_env\narg[1]=a b\narg[2]=ü\nenv:FROM_SERVER=1\nenv:K=v=w\n",
        "{o}"
    );
    let echo = s.upload("echo");
    let (status, o) = s.run(&echo, &json!({"stdin": "round trip\n"}));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(o["stdout"], "round trip\n");
    assert_eq!(o["stderr"], "echo: 11 bytes\n");
    // Bytes that are not UTF-8 come back exactly, in base64.
    let (_, o) = s.run(&echo, &json!({"stdin_base64": "AP/+"}));
    assert_eq!(o["stdout_base64"], "AP/+", "{o}");
    // The output cap of a request.
    let (_, o) = s.run(&echo, &json!({"stdin": "0123456789", "limits": {"max_output": 4}}));
    assert_eq!((o["stdout"].as_str(), o["stdout_truncated"].as_bool()), (Some("0123"), Some(true)));
    assert!(o["timings_us"]["total"].as_u64().unwrap() > 0, "{o}");
}

#[test]
fn a_trap_and_a_timeout_are_200_with_their_status() {
    let s = Server::open(&["--timeout", "10s"]);
    let trap = s.upload("trap");
    let (status, o) = s.run(&trap, &json!({}));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(o["status"], "trapped", "{o}");
    assert_eq!(o["stdout"], "about to trap\n");
    assert!(o["message"].as_str().unwrap().contains("unreachable"), "{o}");
    let spin = s.upload("spin");
    let started = Instant::now();
    let (status, o) = s.run(&spin, &json!({"limits": {"timeout_ms": 300}}));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(o["status"], "timeout", "{o}");
    assert_eq!(o["stdout"], "spinning\n");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // The server's --timeout is the most a request may ask for.
    let m = assert_error(
        s.post_json(&format!("/v1/tools/{spin}/run"), &json!({"limits": {"timeout_ms": 20000}})),
        StatusCode::BAD_REQUEST,
    );
    assert!(m.contains("10000"), "{m}");
}

#[test]
fn malformed_requests_are_400_and_unknown_routes_and_tools_404() {
    let s = Server::open(&[]);
    let id = s.upload("hello");
    let run = format!("/v1/tools/{id}/run");
    let m = assert_error(s.post_bytes(&run, b"{bad".to_vec()), StatusCode::BAD_REQUEST);
    assert!(m.contains("invalid request"), "{m}");
    let m = assert_error(s.post_json(&run, &json!({"file": {}})), StatusCode::BAD_REQUEST);
    assert!(m.contains("unknown field `file`"), "{m}");
    assert_error(s.post_json(&run, &json!({"args": "not a list"})), StatusCode::BAD_REQUEST);
    assert_error(s.post_json(&run, &json!({"env": {"": "x"}})), StatusCode::BAD_REQUEST);
    assert_error(s.post_json(&run, &json!({"limits": {"fuel": 10}})), StatusCode::BAD_REQUEST);
    // An empty body is an empty request.
    let (status, o) = json_of(s.post_bytes(&run, Vec::new()));
    assert_eq!((status, o["status"].as_str()), (StatusCode::OK, Some("exited")), "{o}");
    let unknown = "0".repeat(64);
    let m = assert_error(
        s.post_json(&format!("/v1/tools/{unknown}/run"), &json!({})),
        StatusCode::NOT_FOUND,
    );
    assert!(m.contains(&unknown), "{m}");
    assert_error(s.get("/v1/tools/not-an-id"), StatusCode::NOT_FOUND);
    assert_error(s.get("/v1/nothing"), StatusCode::NOT_FOUND);
    assert_error(s.http.put(s.url("/v1/tools")).send().unwrap(), StatusCode::METHOD_NOT_ALLOWED);
}

fn key_file(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("keys");
    std::fs::write(&p, text).unwrap();
    p
}

const KEY_A: &str = "zb_test_key_aaaaaaaaaaaaaaaa";
const KEY_B: &str = "zb_test_key_bbbbbbbbbbbbbbbb";

#[test]
fn api_keys_are_required_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let keys = key_file(dir.path(), &format!("# keys\n\n{KEY_A}\n  {KEY_B}  \n"));
    let s = Server::start(None, &["--api-keys", keys.to_str().unwrap()]);
    let (status, v) = json_of(s.get("/v1/tools"));
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["status"], 401);
    let r = s.http.get(s.url("/v1/tools")).bearer_auth("zb_test_key_wrong_wrong").send().unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_error(r, StatusCode::UNAUTHORIZED);
    let r = s
        .http
        .get(s.url("/v1/tools"))
        .header("authorization", format!("Basic {KEY_A}"))
        .send()
        .unwrap();
    assert_error(r, StatusCode::UNAUTHORIZED);
    assert_error(s.post_bytes("/v1/tools?name=x", b"(module)".to_vec()), StatusCode::UNAUTHORIZED);
    assert_error(s.post_json("/v1/exec", &json!({"code": "1"})), StatusCode::UNAUTHORIZED);
    assert_error(s.get("/metrics"), StatusCode::UNAUTHORIZED);
    // Health and the API description are open; health without a key says only its verdict.
    let (status, h) = json_of(s.get("/v1/health"));
    assert_eq!((status, h), (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(s.get("/v1/openapi.json").status(), StatusCode::OK);
    let s = s.with_key(KEY_B);
    let id = s.upload("hello");
    let (status, o) = s.run(&id, &json!({}));
    assert_eq!((status, o["status"].as_str()), (StatusCode::OK, Some("exited")));
    assert_eq!(s.get("/metrics").status(), StatusCode::OK);
    let (status, h) = json_of(s.get("/v1/health"));
    assert_eq!(
        (status, h["templates"][&id]["ready"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{h}"
    );
    assert!(!s.logs().contains(KEY_B), "a key reached the logs");
}

#[test]
fn a_malformed_key_file_or_no_auth_choice_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |extra: &[&str]| {
        let out = command(dir.path(), extra).output().expect("run serve");
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(out.stdout.is_empty(), "it never listened: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let short = key_file(dir.path(), &format!("{KEY_A}\ntooshort\n"));
    let e = refused(&["--api-keys", short.to_str().unwrap()]);
    assert!(e.contains("line 2") && e.contains("8 characters"), "{e}");
    let e = refused(&["--api-keys", "/nonexistent/keys"]);
    assert!(e.contains("cannot read the API key file /nonexistent/keys"), "{e}");
    let empty = key_file(dir.path(), "# nobody\n");
    let e = refused(&["--api-keys", empty.to_str().unwrap()]);
    assert!(e.contains("holds no key"), "{e}");
    let e = refused(&[]);
    assert!(e.contains("--no-auth"), "{e}");
    let out = Command::new(env!("CARGO_BIN_EXE_zeroboot-wasm"))
        .args(["serve", "--no-auth", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"), "{out:?}");
    // Loud about --no-auth.
    let s = Server::open(&[]);
    let logs = s.log_with("AUTHENTICATION IS OFF");
    assert!(logs.contains("AUTHENTICATION IS OFF"), "{logs}");
}

/// Starts a run of the `clock` tool sleeping `ms` on another thread; returns its answer.
fn sleeping_run(s: &Server, id: &str, ms: u64) -> std::thread::JoinHandle<(StatusCode, Value)> {
    let url = s.url(&format!("/v1/tools/{id}/run"));
    let key = s.key.clone();
    std::thread::spawn(move || {
        let http = Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let mut r = http.post(url).json(&json!({"args": [ms.to_string()]}));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        json_of(r.send().expect("POST run"))
    })
}

fn metric(s: &Server, line_start: &str) -> Option<String> {
    let text = s.get("/metrics").text().unwrap();
    text.lines().find(|l| l.starts_with(line_start)).map(str::to_string)
}

#[test]
fn saturation_is_429_with_retry_after() {
    let s = Server::open(&["--max-in-flight", "1", "--max-queued", "0"]);
    let clock = s.upload("clock");
    let hello = s.upload("hello");
    let slow = sleeping_run(&s, &clock, 2000);
    assert!(
        wait_until(Duration::from_secs(10), || metric(&s, "zeroboot_in_flight ").as_deref()
            == Some("zeroboot_in_flight 1")),
        "the slow run never took its slot"
    );
    let r = s.post_json(&format!("/v1/tools/{hello}/run"), &json!({}));
    assert_eq!(r.headers()["retry-after"], "1");
    let m = assert_error(r, StatusCode::TOO_MANY_REQUESTS);
    assert!(m.contains("busy"), "{m}");
    let batch = json!({"tasks": [{}, {}]});
    assert_error(
        s.post_json(&format!("/v1/tools/{hello}/batch"), &batch),
        StatusCode::TOO_MANY_REQUESTS,
    );
    let (status, o) = slow.join().unwrap();
    assert_eq!((status, o["status"].as_str()), (StatusCode::OK, Some("exited")), "{o}");
    assert!(o["stdout"].as_str().unwrap().contains("monotonic_ok=true"), "{o}");
    let (status, _) = s.run(&hello, &json!({}));
    assert_eq!(status, StatusCode::OK, "a slot again once the run ended");
    assert_eq!(
        metric(&s, "zeroboot_requests_refused_total{reason=\"saturated\"}").as_deref(),
        Some("zeroboot_requests_refused_total{reason=\"saturated\"} 2")
    );
}

#[test]
fn a_key_past_its_quota_gets_429_while_others_run() {
    let dir = tempfile::tempdir().unwrap();
    let keys = key_file(dir.path(), &format!("{KEY_A}\n{KEY_B}\n"));
    let s =
        Server::start(None, &["--api-keys", keys.to_str().unwrap(), "--per-key-in-flight", "1"])
            .with_key(KEY_A);
    let clock = s.upload("clock");
    let slow = sleeping_run(&s, &clock, 1500);
    assert!(wait_until(Duration::from_secs(10), || metric(&s, "zeroboot_in_flight ").as_deref()
        == Some("zeroboot_in_flight 1")));
    let m = assert_error(
        s.post_json(&format!("/v1/tools/{clock}/run"), &json!({"args": ["1"]})),
        StatusCode::TOO_MANY_REQUESTS,
    );
    assert!(m.contains("quota"), "{m}");
    let b = s
        .http
        .post(s.url(&format!("/v1/tools/{clock}/run")))
        .bearer_auth(KEY_B)
        .json(&json!({"args": ["1"]}))
        .send()
        .unwrap();
    let (status, o) = json_of(b);
    assert_eq!((status, o["status"].as_str()), (StatusCode::OK, Some("exited")), "{o}");
    assert_eq!(slow.join().unwrap().0, StatusCode::OK);
}

#[test]
fn a_batch_runs_concurrently_and_answers_in_order() {
    let s = Server::open(&["--max-batch", "8"]);
    let args = s.upload("args_env");
    let tasks: Vec<Value> = (0..8).map(|i| json!({"args": [format!("n{i}")]})).collect();
    let (status, v) =
        json_of(s.post_json(&format!("/v1/tools/{args}/batch"), &json!({"tasks": tasks})));
    assert_eq!(status, StatusCode::OK, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 8);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["status"], "exited", "{r}");
        assert!(r["stdout"].as_str().unwrap().contains(&format!("arg[1]=n{i}\n")), "{i}: {r}");
    }
    // Sleeping tasks overlap: four 400 ms sleeps take well under 1.6 s.
    let clock = s.upload("clock");
    let started = Instant::now();
    let tasks: Vec<Value> = (0..4).map(|_| json!({"args": ["400"]})).collect();
    let (status, v) =
        json_of(s.post_json(&format!("/v1/tools/{clock}/batch"), &json!({"tasks": tasks})));
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    let nine: Vec<Value> = (0..9).map(|_| json!({})).collect();
    let m = assert_error(
        s.post_json(&format!("/v1/tools/{args}/batch"), &json!({"tasks": nine})),
        StatusCode::BAD_REQUEST,
    );
    assert!(m.contains("--max-batch"), "{m}");
    let bad = json!({"tasks": [{}, {"limits": {"timeout_ms": 0}}]});
    let m = assert_error(
        s.post_json(&format!("/v1/tools/{args}/batch"), &bad),
        StatusCode::BAD_REQUEST,
    );
    assert!(m.starts_with("tasks[1]:"), "{m}");
    let (status, v) =
        json_of(s.post_json(&format!("/v1/tools/{args}/batch"), &json!({"tasks": []})));
    assert_eq!((status, v), (StatusCode::OK, json!({"results": []})));
}

/// The interpreter module for `file` next to the binary, where `Lang::module` looks.
fn interpreter(file: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_BIN_EXE_zeroboot-wasm")).parent()?.join(file);
    p.is_file().then_some(p)
}

#[test]
fn exec_runs_snippets_with_zeroboot_fields_or_says_the_interpreter_is_missing() {
    let s = Server::open(&[]);
    let m = assert_error(
        s.post_json("/v1/exec", &json!({"code": "1", "language": "ruby"})),
        StatusCode::BAD_REQUEST,
    );
    assert!(m.contains("unknown language"), "{m}");
    assert_error(s.post_json("/v1/exec", &json!({"language": "python"})), StatusCode::BAD_REQUEST);
    for (language, file, code, expect) in [
        ("javascript", "zeroboot-js.wasm", "console.log(1+1)", "2\n"),
        ("python", "zeroboot-py.wasm", "print(1+1)", "2\n"),
    ] {
        let request = json!({"code": code, "language": language, "timeout_seconds": 10});
        if interpreter(file).is_none() {
            eprintln!(
                "NOTE: {file} is not next to the binary: checking that /v1/exec says so (503)"
            );
            let m =
                assert_error(s.post_json("/v1/exec", &request), StatusCode::SERVICE_UNAVAILABLE);
            assert!(m.contains("missing") && m.contains(file), "{m}");
            continue;
        }
        let (status, v) = json_of(s.post_json("/v1/exec", &request));
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["stdout"], expect, "{v}");
        assert_eq!((v["exit_code"].as_i64(), v["status"].as_str()), (Some(0), Some("exited")));
        assert_eq!(v["language"], language);
        assert_eq!(v["id"].as_str().map(str::len), Some(36), "{v}");
        for field in ["fork_time_ms", "exec_time_ms", "total_time_ms"] {
            assert!(v[field].is_number(), "{field}: {v}");
        }
        let timeout = json!({"code": if language == "python" { "while True: pass" } else { "while(true){}" },
                             "language": language, "timeout_seconds": 0.5});
        let (status, v) = json_of(s.post_json("/v1/exec", &timeout));
        assert_eq!(
            (status, v["status"].as_str(), v["exit_code"].as_i64()),
            (StatusCode::OK, Some("timeout"), Some(124)),
            "{v}"
        );
        let batch = json!({"executions": [request, {"code": code, "language": language}]});
        let (status, v) = json_of(s.post_json("/v1/exec/batch", &batch));
        assert_eq!(status, StatusCode::OK, "{v}");
        let results = v["results"].as_array().unwrap();
        assert_eq!(results.len(), 2);
        assert!(results.iter().all(|r| r["stdout"] == expect), "{v}");
    }
}

#[test]
fn health_and_metrics_report_the_zygotes_and_the_runs() {
    let s = Server::open(&[]);
    let (status, v) = json_of(s.get("/v1/health"));
    assert_eq!((status, v["status"].as_str()), (StatusCode::OK, Some("ok")), "{v}");
    let hello = s.upload("hello");
    let trap = s.upload("trap");
    for _ in 0..3 {
        s.run(&hello, &json!({}));
    }
    s.run(&trap, &json!({}));
    let (status, v) = json_of(s.get("/v1/health"));
    assert_eq!(status, StatusCode::OK, "{v}");
    let t = &v["templates"][&hello];
    assert_eq!(
        (t["ready"].as_bool(), t["kind"].as_str(), t["name"].as_str()),
        (Some(true), Some("tool"), Some("hello")),
        "{v}"
    );
    assert_eq!(t["threads"], 1, "the zygote is single-threaded: {v}");
    assert!(t["zygote_pid"].as_i64().unwrap() > 1);
    let r = s.get("/metrics");
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().unwrap();
    for want in [
        format!("zeroboot_tasks_total{{tool=\"{hello}\",status=\"exited\"}} 3"),
        format!("zeroboot_tasks_total{{tool=\"{trap}\",status=\"trapped\"}} 1"),
        "zeroboot_task_duration_seconds_bucket{phase=\"total\",le=\"0.000025\"}".to_string(),
        "zeroboot_task_duration_seconds_bucket{phase=\"run\",le=\"60\"} 4".to_string(),
        "zeroboot_task_duration_seconds_count{phase=\"fork\"} 4".to_string(),
        "zeroboot_task_duration_seconds_count{phase=\"queue\"} 4".to_string(),
        "zeroboot_in_flight 0".to_string(),
        "zeroboot_queue_depth 0".to_string(),
        "zeroboot_tools 2".to_string(),
        format!("zeroboot_zygote_restarts_total{{tool=\"{hello}\"}} 0"),
        "# TYPE zeroboot_task_duration_seconds histogram".to_string(),
        format!("zeroboot_pool_size{{tool=\"{hello}\"}} 2"),
        "# TYPE zeroboot_pool_ready gauge".to_string(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
    // The pool refills after the runs that took from it: all of it ready again.
    let ready = format!("zeroboot_pool_ready{{tool=\"{hello}\"}}");
    assert!(
        wait_until(Duration::from_secs(10), || metric(&s, &ready) == Some(format!("{ready} 2"))),
        "{:?}",
        metric(&s, &ready)
    );
    // ZeroBoot's path for the same.
    assert_eq!(s.get("/v1/metrics").status(), StatusCode::OK);
    let (status, doc) = json_of(s.get("/v1/openapi.json"));
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    for path in [
        "/v1/tools",
        "/v1/tools/{id}",
        "/v1/tools/{id}/run",
        "/v1/tools/{id}/batch",
        "/v1/exec",
        "/v1/exec/batch",
        "/v1/health",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
}

#[test]
fn a_killed_zygote_ends_its_run_clearly_and_the_next_run_succeeds() {
    let s = Server::open(&["--pool", "0"]);
    let clock = s.upload("clock");
    let (_, h) = json_of(s.get("/v1/health"));
    let zygote = h["templates"][&clock]["zygote_pid"].as_i64().unwrap() as i32;
    assert!(children_of(s.pid()).contains(&zygote), "the zygote is the server's child");
    let slow = sleeping_run(&s, &clock, 20_000);
    assert!(
        wait_until(Duration::from_secs(10), || !children_of(zygote).is_empty()),
        "the sandbox never started"
    );
    let started = Instant::now();
    signal(zygote, libc::SIGKILL);
    let (status, o) = slow.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(status, StatusCode::OK, "{o}");
    assert_eq!(o["status"], "internal_error", "{o}");
    let m = o["message"].as_str().unwrap();
    assert!(m.contains("zygote") && m.contains("SIGKILL"), "{m}");
    let (status, o) = s.run(&clock, &json!({"args": ["1"]}));
    assert_eq!((status, o["status"].as_str()), (StatusCode::OK, Some("exited")), "{o}");
    let (_, h) = json_of(s.get("/v1/health"));
    let t = &h["templates"][&clock];
    assert_eq!(t["zygote_restarts"], 1, "{h}");
    assert_ne!(t["zygote_pid"].as_i64(), Some(i64::from(zygote)));
    assert_eq!(
        metric(&s, &format!("zeroboot_zygote_restarts_total{{tool=\"{clock}\"}}")),
        Some(format!("zeroboot_zygote_restarts_total{{tool=\"{clock}\"}} 1"))
    );
}

#[test]
fn tools_survive_a_restart_and_sigterm_lets_runs_finish() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(Some(data.path()), &["--no-auth"]);
    let clock = s.upload("clock");
    let hello = s.upload("hello");
    let slow = sleeping_run(&s, &clock, 1000);
    assert!(wait_until(Duration::from_secs(10), || metric(&s, "zeroboot_in_flight ").as_deref()
        == Some("zeroboot_in_flight 1")));
    let (code, logs) = s.terminate();
    let (status, o) = slow.join().unwrap();
    assert_eq!((status, o["status"].as_str()), (StatusCode::OK, Some("exited")), "{o}");
    assert_eq!(code, Some(0), "{logs}");
    assert!(
        logs.contains("finishing the requests in flight") && logs.contains("stopped"),
        "{logs}"
    );

    let s = Server::start(Some(data.path()), &["--no-auth", "--log-format", "json"]);
    let logs = s.log_with("tool store loaded");
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "tool store loaded" && l["fields"]["tools"] == 2),
        "{logs}"
    );
    let (status, t) = json_of(s.get(&format!("/v1/tools/{hello}")));
    assert_eq!((status, t["name"].as_str()), (StatusCode::OK, Some("hello")), "{t}");
    let (status, o) = s.run(&hello, &json!({}));
    assert_eq!(
        (status, o["stdout"].as_str()),
        (StatusCode::OK, Some("hello from a zeroboot-wasm sandbox\n"))
    );
    // A stored module that no longer matches its id is not served: out of service, not
    // unknown. Its runs get 503 with why, health says so, and DELETE removes its files.
    drop(s);
    let module = data.path().join(format!("tools/{clock}.wasm"));
    std::fs::write(&module, b"(module)").unwrap();
    let s = Server::start(Some(data.path()), &["--no-auth"]);
    for r in [
        s.get(&format!("/v1/tools/{clock}")),
        s.post_json(&format!("/v1/tools/{clock}/run"), &json!({})),
    ] {
        let e = assert_error(r, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.contains("out of service") && e.contains("does not match its SHA-256 id"), "{e}");
    }
    let (status, h) = json_of(s.get("/v1/health"));
    assert_eq!(
        (status, h["status"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")),
        "{h}"
    );
    assert_eq!(h["templates"][&clock]["ready"], json!(false), "{h}");
    assert!(h["templates"][&clock]["error"].as_str().unwrap_or("").contains("SHA-256"), "{h}");
    let logs = s.log_with("does not match its SHA-256 id");
    assert!(logs.contains("does not match its SHA-256 id"), "{logs}");
    assert_eq!(s.get(&format!("/v1/tools/{hello}")).status(), StatusCode::OK);
    assert_eq!(s.delete(&format!("/v1/tools/{clock}")).status(), StatusCode::NO_CONTENT);
    assert!(!module.exists() && !data.path().join(format!("tools/{clock}.json")).exists());
    assert_error(s.get(&format!("/v1/tools/{clock}")), StatusCode::NOT_FOUND);
    let (status, h) = json_of(s.get("/v1/health"));
    assert_eq!((status, h["status"].as_str()), (StatusCode::OK, Some("ok")), "{h}");
}

#[test]
fn a_client_that_goes_away_cancels_its_run() {
    let s = Server::open(&["--pool", "0"]);
    let clock = s.upload("clock");
    let (_, h) = json_of(s.get("/v1/health"));
    let zygote = h["templates"][&clock]["zygote_pid"].as_i64().unwrap() as i32;
    let url = s.url(&format!("/v1/tools/{clock}/run"));
    let client = std::thread::spawn(move || {
        let impatient = Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        impatient.post(url).json(&json!({"args": ["30000"]})).send()
    });
    assert!(
        wait_until(Duration::from_secs(5), || !children_of(zygote).is_empty()),
        "the sandbox never started"
    );
    let r = client.join().unwrap();
    assert!(r.is_err(), "the client gave up first: {r:?}");
    // Its sandbox is killed, its slot given back.
    assert!(
        wait_until(Duration::from_secs(5), || children_of(zygote).is_empty()),
        "the sandbox outlived its request"
    );
    assert!(wait_until(Duration::from_secs(5), || metric(&s, "zeroboot_in_flight ").as_deref()
        == Some("zeroboot_in_flight 0")));
    let (status, o) = s.run(&clock, &json!({"args": ["1"]}));
    assert_eq!((status, o["status"].as_str()), (StatusCode::OK, Some("exited")), "{o}");
}

#[test]
fn concurrent_uploads_of_the_same_bytes_load_it_once() {
    let s = Server::open(&[]);
    let bytes = std::fs::read(guest("random")).unwrap();
    let answers: Vec<(StatusCode, Value)> = std::thread::scope(|scope| {
        let uploads: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| json_of(s.post_bytes("/v1/tools?name=random", bytes.clone()))))
            .collect();
        uploads.into_iter().map(|u| u.join().unwrap()).collect()
    });
    let created = answers.iter().filter(|(st, _)| *st == StatusCode::CREATED).count();
    assert_eq!(created, 1, "{answers:?}");
    assert!(answers.iter().all(|(st, v)| st.is_success() && v == &answers[0].1), "{answers:?}");
    let (_, h) = json_of(s.get("/v1/health"));
    assert_eq!(h["templates"].as_object().unwrap().len(), 1, "one zygote: {h}");
    assert_eq!(children_of(s.pid()).len(), 1, "one zygote process");
}

#[test]
fn health_is_503_while_a_zygote_does_not_answer() {
    let s = Server::open(&[]);
    let hello = s.upload("hello");
    let (_, h) = json_of(s.get("/v1/health"));
    let zygote = h["templates"][&hello]["zygote_pid"].as_i64().unwrap() as i32;
    signal(zygote, libc::SIGSTOP);
    let (status, h) = json_of(s.get("/v1/health"));
    signal(zygote, libc::SIGCONT);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{h}");
    assert_eq!(h["status"], "unavailable");
    assert!(h["error"].as_str().unwrap().contains(&hello), "{h}");
    assert_eq!(h["templates"][&hello]["ready"], false, "{h}");
    assert!(h["templates"][&hello]["error"].as_str().unwrap().contains("did not answer"), "{h}");
    let (status, h) = json_of(s.get("/v1/health"));
    assert_eq!(status, StatusCode::OK, "ready again once it answers: {h}");
    let (status, o) = s.run(&hello, &json!({}));
    assert_eq!((status, o["status"].as_str()), (StatusCode::OK, Some("exited")), "{o}");
}

#[test]
fn a_zygote_that_cannot_be_started_again_is_503() {
    // A server whose executable is gone cannot re-execute it to start a zygote.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let exe = dir.path().join("zeroboot-wasm");
    let original = Path::new(env!("CARGO_BIN_EXE_zeroboot-wasm"));
    if std::fs::hard_link(original, &exe).is_err() {
        std::fs::copy(original, &exe).unwrap();
    }
    let s = Server::start_exe(&exe, None, &["--no-auth"]);
    let hello = s.upload("hello");
    let (_, h) = json_of(s.get("/v1/health"));
    let zygote = h["templates"][&hello]["zygote_pid"].as_i64().unwrap() as i32;
    std::fs::remove_file(&exe).unwrap();
    signal(zygote, libc::SIGKILL);
    assert!(wait_until(Duration::from_secs(5), || !children_of(s.pid()).contains(&zygote)));
    let m = assert_error(
        s.post_json(&format!("/v1/tools/{hello}/run"), &json!({})),
        StatusCode::SERVICE_UNAVAILABLE,
    );
    assert!(m.contains("cannot start a zygote process"), "{m}");
    let (status, h) = json_of(s.get("/v1/health"));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{h}");
    assert_eq!(h["templates"][&hello]["ready"], false, "{h}");
    let text = s.get("/metrics").text().unwrap();
    assert!(
        text.contains(&format!(
            "zeroboot_tasks_total{{tool=\"{hello}\",status=\"unavailable\"}} 1"
        )),
        "{text}"
    );
}

/// One Server-Sent Event: its name, its data as JSON, and when it arrived.
#[derive(Debug)]
struct SseEvent {
    name: String,
    data: Value,
    at: Duration,
}

/// Reads events from a streamed answer as they arrive, until `stop` says so or the stream
/// ends.
fn read_events(
    r: Response,
    since: Instant,
    mut stop: impl FnMut(&SseEvent) -> bool,
) -> Vec<SseEvent> {
    let mut events = Vec::new();
    let (mut name, mut data) = (String::new(), String::new());
    for line in BufReader::new(r).lines() {
        let Ok(line) = line else { break };
        if let Some(v) = line.strip_prefix("event: ") {
            name = v.to_string();
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push_str(v);
        } else if line.is_empty() && !data.is_empty() {
            let data = std::mem::take(&mut data);
            let e = SseEvent {
                name: std::mem::take(&mut name),
                data: serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}")),
                at: since.elapsed(),
            };
            let done = stop(&e);
            events.push(e);
            if done {
                break;
            }
        }
    }
    events
}

fn stream_run(s: &Server, id: &str, body: &Value) -> (Response, Instant) {
    let started = Instant::now();
    let r = s.post_json(&format!("/v1/tools/{id}/run?stream=sse"), body);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    (r, started)
}

#[test]
fn a_streamed_run_sends_output_as_the_guest_writes_it_then_the_outcome() {
    let s = Server::open(&[]);
    let clock = s.upload("clock");
    // The guest prints, sleeps 1.5 s, prints.
    let (r, started) = stream_run(&s, &clock, &json!({"args": ["1500"]}));
    let events = read_events(r, started, |_| false);
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names.first(), Some(&"stdout"), "{events:?}");
    assert_eq!(names.last(), Some(&"outcome"), "{events:?}");
    let first = &events[0];
    assert!(first.data["text"].as_str().unwrap().starts_with("wall_secs="), "{first:?}");
    assert!(
        first.at < Duration::from_millis(1000),
        "the first line arrived only after {:?}, not while the guest slept",
        first.at
    );
    let outcome = events.last().unwrap();
    assert!(outcome.at >= Duration::from_millis(1500), "{outcome:?}");
    assert_eq!(outcome.data["status"], "exited", "{outcome:?}");
    assert_eq!(outcome.data["stdout"], "", "streamed output is not repeated: {outcome:?}");
    let text: String = events
        .iter()
        .filter(|e| e.name == "stdout")
        .map(|e| e.data["text"].as_str().unwrap().to_string())
        .collect();
    assert!(text.contains("slept_ms=") && text.ends_with("monotonic_ok=true\n"), "{text}");

    // Accept: text/event-stream asks for the same; output past max_output is cut and flagged.
    let r = s
        .http
        .post(s.url(&format!("/v1/tools/{clock}/run")))
        .header("accept", "text/event-stream")
        .json(&json!({"args": ["1"], "limits": {"max_output": 5}}))
        .send()
        .unwrap();
    let events = read_events(r, Instant::now(), |_| false);
    let text: String = events
        .iter()
        .filter(|e| e.name == "stdout")
        .map(|e| e.data["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "wall_", "{events:?}");
    let outcome = events.last().unwrap();
    assert_eq!(
        (outcome.name.as_str(), &outcome.data["stdout_truncated"]),
        ("outcome", &json!(true))
    );
    // Refusals before the stream starts are plain HTTP errors.
    let m = assert_error(
        s.post_json(&format!("/v1/tools/{clock}/run?stream=websocket"), &json!({})),
        StatusCode::BAD_REQUEST,
    );
    assert!(m.contains("sse"), "{m}");
    assert_error(
        s.post_json(
            &format!("/v1/tools/{clock}/run?stream=sse"),
            &json!({"limits": {"timeout_ms": 0}}),
        ),
        StatusCode::BAD_REQUEST,
    );
}

#[test]
fn a_streamed_run_that_times_out_mid_stream_ends_with_its_timeout_outcome() {
    let s = Server::open(&[]);
    let clock = s.upload("clock");
    let (r, started) =
        stream_run(&s, &clock, &json!({"args": ["5000"], "limits": {"timeout_ms": 400}}));
    let events = read_events(r, started, |_| false);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].name, "stdout");
    assert!(events[0].data["text"].as_str().unwrap().starts_with("wall_secs="));
    assert_eq!(events[1].name, "outcome");
    assert_eq!(events[1].data["status"], "timeout", "{events:?}");
    assert!(events[1].at < Duration::from_secs(3), "{:?}", events[1].at);
}

#[test]
fn dropping_a_streamed_run_kills_its_sandbox() {
    let s = Server::open(&["--pool", "0"]);
    let clock = s.upload("clock");
    let (_, h) = json_of(s.get("/v1/health"));
    let zygote = h["templates"][&clock]["zygote_pid"].as_i64().unwrap() as i32;
    let (r, started) = stream_run(&s, &clock, &json!({"args": ["30000"]}));
    let events = read_events(r, started, |e| e.name == "stdout");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(!children_of(zygote).is_empty(), "the sandbox is running");
    // `read_events` dropped the response: the connection is closed mid-stream.
    assert!(
        wait_until(Duration::from_secs(5), || children_of(zygote).is_empty()),
        "the sandbox outlived its stream"
    );
    assert!(wait_until(Duration::from_secs(5), || metric(&s, "zeroboot_in_flight ").as_deref()
        == Some("zeroboot_in_flight 0")));
}

#[test]
fn streamed_snippets_send_their_output_then_the_zeroboot_answer() {
    if interpreter("zeroboot-js.wasm").is_none() {
        // The interpreter guests are built by scripts/build-interpreters.sh; without them
        // /v1/exec is a 503, which the exec test checks.
        let s = Server::open(&[]);
        let r = s.post_json("/v1/exec?stream=sse", &json!({"code": "1", "language": "javascript"}));
        assert_error(r, StatusCode::SERVICE_UNAVAILABLE);
        return;
    }
    let s = Server::open(&[]);
    let started = Instant::now();
    let r = s.post_json(
        "/v1/exec?stream=sse",
        &json!({"code": "console.log('streamed ' + (6 * 7))", "language": "javascript"}),
    );
    assert_eq!(r.status(), StatusCode::OK);
    let events = read_events(r, started, |_| false);
    let text: String = events
        .iter()
        .filter(|e| e.name == "stdout")
        .map(|e| e.data["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "streamed 42\n", "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last.name, "outcome");
    assert_eq!(
        (last.data["exit_code"].as_i64(), last.data["language"].as_str()),
        (Some(0), Some("javascript"))
    );
}

#[test]
fn files_go_into_a_private_scratch_and_new_or_changed_files_come_back() {
    let s = Server::open(&[]);
    let tool = s.upload("scratch");
    let request = json!({
        "args": ["ls", "cat:in.txt", "cat:/scratch/bin/x", "write:out/r.txt=result",
                 "write:in.txt=changed", "try:/etc/passwd"],
        "files": {"in.txt": "hello", "bin/x": {"base64": "aGk="}, "same.txt": "unchanged"},
    });
    if !namespaces_flag().is_empty() {
        let (status, v) = s.run(&tool, &request);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["error"].as_str().unwrap().contains("scratch directory"), "{v}");
        return;
    }
    let (status, o) = s.run(&tool, &request);
    assert_eq!((status, o["status"].as_str()), (StatusCode::OK, Some("exited")), "{o}");
    assert_eq!(
        o["stdout"],
        "ls=bin/x:2,in.txt:5,same.txt:9\ncat in.txt=hello\ncat /scratch/bin/x=hi\n\
         write out/r.txt ok\nwrite in.txt ok\ntry /etc/passwd missing NotFound\n",
        "{o}"
    );
    assert_eq!(
        o["files"],
        json!([{"name": "in.txt", "size": 7, "text": "changed"},
               {"name": "out/r.txt", "size": 6, "text": "result"}]),
        "new and changed files come back, unchanged inputs do not: {o}"
    );
    assert_eq!(o["files_truncated"], false);
    // Gone after the run: the next run's scratch is empty.
    let (_, o) = s.run(&tool, &json!({"args": ["ls"]}));
    assert_eq!(o["stdout"], "ls=\n", "{o}");
    assert!(o.get("files").is_none(), "{o}");
    // Bounds: names, count, and what comes back.
    for (files, want) in
        [(json!({"../x": "a"}), "relative path"), (json!({"/etc/x": "a"}), "relative path")]
    {
        let (status, v) = s.run(&tool, &json!({"files": files}));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["error"].as_str().unwrap().contains(want), "{v}");
    }
    let s = Server::open(&["--run-files", "2", "--run-files-out", "10"]);
    let tool = s.upload("scratch");
    let (status, v) = s.run(&tool, &json!({"files": {"a": "1", "b": "2", "c": "3"}}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (_, o) = s.run(&tool, &json!({"args": ["write:a=12345", "write:b=67890", "write:c=x"]}));
    assert_eq!(
        (o["files"].as_array().map(Vec::len), &o["files_truncated"]),
        (Some(2), &json!(true)),
        "{o}"
    );
}

#[test]
fn a_tool_that_cannot_name_a_file_gets_no_scratch_and_its_runs_take_no_files() {
    let s = Server::open(&[]);
    // `hello` imports fd_write and the environment only; `scratch` imports path_open & co.
    let (hello, scratch) = (s.upload("hello"), s.upload("scratch"));
    let shown = |id: &str| -> Value { s.get(&format!("/v1/tools/{id}")).json().expect("JSON") };
    let with_scratch = namespaces_flag().is_empty();
    assert_eq!(shown(&hello)["scratch"], false, "{}", shown(&hello));
    assert_eq!(shown(&scratch)["scratch"], with_scratch, "{}", shown(&scratch));
    let (status, v) = s.run(&hello, &json!({"files": {"in.txt": "x"}}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let why = v["error"].as_str().unwrap_or_default();
    if with_scratch {
        assert!(why.contains("imports no WASI filesystem call"), "{v}");
    } else {
        assert!(why.contains("--namespaces off"), "{v}");
    }
    // It runs as ever, with no scratch directory made for it; the other tool still has one.
    let (status, o) = s.run(&hello, &json!({}));
    assert_eq!((status, o["status"].as_str()), (StatusCode::OK, Some("exited")), "{o}");
    assert!(o.get("files").is_none(), "{o}");
    if with_scratch {
        let (_, o) = s.run(&scratch, &json!({"args": ["ls"], "files": {"a": "1"}}));
        assert_eq!(o["stdout"], "ls=a:1\n", "{o}");
    }
}

#[test]
fn concurrent_runs_cannot_reach_each_others_scratch() {
    if !namespaces_flag().is_empty() {
        eprintln!(
            "no user namespaces here: scratch directories are off (the files test checks the 400)"
        );
        return;
    }
    let s = Server::open(&[]);
    let tool = s.upload("scratch");
    let url = s.url(&format!("/v1/tools/{tool}/run"));
    let holder = std::thread::spawn(move || {
        let http = Client::new();
        let r = http
            .post(url)
            .json(&json!({"files": {"secret-a.txt": "A"}, "args": ["sleep:1200", "ls"]}))
            .send()
            .unwrap();
        json_of(r)
    });
    std::thread::sleep(Duration::from_millis(300));
    let (_, o) = s.run(
        &tool,
        &json!({
            "files": {"mine.txt": "B"},
            "args": ["try:/scratch/secret-a.txt", "try:secret-a.txt", "try:../secret-a.txt",
                     "try:/secret-a.txt", "ls"],
        }),
    );
    assert_eq!(
        o["stdout"],
        "try /scratch/secret-a.txt missing NotFound\ntry secret-a.txt missing NotFound\n\
         try ../secret-a.txt missing PermissionDenied\ntry /secret-a.txt missing NotFound\n\
         ls=mine.txt:1\n",
        "{o}"
    );
    let (_, a) = holder.join().unwrap();
    assert_eq!(a["stdout"], "ls=secret-a.txt:1\n", "the holder ran alongside: {a}");
    assert!(a["timings_us"]["run"].as_u64().unwrap() >= 1_200_000);
}

#[test]
fn tool_default_limits_apply_to_its_runs_and_requests_may_override_them() {
    let s = Server::open(&["--timeout", "10s"]);
    let bytes = std::fs::read(guest("clock")).unwrap();
    let r = s.post_bytes("/v1/tools?name=clock&timeout_ms=300&max_output=12", bytes.clone());
    let (status, meta) = json_of(r);
    assert_eq!(status, StatusCode::CREATED, "{meta}");
    assert_eq!(meta["limits"], json!({"timeout_ms": 300, "max_output": 12}));
    let id = meta["id"].as_str().unwrap();
    let (_, o) = s.run(id, &json!({"args": ["2000"]}));
    assert_eq!(o["status"], "timeout", "the tool's default deadline: {o}");
    let (_, o) = s.run(id, &json!({"args": ["1"], "limits": {"timeout_ms": 5000}}));
    assert_eq!(
        (o["status"].as_str(), o["stdout_truncated"].as_bool()),
        (Some("exited"), Some(true)),
        "{o}"
    );
    assert_eq!(o["stdout"].as_str().unwrap().len(), 12, "{o}");
    let (_, t) = json_of(s.get(&format!("/v1/tools/{id}")));
    assert_eq!(t["limits"]["timeout_ms"], 300);
    // Past the server's limits: refused at upload.
    let m = assert_error(
        s.post_bytes("/v1/tools?name=x&timeout_ms=20000", bytes),
        StatusCode::BAD_REQUEST,
    );
    assert!(m.contains("default limits") && m.contains("10000"), "{m}");
}

#[test]
fn a_key_past_its_rate_gets_429_with_retry_after_and_batch_items_count() {
    let dir = tempfile::tempdir().unwrap();
    let keys = key_file(dir.path(), &format!("{KEY_A}\n{KEY_B}\n"));
    let s = Server::start(
        None,
        &["--api-keys", keys.to_str().unwrap(), "--per-key-rate", "0.5", "--per-key-burst", "3"],
    )
    .with_key(KEY_A);
    let hello = s.upload("hello");
    let (status, v) =
        json_of(s.post_json(&format!("/v1/tools/{hello}/batch"), &json!({"tasks": [{}, {}]})));
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(s.run(&hello, &json!({})).0, StatusCode::OK, "the third of a burst of 3");
    let r = s.post_json(&format!("/v1/tools/{hello}/run"), &json!({}));
    let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    let m = assert_error(r, StatusCode::TOO_MANY_REQUESTS);
    assert!(m.contains("rate"), "{m}");
    // Another key has its own bucket; a batch larger than the burst never fits.
    let b = s
        .http
        .post(s.url(&format!("/v1/tools/{hello}/run")))
        .bearer_auth(KEY_B)
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(b.status(), StatusCode::OK);
    let big = s
        .http
        .post(s.url(&format!("/v1/tools/{hello}/batch")))
        .bearer_auth(KEY_B)
        .json(&json!({"tasks": [{}, {}, {}, {}]}))
        .send()
        .unwrap();
    assert_error(big, StatusCode::TOO_MANY_REQUESTS);
    // Two seconds later key A has a token again.
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(s.run(&hello, &json!({})).0, StatusCode::OK);
    assert_eq!(
        metric(&s, "zeroboot_requests_refused_total{reason=\"quota\"}").as_deref(),
        Some("zeroboot_requests_refused_total{reason=\"quota\"} 2")
    );
}

/// Without keys, every caller is one anonymous caller with a bucket of its own: the rate
/// still applies.
#[test]
fn a_server_without_keys_still_limits_the_rate() {
    let s = Server::open(&["--per-key-rate", "0.5", "--per-key-burst", "2"]);
    let hello = s.upload("hello");
    for i in 0..2 {
        assert_eq!(s.run(&hello, &json!({})).0, StatusCode::OK, "run {i} of a burst of 2");
    }
    let r = s.post_json(&format!("/v1/tools/{hello}/run"), &json!({}));
    assert!(r.headers().get("retry-after").is_some(), "{:?}", r.headers());
    let m = assert_error(r, StatusCode::TOO_MANY_REQUESTS);
    assert!(m.contains("rate"), "{m}");
}

#[test]
fn a_zygote_killed_under_load_ends_every_request_clearly_and_the_next_ones_succeed() {
    let s = Server::open(&["--pool", "2", "--max-in-flight", "16"]);
    let clock = s.upload("clock");
    let (_, h) = json_of(s.get("/v1/health"));
    let zygote = h["templates"][&clock]["zygote_pid"].as_i64().unwrap() as i32;
    let load: Vec<_> = (0..12).map(|_| sleeping_run(&s, &clock, 3000)).collect();
    // Every run in a sandbox: 12 running and the pool's 2 refilled. (Counting only 12
    // children could count the pool's 2 while two runs had yet to reach the zygote; those
    // then ran, correctly, on the zygote started again.)
    assert!(
        wait_until(Duration::from_secs(10), || metric(&s, "zeroboot_in_flight ").as_deref()
            == Some("zeroboot_in_flight 12")
            && children_of(zygote).len() >= 14),
        "the runs never started"
    );
    let killed = Instant::now();
    signal(zygote, libc::SIGKILL);
    for h in load {
        let (status, o) = h.join().unwrap();
        assert_eq!(status, StatusCode::OK, "{o}");
        assert_eq!(o["status"], "internal_error", "{o}");
        assert!(o["message"].as_str().unwrap().contains("SIGKILL"), "{o}");
    }
    assert!(killed.elapsed() < Duration::from_secs(5), "requests hung: {:?}", killed.elapsed());
    let hello = s.upload("hello");
    let next: Vec<_> = (0..8).map(|_| sleeping_run(&s, &clock, 1)).collect();
    for h in next {
        let (status, o) = h.join().unwrap();
        assert_eq!((status, o["status"].as_str()), (StatusCode::OK, Some("exited")), "{o}");
    }
    assert_eq!(s.run(&hello, &json!({})).0, StatusCode::OK);
    assert_eq!(
        metric(&s, &format!("zeroboot_zygote_restarts_total{{tool=\"{clock}\"}}")),
        Some(format!("zeroboot_zygote_restarts_total{{tool=\"{clock}\"}} 1"))
    );
}

/// A smoke of the load test (scripts/load-test.sh has the real one): 500 runs from 4 clients
/// at once, every answer checked, and the server's own count equal to the requests sent.
#[test]
fn five_hundred_concurrent_runs_all_come_back_exited_and_counted() {
    let s = Server::open(&[]);
    let hello = s.upload("hello");
    let url = s.url(&format!("/v1/tools/{hello}/run"));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let http = Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
                let mut ok = 0;
                for _ in 0..125 {
                    let (status, o) = json_of(http.post(&url).json(&json!({})).send().unwrap());
                    assert_eq!(status, StatusCode::OK, "{o}");
                    assert_eq!(o["stdout"], "hello from a zeroboot-wasm sandbox\n", "{o}");
                    ok += 1;
                }
                ok
            })
        })
        .collect();
    let ok: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(ok, 500);
    assert_eq!(
        metric(&s, &format!("zeroboot_tasks_total{{tool=\"{hello}\",status=\"exited\"}}")),
        Some(format!("zeroboot_tasks_total{{tool=\"{hello}\",status=\"exited\"}} 500"))
    );
}

/// A field of /proc/PID/status, e.g. `VmRSS` (its first word).
fn proc_status(pid: i32, field: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_client_that_does_not_read_its_stream_holds_the_guest_back_not_the_server() {
    let s = Server::open(&["--pool", "0", "--max-output", "4GiB"]);
    let flood = s.upload("output_flood");
    let (_, h) = json_of(s.get("/v1/health"));
    let zygote = h["templates"][&flood]["zygote_pid"].as_i64().unwrap() as i32;
    let rss = || proc_status(s.pid(), "VmRSS").parse::<u64>().unwrap_or(0);
    let before = rss();
    // The guest writes 64 KiB chunks without end; this client reads nothing for 3 s.
    let (r, started) = stream_run(&s, &flood, &json!({"limits": {"timeout_ms": 30000}}));
    std::thread::sleep(Duration::from_secs(3));
    let sandboxes: Vec<i32> = children_of(zygote).into_iter().collect();
    assert_eq!(sandboxes.len(), 1, "{sandboxes:?}");
    // Blocked writing to its full pipe, not running flat out into a growing buffer.
    let state = proc_status(sandboxes[0], "State");
    assert_eq!(state, "S", "the guest should wait for the client");
    let grown_kb = rss().saturating_sub(before);
    assert!(grown_kb < 64 * 1024, "the server grew by {grown_kb} KiB while the client slept");
    // The stream still works, and dropping it kills the guest.
    let events = read_events(r, started, |e| e.at > Duration::from_secs(3) && e.name == "stdout");
    assert!(!events.is_empty());
    assert!(
        wait_until(Duration::from_secs(5), || children_of(zygote).is_empty()),
        "the sandbox outlived its stream"
    );
}

/// A component tool: its exports are listed with JSON Schemas derived from their WIT types,
/// a run calls one with JSON `arguments` (the answer carries its `result`) or a WAVE
/// `invoke`, and arguments that do not fit are 400 before any sandbox is started.
#[test]
fn a_component_tools_exports_are_typed_and_called_with_json() {
    let s = Server::open(&[]);
    let bytes = std::fs::read(common::component("wit_tools")).expect("component bytes");
    let (status, tool) = json_of(s.post_bytes("/v1/tools?name=wit_tools", bytes));
    assert_eq!(status, StatusCode::CREATED, "{tool}");
    let id = tool["id"].as_str().expect("id").to_string();
    let exports = tool["exports"].as_array().expect("exports");
    let add = exports
        .iter()
        .find(|e| e["name"] == "zeroboot:tools/tools#add")
        .unwrap_or_else(|| panic!("no add in {tool}"));
    assert_eq!(add["params"], json!(["s32", "s32"]), "{add}");
    assert_eq!(add["param_names"], json!(["a", "b"]), "{add}");
    assert_eq!(add["input_schema"]["required"], json!(["a", "b"]), "{add}");
    assert_eq!(add["output_schema"]["type"], "integer", "{add}");

    let call = |invoke: &str, arguments: Value| {
        s.run(&id, &json!({"invoke": invoke, "arguments": arguments}))
    };
    let (status, o) = call("add", json!({"a": 40, "b": 2}));
    assert_eq!(
        (status, &o["status"], &o["result"]),
        (StatusCode::OK, &json!("exited"), &json!(42)),
        "{o}"
    );
    let order = json!({"o": {"id": 7, "name": "box", "tags": ["a"], "color": "red"}});
    let (_, o) = call("summarize", order);
    assert_eq!(o["result"], "#7 box [a] - red", "{o}");
    let (_, o) = call("divide", json!([1.0, 0.0]));
    assert_eq!(o["result"], json!({"err": "division by zero"}), "{o}");
    let (_, o) = s.run(&id, &json!({"invoke": "area(rect({x: 2, y: 3}))"}));
    assert_eq!((o["stdout"].as_str(), o.get("result")), (Some("6\n"), None), "{o}");

    // The runs that reached a sandbox, whatever their status.
    let sandboxed = || -> Vec<String> {
        let text = s.get("/metrics").text().unwrap();
        text.lines()
            .filter(|l| l.starts_with("zeroboot_tasks_total") && !l.contains("invalid_request"))
            .map(str::to_string)
            .collect()
    };
    let runs_before = sandboxed();
    for (invoke, arguments, why) in [
        ("add", json!({"a": 1, "b": "2"}), "b: expected an integer"),
        ("add", json!({"a": 1}), "b: missing"),
        (
            "summarize",
            json!({"o": {"id": 7, "name": "box", "tags": [1], "color": "red"}}),
            "o.tags[0]: expected a string",
        ),
        ("nope", json!({}), "no function named `nope`"),
    ] {
        let (status, e) = call(invoke, arguments);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{invoke}: {e}");
        assert!(e["error"].as_str().is_some_and(|m| m.contains(why)), "{why:?} not in {e}");
    }
    let (status, e) = s.run(&id, &json!({"invoke": "add(1, true)"}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    let (status, e) = s.run(&id, &json!({"arguments": {"a": 1, "b": 2}}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["error"].as_str().is_some_and(|m| m.contains("need `invoke`")), "{e}");
    assert_eq!(sandboxed(), runs_before, "no refused call reached a sandbox");
    // The server keeps serving.
    let (_, o) = call("add", json!([2, 3]));
    assert_eq!(o["result"], 5, "{o}");
}

/// A streamed batch sends each task's result as it finishes (in the order they finish, each
/// with its index), then `done`; a client that goes away cancels the runs still going.
#[test]
fn a_streamed_batch_sends_each_result_as_it_finishes() {
    let s = Server::open(&[]);
    let clock = s.upload("clock");
    let started = Instant::now();
    let body = json!({"tasks": [{"args": ["1500"]}, {"args": ["0"]}, {"args": ["500"]}]});
    let r = s.post_json(&format!("/v1/tools/{clock}/batch?stream=sse"), &body);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let events = read_events(r, started, |e| e.name == "done");
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["result", "result", "result", "done"], "{events:?}");
    let order: Vec<u64> = events[..3].iter().map(|e| e.data["index"].as_u64().unwrap()).collect();
    assert_eq!(order, [1, 2, 0], "results come as the tasks finish: {events:?}");
    for e in &events[..3] {
        assert_eq!(e.data["status"], "exited", "{e:?}");
    }
    assert!(events[2].data["stdout"].as_str().unwrap().contains("slept_ms=1500"), "{events:?}");
    assert!(
        events[0].at + Duration::from_millis(700) < events[2].at,
        "the first result came only with the last: {events:?}"
    );
    assert_eq!(events[3].data["results"], 3);

    // A client that stops reading and closes: the sleeping runs are cancelled.
    let body = json!({"tasks": [{"args": ["20000"]}, {"args": ["20000"]}]});
    let r = s.post_json(&format!("/v1/tools/{clock}/batch?stream=sse"), &body);
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        wait_until(Duration::from_secs(10), || metric(&s, "zeroboot_in_flight ").as_deref()
            == Some("zeroboot_in_flight 2")),
        "the runs never started"
    );
    drop(r);
    assert!(
        wait_until(Duration::from_secs(10), || metric(&s, "zeroboot_in_flight ").as_deref()
            == Some("zeroboot_in_flight 0")),
        "the runs were not cancelled"
    );
}
