#!/usr/bin/env bash
# Builds the EOS image twice from the same inputs, in different temporary and
# output directories, and requires byte-identical files (SHA-256 and cmp).
#   reproducible_test.sh AGENT
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: reproducible_test.sh AGENT" >&2; exit 2; }
agent=$1
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/eos-repro.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/t1" "$tmp/t2"
TMPDIR=$tmp/t1 "$here/build.sh" --agent "$agent" --out "$tmp/first" --no-measure
(cd "$tmp/t2" && TMPDIR=$tmp/t2 "$here/build.sh" --agent "$agent" --out "$tmp/second/image" --no-measure) > /dev/null
for f in vmlinuz initrd.img cmdline initrd.files; do
  [ -s "$tmp/first/$f" ] || { echo "reproducible_test: first build has no $f" >&2; exit 1; }
done
echo "--- first build";  cat "$tmp/first/SHA256SUMS"
echo "--- second build"; cat "$tmp/second/image/SHA256SUMS"
if ! cmp -s "$tmp/first/SHA256SUMS" "$tmp/second/image/SHA256SUMS"; then
  echo "reproducible_test: FAIL: the two builds differ" >&2
  diff "$tmp/first/initrd.files" "$tmp/second/image/initrd.files" >&2 || true
  exit 1
fi
for f in vmlinuz initrd.img cmdline initrd.files; do cmp "$tmp/first/$f" "$tmp/second/image/$f"; done
echo "reproducible_test: PASS: both builds are byte-identical"
