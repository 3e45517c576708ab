//! vmpriv-helper's start-up sequence: hygiene → caller → policy → drop → serve.
#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;

use nix::sys::socket::SockType;
use vmpriv_helper::args::{self, Mode};
use vmpriv_helper::ops::Ctx;
use vmpriv_helper::startup::{self, StartError};
use vmpriv_helper::{audit, session, sys};

fn main() -> ExitCode {
    let argv: Vec<_> = std::env::args_os().skip(1).collect();
    let mode = match args::parse(&argv) {
        Ok(m) => m,
        Err(e) => return fail(&format!("{e} (see vmpriv-helper --help)")),
    };
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
    };
    match run(fd, policy_path.as_deref(), qemu) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

fn run(fd: i32, policy_path: Option<&str>, qemu: Option<(String, bool)>) -> Result<(), StartError> {
    // 1. Hygiene: stdio open, inherited fds closed, environment empty, signals reset, not dumpable.
    startup::sanitize_process(Some(fd))?;
    // The socket: open, AF_UNIX, SOCK_SEQPACKET (session) or SOCK_STREAM (QEMU's socketpair).
    let want = if qemu.is_some() {
        SockType::Stream
    } else {
        SockType::SeqPacket
    };
    let sock = adopt_socket(fd, want)?;
    // 2. Refuse early and clearly when setuid/file capabilities did not take effect.
    startup::check_privilege()?;
    // 3. The caller: real ids and group names.
    let caller = startup::identify_caller()?;
    audit::init(qemu.is_some());
    // 4. The policy, from root-owned files only.
    let policy = startup::load_policy(&caller, policy_path)?;
    // 5. What needs root: /dev/net/tun fds (bounded by the quota), our netns identity, netlink.
    let held = startup::open_what_needs_root(policy.quota_for(&caller), qemu.is_some())?;
    // 6. Become the caller with CAP_NET_ADMIN only, no_new_privs, then no more filesystem.
    startup::drop_to_caller(&caller)?;
    let mut allowed = Vec::new();
    if let Some(tun) = &held.tun_path {
        allowed.push((tun.as_fd(), sys::Allow::Device));
    }
    if let Some(conf) = &held.ipv6_conf {
        allowed.push((conf.as_fd(), sys::Allow::WriteBeneath));
    }
    match sys::landlock_deny_filesystem(&allowed) {
        Ok(true) => {}
        Ok(false) => log::info!("landlock not available; relying on the privilege drop alone"),
        Err(e) => log::warn!("landlock failed ({e}); relying on the privilege drop alone"),
    }
    drop(allowed);
    drop(held.tun_path);
    let mut ctx = Ctx {
        caller,
        policy,
        nl: held.nl,
        tun_pool: held.tun_pool,
        netns: held.netns,
        tun_features: None,
        ipv6_conf: held.ipv6_conf,
        next_slot: 0,
    };
    // 7. Serve.
    match qemu {
        None => session::serve(&mut ctx, &sock).map_err(|e| StartError::Session(sys::errno_io(e))),
        Some((bridge, vnet_hdr)) => vmpriv_helper::qemu::serve(&mut ctx, &sock, &bridge, vnet_hdr),
    }
}

fn adopt_socket(fd: i32, want: SockType) -> Result<OwnedFd, StartError> {
    sys::take_argv_socket(fd, want).ok_or_else(|| {
        StartError::Hygiene(std::io::Error::other(format!(
            "--fd={fd} is not an open AF_UNIX {want:?} socket"
        )))
    })
}

fn say(text: &str) -> ExitCode {
    let _ = writeln!(std::io::stdout(), "{text}");
    ExitCode::SUCCESS
}

fn fail(text: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "vmpriv-helper: {}", audit::escape(text));
    ExitCode::FAILURE
}
