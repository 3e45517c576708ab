//! `cargo run --release --bin vmpriv-bench -- --nics N [--rounds R]` (as root): the per-NIC cost of
//! giving a VM a configured tap (create + attach + description + up + IPv4 /31 + IPv6 /96 + fds in the
//! caller's hands), vmpriv against what users would use instead, run round-robin in one invocation,
//! each run in a fresh network + mount namespace with a bridge. Prints a table; the last lines are
//! machine-readable ratios of medians.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use vmpriv_bench::floor::{
    self, IFA_ADDRESS, IFA_LOCAL, IFF_UP, IFLA_GROUP, IFLA_IFALIAS, IFLA_MASTER, Msg, NLM_F_ACK,
    NLM_F_CREATE, NLM_F_REPLACE, Netlink, RTM_NEWADDR, RTM_SETLINK,
};
use vmpriv_client::{Helper, TapOptions};
use vmpriv_protocol::addr::{local_inet, local_inet6};
use vmpriv_protocol::{Inet4Prefix, Inet6Prefix};
use vmpriv_tests::{NOBODY, sh};

const CONTENDERS: [&str; 8] = [
    "vmpriv-warm",
    "vmpriv-warm-quota",
    "vmpriv-warm-pipelined",
    "vmpriv-oneshot",
    "iproute2",
    "ip-batch",
    "qemu-bridge-helper",
    "floor",
];
const QBH: &str = "/usr/lib/qemu/qemu-bridge-helper";
/// vmpriv's contenders run with no quota (as qemu-bridge-helper has none); `vmpriv-warm-quota` shows
/// what the quota costs (claiming a free slot: one lookup by name per create in a warm session).
const POLICY: &str = "allow user nobody switch br0\nallow user nobody local\nquota user nobody unlimited\n";
const POLICY_QUOTA: &str = "allow user nobody switch br0\nallow user nobody local\nquota user nobody 4096\n";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    match args.first().map(String::as_str) {
        Some("--run") => run(&args[1], args[2].parse().unwrap()),
        Some("--worker") => worker(&args[1], args[2].parse().unwrap(), Path::new(&args[3])),
        Some("--startup") => {
            let n = get("--startup").and_then(|v| v.parse().ok()).unwrap_or(200);
            build_bins();
            let startup = startup_in_namespace(n);
            print_startup(&startup);
            print_startup_ratios(&startup);
        }
        _ => {
            let n: usize = get("--nics")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage());
            let default_rounds = match n {
                0..=9 => 15,
                10..=500 => 5,
                _ => 3,
            };
            let rounds = get("--rounds")
                .and_then(|v| v.parse().ok())
                .unwrap_or(default_rounds);
            parent(n, rounds);
        }
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: vmpriv-bench --nics N [--rounds R] | --startup [N]   (as root; makes its own namespaces)"
    );
    std::process::exit(2);
}

fn exe_dir() -> PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().to_owned()
}

/// The per-NIC plan: NIC i is vm i, nic 0 (vmd's local addresses), description "vm{i} net0".
fn plan(i: usize) -> (u32, String) {
    (u32::try_from(i).unwrap(), format!("vm{i} net0"))
}

// ---------------------------------------------------------------------------------------------------
// The parent: builds, runs every contender round-robin, aggregates, prints.

/// The helper is another package's binary, and the start-up's Rust hello world another binary of this
/// one: build both (cargo run released its lock).
fn build_bins() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for (package, bin) in [
        ("vmpriv-helper", "vmpriv-helper"),
        ("vmpriv-bridge-helper", "vmpriv-bridge-helper"),
        ("vmpriv-bench", "vmpriv-bench-hello"),
    ] {
        let st = Command::new(&cargo)
            .args(["build", "--release", "--quiet", "-p", package, "--bin", bin])
            .status()
            .unwrap();
        assert!(st.success(), "building {bin} failed");
    }
}

fn parent(n: usize, rounds: usize) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("vmpriv-bench: run as root (it makes namespaces and setuid copies; the host is untouched)");
        std::process::exit(1);
    }
    build_bins();
    let have_qbh = Path::new(QBH).exists();
    let contenders: Vec<&str> = CONTENDERS
        .iter()
        .copied()
        .filter(|c| have_qbh || *c != "qemu-bridge-helper")
        .collect();
    let exe = std::env::current_exe().unwrap();
    let mut samples: BTreeMap<&str, Vec<Vec<f64>>> = BTreeMap::new();
    let mut stats: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    eprintln!(
        "vmpriv-bench: {n} NICs, {rounds} rounds, contenders: {}",
        contenders.join(", ")
    );
    for round in 0..rounds {
        for k in 0..contenders.len() {
            let c = contenders[(k + round) % contenders.len()];
            settle();
            let out = Command::new("unshare")
                .args(["--net", "--mount", "--"])
                .arg(&exe)
                .args(["--run", c, &n.to_string()])
                .stderr(Stdio::inherit())
                .output()
                .unwrap();
            assert!(out.status.success(), "{c} failed in round {round}");
            let mut per_nic = Vec::new();
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let mut w = line.split_whitespace();
                match (w.next(), w.next(), w.next()) {
                    (Some("nic"), Some(us), None) => per_nic.push(us.parse::<f64>().unwrap()),
                    (Some("stat"), Some(key), Some(v)) => {
                        stats.entry(key.to_owned()).or_default().push(v.parse().unwrap());
                    }
                    _ => {}
                }
            }
            assert_eq!(per_nic.len(), n, "{c}: expected {n} per-NIC samples");
            samples.entry(c).or_default().push(per_nic);
        }
        eprintln!("vmpriv-bench: round {}/{rounds} done", round + 1);
    }
    eprintln!("vmpriv-bench: start-up, 200 spawns each");
    settle();
    let startup = startup_in_namespace(200);
    report(n, rounds, &contenders, &samples, &stats, &startup, have_qbh);
}

/// Waits until the machine is idle (at least 90% over 200 ms, by `/proc/stat`), at most 10 s: the
/// kernel finishes a namespace's teardown (and the RCU work of 1000 deleted taps) after its last
/// process exits, and that work would otherwise land on the next contender's clock.
fn settle() {
    let idle_total = || {
        let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat is readable");
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .expect("/proc/stat has a cpu line")
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().expect("/proc/stat counts are numbers"))
            .collect();
        // idle + iowait, and the sum of all fields.
        (cpu[3] + cpu[4], cpu.iter().sum::<u64>())
    };
    let start = Instant::now();
    while start.elapsed().as_secs() < 10 {
        let (i0, t0) = idle_total();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (i1, t1) = idle_total();
        if t1 > t0 && (i1 - i0) as f64 >= 0.9 * (t1 - t0) as f64 {
            return;
        }
    }
    eprintln!("vmpriv-bench: the machine did not settle within 10 s; going on");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, 0.5)
}

fn report(
    n: usize,
    rounds: usize,
    contenders: &[&str],
    samples: &BTreeMap<&str, Vec<Vec<f64>>>,
    stats: &BTreeMap<String, Vec<f64>>,
    startup: &Startup,
    have_qbh: bool,
) {
    let pooled = |c: &str| -> Vec<f64> {
        let mut all: Vec<f64> = samples[c].iter().flatten().copied().collect();
        all.sort_by(f64::total_cmp);
        all
    };
    let med = |c: &str| percentile(&pooled(c), 0.5);
    let floor = med("floor");
    let warm = med("vmpriv-warm");
    let uname = String::from_utf8_lossy(&Command::new("uname").arg("-r").output().unwrap().stdout)
        .trim()
        .to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!("\nvmpriv-bench --nics {n} --rounds {rounds}   (kernel {uname}, {cpus} CPUs)");
    println!(
        "per-NIC time, microseconds, all rounds pooled; ratio = median / median of the floor or of vmpriv warm\n"
    );
    println!(
        "{:<20} {:>10} {:>19} {:>9} {:>8} {:>9} {:>22}",
        "contender", "median", "p25-p75", "NICs/s", "x floor", "x vmpriv", "first 100 -> last 100"
    );
    for c in contenders {
        let all = pooled(c);
        let m = percentile(&all, 0.5);
        let growth = if n >= 200 {
            let first: Vec<f64> = samples[c].iter().flat_map(|r| r[..100].to_vec()).collect();
            let last: Vec<f64> = samples[c].iter().flat_map(|r| r[n - 100..].to_vec()).collect();
            format!(
                "{:.0} -> {:.0} ({:.2}x)",
                median(&first),
                median(&last),
                median(&last) / median(&first)
            )
        } else {
            "-".to_owned()
        };
        println!(
            "{c:<20} {m:>10.0} {:>19} {:>9.0} {:>8.2} {:>9.2} {growth:>22}",
            format!("{:.0}-{:.0}", percentile(&all, 0.25), percentile(&all, 0.75)),
            1e6 / m,
            m / floor,
            m / warm,
        );
    }
    println!(
        "\nnotes: vmpriv-warm = one session, every NIC fully configured (tap, switch, description, up, /31, /96),"
    );
    println!(
        "  policy `quota unlimited`; vmpriv-warm-quota = the same with `quota 4096`, where each create claims"
    );
    println!("  a free quota slot (one lookup by name: the tap is created under its name vpUID-SLOT);");
    println!(
        "  vmpriv-warm-pipelined = vmpriv-warm's NICs asked for 8 at a time (Helper::create_taps, pipelined);"
    );
    println!(
        "  vmpriv-oneshot = one setuid bridge helper process per NIC, QEMU's contract (tap, switch, MTU, MAC, up: no"
    );
    println!(
        "  description, no addresses), the same work as qemu-bridge-helper; iproute2 = 6 ip processes per NIC;"
    );
    println!(
        "  ip-batch = one ip -batch process per 100 NICs; both ip contenders then open each tap as a VMM does"
    );
    println!("  (carrier on); floor = the kernel work alone, root, one netlink socket.");
    if !have_qbh {
        println!(
            "  qemu-bridge-helper: not installed ({QBH}); apt-get install qemu-system-common to compare"
        );
    }
    let s = |k: &str| stats.get(k).map_or(f64::NAN, |v| median(v));
    println!(
        "\nhelper: peak RSS {:.0} KiB (VmHWM, warm session after {n} NICs)",
        s("helper_vmhwm_kib")
    );
    print_startup(startup);
    let size = std::fs::metadata(exe_dir().join("vmpriv-helper")).map_or(0, |m| m.len());
    println!("helper: binary size {size} bytes (release, stripped)");
    println!(
        "helper: a request with no kernel work (Hello) round trip {:.0} us (median)",
        s("hello_rtt_us")
    );
    match syscalls_per_nic() {
        Some((warm_sc, oneshot_sc)) => {
            println!(
                "syscalls per NIC (strace -c -f, (N=60 - N=10)/50): vmpriv-warm {warm_sc:.1}, vmpriv-oneshot {oneshot_sc:.1}"
            );
        }
        None => println!("syscalls per NIC: strace not installed"),
    }
    let per_tap = |k: &str| s(k) / n as f64 * 1e6;
    println!(
        "teardown per tap (us, median of rounds): vmpriv batched {:.0}, vmpriv closing fds one by one {:.0}, \
         root `ip link delete group` {:.0}",
        per_tap("teardown_batched_s"),
        per_tap("teardown_close_s"),
        per_tap("teardown_root_group_s"),
    );
    println!();
    println!("warm_vs_floor={:.3}", warm / floor);
    println!("warm_quota_vs_floor={:.3}", med("vmpriv-warm-quota") / floor);
    println!(
        "warm_pipelined_vs_floor={:.3}",
        med("vmpriv-warm-pipelined") / floor
    );
    println!("teardown_{n}_s={:.3}", s("teardown_batched_s"));
    println!(
        "teardown_vs_root_batch={:.3}",
        s("teardown_batched_s") / s("teardown_root_group_s")
    );
    print_startup_ratios(startup);
    if n >= 200 {
        // vmpriv warm's last 100 NICs against the best non-vmpriv contender's last 100.
        let last = |c: &str| {
            median(
                &samples[c]
                    .iter()
                    .flat_map(|r| r[n - 100..].to_vec())
                    .collect::<Vec<_>>(),
            )
        };
        let best = contenders
            .iter()
            .filter(|c| !c.starts_with("vmpriv"))
            .map(|c| (last(c), *c))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap();
        println!("# best last-100 contender: {} ({:.0} us)", best.1, best.0);
        println!("warm_last100_vs_best={:.3}", last("vmpriv-warm") / best.0);
    }
    if have_qbh {
        println!(
            "oneshot_vs_qemu_bridge_helper={:.3}",
            med("vmpriv-oneshot") / med("qemu-bridge-helper")
        );
    } else {
        println!("# oneshot_vs_qemu_bridge_helper omitted: {QBH} is not installed");
    }
}

/// Syscalls per NIC for the two vmpriv contenders, from two strace runs each.
fn syscalls_per_nic() -> Option<(f64, f64)> {
    Command::new("strace")
        .arg("-V")
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let exe = std::env::current_exe().unwrap();
    let count = |c: &str, n: usize| -> f64 {
        let out = Command::new("unshare")
            .args(["--net", "--mount", "--"])
            .arg(&exe)
            .args(["--run", c, &n.to_string()])
            .env("VMPRIV_BENCH_STRACE", "1")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("stat syscalls ").map(|v| v.parse().unwrap()))
            .unwrap_or(f64::NAN)
    };
    let per = |c: &str| (count(c, 60) - count(c, 10)) / 50.0;
    Some((per("vmpriv-warm"), per("vmpriv-oneshot")))
}

// ---------------------------------------------------------------------------------------------------
// One run, inside a fresh network + mount namespace, as root.

fn run(contender: &str, n: usize) {
    sh(&["ip", "link", "set", "lo", "up"]);
    sh(&["ip", "link", "add", "br0", "type", "bridge"]);
    // A fixed MAC, as vmpriv requires of a switch.
    sh(&["ip", "link", "set", "br0", "address", "02:00:5e:00:00:01"]);
    sh(&["ip", "link", "set", "br0", "up"]);
    match contender {
        "startup" => {
            let dir = exe_dir();
            let s = vmpriv_tests::setup(
                "bench-startup",
                (
                    dir.join("vmpriv-helper").to_str().unwrap(),
                    std::env::current_exe().unwrap().to_str().unwrap(),
                    dir.join("vmpriv-bridge-helper").to_str().unwrap(),
                ),
                POLICY,
            );
            hello_world(&s.dir.join("hello"), true);
            hello_world(&s.dir.join("hello-dynamic"), false);
            std::fs::copy(dir.join("vmpriv-bench-hello"), s.dir.join("hello-rust")).unwrap();
            for setuid in ["hello-dynamic", "hello-rust"] {
                vmpriv_tests::chmod(&s.dir.join(setuid), 0o4755);
            }
            tun_0666(&s.dir);
            as_worker("startup", n, &s.helper);
            let _ = std::fs::remove_dir_all(&s.dir);
        }
        "floor" => floor(n),
        "iproute2" => iproute2(n),
        "ip-batch" => ip_batch(n),
        "vmpriv-warm" | "vmpriv-warm-quota" | "vmpriv-warm-pipelined" | "vmpriv-oneshot" => {
            let dir = exe_dir();
            let s = vmpriv_tests::setup(
                &format!("bench-{contender}"),
                (
                    dir.join("vmpriv-helper").to_str().unwrap(),
                    std::env::current_exe().unwrap().to_str().unwrap(),
                    dir.join("vmpriv-bridge-helper").to_str().unwrap(),
                ),
                if contender == "vmpriv-warm-quota" {
                    POLICY_QUOTA
                } else {
                    POLICY
                },
            );
            tun_0666(&s.dir);
            // The one-shot contender is QEMU's helper= contract: the bridge helper.
            let helper = if contender == "vmpriv-oneshot" {
                &s.bridge
            } else {
                &s.helper
            };
            as_worker(contender, n, helper);
            let _ = std::fs::remove_dir_all(&s.dir);
        }
        "qemu-bridge-helper" => {
            let s = vmpriv_tests::setup(
                "bench-qbh",
                (QBH, std::env::current_exe().unwrap().to_str().unwrap(), QBH),
                POLICY,
            );
            std::fs::create_dir_all("/etc/qemu").unwrap();
            std::fs::write("/etc/qemu/bridge.conf", "allow br0\n").unwrap();
            vmpriv_tests::chmod(Path::new("/etc/qemu/bridge.conf"), 0o644);
            tun_0666(&s.dir);
            as_worker("qemu-bridge-helper", n, &s.helper);
            let _ = std::fs::remove_dir_all(&s.dir);
        }
        other => panic!("unknown contender {other}"),
    }
}

/// /dev/net/tun as most distributions ship it (0666), inside this mount namespace only: this machine's
/// is 0600, which qemu-bridge-helper cannot work with (it opens the device after its own drop), and
/// with which a vmpriv session can only use the /dev/net/tun fds it opened at start-up.
fn tun_0666(dir: &Path) {
    let node = dir.join("tun");
    sh(&["mknod", "-m", "0666", node.to_str().unwrap(), "c", "10", "200"]);
    sh(&["mount", "--bind", node.to_str().unwrap(), "/dev/net/tun"]);
}

/// Runs this binary's worker side as uid 65534 (optionally under strace), passing its output through.
fn as_worker(kind: &str, n: usize, helper: &Path) {
    let exe = std::env::current_exe().unwrap();
    // VMPRIV_BENCH_STRACE=1: counts (`strace -c`); =FILE (a path): every call, to FILE.
    let strace = std::env::var_os("VMPRIV_BENCH_STRACE");
    let full = strace
        .as_ref()
        .filter(|v| v.to_str().is_some_and(|v| v.starts_with('/')));
    let log = helper.with_file_name("strace.log");
    let mut cmd = if let Some(file) = full {
        let mut c = Command::new("strace");
        c.args(["-f", "-tt", "-T", "-o"]).arg(file).arg("setpriv");
        c
    } else if strace.is_some() {
        let mut c = Command::new("strace");
        c.args(["-f", "-c", "-o"]).arg(&log).arg("setpriv");
        c
    } else {
        Command::new("setpriv")
    };
    let out = cmd
        .args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".into(),
        ])
        .arg(&exe)
        .args(["--worker", kind, &n.to_string()])
        .arg(helper)
        .output()
        .unwrap();
    // The helper's audit lines go to stderr (no syslog here): part of its cost, shown only on failure.
    assert!(
        out.status.success(),
        "{kind} worker failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::io::stdout().write_all(&out.stdout).unwrap();
    if strace.is_some() && full.is_none() {
        let text = std::fs::read_to_string(&log).unwrap();
        let total = text.lines().find(|l| l.trim_end().ends_with("total")).unwrap();
        let calls: f64 = total.split_whitespace().nth(3).unwrap().parse().unwrap();
        println!("stat syscalls {calls}");
    }
}

fn addrs(i: usize) -> (IpAddr, IpAddr) {
    let (vm, _) = plan(i);
    let v4 = local_inet(Inet4Prefix::DEFAULT, vm, 0).unwrap();
    let v6 = local_inet6(Inet4Prefix::DEFAULT, Inet6Prefix::DEFAULT, vm, 0).unwrap();
    (IpAddr::V4(v4.host()), IpAddr::V6(v6.host()))
}

/// The same kernel work as vmpriv's warm path, from one root process with one netlink socket and no
/// validation, no privilege drop, no protocol: open, TUNSETIFF, owner, MAC, master, alias, up, /31, /96.
fn floor(n: usize) {
    let mut nl = Netlink::open().unwrap();
    let br = nl.get_link(0, Some("br0")).unwrap().index;
    let mut keep = Vec::new();
    println!("mark pids {}", std::process::id());
    mark("loop_start");
    for i in 0..n {
        let t = Instant::now();
        // Named as vmpriv names its taps (a chosen name, not tap%d); IFF_TUN_EXCL.
        let (tun, name) = open_tun_named(&format!("fl{i:x}"), 0x0002 | 0x1000 | 0x8000);
        floor::tun_set_owner(&tun, NOBODY).unwrap();
        let mut mac = floor::tun_get_mac(&tun).unwrap();
        mac[0] = 0xfe;
        floor::tun_set_mac(&tun, mac).unwrap();
        let index = nl.get_link(0, Some(&name)).unwrap().index;
        let set = |nl: &mut Netlink, flags: u32, change: u32, attr: Option<(u16, Vec<u8>)>| {
            nl.request(|seq| {
                let m = Msg::new(RTM_SETLINK, NLM_F_ACK, seq).ifinfomsg(index, flags, change);
                match &attr {
                    Some((ty, d)) => m.attr(*ty, d),
                    None => m,
                }
            })
            .unwrap();
        };
        set(&mut nl, 0, 0, Some((IFLA_MASTER, br.to_ne_bytes().to_vec())));
        // Group 7, for root's one-batch teardown below (an attribute of its own message: the same
        // work as vmpriv's, where the helper sets the group only for a batched teardown).
        set(
            &mut nl,
            0,
            0,
            Some((IFLA_GROUP, FLOOR_GROUP.to_ne_bytes().to_vec())),
        );
        set(&mut nl, 0, 0, Some((IFLA_IFALIAS, plan(i).1.into_bytes())));
        set(&mut nl, IFF_UP, IFF_UP, None);
        let (v4, v6) = addrs(i);
        for (ip, len, family) in [(v4, 31u8, 2u8), (v6, 96, 10)] {
            nl.request(|seq| {
                let m = Msg::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, seq)
                    .ifaddrmsg(family, len, index);
                if family == 2 {
                    m.attr_ip(IFA_LOCAL, ip).attr_ip(IFA_ADDRESS, ip)
                } else {
                    m.attr_ip(IFA_ADDRESS, ip)
                }
            })
            .unwrap();
        }
        keep.push(tun);
        println!("nic {:.1}", t.elapsed().as_secs_f64() * 1e6);
    }
    mark("loop_end");
    let t = Instant::now();
    mark("teardown_start");
    sh(&["ip", "link", "delete", "group", &FLOOR_GROUP.to_string()]);
    mark("teardown_end");
    println!("stat teardown_root_group_s {:.4}", t.elapsed().as_secs_f64());
    assert_eq!(taps_left(), 0, "floor: taps left after `ip link delete group`");
}

/// Prints `mark NAME SECONDS` (CLOCK_MONOTONIC; the parent ignores it): with `perf record -k
/// CLOCK_MONOTONIC` around `vmpriv-bench --run CONTENDER N`, the samples between `loop_start` and
/// `loop_end` are the NIC loop alone (docs/performance.md, the profile).
fn mark(name: &str) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) },
        0
    );
    println!("mark {name} {}.{:09}", ts.tv_sec, ts.tv_nsec);
}

/// NICs per `create_taps` call in the pipelined contender.
const PIPELINED_BATCH: usize = 8;

/// The floor's interface group.
const FLOOR_GROUP: u32 = 7;

/// Tun/tap devices in this namespace, read back from the kernel (`ip -j -d link show`).
fn taps_left() -> usize {
    vmpriv_tests::links()
        .iter()
        .filter(|l| l["linkinfo"]["info_kind"] == "tun")
        .count()
}

/// The six `ip` commands of NIC i, as argument vectors.
fn ip_commands(i: usize) -> Vec<Vec<String>> {
    let name = format!("tap{i}");
    let (v4, v6) = addrs(i);
    let words = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
    let mut alias = words(&format!("link set {name} alias"));
    alias.push(plan(i).1);
    vec![
        words(&format!("tuntap add {name} mode tap user {NOBODY}")),
        words(&format!("link set {name} master br0")),
        alias,
        words(&format!("link set {name} up")),
        words(&format!("addr add {v4}/31 dev {name}")),
        words(&format!("addr add {v6}/96 dev {name}")),
    ]
}

/// iproute2, one process per command (6 per NIC), as root: what an admin script does; then the VMM
/// attaches the tap (see [`attach`]).
fn iproute2(n: usize) {
    let mut keep = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        for args in ip_commands(i) {
            let st = Command::new("ip").args(&args).status().unwrap();
            assert!(st.success(), "ip {args:?}");
        }
        keep.push(attach(i));
        println!("nic {:.1}", t.elapsed().as_secs_f64() * 1e6);
    }
    drop(keep);
    remove_ip_taps(n);
}

/// The `ip` contenders' taps are persistent: left alone, the kernel would delete them when the
/// namespace goes, in the background, while the next contender runs. Deleted here, in one batch
/// (group, then `ip link delete group`), untimed, and read back.
fn remove_ip_taps(n: usize) {
    let file = std::env::temp_dir().join(format!("vmpriv-bench-del.{}", std::process::id()));
    let text = (0..n).fold(String::new(), |mut t, i| {
        let _ = writeln!(t, "link set dev tap{i} group {IP_GROUP}");
        t
    });
    std::fs::write(&file, text).unwrap();
    sh(&["ip", "-batch", file.to_str().unwrap()]);
    sh(&["ip", "link", "delete", "group", &IP_GROUP.to_string()]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(taps_left(), 0, "ip contender: taps left");
}

/// The interface group the `ip` contenders' taps are deleted by.
const IP_GROUP: u32 = 9;

/// What the VMM does with a tap `ip tuntap add` made: opens it by name, so that it has a queue and
/// carrier (the kernel brings the bridge port and the link's IPv6 up only then). Without this the
/// `ip` contenders would configure links that never come up, which is less kernel work than the same
/// NIC held by a VM (and than every other contender: their taps are held by fds from the start).
fn attach(i: usize) -> OwnedFd {
    // IFF_TAP | IFF_NO_PI: the flags `ip tuntap add ... mode tap` gave it.
    open_tun_named(&format!("tap{i}"), 0x0002 | 0x1000).0
}

/// A new `/dev/net/tun` fd attached (TUNSETIFF) to the tap `name` with `flags`; the kernel's name.
fn open_tun_named(name: &str, flags: i32) -> (OwnedFd, String) {
    let tun: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .unwrap()
        .into();
    let got = floor::tun_set_iff_named(&tun, name, flags).unwrap();
    (tun, got)
}

/// `ip -batch`, one process per 100 NICs, then the VMM attaches each tap ([`attach`]); each NIC of a
/// chunk gets the chunk's mean.
fn ip_batch(n: usize) {
    let dir = std::env::temp_dir().join(format!("vmpriv-bench-batch.{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut keep = Vec::new();
    let mut i = 0;
    while i < n {
        let end = (i + 100).min(n);
        let file = dir.join(format!("{i}.batch"));
        // ip -batch splits lines like a shell: quote the one argument with a space (the alias).
        let quote = |a: String| if a.contains(' ') { format!("\"{a}\"") } else { a };
        let text: String = (i..end)
            .flat_map(ip_commands)
            .map(|args| args.into_iter().map(quote).collect::<Vec<_>>().join(" ") + "\n")
            .collect();
        std::fs::write(&file, text).unwrap();
        let t = Instant::now();
        let st = Command::new("ip").arg("-batch").arg(&file).status().unwrap();
        assert!(st.success());
        keep.extend((i..end).map(attach));
        let per = t.elapsed().as_secs_f64() * 1e6 / (end - i) as f64;
        for _ in i..end {
            println!("nic {per:.1}");
        }
        i = end;
    }
    let _ = std::fs::remove_dir_all(&dir);
    drop(keep);
    remove_ip_taps(n);
}

// ---------------------------------------------------------------------------------------------------
// The unprivileged caller's side.

fn worker(kind: &str, n: usize, helper: &Path) {
    match kind {
        "vmpriv-warm" | "vmpriv-warm-quota" => {
            let mut h = Helper::spawn_at(helper).unwrap();
            // The bare cost of a request: Hello does no kernel work, so this is the IPC round trip.
            let mut rtts: Vec<f64> = (0..200)
                .map(|_| {
                    let t = Instant::now();
                    h.call(&vmpriv_protocol::Request::Hello, &[]).unwrap();
                    t.elapsed().as_secs_f64() * 1e6
                })
                .collect();
            rtts.sort_by(f64::total_cmp);
            println!("stat hello_rtt_us {:.1}", rtts[rtts.len() / 2]);
            let mut keep = Vec::new();
            println!("mark pids {} {}", std::process::id(), h.pid());
            mark("loop_start");
            for i in 0..n {
                let (vm, desc) = plan(i);
                let opts = TapOptions::new()
                    .switch("br0")
                    .description(&desc)
                    .local(vm, 0, true);
                let t = Instant::now();
                let tap = h.create_tap(&opts).unwrap();
                println!("nic {:.1}", t.elapsed().as_secs_f64() * 1e6);
                keep.push(tap);
            }
            mark("loop_end");
            let status = std::fs::read_to_string(format!("/proc/{}/status", h.pid())).unwrap();
            let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap();
            println!("stat helper_vmhwm_kib {}", hwm.trim().trim_end_matches(" kB"));
            // Teardown: the plain session lets the helper delete its taps in kernel batches
            // (DestroyTaps); the quota'd one closes its fds one by one, as a manager does that drops
            // its taps (each close unregisters its tap alone). Both wait for the kernel to finish.
            let t = Instant::now();
            if kind == "vmpriv-warm" {
                mark("teardown_start");
                assert_eq!(h.destroy(keep).unwrap() as usize, n, "every tap removed");
                mark("teardown_end");
                println!("stat teardown_batched_s {:.4}", t.elapsed().as_secs_f64());
            } else {
                for tap in keep {
                    drop(tap);
                }
                println!("stat teardown_close_s {:.4}", t.elapsed().as_secs_f64());
            }
            assert_eq!(taps_left(), 0, "{kind}: taps left after teardown");
        }
        "vmpriv-warm-pipelined" => {
            // The same NICs, asked for eight at a time (a VM's NICs at its start) with
            // `Helper::create_taps`, which pipelines the requests; each NIC is charged an eighth of
            // its batch.
            let mut h = Helper::spawn_at(helper).unwrap();
            let mut keep = Vec::new();
            println!("mark pids {} {}", std::process::id(), h.pid());
            mark("loop_start");
            for first in (0..n).step_by(PIPELINED_BATCH) {
                let batch: Vec<TapOptions> = (first..n.min(first + PIPELINED_BATCH))
                    .map(|i| {
                        let (vm, desc) = plan(i);
                        TapOptions::new()
                            .switch("br0")
                            .description(&desc)
                            .local(vm, 0, true)
                    })
                    .collect();
                let t = Instant::now();
                let taps = h.create_taps(&batch).unwrap();
                let each = t.elapsed().as_secs_f64() * 1e6 / batch.len() as f64;
                for _ in &taps {
                    println!("nic {each:.1}");
                }
                keep.extend(taps);
            }
            mark("loop_end");
            assert_eq!(h.destroy(keep).unwrap() as usize, n, "every tap removed");
            assert_eq!(taps_left(), 0, "{kind}: taps left after teardown");
        }
        "vmpriv-oneshot" | "qemu-bridge-helper" => {
            let mut keep = Vec::new();
            // One helper process per NIC: the profile keeps them by name (15 bytes, the kernel's comm).
            let comm: String = helper
                .file_name()
                .unwrap()
                .to_string_lossy()
                .chars()
                .take(15)
                .collect();
            println!("mark pids {} comm:{comm}", std::process::id());
            mark("loop_start");
            for _ in 0..n {
                let t = Instant::now();
                keep.push(oneshot(helper));
                println!("nic {:.1}", t.elapsed().as_secs_f64() * 1e6);
            }
            mark("loop_end");
        }
        "startup" => {
            // Interleaved, so that all see the same machine: the static hello world, spawned exactly
            // as the client spawns the helper (socketpair, fd kept across exec), answering one byte;
            // the same program linked dynamically and setuid root, as the helper is; a Rust one built
            // and installed as the helper is (vmpriv-bench-hello); then the setuid helper from spawn
            // to its Hello reply.
            for _ in 0..n {
                for name in ["hello", "hello-dynamic", "hello-rust"] {
                    let t = Instant::now();
                    let (ours, theirs) = vmpriv_tests::qemu_socketpair();
                    let fd = theirs.as_raw_fd();
                    let mut cmd = Command::new(helper.with_file_name(name));
                    cmd.arg(format!("--fd={fd}"));
                    vmpriv_client::keep_fd_across_exec(&mut cmd, fd);
                    let mut child = cmd.spawn().unwrap();
                    drop(theirs);
                    let mut byte = [0u8; 1];
                    assert_eq!(nix::unistd::read(&ours, &mut byte).unwrap(), 1, "{name} answered");
                    println!("startup {name} {:.1}", t.elapsed().as_secs_f64() * 1e6);
                    child.wait().unwrap();
                }
                let t = Instant::now();
                let h = Helper::spawn_at(helper).unwrap();
                println!("startup helper {:.1}", t.elapsed().as_secs_f64() * 1e6);
                drop(h);
                // The bridge helper's start-up: every step its contract needs, then its refusal of a
                // bridge no policy grants (no tap made), read as EOF on QEMU's socket.
                let t = Instant::now();
                let (ours, theirs) = vmpriv_tests::qemu_socketpair();
                let fd = theirs.as_raw_fd();
                let mut cmd = Command::new(helper.with_file_name("vmpriv-bridge-helper"));
                cmd.args(["--use-vnet", "--br=nosuch0", &format!("--fd={fd}")])
                    .stderr(Stdio::null());
                vmpriv_client::keep_fd_across_exec(&mut cmd, fd);
                let mut child = cmd.spawn().unwrap();
                drop(theirs);
                let mut byte = [0u8; 1];
                assert_eq!(
                    nix::unistd::read(&ours, &mut byte).unwrap(),
                    0,
                    "the bridge helper refused"
                );
                println!("startup bridge {:.1}", t.elapsed().as_secs_f64() * 1e6);
                assert!(!child.wait().unwrap().success(), "the bridge helper refused");
            }
        }
        other => panic!("unknown worker {other}"),
    }
}

/// A hello world in C, static (the spawn baseline) or dynamic: writes one byte to the fd named by
/// `--fd=N`.
fn hello_world(out: &Path, static_: bool) {
    let src = out.with_extension("c");
    std::fs::write(
        &src,
        "#include <stdlib.h>\n#include <string.h>\n#include <unistd.h>\n\
         int main(int c, char **v) { if (c < 2 || strncmp(v[1], \"--fd=\", 5)) return 2;\n\
         return write(atoi(v[1] + 5), \"h\", 1) == 1 ? 0 : 1; }\n",
    )
    .unwrap();
    let st = Command::new("gcc")
        .args(if static_ {
            &["-static", "-O2", "-o"][..]
        } else {
            &["-O2", "-o"][..]
        })
        .arg(out)
        .arg(&src)
        .status()
        .expect("gcc (to build the static hello world the start-up is compared with)");
    assert!(st.success(), "gcc -static failed: is libc6-dev installed?");
    vmpriv_tests::chmod(out, 0o755);
}

/// Start-up samples, microseconds: the helper, the static hello world, the dynamic setuid one, the
/// Rust one.
struct Startup {
    helper: Vec<f64>,
    bridge: Vec<f64>,
    hello: Vec<f64>,
    hello_dynamic: Vec<f64>,
    hello_rust: Vec<f64>,
}

/// Runs the start-up comparison in a fresh namespace.
fn startup_in_namespace(n: usize) -> Startup {
    let out = Command::new("unshare")
        .args(["--net", "--mount", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--run", "startup", &n.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "the start-up run failed");
    let mut s = Startup {
        helper: Vec::new(),
        bridge: Vec::new(),
        hello: Vec::new(),
        hello_dynamic: Vec::new(),
        hello_rust: Vec::new(),
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["startup", "helper", us] => s.helper.push(us.parse().unwrap()),
            ["startup", "bridge", us] => s.bridge.push(us.parse().unwrap()),
            ["startup", "hello", us] => s.hello.push(us.parse().unwrap()),
            ["startup", "hello-dynamic", us] => s.hello_dynamic.push(us.parse().unwrap()),
            ["startup", "hello-rust", us] => s.hello_rust.push(us.parse().unwrap()),
            _ => {}
        }
    }
    let counts = [
        s.helper.len(),
        s.bridge.len(),
        s.hello.len(),
        s.hello_dynamic.len(),
        s.hello_rust.len(),
    ];
    assert_eq!(counts, [n; 5], "start-up samples");
    s
}

/// The start-up ratios: the target's (against the static hello world), and what a program pays before
/// its first line of work: a dynamically linked setuid C one, and a Rust one built as the helper is.
fn print_startup_ratios(s: &Startup) {
    let spawn = median(&s.hello);
    println!("startup_vs_spawn={:.3}", median(&s.helper) / spawn);
    println!(
        "dynamic_setuid_hello_vs_spawn={:.3}",
        median(&s.hello_dynamic) / spawn
    );
    println!("rust_setuid_hello_vs_spawn={:.3}", median(&s.hello_rust) / spawn);
    // Issue 23's start-up targets: each helper against the Rust setuid hello, same run.
    let rust = median(&s.hello_rust);
    println!("startup_vs_rust_hello={:.3}", median(&s.helper) / rust);
    println!("bridge_startup_vs_rust_hello={:.3}", median(&s.bridge) / rust);
}

/// The start-up line: medians of all samples.
fn print_startup(s: &Startup) {
    println!(
        "helper: start-up {:.0} us (median of {}, spawn to Hello reply, setuid, as uid 65534); \
         a static hello world {:.0} us (spawned the same way, to its first byte); the same dynamically \
         linked and setuid root {:.0} us; in Rust, built and installed as the helper is, {:.0} us; \
         the bridge helper, spawn to its refusal of an ungranted bridge, {:.0} us",
        median(&s.helper),
        s.helper.len(),
        median(&s.hello),
        median(&s.hello_dynamic),
        median(&s.hello_rust),
        median(&s.bridge)
    );
}

/// QEMU's way: socketpair, spawn `HELPER --use-vnet --br=br0 --fd=N`, receive the fd, reap.
fn oneshot(helper: &Path) -> OwnedFd {
    let (ours, theirs) = vmpriv_tests::qemu_socketpair();
    let fd = theirs.as_raw_fd();
    let mut cmd = Command::new(helper);
    cmd.args(["--use-vnet", "--br=br0", &format!("--fd={fd}")]);
    vmpriv_client::keep_fd_across_exec(&mut cmd, fd);
    let mut child = cmd.spawn().unwrap();
    drop(theirs);
    let got = vmpriv_tests::recv_with_fds(&ours, 1).fds.into_iter().next();
    assert!(child.wait().unwrap().success(), "{} failed", helper.display());
    got.expect("the helper sent a tap fd")
}
