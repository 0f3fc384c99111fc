// ReferenceClock: a deliberately naive model of the CLOCK policy specified in
// bounded_cache.h (linear search, no index, no memo), for randomized tests of
// PageCache and V2pCache. Test-only.
//
// Thread-safety: thread-compatible.

#ifndef VMI_CORE_CACHE_INTERNAL_REFERENCE_CLOCK_H_
#define VMI_CORE_CACHE_INTERNAL_REFERENCE_CLOCK_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "core/cache/cache_stats.h"

namespace vmi::cache_internal {

template <typename Key, typename Value>
class ReferenceClock {
 public:
  explicit ReferenceClock(size_t capacity) { Reset(capacity, {}); }

  std::optional<Value> Find(const Key& key) {
    if (int i = IndexOf(key); i > 0) {
      slots_[i].referenced = true;
      ++stats_.hits;
      return slots_[i].value;
    }
    if (enabled_) ++stats_.misses;
    return std::nullopt;
  }

  // Returns the key evicted, if any.
  std::optional<Key> Insert(const Key& key, const Value& value) {
    if (!enabled_ || capacity_ == 0) return std::nullopt;
    ++stats_.inserts;
    if (int i = IndexOf(key); i > 0) {
      slots_[i].value = value;
      slots_[i].referenced = true;
      return std::nullopt;
    }
    std::optional<Key> victim;
    size_t i;
    if (!free_.empty()) {
      i = free_.back();
      free_.pop_back();
    } else {
      i = Sweep();
      victim = slots_[i].key;
      ++stats_.evictions;
    }
    slots_[i] = Slot{true, false, key, value};
    return victim;
  }

  bool Erase(const Key& key) {
    int i = IndexOf(key);
    if (i <= 0) return false;
    slots_[i].used = false;
    free_.push_back(i);
    ++stats_.invalidations;
    return true;
  }

  template <typename Pred>
  size_t EraseIf(Pred pred) {
    size_t n = 0;
    for (size_t i = 1; i <= capacity_; ++i) {
      if (slots_[i].used && pred(slots_[i].key, slots_[i].value)) {
        slots_[i].used = false;
        free_.push_back(i);
        ++n;
      }
    }
    stats_.invalidations += n;
    return n;
  }

  void Clear() { Reset(capacity_, {}); }

  void Resize(size_t capacity) {
    while (size() > capacity) {
      slots_[Sweep()].used = false;
      ++stats_.evictions;
    }
    std::vector<Slot> survivors;
    for (size_t n = 0, i = hand_; n < capacity_; ++n, i = i == capacity_ ? 1 : i + 1) {
      if (slots_[i].used) survivors.push_back(slots_[i]);
    }
    Reset(capacity, survivors);
  }

  void SetEnabled(bool enabled) {
    if (!enabled) Clear();
    enabled_ = enabled;
  }

  size_t size() const {
    size_t n = 0;
    for (size_t i = 1; i <= capacity_; ++i) n += slots_[i].used;
    return n;
  }
  const CacheStats& stats() const { return stats_; }

  template <typename Fn>
  void ForEach(Fn fn) const {
    for (size_t i = 1; i <= capacity_; ++i) {
      if (slots_[i].used) fn(slots_[i].key, slots_[i].value);
    }
  }

 private:
  struct Slot {
    bool used = false;
    bool referenced = false;
    Key key{};
    Value value{};
  };

  int IndexOf(const Key& key) const {
    for (size_t i = 1; i <= capacity_; ++i) {
      if (slots_[i].used && slots_[i].key == key) return static_cast<int>(i);
    }
    return -1;
  }

  size_t Sweep() {
    for (;;) {
      size_t i = hand_;
      hand_ = hand_ == capacity_ ? 1 : hand_ + 1;
      if (!slots_[i].used) continue;
      if (slots_[i].referenced) {
        slots_[i].referenced = false;
        continue;
      }
      return i;
    }
  }

  void Reset(size_t capacity, const std::vector<Slot>& survivors) {
    capacity_ = capacity;
    slots_.assign(capacity + 1, Slot{});
    for (size_t i = 0; i < survivors.size(); ++i) slots_[i + 1] = survivors[i];
    free_.clear();
    for (size_t i = capacity; i > survivors.size(); --i) free_.push_back(i);
    hand_ = 1;
  }

  size_t capacity_ = 0;
  std::vector<Slot> slots_;
  std::vector<size_t> free_;
  size_t hand_ = 1;
  bool enabled_ = true;
  CacheStats stats_;
};

}  // namespace vmi::cache_internal

#endif  // VMI_CORE_CACHE_INTERNAL_REFERENCE_CLOCK_H_
