//! The policy parser on arbitrary text: no panic, and what parses prints back to the same policy.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmpriv_checks::check_policy(data));
