#include "core/cache/soft_tlb.h"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <utility>

namespace vmi {
namespace {

uint8_t PackPermissions(PagePermissions p) {
  return static_cast<uint8_t>((p.write ? 1 : 0) | (p.user ? 2 : 0) | (p.execute ? 4 : 0));
}
PagePermissions UnpackPermissions(uint8_t bits) {
  return {(bits & 1) != 0, (bits & 2) != 0, (bits & 4) != 0};
}

}  // namespace

alignas(64) SoftTlb::Entry SoftTlb::kEmptySets[2 * kWays] = {};

SoftTlb::SoftTlb(size_t entries)
    : sets_(kEmptySets), set_shift_(63), entries_(0), enabled_(entries != 0) {
  if (entries != 0) entries_ = std::bit_ceil(std::max<size_t>(entries, 2 * kWays));
}

SoftTlb::~SoftTlb() {
  if (allocated_) munmap(sets_, MappedBytes());
}

bool SoftTlb::Allocate() {
  if (allocated_) return true;
  // Anonymous memory is zero (every entry empty) and costs a page fault only
  // where a set is first written.
  void* p = mmap(nullptr, MappedBytes(), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;  // the TLB stays empty: reads take the caches' path
  sets_ = static_cast<Entry*>(p);
  gfns_ = reinterpret_cast<Gfn*>(sets_ + entries_);
  filter_ = reinterpret_cast<uint32_t*>(gfns_ + entries_);
  set_shift_ = 64 - std::countr_zero(entries_ / kWays);
  allocated_ = true;
  return true;
}

void SoftTlb::Insert(Pa root, Va va, Gfn gfn, const uint8_t* page, PagePermissions permissions) {
  if (!enabled_ || page == nullptr || !Allocate()) return;
  const uint64_t vpn1 = (va.value() >> kPageShift) + 1;
  Entry* set = SetOf(root.value(), vpn1);
  int way = -1;
  for (int w = 0; w < kWays && way < 0; ++w) {
    if (set[w].vpn1 == vpn1 && set[w].root == root.value()) way = w;
  }
  for (int w = 0; w < kWays && way < 0; ++w) {
    if (set[w].vpn1 == 0) way = w;
  }
  if (way < 0) {  // a full set: round robin
    way = set[0].victim;
    set[0].victim = static_cast<uint8_t>((way + 1) % kWays);
    ++stats_.evictions;
  }
  const uint32_t index = static_cast<uint32_t>(set + way - sets_);
  if (set[way].vpn1 != 0) Drop(index);
  Entry& e = set[way];
  e.vpn1 = vpn1;
  e.root = root.value();
  e.page = page;
  e.permissions = PackPermissions(permissions);
  e.refs = 0;
  gfns_[index] = gfn;
  ++FilterOf(gfn);
  uint32_t& head = heads_[gfn];
  e.next = head;
  head = index + 1;
  ++size_;
  ++stats_.inserts;
}

bool SoftTlb::Peek(Pa root, Va va, View* out) const {
  const uint64_t vpn1 = (va.value() >> kPageShift) + 1;
  const Entry* set = SetOf(root.value(), vpn1);
  for (int w = 0; w < kWays; ++w) {
    if (set[w].vpn1 == vpn1 && set[w].root == root.value()) {
      if (out != nullptr) {
        *out = {set[w].page, gfns_[set + w - sets_], UnpackPermissions(set[w].permissions)};
      }
      return true;
    }
  }
  return false;
}

void SoftTlb::Unlink(uint32_t index) {
  auto it = heads_.find(gfns_[index]);
  if (it == heads_.end()) return;  // cannot happen: every entry is on its frame's chain
  uint32_t* link = &it->second;
  while (*link != 0 && *link != index + 1) link = &sets_[*link - 1].next;
  if (*link == index + 1) *link = sets_[index].next;
  if (it->second == 0) heads_.erase(it);
}

void SoftTlb::Drop(uint32_t index) {
  Unlink(index);
  --FilterOf(gfns_[index]);
  Entry& e = sets_[index];
  const uint8_t victim = e.victim;  // belongs to the set, not the entry
  e = Entry{};
  e.victim = victim;
  --size_;
}

size_t SoftTlb::EraseKey(uint64_t root, uint64_t vpn) {
  if (size_ == 0) return 0;
  const uint64_t vpn1 = vpn + 1;
  Entry* set = SetOf(root, vpn1);
  for (int w = 0; w < kWays; ++w) {
    if (set[w].vpn1 == vpn1 && set[w].root == root) {
      Drop(static_cast<uint32_t>(set + w - sets_));
      ++stats_.invalidations;
      return 1;
    }
  }
  return 0;
}

size_t SoftTlb::EraseGfn(Gfn gfn) {
  if (size_ == 0 || FilterOf(gfn) == 0) return 0;
  auto it = heads_.find(gfn);
  if (it == heads_.end()) return 0;
  size_t n = 0;
  for (uint32_t i = it->second; i != 0;) {
    Entry& e = sets_[i - 1];
    i = e.next;
    const uint8_t victim = e.victim;
    e = Entry{};
    e.victim = victim;
    ++n;
  }
  heads_.erase(it);
  FilterOf(gfn) -= static_cast<uint32_t>(n);
  size_ -= n;
  stats_.invalidations += n;
  return n;
}

void SoftTlb::Clear() {
  if (size_ == 0) return;
  for (const auto& [gfn, head] : heads_) {
    for (uint32_t i = head; i != 0;) {
      Entry& e = sets_[i - 1];
      --FilterOf(gfn);
      i = e.next;
      const uint8_t victim = e.victim;
      e = Entry{};
      e.victim = victim;
    }
  }
  heads_.clear();
  size_ = 0;
}

bool SoftTlb::TakeReference(uint64_t root, uint64_t vpn, uint8_t bit) {
  if (size_ == 0) return false;
  const uint64_t vpn1 = vpn + 1;
  Entry* set = SetOf(root, vpn1);
  for (int w = 0; w < kWays; ++w) {
    if (set[w].vpn1 == vpn1 && set[w].root == root) {
      const bool used = (set[w].refs & bit) != 0;
      set[w].refs &= static_cast<uint8_t>(~bit);
      return used;
    }
  }
  return false;
}

bool SoftTlb::TakeGfnReference(Gfn gfn, uint8_t bit) {
  if (size_ == 0 || FilterOf(gfn) == 0) return false;
  auto it = heads_.find(gfn);
  if (it == heads_.end()) return false;
  bool used = false;
  for (uint32_t i = it->second; i != 0; i = sets_[i - 1].next) {
    used |= (sets_[i - 1].refs & bit) != 0;
    sets_[i - 1].refs &= static_cast<uint8_t>(~bit);
  }
  return used;
}

void SoftTlb::SetEnabled(bool enabled) {
  if (!enabled) Clear();
  enabled_ = enabled && entries_ != 0;
}

size_t SoftTlb::MemoryUsage() const {
  return sizeof(*this) + (allocated_ ? MappedBytes() : 0) +
         heads_.bucket_count() * (sizeof(std::pair<Gfn, uint32_t>) + 1);
}

}  // namespace vmi
