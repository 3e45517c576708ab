//! vmpriv's shared language: the messages a VM process and the privileged helper exchange, the pure
//! validator that decides what a caller may do, the policy-file parser and vmd's local address plan.
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
pub mod name;
pub mod policy;
pub mod trust;
pub mod validate;
pub mod wire;

pub use addr::{Inet4Pair, Inet4Prefix, Inet6Pair, Inet6Prefix};
pub use name::{Description, GroupName, IfName};
pub use policy::{Caller, POLICY_PATH, Policy, PolicyError};
pub use validate::{ValidConfig, ValidOp, ValidRequest, validate};
pub use wire::{Error, FdIndex, IfConfig, Invalid, LocalRequest, Request, Response, TapInfo, Unsupported};
