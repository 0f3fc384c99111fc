// The Linux subcommands (`vmi os`, `vmi sym`) and the Linux fallbacks of the
// generic ones: a target without registers (a raw or LiME dump) translates
// through the discovered kernel's page-table root and paging mode, and an
// address may be given as a kernel symbol ("init_task", "do_sys_open+0x10").
//
// Thread-safety: single-threaded.

#ifndef VMI_TOOLS_VMI_LINUX_CMD_H_
#define VMI_TOOLS_VMI_LINUX_CMD_H_

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "core/vmi_core.h"
#include "nlohmann/json.hpp"
#include "os/linux/btf_types.h"
#include "os/linux/discovery.h"
#include "os/linux/isf.h"
#include "os/linux/linux_guest.h"
#include "os/linux/maps.h"
#include "os/linux/modules.h"
#include "os/linux/processes.h"
#include "tools/vmi/commands.h"
#include "tools/vmi/format.h"

namespace vmi::cli {

struct LinuxOptions {
  bool symbols = true;
  bool types = true;
  // --profile: an ISF profile, loaded once by main.
  std::shared_ptr<const os_linux::IsfProfile> profile;

  os_linux::DiscoveryOptions Discovery() const {
    os_linux::DiscoveryOptions d;
    d.load_symbols = symbols;
    d.load_types = types;
    d.profile = profile;
    return d;
  }
  LinuxOptions Only(bool with_symbols, bool with_types) const {
    LinuxOptions o = *this;
    o.symbols = with_symbols;
    o.types = with_types;
    return o;
  }
};

template <VmiRead D>
absl::StatusOr<os_linux::LinuxKernel> DiscoverKernel(VmiCore<D>& core, const LinuxOptions& options) {
  return os_linux::DiscoverLinux(core, options.Discovery());
}

// An address: a number, or (on a Linux target) a symbol with an optional
// "+offset". `kernel` is discovered on first need and kept.
template <VmiRead D>
absl::StatusOr<uint64_t> ResolveAddress(VmiCore<D>& core, const std::string& text,
                                        const LinuxOptions& options,
                                        std::optional<os_linux::LinuxKernel>* kernel) {
  absl::StatusOr<uint64_t> number = ParseNumber(text);
  if (number.ok()) return number;
  std::vector<std::string> parts = absl::StrSplit(text, absl::MaxSplits('+', 1));
  if (parts.empty() || parts[0].empty()) return number.status();
  uint64_t offset = 0;
  if (parts.size() == 2) {
    absl::StatusOr<uint64_t> off = ParseNumber(parts[1]);
    if (!off.ok()) return absl::InvalidArgumentError(absl::StrFormat("%s: bad offset after '+'", text));
    offset = *off;
  }
  if (!kernel->has_value()) {
    absl::StatusOr<os_linux::LinuxKernel> k = DiscoverKernel(core, options.Only(true, false));
    if (!k.ok()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "'%s' is neither a number nor a symbol of a Linux kernel found in the target: %s", text,
          k.status().message()));
    }
    *kernel = *std::move(k);
  }
  VMI_ASSIGN_OR_RETURN(uint64_t address, (*kernel)->Symbol(parts[0]));
  return address + offset;
}

// Fills in the Linux kernel's root and paging mode when `space` has neither
// an explicit root nor usable vCPU registers. `kernel` as in ResolveAddress.
template <VmiRead D>
absl::Status UseKernelRootIfNeeded(VmiCore<D>& core, AddressSpace* space, const LinuxOptions& options,
                                   std::optional<os_linux::LinuxKernel>* kernel) {
  if (space->root || HasPagingRegisters(core, space->vcpu)) return absl::OkStatus();
  if (!kernel->has_value()) {
    absl::StatusOr<os_linux::LinuxKernel> k = DiscoverKernel(core, options.Only(false, false));
    if (!k.ok()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "no translation root: the target has no vCPU registers and no Linux kernel was found "
          "in it (%s); pass --root <cr3> and, unless 4-level, --paging 5|pae|32",
          k.status().message()));
    }
    *kernel = *std::move(k);
  }
  space->root = (*kernel)->root.value();
  if (!space->paging) space->paging = (*kernel)->paging;
  return absl::OkStatus();
}

// Writes what discovery found (kallsyms, BTF) as an ISF profile, atomically.
inline absl::Status ExportProfile(const os_linux::LinuxKernel& k, const std::string& path) {
  if (!k.symbols_status.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no kernel symbols to export: ", k.symbols_status.message()));
  }
  os_linux::IsfExportInput input;
  input.symbols = &k.symbols;
  input.kaslr_slide = k.kaslr_slide;
  input.types = dynamic_cast<const os_linux::BtfTypes*>(k.types.get());
  if (!k.banner.empty()) input.banner = k.banner + std::string(1, '\0');
  input.osrelease = k.release;
  input.build_id = k.build_id;
  VMI_ASSIGN_OR_RETURN(std::string json, os_linux::ExportIsf(input));
  const std::string partial = path + ".partial";
  {
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    out.write(json.data(), static_cast<std::streamsize>(json.size()));
    if (!out.flush()) {
      std::remove(partial.c_str());
      return absl::InternalError(absl::StrFormat("writing %s failed", partial));
    }
  }
  if (std::rename(partial.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(partial.c_str());
    return ErrnoError(absl::StrFormat("rename(%s, %s)", partial, path), err);
  }
  return absl::OkStatus();
}

inline std::string SignedHex(int64_t v) {
  return v < 0 ? absl::StrFormat("-0x%x", -static_cast<uint64_t>(v)) : absl::StrFormat("0x%x", v);
}

// `vmi os [--export-isf FILE]`.
template <VmiRead D>
int CmdOs(VmiCore<D>& core, const LinuxOptions& options, const std::string& export_isf, const Io& io) {
  absl::StatusOr<os_linux::LinuxKernel> k = DiscoverKernel(core, options);
  if (!k.ok()) return Fail(io, "os", k.status());
  if (!export_isf.empty()) {
    if (absl::Status s = ExportProfile(*k, export_isf); !s.ok()) {
      return Fail(io, absl::StrFormat("os --export-isf %s", export_isf), s);
    }
  }
  nlohmann::json j = {{"os", "linux"},
                      {"release", k->release},
                      {"build_id", k->build_id},
                      {"banner", k->banner},
                      {"kaslr_slide", Hex(k->kaslr_slide)},
                      {"phys_base", SignedHex(k->phys_base)},
                      {"root", Hex(k->root.value())},
                      {"root_symbol", Hex(k->root_va.value())},
                      {"paging", k->paging.ToString()},
                      {"paging_levels", k->paging.levels()}};
  j["sources"] = {{"layout", k->layout_source}};
  std::string text = absl::StrFormat(
      "os           linux\nrelease      %s\nbuild id     %s\n", k->release,
      k->build_id.empty() ? "-" : k->build_id);
  if (!k->banner.empty()) {
    std::string banner = k->banner;
    while (!banner.empty() && banner.back() == '\n') banner.pop_back();
    absl::StrAppendFormat(&text, "banner       %s\n", banner);
  }
  absl::StrAppendFormat(&text, "kaslr slide  %s\nphys_base    %s\n", Hex(k->kaslr_slide),
                        SignedHex(k->phys_base));
  absl::StrAppendFormat(&text, "kernel root  pa %s (init_top_pgt %s)\npaging       %s (%d levels)\n",
                        Hex(k->root.value()), Hex(k->root_va.value()), k->paging.ToString(),
                        k->paging.levels());
  absl::StrAppendFormat(&text, "layout from  %s\n", k->layout_source);
  if (k->symbols_status.ok()) {
    j["symbols"] = k->symbols.size();
    j["sources"]["symbols"] = k->symbols_source;
    absl::StrAppendFormat(&text, "symbols      %u from %s\n", k->symbols.size(), k->symbols_source);
  } else {
    j["symbols"] = nullptr;
    j["errors"]["symbols"] = std::string(k->symbols_status.message());
    absl::StrAppendFormat(&text, "symbols      none: %s\n", k->symbols_status.message());
  }
  if (k->types_status.ok()) {
    j["types"] = k->types->type_count();
    j["sources"]["types"] = k->types_source;
    absl::StrAppendFormat(&text, "types        %u from %s\n", k->types->type_count(), k->types_source);
  } else {
    j["types"] = nullptr;
    j["errors"]["types"] = std::string(k->types_status.message());
    absl::StrAppendFormat(&text, "types        none: %s\n", k->types_status.message());
  }
  Emit(io, j, text);
  return kExitOk;
}

// Each query is a name (-> address) or an address (-> name+offset).
template <VmiRead D>
int CmdSym(VmiCore<D>& core, const std::vector<std::string>& queries, const LinuxOptions& options,
           const Io& io) {
  absl::StatusOr<os_linux::LinuxKernel> k = DiscoverKernel(core, options.Only(true, false));
  if (!k.ok()) return Fail(io, "sym", k.status());
  if (!k->symbols_status.ok()) {
    return Fail(io, "sym", absl::FailedPreconditionError(absl::StrCat(
                               "the kernel's symbols are not available: ", k->symbols_status.message())),
                kExitUnsupported);
  }
  nlohmann::json j = nlohmann::json::array();
  std::string text;
  int rc = kExitOk;
  for (const std::string& q : queries) {
    absl::StatusOr<uint64_t> address = ParseNumber(q);
    if (address.ok()) {
      std::optional<os_linux::SymbolOffset> s = k->symbols.Symbolize(*address);
      if (!s) {
        io.err << "vmi: sym " << q << ": no kernel symbol covers this address\n";
        rc = kExitFailed;
        continue;
      }
      j.push_back({{"address", Hex(*address)}, {"symbol", s->ToString()}, {"name", std::string(s->name)},
                   {"offset", Hex(s->offset)}});
      absl::StrAppendFormat(&text, "%s %s\n", Hex(*address), s->ToString());
      continue;
    }
    std::vector<std::string> parts = absl::StrSplit(q, absl::MaxSplits('+', 1));
    std::optional<size_t> index = k->symbols.IndexOf(parts[0]);
    if (!index) {
      io.err << "vmi: sym " << q << ": not among the kernel's " << k->symbols.size() << " symbols\n";
      rc = kExitFailed;
      continue;
    }
    const os_linux::Symbol s = k->symbols[*index];
    if (parts.size() == 2) {
      absl::StatusOr<uint64_t> offset = ParseNumber(parts[1]);
      if (!offset.ok()) {
        io.err << "vmi: sym " << q << ": bad offset after '+'\n";
        rc = kExitUsage;
        continue;
      }
      j.push_back({{"symbol", q}, {"address", Hex(s.address + *offset)}});
      absl::StrAppendFormat(&text, "%s %s\n", Hex(s.address + *offset), q);
      continue;
    }
    j.push_back({{"name", std::string(s.name)}, {"address", Hex(s.address)}, {"type", std::string(1, s.type)}});
    absl::StrAppendFormat(&text, "%s %c %s\n", Hex(s.address), s.type, s.name);
  }
  Emit(io, j, text);
  return rc;
}

// Pauses a live target for the guard's lifetime (resumed on every exit
// path); nothing for a dump.
template <VmiDriver D>
struct PauseForWalk {
  explicit PauseForWalk(VmiCore<D>& core) {
    if constexpr (VmiVmControl<D>) {
      absl::StatusOr<typename VmiCore<D>::PauseGuard> g = core.PauseScoped();
      if (g.ok()) {
        guard.emplace(*std::move(g));
      } else {
        status = g.status();
      }
    }
  }
  absl::Status status = absl::OkStatus();
  std::optional<std::conditional_t<VmiVmControl<D>, typename VmiCore<D>::PauseGuard, int>> guard;
};

struct PsOptions {
  bool threads = false;
  bool tree = false;
};

namespace linux_cmd_internal {

inline std::string FormatStart(uint64_t ns) {
  return absl::StrFormat("%.2fs", static_cast<double>(ns) / 1e9);
}

// The command line from arg_start..arg_end in the process's memory, NULs as
// spaces; nullopt when a page of it is not present.
template <VmiRead D>
std::optional<std::string> CommandLine(const os_linux::KernelAccess& access, const os_linux::Task& t) {
  if (!t.root || t.arg_end <= t.arg_start) return std::nullopt;
  std::string bytes(std::min<uint64_t>(t.arg_end - t.arg_start, 4096), '\0');
  if (!access.ReadUser(*t.root, t.arg_start, absl::MakeSpan(reinterpret_cast<uint8_t*>(bytes.data()), bytes.size()))
           .ok()) {
    return std::nullopt;
  }
  while (!bytes.empty() && bytes.back() == '\0') bytes.pop_back();
  for (char& c : bytes) if (c == '\0') c = ' ';
  return bytes;
}

inline nlohmann::json TaskJson(const os_linux::Task& t, const std::optional<std::string>& cmdline) {
  nlohmann::json j = {{"pid", t.tgid},
                      {"tid", t.pid},
                      {"ppid", t.ppid},
                      {"comm", t.comm},
                      {"uid", t.uid},
                      {"gid", t.gid},
                      {"euid", t.euid},
                      {"egid", t.egid},
                      {"state", std::string(1, t.state)},
                      {"kernel_thread", t.kernel_thread},
                      {"start_time_ns", t.start_time_ns},
                      {"task", Hex(t.address)},
                      {"mm", t.mm ? nlohmann::json(Hex(t.mm)) : nlohmann::json(nullptr)},
                      {"root", t.root ? nlohmann::json(Hex(t.root->value())) : nlohmann::json(nullptr)}};
  if (t.mm) {
    j["arg_start"] = Hex(t.arg_start);
    j["cmdline"] = cmdline ? nlohmann::json(*cmdline) : nlohmann::json(nullptr);
  }
  return j;
}

}  // namespace linux_cmd_internal

// `vmi ps`: every process (or thread), as the guest's own ps would list it,
// plus the task_struct and the page-table root; --tree orders and indents
// by parent.
template <VmiRead D>
int CmdPs(VmiCore<D>& core, const PsOptions& options, const LinuxOptions& linux_options, const Io& io) {
  using linux_cmd_internal::CommandLine;
  PauseForWalk<D> pause(core);
  if (!pause.status.ok()) return Fail(io, "ps: pause", pause.status);
  auto guest = os_linux::LinuxGuest<D>::Discover(core, linux_options.Discovery());
  if (!guest.ok()) return Fail(io, "ps", guest.status());
  absl::StatusOr<const os_linux::TaskLayout*> layout = (*guest)->task_layout();
  if (!layout.ok()) return Fail(io, "ps", layout.status(), kExitUnsupported);
  const os_linux::KernelAccess& access = (*guest)->access();
  os_linux::TaskList list = os_linux::ListProcesses(access, **layout);

  // Which CPU runs what, from the per-CPU areas.
  absl::flat_hash_map<uint64_t, std::vector<int>> running;
  nlohmann::json current = nlohmann::json::array();
  if (absl::StatusOr<std::vector<uint64_t>> bases = os_linux::PerCpuBases(access); bases.ok()) {
    for (size_t cpu = 0; cpu < bases->size(); ++cpu) {
      absl::StatusOr<uint64_t> task = os_linux::CurrentTaskAt(access, (*bases)[cpu]);
      if (!task.ok()) continue;
      running[*task].push_back(static_cast<int>(cpu));
      nlohmann::json c = {{"cpu", cpu}, {"task", Hex(*task)}};
      if (absl::StatusOr<os_linux::Task> t = os_linux::ReadTask(access, **layout, *task); t.ok()) {
        c["pid"] = t->pid;
        c["comm"] = t->comm;
      }
      current.push_back(c);
    }
  }

  // Rows: processes (or every thread), in list order or as a tree.
  struct Row {
    os_linux::Task task;
    int depth = 0;
  };
  std::vector<Row> rows;
  absl::Status status = list.status;
  auto add_process = [&](const os_linux::Task& p, int depth) {
    if (!options.threads) {
      rows.push_back({p, depth});
      return;
    }
    os_linux::TaskList threads = os_linux::ListThreads(access, **layout, p);
    for (const os_linux::Task& t : threads.tasks) rows.push_back({t, depth});
    if (!threads.complete() && status.ok()) status = threads.status;
  };
  if (options.tree) {
    absl::flat_hash_map<int, std::vector<size_t>> children;
    absl::flat_hash_set<int> pids;
    for (size_t i = 0; i < list.tasks.size(); ++i) pids.insert(list.tasks[i].pid);
    std::vector<size_t> roots;
    for (size_t i = 0; i < list.tasks.size(); ++i) {
      if (pids.contains(list.tasks[i].ppid) && list.tasks[i].ppid != list.tasks[i].pid) {
        children[list.tasks[i].ppid].push_back(i);
      } else {
        roots.push_back(i);
      }
    }
    // Iterative depth-first walk; each process is visited once, so even a
    // forged parent cycle cannot loop (cyclic ones are never reached from a root).
    std::vector<std::pair<size_t, int>> stack;
    for (auto it = roots.rbegin(); it != roots.rend(); ++it) stack.push_back({*it, 0});
    while (!stack.empty()) {
      auto [i, depth] = stack.back();
      stack.pop_back();
      add_process(list.tasks[i], depth);
      const std::vector<size_t>& kids = children[list.tasks[i].pid];
      for (auto it = kids.rbegin(); it != kids.rend(); ++it) stack.push_back({*it, depth + 1});
    }
  } else {
    for (const os_linux::Task& p : list.tasks) add_process(p, 0);
  }

  nlohmann::json j = {{"processes", nlohmann::json::array()}, {"complete", status.ok()}, {"current", current}};
  std::string text = absl::StrFormat("%7s %7s %s%5s %5s S %8s  %-18s  %-12s  %s\n", "PID", "PPID",
                                     options.threads ? absl::StrFormat("%7s ", "TID") : "", "UID", "GID",
                                     "START", "TASK", "ROOT", "COMMAND");
  for (const Row& r : rows) {
    const os_linux::Task& t = r.task;
    const std::optional<std::string> cmdline = CommandLine<D>(access, t);
    nlohmann::json tj = linux_cmd_internal::TaskJson(t, cmdline);
    if (options.tree) tj["depth"] = r.depth;
    if (auto it = running.find(t.address); it != running.end()) tj["running_on"] = it->second;
    j["processes"].push_back(tj);
    std::string name = t.kernel_thread ? "[" + t.comm + "]" : t.comm;
    if (options.tree && r.depth > 0) name = std::string(2 * (r.depth - 1), ' ') + " \\_ " + name;
    if (auto it = running.find(t.address); it != running.end()) {
      name += absl::StrFormat("  (running on cpu %s)", absl::StrJoin(it->second, ","));
    }
    absl::StrAppendFormat(&text, "%7d %7d %s%5u %5u %c %8s  %-18s  %-12s  %s\n", t.tgid, t.ppid,
                          options.threads ? absl::StrFormat("%7d ", t.pid) : "", t.uid, t.gid, t.state,
                          linux_cmd_internal::FormatStart(t.start_time_ns), Hex(t.address),
                          t.root ? Hex(t.root->value()) : "-", name);
  }
  if (!status.ok()) j["error"] = std::string(status.message());
  Emit(io, j, text);
  if (!status.ok()) {
    io.err << "vmi: ps: incomplete, the walk stopped: " << status.message() << "\n";
    return kExitFailed;
  }
  return kExitOk;
}

// `vmi maps PID`: the lines of the guest's /proc/PID/maps.
template <VmiRead D>
int CmdMaps(VmiCore<D>& core, int pid, const LinuxOptions& options, const Io& io);

// `vmi modules`: the loaded kernel modules, lsmod's columns plus state and
// base (--json: also the users by name and the struct module).
template <VmiRead D>
int CmdModules(VmiCore<D>& core, const LinuxOptions& options, const Io& io) {
  PauseForWalk<D> pause(core);
  if (!pause.status.ok()) return Fail(io, "modules: pause", pause.status);
  auto guest = os_linux::LinuxGuest<D>::Discover(core, options.Discovery());
  if (!guest.ok()) return Fail(io, "modules", guest.status());
  absl::StatusOr<const os_linux::ModuleLayout*> layout = (*guest)->module_layout();
  if (!layout.ok()) return Fail(io, "modules", layout.status(), kExitUnsupported);
  const os_linux::ModuleList list = os_linux::ListModules((*guest)->access(), **layout);
  nlohmann::json j = {{"modules", nlohmann::json::array()}, {"complete", list.complete()}};
  std::string text = absl::StrFormat("%-19s %8s  %-24s %-9s %s\n", "Module", "Size", "Used by",
                                     "State", "Base");
  for (const os_linux::Module& m : list.modules) {
    j["modules"].push_back({{"name", m.name},
                            {"size", m.size},
                            {"refcount", m.refcount},
                            {"used_by", m.used_by},
                            {"permanent", m.permanent},
                            {"state", m.state},
                            {"base", Hex(m.base)},
                            {"module", Hex(m.address)},
                            {"taints", m.TaintFlags()},
                            {"proc_modules", m.ToProcLine()}});
    std::string used = absl::StrFormat("%d %s", m.refcount, absl::StrJoin(m.used_by, ","));
    if (m.permanent) used += m.used_by.empty() ? "[permanent]" : ",[permanent]";
    absl::StrAppendFormat(&text, "%-19s %8u  %-24s %-9s %s%s\n", m.name, m.size, used, m.state,
                          Hex(m.base), m.TaintFlags().empty() ? "" : " " + m.TaintFlags());
  }
  if (!list.complete()) j["error"] = std::string(list.status.message());
  Emit(io, j, text);
  if (!list.complete()) {
    io.err << "vmi: modules: incomplete, the walk stopped: " << list.status.message() << "\n";
    return kExitFailed;
  }
  return kExitOk;
}

// The page-table root of process (or thread) `pid`, for --pid.
template <VmiRead D>
absl::StatusOr<os_linux::Task> FindTask(os_linux::LinuxGuest<D>& guest, int pid) {
  VMI_ASSIGN_OR_RETURN(const os_linux::TaskLayout* layout, guest.task_layout());
  os_linux::TaskList list = os_linux::ListProcesses(guest.access(), *layout);
  for (const os_linux::Task& p : list.tasks) {
    if (p.pid == pid) return p;
  }
  for (const os_linux::Task& p : list.tasks) {
    os_linux::TaskList threads = os_linux::ListThreads(guest.access(), *layout, p);
    for (const os_linux::Task& t : threads.tasks) {
      if (t.pid == pid) return t;
    }
  }
  if (!list.complete()) {
    return absl::NotFoundError(absl::StrFormat(
        "no process %d among the %u read before the process list broke off: %s", pid,
        list.tasks.size(), list.status.message()));
  }
  return absl::NotFoundError(absl::StrFormat("no process or thread with pid %d", pid));
}

// --pid N: the process's page-table root and the kernel's paging mode.
template <VmiRead D>
absl::Status UseProcessRoot(VmiCore<D>& core, int pid, const LinuxOptions& options, AddressSpace* space) {
  VMI_ASSIGN_OR_RETURN(auto guest, os_linux::LinuxGuest<D>::Discover(core, options.Discovery()));
  VMI_ASSIGN_OR_RETURN(os_linux::Task task, FindTask(*guest, pid));
  if (task.mm == 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "pid %d (%s) is a kernel thread: it has no user address space", pid, task.comm));
  }
  if (!task.root) {
    return absl::DataLossError(absl::StrFormat(
        "pid %d (%s): its mm->pgd 0x%x does not translate to a page-table root", pid, task.comm, task.pgd));
  }
  space->root = task.root->value();
  if (!space->paging) space->paging = guest->kernel().paging;
  return absl::OkStatus();
}

template <VmiRead D>
int CmdMaps(VmiCore<D>& core, int pid, const LinuxOptions& options, const Io& io) {
  const std::string what = absl::StrFormat("maps %d", pid);
  PauseForWalk<D> pause(core);
  if (!pause.status.ok()) return Fail(io, what + ": pause", pause.status);
  auto guest = os_linux::LinuxGuest<D>::Discover(core, options.Discovery());
  if (!guest.ok()) return Fail(io, what, guest.status());
  absl::StatusOr<const os_linux::MapsLayout*> layout = (*guest)->maps_layout();
  if (!layout.ok()) return Fail(io, what, layout.status(), kExitUnsupported);
  absl::StatusOr<os_linux::Task> task = FindTask(**guest, pid);
  if (!task.ok()) return Fail(io, what, task.status());
  if (task->mm == 0) {
    return Fail(io, what, absl::FailedPreconditionError(absl::StrFormat(
                              "pid %d (%s) is a kernel thread: it has no memory maps", pid, task->comm)));
  }
  const os_linux::MapList list = os_linux::ListMaps((*guest)->access(), **layout, task->mm);
  nlohmann::json j = {{"pid", task->tgid}, {"comm", task->comm}, {"mm", Hex(task->mm)},
                      {"maps", nlohmann::json::array()}, {"complete", list.complete()}};
  std::string text;
  for (const os_linux::MemoryMap& m : list.maps) {
    j["maps"].push_back({{"start", Hex(m.start)},
                         {"end", Hex(m.end)},
                         {"perms", m.Permissions()},
                         {"offset", Hex(m.offset)},
                         {"dev", absl::StrFormat("%02x:%02x", m.dev_major, m.dev_minor)},
                         {"inode", m.inode},
                         {"name", m.name},
                         {"vma", Hex(m.vma)},
                         {"file", m.file ? nlohmann::json(Hex(m.file)) : nlohmann::json(nullptr)}});
    text += m.ToProcLine() + "\n";
  }
  if (!list.complete()) j["error"] = std::string(list.status.message());
  Emit(io, j, text);
  if (!list.complete()) {
    io.err << "vmi: " << what << ": incomplete, the walk stopped: " << list.status.message() << "\n";
    return kExitFailed;
  }
  return kExitOk;
}

}  // namespace vmi::cli

#endif  // VMI_TOOLS_VMI_LINUX_CMD_H_
