//! Clocks and `poll_oneoff`: reads both clocks, sleeps (a clock subscription) and checks that
//! monotonic time advanced by at least the sleep.
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let ms: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).expect("wall clock after 1970");
    println!("wall_secs={}", wall.as_secs());
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(ms));
    let slept = start.elapsed();
    println!("slept_ms={}", slept.as_millis());
    println!("monotonic_ok={}", slept >= Duration::from_millis(ms));
}
