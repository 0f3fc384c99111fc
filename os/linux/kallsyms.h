// The kernel's compressed symbol table (CONFIG_KALLSYMS), decoded from guest
// memory: ~100,000 symbols on a distribution kernel, the same list the guest
// shows in /proc/kallsyms.
//
// Layout (scripts/kallsyms.c): kallsyms_names holds one entry per symbol, a
// length (one byte, or two when the first has bit 7 set: the 6.1 "big
// symbol" encoding, length = (b0 & 0x7f) | b1 << 7) followed by that many
// token numbers; kallsyms_token_index[256] (u16) points into
// kallsyms_token_table, 256 NUL-terminated token strings; the expansion's
// first character is the symbol type. Addresses come from kallsyms_offsets
// (s32) and kallsyms_relative_base with CONFIG_KALLSYMS_BASE_RELATIVE, else
// from kallsyms_addresses (u64). With CONFIG_KALLSYMS_ABSOLUTE_PERCPU a
// non-negative offset is an absolute value and a negative one means
// relative_base - 1 - offset; without it every offset is an unsigned
// distance from relative_base. The scheme is told from the data: only the
// absolute-percpu scheme has negative offsets.
//
// Everything read is untrusted: counts and lengths are bounded, reads are
// chunked and stop at the first unmapped page, and tables that do not decode
// to printable, address-sorted symbols are rejected as "not kallsyms".
//
// Thread-safety: stateless functions; thread-safe if `read` is.

#ifndef VMI_OS_LINUX_KALLSYMS_H_
#define VMI_OS_LINUX_KALLSYMS_H_

#include <cstdint>
#include <optional>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "os/linux/symbols.h"
#include "os/linux/vmcoreinfo.h"

namespace vmi::os_linux {

// Hard limits on what a decode will believe or read.
inline constexpr uint32_t kMaxKallsyms = 1u << 22;            // symbols
inline constexpr uint64_t kMaxKallsymsNamesBytes = 64u << 20;  // kallsyms_names
inline constexpr size_t kMaxSymbolNameLength = 1024;          // KSYM_NAME_LEN is 512

// Runtime addresses of the tables (VMCOREINFO's SYMBOL(kallsyms_*) lines).
struct KallsymsLocation {
  uint64_t names = 0, num_syms = 0, token_table = 0, token_index = 0;
  uint64_t offsets = 0, relative_base = 0;  // CONFIG_KALLSYMS_BASE_RELATIVE
  uint64_t addresses = 0;                   // otherwise

  // From a VMCOREINFO block (kernels >= 6.0), or nullopt when it lacks them.
  static std::optional<KallsymsLocation> FromVmcoreinfo(const VmcoreInfo& info);
};

// Reads `out.size()` bytes of guest-virtual memory at `va`.
using VirtualReadFn = absl::FunctionRef<absl::Status(uint64_t va, absl::Span<uint8_t> out)>;

// Decodes the tables. Errors name the table and the address or symbol index
// where decoding failed.
absl::StatusOr<SymbolTable> DecodeKallsyms(const KallsymsLocation& location, VirtualReadFn read);

}  // namespace vmi::os_linux

#endif  // VMI_OS_LINUX_KALLSYMS_H_
