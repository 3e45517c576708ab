//! One function per operation: a validated request in, the kernel's state changed, a reply out. Every
//! operation first checks everything it can (kinds, ownership, masters, addresses in use) and only then
//! changes anything; a failure part-way undoes what this request changed (see [`crate::configure`]).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;
use vmpriv_protocol::validate::{ValidConfig, ValidOp};
use vmpriv_protocol::wire::{Status, Unsupported};
use vmpriv_protocol::{Caller, Error, Invalid, Policy, Response, TapInfo, ValidRequest};

use crate::configure::{check_config, configure, configure_checked, reset};
use crate::netlink::{Link, Netlink};
use crate::sys;

const IFF_TAP: u16 = 0x0002;
const TUN_TYPE_MASK: u16 = 0x000f;
const TUN_MAJOR: u64 = 10;
const TUN_MINOR: u64 = 200;

/// What a session works with: who asks, what the policy says, the kernel's sockets and fds.
pub struct Ctx {
    /// The caller, identified at start-up.
    pub caller: Caller,
    /// The policy, read at start-up.
    pub policy: Policy,
    /// The route netlink socket.
    pub nl: Netlink,
    /// `/dev/net/tun` fds opened while the helper could (the device may be mode 0600).
    pub tun_pool: Vec<OwnedFd>,
    /// (st_dev, st_ino) of the helper's own network namespace.
    pub netns: (u64, u64),
    /// `TUNGETFEATURES`, asked once per session.
    pub tun_features: Option<u32>,
}

/// A reply and the fds that go with it.
pub struct Outcome {
    /// The reply.
    pub response: Response,
    /// Tap queue fds (after `CreateTap`).
    pub fds: Vec<OwnedFd>,
    /// What the audit line names.
    pub target: String,
}

pub(crate) fn kernel(e: Errno) -> Error {
    Error::Kernel { errno: e as i32 }
}

fn kernel_io(e: &std::io::Error) -> Error {
    Error::Kernel {
        errno: sys::errno_of(e),
    }
}

/// Runs a validated request. `fds` are the fds its datagram carried (already counted by the validator).
pub fn execute(ctx: &mut Ctx, valid: &ValidRequest, fds: &[OwnedFd]) -> Result<Outcome, Error> {
    let tap_fd =
        |i: vmpriv_protocol::FdIndex| fds.get(usize::from(i.0)).ok_or(Error::Invalid(Invalid::FdIndex));
    match valid.op() {
        ValidOp::Hello => Ok(plain(
            Response::Hello {
                version: vmpriv_protocol::wire::VERSION,
            },
            "-",
        )),
        ValidOp::Status {
            quota,
            rules,
            more_rules,
        } => {
            let in_use = count_taps(ctx)?;
            let status = Status {
                uid: ctx.caller.uid,
                user: ctx.caller.user.clone(),
                quota: *quota,
                in_use,
                rules: rules.clone(),
                more_rules: *more_rules,
            };
            Ok(plain(Response::Status(status), "-"))
        }
        ValidOp::SwitchExists { switch } => {
            let bridge = find_bridge(ctx, switch.as_str())?;
            let response = Response::Switch {
                name: switch.to_string(),
                ifindex: bridge.index,
                mtu: bridge.mtu.unwrap_or(0),
            };
            Ok(plain(response, switch.as_str()))
        }
        ValidOp::CreateTap {
            queues,
            vnet_hdr,
            quota,
            config,
        } => create_tap(ctx, *queues, *vnet_hdr, *quota, config),
        ValidOp::Configure { tap, config } => {
            let fd = tap_fd(*tap)?;
            let link = resolve_tap(ctx, fd.as_fd())?;
            let info = configure(ctx, &link, config)?;
            Ok(plain(Response::Tap(info), &link_name(&link)))
        }
        ValidOp::LinkAddr { tap } => {
            let fd = tap_fd(*tap)?;
            let link = resolve_tap(ctx, fd.as_fd())?;
            let mac = sys::tun_get_mac(fd.as_fd()).map_err(|e| kernel_io(&e))?;
            let info = TapInfo {
                mac,
                ..tap_info(&link)
            };
            Ok(plain(Response::Tap(info), &link_name(&link)))
        }
        ValidOp::Reset { tap, policy_prefixes } => {
            let fd = tap_fd(*tap)?;
            let link = resolve_tap(ctx, fd.as_fd())?;
            reset(ctx, &link, *policy_prefixes)?;
            Ok(plain(Response::Tap(tap_info(&link)), &link_name(&link)))
        }
    }
}

fn plain(response: Response, target: &str) -> Outcome {
    Outcome {
        response,
        fds: Vec::new(),
        target: target.to_owned(),
    }
}

pub(crate) fn link_name(link: &Link) -> String {
    link.name
        .clone()
        .unwrap_or_else(|| format!("ifindex {}", link.index))
}

pub(crate) fn tap_info(link: &Link) -> TapInfo {
    TapInfo {
        ifname: link_name(link),
        ifindex: link.index,
        mac: link.mac.unwrap_or_default(),
        mtu: link.mtu.unwrap_or(0),
        switch: None,
        inet: None,
        inet6: None,
    }
}

/// Live taps the caller owns, counted from the kernel: no database to fall out of step, and a tap the
/// caller made persistent with its fd (which needs no privilege) still counts.
fn count_taps(ctx: &mut Ctx) -> Result<u32, Error> {
    let uid = ctx.caller.uid;
    let mut n = 0u32;
    ctx.nl
        .dump_links("tun", &mut |l| {
            if l.is_tap() && l.tun.as_ref().and_then(|t| t.owner) == Some(uid) {
                n = n.saturating_add(1);
            }
        })
        .map_err(kernel)?;
    Ok(n)
}

/// A switch is a granted name (checked by the validator) that is a bridge. Absent or not a bridge:
/// `Denied`, the same answer as "not granted".
pub(crate) fn find_bridge(ctx: &mut Ctx, name: &str) -> Result<Link, Error> {
    match ctx.nl.get_link(0, Some(name)) {
        Ok(l) if l.kind.as_deref() == Some("bridge") => Ok(l),
        Ok(l) => {
            log::info!(
                "uid={} switch {name} is not a bridge (kind {:?})",
                ctx.caller.uid,
                l.kind
            );
            Err(Error::Denied)
        }
        Err(Errno::ENODEV) => {
            log::info!("uid={} switch {name} does not exist", ctx.caller.uid);
            Err(Error::Denied)
        }
        Err(e) => Err(kernel(e)),
    }
}

/// A passed fd names a tap only if it is the tun character device, attached in tap mode, to a device in
/// our network namespace, owned by the caller. Its name comes from the fd (TUNGETIFF), its ifindex from
/// the kernel's reply; the caller's words name nothing.
fn resolve_tap(ctx: &mut Ctx, fd: BorrowedFd<'_>) -> Result<Link, Error> {
    let not_a_tap = Error::Invalid(Invalid::NotATap);
    let meta = std::fs::File::from(fd.try_clone_to_owned().map_err(|e| kernel_io(&e))?)
        .metadata()
        .map_err(|e| kernel_io(&e))?;
    // Never issue a tun ioctl on an unverified fd: the same numbers mean other things to other drivers.
    let rdev = meta.rdev();
    let is_tun = meta.mode() & libc::S_IFMT == libc::S_IFCHR
        && u64::from(libc::major(rdev)) == TUN_MAJOR
        && u64::from(libc::minor(rdev)) == TUN_MINOR;
    if !is_tun {
        return Err(not_a_tap);
    }
    let (name, flags) = sys::tun_get_iff(fd).map_err(|_| not_a_tap)?; // EBADFD: not attached
    if flags & TUN_TYPE_MASK != IFF_TAP {
        return Err(not_a_tap);
    }
    // TUNGETIFF gives a name, which means something only in the tap's own namespace.
    let ns = sys::tun_get_netns(fd).map_err(|e| kernel_io(&e))?;
    let ns = std::fs::File::from(ns).metadata().map_err(|e| kernel_io(&e))?;
    if (ns.dev(), ns.ino()) != ctx.netns {
        log::info!(
            "uid={} tap {name} lives in another network namespace",
            ctx.caller.uid
        );
        return Err(Error::Denied);
    }
    let link = match ctx.nl.get_link(0, Some(&name)) {
        Ok(l) => l,
        Err(Errno::ENODEV) => return Err(Error::Denied),
        Err(e) => return Err(kernel(e)),
    };
    let owner = link.tun.as_ref().and_then(|t| t.owner);
    if !link.is_tap() || owner != Some(ctx.caller.uid) {
        log::info!(
            "uid={} tap {name} is owned by {owner:?}, not the caller",
            ctx.caller.uid
        );
        return Err(Error::Denied);
    }
    Ok(link)
}

const IFF_NO_PI: i32 = 0x1000;
const IFF_VNET_HDR: i32 = 0x4000;
const IFF_MULTI_QUEUE: i32 = 0x0100;
const IFF_TUN_EXCL: i32 = 0x8000;

/// A new, non-persistent tap owned by the caller, with a 0xFE MAC and the switch's MTU, configured as
/// asked; its fds go back to the caller. If anything fails, dropping the fds removes the tap.
fn create_tap(
    ctx: &mut Ctx,
    queues: u8,
    vnet_hdr: bool,
    quota: u32,
    config: &ValidConfig,
) -> Result<Outcome, Error> {
    // Authorization before the first kernel object: quota, switch, VRF, addresses.
    let limited = quota != vmpriv_protocol::policy::UNLIMITED;
    let in_use = if limited { count_taps(ctx)? } else { 0 };
    if limited && in_use >= quota {
        log::info!("uid={} owns {in_use} taps, quota {quota}", ctx.caller.uid);
        return Err(Error::Quota { limit: quota });
    }
    let plan = check_config(ctx, None, config)?;
    let mut fds = take_tun_fds(ctx, usize::from(queues))?;
    let features = if let Some(f) = ctx.tun_features {
        f
    } else {
        let first = fds.first().ok_or(Error::Invalid(Invalid::Queues))?;
        let f = sys::tun_get_features(first).map_err(|e| kernel_io(&e))?;
        *ctx.tun_features.insert(f)
    };
    let mut flags = i32::from(IFF_TAP) | IFF_NO_PI | IFF_TUN_EXCL;
    if vnet_hdr {
        if features & 0x4000 == 0 {
            return Err(Error::Unsupported(Unsupported::VnetHdr));
        }
        flags |= IFF_VNET_HDR;
    }
    if queues > 1 {
        if features & 0x0100 == 0 {
            return Err(Error::Unsupported(Unsupported::MultiQueue));
        }
        flags |= IFF_MULTI_QUEUE;
    }
    let (first, rest) = fds.split_first_mut().ok_or(Error::Invalid(Invalid::Queues))?;
    // Empty name: the kernel picks a free tapN, so we can never attach to an existing device;
    // IFF_TUN_EXCL makes that explicit (without it TUNSETIFF attaches to an existing tap).
    let name = sys::tun_set_iff(first, flags).map_err(|e| kernel_io(&e))?;
    // Owner first: from here on only the caller (and CAP_NET_ADMIN) may attach queues to it.
    sys::tun_set_owner(first, ctx.caller.uid).map_err(|e| kernel_io(&e))?;
    for q in rest.iter_mut() {
        let got = sys::tun_set_iff_named(q, &name, flags & !IFF_TUN_EXCL).map_err(|e| kernel_io(&e))?;
        if got != name {
            return Err(Error::Kernel { errno: libc::EIO });
        }
    }
    // 0xFE: qemu-bridge-helper's convention, so the bridge keeps a lower (host) MAC as its own.
    let mut mac = sys::tun_get_mac(first.as_fd()).map_err(|e| kernel_io(&e))?;
    mac[0] = 0xfe;
    sys::tun_set_mac(first, mac).map_err(|e| kernel_io(&e))?;
    let link = ctx.nl.get_link(0, Some(&name)).map_err(kernel)?;
    let mut info = configure_checked(ctx, &link, config, &plan, true)?;
    info.mac = mac;
    // Another session of the same user may have raced us past the quota: count again, ours included.
    let now = if limited { count_taps(ctx)? } else { 0 };
    if limited && now > quota {
        log::info!(
            "uid={} raced past quota {quota} ({now} taps); dropping {name}",
            ctx.caller.uid
        );
        return Err(Error::Quota { limit: quota });
    }
    Ok(Outcome {
        response: Response::Tap(info),
        fds: std::mem::take(&mut fds),
        target: name,
    })
}

/// `/dev/net/tun` fds: from the start-up pool, else opened now (works where the device is 0666).
fn take_tun_fds(ctx: &mut Ctx, n: usize) -> Result<Vec<OwnedFd>, Error> {
    let mut fds = Vec::with_capacity(n);
    while fds.len() < n {
        if let Some(fd) = ctx.tun_pool.pop() {
            fds.push(fd);
            continue;
        }
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
        {
            Ok(f) => fds.push(f.into()),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(Error::Unsupported(Unsupported::TunFds));
            }
            Err(e) => return Err(kernel_io(&e)),
        }
    }
    Ok(fds)
}
