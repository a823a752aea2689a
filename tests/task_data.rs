//! Issue 12, defect 4: a task's input never lingers where a later sandbox inherits it. The
//! worker (the host) hands each task straight to its sandbox; the zygote, whose memory every
//! later sandbox is a copy of, never holds it. Proven by scanning the memory of the zygote and
//! of a sandbox forked after the task, for the task's args, env and stdin, in pool and
//! on-demand modes. Reads `/proc/PID/mem`, which needs ptrace rights over the sandbox (root,
//! as CI is).

mod common;

use common::{guest, spawn_worker};
use serde_json::json;
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

/// Every readable mapping of `pid`, concatenated.
fn memory(pid: i32) -> Vec<u8> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read maps");
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem"))
        .expect("open /proc/PID/mem (needs ptrace rights over the sandbox: run as root)");
    let mut all = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else { continue };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.contains("[vsyscall]") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else { continue };
        let (a, b) = (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap());
        // Guard regions and huge reservations are not resident; cap what one mapping adds.
        let len = (b - a).min(256 << 20) as usize;
        let mut buf = vec![0u8; len];
        if mem.seek(SeekFrom::Start(a)).is_ok() {
            let mut got = 0;
            while got < len {
                match mem.read(&mut buf[got..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            buf.truncate(got);
            all.extend_from_slice(&buf);
        }
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn scan_after_a_secret_task(pool: &str) {
    let nonce =
        format!("{:x}", Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id()));
    let secrets = [
        format!("ARG-SECRET-{nonce}-a7f3"),
        format!("ENV-SECRET-{nonce}-19bc"),
        format!("STDIN-SECRET-{nonce}-e2d0"),
    ];
    let module = guest("multi");
    let (mut w, mut input, mut output) = spawn_worker(&["--pool", pool, module.to_str().unwrap()]);
    let first =
        json!({"args": ["hello", secrets[0]], "env": {"K": secrets[1]}, "stdin": secrets[2]});
    writeln!(input, "{first}").unwrap();
    input.flush().unwrap();
    let mut line = String::new();
    output.read_line(&mut line).unwrap();
    assert!(line.contains("\"exited\""), "{line}");
    // A later task that keeps its sandbox alive while we look.
    let own = format!("OWN-MARKER-{nonce}-55aa");
    writeln!(input, "{}", json!({"args": ["spin", own], "timeout_ms": 20000})).unwrap();
    input.flush().unwrap();
    // The spinning sandbox: a pool sandbox being forked, or the first task's sandbox tearing
    // down, is running only briefly.
    let (zygote, sandbox) = common::running_sandbox(w.id(), Duration::from_millis(200));
    // The scan works: the later sandbox does hold its own task's input.
    assert!(contains(&memory(sandbox), own.as_bytes()), "the scan missed the sandbox's own args");
    for (who, pid) in [("zygote", zygote), ("later sandbox", sandbox)] {
        let mem = memory(pid);
        assert!(mem.len() > 1 << 20, "read only {} bytes of the {who}", mem.len());
        for s in &secrets {
            assert!(
                !contains(&mem, s.as_bytes()),
                "the {who} (pool {pool}) holds an earlier task's {s}"
            );
        }
    }
    w.kill().unwrap();
    let _ = w.wait();
}

#[test]
fn no_later_sandbox_holds_an_earlier_tasks_input_pool() {
    scan_after_a_secret_task("2");
}

#[test]
fn no_later_sandbox_holds_an_earlier_tasks_input_on_demand() {
    scan_after_a_secret_task("0");
}
