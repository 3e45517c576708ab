//! The `vmpriv` command and the demo's flow, as a user runs them: exit codes scripts rely on, the
//! exec contract (fds from 3, VMPRIV_TAP_* variables), and a real ARP + ping round trip through the tap.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Output;

use vmpriv_tests::{Scenario, addrs, bins, bridge, scenario, taps};

const POLICY: &str = "allow user nobody switch br0\nallow user nobody local\nquota user nobody 1\n";

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

/// The demo's flow: `vmpriv tap` hands the tap to a "VM" that ARPs and pings the host side through it.
#[test]
fn a_vm_pings_the_host_through_its_tap() {
    scenario("a_vm_pings_the_host_through_its_tap", bins!(), POLICY, |s| {
        let vm = env!("CARGO_BIN_EXE_vmpriv-demo");
        let o = vmpriv(
            s,
            &[
                "tap",
                "--vm",
                "1",
                "--nic",
                "0",
                "--local",
                "--json",
                "--",
                vm,
                "--vm-side",
            ],
        );
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        let json: serde_json::Value = out
            .lines()
            .find(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap())
            .unwrap();
        assert_eq!(json["addresses"][0]["host"], "100.64.1.2");
        assert_eq!(json["addresses"][0]["vm"], "100.64.1.3");
        assert_eq!(json["fds"], serde_json::json!([3]));
        assert!(json["mac"].as_str().unwrap().starts_with("fe:"));
        assert!(out.contains("ARP reply from 100.64.1.2"), "{out}");
        assert_eq!(out.matches("echo reply from 100.64.1.2").count(), 5, "{out}");
        assert!(out.contains("is gone"), "{out}");
        assert!(taps().is_empty());
    });
}

/// The exec contract: fds from 3 upward, and the variables, for a multi-queue tap.
#[test]
fn tap_execs_the_command_with_fds_from_3() {
    scenario(
        "tap_execs_the_command_with_fds_from_3",
        bins!(),
        "allow user nobody switch br0\n",
        |s| {
            bridge("br0", Some(1300));
            let script = "echo FDS=$VMPRIV_TAP_FDS NAME=$VMPRIV_TAP_NAME MAC=$VMPRIV_TAP_MAC; \
                      for f in 3 4 5; do readlink /proc/self/fd/$f; done; \
                      ip -j -d link show dev $VMPRIV_TAP_NAME";
            let o = vmpriv(
                s,
                &[
                    "tap",
                    "--switch",
                    "br0",
                    "--queues",
                    "3",
                    "--vnet-hdr",
                    "--",
                    "sh",
                    "-c",
                    script,
                ],
            );
            let out = text(&o);
            assert!(o.status.success(), "{out}");
            assert!(out.contains("FDS=3,4,5 NAME=vpfffe-0"), "{out}");
            assert_eq!(out.matches("/dev/net/tun").count(), 3, "{out}");
            let link: serde_json::Value =
                serde_json::from_str(out.lines().find(|l| l.starts_with('[')).unwrap()).unwrap();
            assert_eq!(link[0]["master"], "br0");
            assert_eq!(link[0]["mtu"], 1300);
            assert_eq!(link[0]["linkinfo"]["info_data"]["numqueues"], 3);
            assert!(
                out.contains(&format!("MAC={}", link[0]["address"].as_str().unwrap())),
                "{out}"
            );
            assert!(taps().is_empty(), "gone once the command exited");
        },
    );
}

/// Each failure: one line naming cause and fix, and a distinct exit code.
#[test]
fn failures_have_one_line_and_distinct_exit_codes() {
    scenario(
        "failures_have_one_line_and_distinct_exit_codes",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            bridge("br1", None);
            let code = |o: &Output| o.status.code().unwrap();
            let o = vmpriv(s, &["tap", "--switch", "br1", "--", "true"]);
            assert_eq!(code(&o), 4, "denied: {}", text(&o));
            assert!(text(&o).contains("vmpriv: denied"));
            let o = vmpriv(s, &["tap", "--switch", "secretbridge123X", "--", "true"]);
            assert_eq!(code(&o), 6, "invalid: {}", text(&o));
            assert!(text(&o).contains("longer than 15 bytes"));
            // Quota 1: hold one tap in a sleeping command, ask for a second.
            let mut holder = vmpriv_tests::nobody_command(&s.cli)
                .args(["tap", "--switch", "br0", "--", "sleep", "30"])
                .env("VMPRIV_HELPER", &s.helper)
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while taps().is_empty() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let o = vmpriv(s, &["tap", "--switch", "br0", "--", "true"]);
            assert_eq!(code(&o), 5, "quota: {}", text(&o));
            assert!(text(&o).contains("quota reached: all 1 of your quota's taps are in use"));
            holder.kill().unwrap();
            holder.wait().unwrap();
            // The helper missing, or not setuid.
            let o = vmpriv_tests::nobody_command(&s.cli)
                .args(["tap", "--", "true"])
                .env("VMPRIV_HELPER", s.dir.join("nonexistent"))
                .output()
                .unwrap();
            assert_eq!(code(&o), 3, "{}", text(&o));
            let plain = s.dir.join("plain-helper");
            std::fs::copy(&s.helper, &plain).unwrap();
            vmpriv_tests::chmod(&plain, 0o755);
            let o = vmpriv_tests::nobody_command(&s.cli)
                .args(["tap", "--", "true"])
                .env("VMPRIV_HELPER", &plain)
                .output()
                .unwrap();
            assert_eq!(code(&o), 3, "{}", text(&o));
            assert!(
                text(&o).contains("no CAP_NET_ADMIN: install the helper setuid root"),
                "{}",
                text(&o)
            );
            // Usage: a queue count out of range is refused by the command line itself.
            let o = vmpriv(s, &["tap", "--queues", "9", "--", "true"]);
            assert_eq!(code(&o), 2, "{}", text(&o));
            // A broken policy is a policy error, with the helper's line and ours.
            vmpriv_tests::write_policy("allow user nobody swich br0\n");
            let o = vmpriv(s, &["tap", "--switch", "br0", "--", "true"]);
            assert_eq!(code(&o), 6, "{}", text(&o));
            assert!(text(&o).contains("policy.conf:1: expected"), "{}", text(&o));
            assert!(!text(&o).contains("os error"), "{}", text(&o));
            vmpriv_tests::write_policy(POLICY);
            // Success says nothing on stderr: the audit trail is not the caller's.
            let o = vmpriv(s, &["tap", "--switch", "br0", "--", "true"]);
            assert_eq!(code(&o), 0, "{}", text(&o));
            assert!(o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
            assert!(taps().is_empty());
            assert!(addrs("br0").is_empty());
        },
    );
}

#[test]
fn whoami_and_check_policy() {
    scenario(
        "whoami_and_check_policy",
        bins!(),
        "quota user nobody 2\nallow user nobody switch br0\n",
        |s| {
            let o = vmpriv(s, &["whoami"]);
            let out = text(&o);
            assert!(o.status.success(), "{out}");
            assert!(
                out.contains("uid 65534 (nobody)") && out.contains("0 live of 2 allowed"),
                "{out}"
            );
            assert!(out.contains("allow user nobody switch br0"), "{out}");
            let o = vmpriv(s, &["check-policy"]);
            assert!(
                o.status.success() && text(&o).contains("quota user nobody 2"),
                "{}",
                text(&o)
            );
            let bad = s.dir.join("bad.conf");
            std::fs::write(&bad, "allow user nobody switch br0\n\ndeny usr x switch *\n").unwrap();
            vmpriv_tests::chmod(&bad, 0o644);
            let o = vmpriv(s, &["check-policy", bad.to_str().unwrap()]);
            assert_eq!(o.status.code(), Some(6));
            assert_eq!(
                String::from_utf8_lossy(&o.stderr).trim(),
                format!("{}:3: expected `user` or `group`", bad.display())
            );
        },
    );
}

/// `vmpriv import-bridge-conf`: qemu-bridge-helper's ACL as policy lines, include permissions made explicit.
#[test]
fn bridge_conf_translates_to_policy_lines() {
    scenario("bridge_conf_translates_to_policy_lines", bins!(), "", |s| {
        let inc = s.dir.join("kvm.conf");
        std::fs::write(&inc, "allow all\n").unwrap();
        vmpriv_tests::chmod(&inc, 0o640);
        nix::unistd::chown(&inc, Some(0.into()), Some(nix::unistd::Gid::from_raw(0))).unwrap();
        let conf = s.dir.join("bridge.conf");
        std::fs::write(
            &conf,
            format!("allow br0\ndeny virbr1 # no\ninclude {}\n", inc.display()),
        )
        .unwrap();
        let o = std::process::Command::new(&s.cli)
            .arg("import-bridge-conf")
            .arg(&conf)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let root_group = nix::unistd::Group::from_gid(0.into()).unwrap().unwrap().name;
        let lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        assert_eq!(
            lines,
            [
                "allow user * switch br0".to_owned(),
                "deny user * switch virbr1".to_owned(),
                format!("allow group {root_group} switch *"),
            ]
        );
        // The output is a valid policy.
        vmpriv_protocol::policy::parse_str("import", &String::from_utf8_lossy(&o.stdout)).unwrap();
        std::fs::write(&conf, "allow secretbridge123X\n").unwrap();
        let o = std::process::Command::new(&s.cli)
            .arg("import-bridge-conf")
            .arg(&conf)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    });
}
