//! The session helper's netlink: what it reads of a link beyond what both helpers read (flags,
//! group, alias, tun details, carrier, alternative names), the address and route messages, dumps,
//! the FIB lookups of the in-use checks and the view of the namespace's IPv6 addresses. The message
//! builder, the socket and the receive path are `helper/shared/netlink.rs`'s.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{self, MsgFlags, SockFlag};

pub(crate) use libc::{
    IFA_ADDRESS, IFA_LOCAL, IFLA_ALT_IFNAME, IFLA_CARRIER, IFLA_GROUP, IFLA_IFALIAS, IFLA_PROP_LIST,
};

pub(crate) use libc::IFLA_INFO_DATA;

use crate::netlink::{
    self, Header, IFLA_EXT_MASK, IFLA_INFO_KIND, IFLA_LINKINFO, IfIndex, Msg, Netlink, NlResult, ParseError,
    RECV_BUF_LEN, RTEXT_FILTER_SKIP_STATS, RTM_GETLINK, RTM_NEWLINK, attrs, messages, route_socket, string,
    u32_at,
};

pub(crate) const RTM_NEWADDR: u16 = 20;
pub(crate) const RTM_DELADDR: u16 = 21;
pub(crate) const RTM_GETADDR: u16 = 22;
pub(crate) const RTM_NEWROUTE: u16 = 24;
pub(crate) const RTM_GETROUTE: u16 = 26;
pub(crate) const RTM_NEWLINKPROP: u16 = 108;
pub(crate) const RTM_DELLINKPROP: u16 = 109;
const RTM_F_FIB_MATCH: u32 = 0x2000;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
/// `rtm_type`s of routes that deliver nowhere: an admin reserving a range.
pub(crate) const RTN_BLACKHOLE: u8 = 6;
pub(crate) const RTN_UNREACHABLE: u8 = 7;
pub(crate) const RTN_PROHIBIT: u8 = 8;
pub(crate) const RTN_THROW: u8 = 9;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
/// Address families, as `ifaddrmsg` and `rtmsg` carry them.
pub(crate) const AF_INET: u8 = 2;
pub(crate) const AF_INET6: u8 = 10;
/// `RTNLGRP_IPV6_IFADDR` as a bind mask: the namespace's IPv6 address notifications.
const GROUP_IPV6_IFADDR: u32 = 1 << (9 - 1);
const IFADDRMSG_LEN: usize = 8;
const NLA_F_NESTED: u16 = 0x8000;
const IFLA_TUN_TYPE: u16 = 3;
const IFLA_TUN_GROUP: u16 = 2;
const IFLA_TUN_NUM_QUEUES: u16 = 8;
const IFLA_TUN_NUM_DISABLED_QUEUES: u16 = 9;

/// The session helper's own requests.
pub(crate) trait MsgExt {
    fn ifaddrmsg(self, family: u8, prefixlen: u8, index: u32) -> Self;
    fn attr_ip(self, ty: u16, ip: IpAddr) -> Self;
    fn attr_nested_str(self, outer: u16, inner: u16, s: &str) -> Self;
}

impl MsgExt for Msg {
    /// `struct ifaddrmsg`.
    fn ifaddrmsg(mut self, family: u8, prefixlen: u8, index: u32) -> Self {
        self.buf.extend_from_slice(&[family, prefixlen, 0, 0]); // family, prefixlen, flags, scope
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self
    }

    /// An IP address attribute (4 or 16 bytes).
    fn attr_ip(self, ty: u16, ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => self.attr(ty, &a.octets()),
            IpAddr::V6(a) => self.attr(ty, &a.octets()),
        }
    }

    /// `outer { inner = s }`: `IFLA_LINKINFO { IFLA_INFO_KIND }` (a dump filter) or
    /// `IFLA_PROP_LIST { IFLA_ALT_IFNAME }` (an alternative name).
    fn attr_nested_str(self, outer: u16, inner: u16, s: &str) -> Self {
        let inner = Msg::default().attr_str(inner, s);
        let overflow = inner.overflow;
        let mut m = self.attr(outer | NLA_F_NESTED, &inner.buf);
        m.overflow |= overflow;
        m
    }
}

/// What the helper reads of a tun device's link info.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TunInfo {
    /// 1 = tun, 2 = tap.
    pub(crate) dev_type: u8,
    /// The group gid, if one is set.
    pub(crate) group: Option<u32>,
    /// Queues attached now, enabled and disabled (`IFLA_TUN_NUM_QUEUES` + `…_DISABLED_QUEUES`): the
    /// number of open fds that hold the tap. The kernel reports it for multi-queue taps only.
    pub(crate) queues: Option<u32>,
}

/// What the session helper reads of a link: what both helpers read (`base`, also through `Deref`)
/// and what a tap's ownership, claims, groups and rollback need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) base: netlink::Link,
    pub(crate) flags: u32,
    pub(crate) group: u32,
    pub(crate) alias: Option<String>,
    pub(crate) tun: Option<TunInfo>,
    /// `IFLA_CARRIER`: a tap has carrier while some fd holds it (its holder can also turn it off).
    pub(crate) carrier: Option<bool>,
    /// Alternative names (`IFLA_PROP_LIST`): a tap's claim on a VM slot's local addresses.
    pub(crate) altnames: Vec<String>,
}

impl std::ops::Deref for Link {
    type Target = netlink::Link;
    fn deref(&self) -> &netlink::Link {
        &self.base
    }
}

impl Link {
    /// Whether some open fd still holds this tap: its queue count where the kernel reports one
    /// (multi-queue), else its carrier, which the tun driver turns off with the last queue.
    pub(crate) fn held_by_fds(&self) -> bool {
        match self.tun.as_ref().and_then(|t| t.queues) {
            Some(q) => q > 0,
            None => self.carrier != Some(false),
        }
    }

    /// Whether this link is a tap (kind `tun`, type tap).
    pub(crate) fn is_tap(&self) -> bool {
        self.kind.as_deref() == Some("tun") && self.tun.as_ref().is_some_and(|t| t.dev_type == 2)
    }
}

/// Parses an `RTM_NEWLINK` payload (`ifinfomsg` + attributes) with everything the session reads.
pub(crate) fn parse_link(payload: &[u8]) -> Result<Link, ParseError> {
    let (mut group, mut alias, mut tun, mut carrier, mut altnames) = (0, None, None, None, Vec::new());
    let base = netlink::parse_link_with(payload, &mut |ty, data| {
        match ty {
            IFLA_GROUP => group = u32_at(data, 0).unwrap_or(0),
            IFLA_IFALIAS => alias = string(data),
            IFLA_CARRIER => carrier = data.first().map(|&c| c != 0),
            IFLA_PROP_LIST => {
                for b in attrs(data) {
                    let (ty, data) = b?;
                    if ty == IFLA_ALT_IFNAME {
                        altnames.extend(string(data));
                    }
                }
            }
            IFLA_LINKINFO => {
                for b in attrs(data) {
                    if let (IFLA_INFO_DATA, data) = b? {
                        tun = Some(parse_tun(data)?);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    // IFLA_INFO_DATA means tun data only for kind "tun".
    if base.kind.as_deref() != Some("tun") {
        tun = None;
    }
    Ok(Link {
        flags: u32_at(payload, 8).ok_or(ParseError::Short)?,
        base,
        group,
        alias,
        tun,
        carrier,
        altnames,
    })
}

fn parse_tun(data: &[u8]) -> Result<TunInfo, ParseError> {
    let mut tun = TunInfo::default();
    for a in attrs(data) {
        let (ty, data) = a?;
        match ty {
            IFLA_TUN_TYPE => tun.dev_type = data.first().copied().unwrap_or(0),
            IFLA_TUN_GROUP => tun.group = u32_at(data, 0),
            IFLA_TUN_NUM_QUEUES | IFLA_TUN_NUM_DISABLED_QUEUES => {
                let n = u32_at(data, 0).unwrap_or(0);
                tun.queues = Some(tun.queues.unwrap_or(0).saturating_add(n));
            }
            _ => {}
        }
    }
    Ok(tun)
}

/// What the helper reads of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Addr {
    pub(crate) index: u32,
    pub(crate) prefixlen: u8,
    pub(crate) address: IpAddr,
}

/// Parses an `RTM_NEWADDR` payload; `None` for an address without `IFA_ADDRESS`/`IFA_LOCAL`.
pub(crate) fn parse_addr(payload: &[u8]) -> Result<Option<Addr>, ParseError> {
    let family = *payload.first().ok_or(ParseError::Short)?;
    let prefixlen = *payload.get(1).ok_or(ParseError::Short)?;
    let index = u32_at(payload, 4).ok_or(ParseError::Short)?;
    let mut address = None;
    let mut local = None;
    for a in attrs(payload.get(IFADDRMSG_LEN..).ok_or(ParseError::Short)?) {
        let (ty, data) = a?;
        let ip = match (family, data.len()) {
            (AF_INET, 4) => <[u8; 4]>::try_from(data).ok().map(IpAddr::from),
            (AF_INET6, 16) => <[u8; 16]>::try_from(data).ok().map(IpAddr::from),
            _ => None,
        };
        match ty {
            IFA_ADDRESS => address = ip,
            IFA_LOCAL => local = ip,
            _ => {}
        }
    }
    // For IPv4 IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on point-to-point).
    Ok(local.or(address).map(|address| Addr {
        index,
        prefixlen,
        address,
    }))
}

/// What the helper reads of a route: the FIB entry that matched a lookup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) dst_len: u8,
    pub(crate) rtm_type: u8,
    pub(crate) oif: Option<u32>,
}

/// Parses an `RTM_NEWROUTE` payload (`rtmsg` + attributes).
pub(crate) fn parse_route(payload: &[u8]) -> Result<Route, ParseError> {
    let head = payload.get(..RTMSG_LEN).ok_or(ParseError::Short)?;
    let mut r = Route {
        dst_len: head.get(1).copied().unwrap_or(0),
        rtm_type: head.get(7).copied().unwrap_or(0),
        oif: None,
    };
    for a in attrs(payload.get(RTMSG_LEN..).ok_or(ParseError::Short)?) {
        let (ty, data) = a?;
        if ty == RTA_OIF {
            r.oif = u32_at(data, 0);
        }
    }
    Ok(r)
}

const RTMSG_LEN: usize = 12;

/// `RTM_GETLINK` by index or by name, read as the session reads a link; `ENODEV` if there is none.
pub(crate) fn get_link(nl: &mut Netlink, index: Option<IfIndex>, name: Option<&str>) -> NlResult<Link> {
    nl.get(index, name, parse_link)
}

/// The session helper's requests on the shared socket: dumps and FIB lookups.
pub(crate) trait Lookups {
    /// Dumps links (of one kind, which the kernel filters by `IFLA_INFO_KIND`, or all), calling `each`
    /// on every one.
    fn dump_links(&mut self, kind: Option<&str>, each: &mut dyn FnMut(&Link)) -> NlResult<()>;
    /// The FIB entry a lookup of `ip` matches (policy rules, local table first), or `None` when no
    /// route matches or the match delivers nowhere.
    fn route_lookup(&mut self, ip: IpAddr) -> NlResult<Option<Route>>;
    /// `RTM_GETROUTE` with `RTM_F_FIB_MATCH` for `ip`.
    fn fib_match(&mut self, ip: IpAddr) -> NlResult<Option<Route>>;
    /// Dumps addresses of one family (2 = IPv4, 10 = IPv6), of every link (`index` 0) or of one.
    fn dump_addrs(&mut self, family: u8, index: u32, each: &mut dyn FnMut(&Addr)) -> NlResult<()>;
}

impl Lookups for Netlink {
    /// Dumps links of one kind (the kernel filters by `IFLA_INFO_KIND`), calling `each` on every one.
    fn dump_links(&mut self, kind: Option<&str>, each: &mut dyn FnMut(&Link)) -> NlResult<()> {
        let build = |seq| {
            let m = Msg::new(RTM_GETLINK, NLM_F_DUMP, seq)
                .ifinfomsg(0, 0, 0)
                .attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
            match kind {
                Some(k) => m.attr_nested_str(IFLA_LINKINFO, IFLA_INFO_KIND, k),
                None => m,
            }
        };
        self.exchange(build, &mut |hdr, payload| {
            if hdr.ty == RTM_NEWLINK {
                let link = parse_link(payload).map_err(|_| Errno::EPROTO)?;
                // Older kernels ignore the filter: check the kind ourselves too.
                if kind.is_none() || link.kind.as_deref() == kind {
                    each(&link);
                }
            }
            Ok(())
        })
    }

    /// The FIB entry a lookup of `ip` matches (policy rules, local table first), or `None` when no
    /// route matches or the match delivers nowhere. One round trip, whatever the number of interfaces
    /// and addresses (two when the answer is EINVAL).
    fn route_lookup(&mut self, ip: IpAddr) -> NlResult<Option<Route>> {
        match self.fib_match(ip) {
            // No route, or one that delivers nowhere: the lookup fails with the route type's error
            // (unreachable EHOSTUNREACH, prohibit EACCES, throw EAGAIN).
            Err(Errno::ENETUNREACH | Errno::EHOSTUNREACH | Errno::ENOENT | Errno::EACCES | Errno::EAGAIN) => {
                Ok(None)
            }
            // A blackhole answers EINVAL, and so would a request this kernel does not accept, which
            // must not read as "free": the same request for the loopback address tells them apart.
            Err(Errno::EINVAL) => {
                let lo = match ip {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                };
                match self.fib_match(lo) {
                    Ok(_) | Err(Errno::ENETUNREACH | Errno::EHOSTUNREACH) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    }

    fn fib_match(&mut self, ip: IpAddr) -> NlResult<Option<Route>> {
        let (family, len) = if ip.is_ipv4() {
            (AF_INET, 32u8)
        } else {
            (AF_INET6, 128)
        };
        let build = |seq| {
            // struct rtmsg: family, dst_len, then zeroes (src_len, tos, table, protocol, scope, type), flags.
            let mut msg = Msg::new(RTM_GETROUTE, 0, seq);
            msg.buf.extend_from_slice(&[family, len, 0, 0, 0, 0, 0, 0]);
            msg.buf.extend_from_slice(&RTM_F_FIB_MATCH.to_ne_bytes());
            msg.attr_ip(RTA_DST, ip)
        };
        let mut found = None;
        self.exchange(build, &mut |hdr, payload| {
            if hdr.ty == RTM_NEWROUTE {
                found = Some(parse_route(payload).map_err(|_| Errno::EPROTO)?);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Dumps addresses of one family (2 = IPv4, 10 = IPv6), of every link (`index` 0) or of one: the
    /// socket has strict checking on, so the kernel filters by index (and we check again).
    fn dump_addrs(&mut self, family: u8, index: u32, each: &mut dyn FnMut(&Addr)) -> NlResult<()> {
        let build = |seq| Msg::new(RTM_GETADDR, NLM_F_DUMP, seq).ifaddrmsg(family, 0, index);
        self.exchange(build, &mut |hdr, payload| {
            if hdr.ty == RTM_NEWADDR
                && let Some(a) = parse_addr(payload).map_err(|_| Errno::EPROTO)?
                && (index == 0 || a.index == index)
            {
                each(&a);
            }
            Ok(())
        })
    }
}

/// The namespace's IPv6 addresses as (address, ifindex), for the in-use check of a /96: dumped at the
/// first use, then kept up to date from the kernel's notifications on a second socket.
pub(crate) struct Inet6View {
    /// Non-blocking, subscribed to the kernel's IPv6 address notifications.
    events: OwnedFd,
    buf: Vec<u8>,
    inet6: BTreeSet<(u128, u32)>,
    /// `inet6` needs a fresh dump: before the first use, and after the kernel dropped a notification.
    inet6_stale: bool,
}

impl Inet6View {
    /// Subscribes to the notifications (at start-up, before any dump).
    pub(crate) fn open() -> io::Result<Self> {
        Ok(Inet6View {
            events: route_socket(SockFlag::SOCK_NONBLOCK, GROUP_IPV6_IFADDR)?,
            buf: vec![0; RECV_BUF_LEN],
            inet6: BTreeSet::new(),
            inet6_stale: true,
        })
    }

    /// An IPv6 address inside the /96 that holds `net`, on an interface other than `except`. The
    /// addresses are dumped once, then followed through the kernel's notifications, so a call costs
    /// what changed since the last one, not what the namespace holds. Notifications queued during a
    /// dump are applied after it: each says present or absent, so applying them in order ends in the
    /// kernel's state. After a dropped notification (`ENOBUFS`) the next call dumps again; if some are
    /// dropped even during that dump, this answer stands on the dump, as a check without
    /// notifications would.
    pub(crate) fn inside(
        &mut self,
        nl: &mut Netlink,
        net: Ipv6Addr,
        except: u32,
    ) -> NlResult<Option<(Ipv6Addr, u32)>> {
        self.follow_inet6()?;
        let low = u128::from(net) & !u128::from(u32::MAX);
        let high = low | u128::from(u32::MAX);
        let inside = |set: &BTreeSet<(u128, u32)>| {
            set.range((low, 0)..=(high, u32::MAX))
                .find(|&&(_, index)| index != except)
                .map(|&(a, index)| (Ipv6Addr::from(a), index))
        };
        let mut dumped = None;
        if self.inet6_stale {
            let mut all = BTreeSet::new();
            nl.dump_addrs(AF_INET6, 0, &mut |a| {
                if let IpAddr::V6(v) = a.address {
                    all.insert((u128::from(v), a.index));
                }
            })?;
            self.inet6.clone_from(&all);
            self.inet6_stale = false;
            self.follow_inet6()?;
            // A notification dropped after the dump: the ones applied may be older than the dump and
            // undo what it saw. This answer stands on the dump too; the next call dumps again.
            if self.inet6_stale {
                dumped = Some(all);
            }
        }
        Ok(inside(&self.inet6).or_else(|| dumped.as_ref().and_then(inside)))
    }

    /// Applies every queued address notification to `inet6`. A dropped or unreadable one marks it
    /// stale.
    fn follow_inet6(&mut self) -> NlResult<()> {
        loop {
            let n = match socket::recv(self.events.as_raw_fd(), &mut self.buf, MsgFlags::MSG_TRUNC) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::ENOBUFS) => {
                    self.inet6_stale = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(buf) = self.buf.get(..n) else {
                self.inet6_stale = true; // truncated
                continue;
            };
            for m in messages(buf) {
                let Ok((Header { ty, .. }, Ok(addr))) = m.map(|(hdr, payload)| (hdr, parse_addr(payload)))
                else {
                    self.inet6_stale = true;
                    break;
                };
                if let Some(Addr {
                    index,
                    address: IpAddr::V6(v),
                    ..
                }) = addr
                {
                    let key = (u128::from(v), index);
                    match ty {
                        RTM_NEWADDR => self.inet6.insert(key),
                        RTM_DELADDR => self.inet6.remove(&key),
                        _ => false,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{IFF_UP, IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_MTU, take_replies};

    /// `rtm_type` of a local (host) route; `rtm_protocol` of a route the kernel added.
    const RTN_LOCAL: u8 = 2;
    const RTPROT_KERNEL: u8 = 2;
    const RTA_TABLE: u16 = 15;
    const IFLA_TUN_OWNER: u16 = 1;
    const IFLA_TUN_PERSIST: u16 = 6;

    fn link_msg() -> Vec<u8> {
        let tun = Msg::default()
            .attr(IFLA_TUN_TYPE, &[2])
            .attr_u32(IFLA_TUN_OWNER, 65534)
            .attr(IFLA_TUN_PERSIST, &[0]);
        let info = Msg::default()
            .attr_str(IFLA_INFO_KIND, "tun")
            .attr(IFLA_INFO_DATA, &tun.buf);
        Msg::new(RTM_NEWLINK, 0, 3)
            .ifinfomsg(9, IFF_UP, 0)
            .attr_str(IFLA_IFNAME, "tap0")
            .attr_u32(IFLA_MTU, 1500)
            .attr_u32(IFLA_MASTER, 4)
            .attr_u32(IFLA_GROUP, 42)
            .attr(IFLA_ADDRESS, &[0xfe, 1, 2, 3, 4, 5])
            .attr_nested_str(IFLA_PROP_LIST, IFLA_ALT_IFNAME, "vl-000001-00")
            .attr(IFLA_LINKINFO | NLA_F_NESTED, &info.buf)
            .finish()
            .unwrap()
    }

    #[test]
    fn a_nested_string_too_long_for_its_attribute_fails_the_whole_request() {
        let nested = |s: &str| {
            Msg::new(RTM_NEWLINK, 0, 1)
                .ifinfomsg(1, 0, 0)
                .attr_nested_str(IFLA_PROP_LIST, IFLA_ALT_IFNAME, s)
                .finish()
        };
        assert!(nested("vl-000001-00").is_some());
        // The inner attribute's u16 length cannot hold it; the outer one alone would still fit.
        assert!(nested(&"x".repeat(usize::from(u16::MAX))).is_none());
    }

    fn payload(msg: &[u8]) -> &[u8] {
        messages(msg).next().unwrap().unwrap().1
    }

    fn parse_all(buf: &[u8]) -> Option<NlResult<()>> {
        let seq = u32_at(buf, 8).unwrap_or(0);
        take_replies(buf, seq, &mut |hdr, p| match hdr.ty {
            RTM_NEWROUTE => parse_route(p).map(drop).map_err(|_| Errno::EPROTO),
            _ => parse_link(p).map(drop).map_err(|_| Errno::EPROTO),
        })
    }

    #[test]
    fn parses_a_tap_link() {
        let link = parse_link(payload(&link_msg())).unwrap();
        assert_eq!(link.index.get(), 9);
        assert_eq!(link.name.as_deref(), Some("tap0"));
        assert_eq!(
            (link.mtu, link.master.map(IfIndex::get), link.group),
            (Some(1500), Some(4), 42)
        );
        assert_eq!(link.flags, IFF_UP);
        assert_eq!(link.mac, Some([0xfe, 1, 2, 3, 4, 5]));
        assert_eq!(link.altnames, ["vl-000001-00"]);
        assert!(link.is_tap());
    }

    #[test]
    fn truncated_replies_are_errors_not_panics() {
        let full = link_msg();
        assert_eq!(parse_all(&[]), None);
        for cut in 1..full.len() {
            assert_eq!(parse_all(&full[..cut]), Some(Err(Errno::EPROTO)), "cut at {cut}");
        }
        // Cut inside the payload's header or an attribute: an error; between attributes: a link
        // without the rest, never the whole link.
        let whole = parse_link(payload(&full)).unwrap();
        let p = payload(&full);
        for cut in 0..p.len() {
            if let Ok(link) = parse_link(&p[..cut]) {
                assert_ne!(link, whole, "cut at {cut}");
            }
        }
        assert_eq!(parse_all(&full), Some(Ok(())));
    }

    /// A FIB_MATCH reply: a local route in table 255 whose nexthop is ifindex 7.
    pub(crate) fn route_msg() -> Vec<u8> {
        let mut m = Msg::new(RTM_NEWROUTE, 0, 5);
        m.buf
            .extend_from_slice(&[2, 32, 0, 0, 255, RTPROT_KERNEL, 254, RTN_LOCAL]);
        m.buf.extend_from_slice(&0u32.to_ne_bytes());
        m.attr_ip(RTA_DST, IpAddr::from([100, 64, 1, 2]))
            .attr_u32(RTA_TABLE, 255)
            .attr_u32(RTA_OIF, 7)
            .finish()
            .unwrap()
    }

    #[test]
    fn parses_a_route() {
        let route = parse_route(payload(&route_msg())).unwrap();
        let want = Route {
            dst_len: 32,
            rtm_type: RTN_LOCAL,
            oif: Some(7),
        };
        assert_eq!(route, want);
        let full = route_msg();
        assert_eq!(parse_all(&[]), None);
        for cut in 1..full.len() {
            assert_eq!(parse_all(&full[..cut]), Some(Err(Errno::EPROTO)), "cut at {cut}");
        }
        let p = payload(&full);
        for cut in 0..p.len() {
            if let Ok(r) = parse_route(&p[..cut]) {
                assert_ne!(r, route, "cut at {cut}");
            }
        }
    }
}
