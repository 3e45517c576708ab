//! Messages and framing.
//!
//! One frame is one `SOCK_SEQPACKET` datagram: a version byte, then one postcard-encoded message, and
//! nothing after it. A frame is at most [`MAX_FRAME`] bytes. A tap is never named: requests that act on
//! one carry an [`FdIndex`] into the fds (`SCM_RIGHTS`) of the same datagram.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::addr::{AddrError, Inet4Pair, Inet6Pair};
use crate::name::NameError;

/// The protocol version, the first byte of every frame.
pub const VERSION: u8 = 4;
/// The largest frame either side sends or accepts, version byte included. The largest valid request
/// is far smaller (see the `largest_request_fits` test), and so is the largest reply.
pub const MAX_FRAME: usize = 2048;
/// Queues (fds) a tap may have: vmd's VMs use 1; virtio-net multiqueue rarely wants more than 8.
pub const MAX_QUEUES: u8 = 8;
/// Taps one `DestroyTaps` deletes at most: the kernel's `SCM_MAX_FD`, the most fds one message carries.
pub const MAX_DESTROY: u8 = 253;

/// Index of a tap fd among the `SCM_RIGHTS` fds of the request's own datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct FdIndex(pub u8);

/// Local addresses for the tap of (vm, nic), computed by the helper from the policy's prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct LocalRequest {
    /// The VM's slot (vmd's vm id).
    pub vm: u32,
    /// The interface index within the VM, 0..=126.
    pub nic: u32,
    /// Add the IPv4 /31 (vmd's `IFADDR`).
    pub inet: bool,
    /// Add the IPv6 /96 (vmd's `IFADDR6`, `local inet6`).
    pub inet6: bool,
}

/// Everything vmd's `vm_priv_ifconfig` sets on one VM interface. `None` leaves a setting alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct IfConfig {
    /// Interface description (`IFLA_IFALIAS`): printable ASCII, at most 63 bytes; empty clears it.
    pub description: Option<String>,
    /// Attach to this switch (a bridge the policy grants).
    pub switch: Option<String>,
    /// Routing domain (VRF) for a tap that is not on a switch; 0 leaves it in the default table.
    pub rdomain: Option<u32>,
    /// Interface group, by a name the policy defines and grants.
    pub group: Option<String>,
    /// Bring the tap up (true) or down (false).
    pub up: Option<bool>,
    /// Add the local addresses of (vm, nic).
    pub local: Option<LocalRequest>,
}

/// A request from the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Request {
    /// The first request of a session: answered with [`Response::Hello`].
    Hello,
    /// Create a tap owned by the caller and configure it; the reply carries `queues` fds.
    CreateTap {
        /// Number of queues (fds), 1..=8; more than one makes a multi-queue tap.
        queues: u8,
        /// `IFF_VNET_HDR`, for virtio-net offloads.
        vnet_hdr: bool,
        /// Configuration applied before the fds are handed over (MTU follows `switch`).
        config: IfConfig,
    },
    /// Configure a tap the caller passes, in vmd's order, all or nothing.
    Configure { tap: FdIndex, config: IfConfig },
    /// Does this switch exist (and may the caller use it)? vmd's `IFEXISTS`.
    SwitchExists { switch: String },
    /// Undo configuration on a passed tap: detach, down, no description, group 0, local addresses removed.
    Reset { tap: FdIndex },
    /// The caller's uid, quota and taps in use (what the policy grants is public: `vmpriv whoami`).
    Status,
    /// Remove the caller's own taps that no fd holds any more (a tap's holder can make it persistent
    /// through its fd; such a tap keeps counting against the quota until removed). Replies `Removed`.
    RemoveLeftovers,
    /// Delete the `count` taps whose fds this datagram carries (1 to [`MAX_DESTROY`]): each must be
    /// the caller's, or the request changes nothing. With `more`, further `DestroyTaps` follow in the
    /// same batch: these taps are checked and set aside (reply `Staged`); the message without `more`
    /// deletes every tap of the batch in one kernel batch (reply `Removed`). A session that ends with
    /// a batch set aside deletes nothing and puts the taps back as they were (a killed helper cannot).
    DestroyTaps { count: u8, more: bool },
}

impl Request {
    /// The tap this request acts on, if any: one of its fds ([`Request::fds_expected`] counts them).
    pub fn tap(&self) -> Option<FdIndex> {
        match self {
            Request::Configure { tap, .. } | Request::Reset { tap } => Some(*tap),
            Request::Hello
            | Request::CreateTap { .. }
            | Request::SwitchExists { .. }
            | Request::Status
            | Request::RemoveLeftovers
            | Request::DestroyTaps { .. } => None,
        }
    }

    /// The number of fds the datagram carrying this request must have.
    pub fn fds_expected(&self) -> usize {
        match self {
            Request::DestroyTaps { count, .. } => usize::from(*count),
            _ => usize::from(self.tap().is_some()),
        }
    }

    /// A short name for logs.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Hello => "hello",
            Request::CreateTap { .. } => "create-tap",
            Request::Configure { .. } => "configure",
            Request::SwitchExists { .. } => "switch-exists",
            Request::Reset { .. } => "reset",
            Request::Status => "status",
            Request::RemoveLeftovers => "remove-leftovers",
            Request::DestroyTaps { .. } => "destroy-taps",
        }
    }
}

/// What the helper knows of a tap after a request: read from the kernel, not echoed from the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapInfo {
    /// Interface name: the caller's mark `vpUID-SLOT`, which the helper chose (`TUNSETIFF`).
    pub ifname: String,
    /// Interface index.
    pub ifindex: u32,
    /// Link-layer address (first octet 0xFE on taps the helper creates).
    pub mac: [u8; 6],
    /// MTU.
    pub mtu: u32,
    /// The switch this request named (the tap is on it now).
    pub switch: Option<String>,
    /// The IPv4 /31 this request asked for (added, or the tap's already).
    pub inet: Option<Inet4Pair>,
    /// The IPv6 /96 this request asked for (added, or the tap's already).
    pub inet6: Option<Inet6Pair>,
}

/// The caller as the helper sees it, its quota and its live taps. What the policy grants is public:
/// `vmpriv whoami` reads the policy file itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The caller's uid (the real one of a setuid helper; the peer's, socket-activated).
    pub uid: u32,
    /// The user name the policy matched, if the uid has one.
    pub user: Option<String>,
    /// Live taps the caller may own.
    pub quota: u32,
    /// Live taps the caller owns now, counted from the kernel.
    pub in_use: u32,
}

/// The helper's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Hello`].
    Hello { version: u8 },
    /// A tap was created or acted on. After `CreateTap` the datagram carries its fds.
    Tap(TapInfo),
    /// The switch exists, is a bridge and is granted.
    Switch { name: String, ifindex: u32, mtu: u32 },
    /// Answer to [`Request::Status`].
    Status(Status),
    /// The request was refused or failed; what it changed was undone (docs/design.md, "All or nothing").
    Error(Error),
    /// `RemoveLeftovers` or the last `DestroyTaps` of a batch removed this many of the caller's taps.
    Removed { count: u32 },
    /// A `DestroyTaps` with `more` set this many taps aside for its batch (all so far).
    Staged { count: u32 },
}

/// Why a request failed. "Not allowed" and "does not exist" are the same [`Error::Denied`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Error {
    #[error("denied: the policy does not grant this, or the object does not exist")]
    Denied,
    #[error("quota reached: the caller already owns {limit} live taps")]
    Quota { limit: u32 },
    #[error("invalid request: {0}")]
    Invalid(Invalid),
    #[error("the kernel refused: errno {errno}")]
    Kernel { errno: i32 },
    #[error("unsupported here: {0}")]
    Unsupported(Unsupported),
    #[error("protocol version mismatch: the helper speaks version {supported}")]
    Version { supported: u8 },
}

/// Why a request is invalid: a fault of the request itself, independent of policy and kernel state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Invalid {
    #[error("malformed frame")]
    Malformed,
    #[error("the first request of a session must be Hello")]
    NoHello,
    #[error("switch name: {0}")]
    SwitchName(NameError),
    #[error("interface group: {0}")]
    Group(NameError),
    #[error("description: {0}")]
    Description(NameError),
    #[error("local address: {0}")]
    Address(AddrError),
    #[error("rdomain must be 0 to 255")]
    Rdomain,
    #[error("queues must be 1 to 8")]
    Queues,
    #[error("the request needs {expected} fd(s), the message carried {got}")]
    FdCount { expected: u8, got: u8 },
    #[error("the fd index is out of range")]
    FdIndex,
    #[error("the fd is not a tap (a /dev/net/tun fd attached in tap mode)")]
    NotATap,
    #[error("a tap on a switch takes the switch's routing domain; set rdomain only on a local tap")]
    RdomainOnSwitchedTap,
    #[error("another interface already holds an address in that /31 or /96")]
    AddressInUse,
    #[error("the tap is already attached to another master")]
    OtherMaster,
    #[error("the tap already has a local address of that family (one per family, as in vmd)")]
    AddressAssigned,
}

/// A feature this kernel, build or host set-up lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Unsupported {
    #[error("routing domains need VRF support (CONFIG_NET_VRF) and the configured VRF device")]
    Vrf,
    #[error("multi-queue taps")]
    MultiQueue,
    #[error("IFF_VNET_HDR")]
    VnetHdr,
    #[error("IPv6 is disabled on this interface")]
    Inet6,
    #[error(
        "this session has used every /dev/net/tun fd it opened at start-up (/dev/net/tun is not open to \
         the caller here); start a new session"
    )]
    TunFds,
    /// Any VM on the switch could choose the host's MAC there (design.md, threat model).
    #[error("the switch has no fixed MAC address: ask the admin to fix it (the system log says how)")]
    BridgeMac,
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty frame")]
    Empty,
    #[error("frame larger than {MAX_FRAME} bytes")]
    TooLarge,
    #[error("frame of protocol version {0}, expected {VERSION}")]
    Version(u8),
    #[error("frame does not decode")]
    Malformed,
    #[error("frame has bytes after its message")]
    Trailing,
}

/// Encodes `msg` as one frame.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let out = postcard::to_extend(msg, vec![VERSION]).map_err(|_| FrameError::Malformed)?;
    if out.len() > MAX_FRAME {
        return Err(FrameError::TooLarge);
    }
    Ok(out)
}

/// Decodes one frame: version byte, exactly one message, no trailing bytes (postcard's `from_bytes`
/// would ignore them; vmd's `imsg_get_data` likewise insists on the exact size).
pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, FrameError> {
    if frame.len() > MAX_FRAME {
        return Err(FrameError::TooLarge);
    }
    let (&version, body) = frame.split_first().ok_or(FrameError::Empty)?;
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let (msg, rest) = postcard::take_from_bytes(body).map_err(|_| FrameError::Malformed)?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing);
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{Inet4Prefix, Inet6Prefix, local_inet, local_inet6};

    fn full_config() -> IfConfig {
        IfConfig {
            description: Some("d".repeat(63)),
            switch: Some("s".repeat(15)),
            rdomain: Some(u32::MAX),
            group: Some("g".repeat(15)),
            up: Some(true),
            local: Some(LocalRequest {
                vm: u32::MAX,
                nic: u32::MAX,
                inet: true,
                inet6: true,
            }),
        }
    }

    /// Every variant round-trips, and the largest valid request is far below MAX_FRAME.
    #[test]
    fn every_request_round_trips() {
        let t = FdIndex(0);
        let all = vec![
            Request::Hello,
            Request::CreateTap {
                queues: 8,
                vnet_hdr: true,
                config: full_config(),
            },
            Request::Configure {
                tap: t,
                config: full_config(),
            },
            Request::SwitchExists { switch: "br0".into() },
            Request::Reset { tap: t },
            Request::Status,
        ];
        for req in all {
            let frame = encode(&req).unwrap();
            assert!(frame.len() < 256, "{req:?} is {} bytes", frame.len());
            assert_eq!(decode::<Request>(&frame), Ok(req.clone()));
            assert_eq!(req.fds_expected(), usize::from(req.tap().is_some()));
        }
    }

    #[test]
    fn every_response_round_trips_and_the_largest_fits() {
        let inet = local_inet(Inet4Prefix::DEFAULT, 1, 0).ok();
        let inet6 = local_inet6(Inet4Prefix::DEFAULT, Inet6Prefix::DEFAULT, 1, 0).ok();
        let all = vec![
            Response::Hello { version: VERSION },
            Response::Tap(TapInfo {
                ifname: "tap0".into(),
                ifindex: 7,
                mac: [0xfe, 1, 2, 3, 4, 5],
                mtu: 1500,
                switch: Some("br0".into()),
                inet,
                inet6,
            }),
            Response::Switch {
                name: "br0".into(),
                ifindex: 3,
                mtu: 9000,
            },
            Response::Status(Status {
                uid: u32::MAX,
                user: Some("u".repeat(32)),
                quota: 4096,
                in_use: 4096,
            }),
            Response::Error(Error::Denied),
            Response::Error(Error::Quota { limit: 3 }),
            Response::Error(Error::Invalid(Invalid::SwitchName(NameError::TooLong))),
            Response::Error(Error::Kernel { errno: 16 }),
            Response::Error(Error::Unsupported(Unsupported::Vrf)),
            Response::Error(Error::Version { supported: VERSION }),
        ];
        for resp in all {
            let frame = encode(&resp).unwrap();
            assert_eq!(decode::<Response>(&frame), Ok(resp));
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut frame = encode(&Request::Hello).unwrap();
        frame.push(0);
        assert_eq!(decode::<Request>(&frame), Err(FrameError::Trailing));
    }

    #[test]
    fn other_versions_are_refused() {
        let mut frame = encode(&Request::Hello).unwrap();
        frame[0] = VERSION + 1;
        assert_eq!(decode::<Request>(&frame), Err(FrameError::Version(VERSION + 1)));
        frame[0] = VERSION - 1;
        assert_eq!(decode::<Request>(&frame), Err(FrameError::Version(VERSION - 1)));
        frame[0] = 0;
        assert_eq!(decode::<Request>(&frame), Err(FrameError::Version(0)));
    }

    #[test]
    fn empty_truncated_unknown_and_oversized_frames() {
        assert_eq!(decode::<Request>(&[]), Err(FrameError::Empty));
        assert_eq!(decode::<Request>(&[VERSION]), Err(FrameError::Malformed));
        assert_eq!(decode::<Request>(&[VERSION, 200]), Err(FrameError::Malformed));
        let frame = encode(&Request::SwitchExists { switch: "br0".into() }).unwrap();
        assert_eq!(
            decode::<Request>(&frame[..frame.len() - 1]),
            Err(FrameError::Malformed)
        );
        let mut big = vec![VERSION; MAX_FRAME + 1];
        big[1] = 0;
        assert_eq!(decode::<Request>(&big), Err(FrameError::TooLarge));
        // A bool byte other than 0 or 1 is not a bool.
        let mut frame = encode(&Request::Configure {
            tap: FdIndex(0),
            config: IfConfig {
                up: Some(true),
                ..IfConfig::default()
            },
        })
        .unwrap();
        let up = frame.len() - 2; // the `up` bool, before `local: None`
        assert_eq!(frame[up], 1);
        frame[up] = 2;
        assert_eq!(decode::<Request>(&frame), Err(FrameError::Malformed));
    }

    #[test]
    fn a_string_length_beyond_the_frame_does_not_decode() {
        // SwitchExists is variant 3; then a varint length of 2^28 with no bytes behind it.
        let frame = [VERSION, 3, 0x80, 0x80, 0x80, 0x80, 0x01];
        assert_eq!(decode::<Request>(&frame), Err(FrameError::Malformed));
    }

    #[test]
    fn encode_refuses_oversized_messages() {
        let req = Request::SwitchExists {
            switch: "x".repeat(MAX_FRAME),
        };
        assert_eq!(encode(&req), Err(FrameError::TooLarge));
    }

    #[test]
    fn a_frame_of_exactly_max_frame_bytes_is_one_frame() {
        // Version, variant, a two-byte varint length, then the name: MAX_FRAME bytes in all.
        let exactly = |extra: usize| Request::SwitchExists {
            switch: "x".repeat(MAX_FRAME - 4 + extra),
        };
        let frame = encode(&exactly(0)).unwrap();
        assert_eq!(frame.len(), MAX_FRAME);
        assert_eq!(decode::<Request>(&frame), Ok(exactly(0)));
        assert_eq!(encode(&exactly(1)), Err(FrameError::TooLarge));
    }

    #[test]
    fn fd_counts_and_names_of_every_request() {
        let t = FdIndex(0);
        let cases = [
            (Request::Hello, 0, "hello"),
            (Request::Status, 0, "status"),
            (
                Request::CreateTap {
                    queues: 1,
                    vnet_hdr: false,
                    config: IfConfig::default(),
                },
                0,
                "create-tap",
            ),
            (
                Request::Configure {
                    tap: t,
                    config: IfConfig::default(),
                },
                1,
                "configure",
            ),
            (Request::SwitchExists { switch: "br0".into() }, 0, "switch-exists"),
            (Request::Reset { tap: t }, 1, "reset"),
            (Request::RemoveLeftovers, 0, "remove-leftovers"),
            (
                Request::DestroyTaps {
                    count: 5,
                    more: false,
                },
                5,
                "destroy-taps",
            ),
        ];
        for (req, fds, op) in cases {
            assert_eq!((req.fds_expected(), req.op()), (fds, op), "{req:?}");
        }
    }
}
