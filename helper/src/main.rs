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
use std::os::unix::fs::MetadataExt;
use std::process::ExitCode;

use nix::sys::socket::SockType;
use vmpriv_helper::args::{self, Mode};
use vmpriv_helper::netlink::Netlink;
use vmpriv_helper::ops::Ctx;
use vmpriv_helper::startup::{self, StartError};
use vmpriv_helper::{audit, session, sys};

/// `/dev/net/tun` fds a session opens while it still may: enough for its quota's worth of single-queue
/// taps plus one multi-queue tap, never more than this.
const SESSION_TUN_FDS_MAX: u32 = 64;
/// fds kept free for everything else: stdio, the socket, netlink, a request's own fds.
const FDS_RESERVED: u64 = 12;

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
    let quota = policy.quota_for(&caller);
    // Where the caller's RLIMIT_NOFILE could not be raised (no CAP_SYS_RESOURCE), leave room for the
    // fds a request needs; a session that runs out answers `Unsupported(TunFds)`, never half-done.
    let room = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(0, |(soft, _)| soft.saturating_sub(FDS_RESERVED));
    let wanted = if qemu.is_some() {
        1
    } else {
        quota.saturating_add(7).min(SESSION_TUN_FDS_MAX)
    };
    // Where the caller may open /dev/net/tun itself (mode 0666 on most distributions; access(2) checks
    // the real uid), the helper opens it on demand, so a session has no fd budget at all.
    let caller_opens_tun = nix::unistd::access(
        "/dev/net/tun",
        nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
    )
    .is_ok();
    let pool = if caller_opens_tun {
        0
    } else {
        u64::from(wanted).min(room)
    };
    let tun_pool = startup::open_tun_fds(usize::try_from(pool).unwrap_or(0)).unwrap_or_default();
    let tun_path: Option<OwnedFd> = nix::fcntl::open(
        "/dev/net/tun",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok();
    let netns = std::fs::metadata("/proc/self/ns/net")
        .map(|m| (m.dev(), m.ino()))
        .map_err(|e| StartError::Identity(std::io::Error::other(format!("/proc/self/ns/net: {e}"))))?;
    let nl = Netlink::open().map_err(StartError::Netlink)?;
    // 6. Become the caller with CAP_NET_ADMIN only, no_new_privs, then no more filesystem.
    startup::drop_to_caller(&caller)?;
    match sys::landlock_deny_filesystem(tun_path.as_ref().map(AsFd::as_fd)) {
        Ok(true) => {}
        Ok(false) => log::info!("landlock not available; relying on the privilege drop alone"),
        Err(e) => log::warn!("landlock failed ({e}); relying on the privilege drop alone"),
    }
    drop(tun_path);
    let mut ctx = Ctx {
        caller,
        policy,
        nl,
        tun_pool,
        netns,
        tun_features: None,
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
    let _ = writeln!(std::io::stderr(), "vmpriv-helper: {text}");
    ExitCode::FAILURE
}
