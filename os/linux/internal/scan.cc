#include "os/linux/internal/scan.h"

#include <emmintrin.h>

#include <cstring>

namespace vmi::os_linux_internal {

size_t FindPattern(absl::Span<const uint8_t> data, absl::string_view pattern, size_t from) {
  const size_t n = data.size();
  const size_t k = pattern.size();
  if (from > n || k > n - from) return kNotFound;
  if (k == 0) return from;
  const uint8_t* p = data.data();
  const uint8_t first = static_cast<uint8_t>(pattern[0]);
  if (k == 1) {
    const void* hit = std::memchr(p + from, first, n - from);
    return hit ? static_cast<const uint8_t*>(hit) - p : kNotFound;
  }
  const uint8_t last = static_cast<uint8_t>(pattern[k - 1]);
  const __m128i vfirst = _mm_set1_epi8(static_cast<char>(first));
  const __m128i vlast = _mm_set1_epi8(static_cast<char>(last));
  size_t i = from;
  // Blocks of 16 candidate starts; both loads stay inside data.
  for (; i + (k - 1) + 16 <= n; i += 16) {
    const __m128i block_first = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
    const __m128i block_last = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i + k - 1));
    unsigned mask = static_cast<unsigned>(_mm_movemask_epi8(
        _mm_and_si128(_mm_cmpeq_epi8(vfirst, block_first), _mm_cmpeq_epi8(vlast, block_last))));
    while (mask != 0) {
      const unsigned bit = __builtin_ctz(mask);
      if (std::memcmp(p + i + bit + 1, pattern.data() + 1, k - 2) == 0) return i + bit;
      mask &= mask - 1;
    }
  }
  // The tail: fewer than 16 starts left.
  for (; i + k <= n; ++i) {
    if (p[i] == first && p[i + k - 1] == last && std::memcmp(p + i + 1, pattern.data() + 1, k - 2) == 0) {
      return i;
    }
  }
  return kNotFound;
}

}  // namespace vmi::os_linux_internal
