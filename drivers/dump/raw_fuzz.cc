// libFuzzer entry point for raw images and for format detection: any input
// is parsed by DetectFormat + Parse(kAuto) and as a raw image; a parsed
// layout must lie inside the input (CheckLayoutOrDie).

#include <cstddef>
#include <cstdint>

#include "drivers/dump/internal/parsers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vmi::dump_internal;
  const absl::Span<const uint8_t> file(data, size);
  if (auto layout = ParseRaw(file); layout.ok()) CheckLayoutOrDie(*layout, file);
  if (auto layout = Parse(file, vmi::dump::DumpFormat::kAuto); layout.ok()) {
    CheckLayoutOrDie(*layout, file);
  }
  return 0;
}
