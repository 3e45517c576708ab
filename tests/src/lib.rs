//! The scenario harness, written once: each kernel scenario runs in a child process made with
//! `unshare --net --mount` (a multi-threaded test binary cannot unshare its own mount namespace), with
//! `/etc` overlaid so the test can write `/etc/vmpriv/policy.conf`, a setuid-root copy of the helper
//! in a 0755 temp dir, and the test body acting as uid/gid 65534. Kernel state is read back with
//! `ip -j`, never taken from our own return values.
#![allow(
    clippy::missing_panics_doc,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod guest;
pub mod ping;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The uid and gid the scenarios act as.
pub const NOBODY: u32 = 65534;

/// What a scenario body gets (also what the demo sets up).
pub struct Scenario {
    /// The 0755 temp dir holding the setuid copy.
    pub dir: PathBuf,
    /// The setuid-root session helper.
    pub helper: PathBuf,
    /// The setuid-root bridge helper (QEMU's and libvirt's `helper=`).
    pub bridge: PathBuf,
    /// The `vmpriv` command (not setuid).
    pub cli: PathBuf,
}

/// Checks that this process may run kernel scenarios: root. Without it a scenario fails naming
/// the cause; it never passes without running (libtest has no runtime skip, and an `ok` that ran
/// nothing hides a broken setup).
pub fn require_root(test: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{test}: needs root to make namespaces and a setuid copy (run the kernel scenarios as root; \
         `cargo test --workspace --lib` and `--test corpus` need none)"
    );
}

/// The binaries under test: `(helper, cli)`. Only integration tests know their paths, hence a macro.
#[macro_export]
macro_rules! bins {
    () => {
        (
            env!("CARGO_BIN_EXE_vmpriv-helper-under-test"),
            env!("CARGO_BIN_EXE_vmpriv-under-test"),
            env!("CARGO_BIN_EXE_vmpriv-bridge-helper-under-test"),
        )
    };
}

/// Checks that `tool` (a prerequisite `.ci/run` installs) runs here; without it the test fails
/// naming the package, never passes without running.
pub fn require_tool(test: &str, tool: &str, install: &str) {
    let runs = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(runs, "{test}: {tool} is not installed ({install})");
}

/// Runs `body` as `test` (the `#[test]` function's name) in its own network and mount namespaces,
/// with `policy` at `/etc/vmpriv/policy.conf`. `bins` comes from [`bins!`].
pub fn scenario(test: &str, bins: (&str, &str, &str), policy: &str, body: impl FnOnce(&Scenario)) {
    if std::env::var("VMPRIV_SCENARIO").as_deref() == Ok(test) {
        // What a scenario execs starts with only fds 0-2, as from a shell: cargo's jobserver pipes
        // (inherited under cargo-mutants, make or `cargo test` from a script holding fds) would
        // otherwise reach `vmpriv tap`, whose taps then rightly take the first free fds above them,
        // and every "fds from 3" assertion would fail for a reason unrelated to what it tests (under
        // cargo-mutants every mutant was "caught" so).
        #[allow(unsafe_code)]
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on this process's fds.
        let r = unsafe { libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC.cast_signed()) };
        assert_eq!(r, 0, "close_range: {}", std::io::Error::last_os_error());
        let s = setup(test, bins, policy);
        body(&s);
        become_root();
        let _ = std::fs::remove_dir_all(&s.dir);
        return;
    }
    require_root(test);
    let exe = std::env::current_exe().unwrap();
    let child = Command::new("unshare")
        .args(["--net", "--mount", "--"])
        .arg(&exe)
        // --include-ignored: the outer run chose to run this test, ignored or not.
        .args([
            test,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env("VMPRIV_SCENARIO", test)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) runs");
    // unshare execs the test binary in its own process: the scenario's directory is named after it.
    let dir = scenario_dir(child.id(), test);
    let out = child.wait_with_output().expect("the scenario's output");
    // A body that failed left its directory (setuid copies, the /etc overlay's upper): gone now that
    // its namespaces are, so that a failing run leaves the host as it found it too.
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "scenario {test} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    // Show what the scenario printed (figures, a guest's console) in the outer run too.
    // (libtest may print "test NAME ... " in front of a body's first line.)
    for line in stdout.lines().chain(stderr.lines()) {
        if let Some(i) = line.find("MEASURED").or_else(|| line.find("GUEST")) {
            eprintln!("{}", &line[i..]);
        }
    }
}

/// The scenario's own directory on the host (the setuid copies, the `/etc` overlay's upper, a
/// replacement `/dev/net/tun`): `scenario` removes it once the scenario's process is gone, whether
/// its body passed or not.
fn scenario_dir(pid: u32, test: &str) -> PathBuf {
    PathBuf::from(format!("/var/tmp/vmpriv-test.{pid}.{test}"))
}

pub fn setup(test: &str, (helper_bin, cli_bin, bridge_bin): (&str, &str, &str), policy: &str) -> Scenario {
    sh(&["mount", "--make-rprivate", "/"]);
    // This namespace's own sysfs: the one inherited shows the host's links, and the helper reads a
    // switch's addr_assign_type there (rtnetlink does not carry it).
    sh(&["mount", "-t", "sysfs", "sysfs", "/sys"]);
    let dir = scenario_dir(std::process::id(), test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("upper")).unwrap();
    std::fs::create_dir_all(dir.join("work")).unwrap();
    chmod(&dir, 0o755);
    chmod(&dir.join("upper"), 0o755);
    let opts = format!("lowerdir=/etc,upperdir={0}/upper,workdir={0}/work", dir.display());
    sh(&["mount", "-t", "overlay", "overlay", "-o", &opts, "/etc"]);
    write_policy(policy);
    let setuid_copy = |bin: &str, name: &str| {
        let path = dir.join(name);
        std::fs::copy(bin, &path).unwrap();
        nix::unistd::chown(&path, Some(0.into()), Some(0.into())).unwrap();
        chmod(&path, 0o4755);
        path
    };
    let helper = setuid_copy(helper_bin, "vmpriv-helper");
    let bridge = setuid_copy(bridge_bin, "vmpriv-bridge-helper");
    let cli = dir.join("vmpriv");
    std::fs::copy(cli_bin, &cli).unwrap();
    chmod(&cli, 0o755);
    sh(&["ip", "link", "set", "lo", "up"]);
    Scenario {
        dir,
        helper,
        bridge,
        cli,
    }
}

/// Replaces `/etc/vmpriv/policy.conf` (root-owned, 0644) inside the scenario's `/etc` overlay.
pub fn write_policy(policy: &str) {
    std::fs::create_dir_all("/etc/vmpriv").unwrap();
    chmod(Path::new("/etc/vmpriv"), 0o755);
    std::fs::write("/etc/vmpriv/policy.conf", policy).unwrap();
    chmod(Path::new("/etc/vmpriv/policy.conf"), 0o644);
}

/// `chmod`.
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs a command as root (call [`become_root`] first if the body dropped); panics if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command, returning its output whatever its status.
pub fn run<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let (prog, rest) = args.split_first().unwrap();
    Command::new(prog).args(rest).output().unwrap()
}

/// The scenario process acts as uid/gid 65534 (real and effective), keeping a saved uid of 0 so that
/// [`become_root`] can come back for setup and cleanup. The helper sees a caller of uid 65534 with no
/// supplementary groups, exactly as from `setpriv --reuid=65534 --regid=65534 --clear-groups`.
pub fn become_nobody() {
    become_uid(NOBODY);
}

/// `setpriv --reuid=65534 --regid=65534 --clear-groups PROGRAM`: a command run as uid 65534 with no
/// supplementary groups, whatever this process is.
pub fn nobody_command(program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".to_owned(),
    ])
    .arg(program);
    c
}

/// Back to root (from [`become_nobody`]).
pub fn become_root() {
    nix::unistd::setresuid(0.into(), 0.into(), 0.into()).unwrap();
    nix::unistd::setresgid(0.into(), 0.into(), 0.into()).unwrap();
}

/// Runs `f` as uid 65534, then returns to root.
pub fn as_nobody<T>(f: impl FnOnce() -> T) -> T {
    become_nobody();
    let r = f();
    become_root();
    r
}

/// `ip -j ARGS` as JSON, failing loudly: a reader that returned an empty list when it could not read
/// would turn every "nothing left behind" check into one that cannot fail.
pub fn ip_json(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["ip", "-j"];
    all.extend_from_slice(args);
    let out = run(&all);
    assert!(
        out.status.success(),
        "{all:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{all:?} printed no JSON list ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `ip -j -d link show` as JSON values: every link of the namespace (never empty: `lo` is there).
pub fn links() -> Vec<Value> {
    let v = ip_json(&["-d", "link", "show"]);
    assert!(
        v.iter().any(|l| l["ifname"] == "lo"),
        "ip link shows no lo: {v:?}"
    );
    v
}

/// One link by name; `None` only when the kernel lists no link of that name (`links` fails loudly
/// when `ip` does not answer).
pub fn link(name: &str) -> Option<Value> {
    links().into_iter().find(|l| l["ifname"] == name)
}

/// Names of the taps that exist now.
pub fn taps() -> Vec<String> {
    links()
        .into_iter()
        .filter(|l| l["linkinfo"]["info_kind"] == "tun" && l["linkinfo"]["info_data"]["type"] == "tap")
        .map(|l| l["ifname"].as_str().expect("a link has a name").to_owned())
        .collect()
}

fn global_addrs(l: &Value) -> Vec<String> {
    let info = l["addr_info"].as_array().expect("ip -j addr gives addr_info");
    info.iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

/// The `addr/prefixlen` strings of a link's global addresses.
pub fn addrs(name: &str) -> Vec<String> {
    let v = ip_json(&["addr", "show", "dev", name]);
    assert_eq!(v.len(), 1, "ip addr show dev {name}: {v:?}");
    global_addrs(&v[0])
}

/// Every global address in the namespace, as `ifname addr/prefixlen`.
pub fn all_addrs() -> Vec<String> {
    let v = ip_json(&["addr", "show"]);
    assert!(
        v.iter().any(|l| l["ifname"] == "lo"),
        "ip addr shows no lo: {v:?}"
    );
    let mut all = Vec::new();
    for l in &v {
        let name = l["ifname"].as_str().unwrap();
        all.extend(global_addrs(l).into_iter().map(|a| format!("{name} {a}")));
    }
    all
}

/// Routes of one family (`-4` or `-6`) in the main table, as `ip -j route` values.
pub fn routes(family: &str) -> Vec<Value> {
    ip_json(&[family, "route", "show"])
}

/// Makes a bridge (up) with an optional MTU and a fixed MAC, as the helper requires of a switch: the
/// admin's one-line fix, `ip link set BR address $(cat /sys/class/net/BR/address)`.
pub fn bridge(name: &str, mtu: Option<u32>) {
    sh(&["ip", "link", "add", name, "type", "bridge"]);
    let mac = std::fs::read_to_string(format!("/sys/class/net/{name}/address")).unwrap();
    sh(&["ip", "link", "set", name, "address", mac.trim()]);
    if let Some(m) = mtu {
        sh(&["ip", "link", "set", name, "mtu", &m.to_string()]);
    }
    sh(&["ip", "link", "set", name, "up"]);
}

/// `ip link add NAME type KIND ARGS…` for a kernel feature that an ignored test needs. Such a test
/// runs only when asked for (`--include-ignored`, the stock-kernel matrix), so a kernel without the
/// driver is a failure that names it, never a pass.
pub fn add_link(name: &str, kind: &str, args: &[&str]) {
    let mut cmd = vec!["ip", "link", "add"];
    // A vlan's `link DEV` goes before `type`.
    let (link, rest) = match args {
        ["link", dev, rest @ ..] => (Some(*dev), rest),
        _ => (None, args),
    };
    if let Some(dev) = link {
        cmd.extend(["link", dev]);
    }
    cmd.extend(["name", name, "type", kind]);
    cmd.extend(rest);
    let out = run(&cmd);
    assert!(
        out.status.success(),
        "this kernel ({}) cannot make a {kind} device: {} (the stock-kernel matrix loads tun, \
         bridge, vrf, dummy and 8021q)",
        sh(&["uname", "-r"]).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// IPv4 routes of routing table `table` (`10`, `main`), as `ip -j route` values.
pub fn table_routes(table: &str) -> Vec<Value> {
    ip_json(&["-4", "route", "show", "table", table])
}

/// The `master` of a link that exists, if it has one. A missing link fails loudly: "no master" and
/// "no such link" are different answers, and a check for the first must not pass on the second.
pub fn master(name: &str) -> Option<String> {
    let l = link(name).unwrap_or_else(|| panic!("master of {name}: no such link"));
    // `ip -j` leaves the key out for a link without a master; anything else must be a name.
    l.get("master").map(|m| {
        m.as_str()
            .unwrap_or_else(|| panic!("{name}: master is not a name: {m}"))
            .to_owned()
    })
}

/// Lines of `/proc/PID/status` as (key, value).
pub fn proc_status(pid: u32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// Number of open fds of a process, read as root (the helper is not dumpable, so its `/proc/PID/fd`
/// is root's), failing loudly; then back to whoever this process was.
pub fn fd_count(pid: u32) -> usize {
    as_root(|| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/fd: {e}"))
            .count()
    })
}

/// Runs `f` as root, then returns to the real and effective ids this process had (the scenario body
/// acts as uid 65534 with a saved uid of 0).
pub fn as_root<T>(f: impl FnOnce() -> T) -> T {
    let u = nix::unistd::getresuid().unwrap();
    let g = nix::unistd::getresgid().unwrap();
    become_root();
    let r = f();
    nix::unistd::setresgid(g.real, g.effective, 0.into()).unwrap();
    nix::unistd::setresuid(u.real, u.effective, 0.into()).unwrap();
    r
}

/// As root: an fd attached to the tun device `name` in mode `kind` (`IFF_TAP` or `IFF_TUN`), creating
/// it if needed. For tests that need fds the caller could not get itself.
pub fn open_tun(name: &str, kind: libc::c_int) -> std::os::fd::OwnedFd {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .unwrap();
    // SAFETY: a zeroed ifreq is valid; TUNSETIFF reads and writes it; it lives across the call.
    #[allow(unsafe_code)]
    unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s.cast_signed();
        }
        ifr.ifr_ifru.ifru_flags = i16::try_from(kind | libc::IFF_NO_PI).unwrap();
        assert!(
            libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, &raw mut ifr) == 0,
            "TUNSETIFF {name}"
        );
    }
    f.into()
}

/// Acts as `uid`/`uid` (real and effective) with no supplementary groups, keeping saved uid 0 so
/// that [`become_root`] can come back. [`become_nobody`] is `become_uid(NOBODY)`.
pub fn become_uid(uid: u32) {
    become_root();
    nix::unistd::setgroups(&[]).unwrap();
    let g = nix::unistd::Gid::from_raw(uid);
    nix::unistd::setresgid(g, g, 0.into()).unwrap();
    let u = nix::unistd::Uid::from_raw(uid);
    nix::unistd::setresuid(u, u, 0.into()).unwrap();
}

/// Replaces `/dev/net/tun` inside the scenario's mount namespace by a node of `mode` (0666 as most
/// distributions ship it, or 0600 as this machine has it), whatever the host has. The node lives in
/// the scenario's directory, which goes with the scenario; it stays linked while the scenario runs
/// (unlinked, a helper's fd would read `/dev/net/tun (deleted)` in /proc).
pub fn tun_device_mode(mode: u32) {
    let test = std::env::var("VMPRIV_SCENARIO").expect("tun_device_mode runs in a scenario's body");
    let node = scenario_dir(std::process::id(), &test).join("tun-node");
    let node = node.to_str().unwrap();
    // A node an earlier call bound there goes first, so that a scenario can change the mode (a bind
    // over the deleted node fails with ENOENT); where none is bound this fails and changes nothing.
    let _ = run(&["umount", "/dev/net/tun"]);
    let _ = std::fs::remove_file(node);
    nix::sys::stat::mknod(
        node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(mode),
        nix::sys::stat::makedev(10, 200),
    )
    .unwrap();
    chmod(Path::new(node), mode);
    sh(&["mount", "--bind", node, "/dev/net/tun"]);
}

/// The helper as uid 65534 under strace, tracing `calls` (`-e trace=…`), with `extra` strace options
/// (`-o FILE`, `-einject=…`).
pub fn traced_helper(s: &Scenario, calls: &str, extra: &[String]) -> vmpriv_client::Helper {
    let mut cmd = Command::new("strace");
    cmd.args(["-u", "nobody", "-f", "-qq", "-e"])
        .arg(format!("trace={calls}"))
        .args(extra)
        .arg(&s.helper);
    vmpriv_client::Helper::spawn_command(cmd, &s.helper).unwrap()
}

/// As root, in a scenario: helpers started from now on log into the returned socket instead of the
/// host's log: a tmpfs on `/run` (this mount namespace's only) holds the journal's socket, also bound
/// over `/dev/log` where that exists. Read the lines with [`log_lines`].
pub fn capture_helper_log() -> std::os::unix::net::UnixDatagram {
    // Room for every line between two reads, so that no helper blocks on a full queue (the limit is
    // this network namespace's, and sockets take it when they are made).
    std::fs::write("/proc/sys/net/unix/max_dgram_qlen", "4096").unwrap();
    sh(&["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"]);
    std::fs::create_dir_all("/run/systemd/journal").unwrap();
    let path = "/run/systemd/journal/socket";
    let sock = std::os::unix::net::UnixDatagram::bind(path).unwrap();
    chmod(Path::new(path), 0o666);
    if Path::new("/dev/log").exists() {
        sh(&["mount", "--bind", path, "/dev/log"]);
    }
    sock.set_nonblocking(true).unwrap();
    sock
}

/// The records logged into `sock` ([`capture_helper_log`]) since the last call, one string each (a
/// journal entry's fields, or a syslog record).
pub fn log_lines(sock: &std::os::unix::net::UnixDatagram) -> Vec<String> {
    let mut lines = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => lines.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return lines,
            Err(e) => panic!("cannot read the helper's log: {e}"),
        }
    }
}

/// What a tap's holder can do through its fd without any privilege (`drivers/net/tun.c` checks
/// nothing for these): `TUNSETOWNER` to any uid.
pub fn tun_set_owner(fd: &impl std::os::fd::AsRawFd, uid: u32) -> std::io::Result<()> {
    // SAFETY: TUNSETOWNER takes the uid by value.
    #[allow(unsafe_code)]
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOWNER, libc::c_ulong::from(uid)) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `SIOCSIFHWADDR` on a tap's fd: its holder sets the tap's MAC, with no privilege (`tun_chr_ioctl`
/// checks nothing for it).
pub fn tun_set_mac(fd: &impl std::os::fd::AsRawFd, mac: [u8; 6]) -> std::io::Result<()> {
    // SAFETY: a zeroed ifreq is valid; SIOCSIFHWADDR reads its hwaddr member; it lives across the call.
    #[allow(unsafe_code)]
    let r = unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
        for (d, m) in ifr.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
            *d = m.cast_signed();
        }
        libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFHWADDR, &raw mut ifr)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `TUNSETPERSIST`: the tap outlives its fds (no privilege needed on an attached fd).
pub fn tun_set_persist(fd: &impl std::os::fd::AsRawFd, on: bool) -> std::io::Result<()> {
    // SAFETY: TUNSETPERSIST takes the flag by value.
    #[allow(unsafe_code)]
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, libc::c_ulong::from(on)) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// As whoever this process is: open `/dev/net/tun` and attach to the existing tap `name` with
/// `flags` (e.g. `IFF_TAP | IFF_MULTI_QUEUE`): no privilege is needed while the tap has no owner.
pub fn tun_attach(name: &str, flags: libc::c_int) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: a zeroed ifreq is valid; TUNSETIFF reads and writes it; it lives across the call.
    #[allow(unsafe_code)]
    let r = unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s.cast_signed();
        }
        ifr.ifr_ifru.ifru_flags = i16::try_from(flags | libc::IFF_NO_PI).expect("tun flags fit a short");
        libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, &raw mut ifr)
    };
    if r == 0 {
        Ok(f.into())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The stream socketpair QEMU and libvirt hand a `helper=` (`--fd=N` names `theirs`, which must be
/// kept across exec): `(ours, theirs)`, both close-on-exec here.
pub fn qemu_socketpair() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap()
}

/// One received message: its bytes, the fds it carried (now owned), and how many control messages
/// came with it (libvirt insists on exactly one SCM_RIGHTS with one fd).
pub struct Received {
    /// The data bytes.
    pub bytes: Vec<u8>,
    /// The SCM_RIGHTS fds.
    pub fds: Vec<std::os::fd::OwnedFd>,
    /// Control messages of any kind.
    pub cmsgs: usize,
}

/// Receives one message of at most `max` bytes with up to 8 fds, as QEMU and libvirt do from a helper.
pub fn recv_with_fds(sock: &impl std::os::fd::AsRawFd, max: usize) -> Received {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::FromRawFd;
    let mut buf = vec![0u8; max];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 8]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .unwrap();
    let (mut fds, mut cmsgs) = (Vec::new(), 0);
    for c in msg.cmsgs().unwrap() {
        cmsgs += 1;
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: recvmsg just installed these fds in our table; nothing else owns them.
            fds.extend(
                raw.into_iter()
                    .map(|f| unsafe { std::os::fd::OwnedFd::from_raw_fd(f) }),
            );
        }
    }
    let n = msg.bytes;
    buf.truncate(n);
    Received {
        bytes: buf,
        fds,
        cmsgs,
    }
}
