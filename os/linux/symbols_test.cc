#include "os/linux/symbols.h"

#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"

namespace vmi::os_linux {
namespace {

// The reference: the greatest address <= the query among non-absolute
// symbols, the first such symbol in table order, bounded by the next
// higher address.
std::optional<std::pair<std::string, uint64_t>> BruteForce(const std::vector<SymbolTable::Entry>& e,
                                                            uint64_t address) {
  std::optional<size_t> best;
  bool higher_exists = false;
  for (size_t i = 0; i < e.size(); ++i) {
    if (e[i].type == 'A') continue;
    if (e[i].address > address) {
      higher_exists = true;
      continue;
    }
    if (!best || e[i].address > e[*best].address) best = i;
  }
  if (!best) return std::nullopt;
  if (!higher_exists && e[*best].address != address) return std::nullopt;
  return std::make_pair(e[*best].name, address - e[*best].address);
}

TEST(SymbolTableTest, SymbolizeAgreesWithABruteForceSearch) {
  std::mt19937_64 rng(11);
  std::vector<SymbolTable::Entry> entries;
  uint64_t address = 0xffffffff81000000;
  for (int i = 0; i < 1000; ++i) {
    // Runs of aliases (same address) and absolute symbols mixed in.
    if (rng() % 4 != 0) address += 1 + rng() % 64;
    entries.push_back({address, 't', absl::StrFormat("sym_%d", i)});
    if (rng() % 50 == 0) entries.push_back({rng() % 0x30000, 'A', absl::StrFormat("percpu_%d", i)});
  }
  const SymbolTable table(entries);
  for (int q = 0; q < 5000; ++q) {
    const uint64_t query = 0xffffffff81000000 - 100 + rng() % (address - 0xffffffff81000000 + 200);
    const auto expected = BruteForce(entries, query);
    const std::optional<SymbolOffset> got = table.Symbolize(query);
    ASSERT_EQ(got.has_value(), expected.has_value()) << std::hex << query;
    if (got) {
      EXPECT_EQ(got->name, expected->first) << std::hex << query;
      EXPECT_EQ(got->offset, expected->second) << std::hex << query;
    }
  }
  EXPECT_EQ(table.Symbolize(entries.back().address)->offset, 0u);
  EXPECT_FALSE(table.Symbolize(entries.back().address + 1).has_value());
}

TEST(SymbolTableTest, EmptyAndMovedTables) {
  SymbolTable empty;
  EXPECT_FALSE(empty.Symbolize(0x1000).has_value());
  EXPECT_FALSE(empty.Address("x").has_value());
  SymbolTable small({{0x10, 'T', "a"}, {0x20, 'T', "b"}});
  SymbolTable moved = std::move(small);
  EXPECT_EQ(moved.Address("b"), 0x20u);
  EXPECT_EQ(moved.Symbolize(0x15)->ToString(), "a+0x5");
}

}  // namespace
}  // namespace vmi::os_linux
