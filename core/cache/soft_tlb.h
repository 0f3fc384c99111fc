// SoftTlb: VmiCore's software TLB, (translation root, 4 KiB virtual page) ->
// host address of the live-mapped guest page (and the page's guest
// permissions), so that a hot virtual read is one probe and a load instead of
// a V2P lookup, a page-cache lookup and the copy.
//
// It is an index over the two caches, never a third owner of pages: an entry
// exists only while the V2P cache holds the same (root, page) as a positive
// translation and the page cache holds its frame as a *live* (zero-copy)
// page. Both caches report every entry that leaves them (eviction, Erase,
// EraseRoot, InvalidateTableGfn, replacement by Insert, Clear, Resize,
// disabling), and the TLB drops what depended on it at once, so a pointer it
// returns is always one the page cache still holds. Owned copies are never
// entered: a copy goes stale when the frame changes, a live mapping does not.
// Guest writes to page tables are as invisible to it as to the V2P cache, and
// the same flushes (per event by default) cover it.
//
// Structure: 4-way set associative, in anonymous memory mapped on first use,
// so sets never touched cost no page faults. A set is two 64-byte lines: the
// first holds what finds the way and the page (four 64-bit keys, four page
// pointers), the second the rest (roots, permissions, reference bits, frame
// chains). A key is the virtual page with the root folded in (exact for a
// given root, never 0), so a lookup compares one word per way and the root
// once, for the way whose key matched; no set holds one key twice. The page
// load that the read waits on depends only on the set's address and the
// predicted way, not on the compares. (Compares without branches, cmov per
// way, made every read wait for them: slower, 2.84 vs 1.99 ns at 16 hot
// addresses.) Four ways, not two: the ~1,300-page hot set of the Linux
// fixture benchmark in 4,096 two-way sets left 3.4% of reads missing (pages
// in sets of three evict each other on every pass); in 2,048 four-way sets,
// 100.0% of them hit.
// Per frame, a chain through the entries (its head in a hash map) lets a
// page-cache removal drop exactly that frame's entries, and Clear costs
// O(entries), not O(capacity); in front of the hash map, a counting filter by
// frame number makes the common case (a removed page that was never in the
// TLB) one array load. A hit also marks the entry as used for both
// caches' CLOCK (TakeReference), since the hit bypassed them.
//
// Thread-safety: thread-compatible. Find records statistics and recency.

#ifndef VMI_CORE_CACHE_SOFT_TLB_H_
#define VMI_CORE_CACHE_SOFT_TLB_H_

#include <cstddef>
#include <cstdint>

#include "absl/container/flat_hash_map.h"
#include "core/architecture.h"
#include "core/cache/cache_stats.h"
#include "core/types.h"

namespace vmi {

class SoftTlb {
 public:
  static constexpr size_t kDefaultEntries = 8192;
  static constexpr unsigned kPageShift = 12;
  // Reference bits of an entry, one per cache whose CLOCK asks.
  static constexpr uint8_t kV2pRef = 1, kPageRef = 2;
  static constexpr int kWays = 4;

  // `entries` is rounded up to a power of two (at least 8); 0 disables the
  // TLB for good. Nothing is allocated until the first Insert.
  explicit SoftTlb(size_t entries = kDefaultEntries);
  ~SoftTlb();
  SoftTlb(const SoftTlb&) = delete;
  SoftTlb& operator=(const SoftTlb&) = delete;

  // The bytes of `va`'s 4 KiB page under `root`, or null (a miss).
  [[gnu::always_inline]] const uint8_t* Find(Pa root, Va va) {
    const uint64_t key = KeyOf(root.value(), va.value());
    Set& set = SetOf(key);
    // One compare per way: the key alone (keys are unique in a set), then
    // the root of that way.
#pragma GCC unroll 4
    for (size_t way = 0; way < kWays; ++way) {
      if (set.keys[way] == key) {
        if (set.roots[way] != root.value()) break;
        // Written only when it changes: a line stays clean while it is read.
        if (set.refs[way] != (kV2pRef | kPageRef)) set.refs[way] = kV2pRef | kPageRef;
        ++total_hits_;  // the only counter a hit touches
        const uint8_t* page = set.pages[way];
        if (page == nullptr) __builtin_unreachable();  // filled entries have a page
        return page;
      }
    }
    if (enabled_) ++stats_.misses;
    return nullptr;
  }

  // Enters `va`'s page under `root`: frame `gfn`, whose live bytes are at
  // `page`. The caller guarantees what the file comment says: both caches
  // hold it, and the page is live. No-op while disabled.
  void Insert(Pa root, Va va, Gfn gfn, const uint8_t* page, PagePermissions permissions);

  // The entry of (root, page of va), or null; neither counted nor marked.
  struct View {
    const uint8_t* page;
    Gfn gfn;
    PagePermissions permissions;
  };
  bool Peek(Pa root, Va va, View* out = nullptr) const;

  // Invalidation, as the caches report removals. Each returns how many
  // entries it dropped.
  size_t Erase(Pa root, Va va) { return EraseKey(root.value(), va.value() >> kPageShift); }
  size_t EraseKey(uint64_t root, uint64_t vpn);
  size_t EraseGfn(Gfn gfn);
  void Clear();

  // CLOCK support: whether the entry (of the key, or any entry of the frame)
  // was hit since the last call that asked for `bit`; clears it.
  bool TakeReference(uint64_t root, uint64_t vpn, uint8_t bit);
  bool TakeGfnReference(Gfn gfn, uint8_t bit);

  // Disabling clears; a disabled TLB stores nothing and every Find misses
  // (uncounted).
  void SetEnabled(bool enabled);
  bool enabled() const { return enabled_; }

  size_t size() const { return size_; }
  size_t capacity() const { return entries_; }
  // hits, misses (while enabled), inserts (fills), evictions (an entry
  // pushed out of its set), invalidations (entries dropped for a cache).
  CacheStats stats() const {
    CacheStats s = stats_;
    s.hits = total_hits_ - hits_base_;
    return s;
  }
  void ResetStats() {
    stats_ = CacheStats();
    hits_base_ = total_hits_;
  }
  // Hits since construction (not reset by ResetStats): the caches fold TLB
  // hits into their own hit counts from this.
  uint64_t total_hits() const { return total_hits_; }
  // Bytes mapped for the entries (reserved address space; only sets touched
  // are resident) plus the frame index.
  size_t MemoryUsage() const;

 private:
  // 128 bytes, aligned: a hit reads keys and pages from the first line and
  // the root of the matching way from the second.
  struct alignas(128) Set {
    uint64_t keys[kWays];             // KeyOf(root, va); 0 = empty
    const uint8_t* pages[kWays];      // live bytes of the frame; null = empty
    uint64_t roots[kWays];
    uint32_t next[kWays];             // next entry of the same frame, index + 1; 0 = end
    uint8_t permissions[kWays];       // bit 0 write, 1 user, 2 execute
    uint8_t refs[kWays];              // kV2pRef | kPageRef: hit since the caches last asked
    uint8_t victim;                   // the way the next fill of a full set replaces
  };
  static_assert(sizeof(Set) == 128);
  // Two empty sets that every lookup of an unallocated TLB probes: no key is
  // ever 0, so nothing in them matches and they are never written.
  static Set kEmptySets[2];

  // The virtual page (va bits 12-63 at bits 1-52) with the root's frame
  // folded in above it and bit 0 set: one compare per way, never 0 (the empty
  // key), and exact once the root matches too.
  static uint64_t KeyOf(uint64_t root, uint64_t va) { return ((va >> 11) | 1) ^ (root << 21); }
  // Multiplicative hashing: the top bits of key * phi.
  Set& SetOf(uint64_t key) const { return sets_[(key * 0x9e3779b97f4a7c15ull) >> set_shift_]; }
  static uint32_t IndexOf(uint32_t set, unsigned way) { return set * kWays + way; }
  Set& SetOfIndex(uint32_t index) const { return sets_[index / kWays]; }
  // The way of (root, va) in its set, or -1.
  int WayOf(const Set& set, uint64_t key, uint64_t root) const {
    for (int w = 0; w < kWays; ++w) {
      if (set.keys[w] == key && set.roots[w] == root) return w;
    }
    return -1;
  }
  bool Allocate();
  void Unlink(uint32_t index);
  void Empty(uint32_t index);  // clears one entry's fields (not the set's victim)
  void Drop(uint32_t index);   // unlinks and empties one occupied entry

  static constexpr size_t kFilterSize = 4096;
  uint32_t& FilterOf(Gfn gfn) { return filter_[gfn.value() & (kFilterSize - 1)]; }
  // One mapping holds the sets, the entries' frames and the filter.
  size_t MappedBytes() const {
    return entries_ / kWays * sizeof(Set) + entries_ * sizeof(Gfn) +
           kFilterSize * sizeof(uint32_t);
  }

  Set* sets_;
  Gfn* gfns_ = nullptr;       // the frame of each entry
  uint32_t* filter_ = nullptr;  // entries per (frame mod kFilterSize)
  unsigned set_shift_;   // 64 - log2(number of sets)
  size_t entries_;
  size_t size_ = 0;
  bool enabled_;
  bool allocated_ = false;
  absl::flat_hash_map<Gfn, uint32_t> heads_;  // frame -> its first entry, index + 1
  CacheStats stats_;                          // all but hits
  uint64_t total_hits_ = 0;
  uint64_t hits_base_ = 0;  // total_hits_ at the last ResetStats
};

}  // namespace vmi

#endif  // VMI_CORE_CACHE_SOFT_TLB_H_
