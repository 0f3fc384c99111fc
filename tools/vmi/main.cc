// vmi: the command-line tool. One template instantiation per driver is
// chosen at the top (--target); every subcommand is written once against the
// capability concepts (commands.h, watch.h, dump_cmd.h, demo.h).
//
//   vmi [--target sim|sim:<program>|dump:<file>|xen:<domid|name>] [--json] <subcommand> ...

#include <csignal>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "drivers/dump/dump_driver.h"
#include "tools/vmi/commands.h"
#include "tools/vmi/demo.h"
#include "tools/vmi/dump_cmd.h"
#include "tools/vmi/linux_cmd.h"
#include "tools/vmi/targets.h"
#include "tools/vmi/watch.h"

namespace vmi::cli {
namespace {

std::atomic<bool> g_interrupted{false};

void OnSignal(int) { g_interrupted.store(true); }

struct Args {
  std::string target = "sim";
  bool json = false;
  uint16_t vcpu = 0;
  std::string root;
  std::string address;
  std::string length;
  bool phys = false;
  std::string as = "hex";
  std::string out;
  std::string format = "elf";
  std::vector<std::string> breaks, writes;
  bool cr3 = false, pending = false, int3 = false;
  uint64_t count = 0;
  std::string duration;
  std::string paging;
  std::vector<std::string> symbols;
  int pid = -1;
  bool threads = false, tree = false;
  std::string profile, export_isf;
  LinuxOptions linux_options;  // with the profile loaded
};

absl::StatusOr<AddressSpace> Space(const Args& a) {
  AddressSpace s;
  s.vcpu = a.vcpu;
  if (!a.root.empty()) {
    VMI_ASSIGN_OR_RETURN(uint64_t root, ParseNumber(a.root));
    s.root = root;
  }
  if (!a.paging.empty()) {
    VMI_ASSIGN_OR_RETURN(s.paging, ParsePagingMode(a.paging));
  }
  return s;
}

absl::StatusOr<ReadAs> ParseAs(const std::string& as) {
  if (as == "hex") return ReadAs::kHex;
  if (as == "u8") return ReadAs::kU8;
  if (as == "u16") return ReadAs::kU16;
  if (as == "u32") return ReadAs::kU32;
  if (as == "u64") return ReadAs::kU64;
  if (as == "string") return ReadAs::kString;
  if (as == "wstring") return ReadAs::kWString;
  return absl::InvalidArgumentError(absl::StrFormat(
      "--as %s: expected hex, u8, u16, u32, u64, string or wstring", as));
}

// Runs the chosen subcommand on an opened target.
template <VmiDriver D>
int Run(VmiCore<D>& core, const TargetInfo& target, const std::string& command, const Args& a,
        const Io& io) {
  const std::string& driver_name = target.name;
  if (command == "info") return CmdInfo(core, driver_name, io);
  if (command == "regs") return CmdRegs(core, a.vcpu, io);
  if (command == "idt") return CmdIdt(core, a.vcpu, io);
  if (command == "os") {
    return CmdOs(core, a.linux_options, a.export_isf.empty() ? a.export_isf : UserPath(a.export_isf), io);
  }
  if (command == "ps") return CmdPs(core, PsOptions{a.threads, a.tree}, a.linux_options, io);
  if (command == "sym") return CmdSym(core, a.symbols, a.linux_options, io);
  if (command == "maps") return CmdMaps(core, a.pid, a.linux_options, io);
  if (command == "modules") return CmdModules(core, a.linux_options, io);
  if (command == "translate" || command == "read") {
    absl::StatusOr<AddressSpace> space = Space(a);
    if (!space.ok()) return Fail(io, command, space.status(), kExitUsage);
    // A Linux kernel found in the target supplies symbols for addresses and,
    // without registers, the translation root.
    std::optional<os_linux::LinuxKernel> kernel;
    absl::StatusOr<uint64_t> address = ResolveAddress(core, a.address, a.linux_options, &kernel);
    if (!address.ok()) return Fail(io, command, address.status(), kExitUsage);
    if (a.pid >= 0) {
      if (a.phys || space->root) {
        return Fail(io, command, absl::InvalidArgumentError("--pid excludes --phys and --root"), kExitUsage);
      }
      if (absl::Status s = UseProcessRoot(core, a.pid, a.linux_options, &*space); !s.ok()) {
        return Fail(io, absl::StrFormat("%s --pid %d", command, a.pid), s);
      }
    } else if (!a.phys) {
      if (absl::Status s = UseKernelRootIfNeeded(core, &*space, a.linux_options, &kernel); !s.ok()) {
        return Fail(io, command, s);
      }
    }
    if (command == "translate") return CmdTranslate(core, *address, *space, io);
    absl::StatusOr<ReadAs> as = ParseAs(a.as);
    if (!as.ok()) return Fail(io, "read", as.status(), kExitUsage);
    uint64_t length = (*as == ReadAs::kHex) ? 256 : (*as == ReadAs::kString || *as == ReadAs::kWString) ? 4096 : 1;
    if (!a.length.empty()) {
      absl::StatusOr<uint64_t> l = ParseNumber(a.length);
      if (!l.ok()) return Fail(io, "read <len>", l.status(), kExitUsage);
      length = *l;
    }
    return CmdRead(core, *address, length, a.phys, *space, *as, io);
  }
  if (command == "dump") {
    absl::StatusOr<dump::DumpFormat> format = dump::ParseDumpFormat(a.format);
    if (!format.ok()) return Fail(io, "dump --format", format.status(), kExitUsage);
    return CmdDump(core, UserPath(a.out), *format, io);
  }
  if (command == "watch") {
    watch::Options w;
    for (const auto& b : a.breaks) {
      absl::StatusOr<uint64_t> v = ParseNumber(b);
      if (!v.ok()) return Fail(io, "watch --break", v.status(), kExitUsage);
      w.breakpoints.push_back(*v);
    }
    for (const auto& b : a.writes) {
      absl::StatusOr<uint64_t> v = ParseNumber(b);
      if (!v.ok()) return Fail(io, "watch --write", v.status(), kExitUsage);
      w.write_watches.push_back(*v);
    }
    w.cr3 = a.cr3;
    w.pending = a.pending;
    w.hidden = !a.int3;
    if (a.count) w.count = a.count;
    if (!a.duration.empty()) {
      absl::Duration d;
      if (!absl::ParseDuration(a.duration, &d)) {
        return Fail(io, "watch --for",
                    absl::InvalidArgumentError("expected a duration such as 5s or 250ms"), kExitUsage);
      }
      w.duration = d;
    }
    // --count alone switches off the default time limit: without an event
    // source nothing would ever end the watch (CmdWatch refuses that).
    if (!w.count && !w.duration) w.duration = absl::Seconds(10);
    w.interrupted = &g_interrupted;
    return CmdWatch(core, w, io);
  }
  if (command == "demo") return CmdDemo(core, target, io);
  return Fail(io, command, absl::InvalidArgumentError("unknown subcommand"), kExitUsage);
}

}  // namespace
}  // namespace vmi::cli

int main(int argc, char** argv) {
  using namespace vmi::cli;
  Args a;
  CLI::App app{"vmi: virtual machine introspection (simulated guest, memory dumps, Xen)"};
  app.fallthrough();
  app.require_subcommand(1, 1);
  app.add_option("-t,--target", a.target,
                 "sim (default) | sim:<program> | dump:<file> | xen:<domid|name> | qemu:<dir>");
  app.add_flag("--json", a.json, "machine-readable output (JSON; JSON lines for watch)");
  app.add_option("--profile", a.profile,
                 "a Volatility 3 ISF profile (.json or .json.xz) for a Linux kernel without BTF or kallsyms in memory");

  app.add_subcommand("info", "driver, vCPUs, max GFN, page size, paging mode per vCPU");
  auto* regs = app.add_subcommand("regs", "the register set with decoded flags");
  regs->add_option("--vcpu", a.vcpu, "vCPU number (default 0)");
  auto* translate = app.add_subcommand("translate", "walk the page tables for a virtual address");
  translate->add_option("va", a.address, "virtual address (hex 0x..., decimal, or a Linux symbol[+off])")->required();
  translate->add_option("--root", a.root, "translation root (CR3); default: the vCPU's");
  translate->add_option("--vcpu", a.vcpu, "vCPU whose CR3 and paging mode to use (default 0)");
  translate->add_option("--pid", a.pid, "translate in this Linux process's address space");
  translate->add_option("--paging", a.paging, "4|5|pae|32: the paging mode (default: the vCPU's, the Linux kernel's, or 4)");
  auto* read = app.add_subcommand("read", "read guest memory");
  read->add_option("addr", a.address, "address (virtual unless --phys; a Linux symbol[+off] too)")->required();
  read->add_option("len", a.length, "bytes (hex/string) or element count (u8..u64)");
  read->add_flag("--phys", a.phys, "the address is guest-physical");
  read->add_option("--as", a.as, "hex|u8|u16|u32|u64|string|wstring (default hex)");
  read->add_option("--root", a.root, "translation root (CR3); default: the vCPU's");
  read->add_option("--vcpu", a.vcpu, "vCPU whose address space to use (default 0)");
  read->add_option("--pid", a.pid, "read this Linux process's memory");
  read->add_option("--paging", a.paging, "4|5|pae|32: the paging mode (default: the vCPU's, the Linux kernel's, or 4)");
  auto* idt = app.add_subcommand("idt", "the interrupt descriptor table");
  idt->add_option("--vcpu", a.vcpu, "vCPU number (default 0)");
  auto* dump = app.add_subcommand("dump", "physical memory to a file (atomic)");
  dump->add_option("out", a.out, "output file")->required();
  dump->add_option("--format", a.format, "raw|lime|elf|xen (default elf)");
  auto* watch = app.add_subcommand("watch", "breakpoints, write watches and CR3 writes, one line per event");
  watch->add_option("--break", a.breaks,
                    "breakpoint at a virtual address (repeatable); hidden from the guest in a shadow page");
  watch->add_flag("--pending", a.pending,
                  "accept --break addresses that are not mapped yet: armed when the guest maps them");
  watch->add_flag("--int3", a.int3, "write the INT3 into guest memory instead of hiding it");
  watch->add_option("--write", a.writes, "watch writes to the page of a virtual address (repeatable)");
  watch->add_flag("--cr3", a.cr3, "report CR3 writes");
  watch->add_option("--count", a.count, "stop after N events");
  watch->add_option("--for", a.duration, "stop after a duration, e.g. 5s (default 10s)");
  app.add_subcommand("demo", "the guided tour on the embedded simulated guest");
  auto* os = app.add_subcommand("os", "the Linux kernel in the target: release, KASLR, page-table root, symbols, types");
  os->add_option("--export-isf", a.export_isf, "also write its symbols and types as an ISF profile (JSON)");
  auto* ps = app.add_subcommand("ps", "Linux processes: pid, ppid, ids, state, start, task_struct, page-table root");
  ps->add_flag("--threads", a.threads, "every thread (TID column)");
  ps->add_flag("--tree", a.tree, "children under their parents");
  auto* maps = app.add_subcommand("maps", "a Linux process's memory maps, as its /proc/PID/maps");
  maps->add_option("pid", a.pid, "process id")->required();
  app.add_subcommand("modules", "loaded Linux kernel modules: size, users, state, base");
  auto* sym = app.add_subcommand("sym", "Linux kernel symbols: name -> address, address -> name+off");
  sym->add_option("query", a.symbols, "symbol names or addresses")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  const std::string command = app.get_subcommands().front()->get_name();
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  Io io{std::cout, std::cerr, a.json};
  if (!a.profile.empty()) {
    absl::StatusOr<vmi::os_linux::IsfProfile> profile = vmi::os_linux::IsfProfile::Load(UserPath(a.profile));
    if (!profile.ok()) return Fail(io, "--profile", profile.status(), kExitUsage);
    a.linux_options.profile = std::make_shared<const vmi::os_linux::IsfProfile>(*std::move(profile));
  }
  return WithTarget(a.target, io, [&](auto& core, const TargetInfo& target) {
    return Run(core, target, command, a, io);
  });
}
