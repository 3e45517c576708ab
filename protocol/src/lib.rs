//! vmpriv's session protocol (docs/protocol.md): the messages a VM process and the session helper
//! exchange, the pure validator that decides what a caller may do, and vmd's local address plan. The
//! policy itself is `vmpriv-policy`'s, re-exported here. The design and threat model: docs/design.md.
//!
//! Nothing here does I/O and the crate forbids `unsafe_code`: the helper trusts this crate to decide, so it is
//! kept small enough to read in one sitting and is fuzzed (see `fuzz/` and the `vmpriv-checks` crate).
#![forbid(unsafe_code)]
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

pub mod addr;
pub mod validate;
pub mod wire;

pub use addr::{Inet4Pair, Inet4Prefix, Inet6Pair, Inet6Prefix, Slot};
pub use validate::{ValidConfig, ValidOp, ValidRequest, validate};
pub use vmpriv_policy::{Caller, Description, GroupName, IfName, POLICY_PATH, Policy, PolicyError};
pub use vmpriv_policy::{name, policy, trust};
pub use wire::{Error, FdIndex, IfConfig, Invalid, LocalRequest, Request, Response, TapInfo, Unsupported};
