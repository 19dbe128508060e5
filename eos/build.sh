#!/usr/bin/env bash
# Builds the EOS guest image (kernel + initramfs) from Debian packages only.
#
#   eos/build.sh --agent PATH [--out DIR] [--kernel-deb PATH] [--python full|minimal|none]
#                [--cove PATH] [--no-measure]
#
# Output in DIR (default build/eos/): vmlinuz, vmlinux (the same kernel
# uncompressed: an ELF with a PVH entry point that QEMU boots directly),
# initrd.img (uncompressed newc cpio), cmdline (the kernel command line the
# image expects), initrd.files (the sorted file list of the initramfs) and
# SHA256SUMS. Reproducible: the same
# inputs (agent binary, kernel .deb, host packages, SOURCE_DATE_EPOCH) give
# byte-identical files. See eos/README.md.
set -euo pipefail
umask 022
export LC_ALL=C TZ=UTC

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

die() { echo "eos/build.sh: $*" >&2; exit 1; }
usage() { sed -n '4,5p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

agent="" out="$root/build/eos" kernel_deb="${COVE_EOS_KERNEL_DEB:-}" python_mode=full
cove_bin="" measure=1
while [ $# -gt 0 ]; do
  case "$1" in
    --agent) [ $# -ge 2 ] || usage; agent=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
    --kernel-deb) [ $# -ge 2 ] || usage; kernel_deb=$2; shift 2 ;;
    --python) [ $# -ge 2 ] || usage; python_mode=$2; shift 2 ;;
    --cove) [ $# -ge 2 ] || usage; cove_bin=$2; shift 2 ;;
    --no-measure) measure=0; shift ;;
    -h|--help) usage ;;
    *) echo "eos/build.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
[ -n "$agent" ] || die "--agent PATH is required (the cove-agent binary: build/bin/cove-agent)"
{ [ -f "$agent" ] && [ -x "$agent" ]; } || die "--agent '$agent' is not an executable file"
case "$python_mode" in full|minimal|none) ;; *) die "--python must be full, minimal or none (got '$python_mode')" ;; esac

# --- tools (Debian packages: busybox-static cpio kmod dpkg gzip python3.11) ----
busybox=/bin/busybox
depmod=/sbin/depmod
modprobe=/sbin/modprobe
py=/usr/bin/python3.11  # Debian's interpreter; never a pyenv/venv python3 from PATH
[ -x "$busybox" ] || die "$busybox missing (apt-get install busybox-static)"
if ldd "$busybox" >/dev/null 2>&1; then die "$busybox is dynamically linked: install busybox-static, not busybox"; fi
{ [ -x "$depmod" ] && [ -x "$modprobe" ]; } || die "depmod/modprobe missing (apt-get install kmod)"
for t in cpio dpkg-deb ldd sha256sum sha384sum strip; do command -v "$t" >/dev/null || die "'$t' not found"; done
[ -x "$py" ] || die "$py missing (apt-get install python3.11): it extracts vmlinux and, unless --python none, goes into the image"

# --- SOURCE_DATE_EPOCH: every timestamp in the image --------------------------
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$root" log -1 --format=%ct 2>/dev/null) \
    || die "SOURCE_DATE_EPOCH is not set and $root is not a git checkout"
fi
case "$SOURCE_DATE_EPOCH" in ''|*[!0-9]*) die "SOURCE_DATE_EPOCH must be a number (got '$SOURCE_DATE_EPOCH')" ;; esac
export SOURCE_DATE_EPOCH

# --- kernel .deb (downloaded by deploy/install-deps.sh, never at build time) --
cache=${COVE_EOS_CACHE:-/var/cache/cove/eos}
if [ -z "$kernel_deb" ]; then
  kernel_deb=$({ find "$cache" -maxdepth 1 -name 'linux-image-[0-9]*-amd64_*_amd64.deb' 2>/dev/null || true; } \
    | sort -V | tail -1)
  [ -n "$kernel_deb" ] || die "no kernel .deb in $cache: run deploy/install-deps.sh (it runs
  'apt-get download linux-image-<version>-amd64' there), or pass --kernel-deb PATH"
fi
[ -f "$kernel_deb" ] || die "--kernel-deb '$kernel_deb' does not exist"
kpkg=$(dpkg-deb -f "$kernel_deb" Package) || die "'$kernel_deb' is not a .deb"
case "$kpkg" in linux-image-*-amd64) ;; *) die "'$kernel_deb' is package '$kpkg', expected linux-image-<version>-amd64" ;; esac
case "$kpkg" in *-cloud-amd64) die "'$kpkg' is the cloud kernel, which has no 9p: use the generic linux-image-<version>-amd64" ;; esac
kver=${kpkg#linux-image-}

work=$(mktemp -d "${TMPDIR:-/tmp}/cove-eos.XXXXXX")
trap 'rm -rf "$work"' EXIT
k=$work/kernel r=$work/root
mkdir -p "$k" "$r"

echo "eos: kernel $kpkg $(dpkg-deb -f "$kernel_deb" Version) from $kernel_deb"
dpkg-deb --fsys-tarfile "$kernel_deb" | tar -x -C "$k" --wildcards './boot/vmlinuz-*' './boot/config-*' './lib/modules/*'
[ -f "$k/boot/vmlinuz-$kver" ] || die "$kernel_deb has no boot/vmlinuz-$kver"
# What /init relies on without loading a module: the TPM drivers (tpm_crb for
# QEMU's tpm-crb, tpm_tis), the serial console, devtmpfs, an initramfs, the PVH
# entry point (vmlinux).
for opt in TCG_TPM TCG_CRB TCG_TIS SERIAL_8250_CONSOLE DEVTMPFS BLK_DEV_INITRD PVH UNIX INET PACKET; do
  grep -qx "CONFIG_$opt=y" "$k/boot/config-$kver" || die "$kpkg: CONFIG_$opt is not built in (=y)"
done
"$depmod" -b "$k" "$kver"

# --- layout: merged /usr like Debian ------------------------------------------
mkdir -p "$r"/usr/bin "$r"/usr/sbin "$r"/usr/lib "$r"/usr/lib64 "$r"/etc/eos "$r"/etc/udhcpc \
  "$r"/proc "$r"/sys "$r"/dev "$r"/tmp "$r"/run "$r"/config "$r"/root "$r"/var/lib/cove
chmod 1777 "$r/tmp"
ln -s usr/bin "$r/bin"
ln -s usr/sbin "$r/sbin"
ln -s usr/lib "$r/lib"
ln -s usr/lib64 "$r/lib64"

# busybox and one symlink per applet (never over a file we install ourselves).
cp "$busybox" "$r/usr/bin/busybox"
"$busybox" --list-full | sort | while read -r applet; do
  case "$applet" in bin/*) d=usr/bin ;; sbin/*) d=usr/sbin ;; usr/bin/*) d=usr/bin ;; usr/sbin/*) d=usr/sbin ;; *) continue ;; esac
  name=${applet##*/}
  [ -e "$r/$d/$name" ] || [ -L "$r/$d/$name" ] || ln -s /usr/bin/busybox "$r/$d/$name"
done

# A host binary plus every shared library it needs (resolved by ldd), each at
# its own path under /usr (merged /usr), including the dynamic loader.
copy_libs() {  # file...
  local f lib dir
  for f in "$@"; do
    { ldd "$f" 2>/dev/null || true; } | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}' | while read -r lib; do
      dir=$(readlink -f "$(dirname "$lib")")
      case "$dir" in /usr/*) ;; *) dir=/usr$dir ;; esac
      if [ ! -e "$r$dir/${lib##*/}" ]; then
        mkdir -p "$r$dir"
        cp -L "$lib" "$r$dir/${lib##*/}"
      fi
    done
  done
}

# --- the agent -----------------------------------------------------------------
# ldd's output is read once into a variable and matched there, never piped into
# `grep -q`: grep -q exits at the first match, ldd's next write then dies of
# SIGPIPE, and under pipefail the whole test turns false. That dropped the TCTI
# below from the image now and then (about 1 build in 20 here; more on a loaded
# machine), and the guest agent then failed with "Failed to instantiate TCTI".
agent_ldd=$(ldd "$agent" 2>&1) || die "ldd $agent failed: $agent_ldd"
if grep -q 'not found' <<< "$agent_ldd"; then
  die "$agent has unresolved libraries: $(grep 'not found' <<< "$agent_ldd" | tr -s '\t\n' '  ')"
fi
# Without debug info (22 MB -> 1 MB for a RelWithDebInfo build); strip is deterministic.
strip --strip-unneeded -o "$r/usr/bin/cove-agent" "$agent" 2>/dev/null || cp "$agent" "$r/usr/bin/cove-agent"
chmod 0755 "$r/usr/bin/cove-agent"
# The simulated evidence measures the agent binary (SHA-384 of /proc/self/exe): coved
# adds this digest of the image's (stripped) agent to its default sim policy.
sha384sum "$r/usr/bin/cove-agent" | cut -d' ' -f1 > "$work/agent.sha384"
copy_libs "$agent"
# tss2-tctildr dlopen()s its TCTI by name, which ldd cannot see: the guest's
# TPM is a device (/dev/tpmrm0, tpm_crb built into the kernel).
tcti=/usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0
if grep -q libtss2-tctildr <<< "$agent_ldd"; then
  [ -e "$tcti" ] || die "$tcti missing (apt-get install libtss2-tcti-device0)"
  cp -L "$tcti" "$r/usr/lib/x86_64-linux-gnu/"
  copy_libs "$tcti"
  # The agent's --vtpm fails only in the guest without it: check, never assume.
  [ -f "$r$tcti" ] || die "internal: $tcti was not copied into the image"
fi

# --- python3 -------------------------------------------------------------------
pylib=/usr/lib/python3.11
if [ "$python_mode" != none ]; then
  cp "$py" "$r/usr/bin/python3.11"
  ln -s python3.11 "$r/usr/bin/python3"
  copy_libs "$py"
  mkdir -p "$r$pylib"
  if [ "$python_mode" = full ]; then
    # The whole standard library except tests, development and GUI/terminal
    # parts: about 12 MB (3 MB gzip'd).
    (cd "$pylib" && find . \( -name __pycache__ -o -path ./test -o -path ./idlelib -o -path ./tkinter \
        -o -path ./turtledemo -o -path ./lib2to3 -o -path ./ensurepip -o -path ./pydoc_data \
        -o -path ./distutils -o -path './config-*' -o -path ./venv -o -path ./site-packages \
        -o -path ./dist-packages -o -path ./unittest -o -path ./curses -o -path ./dbm \
        -o -name sitecustomize.py -o -name 'EXTERNALLY-MANAGED' \
        -o -path './lib-dynload/_test*' -o -path './lib-dynload/xx*' -o -path './lib-dynload/_xx*' \
        -o -path './lib-dynload/_ctypes_test*' -o -path './lib-dynload/_curses*' \
        -o -path './lib-dynload/readline*' -o -path './lib-dynload/_dbm*' -o -path './lib-dynload/nis*' \
        -o -path './lib-dynload/ossaudiodev*' -o -path './lib-dynload/_crypt*' \) -prune \
        -o \( -type f -o -type l \) -print) | sort > "$work/py.list"
  else
    # What examples/linreg (csv, json, os, sys), `python3 -m` and the
    # interpreter's startup import (Debian's python3.11; _csv is built in), and
    # nothing else.
    cat > "$work/py.list" <<'EOF'
./_collections_abc.py
./_sitebuiltins.py
./_weakrefset.py
./abc.py
./codecs.py
./collections/__init__.py
./collections/abc.py
./contextlib.py
./copyreg.py
./csv.py
./encodings/__init__.py
./encodings/aliases.py
./encodings/ascii.py
./encodings/latin_1.py
./encodings/utf_8.py
./enum.py
./functools.py
./genericpath.py
./importlib/__init__.py
./importlib/_abc.py
./importlib/_bootstrap.py
./importlib/_bootstrap_external.py
./importlib/machinery.py
./importlib/util.py
./io.py
./json/__init__.py
./json/decoder.py
./json/encoder.py
./json/scanner.py
./keyword.py
./lib-dynload/_json.cpython-311-x86_64-linux-gnu.so
./lib-dynload/_typing.cpython-311-x86_64-linux-gnu.so
./operator.py
./os.py
./pkgutil.py
./posixpath.py
./re/__init__.py
./re/_casefix.py
./re/_compiler.py
./re/_constants.py
./re/_parser.py
./reprlib.py
./runpy.py
./site.py
./stat.py
./types.py
./typing.py
./warnings.py
./weakref.py
./zipimport.py
EOF
  fi
  (cd "$pylib" && cpio -pdm --quiet "$r$pylib" < "$work/py.list")
  find "$r$pylib" -name '*.so' | sort | while read -r so; do copy_libs "$so"; done
fi

# --- kernel modules, in dependency order ---------------------------------------
# TPM (tpm_crb, tpm_tis), the 8250 serial console and devtmpfs are built into
# Debian's generic kernel; everything virtio/9p/vsock is a module.
# /init loads the boot set (each insmod costs ~0.1 s under TCG); vsock and
# virtio-serial are in the image for `modprobe` but no backend gives the VM
# those devices, so they are not loaded at boot.
boot_mods="virtio_pci virtio_net 9pnet_virtio 9p virtio-rng sev-guest"
extra_mods="vmw_vsock_virtio_transport virtio_console"
show_depends() {
  for m in "$@"; do
    "$modprobe" -S "$kver" -d "$k" --show-depends "$m" || die "module '$m' not in $kpkg"
  done | awk '$1=="insmod"{print $2}' | awk '!seen[$0]++'
}
# shellcheck disable=SC2086 # word splitting of the module lists is intended
show_depends $boot_mods > "$work/boot-mods"
# shellcheck disable=SC2086
show_depends $boot_mods $extra_mods > "$work/mods"
mdir=lib/modules/$kver
mkdir -p "$r/usr/$mdir"
while read -r ko; do
  rel=${ko#"$k/$mdir/"}
  mkdir -p "$(dirname "$r/usr/$mdir/$rel")"
  cp "$ko" "$r/usr/$mdir/$rel"
done < "$work/mods"
: > "$r/etc/eos/modules"
while read -r ko; do echo "/$mdir/${ko#"$k/$mdir/"}" >> "$r/etc/eos/modules"; done < "$work/boot-mods"
cp "$k/$mdir/modules.order" "$k/$mdir/modules.builtin" "$k/$mdir/modules.builtin.modinfo" "$r/usr/$mdir/"
"$depmod" -b "$r/usr" "$kver"  # so modprobe works by hand in the guest
# depmod -b writes under <base>/lib/modules; with merged /usr that is /usr/lib/modules.

# --- init, config files --------------------------------------------------------
install -m 0755 "$here/init" "$r/init"
install -m 0755 "$here/udhcpc.script" "$r/etc/udhcpc/default.script"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$r/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$r/etc/group"
printf 'hosts: files dns\npasswd: files\ngroup: files\n' > "$r/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' > "$r/etc/hosts"
echo eos > "$r/etc/hostname"
printf 'EOS_KERNEL=%s\nEOS_SOURCE_DATE_EPOCH=%s\nEOS_PYTHON=%s\n' "$kver" "$SOURCE_DATE_EPOCH" "$python_mode" \
  > "$r/etc/eos/release"

# Precompiled bytecode: hash-based and unchecked, so it embeds no timestamps and
# Python never recompiles it in the guest (compiling under TCG is slow).
if [ "$python_mode" != none ]; then
  PYTHONHASHSEED=0 "$py" -I -m compileall -q -j 1 --invalidation-mode unchecked-hash \
    -d "$pylib" "$r$pylib" >/dev/null || die "compileall failed"
fi

# --- pack -----------------------------------------------------------------------
find "$r" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$out"
rm -f "$out/measurement.snp"
(cd "$r" && find . -mindepth 1 | sort) > "$work/files"
# Uncompressed: under TCG the kernel's gunzip of the initramfs took longer than
# loading the bigger file (docs/performance.md, launch).
(cd "$r" && cpio -o -H newc --reproducible -R 0:0 --quiet < "$work/files") > "$work/initrd.img"
cp "$k/boot/vmlinuz-$kver" "$work/vmlinuz"
# vmlinux: the bzImage's xz payload, uncompressed (the bzImage header's
# payload_offset/payload_length at 0x248/0x24c). An ELF with a PVH entry
# note, so QEMU boots it without SeaBIOS's linux loader and the kernel's xz
# decompressor (seconds under TCG). The libvirt backend boots it for tee=none;
# the measured (SEV/SNP) boot uses vmlinuz.
"$py" -I - "$work/vmlinuz" "$work/vmlinux" <<'PY' || die "cannot extract vmlinux from vmlinuz"
import lzma, struct, sys
data = open(sys.argv[1], "rb").read()
setup = (data[0x1F1] or 4) + 1
off, length = struct.unpack_from("<II", data, 0x248)
payload = data[setup * 512 + off:setup * 512 + off + length]
if not payload.startswith(b"\xfd7zXZ\x00"):
    sys.exit("vmlinuz: the payload is not xz")
# One xz stream, then the 4-byte uncompressed size the kernel build appends.
dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
elf = dec.decompress(payload)
if not dec.eof:
    sys.exit("vmlinuz: the xz payload is truncated")
if not elf.startswith(b"\x7fELF"):
    sys.exit("vmlinuz: the payload is not an ELF")
open(sys.argv[2], "wb").write(elf)
PY
cmdline="console=ttyS0 panic=-1 loglevel=4 no_timer_check"
echo "$cmdline" > "$work/cmdline"
sed 's|^\./|/|' "$work/files" > "$work/initrd.files"
for f in vmlinuz vmlinux initrd.img cmdline initrd.files agent.sha384; do cp "$work/$f" "$out/$f"; done
(cd "$out" && sha256sum vmlinuz vmlinux initrd.img cmdline initrd.files > SHA256SUMS)

echo "eos: image in $out (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH, python: $python_mode, $(wc -l < "$work/files") initramfs entries)"
(cd "$out" && for f in vmlinuz vmlinux initrd.img; do printf '  %-11s %9d bytes  sha256 %s\n' "$f" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)"; done)
echo "eos: kernel command line: $cmdline"

# --- SEV-SNP launch measurement (needs an OVMF image and the cove CLI) ----------
if [ "$measure" = 1 ]; then
  ovmf=${COVE_EOS_OVMF:-/usr/share/ovmf/OVMF.fd}
  [ -n "$cove_bin" ] || cove_bin=$root/build/bin/cove
  if [ ! -x "$cove_bin" ]; then
    echo "eos: launch measurement not computed: no cove CLI at $cove_bin (build it, or pass --cove PATH)"
  elif [ ! -f "$ovmf" ]; then
    echo "eos: launch measurement not computed: no OVMF at $ovmf (apt-get install ovmf, or set COVE_EOS_OVMF)"
  else
    margs=(measure --mode snp --vcpus 1 --vcpu-type EPYC-v4 --ovmf "$ovmf" --kernel "$out/vmlinuz"
      --initrd "$out/initrd.img" --append "$cmdline")
    if m=$("$cove_bin" "${margs[@]}" 2>"$work/measure.err"); then
      echo "$m" > "$out/measurement.snp"
      echo "eos: SEV-SNP launch measurement (cove measure --mode snp --vcpus 1 --vcpu-type EPYC-v4 --ovmf $ovmf): $m"
    else
      echo "eos: launch measurement not computed: cove measure failed: $(cat "$work/measure.err")"
      echo "eos:   (Debian's OVMF is the plain build; SEV-SNP direct boot needs an OVMF built from"
      echo "eos:   OvmfPkg/AmdSev/AmdSevX64.dsc, which has the kernel-hashes table: set COVE_EOS_OVMF)"
    fi
  fi
fi
