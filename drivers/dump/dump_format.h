// The memory dump formats DumpDriver reads and dump_writer writes, and the
// ranges of guest frames a dump holds.
//
// Thread-safety: plain values and stateless functions; thread-safe.

#ifndef VMI_DRIVERS_DUMP_DUMP_FORMAT_H_
#define VMI_DRIVERS_DUMP_DUMP_FORMAT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/types.h"

namespace vmi::dump {

enum class DumpFormat : uint8_t {
  kAuto,     // detect from the content (magic numbers), never from the file name
  kRaw,      // byte N of the file is guest-physical address N
  kLime,     // the Linux Memory Extractor's range-header format
  kElfCore,  // ELF64 core as written by QEMU's dump-guest-memory
  kXenCore,  // ELF64 as written by `xl dump-core` (libxenctrl xc_core)
};

// "auto", "raw", "lime", "elf", "xen".
std::string DumpFormatName(DumpFormat format);
// The inverse of DumpFormatName (also accepts "qemu-elf" and "xen-core").
absl::StatusOr<DumpFormat> ParseDumpFormat(absl::string_view name);

// `count` consecutive guest frames starting at `first`.
struct GfnRange {
  Gfn first;
  uint64_t count = 0;
  friend bool operator==(const GfnRange&, const GfnRange&) = default;
};

}  // namespace vmi::dump

#endif  // VMI_DRIVERS_DUMP_DUMP_FORMAT_H_
