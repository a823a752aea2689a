//! Huge pages for what every sandbox shares: the compiled code and the warm linear memory.
//!
//! On the development VM a sandbox's time went, beyond its guest's own work, to the kernel's
//! handling of 4 KiB pages: a fork copies one page-table entry per private page the zygote has
//! touched, a sandbox faults in each page of a file-mapped module it runs, and its exit tears
//! all of them down. For RustPython (a 54 MB compiled image, ~40 MB of warm memory) that was
//! thousands of entries per sandbox. Backed by 2 MiB pages, the same memory is one entry per
//! 2 MiB: fork copies a few dozen, the sandbox takes no fault on the code at all, and a write
//! to the warm memory splits only the 2 MiB block it lands in. Measured with `worker`, 300
//! `print(1+1)` tasks, three rounds alternating: total p50 2466–3504 µs with neither,
//! 2040–2108 with the code only, 1735–1890 with both (see the README).
//!
//! Both are done once, in the zygote, before its first fork, and only where it pays: an image
//! of at least [`MIN_IMAGE`] (smaller modules stay file-mapped and shared through the page
//! cache), and only 2 MiB blocks of warm memory that are at least half present already (a
//! block is filled with zeros where untouched, so a guest that declares a large memory and
//! uses little of it does not make the zygote allocate it). Which pages are present is read
//! from `/proc/self/pagemap`, opened before the zygote confines itself, with `pread`: the
//! zygote's seccomp filter needs no new call for it. A one-shot `run` forks once and skips it all. It is
//! best-effort: where transparent huge pages are off (`never`) or the kernel predates
//! `MADV_COLLAPSE` (6.1), nothing changes but speed.

use crate::sys;

/// A huge page on x86-64 and aarch64 with 4 KiB base pages.
const HUGE_PAGE: usize = 2 << 20;

/// The smallest compiled artifact worth copying into anonymous memory to back it with huge
/// pages: it must hold at least one whole aligned 2 MiB block wherever it lands.
pub(crate) const MIN_IMAGE: u64 = 2 * HUGE_PAGE as u64;

/// Backs with huge pages each 2 MiB-aligned block inside `[start, end)` that `worth` accepts.
/// Returns the bytes so backed.
fn back_blocks(start: usize, end: usize, worth: impl Fn(usize) -> bool) -> u64 {
    let first = start.next_multiple_of(HUGE_PAGE);
    let last = end / HUGE_PAGE * HUGE_PAGE;
    (first..last)
        .step_by(HUGE_PAGE)
        .filter(|&block| worth(block) && sys::collapse_to_huge_pages(block, HUGE_PAGE).is_ok())
        .count() as u64
        * HUGE_PAGE as u64
}

/// Backs with huge pages each 2 MiB-aligned block inside `[start, end)` that is at least half
/// present, as this process's `pagemap` says. Returns the bytes so backed.
pub(crate) fn back(start: usize, end: usize, pagemap: &std::fs::File) -> u64 {
    back_blocks(start, end, |block| {
        sys::present_pages(pagemap, block, HUGE_PAGE)
            .is_ok_and(|present| present * 2 >= HUGE_PAGE / 4096)
    })
}

/// Backs a compiled image with huge pages if it is at least [`MIN_IMAGE`]. Returns the bytes
/// so backed.
pub(crate) fn back_image(image: std::ops::Range<usize>) -> u64 {
    if (image.len() as u64) < MIN_IMAGE {
        return 0;
    }
    // The image was just read or compiled into this memory: every page of it is present.
    back_blocks(image.start, image.end, |_| true)
}
