//! `vmpriv`: get a configured tap from vmpriv-helper and exec a VMM with it; check a policy file; show
//! what the policy grants you.
//!
//! Exit codes: 0 ok, 2 usage, 3 helper missing, not privileged or exited, 4 denied, 5 quota, 6 invalid
//! request or policy error, 7 kernel error, 8 unsupported, 9 helper died or protocol error, 10 the
//! command could not be run (or its report not written). After the exec, the status is the command's.
//!
//! The `--json` reports are one line of JSON with a `version` key (an integer, 1 today): keys are only
//! ever added within a version; a key that changes meaning or goes away bumps it.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use clap::{CommandFactory, Parser, Subcommand};
use vmpriv_client::net_spec::{self, NetSpec};
use vmpriv_client::{ByName, ClientError, Helper, Tap};
use vmpriv_protocol::{policy, trust};

/// The format version of every `--json` report.
const JSON_VERSION: u32 = 1;

/// The end of every `--help`: where the helper and the policy are, and what the exit status means.
/// Keep the search path in step with `vmpriv_client::find_helper`.
const FOOTER: &str = "\
Helper:  $VMPRIV_HELPER if set, else the socket $VMPRIV_SOCKET if set, else the socket
         /run/vmpriv/vmpriv.sock if it answers (systemd's vmpriv.socket), else
         /usr/libexec/vmpriv/vmpriv-helper, /usr/local/libexec/vmpriv-helper, then
         vmpriv-helper beside this program (setuid root, or with cap_net_admin+ep).
Policy:  /etc/vmpriv/policy.conf: owned by root and not writable by group or others, nor
         any directory above it or its includes (`vmpriv check-policy` checks).
Exit:    0 ok; 2 usage; 3 helper missing, not privileged, or it exited before answering;
         4 denied (or no such switch); 5 quota reached; 6 invalid request or policy error
         (the policy file missing, unsafe or not parsing); 7 the kernel refused; 8 unsupported
         here; 9 helper died, protocol error, or a socket-activated helper refused to start
         (journalctl -u 'vmpriv@*'); 10 the command could not be run, or an I/O error. After
         `tap` runs the command, the status is the command's.";

#[derive(Parser)]
#[command(
    name = "vmpriv",
    version,
    about = "Bridged taps for unprivileged VMs, through vmpriv-helper",
    after_help = FOOTER
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Get taps, then exec COMMAND with their fds from 3 upward in the order given (skipping any fd
    /// it inherits, e.g. an outer `vmpriv tap`'s). E.g. `vmpriv tap --switch br0 --
    /// qemu-system-x86_64 -netdev tap,id=n0,fd=3`, or two NICs: `vmpriv tap --net switch=br0 --net
    /// switch=br1 -- qemu-system-x86_64 -netdev tap,id=n0,fd=3 -netdev tap,id=n1,fd=4 ...`. Sets
    /// VMPRIV_TAPS (how many), `VMPRIV_TAP<i>_FDS`, _NAME and _MAC for each (i from 0), and
    /// VMPRIV_TAP_FDS, _NAME, _MAC for the first.
    #[command(after_help = FOOTER)]
    Tap {
        #[command(flatten)]
        spec: TapArgs,
        /// Print a one-line JSON report on stdout before the exec.
        ///
        /// Keys: version (1), taps (one object per tap, in order, with the keys below), and the
        /// first tap's keys at the top: ifname, ifindex, mac, mtu, switch (or null), fds (the
        /// command's fd numbers), queues, vnet_hdr (from the kernel), owner (the tap's owner uid:
        /// yours), persistent (false), addresses (each with family, host, vm, prefixlen).
        #[arg(long)]
        json: bool,
        /// Write the JSON report to fd N instead (open for writing; not 0-2, not a tap fd's number),
        /// then close N before the exec: stdout stays the command's.
        #[arg(long, value_name = "N", conflicts_with = "json",
              value_parser = clap::value_parser!(RawFd).range(0..))]
        json_fd: Option<RawFd>,
        /// The command to run with the taps.
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
    },
    /// Make persistent taps for VMMs that open a tap by name (Firecracker's host_dev_name): as
    /// `tap` makes them (same options, policy and quota), configured and up, owned by you; print
    /// their names. They count against your quota until `vmpriv remove NAME` (or `vmpriv cleanup`,
    /// while no process holds them). Opening one by name needs /dev/net/tun open to you.
    #[command(after_help = FOOTER)]
    Persist {
        #[command(flatten)]
        spec: TapArgs,
        /// Print a one-line JSON report instead: the keys of `tap --json`, with fds [] and
        /// persistent true.
        #[arg(long)]
        json: bool,
    },
    /// Delete your own persistent taps by name, all or none: each is opened by name as its owner
    /// and proven yours to the helper by that fd. Another user's tap, a tap vmpriv did not make, a
    /// tap a process holds, or one that is not persistent is refused.
    #[command(after_help = FOOTER)]
    Remove {
        /// The taps' names (as `vmpriv persist` printed them).
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Check a policy file as the helper does, and print what it grants.
    ///
    /// Every syntax error (not only the first), and the helper's file checks: the file, its includes
    /// and every directory above them owned by root and not writable by group or others. Warns about
    /// user and group names that do not resolve here. Exit 6 for a file the helper would refuse.
    #[command(after_help = FOOTER)]
    CheckPolicy {
        /// The file (default /etc/vmpriv/policy.conf).
        file: Option<String>,
        /// Print a one-line JSON report instead.
        ///
        /// Keys: version (1), file, ok (the helper would load it), error (the first, or null), errors
        /// (every error: the syntax's and the file checks'), policy (its lines,
        /// canonical), grants (what it grants, in words), unknown_users, unknown_groups (names that
        /// do not resolve here), unfixed_bridge_macs, warnings (every warning, in words).
        #[arg(long)]
        json: bool,
    },
    /// What the policy grants you, and how much of your quota is in use.
    #[command(after_help = FOOTER)]
    Whoami {
        /// Print a one-line JSON report instead.
        ///
        /// Keys: version (1), uid, user (or null), quota (null: no quota), in_use, rules (the policy
        /// lines that name you, read from the policy file), switches (those the rules grant; "*" for
        /// every bridge), unfixed_bridge_macs, warnings (in words).
        #[arg(long)]
        json: bool,
    },
    /// Remove your own taps that no process holds any more (made persistent and left behind): they
    /// count against your quota until removed.
    #[command(after_help = FOOTER)]
    Cleanup,
    /// Print qemu-bridge-helper's bridge.conf (with its includes) as vmpriv policy lines.
    #[command(after_help = FOOTER)]
    ImportBridgeConf {
        /// The file (default /etc/qemu/bridge.conf).
        file: Option<String>,
    },
    /// Print the completion script for SHELL on stdout (the package installs them).
    #[command(after_help = FOOTER)]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// What taps to make: repeated `--net SPEC`, or the single-tap options.
#[derive(clap::Args)]
struct TapArgs {
    /// One tap per --net, in order (repeat it for several NICs). SPEC is comma-separated keys, the
    /// single-tap options below: switch=NAME, queues=N, vnet-hdr, `local,vm=N,nic=N[,inet6]`,
    /// description=TEXT (a comma doubled, as in QEMU), group=NAME, rdomain=N.
    #[arg(long = "net", value_name = "SPEC", value_parser = net_spec::parse,
          conflicts_with_all = ["switch", "vnet_hdr", "queues", "vm", "nic", "local", "inet6",
                                "description", "group", "rdomain"])]
    net: Vec<NetSpec>,
    /// Attach to this switch (a bridge the policy grants you).
    #[arg(long)]
    switch: Option<String>,
    /// Open the tap with IFF_VNET_HDR (virtio-net offloads).
    #[arg(long)]
    vnet_hdr: bool,
    /// Number of queues (fds), 1 to 8 (default 1).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=8))]
    queues: Option<u8>,
    /// The VM's slot, for local addresses.
    #[arg(long, requires = "local")]
    vm: Option<u32>,
    /// The interface index within the VM, for local addresses.
    #[arg(long, requires = "local")]
    nic: Option<u32>,
    /// Add the local IPv4 /31 of (vm, nic) on the tap.
    #[arg(long, requires_all = ["vm", "nic"])]
    local: bool,
    /// Also add the local IPv6 /96.
    #[arg(long, requires = "local")]
    inet6: bool,
    /// Interface description (printable ASCII, at most 63 bytes).
    #[arg(long)]
    description: Option<String>,
    /// Interface group (a name the policy defines and grants you).
    #[arg(long)]
    group: Option<String>,
    /// Routing domain (for a tap without a switch).
    #[arg(long)]
    rdomain: Option<u32>,
}

impl TapArgs {
    /// The taps asked for: each `--net`, or the one the single-tap options describe.
    fn specs(self) -> Vec<NetSpec> {
        if !self.net.is_empty() {
            return self.net;
        }
        let local = match (self.local, self.vm, self.nic) {
            (true, Some(vm), Some(nic)) => Some((vm, nic, self.inet6)),
            _ => None,
        };
        vec![NetSpec {
            switch: self.switch,
            queues: self.queues.unwrap_or(1),
            vnet_hdr: self.vnet_hdr,
            local,
            description: self.description,
            group: self.group,
            rdomain: self.rdomain,
        }]
    }
}

fn main() -> ExitCode {
    // A reader that goes away (`vmpriv whoami | head -1`) ends us quietly, as it ends any Unix tool,
    // rather than making `println!` panic. The session socket is written with MSG_NOSIGNAL, so a
    // helper that dies is still a `HelperDied` error, not a signal.
    // SAFETY: installs SIG_DFL, no handler function; this runs first, before any thread exists.
    #[allow(unsafe_code)]
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
    // Every fd open now was inherited (ours are all close-on-exec, and none is open yet).
    let inherited = inherited_fds();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Tap {
            spec,
            json,
            json_fd,
            command,
        } => {
            let specs = spec.specs();
            let queues: i32 = specs.iter().map(|s| i32::from(s.queues)).sum();
            // Before anything opens an fd of ours: N must be the caller's, and the taps go where the
            // command inherits no fd (N is closed before the exec).
            let base = first_free_fd(&inherited, json_fd, queues);
            let report_to = match json_fd.map(|n| take_json_fd(n, base, queues)).transpose() {
                Ok(fd) => fd.map(Report::Fd).or(json.then_some(Report::Stdout)),
                Err(e) => usage_error("tap", e),
            };
            tap_and_exec(&specs, base, report_to, &command)
        }
        Cmd::Persist { spec, json } => persist(&spec.specs(), json),
        Cmd::Remove { names } => remove(&names),
        Cmd::CheckPolicy { file, json } => {
            return check_policy(file.as_deref().unwrap_or(policy::POLICY_PATH), json);
        }
        Cmd::Whoami { json } => whoami(json),
        Cmd::Cleanup => cleanup(),
        Cmd::ImportBridgeConf { file } => {
            return import_bridge_conf(file.as_deref().unwrap_or("/etc/qemu/bridge.conf"));
        }
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "vmpriv", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmpriv: {}", without_os_error(&e.to_string()));
            ExitCode::from(exit_code(&e))
        }
    }
}

fn exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::NotFound | ClientError::Spawn { .. } | ClientError::HelperExited { .. } => 3,
        ClientError::Denied => 4,
        ClientError::Quota { .. } => 5,
        ClientError::Invalid(_) | ClientError::Policy => 6,
        ClientError::Kernel { .. } => 7,
        ClientError::Unsupported(_) => 8,
        ClientError::HelperDied
        | ClientError::ActivatedRefused { .. }
        | ClientError::Protocol
        | ClientError::Version { .. } => 9,
        ClientError::Io(_) => 10,
        ClientError::ByName { reason, .. } => match reason {
            ByName::NotOurs(_) | ByName::NoSuchTap | ByName::OtherOwner => 4,
            ByName::Held | ByName::NotPersistent | ByName::Kernel(_) => 7,
            ByName::TunClosed => 8,
        },
    }
}

/// A usage error of `subcommand`, the way clap reports its own (exit 2).
fn usage_error(subcommand: &str, text: String) -> ! {
    let mut cli = Cli::command();
    cli.build();
    match cli.find_subcommand_mut(subcommand) {
        Some(sub) => sub.error(clap::error::ErrorKind::InvalidValue, text).exit(),
        None => cli.error(clap::error::ErrorKind::InvalidValue, text).exit(),
    }
}

/// `text` up to Rust's " (os error N)": the words already say it.
fn without_os_error(text: &str) -> &str {
    text.split(" (os error ").next().unwrap_or(text)
}

/// Where `vmpriv tap` writes its report.
enum Report {
    Stdout,
    Fd(OwnedFd),
}

/// The fds open at start: all inherited, since this runs before we open any. Read from
/// `/proc/self/fd` (its directory's own fd, closed by then, drops out of the check after), else by
/// asking each number up to the fd limit.
fn inherited_fds() -> Vec<RawFd> {
    let listed: Option<Vec<RawFd>> = std::fs::read_dir("/proc/self/fd").ok().map(|d| {
        d.filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    });
    let limit = fd_limit().min(1 << 20);
    let candidates = listed.unwrap_or_else(|| (0..i32::try_from(limit).unwrap_or(1024)).collect());
    candidates.into_iter().filter(|&fd| fd_is_open(fd)).collect()
}

/// RLIMIT_NOFILE's soft limit (1024 if it cannot be read).
fn fd_limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `struct rlimit`, which `rl` is and which lives across the call.
    #[allow(unsafe_code)]
    let r = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut rl) };
    if r == 0 { rl.rlim_cur } else { 1024 }
}

fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD reads the flags of fd number `fd` and passes no memory; a closed fd gives EBADF.
    #[allow(unsafe_code)]
    let r = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    r != -1
}

/// Where the command's `count` tap fds begin: the lowest run of numbers from 3 up that holds no fd it
/// inherits. An inherited fd is never laid over: dup2 would close it, and if it is an outer `vmpriv
/// tap`'s tap, the kernel would delete that tap. Most commands inherit nothing above 2 and get 3 on;
/// under an outer `vmpriv tap` the taps go above its. The `--json-fd` N does not count: it is closed
/// before the exec.
fn first_free_fd(inherited: &[RawFd], json_fd: Option<RawFd>, count: RawFd) -> RawFd {
    let mut base: RawFd = 3;
    while let Some(&taken) = inherited
        .iter()
        .filter(|&&fd| Some(fd) != json_fd)
        .find(|&&fd| (base..base.saturating_add(count)).contains(&fd))
    {
        base = taken + 1;
    }
    base
}

/// Takes `--json-fd N` as ours, refusing with a usage message an N that is not open for writing, is
/// stdio, or is a number the command's tap fds take (`base` to `base + queues - 1`).
fn take_json_fd(n: RawFd, base: RawFd, queues: i32) -> Result<OwnedFd, String> {
    let last_tap_fd = base + queues - 1;
    if n < 3 {
        return Err(format!(
            "--json-fd {n}: stdin, stdout and stderr stay the command's (use --json for stdout)"
        ));
    }
    if (base..=last_tap_fd).contains(&n) {
        return Err(format!(
            "--json-fd {n}: the command gets its tap fds as {base} to {last_tap_fd}; pass the report on another fd"
        ));
    }
    // SAFETY: F_GETFL reads the flags of fd number `n` and passes no memory; a closed `n` gives EBADF.
    #[allow(unsafe_code)]
    let flags = unsafe { libc::fcntl(n, libc::F_GETFL) };
    if flags == -1 {
        return Err(format!("--json-fd {n}: fd {n} is not open"));
    }
    if flags & libc::O_ACCMODE == libc::O_RDONLY || flags & libc::O_PATH != 0 {
        return Err(format!("--json-fd {n}: fd {n} is not open for writing"));
    }
    // SAFETY: `n` is open (F_GETFL succeeded) and nothing in this process owns it: it was inherited,
    // and this runs before we open any fd of our own.
    #[allow(unsafe_code)]
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// The kernel's flags for the tap behind a queue fd (`TUNGETIFF`): the report states what the device
/// is, not what we asked for.
fn tun_flags(fd: &OwnedFd) -> std::io::Result<i32> {
    let mut ifr = [0u8; std::mem::size_of::<libc::ifreq>()];
    // SAFETY: TUNGETIFF writes one `struct ifreq` at the pointer; `ifr` is that many bytes and lives
    // across the call. `fd` is a tun fd the helper sent (on another fd the ioctl fails, writing nothing).
    #[allow(unsafe_code)]
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF, ifr.as_mut_ptr()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // ifr_flags: a C short right after the IFNAMSIZ bytes of the name.
    match ifr.get(libc::IFNAMSIZ..libc::IFNAMSIZ + 2) {
        Some(&[a, b]) => Ok(i32::from(u16::from_ne_bytes([a, b]))),
        _ => Err(std::io::Error::other("struct ifreq too short")),
    }
}

/// One tap as the `--json` report describes it; `fds` are the command's numbers for its queues.
fn tap_json(
    tap: &Tap,
    switch: Option<&str>,
    fds: &[RawFd],
    persistent: bool,
) -> std::io::Result<serde_json::Value> {
    let mut addrs = Vec::new();
    if let Some(p) = tap.inet() {
        addrs.push(serde_json::json!({"family": "inet", "host": p.host().to_string(), "vm": p.vm().to_string(), "prefixlen": 31}));
    }
    if let Some(p) = tap.inet6() {
        addrs.push(serde_json::json!({"family": "inet6", "host": p.host().to_string(), "vm": p.vm().to_string(), "prefixlen": 96}));
    }
    let first = tap
        .fds()
        .first()
        .ok_or_else(|| std::io::Error::other("a tap without fds"))?;
    let flags = tun_flags(first)?;
    Ok(serde_json::json!({
        "ifname": tap.name(),
        "ifindex": tap.ifindex(),
        "mac": tap.mac_string(),
        "mtu": tap.mtu(),
        "switch": switch,
        "fds": fds,
        "queues": tap.fds().len(),
        "vnet_hdr": flags & libc::IFF_VNET_HDR != 0,
        // The helper gives the tap to its caller (TUNSETOWNER): our real uid.
        "owner": nix::unistd::getuid().as_raw(),
        "persistent": persistent,
        "addresses": addrs,
    }))
}

/// The one-line JSON report (keys in the `--json` help): `taps`, and the first tap's keys at the top,
/// as the single-tap report of version 1 had them.
fn report(taps: &[(Tap, &NetSpec, Vec<RawFd>)], persistent: bool) -> std::io::Result<String> {
    let mut all = Vec::new();
    for (tap, spec, fds) in taps {
        all.push(tap_json(tap, spec.switch.as_deref(), fds, persistent)?);
    }
    let mut top = all
        .first()
        .and_then(serde_json::Value::as_object)
        .cloned()
        .ok_or_else(|| std::io::Error::other("no tap"))?;
    top.insert("version".to_owned(), JSON_VERSION.into());
    top.insert("taps".to_owned(), all.into());
    Ok(serde_json::Value::Object(top).to_string())
}

/// Asks one helper session for every tap, in order. One refused request ends it: the taps made
/// before are dropped, so they go away with their fds.
fn create_all(specs: &[NetSpec]) -> Result<Vec<(Tap, &NetSpec)>, ClientError> {
    let mut helper = Helper::spawn()?;
    let mut taps = Vec::with_capacity(specs.len());
    for spec in specs {
        taps.push((helper.create_tap(&spec.options())?, spec));
    }
    helper.close()?;
    Ok(taps)
}

fn write_report(to: Report, line: std::io::Result<String>) {
    let written = line.and_then(|line| match to {
        Report::Stdout => writeln!(std::io::stdout(), "{line}"),
        // Closed here (dropped): its reader sees EOF, and the command does not inherit it.
        Report::Fd(fd) => writeln!(std::fs::File::from(fd), "{line}"),
    });
    if let Err(e) = written {
        eprintln!(
            "vmpriv: cannot write the report: {}",
            without_os_error(&e.to_string())
        );
        std::process::exit(10);
    }
}

fn tap_and_exec(
    specs: &[NetSpec],
    base: RawFd,
    report_to: Option<Report>,
    command: &[OsString],
) -> Result<(), ClientError> {
    let total: usize = specs.iter().map(|s| usize::from(s.queues)).sum();
    let total_fds = RawFd::try_from(total).unwrap_or(RawFd::MAX);
    // Refused before any tap exists: the fds would not fit under the fd limit (our copies of them
    // sit above the command's numbers until the exec).
    let limit = fd_limit();
    let highest = u64::try_from(base.saturating_add(total_fds.saturating_mul(2))).unwrap_or(u64::MAX);
    if highest > limit {
        eprintln!(
            "vmpriv: the command's {total} tap fd(s) would go from {base} up (it inherits the fds \
             below), past the fd limit ({limit}, RLIMIT_NOFILE): close the inherited fds or raise \
             the limit"
        );
        std::process::exit(10);
    }
    let taps = create_all(specs)?;
    // Each tap's fds, in the order asked, from `base` upward.
    let mut next = base;
    let laid: Vec<(Tap, &NetSpec, Vec<RawFd>)> = taps
        .into_iter()
        .map(|(tap, spec)| {
            let fds: Vec<RawFd> = (next..).take(tap.fds().len()).collect();
            next += RawFd::try_from(fds.len()).unwrap_or(0);
            (tap, spec, fds)
        })
        .collect();
    if let Some(to) = report_to {
        write_report(to, report(&laid, false));
    }
    let (program, args) = command.split_first().ok_or(ClientError::Protocol)?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    // This command's taps only: variables an outer `vmpriv tap` set for more taps go.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("VMPRIV_TAP")) {
            cmd.env_remove(key);
        }
    }
    cmd.env("VMPRIV_TAPS", laid.len().to_string());
    for (i, (tap, _, fds)) in laid.iter().enumerate() {
        let list = fds.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        let mut vars = vec![format!("VMPRIV_TAP{i}_")];
        if i == 0 {
            vars.push("VMPRIV_TAP_".to_owned());
        }
        for prefix in vars {
            cmd.env(format!("{prefix}FDS"), &list)
                .env(format!("{prefix}NAME"), tap.name())
                .env(format!("{prefix}MAC"), tap.mac_string());
        }
    }
    // Move the tap fds out of the way of their numbers first (close-on-exec copies above them all),
    // then dup2 them into place right before exec: dup2 clears close-on-exec on the copy, so exactly
    // those stay open, and every fd the command inherits stays as it was.
    let mut moves: Vec<(RawFd, RawFd)> = Vec::new();
    let above = base.saturating_add(total_fds);
    for (tap, _, fds) in &laid {
        for (fd, &target) in tap.fds().iter().zip(fds) {
            let high = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(above))
                .map_err(std::io::Error::from)?;
            moves.push((high, target));
        }
    }
    // SAFETY: the closure only calls dup2(2), async-signal-safe, on fds that are open (the copies,
    // kept alive by not closing them; they are close-on-exec).
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            for &(high, target) in &moves {
                if libc::dup2(high, target) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let keep = laid; // stays open until exec replaces us
    let err = cmd.exec();
    drop(keep);
    eprintln!("vmpriv: cannot run {}: {err}", program.to_string_lossy());
    std::process::exit(10);
}

/// `vmpriv persist`: the taps, persistent (through their own fds), then closed: they stay, up and
/// configured, for a VMM that opens them by name.
fn persist(specs: &[NetSpec], json: bool) -> Result<(), ClientError> {
    let taps = create_all(specs)?;
    for (i, (tap, _)) in taps.iter().enumerate() {
        if let Err(e) = tap.set_persistent(true) {
            // All or none: the ones made persistent so far go back (and away, with their fds).
            for (t, _) in taps.iter().take(i) {
                let _ = t.set_persistent(false);
            }
            return Err(e);
        }
    }
    let laid: Vec<(Tap, &NetSpec, Vec<RawFd>)> = taps.into_iter().map(|(t, s)| (t, s, Vec::new())).collect();
    if json {
        write_report(Report::Stdout, report(&laid, true));
    } else {
        for (tap, _, _) in &laid {
            println!("{}", tap.name());
        }
    }
    Ok(())
}

/// `vmpriv remove NAME…`: our persistent taps by name, all or none.
fn remove(names: &[String]) -> Result<(), ClientError> {
    let mut helper = Helper::spawn()?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let n = helper.remove_persistent(&names)?;
    let _ = helper.close();
    println!("removed {n} tap(s)");
    Ok(())
}

/// `vmpriv check-policy`: every syntax error (`vmpriv_client::check`) and the helper's own file
/// checks on the file and, through the include reader, on every include, all in one run.
fn check_policy(path: &str, json: bool) -> ExitCode {
    let mut include = |p: &str| read_trusted(p);
    let text = read_regular(path);
    let (parsed, mut errors) = match &text {
        Err(e) => (None, vec![format!("vmpriv: {path}: {e}")]),
        Ok(text) => match vmpriv_client::check::syntax(path, text, &mut include) {
            Ok(p) => (Some(p), Vec::new()),
            Err(errors) => (None, errors),
        },
    };
    // A file that cannot be read at all has said so already.
    if let (Ok(_), Err(e)) = (&text, read_trusted(path)) {
        errors.push(format!("vmpriv: {path}: {e}: the helper refuses this file"));
    }
    let [mut lines, mut grants, mut users, mut groups, mut macs]: [Vec<String>; 5] = Default::default();
    let mut warnings = Vec::new();
    if let Some(p) = &parsed {
        lines = vmpriv_client::policy_text::canonical(p)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        grants = vmpriv_client::policy_text::grants_summary(p);
        (users, groups) = unresolved_names(p);
        macs = unfixed_bridge_macs(&|b| {
            p.rules.iter().any(|r| {
                r.allow
                    && matches!(&r.resource, policy::Resource::Switch(sw)
                        if matches!(sw, policy::Pattern::Any)
                            || matches!(sw, policy::Pattern::Exact(n) if n.as_str() == b))
            })
        });
        for (kind, names) in [("user", &users), ("group", &groups)] {
            for n in names {
                warnings.push(format!(
                    "{kind} `{n}` does not resolve here: the lines naming it match no caller (a typo?)"
                ));
            }
        }
        let grants_a_switch = p
            .rules
            .iter()
            .any(|r| r.allow && matches!(r.resource, policy::Resource::Switch(_)));
        warnings.extend(mac_warnings(&macs, grants_a_switch));
    }
    for e in &errors {
        eprintln!("{e}");
    }
    if json {
        let report = serde_json::json!({
            "version": JSON_VERSION,
            "file": path,
            "ok": errors.is_empty(),
            "error": errors.first().map(|e| e.strip_prefix("vmpriv: ").unwrap_or(e)),
            "errors": errors.iter().map(|e| e.strip_prefix("vmpriv: ").unwrap_or(e)).collect::<Vec<_>>(),
            "policy": lines,
            "grants": grants,
            "unknown_users": users,
            "unknown_groups": groups,
            "unfixed_bridge_macs": macs,
            "warnings": warnings,
        });
        println!("{report}");
    } else if let (Some(p), true) = (&parsed, errors.is_empty()) {
        print!("{}", vmpriv_client::policy_text::canonical(p));
        for w in &warnings {
            println!("# warning: {w}");
        }
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(6)
    }
}

/// The user and group names the policy's rules and quotas name that NSS does not resolve here
/// (getpwnam, getgrnam): the helper matches callers by name, so such a line matches nobody.
fn unresolved_names(p: &policy::Policy) -> (Vec<String>, Vec<String>) {
    let mut users: Vec<String> = Vec::new();
    let mut groups: Vec<String> = Vec::new();
    let subjects = p
        .rules
        .iter()
        .map(|r| &r.subject)
        .chain(p.quotas.iter().map(|q| &q.subject));
    let user_resolves = |n: &str| matches!(nix::unistd::User::from_name(n), Ok(Some(_)));
    let group_resolves = |n: &str| matches!(nix::unistd::Group::from_name(n), Ok(Some(_)));
    for s in subjects {
        match s {
            policy::Subject::User(n) if !users.contains(n) && !user_resolves(n) => users.push(n.clone()),
            policy::Subject::Group(n) if !groups.contains(n) && !group_resolves(n) => {
                groups.push(n.clone());
            }
            _ => {}
        }
    }
    (users, groups)
}

/// The file as it is, wherever it is (for the syntax check), but only a regular file of at most
/// `POLICY_MAX` bytes: a FIFO or a device given by mistake must not hang the check.
fn read_regular(path: &str) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| without_os_error(&e.to_string()).to_owned();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(trust::TrustError::NotRegular.to_string());
    }
    let mut text = String::new();
    file.take(trust::POLICY_MAX + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    trust::check_size(text.len() as u64).map_err(|e| e.to_string())?;
    Ok(text)
}

/// What the helper's `read_trusted` does, with the same decisions (`vmpriv_protocol::trust`): open from
/// `/` one component at a time without following symlinks, fstat each opened fd.
fn read_trusted(path: &str) -> Result<String, String> {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::Mode;
    use std::io::Read;
    use std::os::fd::AsFd;
    fn check(
        f: &std::fs::File,
        what: &str,
        decide: fn(&str, trust::Stat) -> Result<(), trust::TrustError>,
    ) -> Result<(), String> {
        let meta = f.metadata().map_err(|e| e.to_string())?;
        decide(
            what,
            trust::Stat {
                uid: meta.uid(),
                mode: meta.mode(),
            },
        )
        .map_err(|e| e.to_string())
    }
    let (dirs, last) = trust::split(path).map_err(|e| e.to_string())?;
    let root = std::fs::File::open("/").map_err(|e| format!("cannot open /: {e}"))?;
    check(&root, "/", trust::check_dir)?;
    let mut dir: OwnedFd = root.into();
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
        .map_err(|e| format!("{part}: {}", e.desc()))?;
        let next = std::fs::File::from(next);
        check(&next, &walked, trust::check_dir)?;
        dir = next.into();
    }
    let file = openat(
        dir.as_fd(),
        last,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| e.desc().to_owned())?;
    let file = std::fs::File::from(file);
    check(&file, "the file", trust::check_file)?;
    let mut text = String::new();
    file.take(trust::POLICY_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|e| without_os_error(&e.to_string()).to_owned())?;
    trust::check_size(text.len() as u64).map_err(|e| e.to_string())?;
    Ok(text)
}

fn cleanup() -> Result<(), ClientError> {
    let mut helper = Helper::spawn()?;
    let n = helper.remove_leftovers()?;
    println!("removed {n} leftover tap(s)");
    let _ = helper.close();
    Ok(())
}

/// The bridges in this network namespace (`/sys/class/net/*/bridge`) whose MAC the admin did not fix:
/// such a bridge takes the lowest MAC of its ports, and a tap's holder sets its tap's MAC through its
/// fd without privilege, so a VM can choose the bridge's (the host's) MAC. `granted` filters names.
fn unfixed_bridge_macs(granted: &dyn Fn(&str) -> bool) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut out: Vec<String> = dir
        .filter_map(Result::ok)
        .filter(|e| e.path().join("bridge").is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| granted(name))
        .filter(|name| {
            let sys = |f: &str| std::fs::read_to_string(format!("/sys/class/net/{name}/{f}"));
            // addr_assign_type 3 (NET_ADDR_SET): an address set by the admin, which the bridge keeps;
            // but not all zeros (a bridge without ports has that address, and setting it again marks
            // it set while the bridge still takes its ports' lowest MAC).
            sys("addr_assign_type").map_or(true, |t| t.trim() != "3")
                || sys("address").map_or(true, |a| a.trim() == "00:00:00:00:00:00")
        })
        .collect();
    out.sort();
    out
}

/// Whether `/sys/class/net` shows another network namespace than ours (sysfs shows the namespace of
/// whoever mounted it, e.g. after `unshare --net` without a new mount): then the MAC check cannot tell.
fn sysfs_is_foreign() -> bool {
    let ours: std::collections::BTreeSet<String> = std::fs::read_to_string("/proc/self/net/dev")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| Some(l.split_once(':')?.0.trim().to_owned()))
        .collect();
    let shown: std::collections::BTreeSet<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    ours != shown
}

/// The warnings about granted bridges: each one whose MAC is not fixed, or that the check cannot see
/// (only where some bridge is granted at all).
fn mac_warnings(unfixed: &[String], grants_a_switch: bool) -> Vec<String> {
    if grants_a_switch && sysfs_is_foreign() {
        return vec![
            "cannot tell whether the granted bridges have a fixed MAC address: /sys/class/net shows \
             another network namespace than this process's (mount a sysfs for this namespace)"
                .to_owned(),
        ];
    }
    unfixed.iter().map(|b| unfixed_mac_warning(b)).collect()
}

fn unfixed_mac_warning(b: &str) -> String {
    format!(
        "bridge {b} has no fixed MAC address: it takes the lowest MAC of its ports, which a tap's \
         holder can set; fix it with `ip link set {b} address 02:XX:XX:XX:XX:XX`, a locally \
         administered address of your choosing (not 00:00:00:00:00:00)"
    )
}

fn whoami(json: bool) -> Result<(), ClientError> {
    let mut helper = Helper::spawn()?;
    let s = helper.status()?;
    let _ = helper.close();
    // The rules are public (the policy file is world-readable): read here, not asked of the helper,
    // which answers only what needs privilege. The helper has just read the same file.
    let rules = match read_trusted(policy::POLICY_PATH).and_then(|text| {
        policy::parse(policy::POLICY_PATH, &text, &mut read_trusted).map_err(|e| e.to_string())
    }) {
        Ok(p) => {
            let me = me();
            p.rules
                .iter()
                .filter(|r| r.subject.matches(&me))
                .map(vmpriv_client::policy_text::rule_line)
                .collect()
        }
        Err(e) => {
            eprintln!("vmpriv: cannot list the rules that name you: {e}");
            Vec::new()
        }
    };
    // Which bridges the rules grant (switch NAME, or every bridge for switch *).
    let switches: Vec<&str> = rules
        .iter()
        .filter_map(|r| r.strip_prefix("allow ")?.split_once(" switch ").map(|(_, sw)| sw))
        .collect();
    let macs = unfixed_bridge_macs(&|b| switches.iter().any(|&sw| sw == "*" || sw == b));
    if json {
        let report = serde_json::json!({
            "version": JSON_VERSION,
            "uid": s.uid,
            "user": s.user,
            "quota": (s.quota != policy::UNLIMITED).then_some(s.quota),
            "in_use": s.in_use,
            "rules": rules,
            "switches": switches,
            "unfixed_bridge_macs": macs,
            "warnings": mac_warnings(&macs, !switches.is_empty()),
        });
        println!("{report}");
        return Ok(());
    }
    println!("uid {} ({})", s.uid, s.user.as_deref().unwrap_or("no user name"));
    if s.quota == policy::UNLIMITED {
        println!("taps: {} live, no quota", s.in_use);
    } else {
        println!("taps: {} live of {} allowed", s.in_use, s.quota);
    }
    if rules.is_empty() {
        println!("no policy rule names you: every switch, group and routing domain is denied");
    }
    for r in &rules {
        println!("{r}");
    }
    for w in mac_warnings(&macs, !switches.is_empty()) {
        println!("# warning: {w}");
    }
    Ok(())
}

fn import_bridge_conf(path: &str) -> ExitCode {
    use std::os::unix::fs::MetadataExt;
    use vmpriv_client::bridge_conf::{AclLine, parse, subject_for_mode, translate};
    fn walk(path: &str, subject: &str, depth: usize, out: &mut Vec<String>) -> Result<(), String> {
        if depth > 4 {
            return Err(format!(
                "{path}: includes nest deeper than 3 levels below the policy file"
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let rules = parse(path, &text)?;
        out.push(format!("# from {path}"));
        out.extend(translate(&rules, subject));
        for r in &rules {
            if let AclLine::Include(inc) = r {
                let meta = std::fs::metadata(inc).map_err(|e| format!("{inc}: {e}"))?;
                let owner = nix::unistd::User::from_uid(meta.uid().into())
                    .ok()
                    .flatten()
                    .map_or(meta.uid().to_string(), |u| u.name);
                let group = nix::unistd::Group::from_gid(meta.gid().into())
                    .ok()
                    .flatten()
                    .map_or(meta.gid().to_string(), |g| g.name);
                walk(
                    inc,
                    &subject_for_mode(meta.mode(), &owner, &group),
                    depth + 1,
                    out,
                )?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    match walk(path, "user *", 0, &mut out) {
        Ok(()) => {
            for line in out {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vmpriv: {e}");
            ExitCode::from(6)
        }
    }
}

/// This process as the helper's policy sees a caller: real uid and gid, supplementary groups, and
/// their names.
fn me() -> policy::Caller {
    use nix::unistd::{Gid, Group, User, getgid, getgroups, getuid};
    let uid = getuid().as_raw();
    let gid = getgid().as_raw();
    let mut supplementary = Vec::new();
    for g in getgroups().unwrap_or_default() {
        if g.as_raw() != gid && !supplementary.contains(&g.as_raw()) {
            supplementary.push(g.as_raw());
        }
    }
    let user = User::from_uid(getuid()).ok().flatten().map(|u| u.name);
    let groups = std::iter::once(&gid)
        .chain(&supplementary)
        .filter_map(|&g| Group::from_gid(Gid::from_raw(g)).ok().flatten())
        .map(|g| g.name)
        .collect();
    policy::Caller {
        uid,
        user,
        gid,
        supplementary,
        groups,
    }
}

#[cfg(test)]
mod tests {
    use super::first_free_fd;

    #[test]
    fn tap_fds_never_land_on_an_inherited_fd() {
        // Nothing above stdio: 3 on.
        assert_eq!(first_free_fd(&[0, 1, 2], None, 2), 3);
        // An outer `vmpriv tap`'s fds 3 and 4: above them.
        assert_eq!(first_free_fd(&[0, 1, 2, 3, 4], None, 1), 5);
        // A jobserver pipe far above: the run from 3 is free.
        assert_eq!(first_free_fd(&[0, 1, 2, 250, 251], None, 2), 3);
        // A hole too small for the run: above the fd that closes it.
        assert_eq!(first_free_fd(&[0, 1, 2, 4, 7], None, 3), 8);
        assert_eq!(first_free_fd(&[0, 1, 2, 4, 8], None, 3), 5);
        // The --json-fd is closed before the exec: not in the way.
        assert_eq!(first_free_fd(&[0, 1, 2, 3], Some(3), 1), 3);
    }
}
