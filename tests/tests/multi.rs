//! Several taps for one command, nesting, and taps for VMMs that open them by name (issue 22), as uid
//! 65534 against the real kernel: each check reads the kernel's state (`ip -j`, `/proc/PID/fdinfo`'s
//! `iff:` line, which names the tap an fd is attached to) while the command runs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use vmpriv_tests::{Scenario, addrs, bins, bridge, link, scenario, taps};

const POLICY: &str = "\
allow user nobody switch br0
allow user nobody switch br1
allow user nobody local
";
const PROBE: &str = env!("CARGO_BIN_EXE_vmpriv-vmm-probe");
const QEMU: &str = "qemu-system-x86_64";

fn vmpriv(s: &Scenario, args: &[&str]) -> Output {
    vmpriv_tests::nobody_command(&s.cli)
        .args(args)
        .env("VMPRIV_HELPER", &s.helper)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The tap an fd of process `pid` is attached to, from `/proc/PID/fdinfo/FD` (the tun driver's
/// `iff:` line), read as root; panics if the fd is not open or not attached to a tap.
fn fd_tap(pid: u32, fd: u64) -> String {
    let info = vmpriv_tests::as_root(|| std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")))
        .unwrap_or_else(|e| panic!("fd {fd} of {pid} is not open: {e}"));
    info.lines()
        .find_map(|l| l.strip_prefix("iff:"))
        .unwrap_or_else(|| panic!("fd {fd} of {pid} is not a tun fd: {info}"))
        .trim()
        .to_owned()
}

/// The numbers of a report's `fds`.
fn fds(v: &Value) -> Vec<u64> {
    v["fds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect()
}

/// Lines of `child`'s stdout as they come, until `done` says so (or 30 s pass: then panics).
fn read_until(child: &mut Child, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    while !done(&lines) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("no end after {lines:?}; stderr: {err}");
        };
        lines.push(line);
    }
    lines
}

fn no_carrier(tap: &str) -> bool {
    link(tap).unwrap()["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "NO-CARRIER")
}

fn info_data(tap: &str) -> Value {
    link(tap).unwrap_or_else(|| panic!("no link {tap}"))["linkinfo"]["info_data"].clone()
}

/// Three taps for one command, each as its `--net` says, on fds 3 upward in the order given.
#[test]
fn one_command_gets_several_taps_in_the_order_given() {
    scenario(
        "one_command_gets_several_taps_in_the_order_given",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", Some(1400));
            bridge("br1", None);
            let script = "echo TAPS=$VMPRIV_TAPS FIRST=$VMPRIV_TAP_FDS T0=$VMPRIV_TAP0_FDS T1=$VMPRIV_TAP1_FDS \
                      T2=$VMPRIV_TAP2_FDS N1=$VMPRIV_TAP1_NAME; \
                      for f in 3 4 5 6; do echo FD$f=$(sed -n 's/^iff:[[:space:]]*//p' /proc/self/fdinfo/$f); done; \
                      ip -j -d addr show";
            let o = vmpriv(
                s,
                &[
                    "tap",
                    "--json",
                    "--net",
                    "switch=br0,queues=2,vnet-hdr",
                    "--net",
                    "switch=br1,description=vm1,,nic1",
                    "--net",
                    "local,vm=1,nic=0",
                    "--",
                    "sh",
                    "-c",
                    script,
                ],
            );
            let out = text(&o);
            assert!(o.status.success(), "{out}");
            let report = &json_lines(&out)[0];
            assert_eq!(report["version"], 1);
            let t = report["taps"].as_array().unwrap();
            assert_eq!(t.len(), 3, "{report}");
            assert_eq!(fds(&t[0]), [3, 4]);
            assert_eq!(fds(&t[1]), [5]);
            assert_eq!(fds(&t[2]), [6]);
            // Version 1's keys at the top describe the first tap.
            for key in [
                "ifname", "ifindex", "mac", "mtu", "switch", "fds", "queues", "vnet_hdr",
            ] {
                assert_eq!(report[key], t[0][key], "{key}");
            }
            assert_eq!(
                (t[0]["switch"].as_str(), t[0]["vnet_hdr"].as_bool()),
                (Some("br0"), Some(true))
            );
            assert_eq!(
                (t[1]["switch"].as_str(), t[1]["vnet_hdr"].as_bool()),
                (Some("br1"), Some(false))
            );
            assert_eq!(t[2]["addresses"][0]["host"], "100.64.1.2");
            let name = |i: usize| t[i]["ifname"].as_str().unwrap().to_owned();
            assert!(
                out.contains(&format!("TAPS=3 FIRST=3,4 T0=3,4 T1=5 T2=6 N1={}", name(1))),
                "{out}"
            );
            // Each fd as the command holds it, and the kernel's state while it ran.
            for (fd, tap) in [(3, 0), (4, 0), (5, 1), (6, 2)] {
                assert!(out.contains(&format!("FD{fd}={}\n", name(tap))), "fd {fd}: {out}");
            }
            let links: Value =
                serde_json::from_str(out.lines().find(|l| l.starts_with('[')).unwrap()).unwrap();
            let l = |i: usize| {
                links
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|l| l["ifname"] == name(i).as_str())
                    .unwrap()
                    .clone()
            };
            assert_eq!(
                (l(0)["master"].as_str(), l(0)["mtu"].as_u64()),
                (Some("br0"), Some(1400))
            );
            assert_eq!(l(0)["linkinfo"]["info_data"]["numqueues"], 2);
            assert_eq!(l(1)["master"], "br1");
            assert_eq!(l(1)["ifalias"], "vm1,nic1");
            assert!(l(2)["master"].is_null());
            assert_eq!(l(2)["addr_info"][0]["local"], "100.64.1.2");
            assert!(taps().is_empty(), "all three go with the command");
            assert!(addrs("br0").is_empty());
            // Taps that would not fit under the fd limit are refused before any exists (exit 10,
            // before the helper is started).
            let o = vmpriv_tests::nobody_command("sh")
                .args([
                    "-c",
                    "ulimit -n 6 && exec \"$0\" tap --net switch=br0,queues=2 -- true",
                ])
                .arg(&s.cli)
                .env("VMPRIV_HELPER", &s.helper)
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(10), "{}", text(&o));
            assert!(
                text(&o).contains("past the fd limit (6, RLIMIT_NOFILE)"),
                "{}",
                text(&o)
            );
        },
    );
}

/// `vmpriv tap -- vmpriv tap -- CMD`: the inner taps go above the outer ones, and both are alive (on
/// their bridges, held at the numbers the reports give) while the inner command runs.
#[test]
fn a_nested_vmpriv_tap_keeps_the_outer_taps() {
    scenario("a_nested_vmpriv_tap_keeps_the_outer_taps", bins!(), POLICY, |s| {
        bridge("br0", None);
        bridge("br1", None);
        let cli = s.cli.to_str().unwrap();
        let mut child = vmpriv_tests::nobody_command(&s.cli)
            .args([
                "tap",
                "--json",
                "--net",
                "switch=br0,queues=2",
                "--",
                cli,
                "tap",
                "--json",
            ])
            .args([
                "--switch",
                "br1",
                "--",
                "sh",
                "-c",
                "echo READY $VMPRIV_TAPS $VMPRIV_TAP_FDS; exec sleep 60",
            ])
            .env("VMPRIV_HELPER", &s.helper)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = read_until(&mut child, |l| l.iter().any(|l| l.starts_with("READY")));
        let reports = json_lines(&lines.join("\n"));
        let (outer, inner) = (&reports[0], &reports[1]);
        assert_eq!(fds(outer), [3, 4]);
        assert_eq!(fds(inner), [5], "above the outer taps' fds");
        assert!(lines.contains(&"READY 1 5".to_owned()), "{lines:?}");
        let (o, i) = (
            outer["ifname"].as_str().unwrap(),
            inner["ifname"].as_str().unwrap(),
        );
        let mut both = taps();
        both.sort();
        assert_eq!(both, [o, i], "both taps exist while the inner command runs");
        assert_eq!(link(o).unwrap()["master"], "br0");
        assert_eq!(info_data(o)["numqueues"], 2, "both queues still held");
        assert_eq!(link(i).unwrap()["master"], "br1");
        let pid = child.id();
        assert_eq!(
            [fd_tap(pid, 3), fd_tap(pid, 4), fd_tap(pid, 5)],
            [o, o, i],
            "the command holds all three fds"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(taps().is_empty());
    });
}

/// Nested taps count against the quota together: with quota 2 the third is refused (before, each
/// inner tap replaced the outer one's fd 3, so three "succeeded" with at most two alive).
#[test]
fn nested_taps_count_against_the_quota_together() {
    scenario(
        "nested_taps_count_against_the_quota_together",
        bins!(),
        "allow user nobody switch br0\nquota user nobody 2\n",
        |s| {
            bridge("br0", None);
            let cli = s.cli.to_str().unwrap();
            // `vmpriv tap --switch br0 -- vmpriv tap … -- sh -c 'ip -j link show master br0'`, `depth`
            // deep (the first `vmpriv` is the one `vmpriv()` runs).
            let nest = |depth: usize| {
                let mut args: Vec<&str> = Vec::new();
                for i in 0..depth {
                    if i > 0 {
                        args.push(cli);
                    }
                    args.extend(["tap", "--switch", "br0", "--"]);
                }
                args.extend(["sh", "-c", "ip -j link show master br0"]);
                args
            };
            let o = vmpriv(s, &nest(3));
            assert_eq!(o.status.code(), Some(5), "{}", text(&o));
            assert!(text(&o).contains("quota reached: all 2"), "{}", text(&o));
            // Two nested: both on br0 while the inner command runs.
            let o = vmpriv(s, &nest(2));
            assert!(o.status.success(), "{}", text(&o));
            let ports: Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(ports.as_array().unwrap().len(), 2, "{ports}");
            assert!(taps().is_empty());
        },
    );
}

/// Firecracker's tap by name: `vmpriv persist` makes it (quota counts it), Firecracker's open sequence
/// works on it as uid 65534, `vmpriv remove` deletes it; what is not the caller's is refused.
#[test]
fn persist_serves_firecracker_and_remove_deletes() {
    scenario(
        "persist_serves_firecracker_and_remove_deletes",
        bins!(),
        "allow user nobody switch br0\nquota user nobody 1\n",
        |s| {
            // Firecracker opens /dev/net/tun itself: as most distributions ship it.
            vmpriv_tests::tun_device_mode(0o666);
            bridge("br0", None);
            let o = vmpriv(s, &["persist", "--switch", "br0", "--json"]);
            assert!(o.status.success(), "{}", text(&o));
            let report = &json_lines(&text(&o))[0];
            let name = report["ifname"].as_str().unwrap().to_owned();
            assert_eq!(
                (report["persistent"].as_bool(), fds(report).len()),
                (Some(true), 0)
            );
            assert_eq!(report["taps"][0]["ifname"], name.as_str());
            // What the kernel shows once `persist` has exited: persistent, ours, up, on br0, no carrier.
            let l = link(&name).expect("the tap outlives the command");
            assert_eq!(l["linkinfo"]["info_data"]["persist"], true);
            assert_eq!(l["linkinfo"]["info_data"]["user"], "nobody");
            assert_eq!(l["master"], "br0");
            assert!(l["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
            // (The carrier's state reaches netlink through linkwatch, which may take a second.)
            let deadline = Instant::now() + Duration::from_secs(5);
            while !no_carrier(&name) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(no_carrier(&name), "no process holds it: {}", link(&name).unwrap());
            // The quota counts it.
            let o = vmpriv(s, &["whoami", "--json"]);
            assert_eq!(json_lines(&text(&o))[0]["in_use"], 1, "{}", text(&o));
            let o = vmpriv(s, &["persist", "--switch", "br0"]);
            assert_eq!(o.status.code(), Some(5), "{}", text(&o));
            let o = vmpriv(s, &["tap", "--switch", "br0", "--", "true"]);
            assert_eq!(o.status.code(), Some(5), "{}", text(&o));
            // Firecracker's open sequence as uid 65534, holding the tap as a running VMM does.
            let mut fc = vmpriv_tests::nobody_command(PROBE)
                .args(["firecracker", &name])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let lines = read_until(&mut fc, |l| !l.is_empty());
            assert_eq!(
                lines[0],
                format!("PROBE firecracker {name} fds=3 vnet_hdr_size=12")
            );
            let l = vmpriv_tests::as_root(|| {
                let out = vmpriv_tests::sh(&["ip", "-j", "-s", "-d", "link", "show", "dev", &name]);
                serde_json::from_str::<Value>(&out).unwrap()[0].clone()
            });
            assert!(
                !l["flags"].as_array().unwrap().iter().any(|f| f == "NO-CARRIER"),
                "{l}"
            );
            assert_eq!(l["linkinfo"]["info_data"]["vnet_hdr"], true);
            assert_eq!(l["stats64"]["rx"]["packets"], 1, "the frame it wrote: {l}");
            assert_eq!(l["master"], "br0");
            // Held by the VMM: remove refuses, and the tap stays.
            let o = vmpriv(s, &["remove", &name]);
            assert_eq!(o.status.code(), Some(7), "{}", text(&o));
            assert!(text(&o).contains("a process holds this tap"), "{}", text(&o));
            drop(fc.stdin.take());
            assert!(fc.wait().unwrap().success());
            assert_eq!(info_data(&name)["persist"], true, "the VMM's exit leaves the tap");
            // Refused, and nothing removed: a non-vmpriv tap of ours, a tap with our mark that another
            // user owns (the kernel's TUNSETIFF says EPERM), another user's vmpriv tap, no such tap,
            // and a list with any of those in it.
            vmpriv_tests::sh(&["ip", "tuntap", "add", "mytap0", "mode", "tap", "user", "nobody"]);
            vmpriv_tests::sh(&["ip", "tuntap", "add", "vpfffe-7", "mode", "tap", "user", "1000"]);
            vmpriv_tests::sh(&["ip", "tuntap", "add", "vp3e8-0", "mode", "tap", "user", "1000"]);
            for (args, code, why) in [
                (
                    vec!["mytap0"],
                    4,
                    "not a vmpriv tap of yours (vmpriv names your taps vpfffe-N)",
                ),
                (vec!["vpfffe-7"], 4, "belongs to another user"),
                (vec!["vp3e8-0"], 4, "not a vmpriv tap of yours"),
                (vec!["vpfffe-9"], 4, "no such tap"),
                (vec![name.as_str(), "mytap0"], 4, "mytap0: not a vmpriv tap"),
            ] {
                let o = vmpriv(s, &[&["remove"][..], &args].concat());
                assert_eq!(o.status.code(), Some(code), "{args:?}: {}", text(&o));
                assert!(text(&o).contains(why), "{args:?}: {}", text(&o));
            }
            let mut all = taps();
            all.sort();
            let mut want = [name.as_str(), "mytap0", "vp3e8-0", "vpfffe-7"];
            want.sort_unstable();
            assert_eq!(all, want, "nothing was removed");
            vmpriv_tests::sh(&["ip", "link", "del", "vpfffe-7"]);
            // Removed by name: gone from the kernel, and the quota is free again.
            let o = vmpriv(s, &["remove", &name]);
            assert!(o.status.success(), "{}", text(&o));
            assert!(text(&o).contains("removed 1 tap(s)"), "{}", text(&o));
            assert!(link(&name).is_none(), "remove deleted it");
            let o = vmpriv(s, &["persist", "--net", "switch=br0"]);
            assert!(o.status.success(), "{}", text(&o));
            let again = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            assert!(link(&again).is_some());
            // Where /dev/net/tun is 0600, remove cannot open it by name and says what works instead.
            vmpriv_tests::tun_device_mode(0o600);
            let o = vmpriv(s, &["remove", &again]);
            assert_eq!(o.status.code(), Some(8), "{}", text(&o));
            assert!(text(&o).contains("`vmpriv cleanup`"), "{}", text(&o));
            assert!(link(&again).is_some());
            let o = vmpriv(s, &["cleanup"]);
            assert!(text(&o).contains("removed 1 leftover"), "{}", text(&o));
            let mut left = taps();
            left.sort();
            assert_eq!(left, ["mytap0", "vp3e8-0"], "only ours went");
        },
    );
}

/// crosvm's `--net tap-fd=N` (one single-queue vnet_hdr tap per NIC) and cloud-hypervisor's `--net
/// fd=[N,M],num_queues=4` (one multi-queue vnet_hdr tap, one fd per queue pair): neither VMM installs
/// here (no Debian package; crates.io's cloud-hypervisor is an empty 0.0.0, crosvm is not there), so
/// vmpriv-vmm-probe replays what each does with the fds it is given, and fails where the VMM would.
#[test]
fn crosvm_and_cloud_hypervisor_fd_layouts() {
    scenario("crosvm_and_cloud_hypervisor_fd_layouts", bins!(), POLICY, |s| {
        bridge("br0", None);
        bridge("br1", None);
        let o = vmpriv(
            s,
            &[
                "tap",
                "--json",
                "--net",
                "switch=br0,vnet-hdr",
                "--net",
                "switch=br1,vnet-hdr",
                "--",
                PROBE,
                "crosvm",
                "3",
                "4",
            ],
        );
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        let t = json_lines(&out)[0]["taps"].clone();
        for (i, fd) in [(0, 3), (1, 4)] {
            let line = format!(
                "PROBE crosvm {} fds={fd} vnet_hdr_size=12",
                t[i]["ifname"].as_str().unwrap()
            );
            assert!(out.contains(&line), "{line}: {out}");
        }
        let o = vmpriv(
            s,
            &[
                "tap",
                "--json",
                "--net",
                "switch=br0,queues=2,vnet-hdr",
                "--",
                PROBE,
                "cloud-hypervisor",
                "3,4",
            ],
        );
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        let name = json_lines(&out)[0]["ifname"].as_str().unwrap().to_owned();
        assert!(
            out.contains(&format!(
                "PROBE cloud-hypervisor {name} fds=3,4 vnet_hdr_size=12 num_queues=4"
            )),
            "{out}"
        );
        // The probe is no rubber stamp: without vnet-hdr, or two taps for one NIC, it refuses.
        let o = vmpriv(s, &["tap", "--switch", "br0", "--", PROBE, "crosvm", "3"]);
        assert!(text(&o).contains("missing [\"IFF_VNET_HDR\"]"), "{}", text(&o));
        let o = vmpriv(
            s,
            &[
                "tap",
                "--net",
                "switch=br0,vnet-hdr",
                "--net",
                "switch=br1,vnet-hdr",
                "--",
                PROBE,
                "cloud-hypervisor",
                "3,4",
            ],
        );
        assert!(text(&o).contains("missing [\"IFF_MULTI_QUEUE\"]"), "{}", text(&o));
        assert!(taps().is_empty());
    });
}

/// QEMU with two NICs through one `vmpriv tap`: `-netdev tap,fd=3` (the crosvm layout: one vnet_hdr
/// fd) and `-netdev tap,fds=4:5` (the cloud-hypervisor layout: a multi-queue tap), each on its own
/// bridge while QEMU runs, and QEMU's own view of both NICs.
#[test]
fn qemu_gets_two_nics_through_one_vmpriv_tap() {
    scenario(
        "qemu_gets_two_nics_through_one_vmpriv_tap",
        bins!(),
        POLICY,
        |s| {
            vmpriv_tests::require_tool(
                "qemu_gets_two_nics_through_one_vmpriv_tap",
                QEMU,
                "apt-get install qemu-system-x86",
            );
            bridge("br0", None);
            bridge("br1", None);
            let run = s.dir.join("run");
            std::fs::create_dir(&run).unwrap();
            vmpriv_tests::chmod(&run, 0o777);
            let qmp_path = run.join("qmp.sock");
            let mut q = vmpriv_tests::nobody_command(&s.cli)
                .args([
                    "tap",
                    "--json",
                    "--net",
                    "switch=br0,vnet-hdr",
                    "--net",
                    "switch=br1,queues=2,vnet-hdr",
                ])
                .args([
                    "--",
                    QEMU,
                    "-M",
                    "pc",
                    "-nodefaults",
                    "-display",
                    "none",
                    "-S",
                    "-qmp",
                ])
                .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
                .args([
                    "-netdev",
                    "tap,id=n0,fd=3",
                    "-device",
                    "virtio-net-pci,netdev=n0,romfile=",
                ])
                .args([
                    "-netdev",
                    "tap,id=n1,fds=4:5",
                    "-device",
                    "virtio-net-pci,netdev=n1,mq=on,romfile=",
                ])
                .env("VMPRIV_HELPER", &s.helper)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let lines = read_until(&mut q, |l| !l.is_empty());
            let report = &json_lines(&lines.join("\n"))[0];
            let t = report["taps"].as_array().unwrap();
            let (n0, n1) = (t[0]["ifname"].as_str().unwrap(), t[1]["ifname"].as_str().unwrap());
            assert_eq!((fds(&t[0]), fds(&t[1])), (vec![3], vec![4, 5]));
            let deadline = Instant::now() + Duration::from_secs(30);
            while !qmp_path.exists() && Instant::now() < deadline {
                assert!(
                    q.try_wait().unwrap().is_none(),
                    "QEMU exited: {:?}",
                    q.wait_with_output()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let sock = std::os::unix::net::UnixStream::connect(&qmp_path).unwrap();
            let mut reader = BufReader::new(sock.try_clone().unwrap());
            let mut qmp = |cmd: Value| -> Value {
                writeln!(&sock, "{cmd}").unwrap();
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let v: Value = serde_json::from_str(&line).unwrap();
                    if v.get("return").is_some() || v.get("error").is_some() {
                        return v;
                    }
                }
            };
            qmp(serde_json::json!({"execute": "qmp_capabilities"}));
            let net = qmp(serde_json::json!({"execute": "human-monitor-command",
            "arguments": {"command-line": "info network"}}));
            let net = net["return"].as_str().unwrap().to_owned();
            // QEMU's view: two virtio NICs, each on its tap netdev.
            assert!(net.contains("\\ n0: index=0,type=tap,fd=3"), "{net}");
            assert!(net.contains("\\ n1: index=0,type=tap,fd=4"), "{net}");
            assert!(net.contains("\\ n1: index=1,type=tap,fd=5"), "{net}");
            // The kernel's: both taps on their bridges, every queue held by QEMU's fds.
            assert_eq!(link(n0).unwrap()["master"], "br0");
            assert_eq!(link(n1).unwrap()["master"], "br1");
            // QEMU detaches the second queue (TUNSETQUEUE) until the guest turns multiqueue on.
            let d = info_data(n1);
            assert_eq!(
                (d["numqueues"].as_u64(), d["numdisabled"].as_u64()),
                (Some(1), Some(1)),
                "{d}"
            );
            assert_eq!(info_data(n0)["vnet_hdr"], true);
            let pid = q.id();
            assert_eq!([fd_tap(pid, 3), fd_tap(pid, 4)], [n0, n1]);
            eprintln!(
                "MEASURED qemu two NICs: {}",
                net.lines().filter(|l| l.contains("type=tap")).count()
            );
            qmp(serde_json::json!({"execute": "quit"}));
            let _ = q.wait();
            assert!(taps().is_empty(), "both taps go with QEMU");
        },
    );
}
