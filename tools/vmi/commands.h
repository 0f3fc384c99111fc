// The vmi subcommands, written once against the capability concepts and
// instantiated per driver by main.cc. Each returns a process exit code and
// writes its result to `out` (text or one JSON document) and errors to
// `err`, one line naming what failed and why.
//
// Thread-safety: single-threaded.

#ifndef VMI_TOOLS_VMI_COMMANDS_H_
#define VMI_TOOLS_VMI_COMMANDS_H_

#include <cstdint>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "arch/amd64/amd64.h"
#include "arch/amd64/idt.h"
#include "arch/amd64/paging.h"
#include "core/vmi_core.h"
#include "nlohmann/json.hpp"
#include "tools/vmi/format.h"

namespace vmi::cli {

// Exit codes.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;      // the operation failed (bad address, fault, ...)
inline constexpr int kExitUsage = 2;       // bad command line
inline constexpr int kExitTarget = 3;      // the target cannot be opened
inline constexpr int kExitUnsupported = 4; // the target lacks the capability

struct Io {
  std::ostream& out;
  std::ostream& err;
  bool json = false;
};

inline int Fail(const Io& io, const std::string& what, const absl::Status& status,
                int code = kExitFailed) {
  io.err << "vmi: " << what << ": " << status.message() << "\n";
  return code;
}

inline void Emit(const Io& io, const nlohmann::json& j, const std::string& text) {
  if (io.json) {
    io.out << j.dump(2) << "\n";
  } else {
    io.out << text;
  }
}

// Where a virtual address lives: an explicit root, or a vCPU's CR3; the
// paging mode from the vCPU unless given (--paging).
struct AddressSpace {
  std::optional<uint64_t> root;
  uint16_t vcpu = 0;
  std::optional<amd64::PagingMode> paging;
};

// "4", "5", "pae" or "32" (--paging).
inline absl::StatusOr<amd64::PagingMode> ParsePagingMode(absl::string_view text) {
  if (text == "4") return amd64::PagingMode::FourLevel();
  if (text == "5") return amd64::PagingMode::FiveLevel();
  if (text == "pae") return amd64::PagingMode::Pae();
  if (text == "32") return amd64::PagingMode::Legacy32();
  return absl::InvalidArgumentError(absl::StrFormat("--paging %s: expected 4, 5, pae or 32", text));
}

// True when vCPU `vcpu` has registers with paging on: its CR3 can be the
// translation root.
template <VmiDriver D>
bool HasPagingRegisters(VmiCore<D>& core, uint16_t vcpu) {
  if constexpr (VmiQueryRegisters<D>) {
    absl::StatusOr<amd64::Registers> regs = core.GetRegisters(VcpuId(vcpu));
    return regs.ok() && Amd64::PagingModeOf(*regs).kind != amd64::PagingMode::Kind::kDisabled;
  } else {
    return false;
  }
}

// Reads pages through the core for the explicit walk (amd64::WalkInto).
template <VmiRead D>
struct CoreReader {
  VmiCore<D>* core;
  absl::StatusOr<MappedPage> ReadPage(Gfn gfn) { return core->ReadPage(gfn); }
};

// Virtual reads for the IDT reader.
template <VmiRead D>
struct VirtualReader {
  VmiCore<D>* core;
  Pa root;
  absl::Status Read(Va va, absl::Span<uint8_t> out) {
    return core->Read(AccessContext::Virtual(va, root), out);
  }
};

// The root and paging mode for `space`; sets the core's paging mode.
template <VmiRead D>
absl::StatusOr<Pa> ResolveRoot(VmiCore<D>& core, const AddressSpace& space) {
  if constexpr (VmiQueryRegisters<D>) {
    absl::StatusOr<amd64::Registers> regs = core.GetRegisters(VcpuId(space.vcpu));
    if (regs.ok()) {
      core.SetPagingMode(space.paging.value_or(Amd64::PagingModeOf(*regs)));
      if (!space.root) return core.paging_mode().RootFromCr3(regs->cr3);
    } else if (!space.root) {
      if (!absl::IsOutOfRange(regs.status())) {
        return AnnotateStatus(regs.status(), absl::StrFormat("registers of vcpu %u", space.vcpu));
      }
      // The target records no CPU state for this vCPU (a raw or LiME dump
      // records none): the root has to come from the command line.
      absl::StatusOr<VmiInfo> info = core.Info();
      return absl::FailedPreconditionError(absl::StrFormat(
          "no translation root: the target records no registers for vcpu %u (it has %u vCPU "
          "states); give the page-table root with --root CR3, and --paging 5|pae|32 unless it is "
          "4-level",
          space.vcpu, info.ok() ? info->vcpus : 0));
    }
  }
  if (!space.root) {
    return absl::FailedPreconditionError(
        "no translation root: give the page-table root with --root CR3");
  }
  if (space.paging) core.SetPagingMode(*space.paging);
  return core.paging_mode().RootFromCr3(*space.root);
}

// A vCPU the target has no registers for, in the CLI's words (the driver's
// message speaks to API users).
template <VmiDriver D>
absl::Status NoRegistersError(VmiCore<D>& core, uint16_t vcpu, const absl::Status& status) {
  if (!absl::IsOutOfRange(status)) return status;
  absl::StatusOr<VmiInfo> info = core.Info();
  return absl::OutOfRangeError(absl::StrFormat(
      "the target records no registers for vcpu %u (it has %u vCPU states; a raw or LiME dump "
      "records none)",
      vcpu, info.ok() ? info->vcpus : 0));
}

template <VmiDriver D>
int CmdInfo(VmiCore<D>& core, const std::string& driver_name, const Io& io) {
  absl::StatusOr<VmiInfo> info = core.Info();
  if (!info.ok()) return Fail(io, "info", info.status());
  nlohmann::json j = {{"driver", driver_name},
                      {"vcpus", info->vcpus},
                      {"max_gfn", Hex(info->max_gfn.value())},
                      {"page_size", info->page_size},
                      {"memory_bytes", (info->max_gfn.value() + 1) * info->page_size}};
  std::string text = absl::StrFormat(
      "driver     %s\nvcpus      %u\nmax_gfn    %s\npage_size  %u\nmemory     %s\n", driver_name,
      info->vcpus, info->max_gfn, info->page_size,
      HumanBytes((info->max_gfn.value() + 1.0) * info->page_size));
  j["paging"] = nlohmann::json::array();
  if constexpr (VmiQueryRegisters<D>) {
    for (uint16_t v = 0; v < info->vcpus; ++v) {
      absl::StatusOr<amd64::Registers> regs = core.GetRegisters(VcpuId(v));
      std::string mode = regs.ok() ? Amd64::PagingModeOf(*regs).ToString()
                                   : std::string("unknown (") + std::string(regs.status().message()) + ")";
      j["paging"].push_back({{"vcpu", v}, {"mode", mode}});
      absl::StrAppendFormat(&text, "vcpu %-5u paging %s\n", v, mode);
    }
  }
  Emit(io, j, text);
  return kExitOk;
}

template <VmiDriver D>
int CmdRegs(VmiCore<D>& core, uint16_t vcpu, const Io& io) {
  if constexpr (VmiQueryRegisters<D>) {
    absl::StatusOr<amd64::Registers> regs = core.GetRegisters(VcpuId(vcpu));
    if (!regs.ok()) {
      return Fail(io, absl::StrFormat("regs --vcpu %u", vcpu), NoRegistersError(core, vcpu, regs.status()));
    }
    nlohmann::json j = RegistersToJson(*regs);
    j["vcpu"] = vcpu;
    j["paging_mode"] = Amd64::PagingModeOf(*regs).ToString();
    Emit(io, j, absl::StrFormat("vcpu %u (%s)\n%s", vcpu, Amd64::PagingModeOf(*regs).ToString(),
                                RegistersToText(*regs)));
    return kExitOk;
  } else {
    return Fail(io, "regs", absl::UnimplementedError("this target has no register state"),
                kExitUnsupported);
  }
}

template <VmiRead D>
int CmdTranslate(VmiCore<D>& core, uint64_t va, const AddressSpace& space, const Io& io) {
  absl::StatusOr<Pa> root = ResolveRoot(core, space);
  if (!root.ok()) return Fail(io, "translate", root.status());
  CoreReader<D> reader{&core};
  amd64::Walk walk;
  absl::Status status = amd64::WalkInto(reader, AddressContext(Va(va), *root), core.paging_mode(), walk);
  Emit(io, WalkToJson(walk, status), WalkToText(walk, status));
  return status.ok() ? kExitOk : kExitFailed;
}

enum class ReadAs { kHex, kU8, kU16, kU32, kU64, kString, kWString };

template <VmiRead D>
int CmdRead(VmiCore<D>& core, uint64_t address, uint64_t length, bool physical,
            const AddressSpace& space, ReadAs as, const Io& io) {
  AccessContext ctx = AccessContext::Physical(Pa(address));
  if (!physical) {
    absl::StatusOr<Pa> root = ResolveRoot(core, space);
    if (!root.ok()) return Fail(io, "read", root.status());
    ctx = AccessContext::Virtual(Va(address), *root);
  }
  const std::string what = absl::StrFormat("read %s%s", Hex(address), physical ? " (physical)" : "");
  nlohmann::json j = {{"address", Hex(address)}, {"physical", physical}};
  switch (as) {
    case ReadAs::kString:
    case ReadAs::kWString: {
      auto s = as == ReadAs::kString ? core.ReadString(ctx, length) : core.ReadWString(ctx, length);
      if (!s.ok()) return Fail(io, what, s.status());
      j["string"] = *s;
      Emit(io, j, *s + "\n");
      return kExitOk;
    }
    case ReadAs::kHex: {
      if (length > (64u << 20)) {
        return Fail(io, what, absl::InvalidArgumentError("length over 64 MiB; use `dump`"), kExitUsage);
      }
      std::vector<uint8_t> buf(length);
      absl::Status s = core.Read(ctx, absl::MakeSpan(buf));
      if (!s.ok()) return Fail(io, what, s);
      std::string hex;
      for (uint8_t b : buf) absl::StrAppendFormat(&hex, "%02x", b);
      j["length"] = length;
      j["hex"] = hex;
      Emit(io, j, HexDump(address, buf));
      return kExitOk;
    }
    default: {
      const int width = as == ReadAs::kU8 ? 1 : as == ReadAs::kU16 ? 2 : as == ReadAs::kU32 ? 4 : 8;
      const uint64_t count = length == 0 ? 1 : length;
      std::vector<uint64_t> values;
      std::string text;
      for (uint64_t i = 0; i < count; ++i) {
        uint8_t raw[8] = {};
        absl::Status s = core.Read(ctx + i * width, absl::MakeSpan(raw, width));
        if (!s.ok()) return Fail(io, what, s);
        uint64_t v = 0;
        std::memcpy(&v, raw, width);
        values.push_back(v);
        absl::StrAppendFormat(&text, "%016x: 0x%0*x\n", address + i * width, width * 2, v);
      }
      j["width"] = width;
      j["values"] = nlohmann::json::array();
      for (uint64_t v : values) j["values"].push_back(Hex(v));
      Emit(io, j, text);
      return kExitOk;
    }
  }
}

template <VmiRead D>
int CmdIdt(VmiCore<D>& core, uint16_t vcpu, const Io& io) {
  if constexpr (VmiQueryRegisters<D>) {
    absl::StatusOr<amd64::Registers> regs = core.GetRegisters(VcpuId(vcpu));
    if (!regs.ok()) {
      return Fail(io, absl::StrFormat("idt --vcpu %u", vcpu), NoRegistersError(core, vcpu, regs.status()));
    }
    core.SetPagingMode(Amd64::PagingModeOf(*regs));
    VirtualReader<D> reader{&core, Amd64::TranslationRoot(*regs)};
    auto entries = amd64::ReadInterruptDescriptorTable(reader, regs->idtr);
    if (!entries.ok()) return Fail(io, absl::StrFormat("idt --vcpu %u", vcpu), entries.status());
    nlohmann::json j = {{"vcpu", vcpu},
                        {"base", Hex(regs->idtr.base)},
                        {"limit", Hex(regs->idtr.limit)},
                        {"entries", IdtToJson(*entries)}};
    Emit(io, j,
         absl::StrFormat("IDT base=%s limit=%s\n%s", Hex(regs->idtr.base), Hex(regs->idtr.limit),
                         IdtToText(*entries)));
    return kExitOk;
  } else {
    return Fail(io, "idt", absl::UnimplementedError("this target has no register state"),
                kExitUnsupported);
  }
}

}  // namespace vmi::cli

#endif  // VMI_TOOLS_VMI_COMMANDS_H_
