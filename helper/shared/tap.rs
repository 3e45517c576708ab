//! Making a tap, as both helpers do: a free quota slot of the caller, the tap created under that slot's
//! mark and owned by the caller, IPv6 autoconfiguration off, a 0xFE MAC; the switch it goes on (a granted
//! name that is a bridge with a fixed MAC), its MTU, the attach. Why each: docs/design.md's threat model.
//! What the session helper adds (multi-queue, vmd's order with rollback, local addresses) is its own.

use std::os::fd::{AsFd, OwnedFd};

use libc::{IFF_NO_PI, IFF_TUN_EXCL, IFF_VNET_HDR};
use nix::errno::Errno;
use vmpriv_policy::{Caller, IfName, Policy};

use crate::netlink::{IfIndex, Link, Msg, NLM_F_ACK, Netlink, RTM_DELLINK, RTM_SETLINK};
use crate::sys::{self, TunFd};

/// What a helper works with: who asks, what the policy says, the kernel's sockets and fds.
pub(crate) struct Ctx {
    /// The caller, identified at start-up.
    pub(crate) caller: Caller,
    /// The policy, read at start-up.
    pub(crate) policy: Policy,
    /// The route netlink socket.
    pub(crate) nl: Netlink,
    /// `/dev/net/tun` fds opened while the helper could (the device may be mode 0600).
    pub(crate) tun_pool: Vec<OwnedFd>,
    /// `TUNGETFEATURES`, asked once.
    pub(crate) tun_features: Option<u32>,
    /// `O_PATH` on `/proc/sys/net/ipv6/conf`, where new taps get RAs and autoconfiguration turned off.
    pub(crate) ipv6_conf: Option<OwnedFd>,
    /// `O_PATH` on `/sys/devices/virtual/net`, where a switch's `addr_assign_type` is read.
    pub(crate) sys_net: Option<OwnedFd>,
    /// Where the next search for a free quota slot starts: a hint only, the kernel has the truth.
    pub(crate) next_slot: u32,
}

/// Why a tap was not made. The session helper replies with its protocol's `Error` for each; the
/// bridge helper writes the sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("denied: the policy does not grant this, or the object does not exist")]
    Denied,
    #[error("quota reached: the caller already owns {limit} live taps")]
    Quota { limit: u32 },
    #[error("unsupported here: IFF_VNET_HDR")]
    VnetHdr,
    #[error(
        "unsupported here: no /dev/net/tun fd is left to this helper (/dev/net/tun is not open to the caller here)"
    )]
    TunFds,
    #[error(
        "unsupported here: the switch has no fixed MAC address: ask the admin to fix it (the system log says how)"
    )]
    BridgeMac,
    #[error("the kernel refused: errno {errno}")]
    Kernel { errno: i32 },
}

/// The kernel refused a step. The reply says only that; the log says which step (our source line).
#[track_caller]
pub(crate) fn kernel(e: Errno) -> Refusal {
    log::warn!("kernel error {e} at {}", std::panic::Location::caller());
    Refusal::Kernel { errno: e as i32 }
}

/// The kernel's errno in an `io::Error` (EIO if it carries none), logged like [`kernel`].
#[track_caller]
pub(crate) fn kernel_io(e: &std::io::Error) -> Refusal {
    kernel(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// `.map_err(kernel)` that keeps the step's source line for the log (a fn pointer loses it).
pub(crate) trait OrKernel<T> {
    fn or_kernel(self) -> Result<T, Refusal>;
}

impl<T> OrKernel<T> for Result<T, Errno> {
    #[track_caller]
    fn or_kernel(self) -> Result<T, Refusal> {
        match self {
            Ok(t) => Ok(t),
            Err(e) => Err(kernel(e)),
        }
    }
}

pub(crate) fn link_name(link: &Link) -> String {
    link.name
        .clone()
        .unwrap_or_else(|| format!("ifindex {}", link.index))
}

/// The mark of a tap vmpriv made for a caller: its name, `vpUID-SLOT` in hex (at most 15 bytes). The
/// helper creates the tap under that name (`TUNSETIFF` with `IFF_TUN_EXCL`), so a tap is never without
/// its mark; only CAP_NET_ADMIN can rename a link, and the kernel keeps names unique in the namespace.
/// So the mark is proof of ownership that no tap fd can change (`TUNSETOWNER` and `TUNSETPERSIST` need
/// no privilege), and the slots `0..quota` are the quota: a slot is taken exactly as long as its tap
/// exists.
pub(crate) fn mark(uid: u32, slot: u32) -> String {
    format!("vp{uid:x}-{slot:x}")
}

/// Slots of `quota … unlimited`: four hex digits keep every mark within 15 bytes.
pub(crate) const SLOTS_MAX: u32 = 0x1_0000;

/// A switch is a granted name (checked before) that is a bridge. Absent or not a bridge: `Denied`, the
/// same answer as "not granted".
pub(crate) fn find_bridge(ctx: &mut Ctx, name: &IfName) -> Result<Link, Refusal> {
    match ctx.nl.get_link(None, Some(name.as_str())) {
        Ok(l) if l.kind.as_deref() == Some("bridge") => Ok(l),
        Ok(l) => {
            log::info!(
                "uid={} switch {name} is not a bridge (kind {:?})",
                ctx.caller.uid,
                l.kind
            );
            Err(Refusal::Denied)
        }
        Err(Errno::ENODEV) => {
            log::info!("uid={} switch {name} does not exist", ctx.caller.uid);
            Err(Refusal::Denied)
        }
        Err(e) => Err(kernel(e)),
    }
}

/// A tap joins only a bridge whose MAC the admin fixed (`addr_assign_type` 3, NET_ADDR_SET, and not
/// all zeros, which a bridge without ports has): any other takes the lowest MAC of its ports, and a
/// tap's holder sets its tap's MAC without privilege, so a VM could choose the host's MAC on it
/// (design.md, threat model). rtnetlink does not carry `addr_assign_type` (6.18 sends the same
/// attributes before and after it changes), so it comes from sysfs, once sysfs is seen to show this
/// bridge (same ifindex and MAC as netlink's): a sysfs mounted elsewhere shows another namespace.
pub(crate) fn check_bridge_mac(ctx: &Ctx, name: &IfName, bridge: &Link) -> Result<(), Refusal> {
    let read = |file: &str| -> Option<String> {
        let flags = nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NOFOLLOW; // O_RDONLY is 0
        // Never a path: an IfName has no '/' and is not "." or "..".
        let (dir, path) = (ctx.sys_net.as_ref()?, format!("{name}/{file}"));
        let fd = nix::fcntl::openat(dir, path.as_str(), flags, nix::sys::stat::Mode::empty()).ok()?;
        let mut buf = [0; 32];
        let n = nix::unistd::read(&fd, &mut buf).ok()?;
        Some(String::from_utf8_lossy(buf.get(..n)?).trim().to_owned())
    };
    let mac = bridge.mac.unwrap_or_default();
    let text: Vec<_> = mac.iter().map(|b| format!("{b:02x}")).collect();
    if read("ifindex") != Some(bridge.index.to_string()) || read("address") != Some(text.join(":")) {
        log::warn!(
            "cannot tell whether bridge {name} has a fixed MAC: no sysfs of this network namespace (mount one on /sys); refusing a tap on it"
        );
        return Err(Refusal::BridgeMac);
    }
    if read("addr_assign_type").as_deref() != Some("3") || mac == [0; 6] {
        log::warn!(
            "bridge {name} has no fixed MAC, so a VM on it could choose the host's MAC there; refusing a tap on it. Fix: ip link set {name} address $(cat /sys/class/net/{name}/address) (systemd-networkd: MACAddress= in its .netdev; one showing 00:00:00:00:00:00 has no ports: give it its uplink's MAC)"
        );
        return Err(Refusal::BridgeMac);
    }
    Ok(())
}

/// A new tap must not route or autoconfigure from what its VM sends: router advertisements (a default
/// route and a SLAAC address through the VM), autoconfiguration and redirects off, before it is up.
/// CAP_NET_ADMIN may write a link's own sysctls; Landlock leaves only this directory writable. Run at
/// creation and again after every MTU change: an MTU below 1280 drops the link's IPv6 state, and it
/// comes back with the defaults (RAs on).
pub(crate) fn quiet_ipv6(conf: Option<&OwnedFd>, name: &str) -> Result<(), Refusal> {
    let Some(conf) = conf else {
        return Ok(()); // no IPv6 in this kernel
    };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Refusal::Kernel { errno: libc::EINVAL }); // kernel names never are; never a path
    }
    for key in ["accept_ra", "autoconf", "accept_redirects"] {
        let path = format!("{name}/{key}");
        let fd = match nix::fcntl::openat(
            conf.as_fd(),
            path.as_str(),
            nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NOFOLLOW,
            nix::sys::stat::Mode::empty(),
        ) {
            Ok(fd) => fd,
            // No IPv6 on this link (disabled, or an MTU below 1280): it cannot take an RA either.
            Err(Errno::ENOENT) if key == "accept_ra" => return Ok(()),
            Err(e) => return Err(kernel(e)),
        };
        nix::unistd::write(&fd, b"0").or_kernel()?;
    }
    Ok(())
}

/// `RTM_SETLINK` of `index`: `flags` under the `change` mask, and one attribute if given.
pub(crate) fn setlink(
    nl: &mut Netlink,
    index: IfIndex,
    flags: u32,
    change: u32,
    attr: Option<(u16, &[u8])>,
) -> Result<(), Errno> {
    nl.request(|seq| setlink_msg(seq, index, (flags, change), attr))
}

/// The message of [`setlink`] (for [`Netlink::pipeline`], which sets `seq`).
pub(crate) fn setlink_msg(
    seq: u32,
    index: IfIndex,
    (flags, change): (u32, u32),
    attr: Option<(u16, &[u8])>,
) -> Msg {
    let m = Msg::new(RTM_SETLINK, NLM_F_ACK, seq).ifinfomsg(index.get(), flags, change);
    match attr {
        Some((ty, data)) => m.attr(ty, data),
        None => m,
    }
}

/// `RTM_SETLINK` of one u32 attribute (MTU, master, group).
pub(crate) fn set_u32(nl: &mut Netlink, index: IfIndex, ty: u16, value: u32) -> Result<(), Errno> {
    setlink(nl, index, 0, 0, Some((ty, &value.to_ne_bytes())))
}

/// `RTM_DELLINK` of one link, by the ifindex the kernel gave.
pub(crate) fn delete_link(nl: &mut Netlink, index: IfIndex) -> Result<(), Errno> {
    nl.request(|seq| Msg::new(RTM_DELLINK, NLM_F_ACK, seq).ifinfomsg(index.get(), 0, 0))
}

/// qemu-bridge-helper's convention: a tap MAC starting 0xFE is above any host MAC, so the bridge
/// keeps a lower (host) MAC as its own.
const MAC_FIRST_OCTET: u8 = 0xfe;

/// A quota slot of the caller that no tap holds now, searched from the session's hint (once
/// [`create_marked`] found the hint taken): one lookup by name per slot tried. A fresh
/// session (one helper per NIC, QEMU's way) starts at 0 while its caller may hold slots 0..n: it
/// gallops (hint+1, +2, +4, …) to a free slot and bisects back to the end of the held run, O(log n)
/// lookups instead of n. Only a quota with no free slot on that path is searched one slot at a time.
fn free_slot(ctx: &mut Ctx, quota: u32) -> Result<u32, Refusal> {
    let space = quota.min(SLOTS_MAX); // 0..quota, or 65,536 for `unlimited`
    let uid = ctx.caller.uid;
    let mut taken = |slot: u32| match ctx.nl.get_link(None, Some(&mark(uid, slot))) {
        Err(Errno::ENODEV) => Ok(false),
        Ok(_) => Ok(true),
        Err(e) => Err(kernel(e)),
    };
    let hint = ctx.next_slot.checked_rem(space).unwrap_or(0);
    if !taken(hint)? {
        return Ok(hint);
    }
    let (mut held, mut step) = (hint, 1u32);
    while let Some(probe) = held.checked_add(step).filter(|&p| p < space) {
        if !taken(probe)? {
            // `held` is taken, `probe` free: bisect to the first free slot between them.
            let mut free = probe;
            while free - held > 1 {
                let mid = held + (free - held) / 2;
                if taken(mid)? {
                    held = mid;
                } else {
                    free = mid;
                }
            }
            return Ok(free);
        }
        held = probe;
        step = step.saturating_mul(2);
    }
    for i in 1..space {
        let slot = hint.wrapping_add(i).checked_rem(space).unwrap_or(0);
        if !taken(slot)? {
            return Ok(slot);
        }
    }
    log::info!("uid={uid} holds all {quota} of its quota slots");
    Err(Refusal::Quota { limit: quota })
}

/// One of our own `/dev/net/tun` fds, checked like any other before its first ioctl.
pub(crate) fn opened_tun(fd: &OwnedFd) -> Result<TunFd<'_>, Refusal> {
    TunFd::check(fd.as_fd())
        .map_err(|e| kernel_io(&e))?
        .ok_or(Refusal::Kernel { errno: libc::ENOTTY })
}

/// `/dev/net/tun` fds: from the start-up pool, else opened now (works where the device is 0666).
/// All or none: on failure, the fds taken from the pool go back to it.
pub(crate) fn take_tun_fds(ctx: &mut Ctx, n: usize) -> Result<Vec<OwnedFd>, Refusal> {
    let mut fds = Vec::with_capacity(n);
    while fds.len() < n {
        match ctx.tun_pool.pop().map_or_else(crate::startup::open_tun, Ok) {
            Ok(fd) => fds.push(fd),
            Err(e) => {
                ctx.tun_pool.append(&mut fds);
                return Err(if e.kind() == std::io::ErrorKind::PermissionDenied {
                    Refusal::TunFds
                } else {
                    kernel_io(&e)
                });
            }
        }
    }
    Ok(fds)
}

/// The `TUNSETIFF` flags of a new tap: no packet information, `IFF_TUN_EXCL` (without it TUNSETIFF
/// attaches to an existing tap of that name), and the vnet header if asked and supported.
pub(crate) fn tap_flags(ctx: &mut Ctx, first: TunFd<'_>, vnet_hdr: bool) -> Result<(i32, u32), Refusal> {
    let features = match ctx.tun_features {
        Some(f) => f,
        None => sys::tun_get_features(first).map_err(|e| kernel_io(&e))?,
    };
    ctx.tun_features = Some(features);
    let mut flags = i32::from(IFF_TAP) | IFF_NO_PI | IFF_TUN_EXCL;
    if vnet_hdr {
        if features & IFF_VNET_HDR.cast_unsigned() == 0 {
            return Err(Refusal::VnetHdr);
        }
        flags |= IFF_VNET_HDR;
    }
    Ok((flags, features))
}

/// `IFF_TAP`, the tun driver's tap mode.
pub(crate) const IFF_TAP: u16 = 0x0002;

/// Creates the tap under the mark of a free quota slot: the session's hint first, with no lookup (the
/// kernel's own uniqueness answers: `IFF_TUN_EXCL` makes `TUNSETIFF` fail with `EBUSY` when any link
/// has the name, so two sessions racing for the last slot cannot both win, and a failed try creates
/// nothing); a taken hint pays the search ([`free_slot`]), a slot lost to a race the next one.
/// Returns its name; `first` is attached from then on, and the caller makes the tap the caller's
/// ([`own`]), reads its link and deletes it if anything later fails.
pub(crate) fn create_marked(
    ctx: &mut Ctx,
    first: TunFd<'_>,
    flags: i32,
    quota: u32,
) -> Result<String, Refusal> {
    let space = quota.min(SLOTS_MAX);
    let mut slot = ctx.next_slot.checked_rem(space).unwrap_or(0);
    let mut searched = false;
    for _ in 0..space {
        let want = mark(ctx.caller.uid, slot);
        match sys::tun_set_iff_named(first, &want, flags) {
            Ok(_) => {
                ctx.next_slot = slot.wrapping_add(1);
                return Ok(want);
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && !searched => {
                slot = free_slot(ctx, quota)?;
                searched = true;
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                slot = slot.wrapping_add(1).checked_rem(space).unwrap_or(0);
            }
            Err(e) => return Err(kernel_io(&e)),
        }
    }
    log::info!("uid={} has no quota slot left", ctx.caller.uid);
    Err(Refusal::Quota { limit: quota })
}

/// `TUNSETOWNER`, right after the create: from here on only the caller (and CAP_NET_ADMIN) may attach
/// queues to it.
pub(crate) fn own(ctx: &Ctx, first: TunFd<'_>) -> Result<(), Refusal> {
    sys::tun_set_owner(first, ctx.caller.uid).map_err(|e| kernel_io(&e))
}

/// The last steps of every new tap: IPv6 autoconfiguration off, then a 0xFE MAC (setting it makes
/// `addr_assign_type` "set", so udev's `MACAddressPolicy=persistent` does not rewrite it after we
/// reported it). Returns the MAC.
pub(crate) fn quiet_and_mac(ctx: &Ctx, first: TunFd<'_>, name: &str) -> Result<[u8; 6], Refusal> {
    quiet_ipv6(ctx.ipv6_conf.as_ref(), name)?;
    let mut mac = sys::tun_get_mac(first).map_err(|e| kernel_io(&e))?;
    mac[0] = MAC_FIRST_OCTET;
    sys::tun_set_mac(first, mac).map_err(|e| kernel_io(&e))?;
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory standing in for /proc/sys/net/ipv6/conf, with `tap0/KEY` set to 1 for each of
    /// `keys`; removed when the test is done with it.
    struct Conf(std::path::PathBuf, OwnedFd);

    impl Conf {
        fn with(test: &str, keys: &[&str]) -> Conf {
            let dir = std::env::temp_dir().join(format!("vmpriv-{test}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("tap0")).unwrap();
            for key in keys {
                std::fs::write(dir.join("tap0").join(key), "1").unwrap();
            }
            let fd = OwnedFd::from(std::fs::File::open(&dir).unwrap());
            Conf(dir, fd)
        }
        fn read(&self, key: &str) -> String {
            std::fs::read_to_string(self.0.join("tap0").join(key)).unwrap()
        }
    }

    impl Drop for Conf {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn quiet_ipv6_turns_each_key_off_and_never_takes_a_path() {
        let keys = ["accept_ra", "autoconf", "accept_redirects"];
        let conf = Conf::with("quiet-ipv6", &keys);
        assert_eq!(quiet_ipv6(Some(&conf.1), "tap0"), Ok(()));
        for key in keys {
            assert_eq!(conf.read(key), "0", "{key}");
        }
        // "" would make an absolute path, the others leave the directory: refused before any open.
        for bad in ["", ".", "..", "tap0/../tap0"] {
            assert_eq!(
                quiet_ipv6(Some(&conf.1), bad),
                Err(Refusal::Kernel { errno: libc::EINVAL }),
                "{bad:?}"
            );
        }
        // A link without IPv6 has no accept_ra: nothing to turn off. Any other key missing is an error.
        assert_eq!(quiet_ipv6(Some(&conf.1), "absent"), Ok(()));
        let partial = Conf::with("quiet-ipv6-partial", &["accept_ra"]);
        assert_eq!(
            quiet_ipv6(Some(&partial.1), "tap0"),
            Err(Refusal::Kernel { errno: libc::ENOENT })
        );
        assert_eq!(quiet_ipv6(None, "tap0"), Ok(()));
    }
}
