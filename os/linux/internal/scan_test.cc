#include "os/linux/internal/scan.h"

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace vmi::os_linux_internal {
namespace {

size_t Naive(const std::vector<uint8_t>& data, const std::string& pattern, size_t from) {
  if (from > data.size()) return kNotFound;
  auto it = std::search(data.begin() + from, data.end(), pattern.begin(), pattern.end());
  return it == data.end() && !pattern.empty() ? kNotFound : static_cast<size_t>(it - data.begin());
}

absl::Span<const uint8_t> Span(const std::vector<uint8_t>& v) { return absl::MakeConstSpan(v); }

TEST(FindPatternTest, FindsThePatternAtEveryPositionOfABuffer) {
  const std::string pattern = "OSRELEASE=";
  for (size_t size : {10, 11, 25, 26, 33, 64, 100}) {
    for (size_t at = 0; at + pattern.size() <= size; ++at) {
      std::vector<uint8_t> data(size, 'O');  // first byte everywhere: many candidates
      std::copy(pattern.begin(), pattern.end(), data.begin() + at);
      EXPECT_EQ(FindPattern(Span(data), pattern), at) << "size " << size << " at " << at;
    }
  }
}

TEST(FindPatternTest, AgreesWithANaiveSearchOnRandomData) {
  std::mt19937 rng(7);
  for (int round = 0; round < 300; ++round) {
    // A small alphabet makes partial matches common.
    std::vector<uint8_t> data(rng() % 600);
    for (auto& b : data) b = "ABO="[rng() % 4];
    std::string pattern;
    const size_t length = 1 + rng() % 5;
    for (size_t i = 0; i < length; ++i) pattern.push_back("ABO="[rng() % 4]);
    const size_t from = data.empty() ? 0 : rng() % (data.size() + 1);
    EXPECT_EQ(FindPattern(Span(data), pattern, from), Naive(data, pattern, from))
        << "round " << round;
  }
}

TEST(FindPatternTest, EdgeCases) {
  const std::vector<uint8_t> data = {'a', 'b', 'c'};
  EXPECT_EQ(FindPattern(Span(data), "abcd"), kNotFound);
  EXPECT_EQ(FindPattern(Span(data), "abc", 1), kNotFound);
  EXPECT_EQ(FindPattern(Span(data), "c", 2), 2u);
  EXPECT_EQ(FindPattern(Span(data), "", 3), 3u);
  EXPECT_EQ(FindPattern(Span(data), "a", 4), kNotFound);
  EXPECT_EQ(FindPattern({}, "a"), kNotFound);
}

}  // namespace
}  // namespace vmi::os_linux_internal
