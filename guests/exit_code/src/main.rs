//! Exits with the code given as its first argument (default 7), after writing to both streams.
fn main() {
    let code: i32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(7);
    println!("exiting with {code}");
    eprintln!("to stderr before exit");
    std::process::exit(code);
}
