#!/usr/bin/env bash
# Runs the vmi tool as a subprocess on the simulator and on a dump it wrote,
# checking text and --json output of each subcommand and the error paths.
set -uo pipefail

VMI="$(realpath "$1")"  # absolute: some checks run it from other directories
TMP="${TEST_TMPDIR:-$(mktemp -d)}"
failures=0
check() {  # check <description> <command...>: the command must succeed
  local what=$1; shift
  if ! "$@" >/dev/null 2>&1; then echo "FAIL: $what"; failures=$((failures + 1)); else echo "ok: $what"; fi
}
json() {  # json <python expression over d> < file
  python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if ($1) else 1)"
}

# demo: the README's main job.
"$VMI" demo >"$TMP/demo.txt" 2>"$TMP/demo.err"
check "demo exits 0" test $? -eq 0
check "demo shows info" grep -q "driver     sim (demo guest)" "$TMP/demo.txt"
check "demo translates a user address" grep -q "=> pa 0x[0-9a-f]* (4K page, rw user nx)" "$TMP/demo.txt"
check "demo reads the user string" grep -q "hello from user space A" "$TMP/demo.txt"
check "demo traces breakpoints" grep -q "breakpoint rip=0xffffffff8000002c" "$TMP/demo.txt"
check "demo traces CR3 writes" grep -q "cr-write   rip=.* CR3 0x10000 -> 0x11000" "$TMP/demo.txt"
check "demo summary" grep -q "^events             30 (14 breakpoint hits, 13 watched writes, 3 CR3 writes)" "$TMP/demo.txt"
"$VMI" --json demo >"$TMP/demo.json"
check "demo --json" json 'd["summary"]["events"] == 30 and d["summary"]["guest_counter"] == 13 and d["read_user"]["string"] == "hello from user space A"' <"$TMP/demo.json"

# info / regs / translate / read / idt, text and JSON.
"$VMI" --json info >"$TMP/info.json"
check "info --json" json 'd["vcpus"] == 1 and d["paging"][0]["mode"] == "4-level+nx"' <"$TMP/info.json"
"$VMI" regs --vcpu 0 >"$TMP/regs.txt"
check "regs decodes CR0" grep -q "cr0=0000000080010033 \[PE|MP|ET|NE|WP|PG\]" "$TMP/regs.txt"
"$VMI" regs --json >"$TMP/regs.json"
check "regs --json" json 'd["rip"] == "0xffffffff80000000" and "LMA" in d["flags"]["efer"]' <"$TMP/regs.json"
"$VMI" translate 0xffffffff80000000 --json >"$TMP/tr.json"
check "translate --json" json 'len(d["levels"]) == 4 and d["page_size"] == 4096 and d["permissions"]["execute"]' <"$TMP/tr.json"
"$VMI" read 0x400000 --as string --json >"$TMP/rd.json"
check "read --as string" json 'd["string"] == "hello from user space A"' <"$TMP/rd.json"
"$VMI" read 0x400000 16 >"$TMP/rd.txt"
check "read hexdump" grep -q "^0000000000400000: 6865 6c6c 6f20 6672 6f6d 2075 7365 7220  hello from user " "$TMP/rd.txt"
"$VMI" read 0x400000 2 --as u32 --json >"$TMP/u32.json"
check "read --as u32" json 'd["values"] == ["0x6c6c6568", "0x7266206f"]' <"$TMP/u32.json"
"$VMI" -t sim:user_mode idt --json >"$TMP/idt.json"
check "idt --json" json 'any(e["vector"] == 3 and e["present"] for e in d["entries"])' <"$TMP/idt.json"

# watch: JSON lines.
"$VMI" --json watch --break 0xffffffff8000002c --cr3 --count 9 >"$TMP/watch.jsonl"
check "watch --json lines" python3 -c '
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 9, len(lines)
assert sum(l["reason"] == "breakpoint" for l in lines) == 8
assert sum(l["reason"] == "cr-write" for l in lines) == 1
' "$TMP/watch.jsonl"

# watch: breakpoints are hidden in a shadow page by default (the line names
# the guest frame the INT3 came from); --int3 writes it into guest memory.
"$VMI" watch --break 0xffffffff8000002c --count 2 >"$TMP/watch_hidden.txt"
check "watch: hidden breakpoints hit" test "$(grep -c 'breakpoint rip=0xffffffff8000002c address=0xffffffff8000002c pa=0x' "$TMP/watch_hidden.txt")" -eq 2
"$VMI" watch --int3 --break 0xffffffff8000002c --count 2 >"$TMP/watch_int3.txt"
check "watch --int3: INT3 in guest memory" bash -c "test \$(grep -c 'breakpoint rip=0xffffffff8000002c' '$TMP/watch_int3.txt') -eq 2 && ! grep -q pa= '$TMP/watch_int3.txt'"
# dump from the simulator, then read it back as a dump target.
check "dump elf" "$VMI" dump "$TMP/g.elf" --format elf
check "dump is atomic (no .partial left)" test ! -e "$TMP/g.elf.partial"
"$VMI" -t "dump:$TMP/g.elf" regs --json >"$TMP/dregs.json"
check "dump regs match" json 'd["rip"] == "0xffffffff80000000" and d["cr3"] == "0x10000"' <"$TMP/dregs.json"
"$VMI" -t "dump:$TMP/g.elf" read 0x400000 --as string >"$TMP/dstr.txt"
check "dump read through the page tables" grep -q "hello from user space A" "$TMP/dstr.txt"
check "dump lime" "$VMI" dump "$TMP/g.lime" --format lime
"$VMI" -t "dump:$TMP/g.lime" --json info >"$TMP/lime.json"
check "lime info" json 'd["driver"] == "dump (lime)"' <"$TMP/lime.json"

# Errors: one line on stderr, distinct exit codes, no crash.
expect_rc() {  # expect_rc <description> <rc> <command...>
  local what=$1 want=$2; shift 2
  "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$?
  if [ "$rc" -ne "$want" ] || [ "$(wc -l <"$TMP/err")" -gt 2 ] || ! grep -q "vmi\|required\|Run with" "$TMP/err"; then
    echo "FAIL: $what (rc=$rc, want $want): $(cat "$TMP/err")"; failures=$((failures + 1))
  else
    echo "ok: $what: $(head -1 "$TMP/err")"
  fi
}
expect_rc "unmapped address" 1 "$VMI" read 0x12345000
expect_rc "not a number" 2 "$VMI" read 0xzz
expect_rc "unknown target" 2 "$VMI" -t floppy info
expect_rc "unknown program" 3 "$VMI" -t sim:nope info
expect_rc "unreadable dump" 3 "$VMI" -t "dump:$TMP/missing.elf" info
head -c 100 /dev/zero >"$TMP/tiny.bin"
expect_rc "dump with no whole page" 3 "$VMI" -t "dump:$TMP/tiny.bin" info
expect_rc "no Xen here" 3 "$VMI" -t xen:1 info
expect_rc "raw dump has no registers" 1 "$VMI" -t "dump:$TMP/g.lime" regs
check "  ... in the CLI's words" bash -c "grep -q 'records no registers for vcpu 0' '$TMP/err' && ! grep -q OpenOptions '$TMP/err'"
expect_rc "missing argument" 2 "$VMI" read
expect_rc "demo needs the simulator" 4 "$VMI" -t "dump:$TMP/g.elf" demo
expect_rc "watch needs a full driver" 4 "$VMI" -t "dump:$TMP/g.elf" watch --cr3 --count 1
# --count switches off the default time limit: with nothing to watch the
# watch could never end, so it is refused as a usage error (timeout: a hang
# fails the test instead of the whole suite).
expect_rc "watch with nothing to watch" 2 timeout 20 "$VMI" -t sim:loop_call watch --count 5
check "  ... names the options" grep -q -- "--break VA, --write VA or --cr3" "$TMP/err"
expect_rc "watch with nothing to watch, no count" 2 timeout 20 "$VMI" watch
# An address that is not mapped: refused, unless --pending arms it later.
expect_rc "watch --break on an unmapped address" 1 "$VMI" watch --break 0x7000000000 --count 1
check "  ... suggests --pending" grep -q -- "does not translate under CR3 .* --pending arms it" "$TMP/err"
check "  ... says it once" bash -c "! grep -q 'watch: watch:' '$TMP/err'"
expect_rc "watch --pending with --int3" 1 "$VMI" watch --int3 --pending --break 0x7000000000 --count 1
check "  ... says why" grep -q -- "drop --int3" "$TMP/err"
check "watch --pending accepts it" bash -c "timeout 20 '$VMI' watch --break 0x7000000000 --pending --for 1s 2>&1 | grep -q '0 events'"
# A dump without registers: translate names the CLI's own option.
expect_rc "translate without registers or --root" 1 "$VMI" -t "dump:$TMP/g.lime" translate 0xffffffff80000000
check "  ... names --root" grep -q -- "--root" "$TMP/err"
check "  ... no API language" bash -c "! grep -q OpenOptions '$TMP/err'"
"$VMI" -t "dump:$TMP/g.lime" translate 0xffffffff80000000 --root 0x10000 >"$TMP/lime_tr.txt"
check "translate with --root on the raw dump" grep -q "=> pa 0x" "$TMP/lime_tr.txt"

# Under `bazel run` the tool runs in its runfiles tree: paths on the command
# line are the user's, relative to BUILD_WORKING_DIRECTORY.
mkdir -p "$TMP/user dir" "$TMP/elsewhere"
cp "$TMP/g.elf" "$TMP/user dir/guest.elf"
(cd "$TMP/elsewhere" && BUILD_WORKING_DIRECTORY="$TMP/user dir" "$VMI" -t dump:guest.elf --json info) \
  >"$TMP/bwd_info.json"
check "dump:<relative path> under bazel run" json 'd["driver"] == "dump (elf)"' <"$TMP/bwd_info.json"
(cd "$TMP/elsewhere" && BUILD_WORKING_DIRECTORY="$TMP/user dir" "$VMI" dump out.elf) >/dev/null 2>&1
check "dump <relative out> lands in the user's directory" test -s "$TMP/user dir/out.elf"
check "  ... and not in the working directory" test ! -e "$TMP/elsewhere/out.elf"
(cd "$TMP/elsewhere" && "$VMI" -t dump:../g.elf --json info) >"$TMP/plain_info.json"
check "relative paths without bazel run stay relative to the cwd" json 'd["driver"] == "dump (elf)"' \
  <"$TMP/plain_info.json"

echo "$failures failure(s)"
exit $((failures > 0))
