//! Link settings for the guest (here rather than in .cargo/config.toml so that they apply
//! whatever directory cargo is run from).
fn main() {
    // The shadow stack in linear memory: 2 MiB instead of Rust's default 1 MiB. RustPython runs
    // Python-to-Python calls without native recursion, but recursion through native code does
    // use this stack (repr of nested objects, sorted(key=...), __getattr__, json, deepcopy),
    // and RustPython raises RecursionError when it runs low. Measured: nested repr reaches
    // 549 levels with 1 MiB, 1119 with 2 MiB, so Python's default limit (1000) applies first.
    println!("cargo:rustc-link-arg-bins=-zstack-size=2097152");
    println!("cargo:rerun-if-changed=build.rs");
}
