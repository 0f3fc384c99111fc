#include "drivers/dump/internal/parsers.h"

#include <elf.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "core/error.h"
#include "drivers/dump/internal/constants.h"

namespace vmi::dump_internal {

bool HasXenSections(absl::Span<const uint8_t> file);  // xen_core_parser.cc

dump::DumpFormat DetectFormat(absl::Span<const uint8_t> file) {
  if (const auto magic = Load<uint32_t>(file, 0); magic && *magic == kLimeMagic) {
    return dump::DumpFormat::kLime;
  }
  if (file.size() >= 4 && std::memcmp(file.data(),
                                      "\x7f"
                                      "ELF",
                                      4) == 0) {
    // QEMU cores always have program headers; xc_core files never do, but
    // have a section table.
    const auto phnum = Load<uint16_t>(file, offsetof(Elf64_Ehdr, e_phnum));
    const auto shoff = Load<uint64_t>(file, offsetof(Elf64_Ehdr, e_shoff));
    const bool sections_only = phnum && *phnum == 0 && shoff && *shoff != 0;
    return sections_only || HasXenSections(file) ? dump::DumpFormat::kXenCore
                                                 : dump::DumpFormat::kElfCore;
  }
  return dump::DumpFormat::kRaw;
}

absl::StatusOr<DumpLayout> ParseRaw(absl::Span<const uint8_t> file) {
  DumpLayout layout;
  layout.format = dump::DumpFormat::kRaw;
  layout.source_kind = "raw image";
  const uint64_t pages = file.size() / kPageSize;
  if (pages == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("image is %u bytes, smaller than one 4 KiB page", file.size()));
  }
  if (file.size() % kPageSize != 0) {
    layout.warnings.push_back(
        absl::StrFormat("trailing partial page of %u bytes at offset 0x%x (gfn 0x%x) is not served",
                        file.size() % kPageSize, pages * kPageSize, pages));
  }
  layout.extents.push_back({.first_gfn = 0, .pages = pages, .file_offset = 0});
  VMI_RETURN_IF_ERROR(layout.Finalize());
  return layout;
}

absl::StatusOr<DumpLayout> ParseLime(absl::Span<const uint8_t> file) {
  DumpLayout layout;
  layout.format = dump::DumpFormat::kLime;
  layout.source_kind = "LiME range";
  uint64_t pos = 0;
  for (uint64_t index = 0; pos < file.size(); ++index) {
    if (file.size() - pos < kLimeHeaderSize) {
      if (index == 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "truncated LiME header at offset 0: file is %u bytes, a header needs %u", file.size(),
            kLimeHeaderSize));
      }
      layout.warnings.push_back(
          absl::StrFormat("%u trailing bytes at offset 0x%x (too short for a range header) ignored",
                          file.size() - pos, pos));
      break;
    }
    const uint32_t magic = LoadUnchecked<uint32_t>(file, pos);
    const uint32_t version = LoadUnchecked<uint32_t>(file, pos + 4);
    const uint64_t start = LoadUnchecked<uint64_t>(file, pos + 8);
    const uint64_t end = LoadUnchecked<uint64_t>(file, pos + 16);
    if (magic != kLimeMagic) {
      if (index == 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "wrong magic 0x%08x at offset 0 (LiME is 0x%08x, \"EMiL\")", magic, kLimeMagic));
      }
      layout.warnings.push_back(absl::StrFormat(
          "range %u: wrong magic 0x%08x at offset 0x%x; it and anything after it ignored", index,
          magic, pos));
      break;
    }
    if (version != kLimeVersion) {
      return absl::InvalidArgumentError(
          absl::StrFormat("range %u at offset 0x%x: unsupported LiME version %u (expected 1)",
                          index, pos, version));
    }
    if (end < start) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "range %u at offset 0x%x: end 0x%x is below start 0x%x", index, pos, end, start));
    }
    if (end >= kMaxPhysicalAddress) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "range %u at offset 0x%x: end 0x%x is beyond the 52-bit physical address space", index,
          pos, end));
    }
    const uint64_t length = end - start + 1;  // no overflow: end < 2^52
    const uint64_t data = pos + kLimeHeaderSize;
    const uint64_t available = std::min(length, file.size() - data);
    AddWholePages(start, available, data, /*zero=*/false, index, &layout.extents);
    if (available < length) {
      layout.warnings.push_back(absl::StrFormat(
          "range %u at offset 0x%x: data [0x%x, +0x%x) truncated by end of file (size 0x%x); "
          "memory from gpa 0x%x on is missing",
          index, pos, data, length, file.size(), start + available));
      break;
    }
    pos = data + length;
  }
  VMI_RETURN_IF_ERROR(layout.Finalize());
  return layout;
}

absl::StatusOr<DumpLayout> Parse(absl::Span<const uint8_t> file, dump::DumpFormat format,
                                 const ParseOptions& options) {
  if (format == dump::DumpFormat::kAuto) format = DetectFormat(file);
  absl::StatusOr<DumpLayout> layout;
  switch (format) {
    case dump::DumpFormat::kAuto:
    case dump::DumpFormat::kRaw:
      layout = ParseRaw(file);
      break;
    case dump::DumpFormat::kLime:
      layout = ParseLime(file);
      break;
    case dump::DumpFormat::kElfCore:
      layout = ParseElfCore(file, options);
      break;
    case dump::DumpFormat::kXenCore:
      layout = ParseXenCore(file);
      break;
  }
  if (!layout.ok()) {
    return AnnotateStatus(layout.status(),
                          absl::StrFormat("%s dump", dump::DumpFormatName(format)));
  }
  return layout;
}

namespace {
[[noreturn]] void Die(const char* what, uint64_t a, uint64_t b) {
  std::fprintf(stderr, "layout invariant violated: %s (0x%llx, 0x%llx)\n", what,
               static_cast<unsigned long long>(a), static_cast<unsigned long long>(b));
  std::abort();
}
}  // namespace

void CheckLayoutOrDie(const DumpLayout& layout, absl::Span<const uint8_t> file) {
  if (layout.extents.empty()) Die("no extents", 0, 0);
  uint64_t pages = 0;
  uint64_t touched = 0;
  volatile uint8_t sink = 0;
  for (size_t i = 0; i < layout.extents.size(); ++i) {
    const Extent& e = layout.extents[i];
    if (e.pages == 0) Die("empty extent", i, 0);
    if (e.first_gfn >= (kMaxPhysicalAddress >> kPageShift) ||
        e.pages > (kMaxPhysicalAddress >> kPageShift) - e.first_gfn) {
      Die("extent beyond physical address space", e.first_gfn, e.pages);
    }
    if (i > 0 && layout.extents[i - 1].end_gfn() > e.first_gfn) {
      Die("extents overlap or unsorted", layout.extents[i - 1].end_gfn(), e.first_gfn);
    }
    if (!e.zero) {
      uint64_t bytes;
      if (!CheckedMul(e.pages, kPageSize, &bytes) || !InBounds(file.size(), e.file_offset, bytes)) {
        Die("extent outside file", e.file_offset, e.pages);
      }
      for (uint64_t p = 0; p < e.pages && touched < 4096; ++p, ++touched) {
        const uint8_t* page = file.data() + e.file_offset + p * kPageSize;
        sink = sink + page[0] + page[kPageSize - 1];
      }
    }
    pages += e.pages;
  }
  if (pages != layout.page_count) Die("page_count", pages, layout.page_count);
  if (layout.max_gfn != layout.extents.back().end_gfn() - 1) Die("max_gfn", layout.max_gfn, 0);
  // Lookups agree with the extents at their edges and just outside them.
  for (const Extent& e : layout.extents) {
    if (layout.Find(e.first_gfn) != &e || layout.Find(e.end_gfn() - 1) != &e) {
      Die("Find misses an extent", e.first_gfn, e.pages);
    }
    if (const Extent* after = layout.Find(e.end_gfn()); after && after->first_gfn != e.end_gfn()) {
      Die("Find hits a hole", e.end_gfn(), 0);
    }
  }
  (void)sink;
}

}  // namespace vmi::dump_internal
