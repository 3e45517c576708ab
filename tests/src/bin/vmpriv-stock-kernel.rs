//! `cargo run -p vmpriv-tests --bin vmpriv-stock-kernel [-- TEST…]` (as root): the privileged
//! scenario tests (default `helper hostile ownership cli qemu`) on Debian's stock kernel, inside a virtme-ng
//! guest under TCG that shares this machine's root read-only. There the VRF, dummy and vlan drivers
//! exist, so the tests this machine's kernel cannot run (`#[ignore = "needs VRF…"]`) run for real:
//! every test binary runs with `--include-ignored`, and any test left ignored, any failure or any
//! binary that did not finish fails the matrix. The last line is `kernel VERSION: N passed, M failed`.
//!
//! Needs `vng` (`pip install virtme-ng`), `kmod`, `qemu-system-x86`; fetches the kernel with apt.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use vmpriv_tests::guest::stock_kernel;
use vmpriv_tests::sh;

const DEFAULT_TESTS: [&str; 5] = ["helper", "hostile", "ownership", "cli", "qemu"];
/// The kernel features the scenarios need, loaded in the guest (the host shares no modules).
const MODULES: [&str; 5] = ["tun", "bridge", "vrf", "dummy", "8021q"];
/// The whole matrix took 5 min on this 2-core machine; a hung guest must not hang CI.
const TIMEOUT: Duration = Duration::from_secs(20 * 60);
const SUMMARY: &str = "vmpriv-matrix: kernel ";
/// The guest's first line, once it runs this program: what was printed before it is the boot's.
const STARTED: &str = "vmpriv-matrix: the guest runs the tests";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--in-guest") {
        return in_guest(&args[1..]);
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "vmpriv-stock-kernel: run as root (it boots a guest whose tests make namespaces)"
    );
    // The guest sees this machine's root read-only, but virtme-ng gives it its own /tmp and /run, and
    // the guest side mounts its own /var/tmp for the scenarios: the test binaries (and the helper
    // paths compiled into them) must live elsewhere.
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = std::env::current_exe().unwrap();
    for dir in ["/tmp", "/var/tmp", "/run"] {
        assert!(
            !workspace.starts_with(dir) && !target.starts_with(dir),
            "vmpriv-stock-kernel: the checkout ({}) and the target dir ({}) must not be under {dir}, \
             which the guest does not share: clone or build elsewhere",
            workspace.display(),
            target.display()
        );
    }
    let tests: Vec<String> = if args.is_empty() {
        DEFAULT_TESTS.map(str::to_owned).to_vec()
    } else {
        args
    };
    let kernel = stock_kernel();
    let bins = build(&tests);
    // The guest runs a copy of us: building the test binaries (above) builds this package's binaries
    // again with the tests' features (`arbitrary`, a dev-dependency), replacing the file we were
    // started from, and the guest, reading that path over 9p, could not execute it (its shell then
    // read the ELF as a script: "Syntax error: word unexpected"). /proc/self/exe is still us.
    let me = std::env::current_exe()
        .unwrap()
        .with_file_name("vmpriv-stock-kernel.guest");
    std::fs::copy("/proc/self/exe", &me).unwrap();
    let mut exec = vec![me.display().to_string(), "--in-guest".to_owned()];
    exec.extend(
        bins.iter()
            .map(|(name, path)| format!("{name}={}", path.display())),
    );
    let exec = exec.join(" ");
    println!(
        "== kernel {} ({}), tests {tests:?}",
        kernel.version,
        kernel.vmlinuz.display()
    );
    let start = Instant::now();
    // QEMU under TCG has crashed during boot here (a segfault while the kernel probed PCI, in one of
    // the CI runs of 2026-11-27), before the guest ran anything: then, and only then, boot it once more
    // and say so.
    let mut summary = None;
    for attempt in 1..=2 {
        let (s, started) = boot(&kernel.vmlinuz, &exec);
        summary = s;
        if summary.is_some() || started || attempt == 2 {
            break;
        }
        println!(
            "vmpriv-stock-kernel: the guest never started the tests (QEMU or its boot failed): booting it once more"
        );
    }
    println!("== the stock-kernel matrix took {} s", start.elapsed().as_secs());
    let Some(s) = summary else {
        println!(
            "kernel {}: 0 passed, 1 failed (the guest printed no summary)",
            kernel.version
        );
        return ExitCode::FAILURE;
    };
    println!("kernel {s}");
    if s.ends_with(" 0 failed") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Boots `vmlinuz` with virtme-ng to run `exec`, echoing its console: the guest's summary, if it
/// printed one, and whether it started the tests at all.
fn boot(vmlinuz: &std::path::Path, exec: &str) -> (Option<String>, bool) {
    // --verbose: without udev in the guest, virtme-ng's script output falls back to the serial
    // console, which only --verbose shows. --force-9p: no virtiofsd here.
    // One pipe for stdout and stderr: with --verbose the guest's console is on vng's stderr.
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
        ])
        .args(["--exec", exec])
        .stdin(Stdio::null())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .expect("vng runs (pip install virtme-ng)");
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(1));
            if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid.cast_signed()), None).is_err() {
                return;
            }
        }
        eprintln!("vmpriv-stock-kernel: no result after {TIMEOUT:?}: killing vng");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid.cast_signed()),
            nix::sys::signal::Signal::SIGKILL,
        );
    });
    let (mut summary, mut started) = (None, false);
    // Reads until every copy of the writer is closed: vng and the QEMU it runs have exited.
    for line in BufReader::new(reader).split(b'\n') {
        let line = String::from_utf8_lossy(&line.unwrap()).replace('\r', "");
        println!("{line}");
        started |= line.contains(STARTED);
        if let Some(s) = line.strip_prefix(SUMMARY) {
            summary = Some(s.to_owned());
        }
    }
    // vng's own exit status is not the script's here (no virtio-serial ports without udev): the
    // verdict is the guest's summary line.
    let _ = child.wait();
    let _ = watchdog.join();
    (summary, started)
}

/// Builds the test binaries on this machine (the guest's root is read-only) and returns their paths.
fn build(tests: &[String]) -> Vec<(String, PathBuf)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["test", "-p", "vmpriv-tests", "--no-run", "--message-format=json"]);
    for t in tests {
        cmd.args(["--test", t]);
    }
    let out = cmd.stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "building the test binaries failed");
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(m) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if m["reason"] == "compiler-artifact"
            && m["target"]["kind"] == serde_json::json!(["test"])
            && let (Some(name), Some(exe)) = (m["target"]["name"].as_str(), m["executable"].as_str())
        {
            bins.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    bins.sort_by_key(|(n, _)| tests.iter().position(|t| t == n));
    assert_eq!(bins.len(), tests.len(), "a binary per test: {bins:?}");
    bins
}

/// In the guest: load the modules, give the scenarios a tmpfs, run each binary with
/// `--include-ignored`, and check that every test it ignores by default ran and passed.
fn in_guest(bins: &[String]) -> ExitCode {
    println!("{STARTED}");
    cloexec_inherited_fds();
    let _ = Command::new("dmesg").args(["-n", "1"]).status(); // no kernel lines inside test output
    let version = sh(&["uname", "-r"]).trim().to_owned();
    let mut modprobe = vec!["modprobe", "-a"];
    modprobe.extend(MODULES);
    sh(&modprobe);
    // The scenarios keep their overlay upper dirs and setuid copies in /var/tmp: virtme-ng's is a
    // nosuid tmpfs, and an overlay's upper dir cannot be on the 9p root.
    sh(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "mode=755",
        "vmpriv-tests",
        "/var/tmp",
    ]);
    let (mut passed, mut failed) = (0u32, 0u32);
    for spec in bins {
        let (name, path) = spec.split_once('=').expect("NAME=PATH");
        let start = Instant::now();
        let list = Command::new(path)
            .args(["--list", "--ignored", "--format", "terse"])
            .output()
            .unwrap();
        let expected: Vec<String> = String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter_map(|l| l.strip_suffix(": test").map(str::to_owned))
            .collect();
        let out = Command::new(path)
            .args(["--include-ignored", "--color", "never"])
            .output()
            .unwrap();
        // libtest's own lines are on stdout (a scenario's panic text, on stderr, quotes its child's).
        let text = String::from_utf8_lossy(&out.stdout);
        println!("{text}{}", String::from_utf8_lossy(&out.stderr));
        let result = text
            .lines()
            .rev()
            .find(|l| l.starts_with("test result:"))
            .map(|l| {
                // A summary line we cannot read is a failure of this runner, never a count of 0.
                let n = |word: &str| -> u32 {
                    let before = l.split(word).next().unwrap_or("");
                    before
                        .rsplit(|c: char| !c.is_ascii_digit())
                        .find(|s| !s.is_empty())
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("no count before `{word}` in the guest's line: {l}"))
                };
                (n(" passed"), n(" failed"), n(" ignored"))
            });
        let (p, mut f, i) = result.unwrap_or((0, 1, 0));
        let mut problems = Vec::new();
        if result.is_none() {
            problems.push("no test result line".to_owned());
        }
        if !out.status.success() && f == 0 {
            f = 1;
            problems.push(format!("exit {}", out.status));
        }
        if i > 0 {
            f += i;
            problems.push(format!("{i} still ignored"));
        }
        for t in &expected {
            if !text.contains(&format!("test {t} ... ok")) {
                f += 1;
                problems.push(format!("{t} did not pass"));
            }
        }
        let host_ignored = if expected.is_empty() {
            String::new()
        } else {
            format!(" (ignored on the host: {})", expected.join(", "))
        };
        let problems = if problems.is_empty() {
            String::new()
        } else {
            format!("; {}", problems.join("; "))
        };
        println!(
            "vmpriv-matrix: {name}: {p} passed, {f} failed in {} s{host_ignored}{problems}",
            start.elapsed().as_secs()
        );
        passed += p;
        failed += f;
    }
    println!("{SUMMARY}{version}: {passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// virtme-ng's script runner leaves fds open without close-on-exec (its tty, the script); a test
/// that execs the helper under `RLIMIT_NOFILE` 4 would find no fd free for the dynamic loader.
fn cloexec_inherited_fds() {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: fd was just listed in our own fd table; setting FD_CLOEXEC does not close it.
        #[allow(unsafe_code)]
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
}
