//! The fuzz targets' seeds and every input a fuzzer found (fuzz/seeds/TARGET/), run through
//! the same entry points the targets call (`zeroboot_wasm::fuzzing`), in the normal test
//! suite: a fixed finding stays fixed. (The `modules` target's seeds run in its own tests:
//! a zygote needs a single-threaded process.)
#![cfg(feature = "testkit")]

use std::path::Path;
use zeroboot_wasm::fuzzing;

fn each_seed(target: &str, run: impl Fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        eprintln!("{}", path.display());
        run(&bytes);
        n += 1;
    }
    assert!(n > 0, "no seeds in {}", dir.display());
}

#[test]
fn worker_line_seeds() {
    each_seed("worker_line", fuzzing::worker_lines);
}

#[test]
fn zygote_frame_seeds() {
    each_seed("zygote_frames", |b| {
        fuzzing::zygote_request(b);
        fuzzing::zygote_reply(b);
    });
}

#[test]
fn sandbox_frame_seeds() {
    each_seed("sandbox_frames", |b| {
        fuzzing::task_frame(b);
        fuzzing::report_frame(b);
    });
}

#[cfg(feature = "serve")]
#[test]
fn http_body_seeds() {
    each_seed("http_body", fuzzing::http_body);
}

/// The seeds are what they say: each request and reply seed decodes (a seed that no longer
/// parses would start the fuzzer from nothing).
#[test]
fn frame_seeds_decode() {
    use zeroboot_wasm::protocol::{Reply, Request};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/zygote_frames");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        if name.starts_with("request_") {
            serde_json::from_slice::<Request>(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        } else if name.starts_with("reply_") {
            serde_json::from_slice::<Reply>(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
