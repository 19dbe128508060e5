#!/usr/bin/env bash
# Static checks for the buildroot external tree (buildroot itself is not
# available here, so nothing is built):
#   buildroot_lint.sh TREE          lint TREE (eos/buildroot)
#   buildroot_lint.sh --self-test TREE
#                                   break copies of TREE in known ways and
#                                   require the lint to reject each one
# Checks: required files; external.desc names the tree; external.mk includes
# the package .mk files; Config.in sources every package and only existing
# ones; each package has Config.in (config BR2_PACKAGE_<PKG>) and <pkg>.mk
# whose variables all use the <PKG>_ prefix and which ends in a known
# $(eval $(X-package)); selected/depended BR2_PACKAGE_COVE_* symbols exist;
# the defconfig's lines are BR2_ assignments, its external packages exist and
# its $(BR2_EXTERNAL_<NAME>_PATH)/... paths exist; scripts pass sh -n and are
# executable, including the eos/init the post-build script installs.
set -uo pipefail

errors=0
err() { echo "buildroot_lint: $*" >&2; errors=$((errors + 1)); }

lint() {  # tree
  local t=$1 name f p P mk cfg line var sym path
  errors=0
  for f in external.desc external.mk Config.in configs/cove_eos_defconfig board/cove/post-build.sh \
      board/cove/linux.fragment; do
    [ -f "$t/$f" ] || err "missing $f"
  done
  [ -d "$t/board/cove/rootfs-overlay" ] || err "missing board/cove/rootfs-overlay/"
  [ "$errors" -eq 0 ] || return 1

  name=$(sed -n 's/^name: *\([A-Za-z0-9_]*\) *$/\1/p' "$t/external.desc")
  [ -n "$name" ] || { err "external.desc: no 'name: <NAME>' line ([A-Za-z0-9_]+)"; return 1; }
  grep -q '^desc: .' "$t/external.desc" || err "external.desc: no 'desc:' line"
  grep -Fq "include \$(sort \$(wildcard \$(BR2_EXTERNAL_${name}_PATH)/package/*/*.mk))" "$t/external.mk" \
    || err "external.mk: does not include \$(BR2_EXTERNAL_${name}_PATH)/package/*/*.mk"

  # Config.in: every sourced file exists and every package is sourced.
  while IFS= read -r line; do
    path=${line#*\"}; path=${path%\"*}
    case "$path" in
      "\$BR2_EXTERNAL_${name}_PATH/"*) [ -f "$t/${path#*/}" ] || err "Config.in sources missing ${path#*/}" ;;
      *) err "Config.in: source '$path' is not under \$BR2_EXTERNAL_${name}_PATH" ;;
    esac
  done < <(grep -E '^[[:space:]]*source[[:space:]]' "$t/Config.in")

  local packages=()
  for p in "$t"/package/*/; do
    [ -d "$p" ] || continue
    p=$(basename "$p")
    packages+=("$p")
    P=$(echo "$p" | tr 'a-z-' 'A-Z_')
    cfg=$t/package/$p/Config.in mk=$t/package/$p/$p.mk
    grep -Fq "source \"\$BR2_EXTERNAL_${name}_PATH/package/$p/Config.in\"" "$t/Config.in" \
      || err "Config.in does not source package/$p/Config.in"
    [ -f "$cfg" ] || { err "package/$p: no Config.in"; continue; }
    [ -f "$mk" ] || { err "package/$p: no $p.mk"; continue; }
    grep -Eq "^config BR2_PACKAGE_${P}\$" "$cfg" || err "package/$p/Config.in: no 'config BR2_PACKAGE_${P}'"
    # Variables set in the .mk (NAME = / += / := / ?= and define NAME) use the prefix.
    while IFS= read -r var; do
      case "$var" in "${P}_"*) ;; *) err "package/$p/$p.mk: variable '$var' does not start with ${P}_" ;; esac
    done < <(sed -n -E 's/^([A-Za-z0-9_]+)[[:space:]]*[:+?]?=.*/\1/p; s/^define[[:space:]]+([A-Za-z0-9_]+).*/\1/p' "$mk")
    grep -Eq "^${P}_VERSION[[:space:]]*=" "$mk" || err "package/$p/$p.mk: no ${P}_VERSION"
    grep -Eq "^${P}_SITE[[:space:]]*=" "$mk" || err "package/$p/$p.mk: no ${P}_SITE"
    grep -Eq '^\$\(eval \$\((host-)?(generic|cmake|autotools|meson|python|kconfig|cargo|golang|perl|luarocks|waf|qmake|virtual)-package\)\)$' "$mk" \
      || err "package/$p/$p.mk: no \$(eval \$(<type>-package)) line"
  done
  [ "${#packages[@]}" -gt 0 ] || err "no packages under package/"

  # BR2_PACKAGE_<NAME>_* symbols used anywhere must be defined by a package here.
  local defined=" "
  for p in "${packages[@]}"; do defined+="BR2_PACKAGE_$(echo "$p" | tr 'a-z-' 'A-Z_') "; done
  while IFS= read -r sym; do
    case "$defined" in *" $sym "*) ;; *) err "$sym is used but no package/ defines it" ;; esac
  done < <(cat "$t"/package/*/Config.in "$t"/configs/*_defconfig 2>/dev/null \
    | grep -oE "BR2_PACKAGE_${name}_[A-Z0-9_]+" | sort -u)

  # defconfig syntax and paths into the external tree.
  for f in "$t"/configs/*_defconfig; do
    local n=0 base
    base=$(basename "$f")
    while IFS= read -r line; do
      n=$((n + 1))
      case "$line" in
        '' | '#'*) ;;
        BR2_*=*) [[ "$line" =~ ^BR2_[A-Za-z0-9_]+=(y|[0-9]+|\".*\")$ ]] || err "$base:$n: bad value: $line" ;;
        *) err "$base:$n: not a BR2_ assignment: $line" ;;
      esac
    done < "$f"
    while IFS= read -r path; do
      [ -e "$t/$path" ] || err "$(basename "$f") references \$(BR2_EXTERNAL_${name}_PATH)/$path, which does not exist"
    done < <(grep -oE "\\\$\(BR2_EXTERNAL_${name}_PATH\)/[^\" ]+" "$f" | sed 's/^[^/]*\///')
    grep -q '^BR2_INIT_NONE=y$' "$f" || err "$(basename "$f"): EOS brings its own /init: BR2_INIT_NONE=y expected"
  done

  # Scripts: syntax and mode; the post-build script installs ../init.
  while IFS= read -r f; do
    sh -n "$f" 2>/dev/null || err "${f#"$t"/}: sh -n fails"
    [ -x "$f" ] || err "${f#"$t"/}: not executable"
  done < <(find "$t" -type f \( -name '*.sh' -o -path '*/rootfs-overlay/init' \) | sort)
  for f in init udhcpc.script; do
    [ -f "$t/../$f" ] || { err "post-build needs ../$f (eos/$f), which is missing"; continue; }
    sh -n "$t/../$f" 2>/dev/null || err "../$f: sh -n fails"
  done
  [ "$errors" -eq 0 ]
}

self_test() {  # tree
  local src=$1 case_ok=0 case_n=0
  self_tmp=$(mktemp -d "${TMPDIR:-/tmp}/br-lint.XXXXXX")
  trap 'rm -rf "$self_tmp"' EXIT
  local tmp=$self_tmp
  lint "$src" || { echo "buildroot_lint: self-test: the real tree must pass first" >&2; return 1; }
  # name | how to break a fresh copy | message the lint must print
  local cases=(
    "no-mk|rm package/cove-caf/cove-caf.mk|package/cove-caf: no cove-caf.mk"
    "wrong-prefix|sed -i 's/^COVE_NATS_C_LICENSE =/NATS_LICENSE =/' package/cove-nats-c/cove-nats-c.mk|variable 'NATS_LICENSE' does not start with COVE_NATS_C_"
    "unsourced|sed -i '/cove-caf/d' Config.in|Config.in does not source package/cove-caf/Config.in"
    "unknown-pkg|echo BR2_PACKAGE_COVE_MISSING=y >> configs/cove_eos_defconfig|BR2_PACKAGE_COVE_MISSING is used but no package/ defines it"
    "bad-path|sed -i 's#board/cove/post-build.sh#board/cove/postbuild.sh#' configs/cove_eos_defconfig|references \$(BR2_EXTERNAL_COVE_PATH)/board/cove/postbuild.sh"
    "bad-script|echo 'if then' >> board/cove/post-build.sh|board/cove/post-build.sh: sh -n fails"
    "no-eval|sed -i '/eval/d' package/cove-agent/cove-agent.mk|no \$(eval \$(<type>-package)) line"
    "bad-desc|sed -i 's/^name:.*/name: co-ve/' external.desc|external.desc: no 'name: <NAME>' line"
    "bad-init|echo 'case x in' >> ../init|../init: sh -n fails"
  )
  for c in "${cases[@]}"; do
    local cname=${c%%|*} rest=${c#*|}
    local action=${rest%%|*} want=${rest#*|}
    case_n=$((case_n + 1))
    rm -rf "$tmp/eos" && mkdir -p "$tmp/eos"
    cp -r "$src" "$tmp/eos/buildroot"
    cp "$src/../init" "$src/../udhcpc.script" "$tmp/eos/"
    (cd "$tmp/eos/buildroot" && eval "$action")
    if out=$(lint "$tmp/eos/buildroot" 2>&1); then
      echo "buildroot_lint: self-test $cname: the broken tree passed" >&2
    elif [[ "$out" != *"$want"* ]]; then
      echo "buildroot_lint: self-test $cname: expected '$want', got: $out" >&2
    else
      case_ok=$((case_ok + 1))
      echo "buildroot_lint: self-test $cname: rejected as expected"
    fi
  done
  [ "$case_ok" -eq "$case_n" ] || return 1
  echo "buildroot_lint: self-test: all $case_n broken trees rejected"
}

if [ "${1:-}" = --self-test ] && [ $# -eq 2 ]; then
  self_test "$2"
elif [ $# -eq 1 ] && [ "${1#-}" = "$1" ]; then
  [ -d "$1" ] || { echo "buildroot_lint: '$1' is not a directory" >&2; exit 2; }
  lint "$1" && echo "buildroot_lint: $1: OK"
else
  echo "usage: buildroot_lint.sh [--self-test] TREE" >&2
  exit 2
fi
