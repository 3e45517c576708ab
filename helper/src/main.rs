//! vmpriv-helper, the session helper: the privileged half of vmpriv's session protocol, served behind
//! systemd's `vmpriv.socket` (`--socket-activated`) or, where an admin makes it setuid, to its own
//! caller (`--session`). This file reads as the start-up sequence, in the steps docs/design.md numbers
//! and explains; the modules are the pieces an auditor reads in turn (`docs/reading-the-trusted-code.md`).
//! The modules in `helper/shared/` are compiled into the QEMU bridge helper too
//! (`helper/bridge/`); those in `helper/src/` are this binary's alone. It is a binary with private
//! modules and nothing else: what the fuzz targets need they compile from these same files
//! (`checks/`), so nothing here is an API.
//!
//! `unsafe_code` is denied here and allowed only in [`sys`] and [`sys_session`], where each block has a
//! `// SAFETY:` line.
#![deny(unsafe_code)]
// Each block one operation, each with its `// SAFETY:` line (only sys.rs and sys_session.rs have any).
#![deny(clippy::undocumented_unsafe_blocks, clippy::multiple_unsafe_ops_per_block)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

// Shared with vmpriv-bridge-helper.
#[path = "../shared/argv.rs"]
mod argv;
#[path = "../shared/audit.rs"]
mod audit;
#[path = "../shared/netlink.rs"]
mod netlink;
#[path = "../shared/startup.rs"]
mod startup;
#[path = "../shared/sys.rs"]
mod sys;
#[path = "../shared/tap.rs"]
mod tap;

// This binary's own.
mod activated;
mod args;
mod configure;
mod lookup;
mod ops;
mod session;
mod sys_session;

use std::os::fd::OwnedFd;
use std::process::ExitCode;

use crate::args::Mode;
use crate::configure::{Ctx, NetNs};
use crate::startup::{StartError, exit_code, fail, say};
use nix::sys::socket::SockType;

/// The name in the refusal line and in the log.
const NAME: &str = "vmpriv-helper";

fn main() -> ExitCode {
    let argv: Vec<_> = std::env::args_os().skip(1).collect();
    let mode = match args::parse(&argv) {
        Ok(m) => m,
        Err(e) => return fail(&format!("{e} (see vmpriv-helper --help)")),
    };
    let (fd, policy_path, activated) = match mode {
        Mode::Help => return say(args::USAGE),
        Mode::Version => return say(concat!("vmpriv-helper ", env!("CARGO_PKG_VERSION"))),
        Mode::Session { fd, policy } => (fd, policy, false),
        Mode::Activated => (activated::LISTEN_FD, None, true),
    };
    let mut sock = None;
    let code = exit_code(run(fd, policy_path.as_deref(), activated, &mut sock));
    drop(sock);
    code
}

fn run(
    fd: i32,
    policy_path: Option<&str>,
    activated: bool,
    sock_slot: &mut Option<OwnedFd>,
) -> Result<(), StartError> {
    // 0. Socket activation: only when root started us, on systemd's fd 3 (LISTEN_* is read before
    //    step 1 empties the environment). Setuid or file-capability runs are refused here.
    if activated {
        activated::require_started_by_root()?;
        activated::check_listen_env()?;
    }
    // 1. Hygiene: inherited fds closed, environment empty, signals reset, not dumpable.
    let fresh = sys::Fresh::take().ok_or(StartError::Refused("start-up ran twice".to_owned()))?;
    startup::sanitize_process(&fresh, Some(fd))?;
    // The socket: open, AF_UNIX, SOCK_SEQPACKET.
    let sock = sys::take_argv_socket(fresh, fd, SockType::SeqPacket).ok_or(StartError::Socket {
        fd,
        kind: "SOCK_SEQPACKET",
    })?;
    let sock: &OwnedFd = sock_slot.insert(sock);
    // 2. Refuse early and clearly when setuid/file capabilities did not take effect.
    startup::check_privilege()?;
    // 3. The caller: real ids and group names; socket activated, the peer's SO_PEERCRED/SO_PEERGROUPS.
    let (caller, peer_pid) = if activated {
        let (caller, pid) = activated::identify_peer(sock)?;
        (caller, Some(pid))
    } else {
        (startup::identify_caller()?, None)
    };
    audit::init();
    if let Some(pid) = peer_pid {
        log::info!(
            "uid={} pid={pid} op=connect decision=serving (socket activated)",
            caller.uid
        );
    }
    // 4. The policy, from root-owned files only.
    let policy = startup::load_policy(&caller, policy_path)?;
    // 5. What needs root: /dev/net/tun fds (bounded by the quota), netlink, our netns identity, and
    //    the IPv6 address notifications of the in-use checks.
    let held = startup::open_what_needs_root(policy.quota_for(&caller), false, !activated)?;
    let netns = std::fs::metadata("/proc/self/ns/net")
        .map(|m| NetNs::of(&m))
        .map_err(|e| StartError::Refused(format!("cannot identify our network namespace: {e}")))?;
    let inet6 = lookup::Inet6View::open().map_err(StartError::Netlink)?;
    // 6. Become the caller with CAP_NET_ADMIN only, no_new_privs, then no more filesystem.
    startup::drop_to_caller(&caller)?;
    let held = startup::confine_filesystem(held)?;
    // 7. From here on only the syscalls serving needs: anything else kills the process (SIGSYS).
    startup::allow_only_serving_syscalls(&[sys::TAP_IOCTLS, sys_session::SESSION_IOCTLS].concat())?;
    let mut ctx = Ctx {
        base: tap::Ctx {
            caller,
            policy,
            nl: held.nl,
            tun_pool: held.tun_pool,
            tun_features: None,
            ipv6_conf: held.ipv6_conf,
            sys_net: held.sys_net,
            next_slot: 0,
        },
        netns,
        inet6,
        batch: None,
    };
    // 8. Serve.
    session::serve(&mut ctx, sock).map_err(|e| StartError::Session(e.into()))
}
