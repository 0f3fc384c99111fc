// libFuzzer entry point for the QEMU ELF core parser, with and without zero
// fill: a parsed layout must lie inside the input (CheckLayoutOrDie) and
// describe at most 65535 vCPUs.

#include <cstddef>
#include <cstdint>

#include "drivers/dump/internal/parsers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vmi::dump_internal;
  const absl::Span<const uint8_t> file(data, size);
  for (const bool zero_fill : {false, true}) {
    ParseOptions options;
    options.zero_fill_elf_memsz = zero_fill;
    if (auto layout = ParseElfCore(file, options); layout.ok()) {
      CheckLayoutOrDie(*layout, file);
      if (layout->registers.size() > 0xffff) __builtin_trap();
    }
  }
  return 0;
}
