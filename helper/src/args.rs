//! The command line, parsed strictly: the caller writes argv, so anything unknown, repeated or
//! conflicting is refused before anything else happens.

use std::ffi::OsString;

use super::argv::{is_info_flag, parse_fd, set_policy, unknown};

/// What the helper was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `--session --fd=N [--policy PATH]`: serve requests on the SOCK_SEQPACKET socket N until EOF.
    Session { fd: i32, policy: Option<String> },
    /// `--socket-activated`: serve the session protocol on fd 3, a connection systemd accepted
    /// (`Accept=yes`, `LISTEN_FDS=1`); the caller is the peer's `SO_PEERCRED`. Root-started only.
    Activated,
    /// `--help`
    Help,
    /// `--version`
    Version,
}

/// Why the command line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ArgError {
    #[error("unknown argument `{0}`")]
    Unknown(String),
    #[error("`{0}` given twice")]
    Repeated(&'static str),
    #[error("argument is not valid UTF-8")]
    NotUtf8,
    #[error("--fd needs a decimal fd number of 3 or more")]
    BadFd,
    #[error("--policy needs an absolute path")]
    BadPolicy,
    #[error("--fd is required")]
    NoFd,
    #[error(
        "QEMU's and libvirt's helper= contract (--br, --use-vnet) is vmpriv-bridge-helper's: \
         /usr/libexec/vmpriv/vmpriv-bridge-helper"
    )]
    BridgeHelper,
    #[error("--session is required")]
    NoMode,
    #[error("--socket-activated takes no other argument (its socket is fd 3, from systemd)")]
    ActivatedAlone,
}

/// The text for `--help` (and `--help --version`): usage, where the client looks for the helper, the
/// policy file and the exit status. Keep the search path in step with `vmpriv_client::find_helper`.
pub(crate) const USAGE: &str = concat!(
    "vmpriv-helper ",
    env!("CARGO_PKG_VERSION"),
    "
usage: vmpriv-helper --socket-activated    (as root, from systemd's vmpriv.socket)
       vmpriv-helper --session --fd=N [--policy PATH]
       vmpriv-helper --help | --version

Creates and configures taps for unprivileged VM processes, as the policy file allows: the session
helper of the vmpriv command and client library. Served by systemd's vmpriv.socket (the package
enables it); on a host without systemd an admin makes it setuid root (vmpriv-helper(8)). QEMU and
libvirt run vmpriv-bridge-helper instead.

Policy:   /etc/vmpriv/policy.conf; it, its includes and every directory above them must be owned
          by root and not writable by group or others (`vmpriv check-policy` checks). --policy
          PATH is accepted only when the real uid is root. The environment is ignored.
Found by: the vmpriv command looks at $VMPRIV_HELPER, then connects to $VMPRIV_SOCKET or
          /run/vmpriv/vmpriv.sock (--socket-activated from systemd's vmpriv.socket: no setuid
          bit needed), then /usr/libexec/vmpriv/vmpriv-helper, /usr/local/libexec/vmpriv-helper,
          then beside the vmpriv binary.
Exit:     0 done; 1 refused: bad usage, not privileged, or a request refused (one line on stderr,
          details in the system log); 6 policy file missing, not trusted or unparsable; 70 an
          internal error (a state the code rules out: the system log says which)."
);

/// Parses argv (without `argv[0]`).
pub(crate) fn parse(args: &[OsString]) -> Result<Mode, ArgError> {
    let mut session = false;
    let mut fd = None;
    let mut policy = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let arg = arg.to_str().ok_or(ArgError::NotUtf8)?;
        match arg {
            // Only these flags, in any mix: `--help --version` prints the help, which names the version.
            _ if is_info_flag(arg) && args.iter().all(|a| a.to_str().is_some_and(is_info_flag)) => {
                let help = args.iter().any(|a| matches!(a.to_str(), Some("--help" | "-h")));
                return Ok(if help { Mode::Help } else { Mode::Version });
            }
            "--socket-activated" if args.len() == 1 => return Ok(Mode::Activated),
            "--socket-activated" => return Err(ArgError::ActivatedAlone),
            "--session" => {
                if std::mem::replace(&mut session, true) {
                    return Err(ArgError::Repeated("--session"));
                }
            }
            "--use-vnet" => return Err(ArgError::BridgeHelper),
            "--policy" => {
                let p = iter.next().and_then(|p| p.to_str()).ok_or(ArgError::BadPolicy)?;
                set_policy(&mut policy, p)?;
            }
            _ => {
                if let Some(v) = arg.strip_prefix("--fd=") {
                    if fd.replace(parse_fd(v)?).is_some() {
                        return Err(ArgError::Repeated("--fd"));
                    }
                } else if arg.starts_with("--br=") {
                    return Err(ArgError::BridgeHelper);
                } else if let Some(v) = arg.strip_prefix("--policy=") {
                    set_policy(&mut policy, v)?;
                } else {
                    return Err(unknown(arg));
                }
            }
        }
    }
    let fd = fd.ok_or(ArgError::NoFd)?;
    if session {
        Ok(Mode::Session { fd, policy })
    } else {
        Err(ArgError::NoMode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Mode, ArgError> {
        parse(&args.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn session_mode() {
        assert_eq!(
            p(&["--session", "--fd=3"]),
            Ok(Mode::Session { fd: 3, policy: None })
        );
        assert_eq!(
            p(&["--fd=9", "--session", "--policy", "/tmp/p"]),
            Ok(Mode::Session {
                fd: 9,
                policy: Some("/tmp/p".into())
            })
        );
    }

    #[test]
    fn the_qemu_contract_is_the_bridge_helpers() {
        assert_eq!(
            p(&["--use-vnet", "--fd=20", "--br=br0"]),
            Err(ArgError::BridgeHelper)
        );
        assert_eq!(p(&["--br=br0", "--fd=20"]), Err(ArgError::BridgeHelper));
    }

    #[test]
    fn strictness() {
        assert_eq!(p(&["--session"]), Err(ArgError::NoFd));
        assert_eq!(p(&["--fd=3"]), Err(ArgError::NoMode));
        assert_eq!(
            p(&["--session", "--fd=3", "--fd=4"]),
            Err(ArgError::Repeated("--fd"))
        );
        for bad in [
            "--fd=",
            "--fd=2",
            "--fd=-1",
            "--fd=+3",
            "--fd=0x3",
            "--fd= 3",
            "--fd=99999999999",
        ] {
            assert_eq!(p(&["--session", bad]), Err(ArgError::BadFd), "{bad}");
        }
        assert_eq!(
            p(&["--session", "--fd=3", "--verbose"]),
            Err(ArgError::Unknown("--verbose".into()))
        );
        assert_eq!(
            p(&["--help", "--session"]),
            Err(ArgError::Unknown("--help".into()))
        );
        assert_eq!(p(&["--help"]), Ok(Mode::Help));
        assert_eq!(p(&["--socket-activated"]), Ok(Mode::Activated));
        for extra in [
            "--fd=3",
            "--session",
            "--policy=/p",
            "--br=br0",
            "--socket-activated",
        ] {
            assert_eq!(
                p(&["--socket-activated", extra]),
                Err(ArgError::ActivatedAlone),
                "{extra}"
            );
        }
        assert_eq!(
            p(&["--fd=3", "--socket-activated"]),
            Err(ArgError::ActivatedAlone)
        );
        assert_eq!(p(&["--version"]), Ok(Mode::Version));
        assert_eq!(p(&["--help", "--version"]), Ok(Mode::Help));
        assert_eq!(p(&["--version", "-h"]), Ok(Mode::Help));
        assert_eq!(p(&["-V", "--version"]), Ok(Mode::Version));
        assert_eq!(
            p(&["--version", "--session", "--fd=3"]),
            Err(ArgError::Unknown("--version".into()))
        );
        assert_eq!(p(&["--session", "--fd=3", "--policy"]), Err(ArgError::BadPolicy));
        assert_eq!(
            p(&["--session", "--fd=3", "--policy", "--session"]),
            Err(ArgError::BadPolicy)
        );
        assert_eq!(
            p(&["--session", "--fd=3", "--policy=p.conf"]),
            Err(ArgError::BadPolicy)
        );
    }
}
