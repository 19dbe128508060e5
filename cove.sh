#!/usr/bin/env bash
# cove's one entry point. Usage: ./cove.sh <command>
#   demo    install deps, build, run the sample computation end to end
#           [--backend libvirt: in a real QEMU VM booting the EOS image]
#   test    install deps, build (with the benchmarks), run the whole suite,
#           then again under ASan+UBSan
#   build   install deps and build (build/)
#   bench   build in Release and run the benchmark suite
#   fuzz    build the libFuzzer targets with clang and run each for a while
#   eos     build the EOS guest image (kernel + initramfs) into build/eos/ [--out DIR]
#   format  clang-format the tree in place;  lint: clang-format check + clang-tidy
set -euo pipefail
cd "$(dirname "$0")"
root=$(pwd)
jobs=$(nproc)

install_deps() { bash "$root/deploy/install-deps.sh"; }

# libvirt's daemons: no systemd on this machine kind, so start virtlogd and
# libvirtd by hand when they are not running (the libvirt backend, its test and
# its benchmark row need them). They stay up afterwards.
ensure_libvirtd() { bash "$root/deploy/libvirtd.sh"; }

# The EOS guest image (build/eos) the libvirt backend boots, unless it is there.
ensure_eos_image() {
  [ -f "$root/build/eos/vmlinuz" ] && [ -f "$root/build/eos/agent.sha384" ] && return 0
  bash "$root/eos/build.sh" --agent "$root/build/bin/cove-agent" --cove "$root/build/bin/cove" --out "$root/build/eos"
}

configure_build() {  # dir, extra cmake args...
  local dir=$1; shift
  cmake -S "$root" -B "$dir" -G Ninja "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
}

cmd=${1:-help}
shift || true
case "$cmd" in
  build)
    install_deps
    configure_build build "$@"
    ;;
  test)
    install_deps
    # The benchmarks are compiled (not run) so -Werror covers them too.
    configure_build build -DCOVE_BENCH=ON
    ensure_libvirtd
    (cd build && ctest --output-on-failure -j "$jobs" "$@")
    echo "== ASan+UBSan build =="
    configure_build build-asan -DCOVE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
    (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      ctest --output-on-failure -j "$jobs" -LE no-sanitize "$@")
    ;;
  demo)
    install_deps
    configure_build build
    if [[ " $* " == *" --backend libvirt "* || " $* " == *" --backend=libvirt "* ]]; then
      ensure_libvirtd
      ensure_eos_image
    fi
    exec bash "$root/deploy/demo.sh" "$root/build" "$@"
    ;;
  bench)
    install_deps
    configure_build build-release -DCMAKE_BUILD_TYPE=Release -DCOVE_BENCH=ON -DCOVE_TESTS=OFF
    ensure_libvirtd
    # The `vm` section boots the EOS image (./cove.sh eos builds build/eos).
    if [ -z "${COVE_BENCH_EOS:-}" ] && [ -f "$root/build/eos/vmlinuz" ]; then export COVE_BENCH_EOS="$root/build/eos"; fi
    exec bash "$root/tests/bench/run.sh" "$root/build-release"
    ;;
  fuzz)
    install_deps
    CC=clang-14 CXX=clang++-14 configure_build build-fuzz -DCOVE_FUZZ=ON -DCOVE_TESTS=ON -DCMAKE_BUILD_TYPE=Debug
    for f in build-fuzz/tests/fuzz/fuzz_*; do
      [ -x "$f" ] || continue
      echo "== $f"
      "$f" -max_total_time="${FUZZ_SECONDS:-60}" "$root/tests/fuzz/corpus/$(basename "$f")" || exit 1
    done
    ;;
  eos)
    install_deps
    cmake -S "$root" -B build -G Ninja >/dev/null
    cmake --build build -j "$jobs" --target cove-agent cove
    exec bash "$root/eos/build.sh" --agent "$root/build/bin/cove-agent" --cove "$root/build/bin/cove" "$@"
    ;;
  format)
    git ls-files '*.cpp' '*.hpp' | xargs clang-format -i
    ;;
  lint)
    git ls-files '*.cpp' '*.hpp' | xargs clang-format --dry-run --Werror
    configure_build build
    git ls-files '*.cpp' | grep -v '^tests/fuzz/' | xargs clang-tidy -p build --quiet
    ;;
  *)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    [ "$cmd" = help ] || exit 2
    ;;
esac
