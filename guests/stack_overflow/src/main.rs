//! Hostile: unbounded recursion until the Wasm stack is exhausted.
#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let buf = std::hint::black_box([n; 64]);
    recurse(n + 1) + buf[3]
}

fn main() {
    println!("recursing");
    println!("{}", recurse(0));
}
