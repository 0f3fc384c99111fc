#include "drivers/dump/internal/layout.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "arch/amd64/bitfields.h"

namespace vmi::dump_internal {

absl::Status DumpLayout::Finalize() {
  std::sort(extents.begin(), extents.end(), [](const Extent& a, const Extent& b) {
    return a.first_gfn < b.first_gfn || (a.first_gfn == b.first_gfn && a.source < b.source);
  });
  page_count = 0;
  for (size_t i = 0; i < extents.size(); ++i) {
    if (i > 0 && extents[i - 1].end_gfn() > extents[i].first_gfn) {
      const Extent& a = extents[i - 1];
      const Extent& b = extents[i];
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s %u and %s %u overlap at gfn 0x%x (frames [0x%x, 0x%x) and [0x%x, 0x%x))", source_kind,
          std::min(a.source, b.source), source_kind, std::max(a.source, b.source), b.first_gfn,
          a.first_gfn, a.end_gfn(), b.first_gfn, b.end_gfn()));
    }
    page_count += extents[i].pages;
  }
  if (extents.empty()) {
    std::string message = "dump holds no complete 4 KiB page of guest memory";
    for (const std::string& w : warnings) absl::StrAppend(&message, "; ", w);
    return absl::InvalidArgumentError(message);
  }
  max_gfn = extents.back().end_gfn() - 1;
  return absl::OkStatus();
}

const Extent* DumpLayout::Find(uint64_t gfn) const {
  // The last extent starting at or before gfn.
  auto it = std::upper_bound(extents.begin(), extents.end(), gfn,
                             [](uint64_t g, const Extent& e) { return g < e.first_gfn; });
  if (it == extents.begin()) return nullptr;
  --it;
  return gfn < it->end_gfn() ? &*it : nullptr;
}

std::vector<dump::GfnRange> DumpLayout::PresentRanges() const {
  std::vector<dump::GfnRange> ranges;
  for (const Extent& e : extents) {
    if (!ranges.empty() && ranges.back().first.value() + ranges.back().count == e.first_gfn) {
      ranges.back().count += e.pages;
    } else {
      ranges.push_back({Gfn(e.first_gfn), e.pages});
    }
  }
  return ranges;
}

void AddWholePages(uint64_t gpa, uint64_t length, uint64_t file_offset, bool zero, uint64_t source,
                   std::vector<Extent>* extents) {
  const uint64_t end = gpa + length;
  // First frame starting at or after gpa; gpa < 2^52 in practice, checked anyway.
  uint64_t first_gpa;
  if (!CheckedAdd(gpa, kPageSize - 1, &first_gpa)) return;
  first_gpa &= ~(kPageSize - 1);
  const uint64_t end_gpa = end & ~(kPageSize - 1);
  if (end_gpa <= first_gpa) return;
  Extent e;
  e.first_gfn = first_gpa >> kPageShift;
  e.pages = (end_gpa - first_gpa) >> kPageShift;
  e.file_offset = zero ? 0 : file_offset + (first_gpa - gpa);
  e.zero = zero;
  e.source = source;
  extents->push_back(e);
}

void InferEfer(amd64::Registers* regs) {
  if ((regs->cr0 & amd64::Cr0::kPg) && (regs->cr4 & amd64::Cr4::kPae)) {
    regs->efer |= amd64::Efer::kLme | amd64::Efer::kLma | amd64::Efer::kNxe;
  }
}

}  // namespace vmi::dump_internal
