//! Global state: increments a static counter and writes a marker file-less global. Every task
//! forked from one template must see the counter start at zero.
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);
static mut SCRATCH: [u8; 4096] = [0; 4096];

fn main() {
    let before = COUNTER.fetch_add(1, Ordering::SeqCst);
    // SAFETY: single-threaded guest; nothing else references SCRATCH.
    let dirty = unsafe {
        let s = &mut *std::ptr::addr_of_mut!(SCRATCH);
        let was = s[0];
        s[0] = s[0].wrapping_add(1);
        was
    };
    println!("counter_before={before} scratch_before={dirty}");
}
