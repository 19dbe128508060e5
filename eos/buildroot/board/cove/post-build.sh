#!/bin/sh
# Buildroot post-build script: installs EOS's /init (the same file the Debian
# builder uses, eos/init) and its udhcpc hook into the target tree.
# $1 is TARGET_DIR; BR2_EXTERNAL_COVE_PATH is set by buildroot.
set -eu
target=$1
eos=${BR2_EXTERNAL_COVE_PATH:?run from buildroot}/..
install -m 0755 "$eos/init" "$target/init"
install -D -m 0755 "$eos/udhcpc.script" "$target/etc/udhcpc/default.script"
mkdir -p "$target/config" "$target/var/lib/cove" "$target/etc/eos"
printf 'EOS_BUILD=buildroot\n' > "$target/etc/eos/release"
