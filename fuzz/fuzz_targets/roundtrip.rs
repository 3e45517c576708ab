//! Structured: arbitrary valid-shaped requests encode, decode to the same value, and validate
//! without panicking.
#![no_main]
libfuzzer_sys::fuzz_target!(|req: vmpriv_protocol::Request| vmpriv_checks::check_roundtrip(&req));
