// The guest programs: real x86-64 machine code assembled by Bazel from
// sim/programs/*.S (position-independent), each with a name, a description,
// its entry point, the addresses worth watching and the IDT vectors it
// handles; plus a loader that copies a program into fresh guest frames, maps
// it and installs its handlers, and BuildStandardGuest, which makes a ready
// long-mode guest around one program.
//
// Thread-safety: the program table is immutable; loading is thread-compatible.

#ifndef VMI_SIM_PROGRAMS_H_
#define VMI_SIM_PROGRAMS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/types.h"
#include "sim/guest_builder.h"
#include "sim/machine.h"

namespace vmi::sim {

struct ProgramSymbol {
  const char* name;
  uint64_t offset;  // from the start of the image
};

struct ProgramHandler {
  uint8_t vector;
  uint64_t offset;
};

struct GuestProgram {
  const char* name;
  const char* description;
  absl::Span<const uint8_t> image;  // page-aligned size
  uint64_t entry;
  std::vector<ProgramSymbol> symbols;
  std::vector<ProgramHandler> handlers;

  absl::StatusOr<uint64_t> Offset(absl::string_view symbol) const;
};

absl::Span<const GuestProgram> AllPrograms();
absl::StatusOr<const GuestProgram*> FindProgram(absl::string_view name);

struct LoadedProgram {
  const GuestProgram* program = nullptr;
  Va base;
  Pa pa;  // the image is physically contiguous
  Va entry() const { return base + program->entry; }
  absl::StatusOr<Va> Symbol(absl::string_view name) const;
  absl::StatusOr<Pa> SymbolPa(absl::string_view name) const;
};

// Copies `program` into fresh frames, maps it at `base` in `as` with `flags`
// (page_flags) and points the IDT gates it handles at it.
absl::StatusOr<LoadedProgram> LoadProgram(GuestBuilder& builder, AddressSpace& as,
                                          const GuestProgram& program, Va base,
                                          uint32_t flags = page_flags::kWritable);

inline constexpr uint64_t kProgramVa = 0xffffffff80000000ull;
inline constexpr uint64_t kStackTopVa = 0xffffc90000100000ull;  // vCPU i: minus i * 64 KiB
inline constexpr uint64_t kUserStackTopVa = 0x0000000000800000ull;

struct StandardGuestOptions {
  int paging_levels = 4;
  uint32_t program_flags = page_flags::kWritable;
  uint64_t stack_pages = 4;
};

struct StandardGuest {
  std::unique_ptr<GuestBuilder> builder;
  AddressSpace* space = nullptr;
  LoadedProgram program;
};

// One address space (system tables, the program at kProgramVa, a kernel stack
// per vCPU) and every vCPU started at the program's entry in kernel mode.
absl::StatusOr<StandardGuest> BuildStandardGuest(Machine& machine, absl::string_view program,
                                                 const StandardGuestOptions& options = {});

}  // namespace vmi::sim

#endif  // VMI_SIM_PROGRAMS_H_
