//! The library VM processes link to get taps from vmpriv's privileged helper.
//!
//! [`Helper::spawn`] connects to the socket-activated helper ([`SOCKET_PATH`]) or starts
//! `vmpriv-helper --session` on a `SOCK_SEQPACKET` socket pair, and checks the handshake; each call is
//! one blocking request. A [`Tap`] owns its queue fds: the tap lives exactly as long as some fd of it
//! is open, so dropping the `Tap` (or the VM process dying) removes it.
//!
//! ```no_run
//! use vmpriv_client::{Helper, TapOptions};
//!
//! let mut helper = Helper::spawn()?;
//! let tap = helper.create_tap(&TapOptions::new().switch("br0").vnet_hdr(true).local(1, 0, false))?;
//! println!("{} {:02x?} mtu {}", tap.name(), tap.mac(), tap.mtu());
//! let fds = tap.into_raw_fds(); // hand these to the VMM (e.g. cloud-hypervisor --net fd=...)
//! # Ok::<(), vmpriv_client::ClientError>(())
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bridge_conf;
pub mod check;
pub mod net_spec;
pub mod policy_text;
mod tap_fd;

pub use tap_fd::ByName;

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg, sendmsg,
    socketpair,
};
use vmpriv_protocol::wire::{self, FdIndex, MAX_FRAME, MAX_QUEUES, Request, Response};
pub use vmpriv_protocol::wire::{IfConfig, Invalid, LocalRequest, Status, TapInfo, Unsupported};
pub use vmpriv_protocol::{Inet4Pair, Inet6Pair};

/// Where the Debian package installs the helper (`packaging/build-deb.sh`).
pub const PACKAGED_HELPER: &str = "/usr/libexec/vmpriv/vmpriv-helper";
/// Where a helper installed by hand lives.
pub const INSTALLED_HELPER: &str = "/usr/local/libexec/vmpriv-helper";
/// The system paths [`find_helper`] tries, in order, after `VMPRIV_HELPER`.
pub const HELPER_SEARCH_PATH: [&str; 2] = [PACKAGED_HELPER, INSTALLED_HELPER];

/// Where `vmpriv.socket` (systemd socket activation, no setuid binary) listens.
pub const SOCKET_PATH: &str = "/run/vmpriv/vmpriv.sock";

/// Why a call failed. The helper's distinctions are kept: denied, quota, invalid, kernel, unsupported.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No helper binary was found.
    #[error(
        "vmpriv-helper not found: set VMPRIV_HELPER, install it as {PACKAGED_HELPER} or {INSTALLED_HELPER}, or put it beside this program"
    )]
    NotFound,
    /// The helper could not be started.
    #[error("cannot start {path}: {source}")]
    Spawn {
        /// The helper path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The helper exited before answering; it printed the reason on stderr.
    #[error(
        "vmpriv-helper exited ({status}) before answering: see its message above (usually: not installed \
         setuid root or with cap_net_admin, or a policy error)"
    )]
    HelperExited {
        /// Its exit status.
        status: ExitStatus,
    },
    /// The helper refused to start because of the policy file (missing, unsafe or unparsable); it
    /// printed the reason on stderr.
    #[error(
        "the vmpriv policy ({}) is missing, unsafe or has an error: see the helper's message above, \
         and `vmpriv check-policy`",
        vmpriv_protocol::POLICY_PATH
    )]
    Policy,
    /// A socket-activated helper closed the connection before the handshake: it refused to start.
    #[error(
        "the vmpriv-helper started for {} ended the connection before answering: it refused to start, \
         most often over the policy ({}; `vmpriv check-policy` checks it); its reason is in the \
         system journal (`journalctl -u 'vmpriv@*'`)",
        socket.display(),
        vmpriv_protocol::POLICY_PATH
    )]
    ActivatedRefused {
        /// The socket we connected to.
        socket: PathBuf,
    },
    /// The helper died or closed the session mid-call.
    #[error(
        "vmpriv-helper died or closed the session mid-call (its reason, if any, is on stderr above or in \
         the system log); start a new session"
    )]
    HelperDied,
    /// The policy does not grant this, or the object does not exist (one answer, by design).
    #[error(
        "denied: {} does not grant you this, or it does not exist (`vmpriv whoami` shows your grants)",
        vmpriv_protocol::POLICY_PATH
    )]
    Denied,
    /// The caller already owns as many live taps as its quota allows.
    #[error(
        "quota reached: all {limit} of your quota's taps are in use (close some, `vmpriv cleanup` removes \
         leftovers, or ask the admin for a larger quota)"
    )]
    Quota {
        /// The quota.
        limit: u32,
    },
    /// The request was invalid.
    #[error("invalid request: {0}")]
    Invalid(Invalid),
    /// The kernel refused.
    #[error("the kernel refused: {}", Errno::from_raw(*errno).desc())]
    Kernel {
        /// The errno.
        errno: i32,
    },
    /// The kernel or helper lacks a feature.
    #[error("unsupported here: {0}")]
    Unsupported(Unsupported),
    /// The helper speaks another protocol version.
    #[error(
        "protocol version mismatch: the helper speaks version {supported}, this library {}",
        wire::VERSION
    )]
    Version {
        /// The helper's version.
        supported: u8,
    },
    /// The helper's reply made no sense.
    #[error("unexpected reply from vmpriv-helper")]
    Protocol,
    /// A socket error on our side.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// A tap could not be opened by its name as its owner ([`Helper::remove_persistent`]); nothing
    /// was removed.
    #[error("{name}: {reason}")]
    ByName {
        /// The name given.
        name: String,
        /// Why.
        reason: ByName,
    },
}

impl From<vmpriv_protocol::Error> for ClientError {
    fn from(e: vmpriv_protocol::Error) -> Self {
        use vmpriv_protocol::Error as E;
        match e {
            E::Denied => ClientError::Denied,
            E::Quota { limit } => ClientError::Quota { limit },
            E::Invalid(i) => ClientError::Invalid(i),
            E::Kernel { errno } => ClientError::Kernel { errno },
            E::Unsupported(u) => ClientError::Unsupported(u),
            E::Version { supported } => ClientError::Version { supported },
        }
    }
}

/// What to ask for when creating a tap. `up` defaults to true.
#[derive(Debug, Clone)]
pub struct TapOptions {
    queues: u8,
    vnet_hdr: bool,
    config: IfConfig,
}

impl Default for TapOptions {
    fn default() -> Self {
        TapOptions {
            queues: 1,
            vnet_hdr: false,
            config: IfConfig {
                up: Some(true),
                ..IfConfig::default()
            },
        }
    }
}

impl TapOptions {
    /// One queue, no vnet header, up, nothing else.
    pub fn new() -> Self {
        Self::default()
    }
    /// Attach to this switch (bridge); the tap takes its MTU.
    pub fn switch(mut self, name: &str) -> Self {
        self.config.switch = Some(name.to_owned());
        self
    }
    /// `IFF_VNET_HDR`, for virtio-net offloads.
    pub fn vnet_hdr(mut self, on: bool) -> Self {
        self.vnet_hdr = on;
        self
    }
    /// Number of queues (fds), 1 to 8.
    pub fn queues(mut self, n: u8) -> Self {
        self.queues = n;
        self
    }
    /// Interface description.
    pub fn description(mut self, text: &str) -> Self {
        self.config.description = Some(text.to_owned());
        self
    }
    /// Interface group, by a name the policy defines.
    pub fn group(mut self, name: &str) -> Self {
        self.config.group = Some(name.to_owned());
        self
    }
    /// Routing domain (for a tap not on a switch).
    pub fn rdomain(mut self, n: u32) -> Self {
        self.config.rdomain = Some(n);
        self
    }
    /// Leave the tap down (or bring it up).
    pub fn up(mut self, up: bool) -> Self {
        self.config.up = Some(up);
        self
    }
    /// The local addresses of (vm, nic): an IPv4 /31, and an IPv6 /96 if `inet6`.
    pub fn local(mut self, vm: u32, nic: u32, inet6: bool) -> Self {
        self.config.local = Some(LocalRequest {
            vm,
            nic,
            inet: true,
            inet6,
        });
        self
    }
    /// The configuration part.
    pub fn config(&self) -> &IfConfig {
        &self.config
    }
}

/// A tap the helper created for us: its queue fds and what the helper reported. The tap exists as
/// long as one of its fds is open (in this process or in the VMM it was handed to). The helper closes
/// its own copies just after sending them, so a `Tap` dropped at once may outlive its drop by that
/// moment; after the next call on the same [`Helper`], or once the `Helper` is closed, it is gone.
///
/// ```no_run
/// # let mut helper = vmpriv_client::Helper::spawn()?;
/// let tap = helper.create_tap(&vmpriv_client::TapOptions::new().switch("br0").queues(2))?;
/// let fds = tap.into_raw_fds(); // e.g. cloud-hypervisor --net fd=[fds[0],fds[1]]
/// # Ok::<(), vmpriv_client::ClientError>(())
/// ```
#[derive(Debug)]
pub struct Tap {
    fds: Vec<OwnedFd>,
    info: TapInfo,
}

impl Tap {
    /// Interface name.
    pub fn name(&self) -> &str {
        &self.info.ifname
    }
    /// Interface index.
    pub fn ifindex(&self) -> u32 {
        self.info.ifindex
    }
    /// Link-layer address (first octet 0xFE).
    pub fn mac(&self) -> [u8; 6] {
        self.info.mac
    }
    /// The MAC as `fe:..:..`.
    pub fn mac_string(&self) -> String {
        self.info
            .mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
    /// MTU.
    pub fn mtu(&self) -> u32 {
        self.info.mtu
    }
    /// The local IPv4 /31, if asked for.
    pub fn inet(&self) -> Option<Inet4Pair> {
        self.info.inet
    }
    /// The local IPv6 /96, if asked for.
    pub fn inet6(&self) -> Option<Inet6Pair> {
        self.info.inet6
    }
    /// Everything the helper reported.
    pub fn info(&self) -> &TapInfo {
        &self.info
    }
    /// The queue fds.
    pub fn fds(&self) -> &[OwnedFd] {
        &self.fds
    }
    /// Gives up ownership of the queue fds, e.g. to hand them to a VMM across exec.
    pub fn into_raw_fds(self) -> Vec<RawFd> {
        self.fds.into_iter().map(IntoRawFd::into_raw_fd).collect()
    }
    /// Gives up ownership of the queue fds as `OwnedFd`s.
    pub fn into_fds(self) -> Vec<OwnedFd> {
        self.fds
    }
    /// Makes the tap persistent (`TUNSETPERSIST` through its fd, which needs no privilege): it
    /// outlives its fds, still counting against our quota, until [`Helper::remove_persistent`] or
    /// [`Helper::remove_leftovers`] deletes it. For VMMs that open a tap by name (Firecracker's
    /// `host_dev_name`).
    ///
    /// ```no_run
    /// # let mut helper = vmpriv_client::Helper::spawn()?;
    /// let tap = helper.create_tap(&vmpriv_client::TapOptions::new().switch("br0"))?;
    /// tap.set_persistent(true)?;
    /// println!("{}", tap.name()); // give this name to Firecracker
    /// drop(tap); // the tap stays
    /// # Ok::<(), vmpriv_client::ClientError>(())
    /// ```
    pub fn set_persistent(&self, on: bool) -> Result<(), ClientError> {
        tap_fd::set_persist(self.as_fd(), on).map_err(ClientError::Io)
    }
}

impl AsFd for Tap {
    /// The first queue's fd.
    fn as_fd(&self) -> BorrowedFd<'_> {
        // A Tap always has at least one fd: the helper sends `queues` >= 1 of them.
        self.fds
            .first()
            .map_or_else(|| unreachable!("a Tap has at least one fd"), AsFd::as_fd)
    }
}

/// A switch the policy grants and the kernel has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchInfo {
    /// Its name.
    pub name: String,
    /// Its index.
    pub ifindex: u32,
    /// Its MTU.
    pub mtu: u32,
}

/// A session with the helper.
pub struct Helper {
    sock: OwnedFd,
    origin: Origin,
}

/// Tries of one multi-queue [`Helper::create_tap`] that keeps losing its new tap to another user's
/// queue (EBUSY), each in a fresh session.
pub const MQ_CREATE_TRIES: u32 = 8;

/// [`Helper::create_taps`]' requests in the socket at most at once: far below what fills a socket
/// buffer with replies and their fds, so neither side ever blocks on the other's full buffer.
pub const PIPELINE_DEPTH: usize = 16;

/// How the session began, to begin a fresh one the same way when this one has used its tun fds.
enum Origin {
    /// We started this helper binary on a socket pair.
    Spawned { child: Child, path: PathBuf },
    /// We connected to this socket; systemd started a helper for the connection.
    Socket { path: PathBuf },
}

/// Makes `fd` (close-on-exec in this process) stay open, at the same number, in the program `cmd`
/// executes: how a socket reaches the helper, and how a VM launcher hands tap fds to its VMM.
///
/// ```no_run
/// # use std::os::fd::AsRawFd;
/// # let tap = vmpriv_client::Helper::spawn()?.create_tap(&Default::default())?;
/// let mut vmm = std::process::Command::new("cloud-hypervisor");
/// let fd = tap.fds()[0].as_raw_fd();
/// vmpriv_client::keep_fd_across_exec(&mut vmm, fd);
/// vmm.arg("--net").arg(format!("fd={fd}"));
/// # Ok::<(), vmpriv_client::ClientError>(())
/// ```
pub fn keep_fd_across_exec(cmd: &mut Command, fd: RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls fcntl(2), which is async-signal-safe, on an fd that is open in
    // the child (inherited across fork); it allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Finds the helper binary: `VMPRIV_HELPER`, then the packaged path, then the hand-installed one
/// ([`HELPER_SEARCH_PATH`]), then beside the current executable. ([`Helper::spawn`] tries the
/// socket-activated helper before the system paths.)
pub fn find_helper() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VMPRIV_HELPER") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = HELPER_SEARCH_PATH.iter().find(|p| Path::new(p).exists()) {
        return Some(PathBuf::from(p));
    }
    let beside = std::env::current_exe().ok()?.parent()?.join("vmpriv-helper");
    beside.exists().then_some(beside)
}

impl Helper {
    /// Begins a session and performs the handshake, trying in this order:
    /// 1. `VMPRIV_HELPER` set: start that binary (an explicit choice, never overridden);
    /// 2. `VMPRIV_SOCKET` set: connect to that socket (no fallback);
    /// 3. [`SOCKET_PATH`] accepts a connection: the socket-activated helper;
    /// 4. the binary [`find_helper`] finds (setuid root or with cap_net_admin).
    ///
    /// ```no_run
    /// let mut helper = vmpriv_client::Helper::spawn()?;
    /// let grants = helper.status()?;
    /// println!("{} of {} taps in use", grants.in_use, grants.quota);
    /// # Ok::<(), vmpriv_client::ClientError>(())
    /// ```
    pub fn spawn() -> Result<Helper, ClientError> {
        if std::env::var_os("VMPRIV_HELPER").is_none() {
            if let Some(socket) = std::env::var_os("VMPRIV_SOCKET") {
                return Helper::connect(Path::new(&socket));
            }
            // A socket file without a listener (vmpriv.socket stopped) is not an error: fall back.
            if let Ok(sock) = connect_seqpacket(Path::new(SOCKET_PATH)) {
                return Helper::begin(
                    sock,
                    Origin::Socket {
                        path: SOCKET_PATH.into(),
                    },
                );
            }
        }
        Helper::spawn_at(&find_helper().ok_or(ClientError::NotFound)?)
    }

    /// Connects to a socket-activated helper (`vmpriv.socket`) at `path` and performs the
    /// handshake. The helper takes our identity from the connection (`SO_PEERCRED`).
    ///
    /// ```no_run
    /// let mut helper = vmpriv_client::Helper::connect(vmpriv_client::SOCKET_PATH.as_ref())?;
    /// println!("quota {}", helper.status()?.quota);
    /// # Ok::<(), vmpriv_client::ClientError>(())
    /// ```
    pub fn connect(path: &Path) -> Result<Helper, ClientError> {
        let sock = connect_seqpacket(path).map_err(|source| ClientError::Spawn {
            path: path.to_owned(),
            source,
        })?;
        Helper::begin(
            sock,
            Origin::Socket {
                path: path.to_owned(),
            },
        )
    }

    /// Starts the helper at `path` and performs the handshake.
    pub fn spawn_at(path: &Path) -> Result<Helper, ClientError> {
        Helper::spawn_command(Command::new(path), path)
    }

    /// Starts `cmd` (a helper, possibly with extra arguments such as `--policy` for root) with
    /// `--session --fd=N` appended, and performs the handshake.
    pub fn spawn_command(mut cmd: Command, path: &Path) -> Result<Helper, ClientError> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        let fd = theirs.as_raw_fd();
        cmd.arg("--session").arg(format!("--fd={fd}"));
        keep_fd_across_exec(&mut cmd, fd);
        let child = cmd.spawn().map_err(|source| ClientError::Spawn {
            path: path.to_owned(),
            source,
        })?;
        drop(theirs);
        Helper::begin(
            ours,
            Origin::Spawned {
                child,
                path: path.to_owned(),
            },
        )
    }

    /// The handshake on a new session.
    fn begin(sock: OwnedFd, origin: Origin) -> Result<Helper, ClientError> {
        let mut helper = Helper { sock, origin };
        match helper.call(&Request::Hello, &[]) {
            Ok((Response::Hello { version }, _)) if version == wire::VERSION => Ok(helper),
            Ok((Response::Hello { version }, _)) => Err(ClientError::Version { supported: version }),
            Ok(_) => Err(ClientError::Protocol),
            Err(ClientError::HelperDied) => match &helper.origin {
                // A socket-activated helper that refused to start wrote why to the journal.
                Origin::Socket { path } => Err(ClientError::ActivatedRefused { socket: path.clone() }),
                Origin::Spawned { .. } => {
                    let status = helper.wait()?;
                    // 6: the helper's exit status for a policy-file refusal.
                    if status.code() == Some(6) {
                        Err(ClientError::Policy)
                    } else {
                        Err(ClientError::HelperExited { status })
                    }
                }
            },
            Err(e) => Err(e),
        }
    }

    /// The helper's process id. On a socket connection, the pid `SO_PEERCRED` reports: the process
    /// that listens (systemd), not the helper serving us (0 if unknown).
    pub fn pid(&self) -> u32 {
        match &self.origin {
            Origin::Spawned { child, .. } => child.id(),
            Origin::Socket { .. } => {
                nix::sys::socket::getsockopt(&self.sock, nix::sys::socket::sockopt::PeerCredentials)
                    .ok()
                    .and_then(|c| u32::try_from(c.pid()).ok())
                    .unwrap_or(0)
            }
        }
    }

    /// Reaps a spawned helper; a socket session has no child (its status is success once closed).
    fn wait(&mut self) -> std::io::Result<ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        match &mut self.origin {
            Origin::Spawned { child, .. } => child.wait(),
            Origin::Socket { .. } => Ok(ExitStatus::from_raw(0)),
        }
    }

    /// Sends one request with `fds` and returns the reply and the fds it carried.
    pub fn call(
        &mut self,
        req: &Request,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(Response, Vec<OwnedFd>), ClientError> {
        let frame = wire::encode(req).map_err(|_| ClientError::Protocol)?;
        self.send(&frame, fds)?;
        self.receive()
    }

    /// Sends raw bytes as one datagram with `fds` and returns the raw reply and its fds, undecoded.
    /// For testing the helper against malformed input; VM monitors use the typed calls.
    pub fn call_raw(
        &mut self,
        frame: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Result<(Vec<u8>, Vec<OwnedFd>), ClientError> {
        self.send(frame, fds)?;
        let (bytes, fds) = self.receive_raw()?;
        if bytes.is_empty() {
            return Err(ClientError::HelperDied);
        }
        Ok((bytes, fds))
    }

    /// Sends one datagram: `frame` with `fds` as SCM_RIGHTS.
    fn send(&self, frame: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), ClientError> {
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
        match sendmsg::<()>(
            self.sock.as_raw_fd(),
            &[IoSlice::new(frame)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => Ok(()),
            Err(Errno::EPIPE | Errno::ECONNRESET) => Err(ClientError::HelperDied),
            Err(e) => Err(std::io::Error::from(e).into()),
        }
    }

    /// The session socket, for tests that need to send what the typed calls never would.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    fn receive_raw(&mut self) -> Result<(Vec<u8>, Vec<OwnedFd>), ClientError> {
        let mut buf = vec![0u8; MAX_FRAME + 1];
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_QUEUES as usize]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = loop {
            match recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(Errno::EINTR) => {}
                Err(Errno::ECONNRESET) => return Err(ClientError::HelperDied),
                other => break other.map_err(std::io::Error::from)?,
            }
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: recvmsg just installed this fd in our table; nothing else owns it.
                    #[allow(unsafe_code)]
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        let n = msg.bytes.min(MAX_FRAME + 1);
        buf.truncate(n);
        Ok((buf, fds))
    }

    fn receive(&mut self) -> Result<(Response, Vec<OwnedFd>), ClientError> {
        let (bytes, fds) = self.receive_raw()?;
        if bytes.is_empty() {
            return Err(ClientError::HelperDied);
        }
        let response = wire::decode::<Response>(&bytes).map_err(|_| ClientError::Protocol)?;
        match response {
            Response::Error(e) => Err(e.into()),
            r => Ok((r, fds)),
        }
    }

    fn tap_call(&mut self, req: &Request, tap: BorrowedFd<'_>) -> Result<TapInfo, ClientError> {
        match self.call(req, &[tap])? {
            (Response::Tap(info), _) => Ok(info),
            _ => Err(ClientError::Protocol),
        }
    }

    /// Creates a tap owned by the caller, configured as `opts` asks, all or nothing.
    ///
    /// ```no_run
    /// use vmpriv_client::{Helper, TapOptions};
    /// let mut helper = Helper::spawn()?;
    /// // vmd's "local interface": vm 1, nic 0 gets host 100.64.1.2/31, the VM 100.64.1.3.
    /// let tap = helper.create_tap(&TapOptions::new().local(1, 0, true).description("vm1-if0"))?;
    /// assert_eq!(tap.inet().unwrap().vm().to_string(), "100.64.1.3");
    /// # Ok::<(), vmpriv_client::ClientError>(())
    /// ```
    ///
    /// Where `/dev/net/tun` is not open to us (mode 0600), a session can only use the tun fds its
    /// helper opened at start-up (our quota + 7, at most 64). When they run out, this starts a fresh
    /// session of the same helper binary (`spawn_at`, so without extra arguments a `spawn_command`
    /// gave) and asks again: the limits left are our quota and our RLIMIT_NOFILE. Taps we hold are
    /// not tied to a session. On a socket, the fresh session is a new connection to the same socket
    /// (a socket-activated helper always works from such a pool).
    ///
    /// Where `/dev/net/tun` is 0666, anyone may attach a queue to a new multi-queue tap in the moment
    /// before the helper makes it ours; the helper then deletes that tap and answers
    /// `Kernel { errno: EBUSY }`. This asks again in a fresh session, up to [`MQ_CREATE_TRIES`] tries
    /// in all, and returns that EBUSY only when every try lost.
    pub fn create_tap(&mut self, opts: &TapOptions) -> Result<Tap, ClientError> {
        let (mut tries, mut renewed_for_fds) = (1, false);
        loop {
            let r = self.create_tap_once(opts);
            match r {
                Err(ClientError::Unsupported(Unsupported::TunFds)) if !renewed_for_fds => {
                    renewed_for_fds = true;
                }
                // A fresh helper, not the same one again: against a spinning thief (ownership.rs), 8
                // tries in one helper left 7-15 % of creates failing, 8 fresh sessions 0-3 %, in
                // interleaved runs (why is not proven; each new process is placed on a CPU anew).
                Err(ClientError::Kernel { errno: libc::EBUSY })
                    if opts.queues > 1 && tries < MQ_CREATE_TRIES =>
                {
                    tries += 1;
                }
                other => return other,
            }
            let fresh = match &self.origin {
                Origin::Spawned { path, .. } => Helper::spawn_at(&path.clone())?,
                Origin::Socket { path } => Helper::connect(&path.clone())?,
            };
            let _old = std::mem::replace(self, fresh); // the old session ends on drop
        }
    }

    /// Creates a tap for each of `all`, in order, with their requests pipelined: up to
    /// [`PIPELINE_DEPTH`] are in the socket before their replies are read, so the helper goes from
    /// one create to the next without waiting for this process to be woken in between (on an idle
    /// 2-vCPU VM a round trip with no kernel work costs 60-70 µs, most of a request's overhead:
    /// docs/performance.md). All or nothing: on the first refusal no further request is sent, the
    /// replies already asked for are read, every tap made is closed (a tap goes with its last fd) and
    /// that refusal is returned. It does not retry as [`Helper::create_tap`] does (a multi-queue
    /// create another user spoiled, a session out of start-up tun fds): use that for those.
    ///
    /// ```no_run
    /// use vmpriv_client::{Helper, TapOptions};
    /// let mut helper = Helper::spawn()?;
    /// let nics = [TapOptions::new().switch("br0"), TapOptions::new().local(1, 1, true)];
    /// let taps = helper.create_taps(&nics)?;
    /// assert_eq!(taps.len(), 2);
    /// # Ok::<(), vmpriv_client::ClientError>(())
    /// ```
    pub fn create_taps(&mut self, all: &[TapOptions]) -> Result<Vec<Tap>, ClientError> {
        let frames = all
            .iter()
            .map(|opts| {
                let req = Request::CreateTap {
                    queues: opts.queues,
                    vnet_hdr: opts.vnet_hdr,
                    config: opts.config.clone(),
                };
                wire::encode(&req).map_err(|_| ClientError::Protocol)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut taps = Vec::with_capacity(all.len());
        let (mut sent, mut answered, mut refused) = (0, 0, None);
        while answered < sent || (refused.is_none() && sent < frames.len()) {
            while refused.is_none() && sent < frames.len() && sent - answered < PIPELINE_DEPTH {
                self.send(&frames[sent], &[])?;
                sent += 1;
            }
            let queues = usize::from(all[answered].queues);
            answered += 1;
            match self.receive() {
                Ok((Response::Tap(info), fds)) if fds.len() == queues => taps.push(Tap { fds, info }),
                Ok(_) => return Err(ClientError::Protocol),
                Err(e @ (ClientError::HelperDied | ClientError::Protocol | ClientError::Io(_))) => {
                    return Err(e);
                }
                // A refusal is one reply like any other: the session stays in step.
                Err(e) => refused = refused.or(Some(e)),
            }
        }
        match refused {
            Some(e) => Err(e),
            None => Ok(taps),
        }
    }

    fn create_tap_once(&mut self, opts: &TapOptions) -> Result<Tap, ClientError> {
        let req = Request::CreateTap {
            queues: opts.queues,
            vnet_hdr: opts.vnet_hdr,
            config: opts.config.clone(),
        };
        match self.call(&req, &[])? {
            (Response::Tap(info), fds) if fds.len() == usize::from(opts.queues) => Ok(Tap { fds, info }),
            _ => Err(ClientError::Protocol),
        }
    }

    /// Configures a tap we hold (in vmd's order, all or nothing).
    pub fn configure(&mut self, tap: impl AsFd, config: &IfConfig) -> Result<TapInfo, ClientError> {
        self.tap_call(
            &Request::Configure {
                tap: FdIndex(0),
                config: config.clone(),
            },
            tap.as_fd(),
        )
    }

    /// vmd's IFEXISTS: the switch exists, is a bridge, and the policy grants it.
    pub fn switch_exists(&mut self, switch: &str) -> Result<SwitchInfo, ClientError> {
        match self.call(
            &Request::SwitchExists {
                switch: switch.to_owned(),
            },
            &[],
        )? {
            (Response::Switch { name, ifindex, mtu }, _) => Ok(SwitchInfo { name, ifindex, mtu }),
            _ => Err(ClientError::Protocol),
        }
    }

    /// vmd's IFADD: one `Configure` that attaches the tap to `switch`.
    pub fn attach(&mut self, tap: impl AsFd, switch: &str) -> Result<TapInfo, ClientError> {
        let config = IfConfig {
            switch: Some(switch.to_owned()),
            ..IfConfig::default()
        };
        self.configure(tap, &config)
    }

    /// vmd's IFDESCR: one `Configure` that sets the description.
    pub fn set_description(&mut self, tap: impl AsFd, text: &str) -> Result<TapInfo, ClientError> {
        let config = IfConfig {
            description: Some(text.to_owned()),
            ..IfConfig::default()
        };
        self.configure(tap, &config)
    }

    /// vmd's IFRDOMAIN: one `Configure` that sets the routing domain.
    pub fn set_rdomain(&mut self, tap: impl AsFd, rdomain: u32) -> Result<TapInfo, ClientError> {
        let config = IfConfig {
            rdomain: Some(rdomain),
            ..IfConfig::default()
        };
        self.configure(tap, &config)
    }

    /// vmd's IFUP / IFDOWN: one `Configure` that brings the tap up or down.
    pub fn set_up(&mut self, tap: impl AsFd, up: bool) -> Result<TapInfo, ClientError> {
        let config = IfConfig {
            up: Some(up),
            ..IfConfig::default()
        };
        self.configure(tap, &config)
    }

    /// vmd's IFGROUP: one `Configure` that sets the interface group.
    pub fn set_group(&mut self, tap: impl AsFd, group: &str) -> Result<TapInfo, ClientError> {
        let config = IfConfig {
            group: Some(group.to_owned()),
            ..IfConfig::default()
        };
        self.configure(tap, &config)
    }

    /// vmd's IFADDR: one `Configure` that adds the host side of (vm, nic)'s /31.
    pub fn add_local_inet(&mut self, tap: impl AsFd, vm: u32, nic: u32) -> Result<TapInfo, ClientError> {
        self.add_local(tap, vm, nic, true, false)
    }

    /// vmd's IFADDR6: one `Configure` that adds the host side of (vm, nic)'s /96.
    pub fn add_local_inet6(&mut self, tap: impl AsFd, vm: u32, nic: u32) -> Result<TapInfo, ClientError> {
        self.add_local(tap, vm, nic, false, true)
    }

    fn add_local(
        &mut self,
        tap: impl AsFd,
        vm: u32,
        nic: u32,
        inet: bool,
        inet6: bool,
    ) -> Result<TapInfo, ClientError> {
        let config = IfConfig {
            local: Some(LocalRequest { vm, nic, inet, inet6 }),
            ..IfConfig::default()
        };
        self.configure(tap, &config)
    }

    /// vmd's GET_ADDR: name, index and MAC of a tap we hold.
    ///
    /// Needs no privilege, so the helper is not asked: the name comes from the fd (`TUNGETIFF`), the
    /// MAC from the fd (`SIOCGIFHWADDR`), index and MTU by that name. A tap that is not ours (its
    /// name is not our mark) or not named so in our network namespace is `Denied`, as the helper would
    /// say.
    pub fn link_addr(&mut self, tap: impl AsFd) -> Result<TapInfo, ClientError> {
        tap_fd::link_addr(tap.as_fd())
    }

    /// Undo configuration: detach, down, no description, group 0, local addresses removed.
    pub fn reset(&mut self, tap: impl AsFd) -> Result<TapInfo, ClientError> {
        self.tap_call(&Request::Reset { tap: FdIndex(0) }, tap.as_fd())
    }

    /// What the policy grants us and how much of our quota is in use.
    pub fn status(&mut self) -> Result<Status, ClientError> {
        match self.call(&Request::Status, &[])? {
            (Response::Status(s), _) => Ok(s),
            _ => Err(ClientError::Protocol),
        }
    }

    /// Removes our own taps that no fd holds any more (made persistent through their fds and closed):
    /// they count against our quota until removed. Returns how many went.
    ///
    /// ```no_run
    /// let mut helper = vmpriv_client::Helper::spawn()?;
    /// let removed = helper.remove_leftovers()?;
    /// println!("{removed} leftover taps removed");
    /// # Ok::<(), vmpriv_client::ClientError>(())
    /// ```
    pub fn remove_leftovers(&mut self) -> Result<u32, ClientError> {
        match self.call(&Request::RemoveLeftovers, &[])? {
            (Response::Removed { count }, _) => Ok(count),
            _ => Err(ClientError::Protocol),
        }
    }

    /// Deletes `taps` (ours) in kernel batches of up to 253, far faster than dropping them one by one
    /// (each tap that goes away on its own waits for its own RCU grace period). Returns how many went.
    /// If a batch is refused, nothing of that batch changed; the error is returned and the taps not
    /// destroyed by an earlier batch are dropped (so they go away one by one).
    ///
    /// ```no_run
    /// use vmpriv_client::{Helper, TapOptions};
    /// let mut helper = Helper::spawn()?;
    /// let taps: Vec<_> = (0..10)
    ///     .map(|_| helper.create_tap(&TapOptions::new().switch("br0")))
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(helper.destroy(taps)?, 10);
    /// # Ok::<(), vmpriv_client::ClientError>(())
    /// ```
    pub fn destroy(&mut self, taps: Vec<Tap>) -> Result<u32, ClientError> {
        let fds: Vec<BorrowedFd<'_>> = taps.iter().map(AsFd::as_fd).collect();
        let removed = self.destroy_fds(&fds)?;
        drop(taps); // our fds on taps that are gone
        Ok(removed)
    }

    /// Deletes our own persistent taps by name, all or none: each is opened by name as its owner
    /// (`TUNSETIFF` on `/dev/net/tun`, which the kernel allows only the tap's owner) and the fds prove
    /// them ours to the helper in one `DestroyTaps` batch. A name that is not a vmpriv tap of ours, a
    /// tap of another user, one a process holds or one that is not persistent is refused
    /// ([`ClientError::ByName`]) before anything is deleted. Needs `/dev/net/tun` open to us (most
    /// distributions ship it 0666); where it is not, [`Helper::remove_leftovers`] removes them all.
    ///
    /// ```no_run
    /// let mut helper = vmpriv_client::Helper::spawn()?;
    /// assert_eq!(helper.remove_persistent(&["vp3e8-0"])?, 1);
    /// # Ok::<(), vmpriv_client::ClientError>(())
    /// ```
    pub fn remove_persistent(&mut self, names: &[&str]) -> Result<u32, ClientError> {
        let fds = names
            .iter()
            .map(|&name| {
                tap_fd::open_by_name(name).map_err(|reason| ClientError::ByName {
                    name: name.to_owned(),
                    reason,
                })
            })
            .collect::<Result<Vec<OwnedFd>, _>>()?;
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        self.destroy_fds(&borrowed)
    }

    /// `DestroyTaps` on one fd per tap.
    fn destroy_fds(&mut self, all: &[BorrowedFd<'_>]) -> Result<u32, ClientError> {
        // One fd per tap proves it ours; a message carries at most MAX_DESTROY fds, so a larger batch
        // takes several messages, all but the last with `more`: the helper deletes the whole batch in
        // one kernel batch at the last.
        let chunks: Vec<&[BorrowedFd<'_>]> = all.chunks(usize::from(wire::MAX_DESTROY)).collect();
        let mut removed = 0u32;
        for (i, fds) in chunks.iter().enumerate() {
            let count = u8::try_from(fds.len()).map_err(|_| ClientError::Protocol)?;
            let more = i + 1 < chunks.len();
            match (more, self.call(&Request::DestroyTaps { count, more }, fds)?) {
                (true, (Response::Staged { .. }, _)) => {}
                (false, (Response::Removed { count }, _)) => removed = count,
                _ => return Err(ClientError::Protocol),
            }
        }
        Ok(removed)
    }

    /// Ends the session and waits for the helper to exit.
    pub fn close(mut self) -> Result<ExitStatus, ClientError> {
        let _ = nix::sys::socket::shutdown(self.sock.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        Ok(self.wait()?)
    }
}

/// A close-on-exec `SOCK_SEQPACKET` connection to the AF_UNIX socket at `path`.
fn connect_seqpacket(path: &Path) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{UnixAddr, connect, socket};
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    connect(sock.as_raw_fd(), &UnixAddr::new(path)?)?;
    Ok(sock)
}

impl Drop for Helper {
    /// Ends the session (the helper exits at EOF) and reaps the helper.
    fn drop(&mut self) {
        let _ = nix::sys::socket::shutdown(self.sock.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        let _ = self.wait();
    }
}
