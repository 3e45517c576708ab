//! `vmpriv`: get a configured tap from vmpriv-helper and exec a VMM with it; check a policy file; show
//! what the policy grants you.
//!
//! Exit codes: 0 ok, 2 usage, 3 helper missing or not privileged, 4 denied, 5 quota, 6 invalid request
//! or policy error, 7 kernel error, 8 unsupported, 9 helper died or protocol error, 10 exec failed.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};
use vmpriv_client::{ClientError, Helper, Tap, TapOptions};
use vmpriv_protocol::policy;

#[derive(Parser)]
#[command(
    name = "vmpriv",
    version,
    about = "Bridged taps for unprivileged VMs, through vmpriv-helper"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Get a tap, then exec COMMAND with its fds from 3 upward (VMPRIV_TAP_FDS, VMPRIV_TAP_NAME and
    /// VMPRIV_TAP_MAC set). E.g. `vmpriv tap --switch br0 -- qemu-system-x86_64 -netdev tap,id=n0,fd=3`.
    Tap {
        /// Attach to this switch (a bridge the policy grants you).
        #[arg(long)]
        switch: Option<String>,
        /// Open the tap with IFF_VNET_HDR (virtio-net offloads).
        #[arg(long)]
        vnet_hdr: bool,
        /// Number of queues (fds), 1 to 8.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
        queues: u8,
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
        /// Print a one-line JSON report on stdout before the exec.
        #[arg(long)]
        json: bool,
        /// The command to run with the tap.
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
    },
    /// Parse a policy file and print what it grants, or `file:line: reason`.
    CheckPolicy {
        /// The file (default /etc/vmpriv/policy.conf).
        file: Option<String>,
    },
    /// What the policy grants you, and how much of your quota is in use.
    Whoami,
    /// Remove your own taps that no process holds any more (made persistent and left behind): they
    /// count against your quota until removed.
    Cleanup,
    /// Print qemu-bridge-helper's bridge.conf (with its includes) as vmpriv policy lines.
    ImportBridgeConf {
        /// The file (default /etc/qemu/bridge.conf).
        file: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Tap {
            switch,
            vnet_hdr,
            queues,
            vm,
            nic,
            local,
            inet6,
            description,
            group,
            rdomain,
            json,
            command,
        } => {
            let mut opts = TapOptions::new().vnet_hdr(vnet_hdr).queues(queues);
            if let Some(s) = &switch {
                opts = opts.switch(s);
            }
            if let (true, Some(vm), Some(nic)) = (local, vm, nic) {
                opts = opts.local(vm, nic, inet6);
            }
            if let Some(d) = &description {
                opts = opts.description(d);
            }
            if let Some(g) = &group {
                opts = opts.group(g);
            }
            if let Some(r) = rdomain {
                opts = opts.rdomain(r);
            }
            tap_and_exec(&opts, switch.as_deref(), json, &command)
        }
        Cmd::CheckPolicy { file } => return check_policy(file.as_deref().unwrap_or(policy::POLICY_PATH)),
        Cmd::Whoami => whoami(),
        Cmd::Cleanup => cleanup(),
        Cmd::ImportBridgeConf { file } => {
            return import_bridge_conf(file.as_deref().unwrap_or("/etc/qemu/bridge.conf"));
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, without Rust's "(os error N)": the words already say it.
            let text = e.to_string();
            let text = text.split(" (os error ").next().unwrap_or(&text);
            eprintln!("vmpriv: {text}");
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
        ClientError::HelperDied | ClientError::Protocol | ClientError::Version { .. } => 9,
        ClientError::Io(_) => 10,
    }
}

/// The one-line JSON report.
fn report(tap: &Tap, switch: Option<&str>) -> String {
    let mut addrs = Vec::new();
    if let Some(p) = tap.inet() {
        addrs.push(serde_json::json!({"family": "inet", "host": p.host.to_string(), "vm": p.vm.to_string(), "prefixlen": 31}));
    }
    if let Some(p) = tap.inet6() {
        addrs.push(serde_json::json!({"family": "inet6", "host": p.host.to_string(), "vm": p.vm.to_string(), "prefixlen": 96}));
    }
    serde_json::json!({
        "ifname": tap.name(),
        "ifindex": tap.ifindex(),
        "mac": tap.mac_string(),
        "mtu": tap.mtu(),
        "switch": switch,
        "fds": (0..tap.fds().len()).map(|i| 3 + i).collect::<Vec<_>>(),
        "addresses": addrs,
    })
    .to_string()
}

fn tap_and_exec(
    opts: &TapOptions,
    switch: Option<&str>,
    json: bool,
    command: &[OsString],
) -> Result<(), ClientError> {
    let mut helper = Helper::spawn()?;
    let tap = helper.create_tap(opts)?;
    helper.close()?;
    if json {
        println!("{}", report(&tap, switch));
    }
    let n = tap.fds().len();
    let fd_list: Vec<String> = (0..n).map(|i| (3 + i).to_string()).collect();
    let (program, args) = command.split_first().ok_or(ClientError::Protocol)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("VMPRIV_TAP_FDS", fd_list.join(","))
        .env("VMPRIV_TAP_NAME", tap.name())
        .env("VMPRIV_TAP_MAC", tap.mac_string());
    // Move the tap fds out of the way of 3..3+n first (close-on-exec copies), then dup2 them into
    // place right before exec: dup2 clears close-on-exec on the copy, so exactly those stay open.
    let mut high: Vec<RawFd> = Vec::new();
    for fd in tap.fds() {
        let min = i32::try_from(3 + n).unwrap_or(16);
        high.push(
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min))
                .map_err(std::io::Error::from)?,
        );
    }
    // SAFETY: the closure only calls dup2(2), async-signal-safe, on fds that are open (`high`, kept
    // alive by not closing them; they are close-on-exec).
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            for (i, &fd) in high.iter().enumerate() {
                let target = i32::try_from(3 + i).unwrap_or(i32::MAX);
                if libc::dup2(fd, target) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let keep = tap.into_fds(); // stays open until exec replaces us
    let err = cmd.exec();
    drop(keep);
    eprintln!("vmpriv: cannot run {}: {err}", program.to_string_lossy());
    std::process::exit(10);
}

fn check_policy(path: &str) -> ExitCode {
    let read = |p: &str| std::fs::read_to_string(p).map_err(|e| e.to_string());
    let text = match read(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vmpriv: {path}: {e}");
            return ExitCode::from(6);
        }
    };
    let mut include = |p: &str| read(p);
    match policy::parse(path, &text, &mut include) {
        Ok(p) => {
            print!("{p}");
            warn_unfixed_macs(&unfixed_bridge_macs(&|b| {
                p.rules.iter().any(|r| {
                    r.allow
                        && matches!(&r.resource, policy::Resource::Switch(sw)
                            if matches!(sw, policy::Pattern::Any)
                                || matches!(sw, policy::Pattern::Exact(n) if n.as_str() == b))
                })
            }));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(6)
        }
    }
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
            // addr_assign_type 3 (NET_ADDR_SET): an address set by the admin, which the bridge keeps.
            std::fs::read_to_string(format!("/sys/class/net/{name}/addr_assign_type"))
                .map_or(true, |t| t.trim() != "3")
        })
        .collect();
    out.sort();
    out
}

fn warn_unfixed_macs(bridges: &[String]) {
    for b in bridges {
        println!(
            "# warning: bridge {b} has no fixed MAC address: it takes the lowest MAC of its ports, which a \
             tap's holder can set; fix it with `ip link set {b} address <the MAC it has now>`"
        );
    }
}

fn whoami() -> Result<(), ClientError> {
    let mut helper = Helper::spawn()?;
    let s = helper.status()?;
    println!("uid {} ({})", s.uid, s.user.as_deref().unwrap_or("no user name"));
    if s.quota == vmpriv_protocol::policy::UNLIMITED {
        println!("taps: {} live, no quota", s.in_use);
    } else {
        println!("taps: {} live of {} allowed", s.in_use, s.quota);
    }
    if s.rules.is_empty() {
        println!("no policy rule names you: every switch, group and routing domain is denied");
    }
    for r in &s.rules {
        println!("{r}");
    }
    if s.more_rules {
        println!("(more rules name you; see the policy file)");
    }
    // Which bridges the rules grant (switch NAME, or every bridge for switch *).
    let switches: Vec<&str> = s
        .rules
        .iter()
        .filter_map(|r| r.strip_prefix("allow ")?.split_once(" switch ").map(|(_, sw)| sw))
        .collect();
    warn_unfixed_macs(&unfixed_bridge_macs(&|b| {
        switches.iter().any(|&sw| sw == "*" || sw == b)
    }));
    let _ = helper.close();
    Ok(())
}

fn import_bridge_conf(path: &str) -> ExitCode {
    use std::os::unix::fs::MetadataExt;
    use vmpriv_client::bridge_conf::{AclLine, parse, subject_for_mode, translate};
    fn walk(path: &str, subject: &str, depth: usize, out: &mut Vec<String>) -> Result<(), String> {
        if depth > 4 {
            return Err(format!("{path}: includes nest deeper than 4"));
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
