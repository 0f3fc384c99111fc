#!/bin/sh
# shellcheck shell=dash
# /init of the Linux fixture initramfs (busybox ash, PID 1).
#
# Starts the known processes, then records the guest's own view of itself on the
# second serial port (/dev/ttyS1) for fixture.py to split into files:
#   <LF>@@BEGIN name<LF> content <LF>@@END name<LF>
# (the LF before each marker is added by this script and removed by the host, so
# content need not end with a newline and may be binary). The stream ends with
# @@END-OF-CAPTURES. Then "@@READY" goes to the console (ttyS0) and the host
# stops the VM and dumps its memory.
#
# The guest should change as little as possible between the captures and the
# dump: ps/status/threads are taken last, status and threads with shell builtins
# only (no process is created or exits after `ps`), and init then idles on a FIFO
# read, not a `sleep` loop, so no new process appears before the dump.
#
# Booting with `vmi_fixture.shell=1` on the kernel command line skips the
# captures and gives a shell on the console instead (see README.md).
# Booting with `vmi_fixture.live=1` skips them too, starts syscall-loop (a
# process calling getpid() in a loop) beside the known processes, prints
# "@@LIVE name:pid ..." and "@@READY" on the console and idles: a guest for
# live introspection (tools/qemu/start_guest.sh).
#
# Failures print "@@FAIL reason" on the console; the host gives up at once.

export PATH=/bin
umask 022

fail() {
  echo "@@FAIL $*"
  # PID 1 must not exit (that panics the kernel, which hides the message).
  while :; do sleep 1000; done
}

mount -t proc proc /proc || fail "mount proc"
mount -t sysfs sysfs /sys || fail "mount sysfs"
mount -t devtmpfs devtmpfs /dev || fail "mount devtmpfs"
mkdir -p /run /tmp
mkfifo /run/idle || fail "mkfifo"

# Guest uptime at a few points (builtins only), sent as timings.txt.
STAMPS=
stamp() {
  local up rest
  read -r up rest </proc/uptime
  STAMPS="$STAMPS$1 $up
"
}
stamp init_start

echo 0 >/proc/sys/kernel/kptr_restrict || fail "kptr_restrict"

# qemu_fw_cfg publishes the kernel's VMCOREINFO note to QEMU (-device vmcoreinfo),
# so dump-guest-memory writes it into the ELF core. The others populate
# /proc/modules (vfat depends on fat). Order: dependencies first.
while read -r m; do
  insmod "/lib/modules/$m.ko" || fail "insmod $m"
done </lib/modules/load-order
[ -d /sys/firmware/qemu_fw_cfg ] || fail "qemu_fw_cfg did not probe"

read -r CMDLINE </proc/cmdline
SHELL_MODE=0
case " $CMDLINE " in *" vmi_fixture.shell=1 "*) SHELL_MODE=1 ;; esac
LIVE_MODE=0
case " $CMDLINE " in *" vmi_fixture.live=1 "*) LIVE_MODE=1 ;; esac

# Waits until /proc/PID/comm is NAME (the fork has exec'd) or fails.
wait_comm() {
  local n=0 comm
  while :; do
    comm=
    read -r comm <"/proc/$1/comm" 2>/dev/null
    [ "$comm" = "$2" ] && return 0
    n=$((n + 1))
    [ "$n" -gt 300 ] && fail "process $1 never became '$2' (comm '$comm')"
    sleep 0.1
  done
}

# --- The known processes -----------------------------------------------------
VMI_FIXTURE_READY=/run/fixture-threads.ready \
  fixture-threads --vmi-fixture alpha beta </dev/null >/dev/console 2>&1 &
FX_PID=$!
sleep 100000 &
SLEEP_PID=$!
# `sh -c 'sleep N'` would exec sleep in place; `& wait` keeps a parent/child pair.
sh -c 'sleep 200000 & echo $! >/run/shell-child.pid.tmp && mv /run/shell-child.pid.tmp /run/shell-child.pid; wait' \
  </dev/null &
SH_PID=$!

n=0
until [ -s /run/fixture-threads.ready ] && [ -s /run/shell-child.pid ]; do
  n=$((n + 1))
  [ "$n" -gt 300 ] && fail "known processes did not start (fixture-threads ready file or shell child pid missing)"
  sleep 0.1
done
read -r CHILD_PID </run/shell-child.pid
wait_comm "$FX_PID" fixture-threads
wait_comm "$SLEEP_PID" sleep
wait_comm "$SH_PID" sh
wait_comm "$CHILD_PID" sleep
ntasks=0
for t in /proc/"$FX_PID"/task/[0-9]*; do ntasks=$((ntasks + 1)); done
[ "$ntasks" -eq 4 ] || fail "fixture-threads has $ntasks tasks, want 4"

stamp known_processes_ready
KNOWN="fixture-threads:$FX_PID sleep:$SLEEP_PID shell:$SH_PID shell-child:$CHILD_PID"

if [ "$LIVE_MODE" = 1 ]; then
  syscall-loop </dev/null >/dev/null 2>&1 &
  LOOP_PID=$!
  wait_comm "$LOOP_PID" syscall-loop
  echo "@@LIVE $KNOWN syscall-loop:$LOOP_PID"
  echo "@@READY"
  while :; do read -r _ </run/idle; done
fi

if [ "$SHELL_MODE" = 1 ]; then
  echo "vmi fixture shell. Known processes: $KNOWN"
  echo "Helper layout: /run/fixture-threads.ready. Quit QEMU with Ctrl-A X."
  while :; do setsid cttyhack sh; done
fi

# --- Captures ----------------------------------------------------------------
stty -F /dev/ttyS1 raw -echo cs8 115200 || fail "stty ttyS1"
exec 3>/dev/ttyS1 || fail "open ttyS1"

begin() { printf '\n@@BEGIN %s\n' "$1" >&3; }
end() { printf '\n@@END %s\n' "$1" >&3; }
# capture NAME COMMAND...: the command's stdout becomes guest/NAME.
capture() {
  local cap="$1"
  shift
  begin "$cap"
  "$@" >&3 || echo "capture $cap: '$*' failed" >&2
  end "$cap"
}

capture uname.txt uname -r
capture version.txt cat /proc/version
capture cmdline.txt cat /proc/cmdline
capture cpuinfo.txt cat /proc/cpuinfo
capture iomem.txt cat /proc/iomem
capture sys_kernel_vmcoreinfo.txt cat /sys/kernel/vmcoreinfo
capture modules.txt cat /proc/modules
capture dmesg.txt dmesg
stamp kallsyms_start
capture kallsyms.txt cat /proc/kallsyms
stamp kallsyms_end
capture helper.txt cat /run/fixture-threads.ready

begin known.txt
for kv in $KNOWN; do
  printf '%s %s\n' "${kv%%:*}" "${kv#*:}" >&3
done
end known.txt

for kv in $KNOWN; do
  kname=${kv%%:*}
  kpid=${kv#*:}
  capture "maps_$kname.txt" cat "/proc/$kpid/maps"
  capture "cmdline_$kname.txt" tr '\000' ' ' <"/proc/$kpid/cmdline"
  capture "cmdline_$kname.raw" cat "/proc/$kpid/cmdline"
done

# Last: the process list. `ps` lists itself (it has exited by the dump); from here
# on nothing forks.
capture ps.txt ps -o pid,ppid,comm

begin status.txt
for d in /proc/[0-9]*; do
  # A task that exited since the glob is skipped whole (the redirection fails).
  {
    printf '==> %s/status <==\n' "$d"
    while IFS= read -r line; do printf '%s\n' "$line"; done
  } 2>/dev/null <"$d/status" >&3
done
end status.txt

begin threads.txt
for d in /proc/[0-9]*; do
  line="${d#/proc/}:"
  for t in "$d"/task/[0-9]*; do
    [ -e "$t" ] || continue
    line="$line ${t##*/}"
  done
  printf '%s\n' "$line" >&3
done
end threads.txt

stamp captures_end
begin timings.txt
printf '%s' "$STAMPS" >&3
end timings.txt

printf '\n@@END-OF-CAPTURES\n' >&3
echo "@@READY"

# Idle without creating processes: nobody ever opens the FIFO for writing.
while :; do read -r _ </run/idle; done
