//! What a VMM that is not installed here does with the taps it is given, replayed with the same
//! ioctls, so that vmpriv's recipes for it are tested against the kernel (tests/tests/multi.rs):
//!
//! - `firecracker NAME`: Firecracker's `host_dev_name`: open `/dev/net/tun`, `TUNSETIFF` by name with
//!   `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, `TUNSETVNETHDRSZ` (12, `virtio_net_hdr_v1`), `TUNSETOFFLOAD`;
//!   then writes one frame behind a vnet header and holds the tap until stdin closes, as a running
//!   VMM does.
//! - `crosvm N…`: crosvm's `--net tap-fd=N`, one NIC per fd: the fd must be a tap with `IFF_TAP |
//!   IFF_NO_PI | IFF_VNET_HDR` (crosvm's check of a given tap), then the vnet header size and offloads.
//! - `cloud-hypervisor N,N…`: cloud-hypervisor's `--net fd=[N,N…]`, one NIC whose queue pairs are the
//!   fds: each `TUNGETIFF`, then `TUNSETIFF` with its flags (an attached fd answers EEXIST, which it
//!   ignores: so the fd keeps the flags it has), then the vnet header size; all fds one tap, multi-queue
//!   when more than one, and with `IFF_VNET_HDR` (else the guest's headers would reach the wire).
//!
//! Prints one line per NIC: `PROBE <vmm> <ifname> fds=<list> vnet_hdr_size=12`; exits 1 naming what
//! the VMM would have refused.
#![allow(unsafe_code, clippy::print_stdout)]

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};

const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_UFO: libc::c_uint = 0x10;
/// `sizeof(struct virtio_net_hdr_v1)`: what Firecracker, crosvm and cloud-hypervisor set.
const VNET_HDR_SIZE: libc::c_int = 12;

fn fail(what: &str) -> ! {
    eprintln!("vmm-probe: {what}: {}", std::io::Error::last_os_error());
    std::process::exit(1);
}

fn refuse(what: &str) -> ! {
    eprintln!("vmm-probe: {what}");
    std::process::exit(1);
}

fn ifreq(name: &str, flags: libc::c_int) -> libc::ifreq {
    // SAFETY: a plain C struct of integers, arrays and a union of them; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    assert!(
        name.len() < ifr.ifr_name.len(),
        "{name}: longer than an interface name"
    );
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s.cast_signed();
    }
    ifr.ifr_ifru.ifru_flags = i16::try_from(flags).expect("tun flags fit the ifreq's 16 bits");
    ifr
}

/// `TUNGETIFF`: the tap's name and the fd's flags.
fn get_iff(fd: RawFd) -> (String, libc::c_int) {
    let mut ifr = ifreq("", 0);
    // SAFETY: TUNGETIFF writes one `struct ifreq`, which lives across the call.
    if unsafe { libc::ioctl(fd, libc::TUNGETIFF, &raw mut ifr) } < 0 {
        fail(&format!("TUNGETIFF on fd {fd} (not an attached tun fd)"));
    }
    let name = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| char::from(c.cast_unsigned()))
        .collect();
    // SAFETY: TUNGETIFF filled `ifru_flags`.
    (name, libc::c_int::from(unsafe { ifr.ifr_ifru.ifru_flags }))
}

fn vnet_hdr_and_offloads(fd: RawFd, offloads: bool) {
    let size = VNET_HDR_SIZE;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which lives across the call.
    if unsafe { libc::ioctl(fd, libc::TUNSETVNETHDRSZ, &raw const size) } < 0 {
        fail("TUNSETVNETHDRSZ");
    }
    if offloads {
        let flags = TUN_F_CSUM | TUN_F_UFO | TUN_F_TSO4 | TUN_F_TSO6;
        // SAFETY: TUNSETOFFLOAD takes its flags by value.
        if unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD, libc::c_ulong::from(flags)) } < 0 {
            fail("TUNSETOFFLOAD");
        }
    }
}

fn require(vmm: &str, fd: RawFd, flags: libc::c_int, multi_queue: bool) {
    let mut need = vec![
        (libc::IFF_TAP, "IFF_TAP"),
        (libc::IFF_NO_PI, "IFF_NO_PI"),
        (libc::IFF_VNET_HDR, "IFF_VNET_HDR"),
    ];
    if multi_queue {
        need.push((libc::IFF_MULTI_QUEUE, "IFF_MULTI_QUEUE"));
    }
    let missing: Vec<&str> = need
        .iter()
        .filter(|(f, _)| flags & f == 0)
        .map(|&(_, n)| n)
        .collect();
    if !missing.is_empty() {
        refuse(&format!("{vmm} refuses fd {fd}: missing {missing:?}"));
    }
}

fn parse_fds(args: &[String]) -> Vec<RawFd> {
    args.iter()
        .flat_map(|a| a.split(','))
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| refuse(&format!("{n}: not an fd number")))
        })
        .collect()
}

fn firecracker(name: &str) {
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .unwrap_or_else(|e| refuse(&format!("open /dev/net/tun: {e}")));
    let fd = tun.as_raw_fd();
    let mut ifr = ifreq(name, libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR);
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which lives across the call.
    if unsafe { libc::ioctl(fd, libc::TUNSETIFF, &raw mut ifr) } < 0 {
        fail(&format!("TUNSETIFF {name}"));
    }
    vnet_hdr_and_offloads(fd, true);
    // One broadcast frame behind a zeroed virtio_net_hdr_v1, as the guest's first packet would be.
    let mut frame = vec![0u8; VNET_HDR_SIZE.unsigned_abs() as usize];
    frame.extend([0xff; 6]); // destination: broadcast
    frame.extend([0x02, 0, 0, 0, 0, 0x01]); // source: a locally administered MAC
    frame.extend([0x88, 0xb5]); // the local experimental EtherType
    frame.extend([0u8; 46]);
    (&tun)
        .write_all(&frame)
        .unwrap_or_else(|e| refuse(&format!("write a frame: {e}")));
    println!("PROBE firecracker {name} fds={fd} vnet_hdr_size={VNET_HDR_SIZE}");
    std::io::stdout().flush().ok();
    // Hold the tap, as the running VMM would, until the test closes our stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(tun);
}

fn crosvm(fds: &[RawFd]) {
    for &fd in fds {
        let (name, flags) = get_iff(fd);
        require("crosvm", fd, flags, false);
        vnet_hdr_and_offloads(fd, true);
        println!("PROBE crosvm {name} fds={fd} vnet_hdr_size={VNET_HDR_SIZE}");
    }
}

fn cloud_hypervisor(fds: &[RawFd]) {
    let mut names = Vec::new();
    for &fd in fds {
        let (name, flags) = get_iff(fd);
        let mut set = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        if fds.len() > 1 {
            set |= libc::IFF_MULTI_QUEUE;
        }
        let mut ifr = ifreq("", set);
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which lives across the call.
        let r = unsafe { libc::ioctl(fd, libc::TUNSETIFF, &raw mut ifr) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
            fail(&format!("TUNSETIFF on fd {fd}"));
        }
        // The attached fd kept its own flags: the VMM's headers need IFF_VNET_HDR already there.
        require("cloud-hypervisor", fd, flags, fds.len() > 1);
        vnet_hdr_and_offloads(fd, false);
        names.push(name);
    }
    names.dedup();
    if names.len() != 1 {
        refuse(&format!(
            "cloud-hypervisor: the fds of one --net are queues of different taps: {names:?}"
        ));
    }
    let list: Vec<String> = fds.iter().map(ToString::to_string).collect();
    println!(
        "PROBE cloud-hypervisor {} fds={} vnet_hdr_size={VNET_HDR_SIZE} num_queues={}",
        names.first().map_or("", String::as_str),
        list.join(","),
        2 * fds.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((vmm, [name])) if vmm == "firecracker" => firecracker(name),
        Some((vmm, rest)) if vmm == "crosvm" && !rest.is_empty() => crosvm(&parse_fds(rest)),
        Some((vmm, [list])) if vmm == "cloud-hypervisor" => {
            cloud_hypervisor(&parse_fds(std::slice::from_ref(list)));
        }
        _ => refuse("usage: vmpriv-vmm-probe firecracker NAME | crosvm N... | cloud-hypervisor N,N..."),
    }
}
