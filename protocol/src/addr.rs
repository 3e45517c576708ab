//! vmd's local address plan (`vm_priv_addr`, `vm_priv_addr6`), computed strictly (docs/policy.md).
//!
//! Each (vm, nic) pair owns one IPv4 /31 inside the local prefix, host side even, VM side odd, and one
//! IPv6 /96 whose bytes 8..12 are the VM's IPv4 address, host `::1`, VM `::2`.
//!
//! Divergence from vmd, on purpose: vmd ORs `vm << 8` into the prefix and then masks, so under the
//! default /10 vm 16385 silently gets vm 1's addresses and vm 2^24 + 1 wraps onto vm 1. Here a vm id
//! that does not fit in the prefix's host bits is rejected, as is nic 127 and above.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
pub use vmpriv_policy::prefix::{AddrError, Inet4Prefix, Inet6Prefix};

/// vmd accepts nic indices 0..=126 (each takes two addresses of the last octet, .0/.1 unused).
pub const NIC_MAX: u32 = 126;

/// One VM's NIC, whose local addresses the plan computes and whose claim a tap holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub vm: u32,
    pub nic: u32,
}

/// The IPv4 /31 of (vm, nic): the host's address and the VM's. Only [`local_inet`] computes one (and
/// a reply's decoder reads one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inet4Pair {
    host: Ipv4Addr,
    vm: Ipv4Addr,
}

/// The IPv6 /96 of (vm, nic): host `…::1`, VM `…::2`. Only [`local_inet6`] computes one (and a
/// reply's decoder reads one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inet6Pair {
    host: Ipv6Addr,
    vm: Ipv6Addr,
}

impl Inet4Pair {
    /// Prefix length of the host address.
    pub const PREFIX_LEN: u8 = 31;
    /// The host side (even), which the helper puts on the tap, prefix length 31.
    pub fn host(&self) -> Ipv4Addr {
        self.host
    }
    /// The VM side (odd), for the VMM's DHCP or the guest's static configuration.
    pub fn vm(&self) -> Ipv4Addr {
        self.vm
    }
}

impl Inet6Pair {
    /// Prefix length of the host address.
    pub const PREFIX_LEN: u8 = 96;
    /// The host side, which the helper puts on the tap, prefix length 96.
    pub fn host(&self) -> Ipv6Addr {
        self.host
    }
    /// The VM side.
    pub fn vm(&self) -> Ipv6Addr {
        self.vm
    }
}

/// `vm_priv_addr` for both sides, strictly: no aliasing, no wrap.
pub fn local_inet(prefix: Inet4Prefix, vm: u32, nic: u32) -> Result<Inet4Pair, AddrError> {
    if nic > NIC_MAX {
        return Err(AddrError::NicOutOfRange);
    }
    // The vm id fills the host bits above the last octet: 32 - len - 8 of them (8 to 23).
    let (network, len) = prefix.parts();
    let vm_bits = 32 - 8 - u32::from(len);
    if u64::from(vm) >= 1u64 << vm_bits {
        return Err(AddrError::VmOutOfRange);
    }
    let host = u32::from(network) | (vm << 8) | ((nic + 1) * 2);
    Ok(Inet4Pair {
        host: Ipv4Addr::from(host),
        vm: Ipv4Addr::from(host | 1),
    })
}

/// `vm_priv_addr6` for both sides: the /96 is named after the VM's IPv4 address.
pub fn local_inet6(
    prefix4: Inet4Prefix,
    prefix6: Inet6Prefix,
    vm: u32,
    nic: u32,
) -> Result<Inet6Pair, AddrError> {
    let v4 = local_inet(prefix4, vm, nic)?;
    let net = u128::from(prefix6.parts().0) | (u128::from(u32::from(v4.vm)) << 32);
    Ok(Inet6Pair {
        host: Ipv6Addr::from(net | 1),
        vm: Ipv6Addr::from(net | 2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(vm: u32, nic: u32) -> Result<(String, String), AddrError> {
        local_inet(Inet4Prefix::DEFAULT, vm, nic).map(|p| (p.host.to_string(), p.vm.to_string()))
    }

    fn v6(vm: u32, nic: u32) -> (String, String) {
        let p = local_inet6(Inet4Prefix::DEFAULT, Inet6Prefix::DEFAULT, vm, nic).unwrap();
        (p.host.to_string(), p.vm.to_string())
    }

    /// The vectors of vmd-linux.md §1.9, computed with vmd's exact C semantics.
    #[test]
    fn vmd_vectors() {
        let table: &[(u32, u32, &str, &str, &str, &str)] = &[
            (
                0,
                0,
                "100.64.0.2",
                "100.64.0.3",
                "fd00::6440:3:0:1",
                "fd00::6440:3:0:2",
            ),
            (
                1,
                0,
                "100.64.1.2",
                "100.64.1.3",
                "fd00::6440:103:0:1",
                "fd00::6440:103:0:2",
            ),
            (
                1,
                1,
                "100.64.1.4",
                "100.64.1.5",
                "fd00::6440:105:0:1",
                "fd00::6440:105:0:2",
            ),
            (
                1,
                3,
                "100.64.1.8",
                "100.64.1.9",
                "fd00::6440:109:0:1",
                "fd00::6440:109:0:2",
            ),
            (
                2,
                0,
                "100.64.2.2",
                "100.64.2.3",
                "fd00::6440:203:0:1",
                "fd00::6440:203:0:2",
            ),
            (
                2,
                1,
                "100.64.2.4",
                "100.64.2.5",
                "fd00::6440:205:0:1",
                "fd00::6440:205:0:2",
            ),
            (
                10,
                2,
                "100.64.10.6",
                "100.64.10.7",
                "fd00::6440:a07:0:1",
                "fd00::6440:a07:0:2",
            ),
            (
                255,
                0,
                "100.64.255.2",
                "100.64.255.3",
                "fd00::6440:ff03:0:1",
                "fd00::6440:ff03:0:2",
            ),
            (
                256,
                0,
                "100.65.0.2",
                "100.65.0.3",
                "fd00::6441:3:0:1",
                "fd00::6441:3:0:2",
            ),
            (
                257,
                3,
                "100.65.1.8",
                "100.65.1.9",
                "fd00::6441:109:0:1",
                "fd00::6441:109:0:2",
            ),
            (
                4095,
                1,
                "100.79.255.4",
                "100.79.255.5",
                "fd00::644f:ff05:0:1",
                "fd00::644f:ff05:0:2",
            ),
            (
                16383,
                0,
                "100.127.255.2",
                "100.127.255.3",
                "fd00::647f:ff03:0:1",
                "fd00::647f:ff03:0:2",
            ),
            (
                16383,
                126,
                "100.127.255.254",
                "100.127.255.255",
                "fd00::647f:ffff:0:1",
                "fd00::647f:ffff:0:2",
            ),
            (
                1,
                126,
                "100.64.1.254",
                "100.64.1.255",
                "fd00::6440:1ff:0:1",
                "fd00::6440:1ff:0:2",
            ),
        ];
        for &(vm, nic, h4, g4, h6, g6) in table {
            assert_eq!(
                v4(vm, nic),
                Ok((h4.to_owned(), g4.to_owned())),
                "vm {vm} nic {nic}"
            );
            assert_eq!(v6(vm, nic), (h6.to_owned(), g6.to_owned()), "vm {vm} nic {nic}");
        }
    }

    #[test]
    fn nic_127_is_rejected_like_vmd() {
        assert_eq!(v4(1, 127), Err(AddrError::NicOutOfRange));
        assert_eq!(v4(1, u32::MAX), Err(AddrError::NicOutOfRange));
    }

    /// vmd aliases these onto lower vm ids or wraps; we refuse them (documented divergence).
    #[test]
    fn vm_ids_that_would_alias_or_wrap_are_rejected() {
        for vm in [16384, 16385, 32767, 32768, 65536, 262_144, 16_777_217, u32::MAX] {
            assert_eq!(v4(vm, 0), Err(AddrError::VmOutOfRange), "vm {vm}");
        }
    }

    #[test]
    fn other_prefixes() {
        let p16: Inet4Prefix = "10.0.0.0/16".parse().unwrap();
        let pair = local_inet(p16, 1, 0).unwrap();
        assert_eq!(
            (pair.host, pair.vm),
            (Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(10, 0, 1, 3))
        );
        let pair = local_inet(p16, 255, 3).unwrap();
        assert_eq!(
            (pair.host, pair.vm),
            (Ipv4Addr::new(10, 0, 255, 8), Ipv4Addr::new(10, 0, 255, 9))
        );
        assert_eq!(local_inet(p16, 256, 0), Err(AddrError::VmOutOfRange));
        assert_eq!(local_inet(p16, 131_072, 0), Err(AddrError::VmOutOfRange));

        let p6: Inet6Prefix = "fd12:3456:789a:1::/64".parse().unwrap();
        let pair = local_inet6(Inet4Prefix::DEFAULT, p6, 1, 0).unwrap();
        assert_eq!(pair.host.to_string(), "fd12:3456:789a:1:6440:103:0:1");
        assert_eq!(pair.vm.to_string(), "fd12:3456:789a:1:6440:103:0:2");
        let pair = local_inet6(Inet4Prefix::DEFAULT, p6, 3, 2).unwrap();
        assert_eq!(pair.host.to_string(), "fd12:3456:789a:1:6440:307:0:1");
    }

    #[test]
    fn wire_byte_order() {
        let pair = local_inet(Inet4Prefix::DEFAULT, 1, 0).unwrap();
        assert_eq!(pair.host.octets(), [0x64, 0x40, 0x01, 0x02]);
    }

    /// Every accepted pair lies inside the prefix, for every prefix length.
    #[test]
    fn accepted_addresses_stay_inside_the_prefix() {
        for len in 1..=16u8 {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            let p = Inet4Prefix::new(Ipv4Addr::from(0x6400_0000u32 & mask), len).unwrap();
            let max_vm = (1u32 << (24 - u32::from(len))) - 1;
            for (vm, nic) in [(0, 0), (max_vm, 126), (max_vm / 2, 7)] {
                let pair = local_inet(p, vm, nic).unwrap();
                assert!(p.contains(pair.host) && p.contains(pair.vm));
                assert_eq!(u32::from(pair.host) ^ u32::from(pair.vm), 1);
            }
            assert_eq!(local_inet(p, max_vm + 1, 0), Err(AddrError::VmOutOfRange));
        }
    }
}
