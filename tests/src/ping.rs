//! A VM's first packets, written by hand into a tap fd: an ARP request for the host side of the /31,
//! then ICMP echo requests, reading the kernel's replies from the same fd. Used by the demo and by the
//! test of the same flow.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// The MAC our pretend guest uses (QEMU's default prefix).
pub const VM_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).expect("folded to 16 bits above")
}

/// An Ethernet ARP request from (`mac`, `ip`) for `target`.
pub fn arp_request(mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// An Ethernet + IPv4 + ICMP echo request.
pub fn echo_request(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
    seq: u16,
) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(b"vmpriv demo payload, 32 bytes!!!");
    let c = checksum(&icmp).to_be_bytes();
    icmp[2..4].copy_from_slice(&c);
    let total = u16::try_from(20 + icmp.len()).unwrap_or(u16::MAX).to_be_bytes();
    let mut ip = vec![0x45, 0, total[0], total[1], 0, 1, 0x40, 0, 64, 1, 0, 0];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip).to_be_bytes();
    ip[10..12].copy_from_slice(&c);
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend(ip);
    f.extend(icmp);
    f
}

/// An IPv6 router advertisement from the VM's link-local address to all nodes, announcing itself as
/// a default router (lifetime 1800 s) and `prefix`/64 for SLAAC: what a hostile guest sends to take
/// the host's IPv6 default route.
pub fn router_advertisement(mac: [u8; 6], prefix: std::net::Ipv6Addr) -> Vec<u8> {
    let src = std::net::Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([mac[0] ^ 2, mac[1]]),
        u16::from_be_bytes([mac[2], 0xff]),
        u16::from_be_bytes([0xfe, mac[3]]),
        u16::from_be_bytes([mac[4], mac[5]]),
    );
    let dst: std::net::Ipv6Addr = "ff02::1".parse().unwrap_or(std::net::Ipv6Addr::UNSPECIFIED);
    // type 134, code 0, checksum, hop limit 64, flags 0, router lifetime 1800, reachable 0, retrans 0
    let mut icmp = vec![134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    // prefix information: /64, on-link + autonomous, valid 86400 s, preferred 14400 s
    icmp.extend_from_slice(&[3, 4, 64, 0xc0, 0, 1, 0x51, 0x80, 0, 0, 0x38, 0x40, 0, 0, 0, 0]);
    icmp.extend_from_slice(&prefix.octets());
    // source link-layer address
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&mac);
    let len = u16::try_from(icmp.len()).unwrap_or(u16::MAX);
    let mut pseudo = src.octets().to_vec();
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&u32::from(len).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&icmp);
    let c = checksum(&pseudo).to_be_bytes();
    icmp[2..4].copy_from_slice(&c);
    let mut f = vec![0x33, 0x33, 0, 0, 0, 1];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend(icmp);
    f
}

/// Reads frames from `fd` until `want` accepts one or `deadline` passes.
fn read_until<T>(
    fd: BorrowedFd<'_>,
    deadline: Instant,
    want: impl Fn(&[u8]) -> Option<T>,
) -> Result<T, String> {
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no reply before the deadline".to_owned());
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(ms)).map_err(|e| format!("poll: {e}"))?;
        if fds[0].revents().is_none_or(|r| !r.contains(PollFlags::POLLIN)) {
            continue;
        }
        let n = nix::unistd::read(fd, &mut buf).map_err(|e| format!("read from the tap: {e}"))?;
        if let Some(t) = want(&buf[..n]) {
            return Ok(t);
        }
    }
}

/// ARP for `host`, then `count` echo requests from `vm` to `host`; the round-trip times.
pub fn arp_and_ping(
    tap: impl AsFd,
    vm: Ipv4Addr,
    host: Ipv4Addr,
    count: u16,
) -> Result<(Duration, Vec<Duration>), String> {
    let fd = tap.as_fd();
    let write = |frame: &[u8]| nix::unistd::write(fd, frame).map_err(|e| format!("write to the tap: {e}"));
    let t0 = Instant::now();
    write(&arp_request(VM_MAC, vm, host))?;
    let host_mac = read_until(fd, t0 + Duration::from_secs(3), |f| {
        // Ethertype ARP, opcode reply, sender IP = host.
        (f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2] && f[28..32] == host.octets())
            .then(|| <[u8; 6]>::try_from(&f[22..28]).expect("a 6-byte slice"))
    })?;
    let arp_rtt = t0.elapsed();
    let mut rtts = Vec::new();
    for seq in 1..=count {
        let id = 0x7670;
        let t = Instant::now();
        write(&echo_request(VM_MAC, host_mac, vm, host, id, seq))?;
        read_until(fd, t + Duration::from_secs(3), |f| {
            // IPv4, ICMP, echo reply, our id and seq, from host to vm.
            let ok = f.len() >= 42
                && f[12..14] == [0x08, 0x00]
                && f[23] == 1
                && f[26..30] == host.octets()
                && f[30..34] == vm.octets()
                && f[34] == 0
                && f[38..40] == id.to_be_bytes()
                && f[40..42] == seq.to_be_bytes();
            ok.then_some(())
        })?;
        rtts.push(t.elapsed());
    }
    Ok((arp_rtt, rtts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify_to_zero() {
        let f = echo_request(
            VM_MAC,
            [0xfe; 6],
            Ipv4Addr::new(100, 64, 1, 3),
            Ipv4Addr::new(100, 64, 1, 2),
            1,
            1,
        );
        assert_eq!(checksum(&f[14..34]), 0, "IPv4 header");
        assert_eq!(checksum(&f[34..]), 0, "ICMP");
        assert_eq!(
            arp_request(VM_MAC, Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST).len(),
            42
        );
    }
}
