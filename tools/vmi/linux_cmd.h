// The Linux subcommands (`vmi os`, `vmi sym`) and the Linux fallbacks of the
// generic ones: a target without registers (a raw or LiME dump) translates
// through the discovered kernel's page-table root and paging mode, and an
// address may be given as a kernel symbol ("init_task", "do_sys_open+0x10").
//
// Thread-safety: single-threaded.

#ifndef VMI_TOOLS_VMI_LINUX_CMD_H_
#define VMI_TOOLS_VMI_LINUX_CMD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/vmi_core.h"
#include "nlohmann/json.hpp"
#include "os/linux/discovery.h"
#include "tools/vmi/commands.h"
#include "tools/vmi/format.h"

namespace vmi::cli {

struct LinuxOptions {
  bool symbols = true;
  bool types = true;
};

template <VmiRead D>
absl::StatusOr<os_linux::LinuxKernel> DiscoverKernel(VmiCore<D>& core, const LinuxOptions& options) {
  os_linux::DiscoveryOptions discovery;
  discovery.load_symbols = options.symbols;
  discovery.load_types = options.types;
  return os_linux::DiscoverLinux(core, discovery);
}

// An address: a number, or (on a Linux target) a symbol with an optional
// "+offset". `kernel` is discovered on first need and kept.
template <VmiRead D>
absl::StatusOr<uint64_t> ResolveAddress(VmiCore<D>& core, const std::string& text,
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
    absl::StatusOr<os_linux::LinuxKernel> k = DiscoverKernel(core, LinuxOptions{.types = false});
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
absl::Status UseKernelRootIfNeeded(VmiCore<D>& core, AddressSpace* space,
                                   std::optional<os_linux::LinuxKernel>* kernel) {
  if (space->root || HasPagingRegisters(core, space->vcpu)) return absl::OkStatus();
  if (!kernel->has_value()) {
    absl::StatusOr<os_linux::LinuxKernel> k =
        DiscoverKernel(core, LinuxOptions{.symbols = false, .types = false});
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

inline std::string SignedHex(int64_t v) {
  return v < 0 ? absl::StrFormat("-0x%x", -static_cast<uint64_t>(v)) : absl::StrFormat("0x%x", v);
}

template <VmiRead D>
int CmdOs(VmiCore<D>& core, const Io& io) {
  absl::StatusOr<os_linux::LinuxKernel> k = DiscoverKernel(core, LinuxOptions{});
  if (!k.ok()) return Fail(io, "os", k.status());
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
int CmdSym(VmiCore<D>& core, const std::vector<std::string>& queries, const Io& io) {
  absl::StatusOr<os_linux::LinuxKernel> k = DiscoverKernel(core, LinuxOptions{.types = false});
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

}  // namespace vmi::cli

#endif  // VMI_TOOLS_VMI_LINUX_CMD_H_
