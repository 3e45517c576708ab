//! vmpriv-helper: the privileged half of vmpriv. `main.rs` reads as the start-up sequence; the modules
//! are the pieces an auditor reads in turn.
//!
//! `unsafe_code` is denied here and allowed only in [`sys`], where each block has a `// SAFETY:` line.
#![deny(unsafe_code)]
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
