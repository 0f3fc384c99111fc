// PageCache: VmiCore's bounded cache of guest pages, Gfn -> MappedPage.
//
// Bounded capacity in entries (default 8192: 32 MiB of page bytes when every
// page is an owned 4 KiB copy; live pages cost no copy). Lookup, insert and
// eviction are O(1) (amortised). Storage grows with use, so a new cache
// costs nothing until it is used, and once it has held `capacity` entries
// nothing allocates any more except the pages themselves.
//
// Replacement is CLOCK (second chance), not exact LRU: a hit only sets a
// reference byte in the entry's slot, where an LRU list would splice three
// entries (six pointer writes across three cache lines) on every hit, and the
// hit is the hot path of every guest read. CLOCK keeps every entry used since
// the hand last passed it and evicts one that was not. The exact victim order
// is specified in core/cache/internal/bounded_cache.h.
//
// Bookkeeping per entry (x86-64), once grown: a 48-byte slot (state, Gfn,
// MappedPage handle), ~34 bytes of hash index (a 16-byte key/slot pair plus
// a control byte, at absl's maximum load of 7/8), 4 bytes of memo and up to
// 4 of free list: about 90 bytes, ~720 KiB for 8192 entries. Each MappedPage
// also has its shared state (~100 bytes), allocated by whoever made the page.
//
// Hit cost: the key's hash picks an entry of a direct-mapped memo (one uint32
// per entry, up to 16384) naming the slot last found for that hash; when the
// slot holds the key, that is the hit, else one absl::flat_hash_map probe.
//
// Coherence: a live page never goes stale; an owned copy does when the guest
// or VMI writes the frame, so the owner must Erase it (or Insert the new
// contents) on every write it makes. Every live page that leaves the cache
// (evicted, erased, replaced, cleared) also leaves an attached SoftTlb.
//
// Thread-safety: thread-compatible. Find records statistics and recency, so
// even concurrent Finds need external synchronisation.

#ifndef VMI_CORE_CACHE_PAGE_CACHE_H_
#define VMI_CORE_CACHE_PAGE_CACHE_H_

#include <cstddef>
#include <cstdint>

#include "core/cache/cache_stats.h"
#include "core/cache/internal/bounded_cache.h"
#include "core/cache/soft_tlb.h"
#include "core/mapped_page.h"
#include "core/types.h"

namespace vmi {

class PageCache {
 public:
  static constexpr size_t kDefaultCapacity = 8192;
  using Stats = CacheStats;

  explicit PageCache(size_t capacity = kDefaultCapacity);

  // The cached page of `gfn`, or nullptr (a miss; not counted while
  // disabled). A hit marks the entry as recently used. The pointer stays
  // valid until the next call other than Find, Contains or the accessors; in
  // particular an Insert may evict it.
  [[gnu::always_inline]] const MappedPage* Find(Gfn gfn) { return cache_.Find(gfn); }

  // Whether `gfn` is cached; neither counted nor marked as used.
  bool Contains(Gfn gfn) const { return cache_.Peek(gfn) != nullptr; }

  // Caches `page` for `gfn`, replacing an existing entry and evicting by
  // policy when full, and returns the stored page. When disabled or of
  // capacity 0 nothing is cached, but the returned page is still held (and
  // usable) until the next call other than Find, Contains or the accessors.
  // An invalid (empty) page is never cached: the entry for `gfn`, if any, is
  // erased and the empty page returned.
  const MappedPage& Insert(Gfn gfn, MappedPage page);

  // Drops the entry of `gfn`; false if there was none.
  bool Erase(Gfn gfn);
  // Drops every entry (not counted as evictions).
  void Clear() { cache_.Clear(); }
  // Sets the capacity, evicting by policy down to it. 0 caches nothing.
  void Resize(size_t capacity) { cache_.Resize(capacity); }
  // Disabling clears the cache; while disabled Find always misses (uncounted)
  // and Insert stores nothing.
  void SetEnabled(bool enabled) { cache_.SetEnabled(enabled); }
  bool enabled() const { return cache_.enabled(); }

  size_t size() const { return cache_.size(); }
  size_t capacity() const { return cache_.capacity(); }
  // Hits include those an attached TLB served.
  Stats stats() const {
    Stats s = cache_.stats();
    if (const SoftTlb* tlb = cache_.listener().tlb) s.hits += tlb->total_hits() - tlb_hits_base_;
    return s;
  }
  void ResetStats() {
    cache_.ResetStats();
    if (const SoftTlb* tlb = cache_.listener().tlb) tlb_hits_base_ = tlb->total_hits();
  }

  // For VmiCore: every live page leaving this cache leaves `tlb` too, and the
  // TLB's hits count as hits here. Attach before the first Insert.
  void AttachTlb(SoftTlb* tlb) {
    cache_.listener().tlb = tlb;
    tlb_hits_base_ = tlb != nullptr ? tlb->total_hits() : 0;
  }

  // Bytes held: bookkeeping plus the bytes of owned pages (live pages are
  // guest memory mapped by the driver and not counted).
  size_t MemoryUsage() const { return cache_.MemoryUsage() + cache_.listener().owned_bytes; }
  // The bookkeeping part alone.
  size_t OverheadBytes() const { return cache_.MemoryUsage(); }

 private:
  struct GfnHash {
    size_t operator()(Gfn gfn) const { return cache_internal::Mix64(gfn.value()); }
  };
  // Counts owned bytes; passes removals of live pages on to the TLB (owned
  // pages are never in it).
  struct Listener {
    size_t owned_bytes = 0;
    SoftTlb* tlb = nullptr;
    void OnInsert(Gfn, const MappedPage& page) {
      if (page.is_owned()) owned_bytes += page.size();
    }
    void OnRemove(Gfn gfn, const MappedPage& page) {
      if (page.is_owned()) {
        owned_bytes -= page.size();
      } else if (tlb != nullptr) {
        tlb->EraseGfn(gfn);
      }
    }
    void OnClear() {
      owned_bytes = 0;
      if (tlb != nullptr) tlb->Clear();
    }
    bool TakeReference(Gfn gfn, const MappedPage& page) {
      return tlb != nullptr && page.is_live() && tlb->TakeGfnReference(gfn, SoftTlb::kPageRef);
    }
  };

  cache_internal::BoundedCache<Gfn, MappedPage, GfnHash, Listener> cache_;
  uint64_t tlb_hits_base_ = 0;
};

}  // namespace vmi

#endif  // VMI_CORE_CACHE_PAGE_CACHE_H_
