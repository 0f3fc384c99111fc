#!/usr/bin/env python3
"""Host side of the Linux guest fixtures (python3 standard library only).

Subcommands (build.sh drives them; see README.md):
  initramfs      build the gzip'd newc initramfs: busybox-static, the kernel
                 modules init.sh loads (with their dependencies), the static
                 helper, a data file, and init.sh as /init.
  run            boot one variant (l4 or l5) under QEMU/TCG, wait for @@READY,
                 split the ttyS1 capture stream into <out>/guest/, then over QMP:
                 stop, pmemsave (mem.raw), dump-guest-memory (mem.elf), quit;
                 check the results and write <out>/meta.json.
  qemu-command   print a QEMU command line to boot a built fixture by hand.
"""

import argparse
import ctypes
import gzip
import hashlib
import json
import os
import re
import shlex
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time

QEMU = "qemu-system-x86_64"
# Paging variants: 4-level needs LA57 masked off; TCG's `max` CPU has LA57.
VARIANTS = {
    "l4": {"cpu": "max,-la57", "paging_levels": 4},
    "l5": {"cpu": "max", "paging_levels": 5},
}
DEFAULT_RAM_MIB = 512
DEFAULT_SMP = 2
APPEND = "console=ttyS0 panic=-1 quiet"
# Where the kernel's _text lands without KASLR (x86-64, CONFIG_PHYSICAL_START
# 16 MiB, __START_KERNEL_map 0xffffffff80000000).
TEXT_UNSLID = 0xFFFFFFFF81000000
# A file the helper maps read-only: deterministic, distinctive content.
DATA_FILE_SIZE = 64 * 1024
DATA_FILE_MAGIC = b"VMI-FIXTURE-FILE"
CONSOLE_TAIL_LINES = 40
# Captures init.sh must produce (beyond the per-process ones).
REQUIRED_CAPTURES = [
    "uname.txt", "version.txt", "cmdline.txt", "cpuinfo.txt", "iomem.txt",
    "modules.txt", "kallsyms.txt", "helper.txt", "known.txt", "ps.txt",
    "status.txt", "threads.txt",
]
KNOWN_NAMES = ["fixture-threads", "sleep", "shell", "shell-child"]


class FixtureError(Exception):
    pass


def log(msg):
    print(f"fixture: {msg}", file=sys.stderr, flush=True)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- ELF ---------------------------------------------------------------------

def _elf64_header(data):
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise FixtureError("not a little-endian ELF64 file")
    (e_phoff, e_shoff) = struct.unpack_from("<QQ", data, 0x20)
    (e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx) = struct.unpack_from(
        "<HHHHH", data, 0x36)
    return e_phoff, e_phentsize, e_phnum, e_shoff, e_shentsize, e_shnum, e_shstrndx


def elf_section(path, wanted):
    """Returns the bytes of section `wanted` of an ELF64 file, or None."""
    with open(path, "rb") as f:
        data = f.read()
    _, _, _, shoff, shentsize, shnum, shstrndx = _elf64_header(data)

    def shdr(i):
        # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size
        return struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)

    strtab_off, strtab_size = shdr(shstrndx)[4:6]
    strtab = data[strtab_off:strtab_off + strtab_size]
    for i in range(shnum):
        name_off, _, _, _, off, size = shdr(i)
        name = strtab[name_off:strtab.index(b"\0", name_off)].decode()
        if name == wanted:
            return data[off:off + size]
    return None


def elf_has_interp(path):
    with open(path, "rb") as f:
        data = f.read(64 * 1024)
    phoff, phentsize, phnum = _elf64_header(data)[:3]
    for i in range(phnum):
        (p_type,) = struct.unpack_from("<I", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            return True
    return False


def elf_core_notes(path):
    """Yields (name, type, desc) for every note in the PT_NOTE segments."""
    with open(path, "rb") as f:
        head = f.read(64)
        phoff, phentsize, phnum = _elf64_header(head)[:3]
        f.seek(phoff)
        phdrs = f.read(phentsize * phnum)
        for i in range(phnum):
            p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(
                "<IIQQQQ", phdrs, i * phentsize)
            if p_type != 4:  # PT_NOTE
                continue
            f.seek(p_offset)
            notes = f.read(p_filesz)
            pos = 0
            while pos + 12 <= len(notes):
                namesz, descsz, ntype = struct.unpack_from("<III", notes, pos)
                pos += 12
                name = notes[pos:pos + namesz].rstrip(b"\0").decode(errors="replace")
                pos += (namesz + 3) & ~3
                desc = notes[pos:pos + descsz]
                pos += (descsz + 3) & ~3
                yield name, ntype, desc


# --- initramfs -----------------------------------------------------------------

class Cpio:
    """A newc ("070701") cpio archive, as the kernel's initramfs unpacker reads it."""

    def __init__(self):
        self._out = bytearray()
        self._ino = 1
        self._names = set()

    def _add(self, name, mode, data=b"", rdev=(0, 0)):
        if name in self._names:
            raise FixtureError(f"initramfs: duplicate entry {name}")
        self._names.add(name)
        encoded = name.encode() + b"\0"
        fields = [self._ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data),
                  0, 0, rdev[0], rdev[1], len(encoded), 0]
        self._ino += 1
        self._out += b"070701" + b"".join(b"%08X" % v for v in fields) + encoded
        self._pad()
        self._out += data
        self._pad()

    def _pad(self):
        self._out += b"\0" * (-len(self._out) % 4)

    def dir(self, name):
        self._add(name, stat.S_IFDIR | 0o755)

    def file(self, name, data, perm=0o644):
        self._add(name, stat.S_IFREG | perm, data)

    def symlink(self, name, target):
        self._add(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name, major, minor, perm=0o600):
        self._add(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def finish(self):
        self._add("TRAILER!!!", 0)
        return bytes(self._out)


def module_depends(path):
    info = elf_section(path, ".modinfo")
    if info is None:
        raise FixtureError(f"{path}: no .modinfo section")
    for entry in info.split(b"\0"):
        if entry.startswith(b"depends="):
            return [d for d in entry[len(b"depends="):].decode().split(",") if d]
    return []


def resolve_modules(modules_root, names):
    """Returns [(name, path)] for `names` and their dependencies, dependencies first."""
    index = {}
    for dirpath, _, files in os.walk(modules_root):
        for fname in files:
            if fname.endswith(".ko"):
                index.setdefault(fname[:-3].replace("-", "_"), os.path.join(dirpath, fname))
    ordered, visiting = [], set()

    def visit(name):
        key = name.replace("-", "_")
        if any(k == key for k, _ in ordered):
            return
        if key in visiting:
            raise FixtureError(f"module dependency cycle at {name}")
        if key not in index:
            raise FixtureError(f"module {name} not found under {modules_root}")
        visiting.add(key)
        for dep in module_depends(index[key]):
            visit(dep)
        visiting.discard(key)
        ordered.append((key, index[key]))

    for n in names:
        visit(n)
    return ordered


def data_file_bytes():
    out = bytearray()
    counter = 0
    while len(out) < DATA_FILE_SIZE:
        block = DATA_FILE_MAGIC + struct.pack("<Q", counter)
        out += block + hashlib.sha256(block).digest() * 7
        counter += 1
    return bytes(out[:DATA_FILE_SIZE])


def cmd_initramfs(args):
    if elf_has_interp(args.busybox):
        raise FixtureError(f"{args.busybox} is dynamically linked; install busybox-static")
    if elf_has_interp(args.helper):
        raise FixtureError(f"{args.helper} is dynamically linked; build it with -static")
    applets = subprocess.run([args.busybox, "--list"], check=True, capture_output=True,
                             text=True).stdout.split()
    if "sh" not in applets:
        raise FixtureError(f"{args.busybox} has no sh applet")
    modules = resolve_modules(args.modules_root, args.module)

    cpio = Cpio()
    for d in ["bin", "dev", "proc", "sys", "run", "tmp", "data", "lib", "lib/modules"]:
        cpio.dir(d)
    # The kernel opens /dev/console for init's stdio before init mounts devtmpfs.
    cpio.chardev("dev/console", 5, 1)
    with open(args.init, "rb") as f:
        cpio.file("init", f.read(), 0o755)
    with open(args.busybox, "rb") as f:
        cpio.file("bin/busybox", f.read(), 0o755)
    for applet in sorted(set(applets)):
        if "/" not in applet and applet != "busybox":
            cpio.symlink(f"bin/{applet}", "busybox")
    with open(args.helper, "rb") as f:
        helper = f.read()
    cpio.file("bin/fixture-threads", helper, 0o755)
    cpio.file("bin/syscall-loop", helper, 0o755)  # the same program under another name
    for name, path in modules:
        with open(path, "rb") as f:
            cpio.file(f"lib/modules/{name}.ko", f.read())
    cpio.file("lib/modules/load-order", "".join(f"{n}\n" for n, _ in modules).encode())
    cpio.file("data/fixture.bin", data_file_bytes())

    image = gzip.compress(cpio.finish(), compresslevel=6, mtime=0)
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(image)
    os.replace(tmp, args.out)
    log(f"initramfs {args.out}: {len(image)} bytes, modules {[n for n, _ in modules]}")


# --- QEMU ----------------------------------------------------------------------

def qemu_command(variant, kernel, initrd, serial0, serial1, ram_mib, smp, qmp=None,
                 extra_append="", name=None):
    cmd = [QEMU, "-accel", "tcg", "-cpu", VARIANTS[variant]["cpu"], "-smp", str(smp),
           "-m", f"{ram_mib}M", "-nodefaults", "-display", "none", "-vga", "none",
           "-no-reboot", "-kernel", kernel, "-initrd", initrd,
           "-append", (APPEND + " " + extra_append).strip(), "-device", "vmcoreinfo",
           "-serial", serial0, "-serial", serial1, "-monitor", "none"]
    if qmp:
        cmd += ["-qmp", f"unix:{qmp},server=on,wait=off"]
    if name:
        cmd += ["-name", name]
    return cmd


def _set_pdeathsig():
    # QEMU dies with us (SIGKILL included), so it can never outlive the build.
    PR_SET_PDEATHSIG = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # Its own process group: a ^C on the terminal reaches only us, and we stop it.
    os.setpgid(0, 0)


class Qmp:
    def __init__(self, path, proc, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise FixtureError(f"QEMU exited (status {proc.returncode}) before QMP was up")
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self._sock.close()
                if time.monotonic() > deadline:
                    raise FixtureError(f"QMP socket {path} never came up")
                time.sleep(0.05)
        self._file = self._sock.makefile("rwb")
        greeting = self._read()
        if "QMP" not in greeting:
            raise FixtureError(f"unexpected QMP greeting {greeting}")
        self.execute("qmp_capabilities")

    def _read(self):
        while True:
            line = self._file.readline()
            if not line:
                raise FixtureError("QMP connection closed")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def execute(self, command, timeout=120, **arguments):
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self._sock.settimeout(timeout)
        self._file.write(json.dumps(msg).encode() + b"\n")
        self._file.flush()
        reply = self._read()
        if "error" in reply:
            raise FixtureError(f"QMP {command} failed: {reply['error']}")
        return reply.get("return")

    def close(self):
        try:
            self._file.close()
            self._sock.close()
        except OSError:
            pass


def tail(path, lines):
    try:
        with open(path, "rb") as f:
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no console output)"
    return "\n".join(text.replace("\r", "").splitlines()[-lines:])


def split_captures(stream):
    """Splits the ttyS1 stream (see init.sh) into {name: bytes}."""
    out, pos = {}, 0
    while True:
        start = stream.find(b"\n@@BEGIN ", pos)
        if start < 0:
            break
        eol = stream.find(b"\n", start + 1)
        name = stream[start + len(b"\n@@BEGIN "):eol].decode(errors="replace")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise FixtureError(f"bad capture name {name!r} in the ttyS1 stream")
        if name in out:
            raise FixtureError(f"capture {name} appears twice")
        end_marker = b"\n@@END " + name.encode() + b"\n"
        end = stream.find(end_marker, eol + 1)
        if end < 0:
            raise FixtureError(f"capture {name} has no end marker (stream truncated?)")
        out[name] = stream[eol + 1:end]
        pos = end + len(end_marker) - 1
    return out


def parse_kallsyms(text):
    """Returns ({symbol: address} for core kernel symbols, line count, nonzero count)."""
    syms, lines, nonzero = {}, 0, 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        lines += 1
        addr = int(parts[0], 16)
        if addr:
            nonzero += 1
        if len(parts) == 3:
            syms.setdefault(parts[2], addr)
    return syms, lines, nonzero


def cmd_run(args):
    out = os.path.abspath(args.out)
    guest = os.path.join(out, "guest")
    os.makedirs(guest, exist_ok=True)
    console = os.path.join(out, "console.txt")
    stream_path = os.path.join(out, "ttyS1.raw")
    mem_raw = os.path.join(out, "mem.raw")
    mem_elf = os.path.join(out, "mem.elf")
    ram_bytes = args.ram_mib << 20
    if ram_bytes > 3 << 30:
        raise FixtureError("pmemsave's raw image is GPA = offset only below the PCI hole (< 3 GiB)")
    sockdir = tempfile.mkdtemp(prefix="vmi-fixture-")  # short path: sun_path is 108 bytes
    qmp_path = os.path.join(sockdir, "qmp.sock")
    # QEMU runs in the fixture directory (the variant dir's parent) with relative
    # paths, so the command line recorded in meta.json works from there.
    root = os.path.dirname(out)

    def rel(path):
        return os.path.relpath(os.path.abspath(path), root)

    cmd = qemu_command(args.variant, rel(args.kernel), rel(args.initrd), f"file:{rel(console)}",
                       f"file:{rel(stream_path)}", args.ram_mib, args.smp, qmp=qmp_path,
                       name=f"vmi-fixture-{args.variant}")
    pid_file = os.path.join(out, "qemu.pid")
    timings = {}
    proc = qmp = None
    t0 = time.monotonic()
    try:
        with open(os.path.join(out, "qemu.log"), "wb") as qlog:
            proc = subprocess.Popen(cmd, cwd=root, stdin=subprocess.DEVNULL, stdout=qlog,
                                    stderr=qlog, preexec_fn=_set_pdeathsig)
        with open(pid_file, "w") as f:
            f.write(f"{proc.pid}\n")
        log(f"{args.variant}: booting (pid {proc.pid}): {shlex.join(cmd)}")
        qmp = Qmp(qmp_path, proc, timeout=30)

        deadline = t0 + args.timeout
        seen = b""
        while True:
            if os.path.exists(console):
                with open(console, "rb") as f:
                    seen = f.read()
            if b"@@READY" in seen:
                qmp.execute("stop")
                break
            fail = re.search(rb"@@FAIL ([^\r\n]*)", seen)
            if fail:
                raise FixtureError(f"guest init failed: {fail.group(1).decode(errors='replace')}")
            if proc.poll() is not None:
                raise FixtureError(f"QEMU exited (status {proc.returncode}) before @@READY "
                                   f"(kernel panic or reboot?)")
            if time.monotonic() > deadline:
                raise FixtureError(f"no @@READY within {args.timeout} s")
            time.sleep(0.1)
        timings["boot_to_ready_s"] = round(time.monotonic() - t0, 1)
        log(f"{args.variant}: @@READY after {timings['boot_to_ready_s']} s; VM stopped")

        # init wrote the end marker before @@READY, but the UART may still have
        # been draining; the VM is stopped now, so the file is final.
        with open(stream_path, "rb") as f:
            stream = f.read()
        if b"\n@@END-OF-CAPTURES\n" not in stream:
            raise FixtureError("ttyS1 stream has no @@END-OF-CAPTURES marker (truncated)")
        captures = split_captures(stream)
        missing = [c for c in REQUIRED_CAPTURES if c not in captures]
        if missing:
            raise FixtureError(f"captures missing from the ttyS1 stream: {missing}")
        for name, data in captures.items():
            with open(os.path.join(guest, name), "wb") as f:
                f.write(data)

        t1 = time.monotonic()
        qmp.execute("pmemsave", val=0, size=ram_bytes, filename=mem_raw, timeout=300)
        timings["pmemsave_s"] = round(time.monotonic() - t1, 1)
        t1 = time.monotonic()
        qmp.execute("dump-guest-memory", paging=False, protocol=f"file:{mem_elf}", timeout=300)
        timings["dump_guest_memory_s"] = round(time.monotonic() - t1, 1)
        regs = qmp.execute("human-monitor-command", **{"command-line": "info registers -a"})
        with open(os.path.join(out, "registers.txt"), "w") as f:
            f.write(regs.replace("\r", ""))
        qemu_version = qmp.execute("query-version")
        try:
            qmp.execute("quit", timeout=30)
        except FixtureError:
            pass  # QEMU may close the socket before it answers
        proc.wait(timeout=30)
    except BaseException:
        print(f"fixture: {args.variant}: last {CONSOLE_TAIL_LINES} lines of the serial console "
              f"({console}):\n{tail(console, CONSOLE_TAIL_LINES)}", file=sys.stderr, flush=True)
        raise
    finally:
        if qmp:
            qmp.close()
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()
        if os.path.exists(pid_file):
            os.unlink(pid_file)
        if os.path.exists(qmp_path):
            os.unlink(qmp_path)
        os.rmdir(sockdir)

    os.unlink(stream_path)
    for p in (mem_raw, mem_elf):
        os.chmod(p, 0o644)
    write_meta(args, out, captures, cmd, timings, qemu_version, ram_bytes)


def check_processes(text, known, helper):
    """Checks the known processes against status.txt and threads.txt."""
    status = {}
    for block in text["status.txt"].split("==> /proc/")[1:]:
        header, _, body = block.partition("\n")
        fields = dict(ln.split(":\t", 1) for ln in body.splitlines() if ":\t" in ln)
        status[int(header.split("/")[0])] = fields
    threads = {}
    for ln in text["threads.txt"].splitlines():
        pid, _, tids = ln.partition(":")
        threads[int(pid)] = sorted(int(t) for t in tids.split())
    want = {"fixture-threads": ("fixture-threads", 1, 4), "sleep": ("sleep", 1, 1),
            "shell": ("sh", 1, 1), "shell-child": ("sleep", known["shell"], 1)}
    for name, (comm, ppid, ntasks) in want.items():
        pid = known[name]
        fields = status.get(pid)
        if fields is None:
            raise FixtureError(f"known process {name} (pid {pid}) is not in status.txt")
        got = (fields.get("Name"), int(fields.get("PPid", "-1")), len(threads.get(pid, [])))
        if got != (comm, ppid, ntasks):
            raise FixtureError(f"known process {name} (pid {pid}): name/ppid/tasks {got}, "
                               f"want {(comm, ppid, ntasks)}")
    helper_tids = sorted(int(t) for t in helper.get("tids", "").split())
    if helper_tids != threads[known["fixture-threads"]]:
        raise FixtureError(f"helper.txt tids {helper_tids} but threads.txt has "
                           f"{threads[known['fixture-threads']]}")


def write_meta(args, out, captures, cmd, timings, qemu_version, ram_bytes):
    variant = VARIANTS[args.variant]
    text = {k: v.decode(errors="replace") for k, v in captures.items()
            if not k.endswith(".raw")}

    syms, nlines, nonzero = parse_kallsyms(text["kallsyms.txt"])
    if nlines < 50000 or nonzero < nlines // 2:
        raise FixtureError(f"kallsyms.txt: {nlines} lines, {nonzero} with nonzero addresses "
                           "(kptr_restrict not 0?)")
    if "_text" not in syms or not syms["_text"]:
        raise FixtureError("kallsyms.txt has no _text address")
    slide = syms["_text"] - TEXT_UNSLID

    cpu_flags = [ln for ln in text["cpuinfo.txt"].splitlines() if ln.startswith("flags")]
    la57 = bool(cpu_flags) and all(" la57 " in f"{ln} " for ln in cpu_flags)

    size = os.path.getsize(os.path.join(out, "mem.raw"))
    if size != ram_bytes:
        raise FixtureError(f"mem.raw is {size} bytes, want {ram_bytes}")
    vmcoreinfo = None
    cpu_notes = 0
    for name, ntype, desc in elf_core_notes(os.path.join(out, "mem.elf")):
        if name == "VMCOREINFO":
            vmcoreinfo = desc.rstrip(b"\0").decode()
        elif name == "CORE" and ntype == 1:  # NT_PRSTATUS
            cpu_notes += 1
    if vmcoreinfo is None:
        raise FixtureError("mem.elf has no VMCOREINFO note (did qemu_fw_cfg load?)")
    with open(os.path.join(out, "vmcoreinfo_note.txt"), "w") as f:
        f.write(vmcoreinfo)
    info = dict(ln.split("=", 1) for ln in vmcoreinfo.splitlines() if "=" in ln)
    l5 = info.get("NUMBER(pgtable_l5_enabled)")
    paging_levels = 5 if l5 == "1" else 4
    if paging_levels != variant["paging_levels"]:
        raise FixtureError(f"{args.variant}: the guest runs {paging_levels}-level paging "
                           f"(pgtable_l5_enabled={l5}, la57 flag {la57})")
    if la57 != (paging_levels == 5):
        raise FixtureError(f"{args.variant}: cpuinfo la57 flag {la57} but {paging_levels}-level")
    if int(info.get("KERNELOFFSET", "-1"), 16) != slide:
        raise FixtureError(f"VMCOREINFO KERNELOFFSET={info.get('KERNELOFFSET')} but kallsyms "
                           f"gives slide {slide:#x}")
    if cpu_notes != args.smp:
        raise FixtureError(f"mem.elf has {cpu_notes} NT_PRSTATUS notes, want {args.smp}")

    uname = text["uname.txt"].strip()
    known = {}
    for ln in text["known.txt"].splitlines():
        name, pid = ln.split()
        known[name] = int(pid)
    if sorted(known) != sorted(KNOWN_NAMES):
        raise FixtureError(f"known.txt lists {sorted(known)}, want {sorted(KNOWN_NAMES)}")
    for name in KNOWN_NAMES:
        for prefix in ("maps_", "cmdline_"):
            if not captures.get(f"{prefix}{name}.txt"):
                raise FixtureError(f"capture {prefix}{name}.txt is missing or empty")
    helper = dict(ln.split(" ", 1) for ln in text["helper.txt"].splitlines() if " " in ln)
    check_processes(text, known, helper)
    kernel_code = re.search(r"^\s*([0-9a-f]+)-[0-9a-f]+ : Kernel code$", text["iomem.txt"],
                            re.M)

    meta = {
        "variant": args.variant,
        "kernel_package": args.kernel_package,
        "kernel_package_version": args.kernel_version,
        "uname_r": uname,
        "proc_version": text["version.txt"].strip(),
        "kernel_cmdline": text["cmdline.txt"].strip(),
        "kernel_sha256": sha256_file(args.kernel),
        "initramfs_sha256": sha256_file(args.initrd),
        "paging_levels": paging_levels,
        "la57": la57,
        "kaslr": "nokaslr" not in text["cmdline.txt"].split(),
        "kaslr_slide": f"{slide:#x}",
        "text_address": f"{syms['_text']:#x}",
        "kernel_code_phys": f"{int(kernel_code.group(1), 16):#x}" if kernel_code else None,
        # VMCOREINFO prints phys_base signed; as a u64 it is what the kernel adds.
        "phys_base": f"{int(info['NUMBER(phys_base)']) & (2**64 - 1):#x}",
        "ram_bytes": ram_bytes,
        "vcpus": args.smp,
        "qemu_version": qemu_version.get("qemu", {}),
        "qemu_package": qemu_version.get("package", "").strip(),
        "qemu_command": cmd,
        "qemu_command_line": shlex.join(cmd),
        "qemu_command_cwd": "the fixture directory (paths are relative to it; the QMP "
                            "socket was a temporary one)",
        "known_processes": known,
        "fixture_threads": {
            "tids": [int(t) for t in helper.get("tids", "").split()],
            "thread_names": ["fixture-threads", "fx-worker-1", "fx-worker-2", "fx-worker-3"],
            "argv": ["fixture-threads", "--vmi-fixture", "alpha", "beta"],
            "heap_addr": helper.get("heap_addr"),
            "heap_size": int(helper.get("heap_size", "0")),
            "heap_marker": helper.get("heap_marker"),
            "anon_addr": helper.get("anon_addr"),
            "anon_size": int(helper.get("anon_size", "0")),
            "anon_marker": helper.get("anon_marker"),
            "file_addr": helper.get("file_addr"),
            "file_size": int(helper.get("file_size", "0")),
            "file_path": helper.get("file_path"),
            "file_sha256": hashlib.sha256(data_file_bytes()).hexdigest(),
        },
        "kallsyms_lines": nlines,
        "timings": timings,
        "guest_uptime_s": {k: float(v) for k, v in
                           (ln.split() for ln in text.get("timings.txt", "").splitlines())},
        "files": {
            "mem.raw": "pmemsave 0..ram_bytes: byte N is guest-physical address N",
            "mem.elf": "dump-guest-memory paging=false: ELF core, PT_LOAD per RAM range, "
                       "NT_PRSTATUS + QEMU note per vCPU, VMCOREINFO note",
            "vmcoreinfo_note.txt": "the VMCOREINFO note text, extracted from mem.elf",
            "registers.txt": "QEMU 'info registers -a' right after stop",
            "console.txt": "serial console (ttyS0)",
            "guest/": "the guest's own view, split from the ttyS1 stream",
        },
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = os.path.join(out, "meta.json.tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    os.replace(tmp, os.path.join(out, "meta.json"))
    log(f"{args.variant}: ok: {uname}, {paging_levels}-level, slide {slide:#x}, "
        f"{nlines} kallsyms lines, timings {timings}")


def cmd_qemu_command(args):
    fixture = os.path.abspath(args.fixture)
    cmd = qemu_command(args.variant, os.path.join(fixture, "kernel", "vmlinuz"),
                       os.path.join(fixture, "initramfs.cpio.gz"), "mon:stdio",
                       f"file:{args.ttys1}", args.ram_mib, args.smp, qmp=args.qmp,
                       extra_append="" if args.captures else "vmi_fixture.shell=1")
    print(shlex.join(cmd))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("initramfs", help="build the initramfs")
    p.add_argument("--busybox", required=True, help="a static busybox binary")
    p.add_argument("--helper", required=True, help="the static fixture-threads binary")
    p.add_argument("--init", required=True, help="init.sh")
    p.add_argument("--modules-root", required=True, help="lib/modules/<version> of the kernel")
    p.add_argument("--module", action="append", default=[], help="a module to load (repeat)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_initramfs)

    p = sub.add_parser("run", help="boot one variant and capture it")
    p.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    p.add_argument("--kernel", required=True)
    p.add_argument("--initrd", required=True)
    p.add_argument("--out", required=True, help="the variant directory to fill")
    p.add_argument("--kernel-package", required=True)
    p.add_argument("--kernel-version", required=True)
    p.add_argument("--ram-mib", type=int, default=DEFAULT_RAM_MIB)
    p.add_argument("--smp", type=int, default=DEFAULT_SMP)
    p.add_argument("--timeout", type=int, default=300, help="seconds to wait for @@READY")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("qemu-command", help="print a command to boot a fixture by hand")
    p.add_argument("--fixture", required=True, help="a fixture dir, e.g. <cache>/current")
    p.add_argument("--variant", default="l4", choices=sorted(VARIANTS))
    p.add_argument("--ram-mib", type=int, default=DEFAULT_RAM_MIB)
    p.add_argument("--smp", type=int, default=DEFAULT_SMP)
    p.add_argument("--qmp", default="/tmp/vmi-fixture-qmp.sock", help="QMP socket path")
    p.add_argument("--ttys1", default="/tmp/vmi-fixture-ttyS1.txt",
                   help="where the guest's ttyS1 (capture stream) goes")
    p.add_argument("--captures", action="store_true",
                   help="run init's captures as in a build instead of giving a shell")
    p.set_defaults(func=cmd_qemu_command)

    args = parser.parse_args()
    # SIGTERM (e.g. from build.sh's trap) unwinds like ^C, so QEMU is killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        args.func(args)
    except FixtureError as e:
        print(f"fixture: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fixture: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        print(f"fixture: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
