//! Real guests get their network from vmpriv: QEMU as uid 65534 boots Debian's stock kernel under
//! TCG with a busybox initramfs whose only NIC is a vmpriv tap, and the guest pings the host side.
//! The verdict is the guest's own ping output, read from its serial console.
//!
//! Ignored by default (they download a 70 MB kernel package once and boot a guest each, ~10-20 s
//! under TCG): `cargo test -p vmpriv-tests --test guest -- --ignored`. CI runs them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

use vmpriv_tests::guest::{Console, build_initramfs, cmdline, qemu_args, read_console, stock_kernel};
use vmpriv_tests::{Scenario, bins, bridge, nobody_command, scenario, sh, taps};

/// The policy of every guest scenario, in one place.
const POLICY: &str = "allow user nobody switch br0\nallow user nobody local\n";
const QEMU: &str = "qemu-system-x86_64";
/// A guest boots to userland in ~10 s under TCG on an idle 2-core machine; this leaves room for a
/// busy one.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

fn initramfs(s: &Scenario) -> std::path::PathBuf {
    let path = s.dir.join("initramfs.cpio");
    build_initramfs(stock_kernel(), &path);
    path
}

/// Prints the guest's lines in the outer test run too (the harness passes `GUEST` lines on).
fn show(console: &Console) {
    println!(); // libtest's "test NAME ... " has no newline: the harness passes on whole lines
    for l in console.guest_lines().lines() {
        println!("GUEST | {l}");
    }
}

fn assert_no_loss(console: &Console, peer: &str) {
    let p = console.ping(peer);
    assert!(
        p.transmitted == 5 && p.received == 5 && p.exit == 0,
        "the guest's ping of {peer} lost packets: {p:?}\n{}",
        console.text
    );
}

/// `-netdev bridge,helper=`: QEMU runs the setuid helper, the tap joins br0, and the guest pings
/// the bridge's address from the same subnet.
#[test]
#[ignore = "boots a real guest under TCG and downloads Debian's kernel: cargo test -p vmpriv-tests --test guest -- --ignored"]
fn guest_on_a_helper_bridge_pings_the_bridge() {
    stock_kernel(); // outside the scenario's network namespace: apt-get needs the network once
    scenario(
        "guest_on_a_helper_bridge_pings_the_bridge",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            sh(&["ip", "addr", "add", "198.51.100.1/24", "dev", "br0"]);
            let initrd = initramfs(s);
            let mut q = nobody_command(QEMU);
            q.args(qemu_args(stock_kernel(), &initrd, 1))
                .arg("-append")
                .arg(cmdline("vmpriv.inet=198.51.100.2/24,198.51.100.1"))
                .arg("-netdev")
                .arg(format!("bridge,id=n0,br=br0,helper={}", s.bridge.display()))
                .args(["-device", "virtio-net-pci,netdev=n0"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = q.spawn().unwrap();
            let stdout = child.stdout.take().unwrap();
            let console = read_console(child, stdout, BOOT_TIMEOUT);
            show(&console);
            assert_no_loss(&console, "198.51.100.1");
            assert!(taps().is_empty(), "no tap remains: {:?}", taps());
        },
    );
}

/// `vmpriv tap --local --inet6 --json -- QEMU`: the guest takes vmd's VM-side addresses from the
/// JSON report and pings the host side over IPv4 and IPv6. `queues` > 1 makes a multi-queue tap
/// with vnet headers (`fds=3:4`, `mq=on`) and gives the guest as many vCPUs, so that virtio-net
/// uses every queue pair.
fn guest_on_a_vmpriv_tap(s: &Scenario, queues: u8) {
    let initrd = initramfs(s);
    let fds: Vec<String> = (3..3 + u32::from(queues)).map(|f| f.to_string()).collect();
    let (netdev, device) = if queues == 1 {
        (
            "tap,id=n0,fd=3,vhost=off".to_owned(),
            "virtio-net-pci,netdev=n0".to_owned(),
        )
    } else {
        (
            format!("tap,id=n0,fds={},vhost=off", fds.join(":")),
            format!(
                "virtio-net-pci,netdev=n0,mq=on,vectors={}",
                2 * u32::from(queues) + 2
            ),
        )
    };
    let mut args: Vec<String> = ["tap", "--vm", "1", "--nic", "0", "--local", "--inet6", "--json"]
        .map(str::to_owned)
        .to_vec();
    if queues > 1 {
        args.extend(["--queues".to_owned(), queues.to_string(), "--vnet-hdr".to_owned()]);
    }
    // The VMM is started before its addresses are known: a shell between vmpriv and QEMU reads the
    // kernel command line (made here from the JSON report) from stdin, then execs QEMU.
    args.extend(
        [
            "--",
            "sh",
            "-c",
            r#"IFS= read -r cmdline && exec "$@" -append "$cmdline" </dev/null"#,
            "sh",
            QEMU,
        ]
        .map(str::to_owned),
    );
    args.extend(qemu_args(stock_kernel(), &initrd, u32::from(queues)));
    args.extend(["-netdev".to_owned(), netdev, "-device".to_owned(), device]);
    let mut child = nobody_command(&s.cli)
        .args(&args)
        .env("VMPRIV_HELPER", &s.helper)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("no JSON report ({e}): {line:?}"));
    println!("\nGUEST | (host) vmpriv tap --json: {}", line.trim_end());
    assert_eq!(report["fds"].as_array().unwrap().len(), usize::from(queues));
    let mut net = Vec::new();
    let mut peers = Vec::new();
    for a in report["addresses"].as_array().unwrap() {
        let (family, vm, host, len) = (&a["family"], &a["vm"], &a["host"], &a["prefixlen"]);
        let (vm, host) = (vm.as_str().unwrap(), host.as_str().unwrap());
        net.push(format!("vmpriv.{}={vm}/{len},{host}", family.as_str().unwrap()));
        peers.push(host.to_owned());
    }
    assert_eq!(peers.len(), 2, "an IPv4 /31 and an IPv6 /96: {report}");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", cmdline(&net.join(" "))).unwrap();
    }
    let console = read_console(child, stdout, BOOT_TIMEOUT);
    show(&console);
    for peer in &peers {
        assert_no_loss(&console, peer);
    }
    assert!(
        console.text.contains(&format!("{queues} rx queues")),
        "the guest uses {queues} queue pair(s):\n{}",
        console.text
    );
    assert!(taps().is_empty(), "no tap remains: {:?}", taps());
}

#[test]
#[ignore = "boots a real guest under TCG and downloads Debian's kernel: cargo test -p vmpriv-tests --test guest -- --ignored"]
fn guest_on_a_local_tap_pings_the_host_over_both_families() {
    stock_kernel();
    scenario(
        "guest_on_a_local_tap_pings_the_host_over_both_families",
        bins!(),
        POLICY,
        |s| guest_on_a_vmpriv_tap(s, 1),
    );
}

#[test]
#[ignore = "boots a real guest under TCG and downloads Debian's kernel: cargo test -p vmpriv-tests --test guest -- --ignored"]
fn guest_on_a_multi_queue_tap_pings_the_host() {
    stock_kernel();
    scenario(
        "guest_on_a_multi_queue_tap_pings_the_host",
        bins!(),
        POLICY,
        |s| {
            guest_on_a_vmpriv_tap(s, 2);
        },
    );
}

/// Two NICs through one `vmpriv tap` (issue 22): `--net switch=br0 --net local,vm=1,nic=0` gives QEMU
/// fds 3 and 4; the guest's eth0 pings the bridge's address, its eth1 the host side of the local /31.
#[test]
#[ignore = "boots a real guest under TCG and downloads Debian's kernel: cargo test -p vmpriv-tests --test guest -- --ignored"]
fn guest_with_two_nics_through_one_vmpriv_tap() {
    stock_kernel();
    scenario(
        "guest_with_two_nics_through_one_vmpriv_tap",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            sh(&["ip", "addr", "add", "198.51.100.1/24", "dev", "br0"]);
            let initrd = initramfs(s);
            let mut args: Vec<String> = [
                "tap",
                "--json",
                "--net",
                "switch=br0",
                "--net",
                "local,vm=1,nic=0",
                "--",
            ]
            .map(str::to_owned)
            .to_vec();
            // As in guest_on_a_vmpriv_tap: the kernel command line comes on stdin, once the report is read.
            args.extend(
                [
                    "sh",
                    "-c",
                    r#"IFS= read -r cmdline && exec "$@" -append "$cmdline" </dev/null"#,
                    "sh",
                    QEMU,
                ]
                .map(str::to_owned),
            );
            args.extend(qemu_args(stock_kernel(), &initrd, 1));
            for (id, fd) in [("n0", 3), ("n1", 4)] {
                args.extend([
                    "-netdev".to_owned(),
                    format!("tap,id={id},fd={fd},vhost=off"),
                    "-device".to_owned(),
                    format!("virtio-net-pci,netdev={id}"),
                ]);
            }
            let mut child = nobody_command(&s.cli)
                .args(&args)
                .env("VMPRIV_HELPER", &s.helper)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            let report: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("no JSON report ({e}): {line:?}"));
            println!("\nGUEST | (host) vmpriv tap --json: {}", line.trim_end());
            let t = report["taps"].as_array().unwrap();
            assert_eq!(
                (&t[0]["fds"], &t[1]["fds"]),
                (&serde_json::json!([3]), &serde_json::json!([4]))
            );
            let local = &t[1]["addresses"][0];
            let (vm, host) = (local["vm"].as_str().unwrap(), local["host"].as_str().unwrap());
            {
                use std::io::Write;
                let net = format!("vmpriv.inet=198.51.100.2/24,198.51.100.1 vmpriv.eth1={vm}/31,{host}");
                writeln!(child.stdin.take().unwrap(), "{}", cmdline(&net)).unwrap();
            }
            let console = read_console(child, stdout, BOOT_TIMEOUT);
            show(&console);
            assert_no_loss(&console, "198.51.100.1");
            assert_no_loss(&console, host);
            assert!(
                console
                    .text
                    .contains(&format!("vmpriv-guest: I am {vm}/31 on eth1")),
                "the local /31 is eth1's:\n{}",
                console.text
            );
            assert!(taps().is_empty(), "no tap remains: {:?}", taps());
        },
    );
}
