//! `serve`: a request body as every JSON route parses it into tasks, within the server's
//! limits.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| zeroboot_wasm::fuzzing::http_body(data));
