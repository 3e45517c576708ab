//! AppArmor, for real: Debian's stock kernel booted with `apparmor=1 security=apparmor` (virtme-ng,
//! TCG, this machine's root shared read-only), libvirt's own profiles and ours loaded with
//! `apparmor_parser`, and a session-mode libvirtd, confined by libvirt's profile, starting a domain
//! with a bridged interface through vmpriv's bridge helper. `tests/apparmor/guest.sh` runs in the
//! guest and prints one line per check; the same run shows the start failing with libvirtd's exec
//! denial in the kernel log without our part (the package's earlier layout), and failing with a denial
//! in our profile when that profile lacks a rule (so the helper really runs in it).
//!
//! The package itself (`packaging/build-deb.sh`) is what the guest installs "with our part".
//! Needs root, `vng` (virtme-ng), `qemu-system-x86`, cargo-deb, and the Debian packages `apparmor`,
//! `libvirt-daemon-system` and `libvirt-clients` on this machine (the guest runs them from its root);
//! fetches the kernel with apt (`vmpriv_tests::guest`). Ignored by default: `.ci/run` runs it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmpriv_tests::guest::stock_kernel;

/// Each line of the guest script's checks, in order: a check that did not run is a failure too.
const CHECKS: [&str; 26] = [
    "AppArmor is enabled in the guest kernel",
    "apparmor_parser loads libvirt's usr.sbin.libvirtd",
    "apparmor_parser loads libvirt's usr.lib.libvirt.virt-aa-helper",
    "the session libvirtd runs confined by libvirt's profile",
    "virsh defines the domain",
    // Without our part.
    "the domain does not start",
    "virsh says libvirt cannot execute the helper",
    "the kernel denied libvirtd the exec",
    "no tap on br0",
    // With it.
    "dpkg -i installs the package",
    "its postinst loaded profile vmpriv-bridge-helper in enforce mode",
    "its postinst loaded profile vmpriv-helper in enforce mode",
    "the domain runs",
    "its tap is on br0, owned by the user",
    "the kernel logged no AppArmor denial",
    "after virsh destroy the tap is gone",
    // Our profile short of one rule.
    "the domain does not start",
    "the kernel denied netlink in vmpriv-bridge-helper's profile",
    "the unconfined fallback: the domain runs",
    "the unconfined fallback: its tap is on br0",
    // The session helper.
    "vmpriv tap got a tap on br0 from the confined session helper",
    "the kernel logged no AppArmor denial",
    "vmpriv tap got no tap",
    "the kernel denied netlink in vmpriv-helper's profile",
    "no tap is left on br0",
    "the guest script reached its end",
];
const PREFIX: &str = "vmpriv-apparmor: ";
/// One run took about 5 min on this 2-core machine (libvirt probes QEMU under TCG in TCG).
const TIMEOUT: Duration = Duration::from_secs(15 * 60);

#[test]
#[ignore = "boots Debian's stock kernel with AppArmor in virtme-ng (about 5 min under TCG): .ci/run runs it"]
fn libvirt_runs_the_bridge_helper_under_apparmor_with_our_profile_and_not_without() {
    vmpriv_tests::require_root("apparmor");
    for (tool, package) in [
        ("vng", "pip install virtme-ng"),
        ("apparmor_parser", "apt-get install apparmor"),
        ("libvirtd", "apt-get install libvirt-daemon-system"),
        ("virsh", "apt-get install libvirt-clients"),
        ("qemu-system-x86_64", "apt-get install qemu-system-x86"),
        ("cargo-deb", "cargo install cargo-deb --locked"),
    ] {
        vmpriv_tests::require_tool("apparmor", tool, package);
    }
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = tests.join("apparmor/guest.sh");
    let profiles = tests.parent().unwrap().join("packaging/apparmor");
    // The old layout's bridge helper (the package's is the release build inside the .deb).
    let bridge = env!("CARGO_BIN_EXE_vmpriv-bridge-helper-under-test");
    // The guest has its own /tmp, /var/tmp and /run: what it runs must be elsewhere.
    for path in [script.as_path(), Path::new(bridge)] {
        for dir in ["/tmp", "/var/tmp", "/run"] {
            assert!(
                !path.starts_with(dir),
                "{} is under {dir}, which the guest does not share: clone or build elsewhere",
                path.display()
            );
        }
    }
    let deb = build_deb(tests.parent().unwrap());
    let kernel = stock_kernel();
    let exec = format!(
        "sh {} {bridge} {} {}",
        script.display(),
        deb.display(),
        profiles.display()
    );
    println!("== kernel {} with AppArmor: {exec}", kernel.version);
    let start = Instant::now();
    // QEMU under TCG has crashed during boot here before the guest ran anything (see
    // vmpriv-stock-kernel): then, and only then, boot once more and say so.
    let mut lines = boot(&kernel.vmlinuz, &exec);
    if lines.is_empty() {
        println!("apparmor: the guest never started the script: booting it once more");
        lines = boot(&kernel.vmlinuz, &exec);
    }
    let ok: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("ok - ")).collect();
    let failed: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("FAIL - ")).collect();
    // A check that printed neither line (the script died before it) counts as failed.
    let missing = CHECKS.len().saturating_sub(ok.len() + failed.len());
    println!(
        "apparmor: {} passed, {} failed in {} s",
        ok.len(),
        failed.len() + missing,
        start.elapsed().as_secs()
    );
    assert!(
        failed.is_empty() && ok == CHECKS,
        "the guest's checks: failed {failed:?}; passed {ok:?}; expected {CHECKS:?}"
    );
}

/// The package, built by `packaging/build-deb.sh` from this checkout (the release build is cached
/// after the first; `.ci/run`'s package test has built it by then).
fn build_deb(workspace: &Path) -> std::path::PathBuf {
    let out = Command::new(workspace.join("packaging/build-deb.sh"))
        .current_dir(workspace)
        .stderr(Stdio::inherit())
        .output()
        .expect("packaging/build-deb.sh runs");
    assert!(out.status.success(), "packaging/build-deb.sh failed");
    // cargo-deb prints the package's path last.
    let text = String::from_utf8_lossy(&out.stdout);
    let deb = text
        .lines()
        .rev()
        .map(|l| Path::new(l.trim()))
        .find(|p| p.extension().is_some_and(|e| e == "deb") && p.is_file())
        .unwrap_or_else(|| panic!("build-deb.sh printed no .deb path: {text}"));
    deb.to_path_buf()
}

/// Boots `vmlinuz` with AppArmor on to run `exec`, echoing the guest script's lines; returns them
/// without their prefix (none if the guest never ran the script).
fn boot(vmlinuz: &Path, exec: &str) -> Vec<String> {
    // As vmpriv-stock-kernel: --verbose puts the guest's console (our script's output) on vng's
    // stderr; --force-9p, no virtiofsd here. vng also overlays /etc, /usr and /var in the guest.
    use std::os::unix::process::CommandExt;
    let (reader, writer) = std::io::pipe().unwrap();
    let mut child = Command::new("vng")
        .arg("-r")
        .arg(vmlinuz)
        .args([
            "--disable-kvm",
            "--force-9p",
            "--verbose",
            "--cpus",
            "2",
            "--memory",
            "2G",
            "--append",
            "apparmor=1 security=apparmor",
            "--exec",
            exec,
        ])
        .stdin(Stdio::null())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        // Its own process group: on timeout the QEMU it started goes too.
        .process_group(0)
        .spawn()
        .expect("vng runs (pip install virtme-ng)");
    let pid = nix::unistd::Pid::from_raw(child.id().cast_signed());
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(1));
            if nix::sys::signal::kill(pid, None).is_err() {
                return;
            }
        }
        eprintln!("apparmor: no result after {TIMEOUT:?}: killing vng and its QEMU");
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
    });
    let mut lines = Vec::new();
    // Until vng and the QEMU it runs have exited (every copy of the writer closed).
    for line in BufReader::new(reader).split(b'\n') {
        let line = String::from_utf8_lossy(&line.unwrap()).replace('\r', "");
        if let Some(l) = line.strip_prefix(PREFIX) {
            println!("{line}");
            lines.push(l.to_owned());
        }
    }
    let _ = child.wait();
    let _ = watchdog.join();
    lines
}
