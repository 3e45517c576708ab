#!/usr/bin/env bash
# The package test (run by .ci/run as root; never skips). Builds the package with build-deb.sh, reads
# it with `dpkg-deb -c` and `-I` (modes, owners, conffiles, man pages, completions), then installs it
# with `dpkg -i` in a throwaway mount and network namespace whose /usr, /etc and /var/lib/dpkg are
# overlays with their upper directories on a tmpfs, and there runs the installed setuid bridge helper
# as uid 65534, and `vmpriv whoami` through the session helper once an admin made it setuid (the
# supported step for a host without systemd). Then it installs it again into a writable copy of the
# host's root and boots that with systemd-nspawn, to run the session helper from the vmpriv.socket
# the package enabled, under a real systemd (under_systemd below). Afterwards the host must be as it
# was.
# Every check prints `ok - …` or `FAIL - …`; the last line is `package: N passed, M failed`, and any
# failure makes the exit status 1.
set -euo pipefail

helper=/usr/libexec/vmpriv/vmpriv-helper
# The bridge helper's real file; /usr/libexec/vmpriv/vmpriv-bridge-helper is a symlink to it (AppArmor:
# libvirtd's profile may run /usr/sbin/*, docs/design.md).
bridge=/usr/sbin/vmpriv-bridge-helper
bridge_link=/usr/libexec/vmpriv/vmpriv-bridge-helper
wants=/etc/systemd/system/sockets.target.wants/vmpriv.socket
# dpkg-deb -c shows owners by name or by number (cargo-deb writes numbers).
ROOT='(root/root|0/0)'

# check DESCRIPTION COMMAND...: runs COMMAND, records ok or FAIL in $VMPRIV_PKG_RESULTS.
check() {
    local what=$1
    shift
    if "$@"; then
        echo "ok - $what" | tee -a "$VMPRIV_PKG_RESULTS"
    else
        echo "FAIL - $what" | tee -a "$VMPRIV_PKG_RESULTS"
    fi
}

# has PATTERN TEXT: TEXT has a line matching the extended regex PATTERN.
has() { grep -Eq -- "$1" <<<"$2"; }

# bridge_as_nobody: the installed bridge helper, by the path QEMU and libvirt are given, as uid 65534,
# QEMU's way (one end of a stream socketpair, --br=br0); prints its exit status and its stderr on one
# line.
bridge_as_nobody() {
    python3 - "$bridge_link" <<'PY'
import socket, subprocess, sys
ours, theirs = socket.socketpair()
r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.argv[1],
                    "--br=br0", "--fd=%d" % theirs.fileno()], pass_fds=[theirs.fileno()],
                   capture_output=True, text=True)
print(r.returncode, r.stderr.strip())
PY
}

# Inside the namespace: overlays, dpkg -i, the installed files, whoami as nobody, dpkg --purge.
inside() {
    local deb=$1 scratch=$2
    mount --make-rprivate /
    mount -t tmpfs -o mode=0755 vmpriv-pkg-test "$scratch"
    # deb-systemd-helper keeps its state in /var/lib/systemd; an empty /run has no running systemd, so
    # the maintainer scripts start and reload nothing (the host's systemd, if any, is not ours).
    mount -t tmpfs -o mode=0755 vmpriv-pkg-run /run
    for dir in /usr /etc /var/lib/dpkg /var/lib/systemd; do
        local n=${dir//\//_}
        mkdir -p "$scratch/$n/upper" "$scratch/$n/work"
        mount -t overlay overlay \
            -o "lowerdir=$dir,upperdir=$scratch/$n/upper,workdir=$scratch/$n/work" "$dir"
    done
    ip link set lo up

    # --log: dpkg.log is outside the overlays. --no-triggers: man-db's trigger would write
    # /var/cache/man; its interest is noawait, so vmpriv is still fully installed.
    local out
    out=$(dpkg --log=/dev/null --no-triggers -i "$deb" 2>&1) || echo "$out"
    check "dpkg -i installs the package" \
        test "$(dpkg-query -W -f='${Status}' vmpriv 2>&1)" = "install ok installed"
    check "the installed bridge helper is mode 4755 root:root" \
        test "$(stat -c '%a %U:%G' "$bridge")" = "4755 root:root"
    check "the installed session helper is mode 755 root:root (not setuid)" \
        test "$(stat -c '%a %U:%G' "$helper")" = "755 root:root"
    check "the package enabled vmpriv.socket" \
        has '^(/usr)?/lib/systemd/system/vmpriv\.socket$' "$(readlink "$wants")"
    check "dpkg knows /etc/vmpriv/policy.conf as a conffile" \
        has '^ /etc/vmpriv/policy.conf [0-9a-f]{32}$' "$(dpkg-query -W -f='${Conffiles}\n' vmpriv)"
    check "the man pages are where man looks" \
        test -f /usr/share/man/man1/vmpriv.1.gz -a -f /usr/share/man/man5/vmpriv.conf.5.gz \
        -a -f /usr/share/man/man8/vmpriv-helper.8.gz -a -f /usr/share/man/man8/vmpriv-bridge-helper.8.gz
    check "dpkg --verify: every installed file has the sum the package's md5sums gives" \
        test -z "$(dpkg --verify vmpriv 2>&1)"
    echo '# changed' >>/usr/share/doc/vmpriv/README.md
    check "and dpkg --verify finds a changed file (so the md5sums were read)" \
        has '^\?\?5\?{6} +/usr/share/doc/vmpriv/README\.md$' "$(dpkg --verify vmpriv 2>&1)"
    local docs unit_doc man_refs
    unit_doc=$(sed -n 's/^Documentation=//p' /usr/lib/systemd/system/vmpriv.socket \
        /usr/lib/systemd/system/vmpriv@.service | tr ' ' '\n' | sed -n 's/^file://p')
    echo "$unit_doc" | sed 's/^/    Documentation=file:/'
    check "each unit's Documentation=file: path exists on the installed system" \
        test "$(wc -l <<<"$unit_doc")" -ge 2 -a "$(for d in $unit_doc; do [ -f "$d" ] || echo "$d"; done)" = ""
    man_refs=$(zcat /usr/share/man/man*/vmpriv*.gz | grep -o '/usr/share/doc/[^ ]*[^ .,)]' | sort -u)
    echo "$man_refs" | sed 's/^/    man page names: /'
    check "each /usr/share/doc path the man pages name exists on the installed system" \
        test -n "$man_refs" -a "$(for d in $man_refs; do [ -e "$d" ] || echo "$d"; done)" = ""
    docs=$(zcat /usr/share/man/man*/vmpriv*.gz | grep -E '(^|[^/])docs/[A-Za-z_-]+\.md' || true)
    check "no man page names a docs/*.md path that exists only in a checkout" test -z "$docs"
    check "vmpriv-helper --version runs" \
        has '^vmpriv-helper [0-9]+\.[0-9]+\.[0-9]+$' "$("$helper" --version)"
    check "vmpriv-bridge-helper --version runs" \
        has '^vmpriv-bridge-helper [0-9]+\.[0-9]+\.[0-9]+$' "$("$bridge" --version)"

    local policy
    policy=$(vmpriv check-policy 2>&1) || true
    check "vmpriv check-policy accepts the installed policy and its grants summary is empty" \
        test "$(sed -n '/^# What this grants/,$p' <<<"$policy")" = \
        "$(printf '%s\n' '# What this grants (any matching deny overrides; no grant, no tap):' \
            '#   every other caller: nothing')"
    check "the installed policy has no rule line, only comments" \
        test -z "$(grep -Ev '^[[:space:]]*(#|$)' /etc/vmpriv/policy.conf)"

    # The bridge helper as QEMU runs it: setuid, so it gets as far as the policy, which grants nothing.
    local qemu
    qemu=$(bridge_as_nobody)
    echo "    bridge helper: $qemu"
    check "the bridge helper as uid 65534 runs privileged and the policy refuses br0: exit 1, one line" \
        has '^1 vmpriv-bridge-helper: cannot give a tap on bridge br0: denied' "$qemu"
    chmod 0755 "$bridge"
    check "without its setuid bit it says it has no CAP_NET_ADMIN (the packaged one was the one run)" \
        has '^1 vmpriv-bridge-helper: no CAP_NET_ADMIN' "$(bridge_as_nobody)"
    chmod 4755 "$bridge"

    # As uid 65534, with no VMPRIV_HELPER and no systemd here: no socket, and the session helper is not
    # setuid, so the client finds no helper that can serve it.
    local whoami status=0
    whoami=$(env -u VMPRIV_HELPER setpriv --reuid=65534 --regid=65534 --clear-groups \
        /usr/bin/vmpriv whoami 2>&1) || status=$?
    check "without systemd's socket, whoami fails with exit 3 (the session helper is not setuid)" \
        test "$status" = 3
    # The supported step on a host without systemd: the session helper setuid, kept across upgrades.
    dpkg-statoverride --update --add root root 4755 "$helper"
    out=$(dpkg --log=/dev/null --no-triggers -i "$deb" 2>&1) || echo "$out"
    check "with a 4755 statoverride, a reinstall leaves the session helper setuid" \
        test "$(stat -c '%a %U:%G' "$helper")" = "4755 root:root"
    status=0
    whoami=$(env -u VMPRIV_HELPER setpriv --reuid=65534 --regid=65534 --clear-groups \
        /usr/bin/vmpriv whoami 2>&1) || status=$?
    echo "$whoami" | sed 's/^/    whoami: /'
    check "vmpriv whoami as uid 65534 exits 0 through the setuid session helper" test "$status" = 0
    check "whoami names uid 65534" has '^uid 65534 ' "$whoami"
    check "whoami: no quota under the installed policy" has '^taps: 0 live of 0 allowed$' "$whoami"
    check "whoami: no rule names the caller" has '^no policy rule names you' "$whoami"
    dpkg-statoverride --remove "$helper"

    # The administrator's alternative for the bridge helper: mode 0755 kept by dpkg-statoverride,
    # cap_net_admin given back by the postinst on every install.
    dpkg-statoverride --update --add root root 0755 "$bridge"
    out=$(dpkg --log=/dev/null --no-triggers -i "$deb" 2>&1) || echo "$out"
    check "with a 0755 statoverride, a reinstall leaves the bridge helper mode 0755" \
        test "$(stat -c '%a %U:%G' "$bridge")" = "755 root:root"
    check "and the postinst gives it cap_net_admin+ep" \
        has 'cap_net_admin[=+]ep' "$(getcap "$bridge")"
    check "the bridge helper as uid 65534 works through the file capability too" \
        has '^1 vmpriv-bridge-helper: cannot give a tap on bridge br0: denied' "$(bridge_as_nobody)"
    dpkg-statoverride --remove "$bridge"

    out=$(dpkg --log=/dev/null --no-triggers -r vmpriv 2>&1) || echo "$out"
    check "dpkg -r removes both helpers and keeps the policy" \
        test ! -e "$helper" -a ! -e "$bridge" -a ! -L "$bridge_link" -a -e /etc/vmpriv/policy.conf
    out=$(dpkg --log=/dev/null --no-triggers --purge vmpriv 2>&1) || echo "$out"
    check "dpkg --purge removes the policy and the socket's enable link" \
        test ! -e /etc/vmpriv/policy.conf -a ! -e /usr/bin/vmpriv -a ! -L "$wants"
    check "the purge removes the AppArmor profiles too" \
        test ! -e /etc/apparmor.d/usr.sbin.vmpriv-bridge-helper -a \
        ! -e /etc/apparmor.d/usr.libexec.vmpriv.vmpriv-helper
}

# Inside a second throwaway namespace: a writable copy of the host's root (an overlay of / with its
# upper directory on a tmpfs), the package installed there with dpkg -i (which enables vmpriv.socket;
# the session helper is not setuid, so only the socket can serve), and systemd booted in it with
# systemd-nspawn (a network namespace of its own). A oneshot unit runs the checks as the container's
# root, writes what it saw to /mnt (the host's $out) and powers the container off; the host reads it.
under_systemd() {
    local deb=$1 scratch=$2 out=$3
    mount --make-rprivate /
    mount -t tmpfs -o mode=0755 vmpriv-pkg-systemd "$scratch"
    mkdir "$scratch/upper" "$scratch/work" "$scratch/root"
    mount -t overlay overlay -o "lowerdir=/,upperdir=$scratch/upper,workdir=$scratch/work" "$scratch/root"
    local r=$scratch/root
    cp "$deb" "$r/tmp/vmpriv.deb"
    # A container image's "start and stop nothing" (exit 101; this machine has one) is not what a
    # host that runs systemd has: without it the maintainer scripts do what they would there.
    rm -f "$r/usr/sbin/policy-rc.d"
    # A failure here shows as failed checks on the host, with this step's output printed.
    chroot "$r" dpkg --log=/dev/null --no-triggers -i /tmp/vmpriv.deb >"$out/dpkg" 2>&1 &&
        touch "$out/dpkg-ok" || return 0
    echo 'allow user nobody switch br0' >"$r/etc/vmpriv/policy.conf"
    stat -c '%a' "$r$helper" >"$out/mode"
    readlink "$r$wants" >"$out/enabled" 2>&1 || true
    cat >"$r/etc/systemd/system/vmpriv-check.service" <<'UNIT'
[Unit]
Description=vmpriv package test: the checks under systemd
After=vmpriv.socket
# Wants, not Requires: the removal below stops vmpriv.socket, which must not stop this unit.
Wants=vmpriv.socket
[Service]
Type=oneshot
TimeoutStartSec=100
ExecStart=/mnt/check.sh
StandardOutput=file:/mnt/check.log
StandardError=inherit
ExecStopPost=/bin/systemctl poweroff --no-block
UNIT
    # Booted instead of the default target: the basic system and the checks, not the host's services.
    printf '%s\n' '[Unit]' 'Requires=basic.target vmpriv-check.service' 'After=basic.target' \
        >"$r/etc/systemd/system/vmpriv-check.target"
    cat >"$out/check.sh" <<'CHECK'
#!/bin/bash
# Runs in the container as root; each file in /mnt is one thing the host checks.
nobody() {
    timeout 10 setpriv --reuid=65534 --regid=65534 --clear-groups env -u VMPRIV_HELPER -u VMPRIV_SOCKET "$@"
}
# A fixed MAC, as the helper requires of a switch.
ip link add br0 type bridge && ip link set br0 address 02:00:5e:00:00:01 && ip link set br0 up
stat -c '%F %a %U' /run/vmpriv/vmpriv.sock >/mnt/socket 2>&1
nobody /usr/bin/vmpriv whoami >/mnt/whoami 2>&1; echo "exit $?" >>/mnt/whoami
# The tap as the command vmpriv runs sees it, then what is left once that command has exited.
nobody /usr/bin/vmpriv tap --switch br0 -- sh -c 'ip -j -d link show "$VMPRIV_TAP_NAME"' \
    >/mnt/tap.json 2>/mnt/tap; echo "exit $?" >>/mnt/tap
ip -j link show type tun >/mnt/taps-after 2>&1
nobody /usr/bin/vmpriv tap --switch br1 -- true >/mnt/refused 2>&1; echo "exit $?" >>/mnt/refused
# A connection that sends nothing: its helper finishes start-up and waits for Hello; read what it
# holds then (the last of 50 tries, once it has its seccomp filter).
nobody python3 -c 'import socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect("/run/vmpriv/vmpriv.sock")
time.sleep(30)' &
for _ in $(seq 50); do
    pid=$(pgrep -x vmpriv-helper) && grep -q '^Seccomp:[[:space:]]*2$' "/proc/$pid/status" && break
    sleep 0.1
done
grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' \
    "/proc/$pid/status" >/mnt/status 2>&1
kill $!
# A typo in the policy: every instance refuses to start; the caller is told where to look.
echo 'allow user nobody swtich br0' >/etc/vmpriv/policy.conf
nobody /usr/bin/vmpriv whoami >/mnt/typo 2>&1; echo "exit $?" >>/mnt/typo
journalctl --sync
journalctl --no-pager -o cat -u 'vmpriv@*' >/mnt/journal 2>&1
# dpkg -r with a connection waiting in its helper, then dpkg --purge: what systemd and /etc show.
# listening: what a connect to the socket's path gets.
listening() {
    python3 -c 'import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
try:
    s.connect("/run/vmpriv/vmpriv.sock"); print("connected")
except OSError as e:
    print(type(e).__name__)'
}
echo 'allow user nobody switch br0' >/etc/vmpriv/policy.conf
nobody python3 -c 'import socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect("/run/vmpriv/vmpriv.sock")
time.sleep(30)' &
for _ in $(seq 50); do pgrep -x vmpriv-helper >/dev/null && break; sleep 0.1; done
{ pgrep -x vmpriv-helper >/dev/null && echo running; listening; } >/mnt/before-remove
# systemd's own "Reloading" lines: one more per daemon-reload.
reloads() { journalctl --sync; journalctl --no-pager -o cat _PID=1 | grep -c '^Reloading' || true; }
reloads >/mnt/reloads
dpkg --log=/dev/null --no-triggers -r vmpriv >/mnt/remove 2>&1; echo "exit $?" >>/mnt/remove
reloads >>/mnt/reloads
{
    pgrep -a -x vmpriv-helper || echo "no helper"
    listening
    systemctl show -p LoadState -p ActiveState vmpriv.socket
    systemctl list-units --all --plain --no-legend 'vmpriv@*' | wc -l
} >/mnt/after-remove 2>&1
kill $!
dpkg --log=/dev/null --no-triggers --purge vmpriv >/mnt/purge 2>&1; echo "exit $?" >>/mnt/purge
reloads >>/mnt/reloads
{
    find /etc/systemd /usr/lib/systemd /var/lib/systemd -name '*vmpriv*' ! -name 'vmpriv-check.*'
    [ ! -e /etc/vmpriv ] || echo '/etc/vmpriv is left'
    listening
    systemctl show -p LoadState vmpriv.socket
} >/mnt/after-purge 2>&1
echo done >/mnt/done
CHECK
    chmod 0755 "$out/check.sh"
    timeout -k 15 150 systemd-nspawn --quiet --directory="$r" --machine="vmpriv-pkg-$$" --register=no \
        --keep-unit --private-network \
        --bind="$out:/mnt" --boot systemd.unit=vmpriv-check.target >"$out/console" 2>&1 || true
}

# What the host must still show afterwards.
fingerprint() {
    md5sum /var/lib/dpkg/status
    dpkg-query -W -f='${Status}\n' vmpriv 2>&1 || true
    for p in /usr/bin/vmpriv "$helper" "$bridge" "$bridge_link" /usr/libexec/vmpriv /etc/vmpriv /etc/vmpriv/policy.conf \
        /usr/share/man/man8/vmpriv-helper.8.gz /usr/share/bash-completion/completions/vmpriv "$wants" \
        /var/lib/systemd/deb-systemd-helper-enabled/vmpriv.socket.dsh-also; do
        stat -c '%n %a %U:%G %s %Y' "$p" 2>&1 || true
    done
}

if [ "${1:-}" = --inside ]; then
    inside "$2" "$3"
    exit 0
fi
if [ "${1:-}" = --under-systemd ]; then
    under_systemd "$2" "$3" "$4"
    exit 0
fi

self=$(realpath "$0")
cd "$(dirname "$self")/.."
if [ "$(id -u)" != 0 ]; then
    echo "test-deb.sh: needs root (namespaces, dpkg -i inside overlays); it changes nothing on the host" >&2
    exit 1
fi
for tool in dpkg-deb dpkg dpkg-query dpkg-statoverride unshare setpriv getcap setcap cargo-deb md5sum \
    systemd-nspawn chroot python3 lintian dpkg-parsechangelog; do
    command -v "$tool" >/dev/null || {
        echo "test-deb.sh: $tool is missing (.ci/run installs it)" >&2
        exit 1
    }
done

scratch=$(mktemp -d /tmp/vmpriv-pkg-test.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
export VMPRIV_PKG_RESULTS=$scratch/results
: >"$VMPRIV_PKG_RESULTS"
mkdir "$scratch/ns"

echo "== packaging/build-deb.sh"
rm -f target/debian/vmpriv_*.deb
packaging/build-deb.sh
deb=$(echo target/debian/vmpriv_*.deb)
check "build-deb.sh made exactly one target/debian/vmpriv_*.deb" test -f "$deb"
echo "$deb"

echo "== dpkg-deb -c"
contents=$(dpkg-deb -c "$deb")
echo "$contents"
check "the bridge helper is -rwsr-xr-x root:root in /usr/sbin/" \
    has "^-rwsr-xr-x $ROOT .* \./usr/sbin/vmpriv-bridge-helper\$" "$contents"
check "/usr/libexec/vmpriv/vmpriv-bridge-helper is a symlink to it" \
    has "^lrwxrwxrwx $ROOT .* \./usr/libexec/vmpriv/vmpriv-bridge-helper -> \.\./\.\./sbin/vmpriv-bridge-helper\$" "$contents"
for profile in usr.sbin.vmpriv-bridge-helper usr.libexec.vmpriv.vmpriv-helper; do
    check "AppArmor profile $profile" has "^-rw-r--r-- $ROOT .* \./etc/apparmor\.d/$profile\$" "$contents"
done
check "the session helper is -rwxr-xr-x root:root in /usr/libexec/vmpriv/ (not setuid)" \
    has "^-rwxr-xr-x $ROOT .* \./usr/libexec/vmpriv/vmpriv-helper\$" "$contents"
check "vmpriv is -rwxr-xr-x root:root in /usr/bin/" \
    has "^-rwxr-xr-x $ROOT .* \./usr/bin/vmpriv\$" "$contents"
check "the policy is -rw-r--r-- root:root at /etc/vmpriv/policy.conf" \
    has "^-rw-r--r-- $ROOT .* \./etc/vmpriv/policy.conf\$" "$contents"
check "every entry is owned by root:root" \
    test "$(awk '{ print $2 }' <<<"$contents" | grep -Evc "^$ROOT\$")" = 0
check "the bridge helper is the only setuid or setgid file" \
    test "$(awk '$1 ~ /[sS]/' <<<"$contents" | grep -c 'vmpriv-bridge-helper$')" = 1 -a \
    "$(awk '$1 ~ /[sS]/' <<<"$contents" | wc -l)" = 1
for page in man1/vmpriv.1 man5/vmpriv.conf.5 man8/vmpriv-helper.8 man8/vmpriv-bridge-helper.8; do
    check "man page $page" has "^-rw-r--r-- $ROOT .* \./usr/share/man/$page\.gz\$" "$contents"
done
for completion in bash-completion/completions/vmpriv zsh/vendor-completions/_vmpriv \
    fish/vendor_completions.d/vmpriv.fish; do
    check "completion $completion" has "^-rw-r--r-- $ROOT .* \./usr/share/$completion\$" "$contents"
done
for unit in vmpriv.socket vmpriv@.service; do
    check "systemd unit $unit (socket activation)" \
        has "^-rw-r--r-- $ROOT .* \./usr/lib/systemd/system/$unit\$" "$contents"
done

echo "== dpkg-deb -I"
info=$(dpkg-deb -I "$deb")
echo "$info"
check "the package is called vmpriv" has '^ Package: vmpriv$' "$info"
check "it depends on libc6" has '^ Depends: .*libc6' "$info"
check "its conffiles are the policy and the two AppArmor profiles" \
    test "$(dpkg-deb -I "$deb" conffiles | sort | tr '\n' ' ')" = \
    "/etc/apparmor.d/usr.libexec.vmpriv.vmpriv-helper /etc/apparmor.d/usr.sbin.vmpriv-bridge-helper /etc/vmpriv/policy.conf "
check "the postinst reloads the AppArmor profiles where AppArmor is on" \
    has 'apparmor_parser -r -T -W' "$(dpkg-deb -I "$deb" postinst)"
check "it has the postinst (file capability on a 0755 statoverride)" \
    has 'setcap cap_net_admin\+ep' "$(dpkg-deb -I "$deb" postinst)"
check "the postinst enables vmpriv.socket" \
    has 'deb-systemd-helper enable vmpriv.socket' "$(dpkg-deb -I "$deb" postinst)"
check "the prerm stops vmpriv.socket on removal" \
    has 'deb-systemd-invoke stop vmpriv.socket' "$(dpkg-deb -I "$deb" prerm)"
check "the postrm purges its enable link" \
    has 'deb-systemd-helper purge vmpriv.socket' "$(dpkg-deb -I "$deb" postrm)"

check "its short description says what it is (not the crate's)" \
    has '^ Description: bridged tap networking for unprivileged VM processes, by policy$' "$info"
check "its Maintainer is the workspace's first author" \
    has '^ Maintainer: vmpriv developers <vmpriv@example\.invalid>$' "$info"
md5sums=$(dpkg-deb -I "$deb" md5sums)
check "its md5sums name every regular file but the conffiles, and nothing else" \
    test "$(awk '{ print "./" $2 }' <<<"$md5sums" | sort)" = \
    "$(awk '$1 ~ /^-/ && $6 !~ /^\.\/etc\// { print $6 }' <<<"$contents" | sort)"
check "the changelog is /usr/share/doc/vmpriv/changelog.Debian.gz and its version is the package's" \
    test "$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/share/doc/vmpriv/changelog.Debian.gz |
        gzip -d | dpkg-parsechangelog -l - -S Version)" = "$(dpkg-deb -f "$deb" Version)"
check "the copyright file is packaging/debian/copyright (generated from Cargo.lock)" \
    cmp -s <(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/share/doc/vmpriv/copyright) packaging/debian/copyright

echo "== lintian (errors and warnings fail; the overrides are in packaging/debian/lintian-overrides)"
lint=$(lintian --display-info --show-overrides "$deb" 2>&1 | grep -v '^running with root privileges' || true)
echo "$lint"
check "lintian: no error and no warning" test -z "$(grep -E '^[EW]: ' <<<"$lint")"
check "lintian: each override is used and has its reason (a comment, which lintian prints before it)" \
    awk -v n="$(grep -c '^vmpriv: ' packaging/debian/lintian-overrides)" \
        '/^O: / { o++; if (prev !~ /^N: /) bad++ } { prev = $0 } END { exit !(o == n && !bad) }' <<<"$lint"

echo "== dpkg -i in a throwaway mount and network namespace"
before=$(fingerprint)
unshare --mount --net -- "$self" --inside "$PWD/$deb" "$scratch/ns"
check "the namespace ran every install check" test "$(grep -c 'dpkg --purge' "$VMPRIV_PKG_RESULTS")" = 1
echo "== the package under systemd: vmpriv.socket, vmpriv@.service (systemd-nspawn)"
mkdir "$scratch/systemd" "$scratch/systemd-out"
unshare --mount --net -- "$self" --under-systemd "$PWD/$deb" "$scratch/systemd" "$scratch/systemd-out" ||
    echo "under_systemd exited $?"
sd=$scratch/systemd-out
for f in dpkg mode enabled check.log socket whoami tap tap.json taps-after refused status typo journal \
    before-remove remove after-remove purge after-purge reloads; do
    [ -e "$sd/$f" ] && sed "s/^/    $f: /" "$sd/$f"
done
# The container's console only when it did not get through the checks.
[ -e "$sd/done" ] || sed 's/^/    console: /' "$sd/console"
check "dpkg -i installed the package into the copy of the root" test -e "$sd/dpkg-ok"
check "the session helper there is mode 755 and the package enabled vmpriv.socket" \
    test "$(cat "$sd/mode")" = 755 -a -n "$(grep -E '^(/usr)?/lib/systemd/system/vmpriv\.socket$' "$sd/enabled")"
check "systemd booted in the container and ran every check" test -e "$sd/done"
check "vmpriv.socket listens on /run/vmpriv/vmpriv.sock, a socket of mode 666 owned by root" \
    test "$(cat "$sd/socket")" = "socket 666 root"
check "vmpriv whoami as uid 65534 is served by vmpriv@.service (the helper is not setuid there)" \
    test "$(head -1 "$sd/whoami")" = "uid 65534 (nobody)" -a "$(tail -1 "$sd/whoami")" = "exit 0"
check "vmpriv tap --switch br0 as uid 65534 exits 0" test "$(tail -1 "$sd/tap")" = "exit 0"
check "the tap its command saw: a tap owned by nobody, not persistent, a port of br0" \
    python3 -c 'import json, sys
[l] = json.load(open(sys.argv[1]))
d = l["linkinfo"]["info_data"]
assert l["linkinfo"]["info_kind"] == "tun" and d["type"] == "tap", l
assert d["user"] == "nobody" and not d["persist"] and l["master"] == "br0", l' "$sd/tap.json"
check "no tap is left once that command has exited" \
    python3 -c 'import json, sys; assert json.load(open(sys.argv[1])) == []' "$sd/taps-after"
check "a switch the policy does not grant: exit 4, one line" \
    test "$(tail -1 "$sd/refused")" = "exit 4" -a "$(wc -l <"$sd/refused")" = 2
check "a waiting helper instance: uid and gid 65534, no groups, CAP_NET_ADMIN only, no_new_privs, seccomp" \
    test "$(tr -s '\t ' ' ' <"$sd/status")" = "$(printf '%s\n' 'Uid: 65534 65534 65534 65534' \
        'Gid: 65534 65534 65534 65534' 'Groups: ' 'CapInh: 0000000000000000' \
        'CapPrm: 0000000000001000' 'CapEff: 0000000000001000' 'CapBnd: 0000000000001000' \
        'CapAmb: 0000000000000000' 'NoNewPrivs: 1' 'Seccomp: 2')"
check "a policy typo: the caller gets exit 9 and one line naming journalctl -u 'vmpriv@*'" \
    test "$(tail -1 "$sd/typo")" = "exit 9" -a "$(wc -l <"$sd/typo")" = 2 \
    -a "$(grep -c "journalctl -u 'vmpriv@\*'" "$sd/typo")" = 1
journal=$(cat "$sd/journal" 2>/dev/null || true)
check "the journal has an instance's audit lines: served socket-activated as uid 65534" \
    has '^uid=65534 pid=[0-9]+ op=connect decision=serving \(socket activated\)$' "$journal"
check "the journal has the tap made" has '^uid=65534 op=create-tap target=[^ ]+ decision=done$' "$journal"
check "the journal has the refusal" has '^uid=65534 op=create-tap decision=refused \(denied' "$journal"
check "the journal has the policy error, with file and line" \
    has '^vmpriv-helper: policy error .*/etc/vmpriv/policy.conf:1: ' "$journal"
check "and systemd's line for that failed instance (where socket-activation.md says to look)" \
    has "^vmpriv@[0-9]+-[0-9]+-65534\.service: Failed with result 'exit-code'\.$" "$journal"
check "no per-connection line that says nothing new (Landlock's absence is the host's)" \
    test -z "$(grep -i landlock <<<"$journal")"

check "before dpkg -r: a helper instance serves a waiting connection and the socket accepts" \
    test "$(cat "$sd/before-remove")" = "$(printf '%s\n' running connected)"
check "dpkg -r under systemd exits 0" test "$(tail -1 "$sd/remove")" = "exit 0"
check "dpkg -r and dpkg --purge each made systemd reload (its journal's Reloading lines)" \
    awk 'NR > 1 && $1 <= prev { bad++ } { prev = $1 } END { exit !(NR == 3 && !bad) }' "$sd/reloads"
# Masked until a purge or a reinstall, as dh_installsystemd's postrm does.
check "after dpkg -r: no helper instance left, nothing listening, vmpriv.socket stopped and masked" \
    test "$(cat "$sd/after-remove")" = "$(printf '%s\n' 'no helper' FileNotFoundError \
        LoadState=masked ActiveState=inactive 0)" -o \
    "$(cat "$sd/after-remove")" = "$(printf '%s\n' 'no helper' ConnectionRefusedError \
        LoadState=masked ActiveState=inactive 0)"
check "dpkg --purge under systemd exits 0" test "$(tail -1 "$sd/purge")" = "exit 0"
check "after dpkg --purge: no vmpriv file or link under /etc/systemd, /usr/lib/systemd or deb-systemd-helper's state, no /etc/vmpriv, nothing listening" \
    test "$(cat "$sd/after-purge")" = "$(printf '%s\n' FileNotFoundError LoadState=not-found)" -o \
    "$(cat "$sd/after-purge")" = "$(printf '%s\n' ConnectionRefusedError LoadState=not-found)"

after=$(fingerprint)
check "the host is untouched (dpkg status, installed paths)" test "$before" = "$after"
[ "$before" = "$after" ] || diff <(echo "$before") <(echo "$after") || true

passed=$(grep -c '^ok - ' "$VMPRIV_PKG_RESULTS" || true)
failed=$(grep -c '^FAIL - ' "$VMPRIV_PKG_RESULTS" || true)
echo "package: $passed passed, $failed failed"
[ "$failed" = 0 ]
