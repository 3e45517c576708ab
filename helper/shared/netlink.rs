//! Hand-written rtnetlink: the few messages both helpers send, and a parser for the replies they read
//! (the session helper's lookups, dumps and address messages are `helper/src/lookup.rs`).
//!
//! Encoding is an append-only builder; parsing never trusts a length it has not checked against the
//! buffer (the receive path is fuzzed: `checks/` compiles this very file for the netlink fuzz target).
//! Every link write names an `IfIndex`, never 0 and made only by the link parser; `ifi_index == 0` with
//! `IFLA_GROUP` changes every link in that group, which only the batch delete does (`ops::delete_batch`).

use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};

pub(crate) const RTM_DELLINK: u16 = 17;
pub(crate) const RTM_GETLINK: u16 = 18;
pub(crate) const RTM_SETLINK: u16 = 19;
pub(crate) const RTM_NEWLINK: u16 = 16;
/// Return the FIB entry that matched, not a route computed for a packet (Linux 4.13+).
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

pub(crate) const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
pub(crate) const NLM_F_ACK: u16 = 0x4;

// Link and address attribute types (u16, as the kernel's headers and libc define them).
pub(crate) use libc::{
    IFLA_ADDRESS, IFLA_EXT_MASK, IFLA_IFNAME, IFLA_INFO_KIND, IFLA_LINKINFO, IFLA_MASTER, IFLA_MTU,
};
/// Skip statistics in link replies: a third of their size, and we never read them.
pub(crate) const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
pub(crate) const IFF_UP: u32 = 0x1;
const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);
const HDR_LEN: usize = 16;
/// The receive buffer: the kernel's dump messages are at most a page or two; 64 KiB never truncates.
pub(crate) const RECV_BUF_LEN: usize = 64 * 1024;
const IFINFOMSG_LEN: usize = 16;

/// Why a reply could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParseError {
    #[error("netlink message shorter than its header or its declared length")]
    Short,
    #[error("netlink attribute length out of bounds")]
    BadAttr,
    #[error("a link with ifindex 0")]
    NoIndex,
}

pub(crate) fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// An append-only netlink request (empty by default: the payload of a nested attribute).
#[derive(Default)]
pub(crate) struct Msg {
    pub(crate) buf: Vec<u8>,
    pub(crate) overflow: bool,
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

pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
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

pub(crate) fn string(data: &[u8]) -> Option<String> {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8(data.get(..end)?.to_vec()).ok()
}

/// An interface index the kernel reported: never 0 (which a request reads as "no link" or "any"), and
/// minted only by the link parser, so every link write names a link the kernel told us of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct IfIndex(NonZeroU32);

impl IfIndex {
    pub(crate) fn get(self) -> u32 {
        self.0.get()
    }
}

impl std::fmt::Display for IfIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What both helpers read of a link: enough to find a bridge and attach a new tap to it. The session
/// helper reads more of the same reply (`helper/src/lookup.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) index: IfIndex,
    pub(crate) name: Option<String>,
    pub(crate) mtu: Option<u32>,
    pub(crate) master: Option<IfIndex>,
    pub(crate) mac: Option<[u8; 6]>,
    pub(crate) kind: Option<String>,
}

/// Parses an `RTM_NEWLINK` payload (`ifinfomsg` + attributes).
pub(crate) fn parse_link(payload: &[u8]) -> Result<Link, ParseError> {
    parse_link_with(payload, &mut |_, _| Ok(()))
}

/// What [`parse_link_with`] hands every top-level attribute to: (type, payload).
pub(crate) type MoreAttrs<'a> = dyn FnMut(u16, &[u8]) -> Result<(), ParseError> + 'a;

/// [`parse_link`], handing every top-level attribute to `more` as well.
pub(crate) fn parse_link_with(payload: &[u8], more: &mut MoreAttrs<'_>) -> Result<Link, ParseError> {
    let index = u32_at(payload, 4).ok_or(ParseError::Short)?;
    let mut link = Link {
        index: IfIndex(NonZeroU32::new(index).ok_or(ParseError::NoIndex)?),
        name: None,
        mtu: None,
        master: None,
        mac: None,
        kind: None,
    };
    for a in attrs(payload.get(IFINFOMSG_LEN..).ok_or(ParseError::Short)?) {
        let (ty, data) = a?;
        match ty {
            IFLA_IFNAME => link.name = string(data),
            IFLA_MTU => link.mtu = u32_at(data, 0),
            IFLA_MASTER => link.master = u32_at(data, 0).and_then(NonZeroU32::new).map(IfIndex),
            IFLA_ADDRESS => link.mac = data.try_into().ok(),
            IFLA_LINKINFO => {
                for b in attrs(data) {
                    if let (IFLA_INFO_KIND, data) = b? {
                        link.kind = string(data);
                    }
                }
            }
            _ => {}
        }
        more(ty, data)?;
    }
    Ok(link)
}

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
            NLMSG_ERROR => return Some(ack_result(payload)),
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

/// An `NLMSG_ERROR` payload: it starts with the negated errno, 0 for an ACK.
fn ack_result(payload: &[u8]) -> NlResult<()> {
    match u32_at(payload, 0).map(|e| i32::from_ne_bytes(e.to_ne_bytes())) {
        Some(0) => Ok(()),
        Some(e) => Err(Errno::from_raw(e.saturating_neg())),
        None => Err(Errno::EPROTO),
    }
}

/// The acknowledgements in one receive buffer of a [`Netlink::pipeline`] whose first sequence number
/// is `first`: each answers request `seq - first`; anything else (a late reply) is skipped.
pub(crate) fn take_acks(buf: &[u8], first: u32, results: &mut [Option<NlResult<()>>]) -> NlResult<()> {
    for m in messages(buf) {
        let (hdr, payload) = m.map_err(|_| Errno::EPROTO)?;
        let i = usize::try_from(hdr.seq.wrapping_sub(first)).unwrap_or(usize::MAX);
        if let (NLMSG_ERROR, Some(slot)) = (hdr.ty, results.get_mut(i)) {
            *slot = Some(ack_result(payload));
        }
    }
    Ok(())
}

/// A bound `NETLINK_ROUTE` socket (close-on-exec, plus `flags`), subscribed to the multicast `groups`.
pub(crate) fn route_socket(flags: SockFlag, groups: u32) -> io::Result<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | flags,
        SockProtocol::NetlinkRoute,
    )?;
    socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
    Ok(fd)
}

/// A route netlink socket with its sequence counter and receive buffer.
pub(crate) struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
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
        Ok(Netlink {
            fd,
            seq: 1,
            buf: vec![0; RECV_BUF_LEN],
        })
    }

    /// One request and its replies: `build` makes the request for a fresh sequence number, and each
    /// reply to that number goes to `each` until the ACK/error (or `NLMSG_DONE` for a dump).
    pub(crate) fn exchange(
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

    /// Several requests in one datagram, one round trip: rtnetlink handles a datagram's messages in
    /// order, each on its own (a refused one does not stop the next), and acknowledges each (this sets
    /// `NLM_F_ACK` and the sequence numbers). Each request's result, in order; `Err` when the exchange
    /// itself failed, and then any of them may have been applied.
    pub(crate) fn pipeline(&mut self, msgs: Vec<Msg>) -> NlResult<Vec<NlResult<()>>> {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.seq.wrapping_add(1);
        let mut results = vec![None; msgs.len()];
        let mut datagram = Vec::new();
        for m in msgs {
            self.seq = self.seq.wrapping_add(1);
            let mut b = m.finish().ok_or(Errno::EMSGSIZE)?;
            let flags = u16_at(&b, 6).ok_or(Errno::EMSGSIZE)? | NLM_F_ACK;
            b.get_mut(6..8)
                .ok_or(Errno::EMSGSIZE)?
                .copy_from_slice(&flags.to_ne_bytes());
            b.get_mut(8..12)
                .ok_or(Errno::EMSGSIZE)?
                .copy_from_slice(&self.seq.to_ne_bytes());
            datagram.extend_from_slice(&b);
        }
        if socket::send(self.fd.as_raw_fd(), &datagram, MsgFlags::empty())? != datagram.len() {
            return Err(Errno::EMSGSIZE);
        }
        while results.iter().any(Option::is_none) {
            let n = socket::recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_TRUNC)?;
            take_acks(self.buf.get(..n).ok_or(Errno::EMSGSIZE)?, first, &mut results)?;
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// Sends a request built by `build(seq)` and waits for its ACK.
    pub(crate) fn request(&mut self, build: impl FnOnce(u32) -> Msg) -> NlResult<()> {
        self.exchange(build, &mut |_, _| Ok(()))
    }

    /// `RTM_GETLINK` by index or by name; `ENODEV` if there is none.
    pub(crate) fn get_link(&mut self, index: Option<IfIndex>, name: Option<&str>) -> NlResult<Link> {
        self.get(index, name, parse_link)
    }

    /// `RTM_GETLINK` by index or by name, the reply read by `parse`; `ENODEV` if there is none.
    pub(crate) fn get<T>(
        &mut self,
        index: Option<IfIndex>,
        name: Option<&str>,
        parse: fn(&[u8]) -> Result<T, ParseError>,
    ) -> NlResult<T> {
        let build = |seq| {
            let msg = Msg::new(RTM_GETLINK, 0, seq)
                .ifinfomsg(index.map_or(0, IfIndex::get), 0, 0)
                .attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
            match name {
                Some(name) => msg.attr_str(IFLA_IFNAME, name),
                None => msg,
            }
        };
        let mut found = None;
        self.exchange(build, &mut |hdr, payload| {
            if hdr.ty == RTM_NEWLINK {
                found = Some(parse(payload).map_err(|_| Errno::EPROTO)?);
            }
            Ok(())
        })?;
        found.ok_or(Errno::ENODEV)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_lays_out_header_and_aligned_attrs() {
        let m = Msg::new(RTM_SETLINK, NLM_F_ACK, 7)
            .ifinfomsg(5, IFF_UP, IFF_UP)
            .attr_str(IFLA_IFNAME, "abc");
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
                .attr(IFLA_IFNAME, &vec![b'a'; 70_000])
                .finish()
                .is_none()
        );
    }

    /// A tap's `RTM_NEWLINK` reply (the session helper's tests add what it reads too).
    pub(crate) fn link_msg(more: impl FnOnce(Msg) -> Msg) -> Vec<u8> {
        let info = Msg::default()
            .attr_str(IFLA_INFO_KIND, "tun")
            .attr(libc::IFLA_INFO_DATA, &Msg::default().attr(3, &[2]).buf);
        let m = Msg::new(RTM_NEWLINK, 0, 3)
            .ifinfomsg(9, IFF_UP, 0)
            .attr_str(IFLA_IFNAME, "tap0")
            .attr_u32(IFLA_MTU, 1500)
            .attr_u32(IFLA_MASTER, 4)
            .attr(IFLA_ADDRESS, &[0xfe, 1, 2, 3, 4, 5])
            .attr(IFLA_LINKINFO | 0x8000, &info.buf); // NLA_F_NESTED
        more(m).finish().unwrap()
    }

    pub(crate) fn payload(msg: &[u8]) -> &[u8] {
        messages(msg).next().unwrap().unwrap().1
    }

    fn parse_all(buf: &[u8]) -> Option<NlResult<()>> {
        let seq = u32_at(buf, 8).unwrap_or(0);
        take_replies(buf, seq, &mut |_, p| {
            parse_link(p).map(drop).map_err(|_| Errno::EPROTO)
        })
    }

    #[test]
    fn parses_a_link() {
        let link = parse_link(payload(&link_msg(|m| m))).unwrap();
        assert_eq!(link.index.get(), 9);
        assert_eq!(link.name.as_deref(), Some("tap0"));
        assert_eq!((link.mtu, link.master.map(IfIndex::get)), (Some(1500), Some(4)));
        assert_eq!(link.mac, Some([0xfe, 1, 2, 3, 4, 5]));
        assert_eq!(link.kind.as_deref(), Some("tun"));
    }

    /// Ifindex 0 names no link (a request reads it as "by name" or "any"): a reply with it is refused,
    /// and a master of 0 is no master.
    #[test]
    fn ifindex_zero_is_no_link() {
        let mut msg = link_msg(|m| m.attr_u32(IFLA_MASTER, 0));
        assert_eq!(parse_link(payload(&msg)).unwrap().master, None);
        msg[20..24].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(parse_link(payload(&msg)), Err(ParseError::NoIndex));
    }

    /// A pipeline's answers: each ACK or error goes to its own request by sequence number, in
    /// whatever order and buffer they come; others are skipped, and a truncated one is an error.
    #[test]
    fn pipeline_acks_go_to_their_own_requests() {
        let ack = |seq: u32, errno: i32| {
            let mut b = Msg::new(NLMSG_ERROR, 0, seq).attr(0, &[]).finish().unwrap();
            b.truncate(16);
            b.extend_from_slice(&(-errno).to_ne_bytes());
            let len = u32::try_from(b.len()).unwrap();
            b[..4].copy_from_slice(&len.to_ne_bytes());
            b
        };
        let mut results = vec![None; 3];
        let buf = [ack(12, 0), ack(99, 0), ack(10, 0)].concat();
        take_acks(&buf, 10, &mut results).unwrap();
        assert_eq!(results, [Some(Ok(())), None, Some(Ok(()))]);
        take_acks(&ack(11, 13), 10, &mut results).unwrap();
        assert_eq!(results[1], Some(Err(Errno::EACCES)));
        // Sequence numbers wrap: the request after u32::MAX is 0.
        let mut wrapped = vec![None; 2];
        take_acks(&[ack(0, 17), ack(u32::MAX, 0)].concat(), u32::MAX, &mut wrapped).unwrap();
        assert_eq!(wrapped, [Some(Ok(())), Some(Err(Errno::EEXIST))]);
        let cut = ack(10, 0);
        assert_eq!(
            take_acks(&cut[..cut.len() - 1], 10, &mut results),
            Err(Errno::EPROTO)
        );
    }

    #[test]
    fn truncated_replies_are_errors_not_panics() {
        let full = link_msg(|m| m);
        // Cut anywhere, the message is shorter than its header says: an error, never a reply read
        // (an empty buffer is no reply yet: receive again).
        assert_eq!(parse_all(&[]), None);
        for cut in 1..full.len() {
            assert_eq!(parse_all(&full[..cut]), Some(Err(Errno::EPROTO)), "cut at {cut}");
        }
        // A payload cut inside its header or an attribute is an error; cut between attributes it
        // reads as a link without the rest, never as the whole link.
        let whole = parse_link(payload(&full)).unwrap();
        let p = payload(&full);
        for cut in 0..p.len() {
            match parse_link(&p[..cut]) {
                Ok(link) => assert_ne!(link, whole, "cut at {cut}"),
                Err(e) => assert!(
                    cut < IFINFOMSG_LEN || e == ParseError::BadAttr,
                    "cut at {cut}: {e:?}"
                ),
            }
        }
        assert_eq!(parse_link(&p[..IFINFOMSG_LEN - 1]), Err(ParseError::Short));
        assert_eq!(parse_all(&full), Some(Ok(())));
        let mut bad = full.clone();
        bad[32] = 0xff; // first attribute claims 255+ bytes
        bad[33] = 0xff;
        assert_eq!(parse_link(payload(&bad)), Err(ParseError::BadAttr));
        assert_eq!(parse_all(&bad), Some(Err(Errno::EPROTO)));
        assert_eq!(parse_all(&[20, 0, 0, 0]), Some(Err(Errno::EPROTO)));
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
        assert_eq!(take_replies(&b, 1, &mut |_, _| Ok(())), None);
        assert_eq!(take_replies(&b, 2, &mut |_, _| Ok(())), Some(Err(Errno::ENODEV)));
        // errno 0 is the ACK; an error message too short for its errno is a protocol error.
        b[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert_eq!(take_replies(&b, 2, &mut |_, _| Ok(())), Some(Ok(())));
        let mut short = Msg::new(NLMSG_ERROR, 0, 1).finish().unwrap();
        short.extend_from_slice(&[0, 0]);
        let len = u32::try_from(short.len()).unwrap();
        short[..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(
            take_replies(&short, 1, &mut |_, _| Ok(())),
            Some(Err(Errno::EPROTO))
        );
        // A late reply to an earlier request, then ours: ours decides.
        let mut late = Msg::new(NLMSG_ERROR, 0, 1).finish().unwrap();
        late.extend_from_slice(&(-1i32).to_ne_bytes());
        let len = u32::try_from(late.len()).unwrap();
        late[..4].copy_from_slice(&len.to_ne_bytes());
        late.extend_from_slice(&b);
        assert_eq!(take_replies(&late, 2, &mut |_, _| Ok(())), Some(Ok(())));
    }
}
