//! Hostile: writes 64 KiB chunks to stdout forever (or N chunks when given an argument).
use std::io::Write;

fn main() {
    let limit: Option<u64> = std::env::args().nth(1).and_then(|a| a.parse().ok());
    let chunk = vec![b'x'; 64 * 1024];
    let mut out = std::io::stdout().lock();
    let mut written = 0u64;
    while limit.is_none_or(|l| written < l) {
        if out.write_all(&chunk).is_err() {
            break;
        }
        written += 1;
    }
}
