// A software x86-64 page walk over the simulator's RAM (4- and 5-level
// paging, 4K/2M/1G pages), used to read instruction bytes at RIP, to build
// exception frames on guest stacks, and to find the guest-linear address of a
// violating access. It never sets accessed/dirty bits.
//
// Why the simulator keeps a walker of its own instead of arch/amd64's: it is
// the independent oracle of the differential MMU tests (arch/amd64's walk,
// and VmiCore above it, are checked against what this walk and the emulated
// CPU find in the same page tables), it must run inside Unicorn hooks over
// raw host memory with no status objects or allocation, and it answers the
// reverse question (which virtual pages map a frame) that arch/amd64 does
// not. It shares only the entry bits with arch/amd64.
//
// Thread-safety: stateless functions; thread-safe for concurrent readers.

#ifndef VMI_SIM_INTERNAL_PAGE_WALK_H_
#define VMI_SIM_INTERNAL_PAGE_WALK_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace vmi::sim::sim_internal {

struct WalkResult {
  bool present = false;
  uint64_t pa = 0;          // physical address of `va` when present
  uint64_t page_size = 0;   // 4K, 2M or 1G
  bool writable = false;    // effective R/W over all levels
  bool user = false;        // effective U/S over all levels
  bool no_execute = false;  // any level had NX set
};

struct PagingState {
  bool paging = true;  // CR0.PG
  bool la57 = false;   // CR4.LA57
  uint64_t cr3 = 0;
};

// Walks `va`. A table pointer outside RAM makes the walk fail; a leaf may
// point anywhere (callers check the result against RAM).
WalkResult Walk(const uint8_t* ram, uint64_t ram_size, const PagingState& paging, uint64_t va);

// Every canonical virtual page base that maps the 4K frame `gfn` (at most
// `limit` results), or nullopt when the search would visit more than
// `max_entries` page-table entries.
std::optional<std::vector<uint64_t>> ReverseLookup(const uint8_t* ram, uint64_t ram_size,
                                                   const PagingState& paging, uint64_t gfn,
                                                   size_t limit, size_t max_entries = 1 << 15);

}  // namespace vmi::sim::sim_internal

#endif  // VMI_SIM_INTERNAL_PAGE_WALK_H_
