//! vmpriv-bridge-helper as QEMU's and libvirt's `helper=`: the real QEMU, an unprivileged caller, a setuid copy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use vmpriv_tests::{Scenario, bins, bridge, link, scenario, taps};

const POLICY: &str = "\
allow user nobody switch br0
allow user nobody switch secretbridge123
deny user nobody switch br1
";
const QEMU: &str = "qemu-system-x86_64";

fn require_qemu(test: &str) {
    vmpriv_tests::require_tool(test, QEMU, "apt-get install qemu-system-x86");
}

/// QEMU as uid 65534 with one netdev and no guest: `-M none -S` opens the netdev and waits.
fn qemu(netdev: &str) -> Child {
    vmpriv_tests::nobody_command(QEMU)
        .args([
            "-M",
            "none",
            "-nodefaults",
            "-display",
            "none",
            "-S",
            "-netdev",
            netdev,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for_tap(child: &mut Child) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(t) = taps().into_iter().next() {
            return Some(t);
        }
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn stop(mut child: Child) -> String {
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn check_qemu_tap(s: &Scenario, netdev: &str) {
    bridge("br0", Some(1420));
    let mut q = qemu(&format!("{netdev},br=br0,helper={}", s.bridge.display()));
    let Some(tap) = wait_for_tap(&mut q) else {
        panic!("no tap; QEMU said: {}", stop(q))
    };
    let l = link(&tap).unwrap();
    assert_eq!(l["linkinfo"]["info_data"]["user"], "nobody");
    assert_eq!(l["linkinfo"]["info_data"]["persist"], false);
    assert_eq!(
        l["linkinfo"]["info_data"]["vnet_hdr"], true,
        "--use-vnet honoured"
    );
    assert_eq!(l["master"], "br0");
    assert_eq!(l["mtu"], 1420);
    assert!(l["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    assert!(l["address"].as_str().unwrap().starts_with("fe:"));
    stop(q);
    assert!(link(&tap).is_none(), "the tap dies with QEMU");
}

#[test]
fn qemu_netdev_bridge_gets_a_tap_on_the_bridge() {
    scenario(
        "qemu_netdev_bridge_gets_a_tap_on_the_bridge",
        bins!(),
        POLICY,
        |s| {
            require_qemu("qemu_netdev_bridge_gets_a_tap_on_the_bridge");
            check_qemu_tap(s, "bridge,id=n0");
        },
    );
}

#[test]
fn qemu_netdev_tap_with_helper_gets_a_tap_on_the_bridge() {
    scenario(
        "qemu_netdev_tap_with_helper_gets_a_tap_on_the_bridge",
        bins!(),
        POLICY,
        |s| {
            require_qemu("qemu_netdev_tap_with_helper_gets_a_tap_on_the_bridge");
            check_qemu_tap(s, "tap,id=n0");
        },
    );
}

/// Hotplug: QEMU runs the helper at runtime for QMP `netdev_add`; `netdev_del` drops the tap.
#[test]
fn qemu_hotplug_netdev_add_and_del() {
    scenario("qemu_hotplug_netdev_add_and_del", bins!(), POLICY, |s| {
        require_qemu("qemu_hotplug_netdev_add_and_del");
        bridge("br0", None);
        let run = s.dir.join("run");
        std::fs::create_dir(&run).unwrap();
        vmpriv_tests::chmod(&run, 0o777);
        let qmp_path = run.join("qmp.sock");
        let mut q = vmpriv_tests::nobody_command(QEMU)
            .args(["-M", "none", "-nodefaults", "-display", "none", "-S", "-qmp"])
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !qmp_path.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let sock = std::os::unix::net::UnixStream::connect(&qmp_path).unwrap();
        let mut reader = std::io::BufReader::new(sock.try_clone().unwrap());
        let mut qmp = |cmd: serde_json::Value| -> serde_json::Value {
            use std::io::{BufRead, Write};
            writeln!(&sock, "{cmd}").unwrap();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                if v.get("return").is_some() || v.get("error").is_some() {
                    return v;
                }
            }
        };
        let helper = s.bridge.display().to_string();
        assert!(
            qmp(serde_json::json!({"execute": "qmp_capabilities"}))
                .get("return")
                .is_some()
        );
        let r = qmp(serde_json::json!({"execute": "netdev_add",
            "arguments": {"type": "bridge", "id": "n1", "br": "br0", "helper": helper}}));
        assert!(r.get("return").is_some(), "{r}");
        let tap = taps().into_iter().next().expect("a tap after netdev_add");
        assert_eq!(link(&tap).unwrap()["master"], "br0");
        assert_eq!(link(&tap).unwrap()["linkinfo"]["info_data"]["user"], "nobody");
        let r = qmp(serde_json::json!({"execute": "netdev_add",
            "arguments": {"type": "bridge", "id": "n2", "br": "br1", "helper": helper}}));
        assert!(
            r.get("error").is_some(),
            "a bridge not granted fails the hotplug: {r}"
        );
        assert_eq!(taps(), std::slice::from_ref(&tap));
        let r = qmp(serde_json::json!({"execute": "netdev_del", "arguments": {"id": "n1"}}));
        assert!(r.get("return").is_some(), "{r}");
        assert!(link(&tap).is_none(), "netdev_del closes the fd: the tap is gone");
        let _ = q.kill();
        let _ = q.wait();
    });
}

#[test]
fn qemu_fails_cleanly_on_a_bridge_not_granted() {
    scenario(
        "qemu_fails_cleanly_on_a_bridge_not_granted",
        bins!(),
        POLICY,
        |s| {
            require_qemu("qemu_fails_cleanly_on_a_bridge_not_granted");
            bridge("br1", None);
            bridge("secretbridge123", None);
            for br in ["br1", "nosuchbr", "secretbridge123X"] {
                let q = qemu(&format!("bridge,id=n0,br={br},helper={}", s.bridge.display()));
                let out = q.wait_with_output().unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(!out.status.success(), "{br}: QEMU must not start");
                assert!(
                    err.contains("vmpriv-bridge-helper:"),
                    "{br}: the helper's line reaches QEMU's stderr: {err}"
                );
                assert!(err.contains("bridge helper failed"), "{br}: {err}");
                // A refusal (not the 16-byte name, which is a usage error) says where to look.
                assert_eq!(
                    err.contains("see /etc/vmpriv/policy.conf and `vmpriv whoami`"),
                    br != "secretbridge123X",
                    "{br}: {err}"
                );
                assert!(taps().is_empty(), "{br}");
            }
        },
    );
}

/// The helper by hand in QEMU mode, received the way libvirt's `virSocketRecvFD` does: exactly one
/// byte, and a first control message that is SOL_SOCKET/SCM_RIGHTS with exactly one fd.
#[test]
fn libvirt_order_and_strict_receive() {
    scenario("libvirt_order_and_strict_receive", bins!(), POLICY, |s| {
        bridge("br0", None);
        let run = |args: &[String]| -> (std::process::Output, Vec<u8>, Vec<OwnedFd>, usize) {
            let (ours, theirs) = vmpriv_tests::qemu_socketpair();
            let fd = theirs.as_raw_fd();
            let mut cmd = vmpriv_tests::nobody_command(&s.bridge);
            cmd.args(args.iter().map(|a| a.replace("{fd}", &fd.to_string())));
            vmpriv_client::keep_fd_across_exec(&mut cmd, fd);
            let out = cmd.output().unwrap();
            drop(theirs);
            let got = vmpriv_tests::recv_with_fds(&ours, 16);
            (out, got.bytes, got.fds, got.cmsgs)
        };
        let (out, bytes, fds, cmsgs) = run(&["--use-vnet".into(), "--br=br0".into(), "--fd={fd}".into()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            (bytes.len(), fds.len(), cmsgs),
            (1, 1, 1),
            "one byte, one SCM_RIGHTS fd"
        );
        let tap = fds.into_iter().next().unwrap();
        let name = taps().into_iter().next().expect("a tap while we hold the fd");
        assert_eq!(vmpriv_tests::link(&name).unwrap()["master"], "br0");
        assert!(
            out.stdout.is_empty(),
            "nothing on stdout (it may be QEMU's console)"
        );
        drop(tap);
        assert!(taps().is_empty());
        // Refusals send nothing and exit non-zero, before anything is created.
        for args in [
            vec!["--use-vnet".into(), "--br=br1".into(), "--fd={fd}".into()],
            vec!["--br=secretbridge123X".into(), "--fd={fd}".into()],
            vec!["--br=br0".into(), "--br=br0".into(), "--fd={fd}".into()],
            vec!["--br=br0".into(), "--fd={fd}".into(), "--unknown".into()],
            vec!["--br=br0".into(), "--fd=2".into()],
            vec!["--br=".into(), "--fd={fd}".into()],
        ] {
            let (out, bytes, fds, _) = run(&args);
            assert!(!out.status.success(), "{args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                err.lines().count(),
                1,
                "{args:?}: one line naming the cause: {err}"
            );
            assert!(err.starts_with("vmpriv-bridge-helper: "), "{args:?}");
            assert!(bytes.is_empty() && fds.is_empty(), "{args:?}: nothing sent");
            assert!(taps().is_empty(), "{args:?}");
        }
        // --fd naming something that is not an AF_UNIX stream socket.
        let out = vmpriv_tests::nobody_command(&s.bridge)
            .args(["--br=br0", "--fd=7"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--fd=7 is not an open AF_UNIX"),
            "{out:?}"
        );
    });
}

/// libvirt receives strictly and, the moment the receive fails, kills the helper and reads its stderr.
/// The refusal line must already be there: the helper writes it before its socket closes. 100 tries
/// for each refusal: a bridge not granted, a bridge that does not exist, a broken policy, a missing
/// policy, a helper that is not setuid.
#[test]
fn libvirt_sees_the_refusal_line_every_time() {
    scenario("libvirt_sees_the_refusal_line_every_time", bins!(), POLICY, |s| {
        use std::io::Read;
        use std::process::Stdio;
        bridge("br0", None);
        bridge("br1", None);
        let plain = s.dir.join("plain-helper");
        std::fs::copy(&s.bridge, &plain).unwrap();
        vmpriv_tests::chmod(&plain, 0o755);
        let cases: [(&str, &std::path::Path, &str, Option<&str>); 5] = [
            ("not granted", &s.bridge, "br1", None),
            ("absent", &s.bridge, "nosuchbr", None),
            (
                "broken policy",
                &s.bridge,
                "br0",
                Some("allow user nobody swich br0\n"),
            ),
            ("missing policy", &s.bridge, "br0", Some("")),
            ("not setuid", &plain, "br0", None),
        ];
        for (what, helper, br, policy) in cases {
            match policy {
                Some("") => std::fs::remove_file("/etc/vmpriv/policy.conf").unwrap(),
                Some(p) => vmpriv_tests::write_policy(p),
                None => vmpriv_tests::write_policy(POLICY),
            }
            for round in 0..100 {
                let (ours, theirs) = vmpriv_tests::qemu_socketpair();
                let fd = theirs.as_raw_fd();
                let mut cmd = vmpriv_tests::nobody_command(helper);
                cmd.args([
                    "--use-vnet".to_owned(),
                    format!("--br={br}"),
                    format!("--fd={fd}"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
                vmpriv_client::keep_fd_across_exec(&mut cmd, fd);
                let mut child = cmd.spawn().unwrap();
                drop(theirs);
                let got = vmpriv_tests::recv_with_fds(&ours, 16);
                assert!(got.fds.is_empty(), "{what}: nothing sent");
                // The receive failed: kill at once, as libvirt does, then read what stderr holds.
                let _ = child.kill();
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                child.wait().unwrap();
                assert!(
                    err.starts_with("vmpriv-bridge-helper: ") && err.lines().count() == 1,
                    "{what}, round {round}: {err:?}"
                );
            }
        }
        vmpriv_tests::write_policy(POLICY);
        assert!(taps().is_empty());
    });
}
