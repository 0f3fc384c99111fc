// CacheStats: the counters both VmiCore caches (PageCache, V2pCache) keep.
//
// Thread-safety: a plain value; thread-compatible.

#ifndef VMI_CORE_CACHE_CACHE_STATS_H_
#define VMI_CORE_CACHE_CACHE_STATS_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/strings/str_format.h"

namespace vmi {

struct CacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;         // lookups that found nothing (while enabled)
  uint64_t evictions = 0;      // entries dropped to make room (Insert, Resize)
  uint64_t inserts = 0;        // entries stored (new or replaced)
  uint64_t invalidations = 0;  // entries dropped by Erase, EraseRoot, InvalidateTableGfn

  // hits / (hits + misses), 0 when there were no lookups.
  double HitRate() const {
    const uint64_t lookups = hits + misses;
    return lookups == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(lookups);
  }

  friend bool operator==(const CacheStats&, const CacheStats&) = default;

  std::string ToString() const {
    return absl::StrFormat("hits=%u misses=%u evictions=%u inserts=%u invalidations=%u", hits,
                           misses, evictions, inserts, invalidations);
  }
  friend absl::FormatConvertResult<absl::FormatConversionCharSet::kString> AbslFormatConvert(
      const CacheStats& s, const absl::FormatConversionSpec&, absl::FormatSink* sink) {
    sink->Append(s.ToString());
    return {true};
  }
  friend std::ostream& operator<<(std::ostream& os, const CacheStats& s) {
    return os << s.ToString();
  }
};

}  // namespace vmi

#endif  // VMI_CORE_CACHE_CACHE_STATS_H_
