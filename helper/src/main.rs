//! vmpriv-helper, the privileged half of vmpriv. This file reads as the start-up sequence: hygiene →
//! caller → policy → drop → serve; the modules are the pieces an auditor reads in turn
//! (`docs/reading-the-trusted-code.md`). It is a binary with private modules and nothing else: what
//! the fuzz targets need they compile from these same files (`checks/`), so nothing here is an API.
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

mod args;
mod audit;
mod configure;
mod netlink;
mod ops;
mod qemu;
mod session;
mod startup;
mod sys;

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;

use crate::args::Mode;
use crate::configure::Ctx;
use crate::startup::StartError;
use nix::sys::socket::SockType;

fn main() -> ExitCode {
    let argv: Vec<_> = std::env::args_os().skip(1).collect();
    let mode = match args::parse(&argv) {
        Ok(m) => m,
        Err(e) => return fail(&format!("{e} (see vmpriv-helper --help)")),
    };
    let activated = mode == Mode::Activated;
    let (fd, policy_path, qemu) = match mode {
        Mode::Help => return say(args::USAGE),
        Mode::Version => return say(concat!("vmpriv-helper ", env!("CARGO_PKG_VERSION"))),
        Mode::Session { fd, policy } => (fd, policy, None),
        Mode::Qemu {
            fd,
            bridge,
            vnet_hdr,
            policy,
        } => (fd, policy, Some((bridge, vnet_hdr))),
        Mode::Activated => (startup::LISTEN_FD, None, None),
    };
    // The socket outlives the refusal line: libvirt kills the helper as soon as its receive fails, so
    // the line must be on stderr before the socket closes.
    let mut sock = None;
    let result = run(fd, policy_path.as_deref(), qemu, activated, &mut sock);
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (StartError::Policy(_) | StartError::PolicyFile(_) | StartError::PolicyNotRoot)) => {
            fail(&e.to_string());
            ExitCode::from(EXIT_POLICY)
        }
        Err(e) => fail(&e.to_string()),
    };
    drop(sock);
    code
}

/// The exit status of a start-up refused for the policy file (missing, not root's, unparsable): the
/// client reports it as a policy error, not as a helper that is missing or not privileged.
const EXIT_POLICY: u8 = 6;

fn run(
    fd: i32,
    policy_path: Option<&str>,
    qemu: Option<(String, bool)>,
    activated: bool,
    sock_slot: &mut Option<OwnedFd>,
) -> Result<(), StartError> {
    // 0. Socket activation: only when root started us, on systemd's fd 3 (LISTEN_* is read before
    //    step 1 empties the environment). Setuid or file-capability runs are refused here.
    if activated {
        startup::require_started_by_root()?;
        startup::check_listen_env()?;
    }
    // 1. Hygiene: inherited fds closed, environment empty, signals reset, not dumpable.
    startup::sanitize_process(Some(fd))?;
    // The socket: open, AF_UNIX, SOCK_SEQPACKET (session) or SOCK_STREAM (QEMU's socketpair).
    let (want, kind) = if qemu.is_some() {
        (SockType::Stream, "SOCK_STREAM")
    } else {
        (SockType::SeqPacket, "SOCK_SEQPACKET")
    };
    let sock = sys::take_argv_socket(fd, want).ok_or(StartError::Socket { fd, kind })?;
    let sock: &OwnedFd = sock_slot.insert(sock);
    // 2. Refuse early and clearly when setuid/file capabilities did not take effect.
    startup::check_privilege()?;
    // 3. The caller: real ids and group names; socket activated, the peer's SO_PEERCRED/SO_PEERGROUPS.
    let (caller, peer_pid) = if activated {
        let (caller, pid) = startup::identify_peer(sock)?;
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
    // 5. What needs root: /dev/net/tun fds (bounded by the quota), our netns identity, netlink.
    let held = startup::open_what_needs_root(policy.quota_for(&caller), qemu.is_some(), !activated)?;
    // 6. Become the caller with CAP_NET_ADMIN only, no_new_privs, then no more filesystem.
    startup::drop_to_caller(&caller)?;
    let mut allowed = Vec::new();
    if let Some(tun) = &held.tun_path {
        allowed.push((tun.as_fd(), sys::Allow::Device));
    }
    if let Some(conf) = &held.ipv6_conf {
        allowed.push((conf.as_fd(), sys::Allow::WriteBeneath));
    }
    if let Some(net) = &held.sys_net {
        allowed.push((net.as_fd(), sys::Allow::ReadBeneath));
    }
    match sys::landlock_deny_filesystem(&allowed) {
        Ok(true) => {}
        Ok(false) => log::info!("landlock not available; relying on the privilege drop alone"),
        // The kernel has Landlock and refused our rules: something is off; do not serve without it.
        Err(e) => return Err(StartError::Landlock(e)),
    }
    drop(allowed);
    drop(held.tun_path);
    // 7. From here on only the syscalls serving needs: anything else kills the process (SIGSYS).
    startup::allow_only_serving_syscalls()?;
    let mut ctx = Ctx {
        caller,
        policy,
        nl: held.nl,
        tun_pool: held.tun_pool,
        netns: held.netns,
        tun_features: None,
        ipv6_conf: held.ipv6_conf,
        sys_net: held.sys_net,
        next_slot: 0,
        batch: None,
    };
    // 8. Serve.
    match qemu {
        None => session::serve(&mut ctx, sock).map_err(|e| StartError::Session(e.into())),
        Some((bridge, vnet_hdr)) => qemu::serve(&mut ctx, sock, &bridge, vnet_hdr),
    }
}

fn say(text: &str) -> ExitCode {
    let _ = writeln!(std::io::stdout(), "{text}");
    ExitCode::SUCCESS
}

/// The one stderr line of a refusal, in one write, escaped, without Rust's "(os error N)" suffixes.
fn fail(text: &str) -> ExitCode {
    let line = format!("vmpriv-helper: {}\n", audit::escape(&without_os_error(text)));
    let _ = std::io::stderr().write_all(line.as_bytes());
    ExitCode::FAILURE
}

/// `text` without the " (os error N)" that `io::Error`'s Display appends: the words say it already.
fn without_os_error(text: &str) -> String {
    const MARK: &str = " (os error ";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((head, after)) = rest.split_once(MARK) {
        out.push_str(head);
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        match after.get(digits..).and_then(|t| t.strip_prefix(')')) {
            Some(tail) if digits > 0 => rest = tail,
            _ => {
                out.push_str(MARK);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}
