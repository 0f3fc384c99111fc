// Writers for the dump formats DumpDriver reads: raw physical image, LiME,
// QEMU-style ELF core (dump-guest-memory layout: PT_LOAD per range,
// NT_PRSTATUS + QEMUCPUState notes per vCPU) and Xen dump-core (HVM layout
// with .xen_pfn). The simulator and the `vmi` tool use them to capture a
// machine; tests use them to build dumps.
//
// The memory comes from a callback, one 4 KiB frame at a time, so a writer
// never holds more than a page of guest memory.
//
// Formats differ in what they keep: raw has no holes (they are written as
// zeros, sparsely) and, like LiME, no CPU state; ELF and Xen keep holes and
// the vCPU registers they have fields for (see internal/cpu_state.h).
//
// Thread-safety: stateless functions; thread-safe (the callback is called
// on the calling thread).

#ifndef VMI_DRIVERS_DUMP_DUMP_WRITER_H_
#define VMI_DRIVERS_DUMP_DUMP_WRITER_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "arch/amd64/registers.h"
#include "core/types.h"
#include "drivers/dump/dump_format.h"

namespace vmi::dump {

struct DumpSource {
  // Frames present in the machine: ascending, disjoint, none empty.
  std::vector<GfnRange> ranges;
  // Fills `out` (4096 bytes) with the contents of `gfn`.
  std::function<absl::Status(Gfn gfn, absl::Span<uint8_t> out)> read_page;
  // One entry per vCPU (ELF and Xen only).
  std::vector<amd64::Registers> vcpus;
  // More ELF notes, written after the vCPU notes (ELF only), e.g. the guest
  // kernel's VMCOREINFO as QEMU writes it.
  struct Note {
    std::string name;
    uint32_t type = 0;
    std::vector<uint8_t> desc;
  };
  std::vector<Note> notes;
};

// Each writes `source` to `path` (created or truncated). On error the file
// is removed and the status names the failing call or the invalid input.
[[nodiscard]] absl::Status WriteRawDump(const std::string& path, const DumpSource& source);
[[nodiscard]] absl::Status WriteLimeDump(const std::string& path, const DumpSource& source);
[[nodiscard]] absl::Status WriteElfCoreDump(const std::string& path, const DumpSource& source);
[[nodiscard]] absl::Status WriteXenCoreDump(const std::string& path, const DumpSource& source);
// Dispatches on `format` (kAuto is an error).
[[nodiscard]] absl::Status WriteDump(const std::string& path, DumpFormat format,
                                     const DumpSource& source);

}  // namespace vmi::dump

#endif  // VMI_DRIVERS_DUMP_DUMP_WRITER_H_
