#!/usr/bin/env bash
# Starts a live Linux guest for introspection with QemuDriver: the fixture
# kernel and initramfs built by tools/setup.sh (tools/linux_fixture), booted
# under QEMU with the three things the driver needs, all in one directory:
#   DIR/gdb.sock   the GDB stub        (-gdb unix:DIR/gdb.sock,server=on,wait=off)
#   DIR/qmp.sock   QMP                 (-qmp unix:DIR/qmp.sock,server=on,wait=off)
#   DIR/ram        guest RAM, shared   (-object memory-backend-file,...,share=on
#                                       -machine memory-backend=ram)
# then waits until the guest is up (its init prints @@READY on the console),
# and prints the target for vmi: `--target qemu:DIR`.
#
# Usage:
#   start_guest.sh [--dir DIR] [--variant l4|l5] [--ram-mib N] [--smp N] [--kvm] [--timeout S]
#   start_guest.sh --stop DIR
#
# The guest (kernel command line vmi_fixture.live=1) runs the fixture's known
# processes and syscall-loop, a process calling getpid() in a loop; the
# console line "@@LIVE name:pid ..." names them (also in DIR/live.txt).
# Copy the QEMU options from here to introspect a guest of your own.
set -euo pipefail

die() { printf 'start_guest: %s\n' "$*" >&2; exit 1; }

DIR="" VARIANT=l4 RAM_MIB=256 SMP=2 ACCEL=tcg TIMEOUT=180 STOP=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR=$2; shift 2 ;;
    --variant) VARIANT=$2; shift 2 ;;
    --ram-mib) RAM_MIB=$2; shift 2 ;;
    --smp) SMP=$2; shift 2 ;;
    --kvm) ACCEL=kvm; shift ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --stop) STOP=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

stop() {
  local dir=$1 pid
  if [ -s "$dir/qemu.pid" ]; then
    pid=$(cat "$dir/qemu.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$dir/qemu.pid" "$dir/gdb.sock" "$dir/qmp.sock" "$dir/ram"
}
if [ -n "$STOP" ]; then stop "$STOP"; exit 0; fi

FIXTURES="${VMI_FIXTURE_DIR:-/var/cache/vmi/linux-fixtures}/current"
[ -e "$FIXTURES/COMPLETE" ] || die "no Linux fixtures under $FIXTURES: run tools/setup.sh"
KERNEL="$FIXTURES/kernel/vmlinuz"
INITRD="$FIXTURES/initramfs.cpio.gz"
[ -r "$KERNEL" ] && [ -r "$INITRD" ] || die "fixture kernel or initramfs missing under $FIXTURES: run tools/setup.sh"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not installed: run tools/setup.sh"
case "$VARIANT" in
  l4) CPU="max,-la57" ;;
  l5) CPU="max" ;;
  *) die "--variant must be l4 (4-level paging) or l5 (5-level)" ;;
esac
if [ "$ACCEL" = kvm ]; then
  [ -w /dev/kvm ] || die "--kvm: /dev/kvm is not usable here"
  CPU=host
fi
[ -n "$DIR" ] || DIR=$(mktemp -d /tmp/vmi-guest.XXXXXX)
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
stop "$DIR"
: >"$DIR/console.txt"

qemu-system-x86_64 -accel "$ACCEL" -cpu "$CPU" -smp "$SMP" -m "${RAM_MIB}M" \
  -nodefaults -display none -vga none -no-reboot \
  -kernel "$KERNEL" -initrd "$INITRD" \
  -append "console=ttyS0 panic=-1 quiet vmi_fixture.live=1" \
  -device vmcoreinfo \
  -object "memory-backend-file,id=ram,size=${RAM_MIB}M,mem-path=$DIR/ram,share=on" \
  -machine memory-backend=ram \
  -gdb "unix:$DIR/gdb.sock,server=on,wait=off" \
  -qmp "unix:$DIR/qmp.sock,server=on,wait=off" \
  -serial "file:$DIR/console.txt" -monitor none \
  -daemonize -pidfile "$DIR/qemu.pid" -name vmi-live-guest \
  || die "qemu-system-x86_64 failed to start"

deadline=$((SECONDS + TIMEOUT))
until grep -q '^@@READY' "$DIR/console.txt" 2>/dev/null; do
  if grep -q '^@@FAIL' "$DIR/console.txt" 2>/dev/null || [ $SECONDS -ge $deadline ] ||
     ! kill -0 "$(cat "$DIR/qemu.pid" 2>/dev/null || echo 0)" 2>/dev/null; then
    tail -n 20 "$DIR/console.txt" >&2 || true
    stop "$DIR"
    die "the guest did not come up within ${TIMEOUT}s"
  fi
  sleep 0.2
done
grep '^@@LIVE' "$DIR/console.txt" | head -n 1 | tr -d '\r' | sed 's/^@@LIVE //' >"$DIR/live.txt"
echo "qemu:$DIR"
