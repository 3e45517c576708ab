//! The one-command demo (`sudo ./demo.sh`): in a throwaway network and mount namespace, a bridge and a
//! policy; a setuid copy of the helper; then, as uid 65534, `vmpriv tap` obtains a tap with the local
//! addresses of vm 1 nic 0 and execs this program's VM side, which writes an ARP request and ICMP echo
//! requests from 100.64.1.3 into the tap fd and reads the kernel's replies. Then the fd is closed, the
//! tap is gone, and everything made is removed. The host's own interfaces are never touched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, ExitCode};
use std::time::Duration;

use vmpriv_protocol::Inet4Prefix;
use vmpriv_protocol::addr::local_inet;
use vmpriv_tests::{bridge, ping, run, sh, taps};

const POLICY: &str = "\
# demo policy: nobody may put up to 4 taps on br0, and have local taps with VM slot 1's addresses
allow user nobody switch br0
allow user nobody local vm 1
quota user nobody 4
";

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None => host_side(),
        Some("--vm-side") => vm_side(),
        Some(_) => {
            eprintln!("usage: vmpriv-demo   (as root; see demo.sh)");
            ExitCode::from(2)
        }
    }
}

fn step(text: &str) {
    println!("\n== {text}");
}

fn host_side() -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("vmpriv-demo: run as root (sudo ./demo.sh); it changes nothing on the host");
        return ExitCode::from(1);
    }
    let exe = std::env::current_exe().unwrap();
    if std::env::var_os("VMPRIV_DEMO_INSIDE").is_none() {
        // Everything happens in namespaces made for the demo and gone when it exits.
        let status = Command::new("unshare")
            .args(["--net", "--mount", "--"])
            .arg(&exe)
            .env("VMPRIV_DEMO_INSIDE", "1")
            .status()
            .expect("unshare (util-linux) runs");
        return if status.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    let dir = exe.parent().unwrap();
    let (helper, cli, bridge_helper) = (
        dir.join("vmpriv-helper"),
        dir.join("vmpriv"),
        dir.join("vmpriv-bridge-helper"),
    );
    for b in [&helper, &cli, &bridge_helper] {
        if !b.exists() {
            eprintln!(
                "vmpriv-demo: {} is missing: build with `cargo build --release` first",
                b.display()
            );
            return ExitCode::from(1);
        }
    }
    step("a throwaway network namespace (the host's interfaces are not visible here)");
    let s = vmpriv_tests::setup(
        "demo",
        (
            helper.to_str().unwrap(),
            cli.to_str().unwrap(),
            bridge_helper.to_str().unwrap(),
        ),
        POLICY,
    );
    // A bridge with a fixed, locally administered MAC, as vmpriv.conf(5) advises for every granted
    // bridge (the helper refuses a tap on any other; setup mounted this namespace's /sys, where it
    // reads that).
    bridge("br0", None);
    sh(&["ip", "link", "set", "br0", "address", "02:00:5e:00:00:01"]);
    print!("{}", sh(&["ip", "-br", "link"]));
    step("policy at /etc/vmpriv/policy.conf (an overlay on /etc inside the namespace)");
    print!("{}", std::fs::read_to_string("/etc/vmpriv/policy.conf").unwrap());
    step("setuid-root copy of the helper");
    print!("{}", sh(&["ls", "-l", s.helper.to_str().unwrap()]));
    let as_nobody = || {
        let mut c = vmpriv_tests::nobody_command(&s.cli);
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("VMPRIV_HELPER", &s.helper);
        c
    };
    step("as uid 65534: vmpriv whoami");
    let _ = as_nobody().arg("whoami").status();
    // A local interface in vmd's sense: a point-to-point /31 on the tap itself, not on a switch.
    step("as uid 65534: vmpriv tap --vm 1 --nic 0 --local --json -- vmpriv-demo --vm-side");
    let status = as_nobody()
        .args([
            "tap",
            "--vm",
            "1",
            "--nic",
            "0",
            "--local",
            "--description",
            "demo vm1 if0",
            "--json",
            "--",
        ])
        .arg(&exe)
        .arg("--vm-side")
        .status()
        .expect("setpriv (util-linux) runs");
    step("after the VM closed its fd");
    print!("{}", sh(&["ip", "-br", "link"]));
    let left = taps();
    println!(
        "taps left: {}",
        if left.is_empty() {
            "none".to_owned()
        } else {
            left.join(" ")
        }
    );
    step("cleaning up");
    let _ = std::fs::remove_dir_all(&s.dir);
    println!(
        "removed {}; the namespace goes when this process exits",
        s.dir.display()
    );
    if status.success() && left.is_empty() {
        println!("\ndemo OK");
        ExitCode::SUCCESS
    } else {
        println!("\ndemo FAILED ({status})");
        ExitCode::from(1)
    }
}

fn vm_side() -> ExitCode {
    let (Ok(fds), Ok(name)) = (std::env::var("VMPRIV_TAP_FDS"), std::env::var("VMPRIV_TAP_NAME")) else {
        eprintln!(
            "vm side: VMPRIV_TAP_FDS and VMPRIV_TAP_NAME are not set: run me under `vmpriv tap ... --`"
        );
        return ExitCode::from(2);
    };
    let Some(fd) = fds.split(',').next().and_then(|f| f.parse::<i32>().ok()) else {
        eprintln!("vm side: VMPRIV_TAP_FDS={fds:?} names no fd");
        return ExitCode::from(2);
    };
    // SAFETY: `vmpriv tap` left exactly this fd open for us across exec; nothing else owns it.
    #[allow(unsafe_code)]
    let tap = unsafe { OwnedFd::from_raw_fd(fd) };
    let plan = local_inet(Inet4Prefix::DEFAULT, 1, 0).unwrap();
    println!(
        "VM: I hold tap {name} as fd {fd}; I am {} (mac 52:54:00:12:34:56), the host side is {}",
        plan.vm(),
        plan.host()
    );
    let (arp, rtts) = match ping::arp_and_ping(&tap, plan.vm(), plan.host(), 5) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("VM: {e}");
            return ExitCode::from(1);
        }
    };
    println!("VM: ARP reply from {} in {}", plan.host(), us(arp));
    for (i, r) in rtts.iter().enumerate() {
        println!(
            "VM: echo reply from {}: icmp_seq={} time={}",
            plan.host(),
            i + 1,
            us(*r)
        );
    }
    let mut sorted = rtts.clone();
    sorted.sort();
    println!(
        "VM: round trip median {} over {} echoes",
        us(sorted[sorted.len() / 2]),
        sorted.len()
    );
    drop(tap);
    let gone = !run(&["ip", "link", "show", "dev", &name]).status.success();
    println!(
        "VM: closed fd {fd}; tap {name} {}",
        if gone { "is gone" } else { "STILL EXISTS" }
    );
    if gone {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn us(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}
