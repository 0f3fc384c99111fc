// The long-mode interrupt descriptor table: decoding a copy of it, and
// reading it from guest memory through IDTR. Detectors compare the handlers
// against a baseline (IDT hooking); breakpoint tools find where to put
// their hooks.
//
// Thread-safety: stateless functions; thread-safe (ReadInterruptDescriptorTable
// is as thread-safe as the reader it is given).

#ifndef VMI_ARCH_AMD64_IDT_H_
#define VMI_ARCH_AMD64_IDT_H_

#include <concepts>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "arch/amd64/bitfields.h"
#include "arch/amd64/registers.h"
#include "core/error.h"
#include "core/types.h"

namespace vmi::amd64 {

// The most entries an IDT can have, and thus the largest meaningful size.
inline constexpr size_t kMaxIdtEntries = 256;
inline constexpr size_t kMaxIdtBytes = kMaxIdtEntries * IdtGate::kSize;

struct IdtEntry {
  uint8_t vector = 0;
  IdtGate gate;
  friend bool operator==(const IdtEntry&, const IdtEntry&) = default;
};

// Decodes every gate of the table in `bytes`, present or not, in vector
// order. InvalidArgument unless the size is a non-zero multiple of 16 and at
// most 4096 bytes.
absl::StatusOr<std::vector<IdtEntry>> ParseInterruptDescriptorTable(
    absl::Span<const uint8_t> bytes);

// Anything that reads guest-virtual memory into a buffer (a VmiState, a test
// fixture).
template <typename R>
concept VirtualMemoryReader = requires(R& reader, Va va, absl::Span<uint8_t> buffer) {
  { reader.Read(va, buffer) } -> std::convertible_to<absl::Status>;
};

namespace amd64_internal {
// Checks that `idtr` describes a whole number of long-mode gates, at most 256.
absl::Status ValidateIdtr(const DescriptorTable& idtr);
}  // namespace amd64_internal

// Reads limit+1 bytes at idtr.base and decodes them. Errors (an invalid
// limit, the reader's failure, e.g. a translation fault, which is kept) are
// prefixed "read IDT(base=0x..., limit=0x...)".
template <typename Reader>
requires VirtualMemoryReader<Reader> absl::StatusOr<std::vector<IdtEntry>>
ReadInterruptDescriptorTable(Reader& reader, const DescriptorTable& idtr) {
  const std::string context =
      absl::StrFormat("read IDT(base=0x%x, limit=0x%x)", idtr.base, idtr.limit);
  if (absl::Status s = amd64_internal::ValidateIdtr(idtr); !s.ok()) {
    return AnnotateStatus(s, context);
  }
  std::vector<uint8_t> bytes(size_t{idtr.limit} + 1);
  if (absl::Status s = reader.Read(Va(idtr.base), absl::MakeSpan(bytes)); !s.ok()) {
    return AnnotateStatus(s, context);
  }
  return ParseInterruptDescriptorTable(bytes);
}

}  // namespace vmi::amd64

#endif  // VMI_ARCH_AMD64_IDT_H_
