#!/usr/bin/env bash
# Builds the real Linux guest fixtures: boots Debian's current kernel under QEMU
# (TCG) with a busybox initramfs, twice (4-level and 5-level paging), records the
# guest's own view of itself and dumps its memory. See README.md.
#
# Usage: build.sh [--out DIR] [--force]
#   --out DIR  cache directory (default ${VMI_FIXTURE_DIR:-/var/cache/vmi/linux-fixtures})
#   --force    rebuild even if the fixtures for this kernel and these scripts exist
#
# Idempotent: when DIR/<key>/COMPLETE exists it says so and exits at once. The
# key is the kernel package, its version and a hash of this directory's scripts
# (and of the QEMU and busybox versions), so a new kernel in the archive or an
# edited script rebuilds. Run as root (apt-get download, /var/cache).
set -euo pipefail

log() { printf 'linux_fixture: %s\n' "$*" >&2; }
die() { printf 'linux_fixture: error: %s\n' "$*" >&2; exit 1; }

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${VMI_FIXTURE_DIR:-/var/cache/vmi/linux-fixtures}
FORCE=0
BUSYBOX=/bin/busybox
MODULES=(qemu_fw_cfg fat vfat crc-itu-t)
VARIANTS=(l4 l5)
BOOT_TIMEOUT=${VMI_FIXTURE_BOOT_TIMEOUT:-300}  # seconds from QEMU start to @@READY

usage() { sed -n '6,9s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
while [ $# -gt 0 ]; do
  case $1 in
    --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT=$2; shift 2 ;;
    --out=*) OUT=${1#--out=}; shift ;;
    --force) FORCE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done

for c in python3 apt-cache apt-get dpkg gcc qemu-system-x86_64 sha256sum flock; do
  command -v "$c" >/dev/null 2>&1 ||
    die "missing '$c' (packages: qemu-system-x86 busybox-static gcc libc6-dev python3; tools/setup.sh installs them)"
done
[ -x "$BUSYBOX" ] || die "missing $BUSYBOX (package busybox-static)"

mkdir -p "$OUT" || die "cannot create $OUT (run as root or pass --out)"
OUT=$(cd "$OUT" && pwd)

# --- Which kernel: resolved with apt-cache, remembered while the apt lists are unchanged.
apt_fingerprint() {
  local files=()
  shopt -s nullglob
  files=(/var/lib/apt/lists/*Packages* /var/lib/apt/lists/*Release /etc/apt/preferences*
         /etc/apt/preferences.d/*)
  shopt -u nullglob
  { [ ${#files[@]} -eq 0 ] || stat -c '%n %s %Y' -- "${files[@]}"; } | sha256sum | cut -c1-32
}
resolve_kernel() {
  local fp cache=$OUT/.kernel-resolution line
  fp=$(apt_fingerprint)
  if [ -r "$cache" ]; then
    read -r line <"$cache" || true
    # shellcheck disable=SC2086
    set -- $line
    if [ $# -eq 3 ] && [ "$1" = "$fp" ]; then
      KPKG=$2 KVER=$3
      return
    fi
  fi
  KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null |
         awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
  [ -n "$KPKG" ] || die "apt-cache depends linux-image-amd64 names no linux-image-<ver> package (run apt-get update?)"
  KVER=$(apt-cache policy "$KPKG" | awk '$1 == "Candidate:" { print $2; exit }')
  if [ -z "$KVER" ] || [ "$KVER" = "(none)" ]; then
    die "no installable version of $KPKG (apt-cache policy)"
  fi
  printf '%s %s %s\n' "$fp" "$KPKG" "$KVER" >"$cache.$$" && mv -f "$cache.$$" "$cache"
}
resolve_kernel

scripts_hash() {
  {
    (cd "$SCRIPT_DIR" && find . -maxdepth 1 -type f ! -name '*.md' -print0 | sort -z |
      xargs -0 sha256sum)
    qemu-system-x86_64 --version | head -n1
    "$BUSYBOX" 2>&1 | head -n1
  } | sha256sum | cut -c1-12
}
KEY=$(printf '%s_%s_%s' "$KPKG" "$KVER" "$(scripts_hash)" | tr -c 'A-Za-z0-9._+\n-' '_')
FIXTURE=$OUT/$KEY

point_current() {
  if [ "$(readlink "$OUT/current" 2>/dev/null || true)" != "$KEY" ]; then
    ln -sfn "$KEY" "$OUT/.current.$$"
    mv -fT "$OUT/.current.$$" "$OUT/current"
  fi
}

if [ "$FORCE" = 0 ] && [ -f "$FIXTURE/COMPLETE" ]; then
  point_current
  log "fixtures up to date: $FIXTURE ($KPKG $KVER)"
  exit 0
fi

exec 9>"$OUT/.lock"
if ! flock -n 9; then
  log "another build holds $OUT/.lock; waiting"
  flock 9
fi
if [ "$FORCE" = 0 ] && [ -f "$FIXTURE/COMPLETE" ]; then
  point_current
  log "fixtures up to date (built meanwhile): $FIXTURE"
  exit 0
fi

START=$(date +%s)
TMP=$OUT/.tmp.$KEY.$$
RUNNER_PID=
cleanup() {
  local rc=$? f pid
  trap - EXIT INT TERM
  if [ -n "$RUNNER_PID" ] && kill -0 "$RUNNER_PID" 2>/dev/null; then
    kill -TERM "$RUNNER_PID" 2>/dev/null || true
    wait "$RUNNER_PID" 2>/dev/null || true
  fi
  # fixture.py kills QEMU itself (and QEMU dies with it); this covers the rest.
  for f in "$TMP"/*/qemu.pid; do
    [ -r "$f" ] || continue
    read -r pid <"$f" || continue
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = qemu-system-x86 ]; then
      log "killing QEMU $pid"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  rm -f "$OUT/.current.$$"
  if [ "$rc" -ne 0 ]; then
    if [ -d "$TMP" ]; then
      # Keep the logs and captures (not the memory dumps) for a post-mortem.
      rm -f "$TMP"/*/mem.raw "$TMP"/*/mem.elf
      rm -rf "$OUT/last-failure"
      mv -T "$TMP" "$OUT/last-failure" && log "logs and captures kept in $OUT/last-failure"
    fi
    log "FAILED (exit $rc); $OUT/current is unchanged"
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a fixture.py step in the background so a signal reaches our trap at once.
run_py() {
  local rc=0
  python3 "$SCRIPT_DIR/fixture.py" "$@" &
  RUNNER_PID=$!
  wait "$RUNNER_PID" || rc=$?
  RUNNER_PID=
  return "$rc"
}

# --- The kernel package, downloaded and unpacked once per version.
KDIR=$OUT/kernel/${KPKG}_$KVER
if [ ! -f "$KDIR/COMPLETE" ]; then
  log "downloading $KPKG $KVER"
  rm -rf "$KDIR.tmp"
  mkdir -p "$KDIR.tmp/deb"
  # apt-get download runs as _apt when it can: let it write there.
  if id _apt >/dev/null 2>&1; then chown _apt "$KDIR.tmp/deb"; fi
  (cd "$KDIR.tmp/deb" && apt-get download -q "$KPKG=$KVER") ||
    die "apt-get download $KPKG=$KVER failed"
  debs=("$KDIR.tmp"/deb/*.deb)
  [ -f "${debs[0]}" ] || die "apt-get download left no .deb in $KDIR.tmp/deb"
  dpkg -x "${debs[0]}" "$KDIR.tmp/root"
  rm -rf "$KDIR.tmp/deb"
  touch "$KDIR.tmp/COMPLETE"
  rm -rf "$KDIR"
  mv -T "$KDIR.tmp" "$KDIR"
fi
vmlinuz=("$KDIR"/root/boot/vmlinuz-*)
[ -f "${vmlinuz[0]}" ] || die "no boot/vmlinuz-* in $KPKG"
KREL=${vmlinuz[0]##*/vmlinuz-}
MODROOT=$KDIR/root/lib/modules/$KREL
[ -d "$MODROOT" ] || die "no lib/modules/$KREL in $KPKG"

# --- Build the initramfs and boot the variants, all in $TMP.
rm -rf "$TMP"
mkdir -p "$TMP/kernel" "$TMP/build"
cp "${vmlinuz[0]}" "$TMP/kernel/vmlinuz"
# (The package's System.map is a stub pointing at the -dbg package: not copied.)
cp "$KDIR/root/boot/config-$KREL" "$TMP/kernel/config"

gcc -static -O2 -pthread -Wall -Wextra -Werror -o "$TMP/build/fixture-threads" \
  "$SCRIPT_DIR/helper.c" || die "compiling helper.c (static: needs libc6-dev's libc.a)"
module_args=()
for m in "${MODULES[@]}"; do module_args+=(--module "$m"); done
run_py initramfs --busybox "$BUSYBOX" --helper "$TMP/build/fixture-threads" \
  --init "$SCRIPT_DIR/init.sh" --modules-root "$MODROOT" "${module_args[@]}" \
  --out "$TMP/initramfs.cpio.gz"
rm -rf "$TMP/build"

for v in "${VARIANTS[@]}"; do
  vstart=$(date +%s)
  run_py run --variant "$v" --kernel "$TMP/kernel/vmlinuz" --initrd "$TMP/initramfs.cpio.gz" \
    --out "$TMP/$v" --kernel-package "$KPKG" --kernel-version "$KVER" --timeout "$BOOT_TIMEOUT" ||
    die "variant $v failed (see the messages above)"
  log "variant $v done in $(( $(date +%s) - vstart )) s"
done

cat >"$TMP/fixture.json" <<EOF
{
  "key": "$KEY",
  "kernel_package": "$KPKG",
  "kernel_package_version": "$KVER",
  "kernel_release": "$KREL",
  "variants": [$(printf '"%s", ' "${VARIANTS[@]}" | sed 's/, $//')],
  "build_seconds": $(( $(date +%s) - START )),
  "created_utc": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
EOF
touch "$TMP/COMPLETE"

# --- Publish: rename into place, then repoint `current`, then drop the old ones.
if [ -e "$FIXTURE" ]; then
  mv -T "$FIXTURE" "$OUT/.old.$KEY.$$"
fi
mv -T "$TMP" "$FIXTURE"
point_current
shopt -s nullglob
for d in "$OUT"/linux-image-*_*_* "$OUT"/.tmp.* "$OUT"/.old.* "$OUT"/last-failure \
         "$OUT"/kernel/*; do
  case $d in
    "$FIXTURE"|"$KDIR") ;;
    *) rm -rf "$d" ;;
  esac
done
shopt -u nullglob

log "built $FIXTURE in $(( $(date +%s) - START )) s"
for v in "${VARIANTS[@]}"; do
  log "  $v: $(du -sh "$FIXTURE/$v" | cut -f1) ($(python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
print("%s-level, %s, slide %s, @@READY after %s s" % (m["paging_levels"], m["uname_r"],
      m["kaslr_slide"], m["timings"]["boot_to_ready_s"]))
' "$FIXTURE/$v/meta.json"))"
done
log "  total $(du -sh "$FIXTURE" | cut -f1); kernel download cache $(du -sh "$KDIR" | cut -f1)"
