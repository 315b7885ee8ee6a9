//! Fuzz target: the user-state file parser on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = twofactor_core::store::parse_state(std::path::Path::new("/fuzz/u.json"), "u", data);
});
