//! The local prefixes a policy names (`local prefix PREFIX`, `local inet6 prefix PREFIX`), checked as vmd's
//! parser does. The addresses inside them are `vmpriv_protocol::addr`'s (the session helper's).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a prefix was refused, or (`vmpriv_protocol::addr`) an address could not be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AddrError {
    #[error("nic index is above 126")]
    NicOutOfRange,
    #[error("vm id does not fit in the local prefix (vmd would alias another vm's addresses)")]
    VmOutOfRange,
    #[error("prefix is not ADDRESS/LENGTH")]
    Syntax,
    #[error("IPv4 local prefix length must be 1 to 16")]
    Inet4Length,
    #[error("IPv6 local prefix length must be 1 to 64")]
    Inet6Length,
    #[error("prefix has bits set past its length")]
    HostBits,
}

/// An IPv4 local prefix: length 1..=16, host bits zero (vmd's parser rule).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Inet4Prefix {
    addr: Ipv4Addr,
    len: u8,
}

/// An IPv6 local prefix: length 1..=64, host bits zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Inet6Prefix {
    addr: Ipv6Addr,
    len: u8,
}

impl Inet4Prefix {
    /// vmd's default, the shared address space of RFC 6598.
    pub const DEFAULT: Inet4Prefix = Inet4Prefix {
        addr: Ipv4Addr::new(100, 64, 0, 0),
        len: 10,
    };

    /// Checks length and host bits.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, AddrError> {
        if !(1..=16).contains(&len) {
            return Err(AddrError::Inet4Length);
        }
        if u32::from(addr) & !mask32(len) != 0 {
            return Err(AddrError::HostBits);
        }
        Ok(Inet4Prefix { addr, len })
    }

    /// Whether `a` lies inside this prefix.
    pub fn contains(self, a: Ipv4Addr) -> bool {
        u32::from(a) & mask32(self.len) == u32::from(self.addr)
    }

    /// The network address and the prefix length.
    pub fn parts(self) -> (Ipv4Addr, u8) {
        (self.addr, self.len)
    }
}

impl Inet6Prefix {
    /// A fixed ULA stand-in for vmd's random default (`fd00::/8`).
    pub const DEFAULT: Inet6Prefix = Inet6Prefix {
        addr: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0),
        len: 8,
    };

    /// Checks length and host bits.
    pub fn new(addr: Ipv6Addr, len: u8) -> Result<Self, AddrError> {
        if !(1..=64).contains(&len) {
            return Err(AddrError::Inet6Length);
        }
        if u128::from(addr) & !mask128(len) != 0 {
            return Err(AddrError::HostBits);
        }
        Ok(Inet6Prefix { addr, len })
    }

    /// Whether `a` lies inside this prefix.
    pub fn contains(self, a: Ipv6Addr) -> bool {
        u128::from(a) & mask128(self.len) == u128::from(self.addr)
    }

    /// The network address and the prefix length.
    pub fn parts(self) -> (Ipv6Addr, u8) {
        (self.addr, self.len)
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

fn split_prefix(s: &str) -> Result<(&str, u8), AddrError> {
    let (a, l) = s.split_once('/').ok_or(AddrError::Syntax)?;
    // u8::from_str accepts a leading '+'; a prefix length is digits only.
    if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddrError::Syntax);
    }
    let len = l.parse().map_err(|_| AddrError::Syntax)?;
    Ok((a, len))
}

impl FromStr for Inet4Prefix {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Self, AddrError> {
        let (a, len) = split_prefix(s)?;
        Inet4Prefix::new(a.parse().map_err(|_| AddrError::Syntax)?, len)
    }
}

impl FromStr for Inet6Prefix {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Self, AddrError> {
        let (a, len) = split_prefix(s)?;
        Inet6Prefix::new(a.parse().map_err(|_| AddrError::Syntax)?, len)
    }
}

impl fmt::Display for Inet4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Debug for Inet4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Inet6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Debug for Inet6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rules() {
        assert_eq!("100.64.0.0/10".parse::<Inet4Prefix>(), Ok(Inet4Prefix::DEFAULT));
        assert_eq!(
            "100.64.0.0/17".parse::<Inet4Prefix>(),
            Err(AddrError::Inet4Length)
        );
        assert_eq!("100.64.0.0/0".parse::<Inet4Prefix>(), Err(AddrError::Inet4Length));
        assert_eq!("100.64.0.1/10".parse::<Inet4Prefix>(), Err(AddrError::HostBits));
        assert_eq!("100.64.0.0".parse::<Inet4Prefix>(), Err(AddrError::Syntax));
        assert_eq!("100.64.0.0/+10".parse::<Inet4Prefix>(), Err(AddrError::Syntax));
        assert_eq!("100.64.0/10".parse::<Inet4Prefix>(), Err(AddrError::Syntax));
        assert_eq!("fd00::/8".parse::<Inet6Prefix>(), Ok(Inet6Prefix::DEFAULT));
        assert_eq!("fd00::/65".parse::<Inet6Prefix>(), Err(AddrError::Inet6Length));
        assert_eq!("fd00::1/64".parse::<Inet6Prefix>(), Err(AddrError::HostBits));
        assert!(Inet4Prefix::DEFAULT.contains(Ipv4Addr::new(100, 127, 255, 255)));
        assert!(!Inet4Prefix::DEFAULT.contains(Ipv4Addr::new(100, 128, 0, 0)));
        // A length is at most three digits; leading zeros count.
        assert_eq!("100.64.0.0/010".parse::<Inet4Prefix>(), Ok(Inet4Prefix::DEFAULT));
        assert_eq!("100.64.0.0/0010".parse::<Inet4Prefix>(), Err(AddrError::Syntax));
        assert_eq!("100.64.0.0/".parse::<Inet4Prefix>(), Err(AddrError::Syntax));
    }

    /// `Reset` deletes the tap's addresses inside the policy's /96 prefix and no others: `contains`
    /// decides which.
    #[test]
    fn inet6_prefixes_contain_exactly_their_addresses() {
        let ula = Inet6Prefix::DEFAULT; // fd00::/8
        assert!(ula.contains("fd00::1".parse().unwrap()));
        assert!(ula.contains("fdff:ffff::2".parse().unwrap()));
        assert!(!ula.contains("fe80::1".parse().unwrap()));
        assert!(!ula.contains("fc00::1".parse().unwrap()));
        let p: Inet6Prefix = "fd12:3456:789a:1::/64".parse().unwrap();
        assert!(p.contains("fd12:3456:789a:1:ffff:ffff:ffff:ffff".parse().unwrap()));
        assert!(!p.contains("fd12:3456:789a:2::".parse().unwrap()));
        assert!(!p.contains("fd12:3456:789a::1".parse().unwrap()));
    }

    #[test]
    fn prefixes_print_as_written() {
        assert_eq!(format!("{:?}", Inet4Prefix::DEFAULT), "100.64.0.0/10");
        assert_eq!(format!("{:?}", Inet6Prefix::DEFAULT), "fd00::/8");
        assert_eq!(Inet6Prefix::DEFAULT.to_string(), "fd00::/8");
    }
}
