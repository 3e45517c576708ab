//! The benchmark's own pieces, outside the trusted tree: [`floor`] is the minimal kernel work of one
//! NIC from a root process (its own netlink and tun ioctls, not the helper's), the "floor" contender
//! of `vmpriv-bench`.

pub mod floor;
