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
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
