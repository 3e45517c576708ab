//! The `unsafe` blocks only the session helper runs: receiving a request's datagram and its fds, the
//! socket peer's groups and pidfd, and the ioctls on a tap fd a caller passed (`TUNGETIFF`,
//! `TUNGETDEVNETNS`) or on a new multi-queue tap (the settings a foreign queue could have left). Each
//! block one operation with its `// SAFETY:` line, as in `helper/shared/sys.rs`, whose helpers these
//! use.
#![allow(unsafe_code)]

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use crate::sys::{TunFd, cmd, cvt, ifr_name, ifreq, tun_ioctl_value};

/// The ioctl requests the session helper issues besides a new tap's (`sys::TAP_IOCTLS`), for its
/// seccomp filter: `resolve_tap`'s two, then [`tun_reset_shared_state`]'s, in its order. Dropping one
/// makes every multi-queue create (or every passed tap) die with SIGSYS in the scenario tests.
#[rustfmt::skip] // grouped by caller, a few to a line
pub(crate) const SESSION_IOCTLS: &[u32] = &[
    cmd(libc::TUNGETIFF), cmd(libc::TUNGETDEVNETNS),
    cmd(libc::TUNSETPERSIST), cmd(libc::TUNSETDEBUG), cmd(libc::TUNSETLINK), cmd(libc::TUNSETOFFLOAD),
    cmd(libc::TUNSETSNDBUF), cmd(libc::TUNSETVNETHDRSZ), cmd(libc::TUNSETVNETLE), cmd(libc::TUNSETVNETBE),
    cmd(libc::TUNSETTXFILTER), cmd(libc::TUNDETACHFILTER), cmd(libc::TUNSETFILTEREBPF),
    cmd(libc::TUNSETSTEERINGEBPF), cmd(libc::TUNSETCARRIER),
];

/// `NGROUPS_MAX`: the most supplementary groups a Linux process can have.
const NGROUPS_MAX: usize = 65536;

/// `SO_PEERGROUPS`: the supplementary groups the peer of a connected AF_UNIX socket had when it
/// connected (nix 0.32 has `PeerCredentials` but no `SO_PEERGROUPS`). Fails (`ENODATA`) where the
/// socket has no peer credentials.
pub(crate) fn peer_groups(sock: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    const GID: usize = std::mem::size_of::<libc::gid_t>();
    // Room for the most groups a process can have: the kernel never needs more (else ERANGE).
    let mut groups: Vec<libc::gid_t> = vec![0; NGROUPS_MAX];
    let room = NGROUPS_MAX * GID;
    let mut len = libc::socklen_t::try_from(room).map_err(|_| io::Error::from_raw_os_error(libc::ERANGE))?;
    // SAFETY: getsockopt writes at most `len` bytes (the byte size of `groups`' buffer, which lives
    // across the call) and stores the size it wrote in `len`.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    cvt(r)?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > room || len % GID != 0 {
        return Err(io::Error::from_raw_os_error(libc::EPROTO));
    }
    groups.truncate(len / GID);
    Ok(groups)
}

/// `pidfd_open(2)` (Linux 5.3): a pidfd for `pid`. Only where the kernel has no `SO_PEERPIDFD` (before
/// 6.5): `pid` may name another process by now (see `startup::check_peer_userns`).
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new fd or -1.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) })?;
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just installed `fd` in our table for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `SCM_MAX_FD`: the most fds one message can carry.
const SCM_MAX_FD: usize = 253;

/// One received datagram.
pub(crate) struct Datagram {
    /// The frame bytes (empty at EOF).
    pub(crate) bytes: Vec<u8>,
    /// The fds it carried, now owned (and closed on drop).
    pub(crate) fds: Vec<OwnedFd>,
    /// Data or control truncated, or a control message other than SCM_RIGHTS.
    pub(crate) malformed: bool,
}

/// Receives one datagram of at most `max` bytes with `MSG_CMSG_CLOEXEC` and room for the largest fd
/// batch the kernel can pass, so that every fd that arrives is ours to close.
pub(crate) fn recv_datagram(sock: &OwnedFd, max: usize) -> Result<Datagram, Errno> {
    let mut buf = vec![0u8; max + 1];
    let mut cmsg = nix::cmsg_space!([RawFd; SCM_MAX_FD], libc::ucred);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => {}
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    let mut malformed = msg.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) || msg.bytes > max;
    let bytes = msg.bytes;
    match msg.cmsgs() {
        Ok(cmsgs) => {
            for c in cmsgs {
                match c {
                    ControlMessageOwned::ScmRights(raw) => {
                        // SAFETY: this recvmsg just installed each fd in our table; nothing else owns it.
                        fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                    }
                    // SCM_CREDENTIALS or anything else: not part of the protocol.
                    _ => malformed = true,
                }
            }
        }
        Err(_) => malformed = true,
    }
    buf.truncate(bytes.min(max));
    Ok(Datagram {
        bytes: buf,
        fds,
        malformed,
    })
}

/// `TUNGETIFF`: the name and flags of the device a tun fd is attached to.
pub(crate) fn tun_get_iff(tun: TunFd<'_>) -> io::Result<(String, u16)> {
    let mut ifr = ifreq();
    // SAFETY: TUNGETIFF writes a `struct ifreq` into `ifr`, which lives across the call; `tun` is the
    // tun device, so the ioctl number means TUNGETIFF.
    let r = unsafe { libc::ioctl(tun.raw(), libc::TUNGETIFF, &raw mut ifr) };
    cvt(r)?;
    // SAFETY: TUNGETIFF fills the `ifru_flags` member of the union.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    Ok((ifr_name(&ifr), flags.cast_unsigned()))
}

/// A tun ioctl that reads one `int` through its pointer argument.
fn tun_ioctl_int(tun: TunFd<'_>, request: libc::Ioctl, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the request reads one `int` from the pointer, which points at `value`, alive across
    // the call; `tun` is the tun device.
    let r = unsafe { libc::ioctl(tun.raw(), request, &raw const value) };
    cvt(r).map(drop)
}

/// `sizeof(struct virtio_net_hdr)`: the vnet header size a new tap starts with.
const VIRTIO_NET_HDR_LEN: libc::c_int = 10;

/// Puts back every setting of a new multi-queue tap that any fd attached to it may change without
/// privilege (`drivers/net/tun.c` checks nothing for these), in case someone attached a queue before
/// `TUNSETOWNER`, changed them and detached: persistence, the debug mask, link type, offloads, send
/// buffer, vnet header size and byte order, the tx filter, classic and eBPF filters, eBPF steering,
/// carrier.
pub(crate) fn tun_reset_shared_state(tun: TunFd<'_>) -> io::Result<()> {
    tun_ioctl_value(tun, libc::TUNSETPERSIST, 0)?;
    tun_ioctl_value(tun, libc::TUNSETDEBUG, 0)?;
    tun_ioctl_value(tun, libc::TUNSETLINK, libc::c_ulong::from(libc::ARPHRD_ETHER))?;
    tun_ioctl_value(tun, libc::TUNSETOFFLOAD, 0)?;
    tun_ioctl_int(tun, libc::TUNSETSNDBUF, libc::c_int::MAX)?;
    tun_ioctl_int(tun, libc::TUNSETVNETHDRSZ, VIRTIO_NET_HDR_LEN)?;
    tun_ioctl_int(tun, libc::TUNSETVNETLE, 0)?;
    match tun_ioctl_int(tun, libc::TUNSETVNETBE, 0) {
        // Kernels without CONFIG_TUN_VNET_CROSS_LE have no big-endian mode to undo.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        other => other?,
    }
    // struct tun_filter { flags, count }: count 0 clears the filter.
    let empty: [u16; 2] = [0, 0];
    // SAFETY: TUNSETTXFILTER reads a `struct tun_filter` header (two u16) and, with count 0, nothing
    // more; `empty` is that header and lives across the call.
    let r = unsafe { libc::ioctl(tun.raw(), libc::TUNSETTXFILTER, &raw const empty) };
    cvt(r)?;
    tun_ioctl_value(tun, libc::TUNDETACHFILTER, 0)?;
    tun_ioctl_int(tun, libc::TUNSETFILTEREBPF, -1)?;
    tun_ioctl_int(tun, libc::TUNSETSTEERINGEBPF, -1)?;
    tun_ioctl_int(tun, libc::TUNSETCARRIER, 1)
}

/// `TUNGETDEVNETNS`: an fd on the network namespace the tap lives in.
pub(crate) fn tun_get_netns(tun: TunFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: TUNGETDEVNETNS takes no argument and returns a new fd; `tun` is the tun device.
    let r = unsafe { libc::ioctl(tun.raw(), libc::TUNGETDEVNETNS) };
    cvt(r)?;
    // SAFETY: on success the ioctl returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}
