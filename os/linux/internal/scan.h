// Fast search for a short byte pattern in a large buffer: the scan that looks
// for VMCOREINFO text in guest memory. SSE2 compares the pattern's first and
// last bytes against 16 positions at once and confirms candidates with
// memcmp, so a scan runs at memory speed on data where the pattern's first
// byte is common (plain memchr on that byte does not).
//
// Thread-safety: stateless functions; thread-safe.

#ifndef VMI_OS_LINUX_INTERNAL_SCAN_H_
#define VMI_OS_LINUX_INTERNAL_SCAN_H_

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace vmi::os_linux_internal {

inline constexpr size_t kNotFound = static_cast<size_t>(-1);

// Offset of the first occurrence of `pattern` in `data` at or after `from`,
// or kNotFound. An empty pattern matches at `from` (if within data).
size_t FindPattern(absl::Span<const uint8_t> data, absl::string_view pattern, size_t from = 0);

}  // namespace vmi::os_linux_internal

#endif  // VMI_OS_LINUX_INTERNAL_SCAN_H_
