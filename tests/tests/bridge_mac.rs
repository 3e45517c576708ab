//! The bridge MAC: a bridge whose MAC the admin did not set takes the lowest MAC of its ports, and a
//! tap's holder sets its tap's MAC through its fd without privilege, so a VM could choose the host's
//! MAC on that bridge. The helper puts taps only on bridges with a fixed MAC; these scenarios show
//! the kernel behaviour that makes the check necessary and sufficient, and the refusal.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use vmpriv_client::{ClientError, Helper, TapOptions, Unsupported};
use vmpriv_tests::{
    NOBODY, as_nobody, become_nobody, become_root, bins, bridge, link, scenario, sh, taps, tun_attach,
    tun_set_mac,
};

const POLICY: &str =
    "allow user * switch br0\nallow user * switch br1\nallow user * switch br2\nquota user * 4\n";

/// What a VM would pick to become the bridge's MAC: lower than any real NIC's.
const LOW: [u8; 6] = [0, 0, 0, 0, 0, 1];

fn mac(name: &str) -> String {
    let l = link(name).unwrap_or_else(|| panic!("{name} exists"));
    l["address"].as_str().expect("a link has an address").to_owned()
}

fn assign_type(name: &str) -> String {
    std::fs::read_to_string(format!("/sys/class/net/{name}/addr_assign_type"))
        .unwrap()
        .trim()
        .to_owned()
}

/// A bridge as ifupdown makes it (no address set), with a port standing for the host's NIC.
fn bridge_with_nic(name: &str, nic_mac: &str) {
    sh(&["ip", "link", "add", name, "type", "bridge"]);
    let nic = format!("{name}-nic");
    sh(&[
        "ip",
        "link",
        "add",
        &nic,
        "address",
        nic_mac,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{name}-lan"),
    ]);
    sh(&["ip", "link", "set", &nic, "master", name]);
    sh(&["ip", "link", "set", name, "up"]);
}

/// The premise, on the kernel under test: on a bridge whose MAC is not fixed, a holder that lowers
/// its tap's MAC gives the bridge (the host) that MAC; on a bridge whose MAC is fixed, it cannot.
/// (The taps are made by root and attached to by uid 65534, as the helper would hand them over.)
#[test]
fn a_holder_moves_only_an_unfixed_bridge_mac() {
    scenario(
        "a_holder_moves_only_an_unfixed_bridge_mac",
        bins!(),
        POLICY,
        |_| {
            bridge_with_nic("br0", "3c:ec:ef:12:34:56");
            bridge_with_nic("br1", "3c:ec:ef:12:34:57");
            sh(&["ip", "link", "set", "br1", "address", "3c:ec:ef:12:34:57"]);
            assert_eq!((assign_type("br0"), assign_type("br1")), ("1".into(), "3".into()));
            vmpriv_tests::tun_device_mode(0o666); // as most distributions ship it
            let nobody = NOBODY.to_string();
            for (br, tap) in [("br0", "t0"), ("br1", "t1")] {
                sh(&["ip", "tuntap", "add", tap, "mode", "tap", "user", &nobody]);
                // A high MAC, as the helper gives its taps (fe:…): the NIC's is the lowest.
                sh(&["ip", "link", "set", tap, "address", "fe:00:00:00:00:01"]);
                sh(&["ip", "link", "set", tap, "master", br]);
            }
            assert_eq!(
                mac("br0"),
                "3c:ec:ef:12:34:56",
                "the bridge takes its lowest port's MAC"
            );
            let held = as_nobody(|| {
                ["t0", "t1"].map(|tap| {
                    let fd = tun_attach(tap, libc::IFF_TAP).unwrap();
                    tun_set_mac(&fd, LOW).expect("a holder sets its tap's MAC without privilege");
                    fd
                })
            });
            assert_eq!(mac("t0"), "00:00:00:00:00:01");
            assert_eq!(
                mac("br0"),
                "00:00:00:00:00:01",
                "an unfixed bridge follows its holder"
            );
            assert_eq!(mac("t1"), "00:00:00:00:00:01");
            assert_eq!(mac("br1"), "3c:ec:ef:12:34:57", "a fixed bridge keeps its MAC");
            drop(held);
        },
    );
}

/// The fix: a tap goes only on a bridge whose MAC the admin set. Unfixed (as ifupdown leaves it, or
/// all zeros once its last port left), the helper refuses with `Unsupported(BridgeMac)` and makes
/// nothing; after the admin's one line the same request succeeds, and the holder lowering its tap's
/// MAC leaves the bridge's alone. A helper that cannot see this namespace's sysfs cannot tell, and
/// refuses too.
#[test]
fn a_tap_is_refused_on_a_bridge_whose_mac_is_not_fixed() {
    scenario(
        "a_tap_is_refused_on_a_bridge_whose_mac_is_not_fixed",
        bins!(),
        POLICY,
        |s| {
            bridge_with_nic("br0", "3c:ec:ef:12:34:56");
            // A bridge whose last port left has the all-zero MAC; 6.18 lets the admin "set" that
            // again (and marks it set), older kernels refuse it. Either way it is not fixed.
            sh(&["ip", "link", "add", "br1", "type", "bridge"]);
            sh(&["ip", "tuntap", "add", "d0", "mode", "tap"]);
            sh(&["ip", "link", "set", "d0", "master", "br1"]);
            sh(&["ip", "link", "del", "d0"]);
            let _ = vmpriv_tests::run(&["ip", "link", "set", "br1", "address", "00:00:00:00:00:00"]);
            assert_eq!(mac("br1"), "00:00:00:00:00:00");
            become_nobody();
            let mut h = Helper::spawn_at(&s.helper).unwrap();
            for br in ["br0", "br1"] {
                let e = h.create_tap(&TapOptions::new().switch(br)).unwrap_err();
                assert!(
                    matches!(e, ClientError::Unsupported(Unsupported::BridgeMac)),
                    "{br}: {e:?}"
                );
                let text = e.to_string();
                assert!(
                    text.contains("no fixed MAC address") && text.contains("admin"),
                    "{text}"
                );
            }
            become_root();
            assert_eq!(taps(), Vec::<String>::new(), "a refused tap is not made");
            // The admin's one-line fix, as the helper's log line gives it.
            let now = std::fs::read_to_string("/sys/class/net/br0/address").unwrap();
            sh(&["ip", "link", "set", "br0", "address", now.trim()]);
            become_nobody();
            let tap = h.create_tap(&TapOptions::new().switch("br0")).unwrap();
            tun_set_mac(&tap.fds()[0], LOW).unwrap();
            become_root();
            assert_eq!(mac(tap.name()), "00:00:00:00:00:01");
            assert_eq!(mac("br0"), "3c:ec:ef:12:34:56");
            drop(tap);
            // A sysfs mounted from another network namespace shows that one's links: there a br0
            // with a fixed MAC, which is not this br0 (another MAC). The helper cannot tell, and
            // refuses. (Unmounted lazily: `h` holds a directory of this namespace's sysfs.)
            let mut other = std::process::Command::new("unshare")
                .args(["--net", "sleep", "30"])
                .spawn()
                .unwrap();
            let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
            let ns = format!("/proc/{}/ns/net", other.id());
            while std::fs::read_link(&ns).unwrap() == ours {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let there = |args: &[&str]| sh(&[&["nsenter", &format!("--net={ns}")], args].concat());
            there(&["ip", "link", "add", "br0", "type", "bridge"]);
            there(&["ip", "link", "set", "br0", "address", "02:00:5e:00:00:09"]);
            sh(&["umount", "--lazy", "/sys"]);
            there(&["mount", "-t", "sysfs", "sysfs", "/sys"]);
            become_nobody();
            let mut blind = Helper::spawn_at(&s.helper).unwrap();
            let e = blind.create_tap(&TapOptions::new().switch("br0")).unwrap_err();
            assert!(
                matches!(e, ClientError::Unsupported(Unsupported::BridgeMac)),
                "{e:?}"
            );
            become_root();
            other.kill().unwrap();
            other.wait().unwrap();
            sh(&["umount", "--lazy", "/sys"]);
            sh(&["mount", "-t", "sysfs", "sysfs", "/sys"]);
            // A bridge the harness makes has a fixed MAC.
            bridge("br2", None);
            become_nobody();
            drop(h.create_tap(&TapOptions::new().switch("br2")).unwrap());
            become_root();
        },
    );
}

/// The setuid bridge helper (QEMU's and libvirt's `helper=`) makes the same check: on a bridge whose
/// MAC is not fixed it sends nothing, makes nothing and says why in one line; once the admin fixes the
/// MAC, it gives the tap.
#[test]
fn the_bridge_helper_refuses_a_bridge_whose_mac_is_not_fixed() {
    use std::os::fd::AsRawFd;
    scenario(
        "the_bridge_helper_refuses_a_bridge_whose_mac_is_not_fixed",
        bins!(),
        POLICY,
        |s| {
            bridge_with_nic("br0", "3c:ec:ef:12:34:56");
            let run = || {
                let (ours, theirs) = vmpriv_tests::qemu_socketpair();
                let fd = theirs.as_raw_fd();
                let mut cmd = vmpriv_tests::nobody_command(&s.bridge);
                cmd.args(["--br=br0", &format!("--fd={fd}")]);
                vmpriv_client::keep_fd_across_exec(&mut cmd, fd);
                let out = cmd.output().unwrap();
                drop(theirs);
                (out, vmpriv_tests::recv_with_fds(&ours, 16))
            };
            let (out, got) = run();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains("no fixed MAC address"), "{err}");
            assert!(got.bytes.is_empty() && got.fds.is_empty(), "nothing sent");
            assert!(taps().is_empty(), "{:?}", taps());
            let before = mac("br0");
            sh(&["ip", "link", "set", "br0", "address", &before]);
            assert_eq!(assign_type("br0"), "3");
            let (out, got) = run();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!((got.bytes.len(), got.fds.len()), (1, 1));
            assert_eq!(taps().len(), 1);
            drop(got);
            assert!(taps().is_empty());
        },
    );
}
