//! vmpriv-bridge-helper: QEMU's and libvirt's `helper=` contract (qemu-bridge-helper's), with vmpriv's
//! policy, quota, hygiene, privilege drop, Landlock, seccomp and audit. The one binary any local user
//! can exec setuid root, so it compiles nothing it does not run: no session protocol, batches,
//! leftovers, local addresses, VRFs or groups (those are the session helper's, `helper/src/`), and its
//! seccomp filter allows only the five ioctls that make a tap. This file reads as the start-up
//! sequence (docs/design.md); `qemu.rs` makes the tap; the modules in `helper/shared/` are
//! the session helper's too (`docs/reading-the-trusted-code.md`).
//!
//! `unsafe_code` is denied here and allowed only in [`sys`], where each block has a `// SAFETY:` line.
#![deny(unsafe_code)]
// Each block one operation, each with its `// SAFETY:` line (only sys.rs has any).
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

// Shared with vmpriv-helper.
#[path = "../../shared/argv.rs"]
mod argv;
#[path = "../../shared/audit.rs"]
mod audit;
#[path = "../../shared/netlink.rs"]
mod netlink;
#[path = "../../shared/startup.rs"]
mod startup;
#[path = "../../shared/sys.rs"]
mod sys;
#[path = "../../shared/tap.rs"]
mod tap;

// This binary's own.
mod args;
mod qemu;

use std::os::fd::OwnedFd;
use std::process::ExitCode;

use nix::sys::socket::SockType;

use crate::args::Mode;
use crate::startup::{StartError, exit_code, fail, say};

/// The name in the refusal line.
const NAME: &str = "vmpriv-bridge-helper";

fn main() -> ExitCode {
    let argv: Vec<_> = std::env::args_os().skip(1).collect();
    let mode = match args::parse(&argv) {
        Ok(m) => m,
        Err(e) => return fail(&format!("{e} (see vmpriv-bridge-helper --help)")),
    };
    let (fd, bridge, vnet_hdr, policy_path) = match mode {
        Mode::Help => return say(args::USAGE),
        Mode::Version => return say(concat!("vmpriv-bridge-helper ", env!("CARGO_PKG_VERSION"))),
        Mode::Qemu {
            fd,
            bridge,
            vnet_hdr,
            policy,
        } => (fd, bridge, vnet_hdr, policy),
    };
    // The socket outlives the refusal line: libvirt kills the helper as soon as its receive fails, so
    // the line must be on stderr before the socket closes.
    let mut sock = None;
    let code = exit_code(run(fd, &bridge, vnet_hdr, policy_path.as_deref(), &mut sock));
    drop(sock);
    code
}

fn run(
    fd: i32,
    bridge: &str,
    vnet_hdr: bool,
    policy_path: Option<&str>,
    sock_slot: &mut Option<OwnedFd>,
) -> Result<(), StartError> {
    // 1. Hygiene: inherited fds closed, environment empty, signals reset, not dumpable.
    let fresh = sys::Fresh::take().ok_or(StartError::Refused("start-up ran twice".to_owned()))?;
    startup::sanitize_process(&fresh, Some(fd))?;
    // The socket: open, AF_UNIX, SOCK_STREAM (QEMU's socketpair).
    let sock = sys::take_argv_socket(fresh, fd, SockType::Stream).ok_or(StartError::Socket {
        fd,
        kind: "SOCK_STREAM",
    })?;
    let sock: &OwnedFd = sock_slot.insert(sock);
    // 2. Refuse early and clearly when setuid/file capabilities did not take effect.
    startup::check_privilege()?;
    // 3. The caller: real ids and group names.
    let caller = startup::identify_caller()?;
    audit::init();
    // 4. The policy, from root-owned files only.
    let policy = startup::load_policy(&caller, policy_path)?;
    // 5. What needs root: one /dev/net/tun fd (none without a grant), netlink, the sysctl and sysfs
    //    directories.
    let held = startup::open_what_needs_root(policy.quota_for(&caller), true, true)?;
    // 6. Become the caller with CAP_NET_ADMIN only, no_new_privs, then no more filesystem.
    startup::drop_to_caller(&caller)?;
    let held = startup::confine_filesystem(held)?;
    // 7. From here on only the syscalls serving needs: anything else kills the process (SIGSYS).
    startup::allow_only_serving_syscalls(sys::TAP_IOCTLS)?;
    let mut ctx = tap::Ctx {
        caller,
        policy,
        nl: held.nl,
        tun_pool: held.tun_pool,
        tun_features: None,
        ipv6_conf: held.ipv6_conf,
        sys_net: held.sys_net,
        next_slot: 0,
    };
    // 8. The tap, its fd to QEMU.
    qemu::serve(&mut ctx, sock, bridge, vnet_hdr)
}
