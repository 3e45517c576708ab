//! Just enough rtnetlink and tun ioctls for the floor contender: requests that want an ACK, a link's
//! index by name, and the four tun calls vmpriv makes on a new tap. Root only; failures are errors,
//! never retried. Written for the benchmark: the helper's own code is private to it.
#![allow(unsafe_code)]

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_SETLINK: u16 = 19;
pub const RTM_NEWADDR: u16 = 20;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_CREATE: u16 = 0x400;
pub const IFLA_IFNAME: u16 = 3;
pub const IFLA_MASTER: u16 = 10;
pub const IFLA_IFALIAS: u16 = 20;
pub const IFLA_GROUP: u16 = 27;
pub const IFA_ADDRESS: u16 = 1;
pub const IFA_LOCAL: u16 = 2;
pub const IFF_UP: u32 = 0x1;
const NLMSG_ERROR: u16 = 2;

/// A netlink request under construction.
pub struct Msg(Vec<u8>);

impl Msg {
    pub fn new(ty: u16, flags: u16, seq: u32) -> Self {
        let mut b = Vec::with_capacity(128);
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        Msg(b)
    }

    pub fn ifinfomsg(mut self, index: u32, flags: u32, change: u32) -> Self {
        self.0.extend_from_slice(&[0, 0, 0, 0]);
        self.0.extend_from_slice(&index.to_ne_bytes());
        self.0.extend_from_slice(&flags.to_ne_bytes());
        self.0.extend_from_slice(&change.to_ne_bytes());
        self
    }

    pub fn ifaddrmsg(mut self, family: u8, prefixlen: u8, index: u32) -> Self {
        self.0.extend_from_slice(&[family, prefixlen, 0, 0]);
        self.0.extend_from_slice(&index.to_ne_bytes());
        self
    }

    pub fn attr(mut self, ty: u16, data: &[u8]) -> Self {
        let len = u16::try_from(4 + data.len()).expect("a small attribute");
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }

    pub fn attr_ip(self, ty: u16, ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => self.attr(ty, &a.octets()),
            IpAddr::V6(a) => self.attr(ty, &a.octets()),
        }
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.0.len()).expect("a small message");
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// What the floor reads of a link.
pub struct Link {
    pub index: u32,
}

/// A route netlink socket.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    pub fn open() -> io::Result<Self> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        Ok(Netlink {
            fd,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Sends `build(seq)` and returns the payloads of the replies up to the ACK or error.
    fn exchange(&mut self, build: impl FnOnce(u32) -> Msg) -> Result<Vec<(u16, Vec<u8>)>, Errno> {
        self.seq += 1;
        let msg = build(self.seq).finish();
        socket::send(self.fd.as_raw_fd(), &msg, MsgFlags::empty())?;
        let mut out = Vec::new();
        loop {
            let n = socket::recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty())?;
            let mut at = 0;
            while at + 16 <= n {
                let len = u32::from_ne_bytes(self.buf[at..at + 4].try_into().unwrap()) as usize;
                let ty = u16::from_ne_bytes(self.buf[at + 4..at + 6].try_into().unwrap());
                if len < 16 || at + len > n {
                    return Err(Errno::EPROTO);
                }
                let payload = self.buf[at + 16..at + len].to_vec();
                if ty == NLMSG_ERROR {
                    let errno = i32::from_ne_bytes(payload[..4].try_into().unwrap());
                    return if errno == 0 {
                        Ok(out)
                    } else {
                        Err(Errno::from_raw(-errno))
                    };
                }
                out.push((ty, payload));
                at += len.next_multiple_of(4);
            }
        }
    }

    /// Sends a request built by `build(seq)` and waits for its ACK.
    pub fn request(&mut self, build: impl FnOnce(u32) -> Msg) -> Result<(), Errno> {
        self.exchange(build).map(drop)
    }

    /// The link called `name` (`index` 0) or with that index.
    pub fn get_link(&mut self, index: u32, name: Option<&str>) -> Result<Link, Errno> {
        let replies = self.exchange(|seq| {
            let m = Msg::new(RTM_GETLINK, NLM_F_ACK, seq).ifinfomsg(index, 0, 0);
            match name {
                Some(n) => m.attr(IFLA_IFNAME, format!("{n}\0").as_bytes()),
                None => m,
            }
        })?;
        let (_, payload) = replies
            .iter()
            .find(|(ty, _)| *ty == RTM_NEWLINK)
            .ok_or(Errno::ENODEV)?;
        Ok(Link {
            index: u32::from_ne_bytes(payload[4..8].try_into().unwrap()),
        })
    }
}

fn ifreq() -> libc::ifreq {
    // SAFETY: a plain C struct of integers and arrays; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `TUNSETIFF` with `name` and `flags`; returns the name the kernel gave.
pub fn tun_set_iff_named(tun: &impl AsFd, name: &str, flags: i32) -> io::Result<String> {
    let mut ifr = ifreq();
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s.cast_signed();
    }
    ifr.ifr_ifru.ifru_flags = u16::try_from(flags & 0xffff).unwrap().cast_signed();
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which lives across the call.
    check(unsafe { libc::ioctl(tun.as_fd().as_raw_fd(), libc::TUNSETIFF, &raw mut ifr) })?;
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c.cast_unsigned())
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `TUNSETOWNER`.
pub fn tun_set_owner(tun: &impl AsFd, uid: u32) -> io::Result<()> {
    // SAFETY: TUNSETOWNER takes the uid by value.
    check(unsafe {
        libc::ioctl(
            tun.as_fd().as_raw_fd(),
            libc::TUNSETOWNER,
            libc::c_ulong::from(uid),
        )
    })
}

/// `SIOCGIFHWADDR` on the tap fd.
pub fn tun_get_mac(tun: &impl AsFd) -> io::Result<[u8; 6]> {
    let mut ifr = ifreq();
    // SAFETY: the tun driver writes a `struct ifreq`, which lives across the call.
    check(unsafe { libc::ioctl(tun.as_fd().as_raw_fd(), libc::SIOCGIFHWADDR, &raw mut ifr) })?;
    // SAFETY: SIOCGIFHWADDR filled the `ifru_hwaddr` member.
    let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(sa.sa_data) {
        *m = d.cast_unsigned();
    }
    Ok(mac)
}

/// `SIOCSIFHWADDR` on the tap fd.
pub fn tun_set_mac(tun: &impl AsFd, mac: [u8; 6]) -> io::Result<()> {
    let mut ifr = ifreq();
    // SAFETY: writes plain integers into the `ifru_hwaddr` member of a zeroed union.
    let sa = unsafe { &mut ifr.ifr_ifru.ifru_hwaddr };
    sa.sa_family = 1; // ARPHRD_ETHER
    for (d, m) in sa.sa_data.iter_mut().zip(mac) {
        *d = m.cast_signed();
    }
    // SAFETY: the tun driver reads a `struct ifreq`, which lives across the call.
    check(unsafe { libc::ioctl(tun.as_fd().as_raw_fd(), libc::SIOCSIFHWADDR, &raw mut ifr) })
}
