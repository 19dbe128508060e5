#!/usr/bin/env bash
# Installs every Debian 12 package cove needs to build, test and run the demo.
# Idempotent: packages already present are skipped; apt-get update runs only
# when something is missing. Run as root (or with sudo available).
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config git clang-14 clang-format clang-tidy
  libclang-rt-14-dev
  # libraries
  libcaf-dev libnats-dev libflatbuffers-dev flatbuffers-compiler flatbuffers-compiler-dev
  libssl-dev libsodium-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev
  doctest-dev libbenchmark-dev libtss2-dev
  # runtime components used by coved, the agent and the tests
  nats-server python3 swtpm swtpm-tools tpm2-tools
  # EOS guest image (eos/build.sh) and booting it: busybox for the initramfs,
  # kmod for depmod/modprobe, the TCTI the agent dlopen()s in the guest, QEMU
  # and OVMF. The kernel .deb is downloaded (not installed) below.
  busybox-static cpio kmod python3.11 libtss2-tcti-device0 qemu-system-x86 ovmf
  shellcheck  # lint for the eos/ shell scripts (ctest eos.shellcheck)
  # unit.manager checks the generated libvirt domain XML: xmllint (well-formed) and
  # virt-xml-validate with libvirt 9.0's RelaxNG schemas
  libxml2-utils libvirt-clients
  # cocos-compatible gRPC front doors (issue 7): grpc++, protoc + its C++/python
  # plugins, and python3-grpcio + python3-cryptography for the python interop client test
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc python3-grpcio python3-protobuf python3-cryptography
  # the libvirt backend (issue 6): the C API, and libvirtd/virtlogd that cove.sh starts
  libvirt-dev libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-system
)

# One dpkg-query for all packages, its output read whole: a `dpkg-query | grep -q`
# under pipefail fails when grep exits first and dpkg-query dies of SIGPIPE.
# dpkg-query exits 1 when some package is unknown; those have no line.
declare -A status=()
while read -r name state; do
  status[$name]=$state
done < <(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" 2>/dev/null || true)
missing=()
for p in "${packages[@]}"; do
  [ "${status[$p]:-}" = 'install ok installed' ] || missing+=("$p")
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
updated=0
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
else
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -q
  updated=1
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The EOS guest kernel: the .deb of the versioned package that the
# linux-image-amd64 metapackage points at (linux-image-6.1.0-N-amd64), fetched
# into the cache eos/build.sh reads. It is never installed on the host.
eos_cache=${COVE_EOS_CACHE:-/var/cache/cove/eos}
# Empty when apt does not know linux-image-amd64 yet (apt-cache exits 100; under
# pipefail that would end the script before the apt-get update below). awk reads
# all of its input: no `| head -1`, whose early exit is the SIGPIPE trap again.
kernel_pkg() {
  { apt-cache depends linux-image-amd64 2>/dev/null || true; } |
    awk 'NF == 2 && $1 == "Depends:" && $2 ~ /^linux-image-[0-9][^ ]*-amd64$/ && !n++ { print $2 }'
}
kpkg=$(kernel_pkg)
if [ -z "$kpkg" ] && [ "$updated" = 0 ]; then
  $SUDO apt-get update -q
  kpkg=$(kernel_pkg)
fi
[ -n "$kpkg" ] || { echo "install-deps: cannot resolve linux-image-amd64 to a versioned kernel package" >&2; exit 1; }
if ls "$eos_cache/${kpkg}_"*_amd64.deb >/dev/null 2>&1; then
  echo "install-deps: EOS kernel $kpkg present in $eos_cache"
else
  echo "install-deps: downloading $kpkg (EOS guest kernel) into $eos_cache"
  $SUDO mkdir -p "$eos_cache"
  (
    cd "$eos_cache" || exit 1
    # grep -v fails when apt said nothing else, apt when the download failed: the
    # check below judges the download, so neither stops the script here.
    $SUDO apt-get download -q "$kpkg" 2>&1 | grep -v 'unsandboxed as root' || true
  )
  ls "$eos_cache/${kpkg}_"*_amd64.deb >/dev/null 2>&1 || { echo "install-deps: apt-get download $kpkg failed" >&2; exit 1; }
fi

# The example Node.js client (clients/node, README.md "Clients"): Debian's nodejs
# and npm only when there is no node at all, then `npm ci` from the committed
# package-lock.json, skipped when node_modules was installed from this very lock
# file (a stamp holding its SHA-256). The CMake build never touches the network.
if ! command -v node >/dev/null 2>&1; then
  echo "install-deps: installing nodejs npm"
  [ "$updated" = 1 ] || $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends nodejs npm
fi
command -v npm >/dev/null 2>&1 || { echo "install-deps: node is installed but npm is not (apt-get install npm)" >&2; exit 1; }
node_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/clients/node"
lock_sum=$(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1)
node_stamp="$node_dir/node_modules/.cove-package-lock.sha256"
if [ -f "$node_stamp" ] && [ "$(cat "$node_stamp")" = "$lock_sum" ]; then
  echo "install-deps: clients/node/node_modules matches package-lock.json"
else
  echo "install-deps: npm ci in clients/node"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_sum" > "$node_stamp"
fi
