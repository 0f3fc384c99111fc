// The one check of a write's span inside a guest page, shared by every driver
// (the driver contract in core/driver.h): a span is accepted when it starts
// inside the page and ends at or before its end. Computed without overflow,
// so a huge offset or size can never wrap into range.
//
// Thread-safety: stateless; thread-safe.

#ifndef VMI_CORE_PAGE_SPAN_H_
#define VMI_CORE_PAGE_SPAN_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "core/types.h"

namespace vmi {

// OK when [offset, offset + size) lies inside a page of `page_size` bytes
// and offset < page_size; otherwise OutOfRange naming `op` and the operands:
// "write_page(gfn=0x1a2, offset=0xff8, size=16): past the end of the
// 4096-byte page".
inline absl::Status CheckPageSpan(absl::string_view op, Gfn gfn, uint64_t offset, uint64_t size,
                                  uint64_t page_size = 4096) {
  if (offset < page_size && size <= page_size - offset) return absl::OkStatus();
  return absl::OutOfRangeError(absl::StrFormat("%s(gfn=%s, offset=0x%x, size=%u): past the end of the %u-byte page",
                                               op, gfn, offset, size, page_size));
}

}  // namespace vmi

#endif  // VMI_CORE_PAGE_SPAN_H_
