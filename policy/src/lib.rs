//! vmpriv's policy (vmpriv.conf(5), docs/policy.md): what the policy file says and grants, the names that
//! reach the kernel, the rules a trusted file must meet, and the local prefixes. Both privileged binaries
//! decide with it (the bridge helper needs nothing more); the session protocol is `vmpriv-protocol`'s.
//!
//! Nothing here does I/O and the crate forbids `unsafe_code`; it is fuzzed (see `fuzz/` and the
//! `vmpriv-checks` crate).
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

pub mod name;
pub mod policy;
pub mod prefix;
pub mod trust;

pub use name::{Description, GroupName, IfName};
pub use policy::{Caller, POLICY_PATH, Policy, PolicyError};
pub use prefix::{Inet4Prefix, Inet6Prefix};
