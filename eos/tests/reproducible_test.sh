#!/usr/bin/env bash
# Builds the EOS image twice from the same inputs, in different temporary and
# output directories, and requires byte-identical files (SHA-256 and cmp).
# With COVE and OVMF, both builds also compute the SEV-SNP launch measurement
# (cove measure), which must match too. The second build runs with an ldd that
# always dies of SIGPIPE when its reader quits early (ldd_sigpipe.sh): the real
# one does so now and then, and the image must not depend on that timing (a
# `ldd | grep -q` under pipefail once dropped the vTPM's TCTI from the image).
#   reproducible_test.sh AGENT [COVE OVMF]
set -euo pipefail
[ $# -eq 1 ] || [ $# -eq 3 ] || { echo "usage: reproducible_test.sh AGENT [COVE OVMF]" >&2; exit 2; }
agent=$1
measure=(--no-measure)
if [ $# -eq 3 ]; then
  measure=(--cove "$2")
  export COVE_EOS_OVMF=$3
fi
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/eos-repro.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/t1" "$tmp/t2"
TMPDIR=$tmp/t1 "$here/build.sh" --agent "$agent" --out "$tmp/first" "${measure[@]}"
mkdir "$tmp/ldd"
ln -s "$here/tests/ldd_sigpipe.sh" "$tmp/ldd/ldd"
real_ldd=$(command -v ldd)
(cd "$tmp/t2" && TMPDIR=$tmp/t2 COVE_REAL_LDD=$real_ldd PATH=$tmp/ldd:$PATH "$here/build.sh" --agent "$agent" --out "$tmp/second/image" "${measure[@]}") > /dev/null
for f in vmlinuz vmlinux initrd.img cmdline initrd.files agent.sha384; do
  [ -s "$tmp/first/$f" ] || { echo "reproducible_test: first build has no $f" >&2; exit 1; }
done
echo "--- first build";  cat "$tmp/first/SHA256SUMS"
echo "--- second build (ldd_sigpipe.sh as ldd)"; cat "$tmp/second/image/SHA256SUMS"
if ! cmp -s "$tmp/first/SHA256SUMS" "$tmp/second/image/SHA256SUMS"; then
  echo "reproducible_test: FAIL: the two builds differ" >&2
  diff "$tmp/first/initrd.files" "$tmp/second/image/initrd.files" >&2 || true
  exit 1
fi
for f in vmlinuz vmlinux initrd.img cmdline initrd.files agent.sha384; do cmp "$tmp/first/$f" "$tmp/second/image/$f"; done
if [ $# -eq 3 ]; then
  [ -s "$tmp/first/measurement.snp" ] || { echo "reproducible_test: FAIL: no measurement.snp" >&2; exit 1; }
  cmp "$tmp/first/measurement.snp" "$tmp/second/image/measurement.snp"
  echo "launch measurement (both builds): $(cat "$tmp/first/measurement.snp")"
fi
echo "reproducible_test: PASS: both builds are byte-identical"
