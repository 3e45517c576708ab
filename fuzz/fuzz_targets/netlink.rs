//! The hand-written rtnetlink reply parser on arbitrary bytes: no panic, builder and parser agree.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmpriv_helper::netlink::check_reply(data));
