#!/usr/bin/env bash
# vmi on a live Linux guest under QEMU (tools/qemu/start_guest.sh; needs the
# fixtures tools/setup.sh builds: fails, never skips, without them).
set -uo pipefail

VMI="$1"
START="$2"
DIR=$(mktemp -d /tmp/vmi-cli-live.XXXXXX)
trap '"$START" --stop "$DIR"; rm -rf "$DIR"' EXIT
if ! "$START" --dir "$DIR" >"$DIR/start.log" 2>&1; then
  cat "$DIR/start.log"
  echo "FAIL: the live guest did not start"
  exit 1
fi
failures=0
check() {
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then echo "ok: $what"; else echo "FAIL: $what"; failures=$((failures + 1)); return 1; fi
}
loop_pid=$(tr ' ' '\n' <"$DIR/live.txt" | awk -F: '$1 == "syscall-loop" {print $2}')

"$VMI" -t "qemu:$DIR" --json info >"$DIR/info.json"
check "info: 2 vCPUs, 4-level paging" python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
assert d['vcpus'] == 2 and all(p['mode'] == '4-level+nx' for p in d['paging']), d
" "$DIR/info.json"
"$VMI" -t "qemu:$DIR" --json ps >"$DIR/ps.json"
check "ps lists the live guest's processes" python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
assert d['complete']
p = {x['pid']: x for x in d['processes']}
assert p[$loop_pid]['comm'] == 'syscall-loop', p.get($loop_pid)
assert p[1]['comm'] == 'init'
" "$DIR/ps.json"
"$VMI" -t "qemu:$DIR" --json regs --vcpu 1 >"$DIR/regs.json"
check "regs of vCPU 1 with descriptor tables" python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
assert int(d['gdtr']['base'], 16) != 0 and 'LMA' in d['flags']['efer'], d
" "$DIR/regs.json"
"$VMI" -t "qemu:$DIR" read linux_banner --as string >"$DIR/banner.txt"
check "read a kernel symbol" grep -q "^Linux version 6.1" "$DIR/banner.txt"
"$VMI" -t "qemu:$DIR" maps "$loop_pid" >"$DIR/maps.txt" 2>&1
check "maps of syscall-loop" grep -q "/bin/syscall-loop" "$DIR/maps.txt" || cat "$DIR/maps.txt"
"$VMI" -t "qemu:$DIR/nope" info 2>"$DIR/err.txt"
check "a missing target exits 3" test $? -eq 3
check "... naming the QEMU option" grep -q -- "-qmp unix:$DIR/nope/qmp.sock" "$DIR/err.txt"
# The guest still runs after all that.
"$VMI" -t "qemu:$DIR" --json ps >"$DIR/ps2.json"
check "the guest is still healthy" python3 -c "
import json, sys
assert json.load(open(sys.argv[1]))['complete']
" "$DIR/ps2.json"

echo "$failures failure(s)"
[ "$failures" -eq 0 ]
