// StoreDriver: a test-only Amd64 driver (VmiRead + VmiWrite) over a
// MemoryPageStore, so VmiCore can be exercised and benchmarked against page
// tables built by PageTableBuilder. Pages are live views of the store.
// Errors follow the driver contract (core/driver.h).
//
// Thread-safety: thread-compatible.

#ifndef VMI_ARCH_AMD64_TESTING_STORE_DRIVER_H_
#define VMI_ARCH_AMD64_TESTING_STORE_DRIVER_H_

#include <cstring>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "arch/amd64/amd64.h"
#include "arch/amd64/testing/page_store.h"
#include "core/driver.h"
#include "core/page_span.h"
#include "core/mapped_page.h"

namespace vmi::amd64::testing {

class StoreDriver {
 public:
  using Architecture = Amd64;

  explicit StoreDriver(MemoryPageStore* store) : store_(store) {}

  absl::StatusOr<VmiInfo> Info() const { return VmiInfo{4096, 12, store_->max_gfn(), 1}; }

  absl::StatusOr<MappedPage> ReadPage(Gfn gfn) {
    if (gfn > store_->max_gfn()) {
      return absl::NotFoundError(absl::StrFormat("read_page(gfn=%s): beyond max_gfn", gfn));
    }
    return MappedPage::Live(gfn, store_->MutablePage(gfn), 4096);
  }

  absl::StatusOr<MappedPage> WritePage(Gfn gfn, uint64_t offset, absl::Span<const uint8_t> data) {
    if (gfn > store_->max_gfn()) {
      return absl::NotFoundError(absl::StrFormat("write_page(gfn=%s): beyond max_gfn", gfn));
    }
    if (absl::Status s = CheckPageSpan("write_page", gfn, offset, data.size()); !s.ok()) return s;
    std::memcpy(store_->MutablePage(gfn) + offset, data.data(), data.size());
    return ReadPage(gfn);
  }

 private:
  MemoryPageStore* store_;
};

static_assert(VmiMemory<StoreDriver>);
static_assert(!VmiFullDriver<StoreDriver>);

}  // namespace vmi::amd64::testing

#endif  // VMI_ARCH_AMD64_TESTING_STORE_DRIVER_H_
