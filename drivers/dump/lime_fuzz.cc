// libFuzzer entry point for the LiME parser: a parsed layout must lie inside
// the input (CheckLayoutOrDie); errors are fine, crashes and stray reads not.

#include <cstddef>
#include <cstdint>

#include "drivers/dump/internal/parsers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vmi::dump_internal;
  const absl::Span<const uint8_t> file(data, size);
  if (auto layout = ParseLime(file); layout.ok()) {
    CheckLayoutOrDie(*layout, file);
    if (!layout->registers.empty()) __builtin_trap();  // LiME has no CPU state
  }
  return 0;
}
