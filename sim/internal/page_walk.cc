#include "sim/internal/page_walk.h"

#include <cstring>

#include "arch/amd64/paging.h"

namespace vmi::sim::sim_internal {
namespace {

// The entry bits come from arch/amd64; the walk itself is deliberately this
// file's own (see page_walk.h).
using amd64::PageTableEntry;
constexpr uint64_t kAddrMask = PageTableEntry::kFrameMask;
constexpr uint64_t kP = PageTableEntry::kPresent, kRw = PageTableEntry::kWrite,
                   kUs = PageTableEntry::kUser, kPs = PageTableEntry::kPageSize,
                   kNx = PageTableEntry::kNx;

bool ReadEntry(const uint8_t* ram, uint64_t ram_size, uint64_t pa, uint64_t* out) {
  if (pa + 8 > ram_size) return false;
  std::memcpy(out, ram + pa, 8);
  return true;
}

uint64_t Canonical(uint64_t va, int levels) {
  const int bits = 12 + 9 * levels;
  const uint64_t sign = 1ull << (bits - 1);
  va &= (sign << 1) - 1;
  return (va & sign) ? (va | ~((sign << 1) - 1)) : va;
}

bool Reverse(const uint8_t* ram, uint64_t ram_size, uint64_t table, int level, uint64_t va_prefix,
             int levels, uint64_t gfn, size_t limit, size_t* budget, std::vector<uint64_t>* out) {
  const int shift = 12 + 9 * (level - 1);
  for (uint64_t i = 0; i < 512 && out->size() < limit; ++i) {
    if ((*budget)-- == 0) return false;
    uint64_t e;
    if (!ReadEntry(ram, ram_size, table + i * 8, &e) || !(e & kP)) continue;
    const uint64_t va = va_prefix | (i << shift);
    const bool leaf = level == 1 || ((level == 2 || level == 3) && (e & kPs));
    if (leaf) {
      const uint64_t size = 1ull << shift;
      const uint64_t base = e & kAddrMask & ~(size - 1);
      const uint64_t target = gfn << 12;
      if (target >= base && target < base + size) {
        out->push_back(Canonical(va + (target - base), levels));
      }
    } else {
      if (!Reverse(ram, ram_size, e & kAddrMask, level - 1, va, levels, gfn, limit, budget, out)) {
        return false;
      }
    }
  }
  return true;
}

}  // namespace

WalkResult Walk(const uint8_t* ram, uint64_t ram_size, const PagingState& paging, uint64_t va) {
  WalkResult r;
  if (!paging.paging) {
    r.present = va < ram_size;
    r.pa = va;
    r.page_size = 4096;
    r.writable = r.user = true;
    return r;
  }
  const int levels = paging.la57 ? 5 : 4;
  uint64_t table = paging.cr3 & kAddrMask;
  bool writable = true, user = true, nx = false;
  for (int level = levels; level >= 1; --level) {
    const int shift = 12 + 9 * (level - 1);
    uint64_t e;
    if (!ReadEntry(ram, ram_size, table + ((va >> shift) & 511) * 8, &e) || !(e & kP)) return r;
    writable &= (e & kRw) != 0;
    user &= (e & kUs) != 0;
    nx |= (e & kNx) != 0;
    const bool leaf = level == 1 || ((level == 2 || level == 3) && (e & kPs));
    if (leaf) {
      const uint64_t size = 1ull << shift;
      r.present = true;
      r.page_size = size;
      r.pa = (e & kAddrMask & ~(size - 1)) | (va & (size - 1));
      r.writable = writable;
      r.user = user;
      r.no_execute = nx;
      return r;
    }
    table = e & kAddrMask;
  }
  return r;
}

std::optional<std::vector<uint64_t>> ReverseLookup(const uint8_t* ram, uint64_t ram_size,
                                                   const PagingState& paging, uint64_t gfn,
                                                   size_t limit, size_t max_entries) {
  std::vector<uint64_t> out;
  if (!paging.paging) {
    if ((gfn << 12) < ram_size) out.push_back(gfn << 12);
    return out;
  }
  const int levels = paging.la57 ? 5 : 4;
  size_t budget = max_entries;
  if (!Reverse(ram, ram_size, paging.cr3 & kAddrMask, levels, 0, levels, gfn, limit, &budget,
               &out)) {
    return std::nullopt;
  }
  return out;
}

}  // namespace vmi::sim::sim_internal
