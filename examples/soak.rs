//! The soak: a multi-threaded host saturated with ordinary and hostile tasks across several
//! templates, for a set time, while a fault injector SIGKILLs random sandboxes and random
//! zygotes. Run by `scripts/soak` (which builds what it needs); not part of `./test.sh`.
//!
//! `soak --guests DIR [--duration SECONDS] [--concurrency N] [--testkit PATH] [--serve PATH]
//!       [--seed N] [--fault-every-ms N]`
//!
//! At the end it checks, and prints, that every task submitted got exactly one outcome (an
//! echo task's stdout is its own unique input, so an outcome handed to the wrong task shows),
//! that each hostile task ended with the status it must have unless an injected fault hit its
//! template while it ran, that the host's descriptors, threads and RSS stayed flat, and that no
//! zombie, orphan sandbox, cgroup, mount or temporary file is left. Per minute: throughput and
//! the echo tasks' p50/p99. The exit status is 1 when any check fails.
//!
//! With `--serve PATH` (the `zeroboot-wasm` binary) a quarter of the submitters go through a
//! `zeroboot-wasm serve` process over HTTP instead of the library, and its zygotes and
//! sandboxes are fault targets too; the server's own descriptors and threads are checked the
//! same way.

use clap::Parser;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zeroboot_wasm::{
    Isolation, LoadOptions, Outcome, Runtime, Status, Stdin, Task, TemplateHandle,
};

#[derive(Parser, Debug)]
#[command(name = "soak", about = "Soak the fork server with hostile tasks and injected faults")]
struct Args {
    /// Directory holding the test guests (`scripts/build-guests.sh` prints it).
    #[arg(long)]
    guests: PathBuf,
    /// How long to submit tasks, in seconds.
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// Tasks in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// The `zeroboot-testkit` binary, for seccomp-violation probes (skipped without it).
    #[arg(long)]
    testkit: Option<PathBuf>,
    /// The `zeroboot-wasm` binary: also drive a `serve` process over HTTP.
    #[arg(long)]
    serve: Option<PathBuf>,
    /// Seed of the task mix and the fault injector (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Mean time between injected faults, in milliseconds (0: none).
    #[arg(long, default_value_t = 250)]
    fault_every_ms: u64,
}

/// A small, fast, seedable generator (xorshift64*): the mix needs no cryptographic quality.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The kinds of task in the mix, with their weights (out of 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    /// stdin to stdout; 1 in 10 carries 512 KiB of stdin.
    Echo,
    /// A loop that never calls the host: `timeout` at 100 ms.
    Spin,
    /// Grows memory until refused: `memory_limit` at 32 MiB.
    AllocBomb,
    /// 4 MiB of output against a 256 KiB cap: `exited`, stdout truncated at the cap.
    Flood,
    /// `unreachable`: `trapped`.
    Trap,
    /// Unbounded recursion: `trapped`.
    StackOverflow,
    /// 2 MiB written against a 256 KiB budget, or 200 files against 50: `write_limit`. Over
    /// HTTP (no write budget there): 16 MiB into the 8 MiB scratch tmpfs, exit 1 (disk full).
    FsFill,
}

const MIX: &[(Kind, u64)] = &[
    (Kind::Echo, 55),
    (Kind::Spin, 5),
    (Kind::AllocBomb, 8),
    (Kind::Flood, 8),
    (Kind::Trap, 10),
    (Kind::StackOverflow, 6),
    (Kind::FsFill, 8),
];

impl Kind {
    fn guest(self) -> &'static str {
        match self {
            Kind::Echo => "echo",
            Kind::Spin => "spin",
            Kind::AllocBomb => "alloc_bomb",
            Kind::Flood => "output_flood",
            Kind::Trap => "trap",
            Kind::StackOverflow => "stack_overflow",
            Kind::FsFill => "fs_fill",
        }
    }

    fn pick(rng: &mut Rng) -> Kind {
        let mut r = rng.below(MIX.iter().map(|(_, w)| w).sum());
        for (k, w) in MIX {
            if r < *w {
                return *k;
            }
            r -= w;
        }
        Kind::Echo
    }

    /// The status the task must end with when no fault hits it.
    fn expected(self, via_http: bool) -> Status {
        match self {
            Kind::Echo | Kind::Flood => Status::Exited,
            Kind::FsFill if via_http => Status::Exited,
            Kind::Spin => Status::Timeout,
            Kind::AllocBomb => Status::MemoryLimit,
            Kind::Trap | Kind::StackOverflow => Status::Trapped,
            Kind::FsFill => Status::WriteLimit,
        }
    }
}

const FLOOD_CAP: usize = 256 << 10;

/// One task of the mix: the task, and what its stdout must be (echo only).
fn make_task(kind: Kind, id: u64, via_http: bool, rng: &mut Rng) -> (Task, Option<Vec<u8>>) {
    let base = Task::new().timeout(Duration::from_secs(10));
    match kind {
        Kind::Echo => {
            let mut input = format!("task {id}\n").into_bytes();
            if rng.below(10) == 0 {
                input.resize(512 << 10, b'.');
                input.extend_from_slice(format!("\nend of task {id}\n").as_bytes());
            }
            let task = base
                .stdin(Stdin::Bytes(input.clone()))
                .output(zeroboot_wasm::Output::Capture { max_bytes: 1 << 20 });
            (task, Some(input))
        }
        Kind::Spin => (base.timeout(Duration::from_millis(100)), None),
        Kind::AllocBomb => (base.max_memory(32 << 20), None),
        Kind::Flood => (
            base.args(["64"]).output(zeroboot_wasm::Output::Capture { max_bytes: FLOOD_CAP }),
            None,
        ),
        Kind::Trap => (base, None),
        Kind::StackOverflow => (base, None),
        Kind::FsFill => {
            if via_http {
                (base.args([".", "bytes", "16777216"]), None)
            } else if rng.below(2) == 0 {
                (base.args([".", "bytes", "2097152"]).max_write(256 << 10), None)
            } else {
                (base.args([".", "files", "200"]).max_files(50), None)
            }
        }
    }
}

/// What one submission ended with.
#[derive(Debug)]
struct Record {
    kind: Kind,
    via_http: bool,
    done: Instant,
    /// The status, or the error for a task that could not be started.
    result: Result<Status, String>,
    /// Whether the outcome is the task's own and complete (echo's stdout, flood's cap).
    content_ok: bool,
    latency_us: u64,
}

/// Faults injected, per template, as (time, what).
#[derive(Debug, Default)]
struct Faults {
    log: Mutex<Vec<(usize, Instant, &'static str)>>,
}

impl Faults {
    /// Whether a fault hit a template `which` accepts while a task ran, or in the second
    /// before it started (its zygote killed just before the task reached it; a pool sandbox
    /// killed before it took its task is no excuse: that task runs in a fresh sandbox).
    fn hit(&self, which: impl Fn(usize) -> bool, from: Instant, to: Instant) -> bool {
        let before = from.checked_sub(Duration::from_secs(1)).unwrap_or(from);
        self.log
            .lock()
            .map(|l| {
                l.iter().rev().take_while(|(_, at, _)| *at >= before).any(|(t, at, what)| {
                    which(*t) && *at <= to && (*at >= from || *what == "zygote")
                })
            })
            .unwrap_or(false)
    }
}

/// What the soak keeps of its tasks: counters, and per minute the echo tasks' latencies (4
/// bytes each), so that its own memory hardly grows with the tasks it has seen and the host's
/// RSS shows the runtime's.
#[derive(Debug, Default)]
struct Tally {
    recorded: u64,
    lost: u64,
    http: u64,
    faulted: u64,
    /// Per kind: tasks, with the right status and content, ended by a fault, slowest µs.
    by_kind: BTreeMap<Kind, (u64, u64, u64, u64)>,
    fault_reasons: BTreeMap<String, u64>,
    wrong: BTreeMap<String, u64>,
    /// Per minute (by completion): tasks, echo latencies in µs.
    minutes: Vec<(u64, Vec<u32>)>,
}

impl Tally {
    /// Judges one finished task: `hit` tells whether an injected fault may explain it.
    fn add(&mut self, r: Record, hit: bool, start: Instant) {
        self.recorded += 1;
        self.http += r.via_http as u64;
        let minute = (r.done.duration_since(start).as_secs() / 60) as usize;
        if self.minutes.len() <= minute {
            self.minutes.resize_with(minute + 1, Default::default);
        }
        self.minutes[minute].0 += 1;
        if r.kind == Kind::Echo && r.result.is_ok() {
            self.minutes[minute].1.push(r.latency_us.min(u32::MAX as u64) as u32);
        }
        let e = self.by_kind.entry(r.kind).or_default();
        e.0 += 1;
        e.3 = e.3.max(r.latency_us);
        let via = if r.via_http { " (http)" } else { "" };
        let expected = r.kind.expected(r.via_http);
        let wrong = match &r.result {
            Ok(s) if *s == expected && r.content_ok => {
                e.1 += 1;
                None
            }
            Ok(s) if *s == expected => Some(format!("{:?}{via}: not its own output", r.kind)),
            Err(m) if m.starts_with("LOST") => {
                self.lost += 1;
                Some(format!("{:?}{via}: {m}", r.kind))
            }
            Ok(Status::Killed | Status::InternalError) | Err(_) if hit => {
                e.2 += 1;
                self.faulted += 1;
                let why = match &r.result {
                    Ok(s) => format!("{s:?}"),
                    Err(m) => m.chars().take(70).collect(),
                };
                *self.fault_reasons.entry(why).or_default() += 1;
                None
            }
            Ok(s) => Some(format!("{:?}{via}: {s:?}", r.kind)),
            Err(m) => Some(format!(
                "{:?}{via}: error {}",
                r.kind,
                m.chars().take(120).collect::<String>()
            )),
        };
        if let Some(w) = wrong {
            *self.wrong.entry(w).or_default() += 1;
        }
    }
}

/// The host's own figures at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Vitals {
    fds: usize,
    /// Of the kinds in [`transient`]: pipes, sockets, pidfds, module files and memfds,
    /// /dev/null, the soak's own /proc and /sys readings. Their number moves with the work in flight (pool sandboxes' pipes, HTTP
    /// keep-alive connections, a zygote being restarted reads its module, a probe's stdin).
    moving: usize,
    threads: usize,
    rss_kb: u64,
}

/// Whether a descriptor (its `/proc/PID/fd` link) is of a kind whose number moves with the
/// work in flight.
fn transient(link: &str) -> bool {
    link.starts_with("pipe:")
        || link.starts_with("socket:")
        || link == "anon_inode:[pidfd]"
        || link.ends_with(".wasm")
        || link.starts_with("/memfd:module")
        || link == "/dev/null"
        // The soak's own readings of /proc and /sys, made by its other threads meanwhile.
        || link.starts_with("/proc/")
        || link.starts_with("/sys/")
}

/// The links of `pid`'s descriptors of steady kinds (named in a failed check).
fn steady_fds(pid: u32) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| !transient(l))
        .collect();
    out.sort();
    out
}

fn vitals(pid: u32) -> Vitals {
    let mut v = Vitals::default();
    if let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in entries.flatten() {
            // A descriptor closed between the listing and the readlink is not counted: with
            // pipes opening and closing hundreds of times a second, counting it (as a steady
            // kind, its link unknown) made a phantom steady descriptor.
            let Ok(link) = std::fs::read_link(e.path()) else { continue };
            v.fds += 1;
            if transient(&link.to_string_lossy()) {
                v.moving += 1;
            }
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    for line in status.lines() {
        let field =
            |p: &str| line.strip_prefix(p).and_then(|r| r.split_whitespace().next()?.parse().ok());
        if let Some(n) = field("Threads:") {
            v.threads = n as usize;
        }
        if let Some(n) = field("VmRSS:") {
            v.rss_kb = n;
        }
    }
    v
}

/// `pid`'s children, their children, and so on.
fn descendants(pid: u32) -> Vec<u32> {
    let children = |p: u32| -> Vec<u32> {
        let mut out = Vec::new();
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                out.extend(text.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
            }
        }
        out
    };
    let mut out = children(pid);
    let mut i = 0;
    while i < out.len() {
        let more = children(out[i]);
        out.extend(more);
        i += 1;
    }
    out
}

/// Live processes running `exe` (other than this one): zygotes and sandboxes of this soak, or
/// orphans once it has stopped them all. (A zombie has no `exe` link.)
fn processes_of(exe: &Path) -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != me && std::fs::read_link(e.path().join("exe")).is_ok_and(|l| l == exe) {
            out.push(pid);
        }
    }
    out
}

/// Zombie children of this process.
fn zombies() -> usize {
    let me = std::process::id();
    let mut n = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid …; comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let mut f = rest.split_whitespace();
        if f.next() == Some("Z") && f.next().and_then(|p| p.parse::<u32>().ok()) == Some(me) {
            n += 1;
        }
    }
    n
}

/// The sandbox cgroups (`zeroboot-<pid>` trees and their children) under this process's
/// memory cgroup.
fn cgroups() -> usize {
    let table = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut dirs = Vec::new();
    for line in table.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else { continue };
        let rel = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            dirs.push(Path::new("/sys/fs/cgroup/memory").join(rel));
        } else if controllers.is_empty() {
            dirs.push(Path::new("/sys/fs/cgroup").join(rel));
        }
    }
    let mut n = 0;
    for d in dirs {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with("zeroboot-") {
                n += 1;
                n += std::fs::read_dir(e.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|c| c.file_type().is_ok_and(|t| t.is_dir()))
                    .count();
            }
        }
    }
    n
}

fn mounts() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo").map_or(0, |m| m.lines().count())
}

/// Names in the temporary directories (a file left behind shows as a new name).
fn temp_names() -> HashSet<PathBuf> {
    let mut out = HashSet::new();
    for dir in [std::env::temp_dir(), PathBuf::from("/dev/shm")] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            out.insert(e.path());
        }
    }
    out
}

fn pct(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// Checks a finished task's outcome against what it must be.
fn content_ok(kind: Kind, o: &Outcome, expect: &Option<Vec<u8>>) -> bool {
    match (kind, expect) {
        (Kind::Echo, Some(input)) => o.stdout.bytes == *input && !o.stdout.truncated,
        (Kind::Flood, _) => o.stdout.truncated && o.stdout.bytes.len() == FLOOD_CAP,
        _ => true,
    }
}

/// The library path: templates loaded into zygotes of this process's runtime.
struct Library {
    templates: Vec<(Kind, TemplateHandle)>,
}

impl Library {
    async fn load(runtime: &Runtime, guests: &Path) -> Result<Self, String> {
        let mut templates = Vec::new();
        for (kind, _) in MIX {
            let mut options = LoadOptions::default();
            if *kind == Kind::FsFill {
                options.isolation = Isolation { scratch: Some(8 << 20), ..Isolation::default() };
            }
            let path = guests.join(format!("{}.wasm", kind.guest()));
            let handle = runtime
                .load(path.clone(), options)
                .await
                .map_err(|e| format!("loading {}: {}", path.display(), e.one_line()))?;
            templates.push((*kind, handle));
        }
        Ok(Self { templates })
    }

    fn index(&self, kind: Kind) -> usize {
        self.templates.iter().position(|(k, _)| *k == kind).unwrap_or(0)
    }
}

/// The HTTP path: a `zeroboot-wasm serve` child with the same guests uploaded as tools.
struct Server {
    child: std::process::Child,
    base: String,
    tools: BTreeMap<Kind, String>,
    client: reqwest::Client,
}

impl Server {
    async fn start(binary: &Path, guests: &Path, data: &Path) -> Result<Self, String> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(binary)
            .args(["serve", "--no-auth", "--listen", "127.0.0.1:0", "--scratch-size", "8MiB"])
            .args(["--run-files-out", "64KiB"])
            .arg("--data-dir")
            .arg(data)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string())?;
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .ok_or_else(|| format!("serve printed no address: {line:?}"))?
            .to_string();
        let client = reqwest::Client::new();
        let mut tools = BTreeMap::new();
        for (kind, _) in MIX {
            let bytes = std::fs::read(guests.join(format!("{}.wasm", kind.guest())))
                .map_err(|e| e.to_string())?;
            let answer: serde_json::Value = client
                .post(format!("{base}/v1/tools?name={}", kind.guest()))
                .body(bytes)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            let id = answer["id"].as_str().ok_or_else(|| format!("upload: {answer}"))?;
            tools.insert(*kind, id.to_string());
        }
        Ok(Self { child, base, tools, client })
    }

    /// Runs one task over HTTP; the outcome's status and whether its content is its own.
    async fn run(
        &self,
        kind: Kind,
        task: &Task,
        expect: &Option<Vec<u8>>,
    ) -> Result<(Status, bool), String> {
        let mut limits = serde_json::Map::new();
        if let Some(t) = task.timeout {
            limits.insert("timeout_ms".into(), (t.as_millis() as u64).into());
        }
        if let Some(m) = task.max_memory {
            limits.insert("max_memory".into(), m.into());
        }
        if let Some(w) = task.max_write {
            limits.insert("max_write".into(), w.into());
        }
        if let Some(f) = task.max_files {
            limits.insert("max_files".into(), f.into());
        }
        if let zeroboot_wasm::Output::Capture { max_bytes } = task.output {
            limits.insert("max_output".into(), max_bytes.into());
        }
        let mut body = serde_json::json!({"args": task.args, "limits": limits});
        if let Stdin::Bytes(b) = &task.stdin {
            body["stdin"] = String::from_utf8_lossy(b).into_owned().into();
        }
        let tool = self.tools.get(&kind).ok_or("no tool")?;
        let response = self
            .client
            .post(format!("{}/v1/tools/{tool}/run", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("request: {e}"))?;
        let code = response.status();
        let v: serde_json::Value = response.json().await.map_err(|e| format!("body: {e}"))?;
        if !code.is_success() {
            return Err(format!("HTTP {code}: {v}"));
        }
        let status = serde_json::from_value::<Status>(v["status"].clone())
            .map_err(|e| format!("status: {e}: {v}"))?;
        let stdout = v["stdout"].as_str().unwrap_or_default().as_bytes();
        let truncated = v["stdout_truncated"].as_bool().unwrap_or(false);
        let ok = match (kind, expect) {
            (Kind::Echo, Some(input)) => stdout == input.as_slice() && !truncated,
            (Kind::Flood, _) => truncated && stdout.len() == FLOOD_CAP,
            _ => true,
        };
        Ok((status, ok))
    }
}

/// Kills a random sandbox (a zygote's child) or, one time in five, a random zygote.
fn inject(rng: &mut Rng, zygotes: &[(usize, u32)], faults: &Faults) {
    if zygotes.is_empty() {
        return;
    }
    let (template, zygote) = zygotes[rng.below(zygotes.len() as u64) as usize];
    let (victim, what) = if rng.below(5) == 0 {
        (Some(zygote), "zygote")
    } else {
        let sandboxes = descendants(zygote);
        (
            (!sandboxes.is_empty()).then(|| sandboxes[rng.below(sandboxes.len() as u64) as usize]),
            "sandbox",
        )
    };
    let Some(victim) = victim else { return };
    if let Ok(mut log) = faults.log.lock() {
        log.push((template, Instant::now(), what));
    }
    // A victim already gone (its task ended first) is no matter.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    if let Ok(mut log) = faults.log.lock() {
        log.push((template, Instant::now(), what));
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = Args::parse();
    std::process::exit(match soak(args).await {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("soak: {e}");
            2
        }
    });
}

async fn soak(args: Args) -> Result<bool, String> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1
    });
    let exe = std::fs::read_link("/proc/self/exe").map_err(|e| e.to_string())?;
    let me = std::process::id();
    let (cgroups_before, mounts_before, temp_before) = (cgroups(), mounts(), temp_names());
    let data = tempfile::tempdir().map_err(|e| e.to_string())?;

    let runtime = Runtime::new();
    let library = Arc::new(Library::load(&runtime, &args.guests).await?);
    let server = match &args.serve {
        Some(bin) => Some(Arc::new(Server::start(bin, &args.guests, data.path()).await?)),
        None => None,
    };
    println!(
        "soak: seed {seed}, {} s, {} in flight, {} templates{}, a fault every ~{} ms",
        args.duration,
        args.concurrency,
        MIX.len(),
        if server.is_some() { " (library and serve)" } else { " (library)" },
        args.fault_every_ms
    );

    let start = Instant::now();
    let end = start + Duration::from_secs(args.duration);
    let tally: Arc<Mutex<Tally>> = Arc::new(Mutex::new(Tally::default()));
    let submitted = Arc::new(AtomicU64::new(0));
    let faults = Arc::new(Faults::default());
    let stop = Arc::new(AtomicBool::new(false));

    // Submitters.
    let mut submitters = tokio::task::JoinSet::new();
    for worker in 0..args.concurrency {
        let (library, server, tally, submitted, faults) =
            (library.clone(), server.clone(), tally.clone(), submitted.clone(), faults.clone());
        let via_http = server.is_some() && worker % 4 == 3;
        let mut rng = Rng(seed ^ (worker as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        submitters.spawn(async move {
            while Instant::now() < end {
                let id = submitted.fetch_add(1, Ordering::Relaxed);
                let kind = Kind::pick(&mut rng);
                let (task, expect) = make_task(kind, id, via_http, &mut rng);
                let bound = task.timeout.unwrap_or_default() + Duration::from_secs(30);
                let submitted_at = Instant::now();
                let run = async {
                    match (&server, via_http) {
                        (Some(s), true) => s.run(kind, &task, &expect).await,
                        _ => {
                            let handle = &library.templates[library.index(kind)].1;
                            match handle.run(&task).await {
                                Ok(o) => Ok((o.status, content_ok(kind, &o, &expect))),
                                Err(e) => Err(e.one_line()),
                            }
                        }
                    }
                };
                let result = match tokio::time::timeout(bound, run).await {
                    Ok(r) => r,
                    Err(_) => Err("LOST: no outcome within the task's deadline + 30 s".into()),
                };
                let done = Instant::now();
                let record = Record {
                    kind,
                    via_http,
                    done,
                    content_ok: result.as_ref().is_ok_and(|(_, ok)| *ok),
                    result: result.map(|(s, _)| s),
                    latency_us: done.duration_since(submitted_at).as_micros() as u64,
                };
                let template = library.index(kind);
                let hit = faults.hit(
                    |t| if via_http { t >= MIX.len() } else { t == template },
                    submitted_at,
                    done,
                );
                if let Ok(mut t) = tally.lock() {
                    t.add(record, hit, start);
                }
            }
        });
    }

    // Seccomp-violation probes: a native escape attempt through the full sandbox set-up.
    let probes = Arc::new(Mutex::new((0u64, Vec::<String>::new())));
    let probe_task = args.testkit.clone().map(|testkit| {
        let probes = probes.clone();
        tokio::spawn(async move {
            while Instant::now() < end {
                let out =
                    tokio::process::Command::new(&testkit).args(["probe", "execve"]).output().await;
                let verdict = match out {
                    Ok(o) => {
                        let v: serde_json::Value =
                            serde_json::from_slice(&o.stdout).unwrap_or_default();
                        (v["status"] == "sandbox_violation")
                            .then_some(())
                            .ok_or_else(|| format!("probe execve: {v}"))
                    }
                    Err(e) => Err(format!("probe could not start: {e}")),
                };
                if let Ok(mut p) = probes.lock() {
                    p.0 += 1;
                    if let Err(e) = verdict {
                        p.1.push(e);
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    });

    // The fault injector.
    let injector = {
        let (library, server, faults, stop) =
            (library.clone(), server.clone(), faults.clone(), stop.clone());
        let mut rng = Rng(seed.rotate_left(17) | 1);
        let every = args.fault_every_ms;
        tokio::spawn(async move {
            if every == 0 {
                return;
            }
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(every / 2 + rng.below(every))).await;
                let mut zygotes = Vec::new();
                for (i, (_, h)) in library.templates.iter().enumerate() {
                    if let Some(pid) = h.zygote_pid().await {
                        zygotes.push((i, pid as u32));
                    }
                }
                if let Some(s) = &server {
                    // The server's zygotes are its children; template indices past ours.
                    for (j, z) in descendants(s.child.id())
                        .into_iter()
                        .filter(|p| {
                            std::fs::read_to_string(format!("/proc/{p}/stat")).ok().and_then(|st| {
                                st.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
                            }) == Some(s.child.id())
                        })
                        .enumerate()
                    {
                        zygotes.push((MIX.len() + j, z));
                    }
                }
                inject(&mut rng, &zygotes, &faults);
            }
        })
    };

    // Vitals once a minute (and the baseline after the first ten seconds of load).
    let mut minute_vitals: Vec<(Vitals, Option<Vitals>)> = Vec::new();
    let server_pid = server.as_ref().map(|s| s.child.id());
    let warm = Duration::from_secs(10.min(args.duration / 4).max(1));
    tokio::time::sleep(warm).await;
    let baseline = (vitals(me), server_pid.map(vitals));
    let steady_baseline = steady_fds(me);
    // Steady descriptors seen in a sample beyond the baseline's (named in a failed check).
    let mut steady_extra: Vec<String> = Vec::new();
    let mut next = start + Duration::from_secs(60);
    while Instant::now() < end {
        let wake = next.min(end);
        tokio::time::sleep_until(wake.into()).await;
        if Instant::now() >= next {
            minute_vitals.push((vitals(me), server_pid.map(vitals)));
            let mut base = steady_baseline.clone();
            for fd in steady_fds(me) {
                match base.iter().position(|b| *b == fd) {
                    Some(i) => {
                        base.swap_remove(i);
                    }
                    None => steady_extra.push(format!("minute {}: {fd}", minute_vitals.len())),
                }
            }
            next += Duration::from_secs(60);
        }
    }
    while let Some(joined) = submitters.join_next().await {
        joined.map_err(|e| format!("submitter panicked: {e}"))?;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = injector.await;
    if let Some(p) = probe_task {
        let _ = p.await;
    }
    let elapsed = start.elapsed();
    // Quiet: let the pools refill after the last faults, then read the host.
    for (_, h) in &library.templates {
        let _ = h.stats().await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let last = (vitals(me), server_pid.map(vitals));

    let tally = std::mem::take(&mut *tally.lock().map_err(|_| "tally poisoned")?);
    let submitted = submitted.load(Ordering::Relaxed);
    let mut ok = true;
    let mut report = |pass: bool, line: String| {
        println!("{} {line}", if pass { "PASS" } else { "FAIL" });
        ok &= pass;
    };

    // Per minute.
    println!("minute  tasks  tasks/s  echo p50 us  echo p99 us  host fds  threads  rss MiB");
    let mut all_echo: Vec<u32> = Vec::new();
    for (m, (tasks, echo)) in tally.minutes.iter().enumerate() {
        let mut echo = echo.clone();
        echo.sort_unstable();
        all_echo.extend_from_slice(&echo);
        let (lo, hi) =
            (Duration::from_secs(m as u64 * 60), Duration::from_secs(m as u64 * 60 + 60));
        let span = (elapsed.min(hi).saturating_sub(lo)).as_secs_f64().max(1.0);
        let v = minute_vitals.get(m).map_or(last.0, |v| v.0);
        println!(
            "{:>6}  {:>5}  {:>7.0}  {:>11}  {:>11}  {:>8}  {:>7}  {:>7.1}",
            m + 1,
            tasks,
            *tasks as f64 / span,
            pct(&echo, 0.5),
            pct(&echo, 0.99),
            v.fds,
            v.threads,
            v.rss_kb as f64 / 1024.0
        );
    }

    // Outcomes: one per task, the right one.
    report(
        tally.recorded == submitted && tally.lost == 0,
        format!(
            "outcomes: {submitted} tasks submitted, {} outcomes recorded, {} lost (no outcome within deadline + 30 s)",
            tally.recorded, tally.lost
        ),
    );
    let by_kind = &tally.by_kind;
    for (kind, (n, right, hit, worst)) in by_kind {
        println!(
            "  {:<14} {n:>7} tasks: {right:>7} {:?}, {hit:>5} ended by an injected fault; slowest {} ms",
            format!("{kind:?}"),
            kind.expected(false),
            worst / 1000
        );
    }
    for (why, n) in &tally.fault_reasons {
        println!("    ended by a fault as {why}: {n}");
    }
    let fault_count = faults.log.lock().map_or(0, |l| l.len() / 2);
    let (zygote_kills, sandbox_kills) = faults.log.lock().map_or((0, 0), |l| {
        let z = l.iter().filter(|(_, _, w)| *w == "zygote").count() / 2;
        (z, l.len() / 2 - z)
    });
    let restarts: u64 = library.templates.iter().map(|(_, h)| h.zygote_restarts()).sum();
    println!(
        "  faults injected: {fault_count} SIGKILLs ({sandbox_kills} sandboxes, {zygote_kills} zygotes); library zygotes restarted {restarts} times; {} tasks over HTTP",
        tally.http
    );
    let wrong: u64 = tally.wrong.values().sum();
    report(
        wrong == 0,
        format!(
            "statuses: every task the status it must have, or ({}) one explained by a fault on its template while it ran; {wrong} wrong{}",
            tally.faulted,
            if wrong == 0 {
                String::new()
            } else {
                let some: Vec<String> =
                    tally.wrong.iter().take(10).map(|(w, n)| format!("{n} × {w}")).collect();
                format!(": {}", some.join("; "))
            }
        ),
    );
    if args.testkit.is_some() {
        let (n, bad) = probes.lock().map(|p| (p.0, p.1.clone())).unwrap_or_default();
        report(
            bad.is_empty() && n > 0,
            format!(
                "seccomp: {n} escape probes (execve), {} not stopped as sandbox_violation {bad:?}",
                bad.len()
            ),
        );
    } else {
        println!("SKIP seccomp probes: no --testkit binary given");
    }

    // The host's vitals: flat between the baseline (after warm-up) and the end (quiet).
    // Tolerance: descriptors other than pipes, sockets and pidfds exactly as at the baseline;
    // those within what the work in flight may hold (4 pipes per pooled sandbox, 2 per
    // template; a socket and a pidfd per template being restarted; a keep-alive connection
    // per submitter; a probe's pipes); threads within Tokio's spares (8); RSS within 32 MiB
    // or 25 %, whichever is larger.
    let flat = |what: &str, b: Vitals, l: Vitals, templates: usize| -> (bool, String) {
        let slack = templates * 2 * 4 + templates * 2 + args.concurrency + 4;
        let rss_slack = (b.rss_kb / 4).max(32 << 10);
        let pass = l.fds - l.moving == b.fds - b.moving
            && l.moving <= b.moving + slack
            && l.threads <= b.threads + 8
            && l.rss_kb <= b.rss_kb + rss_slack;
        (
            pass,
            format!(
                "{what}: fds {} → {} (steady kinds {} → {}; pipes, sockets, pidfds, module files {} → {}, +{slack} allowed), threads {} → {} (+8), RSS {:.1} → {:.1} MiB (+{:.0})",
                b.fds,
                l.fds,
                b.fds - b.moving,
                l.fds - l.moving,
                b.moving,
                l.moving,
                b.threads,
                l.threads,
                b.rss_kb as f64 / 1024.0,
                l.rss_kb as f64 / 1024.0,
                rss_slack as f64 / 1024.0
            ),
        )
    };
    // The worst of every sample after the baseline: each minute's and the last.
    let worst = |samples: Vec<Vitals>| -> Vitals {
        let other = samples.iter().map(|v| v.fds - v.moving).max().unwrap_or(0);
        let moving = samples.iter().map(|v| v.moving).max().unwrap_or(0);
        Vitals {
            fds: other + moving,
            moving,
            threads: samples.iter().map(|v| v.threads).max().unwrap_or(0),
            rss_kb: samples.iter().map(|v| v.rss_kb).max().unwrap_or(0),
        }
    };
    let host_samples: Vec<Vitals> =
        minute_vitals.iter().map(|v| v.0).chain(std::iter::once(last.0)).collect();
    let (pass, line) =
        flat("host (worst of every minute)", baseline.0, worst(host_samples), MIX.len());
    let steady = |pass: bool, pid: u32| {
        if pass {
            String::new()
        } else {
            format!("; steady descriptors now: {:?}", steady_fds(pid))
        }
    };
    let extra = if pass || steady_extra.is_empty() {
        String::new()
    } else {
        format!("; beyond the baseline's: {steady_extra:?}")
    };
    report(pass, line + &steady(pass, me) + &extra);
    if let (Some(b), Some(l)) = (baseline.1, last.1) {
        let samples: Vec<Vitals> =
            minute_vitals.iter().filter_map(|v| v.1).chain(std::iter::once(l)).collect();
        let (pass, line) = flat("serve (worst of every minute)", b, worst(samples), MIX.len());
        report(pass, line + &steady(pass, server_pid.unwrap_or(0)));
    }

    // Stop everything, then look for what is left.
    drop(library);
    if let Some(s) = server {
        let mut s = Arc::try_unwrap(s).map_err(|_| "server still shared")?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(s.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = tokio::task::spawn_blocking(move || s.child.wait()).await;
    }
    let serve_exe = args.serve.as_ref().and_then(|p| std::fs::canonicalize(p).ok());
    let leftovers = || {
        let mut left = processes_of(&exe);
        if let Some(s) = &serve_exe {
            left.extend(processes_of(s));
        }
        left
    };
    let settle = Instant::now();
    let (mut left, mut z) = (leftovers(), zombies());
    while (!left.is_empty() || z > 0 || cgroups() != cgroups_before)
        && settle.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        (left, z) = (leftovers(), zombies());
    }
    report(
        left.is_empty() && z == 0,
        format!("processes: {} zygotes or sandboxes left {left:?}, {z} zombies", left.len()),
    );
    let cg = cgroups();
    report(cg == cgroups_before, format!("cgroups: {cgroups_before} before, {cg} after"));
    let m = mounts();
    report(m == mounts_before, format!("mounts: {mounts_before} before, {m} after"));
    drop(data);
    let new: Vec<PathBuf> = temp_names().difference(&temp_before).cloned().collect();
    let ours: Vec<&PathBuf> =
        new.iter().filter(|p| p.to_string_lossy().contains("zeroboot")).collect();
    report(ours.is_empty(), format!("temporary files: {} left {ours:?}", ours.len()));

    all_echo.sort_unstable();
    println!(
        "soak: {} tasks in {:.0} s ({:.0}/s), echo p50 {} us p99 {} us; {}",
        tally.recorded,
        elapsed.as_secs_f64(),
        tally.recorded as f64 / elapsed.as_secs_f64(),
        pct(&all_echo, 0.5),
        pct(&all_echo, 0.99),
        if ok { "all checks passed" } else { "CHECKS FAILED" }
    );
    Ok(ok)
}
