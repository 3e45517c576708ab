//! Property checks shared by the fuzz targets (`fuzz/`) and by `cargo test`, which replays every
//! committed corpus file through them. Each panics when a property fails; that is their whole job.
//!
//! Outside the trusted tree: the helper and the protocol crates hold only what the helper runs. The
//! helper is a binary with private modules and lends nothing; the checks of its netlink receive path
//! and its argv parser compile its very files below, so the fuzzers drive the code it runs.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

// The helper's own modules, compiled from its sources (each refers to the others as `crate::…`). Most
// of each is unused here.
#[allow(dead_code)]
#[path = "../../helper/bridge/src/args.rs"]
mod args;
#[allow(dead_code)]
#[path = "../../helper/shared/argv.rs"]
mod argv;
#[allow(dead_code)]
#[path = "../../helper/src/lookup.rs"]
mod lookup;
#[allow(dead_code)]
#[path = "../../helper/shared/netlink.rs"]
mod netlink;
// Each parser needs its own copy of the shared argv helpers (they return its binary's `ArgError`).
#[allow(clippy::duplicate_mod)]
mod session;
use session::args as session_args;
#[allow(dead_code)]
#[path = "../../helper/shared/sys.rs"]
mod sys;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use vmpriv_protocol::addr::{local_inet, local_inet6};
use vmpriv_protocol::policy::{self, Caller, Policy};
use vmpriv_protocol::validate::{ValidOp, validate};
use vmpriv_protocol::wire::{self, IfConfig, Request};

/// The policy every request check runs against unless the input carries its own.
pub const CHECK_POLICY: &str = "\
ifgroup vms 42
rdomain 1 vrf-blue
local prefix 100.64.0.0/10
allow user alice switch br0
allow user alice switch secretbridge123
allow group kvm switch br1
deny user mallory switch secretbridge123
allow user * ifgroup vms
allow group kvm rdomain 1
quota user alice 2
";

/// Callers the request check picks from by the input's first byte.
pub fn check_callers() -> Vec<Caller> {
    vec![
        Caller {
            uid: 1000,
            user: Some("alice".into()),
            gid: 1000,
            supplementary: vec![],
            groups: vec!["alice".into()],
        },
        Caller {
            uid: 1001,
            user: Some("mallory".into()),
            gid: 36,
            supplementary: vec![],
            groups: vec!["kvm".into()],
        },
        Caller {
            uid: 4242,
            user: None,
            gid: 4242,
            supplementary: vec![],
            groups: vec![],
        },
    ]
}

/// What [`check_request`] made of its input (its properties held in every case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Not a request: too short, a policy that does not parse, a frame that does not decode.
    NotARequest,
    /// A request the validator refused.
    Refused,
    /// A request the validator accepted, its grants and addresses checked against the policy.
    Accepted,
}

/// Decode + validate arbitrary bytes. Input: byte 0 picks the caller, byte 1 the fd count (0..=3),
/// then either `policy text, 0xFF, frame` (when byte 2 is `P`) or just the frame against
/// [`CHECK_POLICY`]. Properties: no panic; an accepted request names exactly the bytes the policy
/// checked; every granted switch, group and rdomain is granted by the policy; every address is the one
/// the address plan computes and lies inside the policy's prefix. Returns what it made of the input,
/// so that a test can tell an accepted request from a skipped one.
pub fn check_request(data: &[u8]) -> Checked {
    let [who, nfds, rest @ ..] = data else {
        return Checked::NotARequest;
    };
    let callers = check_callers();
    let caller = &callers[usize::from(*who) % callers.len()];
    let (policy, frame) = match rest {
        [b'P', tail @ ..] => {
            let Some(split) = tail.iter().position(|&b| b == 0xFF) else {
                return Checked::NotARequest;
            };
            let Ok(text) = std::str::from_utf8(&tail[..split]) else {
                return Checked::NotARequest;
            };
            let Ok(policy) = policy::parse_str("fuzz", text) else {
                return Checked::NotARequest;
            };
            (policy, &tail[split + 1..])
        }
        _ => (policy::parse_str("fuzz", CHECK_POLICY).unwrap(), rest),
    };
    let Ok(req) = wire::decode::<Request>(frame) else {
        return Checked::NotARequest;
    };
    // Re-encoding a decoded request must decode to the same value (postcard is not canonical, so
    // values are compared, not bytes).
    let again = wire::encode(&req).expect("a decoded request re-encodes");
    assert_eq!(wire::decode::<Request>(&again).as_ref(), Ok(&req));
    let nfds = usize::from(nfds % 4);
    let Ok(valid) = validate(&req, vec![(); nfds], caller, &policy) else {
        return Checked::Refused;
    };
    assert_eq!(nfds, req.fds_expected());
    match (valid.op(), &req) {
        (ValidOp::CreateTap { config, .. }, Request::CreateTap { config: asked, .. })
        | (ValidOp::Configure { config, .. }, Request::Configure { config: asked, .. }) => {
            check_config(config, asked, caller, &policy);
        }
        (ValidOp::SwitchExists { switch }, Request::SwitchExists { switch: asked }) => {
            assert_eq!(switch.as_str().as_bytes(), asked.as_bytes());
            assert!(policy.permits_switch(caller, switch));
        }
        _ => {}
    }
    Checked::Accepted
}

fn check_config(config: &vmpriv_protocol::ValidConfig, asked: &IfConfig, caller: &Caller, policy: &Policy) {
    assert_eq!(
        config.switch().as_ref().map(|s| s.as_str().as_bytes()),
        asked.switch.as_deref().map(str::as_bytes)
    );
    if let Some(s) = config.switch() {
        assert!(
            policy.permits_switch(caller, s),
            "granted a switch the policy does not grant"
        );
        assert!(s.as_str().len() <= 15);
    }
    assert_eq!(
        config.description().map(vmpriv_protocol::Description::as_str),
        asked.description.as_deref()
    );
    assert_eq!(
        config.group().as_ref().map(|g| g.name().as_str()),
        asked.group.as_deref()
    );
    if let Some(g) = config.group() {
        assert!(policy.permits_ifgroup(caller, g.name()));
        assert_eq!(policy.ifgroup_number(g.name()), Some(g.number()));
    }
    if let Some(v) = config.vrf() {
        assert_eq!(Some(v.rdomain()), asked.rdomain);
        assert!(policy.permits_rdomain(caller, v.rdomain()));
        assert!(config.switch().is_none());
    }
    let local = asked.local;
    let want_inet = local
        .filter(|l| l.inet)
        .map(|l| local_inet(policy.inet, l.vm, l.nic));
    assert_eq!(config.inet().map(Ok), want_inet);
    let want_inet6 = local
        .filter(|l| l.inet6)
        .map(|l| local_inet6(policy.inet, policy.inet6, l.vm, l.nic));
    assert_eq!(config.inet6().map(Ok), want_inet6);
    if let Some(p) = config.inet() {
        assert!(policy.inet.contains(p.host()) && policy.inet.contains(p.vm()));
    }
    if let Some(p) = config.inet6() {
        assert!(policy.inet6.contains(p.host()));
    }
}

/// Parse arbitrary text as a policy. Properties: no panic; a policy that parses prints (as
/// `check-policy` shows it) to text that parses to the same policy.
pub fn check_policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = policy::parse_str("fuzz", text) else {
        return;
    };
    let shown = vmpriv_client::policy_text::canonical(&p);
    assert_eq!(policy::parse_str("shown", &shown).as_ref(), Ok(&p), "{shown}");
}

/// Encode a request, decode it, compare values (postcard is not canonical, so bytes are not compared);
/// then validate it against the check policy for every caller and fd count without panicking.
pub fn check_roundtrip(req: &Request) {
    let Ok(frame) = wire::encode(req) else { return }; // larger than a frame: refused, fine
    assert!(frame.len() <= wire::MAX_FRAME);
    assert_eq!(wire::decode::<Request>(&frame).as_ref(), Ok(req));
    let policy = policy::parse_str("fuzz", CHECK_POLICY).unwrap();
    for caller in check_callers() {
        for nfds in 0..3 {
            let _ = validate(req, vec![(); nfds], &caller, &policy);
        }
    }
}

/// The helper's netlink receive path (the loop that reads ACKs, errors and dumps, and the link,
/// address and route parsers it calls) on arbitrary bytes as one receive buffer: no panic.
pub fn check_netlink(data: &[u8]) {
    use lookup::{RTM_NEWADDR, RTM_NEWROUTE, parse_addr, parse_link, parse_route};
    use netlink::RTM_NEWLINK;
    use nix::errno::Errno;
    // The sequence number of the first message, so that the messages are not all skipped as late
    // replies to another request.
    let seq = data
        .get(8..12)
        .map_or(0, |b| u32::from_ne_bytes(b.try_into().unwrap()));
    // As `Netlink::pipeline` reads its acknowledgements.
    let _ = netlink::take_acks(data, seq, &mut [None; 8]);
    // As `Netlink::get_link`, `dump_links`, `dump_addrs` and `route_lookup` hand each reply on.
    let _ = netlink::take_replies(data, seq, &mut |hdr, payload| {
        match hdr.ty {
            RTM_NEWLINK => drop(parse_link(payload).map_err(|_| Errno::EPROTO)?),
            RTM_NEWADDR => drop(parse_addr(payload).map_err(|_| Errno::EPROTO)?),
            RTM_NEWROUTE => drop(parse_route(payload).map_err(|_| Errno::EPROTO)?),
            _ => {}
        }
        Ok(())
    });
}

/// Both helpers' command-line parsers (the bridge helper's QEMU contract, the session helper's) on
/// `data` split on NUL bytes as an argv. Whatever it is, parsing does not panic; an accepted bridge is
/// byte-identical to the last `--br=` value given (never cut), 1–15 bytes; an accepted fd is at least
/// 3 and is the decimal value given.
pub fn check_args(data: &[u8]) {
    let argv: Vec<OsString> = data
        .split(|&b| b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    let given = |prefix: &str| {
        argv.iter()
            .filter_map(|a| a.to_str())
            .filter_map(|a| a.strip_prefix(prefix))
            .next_back()
            .map(str::to_owned)
    };
    let session = match session_args::parse(&argv) {
        Err(_) => None,
        Ok(session_args::Mode::Session { fd, .. }) => Some((Some(fd), None)),
        // systemd's first fd.
        Ok(session_args::Mode::Activated) => Some((Some(3), None)),
        Ok(session_args::Mode::Help | session_args::Mode::Version) => Some((None, None)),
    };
    let bridge = match args::parse(&argv) {
        Err(_) => None,
        Ok(args::Mode::Qemu { fd, bridge, .. }) => Some((Some(fd), Some(bridge))),
        Ok(args::Mode::Help | args::Mode::Version) => Some((None, None)),
    };
    // One argv is never both a session and a bridge request.
    assert!(!matches!(
        (&session, &bridge),
        (Some((Some(_), _)), Some((Some(_), _)))
    ));
    let Some((fd, bridge)) = bridge.or(session) else {
        return;
    };
    if let Some(fd) = fd {
        assert!(fd >= 3);
    }
    if let Some(bridge) = bridge {
        assert_eq!(Some(&bridge), given("--br=").as_ref());
        assert!((1..=15).contains(&bridge.len()));
        let fd = fd.expect("QEMU mode has an fd");
        assert_eq!(
            Some(fd.to_string()),
            given("--fd=").map(|f| f.parse::<i32>().unwrap().to_string())
        );
    }
    if fd.is_none() {
        // --help or --version: nothing else on the command line.
        let info = ["--help", "-h", "--version", "-V"];
        assert!(argv.iter().all(|a| a.to_str().is_some_and(|a| info.contains(&a))));
    }
}

/// The netlink seeds (`fuzz/seeds/netlink/`), built with the helper's own message builder: a tap link
/// message, a bridge, an ACK, an error, a DONE, the link with a bad attribute length, two links in one
/// buffer, a FIB_MATCH route reply.
pub fn netlink_samples() -> Vec<Vec<u8>> {
    use lookup::{IFLA_GROUP, MsgExt};
    use netlink::{IFLA_IFNAME, IFLA_INFO_KIND, IFLA_LINKINFO, IFLA_MASTER, IFLA_MTU, Msg, RTM_NEWLINK};
    let link = Msg::new(RTM_NEWLINK, 2, 7)
        .ifinfomsg(9, 1, 0)
        .attr_str(IFLA_IFNAME, "tap0")
        .attr_u32(IFLA_MTU, 1500)
        .attr_u32(IFLA_MASTER, 3)
        .attr_u32(IFLA_GROUP, 42)
        .attr_nested_str(IFLA_LINKINFO, IFLA_INFO_KIND, "tun")
        .finish()
        .unwrap();
    let bridge = Msg::new(RTM_NEWLINK, 0, 8)
        .ifinfomsg(3, 1, 0)
        .attr_str(IFLA_IFNAME, "br0")
        .attr_nested_str(IFLA_LINKINFO, IFLA_INFO_KIND, "bridge")
        .finish()
        .unwrap();
    let mut ack = Msg::new(2, 0, 9).finish().unwrap();
    ack.extend_from_slice(&0i32.to_ne_bytes());
    let len = u32::try_from(ack.len()).unwrap();
    ack[..4].copy_from_slice(&len.to_ne_bytes());
    let mut err = ack.clone();
    err[16..20].copy_from_slice(&(-19i32).to_ne_bytes());
    let done = Msg::new(3, 2, 7).finish().unwrap();
    let mut bad = link.clone();
    bad[32] = 0xff;
    let mut two = link.clone();
    two.extend_from_slice(&bridge);
    // A FIB_MATCH reply: rtmsg (AF_INET, /32, table 255, kernel, RTN_LOCAL), RTA_DST, RTA_TABLE, RTA_OIF.
    let mut route = Msg::new(24, 0, 5).finish().unwrap();
    route.extend_from_slice(&[2, 32, 0, 0, 255, 2, 254, 2]);
    route.extend_from_slice(&0x2000u32.to_ne_bytes());
    route.extend_from_slice(&[
        8, 0, 1, 0, 100, 64, 1, 2, 8, 0, 15, 0, 255, 0, 0, 0, 8, 0, 4, 0, 7, 0, 0, 0,
    ]);
    let len = u32::try_from(route.len()).unwrap();
    route[..4].copy_from_slice(&len.to_ne_bytes());
    vec![link, bridge, ack, err, done, bad, two, route]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_request_accepts_its_own_examples() {
        let mut input = vec![0, 0];
        input.extend(
            wire::encode(&Request::CreateTap {
                queues: 1,
                vnet_hdr: false,
                config: IfConfig {
                    switch: Some("br0".into()),
                    ..IfConfig::default()
                },
            })
            .unwrap(),
        );
        assert_eq!(check_request(&input), Checked::Accepted);
        // The same request from the caller with no grant, and with a fd it must not carry.
        input[0] = 2;
        assert_eq!(check_request(&input), Checked::Refused);
        input[0] = 0;
        input[1] = 1;
        assert_eq!(check_request(&input), Checked::Refused);
        assert_eq!(check_request(&input[..input.len() - 1]), Checked::NotARequest);
        assert!(policy::parse_str("check", CHECK_POLICY).is_ok());
    }
}
