//! `zeroboot-wasm worker`'s stdin: request lines read with the worker's bounded reader, each
//! parsed into a task (for a module and for a snippet interpreter); every task accepted must
//! be valid and reach a sandbox intact.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| zeroboot_wasm::fuzzing::worker_lines(data));
