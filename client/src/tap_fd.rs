//! vmd's `GET_ADDR` without the helper: the name, index, MAC and MTU of a tap whose fd we hold need no
//! privilege, so the client reads them itself (the helper's protocol has no message for it). The same
//! answers as the helper gave: `NotATap` for an fd that is not an attached tap, `Denied` for a tap that
//! is not ours (its name is not our mark) or has no such name in our network namespace.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use vmpriv_protocol::wire::{Invalid, TapInfo};

use crate::ClientError;

const TUN_MAJOR: u64 = 10;
const TUN_MINOR: u64 = 200;
const IFF_TAP: libc::c_short = 0x0002;
const TUN_TYPE_MASK: libc::c_short = 0x000f;

fn ifreq() -> libc::ifreq {
    // SAFETY: a plain C struct of integers, arrays and a union of them; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

fn ioctl(fd: BorrowedFd<'_>, request: libc::Ioctl, ifr: &mut libc::ifreq) -> std::io::Result<()> {
    // SAFETY: each request used here reads and writes one `struct ifreq`, which lives across the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request, std::ptr::from_mut(ifr)) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Name, index, MAC and MTU of the tap `fd` is attached to, if it is one of ours.
pub(crate) fn link_addr(fd: BorrowedFd<'_>) -> Result<TapInfo, ClientError> {
    let not_a_tap = ClientError::Invalid(Invalid::NotATap);
    let st = nix::sys::stat::fstat(fd).map_err(std::io::Error::from)?;
    let is_tun = st.st_mode & libc::S_IFMT == libc::S_IFCHR
        && u64::from(libc::major(st.st_rdev)) == TUN_MAJOR
        && u64::from(libc::minor(st.st_rdev)) == TUN_MINOR;
    if !is_tun {
        return Err(not_a_tap);
    }
    // From here on `fd` is the tun device: its ioctl numbers mean what we ask.
    let mut ifr = ifreq();
    ioctl(fd, libc::TUNGETIFF, &mut ifr).map_err(|_| not_a_tap)?; // EBADFD: not attached
    // SAFETY: TUNGETIFF filled `ifru_flags`.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    if flags & TUN_TYPE_MASK != IFF_TAP {
        return Err(ClientError::Invalid(Invalid::NotATap));
    }
    let name: String = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| char::from(c.cast_unsigned()))
        .collect();
    // The helper names our taps vpUID-SLOT (hex); anything else is someone else's.
    let mark = format!("vp{:x}-", nix::unistd::getuid().as_raw());
    let slot = name.strip_prefix(&mark).unwrap_or("");
    if slot.is_empty() || !slot.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ClientError::Denied);
    }
    // The name means something only in the tap's own namespace (TUNGETDEVNETNS would say which, but
    // it needs CAP_NET_ADMIN): a tap of ours elsewhere either has no such name here (Denied) or a tap
    // of ours here has it.
    let ifindex = nix::net::if_::if_nametoindex(name.as_str()).map_err(|_| ClientError::Denied)?;
    // SIOCGIFHWADDR on the tap fd itself (the tun driver answers it): no lookup by name.
    let mut hw = ifreq();
    ioctl(fd, libc::SIOCGIFHWADDR, &mut hw)?;
    // SAFETY: SIOCGIFHWADDR filled `ifru_hwaddr`.
    let sa = unsafe { hw.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(sa.sa_data) {
        *m = d.cast_unsigned();
    }
    // SIOCGIFMTU by name, on any socket of ours.
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(std::io::Error::from)?;
    let mut m = ifreq();
    m.ifr_name = ifr.ifr_name;
    ioctl(sock.as_fd(), libc::SIOCGIFMTU, &mut m)?;
    // SAFETY: SIOCGIFMTU filled `ifru_mtu`.
    let mtu = unsafe { m.ifr_ifru.ifru_mtu };
    Ok(TapInfo {
        ifname: name,
        ifindex,
        mac,
        mtu: u32::try_from(mtu).unwrap_or(0),
        switch: None,
        inet: None,
        inet6: None,
    })
}
