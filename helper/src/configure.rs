//! Configuring a tap in vmd's order, in two phases: every check first (kinds, masters, addresses in
//! use), then the changes, each recorded so that a failure part-way undoes what this request changed.

use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use vmpriv_protocol::validate::ValidConfig;
use vmpriv_protocol::wire::Unsupported;
use vmpriv_protocol::{Caller, Error, IfName, Inet4Pair, Inet6Pair, Invalid, Policy, TapInfo};

use crate::netlink::{
    self, AF_INET, AF_INET6, IFA_ADDRESS, IFA_LOCAL, IFF_UP, IFLA_ALT_IFNAME, IFLA_GROUP, IFLA_IFALIAS,
    IFLA_MASTER, IFLA_MTU, IFLA_PROP_LIST, Link, Msg, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, Netlink,
    RTM_DELADDR, RTM_DELLINKPROP, RTM_NEWADDR, RTM_NEWLINKPROP, RTM_SETLINK,
};

/// What a session works with: who asks, what the policy says, the kernel's sockets and fds.
pub(crate) struct Ctx {
    /// The caller, identified at start-up.
    pub(crate) caller: Caller,
    /// The policy, read at start-up.
    pub(crate) policy: Policy,
    /// The route netlink socket.
    pub(crate) nl: Netlink,
    /// `/dev/net/tun` fds opened while the helper could (the device may be mode 0600).
    pub(crate) tun_pool: Vec<OwnedFd>,
    /// (st_dev, st_ino) of the helper's own network namespace.
    pub(crate) netns: (u64, u64),
    /// `TUNGETFEATURES`, asked once per session.
    pub(crate) tun_features: Option<u32>,
    /// `O_PATH` on `/proc/sys/net/ipv6/conf`, where new taps get RAs and autoconfiguration turned off.
    pub(crate) ipv6_conf: Option<OwnedFd>,
    /// `O_PATH` on `/sys/devices/virtual/net`, where a switch's `addr_assign_type` is read.
    pub(crate) sys_net: Option<OwnedFd>,
    /// Where the next search for a free quota slot starts: a hint only, the kernel has the truth.
    pub(crate) next_slot: u32,
    /// The `DestroyTaps` batch set aside so far (messages with `more`), if any.
    pub(crate) batch: Option<Batch>,
}

/// Taps set aside for one batched delete: moved into the helper's own interface group, which the
/// last message of the batch deletes in one `RTM_DELLINK`.
pub(crate) struct Batch {
    /// The batch's interface group.
    pub(crate) group: u32,
    /// (ifindex, the group it had before), to put back if the batch is abandoned.
    pub(crate) taps: Vec<(u32, u32)>,
}

pub(crate) fn kernel(e: Errno) -> Error {
    Error::Kernel { errno: e as i32 }
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

/// A tap joins only a bridge whose MAC the admin fixed (`addr_assign_type` 3, NET_ADDR_SET, and not
/// all zeros, which a bridge without ports has): any other takes the lowest MAC of its ports, and a
/// tap's holder sets its tap's MAC without privilege, so a VM could choose the host's MAC on it
/// (design.md, threat model). rtnetlink does not carry `addr_assign_type` (6.18 sends the same
/// attributes before and after it changes), so it comes from sysfs, once sysfs is seen to show this
/// bridge (same ifindex and MAC as netlink's): a sysfs mounted elsewhere shows another namespace.
fn check_bridge_mac(ctx: &Ctx, name: &IfName, bridge: &Link) -> Result<(), Error> {
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
        return Err(Error::Unsupported(Unsupported::BridgeMac));
    }
    if read("addr_assign_type").as_deref() != Some("3") || mac == [0; 6] {
        log::warn!(
            "bridge {name} has no fixed MAC, so a VM on it could choose the host's MAC there; refusing a tap on it. Fix: ip link set {name} address $(cat /sys/class/net/{name}/address) (systemd-networkd: MACAddress= in its .netdev; one showing 00:00:00:00:00:00 has no ports: give it its uplink's MAC)"
        );
        return Err(Error::Unsupported(Unsupported::BridgeMac));
    }
    Ok(())
}

/// What phase 1 found: the objects phase 2 will act on.
pub(crate) struct Plan {
    bridge: Option<Link>,
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
pub(crate) fn check_config(ctx: &mut Ctx, link: Option<&Link>, config: &ValidConfig) -> Result<Plan, Error> {
    let master = link.and_then(|l| l.master);
    let bridge = match config.switch() {
        None => None,
        Some(s) => {
            let b = find_bridge(ctx, s.as_str())?;
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
            let dev = match ctx.nl.get_link(0, Some(v.device().as_str())) {
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
    let index = link.map_or(0, |l| l.index);
    // What the tap holds already (a new tap holds nothing): one local address per family, as in vmd,
    // and one slot's claim.
    let mut held = Vec::new();
    let mut stale_claims = Vec::new();
    if let (Some(l), Some(slot)) = (link, config.slot()) {
        for family in [AF_INET, AF_INET6] {
            ctx.nl
                .dump_addrs(family, l.index, &mut |a| held.push(*a))
                .map_err(kernel)?;
        }
        let asked = [
            config.inet().map(|p| IpAddr::V4(p.host)),
            config.inet6().map(|p| IpAddr::V6(p.host)),
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
    let Some(route) = ctx.nl.route_lookup(ip).map_err(kernel)? else {
        return Ok(());
    };
    let delivers_nowhere = matches!(
        route.rtm_type,
        netlink::RTN_BLACKHOLE | netlink::RTN_UNREACHABLE | netlink::RTN_PROHIBIT | netlink::RTN_THROW
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
        for ip in [p.host, p.vm] {
            check_not_routed(ctx, index, IpAddr::V4(ip))?;
        }
    }
    if let Some(p) = config.inet6() {
        for ip in [p.host, p.vm] {
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
    if let Some((v, holder)) = ctx.nl.inet6_inside(p.host, index).map_err(kernel)? {
        log::info!(
            "uid={} {v} inside {}/96 is held by ifindex {holder}",
            ctx.caller.uid,
            p.host
        );
        return Err(Error::Invalid(Invalid::AddressInUse));
    }
    Ok(())
}

/// A new tap must not route or autoconfigure from what its VM sends: router advertisements (a default
/// route and a SLAAC address through the VM), autoconfiguration and redirects off, before it is up.
/// CAP_NET_ADMIN may write a link's own sysctls; Landlock leaves only this directory writable. Run at
/// creation and again after every MTU change: an MTU below 1280 drops the link's IPv6 state, and it
/// comes back with the defaults (RAs on).
pub(crate) fn quiet_ipv6(conf: Option<&OwnedFd>, name: &str) -> Result<(), Error> {
    let Some(conf) = conf else {
        return Ok(()); // no IPv6 in this kernel
    };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Error::Kernel { errno: libc::EINVAL }); // kernel names never are; never a path
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
        nix::unistd::write(&fd, b"0").map_err(kernel)?;
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
    Claim(String),
    Unclaim(String),
}

/// The start of a tap's alternative name that claims a VM slot's local addresses: `vl-VM-NIC` in hex
/// (at most 6 and 2 digits), within the 15 bytes of an interface name.
const CLAIM_PREFIX: &str = "vl-";

/// The claim of (vm, nic): `vl-VVVVVV-NN`.
fn claim_name((vm, nic): (u32, u32)) -> String {
    format!("{CLAIM_PREFIX}{vm:06x}-{nic:02x}")
}

fn is_claim(altname: &str) -> bool {
    altname.starts_with(CLAIM_PREFIX)
}

fn claim_msg(ty: u16, seq: u32, index: u32, name: &str) -> Msg {
    Msg::new(ty, NLM_F_ACK, seq)
        .ifinfomsg(index, 0, 0)
        .attr_nested_str(IFLA_PROP_LIST, IFLA_ALT_IFNAME, name)
}

/// Claims (vm, nic)'s local addresses for this tap before any is added: an alternative name, which the
/// kernel keeps unique among all the namespace's names, so a second tap's claim fails (`EEXIST`) and
/// two helpers racing for one slot cannot both add its addresses, even if one is killed mid-request.
/// Stale claims of the tap (`plan`) go first, so the tap holds one at most, whenever the helper dies.
/// On a tap another session may be configuring too, the claim is read back: a second claim that
/// came meanwhile refuses this request (its rollback takes ours). The claim lasts as long as the tap,
/// or until `reset`.
fn claim_slot(
    nl: &mut Netlink,
    link: &Link,
    plan: &Plan,
    slot: (u32, u32),
    undo: &mut Vec<Undo>,
) -> Result<(), Error> {
    let name = claim_name(slot);
    for stale in &plan.stale_claims {
        nl.request(|seq| claim_msg(RTM_DELLINKPROP, seq, link.index, stale))
            .map_err(kernel)?;
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
    if plan.existing {
        let now = nl.get_link(link.index, None).map_err(kernel)?;
        if now.altnames.iter().any(|n| is_claim(n) && *n != name) {
            log::info!("ifindex {} got another claim while taking {name}", link.index);
            return Err(Error::Invalid(Invalid::AddressAssigned));
        }
    }
    Ok(())
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

/// `RTM_SETLINK` of one u32 attribute (MTU, master, group).
pub(crate) fn set_u32(nl: &mut Netlink, index: u32, ty: u16, value: u32) -> Result<(), Errno> {
    setlink(nl, index, 0, 0, Some((ty, &value.to_ne_bytes())))
}

fn addr_msg(ty: u16, flags: u16, seq: u32, index: u32, ip: IpAddr, prefixlen: u8) -> Msg {
    let family = if ip.is_ipv4() { AF_INET } else { AF_INET6 };
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
    configure_checked(ctx, link, config, &plan)
}

/// Phase 2 of [`configure`], once `plan` holds everything phase 1 found.
pub(crate) fn configure_checked(
    ctx: &mut Ctx,
    link: &Link,
    config: &ValidConfig,
    plan: &Plan,
) -> Result<TapInfo, Error> {
    let mut undo = Vec::new();
    let result = apply(ctx, link, config, plan, &mut undo);
    if let Err(e) = &result {
        log::warn!(
            "uid={} configure {} failed ({e}); rolling back {} change(s)",
            ctx.caller.uid,
            link_name(link),
            undo.len()
        );
        rollback(&mut ctx.nl, link.index, undo);
        // The rollback may have put the MTU back, which can bring the defaults (RAs on) back too.
        if plan.bridge.as_ref().is_some_and(|b| b.mtu != link.mtu)
            && let Err(q) = quiet_ipv6(ctx.ipv6_conf.as_ref(), &link_name(link))
        {
            log::error!("after the rollback, ifindex {}: {q}", link.index);
        }
    }
    result
}

fn apply(
    ctx: &mut Ctx,
    link: &Link,
    config: &ValidConfig,
    plan: &Plan,
    undo: &mut Vec<Undo>,
) -> Result<TapInfo, Error> {
    let nl = &mut ctx.nl;
    let index = link.index;
    let mut info = tap_info(link);
    if let Some(slot) = config.slot() {
        claim_slot(nl, link, plan, slot, undo)?;
    }
    if let Some(d) = config.description() {
        setlink(nl, index, 0, 0, Some((IFLA_IFALIAS, d.as_str().as_bytes()))).map_err(kernel)?;
        undo.push(Undo::Alias(link.alias.clone().unwrap_or_default()));
    }
    if let (Some(bridge), Some(name)) = (&plan.bridge, config.switch()) {
        if let Some(mtu) = bridge.mtu.filter(|&m| Some(m) != link.mtu) {
            set_u32(nl, index, IFLA_MTU, mtu).map_err(kernel)?;
            undo.push(Undo::Mtu(link.mtu.unwrap_or(mtu)));
            info.mtu = mtu;
            // Below 1280 the link lost its IPv6 state, which comes back with the defaults: quiet it
            // again (a failure rolls the request back like any other).
            quiet_ipv6(ctx.ipv6_conf.as_ref(), &info.ifname)?;
        }
        if link.master != Some(bridge.index) {
            set_u32(nl, index, IFLA_MASTER, bridge.index).map_err(kernel)?;
            undo.push(Undo::Master);
        }
        info.switch = Some(name.to_string());
    }
    if let Some(vrf) = &plan.vrf
        && link.master != Some(vrf.index)
    {
        set_u32(nl, index, IFLA_MASTER, vrf.index).map_err(kernel)?;
        undo.push(Undo::Master);
    }
    if let Some(g) = config.group() {
        set_u32(nl, index, IFLA_GROUP, g.number()).map_err(kernel)?;
        undo.push(Undo::Group(link.group));
    }
    if let Some(up) = config.up() {
        setlink(nl, index, if up { IFF_UP } else { 0 }, IFF_UP, None).map_err(kernel)?;
        undo.push(Undo::Up(link.flags & IFF_UP != 0));
    }
    if let Some(p) = config.inet() {
        let ip = IpAddr::V4(p.host);
        if !plan.present.contains(&ip) {
            add_addr(nl, index, ip, Inet4Pair::PREFIX_LEN, undo).map_err(kernel)?;
        }
        info.inet = Some(p);
    }
    if let Some(p) = config.inet6() {
        let ip = IpAddr::V6(p.host);
        if !plan.present.contains(&ip) {
            // IPv6 disabled on the interface answers EACCES: reported as such, never by flipping
            // the sysctl.
            add_addr(nl, index, ip, Inet6Pair::PREFIX_LEN, undo).map_err(|e| match e {
                Errno::EACCES => Error::Unsupported(Unsupported::Inet6),
                e => kernel(e),
            })?;
        }
        info.inet6 = Some(p);
    }
    Ok(info)
}

/// Adds `ip/len` to the tap, only if it is not there (`NLM_F_EXCL`), and records its removal.
fn add_addr(nl: &mut Netlink, index: u32, ip: IpAddr, len: u8, undo: &mut Vec<Undo>) -> Result<(), Errno> {
    nl.request(|seq| addr_msg(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, seq, index, ip, len))?;
    undo.push(Undo::Addr(ip, len));
    Ok(())
}

fn rollback(nl: &mut Netlink, index: u32, undo: Vec<Undo>) {
    for u in undo.into_iter().rev() {
        let r = match u {
            Undo::Alias(a) => setlink(nl, index, 0, 0, Some((IFLA_IFALIAS, a.as_bytes()))),
            Undo::Master => set_u32(nl, index, IFLA_MASTER, 0),
            Undo::Mtu(m) => set_u32(nl, index, IFLA_MTU, m),
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
        set_u32(nl, index, IFLA_MASTER, 0).map_err(kernel)?;
    }
    setlink(nl, index, 0, IFF_UP, Some((IFLA_IFALIAS, &[]))).map_err(kernel)?;
    set_u32(nl, index, IFLA_GROUP, 0).map_err(kernel)?;
    let mut ours = Vec::new();
    for family in [AF_INET, AF_INET6] {
        nl.dump_addrs(family, index, &mut |a| {
            let local = match a.address {
                IpAddr::V4(v) => inet.contains(v),
                IpAddr::V6(v) => inet6.contains(v),
            };
            if local {
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
    // The slot's claim goes after its addresses, so no other tap can claim it while they are here.
    for name in link.altnames.iter().filter(|n| is_claim(n)) {
        nl.request(|seq| claim_msg(RTM_DELLINKPROP, seq, index, name))
            .map_err(kernel)?;
    }
    Ok(())
}
