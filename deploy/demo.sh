#!/usr/bin/env bash
# The cove demo: an embedded nats-server and coved, one CVM, and the sample
# computation — linear regression over two hospitals' CSVs — run end to end
# through the `cove` CLI. The CVM is an agent process with simulated SEV-SNP
# (process backend, the default) or, with --backend libvirt, a real QEMU VM
# booting the EOS image (TCG, tee=none, vTPM from swtpm; the agent's evidence
# is still the simulated SEV-SNP one).
# Usage: deploy/demo.sh BUILD_DIR [--backend process|libvirt]
#   (./cove.sh demo [--backend libvirt] builds first, starts libvirtd and builds
#   the EOS image into BUILD_DIR/eos when needed, and calls this)
set -euo pipefail
build=$(cd "${1:?usage: demo.sh BUILD_DIR [--backend process|libvirt]}" && pwd)
shift
backend=process
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) backend=${2:?--backend needs a value}; shift 2 ;;
    --backend=*) backend=${1#--backend=}; shift ;;
    *) echo "demo.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
case "$backend" in process | libvirt) ;; *) echo "demo.sh: --backend process|libvirt, not '$backend'" >&2; exit 2 ;; esac
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$build/bin"
work=$(mktemp -d /tmp/cove-demo.XXXXXX)
export COVE_STATE_DIR="$work/state"
unset COVE_NATS_URL
coved_args=()
cli_args=()
if [ "$backend" = libvirt ]; then
  [ -f "$build/eos/vmlinuz" ] || { echo "demo.sh: no EOS image in $build/eos (./cove.sh eos builds it)" >&2; exit 1; }
  coved_args=(--eos-dir "$build/eos")
  # QEMU runs as libvirt-qemu: it may search (not list) the demo directory on the
  # way to the CVM's read-only config share; coved grants the rest itself.
  chmod 0711 "$work"
  # The agent runs under software emulation: give its answers more time.
  cli_args=(--timeout 60)
fi
cove() { "$bin/cove" "${cli_args[@]}" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

coved_pid=""
cleanup() {
  if [ -n "$coved_pid" ] && kill -0 "$coved_pid" 2>/dev/null; then
    kill "$coved_pid"
    wait "$coved_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

step "starting coved (embedded nats-server on a free loopback port, state in $COVE_STATE_DIR)"
# Secure by default: the embedded bus is locked down (TLS, one nkey per role; the
# CLI uses the host's admin key, participants their own Ed25519 keys), and the
# agent joins it only through the attested TLS bridge (bridge/README.md).
"$bin/coved" --listen 127.0.0.1:0 --state-dir "$COVE_STATE_DIR" "${coved_args[@]}" >"$work/coved.log" 2>&1 &
coved_pid=$!
for _ in $(seq 1 200); do  # up to 20 s
  if [ -s "$COVE_STATE_DIR/nats.url" ] && cove cvm list >/dev/null 2>&1; then break; fi
  kill -0 "$coved_pid" 2>/dev/null || { cat "$work/coved.log"; echo "coved exited" >&2; exit 1; }
  sleep 0.1
done
cove cvm list >/dev/null || { cat "$work/coved.log"; exit 1; }
echo "bus: $(cat "$COVE_STATE_DIR/nats.url")"

step "each party makes a key pair (the algorithm owner, two hospitals, the analyst who gets the result)"
cd "$work"
for who in algo-owner hospital-a hospital-b analyst; do
  cove keys generate -o "$who" >/dev/null
  echo "  $who.key / $who.pub"
done

step "they agree on a manifest: who uploads what (SHA3-256 of each file) and who may read the result"
python3 "$root/examples/make-manifest.py" linreg-demo \
  "$root/examples/linreg/linreg.py" python algo-owner.pub analyst.pub \
  "$root/examples/linreg/hospital-a.csv" hospital-a.pub \
  "$root/examples/linreg/hospital-b.csv" hospital-b.pub \
  --arg "hospitals A+B" --timeout 60 > manifest.json
python3 -c 'import json; m=json.load(open("manifest.json")); print("  id:", m["id"]); [print("  dataset:", d["filename"], d["hash"][:16]+"…") for d in m["datasets"]]'

if [ "$backend" = libvirt ]; then
  step "coved boots a VM through libvirt: EOS (kernel + initramfs), the agent starts and joins through the bridge"
  t0=$(date +%s%N)
  cvm=$(cove cvm create --backend libvirt --tee none --ttl 10m) || { tail -20 "$work/coved.log"; exit 1; }
  echo "  ready after $(( ($(date +%s%N) - t0) / 1000000 )) ms (QEMU under TCG, no KVM here)"
  cove cvm info "$cvm"
  echo "  the VM's serial console ($COVE_STATE_DIR/cvms/$cvm/console.log):"
  grep -a 'EOS:' "$COVE_STATE_DIR/cvms/$cvm/console.log" | sed 's/^/    /' || true
else
  step "coved creates a confidential VM (process backend, simulated SEV-SNP)"
  cvm=$(cove cvm create --ttl 10m)
  cove cvm info "$cvm"
fi

step "anyone can check what runs there before trusting it: fresh nonce, report, AMD-style chain, policy"
cove attestation get --cvm "$cvm" -o evidence.json
cove attestation validate --evidence evidence.json --policy "$COVE_STATE_DIR/sim/policy.json"
echo "  policy: $COVE_STATE_DIR/sim/policy.json (names the simulated root and the agent's measurement)"

step "the manifest goes to the agent"
cove computation start --cvm "$cvm" manifest.json

step "each party attests the agent again, then uploads sealed to its key and signed with their own key"
cove algo --cvm "$cvm" --manifest manifest.json "$root/examples/linreg/linreg.py" algo-owner.key
cove data --cvm "$cvm" --manifest manifest.json "$root/examples/linreg/hospital-a.csv" hospital-a.key
cove data --cvm "$cvm" --manifest manifest.json "$root/examples/linreg/hospital-b.csv" hospital-b.key

step "the agent runs the algorithm on the union of the data"
state=""
for _ in $(seq 1 1200); do  # up to 120 s
  state=$(cove computation status --cvm "$cvm" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
  case "$state" in ConsumingResults|Complete|Failed) break ;; esac
  sleep 0.1
done
cove computation status --cvm "$cvm"
[ "$state" = Failed ] && exit 1

step "only the analyst can fetch and decrypt the result"
cove result --cvm "$cvm" --manifest manifest.json analyst.key -o result.zip
python3 -m zipfile -e result.zip result
echo "result/model.json:"
sed 's/^/  /' result/model.json

step "what a hospital would get if it asked for the result (it is not a consumer)"
cove result --cvm "$cvm" hospital-a.key -o stolen.zip || true

step "cleaning up"
cove cvm remove "$cvm"
echo
echo "demo complete: the host, coved and the bus only ever carried sealed bytes."
