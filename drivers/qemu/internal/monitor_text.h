// Parsers for what QEMU tells about a VM in text: the GDB stub's target
// description (register names, sizes and order in a 'g' packet), the
// guest-physical RAM layout from HMP "info mtree -f", and the descriptor
// caches, GDTR and IDTR from HMP "info registers -a", which the GDB stub
// does not expose. All input is treated as untrusted: a line that does not
// parse is an error naming it.
//
// Thread-safety: stateless functions; thread-safe.

#ifndef VMI_DRIVERS_QEMU_INTERNAL_MONITOR_TEXT_H_
#define VMI_DRIVERS_QEMU_INTERNAL_MONITOR_TEXT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "arch/amd64/registers.h"

namespace vmi::qemu_internal {

// One register of the target description, in 'g' packet order.
struct GdbRegister {
  std::string name;
  uint32_t bits = 0;
  uint32_t regnum = 0;      // for p/P
  uint32_t offset = 0;      // bytes into the 'g' payload
};

// The registers of a target description document and the documents it
// includes (`read_include` fetches one by name). Bounded: 16 documents,
// 1024 registers.
absl::StatusOr<std::vector<GdbRegister>> ParseTargetDescription(
    absl::string_view target_xml,
    const std::function<absl::StatusOr<std::string>(const std::string&)>& read_include);

// A guest-physical range backed by the RAM backend file.
struct RamRange {
  uint64_t gpa = 0;
  uint64_t size = 0;
  uint64_t file_offset = 0;
  bool read_only = false;  // a "rom" view of RAM (e.g. the BIOS shadow)
  friend bool operator==(const RamRange&, const RamRange&) = default;
};

// The ranges of the flat view of address space "memory" that map the memory
// region `backend` (the memory-backend object's id), sorted and coalesced.
// NotFound when there is none.
absl::StatusOr<std::vector<RamRange>> ParseMtreeRam(absl::string_view text, absl::string_view backend);

// What "info registers -a" adds to the GDB stub's registers, per CPU.
struct CpuDescriptors {
  amd64::Segment es, cs, ss, ds, fs, gs, ldtr, tr;
  amd64::DescriptorTable gdtr, idtr;
  uint64_t dr[8] = {};  // DR0-3, (4, 5 unused), DR6, DR7
};
absl::StatusOr<std::vector<CpuDescriptors>> ParseInfoRegisters(absl::string_view text);

}  // namespace vmi::qemu_internal

#endif  // VMI_DRIVERS_QEMU_INTERNAL_MONITOR_TEXT_H_
