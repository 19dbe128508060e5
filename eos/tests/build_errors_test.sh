#!/usr/bin/env bash
# eos/build.sh rejects bad input with a clear message (and builds nothing).
#   build_errors_test.sh AGENT
set -uo pipefail
[ $# -eq 1 ] || { echo "usage: build_errors_test.sh AGENT" >&2; exit 2; }
agent=$1
build=$(cd "$(dirname "$0")/.." && pwd)/build.sh
tmp=$(mktemp -d "${TMPDIR:-/tmp}/eos-errors.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo 'not a deb' > "$tmp/fake.deb"
echo '#!/bin/sh' > "$tmp/not-exec"
failed=0
expect_error() {  # message args...
  local want=$1 out rc
  shift
  out=$("$build" "$@" --out "$tmp/out" 2>&1)
  rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "FAIL: build.sh $* succeeded"; failed=1
  elif [[ "$out" != *"$want"* ]]; then
    echo "FAIL: build.sh $*: expected '$want', got: $out"; failed=1
  else
    echo "ok: build.sh $* -> $(echo "$out" | head -1)"
  fi
}
expect_error "--agent PATH is required"
expect_error "is not an executable file" --agent "$tmp/missing"
expect_error "is not an executable file" --agent "$tmp/not-exec"
expect_error "--python must be full, minimal or none (got 'some')" --agent "$agent" --python some
expect_error "unknown argument '--frobnicate'" --agent "$agent" --frobnicate
expect_error "is not a .deb" --agent "$agent" --kernel-deb "$tmp/fake.deb"
expect_error "--kernel-deb '$tmp/none.deb' does not exist" --agent "$agent" --kernel-deb "$tmp/none.deb"
COVE_EOS_CACHE=$tmp/empty COVE_EOS_KERNEL_DEB='' expect_error "no kernel .deb in $tmp/empty" --agent "$agent"
SOURCE_DATE_EPOCH=yesterday expect_error "SOURCE_DATE_EPOCH must be a number" --agent "$agent"
[ ! -e "$tmp/out" ] || { echo "FAIL: a failed build created $tmp/out"; failed=1; }
exit "$failed"
