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
            assert!(
                text(&o).contains("policy.conf:1: unknown word `swich`"),
                "{}",
                text(&o)
            );
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
            // Not root's: the helper's file check refuses it wherever the scenario's directory is (on
            // this host /var/tmp is writable by others too; the stock-kernel guest's is root's 0755).
            std::os::unix::fs::chown(&bad, Some(vmpriv_tests::NOBODY), Some(vmpriv_tests::NOBODY)).unwrap();
            let o = vmpriv(s, &["check-policy", bad.to_str().unwrap()]);
            assert_eq!(o.status.code(), Some(6));
            // Every problem in one run: the syntax error, then the file check.
            let err = String::from_utf8_lossy(&o.stderr);
            let lines: Vec<&str> = err.lines().collect();
            let [syntax, file] = lines.as_slice() else {
                panic!("two lines expected: {err}")
            };
            assert_eq!(
                *syntax,
                format!(
                    "{}:3: unknown word `usr`: expected `user` or `group`",
                    bad.display()
                )
            );
            assert!(
                file.starts_with(&format!("vmpriv: {}: ", bad.display()))
                    && file.ends_with(": the helper refuses this file"),
                "{err}"
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

/// The first line of `out` that is a JSON object.
fn json_line(out: &str) -> serde_json::Value {
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in: {out}"));
    serde_json::from_str(line).unwrap()
}

/// `vmpriv check-policy` refuses what the helper refuses (exit 6 from both): a group-writable file, a
/// group-writable directory above it, an include under a group-writable directory.
#[test]
fn check_policy_refuses_files_the_helper_refuses() {
    scenario(
        "check_policy_refuses_files_the_helper_refuses",
        bins!(),
        POLICY,
        |s| {
            let policy = std::path::Path::new("/etc/vmpriv/policy.conf");
            let o = vmpriv(s, &["check-policy"]);
            assert_eq!(o.status.code(), Some(0), "{}", text(&o));
            assert_eq!(vmpriv(s, &["whoami"]).status.code(), Some(0));
            // Each unsafe state: check-policy says exit 6 and why; the helper (through whoami) agrees.
            let refused = |why: &str| {
                let o = vmpriv(s, &["check-policy"]);
                assert_eq!(o.status.code(), Some(6), "{why}: {}", text(&o));
                assert!(text(&o).contains(why), "{why}: {}", text(&o));
                let o = vmpriv(s, &["check-policy", "--json"]);
                assert_eq!(o.status.code(), Some(6), "{why}: {}", text(&o));
                let report = json_line(&String::from_utf8_lossy(&o.stdout));
                assert_eq!(report["version"], 1);
                assert_eq!(report["ok"], false);
                assert!(report["error"].as_str().unwrap().contains(why), "{report}");
                let o = vmpriv(s, &["whoami"]);
                assert_eq!(o.status.code(), Some(6), "the helper too: {why}: {}", text(&o));
                assert!(text(&o).contains(why), "the helper too: {why}: {}", text(&o));
            };
            vmpriv_tests::chmod(policy, 0o664);
            refused("policy.conf: the file is writable by group or others");
            vmpriv_tests::chmod(policy, 0o644);
            vmpriv_tests::chmod(std::path::Path::new("/etc/vmpriv"), 0o775);
            refused("policy.conf: /etc/vmpriv is writable by group or others");
            vmpriv_tests::chmod(std::path::Path::new("/etc/vmpriv"), 0o755);
            nix::unistd::chown(policy, Some(vmpriv_tests::NOBODY.into()), None).unwrap();
            refused("policy.conf: the file is not owned by root");
            nix::unistd::chown(policy, Some(0.into()), None).unwrap();
            // An include under a group-writable directory.
            std::fs::create_dir("/etc/vmpriv/more").unwrap();
            vmpriv_tests::chmod(std::path::Path::new("/etc/vmpriv/more"), 0o775);
            std::fs::write("/etc/vmpriv/more/br.conf", "allow user nobody switch br1\n").unwrap();
            vmpriv_tests::chmod(std::path::Path::new("/etc/vmpriv/more/br.conf"), 0o644);
            vmpriv_tests::write_policy(&format!("{POLICY}include /etc/vmpriv/more/br.conf\n"));
            refused("/etc/vmpriv/more is writable by group or others");
            vmpriv_tests::chmod(std::path::Path::new("/etc/vmpriv/more"), 0o755);
            let o = vmpriv(s, &["check-policy"]);
            assert_eq!(o.status.code(), Some(0), "{}", text(&o));
            assert!(text(&o).contains("allow user nobody switch br1"), "{}", text(&o));
            // A policy that parses but lives in a world-writable directory (as /tmp is): refused.
            let drafts = s.dir.join("drafts");
            std::fs::create_dir(&drafts).unwrap();
            vmpriv_tests::chmod(&drafts, 0o1777);
            let draft = drafts.join("draft.conf");
            std::fs::write(&draft, POLICY).unwrap();
            vmpriv_tests::chmod(&draft, 0o644);
            let o = vmpriv(s, &["check-policy", draft.to_str().unwrap()]);
            assert_eq!(o.status.code(), Some(6), "{}", text(&o));
            // The first directory on the way that group or others may write (here /var/tmp; in a
            // guest whose /var/tmp is a 0755 tmpfs, `drafts`), read from the filesystem.
            let first_writable = {
                use std::os::unix::fs::PermissionsExt;
                let mut ancestors: Vec<_> = drafts.ancestors().collect();
                ancestors.reverse();
                ancestors
                    .into_iter()
                    .find(|d| std::fs::metadata(d).unwrap().permissions().mode() & 0o022 != 0)
                    .unwrap()
                    .to_owned()
            };
            assert!(
                text(&o).contains(&format!(
                    ": {} is writable by group or others",
                    first_writable.display()
                )),
                "{}",
                text(&o)
            );
            // A FIFO given by mistake is refused, not read (which would block).
            let fifo = s.dir.join("fifo.conf");
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
            let o = vmpriv(s, &["check-policy", fifo.to_str().unwrap()]);
            assert_eq!(o.status.code(), Some(6), "{}", text(&o));
            assert!(text(&o).contains("not a regular file"), "{}", text(&o));
        },
    );
}

/// Names that do not resolve through NSS get a warning (a typo in a `deny` denies nothing); names
/// that do, do not. The file is still valid (exit 0).
#[test]
fn check_policy_warns_about_names_that_do_not_resolve() {
    let policy = "allow user nobody switch br0\nallow user no-such-user-x switch br0\n\
                  deny group no-such-group-x switch br0\nquota group nogroup 3\n";
    scenario(
        "check_policy_warns_about_names_that_do_not_resolve",
        bins!(),
        policy,
        |s| {
            // What NSS says here, read with getent rather than assumed.
            let getent = |db: &str, name: &str| vmpriv_tests::run(&["getent", db, name]).status.success();
            assert!(getent("passwd", "nobody") && !getent("passwd", "no-such-user-x"));
            assert!(!getent("group", "no-such-group-x"));
            let nogroup = getent("group", "nogroup");
            let o = vmpriv(s, &["check-policy"]);
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            assert_eq!(o.status.code(), Some(0), "{}", text(&o));
            assert!(
                out.contains("# warning: user `no-such-user-x` does not resolve here"),
                "{out}"
            );
            assert!(
                out.contains("# warning: group `no-such-group-x` does not resolve here"),
                "{out}"
            );
            assert!(!out.contains("user `nobody`"), "{out}");
            assert_eq!(out.contains("group `nogroup`"), !nogroup, "{out}");
            let o = vmpriv(s, &["check-policy", "--json"]);
            assert_eq!(o.status.code(), Some(0), "{}", text(&o));
            let report = json_line(&String::from_utf8_lossy(&o.stdout));
            assert_eq!(report["version"], 1);
            assert_eq!(report["ok"], true);
            assert_eq!(report["error"], serde_json::Value::Null);
            assert_eq!(report["file"], "/etc/vmpriv/policy.conf");
            assert_eq!(report["unknown_users"], serde_json::json!(["no-such-user-x"]));
            let mut groups = vec!["no-such-group-x"];
            if !nogroup {
                groups.push("nogroup");
            }
            assert_eq!(report["unknown_groups"], serde_json::json!(groups));
            let lines: Vec<&str> = report["policy"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap())
                .collect();
            assert!(
                lines.contains(&"deny group no-such-group-x switch br0"),
                "{lines:?}"
            );
            assert!(lines.contains(&"quota group nogroup 3"), "{lines:?}");
            let unresolved = report["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|w| w.as_str().unwrap().contains("does not resolve"))
                .count();
            assert_eq!(unresolved, groups.len() + 1, "{report}");
        },
    );
}

/// `whoami --json`: the ids are the caller's real ones (`id`), in_use is the kernel's count of taps.
#[test]
fn whoami_json_reports_the_real_ids_and_use() {
    scenario(
        "whoami_json_reports_the_real_ids_and_use",
        bins!(),
        "quota user nobody 2\nallow user nobody switch br0\n",
        |s| {
            bridge("br0", None);
            let id = |flag: &str| {
                let o = vmpriv_tests::nobody_command("id").arg(flag).output().unwrap();
                assert!(o.status.success());
                String::from_utf8_lossy(&o.stdout).trim().to_owned()
            };
            let whoami = || {
                let o = vmpriv(s, &["whoami", "--json"]);
                assert_eq!(o.status.code(), Some(0), "{}", text(&o));
                json_line(&String::from_utf8_lossy(&o.stdout))
            };
            let report = whoami();
            assert_eq!(report["version"], 1);
            assert_eq!(report["uid"].as_u64().unwrap().to_string(), id("-u"));
            assert_eq!(report["user"], id("-un"));
            assert_eq!(report["quota"], 2);
            assert_eq!(report["in_use"], 0);
            assert_eq!(report["switches"], serde_json::json!(["br0"]));
            assert!(
                report["rules"]
                    .as_array()
                    .unwrap()
                    .contains(&serde_json::json!("allow user nobody switch br0")),
                "{report}"
            );
            // Hold a tap; in_use counts it as the kernel shows it.
            let mut holder = vmpriv_tests::nobody_command(&s.cli)
                .args(["tap", "--switch", "br0", "--", "sleep", "30"])
                .env("VMPRIV_HELPER", &s.helper)
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while taps().is_empty() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            assert_eq!(taps().len(), 1);
            assert_eq!(whoami()["in_use"], 1);
            holder.kill().unwrap();
            holder.wait().unwrap();
        },
    );
}

/// `tap --json`: version, queues, vnet_hdr and owner agree with what `ip -j -d link` shows.
#[test]
fn tap_json_report_agrees_with_the_kernel() {
    scenario(
        "tap_json_report_agrees_with_the_kernel",
        bins!(),
        "allow user nobody switch br0\n",
        |s| {
            bridge("br0", None);
            for (queues, vnet_hdr) in [("1", false), ("3", true)] {
                let mut args = vec!["tap", "--switch", "br0", "--queues", queues, "--json"];
                if vnet_hdr {
                    args.push("--vnet-hdr");
                }
                args.extend(["--", "sh", "-c", "ip -j -d link show dev $VMPRIV_TAP_NAME"]);
                let o = vmpriv(s, &args);
                let out = text(&o);
                assert!(o.status.success(), "{out}");
                let report = json_line(&out);
                let link: serde_json::Value =
                    serde_json::from_str(out.lines().find(|l| l.starts_with('[')).unwrap()).unwrap();
                let link = &link[0];
                let tun = &link["linkinfo"]["info_data"];
                assert_eq!(report["version"], 1);
                assert_eq!(report["ifname"], link["ifname"]);
                assert_eq!(report["ifindex"], link["ifindex"]);
                assert_eq!(report["mac"], link["address"]);
                assert_eq!(report["mtu"], link["mtu"]);
                assert_eq!(report["switch"], "br0");
                assert_eq!(link["master"], "br0");
                // A single-queue tap is not IFF_MULTI_QUEUE, and ip shows numqueues only for those.
                if tun["multi_queue"] == true {
                    assert_eq!(report["queues"], tun["numqueues"], "{out}");
                } else {
                    assert_eq!(report["queues"], 1, "{out}");
                }
                assert_eq!(report["queues"].as_u64().unwrap().to_string(), queues);
                assert_eq!(report["vnet_hdr"], tun["vnet_hdr"], "{out}");
                assert_eq!(report["vnet_hdr"], vnet_hdr);
                // ip shows the owner by name.
                let owner = u32::try_from(report["owner"].as_u64().unwrap()).unwrap();
                assert_eq!(owner, vmpriv_tests::NOBODY);
                let name = nix::unistd::User::from_uid(owner.into()).unwrap().unwrap().name;
                assert_eq!(tun["user"], name.as_str(), "{out}");
            }
            assert!(taps().is_empty());
        },
    );
}

/// `--json-fd N`: the report goes to fd N (a file, a pipe), not to stdout, and the command does not
/// inherit N; a bad N is a usage error (exit 2) before any tap exists.
#[test]
fn json_fd_writes_the_report_to_that_fd_only() {
    scenario(
        "json_fd_writes_the_report_to_that_fd_only",
        bins!(),
        "allow user nobody switch br0\n",
        |s| {
            bridge("br0", None);
            let out_dir = s.dir.join("out");
            std::fs::create_dir(&out_dir).unwrap();
            nix::unistd::chown(&out_dir, Some(vmpriv_tests::NOBODY.into()), None).unwrap();
            let report_file = out_dir.join("report.json");
            let shell = |script: &str| {
                vmpriv_tests::nobody_command("sh")
                    .args(["-c", script, "sh"])
                    .arg(&s.cli)
                    .arg(&report_file)
                    .env("VMPRIV_HELPER", &s.helper)
                    .output()
                    .unwrap()
            };
            let command = "echo NAME=$VMPRIV_TAP_NAME; \
                           if [ -e /proc/self/fd/7 ]; then echo FD7=inherited; else echo FD7=closed; fi";
            // To a file.
            let o = shell(&format!(
                "\"$1\" tap --switch br0 --queues 2 --json-fd 7 -- sh -c '{command}' 7>\"$2\""
            ));
            let out = text(&o);
            assert!(o.status.success(), "{out}");
            assert!(!out.contains('{'), "no report on stdout: {out}");
            assert!(out.contains("FD7=closed"), "{out}");
            let name = out.lines().find_map(|l| l.strip_prefix("NAME=")).unwrap();
            let report: serde_json::Value =
                serde_json::from_str(std::fs::read_to_string(&report_file).unwrap().trim()).unwrap();
            assert_eq!(report["ifname"], name);
            assert_eq!(report["queues"], 2);
            assert_eq!(report["fds"], serde_json::json!([3, 4]));
            // To a pipe (our stdout, as fd 7), the command's stdout to stderr: only the report arrives.
            let o = shell(&format!(
                "\"$1\" tap --switch br0 --json-fd 7 -- sh -c '{command}' 7>&1 1>&2"
            ));
            assert!(o.status.success(), "{}", text(&o));
            let stdout = String::from_utf8_lossy(&o.stdout);
            assert_eq!(stdout.lines().count(), 1, "{stdout}");
            let report = json_line(&stdout);
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert!(stderr.contains("FD7=closed"), "{stderr}");
            assert_eq!(
                report["ifname"].as_str(),
                stderr.lines().find_map(|l| l.strip_prefix("NAME="))
            );
            assert!(taps().is_empty());
            // Usage errors, and no tap made.
            for (script, why) in [
                ("\"$1\" tap --switch br0 --json-fd 9 -- true", "fd 9 is not open"),
                (
                    "\"$1\" tap --switch br0 --json-fd 7 -- true 7</dev/null",
                    "fd 7 is not open for writing",
                ),
                (
                    "\"$1\" tap --switch br0 --queues 2 --json-fd 4 -- true 4>/dev/null",
                    "tap fds as 3 to 4",
                ),
                ("\"$1\" tap --switch br0 --json-fd 1 -- true", "stdout"),
                (
                    "\"$1\" tap --switch br0 --json --json-fd 7 -- true 7>/dev/null",
                    "cannot be used with",
                ),
            ] {
                let o = shell(script);
                assert_eq!(o.status.code(), Some(2), "{script}: {}", text(&o));
                assert!(text(&o).contains(why), "{script}: {}", text(&o));
            }
            assert!(taps().is_empty());
        },
    );
}

/// Every `--help` names the helper's variable and search path, the policy file and the exit codes;
/// so does `vmpriv-helper --help`, alone or with `--version`.
#[test]
fn every_help_names_the_helper_the_policy_and_the_exit_codes() {
    let (helper, cli, bridge) = bins!();
    let must = |what: &str, out: &str| {
        for needle in [
            "VMPRIV_HELPER",
            "/usr/libexec/vmpriv/vmpriv-helper",
            vmpriv_client::INSTALLED_HELPER,
            vmpriv_client::SOCKET_PATH,
            vmpriv_protocol::POLICY_PATH,
            "Exit:",
        ] {
            assert!(out.contains(needle), "{what}: no {needle:?} in:\n{out}");
        }
    };
    let run = |prog: &str, args: &[&str]| {
        let o = std::process::Command::new(prog).args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    for args in [
        &["--help"][..],
        &["-h"],
        &["help"],
        &["tap", "--help"],
        &["tap", "-h"],
        &["check-policy", "--help"],
        &["whoami", "--help"],
        &["cleanup", "--help"],
        &["import-bridge-conf", "--help"],
        &["completions", "--help"],
        &["help", "tap"],
    ] {
        let out = run(cli, args);
        must(&format!("vmpriv {args:?}"), &out);
        for code in [
            "0 ok",
            "6 invalid request or policy error",
            "2 usage",
            "3 helper missing",
            "4 denied",
            "5 quota",
            "10 the command",
        ] {
            assert!(out.contains(code), "vmpriv {args:?}: no {code:?}");
        }
    }
    let version = concat!("vmpriv-helper ", env!("CARGO_PKG_VERSION"));
    for args in [
        &["--help"][..],
        &["-h"],
        &["--help", "--version"],
        &["--version", "--help"],
    ] {
        let out = run(helper, args);
        must(&format!("vmpriv-helper {args:?}"), &out);
        assert!(out.starts_with(version), "{args:?}: {out}");
        for code in ["0 done", "1 refused", "6 policy file"] {
            assert!(out.contains(code), "vmpriv-helper {args:?}: no {code:?}");
        }
    }
    assert_eq!(run(helper, &["--version"]).trim(), version);
    // Anything else with --help is still refused, as every unknown argument is.
    let o = std::process::Command::new(helper)
        .args(["--help", "--session"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // The bridge helper: its contract, the policy file, the exit codes; its own name and version.
    let version = concat!("vmpriv-bridge-helper ", env!("CARGO_PKG_VERSION"));
    for args in [&["--help"][..], &["-h"], &["--help", "--version"]] {
        let out = run(bridge, args);
        assert!(out.starts_with(version), "{args:?}: {out}");
        for needle in [
            "--use-vnet",
            "--br=BRIDGE",
            vmpriv_protocol::POLICY_PATH,
            "bridge_helper",
            "0 done",
            "1 refused",
            "6 policy file",
        ] {
            assert!(
                out.contains(needle),
                "vmpriv-bridge-helper {args:?}: no {needle:?}"
            );
        }
    }
    assert_eq!(run(bridge, &["--version"]).trim(), version);
    // The session helper points QEMU's contract to the bridge helper.
    let o = std::process::Command::new(helper)
        .args(["--use-vnet", "--br=br0", "--fd=3"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("vmpriv-bridge-helper"), "{}", text(&o));
}

/// The bridge-MAC warning: a bridge whose address is all zeros (no ports yet) is not fixed even when
/// marked set (setting 00:… again marks it); a chosen address is; and where /sys shows another
/// network namespace (no sysfs mounted for ours) the check says it cannot tell instead of staying
/// silent. Read against the kernel's own addr_assign_type.
#[test]
fn mac_warning_sees_zero_addresses_and_foreign_sysfs() {
    scenario(
        "mac_warning_sees_zero_addresses_and_foreign_sysfs",
        bins!(),
        POLICY,
        |s| {
            let warnings = || {
                let o = vmpriv(s, &["whoami", "--json"]);
                assert_eq!(o.status.code(), Some(0), "{}", text(&o));
                let report = json_line(&String::from_utf8_lossy(&o.stdout));
                report["warnings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| w.as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            };
            vmpriv_tests::sh(&["ip", "link", "add", "br0", "type", "bridge"]);
            // Under the sysfs the harness mounted for this namespace, /sys is the host's.
            vmpriv_tests::sh(&["umount", "/sys"]);
            let w = warnings();
            assert!(w.iter().any(|w| w.starts_with("cannot tell whether")), "{w:?}");
            vmpriv_tests::sh(&["mount", "-t", "sysfs", "sysfs", "/sys"]);
            let assign = || std::fs::read_to_string("/sys/class/net/br0/addr_assign_type").unwrap();
            // A bridge whose last port left has the all-zero address; "setting" it again passes
            // (the kernel skips an equal address) and marks it set.
            vmpriv_tests::sh(&["ip", "tuntap", "add", "t0", "mode", "tap"]);
            vmpriv_tests::sh(&["ip", "link", "set", "t0", "master", "br0"]);
            vmpriv_tests::sh(&["ip", "link", "del", "t0"]);
            let address = std::fs::read_to_string("/sys/class/net/br0/address").unwrap();
            assert_eq!(address.trim(), "00:00:00:00:00:00");
            // Newer kernels (6.18 here) skip an equal address before validating it, and mark it
            // set; older ones (Debian's 6.1) refuse the all-zero address. Either way: not fixed.
            let again = vmpriv_tests::run(&["ip", "link", "set", "br0", "address", "00:00:00:00:00:00"]);
            if again.status.success() {
                assert_eq!(assign().trim(), "3", "the kernel marks the zero address set");
            } else {
                assert_ne!(assign().trim(), "3", "a refused address is not marked set");
            }
            let w = warnings();
            assert!(
                w.iter().any(|w| w.starts_with("bridge br0 has no fixed MAC")),
                "{w:?}"
            );
            vmpriv_tests::sh(&["ip", "link", "set", "br0", "address", "02:00:5e:10:00:01"]);
            assert_eq!(assign().trim(), "3");
            assert_eq!(warnings(), Vec::<String>::new());
        },
    );
}

/// A reader that goes away early (`vmpriv check-policy | head -1`) ends the command by SIGPIPE, as it
/// ends any Unix tool: no panic, nothing on stderr.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    scenario("a_closed_stdout_ends_the_command_quietly", bins!(), POLICY, |s| {
        use std::os::unix::process::ExitStatusExt;
        let (read, write) = nix::unistd::pipe().unwrap();
        drop(read);
        let out = vmpriv_tests::nobody_command(&s.cli)
            .arg("check-policy")
            .stdout(std::process::Stdio::from(write))
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
        assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    });
}
