//! The `unsafe` blocks both privileged binaries run: raw syscalls, ioctls and libc calls, each one
//! small, each with a `// SAFETY:` line naming the invariant it relies on. The session helper's own
//! (receiving datagrams and fds, the peer's groups, the ioctls on a tap fd a caller passed) are in
//! `helper/src/sys_session.rs`; everything else in both binaries is safe code.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigaction, sigprocmask};
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockType, SockaddrLike, SockaddrStorage, getsockname,
    getsockopt, sendmsg, sockopt,
};

/// The C convention of the calls here: a negative return is a failure, its reason in errno.
pub(crate) fn cvt<T: Default + PartialOrd>(r: T) -> io::Result<T> {
    if r < T::default() {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

const SIOCSIFHWADDR: libc::Ioctl = 0x8924;
const SIOCGIFHWADDR: libc::Ioctl = 0x8927;

/// Proof that the process is as `exec` left it: single-threaded, no Rust object owns an fd above 2 and
/// nothing holds a pointer into the environment (std's readers copy). The three steps that are sound
/// only then take it; [`Fresh::take`] gives it once.
pub(crate) struct Fresh(());

static FRESH_TAKEN: AtomicBool = AtomicBool::new(false);

impl Fresh {
    /// The first call in `main`, before anything opens an fd; `None` from the second call on.
    pub(crate) fn take() -> Option<Fresh> {
        (!FRESH_TAKEN.swap(true, Ordering::SeqCst)).then_some(Fresh(()))
    }
}

/// Closes every fd above 2 except `keep`.
pub(crate) fn close_fds_except(_: &Fresh, keep: Option<RawFd>) -> io::Result<()> {
    let close = |first: u32, last: u32| -> io::Result<()> {
        if first > last {
            return Ok(());
        }
        // SAFETY: close_range takes plain integers and only closes fds; no Rust object owns fds above 2
        // yet (`Fresh`), so nothing is left dangling.
        let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
        cvt(r).map(drop)
    };
    match keep.and_then(|k| u32::try_from(k).ok()).filter(|&k| k > 2) {
        None => close(3, u32::MAX),
        Some(k) => {
            close(3, k - 1)?;
            close(k.saturating_add(1), u32::MAX)
        }
    }
}

/// Empties the environment: nothing the caller set (`RUST_LOG`, `RUST_BACKTRACE`, `LD_*`, locale) is
/// ever read.
pub(crate) fn clear_environment(_: &Fresh) {
    // SAFETY: the process is single-threaded and nothing holds a pointer into the environment (`Fresh`).
    unsafe { libc::clearenv() };
}

/// Every signal back to its default disposition, SIGPIPE and SIGXFSZ ignored (a vanished peer or a
/// full file is an error return, not death), and nothing blocked: the caller chose the mask and dispositions it exec'd us with.
pub(crate) fn reset_signals() -> io::Result<()> {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SIGXFSZ too: with the caller's RLIMIT_FSIZE 0 and stderr on a file, a log line must fail
        // with EFBIG, not kill us half-way through a request.
        let action = if matches!(sig, Signal::SIGPIPE | Signal::SIGXFSZ) {
            SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty())
        } else {
            default
        };
        // SAFETY: installs SIG_DFL or SIG_IGN, no handler function, so no async-signal-safety concerns.
        unsafe { sigaction(sig, &action) }?;
    }
    // Real-time signals too (glibc keeps the first two for itself and refuses to touch them).
    for sig in libc::SIGRTMIN()..=libc::SIGRTMAX() {
        // SAFETY: `sigaction` is a plain C struct; all zeroes is SIG_DFL, an empty mask and no flags.
        let dfl: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: installs SIG_DFL (no handler function); `dfl` lives across the call.
        let r = unsafe { libc::sigaction(sig, &raw const dfl, std::ptr::null_mut()) };
        cvt(r)?;
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    Ok(())
}

/// Takes ownership of the socket fd that argv named, if it is open and an AF_UNIX socket of `ty`.
/// It takes [`Fresh`] for good: nothing else in the process owns the fd, and nothing can take it twice.
pub(crate) fn take_argv_socket(_: Fresh, fd: RawFd, ty: SockType) -> Option<OwnedFd> {
    // SAFETY: F_GETFD only reads the fd table entry.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return None;
    }
    // SAFETY: the fd is open (checked above) and stays open while it is borrowed here: this process is
    // single-threaded and nothing else owns it.
    let sock = unsafe { BorrowedFd::borrow_raw(fd) };
    let unix = getsockname::<SockaddrStorage>(fd).is_ok_and(|a| a.family() == Some(AddressFamily::Unix));
    if !unix || getsockopt(&sock, sockopt::SockType).ok() != Some(ty) {
        return None;
    }
    // SAFETY: the fd is open (checked) and no Rust object owns it: the process is fresh and this is the
    // one call that consumes `Fresh`.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `bytes` as one message, with `fds` as SCM_RIGHTS (no control message when there are none);
/// `MSG_NOSIGNAL`: a caller that hung up is an error, not a SIGPIPE.
pub(crate) fn send_datagram(sock: &OwnedFd, bytes: &[u8], fds: &[OwnedFd]) -> Result<(), Errno> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(bytes)],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

pub(crate) fn ifreq() -> libc::ifreq {
    // SAFETY: `ifreq` is a plain C struct (arrays and a union of integers); all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

pub(crate) fn ifr_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c.cast_unsigned())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `/dev/net/tun`'s device number (`MISC_MAJOR` 10, `TUN_MINOR` 200).
const TUN_RDEV: libc::dev_t = libc::makedev(10, 200);

/// An fd that is the tun character device: the only thing a tun ioctl is ever issued on, because the
/// same ioctl numbers mean other things to other drivers. Only [`TunFd::check`] makes one.
#[derive(Clone, Copy)]
pub(crate) struct TunFd<'a>(BorrowedFd<'a>);

impl<'a> TunFd<'a> {
    /// `fd` as a [`TunFd`] if fstat says it is the tun character device (10, 200); `None` otherwise.
    pub(crate) fn check(fd: BorrowedFd<'a>) -> io::Result<Option<Self>> {
        let st = nix::sys::stat::fstat(fd)?;
        let is_tun = st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == TUN_RDEV;
        Ok(is_tun.then_some(TunFd(fd)))
    }

    pub(crate) fn raw(self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// `TUNSETIFF` on `name` (at most 15 bytes; longer is refused, never cut) with `flags`.
pub(crate) fn tun_set_iff_named(tun: TunFd<'_>, name: &str, flags: i32) -> io::Result<String> {
    let mut ifr = ifreq();
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s.cast_signed();
    }
    // ifr_flags is a C `short`: IFF_TUN_EXCL (0x8000) is its sign bit.
    ifr.ifr_ifru.ifru_flags = u16::try_from(flags & 0xffff).unwrap_or(0).cast_signed();
    // SAFETY: `ifr` is a `libc::ifreq`, the struct TUNSETIFF reads and writes back, and it lives across
    // the call; `tun` is the tun device.
    let r = unsafe { libc::ioctl(tun.raw(), libc::TUNSETIFF, &raw mut ifr) };
    cvt(r)?;
    Ok(ifr_name(&ifr))
}

/// `TUNSETOWNER`: only this uid (or CAP_NET_ADMIN) may attach further queues.
pub(crate) fn tun_set_owner(tun: TunFd<'_>, uid: u32) -> io::Result<()> {
    tun_ioctl_value(tun, libc::TUNSETOWNER, libc::c_ulong::from(uid))
}

/// A tun ioctl that takes its argument by value.
pub(crate) fn tun_ioctl_value(tun: TunFd<'_>, request: libc::Ioctl, value: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the request is one of the tun ioctls that read their argument as a plain integer
    // (no pointer is passed); `tun` is the tun device.
    let r = unsafe { libc::ioctl(tun.raw(), request, value) };
    cvt(r).map(drop)
}

/// `TUNGETFEATURES`: the `IFF_*` flags this kernel's tun driver supports.
pub(crate) fn tun_get_features(tun: TunFd<'_>) -> io::Result<u32> {
    let mut features: libc::c_uint = 0;
    // SAFETY: TUNGETFEATURES writes one `unsigned int` to the pointer, which points at `features`.
    let r = unsafe { libc::ioctl(tun.raw(), libc::TUNGETFEATURES, &raw mut features) };
    cvt(r).map(|_| features)
}

/// `SIOCGIFHWADDR` on the tap fd itself (the tun driver answers it): no name lookup, no race.
pub(crate) fn tun_get_mac(tun: TunFd<'_>) -> io::Result<[u8; 6]> {
    let mut ifr = ifreq();
    // SAFETY: the tun driver copies a `struct ifreq` in and out for SIOCGIFHWADDR; `ifr` lives across the
    // call; `tun` is the tun device.
    let r = unsafe { libc::ioctl(tun.raw(), SIOCGIFHWADDR, &raw mut ifr) };
    cvt(r)?;
    // SAFETY: SIOCGIFHWADDR fills the `ifru_hwaddr` member of the union.
    let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    if sa.sa_family != libc::ARPHRD_ETHER {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = d.cast_unsigned();
    }
    Ok(mac)
}

/// `SIOCSIFHWADDR` on the tap fd: setting the MAC ourselves makes `addr_assign_type` "set", so udev's
/// `MACAddressPolicy=persistent` does not rewrite it after we reported it.
pub(crate) fn tun_set_mac(tun: TunFd<'_>, mac: [u8; 6]) -> io::Result<()> {
    let mut ifr = ifreq();
    ifr.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
    // SAFETY: writing plain integers into the `ifru_hwaddr` member we just initialised.
    let data = unsafe { &mut ifr.ifr_ifru.ifru_hwaddr.sa_data };
    for (d, m) in data.iter_mut().zip(mac) {
        *d = m.cast_signed();
    }
    // SAFETY: the tun driver reads a `struct ifreq` for SIOCSIFHWADDR; `ifr` lives across the call.
    let r = unsafe { libc::ioctl(tun.raw(), SIOCSIFHWADDR, &raw mut ifr) };
    cvt(r).map(drop)
}

/// `NETLINK_GET_STRICT_CHK` on a netlink socket: get requests are checked strictly and dumps honour
/// their filters (an address dump of one ifindex returns only that link's addresses).
pub(crate) fn netlink_strict_check(sock: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `&on`, which lives across the call.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_NETLINK,
            libc::NETLINK_GET_STRICT_CHK,
            (&raw const on).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4),
        )
    };
    cvt(r).map(drop)
}

/// Opens the syslog connection now (`LOG_NDELAY`), before Landlock closes the filesystem.
pub(crate) fn open_syslog() {
    // SAFETY: the ident is a `'static` NUL-terminated string, as openlog requires (it keeps the pointer).
    unsafe {
        libc::openlog(
            c"vmpriv-helper".as_ptr(),
            libc::LOG_PID | libc::LOG_NDELAY,
            libc::LOG_AUTHPRIV,
        );
    }
}

/// One syslog record.
pub(crate) fn syslog(priority: libc::c_int, msg: &CStr) {
    // SAFETY: a constant "%s" format with one NUL-terminated string argument.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), msg.as_ptr()) };
}

const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;

#[repr(C)]
struct LandlockRulesetAttr {
    handled_access_fs: u64,
}

#[repr(C, packed)]
struct LandlockPathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

const LANDLOCK_RULE_PATH_BENEATH: u32 = 1;
const ACCESS_FS_WRITE_FILE: u64 = 1 << 1;
const ACCESS_FS_READ_FILE: u64 = 1 << 2;
const ACCESS_FS_IOCTL_DEV: u64 = 1 << 15;
/// The 13 filesystem rights of Landlock ABI 1; ABI 2 adds REFER, 3 TRUNCATE, 5 IOCTL_DEV.
const ACCESS_FS_ABI1: u64 = (1 << 13) - 1;
const ACCESS_FS_REFER: u64 = 1 << 13;
const ACCESS_FS_TRUNCATE: u64 = 1 << 14;

/// What a Landlock rule lets the helper do beneath one directory or on one file.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Allow {
    /// Open the device read-write and use its ioctls (`/dev/net/tun`).
    Device,
    /// Open files beneath for writing (the per-interface sysctl directories).
    WriteBeneath,
    /// Open files beneath for reading (the bridges' sysfs directories).
    ReadBeneath,
}

/// Landlock: no further filesystem access except what `rules` allow (each an `O_PATH` fd on a file
/// or directory). Returns `Ok(false)` where the kernel lacks Landlock.
pub(crate) fn landlock_deny_filesystem(rules: &[(BorrowedFd<'_>, Allow)]) -> io::Result<bool> {
    // SAFETY: with a null attr, size 0 and the VERSION flag, the syscall only returns the ABI version.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if abi < 1 {
        return Ok(false);
    }
    let handled: u64 = match abi {
        1 => ACCESS_FS_ABI1,
        2 => ACCESS_FS_ABI1 | ACCESS_FS_REFER,
        3 | 4 => ACCESS_FS_ABI1 | ACCESS_FS_REFER | ACCESS_FS_TRUNCATE,
        _ => ACCESS_FS_ABI1 | ACCESS_FS_REFER | ACCESS_FS_TRUNCATE | ACCESS_FS_IOCTL_DEV,
    };
    let attr = LandlockRulesetAttr {
        handled_access_fs: handled,
    };
    // SAFETY: `attr` is the `#[repr(C)]` prefix of `struct landlock_ruleset_attr` and its size is passed.
    let ruleset = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &raw const attr,
            std::mem::size_of::<LandlockRulesetAttr>(),
            0u32,
        )
    };
    cvt(ruleset)?;
    let ruleset = RawFd::try_from(ruleset).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the syscall returned a new fd that nothing else owns.
    let ruleset = unsafe { OwnedFd::from_raw_fd(ruleset) };
    for &(fd, allow) in rules {
        let ioctl = if abi >= 5 { ACCESS_FS_IOCTL_DEV } else { 0 };
        let allowed_access = match allow {
            Allow::Device => ACCESS_FS_READ_FILE | ACCESS_FS_WRITE_FILE | ioctl,
            Allow::WriteBeneath => ACCESS_FS_WRITE_FILE,
            Allow::ReadBeneath => ACCESS_FS_READ_FILE,
        };
        let rule = LandlockPathBeneathAttr {
            allowed_access,
            parent_fd: fd.as_raw_fd(),
        };
        // SAFETY: `rule` is the packed `struct landlock_path_beneath_attr` the kernel reads for
        // LANDLOCK_RULE_PATH_BENEATH; it lives across the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset.as_raw_fd(),
                LANDLOCK_RULE_PATH_BENEATH,
                &raw const rule,
                0u32,
            )
        };
        cvt(r)?;
    }
    // SAFETY: restrict_self takes the ruleset fd and flags 0; no_new_privs is already set.
    let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) };
    cvt(r)?;
    Ok(true)
}

/// `AUDIT_ARCH_*` of the architecture this helper was built for: a filter checks it first, because
/// the same syscall number means another call under another ABI (x32 numbers carry bit 30 and so
/// never equal a number of the list).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: Option<u32> = Some(0xc000_003e);
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: Option<u32> = Some(0xc000_00b7);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: Option<u32> = None;

/// What serving a session needs once start-up is done, found with `strace -f -ff` over the scenario
/// tests (session and QEMU mode, every operation, multi-queue, destroy, leftovers, the MTU and IPv6
/// sysctl writes, logging), reading each helper's calls after `landlock_restrict_self`: the session
/// and netlink sockets, tun ioctls, `/dev/net/tun`, the sysctl files and a bridge's sysfs files
/// (beneath what Landlock left), fstatat/statx for the checks, fcntl for fd clones, memory, exit
/// (`ioctl` and `socket` only with some arguments: [`TAP_IOCTLS`], [`SOCKET_DOMAINS`]). Added
/// without being seen there: the allocator's growth (mmap, mremap, brk, madvise), futex (std's
/// locks), getrandom (std's hash keys, should a map be made after start-up), and what syslog may need (getpid, clock_gettime without a vDSO, and
/// `connect` with an `AF_UNIX` socket when it reconnects after journald restarts).
const SERVING_SYSCALLS: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_close,
    libc::SYS_openat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fcntl,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_connect,
    libc::SYS_getpid,
    libc::SYS_clock_gettime,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_brk,
    libc::SYS_madvise,
    libc::SYS_futex,
    libc::SYS_getrandom,
    libc::SYS_sigaltstack,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// `socket(2)` only for the log's `AF_UNIX` socket (glibc's syslog reconnects after journald restarts).
const SOCKET_DOMAINS: &[u32] = &[1]; // AF_UNIX

/// The kernel's `cmd` of an ioctl request: `ioctl(2)` is `SYSCALL_DEFINE3(ioctl, unsigned int fd,
/// unsigned int cmd, unsigned long arg)`, so every driver sees only the low 32 bits of the register.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub(crate) const fn cmd(request: libc::Ioctl) -> u32 {
    request as u32
}

/// `ioctl(2)` only with the requests serving issues, all on a [`TunFd`]: these, the ones making a
/// tap, for both helpers; the session helper adds its own (`sys_session::SESSION_IOCTLS`). Found with
/// `strace -f -ff` over the scenario tests like [`SERVING_SYSCALLS`] (nothing std, nix or glibc's
/// syslog does while serving is an ioctl: no `FIONBIO`, no `FIOCLEX`, no `TCGETS`). Anything else, a
/// `SIOCSIFNAME` or a `TUNSETGROUP` included, kills the process.
pub(crate) const TAP_IOCTLS: &[u32] = &[
    cmd(libc::TUNSETIFF),
    cmd(libc::TUNSETOWNER),
    cmd(libc::TUNGETFEATURES),
    cmd(SIOCGIFHWADDR),
    cmd(SIOCSIFHWADDR),
];

// `struct seccomp_data`: nr at 0, arch at 4, args from 16, 8 bytes each (the low half of each first
// on little endian).
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARG0_LOW: u32 = 16;
const DATA_ARG1_LOW: u32 = 24;
const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K
const KILL: libc::sock_filter = bpf(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS);
const ALLOW: libc::sock_filter = bpf(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW);

const fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Allows syscall `nr` only when the low 32 bits of the argument at `offset` are one of `values`
/// (the high half is not read: see [`cmd`] for ioctl's; `socket`'s domain is an `int`); any other
/// value kills. Expects the syscall number in the accumulator and leaves it there for other syscalls.
fn allow_if_arg_in(nr: libc::c_long, offset: u32, values: &[u32]) -> Option<Vec<libc::sock_filter>> {
    let n = values.len();
    // Not `nr`: skip the load, the compares, KILL and ALLOW.
    let mut block = vec![
        bpf(JEQ_K, 0, u8::try_from(n + 3).ok()?, u32::try_from(nr).ok()?),
        bpf(LD_W_ABS, 0, 0, offset),
    ];
    for (i, &v) in values.iter().enumerate() {
        // Equal: jump over the compares left and KILL, to ALLOW; not equal: the next compare.
        block.push(bpf(JEQ_K, u8::try_from(n - i).ok()?, 0, v));
    }
    block.extend([KILL, ALLOW]);
    Some(block)
}

/// The seccomp program: another architecture is killed; each syscall of [`SERVING_SYSCALLS`] is
/// allowed, `socket` for `AF_UNIX` only, `ioctl` for `ioctls` only; everything else kills
/// the whole process (`SECCOMP_RET_KILL_PROCESS`: SIGSYS, no handler can catch it). `None` where this
/// architecture has no entry in [`AUDIT_ARCH`].
pub(crate) fn seccomp_program(ioctls: &[u32]) -> Option<Vec<libc::sock_filter>> {
    let mut prog = vec![
        bpf(LD_W_ABS, 0, 0, DATA_ARCH),
        bpf(JEQ_K, 1, 0, AUDIT_ARCH?),
        KILL,
        bpf(LD_W_ABS, 0, 0, DATA_NR),
    ];
    for &nr in SERVING_SYSCALLS {
        // Equal: fall through to ALLOW; not equal: skip it.
        prog.extend([bpf(JEQ_K, 0, 1, u32::try_from(nr).ok()?), ALLOW]);
    }
    prog.extend(allow_if_arg_in(libc::SYS_ioctl, DATA_ARG1_LOW, ioctls)?);
    prog.extend(allow_if_arg_in(libc::SYS_socket, DATA_ARG0_LOW, SOCKET_DOMAINS)?);
    prog.push(KILL);
    Some(prog)
}

/// Installs `prog` (from [`seccomp_program`]) on this process; needs no_new_privs, which
/// `drop_to_caller` set. From here on a syscall outside the list is the end of the process.
pub(crate) fn seccomp_install(prog: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `prog`, `len` instructions long; both live across the call, and the
    // kernel copies the program (it never writes through the pointer).
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &raw const fprog,
            0,
            0,
        )
    };
    cvt(r).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forks a child that sets no_new_privs, installs the helper's seccomp program, runs `then` and
    /// exits 0; returns its wait status. The child makes raw syscalls only (the test process has
    /// other threads, so nothing that could wait for their locks).
    fn in_filtered_child(then: impl FnOnce()) -> libc::c_int {
        let prog = seccomp_program(TAP_IOCTLS).expect("a filter for this architecture");
        // SAFETY: the child below only makes raw syscalls and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers.
            let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            if r != 0 || seccomp_install(&prog).is_err() {
                // SAFETY: ends the child without running the parent's atexit handlers.
                unsafe { libc::_exit(2) };
            }
            then();
            // SAFETY: as above.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child; `status` lives across the call.
        let r = unsafe { libc::waitpid(pid, &raw mut status, 0) };
        assert_eq!(r, pid);
        status
    }

    fn killed_by_sigsys(status: libc::c_int) -> bool {
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS
    }

    #[test]
    fn a_syscall_outside_the_list_kills_the_process_with_sigsys() {
        let status = in_filtered_child(|| {
            // SAFETY: getppid takes no argument; it is not on the list.
            unsafe { libc::syscall(libc::SYS_getppid) };
        });
        assert!(killed_by_sigsys(status), "status {status:#x}");
        let status = in_filtered_child(|| {
            // SAFETY: plain integers; execve is the call the filter exists to stop.
            unsafe { libc::syscall(libc::SYS_execve, 0, 0, 0) };
        });
        assert!(killed_by_sigsys(status), "status {status:#x}");
        let status = in_filtered_child(|| {
            // SAFETY: plain integers; a socket of another family than AF_UNIX.
            unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 0) };
        });
        assert!(killed_by_sigsys(status), "status {status:#x}");
    }

    #[test]
    fn what_serving_needs_passes_the_filter() {
        let status = in_filtered_child(|| {
            // SAFETY: a zero-length write to stderr.
            unsafe { libc::write(2, c"".as_ptr().cast(), 0) };
            // SAFETY: plain integers; the log's socket family.
            let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            // SAFETY: closes the socket just opened.
            unsafe { libc::close(fd) };
            // SAFETY: getpid takes no argument.
            unsafe { libc::getpid() };
        });
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status:#x}"
        );
    }

    /// A raw `ioctl(-1, request, 0)`: the filter decides on the numbers before the kernel looks at
    /// the fd (a listed request then fails with EBADF), so no fd is needed and none is touched.
    fn ioctl_on_no_fd(request: u64) -> libc::c_long {
        // SAFETY: plain integers; fd -1 is never open, so the kernel does nothing but fail.
        unsafe { libc::syscall(libc::SYS_ioctl, -1, request, 0) }
    }

    #[test]
    fn an_ioctl_outside_the_list_kills_the_process_with_sigsys() {
        const SIOCSIFNAME: u64 = 0x8923;
        let others = [
            SIOCSIFNAME,
            u64::from(cmd(libc::TUNSETGROUP)),
            u64::from(cmd(libc::FIONREAD)),
            u64::from(cmd(libc::TIOCGWINSZ)),
            u64::from(cmd(libc::FIONBIO)),
            // The session helper's, not the bridge helper's.
            u64::from(cmd(libc::TUNGETIFF)),
            u64::from(cmd(libc::TUNSETCARRIER)),
            // Ours in the high half, another in the low half: the kernel runs the low half.
            (u64::from(cmd(libc::TUNSETIFF)) << 32) | SIOCSIFNAME,
        ];
        for request in others {
            let status = in_filtered_child(|| {
                ioctl_on_no_fd(request);
            });
            assert!(
                killed_by_sigsys(status),
                "request {request:#x}: status {status:#x}"
            );
        }
    }

    #[test]
    fn every_listed_ioctl_passes_the_filter_whatever_its_high_half() {
        let status = in_filtered_child(|| {
            for &request in TAP_IOCTLS {
                // The kernel's `cmd` is the low half (musl passes a request with bit 31 set
                // sign-extended): the high half is not ours to judge.
                for high in [0u64, 0xffff_ffff] {
                    ioctl_on_no_fd((high << 32) | u64::from(request));
                }
            }
        });
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status:#x}"
        );
    }
}
