// BoundedCache: the fixed-capacity, O(1) map with CLOCK replacement that both
// PageCache and V2pCache are built on. Not for use outside core/cache.
//
// Structure: a preallocated slot array (slot 0 is a permanently free sentinel,
// entries live in slots 1..capacity) and an absl::flat_hash_map<Key, uint32_t>
// from key to slot, reserved for `capacity` entries so that steady-state
// inserts and evictions never allocate. In front of the index sits a memo: a
// small direct-mapped array, indexed by the key's hash, of the slot last hit
// or filled for a key with that hash (one uint32 per entry, at most 16384). A
// hit in it costs one load from that compact array instead of the index's two
// dependent probes (control bytes, then key/slot pair), which matters once the
// hot set outgrows L1. It needs no invalidation: it is trusted only when the
// slot it names is occupied by the very key being looked up.
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
// PageCache counts owned bytes). OnClear replaces one OnRemove per entry.
struct NoopListener {
  template <typename K, typename V>
  void OnInsert(const K&, const V&) {}
  template <typename K, typename V>
  void OnRemove(const K&, const V&) {}
  void OnClear() {}
};

template <typename Key, typename Value, typename Hash, typename Listener = NoopListener>
class BoundedCache {
 public:
  // Slot indices are uint32_t; capacities are clamped to this.
  static constexpr size_t kMaxCapacity = size_t{1} << 30;
  // Entries of the memo in front of the index (64 KiB at most).
  static constexpr size_t kMaxMemo = 16384;

  explicit BoundedCache(size_t capacity, Listener listener = Listener())
      : listener_(std::move(listener)) {
    Rebuild(std::min(capacity, kMaxCapacity));
  }

  // The hit path: the memo, then one hash lookup. Inline on purpose.
  const Value* Find(const Key& key) {
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
    } else {
      index = EvictOne();
    }
    Slot& slot = slots_[index];
    slot.key = key;
    slot.value = std::move(value);
    slot.state = kUnreferenced;
    index_.emplace(key, index);
    listener_.OnInsert(slot.key, slot.value);
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
    for (uint32_t i = 1; i <= capacity_; ++i) {
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
    for (uint32_t i = 1; i <= capacity_; ++i) {
      if (slots_[i].state != kFree) fn(slots_[i].key, slots_[i].value);
    }
  }

  // Drops every entry (not counted as evictions or invalidations).
  void Clear() {
    index_.clear();
    Rebuild(capacity_);
  }

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

  uint32_t NextSlot(uint32_t i) const { return i == capacity_ ? 1 : i + 1; }

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
  // must fit) packed in clock order from the hand. Clear empties the index
  // first, which drops them all.
  void Rebuild(size_t capacity) {
    std::vector<Slot> slots(capacity + 1);
    Index index;
    index.reserve(capacity);
    uint32_t next = 1;
    if (!index_.empty()) {
      uint32_t i = hand_;
      for (uint32_t n = 0; n < capacity_; ++n, i = NextSlot(i)) {
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
    free_.reserve(capacity);
    for (uint32_t i = capacity_; i >= next; --i) free_.push_back(i);
    if (index_.empty()) listener_.OnClear();
    hand_ = 1;
    size_t memo_size = 1;
    while (memo_size < std::min(capacity, kMaxMemo)) memo_size *= 2;
    memo_.assign(memo_size, 0);
    memo_mask_ = memo_size - 1;
    transient_ = Value();
  }

  std::vector<Slot> slots_;
  Index index_;
  std::vector<uint32_t> free_;  // a stack: back() is handed out next
  uint32_t capacity_ = 0;
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
