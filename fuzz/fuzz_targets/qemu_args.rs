//! The command-line parser (QEMU mode included) on an arbitrary argv: no panic, no truncation.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmpriv_checks::check_args(data));
