//! Prints a line, then executes `unreachable` (a Wasm trap), or divides by zero with `div`.
fn main() {
    println!("about to trap");
    if std::env::args().nth(1).as_deref() == Some("div") {
        let zero = std::hint::black_box(0i32);
        println!("{}", std::hint::black_box(1i32).wrapping_div(zero));
    }
    core::arch::wasm32::unreachable();
}
