//! The helper against the real kernel: every operation and every refusal, read back with `ip -j`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::many_single_char_names
)]

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use vmpriv_client::{ClientError, Helper, IfConfig, Invalid, LocalRequest, TapOptions, Unsupported};
use vmpriv_protocol::name::NameError;
use vmpriv_tests::{
    Scenario, add_link, addrs, all_addrs, as_nobody, become_nobody, become_root, bins, bridge, link, links,
    master, proc_status, scenario, sh, table_routes, taps,
};

const POLICY: &str = "\
ifgroup vms 42
ifgroup dmz 7
rdomain 1 vrf-blue
allow user nobody switch br0
allow user nobody switch secretbridge123
allow user nobody switch lo
allow user nobody switch veth0
allow user nobody switch nosuchbr
deny user nobody switch br1
allow user nobody ifgroup vms
allow user nobody rdomain 1
allow user nobody local
quota user nobody 3
";

fn helper(s: &Scenario) -> Helper {
    Helper::spawn_at(&s.helper).expect("helper starts")
}

#[test]
fn create_tap_on_a_granted_switch() {
    scenario("create_tap_on_a_granted_switch", bins!(), POLICY, |s| {
        bridge("br0", Some(1400));
        become_nobody();
        let mut h = helper(s);
        let opts = TapOptions::new()
            .switch("br0")
            .description("vm1-if0 web")
            .local(1, 0, true)
            .group("vms");
        let tap = h.create_tap(&opts).unwrap();
        let l = link(tap.name()).expect("the tap exists");
        assert_eq!(l["ifindex"], tap.ifindex());
        assert_eq!(l["linkinfo"]["info_kind"], "tun");
        assert_eq!(l["linkinfo"]["info_data"]["type"], "tap");
        assert_eq!(l["linkinfo"]["info_data"]["user"], "nobody");
        assert_eq!(l["linkinfo"]["info_data"]["persist"], false);
        assert_eq!(l["master"], "br0");
        assert_eq!(l["mtu"], 1400, "MTU copied from the switch");
        assert_eq!(tap.mtu(), 1400);
        assert_eq!(l["ifalias"], "vm1-if0 web");
        assert_eq!(l["group"], "42");
        assert!(l["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
        assert_eq!(l["address"], tap.mac_string());
        assert!(tap.mac_string().starts_with("fe:"));
        let mut a = addrs(tap.name());
        a.sort();
        assert_eq!(a, ["100.64.1.2/31", "fd00::6440:103:0:1/96"]);
        assert_eq!(tap.inet().unwrap().vm().to_string(), "100.64.1.3");
        let name = tap.name().to_owned();
        drop(h); // the helper's own copy of the fd is closed by then
        drop(tap);
        assert!(link(&name).is_none(), "non-persistent: gone with its last fd");
        assert!(taps().is_empty());
    });
}

#[test]
fn multi_queue_tap_with_vnet_hdr() {
    scenario("multi_queue_tap_with_vnet_hdr", bins!(), POLICY, |s| {
        bridge("br0", None);
        become_nobody();
        let mut h = helper(s);
        let tap = h
            .create_tap(&TapOptions::new().switch("br0").queues(4).vnet_hdr(true))
            .unwrap();
        assert_eq!(tap.fds().len(), 4);
        let l = link(tap.name()).unwrap();
        assert_eq!(l["linkinfo"]["info_data"]["multi_queue"], true);
        assert_eq!(l["linkinfo"]["info_data"]["vnet_hdr"], true);
        assert_eq!(l["linkinfo"]["info_data"]["numqueues"], 4);
        let name = tap.name().to_owned();
        h.status().unwrap(); // the helper has closed its own copies by its next reply
        let mut fds = tap.into_fds();
        fds.truncate(1);
        assert!(link(&name).is_some(), "one queue keeps it alive");
        drop(fds);
        assert!(link(&name).is_none());
        for q in [0, 9] {
            let e = h.create_tap(&TapOptions::new().queues(q)).unwrap_err();
            assert!(matches!(e, ClientError::Invalid(Invalid::Queues)), "{e:?}");
        }
        assert!(taps().is_empty());
    });
}

/// "Not allowed" and "does not exist" and "not a bridge" are one answer, and nothing is created.
#[test]
fn switch_not_granted_absent_or_not_a_bridge_is_one_denied() {
    scenario(
        "switch_not_granted_absent_or_not_a_bridge_is_one_denied",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            bridge("br1", None);
            bridge("br2", None);
            sh(&[
                "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
            ]);
            become_nobody();
            let mut h = helper(s);
            for sw in ["br1", "br2", "nosuchbr", "lo", "veth0"] {
                let e = h.create_tap(&TapOptions::new().switch(sw)).unwrap_err();
                assert!(matches!(e, ClientError::Denied), "{sw}: {e:?}");
                let e = h.switch_exists(sw).unwrap_err();
                assert!(matches!(e, ClientError::Denied), "{sw}: {e:?}");
            }
            assert!(taps().is_empty(), "nothing created");
            assert_eq!(master("veth0"), None);
            let sw = h.switch_exists("br0").unwrap();
            assert_eq!((sw.name.as_str(), sw.mtu), ("br0", 1500));
            assert_eq!(link("br0").unwrap()["ifindex"], sw.ifindex);
        },
    );
}

/// CVE-2019-13164: a 16+ byte name whose first 15 bytes match a granted switch is refused whole.
#[test]
fn long_switch_name_is_rejected_not_truncated() {
    scenario(
        "long_switch_name_is_rejected_not_truncated",
        bins!(),
        POLICY,
        |s| {
            bridge("secretbridge123", None);
            become_nobody();
            let mut h = helper(s);
            for name in ["secretbridge123X", "secretbridge123secretbridge123"] {
                let e = h.create_tap(&TapOptions::new().switch(name)).unwrap_err();
                assert!(
                    matches!(e, ClientError::Invalid(Invalid::SwitchName(NameError::TooLong))),
                    "{e:?}"
                );
            }
            assert!(taps().is_empty());
            assert!(h.create_tap(&TapOptions::new().switch("secretbridge123")).is_ok());
        },
    );
}

/// Each vmd operation on a passed tap, one request at a time, read back from the kernel.
#[test]
fn every_single_operation_on_a_passed_tap() {
    scenario("every_single_operation_on_a_passed_tap", bins!(), POLICY, |s| {
        bridge("br0", Some(1450));
        become_nobody();
        let mut h = helper(s);
        let tap = h.create_tap(&TapOptions::new().up(false)).unwrap();
        let name = tap.name().to_owned();
        let l = link(&name).unwrap();
        assert!(l.get("master").is_none());
        assert!(!l["flags"].as_array().unwrap().iter().any(|f| f == "UP"));

        h.set_description(&tap, "vm7-if1-db").unwrap();
        assert_eq!(link(&name).unwrap()["ifalias"], "vm7-if1-db");
        let info = h.attach(&tap, "br0").unwrap();
        assert_eq!(master(&name).as_deref(), Some("br0"));
        assert_eq!(
            (info.mtu, link(&name).unwrap()["mtu"].as_u64()),
            (1450, Some(1450))
        );
        h.set_group(&tap, "vms").unwrap();
        assert_eq!(link(&name).unwrap()["group"], "42");
        h.set_up(&tap, true).unwrap();
        assert!(
            link(&name).unwrap()["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "UP")
        );
        let info = h.add_local_inet(&tap, 7, 1).unwrap();
        assert_eq!(info.inet.unwrap().host().to_string(), "100.64.7.4");
        let info = h.add_local_inet6(&tap, 7, 1).unwrap();
        assert_eq!(info.inet6.unwrap().host().to_string(), "fd00::6440:705:0:1");
        let mut a = addrs(&name);
        a.sort();
        assert_eq!(a, ["100.64.7.4/31", "fd00::6440:705:0:1/96"]);
        // IFADDR6 again: vmd deletes then adds, so this is not an error.
        h.add_local_inet6(&tap, 7, 1).unwrap();
        let la = h.link_addr(&tap).unwrap();
        assert_eq!((la.ifname.as_str(), la.mac), (name.as_str(), tap.mac()));
        assert_eq!(link(&name).unwrap()["address"], tap.mac_string());
        h.set_up(&tap, false).unwrap();
        assert!(
            !link(&name).unwrap()["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "UP")
        );
        // rdomain 0 is the default table: no change, and the tap stays on its switch.
        h.set_rdomain(&tap, 0).unwrap();
        assert_eq!(master(&name).as_deref(), Some("br0"));

        h.reset(&tap).unwrap();
        let l = link(&name).unwrap();
        assert!(l.get("master").is_none());
        assert!(l.get("ifalias").is_none_or(|a| a == ""));
        assert_eq!(l["group"], "default");
        assert!(addrs(&name).is_empty());
    });
}

#[test]
fn groups_and_rdomains_come_from_the_policy() {
    scenario("groups_and_rdomains_come_from_the_policy", bins!(), POLICY, |s| {
        become_nobody();
        let mut h = helper(s);
        let tap = h.create_tap(&TapOptions::new()).unwrap();
        for g in ["dmz", "nosuch"] {
            assert!(matches!(h.set_group(&tap, g), Err(ClientError::Denied)), "{g}");
        }
        assert!(matches!(h.set_rdomain(&tap, 2), Err(ClientError::Denied)));
        assert!(matches!(
            h.set_rdomain(&tap, 300),
            Err(ClientError::Invalid(Invalid::Rdomain))
        ));
        // rdomain 1 is granted and maps to vrf-blue, which does not exist here (with or without
        // VRF support in the kernel): a clear Unsupported, never a silent default table.
        assert!(matches!(
            h.set_rdomain(&tap, 1),
            Err(ClientError::Unsupported(Unsupported::Vrf))
        ));
        let l = link(tap.name()).unwrap();
        assert_eq!(l["group"], "default");
        assert!(l.get("master").is_none());
    });
}

/// A local tap with a granted rdomain is enslaved to the VRF the policy maps it to, and its /31 is
/// routed in that VRF's table, not the main one.
#[test]
#[ignore = "needs VRF: run by the stock-kernel matrix (cargo run -p vmpriv-tests --bin vmpriv-stock-kernel)"]
fn rdomain_enslaves_to_the_mapped_vrf() {
    scenario("rdomain_enslaves_to_the_mapped_vrf", bins!(), POLICY, |s| {
        add_link("vrf-blue", "vrf", &["table", "10"]);
        sh(&["ip", "link", "set", "vrf-blue", "up"]);
        become_nobody();
        let mut h = helper(s);
        let tap = h
            .create_tap(&TapOptions::new().rdomain(1).local(1, 0, false).up(true))
            .unwrap();
        become_root();
        assert_eq!(master(tap.name()).as_deref(), Some("vrf-blue"));
        assert_eq!(addrs(tap.name()), ["100.64.1.2/31"]);
        let in_vrf = table_routes("10");
        assert!(
            in_vrf
                .iter()
                .any(|r| r["dst"] == "100.64.1.2/31" && r["dev"] == tap.name()),
            "the /31 is routed in the VRF's table: {in_vrf:?}"
        );
        let main = table_routes("main");
        assert!(
            !main.iter().any(|r| r["dev"] == tap.name()),
            "nothing in the main table: {main:?}"
        );
        // An existing local tap moves into the VRF too.
        become_nobody();
        let other = h.create_tap(&TapOptions::new()).unwrap();
        h.set_rdomain(&other, 1).unwrap();
        assert_eq!(master(other.name()).as_deref(), Some("vrf-blue"));
    });
}

/// A tap on a switch cannot take an rdomain (a bridge port's one master slot is the bridge): the
/// request is refused and the tap stays on its bridge.
#[test]
#[ignore = "needs VRF: run by the stock-kernel matrix (cargo run -p vmpriv-tests --bin vmpriv-stock-kernel)"]
fn rdomain_on_a_switched_tap_is_refused() {
    scenario("rdomain_on_a_switched_tap_is_refused", bins!(), POLICY, |s| {
        bridge("br0", None);
        add_link("vrf-blue", "vrf", &["table", "10"]);
        become_nobody();
        let mut h = helper(s);
        let tap = h.create_tap(&TapOptions::new().switch("br0")).unwrap();
        let e = h.set_rdomain(&tap, 1).unwrap_err();
        assert!(
            matches!(e, ClientError::Invalid(Invalid::RdomainOnSwitchedTap)),
            "{e:?}"
        );
        assert_eq!(master(tap.name()).as_deref(), Some("br0"));
        let e = h
            .create_tap(&TapOptions::new().switch("br0").rdomain(1))
            .unwrap_err();
        assert!(
            matches!(e, ClientError::Invalid(Invalid::RdomainOnSwitchedTap)),
            "{e:?}"
        );
        assert_eq!(taps(), [tap.name()]);
    });
}

/// On a kernel with VRF, an rdomain whose VRF device is absent (or is not a VRF) is refused with
/// nothing changed: never a silent main table, never another VRF.
#[test]
#[ignore = "needs VRF: run by the stock-kernel matrix (cargo run -p vmpriv-tests --bin vmpriv-stock-kernel)"]
fn rdomain_whose_vrf_is_absent_is_refused_with_nothing_changed() {
    scenario(
        "rdomain_whose_vrf_is_absent_is_refused_with_nothing_changed",
        bins!(),
        POLICY,
        |s| {
            add_link("vrf-red", "vrf", &["table", "11"]);
            for impostor in [None, Some("dummy")] {
                if let Some(kind) = impostor {
                    add_link("vrf-blue", kind, &[]);
                }
                let before = (links().len(), all_addrs());
                become_nobody();
                let mut h = helper(s);
                let e = h
                    .create_tap(&TapOptions::new().rdomain(1).local(1, 0, true))
                    .unwrap_err();
                assert!(matches!(e, ClientError::Unsupported(Unsupported::Vrf)), "{e:?}");
                let tap = h.create_tap(&TapOptions::new()).unwrap();
                let e = h.set_rdomain(&tap, 1).unwrap_err();
                assert!(matches!(e, ClientError::Unsupported(Unsupported::Vrf)), "{e:?}");
                become_root();
                assert_eq!(master(tap.name()), None, "{impostor:?}");
                assert!(addrs(tap.name()).is_empty(), "{impostor:?}");
                drop(tap);
                drop(h);
                assert_eq!((links().len(), all_addrs()), before, "{impostor:?}");
                assert!(taps().is_empty());
            }
        },
    );
}

/// A granted switch name that is a dummy, a vlan or a VRF device is refused like an absent one.
#[test]
#[ignore = "needs the dummy, 8021q and vrf drivers: run by the stock-kernel matrix (cargo run -p vmpriv-tests --bin vmpriv-stock-kernel)"]
fn granted_name_of_a_dummy_vlan_or_vrf_is_refused_like_an_absent_switch() {
    scenario(
        "granted_name_of_a_dummy_vlan_or_vrf_is_refused_like_an_absent_switch",
        bins!(),
        POLICY,
        |s| {
            add_link("dummy0", "dummy", &[]);
            // `nosuchbr` is granted by the policy; each time it names a device that is no bridge.
            for (kind, args) in [
                ("dummy", &[][..]),
                ("vlan", &["link", "dummy0", "id", "7"][..]),
                ("vrf", &["table", "12"][..]),
            ] {
                add_link("nosuchbr", kind, args);
                assert_eq!(link("nosuchbr").unwrap()["linkinfo"]["info_kind"], kind);
                become_nobody();
                let mut h = helper(s);
                let e = h.create_tap(&TapOptions::new().switch("nosuchbr")).unwrap_err();
                assert!(matches!(e, ClientError::Denied), "{kind}: {e:?}");
                let e = h.switch_exists("nosuchbr").unwrap_err();
                assert!(matches!(e, ClientError::Denied), "{kind}: {e:?}");
                let tap = h.create_tap(&TapOptions::new()).unwrap();
                let e = h.attach(&tap, "nosuchbr").unwrap_err();
                assert!(matches!(e, ClientError::Denied), "{kind}: {e:?}");
                assert_eq!(master(tap.name()), None, "{kind}");
                drop(tap);
                drop(h);
                become_root();
                assert!(taps().is_empty(), "{kind}");
                sh(&["ip", "link", "del", "nosuchbr"]);
            }
        },
    );
}

/// The fd is the capability: anything that is not the caller's own tap is refused, and nothing changes.
#[test]
fn wrong_fd_kinds_and_other_users_taps_are_refused() {
    scenario(
        "wrong_fd_kinds_and_other_users_taps_are_refused",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            // Root prepares: a persistent tap owned by uid 1000 (root holds an fd on it), a TUN-mode
            // device, a detached /dev/net/tun fd, a FIFO.
            sh(&[
                "ip", "tuntap", "add", "mode", "tap", "user", "1000", "name", "othertap",
            ]);
            let other = vmpriv_tests::open_tun("othertap", libc::IFF_TAP);
            let tun_mode = vmpriv_tests::open_tun("tunmode0", libc::IFF_TUN);
            let detached: OwnedFd = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .unwrap()
                .into();
            let fifo = s.dir.join("fifo");
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
            let fifo_fd: OwnedFd = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&fifo)
                .unwrap()
                .into();
            let before = links().len();
            become_nobody();
            let file: OwnedFd = std::fs::File::open("/etc/hostname")
                .or_else(|_| std::fs::File::open("/etc/passwd"))
                .unwrap()
                .into();
            let zero: OwnedFd = std::fs::File::open("/dev/zero").unwrap().into();
            let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
            let mut h = helper(s);
            let not_a_tap: [(&str, &dyn AsFd); 6] = [
                ("regular file", &file),
                ("FIFO", &fifo_fd),
                ("socket", &sock),
                ("/dev/zero", &zero),
                ("TUN-mode fd", &tun_mode),
                ("detached /dev/net/tun", &detached),
            ];
            for (what, fd) in not_a_tap {
                let e = h.attach(fd, "br0").unwrap_err();
                assert!(
                    matches!(e, ClientError::Invalid(Invalid::NotATap)),
                    "{what}: {e:?}"
                );
                let e = h.set_up(fd, true).unwrap_err();
                assert!(
                    matches!(e, ClientError::Invalid(Invalid::NotATap)),
                    "{what}: {e:?}"
                );
            }
            // Another user's tap, even passed as a real tap fd: Denied, untouched (CVE-2026-39402 shape).
            for e in [
                h.attach(&other, "br0").unwrap_err(),
                h.set_up(&other, true).unwrap_err(),
                h.set_description(&other, "mine now").unwrap_err(),
                h.add_local_inet(&other, 1, 0).unwrap_err(),
                h.reset(&other).unwrap_err(),
                h.link_addr(&other).unwrap_err(),
            ] {
                assert!(matches!(e, ClientError::Denied), "{e:?}");
            }
            become_root();
            let l = link("othertap").unwrap();
            assert!(l.get("master").is_none() && l.get("ifalias").is_none());
            assert!(addrs("othertap").is_empty());
            assert_eq!(links().len(), before);
            // The helper's session survived all of that.
            become_nobody();
            assert!(h.create_tap(&TapOptions::new().switch("br0")).is_ok());
        },
    );
}

#[test]
fn quota_counts_live_taps_from_the_kernel() {
    scenario("quota_counts_live_taps_from_the_kernel", bins!(), POLICY, |s| {
        become_nobody();
        let mut h = helper(s);
        let a = h.create_tap(&TapOptions::new()).unwrap();
        let b = h.create_tap(&TapOptions::new()).unwrap();
        // A second session of the same user shares the quota: it is counted from the kernel.
        let mut h2 = helper(s);
        let c = h2.create_tap(&TapOptions::new()).unwrap();
        let e = h.create_tap(&TapOptions::new()).unwrap_err();
        assert!(matches!(e, ClientError::Quota { limit: 3 }), "{e:?}");
        assert_eq!(taps().len(), 3);
        assert_eq!(h.status().unwrap().in_use, 3);
        drop(a);
        let d = h.create_tap(&TapOptions::new()).unwrap();
        assert_eq!(taps().len(), 3);
        drop((h, h2)); // each helper's copy of d and c is closed once it has exited
        drop((b, c, d));
        assert!(taps().is_empty());
    });
}

#[test]
fn an_address_another_interface_holds_is_refused() {
    scenario(
        "an_address_another_interface_holds_is_refused",
        bins!(),
        POLICY,
        |s| {
            sh(&[
                "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
            ]);
            sh(&["ip", "addr", "add", "100.64.2.3/31", "dev", "veth0"]); // vm 2 nic 0's VM side
            become_nobody();
            let mut h = helper(s);
            let tap = h.create_tap(&TapOptions::new().local(1, 0, true)).unwrap();
            let e = h.create_tap(&TapOptions::new().local(1, 0, false)).unwrap_err();
            assert!(matches!(e, ClientError::Invalid(Invalid::AddressInUse)), "{e:?}");
            let e = h.create_tap(&TapOptions::new().local(2, 0, false)).unwrap_err();
            assert!(matches!(e, ClientError::Invalid(Invalid::AddressInUse)), "{e:?}");
            assert_eq!(taps(), [tap.name()]);
            let mut all = all_addrs();
            all.sort();
            let t = tap.name();
            let mut want = vec![
                format!("{t} 100.64.1.2/31"),
                format!("{t} fd00::6440:103:0:1/96"),
                "veth0 100.64.2.3/31".to_owned(),
            ];
            want.sort();
            assert_eq!(all, want);
            // Addresses outside the plan are refused before anything happens.
            let e = h.add_local_inet(&tap, 16385, 0).unwrap_err();
            assert!(matches!(e, ClientError::Invalid(Invalid::Address(_))), "{e:?}");
        },
    );
}

/// A failure part-way through a configuration undoes what the request had changed.
#[test]
fn a_failed_configuration_is_rolled_back() {
    scenario("a_failed_configuration_is_rolled_back", bins!(), POLICY, |s| {
        bridge("br0", Some(1400));
        become_nobody();
        let mut h = helper(s);
        let tap = h.create_tap(&TapOptions::new().up(false)).unwrap();
        let name = tap.name().to_owned();
        become_root();
        sh(&[
            "sysctl",
            "-q",
            "-w",
            &format!("net.ipv6.conf.{name}.disable_ipv6=1"),
        ]);
        let before = link(&name).unwrap();
        become_nobody();
        let config = IfConfig {
            description: Some("half done".into()),
            switch: Some("br0".into()),
            group: Some("vms".into()),
            up: Some(true),
            local: Some(LocalRequest {
                vm: 3,
                nic: 0,
                inet: true,
                inet6: true,
            }),
            ..IfConfig::default()
        };
        let e = h.configure(&tap, &config).unwrap_err();
        assert!(matches!(e, ClientError::Unsupported(Unsupported::Inet6)), "{e:?}");
        let after = link(&name).unwrap();
        assert!(after.get("master").is_none(), "detached again");
        assert_eq!(after["mtu"], before["mtu"]);
        assert_eq!(after["group"], "default");
        assert_eq!(after.get("ifalias"), before.get("ifalias"));
        assert!(!after["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
        assert!(addrs(&name).is_empty(), "the IPv4 /31 was removed again");
        // A tap created with the same failing configuration does not survive at all.
        let before_taps = taps();
        become_root();
        sh(&["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"]);
        become_nobody();
        let e = h
            .create_tap(&TapOptions::new().switch("br0").local(4, 0, true))
            .unwrap_err();
        assert!(matches!(e, ClientError::Unsupported(Unsupported::Inet6)), "{e:?}");
        assert_eq!(taps(), before_taps);
        assert!(all_addrs().is_empty());
    });
}

/// After start-up the helper is the caller with CAP_NET_ADMIN only, no_new_privs, and no stray fds.
#[test]
fn running_helper_holds_only_cap_net_admin_as_the_caller() {
    scenario(
        "running_helper_holds_only_cap_net_admin_as_the_caller",
        bins!(),
        POLICY,
        |s| {
            // The pool below exists where the caller cannot open the device: make it so here,
            // whatever mode the host's /dev/net/tun has.
            vmpriv_tests::tun_device_mode(0o600);
            become_nobody();
            let h = helper(s);
            let st = proc_status(h.pid());
            let get = |k: &str| {
                st.iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
                    .unwrap()
            };
            assert_eq!(get("Uid").split_whitespace().collect::<Vec<_>>(), ["65534"; 4]);
            assert_eq!(get("Gid").split_whitespace().collect::<Vec<_>>(), ["65534"; 4]);
            assert_eq!(get("Groups"), "");
            let net_admin = format!("{:016x}", 1u64 << 12);
            assert_eq!(get("CapEff"), net_admin);
            assert_eq!(get("CapPrm"), net_admin);
            assert_eq!(get("CapBnd"), net_admin);
            assert_eq!(get("CapInh"), "0000000000000000");
            assert_eq!(get("CapAmb"), "0000000000000000");
            assert_eq!(get("NoNewPrivs"), "1");
            become_root();
            // stdio, the session socket, netlink (requests, and IPv6 address notifications), the
            // /dev/net/tun pool (quota 3 + 7), the IPv6 sysctl directory where new taps get RAs
            // and autoconfiguration turned off, and the sysfs directory of bridges (their MAC's
            // addr_assign_type).
            let fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", h.pid()))
                .unwrap()
                .map(|e| {
                    std::fs::read_link(e.unwrap().path())
                        .unwrap()
                        .display()
                        .to_string()
                })
                .collect();
            assert_eq!(
                fds.iter().filter(|f| f.as_str() == "/dev/net/tun").count(),
                10,
                "{fds:?}"
            );
            assert_eq!(
                fds.iter().filter(|f| f.starts_with("socket:")).count(),
                3,
                "{fds:?}"
            );
            assert_eq!(
                fds.iter()
                    .filter(|f| f.as_str() == "/proc/sys/net/ipv6/conf")
                    .count(),
                1,
                "{fds:?}"
            );
            assert_eq!(
                fds.iter()
                    .filter(|f| f.as_str() == "/sys/devices/virtual/net")
                    .count(),
                1,
                "{fds:?}"
            );
            assert_eq!(fds.len(), 18, "{fds:?}");
        },
    );
}

/// SIGKILL mid-request: once the caller closes its fds, no tap survives.
#[test]
fn a_killed_helper_leaves_no_tap() {
    scenario("a_killed_helper_leaves_no_tap", bins!(), POLICY, |s| {
        bridge("br0", None);
        become_nobody();
        for round in 0..20 {
            let mut h = helper(s);
            let pid = nix::unistd::Pid::from_raw(i32::try_from(h.pid()).unwrap());
            let req = vmpriv_protocol::Request::CreateTap {
                queues: 2,
                vnet_hdr: true,
                config: TapOptions::new()
                    .switch("br0")
                    .local(round, 0, true)
                    .config()
                    .clone(),
            };
            let killer = std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_micros(u64::from(round) * 150));
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            });
            let r = h.call(&req, &[]);
            killer.join().unwrap();
            drop(r); // our copies of any fds that made it
            drop(h);
        }
        assert!(taps().is_empty(), "{:?}", taps());
        become_root();
        assert!(all_addrs().is_empty(), "{:?}", all_addrs());
    });
}

#[test]
fn the_helper_refuses_an_unsafe_policy_file_or_a_chosen_one() {
    scenario(
        "the_helper_refuses_an_unsafe_policy_file_or_a_chosen_one",
        bins!(),
        POLICY,
        |s| {
            let p = Path::new("/etc/vmpriv/policy.conf");
            let check = |what: &str| {
                let e = as_nobody(|| Helper::spawn_at(&s.helper).err());
                // The helper's exit status 6 is the client's policy error (exit 6), not "not installed".
                assert!(matches!(e, Some(ClientError::Policy)), "{what}: {e:?}");
            };
            vmpriv_tests::chmod(p, 0o666);
            check("world-writable policy");
            vmpriv_tests::chmod(p, 0o644);
            nix::unistd::chown(p, Some(65534.into()), None).unwrap();
            check("policy owned by the caller");
            nix::unistd::chown(p, Some(0.into()), None).unwrap();
            vmpriv_tests::chmod(Path::new("/etc/vmpriv"), 0o777);
            check("writable policy directory");
            vmpriv_tests::chmod(Path::new("/etc/vmpriv"), 0o755);
            // A symlink anywhere on the path is refused, even to root's own file or directory.
            std::fs::copy(p, "/etc/vmpriv/real.conf").unwrap();
            std::fs::remove_file(p).unwrap();
            std::os::unix::fs::symlink("real.conf", p).unwrap();
            check("policy file that is a symlink");
            std::fs::remove_file(p).unwrap();
            std::fs::rename("/etc/vmpriv/real.conf", p).unwrap();
            std::fs::rename("/etc/vmpriv", "/etc/vmpriv.real").unwrap();
            std::os::unix::fs::symlink("vmpriv.real", "/etc/vmpriv").unwrap();
            check("policy directory that is a symlink");
            std::fs::remove_file("/etc/vmpriv").unwrap();
            std::fs::rename("/etc/vmpriv.real", "/etc/vmpriv").unwrap();
            // One byte past 1 MiB (comments only) is refused, not read up to the bound.
            let mut big = POLICY.to_owned();
            big.push_str(&"#".repeat(1024 * 1024 + 1 - POLICY.len() - 1));
            big.push('\n');
            assert_eq!(big.len(), 1024 * 1024 + 1);
            vmpriv_tests::write_policy(&big);
            check("policy larger than 1 MiB");
            vmpriv_tests::write_policy("allow user nobody swich br0\n");
            check("policy with a typo: fail closed");
            vmpriv_tests::write_policy(POLICY);
            // A setuid caller can never choose the policy file.
            let mine = s.dir.join("mine.conf");
            std::fs::write(&mine, "allow user * switch *\n").unwrap();
            let mut cmd = std::process::Command::new(&s.helper);
            cmd.arg("--policy").arg(&mine);
            let e = as_nobody(|| Helper::spawn_command(cmd, &s.helper).err());
            assert!(matches!(e, Some(ClientError::Policy)), "{e:?}");
            // Not even a trusted file (root's, in /etc/vmpriv): the refusal is for choosing, and its
            // line says so. Root may choose it, and gets that policy.
            let other = Path::new("/etc/vmpriv/other.conf");
            std::fs::write(other, "allow user * local\nquota user * 7\n").unwrap();
            vmpriv_tests::chmod(other, 0o644);
            let log = s.dir.join("stderr.log");
            std::fs::write(&log, "").unwrap();
            vmpriv_tests::chmod(&log, 0o666);
            let mut cmd = std::process::Command::new(&s.helper);
            cmd.arg("--policy").arg(other);
            cmd.stderr(std::fs::OpenOptions::new().append(true).open(&log).unwrap());
            let e = as_nobody(|| Helper::spawn_command(cmd, &s.helper).err());
            assert!(matches!(e, Some(ClientError::Policy)), "{e:?}");
            let said = std::fs::read_to_string(&log).unwrap();
            assert!(said.contains("--policy is for root only"), "{said}");
            let mut cmd = std::process::Command::new(&s.helper);
            cmd.arg("--policy").arg(other);
            let mut root = Helper::spawn_command(cmd, &s.helper).unwrap();
            assert_eq!(
                root.status().unwrap().quota,
                7,
                "root's --policy is the policy served"
            );
            drop(root);
            assert!(as_nobody(|| Helper::spawn_at(&s.helper).is_ok()));
        },
    );
}

/// A /dev/net/tun the helper cannot open for a reason other than permission (here a device node with
/// no driver: ENXIO) stops the start-up (exit 1); only EACCES means "this install has no tun fds".
#[test]
fn a_tun_device_that_fails_to_open_stops_the_start_up() {
    scenario(
        "a_tun_device_that_fails_to_open_stops_the_start_up",
        bins!(),
        POLICY,
        |s| {
            let node = s.dir.join("no-driver");
            nix::sys::stat::mknod(
                &node,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(4000, 0),
            )
            .unwrap();
            vmpriv_tests::sh(&["mount", "--bind", node.to_str().unwrap(), "/dev/net/tun"]);
            let e = as_nobody(|| Helper::spawn_at(&s.helper).err());
            assert!(
                matches!(&e, Some(ClientError::HelperExited { status }) if status.code() == Some(1)),
                "{e:?}"
            );
        },
    );
}

/// A `Configure` of a tap that is already somewhere: asking again for its own bridge is no change and
/// is served; another bridge is refused (`OtherMaster`) and the tap stays where it was.
#[test]
fn a_tap_on_a_bridge_may_ask_for_it_again_but_not_for_another() {
    scenario(
        "a_tap_on_a_bridge_may_ask_for_it_again_but_not_for_another",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            bridge("secretbridge123", None);
            become_nobody();
            let mut h = helper(s);
            let tap = h.create_tap(&TapOptions::new().switch("br0")).unwrap();
            h.attach(&tap, "br0").unwrap();
            assert_eq!(master(tap.name()).as_deref(), Some("br0"));
            let e = h.attach(&tap, "secretbridge123").unwrap_err();
            assert!(matches!(e, ClientError::Invalid(Invalid::OtherMaster)), "{e:?}");
            assert_eq!(master(tap.name()).as_deref(), Some("br0"));
        },
    );
}

/// An rdomain whose device is there but is not a VRF (here a bridge, which every kernel has) is
/// refused as a missing VRF, and the tap is enslaved to nothing. (The matrix's VRF tests cover the
/// real VRF; this one runs everywhere.)
#[test]
fn an_rdomain_whose_device_is_a_bridge_is_refused() {
    scenario(
        "an_rdomain_whose_device_is_a_bridge_is_refused",
        bins!(),
        POLICY,
        |s| {
            bridge("vrf-blue", None);
            become_nobody();
            let mut h = helper(s);
            let tap = h.create_tap(&TapOptions::new()).unwrap();
            let e = h.set_rdomain(&tap, 1).unwrap_err();
            assert!(matches!(e, ClientError::Unsupported(Unsupported::Vrf)), "{e:?}");
            assert_eq!(master(tap.name()), None);
            let e = h.create_tap(&TapOptions::new().rdomain(1)).unwrap_err();
            assert!(matches!(e, ClientError::Unsupported(Unsupported::Vrf)), "{e:?}");
            assert_eq!(taps(), [tap.name()]);
        },
    );
}

/// The in-use check of a local /31 for a tap that exists (a `Configure`, not a create): an address
/// another interface holds is refused there too, and the tap gets nothing. The namespace's default
/// route, which matches every address, does not count as "in use".
#[test]
fn local_addresses_for_an_existing_tap_are_checked_and_a_default_route_is_no_conflict() {
    scenario(
        "local_addresses_for_an_existing_tap_are_checked_and_a_default_route_is_no_conflict",
        bins!(),
        POLICY,
        |s| {
            sh(&[
                "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
            ]);
            sh(&["ip", "link", "set", "veth0", "up"]);
            sh(&["ip", "addr", "add", "100.64.2.3/31", "dev", "veth0"]); // vm 2 nic 0's VM side
            sh(&["ip", "addr", "add", "192.0.2.1/24", "dev", "veth0"]);
            sh(&[
                "ip",
                "route",
                "add",
                "default",
                "via",
                "192.0.2.2",
                "dev",
                "veth0",
            ]);
            sh(&["ip", "-6", "route", "add", "default", "dev", "veth0"]);
            become_nobody();
            let mut h = helper(s);
            let tap = h.create_tap(&TapOptions::new()).unwrap();
            let e = h.add_local_inet(&tap, 2, 0).unwrap_err();
            assert!(matches!(e, ClientError::Invalid(Invalid::AddressInUse)), "{e:?}");
            assert!(addrs(tap.name()).is_empty(), "{:?}", addrs(tap.name()));
            // vm 3 is free: only the default routes match it.
            h.add_local_inet(&tap, 3, 0).unwrap();
            h.add_local_inet6(&tap, 3, 0).unwrap();
            let mut got = addrs(tap.name());
            got.sort();
            assert_eq!(got, ["100.64.3.2/31", "fd00::6440:303:0:1/96"]);
        },
    );
}

/// A claim left by a killed request (an alternative name `vl-…`, no address with it) on a tap that is
/// up, so it has its IPv6 link-local address: the next slot request of that tap replaces the stale
/// claim (a link-local address is not a slot's address); an alternative name that is not a claim (an
/// admin's) is left alone.
#[test]
fn a_stale_claim_on_a_tap_with_a_link_local_address_is_replaced() {
    scenario(
        "a_stale_claim_on_a_tap_with_a_link_local_address_is_replaced",
        bins!(),
        POLICY,
        |s| {
            become_nobody();
            let mut h = helper(s);
            let tap = h.create_tap(&TapOptions::new().up(true)).unwrap();
            become_root();
            let name = tap.name().to_owned();
            for altname in ["vm-uplink-5", "vl-000005-00"] {
                sh(&["ip", "link", "property", "add", "dev", &name, "altname", altname]);
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let link_local = || {
                vmpriv_tests::ip_json(&["-6", "addr", "show", "dev", &name, "scope", "link"])
                    .first()
                    .is_some_and(|l| l["addr_info"].as_array().is_some_and(|a| !a.is_empty()))
            };
            while !link_local() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{name} never got its fe80:: address"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            become_nobody();
            h.add_local_inet(&tap, 6, 0).unwrap();
            become_root();
            let l = link(&name).unwrap();
            assert_eq!(
                l["altnames"],
                serde_json::json!(["vm-uplink-5", "vl-000006-00"]),
                "{l}"
            );
            assert_eq!(addrs(&name), ["100.64.6.2/31"]);
        },
    );
}

/// `create_taps` pipelines its requests: the taps come back in the order asked, each as asked; a
/// refusal in the middle leaves no tap of that batch, and the session goes on in step.
#[test]
fn pipelined_creates_are_in_order_and_all_or_nothing() {
    scenario(
        "pipelined_creates_are_in_order_and_all_or_nothing",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            bridge("br1", None);
            become_nobody();
            let mut h = helper(s);
            let made = h
                .create_taps(&[
                    TapOptions::new().switch("br0").description("first"),
                    TapOptions::new().local(1, 0, false),
                    TapOptions::new().switch("br0").description("third"),
                ])
                .unwrap();
            become_root();
            let names: Vec<&str> = made.iter().map(vmpriv_client::Tap::name).collect();
            let mut all = taps();
            all.sort_unstable();
            let mut want = names.clone();
            want.sort_unstable();
            assert_eq!(all, want);
            assert_eq!(link(names[0]).unwrap()["ifalias"], "first");
            assert_eq!(master(names[0]).as_deref(), Some("br0"));
            assert_eq!(master(names[1]), None);
            assert_eq!(addrs(names[1]), ["100.64.1.2/31"]);
            assert_eq!(link(names[2]).unwrap()["ifalias"], "third");
            assert_eq!(master(names[2]).as_deref(), Some("br0"));
            drop(made);
            assert!(taps().is_empty());
            become_nobody();
            let e = h
                .create_taps(&[
                    TapOptions::new().switch("br0"),
                    TapOptions::new().switch("br1"),
                    TapOptions::new().switch("br0"),
                ])
                .unwrap_err();
            assert!(matches!(e, ClientError::Denied), "{e:?}");
            assert!(taps().is_empty(), "{:?}", taps());
            let tap = h.create_tap(&TapOptions::new().switch("br0")).unwrap();
            assert_eq!(master(tap.name()).as_deref(), Some("br0"));
        },
    );
}

/// The audit log: a refusal's details go to the log as an authpriv record at info level, under the
/// helper's name: the journal's fields where there is no `/dev/log` (this machine), a syslog record
/// (`<86>`, authpriv.info) where there is. A done request is logged too.
#[test]
fn refusals_and_done_requests_are_logged_as_authpriv() {
    scenario(
        "refusals_and_done_requests_are_logged_as_authpriv",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            bridge("br1", None);
            let log = vmpriv_tests::capture_helper_log();
            become_nobody();
            let mut h = helper(s);
            let e = h.create_tap(&TapOptions::new().switch("br1")).unwrap_err();
            assert!(matches!(e, ClientError::Denied), "{e:?}");
            let tap = h.create_tap(&TapOptions::new().switch("br0")).unwrap();
            drop(h);
            become_root();
            let lines = vmpriv_tests::log_lines(&log);
            let find = |what: &str| {
                lines
                    .iter()
                    .find(|l| l.contains(what))
                    .unwrap_or_else(|| panic!("no log record with {what:?}: {lines:#?}"))
                    .clone()
            };
            let refused = find("op=create-tap decision=refused");
            let done = find(&format!("target={} decision=done", tap.name()));
            for record in [&refused, &done] {
                if record.starts_with('<') {
                    assert!(record.starts_with("<86>"), "{record}");
                } else {
                    for field in [
                        "SYSLOG_FACILITY=10\n",
                        "PRIORITY=6\n",
                        "SYSLOG_IDENTIFIER=vmpriv-helper\n",
                        "MESSAGE=uid=65534 ",
                    ] {
                        assert!(record.contains(field), "{field:?} in {record}");
                    }
                }
            }
        },
    );
}

/// Each new tap keeps the kernel's random MAC with only its first octet set to 0xfe (locally
/// administered, never a bridge's lowest): three taps, three MACs, each as the kernel lists it.
#[test]
fn each_tap_gets_its_own_mac_with_0xfe_first() {
    scenario(
        "each_tap_gets_its_own_mac_with_0xfe_first",
        bins!(),
        POLICY,
        |s| {
            become_nobody();
            let mut h = helper(s);
            let made: Vec<_> = (0..3)
                .map(|_| h.create_tap(&TapOptions::new()).unwrap())
                .collect();
            become_root();
            let mut macs: Vec<String> = made
                .iter()
                .map(|t| {
                    let kernel = link(t.name()).unwrap()["address"].as_str().unwrap().to_owned();
                    assert_eq!(kernel, t.mac_string(), "the reported MAC is the tap's");
                    assert!(kernel.starts_with("fe:"), "{kernel}");
                    kernel
                })
                .collect();
            macs.sort_unstable();
            macs.dedup();
            assert_eq!(macs.len(), 3, "three taps, three MACs: {macs:?}");
        },
    );
}
