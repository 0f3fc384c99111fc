#include "arch/amd64/testing/page_store.h"

#include <cstring>

#include "absl/strings/str_format.h"

namespace vmi::amd64::testing {

absl::StatusOr<absl::Span<const uint8_t>> MemoryPageStore::ReadPage(Gfn gfn) {
  ++reads_;
  if (gfn > max_gfn_) {
    return absl::OutOfRangeError(
        absl::StrFormat("read_page(gfn=%s): beyond max_gfn %s", gfn, max_gfn_));
  }
  auto it = pages_.find(gfn);
  if (it == pages_.end()) return absl::Span<const uint8_t>(zero_.data(), 4096);
  return absl::Span<const uint8_t>(it->second.get(), 4096);
}

uint8_t* MemoryPageStore::MutablePage(Gfn gfn) {
  auto& page = pages_[gfn];
  if (!page) {
    page = std::make_unique<uint8_t[]>(4096);
    std::memset(page.get(), 0, 4096);
  }
  return page.get();
}

void MemoryPageStore::Write64(Pa pa, uint64_t value) {
  std::memcpy(MutablePage(Gfn(pa.value() >> 12)) + (pa.value() & 0xfff), &value, 8);
}

void MemoryPageStore::Write32(Pa pa, uint32_t value) {
  std::memcpy(MutablePage(Gfn(pa.value() >> 12)) + (pa.value() & 0xfff), &value, 4);
}

uint64_t MemoryPageStore::Read64(Pa pa) {
  uint64_t v;
  std::memcpy(&v, MutablePage(Gfn(pa.value() >> 12)) + (pa.value() & 0xfff), 8);
  return v;
}

Gfn MemoryPageStore::AllocateFrame() {
  Gfn gfn(next_free_++);
  MutablePage(gfn);
  return gfn;
}

PageTableBuilder::PageTableBuilder(MemoryPageStore& store, PagingMode mode)
    : store_(store), mode_(mode) {
  Pa frame(store_.AllocateFrame().value() << 12);
  root_ = mode.kind == PagingMode::Kind::kPae ? frame + 0x60 : frame;
}

int PageTableBuilder::Shift(int level) const {
  return mode_.kind == PagingMode::Kind::kLegacy32 ? 12 + 10 * (level - 1) : 12 + 9 * (level - 1);
}

uint64_t PageTableBuilder::Index(Va va, int level) const {
  if (mode_.kind == PagingMode::Kind::kLegacy32) return (va.value() >> Shift(level)) & 1023;
  if (mode_.kind == PagingMode::Kind::kPae && level == 3) return (va.value() >> 30) & 3;
  return (va.value() >> Shift(level)) & 511;
}

uint64_t PageTableBuilder::ReadEntry(Pa pa) {
  uint64_t v = store_.Read64(pa);
  return mode_.kind == PagingMode::Kind::kLegacy32 ? (v & 0xffffffff) : v;
}

void PageTableBuilder::WriteEntry(Pa pa, uint64_t value) {
  if (mode_.kind == PagingMode::Kind::kLegacy32) {
    store_.Write32(pa, static_cast<uint32_t>(value));
  } else {
    store_.Write64(pa, value);
  }
}

absl::Status PageTableBuilder::Map(Va va, Pa pa, uint64_t page_size, uint64_t leaf_flags,
                                   uint64_t table_flags) {
  const bool legacy = mode_.kind == PagingMode::Kind::kLegacy32;
  const bool pae = mode_.kind == PagingMode::Kind::kPae;
  const int entry_size = legacy ? 4 : 8;
  int leaf_level = 0;
  for (int level = 1; level <= mode_.levels(); ++level) {
    if ((uint64_t{1} << Shift(level)) == page_size) leaf_level = level;
  }
  if (leaf_level == 0 || (leaf_level > 1 && !legacy && leaf_level > 3) ||
      (pae && leaf_level == 3) || (legacy && leaf_level == 2 && !mode_.pse)) {
    return absl::InvalidArgumentError(absl::StrFormat("Map: page size 0x%x not allowed in %s",
                                                      page_size, mode_));
  }
  if ((va.value() | pa.value()) & (page_size - 1)) {
    return absl::InvalidArgumentError("Map: va/pa not aligned to the page size");
  }
  Pa table = root_;
  for (int level = mode_.levels(); level > leaf_level; --level) {
    Pa entry_pa = table + Index(va, level) * entry_size;
    uint64_t entry = ReadEntry(entry_pa);
    if (entry & PageTableEntry::kPresent) {
      if (level <= 3 && (entry & PageTableEntry::kPageSize) && !(pae && level == 3)) {
        return absl::AlreadyExistsError("Map: a large page already covers this range");
      }
    } else {
      Gfn frame = store_.AllocateFrame();
      uint64_t flags = (pae && level == 3) ? PageTableEntry::kPresent : table_flags;
      entry = (frame.value() << 12) | flags;
      WriteEntry(entry_pa, entry);
    }
    table = legacy ? Pa(entry & 0xfffff000) : Pa(entry & PageTableEntry::kFrameMask);
  }
  Pa leaf_pa = table + Index(va, leaf_level) * entry_size;
  uint64_t old = ReadEntry(leaf_pa);
  if (old & PageTableEntry::kPresent) {
    return absl::AlreadyExistsError("Map: the range is already mapped");
  }
  uint64_t entry = leaf_flags | PageTableEntry::kPresent;
  if (leaf_level > 1) entry |= PageTableEntry::kPageSize;
  if (legacy && leaf_level == 2) {
    // PSE-36: PA bits 39:32 go to entry bits 20:13.
    entry |= (pa.value() & 0xffc00000) | (((pa.value() >> 32) & 0xff) << 13);
  } else {
    entry |= pa.value();
  }
  WriteEntry(leaf_pa, entry);
  return absl::OkStatus();
}

absl::StatusOr<Pa> PageTableBuilder::EntryAddress(Va va, int level) {
  const bool legacy = mode_.kind == PagingMode::Kind::kLegacy32;
  Pa table = root_;
  for (int l = mode_.levels(); l >= 1; --l) {
    Pa entry_pa = table + Index(va, l) * (legacy ? 4 : 8);
    if (l == level) return entry_pa;
    uint64_t entry = ReadEntry(entry_pa);
    if (!(entry & PageTableEntry::kPresent)) return absl::NotFoundError("not present");
    table = legacy ? Pa(entry & 0xfffff000) : Pa(entry & PageTableEntry::kFrameMask);
  }
  return absl::NotFoundError("no such level");
}

}  // namespace vmi::amd64::testing
