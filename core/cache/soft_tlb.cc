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

SoftTlb::Set SoftTlb::kEmptySets[2] = {};

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
  // where a set is first written; it is page-aligned, so each set is two
  // whole cache lines.
  void* p = mmap(nullptr, MappedBytes(), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;  // the TLB stays empty: reads take the caches' path
  sets_ = static_cast<Set*>(p);
  gfns_ = reinterpret_cast<Gfn*>(sets_ + entries_ / kWays);
  filter_ = reinterpret_cast<uint32_t*>(gfns_ + entries_);
  set_shift_ = 64 - std::countr_zero(entries_ / kWays);
  allocated_ = true;
  return true;
}

void SoftTlb::Insert(Pa root, Va va, Gfn gfn, const uint8_t* page, PagePermissions permissions) {
  if (!enabled_ || page == nullptr || !Allocate()) return;
  const uint64_t key = KeyOf(root.value(), va.value());
  Set& set = SetOf(key);
  // The way holding the key (the same page, or another root's page whose key
  // collides: a set holds each key once), else a free way, else round robin.
  int way = -1;
  for (int w = 0; w < kWays && way < 0; ++w) {
    if (set.keys[w] == key) way = w;
  }
  for (int w = 0; w < kWays && way < 0; ++w) {
    if (set.keys[w] == 0) way = w;
  }
  if (way < 0) {
    way = set.victim;
    set.victim = static_cast<uint8_t>((way + 1) % kWays);
    ++stats_.evictions;
  }
  const uint32_t index = IndexOf(static_cast<uint32_t>(&set - sets_), way);
  if (set.keys[way] != 0) Drop(index);
  set.keys[way] = key;
  set.pages[way] = page;
  set.roots[way] = root.value();
  set.permissions[way] = PackPermissions(permissions);
  set.refs[way] = 0;
  gfns_[index] = gfn;
  ++FilterOf(gfn);
  uint32_t& head = heads_[gfn];
  set.next[way] = head;
  head = index + 1;
  ++size_;
  ++stats_.inserts;
}

bool SoftTlb::Peek(Pa root, Va va, View* out) const {
  const uint64_t key = KeyOf(root.value(), va.value());
  const Set& set = SetOf(key);
  const int w = WayOf(set, key, root.value());
  if (w < 0) return false;
  if (out != nullptr) {
    *out = {set.pages[w], gfns_[IndexOf(static_cast<uint32_t>(&set - sets_), w)],
            UnpackPermissions(set.permissions[w])};
  }
  return true;
}

void SoftTlb::Unlink(uint32_t index) {
  auto it = heads_.find(gfns_[index]);
  if (it == heads_.end()) return;  // cannot happen: every entry is on its frame's chain
  uint32_t* link = &it->second;
  while (*link != 0 && *link != index + 1) link = &SetOfIndex(*link - 1).next[(*link - 1) % kWays];
  if (*link == index + 1) *link = SetOfIndex(index).next[index % kWays];
  if (it->second == 0) heads_.erase(it);
}

void SoftTlb::Empty(uint32_t index) {
  Set& set = SetOfIndex(index);
  const unsigned w = index % kWays;
  set.keys[w] = 0;
  set.pages[w] = nullptr;
  set.roots[w] = 0;
  set.next[w] = 0;
  set.permissions[w] = 0;
  set.refs[w] = 0;
}

void SoftTlb::Drop(uint32_t index) {
  Unlink(index);
  --FilterOf(gfns_[index]);
  Empty(index);
  --size_;
}

size_t SoftTlb::EraseKey(uint64_t root, uint64_t vpn) {
  if (size_ == 0) return 0;
  const uint64_t key = KeyOf(root, vpn << kPageShift);
  Set& set = SetOf(key);
  const int w = WayOf(set, key, root);
  if (w < 0) return 0;
  Drop(IndexOf(static_cast<uint32_t>(&set - sets_), w));
  ++stats_.invalidations;
  return 1;
}

size_t SoftTlb::EraseGfn(Gfn gfn) {
  if (size_ == 0 || FilterOf(gfn) == 0) return 0;
  auto it = heads_.find(gfn);
  if (it == heads_.end()) return 0;
  size_t n = 0;
  for (uint32_t i = it->second; i != 0;) {
    const uint32_t index = i - 1;
    i = SetOfIndex(index).next[index % kWays];
    Empty(index);
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
      const uint32_t index = i - 1;
      --FilterOf(gfn);
      i = SetOfIndex(index).next[index % kWays];
      Empty(index);
    }
  }
  heads_.clear();
  size_ = 0;
}

bool SoftTlb::TakeReference(uint64_t root, uint64_t vpn, uint8_t bit) {
  if (size_ == 0) return false;
  const uint64_t key = KeyOf(root, vpn << kPageShift);
  Set& set = SetOf(key);
  const int w = WayOf(set, key, root);
  if (w < 0) return false;
  const bool used = (set.refs[w] & bit) != 0;
  set.refs[w] &= static_cast<uint8_t>(~bit);
  return used;
}

bool SoftTlb::TakeGfnReference(Gfn gfn, uint8_t bit) {
  if (size_ == 0 || FilterOf(gfn) == 0) return false;
  auto it = heads_.find(gfn);
  if (it == heads_.end()) return false;
  bool used = false;
  for (uint32_t i = it->second; i != 0;) {
    const uint32_t index = i - 1;
    Set& set = SetOfIndex(index);
    const unsigned w = index % kWays;
    used |= (set.refs[w] & bit) != 0;
    set.refs[w] &= static_cast<uint8_t>(~bit);
    i = set.next[w];
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
