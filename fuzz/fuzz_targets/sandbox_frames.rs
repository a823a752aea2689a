//! Zygote/host ⇄ sandbox frames: the task frame a waiting sandbox reads from its channel, and
//! the report frame a sandbox writes back (judged into an outcome).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zeroboot_wasm::fuzzing::task_frame(data);
    zeroboot_wasm::fuzzing::report_frame(data);
});
