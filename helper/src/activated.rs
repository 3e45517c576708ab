//! Socket activation (`--socket-activated`, from systemd's `vmpriv.socket`): the session helper's own
//! start-up steps, run before and instead of the setuid ones that name the caller.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::getresuid;
use vmpriv_policy::Caller;

use crate::startup::{StartError, caller_of};
use crate::sys_session;

/// The fd systemd passes the first socket on (`SD_LISTEN_FDS_START`).
pub(crate) const LISTEN_FD: i32 = 3;

/// Socket activation, step 0: refuses unless root started us (real, effective and saved uid 0), as
/// systemd does. Setuid or file-capability runs have the caller's real uid and are refused: there the
/// caller chose fd 3, and `SO_PEERCRED` on a socket connected to someone else's process would name
/// that victim as our caller.
pub(crate) fn require_started_by_root() -> Result<(), StartError> {
    let ids = getresuid().map_err(|e| StartError::Identity(e.into()))?;
    if [ids.real, ids.effective, ids.saved].iter().all(|u| u.is_root()) {
        Ok(())
    } else {
        Err(StartError::Refused(
            "only root may start --socket-activated (systemd's vmpriv.socket does); a setuid or \
             file-capability helper serves its own caller only, with --session"
                .to_owned(),
        ))
    }
}

/// Socket activation: `LISTEN_PID` is us and `LISTEN_FDS` is 1 (`Accept=yes` passes one connection on
/// fd 3). Read before the environment is emptied.
pub(crate) fn check_listen_env() -> Result<(), StartError> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    if pid.as_deref() != Some(std::process::id().to_string().as_str()) || fds.as_deref() != Some("1") {
        return Err(StartError::Refused(
            "--socket-activated needs LISTEN_PID set to our pid and LISTEN_FDS=1 (vmpriv.socket has \
             Accept=yes)"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Socket activation, step 3: the caller is the peer of the connection, as the kernel recorded it at
/// connect(2): `SO_PEERCRED`'s effective uid and gid and `SO_PEERGROUPS`. A socket without peer
/// credentials (the kernel then reports pid 0, uid and gid -1) is refused, and so is a peer whose pid
/// this pid namespace cannot see (pid 0). Returns the caller and the peer's pid (for the log).
pub(crate) fn identify_peer(sock: &OwnedFd) -> Result<(Caller, i32), StartError> {
    let no_peer = |what: &str| StartError::Identity(io::Error::other(format!("no peer credentials: {what}")));
    let cred = nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| StartError::Identity(e.into()))?;
    if cred.pid() <= 0 {
        return Err(no_peer("pid 0"));
    }
    if cred.uid() == u32::MAX || cred.gid() == u32::MAX {
        return Err(no_peer("uid or gid -1"));
    }
    check_peer_userns(sock, cred.uid(), cred.pid())?;
    let groups = sys_session::peer_groups(sock.as_fd()).map_err(StartError::Identity)?;
    Ok((caller_of(cred.uid(), cred.gid(), groups), cred.pid()))
}

/// Socket activation: refuses a peer that is not in our user namespace. In one of its own, a user
/// with subordinate ids (setuid newuidmap/newgidmap) becomes any of them and drops its supplementary
/// groups, and `SO_PEERCRED`/`SO_PEERGROUPS` report that: `deny group` would not match, and each
/// subordinate uid would get its own `user *` quota. `SO_PEERPIDFD` (Linux 6.5) is the process that
/// connected; before 6.5, `pidfd_open` of `SO_PEERCRED`'s pid, which may have been reused since
/// connect(2) (the one race left). Its namespace is read from `/proc/PID/ns/user` and counts only if
/// that pidfd's process is still alive afterwards: then the pid named it throughout. Nothing leaves a
/// child user namespace for an ancestor, so "ours now" means "ours at connect(2)".
fn check_peer_userns(sock: &OwnedFd, uid: u32, pid: i32) -> Result<(), StartError> {
    let id = |what: &str, e: io::Error| StartError::Identity(io::Error::other(format!("{what}: {e}")));
    let pidfd = match nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::PeerPidfd) {
        Err(nix::errno::Errno::ENOPROTOOPT) => {
            sys_session::pidfd_open(pid).map_err(|e| id("pidfd_open", e))?
        }
        r => r.map_err(|e| id("SO_PEERPIDFD", e.into()))?,
    };
    // Another user's /proc/PID/ns/user needs CAP_SYS_PTRACE (vmpriv@.service's bounding set has it).
    let ns = |p: &str| {
        std::fs::metadata(p)
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| id(p, e))
    };
    let theirs = ns(&format!("/proc/{pid}/ns/user"))?;
    let mut alive = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    if poll(&mut alive, PollTimeout::ZERO).map_err(|e| id("poll", e.into()))? != 0 {
        return Err(id(
            "the peer",
            io::Error::other("exited before its user namespace was read"),
        ));
    }
    if theirs != ns("/proc/self/ns/user")? {
        return Err(StartError::Refused(format!(
            "refused uid {uid} pid {pid}: it connected from a user namespace of its own, where its \
             ids and groups are its own choice (connect from the host's user namespace)"
        )));
    }
    Ok(())
}
