#!/usr/bin/env bash
# Checks that what the guest agent needs at run time is in an EOS image, without
# a VM.
#
#   contents_test.sh IMAGE_DIR
#
# /init must mount securityfs (the agent's event log and IMA list live there).
# initrd.files must list the agent, the loader, tss2-tctildr and the TCTI it
# dlopen()s (libtss2-tcti-device.so.0, which ldd cannot see) with its library
# (libtss2-mu). As root the test also unpacks the initramfs and runs the image's
# agent chrooted into it with `--vtpm device:/dev/tpmrm0`: the image has no
# /dev/tpmrm0, so the TCTI must load and then fail with "IO failure".
# "Functionality not supported" is tctildr's answer when the TCTI library cannot
# be loaded: how the guest agent failed when eos/build.sh left the TCTI out.
set -euo pipefail
[ $# -eq 1 ] || { sed -n '5p' "$0" | sed 's/^# *//' >&2; exit 2; }
image=$1
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -f "$image/initrd.files" ] || fail "$image/initrd.files missing (build the image first: eos/build.sh)"
image=$(cd "$image" && pwd)

lib=/usr/lib/x86_64-linux-gnu
for f in /init /usr/bin/cove-agent /usr/lib64/ld-linux-x86-64.so.2 $lib/libtss2-tctildr.so.0 \
  $lib/libtss2-tcti-device.so.0 $lib/libtss2-mu.so.0; do
  grep -qxF "$f" "$image/initrd.files" || fail "$f is not in the image ($image/initrd.files)"
  echo "ok: $f in the image"
done

# /init mounts securityfs, where the agent finds the firmware event log and the IMA list.
# (cpio extracts one file to stdout without root; older images were gzip'd.)
if [ "$(head -c 2 "$image/initrd.img" | od -An -tx1 | tr -d ' ')" = 1f8b ]; then
  init=$(gzip -dc "$image/initrd.img" | cpio -i --quiet --to-stdout ./init init)
else
  init=$(cpio -i --quiet --to-stdout ./init init < "$image/initrd.img")
fi
grep -qE '^mount -t securityfs securityfs /sys/kernel/security' <<< "$init" ||
  fail "/init does not mount securityfs at /sys/kernel/security"
echo "ok: /init mounts securityfs (event log, IMA list)"

if [ "$(id -u)" != 0 ]; then
  echo "not root: the chrooted agent run is skipped (the file list was checked)"
  exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/eos-contents.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# build.sh writes an uncompressed newc cpio (it boots faster under TCG); older
# images were gzip'd.
if [ "$(head -c 2 "$image/initrd.img" | od -An -tx1 | tr -d ' ')" = 1f8b ]; then
  (cd "$tmp" && gzip -dc "$image/initrd.img" | cpio -id --quiet)
else
  (cd "$tmp" && cpio -id --quiet < "$image/initrd.img")
fi
[ ! -e "$tmp/dev/tpmrm0" ] || fail "the image has a /dev/tpmrm0 of its own"
set +e
out=$(timeout 60 chroot "$tmp" /usr/bin/cove-agent --grpc-listen 127.0.0.1:0 \
  --vtpm device:/dev/tpmrm0 < /dev/null 2>&1)
rc=$?
set -e
[ "$rc" = 1 ] || fail "the chrooted agent exited with $rc, expected 1: $out"
case "$out" in
  *"TCTI 'device:/dev/tpmrm0': tcti:IO failure"*)
    echo "ok: the image's agent loads the device TCTI (and then finds no /dev/tpmrm0 in the chroot)" ;;
  *) fail "the chrooted agent did not load the device TCTI: $out" ;;
esac
