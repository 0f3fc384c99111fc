// Parsers from an untrusted byte span (the mmap of a dump file, or a fuzzer's
// input) to a DumpLayout. They never read outside the span, check all offset
// arithmetic for overflow, and either reject the input with an error naming
// what is wrong and where (offset, segment / range / section) or serve it up
// to the damage, recording a warning.
//
// Thread-safety: stateless functions; thread-safe.

#ifndef VMI_DRIVERS_DUMP_INTERNAL_PARSERS_H_
#define VMI_DRIVERS_DUMP_INTERNAL_PARSERS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "drivers/dump/dump_format.h"
#include "drivers/dump/internal/layout.h"

namespace vmi::dump_internal {

struct ParseOptions {
  // ELF PT_LOAD bytes between p_filesz and p_memsz read as zeros (the ELF
  // meaning) instead of being reported missing (the default: a dump that
  // did not record a page has not told us it is zero).
  bool zero_fill_elf_memsz = false;
};

// The format of `file` from its magic numbers: LiME's "EMiL", ELF (Xen's
// dump-core when it has a section table but no program headers, or a
// ".xen_pages" section, else
// QEMU-style), else raw.
dump::DumpFormat DetectFormat(absl::Span<const uint8_t> file);

absl::StatusOr<DumpLayout> ParseRaw(absl::Span<const uint8_t> file);
absl::StatusOr<DumpLayout> ParseLime(absl::Span<const uint8_t> file);
absl::StatusOr<DumpLayout> ParseElfCore(absl::Span<const uint8_t> file,
                                        const ParseOptions& options = {});
absl::StatusOr<DumpLayout> ParseXenCore(absl::Span<const uint8_t> file);

// Detects (for kAuto) and parses. Errors are prefixed with the format name.
absl::StatusOr<DumpLayout> Parse(absl::Span<const uint8_t> file, dump::DumpFormat format,
                                 const ParseOptions& options = {});

// For fuzz targets: aborts unless every extent of `layout` lies inside `file`,
// extents are sorted and disjoint, and max_gfn / page_count agree with them;
// then reads the first and last byte of every served page (bounded to 4096
// pages) so that a sanitizer sees any stray pointer.
void CheckLayoutOrDie(const DumpLayout& layout, absl::Span<const uint8_t> file);

}  // namespace vmi::dump_internal

#endif  // VMI_DRIVERS_DUMP_INTERNAL_PARSERS_H_
