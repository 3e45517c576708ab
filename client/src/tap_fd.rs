//! vmd's `GET_ADDR` without the helper: the name, index, MAC and MTU of a tap whose fd we hold need no
//! privilege, so the client reads them itself (the helper's protocol has no message for it). The same
//! answers as the helper gave: `NotATap` for an fd that is not an attached tap, `Denied` for a tap that
//! is not ours (its name is not our mark) or has no such name in our network namespace. Also what an
//! owner does alone with its own tap: make it persistent through its fd, and open it again by name.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use vmpriv_protocol::wire::{Invalid, TapInfo};

use crate::ClientError;

const TUN_MAJOR: u64 = 10;
const TUN_MINOR: u64 = 200;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const IFF_PERSIST: libc::c_short = 0x0800;
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

/// `TUNSETPERSIST` on a tap fd we hold: the tap outlives its fds. The kernel asks no privilege of an
/// attached fd's holder for it; the helper counts persistent taps against the quota all the same.
pub(crate) fn set_persist(fd: BorrowedFd<'_>, on: bool) -> std::io::Result<()> {
    // SAFETY: TUNSETPERSIST takes its flag by value and reads no memory.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, libc::c_ulong::from(on)) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Why [`Helper::remove_persistent`](crate::Helper::remove_persistent) would not open a tap by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ByName {
    /// The name does not carry our mark.
    #[error("not a vmpriv tap of yours (vmpriv names your taps vp{0:x}-N)")]
    NotOurs(u32),
    /// No such interface here.
    #[error("no such tap in this network namespace")]
    NoSuchTap,
    /// The kernel says the tap's owner is someone else (`TUNSETIFF`: EPERM).
    #[error("the tap belongs to another user")]
    OtherOwner,
    /// A process holds the tap (its carrier is on, or `TUNSETIFF` said EBUSY).
    #[error("a process holds this tap (a running VMM?): stop it first")]
    Held,
    /// The tap is not persistent: it lives as long as its holder, and is not `remove`'s to delete.
    #[error("not a persistent tap: it goes away with the process that holds it")]
    NotPersistent,
    /// `/dev/net/tun` is not open to us (mode 0600).
    #[error(
        "/dev/net/tun is not open to you here (mode 0600), so a tap cannot be opened by name: \
         `vmpriv cleanup` removes all your taps that no process holds"
    )]
    TunClosed,
    /// Another answer of the kernel.
    #[error("the kernel refused: {}", nix::errno::Errno::from_raw(*.0).desc())]
    Kernel(i32),
}

fn tunsetiff(fd: BorrowedFd<'_>, name: &str, flags: libc::c_short) -> std::io::Result<()> {
    let mut ifr = ifreq();
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s.cast_signed();
    }
    ifr.ifr_ifru.ifru_flags = flags;
    ioctl(fd, libc::TUNSETIFF, &mut ifr)
}

/// Opens our own persistent tap `name` by name, as its owner does (`TUNSETIFF` on `/dev/net/tun`,
/// which the kernel allows only to the tap's owner): the fd proves it ours to the helper, which checks
/// the mark again. Nothing here is trusted by the helper; the checks give the caller a clear answer.
pub(crate) fn open_by_name(name: &str) -> Result<OwnedFd, ByName> {
    use nix::errno::Errno;
    let uid = nix::unistd::getuid().as_raw();
    let slot = name.strip_prefix(&format!("vp{uid:x}-")).unwrap_or("");
    if slot.is_empty() || !slot.bytes().all(|b| b.is_ascii_hexdigit()) || name.len() >= libc::IFNAMSIZ {
        return Err(ByName::NotOurs(uid));
    }
    nix::net::if_::if_nametoindex(name).map_err(|_| ByName::NoSuchTap)?;
    // A tap with a queue attached has its carrier on (the helper reads "held" the same way); opening
    // a queue of a held multi-queue tap would succeed, and the delete would pull it from its VMM.
    let carrier = std::fs::read_to_string(format!("/sys/class/net/{name}/carrier"));
    if carrier.is_ok_and(|c| c.trim() == "1") {
        return Err(ByName::Held);
    }
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => ByName::TunClosed,
            n => ByName::Kernel(n.unwrap_or(libc::EIO)),
        })?;
    let tun = OwnedFd::from(tun);
    let single = IFF_TAP | IFF_NO_PI;
    // The multi-queue flag must match the tap's (EINVAL otherwise); try single-queue first.
    let attached = tunsetiff(tun.as_fd(), name, single).or_else(|e| match e.raw_os_error() {
        Some(libc::EINVAL) => tunsetiff(tun.as_fd(), name, single | IFF_MULTI_QUEUE),
        _ => Err(e),
    });
    attached.map_err(|e| match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EPERM) => ByName::OtherOwner,
        Some(Errno::EBUSY) => ByName::Held,
        Some(Errno::ENODEV) => ByName::NoSuchTap,
        n => ByName::Kernel(n.map_or(libc::EIO, |n| n as i32)),
    })?;
    // TUNSETIFF leaves the flags we passed; TUNGETIFF gives the device's (`tun_flags`, with
    // IFF_PERSIST). Not persistent: a tap someone holds, or one TUNSETIFF just made (a root caller,
    // after the tap went away since the check above); closing our fd ends the latter.
    let mut ifr = ifreq();
    ioctl(tun.as_fd(), libc::TUNGETIFF, &mut ifr)
        .map_err(|e| ByName::Kernel(e.raw_os_error().unwrap_or(libc::EIO)))?;
    // SAFETY: TUNGETIFF filled `ifru_flags`.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    if flags & IFF_PERSIST == 0 {
        return Err(ByName::NotPersistent);
    }
    Ok(tun)
}
