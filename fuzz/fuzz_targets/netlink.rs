//! The helper's netlink receive path (reply loop and the link, address and route parsers) on arbitrary
//! bytes: no panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmpriv_checks::check_netlink(data));
