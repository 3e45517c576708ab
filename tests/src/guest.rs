//! Real guests, written once: Debian's stock kernel (the package `linux-image-amd64` depends on,
//! fetched with `apt-get download`, unpacked with `dpkg-deb -x` and cached), a busybox initramfs whose
//! `/init` brings up eth0 from the kernel command line and pings, and the serial console read back.
//! The guest tests (`tests/tests/guest.rs`) and the stock-kernel matrix (`vmpriv-stock-kernel`) use it.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The cache of unpacked kernel packages. Not `/var/cache`: virtme-ng mounts a tmpfs over it in its
/// guest, and the stock-kernel matrix needs the modules there. `VMPRIV_GUEST_CACHE` overrides it.
pub const CACHE: &str = "/var/lib/vmpriv-tests";

/// The virtio stack the guest loads from the kernel package, in dependency order (Debian builds all
/// of it as modules).
pub const VIRTIO_MODULES: [&str; 8] = [
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// An unpacked stock kernel.
pub struct Kernel {
    /// `uname -r` of the kernel, e.g. `6.1.0-56-amd64`.
    pub version: String,
    /// The bootable image.
    pub vmlinuz: PathBuf,
    /// `lib/modules/VERSION` of the package, with `modules.dep` (for `modprobe` in virtme-ng).
    pub modules: PathBuf,
}

fn cache_dir() -> PathBuf {
    std::env::var_os("VMPRIV_GUEST_CACHE").map_or_else(|| PathBuf::from(CACHE), PathBuf::from)
}

/// Debian's stock kernel, fetched and unpacked on first use and cached in [`CACHE`] (one fetch per
/// process; later processes reuse the unpacked tree). Panics with the cause when apt cannot get it.
pub fn stock_kernel() -> &'static Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    KERNEL.get_or_init(fetch_stock_kernel)
}

fn fetch_stock_kernel() -> Kernel {
    // The metapackage names the current ABI's image package: `Depends: linux-image-6.1.0-NN-amd64`.
    let out = Command::new("apt-cache")
        .args(["depends", "linux-image-amd64"])
        .output()
        .expect("apt-cache runs (a Debian machine)");
    let deps = String::from_utf8_lossy(&out.stdout);
    let package = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .unwrap_or_else(|| {
            panic!("apt-cache depends linux-image-amd64 names no image package (run apt-get update): {deps}")
        })
        .to_owned();
    let version = package.trim_start_matches("linux-image-").to_owned();
    let cache = cache_dir();
    let root = cache.join(&package);
    let kernel = Kernel {
        vmlinuz: root.join(format!("boot/vmlinuz-{version}")),
        modules: root.join(format!("lib/modules/{version}")),
        version,
    };
    if root.join(".complete").exists() {
        return kernel;
    }
    std::fs::create_dir_all(&cache).unwrap();
    crate::chmod(&cache, 0o755);
    let work = cache.join(format!(".{package}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let status = Command::new("apt-get")
        // As root into a root-owned directory: no `_apt` sandbox (apt warns it cannot use it here).
        .args(["download", "-q", "-o", "APT::Sandbox::User=root", &package])
        .current_dir(&work)
        .status()
        .expect("apt-get runs");
    assert!(status.success(), "apt-get download {package} failed");
    let deb = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap_or_else(|| panic!("apt-get download {package} left no .deb in {}", work.display()));
    let tree = work.join("root");
    crate::sh(&["dpkg-deb", "-x", deb.to_str().unwrap(), tree.to_str().unwrap()]);
    // modules.dep for modprobe inside virtme-ng (the package ships none; its postinst makes it).
    crate::sh(&["depmod", "-b", tree.to_str().unwrap(), &kernel.version]);
    crate::chmod(&tree, 0o755);
    std::fs::write(
        tree.join(".complete"),
        deb.file_name().unwrap().as_encoded_bytes(),
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&tree, &root).unwrap();
    let _ = std::fs::remove_dir_all(&work);
    assert!(kernel.vmlinuz.exists(), "{} missing", kernel.vmlinuz.display());
    kernel
}

/// The guest's `/init`. It reads `vmpriv.inet=ADDR/LEN,PEER` and `vmpriv.inet6=ADDR/LEN,PEER` from
/// the kernel command line, configures eth0, waits for the peer to answer (ARP, and the host side's
/// IPv6 duplicate address detection, take a moment), then pings it 5 times and prints busybox's
/// output between `vmpriv-guest:` lines; then powers off. `vmpriv.eth1=ADDR/LEN,PEER` does the same
/// (IPv4) on a second NIC, eth1.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $MODULES; do insmod /lib/modules/$m.ko || echo "vmpriv-guest: insmod $m failed"; done
inet= inet6= eth1=
for w in $(cat /proc/cmdline); do
    case "$w" in
        vmpriv.inet=*) inet=${w#*=} ;;
        vmpriv.inet6=*) inet6=${w#*=} ;;
        vmpriv.eth1=*) eth1=${w#*=}@eth1 ;;
    esac
done
up() {
    i=0
    while [ ! -e /sys/class/net/$1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    echo 0 > /proc/sys/net/ipv6/conf/$1/accept_dad
    ip link set $1 up
}
up eth0
echo "vmpriv-guest: kernel $(uname -r), eth0 $(cat /sys/class/net/eth0/address), $(ls /sys/class/net/eth0/queues | grep -c rx-) rx queues"
for spec in $inet $inet6 $eth1; do
    dev=eth0
    case "$spec" in *@*) dev=${spec#*@} spec=${spec%@*}; up $dev ;; esac
    addr=${spec%,*} peer=${spec#*,}
    ip addr add "$addr" dev $dev
    i=1
    until ping -c 1 -W 1 "$peer" >/dev/null 2>&1 || [ $i -ge 30 ]; do i=$((i + 1)); done
    echo "vmpriv-guest: I am $addr on $dev ($(cat /sys/class/net/$dev/address)); $peer answered after $i tries; ping -c 5 -A $peer:"
    ping -c 5 -A "$peer"
    echo "vmpriv-guest: ping $peer exit $?"
done
echo "vmpriv-guest: done"
poweroff -f
"#;

/// Writes an initramfs (`newc` cpio, uncompressed) to `path`: busybox-static, the virtio modules
/// of `kernel`, and `INIT`. Readable by everyone (QEMU runs as uid 65534).
pub fn build_initramfs(kernel: &Kernel, path: &Path) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("busybox is installed (apt-get install busybox-static)");
    let ldd = Command::new("ldd").arg(busybox).output().unwrap();
    assert!(
        !ldd.status.success() || String::from_utf8_lossy(&ldd.stdout).contains("not a dynamic"),
        "{} is dynamically linked: install busybox-static",
        busybox.display()
    );
    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "proc", "sys", "lib", "lib/modules"] {
        cpio.dir(dir);
    }
    cpio.node("dev/console", 0o020_600, (5, 1));
    cpio.file("bin/busybox", 0o755, &std::fs::read(busybox).unwrap());
    let init = format!("MODULES='{}'\n", VIRTIO_MODULES.join(" "));
    let init = INIT.replacen('\n', &format!("\n{init}"), 1);
    cpio.file("init", 0o755, init.as_bytes());
    for m in VIRTIO_MODULES {
        let ko = find_module(&kernel.modules, m);
        cpio.file(&format!("lib/modules/{m}.ko"), 0o644, &std::fs::read(ko).unwrap());
    }
    std::fs::write(path, cpio.finish()).unwrap();
    crate::chmod(path, 0o644);
}

/// The `.ko` of module `name` under `modules` (Debian bookworm ships them uncompressed).
fn find_module(modules: &Path, name: &str) -> PathBuf {
    fn walk(dir: &Path, file: &str) -> Option<PathBuf> {
        for e in std::fs::read_dir(dir).ok()? {
            let p = e.ok()?.path();
            if p.is_dir() {
                if let Some(f) = walk(&p, file) {
                    return Some(f);
                }
            } else if p.file_name().is_some_and(|n| n == file) {
                return Some(p);
            }
        }
        None
    }
    walk(&modules.join("kernel"), &format!("{name}.ko"))
        .unwrap_or_else(|| panic!("module {name}.ko not in {}", modules.display()))
}

/// A `newc` cpio archive in memory: what the kernel unpacks as an initramfs.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let mut h = String::from("070701");
        let size = u32::try_from(data.len()).unwrap();
        let namesize = u32::try_from(name.len() + 1).unwrap();
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        for v in [
            self.ino, mode, 0, 0, 1, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ] {
            write!(h, "{v:08x}").unwrap();
        }
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, (0, 0), &[]);
    }

    fn node(&mut self, name: &str, mode: u32, rdev: (u32, u32)) {
        self.entry(name, mode, rdev, &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | perm, (0, 0), data);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

/// The QEMU arguments that boot `kernel` with `initramfs` under TCG on `cpus` vCPUs, with the
/// serial console on stdout. The caller adds `-append` ([`cmdline`]) and the NIC under test.
pub fn qemu_args(kernel: &Kernel, initramfs: &Path, cpus: u32) -> Vec<String> {
    [
        "-M",
        "pc",
        // TCG: nested KVM hangs at boot on the machines this runs on.
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "256",
        "-smp",
        &cpus.to_string(),
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        kernel.vmlinuz.to_str().unwrap(),
        "-initrd",
        initramfs.to_str().unwrap(),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// The guest kernel's command line, with the guest network `net` (`vmpriv.inet=ADDR/LEN,PEER`,
/// `vmpriv.inet6=…`) that `INIT` reads.
pub fn cmdline(net: &str) -> String {
    format!("console=ttyS0 quiet panic=-1 {net}")
}

/// What the guest printed on its serial console, read until QEMU exits (the guest powers off) or
/// `timeout` passes (then QEMU is killed and the test fails with the console so far).
pub struct Console {
    /// The console text, `\r` removed.
    pub text: String,
}

/// Reads `stdout` (`child`'s, the serial console) until `child` exits; panics on timeout or a
/// non-zero exit.
pub fn read_console(mut child: Child, mut stdout: impl Read + Send + 'static, timeout: Duration) -> Console {
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let text = String::from_utf8_lossy(&reader.join().unwrap()).replace('\r', "");
    match status {
        None => panic!("the guest did not power off within {timeout:?}; console:\n{text}\nQEMU: {err}"),
        Some(st) => assert!(st.success(), "QEMU exited {st}; console:\n{text}\nQEMU: {err}"),
    }
    Console { text }
}

/// One `ping -c 5` the guest ran, as busybox reported it.
#[derive(Debug)]
pub struct GuestPing {
    /// Echo requests sent.
    pub transmitted: u32,
    /// Replies received.
    pub received: u32,
    /// Busybox ping's exit status.
    pub exit: i32,
}

impl Console {
    /// The guest's ping of `peer`; panics if the console has none.
    pub fn ping(&self, peer: &str) -> GuestPing {
        let start = format!("-A {peer}:");
        let block: Vec<&str> = self
            .text
            .lines()
            .skip_while(|l| !(l.starts_with("vmpriv-guest: I am") && l.ends_with(&start)))
            .take_while(|l| !l.starts_with(&format!("vmpriv-guest: ping {peer} exit")))
            .collect();
        let stats = block
            .iter()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping of {peer} on the console:\n{}", self.text));
        let nums: Vec<u32> = stats
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        let exit = self
            .text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("vmpriv-guest: ping {peer} exit ")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no exit status of ping {peer}:\n{}", self.text));
        GuestPing {
            transmitted: nums[0],
            received: nums[1],
            exit,
        }
    }

    /// The lines the guest's init printed and busybox ping's output: what a person wants to see.
    pub fn guest_lines(&self) -> String {
        let mut out = String::new();
        let mut in_ping = false;
        for l in self.text.lines() {
            if l.starts_with("vmpriv-guest:") {
                in_ping = l.ends_with(':');
                out.push_str(l);
                out.push('\n');
            } else if in_ping && !l.starts_with('[') {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}
