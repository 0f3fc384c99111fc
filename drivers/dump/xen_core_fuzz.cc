// libFuzzer entry point for the Xen dump-core parser: a parsed layout must
// lie inside the input (CheckLayoutOrDie) and describe at most 65535 vCPUs.

#include <cstddef>
#include <cstdint>

#include "drivers/dump/internal/parsers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vmi::dump_internal;
  const absl::Span<const uint8_t> file(data, size);
  if (auto layout = ParseXenCore(file); layout.ok()) {
    CheckLayoutOrDie(*layout, file);
    if (layout->registers.size() > 0xffff) __builtin_trap();
  }
  return 0;
}
