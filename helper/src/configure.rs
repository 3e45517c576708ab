//! Configuring a tap in vmd's order, in two phases: every check first (kinds, masters, addresses in
//! use), then the changes, each recorded so that a failure part-way undoes what this request changed.

use std::net::IpAddr;

use nix::errno::Errno;
use vmpriv_protocol::validate::ValidConfig;
use vmpriv_protocol::wire::Unsupported;
use vmpriv_protocol::{Error, Inet4Pair, Inet6Pair, Invalid, TapInfo};

use crate::netlink::{
    self, IFA_ADDRESS, IFA_LOCAL, IFF_UP, IFLA_GROUP, IFLA_IFALIAS, IFLA_MASTER, IFLA_MTU, Link, Msg,
    NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, Netlink, RTM_DELADDR, RTM_NEWADDR, RTM_SETLINK,
};
use crate::ops::{Ctx, find_bridge, kernel, link_name, tap_info};

/// What phase 1 found: the objects phase 2 will act on.
pub(crate) struct Plan {
    bridge: Option<Link>,
    vrf: Option<Link>,
}

/// Phase 1: every check, no change. `link` is `None` for a tap not created yet.
pub(crate) fn check_config(ctx: &mut Ctx, link: Option<&Link>, config: &ValidConfig) -> Result<Plan, Error> {
    let master = link.and_then(|l| l.master);
    let bridge = match &config.switch {
        None => None,
        Some(s) => {
            let b = find_bridge(ctx, s.as_str())?;
            if master.is_some_and(|m| m != b.index) {
                return Err(Error::Invalid(Invalid::OtherMaster));
            }
            Some(b)
        }
    };
    let vrf = match &config.vrf {
        None => None,
        Some(v) => {
            let dev = match ctx.nl.get_link(0, Some(v.device.as_str())) {
                Ok(d) if d.kind.as_deref() == Some("vrf") => d,
                Ok(_) | Err(Errno::ENODEV) => {
                    log::warn!(
                        "rdomain {} maps to {}, which is not a VRF device here",
                        v.rdomain,
                        v.device
                    );
                    return Err(Error::Unsupported(Unsupported::Vrf));
                }
                Err(e) => return Err(kernel(e)),
            };
            if let Some(m) = master
                && m != dev.index
            {
                // A bridge port cannot also be a VRF slave: IFLA_MASTER is one slot.
                return Err(Error::Invalid(Invalid::RdomainOnSwitchedTap));
            }
            Some(dev)
        }
    };
    let index = link.map_or(0, |l| l.index);
    if let Some(p) = config.inet {
        // A /31 has two addresses: taken if another interface holds either.
        for ip in [p.host, p.vm] {
            check_not_held(ctx, index, IpAddr::V4(ip), None)?;
        }
    }
    if let Some(p) = config.inet6 {
        check_not_held(ctx, index, IpAddr::V6(p.host), Some(Inet6Pair::PREFIX_LEN))?;
        check_not_held(ctx, index, IpAddr::V6(p.vm), None)?;
    }
    Ok(Plan { bridge, vrf })
}

/// Refuses when an interface other than `index` holds `ip` (its local route names the holder), or,
/// with `prefix`, an address whose kernel prefix route of that length or longer covers `ip`. Each is
/// one FIB lookup, so the check costs the same with ten interfaces or ten thousand.
fn check_not_held(ctx: &mut Ctx, index: u32, ip: IpAddr, prefix: Option<u8>) -> Result<(), Error> {
    let Some(route) = ctx.nl.route_lookup(ip).map_err(kernel)? else {
        return Ok(());
    };
    let other = route.oif.is_some_and(|oif| oif != index);
    let local = route.route_type == netlink::RTN_LOCAL;
    let covering = prefix.is_some_and(|len| {
        route.protocol == netlink::RTPROT_KERNEL && route.dst_len >= len && route.route_type == 1
    });
    if other && (local || covering) {
        log::info!("uid={} {ip} is held by ifindex {:?}", ctx.caller.uid, route.oif);
        return Err(Error::Invalid(Invalid::AddressInUse));
    }
    Ok(())
}

/// Phase 2 bookkeeping: each change made, so a failure can undo them in reverse.
enum Undo {
    Alias(String),
    Master,
    Mtu(u32),
    Group(u32),
    Up(bool),
    Addr(IpAddr, u8),
}

fn setlink(
    nl: &mut Netlink,
    index: u32,
    flags: u32,
    change: u32,
    attr: Option<(u16, &[u8])>,
) -> Result<(), Errno> {
    nl.request(|seq| {
        let m = Msg::new(RTM_SETLINK, NLM_F_ACK, seq).ifinfomsg(index, flags, change);
        match attr {
            Some((ty, data)) => m.attr(ty, data),
            None => m,
        }
    })
}

fn alias_bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn addr_msg(ty: u16, flags: u16, seq: u32, index: u32, ip: IpAddr, prefixlen: u8) -> Msg {
    let family = if ip.is_ipv4() { 2 } else { 10 };
    let m = Msg::new(ty, NLM_F_ACK | flags, seq).ifaddrmsg(family, prefixlen, index);
    // IPv4 wants IFA_LOCAL (the interface's address) and IFA_ADDRESS; IPv6 only IFA_ADDRESS.
    if ip.is_ipv4() {
        m.attr_ip(IFA_LOCAL, ip).attr_ip(IFA_ADDRESS, ip)
    } else {
        m.attr_ip(IFA_ADDRESS, ip)
    }
}

/// Applies `config` to `link` in vmd's order (description, switch, rdomain, group, up/down, addresses),
/// all or nothing.
pub(crate) fn configure(ctx: &mut Ctx, link: &Link, config: &ValidConfig) -> Result<TapInfo, Error> {
    let plan = check_config(ctx, Some(link), config)?;
    configure_checked(ctx, link, config, &plan, false)
}

/// Phase 2 of [`configure`], once `plan` holds everything phase 1 found. `fresh`: a tap this request
/// created, which has no addresses yet (so vmd's IPv6 delete-before-add is skipped).
pub(crate) fn configure_checked(
    ctx: &mut Ctx,
    link: &Link,
    config: &ValidConfig,
    plan: &Plan,
    fresh: bool,
) -> Result<TapInfo, Error> {
    let mut undo = Vec::new();
    let result = apply(ctx, link, config, plan, fresh, &mut undo);
    if let Err(e) = &result {
        log::warn!(
            "uid={} configure {} failed ({e}); rolling back {} change(s)",
            ctx.caller.uid,
            link_name(link),
            undo.len()
        );
        rollback(&mut ctx.nl, link.index, undo);
    }
    result
}

fn apply(
    ctx: &mut Ctx,
    link: &Link,
    config: &ValidConfig,
    plan: &Plan,
    fresh: bool,
    undo: &mut Vec<Undo>,
) -> Result<TapInfo, Error> {
    let nl = &mut ctx.nl;
    let index = link.index;
    let mut info = tap_info(link);
    if let Some(d) = &config.description {
        setlink(nl, index, 0, 0, Some((IFLA_IFALIAS, &alias_bytes(d.as_str())))).map_err(kernel)?;
        undo.push(Undo::Alias(link.alias.clone().unwrap_or_default()));
    }
    if let (Some(bridge), Some(name)) = (&plan.bridge, &config.switch) {
        if let Some(mtu) = bridge.mtu.filter(|&m| Some(m) != link.mtu) {
            setlink(nl, index, 0, 0, Some((IFLA_MTU, &mtu.to_ne_bytes()))).map_err(kernel)?;
            undo.push(Undo::Mtu(link.mtu.unwrap_or(mtu)));
            info.mtu = mtu;
        }
        if link.master != Some(bridge.index) {
            setlink(nl, index, 0, 0, Some((IFLA_MASTER, &bridge.index.to_ne_bytes()))).map_err(kernel)?;
            undo.push(Undo::Master);
        }
        info.switch = Some(name.to_string());
    }
    if let Some(vrf) = &plan.vrf
        && link.master != Some(vrf.index)
    {
        setlink(nl, index, 0, 0, Some((IFLA_MASTER, &vrf.index.to_ne_bytes()))).map_err(kernel)?;
        undo.push(Undo::Master);
    }
    if let Some(g) = &config.group {
        setlink(nl, index, 0, 0, Some((IFLA_GROUP, &g.number.to_ne_bytes()))).map_err(kernel)?;
        undo.push(Undo::Group(link.group));
    }
    if let Some(up) = config.up {
        setlink(nl, index, if up { IFF_UP } else { 0 }, IFF_UP, None).map_err(kernel)?;
        undo.push(Undo::Up(link.flags & IFF_UP != 0));
    }
    if let Some(p) = config.inet {
        add_inet(nl, index, p, undo)?;
        info.inet = Some(p);
    }
    if let Some(p) = config.inet6 {
        add_inet6(nl, index, p, fresh, undo)?;
        info.inet6 = Some(p);
    }
    Ok(info)
}

/// Adds `ip/len` to the tap (replacing it if present) and records its removal for rollback.
fn add_addr(nl: &mut Netlink, index: u32, ip: IpAddr, len: u8, undo: &mut Vec<Undo>) -> Result<(), Errno> {
    nl.request(|seq| addr_msg(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, seq, index, ip, len))?;
    undo.push(Undo::Addr(ip, len));
    Ok(())
}

fn add_inet(nl: &mut Netlink, index: u32, p: Inet4Pair, undo: &mut Vec<Undo>) -> Result<(), Error> {
    add_addr(nl, index, IpAddr::V4(p.host), Inet4Pair::PREFIX_LEN, undo).map_err(kernel)
}

/// vmd deletes then adds the IPv6 address; a missing one (EADDRNOTAVAIL) is fine. IPv6 disabled on the
/// interface answers EACCES: reported as such, never by flipping the sysctl.
fn add_inet6(
    nl: &mut Netlink,
    index: u32,
    p: Inet6Pair,
    fresh: bool,
    undo: &mut Vec<Undo>,
) -> Result<(), Error> {
    let ip = IpAddr::V6(p.host);
    let inet6_error = |e: Errno| match e {
        Errno::EACCES => Error::Unsupported(Unsupported::Inet6),
        e => kernel(e),
    };
    if !fresh {
        match nl.request(|seq| addr_msg(RTM_DELADDR, 0, seq, index, ip, Inet6Pair::PREFIX_LEN)) {
            Ok(()) | Err(Errno::EADDRNOTAVAIL) => {}
            Err(e) => return Err(inet6_error(e)),
        }
    }
    add_addr(nl, index, ip, Inet6Pair::PREFIX_LEN, undo).map_err(inet6_error)
}

fn rollback(nl: &mut Netlink, index: u32, undo: Vec<Undo>) {
    for u in undo.into_iter().rev() {
        let r = match u {
            Undo::Alias(a) => setlink(nl, index, 0, 0, Some((IFLA_IFALIAS, &alias_bytes(&a)))),
            Undo::Master => setlink(nl, index, 0, 0, Some((IFLA_MASTER, &0u32.to_ne_bytes()))),
            Undo::Mtu(m) => setlink(nl, index, 0, 0, Some((IFLA_MTU, &m.to_ne_bytes()))),
            Undo::Group(g) => setlink(nl, index, 0, 0, Some((IFLA_GROUP, &g.to_ne_bytes()))),
            Undo::Up(up) => setlink(nl, index, if up { IFF_UP } else { 0 }, IFF_UP, None),
            Undo::Addr(ip, len) => nl.request(|seq| addr_msg(RTM_DELADDR, 0, seq, index, ip, len)),
        };
        if let Err(e) = r {
            log::error!("rollback on ifindex {index} failed: {e}");
        }
    }
}

/// Undo everything vmpriv configures: detach, down, no description, group 0, the local addresses (those
/// inside the policy's prefixes) removed.
pub(crate) fn reset(
    ctx: &mut Ctx,
    link: &Link,
    (inet, inet6): (vmpriv_protocol::Inet4Prefix, vmpriv_protocol::Inet6Prefix),
) -> Result<(), Error> {
    let nl = &mut ctx.nl;
    let index = link.index;
    if link.master.is_some() {
        setlink(nl, index, 0, 0, Some((IFLA_MASTER, &0u32.to_ne_bytes()))).map_err(kernel)?;
    }
    setlink(nl, index, 0, IFF_UP, Some((IFLA_IFALIAS, &[]))).map_err(kernel)?;
    setlink(nl, index, 0, 0, Some((IFLA_GROUP, &0u32.to_ne_bytes()))).map_err(kernel)?;
    let mut ours = Vec::new();
    for family in [2, 10] {
        nl.dump_addrs(family, &mut |a| {
            let local = match a.address {
                IpAddr::V4(v) => inet.contains(v),
                IpAddr::V6(v) => inet6.contains(v),
            };
            if a.index == index && local {
                ours.push(*a);
            }
        })
        .map_err(kernel)?;
    }
    for a in ours {
        match nl.request(|seq| addr_msg(RTM_DELADDR, 0, seq, index, a.address, a.prefixlen)) {
            Ok(()) | Err(Errno::EADDRNOTAVAIL) => {}
            Err(e) => return Err(kernel(e)),
        }
    }
    Ok(())
}
