#![no_main]
// The body lives in the library (coffer::fuzz) so CI replays this corpus through it.
libfuzzer_sys::fuzz_target!(|data: &[u8]| coffer::fuzz::blob(data));
