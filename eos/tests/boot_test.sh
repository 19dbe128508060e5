#!/usr/bin/env bash
# Boots an EOS image under QEMU software emulation (TCG, never KVM) and checks
# the serial console, line by line as it arrives, for markers in order.
#
#   boot_test.sh SCENARIO IMAGE_DIR EXAMPLES_DIR
#
# SCENARIO:
#   help        agent.conf runs `cove-agent --help`: init start, the agent's
#               help text, "agent exited with 0", then QEMU exits by itself
#   python      the initrd gets an overlay whose cove-agent is a script that
#               runs examples/linreg with the image's python3, checks the vTPM
#               (swtpm behind QEMU's tpm-crb: /dev/tpmrm0, TPM 2.0) and exits 3
#   bad-config  agent.conf has an invalid LOG_LEVEL: a config error, the agent
#               is not started, "agent exited with 2", poweroff
# Deadline: EOS_BOOT_DEADLINE seconds (default 120). QEMU is killed by PID on
# any failure.
set -euo pipefail
[ $# -eq 3 ] || { sed -n '5p' "$0" | sed 's/^# *//' >&2; exit 2; }
scenario=$1 image=$2 examples=$3
deadline_s=${EOS_BOOT_DEADLINE:-120}

for f in vmlinuz initrd.img cmdline; do
  [ -f "$image/$f" ] || { echo "boot_test: $image/$f missing (build the image first: eos/build.sh)" >&2; exit 1; }
done
command -v qemu-system-x86_64 >/dev/null || { echo "boot_test: qemu-system-x86_64 missing (apt-get install qemu-system-x86)" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/eos-boot.XXXXXX")
qpid="" tpm_pid_file=""
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
    kill "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
  fi
  if [ -n "$tpm_pid_file" ] && [ -s "$tpm_pid_file" ]; then
    kill "$(cat "$tpm_pid_file")" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

cfg=$tmp/config
mkdir -p "$cfg"
initrd=$image/initrd.img
# vmlinux (PVH entry) is what the libvirt backend boots (with qboot); the python
# scenario boots vmlinuz, the bzImage a measured boot uses, so both are covered.
# (That scenario has a TPM: SeaBIOS's TPM log makes its ACPI area too big for
# QEMU's PVH initrd placement, see eos/README.md, Boot time.)
kernel=$image/vmlinux
[ -f "$kernel" ] || kernel=$image/vmlinuz
expect=() forbid=() extra=()
case "$scenario" in
  help)
    printf '# boot test\nCVM_ID=boot-test\nLOG_LEVEL=info\nCOVE_AGENT_ARGS=--help\n' > "$cfg/agent.conf"
    expect=("EOS: init start" "s: modules loaded" "EOS: config share mounted at /config" "EOS: eth0 10.0.2.15/24"
      "EOS: starting cove-agent --cvm-id boot-test --log-level info --help"
      "cove-agent — the computation agent inside a confidential VM" "--cvm-id TEXT"
      "EOS: agent exited with 0")
    forbid=("insmod" "Kernel panic" "config error")
    ;;
  python)
    printf 'CVM_ID=py-test\nNET=static\n' > "$cfg/agent.conf"
    kernel=$image/vmlinuz
    cp "$examples/linreg/linreg.py" "$cfg/"
    mkdir -p "$cfg/datasets"
    cp "$examples"/linreg/*.csv "$cfg/datasets/"
    # Concatenated initramfs archives overlay each other: this one replaces
    # /usr/bin/cove-agent with a script (the image itself is not rebuilt).
    mkdir -p "$tmp/overlay/usr/bin"
    cat > "$tmp/overlay/usr/bin/cove-agent" <<'EOF'
#!/bin/sh
echo "stand-in agent: $*"
mkdir -p /tmp/run && cp -r /config/datasets /tmp/run/ && cd /tmp/run || exit 9
t0=$(cut -d' ' -f1 /proc/uptime)
python3 /config/linreg.py boot-test || exit 8
echo "python3 run took $(cut -d' ' -f1 /proc/uptime) - $t0 s of guest uptime"
cat results/model.json
python3 -c 'import hashlib, ssl, sqlite3, decimal, zlib, lzma, bz2, ctypes, uuid, subprocess; print("stdlib extension modules ok")'
[ -c /dev/tpmrm0 ] && echo "tpm: /dev/tpmrm0, TPM $(cat /sys/class/tpm/tpm0/tpm_version_major).0"
exit 3
EOF
    chmod 0755 "$tmp/overlay/usr/bin/cove-agent"
    (cd "$tmp/overlay" && find . -mindepth 1 | sort | cpio -o -H newc -R 0:0 --quiet) | gzip -n > "$tmp/overlay.cpio.gz"
    cat "$image/initrd.img" "$tmp/overlay.cpio.gz" > "$tmp/initrd.img"
    initrd=$tmp/initrd.img
    expect=("EOS: init start" "EOS: eth0 10.0.2.15/24 gw 10.0.2.2 (static)" "stand-in agent: --cvm-id py-test"
      "fitted {'n': " '"label": "boot-test"' '"slope": ' "stdlib extension modules ok" "tpm: /dev/tpmrm0, TPM 2.0"
      "EOS: agent exited with 3")
    forbid=("Traceback" "Kernel panic")
    # A vTPM: swtpm --daemon returns once its socket listens; it exits when
    # QEMU disconnects (and is killed by PID otherwise).
    command -v swtpm >/dev/null || { echo "boot_test: swtpm missing (apt-get install swtpm)" >&2; exit 1; }
    mkdir -p "$tmp/tpm"
    tpm_pid_file=$tmp/tpm/swtpm.pid
    swtpm socket --tpm2 --daemon --tpmstate "dir=$tmp/tpm" --pid "file=$tpm_pid_file" \
      --ctrl "type=unixio,path=$tmp/tpm/swtpm.sock"
    extra=(-chardev "socket,id=chrtpm,path=$tmp/tpm/swtpm.sock" -tpmdev "emulator,id=tpm0,chardev=chrtpm"
      -device "tpm-crb,tpmdev=tpm0")
    ;;
  bad-config)
    printf 'CVM_ID=bad\nLOG_LEVEL=loud\nCOVE_AGENT_ARGS=--help\n' > "$cfg/agent.conf"
    expect=("EOS: init start"
      "EOS: config error: /config/agent.conf:2: LOG_LEVEL must be trace|debug|info|warn|error, got 'loud'"
      "EOS: agent not started" "EOS: agent exited with 2")
    forbid=("starting cove-agent" "Kernel panic")
    ;;
  *) echo "boot_test: unknown scenario '$scenario' (help, python, bad-config)" >&2; exit 2 ;;
esac

mkfifo "$tmp/console"
t0=$(date +%s%N)
qemu-system-x86_64 -accel tcg -m 512 -smp 1 -nographic -no-reboot \
  -kernel "$kernel" -initrd "$initrd" -append "$(cat "$image/cmdline")" \
  -virtfs "local,path=$cfg,mount_tag=coveconfig,security_model=none,readonly=on" \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile= "${extra[@]}" \
  < /dev/null > "$tmp/console" 2>&1 &
qpid=$!
exec 3< "$tmp/console"

fail() {
  echo "boot_test[$scenario]: FAIL: $*" >&2
  echo "--- console so far ---" >&2
  cat "$tmp/console.log" >&2 || true
  exit 1
}

end=$((SECONDS + deadline_s))
i=0
: > "$tmp/console.log"
while :; do
  left=$((end - SECONDS))
  [ "$left" -gt 0 ] || fail "deadline of ${deadline_s}s passed waiting for '${expect[$i]:-QEMU to exit}'"
  rc=0
  IFS= read -r -t "$left" line <&3 || rc=$?
  if [ "$rc" -gt 128 ]; then
    fail "deadline of ${deadline_s}s passed waiting for '${expect[$i]:-QEMU to exit}'"
  elif [ "$rc" -ne 0 ]; then  # EOF: QEMU closed the console, it has exited
    [ -z "$line" ] || printf '%s\n' "$line" >> "$tmp/console.log"
    break
  fi
  line=${line//$'\r'/}
  printf '%s\n' "$line" >> "$tmp/console.log"
  printf '  | %s\n' "$line"
  for bad in "${forbid[@]}"; do
    [[ "$line" == *"$bad"* ]] && fail "unexpected console line: '$line'"
  done
  if [ "$i" -lt "${#expect[@]}" ] && [[ "$line" == *"${expect[$i]}"* ]]; then
    printf 'boot_test[%s]: %5.1fs  got "%s"\n' "$scenario" "$(( ($(date +%s%N) - t0) / 1000000 ))e-3" "${expect[$i]}"
    i=$((i + 1))
  fi
done
set +e
wait "$qpid"
qrc=$?
set -e
qpid=""
elapsed_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$i" -eq "${#expect[@]}" ] || fail "QEMU exited (rc $qrc) before '${expect[$i]}'"
[ "$qrc" -eq 0 ] || fail "QEMU exited with $qrc (expected 0 after the guest's poweroff)"
echo "boot_test[$scenario]: PASS: QEMU powered off by itself after $((elapsed_ms / 1000)).$((elapsed_ms % 1000 / 100))s"
