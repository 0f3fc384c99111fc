// BoundedCache: the bounded, O(1) map with CLOCK replacement that both
// PageCache and V2pCache are built on. Not for use outside core/cache.
//
// Structure: a slot array (slot 0 is a permanently free sentinel, entries
// live in slots 1..capacity) and an absl::flat_hash_map<Key, uint32_t> from
// key to slot. Storage grows with use: a new cache allocates nothing beyond
// its sentinel, the slot array and the index grow (amortised O(1)) until the
// cache holds `capacity` entries, and from then on inserts and evictions
// allocate nothing. A cold start therefore pays only for what it uses, not
// for page faults on capacity it never fills. In front of the index sits a
// memo: a small direct-mapped array, indexed by the key's hash, of the slot
// last hit or filled for a key with that hash (one uint32 per entry; grown
// with the cache, at 64 entries per key, up to min(capacity, 16384)). A hit in it costs one load from that compact
// array instead of the index's two dependent probes (control bytes, then
// key/slot pair), which matters once the hot set outgrows L1. It needs no
// invalidation: it is trusted only when the slot it names is occupied by the
// very key being looked up.
//
// Policy (CLOCK, second chance), specified exactly because tests depend on it:
// - Every occupied slot has a reference bit. Find sets it on a hit. A new
//   entry starts with the bit clear; replacing an entry's value sets it.
// - Insert of a new key takes a free slot if there is one: free slots are
//   reused most-recently-freed first; after construction, Clear or Resize they
//   are handed out in ascending order (1, 2, 3, ...).
// - Otherwise the hand sweeps from its position, clearing set bits, and
//   evicts the first entry whose bit is already clear; the new entry takes
//   that slot and the hand stops just past it. The hand starts at slot 1.
//   An entry whose bit is clear is also spared (once) when the listener's
//   TakeReference says it was used by another route (VmiCore's software
//   TLB serves hits without touching the cache).
// - Resize first evicts by the same sweep until the entries fit, then packs
//   the survivors into slots 1..n in clock order starting at the hand, and
//   puts the hand back on slot 1.
// A hit is therefore one byte store (no list splicing) and eviction is
// amortised O(1): each sweep step that does not evict clears a bit that one
// earlier hit or replacement set.
//
// Thread-safety: thread-compatible. Find is not const (it records recency and
// statistics), so concurrent Finds need external synchronisation.

#ifndef VMI_CORE_CACHE_INTERNAL_BOUNDED_CACHE_H_
#define VMI_CORE_CACHE_INTERNAL_BOUNDED_CACHE_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "core/cache/cache_stats.h"

namespace vmi::cache_internal {

// A cheap, well-mixed 64-bit hash: one 64x64->128 multiply, halves folded.
// flat_hash_map takes its 7-bit tag from the low bits and the probe position
// from the high bits, and the fold makes both depend on every input bit.
inline uint64_t Mix64(uint64_t x) {
  const unsigned __int128 m = static_cast<unsigned __int128>(x) * 0x9e3779b97f4a7c15ull;
  return static_cast<uint64_t>(m) ^ static_cast<uint64_t>(m >> 64);
}

// Hooks a cache may hang on entry changes (V2pCache counts page-table frames,
// PageCache counts owned bytes, both keep VmiCore's TLB subordinate to them).
// OnClear replaces one OnRemove per entry. TakeReference(key, value) is asked
// when the clock is about to evict an entry whose bit is clear: true spares it
// once (it was used where the cache could not see it) and must reset whatever
// recorded that use.
struct NoopListener {
  template <typename K, typename V>
  void OnInsert(const K&, const V&) {}
  template <typename K, typename V>
  void OnRemove(const K&, const V&) {}
  void OnClear() {}
  template <typename K, typename V>
  bool TakeReference(const K&, const V&) {
    return false;
  }
};

template <typename Key, typename Value, typename Hash, typename Listener = NoopListener>
class BoundedCache {
 public:
  // Slot indices are uint32_t; capacities are clamped to this.
  static constexpr size_t kMaxCapacity = size_t{1} << 30;
  // Entries of the memo in front of the index (64 KiB at most; 64 bytes to
  // start with).
  static constexpr size_t kMaxMemo = 16384;
  static constexpr size_t kMinMemo = 16;
  // While growing, the memo keeps at least this many entries per key (up to
  // its final size), so that keys rarely share one.
  static constexpr size_t kMemoPerEntry = 64;

  explicit BoundedCache(size_t capacity, Listener listener = Listener())
      : capacity_(static_cast<uint32_t>(std::min(capacity, kMaxCapacity))),
        listener_(std::move(listener)) {
    slots_.resize(1);
    memo_.assign(kMinMemo, 0);
    memo_mask_ = kMinMemo - 1;
  }

  // The hit path: the memo, then one hash lookup. Forced inline: it is the
  // hot path of every translation.
  [[gnu::always_inline]] const Value* Find(const Key& key) {
    const size_t hash = Hash()(key);
    uint32_t& memo = memo_[hash & memo_mask_];
    Slot& remembered = slots_[memo];
    if (remembered.state != kFree && remembered.key == key) {
      remembered.state = kReferenced;
      ++stats_.hits;
      return &remembered.value;
    }
    auto it = index_.find(key, hash);
    if (it == index_.end()) {
      if (enabled_) ++stats_.misses;
      return nullptr;
    }
    memo = it->second;
    Slot& slot = slots_[memo];
    slot.state = kReferenced;
    ++stats_.hits;
    return &slot.value;
  }

  // No statistics, no recency.
  const Value* Peek(const Key& key) const {
    auto it = index_.find(key);
    return it == index_.end() ? nullptr : &slots_[it->second].value;
  }

  // Stores `value` under `key` (replacing an existing entry, evicting by
  // policy when full) and returns the stored value. When the cache is disabled
  // or has capacity 0 nothing is stored and the value is parked in a
  // transient holder instead. Either way the reference stays valid until the
  // next call other than Find, Peek or the accessors.
  const Value& Insert(const Key& key, Value value) {
    if (!enabled_ || capacity_ == 0) {
      transient_ = std::move(value);
      return transient_;
    }
    transient_ = Value();
    ++stats_.inserts;
    if (auto it = index_.find(key); it != index_.end()) {
      Slot& slot = slots_[it->second];
      listener_.OnRemove(slot.key, slot.value);
      slot.value = std::move(value);
      slot.state = kReferenced;
      listener_.OnInsert(slot.key, slot.value);
      Remember(key, it->second);
      return slot.value;
    }
    uint32_t index;
    if (!free_.empty()) {
      index = free_.back();
      free_.pop_back();
    } else if (slots_.size() <= capacity_) {
      index = static_cast<uint32_t>(slots_.size());
      GrowSlots();
      slots_.emplace_back();
    } else {
      index = EvictOne();
    }
    Slot& slot = slots_[index];
    slot.key = key;
    slot.value = std::move(value);
    slot.state = kUnreferenced;
    index_.emplace(key, index);
    listener_.OnInsert(slot.key, slot.value);
    if (index_.size() * kMemoPerEntry > memo_.size() && memo_.size() < MemoTarget(capacity_)) {
      GrowMemo();
    }
    Remember(key, index);
    return slot.value;
  }

  bool Erase(const Key& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return false;
    const uint32_t index = it->second;
    index_.erase(it);
    FreeSlot(index);
    ++stats_.invalidations;
    return true;
  }

  // Erases every entry for which pred(key, value) holds. O(capacity).
  template <typename Pred>
  size_t EraseIf(Pred pred) {
    size_t erased = 0;
    for (uint32_t i = 1; i < slots_.size(); ++i) {
      Slot& slot = slots_[i];
      if (slot.state == kFree ||
          !pred(static_cast<const Key&>(slot.key), static_cast<const Value&>(slot.value))) {
        continue;
      }
      index_.erase(slot.key);
      FreeSlot(i);
      ++erased;
    }
    stats_.invalidations += erased;
    return erased;
  }

  // Calls fn(key, value) for every entry, in slot order.
  template <typename Fn>
  void ForEach(Fn fn) const {
    for (uint32_t i = 1; i < slots_.size(); ++i) {
      if (slots_[i].state != kFree) fn(slots_[i].key, slots_[i].value);
    }
  }

  // Drops every entry (not counted as evictions or invalidations). Keeps the
  // storage for reuse (Resize releases it); costs O(1) for trivially
  // destructible values beyond the index's own clear.
  void Clear() {
    index_.clear();
    slots_.resize(1);
    free_.clear();
    hand_ = 1;
    memo_.assign(kMinMemo, 0);
    memo_mask_ = kMinMemo - 1;
    transient_ = Value();
    listener_.OnClear();
  }

  // Sets the capacity, evicting by policy down to it; releases storage
  // beyond what the remaining entries need.
  void Resize(size_t capacity) {
    capacity = std::min(capacity, kMaxCapacity);
    while (index_.size() > capacity) FreeSlot(EvictOne());
    Rebuild(capacity);
  }

  // Disabling clears; a disabled cache stores nothing and counts no misses.
  void SetEnabled(bool enabled) {
    if (!enabled) Clear();
    enabled_ = enabled;
    transient_ = Value();
  }
  bool enabled() const { return enabled_; }

  size_t size() const { return index_.size(); }
  size_t capacity() const { return capacity_; }
  const CacheStats& stats() const { return stats_; }
  void ResetStats() { stats_ = CacheStats(); }

  // Bytes of bookkeeping: slots, index, memo, free list (not what Value
  // points to).
  size_t MemoryUsage() const {
    return sizeof(*this) + slots_.capacity() * sizeof(Slot) +
           (free_.capacity() + memo_.capacity()) * sizeof(uint32_t) +
           index_.bucket_count() * (sizeof(typename Index::value_type) + 1);
  }

  Listener& listener() { return listener_; }
  const Listener& listener() const { return listener_; }

 private:
  enum : uint8_t { kFree = 0, kUnreferenced = 1, kReferenced = 2 };
  struct Slot {
    uint8_t state = kFree;
    Key key{};
    Value value{};
  };
  using Index = absl::flat_hash_map<Key, uint32_t, Hash>;

  void Remember(const Key& key, uint32_t index) { memo_[Hash()(key) & memo_mask_] = index; }

  // The slot after i, wrapping over the slots allocated so far (all of them
  // once the cache has been full).
  uint32_t NextSlot(uint32_t i) const { return i + 1 >= slots_.size() ? 1 : i + 1; }

  // Room for one more slot: doubling, but never past capacity + 1, so that a
  // full cache holds exactly the storage a preallocated one would. When the
  // slots reach capacity, the free list gets its full size too: from then on
  // nothing allocates.
  void GrowSlots() {
    if (slots_.size() < slots_.capacity()) return;
    const size_t full = size_t{capacity_} + 1;
    slots_.reserve(std::min(std::max<size_t>(2 * slots_.size(), 16), full));
    if (slots_.capacity() == full) free_.reserve(capacity_);
  }

  static size_t MemoTarget(size_t capacity) {
    size_t memo_size = kMinMemo;
    while (memo_size < std::min(capacity, kMaxMemo)) memo_size *= 2;
    return memo_size;
  }
  // Doubles the memo and refills it from the index (amortised O(1): it
  // happens when the cache has doubled since the last time).
  void GrowMemo() {
    memo_.assign(memo_.size() * 2, 0);
    memo_mask_ = memo_.size() - 1;
    for (const auto& [key, index] : index_) Remember(key, index);
  }

  // Runs the clock until it finds a victim; removes it from the index and
  // returns its (now free, not yet in free_) slot. Requires a full cache.
  uint32_t EvictOne() {
    for (;;) {
      const uint32_t i = hand_;
      Slot& slot = slots_[i];
      hand_ = NextSlot(i);
      if (slot.state == kReferenced) {
        slot.state = kUnreferenced;
        continue;
      }
      if (slot.state == kFree) continue;  // only while Resize shrinks a partly empty cache
      if (listener_.TakeReference(static_cast<const Key&>(slot.key),
                                  static_cast<const Value&>(slot.value))) {
        continue;
      }
      index_.erase(slot.key);
      listener_.OnRemove(slot.key, slot.value);
      slot.value = Value();
      slot.state = kFree;
      ++stats_.evictions;
      return i;
    }
  }

  // Releases slot i (already out of the index) onto the free list.
  void FreeSlot(uint32_t i) {
    Slot& slot = slots_[i];
    if (slot.state != kFree) {
      listener_.OnRemove(slot.key, slot.value);
      slot.value = Value();
      slot.state = kFree;
    }
    free_.push_back(i);
  }

  // Reallocates for `capacity`, keeping the entries still in the index (they
  // must fit) packed in clock order from the hand, in storage sized for them
  // alone (it grows again with use).
  void Rebuild(size_t capacity) {
    std::vector<Slot> slots(index_.size() + 1);
    Index index;
    index.reserve(index_.size());
    uint32_t next = 1;
    if (!index_.empty()) {
      uint32_t i = hand_;
      for (size_t n = 1; n < slots_.size(); ++n, i = NextSlot(i)) {
        if (slots_[i].state == kFree) continue;
        index.emplace(slots_[i].key, next);
        slots[next++] = std::move(slots_[i]);
      }
    }
    slots_ = std::move(slots);
    index_ = std::move(index);
    capacity_ = static_cast<uint32_t>(capacity);
    free_.clear();
    free_.shrink_to_fit();
    if (index_.empty()) listener_.OnClear();
    hand_ = 1;
    size_t memo_size = kMinMemo;
    while (memo_size < index_.size() * kMemoPerEntry && memo_size < MemoTarget(capacity_)) {
      memo_size *= 2;
    }
    memo_.assign(memo_size, 0);
    memo_mask_ = memo_size - 1;
    for (const auto& [key, slot] : index_) Remember(key, slot);
    transient_ = Value();
  }

  std::vector<Slot> slots_;
  Index index_;
  std::vector<uint32_t> free_;  // a stack: back() is handed out next
  uint32_t capacity_;
  uint32_t hand_ = 1;
  // Direct-mapped by hash: the slot of the last key hit or inserted there
  // (0 = the free sentinel). Small enough to stay in L1.
  std::vector<uint32_t> memo_;
  size_t memo_mask_ = 0;
  bool enabled_ = true;
  CacheStats stats_;
  Value transient_{};
  Listener listener_;
};

}  // namespace vmi::cache_internal

#endif  // VMI_CORE_CACHE_INTERNAL_BOUNDED_CACHE_H_
