#!/usr/bin/env bash
# The Linux subcommands on the real guest fixtures (tools/linux_fixture): fails,
# never skips, when tools/setup.sh has not built them.
set -uo pipefail

VMI="$1"
DIR="${VMI_FIXTURE_DIR:-/var/cache/vmi/linux-fixtures}/current"
TMP="${TEST_TMPDIR:-$(mktemp -d)}"
if [ ! -e "$DIR/COMPLETE" ]; then
  echo "FAIL: Linux guest fixtures missing under $DIR: run tools/setup.sh"
  exit 1
fi
failures=0
check() {
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then echo "ok: $what"; else echo "FAIL: $what"; failures=$((failures + 1)); fi
}
meta() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$DIR/$1/meta.json" "$2"; }

for variant in l4 l5; do
  levels=$(meta "$variant" paging_levels)
  slide=$(meta "$variant" kaslr_slide)
  release=$(meta "$variant" uname_r)
  raw="dump:$DIR/$variant/mem.raw"
  elf="dump:$DIR/$variant/mem.elf"

  "$VMI" -t "$raw" os >"$TMP/os.txt" 2>&1
  check "$variant raw: os succeeds" test $? -eq 0
  check "$variant raw: os shows ${levels}-level paging" grep -q "^paging       ${levels}-level" "$TMP/os.txt"
  check "$variant raw: os shows the KASLR slide $slide" grep -q "^kaslr slide  $slide$" "$TMP/os.txt"
  check "$variant raw: os shows the release" grep -q "^release      $release$" "$TMP/os.txt"
  check "$variant raw: found by a scan" grep -q "scan of physical memory" "$TMP/os.txt"
  "$VMI" -t "$elf" --json os >"$TMP/os.json"
  check "$variant elf: os --json from the ELF note" python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
assert d['paging_levels'] == $levels and d['kaslr_slide'] == '$slide', d
assert 'ELF note' in d['sources']['layout'], d
assert d['symbols'] > 90000 and d['types'] > 50000, d
" "$TMP/os.json"

  # translate of a kernel symbol on a raw dump: no --root needed.
  "$VMI" -t "$raw" --json translate init_task >"$TMP/tr.json"
  check "$variant raw: translate init_task without --root" python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
# The image is mapped with 2 MiB pages: one level short of a 4K walk.
assert len(d['levels']) == $levels - 1 and d['page_size'] == 2 << 20, d
assert d['levels'][0]['table'] == ('PML5' if $levels == 5 else 'PML4') and 'pa' in d, d
" "$TMP/tr.json"
  "$VMI" -t "$raw" read init_task+0x10 16 >/dev/null
  check "$variant raw: read symbol+offset" test $? -eq 0
  "$VMI" -t "$raw" read linux_banner --as string >"$TMP/banner.txt"
  # `read --as string` ends its output with a newline of its own.
  check "$variant raw: read linux_banner as a string" python3 -c "
import sys
assert open(sys.argv[1]).read() == open(sys.argv[2]).read() + '\n'
" "$TMP/banner.txt" "$DIR/$variant/guest/version.txt"

  # sym, both directions, against the guest's own /proc/kallsyms.
  want=$(awk '$3 == "init_task" && NF == 3 {print $1; exit}' "$DIR/$variant/guest/kallsyms.txt")
  "$VMI" -t "$raw" sym init_task >"$TMP/sym.txt"
  check "$variant raw: sym init_task = /proc/kallsyms" grep -q "^0x${want#"${want%%[!0]*}"} D init_task$" "$TMP/sym.txt"
  "$VMI" -t "$raw" --json sym "0x$want" init_task+0x20 >"$TMP/sym.json"
  check "$variant raw: sym address -> name" python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
assert d[0]['symbol'] == 'init_task' and d[1]['address'] == hex(int('$want', 16) + 0x20), d
" "$TMP/sym.json"

  # ps: every pid the guest's own ps printed (but ps itself), with its parent.
  "$VMI" -t "$raw" --json ps >"$TMP/ps.json"
  check "$variant raw: ps lists the guest's processes" python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
assert d['complete'], d.get('error')
ours = {p['pid']: p for p in d['processes']}
for line in open(sys.argv[2]).read().splitlines()[1:]:
    pid, ppid, comm = line.split()[:3]
    if comm == 'ps':
        continue
    assert int(pid) in ours and ours[int(pid)]['ppid'] == int(ppid), line
assert len(ours) == len(open(sys.argv[2]).read().splitlines()) - 2
assert [c['comm'] for c in d['current']] and all('task' in c for c in d['current'])
" "$TMP/ps.json" "$DIR/$variant/guest/ps.txt"
  fx=$(awk '$1 == "fixture-threads" {print $2}' "$DIR/$variant/guest/known.txt")
  "$VMI" -t "$elf" ps --threads >"$TMP/threads.txt"
  check "$variant elf: ps --threads shows the 4 threads of fixture-threads" test "$(awk -v p="$fx" '$1 == p' "$TMP/threads.txt" | wc -l)" -eq 4
  "$VMI" -t "$raw" ps --tree >"$TMP/tree.txt"
  check "$variant raw: ps --tree nests the shell's child" grep -q '^ *[0-9]* *[0-9]* .*    \\_ sleep' "$TMP/tree.txt"
  arg=$(python3 -c "import json,sys; print([p for p in json.load(open(sys.argv[1]))['processes'] if p['pid'] == $fx][0]['arg_start'])" "$TMP/ps.json")
  "$VMI" -t "$raw" read --pid "$fx" "$arg" --as string >"$TMP/arg.txt"
  check "$variant raw: read --pid of arg_start is argv[0]" grep -qx "fixture-threads" "$TMP/arg.txt"
  check "$variant raw: ps --json has the full command line" python3 -c "
import json, sys
p = [p for p in json.load(open(sys.argv[1]))['processes'] if p['pid'] == $fx][0]
assert p['cmdline'] == open(sys.argv[2]).read().strip(), p
" "$TMP/ps.json" "$DIR/$variant/guest/cmdline_fixture-threads.txt"
  "$VMI" -t "$raw" --json translate --pid "$fx" 0x400000 >"$TMP/trp.json"
  check "$variant raw: translate --pid walks the process's tables" python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
assert 'pa' in d and d['permissions']['user'], d
" "$TMP/trp.json"

  # maps: each known process's /proc/PID/maps, line for line; modules: /proc/modules.
  while read -r name pid; do
    "$VMI" -t "$raw" maps "$pid" >"$TMP/maps.txt"
    check "$variant raw: maps $pid ($name) = its /proc/PID/maps" cmp -s "$TMP/maps.txt" "$DIR/$variant/guest/maps_$name.txt"
  done <"$DIR/$variant/guest/known.txt"
  "$VMI" -t "$elf" --json modules >"$TMP/modules.json"
  check "$variant elf: modules = /proc/modules" python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
assert d['complete']
assert [m['proc_modules'] for m in d['modules']] == open(sys.argv[2]).read().splitlines(), d
" "$TMP/modules.json" "$DIR/$variant/guest/modules.txt"
  "$VMI" -t "$raw" modules >"$TMP/lsmod.txt"
  check "$variant raw: modules in lsmod's columns" grep -q "^fat  *[0-9]*  1 vfat  *Live  *0xffffffffc0" "$TMP/lsmod.txt"
done

"$VMI" -t "dump:$DIR/l4/mem.raw" maps 2 2>"$TMP/err.txt"
check "maps of a kernel thread exits 1" test $? -eq 1
check "... and says it has no maps" grep -q "kernel thread: it has no memory maps" "$TMP/err.txt"

# ISF profiles: export from one fixture, use (xz-compressed) on the other.
"$VMI" -t "dump:$DIR/l4/mem.raw" os --export-isf "$TMP/l4.json" >/dev/null
check "os --export-isf writes a profile" test -s "$TMP/l4.json"
check "... with no .partial left" test ! -e "$TMP/l4.json.partial"
xz -1 -c "$TMP/l4.json" >"$TMP/l4.json.xz"
"$VMI" -t "dump:$DIR/l5/mem.raw" --profile "$TMP/l4.json.xz" --json os >"$TMP/prof.json"
check "--profile (xz) supplies symbols and types" python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
assert 'ISF profile' in d['sources']['symbols'] and 'ISF profile' in d['sources']['types'], d
assert d['kaslr_slide'] == sys.argv[2], d
" "$TMP/prof.json" "$(meta l5 kaslr_slide)"
"$VMI" -t "dump:$DIR/l5/mem.raw" --profile "$TMP/l4.json" sym init_task >/dev/null
check "--profile symbols resolve" test $? -eq 0
python3 -c "
import base64, json, sys
d = json.load(open(sys.argv[1]))
d['symbols']['linux_banner']['constant_data'] = base64.b64encode(b'Linux version 5.10.0-evil (x@y) #1 SMP\n\0').decode()
json.dump(d, open(sys.argv[2], 'w'))
" "$TMP/l4.json" "$TMP/other.json"
"$VMI" -t "dump:$DIR/l5/mem.raw" --profile "$TMP/other.json" os 2>"$TMP/err.txt"
check "a profile of another kernel is refused" test $? -eq 1
check "... naming both banners" grep -q "is for another kernel: its banner is .*5.10.0-evil.*6.1.0" "$TMP/err.txt"
"$VMI" -t "dump:$DIR/l5/mem.raw" --profile "$TMP/missing.json" os 2>"$TMP/err.txt"
check "a missing profile exits 2" test $? -eq 2
check "... saying so" grep -q "No such file or directory" "$TMP/err.txt"

# Errors: --pid of a kernel thread or of no process.
"$VMI" -t "dump:$DIR/l4/mem.raw" translate --pid 2 0x400000 2>"$TMP/err.txt"
check "--pid of a kernel thread exits 1" test $? -eq 1
check "... and says why" grep -q "kernel thread: it has no user address space" "$TMP/err.txt"
"$VMI" -t "dump:$DIR/l4/mem.raw" read --pid 99999 0x400000 2>"$TMP/err.txt"
check "--pid of no process says so" grep -q "no process or thread with pid 99999" "$TMP/err.txt"

# Errors: an unknown symbol, a bad --paging, a dump that holds no Linux kernel.
"$VMI" -t "dump:$DIR/l4/mem.raw" sym no_such_symbol_xyz 2>"$TMP/err.txt"
check "unknown symbol exits 1" test $? -eq 1
check "unknown symbol is named" grep -q "no_such_symbol_xyz: not among the kernel's" "$TMP/err.txt"
"$VMI" -t "dump:$DIR/l4/mem.raw" translate 0x1000 --paging 6 2>/dev/null
check "bad --paging exits 2" test $? -eq 2
head -c 1048576 /dev/zero >"$TMP/zero.raw"
"$VMI" -t "dump:$TMP/zero.raw" translate 0xffffffff81000000 2>"$TMP/err.txt"
check "no root on a non-Linux raw dump exits 1" test $? -eq 1
check "... and says to pass --root" grep -q "pass --root <cr3>" "$TMP/err.txt"
"$VMI" -t "dump:$TMP/zero.raw" os 2>"$TMP/err.txt"
check "os on a non-Linux dump fails clearly" grep -q "no valid VMCOREINFO" "$TMP/err.txt"
"$VMI" -t "dump:$TMP/zero.raw" translate 0x1000 --root 0x0 --paging 5 >/dev/null 2>&1
check "--root with --paging on a non-Linux raw dump walks (and faults) without discovery" test $? -eq 1

echo "$failures failure(s)"
[ "$failures" -eq 0 ]
