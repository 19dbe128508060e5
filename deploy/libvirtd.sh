#!/usr/bin/env bash
# Makes sure virtlogd and libvirtd run, starting them by hand when they do not:
# this machine kind has no systemd (see docs/operations.md §8). Idempotent; the
# daemons are system services and stay up afterwards (stop them by the PIDs in
# /run/virtlogd.pid and /run/libvirtd.pid).
#   deploy/libvirtd.sh [URI]      (default qemu:///system; waits up to 30 s)
set -euo pipefail
uri=${1:-qemu:///system}
sbin=/usr/sbin

running() {  # pidfile: true when the process it names is alive
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

for d in virtlogd libvirtd; do
  [ -x "$sbin/$d" ] || { echo "libvirtd.sh: $sbin/$d missing (deploy/install-deps.sh installs libvirt-daemon-system)" >&2; exit 1; }
done
command -v virsh >/dev/null || { echo "libvirtd.sh: virsh missing (apt-get install libvirt-clients)" >&2; exit 1; }

if virsh -c "$uri" version >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "libvirtd.sh: $uri does not answer and only root can start libvirtd" >&2
  exit 1
fi
# virtlogd first: libvirtd hands every domain's console and QEMU log to it.
running /run/virtlogd.pid || "$sbin/virtlogd" -d
# Not with --listen: that wants TLS certificates; the local UNIX socket is enough.
running /run/libvirtd.pid || "$sbin/libvirtd" -d
end=$((SECONDS + 30))
until virsh -c "$uri" version >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$end" ]; then
    echo "libvirtd.sh: libvirtd started but $uri did not answer within 30 s" >&2
    exit 1
  fi
  sleep 0.2
done
echo "libvirtd.sh: started virtlogd and libvirtd ($uri answers)"
