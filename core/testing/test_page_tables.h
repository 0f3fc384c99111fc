// Builds TestArch page tables inside a MemoryDriver's RAM, for core tests.
//
// Thread-safety: thread-compatible.

#ifndef VMI_CORE_TESTING_TEST_PAGE_TABLES_H_
#define VMI_CORE_TESTING_TEST_PAGE_TABLES_H_

#include <cstdint>
#include <cstring>

#include "core/testing/memory_driver.h"
#include "core/testing/test_arch.h"
#include "core/types.h"

namespace vmi::testing {

class TestPageTables {
 public:
  // Tables are taken from frames [first_table_gfn, ...); the root is the first.
  TestPageTables(MemoryDriver::Shared& ram, uint64_t first_table_gfn)
      : ram_(ram), next_(first_table_gfn), root_(Pa(first_table_gfn << 12)) {
    ++next_;
  }

  Pa root() const { return root_; }

  // Maps the 4 KiB page at `va` to frame `gfn`.
  void Map(Va va, Gfn gfn, uint64_t flags = TestArch::kPresent | TestArch::kWrite) {
    const uint64_t l0 = (va.value() >> 21) & 511;
    uint64_t pde = Get(root_ + l0 * 8);
    if (!(pde & TestArch::kPresent)) {
      pde = (next_++ << 12) | TestArch::kPresent | TestArch::kWrite | TestArch::kUser;
      Set(root_ + l0 * 8, pde);
    }
    Set(PteAddress(va), (gfn.value() << 12) | flags);
  }
  void Unmap(Va va) { Set(PteAddress(va), 0); }

  // Guest-physical address of the leaf entry for `va` (its table must exist).
  Pa PteAddress(Va va) const {
    const uint64_t pde = Get(root_ + ((va.value() >> 21) & 511) * 8);
    return Pa(pde & TestArch::kFrameMask) + ((va.value() >> 12) & 511) * 8;
  }

  uint64_t Get(Pa pa) const {
    uint64_t v;
    std::memcpy(&v, ram_.ram.data() + pa.value(), 8);
    return v;
  }
  void Set(Pa pa, uint64_t v) { std::memcpy(ram_.ram.data() + pa.value(), &v, 8); }

 private:
  MemoryDriver::Shared& ram_;
  uint64_t next_;
  Pa root_;
};

}  // namespace vmi::testing

#endif  // VMI_CORE_TESTING_TEST_PAGE_TABLES_H_
