//! Socket activation (issue 12, part 4): systemd's own `systemd-socket-activate --seqpacket --accept`
//! stands in for `vmpriv.socket` inside the scenario's namespaces (no running systemd is needed) and
//! starts `vmpriv-helper --socket-activated` as root for each connection. The callers connect as
//! themselves; the helper must take their identity from the connection, never its own, and a setuid
//! run must refuse the mode outright. Kernel state is read back with `ip -j`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmpriv_client::{ClientError, Helper, TapOptions};
use vmpriv_protocol::wire::{self, Request};
use vmpriv_tests::{
    NOBODY, Scenario, as_root, become_nobody, become_root, become_uid, bins, bridge, chmod, link, master,
    nobody_command, proc_status, require_tool, run, scenario, sh, taps,
};

/// A second user, named in the scenario's `/etc/passwd`, granted only through its supplementary
/// group `vmnet` (which only `SO_PEERGROUPS` can show the helper).
const MEMBER: u32 = 1001;
/// The gid of `vmnet`.
const VMNET: u32 = 2000;
/// A named user the policy grants nothing.
const STRANGER: u32 = 1002;

const POLICY: &str = "allow user nobody switch br0\nallow group vmnet switch br0\nquota user * 4\n";

/// `systemd-socket-activate` listening for us; killed (by its pid) and reaped on drop.
struct Activator {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Activator {
    /// As root: listens on `socket` (made 0666, as `SocketMode=0666`) and runs a root-owned 0755 copy
    /// of the helper under test, not setuid, as systemd runs `/usr/libexec/vmpriv/vmpriv-helper`.
    fn start(s: &Scenario, socket: &Path) -> Activator {
        Self::start_under(s, socket, &[])
    }

    /// [`Activator::start`] under `wrapper` (a command and its arguments, e.g. strace's).
    fn start_under(s: &Scenario, socket: &Path, wrapper: &[&OsStr]) -> Activator {
        require_tool(
            "socket activation",
            "systemd-socket-activate",
            "Debian package systemd",
        );
        let helper = s.dir.join("vmpriv-helper-root");
        std::fs::copy(&s.helper, &helper).unwrap();
        chmod(&helper, 0o755);
        let log = s.dir.join(format!(
            "activate.{}.log",
            socket.file_name().unwrap().to_string_lossy()
        ));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg("setpriv");
                c
            }
            None => Command::new("setpriv"),
        };
        let child = cmd
            .arg(unit_bounding_set())
            .args(["systemd-socket-activate", "--seqpacket", "--accept", "-l"])
            .arg(socket)
            .arg(&helper)
            .arg("--socket-activated")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            // Its own process group, which drop kills whole: under a wrapper (strace) the child is
            // the wrapper, and killing it alone left systemd-socket-activate running after the test.
            .process_group(0)
            .spawn()
            .expect("systemd-socket-activate runs");
        // Listening, not only bound: the path appears at bind(2), and a connect between that and
        // listen(2) is refused (seen on a loaded machine). /proc/net/unix flags a listener 00010000.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listening = || {
            let table = std::fs::read_to_string("/proc/net/unix").expect("/proc/net/unix is readable");
            table.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() == 8 && f[3] == "00010000" && Path::new(f[7]) == socket
            })
        };
        while !listening() {
            assert!(Instant::now() < deadline, "{} never listened", socket.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        chmod(socket, 0o666);
        Activator {
            child,
            socket: socket.to_owned(),
            log,
        }
    }

    /// The helpers it is running now (its children), read from `/proc` as root, failing loudly.
    fn helpers(&self) -> Vec<u32> {
        let me = self.child.id();
        as_root(|| {
            let mut pids = Vec::new();
            for entry in std::fs::read_dir("/proc").expect("/proc is readable") {
                let Ok(pid) = entry.unwrap().file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                // A process may exit between readdir and read: only that is not an error.
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
                let after = &stat[stat.rfind(')').expect("a stat line has (comm)") + 2..];
                let parent: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
                if parent == me {
                    pids.push(pid);
                }
            }
            pids
        })
    }

    /// Connections it has accepted so far (its "Connection from" log lines).
    fn connections(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .matches("Connection from")
            .count()
    }
}

impl Drop for Activator {
    /// As root (it is root's process, and a failed check may have left us another uid), so that a
    /// failing scenario ends instead of waiting for it.
    fn drop(&mut self) {
        as_root(|| {
            let group = nix::unistd::Pid::from_raw(-i32::try_from(self.child.id()).unwrap());
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.wait();
        });
    }
}

/// `setpriv --bounding-set=…` for `vmpriv@.service`'s `CapabilityBoundingSet=`: the activated helper
/// starts with what the unit gives it (root without, say, CAP_SYS_PTRACE or CAP_KILL), not with all
/// of root's capabilities, so a start-up step that needs more fails here as under systemd.
fn unit_bounding_set() -> String {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/vmpriv@.service");
    let unit = std::fs::read_to_string(unit).unwrap();
    let caps = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("vmpriv@.service sets CapabilityBoundingSet=");
    let caps: Vec<String> = caps
        .split_whitespace()
        .map(|c| format!("+{}", c.strip_prefix("CAP_").unwrap().to_lowercase()))
        .collect();
    format!("--bounding-set=-all,{}", caps.join(","))
}

/// Adds `vmtest` (uid 1001, in group `vmnet`) and `stranger` (uid 1002) to the scenario's `/etc`.
fn add_users() {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap()
        + &format!(
            "vmtest:x:{MEMBER}:{MEMBER}::/:/usr/sbin/nologin\nstranger:x:{STRANGER}:{STRANGER}::/:/usr/sbin/nologin\n"
        );
    std::fs::write("/etc/passwd", passwd).unwrap();
    let group = std::fs::read_to_string("/etc/group").unwrap()
        + &format!("vmtest:x:{MEMBER}:\nstranger:x:{STRANGER}:\nvmnet:x:{VMNET}:vmtest\n");
    std::fs::write("/etc/group", group).unwrap();
}

/// The `/proc/PID/status` value of `key`.
fn status_of(status: &[(String, String)], key: &str) -> String {
    status
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("/proc status has no {key}: {status:?}"))
        .1
        .clone()
}

/// CAP_NET_ADMIN (bit 12) and nothing else, as `/proc/PID/status` prints a capability set.
const NET_ADMIN_ONLY: &str = "0000000000001000";

#[test]
fn nobody_gets_a_tap_on_its_bridge_through_the_socket_as_itself() {
    scenario(
        "nobody_gets_a_tap_on_its_bridge_through_the_socket_as_itself",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            let act = Activator::start(s, &s.dir.join("vmpriv.sock"));
            become_nobody();
            let mut h = Helper::connect(&act.socket).expect("the activated helper answers");
            let tap = h.create_tap(&TapOptions::new().switch("br0")).unwrap();
            assert_eq!(
                h.status().unwrap().uid,
                NOBODY,
                "the helper saw the connecting uid"
            );
            // The helper serving us: after start-up, the caller's ids and CAP_NET_ADMIN only.
            let pids = act.helpers();
            assert_eq!(pids.len(), 1, "one helper per connection: {pids:?}");
            let st = as_root(|| proc_status(pids[0]));
            let ids = format!("{NOBODY}\t{NOBODY}\t{NOBODY}\t{NOBODY}");
            assert_eq!(status_of(&st, "Uid"), ids);
            assert_eq!(status_of(&st, "Gid"), ids);
            assert_eq!(status_of(&st, "Groups"), "");
            for set in ["CapEff", "CapPrm", "CapBnd"] {
                assert_eq!(status_of(&st, set), NET_ADMIN_ONLY, "{set}");
            }
            assert_eq!(status_of(&st, "CapInh"), "0000000000000000");
            assert_eq!(status_of(&st, "CapAmb"), "0000000000000000");
            assert_eq!(status_of(&st, "NoNewPrivs"), "1");
            become_root();
            // The kernel's view: the tap exists, on br0, named with nobody's mark (not root's).
            assert_eq!(taps(), ["vpfffe-0"]);
            assert_eq!(tap.name(), "vpfffe-0");
            assert_eq!(master("vpfffe-0").as_deref(), Some("br0"));
            let flags = link("vpfffe-0").unwrap()["flags"].clone();
            assert!(flags.as_array().unwrap().iter().any(|f| f == "UP"), "{flags}");
            drop(h);
            drop(tap);
            assert!(taps().is_empty(), "the tap went with its fd: {:?}", taps());
        },
    );
}

#[test]
fn callers_the_policy_does_not_grant_are_denied_root_included() {
    scenario(
        "callers_the_policy_does_not_grant_are_denied_root_included",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            add_users();
            let act = Activator::start(s, &s.dir.join("vmpriv.sock"));
            for uid in [STRANGER, 0] {
                become_uid(uid);
                let mut h = Helper::connect(&act.socket).expect("the activated helper answers");
                assert_eq!(h.status().unwrap().uid, uid);
                let got = h.create_tap(&TapOptions::new().switch("br0"));
                assert!(matches!(got, Err(ClientError::Denied)), "uid {uid}: {got:?}");
                become_root();
            }
            assert!(taps().is_empty(), "{:?}", taps());
            assert_eq!(act.connections(), 2);
        },
    );
}

/// `vmpriv tap --switch br0 --json -- sleep 30` as `uid` (with `groups`), through `VMPRIV_SOCKET`.
fn cli_tap(s: &Scenario, socket: &Path, uid: u32, groups: &str) -> Child {
    Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            if groups.is_empty() {
                "--clear-groups".to_owned()
            } else {
                format!("--groups={groups}")
            },
        ])
        .arg(&s.cli)
        .args(["tap", "--switch", "br0", "--json", "--", "sleep", "30"])
        .env_remove("VMPRIV_HELPER")
        .env("VMPRIV_SOCKET", socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn two_callers_at_once_each_get_a_tap_under_their_own_uid() {
    scenario(
        "two_callers_at_once_each_get_a_tap_under_their_own_uid",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            add_users();
            let act = Activator::start(s, &s.dir.join("vmpriv.sock"));
            // Both connect at once; vmtest is granted only through its supplementary group.
            let mut callers = [
                cli_tap(s, &act.socket, NOBODY, ""),
                cli_tap(s, &act.socket, MEMBER, &VMNET.to_string()),
            ];
            let mut names = Vec::new();
            for c in &mut callers {
                let mut line = String::new();
                BufReader::new(c.stdout.as_mut().unwrap())
                    .read_line(&mut line)
                    .unwrap();
                let report: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                    let _ = c.kill();
                    let out = c.wait_with_output_lossy();
                    panic!("no JSON report ({e}): {line:?} {out}")
                });
                names.push(report["ifname"].as_str().unwrap().to_owned());
            }
            assert_eq!(names, ["vpfffe-0", "vp3e9-0"]);
            let mut now = taps();
            now.sort();
            assert_eq!(now, ["vp3e9-0", "vpfffe-0"]);
            for t in &now {
                assert_eq!(master(t).as_deref(), Some("br0"), "{t}");
            }
            assert_eq!(act.connections(), 2);
            for c in &mut callers {
                c.kill().unwrap();
                c.wait().unwrap();
            }
            assert!(taps().is_empty(), "{:?}", taps());
        },
    );
}

trait LossyOutput {
    fn wait_with_output_lossy(&mut self) -> String;
}

impl LossyOutput for Child {
    fn wait_with_output_lossy(&mut self) -> String {
        use std::io::Read;
        let mut err = String::new();
        if let Some(e) = self.stderr.as_mut() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = self.wait();
        err
    }
}

#[test]
fn the_client_prefers_the_socket_at_run_vmpriv() {
    scenario(
        "the_client_prefers_the_socket_at_run_vmpriv",
        bins!(),
        POLICY,
        |s| {
            // /run of this mount namespace only.
            sh(&["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"]);
            std::fs::create_dir("/run/vmpriv").unwrap();
            chmod(Path::new("/run/vmpriv"), 0o755);
            let act = Activator::start(s, Path::new(vmpriv_client::SOCKET_PATH));
            // No VMPRIV_HELPER, no VMPRIV_SOCKET: the socket comes before the setuid helper that sits
            // beside the `vmpriv` copy.
            let out = nobody_command(&s.cli)
                .arg("whoami")
                .env_remove("VMPRIV_HELPER")
                .env_remove("VMPRIV_SOCKET")
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert!(String::from_utf8_lossy(&out.stdout).starts_with("uid 65534 (nobody)"));
            assert_eq!(act.connections(), 1, "whoami went through the socket");
            // VMPRIV_HELPER is an explicit choice: it wins over the socket.
            let out = nobody_command(&s.cli)
                .arg("whoami")
                .env("VMPRIV_HELPER", &s.helper)
                .output()
                .unwrap();
            assert!(out.status.success());
            assert_eq!(act.connections(), 1, "VMPRIV_HELPER bypassed the socket");
        },
    );
}

/// An activated helper that cannot start (here the policy has a typo) ends the connection before the
/// handshake. The caller is told that, and where the reason went (the journal: here the activator's
/// log, which is the helper's stderr); the `vmpriv` command says it in one line and exits 9.
#[test]
fn an_activated_helper_that_refuses_to_start_points_to_the_journal() {
    scenario(
        "an_activated_helper_that_refuses_to_start_points_to_the_journal",
        bins!(),
        "allow user nobody swtich br0\n",
        |s| {
            bridge("br0", None);
            let act = Activator::start(s, &s.dir.join("vmpriv.sock"));
            become_nobody();
            let Err(e) = Helper::connect(&act.socket) else {
                panic!("a helper with a broken policy answered");
            };
            assert!(
                matches!(&e, ClientError::ActivatedRefused { socket } if *socket == act.socket),
                "{e:?}"
            );
            let text = e.to_string();
            assert!(
                text.contains("journalctl -u 'vmpriv@*'") && text.contains("vmpriv check-policy"),
                "{text}"
            );
            become_root();
            let out = nobody_command(&s.cli)
                .arg("whoami")
                .env_remove("VMPRIV_HELPER")
                .env("VMPRIV_SOCKET", &act.socket)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(9), "{stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(stderr.contains("journalctl"), "{stderr}");
            let log = std::fs::read_to_string(&act.log).unwrap();
            assert!(
                log.contains("policy error") && log.contains("/etc/vmpriv/policy.conf:1:"),
                "the helper's reason reached its log: {log}"
            );
            assert_eq!(act.connections(), 2);
            assert!(taps().is_empty());
        },
    );
}

#[test]
fn a_session_past_its_tun_fds_reconnects_to_the_socket() {
    scenario(
        "a_session_past_its_tun_fds_reconnects_to_the_socket",
        bins!(),
        "allow user nobody switch br0\nquota user nobody 100\n",
        |s| {
            bridge("br0", None);
            // A 0600 device: the caller cannot open it, so each connection works from the fds its
            // helper opened as root (quota + 7, at most 64).
            vmpriv_tests::tun_device_mode(0o600);
            let act = Activator::start(s, &s.dir.join("vmpriv.sock"));
            become_nobody();
            let mut h = Helper::connect(&act.socket).unwrap();
            let held: Vec<_> = (0..70)
                .map(|i| {
                    h.create_tap(&TapOptions::new().switch("br0"))
                        .unwrap_or_else(|e| panic!("tap {i}: {e}"))
                })
                .collect();
            drop(h);
            become_root();
            assert_eq!(taps().len(), 70);
            assert_eq!(act.connections(), 2, "one reconnection past 64 tun fds");
            drop(held);
        },
    );
}

/// A connected `SOCK_SEQPACKET` pair, both ends close-on-exec here; the peer of each is this process.
fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap()
}

/// Whether the other end of `sock` closed without a reply: EOF, or ECONNRESET (closed with our
/// request unread).
fn nothing_served(sock: &OwnedFd) -> bool {
    let mut buf = [0u8; 4096];
    match nix::sys::socket::recv(sock.as_raw_fd(), &mut buf, nix::sys::socket::MsgFlags::empty()) {
        Ok(0) | Err(nix::errno::Errno::ECONNRESET) => true,
        Ok(n) => panic!("the helper replied {n} bytes"),
        Err(e) => panic!("recv: {e}"),
    }
}

/// Runs `helper --socket-activated` through `sh` (as `setpriv_ids`, or root if empty) with fd 3 a
/// dup of `fd` and the `env` given; returns its output.
fn run_activated(helper: &Path, fd: i32, env: &str, setpriv_ids: &[String]) -> std::process::Output {
    let script = format!("exec 3<&{fd}; {env} exec {} --socket-activated", helper.display());
    let mut cmd = if setpriv_ids.is_empty() {
        Command::new("sh")
    } else {
        let mut c = Command::new("setpriv");
        c.args(setpriv_ids).arg("sh");
        c
    };
    cmd.arg("-c").arg(script);
    vmpriv_client::keep_fd_across_exec(&mut cmd, fd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A helper that wrongly served would wait for the end of a session that never ends: fail, not hang.
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the helper is still running: it served instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The attack: uid 65534 runs the setuid helper (or a file-capability copy) with systemd's marks and
/// fd 3 a socket whose peer is root's process. SO_PEERCRED would name root, whom the policy grants a
/// bridge; the helper must refuse before it looks.
#[test]
fn setuid_helper_refuses_socket_activation() {
    scenario(
        "setuid_helper_refuses_socket_activation",
        bins!(),
        "allow user root switch br0\nallow user nobody switch br0\nquota user * 4\n",
        |s| {
            bridge("br0", None);
            let fcap = s.dir.join("vmpriv-helper-fcap");
            std::fs::copy(&s.helper, &fcap).unwrap();
            chmod(&fcap, 0o755);
            sh(&["setcap", "cap_net_admin+ep", fcap.to_str().unwrap()]);
            let ids = [
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
                "--clear-groups".to_owned(),
            ];
            for helper in [&s.helper, &fcap] {
                let (ours, victims) = seqpacket_pair();
                // A Hello waits on the socket, so that a helper that served would answer it.
                let hello = wire::encode(&Request::Hello).unwrap();
                nix::sys::socket::send(ours.as_raw_fd(), &hello, nix::sys::socket::MsgFlags::MSG_NOSIGNAL)
                    .unwrap();
                let out = run_activated(helper, victims.as_raw_fd(), "LISTEN_PID=$$ LISTEN_FDS=1", &ids);
                drop(victims);
                let stderr = String::from_utf8_lossy(&out.stderr);
                let what = helper.display();
                assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
                assert!(
                    stderr.contains("only root may start --socket-activated"),
                    "{what}: {stderr}"
                );
                assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
                assert!(nothing_served(&ours), "{what}: no reply was sent");
                assert!(taps().is_empty(), "{what}: {:?}", taps());
            }
        },
    );
}

/// Root-started, the helper still wants systemd's marks (LISTEN_PID is us, LISTEN_FDS=1) and a peer
/// with credentials: an unconnected socket's SO_PEERCRED reads pid 0, uid -1, which must not become
/// a caller.
#[test]
fn activated_helper_refuses_without_systemds_marks_or_a_peer() {
    scenario(
        "activated_helper_refuses_without_systemds_marks_or_a_peer",
        bins!(),
        "allow user nobody switch br0\nquota user * 4\n",
        |s| {
            bridge("br0", None);
            let (_ours, theirs) = seqpacket_pair();
            for env in [
                "LISTEN_FDS=1",
                "LISTEN_PID=1 LISTEN_FDS=1",
                "LISTEN_PID=$$ LISTEN_FDS=2",
            ] {
                let out = run_activated(&s.helper, theirs.as_raw_fd(), env, &[]);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(1), "{env}: {stderr}");
                assert!(stderr.contains("LISTEN_PID"), "{env}: {stderr}");
            }
            let lone = nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::SeqPacket,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
                None,
            )
            .unwrap();
            let out = run_activated(&s.helper, lone.as_raw_fd(), "LISTEN_PID=$$ LISTEN_FDS=1", &[]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(stderr.contains("no peer credentials"), "{stderr}");
            assert!(taps().is_empty(), "{:?}", taps());
        },
    );
}

#[test]
fn units_pass_systemd_analyze_verify() {
    scenario("units_pass_systemd_analyze_verify", bins!(), "", |s| {
        require_tool(
            "units_pass_systemd_analyze_verify",
            "systemd-analyze",
            "Debian package systemd",
        );
        // verify checks that ExecStart's binary exists: put one there, in this mount namespace only.
        sh(&["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/usr/libexec"]);
        std::fs::create_dir("/usr/libexec/vmpriv").unwrap();
        std::fs::copy(&s.helper, "/usr/libexec/vmpriv/vmpriv-helper").unwrap();
        chmod(Path::new("/usr/libexec/vmpriv/vmpriv-helper"), 0o755);
        let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd");
        let out = run(&[
            "systemd-analyze".as_ref(),
            "verify".as_ref(),
            units.join("vmpriv.socket").as_os_str(),
            units.join("vmpriv@.service").as_os_str(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "systemd-analyze verify: {stderr}");
        assert!(
            stderr.trim().is_empty(),
            "systemd-analyze verify warned: {stderr}"
        );
        let unit = std::fs::read_to_string(units.join("vmpriv@.service")).unwrap();
        assert!(unit.contains("\nExecStart=/usr/libexec/vmpriv/vmpriv-helper --socket-activated\n"));
    });
}

/// `vmpriv tap --switch br0 --json -- true` through `socket`, run by `cmd`: a prefix that sets the
/// user (`setpriv … env`, `unshare … --`).
fn cli_tap_once(s: &Scenario, socket: &Path, mut cmd: Command) -> std::process::Output {
    cmd.arg(&s.cli)
        .args(["tap", "--switch", "br0", "--json", "--", "true"])
        .env_remove("VMPRIV_HELPER")
        .env("VMPRIV_SOCKET", socket)
        .output()
        .unwrap()
}

/// Asserts that `out` is a refusal at start-up (exit 9, no tap handed over) and that the helper
/// logged why.
/// `nth`: how many such refusals the activator's log must hold now (each call adds one line).
fn refused_for_its_user_namespace(act: &Activator, out: &std::process::Output, what: &str, nth: usize) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{what}: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{what}: it got a tap: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(taps().is_empty(), "{what}: {:?}", taps());
    let log = std::fs::read_to_string(&act.log).unwrap();
    assert_eq!(
        log.matches("connected from a user namespace of its own").count(),
        nth,
        "{what}: the helper's log says why, once per refusal: {log}"
    );
}

/// Unprivileged user namespaces must work here: the attack needs them. Fails naming the knobs.
fn unprivileged_user_namespaces_work() {
    let out = nobody_command("unshare")
        .args(["--user", "--map-root-user", "true"])
        .output()
        .unwrap();
    let knob = |p: &str| std::fs::read_to_string(p).map_or_else(|e| e.to_string(), |v| v.trim().to_owned());
    assert!(
        out.status.success(),
        "uid {NOBODY} cannot make a user namespace here ({}; user.max_user_namespaces={}, \
         kernel.unprivileged_userns_clone={}, kernel.apparmor_restrict_unprivileged_userns={}): this \
         test needs one to show the helper refusing it",
        String::from_utf8_lossy(&out.stderr).trim(),
        knob("/proc/sys/user/max_user_namespaces"),
        knob("/proc/sys/kernel/unprivileged_userns_clone"),
        knob("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
    );
}

/// Issue 19: a caller in a user namespace of its own (here nobody's, as any user can make one) is
/// refused before anything else; the same caller outside it gets its tap.
#[test]
fn a_peer_in_a_user_namespace_of_its_own_is_refused() {
    scenario(
        "a_peer_in_a_user_namespace_of_its_own_is_refused",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            unprivileged_user_namespaces_work();
            let act = Activator::start(s, &s.dir.join("vmpriv.sock"));
            let mut cmd = nobody_command("unshare");
            cmd.args(["--user", "--map-root-user", "--"]);
            let out = cli_tap_once(s, &act.socket, cmd);
            refused_for_its_user_namespace(&act, &out, "nobody in its own user namespace", 1);
            // The same user from the host's user namespace.
            let out = cli_tap_once(s, &act.socket, nobody_command("env"));
            let report: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("no JSON report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
            assert_eq!(report["ifname"], "vpfffe-0");
            assert!(out.status.success());
            assert_eq!(act.connections(), 2);
        },
    );
}

/// Issue 19, the attack: `vmtest` is denied br0 through its group, and has subordinate ids. Root maps
/// them into a user namespace of vmtest's, as setuid `newuidmap`/`newgidmap` do (`0 1001 1`,
/// `1 100000 65536`, setgroups allowed); there vmtest drops its groups (`deny group` would no longer
/// match `allow user *`), or becomes subordinate uid 100000 (a `user *` quota of its own). Both are
/// refused; from the host's namespace vmtest is still denied and nobody still served.
#[test]
fn a_user_namespace_cannot_drop_groups_or_use_subordinate_uids() {
    scenario(
        "a_user_namespace_cannot_drop_groups_or_use_subordinate_uids",
        bins!(),
        "allow user * switch br0\ndeny group vmnet switch br0\nquota user * 4\n",
        |s| {
            bridge("br0", None);
            add_users();
            unprivileged_user_namespaces_work();
            let act = Activator::start(s, &s.dir.join("vmpriv.sock"));
            let as_member = || {
                let mut c = Command::new("setpriv");
                c.args([
                    format!("--reuid={MEMBER}"),
                    format!("--regid={MEMBER}"),
                    format!("--groups={VMNET}"),
                ]);
                c
            };
            let out = cli_tap_once(s, &act.socket, as_member());
            assert_eq!(
                out.status.code(),
                Some(4),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            for (nth, inner, what) in [
                (1, &["--clear-groups"][..], "vmtest without its groups"),
                (
                    2,
                    &["--reuid=1", "--regid=1", "--clear-groups"][..],
                    "subordinate uid 100000",
                ),
            ] {
                let out = in_mapped_user_namespace(s, &act.socket, as_member(), inner);
                refused_for_its_user_namespace(&act, &out, what, nth);
            }
            let out = cli_tap_once(s, &act.socket, nobody_command("env"));
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(act.connections(), 4);
        },
    );
}

/// `outer` (a `setpriv` for the user) runs `unshare --user`, root writes the namespace's maps as
/// setuid newuidmap/newgidmap would for subordinate ids 100000-165535, then `setpriv INNER vmpriv tap`
/// runs in it (as its root, or the inner uid `INNER` names).
fn in_mapped_user_namespace(
    s: &Scenario,
    socket: &Path,
    mut outer: Command,
    inner: &[&str],
) -> std::process::Output {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let ours = std::fs::metadata("/proc/self/ns/user").unwrap().ino();
    let mut child = outer
        .args([
            "unshare",
            "--user",
            "--",
            "sh",
            "-c",
            "read go && exec \"$@\"",
            "sh",
            "setpriv",
        ])
        .args(inner)
        .arg(&s.cli)
        .args(["tap", "--switch", "br0", "--json", "--", "true"])
        .env_remove("VMPRIV_HELPER")
        .env("VMPRIV_SOCKET", socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::metadata(format!("/proc/{pid}/ns/user")).is_ok_and(|m| m.ino() != ours) {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "unshare --user did not make a namespace: {}",
                child.wait_with_output_lossy()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (uid, sub) = (MEMBER, 100_000);
    let map = format!("0 {uid} 1\n1 {sub} 65536\n");
    std::fs::write(format!("/proc/{pid}/uid_map"), &map).unwrap();
    std::fs::write(format!("/proc/{pid}/gid_map"), &map).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    child.wait_with_output().unwrap()
}

/// Kernels before 6.5 (the stock-kernel matrix's 6.1 among them) have no `SO_PEERPIDFD`: there the
/// helper takes a pidfd from `SO_PEERCRED`'s pid. strace makes this kernel answer `ENOPROTOOPT` to
/// the helper's third getsockopt, which is `SO_PEERPIDFD` (after `SO_TYPE` and `SO_PEERCRED`; the
/// trace is checked): a peer in a user namespace of its own is refused there too, a plain one served.
#[test]
fn without_so_peerpidfd_a_user_namespace_is_refused_too() {
    scenario(
        "without_so_peerpidfd_a_user_namespace_is_refused_too",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            require_tool("the pidfd fallback", "strace", "Debian package strace");
            unprivileged_user_namespaces_work();
            let trace = s.dir.join("strace.out");
            let wrapper: Vec<&OsStr> = [
                "strace",
                "-f",
                "-qq",
                "-e",
                "trace=getsockopt,pidfd_open",
                "-e",
                "inject=getsockopt:error=ENOPROTOOPT:when=3",
                "-o",
            ]
            .iter()
            .map(OsStr::new)
            .chain([trace.as_os_str()])
            .collect();
            let act = Activator::start_under(s, &s.dir.join("vmpriv.sock"), &wrapper);
            let mut cmd = nobody_command("unshare");
            cmd.args(["--user", "--map-root-user", "--"]);
            let out = cli_tap_once(s, &act.socket, cmd);
            refused_for_its_user_namespace(&act, &out, "nobody in its own user namespace", 1);
            let out = cli_tap_once(s, &act.socket, nobody_command("env"));
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            drop(act);
            let trace = std::fs::read_to_string(&trace).unwrap();
            let lines = |pred: &dyn Fn(&str) -> bool| trace.lines().filter(|l| pred(l)).count();
            assert_eq!(lines(&|l| l.contains("(INJECTED)")), 2, "{trace}");
            let peerpidfd = |l: &str| l.contains("SO_PEERPIDFD") || l.contains(" 0x4d ");
            assert_eq!(
                lines(&|l| l.contains("(INJECTED)") && peerpidfd(l)),
                2,
                "only SO_PEERPIDFD failed: {trace}"
            );
            assert_eq!(
                lines(&|l| l.contains("pidfd_open(") && !l.contains("= -1")),
                2,
                "{trace}"
            );
        },
    );
}

/// `SO_PEERGROUPS` of a caller in 20,000 supplementary groups (a process may have 65,536): the
/// activated helper reads them all, so the grant through the last one, vmnet, counts.
#[test]
fn a_caller_in_twenty_thousand_groups_has_them_all_read() {
    scenario(
        "a_caller_in_twenty_thousand_groups_has_them_all_read",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            add_users();
            let act = Activator::start(s, &s.dir.join("vmpriv.sock"));
            let groups: Vec<String> = (1..20_000)
                .map(|g| g.to_string())
                .chain([VMNET.to_string()])
                .collect();
            let out = Command::new("setpriv")
                .args([
                    format!("--reuid={MEMBER}"),
                    format!("--regid={MEMBER}"),
                    format!("--groups={}", groups.join(",")),
                ])
                .arg(&s.cli)
                .args(["tap", "--switch", "br0", "--json", "--", "true"])
                .env_remove("VMPRIV_HELPER")
                .env("VMPRIV_SOCKET", &act.socket)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert!(String::from_utf8_lossy(&out.stdout).contains("\"switch\":\"br0\""));
        },
    );
}
