//! The hostile-caller battery: malformed frames, wrong fd counts and kinds, foreign control messages,
//! tiny rlimits, blocked and ignored signals, SIGKILL mid-request, a second user on the same bridge.
//! For every case: the helper refuses or ends the session cleanly, exits without a signal, leaks no fd,
//! leaves nothing behind, and a new session right after works.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command};

use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixCredentials, sendmsg, setsockopt,
    socketpair, sockopt,
};
use vmpriv_client::{ClientError, Helper, TapOptions};
use vmpriv_protocol::name::NameError;
use vmpriv_protocol::wire::{self, FdIndex, IfConfig, MAX_FRAME, Request, Response, VERSION};
use vmpriv_protocol::{Error, Invalid};
use vmpriv_tests::{
    Scenario, all_addrs, as_nobody, become_nobody, bins, bridge, fd_count, master, scenario, taps,
};

const POLICY: &str = "allow user * switch br0\ndeny user * switch br1\nallow user * local\nquota user * 4\n";

fn helper(s: &Scenario) -> Helper {
    Helper::spawn_at(&s.helper).expect("helper starts")
}

/// The session still answers, then ends with exit 0 and no signal; a new session works.
fn still_healthy(s: &Scenario, mut h: Helper) {
    assert!(h.status().is_ok(), "the session goes on");
    let status = h.close().unwrap();
    assert!(status.success() && status.signal().is_none(), "{status:?}");
    fresh_session_works(s);
}

fn ended_cleanly(s: &Scenario, h: Helper) {
    let status = h.close().unwrap();
    assert!(
        status.success() && status.signal().is_none(),
        "ended cleanly: {status:?}"
    );
    fresh_session_works(s);
}

fn fresh_session_works(s: &Scenario) {
    let mut h = helper(s);
    let tap = h.create_tap(&TapOptions::new().switch("br0")).unwrap();
    assert_eq!(master(tap.name()).as_deref(), Some("br0"));
    // The helper closes its copy of the fd just after the reply; once it has exited, ours is the last.
    drop(h);
    drop(tap);
    assert!(taps().is_empty());
}

fn reply(bytes: &[u8]) -> Response {
    wire::decode::<Response>(bytes).unwrap()
}

/// The helper started on one end of a `SOCK_SEQPACKET` pair as `Helper::spawn_at` does, but without
/// the client's `Hello`; `prepare` runs on the helper's end first (a socket option its caller chose).
fn raw_session(s: &Scenario, prepare: impl FnOnce(&OwnedFd)) -> (Child, OwnedFd) {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    prepare(&theirs);
    let mut cmd = Command::new(&s.helper);
    cmd.arg("--session").arg(format!("--fd={}", theirs.as_raw_fd()));
    vmpriv_client::keep_fd_across_exec(&mut cmd, theirs.as_raw_fd());
    let child = cmd.spawn().unwrap();
    drop(theirs);
    (child, ours)
}

/// Sends one datagram with `fds` on a raw session and returns the reply's bytes.
fn exchange(sock: &OwnedFd, frame: &[u8], fds: &[RawFd]) -> Vec<u8> {
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(frame)],
        cmsgs,
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    let mut buf = vec![0u8; MAX_FRAME];
    let n = nix::sys::socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    assert!(n > 0, "the helper ended without a reply");
    buf.truncate(n);
    buf
}

/// After its reply the helper ends the raw session: EOF, then exit 0 without a signal.
fn ended_without_more(mut child: Child, sock: &OwnedFd) {
    let mut buf = [0u8; 64];
    let n = nix::sys::socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    assert_eq!(n, 0, "the session ended after its one reply");
    let status = child.wait().unwrap();
    assert!(
        status.success() && status.signal().is_none(),
        "ended cleanly: {status:?}"
    );
}

/// The frame size bound, over the wire: a request of exactly `MAX_FRAME` bytes (`SwitchExists` with
/// a 2,044-byte name) is one frame, read whole (its name is what is refused) and the session goes on; the same frame with one byte
/// more is refused as malformed and ends the session, although its first `MAX_FRAME` bytes alone are
/// that valid request.
#[test]
fn a_frame_of_max_frame_bytes_is_read_and_one_byte_more_is_not() {
    scenario(
        "a_frame_of_max_frame_bytes_is_read_and_one_byte_more_is_not",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            become_nobody();
            let exactly = wire::encode(&Request::SwitchExists {
                switch: "x".repeat(MAX_FRAME - 4),
            })
            .unwrap();
            assert_eq!(exactly.len(), MAX_FRAME);
            let mut h = helper(s);
            let (bytes, _) = h.call_raw(&exactly, &[]).unwrap();
            assert_eq!(
                reply(&bytes),
                Response::Error(Error::Invalid(Invalid::SwitchName(NameError::TooLong))),
                "read whole: the name is what is wrong"
            );
            assert_eq!(h.switch_exists("br0").unwrap().name, "br0", "the session goes on");
            let mut one_more = exactly;
            one_more.push(0);
            let (bytes, _) = h.call_raw(&one_more, &[]).unwrap();
            assert_eq!(reply(&bytes), Response::Error(Error::Invalid(Invalid::Malformed)));
            ended_cleanly(s, h);
        },
    );
}

#[test]
fn malformed_frames_end_the_session_after_a_reply() {
    scenario(
        "malformed_frames_end_the_session_after_a_reply",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            become_nobody();
            let hello = wire::encode(&Request::Hello).unwrap();
            let create = wire::encode(&Request::CreateTap {
                queues: 1,
                vnet_hdr: false,
                config: IfConfig::default(),
            })
            .unwrap();
            let mut trailing = hello.clone();
            trailing.push(0);
            let mut wrong_version = hello.clone();
            wrong_version[0] = VERSION + 1;
            let mut cases: Vec<(&str, Vec<u8>, Response)> = vec![
                (
                    "truncated",
                    create[..create.len() - 2].to_vec(),
                    Response::Error(Error::Invalid(Invalid::Malformed)),
                ),
                (
                    "trailing byte",
                    trailing,
                    Response::Error(Error::Invalid(Invalid::Malformed)),
                ),
                (
                    "unknown variant",
                    vec![VERSION, 0x7f],
                    Response::Error(Error::Invalid(Invalid::Malformed)),
                ),
                (
                    "oversized",
                    vec![VERSION; MAX_FRAME + 100],
                    Response::Error(Error::Invalid(Invalid::Malformed)),
                ),
                (
                    "wrong version",
                    wrong_version,
                    Response::Error(Error::Version { supported: VERSION }),
                ),
            ];
            // Random frames: deterministic bytes from a small LCG, never the valid encoding of anything.
            let mut x: u32 = 12345;
            for i in 0..8 {
                let frame: Vec<u8> = (0..(7 + i * 13))
                    .map(|_| {
                        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        (x >> 16).to_le_bytes()[0]
                    })
                    .collect();
                let mut frame = frame;
                frame[0] = VERSION;
                if wire::decode::<Request>(&frame).is_err() {
                    cases.push((
                        "random",
                        frame,
                        Response::Error(Error::Invalid(Invalid::Malformed)),
                    ));
                }
            }
            for (what, frame, want) in cases {
                let mut h = helper(s);
                let (bytes, fds) = h.call_raw(&frame, &[]).unwrap();
                assert_eq!(reply(&bytes), want, "{what}");
                assert!(fds.is_empty());
                ended_cleanly(s, h);
            }
            // A request before Hello (a session without the client's handshake): refused with
            // NoHello, no tap made, and the session ends.
            let (child, sock) = raw_session(s, |_| {});
            let bytes = exchange(&sock, &create, &[]);
            assert_eq!(reply(&bytes), Response::Error(Error::Invalid(Invalid::NoHello)));
            ended_without_more(child, &sock);
            assert!(taps().is_empty());
            fresh_session_works(s);
        },
    );
}

#[test]
fn wrong_fd_counts_are_refused_and_closed() {
    scenario("wrong_fd_counts_are_refused_and_closed", bins!(), POLICY, |s| {
        bridge("br0", None);
        become_nobody();
        let mut h = helper(s);
        let baseline = fd_count(h.pid());
        // stdio, the session socket, netlink, the tun pool: a count that read nothing would be 0.
        assert!(baseline > 4, "the helper's fds were read: {baseline}");
        let file = std::fs::File::open("/dev/null").unwrap();
        let set_up = wire::encode(&Request::Configure {
            tap: FdIndex(0),
            config: IfConfig {
                up: Some(true),
                ..IfConfig::default()
            },
        })
        .unwrap();
        let status = wire::encode(&Request::Status).unwrap();
        for (frame, n, expected) in [
            (&set_up, 0usize, 1u8),
            (&set_up, 2, 1),
            (&set_up, 250, 1),
            (&status, 1, 0),
            (&status, 3, 0),
        ] {
            let fds: Vec<BorrowedFd<'_>> = std::iter::repeat_n(file.as_fd(), n).collect();
            let (bytes, _) = h.call_raw(frame, &fds).unwrap();
            let got = u8::try_from(n).unwrap();
            assert_eq!(
                reply(&bytes),
                Response::Error(Error::Invalid(Invalid::FdCount { expected, got }))
            );
            assert_eq!(fd_count(h.pid()), baseline, "every received fd closed ({n} sent)");
        }
        still_healthy(s, h);
    });
}

#[test]
fn foreign_control_messages_and_fd_kinds_leak_nothing() {
    scenario(
        "foreign_control_messages_and_fd_kinds_leak_nothing",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            let tun_mode = vmpriv_tests::open_tun("tun0", libc::IFF_TUN);
            become_nobody();
            let frame = wire::encode(&Request::Configure {
                tap: FdIndex(0),
                config: IfConfig {
                    up: Some(true),
                    ..IfConfig::default()
                },
            })
            .unwrap();
            let raw = [tun_mode.as_raw_fd()];
            // A tun fd of the wrong kind (IFF_TUN), with SCM_CREDENTIALS next to it: the kernel drops
            // credentials the receiver did not ask for (no SO_PASSCRED), so the helper sees a plain
            // request and refuses the fd; the session goes on with every received fd closed.
            let h = helper(s);
            let baseline = fd_count(h.pid());
            // stdio, the session socket, netlink, the tun pool: a count that read nothing would be 0.
            assert!(baseline > 4, "the helper's fds were read: {baseline}");
            let creds = UnixCredentials::new();
            let cmsgs = [
                ControlMessage::ScmCredentials(&creds),
                ControlMessage::ScmRights(&raw),
            ];
            sendmsg::<()>(
                h.socket().as_raw_fd(),
                &[IoSlice::new(&frame)],
                &cmsgs,
                MsgFlags::empty(),
                None,
            )
            .unwrap();
            let mut buf = vec![0u8; MAX_FRAME];
            let n = nix::sys::socket::recv(h.socket().as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
            assert_eq!(
                reply(&buf[..n]),
                Response::Error(Error::Invalid(Invalid::NotATap))
            );
            assert_eq!(fd_count(h.pid()), baseline, "the refused fd was closed");
            still_healthy(s, h);
            // A caller that set SO_PASSCRED on the helper's end of the socket makes the kernel add
            // SCM_CREDENTIALS to every message, Hello too: a control message outside the protocol,
            // so even a valid Hello is Malformed and the session ends (with the fd it carried).
            let (child, sock) =
                raw_session(s, |theirs| setsockopt(theirs, sockopt::PassCred, &true).unwrap());
            let hello = wire::encode(&Request::Hello).unwrap();
            let bytes = exchange(&sock, &hello, &raw);
            assert_eq!(reply(&bytes), Response::Error(Error::Invalid(Invalid::Malformed)));
            ended_without_more(child, &sock);
            fresh_session_works(s);
        },
    );
}

/// Soft and hard limits of one resource of `pid`, from `/proc/PID/limits` (read as root: the helper is
/// not dumpable), as written there ("1024", "unlimited").
fn limit(pid: u32, name: &str) -> (String, String) {
    let text = vmpriv_tests::as_root(|| std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap());
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/limits:\n{text}"));
    let mut v = line[name.len()..].split_whitespace().map(str::to_owned);
    (v.next().unwrap(), v.next().unwrap())
}

/// Whether this process (root) may raise hard limits, and so the setuid helper too: some sandboxes
/// leave CAP_SYS_RESOURCE (24) out of the bounding set.
fn may_raise_hard_limits() -> bool {
    let status = vmpriv_tests::proc_status(std::process::id());
    let bnd = &status.iter().find(|(k, _)| k == "CapBnd").unwrap().1;
    u64::from_str_radix(bnd, 16).unwrap() & (1 << 24) != 0 // CAP_SYS_RESOURCE
}

/// The caller's rlimits and signal state at exec: RLIMIT_NOFILE tiny, RLIMIT_FSIZE 0 with stderr on a
/// file, every signal blocked and ignored. Soft limits below generous hard ones are always reset (no
/// privilege needed): RLIMIT_NOFILE 1024, RLIMIT_FSIZE unlimited, no core file. Tiny hard limits are
/// reset where root holds CAP_SYS_RESOURCE; where a sandbox's bounding set lacks it, the soft limits
/// go as far as the hard ones allow and the helper works or refuses cleanly: never a signal death,
/// never a half-made tap.
#[test]
fn tiny_rlimits_and_hostile_signal_state_are_reset() {
    scenario(
        "tiny_rlimits_and_hostile_signal_state_are_reset",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            let log = s.dir.join("stderr.log");
            std::fs::write(&log, "").unwrap();
            vmpriv_tests::chmod(&log, 0o666);
            let raise = may_raise_hard_limits();
            println!("MEASURED CAP_SYS_RESOURCE in the bounding set: {raise}");
            become_nobody();
            let inf = libc::RLIM_INFINITY;
            // (RLIMIT_NOFILE soft, hard), (RLIMIT_FSIZE soft, hard), whether the helper serves
            // where hard limits cannot be raised (with 4 fds, reading the policy runs out of them).
            let cases = [
                ((4u64, 4096u64), (0u64, inf), true),
                ((4, 4), (0, 0), false),
                ((16, 16), (0, 0), true),
            ];
            for (nofile, fsize, serves_unraised) in cases {
                let mut cmd = Command::new(&s.helper);
                cmd.stderr(std::fs::OpenOptions::new().append(true).open(&log).unwrap());
                // SAFETY: only async-signal-safe calls (close_range, setrlimit, sigprocmask, signal).
                #[allow(unsafe_code)]
                unsafe {
                    cmd.pre_exec(move || {
                        // Only stdio and the session socket (which spawn_command's own pre_exec, run
                        // after this one, keeps) cross the exec: an fd this test inherited (a
                        // jobserver pipe under cargo-mutants) would take the dynamic loader's last
                        // free fd under RLIMIT_NOFILE 4.
                        libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC.cast_signed());
                        let set = |r, (soft, hard)| {
                            let l = libc::rlimit {
                                rlim_cur: soft,
                                rlim_max: hard,
                            };
                            if libc::setrlimit(r, &raw const l) == 0 {
                                Ok(())
                            } else {
                                Err(std::io::Error::last_os_error())
                            }
                        };
                        set(libc::RLIMIT_NOFILE, nofile)?;
                        set(libc::RLIMIT_FSIZE, fsize)?;
                        let mut all: libc::sigset_t = std::mem::zeroed();
                        libc::sigfillset(&raw mut all);
                        libc::sigprocmask(libc::SIG_BLOCK, &raw const all, std::ptr::null_mut());
                        for sig in 1..32 {
                            libc::signal(sig, libc::SIG_IGN);
                        }
                        Ok(())
                    });
                }
                let reset = raise || nofile.1 >= 1024;
                let mut h = match Helper::spawn_command(cmd, &s.helper) {
                    Ok(h) => h,
                    // A clean refusal at the policy step (its stderr line says "Too many open files").
                    Err(ClientError::Policy) if !reset && !serves_unraised => {
                        println!("MEASURED nofile {nofile:?}: helper refused at the policy step (no fds)");
                        assert!(taps().is_empty());
                        continue;
                    }
                    Err(e) => panic!("nofile {nofile:?}, limits reset {reset}: {e:?}"),
                };
                assert!(
                    reset || serves_unraised,
                    "nofile {nofile:?}: served with too few fds"
                );
                let pid = h.pid();
                let want = |v: u64| {
                    if v == inf {
                        "unlimited".to_owned()
                    } else {
                        v.to_string()
                    }
                };
                let (nofile_want, fsize_want) = if reset {
                    ((1024, 1024), (inf, inf))
                } else {
                    (nofile, fsize) // soft as far as hard: already there
                };
                assert_eq!(
                    limit(pid, "Max open files"),
                    (want(nofile_want.0), want(nofile_want.1)),
                    "nofile {nofile:?}"
                );
                assert_eq!(
                    limit(pid, "Max file size"),
                    (want(fsize_want.0), want(fsize_want.1)),
                    "fsize {fsize:?}"
                );
                assert_eq!(limit(pid, "Max core file size"), ("0".into(), "0".into()));
                println!(
                    "MEASURED nofile {nofile:?}, fsize {fsize:?}: the helper serves, limits reset {reset}"
                );
                let st = vmpriv_tests::proc_status(pid);
                let get = |k: &str| {
                    st.iter()
                        .find(|(key, _)| key == k)
                        .map(|(_, v)| v.clone())
                        .unwrap()
                };
                assert_eq!(get("SigBlk"), "0000000000000000", "mask reset");
                // Serving under the seccomp allow-list (mode 2: filter), installed last at start-up.
                assert_eq!(get("Seccomp"), "2", "the seccomp filter is on");
                assert_eq!(get("NoNewPrivs"), "1");
                let ignored = (1u64 << (libc::SIGPIPE - 1)) | (1u64 << (libc::SIGXFSZ - 1));
                // Signal 32 and 33 belong to glibc (it refuses to change them); every other one is reset.
                let ign = u64::from_str_radix(&get("SigIgn"), 16).unwrap() & !(0b11 << 31);
                assert_eq!(ign, ignored, "only SIGPIPE and SIGXFSZ ignored: {ign:016x}");
                match h.create_tap(&TapOptions::new().switch("br0")) {
                    Ok(tap) => assert_eq!(master(tap.name()).as_deref(), Some("br0")),
                    Err(e) => {
                        assert!(
                            !reset && matches!(e, ClientError::Unsupported(_)),
                            "nofile {nofile:?}: a clean refusal: {e:?}"
                        );
                    }
                }
                assert!(taps().is_empty());
                // Dispositions were reset: SIGTERM from the caller ends the helper by that signal.
                let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
                nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).unwrap();
                let status = h.close().unwrap();
                assert_eq!(status.signal(), Some(libc::SIGTERM));
            }
            fresh_session_works(s);
        },
    );
}

/// A caller that closes fds 0, 1 and 2 before exec: Rust's runtime reopens them on a device before
/// `main` (the helper has no code of its own for this), so no fd the helper opens later becomes
/// stderr. The session works, a refusal is a clean reply, and the helper exits 0 without a signal;
/// a refused start-up (QEMU mode, an --fd that is no socket) exits 1 without a signal.
#[test]
fn closed_stdio_is_reopened_and_the_helper_still_works() {
    scenario(
        "closed_stdio_is_reopened_and_the_helper_still_works",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            bridge("br1", None);
            become_nobody();
            let close_stdio = |cmd: &mut Command| {
                // SAFETY: only close(2), which is async-signal-safe.
                #[allow(unsafe_code)]
                unsafe {
                    cmd.pre_exec(|| {
                        for fd in 0..=2 {
                            libc::close(fd);
                        }
                        Ok(())
                    });
                }
            };
            let mut cmd = Command::new(&s.helper);
            close_stdio(&mut cmd);
            let mut h = Helper::spawn_command(cmd, &s.helper).expect("the helper starts");
            let stdio: Vec<_> = vmpriv_tests::as_root(|| {
                (0..=2)
                    .map(|fd| std::fs::read_link(format!("/proc/{}/fd/{fd}", h.pid())).unwrap())
                    .collect()
            });
            // std opens /dev/null (some versions /dev/full for stdin): a device either way, never a tap.
            assert!(
                stdio
                    .iter()
                    .all(|p| p.as_os_str() == "/dev/null" || p.as_os_str() == "/dev/full"),
                "{stdio:?}"
            );
            let tap = h.create_tap(&TapOptions::new().switch("br0")).unwrap();
            assert_eq!(master(tap.name()).as_deref(), Some("br0"));
            let e = h.create_tap(&TapOptions::new().switch("br1")).unwrap_err();
            assert!(matches!(e, ClientError::Denied), "{e:?}");
            drop(tap);
            still_healthy(s, h);
            let mut cmd = Command::new(&s.bridge);
            cmd.args(["--br=br0", "--fd=7"]);
            close_stdio(&mut cmd);
            let status = cmd.status().unwrap();
            assert!(
                status.code() == Some(1) && status.signal().is_none(),
                "{status:?}"
            );
            assert!(taps().is_empty());
        },
    );
}

/// SIGKILL at many points of a full VM-interface configuration: once the caller closes its fds,
/// nothing is left: no tap, no address, no bridge port.
#[test]
fn sigkill_at_every_step_leaves_nothing_behind() {
    scenario(
        "sigkill_at_every_step_leaves_nothing_behind",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            become_nobody();
            let config = TapOptions::new()
                .switch("br0")
                .description("kill me")
                .local(9, 0, true)
                .config()
                .clone();
            for round in 0u32..40 {
                let mut h = helper(s);
                let tap = h.create_tap(&TapOptions::new().up(false)).unwrap();
                let pid = nix::unistd::Pid::from_raw(i32::try_from(h.pid()).unwrap());
                let delay = std::time::Duration::from_micros(u64::from(round) * 40);
                let killer = std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                });
                let _ = h.configure(&tap, &config);
                killer.join().unwrap();
                let status = h.close().unwrap();
                assert!(
                    status.success() || status.signal() == Some(libc::SIGKILL),
                    "{status:?}"
                );
                drop(tap);
                assert!(taps().is_empty(), "round {round}: {:?}", taps());
                assert!(all_addrs().is_empty(), "round {round}: {:?}", all_addrs());
            }
            fresh_session_works(s);
        },
    );
}

/// SIGKILL after each netlink step, deterministically: strace (as root, running the helper setuid as
/// uid 65534 with `-u nobody`) kills the helper at its K-th `sendto`, for every K of a full create and
/// of a full configure. Once the caller closes its fds, nothing is left: no tap, address or port.
#[test]
fn sigkill_after_each_netlink_step_leaves_nothing() {
    scenario(
        "sigkill_after_each_netlink_step_leaves_nothing",
        bins!(),
        "ifgroup vms 42\nallow user * ifgroup vms\nallow user * switch br0\nallow user * local\n",
        |s| {
            vmpriv_tests::require_tool(
                "sigkill_after_each_netlink_step_leaves_nothing",
                "strace",
                "apt-get install strace",
            );
            bridge("br0", None);
            let full = TapOptions::new()
                .switch("br0")
                .description("kill me")
                .group("vms")
                .local(5, 0, true);
            let spawn = |k: u32| {
                let mut cmd = Command::new("strace");
                cmd.args([
                    "-u",
                    "nobody",
                    "-f",
                    "-qq",
                    "-o",
                    "/dev/null",
                    "-e",
                    "trace=sendto",
                ])
                .arg(format!("-einject=sendto:signal=KILL:when={k}"))
                .arg(&s.helper);
                Helper::spawn_command(cmd, &s.helper).unwrap()
            };
            let mut completed = (false, false);
            for k in 1..=24 {
                // A create killed at step k.
                let mut h = spawn(k);
                let created = h.create_tap(&full);
                completed.0 |= created.is_ok();
                drop(created);
                drop(h);
                assert!(taps().is_empty(), "create, step {k}: {:?}", taps());
                assert!(all_addrs().is_empty(), "create, step {k}: {:?}", all_addrs());
                // A configure of a tap the caller holds, killed at step k.
                let tap = as_nobody(|| helper(s).create_tap(&TapOptions::new().up(false)).unwrap());
                let mut h = spawn(k);
                completed.1 |= h.configure(&tap, full.config()).is_ok();
                drop(h);
                drop(tap);
                assert!(taps().is_empty(), "configure, step {k}: {:?}", taps());
                assert!(all_addrs().is_empty(), "configure, step {k}: {:?}", all_addrs());
                assert!(vmpriv_tests::link("br0").is_some());
            }
            assert_eq!(
                completed,
                (true, true),
                "K went past the last step, so both also ran to the end"
            );
            fresh_session_works(s);
        },
    );
}

// "Another user can never touch my tap" lives in ownership.rs, with the attack that used to work
// (re-owning the tap with TUNSETOWNER before asking).

/// CVE-2022-47952 shape: the reply to "not granted" and to "does not exist" is the same bytes.
#[test]
fn denied_and_absent_replies_are_byte_identical() {
    scenario(
        "denied_and_absent_replies_are_byte_identical",
        bins!(),
        POLICY,
        |s| {
            bridge("br0", None);
            bridge("br1", None);
            become_nobody();
            let mut h = helper(s);
            let ask = |h: &mut Helper, req: &Request| h.call_raw(&wire::encode(req).unwrap(), &[]).unwrap().0;
            let denied = ask(&mut h, &Request::SwitchExists { switch: "br1".into() });
            let absent = ask(
                &mut h,
                &Request::SwitchExists {
                    switch: "nosuchbr".into(),
                },
            );
            let not_bridge = ask(&mut h, &Request::SwitchExists { switch: "lo".into() });
            assert_eq!(denied, absent);
            assert_eq!(denied, not_bridge);
            let create = |sw: &str| Request::CreateTap {
                queues: 1,
                vnet_hdr: false,
                config: IfConfig {
                    switch: Some(sw.into()),
                    ..Default::default()
                },
            };
            assert_eq!(ask(&mut h, &create("br1")), ask(&mut h, &create("nosuchbr")));
            assert_eq!(ask(&mut h, &create("br1")), denied);
            assert_eq!(reply(&denied), Response::Error(Error::Denied));
            still_healthy(s, h);
        },
    );
}

/// Whatever fds its caller leaves open, the helper holds none of them once it serves: here a file on
/// every number from 3 to 63 but 4, the session socket's, so one of them sits alone right below the
/// socket (fd 3) and the rest above it. After the `Hello` reply, no fd of the helper is that file.
#[test]
fn inherited_fds_are_closed_at_start_up_whatever_their_numbers() {
    scenario(
        "inherited_fds_are_closed_at_start_up_whatever_their_numbers",
        bins!(),
        POLICY,
        |s| {
            let secret = s.dir.join("callers-file");
            std::fs::write(&secret, "not the helper's").unwrap();
            vmpriv_tests::chmod(&secret, 0o666);
            become_nobody();
            let file = std::fs::File::open(&secret).unwrap();
            let (ours, theirs) = socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .unwrap();
            let (file_fd, sock_fd) = (file.as_raw_fd(), theirs.as_raw_fd());
            let mut cmd = Command::new(&s.helper);
            cmd.args(["--session", "--fd=4"]);
            // SAFETY: only dup2, fcntl and close, which are async-signal-safe.
            #[allow(unsafe_code)]
            unsafe {
                cmd.pre_exec(move || {
                    // Both out of the way first, then the socket to 4 and the file on every other
                    // number (dup2 clears close-on-exec; std's own pipe for exec errors is among
                    // those replaced, which only loses the report of a failed exec).
                    let sock = libc::fcntl(sock_fd, libc::F_DUPFD_CLOEXEC, 100);
                    let file = libc::fcntl(file_fd, libc::F_DUPFD_CLOEXEC, 100);
                    if sock < 0 || file < 0 || libc::dup2(sock, 4) != 4 {
                        return Err(std::io::Error::last_os_error());
                    }
                    for fd in (3..64).filter(|&fd| fd != 4) {
                        if libc::dup2(file, fd) != fd {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
            let child = cmd.spawn().unwrap();
            drop(theirs);
            let hello = wire::encode(&Request::Hello).unwrap();
            assert!(matches!(
                reply(&exchange(&ours, &hello, &[])),
                Response::Hello { .. }
            ));
            let pid = child.id();
            let held: Vec<String> = vmpriv_tests::as_root(|| {
                std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .unwrap()
                    .map(|e| {
                        let e = e.unwrap();
                        format!(
                            "{} -> {}",
                            e.file_name().to_string_lossy(),
                            std::fs::read_link(e.path()).unwrap().display()
                        )
                    })
                    .collect()
            });
            assert!(held.iter().any(|l| l.starts_with("4 -> socket:")), "{held:?}");
            assert!(
                !held.iter().any(|l| l.contains("callers-file")),
                "the helper still holds its caller's file: {held:?}"
            );
            drop(ours);
            let mut child = child;
            assert!(child.wait().unwrap().success(), "the session ends cleanly");
        },
    );
}

/// A tun ioctl is only ever issued on the tun device: the same numbers mean other things to other
/// drivers. A request naming `/dev/null` (a character device too) as its tap is refused as not a tap,
/// and strace sees no `TUNGETIFF` in that session.
#[test]
fn a_character_device_that_is_not_tun_never_gets_a_tun_ioctl() {
    scenario(
        "a_character_device_that_is_not_tun_never_gets_a_tun_ioctl",
        bins!(),
        POLICY,
        |s| {
            vmpriv_tests::require_tool(
                "a_character_device_that_is_not_tun_never_gets_a_tun_ioctl",
                "strace",
                "apt-get install strace",
            );
            let trace = s.dir.join("trace");
            let mut h = vmpriv_tests::traced_helper(s, "ioctl", &["-o".into(), trace.display().to_string()]);
            let null = std::fs::File::open("/dev/null").unwrap();
            let e = h.set_description(&null, "not a tap").unwrap_err();
            assert!(matches!(e, ClientError::Invalid(Invalid::NotATap)), "{e:?}");
            // The same session still names a real tap by its fd (TUNGETIFF is traced when issued).
            let tap = h.create_tap(&TapOptions::new()).unwrap();
            h.set_description(&tap, "a tap").unwrap();
            h.close().unwrap();
            let text = std::fs::read_to_string(&trace).unwrap();
            let getiff = text.lines().filter(|l| l.contains("TUNGETIFF")).count();
            assert_eq!(getiff, 1, "one TUNGETIFF, on the tap's fd: {text}");
        },
    );
}

/// Landlock is in force once the helper serves: strace sees the ruleset made with every filesystem
/// right this kernel's ABI handles, the tun device allowed read, write and ioctl only, and
/// `landlock_restrict_self` succeed. (What Landlock then refuses cannot be asked for: no request
/// carries a path.)
#[test]
fn landlock_is_in_force_with_every_right_handled() {
    scenario(
        "landlock_is_in_force_with_every_right_handled",
        bins!(),
        POLICY,
        |s| {
            vmpriv_tests::require_tool(
                "landlock_is_in_force_with_every_right_handled",
                "strace",
                "apt-get install strace",
            );
            let trace = s.dir.join("trace");
            let mut h = vmpriv_tests::traced_helper(
                s,
                "landlock_create_ruleset,landlock_add_rule,landlock_restrict_self",
                &["-o".into(), trace.display().to_string()],
            );
            h.status().unwrap();
            h.close().unwrap();
            let text = std::fs::read_to_string(&trace).unwrap();
            let query = text
                .lines()
                .find(|l| l.contains("LANDLOCK_CREATE_RULESET_VERSION"))
                .unwrap_or_else(|| panic!("no ABI query: {text}"));
            // A kernel without Landlock (not in its `lsm=` list) fails here rather than passing
            // unchecked: this machine's and the stock-kernel matrix's both have it.
            let abi: u32 = query
                .rsplit("= ")
                .next()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("this kernel has no Landlock, nothing to check: {query}"));
            let handled = landlock_mask(
                text.lines()
                    .find(|l| l.contains("landlock_create_ruleset({"))
                    .unwrap_or_else(|| panic!("no ruleset: {text}")),
                "handled_access_fs=",
            );
            // ABI 1's 13 rights, then REFER (2), TRUNCATE (3), IOCTL_DEV (5).
            let mut want = (1u64 << 13) - 1;
            for (bit, since) in [(13, 2), (14, 3), (15, 5)] {
                if abi >= since {
                    want |= 1 << bit;
                }
            }
            assert_eq!(handled, want, "handled rights, ABI {abi}: {text}");
            let rules: Vec<u64> = text
                .lines()
                .filter(|l| l.contains("landlock_add_rule("))
                .map(|l| landlock_mask(l, "allowed_access="))
                .collect();
            // /dev/net/tun: read, write and (ABI 5 on) its ioctls; the rest read or write beneath.
            let device = (1 << 1) | (1 << 2) | if abi >= 5 { 1 << 15 } else { 0 };
            assert!(rules.contains(&device), "no rule for the tun device: {text}");
            assert!(
                rules.iter().all(|&r| r == device || r == 1 << 1 || r == 1 << 2),
                "a rule allows more: {text}"
            );
            assert!(
                text.lines()
                    .any(|l| l.contains("landlock_restrict_self(") && l.trim_end().ends_with("= 0")),
                "Landlock never restricted the helper: {text}"
            );
        },
    );
}

/// The Landlock access mask strace printed after `key` (names, or hex for the rights it cannot name).
fn landlock_mask(line: &str, key: &str) -> u64 {
    const NAMES: [&str; 16] = [
        "EXECUTE",
        "WRITE_FILE",
        "READ_FILE",
        "READ_DIR",
        "REMOVE_DIR",
        "REMOVE_FILE",
        "MAKE_CHAR",
        "MAKE_DIR",
        "MAKE_REG",
        "MAKE_SOCK",
        "MAKE_FIFO",
        "MAKE_BLOCK",
        "MAKE_SYM",
        "REFER",
        "TRUNCATE",
        "IOCTL_DEV",
    ];
    let field = line
        .split(key)
        .nth(1)
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    let field = field.split([',', '}']).next().unwrap();
    field
        .split('|')
        .map(|t| {
            let t = t.trim();
            if let Some(hex) = t.strip_prefix("0x") {
                u64::from_str_radix(hex, 16).unwrap()
            } else {
                let name = t
                    .strip_prefix("LANDLOCK_ACCESS_FS_")
                    .unwrap_or_else(|| panic!("{t} in {line}"));
                1 << NAMES
                    .iter()
                    .position(|n| *n == name)
                    .unwrap_or_else(|| panic!("{t} in {line}"))
            }
        })
        .fold(0, |a, b| a | b)
}
