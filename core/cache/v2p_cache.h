// V2pCache: VmiCore's bounded cache of virtual-to-physical translations,
// (translation root, 4 KiB virtual page) -> V2pEntry.
//
// Entries are keyed at 4 KiB granularity whatever the size of the mapping
// page: a read in a 2 MiB page caches only the 4 KiB piece it touched. That
// keeps lookup a single exact-match probe and invalidation precise.
//
// An entry is positive (the page's physical address, size and permissions)
// or negative: a cached failure, the cause of the fault the walk met (a
// not-present or malformed entry at some level), so that asking again for an
// unmapped address costs a hit, not a walk. Both kinds follow the same
// coherence rules.
//
// Coherence: every entry remembers the page-table frames its walk read (for a
// negative entry, those read up to the failing level). InvalidateTableGfn(gfn)
// drops exactly the entries whose walk read `gfn`; a reference count per
// table frame makes the call one hash probe (and a no-op) for the common case
// of a write into an ordinary frame. EraseRoot drops a whole address space.
// Writes by the guest itself are not seen: callers flush (e.g. EraseRoot,
// Clear) when they resume a guest that may have changed its page tables.
// Every entry that leaves the cache also leaves an attached SoftTlb.
//
// Same structure and CLOCK policy as PageCache (see page_cache.h and
// internal/bounded_cache.h); storage grows with use. Bookkeeping per entry
// (x86-64), once grown: a 128-byte slot, ~50 bytes of hash index (a 24-byte
// key/slot pair plus a control byte, at absl's maximum load of 7/8), 4 bytes
// of memo and up to 4 of free list: about 185 bytes, ~3 MiB for the default
// 16384 entries, plus 17-34 bytes per distinct page-table frame for the
// reference counts.
//
// Thread-safety: thread-compatible. Find records statistics and recency, so
// even concurrent Finds need external synchronisation.

#ifndef VMI_CORE_CACHE_V2P_CACHE_H_
#define VMI_CORE_CACHE_V2P_CACHE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "core/architecture.h"
#include "core/cache/cache_stats.h"
#include "core/cache/internal/bounded_cache.h"
#include "core/cache/soft_tlb.h"
#include "core/error.h"
#include "core/types.h"

namespace vmi {

// One cached translation of a 4 KiB virtual page, or a cached failure.
struct V2pEntry {
  static constexpr unsigned kPageShift = 12;
  static constexpr uint64_t kOffsetMask = (uint64_t{1} << kPageShift) - 1;

  Pa page_pa;              // physical address of the 4 KiB sub-page
  uint64_t page_size = 0;  // size of the mapping page: 4 KiB, 2 MiB or 1 GiB; 0: negative
  PagePermissions permissions;
  uint8_t levels = 0;  // how many of table_gfns are meaningful
  // Frames of the page tables the walk read, root first.
  std::array<Gfn, PageTranslation::kMaxLevels> table_gfns{};
  // A negative entry: why the walk failed.
  FaultCause fault;

  // The entry for the 4 KiB page of `va`. `translation` is the walk of `va`
  // or of any address in the same mapping page: for a 2 MiB or 1 GiB page,
  // one walk yields the entry of every 4 KiB piece of it.
  static V2pEntry FromTranslation(Va va, const PageTranslation& translation);
  // A negative entry: the walk failed with `cause` after reading the tables
  // in `partial` (table_gfns and levels; the rest is ignored).
  static V2pEntry FromFault(const PageTranslation& partial, const FaultCause& cause);

  bool negative() const { return page_size == 0; }
  // The fault a negative entry stands for, at `ctx` (any address of its page).
  TranslationFault FaultAt(AddressContext ctx) const { return TranslationFault{ctx, fault}; }

  // The physical address of `va` (any address in this entry's 4 KiB page).
  Pa Apply(Va va) const { return page_pa + (va.value() & kOffsetMask); }
  // The 4 KiB frame, for the page cache.
  Gfn gfn() const { return Gfn(page_pa.value() >> kPageShift); }
  // Whether the walk that produced this entry read frame `gfn`.
  bool UsesTableGfn(Gfn gfn) const {
    for (uint8_t i = 0; i < levels; ++i) {
      if (table_gfns[i] == gfn) return true;
    }
    return false;
  }

  friend bool operator==(const V2pEntry&, const V2pEntry&) = default;
  std::string ToString() const;
};

class V2pCache {
 public:
  static constexpr size_t kDefaultCapacity = 16384;
  using Stats = CacheStats;

  explicit V2pCache(size_t capacity = kDefaultCapacity);

  // The entry of `va`'s 4 KiB page under `root` (which must be what the
  // architecture's TranslationRoot gives, e.g. CR3 without PCID bits), or
  // nullptr (a miss; not counted while disabled). The entry may be negative
  // (check negative()). A hit marks the entry as recently used. The pointer
  // stays valid until the next call other than Find, Contains, IsTableGfn or
  // the accessors.
  [[gnu::always_inline]] const V2pEntry* Find(Pa root, Va va) {
    return cache_.Find(KeyOf(root, va));
  }

  // Whether `va`'s page under `root` is cached; neither counted nor marked.
  bool Contains(Pa root, Va va) const { return cache_.Peek(KeyOf(root, va)) != nullptr; }

  // Caches the translation of `va`'s 4 KiB page, replacing an existing entry
  // and evicting by policy when full, and returns the stored entry. When
  // disabled or of capacity 0 nothing is cached, but the returned entry is
  // still usable until the next call other than Find, Contains, IsTableGfn
  // or the accessors.
  const V2pEntry& Insert(Pa root, Va va, const PageTranslation& translation) {
    return Insert(root, va, V2pEntry::FromTranslation(va, translation));
  }
  const V2pEntry& Insert(Pa root, Va va, const V2pEntry& entry);
  // Caches a failed walk of `va` (see V2pEntry::FromFault).
  const V2pEntry& InsertFault(Pa root, Va va, const PageTranslation& partial,
                              const FaultCause& cause) {
    return Insert(root, va, V2pEntry::FromFault(partial, cause));
  }

  // Drops the entry of `va`'s page under `root`; false if there was none.
  bool Erase(Pa root, Va va);
  // Drops every entry of the address space `root`; returns how many. O(capacity).
  size_t EraseRoot(Pa root);
  // Drops every entry whose walk read frame `gfn`; returns how many. One hash
  // probe when `gfn` is not a cached page-table frame, else O(capacity).
  size_t InvalidateTableGfn(Gfn gfn);
  // Drops every negative entry; returns how many. O(capacity).
  size_t EraseNegative();
  // Whether any cached entry's walk read frame `gfn`.
  bool IsTableGfn(Gfn gfn) const { return cache_.listener().refs.contains(gfn); }
  // How many cached entries' walks read frame `gfn`.
  size_t TableGfnRefs(Gfn gfn) const;

  // Drops every entry (not counted as evictions or invalidations).
  void Clear() { cache_.Clear(); }
  // Sets the capacity, evicting by policy down to it. 0 caches nothing.
  void Resize(size_t capacity) { cache_.Resize(capacity); }
  // Disabling clears the cache; while disabled Find always misses (uncounted)
  // and Insert stores nothing.
  void SetEnabled(bool enabled) { cache_.SetEnabled(enabled); }
  bool enabled() const { return cache_.enabled(); }

  size_t size() const { return cache_.size(); }
  // How many of the entries are negative.
  size_t negative_size() const { return cache_.listener().negatives; }
  size_t capacity() const { return cache_.capacity(); }
  // invalidations counts entries dropped by Erase, EraseRoot and
  // InvalidateTableGfn. Hits include those an attached TLB served.
  Stats stats() const {
    Stats s = cache_.stats();
    if (const SoftTlb* tlb = cache_.listener().tlb) s.hits += tlb->total_hits() - tlb_hits_base_;
    return s;
  }
  void ResetStats() {
    cache_.ResetStats();
    if (const SoftTlb* tlb = cache_.listener().tlb) tlb_hits_base_ = tlb->total_hits();
  }

  // Bytes of bookkeeping, including the table-frame reference counts.
  size_t MemoryUsage() const;

  // For VmiCore: every entry leaving this cache leaves `tlb` too, and the
  // TLB's hits count as hits here. Attach before the first Insert.
  void AttachTlb(SoftTlb* tlb) {
    cache_.listener().tlb = tlb;
    tlb_hits_base_ = tlb != nullptr ? tlb->total_hits() : 0;
  }

 private:
  struct Key {
    uint64_t root;
    uint64_t vpn;
    friend bool operator==(const Key&, const Key&) = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const {
      return cache_internal::Mix64(k.vpn ^ (k.root * 0xc2b2ae3d27d4eb4full));
    }
  };
  struct GfnHash {
    size_t operator()(Gfn gfn) const { return cache_internal::Mix64(gfn.value()); }
  };
  // Counts, per page-table frame, the cached entries whose walk read it (and
  // the negative entries); passes removals on to the TLB.
  struct TableRefs {
    absl::flat_hash_map<Gfn, uint32_t, GfnHash> refs;
    size_t negatives = 0;
    SoftTlb* tlb = nullptr;
    void OnInsert(const Key&, const V2pEntry& entry);
    void OnRemove(const Key& key, const V2pEntry& entry);
    void OnClear() {
      refs.clear();
      negatives = 0;
      if (tlb != nullptr) tlb->Clear();
    }
    bool TakeReference(const Key& key, const V2pEntry& entry) {
      return tlb != nullptr && !entry.negative() &&
             tlb->TakeReference(key.root, key.vpn, SoftTlb::kV2pRef);
    }
  };

  static Key KeyOf(Pa root, Va va) { return Key{root.value(), va.value() >> V2pEntry::kPageShift}; }

  cache_internal::BoundedCache<Key, V2pEntry, KeyHash, TableRefs> cache_;
  uint64_t tlb_hits_base_ = 0;
};

}  // namespace vmi

#endif  // VMI_CORE_CACHE_V2P_CACHE_H_
