//! One module, many behaviours, chosen by the first argument — so a single warm template can
//! alternate hostile and ordinary tasks: `hello`, `spin`, `alloc`, `flood`, `sleep`, `trap`,
//! `recurse` (Wasm stack exhaustion), `exit N`.
use std::io::Write;

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    // No locals in linear memory: this exhausts Wasmtime's own stack limit.
    if std::hint::black_box(depth) == u64::MAX { 0 } else { recurse(depth + 1).wrapping_add(1) }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str).unwrap_or("hello") {
        "hello" => println!("hello"),
        "spin" => {
            println!("spinning");
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "alloc" => {
            println!("allocating");
            let mut keep = Vec::new();
            loop {
                let mut block = vec![1u8; 1 << 20];
                block[4096] = 2;
                keep.push(std::hint::black_box(block));
            }
        }
        "flood" => {
            let chunk = vec![b'y'; 64 * 1024];
            let mut out = std::io::stdout().lock();
            while out.write_all(&chunk).is_ok() {}
        }
        "sleep" => {
            println!("sleeping");
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
        "trap" => core::arch::wasm32::unreachable(),
        "recurse" => println!("{}", recurse(0)),
        "exit" => std::process::exit(args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1)),
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    }
}
