//! The smallest useful tool: one line on stdout.
fn main() {
    println!("hello from a zeroboot-wasm sandbox");
}
