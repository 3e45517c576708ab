//! vmpriv-helper: the privileged half of vmpriv. `main.rs` reads as the start-up sequence; the modules
//! are the pieces an auditor reads in turn.
//!
//! `unsafe_code` is denied here and allowed only in [`sys`], where each block has a `// SAFETY:` line.
#![deny(unsafe_code)]
// Each block one operation, each with its `// SAFETY:` line (only sys.rs has any).
#![deny(clippy::undocumented_unsafe_blocks, clippy::multiple_unsafe_ops_per_block)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod args;
pub mod audit;
pub mod configure;
pub mod netlink;
pub mod ops;
pub mod qemu;
pub mod session;
pub mod startup;
pub mod sys;

/// For the netlink fuzz target (`vmpriv-checks`): the helper's real receive path on `data` as one
/// receive buffer. Not part of any API.
#[doc(hidden)]
pub fn fuzz_netlink_receive(data: &[u8]) {
    netlink::fuzz_receive(data);
}

/// For the argv fuzz target (`vmpriv-checks`): what the helper's real parser made of `argv`, as
/// (socket fd, QEMU-mode bridge); `(None, None)` for `--help`/`--version`; `None` when refused.
#[doc(hidden)]
pub fn fuzz_parse_args(argv: &[std::ffi::OsString]) -> Option<(Option<i32>, Option<String>)> {
    match args::parse(argv).ok()? {
        args::Mode::Session { fd, .. } => Some((Some(fd), None)),
        args::Mode::Qemu { fd, bridge, .. } => Some((Some(fd), Some(bridge))),
        args::Mode::Activated => Some((Some(startup::LISTEN_FD), None)),
        args::Mode::Help | args::Mode::Version => Some((None, None)),
    }
}
