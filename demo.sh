#!/bin/sh
# The vmpriv demo: builds vmpriv, then in a throwaway network + mount namespace gives uid 65534 a tap
# through a setuid copy of the helper and pings the host side through it. Leaves the host untouched.
set -eu
cd "$(dirname "$0")"
if [ "$(id -u)" != 0 ]; then
    echo "demo.sh: run as root (sudo ./demo.sh): it needs to make namespaces and a setuid copy;" >&2
    echo "         it changes nothing on the host." >&2
    exit 1
fi
for tool in cargo unshare setpriv ip; do
    command -v "$tool" >/dev/null || { echo "demo.sh: $tool is missing (apt-get install iproute2 util-linux; rustup for cargo)" >&2; exit 1; }
done
echo "== building (cargo build --release)"
cargo build --release --quiet -p vmpriv-helper -p vmpriv-bridge-helper -p vmpriv-client -p vmpriv-tests --bins
exec target/release/vmpriv-demo
