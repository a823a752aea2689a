//! Prints 32 bytes from WASI `random_get` as hex. Two sandboxes forked from one template must
//! print different lines.
#[link(wasm_import_module = "wasi_snapshot_preview1")]
unsafe extern "C" {
    fn random_get(buf: *mut u8, len: usize) -> u16;
}

fn main() {
    let mut buf = [0u8; 32];
    // SAFETY: `buf` is a valid writable buffer of exactly `buf.len()` bytes.
    let errno = unsafe { random_get(buf.as_mut_ptr(), buf.len()) };
    assert_eq!(errno, 0, "random_get failed");
    let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
    println!("{hex}");
}
