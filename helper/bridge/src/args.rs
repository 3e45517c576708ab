//! The bridge helper's command line (qemu-bridge-helper's), parsed strictly: the caller writes argv, so anything unknown, repeated or
//! conflicting is refused before anything else happens.

use std::ffi::OsString;

use super::argv::{is_info_flag, parse_fd, set_policy, unknown};

/// What the bridge helper was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `--use-vnet --br=BR --fd=N` (any order): qemu-bridge-helper's contract.
    Qemu {
        fd: i32,
        bridge: String,
        vnet_hdr: bool,
        policy: Option<String>,
    },
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
    #[error("--br needs a bridge name of 1 to 15 bytes")]
    BadBridge,
    #[error("--policy needs an absolute path")]
    BadPolicy,
    #[error("--fd is required")]
    NoFd,
    #[error("--br is required")]
    NoBridge,
}

/// The text for `--help` (and `--help --version`): usage, where the client looks for the helper, the
/// policy file and the exit status. Keep the search path in step with `vmpriv_client::find_helper`.
pub(crate) const USAGE: &str = concat!(
    "vmpriv-bridge-helper ",
    env!("CARGO_PKG_VERSION"),
    "
usage: vmpriv-bridge-helper [--use-vnet] --br=BRIDGE --fd=N [--policy PATH]
       vmpriv-bridge-helper --help | --version

QEMU's and libvirt's bridge helper (qemu-bridge-helper's contract): creates a tap for the caller on
BRIDGE, as the policy file allows (a switch grant and a free quota slot), and passes its fd back on
the stream socket N with one byte; nothing else. Installed setuid root; put its path in QEMU's
-netdev bridge,helper= or libvirt's qemu.conf bridge_helper.

Policy:   /etc/vmpriv/policy.conf; it, its includes and every directory above them must be owned
          by root and not writable by group or others (`vmpriv check-policy` checks). --policy
          PATH is accepted only when the real uid is root. The environment is ignored.
Exit:     0 done; 1 refused: bad usage, not privileged, or the tap refused (one line on stderr,
          details in the system log); 6 policy file missing, not trusted or unparsable; 70 an
          internal error (a state the code rules out: the system log says which)."
);

/// Parses argv (without `argv[0]`).
pub(crate) fn parse(args: &[OsString]) -> Result<Mode, ArgError> {
    let mut use_vnet = 0u32;
    let mut fd = None;
    let mut bridge = None;
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
            // QEMU's shell form appends --use-vnet even when the configured helper string has it.
            "--use-vnet" => {
                use_vnet += 1;
                if use_vnet > 2 {
                    return Err(ArgError::Repeated("--use-vnet"));
                }
            }
            "--policy" => {
                let p = iter.next().and_then(|p| p.to_str()).ok_or(ArgError::BadPolicy)?;
                set_policy(&mut policy, p)?;
            }
            _ => {
                if let Some(v) = arg.strip_prefix("--fd=") {
                    if fd.replace(parse_fd(v)?).is_some() {
                        return Err(ArgError::Repeated("--fd"));
                    }
                } else if let Some(v) = arg.strip_prefix("--br=") {
                    if v.is_empty() || v.len() >= libc::IFNAMSIZ {
                        return Err(ArgError::BadBridge);
                    }
                    if bridge.replace(v.to_owned()).is_some() {
                        return Err(ArgError::Repeated("--br"));
                    }
                } else if let Some(v) = arg.strip_prefix("--policy=") {
                    set_policy(&mut policy, v)?;
                } else {
                    return Err(unknown(arg));
                }
            }
        }
    }
    let fd = fd.ok_or(ArgError::NoFd)?;
    let bridge = bridge.ok_or(ArgError::NoBridge)?;
    Ok(Mode::Qemu {
        fd,
        bridge,
        vnet_hdr: use_vnet > 0,
        policy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Mode, ArgError> {
        parse(&args.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn qemu_and_libvirt_orders() {
        let want = Ok(Mode::Qemu {
            fd: 20,
            bridge: "br0".into(),
            vnet_hdr: true,
            policy: None,
        });
        assert_eq!(p(&["--use-vnet", "--fd=20", "--br=br0"]), want); // QEMU
        assert_eq!(p(&["--use-vnet", "--br=br0", "--fd=20"]), want); // libvirt
        assert_eq!(p(&["--br=br0", "--fd=20", "--use-vnet", "--use-vnet"]), want); // QEMU's sh -c form
        assert_eq!(
            p(&["--br=br0", "--fd=20"]),
            Ok(Mode::Qemu {
                fd: 20,
                bridge: "br0".into(),
                vnet_hdr: false,
                policy: None
            })
        );
    }

    #[test]
    fn strictness() {
        assert_eq!(p(&["--br=br0"]), Err(ArgError::NoFd));
        assert_eq!(p(&["--fd=3"]), Err(ArgError::NoBridge));
        assert_eq!(
            p(&["--br=br0", "--fd=3", "--fd=4"]),
            Err(ArgError::Repeated("--fd"))
        );
        assert_eq!(
            p(&["--br=a", "--br=b", "--fd=3"]),
            Err(ArgError::Repeated("--br"))
        );
        assert_eq!(p(&["--use-vnet"; 3]), Err(ArgError::Repeated("--use-vnet")));
        assert_eq!(p(&["--br=", "--fd=3"]), Err(ArgError::BadBridge));
        // CVE-2019-13164: 16+ bytes is refused, never cut to 15.
        assert_eq!(p(&["--br=secretbridge123X", "--fd=3"]), Err(ArgError::BadBridge));
        for bad in [
            "--fd=",
            "--fd=2",
            "--fd=-1",
            "--fd=+3",
            "--fd=0x3",
            "--fd= 3",
            "--fd=99999999999",
        ] {
            assert_eq!(p(&["--br=br0", bad]), Err(ArgError::BadFd), "{bad}");
        }
        assert_eq!(
            p(&["--br=br0", "--fd=3", "--verbose"]),
            Err(ArgError::Unknown("--verbose".into()))
        );
        for moved in ["--session", "--socket-activated"] {
            assert_eq!(
                p(&["--br=br0", "--fd=3", moved]),
                Err(ArgError::Unknown(moved.into()))
            );
        }
        assert_eq!(
            p(&["--help", "--br=br0"]),
            Err(ArgError::Unknown("--help".into()))
        );
        assert_eq!(p(&["--help"]), Ok(Mode::Help));
        assert_eq!(p(&["--version"]), Ok(Mode::Version));
        assert_eq!(p(&["--help", "--version"]), Ok(Mode::Help));
        assert_eq!(p(&["--version", "-h"]), Ok(Mode::Help));
        assert_eq!(p(&["-V", "--version"]), Ok(Mode::Version));
        assert_eq!(p(&["--br=br0", "--fd=3", "--policy"]), Err(ArgError::BadPolicy));
        assert_eq!(
            p(&["--br=o", "--fd=3", "--policy", "--br=oe"]),
            Err(ArgError::BadPolicy)
        );
        assert_eq!(
            p(&["--br=br0", "--fd=3", "--policy=p.conf"]),
            Err(ArgError::BadPolicy)
        );
    }
}
