//! Start-up steps, in the order `main` runs them and under the numbers docs/design.md gives them
//! ("Start-up sequence", which says why each is there). Each is one function, testable alone.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::process::ExitCode;

use caps::{CapSet, Capability, CapsHashSet};
use nix::fcntl::{OFlag, openat};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::stat::{Mode, umask};
use nix::unistd::{
    AccessFlags, Gid, Group, Uid, User, access, getgid, getgroups, getresgid, getresuid, getuid, setgroups,
    setresgid, setresuid,
};
use vmpriv_policy::Caller;
use vmpriv_policy::policy::{self, Policy};
use vmpriv_policy::trust;

use crate::netlink::Netlink;
use crate::sys;

/// Why the helper refuses to start. Each says what to fix.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error("cannot close the file descriptors we inherited: {0}")]
    CloseFds(io::Error),
    #[error("cannot reset signal dispositions and the signal mask: {0}")]
    Signals(io::Error),
    #[error("cannot make the process non-dumpable: {0}")]
    Dumpable(io::Error),
    #[error("cannot reset {0:?}: {1}")]
    Rlimit(Resource, io::Error),
    #[error("--fd={fd} is not an open AF_UNIX {kind} socket")]
    Socket { fd: i32, kind: &'static str },
    #[error(
        "no CAP_NET_ADMIN: install the helper setuid root (chown root:root, chmod 4755) or with \
         `setcap cap_net_admin+ep`, on a filesystem not mounted nosuid, and do not run it under no_new_privs"
    )]
    NoNetAdmin,
    #[error("cannot read the caller's identity: {0}")]
    Identity(io::Error),
    #[error("{0}")]
    PolicyFile(String),
    #[error("policy error (every request is refused until it is fixed): {0}")]
    Policy(#[from] vmpriv_policy::PolicyError),
    #[error("--policy is for root only (a setuid caller cannot choose the policy file)")]
    PolicyNotRoot,
    #[error("cannot open /dev/net/tun: {0}")]
    Tun(io::Error),
    #[error("cannot drop privileges: {0}")]
    Drop(io::Error),
    #[error("cannot open a route netlink socket: {0}")]
    Netlink(io::Error),
    #[error("cannot open /proc/sys/net/ipv6/conf: {0}")]
    Sysctl(io::Error),
    #[error("cannot confine the filesystem with Landlock, which this kernel has: {0}")]
    Landlock(io::Error),
    #[error("cannot install the seccomp filter: {0}")]
    Seccomp(io::Error),
    #[error("the session socket failed: {0}")]
    Session(io::Error),
    #[error("{0}")]
    Refused(String),
}

/// Step 1: every fd above 2 closed (except `keep`), empty environment, default signals, umask 077,
/// not dumpable, rlimits the caller cannot have shrunk to make us fail half-way. Fds 0–2 are open
/// already: Rust's runtime reopens a closed one on /dev/null before `main` (and aborts if it cannot),
/// so no fd we open later can become stderr.
pub(crate) fn sanitize_process(fresh: &sys::Fresh, keep: Option<i32>) -> Result<(), StartError> {
    sys::close_fds_except(fresh, keep).map_err(StartError::CloseFds)?;
    sys::clear_environment(fresh);
    sys::reset_signals().map_err(StartError::Signals)?;
    umask(Mode::from_bits_truncate(UMASK));
    // Not dumpable: the caller (same real uid) can neither ptrace us nor read /proc/PID/mem.
    nix::sys::prctl::set_dumpable(false).map_err(|e| StartError::Dumpable(e.into()))?;
    reset_rlimits()
}

/// Nothing the helper creates is for anyone else.
const UMASK: u32 = 0o077;
/// RLIMIT_NOFILE restored when the caller lowered it: the tun pool is at most 64, plus a request's fds.
const NOFILE: u64 = 1024;

/// The caller picks our rlimits. With RLIMIT_FSIZE 0 or RLIMIT_NOFILE 4 a half-finished request could
/// fail where it cannot roll back; as root we can restore sane values. Without CAP_SYS_RESOURCE (a
/// file-capability install, a sandbox's bounding set) a hard limit cannot go up (EPERM): the soft one
/// then goes as far as the hard one allows, and requests beyond it fail cleanly up front. Any other
/// failure ends the start-up.
fn reset_rlimits() -> Result<(), StartError> {
    use Resource::{RLIMIT_AS, RLIMIT_CORE, RLIMIT_CPU, RLIMIT_DATA, RLIMIT_FSIZE, RLIMIT_NOFILE};
    let unlimited = [RLIMIT_FSIZE, RLIMIT_AS, RLIMIT_DATA, RLIMIT_CPU].map(|r| (r, libc::RLIM_INFINITY));
    let mut limits = vec![(RLIMIT_CORE, 0), (RLIMIT_NOFILE, NOFILE)];
    limits.extend(unlimited);
    for (r, want) in limits {
        let set = setrlimit(r, want, want).or_else(|e| match e {
            nix::errno::Errno::EPERM => getrlimit(r).and_then(|(_, hard)| setrlimit(r, want.min(hard), hard)),
            e => Err(e),
        });
        set.map_err(|e| StartError::Rlimit(r, e.into()))?;
    }
    Ok(())
}

/// Step 3: the caller is our real uid and gid and supplementary groups, with names for policy matching.
pub(crate) fn identify_caller() -> Result<Caller, StartError> {
    let groups = getgroups().map_err(|e| StartError::Identity(e.into()))?;
    Ok(caller_of(
        getuid().as_raw(),
        getgid().as_raw(),
        groups.iter().map(|g| g.as_raw()),
    ))
}

/// A caller from its ids (the supplementary groups deduplicated, without the primary gid), with names
/// for policy matching.
pub(crate) fn caller_of(uid: u32, gid: u32, groups: impl IntoIterator<Item = u32>) -> Caller {
    let mut supplementary = Vec::new();
    for g in groups {
        if g != gid && !supplementary.contains(&g) {
            supplementary.push(g);
        }
    }
    let user = User::from_uid(Uid::from_raw(uid)).ok().flatten().map(|u| u.name);
    let groups = std::iter::once(&gid)
        .chain(&supplementary)
        .filter_map(|&g| Group::from_gid(Gid::from_raw(g)).ok().flatten())
        .map(|g| g.name)
        .collect();
    Caller {
        uid,
        user,
        gid,
        supplementary,
        groups,
    }
}

/// Whether this process can act as CAP_NET_ADMIN at all (setuid root, file capability, or root).
pub(crate) fn check_privilege() -> Result<(), StartError> {
    match caps::has_cap(None, CapSet::Permitted, Capability::CAP_NET_ADMIN) {
        Ok(true) => Ok(()),
        _ => Err(StartError::NoNetAdmin),
    }
}

/// Step 4: the policy, from the fixed path, or from `--policy` when the real uid is root.
pub(crate) fn load_policy(caller: &Caller, path: Option<&str>) -> Result<Policy, StartError> {
    if path.is_some() && caller.uid != 0 {
        return Err(StartError::PolicyNotRoot);
    }
    let path = path.unwrap_or(policy::POLICY_PATH);
    let text = read_trusted(path).map_err(|e| StartError::PolicyFile(format!("{path}: {e}")))?;
    Ok(policy::parse(path, &text, &mut read_trusted)?)
}

/// Opens `path` component by component from `/`, without following symlinks, and refuses it unless the
/// file and every directory on the way are owned by root and not writable by group or others (checked
/// with fstat on the opened fds, as sudo does, so nothing can be swapped between check and read). The
/// decisions are `vmpriv_policy::trust`'s, which `vmpriv check-policy` shares.
pub(crate) fn read_trusted(path: &str) -> Result<String, String> {
    let (dirs, last) = trust::split(path).map_err(|e| e.to_string())?;
    let mut dir = File::open("/").map_err(|e| format!("cannot open /: {e}"))?;
    check_stat(&dir, "/", trust::check_dir)?;
    // Messages name each directory by its whole path ("/etc/vmpriv is writable…").
    let mut walked = String::new();
    for part in dirs {
        walked.push('/');
        walked.push_str(part);
        trust::check_dir_name(part).map_err(|e| e.to_string())?;
        let next = openat(
            dir.as_fd(),
            part,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("{part}: {e}"))?;
        let next = File::from(next);
        check_stat(&next, &walked, trust::check_dir)?;
        dir = next;
    }
    let file = openat(
        dir.as_fd(),
        last,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| e.desc().to_owned())?;
    let mut file = File::from(file);
    check_stat(&file, "the file", trust::check_file)?;
    let mut text = String::new();
    Read::by_ref(&mut file)
        .take(trust::POLICY_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    trust::check_size(text.len() as u64).map_err(|e| e.to_string())?;
    Ok(text)
}

/// fstat on the opened fd, judged by `check`.
fn check_stat(
    f: &File,
    what: &str,
    check: fn(&str, trust::Stat) -> Result<(), trust::TrustError>,
) -> Result<(), String> {
    let meta = f.metadata().map_err(|e| e.to_string())?;
    let st = trust::Stat {
        uid: meta.uid(),
        mode: meta.mode(),
    };
    check(what, st).map_err(|e| e.to_string())
}

/// Step 7, the last: the seccomp allow-list ([`sys::seccomp_program`]), with the binary's own ioctl
/// requests. Built before it is installed: once it is, a syscall outside the list kills the process.
pub(crate) fn allow_only_serving_syscalls(ioctls: &[u32]) -> Result<(), StartError> {
    let Some(prog) = sys::seccomp_program(ioctls) else {
        log::warn!("no seccomp filter for this architecture; relying on the privilege drop alone");
        return Ok(());
    };
    sys::seccomp_install(&prog).map_err(StartError::Seccomp)
}

/// `/dev/net/tun` fds a session opens while it still may: enough for its quota's worth of single-queue
/// taps plus one multi-queue tap, never more than this.
const SESSION_TUN_FDS_MAX: u32 = 64;
/// fds kept free for everything else: stdio, the socket, netlink, a request's own fds.
const FDS_RESERVED: u64 = 12;

/// What the helper opens while it is still root, for use after the drop.
pub(crate) struct RootHeld {
    /// Pre-opened `/dev/net/tun` fds (none where the caller may open the device itself).
    pub(crate) tun_pool: Vec<OwnedFd>,
    /// An `O_PATH` fd on `/dev/net/tun`, for the Landlock rule that keeps it openable.
    pub(crate) tun_path: Option<OwnedFd>,
    /// The route netlink socket.
    pub(crate) nl: Netlink,
    /// `O_PATH` on `/proc/sys/net/ipv6/conf` (absent without IPv6): new taps get router
    /// advertisements, autoconfiguration and redirects turned off there.
    pub(crate) ipv6_conf: Option<OwnedFd>,
    /// `O_PATH` on `/sys/devices/virtual/net` (absent without sysfs), where a bridge's
    /// `addr_assign_type` says whether its MAC is fixed: rtnetlink does not carry it.
    pub(crate) sys_net: Option<OwnedFd>,
}

/// Step 5: the `/dev/net/tun` fds (bounded by the caller's quota and RLIMIT_NOFILE; one in QEMU
/// mode) and the netlink socket. `real_uid_is_caller` is false when socket
/// activation made us root for a caller who is not our real uid.
pub(crate) fn open_what_needs_root(
    quota: u32,
    one_shot: bool,
    real_uid_is_caller: bool,
) -> Result<RootHeld, StartError> {
    // Where the caller may open /dev/net/tun itself (mode 0666 on most distributions; access(2) checks
    // the real uid), the helper opens it on demand, so a session has no fd budget at all. Socket
    // activated, the real uid is root's, whose answer says nothing about the caller: open the pool
    // (past it, a new connection is a new session with a new pool).
    let caller_opens_tun =
        real_uid_is_caller && access("/dev/net/tun", AccessFlags::R_OK | AccessFlags::W_OK).is_ok();
    // Where the caller's RLIMIT_NOFILE could not be raised (no CAP_SYS_RESOURCE), leave room for the
    // fds a request needs; a session that runs out answers `Unsupported(TunFds)`, never half-done.
    let room = getrlimit(Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft.saturating_sub(FDS_RESERVED));
    // No grant, no tap: a caller the policy gives no tap gets no tun fd either.
    let wanted = if quota == 0 {
        0
    } else if one_shot {
        1
    } else {
        quota.saturating_add(7).min(SESSION_TUN_FDS_MAX)
    };
    let pool = if caller_opens_tun {
        0
    } else {
        u64::from(wanted).min(room)
    };
    let tun_pool = open_tun_fds(usize::try_from(pool).unwrap_or(0))?;
    let tun_path = nix::fcntl::open("/dev/net/tun", OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).ok();
    let nl = Netlink::open().map_err(StartError::Netlink)?;
    let ipv6_conf = match nix::fcntl::open(
        "/proc/sys/net/ipv6/conf",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Some(fd),
        Err(nix::errno::Errno::ENOENT) => None, // no IPv6 in this kernel: nothing to turn off
        Err(e) => return Err(StartError::Sysctl(e.into())),
    };
    // Bridges have no parent device, so they all live here (/sys/class/net only links here, and a
    // Landlock rule there would not cover them). No sysfs: every attach to a switch is refused.
    let dir = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    Ok(RootHeld {
        tun_pool,
        tun_path,
        nl,
        ipv6_conf,
        sys_net: nix::fcntl::open("/sys/devices/virtual/net", dir, Mode::empty()).ok(),
    })
}

/// Opens `count` fds on `/dev/net/tun` while we may still (it is mode 0600 on some systems). Where
/// even we may not (a file-capability install, which has no CAP_DAC_OVERRIDE) the session starts with
/// none and says so in the log: every tap request then answers `Unsupported(TunFds)`. Any other
/// failure stops the start-up.
fn open_tun_fds(count: usize) -> Result<Vec<OwnedFd>, StartError> {
    let mut fds = Vec::with_capacity(count);
    for _ in 0..count {
        match open_tun() {
            Ok(fd) => fds.push(fd),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                log::warn!("cannot open /dev/net/tun ({e}); this session has no tun fds");
                break;
            }
            Err(e) => return Err(StartError::Tun(e)),
        }
    }
    Ok(fds)
}

/// `/dev/net/tun`, read-write: for the start-up pool, and later where the device is open to the caller.
pub(crate) fn open_tun() -> io::Result<OwnedFd> {
    let tun = nix::fcntl::open("/dev/net/tun", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
    Ok(tun)
}

/// Step 6: become the caller (uid, gid, groups) holding CAP_NET_ADMIN and nothing else, in every set (the
/// bounding set where we hold CAP_SETPCAP); then no_new_privs, and every id read back. Order matters: keep
/// capabilities across setresuid, re-raise, then shrink the bounding set, then effective before permitted.
pub(crate) fn drop_to_caller(caller: &Caller) -> Result<(), StartError> {
    let d = StartError::Drop;
    let c = |e: caps::errors::CapsError| StartError::Drop(io::Error::other(e.to_string()));
    let uid = Uid::from_raw(caller.uid);
    let gid = Gid::from_raw(caller.gid);
    let res = getresuid().map_err(|e| d(e.into()))?;
    if res.effective != uid || res.saved != uid || getresgid().map_err(|e| d(e.into()))?.effective != gid {
        nix::sys::prctl::set_keepcaps(true).map_err(|e| d(e.into()))?;
        let groups: Vec<Gid> = caller.supplementary.iter().map(|&g| Gid::from_raw(g)).collect();
        setgroups(&groups).map_err(|e| d(e.into()))?;
        setresgid(gid, gid, gid).map_err(|e| d(e.into()))?;
        setresuid(uid, uid, uid).map_err(|e| d(e.into()))?;
        nix::sys::prctl::set_keepcaps(false).map_err(|e| d(e.into()))?;
        let permitted = caps::read(None, CapSet::Permitted).map_err(c)?;
        caps::set(None, CapSet::Effective, &permitted).map_err(c)?;
    }
    let keep: CapsHashSet = std::iter::once(Capability::CAP_NET_ADMIN).collect();
    // Shrinking the bounding set needs CAP_SETPCAP, which a file-capability install (cap_net_admin+ep)
    // never has; there no_new_privs alone keeps exec from granting anything.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in caps::all() {
            if cap != Capability::CAP_NET_ADMIN && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false)
            {
                caps::drop(None, CapSet::Bounding, cap).map_err(c)?;
            }
        }
    }
    caps::clear(None, CapSet::Inheritable).map_err(c)?;
    caps::clear(None, CapSet::Ambient).map_err(c)?;
    caps::set(None, CapSet::Effective, &keep).map_err(c)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(c)?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| d(e.into()))?;
    // Setting uids resets the dumpable flag: set it again.
    nix::sys::prctl::set_dumpable(false).map_err(|e| d(e.into()))?;
    // Every id is the caller's now, or we stop: a drop that half-failed must not serve.
    let (u, g) = (
        getresuid().map_err(|e| d(e.into()))?,
        getresgid().map_err(|e| d(e.into()))?,
    );
    if [u.real, u.effective, u.saved] != [uid; 3] || [g.real, g.effective, g.saved] != [gid; 3] {
        return Err(d(io::Error::other("still not the caller's uid and gid")));
    }
    Ok(())
}

/// Step 6, after the drop: Landlock leaves the filesystem closed but for `/dev/net/tun`, the IPv6
/// sysctl directory (write) and the bridges' sysfs (read); the `O_PATH` fd on the device is no longer
/// needed after.
pub(crate) fn confine_filesystem(mut held: RootHeld) -> Result<RootHeld, StartError> {
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
        // Ok(false): this kernel has no Landlock (a property of the host, `cat /sys/kernel/security/lsm`,
        // not news on every connection); the privilege drop and seccomp confine alone.
        Ok(_) => {}
        // The kernel has Landlock and refused our rules: something is off; do not serve without it.
        Err(e) => return Err(StartError::Landlock(e)),
    }
    drop(allowed);
    held.tun_path = None;
    Ok(held)
}

/// The exit status of a start-up refused for the policy file (missing, not root's, unparsable): the
/// client reports it as a policy error, not as a helper that is missing or not privileged.
const EXIT_POLICY: u8 = 6;

/// The exit status of a run, with its one stderr line on refusal.
pub(crate) fn exit_code(result: Result<(), StartError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (StartError::Policy(_) | StartError::PolicyFile(_) | StartError::PolicyNotRoot)) => {
            fail(&e.to_string());
            ExitCode::from(EXIT_POLICY)
        }
        Err(e) => fail(&e.to_string()),
    }
}

/// A state the code rules out (a validated index out of range, the kernel answering outside its
/// contract): its own audit line, the caller's one stderr line, and the process ends as if killed
/// (docs/design.md, "All or nothing", says what that leaves), instead of posing as a kernel error.
pub(crate) fn impossible(what: &str) -> ! {
    log::error!("impossible: {what}; ending the session");
    fail("internal error: ending the session (the system log says more)");
    std::process::exit(EXIT_IMPOSSIBLE)
}

/// `EX_SOFTWARE`: the helper's own fault.
const EXIT_IMPOSSIBLE: i32 = 70;

/// `--help` or `--version`: the text on stdout.
pub(crate) fn say(text: &str) -> ExitCode {
    let _ = writeln!(io::stdout(), "{text}");
    ExitCode::SUCCESS
}

/// The one stderr line of a refusal, in one write, escaped, without Rust's "(os error N)" suffixes.
pub(crate) fn fail(text: &str) -> ExitCode {
    let line = format!(
        "{}: {}\n",
        crate::NAME,
        crate::audit::escape(&without_os_error(text))
    );
    let _ = io::stderr().write_all(line.as_bytes());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_lines_drop_the_os_error_suffix_and_nothing_else() {
        let cut = without_os_error;
        assert_eq!(
            cut("/dev/net/tun: Permission denied (os error 13)"),
            "/dev/net/tun: Permission denied"
        );
        assert_eq!(cut("a (os error 1) and b (os error 22)."), "a and b.");
        // Not the suffix: no digits, other characters, or no closing parenthesis.
        for kept in [
            "x (os error )",
            "x (os error 1a)",
            "x (os error 12",
            "x (os error",
        ] {
            assert_eq!(cut(kept), kept);
        }
    }
}
