//! Configuring a tap in vmd's order, in two phases: the checks first (kinds, masters, addresses in use),
//! then the changes, each recorded to be undone on a failure (docs/design.md, "All or nothing").

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;
use vmpriv_protocol::validate::ValidConfig;
use vmpriv_protocol::wire::Unsupported;
use vmpriv_protocol::{Error, Inet4Pair, Inet6Pair, Invalid, Slot, TapInfo};

use crate::lookup::{
    self, AF_INET, AF_INET6, IFA_ADDRESS, IFA_LOCAL, IFLA_ALT_IFNAME, IFLA_GROUP, IFLA_IFALIAS,
    IFLA_PROP_LIST, Inet6View, Link, Lookups, MsgExt, NLM_F_CREATE, NLM_F_EXCL, RTM_DELADDR, RTM_DELLINKPROP,
    RTM_NEWADDR, RTM_NEWLINKPROP,
};
use crate::netlink::{IFF_UP, IFLA_MASTER, IFLA_MTU, IfIndex, Msg, NLM_F_ACK, Netlink};
use crate::tap::{
    self, OrKernel, Refusal, check_bridge_mac, find_bridge, link_name, quiet_ipv6, set_u32, setlink,
    setlink_msg,
};

/// What a session works with: what both helpers work with (`base`, also through `Deref`), its
/// network namespace, the IPv6 view of its in-use checks, and a `DestroyTaps` batch set aside.
pub(crate) struct Ctx {
    /// The caller, the policy, the netlink socket, the tun fds and sysctl and sysfs directories.
    pub(crate) base: tap::Ctx,
    /// The helper's own network namespace.
    pub(crate) netns: NetNs,
    /// The namespace's IPv6 addresses, for the /96 in-use check.
    pub(crate) inet6: Inet6View,
    /// The `DestroyTaps` batch set aside so far (messages with `more`), if any.
    pub(crate) batch: Option<Batch>,
}

impl std::ops::Deref for Ctx {
    type Target = tap::Ctx;
    fn deref(&self) -> &tap::Ctx {
        &self.base
    }
}

impl std::ops::DerefMut for Ctx {
    fn deref_mut(&mut self) -> &mut tap::Ctx {
        &mut self.base
    }
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Error {
        match r {
            Refusal::Denied => Error::Denied,
            Refusal::Quota { limit } => Error::Quota { limit },
            Refusal::VnetHdr => Error::Unsupported(Unsupported::VnetHdr),
            Refusal::TunFds => Error::Unsupported(Unsupported::TunFds),
            Refusal::BridgeMac => Error::Unsupported(Unsupported::BridgeMac),
            Refusal::Kernel { errno } => Error::Kernel { errno },
        }
    }
}

/// A network namespace, by its nsfs inode: (st_dev, st_ino).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct NetNs {
    dev: u64,
    ino: u64,
}

impl NetNs {
    pub(crate) fn of(m: &std::fs::Metadata) -> NetNs {
        NetNs {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// Taps set aside for one batched delete: moved into the helper's own interface group, which the
/// last message of the batch deletes in one `RTM_DELLINK`.
pub(crate) struct Batch {
    /// The batch's interface group.
    pub(crate) group: u32,
    pub(crate) taps: Vec<SetAside>,
}

/// A tap moved into a batch's group, with the group to put it back in if the batch is abandoned.
#[derive(Clone, Copy)]
pub(crate) struct SetAside {
    pub(crate) index: IfIndex,
    pub(crate) group: u32,
}

#[track_caller]
pub(crate) fn kernel(e: Errno) -> Error {
    tap::kernel(e).into()
}

pub(crate) fn tap_info(link: &Link) -> TapInfo {
    TapInfo {
        ifname: link_name(link),
        ifindex: link.index.get(),
        mac: link.mac.unwrap_or_default(),
        mtu: link.mtu.unwrap_or(0),
        switch: None,
        inet: None,
        inet6: None,
    }
}

/// What phase 1 found for one config: the objects phase 2 will act on. Only [`check_config`] makes
/// one, and phase 2 takes the config from it, so it cannot be applied to another.
pub(crate) struct Plan<'c> {
    config: &'c ValidConfig,
    bridge: Option<crate::netlink::Link>,
    vrf: Option<Link>,
    /// Addresses the tap already has: those are left alone, and never removed by a rollback.
    present: Vec<IpAddr>,
    /// Claims of other slots on a tap that holds no address: left by a request killed between its
    /// claim and its add. Apply removes them before it claims (a tap holds one claim at most).
    stale_claims: Vec<String>,
    /// The tap existed before this request: another session may be configuring it too.
    existing: bool,
}

/// Phase 1: every check, no change. `link` is `None` for a tap not created yet.
pub(crate) fn check_config<'c>(
    ctx: &mut Ctx,
    link: Option<&Link>,
    config: &'c ValidConfig,
) -> Result<Plan<'c>, Error> {
    let master = link.and_then(|l| l.master);
    let bridge = match config.switch() {
        None => None,
        Some(s) => {
            let b = find_bridge(ctx, s)?;
            check_bridge_mac(ctx, s, &b)?;
            if master.is_some_and(|m| m != b.index) {
                return Err(Error::Invalid(Invalid::OtherMaster));
            }
            Some(b)
        }
    };
    let vrf = match config.vrf() {
        None => None,
        Some(v) => {
            let dev = match lookup::get_link(&mut ctx.nl, None, Some(v.device().as_str())) {
                Ok(d) if d.kind.as_deref() == Some("vrf") => d,
                Ok(_) | Err(Errno::ENODEV) => {
                    log::warn!(
                        "rdomain {} maps to {}, which is not a VRF device here",
                        v.rdomain(),
                        v.device()
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
    let index = link.map_or(0, |l| l.index.get());
    // What the tap holds already (a new tap holds nothing): one local address per family, as in vmd,
    // and one slot's claim.
    let mut held = Vec::new();
    let mut stale_claims = Vec::new();
    if let (Some(l), Some(slot)) = (link, config.slot()) {
        for family in [AF_INET, AF_INET6] {
            ctx.nl
                .dump_addrs(family, l.index.get(), &mut |a| held.push(*a))
                .or_kernel()?;
        }
        let asked = [
            config.inet().map(|p| IpAddr::V4(p.host())),
            config.inet6().map(|p| IpAddr::V6(p.host())),
        ];
        let other = held.iter().find(|a| {
            !link_local(a.address)
                && asked
                    .iter()
                    .flatten()
                    .any(|&ip| a.address.is_ipv4() == ip.is_ipv4() && a.address != ip)
        });
        if let Some(other) = other {
            log::info!(
                "uid={} tap ifindex {} already has {}; refusing another address",
                ctx.caller.uid,
                l.index,
                other.address
            );
            return Err(Error::Invalid(Invalid::AddressAssigned));
        }
        let want = claim_name(slot);
        let others: Vec<&String> = l.altnames.iter().filter(|n| is_claim(n) && **n != want).collect();
        if let Some(first) = others.first() {
            // A claim with addresses is the tap's slot; without, a request was killed after its claim.
            if held.iter().any(|a| !link_local(a.address)) {
                log::info!(
                    "uid={} tap ifindex {} holds {first}; refusing {want}",
                    ctx.caller.uid,
                    l.index
                );
                return Err(Error::Invalid(Invalid::AddressAssigned));
            }
            stale_claims = others.into_iter().cloned().collect();
        }
    }
    check_addresses_free(ctx, index, config)?;
    let present = held.iter().map(|a| a.address).collect();
    Ok(Plan {
        config,
        bridge,
        vrf,
        present,
        stale_claims,
        existing: link.is_some(),
    })
}

fn link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.is_unicast_link_local(),
    }
}

/// Refuses `ip` when a route other than the default one sends it elsewhere: an address another
/// interface holds (its local route), or a prefix routed through another interface (a VPN's, a
/// CGNAT range's), whose traffic the new /31 or /96 would steal. Routes that deliver nowhere
/// (blackhole, unreachable, prohibit, throw: an admin reserving the range) do not count. One FIB
/// lookup, so the check costs the same with ten interfaces or ten thousand.
fn check_not_routed(ctx: &mut Ctx, index: u32, ip: IpAddr) -> Result<(), Error> {
    let Some(route) = ctx.nl.route_lookup(ip).or_kernel()? else {
        return Ok(());
    };
    let delivers_nowhere = matches!(
        route.rtm_type,
        lookup::RTN_BLACKHOLE | lookup::RTN_UNREACHABLE | lookup::RTN_PROHIBIT | lookup::RTN_THROW
    );
    let ours = index != 0 && route.oif == Some(index);
    if route.dst_len == 0 || delivers_nowhere || ours {
        return Ok(());
    }
    log::info!(
        "uid={} {ip} is routed by a /{} route (type {}) through ifindex {:?}",
        ctx.caller.uid,
        route.dst_len,
        route.rtm_type,
        route.oif
    );
    Err(Error::Invalid(Invalid::AddressInUse))
}

/// The local /31 and /96 are free: no other interface holds or routes them. A /31 is two addresses,
/// each checked against every route, local ones included. Two vmpriv taps racing for one slot are
/// kept apart by the slot's claim, taken before any address is added ([`claim_slot`]).
fn check_addresses_free(ctx: &mut Ctx, index: u32, config: &ValidConfig) -> Result<(), Error> {
    if let Some(p) = config.inet() {
        for ip in [p.host(), p.vm()] {
            check_not_routed(ctx, index, IpAddr::V4(ip))?;
        }
    }
    if let Some(p) = config.inet6() {
        for ip in [p.host(), p.vm()] {
            check_not_routed(ctx, index, IpAddr::V6(ip))?;
        }
        check_no_inet6_inside(ctx, index, p)?;
    }
    Ok(())
}

/// Refuses the /96 when another interface holds any address inside it, with or without a prefix
/// route (`noprefixroute` leaves no route for the lookups above to find). The session's view of the
/// namespace's IPv6 addresses: one dump, then the kernel's notifications.
fn check_no_inet6_inside(ctx: &mut Ctx, index: u32, p: Inet6Pair) -> Result<(), Error> {
    let Ctx { base, inet6, .. } = ctx;
    if let Some((v, holder)) = inet6.inside(&mut base.nl, p.host(), index).or_kernel()? {
        log::info!(
            "uid={} {v} inside {}/96 is held by ifindex {holder}",
            ctx.caller.uid,
            p.host()
        );
        return Err(Error::Invalid(Invalid::AddressInUse));
    }
    Ok(())
}

/// Phase 2 bookkeeping: each change made, so a failure can undo them in reverse.
#[derive(Debug)]
enum Undo {
    Alias(String),
    Master,
    /// The old MTU, and whether the link goes down first (up, and the old MTU brings IPv6 back).
    Mtu(u32, bool),
    Group(u32),
    Up(bool),
    Addr(IpAddr, u8),
    Claim(String),
    Unclaim(String),
}

/// Below this MTU a link has no IPv6; raised to it or more, the kernel gives the link new IPv6 state
/// with the defaults (router advertisements accepted) until [`quiet_ipv6`] runs again.
const IPV6_MIN_MTU: u32 = 1280;

/// Whether an MTU change from `from` to `to` gives the link new IPv6 state with the defaults.
fn ipv6_reborn(from: Option<u32>, to: u32) -> bool {
    from.is_some_and(|m| m < IPV6_MIN_MTU) && to >= IPV6_MIN_MTU
}

/// The start of a tap's alternative name that claims a VM slot's local addresses: `vl-VM-NIC` in hex
/// (at most 6 and 2 digits), within the 15 bytes of an interface name.
const CLAIM_PREFIX: &str = "vl-";

/// The claim of (vm, nic): `vl-VVVVVV-NN`.
fn claim_name(slot: Slot) -> String {
    format!("{CLAIM_PREFIX}{:06x}-{:02x}", slot.vm, slot.nic)
}

fn is_claim(altname: &str) -> bool {
    altname.starts_with(CLAIM_PREFIX)
}

fn claim_msg(ty: u16, seq: u32, index: IfIndex, name: &str) -> Msg {
    Msg::new(ty, NLM_F_ACK, seq)
        .ifinfomsg(index.get(), 0, 0)
        .attr_nested_str(IFLA_PROP_LIST, IFLA_ALT_IFNAME, name)
}

/// Claims (vm, nic)'s local addresses for this tap before any is added: an alternative name, which the
/// kernel keeps unique among all the namespace's names, so a second tap's claim fails (`EEXIST`) and
/// two helpers racing for one slot cannot both add its addresses, even if one is killed mid-request.
/// Stale claims of the tap (`plan`) go first, so that a request killed after its claim leaves one
/// claim, which the tap's next local request replaces. The claim lasts as long as the tap, or until
/// `reset`; on a tap another session may be configuring too, [`apply`] reads it back once the
/// addresses are there.
fn claim_slot(
    nl: &mut Netlink,
    link: &Link,
    plan: &Plan<'_>,
    slot: Slot,
    undo: &mut Vec<Undo>,
) -> Result<(), Error> {
    let name = claim_name(slot);
    for stale in &plan.stale_claims {
        nl.request(|seq| claim_msg(RTM_DELLINKPROP, seq, link.index, stale))
            .or_kernel()?;
        undo.push(Undo::Unclaim(stale.clone()));
    }
    if link.altnames.contains(&name) {
        return Ok(());
    }
    match nl.request(|seq| claim_msg(RTM_NEWLINKPROP, seq, link.index, &name)) {
        Ok(()) => undo.push(Undo::Claim(name.clone())),
        Err(Errno::EEXIST) => {
            log::info!("{name} is claimed by another interface");
            return Err(Error::Invalid(Invalid::AddressInUse));
        }
        Err(e) => return Err(kernel(e)),
    }
    Ok(())
}

/// On a tap that existed before the request (another session of the caller may hold its fd and be
/// configuring it too), the tap's claims once its addresses are there must be this request's alone:
/// another session may have taken its own claim meanwhile, or removed ours as stale. Anything else
/// refuses the request, and its rollback takes its addresses and claim back.
fn claim_still_ours(nl: &mut Netlink, link: &Link, slot: Slot) -> Result<(), Error> {
    let name = claim_name(slot);
    let now = lookup::get_link(nl, Some(link.index), None).or_kernel()?;
    let claims: Vec<&String> = now.altnames.iter().filter(|n| is_claim(n)).collect();
    if claims != [&name] {
        log::info!("ifindex {} holds {claims:?} after taking {name}", link.index);
        return Err(Error::Invalid(Invalid::AddressAssigned));
    }
    Ok(())
}

fn addr_msg(ty: u16, flags: u16, seq: u32, index: IfIndex, ip: IpAddr, prefixlen: u8) -> Msg {
    let family = if ip.is_ipv4() { AF_INET } else { AF_INET6 };
    let m = Msg::new(ty, NLM_F_ACK | flags, seq).ifaddrmsg(family, prefixlen, index.get());
    // IPv4 wants IFA_LOCAL (the interface's address) and IFA_ADDRESS; IPv6 only IFA_ADDRESS.
    if ip.is_ipv4() {
        m.attr_ip(IFA_LOCAL, ip).attr_ip(IFA_ADDRESS, ip)
    } else {
        m.attr_ip(IFA_ADDRESS, ip)
    }
}

/// Applies `config` to `link` in vmd's order (the slot's claim, description, switch, rdomain, group,
/// up/down, addresses), all or nothing as far as docs/design.md's "All or nothing" says.
pub(crate) fn configure(ctx: &mut Ctx, link: &Link, config: &ValidConfig) -> Result<TapInfo, Error> {
    let plan = check_config(ctx, Some(link), config)?;
    configure_checked(ctx, link, &plan)
}

/// Phase 2 of [`configure`], once `plan` holds everything phase 1 found.
pub(crate) fn configure_checked(ctx: &mut Ctx, link: &Link, plan: &Plan<'_>) -> Result<TapInfo, Error> {
    let mut undo = Vec::new();
    let result = apply(ctx, link, plan, &mut undo);
    if let Err(e) = &result {
        log::warn!(
            "uid={} configure {} failed ({e}); rolling back {} change(s)",
            ctx.caller.uid,
            link_name(link),
            undo.len()
        );
        let down_for_ipv6 = undo.iter().any(|u| matches!(u, Undo::Mtu(_, true)));
        rollback(&mut ctx.base.nl, link.index, undo);
        // The rollback may have put the MTU back, which can bring the defaults (RAs on) back too; a
        // link that went down for that comes up once they are off.
        if plan.bridge.as_ref().is_some_and(|b| b.mtu != link.mtu) {
            match quiet_ipv6(ctx.ipv6_conf.as_ref(), &link_name(link)) {
                Err(q) => log::error!("after the rollback, ifindex {}: {q}", link.index),
                Ok(()) if down_for_ipv6 => {
                    if let Err(e) = setlink(&mut ctx.base.nl, link.index, IFF_UP, IFF_UP, None) {
                        log::error!("after the rollback, ifindex {}: up again: {e}", link.index);
                    }
                }
                Ok(()) => {}
            }
        }
    }
    result
}

fn apply(ctx: &mut Ctx, link: &Link, plan: &Plan<'_>, undo: &mut Vec<Undo>) -> Result<TapInfo, Error> {
    let config = plan.config;
    let index = link.index;
    let mut info = tap_info(link);
    if let Some(slot) = config.slot() {
        claim_slot(&mut ctx.base.nl, link, plan, slot, undo)?;
    }
    // The switch's MTU first, on its own: it can reset the IPv6 sysctls, which are quieted again
    // before the tap can come up (a failure rolls the request back like any other). An up link whose
    // IPv6 comes back with the defaults goes down for that moment, so that a helper killed in between
    // leaves it down, where the tun driver takes no frame from its VM; it comes up again only through
    // a request, which quiets it first (below).
    let up = link.flags & IFF_UP != 0;
    let mut quieted = false;
    if let Some(mtu) = plan
        .bridge
        .as_ref()
        .and_then(|b| b.mtu)
        .filter(|&m| Some(m) != link.mtu)
    {
        let old = link.mtu.unwrap_or(mtu);
        let down = up && ipv6_reborn(link.mtu, mtu);
        if down {
            setlink(&mut ctx.base.nl, index, 0, IFF_UP, None).or_kernel()?;
            undo.push(Undo::Up(true));
        }
        set_u32(&mut ctx.base.nl, index, IFLA_MTU, mtu).or_kernel()?;
        undo.push(Undo::Mtu(old, up && ipv6_reborn(Some(mtu), old)));
        info.mtu = mtu;
        quiet_ipv6(ctx.base.ipv6_conf.as_ref(), &info.ifname)?;
        quieted = true;
        if down {
            setlink(&mut ctx.base.nl, index, IFF_UP, IFF_UP, None).or_kernel()?;
        }
    }
    // A tap that is down may hold the defaults a killed helper left (above); a new one was quieted
    // when it was made.
    if plan.existing && !up && !quieted && config.up() == Some(true) {
        quiet_ipv6(ctx.base.ipv6_conf.as_ref(), &info.ifname)?;
    }
    // The rest in vmd's order (description, switch or rdomain, group, up, addresses), in one round
    // trip: each step the kernel acknowledges is undone on failure, also one after the step that
    // failed (the kernel goes on with the next message).
    let mut steps: Vec<(Msg, Undo)> = Vec::new();
    if let Some(d) = config.description() {
        let old = link.alias.clone().unwrap_or_default();
        steps.push((
            setlink_msg(0, index, (0, 0), Some((IFLA_IFALIAS, d.as_str().as_bytes()))),
            Undo::Alias(old),
        ));
    }
    if let (Some(bridge), Some(name)) = (&plan.bridge, config.switch()) {
        if link.master != Some(bridge.index) {
            let master = bridge.index.get().to_ne_bytes();
            steps.push((
                setlink_msg(0, index, (0, 0), Some((IFLA_MASTER, &master))),
                Undo::Master,
            ));
        }
        info.switch = Some(name.to_string());
    }
    if let Some(vrf) = plan.vrf.as_ref().filter(|v| link.master != Some(v.index)) {
        let master = vrf.index.get().to_ne_bytes();
        steps.push((
            setlink_msg(0, index, (0, 0), Some((IFLA_MASTER, &master))),
            Undo::Master,
        ));
    }
    if let Some(g) = config.group() {
        let group = g.number().to_ne_bytes();
        steps.push((
            setlink_msg(0, index, (0, 0), Some((IFLA_GROUP, &group))),
            Undo::Group(link.group),
        ));
    }
    if let Some(up) = config.up() {
        let flags = if up { IFF_UP } else { 0 };
        steps.push((
            setlink_msg(0, index, (flags, IFF_UP), None),
            Undo::Up(link.flags & IFF_UP != 0),
        ));
    }
    let inet = config
        .inet()
        .map(|p| (IpAddr::V4(p.host()), Inet4Pair::PREFIX_LEN));
    let inet6 = config
        .inet6()
        .map(|p| (IpAddr::V6(p.host()), Inet6Pair::PREFIX_LEN));
    for (ip, len) in [inet, inet6]
        .into_iter()
        .flatten()
        .filter(|(ip, _)| !plan.present.contains(ip))
    {
        let add = addr_msg(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, 0, index, ip, len);
        steps.push((add, Undo::Addr(ip, len)));
    }
    info.inet = config.inet();
    info.inet6 = config.inet6();
    let (msgs, undos): (Vec<Msg>, Vec<Undo>) = steps.into_iter().unzip();
    let results = match ctx.base.nl.pipeline(msgs) {
        Ok(r) => r,
        Err(e) => {
            // Any of them may have been applied: undo all (each puts back what was there before).
            undo.extend(undos);
            return Err(kernel(e));
        }
    };
    let mut failed = None;
    for (r, u) in results.into_iter().zip(undos) {
        if let Err(e) = r {
            log::warn!("ifindex {index}: the step undone by {u:?} failed: {e}");
        }
        match r {
            Ok(()) => undo.push(u),
            // IPv6 disabled on the interface answers EACCES: reported as such, never by flipping
            // the sysctl.
            Err(Errno::EACCES) if matches!(u, Undo::Addr(IpAddr::V6(_), _)) => {
                failed = failed.or(Some(Error::Unsupported(Unsupported::Inet6)));
            }
            Err(e) => failed = failed.or_else(|| Some(kernel(e))),
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    if let Some(slot) = config.slot().filter(|_| plan.existing) {
        claim_still_ours(&mut ctx.base.nl, link, slot)?;
    }
    Ok(info)
}

fn rollback(nl: &mut Netlink, index: IfIndex, undo: Vec<Undo>) {
    for u in undo.into_iter().rev() {
        let r = match u {
            Undo::Alias(a) => setlink(nl, index, 0, 0, Some((IFLA_IFALIAS, a.as_bytes()))),
            Undo::Master => set_u32(nl, index, IFLA_MASTER, 0),
            Undo::Mtu(m, down) => {
                if down && let Err(e) = setlink(nl, index, 0, IFF_UP, None) {
                    log::error!("rollback on ifindex {index}: down before the MTU: {e}");
                }
                set_u32(nl, index, IFLA_MTU, m)
            }
            Undo::Group(g) => set_u32(nl, index, IFLA_GROUP, g),
            Undo::Up(up) => setlink(nl, index, if up { IFF_UP } else { 0 }, IFF_UP, None),
            Undo::Addr(ip, len) => nl.request(|seq| addr_msg(RTM_DELADDR, 0, seq, index, ip, len)),
            Undo::Claim(name) => nl.request(|seq| claim_msg(RTM_DELLINKPROP, seq, index, &name)),
            Undo::Unclaim(name) => nl.request(|seq| claim_msg(RTM_NEWLINKPROP, seq, index, &name)),
        };
        if let Err(e) = r {
            log::error!("rollback on ifindex {index} failed: {e}");
        }
    }
}

/// Undo everything vmpriv configures: detach, down, no description, group 0, the local addresses (those
/// inside the policy's prefixes) removed, then the slot's claim.
pub(crate) fn reset(
    ctx: &mut Ctx,
    link: &Link,
    (inet, inet6): (vmpriv_protocol::Inet4Prefix, vmpriv_protocol::Inet6Prefix),
) -> Result<(), Error> {
    let nl = &mut ctx.nl;
    let index = link.index;
    if link.master.is_some() {
        set_u32(nl, index, IFLA_MASTER, 0).or_kernel()?;
    }
    setlink(nl, index, 0, IFF_UP, Some((IFLA_IFALIAS, &[]))).or_kernel()?;
    set_u32(nl, index, IFLA_GROUP, 0).or_kernel()?;
    let mut ours = Vec::new();
    for family in [AF_INET, AF_INET6] {
        nl.dump_addrs(family, index.get(), &mut |a| {
            let local = match a.address {
                IpAddr::V4(v) => inet.contains(v),
                IpAddr::V6(v) => inet6.contains(v),
            };
            if local {
                ours.push(*a);
            }
        })
        .or_kernel()?;
    }
    for a in ours {
        match nl.request(|seq| addr_msg(RTM_DELADDR, 0, seq, index, a.address, a.prefixlen)) {
            Ok(()) | Err(Errno::EADDRNOTAVAIL) => {}
            Err(e) => return Err(kernel(e)),
        }
    }
    // The slot's claim goes after its addresses, so no other tap can claim it while they are here.
    for name in link.altnames.iter().filter(|n| is_claim(n)) {
        nl.request(|seq| claim_msg(RTM_DELLINKPROP, seq, index, name))
            .or_kernel()?;
    }
    Ok(())
}
