//! Huge pages for what every sandbox shares: the compiled code, the warm linear memory, and
//! the runtime's own machine code.
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
//! The runtime's own code (Wasmtime, WASI, this crate: ~12–20 MB of the executable) was the
//! same cost again for every task: a sandbox faulted in each page of it that it ran (a
//! profile of on-demand hello tasks put ~18% of all CPU time in sandboxes' page faults,
//! mostly on file-mapped code). A serving zygote moves an anonymous copy of it, backed by
//! huge pages, over its file mapping ([`back_own_code`]). Through the fork server, hello with
//! 2 in flight, three pairs alternating: on demand 1554–1632 → 1893–1934 tasks/s and p50
//! 671–778 → 600–648 µs; from the pool p50 571–642 → 516–533 µs.
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
    let (first, last) = aligned_part(start, end);
    (first..last)
        .step_by(HUGE_PAGE)
        .filter(|&block| worth(block) && sys::collapse_to_huge_pages(block, HUGE_PAGE).is_ok())
        .count() as u64
        * HUGE_PAGE as u64
}

/// The 2 MiB-aligned part of `[start, end)` (empty when `first >= last`).
fn aligned_part(start: usize, end: usize) -> (usize, usize) {
    (start.next_multiple_of(HUGE_PAGE), end / HUGE_PAGE * HUGE_PAGE)
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

/// Backs this process's own machine code (the executable's read + execute mapping: the
/// runtime, Wasmtime, WASI) with huge pages, by moving an anonymous copy of each 2 MiB-aligned
/// part of it over the file mapping. A sandbox then takes no page fault on the runtime's code
/// (a fork copies no page-table entry of a file mapping, so each sandbox faulted in every page
/// of it that it ran: ~70 faults of up to 16 pages each per `print(1+1)` task in a profile of
/// the Python guest), and fork copies a dozen entries for it. Costs a copy of the code (~20 MB) per zygote, shared by its
/// sandboxes. Returns the bytes so backed; 0 (nothing changed) where huge pages are not to
/// be had, or if this process has a second thread. A cost for those who profile: the code
/// now shows as anonymous memory, so a profiler finds no symbols for it in this process.
pub(crate) fn back_own_code() -> u64 {
    let Some(code) = own_code() else { return 0 };
    let single_threaded = std::fs::File::open("/proc/self/stat")
        .is_ok_and(|stat| crate::zygote::require_single_thread(&stat).is_ok());
    if !single_threaded {
        return 0;
    }
    let (start, end) = aligned_part(code.start, code.end);
    if start >= end {
        return 0;
    }
    let len = end - start;
    // SAFETY: `[start, end)` lies inside this process's mapped, readable code.
    let Ok(copy) = (unsafe { sys::copy_to_anonymous(start, len, HUGE_PAGE) }) else { return 0 };
    // Backed while still a private copy: if the kernel offers no huge pages, nothing changes.
    if sys::collapse_to_huge_pages(copy, len).is_err() {
        // SAFETY: the copy is ours alone.
        unsafe { sys::unmap(copy, len) };
        return 0;
    }
    // SAFETY: the copy holds exactly the code's bytes (code is never written), and this
    // process has a single thread (checked above).
    match unsafe { sys::replace_code(start, copy, len) } {
        Ok(()) => len as u64,
        Err(_) => 0,
    }
}

/// The executable's code mapping (read + execute, private, from the file `/proc/self/exe`
/// names), from `/proc/self/maps`.
fn own_code() -> Option<std::ops::Range<usize>> {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata("/proc/self/exe").ok()?.ino();
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (range, perms) = (fields.next()?, fields.next()?);
        let (_offset, _dev, ino) = (fields.next()?, fields.next()?, fields.next()?);
        if perms != "r-xp" || ino.parse::<u64>().ok()? != inode {
            return None;
        }
        let (a, b) = range.split_once('-')?;
        Some(usize::from_str_radix(a, 16).ok()?..usize::from_str_radix(b, 16).ok()?)
    })
}
