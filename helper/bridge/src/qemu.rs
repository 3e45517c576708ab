//! QEMU's and libvirt's `helper=` contract (qemu-bridge-helper's): create a tap, attach it to the
//! bridge the policy grants, set it up, send exactly one byte with exactly one SCM_RIGHTS fd on the
//! stream socket, exit 0. Any failure sends nothing and exits non-zero: QEMU treats exit 0 without an
//! fd as success and would then use its own stdin as the tap.

use std::os::fd::OwnedFd;

use nix::errno::Errno;
use vmpriv_policy::IfName;

use crate::netlink::{IFF_UP, IFLA_MASTER, IFLA_MTU, IfIndex, Link};
use crate::startup::{StartError, impossible};
use crate::sys;
use crate::tap::{
    Ctx, OrKernel, Refusal, check_bridge_mac, create_marked, delete_link, find_bridge, link_name, opened_tun,
    own, quiet_and_mac, quiet_ipv6, set_u32, setlink_msg, take_tun_fds, tap_flags,
};

/// Creates the tap for `bridge` and hands its fd to QEMU on `sock`.
pub(crate) fn serve(ctx: &mut Ctx, sock: &OwnedFd, bridge: &str, vnet_hdr: bool) -> Result<(), StartError> {
    let uid = ctx.caller.uid;
    // The name as the kernel would take it, byte for byte, before anything else (CVE-2019-13164).
    let name = IfName::new(bridge).map_err(|e| {
        log::info!("uid={uid} op=qemu-bridge target={bridge} decision=refused (switch name: {e})");
        StartError::Refused(format!("cannot give a tap on bridge {bridge}: switch name: {e}"))
    })?;
    let outcome = create(ctx, &name, vnet_hdr).or_else(|e| match e {
        // "vnet_hdr when asked and supported": QEMU works without it, only slower.
        Refusal::VnetHdr if vnet_hdr => create(ctx, &name, false),
        e => Err(e),
    });
    let (tap, fd) = match outcome {
        Ok(v) => v,
        Err(e) => {
            log::info!("uid={uid} op=qemu-bridge target={bridge} decision=refused ({e})");
            // What to do next, for the user who reads this in QEMU's or virsh's output.
            let hint = match e {
                Refusal::Denied | Refusal::Quota { .. } => {
                    "; see /etc/vmpriv/policy.conf and `vmpriv whoami`"
                }
                _ => "",
            };
            return Err(StartError::Refused(format!(
                "cannot give a tap on bridge {bridge}: {e}{hint}"
            )));
        }
    };
    sys::send_datagram(sock, &[0], std::slice::from_ref(&fd)).map_err(|e| StartError::Session(e.into()))?;
    log::info!("uid={uid} op=qemu-bridge target={tap} bridge={bridge} decision=done");
    Ok(())
}

/// What the session helper's validator and `CreateTap` do for a tap on a switch, and nothing else:
/// the grant, the bridge (with a fixed MAC), then the tap under a free quota slot. If anything fails after
/// the tap exists it is deleted; an fd never attached goes back to the pool.
fn create(ctx: &mut Ctx, bridge: &IfName, vnet_hdr: bool) -> Result<(String, OwnedFd), Refusal> {
    if !ctx.policy.permits_switch(&ctx.caller, bridge) {
        log::info!("uid={} is not granted switch {bridge}", ctx.caller.uid);
        return Err(Refusal::Denied);
    }
    let quota = ctx.policy.quota_for(&ctx.caller);
    let bridge_link = find_bridge(ctx, bridge)?;
    check_bridge_mac(ctx, bridge, &bridge_link)?;
    let fd = take_tun_fds(ctx, 1)?
        .pop()
        .unwrap_or_else(|| impossible("one tun fd asked, none given"));
    let (mut attached, mut created) = (false, None);
    match make(
        ctx,
        &fd,
        vnet_hdr,
        quota,
        &bridge_link,
        (&mut attached, &mut created),
    ) {
        Ok(name) => Ok((name, fd)),
        Err(e) => {
            if let Some(index) = created {
                // Delete it outright, as the session helper does with a failed create.
                match delete_link(&mut ctx.nl, index) {
                    Ok(()) | Err(Errno::ENODEV) => {}
                    Err(d) => log::error!("cannot delete the failed tap ifindex {index}: {d}"),
                }
            }
            if !attached {
                ctx.tun_pool.push(fd); // never attached: as good as new
            }
            Err(e)
        }
    }
}

fn make(
    ctx: &mut Ctx,
    fd: &OwnedFd,
    vnet_hdr: bool,
    quota: u32,
    bridge: &Link,
    (attached, created): (&mut bool, &mut Option<IfIndex>),
) -> Result<String, Refusal> {
    let first = opened_tun(fd)?;
    let (flags, _) = tap_flags(ctx, first, vnet_hdr)?;
    let name = create_marked(ctx, first, flags, quota)?;
    *attached = true;
    own(ctx, first)?;
    let link = ctx.nl.get_link(None, Some(&name)).or_kernel()?;
    *created = Some(link.index);
    quiet_and_mac(ctx, first, &name)?;
    attach_new(ctx, &link, bridge)?;
    Ok(name)
}

/// A new tap onto `bridge`, up: the bridge's MTU first (and the IPv6 sysctls again, which an MTU change
/// can reset), then the attach, then up.
fn attach_new(ctx: &mut Ctx, link: &Link, bridge: &Link) -> Result<(), Refusal> {
    if let Some(mtu) = bridge.mtu.filter(|&m| Some(m) != link.mtu) {
        set_u32(&mut ctx.nl, link.index, IFLA_MTU, mtu).or_kernel()?;
        quiet_ipv6(ctx.ipv6_conf.as_ref(), &link_name(link))?;
    }
    // Attach and up in one round trip (a failure deletes the tap: no rollback to get exact).
    let master = bridge.index.get().to_ne_bytes();
    let msgs = vec![
        setlink_msg(0, link.index, (0, 0), Some((IFLA_MASTER, &master))),
        setlink_msg(0, link.index, (IFF_UP, IFF_UP), None),
    ];
    for r in ctx.nl.pipeline(msgs).or_kernel()? {
        r.or_kernel()?;
    }
    Ok(())
}
