//! Hand-written rtnetlink: the few messages the helper sends, and a parser for the replies it reads.
//!
//! Encoding is an append-only builder; parsing never trusts a length it has not checked against the
//! buffer (the receive path is fuzzed: `fuzz/fuzz_targets/netlink.rs` compiles this very file). Every link write is `RTM_SETLINK`
//! with a non-zero ifindex that came from the kernel: `ifi_index == 0` plus `IFLA_GROUP` would change
//! every link in that group, and `RTM_NEWLINK` could create one.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};

pub(crate) const RTM_DELLINK: u16 = 17;
pub(crate) const RTM_GETLINK: u16 = 18;
pub(crate) const RTM_SETLINK: u16 = 19;
pub(crate) const RTM_NEWLINK: u16 = 16;
pub(crate) const RTM_NEWADDR: u16 = 20;
pub(crate) const RTM_DELADDR: u16 = 21;
pub(crate) const RTM_GETADDR: u16 = 22;
pub(crate) const RTM_NEWROUTE: u16 = 24;
pub(crate) const RTM_GETROUTE: u16 = 26;
pub(crate) const RTM_NEWLINKPROP: u16 = 108;
pub(crate) const RTM_DELLINKPROP: u16 = 109;
/// Return the FIB entry that matched, not a route computed for a packet (Linux 4.13+).
const RTM_F_FIB_MATCH: u32 = 0x2000;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
/// `rtm_type`s of routes that deliver nowhere: an admin reserving a range.
pub(crate) const RTN_BLACKHOLE: u8 = 6;
pub(crate) const RTN_UNREACHABLE: u8 = 7;
pub(crate) const RTN_PROHIBIT: u8 = 8;
pub(crate) const RTN_THROW: u8 = 9;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

pub(crate) const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;

// Link and address attribute types (u16, as the kernel's headers and libc define them).
pub(crate) use libc::{
    IFA_ADDRESS, IFA_LOCAL, IFLA_ADDRESS, IFLA_ALT_IFNAME, IFLA_CARRIER, IFLA_EXT_MASK, IFLA_GROUP,
    IFLA_IFALIAS, IFLA_IFNAME, IFLA_INFO_DATA, IFLA_INFO_KIND, IFLA_LINKINFO, IFLA_MASTER, IFLA_MTU,
    IFLA_PROP_LIST,
};
const IFLA_TUN_OWNER: u16 = 1;
const IFLA_TUN_TYPE: u16 = 3;
const IFLA_TUN_GROUP: u16 = 2;
const IFLA_TUN_PERSIST: u16 = 6;
const IFLA_TUN_NUM_QUEUES: u16 = 8;
const IFLA_TUN_NUM_DISABLED_QUEUES: u16 = 9;
/// Skip statistics in link replies: a third of their size, and we never read them.
pub(crate) const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
pub(crate) const IFF_UP: u32 = 0x1;
const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);
const NLA_F_NESTED: u16 = 0x8000;
const HDR_LEN: usize = 16;
/// Address families, as `ifaddrmsg` and `rtmsg` carry them.
pub(crate) const AF_INET: u8 = 2;
pub(crate) const AF_INET6: u8 = 10;
/// The receive buffer: the kernel's dump messages are at most a page or two; 64 KiB never truncates.
const RECV_BUF_LEN: usize = 64 * 1024;
/// `RTNLGRP_IPV6_IFADDR` as a bind mask: the namespace's IPv6 address notifications.
const GROUP_IPV6_IFADDR: u32 = 1 << (9 - 1);
const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;

/// Why a reply could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParseError {
    #[error("netlink message shorter than its header or its declared length")]
    Short,
    #[error("netlink attribute length out of bounds")]
    BadAttr,
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// An append-only netlink request (empty by default: the payload of a nested attribute).
#[derive(Default)]
pub(crate) struct Msg {
    buf: Vec<u8>,
    overflow: bool,
}

impl Msg {
    /// A request header; the length is filled in by [`Msg::finish`].
    pub(crate) fn new(ty: u16, flags: u16, seq: u32) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        Msg { buf, overflow: false }
    }

    /// `struct ifinfomsg`, AF_UNSPEC.
    pub(crate) fn ifinfomsg(mut self, index: u32, flags: u32, change: u32) -> Self {
        self.buf.extend_from_slice(&[0, 0, 0, 0]); // family, pad, type
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&change.to_ne_bytes());
        self
    }

    /// `struct ifaddrmsg`.
    pub(crate) fn ifaddrmsg(mut self, family: u8, prefixlen: u8, index: u32) -> Self {
        self.buf.extend_from_slice(&[family, prefixlen, 0, 0]); // family, prefixlen, flags, scope
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self
    }

    /// One attribute with its payload, padded to 4 bytes.
    pub(crate) fn attr(mut self, ty: u16, data: &[u8]) -> Self {
        let Ok(len) = u16::try_from(4 + data.len()) else {
            self.overflow = true;
            return self;
        };
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// A NUL-terminated string attribute (`NLA_STRING` wants the NUL for names).
    pub(crate) fn attr_str(self, ty: u16, s: &str) -> Self {
        self.attr(ty, &[s.as_bytes(), b"\0"].concat())
    }

    /// A u32 attribute.
    pub(crate) fn attr_u32(self, ty: u16, v: u32) -> Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// An IP address attribute (4 or 16 bytes).
    pub(crate) fn attr_ip(self, ty: u16, ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => self.attr(ty, &a.octets()),
            IpAddr::V6(a) => self.attr(ty, &a.octets()),
        }
    }

    /// `outer { inner = s }`: `IFLA_LINKINFO { IFLA_INFO_KIND }` (a dump filter) or
    /// `IFLA_PROP_LIST { IFLA_ALT_IFNAME }` (an alternative name).
    pub(crate) fn attr_nested_str(self, outer: u16, inner: u16, s: &str) -> Self {
        let inner = Msg::default().attr_str(inner, s);
        let overflow = inner.overflow;
        let mut m = self.attr(outer | NLA_F_NESTED, &inner.buf);
        m.overflow |= overflow;
        m
    }

    /// The finished message, or `None` if it would not fit netlink's length fields.
    pub(crate) fn finish(mut self) -> Option<Vec<u8>> {
        let len = u32::try_from(self.buf.len()).ok()?;
        if self.overflow {
            return None;
        }
        self.buf.get_mut(..4)?.copy_from_slice(&len.to_ne_bytes());
        Some(self.buf)
    }
}

/// A netlink message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) ty: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Splits a receive buffer into messages: (header, payload).
pub(crate) fn messages(mut buf: &[u8]) -> impl Iterator<Item = Result<(Header, &[u8]), ParseError>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let item = (|| {
            let len =
                usize::try_from(u32_at(buf, 0).ok_or(ParseError::Short)?).map_err(|_| ParseError::Short)?;
            if len < HDR_LEN || len > buf.len() {
                return Err(ParseError::Short);
            }
            let hdr = Header {
                ty: u16_at(buf, 4).ok_or(ParseError::Short)?,
                flags: u16_at(buf, 6).ok_or(ParseError::Short)?,
                seq: u32_at(buf, 8).ok_or(ParseError::Short)?,
            };
            let payload = buf.get(HDR_LEN..len).ok_or(ParseError::Short)?;
            buf = buf.get(align4(len).min(buf.len())..).unwrap_or_default();
            Ok((hdr, payload))
        })();
        if item.is_err() {
            buf = &[];
        }
        Some(item)
    })
}

/// Splits an attribute area into (type without flag bits, payload).
pub(crate) fn attrs(mut buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), ParseError>> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let item = (|| {
            let len = usize::from(u16_at(buf, 0).ok_or(ParseError::BadAttr)?);
            let ty = u16_at(buf, 2).ok_or(ParseError::BadAttr)? & NLA_TYPE_MASK;
            if len < 4 || len > buf.len() {
                return Err(ParseError::BadAttr);
            }
            let data = buf.get(4..len).ok_or(ParseError::BadAttr)?;
            buf = buf.get(align4(len).min(buf.len())..).unwrap_or_default();
            Ok((ty, data))
        })();
        if item.is_err() {
            buf = &[];
        }
        Some(item)
    })
}

/// What the helper reads of a tun device's link info.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TunInfo {
    /// 1 = tun, 2 = tap.
    pub(crate) dev_type: u8,
    /// The owner uid, if one is set.
    pub(crate) owner: Option<u32>,
    /// The group gid, if one is set.
    pub(crate) group: Option<u32>,
    /// Whether it outlives its fds.
    pub(crate) persist: bool,
    /// Queues attached now, enabled and disabled (`IFLA_TUN_NUM_QUEUES` + `…_DISABLED_QUEUES`): the
    /// number of open fds that hold the tap. The kernel reports it for multi-queue taps only.
    pub(crate) queues: Option<u32>,
}

/// What the helper reads of a link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) index: u32,
    pub(crate) flags: u32,
    pub(crate) name: Option<String>,
    pub(crate) mtu: Option<u32>,
    pub(crate) master: Option<u32>,
    pub(crate) group: u32,
    pub(crate) alias: Option<String>,
    pub(crate) mac: Option<[u8; 6]>,
    pub(crate) kind: Option<String>,
    pub(crate) tun: Option<TunInfo>,
    /// `IFLA_CARRIER`: a tap has carrier while some fd holds it (its holder can also turn it off).
    pub(crate) carrier: Option<bool>,
    /// Alternative names (`IFLA_PROP_LIST`): a tap's claim on a VM slot's local addresses.
    pub(crate) altnames: Vec<String>,
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

fn string(data: &[u8]) -> Option<String> {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8(data.get(..end)?.to_vec()).ok()
}

/// Parses an `RTM_NEWLINK` payload (`ifinfomsg` + attributes).
pub(crate) fn parse_link(payload: &[u8]) -> Result<Link, ParseError> {
    let mut link = Link {
        index: u32_at(payload, 4).ok_or(ParseError::Short)?,
        flags: u32_at(payload, 8).ok_or(ParseError::Short)?,
        ..Link::default()
    };
    for a in attrs(payload.get(IFINFOMSG_LEN..).ok_or(ParseError::Short)?) {
        let (ty, data) = a?;
        match ty {
            IFLA_IFNAME => link.name = string(data),
            IFLA_MTU => link.mtu = u32_at(data, 0),
            IFLA_MASTER => link.master = u32_at(data, 0).filter(|&m| m != 0),
            IFLA_GROUP => link.group = u32_at(data, 0).unwrap_or(0),
            IFLA_IFALIAS => link.alias = string(data),
            IFLA_ADDRESS => link.mac = data.try_into().ok(),
            IFLA_CARRIER => link.carrier = data.first().map(|&c| c != 0),
            IFLA_PROP_LIST => {
                for b in attrs(data) {
                    let (ty, data) = b?;
                    if ty == IFLA_ALT_IFNAME {
                        link.altnames.extend(string(data));
                    }
                }
            }
            IFLA_LINKINFO => {
                for b in attrs(data) {
                    let (ty, data) = b?;
                    match ty {
                        IFLA_INFO_KIND => link.kind = string(data),
                        IFLA_INFO_DATA => link.tun = Some(parse_tun(data)?),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    // IFLA_INFO_DATA means tun data only for kind "tun".
    if link.kind.as_deref() != Some("tun") {
        link.tun = None;
    }
    Ok(link)
}

fn parse_tun(data: &[u8]) -> Result<TunInfo, ParseError> {
    let mut tun = TunInfo::default();
    for a in attrs(data) {
        let (ty, data) = a?;
        match ty {
            IFLA_TUN_TYPE => tun.dev_type = data.first().copied().unwrap_or(0),
            IFLA_TUN_OWNER => tun.owner = u32_at(data, 0),
            IFLA_TUN_GROUP => tun.group = u32_at(data, 0),
            IFLA_TUN_PERSIST => tun.persist = data.first().is_some_and(|&b| b != 0),
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
    pub(crate) protocol: u8,
    pub(crate) rtm_type: u8,
    pub(crate) table: u32,
    pub(crate) oif: Option<u32>,
}

/// Parses an `RTM_NEWROUTE` payload (`rtmsg` + attributes).
pub(crate) fn parse_route(payload: &[u8]) -> Result<Route, ParseError> {
    let head = payload.get(..RTMSG_LEN).ok_or(ParseError::Short)?;
    let mut r = Route {
        dst_len: head.get(1).copied().unwrap_or(0),
        protocol: head.get(5).copied().unwrap_or(0),
        rtm_type: head.get(7).copied().unwrap_or(0),
        table: u32::from(head.get(4).copied().unwrap_or(0)),
        oif: None,
    };
    for a in attrs(payload.get(RTMSG_LEN..).ok_or(ParseError::Short)?) {
        let (ty, data) = a?;
        match ty {
            RTA_OIF => r.oif = u32_at(data, 0),
            RTA_TABLE => r.table = u32_at(data, 0).unwrap_or(r.table),
            _ => {}
        }
    }
    Ok(r)
}

const RTMSG_LEN: usize = 12;

/// One receive buffer of replies to `seq`: each message of that sequence number goes to `each` until
/// the ACK or error (or `NLMSG_DONE` for a dump) ends the exchange: `Some(result)`; `None` when the
/// buffer ended first and more is to be received. The netlink fuzz target (`checks/`) drives this.
pub(crate) fn take_replies(
    buf: &[u8],
    seq: u32,
    each: &mut dyn FnMut(&Header, &[u8]) -> NlResult<()>,
) -> Option<NlResult<()>> {
    for m in messages(buf) {
        let Ok((hdr, payload)) = m else {
            return Some(Err(Errno::EPROTO));
        };
        if hdr.seq != seq {
            continue; // a late reply to an earlier request
        }
        match hdr.ty {
            // An `NLMSG_ERROR` payload starts with the negated errno: 0 for an ACK.
            NLMSG_ERROR => {
                let errno = u32_at(payload, 0).map(|e| i32::from_ne_bytes(e.to_ne_bytes()));
                return Some(match errno {
                    Some(0) => Ok(()),
                    Some(e) => Err(Errno::from_raw(e.saturating_neg())),
                    None => Err(Errno::EPROTO),
                });
            }
            NLMSG_DONE => return Some(Ok(())),
            _ => {
                if let Err(e) = each(&hdr, payload) {
                    return Some(Err(e));
                }
            }
        }
        if hdr.flags & NLM_F_MULTI == 0 {
            return Some(Ok(()));
        }
    }
    None
}

/// A bound `NETLINK_ROUTE` socket (close-on-exec, plus `flags`), subscribed to the multicast `groups`.
fn route_socket(flags: SockFlag, groups: u32) -> io::Result<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | flags,
        SockProtocol::NetlinkRoute,
    )?;
    socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
    Ok(fd)
}

/// A route netlink socket with its sequence counter and receive buffer, and a second one that follows
/// the namespace's IPv6 addresses.
pub(crate) struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
    /// Non-blocking, subscribed to the kernel's IPv6 address notifications.
    events: OwnedFd,
    /// The namespace's IPv6 addresses as (address, ifindex): dumped at the first use, then kept up to
    /// date from `events`.
    inet6: BTreeSet<(u128, u32)>,
    /// `inet6` needs a fresh dump: before the first use, and after the kernel dropped a notification.
    inet6_stale: bool,
}

/// A netlink failure: the kernel's errno, or a reply we could not make sense of (reported as EPROTO).
pub(crate) type NlResult<T> = Result<T, Errno>;

impl Netlink {
    /// Opens and binds a `NETLINK_ROUTE` socket.
    pub(crate) fn open() -> io::Result<Self> {
        let fd = route_socket(SockFlag::empty(), 0)?;
        // Strict checking (Linux 4.20+): the kernel filters address dumps by ifindex, and refuses
        // malformed get requests instead of guessing.
        crate::sys::netlink_strict_check(fd.as_fd())?;
        let events = route_socket(SockFlag::SOCK_NONBLOCK, GROUP_IPV6_IFADDR)?;
        Ok(Netlink {
            fd,
            seq: 1,
            buf: vec![0; RECV_BUF_LEN],
            events,
            inet6: BTreeSet::new(),
            inet6_stale: true,
        })
    }

    /// One request and its replies: `build` makes the request for a fresh sequence number, and each
    /// reply to that number goes to `each` until the ACK/error (or `NLMSG_DONE` for a dump).
    fn exchange(
        &mut self,
        build: impl FnOnce(u32) -> Msg,
        each: &mut dyn FnMut(&Header, &[u8]) -> NlResult<()>,
    ) -> NlResult<()> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        let msg = build(seq).finish().ok_or(Errno::EMSGSIZE)?;
        if socket::send(self.fd.as_raw_fd(), &msg, MsgFlags::empty())? != msg.len() {
            return Err(Errno::EMSGSIZE);
        }
        loop {
            let n = socket::recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_TRUNC)?;
            let buf = self.buf.get(..n).ok_or(Errno::EMSGSIZE)?; // MSG_TRUNC: n > len means truncated
            if let Some(done) = take_replies(buf, seq, each) {
                return done;
            }
        }
    }

    /// Sends a request built by `build(seq)` and waits for its ACK.
    pub(crate) fn request(&mut self, build: impl FnOnce(u32) -> Msg) -> NlResult<()> {
        self.exchange(build, &mut |_, _| Ok(()))
    }

    /// `RTM_GETLINK` by index or by name; `ENODEV` if there is none.
    pub(crate) fn get_link(&mut self, index: u32, name: Option<&str>) -> NlResult<Link> {
        let build = |seq| {
            let msg = Msg::new(RTM_GETLINK, 0, seq)
                .ifinfomsg(index, 0, 0)
                .attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
            match name {
                Some(name) => msg.attr_str(IFLA_IFNAME, name),
                None => msg,
            }
        };
        let mut found = None;
        self.exchange(build, &mut |hdr, payload| {
            if hdr.ty == RTM_NEWLINK {
                found = Some(parse_link(payload).map_err(|_| Errno::EPROTO)?);
            }
            Ok(())
        })?;
        found.ok_or(Errno::ENODEV)
    }

    /// Dumps links of one kind (the kernel filters by `IFLA_INFO_KIND`), calling `each` on every one.
    pub(crate) fn dump_links(&mut self, kind: Option<&str>, each: &mut dyn FnMut(&Link)) -> NlResult<()> {
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
    pub(crate) fn route_lookup(&mut self, ip: IpAddr) -> NlResult<Option<Route>> {
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
    pub(crate) fn dump_addrs(&mut self, family: u8, index: u32, each: &mut dyn FnMut(&Addr)) -> NlResult<()> {
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

    /// An IPv6 address inside the /96 that holds `net`, on an interface other than `except`. The
    /// addresses are dumped once, then followed through the kernel's notifications, so a call costs
    /// what changed since the last one, not what the namespace holds. Notifications queued during a
    /// dump are applied after it: each says present or absent, so applying them in order ends in the
    /// kernel's state. After a dropped notification (`ENOBUFS`) the next call dumps again; if some are
    /// dropped even during that dump, this answer stands on the dump, as a check without
    /// notifications would.
    pub(crate) fn inet6_inside(&mut self, net: Ipv6Addr, except: u32) -> NlResult<Option<(Ipv6Addr, u32)>> {
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
            self.dump_addrs(AF_INET6, 0, &mut |a| {
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

    /// `rtm_type` of a local (host) route; `rtm_protocol` of a route the kernel added.
    const RTN_LOCAL: u8 = 2;
    const RTPROT_KERNEL: u8 = 2;

    #[test]
    fn builder_lays_out_header_and_aligned_attrs() {
        let m = Msg::new(RTM_SETLINK, NLM_F_ACK, 7)
            .ifinfomsg(5, IFF_UP, IFF_UP)
            .attr_str(IFLA_IFALIAS, "abc");
        let b = m.finish().unwrap();
        assert_eq!(b.len(), 16 + 16 + 8);
        assert_eq!(u32_at(&b, 0), Some(40));
        assert_eq!(u16_at(&b, 4), Some(RTM_SETLINK));
        assert_eq!(u16_at(&b, 6), Some(NLM_F_ACK | NLM_F_REQUEST));
        assert_eq!(u32_at(&b, 8), Some(7));
        assert_eq!(u32_at(&b, 20), Some(5));
        assert_eq!(u16_at(&b, 32), Some(8)); // 4 + "abc\0"
        assert_eq!(&b[36..40], b"abc\0");
    }

    #[test]
    fn oversized_attribute_is_refused_not_wrapped() {
        assert!(
            Msg::new(RTM_SETLINK, 0, 1)
                .attr(IFLA_IFALIAS, &vec![b'a'; 70_000])
                .finish()
                .is_none()
        );
    }

    fn link_msg() -> Vec<u8> {
        let tun = Msg {
            buf: Vec::new(),
            overflow: false,
        }
        .attr(IFLA_TUN_TYPE, &[2])
        .attr_u32(IFLA_TUN_OWNER, 65534)
        .attr(IFLA_TUN_PERSIST, &[0]);
        let info = Msg {
            buf: Vec::new(),
            overflow: false,
        }
        .attr_str(IFLA_INFO_KIND, "tun")
        .attr(IFLA_INFO_DATA, &tun.buf);
        Msg::new(RTM_NEWLINK, 0, 3)
            .ifinfomsg(9, IFF_UP, 0)
            .attr_str(IFLA_IFNAME, "tap0")
            .attr_u32(IFLA_MTU, 1500)
            .attr_u32(IFLA_MASTER, 4)
            .attr_u32(IFLA_GROUP, 42)
            .attr(IFLA_ADDRESS, &[0xfe, 1, 2, 3, 4, 5])
            .attr(IFLA_LINKINFO | NLA_F_NESTED, &info.buf)
            .finish()
            .unwrap()
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
        assert_eq!(link.index, 9);
        assert_eq!(link.name.as_deref(), Some("tap0"));
        assert_eq!((link.mtu, link.master, link.group), (Some(1500), Some(4), 42));
        assert_eq!(link.mac, Some([0xfe, 1, 2, 3, 4, 5]));
        assert!(link.is_tap());
        assert_eq!(link.tun.as_ref().unwrap().owner, Some(65534));
    }

    #[test]
    fn truncated_replies_are_errors_not_panics() {
        let full = link_msg();
        for cut in 0..full.len() {
            let _ = parse_all(&full[..cut]);
        }
        assert_eq!(parse_all(&full), Some(Ok(())));
        let mut bad = full.clone();
        bad[32] = 0xff; // first attribute claims 255+ bytes
        bad[33] = 0xff;
        assert_eq!(parse_link(payload(&bad)), Err(ParseError::BadAttr));
        assert_eq!(parse_all(&bad), Some(Err(Errno::EPROTO)));
        assert_eq!(parse_all(&[20, 0, 0, 0]), Some(Err(Errno::EPROTO)));
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
            protocol: RTPROT_KERNEL,
            rtm_type: RTN_LOCAL,
            table: 255,
            oif: Some(7),
        };
        assert_eq!(route, want);
        let full = route_msg();
        for cut in 0..full.len() {
            let _ = parse_all(&full[..cut]);
        }
    }

    #[test]
    fn error_payloads() {
        let mut b = Msg::new(NLMSG_ERROR, 0, 1).finish().unwrap();
        b.extend_from_slice(&(-19i32).to_ne_bytes());
        let len = u32::try_from(b.len()).unwrap();
        b[..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(parse_all(&b), Some(Err(Errno::ENODEV)));
        // A reply to another request is skipped, and then the buffer ends: receive again.
        b[8] = 2;
        assert_eq!(parse_all(&b[..b.len()]).map(|_| ()), Some(()));
        assert_eq!(take_replies(&b, 1, &mut |_, _| Ok(())), None);
    }
}
