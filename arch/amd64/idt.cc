#include "arch/amd64/idt.h"

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "arch/amd64/bitfields.h"

namespace vmi::amd64 {

absl::StatusOr<std::vector<IdtEntry>> ParseInterruptDescriptorTable(
    absl::Span<const uint8_t> bytes) {
  if (bytes.empty() || bytes.size() % IdtGate::kSize != 0 || bytes.size() > kMaxIdtBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("parse IDT: size %u bytes is not a non-zero multiple of %u up to %u",
                        bytes.size(), IdtGate::kSize, kMaxIdtBytes));
  }
  std::vector<IdtEntry> entries;
  entries.reserve(bytes.size() / IdtGate::kSize);
  for (size_t i = 0; i < bytes.size() / IdtGate::kSize; ++i) {
    entries.push_back(
        {static_cast<uint8_t>(i), IdtGate::Decode(bytes.data() + i * IdtGate::kSize)});
  }
  return entries;
}

namespace amd64_internal {

absl::Status ValidateIdtr(const DescriptorTable& idtr) {
  const size_t size = size_t{idtr.limit} + 1;
  if (size % IdtGate::kSize != 0 || size > kMaxIdtBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "IDT limit 0x%x is invalid: limit+1 must be a multiple of %u and at most 0x%x", idtr.limit,
        IdtGate::kSize, kMaxIdtBytes));
  }
  return absl::OkStatus();
}

}  // namespace amd64_internal
}  // namespace vmi::amd64
