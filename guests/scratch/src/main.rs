//! Works in its scratch directory (`zeroboot-wasm serve`'s per-run `files`): runs each
//! argument as a step, in order, printing one line per step, so a test can assert each.
//!
//! - `ls` — `ls=NAME:SIZE,…` of the working directory (recursive, sorted)
//! - `cat:NAME` — `cat NAME=CONTENT` or `cat NAME err KIND` (relative to the working dir)
//! - `write:NAME=CONTENT` — writes a file (creating its directories): `write NAME ok`
//! - `try:PATH` — `try PATH found` or `try PATH missing KIND` (any path, e.g. absolute)
//! - `say:TEXT` — prints TEXT on its own line (flushed at once)
//! - `sleep:MS` — sleeps
use std::fs;
use std::path::Path;

fn list(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        match e.metadata() {
            Ok(m) if m.is_dir() => list(&e.path(), &format!("{name}/"), out),
            Ok(m) => out.push(format!("{name}:{}", m.len())),
            Err(_) => out.push(format!("{name}:?")),
        }
    }
}

fn main() {
    for step in std::env::args().skip(1) {
        let (op, arg) = step.split_once(':').unwrap_or((step.as_str(), ""));
        match op {
            "ls" => {
                let mut names = Vec::new();
                list(Path::new("."), "", &mut names);
                names.sort();
                println!("ls={}", names.join(","));
            }
            "cat" => match fs::read_to_string(arg) {
                Ok(s) => println!("cat {arg}={s}"),
                Err(e) => println!("cat {arg} err {:?}", e.kind()),
            },
            "write" => {
                let (name, content) = arg.split_once('=').unwrap_or((arg, ""));
                let p = Path::new(name);
                let r = p
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .map_or(Ok(()), fs::create_dir_all)
                    .and_then(|()| fs::write(p, content));
                match r {
                    Ok(()) => println!("write {name} ok"),
                    Err(e) => println!("write {name} err {:?}", e.kind()),
                }
            }
            "try" => match fs::metadata(arg) {
                Ok(_) => println!("try {arg} found"),
                Err(e) => println!("try {arg} missing {:?}", e.kind()),
            },
            "say" => println!("{arg}"),
            "sleep" => {
                let ms = arg.parse().unwrap_or(0);
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            other => println!("unknown step {other:?}"),
        }
    }
}
