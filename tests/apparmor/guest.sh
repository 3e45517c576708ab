#!/bin/sh
# Runs inside the virtme-ng guest that tests/tests/apparmor.rs boots (Debian's stock kernel with
# `apparmor=1 security=apparmor`, this machine's root shared read-only, /etc, /usr and /var overlaid
# on the guest's tmpfs, so nothing here reaches the host). As root in the guest:
#   without: the package's old layout (the real bridge helper in /usr/libexec/vmpriv), libvirt's
#            profiles loaded, ours not: a session domain with a bridged interface must fail to start
#            with libvirtd's exec denial in the kernel log;
#   with:    the package installed with dpkg -i (the real file in /usr/sbin, the symlink in
#            /usr/libexec/vmpriv, the profiles its postinst loads in enforce mode): the domain runs,
#            its tap is on the bridge, owned by the user, and the kernel logged no denial;
#   broken:  our profile without its netlink rule: the start fails with a denial in OUR profile (the
#            helper really runs confined by it);
#   session: the session helper, setuid, confined by its profile, makes a tap for `vmpriv tap`.
# Every check prints `vmpriv-apparmor: ok - …` or `vmpriv-apparmor: FAIL - …`; the last line is
# `vmpriv-apparmor: N passed, M failed`. Arguments: BRIDGE_HELPER (a build of it, for the old layout)
# DEB (the package, packaging/build-deb.sh's) PROFILE_DIR (packaging/apparmor, what the package ships).
set -u
bridge_bin=$1 deb=$2 profiles=$3
passed=0 failed=0
check() {
    what=$1
    shift
    if "$@"; then
        echo "vmpriv-apparmor: ok - $what"
        passed=$((passed + 1))
    else
        echo "vmpriv-apparmor: FAIL - $what"
        failed=$((failed + 1))
    fi
}
# say TEXT: TEXT's lines after the first are marked as continued, never read as a check's line.
say() { printf '%s\n' "$*" | sed '1s/^/vmpriv-apparmor: /; 2,$s/^/vmpriv-apparmor:   | /'; }
finish() {
    say "$passed passed, $failed failed"
    exit 0
}

dmesg -n 1 # kernel lines (the audit records) are read with dmesg, not mixed into the output
work=/run/vmpriv-aa
mkdir -p "$work/home" "$work/xdg"
chown 65534:65534 "$work/home" "$work/xdg"
chmod 0700 "$work/xdg"
as_user() {
    setpriv --reuid=65534 --regid=65534 --clear-groups env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        HOME="$work/home" XDG_RUNTIME_DIR="$work/xdg" "$@"
}
# denials SINCE PATTERN: the kernel's AppArmor denials logged after line SINCE that match PATTERN.
denials() { dmesg | tail -n +"$(($1 + 1))" | grep 'apparmor="DENIED"' | grep -e "$2"; }
mark() { dmesg | wc -l; }

check "AppArmor is enabled in the guest kernel" test "$(cat /sys/module/apparmor/parameters/enabled)" = Y
modprobe -a tun bridge
ip link add br0 type bridge && ip link set br0 address 02:00:5e:00:00:01 up

# libvirt's profiles, as an AppArmor host loads them at boot.
for p in usr.sbin.libvirtd usr.lib.libvirt.virt-aa-helper; do
    check "apparmor_parser loads libvirt's $p" apparmor_parser -r -K "/etc/apparmor.d/$p"
done

# The session daemon, the README's qemu.conf, and a domain with one bridged interface.
mkdir -p "$work/home/.config/libvirt"
echo 'bridge_helper = "/usr/libexec/vmpriv/vmpriv-bridge-helper"' >"$work/home/.config/libvirt/qemu.conf"
cat >"$work/home/dom.xml" <<'XML'
<domain type='qemu'>
  <name>vmpriv-aa</name>
  <memory unit='MiB'>32</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='bridge'><source bridge='br0'/><model type='virtio'/></interface>
  </devices>
</domain>
XML
chown -R 65534:65534 "$work/home"
as_user libvirtd --timeout 900 >"$work/libvirtd.log" 2>&1 &
i=0
while [ ! -S "$work/xdg/libvirt/libvirt-sock" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
libvirtd_pid=$(pgrep -u 65534 -x libvirtd)
label=$(cat "/proc/$libvirtd_pid/attr/current" 2>&1)
say "libvirtd (pid $libvirtd_pid) runs as: $label"
check "the session libvirtd runs confined by libvirt's profile" test "$label" = "libvirtd (enforce)"
virsh_() { as_user virsh -q -c qemu:///session "$@"; }
check "virsh defines the domain" virsh_ define "$work/home/dom.xml"
# tap_on_br0: the name of a tun link on br0 owned by uid 65534, if the kernel shows one.
tap_on_br0() {
    ip -d -j link show master br0 | python3 -c 'import json, sys
for l in json.load(sys.stdin):
    d = l.get("linkinfo", {}).get("info_data", {})
    if l.get("linkinfo", {}).get("info_kind") == "tun" and d.get("user") in ("nobody", 65534):
        print(l["ifname"])'
}

say "== without our part: the real file in /usr/libexec/vmpriv, no vmpriv profile"
mkdir -p /usr/libexec/vmpriv
install -o root -g root -m 4755 "$bridge_bin" /usr/libexec/vmpriv/vmpriv-bridge-helper
since=$(mark)
out=$(virsh_ start vmpriv-aa 2>&1)
say "virsh start: $out"
check "the domain does not start" test "$(virsh_ domstate vmpriv-aa)" = "shut off"
check "virsh says libvirt cannot execute the helper" \
    grep -q 'cannot execute binary /usr/libexec/vmpriv/vmpriv-bridge-helper: Permission denied' <<EOM
$out
EOM
d=$(denials "$since" 'operation="exec"')
say "kernel: $d"
check "the kernel denied libvirtd the exec" \
    grep -q 'profile="libvirtd" name="/usr/libexec/vmpriv/vmpriv-bridge-helper"' <<EOM
$d
EOM
check "no tap on br0" test -z "$(tap_on_br0)"

say "== with our part: the package, installed with dpkg -i"
rm -r /usr/libexec/vmpriv
# --no-triggers: man-db's trigger has nothing to do with this (and its interest is noawait).
# stdin /dev/null: a dpkg prompt fails here instead of waiting for ever.
out=$(dpkg --log=/dev/null --no-triggers -i "$deb" 2>&1 </dev/null)
say "dpkg -i: $out"
check "dpkg -i installs the package" test "$(dpkg-query -W -f='${Status}' vmpriv 2>&1)" = "install ok installed"
# The administrator's grant (the installed policy grants nothing).
echo 'allow user nobody switch br0' >>/etc/vmpriv/policy.conf
for name in vmpriv-bridge-helper vmpriv-helper; do
    check "its postinst loaded profile $name in enforce mode" \
        grep -qx "$name (enforce)" /sys/kernel/security/apparmor/profiles
done
since=$(mark)
out=$(virsh_ start vmpriv-aa 2>&1)
say "virsh start: $out"
check "the domain runs" test "$(virsh_ domstate vmpriv-aa)" = running
tap=$(tap_on_br0)
say "tap on br0 owned by nobody: ${tap:-none}"
check "its tap is on br0, owned by the user" test -n "$tap"
d=$(denials "$since" .)
say "kernel: ${d:-no denial}"
check "the kernel logged no AppArmor denial" test -z "$d"
virsh_ destroy vmpriv-aa >/dev/null
check "after virsh destroy the tap is gone" test -z "$(tap_on_br0)"

say "== our profile without its netlink rule: the helper runs in it, so this start must fail"
grep -v 'network netlink raw' "$profiles/usr.sbin.vmpriv-bridge-helper" >/etc/apparmor.d/usr.sbin.vmpriv-bridge-helper
apparmor_parser -r -K /etc/apparmor.d/usr.sbin.vmpriv-bridge-helper
since=$(mark)
out=$(virsh_ start vmpriv-aa 2>&1)
say "virsh start: $out"
check "the domain does not start" test "$(virsh_ domstate vmpriv-aa)" = "shut off"
d=$(denials "$since" .)
say "kernel: $d"
check "the kernel denied netlink in vmpriv-bridge-helper's profile" \
    grep -q 'profile="vmpriv-bridge-helper" .*family="netlink"' <<EOM
$d
EOM

say "== no vmpriv-bridge-helper profile loaded (an administrator removed it): libvirtd's PUx runs the helper unconfined"
apparmor_parser -R /etc/apparmor.d/usr.sbin.vmpriv-bridge-helper
out=$(virsh_ start vmpriv-aa 2>&1)
say "virsh start: $out"
check "the unconfined fallback: the domain runs" test "$(virsh_ domstate vmpriv-aa)" = running
check "the unconfined fallback: its tap is on br0" test -n "$(tap_on_br0)"
virsh_ destroy vmpriv-aa >/dev/null
install -m 0644 "$profiles/usr.sbin.vmpriv-bridge-helper" /etc/apparmor.d/usr.sbin.vmpriv-bridge-helper
apparmor_parser -r -K /etc/apparmor.d/usr.sbin.vmpriv-bridge-helper

say "== the session helper (setuid, no systemd here) confined by its profile"
chmod 4755 /usr/libexec/vmpriv/vmpriv-helper
vmpriv_tap() { as_user /usr/bin/vmpriv tap --switch br0 -- sh -c 'ip -d -j link show "$VMPRIV_TAP_NAME"' 2>&1; }
since=$(mark)
out=$(vmpriv_tap)
say "vmpriv tap: $out"
check "vmpriv tap got a tap on br0 from the confined session helper" grep -q '"master":"br0"' <<EOM
$out
EOM
d=$(denials "$since" .)
say "kernel: ${d:-no denial}"
check "the kernel logged no AppArmor denial" test -z "$d"
say "== the session helper's profile without its netlink rule: vmpriv tap must fail"
grep -v 'network netlink raw' "$profiles/usr.libexec.vmpriv.vmpriv-helper" >/etc/apparmor.d/usr.libexec.vmpriv.vmpriv-helper
apparmor_parser -r -K /etc/apparmor.d/usr.libexec.vmpriv.vmpriv-helper
since=$(mark)
out=$(vmpriv_tap)
say "vmpriv tap: $out"
check "vmpriv tap got no tap" sh -c '! printf %s "$1" | grep -q "\"master\":\"br0\""' - "$out"
check "the kernel denied netlink in vmpriv-helper's profile" grep -q 'family="netlink"' <<EOM
$(denials "$since" 'profile="vmpriv-helper"')
EOM
install -m 0644 "$profiles/usr.libexec.vmpriv.vmpriv-helper" /etc/apparmor.d/usr.libexec.vmpriv.vmpriv-helper
apparmor_parser -r -K /etc/apparmor.d/usr.libexec.vmpriv.vmpriv-helper
check "no tap is left on br0" test -z "$(ip -j link show master br0 | python3 -c 'import json, sys; print(json.load(sys.stdin) or "")')"
kill "$libvirtd_pid"
check "the guest script reached its end" true
finish
