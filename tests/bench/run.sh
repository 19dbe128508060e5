#!/usr/bin/env bash
# Runs cove-bench from a build directory configured with -DCOVE_BENCH=ON
# (./cove.sh bench does that in build-release). Usage: run.sh <build-dir>
# Sizes: COVE_BENCH_UPLOAD_MIB (1024), COVE_BENCH_RESULT_MIB (256),
# COVE_BENCH_CVMS (200), COVE_BENCH_RTT (2000), COVE_BENCH_BRIDGE_MIB (256);
# COVE_BENCH_ONLY=crypto,nats,upload,rtt,launch,vm,bridge,concurrent,snp,measure runs a
# subset; `vm` (libvirt launch/remove) needs libvirtd and an EOS image
# (COVE_BENCH_EOS, default <build-dir>/eos). See docs/performance.md.
set -uo pipefail
build=$(cd "${1:?usage: run.sh <build-dir>}" && pwd)
bench="$build/bin/cove-bench"
if [ ! -x "$bench" ]; then
  echo "run.sh: $bench not found; configure with -DCOVE_BENCH=ON and build" >&2
  exit 2
fi
out="$build/bench"
mkdir -p "$out"
# Up to 200 agents each hold a NATS connection and a few files: raise the soft limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
"$bench" --out "$out" 2>&1 | tee "$out/report.txt"
rc=${PIPESTATUS[0]}
echo
echo "results: $out/results.json (table: $out/report.txt)"
[ "$rc" -eq 0 ] || echo "cove-bench: some metrics missed their target or a section failed (exit $rc)"
exit "$rc"
