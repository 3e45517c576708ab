#!/usr/bin/env python3
"""`perf script -F comm,pid,time,ip,sym` (with -g) on stdin; argv: START END NICS HZ PIDS. Per command name,
the CPU time per NIC of the samples between START and END (of PIDS, and of kernel workers) by step: the
syscall, refined to the rtnetlink, tun or file steps it reached; a worker's by its work function; `user`
for samples outside the kernel. Called by bench/profile/run."""
import sys, collections
start, end, nics, hz = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
pids = set(sys.argv[5].split(",")) if len(sys.argv) > 5 else None
REFINE = ["rtnl_newlink", "rtnl_setlink", "rtnl_getlink", "rtnl_dump_ifinfo", "inet6_rtm_newaddr",
          "inet_rtm_newaddr", "inet6_dump_ifaddr", "rtnl_dellink", "tun_set_iff", "tun_chr_open", "__tun_chr_ioctl",
          "netlink_recvmsg", "unix_stream_sendmsg", "unix_stream_recvmsg", "unix_dgram_sendmsg",
          "unix_seqpacket_sendmsg", "unix_dgram_recvmsg", "proc_sys_call_handler", "addrconf_sysctl",
          "netlink_sendmsg", "__schedule", "tun_chr_close", "do_setlink", "netdev_state_change",
          "dev_change_flags", "br_add_if", "addrconf_notify", "ipv6_add_addr", "register_netdevice",
          "dev_set_mtu", "dev_set_alias", "dev_set_group", "tun_attach", "__dev_open", "dev_set_mac_address",
          "rtnl_dump_all", "netlink_dump", "proc_sys_write", "proc_sys_read", "path_openat", "synchronize_net",
          "synchronize_rcu", "rtnl_lock", "mutex_lock", "__mutex_lock", "fib6_run_gc", "rt6_sync_up",
          "fib6_clean_all", "inet6_ifa_notify", "netlink_broadcast", "call_netdevice_notifiers",
          "inet_rtm_getroute", "inet6_rtm_getroute", "rtnl_newlinkprop", "rtnl_linkprop", "unix_seqpacket_recvmsg",
          "kernfs_fop_read_iter", "proc_sys_call_handler"]
# Steps folded into what they are for (--summary), first match wins.
CATEGORIES = [
    ("tap creation (TUNSETIFF)", ["register_netdevice", "tun_set_iff", "tun_chr_open"]),
    ("MAC (SIOCSIFHWADDR)", ["dev_set_mac_address"]),
    ("bridge port (IFLA_MASTER)", ["br_add_if"]),
    ("slot claim (altname)", ["linkprop"]),
    ("addresses (RTM_NEWADDR)", ["rtm_newaddr"]),
    ("lookups (links, routes, dumps)", ["rtnl_getlink", "getroute", "dump"]),
    ("deletes (RTM_DELLINK)", ["rtnl_dellink"]),
    ("IPv6 FIB walks on link events (rt6_sync_up)", ["rt6_sync_up"]),
    ("up, alias, MTU, group (RTM_SETLINK)", ["rtnl_setlink"]),
    ("other tun ioctls", ["ioctl"]),
    ("sysfs and sysctl files", ["openat", "read", "write", "close", "newfstatat", "statx"]),
    ("IPC with the caller", ["unix_", "recvmsg", "sendmsg"]),
    ("user space", ["user"]),
]
def category(step):
    for name, keys in CATEGORIES:
        if any(k in step for k in keys):
            return name
    return "other kernel"
KW = ["addrconf_dad_work", "addrconf_verify_work", "linkwatch_event", "rt6_probe_deferred", "mld_ifc_work",
      "mld_dad_work", "mld_gq_work", "fib6_gc_timer_cb", "flush_all_backlogs", "netstamp_clear", "cleanup_net",
      "br_multicast", "rcu_", "process_one_work"]
def classify(frames):
    syscall = None
    for f in frames:
        if f.startswith(("__x64_sys_", "__do_sys_", "__se_sys_", "__sys_", "ksys_")):
            for prefix in ("__x64_sys_", "__do_sys_", "__se_sys_", "__sys_", "ksys_"):
                f = f.removeprefix(prefix)
            syscall = f
            break
    if syscall is None and any(f == "worker_thread" for f in frames):
        for f in reversed(frames):
            if f != "process_one_work" and any(f.startswith(k) for k in KW):
                return "work:" + f
        i = frames.index("process_one_work") if "process_one_work" in frames else 0
        return "work:" + (frames[i - 1] if i > 0 else "?")
    if syscall is None:
        return "user" if not any(f.startswith(("asm_", "entry_", "exc_")) for f in frames) else "kernel:" + (frames[-1] if frames else "?")
    # innermost-first frames: the outermost refinement below the syscall wins
    refined = [f for f in frames if f in REFINE]
    chain = [f for f in reversed(refined) if f != "netlink_sendmsg"][:3]
    return ":".join([syscall] + chain)
counts = collections.defaultdict(collections.Counter)
own = collections.Counter()
comm = t = pid = None; frames = []
def flush():
    mine = comm is not None and pids is not None and (pid in pids or "comm:" + comm in pids)
    if comm is not None and start <= t <= end and (mine or comm.startswith("kworker")):
        counts[comm][classify(frames)] += 1
        own[comm] += mine
for line in sys.stdin:
    if not line.strip():
        flush(); comm = None; frames = []; continue
    if not line.startswith((" ", "\t")):
        parts = line.split()
        comm, pid, t = parts[0], parts[1], float(parts[2].rstrip(":")); frames = []
    else:
        w = line.split()
        frames.append(w[1] if len(w) > 1 else "?")
flush()
us = 1e6 / hz / nics
total = 0
for c, cnt in sorted(counts.items(), key=lambda kv: -sum(kv[1].values())):
    s = sum(cnt.values()); total += s
    print(f"{c}: {s*us:.0f} us/NIC on CPU")
    for k, v in cnt.most_common(25):
        print(f"   {v*us:7.1f}  {k}")
if "--summary" in sys.argv:
    for c, cnt in counts.items():
        if c.startswith("kworker"):
            continue
        cats = collections.Counter()
        for k, v in cnt.items():
            cats[category(k)] += v
        print(f"{c}, by what the step is for:")
        for k, v in cats.most_common():
            print(f"   {v*us:7.1f}  {k}")
mine = sum(own.values())
print(f"the contender's processes: {mine*us:.0f} us/NIC on CPU; kernel workers {(total-mine)*us:.0f}; "
      f"wall {(end-start)*1e6/nics:.0f} us/NIC")
