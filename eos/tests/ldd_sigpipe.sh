#!/usr/bin/env bash
# A stand-in for ldd (reproducible_test.sh puts it first on PATH as `ldd` for one of
# its two builds) that makes a real ldd's unlucky timing certain. It prints what
# the real ldd prints, then 256 KiB of lines no parser picks up (vdso lines):
# more than a pipe and grep's read buffer hold, so a reader that quits at its first
# match (`grep -q`) makes a later write fail, and this script then dies of SIGPIPE,
# as ldd does now and then when its internal `| cat` is cut off. A reader that
# reads everything sees the real output plus harmless lines.
#   COVE_REAL_LDD=/usr/bin/ldd ldd_sigpipe.sh FILE...
set -u
"${COVE_REAL_LDD:-/usr/bin/ldd}" "$@"
rc=$?
# 6900 lines of 38 bytes; %.0s prints its argument as nothing.
printf '\tlinux-vdso.so.1 (0x00007ffc00000000)\n%.0s' $(seq 6900) || exit 141
exit "$rc"
