// Test fixtures for the page walk: an in-memory guest-physical page store
// (a PageReader) and a builder that writes page tables into it for every
// paging mode and page size. The builder shares no code with the walk, so
// tests compare the walk against independently computed expectations.
//
// Thread-safety: thread-compatible.

#ifndef VMI_ARCH_AMD64_TESTING_PAGE_STORE_H_
#define VMI_ARCH_AMD64_TESTING_PAGE_STORE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "arch/amd64/paging.h"
#include "core/types.h"

namespace vmi::amd64::testing {

// Sparse guest RAM of max_gfn + 1 frames. Frames never written read as zero;
// frames beyond max_gfn are an error, like a driver's.
class MemoryPageStore {
 public:
  explicit MemoryPageStore(Gfn max_gfn) : max_gfn_(max_gfn) {}

  absl::StatusOr<absl::Span<const uint8_t>> ReadPage(Gfn gfn);
  uint8_t* MutablePage(Gfn gfn);
  void Write64(Pa pa, uint64_t value);
  void Write32(Pa pa, uint32_t value);
  uint64_t Read64(Pa pa);
  // A fresh zeroed frame, handed out bottom-up from frame 1.
  Gfn AllocateFrame();
  Gfn max_gfn() const { return max_gfn_; }
  uint64_t reads() const { return reads_; }

 private:
  Gfn max_gfn_;
  uint64_t next_free_ = 1;
  uint64_t reads_ = 0;
  absl::flat_hash_map<Gfn, std::unique_ptr<uint8_t[]>> pages_;
  std::vector<uint8_t> zero_ = std::vector<uint8_t>(4096, 0);
};

// Builds page tables for one address space in a MemoryPageStore.
class PageTableBuilder {
 public:
  static constexpr uint64_t kTableFlags = PageTableEntry::kPresent | PageTableEntry::kWrite |
                                          PageTableEntry::kUser;

  // Allocates the root table. For PAE the 32-byte PDPT is placed at a
  // non-zero offset inside its frame, as guests may do.
  PageTableBuilder(MemoryPageStore& store, PagingMode mode);

  // The CR3-style root (table address only).
  Pa root() const { return root_; }

  // Maps [va, va + page_size) to [pa, ...). page_size must be legal for the
  // mode (4 KiB; 2 MiB (PAE/4/5-level), 1 GiB (4/5-level), 4 MiB (32-bit)).
  // `leaf_flags` go into the leaf entry (PS is added for large pages);
  // `table_flags` into newly created intermediate entries. Fails if the range
  // collides with an existing mapping of another size.
  absl::Status Map(Va va, Pa pa, uint64_t page_size, uint64_t leaf_flags,
                   uint64_t table_flags = kTableFlags);

  // Entry address for `va` at `level` (following present entries), for tests
  // that corrupt a specific entry.
  absl::StatusOr<Pa> EntryAddress(Va va, int level);

 private:
  int Shift(int level) const;
  uint64_t Index(Va va, int level) const;
  uint64_t ReadEntry(Pa pa);
  void WriteEntry(Pa pa, uint64_t value);

  MemoryPageStore& store_;
  PagingMode mode_;
  Pa root_;
};

}  // namespace vmi::amd64::testing

#endif  // VMI_ARCH_AMD64_TESTING_PAGE_STORE_H_
