//! Hostile: fills a granted directory. `fs_fill DIR files N` creates N one-byte files;
//! `fs_fill DIR bytes N` writes N bytes, in 64 KiB chunks, to one file; `fs_fill DIR dirs N`
//! creates N directories. Prints `done MODE N` and exits 0 when every step succeeded, or the
//! first error and exits 1.
use std::io::Write;
use std::path::Path;

fn fill(dir: &Path, mode: &str, n: u64) -> std::io::Result<()> {
    match mode {
        "files" => {
            for i in 0..n {
                std::fs::write(dir.join(format!("f{i}")), b"x")?;
            }
        }
        "dirs" => {
            for i in 0..n {
                std::fs::create_dir(dir.join(format!("d{i}")))?;
            }
        }
        "bytes" => {
            let mut f = std::fs::File::create(dir.join("big"))?;
            let chunk = vec![b'z'; 64 * 1024];
            let mut left = n;
            while left > 0 {
                let k = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..k])?;
                left -= k as u64;
            }
        }
        other => return Err(std::io::Error::other(format!("unknown mode {other}"))),
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).map_or("/data", String::as_str);
    let mode = args.get(2).map_or("files", String::as_str);
    let n: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(u64::MAX);
    match fill(Path::new(dir), mode, n) {
        Ok(()) => println!("done {mode} {n}"),
        Err(e) => {
            println!("error {e}");
            std::process::exit(1);
        }
    }
}
