//! Host ⇄ zygote packets: a request as the zygote decodes it (and the checks on its
//! fields), a reply as the host decodes it (and what it makes of an exit).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zeroboot_wasm::fuzzing::zygote_request(data);
    zeroboot_wasm::fuzzing::zygote_reply(data);
});
